/* Pooling layers: maxpool, avgpool (windows of size x size every stride
 * pixels, padding on every side; PyTorch's MaxPool2d / AvgPool2d with
 * count_include_pad=True, MATLAB's maxPooling2dLayer / averagePooling2dLayer)
 * and globalavgpool (the mean of each channel: output [C, 1, 1]). */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { POOL_MAX, POOL_AVG };

typedef struct pool_layer {
    int kind;
    int kh, kw;  /* 0: not given (size= is required) */
    int sh, sw;  /* 0: not given, the window size (PyTorch's default) */
    int ph, pw;
    dpt_pool2d_desc d; /* n filled per call */
    /* Max pooling whose shape keeps each window's tap
     * (dpt_maxpool2d_has_idx): [max_batch, c, out_h, out_w] bytes, owned,
     * written by a TRAIN forward of idx_n observations (0: none valid), so
     * the backward reads neither x nor searches again. */
    unsigned char *idx;
    size_t idx_cap;
    int idx_n;
    /* Fused with the batch norm below (in_bnf) and keeping idx: the input
     * at each window's maximum, [max_batch, c, out_h, out_w] floats, owned,
     * valid for xv_n observations (0: none), so the backward takes the
     * batch norm's sums from it and dy instead of reading x and its own dx
     * again (a stem's 16 MB per 128 images). */
    float *xv;
    size_t xv_cap;
    int xv_n;
} pool_layer;

static dpt_status pool_create_kind(dpt_layer *l, int kind)
{
    pool_layer *p = calloc(1, sizeof *p);
    if (!p)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    p->kind = kind;
    l->priv = p;
    return DPT_OK;
}

static dpt_status maxpool_create(dpt_layer *l) { return pool_create_kind(l, POOL_MAX); }
static dpt_status avgpool_create(dpt_layer *l) { return pool_create_kind(l, POOL_AVG); }

/* "A" (both directions) or "AxB" (height x width), each an integer in
 * [min, max]. */
static dpt_status parse_pair(const char *key, const char *value, int min, int max, int *a, int *b)
{
    const char *x = strchr(value, 'x');
    if (!x) {
        dpt_status s = parse_int_max(key, value, min, max, a);
        if (s == DPT_OK)
            *b = *a;
        return s;
    }
    char first[32];
    size_t len = (size_t)(x - value);
    if (len == 0 || len >= sizeof first)
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%.40s' for %s (N or HxW, each an integer in "
                        "[%d, %d], expected)", value, key, min, max);
    memcpy(first, value, len);
    first[len] = '\0';
    int u, v;
    if (parse_int_max(key, first, min, max, &u) != DPT_OK ||
        parse_int_max(key, x + 1, min, max, &v) != DPT_OK)
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%.40s' for %s (N or HxW, each an integer in "
                        "[%d, %d], expected)", value, key, min, max);
    *a = u, *b = v;
    return DPT_OK;
}

static dpt_status pool_set(dpt_layer *l, const char *key, const char *value)
{
    pool_layer *p = l->priv;
    /* Limits as conv's: far above any real network, small enough that the
     * shapes stay within int. */
    if (strcmp(key, "size") == 0)
        return parse_pair(key, value, 1, 4096, &p->kh, &p->kw);
    if (strcmp(key, "stride") == 0)
        return parse_pair(key, value, 1, 4096, &p->sh, &p->sw);
    if (strcmp(key, "padding") == 0)
        return parse_pair(key, value, 0, 4096, &p->ph, &p->pw);
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (%s takes size, stride, padding)", key,
                    l->type->name);
}

