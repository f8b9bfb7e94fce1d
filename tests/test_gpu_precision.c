/* --precision fp32|tf32|bf16 (dpt_precision in dptrain/gpu.h).
 *
 * On any machine: the names (dpt_precision_parse, dpt_precision_name), the
 * options' checks in dpt_net_to_gpu_opts (an unknown precision refused in
 * any build; a version-1 options struct, which ends before `precision`,
 * never read past its end), and dpt_fit's refusal of tf32 and bf16 on CPU
 * workers (a version-3 config, which ends before `precision`, trains as
 * before). The CLI's refusals are in tests/test_cli_precision.sh. The CPU
 * emulation of bf16 products (net/net_bf16emu.h): a conv and an fc layer
 * give exactly the CPU's float32 layer on bf16-rounded operands (with the
 * conv's y, dw, dx rounded), and a fused network is refused.
 *
 * Then, on a GPU (else exit 77 unless those failed):
 *   - bf16 conv and fc layers against the CPU's float32 layer given the
 *     same bf16-rounded operands (x, weights, dy): the fc's products are
 *     exact in float32, so only the order of the sums differs (1e-4); cuDNN
 *     rounds a convolution's y, dw and dx to bf16 (2^-9 relative each:
 *     8e-3 of the largest value). And against the float32 layer on
 *     unrounded inputs: within bf16's error (3e-2), but NOT within float32
 *     rounding (> 2e-5), which fails when the bf16 path is silently skipped;
 *   - tf32 convolution within TF32's error (5e-3);
 *   - the example network trained on digits400 in bf16 and in fp32 on the
 *     GPU: both learn, accuracies within 2 test images of each other.
 *
 *   test_gpu_precision                         the tests
 *   test_gpu_precision --bench NET B [B ...]   images/s of one training step
 *       (SGDM, 10 classes, random data from host memory, the loss to the
 *       host every step) of the spec file NET (the example network when
 *       NET is "-") at minibatch B on GPU 0 in fp32, tf32 and bf16, one
 *       "BENCH" line each (scripts/gpu-check's bf16 vs fp32 table)
 *   test_gpu_precision --emulate NET DATA EPOCHS B
 *       on the CPU: NET (a spec file, "-": the example network) trained on
 *       the image folder DATA (90/10 split per label) for EPOCHS at
 *       minibatch B (SGDM 0.01, momentum 0.9, one worker), in float32 and
 *       with bf16 products emulated, from the same start: the test
 *       accuracy of each (what --precision bf16 costs, measured without a
 *       GPU) */
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "net/net_bf16emu.h"
#include "net/net_impl.h"
#include "testutil.h"

#include <stdint.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Round to the nearest bfloat16, ties to even (as __float2bfloat16_rn):
 * the host reference for what the GPU's casts do. */
#define bf16_round net_bf16_round

static void round_all(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = bf16_round(x[i]);
}

static void fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 9);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * dpt_rng_uniform(&r);
}

/* ---- without a GPU ------------------------------------------------------------------ */

static void test_bf16_round(void)
{
    /* 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even (1);
     * 1 + 3·2^-8 halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6. */
    CHECK(bf16_round(1.0f) == 1.0f);
    CHECK(bf16_round(1.0f + 0x1p-8f) == 1.0f);
    CHECK(bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    CHECK(bf16_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    CHECK(bf16_round(-3.0f) == -3.0f);
    CHECK(isinf(bf16_round(INFINITY)) && isnan(bf16_round(NAN)));
    CHECK(isinf(bf16_round(3.4e38f))); /* past bf16's largest finite value */
}

static void test_names(void)
{
    static const char *const names[] = {"fp32", "tf32", "bf16"};
    for (int i = 0; i < 3; i++) {
        dpt_precision p = (dpt_precision)-1;
        CHECK_MSG(dpt_precision_parse(names[i], &p) == DPT_OK && (int)p == i, "%s", names[i]);
        CHECK(!strcmp(dpt_precision_name((dpt_precision)i), names[i]));
    }
    CHECK(!strcmp(dpt_precision_name((dpt_precision)3), "?"));
    CHECK(!strcmp(dpt_precision_name((dpt_precision)-1), "?"));
    static const char *const bad[] = {"fp16", "BF16", "", "bf16 ", "fp32x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dpt_precision p = DPT_PRECISION_TF32;
        dpt_status s = dpt_precision_parse(bad[i], &p);
        CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "(fp32, tf32, bf16)") &&
                      p == DPT_PRECISION_TF32,
                  "'%s': %s", bad[i], dpt_last_error());
    }
    dpt_precision p;
    CHECK(dpt_precision_parse(NULL, &p) == DPT_ERR_ARG);
    /* A hostile argument is cut in the message. */
    char big[4096];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(dpt_precision_parse(big, &p) == DPT_ERR_ARG && strlen(dpt_last_error()) < 200);
}

