/* The recurrent kernels (rnn_kern.h) for avx512 (16-float vectors). Compiled
 * for avx512 whatever the build's -march; used only when the CPU has it (rnn.c
 * asks kernels.c which set is in use). */
#include "ops/rnn_isa.h"

#ifdef DPT_HAVE_RNN_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#endif
#include <immintrin.h>

typedef float vt_avx512 __attribute__((vector_size(16 * 4)));
typedef int vi_avx512 __attribute__((vector_size(16 * 4)));
#define VN 16
#define VT vt_avx512
#define VI vi_avx512
#define KN(f) f##_avx512
/* Tiles: the forward's G·RNN_MR_F and the backward's RNN_MR_B·RNN_NW_B
 * accumulators, as many as the registers hold beside the panel's vectors. */
#define RNN_MR_F 6
#define RNN_MR_B 6
#define RNN_NW_B 4

static inline VT KN(fma)(VT a, VT b, VT c) { return (VT)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }

#include "ops/rnn_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