static dpt_status pool_infer(dpt_net *net, dpt_layer *l)
{
    (void)net;
    pool_layer *p = l->priv;
    if (p->kh == 0)
        return dpt_fail(DPT_ERR_FORMAT, "%s '%s' needs size=K (or size=HxW)", l->type->name,
                        l->name);
    int sh = p->sh ? p->sh : p->kh, sw = p->sw ? p->sw : p->kw;
    if (p->ph >= p->kh || p->pw >= p->kw)
        return dpt_fail(DPT_ERR_SHAPE,
                        "%s '%s': padding %dx%d must be smaller than the window %dx%d (a window "
                        "would hold padding only)", l->type->name, l->name, p->ph, p->pw, p->kh,
                        p->kw);
    p->d = (dpt_pool2d_desc){.n = 1, .c = l->in[0], .h = l->in[1], .w = l->in[2], .kh = p->kh,
                             .kw = p->kw, .sh = sh, .sw = sw, .ph = p->ph, .pw = p->pw};
    if (dpt_pool2d_desc_init(&p->d) != 0)
        return dpt_fail(DPT_ERR_SHAPE,
                        "%s '%s': window %dx%d does not fit the input %dx%d with padding %dx%d",
                        l->type->name, l->name, p->kh, p->kw, l->in[1], l->in[2], p->ph, p->pw);
    l->out[0] = l->in[0], l->out[1] = p->d.out_h, l->out[2] = p->d.out_w;
    return DPT_OK;
}

static int keeps_idx(const pool_layer *p)
{
    return p->kind == POOL_MAX && dpt_maxpool2d_has_idx(&p->d);
}

static size_t idx_bytes(const pool_layer *p, int n)
{
    return (size_t)n * p->d.c * p->d.out_h * p->d.out_w;
}

/* Whether the fused forward also keeps xv (see pool_layer). */
static int keeps_xv(const dpt_layer *l)
{
    return l->in_bnf && keeps_idx(l->priv);
}

static size_t pool_keep(const dpt_net *net, const dpt_layer *l)
{
    const pool_layer *p = l->priv;
    size_t f = keeps_idx(p) ? (idx_bytes(p, net->max_batch) + DPT_POOL_IDX_SLACK + 3) / 4 : 0;
    return f + (keeps_xv(l) ? idx_bytes(p, net->max_batch) : 0);
}

static dpt_status pool_setup(dpt_net *net, dpt_layer *l)
{
    pool_layer *p = l->priv;
    const size_t need = keeps_idx(p) ? idx_bytes(p, net->max_batch) + DPT_POOL_IDX_SLACK : 0;
    p->idx_n = 0;
    p->xv_n = 0;
    /* Planned per setup: a replan may fuse or unfuse the batch norm. */
    const size_t need_xv = keeps_xv(l) ? idx_bytes(p, net->max_batch) : 0;
    if (need_xv > p->xv_cap) {
        free(p->xv);
        p->xv_cap = 0;
        if (!(p->xv = malloc(need_xv * sizeof *p->xv)))
            return dpt_fail(DPT_ERR_NOMEM, "%s '%s': out of memory for %zu window maxima",
                            l->type->name, l->name, need_xv);
        p->xv_cap = need_xv;
    }
    if (need <= p->idx_cap)
        return DPT_OK;
    free(p->idx);
    p->idx_cap = 0;
    if (!(p->idx = malloc(need)))
        return dpt_fail(DPT_ERR_NOMEM, "%s '%s': out of memory for %zu bytes of window taps",
                        l->type->name, l->name, need);
    p->idx_cap = need;
    return DPT_OK;
}

/* Fused with the batchnorm (and ReLU) below (graph.c): the pooling's input
 * is the batch norm's output, formed here an image at a time in the
 * scratch (cache-sized) instead of written out and read back. */
static size_t pool_work(const dpt_layer *l, int n)
{
    (void)n;
    return l->in_bnf ? (size_t)l->in[0] * l->in[1] * l->in[2] : 0;
}

/* One pass of n observations from input x (already the pooling's input). */
static void pool_fwd(pool_layer *p, const float *x, float *y, int n, unsigned char *idx)
{
    p->d.n = n;
    if (p->kind == POOL_AVG)
        dpt_avgpool2d_forward(&p->d, x, y);
    else if (idx)
        dpt_maxpool2d_forward_idx(&p->d, x, y, idx);
    else
        dpt_maxpool2d_forward(&p->d, x, y);
}

