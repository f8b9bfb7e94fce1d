/* The BATCHED convolution algorithm (see conv_batched.h).
 *
 * Per group g (cg_in = c_in/G inputs, cg_out = c_out/G outputs, K =
 * cg_in·kh·kw taps, P = out_h·out_w) and block of nb images:
 *   col [K, nb·P]: column i·P + p holds image i's patch at output pixel p
 *   forward   Yb [cg_out, nb·P] = W_g · col, scattered into y (NCHW) + b
 *   backward  Db [cg_out, nb·P] gathered from dy,
 *             dW_g = Σ_blocks Db · colᵀ  (the first block writes, later add)
 *             dcol = W_gᵀ · Db into col's memory (dW is done with col),
 *             then col2im scatters it into dx.
 * nb is chosen from the shape alone (dpt_conv_batched_block), so the sums
 * and their order, hence the bits, never depend on anything else.
 *
 * bench/gemm_bench --conv (bench/RESULTS-gemm.md), batch 128, avx512:
 * 1.10-1.77x the per-image reference forward and 1.03-1.60x backward on
 * the suite's strided, 1x1 and wide layers; with avx2 0.78-1.10x (its GEMM
 * is no faster than the BLAS), so the planner's measurement decides. */
#include "ops/conv_batched.h"
#include "ops/gemm.h"

#include <assert.h>
#include <string.h>

/* Columns a block aims at (nb·P): wide enough for the GEMM's tiles
 * (NR 32), small enough that col stays in L2/L3 between im2col and the
 * GEMM (bench/gemm_bench --conv on the VGG layers, batch 128: 256 columns
 * 1.26-1.51x the per-image reference forward, 512 1.19-1.46x, 1024
 * 0.93-1.33x, 4096 0.99-1.18x); and the most floats col and Yb/Db may
 * take together (32 MiB), so a wide layer's blocks stay a bounded
 * fraction of memory. */
#define BATCH_COLS 256
#define BATCH_MAX_FLOATS ((size_t)8 << 20)

static int groups_of(const dpt_conv2d_desc *d) { return d->groups > 1 ? d->groups : 1; }
static int dil_of(const dpt_conv2d_desc *d) { return d->dilation > 1 ? d->dilation : 1; }

/* A 1x1 filter, stride 1, no padding: an image's channels are its col
 * [cg_in, P] already, so a block of one image needs no copy. */
