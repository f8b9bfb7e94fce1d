/* 2-D convolution, NCHW float32: the algorithm table and the reference
 * algorithm (GEMM).
 *
 * dpt_conv2d_forward_ex / dpt_conv2d_backward_ex run the algorithm d->algo
 * names (conv_algo.h), through the table at the end of this file: the
 * measured choice of the network planner (conv_plan.c), or for AUTO the
 * heuristic of dpt_conv_algo_heuristic (the direct kernels where they
 * apply, the depthwise ones for depthwise layers, else GEMM). An algorithm that cannot run a shape falls back to
 * GEMM, which runs every shape. Algorithms that do not apply a fused batch
 * norm themselves (fused = 0) get it applied here, into scratch.
 *
 * GEMM: the input patches of one image are unrolled into a matrix
 *   col [K, P],  K = c_in*kh*kw (one row per filter tap), P = out_h*out_w,
 * so that with the weights viewed as W [c_out, K]:
 *   forward   y  [c_out, P] = W · col (+ b)
 *   backward  dW [c_out, K] = Σ_images dy · colᵀ
 *             dcol [K, P]   = Wᵀ · dy, then col2im scatters dcol into dx.
 * One [K, P] scratch buffer serves both backward products because dW is
 * finished with col before dcol overwrites it. With a batch norm applied on
 * the fly (dpt_bn_apply), the GEMM path first writes the image's
 * transformed input or gradient into scratch after col (the direct path does
 * it while padding).
 *
 * Dilation and groups: a tap (ki, kj) reads input pixel
 * (oy*stride - pad + ki*dilation, ...), and with G groups each group is its
 * own convolution of c_in/G channels into c_out/G: col holds one group's
 * rows (K = c_in/G*kh*kw) and the products run per group on the group's
 * slices of w, y, dy and dx. With dilation 1 and one group this is exactly
 * the ungrouped computation above. */
#include "ops/conv_algo.h"
#include "ops/conv_batched.h"
#include "ops/conv_depthwise.h"
#include "ops/conv_direct.h"
#include "ops/conv_dnnl.h"
#include "ops/conv_hwc.h"
#include "ops/conv_wino.h"
#include "ops/conv_wino_s2.h"
#include "ops/conv_pointwise.h"
#include "ops/ops.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

/* Unset (0) dilation and groups are 1. */
static int dil_of(const dpt_conv2d_desc *d) { return d->dilation > 1 ? d->dilation : 1; }
static int groups_of(const dpt_conv2d_desc *d) { return d->groups > 1 ? d->groups : 1; }

int dpt_conv2d_desc_init(dpt_conv2d_desc *d)
{
    if (d->n <= 0 || d->c_in <= 0 || d->h <= 0 || d->w <= 0 || d->c_out <= 0 || d->kh <= 0 ||
        d->kw <= 0 || d->stride <= 0 || d->pad < 0 || d->dilation < 0 || d->groups < 0)
        return -1;
    if (d->dilation == 0)
        d->dilation = 1;
    if (d->groups == 0)
        d->groups = 1;
    if (d->c_in % d->groups != 0 || d->c_out % d->groups != 0)
        return -1;
    /* Extent of the dilated filter, in 64 bits (sizes up to INT_MAX). */
    long long ph = (long long)d->h + 2LL * d->pad, pw = (long long)d->w + 2LL * d->pad;
    long long eh = (long long)d->dilation * (d->kh - 1) + 1;
    long long ew = (long long)d->dilation * (d->kw - 1) + 1;
    if (eh > ph || ew > pw)
        return -1;
    d->out_h = (int)((ph - eh) / d->stride + 1);
    d->out_w = (int)((pw - ew) / d->stride + 1);
    return 0;
}

/* A 1x1 filter with stride 1 and no padding reads each pixel exactly once in
 * order: the image itself is already the col matrix, so skip the copy. */
