/* The layer types of issue 19 (maxpool, avgpool, globalavgpool, dropout,
 * leakyrelu, sigmoid, tanh, conv dilation/groups) inside networks built
 * from spec text. Their kernels are checked against PyTorch in test_ops;
 * here the layer code around them:
 *
 * 0. Against PyTorch: a chain of every new type (layers_chain.safetensors,
 *    made by make_ops_fixtures.py), PREDICT and TRAIN outputs (dropout
 *    masks drawn in Python with the same key function) and the gradient of
 *    every learnable, relative error (tu_rel_err) below 1e-5.
 * 1. Gradients through each layer: a small network input -> conv -> the
 *    layer -> fc, L = Σ y·r, central differences on the learnables of the
 *    conv below and the fc above against dpt_net_backward's gradients
 *    (the conv's gradient passes through the layer's backward).
 * 2. Spec round trip: dpt_net_spec writes canonical keys that rebuild the
 *    same network (same spec text, same learnable shapes).
 * 3. Dropout: PREDICT is the identity, p=0 is the identity in TRAIN, the
 *    masks depend on the iteration and not on how the minibatch is split
 *    among workers (obs_offset), and the same network in one piece or in
 *    slices gives the same bits.
 * 3b. N = 2, 3, 4 local workers against one worker on the whole minibatch,
 *    3 training steps of a network with dropout, pooling and synchronised
 *    batch norm: the same loss, gradients and learnables (1e-5), workers
 *    identical (hash), and the dropout masks really drop (p=0 differs).
 * 4. Bad specs (pooling that does not fit, groups that do not divide, out
 *    of range values) fail with the spec line in the message.
 * 5. The builder calls write the spec lines the parser reads back. */
#include "core/safetensors.h"
#include "dptrain/comm.h"
#include "dptrain/core.h"
#include "dptrain/net.h"
#include "dptrain/train.h"
#include "ops/ops.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FD_TOL 1e-2
#define FD_COORDS 24

static double worst_fd;

static void fill_normal(dpt_rng *rng, float *p, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * dpt_rng_normal(rng);
}

static dpt_net *build(const char *spec, int max_batch)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, "test", 0, max_batch, 7, &net);
    CHECK_MSG(s == DPT_OK, "build failed: %s\n%s", dpt_last_error(), spec);
    return net;
}

