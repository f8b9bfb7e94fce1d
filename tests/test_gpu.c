/* GPU backend (dptrain/gpu.h) against the CPU implementation: every layer's
 * forward and backward on random inputs, one whole training step of the
 * example network, 2 workers sharing one GPU against 1 worker on the whole
 * minibatch (synchronised batch norm; pooled local batch norm), the device
 * all-reduce, and the example network trained on tests/fixtures/digits400.
 * Errors are relative to the largest reference value (testutil.h), TF32
 * off. Skips (exit 77) when the build has no CUDA or there is no GPU.
 *
 *   test_gpu                        the tests
 *   test_gpu --bench B [B ...]      images/s of the example network's
 *                                   training step at minibatch B on GPU 0
 *                                   (scripts/gpu-check) */
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "net/net_impl.h"
#include "testutil.h"

#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 9);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * dpt_rng_uniform(&r);
}

static void fill_onehot(float *t, int n, int k, uint64_t seed)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 10);
    memset(t, 0, (size_t)n * k * sizeof *t);
    for (int i = 0; i < n; i++)
        t[(size_t)i * k + dpt_rng_below(&r, (uint32_t)k)] = 1.0f;
}

static size_t input_count(const dpt_net *net)
{
    int chw[3];
    dpt_net_input_shape(net, chw);
    return (size_t)chw[0] * chw[1] * chw[2];
}

/* Worst relative error over the cases, for the summary line. */
static double worst_layer_err;

static double check(const char *name, const float *got, const float *ref, size_t n, double tol)
{
    double e = tu_check_close(name, got, ref, n, tol);
    if (e > worst_layer_err)
        worst_layer_err = e;
    return e;
}

/* 1 when the learnable is the bias of a layer followed by a batch norm:
 * its gradient is exactly zero (the batch norm subtracts the mean), so both
 * sides hold rounding noise and only an absolute comparison means anything. */
static int zero_by_batchnorm(const dpt_net *net, const dpt_param_info *e)
{
    if (strcmp(e->param, "Bias") != 0)
        return 0;
    for (int i = 0; i + 1 < dpt_net_n_layers(net); i++)
        if (strcmp(dpt_net_layer_name(net, i), e->layer) == 0)
            return strcmp(dpt_net_layer_type(net, i + 1), "batchnorm") == 0;
    return 0;
}

/* Compare every learnable's gradient (or value) table entry by entry,
 * relative to the entry's largest reference value; conv weight gradients
 * get conv_tol (cuDNN's Winograd and FFT algorithms are less exact than a
 * direct sum); a gradient that is exactly zero (zero_by_batchnorm) is
 * compared relative to the largest gradient of the whole network. */
static void check_tables(const char *what, dpt_net *cpu, const float *got, const float *ref,
                         double tol, double conv_tol)
{
    size_t np = dpt_net_n_params(cpu);
    float big = 0;
    for (size_t j = 0; j < np; j++)
        big = fabsf(ref[j]) > big ? fabsf(ref[j]) : big;
    for (size_t i = 0; i < dpt_net_n_learnables(cpu); i++) {
        const dpt_param_info *e = dpt_net_learnable(cpu, i);
        char label[160];
        int conv_w = strcmp(e->param, "Weights") == 0 && e->ndim == 4;
        if (zero_by_batchnorm(cpu, e)) {
            double d = 0;
            for (size_t j = 0; j < e->n; j++)
                d = fmax(d, fabs((double)got[e->offset + j] - ref[e->offset + j]));
            double err = d / (big > 0 ? big : 1);
            int ok = err <= tol;
            printf("  %s %s (exactly 0: error / largest gradient) %.3e (tol %.0e) %s\n", what,
                   e->name, err, tol, ok ? "ok" : "FAIL");
            if (!ok)
                ++*tu_failures();
            continue;
        }
        snprintf(label, sizeof label, "%s %s", what, e->name);
        check(label, got + e->offset, ref + e->offset, e->n, conv_w ? conv_tol : tol);
    }
}

static int make_pair(const char *spec, int max_batch, int fuse, dpt_net **cpu, dpt_net **gpu)
{
    *cpu = *gpu = NULL;
    dpt_status s = dpt_net_from_spec(spec, "t", 10, max_batch, 1, cpu);
    if (s == DPT_OK)
        s = dpt_net_from_spec(spec, "t", 10, max_batch, 1, gpu);
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.fuse_bn_relu = fuse;
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(*gpu, &o);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK) {
        dpt_net_free(*cpu), dpt_net_free(*gpu);
        *cpu = *gpu = NULL;
        return -1;
    }
    return 0;
}

/* One case: "input -> P -> T" with T the layer under test (so T's input
 * gradient is what the backward leaves in gradient buffer 0 on both
 * sides). Forward (TRAIN) output, every gradient, T's input gradient; for
 * batch norm also the running-state update and a PREDICT forward. */
static void layer_case(const char *what, const char *spec, int n, float lo, float hi, double tol,
                       double conv_tol)
{
    printf("%s:\n", what);
    dpt_net *cpu, *gpu;
    if (make_pair(spec, n, 1, &cpu, &gpu))
        return;
    size_t nx = (size_t)n * input_count(cpu);
    int k = dpt_net_n_outputs(cpu), L = dpt_net_n_layers(cpu);
    int chw[3];
    dpt_net_layer_shape(cpu, L - 2, chw);
    size_t n_dx = (size_t)n * chw[0] * chw[1] * chw[2];
    float *x = malloc(nx * sizeof *x), *dy = malloc((size_t)n * k * sizeof *dy);
    float *yc = malloc((size_t)n * k * sizeof *yc), *dxg = malloc(n_dx * sizeof *dxg);
    fill_uniform(x, nx, lo, hi, 11);
    fill_uniform(dy, (size_t)n * k, -1, 1, 12);
    const float *y;
    dpt_status s = dpt_net_forward(cpu, x, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    memcpy(yc, y, (size_t)n * k * sizeof *yc);
    s = dpt_net_forward(gpu, x, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK)
        check("forward", y, yc, (size_t)n * k, tol);
    CHECK(dpt_net_backward(cpu, dy, 0) == DPT_OK);
    s = dpt_net_backward(gpu, dy, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        check_tables("gradient", cpu, dpt_net_grads(gpu), dpt_net_grads(cpu), tol, conv_tol);
        s = net_gpu_debug_download(gpu, 0, 0, dxg, n_dx);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (s == DPT_OK)
            check("input gradient", dxg, net_node_grad(cpu, L - 2), n_dx, conv_tol);
    }
    if (dpt_net_n_state_floats(cpu)) {
        CHECK(dpt_net_update_state(cpu, NULL) == DPT_OK);
        s = dpt_net_update_state(gpu, NULL);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        check("running state", dpt_net_state(gpu), dpt_net_state(cpu),
              dpt_net_n_state_floats(cpu), tol);
        CHECK(dpt_net_forward(cpu, x, n, DPT_MODE_PREDICT, &y) == DPT_OK);
        memcpy(yc, y, (size_t)n * k * sizeof *yc);
        s = dpt_net_forward(gpu, x, n, DPT_MODE_PREDICT, &y);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (s == DPT_OK)
            check("forward (predict)", y, yc, (size_t)n * k, tol);
    }
    free(x), free(dy), free(yc), free(dxg);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

static void test_layers(void)
{
    layer_case("conv 5x5, 6 filters, bias", "input in size=12x12x3\nrelu p\n"
               "conv t filter=5 filters=6\n", 9, 0.05f, 1, 1e-4, 1e-4);
    layer_case("conv 3x3, stride 2, padding 1, no bias", "input in size=11x11x4\nrelu p\n"
               "conv t filter=3 filters=5 stride=2 padding=1 bias=0\n", 9, 0.05f, 1, 1e-4, 1e-4);
    layer_case("conv 1x1", "input in size=7x7x6\nrelu p\nconv t filter=1 filters=5\n", 9,
               0.05f, 1, 1e-4, 1e-4);
    layer_case("conv 3x5, padding 2", "input in size=9x10x2\nrelu p\n"
               "conv t filter=3x5 filters=4 padding=2\n", 9, 0.05f, 1, 1e-4, 1e-4);
    /* The example's conv1 at its real size: cuDNN may pick a Winograd
     * algorithm here, exact to about 1e-3 only. */
    layer_case("conv 5x5 on 28x28x1, 20 filters, batch 32 (conv1 of the example)",
               "input in size=28x28x1\nrelu p\nconv t filter=5 filters=20\n", 32, 0.05f, 1,
               1e-4, 5e-3);
    layer_case("batchnorm", "input in size=6x6x5\nrelu p\nbatchnorm t\n", 9, 0.05f, 3, 1e-4, 1e-4);
    layer_case("batchnorm epsilon=1e-3 decay=0.3 over 1x1", "input in size=1x1x7\nrelu p\n"
               "batchnorm t epsilon=0.001 decay=0.3\n", 9, 0.05f, 2, 1e-4, 1e-4);
    layer_case("relu", "input in size=8x8x3\nconv p filter=3 filters=4 padding=1\nrelu t\n", 9,
               -1, 1, 1e-4, 1e-4);
    layer_case("fc", "input in size=5x5x3\nrelu p\nfc t outputs=7\n", 9, 0.05f, 1, 1e-4, 1e-4);
    layer_case("softmax (general gradient)", "input in size=1x1x6\nfc p outputs=5\nsoftmax t\n",
               9, -2, 2, 1e-4, 1e-4);
}

/* conv -> batch norm -> ReLU -> fc with the ReLU fused into the batch norm
 * and without: both against the CPU. */
static void test_fusion(void)
{
    static const char spec[] = "input in size=10x10x2\nconv c filter=3 filters=4 padding=1\n"
                               "batchnorm b\nrelu r\nfc f outputs=6\n";
    for (int fuse = 1; fuse >= 0; fuse--) {
        printf("conv-batchnorm-relu-fc, fusion %s:\n", fuse ? "on" : "off");
        dpt_net *cpu, *gpu;
        if (make_pair(spec, 7, fuse, &cpu, &gpu))
            return;
        size_t nx = 7 * input_count(cpu);
        float x[7 * 200], dy[7 * 6], yc[7 * 6];
        fill_uniform(x, nx, -1, 1, 21);
        fill_uniform(dy, 42, -1, 1, 22);
        const float *y;
        CHECK(dpt_net_forward(cpu, x, 7, DPT_MODE_TRAIN, &y) == DPT_OK);
        memcpy(yc, y, sizeof yc);
        dpt_status s = dpt_net_forward(gpu, x, 7, DPT_MODE_TRAIN, &y);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (s == DPT_OK)
            check("forward", y, yc, 42, 1e-4);
        CHECK(dpt_net_backward(cpu, dy, 0) == DPT_OK);
        s = dpt_net_backward(gpu, dy, 0);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (s == DPT_OK)
            check_tables("gradient", cpu, dpt_net_grads(gpu), dpt_net_grads(cpu), 1e-4, 1e-4);
        dpt_net_free(cpu), dpt_net_free(gpu);
    }
}

/* The example network: two training steps from the same start, CPU and
 * GPU, then a PREDICT forward. */
static void test_step(void)
{
    enum { N = 32, K = 10 };
    printf("example network, two training steps, batch %d:\n", N);
    dpt_net *cpu, *gpu;
    if (make_pair(dpt_net_default_spec(), N, 1, &cpu, &gpu))
        return;
    printf("%s", dpt_net_gpu_describe(gpu));
    size_t np = dpt_net_n_params(cpu), ns = dpt_net_n_state_floats(cpu);
    float *x = malloc((size_t)N * 784 * sizeof *x), t[N * K], yc[N * K];
    fill_uniform(x, (size_t)N * 784, 0, 1, 31);
    fill_onehot(t, N, K, 32);
    dpt_sgdm *oc = NULL, *og = NULL;
    CHECK(dpt_sgdm_new(np, 0.01f, 0.9f, 0.0f, &oc) == DPT_OK);
    CHECK(dpt_sgdm_new(np, 0.01f, 0.9f, 0.0f, &og) == DPT_OK);
    for (int step = 1; step <= 2; step++) {
        if (step == 2) {
            /* Start the CPU's second step from the GPU's learnables, state
             * and velocity: each step is then compared on its own, not the
             * first step's rounding amplified by the second. */
            memcpy(dpt_net_params(cpu), dpt_net_params(gpu), np * sizeof(float));
            memcpy(dpt_net_state(cpu), dpt_net_state(gpu), ns * sizeof(float));
            memcpy(oc->velocity, og->velocity, np * sizeof(float));
        }
        double lc = 0, lg = 0;
        CHECK(dpt_train_step(cpu, oc, NULL, x, t, N, &lc, NULL) == DPT_OK);
        dpt_status s = dpt_train_step(gpu, og, NULL, x, t, N, &lg, NULL);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (s != DPT_OK)
            break;
        CHECK(dpt_net_sync_to_host(gpu) == DPT_OK);
        printf(" step %d: loss cpu %.9f gpu %.9f\n", step, lc, lg);
        float fl[2] = {(float)lg, 0}, rl[2] = {(float)lc, 0};
        check("loss", fl, rl, 1, 1e-5);
        check_tables("gradient", cpu, dpt_net_grads(gpu), dpt_net_grads(cpu), 1e-4, 5e-3);
        check("updated learnables (all)", dpt_net_params(gpu), dpt_net_params(cpu), np, 1e-4);
        check("velocity", og->velocity, oc->velocity, np, 5e-3);
        check("running state", dpt_net_state(gpu), dpt_net_state(cpu), ns, 1e-4);
    }
    const float *y;
    CHECK(dpt_net_forward(cpu, x, N, DPT_MODE_PREDICT, &y) == DPT_OK);
    memcpy(yc, y, sizeof yc);
    dpt_status s = dpt_net_forward(gpu, x, N, DPT_MODE_PREDICT, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK)
        check("forward (predict) after the steps", y, yc, (size_t)N * K, 1e-4);
    /* Odd batch sizes get their own convolution algorithms. */
    double l = 0;
    s = dpt_train_step(gpu, og, NULL, x, t, 7, &l, NULL);
    CHECK_MSG(s == DPT_OK && isfinite(l), "step on 7 observations: %s", dpt_last_error());
    CHECK(dpt_net_sync_to_host(gpu) == DPT_OK); /* unbinds og before it is freed */
    dpt_sgdm_free(oc), dpt_sgdm_free(og);
    /* A numeric fault: with lr 1e20 the values overflow within a few steps,
     * and the step that meets them fails as on the CPU, naming the first
     * non-finite layer, before its update. */
    dpt_sgdm *huge = NULL;
    CHECK(dpt_sgdm_new(np, 1e20f, 0.9f, 0.0f, &huge) == DPT_OK);
    dpt_status sf = DPT_OK;
    int at = 0;
    for (at = 1; at <= 6 && sf == DPT_OK; at++) {
        sf = dpt_train_step(gpu, huge, NULL, x, t, N, &l, NULL);
        CHECK_MSG(sf != DPT_OK || isfinite(l), "step %d returned OK with loss %g", at, l);
    }
    printf("numeric fault (lr 1e20): step %d: %s: %s\n", at - 1, dpt_status_str(sf),
           dpt_last_error());
    CHECK_MSG(sf == DPT_ERR_NUMERIC &&
                  strstr(dpt_last_error(), "non-finite values in the output of layer") != NULL,
              "status %d: %s", sf, dpt_last_error());
    dpt_sgdm_free(huge);
    free(x);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

/* ---- 2 workers on one GPU against 1 worker on the whole minibatch ---------------- */

enum { PM = 24, PK = 10 };
static float PX[PM * 784], PT[PM * PK];

typedef struct presult {
    double loss;
    float *params, *grads, *state;
    uint64_t hash;
    char describe[4096];
} presult;

typedef struct pjob {
    int sync_bn, steps;
    dpt_gpu_reduce reduce;
    presult res[4];
} pjob;

static dpt_status pworker(dpt_comm *comm, void *arg)
{
    pjob *j = arg;
    int rank = dpt_comm_rank(comm), nw = dpt_comm_size(comm);
    int share[4], first = 0;
    dpt_batch_shares(PM, nw, share);
    for (int r = 0; r < rank; r++)
        first += share[r];
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "t", PK, PM, 3, &net);
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.device = dpt_gpu_for_worker(comm);
    o.reduce = j->reduce;
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(net, &o);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.05f, 0.9f, 0.0f, &opt);
    if (s == DPT_OK && j->sync_bn)
        dpt_net_set_sync_bn(net, comm);
    presult *r = &j->res[rank];
    for (int step = 0; s == DPT_OK && step < j->steps; step++)
        s = dpt_train_step(net, opt, comm, PX + (size_t)first * 784, PT + (size_t)first * PK,
                           share[rank], &r->loss, NULL);
    if (s == DPT_OK)
        s = dpt_net_sync_to_host(net);
    if (s == DPT_OK) {
        size_t np = dpt_net_n_params(net), ns = dpt_net_n_state_floats(net);
        r->params = malloc(np * sizeof(float));
        r->grads = malloc(np * sizeof(float));
        r->state = malloc(ns * sizeof(float));
        memcpy(r->params, dpt_net_params(net), np * sizeof(float));
        memcpy(r->grads, dpt_net_grads(net), np * sizeof(float));
        memcpy(r->state, dpt_net_state(net), ns * sizeof(float));
        r->hash = dpt_net_hash(net);
        snprintf(r->describe, sizeof r->describe, "%s", dpt_net_gpu_describe(net));
    }
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static int prun(int n_workers, int sync_bn, int steps, dpt_gpu_reduce reduce, pjob *j)
{
    memset(j, 0, sizeof *j);
    j->sync_bn = sync_bn, j->steps = steps, j->reduce = reduce;
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = n_workers;
    dpt_status s = dpt_spmd_run(&cfg, pworker, j);
    CHECK_MSG(s == DPT_OK, "%d workers: %s", n_workers, dpt_last_error());
    return s == DPT_OK ? 0 : -1;
}

static void pfree(pjob *j, int n)
{
    for (int r = 0; r < n; r++)
        free(j->res[r].params), free(j->res[r].grads), free(j->res[r].state);
}

static void test_two_workers(void)
{
    fill_uniform(PX, sizeof PX / sizeof *PX, 0, 1, 41);
    fill_onehot(PT, PM, PK, 42);
    dpt_net *probe = NULL;
    CHECK(dpt_net_from_spec(dpt_net_default_spec(), "t", PK, 1, 0, &probe) == DPT_OK);
    size_t np = dpt_net_n_params(probe), ns = dpt_net_n_state_floats(probe);
    long im = dpt_net_find_state(probe, "bn1/TrainedMean");
    const dpt_param_info *bn1 = dpt_net_state_info(probe, (size_t)im);
    size_t bn1_off = bn1->offset, bn1_n = 2 * bn1->n; /* mean then variance */
    dpt_net_free(probe);

    /* One step: the same computation up to rounding (cuDNN may choose other
     * algorithms for 12 observations than for 24, hence the conv tolerance).
     * Three steps: the workers stay identical, the loss stays close. */
    static const dpt_gpu_reduce modes[] = {DPT_GPU_REDUCE_AUTO, DPT_GPU_REDUCE_STAGED};
    for (int steps = 1; steps <= 3; steps += 2) {
        pjob one, two;
        if (prun(1, 1, steps, DPT_GPU_REDUCE_AUTO, &one))
            return;
        for (int m = 0; m < 2; m++) {
            if (prun(2, 1, steps, modes[m], &two))
                continue;
            printf("2 workers on one GPU (%s) vs 1, synchronised batch norm, %d step%s:\n",
                   m == 0 ? "auto" : "staged", steps, steps > 1 ? "s" : "");
            if (steps == 1 && m == 0)
                printf("%s", two.res[0].describe);
            float l1 = (float)one.res[0].loss, l2 = (float)two.res[0].loss;
            check("loss", &l2, &l1, 1, steps == 1 ? 1e-5 : 1e-3);
            if (steps == 1) {
                check("gradients (all)", two.res[0].grads, one.res[0].grads, np, 5e-3);
                check("updated learnables", two.res[0].params, one.res[0].params, np, 1e-4);
                check("state", two.res[0].state, one.res[0].state, ns, 1e-4);
            }
            CHECK_MSG(two.res[1].hash == two.res[0].hash, "worker 1 differs from worker 0");
            printf("  workers 0 and 1 bit-identical: %s\n",
                   two.res[1].hash == two.res[0].hash ? "yes" : "NO");
            pfree(&two, 2);
        }
        pfree(&one, 1);
    }
    pjob one, two;
    /* Local batch norm: after one step the pooled running statistics of bn1
     * (whose input is the same for 1 and 2 workers) equal the whole
     * minibatch's. */
    if (prun(1, 0, 1, DPT_GPU_REDUCE_AUTO, &one) || prun(2, 0, 1, DPT_GPU_REDUCE_AUTO, &two))
        return;
    printf("2 workers on one GPU vs 1, local batch norm, pooled bn1 statistics:\n");
    check("bn1 running mean and variance", two.res[0].state + bn1_off, one.res[0].state + bn1_off,
          bn1_n, 1e-5);
    CHECK_MSG(two.res[1].hash == two.res[0].hash, "worker 1 differs from worker 0");
    pfree(&one, 1), pfree(&two, 2);
}

/* The device all-reduce itself: 1 worker through NCCL (NCCL refuses two
 * ranks on one GPU), 2 workers staged; sums against the host's. */
typedef struct ajob {
    dpt_gpu_reduce reduce;
    float got[4][1000];
    char describe[4][512];
} ajob;

static dpt_status aworker(dpt_comm *comm, void *arg)
{
    ajob *j = arg;
    int rank = dpt_comm_rank(comm);
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "t", 10, 2, 0, &net);
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.device = dpt_gpu_for_worker(comm);
    o.reduce = j->reduce;
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(net, &o);
    fill_uniform(j->got[rank], 1000, -1, 1, 50 + (uint64_t)rank);
    if (s == DPT_OK)
        s = net_gpu_debug_allreduce(net, comm, j->got[rank], 1000);
    if (s == DPT_OK)
        snprintf(j->describe[rank], sizeof j->describe[rank], "%s", dpt_net_gpu_describe(net));
    dpt_net_free(net);
    return s;
}

static void test_allreduce(void)
{
    for (int nw = 1; nw <= 2; nw++) {
        ajob *j = calloc(1, sizeof *j);
        j->reduce = nw == 1 ? DPT_GPU_REDUCE_NCCL : DPT_GPU_REDUCE_STAGED;
        if (nw == 1 && !dpt_gpu_have_nccl()) {
            printf("device all-reduce through NCCL: this build has no NCCL, not tested\n");
            free(j);
            continue;
        }
        dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
        cfg.backend = DPT_COMM_LOCAL;
        cfg.n_workers = nw;
        dpt_status s = dpt_spmd_run(&cfg, aworker, j);
        CHECK_MSG(s == DPT_OK, "%d workers: %s", nw, dpt_last_error());
        if (s == DPT_OK) {
            float want[1000], part[1000];
            memset(want, 0, sizeof want);
            for (int r = 0; r < nw; r++) {
                fill_uniform(part, 1000, -1, 1, 50 + (uint64_t)r);
                for (int i = 0; i < 1000; i++)
                    want[i] += part[i];
            }
            printf("device all-reduce, %d worker(s), %s:\n", nw, nw == 1 ? "NCCL" : "staged");
            char *line = strstr(j->describe[0], "all-reduce");
            if (line)
                printf("  %s", line);
            check("sum", j->got[0], want, 1000, 1e-6);
            if (nw == 2)
                CHECK(memcmp(j->got[0], j->got[1], sizeof j->got[0]) == 0);
        }
        free(j);
    }
}

/* ---- the example network on 400 real digits ----------------------------------------- */

static void test_digits(void)
{
    char path[512];
    tu_fixture("digits400", path, sizeof path);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *all = NULL, *train = NULL, *test = NULL, *shuffled = NULL;
    dpt_status s = dpt_datastore_open_folder(path, &fo, &all);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    CHECK(dpt_datastore_split_each_label(all, 0.9, 3, &train, &test) == DPT_OK);
    enum { B = 32, EPOCHS = 10 };
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    s = dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, B, 3, &net);
    if (s == DPT_OK)
        s = dpt_net_to_gpu(net, 0);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    double first = NAN, last = NAN, t0 = now_s();
    long its = 0;
    for (int epoch = 1; s == DPT_OK && epoch <= EPOCHS; epoch++) {
        dpt_mbq *q = NULL;
        dpt_mbq_options mo = DPT_MBQ_OPTIONS_INIT;
        mo.batch_size = B, mo.channels = 1, mo.height = 28, mo.width = 28;
        if ((s = dpt_datastore_shuffle(train, (uint64_t)epoch, &shuffled)) == DPT_OK)
            s = dpt_mbq_new(shuffled, &mo, &q);
        double sum = 0;
        int nb = 0;
        while (s == DPT_OK && dpt_mbq_has_data(q)) {
            dpt_batch b;
            double l = 0;
            if ((s = dpt_mbq_next(q, &b)) == DPT_OK &&
                (s = dpt_train_step(net, opt, NULL, b.x.data, b.y.data, b.n, &l, NULL)) == DPT_OK)
                sum += l, nb++, its++;
        }
        dpt_mbq_free(q);
        dpt_datastore_free(shuffled), shuffled = NULL;
        if (nb && epoch == 1)
            first = sum / nb;
        if (nb)
            last = sum / nb;
    }
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    double acc = NAN, acc_cpu = NAN;
    if (s == DPT_OK)
        s = dpt_evaluate(net, test, &acc, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    printf("digits400 on the GPU: %d epochs, %ld iterations in %.2f s, mean loss %.4f -> %.4f, "
           "test accuracy %.3f\n", EPOCHS, its, now_s() - t0, first, last, acc);
    CHECK_MSG(acc >= 0.6, "accuracy %.3f is not well above chance (0.1)", acc);
    CHECK_MSG(last < 0.5 * first, "the loss did not fall: %.4f -> %.4f", first, last);
    /* The trained network, saved from the host mirror and loaded on the
     * CPU, classifies the test images the same way. */
    char model[] = "/tmp/dpt_gpu_model_XXXXXX";
    int fd = mkstemp(model);
    if (fd >= 0)
        close(fd);
    dpt_net *back = NULL;
    if (s == DPT_OK && (s = dpt_net_sync_to_host(net)) == DPT_OK &&
        (s = dpt_net_save(net, model, NULL, 0)) == DPT_OK &&
        (s = dpt_net_load(model, B, &back)) == DPT_OK)
        s = dpt_evaluate(back, test, &acc_cpu, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    printf("the same model on the CPU: test accuracy %.3f\n", acc_cpu);
    CHECK_MSG(fabs(acc_cpu - acc) <= 0.051, "CPU accuracy %.3f, GPU %.3f", acc_cpu, acc);
    unlink(model);
    dpt_net_free(back);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    dpt_datastore_free(test), dpt_datastore_free(train), dpt_datastore_free(all);
}

/* ---- benchmark ------------------------------------------------------------------------ */

static int bench(int argc, char **argv)
{
    if (dpt_gpu_count() < 1) {
        fprintf(stderr, "bench: no usable GPU\n");
        return 1;
    }
    char name[128];
    dpt_gpu_name(0, name, sizeof name);
    for (int a = 0; a < argc; a++) {
        int B = atoi(argv[a]);
        if (B < 1)
            continue;
        for (int variant = 0; variant < 2; variant++) {
            dpt_net *net = NULL;
            dpt_sgdm *opt = NULL;
            dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
            o.find_algorithms = variant; /* 0: heuristics (default), 1: timed */
            dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, B, 0, &net);
            if (s == DPT_OK)
                s = dpt_net_to_gpu_opts(net, &o);
            if (s == DPT_OK)
                s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
            float *x = malloc((size_t)B * 784 * sizeof *x), *t = malloc((size_t)B * 10 * sizeof *t);
            fill_uniform(x, (size_t)B * 784, 0, 1, 61);
            fill_onehot(t, B, 10, 62);
            double l = 0;
            for (int i = 0; s == DPT_OK && i < 10; i++)
                s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
            long steps = 0;
            double t0 = now_s(), el = 0;
            while (s == DPT_OK && (el < 3.0 || steps < 20)) {
                s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
                steps++;
                el = now_s() - t0;
            }
            if (s != DPT_OK) {
                fprintf(stderr, "bench: batch %d: %s\n", B, dpt_last_error());
                return 1;
            }
            if (a == 0 && variant == 0)
                printf("%s", dpt_net_gpu_describe(net));
            printf("BENCH dptrain device=\"%s\" batch=%d algos=%s steps=%ld seconds=%.3f "
                   "ms_per_step=%.4f images_per_s=%.1f loss=%.4f\n",
                   name, B, variant ? "timed" : "heuristic", steps, el, 1e3 * el / steps,
                   B * steps / el, l);
            fflush(stdout);
            free(x), free(t);
            dpt_sgdm_free(opt);
            dpt_net_free(net);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(argc - 2, argv + 2);
    if (!dpt_gpu_have_cuda()) {
        printf("test_gpu: skipped: this build of dptrain has no CUDA backend\n");
        return TU_SKIP;
    }
    int n = dpt_gpu_count();
    if (n < 1) {
        printf("test_gpu: skipped: no usable GPU (CUDA build, but no device or driver)\n");
        return TU_SKIP;
    }
    for (int i = 0; i < n; i++) {
        dpt_gpu_info info;
        if (dpt_gpu_query(i, &info) == DPT_OK)
            printf("GPU %d: %s, %.1f GiB, compute capability %d.%d, %d multiprocessors%s\n", i,
                   info.name, (double)info.memory_bytes / (1 << 30), info.cc_major, info.cc_minor,
                   info.multiprocessors, dpt_gpu_have_nccl() ? ", NCCL" : "");
    }
    double t0 = now_s();
    test_layers();
    double layers_worst = worst_layer_err;
    test_fusion();
    test_step();
    test_allreduce();
    test_two_workers();
    test_digits();
    printf("worst relative error of a single layer: %.3e; all checks: %.3e; %.1f s\n",
           layers_worst, worst_layer_err, now_s() - t0);
    return tu_exit();
}
