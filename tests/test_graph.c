/* Layer graphs: from=, add, concat and fan-out against PyTorch
 * (tests/fixtures/make_graph_fixtures.py) with fusion on and off, finite
 * differences on a residual graph, bad specs with their line numbers, the
 * gradient-buffer plan, tables past the old cap of 256 tensors, the spec
 * round trip through model files, and the kinds of state. */
#include "core/safetensors.h"
#include "dptrain/comm.h"
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "net/net_impl.h"
#include "ops/ops.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- against PyTorch ------------------------------------------------------------- */

static dpt_net *build_case(const dpt_st *st, const char *c, int *n, int *classes)
{
    char key[128];
    snprintf(key, sizeof key, "%s/spec", c);
    const char *spec = dpt_st_meta(st, key);
    snprintf(key, sizeof key, "%s/n", c);
    *n = atoi(dpt_st_meta(st, key));
    snprintf(key, sizeof key, "%s/classes", c);
    *classes = atoi(dpt_st_meta(st, key));
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, c, *classes, *n, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s: %s", c, dpt_last_error());
    if (s != DPT_OK)
        return NULL;
    for (size_t i = 0; i < dpt_net_n_learnables(net); i++) {
        const dpt_param_info *e = dpt_net_learnable(net, i);
        snprintf(key, sizeof key, "%s/param/%s", c, e->name);
        CHECK_MSG(dpt_st_read_f32(st, key, dpt_net_params(net) + e->offset, e->n) == DPT_OK,
                  "%s", dpt_last_error());
    }
    return net;
}

/* As tu_check_close, with the error relative to max(max |ref|, 1e-2): a
 * conv bias before a batch norm has a gradient of exactly zero, which
 * float32 meets only to rounding. */
static void check_floor(const char *name, const float *got, const float *ref, size_t n, double tol)
{
    double d = 0, m = 1e-2;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        d = e > d || e != e ? e : d;
        m = fabs(ref[i]) > m ? fabs(ref[i]) : m;
    }
    int ok = d / m <= tol;
    printf("  %-40s rel err %.3e (tol %.0e) %s\n", name, d / m, tol, ok ? "ok" : "FAIL");
    CHECK_MSG(ok, "%s", name);
}

static void check_grads(const dpt_st *st, dpt_net *net, const char *c, const char *kind,
                        double tol)
{
    char key[160];
    for (size_t i = 0; i < dpt_net_n_learnables(net); i++) {
        const dpt_param_info *e = dpt_net_learnable(net, i);
        float *ref = malloc(e->n * sizeof *ref);
        snprintf(key, sizeof key, "%s/%s/%s", c, kind, e->name);
        CHECK_MSG(dpt_st_read_f32(st, key, ref, e->n) == DPT_OK, "%s", dpt_last_error());
        check_floor(key, dpt_net_grads(net) + e->offset, ref, e->n, tol);
        free(ref);
    }
}

static void run_case(const dpt_st *st, const char *c)
{
    int n, k;
    dpt_net *net = build_case(st, c, &n, &k);
    if (!net)
        return;
    int chw[3];
    dpt_net_input_shape(net, chw);
    size_t nx = (size_t)n * chw[0] * chw[1] * chw[2], ny = (size_t)n * k;
    float *x = malloc(nx * sizeof *x), *ref = malloc(ny * sizeof *ref);
    float *dy = malloc(ny * sizeof *dy), *t = malloc(ny * sizeof *t);
    char key[128];
    snprintf(key, sizeof key, "%s/x", c);
    CHECK(dpt_st_read_f32(st, key, x, nx) == DPT_OK);
    const float *y;
    dpt_status s = dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &y);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    snprintf(key, sizeof key, "%s/y", c);
    CHECK(dpt_st_read_f32(st, key, ref, ny) == DPT_OK);
    snprintf(key, sizeof key, "%s/forward", c);
    tu_check_close(key, y, ref, ny, 1e-5);
    snprintf(key, sizeof key, "%s/dy", c);
    CHECK(dpt_st_read_f32(st, key, dy, ny) == DPT_OK);
    s = dpt_net_backward(net, dy, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    check_grads(st, net, c, "grad", 1e-4);
    /* The fused softmax-cross-entropy gradient at the logits. */
    snprintf(key, sizeof key, "%s/t", c);
    if (dpt_st_get(st, key)) {
        CHECK(dpt_st_read_f32(st, key, t, ny) == DPT_OK);
        CHECK(dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &y) == DPT_OK);
        float *dl = dpt_net_output_grad(net);
        double loss = dpt_softmax_xent(y, t, n, k, 1.0f, dl), loss_ref;
        float lr;
        snprintf(key, sizeof key, "%s/loss", c);
        CHECK(dpt_st_read_f32(st, key, &lr, 1) == DPT_OK);
        loss_ref = lr;
        CHECK_MSG(fabs(loss - loss_ref) <= 1e-5 * fabs(loss_ref), "%s: loss %.9g, torch %.9g", c,
                  loss, loss_ref);
        CHECK(dpt_net_backward(net, dl, 1) == DPT_OK);
        check_grads(st, net, c, "lgrad", 1e-4);
    }
    free(x), free(ref), free(dy), free(t);
    dpt_net_free(net);
}

