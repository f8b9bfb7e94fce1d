/* Training-step throughput of the example network, per-layer times and the
 * machine's FMA peak: the dptrain half of bench/run (which runs PyTorch's
 * half, bench/torch_step.py, alternately in the same script).
 *
 *   step_bench [--net SPEC] [--batch B] [--workers N] [--threads T] [--steps S]
 *              [--rounds R] [--kernels generic|avx2|avx512] [--layers] [--peak]
 *              [--json]
 *
 * Builds the example network (dpt_net_default_spec; --net: the spec file
 * SPEC, for the suite of bench/suite.py; 10 classes, seed 0),
 * SGDM (lr 0.01, momentum 0.9) and random inputs and one-hot targets, then
 * runs dpt_train_step: 3 warm-up steps, then R rounds of S steps. The rate
 * of a round is B * S / (wall time of the round on worker 0, between two
 * barriers); the median over the rounds is reported. N > 1 runs N workers
 * (local threads; under mpirun, one per rank), each with its share of B.
 * T is the BLAS thread count per worker (the direct convolution kernels are
 * single-threaded).
 *
 * --layers  also time every layer's forward and backward (one worker) and
 *           report GFLOP/s of the convolution and fc layers.
 * With --net or --layers, the convolution plan worker 0 ran is printed
 * (dpt_net_layer_plan: each layer's algorithm, where the choice came from,
 * the candidates' timed ms) and goes in the JSON line as "plan". 
 * --phases  run the step as its public pieces (dpt_net_forward, the loss,
 *           dpt_net_backward, dpt_train_aggregate, dpt_sgdm_step: what
 *           dpt_train_step does) and report worker 0's wall time in each:
 *           how much of a step the all-reduce takes.
 * --peak    measure the single-core FMA peak (AVX-512 and AVX2 loops of 12
 *           independent accumulators) in wall and thread CPU time.
 * --json    one JSON line at the end, for bench/run. */
#include "dptrain/dptrain.h"
#include "net/net_impl.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- FMA peak ------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PEAK_ACC 12
__attribute__((target("avx512f"))) static double peak_avx512(long iters, double *gf_cpu)
{
    __m512 a[PEAK_ACC];
    for (int i = 0; i < PEAK_ACC; i++)
        a[i] = _mm512_set1_ps(0.001f * (float)i);
    const __m512 b = _mm512_set1_ps(0.99999f), c = _mm512_set1_ps(1e-7f);
    double t0 = now_s(), c0 = cpu_s();
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < PEAK_ACC; i++)
            a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    double t = now_s() - t0, ct = cpu_s() - c0;
    float s = 0;
    for (int i = 0; i < PEAK_ACC; i++)
        s += _mm512_reduce_add_ps(a[i]);
    volatile float sink = s;
    (void)sink;
    double flop = (double)iters * PEAK_ACC * 32;
    *gf_cpu = flop / ct * 1e-9;
    return flop / t * 1e-9;
}

__attribute__((target("avx2,fma"))) static double peak_avx2(long iters, double *gf_cpu)
{
    __m256 a[PEAK_ACC];
    for (int i = 0; i < PEAK_ACC; i++)
        a[i] = _mm256_set1_ps(0.001f * (float)i);
    const __m256 b = _mm256_set1_ps(0.99999f), c = _mm256_set1_ps(1e-7f);
    double t0 = now_s(), c0 = cpu_s();
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < PEAK_ACC; i++)
            a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    double t = now_s() - t0, ct = cpu_s() - c0;
    float tmp[8], s = 0;
    for (int i = 0; i < PEAK_ACC; i++) {
        _mm256_storeu_ps(tmp, a[i]);
        s += tmp[0];
    }
    volatile float sink = s;
    (void)sink;
    double flop = (double)iters * PEAK_ACC * 16;
    *gf_cpu = flop / ct * 1e-9;
    return flop / t * 1e-9;
}
#endif

/* Best of 5 runs of ~0.2 s each (the best, not the median: a peak is what
 * the core does when nothing else runs on it). */
