/* Which kernel set the ops use: chosen once from the CPU's features, or
 * forced with the environment variable DPT_KERNELS=generic|avx2|avx512 (a
 * set the CPU lacks falls back to the best it has), or by
 * dpt_ops_set_kernels (tests run every set the CPU supports).
 *
 * "generic" is portable C plus the BLAS (im2col + GEMM for convolutions);
 * "avx2" and "avx512" add the direct convolution kernels of conv_kern.h,
 * wider vectors for the batch-norm passes (bn_kern.h) and the few-output
 * fully connected kernels (fc_kern.h). */
#include "ops/vec_isa.h"
#include "ops/conv_direct.h"
#include "ops/ops.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { K_UNSET = -1, K_GENERIC = 0, K_AVX2 = 1, K_AVX512 = 2 };

static const char *const names[] = {"generic", "avx2", "avx512"};

static _Atomic int chosen = K_UNSET;

static int cpu_has(int k)
{
#ifdef DPT_HAVE_X86_KERNELS
    __builtin_cpu_init();
    if (k == K_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (k == K_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return k == K_GENERIC;
}

static int best(void)
{
    for (int k = K_AVX512; k > K_GENERIC; k--)
        if (cpu_has(k))
            return k;
    return K_GENERIC;
}

static int by_name(const char *name)
{
    for (int k = K_GENERIC; k <= K_AVX512; k++)
        if (strcmp(name, names[k]) == 0)
            return k;
    return K_UNSET;
}

static int current(void)
{
    int k = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (k != K_UNSET)
        return k;
    const char *env = getenv("DPT_KERNELS");
    k = env ? by_name(env) : K_UNSET;
    if (k == K_UNSET || !cpu_has(k))
        k = best();
    atomic_store_explicit(&chosen, k, memory_order_relaxed);
    return k;
}

const char *dpt_ops_kernels(void) { return names[current()]; }

int dpt_ops_kernels_supported(const char *name)
{
    int k = by_name(name);
    return k != K_UNSET && cpu_has(k);
}

int dpt_ops_set_kernels(const char *name)
{
    int k = strcmp(name, "auto") == 0 ? best() : by_name(name);
    if (k == K_UNSET || !cpu_has(k))
        return -1;
    atomic_store_explicit(&chosen, k, memory_order_relaxed);
    return 0;
}

const conv_isa *dpt_ops_conv_isa(void)
{
#ifdef DPT_HAVE_X86_KERNELS
    switch (current()) {
    case K_AVX512: return &dpt_conv_isa_avx512;
    case K_AVX2: return &dpt_conv_isa_avx2;
    default: break;
    }
#endif
    return NULL;
}

const bn_isa *dpt_ops_bn_isa(void)
{
#ifdef DPT_HAVE_X86_KERNELS
    switch (current()) {
    case K_AVX512: return &dpt_bn_isa_avx512;
    case K_AVX2: return &dpt_bn_isa_avx2;
    default: break;
    }
#endif
    return NULL;
}

const fc_isa *dpt_ops_fc_isa(void)
{
#ifdef DPT_HAVE_X86_KERNELS
    switch (current()) {
    case K_AVX512: return &dpt_fc_isa_avx512;
    case K_AVX2: return &dpt_fc_isa_avx2;
    default: break;
    }
#endif
    return NULL;
}
