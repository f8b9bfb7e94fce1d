/* dropout [p=0.5]: in a TRAIN forward each element is dropped with
 * probability p and the kept ones scaled by 1/(1-p) (inverted dropout, as
 * PyTorch's Dropout and MATLAB's dropoutLayer); in PREDICT the identity.
 *
 * The mask is not stored: it is a pure function of (net seed, epoch,
 * iteration, this layer's node index, the observation's position in the
 * global minibatch, the element) through dpt_rng_key (core.h), so the
 * backward draws it again, and N workers draw exactly what one worker on
 * the whole minibatch draws (observation i of this worker is observation
 * net->obs_offset + i of the minibatch). */
#include "dptrain/core.h"
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DROPOUT_DEFAULT 0.5f

typedef struct dropout_layer {
    float p;
    /* The key arguments of the last forward, for its backward (the net's
     * counters could move in between); train 0: that forward was the
     * identity (PREDICT, or p = 0). */
    int train;
    uint64_t seed, epoch, iteration, obs0;
} dropout_layer;

static dpt_status dropout_create(dpt_layer *l)
{
    dropout_layer *d = calloc(1, sizeof *d);
    if (!d)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    d->p = DROPOUT_DEFAULT;
    l->priv = d;
    return DPT_OK;
}

static dpt_status dropout_set(dpt_layer *l, const char *key, const char *value)
{
    dropout_layer *d = l->priv;
    if (strcmp(key, "p") != 0)
        return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (dropout takes p)", key);
    float v;
    dpt_status s = parse_float(key, value, &v);
    if (s != DPT_OK)
        return s;
    /* p = 1 would drop everything and scale by infinity. */
    if (!(v >= 0.0f && v < 1.0f))
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%s' for p (a probability in [0, 1) "
                        "expected)", value);
    d->p = v;
    return DPT_OK;
}

static dpt_status dropout_infer(dpt_net *net, dpt_layer *l)
{
    (void)net;
    memcpy(l->out, l->in, sizeof l->out);
    return DPT_OK;
}

/* Values of one observation: a sequence's T steps of F (element j =
 * t*F + f, so a step's mask does not depend on T). */
static size_t per_obs(const dpt_net *net, const dpt_layer *l)
{
    return (size_t)l->out[0] * l->out[1] * l->out[2] * (l->seq ? (size_t)net->steps : 1);
}

int dropout_layer_last(const dpt_layer *l, dropout_key *k)
{
    const dropout_layer *d = l->priv;
    *k = (dropout_key){d->p, d->seed, d->epoch, d->iteration, (uint64_t)l->index, d->obs0};
    return d->train;
}

/* The forward's bookkeeping (also for the CUDA entries, layer_gpu.c). */
int dropout_layer_begin(const dpt_net *net, dpt_layer *l, dpt_mode mode, dropout_key *k)
{
    dropout_layer *d = l->priv;
    d->train = mode == DPT_MODE_TRAIN && d->p > 0.0f;
    if (d->train) {
        d->seed = net->seed;
        d->epoch = (uint64_t)net->epoch;
        d->iteration = (uint64_t)net->iteration;
        d->obs0 = (uint64_t)net->obs_offset;
    }
    return dropout_layer_last(l, k);
}

/* A left-padded sequence (dpt_net_set_steps with pad_left and lengths):
 * observation i's elements are keyed from its first valid step, as with
 * right padding, so a mask does not depend on the side of the padding.
 * Padded steps pass through (the layers after them ignore them). */
static int left_padded(const dpt_net *net, const dpt_layer *l)
{
    return l->seq && net->pad_left && net->len;
}

static void apply_left(const dpt_net *net, const dpt_layer *l, const float *in, float *out, int n,
                       const dropout_key *k)
{
    const size_t f = (size_t)l->out[0] * l->out[1] * l->out[2], obs = f * (size_t)net->steps;
    for (int i = 0; i < n; i++) {
        const size_t pad = (size_t)(net->steps - net->len[i]) * f;
        const float *a = in + (size_t)i * obs;
        float *b = out + (size_t)i * obs;
        if (a != b)
            memmove(b, a, pad * sizeof *b);
        dpt_dropout_apply(a + pad, b + pad, 1, obs - pad, k->p, k->seed, k->epoch, k->iteration,
                          k->stream, k->obs0 + (uint64_t)i);
    }
}

static dpt_status dropout_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                                  int n, dpt_mode mode)
{
    dropout_key k;
    if (!dropout_layer_begin(net, l, mode, &k)) {
        memcpy(y, x[0], (size_t)n * per_obs(net, l) * sizeof *y);
        return DPT_OK;
    }
    if (left_padded(net, l))
        apply_left(net, l, x[0], y, n, &k);
    else
        dpt_dropout_apply(x[0], y, n, per_obs(net, l), k.p, k.seed, k.epoch, k.iteration,
                          k.stream, k.obs0);
    return DPT_OK;
}

/* The same mask on the gradient: dx = dy·1/(1-p) where kept, else 0. */
static dpt_status dropout_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                   const float *y, const float *dy, float *const *dx, int n)
{
    (void)net, (void)x, (void)y;
    const dropout_layer *d = l->priv;
    if (!dx[0])
        return DPT_OK;
    if (!d->train) {
        memmove(dx[0], dy, (size_t)n * per_obs(net, l) * sizeof *dy);
        return DPT_OK;
    }
    dropout_key k;
    dropout_layer_last(l, &k);
    if (left_padded(net, l))
        apply_left(net, l, dy, dx[0], n, &k);
    else
        dpt_dropout_apply(dy, dx[0], n, per_obs(net, l), k.p, k.seed, k.epoch, k.iteration,
                          k.stream, k.obs0);
    return DPT_OK;
}

static void dropout_describe(const dpt_layer *l, char *buf, size_t cap)
{
    const dropout_layer *d = l->priv;
    if (d->p != DROPOUT_DEFAULT)
        snprintf(buf, cap, " p=%.9g", d->p);
}

static void free_priv(dpt_layer *l) { free(l->priv); }

const layer_type dpt_layer_dropout = {
    .name = "dropout", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_OWN,
    .create = dropout_create, .set = dropout_set, .infer = dropout_infer,
    .forward = dropout_forward, .backward = dropout_backward, .describe = dropout_describe,
    .free = free_priv,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(dropout_gpu_forward),
    .gpu_backward = GPU_ENTRY(dropout_gpu_backward),
};
