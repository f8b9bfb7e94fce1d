/* Recurrent networks in the graph executor (src/net/layer_rnn.c, the
 * sequence parts of net.c and train/step.c).
 *
 * 1. Reference: every case of tests/fixtures/rnn_net.safetensors (made by
 *    make_rnn_net_fixtures.py: float64 torch, each sequence run alone over
 *    its own length): sequenceinput -> fc (per step) -> lstm|gru -> fc ->
 *    softmax, output=sequence and last, T = 1 and 17, full and variable
 *    lengths. Softmax outputs on valid rows, the masked loss, the gradient
 *    of every learnable and the recurrent layer's input gradient (at the
 *    per-step fc's output), through the training step's own loss
 *    (net_step_forward_loss), with right AND left padding (padded steps
 *    hold garbage), within REF_TOL (tu_check_close: max abs difference
 *    over max abs reference).
 * 2. Carried state: two consecutive chunks in stateful mode against torch
 *    feeding (h, c) back (detached); dpt_net_carry_get after the first
 *    chunk; carry_set/get round trip; reset zeroes; stateful off starts
 *    from zero.
 * 3. Spec errors name the line: conv/batchnorm/pool after sequenceinput,
 *    lstm on an image input, bad units/output, mixing a sequence and a
 *    vector in add; size=vocab/outputs=vocab resolve to n_classes and the
 *    normalised spec rebuilds the same network; a model file round trip.
 * 4. dpt_train_step_optim: the masked loss and update with extra padding
 *    equal those without it; N = 2, 3 workers equal 1 worker on the whole
 *    minibatch (LSTM classifier, output=last; and a per-step LSTM model
 *    with variable lengths) within test_parallel's tolerance (1e-5).
 * 5. Buffers grow with the steps (T beyond the build's capacity); bounds
 *    on T; finite differences of the loss through the network. */
#include "dptrain/comm.h"
#include "dptrain/core.h"
#include "dptrain/gpu.h"
#include "dptrain/net.h"
#include "dptrain/optim.h"
#include "dptrain/train.h"
#include "net/net_impl.h"
#include "train/train_internal.h"
#include "st_fixture.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REF_TOL 1e-5
#define GRAD_TOL 2e-5

static const char *const NAMES[] = {"proj/Weights", "proj/Bias", "rnn/InputWeights",
                                    "rnn/RecurrentWeights", "rnn/InputBias",
                                    "rnn/RecurrentBias", "fc/Weights", "fc/Bias"};
#define N_NAMES 8

static int meta_int(const dpt_st *st, const char *cs, const char *k)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, k);
    const char *v = dpt_st_meta(st, key);
    return v ? atoi(v) : 0;
}

static const char *meta_str(const dpt_st *st, const char *cs, const char *k)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, k);
    const char *v = dpt_st_meta(st, key);
    return v ? v : "";
}

typedef struct fcase {
    char name[96];
    char kind[8];
    int last, n, t, t2, f, e, h, k, stateful;
} fcase;

static void read_case(const dpt_st *st, const char *cs, fcase *c)
{
    snprintf(c->name, sizeof c->name, "%s", cs);
    snprintf(c->kind, sizeof c->kind, "%s", meta_str(st, cs, "kind"));
    c->last = strcmp(meta_str(st, cs, "out"), "last") == 0;
    c->n = meta_int(st, cs, "n"), c->t = meta_int(st, cs, "t"), c->t2 = meta_int(st, cs, "t2");
    c->f = meta_int(st, cs, "f"), c->e = meta_int(st, cs, "e"), c->h = meta_int(st, cs, "h");
    c->k = meta_int(st, cs, "k"), c->stateful = meta_int(st, cs, "stateful");
}

static void spec_of(const fcase *c, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "sequenceinput in size=%d\n"
             "fc proj outputs=%d\n"
             "%s rnn units=%d output=%s\n"
             "fc fc outputs=%d\n"
             "softmax sm\n",
             c->f, c->e, c->kind, c->h, c->last ? "last" : "sequence", c->k);
}

/* The case's network with the fixture's learnables. */
static dpt_net *case_net(const dpt_st *st, const fcase *c, int max_batch)
{
    char spec[512];
    spec_of(c, spec, sizeof spec);
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, c->name, 0, max_batch, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s: %s", c->name, dpt_last_error());
    if (s != DPT_OK)
        return NULL;
    for (int i = 0; i < N_NAMES; i++) {
        const dpt_param_info *e = dpt_net_learnable(net, (size_t)dpt_net_find_learnable(net, NAMES[i]));
        CHECK_MSG(e != NULL, "%s: no learnable %s", c->name, NAMES[i]);
        if (!e)
            continue;
        float *v = fixture_load(st, c->name, NAMES[i], e->n);
        CHECK(dpt_net_write_learnable(net, NAMES[i], v, e->n) == DPT_OK);
        free(v);
    }
    return net;
}

/* Row r (time step) of sequence b in a [n][t][w] buffer. */
static float *row(float *p, int t, int w, int b, int s) { return p + ((size_t)b * t + s) * w; }

/* src right-padded -> dst with the valid steps moved to the end (left
 * padding) or kept (right); padded rows filled with `fill`. */
static void arrange(const float *src, float *dst, int n, int t, int w, const int *len,
                    int pad_left, float fill)
{
    for (int b = 0; b < n; b++) {
        int shift = pad_left ? t - len[b] : 0;
        for (int s = 0; s < t; s++) {
            float *d = row(dst, t, w, b, s);
            int from = s - shift;
            if (from >= 0 && from < len[b])
                memcpy(d, row((float *)src, t, w, b, from), (size_t)w * sizeof *d);
            else
                for (int j = 0; j < w; j++)
                    d[j] = fill;
        }
    }
}

static void check_grads(dpt_net *net, const dpt_st *st, const fcase *c, const char *prefix,
                        const char *label)
{
    for (int i = 0; i < N_NAMES; i++) {
        long li = dpt_net_find_learnable(net, NAMES[i]);
        const dpt_param_info *e = dpt_net_learnable(net, (size_t)li);
        char key[96], lab[192];
        snprintf(key, sizeof key, "%s%s", prefix, NAMES[i]);
        float *want = fixture_load(st, c->name, key, e->n);
        snprintf(lab, sizeof lab, "%s %s", label, key);
        tu_check_close(lab, dpt_net_grads(net) + e->offset, want, e->n, GRAD_TOL);
        free(want);
    }
}

