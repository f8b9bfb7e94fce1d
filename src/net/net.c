/* Network: spec parsing, building (shape inference, tables, flat buffers),
 * forward and backward over the chain of layers, running-state update. */
#include "net/net_impl.h"
#include "ops/ops.h"
#include "core/file.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char default_spec[] =
    "# The network of MATLAB's \"Train Network in Parallel with Custom Training Loop\".\n"
    "# One layer per line: <type> <name> [key=value ...]\n"
    "input      input  size=28x28x1\n"
    "conv       conv1  filter=5 filters=20\n"
    "batchnorm  bn1\n"
    "relu       relu1\n"
    "conv       conv2  filter=3 filters=20 padding=1\n"
    "batchnorm  bn2\n"
    "relu       relu2\n"
    "conv       conv3  filter=3 filters=20 padding=1\n"
    "batchnorm  bn3\n"
    "relu       relu3\n"
    "fc         fc     outputs=classes\n"
    "softmax    softmax\n";

const char *dpt_net_default_spec(void) { return default_spec; }

static const layer_type *const layer_types[] = {
    &dpt_layer_input, &dpt_layer_conv, &dpt_layer_batchnorm,
    &dpt_layer_relu,  &dpt_layer_fc,   &dpt_layer_softmax,
};

static const layer_type *find_type(const char *name)
{
    for (size_t i = 0; i < sizeof layer_types / sizeof *layer_types; i++)
        if (strcmp(layer_types[i]->name, name) == 0)
            return layer_types[i];
    return NULL;
}

dpt_status parse_int_max(const char *key, const char *value, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end != '\0' || v < min || v > max)
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%.40s' for %s (an integer in [%d, %d] expected)",
                        value, key, min, max);
    *out = (int)v;
    return DPT_OK;
}

dpt_status parse_int(const char *key, const char *value, int min, int *out)
{
    return parse_int_max(key, value, min, 1000000, out);
}

dpt_status parse_dims(const char *key, const char *value, int n, int max, int *out)
{
    const char *p = value;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long v = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : -1;
        if (v < 1 || v > max || errno || (i + 1 < n ? *end != 'x' : *end != '\0'))
            return dpt_fail(DPT_ERR_FORMAT, "bad value '%.40s' for %s (%d sizes from 1 to %d "
                            "joined by 'x' expected)", value, key, n, max);
        out[i] = (int)v;
        p = end + 1;
    }
    return DPT_OK;
}

dpt_status parse_float(const char *key, const char *value, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end != '\0' || !isfinite(v))
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%s' for %s (a number expected)", value, key);
    *out = (float)v;
    return DPT_OK;
}

/* Keep table names in one growing string pool; entries point into it after
 * the pool stops growing, so offsets are stored first and fixed up at the end.
 * Returns -1 when the pool cannot grow (an offset of 0 is valid, so the
 * offset cannot signal that). */
static int pool_add(dpt_net *net, const char *s, const char **off)
{
    size_t len = strlen(s) + 1;
    if (net->names_used + len > net->names_cap) {
        size_t cap = net->names_cap ? net->names_cap * 2 : 4096;
        while (cap < net->names_used + len)
            cap *= 2;
        char *p = realloc(net->names, cap);
        if (!p)
            return -1;
        net->names = p, net->names_cap = cap;
    }
    memcpy(net->names + net->names_used, s, len);
    *off = (const char *)(uintptr_t)net->names_used; /* fixed up later */
    net->names_used += len;
    return 0;
}

/* Grow a table to hold one more entry (no fixed cap: bounded by the spec's
 * size through its layers). */
