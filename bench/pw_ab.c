/* The pointwise convolution of this tree (dpt_conv_pointwise_*) against
 * another commit's (old_dpt_conv_pointwise_*, built by bench/pw_ab.sh),
 * alternated in each round on the suite networks' 1x1 layers with the batch
 * norms the networks fuse around them; one thread, thread CPU time. Per
 * layer: median ms of a forward and of a backward (dx, dw, the fused batch
 * norms' sums) for old and new, old/new, and the largest difference of
 * new's outputs from old's relative to their largest magnitude (a sanity
 * check; tests/test_conv_algos.c is the real one). --cold evicts the caches
 * (a 64 MiB write, not timed) before every timed pass, as a network's
 * layers find their operands.
 *
 *   bench/pw_ab.sh [REF] [--rounds R] [--batch N] [--only TEXT]
 *                  [--kernels avx512|avx2|generic] [--cold] */
#define _GNU_SOURCE
#include "dptrain/dptrain.h"
#include "ops/conv_pointwise.h"
#include "ops/ops.h"

#include "bench_common.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t old_dpt_conv_pointwise_work_floats(const dpt_conv2d_desc *d);
void old_dpt_conv_pointwise_forward(const dpt_conv2d_desc *d, const float *x,
                                    const dpt_bn_apply *xa, const float *w, const float *b,
                                    float *y, float *work, double *sum, double *sumsq);
void old_dpt_conv_pointwise_backward(const dpt_conv2d_desc *d, const float *x,
                                     const dpt_bn_apply *xa, const float *w, const float *dy,
                                     const dpt_bn_apply *dya, const float *y, float *dx,
                                     float *dw, float *db, float *work, double *xg);

typedef struct layer {
    const char *what;
    int c_in, h, c_out, stride;
    int bn_in, bn_out, need_dx;
} layer;

static const layer layers[] = {
    {"res32 b2_proj", 32, 16, 64, 2, 0, 1, 1},
    {"res28 b2_proj", 32, 14, 64, 2, 0, 1, 1},
    {"res32 b3_a", 64, 8, 32, 1, 0, 0, 1},
    {"res28 b3_a", 64, 7, 32, 1, 0, 0, 1},
    {"mbn b1_pw", 32, 32, 64, 1, 1, 1, 1},
    {"mbn b2_pw", 64, 16, 128, 1, 1, 1, 1},
    {"mbn b4_pw", 128, 8, 256, 1, 1, 1, 1},
    {"mbn b5_pw", 256, 4, 256, 1, 1, 1, 1},
};

static unsigned seed = 7;
static float rnd(void)
{
    return (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
}

static float *rnd_array(size_t n, float base)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = base + rnd();
    return v;
}

static double rel_diff(const float *a, const float *b, size_t n)
{
    double most = 0.0, big = 1e-30;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        most = d > most ? d : most;
        big = fabs((double)a[i]) > big ? fabs((double)a[i]) : big;
    }
    return most / big;
}

static char *flush_buf;
enum { FLUSH_BYTES = 64 << 20 };
static void evict(int cold)
{
    if (cold)
        memset(flush_buf, cold++, FLUSH_BYTES);
}

