/* The precision of the Winograd convolutions (wino F(2x2,3x3), wino4
 * F(4x4,3x3)) at wide layers, against a double-precision reference, with
 * gemm and hwc for scale: bench/RESULTS-wino.md, "Precision at wide
 * layers". One layer, 3x3, padding 1, 8x8 outputs (stride 1: 8x8 input;
 * stride 2: 16x16, for wino_s2):
 *
 *   wino_err C_IN C_OUT BN_IN [KERNELS [IMAGES [STRIDE]]]
 *
 * BN_IN 1: a batch norm + ReLU applied to the input on the fly. Prints per
 * algorithm the largest difference from the reference over y, dx and dw,
 * relative to the largest magnitude of each. Build (as bench/wino_bench.sh
 * links wino_bench):
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/wino_err.c \
 *      build/libdptrain.a -lopenblas -lz -lstb -lcjson -lm -lpthread [-ldnnl -lgomp] [MPI] */
#include "dptrain/core.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void fill(float *v, size_t n, unsigned long long *s, float scale)
{
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
        v[i] = scale * ((float)(*s >> 40) / (float)(1u << 24) * 2 - 1);
    }
}

/* max |got - ref| / max |ref| */
static double rel(const float *got, const double *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(got[i] - ref[i]) > md)
            md = fabs(got[i] - ref[i]);
        if (fabs(ref[i]) > mr)
            mr = fabs(ref[i]);
    }
    return md / mr;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: wino_err C_IN C_OUT BN_IN [KERNELS [IMAGES [STRIDE]]]\n");
        return 2;
    }
    const int CI = atoi(argv[1]), CO = atoi(argv[2]), bnin = atoi(argv[3]);
    const int N = argc > 5 ? atoi(argv[5]) : 2, S = argc > 6 ? atoi(argv[6]) : 1;
    const int OH = 8, OW = 8, H = OH * S, W = OW * S;
    const char *ks = argc > 4 ? argv[4] : "auto";
    if (CI < 1 || CO < 1 || N < 1 || S < 1 || S > 2 || dpt_ops_set_kernels(ks) != 0) {
        fprintf(stderr, "wino_err: bad arguments\n");
        return 2;
    }
    const size_t nx = (size_t)N * CI * H * W, ny = (size_t)N * CO * OH * OW, nw = (size_t)CO * CI * 9;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *dy = malloc(ny * 4), *bn = malloc(6 * (size_t)CI * 4);
    double *xin = malloc(nx * 8), *yr = calloc(ny, 8), *dxr = calloc(nx, 8), *dwr = calloc(nw, 8);
    if (!x || !w || !dy || !bn || !xin || !yr || !dxr || !dwr)
        return 1;
    unsigned long long s = 0x1234567ull;
    fill(x, nx, &s, 1), fill(w, nw, &s, 1), fill(dy, ny, &s, 1), fill(bn, 6 * (size_t)CI, &s, .5f);
    for (int i = 0; i < CI; i++)
        bn[CI + i] += 1; /* scale near 1 */
    dpt_bn_apply ap = {bn, bn + CI, bn + 2 * CI, 1, bn + 3 * CI, bn + 4 * CI, bn + 5 * CI};
    /* The reference in double, on the input as the convolution sees it (the
     * ReLU mask from the same float expression as dpt_bn_apply's). */
    for (size_t k = 0; k < nx; k++) {
        const int c = (int)(k / (H * W) % CI);
        const float z = (x[k] - ap.mean[c]) * ap.scale[c] + ap.shift[c];
        xin[k] = !bnin ? x[k] : z > 0 ? ((double)x[k] - ap.mean[c]) * ap.scale[c] + ap.shift[c] : 0;
    }
    for (int i = 0; i < N; i++)
        for (int co = 0; co < CO; co++)
            for (int ci = 0; ci < CI; ci++)
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++) {
                        const size_t wi = ((size_t)co * CI + ci) * 9 + a * 3 + b;
                        const double wv = w[wi];
                        for (int oy = 0; oy < OH; oy++) {
                            const int iy = oy * S + a - 1;
                            if (iy < 0 || iy >= H)
                                continue;
                            for (int ox = 0; ox < OW; ox++) {
                                const int ix = ox * S + b - 1;
                                if (ix < 0 || ix >= W)
                                    continue;
                                const size_t xi = (((size_t)i * CI + ci) * H + iy) * W + ix;
                                const size_t yi = (((size_t)i * CO + co) * OH + oy) * OW + ox;
                                yr[yi] += wv * xin[xi];
                                dxr[xi] += wv * dy[yi];
                                dwr[wi] += xin[xi] * dy[yi];
                            }
                        }
                    }
    const int algos[] = {DPT_CONV_ALGO_GEMM, DPT_CONV_ALGO_HWC, DPT_CONV_ALGO_WINO,
                         DPT_CONV_ALGO_WINO4, DPT_CONV_ALGO_WINO_S2};
    for (int k = 0; k < 5; k++) {
        dpt_conv2d_desc d = {.n = N, .c_in = CI, .h = H, .w = W, .c_out = CO, .kh = 3, .kw = 3,
                             .stride = S, .pad = 1};
        if (dpt_conv2d_desc_init(&d) != 0)
            return 1;
        d.algo = algos[k];
        if (!dpt_conv_algo_supports(d.algo, &d)) {
            printf("%s ci=%d co=%d bn=%d %s: unsupported\n", ks, CI, CO, bnin,
                   dpt_conv_algo_name(d.algo));
            continue;
        }
        float *y = malloc(ny * 4), *dx = malloc(nx * 4), *dw = malloc(nw * 4), *db = malloc((size_t)CO * 4);
        float *work = calloc(dpt_conv2d_work_floats(&d) + 1, 4);
        double *xg = malloc(2 * (size_t)CI * 8);
        if (!y || !dx || !dw || !db || !work || !xg)
            return 1;
        dpt_conv2d_forward_ex(&d, x, bnin ? &ap : NULL, w, NULL, y, work, NULL, NULL);
        dpt_conv2d_backward_ex(&d, x, bnin ? &ap : NULL, w, dy, NULL, NULL, dx, dw, db, work,
                               bnin ? xg : NULL);
        printf("%s ci=%d co=%d bn=%d %s: y %.2e dx %.2e dw %.2e\n", ks, CI, CO, bnin,
               dpt_conv_algo_name(d.algo), rel(y, yr, ny), rel(dx, dxr, nx), rel(dw, dwr, nw));
        free(y), free(dx), free(dw), free(db), free(work), free(xg);
    }
    free(x), free(w), free(dy), free(bn), free(xin), free(yr), free(dxr), free(dwr);
    return 0;
}
