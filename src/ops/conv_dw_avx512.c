/* The depthwise convolution passes (conv_dw_kern.h) and the pooling rows
 * (pool_kern.h, sharing their vector helpers) for avx512 (16-float
 * vectors, masked loads and stores for row tails). Compiled for avx512
 * whatever the build's -march; used only when the CPU has it
 * (conv_depthwise.c asks kernels.c which set is in use). */
#include "ops/conv_depthwise.h"

#ifdef DPT_HAVE_DW_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#endif
#include <immintrin.h>

typedef float vt_dw512 __attribute__((vector_size(16 * 4)));
typedef int vi_dw512 __attribute__((vector_size(16 * 4)));
#define VN 16
#define VT vt_dw512
#define VI vi_dw512
#define KN(f) f##_avx512
/* 8 accumulators: two FMA pipes of latency 4. */
#define DW_NV 8

static inline VT KN(fma)(VT a, VT b, VT c)
{
    return (VT)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}

static inline VT KN(loadn)(const float *p, int n)
{
    return (VT)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}

static inline void KN(storen)(float *p, VT v, int n)
{
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v);
}

/* valignd: a three-operand shift (the generic shuffle becomes vpermt2ps,
 * which overwrites a source and costs a register copy per shift). */
#define DW_SHIFT(lo, hi, k)                                                                 \
    ((VT)_mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512((__m512)(hi)),            \
                                                 _mm512_castps_si512((__m512)(lo)), k)))

#include "ops/conv_dw_kern.h"
#include "ops/pool_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