/* 1. One reference case with right (pad_left 0) or left padding. */
static void test_case(const dpt_st *st, const fcase *c, int pad_left)
{
    printf("%s, %s padding:\n", c->name, pad_left ? "left" : "right");
    dpt_net *net = case_net(st, c, c->n + 1);
    if (!net)
        return;
    const int n = c->n, t = c->t, k = c->k;
    size_t nx = (size_t)n * t * c->f, ny = c->last ? (size_t)n * k : (size_t)n * t * k;
    float *x0 = fixture_load(st, c->name, "x", nx), *lenf = fixture_load(st, c->name, "len", (size_t)n);
    float *t0 = fixture_load(st, c->name, "tgt", ny), *p0 = fixture_load(st, c->name, "p", ny);
    float *loss0 = fixture_load(st, c->name, "loss", 1);
    float *din0 = fixture_load(st, c->name, "drnn_in", (size_t)n * t * c->e);
    int len[16];
    for (int b = 0; b < n; b++)
        len[b] = (int)lenf[b];
    /* Padded steps of x hold garbage (99): masking must ignore it. */
    float *x = malloc(nx * sizeof *x), *tg = malloc(ny * sizeof *tg);
    arrange(x0, x, n, t, c->f, len, pad_left, 99.0f);
    if (c->last)
        memcpy(tg, t0, ny * sizeof *tg);
    else
        arrange(t0, tg, n, t, k, len, pad_left, 0.0f);
    CHECK(dpt_net_is_sequence(net) == 1);
    CHECK(dpt_net_output_is_sequence(net) == !c->last);
    dpt_status s = dpt_net_set_steps(net, t, len, n, pad_left);
    CHECK_MSG(s == DPT_OK, "set_steps: %s", dpt_last_error());
    CHECK(dpt_net_steps(net) == t);
    /* The step's loss: 1 / valid rows as w and scale (one worker). */
    double rows = (double)net_loss_valid_rows(net, tg, n), loss = 0;
    double inv = c->last ? 1.0 : 1.0 / rows;
    s = net_step_forward_loss(net, x, tg, n, (float)inv, inv, &loss);
    CHECK_MSG(s == DPT_OK, "forward: %s", dpt_last_error());
    if (s == DPT_OK) {
        float *got = malloc(ny * sizeof *got);
        const float *p = net->acts[net->n_layers - 1];
        /* Valid rows back to the right-padded layout; padded rows compared
         * as zeros on both sides. */
        if (c->last) {
            memcpy(got, p, ny * sizeof *got);
        } else {
            float *tmp = malloc(ny * sizeof *tmp);
            memcpy(tmp, p, ny * sizeof *tmp);
            for (int b = 0; b < n; b++) {
                int shift = pad_left ? t - len[b] : 0;
                for (int q = 0; q < t; q++) {
                    float *d = row(got, t, k, b, q);
                    if (q < len[b])
                        memcpy(d, row(tmp, t, k, b, q + shift), (size_t)k * sizeof *d);
                    else
                        memset(d, 0, (size_t)k * sizeof *d);
                }
            }
            free(tmp);
        }
        tu_check_close("softmax output", got, p0, ny, REF_TOL);
        float lf = (float)loss;
        tu_check_close("masked loss", &lf, loss0, 1, REF_TOL);
        s = net_step_backward(net);
        CHECK_MSG(s == DPT_OK, "backward: %s", dpt_last_error());
        check_grads(net, st, c, "d", "grad");
        /* The gradient at proj's output = the recurrent layer's dx: zero
         * on padded steps. */
        const float *din = net_node_grad(net, 1);
        CHECK(din != NULL);
        if (din) {
            size_t nd = (size_t)n * t * c->e;
            float *back = malloc(nd * sizeof *back);
            float pad_max = 0;
            for (int b = 0; b < n; b++) {
                int shift = pad_left ? t - len[b] : 0;
                for (int q = 0; q < t; q++) {
                    const float *sr = din + ((size_t)b * t + q) * c->e;
                    int from = q - shift;
                    if (from >= 0 && from < len[b])
                        memcpy(row(back, t, c->e, b, from), sr, (size_t)c->e * sizeof *sr);
                    else
                        for (int j = 0; j < c->e; j++)
                            pad_max = fmaxf(pad_max, fabsf(sr[j]));
                }
                for (int q = len[b]; q < t; q++)
                    memset(row(back, t, c->e, b, q), 0, (size_t)c->e * sizeof(float));
            }
            tu_check_close("input gradient of the recurrent layer", back, din0, nd, GRAD_TOL);
            CHECK_MSG(pad_max == 0.0f, "input gradient on padded steps: %g", (double)pad_max);
            free(back);
        }
        free(got);
    }
    free(x), free(tg), free(x0), free(lenf), free(t0), free(p0), free(loss0), free(din0);
    dpt_net_free(net);
}

/* 2. Two chunks, the state carried (stateful), against torch feeding the
 * final (h, c) of the first chunk into the second, detached. */
