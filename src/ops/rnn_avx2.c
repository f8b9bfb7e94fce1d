/* The recurrent kernels (rnn_kern.h) for avx2 (8-float vectors). Compiled
 * for avx2 whatever the build's -march; used only when the CPU has it (rnn.c
 * asks kernels.c which set is in use). */
#include "ops/rnn_isa.h"

#ifdef DPT_HAVE_RNN_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include <immintrin.h>

typedef float vt_avx2 __attribute__((vector_size(8 * 4)));
typedef int vi_avx2 __attribute__((vector_size(8 * 4)));
#define VN 8
#define VT vt_avx2
#define VI vi_avx2
#define KN(f) f##_avx2
/* Tiles: the forward's G·RNN_MR_F and the backward's RNN_MR_B·RNN_NW_B
 * accumulators, as many as the registers hold beside the panel's vectors. */
#define RNN_MR_F 3
#define RNN_MR_B 6
#define RNN_NW_B 2

static inline VT KN(fma)(VT a, VT b, VT c) { return (VT)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }

#include "ops/rnn_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
