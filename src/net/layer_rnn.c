/* Sequence layers: sequenceinput (the input of a recurrent network) and the
 * recurrent layers lstm and gru over the kernels of ops/rnn.c.
 *
 * A sequence is laid out [n][T][F] (observation major, T = net->steps);
 * a layer's out[] is per time step. lstm/gru take n observations (their
 * type's seq_mode is DPT_SEQ_OWN) and read T, the valid lengths and the
 * padding side from the network (dpt_net_set_steps).
 *
 * Carried state (stateful mode, language models): each layer keeps the
 * state of every stream slot [max_batch][H] (h, and c for the LSTM) in its
 * own buffer, outside the state table: it is per worker, never pooled,
 * hashed or saved in model files. A forward starts slot i from it and
 * writes the state after the last valid step back, so the next chunk
 * continues the stream; the backward stops there (truncated BPTT). */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DPT_HAVE_CUDA
#include "dptrain/gpu.h"
#include "ops/cuda/gpu_rnn.h"
#endif

/* ---- sequenceinput size=F|vocab: output [F, 1, 1] per step ----------------- */

typedef struct seqin_layer {
    int features; /* -1: vocab (net->n_classes), 0: not given */
} seqin_layer;

static dpt_status seqin_create(dpt_layer *l)
{
    l->priv = calloc(1, sizeof(seqin_layer));
    return l->priv ? DPT_OK : dpt_fail(DPT_ERR_NOMEM, "out of memory");
}

static dpt_status seqin_set(dpt_layer *l, const char *key, const char *value)
{
    seqin_layer *q = l->priv;
    if (strcmp(key, "size") != 0)
        return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (sequenceinput takes size=F|vocab)",
                        key);
    if (strcmp(value, "vocab") == 0) {
        q->features = -1;
        return DPT_OK;
    }
    return parse_int_max(key, value, 1, 1 << 20, &q->features);
}

static dpt_status seqin_infer(dpt_net *net, dpt_layer *l)
{
    const seqin_layer *q = l->priv;
    if (q->features == 0)
        return dpt_fail(DPT_ERR_FORMAT, "sequenceinput '%s' needs size=F (features per time "
                        "step) or size=vocab", l->name);
    if (q->features < 0 && net->n_classes <= 0)
        return dpt_fail(DPT_ERR_ARG, "sequenceinput '%s': size=vocab, but the vocabulary's "
                        "size is not known", l->name);
    if (q->features < 0 && net->n_classes > (1 << 20))
        return dpt_fail(DPT_ERR_ARG, "sequenceinput '%s': size=vocab of %d, more than %d",
                        l->name, net->n_classes, 1 << 20);
    l->out[0] = q->features < 0 ? net->n_classes : q->features;
    l->out[1] = l->out[2] = 1;
    memcpy(l->in, l->out, sizeof l->in);
    l->seq = 1;
    return DPT_OK;
}

static void seqin_describe(const dpt_layer *l, char *buf, size_t cap)
{
    snprintf(buf, cap, " size=%d", l->out[0]);
}

static void free_priv(dpt_layer *l) { free(l->priv); }

const layer_type dpt_layer_seqinput = {
    .name = "sequenceinput", .min_inputs = 0, .max_inputs = 0,
    .create = seqin_create, .set = seqin_set, .infer = seqin_infer,
    .describe = seqin_describe, .free = free_priv, .gpu_supports = gpu_supports_always,
};

/* ---- lstm / gru units=H [output=sequence|last] ------------------------------- */

typedef struct rnn_layer {
    dpt_rnn_kind kind;
    int units;             /* H; 0: not given */
    int last;              /* output=last: [H] per observation, not a sequence */
    int f;                 /* input features */
    const dpt_net *net;    /* for the step capacity (work_floats) */
    /* Owned, sized by setup for max_batch and the step capacity: */
    float *save;           /* dpt_rnn_save_floats: forward -> backward */
    size_t save_floats;
    float *carry;          /* [max_batch][H] h, then [max_batch][H] c (LSTM) */
    float *hn;             /* [max_batch][H] h, [max_batch][H] c after the last step */
    int carry_slots;
    /* The forward the save buffer belongs to. */
    int fwd_n, fwd_t;
} rnn_layer;

