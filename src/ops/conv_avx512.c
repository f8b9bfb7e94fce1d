/* The direct convolution kernels of conv_kern.h for AVX-512 (32 registers of
 * 16 floats). Compiled for AVX-512F whatever the build's -march; called only
 * when the CPU has it (kernels.c). */
#include "ops/conv_direct.h"

#ifdef DPT_HAVE_X86_KERNELS
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#endif
#include <immintrin.h>
#include <string.h>

#define VEC __m512
#define VW 16
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm512_add_ps((a), (b))
/* Forward: 5 channels x 4 vectors = 20 accumulators + 4 inputs + 1 weight. */
#define VSTORE_RANGE(p, v, lo, hi) \
    _mm512_mask_storeu_ps((p), (__mmask16)(((1u << (hi)) - 1u) & ~((1u << (lo)) - 1u)), (v))
#define VLOAD_RANGE(p, lo, hi) \
    _mm512_maskz_loadu_ps((__mmask16)(((1u << (hi)) - 1u) & ~((1u << (lo)) - 1u)), (p))
#define VLOAD_N(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (p))
#define VSUB(a, b) _mm512_sub_ps((a), (b))
#define VHSUM(v) _mm512_reduce_add_ps(v)
#define VMUL(a, b) _mm512_mul_ps((a), (b))
/* v where z > 0, else 0 */
#define VKEEPGT0(v, z, zero) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((z), (zero), _CMP_GT_OQ), (v))
#define VKEEP2(v, hi_a, lo_b, hi_b)                                                     \
    _mm512_maskz_mov_ps((__mmask16)((((1u << (hi_a)) - 1u)) |                           \
                                    (((1u << (hi_b)) - 1u) & ~((1u << (lo_b)) - 1u))), \
                        (v))
#define VSTORE_MAP_A(p, v, e) _mm512_mask_storeu_ps((p), (__mmask16)(e).bits_a, (v))
#define VSTORE_MAP_B(p, v, e) _mm512_mask_storeu_ps((p), (__mmask16)(e).bits_b, (v))
#define VLOAD_MAP_A(p, e) _mm512_maskz_loadu_ps((__mmask16)(e).bits_a, (p))
#define VLOAD_MAP_B(p, e) _mm512_maskz_loadu_ps((__mmask16)(e).bits_b, (p))
#define VKEEP_MAP(v, e) _mm512_maskz_mov_ps((__mmask16)((e).bits_a | (e).bits_b), (v))
/* Even and odd lanes of the 32 floats (a, b). */
#define VDEINT(a, b, ev, od)                                                                   \
    do {                                                                                       \
        const __m512i ie_ = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,   \
                                              26, 28, 30);                                     \
        const __m512i io_ = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,   \
                                              27, 29, 31);                                     \
        (ev) = _mm512_permutex2var_ps((a), ie_, (b));                                          \
        (od) = _mm512_permutex2var_ps((a), io_, (b));                                          \
    } while (0)
/* The gradient at two rows (r0: even, r1: odd) of a 2x2 stride-2 max
 * pool's input from a row of the pool's gradient (conv_kern.h's
 * pad_bnback_pool): lane l of r0 gets pg[l / 2] where the window's tap
 * pi[l / 2] is l & 1, of r1 where it is 2 + (l & 1); +0 elsewhere and for
 * l / 2 >= n2. pi is read 8 bytes at a time (the pool's idx has slack past
 * its end). */
