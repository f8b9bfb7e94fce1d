/* Depthwise convolution kernels (conv_depthwise.c), written once with GCC
 * vector extensions and compiled per instruction set: conv_depthwise.c
 * itself (4-float vectors, any CPU: "generic"), conv_dw_avx512.c (16),
 * conv_dw_avx2.c (8). Before inclusion:
 *   VN        lanes              VT, VI  float and int vector types of VN lanes
 *   KN(f)     suffixed name of function f
 *   KN(fma)(a, b, c)       a·b + c (fused where the set has FMA)
 *   KN(loadn)(p, n)        lanes [0, n) from p, the others 0 (0 <= n <= VN)
 *   KN(storen)(p, v, n)    lanes [0, n) of v to p, nothing past them
 *   DW_NV     vectors of output positions per forward tile (accumulators)
 * Every pass works on one channel plane, small enough for L1/L2; the
 * planes' layout is conv_depthwise.c's (see there). The batch-norm
 * expressions are bn_kern.h's, so the fused ReLU masks agree bit for bit
 * with the unfused passes. */
#include "ops/conv_depthwise.h"
#include "ops/vec_lanes.h"

#include <stddef.h>

/* ---- multiply-accumulate over taps ------------------------------------- */

/* out[q .. q + nv·VN) = bias + Σ_j wt[j] · src[j][q ..]: nv vectors of
 * positions, nv a constant after inlining so the accumulators stay in
 * registers (DW_NV of them: enough independent chains to hide the FMA
 * latency, each input vector loaded once and used once). */
static inline __attribute__((always_inline)) void KN(mac_tile)(const float *const *src,
                                                              const float *wt, int nt, VT b,
                                                              float *out, size_t q, const int nv)
{
    VT acc[DW_NV];
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++)
        acc[v] = b;
    for (int j = 0; j < nt; j++) {
        const VT wv = KN(vset1)(wt[j]);
        const float *s = src[j] + q;
#pragma GCC unroll 16
        for (int v = 0; v < nv; v++)
            acc[v] = KN(fma)(wv, KN(vload)(s + (size_t)v * VN), acc[v]);
    }
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++)
        KN(vstore)(out + q + (size_t)v * VN, acc[v]);
}

/* out[q] = bias + Σ_j wt[j]·src[j][q] for q < nq (a multiple of VN). */
static void KN(mac)(const float *const *src, const float *wt, int nt, float bias, float *out,
                    size_t nq)
{
    const VT b = KN(vset1)(bias);
    size_t q = 0;
    for (; q + (size_t)DW_NV * VN <= nq; q += (size_t)DW_NV * VN)
        KN(mac_tile)(src, wt, nt, b, out, q, DW_NV);
    switch ((nq - q) / VN) {
#if DW_NV > 7
    case 7: KN(mac_tile)(src, wt, nt, b, out, q, 7); break;
    case 6: KN(mac_tile)(src, wt, nt, b, out, q, 6); break;
    case 5: KN(mac_tile)(src, wt, nt, b, out, q, 5); break;
    case 4: KN(mac_tile)(src, wt, nt, b, out, q, 4); break;
#endif
    case 3: KN(mac_tile)(src, wt, nt, b, out, q, 3); break;
    case 2: KN(mac_tile)(src, wt, nt, b, out, q, 2); break;
    case 1: KN(mac_tile)(src, wt, nt, b, out, q, 1); break;
    default: break;
    }
}

/* ---- dot products (weight gradient) ------------------------------------ */

/* res[j] += Σ_q g[q]·src[j][q] (q < nq, a multiple of VN) for nb taps:
 * each g vector loaded once for all of them, one accumulator per tap
 * (per-lane float sums over one plane, added into float64 once). */
static inline __attribute__((always_inline)) void KN(dot_blk)(const float *g,
                                                             const float *const *src, size_t nq,
                                                             double *res, const int nb)
{
    VT acc[DW_TB];
    const VT zero = KN(vset1)(0.0f);
#pragma GCC unroll 16
    for (int j = 0; j < nb; j++)
        acc[j] = zero;
    for (size_t q = 0; q < nq; q += VN) {
        const VT gv = KN(vload)(g + q);
#pragma GCC unroll 16
        for (int j = 0; j < nb; j++)
            acc[j] = KN(fma)(gv, KN(vload)(src[j] + q), acc[j]);
    }
#pragma GCC unroll 16
    for (int j = 0; j < nb; j++)
        res[j] += KN(vsum)(acc[j]);
}

