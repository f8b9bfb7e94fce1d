/* gplus: each worker scales its contribution by its own weight, then one
 * in-place all-reduce sums them (MATLAB's gplus(weight * x)). */
#include "dptrain/loss.h"

#include <math.h>

static int multi(const dpt_comm *comm) { return comm && dpt_comm_size(comm) > 1; }

dpt_status dpt_gplus_f64(dpt_comm *comm, double *x, size_t n, double weight)
{
    if (!x && n)
        return dpt_fail(DPT_ERR_ARG, "dpt_gplus_f64: x is NULL with n = %zu", n);
    if (!isfinite(weight))
        return dpt_fail(DPT_ERR_ARG, "dpt_gplus_f64: weight is %g", weight);
    if (weight != 1.0)
        for (size_t i = 0; i < n; i++)
            x[i] *= weight;
    return multi(comm) ? dpt_comm_allreduce_f64(comm, x, x, n) : DPT_OK;
}

dpt_status dpt_gplus_f32(dpt_comm *comm, float *buf, size_t n, double weight)
{
    if (!buf && n)
        return dpt_fail(DPT_ERR_ARG, "dpt_gplus_f32: buf is NULL with n = %zu", n);
    if (!isfinite(weight))
        return dpt_fail(DPT_ERR_ARG, "dpt_gplus_f32: weight is %g", weight);
    const float w = (float)weight;
    if (w != 1.0f)
        for (size_t i = 0; i < n; i++)
            buf[i] *= w;
    return multi(comm) ? dpt_comm_allreduce_f32(comm, buf, buf, n) : DPT_OK;
}