static int lowering_is_identity(const dpt_conv2d_desc *d)
{
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

/* The most either path needs, so the kernel set may change between calls;
 * the GEMM path's col buffer is followed by one image of transformed input
 * and one of transformed output gradient. */
static size_t col_floats(const dpt_conv2d_desc *d)
{
    return lowering_is_identity(d) ? 0
                                   : (size_t)(d->c_in / groups_of(d)) * d->kh * d->kw *
                                         (size_t)d->out_h * d->out_w;
}

/* Offset of the bias-gradient sums (c_out doubles) after col and the two
 * transformed images, rounded to an even float count for alignment. */
static size_t bsum_offset(const dpt_conv2d_desc *d)
{
    size_t o = col_floats(d) + (size_t)d->c_in * d->h * d->w +
               (size_t)d->c_out * d->out_h * d->out_w;
    return (o + 1) & ~(size_t)1;
}

static size_t gemm_work_floats(const dpt_conv2d_desc *d)
{
    return bsum_offset(d) + 2 * (size_t)d->c_out;
}

/* Output columns ox whose input column ox*stride - pad + kj lies inside
 * [0, w): the half-open range [*lo, *hi). Everything outside reads padding. */
static void valid_range(int kj, int stride, int pad, int w, int out_w, int *lo, int *hi)
{
    int a = pad - kj; /* need ox*stride >= a */
    int first = a <= 0 ? 0 : (a + stride - 1) / stride;
    int b = w + pad - kj; /* need ox*stride < b */
    int last = b <= 0 ? 0 : (b + stride - 1) / stride;
    if (first > out_w)
        first = out_w;
    if (last > out_w)
        last = out_w;
    if (last < first)
        last = first;
    *lo = first;
    *hi = last;
}

/* col [K, P] from the c channels of one image at x [c, h, w] (one group's). */
static void im2col(const dpt_conv2d_desc *d, const float *x, int c, float *col)
{
    const int oh = d->out_h, ow = d->out_w, s = d->stride, p = d->pad, dl = dil_of(d);
    for (int ci = 0; ci < c; ci++) {
        const float *xc = x + (size_t)ci * d->h * d->w;
        for (int ki = 0; ki < d->kh; ki++) {
            for (int kj = 0; kj < d->kw; kj++) {
                int lo, hi;
                valid_range(kj * dl, s, p, d->w, ow, &lo, &hi);
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * s - p + ki * dl;
                    if (iy < 0 || iy >= d->h) {
                        memset(col, 0, (size_t)ow * sizeof *col);
                    } else {
                        const float *xr = xc + (size_t)iy * d->w;
                        const int off = kj * dl - p;
                        for (int ox = 0; ox < lo; ox++)
                            col[ox] = 0.0f;
                        for (int ox = lo; ox < hi; ox++)
                            col[ox] = xr[ox * s + off];
                        for (int ox = hi; ox < ow; ox++)
                            col[ox] = 0.0f;
                    }
                    col += ow;
                }
            }
        }
    }
}

/* dx [c, h, w] (one group's channels) = scatter-add of dcol [K, P]; taps
 * that fell on padding are dropped. Overlapping windows (stride < kernel)
 * add up, hence the zero fill first. */
static void col2im(const dpt_conv2d_desc *d, const float *col, int c, float *dx)
{
    const int oh = d->out_h, ow = d->out_w, s = d->stride, p = d->pad, dl = dil_of(d);
    memset(dx, 0, (size_t)c * d->h * d->w * sizeof *dx);
    for (int ci = 0; ci < c; ci++) {
        float *dxc = dx + (size_t)ci * d->h * d->w;
        for (int ki = 0; ki < d->kh; ki++) {
            for (int kj = 0; kj < d->kw; kj++) {
                int lo, hi;
                valid_range(kj * dl, s, p, d->w, ow, &lo, &hi);
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * s - p + ki * dl;
                    if (iy >= 0 && iy < d->h) {
                        float *dr = dxc + (size_t)iy * d->w;
                        const int off = kj * dl - p;
                        for (int ox = lo; ox < hi; ox++)
                            dr[ox * s + off] += col[ox];
                    }
                    col += ow;
                }
            }
        }
    }
}

