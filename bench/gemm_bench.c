/* dptrain's GEMM (src/ops/gemm.c) against OpenBLAS and BLIS on the GEMM
 * shapes of the suite networks' convolutions (lowered over a block of
 * images, as conv_batched.c does) and fully connected layers. One thread
 * each, as a worker trains.
 *
 *   bench/gemm_bench.sh builds it and runs it twice: OpenBLAS as the
 *   machine sets it (OPENBLAS_CORETYPE from the environment) and with
 *   OPENBLAS_CORETYPE=SkylakeX (a separate process: OpenBLAS reads it once
 *   when loaded).
 *   gemm_bench [--rounds R] [--quick] [--only TEXT] [--conv [--batch N]] [--lstm]
 *
 * --conv: whole convolution layers of the suite networks instead (batch N,
 * default 128, as one worker trains it): the conv algorithms "gemm"
 * (im2col per image + cblas_sgemm, the reference), "batched" (this GEMM
 * over blocks of images, conv_batched.c) and "direct" where it runs the
 * shape, alternated; median ms of a forward and of a backward (dx, dw,
 * db) and batched's speed-up over gemm.
 * --lstm: the LSTM's weight gradient dW_hh [4H, H] = dHpᵀ · hprev over
 * S rows, rnn_kern.h's fused kernel (what rnn.c uses) against this GEMM
 * and OpenBLAS (the character model: S 4096, H 256; and H 512).
 *
 * Candidates, alternated within each round (so load on the machine hits
 * them alike): dptrain's GEMM with the avx512 and the avx2 kernel sets
 * (those the CPU has), cblas_sgemm of the linked OpenBLAS, and BLIS's
 * bli_sgemm from libblis.so.4, opened with dlopen(RTLD_LOCAL) so its own
 * cblas_* symbols never meet OpenBLAS's (skipped when absent). Per shape:
 * the median GFLOP/s of each and dptrain's ratio to each library (> 1:
 * dptrain faster), and the largest difference of each result from
 * dptrain's, relative to the largest |C|. */
#define _GNU_SOURCE
#include "dptrain/dptrain.h"
#include "ops/gemm.h"
#include "ops/ops.h"
#include "ops/rnn_isa.h"

#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openblas_get_corename(void);

/* This thread's CPU time: on a machine shared with other jobs, the time
 * the thread was descheduled does not count (caches are still shared). */
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

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One GEMM of the suite: C [m, n] = op(A) · op(B), op(A) [m, k]. */
typedef struct shape {
    const char *what;
    int ta, tb, m, n, k;
} shape;

/* A convolution over a block of nb images of P output pixels: the three
 * products conv_batched.c makes (K = c_in/groups · kh · kw). */
#define CONV(name, cin, cout, kk, p, nb)                                                  \
    {name " fwd  y=W*col", 0, 0, cout, (nb) * (p), (cin) * (kk) * (kk)},                  \
        {name " dW=dy*colT", 0, 1, cout, (cin) * (kk) * (kk), (nb) * (p)},                \
        {name " dcol=WT*dy", 1, 0, (cin) * (kk) * (kk), (nb) * (p), cout}

