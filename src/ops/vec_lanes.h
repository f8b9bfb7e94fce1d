/* Vector helpers shared by the per-plane kernels written with GCC vector
 * extensions (bn_kern.h, conv_dw_kern.h, pool_kern.h), once per translation
 * unit: the includer defines VN, VT, VI and KN(f) first (see bn_kern.h). */
#ifndef DPT_OPS_VEC_LANES_H
#define DPT_OPS_VEC_LANES_H

#include <stddef.h>
#include <string.h>

static inline VT KN(vload)(const float *p)
{
    VT v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void KN(vstore)(float *p, VT v) { memcpy(p, &v, sizeof v); }

/* Broadcast. Written as x − 0 (exact for every x, −0 included) because a
 * lane-by-lane loop, once inlined into a loop, becomes one masked insert
 * per lane instead of one broadcast. */
static inline VT KN(vset1)(float x)
{
    const VT zero = {0};
    return x - zero;
}

static inline double KN(vsum)(VT v)
{
    double s = 0.0;
    for (int l = 0; l < VN; l++)
        s += v[l];
    return s;
}

/* v where keep is all ones, else 0. */
static inline VT KN(keep)(VT v, VI keep) { return (VT)((VI)v & keep); }

/* Lane indices of the two-vector shuffles: even / odd lanes of the pair
 * (a, b) (deinterleave), and the low / high halves of a, b interleaved. */
#if VN == 4
#define DW_EVEN 0, 2, 4, 6
#define DW_ODD 1, 3, 5, 7
#define DW_ILO 0, 4, 1, 5
#define DW_IHI 2, 6, 3, 7
#elif VN == 8
#define DW_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#define DW_ODD 1, 3, 5, 7, 9, 11, 13, 15
#define DW_ILO 0, 8, 1, 9, 2, 10, 3, 11
#define DW_IHI 4, 12, 5, 13, 6, 14, 7, 15
#elif VN == 16
#define DW_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define DW_ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define DW_ILO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define DW_IHI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#else
#error "conv_dw_kern.h: VN must be 4, 8 or 16"
#endif

/* even[c] = z[2c], odd[c] = z[2c + 1] for c < n rounded up to VN (z
 * readable that far): a padded input row split into its two column phases
 * for a stride-2 convolution. */
static inline void KN(deint2)(const float *z, int n, float *even, float *odd)
{
    for (int c = 0; c < n; c += VN) {
        const VT a = KN(vload)(z + 2 * c), b = KN(vload)(z + 2 * c + VN);
        KN(vstore)(even + c, __builtin_shufflevector(a, b, DW_EVEN));
        KN(vstore)(odd + c, __builtin_shufflevector(a, b, DW_ODD));
    }
}

/* z[2c] = even[c], z[2c + 1] = odd[c]: the inverse, for c < n rounded up. */
static inline void KN(int2)(const float *even, const float *odd, int n, float *z)
{
    for (int c = 0; c < n; c += VN) {
        const VT a = KN(vload)(even + c), b = KN(vload)(odd + c);
        KN(vstore)(z + 2 * c, __builtin_shufflevector(a, b, DW_ILO));
        KN(vstore)(z + 2 * c + VN, __builtin_shufflevector(a, b, DW_IHI));
    }
}

#endif
