/* Rectified linear unit, elementwise. */
#include "ops/ops.h"

void dpt_relu_forward(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* Gated on the output: y > 0 exactly where x > 0, and the caller keeps y
 * anyway. At x = 0 the gradient is 0, as in PyTorch. */
void dpt_relu_backward(const float *y, const float *dy, float *dx, size_t n)
{
    /* Load dy unconditionally: a select, not a branch, so it vectorises
     * (a data-dependent branch here mispredicts half the time). */
    for (size_t i = 0; i < n; i++) {
        float g = dy[i];
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
}
