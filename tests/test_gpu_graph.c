/* The GPU training step as a CUDA graph (src/net/net_gpu_graph.c).
 *
 * On any machine, the host logic: DPT_CUDA_GRAPH's values (and
 * dpt_env_check's message for a bad one), which networks can be captured
 * (a layer type not known to be capturable is refused, naming the layer;
 * dropout, lstm, gru and sequenceinput are captured; dropout over
 * left-padded sequences runs those steps eagerly), the keys of sequence
 * steps (steps, lengths present, padding side), dropout's device key, the
 * update's per-step scalars (the values the eager update passes, step
 * counts advanced) and the update in the key, the graphs kept per
 * minibatch shape (eager the first time,
 * captured the second, replayed after, the least recently used shape
 * evicted), and dpt_gpu_options version 1 still accepted.
 *
 * With a GPU (else exit 77 after those): graph replay against eager
 * launches, bit for bit, for the example and the residual network over
 * several SGDM steps with a batch-size change and back (the loss of every
 * step, then learnables, gradients, batch-norm state and the optimizer's
 * state: the update runs inside the graph), Adam with clipping (the last
 * norm too), a dropout network (a new mask every iteration), an LSTM
 * language model (stateful: the carried state too), a GRU classifier with
 * masked lengths padded first (Adam with clipping), a GRU -> dropout ->
 * LSTM sequence output with masked rows, the counts of eager, captured
 * and replayed steps, 2 workers sharing the GPU (staged; each capturing
 * in its own thread), and the fallbacks (DPT_CUDA_GRAPH=0, cuda_graph 0)
 * noted in dpt_net_gpu_describe and still training.
 *
 *   test_gpu_graph                    the tests
 *   test_gpu_graph --bench B [B ...]  ms per step of the example network at
 *                                     minibatch B, eager and graph
 *                                     alternated (scripts/gpu-check) */
#include "dptrain/gpu.h"
#include "dptrain/optim.h"
#include "dptrain/train.h"
#include "net/net_gpu_graph.h"
#include "net/net_impl.h"
#include "optim/optim_impl.h"
#include "testutil.h"

#include <time.h>

static void fill_uniform(float *x, size_t n, uint64_t seed)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 9);
    for (size_t i = 0; i < n; i++)
        x[i] = dpt_rng_uniform(&r);
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

/* ---- host logic ------------------------------------------------------------------------- */

static void test_env(void)
{
    static const char *const good[] = {"0", "1", "on", "off"};
    static const char *const bad[] = {"", "2", "yes", "0 ", "ON", "true"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK_MSG(net_gpu_graph_env_valid(good[i]), "'%s'", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(!net_gpu_graph_env_valid(bad[i]), "'%s'", bad[i]);
    CHECK(!net_gpu_graph_env_valid(NULL));
    unsetenv("DPT_CUDA_GRAPH");
    CHECK(!net_gpu_graph_env_off() && dpt_env_check() == DPT_OK);
    setenv("DPT_CUDA_GRAPH", "0", 1);
    CHECK(net_gpu_graph_env_off() && dpt_env_check() == DPT_OK);
    setenv("DPT_CUDA_GRAPH", "off", 1);
    CHECK(net_gpu_graph_env_off());
    setenv("DPT_CUDA_GRAPH", "on", 1);
    CHECK(!net_gpu_graph_env_off() && dpt_env_check() == DPT_OK);
    setenv("DPT_CUDA_GRAPH", "maybe", 1);
    dpt_status s = dpt_env_check();
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "DPT_CUDA_GRAPH: 'maybe' is not 0 or "
                                                            "off"),
              "%d: %s", s, dpt_last_error());
    unsetenv("DPT_CUDA_GRAPH");
}

static void expect_refusal(const char *spec, const char *want)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, "r.spec", 3, 4, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    char why[200];
    const char *r = net_gpu_graph_refusal(net, why, sizeof why);
    if (!want)
        CHECK_MSG(!r, "refused: %s", r);
    else
        CHECK_MSG(r && strstr(r, want), "got '%s', want '%s'", r ? r : "(none)", want);
    dpt_net_free(net);
}

static void test_refusal(void)
{
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 4, 1, &net) == DPT_OK);
    char why[200];
    CHECK(net && !net_gpu_graph_refusal(net, why, sizeof why));
    dpt_net_free(net);
    expect_refusal("input in size=6x6x2\nconv c filter=3 filters=4 padding=1\nbatchnorm b\n"
                   "relu r\nmaxpool p size=2\nconv c2 filter=1 filters=4\nadd a from=c2,p\n"
                   "leakyrelu l\nglobalavgpool g\nfc f outputs=3\nsoftmax s\n", NULL);
    /* Dropout (its key read from the device), the recurrent layers and
     * sequence input are captured. */
    expect_refusal("input in size=6x6x2\nconv c filter=3 filters=4\ndropout dr p=0.5\n"
                   "fc f outputs=3\nsoftmax s\n", NULL);
    expect_refusal("sequenceinput in size=3\nlstm l units=4 output=last\nfc f outputs=3\n"
                   "softmax s\n", NULL);
    expect_refusal("sequenceinput in size=3\ngru g units=4\ndropout d p=0.2\nlstm l units=4\n"
                   "fc f outputs=3\nsoftmax s\n", NULL);
    /* A layer type nobody has checked for capture is refused, named. */
    dpt_net *fake = NULL;
    CHECK(dpt_net_from_spec("input in size=6x6x2\nfc f outputs=3\nsoftmax s\n", "r.spec", 3, 4,
                            1, &fake) == DPT_OK);
    if (fake) {
        layer_type unknown = *fake->layers[1].type;
        unknown.name = "newtype";
        const layer_type *was = fake->layers[1].type;
        fake->layers[1].type = &unknown;
        const char *r = net_gpu_graph_refusal(fake, why, sizeof why);
        CHECK_MSG(r && strstr(r, "layer 'f' (newtype) is not known to be capturable"), "%s",
                  r ? r : "(none)");
        fake->layers[1].type = was;
        dpt_net_free(fake);
    }
}

