/* The batch-norm passes and fc kernels (vec_kern.h) for avx512
 * (16-float vectors). Compiled for avx512 whatever the build's -march; used only
 * when the CPU has it (kernels.c). */
#include "ops/vec_isa.h"

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#endif

typedef float vt_avx512 __attribute__((vector_size(16 * 4)));
typedef int vi_avx512 __attribute__((vector_size(16 * 4)));
#define VN 16
#define VT vt_avx512
#define VI vi_avx512
#define KN(f) f##_avx512
#define FC_IMG 2
#define FC_DW_VEC 2
#include "ops/vec_kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