static const float *run(dpt_net *net, const float *x, int n, dpt_mode mode)
{
    const float *y = NULL;
    dpt_status s = dpt_net_forward(net, x, n, mode, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    return y;
}

/* L = Σ y·r over a TRAIN forward. */
static double objective(dpt_net *net, const float *x, int n, const float *r)
{
    const float *y = NULL;
    dpt_status s = dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return NAN;
    size_t ny = (size_t)n * dpt_net_n_outputs(net);
    double l = 0.0;
    for (size_t i = 0; i < ny; i++)
        l += (double)y[i] * r[i];
    return l;
}

/* Finite differences on every learnable tensor of the network. */
static void fd_net(const char *label, const char *spec, int n, dpt_rng *rng)
{
    dpt_net *net = build(spec, n);
    if (!net)
        return;
    int chw[3];
    dpt_net_input_shape(net, chw);
    size_t nx = (size_t)n * chw[0] * chw[1] * chw[2];
    size_t ny = (size_t)n * dpt_net_n_outputs(net);
    float *x = malloc(nx * sizeof *x), *r = malloc(ny * sizeof *r);
    fill_normal(rng, x, nx, 1.0f);
    fill_normal(rng, r, ny, 1.0f);
    /* Biases away from 0 so ReLU-like kinks and pooling ties are rare. */
    float *p = dpt_net_params(net);
    const size_t np = dpt_net_n_params(net);
    fill_normal(rng, p, np, 0.5f);

    objective(net, x, n, r);
    float *dy = dpt_net_output_grad(net);
    memcpy(dy, r, ny * sizeof *dy);
    CHECK_MSG(dpt_net_backward(net, dy, 0) == DPT_OK, "%s", dpt_last_error());
    float *g = malloc(np * sizeof *g);
    memcpy(g, dpt_net_grads(net), np * sizeof *g);

    printf("%s\n", label);
    for (size_t t = 0; t < dpt_net_n_learnables(net); t++) {
        const dpt_param_info *info = dpt_net_learnable(net, t);
        double gmax = 0.0;
        for (size_t i = 0; i < info->n; i++)
            gmax = fmax(gmax, fabs(g[info->offset + i]));
        double worst = 0.0;
        size_t m = info->n < FD_COORDS ? info->n : FD_COORDS, kinks = 0;
        for (size_t j = 0; j < m; j++) {
            size_t i = info->offset +
                       (info->n <= FD_COORDS ? j : dpt_rng_below(rng, (uint32_t)info->n));
            const float v = p[i], h = 1e-3f, vp = v + h, vm = v - h;
            p[i] = vp;
            double lp = objective(net, x, n, r);
            p[i] = vm;
            double lm = objective(net, x, n, r);
            p[i] = v;
            double l0 = objective(net, x, n, r);
            double scale = fmax(fmax(fabs(g[i]), 0.1 * gmax), 1e-30);
            /* A kink inside [v-h, v+h] (a (leaky) ReLU input or a pooling
             * winner changing with the step): the one-sided differences
             * disagree, and the central one means nothing. Skip such
             * coordinates; a wrong backward still shows on the others. */
            double fwd = (lp - l0) / ((double)vp - v), bwd = (l0 - lm) / ((double)v - vm);
            if (fabs(fwd - bwd) / scale > FD_TOL) {
                kinks++;
                continue;
            }
            double fd = (lp - lm) / ((double)vp - (double)vm);
            double e = fabs(fd - g[i]) / scale;
            if (e > worst || e != e)
                worst = e;
        }
        if (worst > worst_fd || worst != worst)
            worst_fd = worst;
        int ok = worst <= FD_TOL && gmax > 0.0 && kinks * 2 <= m;
        printf("  %-28s fd err %.3e (tol %.0e, %zu of %zu at a kink) %s\n", info->name, worst,
               FD_TOL, kinks, m, ok ? "ok" : "FAIL");
        if (!ok)
            ++*tu_failures();
    }
    free(x), free(r), free(g);
    dpt_net_free(net);
}

static void gradients(void)
{
    dpt_rng rng;
    dpt_rng_seed(&rng, 19, 1);
    static const struct {
        const char *label, *layer;
    } cases[] = {
        {"maxpool size=2", "maxpool p size=2"},
        {"maxpool size=3 stride=2 padding=1", "maxpool p size=3 stride=2 padding=1"},
        {"maxpool size=2x3 stride=1x2 padding=1x0", "maxpool p size=2x3 stride=1x2 padding=1x0"},
        {"avgpool size=2", "avgpool p size=2"},
        {"avgpool size=3 stride=1 padding=1", "avgpool p size=3 stride=1 padding=1"},
        {"globalavgpool", "globalavgpool p"},
        {"leakyrelu", "leakyrelu p"},
        {"leakyrelu alpha=0.2", "leakyrelu p alpha=0.2"},
        {"sigmoid", "sigmoid p"},
        {"tanh", "tanh p"},
        {"dropout p=0.3", "dropout p p=0.3"},
        {"dropout p=0", "dropout p p=0"},
        {"conv dilation=2 padding=2", "conv p filter=3 filters=4 padding=2 dilation=2"},
        {"conv groups=2", "conv p filter=3 filters=6 padding=1 groups=2"},
        {"conv depthwise", "conv p filter=3 filters=4 groups=4"},
        {"conv groups=2 dilation=2 stride=2",
         "conv p filter=3 filters=2 stride=2 padding=1 dilation=2 groups=2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char spec[512];
        snprintf(spec, sizeof spec,
                 "input in size=7x9x2\n"
                 "conv c filter=3 filters=4 padding=1\n"
                 "%s\n"
                 "fc f outputs=3\n", cases[i].layer);
        fd_net(cases[i].label, spec, 3, &rng);
    }
    /* In a graph: outputs of the new types feeding several layers (their
     * gradients summed by the executor), a residual add around a dropout
     * and a depthwise conv, a concat of max and average pooling. */
    fd_net("graph: residual with dropout, pooling branches",
           "input in size=8x8x3\n"
           "conv c filter=3 filters=4 padding=1\n"
           "leakyrelu a alpha=0.1\n"
           "conv dw filter=3 filters=4 padding=1 groups=4\n"
           "dropout d p=0.4\n"
           "add r from=d,a\n"
           "maxpool mp size=2 from=r\n"
           "avgpool ap size=3 stride=2 padding=1 from=r\n"
           "concat j from=mp,ap\n"
           "tanh t\n"
           "conv dl filter=3 filters=8 padding=2 dilation=2 from=j\n"
           "sigmoid s\n"
           "add r2 from=s,t\n"
           "globalavgpool g\n"
           "fc f outputs=3\n", 3, &rng);
}

/* ---- against PyTorch ------------------------------------------------------ */

#define REF_TOL 1e-5

static float *st_floats(const dpt_st *st, const char *name, size_t *n)
{
    const dpt_st_tensor *t = dpt_st_get(st, name);
    CHECK_MSG(t != NULL, "fixture lacks %s", name);
    if (!t)
        return NULL;
    size_t k = 1;
    for (int i = 0; i < t->ndim; i++)
        k *= (size_t)t->shape[i];
    float *p = malloc((k ? k : 1) * sizeof *p);
    CHECK_MSG(dpt_st_read_f32(st, name, p, k) == DPT_OK, "%s", dpt_last_error());
    *n = k;
    return p;
}

static void chain_vs_torch(void)
{
    char path[1024];
    tu_fixture("layers_chain.safetensors", path, sizeof path);
    dpt_st *st = NULL;
    CHECK_MSG(dpt_st_open(path, &st) == DPT_OK, "%s", dpt_last_error());
    if (!st)
        return;
    const char *spec = dpt_st_meta(st, "spec");
    const int n = atoi(dpt_st_meta(st, "n"));
    dpt_net *net = spec ? build(spec, n) : NULL;
    if (!net) {
        dpt_st_close(st);
        return;
    }
    printf("layers_chain.safetensors\n");
    /* PyTorch's learnables, by table name. */
    for (size_t t = 0; t < dpt_net_n_learnables(net); t++) {
        const dpt_param_info *info = dpt_net_learnable(net, t);
        char key[256];
        snprintf(key, sizeof key, "chain/learn/%s", info->name);
        size_t k = 0;
        float *v = st_floats(st, key, &k);
        CHECK_MSG(v && k == info->n, "%s: %zu values, the network has %zu", key, k, info->n);
        if (v && k == info->n)
            CHECK_MSG(dpt_net_write_learnable(net, info->name, v, k) == DPT_OK, "%s",
                      dpt_last_error());
        free(v);
    }
    size_t nx, nr, ny;
    float *x = st_floats(st, "chain/x", &nx), *r = st_floats(st, "chain/r", &nr);
    float *yp = st_floats(st, "chain/y_predict", &ny), *yt = st_floats(st, "chain/y_train", &ny);
    const float *y = NULL;
    CHECK(dpt_net_forward(net, x, n, DPT_MODE_PREDICT, &y) == DPT_OK);
    if (y)
        tu_check_close("chain y (predict)", y, yp, ny, REF_TOL);
    dpt_net_set_iteration(net, atol(dpt_st_meta(st, "epoch")), atol(dpt_st_meta(st, "iteration")));
    dpt_net_set_obs_offset(net, atol(dpt_st_meta(st, "obs0")));
    y = NULL;
    CHECK(dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &y) == DPT_OK);
    if (y)
        tu_check_close("chain y (train, dropout masks)", y, yt, ny, REF_TOL);
    float *dy = dpt_net_output_grad(net);
    memcpy(dy, r, nr * sizeof *dy);
    CHECK(dpt_net_backward(net, dy, 0) == DPT_OK);
    for (size_t t = 0; t < dpt_net_n_learnables(net); t++) {
        const dpt_param_info *info = dpt_net_learnable(net, t);
        char key[256], label[256];
        snprintf(key, sizeof key, "chain/grad/%s", info->name);
        snprintf(label, sizeof label, "chain d %s", info->name);
        size_t k = 0;
        float *want = st_floats(st, key, &k);
        if (want && k == info->n)
            tu_check_close(label, dpt_net_grads(net) + info->offset, want, k, REF_TOL);
        free(want);
    }
    free(x), free(r), free(yp), free(yt);
    dpt_net_free(net);
    dpt_st_close(st);
}

/* ---- batch-norm fusion around grouped and dilated convolutions ------------ */

/* The fused network (batch norm applied by the convs next to it) must
 * compute what the unfused one does: same outputs and gradients within
 * float rounding, with each convolution algorithm forced in both (a
 * measured plan could pick different ones for the two, and the conv biases'
 * gradients, zero but for rounding under a batch norm, would then differ
 * in their noise). */
static void fusion_with(const char *algo)
{
    const char *spec = "input in size=8x9x4\n"
                       "conv c1 filter=3 filters=6 padding=2 dilation=2 groups=2\n"
                       "batchnorm b1\n"
                       "relu r1\n"
                       "conv c2 filter=3 filters=6 padding=1 groups=6\n"
                       "batchnorm b2\n"
                       "relu r2\n"
                       "conv c3 filter=1 filters=4 groups=2\n"
                       "batchnorm b3\n"
                       "fc f outputs=3\n";
    enum { N = 5 };
    setenv("DPT_CONV_ALGO", algo, 1);
    dpt_net *a = build(spec, N);
    setenv("DPT_FUSION", "0", 1);
    dpt_net *b = build(spec, N);
    unsetenv("DPT_FUSION");
    unsetenv("DPT_CONV_ALGO");
    if (!a || !b)
        goto done;
    const size_t nx = (size_t)N * 4 * 8 * 9, ny = (size_t)N * 3, np = dpt_net_n_params(a);
    float *x = malloc(nx * sizeof *x), *r = malloc(ny * sizeof *r), *ya = malloc(ny * sizeof *ya);
    float *ga = malloc(np * sizeof *ga);
    dpt_rng rng;
    dpt_rng_seed(&rng, 19, 3);
    fill_normal(&rng, x, nx, 1.0f);
    fill_normal(&rng, r, ny, 1.0f);
    memcpy(ya, run(a, x, N, DPT_MODE_TRAIN), ny * sizeof *ya);
    memcpy(dpt_net_output_grad(a), r, ny * sizeof *r);
    CHECK(dpt_net_backward(a, dpt_net_output_grad(a), 0) == DPT_OK);
    memcpy(ga, dpt_net_grads(a), np * sizeof *ga);
    const float *yb = run(b, x, N, DPT_MODE_TRAIN);
    printf("fused vs unfused (conv groups/dilation -> batchnorm -> relu -> conv), %s\n", algo);
    if (yb)
        tu_check_close("y", ya, yb, ny, 1e-5);
    memcpy(dpt_net_output_grad(b), r, ny * sizeof *r);
    CHECK(dpt_net_backward(b, dpt_net_output_grad(b), 0) == DPT_OK);
    /* All gradients against the largest: the conv biases' (and here the
     * batch-norm scales') gradients are sums that cancel to near zero, so
     * another summation order (the fused kernels form the batch norm's sums
     * as they go) changes them relative to themselves, not to the step. */
    tu_check_close("all gradients", ga, dpt_net_grads(b), np, 1e-5);
    free(x), free(r), free(ya), free(ga);
done:
    dpt_net_free(a), dpt_net_free(b);
}

static void fusion(void)
{
    for (int k = DPT_CONV_ALGO_GEMM; k < DPT_CONV_ALGO_COUNT; k++)
        fusion_with(dpt_conv_algo_name(k));
}

/* ---- spec round trip ------------------------------------------------------ */

static void round_trip(void)
{
    const char *spec = "input in size=12x10x4\n"
                       "conv c1 filter=3 filters=8 padding=2 dilation=2x2 groups=4\n"
                       "leakyrelu a1 alpha=0.2\n"
                       "maxpool p1 size=3 stride=2 padding=1\n"
                       "conv c2 filter=1 filters=6 groups=2 bias=0\n"
                       "sigmoid a2\n"
                       "avgpool p2 size=2x3 stride=1x2 padding=1x0\n"
                       "tanh a3\n"
                       "dropout d1 p=0.25\n"
                       "maxpool p3 size=2\n"
                       "leakyrelu a4\n"
                       "dropout d2\n"
                       "globalavgpool g\n"
                       "fc f outputs=5\n";
    dpt_net *a = build(spec, 2);
    if (!a)
        return;
    const char *text = dpt_net_spec(a);
    printf("spec as the network writes it:\n%s", text);
    /* Defaults made explicit only where they differ: stride = size and
     * padding 0 are left out, dilation/groups 1 too. */
    CHECK(strstr(text, "groups=4") && strstr(text, "dilation=2"));
    CHECK(strstr(text, "size=2x3 stride=1x2 padding=1x0"));
    CHECK(strstr(text, "size=3 stride=2 padding=1"));
    CHECK(strstr(text, "alpha=0.200000003"));
    CHECK(strstr(text, "p=0.25"));
    /* A model file keeps them: saved and loaded, the same predictions to
     * the bit (dropout is the identity there). */
    char path[] = "/tmp/dpt_test_layers_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        close(fd);
        CHECK_MSG(dpt_net_save(a, path, NULL, 0) == DPT_OK, "%s", dpt_last_error());
        dpt_net *c = NULL;
        CHECK_MSG(dpt_net_load(path, 2, &c) == DPT_OK, "%s", dpt_last_error());
        if (c) {
            CHECK(strcmp(dpt_net_spec(c), text) == 0);
            float x[2 * 12 * 10 * 4], ya[10];
            dpt_rng rng;
            dpt_rng_seed(&rng, 19, 4);
            fill_normal(&rng, x, sizeof x / sizeof *x, 1.0f);
            const float *y = run(a, x, 2, DPT_MODE_PREDICT);
            if (y)
                memcpy(ya, y, sizeof ya);
            y = run(c, x, 2, DPT_MODE_PREDICT);
            CHECK_MSG(y && memcmp(ya, y, sizeof ya) == 0, "loaded model predicts otherwise");
            dpt_net_free(c);
        }
        unlink(path);
    }
    dpt_net *b = build(text, 2);
    if (b) {
        CHECK_MSG(strcmp(text, dpt_net_spec(b)) == 0, "spec does not round-trip:\n%s", dpt_net_spec(b));
        CHECK(dpt_net_n_learnables(a) == dpt_net_n_learnables(b));
        CHECK(dpt_net_n_params(a) == dpt_net_n_params(b));
        /* Same seed, same spec: the same learnables, to the bit. */
        CHECK(memcmp(dpt_net_params(a), dpt_net_params(b),
                     dpt_net_n_params(a) * sizeof(float)) == 0);
        dpt_net_free(b);
    }
    /* Shapes: [filters, channels/groups, k, k] as PyTorch. */
    long i = dpt_net_find_learnable(a, "c1/Weights");
    CHECK(i >= 0);
    if (i >= 0) {
        const dpt_param_info *w = dpt_net_learnable(a, (size_t)i);
        CHECK(w->ndim == 4 && w->shape[0] == 8 && w->shape[1] == 1 && w->shape[2] == 3 &&
              w->shape[3] == 3);
    }
    i = dpt_net_find_learnable(a, "c2/Weights");
    CHECK(i >= 0 && dpt_net_learnable(a, (size_t)i)->shape[1] == 4);
    CHECK(dpt_net_find_learnable(a, "c2/Bias") < 0);
    /* Output shapes: 12x10 -> c1 (dilated reach 5, padding 2) 12x10 ->
     * p1 6x5 -> p2 (2x3 every 1x2, padding 1x0) 7x2 -> p3 3x1 -> g 1x1. */
    int chw[3];
    static const struct {
        int layer, c, h, w;
    } want[] = {{1, 8, 12, 10}, {3, 8, 6, 5}, {4, 6, 6, 5}, {6, 6, 7, 2},
                {9, 6, 3, 1},   {12, 6, 1, 1}};
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        dpt_net_layer_shape(a, want[k].layer, chw);
        CHECK_MSG(chw[0] == want[k].c && chw[1] == want[k].h && chw[2] == want[k].w,
                  "layer %d (%s): %dx%dx%d, want %dx%dx%d", want[k].layer,
                  dpt_net_layer_name(a, want[k].layer), chw[0], chw[1], chw[2], want[k].c,
                  want[k].h, want[k].w);
    }
    CHECK(strcmp(dpt_net_layer_type(a, 12), "globalavgpool") == 0);
    dpt_net_free(a);
}

