/* The recurrent kernels of rnn_isa.h, written once with GCC vector
 * extensions and compiled per instruction set (rnn_avx512.c, rnn_avx2.c).
 * Before inclusion:
 *   VN, VT       lanes and float vector type
 *   VI           int vector type of VN lanes
 *   KN(f)        suffixed name of function f
 *   KN(fma)(a, b, c)   a·b + c, fused (the build is ISO C: no contraction)
 *   RNN_MR_F     rows per forward tile (G·RNN_MR_F accumulators)
 *   RNN_MR_B, RNN_NW_B  rows and vectors per backward tile
 * Activations: exp by range reduction and Cephes' degree-5 polynomial
 * (about 1 ulp), sigmoid 1/(1+e^-x), tanh 1 − 2/(e^2x + 1), as the scalar
 * code in rnn.c computes them; arguments are clamped where e^x would leave
 * the normal floats, which changes neither function's float result. */
#include <stdint.h>
#include <string.h>

static inline VT KN(ld)(const float *p)
{
    VT v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void KN(st)(float *p, VT v) { memcpy(p, &v, sizeof v); }

/* The first m lanes (m <= VN), the rest zero. */
static inline VT KN(ld_n)(const float *p, int m)
{
    if (m == VN)
        return KN(ld)(p);
    VT v = {0};
    memcpy(&v, p, (size_t)m * sizeof(float));
    return v;
}

static inline void KN(st_n)(float *p, VT v, int m)
{
    if (m == VN)
        KN(st)(p, v);
    else
        memcpy(p, &v, (size_t)m * sizeof(float));
}

static inline VT KN(set1)(float x)
{
    const VT zero = {0};
    return x - zero;
}

/* m ? a : b lane by lane (m all ones or zero). */
static inline VT KN(sel)(VI m, VT a, VT b) { return (VT)(((VI)a & m) | ((VI)b & ~m)); }
static inline VT KN(vmin)(VT a, VT b) { return KN(sel)(a < b, a, b); }
static inline VT KN(vmax)(VT a, VT b) { return KN(sel)(a > b, a, b); }

static inline VT KN(vexp)(VT x)
{
    const VT one = KN(set1)(1.0f);
    x = KN(vmin)(KN(vmax)(x, KN(set1)(-87.0f)), KN(set1)(88.0f));
    /* n = round(x / ln 2), r = x − n ln 2 in two parts (Cody–Waite). */
    VT fx = KN(fma)(x, KN(set1)(1.44269504088896341f), KN(set1)(0.5f));
    VI ni = __builtin_convertvector(fx, VI);
    VT fn = __builtin_convertvector(ni, VT);
    fn = KN(sel)(fn > fx, fn - one, fn); /* floor, for negative fx */
    ni = __builtin_convertvector(fn, VI);
    VT r = KN(fma)(fn, KN(set1)(-0.693359375f), x);
    r = KN(fma)(fn, KN(set1)(2.12194440e-4f), r);
    VT p = KN(set1)(1.9875691500e-4f);
    p = KN(fma)(p, r, KN(set1)(1.3981999507e-3f));
    p = KN(fma)(p, r, KN(set1)(8.3334519073e-3f));
    p = KN(fma)(p, r, KN(set1)(4.1665795894e-2f));
    p = KN(fma)(p, r, KN(set1)(1.6666665459e-1f));
    p = KN(fma)(p, r, KN(set1)(5.0000001201e-1f));
    p = KN(fma)(p, r * r, r + one);
    VI bits = (ni + 127) << 23;
    return p * (VT)bits;
}

static inline VT KN(vsigm)(VT x)
{
    const VT one = KN(set1)(1.0f);
    return one / (one + KN(vexp)(-x));
}

static inline VT KN(vtanh)(VT x)
{
    const VT one = KN(set1)(1.0f);
    return one - (one + one) / (KN(vexp)(x + x) + one);
}

/* ---- packing --------------------------------------------------------------- */

static size_t KN(fwd_pack_floats)(int g, int h)
{
    size_t ub = (size_t)(h + VN - 1) / VN;
    return ub * (size_t)h * g * VN;
}

/* wp[ub][k][gate][l] = w_hh[gate·h + ub·VN + l][k] (0 past h). Reads
 * w_hh's rows in order; the writes of one (ub, gate) stay within h·G·VN
 * floats. */
static void KN(fwd_pack)(const float *w_hh, int g, int h, float *wp)
{
    const int nub = (h + VN - 1) / VN;
    for (int ub = 0; ub < nub; ub++)
        for (int q = 0; q < g; q++)
            for (int l = 0; l < VN; l++) {
                const int u = ub * VN + l;
                float *o = wp + ((size_t)ub * h * g + q) * VN + l;
                for (int k = 0; k < h; k++)
                    o[(size_t)k * g * VN] = u < h ? w_hh[((size_t)q * h + u) * h + k] : 0.0f;
            }
}

#define RNN_BW (RNN_NW_B * VN)

static size_t KN(bwd_pack_floats)(int g, int h)
{
    size_t np = (size_t)(h + RNN_BW - 1) / RNN_BW;
    return np * (size_t)g * h * RNN_BW;
}

/* wp[panel][k][l] = w_hh[k][panel·RNN_BW + l] (0 past h), k < g·h. */
static void KN(bwd_pack)(const float *w_hh, int g, int h, float *wp)
{
    const int np = (h + RNN_BW - 1) / RNN_BW, gh = g * h;
    for (int p = 0; p < np; p++)
        for (int k = 0; k < gh; k++) {
            float *o = wp + ((size_t)p * gh + k) * RNN_BW;
            for (int l = 0; l < RNN_BW; l++) {
                int u = p * RNN_BW + l;
                o[l] = u < h ? w_hh[(size_t)k * h + u] : 0.0f;
            }
        }
}

/* ---- forward ---------------------------------------------------------------- */

/* Rows b0 .. b0+mr of unit block ub: the product with the packed panel, then
 * each row's gates and new state. */
static inline __attribute__((always_inline)) void KN(fwd_tile)(const rnn_fwd *s, int b0,
                                                                const int mr, int ub, const int g)
{
    const int h = s->h, u0 = ub * VN, m = h - u0 < VN ? h - u0 : VN;
    const float *wp = s->wp + (size_t)ub * h * g * VN;
    VT acc[RNN_MR_F][4];
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < g; q++)
            acc[i][q] = KN(set1)(0.0f);
    const float *a[RNN_MR_F];
    for (int i = 0; i < mr; i++)
        a[i] = s->hp + (size_t)(b0 + i) * s->hp_ld;
    for (int k = 0; k < h; k++) {
        VT bv[4];
        for (int q = 0; q < g; q++)
            bv[q] = KN(ld)(wp + ((size_t)k * g + q) * VN);
        for (int i = 0; i < mr; i++) {
            VT av = KN(set1)(a[i][k]);
            for (int q = 0; q < g; q++)
                acc[i][q] = KN(fma)(av, bv[q], acc[i][q]);
        }
    }
    for (int i = 0; i < mr; i++) {
        const size_t b = (size_t)(b0 + i);
        float *gr = s->gates + b * s->g_ld + u0;
        const VT hp = KN(ld_n)(s->hp + b * s->hp_ld + u0, m);
        VT hv = hp, yv = KN(set1)(0.0f);
        if (g == 4) {
            const VT cp = KN(ld_n)(s->cp + b * s->cp_ld + u0, m);
            VT cv = cp, tcv = yv;
            if (s->live[b]) {
                VT iv = KN(vsigm)(acc[i][0] + KN(ld_n)(gr, m));
                VT fv = KN(vsigm)(acc[i][1] + KN(ld_n)(gr + h, m));
                VT gv = KN(vtanh)(acc[i][2] + KN(ld_n)(gr + 2 * h, m));
                VT ov = KN(vsigm)(acc[i][3] + KN(ld_n)(gr + 3 * h, m));
                KN(st_n)(gr, iv, m), KN(st_n)(gr + h, fv, m);
                KN(st_n)(gr + 2 * h, gv, m), KN(st_n)(gr + 3 * h, ov, m);
                cv = fv * cp + iv * gv;
                tcv = KN(vtanh)(cv);
                hv = yv = ov * tcv;
            }
            KN(st_n)(s->tc + b * s->tc_ld + u0, tcv, m);
            if (s->cn)
                KN(st_n)(s->cn + b * s->cn_ld + u0, cv, m);
        } else if (s->live[b]) {
            VT hq = acc[i][2];
            if (s->b_hn)
                hq = hq + KN(ld_n)(s->b_hn + u0, m);
            VT rv = KN(vsigm)(KN(ld_n)(gr, m) + acc[i][0]);
            VT zv = KN(vsigm)(KN(ld_n)(gr + h, m) + acc[i][1]);
            VT nv = KN(vtanh)(KN(ld_n)(gr + 2 * h, m) + rv * hq);
            KN(st_n)(gr, rv, m), KN(st_n)(gr + h, zv, m), KN(st_n)(gr + 2 * h, nv, m);
            KN(st_n)(s->hq + b * s->hq_ld + u0, hq, m);
            hv = yv = (KN(set1)(1.0f) - zv) * nv + zv * hp;
        }
        KN(st_n)(s->y + b * s->y_ld + u0, yv, m);
        if (s->hn)
            KN(st_n)(s->hn + b * s->hn_ld + u0, hv, m);
    }
}