static const shape shapes[] = {
    /* examples/nets/vgg-wide-32x32x3.net, in conv_batched.c's blocks of
     * nb images (nb·P ≥ 256 columns) */
    CONV("vgg c1b 32>32 3x3 32x32 nb1", 32, 32, 3, 1024, 1),
    CONV("vgg c2a 32>64 3x3/2 16x16 nb1", 32, 64, 3, 256, 1),
    CONV("vgg c2b 64>64 3x3 16x16 nb1", 64, 64, 3, 256, 1),
    CONV("vgg c3a 64>128 3x3/2 8x8 nb4", 64, 128, 3, 64, 4),
    CONV("vgg c3b 128>128 3x3 8x8 nb4", 128, 128, 3, 64, 4),
    CONV("vgg c4a 128>256 3x3/2 4x4 nb16", 128, 256, 3, 16, 16),
    CONV("vgg c4b 256>256 3x3 4x4 nb16", 256, 256, 3, 16, 16),
    /* examples/nets/mobilenet-32x32x3.net: the pointwise convolutions */
    CONV("mbn b1_pw 32>64 1x1 32x32 nb1", 32, 64, 1, 1024, 1),
    CONV("mbn b3_pw 128>128 1x1 16x16 nb1", 128, 128, 1, 256, 1),
    CONV("mbn b5_pw 256>256 1x1 8x8 nb4", 256, 256, 1, 64, 4),
    /* examples/nets/resnet-mini-28x28x1.net: 16 channels, stride-2 to 32 */
    CONV("res28 16>16 3x3 28x28 nb1", 16, 16, 3, 784, 1),
    CONV("res28 16>32 3x3/2 14x14 nb2", 16, 32, 3, 196, 2),
    /* the example network (DESIGN.md): conv 3x3 20 -> 20 at 28x28, one image
     * per GEMM as the reference path lowers it */
    CONV("example 20>20 3x3 28x28 nb1", 20, 20, 3, 784, 1),
    /* fc: the character language model's 4096 x 256 -> 89 */
    {"fc charlm fwd  y=x*wT", 0, 1, 4096, 89, 256},
    {"fc charlm dx=dy*w", 0, 0, 4096, 256, 89},
    {"fc charlm dw=dyT*x", 1, 0, 89, 256, 4096},
    /* fc: a wide classifier head, batch 128, 1024 -> 1000 */
    {"fc 1024>1000 fwd  y=x*wT", 0, 1, 128, 1000, 1024},
    {"fc 1024>1000 dx=dy*w", 0, 0, 128, 1024, 1000},
    {"fc 1024>1000 dw=dyT*x", 1, 0, 1000, 1024, 128},
    /* the LSTM's input projection: 4096 steps x 89 -> 4·256 gates */
    {"lstm x*W_ihT 4096x89>1024", 0, 1, 4096, 1024, 89},
    {"lstm dx=dP*W_ih", 0, 0, 4096, 89, 1024},
    {"lstm dW_ih=dPT*x", 1, 0, 1024, 89, 4096},
};

/* BLIS's typed API (blis.h, 0.9): dim_t and inc_t are 64-bit, trans_t an
 * enum whose BLIS_NO_TRANSPOSE is 0; transposes go through the strides. */
typedef void (*bli_sgemm_fn)(int transa, int transb, int64_t m, int64_t n, int64_t k,
                             float *alpha, float *a, int64_t rsa, int64_t csa, float *b,
                             int64_t rsb, int64_t csb, float *beta, float *c, int64_t rsc,
                             int64_t csc);
static bli_sgemm_fn bli_sgemm_p;

static void open_blis(void)
{
    /* One thread whichever threading the installed libblis4 was built with. */
    setenv("BLIS_NUM_THREADS", "1", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    void *h = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "gemm_bench: BLIS skipped (%s)\n", dlerror());
        return;
    }
    void (*set_threads)(int64_t) = (void (*)(int64_t))dlsym(h, "bli_thread_set_num_threads");
    if (set_threads)
        set_threads(1);
    bli_sgemm_p = (bli_sgemm_fn)dlsym(h, "bli_sgemm");
    if (!bli_sgemm_p)
        fprintf(stderr, "gemm_bench: BLIS skipped (no bli_sgemm)\n");
}

enum { C_AVX512, C_AVX2, C_OPENBLAS, C_BLIS, N_CAND };
static const char *const cand_name[N_CAND] = {"dpt-avx512", "dpt-avx2", "openblas", "blis"};

static void run(int c, const shape *s, const float *A, int lda, const float *B, int ldb,
                float *C)
{
    switch (c) {
    case C_AVX512:
    case C_AVX2:
        dpt_ops_set_kernels(c == C_AVX512 ? "avx512" : "avx2");
        dpt_sgemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, A, lda, B, ldb, 0.0f, C, s->n);
        break;
    case C_OPENBLAS:
        cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                    s->tb ? CblasTrans : CblasNoTrans, s->m, s->n, s->k, 1.0f, A, lda, B, ldb,
                    0.0f, C, s->n);
        break;
    case C_BLIS: {
        float one = 1.0f, zero = 0.0f;
        bli_sgemm_p(0, 0, s->m, s->n, s->k, &one, (float *)A, s->ta ? 1 : lda, s->ta ? lda : 1,
                    (float *)B, s->tb ? 1 : ldb, s->tb ? ldb : 1, &zero, C, s->n, 1);
        break;
    }
    default: break;
    }
}

/* ---- --conv: whole layers through dpt_conv2d_* with a named algorithm ---- */

