/* LSTM and GRU on the GPU (layer_rnn.c's CUDA entries, ops/cuda/rnn_cuda.cu)
 * against the CPU layers: forward, every gradient and the gradient passed
 * to the layer below, with and without masked lengths (padding last and
 * first), dropout on a padded sequence, output=sequence and output=last;
 * carried state over chunks (stateful, as a language model trains),
 * dpt_net_carry_get/set, reset and the stream going on after the network
 * moves back to the CPU; the step capacity growing on the device mid-stream;
 * whole training steps (SGDM) of a language model with padded rows and of
 * a sequence classifier with lengths; dpt_fit of a language model on 1 and
 * 2 GPU workers against CPU workers. Errors are relative to the largest
 * reference value (testutil.h).
 *
 * First, on any machine, the checks that need no GPU: the sequence layer
 * types have GPU code (and CUDA entries exactly in a CUDA build), and
 * --device auto picks GPUs for a recurrent network. Then skips (exit 77,
 * unless those failed) without CUDA or a GPU.
 *
 *   test_gpu_rnn                      the tests
 *   test_gpu_rnn --bench B T [V]      characters/s of the default language
 *                                     model's training step (lstm 256 units,
 *                                     vocabulary V, default 65) on GPU 0, B
 *                                     streams of T steps (scripts/gpu-check) */
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "net/net_impl.h"
#include "testutil.h"
#include "train/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Forward values and gradients: the products run in cuBLAS's order, the
 * gates in the CPU's formulas; a wrong gate, mask or state is off by O(1). */
#define TOL_FWD 5e-5
#define TOL_GRAD 5e-4

static void fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 9);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * dpt_rng_uniform(&r);
}

/* rows one-hot rows of k; with pad, rows past each sequence's length (of
 * t steps) all zero: padding for the sequence loss. */
static void fill_targets(float *y, int n, int t, int k, const int *len, uint64_t seed)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 10);
    memset(y, 0, (size_t)n * t * k * sizeof *y);
    for (int i = 0; i < n; i++)
        for (int s = 0; s < t; s++)
            if (!len || s < len[i])
                y[((size_t)i * t + s) * k + dpt_rng_below(&r, (uint32_t)k)] = 1.0f;
}

static size_t out_floats(const dpt_net *net, int n)
{
    return (size_t)n * dpt_net_n_outputs(net) *
           (dpt_net_output_is_sequence(net) ? (size_t)dpt_net_steps(net) : 1);
}

static int make_pair(const char *spec, int max_batch, dpt_net **cpu, dpt_net **gpu)
{
    *cpu = *gpu = NULL;
    dpt_status s = dpt_net_from_spec(spec, "rnn.spec", 6, max_batch, 3, cpu);
    if (s == DPT_OK)
        s = dpt_net_from_spec(spec, "rnn.spec", 6, max_batch, 3, gpu);
    if (s == DPT_OK)
        s = dpt_net_to_gpu(*gpu, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK) {
        dpt_net_free(*cpu), dpt_net_free(*gpu);
        *cpu = *gpu = NULL;
        return -1;
    }
    return 0;
}

static dpt_status set_steps2(dpt_net *a, dpt_net *b, int t, const int *len, int n, int left)
{
    dpt_status s = dpt_net_set_steps(a, t, len, n, left);
    if (s == DPT_OK)
        s = dpt_net_set_steps(b, t, len, n, left);
    CHECK_MSG(s == DPT_OK, "set_steps %d: %s", t, dpt_last_error());
    return s;
}

/* Forward (mode) on both, outputs compared; the GPU's output copied to
 * got (may be NULL). */
static void forward_both(const char *what, dpt_net *cpu, dpt_net *gpu, const float *x, int n,
                         dpt_mode mode)
{
    size_t ny = out_floats(cpu, n);
    float *yc = malloc(ny * sizeof *yc);
    const float *y;
    dpt_status s = dpt_net_forward(cpu, x, n, mode, &y);
    CHECK_MSG(s == DPT_OK, "cpu forward: %s", dpt_last_error());
    if (s == DPT_OK)
        memcpy(yc, y, ny * sizeof *yc);
    s = dpt_net_forward(gpu, x, n, mode, &y);
    CHECK_MSG(s == DPT_OK, "gpu forward: %s", dpt_last_error());
    if (s == DPT_OK)
        tu_check_close(what, y, yc, ny, TOL_FWD);
    free(yc);
}