/* ---- dropout in a network ------------------------------------------------- */

static void dropout_net(void)
{
    const char *with = "input in size=5x6x3\n"
                       "conv c filter=3 filters=4 padding=1\n"
                       "dropout d p=0.5\n"
                       "fc f outputs=7\n";
    const char *without = "input in size=5x6x3\n"
                          "conv c filter=3 filters=4 padding=1\n"
                          "fc f outputs=7\n";
    const char *p0 = "input in size=5x6x3\n"
                     "conv c filter=3 filters=4 padding=1\n"
                     "dropout d p=0\n"
                     "fc f outputs=7\n";
    enum { N = 7, K = 7 };
    dpt_net *a = build(with, N), *b = build(without, N), *z = build(p0, N);
    if (!a || !b || !z)
        goto done;
    const size_t nx = (size_t)N * 5 * 6 * 3, ny = (size_t)N * K;
    float *x = malloc(nx * sizeof *x), *ya = malloc(ny * sizeof *ya), *yb = malloc(ny * sizeof *yb);
    dpt_rng rng;
    dpt_rng_seed(&rng, 19, 2);
    fill_normal(&rng, x, nx, 1.0f);
    /* Dropout has no learnables: the same seed gives the same weights. */
    CHECK(dpt_net_n_params(a) == dpt_net_n_params(b));
    CHECK(memcmp(dpt_net_params(a), dpt_net_params(b), dpt_net_n_params(a) * sizeof(float)) == 0);

    /* PREDICT: the identity, to the bit. */
    memcpy(ya, run(a, x, N, DPT_MODE_PREDICT), ny * sizeof *ya);
    memcpy(yb, run(b, x, N, DPT_MODE_PREDICT), ny * sizeof *yb);
    CHECK_MSG(memcmp(ya, yb, ny * sizeof *ya) == 0, "dropout changes a PREDICT forward");
    /* p = 0: the identity in TRAIN too. */
    memcpy(ya, run(z, x, N, DPT_MODE_TRAIN), ny * sizeof *ya);
    memcpy(yb, run(b, x, N, DPT_MODE_TRAIN), ny * sizeof *yb);
    CHECK_MSG(memcmp(ya, yb, ny * sizeof *ya) == 0, "dropout p=0 changes a TRAIN forward");

    /* TRAIN with p = 0.5 changes the output ... */
    dpt_net_set_iteration(a, 2, 5);
    memcpy(ya, run(a, x, N, DPT_MODE_TRAIN), ny * sizeof *ya);
    CHECK_MSG(memcmp(ya, yb, ny * sizeof *ya) != 0, "dropout p=0.5 left a TRAIN forward unchanged");
    /* ... reproducibly ... */
    const float *y2 = run(a, x, N, DPT_MODE_TRAIN);
    CHECK_MSG(y2 && memcmp(ya, y2, ny * sizeof *ya) == 0, "same iteration, different mask");
    /* ... with another mask on the next iteration ... */
    dpt_net_set_iteration(a, 2, 6);
    y2 = run(a, x, N, DPT_MODE_TRAIN);
    CHECK_MSG(y2 && memcmp(ya, y2, ny * sizeof *ya) != 0, "next iteration, same mask");
    /* ... and the same masks whatever the split among workers: slices of
     * 3, 1 and 3 observations at their global positions give the whole
     * minibatch's outputs, to the bit (no batch norm, so observations are
     * independent). A second replica stands in for another worker. */
    dpt_net *w2 = build(with, N);
    if (w2) {
        dpt_net_set_iteration(a, 2, 5);
        dpt_net_set_iteration(w2, 2, 5);
        const int first[3] = {0, 3, 4}, count[3] = {3, 1, 3};
        for (int k = 0; k < 3; k++) {
            dpt_net *w = k == 1 ? w2 : a;
            dpt_net_set_obs_offset(w, first[k]);
            const float *ys = run(w, x + (size_t)first[k] * 5 * 6 * 3, count[k], DPT_MODE_TRAIN);
            CHECK_MSG(ys && memcmp(ys, ya + (size_t)first[k] * K, (size_t)count[k] * K *
                                   sizeof *ys) == 0,
                      "slice at %d of %d: mask differs from the whole minibatch's", first[k],
                      count[k]);
        }
        /* The same observations at another position get other masks. */
        dpt_net_set_obs_offset(a, 1);
        const float *ys = run(a, x, 3, DPT_MODE_TRAIN);
        CHECK_MSG(ys && memcmp(ys, ya, 3 * K * sizeof *ys) != 0, "mask ignores the position");
        dpt_net_free(w2);
    }

    /* Backward after a TRAIN forward uses that forward's mask even when the
     * counters moved in between (fc weights' gradient from the dropped
     * activations: recomputed here with the counters put back). */
    dpt_net_set_obs_offset(a, 0);
    dpt_net_set_iteration(a, 3, 1);
    run(a, x, N, DPT_MODE_TRAIN);
    float *dy = dpt_net_output_grad(a);
    fill_normal(&rng, dy, ny, 1.0f);
    float *dy_copy = malloc(ny * sizeof *dy_copy);
    memcpy(dy_copy, dy, ny * sizeof *dy);
    dpt_net_set_iteration(a, 3, 2);
    CHECK(dpt_net_backward(a, dy, 0) == DPT_OK);
    const size_t np = dpt_net_n_params(a);
    float *g1 = malloc(np * sizeof *g1);
    memcpy(g1, dpt_net_grads(a), np * sizeof *g1);
    dpt_net_set_iteration(a, 3, 1);
    run(a, x, N, DPT_MODE_TRAIN);
    memcpy(dy, dy_copy, ny * sizeof *dy);
    CHECK(dpt_net_backward(a, dy, 0) == DPT_OK);
    CHECK_MSG(memcmp(g1, dpt_net_grads(a), np * sizeof *g1) == 0,
              "backward depends on the counters set after its forward");
    free(g1), free(dy_copy);
    free(x), free(ya), free(yb);
done:
    dpt_net_free(a), dpt_net_free(b), dpt_net_free(z);
}

