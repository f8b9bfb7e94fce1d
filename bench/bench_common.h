/* What the kernel bench programs share (bench/hwc_bench.c, stem_bench.c,
 * dwpool_bench.c, dw_ab.c, pw_ab.c, pw_bench.c, gemm_rows_ab.c): the clock
 * they time with, sorting and medians of the timings, random inputs and the
 * --kernels option. Static inline: each program is one .c file that its
 * script compiles against libdptrain.a. */
#ifndef DPT_BENCH_COMMON_H
#define DPT_BENCH_COMMON_H

#include "dptrain/core.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Seconds of CPU time the calling thread has used: on a shared machine
 * another process takes wall time from a run, not this. */
static inline double bench_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* v[0..n) in ascending order. */
static inline void bench_sort(double *v, int n) { qsort(v, (size_t)n, sizeof *v, bench_cmp_d); }

/* The median of v[0..n) (sorts v): the mean of the middle two for even n. */
static inline double bench_median(double *v, int n)
{
    bench_sort(v, n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* malloc, or "PROG: out of memory" and exit 1. */
static inline void *bench_xmalloc(const char *prog, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(1);
    }
    return p;
}

/* n floats uniform in [-s, s) from r. */
static inline float *bench_randu(const char *prog, dpt_rng *r, size_t n, float s)
{
    float *p = bench_xmalloc(prog, n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = s * (2.0f * dpt_rng_uniform(r) - 1.0f);
    return p;
}

/* --kernels SET: selects the kernel set; -1 (said on stderr) when this CPU
 * or build does not run it. */
static inline int bench_kernels(const char *prog, const char *set)
{
    if (dpt_ops_set_kernels(set) == 0)
        return 0;
    fprintf(stderr, "%s: --kernels %s: not supported here\n", prog, set);
    return -1;
}

#endif
