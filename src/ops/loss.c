/* Softmax, cross-entropy and mean squared error on [n, k] row-major rows. */
#include "ops/ops.h"

#include <float.h>
#include <math.h>

void dpt_softmax_forward(const float *logits, float *p, int n, int k)
{
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        float *pi = p + (size_t)i * k;
        /* Subtracting the row maximum keeps exp() from overflowing and puts
         * the largest term at exactly 1, so the sum is never below 1. */
        float zmax = z[0];
        for (int j = 1; j < k; j++)
            if (z[j] > zmax)
                zmax = z[j];
        double sum = 0.0;
        for (int j = 0; j < k; j++) {
            pi[j] = expf(z[j] - zmax);
            sum += pi[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < k; j++)
            pi[j] *= inv;
    }
}

double dpt_softmax_xent(const float *p, const float *t, int n, int k, float scale,
                        float *dlogits)
{
    double loss = 0.0;
    const float g = scale / (float)n;
    for (int i = 0; i < n; i++) {
        const size_t row = (size_t)i * k;
        for (int j = 0; j < k; j++) {
            double tj = t[row + j];
            /* 0·log 0 is 0; a probability that underflowed to 0 under a
             * non-zero target is floored so the loss stays finite. */
            if (tj != 0.0) {
                double pj = p[row + j] > FLT_MIN ? p[row + j] : FLT_MIN;
                loss -= tj * log(pj);
            }
            if (dlogits)
                dlogits[row + j] = (p[row + j] - t[row + j]) * g;
        }
    }
    return loss / n;
}

double dpt_mse(const float *y, const float *t, int n, int k, float scale, float *dy)
{
    double loss = 0.0;
    const float g = scale / (float)n;
    const size_t total = (size_t)n * k;
    for (size_t i = 0; i < total; i++) {
        double d = (double)y[i] - t[i];
        loss += d * d;
        if (dy)
            dy[i] = (y[i] - t[i]) * g;
    }
    return 0.5 * loss / n;
}
