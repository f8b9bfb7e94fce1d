/* Building a network from C calls: each call appends one line of spec text,
 * and dpt_net_build hands the text to the spec parser, so both ways of
 * describing a network share one set of rules and one set of messages. */
#include "net/net_impl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dpt_net_builder {
    char *text;          /* spec lines, NUL-terminated (owned) */
    size_t len, cap;
    int n_layers;
    char *from;          /* from= for the next layer (owned; NULL: the default) */
    dpt_status status;   /* first failure, sticky */
    char message[512];   /* its message */
};

dpt_status dpt_net_builder_new(dpt_net_builder **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_builder_new: out is NULL");
    *out = NULL;
    dpt_net_builder *b = calloc(1, sizeof *b);
    if (!b || !(b->text = calloc(1, b->cap = 256))) {
        free(b);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    *out = b;
    return DPT_OK;
}

void dpt_net_builder_free(dpt_net_builder *b)
{
    if (!b)
        return;
    free(b->text);
    free(b->from);
    free(b);
}

/* Record the first failure; every later call repeats it. */
static dpt_status fail(dpt_net_builder *b, dpt_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->message, sizeof b->message, fmt, ap);
    va_end(ap);
    b->status = s;
    return dpt_fail(s, "%s", b->message);
}

/* Common entry of every add: a usable builder with no earlier failure. */
static dpt_status ready(dpt_net_builder *b, const char *fn)
{
    if (!b)
        return dpt_fail(DPT_ERR_ARG, "%s: builder is NULL", fn);
    if (b->status != DPT_OK)
        return dpt_fail(b->status, "%s", b->message);
    return DPT_OK;
}

static dpt_status check_name(dpt_net_builder *b, const char *fn, const char *name)
{
    if (!name || !*name)
        return fail(b, DPT_ERR_ARG, "%s: layer %d needs a name", fn, b->n_layers + 1);
    size_t len = strlen(name);
    if (len >= DPT_NAME_MAX)
        return fail(b, DPT_ERR_ARG, "%s: layer name '%.20s...' longer than %d characters", fn,
                    name, DPT_NAME_MAX - 1);
    int bad = !net_good_name(name);
    for (const char *c = name; *c && !bad; c++)
        bad = isspace((unsigned char)*c) || strchr("#=", *c);
    if (bad)
        return fail(b, DPT_ERR_ARG, "%s: bad layer name '%s' (no white space, control "
                    "characters, invalid UTF-8, '/', '\"', backslash, '#', '=' or ',')", fn, name);
    return DPT_OK;
}

static dpt_status check_int(dpt_net_builder *b, const char *fn, const char *name, const char *what,
                            int v, int min)
{
    if (v < min || v > 1000000)
        return fail(b, DPT_ERR_ARG, "%s: layer '%s': %s must be %d to 1000000, not %d", fn, name,
                    what, min, v);
    return DPT_OK;
}

/* Append one layer line, with the pending from= (if any) as its last key. */
static dpt_status append(dpt_net_builder *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0)
        return fail(b, DPT_ERR_ARG, "net builder: cannot format a layer line");
    size_t extra = b->from ? strlen(b->from) + 6 : 0; /* " from=" */
    if (b->len + (size_t)need + extra + 2 > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + (size_t)need + extra + 2)
            cap *= 2;
        char *p = realloc(b->text, cap);
        if (!p)
            return fail(b, DPT_ERR_NOMEM, "out of memory");
        b->text = p, b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->text + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)need;
    if (b->from) {
        b->len += (size_t)snprintf(b->text + b->len, b->cap - b->len, " from=%s", b->from);
        free(b->from);
        b->from = NULL;
    }
    b->text[b->len++] = '\n';
    b->text[b->len] = '\0';
    b->n_layers++;
    return DPT_OK;
}

dpt_status dpt_net_builder_add_line(dpt_net_builder *b, const char *line)
{
    static const char fn[] = "dpt_net_builder_add_line";
    dpt_status s = ready(b, fn);
    if (s != DPT_OK)
        return s;
    if (!line)
        return fail(b, DPT_ERR_ARG, "%s: line is NULL", fn);
    if (strpbrk(line, "\r\n"))
        return fail(b, DPT_ERR_ARG, "%s: '%.40s': one layer per call, no newline", fn, line);
    const char *p = line;
    while (isspace((unsigned char)*p))
        p++;
    if (!*p || *p == '#')
        return fail(b, DPT_ERR_ARG, "%s: empty line (a layer '<type> <name> [key=value ...]' "
                    "expected)", fn);
    return append(b, "%s", line);
}

dpt_status dpt_net_builder_add_input(dpt_net_builder *b, const char *name, int height, int width,
                                     int channels)
{
    static const char fn[] = "dpt_net_builder_add_input";
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "height", height, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "width", width, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "channels", channels, 1);
    return s != DPT_OK ? s : append(b, "input %s size=%dx%dx%d", name, height, width, channels);
}

