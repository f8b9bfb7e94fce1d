/* Direct convolution micro-kernels (stride-1 reads: conv_direct.c turns
 * strides into phase planes), written once and compiled per
 * instruction set: conv_avx512.c and conv_avx2.c define the vector macros
 * below, then include this file.
 *
 * Both kernels work on one image in the "wide" layout (conv_direct.c): a
 * zero-padded input plane of width wp, and an output whose row stride is also
 * wp, so output position q and filter tap t read input position q + off[t].
 * Every tap is then a contiguous (unaligned) vector load, with no im2col.
 *
 * Needed before inclusion:
 *   VEC             vector type of VW floats
 *   VLOAD(p)        unaligned load      VSTORE(p, v)  unaligned store
 *   VSET1(x)        broadcast           VZERO()       zeros
 *   VFMA(a, b, c)   a * b + c           VADD(a, b)
 *   VSTORE_RANGE(p, v, lo, hi)  store lanes [lo, hi) of v at p + lane
 *   VLOAD_N(p, n)   load lanes [0, n) from p, the others zero (n < VW)
 *   VKEEP2(v, hi_a, lo_b, hi_b) v with lanes outside [0, hi_a) and
 *                   [lo_b, hi_b) zeroed
 *   VSUB, VMUL      a − b, a · b
 *   VDEINT(a, b, ev, od)  ev = lanes 0, 2, 4, … of the pair (a, b) (a's
 *                   lanes first), od = lanes 1, 3, 5, …
 *   VINTER(e, o, lo, hi)  its inverse: (lo, hi) = e0 o0 e1 o1 …
 *   VHSUM(v)        the sum of v's lanes (a fixed order: deterministic)
 *   DW_FLUSH_REDUCED(acc, pp, ks)  optional: pp[c·ks + j] += VHSUM(acc[c][j])
 *                   for the whole weight-gradient tile, done faster
 *   VKEEPGT0(v, z, zero)  v where z > 0, else 0
 *   VLOAD_RANGE(p, lo, hi)  load lanes [lo, hi) from p + lane, the others zero
 *   VSTORE_MAP_A(p, v, e), VSTORE_MAP_B, VLOAD_MAP_A, VLOAD_MAP_B, VKEEP_MAP(v, e)
 *                   the RANGE operations on the lanes of a conv_out_map entry
 *                   e: range a, range b, or both kept (its bit masks on
 *                   AVX-512, so no mask is computed in the loop)
 *   VW              lanes
 *   FWD_CB, FWD_NV  forward tile: FWD_CB output channels x FWD_NV vectors
 *   DW_CB, DW_KB    weight-gradient tile: DW_CB channels x DW_KB filter taps
 *   KERN(name)      the suffixed function name
 *   ISA_NAME        the kernel set's name ("avx512")
 * Register budget: FWD_CB*FWD_NV + FWD_NV + 1 and DW_CB*DW_KB + DW_CB + DW_KB
 * vector registers (32 on AVX-512, 16 on AVX2).
 *
 * Also here: the packing of one image into the padded planes the kernels
 * read (pad), with a batch norm applied on the way (pad_bn), and of an
 * output gradient through the backward of the batch norm above (pad_bnback):
 * see dpt_bn_apply in ops.h. */
#include "ops/conv_direct.h"

#include <stddef.h>

