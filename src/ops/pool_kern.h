/* Row kernels of max and average pooling (pool.c), written once with GCC
 * vector extensions: the includer defines VN, VT, VI, KN(f), KN(loadn) and
 * KN(storen) as for conv_dw_kern.h. One vector holds VN outputs of a row;
 * each output's taps are visited in pool.c's scan order, so every lane
 * computes exactly the float operations of the scalar code (padding taps
 * are -inf for max and −0 for sums: identities, so the values and the
 * chosen maxima are the same bits). */
#include "ops/vec_lanes.h"
#include "ops/pool_isa.h"

static void KN(row_pad)(const float *src, int n, float pv, int left, int total, float *dst)
{
    for (int j = 0; j < left; j++)
        dst[j] = pv;
    int j = 0;
    for (; j + VN <= n; j += VN)
        KN(vstore)(dst + left + j, KN(vload)(src + j));
    if (j < n)
        KN(storen)(dst + left + j, KN(loadn)(src + j, n - j), n - j);
    for (int k = left + n; k < total; k++)
        dst[k] = pv;
}

static void KN(max_row)(const float *const *tap, const int *tidx, int nt, int n, int sw, int pw,
                        int first, float *y, int *idx)
{
    VI lane;
    for (int l = 0; l < VN; l++)
        lane[l] = l;
    const VT ninf = KN(vset1)(-__builtin_inff());
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        VT m = ninf;
        const VI ox_sw = (lane + o) * sw;
        VI x0 = ox_sw - pw;
        x0 = x0 & (x0 > 0); /* max(0, ·): the comparison gives all ones */
        VI best = x0 + first;
        for (int t = 0; t < nt; t++) {
            const VT v = KN(vload)(tap[t] + o);
            const VI take = (v > m) | (v != v);
            m = (VT)(((VI)v & take) | ((VI)m & ~take));
            if (idx)
                best = ((ox_sw + tidx[t]) & take) | (best & ~take);
        }
        if (k == VN)
            KN(vstore)(y + o, m);
        else
            KN(storen)(y + o, m, k);
        if (idx) /* the whole vector (idx holds n rounded up): one store */
            memcpy(idx + o, &best, sizeof best);
    }
}

static void KN(avg_row)(const float *const *tap, int nt, int n, float inv, float *y)
{
    const VT iv = KN(vset1)(inv);
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        VT s = KN(vset1)(0.0f);
        for (int t = 0; t < nt; t++)
            s = s + KN(vload)(tap[t] + o);
        s = s * iv;
        if (k == VN)
            KN(vstore)(y + o, s);
        else
            KN(storen)(y + o, s, k);
    }
}

static void KN(scale_row)(const float *g, int n, float inv, float *dst)
{
    const VT iv = KN(vset1)(inv);
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        if (k == VN)
            KN(vstore)(dst + o, KN(vload)(g + o) * iv);
        else
            KN(storen)(dst + o, KN(loadn)(g + o, k) * iv, k);
    }
}

static void KN(add_row)(float *dst, const float *g, int n)
{
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        if (k == VN)
            KN(vstore)(dst + o, KN(vload)(dst + o) + KN(vload)(g + o));
        else
            KN(storen)(dst + o, KN(loadn)(dst + o, k) + KN(loadn)(g + o, k), k);
    }
}

static void KN(add_argmax)(float *dst, const float *g, const int *best, int tidx, int sw, int n)
{
    VI lane;
    for (int l = 0; l < VN; l++)
        lane[l] = l;
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        VI b;
        memcpy(&b, best + o, sizeof b); /* lanes past n: junk, not stored */
        const VI hit = b == (lane + o) * sw + tidx;
        if (k == VN)
            KN(vstore)(dst + o, KN(vload)(dst + o) + KN(keep)(KN(vload)(g + o), hit));
        else
            KN(storen)(dst + o, KN(loadn)(dst + o, k) + KN(keep)(KN(loadn)(g + o, k), hit), k);
    }
}

/* ---- 2x2 windows, stride 2, no padding (the residual nets' pooling) ---- */

/* The taps of a vector of outputs o.. (k of them) from input row r: its
 * even and odd columns 2ox and 2ox + 1. */
static inline void KN(pair_load)(const float *r, int o, int k, VT *e, VT *od)
{
    VT a, b;
    if (k == VN) {
        a = KN(vload)(r + 2 * o), b = KN(vload)(r + 2 * o + VN);
    } else {
        a = KN(loadn)(r + 2 * o, 2 * k < VN ? 2 * k : VN);
        b = 2 * k > VN ? KN(loadn)(r + 2 * o + VN, 2 * k - VN) : KN(vset1)(0.0f);
    }
    *e = __builtin_shufflevector(a, b, DW_EVEN);
    *od = __builtin_shufflevector(a, b, DW_ODD);
}

