/* The depthwise convolution algorithm (src/ops/conv_depthwise.c) against
 * the GEMM path, and the vector pooling (src/ops/pool.c, pool_kern.h)
 * against the scalar code it replaced, alternated in one process on the
 * shapes of the suite's networks: MobileNet's four depthwise layers
 * (examples/nets/mobilenet-32x32x3.net, batch norm + ReLU fused on both
 * sides as the network runs them) and the residual networks' max pooling
 * (2x2 stride 2), plus a 3x3 stride-2 pooling with padding.
 *
 *   dwpool_bench [--batch B] [--rounds R] [--kernels generic|avx2|avx512]
 *
 * Per shape and pass: the best thread CPU time of R rounds (interference
 * on a shared machine only adds time), GFLOP/s for convolutions (2·taps
 * per output, backward twice the forward), and the ratio. */
#include "dptrain/core.h"
#include "ops/ops.h"
#include "ops/pool_isa.h"

#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "dwpool_bench"

static float *randn(dpt_rng *r, size_t n, float s) { return bench_randu(PROG, r, n, s); }

static void conv_shape(dpt_rng *rng, int n, int c, int hw, int stride, int rounds)
{
    dpt_conv2d_desc d = {.n = n, .c_in = c, .h = hw, .w = hw, .c_out = c, .kh = 3, .kw = 3,
                         .stride = stride, .pad = 1, .groups = c};
    if (dpt_conv2d_desc_init(&d) != 0)
        return;
    const size_t nx = (size_t)n * c * hw * hw, ny = (size_t)n * c * d.out_h * d.out_w;
    float *x = randn(rng, nx, 1.0f), *dx = randn(rng, nx, 1.0f), *y = randn(rng, ny, 1.0f);
    float *dy = randn(rng, ny, 1.0f), *yb = randn(rng, ny, 1.0f), *w = randn(rng, 9 * c, 0.3f);
    float *dw = randn(rng, 9 * c, 1.0f), *db = randn(rng, c, 1.0f), *pa = randn(rng, 12 * c, 0.5f);
    for (int i = 0; i < c; i++)
        pa[c + i] += 1.0f;
    dpt_bn_apply xa = {pa, pa + c, pa + 2 * c, 1, NULL, NULL, NULL};
    dpt_bn_apply dya = {pa + 6 * c, pa + 7 * c,  pa + 8 * c, 1,
                        pa + 9 * c, pa + 10 * c, pa + 11 * c};
    d.algo = DPT_CONV_ALGO_DEPTHWISE;
    size_t nw = dpt_conv2d_work_floats(&d);
    d.algo = DPT_CONV_ALGO_GEMM;
    if (dpt_conv2d_work_floats(&d) > nw)
        nw = dpt_conv2d_work_floats(&d);
    float *work = randn(rng, nw, 1.0f);
    double *s = malloc(4 * (size_t)c * sizeof *s);
    double best[2][2] = {{1e30, 1e30}, {1e30, 1e30}};
    const int algos[2] = {DPT_CONV_ALGO_GEMM, DPT_CONV_ALGO_DEPTHWISE};
    for (int r = 0; r < rounds; r++)
        for (int a = 0; a < 2; a++) {
            d.algo = algos[a];
            double t0 = bench_cpu_s();
            dpt_conv2d_forward_ex(&d, x, &xa, w, NULL, y, work, s, s + c);
            double t1 = bench_cpu_s();
            dpt_conv2d_backward_ex(&d, x, &xa, w, dy, &dya, yb, dx, dw, db, work, s + 2 * c);
            double t2 = bench_cpu_s();
            if (t1 - t0 < best[a][0])
                best[a][0] = t1 - t0;
            if (t2 - t1 < best[a][1])
                best[a][1] = t2 - t1;
        }
    const double fl = 2.0 * 9 * (double)ny;
    printf("conv dw n%d %dx%dx%d s%d: fwd gemm %.2f ms (%.1f GF/s) depthwise %.2f ms (%.1f GF/s) "
           "%.1fx | bwd gemm %.2f ms (%.1f) depthwise %.2f ms (%.1f) %.1fx\n",
           n, hw, hw, c, stride, 1e3 * best[0][0], fl / best[0][0] * 1e-9, 1e3 * best[1][0],
           fl / best[1][0] * 1e-9, best[0][0] / best[1][0], 1e3 * best[0][1],
           2 * fl / best[0][1] * 1e-9, 1e3 * best[1][1], 2 * fl / best[1][1] * 1e-9,
           best[0][1] / best[1][1]);
    free(x), free(dx), free(y), free(dy), free(yb), free(w), free(dw), free(db), free(pa);
    free(work), free(s);
}