/* What a step's graph depends on besides n and w: the steps, the step
 * capacity, whether lengths are given and the padding side; and the steps
 * that run eagerly though graphs are on (dropout over left padding). */
static void test_seq_key(void)
{
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec("sequenceinput in size=3\ngru g units=4\ndropout d p=0.2\n"
                            "lstm l units=4 output=last\nfc f outputs=3\nsoftmax s\n",
                            "k.spec", 3, 4, 1, &net) == DPT_OK);
    if (!net)
        return;
    static const int len[4] = {5, 2, 4, 1}, len2[4] = {1, 1, 5, 5};
    CHECK(dpt_net_set_steps(net, 5, NULL, 4, 0) == DPT_OK);
    graph_key plain = net_gpu_graph_key(net, 4, 0.25f, 0);
    CHECK(plain.n == 4 && plain.steps == 5 && plain.w_bits == 0x3e800000u && !plain.has_len &&
          !plain.pad_left);
    CHECK(!net_gpu_graph_step_refusal(net));
    CHECK(dpt_net_set_steps(net, 5, len, 4, 0) == DPT_OK);
    graph_key masked = net_gpu_graph_key(net, 4, 0.25f, 0);
    CHECK(masked.has_len && !masked.pad_left && !net_gpu_graph_step_refusal(net));
    /* Other lengths, same presence: the same graph (the device copy is
     * rewritten by dpt_net_set_steps, its address stays). */
    CHECK(dpt_net_set_steps(net, 5, len2, 4, 0) == DPT_OK);
    graph_key masked2 = net_gpu_graph_key(net, 4, 0.25f, 0);
    CHECK(!memcmp(&masked, &masked2, sizeof masked));
    CHECK(dpt_net_set_steps(net, 5, len, 4, 1) == DPT_OK);
    graph_key left = net_gpu_graph_key(net, 4, 0.25f, 0);
    CHECK(left.has_len && left.pad_left);
    const char *r = net_gpu_graph_step_refusal(net);
    CHECK_MSG(r && strstr(r, "dropout on left-padded sequences"), "%s", r ? r : "(none)");
    /* Padding first without lengths pads nothing: graphs again. */
    CHECK(dpt_net_set_steps(net, 3, NULL, 4, 1) == DPT_OK);
    CHECK(!net_gpu_graph_step_refusal(net));
    /* Each of them is another slot. */
    gpu_graphs G;
    memset(&G, 0, sizeof G);
    graph_slot *sl;
    void *ev;
    const graph_key ks[] = {plain, masked, left};
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 3; i++)
            CHECK_MSG(gpu_graphs_next(&G, ks[i], &sl, &ev) ==
                          (round ? GRAPH_RUN_CAPTURE : GRAPH_RUN_EAGER),
                      "round %d key %d", round, i);
    /* Dropout's per-step key, in the order the device kernel reads it. */
    dpt_net_set_iteration(net, 3, 41);
    dpt_net_set_obs_offset(net, 17);
    uint64_t k[4];
    net_gpu_graph_dropout_key(net, k);
    CHECK(k[0] == net->seed && k[1] == 3 && k[2] == 41 && k[3] == 17);
    dropout_key dk;
    CHECK(dropout_layer_begin(net, &net->layers[2], DPT_MODE_TRAIN, &dk));
    CHECK(dk.seed == k[0] && dk.epoch == k[1] && dk.iteration == k[2] && dk.obs0 == k[3]);
    dpt_net_free(net);
}