static void test_options(void)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec("input in size=4x4x1\nfc f outputs=3\n", "t", 3, 2, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    CHECK(o.version == 2 && o.precision == DPT_PRECISION_FP32);
    o.precision = (dpt_precision)7;
    s = dpt_net_to_gpu_opts(net, &o);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "unknown precision 7"), "%s",
              dpt_last_error());
    o.version = 3;
    s = dpt_net_to_gpu_opts(net, &o);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "options version 3"), "%s",
              dpt_last_error());
    /* Version 1 ends before `precision`: the 7 there is not looked at. The
     * move then fails (or works) for what this machine has, not for it. */
    o.version = 1;
    s = dpt_net_to_gpu_opts(net, &o);
    CHECK_MSG(s != DPT_ERR_ARG, "version 1 read past its end: %s", dpt_last_error());
    if (s == DPT_OK)
        CHECK(strstr(dpt_net_gpu_describe(net), "precision fp32") != NULL);
    dpt_net_free(net);
}

static dpt_datastore *open_digits(void)
{
    char fixture[1024];
    tu_fixture("digits400", fixture, sizeof fixture);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(fixture, &fo, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    return ds;
}

/* The emulation against the CPU's float32 layer on rounded operands:
 * bit for bit (the same kernel on the same values). */
static void emu_case(const char *what, const char *spec, int n, int is_conv)
{
    printf("%s:\n", what);
    dpt_net *ref = NULL, *emu = NULL;
    dpt_status s = dpt_net_from_spec(spec, "t", 10, n, 1, &ref);
    if (s == DPT_OK)
        s = dpt_net_from_spec(spec, "t", 10, n, 1, &emu);
    if (s == DPT_OK) {
        /* Biases rounded too, so both sides hold the same values. */
        round_all(dpt_net_params(ref), dpt_net_n_params(ref));
        round_all(dpt_net_params(emu), dpt_net_n_params(emu));
        s = net_emulate_bf16(emu);
    }
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK) {
        dpt_net_free(ref), dpt_net_free(emu);
        return;
    }
    int chw[3], L = dpt_net_n_layers(ref), k = dpt_net_n_outputs(ref);
    dpt_net_input_shape(ref, chw);
    size_t nx = (size_t)n * chw[0] * chw[1] * chw[2], ny = (size_t)n * k;
    dpt_net_layer_shape(ref, L - 2, chw);
    size_t n_dx = (size_t)n * chw[0] * chw[1] * chw[2], np = dpt_net_n_params(ref);
    float *x = malloc(nx * sizeof *x), *xr = malloc(nx * sizeof *xr);
    float *dy = malloc(ny * sizeof *dy), *dyr = malloc(ny * sizeof *dyr);
    float *yr = malloc(ny * sizeof *yr), *gr = malloc(np * sizeof *gr);
    float *dxr = malloc(n_dx * sizeof *dxr);
    fill_uniform(x, nx, 0.05f, 1, 21);
    fill_uniform(dy, ny, -1, 1, 22);
    memcpy(xr, x, nx * sizeof *x), round_all(xr, nx);
    memcpy(dyr, dy, ny * sizeof *dy), round_all(dyr, ny);
    const float *y;
    CHECK(dpt_net_forward(ref, xr, n, DPT_MODE_TRAIN, &y) == DPT_OK);
    memcpy(yr, y, ny * sizeof *yr);
    if (is_conv)
        round_all(yr, ny);
    CHECK(dpt_net_backward(ref, dyr, 0) == DPT_OK);
    memcpy(gr, dpt_net_grads(ref), np * sizeof *gr);
    memcpy(dxr, net_node_grad(ref, L - 2), n_dx * sizeof *dxr);
    if (is_conv) {
        const dpt_param_info *w = dpt_net_learnable(ref, 0); /* t/Weights */
        round_all(gr + w->offset, w->n);
        round_all(dxr, n_dx);
    }
    s = dpt_net_forward(emu, x, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        CHECK_MSG(!memcmp(y, yr, ny * sizeof *y), "%s: forward differs", what);
        int same = 1; /* and differs from float32 on the unrounded input */
        CHECK(dpt_net_forward(ref, x, n, DPT_MODE_TRAIN, &y) == DPT_OK);
        const float *ye;
        CHECK(dpt_net_forward(emu, x, n, DPT_MODE_TRAIN, &ye) == DPT_OK);
        for (size_t i = 0; i < ny && same; i++)
            same = y[i] == ye[i];
        CHECK_MSG(!same, "%s: the emulation gave float32's bits", what);
    }
    s = dpt_net_backward(emu, dy, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        CHECK_MSG(!memcmp(dpt_net_grads(emu), gr, np * sizeof *gr), "%s: gradients differ", what);
        CHECK_MSG(!memcmp(net_node_grad(emu, L - 2), dxr, n_dx * sizeof *dxr),
                  "%s: input gradient differs", what);
    }
    free(x), free(xr), free(dy), free(dyr), free(yr), free(gr), free(dxr);
    dpt_net_free(ref), dpt_net_free(emu);
}