static void apply_backward(const float *g, const float *y, int c, int hw, const dpt_bn_apply *a,
                           float *out)
{
    for (int ch = 0; ch < c; ch++) {
        const float m = a->mean[ch], sc = a->scale[ch], sh = a->shift[ch];
        const float kf = a->kf[ch], ka = a->ka[ch], kb = a->kb[ch];
        for (int j = 0; j < hw; j++) {
            const size_t k = (size_t)ch * hw + j;
            float xc = y[k] - m, gv = g[k];
            if (a->relu && !(xc * sc + sh > 0.0f))
                gv = 0.0f;
            out[k] = kf * gv - ka - xc * kb;
        }
    }
}

static void gemm_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                         const float *w, const float *b, float *y, float *work, double *sum,
                         double *sumsq)
{
    const int G = groups_of(d), cg_in = d->c_in / G, cg_out = d->c_out / G;
    const int K = cg_in * d->kh * d->kw, P = d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * d->h * d->w, y_img = (size_t)d->c_out * P;
    const size_t x_grp = (size_t)cg_in * d->h * d->w, w_grp = (size_t)cg_out * K;
    const int identity = lowering_is_identity(d);
    assert(work || (identity && !xa));
    float *xt = work + col_floats(d); /* one transformed image */

    for (int i = 0; i < d->n; i++) {
        const float *xi = x + i * x_img;
        float *yi = y + i * y_img;
        if (xa) {
            dpt_bn_apply_forward(xi, d->c_in, d->h * d->w, xa, xt);
            xi = xt;
        }
        /* Seed y with the bias so the GEMM adds onto it (beta = 1). */
        if (b) {
            for (int co = 0; co < d->c_out; co++)
                for (int q = 0; q < P; q++)
                    yi[(size_t)co * P + q] = b[co];
        }
        for (int g = 0; g < G; g++) {
            const float *col = xi + g * x_grp;
            if (!identity) {
                im2col(d, col, cg_in, work);
                col = work;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cg_out, P, K, 1.0f,
                        w + g * w_grp, K, col, P, b ? 1.0f : 0.0f, yi + g * (size_t)cg_out * P,
                        P);
        }
    }
    if (sum)
        dpt_bn_sums(y, d->n, d->c_out, P, sum, sumsq);
}

static void gemm_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                          const float *w, const float *dy, const dpt_bn_apply *dya,
                          const float *y, float *dx, float *dw, float *db, float *work,
                          double *xg)
{
    const int G = groups_of(d), cg_in = d->c_in / G, cg_out = d->c_out / G;
    const int K = cg_in * d->kh * d->kw, P = d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * d->h * d->w, y_img = (size_t)d->c_out * P;
    const size_t x_grp = (size_t)cg_in * d->h * d->w, w_grp = (size_t)cg_out * K;
    const size_t y_grp = (size_t)cg_out * P;
    const int identity = lowering_is_identity(d);
    assert(work || (identity && !xa && !dya));
    assert(!xg || (xa && dx));
    float *xt = work + col_floats(d), *dyt = xt + x_img; /* one transformed image each */
    double *bsum = (double *)(void *)(work + bsum_offset(d));
    for (int co = 0; db && co < d->c_out; co++)
        bsum[co] = 0.0;

    for (int i = 0; i < d->n; i++) {
        const float *xi = x + i * x_img;
        const float *dyi = dy + i * y_img;
        if (xa) {
            dpt_bn_apply_forward(xi, d->c_in, d->h * d->w, xa, xt);
            xi = xt;
        }
        if (dya) {
            apply_backward(dyi, y + i * y_img, d->c_out, P, dya, dyt);
            dyi = dyt;
        }
        /* Bias gradient: Σ over n*P values in float64, so large batches do
         * not lose the small terms. */
        for (int co = 0; db && co < d->c_out; co++) {
            const float *r = dyi + (size_t)co * P;
            for (int q = 0; q < P; q++)
                bsum[co] += r[q];
        }

        for (int g = 0; g < G; g++) {
            const float *col = xi + g * x_grp, *dyg = dyi + g * y_grp;
            if (!identity) {
                im2col(d, col, cg_in, work);
                col = work;
            }
            /* dW is overwritten by the first image, accumulated by the rest. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cg_out, K, P, 1.0f, dyg, P, col,
                        P, i == 0 ? 0.0f : 1.0f, dw + g * w_grp, K);

            if (dx) {
                float *dxg = dx + i * x_img + g * x_grp;
                /* Identity lowering: dcol is dx itself, no scatter needed. */
                float *dcol = identity ? dxg : work;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, cg_out, 1.0f,
                            w + g * w_grp, K, dyg, P, 0.0f, dcol, P);
                if (!identity)
                    col2im(d, dcol, cg_in, dxg);
            }
        }
    }
    for (int co = 0; db && co < d->c_out; co++)
        db[co] = (float)bsum[co];
    if (xg) { /* no kernel to fold them into here: one pass over dx */
        for (int ci = 0; ci < 2 * d->c_in; ci++)
            xg[ci] = 0.0;
        dpt_bn_grad_sums(x, dx, d->n, d->c_in, d->h * d->w, xa, xg, xg + d->c_in);
    }
}

