/* What the batch-norm fusions of net.c save, measured on the example
 * network's shapes at minibatch 128: each fused call against the unfused
 * sequence it replaces, alternated in one process, medians of R rounds.
 *
 *   fusion_bench [--rounds R]
 *
 * fc (11,520 -> 10) over bn3 + ReLU:
 *   forward   unfused: dpt_bn_normalize_relu, then dpt_linear_forward
 *             fused:   dpt_linear_forward_ex
 *   backward  unfused: dpt_linear_backward on the normalised input, then
 *                      dpt_bn_backward_sums_relu over dx
 *             fused:   dpt_linear_backward_ex with the sums
 * conv3 (20 -> 20, 3x3, 24x24) over bn2 + ReLU, backward:
 *             unfused: dpt_conv2d_backward_ex, then dpt_bn_grad_sums over dx
 *             fused:   dpt_conv2d_backward_ex with the sums
 *
 * Build (as step_bench): cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude
 *   -Isrc bench/fusion_bench.c build-bench/libdptrain.a -lopenblas -lm
 *   -lpthread -o fusion_bench */
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { N = 128, C = 20, HW = 576, OUT = 10, MAX_ROUNDS = 99 };

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *filled(size_t n, float scale, float shift)
{
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "fusion_bench: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = shift + scale * ((float)rand() / (float)RAND_MAX - 0.5f);
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    int rounds = 9;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: fusion_bench [--rounds R]   (R from 1 to %d, default 9)\n",
                    MAX_ROUNDS);
            return 1;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "fusion_bench: --rounds must be from 1 to %d\n", MAX_ROUNDS);
        return 1;
    }
    const int in = C * HW;
    const size_t nx = (size_t)N * in;
    float *x = filled(nx, 2.0f, 0.1f), *z = filled(nx, 0, 0), *dx = filled(nx, 0, 0);
    float *w = filled((size_t)OUT * in, 0.02f, 0), *dw = filled((size_t)OUT * in, 0, 0);
    float *dy = filled((size_t)N * OUT, 1.0f, 0), *y = filled((size_t)N * OUT, 0, 0);
    float *b = filled(OUT, 0, 0), *db = filled(OUT, 0, 0), *work = filled((size_t)in, 0, 0);
    float *prm = filled(4 * C, 0.2f, 0); /* mean, scale, shift; invstd 1 */
    for (int c = 0; c < C; c++)
        prm[C + c] += 1.0f, prm[3 * C + c] = 1.0f;
    dpt_bn_apply a = {.mean = prm, .scale = prm + C, .shift = prm + 2 * C, .relu = 1};
    double xg[2 * C];

    dpt_conv2d_desc d = {.n = N, .c_in = C, .h = 24, .w = 24, .c_out = C, .kh = 3, .kw = 3,
                         .stride = 1, .pad = 1};
    if (dpt_conv2d_desc_init(&d) != 0)
        return 1;
    float *cw = filled((size_t)C * C * 9, 0.2f, 0), *cdw = filled((size_t)C * C * 9, 0, 0);
    float *cdb = filled(C, 0, 0), *cwork = filled(dpt_conv2d_work_floats(&d), 0, 0);
    float *cdy = filled(nx, 1.0f, 0);

    double t[6][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        dpt_bn_normalize_relu(x, N, C, HW, a.mean, prm + 3 * C, a.scale, a.shift, z);
        dpt_linear_forward(z, w, b, y, N, in, OUT);
        double t1 = now_s();
        dpt_linear_forward_ex(x, &a, HW, w, b, y, N, in, OUT, work);
        double t2 = now_s();
        dpt_linear_backward(z, w, dy, dx, dw, db, N, in, OUT);
        dpt_bn_backward_sums_relu(x, dx, N, C, HW, a.mean, prm + 3 * C, a.scale, a.shift, xg,
                                  xg + C);
        double t3 = now_s();
        dpt_linear_backward_ex(x, &a, HW, w, dy, dx, dw, db, N, in, OUT, work, xg);
        double t4 = now_s();
        dpt_conv2d_backward_ex(&d, x, &a, cw, cdy, NULL, NULL, dx, cdw, cdb, cwork, NULL);
        memset(xg, 0, sizeof xg);
        dpt_bn_grad_sums(x, dx, N, C, HW, &a, xg, xg + C);
        double t5 = now_s();
        dpt_conv2d_backward_ex(&d, x, &a, cw, cdy, NULL, NULL, dx, cdw, cdb, cwork, xg);
        double t6 = now_s();
        t[0][r] = t1 - t0, t[1][r] = t2 - t1, t[2][r] = t3 - t2;
        t[3][r] = t4 - t3, t[4][r] = t5 - t4, t[5][r] = t6 - t5;
    }
    const char *what[3] = {"fc forward over bn3", "fc backward with bn3's sums",
                           "conv3 backward with bn2's sums"};
    printf("fusion_bench: minibatch %d, kernels %s, medians of %d alternated rounds (ms)\n", N,
           dpt_ops_kernels(), rounds);
    for (int k = 0; k < 3; k++) {
        double u = median(t[2 * k], rounds), f = median(t[2 * k + 1], rounds);
        printf("  %-32s unfused %7.2f  fused %7.2f  fused/unfused %.2f\n", what[k], 1e3 * u,
               1e3 * f, f / u);
    }
    free(x), free(z), free(dx), free(w), free(dw), free(dy), free(y), free(b), free(db);
    free(work), free(prm), free(cw), free(cdw), free(cdb), free(cwork), free(cdy);
    return 0;
}
