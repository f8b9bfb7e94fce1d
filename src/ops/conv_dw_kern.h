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

/* ---- taps in groups of consecutive columns ---------------------------- */

/* Vector v shifted down by k lanes, lanes from hi filling the top: the
 * same values as a load at k floats past lo's address, hi loaded at VN
 * past it. A tap group (dw_grp) of n consecutive columns then costs one
 * load per output vector and n − 1 shuffles instead of n loads, almost all
 * of which would straddle two cache lines. */
#if VN == 4
#define DW_SH1 1, 2, 3, 4
#define DW_SH2 2, 3, 4, 5
#elif VN == 8
#define DW_SH1 1, 2, 3, 4, 5, 6, 7, 8
#define DW_SH2 2, 3, 4, 5, 6, 7, 8, 9
#else
#define DW_SH1 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
#define DW_SH2 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17
#endif
#ifndef DW_SHIFT /* a set may name its own two-source lane shift */
#define DW_SHIFT(lo, hi, k) __builtin_shufflevector(lo, hi, DW_SH##k)
#endif
/* The vector at ptr + k (lo, hi loaded at ptr, ptr + VN). A set whose
 * two-source shuffles cost more than an unaligned load (the portable
 * 4-float set: short vectors rarely straddle a line, and its 16 registers
 * would spill) defines DW_SHIFT_LOADS and loads it. */
#ifdef DW_SHIFT_LOADS
#define DW_SHV(lo, hi, k, ptr) KN(vload)((ptr) + (k))
#else
#define DW_SHV(lo, hi, k, ptr) DW_SHIFT(lo, hi, k)
#endif

/* ---- multiply-accumulate over taps ------------------------------------- */

/* acc[v] += Σ_k w[k]·p[v·VN + k ..] for the n <= 3 taps of one group (k
 * ascending: the taps' order), v < nv; n and nv constants after inlining. */
static inline __attribute__((always_inline)) void KN(grp_mac)(const float *p, const float *w,
                                                             VT *acc, const int n, const int nv)
{
    const VT w0 = KN(vset1)(w[0]);
    if (n == 1) {
#pragma GCC unroll 16
        for (int v = 0; v < nv; v++)
            acc[v] = KN(fma)(w0, KN(vload)(p + (size_t)v * VN), acc[v]);
        return;
    }
    const VT w1 = KN(vset1)(w[1]), w2 = KN(vset1)(w[n > 2 ? 2 : 1]);
    VT lo = KN(vload)(p);
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++) {
        const VT hi = KN(vload)(p + (size_t)(v + 1) * VN);
        acc[v] = KN(fma)(w0, lo, acc[v]);
        acc[v] = KN(fma)(w1, DW_SHV(lo, hi, 1, p + (size_t)v * VN), acc[v]);
        if (n > 2)
            acc[v] = KN(fma)(w2, DW_SHV(lo, hi, 2, p + (size_t)v * VN), acc[v]);
        lo = hi;
    }
}

/* out[q .. q + nv·VN) = bias + Σ_taps wt·src: nv vectors of positions, nv a
 * constant after inlining so the accumulators stay in registers (DW_NV of
 * them: enough independent chains to hide the FMA latency). */
static inline __attribute__((always_inline)) void KN(mac_tile)(const dw_grp *grp, int ng,
                                                              const float *wt, VT b, float *out,
                                                              size_t q, const int nv)
{
    VT acc[DW_NV];
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++)
        acc[v] = b;
    for (int g = 0; g < ng; g++) {
        const float *p = grp[g].p + q;
        switch (grp[g].n) {
        case 1: KN(grp_mac)(p, wt, acc, 1, nv); break;
        case 2: KN(grp_mac)(p, wt, acc, 2, nv); break;
        default: KN(grp_mac)(p, wt, acc, 3, nv); break;
        }
        wt += grp[g].n;
    }
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++)
        KN(vstore)(out + q + (size_t)v * VN, acc[v]);
}

/* out[q] = bias + Σ_taps wt[e]·src_e[q] for q < nq (a multiple of VN), the
 * taps as ng groups, wt in their order. */