/* Every learnable's gradient, by table entry. */
static void check_grads(const char *what, dpt_net *cpu, dpt_net *gpu)
{
    const float *gg = dpt_net_grads(gpu), *gc = dpt_net_grads(cpu);
    for (size_t i = 0; i < dpt_net_n_learnables(cpu); i++) {
        const dpt_param_info *e = dpt_net_learnable(cpu, i);
        char label[160];
        snprintf(label, sizeof label, "%s %s", what, e->name);
        tu_check_close(label, gg + e->offset, gc + e->offset, e->n, TOL_GRAD);
    }
}

/* The gradient at node `node`'s output (the input gradient of the layer
 * above it), where both executors keep it. */
static void check_node_grad(const char *what, dpt_net *cpu, dpt_net *gpu, int node, int n)
{
    const float *dc = net_node_grad(cpu, node), *dg = net_node_grad(gpu, node);
    if (!dc || !dg) {
        printf("  %s: not kept by the plan, not compared\n", what);
        return;
    }
    int chw[3];
    dpt_net_layer_shape(cpu, node, chw);
    size_t cnt = (size_t)n * chw[0] * chw[1] * chw[2] *
                 (dpt_net_layer_is_sequence(cpu, node) ? (size_t)dpt_net_steps(cpu) : 1);
    float *h = malloc(cnt * sizeof *h);
    dpt_status s = net_gpu_debug_download(gpu, dg, h, cnt);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK)
        tu_check_close(what, h, dc, cnt, TOL_GRAD);
    free(h);
}

/* One case: forward (TRAIN), backward from a random dy at the output,
 * every gradient and the gradient at node dx_node's output; then a
 * PREDICT forward. */