static void test_against_pytorch(void)
{
    char path[1024];
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(tu_fixture("graph_nets.safetensors", path, sizeof path), &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    static const char *const cases[] = {"res", "branch", "skip"};
    /* Fused (the default kernels) and plain: the same numbers. */
    for (int fusion = 1; fusion >= 0; fusion--) {
        setenv("DPT_FUSION", fusion ? "1" : "0", 1);
        printf("graphs against PyTorch, fusion %s:\n", fusion ? "on" : "off");
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            run_case(st, cases[i]);
    }
    unsetenv("DPT_FUSION");
    dpt_st_close(st);
}

/* The "skip" case fuses conv -> batchnorm -> relu -> conv on a relu that
 * also feeds an add, and "res" a batchnorm -> relu whose relu has four
 * consumers: fusion must stop at those edges. */
static void test_fusion_edges(void)
{
    if (strcmp(dpt_ops_kernels(), "generic") == 0)
        return;
    char path[1024];
    dpt_st *st = NULL;
    if (dpt_st_open(tu_fixture("graph_nets.safetensors", path, sizeof path), &st) != DPT_OK)
        return;
    int n, k;
    dpt_net *net = build_case(st, "skip", &n, &k);
    if (net) {
        /* c1 b1 r1 c2 b2 r2 c3: b1 takes c1's sums, r1 fused into b1, but r1 is read
         * by c2 and the add, so c2 does not normalise on the fly. b2 -> r2 -> c3
         * has single consumers all the way: fused fully. */
        CHECK(net->layers[2].sums_in && net->layers[3].fused);
        CHECK(net->layers[2].bnf && !net->layers[2].bnf->out_virtual);
        CHECK(net->layers[4].in_bnf == NULL && net->acts[3] != NULL);
        CHECK(net->layers[5].bnf && net->layers[5].bnf->out_virtual);
        CHECK(net->layers[7].in_bnf == net->layers[5].bnf);
        dpt_net_free(net);
    }
    /* Planned again without fusion (what a device without the fused
     * kernels does): no fusion left, and the same outputs. */
    net = build_case(st, "skip", &n, &k);
    if (net) {
        float x[4 * 36], ref[4 * 3];
        CHECK(dpt_st_read_f32(st, "skip/x", x, 4 * 36) == DPT_OK);
        CHECK(dpt_st_read_f32(st, "skip/y", ref, 4 * 3) == DPT_OK);
        dpt_status s = net_replan(net, 0);
        if (s == DPT_OK)
            s = net_alloc_buffers(net);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        for (int i = 0; i < net->n_layers; i++)
            CHECK(!net->layers[i].fused && !net->layers[i].bnf && !net->layers[i].in_bnf &&
                  !net->layers[i].sums_out && net->acts[i]);
        const float *y;
        CHECK(dpt_net_forward(net, x, 4, DPT_MODE_TRAIN, &y) == DPT_OK);
        tu_check_close("skip, planned again without fusion", y, ref, 12, 1e-5);
        dpt_net_free(net);
    }
    net = build_case(st, "res", &n, &k);
    if (net) {
        CHECK(net->layers[3].fused);   /* r1 into b1 */
        CHECK(net->acts[3] != NULL);   /* but written: four layers read it */
        CHECK(!net->layers[6].fused);  /* b2 feeds an add: no relu there */
        dpt_net_free(net);
    }
    dpt_st_close(st);
}

/* ---- finite differences ------------------------------------------------------------ */

/* A residual graph, smooth (no ReLU kinks for the differences to straddle):
 * b1 is read by three layers, the add and concat merge branches. */
static const char fd_spec[] =
    "input in size=5x5x2\n"
    "conv c1 filter=3 filters=3 padding=1\n"
    "batchnorm b1\n"
    "conv c2 filter=3 filters=3 padding=1\n"
    "batchnorm b2\n"
    "add a from=b2,b1\n"
    "conv p filter=1 filters=2 from=b1\n"
    "concat j from=a,p,b1\n"
    "fc f outputs=3\n";

/* The same with ReLUs, for the spec tests. */
static const char residual_spec[] =
    "input in size=5x5x2\n"
    "conv c1 filter=3 filters=3 padding=1\n"
    "batchnorm b1\n"
    "relu r1\n"
    "conv c2 filter=3 filters=3 padding=1\n"
    "batchnorm b2\n"
    "add a from=b2,r1\n"
    "relu r2\n"
    "conv p filter=1 filters=2 from=r1\n"
    "concat j from=r2,p,r1\n"
    "fc f outputs=3\n";

/* sum(w * y) in double: a loss whose gradient at the output is w. */
static double weighted_out(dpt_net *net, const float *x, int n, const float *w)
{
    const float *y;
    if (dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &y) != DPT_OK)
        return NAN;
    double l = 0;
    for (int i = 0; i < n * dpt_net_n_outputs(net); i++)
        l += (double)w[i] * y[i];
    return l;
}