static void KN(mac)(const dw_grp *grp, int ng, const float *wt, float bias, float *out, size_t nq)
{
    const VT b = KN(vset1)(bias);
    size_t q = 0;
    for (; q + (size_t)DW_NV * VN <= nq; q += (size_t)DW_NV * VN)
        KN(mac_tile)(grp, ng, wt, b, out, q, DW_NV);
    switch ((nq - q) / VN) {
#if DW_NV > 7
    case 7: KN(mac_tile)(grp, ng, wt, b, out, q, 7); break;
    case 6: KN(mac_tile)(grp, ng, wt, b, out, q, 6); break;
    case 5: KN(mac_tile)(grp, ng, wt, b, out, q, 5); break;
    case 4: KN(mac_tile)(grp, ng, wt, b, out, q, 4); break;
#endif
    case 3: KN(mac_tile)(grp, ng, wt, b, out, q, 3); break;
    case 2: KN(mac_tile)(grp, ng, wt, b, out, q, 2); break;
    case 1: KN(mac_tile)(grp, ng, wt, b, out, q, 1); break;
    default: break;
    }
}

/* ---- dot products (weight gradient) ------------------------------------ */

/* For nb groups: res[e] += Σ_q g[q]·src_e[q] (q < nq, a multiple of VN),
 * each g vector loaded once for all their taps, one accumulator per tap
 * (per-lane float sums over one plane, added into float64 once; a group
 * of fewer than 3 taps computes 3, the extra sums dropped). */
static inline __attribute__((always_inline)) void KN(dot_blk)(const float *g, const dw_grp *grp,
                                                             size_t nq, double *res, const int nb)
{
    VT acc[3][3], lo[3];
    const VT zero = KN(vset1)(0.0f);
#pragma GCC unroll 4
    for (int b = 0; b < nb; b++) {
        acc[b][0] = acc[b][1] = acc[b][2] = zero;
        lo[b] = KN(vload)(grp[b].p);
    }
    for (size_t q = 0; q < nq; q += VN) {
        const VT gv = KN(vload)(g + q);
#pragma GCC unroll 4
        for (int b = 0; b < nb; b++) {
            const VT hi = KN(vload)(grp[b].p + q + VN);
            acc[b][0] = KN(fma)(gv, lo[b], acc[b][0]);
            acc[b][1] = KN(fma)(gv, DW_SHV(lo[b], hi, 1, grp[b].p + q), acc[b][1]);
            acc[b][2] = KN(fma)(gv, DW_SHV(lo[b], hi, 2, grp[b].p + q), acc[b][2]);
            lo[b] = hi;
        }
    }
    for (int b = 0; b < nb; b++)
        for (int j = 0; j < grp[b].n; j++)
            *res++ += KN(vsum)(acc[b][j]);
}