static int rnn_states(const rnn_layer *r) { return r->kind == DPT_RNN_LSTM ? 2 : 1; }

static dpt_status rnn_create_kind(dpt_layer *l, dpt_rnn_kind kind)
{
    rnn_layer *r = calloc(1, sizeof *r);
    if (!r)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    r->kind = kind;
    l->priv = r;
    return DPT_OK;
}
static dpt_status lstm_create(dpt_layer *l) { return rnn_create_kind(l, DPT_RNN_LSTM); }
static dpt_status gru_create(dpt_layer *l) { return rnn_create_kind(l, DPT_RNN_GRU); }

static dpt_status rnn_set(dpt_layer *l, const char *key, const char *value)
{
    rnn_layer *r = l->priv;
    if (strcmp(key, "units") == 0)
        return parse_int_max(key, value, 1, 1 << 16, &r->units);
    if (strcmp(key, "output") == 0) {
        if (strcmp(value, "sequence") == 0 || strcmp(value, "last") == 0) {
            r->last = value[0] == 'l';
            return DPT_OK;
        }
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%.40s' for output (sequence or last "
                        "expected)", value);
    }
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (%s takes units and output)", key,
                    l->type->name);
}

static dpt_status rnn_infer(dpt_net *net, dpt_layer *l)
{
    rnn_layer *r = l->priv;
    const dpt_layer *src = &net->layers[l->inputs[0]];
    if (r->units == 0)
        return dpt_fail(DPT_ERR_FORMAT, "%s '%s' needs units=H", l->type->name, l->name);
    if (!l->seq)
        return dpt_fail(DPT_ERR_SHAPE, "%s '%s' needs a sequence, but its input '%s' (%s) "
                        "gives one %dx%dx%d value per observation (start the network with "
                        "'sequenceinput size=F')", l->type->name, l->name, src->name,
                        src->type->name, l->in[1], l->in[2], l->in[0]);
    r->net = net;
    r->f = l->in[0];
    const int g = dpt_rnn_gates(r->kind), h = r->units;
    /* The kernels index the weights with int. */
    if ((double)g * h * ((double)r->f + h) > 2147483647.0)
        return dpt_fail(DPT_ERR_SHAPE, "%s '%s': %d units on %d features make weights too large",
                        l->type->name, l->name, h, r->f);
    l->out[0] = h, l->out[1] = l->out[2] = 1;
    l->seq = !r->last;
    int wi[2] = {g * h, r->f}, wh[2] = {g * h, h}, gh = g * h;
    dpt_status s = net_declare(net, l, DPT_KIND_LEARN, "InputWeights", 2, wi);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_LEARN, "RecurrentWeights", 2, wh);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_LEARN, "InputBias", 1, &gh);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_LEARN, "RecurrentBias", 1, &gh);
    return s;
}

/* PyTorch's initialisation: every weight and bias uniform in ±1/sqrt(H). */
static void rnn_init(dpt_layer *l, dpt_rng *rng)
{
    const rnn_layer *r = l->priv;
    float bound = 1.0f / sqrtf((float)r->units);
    for (size_t i = 0; i < l->n_learn_values; i++)
        l->p[i] = (2.0f * dpt_rng_uniform(rng) - 1.0f) * bound;
}

void rnn_layer_conf(const dpt_layer *l, int *units, int *last)
{
    const rnn_layer *r = l->priv;
    *units = r->units, *last = r->last;
}

static dpt_rnn_desc rnn_desc(const rnn_layer *r, int n, int t)
{
    dpt_rnn_desc d;
    memset(&d, 0, sizeof d);
    d.kind = r->kind, d.n = n, d.t = t, d.f = r->f, d.h = r->units;
    return d;
}

/* The backward's scratch; with output=last the forward's per-step outputs
 * (which the kernel writes and no one reads) go there too. */