static void test_finite_differences(void)
{
    enum { N = 3 };
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(fd_spec, "residual", 0, N, 7, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    size_t nx = (size_t)N * 5 * 5 * 2, ny = (size_t)N * 3;
    float *x = malloc(nx * sizeof *x), w[N * 3];
    dpt_rng rng;
    dpt_rng_seed(&rng, 5, 0);
    for (size_t i = 0; i < nx; i++)
        x[i] = 2 * dpt_rng_uniform(&rng) - 1;
    for (size_t i = 0; i < ny; i++)
        w[i] = 2 * dpt_rng_uniform(&rng) - 1;
    weighted_out(net, x, N, w);
    CHECK(dpt_net_backward(net, w, 0) == DPT_OK);
    size_t np = dpt_net_n_params(net);
    float *g = malloc(np * sizeof *g), *p = dpt_net_params(net);
    memcpy(g, dpt_net_grads(net), np * sizeof *g);
    /* A few entries of every table, central differences in float32. */
    int bad = 0, tried = 0;
    for (size_t e = 0; e < dpt_net_n_learnables(net); e++) {
        const dpt_param_info *info = dpt_net_learnable(net, e);
        for (size_t j = 0; j < info->n; j += 1 + info->n / 4) {
            size_t i = info->offset + j;
            float keep = p[i], h = 3e-3f;
            p[i] = keep + h;
            double lp = weighted_out(net, x, N, w);
            p[i] = keep - h;
            double lm = weighted_out(net, x, N, w);
            p[i] = keep;
            double fd = (lp - lm) / (2.0 * h);
            tried++;
            if (fabs(fd - g[i]) > 1e-2 * (fabs(fd) + 0.1)) {
                bad++;
                fprintf(stderr, "  %s[%zu]: backward %.6g, finite differences %.6g\n", info->name,
                        j, g[i], fd);
            }
        }
    }
    printf("residual graph: %d gradients against finite differences, %d off\n", tried, bad);
    CHECK(bad == 0);
    free(x), free(g);
    dpt_net_free(net);
}

/* ---- bad specs ------------------------------------------------------------------------ */

static void expect_error(const char *spec, const char *needle)
{
    dpt_net *net = (dpt_net *)1;
    dpt_status s = dpt_net_from_spec(spec, "g.spec", 4, 2, 0, &net);
    CHECK_MSG(s != DPT_OK, "spec for '%s' built", needle);
    CHECK(net == NULL);
    CHECK_MSG(strstr(dpt_last_error(), needle) != NULL, "message '%s' lacks '%s'", dpt_last_error(),
              needle);
}

static void test_bad_specs(void)
{
    const char *head = "input in size=4x4x2\nconv c1 filter=3 filters=2 padding=1\n";
    char spec[8192];
    snprintf(spec, sizeof spec, "%sconv c2 filter=1 filters=2 from=nope\nfc f outputs=2\n", head);
    expect_error(spec, "g.spec:3: conv 'c2': from= names 'nope', which is no layer");
    snprintf(spec, sizeof spec, "%sconv c2 filter=1 filters=2 from=f\nfc f outputs=2\n", head);
    expect_error(spec, "g.spec:3: conv 'c2': from= names 'f', a later layer (line 4)");
    snprintf(spec, sizeof spec, "%sconv c2 filter=1 filters=2 from=c2\nfc f outputs=2\n", head);
    expect_error(spec, "g.spec:3: conv 'c2': from= names the layer itself");
    snprintf(spec, sizeof spec, "%sconv c2 filter=3 filters=2 stride=2\nadd a from=c1,c2\n"
             "fc f outputs=2\n", head);
    expect_error(spec, "g.spec:4: add 'a': its inputs must have one shape, and they are 'c1' "
                 "4x4x2, 'c2' 1x1x2");
    snprintf(spec, sizeof spec, "%sconv c2 filter=3 filters=5 stride=2\nconcat j from=c1,c2\n"
             "fc f outputs=2\n", head);
    expect_error(spec, "g.spec:4: concat 'j': its inputs must have one height and width");
    snprintf(spec, sizeof spec, "%sconv c2 filter=1 filters=2\nconv c3 filter=1 filters=2 "
             "from=c1\nfc f outputs=2\n", head);
    expect_error(spec, "g.spec:3: the output of conv 'c2' goes to no layer");
    snprintf(spec, sizeof spec, "%sfc f outputs=2 from=in,c1\n", head);
    expect_error(spec, "g.spec:3: fc 'f' takes 1 input, from= names 2");
    snprintf(spec, sizeof spec, "%sadd a\nfc f outputs=2\n", head);
    expect_error(spec, "g.spec:3: add 'a' takes 2 to 32 inputs");
    int k = snprintf(spec, sizeof spec, "%sadd a from=c1", head);
    for (int i = 0; i < DPT_MAX_INPUTS; i++)
        k += snprintf(spec + k, sizeof spec - (size_t)k, ",c1");
    snprintf(spec + k, sizeof spec - (size_t)k, "\nfc f outputs=2\n");
    expect_error(spec, "g.spec:3: add 'a': from= names more than 32 layers");
    expect_error("input in size=4x4x2 from=in\nfc f outputs=2\n",
                 "g.spec:1: input 'in' takes no from=");
    expect_error("input in size=4x4x2\nrelu r from=in from=in\nfc f outputs=2\n",
                 "g.spec:2: relu 'r': from= given twice");
    /* The unknown-type message lists the table, new types included. */
    expect_error("input in size=4x4x2\nresidual r\n", "known: input, conv, batchnorm, relu, fc, "
                 "softmax, add, concat");
}

/* ---- the gradient-buffer plan ------------------------------------------------------------ */

static void test_buffer_reuse(void)
{
    /* A deep chain: two gradient buffers (the old ping-pong), however deep. */
    char spec[16384];
    int k = snprintf(spec, sizeof spec, "input in size=6x6x2\n");
    for (int i = 0; i < 40; i++)
        k += snprintf(spec + k, sizeof spec - (size_t)k,
                      "conv c%d filter=3 filters=2 padding=1\nrelu r%d\n", i, i);
    snprintf(spec + k, sizeof spec - (size_t)k, "fc f outputs=3\n");
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(spec, "chain", 0, 2, 0, &net) == DPT_OK);
    if (net) {
        CHECK_MSG(net_n_grad_buffers(net) == 2, "%d gradient buffers for an 81-layer chain",
                  net_n_grad_buffers(net));
        dpt_net_free(net);
    }
    /* A chain of residual blocks: a constant number too. */
    k = snprintf(spec, sizeof spec, "input in size=6x6x2\nconv c filter=3 filters=2 padding=1\n"
                 "relu r\n");
    char prev[16] = "r";
    for (int i = 0; i < 20; i++) {
        k += snprintf(spec + k, sizeof spec - (size_t)k,
                      "conv a%d filter=3 filters=2 padding=1\nrelu b%d\n"
                      "conv d%d filter=3 filters=2 padding=1\nadd s%d from=d%d,%s\n", i, i, i, i,
                      i, prev);
        snprintf(prev, sizeof prev, "s%d", i);
    }
    snprintf(spec + k, sizeof spec - (size_t)k, "fc f outputs=3\n");
    CHECK_MSG(dpt_net_from_spec(spec, "resnet", 0, 2, 0, &net) == DPT_OK, "%s", dpt_last_error());
    if (net) {
        CHECK_MSG(net_n_grad_buffers(net) <= 4, "%d gradient buffers for 20 residual blocks",
                  net_n_grad_buffers(net));
        dpt_net_free(net);
    }
}