/* out[co][q] (co < c_out, q < nq, nq a multiple of VW) =
 *   bias[co] + Σ_ci Σ_t wpk[...] * x[ci*ps + q + off[t]].
 * wpk: for each block of FWD_CB output channels (c_out padded with zero
 * weights to a multiple of FWD_CB), [ci][t][FWD_CB] contiguous.
 * Stored wide (map NULL: y + co*ys + q) or through map (conv_out_map, one
 * entry per vector of q) into dense planes y + co*ys; with stats, the stored
 * values are also added up per channel into stats[co][2][VW] (sum, sum of
 * squares, per lane): through map the lanes it stores, without one every
 * lane (the caller's positions are then all outputs).
 * With ba (data gradient of a conv whose input is a batch norm's output,
 * applied on the fly; needs map and stats): the output is the gradient g at
 * that output, and stats gets the sums the batch norm's backward needs,
 * Σg' and Σg'·(bx − mean), g' = g masked by its ReLU, bx the batch norm's
 * input (planes laid out as y): no separate pass over g and bx.
 *
 * One tile: FWD_CB output channels from c0 (cn of them real) at nv vectors
 * of positions from q; nv is a constant after inlining (FWD_NV, or fewer for
 * the last tile), so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void KERN(fwd_tile)(
    const float *x, size_t ps, int c_in, const int kt, const int *off, const float *wb,
    const float *bias, int c0, int cn, float *y, size_t ys, int q, const int nv,
    const conv_out_map *map, float *stats, const float *bx, const dpt_bn_apply *ba)
{
    VEC acc[FWD_CB][FWD_NV];
#pragma GCC unroll 16
    for (int c = 0; c < FWD_CB; c++) {
        VEC b0 = (bias && c < cn) ? VSET1(bias[c0 + c]) : VZERO();
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[c][v] = b0;
    }
    const float *w = wb;
    for (int ci = 0; ci < c_in; ci++) {
        const float *xc = x + (size_t)ci * ps + q;
#pragma GCC unroll 32
        for (int t = 0; t < kt; t++) {
            const float *xt = xc + off[t];
            VEC xv[FWD_NV];
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                xv[v] = VLOAD(xt + v * VW);
#pragma GCC unroll 16
            for (int c = 0; c < FWD_CB; c++) {
                VEC wv = VSET1(w[c]);
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[c][v] = VFMA(wv, xv[v], acc[c][v]);
            }
            w += FWD_CB;
        }
    }
    if (!map) {
#pragma GCC unroll 16
        for (int c = 0; c < FWD_CB; c++) {
            if (c < cn) {
                float *yc = y + (size_t)(c0 + c) * ys + q;
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    VSTORE(yc + v * VW, acc[c][v]);
                if (stats) { /* dense positions: every lane an output */
                    float *st = stats + (size_t)(c0 + c) * 2 * VW;
                    VEC s1 = VLOAD(st), s2 = VLOAD(st + VW);
#pragma GCC unroll 4
                    for (int v = 0; v < nv; v++) {
                        s1 = VADD(s1, acc[c][v]);
                        s2 = VFMA(acc[c][v], acc[c][v], s2);
                    }
                    VSTORE(st, s1);
                    VSTORE(st + VW, s2);
                }
            }
        }
        return;
    }
    const conv_out_map *m = map + q / VW;
#pragma GCC unroll 16
    for (int c = 0; c < FWD_CB; c++) {
        if (c < cn) {
            float *yc = y + (size_t)(c0 + c) * ys;
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) {
                VSTORE_MAP_A(yc + m[v].off_a, acc[c][v], m[v]);
                VSTORE_MAP_B(yc + m[v].off_b, acc[c][v], m[v]);
            }
            if (stats) {
                /* With ba, s2 gets k·(bx − mean) and k is masked by the
                 * ReLU; without, s2 gets k·k. */
                float *st = stats + (size_t)(c0 + c) * 2 * VW;
                VEC s1 = VLOAD(st), s2 = VLOAD(st + VW);
                const float *xc = ba ? bx + (size_t)(c0 + c) * ys : NULL;
                const VEC zero = VZERO();
                const VEC mv = ba ? VSET1(ba->mean[c0 + c]) : zero;
                const VEC sc = ba ? VSET1(ba->scale[c0 + c]) : zero;
                const VEC sh = ba ? VSET1(ba->shift[c0 + c]) : zero;
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++) {
                    VEC k = VKEEP_MAP(acc[c][v], m[v]), d = k;
                    if (ba) { /* lanes outside the map load as 0 and keep 0 */
                        d = VSUB(VADD(VLOAD_MAP_A(xc + m[v].off_a, m[v]),
                                      VLOAD_MAP_B(xc + m[v].off_b, m[v])),
                                 mv);
                        if (ba->relu)
                            k = VKEEPGT0(k, VADD(VMUL(d, sc), sh), zero);
                    }
                    s1 = VADD(s1, k);
                    s2 = VFMA(k, d, s2);
                }
                VSTORE(st, s1);
                VSTORE(st + VW, s2);
            }
        }
    }
}