int main(int argc, char **argv)
{
    int rounds = 15, batch = 128, cold = 0;
    const char *only = NULL, *kernels = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc)
            kernels = argv[++i];
        else if (strcmp(argv[i], "--cold") == 0)
            cold = 1;
        else {
            fprintf(stderr, "usage: pw_ab [--rounds R] [--batch N] [--only TEXT] "
                            "[--kernels SET] [--cold]\n");
            return 1;
        }
    }
    if (rounds < 1 || rounds > 1000 || batch < 1 || batch > 4096) {
        fprintf(stderr, "pw_ab: rounds 1-1000, batch 1-4096\n");
        return 1;
    }
    if (kernels && bench_kernels("pw_ab", kernels) != 0)
        return 1;
    flush_buf = malloc(FLUSH_BYTES);
    if (!flush_buf)
        return 1;
    printf("# pointwise old vs new, batch %d, kernels %s, %d rounds%s, one thread; median CPU "
           "ms per pass\n",
           batch, dpt_ops_kernels(), rounds, cold ? ", caches evicted before each pass" : "");
    printf("%-14s %-16s %8s %8s %6s  %8s %8s %6s  %s\n", "layer", "shape", "old fwd", "new fwd",
           "x", "old bwd", "new bwd", "x", "max rel diff y/dx/dw");
    for (size_t li = 0; li < sizeof layers / sizeof *layers; li++) {
        const layer *L = &layers[li];
        if (only && !strstr(L->what, only))
            continue;
        dpt_conv2d_desc d = {.n = batch, .c_in = L->c_in, .h = L->h, .w = L->h,
                             .c_out = L->c_out, .kh = 1, .kw = 1, .stride = L->stride,
                             .algo = DPT_CONV_ALGO_POINTWISE};
        if (dpt_conv2d_desc_init(&d) != 0)
            return 1;
        const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
        const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
        const size_t nw = (size_t)d.c_out * d.c_in;
        size_t nwork = dpt_conv_pointwise_work_floats(&d);
        const size_t ow = old_dpt_conv_pointwise_work_floats(&d);
        nwork = ow > nwork ? ow : nwork;
        float *x = rnd_array(nx, 0), *y[2] = {rnd_array(ny, 0), rnd_array(ny, 0)};
        float *dx[2] = {rnd_array(nx, 0), rnd_array(nx, 0)};
        float *dw[2] = {rnd_array(nw, 0), rnd_array(nw, 0)};
        float *dy = rnd_array(ny, 0), *w = rnd_array(nw, 0), *work = rnd_array(nwork + 16, 0);
        float *bi = rnd_array(6 * (size_t)d.c_in, 0.5f), *bo = rnd_array(6 * (size_t)d.c_out, 0.5f);
        double *s = malloc(2 * (size_t)(d.c_out + d.c_in) * sizeof *s);
        if (!x || !y[0] || !y[1] || !dx[0] || !dx[1] || !dw[0] || !dw[1] || !dy || !w || !work ||
            !bi || !bo || !s) {
            fprintf(stderr, "pw_ab: out of memory\n");
            return 1;
        }
        /* 64-byte aligned work, as the network's arena gives it */
        float *wk = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
        const int ci = d.c_in, co = d.c_out;
        const dpt_bn_apply ai = {bi,          bi + ci,     bi + 2 * ci, 1,
                                 bi + 3 * ci, bi + 4 * ci, bi + 5 * ci};
        const dpt_bn_apply ao = {bo,          bo + co,     bo + 2 * co, 1,
                                 bo + 3 * co, bo + 4 * co, bo + 5 * co};
        const dpt_bn_apply *xa = L->bn_in ? &ai : NULL, *dya = L->bn_out ? &ao : NULL;
        double *sum = L->bn_out ? s : NULL, *sq = L->bn_out ? s + co : NULL;
        double *xg = L->bn_in ? s + 2 * co : NULL;
        double tf[2][1000], tb[2][1000];
        for (int r = -1; r < rounds; r++)
            for (int v0 = 0; v0 < 2; v0++) {
                const int v = (v0 + r + 2) % 2; /* who goes first alternates */
                evict(cold);
                double t0 = bench_cpu_s();
                if (v)
                    dpt_conv_pointwise_forward(&d, x, xa, w, NULL, y[v], wk, sum, sq);
                else
                    old_dpt_conv_pointwise_forward(&d, x, xa, w, NULL, y[v], wk, sum, sq);
                double t1 = bench_cpu_s();
                evict(cold);
                double t2 = bench_cpu_s();
                /* dy's batch norm reads y: each its own forward's */
                if (v)
                    dpt_conv_pointwise_backward(&d, x, xa, w, dy, dya, y[v],
                                                L->need_dx ? dx[v] : NULL, dw[v], NULL, wk, xg);
                else
                    old_dpt_conv_pointwise_backward(&d, x, xa, w, dy, dya, y[v],
                                                    L->need_dx ? dx[v] : NULL, dw[v], NULL, wk,
                                                    xg);
                if (r >= 0)
                    tf[v][r] = t1 - t0, tb[v][r] = bench_cpu_s() - t2;
            }
        char shp[64];
        snprintf(shp, sizeof shp, "%dx%dx%d>%d s%d", d.h, d.w, d.c_in, d.c_out, d.stride);
        const double of = bench_median(tf[0], rounds) * 1e3, nf = bench_median(tf[1], rounds) * 1e3;
        const double ob = bench_median(tb[0], rounds) * 1e3, nb = bench_median(tb[1], rounds) * 1e3;
        printf("%-14s %-16s %8.3f %8.3f %6.2f  %8.3f %8.3f %6.2f  %.1e %.1e %.1e\n", L->what, shp,
               of, nf, of / nf, ob, nb, ob / nb, rel_diff(y[0], y[1], ny),
               L->need_dx ? rel_diff(dx[0], dx[1], nx) : 0.0, rel_diff(dw[0], dw[1], nw));
        fflush(stdout);
        free(x), free(y[0]), free(y[1]), free(dx[0]), free(dx[1]), free(dw[0]), free(dw[1]);
        free(dy), free(w), free(work), free(bi), free(bo), free(s);
    }
    free(flush_buf);
    return 0;
}
