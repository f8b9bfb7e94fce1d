/* The direct convolution kernels (src/ops/conv_direct.c) on the shapes of
 * issue 21's "stem" part, against oneDNN (when built) in the same process:
 * the stems of the suite's networks (1 or 3 input channels, 3x3 stride 1,
 * batch norm after, no input gradient) and the strided 3x3 layers (resnet
 * b2_conv1, VGG c2a/c3a/c4a), with the batch norms fused as the networks
 * run them.
 *
 *   stem_bench [--batch B] [--rounds R] [--kernels generic|avx2|avx512]
 *              [--only NAME] [--no-dnnl]
 *
 * Per shape and pass: the best thread CPU time of R rounds (interference on
 * a shared machine only adds time), the candidates taking turns; GFLOP/s
 * count 2·taps·c_in per output (backward: the weight gradient, plus the
 * data gradient where the layer needs one). The direct/dnnl ratio compares
 * builds run at different moments (dnnl's code is the same in both). */
#include "dptrain/core.h"
#include "ops/ops.h"

#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "stem_bench"

static float *randn(dpt_rng *r, size_t n, float s) { return bench_randu(PROG, r, n, s); }

/* One layer: c_in -> c_out, hw x hw, k x k filter, padding pad; bn_in: a batch norm + ReLU
 * applied to the input on the fly; dx: the input gradient is computed. */
static int no_dnnl;

static void shape(dpt_rng *rng, const char *name, int n, int c_in, int hw, int c_out, int k,
                  int stride, int pad, int bn_in, int dx_needed, int rounds)
{
    dpt_conv2d_desc d = {.n = n, .c_in = c_in, .h = hw, .w = hw, .c_out = c_out, .kh = k,
                         .kw = k, .stride = stride, .pad = pad};
    if (dpt_conv2d_desc_init(&d) != 0)
        return;
    const int algos[2] = {DPT_CONV_ALGO_DIRECT, DPT_CONV_ALGO_DNNL};
    int na = 1;
    if (!no_dnnl && dpt_conv_algo_supports(DPT_CONV_ALGO_DNNL, &d))
        na = 2;
    const size_t nx = (size_t)n * c_in * hw * hw, ny = (size_t)n * c_out * d.out_h * d.out_w;
    const size_t nw = (size_t)c_out * c_in * k * k;
    float *x = randn(rng, nx, 1.0f), *dx = randn(rng, nx, 1.0f), *y = randn(rng, ny, 1.0f);
    float *dy = randn(rng, ny, 1.0f), *yb = randn(rng, ny, 1.0f), *w = randn(rng, nw, 0.3f);
    float *dw = randn(rng, nw, 1.0f), *db = randn(rng, c_out, 1.0f);
    const int cm = c_in > c_out ? c_in : c_out;
    float *pa = randn(rng, 12 * (size_t)cm, 0.5f);
    for (int i = 0; i < cm; i++)
        pa[cm + i] += 1.0f, pa[7 * cm + i] += 1.0f;
    dpt_bn_apply xa = {pa, pa + cm, pa + 2 * cm, 1, NULL, NULL, NULL};
    dpt_bn_apply dya = {pa + 6 * cm, pa + 7 * cm,  pa + 8 * cm, 1,
                        pa + 9 * cm, pa + 10 * cm, pa + 11 * cm};
    size_t nwk = 0;
    for (int a = 0; a < na; a++) {
        d.algo = algos[a];
        if (dpt_conv2d_work_floats(&d) > nwk)
            nwk = dpt_conv2d_work_floats(&d);
    }
    float *work = randn(rng, nwk + 1, 1.0f);
    double *s = malloc(4 * (size_t)cm * sizeof *s);
    double best[2][2] = {{1e30, 1e30}, {1e30, 1e30}};
    for (int r = 0; r < rounds; r++)
        for (int a = 0; a < na; a++) {
            d.algo = algos[a];
            double t0 = bench_cpu_s();
            dpt_conv2d_forward_ex(&d, x, bn_in ? &xa : NULL, w, NULL, y, work, s, s + cm);
            double t1 = bench_cpu_s();
            dpt_conv2d_backward_ex(&d, x, bn_in ? &xa : NULL, w, dy, &dya, yb,
                                   dx_needed ? dx : NULL, dw, db, work,
                                   bn_in && dx_needed ? s + 2 * cm : NULL);
            double t2 = bench_cpu_s();
            if (t1 - t0 < best[a][0])
                best[a][0] = t1 - t0;
            if (t2 - t1 < best[a][1])
                best[a][1] = t2 - t1;
        }
    const double fl = 2.0 * k * k * c_in * (double)ny, flb = fl * (dx_needed ? 2 : 1);
    printf("%-9s %2dx%-2dx%-3d -> %3d k%d s%d n%d: fwd direct %6.3f ms %6.1f GF/s", name, hw, hw,
           c_in, c_out, k, stride, n, 1e3 * best[0][0], fl / best[0][0] * 1e-9);
    if (na == 2)
        printf(" dnnl %6.3f (%.2fx)", 1e3 * best[1][0], best[1][0] / best[0][0]);
    printf(" | bwd direct %6.3f ms %6.1f GF/s", 1e3 * best[0][1], flb / best[0][1] * 1e-9);
    if (na == 2)
        printf(" dnnl %6.3f (%.2fx)", 1e3 * best[1][1], best[1][1] / best[0][1]);
    printf("\n");
    free(x), free(dx), free(y), free(dy), free(yb), free(w), free(dw), free(db), free(pa);
    free(work), free(s);
}