/* ---- N workers = 1 worker, with dropout ------------------------------------ */

enum { PM = 10, PK = 3, PPIX = 3 * 8 * 8, PSTEPS = 3 };

static const char par_spec[] = "input in size=8x8x3\n"
                               "conv c1 filter=3 filters=4 padding=1 groups=1\n"
                               "batchnorm b1\n"
                               "leakyrelu a1 alpha=0.1\n"
                               "maxpool p1 size=2\n"
                               "dropout d1 p=0.3\n"
                               "conv c2 filter=3 filters=4 padding=2 dilation=2 groups=2\n"
                               "tanh t1\n"
                               "avgpool p2 size=3 stride=1 padding=1\n"
                               "globalavgpool g\n"
                               "dropout d2 p=0.5\n"
                               "fc f outputs=classes\n"
                               "softmax sm\n";

static float PX[PM * PPIX], PT[PM * PK];

typedef struct par_job {
    const char *spec;
    double loss;
    float *params, *grads; /* worker 0's, after the last step */
    size_t np;
    uint64_t hash[8];
} par_job;

static dpt_status par_worker(dpt_comm *comm, void *arg)
{
    par_job *j = arg;
    int rank = dpt_comm_rank(comm), n = dpt_comm_size(comm), share[8], first = 0;
    dpt_batch_shares(PM, n, share);
    for (int r = 0; r < rank; r++)
        first += share[r];
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = dpt_net_from_spec(j->spec, "par", PK, PM, 5, &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.05f, 0.9f, 0.0f, &opt);
    if (s == DPT_OK)
        dpt_net_set_sync_bn(net, comm);
    for (int step = 0; s == DPT_OK && step < PSTEPS; step++) {
        /* New masks every iteration, as dpt_train_fit sets them. */
        dpt_net_set_iteration(net, 1, step);
        double loss;
        s = dpt_train_step(net, opt, comm, PX + (size_t)first * PPIX, PT + (size_t)first * PK,
                           share[rank], &loss, NULL);
        if (rank == 0)
            j->loss = loss;
    }
    if (s == DPT_OK) {
        j->hash[rank] = dpt_net_hash(net);
        if (rank == 0) {
            j->np = dpt_net_n_params(net);
            j->params = malloc(j->np * sizeof(float));
            j->grads = malloc(j->np * sizeof(float));
            memcpy(j->params, dpt_net_params(net), j->np * sizeof(float));
            memcpy(j->grads, dpt_net_grads(net), j->np * sizeof(float));
        }
    }
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static int par_run(const char *spec, int n_workers, par_job *j)
{
    memset(j, 0, sizeof *j);
    j->spec = spec;
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = n_workers;
    dpt_status s = dpt_spmd_run(&cfg, par_worker, j);
    CHECK_MSG(s == DPT_OK, "N=%d: %s", n_workers, dpt_last_error());
    return s == DPT_OK && j->params ? 0 : -1;
}

static void parallel(void)
{
    dpt_rng r;
    dpt_rng_seed(&r, 19, 5);
    for (int i = 0; i < PM * PPIX; i++)
        PX[i] = dpt_rng_normal(&r);
    for (int i = 0; i < PM; i++)
        PT[i * PK + (int)dpt_rng_below(&r, PK)] = 1.0f;
    par_job one, many;
    if (par_run(par_spec, 1, &one))
        return;
    for (int n = 2; n <= 4; n++) {
        if (par_run(par_spec, n, &many))
            continue;
        printf("dropout, pooling, sync batch norm: N=%d vs 1 (%d steps)\n", n, PSTEPS);
        float l1 = (float)one.loss, ln = (float)many.loss;
        tu_check_close("loss", &ln, &l1, 1, 1e-5);
        tu_check_close("gradients", many.grads, one.grads, one.np, 1e-5);
        tu_check_close("updated learnables", many.params, one.params, one.np, 1e-5);
        for (int k = 1; k < n; k++)
            CHECK_MSG(many.hash[k] == many.hash[0], "N=%d: worker %d differs from worker 0", n, k);
        free(many.params), free(many.grads);
    }
    /* The masks matter: without dropout the same steps end elsewhere. */
    char nodrop[sizeof par_spec];
    memcpy(nodrop, par_spec, sizeof par_spec);
    char *p = strstr(nodrop, "p=0.3");
    memcpy(p, "p=0.0", 5);
    p = strstr(nodrop, "p=0.5");
    memcpy(p, "p=0.0", 5);
    par_job none;
    if (par_run(nodrop, 1, &none) == 0) {
        CHECK_MSG(fabs(none.loss - one.loss) > 1e-4 * fabs(one.loss),
                  "dropout p>0 gave the loss of p=0: %g", one.loss);
        free(none.params), free(none.grads);
    }
    free(one.params), free(one.grads);
}

/* ---- bad specs -------------------------------------------------------------- */

static void bad_spec(const char *spec, const char *want)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, "bad.txt", 0, 2, 1, &net);
    const char *msg = dpt_last_error();
    int ok = s != DPT_OK && !net && msg && strstr(msg, want);
    printf("  %-64.64s -> %s\n", msg ? msg : "(no message)", ok ? "ok" : "FAIL");
    CHECK_MSG(ok, "spec should fail with '%s', got status %d: %s", want, s, msg ? msg : "");
    dpt_net_free(net);
}