/* ---- past the old cap of 256 parameter tensors -------------------------------------------- */

static void test_many_tensors(void)
{
    enum { CONVS = 150 }; /* 300 tensors */
    size_t cap = 64 * CONVS + 100;
    char *spec = malloc(cap);
    int k = snprintf(spec, cap, "input in size=3x3x1\n");
    for (int i = 0; i < CONVS; i++)
        k += snprintf(spec + k, cap - (size_t)k, "conv c%d filter=1 filters=1\n", i);
    snprintf(spec + k, cap - (size_t)k, "fc f outputs=2\n");
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, "many", 0, 2, 3, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (net) {
        CHECK(dpt_net_n_learnables(net) == 2 * CONVS + 2);
        CHECK(dpt_net_find_learnable(net, "c149/Bias") == 2 * 149 + 1);
        float x[18] = {0.5f, -1, 2};
        const float *y;
        CHECK(dpt_net_forward(net, x, 2, DPT_MODE_TRAIN, &y) == DPT_OK);
        float dy[4] = {1, 0, 0, 1};
        CHECK(dpt_net_backward(net, dy, 0) == DPT_OK);
        dpt_net_free(net);
    }
    free(spec);
}

/* A layer straight after the input gets no input gradient (NULL): softmax
 * there (its general backward) must cope. */
