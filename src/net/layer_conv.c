/* Convolution and fully connected layers: the layers with weights. */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void glorot_uniform(float *w, size_t n, int fan_in, int fan_out, dpt_rng *rng)
{
    float bound = sqrtf(6.0f / (float)(fan_in + fan_out));
    for (size_t i = 0; i < n; i++)
        w[i] = (2.0f * dpt_rng_uniform(rng) - 1.0f) * bound;
}

/* ---- conv ------------------------------------------------------------------------ */

typedef struct conv_layer {
    int kh, kw, filters, stride, pad, bias;
    int dilation, groups; /* 1, 1: the plain convolution (and its fast kernels) */
    dpt_conv2d_desc d; /* n filled per call; algo by conv_plan */
    dpt_conv_plan plan; /* how d.algo was chosen (conv_plan) */
    int planned_batch;  /* the batch it was chosen for; 0: not planned */
} conv_layer;

/* Floats of the weights [filters, c_in/groups, kh, kw] (PyTorch's layout). */
static size_t conv_weights(const dpt_layer *l)
{
    const conv_layer *c = l->priv;
    return (size_t)c->filters * (l->in[0] / c->groups) * c->kh * c->kw;
}

static dpt_status conv_create(dpt_layer *l)
{
    conv_layer *c = calloc(1, sizeof *c);
    if (!c)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    c->stride = 1, c->bias = 1, c->dilation = 1, c->groups = 1;
    l->priv = c;
    return DPT_OK;
}

static dpt_status conv_set(dpt_layer *l, const char *key, const char *value)
{
    conv_layer *c = l->priv;
    /* Limits per key: far above any real network, low enough that the
     * shapes they make stay within int and the memory check. */
    if (strcmp(key, "filter") == 0) {
        int k[2];
        if (strchr(value, 'x')) {
            dpt_status s = parse_dims(key, value, 2, 4096, k);
            if (s == DPT_OK)
                c->kh = k[0], c->kw = k[1];
            return s;
        }
        dpt_status s = parse_int_max(key, value, 1, 4096, &k[0]);
        if (s == DPT_OK)
            c->kh = c->kw = k[0];
        return s;
    }
    if (strcmp(key, "filters") == 0)
        return parse_int_max(key, value, 1, 65536, &c->filters);
    if (strcmp(key, "stride") == 0)
        return parse_int_max(key, value, 1, 4096, &c->stride);
    if (strcmp(key, "padding") == 0)
        return parse_int_max(key, value, 0, 4096, &c->pad);
    if (strcmp(key, "bias") == 0) {
        dpt_status s = parse_int(key, value, 0, &c->bias);
        if (s == DPT_OK && c->bias > 1)
            return dpt_fail(DPT_ERR_FORMAT, "bad value '%s' for bias (0 or 1)", value);
        return s;
    }
    if (strcmp(key, "dilation") == 0) {
        /* D, or DxD as MATLAB's DilationFactor [D D]; the kernels take one
         * dilation for both directions. */
        int d[2];
        if (strchr(value, 'x')) {
            dpt_status s = parse_dims(key, value, 2, 4096, d);
            if (s == DPT_OK && d[0] != d[1])
                return dpt_fail(DPT_ERR_UNSUPPORTED, "dilation '%s': different dilations "
                                "per direction are not supported (give one value)", value);
            if (s == DPT_OK)
                c->dilation = d[0];
            return s;
        }
        return parse_int_max(key, value, 1, 4096, &c->dilation);
    }
    if (strcmp(key, "groups") == 0)
        return parse_int_max(key, value, 1, 65536, &c->groups);
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (conv takes filter, filters, stride, "
                    "padding, bias, dilation, groups)", key);
}

static dpt_status conv_infer(dpt_net *net, dpt_layer *l)
{
    conv_layer *c = l->priv;
    if (c->kh == 0 || c->filters == 0)
        return dpt_fail(DPT_ERR_FORMAT, "conv '%s' needs filter=K and filters=F", l->name);
    if (l->in[0] % c->groups != 0 || c->filters % c->groups != 0)
        return dpt_fail(DPT_ERR_SHAPE,
                        "conv '%s': groups=%d must divide both the input channels (%d) and "
                        "filters (%d)", l->name, c->groups, l->in[0], c->filters);
    c->d = (dpt_conv2d_desc){.n = 1, .c_in = l->in[0], .h = l->in[1], .w = l->in[2],
                             .c_out = c->filters, .kh = c->kh, .kw = c->kw,
                             .stride = c->stride, .pad = c->pad, .dilation = c->dilation,
                             .groups = c->groups};
    if (dpt_conv2d_desc_init(&c->d) != 0) {
        if (c->dilation > 1)
            return dpt_fail(DPT_ERR_SHAPE,
                            "conv '%s': filter %dx%d with dilation %d (reach %lldx%lld) does "
                            "not fit the input %dx%d with padding %d", l->name, c->kh, c->kw,
                            c->dilation, (long long)c->dilation * (c->kh - 1) + 1,
                            (long long)c->dilation * (c->kw - 1) + 1, l->in[1], l->in[2],
                            c->pad);
        return dpt_fail(DPT_ERR_SHAPE,
                        "conv '%s': filter %dx%d does not fit the input %dx%d with padding %d",
                        l->name, c->kh, c->kw, l->in[1], l->in[2], c->pad);
    }
    l->out[0] = c->filters, l->out[1] = c->d.out_h, l->out[2] = c->d.out_w;
    int wshape[4] = {c->filters, l->in[0] / c->groups, c->kh, c->kw};
    dpt_status s = net_declare(net, l, DPT_KIND_LEARN, "Weights", 4, wshape);
    if (s == DPT_OK && c->bias)
        s = net_declare(net, l, DPT_KIND_LEARN, "Bias", 1, &c->filters);
    return s;
}

static void conv_init(dpt_layer *l, dpt_rng *rng)
{
    conv_layer *c = l->priv;
    size_t nw = conv_weights(l);
    /* Fans of one group, as MATLAB's groupedConvolution2dLayer. */
    glorot_uniform(l->p, nw, l->in[0] / c->groups * c->kh * c->kw,
                   c->filters / c->groups * c->kh * c->kw, rng);
    if (c->bias)
        memset(l->p + nw, 0, (size_t)c->filters * sizeof(float));
}

static size_t conv_work(const dpt_layer *l, int n)
{
    const conv_layer *c = l->priv;
    dpt_conv2d_desc d = c->d;
    d.n = n;
    return dpt_conv2d_work_floats(&d);
}

static dpt_status conv_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                               int n, dpt_mode mode)
{
    const float *x = xs[0];
    conv_layer *c = l->priv;
    c->d.n = n;
    size_t nw = conv_weights(l);
    /* Fused with the batchnorm above (net.c): its sums come with the output. */
    double *sums = mode == DPT_MODE_TRAIN ? l->sums_out : NULL;
    /* Fused with the batchnorm below (net.c): x is its input, normalised
     * here on the fly. */
    dpt_conv2d_forward_ex(&c->d, x, l->in_bnf ? &l->in_bnf->a : NULL, l->p,
                          c->bias ? l->p + nw : NULL, y, net->work, sums,
                          sums ? sums + c->filters : NULL);
    return DPT_OK;
}

static dpt_status conv_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                                const float *y, const float *dy, float *const *dxs, int n)
{
    const float *x = xs[0];
    float *dx = dxs[0];
    conv_layer *c = l->priv;
    c->d.n = n;
    size_t nw = conv_weights(l);
    /* Fused (net.c): x as in forward, and the batchnorm below gets its
     * backward sums with dx (a conv above a batchnorm is never the first
     * layer, so dx is there); dy is the gradient at the output of the
     * batchnorm above, whose backward is applied here using y. */
    assert(!l->in_bnf || dx);
    bn_fusion *f = l->out_bnf;
    if (f && f->pool_g) {
        /* A stem (graph.c plan_stem_pool): g at the batch norm's output is
         * the max pool's gradient at its taps; the pool left dy unwritten. */
        const float *pg = f->pool_g;
        const unsigned char *pi = f->pool_idx;
        f->pool_g = NULL, f->pool_idx = NULL;
        assert(!dx && !l->in_bnf);
        if (dpt_conv2d_backward_pooled(&c->d, x, l->p, pg, pi, &f->a, y, l->g,
                                       c->bias ? l->g + nw : NULL, net->work) == 0)
            return DPT_OK;
        /* Another algorithm: the pool's dx written here after all (dy is
         * the network's gradient buffer for it). */
        dpt_pool2d_desc pd = {.n = n, .c = l->out[0], .h = l->out[1], .w = l->out[2], .kh = 2,
                              .kw = 2, .sh = 2, .sw = 2};
        dpt_pool2d_desc_init(&pd);
        dpt_maxpool2d_backward_idx(&pd, pi, pg, (float *)dy);
    }
    dpt_conv2d_backward_ex(&c->d, x, l->in_bnf ? &l->in_bnf->a : NULL, l->p, dy,
                           l->out_bnf ? &l->out_bnf->a : NULL, y, dx, l->g,
                           c->bias ? l->g + nw : NULL, net->work,
                           l->in_bnf ? l->in_bnf->xg : NULL);
    return DPT_OK;
}

/* The algorithm for this shape at the network's largest batch, timed or
 * read from the plan cache (ops/conv_plan.c); the fusion planned around
 * the layer is part of the shape, as is whether dx is needed (not for a
 * first layer). */
static dpt_status conv_plan(dpt_net *net, dpt_layer *l)
{
    conv_layer *c = l->priv;
    dpt_conv2d_desc d = c->d;
    d.n = net->max_batch;
    int need_dx = net->plan && net->plan[l->index].dx_buf && net->plan[l->index].dx_buf[0] >= 0;
    int rc = dpt_conv_plan_choose(&d, l->in_bnf != NULL, l->out_bnf != NULL, need_dx, &c->plan);
    if (rc == -2)
        return dpt_fail(DPT_ERR_NOMEM, "conv '%s': out of memory planning its algorithm", l->name);
    if (rc != 0) {
        const char *v = getenv("DPT_CONV_ALGO");
        return dpt_fail(DPT_ERR_ARG, "DPT_CONV_ALGO: '%.40s' is not an algorithm (auto, heuristic, "
                        "measure, gemm, direct, batched, depthwise, dnnl, pointwise, hwc, wino, "
                        "wino4, wino_s2)", v ? v : "");
    }
    c->d.algo = c->plan.algo;
    c->planned_batch = net->max_batch;
    return DPT_OK;
}

static int conv_plan_info(const dpt_layer *l, dpt_layer_plan *out)
{
    const conv_layer *c = l->priv;
    if (!c->planned_batch)
        return 0;
    const dpt_conv_plan *p = &c->plan;
    memset(out, 0, sizeof *out);
    snprintf(out->algo, sizeof out->algo, "%s", dpt_conv_algo_name(p->runs));
    snprintf(out->source, sizeof out->source, "%s", dpt_conv_plan_source_name(p->source));
    snprintf(out->note, sizeof out->note, "%s", p->note);
    out->batch = c->planned_batch;
    out->measure_batch = p->n_meas;
    const dpt_conv2d_desc *d = &c->d;
    snprintf(out->shape, sizeof out->shape, "%dx%dx%d -> %dx%dx%d k%dx%d s%d p%d d%d g%d%s%s",
             d->h, d->w, d->c_in, d->out_h, d->out_w, d->c_out, d->kh, d->kw, d->stride, d->pad,
             d->dilation, d->groups, l->in_bnf ? " bn-in" : "", l->out_bnf ? " bn-out" : "");
    for (int a = 1; a < DPT_CONV_ALGO_COUNT && out->n_candidates < DPT_PLAN_MAX_CANDIDATES; a++) {
        int k = out->n_candidates++;
        snprintf(out->candidates[k].name, sizeof out->candidates[k].name, "%s",
                 dpt_conv_algo_name(a));
        out->candidates[k].ms = p->ms[a];
    }
    return 1;
}

static void conv_describe(const dpt_layer *l, char *buf, size_t cap)
{
    const conv_layer *c = l->priv;
    int k = 0;
    if (c->kh == c->kw)
        k = snprintf(buf, cap, " filter=%d", c->kh);
    else
        k = snprintf(buf, cap, " filter=%dx%d", c->kh, c->kw);
    k += snprintf(buf + k, cap - (size_t)k, " filters=%d", c->filters);
    if (c->stride != 1)
        k += snprintf(buf + k, cap - (size_t)k, " stride=%d", c->stride);
    if (c->pad != 0)
        k += snprintf(buf + k, cap - (size_t)k, " padding=%d", c->pad);
    if (!c->bias)
        k += snprintf(buf + k, cap - (size_t)k, " bias=0");
    if (c->dilation != 1)
        k += snprintf(buf + k, cap - (size_t)k, " dilation=%d", c->dilation);
    if (c->groups != 1)
        snprintf(buf + k, cap - (size_t)k, " groups=%d", c->groups);
}

static void free_priv(dpt_layer *l) { free(l->priv); }

/* For the CUDA entries (layer_gpu.c). */
conv_geom conv_layer_geom(const dpt_layer *l)
{
    const conv_layer *c = l->priv;
    return (conv_geom){c->kh, c->kw, c->stride, c->pad, c->dilation, c->groups, c->bias};
}

