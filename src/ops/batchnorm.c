/* Batch normalisation over (n, h, w) per channel, NCHW float32.
 *
 * The work is split so that a synchronised batch norm can all-reduce the
 * per-channel sums between the steps (see ops.h). All reductions use float64:
 * the variance is later formed as E[x²] - E[x]², which would cancel badly in
 * float32, and sums over a whole minibatch of feature maps are long. */
#include "ops/ops.h"

#include <stddef.h>

void dpt_bn_sums(const float *x, int n, int c, int hw, double *sum, double *sumsq)
{
    for (int ch = 0; ch < c; ch++)
        sum[ch] = sumsq[ch] = 0.0;
    for (int i = 0; i < n; i++) {
        for (int ch = 0; ch < c; ch++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            double s = 0.0, ss = 0.0;
            for (int j = 0; j < hw; j++) {
                double v = p[j];
                s += v;
                ss += v * v;
            }
            sum[ch] += s;
            sumsq[ch] += ss;
        }
    }
}

void dpt_bn_normalize(const float *x, int n, int c, int hw, const float *mean,
                      const float *invstd, const float *gamma, const float *beta, float *y)
{
    for (int i = 0; i < n; i++) {
        for (int ch = 0; ch < c; ch++) {
            const size_t base = ((size_t)i * c + ch) * hw;
            const float m = mean[ch], scale = gamma[ch] * invstd[ch], shift = beta[ch];
            for (int j = 0; j < hw; j++)
                y[base + j] = (x[base + j] - m) * scale + shift;
        }
    }
}

void dpt_bn_backward_sums(const float *x, const float *dy, int n, int c, int hw,
                          const float *mean, const float *invstd, double *sum_dy,
                          double *sum_dy_xhat)
{
    for (int ch = 0; ch < c; ch++)
        sum_dy[ch] = sum_dy_xhat[ch] = 0.0;
    for (int i = 0; i < n; i++) {
        for (int ch = 0; ch < c; ch++) {
            const size_t base = ((size_t)i * c + ch) * hw;
            const double m = mean[ch];
            double s = 0.0, sx = 0.0;
            for (int j = 0; j < hw; j++) {
                double g = dy[base + j];
                s += g;
                sx += g * ((double)x[base + j] - m);
            }
            sum_dy[ch] += s;
            /* invstd is constant over the channel: apply it once. */
            sum_dy_xhat[ch] += sx * invstd[ch];
        }
    }
}

void dpt_bn_backward_dx(const float *x, const float *dy, int n, int c, int hw,
                        const float *mean, const float *invstd, const float *gamma,
                        const double *sum_dy, const double *sum_dy_xhat, double count,
                        float *dx)
{
    for (int i = 0; i < n; i++) {
        for (int ch = 0; ch < c; ch++) {
            const size_t base = ((size_t)i * c + ch) * hw;
            const double m = mean[ch], is = invstd[ch];
            const double k = (double)gamma[ch] * is;
            const double a = sum_dy[ch] / count, b = sum_dy_xhat[ch] / count;
            /* The three terms nearly cancel when dy is mostly explained by
             * the mean and x̂ directions; keep the difference in double. */
            for (int j = 0; j < hw; j++) {
                double xhat = ((double)x[base + j] - m) * is;
                dx[base + j] = (float)(k * ((double)dy[base + j] - a - xhat * b));
            }
        }
    }
}