static int gemm_supports(const dpt_conv2d_desc *d)
{
    (void)d;
    return 1;
}

/* ---- direct (conv_direct.c) ------------------------------------------------------ */

static int direct_supports(const dpt_conv2d_desc *d) { return dpt_conv_direct_supports(d) != NULL; }

static void direct_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq)
{
    dpt_conv_direct_forward(dpt_conv_direct_supports(d), d, x, xa, w, b, y, work, sum, sumsq);
}

static void direct_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg)
{
    dpt_conv_direct_backward(dpt_conv_direct_supports(d), d, x, xa, w, dy, dya, y, dx, dw, db, work,
                             xg);
}

/* ---- the table ------------------------------------------------------------------- *
 * One line per algorithm: name, fused, supports, work_floats, forward,
 * backward (conv_algo.h). An algorithm built only with some library sits
 * under that library's #ifdef. */
static const conv_algo table[DPT_CONV_ALGO_COUNT] = {
    [DPT_CONV_ALGO_GEMM] = {"gemm", 1, gemm_supports, gemm_work_floats, gemm_forward,
                            gemm_backward},
    [DPT_CONV_ALGO_DIRECT] = {"direct", 1, direct_supports, dpt_conv_direct_work_floats,
                              direct_forward, direct_backward},
    [DPT_CONV_ALGO_DEPTHWISE] = {"depthwise", 1, dpt_conv_depthwise_supports,
                                 dpt_conv_depthwise_work_floats, dpt_conv_depthwise_forward,
                                 dpt_conv_depthwise_backward},
    [DPT_CONV_ALGO_BATCHED] = {"batched", 1, dpt_conv_batched_supports,
                               dpt_conv_batched_work_floats, dpt_conv_batched_forward,
                               dpt_conv_batched_backward},
    [DPT_CONV_ALGO_POINTWISE] = {"pointwise", 1, dpt_conv_pointwise_supports,
                                 dpt_conv_pointwise_work_floats, dpt_conv_pointwise_forward,
                                 dpt_conv_pointwise_backward},
    [DPT_CONV_ALGO_HWC] = {"hwc", 1, dpt_conv_hwc_supports, dpt_conv_hwc_work_floats,
                           dpt_conv_hwc_forward, dpt_conv_hwc_backward},
    [DPT_CONV_ALGO_WINO] = {"wino", 1, dpt_conv_wino_supports, dpt_conv_wino_work_floats,
                            dpt_conv_wino_forward, dpt_conv_wino_backward},
    [DPT_CONV_ALGO_WINO4] = {"wino4", 1, dpt_conv_wino4_supports, dpt_conv_wino4_work_floats,
                             dpt_conv_wino4_forward, dpt_conv_wino4_backward},
    [DPT_CONV_ALGO_WINO_S2] = {"wino_s2", 1, dpt_conv_wino_s2_supports,
                               dpt_conv_wino_s2_work_floats, dpt_conv_wino_s2_forward,
                               dpt_conv_wino_s2_backward},
#ifdef DPT_HAVE_DNNL
    [DPT_CONV_ALGO_DNNL] = {"dnnl", 0, dpt_conv_dnnl_supports, dpt_conv_dnnl_work_floats,
                            dpt_conv_dnnl_forward, dpt_conv_dnnl_backward},
#endif
};

