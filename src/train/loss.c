/* Public losses: argument checks around the kernels of ops/loss.c, with the
 * weight applied to the loss as well as to its gradient. */
#include "dptrain/loss.h"
#include "ops/ops.h"

#include <math.h>

static dpt_status check(const char *fn, const float *y, const char *y_name, const float *t, int n,
                        int k, double weight, const double *loss)
{
    if (!y)
        return dpt_fail(DPT_ERR_ARG, "%s: %s is NULL", fn, y_name);
    if (!t)
        return dpt_fail(DPT_ERR_ARG, "%s: targets is NULL", fn);
    if (!loss)
        return dpt_fail(DPT_ERR_ARG, "%s: loss is NULL", fn);
    if (n < 1 || k < 1)
        return dpt_fail(DPT_ERR_ARG, "%s: need n >= 1 rows and k >= 1 columns (got n=%d, k=%d)",
                        fn, n, k);
    if (!isfinite(weight))
        return dpt_fail(DPT_ERR_ARG, "%s: weight is %g", fn, weight);
    return DPT_OK;
}

dpt_status dpt_loss_softmax_xent(const float *probs, const float *targets, int n, int k,
                                 double weight, double *loss, float *dlogits)
{
    dpt_status s = check("dpt_loss_softmax_xent", probs, "probs", targets, n, k, weight, loss);
    if (s != DPT_OK)
        return s;
    *loss = weight * dpt_softmax_xent(probs, targets, n, k, (float)weight, dlogits);
    return DPT_OK;
}

dpt_status dpt_loss_mse(const float *y, const float *targets, int n, int k, double weight,
                        double *loss, float *dy)
{
    dpt_status s = check("dpt_loss_mse", y, "y", targets, n, k, weight, loss);
    if (s != DPT_OK)
        return s;
    *loss = weight * dpt_mse(y, targets, n, k, (float)weight, dy);
    return DPT_OK;
}