static void test_emulation(void)
{
    emu_case("emulated bf16 conv 3x3, 8 -> 12", "input in size=9x9x8\nrelu p\n"
             "conv t filter=3 filters=12 padding=1\n", 6, 1);
    emu_case("emulated bf16 fc 75 -> 7", "input in size=5x5x3\nrelu p\nfc t outputs=7\n", 9, 0);
    /* A conv fused with its batch norm reads x through it: refused
     * (where this machine's kernels fuse at all), and fine built with
     * DPT_FUSION=0. */
    const char *spec = "input in size=8x8x2\nconv c filter=3 filters=4\nbatchnorm b\nrelu r\n"
                       "conv d filter=3 filters=4\nfc f outputs=3\n";
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(spec, "t", 3, 4, 1, &net) == DPT_OK);
    int fused = 0;
    for (int i = 1; net && i < net->n_layers; i++)
        fused |= net->layers[i].in_bnf || net->layers[i].out_bnf || net->layers[i].sums_out;
    dpt_status s = net ? net_emulate_bf16(net) : DPT_ERR_ARG;
    if (fused)
        CHECK_MSG(s == DPT_ERR_UNSUPPORTED && strstr(dpt_last_error(), "DPT_FUSION=0"), "%s",
                  dpt_last_error());
    else
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    dpt_net_free(net), net = NULL;
    const char *old = getenv("DPT_FUSION");
    char *saved = old ? strdup(old) : NULL;
    setenv("DPT_FUSION", "0", 1);
    CHECK(dpt_net_from_spec(spec, "t", 3, 4, 1, &net) == DPT_OK);
    s = net ? net_emulate_bf16(net) : DPT_ERR_ARG;
    CHECK_MSG(s == DPT_OK, "DPT_FUSION=0: %s", dpt_last_error());
    dpt_net_free(net);
    if (saved)
        setenv("DPT_FUSION", saved, 1);
    else
        unsetenv("DPT_FUSION");
    free(saved);
}

static void test_fit_refusals(void)
{
    dpt_datastore *ds = open_digits();
    if (!ds)
        return;
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    CHECK(cfg.version == 4 && cfg.precision == DPT_PRECISION_FP32);
    cfg.spec = "input in size=28x28x1\nfc fc outputs=classes\nsoftmax sm\n";
    cfg.train = ds;
    cfg.epochs = 1, cfg.batch = 100;
    cfg.spmd.backend = DPT_COMM_LOCAL, cfg.spmd.n_workers = 1;
    dpt_fit_result res;
    cfg.precision = DPT_PRECISION_BF16;
    dpt_status s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_ERR_UNSUPPORTED && strstr(dpt_last_error(), "precision bf16 needs GPU") &&
                  strstr(dpt_last_error(), "fp32 only"),
              "bf16 on CPU workers: %s", dpt_last_error());
    cfg.precision = DPT_PRECISION_TF32;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_ERR_UNSUPPORTED && strstr(dpt_last_error(), "precision tf32"),
              "tf32 on CPU workers: %s", dpt_last_error());
    cfg.precision = 9;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "unknown precision 9"), "%s",
              dpt_last_error());
    cfg.precision = DPT_PRECISION_FP32;
    cfg.cuda_graph = 2;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "cuda_graph 2 (0 or 1)"), "%s",
              dpt_last_error());
    cfg.precision = 9;
    /* A version-3 caller's struct ends before `precision` and `cuda_graph`:
     * never read. */
    cfg.version = 3;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_OK && res.iterations == 4, "version-3 config: %s", dpt_last_error());
    dpt_datastore_free(ds);
}

