/* The 1x1 convolutions of the suite networks, as one worker trains them
 * (batch N, default 128, one thread): the conv algorithms that run 1x1
 * filters (pointwise, direct, batched, dnnl where built, gemm) alternated in
 * each round, with the batch norms the networks fuse around them
 * (MobileNet's pw layers: the input's batch norm + ReLU applied on the
 * fly, the output's sums and its backward; resnet's b2_proj: the output's
 * only). Median ms of a forward and of a backward (dx, dw, xg where the
 * network computes them) and GFLOP/s of the best; pointwise's speed-up
 * over the best other candidate.
 *
 *   bench/pw_bench.sh [--rounds R] [--batch N] [--only TEXT]
 *
 * Figures go to bench/RESULTS-pointwise.md. */
#define _GNU_SOURCE
#include "dptrain/dptrain.h"
#include "ops/conv_algo.h"
#include "ops/ops.h"

#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer {
    const char *what;
    int c_in, h, c_out, stride;
    int bn_in, bn_out, need_dx;
} layer;

static const layer layers[] = {
    {"mbn b1_pw", 32, 32, 64, 1, 1, 1, 1},
    {"mbn b2_pw", 64, 16, 128, 1, 1, 1, 1},
    {"mbn b3_pw", 128, 16, 128, 1, 1, 1, 1},
    {"mbn b4_pw", 128, 8, 256, 1, 1, 1, 1},
    {"mbn b5_pw", 256, 4, 256, 1, 1, 1, 1},
    {"res32 b2_proj", 32, 16, 64, 2, 0, 1, 1},
    {"res28 b2_proj", 32, 14, 64, 2, 0, 1, 1},
    {"res32 b3_a", 64, 8, 32, 1, 0, 0, 1},
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

int main(int argc, char **argv)
{
    int rounds = 9, batch = 128;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: pw_bench [--rounds R] [--batch N] [--only TEXT]\n");
            return 1;
        }
    }
    if (rounds < 1 || rounds > 1000 || batch < 1 || batch > 4096) {
        fprintf(stderr, "pw_bench: rounds 1-1000, batch 1-4096\n");
        return 1;
    }
    static const int algos[] = {DPT_CONV_ALGO_POINTWISE, DPT_CONV_ALGO_DIRECT,
                                DPT_CONV_ALGO_BATCHED, DPT_CONV_ALGO_DNNL, DPT_CONV_ALGO_GEMM};
    enum { N_ALGO = 5 };
    printf("# 1x1 conv layers, batch %d, kernels %s, %d rounds, one thread; median CPU ms per "
           "pass (fwd; bwd = dx, dw and the fused batch norms' sums)\n",
           batch, dpt_ops_kernels(), rounds);
    printf("%-14s %-18s", "layer", "shape");
    for (int a = 0; a < N_ALGO; a++)
        printf(" %9s %9s", dpt_conv_algo_name(algos[a]), "bwd");
    printf("  %7s %7s  %s\n", "x fwd", "x bwd", "pointwise GFLOP/s f/b");
    for (size_t li = 0; li < sizeof layers / sizeof *layers; li++) {
        const layer *L = &layers[li];
        if (only && !strstr(L->what, only))
            continue;
        dpt_conv2d_desc d = {.n = batch, .c_in = L->c_in, .h = L->h, .w = L->h,
                             .c_out = L->c_out, .kh = 1, .kw = 1, .stride = L->stride};
        if (dpt_conv2d_desc_init(&d) != 0)
            return 1;
        const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
        const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
        const size_t nw = (size_t)d.c_out * d.c_in;
        size_t nwork = 0;
        for (int a = 0; a < N_ALGO; a++) {
            d.algo = algos[a];
            size_t f = dpt_conv2d_work_floats(&d);
            nwork = f > nwork ? f : nwork;
        }
        float *x = rnd_array(nx, 0), *dx = rnd_array(nx, 0), *y = rnd_array(ny, 0);
        float *dy = rnd_array(ny, 0), *w = rnd_array(nw, 0), *dw = rnd_array(nw, 0);
        float *work = rnd_array(nwork, 0);
        float *bi = rnd_array(6 * (size_t)d.c_in, 0.5f), *bo = rnd_array(6 * (size_t)d.c_out, 0.5f);
        double *s = malloc(2 * (size_t)(d.c_out + d.c_in) * sizeof *s);
        if (!x || !dx || !y || !dy || !w || !dw || !work || !bi || !bo || !s) {
            fprintf(stderr, "pw_bench: out of memory\n");
            return 1;
        }
        const int ci = d.c_in, co = d.c_out;
        const dpt_bn_apply ai = {bi, bi + ci, bi + 2 * ci, 1,
                                 bi + 3 * ci, bi + 4 * ci, bi + 5 * ci};
        const dpt_bn_apply ao = {bo, bo + co, bo + 2 * co, 1,
                                 bo + 3 * co, bo + 4 * co, bo + 5 * co};
        const dpt_bn_apply *xa = L->bn_in ? &ai : NULL, *dya = L->bn_out ? &ao : NULL;
        double *sum = L->bn_out ? s : NULL, *sq = L->bn_out ? s + co : NULL;
        double *xg = L->bn_in ? s + 2 * co : NULL;
        double tf[N_ALGO][1000], tb[N_ALGO][1000];
        int have[N_ALGO];
        for (int a = 0; a < N_ALGO; a++) {
            have[a] = dpt_conv_algo_supports(algos[a], &d);
            d.algo = algos[a];
            if (have[a]) { /* warm up */
                dpt_conv2d_forward_ex(&d, x, xa, w, NULL, y, work, sum, sq);
                dpt_conv2d_backward_ex(&d, x, xa, w, dy, dya, y, L->need_dx ? dx : NULL, dw,
                                       NULL, work, xg);
            }
        }
        for (int r = 0; r < rounds; r++)
            for (int a0 = 0; a0 < N_ALGO; a0++) {
                const int a = (a0 + r) % N_ALGO;
                if (!have[a])
                    continue;
                d.algo = algos[a];
                double t0 = bench_cpu_s();
                dpt_conv2d_forward_ex(&d, x, xa, w, NULL, y, work, sum, sq);
                double t1 = bench_cpu_s();
                dpt_conv2d_backward_ex(&d, x, xa, w, dy, dya, y, L->need_dx ? dx : NULL, dw,
                                       NULL, work, xg);
                tf[a][r] = t1 - t0;
                tb[a][r] = bench_cpu_s() - t1;
            }
        double mf[N_ALGO] = {0}, mb[N_ALGO] = {0}, bf = 1e30, bb = 1e30;
        char shp[64];
        snprintf(shp, sizeof shp, "%dx%dx%d>%d s%d", d.h, d.w, d.c_in, d.c_out, d.stride);
        printf("%-14s %-18s", L->what, shp);
        for (int a = 0; a < N_ALGO; a++) {
            if (!have[a]) {
                printf(" %9s %9s", "-", "-");
                continue;
            }
            mf[a] = bench_median(tf[a], rounds) * 1e3;
            mb[a] = bench_median(tb[a], rounds) * 1e3;
            printf(" %9.3f %9.3f", mf[a], mb[a]);
            if (a > 0) {
                bf = mf[a] < bf ? mf[a] : bf;
                bb = mb[a] < bb ? mb[a] : bb;
            }
        }
        const double flop = 2.0 * d.n * d.c_out * d.out_h * d.out_w * d.c_in;
        const double fb = (L->need_dx ? 2.0 : 1.0) * flop;
        printf("  %7.2f %7.2f  %.0f/%.0f\n", bf / mf[0], bb / mb[0], flop / mf[0] * 1e-6,
               fb / mb[0] * 1e-6);
        fflush(stdout);
        free(x), free(dx), free(y), free(dy), free(w), free(dw), free(work), free(bi), free(bo);
        free(s);
    }
    return 0;
}
