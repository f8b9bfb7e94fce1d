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

/* dpt_mix64 (core.h), here so the per-element loop needs no call. */
static inline uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
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
    /* u(j) < p with u(j) = bits·2^-24 (bits = mix(key ^ j) >> 40, an
     * integer below 2^24) is bits < p·2^24, that is bits < ceil(p·2^24):
     * the same test as dpt_rng_key_uniform(key, j) < p, in integers (p·2^24
     * is exact in double). */
    const uint64_t drop_below = (uint64_t)ceil((double)p * 16777216.0);
    for (int i = 0; i < n; i++) {
        const uint64_t key = dpt_rng_key(seed, epoch, iteration, stream, obs0 + (uint64_t)i);
        const float *a = in + (size_t)i * per;
        float *b = out + (size_t)i * per;
        /* A mask on the bits, not a branch: the test is random, a branch
         * would mispredict about min(p, 1-p) of the time. Dropped: +0.0f. */
        for (size_t j = 0; j < per; j++) {
            const float v = a[j] * scale;
            uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            bits &= -(uint32_t)((mix64(key ^ j) >> 40) >= drop_below);
            memcpy(&b[j], &bits, sizeof bits);
        }
    }
}