static void test_stateful(const dpt_st *st, const fcase *c)
{
    printf("%s: two chunks with carried state:\n", c->name);
    dpt_net *net = case_net(st, c, c->n);
    if (!net)
        return;
    const int n = c->n, k = c->k;
    float *x = fixture_load(st, c->name, "x", (size_t)n * c->t * c->f);
    float *x2 = fixture_load(st, c->name, "x2", (size_t)n * c->t2 * c->f);
    float *tg2 = fixture_load(st, c->name, "tgt2", (size_t)n * c->t2 * k);
    float *p2 = fixture_load(st, c->name, "p2", (size_t)n * c->t2 * k);
    float *loss2 = fixture_load(st, c->name, "loss2", 1);
    size_t cf = dpt_net_carry_floats(net);
    CHECK(cf == (size_t)c->h * (strcmp(c->kind, "lstm") == 0 ? 2 : 1));
    float *hc = fixture_load(st, c->name, "hc", (size_t)n * cf);
    float *got = calloc((size_t)n * cf, sizeof *got);
    dpt_net_set_stateful(net, 1);
    dpt_net_reset_state(net);
    const float *y;
    CHECK(dpt_net_set_steps(net, c->t, NULL, n, 0) == DPT_OK);
    CHECK(dpt_net_forward(net, x, n, DPT_MODE_PREDICT, &y) == DPT_OK);
    CHECK(dpt_net_carry_get(net, n, got) == DPT_OK);
    tu_check_close("carried state after chunk 1", got, hc, (size_t)n * cf, REF_TOL);
    /* Growing the buffers keeps the carried state. */
    {
        float *before = malloc((size_t)n * cf * sizeof *before);
        memcpy(before, got, (size_t)n * cf * sizeof *before);
        CHECK(dpt_net_set_steps(net, 50, NULL, n, 0) == DPT_OK);
        CHECK(dpt_net_carry_get(net, n, got) == DPT_OK);
        CHECK_MSG(memcmp(got, before, (size_t)n * cf * sizeof *got) == 0,
                  "growing the steps changed the carried state");
        free(before);
    }
    /* The second chunk is shorter: the buffers keep their capacity. */
    CHECK(dpt_net_set_steps(net, c->t2, NULL, n, 0) == DPT_OK);
    double loss = 0;
    double inv = 1.0 / ((double)n * c->t2);
    dpt_status s = net_step_forward_loss(net, x2, tg2, n, (float)inv, inv, &loss);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        tu_check_close("chunk 2 output", net->acts[net->n_layers - 1], p2,
                       (size_t)n * c->t2 * k, REF_TOL);
        float lf = (float)loss;
        tu_check_close("chunk 2 loss", &lf, loss2, 1, REF_TOL);
        CHECK(net_step_backward(net) == DPT_OK);
        check_grads(net, st, c, "d2", "truncated BPTT grad");
    }
    /* Set/get round trip of slots [0, n), and reset. */
    for (size_t i = 0; i < (size_t)n * cf; i++)
        got[i] = (float)i * 0.25f - 1.0f;
    CHECK(dpt_net_carry_set(net, n, got) == DPT_OK);
    float *back = calloc((size_t)n * cf, sizeof *back);
    CHECK(dpt_net_carry_get(net, n, back) == DPT_OK);
    CHECK(memcmp(back, got, (size_t)n * cf * sizeof *got) == 0);
    dpt_net_reset_state(net);
    CHECK(dpt_net_carry_get(net, n, back) == DPT_OK);
    int zero = 1;
    for (size_t i = 0; i < (size_t)n * cf; i++)
        zero &= back[i] == 0.0f;
    CHECK_MSG(zero, "reset left carried state");
    CHECK(dpt_net_carry_get(net, n + 1, back) == DPT_ERR_ARG);
    /* Reset then chunk 1 again gives chunk 1's state: stateful from zero
     * equals not stateful. */
    CHECK(dpt_net_set_steps(net, c->t, NULL, n, 0) == DPT_OK);
    CHECK(dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &y) == DPT_OK);
    CHECK(dpt_net_carry_get(net, n, back) == DPT_OK);
    tu_check_close("chunk 1 again after reset", back, hc, (size_t)n * cf, REF_TOL);
    /* Stateful off: nothing carried in or out. */
    dpt_net_set_stateful(net, 0);
    CHECK(dpt_net_set_steps(net, c->t2, NULL, n, 0) == DPT_OK);
    CHECK(dpt_net_forward(net, x2, n, DPT_MODE_PREDICT, &y) == DPT_OK);
    float *back2 = calloc((size_t)n * cf, sizeof *back2);
    CHECK(dpt_net_carry_get(net, n, back2) == DPT_OK);
    CHECK(memcmp(back, back2, (size_t)n * cf * sizeof *back) == 0);
    float e = tu_rel_err(y, p2, (size_t)n * c->t2 * k, NULL);
    CHECK_MSG(e > 1e-3, "stateful off gave the carried result (rel diff %g)", (double)e);
    free(back2), free(back), free(got), free(hc);
    free(x), free(x2), free(tg2), free(p2), free(loss2);
    dpt_net_free(net);
}

/* 3. Spec rules. */
static void expect_fail(const char *spec, const char *needle)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, "s.txt", 3, 4, 1, &net);
    const char *msg = dpt_last_error();
    CHECK_MSG(s != DPT_OK, "accepted:\n%s", spec);
    CHECK_MSG(s == DPT_OK || strstr(msg, needle), "message '%s' lacks '%s'", msg, needle);
    dpt_net_free(net);
}

