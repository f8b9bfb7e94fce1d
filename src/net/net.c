/* Network: spec parsing (layers and their from= inputs), building (shape
 * inference over the graph, tables, flat buffers), the executor (forward
 * and backward over the graph, following the plan of graph.c), running-state
 * update.
 *
 * One executor for every device. The executor never touches memory or a
 * layer's code directly: buffers (activations, gradients, scratch; ids and
 * sizes planned once in graph.c) are allocated, uploaded, added and checked
 * through net->dev, and each layer runs through net->dev->forward/backward.
 * net_dev_cpu (below) uses host memory and the layer table's forward and
 * backward. Moving a network to a GPU is meant to be: check every layer's
 * gpu_supports (failing with the layer's name and reason), release the host
 * buffers, set net->dev to a CUDA net_dev whose alloc/add/copy/upload/
 * download/all_finite work on device memory and whose forward/backward call
 * the types' gpu_forward/gpu_backward, allocate net->buf again from
 * net->buf_floats, and call each type's gpu_setup; dpt_net_forward and
 * dpt_net_backward then run unchanged (the learnables' views l->p, l->g,
 * l->s pointing into device copies of the flat buffers). Until that lands,
 * net_gpu.c is a separate chain-only executor reached through net->gpu. */
#include "net/net_gpu_graph.h"
#include "net/net_impl.h"
#include "ops/ops.h"
#include "core/file.h"
#include "core/text.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
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

/* Every layer type the spec knows, one per line (a new type: one line
 * here, one extern in net_impl.h). The "unknown layer type" message lists
 * these names. */
static const layer_type *const layer_types[] = {
    &dpt_layer_input,
    &dpt_layer_conv,
    &dpt_layer_batchnorm,
    &dpt_layer_relu,
    &dpt_layer_fc,
    &dpt_layer_softmax,
    &dpt_layer_add,
    &dpt_layer_concat,
    &dpt_layer_maxpool,
    &dpt_layer_avgpool,
    &dpt_layer_globalavgpool,
    &dpt_layer_leakyrelu,
    &dpt_layer_sigmoid,
    &dpt_layer_tanh,
    &dpt_layer_dropout,
    &dpt_layer_seqinput,
    &dpt_layer_lstm,
    &dpt_layer_gru,
};

/* "input, conv, ...": the table's names, for messages. */
static void type_names(char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof layer_types / sizeof *layer_types && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? ", " : "", layer_types[i]->name);
}

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

/* Layer names by hash (open addressing, table of 2^k >= 2 x layers):
 * duplicate and from= look-ups stay linear in the spec's size, not
 * quadratic in its layer count. Slots hold index + 1; 0 is empty. */
typedef struct name_index {
    int *slot;
    size_t mask;
} name_index;

static size_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

/* The layer named `name`, or -1; *at receives the slot to insert it at. */
static int name_find(const dpt_net *net, const name_index *ix, const char *name, size_t *at)
{
    size_t k = name_hash(name) & ix->mask;
    while (ix->slot[k] && strcmp(net->layers[ix->slot[k] - 1].name, name) != 0)
        k = (k + 1) & ix->mask;
    if (at)
        *at = k;
    return ix->slot[k] - 1;
}

/* Split one spec line into tokens in place; returns the count. */
/* A layer's inputs: the names of from= (comma-separated), each an earlier
 * layer, or the line above by default; their count within the type's. */
static dpt_status resolve_inputs(dpt_net *net, const name_index *ix, dpt_layer *l, char *from)
{
    const char *src = net->source;
    const layer_type *t = l->type;
    if (!from) {
        l->n_in = 1;
        l->inputs[0] = l->index - 1;
    } else {
        l->n_in = 0;
        char *save = NULL;
        for (char *name = strtok_r(from, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
            if (l->n_in == DPT_MAX_INPUTS)
                return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': from= names more than %d "
                                "layers", src, l->line, t->name, l->name, DPT_MAX_INPUTS);
            if (strcmp(name, l->name) == 0)
                return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': from= names the layer itself "
                                "(a layer takes input from layers above it)", src, l->line,
                                t->name, l->name);
            int j = name_find(net, ix, name, NULL);
            if (j < 0)
                return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': from= names '%.64s', which is "
                                "no layer of the network", src, l->line, t->name, l->name, name);
            if (j > l->index)
                return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': from= names '%s', a later layer "
                                "(line %d): a layer takes input only from layers above it, so "
                                "the network has no cycle", src, l->line, t->name, l->name, name,
                                net->layers[j].line);
            l->inputs[l->n_in++] = j;
        }
        if (l->n_in == 0)
            return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': from= names no layer", src, l->line,
                            t->name, l->name);
    }
    if (l->n_in < t->min_inputs || l->n_in > t->max_inputs) {
        char range[32];
        if (t->min_inputs == t->max_inputs)
            snprintf(range, sizeof range, "%d input%s", t->min_inputs,
                     t->min_inputs == 1 ? "" : "s");
        else
            snprintf(range, sizeof range, "%d to %d inputs", t->min_inputs, t->max_inputs);
        if (!from)
            return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s' takes %s: name them with "
                            "from=NAME,NAME", src, l->line, t->name, l->name, range);
        return dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s' takes %s, from= names %d", src, l->line,
                        t->name, l->name, range, l->n_in);
    }
    return DPT_OK;
}

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

