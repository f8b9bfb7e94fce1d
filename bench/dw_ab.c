/* The depthwise convolution (src/ops/conv_depthwise.c) of this tree against
 * the same algorithm built from another commit (bench/dw_ab.sh links that
 * build's objects with their symbols renamed old_...), alternated in one
 * process on MobileNet's depthwise layers (examples/nets/mobilenet-32x32x3.net,
 * batch norm + ReLU fused on both sides as the network runs them). A 96 MB
 * buffer is written between calls so that every call starts from memory, as
 * in a training step.
 *
 *   dw_ab [--batch B] [--rounds R] [--kernels generic|avx2|avx512]
 *
 * Per layer and pass: median thread CPU ms of each, the ratio old/new, and
 * whether the outputs (y, dx, dw) have the same bits. */
#include "dptrain/core.h"
#include "ops/conv_depthwise.h"
#include "ops/ops.h"

#include "bench_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void old_dpt_conv_depthwise_forward(const dpt_conv2d_desc *d, const float *x,
                                    const dpt_bn_apply *xa, const float *w, const float *b,
                                    float *y, float *work, double *sum, double *sumsq);
void old_dpt_conv_depthwise_backward(const dpt_conv2d_desc *d, const float *x,
                                     const dpt_bn_apply *xa, const float *w, const float *dy,
                                     const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                                     float *db, float *work, double *xg);
size_t old_dpt_conv_depthwise_work_floats(const dpt_conv2d_desc *d);

#define PROG "dw_ab"

static void *xmalloc(size_t n) { return bench_xmalloc(PROG, n); }
static float *randu(dpt_rng *r, size_t n, float s) { return bench_randu(PROG, r, n, s); }

enum { FLUSH_BYTES = 96 << 20 };
static unsigned char *flush_buf;

static void flush(void)
{
    for (size_t i = 0; i < FLUSH_BYTES; i += 64)
        flush_buf[i]++;
}

static void layer(dpt_rng *rng, const char *name, int n, int c, int hw, int stride, int rounds)
{
    dpt_conv2d_desc d = {.n = n, .c_in = c, .h = hw, .w = hw, .c_out = c, .kh = 3, .kw = 3,
                         .stride = stride, .pad = 1, .groups = c};
    if (dpt_conv2d_desc_init(&d) != 0)
        return;
    const size_t nx = (size_t)n * c * hw * hw, ny = (size_t)n * c * d.out_h * d.out_w;
    const size_t nw = 9 * (size_t)c;
    float *x = randu(rng, nx, 1.0f), *dy = randu(rng, ny, 1.0f), *yb = randu(rng, ny, 1.0f);
    float *w = randu(rng, nw, 0.3f), *pa = randu(rng, 12 * (size_t)c, 0.5f);
    float *y[2], *dx[2], *dw[2], *db[2];
    double *s[2];
    for (int a = 0; a < 2; a++) {
        y[a] = randu(rng, ny, 1.0f), dx[a] = randu(rng, nx, 1.0f);
        dw[a] = randu(rng, nw, 1.0f), db[a] = randu(rng, c, 1.0f);
        s[a] = xmalloc(4 * (size_t)c * sizeof(double));
    }
    for (int i = 0; i < c; i++)
        pa[c + i] += 1.0f;
    const dpt_bn_apply xa = {pa, pa + c, pa + 2 * c, 1, NULL, NULL, NULL};
    const dpt_bn_apply dya = {pa + 6 * c, pa + 7 * c,  pa + 8 * c, 1,
                              pa + 9 * c, pa + 10 * c, pa + 11 * c};
    size_t n_work = old_dpt_conv_depthwise_work_floats(&d);
    if (dpt_conv_depthwise_work_floats(&d) > n_work)
        n_work = dpt_conv_depthwise_work_floats(&d);
    float *work = randu(rng, n_work, 1.0f);
    double *t = xmalloc(4 * (size_t)rounds * sizeof *t); /* [old fwd, new fwd, old bwd, new bwd] */
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < 2; k++) {
            const int a = r % 2 ? 1 - k : k; /* which goes first alternates */
            flush();
            double t0 = bench_cpu_s();
            if (a == 0)
                old_dpt_conv_depthwise_forward(&d, x, &xa, w, NULL, y[a], work, s[a], s[a] + c);
            else
                dpt_conv_depthwise_forward(&d, x, &xa, w, NULL, y[a], work, s[a], s[a] + c);
            t[(size_t)a * rounds + r] = bench_cpu_s() - t0;
            flush();
            t0 = bench_cpu_s();
            if (a == 0)
                old_dpt_conv_depthwise_backward(&d, x, &xa, w, dy, &dya, yb, dx[a], dw[a], db[a],
                                                work, s[a] + 2 * c);
            else
                dpt_conv_depthwise_backward(&d, x, &xa, w, dy, &dya, yb, dx[a], dw[a], db[a],
                                            work, s[a] + 2 * c);
            t[(size_t)(2 + a) * rounds + r] = bench_cpu_s() - t0;
        }
    double med[4];
    for (int k = 0; k < 4; k++) {
        bench_sort(t + (size_t)k * rounds, rounds);
        med[k] = 1e3 * t[(size_t)k * rounds + rounds / 2];
    }
    printf("%-6s n%d %dx%dx%d s%d: forward old %.3f new %.3f ms %.2fx | backward old %.3f new "
           "%.3f ms %.2fx | same bits: y %d dx %d dw %d\n",
           name, n, hw, hw, c, stride, med[0], med[1], med[0] / med[1], med[2], med[3],
           med[2] / med[3], !memcmp(y[0], y[1], ny * sizeof(float)),
           !memcmp(dx[0], dx[1], nx * sizeof(float)), !memcmp(dw[0], dw[1], nw * sizeof(float)));
    for (int a = 0; a < 2; a++)
        free(y[a]), free(dx[a]), free(dw[a]), free(db[a]), free(s[a]);
    free(x), free(dy), free(yb), free(w), free(pa), free(work), free(t);
}

int main(int argc, char **argv)
{
    int batch = 128, rounds = 9;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
            if (bench_kernels(PROG, argv[++i]) != 0)
                return 1;
        } else {
            fprintf(stderr, "usage: dw_ab [--batch B] [--rounds R] [--kernels SET]\n");
            return 1;
        }
    }
    if (batch < 1 || batch > 4096 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "dw_ab: --batch 1-4096, --rounds 1-1000\n");
        return 1;
    }
    flush_buf = calloc(FLUSH_BYTES, 1);
    if (!flush_buf)
        return 1;
    dpt_rng rng;
    dpt_rng_seed(&rng, 7, 0);
    printf("depthwise, kernels %s, batch %d, median of %d alternated rounds\n", dpt_ops_kernels(),
           batch, rounds);
    layer(&rng, "b1_dw", batch, 32, 32, 1, rounds);
    layer(&rng, "b2_dw", batch, 64, 32, 2, rounds);
    layer(&rng, "b3_dw", batch, 128, 16, 1, rounds);
    layer(&rng, "b4_dw", batch, 128, 16, 2, rounds);
    free(flush_buf);
    return 0;
}
