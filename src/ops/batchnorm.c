/* Batch normalisation over (n, h, w) per channel, NCHW float32, optionally
 * fused with the ReLU that follows it.
 *
 * The work is split so that a synchronised batch norm can all-reduce the
 * per-channel sums between the steps (see ops.h). Each pass handles one
 * plane [hw] of one image at a time with float vectors (bn_kern.h, compiled
 * here for any CPU and in vec_avx512.c / vec_avx2.c for wider vectors) and
 * adds each plane's result into float64: a plane is a few hundred values,
 * so float loses nothing that matters there, and the batch totals, which can
 * be long, are kept in float64. The forward sums are taken around a
 * per-channel shift (the channel's first value) and turned back into plain
 * Σx, Σx² in float64, so that E[x²] − E[x]² does not cancel away the
 * variance of data whose mean is large against its spread.
 *
 * The fused ReLU is recomputed in backward from x with the same float
 * expression as forward, so its mask is bit-for-bit the forward's y > 0. */
#include "ops/vec_isa.h"
#include "ops/ops.h"

#include <stddef.h>

typedef float vt_generic __attribute__((vector_size(16)));
typedef int vi_generic __attribute__((vector_size(16)));
#define VN 4
#define VT vt_generic
#define VI vi_generic
#define KN(f) f##_generic
#include "ops/bn_kern.h"

static const bn_isa bn_generic = {
    .sums = plane_sums_generic,
    .normalize = plane_normalize_generic,
    .backward_sums = plane_backward_sums_generic,
    .backward_dx = plane_backward_dx_generic,
    .add_bn = plane_add_bn_generic,
    .add_bn_bwd = plane_add_bn_bwd_generic,
};

static const bn_isa *isa(void)
{
    const bn_isa *k = dpt_ops_bn_isa();
    return k ? k : &bn_generic;
}

void dpt_bn_sums_image(const float *x, const float *x0, int c, int hw, double *sum,
                       double *sumsq)
{
    const bn_isa *k = isa();
    for (int ch = 0; ch < c; ch++) {
        const float shift = x0[(size_t)ch * hw]; /* a value of the channel */
        double a, b;
        k->sums(x + (size_t)ch * hw, hw, shift, &a, &b);
        sum[ch] += a;
        sumsq[ch] += b;
    }
}

void dpt_bn_sums_finish(const float *x0, int n, int c, int hw, double *sum, double *sumsq)
{
    for (int ch = 0; ch < c; ch++) {
        const float shift = x0[(size_t)ch * hw];
        const double s1 = sum[ch], s2 = sumsq[ch];
        /* Back to plain sums: Σx = S1 + mK, Σx² = S2 + 2K·S1 + mK². */
        const double m = (double)n * hw;
        sum[ch] = s1 + m * shift;
        sumsq[ch] = s2 + 2.0 * shift * s1 + m * (double)shift * shift;
    }
}

void dpt_bn_sums(const float *x, int n, int c, int hw, double *sum, double *sumsq)
{
    /* Images outer, so that the planes are read in memory order (a
     * channel's planes are an image apart); each channel still adds its
     * planes in image order, so the sums are the same bits. sum and sumsq
     * hold S1 and S2 until the end. */
    for (int ch = 0; ch < c; ch++)
        sum[ch] = sumsq[ch] = 0.0;
    for (int i = 0; i < n; i++)
        dpt_bn_sums_image(x + (size_t)i * c * hw, x, c, hw, sum, sumsq);
    dpt_bn_sums_finish(x, n, c, hw, sum, sumsq);
}

/* y = (x - mean)·scale + shift with scale = gamma·invstd (the expression the
 * fused ReLU's backward mask recomputes). */
static void normalize(const float *x, int n, int c, int hw, const float *mean, const float *invstd,
                      const float *gamma, const float *beta, float *y, int relu)
{
    const bn_isa *k = isa();
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const size_t base = ((size_t)i * c + ch) * hw;
            k->normalize(x + base, hw, mean[ch], gamma[ch] * invstd[ch], beta[ch], y + base, relu);
        }
}

void dpt_bn_normalize(const float *x, int n, int c, int hw, const float *mean,
                      const float *invstd, const float *gamma, const float *beta, float *y)
{
    normalize(x, n, c, hw, mean, invstd, gamma, beta, y, 0);
}

void dpt_bn_normalize_relu(const float *x, int n, int c, int hw, const float *mean,
                           const float *invstd, const float *gamma, const float *beta, float *y)
{
    normalize(x, n, c, hw, mean, invstd, gamma, beta, y, 1);
}