static size_t rnn_work(const dpt_layer *l, int n)
{
    const rnn_layer *r = l->priv;
    dpt_rnn_desc d = rnn_desc(r, n, r->net->cap_steps);
    size_t w = dpt_rnn_work_floats(&d), y = (size_t)n * d.t * d.h;
    return r->last && y > w ? y : w;
}

static size_t rnn_keep(const dpt_net *net, const dpt_layer *l)
{
    const rnn_layer *r = l->priv;
    dpt_rnn_desc d = rnn_desc(r, net->max_batch, net->cap_steps);
    return dpt_rnn_save_floats(&d) + 2 * (size_t)rnn_states(r) * net->max_batch * r->units;
}

/* The saved values for the step capacity; the carried state once (its
 * size does not depend on the steps, and growing keeps it). */
static dpt_status rnn_setup(dpt_net *net, dpt_layer *l)
{
    rnn_layer *r = l->priv;
    dpt_rnn_desc d = rnn_desc(r, net->max_batch, net->cap_steps);
    size_t need = dpt_rnn_save_floats(&d);
    if (need > r->save_floats) {
        dpt_free(r->save);
        r->save_floats = 0;
        if (!(r->save = dpt_alloc(need * sizeof(float))))
            return dpt_fail(DPT_ERR_NOMEM, "%s '%s': out of memory for %zu saved values",
                            l->type->name, l->name, need);
        r->save_floats = need;
    }
    r->fwd_n = 0;
    if (!r->carry) {
        size_t c = (size_t)rnn_states(r) * net->max_batch * r->units;
        r->carry = calloc(c, sizeof(float));
        r->hn = calloc(c, sizeof(float));
        if (!r->carry || !r->hn)
            return dpt_fail(DPT_ERR_NOMEM, "%s '%s': out of memory for the carried state",
                            l->type->name, l->name);
        r->carry_slots = net->max_batch;
    }
    return DPT_OK;
}

static dpt_status rnn_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                              int n, dpt_mode mode)
{
    (void)mode;
    rnn_layer *r = l->priv;
    const int t = net->steps, h = r->units;
    const size_t slots = (size_t)r->carry_slots * h;
    dpt_rnn_desc d = rnn_desc(r, n, t);
    d.pad_left = net->pad_left;
    const int g = dpt_rnn_gates(r->kind);
    const float *w_ih = l->p, *w_hh = w_ih + (size_t)g * h * r->f;
    const float *b_ih = w_hh + (size_t)g * h * h, *b_hh = b_ih + (size_t)g * h;
    const float *h0 = net->stateful ? r->carry : NULL;
    const float *c0 = net->stateful && r->kind == DPT_RNN_LSTM ? r->carry + slots : NULL;
    float *hn = r->last ? y : r->hn, *cn = r->hn + slots;
    dpt_rnn_forward(&d, xs[0], net->len, w_ih, w_hh, b_ih, b_hh, h0, c0, r->last ? net->work : y,
                    hn, r->kind == DPT_RNN_LSTM ? cn : NULL, r->save);
    r->fwd_n = n, r->fwd_t = t;
    if (net->stateful) {
        memcpy(r->carry, hn, (size_t)n * h * sizeof(float));
        if (r->kind == DPT_RNN_LSTM)
            memcpy(r->carry + slots, cn, (size_t)n * h * sizeof(float));
    }
    return DPT_OK;
}

static dpt_status rnn_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                               const float *y, const float *dy, float *const *dxs, int n)
{
    (void)y;
    rnn_layer *r = l->priv;
    const int t = net->steps, h = r->units, g = dpt_rnn_gates(r->kind);
    if (r->fwd_n != n || r->fwd_t != t)
        return dpt_fail(DPT_ERR_ARG, "%s '%s': backward without its forward (the steps changed "
                        "in between?)", l->type->name, l->name);
    dpt_rnn_desc d = rnn_desc(r, n, t);
    d.pad_left = net->pad_left;
    const float *w_ih = l->p, *w_hh = w_ih + (size_t)g * h * r->f;
    float *dw_ih = l->g, *dw_hh = dw_ih + (size_t)g * h * r->f;
    float *db_ih = dw_hh + (size_t)g * h * h, *db_hh = db_ih + (size_t)g * h;
    dpt_rnn_backward(&d, xs[0], net->len, w_ih, w_hh, r->save, r->last ? NULL : dy,
                     r->last ? dy : NULL, NULL, dxs[0], dw_ih, dw_hh, db_ih, db_hh, NULL, NULL,
                     net->work);
    return DPT_OK;
}