static int identity(const dpt_conv2d_desc *d)
{
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

int dpt_conv_batched_supports(const dpt_conv2d_desc *d)
{
    (void)d;
    return 1;
}

int dpt_conv_batched_block(const dpt_conv2d_desc *d)
{
    const size_t P = (size_t)d->out_h * d->out_w;
    const size_t K = (size_t)(d->c_in / groups_of(d)) * d->kh * d->kw;
    const size_t per = (K + (size_t)(d->c_out / groups_of(d))) * P; /* floats per image */
    size_t nb = (BATCH_COLS + P - 1) / P;
    if (nb * per > BATCH_MAX_FLOATS)
        nb = BATCH_MAX_FLOATS / per;
    if (nb > (size_t)d->n)
        nb = (size_t)d->n;
    return nb < 1 ? 1 : (int)nb;
}

/* work: col [K, nb·P], then Yb/Db [cg_out, nb·P], then one image's group
 * of transformed input [cg_in, h, w] (a fused batch norm), then c_out
 * doubles of bias-gradient sums (on an even float count). */
static size_t xt_offset(const dpt_conv2d_desc *d)
{
    const size_t P = (size_t)d->out_h * d->out_w;
    const size_t K = (size_t)(d->c_in / groups_of(d)) * d->kh * d->kw;
    return (K + (size_t)(d->c_out / groups_of(d))) * P * (size_t)dpt_conv_batched_block(d);
}

static size_t bsum_offset(const dpt_conv2d_desc *d)
{
    size_t o = xt_offset(d) + (size_t)(d->c_in / groups_of(d)) * d->h * d->w;
    return (o + 1) & ~(size_t)1;
}

size_t dpt_conv_batched_work_floats(const dpt_conv2d_desc *d)
{
    return bsum_offset(d) + 2 * (size_t)d->c_out;
}

/* The batch norm a, for the channels from c0 on (a group's slice). */
static dpt_bn_apply shifted(const dpt_bn_apply *a, int c0)
{
    dpt_bn_apply s = *a;
    s.mean += c0, s.scale += c0, s.shift += c0;
    if (s.kf)
        s.kf += c0, s.ka += c0, s.kb += c0;
    return s;
}

/* out [P] = the gradient at the batch norm's input for one channel ch of
 * dya, from g at its output and y its input (the expressions of ops.h's
 * dpt_bn_apply, the ReLU mask as dpt_bn_apply_forward's). */
static void dy_apply(const float *g, const float *y, int P, const dpt_bn_apply *a, int ch,
                     float *out)
{
    const float m = a->mean[ch], sc = a->scale[ch], sh = a->shift[ch];
    const float kf = a->kf[ch], ka = a->ka[ch], kb = a->kb[ch];
    for (int p = 0; p < P; p++) {
        const float xc = y[p] - m;
        const float gv = a->relu && !(xc * sc + sh > 0.0f) ? 0.0f : g[p];
        out[p] = kf * gv - ka - xc * kb;
    }
}

/* Output columns ox whose input column ox·s − pad + off lies in [0, w):
 * [*lo, *hi). */
static void cols_inside(int off, int s, int w, int ow, int *lo, int *hi)
{
    const int a = -off, b = w - off; /* need a <= ox·s < b */
    int first = a <= 0 ? 0 : (a + s - 1) / s;
    int last = b <= 0 ? 0 : (b + s - 1) / s;
    first = first < ow ? first : ow;
    last = last < ow ? last : ow;
    *lo = first;
    *hi = last > first ? last : first;
}

/* Rows of col (row stride ld) for the c channels of one image x [c, h, w]
 * at its column offset: row (ci·kh + ki)·kw + kj. */
static void im2col(const dpt_conv2d_desc *d, const float *x, int c, float *col, size_t ld)
{
    const int oh = d->out_h, ow = d->out_w, s = d->stride, dl = dil_of(d);
    for (int ci = 0; ci < c; ci++)
        for (int ki = 0; ki < d->kh; ki++)
            for (int kj = 0; kj < d->kw; kj++, col += ld) {
                const int off = kj * dl - d->pad;
                int lo, hi;
                cols_inside(off, s, d->w, ow, &lo, &hi);
                float *o = col;
                for (int oy = 0; oy < oh; oy++, o += ow) {
                    const int iy = oy * s - d->pad + ki * dl;
                    if (iy < 0 || iy >= d->h || lo == hi) {
                        memset(o, 0, (size_t)ow * sizeof *o);
                        continue;
                    }
                    const float *xr = x + ((size_t)ci * d->h + iy) * d->w + off;
                    memset(o, 0, (size_t)lo * sizeof *o);
                    if (s == 1)
                        memcpy(o + lo, xr + lo, (size_t)(hi - lo) * sizeof *o);
                    else
                        for (int ox = lo; ox < hi; ox++)
                            o[ox] = xr[(size_t)ox * s];
                    memset(o + hi, 0, (size_t)(ow - hi) * sizeof *o);
                }
            }
}

/* dx [c, h, w] of one image = the scatter-add of its columns of dcol (row
 * stride ld); taps on padding are dropped. */
static void col2im(const dpt_conv2d_desc *d, const float *col, size_t ld, int c, float *dx)
{
    const int oh = d->out_h, ow = d->out_w, s = d->stride, dl = dil_of(d);
    memset(dx, 0, (size_t)c * d->h * d->w * sizeof *dx);
    for (int ci = 0; ci < c; ci++)
        for (int ki = 0; ki < d->kh; ki++)
            for (int kj = 0; kj < d->kw; kj++, col += ld) {
                const int off = kj * dl - d->pad;
                int lo, hi;
                cols_inside(off, s, d->w, ow, &lo, &hi);
                const float *o = col;
                for (int oy = 0; oy < oh; oy++, o += ow) {
                    const int iy = oy * s - d->pad + ki * dl;
                    if (iy < 0 || iy >= d->h)
                        continue;
                    float *xr = dx + ((size_t)ci * d->h + iy) * d->w + off;
                    if (s == 1)
                        for (int ox = lo; ox < hi; ox++)
                            xr[ox] += o[ox];
                    else
                        for (int ox = lo; ox < hi; ox++)
                            xr[(size_t)ox * s] += o[ox];
                }
            }
}

void dpt_conv_batched_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                              const float *w, const float *b, float *y, float *work,
                              double *sum, double *sumsq)
{
    const int G = groups_of(d), cg_in = d->c_in / G, cg_out = d->c_out / G;
    const int K = cg_in * d->kh * d->kw, P = d->out_h * d->out_w, hw = d->h * d->w;
    const int nb = dpt_conv_batched_block(d);
    const size_t x_img = (size_t)d->c_in * hw, y_img = (size_t)d->c_out * P;
    float *col = work, *yb = work + (size_t)K * nb * P, *xt = work + xt_offset(d);
    for (int i0 = 0; i0 < d->n; i0 += nb) {
        const int m = d->n - i0 < nb ? d->n - i0 : nb;
        const size_t ld = (size_t)m * P;
        for (int g = 0; g < G; g++) {
            const float *xg = x + i0 * x_img + (size_t)g * cg_in * hw;
            const dpt_bn_apply xs = xa ? shifted(xa, g * cg_in) : (dpt_bn_apply){0};
            if (m == 1) { /* one image: straight into y, onto the bias */
                const float *c1 = xg;
                if (xa) {
                    dpt_bn_apply_forward(xg, cg_in, hw, &xs, xt);
                    c1 = xt;
                }
                if (!identity(d)) {
                    im2col(d, c1, cg_in, col, ld);
                    c1 = col;
                }
                float *yg = y + i0 * y_img + (size_t)g * cg_out * P;
                for (int co = 0; b && co < cg_out; co++)
                    for (int p = 0; p < P; p++)
                        yg[(size_t)co * P + p] = b[g * cg_out + co];
                dpt_sgemm(0, 0, cg_out, P, K, 1.0f, w + (size_t)g * cg_out * K, K, c1, P,
                          b ? 1.0f : 0.0f, yg, P);
                continue;
            }
            for (int i = 0; i < m; i++) {
                const float *xi = xg + i * x_img;
                if (xa) {
                    dpt_bn_apply_forward(xi, cg_in, hw, &xs, xt);
                    xi = xt;
                }
                im2col(d, xi, cg_in, col + (size_t)i * P, ld);
            }
            dpt_sgemm(0, 0, cg_out, (int)ld, K, 1.0f, w + (size_t)g * cg_out * K, K, col,
                      (int)ld, 0.0f, yb, (int)ld);
            for (int i = 0; i < m; i++)
                for (int co = 0; co < cg_out; co++) {
                    const int c = g * cg_out + co;
                    const float *src = yb + (size_t)co * ld + (size_t)i * P;
                    float *dst = y + (i0 + i) * y_img + (size_t)c * P;
                    if (b) {
                        const float bc = b[c];
                        for (int p = 0; p < P; p++)
                            dst[p] = src[p] + bc;
                    } else {
                        memcpy(dst, src, (size_t)P * sizeof *dst);
                    }
                }
        }
    }
    if (sum)
        dpt_bn_sums(y, d->n, d->c_out, P, sum, sumsq);
}