static int table_grow(void **tab, size_t *cap, size_t count, size_t elem)
{
    if (count < *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 64;
    void *p = realloc(*tab, n * elem);
    if (!p)
        return -1;
    *tab = p, *cap = n;
    return 0;
}

dpt_status net_declare(dpt_net *net, dpt_layer *l, int kind, const char *param, int ndim,
                       const int *shape)
{
    int is_state = kind != DPT_KIND_LEARN;
    if (kind != DPT_KIND_LEARN && kind != DPT_KIND_POOLED && kind != DPT_KIND_CARRIED)
        return dpt_fail(DPT_ERR_ARG, "layer '%s': unknown kind %d of '%s'", l->name, kind, param);
    size_t *count = is_state ? &net->n_state_tab : &net->n_learn;
    size_t *total = is_state ? &net->n_state : &net->n_params;
    if (is_state) {
        size_t cap = net->cap_state_tab;
        if (table_grow((void **)&net->state_tab, &net->cap_state_tab, *count,
                       sizeof *net->state_tab) ||
            table_grow((void **)&net->state_kind, &cap, *count, sizeof *net->state_kind))
            return dpt_fail(DPT_ERR_NOMEM, "out of memory");
        net->state_kind[*count] = (unsigned char)kind;
    } else if (table_grow((void **)&net->learn, &net->cap_learn, *count, sizeof *net->learn)) {
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    char full[2 * DPT_NAME_MAX + 2];
    snprintf(full, sizeof full, "%s/%s", l->name, param);
    dpt_param_info *e = is_state ? &net->state_tab[(*count)++] : &net->learn[(*count)++];
    memset(e, 0, sizeof *e);
    if (pool_add(net, full, &e->name) || pool_add(net, l->name, &e->layer) ||
        pool_add(net, param, &e->param))
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    e->ndim = ndim;
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->n = dpt_shape_count(ndim, shape);
    e->offset = *total;
    *total += e->n;
    if (is_state) {
        if (l->n_state == 0)
            l->first_state = *count - 1;
        l->n_state++;
    } else {
        if (l->n_learnables == 0)
            l->first_learnable = *count - 1;
        l->n_learnables++;
    }
    return DPT_OK;
}

static void fix_names(dpt_param_info *tab, size_t n, const char *base)
{
    for (size_t i = 0; i < n; i++) {
        tab[i].name = base + (uintptr_t)tab[i].name;
        tab[i].layer = base + (uintptr_t)tab[i].layer;
        tab[i].param = base + (uintptr_t)tab[i].param;
    }
}

/* Split one spec line into tokens in place; returns the count. */
static int tokenize(char *line, char **tok, int max)
{
    int n = 0;
    char *p = line;
    while (*p) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            break;
        if (n == max)
            return max + 1;
        tok[n++] = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (*p)
            *p++ = '\0';
    }
    return n;
}

#define MAX_TOKENS 16

static dpt_status parse_spec(dpt_net *net, const char *text)
{
    const char *src = net->source;
    char *copy = strdup(text);
    if (!copy)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    dpt_status s = DPT_OK;
    int cap = 0, lineno = 0;
    char *save = NULL;
    /* Count lines to size the layer array once. */
    for (const char *p = text; *p; p++)
        cap += *p == '\n';
    cap += 1;
    net->layers = calloc((size_t)cap, sizeof *net->layers);
    if (!net->layers) {
        free(copy);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    char *line = copy;
    while (line) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *tok[MAX_TOKENS];
        int nt = tokenize(line, tok, MAX_TOKENS);
        line = next;
        if (nt == 0)
            continue;
        if (nt > MAX_TOKENS) {
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: too many keys on one line", src, lineno);
            break;
        }
        const layer_type *t = find_type(tok[0]);
        if (!t) {
            s = dpt_fail(DPT_ERR_FORMAT,
                         "%s:%d: unknown layer type '%s' (known: input, conv, batchnorm, relu, "
                         "fc, softmax)", src, lineno, tok[0]);
            break;
        }
        if (nt < 2 || strchr(tok[1], '=')) {
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s layer needs a name after the type", src,
                         lineno, tok[0]);
            break;
        }
        if (strlen(tok[1]) >= DPT_NAME_MAX || strchr(tok[1], '/') || strchr(tok[1], '"') ||
            strchr(tok[1], '\\')) {
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: bad layer name '%s' (at most %d characters, no "
                         "'/', '\"' or '\\')", src, lineno, tok[1], DPT_NAME_MAX - 1);
            break;
        }
        for (int i = 0; i < net->n_layers; i++)
            if (strcmp(net->layers[i].name, tok[1]) == 0) {
                s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: layer name '%s' already used on line %d",
                             src, lineno, tok[1], net->layers[i].line);
                goto done;
            }
        if ((t == &dpt_layer_input) != (net->n_layers == 0)) {
            s = net->n_layers == 0
                    ? dpt_fail(DPT_ERR_FORMAT, "%s:%d: missing input layer: the first layer "
                               "must be 'input size=HxWxC', not '%s'", src, lineno, tok[0])
                    : dpt_fail(DPT_ERR_FORMAT, "%s:%d: a second input layer '%s'", src, lineno,
                               tok[1]);
            break;
        }
        dpt_layer *l = &net->layers[net->n_layers++];
        l->type = t;
        l->line = lineno;
        l->index = net->n_layers - 1;
        if (l->index > 0)
            l->n_in = 1, l->inputs[0] = l->index - 1;
        snprintf(l->name, sizeof l->name, "%s", tok[1]);
        if (t->create && (s = t->create(l)) != DPT_OK)
            break;
        for (int i = 2; i < nt; i++) {
            char *eq = strchr(tok[i], '=');
            if (!eq || eq == tok[i] || eq[1] == '\0') {
                s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': expected key=value, got '%s'", src,
                             lineno, t->name, l->name, tok[i]);
                goto done;
            }
            *eq = '\0';
            if ((s = t->set(l, tok[i], eq + 1)) != DPT_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", dpt_last_error());
                s = dpt_fail(s, "%s:%d: %s '%s': %s", src, lineno, t->name, l->name, msg);
                goto done;
            }
        }
    }
    if (s == DPT_OK && net->n_layers == 0)
        s = dpt_fail(DPT_ERR_FORMAT, "%s: missing input layer: the spec has no layers", src);
done:
    (void)save;
    free(copy);
    return s;
}

/* Bytes as "12.3 GiB", in the binary units DPT_MAX_NET_MEMORY takes. */
static void fmt_bytes(double b, char *buf, size_t n)
{
    if (b >= 1024.0 * 1024 * 1024)
        snprintf(buf, n, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024)
        snprintf(buf, n, "%.1f MiB", b / (1024.0 * 1024));
    else
        snprintf(buf, n, "%.0f KiB", b / 1024.0);
}

double dpt_net_memory_budget(dpt_status *status)
{
    if (status)
        *status = DPT_OK;
    const char *env = getenv("DPT_MAX_NET_MEMORY");
    if (env && *env) { /* empty is unset, as for every DPT_* variable */
        char *end;
        errno = 0;
        double v = strtod(env, &end);
        double unit = 1;
        if (end != env) {
            switch (*end) {
            case 'k': case 'K': unit = 1024.0, end++; break;
            case 'm': case 'M': unit = 1024.0 * 1024, end++; break;
            case 'g': case 'G': unit = 1024.0 * 1024 * 1024, end++; break;
            case 't': case 'T': unit = 1024.0 * 1024 * 1024 * 1024, end++; break;
            default: break;
            }
        }
        if (end != env && *end == '\0' && !errno && isfinite(v) && v * unit >= 1024 * 1024)
            return v * unit;
        if (status)
            *status = dpt_fail(DPT_ERR_ARG, "DPT_MAX_NET_MEMORY: '%.40s' is not a size of at "
                               "least 1M (bytes, or with K, M, G, T: e.g. 512M, 16G)", env);
        return 0;
    }
    /* Default: 8 GiB, or half the machine's memory where that is less. */
    double budget = 8.0 * 1024 * 1024 * 1024;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && (double)pages * (double)page / 2 < budget)
        budget = (double)pages * (double)page / 2;
    return budget;
}

