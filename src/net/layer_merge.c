/* Layers that merge several inputs: add (elementwise sum of same-shape
 * inputs, residual connections) and concat (along channels). */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdio.h>
#include <string.h>

static dpt_status no_keys(dpt_layer *l, const char *key, const char *value)
{
    (void)value;
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (%s takes no keys; name its inputs with "
                    "from=)", key, l->type->name);
}

/* "'a' 28x28x8, 'b' 14x14x8": every input's name and shape (HxWxC), for the
 * shape errors. */
static void list_inputs(const dpt_net *net, const dpt_layer *l, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->n_in && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s'%s' %dx%dx%d", i ? ", " : "",
                              net->layers[l->inputs[i]].name, l->ins[i][1], l->ins[i][2],
                              l->ins[i][0]);
}

static size_t chw(const int *s) { return (size_t)s[0] * s[1] * s[2]; }

/* ---- add ---------------------------------------------------------------------------- */

static dpt_status add_infer(dpt_net *net, dpt_layer *l)
{
    for (int k = 1; k < l->n_in; k++)
        if (memcmp(l->ins[k], l->ins[0], sizeof l->ins[0]) != 0) {
            char list[1024];
            list_inputs(net, l, list, sizeof list);
            return dpt_fail(DPT_ERR_SHAPE, "add '%s': its inputs must have one shape, and they "
                            "are %s (HxWxC)", l->name, list);
        }
    memcpy(l->out, l->ins[0], sizeof l->out);
    return DPT_OK;
}

/* Input k's batch norm when the add applies it (graph.c add_bn), else NULL;
 * *xg: where its backward sums go. */
static const dpt_bn_apply *in_bn(const dpt_net *net, const dpt_layer *l, int k, double **xg)
{
    const bn_fusion *f = net->layers[l->inputs[k]].bnf;
    if (!f || !f->into_add) {
        *xg = NULL;
        return NULL;
    }
    *xg = f->xg;
    return &f->a;
}

/* y = ((x0 + x1) + x2) + ...: PyTorch's order for a + b + c. */
static dpt_status add_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                              dpt_mode mode)
{
    (void)mode;
    size_t m = (size_t)n * chw(l->out);
    const float *a = x[0], *b = x[1];
    if (l->n_in == 2) {
        double *xg0, *xg1;
        const dpt_bn_apply *a0 = in_bn(net, l, 0, &xg0), *a1 = in_bn(net, l, 1, &xg1);
        if (a0 || a1) {
            /* With the pooling after it (graph.c add_pool): its output too. */
            dpt_bn_add_forward(a, a0, b, a1, n, l->out[0], l->out[1] * l->out[2], l->relu_after,
                               y, l->in_act ? net->acts[l->in_act] : NULL);
            return DPT_OK;
        }
    }
    if (l->relu_after && l->n_in == 2) {
        /* The ReLU above fused in (graph.c): dpt_relu_forward's select on
         * the sum, in the same pass. */
        for (size_t i = 0; i < m; i++) {
            const float s = a[i] + b[i];
            y[i] = s > 0.0f ? s : 0.0f;
        }
        return DPT_OK;
    }
    for (size_t i = 0; i < m; i++)
        y[i] = a[i] + b[i];
    for (int k = 2; k < l->n_in; k++) {
        const float *c = x[k];
        for (size_t i = 0; i < m; i++)
            y[i] += c[i];
    }
    if (l->relu_after)
        dpt_relu_forward(y, y, m);
    return DPT_OK;
}