static void bad_specs(void)
{
    printf("bad specs\n");
    /* Pooling that does not fit, with the spec line. */
    bad_spec("input i size=4x4x1\nmaxpool p size=5\n", "bad.txt:2: maxpool 'p': window 5x5 does "
             "not fit the input 4x4");
    bad_spec("input i size=4x4x1\navgpool p size=2 padding=2\n",
             "bad.txt:2: avgpool 'p': padding 2x2 must be smaller than the window 2x2");
    bad_spec("input i size=8x8x1\nmaxpool p size=3x2 padding=1x2\n",
             "bad.txt:2: maxpool 'p': padding 1x2 must be smaller");
    bad_spec("input i size=4x4x1\nmaxpool p\n", "bad.txt:2: maxpool 'p' needs size=K");
    bad_spec("input i size=4x4x1\nmaxpool p size=0\n", "bad.txt:2: maxpool 'p': bad value '0' for size");
    bad_spec("input i size=4x4x1\nmaxpool p size=2x\n", "bad.txt:2: maxpool 'p': bad value '2x'");
    bad_spec("input i size=4x4x1\nmaxpool p size=2 stride=0\n", "bad value '0' for stride");
    bad_spec("input i size=4x4x1\navgpool p size=2 padding=-1\n", "bad value '-1' for padding");
    bad_spec("input i size=4x4x1\navgpool p size=5000\n", "bad value '5000' for size");
    bad_spec("input i size=4x4x1\navgpool p size=2 pad=1\n", "unknown key 'pad' (avgpool takes");
    bad_spec("input i size=4x4x1\nglobalavgpool g size=2\n",
             "bad.txt:2: globalavgpool 'g': unknown key 'size'");
    /* Dropout and activations: values out of range. */
    bad_spec("input i size=4x4x1\ndropout d p=1\n", "bad.txt:2: dropout 'd': bad value '1' for p");
    bad_spec("input i size=4x4x1\ndropout d p=-0.1\n", "bad value '-0.1' for p");
    bad_spec("input i size=4x4x1\ndropout d p=nan\n", "bad value 'nan' for p");
    bad_spec("input i size=4x4x1\ndropout d rate=0.5\n", "unknown key 'rate' (dropout takes p)");
    bad_spec("input i size=4x4x1\nleakyrelu a alpha=2\n", "bad.txt:2: leakyrelu 'a': bad value '2' for alpha");
    bad_spec("input i size=4x4x1\nleakyrelu a alpha=x\n", "bad value 'x' for alpha");
    bad_spec("input i size=4x4x1\nsigmoid s alpha=1\n", "unknown key 'alpha' (sigmoid takes no keys)");
    bad_spec("input i size=4x4x1\ntanh t k=1\n", "unknown key 'k' (tanh takes no keys)");
    /* Conv: groups that do not divide, a dilated filter that does not fit. */
    bad_spec("input i size=8x8x3\nconv c filter=3 filters=4 groups=2\n",
             "bad.txt:2: conv 'c': groups=2 must divide both the input channels (3) and filters (4)");
    bad_spec("input i size=8x8x4\nconv c filter=3 filters=3 groups=2\n", "must divide both");
    bad_spec("input i size=8x8x1\nconv c filter=3 filters=2 dilation=4\n",
             "bad.txt:2: conv 'c': filter 3x3 with dilation 4 (reach 9x9) does not fit the input 8x8");
    bad_spec("input i size=8x8x1\nconv c filter=3 filters=2 dilation=0\n", "bad value '0' for dilation");
    bad_spec("input i size=8x8x1\nconv c filter=3 filters=2 dilation=2x1\n",
             "bad.txt:2: conv 'c': dilation '2x1': different dilations per direction are not "
             "supported");
    bad_spec("input i size=8x8x1\nconv c filter=3 filters=2 groups=0\n", "bad value '0' for groups");
    /* An unknown type lists the known ones, the new ones among them. */
    bad_spec("input i size=8x8x1\nmaxpooling m size=2\n", "maxpool, avgpool, globalavgpool");
}