static void pool_shape(dpt_rng *rng, int n, int c, int hw, int k, int stride, int pad, int rounds)
{
    dpt_pool2d_desc d = {.n = n, .c = c, .h = hw, .w = hw, .kh = k, .kw = k, .sh = stride,
                         .sw = stride, .ph = pad, .pw = pad};
    if (dpt_pool2d_desc_init(&d) != 0)
        return;
    const size_t nx = (size_t)n * c * hw * hw, ny = (size_t)n * c * d.out_h * d.out_w;
    float *x = randn(rng, nx, 1.0f), *dx = randn(rng, nx, 1.0f), *y = randn(rng, ny, 1.0f);
    float *dy = randn(rng, ny, 1.0f);
    double best[2][4];
    for (int a = 0; a < 2; a++)
        for (int m = 0; m < 4; m++)
            best[a][m] = 1e30;
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < 4; m++)
            for (int a = 0; a < 2; a++) {
                float *out = m % 2 ? dx : y;
                double t = bench_cpu_s();
                if (a == 0)
                    dpt_pool2d_reference(m, &d, x, dy, out);
                else if (m == 0)
                    dpt_maxpool2d_forward(&d, x, y);
                else if (m == 1)
                    dpt_maxpool2d_backward(&d, x, dy, dx);
                else if (m == 2)
                    dpt_avgpool2d_forward(&d, x, y);
                else
                    dpt_avgpool2d_backward(&d, dy, dx);
                t = bench_cpu_s() - t;
                if (t < best[a][m])
                    best[a][m] = t;
            }
    static const char *const what[4] = {"max fwd", "max bwd", "avg fwd", "avg bwd"};
    printf("pool n%d %dx%dx%d k%d s%d p%d:", n, hw, hw, c, k, stride, pad);
    for (int m = 0; m < 4; m++)
        printf(" %s %.2f/%.2f ms %.1fx%s", what[m], 1e3 * best[0][m], 1e3 * best[1][m],
               best[0][m] / best[1][m], m < 3 ? " |" : "\n");
    if (dpt_maxpool2d_has_idx(&d)) {
        /* Max pooling keeping the taps (as the layer runs it in training):
         * the forward writes them, the backward reads them instead of x. */
        unsigned char *idx = malloc(ny + DPT_POOL_IDX_SLACK);
        double bi[2] = {1e30, 1e30};
        for (int r = 0; idx && r < rounds; r++)
            for (int m = 0; m < 2; m++) {
                double t = bench_cpu_s();
                if (m == 0)
                    dpt_maxpool2d_forward_idx(&d, x, y, idx);
                else
                    dpt_maxpool2d_backward_idx(&d, idx, dy, dx);
                t = bench_cpu_s() - t;
                if (t < bi[m])
                    bi[m] = t;
            }
        printf("  max with saved taps: fwd %.2f ms, bwd %.2f ms (%.1fx, %.1fx the scalar code)\n",
               1e3 * bi[0], 1e3 * bi[1], best[0][0] / bi[0], best[0][1] / bi[1]);
        free(idx);
    }
    free(x), free(dx), free(y), free(dy);
}

int main(int argc, char **argv)
{
    int batch = 64, rounds = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
            if (bench_kernels(PROG, argv[++i]) != 0)
                return 1;
        } else {
            fprintf(stderr, "usage: dwpool_bench [--batch B] [--rounds R] [--kernels SET]\n");
            return 1;
        }
    }
    if (batch < 1 || batch > 4096 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "dwpool_bench: --batch 1-4096, --rounds 1-1000\n");
        return 1;
    }
    dpt_rng rng;
    dpt_rng_seed(&rng, 7, 0);
    printf("kernels %s, batch %d, best of %d rounds, thread CPU time (scalar or gemm / new)\n",
           dpt_ops_kernels(), batch, rounds);
    conv_shape(&rng, batch, 32, 32, 1, rounds);
    conv_shape(&rng, batch, 64, 32, 2, rounds);
    conv_shape(&rng, batch, 128, 16, 1, rounds);
    conv_shape(&rng, batch, 128, 16, 2, rounds);
    pool_shape(&rng, batch, 32, 32, 2, 2, 0, rounds);
    pool_shape(&rng, batch, 32, 28, 2, 2, 0, rounds);
    pool_shape(&rng, batch, 64, 32, 3, 2, 1, rounds);
    return 0;
}