static void test_spec(void)
{
    printf("spec rules:\n");
    expect_fail("sequenceinput in size=3\nconv c filter=1 filters=2\nfc f outputs=2\n",
                "s.txt:2: conv 'c' does not work on a sequence");
    expect_fail("sequenceinput in size=3\nbatchnorm bn\nfc f outputs=2\n",
                "s.txt:2: batchnorm 'bn' does not work on a sequence");
    expect_fail("sequenceinput in size=3\nmaxpool p size=1\nfc f outputs=2\n",
                "s.txt:2: maxpool 'p' does not work on a sequence");
    expect_fail("sequenceinput in size=3\nglobalavgpool g\nfc f outputs=2\n",
                "s.txt:2: globalavgpool 'g' does not work");
    expect_fail("input in size=4x4x1\nlstm l units=3\nfc f outputs=2\n",
                "s.txt:2: lstm 'l' needs a sequence");
    expect_fail("input in size=4x4x1\ngru g units=3 output=last\nfc f outputs=2\n",
                "s.txt:2: gru 'g' needs a sequence");
    expect_fail("sequenceinput in size=3\nlstm l units=0\n", "s.txt:2: lstm 'l': bad value '0'");
    expect_fail("sequenceinput in size=3\nlstm l units=x\n", "s.txt:2:");
    expect_fail("sequenceinput in size=3\nlstm l\n", "s.txt:2: lstm 'l' needs units=H");
    expect_fail("sequenceinput in size=3\ngru l units=2 output=first\n",
                "s.txt:2: gru 'l': bad value 'first' for output");
    expect_fail("sequenceinput in size=3\nlstm l units=2 bias=0\n", "s.txt:2: lstm 'l': unknown key");
    expect_fail("sequenceinput in\nlstm l units=2\n", "s.txt:1: sequenceinput 'in' needs size");
    expect_fail("sequenceinput in size=0\nlstm l units=2\n", "s.txt:1:");
    expect_fail("sequenceinput in size=3\nlstm a units=2\nlstm b units=2 output=last from=in\n"
                "add s from=a,b\n", "s.txt:4: add 's' mixes a sequence ('a') and one value");
    expect_fail("fc f outputs=2\n", "sequenceinput size=F");
    /* vocab: n_classes; the normalised spec stores the number and rebuilds
     * the same network. */
    dpt_net *net = NULL, *again = NULL;
    const char *lm = "sequenceinput in size=vocab\nlstm l units=4\ndropout d p=0.2\n"
                     "fc f outputs=vocab\nsoftmax sm\n";
    CHECK(dpt_net_from_spec(lm, "lm", 0, 2, 1, &net) != DPT_OK);
    CHECK(dpt_net_from_spec(lm, "lm", 7, 2, 1, &net) == DPT_OK);
    if (net) {
        int chw[3];
        dpt_net_input_shape(net, chw);
        CHECK(chw[0] == 7 && chw[1] == 1 && chw[2] == 1);
        CHECK(dpt_net_n_outputs(net) == 7);
        const char *spec = dpt_net_spec(net);
        CHECK_MSG(strstr(spec, "size=7") && strstr(spec, "outputs=7") &&
                  strstr(spec, "units=4 output=sequence"), "spec: %s", spec);
        CHECK(dpt_net_from_spec(spec, "again", 0, 2, 1, &again) == DPT_OK);
        if (again) {
            CHECK(strcmp(dpt_net_spec(again), spec) == 0);
            CHECK(dpt_net_hash(again) == dpt_net_hash(net));
            CHECK(dpt_net_n_learnables(again) == 6);
        }
        const dpt_param_info *e = dpt_net_learnable(net, 0);
        CHECK(e && strcmp(e->name, "l/InputWeights") == 0 && e->shape[0] == 16 && e->shape[1] == 7);
        e = dpt_net_learnable(net, 1);
        CHECK(e && strcmp(e->name, "l/RecurrentWeights") == 0 && e->shape[0] == 16 &&
              e->shape[1] == 4);
        /* PyTorch's initialisation bound 1/sqrt(H) = 0.5. */
        float mx = 0;
        for (size_t i = 0; i < 16 * 7; i++)
            mx = fmaxf(mx, fabsf(dpt_net_params(net)[i]));
        CHECK(mx <= 0.5f && mx > 0.3f);
        CHECK(dpt_net_set_steps(net, 0, NULL, 0, 0) != DPT_OK);
        CHECK(dpt_net_set_steps(net, DPT_SEQ_MAX_STEPS + 1, NULL, 0, 0) != DPT_OK);
        int bad[2] = {3, 5};
        CHECK(dpt_net_set_steps(net, 4, bad, 2, 0) == DPT_ERR_ARG);
        CHECK(dpt_net_set_steps(net, 4, bad, 3, 0) == DPT_ERR_ARG);
        CHECK(dpt_net_set_steps(net, 4, NULL, 2, 2) == DPT_ERR_ARG);
    }
    dpt_net_free(again);
    dpt_net_free(net);
    /* A network without a sequence: t must be 1. */
    net = NULL;
    CHECK(dpt_net_from_spec("input in size=2x2x1\nfc f outputs=2\n", "img", 0, 2, 1, &net) ==
          DPT_OK);
    if (net) {
        CHECK(!dpt_net_is_sequence(net) && dpt_net_steps(net) == 1);
        CHECK(dpt_net_set_steps(net, 1, NULL, 0, 0) == DPT_OK);
        CHECK(dpt_net_set_steps(net, 2, NULL, 0, 0) == DPT_ERR_ARG);
        CHECK(dpt_net_carry_floats(net) == 0);
    }
    dpt_net_free(net);
    /* The builder writes the same lines. */
    dpt_net_builder *b = NULL;
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_sequenceinput(b, "in", DPT_NET_SIZE_VOCAB);
    dpt_net_builder_add_gru(b, "g", 5, 0);
    dpt_net_builder_add_lstm(b, "l", 3, 1);
    dpt_net_builder_add_fc(b, "f", DPT_NET_OUTPUTS_CLASSES);
    dpt_net_builder_add_softmax(b, "sm");
    net = NULL;
    CHECK_MSG(dpt_net_build(b, 4, 2, 1, &net) == DPT_OK, "%s", dpt_last_error());
    if (net) {
        CHECK(dpt_net_output_is_sequence(net) == 0);
        CHECK(dpt_net_carry_floats(net) == 5 + 2 * 3);
        CHECK(dpt_net_layer_is_sequence(net, 0) && dpt_net_layer_is_sequence(net, 1));
        CHECK(!dpt_net_layer_is_sequence(net, 2) && !dpt_net_layer_is_sequence(net, 3));
        CHECK(!dpt_net_layer_is_sequence(net, 9));
        CHECK(strstr(dpt_net_spec(net), "gru        g units=5 output=sequence") != NULL);
    }
    /* sequenceinput, gru and lstm have GPU code (any build says so):
     * --device auto trains a recurrent network on the GPUs there are, and
     * on CPU workers without a notice when there are none. */
    if (net) {
        CHECK_MSG(dpt_net_gpu_supported(net) == DPT_OK, "%s", dpt_last_error());
        char notice[512];
        CHECK(dpt_train_pick_device("auto", 1, 1, net, notice, sizeof notice) == 1);
        CHECK_MSG(notice[0] == '\0', "notice: %s", notice);
        CHECK(dpt_train_pick_device("gpu", 1, 1, net, notice, sizeof notice) == 1);
        CHECK(dpt_train_pick_device("auto", 0, 1, net, notice, sizeof notice) == 0);
    }
    dpt_net_free(net);
    CHECK(dpt_net_builder_add_lstm(b, "x", 0, 0) == DPT_ERR_ARG);
    dpt_net_builder_free(b);
}