/* A layer name: short; no '/', '"' or '\\' (they would break the model
 * file's JSON and table names), no ',' (from= could not name it), and text
 * that prints as it is: valid UTF-8 (the model file's JSON header must be,
 * or PyTorch cannot read it) without control or invisible characters. */
int net_good_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= DPT_NAME_MAX || strpbrk(name, "/\"\\,"))
        return 0;
    char clean[4 * DPT_NAME_MAX + 1];
    dpt_text_clean(clean, sizeof clean, name, len, 0);
    return strcmp(clean, name) == 0;
}

static dpt_status parse_spec(dpt_net *net, const char *text)
{
    const char *src = net->source;
    char *copy = strdup(text);
    if (!copy)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    dpt_status s = DPT_OK;
    int cap = 0, lineno = 0;
    char *save = NULL;
    /* Count the lines that hold a layer (not blank, not a comment) to size
     * the layer array once, bounded before allocating: a file of millions
     * of newlines must not allocate a layer for each, and a spec of more
     * layers than any real network is refused (the name checks below are
     * quadratic in the count). */
    for (const char *p = text; *p;) {
        while (*p && *p != '\n' && isspace((unsigned char)*p))
            p++;
        cap += *p && *p != '\n' && *p != '#';
        while (*p && *p != '\n')
            p++;
        if (*p)
            p++;
    }
    if (cap > DPT_MAX_LAYERS) {
        free(copy);
        return dpt_fail(DPT_ERR_FORMAT, "%s: %d layers, more than the %d allowed", src, cap,
                        DPT_MAX_LAYERS);
    }
    cap += 1;
    net->layers = calloc((size_t)cap, sizeof *net->layers);
    char **from = calloc((size_t)cap, sizeof *from); /* each layer's from= text, in copy */
    name_index ix = {NULL, 1};
    while (ix.mask + 1 < 2 * (size_t)cap)
        ix.mask = 2 * ix.mask + 1;
    ix.slot = calloc(ix.mask + 1, sizeof *ix.slot);
    if (!net->layers || !from || !ix.slot) {
        free(copy);
        free(from);
        free(ix.slot);
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
            char known[512];
            type_names(known, sizeof known);
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: unknown layer type '%s' (known: %s)", src, lineno,
                         tok[0], known);
            break;
        }
        if (nt < 2 || strchr(tok[1], '=')) {
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s layer needs a name after the type", src,
                         lineno, tok[0]);
            break;
        }
        if (!net_good_name(tok[1])) {
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: bad layer name '%.*s' (at most %d characters, "
                         "no '/', '\"', '\\', ',', control characters or invalid UTF-8)", src,
                         lineno, DPT_NAME_MAX, tok[1], DPT_NAME_MAX - 1);
            break;
        }
        size_t at;
        int dup = name_find(net, &ix, tok[1], &at);
        if (dup >= 0) {
            s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: layer name '%s' already used on line %d", src,
                         lineno, tok[1], net->layers[dup].line);
            break;
        }
        if ((t->max_inputs == 0) != (net->n_layers == 0)) {
            s = net->n_layers == 0
                    ? dpt_fail(DPT_ERR_FORMAT, "%s:%d: missing input layer: the first layer "
                               "must be 'input size=HxWxC' or 'sequenceinput size=F', not '%s'",
                               src, lineno, tok[0])
                    : dpt_fail(DPT_ERR_FORMAT, "%s:%d: a second input layer '%s'", src, lineno,
                               tok[1]);
            break;
        }
        dpt_layer *l = &net->layers[net->n_layers++];
        l->type = t;
        l->line = lineno;
        l->index = net->n_layers - 1;
        snprintf(l->name, sizeof l->name, "%s", tok[1]);
        ix.slot[at] = l->index + 1;
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
            if (strcmp(tok[i], "from") == 0) {
                if (t->max_inputs == 0) {
                    s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s' takes no from= (it reads the "
                                 "data)", src, lineno, t->name, l->name);
                    goto done;
                }
                if (from[l->index]) {
                    s = dpt_fail(DPT_ERR_FORMAT, "%s:%d: %s '%s': from= given twice", src, lineno,
                                 t->name, l->name);
                    goto done;
                }
                from[l->index] = eq + 1; /* resolved once every name is known */
                continue;
            }
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
    for (int i = 1; s == DPT_OK && i < net->n_layers; i++)
        s = resolve_inputs(net, &ix, &net->layers[i], from[i]);