/* Shape inference and table declaration, layer by layer. Each layer's
 * learnable and state floats are noted for check_memory. */
static dpt_status infer_shapes(dpt_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (i > 0) {
            memcpy(l->ins[0], net->layers[i - 1].out, sizeof l->ins[0]);
            memcpy(l->in, l->ins[0], sizeof l->in);
        }
        if (l->type == &dpt_layer_softmax && i != net->n_layers - 1)
            return dpt_fail(DPT_ERR_FORMAT, "%s:%d: softmax '%s' must be the last layer",
                            net->source, l->line, l->name);
        size_t p0 = net->n_params, s0 = net->n_state;
        dpt_status s = l->type->infer(net, l);
        if (s != DPT_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", dpt_last_error());
            return dpt_fail(s, "%s:%d: %s", net->source, l->line, msg);
        }
        /* Sizes are ints in the kernels: one image's output must fit. */
        double count = (double)l->out[0] * l->out[1] * l->out[2];
        if (count > DPT_MAX_LAYER_VALUES)
            return dpt_fail(DPT_ERR_SHAPE, "%s:%d: %s '%s': an output of %dx%dx%d (%.0f values "
                            "per image) is more than the %d allowed", net->source, l->line,
                            l->type->name, l->name, l->out[1], l->out[2], l->out[0], count,
                            DPT_MAX_LAYER_VALUES);
        l->n_learn_values = net->n_params - p0;
        l->n_state_values = net->n_state - s0;
    }
    if (net->n_layers < 2)
        return dpt_fail(DPT_ERR_FORMAT, "%s: the network has only an input layer", net->source);
    return DPT_OK;
}

static size_t layer_count(const dpt_layer *l) { return (size_t)l->out[0] * l->out[1] * l->out[2]; }

/* The memory the network's buffers will take for max_batch, against the
 * budget, before anything that size is allocated. */
static dpt_status check_memory(dpt_net *net)
{
    const double nb = (double)net->max_batch;
    double total = 0, max_act = 0, worst = -1;
    int worst_layer = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        double count = (double)l->out[0] * l->out[1] * l->out[2];
        /* Activations, learnables with their gradients, state, scratch. */
        double bytes = 4 * (count * nb + 2 * (double)l->n_learn_values + (double)l->n_state_values);
        if (l->type->work_floats)
            bytes += 4 * (double)l->type->work_floats(l, net->max_batch);
        if (count * nb > max_act)
            max_act = count * nb;
        total += bytes;
        if (bytes > worst)
            worst = bytes, worst_layer = i;
    }
    /* Two gradient buffers of the largest activation and the loss gradient.
     * Scratch was counted per layer though the network keeps only the
     * largest: an upper bound, like the activations fusion saves. */
    const dpt_layer *last = &net->layers[net->n_layers - 1];
    total += 4 * (2 * max_act + (double)last->out[0] * last->out[1] * last->out[2] * nb);
    dpt_status bs;
    double budget = dpt_net_memory_budget(&bs);
    if (bs != DPT_OK)
        return bs;
    if (total > budget) {
        const dpt_layer *l = &net->layers[worst_layer];
        char t[32], b[32], w[32];
        fmt_bytes(total, t, sizeof t), fmt_bytes(budget, b, sizeof b), fmt_bytes(worst, w, sizeof w);
        return dpt_fail(DPT_ERR_SHAPE, "%s:%d: the network needs %s for a minibatch of %d, more "
                        "than the %s allowed (DPT_MAX_NET_MEMORY); the largest part is %s '%s' "
                        "(output %dx%dx%d): %s", net->source, l->line, t, net->max_batch, b,
                        l->type->name, l->name, l->out[1], l->out[2], l->out[0], w);
    }
    return DPT_OK;
}

/* Fusion of conv -> batchnorm -> relu -> conv chains on the CPU (none with
 * the "generic" kernels, which stay the plain reference path). Each saves
 * whole passes over activation-sized buffers, the bulk of the memory traffic
 * of a small network:
 *  - conv then batchnorm: the conv adds up the batch-norm sums of its
 *    output while writing it (no reading pass in the batchnorm);
 *  - batchnorm then relu: the batchnorm applies the ReLU, forward and
 *    backward; the relu layer is skipped and shares its output buffer;
 *  - batchnorm (+ relu) then conv, or then fc where the fc kernels can
 *    (dpt_linear_fuses_bn): the batchnorm's output is never written; the
 *    conv normalises its input while packing it, the fc as it loads it (and
 *    again in backward, where they need that input for the weight
 *    gradient);
 *  - conv then batchnorm, backward: the batchnorm computes only its sums and
 *    per-channel coefficients; the conv forms its output gradient from them
 *    while packing it (the batchnorm's input gradient is never written).
 *  - the same, backward: the conv (fc) adds up the batchnorm's backward
 *    sums while it writes its input gradient (the gradient at the
 *    batchnorm's output), so the batchnorm reads neither that gradient nor
 *    its input again.
 * With these, a conv -> batchnorm -> relu block reads and writes its
 * activations about half as often. A non-finite value inside a fused
 * batchnorm is reported at the conv or fc after it. */
