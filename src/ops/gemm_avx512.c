/* dptrain's GEMM (gemm_kern.h) for avx512 (16-float vectors): an
 * MR × NR = 12 × 32 tile of C in registers. Compiled for avx512 whatever
 * the build's -march; used only when the CPU has it (gemm.c asks
 * dpt_ops_kernels()). */
#include "ops/gemm.h"

#include <string.h>

#ifdef DPT_HAVE_GEMM_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#endif
#include <immintrin.h>

typedef float vt_avx512 __attribute__((vector_size(16 * 4)));
#define VN 16
#define VT vt_avx512
#define KN(f) f##_avx512
#define GEMM_MR 12
#define GEMM_NV 2
/* Blocks: GEMM_KC values of k (an A panel and a B panel stay in L1
 * across the micro-kernel), GEMM_MC rows of packed A (in L2), GEMM_NC
 * columns of packed B. B (not transposed) is always read in place, and A
 * (not transposed) too (gemm_kern.h): on bench/gemm_bench's conv shapes
 * that took the forward and dcol products from 0.64-0.75x OpenBLAS's
 * SkylakeX kernels to 0.9-1.05x, the NT ones (dW, fc forward) from
 * 0.68-0.79x to 0.9-1.3x. MR 12 measured ahead of 14. */
#define GEMM_KC 256
#define GEMM_MC 144
#define GEMM_NC 4096
#define GEMM_DIRECT_M (1 << 30)

static inline VT KN(vzero)(void) { return (VT)_mm512_setzero_ps(); }
static inline VT KN(vload)(const float *p) { return (VT)_mm512_loadu_ps(p); }
static inline void KN(vstore)(float *p, VT v) { _mm512_storeu_ps(p, (__m512)v); }
static inline VT KN(vset1)(float a) { return (VT)_mm512_set1_ps(a); }
static inline VT KN(vfma)(VT a, VT b, VT c) { return (VT)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }

#include "ops/gemm_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