static void test_slots(void)
{
    gpu_graphs G;
    memset(&G, 0, sizeof G);
    graph_slot *sl;
    void *ev;
    static char fake[GRAPH_SLOTS + 2]; /* stand-ins for captured graphs */
    graph_key a = {32, 1, 1, 0x3f800000u, 0, 0, 0}, a_w = {32, 1, 1, 0x3f000000u, 0, 0, 0};
    graph_key b = {20, 1, 1, 0x3f800000u, 0, 0, 0};
    CHECK(gpu_graphs_next(&G, a, &sl, &ev) == GRAPH_RUN_EAGER && !ev);
    CHECK(gpu_graphs_next(&G, a, &sl, &ev) == GRAPH_RUN_CAPTURE && !ev);
    sl->graph = &fake[0];
    CHECK(gpu_graphs_next(&G, a, &sl, &ev) == GRAPH_RUN_REPLAY && sl->graph == &fake[0]);
    /* Another loss weight (M changed) or n is another shape. */
    CHECK(gpu_graphs_next(&G, a_w, &sl, &ev) == GRAPH_RUN_EAGER && !ev);
    CHECK(gpu_graphs_next(&G, b, &sl, &ev) == GRAPH_RUN_EAGER && !ev);
    CHECK(gpu_graphs_next(&G, b, &sl, &ev) == GRAPH_RUN_CAPTURE);
    sl->graph = &fake[1];
    CHECK(gpu_graphs_next(&G, a, &sl, &ev) == GRAPH_RUN_REPLAY && sl->graph == &fake[0]);
    CHECK(gpu_graphs_next(&G, b, &sl, &ev) == GRAPH_RUN_REPLAY && sl->graph == &fake[1]);
    /* 5 more shapes fill the 8 slots; a 9th evicts the least recently
     * used (a_w, never captured); a_w again evicts a and its graph, and a
     * again b and its graph. */
    for (int i = 0; i < GRAPH_SLOTS - 3; i++) {
        graph_key k = {100 + i, 1, 1, 0, 0, 0, 0};
        CHECK(gpu_graphs_next(&G, k, &sl, &ev) == GRAPH_RUN_EAGER && !ev);
    }
    graph_key c = {200, 1, 1, 0, 0, 0, 0};
    CHECK(gpu_graphs_next(&G, c, &sl, &ev) == GRAPH_RUN_EAGER && !ev);
    CHECK(gpu_graphs_next(&G, a_w, &sl, &ev) == GRAPH_RUN_EAGER && ev == &fake[0]);
    CHECK(gpu_graphs_next(&G, a, &sl, &ev) == GRAPH_RUN_EAGER && ev == &fake[1]);
    /* Different sequence lengths are different shapes, and so are buffers
     * grown for longer sequences (new addresses). */
    graph_key t1 = {7, 10, 16, 0, 0, 0, 0}, t2 = {7, 11, 16, 0, 0, 0, 0};
    graph_key t1_grown = {7, 10, 32, 0, 0, 0, 0};
    CHECK(gpu_graphs_next(&G, t1, &sl, &ev) == GRAPH_RUN_EAGER);
    CHECK(gpu_graphs_next(&G, t2, &sl, &ev) == GRAPH_RUN_EAGER);
    CHECK(gpu_graphs_next(&G, t1, &sl, &ev) == GRAPH_RUN_CAPTURE);
    CHECK(gpu_graphs_next(&G, t1_grown, &sl, &ev) == GRAPH_RUN_EAGER);
}

/* The update's per-step scalars as the graph reads them from the device:
 * the values the eager update passes as arguments (Adam's coefficients of
 * the new step, SGDM's lr, momentum and decay), the step counts advanced
 * as dpt_optim_step advances them, the clipping bound (0: off). */
static void test_update_scalars(void)
{
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.lr = 0.003f, oo.weight_decay = 0.01f, oo.decoupled = 1, oo.clip_norm = 0.5;
    dpt_optim *a = NULL, *b = NULL;
    CHECK(dpt_optim_new(DPT_OPTIM_ADAM, 10, &oo, &a) == DPT_OK);
    CHECK(dpt_optim_new(DPT_OPTIM_ADAM, 10, &oo, &b) == DPT_OK);
    if (a && b) {
        gpu_update_scalars sc;
        for (int step = 1; step <= 3; step++) {
            CHECK(optim_gpu_scalars(a, &sc) == GPU_UPDATE_ADAM);
            adam_coeffs c = adam_begin_step(dpt_optim_adam(b));
            const float want[9] = {c.step_size, c.bc2_sqrt, c.b1, c.b2, c.c1, c.c2,
                                   c.eps, c.shrink, c.l2};
            CHECK_MSG(!memcmp(sc.c, want, sizeof want), "adam step %d: scalars differ", step);
            CHECK(sc.max_norm == 0.5 && dpt_optim_step_count(a) == step);
        }
        /* The bias corrections change every step (why they are not kernel
         * arguments in a graph). */
        gpu_update_scalars sc2;
        optim_gpu_scalars(a, &sc2);
        CHECK(sc2.c[0] != sc.c[0] && sc2.c[1] != sc.c[1]);
    }
    dpt_optim_free(a), dpt_optim_free(b);
    dpt_optim_opts so = DPT_OPTIM_OPTS_INIT;
    so.lr = 0.05f, so.momentum = 0.8f, so.weight_decay = 0.001f;
    dpt_optim *m = NULL;
    CHECK(dpt_optim_new(DPT_OPTIM_SGDM, 10, &so, &m) == DPT_OK);
    if (m) {
        gpu_update_scalars sc;
        CHECK(optim_gpu_scalars(m, &sc) == GPU_UPDATE_SGDM);
        CHECK(sc.c[0] == 0.05f && sc.c[1] == 0.8f && sc.c[2] == 0.001f && sc.max_norm == 0);
        CHECK(dpt_optim_step_count(m) == 1);
        dpt_optim_set_lr(m, 0.025f); /* a schedule: the next step's value */
        CHECK(optim_gpu_scalars(m, &sc) == GPU_UPDATE_SGDM && sc.c[0] == 0.025f);
        CHECK(dpt_optim_step_count(m) == 2);
    }
    dpt_optim_free(m);
    CHECK(sizeof(gpu_update_scalars) == 48);
    /* The update in the graph is part of its key. */
    gpu_graphs G;
    memset(&G, 0, sizeof G);
    graph_slot *sl;
    void *ev;
    graph_key k0 = {8, 1, 1, 0, 0, 0, 0}, k1 = {8, 1, 1, 0, 0, 0, 1 + GPU_UPDATE_SGDM};
    graph_key k2 = {8, 1, 1, 0, 0, 0, 1 + GPU_UPDATE_ADAM + 2};
    CHECK(gpu_graphs_next(&G, k0, &sl, &ev) == GRAPH_RUN_EAGER);
    CHECK(gpu_graphs_next(&G, k1, &sl, &ev) == GRAPH_RUN_EAGER);
    CHECK(gpu_graphs_next(&G, k2, &sl, &ev) == GRAPH_RUN_EAGER);
    CHECK(gpu_graphs_next(&G, k1, &sl, &ev) == GRAPH_RUN_CAPTURE);
}