static dpt_status plan_fusion(dpt_net *net)
{
    /* DPT_FUSION=0 turns it off (for measuring what it gains). */
    const char *env = getenv("DPT_FUSION");
    if (strcmp(dpt_ops_kernels(), "generic") == 0 || (env && strcmp(env, "0") == 0))
        return DPT_OK;
    size_t n_sums = 0, n_bn = 0, n_buf = 0;
    for (int i = 1; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (l->type == &dpt_layer_batchnorm && net->layers[i - 1].type == &dpt_layer_conv) {
            n_sums += 4 * (size_t)l->in[0];
            n_bn++;
            n_buf += 6 * (size_t)l->in[0];
        }
    }
    if (!n_bn)
        return DPT_OK;
    net->fuse_sums = calloc(n_sums, sizeof(double));
    net->fuse_bn = calloc(n_bn, sizeof *net->fuse_bn);
    net->fuse_buf = calloc(n_buf, sizeof(float));
    if (!net->fuse_sums || !net->fuse_bn || !net->fuse_buf)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    double *sums = net->fuse_sums;
    float *buf = net->fuse_buf;
    bn_fusion *f = net->fuse_bn;
    for (int i = 1; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i], *below = &net->layers[i - 1];
        if (l->type != &dpt_layer_batchnorm || below->type != &dpt_layer_conv)
            continue;
        const size_t c = (size_t)l->in[0];
        below->sums_out = l->sums_in = sums;
        f->xg = sums + 2 * c;
        sums += 4 * c;
        f->a.mean = buf, f->a.scale = buf + c, f->a.shift = buf + 2 * c;
        f->a.kf = buf + 3 * c, f->a.ka = buf + 4 * c, f->a.kb = buf + 5 * c;
        buf += 6 * c;
        l->bnf = f;
        f->dx_virtual = 1;
        below->out_bnf = f;
        int top = i; /* the layer whose output the next layer reads */
        if (i + 1 < net->n_layers && net->layers[i + 1].type == &dpt_layer_relu) {
            l->relu_after = net->layers[i + 1].fused = 1;
            f->a.relu = 1;
            top = i + 1;
        }
        dpt_layer *next = top + 1 < net->n_layers ? &net->layers[top + 1] : NULL;
        if (next && (next->type == &dpt_layer_conv ||
                     (next->type == &dpt_layer_fc &&
                      dpt_linear_fuses_bn(next->in[0] * next->in[1] * next->in[2], next->out[0],
                                          next->in[1] * next->in[2])))) {
            f->out_virtual = 1;
            net->layers[top + 1].in_bnf = f;
            net->layers[top + 1].in_act = i - 1; /* the batchnorm's input */
        }
        f++;
    }
    return DPT_OK;
}

static dpt_status build_buffers(dpt_net *net, uint64_t seed)
{
    size_t nb = (size_t)net->max_batch;
    dpt_status fs = plan_fusion(net);
    if (fs != DPT_OK)
        return fs;
    net->params = dpt_alloc(net->n_params * sizeof(float));
    net->grads = dpt_alloc(net->n_params * sizeof(float));
    net->state = dpt_alloc(net->n_state * sizeof(float));
    net->acts = calloc((size_t)net->n_layers, sizeof *net->acts);
    if ((net->n_params && (!net->params || !net->grads)) || (net->n_state && !net->state) ||
        !net->acts)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for the parameter buffers", net->source);
    size_t max_act = 0;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        size_t n = layer_count(l) * nb;
        if (n > max_act)
            max_act = n;
        /* Outputs nobody reads (fused away) get no buffer. */
        int virt = (l->bnf && l->bnf->out_virtual) ||
                   (l->fused && net->layers[i - 1].bnf && net->layers[i - 1].bnf->out_virtual);
        net->acts[i] = virt ? NULL : l->fused ? net->acts[i - 1] : dpt_alloc(n * sizeof(float));
        if (!net->acts[i] && !virt)
            return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for activations of layer '%s' "
                            "(%zu floats)", net->source, l->name, n);
        if (l->type->work_floats) {
            size_t w = l->type->work_floats(l, net->max_batch);
            if (w > net->work_floats)
                net->work_floats = w;
        }
        l->p = l->n_learnables ? net->params + net->learn[l->first_learnable].offset : NULL;
        l->g = l->n_learnables ? net->grads + net->learn[l->first_learnable].offset : NULL;
        l->s = l->n_state ? net->state + net->state_tab[l->first_state].offset : NULL;
    }
    for (int k = 0; k < 2; k++)
        if (!(net->gbuf[k] = dpt_alloc(max_act * sizeof(float))))
            return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for gradients", net->source);
    size_t n_out = layer_count(&net->layers[net->n_layers - 1]) * nb;
    net->n_pool = 1;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type->pool_doubles)
            net->n_pool += net->layers[i].type->pool_doubles(&net->layers[i]);
    net->dout = dpt_alloc(n_out * sizeof(float));
    net->pool = calloc(net->n_pool + 1, sizeof(double)); /* + the step's loss */
    if (!net->dout || !net->pool)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", net->source);
    if (net->work_floats && !(net->work = dpt_alloc(net->work_floats * sizeof(float))))
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for scratch", net->source);
    dpt_rng rng;
    dpt_rng_seed(&rng, seed, 0x6e6574 /* "net" */);
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type->init)
            net->layers[i].type->init(&net->layers[i], &rng);
    return DPT_OK;
}

