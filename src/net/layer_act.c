/* Elementwise activation layers: leakyrelu [alpha=0.01], sigmoid, tanh
 * (MATLAB's leakyReluLayer, sigmoidLayer, tanhLayer; PyTorch's LeakyReLU,
 * Sigmoid, Tanh). Output shape = input shape. */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t values(const dpt_layer *l, int n)
{
    return (size_t)n * l->out[0] * l->out[1] * l->out[2];
}

static dpt_status act_infer(dpt_net *net, dpt_layer *l)
{
    (void)net;
    memcpy(l->out, l->in, sizeof l->out);
    return DPT_OK;
}

static dpt_status no_keys(dpt_layer *l, const char *key, const char *value)
{
    (void)value;
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (%s takes no keys)", key, l->type->name);
}

/* ---- leakyrelu ----------------------------------------------------------------- */

#define LEAKY_DEFAULT 0.01f

typedef struct leaky_layer {
    float alpha;
} leaky_layer;

static dpt_status leaky_create(dpt_layer *l)
{
    leaky_layer *a = calloc(1, sizeof *a);
    if (!a)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    a->alpha = LEAKY_DEFAULT;
    l->priv = a;
    return DPT_OK;
}

static dpt_status leaky_set(dpt_layer *l, const char *key, const char *value)
{
    leaky_layer *a = l->priv;
    if (strcmp(key, "alpha") != 0)
        return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (leakyrelu takes alpha)", key);
    float v;
    dpt_status s = parse_float(key, value, &v);
    if (s != DPT_OK)
        return s;
    /* The slope for negative inputs: a leaky ReLU's is between 0 (a ReLU)
     * and 1 (the identity). */
    if (!(v >= 0.0f && v <= 1.0f))
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%s' for alpha (a number in [0, 1] expected)",
                        value);
    a->alpha = v;
    return DPT_OK;
}

static dpt_status leaky_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                                int n, dpt_mode mode)
{
    (void)net, (void)mode;
    const leaky_layer *a = l->priv;
    dpt_leakyrelu_forward(x[0], y, values(l, n), a->alpha);
    return DPT_OK;
}

static dpt_status leaky_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                 const float *y, const float *dy, float *const *dx, int n)
{
    (void)net, (void)y;
    const leaky_layer *a = l->priv;
    if (dx[0])
        dpt_leakyrelu_backward(x[0], dy, dx[0], values(l, n), a->alpha);
    return DPT_OK;
}

static void leaky_describe(const dpt_layer *l, char *buf, size_t cap)
{
    const leaky_layer *a = l->priv;
    if (a->alpha != LEAKY_DEFAULT)
        snprintf(buf, cap, " alpha=%.9g", a->alpha);
}

static void free_priv(dpt_layer *l) { free(l->priv); }

/* For the CUDA entries (layer_gpu.c). */
float leaky_layer_alpha(const dpt_layer *l) { return ((const leaky_layer *)l->priv)->alpha; }

const layer_type dpt_layer_leakyrelu = {
    .name = "leakyrelu", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_PER_STEP,
    .create = leaky_create, .set = leaky_set, .infer = act_infer,
    .forward = leaky_forward, .backward = leaky_backward, .describe = leaky_describe,
    .free = free_priv,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(leaky_gpu_forward),
    .gpu_backward = GPU_ENTRY(leaky_gpu_backward),
};

/* ---- sigmoid, tanh: the backward needs only the output ------------------------- */

static dpt_status sigmoid_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                                  int n, dpt_mode mode)
{
    (void)net, (void)mode;
    dpt_sigmoid_forward(x[0], y, values(l, n));
    return DPT_OK;
}

static dpt_status sigmoid_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                   const float *y, const float *dy, float *const *dx, int n)
{
    (void)net, (void)x;
    if (dx[0])
        dpt_sigmoid_backward(y, dy, dx[0], values(l, n));
    return DPT_OK;
}

const layer_type dpt_layer_sigmoid = {
    .name = "sigmoid", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_PER_STEP,
    .set = no_keys, .infer = act_infer,
    .forward = sigmoid_forward, .backward = sigmoid_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(sigmoid_gpu_forward),
    .gpu_backward = GPU_ENTRY(sigmoid_gpu_backward),
};

static dpt_status tanh_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                               dpt_mode mode)
{
    (void)net, (void)mode;
    dpt_tanh_forward(x[0], y, values(l, n));
    return DPT_OK;
}

static dpt_status tanh_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                                const float *dy, float *const *dx, int n)
{
    (void)net, (void)x;
    if (dx[0])
        dpt_tanh_backward(y, dy, dx[0], values(l, n));
    return DPT_OK;
}

const layer_type dpt_layer_tanh = {
    .name = "tanh", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_PER_STEP,
    .set = no_keys, .infer = act_infer,
    .forward = tanh_forward, .backward = tanh_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(tanh_gpu_forward),
    .gpu_backward = GPU_ENTRY(tanh_gpu_backward),
};