/* ---- builder ------------------------------------------------------------------ */

static void builder(void)
{
    dpt_net_builder *b = NULL;
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    CHECK(dpt_net_builder_add_input(b, "in", 9, 9, 4) == DPT_OK);
    CHECK(dpt_net_builder_add_conv_ex(b, "dw", 3, 8, 1, 2, 2, 4) == DPT_OK);
    CHECK(dpt_net_builder_add_leakyrelu(b, "a1", 0.1f) == DPT_OK);
    CHECK(dpt_net_builder_add_maxpool(b, "p1", 3, 2, 1) == DPT_OK);
    CHECK(dpt_net_builder_add_sigmoid(b, "a2") == DPT_OK);
    CHECK(dpt_net_builder_add_avgpool(b, "p2", 2, 1, 0) == DPT_OK);
    CHECK(dpt_net_builder_add_tanh(b, "a3") == DPT_OK);
    CHECK(dpt_net_builder_add_dropout(b, "d", 0.2f) == DPT_OK);
    CHECK(dpt_net_builder_add_globalavgpool(b, "g") == DPT_OK);
    CHECK(dpt_net_builder_add_fc(b, "fc", DPT_NET_OUTPUTS_CLASSES) == DPT_OK);
    CHECK(dpt_net_builder_add_softmax(b, "sm") == DPT_OK);
    const char *want = "input in size=9x9x4\n"
                       "conv dw filter=3 filters=8 stride=1 padding=2 dilation=2 groups=4\n"
                       "leakyrelu a1 alpha=0.100000001\n"
                       "maxpool p1 size=3 stride=2 padding=1\n"
                       "sigmoid a2\n"
                       "avgpool p2 size=2 stride=1 padding=0\n"
                       "tanh a3\n"
                       "dropout d p=0.200000003\n"
                       "globalavgpool g\n"
                       "fc fc outputs=classes\n"
                       "softmax sm\n";
    const char *got = dpt_net_builder_spec(b);
    CHECK_MSG(got && strcmp(got, want) == 0, "builder wrote:\n%s", got ? got : "(null)");
    dpt_net *net = NULL;
    CHECK_MSG(dpt_net_build(b, 10, 4, 3, &net) == DPT_OK, "%s", dpt_last_error());
    if (net) {
        int chw[3];
        dpt_net_layer_shape(net, 3, chw); /* 9x9 -> maxpool 3/2/1 -> 5x5 */
        CHECK(chw[0] == 8 && chw[1] == 5 && chw[2] == 5);
        dpt_net_layer_shape(net, 5, chw); /* avgpool 2/1 -> 4x4 */
        CHECK(chw[0] == 8 && chw[1] == 4 && chw[2] == 4);
        CHECK(dpt_net_n_outputs(net) == 10);
        dpt_net_free(net);
    }
    dpt_net_builder_free(b);

    /* The new calls take a pending from= like every add. */
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_input(b, "in", 8, 8, 2);
    dpt_net_builder_add_conv(b, "c", 3, 2, 1, 1);
    CHECK(dpt_net_builder_set_from(b, "in") == DPT_OK);
    CHECK(dpt_net_builder_add_avgpool(b, "ap", 2, 2, 0) == DPT_OK);
    CHECK(dpt_net_builder_set_from(b, "c") == DPT_OK);
    CHECK(dpt_net_builder_add_maxpool(b, "mp", 2, 2, 0) == DPT_OK);
    CHECK(dpt_net_builder_add_add(b, "sum", "ap,mp") == DPT_OK);
    got = dpt_net_builder_spec(b);
    CHECK_MSG(got && strstr(got, "avgpool ap size=2 stride=2 padding=0 from=in\n") &&
                  strstr(got, "maxpool mp size=2 stride=2 padding=0 from=c\n"),
              "builder wrote:\n%s", got ? got : "(null)");
    CHECK_MSG(dpt_net_build(b, 0, 2, 3, &net) == DPT_OK, "%s", dpt_last_error());
    dpt_net_free(net);
    dpt_net_builder_free(b);

    /* Arguments out of range fail at the call, naming it. */
    static const struct {
        int which;
        const char *want;
    } bad[] = {{0, "dpt_net_builder_add_dropout: layer 'd': p must be in [0, 1), not 1"},
               {1, "dpt_net_builder_add_leakyrelu: layer 'a': alpha must be in [0, 1], not -1"},
               {2, "dpt_net_builder_add_maxpool: layer 'p': size must be 1 to 1000000, not 0"},
               {3, "dpt_net_builder_add_avgpool: layer 'p': stride must be 1 to 1000000, not 0"},
               {4, "dpt_net_builder_add_conv_ex: layer 'c': groups must be 1 to 1000000, not 0"},
               {5, "dpt_net_builder_add_conv_ex: layer 'c': dilation must be 1 to 1000000, not 0"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dpt_net_builder *c = NULL;
        CHECK(dpt_net_builder_new(&c) == DPT_OK);
        dpt_net_builder_add_input(c, "in", 9, 9, 4);
        dpt_status s = DPT_OK;
        switch (bad[i].which) {
        case 0: s = dpt_net_builder_add_dropout(c, "d", 1.0f); break;
        case 1: s = dpt_net_builder_add_leakyrelu(c, "a", -1.0f); break;
        case 2: s = dpt_net_builder_add_maxpool(c, "p", 0, 1, 0); break;
        case 3: s = dpt_net_builder_add_avgpool(c, "p", 2, 0, 0); break;
        case 4: s = dpt_net_builder_add_conv_ex(c, "c", 3, 4, 1, 0, 1, 0); break;
        default: s = dpt_net_builder_add_conv_ex(c, "c", 3, 4, 1, 0, 0, 1); break;
        }
        const char *msg = dpt_last_error();
        CHECK_MSG(s == DPT_ERR_ARG && msg && strstr(msg, bad[i].want), "want '%s', got '%s'",
                  bad[i].want, msg ? msg : "");
        dpt_net_builder_free(c);
    }
}

int main(void)
{
    chain_vs_torch();
    gradients();
    round_trip();
    dropout_net();
    fusion();
    parallel();
    bad_specs();
    builder();
    printf("worst finite-difference err %.3e\n", worst_fd);
    printf("%s\n", tu_exit() ? "FAILED" : "passed");
    return tu_exit();
}