/* One step of window_argmax's scan: v takes over m when v > m or v is a
 * NaN; the lanes that took are all ones. */
static inline VI KN(take)(VT v, VT m) { return (VI)(v > m) | (VI)(v != v); }

static inline VT KN(pick)(VI t, VT a, VT b) { return (VT)(((VI)a & t) | ((VI)b & ~t)); }

/* z = (v − m)·sc + sh, ReLU'd when relu: bn_kern.h's normalize, the
 * same float expression. */
static inline VT KN(bn_z)(VT v, const float *bn, int relu)
{
    const VT z = (v - KN(vset1)(bn[0])) * KN(vset1)(bn[1]) + KN(vset1)(bn[2]);
    return relu ? KN(keep)(z, z > KN(vset1)(0.0f)) : z;
}

/* bn: NULL, or {mean, scale, shift} of a batch norm applied to the input
 * first (relu: and a ReLU); xv (NULL: not wanted): the input value (before
 * the batch norm) at the tap taken, for the backward's batch-norm sums.
 * Inlined into the entries, which pass constants. */
static inline __attribute__((always_inline)) void
KN(max2_core)(const float *r0, const float *r1, int n, float *y, unsigned char *idx,
              const float *bn, int relu, float *xv)
{
    typedef unsigned char vu8 __attribute__((vector_size(VN)));
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        VT a, b, c, d;
        KN(pair_load)(r0, o, k, &a, &b);
        KN(pair_load)(r1, o, k, &c, &d);
        const VT ra = a, rb = b, rc = c, rd = d;
        if (bn) {
            a = KN(bn_z)(a, bn, relu), b = KN(bn_z)(b, bn, relu);
            c = KN(bn_z)(c, bn, relu), d = KN(bn_z)(d, bn, relu);
        }
        /* The scan a, b, c, d grouped as (a, b), (c, d): the take rule is
         * associative (the first maximum, or the last NaN, wins either
         * way), so the value and the tap are the sequential scan's. */
        const VI t1 = KN(take)(b, a), t2 = KN(take)(d, c);
        const VT h0 = KN(pick)(t1, b, a), h1 = KN(pick)(t2, d, c);
        const VI t3 = KN(take)(h1, h0);
        const VT m = KN(pick)(t3, h1, h0);
        if (k == VN)
            KN(vstore)(y + o, m);
        else
            KN(storen)(y + o, m, k);
        if (xv) {
            const VT x0 = KN(pick)(t1, rb, ra), x1 = KN(pick)(t2, rd, rc);
            const VT xm = KN(pick)(t3, x1, x0);
            if (k == VN)
                KN(vstore)(xv + o, xm);
            else
                KN(storen)(xv + o, xm, k);
        }
        if (idx) {
            const VI i0 = t1 & 1, i1 = (t2 & 1) + 2;
            const vu8 t = __builtin_convertvector((i1 & t3) | (i0 & ~t3), vu8);
            /* Always the whole vector (a constant size: one store, not a
             * call): idx has slack past the row, and a later row
             * overwrites what lands in its place. */
            memcpy(idx + o, &t, sizeof t);
        }
    }
}

static void KN(max2_row)(const float *r0, const float *r1, int n, float *y, unsigned char *idx)
{
    KN(max2_core)(r0, r1, n, y, idx, NULL, 0, NULL);
}

/* A plane's rows in one call (rows of n outputs from input rows w apart):
 * a call per row cost about as much as the row itself on the stems' 14-
 * and 16-wide rows. */
static inline __attribute__((always_inline)) void KN(max2_rows_core)(
    const float *r0, int w, int rows, int n, const float *bn, int relu, float *y,
    unsigned char *idx, float *xv)
{
    for (int oy = 0; oy < rows; oy++) {
        const float *r = r0 + (size_t)2 * oy * w;
        const size_t o = (size_t)oy * n;
        KN(max2_core)(r, r + w, n, y + o, idx ? idx + o : NULL, bn, relu, xv ? xv + o : NULL);
    }
}

static void KN(max2_rows_bn)(const float *r0, int w, int rows, int n, const float *bn, int relu,
                             float *y, unsigned char *idx, float *xv)
{
    if (xv) {
        if (relu)
            KN(max2_rows_core)(r0, w, rows, n, bn, 1, y, idx, xv);
        else
            KN(max2_rows_core)(r0, w, rows, n, bn, 0, y, idx, xv);
    } else if (relu) {
        KN(max2_rows_core)(r0, w, rows, n, bn, 1, y, idx, NULL);
    } else {
        KN(max2_rows_core)(r0, w, rows, n, bn, 0, y, idx, NULL);
    }
}