/* The spec as the network understands it: the user's layers with defaults
 * made explicit and classes filled in. Saved in model files. */
static dpt_status render_spec(dpt_net *net)
{
    size_t cap = 256 + (size_t)net->n_layers * 256;
    net->spec = malloc(cap);
    if (!net->spec)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        char keys[200] = "";
        if (l->type->describe)
            l->type->describe(l, keys, sizeof keys);
        k += (size_t)snprintf(net->spec + k, cap - k, "%-10s %s%s\n", l->type->name, l->name, keys);
    }
    return DPT_OK;
}

dpt_status dpt_net_from_spec(const char *text, const char *source, int n_classes, int max_batch,
                             uint64_t seed, dpt_net **out)
{
    return net_from_spec_checked(text, source, n_classes, max_batch, seed, NULL, NULL, out);
}

dpt_status net_from_spec_checked(const char *text, const char *source, int n_classes,
                                 int max_batch, uint64_t seed,
                                 dpt_status (*check)(const dpt_net *net, void *ctx), void *ctx,
                                 dpt_net **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_from_spec: out is NULL");
    *out = NULL;
    if (!text)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_from_spec: no spec text");
    /* Editors on Windows start a UTF-8 file with a byte-order mark: not
     * part of the first layer's type. */
    if (strncmp(text, "\xEF\xBB\xBF", 3) == 0)
        text += 3;
    if (max_batch < 1)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_from_spec: max_batch must be >= 1, not %d", max_batch);
    dpt_net *net = calloc(1, sizeof *net);
    if (!net)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    snprintf(net->source, sizeof net->source, "%s", source ? source : "<spec>");
    net->max_batch = max_batch;
    net->n_classes = n_classes;
    net->seed = seed;
    dpt_status s = parse_spec(net, text);
    if (s == DPT_OK)
        s = infer_shapes(net);
    if (s == DPT_OK) {
        fix_names(net->learn, net->n_learn, net->names);
        fix_names(net->state_tab, net->n_state_tab, net->names);
        if (check)
            s = check(net, ctx);
        if (s == DPT_OK)
            s = check_memory(net);
        if (s == DPT_OK)
            s = build_buffers(net, seed);
    }
    if (s == DPT_OK)
        s = render_spec(net);
    if (s != DPT_OK) {
        dpt_net_free(net);
        return s;
    }
    *out = net;
    return DPT_OK;
}

dpt_status dpt_net_from_spec_file(const char *path, int n_classes, int max_batch, uint64_t seed,
                                  dpt_net **out)
{
    *out = NULL;
    FILE *f = NULL;
    dpt_status s = dpt_file_fopen_regular(path, &f, NULL);
    if (s != DPT_OK)
        return s;
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (1u << 24)) {
                s = dpt_fail(DPT_ERR_FORMAT, "%s: spec file larger than 16 MiB", path);
                break;
            }
            char *p = realloc(text, cap);
            if (!p) {
                s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
                break;
            }
            text = p;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got < 4096) {
            if (ferror(f))
                s = dpt_fail(DPT_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (s == DPT_OK) {
        text[len] = '\0';
        if (strlen(text) != len)
            s = dpt_fail(DPT_ERR_FORMAT, "%s: spec file contains a NUL byte", path);
        else
            s = dpt_net_from_spec(text, path, n_classes, max_batch, seed, out);
    }
    free(text);
    return s;
}

void dpt_net_free(dpt_net *net)
{
    if (!net)
        return;
    net_gpu_free(net);
    for (int i = 0; i < net->n_layers; i++) {
        if (net->layers[i].type && net->layers[i].type->free)
            net->layers[i].type->free(&net->layers[i]);
        if (net->acts && !net->layers[i].fused)
            dpt_free(net->acts[i]);
    }
    free(net->layers);
    free(net->acts);
    free(net->fuse_sums);
    free(net->fuse_bn);
    free(net->fuse_buf);
    dpt_free(net->gbuf[0]);
    dpt_free(net->gbuf[1]);
    dpt_free(net->work);
    dpt_free(net->dout);
    free(net->pool);
    dpt_free(net->params);
    dpt_free(net->grads);
    dpt_free(net->state);
    for (size_t i = 0; i < 2 * net->n_meta; i++)
        free(net->meta[i]);
    free(net->meta);
    free(net->names);
    free(net->learn);
    free(net->state_tab);
    free(net->state_kind);
    free(net->spec);
    free(net);
}

/* ---- accessors ---------------------------------------------------------------- */

const char *dpt_net_spec(const dpt_net *net) { return net->spec; }
int dpt_net_max_batch(const dpt_net *net) { return net->max_batch; }
int dpt_net_n_layers(const dpt_net *net) { return net->n_layers; }
const char *dpt_net_layer_name(const dpt_net *net, int i) { return net->layers[i].name; }
const char *dpt_net_layer_type(const dpt_net *net, int i) { return net->layers[i].type->name; }
void dpt_net_layer_shape(const dpt_net *net, int i, int chw[3])
{
    memcpy(chw, net->layers[i].out, 3 * sizeof(int));
}
void dpt_net_input_shape(const dpt_net *net, int chw[3]) { memcpy(chw, net->layers[0].out, 3 * sizeof(int)); }
int dpt_net_n_outputs(const dpt_net *net) { return (int)layer_count(&net->layers[net->n_layers - 1]); }
size_t dpt_net_n_learnables(const dpt_net *net) { return net->n_learn; }
const dpt_param_info *dpt_net_learnable(const dpt_net *net, size_t i)
{
    return i < net->n_learn ? &net->learn[i] : NULL;
}
size_t dpt_net_n_state(const dpt_net *net) { return net->n_state_tab; }
const dpt_param_info *dpt_net_state_info(const dpt_net *net, size_t i)
{
    return i < net->n_state_tab ? &net->state_tab[i] : NULL;
}
static long find_in(const dpt_param_info *tab, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i].name, name) == 0)
            return (long)i;
    return -1;
}
long dpt_net_find_learnable(const dpt_net *net, const char *name) { return find_in(net->learn, net->n_learn, name); }
long dpt_net_find_state(const dpt_net *net, const char *name) { return find_in(net->state_tab, net->n_state_tab, name); }
size_t dpt_net_n_params(const dpt_net *net) { return net->n_params; }
float *dpt_net_params(dpt_net *net)
{
    net_gpu_pull(net); /* a GPU network's host mirror may be stale */
    return net->params;
}
float *dpt_net_grads(dpt_net *net)
{
    net_gpu_pull(net);
    return net->grads;
}
size_t dpt_net_n_state_floats(const dpt_net *net) { return net->n_state; }
float *dpt_net_state(dpt_net *net) { return net->state; }
void dpt_net_set_sync_bn(dpt_net *net, dpt_comm *comm) { net->sync_bn = comm; }

/* ---- compute -------------------------------------------------------------------- */

/* Per-layer times for bench/step_bench.c: this thread's CPU time, so that
 * other processes on a shared machine do not show up as slow layers. */
static double prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int all_finite(const float *x, size_t n)
{
    /* Summing keeps the common case one vectorisable pass: a NaN or infinity
     * anywhere makes the sum non-finite (an overflowing sum of finite values
     * is caught too, which is a fault worth reporting anyway). */
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * 0.0f;
    return acc == 0.0f;
}

/* Run the layers on the input already in acts[0], on the network's device
 * (a GPU network runs each type's CUDA entries on device buffers). */
static dpt_status run_forward(dpt_net *net, int n, dpt_mode mode)
{
    const int on_gpu = net->gpu != NULL;
    for (int i = 1; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (l->fused)
            continue;
        const float *x = net->acts[l->in_bnf ? l->in_act : i - 1];
        double t0 = net->prof ? prof_now() : 0.0;
        dpt_status s = on_gpu ? l->type->gpu_forward(net, l, &x, net->acts[i], n, mode)
                              : l->type->forward(net, l, &x, net->acts[i], n, mode);
        if (s != DPT_OK)
            return s;
        if (net->prof)
            net->prof[i] += prof_now() - t0;
    }
    net->last_n = n;
    net->last_mode = mode;
    return DPT_OK;
}

static dpt_status put_input(dpt_net *net, const float *x, int n)
{
    size_t cnt = (size_t)n * layer_count(&net->layers[0]);
    if (net->gpu)
        return net_gpu_put_input(net, net->acts[0], x, cnt);
    memcpy(net->acts[0], x, cnt * sizeof(float));
    return DPT_OK;
}

/* The host output of a CPU network, checked: the first layer with a NaN or
 * infinity is named. */
static dpt_status host_output(dpt_net *net, int n, const float **y)
{
    const float *out = net->acts[net->n_layers - 1];
    size_t k = layer_count(&net->layers[net->n_layers - 1]);
    if (!all_finite(out, (size_t)n * k)) {
        for (int i = 0; i < net->n_layers; i++)
            if (net->acts[i] && !all_finite(net->acts[i], (size_t)n * layer_count(&net->layers[i])))
                return dpt_fail(DPT_ERR_NUMERIC, "non-finite values in the output of layer '%s' "
                                "(%s)", net->layers[i].name, net->layers[i].type->name);
    }
    *y = out;
    return DPT_OK;
}

dpt_status dpt_net_forward(dpt_net *net, const float *x, int n, dpt_mode mode, const float **y)
{
    if (!net || !x || !y)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_forward: %s is NULL", !net ? "net" : !x ? "x" : "y");
    if (mode != DPT_MODE_TRAIN && mode != DPT_MODE_PREDICT)
        return dpt_fail(DPT_ERR_ARG, "%s: forward in unknown mode %d", net->source, (int)mode);
    if (n < 1 || n > net->max_batch)
        return dpt_fail(DPT_ERR_ARG, "%s: forward on %d observations (1 to %d allowed)",
                        net->source, n, net->max_batch);
    dpt_status s = put_input(net, x, n);
    if (s == DPT_OK)
        s = run_forward(net, n, mode);
    if (s != DPT_OK)
        return s;
    if (net->gpu)
        return net_gpu_get_output(net, net->acts[net->n_layers - 1], n, y);
    return host_output(net, n, y);
}

/* Backward from dy (on the network's device) at the output of the last
 * layer, or at the logits (the input of the last layer, softmax). */
static dpt_status run_backward(dpt_net *net, const float *dy, int dy_is_logits)
{
    int n = net->last_n;
    int top = net->n_layers - 1;
    const int on_gpu = net->gpu != NULL;
    if (dy_is_logits)
        top--;
    const float *g = dy;
    int which = 0;
    for (int i = top; i >= 1; i--) {
        dpt_layer *l = &net->layers[i];
        if (l->fused) /* the batchnorm below applies this ReLU's mask */
            continue;
        /* No gradient for the input, nor from a batchnorm whose backward the
         * conv below applies (g then passes through unchanged). */
        int virt = l->bnf && l->bnf->dx_virtual;
        float *dx = i > 1 && !virt ? net->gbuf[which] : NULL;
        const float *x = net->acts[l->in_bnf ? l->in_act : i - 1];
        double t0 = net->prof ? prof_now() : 0.0;
        dpt_status s = on_gpu ? l->type->gpu_backward(net, l, &x, net->acts[i], g, &dx, n)
                              : l->type->backward(net, l, &x, net->acts[i], g, &dx, n);
        if (s != DPT_OK)
            return s;
        if (net->prof)
            net->prof[net->n_layers + i] += prof_now() - t0;
        if (dx) {
            g = dx;
            which ^= 1;
        }
    }
    if (on_gpu)
        net_gpu_touch_grads(net);
    return DPT_OK;
}

