/* The layers without learnables: input, ReLU, softmax. */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdio.h>
#include <string.h>

/* ---- input: size=HxWxC (MATLAB's order); output [C, H, W] ------------------ */

static dpt_status input_create(dpt_layer *l)
{
    l->out[0] = l->out[1] = l->out[2] = 0;
    return DPT_OK;
}

static dpt_status input_set(dpt_layer *l, const char *key, const char *value)
{
    if (strcmp(key, "size") != 0)
        return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (input takes size=HxWxC)", key);
    int hwc[3];
    if (parse_dims(key, value, 3, 65536, hwc) != DPT_OK)
        return dpt_fail(DPT_ERR_FORMAT, "bad value '%.40s' for size (expected HxWxC, e.g. 28x28x1, "
                        "each at most 65536)", value);
    l->out[0] = hwc[2], l->out[1] = hwc[0], l->out[2] = hwc[1];
    return DPT_OK;
}

static dpt_status input_infer(dpt_net *net, dpt_layer *l)
{
    (void)net;
    if (l->out[0] == 0)
        return dpt_fail(DPT_ERR_FORMAT, "input '%s' needs size=HxWxC", l->name);
    memcpy(l->in, l->out, sizeof l->in);
    return DPT_OK;
}

static void input_describe(const dpt_layer *l, char *buf, size_t cap)
{
    snprintf(buf, cap, " size=%dx%dx%d", l->out[1], l->out[2], l->out[0]);
}

const layer_type dpt_layer_input = {
    .name = "input", .min_inputs = 0, .max_inputs = 0,
    .create = input_create, .set = input_set, .infer = input_infer,
    .describe = input_describe, .gpu_supports = gpu_supports_always,
};

/* ---- layers that take no keys ---------------------------------------------- */

static dpt_status no_keys(dpt_layer *l, const char *key, const char *value)
{
    (void)value;
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (%s takes no keys)", key, l->type->name);
}

static dpt_status same_shape(dpt_net *net, dpt_layer *l)
{
    (void)net;
    memcpy(l->out, l->in, sizeof l->out);
    return DPT_OK;
}

/* ---- ReLU -------------------------------------------------------------------- */

static dpt_status relu_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                               int n, dpt_mode mode)
{
    const float *x = xs[0];
    (void)net, (void)mode;
    dpt_relu_forward(x, y, (size_t)n * l->out[0] * l->out[1] * l->out[2]);
    return DPT_OK;
}

static dpt_status relu_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                                const float *y, const float *dy, float *const *dxs, int n)
{
    float *dx = dxs[0];
    (void)net, (void)xs;
    if (dx)
        dpt_relu_backward(y, dy, dx, (size_t)n * l->out[0] * l->out[1] * l->out[2]);
    return DPT_OK;
}

const layer_type dpt_layer_relu = {
    .name = "relu", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_PER_STEP,
    .set = no_keys, .infer = same_shape,
    .forward = relu_forward, .backward = relu_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(relu_gpu_forward),
    .gpu_backward = GPU_ENTRY(relu_gpu_backward),
};

/* ---- softmax over the channels of a [C,1,1] input ----------------------------- */

static dpt_status softmax_infer(dpt_net *net, dpt_layer *l)
{
    (void)net;
    if (l->in[1] != 1 || l->in[2] != 1)
        return dpt_fail(DPT_ERR_SHAPE,
                        "softmax '%s': input is %dx%dx%d; it needs a vector (put an fc layer "
                        "before it)", l->name, l->in[1], l->in[2], l->in[0]);
    memcpy(l->out, l->in, sizeof l->out);
    return DPT_OK;
}

static dpt_status softmax_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                                  int n, dpt_mode mode)
{
    const float *x = xs[0];
    (void)net, (void)mode;
    dpt_softmax_forward(x, y, n, l->out[0]);
    return DPT_OK;
}

/* The general Jacobian product dx = p ⊙ (dy − Σ dy·p), used when a custom loss
 * supplies dL/dp; cross-entropy takes the fused path and skips this layer. */
static dpt_status softmax_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                                   const float *y, const float *dy, float *const *dxs, int n)
{
    float *dx = dxs[0];
    (void)net, (void)xs;
    int k = l->out[0];
    if (!dx) /* straight after the input: no gradient wanted */
        return DPT_OK;
    for (int i = 0; i < n; i++) {
        const float *p = y + (size_t)i * k, *g = dy + (size_t)i * k;
        double dot = 0;
        for (int j = 0; j < k; j++)
            dot += (double)g[j] * p[j];
        for (int j = 0; j < k; j++)
            dx[(size_t)i * k + j] = (float)(p[j] * (g[j] - dot));
    }
    return DPT_OK;
}

const layer_type dpt_layer_softmax = {
    .name = "softmax", .min_inputs = 1, .max_inputs = 1,
    .seq_mode = DPT_SEQ_PER_STEP,
    .set = no_keys, .infer = softmax_infer,
    .forward = softmax_forward, .backward = softmax_backward,
    .gpu_supports = gpu_supports_always, .gpu_forward = GPU_ENTRY(softmax_gpu_forward),
    .gpu_backward = GPU_ENTRY(softmax_gpu_backward),
};
