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
#define FWD_CB 5
#define FWD_NV 4
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