static dpt_status add_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                               const float *dy, float *const *dx, int n)
{
    size_t m = (size_t)n * chw(l->out);
    if (l->n_in == 2) {
        double *xg0, *xg1;
        const dpt_bn_apply *a0 = in_bn(net, l, 0, &xg0), *a1 = in_bn(net, l, 1, &xg1);
        if (a0 || a1) { /* both gradients wanted (graph.c add_bn) */
            /* With add_pool, dy is the pooling's output gradient. */
            const float *dpool = NULL;
            if (l->in_act)
                dpool = net->buf[net->grp_buf[net->plan[l->in_act].grp]];
            dpt_bn_add_backward(y, dy, n, l->out[0], l->out[1] * l->out[2], l->relu_after, x[0],
                                a0, xg0, x[1], a1, xg1, dx[0], dx[1], dpool);
            return DPT_OK;
        }
    }
    /* With the ReLU above fused in, dy is at its output: masked once by y
     * (the ReLU's output too), as dpt_relu_backward does, then copied. */
    const float *g = dy;
    if (l->relu_after && l->n_in == 2 && dx[0] && dx[1]) {
        /* Both at once: one read of y and dy. */
        float *d0 = dx[0], *d1 = dx[1];
        for (size_t i = 0; i < m; i++) {
            const float v = dy[i], r = y[i] > 0.0f ? v : 0.0f;
            d0[i] = r;
            d1[i] = r;
        }
        return DPT_OK;
    }
    for (int k = 0; k < l->n_in; k++) {
        if (!dx[k])
            continue;
        if (l->relu_after && g == dy) {
            dpt_relu_backward(y, dy, dx[k], m);
            g = dx[k];
        } else {
            memcpy(dx[k], g, m * sizeof *g);
        }
    }
    return DPT_OK;
}

const layer_type dpt_layer_add = {
    .name = "add", .min_inputs = 2, .max_inputs = DPT_MAX_INPUTS,
    .seq_mode = DPT_SEQ_PER_STEP,
    .set = no_keys, .infer = add_infer, .forward = add_forward, .backward = add_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(add_gpu_forward),
    .gpu_backward = GPU_ENTRY(add_gpu_backward),
};

/* ---- concat along channels ---------------------------------------------------------- */

static dpt_status concat_infer(dpt_net *net, dpt_layer *l)
{
    long c = 0;
    for (int k = 0; k < l->n_in; k++) {
        if (l->ins[k][1] != l->ins[0][1] || l->ins[k][2] != l->ins[0][2]) {
            char list[1024];
            list_inputs(net, l, list, sizeof list);
            return dpt_fail(DPT_ERR_SHAPE, "concat '%s': its inputs must have one height and "
                            "width (it joins channels), and they are %s (HxWxC)", l->name, list);
        }
        c += l->ins[k][0];
    }
    if (c > (1L << 30))
        return dpt_fail(DPT_ERR_SHAPE, "concat '%s': %ld channels", l->name, c);
    l->out[0] = (int)c, l->out[1] = l->ins[0][1], l->out[2] = l->ins[0][2];
    return DPT_OK;
}

/* Observation by observation: input k's [C_k, H, W] block goes after the
 * blocks of inputs 0..k-1. */
static dpt_status concat_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                                 int n, dpt_mode mode)
{
    (void)net;
    size_t out = chw(l->out);
    /* Fused with the batchnorm above (graph.c concat_bn): its sums taken
     * from each image just copied, still in cache. */
    double *sums = mode == DPT_MODE_TRAIN ? l->sums_out : NULL;
    const int c = l->out[0], hw = l->out[1] * l->out[2];
    if (sums)
        memset(sums, 0, 2 * (size_t)c * sizeof *sums);
    for (int i = 0; i < n; i++) {
        float *dst = y + (size_t)i * out;
        for (int k = 0; k < l->n_in; k++) {
            size_t m = chw(l->ins[k]);
            memcpy(dst, x[k] + (size_t)i * m, m * sizeof *dst);
            dst += m;
        }
        if (sums)
            dpt_bn_sums_image(y + (size_t)i * out, y, c, hw, sums, sums + c);
    }
    if (sums)
        dpt_bn_sums_finish(y, n, c, hw, sums, sums + c);
    return DPT_OK;
}

static dpt_status concat_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                  const float *y, const float *dy, float *const *dx, int n)
{
    (void)net, (void)x, (void)y;
    size_t out = chw(l->out);
    for (int i = 0; i < n; i++) {
        const float *src = dy + (size_t)i * out;
        for (int k = 0; k < l->n_in; k++) {
            size_t m = chw(l->ins[k]);
            if (dx[k])
                memcpy(dx[k] + (size_t)i * m, src, m * sizeof *src);
            src += m;
        }
    }
    return DPT_OK;
}

const layer_type dpt_layer_concat = {
    .name = "concat", .min_inputs = 1, .max_inputs = DPT_MAX_INPUTS,
    .seq_mode = DPT_SEQ_PER_STEP,
    .set = no_keys, .infer = concat_infer, .forward = concat_forward,
    .backward = concat_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(concat_gpu_forward),
    .gpu_backward = GPU_ENTRY(concat_gpu_backward),
};
