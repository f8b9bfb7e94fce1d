/* The Winograd convolution algorithms (src/ops/conv_wino.c: wino F(2x2,3x3),
 * wino4 F(4x4,3x3); src/ops/conv_wino_s2.c: wino_s2, stride 2) on the 3x3
 * layers of the suite's residual and VGG networks, against hwc
 * (the direct-style kernels it would replace) and oneDNN (when built),
 * alternated in one process, with the batch norms fused as the networks
 * run them (input bn+ReLU, output bn backward).
 *
 *   wino_bench [--batch B] [--rounds R] [--kernels avx2|avx512]
 *              [--only NAME] [--no-dnnl]
 *
 * Per shape and pass: the best thread CPU time of R rounds (interference on
 * a shared machine only adds time), the candidates taking turns; GFLOP/s
 * are "direct-equivalent": 2·9·c_in per output (backward: the weight
 * gradient plus the data gradient), whatever the algorithm multiplies.
 * (x): hwc's time / the candidate's (> 1: faster than hwc). err: the
 * largest difference from hwc over y, dx and dw, relative to each one's
 * largest magnitude. */
#include "dptrain/core.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *randn(dpt_rng *r, size_t n, float s)
{
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "wino_bench: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = s * (2.0f * dpt_rng_uniform(r) - 1.0f);
    return p;
}

/* One layer: c_in -> c_out, hw x hw, k x k filter, padding pad; bn_in: a batch norm + ReLU
 * applied to the input on the fly; dx: the input gradient is computed. */
static int no_dnnl;


static const char *cand_name(int a) { return dpt_conv_algo_name(a); }

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0, e = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = a[i] - b[i], v = b[i] < 0 ? -b[i] : b[i];
        if ((d < 0 ? -d : d) > e)
            e = d < 0 ? -d : d;
        if (v > m)
            m = v;
    }
    return m > 0 ? e / m : e;
}