static void test_options(void)
{
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    CHECK(o.version == 2 && o.cuda_graph == 1);
    dpt_net *net = NULL;
    if (dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 4, 1, &net) != DPT_OK)
        return;
    o.version = 3;
    dpt_status s = dpt_net_to_gpu_opts(net, &o);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "options version 3"), "%s",
              dpt_last_error());
    if (dpt_gpu_count() < 1) { /* version 1 passes the check, then no device */
        o.version = 1;
        s = dpt_net_to_gpu_opts(net, &o);
        CHECK_MSG(s != DPT_OK && !strstr(dpt_last_error(), "options version"), "%s",
                  dpt_last_error());
    }
    dpt_net_free(net);
}

/* ---- on a GPU ------------------------------------------------------------------------------ */

static char *read_spec(const char *rel)
{
    const char *root = getenv("DPT_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root ? root : ".", rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (buf && !n)
        free(buf), buf = NULL;
    return buf;
}

static dpt_status make_gpu_net(const char *spec, int max_batch, int graph, dpt_net **out)
{
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.cuda_graph = graph;
    dpt_status s = dpt_net_from_spec(spec, "graph.spec", 10, max_batch, 7, out);
    return s == DPT_OK ? dpt_net_to_gpu_opts(*out, &o) : s;
}

static int same_floats(const char *what, const char *name, const float *a, const float *b,
                       size_t n)
{
    size_t i = 0;
    while (i < n && memcmp(&a[i], &b[i], sizeof *a) == 0)
        i++;
    CHECK_MSG(i == n, "%s: %s differ at %zu of %zu: graph %.9g, eager %.9g", what, name, i, n,
              i < n ? a[i] : 0.0, i < n ? b[i] : 0.0);
    return i == n;
}

/* The same steps on two copies of a network, one with graphs and one
 * without: every step's loss and the final learnables, gradients and state
 * bit for bit. kind: 0 SGDM, 1 Adam with clipping. */
static void graph_vs_eager(const char *what, const char *spec, int kind)
{
    static const int batches[] = {32, 32, 32, 32, 20, 20, 20, 32, 32};
    const int n_steps = (int)(sizeof batches / sizeof *batches), max_batch = 32;
    dpt_net *ng = NULL, *ne = NULL;
    dpt_optim *og = NULL, *oe = NULL;
    dpt_status s = make_gpu_net(spec, max_batch, 1, &ng);
    if (s == DPT_OK)
        s = make_gpu_net(spec, max_batch, 0, &ne);
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.clip_norm = kind ? 0.5 : 0.0;
    dpt_optim_kind ok = kind ? DPT_OPTIM_ADAM : DPT_OPTIM_SGDM;
    if (s == DPT_OK)
        s = dpt_optim_new(ok, dpt_net_n_params(ng), &oo, &og);
    if (s == DPT_OK)
        s = dpt_optim_new(ok, dpt_net_n_params(ne), &oo, &oe);
    CHECK_MSG(s == DPT_OK, "%s: set-up: %s", what, dpt_last_error());
    size_t nx = input_count(ng ? ng : ne) * max_batch;
    float *x = malloc(nx * sizeof *x), *t = malloc((size_t)max_batch * 10 * sizeof *t);
    int same_loss = 1;
    for (int i = 0; s == DPT_OK && i < n_steps; i++) {
        int n = batches[i];
        fill_uniform(x, nx, 100 + (uint64_t)i);
        fill_onehot(t, n, 10, 200 + (uint64_t)i);
        /* A new iteration each step: dropout draws new masks (read from
         * the device under the graph). */
        dpt_net_set_iteration(ng, 0, i);
        dpt_net_set_iteration(ne, 0, i);
        double lg = 0, le = 0;
        s = dpt_train_step_optim(ng, og, NULL, x, t, n, &lg, NULL);
        if (s == DPT_OK)
            s = dpt_train_step_optim(ne, oe, NULL, x, t, n, &le, NULL);
        CHECK_MSG(s == DPT_OK, "%s: step %d: %s", what, i, dpt_last_error());
        if (s == DPT_OK && memcmp(&lg, &le, sizeof lg) != 0) {
            CHECK_MSG(0, "%s: step %d (n %d): loss %.17g with the graph, %.17g eager", what, i, n,
                      lg, le);
            same_loss = 0;
        }
    }
    if (s == DPT_OK) {
        int ok_all = same_loss;
        ok_all &= same_floats(what, "learnables", dpt_net_params(ng), dpt_net_params(ne),
                              dpt_net_n_params(ng));
        ok_all &= same_floats(what, "gradients", dpt_net_grads(ng), dpt_net_grads(ne),
                              dpt_net_n_params(ng));
        ok_all &= same_floats(what, "state", dpt_net_state(ng), dpt_net_state(ne),
                              dpt_net_n_state_floats(ng));
        /* The update ran inside the graph: the optimizer's host side too. */
        double ng_norm = dpt_optim_last_norm(og), ne_norm = dpt_optim_last_norm(oe);
        CHECK_MSG(dpt_optim_step_count(og) == dpt_optim_step_count(oe) &&
                      (kind ? !memcmp(&ng_norm, &ne_norm, sizeof ng_norm) : 1),
                  "%s: steps %ld / %ld, last norm %.17g / %.17g", what, dpt_optim_step_count(og),
                  dpt_optim_step_count(oe), ng_norm, ne_norm);
        if (dpt_net_sync_to_host(ng) == DPT_OK && dpt_net_sync_to_host(ne) == DPT_OK)
            for (size_t b = 0; b < dpt_optim_n_buffers(og); b++)
                ok_all &= same_floats(what, dpt_optim_buffer_name(og, b), dpt_optim_buffer(og, b),
                                      dpt_optim_buffer(oe, b), dpt_net_n_params(ng));
        long eg, cg, rg, ee, ce, re;
        int on_g = net_gpu_graph_counts(ng, &eg, &cg, &rg);
        int on_e = net_gpu_graph_counts(ne, &ee, &ce, &re);
        /* 32: eager, capture, 2 replays; 20: eager, capture, replay; 32: 2
         * replays. */
        CHECK_MSG(on_g && eg == 2 && cg == 2 && rg == 5, "%s: graphs %s, eager %ld, captured %ld, "
                  "replayed %ld (want on, 2, 2, 5): %s", what, on_g ? "on" : "off", eg, cg, rg,
                  dpt_net_gpu_describe(ng));
        CHECK_MSG(!on_e && ee + ce + re == 0, "%s: cuda_graph 0 still used graphs", what);
        printf("  %s: %d steps, graph replay == eager launches %s (eager %ld, captured %ld, "
               "replayed %ld)\n", what, n_steps, ok_all ? "bit for bit" : "NOT", eg, cg, rg);
    }
    free(x), free(t);
    dpt_optim_free(og), dpt_optim_free(oe);
    dpt_net_free(ng), dpt_net_free(ne);
}

/* graph_vs_eager for sequence networks: every step sets the steps (and
 * lengths, drawn anew each step, and the padding side) on both copies
 * first; the carried state of a stateful network is compared too. The
 * schedule: 4 steps of (n 6, T 9), 3 of (4, 5), 2 of (6, 9): the same
 * eager/captured/replayed counts as graph_vs_eager. */
static void seq_graph_vs_eager(const char *what, const char *spec, int classes, int masked,
                               int pad_left, int stateful, int kind)
{
    static const int ns[] = {6, 6, 6, 6, 4, 4, 4, 6, 6}, ts[] = {9, 9, 9, 9, 5, 5, 5, 9, 9};
    const int n_steps = (int)(sizeof ns / sizeof *ns), max_batch = 6, max_t = 9;
    dpt_net *net[2] = {NULL, NULL};
    dpt_optim *opt[2] = {NULL, NULL};
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.clip_norm = kind ? 0.5 : 0.0;
    dpt_status s = DPT_OK;
    for (int g = 0; g < 2 && s == DPT_OK; g++) {
        dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
        o.cuda_graph = g == 0; /* 0: graphs, 1: eager */
        s = dpt_net_from_spec(spec, "seq.spec", classes, max_batch, 7, &net[g]);
        if (s == DPT_OK)
            dpt_net_set_stateful(net[g], stateful);
        if (s == DPT_OK)
            s = dpt_net_to_gpu_opts(net[g], &o);
        if (s == DPT_OK)
            s = dpt_optim_new(kind ? DPT_OPTIM_ADAM : DPT_OPTIM_SGDM, dpt_net_n_params(net[g]),
                              &oo, &opt[g]);
    }
    CHECK_MSG(s == DPT_OK, "%s: set-up: %s", what, dpt_last_error());
    if (s != DPT_OK) {
        for (int g = 0; g < 2; g++)
            dpt_optim_free(opt[g]), dpt_net_free(net[g]);
        return;
    }
    const int f = (int)input_count(net[0]), k = dpt_net_n_outputs(net[0]);
    const int seq_out = dpt_net_output_is_sequence(net[0]);
    float *x = malloc((size_t)max_batch * max_t * f * sizeof *x);
    float *t = calloc((size_t)max_batch * max_t * k, sizeof *t);
    int same_loss = 1;
    dpt_rng r;
    dpt_rng_seed(&r, 77, 1);
    for (int i = 0; s == DPT_OK && x && t && i < n_steps; i++) {
        int n = ns[i], T = ts[i], base[6], len[6];
        /* Lengths drawn per shape, rotated every step: each observation's
         * length changes, their sum (a sequence loss's weight, part of the
         * graph's key) does not. */
        dpt_rng lr;
        dpt_rng_seed(&lr, (uint64_t)(100 * n + T), 2);
        for (int j = 0; j < n; j++)
            base[j] = j == 0 ? T : 1 + (int)dpt_rng_below(&lr, (uint32_t)T);
        for (int j = 0; j < n; j++)
            len[j] = base[(j + i) % n];
        for (int g = 0; g < 2 && s == DPT_OK; g++) {
            s = dpt_net_set_steps(net[g], T, masked ? len : NULL, n, pad_left);
            dpt_net_set_iteration(net[g], 0, i);
        }
        fill_uniform(x, (size_t)n * T * f, 300 + (uint64_t)i);
        /* Targets: a row per step (padded rows zero) or one per sequence. */
        int rows = seq_out ? T : 1;
        memset(t, 0, (size_t)n * rows * k * sizeof *t);
        for (int j = 0; j < n; j++)
            for (int q = 0; q < rows; q++) {
                int valid = !seq_out || !masked ||
                            (pad_left ? q >= T - len[j] : q < len[j]);
                if (valid)
                    t[((size_t)j * rows + q) * k + dpt_rng_below(&r, (uint32_t)k)] = 1.0f;
            }
        double l[2] = {0, 0};
        for (int g = 0; g < 2 && s == DPT_OK; g++)
            s = dpt_train_step_optim(net[g], opt[g], NULL, x, t, n, &l[g], NULL);
        CHECK_MSG(s == DPT_OK, "%s: step %d: %s", what, i, dpt_last_error());
        if (s == DPT_OK && memcmp(&l[0], &l[1], sizeof l[0]) != 0) {
            CHECK_MSG(0, "%s: step %d (n %d, T %d): loss %.17g with the graph, %.17g eager", what,
                      i, n, T, l[0], l[1]);
            same_loss = 0;
        }
    }
    if (s == DPT_OK && x && t) {
        size_t np = dpt_net_n_params(net[0]);
        int ok_all = same_loss;
        ok_all &= same_floats(what, "learnables", dpt_net_params(net[0]), dpt_net_params(net[1]),
                              np);
        ok_all &= same_floats(what, "gradients", dpt_net_grads(net[0]), dpt_net_grads(net[1]), np);
        double n0 = dpt_optim_last_norm(opt[0]), n1 = dpt_optim_last_norm(opt[1]);
        CHECK_MSG(!kind || !memcmp(&n0, &n1, sizeof n0), "%s: last norm %.17g / %.17g", what, n0,
                  n1);
        size_t nc = dpt_net_carry_floats(net[0]) * (size_t)max_batch;
        if (stateful && nc) {
            float *c[2] = {malloc(nc * sizeof(float)), malloc(nc * sizeof(float))};
            CHECK(c[0] && c[1] && dpt_net_carry_get(net[0], max_batch, c[0]) == DPT_OK &&
                  dpt_net_carry_get(net[1], max_batch, c[1]) == DPT_OK);
            if (c[0] && c[1])
                ok_all &= same_floats(what, "carried state", c[0], c[1], nc);
            free(c[0]), free(c[1]);
        }
        long e, c, rp, e2, c2, r2;
        int on = net_gpu_graph_counts(net[0], &e, &c, &rp);
        int on2 = net_gpu_graph_counts(net[1], &e2, &c2, &r2);
        CHECK_MSG(on && e == 2 && c == 2 && rp == 5, "%s: graphs %s, eager %ld, captured %ld, "
                  "replayed %ld (want on, 2, 2, 5): %s", what, on ? "on" : "off", e, c, rp,
                  dpt_net_gpu_describe(net[0]));
        CHECK_MSG(!on2 && e2 + c2 + r2 == 0, "%s: cuda_graph 0 still used graphs", what);
        printf("  %s: %d steps, graph replay == eager launches %s (eager %ld, captured %ld, "
               "replayed %ld)\n", what, n_steps, ok_all ? "bit for bit" : "NOT", e, c, rp);
    }
    free(x), free(t);
    for (int g = 0; g < 2; g++) {
        if (net[g])
            dpt_net_sync_to_host(net[g]); /* unbinds the optimizer before it is freed */
        dpt_optim_free(opt[g]), dpt_net_free(net[g]);
    }
}

/* 2 workers sharing one GPU (staged all-reduce, local batch norm), each
 * capturing on its own stream in its own thread while the other may be in
 * the host all-reduce: the same bits with graphs as without. */
#define W_STEPS 6
#define W_M 24
typedef struct wjob {
    int graph;
    const float *x, *t;
    double loss[2][W_STEPS];
    float *params[2], *state[2];
    long counts[2][3];
} wjob;

static dpt_status wworker(dpt_comm *comm, void *arg)
{
    wjob *j = arg;
    int rank = dpt_comm_rank(comm), n = W_M / 2;
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.device = dpt_gpu_for_worker(comm);
    o.reduce = DPT_GPU_REDUCE_STAGED;
    o.cuda_graph = j->graph;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "w", 10, n, 3, &net);
    if (s == DPT_OK)
        s = dpt_net_to_gpu_opts(net, &o);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.05f, 0.9f, 0.0f, &opt);
    for (int i = 0; s == DPT_OK && i < W_STEPS; i++)
        s = dpt_train_step(net, opt, comm, j->x + (size_t)(rank * n) * 784,
                           j->t + (size_t)(rank * n) * 10, n, &j->loss[rank][i], NULL);
    if (s == DPT_OK) {
        size_t np = dpt_net_n_params(net), ns = dpt_net_n_state_floats(net);
        j->params[rank] = malloc(np * sizeof(float));
        j->state[rank] = malloc(ns * sizeof(float));
        if (j->params[rank] && j->state[rank]) {
            memcpy(j->params[rank], dpt_net_params(net), np * sizeof(float));
            memcpy(j->state[rank], dpt_net_state(net), ns * sizeof(float));
        }
        net_gpu_graph_counts(net, &j->counts[rank][0], &j->counts[rank][1], &j->counts[rank][2]);
    }
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static void two_workers(void)
{
    float *x = malloc((size_t)W_M * 784 * sizeof *x), *t = malloc((size_t)W_M * 10 * sizeof *t);
    wjob *j = calloc(2, sizeof *j);
    if (!x || !t || !j) {
        CHECK(0);
        free(x), free(t), free(j);
        return;
    }
    fill_uniform(x, (size_t)W_M * 784, 31);
    fill_onehot(t, W_M, 10, 32);
    dpt_status s = DPT_OK;
    for (int g = 0; g < 2 && s == DPT_OK; g++) {
        j[g].graph = g, j[g].x = x, j[g].t = t;
        dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
        cfg.backend = DPT_COMM_LOCAL;
        cfg.n_workers = 2;
        s = dpt_spmd_run(&cfg, wworker, &j[g]);
        CHECK_MSG(s == DPT_OK, "2 workers, cuda_graph %d: %s", g, dpt_last_error());
    }
    if (s == DPT_OK) {
        dpt_net *probe = NULL;
        CHECK(dpt_net_from_spec(dpt_net_default_spec(), "w", 10, 1, 3, &probe) == DPT_OK);
        size_t np = probe ? dpt_net_n_params(probe) : 0;
        size_t ns = probe ? dpt_net_n_state_floats(probe) : 0;
        dpt_net_free(probe);
        int ok = memcmp(j[0].loss, j[1].loss, sizeof j[0].loss) == 0;
        CHECK_MSG(ok, "2 workers: the losses differ with and without graphs");
        for (int r = 0; r < 2; r++) {
            ok &= same_floats("2 workers", "learnables", j[1].params[r], j[0].params[r], np);
            ok &= same_floats("2 workers", "state", j[1].state[r], j[0].state[r], ns);
            CHECK_MSG(j[1].counts[r][0] == 1 && j[1].counts[r][1] == 1 &&
                          j[1].counts[r][2] == W_STEPS - 2,
                      "worker %d: eager %ld, captured %ld, replayed %ld", r, j[1].counts[r][0],
                      j[1].counts[r][1], j[1].counts[r][2]);
        }
        printf("  2 workers sharing the GPU (staged), %d steps: graphs == eager %s\n", W_STEPS,
               ok ? "bit for bit" : "NOT");
    }
    for (int g = 0; g < 2; g++)
        for (int r = 0; r < 2; r++)
            free(j[g].params[r]), free(j[g].state[r]);
    free(j), free(x), free(t);
}

