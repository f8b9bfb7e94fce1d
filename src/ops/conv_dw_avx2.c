/* The depthwise convolution passes (conv_dw_kern.h) and the pooling rows
 * (pool_kern.h, sharing their vector helpers) for avx2 + fma (8-float
 * vectors). Compiled for avx2 whatever the build's -march; used only when
 * the CPU has it (conv_depthwise.c asks kernels.c which set is in use). */
#include "ops/conv_depthwise.h"

#ifdef DPT_HAVE_DW_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include <immintrin.h>

typedef float vt_dw256 __attribute__((vector_size(8 * 4)));
typedef int vi_dw256 __attribute__((vector_size(8 * 4)));
#define VN 8
#define VT vt_dw256
#define VI vi_dw256
#define KN(f) f##_avx2
/* 8 accumulators of the 16 registers. */
#define DW_NV 8

static inline VT KN(fma)(VT a, VT b, VT c)
{
    return (VT)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}

/* Lanes [0, n) on. */
static inline __m256i KN(lanes)(int n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

static inline VT KN(loadn)(const float *p, int n)
{
    return (VT)_mm256_maskload_ps(p, KN(lanes)(n));
}

static inline void KN(storen)(float *p, VT v, int n)
{
    _mm256_maskstore_ps(p, KN(lanes)(n), (__m256)v);
}

#include "ops/conv_dw_kern.h"
#include "ops/pool_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