static dpt_status backward_checks(dpt_net *net, int dy_is_logits)
{
    if (net->last_mode != DPT_MODE_TRAIN || net->last_n == 0)
        return dpt_fail(DPT_ERR_ARG, "%s: backward needs a TRAIN-mode forward first", net->source);
    const dpt_layer *top = &net->layers[net->n_layers - 1];
    if (dy_is_logits && top->type != &dpt_layer_softmax)
        return dpt_fail(DPT_ERR_ARG, "%s: gradient given at the logits, but the last layer is "
                        "'%s', not softmax", net->source, top->name);
    return DPT_OK;
}

dpt_status dpt_net_backward(dpt_net *net, const float *dy, int dy_is_logits)
{
    if (!net || !dy)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_backward: %s is NULL", !net ? "net" : "dy");
    dpt_status s = backward_checks(net, dy_is_logits);
    if (s == DPT_OK && net->gpu) /* the caller's host dy to the device */
        s = net_gpu_put_dy(net, dy, (size_t)net->last_n * layer_count(&net->layers[net->n_layers - 1]),
                           &dy);
    return s == DPT_OK ? run_backward(net, dy, dy_is_logits) : s;
}

/* ---- moving the executor to a GPU and back (net_gpu.c) ------------------------------ */

/* A layer's fusion fields, as plan_fusion set them for the CPU. */
typedef struct layer_fusion {
    int fused, relu_after, in_act;
    double *sums_out, *sums_in;
    bn_fusion *bnf, *in_bnf, *out_bnf;
} layer_fusion;

struct exec_saved {
    float **acts;    /* the CPU's activation pointers */
    float *gbuf[2];
    layer_fusion *f; /* [n_layers] */
};

void net_exec_to_host(dpt_net *net)
{
    struct exec_saved *sv = net->host_exec;
    if (!sv)
        return;
    for (int i = 0; i < net->n_layers; i++)
        if (net->acts && !net->layers[i].fused)
            net_gpu_mfree(net->acts[i]);
    net_gpu_mfree(net->gbuf[0]), net_gpu_mfree(net->gbuf[1]);
    free(net->acts);
    net->acts = sv->acts;
    net->gbuf[0] = sv->gbuf[0], net->gbuf[1] = sv->gbuf[1];
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        const layer_fusion *f = &sv->f[i];
        l->fused = f->fused, l->relu_after = f->relu_after, l->in_act = f->in_act;
        l->sums_out = f->sums_out, l->sums_in = f->sums_in;
        l->bnf = f->bnf, l->in_bnf = f->in_bnf, l->out_bnf = f->out_bnf;
    }
    free(sv->f);
    free(sv);
    net->host_exec = NULL;
}

dpt_status net_exec_to_device(dpt_net *net, int fuse_bn_relu)
{
    int L = net->n_layers;
    struct exec_saved *sv = calloc(1, sizeof *sv);
    layer_fusion *f = calloc((size_t)L, sizeof *f);
    float **acts = calloc((size_t)L, sizeof *acts);
    if (!sv || !f || !acts) {
        free(sv), free(f), free(acts);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    sv->acts = net->acts, sv->f = f;
    sv->gbuf[0] = net->gbuf[0], sv->gbuf[1] = net->gbuf[1];
    net->host_exec = sv;
    net->acts = acts;
    net->gbuf[0] = net->gbuf[1] = NULL;
    /* The device's fusion: a ReLU right after a batch norm is computed
     * inside it (their outputs share a buffer); nothing else. */
    for (int i = 0; i < L; i++) {
        dpt_layer *l = &net->layers[i];
        f[i] = (layer_fusion){l->fused, l->relu_after, l->in_act, l->sums_out, l->sums_in,
                              l->bnf, l->in_bnf, l->out_bnf};
        l->fused = l->relu_after = l->in_act = 0;
        l->sums_out = l->sums_in = NULL;
        l->bnf = l->in_bnf = l->out_bnf = NULL;
    }
    for (int i = 1; fuse_bn_relu && i + 1 < L; i++)
        if (net->layers[i].type == &dpt_layer_batchnorm &&
            net->layers[i + 1].type == &dpt_layer_relu)
            net->layers[i].relu_after = net->layers[i + 1].fused = 1;
    size_t nb = (size_t)net->max_batch, max_act = 0;
    dpt_status s = DPT_OK;
    for (int i = 0; s == DPT_OK && i < L; i++) {
        size_t n = layer_count(&net->layers[i]) * nb;
        max_act = n > max_act ? n : max_act;
        if (net->layers[i].fused)
            acts[i] = acts[i - 1];
        else
            s = net_gpu_alloc(net, n, &acts[i]);
    }
    for (int k = 0; s == DPT_OK && k < 2; k++)
        s = net_gpu_alloc(net, max_act, &net->gbuf[k]);
    if (s != DPT_OK)
        net_exec_to_host(net);
    return s;
}

/* ---- the training step's device-dependent parts (train/step.c) ---------------------- */

dpt_status net_step_forward_loss(dpt_net *net, const float *x, const float *t, int n, float w,
                                 double scale, double *loss)
{
    *loss = 0;
    if (!net->gpu) {
        const float *p;
        dpt_status s = dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &p);
        if (s == DPT_OK)
            *loss = dpt_softmax_xent(p, t, n, dpt_net_n_outputs(net), w, net->dout) * scale;
        return s;
    }
    if (n < 1 || n > net->max_batch)
        return dpt_fail(DPT_ERR_ARG, "%s: forward on %d observations (1 to %d allowed)",
                        net->source, n, net->max_batch);
    if (net->layers[net->n_layers - 1].type != &dpt_layer_softmax)
        return dpt_fail(DPT_ERR_ARG, "%s: gradient given at the logits, but the last layer is "
                        "'%s', not softmax", net->source, net->layers[net->n_layers - 1].name);
    /* Nothing comes back: the loss reaches the host with the batch-norm
     * statistics (net_pool_state), a non-finite one fails there. */
    const float *dlogits;
    dpt_status s = put_input(net, x, n);
    if (s == DPT_OK)
        s = run_forward(net, n, DPT_MODE_TRAIN);
    return s == DPT_OK ? net_gpu_loss_xent(net, t, n, w, scale, &dlogits) : s;
}