/* The last, shorter tile of a row of tiles as a function of its own for
 * each (taps, width) pair: with all four widths inlined into one body, GCC
 * spilled the accumulators under -fsanitize=address/undefined at -O2, and
 * those builds (CI's sanitizer stage) ran the direct kernels about 5x
 * slower. The whole tiles stay inlined: conv1's forward (25 taps of one
 * channel, a short tile) was 5 % slower with every tile a call. */
typedef void (*KERN(tile_fn))(const float *x, size_t ps, int c_in, int kt, const int *off,
                              const float *wb, const float *bias, int c0, int cn, float *y,
                              size_t ys, int q, const conv_out_map *map, float *stats,
                              const float *bx, const dpt_bn_apply *ba);

#define FWD_TAIL_FN(NAME, KT, NV)                                                              \
    static __attribute__((noinline)) void KERN(NAME)(                                         \
        const float *x, size_t ps, int c_in, int kt, const int *off, const float *wb,          \
        const float *bias, int c0, int cn, float *y, size_t ys, int q, const conv_out_map *map, \
        float *stats, const float *bx, const dpt_bn_apply *ba)                                 \
    {                                                                                          \
        (void)kt;                                                                              \
        KERN(fwd_tile)(x, ps, c_in, KT, off, wb, bias, c0, cn, y, ys, q, NV, map, stats, bx,   \
                       ba);                                                                    \
    }
/* Per width: kt = 9 (3x3) and 25 (5x5) unrolled, any other kt a variable.
 * Widths 1 to FWD_NV - 1 (a width the set does not have is never called:
 * NULL in the tables). */