static void layer_case(const char *what, const char *spec, int n, int t, const int *len,
                       int pad_left, int dx_node)
{
    printf("%s:\n", what);
    dpt_net *cpu, *gpu;
    if (make_pair(spec, n, &cpu, &gpu))
        return;
    int chw[3];
    dpt_net_input_shape(cpu, chw);
    size_t nx = (size_t)n * t * chw[0];
    float *x = malloc(nx * sizeof *x);
    fill_uniform(x, nx, -1, 1, 21);
    if (set_steps2(cpu, gpu, t, len, n, pad_left) == DPT_OK) {
        forward_both("forward", cpu, gpu, x, n, DPT_MODE_TRAIN);
        size_t ny = out_floats(cpu, n);
        float *dy = malloc(ny * sizeof *dy);
        fill_uniform(dy, ny, -1, 1, 22);
        CHECK(dpt_net_backward(cpu, dy, 0) == DPT_OK);
        dpt_status s = dpt_net_backward(gpu, dy, 0);
        CHECK_MSG(s == DPT_OK, "gpu backward: %s", dpt_last_error());
        if (s == DPT_OK) {
            check_grads("gradient", cpu, gpu);
            if (dx_node > 0)
                check_node_grad("input gradient of the layer above", cpu, gpu, dx_node, n);
        }
        forward_both("forward (predict)", cpu, gpu, x, n, DPT_MODE_PREDICT);
        free(dy);
    }
    free(x);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

/* Lengths changing between forwards of the same shape (each
 * dpt_net_set_steps refreshes the device's copy): each forward against
 * the CPU. */
static void test_lengths_change(void)
{
    printf("lengths changing between forwards:\n");
    static const int a[4] = {6, 2, 5, 1}, b[4] = {6, 2, 3, 6}, c[2] = {1, 2};
    dpt_net *cpu, *gpu;
    if (make_pair("sequenceinput in size=3\ngru g units=5\nlstm l units=4 output=last\n"
                  "fc f outputs=3\nsoftmax sm\n", 4, &cpu, &gpu))
        return;
    float x[4 * 6 * 3];
    fill_uniform(x, sizeof x / sizeof *x, -1, 1, 90);
    const int *lens[4] = {a, b, a, c};
    const int ns[4] = {4, 4, 4, 2};
    for (int k = 0; k < 4; k++) {
        char what[64];
        snprintf(what, sizeof what, "forward %d", k + 1);
        if (set_steps2(cpu, gpu, 6, lens[k], ns[k], 0) == DPT_OK)
            forward_both(what, cpu, gpu, x, ns[k], DPT_MODE_PREDICT);
    }
    dpt_net_free(cpu), dpt_net_free(gpu);
}

static void test_layers(void)
{
    static const int len[5] = {7, 3, 0, 5, 1};
    layer_case("lstm, output=sequence", "sequenceinput in size=6\nlstm l units=8\n"
               "fc f outputs=5\nsoftmax sm\n", 5, 7, NULL, 0, 0);
    layer_case("gru, output=sequence", "sequenceinput in size=6\ngru g units=8\n"
               "fc f outputs=5\nsoftmax sm\n", 5, 7, NULL, 0, 0);
    /* The lstm's input gradient reaches the gru below it. */
    static const char two[] = "sequenceinput in size=6\ngru g units=9\nlstm l units=7 "
                              "output=last\nfc f outputs=5\nsoftmax sm\n";
    layer_case("gru -> lstm output=last", two, 5, 7, NULL, 0, 1);
    layer_case("gru -> lstm output=last, lengths, padding last", two, 5, 7, len, 0, 1);
    layer_case("gru -> lstm output=last, lengths, padding first", two, 5, 7, len, 1, 1);
    static const char two_seq[] = "sequenceinput in size=6\nlstm l units=7\ngru g units=9\n"
                                  "fc f outputs=5\nsoftmax sm\n";
    layer_case("lstm -> gru, output=sequence, lengths, padding first", two_seq, 5, 7, len, 1, 1);
    /* Dropout's mask on a left-padded sequence (keyed from the first
     * valid step) and its gradient. */
    layer_case("lstm -> dropout -> gru, lengths, padding first",
               "sequenceinput in size=6\nlstm l units=7\ndropout d p=0.3\ngru g units=5\n"
               "fc f outputs=5\nsoftmax sm\n", 5, 7, len, 1, 2);
    /* Larger: many blocks per gate kernel, H not a multiple of 32. */
    layer_case("lstm 100 units, 16 x 40 steps", "sequenceinput in size=20\nlstm l units=100\n"
               "fc f outputs=5\nsoftmax sm\n", 16, 40, NULL, 0, 0);
}

/* Carried state over chunks: 3 chunks (the third longer: the steps grow on
 * the device mid-stream), each forward and backward compared; the carried
 * state itself through dpt_net_carry_get, written with carry_set, reset;
 * then the GPU network moves to the CPU and the stream goes on there. */
static void test_stateful(void)
{
    enum { N = 4, V = 6 };
    printf("stateful lstm -> gru, chunks of 3, 3, 8 steps:\n");
    static const char spec[] = "sequenceinput in size=vocab\nlstm l units=8\ngru g units=6\n"
                               "fc f outputs=vocab\nsoftmax sm\n";
    dpt_net *cpu, *gpu;
    if (make_pair(spec, N, &cpu, &gpu))
        return;
    dpt_net_set_stateful(cpu, 1);
    dpt_net_set_stateful(gpu, 1);
    size_t cf = dpt_net_carry_floats(cpu);
    CHECK(cf == 2 * 8 + 6);
    float *x = malloc((size_t)N * 8 * V * sizeof *x), *dy = malloc((size_t)N * 8 * V * sizeof *dy);
    float *cc = malloc(N * cf * sizeof *cc), *cg = malloc(N * cf * sizeof *cg);
    static const int steps[3] = {3, 3, 8};
    for (int c = 0; c < 3; c++) {
        int t = steps[c];
        if (set_steps2(cpu, gpu, t, NULL, N, 0) != DPT_OK)
            break;
        fill_uniform(x, (size_t)N * t * V, 0, 1, 30 + c);
        char what[64];
        snprintf(what, sizeof what, "chunk %d forward", c + 1);
        forward_both(what, cpu, gpu, x, N, DPT_MODE_TRAIN);
        fill_uniform(dy, (size_t)N * t * V, -1, 1, 40 + c);
        CHECK(dpt_net_backward(cpu, dy, 0) == DPT_OK);
        dpt_status s = dpt_net_backward(gpu, dy, 0);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        snprintf(what, sizeof what, "chunk %d gradient", c + 1);
        if (s == DPT_OK)
            check_grads(what, cpu, gpu);
        CHECK(dpt_net_carry_get(cpu, N, cc) == DPT_OK);
        s = dpt_net_carry_get(gpu, N, cg);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        snprintf(what, sizeof what, "chunk %d carried state", c + 1);
        tu_check_close(what, cg, cc, N * cf, TOL_FWD);
    }
    /* Written state: both continue from the same values. */
    fill_uniform(cc, N * cf, -0.5f, 0.5f, 50);
    CHECK(dpt_net_carry_set(cpu, N, cc) == DPT_OK);
    CHECK(dpt_net_carry_set(gpu, N, cc) == DPT_OK);
    CHECK(dpt_net_carry_get(gpu, N, cg) == DPT_OK);
    CHECK_MSG(memcmp(cg, cc, N * cf * sizeof *cc) == 0, "carry_set then carry_get on the GPU");
    fill_uniform(x, (size_t)N * 8 * V, 0, 1, 51);
    forward_both("forward from a written state", cpu, gpu, x, N, DPT_MODE_PREDICT);
    /* Reset: zeros on the device too. */
    dpt_net_reset_state(cpu), dpt_net_reset_state(gpu);
    CHECK(dpt_net_carry_get(gpu, N, cg) == DPT_OK);
    int zero = 1;
    for (size_t i = 0; i < N * cf; i++)
        zero &= cg[i] == 0.0f;
    CHECK_MSG(zero, "reset left carried state on the GPU");
    forward_both("forward after a reset", cpu, gpu, x, N, DPT_MODE_TRAIN);
    /* The device's state comes back with the network. */
    dpt_status s = dpt_net_to_cpu(gpu);
    CHECK_MSG(s == DPT_OK && dpt_net_device(gpu) == -1, "%s", dpt_last_error());
    fill_uniform(x, (size_t)N * 8 * V, 0, 1, 52);
    forward_both("forward on the CPU after dpt_net_to_cpu", cpu, gpu, x, N, DPT_MODE_PREDICT);
    free(x), free(dy), free(cc), free(cg);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

/* Whole training steps (dpt_train_step: forward, the loss, backward, SGDM)
 * on GPU and CPU from the same start; the second from the GPU's
 * learnables, so each step is compared on its own. */
static void step_case(const char *what, const char *spec, int n, int t, const int *len,
                      int pad_left, int stateful)
{
    printf("%s:\n", what);
    dpt_net *cpu, *gpu;
    if (make_pair(spec, n, &cpu, &gpu))
        return;
    dpt_net_set_stateful(cpu, stateful);
    dpt_net_set_stateful(gpu, stateful);
    int chw[3];
    dpt_net_input_shape(cpu, chw);
    int k = dpt_net_n_outputs(cpu);
    size_t np = dpt_net_n_params(cpu), nx = (size_t)n * t * chw[0];
    float *x = malloc(nx * sizeof *x), *y = malloc((size_t)n * t * k * sizeof *y);
    dpt_sgdm *oc = NULL, *og = NULL;
    CHECK(dpt_sgdm_new(np, 0.05f, 0.9f, 0.0f, &oc) == DPT_OK);
    CHECK(dpt_sgdm_new(np, 0.05f, 0.9f, 0.0f, &og) == DPT_OK);
    for (int step = 1; step <= 2 && set_steps2(cpu, gpu, t, len, n, pad_left) == DPT_OK; step++) {
        fill_uniform(x, nx, 0, 1, 60 + step);
        if (dpt_net_output_is_sequence(cpu))
            fill_targets(y, n, t, k, len, 70 + step); /* padded rows: zero targets */
        else
            fill_targets(y, n, 1, k, NULL, 70 + step);
        if (step == 2) {
            memcpy(dpt_net_params(cpu), dpt_net_params(gpu), np * sizeof(float));
            memcpy(oc->velocity, og->velocity, np * sizeof(float));
        }
        double lc = 0, lg = 0;
        dpt_status s = dpt_train_step(cpu, oc, NULL, x, y, n, &lc, NULL);
        CHECK_MSG(s == DPT_OK, "cpu step: %s", dpt_last_error());
        s = dpt_train_step(gpu, og, NULL, x, y, n, &lg, NULL);
        CHECK_MSG(s == DPT_OK, "gpu step: %s", dpt_last_error());
        if (s != DPT_OK || dpt_net_sync_to_host(gpu) != DPT_OK)
            break;
        printf("  step %d: loss cpu %.9f gpu %.9f\n", step, lc, lg);
        float fl = (float)lg, rl = (float)lc;
        tu_check_close("loss", &fl, &rl, 1, 1e-5);
        check_grads("gradient", cpu, gpu);
        tu_check_close("learnables", dpt_net_params(gpu), dpt_net_params(cpu), np, TOL_GRAD);
        tu_check_close("velocity", og->velocity, oc->velocity, np, TOL_GRAD);
    }
    CHECK(dpt_net_sync_to_host(gpu) == DPT_OK); /* unbinds og before it is freed */
    dpt_sgdm_free(oc), dpt_sgdm_free(og);
    free(x), free(y);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

static void test_steps(void)
{
    static const int len[6] = {9, 4, 9, 1, 6, 2};
    step_case("language model step (stateful lstm, vocab 6)",
              "sequenceinput in size=vocab\nlstm l units=16\nfc f outputs=vocab\nsoftmax sm\n", 6,
              9, NULL, 0, 1);
    step_case("sequence loss with padded rows (gru, lengths)",
              "sequenceinput in size=vocab\ngru g units=12\nfc f outputs=vocab\nsoftmax sm\n", 6,
              9, len, 0, 0);
    step_case("sequence classifier step (lstm output=last, lengths, padding first)",
              "sequenceinput in size=5\nlstm l units=10 output=last\nfc f outputs=classes\n"
              "softmax sm\n", 6, 9, len, 1, 0);
}

static dpt_status gpu_check(const dpt_net *net, void *ctx)
{
    (void)ctx;
    return dpt_net_gpu_supported(net);
}

/* dpt_fit on a text (fit_seq.c: stateful streams, carried state across
 * iterations, held-out bits per character) with 1 GPU worker against 1
 * CPU worker, and 2 workers sharing the GPU (staged all-reduce) against 2
 * CPU workers: the same training up to float rounding. */
static dpt_status fit_text(const dpt_text *tr, const dpt_text *te, int workers, int gpu,
                           dpt_fit_result *res)
{
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = "sequenceinput in size=vocab\nlstm l units=24\nfc f outputs=vocab\nsoftmax sm\n";
    cfg.spec_source = "lm";
    cfg.text_train = tr, cfg.text_test = te;
    cfg.seq_len = 12;
    cfg.epochs = 1, cfg.batch = 6, cfg.seed = 5;
    cfg.optimizer = DPT_OPTIM_ADAM, cfg.lr = 0.01f;
    cfg.spmd.backend = DPT_COMM_LOCAL, cfg.spmd.n_workers = workers;
    cfg.use_gpu = gpu;
    memset(res, 0, sizeof *res);
    dpt_status s = dpt_fit(&cfg, res);
    CHECK_MSG(s == DPT_OK, "fit (%d %s workers): %s", workers, gpu ? "GPU" : "CPU",
              dpt_last_error());
    return s;
}

static void test_fit_text(void)
{
    printf("language model trained with dpt_fit, GPU against CPU workers:\n");
    char dir[] = "/tmp/dpt_gpu_rnn_XXXXXX", path[300];
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    snprintf(path, sizeof path, "%s/text.txt", dir);
    FILE *f = fopen(path, "w");
    static const char *const words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "dog ",
                                        "ran\n"};
    dpt_rng r;
    dpt_rng_seed(&r, 11, 0);
    for (int i = 0; f && i < 700; i++)
        fputs(words[dpt_rng_below(&r, 8)], f);
    if (f)
        fclose(f);
    dpt_text_options o = DPT_TEXT_OPTIONS_INIT;
    o.heldout = 0.1;
    dpt_text *tr = NULL, *te = NULL;
    dpt_status s = dpt_text_open(path, &o, &tr, &te);
    CHECK_MSG(s == DPT_OK && te, "%s", dpt_last_error());
    for (int w = 1; s == DPT_OK && te && w <= 2; w++) {
        dpt_fit_result rc, rg;
        if (fit_text(tr, te, w, 0, &rc) != DPT_OK || fit_text(tr, te, w, 1, &rg) != DPT_OK)
            break;
        printf("  %d worker%s: loss cpu %.6f gpu %.6f, test bpc cpu %.6f gpu %.6f, %ld "
               "iterations\n", w, w > 1 ? "s" : "", rc.final_loss, rg.final_loss, rc.test_bpc,
               rg.test_bpc, rg.iterations);
        CHECK(rg.iterations == rc.iterations && rc.iterations > 0);
        float v[2] = {(float)rg.final_loss, (float)rg.test_bpc};
        float ref[2] = {(float)rc.final_loss, (float)rc.test_bpc};
        tu_check_close("final loss, test bpc", v, ref, 2, 2e-3);
    }
    dpt_text_free(tr), dpt_text_free(te);
    remove(path);
    rmdir(dir);
}

/* No GPU needed: the sequence types' GPU code and the --device decision. */
static void test_supported(void)
{
    dpt_net *big = NULL;
    printf("GPU support of the sequence layers (no GPU needed):\n");
    dpt_net *net = NULL;
    static const char spec[] = "sequenceinput in size=vocab\ngru g units=4\nlstm l units=3\n"
                               "fc f outputs=vocab\nsoftmax sm\n";
    dpt_status s = dpt_net_from_spec(spec, "lm.spec", 7, 2, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    CHECK_MSG(dpt_net_gpu_supported(net) == DPT_OK, "%s", dpt_last_error());
    for (int i = 0; i < 3; i++) {
        const layer_type *t = net->layers[i].type;
        CHECK_MSG(t->gpu_supports && t->gpu_supports(&net->layers[i]) == NULL,
                  "%s: no GPU support", t->name);
        if (dpt_gpu_have_cuda() && t->forward)
            CHECK_MSG(t->gpu_forward && t->gpu_backward && t->gpu_setup && t->gpu_release,
                      "%s: CUDA entries missing", t->name);
        if (!dpt_gpu_have_cuda())
            CHECK_MSG(!t->gpu_forward && !t->gpu_setup, "%s: CUDA entries without CUDA",
                      t->name);
    }
    char notice[512];
    CHECK(dpt_train_pick_device("auto", 2, 0, net, notice, sizeof notice) == 1 && !notice[0]);
    CHECK(dpt_train_pick_device("gpu", 1, 0, net, notice, sizeof notice) == 1);
    CHECK(dpt_train_pick_device("auto", 0, 0, net, notice, sizeof notice) == 0 && !notice[0]);
    /* A configuration the GPU code refuses, named: checked before the
     * network's buffers exist (its weights would take 4 GiB). */
    s = net_from_spec_checked("sequenceinput in size=1\nlstm huge units=16384\nfc f outputs=2\n"
                              "softmax sm\n", "big.spec", 2, 1, 1, gpu_check, NULL, &big);
    CHECK_MSG(s == DPT_ERR_UNSUPPORTED && strstr(dpt_last_error(), "big.spec:2: layer 'huge' "
                                                 "(lstm)") &&
                  strstr(dpt_last_error(), "65535 gates"), "%d: %s", s, dpt_last_error());
    CHECK(big == NULL);
    /* Without a device the move fails and the network still trains. */
    if (dpt_gpu_count() < 1) {
        CHECK(dpt_net_to_gpu(net, 0) != DPT_OK && dpt_net_device(net) == -1);
        float x[2 * 3 * 7] = {0};
        const float *y;
        CHECK(dpt_net_set_steps(net, 3, NULL, 2, 0) == DPT_OK);
        s = dpt_net_forward(net, x, 2, DPT_MODE_PREDICT, &y);
        CHECK_MSG(s == DPT_OK, "forward after a failed move: %s", dpt_last_error());
    }
    dpt_net_free(net);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The default language model (dpt_net_default_lm_spec) trained as fit_seq
 * trains it: stateful, one-hot input, SGDM, the loss on the host every
 * step; 10 warm-up steps, then 3 s of steps. One BENCH line. */
static int bench(int argc, char **argv)
{
    if (argc < 2 || atoi(argv[0]) < 1 || atoi(argv[1]) < 1) {
        fprintf(stderr, "usage: test_gpu_rnn --bench B T [V]\n");
        return 2;
    }
    const int B = atoi(argv[0]), T = atoi(argv[1]);
    const int V = argc > 2 && atoi(argv[2]) > 1 ? atoi(argv[2]) : 65;
    if (dpt_gpu_count() < 1) {
        fprintf(stderr, "bench: no usable GPU\n");
        return 1;
    }
    char name[128];
    dpt_gpu_name(0, name, sizeof name);
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = dpt_net_from_spec(dpt_net_default_lm_spec(), "<default lm>", V, B, 0, &net);
    if (s == DPT_OK)
        s = dpt_net_to_gpu(net, 0);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    if (s == DPT_OK) {
        dpt_net_set_stateful(net, 1);
        s = dpt_net_set_steps(net, T, NULL, B, 0);
    }
    size_t rows = (size_t)B * T;
    float *x = calloc(rows * V, sizeof *x), *t = malloc(rows * V * sizeof *t);
    if (s == DPT_OK && (!x || !t))
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
    if (s == DPT_OK) {
        fill_targets(t, B, T, V, NULL, 81);
        /* The input is the target shifted by one step, as a text's chunk. */
        for (size_t r = 1; r < rows; r++)
            memcpy(x + r * V, t + (r - 1) * V, (size_t)V * sizeof *x);
        x[0] = 1.0f;
    }
    double l = 0;
    for (int i = 0; s == DPT_OK && i < 10; i++)
        s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
    long steps = 0;
    double t0 = now_s(), el = 0;
    while (s == DPT_OK && (el < 3.0 || steps < 10)) {
        s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
        steps++;
        el = now_s() - t0;
    }
    if (s == DPT_OK) {
        printf("%s", dpt_net_gpu_describe(net));
        printf("BENCH dptrain-lstm device=\"%s\" batch=%d seq_len=%d vocab=%d units=256 steps=%ld "
               "seconds=%.3f ms_per_step=%.4f chars_per_s=%.1f loss=%.4f\n",
               name, B, T, V, steps, el, 1e3 * el / (double)steps, (double)rows * steps / el, l);
    } else {
        fprintf(stderr, "bench: %s\n", dpt_last_error());
    }
    if (net)
        dpt_net_sync_to_host(net); /* unbinds opt before it is freed */
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    free(x), free(t);
    return s == DPT_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(argc - 2, argv + 2);
    test_supported();
    if (!dpt_gpu_have_cuda()) {
        printf("test_gpu_rnn: the GPU tests skipped: this build of dptrain has no CUDA backend\n");
        return *tu_failures() ? 1 : TU_SKIP;
    }
    if (dpt_gpu_count() < 1) {
        printf("test_gpu_rnn: the GPU tests skipped: no usable GPU (CUDA build, but no device "
               "or driver)\n");
        return *tu_failures() ? 1 : TU_SKIP;
    }
    test_layers();
    test_lengths_change();
    test_stateful();
    test_steps();
    test_fit_text();
    return tu_exit();
}