static void KN(dots)(const float *g, const float *const *src, int nt, size_t nq, double *res)
{
    for (int j = 0; j < nt; j += DW_TB) {
        switch (nt - j < DW_TB ? nt - j : DW_TB) {
        case 9: KN(dot_blk)(g, src + j, nq, res + j, 9); break;
        case 8: KN(dot_blk)(g, src + j, nq, res + j, 8); break;
        case 7: KN(dot_blk)(g, src + j, nq, res + j, 7); break;
        case 6: KN(dot_blk)(g, src + j, nq, res + j, 6); break;
        case 5: KN(dot_blk)(g, src + j, nq, res + j, 5); break;
        case 4: KN(dot_blk)(g, src + j, nq, res + j, 4); break;
        case 3: KN(dot_blk)(g, src + j, nq, res + j, 3); break;
        case 2: KN(dot_blk)(g, src + j, nq, res + j, 2); break;
        default: KN(dot_blk)(g, src + j, nq, res + j, 1); break;
        }
    }
}

/* ---- rows in and out of the planes ------------------------------------- */

/* dst[j] = src[j] for j < n, or its batch-norm forward (a on channel ch:
 * z = (x − mean)·scale + shift, ReLU'd when a->relu). */
static void KN(row_in)(const float *src, int n, const dpt_bn_apply *a, int ch, float *dst)
{
    int j = 0;
    if (!a) {
        for (; j + VN <= n; j += VN)
            KN(vstore)(dst + j, KN(vload)(src + j));
        if (j < n)
            KN(storen)(dst + j, KN(loadn)(src + j, n - j), n - j);
        return;
    }
    const VT mv = KN(vset1)(a->mean[ch]), sv = KN(vset1)(a->scale[ch]);
    const VT tv = KN(vset1)(a->shift[ch]), zero = KN(vset1)(0.0f);
    const int relu = a->relu;
    for (; j < n; j += VN) {
        const int k = n - j < VN ? n - j : VN;
        VT z = ((k == VN ? KN(vload)(src + j) : KN(loadn)(src + j, k)) - mv) * sv + tv;
        if (relu)
            z = KN(keep)(z, z > zero);
        if (k == VN)
            KN(vstore)(dst + j, z);
        else
            KN(storen)(dst + j, z, k);
    }
}

/* dst (rows h of n floats, row stride ds) = the output gradient the
 * convolution uses: dy [h][n], or through the batch norm above (a, with y
 * [h][n] its input: kf·g' − ka − (y − mean)·kb, g' = dy masked by the
 * ReLU); *sum += Σ dst (the bias gradient; per-lane float sums over the
 * plane). */
static void KN(plane_grad)(const float *dy, const float *y, int h, int n, const dpt_bn_apply *a,
                           int ch, float *dst, size_t ds, double *sum)
{
    const VT zero = KN(vset1)(0.0f);
    VT acc = zero;
    if (!a) {
        for (int r = 0; r < h; r++, dy += n, dst += ds)
            for (int j = 0; j < n; j += VN) {
                const int k = n - j < VN ? n - j : VN;
                const VT g = k == VN ? KN(vload)(dy + j) : KN(loadn)(dy + j, k);
                acc += g;
                if (k == VN)
                    KN(vstore)(dst + j, g);
                else
                    KN(storen)(dst + j, g, k);
            }
        *sum += KN(vsum)(acc);
        return;
    }
    const VT mv = KN(vset1)(a->mean[ch]), sv = KN(vset1)(a->scale[ch]);
    const VT tv = KN(vset1)(a->shift[ch]);
    const VT kfv = KN(vset1)(a->kf[ch]), kav = KN(vset1)(a->ka[ch]), kbv = KN(vset1)(a->kb[ch]);
    const int relu = a->relu;
    VI lane;
    for (int l = 0; l < VN; l++)
        lane[l] = l;
    for (int r = 0; r < h; r++, dy += n, y += n, dst += ds)
        for (int j = 0; j < n; j += VN) {
            const int k = n - j < VN ? n - j : VN;
            VT g = k == VN ? KN(vload)(dy + j) : KN(loadn)(dy + j, k);
            const VT xc = (k == VN ? KN(vload)(y + j) : KN(loadn)(y + j, k)) - mv;
            if (relu)
                g = KN(keep)(g, xc * sv + tv > zero);
            VT o = kfv * g - kav - xc * kbv;
            if (k == VN) {
                KN(vstore)(dst + j, o);
            } else {
                /* The lanes past n hold −ka − (0 − mean)·kb, not 0: keep
                 * them out of the sum. */
                o = KN(keep)(o, lane < k);
                KN(storen)(dst + j, o, k);
            }
            acc += o;
        }
    *sum += KN(vsum)(acc);
}