/* Model file round trip of a GRU/LSTM network. */
static void test_model_file(void)
{
    printf("model file round trip:\n");
    const char *spec = "sequenceinput in size=3\ngru g units=4\nlstm l units=5 output=last\n"
                       "fc f outputs=2\nsoftmax sm\n";
    dpt_net *net = NULL, *back = NULL;
    CHECK(dpt_net_from_spec(spec, "m", 0, 3, 5, &net) == DPT_OK);
    if (!net)
        return;
    char path[] = "/tmp/dpt_rnn_net_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    dpt_status s = dpt_net_save(net, path, NULL, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    s = dpt_net_load(path, 3, &back);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (back) {
        CHECK(dpt_net_hash(back) == dpt_net_hash(net));
        CHECK(strcmp(dpt_net_spec(back), dpt_net_spec(net)) == 0);
        float x[3 * 6 * 3];
        for (int i = 0; i < 54; i++)
            x[i] = sinf((float)i);
        const float *y1, *y2;
        float a[6];
        CHECK(dpt_net_set_steps(net, 6, NULL, 0, 0) == DPT_OK);
        CHECK(dpt_net_set_steps(back, 6, NULL, 0, 0) == DPT_OK);
        CHECK(dpt_net_forward(net, x, 3, DPT_MODE_PREDICT, &y1) == DPT_OK);
        memcpy(a, y1, sizeof a);
        CHECK(dpt_net_forward(back, x, 3, DPT_MODE_PREDICT, &y2) == DPT_OK);
        CHECK(memcmp(a, y2, sizeof a) == 0);
    }
    unlink(path);
    dpt_net_free(back);
    dpt_net_free(net);
}

/* ---- 4. the training step --------------------------------------------------------- */

#define PM 12  /* minibatch */
#define PT 9   /* steps */
#define PF 3
#define PK 4

static float PX[PM * PT * PF], PTG[PM * PT * PK], PTL[PM * PK];
static int PLEN[PM];

static void make_data(void)
{
    dpt_rng r;
    dpt_rng_seed(&r, 42, 0);
    for (int i = 0; i < PM * PT * PF; i++)
        PX[i] = dpt_rng_normal(&r);
    memset(PTG, 0, sizeof PTG);
    for (int b = 0; b < PM; b++) {
        PLEN[b] = 1 + (int)dpt_rng_below(&r, PT);
        for (int s = 0; s < PLEN[b]; s++)
            PTG[((size_t)b * PT + s) * PK + dpt_rng_below(&r, PK)] = 1.0f;
        for (int s = PLEN[b]; s < PT; s++) /* garbage on padding */
            for (int j = 0; j < PF; j++)
                PX[((size_t)b * PT + s) * PF + j] = 50.0f;
        memset(PTL + b * PK, 0, PK * sizeof(float));
        PTL[b * PK + dpt_rng_below(&r, PK)] = 1.0f;
    }
    PLEN[0] = PT; /* the longest is T */
}

typedef struct pjob {
    const char *spec;
    int last; /* targets PTL, else PTG with lengths */
    int steps;
    double loss[8];
    float *params[8], *grads[8];
    uint64_t hash[8];
} pjob;

static dpt_status pworker(dpt_comm *comm, void *arg)
{
    pjob *j = arg;
    int rank = dpt_comm_rank(comm), nw = dpt_comm_size(comm);
    int share[8], first = 0;
    dpt_batch_shares(PM, nw, share);
    for (int r = 0; r < rank; r++)
        first += share[r];
    dpt_net *net = NULL;
    dpt_optim *opt = NULL;
    dpt_status s = dpt_net_from_spec(j->spec, "p", PK, PM, 3, &net);
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.lr = 0.01f;
    if (s == DPT_OK)
        s = dpt_optim_new(DPT_OPTIM_ADAM, dpt_net_n_params(net), &oo, &opt);
    if (s == DPT_OK)
        s = dpt_net_set_steps(net, PT, PLEN + first, share[rank], 0);
    for (int step = 0; s == DPT_OK && step < j->steps; step++) {
        dpt_net_set_iteration(net, 1, step);
        const float *t = j->last ? PTL + (size_t)first * PK : PTG + (size_t)first * PT * PK;
        s = dpt_train_step_optim(net, opt, comm, PX + (size_t)first * PT * PF, t, share[rank],
                                 &j->loss[rank], NULL);
    }
    if (s == DPT_OK) {
        size_t np = dpt_net_n_params(net);
        j->params[rank] = malloc(np * sizeof(float));
        j->grads[rank] = malloc(np * sizeof(float));
        memcpy(j->params[rank], dpt_net_params(net), np * sizeof(float));
        memcpy(j->grads[rank], dpt_net_grads(net), np * sizeof(float));
        j->hash[rank] = dpt_net_hash(net);
    }
    dpt_optim_free(opt);
    dpt_net_free(net);
    return s;
}

static int prun(pjob *j, int n_workers)
{
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = n_workers;
    dpt_status s = dpt_spmd_run(&cfg, pworker, j);
    CHECK_MSG(s == DPT_OK, "N=%d: %s", n_workers, dpt_last_error());
    return s == DPT_OK ? 0 : -1;
}

static void pfree(pjob *j, int n)
{
    for (int r = 0; r < n; r++)
        free(j->params[r]), free(j->grads[r]);
}

static void test_parallel(const char *spec, int last, const char *what)
{
    dpt_net *probe = NULL;
    CHECK(dpt_net_from_spec(spec, "p", PK, 1, 3, &probe) == DPT_OK);
    size_t np = probe ? dpt_net_n_params(probe) : 0;
    dpt_net_free(probe);
    pjob one = {.spec = spec, .last = last, .steps = 3};
    if (prun(&one, 1))
        return;
    for (int nw = 2; nw <= 3; nw++) {
        pjob many = {.spec = spec, .last = last, .steps = 3};
        if (prun(&many, nw))
            continue;
        printf("%s, N=%d vs 1 (3 Adam steps):\n", what, nw);
        float l1 = (float)one.loss[0], ln = (float)many.loss[0];
        tu_check_close("loss", &ln, &l1, 1, 1e-5);
        tu_check_close("gradients", many.grads[0], one.grads[0], np, 1e-5);
        tu_check_close("updated learnables", many.params[0], one.params[0], np, 1e-5);
        for (int r = 1; r < nw; r++)
            CHECK_MSG(many.hash[r] == many.hash[0], "worker %d differs", r);
        pfree(&many, nw);
    }
    pfree(&one, 1);
}

/* Stateful streams across workers (invariant 8 for language models):
 * each worker owns a fixed share of the B streams and carries their state
 * in slots [0, share); 3 consecutive chunks on N = 2, 3 workers give the
 * learnables and carried state of one worker holding all B streams. */