static void pool_bwd(pool_layer *p, const float *x, const unsigned char *idx, const float *dy,
                     float *dx, int n)
{
    p->d.n = n;
    if (p->kind == POOL_AVG)
        dpt_avgpool2d_backward(&p->d, dy, dx);
    else if (idx)
        dpt_maxpool2d_backward_idx(&p->d, idx, dy, dx);
    else
        dpt_maxpool2d_backward(&p->d, x, dy, dx);
}

static dpt_status pool_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                               dpt_mode mode)
{
    pool_layer *p = l->priv;
    unsigned char *idx = NULL;
    p->idx_n = 0;
    p->xv_n = 0;
    if (mode == DPT_MODE_TRAIN && keeps_idx(p) &&
        idx_bytes(p, n) + DPT_POOL_IDX_SLACK <= p->idx_cap) {
        idx = p->idx;
        p->idx_n = n;
    }
    if (!l->in_bnf) {
        pool_fwd(p, x[0], y, n, idx);
        return DPT_OK;
    }
    if (keeps_idx(p)) { /* one pass: normalised as the taps are loaded */
        p->d.n = n;
        float *xv = NULL;
        if (idx && keeps_xv(l) && idx_bytes(p, n) <= p->xv_cap) {
            xv = p->xv;
            p->xv_n = n;
        }
        dpt_maxpool2d_forward_bnx(&p->d, x[0], &l->in_bnf->a, y, idx, xv);
        return DPT_OK;
    }
    const size_t in = (size_t)l->in[0] * l->in[1] * l->in[2];
    const size_t out = (size_t)l->out[0] * l->out[1] * l->out[2];
    for (int i = 0; i < n; i++) {
        dpt_bn_apply_forward(x[0] + i * in, l->in[0], l->in[1] * l->in[2], &l->in_bnf->a,
                             net->work);
        pool_fwd(p, net->work, y + i * out, 1, idx ? idx + i * out : NULL);
    }
    return DPT_OK;
}

static dpt_status pool_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                                const float *dy, float *const *dx, int n)
{
    (void)y;
    pool_layer *p = l->priv;
    if (!dx[0])
        return DPT_OK;
    const unsigned char *idx = p->idx_n == n ? p->idx : NULL;
    if (!l->in_bnf) {
        pool_bwd(p, x[0], idx, dy, dx[0], n);
        return DPT_OK;
    }
    /* Fused: dx is the gradient at the batch norm's (ReLU's) output; its
     * backward sums are added up here while each image's dx is in cache
     * (the batchnorm then reads neither dx nor x: graph.c). */
    const int c = l->in[0], hw = l->in[1] * l->in[2];
    const size_t in = (size_t)c * hw, out = (size_t)l->out[0] * l->out[1] * l->out[2];
    const dpt_bn_apply *a = &l->in_bnf->a;
    double *xg = l->in_bnf->xg;
    memset(xg, 0, 2 * (size_t)c * sizeof *xg);
    l->in_bnf->pool_g = NULL;
    l->in_bnf->pool_idx = NULL;
    if (idx && p->xv_n == n) { /* one pass over dy, idx and xv */
        p->d.n = n;
        /* graph.c's plan_stem_pool: the conv below forms its gradient from
         * dy and idx; dx stays unwritten. */
        const int to_conv = l->in_bnf->pool_dy;
        dpt_maxpool2d_backward_bn(&p->d, idx, p->xv, a, dy, to_conv ? NULL : dx[0], xg, xg + c);
        if (to_conv) {
            l->in_bnf->pool_g = dy;
            l->in_bnf->pool_idx = idx;
        }
        return DPT_OK;
    }
    for (int i = 0; i < n; i++) {
        const float *xi = x[0] + i * in;
        float *dxi = dx[0] + i * in;
        if (p->kind == POOL_MAX && !idx)
            dpt_bn_apply_forward(xi, c, hw, a, net->work);
        pool_bwd(p, net->work, idx ? idx + i * out : NULL, dy + i * out, dxi, 1);
        dpt_bn_grad_sums(xi, dxi, 1, c, hw, a, xg, xg + c);
    }
    return DPT_OK;
}