/* Start loading the rows the epilogue of the tile at b0 reads (one row per
 * sequence, far apart in memory: too many streams for the hardware
 * prefetcher). */
static inline void KN(pf_row)(const float *p, size_t n, int w)
{
    for (size_t j = 0; p && j < n; j += 16)
        if (w)
            __builtin_prefetch(p + j, 1, 3);
        else
            __builtin_prefetch(p + j, 0, 3);
}

static inline void KN(fwd_prefetch)(const rnn_fwd *s, int b0, int g)
{
    const size_t h = (size_t)s->h;
    for (int b = b0; b < b0 + RNN_MR_F && b < s->n; b++) {
        KN(pf_row)(s->gates + (size_t)b * s->g_ld, (size_t)g * h, 1);
        KN(pf_row)(s->cp ? s->cp + (size_t)b * s->cp_ld : NULL, h, 0);
        KN(pf_row)(s->tc ? s->tc + (size_t)b * s->tc_ld : NULL, h, 1);
        KN(pf_row)(s->y + (size_t)b * s->y_ld, h, 1);
        KN(pf_row)(s->hn ? s->hn + (size_t)b * s->hn_ld : NULL, h, 1);
        KN(pf_row)(s->cn ? s->cn + (size_t)b * s->cn_ld : NULL, h, 1);
    }
}