enum { LB = 6, LT = 5, LC = 3, LV = 4 };
static float LX[LB * LC * LT * LV], LY[LB * LC * LT * LV];

typedef struct ljob {
    float *params[4];
    float *carry; /* [LB][carry floats], each worker writes its streams' rows */
    size_t cf;
    double loss[4];
} ljob;

static dpt_status lworker(dpt_comm *comm, void *arg)
{
    ljob *j = arg;
    int rank = dpt_comm_rank(comm), nw = dpt_comm_size(comm);
    int share[4], first = 0;
    dpt_batch_shares(LB, nw, share);
    for (int r = 0; r < rank; r++)
        first += share[r];
    const int m = share[rank];
    dpt_net *net = NULL;
    dpt_optim *opt = NULL;
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.lr = 0.05f;
    dpt_status s = dpt_net_from_spec("sequenceinput in size=vocab\nlstm l units=5\n"
                                     "dropout d p=0.2\nfc f outputs=vocab\nsoftmax sm\n",
                                     "lm", LV, m, 8, &net);
    if (s == DPT_OK)
        s = dpt_optim_new(DPT_OPTIM_SGDM, dpt_net_n_params(net), &oo, &opt);
    float *x = malloc((size_t)m * LT * LV * sizeof *x), *t = malloc((size_t)m * LT * LV * sizeof *t);
    if (s == DPT_OK) {
        dpt_net_set_stateful(net, 1);
        dpt_net_reset_state(net);
        s = dpt_net_set_steps(net, LT, NULL, m, 0);
    }
    for (int c = 0; s == DPT_OK && c < LC; c++) {
        for (int i = 0; i < m; i++) {
            size_t from = (((size_t)(first + i) * LC + c) * LT) * LV;
            memcpy(x + (size_t)i * LT * LV, LX + from, LT * LV * sizeof *x);
            memcpy(t + (size_t)i * LT * LV, LY + from, LT * LV * sizeof *t);
        }
        dpt_net_set_iteration(net, 0, c);
        s = dpt_train_step_optim(net, opt, comm, x, t, m, &j->loss[rank], NULL);
    }
    if (s == DPT_OK) {
        size_t np = dpt_net_n_params(net);
        j->params[rank] = malloc(np * sizeof(float));
        memcpy(j->params[rank], dpt_net_params(net), np * sizeof(float));
        s = dpt_net_carry_get(net, m, j->carry + (size_t)first * j->cf);
    }
    free(x), free(t);
    dpt_optim_free(opt);
    dpt_net_free(net);
    return s;
}

static void test_stateful_workers(void)
{
    dpt_rng r;
    dpt_rng_seed(&r, 77, 0);
    /* One-hot characters; the target of each step is the next one. */
    for (int b = 0; b < LB; b++) {
        int prev = (int)dpt_rng_below(&r, LV);
        for (int q = 0; q < LC * LT; q++) {
            int next = (int)dpt_rng_below(&r, LV);
            LX[((size_t)b * LC * LT + q) * LV + prev] = 1.0f;
            LY[((size_t)b * LC * LT + q) * LV + next] = 1.0f;
            prev = next;
        }
    }
    size_t cf = 10, np = 0;
    ljob one = {.cf = cf};
    one.carry = calloc(LB * cf, sizeof(float));
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = 1;
    dpt_status s = dpt_spmd_run(&cfg, lworker, &one);
    CHECK_MSG(s == DPT_OK, "N=1: %s", dpt_last_error());
    {
        dpt_net *probe = NULL;
        if (dpt_net_from_spec("sequenceinput in size=4\nlstm l units=5\nfc f outputs=4\n",
                              "p", 0, 1, 0, &probe) == DPT_OK)
            np = dpt_net_n_params(probe);
        dpt_net_free(probe);
    }
    float cmax = 0;
    for (size_t i = 0; i < LB * cf; i++)
        cmax = fmaxf(cmax, fabsf(one.carry[i]));
    CHECK_MSG(cmax > 0.01f, "no state carried (max %g)", (double)cmax);
    for (int nw = 2; s == DPT_OK && nw <= 3; nw++) {
        ljob many = {.cf = cf};
        many.carry = calloc(LB * cf, sizeof(float));
        cfg.n_workers = nw;
        dpt_status sm = dpt_spmd_run(&cfg, lworker, &many);
        CHECK_MSG(sm == DPT_OK, "N=%d: %s", nw, dpt_last_error());
        if (sm == DPT_OK) {
            printf("stateful language model, %d chunks, N=%d vs 1:\n", LC, nw);
            float l1 = (float)one.loss[0], ln = (float)many.loss[0];
            tu_check_close("loss of the last chunk", &ln, &l1, 1, 1e-5);
            tu_check_close("learnables", many.params[0], one.params[0], np, 1e-5);
            tu_check_close("carried state of every stream", many.carry, one.carry, LB * cf, 1e-5);
            for (int w = 1; w < nw; w++)
                CHECK(memcmp(many.params[w], many.params[0], np * sizeof(float)) == 0);
        }
        for (int w = 0; w < nw; w++)
            free(many.params[w]);
        free(many.carry);
    }
    free(one.params[0]);
    free(one.carry);
}

/* The masked loss: the same minibatch with 4 more padded steps (garbage
 * inputs, zero targets) trains exactly as without them. */