static inline void pool_g2_avx512(const float *pg, const unsigned char *pi, int n2, __m512 *r0,
                                  __m512 *r1)
{
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i par = _mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1);
    long long b;
    memcpy(&b, pi, sizeof b);
    const __m512i t = _mm512_permutexvar_epi32(dup, _mm512_cvtepu8_epi32(_mm_cvtsi64_si128(b)));
    const __mmask16 in = (__mmask16)((1u << (2 * n2)) - 1u);
    const __m512 g = _mm512_permutexvar_ps(
        dup, n2 == 8 ? _mm512_castps256_ps512(_mm256_loadu_ps(pg))
                     : _mm512_maskz_loadu_ps((__mmask16)((1u << n2) - 1u), pg));
    *r0 = _mm512_maskz_mov_ps(in & _mm512_cmpeq_epi32_mask(t, par), g);
    const __m512i par1 = _mm512_add_epi32(par, _mm512_set1_epi32(2)); /* r1's taps: 2, 3 */
    *r1 = _mm512_maskz_mov_ps(in & _mm512_cmpeq_epi32_mask(t, par1), g);
}
#define VPOOL_G2(pg, pi, n2, r0, r1) pool_g2_avx512((pg), (pi), (n2), &(r0), &(r1))
/* Lanes of e and o alternating: e0 o0 e1 o1 ... (lo: lanes 0-7 of each). */
#define VINTER(e, o, lo, hi)                                                                   \
    do {                                                                                       \
        const __m512i il_ = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, \
                                              7, 23);                                          \
        const __m512i ih_ = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29,    \
                                              14, 30, 15, 31);                                 \
        (lo) = _mm512_permutex2var_ps((e), il_, (o));                                          \
        (hi) = _mm512_permutex2var_ps((e), ih_, (o));                                          \
    } while (0)
#define FWD_CB 5
#define FWD_NV 4
/* pp[c·ks + j] += the sum of the lanes of acc[c][j] (4 channels x 5 taps,
 * conv_kern.h's reduced weight gradient): the 16 sums of taps 0-3 by a
 * transposing tree (45 instructions where 16 separate reductions take
 * about 150: the reduction was a third of a 4x4x256 layer's weight
 * gradient), tap 4's by a second, shorter one. A fixed order of additions:
 * deterministic. */
static inline void dw_flush4x5(const __m512 acc[4][5], float *pp, size_t ks)
{
    /* Level 1: a pair (a, b) -> 128-bit blocks [a0+a2, a1+a3, b0+b2, b1+b3]. */
#define PAIR(a, b)                                                   \
    _mm512_add_ps(_mm512_shuffle_f32x4((a), (b), 0x44),              \
                  _mm512_shuffle_f32x4((a), (b), 0xEE))
    /* Level 2: two pairs -> one block of 4 partial sums per vector. */
#define QUAD(s, t)                                                   \
    _mm512_add_ps(_mm512_shuffle_f32x4((s), (t), 0x88),              \
                  _mm512_shuffle_f32x4((s), (t), 0xDD))
    /* T_j: block c holds 4 partial sums of acc[c][j]. */
    __m512 t[5];
    for (int j = 0; j < 5; j++)
        t[j] = QUAD(PAIR(acc[0][j], acc[1][j]), PAIR(acc[2][j], acc[3][j]));
#undef PAIR
#undef QUAD
    /* Level 3 on t[0..3]: block c of r = the sums of acc[c][0..3]. */
    __m512 w0 = _mm512_add_ps(_mm512_unpacklo_ps(t[0], t[1]), _mm512_unpackhi_ps(t[0], t[1]));
    __m512 w1 = _mm512_add_ps(_mm512_unpacklo_ps(t[2], t[3]), _mm512_unpackhi_ps(t[2], t[3]));
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w0, w1, 0x44), _mm512_shuffle_ps(w0, w1, 0xEE));
    /* t[4]: every lane of block c = the sum of acc[c][4]. */
    __m512 u = _mm512_add_ps(t[4], _mm512_shuffle_ps(t[4], t[4], 0x4E));
    u = _mm512_add_ps(u, _mm512_shuffle_ps(u, u, 0xB1));
    float s4[16];
    _mm512_storeu_ps(s4, u);
    __m128 rc[4] = {_mm512_extractf32x4_ps(r, 0), _mm512_extractf32x4_ps(r, 1),
                    _mm512_extractf32x4_ps(r, 2), _mm512_extractf32x4_ps(r, 3)};
    for (int c = 0; c < 4; c++) {
        float *q = pp + (size_t)c * ks;
        _mm_storeu_ps(q, _mm_add_ps(_mm_loadu_ps(q), rc[c]));
        q[4] += s4[4 * c];
    }
}
#define DW_FLUSH_REDUCED(acc, pp, ks) dw_flush4x5((acc), (pp), (ks))
/* Weight gradient: 4 channels x 5 taps = 20 accumulators + 4 + 1. */
#define DW_CB 4
#define DW_KB 5
#define KERN(name) name##_avx512
#define ISA_NAME "avx512"
#include "ops/conv_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif
