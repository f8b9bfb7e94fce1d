/* The batch-norm passes and fc kernels (vec_kern.h) for avx2
 * (8-float vectors). Compiled for avx2 whatever the build's -march; used only
 * when the CPU has it (kernels.c). */
#include "ops/vec_isa.h"

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

typedef float vt_avx2 __attribute__((vector_size(8 * 4)));
typedef int vi_avx2 __attribute__((vector_size(8 * 4)));
#define VN 8
#define VT vt_avx2
#define VI vi_avx2
#define KN(f) f##_avx2
#define FC_IMG 1
#define FC_DW_VEC 1
#include "ops/vec_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