static void test_after_input(void)
{
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec("input in size=1x1x4\nsoftmax s\n", "t", 0, 2, 0, &net) == DPT_OK);
    if (!net)
        return;
    float x[8] = {1, 2, 3, 4, 0, 0, 1, 0}, dy[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    const float *y;
    CHECK(dpt_net_forward(net, x, 2, DPT_MODE_TRAIN, &y) == DPT_OK);
    CHECK(dpt_net_backward(net, dy, 0) == DPT_OK);
    CHECK(dpt_net_backward(net, dy, 1) == DPT_OK);
    dpt_net_free(net);
}

/* ---- spec round trip ----------------------------------------------------------------------- */

static void test_spec_round_trip(void)
{
    dpt_net *net = NULL, *again = NULL;
    CHECK(dpt_net_from_spec(residual_spec, "residual", 0, 2, 7, &net) == DPT_OK);
    if (!net)
        return;
    const char *spec = dpt_net_spec(net);
    /* from= where it is not the line above, and only there. */
    CHECK_MSG(strstr(spec, "add        a from=b2,r1\n") != NULL, "%s", spec);
    CHECK_MSG(strstr(spec, "conv       p from=r1 filter=1 filters=2\n") != NULL, "%s", spec);
    CHECK_MSG(strstr(spec, "conv       c2 filter=3") != NULL, "%s", spec);
    CHECK(dpt_net_from_spec(spec, "again", 0, 2, 7, &again) == DPT_OK);
    if (again) {
        CHECK(strcmp(dpt_net_spec(again), spec) == 0);
        CHECK(dpt_net_hash(again) == dpt_net_hash(net));
        dpt_net_free(again);
    }
    /* A model file keeps the graph: saved and loaded, the same spec and
     * the same outputs. */
    char dir[] = "/tmp/dpt_graph_XXXXXX", path[64];
    if (mkdtemp(dir)) {
        snprintf(path, sizeof path, "%s/m.safetensors", dir);
        dpt_net *loaded = NULL;
        CHECK(dpt_net_save(net, path, NULL, 0) == DPT_OK);
        CHECK_MSG(dpt_net_load(path, 2, &loaded) == DPT_OK, "%s", dpt_last_error());
        if (loaded) {
            CHECK(strcmp(dpt_net_spec(loaded), spec) == 0);
            float x[2 * 50];
            for (int i = 0; i < 100; i++)
                x[i] = (float)((i * 37) % 11) / 5.0f - 1.0f;
            const float *y;
            float y0[6];
            CHECK(dpt_net_forward(net, x, 2, DPT_MODE_PREDICT, &y) == DPT_OK);
            memcpy(y0, y, sizeof y0);
            CHECK(dpt_net_forward(loaded, x, 2, DPT_MODE_PREDICT, &y) == DPT_OK);
            CHECK(memcmp(y0, y, sizeof y0) == 0);
            dpt_net_free(loaded);
        }
        remove(path);
        rmdir(dir);
    }
    /* A chain's spec has no from= at all. */
    dpt_net *chain = NULL;
    CHECK(dpt_net_from_spec(dpt_net_default_spec(), "default", 10, 2, 0, &chain) == DPT_OK);
    if (chain) {
        CHECK(strstr(dpt_net_spec(chain), "from=") == NULL);
        dpt_net_free(chain);
    }
    dpt_net_free(net);
}

