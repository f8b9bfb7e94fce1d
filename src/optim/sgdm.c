/* SGD with momentum, MATLAB's sgdmupdate semantics. */
#include "dptrain/optim.h"

#include <stdlib.h>

dpt_status dpt_sgdm_new(size_t n, float lr, float momentum, float weight_decay, dpt_sgdm **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_sgdm_new: out is NULL");
    *out = NULL;
    if (!(lr > 0) || !(momentum >= 0 && momentum < 1) || !(weight_decay >= 0))
        return dpt_fail(DPT_ERR_ARG, "sgdm: need lr > 0, 0 <= momentum < 1, weight decay >= 0 "
                        "(got %g, %g, %g)", lr, momentum, weight_decay);
    dpt_sgdm *o = calloc(1, sizeof *o);
    if (!o)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    o->lr = lr, o->momentum = momentum, o->weight_decay = weight_decay, o->n = n;
    if (n && !(o->velocity = dpt_alloc(n * sizeof(float)))) {
        free(o);
        return dpt_fail(DPT_ERR_NOMEM, "sgdm: out of memory for %zu floats", n);
    }
    *out = o;
    return DPT_OK;
}

void dpt_sgdm_free(dpt_sgdm *o)
{
    if (!o)
        return;
    dpt_free(o->velocity);
    free(o);
}

void dpt_sgdm_step(dpt_sgdm *o, float *restrict params, const float *restrict grads)
{
    float *restrict v = o->velocity;
    const float lr = o->lr, mu = o->momentum, wd = o->weight_decay;
    for (size_t i = 0; i < o->n; i++) {
        v[i] = mu * v[i] - lr * (grads[i] + wd * params[i]);
        params[i] += v[i];
    }
}
