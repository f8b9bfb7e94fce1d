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

#define VEC __m256
#define VW 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
/* Forward: 5 channels x 2 vectors = 10 accumulators + 2 inputs + 1 weight. */
#define FWD_CB 5
#define FWD_NV 2
/* Weight gradient: 2 channels x 5 taps = 10 accumulators + 2 + 1. */
#define DW_CB 2
#define DW_KB 5
#define KERN(name) name##_avx2
#include "ops/conv_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

const conv_isa dpt_conv_isa_avx2 = {
    .name = "avx2", .vw = VW, .fwd_cb = FWD_CB, .fwd_nv = FWD_NV, .dw_cb = DW_CB,
    .dw_kb = DW_KB, .fwd = fwd_avx2, .dw = dw_avx2,
};
#endif
