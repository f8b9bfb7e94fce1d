/* LSTM / GRU kernels (src/ops/rnn.c) on the character language model's
 * shapes: the dptrain half of bench/rnn.sh (bench/rnn_torch.py is
 * PyTorch's).
 *
 *   rnn_bench [--kind lstm|gru] [--batch B] [--seq T] [--features F] [--units H]
 *             [--workers N] [--threads K] [--iters S] [--rounds R]
 *             [--kernels generic|avx2|avx512] [--json]
 *
 * Defaults: LSTM, B 64, T 64, F 89, H 256, 1 worker, 1 BLAS thread. One
 * iteration is dpt_rnn_forward + dpt_rnn_backward on a one-hot x [B/N, T,
 * F] (what a language model's first layer sees) with random output
 * gradients; dx is not asked for (the input layer has no gradient), the
 * state comes in from h0/c0 and leaves in hn/cn as in stateful training.
 * N > 1 runs N workers as threads at once, each on its share of B (what
 * data-parallel workers on N cores do; the gradient all-reduce is not
 * included). A round is S iterations timed on worker 0 between two
 * barriers; prints the median over R rounds of ms per iteration and
 * characters/s = B * T / (ms per iteration), and the process's CPU time
 * per iteration over the rounds (all workers: on a machine shared with
 * other work, wall time counts the waits for a core, CPU time does not). */
#include "dptrain/dptrain.h"
#include "ops/ops.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openblas_get_corename(void);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct worker {
    dpt_rnn_desc d;
    int iters, rounds, id;
    pthread_barrier_t *bar;
    double *times; /* [rounds], worker 0 */
    double *cpu;   /* worker 0: process CPU seconds over the timed rounds */
} worker;

static float *alloc_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void *run(void *arg)
{
    worker *w = arg;
    const dpt_rnn_desc *d = &w->d;
    const size_t N = d->n, T = d->t, F = d->f, H = d->h;
    const size_t GH = (size_t)dpt_rnn_gates(d->kind) * H;
    dpt_rng rng;
    dpt_rng_seed(&rng, 1, (uint64_t)w->id);
    float *x = alloc_f(N * T * F), *dy = alloc_f(N * T * H);
    for (size_t r = 0; r < N * T; r++)
        x[r * F + dpt_rng_below(&rng, (uint32_t)F)] = 1.0f;
    for (size_t i = 0; i < N * T * H; i++)
        dy[i] = dpt_rng_normal(&rng) * 0.01f;
    float *w_ih = alloc_f(GH * F), *w_hh = alloc_f(GH * H), *b_ih = alloc_f(GH);
    float *b_hh = alloc_f(GH);
    const float k = 1.0f / 16.0f; /* 1/sqrt(256), PyTorch's initialisation range */
    for (size_t i = 0; i < GH * F; i++)
        w_ih[i] = (2.0f * dpt_rng_uniform(&rng) - 1.0f) * k;
    for (size_t i = 0; i < GH * H; i++)
        w_hh[i] = (2.0f * dpt_rng_uniform(&rng) - 1.0f) * k;
    for (size_t i = 0; i < GH; i++)
        b_ih[i] = (2.0f * dpt_rng_uniform(&rng) - 1.0f) * k;
    float *h0 = alloc_f(N * H), *c0 = alloc_f(N * H), *y = alloc_f(N * T * H);
    float *hn = alloc_f(N * H), *cn = alloc_f(N * H);
    float *save = alloc_f(dpt_rnn_save_floats(d)), *work = alloc_f(dpt_rnn_work_floats(d));
    float *dwi = alloc_f(GH * F), *dwh = alloc_f(GH * H), *dbi = alloc_f(GH), *dbh = alloc_f(GH);
    float *dh0 = alloc_f(N * H), *dc0 = alloc_f(N * H);
    const int lstm = d->kind == DPT_RNN_LSTM;
    for (int r = -1; r < w->rounds; r++) { /* round -1: warm-up */
        pthread_barrier_wait(w->bar);
        double t0 = now_s(), u0 = cpu_s();
        for (int it = 0; it < (r < 0 ? 2 : w->iters); it++) {
            dpt_rnn_forward(d, x, NULL, w_ih, w_hh, b_ih, b_hh, h0, lstm ? c0 : NULL, y, hn,
                            lstm ? cn : NULL, save);
            dpt_rnn_backward(d, x, NULL, w_ih, w_hh, save, dy, NULL, NULL, NULL, dwi, dwh, dbi,
                             dbh, dh0, lstm ? dc0 : NULL, work);
            /* Carry the state as stateful training does. */
            memcpy(h0, hn, N * H * sizeof *h0);
            if (lstm)
                memcpy(c0, cn, N * H * sizeof *c0);
        }
        pthread_barrier_wait(w->bar);
        if (r >= 0 && w->id == 0) {
            w->times[r] = (now_s() - t0) / w->iters;
            *w->cpu += cpu_s() - u0;
        }
    }
    free(x), free(dy), free(w_ih), free(w_hh), free(b_ih), free(b_hh), free(h0), free(c0);
    free(y), free(hn), free(cn), free(save), free(work), free(dwi), free(dwh), free(dbi);
    free(dbh), free(dh0), free(dc0);
    return NULL;
}