done:
    (void)save;
    free(copy);
    free(from);
    free(ix.slot);
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
        for (int k = 0; k < l->n_in; k++)
            memcpy(l->ins[k], net->layers[l->inputs[k]].out, sizeof l->ins[k]);
        if (l->n_in)
            memcpy(l->in, l->ins[0], sizeof l->in);
        if (l->type == &dpt_layer_softmax && i != net->n_layers - 1)
            return dpt_fail(DPT_ERR_FORMAT, "%s:%d: softmax '%s' must be the last layer",
                            net->source, l->line, l->name);
        /* A sequence flows through the per-time-step types unchanged; the
         * inputs of one layer are all sequences or none. */
        l->seq = l->n_in ? net->layers[l->inputs[0]].seq : 0;
        for (int k = 1; k < l->n_in; k++) {
            const dpt_layer *a = &net->layers[l->inputs[0]], *b = &net->layers[l->inputs[k]];
            if (b->seq != a->seq)
                return dpt_fail(DPT_ERR_SHAPE, "%s:%d: %s '%s' mixes a sequence ('%s') and one "
                                "value per observation ('%s')", net->source, l->line,
                                l->type->name, l->name, a->seq ? a->name : b->name,
                                a->seq ? b->name : a->name);
        }
        if (l->seq && l->type->seq_mode == DPT_SEQ_REFUSE)
            return dpt_fail(DPT_ERR_SHAPE, "%s:%d: %s '%s' does not work on a sequence, and its "
                            "input '%s' is one (per time step: fc, softmax, relu, leakyrelu, "
                            "sigmoid, tanh, add, concat, dropout; lstm/gru output=last ends "
                            "the sequence)", net->source, l->line, l->type->name, l->name,
                            net->layers[l->inputs[0]].name);
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

/* Steps a sequence layer's buffers hold (1 for one value per observation). */
static int layer_cap(const dpt_net *net, const dpt_layer *l) { return l->seq ? net->cap_steps : 1; }

/* The memory the network's buffers will take for max_batch, against the
 * budget, before anything that size is allocated. */
static dpt_status check_memory(dpt_net *net)
{
    const double nb = (double)net->max_batch;
    double total = 0, worst = -1;
    int worst_layer = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        double count = (double)l->out[0] * l->out[1] * l->out[2] * layer_cap(net, l);
        /* Activations, learnables with their gradients, state, scratch,
         * the layer's own buffers. */
        double bytes = 4 * (count * nb + 2 * (double)l->n_learn_values + (double)l->n_state_values);
        if (l->type->work_floats)
            bytes += 4 * (double)l->type->work_floats(l, net->max_batch);
        if (l->type->keep_floats)
            bytes += 4 * (double)l->type->keep_floats(net, l);
        total += bytes;
        if (bytes > worst)
            worst = bytes, worst_layer = i;
    }
    /* The planned gradient and scratch buffers and the loss gradient.
     * Activations were counted per layer though fusion shares or skips
     * some, and scratch per layer though the network keeps only the
     * largest: an upper bound. */
    double plan_acts, plan_grads;
    net_plan_floats(net, &plan_acts, &plan_grads);
    const dpt_layer *last = &net->layers[net->n_layers - 1];
    total += 4 * (plan_grads + (double)layer_count(last) * layer_cap(net, last) * nb);
    dpt_status bs;
    double budget = dpt_net_memory_budget(&bs);
    if (bs != DPT_OK)
        return bs;
    if (total > budget) {
        const dpt_layer *l = &net->layers[worst_layer];
        char t[32], b[32], w[32];
        fmt_bytes(total, t, sizeof t), fmt_bytes(budget, b, sizeof b), fmt_bytes(worst, w, sizeof w);
        char steps[48] = "";
        if (net->cap_steps > 1)
            snprintf(steps, sizeof steps, " of %d time steps", net->cap_steps);
        return dpt_fail(DPT_ERR_SHAPE, "%s:%d: the network needs %s for a minibatch of %d%s, "
                        "more than the %s allowed (DPT_MAX_NET_MEMORY); the largest part is %s "
                        "'%s' (output %dx%dx%d): %s", net->source, l->line, t, net->max_batch,
                        steps, b, l->type->name, l->name, l->out[1], l->out[2], l->out[0], w);
    }
    return DPT_OK;
}

/* The buffers whose size follows the step capacity, beyond the planned
 * ones: the layers' own (setup), the shared scratch and the loss
 * gradient. Called at build and when the steps grow. */