int main(int argc, char **argv)
{
    int batch = 128, rounds = 7;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-dnnl") == 0)
            no_dnnl = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
            if (bench_kernels(PROG, argv[++i]) != 0)
                return 1;
        } else {
            fprintf(stderr, "usage: stem_bench [--batch B] [--rounds R] [--kernels SET] "
                            "[--only NAME] [--no-dnnl]\n");
            return 1;
        }
    }
    if (batch < 1 || batch > 4096 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "stem_bench: --batch 1-4096, --rounds 1-1000\n");
        return 1;
    }
    dpt_rng rng;
    dpt_rng_seed(&rng, 7, 0);
    printf("kernels %s, batch %d, best of %d rounds, thread CPU time (dnnl/direct: >1 direct "
           "faster)\n",
           dpt_ops_kernels(), batch, rounds);
    static const struct {
        const char *name;
        int c_in, hw, c_out, k, stride, pad, bn_in, dx;
    } L[] = {
        /* the example network's first layer (5x5, 20 filters, no padding) */
        {"ex_conv1", 1, 28, 20, 5, 1, 0, 0, 0},
        {"ex_conv2", 20, 24, 20, 3, 1, 1, 1, 1},
        {"stem28", 1, 28, 32, 3, 1, 1, 0, 0},
        {"stem32", 3, 32, 32, 3, 1, 1, 0, 0},
        {"r28_b1c1", 32, 14, 32, 3, 1, 1, 1, 1},
        {"r28_b2c1", 32, 14, 64, 3, 2, 1, 0, 1},
        {"r32_b2c1", 32, 16, 64, 3, 2, 1, 0, 1},
        {"vgg_c2a", 32, 32, 64, 3, 2, 1, 1, 1},
        {"vgg_c3a", 64, 16, 128, 3, 2, 1, 1, 1},
        {"vgg_c4a", 128, 8, 256, 3, 2, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof L / sizeof *L; i++)
        if (!only || strstr(L[i].name, only))
            shape(&rng, L[i].name, batch, L[i].c_in, L[i].hw, L[i].c_out, L[i].k, L[i].stride,
                  L[i].pad, L[i].bn_in, L[i].dx, rounds);
    return 0;
}