static void backward_sums(const float *x, const float *dy, int n, int c, int hw, const float *mean,
                          const float *invstd, const float *gamma, const float *beta,
                          double *sum_dy, double *sum_dy_xhat, int relu)
{
    const bn_isa *k = isa();
    /* Images outer (memory order), each channel's planes added in image
     * order as before: the same bits. */
    for (int ch = 0; ch < c; ch++)
        sum_dy[ch] = sum_dy_xhat[ch] = 0.0;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const float scale = relu ? gamma[ch] * invstd[ch] : 0.0f;
            const float shift = relu ? beta[ch] : 0.0f;
            const size_t base = ((size_t)i * c + ch) * hw;
            double a, b;
            k->backward_sums(x + base, dy + base, hw, mean[ch], scale, shift, relu, &a, &b);
            sum_dy[ch] += a;
            sum_dy_xhat[ch] += b;
        }
    /* invstd is constant over the channel: apply it once. */
    for (int ch = 0; ch < c; ch++)
        sum_dy_xhat[ch] *= invstd[ch];
}

void dpt_bn_apply_forward(const float *x, int c, int hw, const dpt_bn_apply *a, float *y)
{
    /* The normalize pass with a's coefficients: the same expression. */
    const bn_isa *k = isa();
    for (int ch = 0; ch < c; ch++)
        k->normalize(x + (size_t)ch * hw, hw, a->mean[ch], a->scale[ch], a->shift[ch],
                     y + (size_t)ch * hw, a->relu);
}

void dpt_bn_grad_sums(const float *x, const float *g, int n, int c, int hw, const dpt_bn_apply *a,
                      double *s_g, double *s_gx)
{
    const bn_isa *k = isa();
    for (int i = 0; i < n; i++) /* memory order; per channel, images in order */
        for (int ch = 0; ch < c; ch++) {
            const size_t base = ((size_t)i * c + ch) * hw;
            double p, q;
            k->backward_sums(x + base, g + base, hw, a->mean[ch], a->scale[ch], a->shift[ch],
                             a->relu, &p, &q);
            s_g[ch] += p;
            s_gx[ch] += q;
        }
}

void dpt_bn_backward_sums(const float *x, const float *dy, int n, int c, int hw,
                          const float *mean, const float *invstd, double *sum_dy,
                          double *sum_dy_xhat)
{
    backward_sums(x, dy, n, c, hw, mean, invstd, NULL, NULL, sum_dy, sum_dy_xhat, 0);
}

void dpt_bn_backward_sums_relu(const float *x, const float *dy, int n, int c, int hw,
                               const float *mean, const float *invstd, const float *gamma,
                               const float *beta, double *sum_dy, double *sum_dy_xhat)
{
    backward_sums(x, dy, n, c, hw, mean, invstd, gamma, beta, sum_dy, sum_dy_xhat, 1);
}

/* dx = k·(g − a − x̂·b), k = gamma·invstd, a = Σg/count, b = Σg·x̂/count,
 * x̂ = (x − m)·invstd: per element k·g − k·a − (x − m)·(k·b·invstd), with
 * the per-channel constants formed in float64. */
static void backward_dx(const float *x, const float *dy, int n, int c, int hw, const float *mean,
                        const float *invstd, const float *gamma, const float *beta,
                        const double *sum_dy, const double *sum_dy_xhat, double count, float *dx,
                        int relu)
{
    const bn_isa *k = isa();
    /* Images outer (memory order); the coefficients are formed again per
     * plane (a few float64 operations), the same values every time. */
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            float kf, ka, kb;
            dpt_bn_backward_coeffs(1, invstd + ch, gamma + ch, sum_dy + ch, sum_dy_xhat + ch,
                                   count, &kf, &ka, &kb);
            const float scale = relu ? gamma[ch] * invstd[ch] : 0.0f;
            const float shift = relu ? beta[ch] : 0.0f;
            const size_t base = ((size_t)i * c + ch) * hw;
            k->backward_dx(x + base, dy + base, hw, mean[ch], scale, shift, relu, kf, ka, kb,
                           dx + base);
        }
}

void dpt_bn_backward_dx_split(const float *x, const float *dy, int n, int c, int hw,
                              const float *mean, const float *invstd, const float *gamma,
                              const double *sum_dy, const double *sum_dy_xhat, double count,
                              int n_parts, const int *part_c, float *const *part_dx)
{
    const bn_isa *k = isa();
    for (int i = 0; i < n; i++)
        for (int p = 0, ch = 0; p < n_parts; p++)
            for (int q = 0; q < part_c[p]; q++, ch++) {
                float kf, ka, kb; /* as backward_dx forms them */
                dpt_bn_backward_coeffs(1, invstd + ch, gamma + ch, sum_dy + ch, sum_dy_xhat + ch,
                                       count, &kf, &ka, &kb);
                const size_t base = ((size_t)i * c + ch) * hw;
                k->backward_dx(x + base, dy + base, hw, mean[ch], 0.0f, 0.0f, 0, kf, ka, kb,
                               part_dx[p] + ((size_t)i * part_c[p] + q) * hw);
            }
}