/* ---- on a GPU -------------------------------------------------------------------------- */

/* The CPU net and a GPU net of the same spec and seed, both with
 * bf16-rounded learnables (when round_params), the GPU one moved with
 * precision prec. */
static int make_pair(const char *spec, int n, dpt_precision prec, int round_params,
                     dpt_net **cpu, dpt_net **gpu)
{
    *cpu = *gpu = NULL;
    dpt_status s = dpt_net_from_spec(spec, "t", 10, n, 1, cpu);
    if (s == DPT_OK)
        s = dpt_net_from_spec(spec, "t", 10, n, 1, gpu);
    if (s == DPT_OK && round_params) {
        round_all(dpt_net_params(*cpu), dpt_net_n_params(*cpu));
        round_all(dpt_net_params(*gpu), dpt_net_n_params(*gpu));
    }
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.precision = prec;
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(*gpu, &o);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK) {
        dpt_net_free(*cpu), dpt_net_free(*gpu);
        *cpu = *gpu = NULL;
        return -1;
    }
    printf("%s", dpt_net_gpu_describe(*gpu));
    return 0;
}

/* "input -> relu p -> T": T's forward, gradients and input gradient in
 * bf16 on the GPU against the CPU. tol: given the same rounded operands;
 * the unrounded forward must differ from float32 by more than 2e-5 (bf16
 * in use) and less than 3e-2. */