static void measure_peak(double *p512, double *p512_cpu, double *p256, double *p256_cpu)
{
    *p512 = *p512_cpu = *p256 = *p256_cpu = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    for (int r = 0; r < 5; r++) {
        double w, c;
        if (__builtin_cpu_supports("avx512f")) {
            w = peak_avx512(4000000, &c);
            *p512 = fmax(*p512, w), *p512_cpu = fmax(*p512_cpu, c);
        }
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            w = peak_avx2(4000000, &c);
            *p256 = fmax(*p256, w), *p256_cpu = fmax(*p256_cpu, c);
        }
    }
#endif
}

/* ---- training steps -------------------------------------------------------- */

typedef struct bench {
    int batch, workers, threads, steps, rounds, layers, phases;
    const char *net_path; /* spec file, or NULL for the example network */
    double phase_s[3];   /* worker 0: compute, aggregate, update (seconds, summed) */
    double *rates;       /* [rounds] images/s, worker 0 */
    double *prof;        /* [2 * n_layers] seconds, worker 0 (--layers) */
    double cpu_per_step; /* worker 0's thread CPU seconds per step */
    int n_layers;
    dpt_net *net0;       /* worker 0's network, kept for the layer table */
} bench;

#define N_CLASSES 10

/* dpt_train_step in its public pieces, with worker 0's wall time per phase
 * added to ph[0] (forward, loss, backward), ph[1] (aggregation: the
 * all-reduces of gradients, loss and batch-norm state), ph[2] (SGDM). */
static dpt_status timed_step(dpt_net *net, dpt_sgdm *opt, dpt_comm *comm, const float *x,
                             const float *t, int n, double *loss, double *ph)
{
    double t0 = now_s(), m_total = n;
    dpt_status s = DPT_OK;
    if (dpt_comm_size(comm) > 1 && (s = dpt_comm_allreduce_f64(comm, &m_total, &m_total, 1)))
        return s;
    const float *p;
    if ((s = dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &p)) != DPT_OK)
        return s;
    float *dl = dpt_net_output_grad(net);
    double l = dpt_softmax_xent(p, t, n, N_CLASSES, (float)(n / m_total), dl) * (n / m_total);
    if ((s = dpt_net_backward(net, dl, 1)) != DPT_OK)
        return s;
    double t1 = now_s();
    if ((s = dpt_train_aggregate(net, comm, &l)) != DPT_OK)
        return s;
    double t2 = now_s();
    dpt_sgdm_step(opt, dpt_net_params(net), dpt_net_grads(net));
    double t3 = now_s();
    ph[0] += t1 - t0, ph[1] += t2 - t1, ph[2] += t3 - t2;
    *loss = l;
    return DPT_OK;
}