/* ---- the builder ---------------------------------------------------------------------------- */

static void test_builder(void)
{
    dpt_net_builder *b = NULL;
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    if (!b)
        return;
    dpt_net_builder_add_input(b, "in", 5, 5, 2);
    dpt_net_builder_add_conv(b, "c1", 3, 3, 1, 1);
    dpt_net_builder_add_batchnorm(b, "b1");
    dpt_net_builder_add_conv(b, "c2", 3, 3, 1, 1);
    dpt_net_builder_add_batchnorm(b, "b2");
    dpt_net_builder_add_add(b, "a", "b2,b1");
    dpt_net_builder_set_from(b, "b1");
    dpt_net_builder_add_conv(b, "p", 1, 2, 1, 0);
    dpt_net_builder_set_from(b, "a,p,b1");
    dpt_net_builder_add_concat(b, "j", NULL);
    CHECK(dpt_net_builder_add_fc(b, "f", 3) == DPT_OK);
    dpt_net *built = NULL, *spec = NULL;
    dpt_status s = dpt_net_build(b, 0, 2, 7, &built);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    CHECK(dpt_net_from_spec(fd_spec, "fd", 0, 2, 7, &spec) == DPT_OK);
    if (built && spec) {
        CHECK_MSG(strcmp(dpt_net_spec(built), dpt_net_spec(spec)) == 0, "%s\n---\n%s",
                  dpt_net_spec(built), dpt_net_spec(spec));
        CHECK(dpt_net_layer_n_inputs(built, 7) == 3 && dpt_net_layer_input(built, 7, 1) == 6);
        CHECK(dpt_net_layer_n_inputs(built, 0) == 0 && dpt_net_layer_input(built, 0, 0) == -1);
    }
    dpt_net_free(built), dpt_net_free(spec);
    /* add without inputs, and a bad input list, fail in the call. */
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_input(b, "in", 5, 5, 2);
    CHECK(dpt_net_builder_add_add(b, "a", NULL) == DPT_ERR_ARG);
    CHECK(strstr(dpt_last_error(), "name its input layers") != NULL);
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    CHECK(dpt_net_builder_set_from(b, "a,,b") == DPT_ERR_ARG);
    dpt_net_builder_free(b);
}

/* ---- files from before the graph ------------------------------------------------------------ */