const layer_type dpt_layer_conv = {
    .name = "conv", .min_inputs = 1, .max_inputs = 1,
    .create = conv_create, .set = conv_set, .infer = conv_infer,
    .init = conv_init, .work_floats = conv_work, .forward = conv_forward,
    .backward = conv_backward, .describe = conv_describe, .free = free_priv,
    .plan = conv_plan, .plan_info = conv_plan_info,
    .gpu_supports = conv_gpu_supports, .gpu_setup = GPU_ENTRY(conv_gpu_setup),
    .gpu_release = GPU_ENTRY(conv_gpu_release), .gpu_forward = GPU_ENTRY(conv_gpu_forward),
    .gpu_backward = GPU_ENTRY(conv_gpu_backward),
};

/* ---- fully connected over the flattened [C, H, W] input ------------------------ */

typedef struct fc_layer {
    int outputs; /* -1: "classes", filled in at build */
} fc_layer;

static dpt_status fc_create(dpt_layer *l)
{
    l->priv = calloc(1, sizeof(fc_layer));
    return l->priv ? DPT_OK : dpt_fail(DPT_ERR_NOMEM, "out of memory");
}

static dpt_status fc_set(dpt_layer *l, const char *key, const char *value)
{
    fc_layer *f = l->priv;
    if (strcmp(key, "outputs") != 0)
        return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (fc takes outputs)", key);
    /* vocab: a language model's vocabulary size, passed as n_classes. */
    if (strcmp(value, "classes") == 0 || strcmp(value, "vocab") == 0) {
        f->outputs = -1;
        return DPT_OK;
    }
    return parse_int_max(key, value, 1, 1 << 20, &f->outputs);
}

static dpt_status fc_infer(dpt_net *net, dpt_layer *l)
{
    fc_layer *f = l->priv;
    if (f->outputs == 0)
        return dpt_fail(DPT_ERR_FORMAT, "fc '%s' needs outputs=N", l->name);
    int outputs = f->outputs;
    if (outputs < 0 && net->n_classes <= 0)
        return dpt_fail(DPT_ERR_ARG,
                        "fc '%s': outputs=classes (or vocab), but the number of classes is "
                        "not known", l->name);
    if (outputs < 0)
        outputs = net->n_classes;
    int in = l->in[0] * l->in[1] * l->in[2];
    l->out[0] = outputs, l->out[1] = l->out[2] = 1;
    int wshape[2] = {outputs, in};
    dpt_status s = net_declare(net, l, DPT_KIND_LEARN, "Weights", 2, wshape);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_LEARN, "Bias", 1, &outputs);
    return s;
}

static void fc_init(dpt_layer *l, dpt_rng *rng)
{
    int in = l->in[0] * l->in[1] * l->in[2], out = l->out[0];
    glorot_uniform(l->p, (size_t)in * out, in, out, rng);
    memset(l->p + (size_t)in * out, 0, (size_t)out * sizeof(float));
}

/* Scratch for applying a fused batch norm an image at a time, where the
 * kernels cannot (linear.c). */
static size_t fc_work(const dpt_layer *l, int n)
{
    (void)n;
    return (size_t)l->in[0] * l->in[1] * l->in[2];
}

/* Fused with the batchnorm below (net.c), as the conv: x is its input,
 * normalised on the fly, and its backward sums come with dx. */
static dpt_status fc_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                             int n, dpt_mode mode)
{
    const float *x = xs[0];
    (void)mode;
    int in = l->in[0] * l->in[1] * l->in[2], out = l->out[0];
    dpt_linear_forward_ex(x, l->in_bnf ? &l->in_bnf->a : NULL, l->in[1] * l->in[2], l->p,
                          l->p + (size_t)in * out, y, n, in, out, net->work);
    return DPT_OK;
}

static dpt_status fc_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                              const float *y, const float *dy, float *const *dxs, int n)
{
    const float *x = xs[0];
    float *dx = dxs[0];
    (void)y;
    int in = l->in[0] * l->in[1] * l->in[2], out = l->out[0];
    assert(!l->in_bnf || dx);
    dpt_linear_backward_ex(x, l->in_bnf ? &l->in_bnf->a : NULL, l->in[1] * l->in[2], l->p, dy, dx,
                           l->g, l->g + (size_t)in * out, n, in, out, net->work,
                           l->in_bnf ? l->in_bnf->xg : NULL);
    return DPT_OK;
}

static void fc_describe(const dpt_layer *l, char *buf, size_t cap)
{
    snprintf(buf, cap, " outputs=%d", l->out[0]);
}

const layer_type dpt_layer_fc = {
    .name = "fc", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_PER_STEP,
    .create = fc_create, .set = fc_set, .infer = fc_infer, .init = fc_init,
    .work_floats = fc_work, .forward = fc_forward, .backward = fc_backward,
    .describe = fc_describe, .free = free_priv,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(fc_gpu_forward),
    .gpu_backward = GPU_ENTRY(fc_gpu_backward),
};
