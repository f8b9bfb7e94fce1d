/* dptrain's GEMM (gemm_kern.h) for avx2 (8-float vectors): an
 * MR × NR = 6 × 16 tile of C in registers. Compiled for avx2 whatever
 * the build's -march; used only when the CPU has it (gemm.c asks
 * dpt_ops_kernels()). */
#include "ops/gemm.h"

#include <string.h>

#ifdef DPT_HAVE_GEMM_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include <immintrin.h>

typedef float vt_avx2 __attribute__((vector_size(8 * 4)));
#define VN 8
#define VT vt_avx2
#define KN(f) f##_avx2
#define GEMM_MR 6
#define GEMM_NV 2
/* Blocks: GEMM_KC values of k (an A panel and a B panel stay in L1
 * across the micro-kernel), GEMM_MC rows of packed A (in L2), GEMM_NC
 * columns of packed B; B read in place up to 3·MR rows of C
 * (gemm_kern.h's default). */
#define GEMM_KC 256
#define GEMM_MC 96
#define GEMM_NC 4096
#define GEMM_DIRECT_M 18 /* reading B in place for more rows measured no faster */

static inline VT KN(vzero)(void) { return (VT)_mm256_setzero_ps(); }
static inline VT KN(vload)(const float *p) { return (VT)_mm256_loadu_ps(p); }
static inline void KN(vstore)(float *p, VT v) { _mm256_storeu_ps(p, (__m256)v); }
static inline VT KN(vset1)(float a) { return (VT)_mm256_set1_ps(a); }
static inline VT KN(vfma)(VT a, VT b, VT c) { return (VT)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }

#include "ops/gemm_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