dpt_status net_step_backward(dpt_net *net)
{
    dpt_status s = backward_checks(net, 1);
    return s == DPT_OK ? run_backward(net, net->gpu ? net_gpu_dlogits(net) : net->dout, 1) : s;
}

dpt_status net_grads_allreduce(dpt_net *net, dpt_comm *comm)
{
    if (net->gpu)
        return net_gpu_grads_allreduce(net, comm);
    if (!comm || dpt_comm_size(comm) < 2)
        return DPT_OK;
    return dpt_comm_allreduce_f32(comm, net->grads, net->grads, net->n_params);
}

dpt_status net_pool_state(dpt_net *net, dpt_comm *comm, double *loss)
{
    if (!net)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_update_state: net is NULL");
    if (net->last_mode != DPT_MODE_TRAIN || net->last_n == 0)
        return dpt_fail(DPT_ERR_ARG, "%s: state update needs a TRAIN-mode forward first", net->source);
    dpt_status s = DPT_OK;
    /* A GPU network's batch statistics (and a loss left on the device) come
     * to the host layers' own arrays in one copy: the pooling below is the
     * CPU's. */
    if (net->gpu && (s = net_gpu_stats_pull(net, loss)) != DPT_OK)
        return s;
    int many = comm && dpt_comm_size(comm) > 1;
    size_t total = net->n_pool; /* slot 0: observation count, then the layers' */
    if (total == 1 && !(loss && many) && !(loss && net->gpu))
        return DPT_OK;
    int pooled = many && !(net->sync_bn && net->sync_bn == comm);
    double *buf = net->pool;
    buf[0] = net->last_n;
    size_t k = 1;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (!l->type->pool_doubles)
            continue;
        l->type->pool_pack(l, net->last_n, buf + k);
        k += l->type->pool_doubles(l);
    }
    if (loss) /* the loss rides in the same all-reduce, last */
        buf[total] = *loss;
    if (many && (s = dpt_comm_allreduce_f64(comm, buf, buf, total + (loss ? 1 : 0))) != DPT_OK)
        return s;
    if (loss) {
        *loss = buf[total];
        /* On a GPU nothing has checked the forward's values yet. */
        if (net->gpu && !isfinite(*loss))
            return net_gpu_name_nonfinite(net, net->last_n,
                                          "the loss became non-finite on another worker");
    }
    k = 1;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (!l->type->pool_doubles)
            continue;
        l->type->pool_apply(l, buf + k, buf[0], pooled);
        k += l->type->pool_doubles(l);
    }
    return net->gpu && total > 1 ? net_gpu_state_push(net) : DPT_OK;
}

dpt_status dpt_net_update_state(dpt_net *net, dpt_comm *comm)
{
    return net_pool_state(net, comm, NULL);
}

float *dpt_net_output_grad(dpt_net *net) { return net->dout; }

uint64_t dpt_net_hash(const dpt_net *net)
{
    net_gpu_pull((dpt_net *)net); /* refreshing the host mirror changes no value */
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)net->params;
    for (size_t i = 0; i < net->n_params * sizeof(float); i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    /* Pooled state only: carried state is each worker's own. */
    for (size_t e = 0; e < net->n_state_tab; e++) {
        if (net->state_kind[e] != DPT_KIND_POOLED)
            continue;
        p = (const unsigned char *)(net->state + net->state_tab[e].offset);
        for (size_t i = 0; i < net->state_tab[e].n * sizeof(float); i++)
            h = (h ^ p[i]) * 1099511628211ULL;
    }
    return h;
}

void dpt_net_set_iteration(dpt_net *net, long epoch, long iteration)
{
    if (net)
        net->epoch = epoch, net->iteration = iteration;
}

void dpt_net_set_obs_offset(dpt_net *net, long first)
{
    if (net)
        net->obs_offset = first;
}

void dpt_net_reset_state(dpt_net *net)
{
    if (!net)
        return;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type->reset)
            net->layers[i].type->reset(&net->layers[i]);
}

void dpt_argmax_rows(const float *y, int n, int k, int *labels)
{
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int j = 1; j < k; j++)
            if (y[(size_t)i * k + j] > y[(size_t)i * k + best])
                best = j;
        labels[i] = best;
    }
}
