/* The fully connected layer with more outputs than fc_kern.h holds: the
 * kernel set's GEMM (gemm.h with avx512, what dpt_linear_forward/backward pick
 * where own_gemm() says so, else still the BLAS) against the cblas_sgemm calls
 * linear.c made before, on the character language model's fc (n 4096 =
 * batch 64 × 64 steps, 256 LSTM units, 89 characters) and wider ones. One
 * BLAS thread, as a worker trains.
 *
 *   bench/fc_bench.sh builds and runs it; fc_bench [--rounds R] [--kernels SET]
 *
 * Per shape, R rounds alternate the two paths (per round one forward, one
 * backward with dx and dw, one backward with dw only) and it prints each
 * path's median ms per pass, the ratio (BLAS / kernels: > 1 means the
 * kernels are faster) and the largest relative difference between the two
 * results. With a set that has no GEMM (avx2: OpenBLAS's Haswell kernels
 * were as fast) both sides are the BLAS, ratios about 1 and difference 0.
 *
 * On the AVX-512 EPYC this was written on (avx512, medians of 21): the
 * language model's 4096 × 256 → 89 forward 2.04 → 1.17 ms (1.74x),
 * backward (dx and dw) 4.41 → 2.73 ms (1.62x); 1.2-1.9x on the others. */
#include "dptrain/dptrain.h"
#include "ops/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float *rnd(size_t n, unsigned *s)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        *s = *s * 1664525u + 1013904223u;
        p[i] = (float)((*s >> 8) * (1.0 / 16777216.0)) - 0.5f;
    }
    return p;
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double m = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return scale > 0 ? m / scale : m;
}

/* linear.c's BLAS path, as it was. */
static void blas_forward(const float *x, const float *w, const float *b, float *y, int n, int in,
                         int out)
{
    for (int i = 0; i < n; i++)
        memcpy(y + (size_t)i * out, b, out * sizeof *b);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 1.0f,
                y, out);
}

int main(int argc, char **argv)
{
    int rounds = 21;
    const char *set = "auto";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kernels"))
            set = argv[i + 1];
    }
    if (dpt_ops_set_kernels(set) != 0) {
        fprintf(stderr, "fc_bench: --kernels %s: not supported here\n", set);
        return 1;
    }
    dpt_blas_set_threads(1);
    static const int shapes[][3] = {/* n, in, out */
                                    {4096, 256, 89}, {4096, 256, 100}, {4096, 256, 256},
                                    {4096, 256, 1000}, {4096, 1000, 89}, {64, 256, 89},
                                    {256, 512, 512}, {4096, 89, 256}};
    printf("kernels %s, median of %d alternating rounds, ms per pass\n", dpt_ops_kernels(),
           rounds);
    printf("%5s %5s %5s | %8s %8s %5s | %8s %8s %5s | %8s %8s %5s | %8s\n", "n", "in", "out",
           "fwd blas", "kern", "x", "bwd blas", "kern", "x", "dw blas", "kern", "x", "max rel");
    double *t = malloc((size_t)6 * rounds * sizeof *t);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        unsigned seed = 1;
        float *x = rnd((size_t)n * in, &seed), *w = rnd((size_t)out * in, &seed);
        float *b = rnd(out, &seed), *dy = rnd((size_t)n * out, &seed);
        float *y[2], *dx[2], *dw[2];
        for (int p = 0; p < 2; p++) {
            y[p] = malloc((size_t)n * out * sizeof(float));
            dx[p] = malloc((size_t)n * in * sizeof(float));
            dw[p] = malloc((size_t)out * in * sizeof(float));
        }
        for (int r = -2; r < rounds; r++) { /* two warm-up rounds */
            for (int p = 0; p < 2; p++) {
                double t0 = now_s();
                if (p == 0)
                    blas_forward(x, w, b, y[0], n, in, out);
                else
                    dpt_linear_forward(x, w, b, y[1], n, in, out);
                double t1 = now_s();
                if (p == 0) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy,
                                out, w, in, 0.0f, dx[0], in);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out,
                                x, in, 0.0f, dw[0], in);
                } else
                    dpt_linear_backward(x, w, dy, dx[1], dw[1], NULL, n, in, out);
                double t2 = now_s();
                if (p == 0)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out,
                                x, in, 0.0f, dw[0], in);
                else
                    dpt_linear_backward(x, w, dy, NULL, dw[1], NULL, n, in, out);
                double t3 = now_s();
                if (r >= 0) {
                    t[(0 + p) * rounds + r] = 1e3 * (t1 - t0);
                    t[(2 + p) * rounds + r] = 1e3 * (t2 - t1);
                    t[(4 + p) * rounds + r] = 1e3 * (t3 - t2);
                }
            }
        }
        double m[6];
        for (int j = 0; j < 6; j++)
            m[j] = median(t + (size_t)j * rounds, rounds);
        double e = fmax(max_rel(y[1], y[0], (size_t)n * out),
                        fmax(max_rel(dx[1], dx[0], (size_t)n * in),
                             max_rel(dw[1], dw[0], (size_t)out * in)));
        printf("%5d %5d %5d | %8.3f %8.3f %5.2f | %8.3f %8.3f %5.2f | %8.3f %8.3f %5.2f | %8.1e\n",
               n, in, out, m[0], m[1], m[0] / m[1], m[2], m[3], m[2] / m[3], m[4], m[5],
               m[4] / m[5], e);
        for (int p = 0; p < 2; p++)
            free(y[p]), free(dx[p]), free(dw[p]);
        free(x), free(w), free(b), free(dy);
    }
    free(t);
    return 0;
}