static void test_padding_step(void)
{
    printf("masked loss of the training step, extra padding:\n");
    const char *spec = "sequenceinput in size=3\nlstm l units=6\ndropout d p=0.3\n"
                       "fc f outputs=4\nsoftmax sm\n";
    enum { T2 = PT + 4 };
    static float x2[PM * T2 * PF], t2[PM * T2 * PK];
    for (int b = 0; b < PM; b++)
        for (int s = 0; s < T2; s++) {
            for (int j = 0; j < PF; j++)
                x2[((size_t)b * T2 + s) * PF + j] =
                    s < PT ? PX[((size_t)b * PT + s) * PF + j] : -7.0f;
            for (int j = 0; j < PK; j++)
                t2[((size_t)b * T2 + s) * PK + j] =
                    s < PT ? PTG[((size_t)b * PT + s) * PK + j] : 0.0f;
        }
    dpt_net *a = NULL, *b = NULL;
    dpt_sgdm *oa = NULL, *ob = NULL;
    CHECK(dpt_net_from_spec(spec, "a", 0, PM, 3, &a) == DPT_OK);
    CHECK(dpt_net_from_spec(spec, "b", 0, PM, 3, &b) == DPT_OK);
    if (!a || !b)
        goto done;
    dpt_sgdm_new(dpt_net_n_params(a), 0.1f, 0.9f, 0, &oa);
    dpt_sgdm_new(dpt_net_n_params(b), 0.1f, 0.9f, 0, &ob);
    CHECK(dpt_net_set_steps(a, PT, PLEN, PM, 0) == DPT_OK);
    CHECK(dpt_net_set_steps(b, T2, PLEN, PM, 0) == DPT_OK);
    for (int step = 0; step < 2; step++) {
        double la = 0, lb = 0;
        dpt_net_set_iteration(a, 0, step), dpt_net_set_iteration(b, 0, step);
        CHECK(dpt_train_step(a, oa, NULL, PX, PTG, PM, &la, NULL) == DPT_OK);
        dpt_status s = dpt_train_step(b, ob, NULL, x2, t2, PM, &lb, NULL);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        float fa = (float)la, fb = (float)lb;
        tu_check_close("loss", &fb, &fa, 1, 1e-6);
        CHECK(la > 0.5 && la < 5);
    }
    tu_check_close("gradients", dpt_net_grads(b), dpt_net_grads(a), dpt_net_n_params(a), 1e-5);
    tu_check_close("learnables after 2 steps", dpt_net_params(b), dpt_net_params(a),
                   dpt_net_n_params(a), 1e-6);
    /* Every target row zero: refused. */
    {
        static float zt[PM * PT * PK];
        double l;
        CHECK(dpt_train_step(a, oa, NULL, PX, zt, PM, &l, NULL) == DPT_ERR_ARG);
    }
done:
    dpt_sgdm_free(oa), dpt_sgdm_free(ob);
    dpt_net_free(a), dpt_net_free(b);
}

/* Left against right padding through the training step, dropout on the
 * sequence included (its masks are keyed from each observation's first
 * valid step): the same loss and update. */
static void test_left_right_step(void)
{
    printf("training step, left against right padding (dropout on the sequence):\n");
    const char *spec = "sequenceinput in size=3\ndropout d0 p=0.2\ngru g units=5\n"
                       "dropout d p=0.4\nfc f outputs=4\nsoftmax sm\n";
    static float xl[PM * PT * PF], tl[PM * PT * PK];
    arrange(PX, xl, PM, PT, PF, PLEN, 1, 33.0f);
    arrange(PTG, tl, PM, PT, PK, PLEN, 1, 0.0f);
    dpt_net *a = NULL, *b = NULL;
    dpt_sgdm *oa = NULL, *ob = NULL;
    CHECK(dpt_net_from_spec(spec, "a", 0, PM, 3, &a) == DPT_OK);
    CHECK(dpt_net_from_spec(spec, "b", 0, PM, 3, &b) == DPT_OK);
    if (a && b) {
        dpt_sgdm_new(dpt_net_n_params(a), 0.1f, 0.9f, 0, &oa);
        dpt_sgdm_new(dpt_net_n_params(b), 0.1f, 0.9f, 0, &ob);
        CHECK(dpt_net_set_steps(a, PT, PLEN, PM, 0) == DPT_OK);
        CHECK(dpt_net_set_steps(b, PT, PLEN, PM, 1) == DPT_OK);
        for (int step = 0; step < 2; step++) {
            double la = 0, lb = 0;
            dpt_net_set_iteration(a, 0, step), dpt_net_set_iteration(b, 0, step);
            CHECK(dpt_train_step(a, oa, NULL, PX, PTG, PM, &la, NULL) == DPT_OK);
            CHECK(dpt_train_step(b, ob, NULL, xl, tl, PM, &lb, NULL) == DPT_OK);
            float fa = (float)la, fb = (float)lb;
            tu_check_close("loss", &fb, &fa, 1, 1e-6);
        }
        tu_check_close("learnables after 2 steps", dpt_net_params(b), dpt_net_params(a),
                       dpt_net_n_params(a), 1e-6);
    }
    dpt_sgdm_free(oa), dpt_sgdm_free(ob);
    dpt_net_free(a), dpt_net_free(b);
}

/* The per-step types on a sequence of n x T steps compute what they
 * compute on n*T observations of one step: a graph of fc, relu, add,
 * concat, sigmoid, leakyrelu, tanh and softmax, forward and gradients. */
static void test_per_step_types(void)
{
    printf("per-step layers on a sequence = the same layers on n*T observations:\n");
    const char *body = "fc a outputs=4\nrelu r\nfc b outputs=4 from=in\nadd s from=r,b\n"
                       "concat c from=s,a\nsigmoid g\nleakyrelu lr alpha=0.1\ntanh th\n"
                       "fc o outputs=3\nsoftmax sm\n";
    char sa[512], sb[512];
    snprintf(sa, sizeof sa, "sequenceinput in size=3\n%s", body);
    snprintf(sb, sizeof sb, "input in size=1x1x3\n%s", body);
    enum { N = 3, T = 5 };
    dpt_net *a = NULL, *b = NULL;
    CHECK(dpt_net_from_spec(sa, "a", 0, N, 4, &a) == DPT_OK);
    CHECK(dpt_net_from_spec(sb, "b", 0, N * T, 4, &b) == DPT_OK);
    if (a && b) {
        CHECK(dpt_net_hash(a) == dpt_net_hash(b));
        float x[N * T * 3], tg[N * T * 3] = {0};
        for (int i = 0; i < N * T * 3; i++)
            x[i] = sinf(1.3f * (float)i);
        for (int i = 0; i < N * T; i++)
            tg[i * 3 + i % 3] = 1.0f;
        CHECK(dpt_net_set_steps(a, T, NULL, 0, 0) == DPT_OK);
        double la, lb;
        CHECK(net_step_forward_loss(a, x, tg, N, 1.0f / (N * T), 1.0 / (N * T), &la) == DPT_OK);
        CHECK(net_step_forward_loss(b, x, tg, N * T, 1.0f, 1.0, &lb) == DPT_OK);
        tu_check_close("outputs", a->acts[a->n_layers - 1], b->acts[b->n_layers - 1],
                       (size_t)N * T * 3, 1e-6);
        float fa = (float)la, fb = (float)lb;
        tu_check_close("loss", &fa, &fb, 1, 1e-6);
        CHECK(net_step_backward(a) == DPT_OK && net_step_backward(b) == DPT_OK);
        tu_check_close("gradients", dpt_net_grads(a), dpt_net_grads(b), dpt_net_n_params(a),
                       1e-5);
    }
    dpt_net_free(a), dpt_net_free(b);
}