static inline __attribute__((always_inline)) void
KN(max2_back_core)(const float *g, const unsigned char *idx, int n, float *d0, float *d1,
                   const float *xv, const float *bn, int relu, float *st, const int write)
{
    typedef unsigned char vu8 __attribute__((vector_size(VN)));
    const VT zero = KN(vset1)(0.0f);
    VT s1 = zero, s2 = zero;
    for (int o = 0; o < n; o += VN) {
        const int k = n - o < VN ? n - o : VN;
        vu8 t; /* lanes past n: junk, not stored */
        memcpy(&t, idx + o, sizeof t);
        const VI iv = __builtin_convertvector(t, VI);
        /* The reference's +0 += g: g + 0 (a −0 becomes +0). */
        const VT gz = (k == VN ? KN(vload)(g + o) : KN(loadn)(g + o, k)) + zero;
        if (xv) {
            /* The batch norm's backward sums over the window maxima only:
             * everywhere else the gradient is 0 and adds nothing. g is
             * masked by the ReLU as plane_backward_sums does (lanes past
             * n load as 0). */
            const VT xc = (k == VN ? KN(vload)(xv + o) : KN(loadn)(xv + o, k)) - KN(vset1)(bn[0]);
            VT gm = gz;
            if (relu)
                gm = KN(keep)(gm, xc * KN(vset1)(bn[1]) + KN(vset1)(bn[2]) > zero);
            s1 += gm;
            s2 += gm * xc;
        }
        if (!write)
            continue;
        const VT a = KN(keep)(gz, iv == 0), b = KN(keep)(gz, iv == 1);
        const VT c = KN(keep)(gz, iv == 2), d = KN(keep)(gz, iv == 3);
        const VT lo0 = __builtin_shufflevector(a, b, DW_ILO);
        const VT hi0 = __builtin_shufflevector(a, b, DW_IHI);
        const VT lo1 = __builtin_shufflevector(c, d, DW_ILO);
        const VT hi1 = __builtin_shufflevector(c, d, DW_IHI);
        if (k == VN) {
            KN(vstore)(d0 + 2 * o, lo0), KN(vstore)(d0 + 2 * o + VN, hi0);
            KN(vstore)(d1 + 2 * o, lo1), KN(vstore)(d1 + 2 * o + VN, hi1);
        } else {
            const int k0 = 2 * k < VN ? 2 * k : VN;
            KN(storen)(d0 + 2 * o, lo0, k0), KN(storen)(d1 + 2 * o, lo1, k0);
            if (2 * k > VN) {
                KN(storen)(d0 + 2 * o + VN, hi0, 2 * k - VN);
                KN(storen)(d1 + 2 * o + VN, hi1, 2 * k - VN);
            }
        }
    }
    if (xv) {
        KN(vstore)(st, KN(vload)(st) + s1);
        KN(vstore)(st + VN, KN(vload)(st + VN) + s2);
    }
}

static void KN(max2_back_row)(const float *g, const unsigned char *idx, int n, float *d0, float *d1)
{
    KN(max2_back_core)(g, idx, n, d0, d1, NULL, NULL, 0, NULL, 1);
}

/* The rows of a plane (dp: its dx, rows w apart; NULL: the sums only);
 * st gets each row's sums in turn, as a call per row added them. */
static inline __attribute__((always_inline)) void KN(max2_back_rows_core)(
    const float *g, const unsigned char *idx, const float *xv, int rows, int n, const float *bn,
    int relu, float *dp, int w, float *st, const int write)
{
    for (int oy = 0; oy < rows; oy++) {
        const size_t o = (size_t)oy * n;
        float *d0 = write ? dp + (size_t)2 * oy * w : NULL;
        KN(max2_back_core)(g + o, idx + o, n, d0, write ? d0 + w : NULL, xv + o, bn, relu, st,
                           write);
    }
}

static void KN(max2_back_rows_bn)(const float *g, const unsigned char *idx, const float *xv,
                                  int rows, int n, const float *bn, int relu, float *dp, int w,
                                  float *st)
{
    if (!dp) /* the sums only */
        KN(max2_back_rows_core)(g, idx, xv, rows, n, bn, relu, NULL, w, st, 0);
    else if (relu)
        KN(max2_back_rows_core)(g, idx, xv, rows, n, bn, 1, dp, w, st, 1);
    else
        KN(max2_back_rows_core)(g, idx, xv, rows, n, bn, 0, dp, w, st, 1);
}

const pool_isa KN(dpt_pool_isa) = {
    .vn = VN,
    .row_pad = KN(row_pad),
    .deint2 = KN(deint2),
    .int2 = KN(int2),
    .max_row = KN(max_row),
    .avg_row = KN(avg_row),
    .scale_row = KN(scale_row),
    .add_row = KN(add_row),
    .add_argmax = KN(add_argmax),
    .max2_row = KN(max2_row),
    .max2_rows_bn = KN(max2_rows_bn),
    .max2_back_row = KN(max2_back_row),
    .max2_back_rows_bn = KN(max2_back_rows_bn),
};
