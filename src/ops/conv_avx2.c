/* The direct convolution kernels of conv_kern.h for AVX2 + FMA (16 registers
 * of 8 floats). Compiled for AVX2 whatever the build's -march; called only
 * when the CPU has it (kernels.c). */
#include "ops/conv_direct.h"

#ifdef DPT_HAVE_X86_KERNELS
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include <immintrin.h>
#include <string.h>

#define VEC __m256
#define VW 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
/* Forward: 5 channels x 2 vectors = 10 accumulators + 2 inputs + 1 weight. */
/* Lane masks from ranges: lane l is on when lo <= l < hi. */
static inline __m256i range_mask(int lo, int hi)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(lo), idx),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), idx));
}
#define VSTORE_RANGE(p, v, lo, hi) _mm256_maskstore_ps((p), range_mask((lo), (hi)), (v))
#define VLOAD_RANGE(p, lo, hi) _mm256_maskload_ps((p), range_mask((lo), (hi)))
#define VLOAD_N(p, n) _mm256_maskload_ps((p), range_mask(0, (n)))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}
#define VHSUM(v) hsum_avx2(v)
#define VMUL(a, b) _mm256_mul_ps((a), (b))
/* v where z > 0, else 0 */
#define VKEEPGT0(v, z, zero) _mm256_and_ps((v), _mm256_cmp_ps((z), (zero), _CMP_GT_OQ))
#define VKEEP2(v, hi_a, lo_b, hi_b)                                                        \
    _mm256_and_ps((v), _mm256_castsi256_ps(_mm256_or_si256(range_mask(0, (hi_a)),           \
                                                           range_mask((lo_b), (hi_b)))))
#define VSTORE_MAP_A(p, v, e) VSTORE_RANGE((p), (v), 0, (e).hi_a)
#define VSTORE_MAP_B(p, v, e) VSTORE_RANGE((p), (v), (e).lo_b, (e).hi_b)
#define VLOAD_MAP_A(p, e) VLOAD_RANGE((p), 0, (e).hi_a)
#define VLOAD_MAP_B(p, e) VLOAD_RANGE((p), (e).lo_b, (e).hi_b)
#define VKEEP_MAP(v, e) VKEEP2((v), (e).hi_a, (e).lo_b, (e).hi_b)
/* The gradient at two rows (r0: even, r1: odd) of a 2x2 stride-2 max
 * pool's input from a row of the pool's gradient (conv_kern.h's
 * pad_bnback_pool): lane l of r0 gets pg[l / 2] where the window's tap
 * pi[l / 2] is l & 1, of r1 where it is 2 + (l & 1); +0 elsewhere and for
 * l / 2 >= n2. pi is read 4 bytes at a time (the pool's idx has slack past
 * its end). */
static inline void pool_g2_avx2(const float *pg, const unsigned char *pi, int n2, __m256 *r0,
                                __m256 *r1)
{
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256i par = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
    int b;
    memcpy(&b, pi, sizeof b);
    const __m256i t = _mm256_permutevar8x32_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi32_si128(b)), dup);
    const __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32(n2), dup);
    const __m128 g4 = n2 == 4 ? _mm_loadu_ps(pg)
                              : _mm_maskload_ps(pg, _mm_cmpgt_epi32(_mm_set1_epi32(n2),
                                                                    _mm_setr_epi32(0, 1, 2, 3)));
    const __m256 g = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(g4), dup);
    const __m256i h0 = _mm256_and_si256(in, _mm256_cmpeq_epi32(t, par));
    const __m256i h1 =
        _mm256_and_si256(in, _mm256_cmpeq_epi32(t, _mm256_add_epi32(par, _mm256_set1_epi32(2))));
    *r0 = _mm256_and_ps(g, _mm256_castsi256_ps(h0));
    *r1 = _mm256_and_ps(g, _mm256_castsi256_ps(h1));
}
#define VPOOL_G2(pg, pi, n2, r0, r1) pool_g2_avx2((pg), (pi), (n2), &(r0), &(r1))
/* Even and odd lanes of the 16 floats (a, b): within 128-bit halves, then
 * the 64-bit pairs put in order. */
#define VDEINT(a, b, ev, od)                                                                   \
    do {                                                                                       \
        (ev) = _mm256_castpd_ps(_mm256_permute4x64_pd(                                         \
            _mm256_castps_pd(_mm256_shuffle_ps((a), (b), 0x88)), 0xD8));                       \
        (od) = _mm256_castpd_ps(_mm256_permute4x64_pd(                                         \
            _mm256_castps_pd(_mm256_shuffle_ps((a), (b), 0xDD)), 0xD8));                       \
    } while (0)
/* Lanes of e and o alternating: pairs within 128-bit halves, then the
 * halves put in order. */
#define VINTER(e, o, lo, hi)                                                                   \
    do {                                                                                       \
        const __m256 t0_ = _mm256_unpacklo_ps((e), (o)), t1_ = _mm256_unpackhi_ps((e), (o));    \
        (lo) = _mm256_permute2f128_ps(t0_, t1_, 0x20);                                         \
        (hi) = _mm256_permute2f128_ps(t0_, t1_, 0x31);                                         \
    } while (0)
#define FWD_CB 5
#define FWD_NV 2
/* Weight gradient: 2 channels x 5 taps = 10 accumulators + 2 + 1. */
#define DW_CB 2
#define DW_KB 5
#define KERN(name) name##_avx2
#define ISA_NAME "avx2"
#include "ops/conv_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif
