/* The batch-norm passes (bn_kern.h) and fc kernels (fc_kern.h) for avx512
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
#include "ops/bn_kern.h"
#define FC_IMG 2
#define FC_DW_VEC 2
#include "ops/fc_kern.h"

const bn_isa dpt_bn_isa_avx512 = {
    .sums = plane_sums_avx512,
    .normalize = plane_normalize_avx512,
    .backward_sums = plane_backward_sums_avx512,
    .backward_dx = plane_backward_dx_avx512,
};

const fc_isa dpt_fc_isa_avx512 = {
    .forward = fc_forward_avx512,
    .backward_dx = fc_backward_dx_avx512,
    .backward_dw = fc_backward_dw_avx512,
};

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