void dpt_conv_batched_backward(const dpt_conv2d_desc *d, const float *x,
                               const dpt_bn_apply *xa, const float *w, const float *dy,
                               const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                               float *db, float *work, double *xg)
{
    assert(!xg || (xa && dx));
    const int G = groups_of(d), cg_in = d->c_in / G, cg_out = d->c_out / G;
    const int K = cg_in * d->kh * d->kw, P = d->out_h * d->out_w, hw = d->h * d->w;
    const int nb = dpt_conv_batched_block(d);
    const size_t x_img = (size_t)d->c_in * hw, y_img = (size_t)d->c_out * P;
    const size_t x_grp = (size_t)cg_in * hw, w_grp = (size_t)cg_out * K;
    float *col = work, *db_ = work + (size_t)K * nb * P, *xt = work + xt_offset(d);
    /* Bias gradient: Σ over n·P values per channel in float64, images in
     * order, of the gradient the convolution uses (after dya). */
    double *bsum = (double *)(void *)(work + bsum_offset(d));
    for (int c = 0; db && c < d->c_out; c++)
        bsum[c] = 0.0;
    for (int i0 = 0; i0 < d->n; i0 += nb) {
        const int m = d->n - i0 < nb ? d->n - i0 : nb;
        const size_t ld = (size_t)m * P;
        for (int g = 0; g < G; g++) {
            /* One image: its dy is already [cg_out, P] (unless dya
             * transforms it)... */
            const float *dyb = m == 1 && !dya ? dy + i0 * y_img + (size_t)g * cg_out * P : db_;
            /* ... and with a 1x1 filter its x is its col (unless xa
             * transforms it), its dx its dcol. */
            const int same_x = m == 1 && identity(d) && !xa, same_dx = m == 1 && identity(d);
            const float *cb = same_x ? x + i0 * x_img + g * x_grp : col;
            const dpt_bn_apply xs = xa ? shifted(xa, g * cg_in) : (dpt_bn_apply){0};
            for (int i = 0; i < m; i++) {
                for (int co = 0; dyb == db_ && co < cg_out; co++) {
                    const size_t off = (i0 + i) * y_img + (size_t)(g * cg_out + co) * P;
                    float *row = db_ + (size_t)co * ld + (size_t)i * P;
                    if (dya)
                        dy_apply(dy + off, y + off, P, dya, g * cg_out + co, row);
                    else
                        memcpy(row, dy + off, (size_t)P * sizeof *row);
                }
                for (int co = 0; db && co < cg_out; co++) {
                    const float *r = dyb + (size_t)co * ld + (size_t)i * P;
                    double sb = bsum[g * cg_out + co];
                    for (int p = 0; p < P; p++)
                        sb += r[p];
                    bsum[g * cg_out + co] = sb;
                }
                if (same_x)
                    continue;
                const float *xi = x + (i0 + i) * x_img + g * x_grp;
                if (xa) {
                    dpt_bn_apply_forward(xi, cg_in, hw, &xs, xt);
                    xi = xt;
                }
                im2col(d, xi, cg_in, col + (size_t)i * P, ld);
            }
            dpt_sgemm(0, 1, cg_out, K, (int)ld, 1.0f, dyb, (int)ld, cb, (int)ld,
                      i0 == 0 ? 0.0f : 1.0f, dw + g * w_grp, K);
            if (!dx)
                continue;
            float *dcol = same_dx ? dx + i0 * x_img + g * x_grp : col;
            dpt_sgemm(1, 0, K, (int)ld, cg_out, 1.0f, w + g * w_grp, K, dyb, (int)ld, 0.0f, dcol,
                      (int)ld);
            for (int i = 0; !same_dx && i < m; i++)
                col2im(d, col + (size_t)i * P, ld, cg_in, dx + (i0 + i) * x_img + g * x_grp);
        }
    }
    for (int c = 0; db && c < d->c_out; c++)
        db[c] = (float)bsum[c];
    if (xg) { /* what xa's batch norm needs for its backward, from dx */
        for (int c = 0; c < 2 * d->c_in; c++)
            xg[c] = 0.0;
        dpt_bn_grad_sums(x, dx, d->n, d->c_in, hw, xa, xg, xg + d->c_in);
    }
}