/* Row tiles outer, unit blocks inner: a tile's rows of hp stay in L1 and
 * its epilogues walk each row in order. */
static void KN(fwd_rows)(const rnn_fwd *s, const int g)
{
    const int nub = (s->h + VN - 1) / VN;
    KN(fwd_prefetch)(s, 0, g);
    for (int b0 = 0; b0 < s->n; b0 += RNN_MR_F) {
        KN(fwd_prefetch)(s, b0 + RNN_MR_F, g);
        const int mr = s->n - b0 < RNN_MR_F ? s->n - b0 : RNN_MR_F;
        for (int ub = 0; ub < nub; ub++) {
            switch (mr) {
            case RNN_MR_F: KN(fwd_tile)(s, b0, RNN_MR_F, ub, g); break;
#if RNN_MR_F > 5
            case 5: KN(fwd_tile)(s, b0, 5, ub, g); break;
#endif
#if RNN_MR_F > 4
            case 4: KN(fwd_tile)(s, b0, 4, ub, g); break;
#endif
#if RNN_MR_F > 3
            case 3: KN(fwd_tile)(s, b0, 3, ub, g); break;
#endif
#if RNN_MR_F > 2
            case 2: KN(fwd_tile)(s, b0, 2, ub, g); break;
#endif
            default: KN(fwd_tile)(s, b0, 1, ub, g); break;
            }
        }
    }
}

static void KN(fwd_step)(const rnn_fwd *s)
{
    if (s->lstm)
        KN(fwd_rows)(s, 4);
    else
        KN(fwd_rows)(s, 3);
}

/* ---- backward --------------------------------------------------------------- */

/* Gate gradients of row b (live), and the direct part of dh before the
 * step (GRU: gh·z; LSTM: none) into dh_out. */