static void KN(dots)(const float *g, const dw_grp *grp, int ng, size_t nq, double *res)
{
    for (int b = 0; b < ng; b += 3) {
        switch (ng - b < 3 ? ng - b : 3) {
        case 3: KN(dot_blk)(g, grp + b, nq, res, 3); break;
        case 2: KN(dot_blk)(g, grp + b, nq, res, 2); break;
        default: KN(dot_blk)(g, grp + b, nq, res, 1); break;
        }
        for (int j = b; j < ng && j < b + 3; j++)
            res += grp[j].n;
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

/* Adds the per-lane sums of a plane into float64 totals. */
static void KN(lanes_add)(VT a, VT b, double *ta, double *tb)
{
    *ta += KN(vsum)(a);
    *tb += KN(vsum)(b);
}

/* dst [rows][n] from the wide plane (row stride ws); with sum: Σ and Σ² of
 * the values, added into *sum, *sumsq (per-lane float sums over the plane,
 * kept in registers: through memory they would chain every vector on a
 * store-to-load forwarding). */
static void KN(plane_out)(const float *wide, int rows, int n, size_t ws, float *dst,
                          double *sum, double *sumsq)
{
    const VT zero = KN(vset1)(0.0f);
    VT s1 = zero, s2 = zero;
    for (int r = 0; r < rows; r++, wide += ws, dst += n) {
        int j = 0;
        for (; j + VN <= n; j += VN) {
            const VT v = KN(vload)(wide + j);
            s1 += v;
            s2 += v * v;
            KN(vstore)(dst + j, v);
        }
        if (j < n) {
            const VT v = KN(loadn)(wide + j, n - j);
            s1 += v;
            s2 += v * v;
            KN(storen)(dst + j, v, n - j);
        }
    }
    if (sum)
        KN(lanes_add)(s1, s2, sum, sumsq);
}

/* dst [h][w] from rows[r][0 .. w) (the data gradient, unpacked from the
 * phase planes), and when a: the sums its batch norm's backward needs,
 * sg += Σ g', sgx += Σ g'·(x − mean), g' = dst masked by the ReLU of a
 * applied to x (dpt_bn_grad_sums; per-lane float sums in registers). */
static void KN(plane_dx)(const float *const *rows, int h, int w, float *dst, const float *x,
                         const dpt_bn_apply *a, int ch, double *sg, double *sgx)
{
    const VT zero = KN(vset1)(0.0f);
    if (!a) {
        for (int r = 0; r < h; r++, dst += w) {
            int j = 0;
            for (; j + VN <= w; j += VN)
                KN(vstore)(dst + j, KN(vload)(rows[r] + j));
            if (j < w)
                KN(storen)(dst + j, KN(loadn)(rows[r] + j, w - j), w - j);
        }
        return;
    }
    const VT mv = KN(vset1)(a->mean[ch]), sv = KN(vset1)(a->scale[ch]);
    const VT tv = KN(vset1)(a->shift[ch]);
    const int relu = a->relu;
    VT s1 = zero, s2 = zero;
    for (int r = 0; r < h; r++, dst += w, x += w) {
        const float *src = rows[r];
        for (int j = 0; j < w; j += VN) {
            const int k = w - j < VN ? w - j : VN;
            VT g = k == VN ? KN(vload)(src + j) : KN(loadn)(src + j, k);
            const VT xc = (k == VN ? KN(vload)(x + j) : KN(loadn)(x + j, k)) - mv;
            if (k == VN)
                KN(vstore)(dst + j, g);
            else
                KN(storen)(dst + j, g, k);
            if (relu)
                g = KN(keep)(g, xc * sv + tv > zero);
            s1 += g; /* lanes past w: g = 0 */
            s2 += g * xc;
        }
    }
    KN(lanes_add)(s1, s2, sg, sgx);
}

/* ---- stride 2: column phases split and joined in registers ------------ */

/* Lane l < n: all ones (one compare against constant lane numbers). */
static inline VI KN(first)(int n)
{
    VI lane;
    for (int l = 0; l < VN; l++)
        lane[l] = l;
    return lane < n;
}

/* The four phase planes of a stride-2 input (phase (a, b) at (2a + b)·ps,
 * rows W apart) from the plane src [h][w], through the batch norm a
 * (channel ch; NULL: as is), padded by p: padded column c = j + p of row
 * y + p goes to phase (y + p) mod 2, (j + p) mod 2 at row (y + p) / 2,
 * column (j + p) / 2. Even and odd columns of two vectors are split by
 * shuffles and stored whole; lanes past w store zeros, which land on
 * padding or on rows written later (the planes hold a vector past their
 * last row). */
static void KN(pack2)(const float *src, int h, int w, const dpt_bn_apply *a, int ch, int p,
                      float *ph, size_t ps, size_t W)
{
    const VT zero = KN(vset1)(0.0f);
    const VT mv = KN(vset1)(a ? a->mean[ch] : 0.0f), sv = KN(vset1)(a ? a->scale[ch] : 0.0f);
    const VT tv = KN(vset1)(a ? a->shift[ch] : 0.0f);
    const int relu = a && a->relu;
    const size_t oe = (size_t)(p % 2) * ps + (size_t)(p / 2);
    const size_t oo = (size_t)((p + 1) % 2) * ps + (size_t)((p + 1) / 2);
    for (int y = 0; y < h; y++, src += w) {
        float *row = ph + (size_t)((y + p) % 2) * 2 * ps + (size_t)((y + p) / 2) * W;
        for (int j = 0; j < w; j += 2 * VN) {
            const int n0 = w - j < VN ? w - j : VN;
            const int n1 = w - j - VN <= 0 ? 0 : w - j - VN < VN ? w - j - VN : VN;
            VT lo = n0 == VN ? KN(vload)(src + j) : KN(loadn)(src + j, n0);
            VT hi = n1 == VN ? KN(vload)(src + j + VN) : n1 ? KN(loadn)(src + j + VN, n1) : zero;
            if (a) {
                /* row_in's expression, so both strides agree bit for bit */
                lo = (lo - mv) * sv + tv;
                hi = (hi - mv) * sv + tv;
                if (relu) {
                    lo = KN(keep)(lo, lo > zero);
                    hi = KN(keep)(hi, hi > zero);
                }
                if (n0 < VN)
                    lo = KN(keep)(lo, KN(first)(n0));
                if (n1 < VN)
                    hi = KN(keep)(hi, KN(first)(n1));
            }
            KN(vstore)(row + oe + j / 2, __builtin_shufflevector(lo, hi, DW_EVEN));
            KN(vstore)(row + oo + j / 2, __builtin_shufflevector(lo, hi, DW_ODD));
        }
    }
}

/* One vector of a dx row: g (lanes past k zeroed) to dst, and with a the
 * sums of plane_dx. */
static inline __attribute__((always_inline)) void KN(dx_vec)(VT g, int k, float *dst,
                                                            const float *x, int bn, VT mv, VT sv,
                                                            VT tv, int relu, VT *s1, VT *s2)
{
    if (k == VN) {
        KN(vstore)(dst, g);
    } else {
        g = KN(keep)(g, KN(first)(k));
        KN(storen)(dst, g, k);
    }
    if (!bn)
        return;
    const VT xc = (k == VN ? KN(vload)(x) : KN(loadn)(x, k)) - mv;
    if (relu)
        g = KN(keep)(g, xc * sv + tv > KN(vset1)(0.0f));
    *s1 += g;
    *s2 += g * xc;
}

/* plane_dx for stride 2: dst [h][w] joined from the four phase planes of
 * the data gradient (pack2's layout: phase (a, b) at (2a + b)·ps, rows W
 * apart, padding p), with xg's sums when a. */
static void KN(plane_dx2)(const float *ph, size_t ps, size_t W, int h, int w, int p, float *dst,
                          const float *x, const dpt_bn_apply *a, int ch, double *sg, double *sgx)
{
    const VT zero = KN(vset1)(0.0f);
    const VT mv = KN(vset1)(a ? a->mean[ch] : 0.0f), sv = KN(vset1)(a ? a->scale[ch] : 0.0f);
    const VT tv = KN(vset1)(a ? a->shift[ch] : 0.0f);
    const int relu = a && a->relu, bn = a != NULL;
    const size_t oe = (size_t)(p % 2) * ps + (size_t)(p / 2);
    const size_t oo = (size_t)((p + 1) % 2) * ps + (size_t)((p + 1) / 2);
    VT s1 = zero, s2 = zero;
    for (int y = 0; y < h; y++, dst += w, x += w) {
        const float *row = ph + (size_t)((y + p) % 2) * 2 * ps + (size_t)((y + p) / 2) * W;
        for (int j = 0; j < w; j += 2 * VN) {
            const VT e = KN(vload)(row + oe + j / 2), o = KN(vload)(row + oo + j / 2);
            const int n0 = w - j < VN ? w - j : VN;
            KN(dx_vec)(__builtin_shufflevector(e, o, DW_ILO), n0, dst + j, x + j, bn, mv, sv, tv,
                       relu, &s1, &s2);
            if (w - j > VN)
                KN(dx_vec)(__builtin_shufflevector(e, o, DW_IHI), w - j - VN < VN ? w - j - VN : VN,
                           dst + j + VN, x + j + VN, bn, mv, sv, tv, relu, &s1, &s2);
        }
    }
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
    .pack2 = KN(pack2),
    .plane_dx2 = KN(plane_dx2),
};