static dpt_status worker(dpt_comm *comm, void *arg)
{
    bench *b = arg;
    int rank = dpt_comm_rank(comm), size = dpt_comm_size(comm);
    int *share = malloc((size_t)size * sizeof *share);
    if (!share)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    dpt_batch_shares(b->batch, size, share);
    int n = share[rank];
    free(share);
    dpt_blas_set_threads(b->threads);
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    float *x = NULL, *t = NULL;
    dpt_status s =
        b->net_path ? dpt_net_from_spec_file(b->net_path, N_CLASSES, n, 0, &net)
                    : dpt_net_from_spec(dpt_net_default_spec(), "<default>", N_CLASSES, n, 0,
                                        &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    if (s != DPT_OK)
        goto done;
    int chw[3];
    dpt_net_input_shape(net, chw);
    size_t nx = (size_t)n * chw[0] * chw[1] * chw[2];
    x = malloc(nx * sizeof *x);
    t = calloc((size_t)n * N_CLASSES, sizeof *t);
    if (!x || !t) {
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        goto done;
    }
    dpt_rng rng;
    dpt_rng_seed(&rng, 1, (uint64_t)rank);
    for (size_t i = 0; i < nx; i++)
        x[i] = dpt_rng_uniform(&rng);
    for (int i = 0; i < n; i++)
        t[(size_t)i * N_CLASSES + dpt_rng_below(&rng, N_CLASSES)] = 1.0f;
    double loss;
    for (int i = 0; i < 3 && s == DPT_OK; i++)
        s = dpt_train_step(net, opt, comm, x, t, n, &loss, NULL);
    if (rank == 0 && b->layers) {
        b->n_layers = net->n_layers;
        net->prof = b->prof;
    }
    double c0 = cpu_s();
    for (int r = 0; r < b->rounds && s == DPT_OK; r++) {
        if ((s = dpt_comm_barrier(comm)) != DPT_OK)
            break;
        double t0 = now_s();
        for (int i = 0; i < b->steps && s == DPT_OK; i++) {
            double ph[3] = {0, 0, 0};
            s = b->phases ? timed_step(net, opt, comm, x, t, n, &loss, ph)
                          : dpt_train_step(net, opt, comm, x, t, n, &loss, NULL);
            if (rank == 0)
                for (int k = 0; k < 3; k++)
                    b->phase_s[k] += ph[k];
        }
        if (s == DPT_OK)
            s = dpt_comm_barrier(comm);
        if (rank == 0)
            b->rates[r] = (double)b->batch * b->steps / (now_s() - t0);
    }
    if (rank == 0) {
        b->cpu_per_step = (cpu_s() - c0) / ((double)b->rounds * b->steps);
        net->prof = NULL;
    }
done:
    free(x), free(t);
    dpt_sgdm_free(opt);
    if (rank == 0 && s == DPT_OK && (b->layers || b->net_path))
        b->net0 = net;
    else
        dpt_net_free(net);
    return s;
}

/* Multiply-adds x2 of layer i's forward and backward for n observations. */
static void layer_flops(const dpt_net *net, int i, int n, double *fwd, double *bwd)
{
    const dpt_layer *l = &net->layers[i];
    double out = (double)l->out[0] * l->out[1] * l->out[2];
    double in_c = l->in[0];
    *fwd = *bwd = 0;
    const char *type = l->type->name;
    if (strcmp(type, "conv") == 0) {
        /* The weight is [filters, in/groups, kh, kw]: a grouped convolution's
         * multiply-adds per output are in/groups * kh * kw. */
        double k = (double)net->learn[l->first_learnable].shape[1] *
                   net->learn[l->first_learnable].shape[2] *
                   net->learn[l->first_learnable].shape[3];
        *fwd = 2.0 * n * out * k;
        *bwd = *fwd * (i > 1 ? 2 : 1); /* dW, and dx unless the input is below */
    } else if (strcmp(type, "fc") == 0) {
        double in = in_c * l->in[1] * l->in[2];
        *fwd = 2.0 * n * out * in;
        *bwd = *fwd * (i > 1 ? 2 : 1);
    }
}

int main(int argc, char **argv)
{
    bench b = {.batch = 128, .workers = 1, .threads = 1, .steps = 20, .rounds = 5};
    int peak = 0, json = 0;
    const char *kernels = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--net") == 0 && v)
            b.net_path = v, i++;
        else if (strcmp(a, "--batch") == 0 && v)
            b.batch = atoi(v), i++;
        else if (strcmp(a, "--workers") == 0 && v)
            b.workers = atoi(v), i++;
        else if (strcmp(a, "--threads") == 0 && v)
            b.threads = atoi(v), i++;
        else if (strcmp(a, "--steps") == 0 && v)
            b.steps = atoi(v), i++;
        else if (strcmp(a, "--rounds") == 0 && v)
            b.rounds = atoi(v), i++;
        else if (strcmp(a, "--kernels") == 0 && v)
            kernels = v, i++;
        else if (strcmp(a, "--layers") == 0)
            b.layers = 1;
        else if (strcmp(a, "--phases") == 0)
            b.phases = 1;
        else if (strcmp(a, "--peak") == 0)
            peak = 1;
        else if (strcmp(a, "--json") == 0)
            json = 1;
        else {
            fprintf(stderr, "step_bench: unknown or incomplete option '%s'\n", a);
            return 2;
        }
    }
    if (b.batch < 1 || b.workers < 1 || b.threads < 1 || b.steps < 1 || b.rounds < 1 ||
        b.batch < b.workers) {
        fprintf(stderr, "step_bench: bad sizes\n");
        return 2;
    }
    if (kernels && dpt_ops_set_kernels(kernels) != 0) {
        fprintf(stderr, "step_bench: kernel set '%s' unknown or not supported here\n", kernels);
        return 2;
    }
    if (b.layers && b.workers > 1) {
        fprintf(stderr, "step_bench: --layers times one worker; use --workers 1\n");
        return 2;
    }
    double p512 = 0, p512c = 0, p256 = 0, p256c = 0;
    if (peak)
        measure_peak(&p512, &p512c, &p256, &p256c);

    b.rates = calloc((size_t)b.rounds, sizeof *b.rates);
    b.prof = calloc(256, sizeof *b.prof);
    dpt_spmd_config sc = DPT_SPMD_CONFIG_INIT;
    sc.n_workers = b.workers;
    dpt_status s = dpt_spmd_run(&sc, worker, &b);
    if (s != DPT_OK) {
        fprintf(stderr, "step_bench: %s\n", dpt_last_error());
        return 1;
    }
    int rank0 = 1;
    if (dpt_comm_launched_by_mpi()) {
        /* Under mpirun every rank runs main; rank 0 filled rates. */
        rank0 = b.rates[0] > 0;
    }
    if (!rank0)
        return 0;
    double *sorted = malloc((size_t)b.rounds * sizeof *sorted);
    memcpy(sorted, b.rates, (size_t)b.rounds * sizeof *sorted);
    double rate = median(sorted, b.rounds);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    const double flop_per_image = 26.7e6; /* recomputed below from the layers when known */

    printf("dptrain step: batch %d, %d worker(s) x %d BLAS thread(s), kernels %s, OpenBLAS %s\n",
           b.batch, b.workers, b.threads, dpt_ops_kernels(), openblas_get_corename());
    printf("  images/s median %.0f over %d rounds of %d steps [", rate, b.rounds, b.steps);
    for (int r = 0; r < b.rounds; r++)
        printf("%s%.0f", r ? " " : "", b.rates[r]);
    printf("]; peak RSS %.1f MB\n", rss_mb);
    double total_flop = flop_per_image;
    if (b.net0) { /* the spec's own multiply-adds, for --net without --layers */
        double sum = 0;
        for (int i = 1; i < b.net0->n_layers; i++) {
            double f, bw;
            layer_flops(b.net0, i, 1, &f, &bw);
            sum += f + bw;
        }
        total_flop = sum;
    }
    if (b.layers && b.net0) {
        dpt_net *net = b.net0;
        int n = b.batch;
        double steps = (double)b.steps * b.rounds, sum_f = 0, sum_b = 0, tf = 0, tb = 0;
        printf("  per layer, thread CPU ms per step (batch %d):\n", n);
        printf("  %-10s %-13s %9s %9s %10s %10s\n", "layer", "type", "forward", "backward",
               "fwd GF/s", "bwd GF/s");
        for (int i = 1; i < net->n_layers; i++) {
            double f, bw;
            layer_flops(net, i, n, &f, &bw);
            double sf = b.prof[i] / steps, sb = b.prof[net->n_layers + i] / steps;
            sum_f += f, sum_b += bw, tf += sf, tb += sb;
            printf("  %-10s %-13s %9.3f %9.3f", net->layers[i].name, net->layers[i].type->name,
                   1e3 * sf, 1e3 * sb);
            if (f > 0)
                printf(" %10.1f %10.1f", f / sf * 1e-9, sb > 0 ? bw / sb * 1e-9 : 0.0);
            printf("\n");
        }
        double step_s = b.cpu_per_step;
        printf("  %-10s %-13s %9.3f %9.3f %10.1f %10.1f\n", "layers", "", 1e3 * tf, 1e3 * tb,
               sum_f / tf * 1e-9, sum_b / tb * 1e-9);
        printf("  step %.3f CPU ms (%.3f wall): layers %.3f, the rest (loss, aggregation, SGDM) "
               "%.3f\n", 1e3 * step_s, 1e3 * n / rate, 1e3 * (tf + tb), 1e3 * (step_s - tf - tb));
        total_flop = (sum_f + sum_b) / n;
        printf("  %.2f MFLOP per image (forward %.2f); whole step %.1f GFLOP/s wall, %.1f "
               "GFLOP/s per CPU-second of worker 0\n", total_flop * 1e-6, sum_f / n * 1e-6,
               rate * total_flop * 1e-9, n * total_flop / b.cpu_per_step * 1e-9);
    }
    /* The convolution plan worker 0 ran (dpt_net_layer_plan), also for
     * the JSON line. */
    char plan_json[4096] = "";
    if (b.net0) {
        size_t k = 0;
        int any = 0;
        for (int i = 1; i < b.net0->n_layers; i++) {
            dpt_layer_plan p;
            if (!dpt_net_layer_plan(b.net0, i, &p))
                continue;
            if (!any++)
                printf("  plan (batch %d per worker; ms: one forward + backward of the batch, "
                       "timed or estimated from runs of fewer images):\n", p.batch);
            printf("  %-10s %-44s %-7s %-9s", dpt_net_layer_name(b.net0, i), p.shape, p.algo,
                   p.source);
            for (int c = 0; c < p.n_candidates; c++)
                if (p.candidates[c].ms >= 0)
                    printf(" %s %.3f", p.candidates[c].name, p.candidates[c].ms);
            printf("%s%s\n", p.note[0] ? "  note: " : "", p.note);
            if (k + 128 < sizeof plan_json)
                k += (size_t)snprintf(plan_json + k, sizeof plan_json - k, "%s\"%s\": \"%s\"",
                                      k ? ", " : "", dpt_net_layer_name(b.net0, i), p.algo);
        }
    }
    dpt_net_free(b.net0);
    if (b.phases) {
        double steps = (double)b.steps * b.rounds;
        double tot = (b.phase_s[0] + b.phase_s[1] + b.phase_s[2]) / steps;
        printf("  phases, worker 0 wall ms per step: forward+loss+backward %.3f, aggregation "
               "(all-reduce of gradients, loss, batch-norm state) %.3f (%.1f%%), SGDM %.3f\n",
               1e3 * b.phase_s[0] / steps, 1e3 * b.phase_s[1] / steps,
               100.0 * b.phase_s[1] / steps / tot, 1e3 * b.phase_s[2] / steps);
    }
    if (peak)
        printf("  FMA peak, one core: AVX-512 %.1f GFLOP/s (%.1f per CPU-second), AVX2 %.1f "
               "(%.1f)\n", p512, p512c, p256, p256c);
    if (json) {
        printf("{\"impl\": \"dptrain\", \"mode\": \"step\", \"batch\": %d, \"workers\": %d, "
               "\"threads\": %d, \"kernels\": \"%s\", \"openblas_core\": \"%s\", "
               "\"images_per_s\": %.1f, \"gflops\": %.2f, \"mflop_per_image\": %.2f, "
               "\"rss_mb\": %.1f, \"rounds\": [",
               b.batch, b.workers, b.threads, dpt_ops_kernels(), openblas_get_corename(), rate,
               rate * total_flop * 1e-9, total_flop * 1e-6, rss_mb);
        for (int r = 0; r < b.rounds; r++)
            printf("%s%.1f", r ? ", " : "", b.rates[r]);
        printf("]");
        if (b.phases)
            printf(", \"compute_ms\": %.3f, \"aggregate_ms\": %.3f, \"update_ms\": %.3f",
                   1e3 * b.phase_s[0] / ((double)b.steps * b.rounds),
                   1e3 * b.phase_s[1] / ((double)b.steps * b.rounds),
                   1e3 * b.phase_s[2] / ((double)b.steps * b.rounds));
        if (peak)
            printf(", \"peak_avx512\": %.1f, \"peak_avx512_cpu\": %.1f, \"peak_avx2\": %.1f, "
                   "\"peak_avx2_cpu\": %.1f", p512, p512c, p256, p256c);
        if (plan_json[0])
            printf(", \"plan\": {%s}", plan_json);
        printf("}\n");
    }
    free(sorted);
    free(b.rates);
    free(b.prof);
    return 0;
}