static void bf16_case(const char *what, const char *spec, int n, double tol, int must_be_bf16)
{
    printf("%s:\n", what);
    dpt_net *cpu, *gpu;
    if (make_pair(spec, n, DPT_PRECISION_BF16, 1, &cpu, &gpu))
        return;
    int chw[3], L = dpt_net_n_layers(cpu), k = dpt_net_n_outputs(cpu);
    dpt_net_input_shape(cpu, chw);
    size_t nx = (size_t)n * chw[0] * chw[1] * chw[2], ny = (size_t)n * k;
    dpt_net_layer_shape(cpu, L - 2, chw);
    size_t n_dx = (size_t)n * chw[0] * chw[1] * chw[2];
    float *x = malloc(nx * sizeof *x), *xr = malloc(nx * sizeof *xr);
    float *dy = malloc(ny * sizeof *dy), *yc = malloc(ny * sizeof *yc);
    float *dxg = malloc(n_dx * sizeof *dxg);
    fill_uniform(x, nx, 0.05f, 1, 11);
    memcpy(xr, x, nx * sizeof *x);
    round_all(xr, nx);
    fill_uniform(dy, ny, -1, 1, 12);
    round_all(dy, ny);
    const float *y;
    /* Unrounded input: bf16's error, not float32's. */
    CHECK(dpt_net_forward(cpu, x, n, DPT_MODE_TRAIN, &y) == DPT_OK);
    memcpy(yc, y, ny * sizeof *yc);
    dpt_status s = dpt_net_forward(gpu, x, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        double e = tu_check_close("forward, unrounded input", y, yc, ny, 3e-2);
        if (must_be_bf16)
            CHECK_MSG(e > 2e-5, "%s: error %.3e is float32's: bf16 not used", what, e);
    }
    /* Rounded operands: the products are the CPU's. */
    CHECK(dpt_net_forward(cpu, xr, n, DPT_MODE_TRAIN, &y) == DPT_OK);
    memcpy(yc, y, ny * sizeof *yc);
    s = dpt_net_forward(gpu, xr, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK)
        tu_check_close("forward, bf16 operands", y, yc, ny, tol);
    CHECK(dpt_net_backward(cpu, dy, 0) == DPT_OK);
    s = dpt_net_backward(gpu, dy, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        const float *gg = dpt_net_grads(gpu), *gc = dpt_net_grads(cpu);
        for (size_t i = 0; i < dpt_net_n_learnables(cpu); i++) {
            const dpt_param_info *e = dpt_net_learnable(cpu, i);
            char label[160];
            snprintf(label, sizeof label, "gradient %s", e->name);
            tu_check_close(label, gg + e->offset, gc + e->offset, e->n, tol);
        }
        s = net_gpu_debug_download(gpu, net_node_grad(gpu, L - 2), dxg, n_dx);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (s == DPT_OK)
            tu_check_close("input gradient", dxg, net_node_grad(cpu, L - 2), n_dx, tol);
    }
    free(x), free(xr), free(dy), free(yc), free(dxg);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

static void test_layers(void)
{
    bf16_case("bf16 conv 3x3, 16 -> 32 filters, padding 1",
              "input in size=12x12x16\nrelu p\nconv t filter=3 filters=32 padding=1\n", 16, 8e-3,
              1);
    bf16_case("bf16 conv 3x3, stride 2, 8 -> 16, no bias",
              "input in size=11x11x8\nrelu p\nconv t filter=3 filters=16 stride=2 padding=1 "
              "bias=0\n", 8, 8e-3, 1);
    /* The example's conv1 (one input channel): bf16 or, where cuDNN has no
     * bf16 algorithm for it, float32 (the description says which). */
    bf16_case("bf16 conv 5x5 on 28x28x1, 20 filters (conv1 of the example)",
              "input in size=28x28x1\nrelu p\nconv t filter=5 filters=20\n", 32, 8e-3, 0);
    bf16_case("bf16 fc 48 -> 40", "input in size=4x4x3\nrelu p\nfc t outputs=40\n", 24, 1e-4, 1);
    bf16_case("bf16 fc 5x5x3 -> 7 (odd sizes)", "input in size=5x5x3\nrelu p\nfc t outputs=7\n",
              9, 1e-4, 1);
}

static void test_tf32(void)
{
    printf("tf32 conv 3x3, 16 -> 32:\n");
    dpt_net *cpu, *gpu;
    const char *spec = "input in size=12x12x16\nrelu p\nconv t filter=3 filters=32 padding=1\n";
    enum { N = 16 };
    if (make_pair(spec, N, DPT_PRECISION_TF32, 0, &cpu, &gpu))
        return;
    CHECK(strstr(dpt_net_gpu_describe(gpu), "precision tf32, TF32 on") != NULL);
    size_t nx = (size_t)N * 12 * 12 * 16, ny = (size_t)N * dpt_net_n_outputs(cpu);
    float *x = malloc(nx * sizeof *x), *yc = malloc(ny * sizeof *yc);
    fill_uniform(x, nx, 0.05f, 1, 13);
    const float *y;
    CHECK(dpt_net_forward(cpu, x, N, DPT_MODE_TRAIN, &y) == DPT_OK);
    memcpy(yc, y, ny * sizeof *yc);
    dpt_status s = dpt_net_forward(gpu, x, N, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK)
        tu_check_close("forward", y, yc, ny, 5e-3);
    free(x), free(yc);
    dpt_net_free(cpu), dpt_net_free(gpu);
}

/* One epoch of SGDM steps over train shuffled with seed epoch, in
 * minibatches of B images of shape chw; *mean_loss: the steps' mean loss
 * (NAN without steps). */
static dpt_status train_epoch(dpt_net *net, dpt_sgdm *opt, dpt_datastore *train, int epoch,
                              int B, const int chw[3], double *mean_loss)
{
    dpt_mbq *q = NULL;
    dpt_datastore *shuffled = NULL;
    dpt_mbq_options mo = DPT_MBQ_OPTIONS_INIT;
    mo.batch_size = B, mo.channels = chw[0], mo.height = chw[1], mo.width = chw[2];
    dpt_status s = dpt_datastore_shuffle(train, (uint64_t)epoch, &shuffled);
    if (s == DPT_OK)
        s = dpt_mbq_new(shuffled, &mo, &q);
    double sum = 0;
    int nb = 0;
    while (s == DPT_OK && dpt_mbq_has_data(q)) {
        dpt_batch b;
        double l = 0;
        if ((s = dpt_mbq_next(q, &b)) == DPT_OK &&
            (s = dpt_train_step(net, opt, NULL, b.x.data, b.y.data, b.n, &l, NULL)) == DPT_OK)
            sum += l, nb++;
    }
    dpt_mbq_free(q);
    dpt_datastore_free(shuffled);
    *mean_loss = nb ? sum / nb : NAN;
    return s;
}

/* The example network on digits400 (as test_gpu's test_digits) in one
 * precision on GPU 0: the test accuracy, NAN on failure. */
static double train_digits(dpt_datastore *train, dpt_datastore *test, dpt_precision prec)
{
    enum { B = 32, EPOCHS = 10 };
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.precision = prec;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, B, 3, &net);
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(net, &o);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    double first = NAN, last = NAN, acc = NAN;
    const int chw[3] = {1, 28, 28};
    for (int epoch = 1; s == DPT_OK && epoch <= EPOCHS; epoch++) {
        s = train_epoch(net, opt, train, epoch, B, chw, &last);
        if (epoch == 1)
            first = last;
    }
    if (s == DPT_OK)
        s = dpt_evaluate(net, test, &acc, NULL);
    CHECK_MSG(s == DPT_OK, "%s: %s", dpt_precision_name(prec), dpt_last_error());
    printf("digits400, %s on the GPU: mean loss %.4f -> %.4f, test accuracy %.3f\n",
           dpt_precision_name(prec), first, last, acc);
    CHECK_MSG(last < 0.5 * first, "%s: the loss did not fall: %.4f -> %.4f",
              dpt_precision_name(prec), first, last);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s == DPT_OK ? acc : NAN;
}