static dpt_status size_buffers(dpt_net *net)
{
    size_t work = 0;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        dpt_status s;
        if (l->type->setup && (s = l->type->setup(net, l)) != DPT_OK)
            return s;
        if (l->type->work_floats) {
            size_t w = l->type->work_floats(l, net->max_batch);
            if (w > work)
                work = w;
        }
    }
    if (work > net->work_floats) {
        dpt_free(net->work);
        net->work_floats = 0;
        if (!(net->work = dpt_alloc(work * sizeof(float))))
            return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for scratch", net->source);
        net->work_floats = work;
    }
    const dpt_layer *last = &net->layers[net->n_layers - 1];
    dpt_free(net->dout);
    net->dout = dpt_alloc(layer_count(last) * layer_cap(net, last) * (size_t)net->max_batch *
                          sizeof(float));
    return net->dout ? DPT_OK : dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", net->source);
}

static dpt_status build_buffers(dpt_net *net, uint64_t seed)
{
    net->params = dpt_alloc(net->n_params * sizeof(float));
    net->grads = dpt_alloc(net->n_params * sizeof(float));
    net->state = dpt_alloc(net->n_state * sizeof(float));
    if ((net->n_params && (!net->params || !net->grads)) || (net->n_state && !net->state))
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for the parameter buffers", net->source);
    net->dev = &net_dev_cpu;
    dpt_status s = net_alloc_buffers(net);
    if (s != DPT_OK)
        return s;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        l->p = l->n_learnables ? net->params + net->learn[l->first_learnable].offset : NULL;
        l->g = l->n_learnables ? net->grads + net->learn[l->first_learnable].offset : NULL;
        l->s = l->n_state ? net->state + net->state_tab[l->first_state].offset : NULL;
    }
    net->n_pool = 1;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type->pool_doubles)
            net->n_pool += net->layers[i].type->pool_doubles(&net->layers[i]);
    net->pool = calloc(net->n_pool + 1, sizeof(double)); /* + the step's loss */
    if (!net->pool)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", net->source);
    if ((s = size_buffers(net)) != DPT_OK)
        return s;
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
    size_t cap = 256;
    for (int i = 0; i < net->n_layers; i++)
        cap += 256 + (size_t)net->layers[i].n_in * (DPT_NAME_MAX + 1);
    net->spec = malloc(cap);
    if (!net->spec)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    size_t k = 0;
    net->spec[0] = '\0';
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        char keys[200] = "";
        if (l->type->describe)
            l->type->describe(l, keys, sizeof keys);
        k += (size_t)snprintf(net->spec + k, cap - k, "%-10s %s", l->type->name, l->name);
        /* from= only where it is not the default (the line above), so a
         * chain's spec reads as before the graph. */
        if (l->n_in != 1 || l->inputs[0] != i - 1)
            for (int j = 0; j < l->n_in; j++)
                k += (size_t)snprintf(net->spec + k, cap - k, "%s%s", j ? "," : " from=",
                                      net->layers[l->inputs[j]].name);
        k += (size_t)snprintf(net->spec + k, cap - k, "%s\n", keys);
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
    net->steps = net->cap_steps = 1;
    net->seed = seed;
    dpt_status s = parse_spec(net, text);
    if (s == DPT_OK)
        s = net_check_graph(net);
    if (s == DPT_OK)
        s = infer_shapes(net);
    if (s == DPT_OK) {
        fix_names(net->learn, net->n_learn, net->names);
        fix_names(net->state_tab, net->n_state_tab, net->names);
        if (check)
            s = check(net, ctx);
        if (s == DPT_OK)
            s = net_plan(net);
        /* The memory bound before the kernel plan allocates to time the
         * candidates, and again for the scratch of the algorithms chosen. */
        if (s == DPT_OK)
            s = check_memory(net);
        if (s == DPT_OK)
            s = net_plan_kernels(net);
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
    net_free_plan(net);
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type && net->layers[i].type->free)
            net->layers[i].type->free(&net->layers[i]);
    free(net->layers);
    dpt_free(net->work);
    dpt_free(net->dout);
    free(net->len);
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
int dpt_net_layer_n_inputs(const dpt_net *net, int i) { return net->layers[i].n_in; }
int dpt_net_layer_input(const dpt_net *net, int i, int k)
{
    return k >= 0 && k < net->layers[i].n_in ? net->layers[i].inputs[k] : -1;
}
void dpt_net_layer_shape(const dpt_net *net, int i, int chw[3])
{
    memcpy(chw, net->layers[i].out, 3 * sizeof(int));
}
void dpt_net_input_shape(const dpt_net *net, int chw[3]) { memcpy(chw, net->layers[0].out, 3 * sizeof(int)); }
int dpt_net_n_outputs(const dpt_net *net) { return (int)layer_count(&net->layers[net->n_layers - 1]); }