/* DPT_CUDA_GRAPH=0 and the option cuda_graph 0: eager, said once in the
 * description, and it trains. */
static void fallbacks(void)
{
    for (int k = 0; k < 2; k++) {
        if (k == 1)
            setenv("DPT_CUDA_GRAPH", "0", 1);
        dpt_net *net = NULL;
        dpt_optim *o = NULL;
        dpt_status s = make_gpu_net(dpt_net_default_spec(), 16, k, &net);
        if (s == DPT_OK)
            s = dpt_optim_new(DPT_OPTIM_SGDM, dpt_net_n_params(net), NULL, &o);
        float x[16 * 784], t[16 * 10];
        fill_uniform(x, 16 * 784, 5);
        fill_onehot(t, 16, 10, 6);
        double l = 0;
        for (int i = 0; s == DPT_OK && i < 3; i++)
            s = dpt_train_step_optim(net, o, NULL, x, t, 16, &l, NULL);
        CHECK_MSG(s == DPT_OK && l > 0, "fallback %d: %s", k, dpt_last_error());
        long e = 0, c = 0, r = 0;
        int on = net ? net_gpu_graph_counts(net, &e, &c, &r) : 1;
        const char *d = net ? dpt_net_gpu_describe(net) : "";
        const char *want = k ? "CUDA graph: off: DPT_CUDA_GRAPH=0"
                             : "CUDA graph: off: option cuda_graph 0";
        CHECK_MSG(!on && c + r == 0 && strstr(d, want), "fallback %d: %s", k, d);
        dpt_optim_free(o);
        dpt_net_free(net);
    }
    unsetenv("DPT_CUDA_GRAPH");
}