/* tests/fixtures/old_model.safetensors and old_checkpoint.safetensors were
 * written by dptrain 60877bd (the last chain-only executor): `dptrain train
 * --data tests/fixtures/digits400 --net <a conv-bn-relu x2, fc, softmax
 * chain> --epochs 2 --batch 32 --workers 2 --checkpoint-every 5`;
 * old_model_pred.safetensors holds 8 inputs (x) and that build's PREDICT
 * output for them (y) from dpt_net_load on the model file. */
static void test_old_files(void)
{
    char path[1024], pred[1024], ckpt[1024];
    tu_fixture("old_model.safetensors", path, sizeof path);
    tu_fixture("old_model_pred.safetensors", pred, sizeof pred);
    tu_fixture("old_checkpoint.safetensors", ckpt, sizeof ckpt);
    dpt_net *net = NULL;
    dpt_st *st = NULL;
    dpt_status s = dpt_net_load(path, 8, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK)
        s = dpt_st_open(pred, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK) {
        dpt_net_free(net);
        return;
    }
    CHECK(strstr(dpt_net_spec(net), "from=") == NULL);
    static float x[8 * 784], y_old[80];
    CHECK(dpt_st_read_f32(st, "x", x, 8 * 784) == DPT_OK);
    CHECK(dpt_st_read_f32(st, "y", y_old, 80) == DPT_OK);
    const float *y;
    CHECK(dpt_net_forward(net, x, 8, DPT_MODE_PREDICT, &y) == DPT_OK);
    printf("a model file from before the graph:\n");
    tu_check_close("predictions", y, y_old, 80, 1e-5);
    int a[8], b[8];
    dpt_argmax_rows(y, 8, 10, a);
    dpt_argmax_rows(y_old, 8, 10, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* Its checkpoint loads into the network of its spec, with the final
     * learnables (written at the end of the run). */
    dpt_net *again = NULL;
    dpt_sgdm *opt = NULL;
    s = dpt_net_from_spec(dpt_net_spec(net), "old spec", 10, 8, 0, &again);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(again), 0.01f, 0.9f, 0, &opt);
    dpt_checkpoint_info info;
    if (s == DPT_OK)
        s = dpt_checkpoint_load(ckpt, again, opt, &info);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        CHECK(memcmp(dpt_net_params(again), dpt_net_params(net),
                     dpt_net_n_params(net) * sizeof(float)) == 0);
        CHECK(dpt_net_forward(again, x, 8, DPT_MODE_PREDICT, &y) == DPT_OK);
        tu_check_close("predictions after the checkpoint", y, y_old, 80, 1e-5);
    }
    dpt_sgdm_free(opt);
    dpt_net_free(again);
    dpt_net_free(net);
    dpt_st_close(st);
}

/* ---- the GPU runs graphs: one executor (tests/test_gpu.c compares on a device) ----------- */

static void test_gpu_takes_graphs(void)
{
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(residual_spec, "residual", 0, 2, 7, &net) == DPT_OK);
    if (!net)
        return;
    /* Every layer of the residual graph has GPU code: add and fan-out are
     * the executor's, not a reason to refuse. */
    dpt_status s = dpt_net_gpu_supported(net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (dpt_gpu_count() < 1) {
        /* Without a device the move fails for the device, never for the
         * graph, and the network stays on the CPU. */
        CHECK(dpt_net_to_gpu(net, 0) != DPT_OK);
        CHECK_MSG(strstr(dpt_last_error(), "plain chain") == NULL, "%s", dpt_last_error());
        CHECK(dpt_net_device(net) < 0);
    }
    dpt_net_free(net);
}

/* ---- kinds of state ------------------------------------------------------------------------- */

static int resets;
static void count_reset(dpt_layer *l)
{
    (void)l;
    resets++;
}