static void rnn_describe(const dpt_layer *l, char *buf, size_t cap)
{
    const rnn_layer *r = l->priv;
    snprintf(buf, cap, " units=%d output=%s", r->units, r->last ? "last" : "sequence");
}

/* The bias gradients are per-gate column sums, one CUDA grid row per gate
 * (at most 65535). Host code in every build (dpt_net_gpu_supported). */
static const char *rnn_gpu_supports(const dpt_layer *l)
{
    const rnn_layer *r = l->priv;
    if (dpt_rnn_gates(r->kind) * r->units > 65535)
        return "more than 65535 gates (units x 4 for lstm, x 3 for gru)";
    return NULL;
}

/* ---- the CUDA entries (ops/cuda/rnn_cuda.cu) ----------------------------------
 * The same math and masking on device pointers. The saved values, the
 * backward's scratch and the carried state live on the device (rnn_gpu),
 * the lengths too (the network's copy, uploaded by dpt_net_set_steps:
 * nothing goes to the device inside a step); the host's carried state is the device's as of the
 * last carry_copy, gpu_setup (uploads it) or gpu_release (downloads it),
 * so a stream continues across dpt_net_to_gpu / dpt_net_to_cpu. */
#ifdef DPT_HAVE_CUDA
typedef struct rnn_gpu {
    float *save;     /* gpu_rnn_save_floats for max_batch, cap_steps */
    float *work;     /* gpu_rnn_work_floats */
    float *carry;    /* [states][max_batch][H]: as rnn_layer.carry */
    float *hn;       /* [states][max_batch][H] after the last step */
    int fwd_n, fwd_t;
    int ready;       /* set up completely: carry holds the stream's state */
    dpt_status pending; /* a failure of reset/carry_copy (void hooks), for the next forward */
} rnn_gpu;

static gpu_rnn_desc rnn_gpu_desc(const rnn_layer *r, int n, int t)
{
    gpu_rnn_desc d;
    memset(&d, 0, sizeof d);
    d.lstm = r->kind == DPT_RNN_LSTM, d.n = n, d.t = t, d.f = r->f, d.h = r->units;
    return d;
}

static size_t carry_bytes(const rnn_layer *r)
{
    return (size_t)rnn_states(r) * r->carry_slots * r->units * sizeof(float);
}

static void rnn_gpu_release(dpt_layer *l)
{
    rnn_layer *r = l->priv;
    rnn_gpu *G = l->gpu_priv;
    if (!G)
        return;
    /* The stream goes on where the network goes next. */
    if (G->ready && r->carry && gpu_ctx_enter(net_gpu_ctx(r->net)) == DPT_OK)
        gpu_download(net_gpu_ctx(r->net), r->carry, G->carry, carry_bytes(r));
    gpu_mfree(G->save), gpu_mfree(G->work), gpu_mfree(G->carry), gpu_mfree(G->hn);
    free(G);
    l->gpu_priv = NULL;
}