/* row_in over a plane [h][w] into rows of stride ds. */
static void KN(plane_in)(const float *src, int h, int w, const dpt_bn_apply *a, int ch,
                         float *dst, size_t ds)
{
    for (int r = 0; r < h; r++)
        KN(row_in)(src + (size_t)r * w, w, a, ch, dst + (size_t)r * ds);
}

/* dst[j] = src[j] (j < n); s1 += Σ dst, s2 += Σ dst² when s1 (per-lane
 * float sums, returned through the vectors, added up per plane). */
static void KN(row_out)(const float *src, int n, float *dst, VT *s1, VT *s2)
{
    for (int j = 0; j < n; j += VN) {
        const int k = n - j < VN ? n - j : VN;
        const VT v = k == VN ? KN(vload)(src + j) : KN(loadn)(src + j, k);
        if (s1) {
            *s1 += v;
            *s2 += v * v;
        }
        if (k == VN)
            KN(vstore)(dst + j, v);
        else
            KN(storen)(dst + j, v, k);
    }
}

/* dst[j] = src[j] (j < n, the data gradient), and when a: the sums its
 * batch norm's backward needs, sg += Σ g', sgx += Σ g'·(x − mean), g' =
 * dst masked by the ReLU of a applied to x (dpt_bn_grad_sums). */
static void KN(row_dx)(const float *src, int n, float *dst, const float *x,
                       const dpt_bn_apply *a, int ch, VT *sg, VT *sgx)
{
    if (!a) {
        KN(row_out)(src, n, dst, NULL, NULL);
        return;
    }
    const VT mv = KN(vset1)(a->mean[ch]), sv = KN(vset1)(a->scale[ch]);
    const VT tv = KN(vset1)(a->shift[ch]), zero = KN(vset1)(0.0f);
    const int relu = a->relu;
    for (int j = 0; j < n; j += VN) {
        const int k = n - j < VN ? n - j : VN;
        VT g = k == VN ? KN(vload)(src + j) : KN(loadn)(src + j, k);
        const VT xc = (k == VN ? KN(vload)(x + j) : KN(loadn)(x + j, k)) - mv;
        if (k == VN)
            KN(vstore)(dst + j, g);
        else
            KN(storen)(dst + j, g, k);
        if (relu)
            g = KN(keep)(g, xc * sv + tv > zero);
        *sg += g; /* lanes past n: g = 0 */
        *sgx += g * xc;
    }
}

/* Adds the per-lane sums of a plane into float64 totals. */
static void KN(lanes_add)(VT a, VT b, double *ta, double *tb)
{
    *ta += KN(vsum)(a);
    *tb += KN(vsum)(b);
}

/* dst [rows][n] from the wide plane (row stride ws); with sum: Σ and Σ² of
 * the values, added into *sum, *sumsq. */
static void KN(plane_out)(const float *wide, int rows, int n, size_t ws, float *dst,
                          double *sum, double *sumsq)
{
    const VT zero = KN(vset1)(0.0f);
    VT s1 = zero, s2 = zero;
    for (int r = 0; r < rows; r++)
        KN(row_out)(wide + (size_t)r * ws, n, dst + (size_t)r * n, sum ? &s1 : NULL, &s2);
    if (sum)
        KN(lanes_add)(s1, s2, sum, sumsq);
}

/* dst [h][w] from rows[r][0 .. w) (the data gradient, unpacked from the
 * phase planes), with xg's sums when a. */
static void KN(plane_dx)(const float *const *rows, int h, int w, float *dst, const float *x,
                         const dpt_bn_apply *a, int ch, double *sg, double *sgx)
{
    const VT zero = KN(vset1)(0.0f);
    VT s1 = zero, s2 = zero;
    for (int r = 0; r < h; r++)
        KN(row_dx)(rows[r], w, dst + (size_t)r * w, x + (size_t)r * w, a, ch, &s1, &s2);
    if (a)
        KN(lanes_add)(s1, s2, sg, sgx);
}

const dw_isa KN(dpt_dw_isa) = {
    .vn = VN,
    .mac = KN(mac),
    .dots = KN(dots),
    .plane_in = KN(plane_in),
    .plane_grad = KN(plane_grad),
    .plane_out = KN(plane_out),
    .plane_dx = KN(plane_dx),
    .deint2 = KN(deint2),
    .int2 = KN(int2),
};