static void test_digits(void)
{
    dpt_datastore *all = open_digits(), *train = NULL, *test = NULL;
    if (!all)
        return;
    CHECK(dpt_datastore_split_each_label(all, 0.9, 3, &train, &test) == DPT_OK);
    double a32 = train_digits(train, test, DPT_PRECISION_FP32);
    double a16 = train_digits(train, test, DPT_PRECISION_BF16);
    /* 40 test images: 2 of them are 0.05. */
    CHECK_MSG(a32 >= 0.6 && a16 >= 0.6 && fabs(a16 - a32) <= 0.051,
              "accuracy fp32 %.3f, bf16 %.3f", a32, a16);
    dpt_datastore_free(test), dpt_datastore_free(train), dpt_datastore_free(all);
}

/* ---- benchmark ------------------------------------------------------------------------ */

static int bench_one(const char *path, int B, dpt_precision prec, const char *gpu_name)
{
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    float *x = NULL, *t = NULL;
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.precision = prec;
    dpt_status s = strcmp(path, "-")
                       ? dpt_net_from_spec_file(path, 10, B, 0, &net)
                       : dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, B, 0, &net);
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(net, &o);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    double l = 0, el = 0;
    long steps = 0;
    if (s == DPT_OK) {
        int chw[3], k = dpt_net_n_outputs(net);
        dpt_net_input_shape(net, chw);
        size_t nx = (size_t)B * chw[0] * chw[1] * chw[2];
        x = malloc(nx * sizeof *x), t = calloc((size_t)B * k, sizeof *t);
        if (!x || !t)
            s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        for (size_t i = 0; x && i < nx; i++)
            x[i] = (float)((i * 2654435761u) % 1000u) / 1000.0f;
        for (int i = 0; t && i < B; i++)
            t[(size_t)i * k + i % k] = 1.0f;
    }
    for (int i = 0; s == DPT_OK && i < 10; i++)
        s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
    double t0 = now_s();
    while (s == DPT_OK && (el < 3.0 || steps < 20)) {
        s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
        steps++;
        el = now_s() - t0;
    }
    if (s != DPT_OK)
        fprintf(stderr, "bench: %s, batch %d, %s: %s\n", path, B, dpt_precision_name(prec),
                dpt_last_error());
    else
        printf("BENCH dptrain device=\"%s\" net=%s batch=%d precision=%s steps=%ld seconds=%.3f "
               "ms_per_step=%.4f images_per_s=%.1f loss=%.4f\n",
               gpu_name, path, B, dpt_precision_name(prec), steps, el, 1e3 * el / steps,
               B * steps / el, l);
    fflush(stdout);
    free(x), free(t);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s == DPT_OK ? 0 : 1;
}