/* ---- benchmark --------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench(int argc, char **argv)
{
    if (dpt_gpu_count() < 1) {
        fprintf(stderr, "bench: no usable GPU\n");
        return 1;
    }
    for (int a = 0; a < argc; a++) {
        int B = atoi(argv[a]);
        if (B < 1 || B > 65536)
            continue;
        dpt_net *net[2] = {NULL, NULL};
        dpt_sgdm *opt[2] = {NULL, NULL};
        dpt_status s = DPT_OK;
        for (int g = 0; g < 2 && s == DPT_OK; g++) {
            s = make_gpu_net(dpt_net_default_spec(), B, g, &net[g]);
            if (s == DPT_OK)
                s = dpt_sgdm_new(dpt_net_n_params(net[g]), 0.01f, 0.9f, 0.0f, &opt[g]);
        }
        float *x = malloc((size_t)B * 784 * sizeof *x), *t = malloc((size_t)B * 10 * sizeof *t);
        fill_uniform(x, (size_t)B * 784, 61);
        fill_onehot(t, B, 10, 62);
        double l = 0, ms[2][5];
        for (int g = 0; g < 2 && s == DPT_OK; g++)
            for (int i = 0; i < 10 && s == DPT_OK; i++)
                s = dpt_train_step(net[g], opt[g], NULL, x, t, B, &l, NULL);
        /* Alternated rounds of 1 s each; the medians are compared. */
        for (int r = 0; r < 5 && s == DPT_OK; r++)
            for (int g = 0; g < 2 && s == DPT_OK; g++) {
                long steps = 0;
                double t0 = now_s(), el = 0;
                while (s == DPT_OK && (el < 1.0 || steps < 10)) {
                    s = dpt_train_step(net[g], opt[g], NULL, x, t, B, &l, NULL);
                    steps++;
                    el = now_s() - t0;
                }
                ms[g][r] = 1e3 * el / (double)steps;
            }
        if (s != DPT_OK) {
            fprintf(stderr, "bench: batch %d: %s\n", B, dpt_last_error());
            return 1;
        }
        double med[2];
        for (int g = 0; g < 2; g++) {
            for (int i = 1; i < 5; i++) /* insertion sort of 5 */
                for (int j = i; j > 0 && ms[g][j] < ms[g][j - 1]; j--) {
                    double tmp = ms[g][j];
                    ms[g][j] = ms[g][j - 1], ms[g][j - 1] = tmp;
                }
            med[g] = ms[g][2];
        }
        printf("BENCH graph batch=%d eager_ms=%.4f graph_ms=%.4f eager_images_per_s=%.1f "
               "graph_images_per_s=%.1f speedup=%.3f\n",
               B, med[0], med[1], 1e3 * B / med[0], 1e3 * B / med[1], med[0] / med[1]);
        fflush(stdout);
        free(x), free(t);
        for (int g = 0; g < 2; g++)
            dpt_sgdm_free(opt[g]), dpt_net_free(net[g]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(argc - 2, argv + 2);
    test_env();
    test_refusal();
    test_slots();
    test_seq_key();
    test_update_scalars();
    test_options();
    if (!dpt_gpu_have_cuda() || dpt_gpu_count() < 1) {
        printf("test_gpu_graph: the GPU tests skipped: %s\n",
               dpt_gpu_have_cuda() ? "no usable GPU" : "this build has no CUDA backend");
        return *tu_failures() ? 1 : TU_SKIP;
    }
    graph_vs_eager("example network, SGDM", dpt_net_default_spec(), 0);
    graph_vs_eager("example network, Adam with clipping", dpt_net_default_spec(), 1);
    char *res = read_spec("examples/nets/resnet-mini-28x28x1.net");
    CHECK_MSG(res, "examples/nets/resnet-mini-28x28x1.net not found (DPT_SOURCE_DIR)");
    if (res)
        graph_vs_eager("resnet-mini-28x28x1, SGDM", res, 0);
    free(res);
    graph_vs_eager("dropout network, SGDM",
                   "input in size=28x28x1\nconv c filter=3 filters=8 padding=1\nbatchnorm b\n"
                   "relu r\ndropout dr p=0.25\nfc f outputs=10\nsoftmax s\n", 0);
    seq_graph_vs_eager("LSTM language model (stateful, vocab 6), SGDM",
                       "sequenceinput in size=vocab\nlstm l units=16\nfc f outputs=vocab\n"
                       "softmax sm\n", 6, 0, 0, 1, 0);
    seq_graph_vs_eager("GRU classifier (masked lengths, padding first), Adam with clipping",
                       "sequenceinput in size=5\ngru g units=10 output=last\nfc f "
                       "outputs=classes\nsoftmax sm\n", 4, 1, 1, 0, 1);
    seq_graph_vs_eager("GRU -> dropout -> LSTM sequence output (masked lengths), SGDM",
                       "sequenceinput in size=5\ngru g units=8\ndropout d p=0.3\nlstm l "
                       "units=6\nfc f outputs=classes\nsoftmax sm\n", 4, 1, 0, 0, 0);
    two_workers();
    fallbacks();
    return tu_exit();
}
