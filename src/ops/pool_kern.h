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

const pool_isa KN(dpt_pool_isa) = {
    .row_pad = KN(row_pad),
    .deint2 = KN(deint2),
    .int2 = KN(int2),
    .max_row = KN(max_row),
    .avg_row = KN(avg_row),
    .scale_row = KN(scale_row),
    .add_row = KN(add_row),
    .add_argmax = KN(add_argmax),
};