static void test_state_kinds(void)
{
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(residual_spec, "residual", 0, 2, 7, &net) == DPT_OK);
    if (!net)
        return;
    /* Batch-norm statistics are pooled state: hashed. */
    for (size_t i = 0; i < dpt_net_n_state(net); i++)
        CHECK(net->state_kind[i] == DPT_KIND_POOLED);
    uint64_t h = dpt_net_hash(net);
    dpt_net_state(net)[0] += 1.0f;
    CHECK(dpt_net_hash(net) != h);
    dpt_net_state(net)[0] -= 1.0f;
    CHECK(dpt_net_hash(net) == h);
    /* Carried state is per worker: not hashed. Mark b2's entries carried. */
    long e = dpt_net_find_state(net, "b2/TrainedMean");
    CHECK(e >= 0);
    if (e >= 0) {
        net->state_kind[e] = DPT_KIND_CARRIED;
        h = dpt_net_hash(net);
        dpt_net_state(net)[net->state_tab[e].offset] += 1.0f;
        CHECK(dpt_net_hash(net) == h);
    }
    /* dpt_net_reset_state calls every reset hook. */
    layer_type t = *net->layers[5].type;
    t.reset = count_reset;
    const layer_type *keep = net->layers[5].type;
    net->layers[5].type = &t;
    net->layers[8].type = &t;
    resets = 0;
    dpt_net_reset_state(net);
    CHECK(resets == 2);
    net->layers[5].type = keep;
    net->layers[8].type = &dpt_layer_conv;
    dpt_net_set_iteration(net, 3, 17);
    dpt_net_set_obs_offset(net, 64);
    CHECK(net->epoch == 3 && net->iteration == 17 && net->obs_offset == 64 && net->seed == 7);
    dpt_net_free(net);
}

/* ---- each worker's first observation in the global minibatch --------------------- */

enum { OBS_WORKERS = 3, OBS_BATCH = 8 };
static long obs_seen[OBS_WORKERS];

static dpt_status obs_worker(dpt_comm *comm, void *arg)
{
    (void)arg;
    int rank = dpt_comm_rank(comm), share[OBS_WORKERS];
    dpt_batch_shares(OBS_BATCH, OBS_WORKERS, share);
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = dpt_net_from_spec("input in size=2x2x1\nfc f outputs=2\nsoftmax s\n", "obs",
                                     0, OBS_BATCH, 1, &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.1f, 0.9f, 0, &opt);
    float x[OBS_BATCH * 4] = {0}, t[OBS_BATCH * 2] = {0};
    for (int i = 0; i < OBS_BATCH; i++)
        t[2 * i] = 1;
    double loss;
    int m;
    dpt_net_set_obs_offset(net, -1);
    if (s == DPT_OK)
        s = dpt_train_step(net, opt, comm, x, t, share[rank], &loss, &m);
    if (s == DPT_OK)
        obs_seen[rank] = net->obs_offset;
    /* The public call a loop of its own uses gives the same place and M. */
    long first = -1;
    double m_total = 0;
    if (s == DPT_OK)
        s = dpt_train_batch_position(comm, share[rank], &first, &m_total);
    if (s == DPT_OK && (first != obs_seen[rank] || m_total != OBS_BATCH))
        s = dpt_fail(DPT_ERR_ARG, "worker %d: dpt_train_batch_position gave %ld, %g", rank,
                     first, m_total);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static void test_obs_offset(void)
{
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = OBS_WORKERS;
    dpt_status s = dpt_spmd_run(&cfg, obs_worker, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    /* Shares 3, 3, 2: first observations 0, 3, 6. */
    CHECK_MSG(obs_seen[0] == 0 && obs_seen[1] == 3 && obs_seen[2] == 6, "%ld %ld %ld",
              obs_seen[0], obs_seen[1], obs_seen[2]);
    /* One worker (no communicator): the share starts the minibatch. */
    long first = -1;
    double m_total = 0;
    CHECK(dpt_train_batch_position(NULL, 5, &first, &m_total) == DPT_OK && first == 0 &&
          m_total == 5);
    CHECK(dpt_train_batch_position(NULL, 5, NULL, &m_total) == DPT_ERR_ARG);
}

int main(void)
{
    test_against_pytorch();
    test_fusion_edges();
    test_finite_differences();
    test_bad_specs();
    test_buffer_reuse();
    test_many_tensors();
    test_after_input();
    test_spec_round_trip();
    test_state_kinds();
    test_builder();
    test_old_files();
    test_gpu_takes_graphs();
    test_obs_offset();
    return tu_exit();
}