static const char *const algo_names[DPT_CONV_ALGO_COUNT] = {
    "auto", "gemm", "direct", "batched", "depthwise", "dnnl", "pointwise", "hwc", "wino",
    "wino4", "wino_s2",
};

const char *dpt_conv_algo_name(int algo)
{
    return algo >= 0 && algo < DPT_CONV_ALGO_COUNT ? algo_names[algo] : "?";
}

int dpt_conv_algo_by_name(const char *name)
{
    for (int a = 0; name && a < DPT_CONV_ALGO_COUNT; a++)
        if (strcmp(name, algo_names[a]) == 0)
            return a;
    return -1;
}

const conv_algo *dpt_conv_algo_get(int algo)
{
    if (algo <= DPT_CONV_ALGO_AUTO || algo >= DPT_CONV_ALGO_COUNT || !table[algo].name)
        return NULL;
    return &table[algo];
}

int dpt_conv_algo_supports(int algo, const dpt_conv2d_desc *d)
{
    const conv_algo *a = dpt_conv_algo_get(algo);
    return a && a->supports(d);
}

/* Without a measured plan: the direct kernels wherever
 * dpt_conv_direct_pick takes the shape (a vector kernel set; any stride,
 * dilation, groups of 4+ channels), else GEMM. */
int dpt_conv_algo_heuristic(const dpt_conv2d_desc *d)
{
    if (dpt_conv_direct_pick(d))
        return DPT_CONV_ALGO_DIRECT;
    /* Depthwise layers: the per-channel kernels beat im2col by 3-7x on
     * every shape measured (bench/dwpool_bench.sh); the generic set stays
     * the reference path. */
    if (strcmp(dpt_ops_kernels(), "generic") != 0 && dpt_conv_depthwise_supports(d))
        return DPT_CONV_ALGO_DEPTHWISE;
    return DPT_CONV_ALGO_GEMM;
}

int dpt_conv_algo_resolve(const dpt_conv2d_desc *d)
{
    if (d->algo == DPT_CONV_ALGO_AUTO)
        return dpt_conv_algo_heuristic(d);
    if (dpt_conv_algo_supports(d->algo, d))
        return d->algo;
    return DPT_CONV_ALGO_GEMM;
}

/* ---- dispatch -------------------------------------------------------------------- */

/* Start of the whole-batch copies an unfused algorithm gets after its own
 * scratch, on a 64-byte boundary: transformed input [n, c_in, h, w], then
 * transformed output gradient [n, c_out, out_h, out_w]. */
static size_t unfused_offset(const conv_algo *a, const dpt_conv2d_desc *d)
{
    return (a->work_floats(d) + 15) & ~(size_t)15;
}

size_t dpt_conv_algo_work(const conv_algo *a, const dpt_conv2d_desc *d)
{
    if (a->fused)
        return a->work_floats(d);
    return unfused_offset(a, d) + (size_t)d->n * d->c_in * d->h * d->w +
           (size_t)d->n * d->c_out * d->out_h * d->out_w;
}

size_t dpt_conv2d_work_floats(const dpt_conv2d_desc *d)
{
    /* A named algorithm also covers the GEMM fallback. AUTO: the heuristic
     * depends on the kernel set, which may change between calls (tests
     * switch it), so it covers GEMM, DIRECT (sized for every set) and the
     * heuristic's choice now. */
    int algos[3] = {DPT_CONV_ALGO_GEMM, d->algo, -1};
    if (d->algo == DPT_CONV_ALGO_AUTO)
        algos[1] = DPT_CONV_ALGO_DIRECT, algos[2] = dpt_conv_algo_heuristic(d);
    size_t most = 0;
    for (int i = 0; i < 3; i++) {
        const conv_algo *a = dpt_conv_algo_get(algos[i]);
        size_t n = a ? dpt_conv_algo_work(a, d) : 0;
        if (n > most)
            most = n;
    }
    return most;
}

