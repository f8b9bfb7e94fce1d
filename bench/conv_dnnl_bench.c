/* oneDNN's convolutions (the dnnl algorithm, in its two layouts) against
 * dptrain's GEMM and DIRECT algorithms on the conv shapes of bench/suite.py's
 * networks, one layer at a time, alternated in one process.
 *
 *   conv_dnnl_bench [--batch B] [--rounds R] [--filter NAME]
 *
 * Per shape and candidate: forward (with the bias off, as the suite's convs
 * have bias=0) and backward (dx, dw; db off) on random data, timed once per
 * round with the candidates alternating inside every round; the fastest of
 * R rounds is printed as ms and GFLOP/s (2·MACs per pass; thread CPU time,
 * and the fastest round: the one least disturbed on a shared machine). Candidates:
 * gemm, direct (where it applies), dnnl:plain (NCHW/OIHW into oneDNN, its
 * GEMM-based convolution), dnnl:any (oneDNN's blocked layouts, reordered
 * every call) and dnnl (the automatic choice per shape). Built by
 * bench/conv_dnnl_bench.sh. */
#include "dptrain/core.h"
#include "ops/conv_algo.h"
#include "ops/conv_dnnl.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
    const char *name;
    int c_in, hw, c_out, k, stride, pad, groups;
} shape;

/* The example network (28x28x1) and the suite's networks (examples/nets). */
static const shape shapes[] = {
    {"example conv1 5x5 1->20", 1, 28, 20, 5, 1, 0, 1},
    {"example conv2 3x3 20->20", 20, 24, 20, 3, 1, 1, 1},
    {"vgg c1b 3x3 32->32 @32", 32, 32, 32, 3, 1, 1, 1},
    {"vgg c2a 3x3 32->64 s2", 32, 32, 64, 3, 2, 1, 1},
    {"vgg c2b 3x3 64->64 @16", 64, 16, 64, 3, 1, 1, 1},
    {"vgg c3a 3x3 64->128 s2", 64, 16, 128, 3, 2, 1, 1},
    {"vgg c3b 3x3 128->128 @8", 128, 8, 128, 3, 1, 1, 1},
    {"vgg c4a 3x3 128->256 s2", 128, 8, 256, 3, 2, 1, 1},
    {"vgg c4b 3x3 256->256 @4", 256, 4, 256, 3, 1, 1, 1},
    {"stem 3x3 3->32 @32", 3, 32, 32, 3, 1, 1, 1},
    {"resnet b2_proj 1x1 32->64 s2", 32, 32, 64, 1, 2, 0, 1},
    {"resnet b3_a 1x1 64->32 @16", 64, 16, 32, 1, 1, 0, 1},
    {"mobile b1_dw 3x3 dw32 @32", 32, 32, 32, 3, 1, 1, 32},
    {"mobile b1_pw 1x1 32->64 @32", 32, 32, 64, 1, 1, 0, 1},
    {"mobile b2_dw 3x3 dw64 s2", 64, 32, 64, 3, 2, 1, 64},
    {"mobile b2_pw 1x1 64->128 @16", 64, 16, 128, 1, 1, 0, 1},
    {"mobile b3_dw 3x3 dw128 @16", 128, 16, 128, 3, 1, 1, 128},
    {"mobile b4_pw 1x1 128->256 @8", 128, 8, 256, 1, 1, 0, 1},
    {"mobile b5_dw 3x3 g4 256 s2", 256, 8, 256, 3, 2, 1, 4},
};

enum { C_GEMM, C_DIRECT, C_PLAIN, C_ANY, C_AUTO, C_COUNT };
static const char *const cand_name[C_COUNT] = {"gemm", "direct", "dnnl:plain", "dnnl:any",
                                               "dnnl"};

/* Thread CPU time: every candidate runs on this thread alone (oneDNN
 * included, see conv_dnnl.c), and CPU time leaves out the time other
 * processes of a loaded machine take the core away. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *rnd(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "conv_dnnl_bench: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    return p;
}

/* Sets d->algo (and the dnnl layout) for candidate c; 0 when it cannot run d. */
static int select(int c, dpt_conv2d_desc *d)
{
    static const char *const layout[C_COUNT] = {NULL, NULL, "plain", "any", "auto"};
    d->algo = c == C_GEMM ? DPT_CONV_ALGO_GEMM
              : c == C_DIRECT ? DPT_CONV_ALGO_DIRECT
                              : DPT_CONV_ALGO_DNNL;
    if (layout[c])
        dpt_conv_dnnl_set_layout(layout[c]);
    return dpt_conv_algo_supports(d->algo, d);
}