typedef struct conv_layer {
    const char *what;
    int c_in, h, c_out, k, stride, pad, groups;
} conv_layer;

static const conv_layer layers[] = {
    {"vgg c1a", 3, 32, 32, 3, 1, 1, 1},
    {"vgg c1b", 32, 32, 32, 3, 1, 1, 1},
    {"vgg c2a", 32, 32, 64, 3, 2, 1, 1},
    {"vgg c2b", 64, 16, 64, 3, 1, 1, 1},
    {"vgg c3a", 64, 16, 128, 3, 2, 1, 1},
    {"vgg c3b", 128, 8, 128, 3, 1, 1, 1},
    {"vgg c4a", 128, 8, 256, 3, 2, 1, 1},
    {"vgg c4b", 256, 4, 256, 3, 1, 1, 1},
    {"mbn b1_pw 1x1", 32, 32, 64, 1, 1, 0, 1},
    {"mbn b3_pw 1x1", 128, 16, 128, 1, 1, 0, 1},
    {"mbn b5_pw 1x1", 256, 8, 256, 1, 1, 0, 1},
    {"res28 16>32/2", 16, 28, 32, 3, 2, 1, 1},
    {"res32 32>64/2", 32, 16, 64, 3, 2, 1, 1},
    {"grouped 64/4", 64, 16, 64, 3, 1, 1, 4},
    {"example c2", 20, 28, 20, 3, 1, 1, 1},
};