static void KN(bwd_gates)(const rnn_bwd *s, size_t b)
{
    const int h = s->h;
    const float *gr = s->gates + b * s->g_ld, *dhr = s->dh + b * h;
    const float *dyr = s->dy ? s->dy + b * s->dy_ld : NULL;
    float *pr = s->dp + b * s->dp_ld, *out = s->dh_out + b * h;
    const VT one = KN(set1)(1.0f);
    for (int u = 0; u < h; u += VN) {
        const int m = h - u < VN ? h - u : VN;
        VT gh = KN(ld_n)(dhr + u, m);
        if (dyr)
            gh = gh + KN(ld_n)(dyr + u, m);
        if (s->lstm) {
            VT iv = KN(ld_n)(gr + u, m), fv = KN(ld_n)(gr + h + u, m);
            VT gv = KN(ld_n)(gr + 2 * h + u, m), ov = KN(ld_n)(gr + 3 * h + u, m);
            VT th = KN(ld_n)(s->tc + b * s->tc_ld + u, m);
            VT cp = KN(ld_n)(s->cp + b * s->cp_ld + u, m);
            float *dcr = s->dc + b * h + u;
            VT dcj = KN(ld_n)(dcr, m) + gh * ov * (one - th * th);
            KN(st_n)(pr + u, dcj * gv * iv * (one - iv), m);
            KN(st_n)(pr + h + u, dcj * cp * fv * (one - fv), m);
            KN(st_n)(pr + 2 * h + u, dcj * iv * (one - gv * gv), m);
            KN(st_n)(pr + 3 * h + u, gh * th * ov * (one - ov), m);
            KN(st_n)(dcr, dcj * fv, m);
            KN(st_n)(out + u, KN(set1)(0.0f), m);
        } else {
            float *qr = s->dq + b * s->dq_ld;
            VT rv = KN(ld_n)(gr + u, m), zv = KN(ld_n)(gr + h + u, m);
            VT nv = KN(ld_n)(gr + 2 * h + u, m);
            VT hq = KN(ld_n)(s->hq + b * s->hq_ld + u, m);
            VT hp = KN(ld_n)(s->hp + b * s->hp_ld + u, m);
            VT da = gh * (one - zv) * (one - nv * nv);
            VT dr = da * hq * rv * (one - rv);
            VT dz = gh * (hp - nv) * zv * (one - zv);
            KN(st_n)(pr + u, dr, m), KN(st_n)(qr + u, dr, m);
            KN(st_n)(pr + h + u, dz, m), KN(st_n)(qr + h + u, dz, m);
            KN(st_n)(pr + 2 * h + u, da, m), KN(st_n)(qr + 2 * h + u, da * rv, m);
            KN(st_n)(out + u, gh * zv, m);
        }
    }
}