#define FWD_TAILS(NV)                     \
    FWD_TAIL_FN(tail_k9_##NV, 9, NV)      \
    FWD_TAIL_FN(tail_k25_##NV, 25, NV)    \
    FWD_TAIL_FN(tail_kv_##NV, kt, NV)
FWD_TAILS(1)
#if FWD_NV > 2
FWD_TAILS(2)
#define TAIL_2(k) KERN(tail_##k##_2)
#else
#define TAIL_2(k) NULL
#endif
#if FWD_NV > 3
FWD_TAILS(3)
#define TAIL_3(k) KERN(tail_##k##_3)
#else
#define TAIL_3(k) NULL
#endif
#undef FWD_TAILS
#undef FWD_TAIL_FN

/* nq is a multiple of VW: whole tiles of FWD_NV vectors, then one shorter
 * tile for the rest (the wide rows rarely fill whole tiles); tail[v] is
 * the tile function for v + 1 vectors. */
static inline __attribute__((always_inline)) void KERN(fwd_body)(
    const float *x, size_t ps, int c_in, const int kt, const int *off, const float *wpk,
    const float *bias, int c_out, float *y, size_t ys, int nq, const conv_out_map *map,
    float *stats, const float *bx, const dpt_bn_apply *ba, conv_prefetch *pf,
    const KERN(tile_fn) *tail)
{
    const int tile = FWD_NV * VW;
    const size_t kblk = (size_t)c_in * kt * FWD_CB;
    /* Positions outer, channel blocks inner: one tile's inputs (all c_in
     * planes) stay in L1 while every block of output channels uses them
     * (~3 % faster than sweeping the whole image once per block). */
    int q = 0;
    for (; q + tile <= nq; q += tile) {
        for (int c0 = 0; c0 < c_out; c0 += FWD_CB) {
            const float *wb = wpk + (size_t)(c0 / FWD_CB) * kblk;
            const int cn = c_out - c0 < FWD_CB ? c_out - c0 : FWD_CB;
            conv_prefetch_step(pf);
            KERN(fwd_tile)(x, ps, c_in, kt, off, wb, bias, c0, cn, y, ys, q, FWD_NV, map, stats,
                           bx, ba);
        }
    }
    const int rest = (nq - q) / VW;
    if (rest == 0)
        return;
    for (int c0 = 0; c0 < c_out; c0 += FWD_CB) {
        const float *wb = wpk + (size_t)(c0 / FWD_CB) * kblk;
        const int cn = c_out - c0 < FWD_CB ? c_out - c0 : FWD_CB;
        tail[rest - 1](x, ps, c_in, kt, off, wb, bias, c0, cn, y, ys, q, map, stats, bx, ba);
    }
}

/* The tap loop fully unrolled for the common filter sizes (the body is
 * inlined with kt a constant). */
static void KERN(fwd)(const float *x, size_t ps, int c_in, int kt, const int *off,
                      const float *wpk, const float *bias, int c_out, float *y, size_t ys, int nq,
                      const conv_out_map *map, float *stats, const float *bx,
                      const dpt_bn_apply *ba, conv_prefetch *pf)
{
#define TAILS(k) {KERN(tail_##k##_1), TAIL_2(k), TAIL_3(k)}
    static const KERN(tile_fn) k9[3] = TAILS(k9), k25[3] = TAILS(k25), kv[3] = TAILS(kv);
#undef TAILS
    switch (kt) {
    case 9:
        KERN(fwd_body)(x, ps, c_in, 9, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf, k9);
        break;
    case 25:
        KERN(fwd_body)(x, ps, c_in, 25, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf,
                       k25);
        break;
    /* The phases of a 3x3 stride-2 data gradient (2x2, 2x1, 1x2, 1x1 taps)
     * and 1x1 filters: with the tap loop a variable, its bookkeeping cost
     * as much as the multiply-adds of so few taps. */
    case 4:
        KERN(fwd_body)(x, ps, c_in, 4, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf, kv);
        break;
    /* conv_direct.c's dense rows of a 3x3 filter (taps: its rows) */
    case 3:
        KERN(fwd_body)(x, ps, c_in, 3, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf,
                       kv);
        break;
    case 2:
        KERN(fwd_body)(x, ps, c_in, 2, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf, kv);
        break;
    case 1:
        KERN(fwd_body)(x, ps, c_in, 1, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf, kv);
        break;
    default:
        KERN(fwd_body)(x, ps, c_in, kt, off, wpk, bias, c_out, y, ys, nq, map, stats, bx, ba, pf,
                       kv);
        break;
    }
}
#undef TAIL_2
#undef TAIL_3

/* part[co][k][lane] += Σ_q dy[co][q] * xk[k][q], lanes kept apart (summed
 * once at the end of the batch), or with `reduced` part[co][k] += the sum
 * of the lanes (a wide layer's [co][k][lane] is megabytes, streamed from
 * memory once per call; its [co][k] is 16 times smaller). dy: c_out rows
 * of stride dys (c_out padded to DW_CB with rows pointing at zeros); xk: K
 * pointers, K padded to DW_KB. nq is a multiple of VW. */
static void KERN(dw)(const float *const *dy, int c_out, const float *const *xk, int k_total,
                     int nq, float *part, int reduced, conv_prefetch *pf)
{
    for (int c0 = 0; c0 < c_out; c0 += DW_CB) {
        for (int k0 = 0; k0 < k_total; k0 += DW_KB) {
            conv_prefetch_step(pf);
            VEC acc[DW_CB][DW_KB];
#pragma GCC unroll 16
            for (int c = 0; c < DW_CB; c++)
#pragma GCC unroll 16
                for (int j = 0; j < DW_KB; j++)
                    acc[c][j] = VZERO();
            const float *dp[DW_CB], *xp[DW_KB];
#pragma GCC unroll 16
            for (int c = 0; c < DW_CB; c++)
                dp[c] = dy[c0 + c];
#pragma GCC unroll 16
            for (int j = 0; j < DW_KB; j++)
                xp[j] = xk[k0 + j];
            for (int q = 0; q < nq; q += VW) {
                VEC d[DW_CB];
#pragma GCC unroll 16
                for (int c = 0; c < DW_CB; c++)
                    d[c] = VLOAD(dp[c] + q);
#pragma GCC unroll 16
                for (int j = 0; j < DW_KB; j++) {
                    VEC xv = VLOAD(xp[j] + q);
#pragma GCC unroll 16
                    for (int c = 0; c < DW_CB; c++)
                        acc[c][j] = VFMA(d[c], xv, acc[c][j]);
                }
            }
            if (reduced) {
#ifdef DW_FLUSH_REDUCED
                DW_FLUSH_REDUCED(acc, part + (size_t)c0 * k_total + k0, (size_t)k_total);
                continue;
#endif
#pragma GCC unroll 16
                for (int c = 0; c < DW_CB; c++) {
                    float *pp = part + (size_t)(c0 + c) * k_total + k0;
#pragma GCC unroll 16
                    for (int j = 0; j < DW_KB; j++)
                        pp[j] += VHSUM(acc[c][j]);
                }
                continue;
            }
#pragma GCC unroll 16
            for (int c = 0; c < DW_CB; c++) {
#pragma GCC unroll 16
                for (int j = 0; j < DW_KB; j++) {
                    float *pp = part + ((size_t)(c0 + c) * k_total + k0 + j) * VW;
                    VSTORE(pp, VADD(VLOAD(pp), acc[c][j]));
                }
            }
        }
    }
}

/* Packing one image into the interior of padded planes of stride ps (row
 * y at (y + ph)·wp + pw), the padding untouched. Short rows are the common
 * case (24 floats), so whole vectors and one masked tail, no memcpy calls.
 *   PACK_COPY    src itself (pad);
 *   PACK_BN      the batch norm (+ ReLU) of a applied on the way (pad_bn):
 *                z = (x − m)·s + t as a multiply and an add (never fused,
 *                so the value and the ReLU mask are those of the batch-norm
 *                passes);
 *   PACK_BNBACK  src is the gradient g at the output of the batch norm
 *                (+ ReLU) applied to yv, and the plane gets the gradient at
 *                yv (pad_bnback): kf·g' − ka − (y − m)·kb, g' = g where
 *                (y − m)·s + t > 0 (relu).
 * csum (NULL: none): per channel, the packed values added up per lane into
 * csum[ch][VW] (a conv's bias gradient, from the dy it packs anyway). */
enum { PACK_COPY, PACK_BN, PACK_BNBACK };

static inline __attribute__((always_inline)) void KERN(pack)(
    const float *src, const float *yv, int c, int h, int w, int ph, int pw, int wp, size_t ps,
    float *dst, const dpt_bn_apply *a, const int mode, float *csum)
{
    const VEC zero = VZERO();
    for (int ch = 0; ch < c; ch++) {
        VEC cs = zero;
        const float *s = src + (size_t)ch * h * w;
        const float *ys = mode == PACK_BNBACK ? yv + (size_t)ch * h * w : NULL;
        float *r = dst + (size_t)ch * ps + (size_t)ph * wp + pw;
        VEC m = zero, sc = zero, sh = zero, kf = zero, ka = zero, kb = zero;
        if (mode != PACK_COPY)
            m = VSET1(a->mean[ch]), sc = VSET1(a->scale[ch]), sh = VSET1(a->shift[ch]);
        if (mode == PACK_BNBACK)
            kf = VSET1(a->kf[ch]), ka = VSET1(a->ka[ch]), kb = VSET1(a->kb[ch]);
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x += VW) {
                const int n = w - x < VW ? w - x : VW;
                VEC v = n == VW ? VLOAD(s + x) : VLOAD_N(s + x, n);
                if (mode == PACK_BN) {
                    v = VADD(VMUL(VSUB(v, m), sc), sh);
                    if (a->relu)
                        v = VKEEPGT0(v, v, zero);
                } else if (mode == PACK_BNBACK) {
                    VEC xc = VSUB(n == VW ? VLOAD(ys + x) : VLOAD_N(ys + x, n), m);
                    if (a->relu)
                        v = VKEEPGT0(v, VADD(VMUL(xc, sc), sh), zero);
                    v = VSUB(VSUB(VMUL(kf, v), ka), VMUL(xc, kb));
                }
                if (n == VW)
                    VSTORE(r + x, v);
                else
                    VSTORE_RANGE(r + x, v, 0, n);
                if (csum) /* lanes past n are not 0 after PACK_BNBACK */
                    cs = VADD(cs, n == VW ? v : VKEEP2(v, n, 0, 0));
            }
            s += w;
            ys = ys ? ys + w : NULL;
            r += wp;
        }
        if (csum)
            VSTORE(csum + (size_t)ch * VW, cs);
    }
}

static void KERN(pad)(const float *src, int c, int h, int w, int ph, int pw, int wp, size_t ps,
                      float *dst, float *csum)
{
    KERN(pack)(src, NULL, c, h, w, ph, pw, wp, ps, dst, NULL, PACK_COPY, csum);
}

static void KERN(pad_bn)(const float *src, int c, int h, int w, int ph, int pw, int wp, size_t ps,
                         float *dst, const dpt_bn_apply *a)
{
    KERN(pack)(src, NULL, c, h, w, ph, pw, wp, ps, dst, a, PACK_BN, NULL);
}

static void KERN(pad_bnback)(const float *g, const float *yv, int c, int h, int w, int ph, int pw,
                             int wp, size_t ps, float *dst, const dpt_bn_apply *a, float *csum)
{
    KERN(pack)(g, yv, c, h, w, ph, pw, wp, ps, dst, a, PACK_BNBACK, csum);
}

/* pad_bnback with g at the batch norm's output given as the gradient pg
 * of the 2x2 stride-2 max pool after it and the pool's taps pi (planes of
 * (h / 2) x (w / 2)): g is pg at each window's tap and +0 elsewhere (an odd
 * last row or column included), as the pool's backward would have written
 * it, so that dx of the pool is never written nor read. A pair of rows per
 * row of pg: its taps are expanded once for both. The arithmetic is
 * pack's PACK_BNBACK (the same bits). */
static inline __attribute__((always_inline)) VEC KERN(bnback)(VEC v, const float *yr, int n,
                                                              VEC m, VEC sc, VEC sh, VEC kf,
                                                              VEC ka, VEC kb, int relu)
{
    const VEC xc = VSUB(n == VW ? VLOAD(yr) : VLOAD_N(yr, n), m);
    if (relu)
        v = VKEEPGT0(v, VADD(VMUL(xc, sc), sh), VZERO());
    return VSUB(VSUB(VMUL(kf, v), ka), VMUL(xc, kb));
}

static void KERN(pad_bnback_pool)(const float *pg, const unsigned char *pi, const float *yv, int c,
                                  int h, int w, int ph, int pw, int wp, size_t ps, float *dst,
                                  const dpt_bn_apply *a, float *csum)
{
    const VEC zero = VZERO();
    const int h2 = h / 2, w2 = w / 2;
    for (int ch = 0; ch < c; ch++) {
        VEC cs = zero;
        const float *gc = pg + (size_t)ch * h2 * w2;
        const unsigned char *pc = pi + (size_t)ch * h2 * w2;
        const float *ys = yv + (size_t)ch * h * w;
        float *r = dst + (size_t)ch * ps + (size_t)ph * wp + pw;
        const VEC m = VSET1(a->mean[ch]), sc = VSET1(a->scale[ch]), sh = VSET1(a->shift[ch]);
        const VEC kf = VSET1(a->kf[ch]), ka = VSET1(a->ka[ch]), kb = VSET1(a->kb[ch]);
        for (int y = 0; y < h; y += 2) {
            const int two = y + 1 < h; /* an odd last row: alone, g all +0 */
            for (int x = 0; x < w; x += VW) {
                const int n = w - x < VW ? w - x : VW;
                VEC g0 = zero, g1 = zero;
                int n2 = w2 - x / 2;
                n2 = n2 < VW / 2 ? n2 : VW / 2;
                if (two && n2 > 0) {
                    VPOOL_G2(gc + (size_t)(y / 2) * w2 + x / 2, pc + (size_t)(y / 2) * w2 + x / 2,
                             n2, g0, g1);
                    /* + 0: the pool's scatter adds g to +0 (−0 becomes +0) */
                    g0 = VADD(g0, zero), g1 = VADD(g1, zero);
                }
                /* y is the one stem-sized stream read here: prefetched a
                 * few rows on (past the image: the next one's planes) */
                __builtin_prefetch(ys + x + 1024);
                __builtin_prefetch(ys + w + x + 1024);
                VEC v0 = KERN(bnback)(g0, ys + x, n, m, sc, sh, kf, ka, kb, a->relu);
                if (n == VW)
                    VSTORE(r + x, v0);
                else
                    VSTORE_RANGE(r + x, v0, 0, n);
                if (csum) /* lanes past n are not 0 */
                    cs = VADD(cs, n == VW ? v0 : VKEEP2(v0, n, 0, 0));
                if (!two)
                    continue;
                VEC v1 = KERN(bnback)(g1, ys + w + x, n, m, sc, sh, kf, ka, kb, a->relu);
                if (n == VW)
                    VSTORE(r + wp + x, v1);
                else
                    VSTORE_RANGE(r + wp + x, v1, 0, n);
                if (csum)
                    cs = VADD(cs, n == VW ? v1 : VKEEP2(v1, n, 0, 0));
            }
            ys += 2 * (size_t)w;
            r += 2 * (size_t)wp;
        }
        if (csum)
            VSTORE(csum + (size_t)ch * VW, cs);
    }
}

/* Stride 2: image rows straight into the four phase planes (conv_direct.c's
 * polyphase layout) instead of a padded plane split afterwards by a
 * strided scalar copy (that split and its extra pass were a fifth of a
 * strided layer's forward). Input row iy is padded row py = row0 + pad +
 * iy, phase (py & 1) at phase row py >> 1; column ix is padded column px =
 * pad + ix, phase px & 1 at px >> 1. Each run of 2·VW columns is loaded,
 * passed through the batch norm (a, NULL: none; the same expression as
 * pack's PACK_BN, so the same bits), and split into its even and odd
 * columns (VDEINT). Phase planes of channel ch start at dst + ch·ps_x, the
 * plane of phase (ra, cb) at + (2·ra + cb)·ps_ph, rows wp apart; only the
 * phases some tap reads (used[2·ra + cb]) are written; padding untouched. */
static void KERN(pack_s2)(const float *src, int c, int h, int w, int pad, size_t row0, int wp,
                          size_t ps_x, size_t ps_ph, const unsigned char *used, float *dst,
                          const dpt_bn_apply *a)
{
    const VEC zero = VZERO();
    for (int ch = 0; ch < c; ch++) {
        const float *s = src + (size_t)ch * h * w;
        float *pc = dst + (size_t)ch * ps_x;
        VEC m = zero, sc = zero, sh = zero;
        if (a)
            m = VSET1(a->mean[ch]), sc = VSET1(a->scale[ch]), sh = VSET1(a->shift[ch]);
        for (int y = 0; y < h; y++, s += w) {
            const size_t py = row0 + (size_t)pad + (size_t)y;
            const int ra = (int)(py & 1);
            float *r0 = used[2 * ra] ? pc + (size_t)(2 * ra) * ps_ph + (py >> 1) * wp : NULL;
            float *r1 = used[2 * ra + 1] ? pc + (size_t)(2 * ra + 1) * ps_ph + (py >> 1) * wp
                                         : NULL;
            if (!r0 && !r1)
                continue;
            for (int x = 0; x < w; x += 2 * VW) {
                const int n = w - x < 2 * VW ? w - x : 2 * VW;
                VEC v0 = n >= VW ? VLOAD(s + x) : VLOAD_N(s + x, n);
                VEC v1 = n >= 2 * VW ? VLOAD(s + x + VW)
                         : n > VW    ? VLOAD_N(s + x + VW, n - VW)
                                     : zero;
                if (a) {
                    v0 = VADD(VMUL(VSUB(v0, m), sc), sh);
                    v1 = VADD(VMUL(VSUB(v1, m), sc), sh);
                    if (a->relu)
                        v0 = VKEEPGT0(v0, v0, zero), v1 = VKEEPGT0(v1, v1, zero);
                }
                VEC ev, od;
                VDEINT(v0, v1, ev, od);
                /* Even columns x + 2k: padded pad + x + 2k; odd: one more. */
                const int pe = pad + x, ne = (n + 1) / 2, no = n / 2;
                float *de = (pe & 1) ? r1 : r0, *dd = (pe & 1) ? r0 : r1;
                if (de) {
                    if (ne == VW)
                        VSTORE(de + (pe >> 1), ev);
                    else
                        VSTORE_RANGE(de + (pe >> 1), ev, 0, ne);
                }
                if (dd && no) {
                    if (no == VW)
                        VSTORE(dd + ((pe + 1) >> 1), od);
                    else
                        VSTORE_RANGE(dd + ((pe + 1) >> 1), od, 0, no);
                }
            }
        }
    }
}

/* Stride 2, data gradient: the wide outputs of the two column phases of
 * row phase a (oe: the phase of the even dx columns, oo: the odd ones;
 * NULL: a phase no tap reaches, zeros) interleaved back into dense dx rows
 * (VINTER), instead of a scalar store every other float. Phase buffers:
 * c planes ys apart, image j's rows from j·rp·wd, rows wd apart, dx row
 * iy0 + 2u from phase row u < nu; even dx column 2k is oe's column k, odd
 * column 2k + 1 is oo's (conv_direct.c's unsplit_phases says why). */
static void KERN(unsplit_s2)(const float *oe, const float *oo, size_t ys, int wd, int rp, int c,
                             int nbk, int nu, int iy0, int h, int w, size_t x_img, float *dx)
{
    const VEC zero = VZERO();
    for (int ch = 0; ch < c; ch++)
        for (int j = 0; j < nbk; j++)
            for (int u = 0; u < nu; u++) {
                const size_t at = (size_t)ch * ys + ((size_t)j * rp + u) * wd;
                const float *re = oe ? oe + at : NULL, *ro = oo ? oo + at : NULL;
                float *d = dx + (size_t)j * x_img + ((size_t)ch * h + iy0 + 2 * u) * w;
                for (int x = 0; x < w; x += 2 * VW) {
                    const int n = w - x < 2 * VW ? w - x : 2 * VW;
                    const int k = x / 2, ne = (n + 1) / 2, no = n / 2;
                    VEC e = !re ? zero : ne == VW ? VLOAD(re + k) : VLOAD_N(re + k, ne);
                    VEC o = !ro || !no ? zero : no == VW ? VLOAD(ro + k) : VLOAD_N(ro + k, no);
                    VEC lo, hi;
                    VINTER(e, o, lo, hi);
                    if (n >= VW)
                        VSTORE(d + x, lo);
                    else
                        VSTORE_RANGE(d + x, lo, 0, n);
                    if (n == 2 * VW)
                        VSTORE(d + x + VW, hi);
                    else if (n > VW)
                        VSTORE_RANGE(d + x + VW, hi, 0, n - VW);
                }
            }
}

/* The dense planes [c][oh][ow] of nbk images (img floats apart) from the
 * kernel's stacked wide planes [c][ys] of row stride wp, rp rows per image
 * (outputs narrower than a vector, which the map cannot store: strided
 * layers' 4x4 to 8x8 planes): a masked load and store per short row where
 * memcpy calls cost more than the copy. With stats, the copied values are
 * added up per channel into stats[ch][2][VW] (sum, sum of squares, per
 * lane; lanes past a row's end load as 0), as the kernel's map path does. */
static void KERN(compact)(const float *wide, int c, int oh, int ow, int wp, size_t ys, int rp,
                          int nbk, size_t img, float *dst, float *stats)
{
    for (int ch = 0; ch < c; ch++) {
        VEC s1 = VZERO(), s2 = VZERO();
        for (int j = 0; j < nbk; j++) {
            const float *sr = wide + (size_t)ch * ys + (size_t)j * rp * wp;
            float *o = dst + (size_t)j * img + (size_t)ch * oh * ow;
            for (int y = 0; y < oh; y++, sr += wp, o += ow)
                for (int x = 0; x < ow; x += VW) {
                    const int n = ow - x < VW ? ow - x : VW;
                    const VEC v = n == VW ? VLOAD(sr + x) : VLOAD_N(sr + x, n);
                    if (n == VW)
                        VSTORE(o + x, v);
                    else
                        VSTORE_RANGE(o + x, v, 0, n);
                    s1 = VADD(s1, v);
                    s2 = VFMA(v, v, s2);
                }
        }
        if (stats) {
            VSTORE(stats + (size_t)ch * 2 * VW, s1);
            VSTORE(stats + (size_t)ch * 2 * VW + VW, s2);
        }
    }
}

/* The table kernels.c picks from (conv_direct.h), named KERN(dpt_conv_isa). */
const conv_isa KERN(dpt_conv_isa) = {
    .name = ISA_NAME, .vw = VW, .fwd_cb = FWD_CB, .fwd_nv = FWD_NV, .dw_cb = DW_CB,
    .dw_kb = DW_KB, .fwd = KERN(fwd), .dw = KERN(dw), .pad = KERN(pad),
    .pad_bn = KERN(pad_bn), .pad_bnback = KERN(pad_bnback),
    .pad_bnback_pool = KERN(pad_bnback_pool), .pack_s2 = KERN(pack_s2),
    .unsplit_s2 = KERN(unsplit_s2), .compact = KERN(compact),
};