int dpt_net_layer_plan(const dpt_net *net, int i, dpt_layer_plan *out)
{
    if (!net || !out || i < 0 || i >= net->n_layers || !net->layers[i].type->plan_info)
        return 0;
    return net->layers[i].type->plan_info(&net->layers[i], out);
}
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

/* ---- the host device (net_dev) ---------------------------------------------------- */

static dpt_status cpu_alloc(dpt_net *net, size_t n, float **out)
{
    (void)net;
    *out = dpt_alloc((n ? n : 1) * sizeof(float));
    return *out ? DPT_OK : dpt_fail(DPT_ERR_NOMEM, "out of memory");
}
static void cpu_release(dpt_net *net, float *p) { (void)net, dpt_free(p); }
static void cpu_zero(dpt_net *net, float *p, size_t n) { (void)net, memset(p, 0, n * sizeof *p); }
static void cpu_add(dpt_net *net, float *dst, const float *src, size_t n)
{
    (void)net;
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}
static void cpu_copy(dpt_net *net, float *dst, const float *src, size_t n)
{
    (void)net;
    memcpy(dst, src, n * sizeof *dst);
}
static dpt_status cpu_upload(dpt_net *net, float *dst, const float *host, size_t n)
{
    cpu_copy(net, dst, host, n);
    return DPT_OK;
}
static dpt_status cpu_download(dpt_net *net, float *host, const float *src, size_t n)
{
    cpu_copy(net, host, src, n);
    return DPT_OK;
}
static int cpu_all_finite(dpt_net *net, const float *x, size_t n)
{
    (void)net;
    return all_finite(x, n);
}
static dpt_status cpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                              dpt_mode mode)
{
    return l->type->forward(net, l, x, y, n, mode);
}
static dpt_status cpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                               const float *dy, float *const *dx, int n)
{
    return l->type->backward(net, l, x, y, dy, dx, n);
}

const net_dev net_dev_cpu = {
    .name = "cpu", .alloc = cpu_alloc, .release = cpu_release, .zero = cpu_zero,
    .add = cpu_add, .copy = cpu_copy, .upload = cpu_upload, .download = cpu_download,
    .all_finite = cpu_all_finite, .forward = cpu_forward, .backward = cpu_backward,
};

/* ---- the executor ------------------------------------------------------------------- */

/* Floats of node i's output for n observations (of the current steps). */
static size_t node_floats(const dpt_net *net, int i, int n)
{
    const dpt_layer *l = &net->layers[i];
    return (size_t)n * (l->seq ? (size_t)net->steps : 1) * layer_count(l);
}

/* The n a layer's forward/backward takes: rows of n*T time steps for a
 * per-step type on a sequence, else the observations. */
static int layer_rows(const dpt_net *net, const dpt_layer *l, int n)
{
    return l->seq && l->type->seq_mode == DPT_SEQ_PER_STEP ? n * net->steps : n;
}

/* Run the layers on the input already in node 0's buffer, on the
 * network's device. */