/* 5. Buffers grow with T; the same sequences give the same outputs at any
 * capacity; finite differences through the network. */
static void test_growth_and_fd(void)
{
    printf("growing steps, finite differences:\n");
    const char *spec = "sequenceinput in size=2\ngru g units=3\nfc f outputs=3\n"
                       "tanh r\nlstm l units=4 output=last\nfc o outputs=2\nsoftmax sm\n";
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(spec, "g", 0, 2, 9, &net) == DPT_OK);
    if (!net)
        return;
    float x[2 * 40 * 2];
    for (int i = 0; i < 160; i++)
        x[i] = cosf(0.37f * (float)i);
    const float *y;
    float y3[4], y40[4];
    CHECK(dpt_net_set_steps(net, 3, NULL, 0, 0) == DPT_OK);
    /* x for T = 3: the first 3 steps of each sequence */
    float x3[2 * 3 * 2];
    for (int b = 0; b < 2; b++)
        memcpy(x3 + b * 6, x + b * 80, 6 * sizeof(float));
    CHECK(dpt_net_forward(net, x3, 2, DPT_MODE_PREDICT, &y) == DPT_OK);
    memcpy(y3, y, sizeof y3);
    /* T = 40 with lengths 3: the same outputs, after the buffers grew. */
    int len[2] = {3, 3};
    CHECK(dpt_net_set_steps(net, 40, len, 2, 0) == DPT_OK);
    CHECK(net->cap_steps == 40);
    CHECK(dpt_net_forward(net, x, 2, DPT_MODE_PREDICT, &y) == DPT_OK);
    memcpy(y40, y, sizeof y40);
    tu_check_close("T=40 with lengths 3 vs T=3", y40, y3, 4, 1e-6);
    CHECK(dpt_net_forward(net, x, 3, DPT_MODE_PREDICT, &y) == DPT_ERR_ARG);
    /* Growing past DPT_MAX_NET_MEMORY fails naming the bound; the
     * network keeps its capacity and still runs. */
    setenv("DPT_MAX_NET_MEMORY", "1M", 1);
    dpt_status sg = dpt_net_set_steps(net, 200000, NULL, 0, 0);
    CHECK(sg == DPT_ERR_SHAPE);
    CHECK_MSG(strstr(dpt_last_error(), "DPT_MAX_NET_MEMORY") &&
              strstr(dpt_last_error(), "200000 time steps"), "%s", dpt_last_error());
    unsetenv("DPT_MAX_NET_MEMORY");
    CHECK(net->cap_steps == 40 && dpt_net_steps(net) == 40);
    CHECK(dpt_net_forward(net, x, 2, DPT_MODE_PREDICT, &y) == DPT_OK);
    CHECK(memcmp(y, y40, sizeof y40) == 0);
    /* Finite differences of L = Σ -log p[target] over the learnables. */
    float tg[4] = {1, 0, 0, 1};
    CHECK(dpt_net_set_steps(net, 40, (int[]){40, 17}, 2, 0) == DPT_OK);
    double loss;
    CHECK(net_step_forward_loss(net, x, tg, 2, 1.0f, 1.0, &loss) == DPT_OK);
    CHECK(net_step_backward(net) == DPT_OK);
    size_t np = dpt_net_n_params(net);
    float *g = malloc(np * sizeof *g);
    memcpy(g, dpt_net_grads(net), np * sizeof *g);
    float gmax = 0;
    for (size_t i = 0; i < np; i++)
        gmax = fmaxf(gmax, fabsf(g[i]));
    int bad = 0;
    dpt_rng r;
    dpt_rng_seed(&r, 5, 0);
    for (int trial = 0; trial < 40; trial++) {
        size_t i = dpt_rng_below(&r, (uint32_t)np);
        float *p = dpt_net_params(net) + i, keep = *p;
        const float h = 1e-2f;
        double lp, lm;
        *p = keep + h;
        net_step_forward_loss(net, x, tg, 2, 1.0f, 1.0, &lp);
        *p = keep - h;
        net_step_forward_loss(net, x, tg, 2, 1.0f, 1.0, &lm);
        *p = keep;
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - g[i]) > 2e-2 * fmax(fabs(g[i]), 0.1 * gmax)) {
            printf("  param %zu: fd %.6g, backward %.6g\n", i, fd, (double)g[i]);
            bad++;
        }
    }
    printf("  finite differences on 40 learnables: %d off\n", bad);
    CHECK(bad == 0);
    free(g);
    dpt_net_free(net);
}

int main(void)
{
    char path[1024];
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(tu_fixture("rnn_net.safetensors", path, sizeof path), &st);
    CHECK_MSG(s == DPT_OK, "%s: %s", path, dpt_last_error());
    if (st) {
        const char *cases = dpt_st_meta(st, "cases");
        char *list = strdup(cases ? cases : ""), *save = NULL;
        for (char *cs = strtok_r(list, ",", &save); cs; cs = strtok_r(NULL, ",", &save)) {
            fcase c;
            read_case(st, cs, &c);
            if (c.stateful) {
                test_stateful(st, &c);
            } else {
                test_case(st, &c, 0);
                test_case(st, &c, 1);
            }
        }
        free(list);
        dpt_st_close(st);
    }
    test_spec();
    test_model_file();
    test_growth_and_fd();
    test_per_step_types();
    make_data();
    test_padding_step();
    test_left_right_step();
    test_stateful_workers();
    test_parallel("sequenceinput in size=3\nlstm l units=5 output=last\nfc f outputs=classes\n"
                  "softmax sm\n", 1, "LSTM classifier (output=last)");
    test_parallel("sequenceinput in size=3\ngru g units=4\ndropout d p=0.25\nlstm l units=5\n"
                  "fc f outputs=classes\nsoftmax sm\n", 0,
                  "GRU+dropout+LSTM per step, masked lengths");
    return tu_exit();
}