static dpt_status rnn_gpu_setup(dpt_net *net, dpt_layer *l)
{
    rnn_layer *r = l->priv;
    rnn_gpu *G = calloc(1, sizeof *G);
    if (!G)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    l->gpu_priv = G;
    gpu_ctx *ctx = net_gpu_ctx(net);
    gpu_rnn_desc d = rnn_gpu_desc(r, net->max_batch, net->cap_steps);
    const int gh = dpt_rnn_gates(r->kind) * r->units;
    dpt_status s;
    if ((s = gpu_malloc(ctx, gpu_rnn_save_floats(&d) * sizeof(float), (void **)&G->save)) ||
        (s = gpu_malloc(ctx, gpu_rnn_work_floats(&d) * sizeof(float), (void **)&G->work)) ||
        (s = gpu_malloc(ctx, carry_bytes(r), (void **)&G->carry)) ||
        (s = gpu_malloc(ctx, carry_bytes(r), (void **)&G->hn)) ||
        /* Column sums over G·H gates, and the sequence loss's rows. */
        (s = gpu_ctx_reserve_scratch(ctx, gh, net->max_batch * net->cap_steps)) ||
        (s = gpu_upload(ctx, G->carry, r->carry, carry_bytes(r)))) {
        char msg[384];
        snprintf(msg, sizeof msg, "%s", dpt_last_error());
        return dpt_fail(s, "%s '%s': %s", l->type->name, l->name, msg);
    }
    G->ready = 1;
    char line[DPT_NAME_MAX + 64];
    snprintf(line, sizeof line, "  %s: %s, own gate kernels, cuBLAS products\n", l->name,
             l->type->name);
    if (!strstr(dpt_net_gpu_describe(net), line)) /* once, though the steps grow */
        net_gpu_note(net, "%s", line);
    return DPT_OK;
}

static dpt_status rnn_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                                  int n, dpt_mode mode)
{
    (void)mode;
    rnn_layer *r = l->priv;
    rnn_gpu *G = l->gpu_priv;
    gpu_ctx *ctx = net_gpu_ctx(net);
    dpt_status s = G->pending;
    G->pending = DPT_OK;
    if (s != DPT_OK)
        return dpt_fail(s, "%s '%s': the carried state did not reach the GPU", l->type->name,
                        l->name);
    const int h = r->units, g = dpt_rnn_gates(r->kind), lstm = r->kind == DPT_RNN_LSTM;
    const size_t slots = (size_t)r->carry_slots * h;
    gpu_rnn_desc d = rnn_gpu_desc(r, n, net->steps);
    d.pad_left = net->pad_left;
    d.len = net_gpu_lengths(net); /* on the device since dpt_net_set_steps */
    float *p, *gr, *st;
    net_gpu_views(net, l, &p, &gr, &st);
    const float *w_ih = p, *w_hh = w_ih + (size_t)g * h * r->f;
    const float *b_ih = w_hh + (size_t)g * h * h, *b_hh = b_ih + (size_t)g * h;
    const float *h0 = net->stateful ? G->carry : NULL;
    const float *c0 = net->stateful && lstm ? G->carry + slots : NULL;
    float *hn = r->last ? y : G->hn, *cn = lstm ? G->hn + slots : NULL;
    G->fwd_n = 0;
    s = gpu_rnn_forward(ctx, &d, xs[0], w_ih, w_hh, b_ih, b_hh, h0, c0, r->last ? NULL : y, hn,
                        cn, G->save);
    if (s == DPT_OK && net->stateful) {
        s = gpu_copy(ctx, G->carry, hn, (size_t)n * h * sizeof(float));
        if (s == DPT_OK && lstm)
            s = gpu_copy(ctx, G->carry + slots, cn, (size_t)n * h * sizeof(float));
    }
    if (s == DPT_OK)
        G->fwd_n = n, G->fwd_t = net->steps;
    return s;
}

static dpt_status rnn_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                                   const float *y, const float *dy, float *const *dxs, int n)
{
    (void)y;
    rnn_layer *r = l->priv;
    rnn_gpu *G = l->gpu_priv;
    const int h = r->units, g = dpt_rnn_gates(r->kind);
    if (G->fwd_n != n || G->fwd_t != net->steps)
        return dpt_fail(DPT_ERR_ARG, "%s '%s': backward without its forward (the steps changed "
                        "in between?)", l->type->name, l->name);
    gpu_rnn_desc d = rnn_gpu_desc(r, n, net->steps);
    d.pad_left = net->pad_left;
    d.len = net_gpu_lengths(net); /* set_steps in between would have cleared fwd_n */
    float *p, *gr, *st;
    net_gpu_views(net, l, &p, &gr, &st);
    const float *w_ih = p, *w_hh = w_ih + (size_t)g * h * r->f;
    float *dw_ih = gr, *dw_hh = dw_ih + (size_t)g * h * r->f;
    float *db_ih = dw_hh + (size_t)g * h * h, *db_hh = db_ih + (size_t)g * h;
    return gpu_rnn_backward(net_gpu_ctx(net), &d, xs[0], w_ih, w_hh, G->save,
                            r->last ? NULL : dy, r->last ? dy : NULL, dxs[0], dw_ih, dw_hh,
                            db_ih, db_hh, G->work);
}