static dpt_status run_forward(dpt_net *net, int n, dpt_mode mode)
{
    const net_dev *dev = net->dev;
    float **buf = net->buf;
    const float *xs[DPT_MAX_INPUTS];
    for (int i = 1; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        const node_plan *P = &net->plan[i];
        if (l->fused || P->skip_fwd) /* computed by the node it reads */
            continue;
        for (int k = 0; k < l->n_in; k++)
            xs[k] = P->x_act[k] >= 0 ? buf[P->x_act[k]] : NULL;
        double t0 = net->prof ? prof_now() : 0.0;
        dpt_status s = dev->forward(net, l, xs, P->act >= 0 ? buf[P->act] : NULL,
                                    layer_rows(net, l, n), mode);
        if (s != DPT_OK)
            return s;
        if (net->prof)
            net->prof[i] += prof_now() - t0;
    }
    net->last_n = n;
    net->last_mode = mode;
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
    if (!net->buf)
        return dpt_fail(DPT_ERR_NOMEM, "%s: the network has no buffers (out of memory when "
                        "dpt_net_set_steps grew them)", net->source);
    if (net->len && n > net->len_n)
        return dpt_fail(DPT_ERR_ARG, "%s: forward on %d sequences, but dpt_net_set_steps gave "
                        "the lengths of %d", net->source, n, net->len_n);
    const net_dev *dev = net->dev;
    dpt_status s = dev->upload(net, net->buf[net->plan[0].act], x, node_floats(net, 0, n));
    if (s == DPT_OK)
        s = run_forward(net, n, mode);
    if (s != DPT_OK)
        return s;
    int last = net->n_layers - 1;
    const float *out = net->acts[last];
    if (net->gpu) /* to pinned host memory, checked there */
        return net_gpu_get_output(net, out, n, y);
    if (!dev->all_finite(net, out, node_floats(net, last, n))) {
        for (int i = 0; i < net->n_layers; i++)
            if (net->acts[i] && !dev->all_finite(net, net->acts[i], node_floats(net, i, n)))
                return dpt_fail(DPT_ERR_NUMERIC, "non-finite values in the output of layer '%s' "
                                "(%s)", net->layers[i].name, net->layers[i].type->name);
    }
    *y = out;
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

/* Backward from dy (on the network's device) at the output, or at the
 * logits (the input of the last layer, softmax). */
static dpt_status run_backward(dpt_net *net, const float *dy, int dy_is_logits)
{
    const net_dev *dev = net->dev;
    float **buf = net->buf;
    int n = net->last_n;
    int top = net->n_layers - 1;
    /* The gradient group the caller's dy stands for: the output's, or with
     * dy at the logits, that of the softmax's input (its only consumer is
     * the softmax, which is skipped). */
    int ext = net->plan[top].grp;
    if (dy_is_logits) {
        ext = net->plan[net->layers[top].inputs[0]].grp;
        top--;
    }
    const float *xs[DPT_MAX_INPUTS];
    float *dxs[DPT_MAX_INPUTS];
    for (int i = top; i >= 1; i--) {
        dpt_layer *l = &net->layers[i];
        const node_plan *P = &net->plan[i];
        if (P->skip_bwd) /* the batchnorm below applies this ReLU's mask */
            continue;
        const float *g = P->grp == ext ? dy : buf[net->grp_buf[P->grp]];
        for (int k = 0; k < l->n_in; k++) {
            xs[k] = P->x_act[k] >= 0 ? buf[P->x_act[k]] : NULL;
            dxs[k] = P->dx_buf[k] >= 0 ? buf[P->dx_buf[k]] : NULL;
        }
        double t0 = net->prof ? prof_now() : 0.0;
        dpt_status s = dev->backward(net, l, xs, P->act >= 0 ? buf[P->act] : NULL, g, dxs,
                                     layer_rows(net, l, n));
        if (s != DPT_OK)
            return s;
        /* A node read by several layers: this one's share is added to what
         * the later layers wrote. */
        for (int k = 0; k < l->n_in; k++)
            if (P->acc[k])
                dev->add(net, buf[net->grp_buf[P->dx_grp[k]]], dxs[k],
                         node_floats(net, l->inputs[k], n));
        if (net->prof)
            net->prof[net->n_layers + i] += prof_now() - t0;
    }
    /* On a GPU: the gradient mirror is stale now, and a failed add (queued,
     * no status) is reported here. */
    return net->gpu ? net_gpu_after_backward(net) : DPT_OK;
}

dpt_status dpt_net_backward(dpt_net *net, const float *dy, int dy_is_logits)
{
    if (!net || !dy)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_backward: %s is NULL", !net ? "net" : "dy");
    dpt_status s = backward_checks(net, dy_is_logits);
    if (s == DPT_OK && net->gpu) /* the caller's host dy to the device */
        s = net_gpu_put_dy(net, dy, node_floats(net, net->n_layers - 1, net->last_n), &dy);
    return s == DPT_OK ? run_backward(net, dy, dy_is_logits) : s;
}

/* ---- the training step's device-dependent parts (train/step.c) ---------------------- */

/* Softmax cross-entropy over the time steps of a sequence output: a row
 * whose target is all zero is padding (no loss, zero gradient); the others
 * give Σ -t·log p · scale and the gradient (p - t)·w at the logits. */
static double seq_xent(const float *p, const float *t, size_t rows, int k, float w, double scale,
                       float *dlogits)
{
    double loss = 0.0;
    for (size_t i = 0; i < rows; i++) {
        const float *pr = p + i * k, *tr = t + i * k;
        float *g = dlogits + i * k;
        int valid = 0;
        for (int j = 0; j < k && !valid; j++)
            valid = tr[j] != 0.0f;
        if (!valid) {
            memset(g, 0, (size_t)k * sizeof *g);
            continue;
        }
        for (int j = 0; j < k; j++) {
            if (tr[j] != 0.0f) /* as dpt_softmax_xent: 0·log 0 = 0, p floored */
                loss -= (double)tr[j] * log(pr[j] > FLT_MIN ? pr[j] : FLT_MIN);
            g[j] = (pr[j] - tr[j]) * w;
        }
    }
    return loss * scale;
}

/* A GPU step's launches, x and the targets on the device already: what
 * net_gpu_graph_step captures as one CUDA graph (or runs eagerly). */
static dpt_status gpu_step_body(dpt_net *net, int n, float w, double scale)
{
    const float *dlogits;
    dpt_status s = run_forward(net, n, DPT_MODE_TRAIN);
    if (s == DPT_OK)
        s = net_gpu_loss_xent(net, NULL, n, w, scale, &dlogits);
    return s == DPT_OK ? run_backward(net, dlogits, 1) : s;
}

size_t net_loss_valid_rows(const dpt_net *net, const float *t, int n)
{
    if (!dpt_net_output_is_sequence(net))
        return (size_t)n;
    const int k = dpt_net_n_outputs(net);
    const size_t rows = (size_t)n * net->steps;
    size_t valid = 0;
    for (size_t i = 0; i < rows; i++)
        for (int j = 0; j < k; j++)
            if (t[i * k + j] != 0.0f) {
                valid++;
                break;
            }
    return valid;
}

dpt_status net_step_forward_loss(dpt_net *net, const float *x, const float *t, int n, float w,
                                 double scale, double *loss)
{
    *loss = 0;
    if (!net->gpu) {
        const float *p;
        dpt_status s = dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &p);
        if (s == DPT_OK && dpt_net_output_is_sequence(net))
            *loss = seq_xent(p, t, (size_t)n * net->steps, dpt_net_n_outputs(net), w, scale,
                             net->dout);
        else if (s == DPT_OK)
            *loss = dpt_softmax_xent(p, t, n, dpt_net_n_outputs(net), w, net->dout) * scale;
        return s;
    }
    if (n < 1 || n > net->max_batch)
        return dpt_fail(DPT_ERR_ARG, "%s: forward on %d observations (1 to %d allowed)",
                        net->source, n, net->max_batch);
    const dpt_layer *top = &net->layers[net->n_layers - 1];
    if (top->type != &dpt_layer_softmax)
        return dpt_fail(DPT_ERR_ARG, "%s: gradient given at the logits, but the last layer is "
                        "'%s', not softmax", net->source, top->name);
    if (!net->buf)
        return dpt_fail(DPT_ERR_NOMEM, "%s: the network has no buffers (out of memory when "
                        "dpt_net_set_steps grew them)", net->source);
    /* Nothing comes back here: the loss reaches the host with the
     * batch-norm statistics (net_pool_state), and a non-finite one fails
     * there, naming the layer. */
    const float *dlogits;
    dpt_status s = net->dev->upload(net, net->buf[net->plan[0].act], x, node_floats(net, 0, n));
    /* The forward, loss and backward as one CUDA graph where it can be:
     * net_step_backward then has nothing left to do. */
    if (s == DPT_OK && net_gpu_graph_wanted(net))
        return net_gpu_graph_step(net, t, n, w, scale, gpu_step_body);
    if (s == DPT_OK)
        s = run_forward(net, n, DPT_MODE_TRAIN);
    return s == DPT_OK ? net_gpu_loss_xent(net, t, n, w, scale, &dlogits) : s;
}