void dpt_bn_backward_coeffs(int c, const float *invstd, const float *gamma, const double *sum_dy,
                            const double *sum_dy_xhat, double count, float *kf, float *ka,
                            float *kb)
{
    for (int ch = 0; ch < c; ch++) {
        const double is = invstd[ch], kd = (double)gamma[ch] * is;
        kf[ch] = (float)kd;
        ka[ch] = (float)(kd * sum_dy[ch] / count);
        kb[ch] = (float)(kd * sum_dy_xhat[ch] / count * is);
    }
}

void dpt_bn_backward_dx(const float *x, const float *dy, int n, int c, int hw,
                        const float *mean, const float *invstd, const float *gamma,
                        const double *sum_dy, const double *sum_dy_xhat, double count,
                        float *dx)
{
    backward_dx(x, dy, n, c, hw, mean, invstd, gamma, NULL, sum_dy, sum_dy_xhat, count, dx, 0);
}

void dpt_bn_backward_dx_relu(const float *x, const float *dy, int n, int c, int hw,
                             const float *mean, const float *invstd, const float *gamma,
                             const float *beta, const double *sum_dy, const double *sum_dy_xhat,
                             double count, float *dx)
{
    backward_dx(x, dy, n, c, hw, mean, invstd, gamma, beta, sum_dy, sum_dy_xhat, count, dx, 1);
}

/* Coefficients of input k's plane ch: its batch norm's, or the identity
 * (exact: (x − 0)·1 + (−0) is x for every float). */
static void add_coef(const dpt_bn_apply *a, int ch, float *c3)
{
    c3[0] = a ? a->mean[ch] : 0.0f;
    c3[1] = a ? a->scale[ch] : 1.0f;
    c3[2] = a ? a->shift[ch] : -0.0f;
}

void dpt_bn_add_forward(const float *x0, const dpt_bn_apply *a0, const float *x1,
                        const dpt_bn_apply *a1, int n, int c, int hw, int relu, float *y,
                        float *mean)
{
    const bn_isa *k = isa();
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            float c0[3], c1[3];
            add_coef(a0, ch, c0);
            add_coef(a1, ch, c1);
            const size_t base = ((size_t)i * c + ch) * hw;
            k->add_bn(x0 + base, c0, x1 + base, c1, hw, relu, y + base);
            if (mean) /* the plane is still in cache */
                dpt_global_avgpool_forward(y + base, mean + (size_t)i * c + ch, 1, 1, hw);
        }
}

void dpt_bn_add_backward(const float *y, const float *dy, int n, int c, int hw, int relu,
                         const float *x0, const dpt_bn_apply *a0, double *xg0, const float *x1,
                         const dpt_bn_apply *a1, double *xg1, float *d0, float *d1,
                         const float *dmean)
{
    float spread[DPT_BN_ADD_POOL_HW];
    const bn_isa *k = isa();
    if (!xg0) { /* the batch-normed input first: one x to read */
        const float *xt = x0;
        const dpt_bn_apply *at = a0;
        double *gt = xg0;
        float *dt = d0;
        x0 = x1, a0 = a1, xg0 = xg1, d0 = d1;
        x1 = xt, a1 = at, xg1 = gt, d1 = dt;
    }
    for (int ch = 0; ch < c; ch++) {
        if (xg0)
            xg0[ch] = xg0[c + ch] = 0.0;
        if (xg1)
            xg1[ch] = xg1[c + ch] = 0.0;
    }
    /* Images outer (memory order); each channel's planes added in image
     * order, as dpt_bn_backward_sums adds them. */
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const size_t base = ((size_t)i * c + ch) * hw;
            double s[3];
            const float *g = dy + base;
            if (dmean) { /* the pooling's backward, a plane at a time */
                dpt_global_avgpool_backward(dmean + (size_t)i * c + ch, spread, 1, 1, hw);
                g = spread;
            }
            k->add_bn_bwd(y + base, g, x0 + base, a0->mean[ch], xg1 ? x1 + base : NULL,
                          xg1 ? a1->mean[ch] : 0.0f, hw, relu, d0 + base, d1 + base, s);
            if (xg0)
                xg0[ch] += s[0], xg0[c + ch] += s[1];
            if (xg1)
                xg1[ch] += s[0], xg1[c + ch] += s[2];
        }
}