int main(int argc, char **argv)
{
    int batch = 128, rounds = 7;
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
            filter = argv[++i];
        else {
            fprintf(stderr, "usage: conv_dnnl_bench [--batch B] [--rounds R] [--filter NAME]\n");
            return 2;
        }
    }
    if (batch < 1 || batch > 4096 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "conv_dnnl_bench: --batch 1..4096, --rounds 1..1000\n");
        return 2;
    }
    dpt_blas_set_threads(1); /* one core per worker, as training runs */
    printf("# batch %d, %d rounds, fastest round's CPU ms (GFLOP/s) forward | backward (dx+dw)\n", batch,
           rounds);
    printf("%-30s", "shape");
    for (int c = 0; c < C_COUNT; c++)
        printf(" | %-21s", cand_name[c]);
    printf(" | speed-up of the best dnnl over the best own (fwd+bwd)\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        if (filter && !strstr(sh->name, filter))
            continue;
        dpt_conv2d_desc d = {.n = batch, .c_in = sh->c_in, .h = sh->hw, .w = sh->hw,
                             .c_out = sh->c_out, .kh = sh->k, .kw = sh->k, .stride = sh->stride,
                             .pad = sh->pad, .groups = sh->groups};
        if (dpt_conv2d_desc_init(&d) != 0)
            return 1;
        int ok[C_COUNT];
        size_t wf = 0;
        for (int c = 0; c < C_COUNT; c++) {
            ok[c] = select(c, &d);
            size_t f = ok[c] ? dpt_conv2d_work_floats(&d) : 0;
            wf = f > wf ? f : wf;
        }
        const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
        const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
        const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
        float *x = rnd(nx), *w = rnd(nw), *y = rnd(ny), *dy = rnd(ny), *dx = rnd(nx);
        float *dw = rnd(nw), *work = rnd(wf);
        const double flop = 2.0 * (double)ny * (double)(d.c_in / d.groups) * d.kh * d.kw;
        double *tf = calloc((size_t)C_COUNT * rounds, sizeof *tf);
        double *tb = calloc((size_t)C_COUNT * rounds, sizeof *tb);
        if (!tf || !tb)
            return 1;
        for (int c = 0; c < C_COUNT; c++) { /* warm-up (creates primitives) */
            if (!ok[c] || !select(c, &d))
                continue;
            dpt_conv2d_forward_ex(&d, x, NULL, w, NULL, y, work, NULL, NULL);
            dpt_conv2d_backward_ex(&d, x, NULL, w, dy, NULL, NULL, dx, dw, NULL, work, NULL);
        }
        for (int r = 0; r < rounds; r++)
            for (int c = 0; c < C_COUNT; c++) {
                if (!ok[c])
                    continue;
                select(c, &d);
                double t0 = now_s();
                dpt_conv2d_forward_ex(&d, x, NULL, w, NULL, y, work, NULL, NULL);
                double t1 = now_s();
                dpt_conv2d_backward_ex(&d, x, NULL, w, dy, NULL, NULL, dx, dw, NULL, work, NULL);
                double t2 = now_s();
                tf[c * rounds + r] = t1 - t0;
                tb[c * rounds + r] = t2 - t1;
            }
        printf("%-30s", sh->name);
        double best_own = 0, best_dnnl = 0;
        for (int c = 0; c < C_COUNT; c++) {
            if (!ok[c]) {
                printf(" | %-21s", "-");
                continue;
            }
            qsort(tf + c * rounds, rounds, sizeof *tf, cmp_double);
            qsort(tb + c * rounds, rounds, sizeof *tb, cmp_double);
            double f = tf[c * rounds], b = tb[c * rounds];
            char cell[64];
            snprintf(cell, sizeof cell, "%.2f(%.0f)|%.2f(%.0f)", 1e3 * f, flop / f * 1e-9, 1e3 * b,
                     2 * flop / b * 1e-9);
            printf(" | %-21s", cell);
            double *best = c <= C_DIRECT ? &best_own : &best_dnnl;
            if (*best == 0 || f + b < *best)
                *best = f + b;
        }
        if (best_own > 0 && best_dnnl > 0)
            printf(" | %.2fx\n", best_own / best_dnnl);
        else
            printf(" |\n");
        fflush(stdout);
        free(x), free(w), free(y), free(dy), free(dx), free(dw), free(work), free(tf), free(tb);
    }
    dpt_conv_dnnl_release();
    return 0;
}