dpt_status net_step_backward(dpt_net *net)
{
    if (net->gpu && net_gpu_graph_took_backward(net))
        return DPT_OK;
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
    if (total == 1 && !(loss && (many || net->gpu)))
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
        /* On a GPU nothing has looked at the forward's values yet: a
         * non-finite loss fails before the state changes. */
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

/* ---- sequences ---------------------------------------------------------------------- */

int dpt_net_is_sequence(const dpt_net *net) { return net && net->layers[0].seq; }

int dpt_net_layer_is_sequence(const dpt_net *net, int i)
{
    return net && i >= 0 && i < net->n_layers && net->layers[i].seq;
}

int dpt_net_output_is_sequence(const dpt_net *net)
{
    return net && net->layers[net->n_layers - 1].seq;
}

int dpt_net_steps(const dpt_net *net) { return net ? net->steps : 0; }

void dpt_net_set_stateful(dpt_net *net, int on)
{
    if (net)
        net->stateful = on != 0;
}

/* Buffers for cap time steps: the plan again (its sizes follow
 * cap_steps), the memory bound, then the allocations. On failure the
 * old capacity is put back. */
static dpt_status grow_steps(dpt_net *net, int cap)
{
    int old = net->cap_steps;
    net->cap_steps = cap;
    dpt_status s = net_replan(net, -1);
    if (s == DPT_OK)
        s = check_memory(net);
    if (s == DPT_OK)
        s = net_alloc_buffers(net);
    if (s == DPT_OK)
        s = size_buffers(net);
    if (s == DPT_OK)
        return DPT_OK;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dpt_last_error());
    net->cap_steps = old;
    net->last_n = 0; /* the buffers a backward would read are gone */
    if (net_replan(net, -1) != DPT_OK || net_alloc_buffers(net) != DPT_OK ||
        size_buffers(net) != DPT_OK)
        net_free_buffers(net); /* nothing to run on: forward fails cleanly */
    return dpt_fail(s, "%s", msg);
}

