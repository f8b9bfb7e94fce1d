/* Elementwise activations (leaky ReLU, sigmoid, tanh) and dropout. */
#include "dptrain/core.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

void dpt_leakyrelu_forward(const float *x, float *y, size_t n, float alpha)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : x[i] * alpha;
}

/* On the input, as PyTorch: at x = 0 the slope is alpha. */
void dpt_leakyrelu_backward(const float *x, const float *dy, float *dx, size_t n, float alpha)
{
    for (size_t i = 0; i < n; i++) {
        float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : g * alpha;
    }
}

/* exp of a non-positive argument only, so neither tail overflows. */
void dpt_sigmoid_forward(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (v >= 0.0f) {
            y[i] = 1.0f / (1.0f + expf(-v));
        } else {
            float e = expf(v);
            y[i] = e / (1.0f + e);
        }
    }
}

void dpt_sigmoid_backward(const float *y, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * (1.0f - y[i]) * y[i];
}

void dpt_tanh_forward(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = tanhf(x[i]);
}

void dpt_tanh_backward(const float *y, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

void dpt_dropout_apply(const float *in, float *out, int n, size_t per, float p, uint64_t seed,
                       uint64_t epoch, uint64_t iteration, uint64_t stream, uint64_t obs0)
{
    if (p <= 0.0f) { /* nothing dropped, scale 1: the identity, bit for bit */
        if (out != in)
            memmove(out, in, (size_t)n * per * sizeof *out);
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    for (int i = 0; i < n; i++) {
        const uint64_t key = dpt_rng_key(seed, epoch, iteration, stream, obs0 + (uint64_t)i);
        const float *a = in + (size_t)i * per;
        float *b = out + (size_t)i * per;
        for (size_t j = 0; j < per; j++)
            b[j] = dpt_rng_key_uniform(key, j) < p ? 0.0f : a[j] * scale;
    }
}