/* dh_out[b0 .. b0+mr][panel p] += dq rows · W (packed panel). */
static inline __attribute__((always_inline)) void KN(bwd_tile)(const rnn_bwd *s, int b0,
                                                                const int mr, int p, int gh)
{
    const int h = s->h, u0 = p * RNN_BW;
    const float *wp = s->wp + (size_t)p * gh * RNN_BW;
    VT acc[RNN_MR_B][RNN_NW_B];
    for (int i = 0; i < mr; i++)
        for (int w = 0; w < RNN_NW_B; w++)
            acc[i][w] = KN(set1)(0.0f);
    const float *a[RNN_MR_B];
    for (int i = 0; i < mr; i++)
        a[i] = s->dq + (size_t)(b0 + i) * s->dq_ld;
    for (int k = 0; k < gh; k++) {
        VT bv[RNN_NW_B];
        for (int w = 0; w < RNN_NW_B; w++)
            bv[w] = KN(ld)(wp + (size_t)k * RNN_BW + w * VN);
        for (int i = 0; i < mr; i++) {
            VT av = KN(set1)(a[i][k]);
            for (int w = 0; w < RNN_NW_B; w++)
                acc[i][w] = KN(fma)(av, bv[w], acc[i][w]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = s->dh_out + (size_t)(b0 + i) * h;
        for (int w = 0; w < RNN_NW_B; w++) {
            const int u = u0 + w * VN;
            if (u >= h)
                break;
            const int m = h - u < VN ? h - u : VN;
            KN(st_n)(o + u, KN(ld_n)(o + u, m) + acc[i][w], m);
        }
    }
}

static void KN(bwd_step)(const rnn_bwd *s)
{
    const int h = s->h, gh = (s->lstm ? 4 : 3) * h;
    for (int b = 0; b < s->n; b++) {
        /* Rows two sequences ahead (far apart: see fwd_prefetch). */
        if (b + 2 < s->n) {
            const size_t c = (size_t)b + 2;
            KN(pf_row)(s->gates + c * s->g_ld, (size_t)gh, 0);
            KN(pf_row)(s->dp + c * s->dp_ld, (size_t)gh, 1);
            KN(pf_row)(s->lstm ? s->tc + c * s->tc_ld : s->hq + c * s->hq_ld, (size_t)h, 0);
            KN(pf_row)(s->lstm ? s->cp + c * s->cp_ld : s->hp + c * s->hp_ld, (size_t)h, 0);
            KN(pf_row)(s->dy ? s->dy + c * s->dy_ld : NULL, (size_t)h, 0);
            if (!s->lstm)
                KN(pf_row)(s->dq + c * s->dq_ld, (size_t)gh, 1);
        }
        if (s->live[b]) {
            KN(bwd_gates)(s, (size_t)b);
        } else {
            /* A padded step: the state passed through unchanged. */
            memset(s->dp + (size_t)b * s->dp_ld, 0, (size_t)gh * sizeof(float));
            if (!s->lstm)
                memset(s->dq + (size_t)b * s->dq_ld, 0, (size_t)gh * sizeof(float));
            memcpy(s->dh_out + (size_t)b * h, s->dh + (size_t)b * h, (size_t)h * sizeof(float));
        }
    }
    const int np = (h + RNN_BW - 1) / RNN_BW;
    for (int p = 0; p < np; p++) {
        int b0 = 0;
        for (; b0 + RNN_MR_B <= s->n; b0 += RNN_MR_B)
            KN(bwd_tile)(s, b0, RNN_MR_B, p, gh);
        switch (s->n - b0) {
#if RNN_MR_B > 7
        case 7: KN(bwd_tile)(s, b0, 7, p, gh); break;
#endif
#if RNN_MR_B > 6
        case 6: KN(bwd_tile)(s, b0, 6, p, gh); break;
#endif
#if RNN_MR_B > 5
        case 5: KN(bwd_tile)(s, b0, 5, p, gh); break;
#endif
#if RNN_MR_B > 4
        case 4: KN(bwd_tile)(s, b0, 4, p, gh); break;
#endif
#if RNN_MR_B > 3
        case 3: KN(bwd_tile)(s, b0, 3, p, gh); break;
#endif
#if RNN_MR_B > 2
        case 2: KN(bwd_tile)(s, b0, 2, p, gh); break;
#endif
        case 1: KN(bwd_tile)(s, b0, 1, p, gh); break;
        default: break;
        }
    }
}

/* ---- weight gradient ------------------------------------------------------- */

#define RNN_KC 256 /* rows of dP and hprev per pass: hprev's panel stays in L2 */

/* dw[g0 .. g0+mr][u0 .. u0+RNN_BW) += Σ_{r in [r0, r1)} dp[r][g] · hp[r][u]
 * (ap: dp's columns g0 .. g0+mr of rows r0 .. r1, rows lda apart),
 * one fused multiply-add chain per element in row order (continued from
 * the value in dw, so the blocks of rows change nothing). */
static inline __attribute__((always_inline)) void KN(dw_tile)(const float *ap, int lda,
                                                               const float *hp, int h, float *dw,
                                                               size_t r0, size_t r1, int g0,
                                                               const int mr, int u0,
                                                               const int full)
{
    VT acc[RNN_MR_B][RNN_NW_B];
    const int nw = (h - u0 + VN - 1) / VN < RNN_NW_B ? (h - u0 + VN - 1) / VN : RNN_NW_B;
    for (int i = 0; i < mr; i++)
        for (int w = 0; w < RNN_NW_B; w++) {
            const int u = u0 + w * VN, m = h - u < VN ? h - u : VN;
            acc[i][w] = full ? KN(ld)(dw + (size_t)(g0 + i) * h + u)
                        : w < nw ? KN(ld_n)(dw + (size_t)(g0 + i) * h + u, m) : KN(set1)(0.0f);
        }
    for (size_t r = r0; r < r1; r++) {
        const float *a = ap + (r - r0) * lda, *b = hp + r * h + u0;
        VT bv[RNN_NW_B];
        for (int w = 0; w < RNN_NW_B; w++) {
            const int m = h - (u0 + w * VN) < VN ? h - (u0 + w * VN) : VN;
            bv[w] = full ? KN(ld)(b + w * VN) : w < nw ? KN(ld_n)(b + w * VN, m) : KN(set1)(0.0f);
        }
        for (int i = 0; i < mr; i++) {
            VT av = KN(set1)(a[i]);
            for (int w = 0; w < RNN_NW_B; w++)
                acc[i][w] = KN(fma)(av, bv[w], acc[i][w]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int w = 0; w < (full ? RNN_NW_B : nw); w++) {
            const int u = u0 + w * VN, m = h - u < VN ? h - u : VN;
            if (full)
                KN(st)(dw + (size_t)(g0 + i) * h + u, acc[i][w]);
            else
                KN(st_n)(dw + (size_t)(g0 + i) * h + u, acc[i][w], m);
        }
}

/* dw [gh][h] = dpᵀ [gh][s] · hp [s][h] (dw_hh over all steps). */
/* The column blocks of rows g0 .. g0+mr: the tile of dp (mr columns of
 * the block's rows), copied together (its rows are G·h floats apart, a
 * multiple of 4 KiB for the usual sizes: every row in one L1 set), stays
 * in L1 while hp's block streams from L2. */
static inline __attribute__((always_inline)) void KN(dw_cols)(const float *dp, int gh,
                                                               const float *hp, int h, float *dw,
                                                               size_t r0, size_t r1, int g0,
                                                               const int mr)
{
    float ap[RNN_KC * RNN_MR_B];
    for (size_t r = r0; r < r1; r++)
        for (int i = 0; i < mr; i++)
            ap[(r - r0) * mr + i] = dp[r * gh + g0 + i];
    int u0 = 0;
    for (; u0 + RNN_BW <= h; u0 += RNN_BW)
        KN(dw_tile)(ap, mr, hp, h, dw, r0, r1, g0, mr, u0, 1);
    if (u0 < h)
        KN(dw_tile)(ap, mr, hp, h, dw, r0, r1, g0, mr, u0, 0);
}

/* dw [gh][h] = dpᵀ [gh][s] · hp [s][h] (dw_hh over all steps). */
static void KN(dw)(const float *dp, size_t s, int gh, const float *hp, int h, float *dw)
{
    memset(dw, 0, (size_t)gh * h * sizeof *dw);
    for (size_t r0 = 0; r0 < s; r0 += RNN_KC) {
        const size_t r1 = s - r0 < RNN_KC ? s : r0 + RNN_KC;
        int g0 = 0;
        for (; g0 + RNN_MR_B <= gh; g0 += RNN_MR_B)
            KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, RNN_MR_B);
        switch (gh - g0) {
#if RNN_MR_B > 7
        case 7: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 7); break;
#endif
#if RNN_MR_B > 6
        case 6: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 6); break;
#endif
#if RNN_MR_B > 5
        case 5: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 5); break;
#endif
#if RNN_MR_B > 4
        case 4: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 4); break;
#endif
#if RNN_MR_B > 3
        case 3: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 3); break;
#endif
#if RNN_MR_B > 2
        case 2: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 2); break;