/* " key=A" or " key=AxB"; returns the characters written. */
static int put_pair(char *buf, size_t cap, const char *key, int a, int b)
{
    return a == b ? snprintf(buf, cap, " %s=%d", key, a) : snprintf(buf, cap, " %s=%dx%d", key, a, b);
}

/* Canonical keys: size always, stride when it is not the window size,
 * padding when not 0. */
static void pool_describe(const dpt_layer *l, char *buf, size_t cap)
{
    const pool_layer *p = l->priv;
    int sh = p->sh ? p->sh : p->kh, sw = p->sw ? p->sw : p->kw;
    size_t k = (size_t)put_pair(buf, cap, "size", p->kh, p->kw);
    if ((sh != p->kh || sw != p->kw) && k < cap)
        k += (size_t)put_pair(buf + k, cap - k, "stride", sh, sw);
    if ((p->ph || p->pw) && k < cap)
        put_pair(buf + k, cap - k, "padding", p->ph, p->pw);
}

static void pool_free(dpt_layer *l)
{
    pool_layer *p = l->priv;
    if (p) {
        free(p->idx);
        free(p->xv);
    }
    free(p);
}

/* For the CUDA entries (layer_gpu.c): the window geometry; 1 for max. */
int pool_layer_desc(const dpt_layer *l, dpt_pool2d_desc *d)
{
    const pool_layer *p = l->priv;
    *d = p->d;
    return p->kind == POOL_MAX;
}

const layer_type dpt_layer_maxpool = {
    .name = "maxpool", .min_inputs = 1, .max_inputs = 1,
    .create = maxpool_create, .set = pool_set, .infer = pool_infer,
    .work_floats = pool_work, .forward = pool_forward, .backward = pool_backward,
    .describe = pool_describe, .keep_floats = pool_keep, .setup = pool_setup,
    .free = pool_free,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(pool_gpu_forward),
    .gpu_backward = GPU_ENTRY(pool_gpu_backward),
};

const layer_type dpt_layer_avgpool = {
    .name = "avgpool", .min_inputs = 1, .max_inputs = 1,
    .create = avgpool_create, .set = pool_set, .infer = pool_infer,
    .work_floats = pool_work, .forward = pool_forward, .backward = pool_backward,
    .describe = pool_describe, .keep_floats = pool_keep, .setup = pool_setup,
    .free = pool_free,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(pool_gpu_forward),
    .gpu_backward = GPU_ENTRY(pool_gpu_backward),
};

/* ---- globalavgpool: [C, H, W] -> [C, 1, 1] ---------------------------------- */

static dpt_status gap_set(dpt_layer *l, const char *key, const char *value)
{
    (void)value;
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (%s takes no keys)", key, l->type->name);
}

static dpt_status gap_infer(dpt_net *net, dpt_layer *l)
{
    (void)net;
    l->out[0] = l->in[0], l->out[1] = l->out[2] = 1;
    return DPT_OK;
}

static dpt_status gap_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                              dpt_mode mode)
{
    (void)net, (void)mode;
    dpt_global_avgpool_forward(x[0], y, n, l->in[0], l->in[1] * l->in[2]);
    return DPT_OK;
}

static dpt_status gap_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                               const float *dy, float *const *dx, int n)
{
    (void)net, (void)x, (void)y;
    if (dx[0])
        dpt_global_avgpool_backward(dy, dx[0], n, l->in[0], l->in[1] * l->in[2]);
    return DPT_OK;
}

const layer_type dpt_layer_globalavgpool = {
    .name = "globalavgpool", .min_inputs = 1, .max_inputs = 1,
    .set = gap_set, .infer = gap_infer, .forward = gap_forward, .backward = gap_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(gap_gpu_forward),
    .gpu_backward = GPU_ENTRY(gap_gpu_backward),
};