void dpt_conv2d_forward_ex(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq)
{
    dpt_conv_algo_forward(&table[dpt_conv_algo_resolve(d)], d, x, xa, w, b, y, work, sum, sumsq);
}

void dpt_conv_algo_forward(const conv_algo *a, const dpt_conv2d_desc *d, const float *x,
                           const dpt_bn_apply *xa, const float *w, const float *b, float *y,
                           float *work, double *sum, double *sumsq)
{
    if (a->fused) {
        a->forward(d, x, xa, w, b, y, work, sum, sumsq);
        return;
    }
    if (xa) {
        float *xt = work + unfused_offset(a, d);
        const size_t x_img = (size_t)d->c_in * d->h * d->w;
        for (int i = 0; i < d->n; i++)
            dpt_bn_apply_forward(x + i * x_img, d->c_in, d->h * d->w, xa, xt + i * x_img);
        x = xt;
    }
    a->forward(d, x, NULL, w, b, y, work, NULL, NULL);
    if (sum)
        dpt_bn_sums(y, d->n, d->c_out, d->out_h * d->out_w, sum, sumsq);
}

void dpt_conv2d_backward_ex(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg)
{
    dpt_conv_algo_backward(&table[dpt_conv_algo_resolve(d)], d, x, xa, w, dy, dya, y, dx, dw, db,
                           work, xg);
}

void dpt_conv_algo_backward(const conv_algo *a, const dpt_conv2d_desc *d, const float *x,
                            const dpt_bn_apply *xa, const float *w, const float *dy,
                            const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                            float *db, float *work, double *xg)
{
    assert(!xg || (xa && dx));
    if (a->fused) {
        a->backward(d, x, xa, w, dy, dya, y, dx, dw, db, work, xg);
        return;
    }
    const int P = d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * d->h * d->w, y_img = (size_t)d->c_out * P;
    float *xt = work + unfused_offset(a, d), *dyt = xt + (size_t)d->n * x_img;
    const float *xin = x, *dyin = dy;
    if (xa) {
        for (int i = 0; i < d->n; i++)
            dpt_bn_apply_forward(x + i * x_img, d->c_in, d->h * d->w, xa, xt + i * x_img);
        xin = xt;
    }
    if (dya) {
        for (int i = 0; i < d->n; i++)
            apply_backward(dy + i * y_img, y + i * y_img, d->c_out, P, dya, dyt + i * y_img);
        dyin = dyt;
    }
    a->backward(d, xin, NULL, w, dyin, NULL, NULL, dx, dw, db, work, NULL);
    if (xg) {
        for (int ci = 0; ci < 2 * d->c_in; ci++)
            xg[ci] = 0.0;
        dpt_bn_grad_sums(x, dx, d->n, d->c_in, d->h * d->w, xa, xg, xg + d->c_in);
    }
}

void dpt_conv2d_forward(const dpt_conv2d_desc *d, const float *x, const float *w,
                        const float *b, float *y, float *work)
{
    dpt_conv2d_forward_ex(d, x, NULL, w, b, y, work, NULL, NULL);
}

void dpt_conv2d_forward_sums(const dpt_conv2d_desc *d, const float *x, const float *w,
                             const float *b, float *y, float *work, double *sum, double *sumsq)
{
    dpt_conv2d_forward_ex(d, x, NULL, w, b, y, work, sum, sumsq);
}

void dpt_conv2d_backward(const dpt_conv2d_desc *d, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db, float *work)
{
    dpt_conv2d_backward_ex(d, x, NULL, w, dy, NULL, NULL, dx, dw, db, work, NULL);
}