#endif
        case 1: KN(dw_cols)(dp, gh, hp, h, dw, r0, r1, g0, 1); break;
        default: break;
        }
    }
}

/* db[j] = Σ_r dp[r][j] in float64, in row order per column: the generic
 * colsum's sums exactly, 4·VN columns at a time. */
typedef double KN(vd) __attribute__((vector_size(VN * 4)));
typedef float KN(vh) __attribute__((vector_size(VN * 2)));

static void KN(colsum)(const float *dp, size_t s, int gh, float *db)
{
    enum { NB = 4 * VN, ND = 8 };
    int j0 = 0;
    for (; j0 + NB <= gh; j0 += NB) {
        KN(vd) acc[ND];
        for (int v = 0; v < ND; v++)
            acc[v] = (KN(vd)){0};
        for (size_t r = 0; r < s; r++) {
            const float *row = dp + r * gh + j0;
            for (int v = 0; v < ND; v++) {
                KN(vh) hv;
                memcpy(&hv, row + v * (VN / 2), sizeof hv);
                acc[v] += __builtin_convertvector(hv, KN(vd));
            }
        }
        for (int v = 0; v < ND; v++)
            for (int l = 0; l < VN / 2; l++)
                db[j0 + v * (VN / 2) + l] = (float)acc[v][l];
    }
    for (; j0 < gh; j0++) {
        double acc = 0.0;
        for (size_t r = 0; r < s; r++)
            acc += dp[r * gh + j0];
        db[j0] = (float)acc;
    }
}

static void KN(axpy)(float *out, const float *w, float v, int m)
{
    const VT vv = KN(set1)(v);
    int j = 0;
    for (; j + VN <= m; j += VN)
        KN(st)(out + j, KN(fma)(vv, KN(ld)(w + j), KN(ld)(out + j)));
    for (; j < m; j++)
        out[j] = __builtin_fmaf(v, w[j], out[j]);
}

const rnn_isa KN(dpt_rnn_isa) = {KN(fwd_pack_floats), KN(fwd_pack), KN(fwd_step),
                                 KN(bwd_pack_floats), KN(bwd_pack), KN(bwd_step), KN(dw),
                                 KN(colsum), KN(axpy)};