/* conv and conv_ex: one set of checks; dilation and groups are written
 * only when not 1, so add_conv's text is what it always was. */
static dpt_status add_conv(dpt_net_builder *b, const char *fn, const char *name, int filter,
                           int filters, int stride, int padding, int dilation, int groups)
{
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "filter", filter, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "filters", filters, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "stride", stride, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "padding", padding, 0);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "dilation", dilation, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "groups", groups, 1);
    if (s != DPT_OK)
        return s;
    char extra[64] = "";
    if (dilation != 1 || groups != 1)
        snprintf(extra, sizeof extra, " dilation=%d groups=%d", dilation, groups);
    return append(b, "conv %s filter=%d filters=%d stride=%d padding=%d%s", name, filter,
                  filters, stride, padding, extra);
}

dpt_status dpt_net_builder_add_conv(dpt_net_builder *b, const char *name, int filter, int filters,
                                    int stride, int padding)
{
    return add_conv(b, "dpt_net_builder_add_conv", name, filter, filters, stride, padding, 1, 1);
}

/* Layers with a name and no keys. */
static dpt_status add_plain(dpt_net_builder *b, const char *fn, const char *type, const char *name)
{
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    return s != DPT_OK ? s : append(b, "%s %s", type, name);
}

dpt_status dpt_net_builder_add_batchnorm(dpt_net_builder *b, const char *name)
{
    return add_plain(b, "dpt_net_builder_add_batchnorm", "batchnorm", name);
}

dpt_status dpt_net_builder_add_relu(dpt_net_builder *b, const char *name)
{
    return add_plain(b, "dpt_net_builder_add_relu", "relu", name);
}

dpt_status dpt_net_builder_add_softmax(dpt_net_builder *b, const char *name)
{
    return add_plain(b, "dpt_net_builder_add_softmax", "softmax", name);
}

dpt_status dpt_net_builder_add_fc(dpt_net_builder *b, const char *name, int outputs)
{
    static const char fn[] = "dpt_net_builder_add_fc";
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK && outputs != DPT_NET_OUTPUTS_CLASSES)
        s = check_int(b, fn, name, "outputs", outputs, 1);
    if (s != DPT_OK)
        return s;
    if (outputs == DPT_NET_OUTPUTS_CLASSES)
        return append(b, "fc %s outputs=classes", name);
    return append(b, "fc %s outputs=%d", name, outputs);
}

/* "a,b,c": layer names (as check_name) joined by single commas. */
static dpt_status check_inputs(dpt_net_builder *b, const char *fn, const char *inputs)
{
    if (!inputs || !*inputs)
        return fail(b, DPT_ERR_ARG, "%s: layer %d: no input layers named", fn, b->n_layers + 1);
    size_t len = strlen(inputs);
    if (len > (size_t)DPT_MAX_INPUTS * DPT_NAME_MAX)
        return fail(b, DPT_ERR_ARG, "%s: input list '%.20s...' too long", fn, inputs);
    char name[DPT_NAME_MAX + 1];
    for (const char *p = inputs;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0 || n >= sizeof name)
            return fail(b, DPT_ERR_ARG, "%s: bad input list '%s' (layer names joined by commas)",
                        fn, inputs);
        memcpy(name, p, n);
        name[n] = '\0';
        dpt_status s = check_name(b, fn, name);
        if (s != DPT_OK)
            return s;
        if (!comma)
            return DPT_OK;
        p = comma + 1;
    }
}

dpt_status dpt_net_builder_set_from(dpt_net_builder *b, const char *inputs)
{
    static const char fn[] = "dpt_net_builder_set_from";
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_inputs(b, fn, inputs);
    if (s != DPT_OK)
        return s;
    char *copy = strdup(inputs);
    if (!copy)
        return fail(b, DPT_ERR_NOMEM, "out of memory");
    free(b->from);
    b->from = copy;
    return DPT_OK;
}

/* add and concat: their inputs, then the line. */
static dpt_status add_merge(dpt_net_builder *b, const char *fn, const char *type,
                            const char *name, const char *inputs)
{
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK && inputs)
        s = dpt_net_builder_set_from(b, inputs);
    if (s == DPT_OK && !b->from)
        s = fail(b, DPT_ERR_ARG, "%s: layer '%s': name its input layers (inputs, or "
                 "dpt_net_builder_set_from)", fn, name);
    return s != DPT_OK ? s : append(b, "%s %s", type, name);
}

dpt_status dpt_net_builder_add_add(dpt_net_builder *b, const char *name, const char *inputs)
{
    return add_merge(b, "dpt_net_builder_add_add", "add", name, inputs);
}

dpt_status dpt_net_builder_add_concat(dpt_net_builder *b, const char *name, const char *inputs)
{
    return add_merge(b, "dpt_net_builder_add_concat", "concat", name, inputs);
}

dpt_status dpt_net_builder_add_conv_ex(dpt_net_builder *b, const char *name, int filter,
                                       int filters, int stride, int padding, int dilation,
                                       int groups)
{
    return add_conv(b, "dpt_net_builder_add_conv_ex", name, filter, filters, stride, padding,
                    dilation, groups);
}