static int bench(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_gpu_precision --bench NET|- B [B ...]\n");
        return 1;
    }
    if (dpt_gpu_count() < 1) {
        fprintf(stderr, "bench: no usable GPU\n");
        return 1;
    }
    char name[128];
    dpt_gpu_name(0, name, sizeof name);
    int bad = 0;
    for (int a = 1; a < argc; a++) {
        char *end = NULL;
        long B = strtol(argv[a], &end, 10);
        if (!end || *end || B < 1 || B > 65536) {
            fprintf(stderr, "bench: batch '%.32s' is not in 1..65536\n", argv[a]);
            return 1;
        }
        for (int p = DPT_PRECISION_FP32; p <= DPT_PRECISION_BF16; p++)
            bad |= bench_one(argv[0], (int)B, (dpt_precision)p, name);
    }
    return bad;
}

/* ---- the CPU emulation's accuracy ---------------------------------------------------- */

static double emulate_run(const char *path, dpt_datastore *train, dpt_datastore *test,
                          int epochs, int B, int bf16)
{
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    int classes = dpt_datastore_n_classes(train);
    dpt_status s = strcmp(path, "-")
                       ? dpt_net_from_spec_file(path, classes, B, 7, &net)
                       : dpt_net_from_spec(dpt_net_default_spec(), "<default>", classes, B, 7, &net);
    if (s == DPT_OK && bf16)
        s = net_emulate_bf16(net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    int chw[3] = {1, 1, 1};
    if (net)
        dpt_net_input_shape(net, chw);
    double acc = NAN, last = NAN, t0 = now_s();
    for (int epoch = 1; s == DPT_OK && epoch <= epochs; epoch++) {
        s = train_epoch(net, opt, train, epoch, B, chw, &last);
        if (s == DPT_OK && (s = dpt_evaluate(net, test, &acc, NULL)) == DPT_OK)
            printf("  %s epoch %d: mean loss %.4f, test accuracy %.4f (%.0f s)\n",
                   bf16 ? "bf16 (emulated)" : "fp32", epoch, last, acc, now_s() - t0);
        fflush(stdout);
    }
    if (s != DPT_OK)
        fprintf(stderr, "emulate: %s\n", dpt_last_error());
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s == DPT_OK ? acc : NAN;
}

static int emulate(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_gpu_precision --emulate NET|- DATA EPOCHS B\n");
        return 1;
    }
    long epochs = strtol(argv[2], NULL, 10), B = strtol(argv[3], NULL, 10);
    if (epochs < 1 || epochs > 1000 || B < 1 || B > 65536) {
        fprintf(stderr, "emulate: EPOCHS 1..1000, B 1..65536\n");
        return 1;
    }
    /* Fused convolutions read their input through the batch norm: off. */
    setenv("DPT_FUSION", "0", 1);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *all = NULL, *train = NULL, *test = NULL;
    dpt_status s = dpt_datastore_open_folder(argv[1], &fo, &all);
    if (s == DPT_OK)
        s = dpt_datastore_split_each_label(all, 0.9, 3, &train, &test);
    if (s != DPT_OK) {
        fprintf(stderr, "emulate: %s\n", dpt_last_error());
        return 1;
    }
    double a32 = emulate_run(argv[0], train, test, (int)epochs, (int)B, 0);
    double a16 = emulate_run(argv[0], train, test, (int)epochs, (int)B, 1);
    printf("EMULATE net=%s data=%s epochs=%ld batch=%ld fp32_accuracy=%.4f "
           "bf16_emulated_accuracy=%.4f difference_points=%.2f\n",
           argv[0], argv[1], epochs, B, a32, a16, 100 * (a16 - a32));
    dpt_datastore_free(test), dpt_datastore_free(train), dpt_datastore_free(all);
    return isnan(a32) || isnan(a16);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "--emulate") == 0)
        return emulate(argc - 2, argv + 2);
    test_bf16_round();
    test_names();
    test_options();
    test_fit_refusals();
    test_emulation();
    if (!dpt_gpu_have_cuda() || dpt_gpu_count() < 1) {
        printf("test_gpu_precision: the GPU checks skipped: %s\n",
               dpt_gpu_have_cuda() ? "no usable GPU" : "this build has no CUDA backend");
        return *tu_failures() ? 1 : TU_SKIP;
    }
    test_layers();
    test_tf32();
    test_digits();
    return tu_exit();
}
