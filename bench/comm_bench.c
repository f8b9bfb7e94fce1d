/* All-reduce (float32 sum) bandwidth of the communicator backends.
 *
 *   comm_bench [--backend auto|local|mpi] [--workers N] [--n COUNT]...
 *              [--iters K] [--inplace]
 *
 * Defaults: local backend with 2 workers (auto: mpi under mpirun), sizes
 * 123090 (the example network's gradient buffer) and 10000000 floats.
 * Prints per size the mean time of one all-reduce and two bandwidths:
 *   algbw = bytes / time           (bytes = n * 4, one worker's buffer)
 *   busbw = algbw * 2 (N - 1) / N  (NCCL's convention: the traffic a ring
 *                                   all-reduce moves per worker)
 * Time is worker 0's, between two barriers around K back-to-back calls. */
#include "dptrain/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZES 16

typedef struct bench {
    size_t sizes[MAX_SIZES];
    int n_sizes;
    int iters;   /* 0: chosen per size */
    int inplace;
} bench;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static dpt_status bench_worker(dpt_comm *c, void *p)
{
    const bench *b = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    dpt_status st = DPT_OK;
    for (int s = 0; s < b->n_sizes && st == DPT_OK; s++) {
        const size_t n = b->sizes[s], bytes = n * sizeof(float);
        float *send = malloc(bytes ? bytes : 1);
        float *recv = b->inplace ? send : malloc(bytes ? bytes : 1);
        if (!send || !recv) {
            free(send);
            if (recv != send)
                free(recv);
            return dpt_fail(DPT_ERR_NOMEM, "comm_bench: cannot allocate %zu bytes", bytes);
        }
        for (size_t i = 0; i < n; i++)
            send[i] = (float)((i + (size_t)r) % 7) * 0.25f;
        if (!b->inplace)
            memset(recv, 0, bytes);
        int iters = b->iters;
        if (iters <= 0) {
            double k = 2e9 / ((double)bytes * nw + 1.0);
            iters = k < 10 ? 10 : k > 2000 ? 2000 : (int)k;
        }
        for (int w = 0; w < 3 && st == DPT_OK; w++)
            st = dpt_comm_allreduce_f32(c, send, recv, n);
        if (st == DPT_OK)
            st = dpt_comm_barrier(c);
        double t0 = now_s();
        for (int k = 0; k < iters && st == DPT_OK; k++)
            st = dpt_comm_allreduce_f32(c, send, recv, n);
        if (st == DPT_OK)
            st = dpt_comm_barrier(c);
        double t = (now_s() - t0) / iters;
        if (st == DPT_OK && r == 0) {
            double algbw = (double)bytes / t / 1e9;
            printf("%-6s N=%-3d n=%-9zu %10.1f us/op  algbw %7.2f GB/s  busbw %7.2f GB/s  (%d iters%s)\n",
                   dpt_comm_backend_name(dpt_comm_get_backend(c)), nw, n, t * 1e6, algbw,
                   algbw * 2.0 * (nw - 1) / nw, iters, b->inplace ? ", in place" : "");
            fflush(stdout);
        }
        free(send);
        if (recv != send)
            free(recv);
    }
    return st;
}

static int usage(void)
{
    fprintf(stderr, "usage: comm_bench [--backend auto|local|mpi] [--workers N] [--n COUNT]... [--iters K] "
                    "[--inplace]\n");
    return 2;
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.n_workers = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--inplace") == 0) {
            b.inplace = 1;
        } else if (i + 1 < argc && strcmp(a, "--backend") == 0) {
            if (dpt_comm_backend_parse(argv[++i], &cfg.backend)) {
                fprintf(stderr, "comm_bench: %s\n", dpt_last_error());
                return 2;
            }
        } else if (i + 1 < argc && strcmp(a, "--workers") == 0) {
            cfg.n_workers = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(a, "--iters") == 0) {
            b.iters = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(a, "--n") == 0 && b.n_sizes < MAX_SIZES) {
            b.sizes[b.n_sizes++] = (size_t)strtoull(argv[++i], NULL, 10);
        } else {
            return usage();
        }
    }
    if (b.n_sizes == 0) {
        b.sizes[b.n_sizes++] = 123090;
        b.sizes[b.n_sizes++] = 10000000;
    }
    dpt_status st = dpt_spmd_run(&cfg, bench_worker, &b);
    if (st) {
        fprintf(stderr, "comm_bench: %s\n", dpt_last_error());
        return 1;
    }
    return 0;
}