/* maxpool and avgpool. */
static dpt_status add_pool(dpt_net_builder *b, const char *fn, const char *type, const char *name,
                           int size, int stride, int padding)
{
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "size", size, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "stride", stride, 1);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "padding", padding, 0);
    return s != DPT_OK ? s
                       : append(b, "%s %s size=%d stride=%d padding=%d", type, name, size, stride,
                                padding);
}

dpt_status dpt_net_builder_add_maxpool(dpt_net_builder *b, const char *name, int size, int stride,
                                       int padding)
{
    return add_pool(b, "dpt_net_builder_add_maxpool", "maxpool", name, size, stride, padding);
}

dpt_status dpt_net_builder_add_avgpool(dpt_net_builder *b, const char *name, int size, int stride,
                                       int padding)
{
    return add_pool(b, "dpt_net_builder_add_avgpool", "avgpool", name, size, stride, padding);
}

dpt_status dpt_net_builder_add_globalavgpool(dpt_net_builder *b, const char *name)
{
    return add_plain(b, "dpt_net_builder_add_globalavgpool", "globalavgpool", name);
}

dpt_status dpt_net_builder_add_dropout(dpt_net_builder *b, const char *name, float p)
{
    static const char fn[] = "dpt_net_builder_add_dropout";
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK && !(p >= 0.0f && p < 1.0f))
        s = fail(b, DPT_ERR_ARG, "%s: layer '%s': p must be in [0, 1), not %g", fn, name,
                 (double)p);
    return s != DPT_OK ? s : append(b, "dropout %s p=%.9g", name, (double)p);
}

dpt_status dpt_net_builder_add_leakyrelu(dpt_net_builder *b, const char *name, float alpha)
{
    static const char fn[] = "dpt_net_builder_add_leakyrelu";
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK && !(alpha >= 0.0f && alpha <= 1.0f))
        s = fail(b, DPT_ERR_ARG, "%s: layer '%s': alpha must be in [0, 1], not %g", fn, name,
                 (double)alpha);
    return s != DPT_OK ? s : append(b, "leakyrelu %s alpha=%.9g", name, (double)alpha);
}

dpt_status dpt_net_builder_add_sigmoid(dpt_net_builder *b, const char *name)
{
    return add_plain(b, "dpt_net_builder_add_sigmoid", "sigmoid", name);
}

dpt_status dpt_net_builder_add_tanh(dpt_net_builder *b, const char *name)
{
    return add_plain(b, "dpt_net_builder_add_tanh", "tanh", name);
}

dpt_status dpt_net_builder_add_sequenceinput(dpt_net_builder *b, const char *name, int features)
{
    static const char fn[] = "dpt_net_builder_add_sequenceinput";
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK && features != DPT_NET_SIZE_VOCAB)
        s = check_int(b, fn, name, "features", features, 1);
    if (s != DPT_OK)
        return s;
    if (features == DPT_NET_SIZE_VOCAB)
        return append(b, "sequenceinput %s size=vocab", name);
    return append(b, "sequenceinput %s size=%d", name, features);
}

static dpt_status add_rnn(dpt_net_builder *b, const char *fn, const char *type, const char *name,
                          int units, int output_last)
{
    dpt_status s = ready(b, fn);
    if (s == DPT_OK)
        s = check_name(b, fn, name);
    if (s == DPT_OK)
        s = check_int(b, fn, name, "units", units, 1);
    if (s == DPT_OK && output_last != 0 && output_last != 1)
        s = fail(b, DPT_ERR_ARG, "%s: layer '%s': output_last must be 0 or 1, not %d", fn, name,
                 output_last);
    return s != DPT_OK ? s : append(b, "%s %s units=%d output=%s", type, name, units,
                                    output_last ? "last" : "sequence");
}

dpt_status dpt_net_builder_add_lstm(dpt_net_builder *b, const char *name, int units,
                                    int output_last)
{
    return add_rnn(b, "dpt_net_builder_add_lstm", "lstm", name, units, output_last);
}

dpt_status dpt_net_builder_add_gru(dpt_net_builder *b, const char *name, int units,
                                   int output_last)
{
    return add_rnn(b, "dpt_net_builder_add_gru", "gru", name, units, output_last);
}

const char *dpt_net_builder_spec(const dpt_net_builder *b) { return b ? b->text : NULL; }

dpt_status dpt_net_build(const dpt_net_builder *b, int n_classes, int max_batch, uint64_t seed,
                         dpt_net **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_build: out is NULL");
    *out = NULL;
    if (!b)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_build: builder is NULL");
    if (b->status != DPT_OK)
        return dpt_fail(b->status, "%s", b->message);
    if (b->n_layers == 0)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_build: the builder has no layers");
    return dpt_net_from_spec(b->text, "net builder", n_classes, max_batch, seed, out);
}