dpt_status net_grow_steps(dpt_net *net, int cap) { return grow_steps(net, cap); }

dpt_status dpt_net_set_steps(dpt_net *net, int t, const int *len, int n, int pad_left)
{
    if (!net)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_set_steps: net is NULL");
    if (!net->layers[0].seq) {
        if (t != 1)
            return dpt_fail(DPT_ERR_ARG, "%s: %d time steps for a network whose input is not a "
                            "sequence (its first layer is %s)", net->source, t,
                            net->layers[0].type->name);
        return DPT_OK;
    }
    if (t < 1 || t > DPT_SEQ_MAX_STEPS)
        return dpt_fail(DPT_ERR_SHAPE, "%s: %d time steps (1 to %d allowed)", net->source, t,
                        DPT_SEQ_MAX_STEPS);
    /* Rows of n*T time steps are ints in the kernels. */
    if ((double)net->max_batch * t > 2147483647.0)
        return dpt_fail(DPT_ERR_SHAPE, "%s: %d time steps for a minibatch of %d: more than %d "
                        "rows in all", net->source, t, net->max_batch, 2147483647);
    /* And so are a layer's values over the minibatch. */
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        if (l->seq && (double)net->max_batch * t * layer_count(l) > 2147483647.0)
            return dpt_fail(DPT_ERR_SHAPE, "%s:%d: %s '%s': %d time steps of %zu values for a "
                            "minibatch of %d: more than %d values", net->source, l->line,
                            l->type->name, l->name, t, layer_count(l), net->max_batch,
                            2147483647);
    }
    if (pad_left != 0 && pad_left != 1)
        return dpt_fail(DPT_ERR_ARG, "%s: pad_left must be 0 or 1, not %d", net->source,
                        pad_left);
    if (len) {
        if (n < 1 || n > net->max_batch)
            return dpt_fail(DPT_ERR_ARG, "%s: lengths of %d sequences (1 to %d allowed)",
                            net->source, n, net->max_batch);
        for (int i = 0; i < n; i++)
            if (len[i] < 0 || len[i] > t)
                return dpt_fail(DPT_ERR_ARG, "%s: sequence %d has length %d (0 to %d allowed)",
                                net->source, i, len[i], t);
    }
    if (t > net->cap_steps) {
        dpt_status s = net->gpu ? net_gpu_grow_steps(net, t) : grow_steps(net, t);
        if (s != DPT_OK)
            return s;
    }
    if (len && n > net->len_cap) {
        int *p = realloc(net->len, (size_t)net->max_batch * sizeof *p);
        if (!p)
            return dpt_fail(DPT_ERR_NOMEM, "out of memory");
        net->len = p, net->len_cap = net->max_batch;
    }
    net->steps = t;
    net->pad_left = pad_left;
    if (len) {
        memcpy(net->len, len, (size_t)n * sizeof *len);
        net->len_n = n;
        dpt_status s = net->gpu ? net_gpu_put_lengths(net) : DPT_OK;
        if (s != DPT_OK)
            return s;
    } else {
        free(net->len);
        net->len = NULL, net->len_n = net->len_cap = 0;
    }
    /* A backward belongs to the forward of these steps: none yet. */
    net->last_n = 0;
    return DPT_OK;
}

size_t dpt_net_carry_floats(const dpt_net *net)
{
    size_t k = 0;
    for (int i = 0; net && i < net->n_layers; i++)
        if (net->layers[i].type->carry_floats)
            k += net->layers[i].type->carry_floats(&net->layers[i]);
    return k;
}

static dpt_status carry_io(dpt_net *net, int n, float *buf, int set, const char *fn)
{
    if (!net || !buf)
        return dpt_fail(DPT_ERR_ARG, "%s: %s is NULL", fn, !net ? "net" : set ? "in" : "out");
    if (n < 0 || n > net->max_batch)
        return dpt_fail(DPT_ERR_ARG, "%s: %d stream slots (0 to %d allowed)", fn, n,
                        net->max_batch);
    size_t stride = dpt_net_carry_floats(net), k = 0;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (!l->type->carry_floats)
            continue;
        l->type->carry_copy(l, n, buf + k, stride, set);
        k += l->type->carry_floats(l);
    }
    return DPT_OK;
}

dpt_status dpt_net_carry_get(const dpt_net *net, int n, float *out)
{
    return carry_io((dpt_net *)net, n, out, 0, "dpt_net_carry_get");
}

dpt_status dpt_net_carry_set(dpt_net *net, int n, const float *in)
{
    return carry_io(net, n, (float *)in, 1, "dpt_net_carry_set");
}