/* The host carried state to (set 1) or from (set 0) the device. */
static void rnn_gpu_carry_sync(dpt_layer *l, int set)
{
    rnn_layer *r = l->priv;
    rnn_gpu *G = l->gpu_priv;
    gpu_ctx *ctx = net_gpu_ctx(r->net);
    dpt_status s = gpu_ctx_enter(ctx);
    if (s == DPT_OK)
        s = set ? gpu_upload(ctx, G->carry, r->carry, carry_bytes(r))
                : gpu_download(ctx, r->carry, G->carry, carry_bytes(r));
    if (s != DPT_OK && G->pending == DPT_OK)
        G->pending = s;
}
#endif

static void rnn_reset(dpt_layer *l)
{
    rnn_layer *r = l->priv;
    if (r->carry)
        memset(r->carry, 0, (size_t)rnn_states(r) * r->carry_slots * r->units * sizeof(float));
#ifdef DPT_HAVE_CUDA
    if (l->gpu_priv && r->carry)
        rnn_gpu_carry_sync(l, 1);
#endif
}

static size_t rnn_carry_floats(const dpt_layer *l)
{
    const rnn_layer *r = l->priv;
    return (size_t)rnn_states(r) * r->units;
}

static void rnn_carry_copy(dpt_layer *l, int n, float *buf, size_t stride, int set)
{
    rnn_layer *r = l->priv;
    const size_t h = (size_t)r->units, slots = (size_t)r->carry_slots * h;
#ifdef DPT_HAVE_CUDA
    /* The device holds the current state (all slots: a set of n writes
     * them back whole). */
    if (l->gpu_priv)
        rnn_gpu_carry_sync(l, 0);
#endif
    for (int i = 0; i < n; i++)
        for (int k = 0; k < rnn_states(r); k++) {
            float *mine = r->carry + k * slots + (size_t)i * h, *theirs = buf + i * stride + k * h;
            if (set)
                memcpy(mine, theirs, h * sizeof(float));
            else
                memcpy(theirs, mine, h * sizeof(float));
        }
#ifdef DPT_HAVE_CUDA
    if (l->gpu_priv && set)
        rnn_gpu_carry_sync(l, 1);
#endif
}

static void rnn_free(dpt_layer *l)
{
    rnn_layer *r = l->priv;
    if (r) {
        dpt_free(r->save);
        free(r->carry);
        free(r->hn);
    }
    free(r);
}

#define RNN_TYPE(tname, create_fn)                                                             \
    {                                                                                          \
        .name = tname, .min_inputs = 1, .max_inputs = 1, .seq_mode = DPT_SEQ_OWN,              \
        .create = create_fn, .set = rnn_set, .infer = rnn_infer, .init = rnn_init,             \
        .work_floats = rnn_work, .forward = rnn_forward, .backward = rnn_backward,             \
        .describe = rnn_describe, .reset = rnn_reset, .keep_floats = rnn_keep,                 \
        .setup = rnn_setup, .carry_floats = rnn_carry_floats, .carry_copy = rnn_carry_copy,    \
        .free = rnn_free, .gpu_supports = rnn_gpu_supports,                                    \
        .gpu_setup = GPU_ENTRY(rnn_gpu_setup), .gpu_release = GPU_ENTRY(rnn_gpu_release),      \
        .gpu_forward = GPU_ENTRY(rnn_gpu_forward), .gpu_backward = GPU_ENTRY(rnn_gpu_backward), \
    }

const layer_type dpt_layer_lstm = RNN_TYPE("lstm", lstm_create);
const layer_type dpt_layer_gru = RNN_TYPE("gru", gru_create);