static int conv_main(int rounds, int batch, const char *only)
{
    static const int algos[] = {DPT_CONV_ALGO_GEMM, DPT_CONV_ALGO_BATCHED, DPT_CONV_ALGO_DIRECT};
    enum { N_ALGO = 3 };
    printf("# conv layers, batch %d, kernels %s, %d rounds, one thread; median ms per pass "
           "(fwd = forward, bwd = backward with dx, dw, db); OpenBLAS %s\n",
           batch, dpt_ops_kernels(), rounds, openblas_get_corename());
    printf("%-16s %-22s %8s %8s %8s %8s %8s %8s  %6s %6s  %s\n", "layer", "shape", "gemm fwd",
           "bwd", "batched", "bwd", "direct", "bwd", "x fwd", "x bwd", "batched GFLOP/s f/b");
    unsigned seed = 3;
    for (size_t li = 0; li < sizeof layers / sizeof *layers; li++) {
        const conv_layer *L = &layers[li];
        if (only && !strstr(L->what, only))
            continue;
        dpt_conv2d_desc d = {.n = batch, .c_in = L->c_in, .h = L->h, .w = L->h,
                             .c_out = L->c_out, .kh = L->k, .kw = L->k, .stride = L->stride,
                             .pad = L->pad, .groups = L->groups};
        if (dpt_conv2d_desc_init(&d) != 0)
            continue;
        const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
        const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
        const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
        size_t nwork = 0;
        for (int a = 0; a < N_ALGO; a++) {
            d.algo = algos[a];
            size_t f = dpt_conv2d_work_floats(&d);
            nwork = f > nwork ? f : nwork;
        }
        float *x = malloc(nx * sizeof *x), *dx = malloc(nx * sizeof *dx);
        float *y = malloc(ny * sizeof *y), *dy = malloc(ny * sizeof *dy);
        float *w = malloc(nw * sizeof *w), *dw = malloc(nw * sizeof *dw);
        float *db = malloc((size_t)d.c_out * sizeof *db), *work = malloc(nwork * sizeof *work);
        if (!x || !dx || !y || !dy || !w || !dw || !db || !work) {
            fprintf(stderr, "gemm_bench: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        for (size_t i = 0; i < ny; i++)
            dy[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        for (size_t i = 0; i < nw; i++)
            w[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        double tf[N_ALGO][1000], tb[N_ALGO][1000];
        int have[N_ALGO];
        for (int a = 0; a < N_ALGO; a++) {
            have[a] = dpt_conv_algo_supports(algos[a], &d);
            d.algo = algos[a];
            if (have[a]) { /* warm up */
                dpt_conv2d_forward(&d, x, w, NULL, y, work);
                dpt_conv2d_backward(&d, x, w, dy, dx, dw, db, work);
            }
        }
        for (int r = 0; r < rounds; r++)
            for (int a0 = 0; a0 < N_ALGO; a0++) {
                const int a = (a0 + r) % N_ALGO;
                if (!have[a])
                    continue;
                d.algo = algos[a];
                double t0 = now_s();
                dpt_conv2d_forward(&d, x, w, NULL, y, work);
                double t1 = now_s();
                dpt_conv2d_backward(&d, x, w, dy, dx, dw, db, work);
                tf[a][r] = t1 - t0;
                tb[a][r] = now_s() - t1;
            }
        double mf[N_ALGO] = {0}, mb[N_ALGO] = {0};
        char shp[64];
        snprintf(shp, sizeof shp, "%dx%dx%d>%d k%d s%d g%d", d.h, d.w, d.c_in, d.c_out, d.kh,
                 d.stride, d.groups);
        printf("%-16s %-22s", L->what, shp);
        for (int a = 0; a < N_ALGO; a++) {
            if (have[a]) {
                mf[a] = median(tf[a], rounds) * 1e3;
                mb[a] = median(tb[a], rounds) * 1e3;
                printf(" %8.2f %8.2f", mf[a], mb[a]);
            } else {
                printf(" %8s %8s", "-", "-");
            }
        }
        const double flop = 2.0 * d.n * d.c_out * d.out_h * d.out_w * (d.c_in / d.groups) * d.kh * d.kw;
        printf("  %6.2f %6.2f  %.0f/%.0f\n", mf[0] / mf[1], mb[0] / mb[1], flop / mf[1] * 1e-6,
               2 * flop / mb[1] * 1e-6);
        fflush(stdout);
        free(x), free(dx), free(y), free(dy), free(w), free(dw), free(db), free(work);
    }
    return 0;
}

/* ---- --lstm: dW_hh by the recurrent kernels' own dw against the GEMMs ---- */

static int lstm_main(int rounds)
{
#ifdef DPT_HAVE_RNN_X86
    static const int hs[] = {128, 256, 512};
    const int S = 4096;
    printf("# LSTM dW_hh [4H, H] = dHp^T [4H, S] . hprev [S, H], S %d, %d rounds, one thread, "
           "median ms; OpenBLAS %s\n",
           S, rounds, openblas_get_corename());
    printf("%5s %10s %10s %10s %10s  %s\n", "H", "rnn dw", "dpt-avx512", "dpt-avx2", "openblas",
           "rnn/dpt-avx512");
    unsigned seed = 5;
    for (size_t hi = 0; hi < sizeof hs / sizeof *hs; hi++) {
        const int H = hs[hi], GH = 4 * H;
        float *dp = malloc((size_t)S * GH * sizeof *dp), *hp = malloc((size_t)S * H * sizeof *hp);
        float *dw = malloc((size_t)GH * H * sizeof *dw);
        for (size_t i = 0; i < (size_t)S * GH; i++)
            dp[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        for (size_t i = 0; i < (size_t)S * H; i++)
            hp[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        double t[4][1000];
        for (int r = -1; r < rounds; r++)
            for (int c = 0; c < 4; c++) {
                const double t0 = now_s();
                switch (c) {
                case 0: dpt_rnn_isa_avx512.dw(dp, S, GH, hp, H, dw); break;
                case 1:
                case 2:
                    dpt_ops_set_kernels(c == 1 ? "avx512" : "avx2");
                    dpt_sgemm(1, 0, GH, H, S, 1.0f, dp, GH, hp, H, 0.0f, dw, H);
                    break;
                default:
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, GH, H, S, 1.0f, dp, GH,
                                hp, H, 0.0f, dw, H);
                }
                if (r >= 0)
                    t[c][r] = now_s() - t0;
            }
        double m[4];
        for (int c = 0; c < 4; c++)
            m[c] = median(t[c], rounds) * 1e3;
        printf("%5d %10.2f %10.2f %10.2f %10.2f  %.2f\n", H, m[0], m[1], m[2], m[3], m[0] / m[1]);
        free(dp), free(hp), free(dw);
    }
    dpt_ops_set_kernels("auto");
#else
    (void)rounds;
#endif
    return 0;
}

int main(int argc, char **argv)
{
    int rounds = 7, quick = 0, conv = 0, lstm = 0, batch = 128;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            if (rounds < 1 || rounds > 1000) {
                fprintf(stderr, "gemm_bench: --rounds: 1 to 1000\n");
                return 1;
            }
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--lstm") == 0) {
            lstm = 1;
        } else if (strcmp(argv[i], "--conv") == 0) {
            conv = 1;
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            batch = atoi(argv[++i]);
            if (batch < 1 || batch > 4096) {
                fprintf(stderr, "gemm_bench: --batch: 1 to 4096\n");
                return 1;
            }
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            fprintf(stderr, "usage: gemm_bench [--rounds R] [--quick] [--only TEXT] [--conv "
                            "[--batch N]] [--lstm]\n");
            return 1;
        }
    }
    if (lstm) {
        dpt_blas_set_threads(1);
        return lstm_main(rounds);
    }
    if (conv) {
        dpt_blas_set_threads(1);
        return conv_main(rounds, batch, only);
    }
    open_blis();
    dpt_blas_set_threads(1);
    int have[N_CAND] = {dpt_ops_kernels_supported("avx512"), dpt_ops_kernels_supported("avx2"),
                        1, bli_sgemm_p != NULL};
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("# OpenBLAS %s (OPENBLAS_CORETYPE=%s), BLIS %s, %d rounds, one thread; GFLOP/s "
           "medians\n",
           openblas_get_corename(), ct ? ct : "(unset)", have[C_BLIS] ? "libblis.so.4" : "absent",
           rounds);
    printf("%-34s %5s %5s %5s", "shape (op: C[m,n] = A[m,k] B[k,n])", "m", "n", "k");
    for (int c = 0; c < N_CAND; c++)
        if (have[c])
            printf(" %10s", cand_name[c]);
    printf("  x/openblas");
    if (have[C_BLIS])
        printf(" x/blis");
    printf("  maxdiff\n");

    unsigned seed = 1;
    const int n_shapes = (int)(sizeof shapes / sizeof *shapes);
    for (int si = 0; si < n_shapes; si++) {
        const shape *s = &shapes[si];
        if (only && !strstr(s->what, only))
            continue;
        const int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
        const size_t na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n, nc = (size_t)s->m * s->n;
        float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B);
        float *C[N_CAND];
        for (int c = 0; c < N_CAND; c++)
            C[c] = calloc(nc, sizeof **C);
        for (size_t i = 0; i < na; i++)
            A[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        for (size_t i = 0; i < nb; i++)
            B[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        const double flop = 2.0 * s->m * s->n * s->k;
        /* Calls per timing: about 20 ms of work at 50 GFLOP/s. */
        int reps = (int)(1e9 / flop) + 1;
        if (quick)
            reps = (reps + 3) / 4;
        double t[N_CAND][1000];
        for (int c = 0; c < N_CAND; c++)
            if (have[c])
                run(c, s, A, lda, B, ldb, C[c]); /* warm up */
        for (int r = 0; r < rounds; r++)
            for (int c0 = 0; c0 < N_CAND; c0++) {
                const int c = (c0 + r) % N_CAND; /* rotate who goes first */
                if (!have[c])
                    continue;
                const double t0 = now_s();
                for (int i = 0; i < reps; i++)
                    run(c, s, A, lda, B, ldb, C[c]);
                t[c][r] = (now_s() - t0) / reps;
            }
        double gf[N_CAND] = {0};
        printf("%-34s %5d %5d %5d", s->what, s->m, s->n, s->k);
        for (int c = 0; c < N_CAND; c++)
            if (have[c]) {
                gf[c] = flop / median(t[c], rounds) * 1e-9;
                printf(" %10.1f", gf[c]);
            }
        const int own = have[C_AVX512] ? C_AVX512 : C_AVX2;
        printf("  %10.2f", gf[own] / gf[C_OPENBLAS]);
        if (have[C_BLIS])
            printf(" %6.2f", gf[own] / gf[C_BLIS]);
        double big = 0.0, diff = 0.0;
        for (size_t i = 0; i < nc; i++)
            big = fmax(big, fabs(C[own][i]));
        for (int c = 0; c < N_CAND; c++)
            if (have[c])
                for (size_t i = 0; i < nc; i++)
                    diff = fmax(diff, fabs(C[c][i] - C[own][i]));
        printf("  %.1e\n", diff / (big > 0 ? big : 1));
        fflush(stdout);
        free(A);
        free(B);
        for (int c = 0; c < N_CAND; c++)
            free(C[c]);
    }
    dpt_ops_set_kernels("auto");
    return 0;
}