static void shape(dpt_rng *rng, const char *name, int n, int c_in, int hw, int c_out, int k,
                  int stride, int pad, int bn_in, int dx_needed, int rounds)
{
    dpt_conv2d_desc d = {.n = n, .c_in = c_in, .h = hw, .w = hw, .c_out = c_out, .kh = k,
                         .kw = k, .stride = stride, .pad = pad};
    if (dpt_conv2d_desc_init(&d) != 0)
        return;
    /* hwc first (the baseline), the Winograd entries that take the shape,
     * dnnl last (not compared for the error: its own rounding) */
    static const int cands[] = {DPT_CONV_ALGO_HWC, DPT_CONV_ALGO_WINO, DPT_CONV_ALGO_WINO4,
                                DPT_CONV_ALGO_WINO_S2, DPT_CONV_ALGO_DNNL};
    int algos[5], na = 0, nwin = 0;
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++)
        if (dpt_conv_algo_supports(cands[i], &d) && !(no_dnnl && cands[i] == DPT_CONV_ALGO_DNNL))
            algos[na++] = cands[i];
    for (int a = 1; a < na; a++)
        nwin += algos[a] != DPT_CONV_ALGO_DNNL;
    if (na < 2 || algos[0] != DPT_CONV_ALGO_HWC || nwin < 1)
        return;
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
    double best[5][2] = {{1e30, 1e30}, {1e30, 1e30}, {1e30, 1e30}, {1e30, 1e30}, {1e30, 1e30}};
    for (int r = 0; r < rounds; r++)
        for (int a = 0; a < na; a++) {
            d.algo = algos[a];
            double t0 = cpu_s(), t1, t2;
            dpt_conv2d_forward_ex(&d, x, bn_in ? &xa : NULL, w, NULL, y, work, s, s + cm);
            t1 = cpu_s();
            dpt_conv2d_backward_ex(&d, x, bn_in ? &xa : NULL, w, dy, &dya, yb,
                                   dx_needed ? dx : NULL, dw, db, work,
                                   bn_in && dx_needed ? s + 2 * cm : NULL);
            t2 = cpu_s();
            if (t1 - t0 < best[a][0])
                best[a][0] = t1 - t0;
            if (t2 - t1 < best[a][1])
                best[a][1] = t2 - t1;
        }
    /* the Winograd entries against hwc on the same inputs */
    float *y2 = malloc(ny * sizeof *y2), *dx2 = malloc(nx * sizeof *dx2);
    float *dw2 = malloc(nw * sizeof *dw2);
    double err[5] = {0, 0, 0, 0, 0};
    for (int a = 0; a <= nwin; a++) {
        d.algo = algos[a];
        dpt_conv2d_forward_ex(&d, x, bn_in ? &xa : NULL, w, NULL, a ? y2 : y, work, s, s + cm);
        dpt_conv2d_backward_ex(&d, x, bn_in ? &xa : NULL, w, dy, &dya, yb, a ? dx2 : dx,
                               a ? dw2 : dw, db, work, NULL);
        const double e3[3] = {rel_diff(y2, y, ny), rel_diff(dx2, dx, nx),
                              rel_diff(dw2, dw, nw)};
        for (int i = 0; a > 0 && i < 3; i++)
            err[a] = e3[i] > err[a] ? e3[i] : err[a];
    }
    free(y2), free(dx2), free(dw2);
    const double fl = 2.0 * k * k * c_in * (double)ny, flb = fl * (dx_needed ? 2 : 1);
    printf("%-9s %2dx%-2dx%-3d -> %3d n%d\n", name, hw, hw, c_in, c_out, n);
    for (int p = 0; p < 2; p++) {
        const double f = p ? flb : fl;
        printf("  %s:", p ? "bwd" : "fwd");
        for (int a = 0; a < na; a++)
            printf(" %s %6.3f ms %5.0f GF/s (%.2fx)%s", cand_name(algos[a]), 1e3 * best[a][p],
                   f / best[a][p] * 1e-9, best[0][p] / best[a][p], a + 1 < na ? "," : "\n");
    }
    printf("  err vs hwc:");
    for (int a = 1; a <= nwin; a++)
        printf(" %s %.1e%s", cand_name(algos[a]), err[a], a < nwin ? "," : "\n");
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
            if (dpt_ops_set_kernels(argv[++i]) != 0) {
                fprintf(stderr, "wino_bench: --kernels %s: not supported here\n", argv[i]);
                return 1;
            }
        } else {
            fprintf(stderr, "usage: wino_bench [--batch B] [--rounds R] [--kernels SET] "
                            "[--only NAME] [--no-dnnl]\n");
            return 1;
        }
    }
    if (batch < 1 || batch > 4096 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "wino_bench: --batch 1-4096, --rounds 1-1000\n");
        return 1;
    }
    dpt_rng rng;
    dpt_rng_seed(&rng, 7, 0);
    printf("kernels %s, batch %d, best of %d rounds, thread CPU time "
           "((x): hwc/candidate, >1 faster than hwc)\n",
           dpt_ops_kernels(), batch, rounds);
    static const struct {
        const char *name;
        int c_in, hw, c_out, k, stride, pad, bn_in, dx;
    } L[] = {
        /* resnet-mini-28x28x1 / -32x32x3 3x3 stride-1 layers, then VGG's */
        {"r28_b1c1", 32, 14, 32, 3, 1, 1, 1, 1},
        {"r28_b2c2", 64, 7, 64, 3, 1, 1, 1, 1},
        {"r32_b1c1", 32, 16, 32, 3, 1, 1, 1, 1},
        {"r32_b2c2", 64, 8, 64, 3, 1, 1, 1, 1},
        {"r32_b3c", 64, 8, 32, 3, 1, 1, 1, 1},
        {"vgg_c1b", 32, 32, 32, 3, 1, 1, 1, 1},
        {"vgg_c2b", 64, 16, 64, 3, 1, 1, 1, 1},
        {"vgg_c3b", 128, 8, 128, 3, 1, 1, 1, 1},
        {"vgg_c4b", 256, 4, 256, 3, 1, 1, 1, 1},
        /* the stride-2 3x3 layers (wino_s2) */
        {"r32_b2c1", 32, 16, 64, 3, 2, 1, 1, 1},
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