static int arg_int(int argc, char **argv, int *i, const char *name, int *v)
{
    if (strcmp(argv[*i], name) != 0)
        return 0;
    if (*i + 1 >= argc || (*v = atoi(argv[*i + 1])) < 1) {
        fprintf(stderr, "rnn_bench: %s needs a positive number\n", name);
        exit(2);
    }
    (*i)++;
    return 1;
}

int main(int argc, char **argv)
{
    int batch = 64, seq = 64, feat = 89, units = 256, workers = 1, threads = 1, iters = 5;
    int rounds = 7, json = 0;
    dpt_rnn_kind kind = DPT_RNN_LSTM;
    for (int i = 1; i < argc; i++) {
        if (arg_int(argc, argv, &i, "--batch", &batch) || arg_int(argc, argv, &i, "--seq", &seq) ||
            arg_int(argc, argv, &i, "--features", &feat) ||
            arg_int(argc, argv, &i, "--units", &units) ||
            arg_int(argc, argv, &i, "--workers", &workers) ||
            arg_int(argc, argv, &i, "--threads", &threads) ||
            arg_int(argc, argv, &i, "--iters", &iters) ||
            arg_int(argc, argv, &i, "--rounds", &rounds))
            continue;
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) {
            kind = strcmp(argv[++i], "gru") == 0 ? DPT_RNN_GRU : DPT_RNN_LSTM;
        } else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
            if (dpt_ops_set_kernels(argv[++i]) != 0) {
                fprintf(stderr, "rnn_bench: --kernels %s: not supported here\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "rnn_bench: unknown argument %s (see the comment at the top of "
                            "bench/rnn_bench.c)\n", argv[i]);
            return 2;
        }
    }
    if (batch % workers) {
        fprintf(stderr, "rnn_bench: --batch %d is not a multiple of --workers %d\n", batch, workers);
        return 2;
    }
    dpt_blas_set_threads(threads);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)workers);
    double *times = calloc((size_t)rounds, sizeof *times), cpu = 0.0;
    worker *ws = calloc((size_t)workers, sizeof *ws);
    pthread_t *tid = calloc((size_t)workers, sizeof *tid);
    for (int i = 0; i < workers; i++) {
        ws[i] = (worker){.d = {kind, batch / workers, seq, feat, units, 0},
                         .iters = iters, .rounds = rounds, .id = i, .bar = &bar, .times = times,
                         .cpu = &cpu};
        pthread_create(&tid[i], NULL, run, &ws[i]);
    }
    for (int i = 0; i < workers; i++)
        pthread_join(tid[i], NULL);
    qsort(times, (size_t)rounds, sizeof *times, cmp_double);
    double s = rounds % 2 ? times[rounds / 2] : 0.5 * (times[rounds / 2 - 1] + times[rounds / 2]);
    double ms = s * 1e3, cps = (double)batch * seq / s;
    double cpu_ms = cpu * 1e3 / ((double)rounds * iters);
    const char *kn = kind == DPT_RNN_LSTM ? "lstm" : "gru";
    if (json)
        printf("{\"impl\": \"dptrain\", \"kind\": \"%s\", \"workers\": %d, \"threads\": %d, "
               "\"batch\": %d, \"ms\": %.3f, \"chars_per_s\": %.1f, \"cpu_ms\": %.3f, "
               "\"kernels\": \"%s\", \"blas\": \"%s\"}\n",
               kn, workers, threads, batch, ms, cps, cpu_ms, dpt_ops_kernels(),
               openblas_get_corename());
    else
        printf("dptrain %s batch %d seq %d F %d H %d workers %d threads %d (kernels %s, BLAS %s): "
               "%.2f ms/iter, %.0f chars/s (median of %d); CPU %.2f ms/iter\n",
               kn, batch, seq, feat, units, workers, threads, dpt_ops_kernels(),
               openblas_get_corename(), ms, cps, rounds, cpu_ms);
    pthread_barrier_destroy(&bar);
    free(times), free(ws), free(tid);
    return 0;
}
