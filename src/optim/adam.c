/* Adam and AdamW, PyTorch's torch.optim.Adam / AdamW semantics (amsgrad off),
 * in the same order of operations as its single-tensor CPU path so results
 * agree to a few float32 rounding steps. */
#include "dptrain/optim.h"
#include "optim/optim_impl.h"

#include <math.h>
#include <stdlib.h>

dpt_status dpt_adam_new(size_t n, float lr, double beta1, double beta2, float eps,
                        float weight_decay, dpt_adam **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_adam_new: out is NULL");
    *out = NULL;
    if (!(lr > 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) ||
        !(weight_decay >= 0))
        return dpt_fail(DPT_ERR_ARG, "adam: need lr > 0, 0 <= beta1 < 1, 0 <= beta2 < 1, "
                        "eps > 0, weight decay >= 0 (got %g, %g, %g, %g, %g)",
                        lr, beta1, beta2, eps, weight_decay);
    dpt_adam *o = calloc(1, sizeof *o);
    if (!o)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    o->lr = lr, o->beta1 = beta1, o->beta2 = beta2, o->eps = eps;
    o->weight_decay = weight_decay, o->n = n;
    if (n && (!(o->m = dpt_alloc(n * sizeof(float))) || !(o->v = dpt_alloc(n * sizeof(float))))) {
        dpt_adam_free(o);
        return dpt_fail(DPT_ERR_NOMEM, "adam: out of memory for 2 x %zu floats", n);
    }
    *out = o;
    return DPT_OK;
}

void dpt_adam_free(dpt_adam *o)
{
    if (!o)
        return;
    dpt_free(o->m);
    dpt_free(o->v);
    free(o);
}

adam_coeffs adam_begin_step(dpt_adam *o)
{
    o->step++;
    const double t = (double)o->step;
    const double bc1 = 1.0 - pow(o->beta1, t);
    const double bc2 = 1.0 - pow(o->beta2, t);
    adam_coeffs c;
    c.step_size = (float)(o->lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    /* As torch: the decay factors and their complements rounded to float32
     * separately (1 − 0.999f would be off by 1e-5 relative). */
    c.b1 = (float)o->beta1, c.b2 = (float)o->beta2;
    c.c1 = (float)(1.0 - o->beta1), c.c2 = (float)(1.0 - o->beta2);
    c.eps = o->eps;
    c.shrink = o->decoupled ? (float)(1.0 - (double)o->lr * o->weight_decay) : 1.0f;
    c.l2 = o->decoupled ? 0.0f : o->weight_decay;
    return c;
}

void dpt_adam_step(dpt_adam *o, float *restrict params, const float *restrict grads)
{
    const adam_coeffs c = adam_begin_step(o);
    const float step_size = c.step_size, bc2_sqrt = c.bc2_sqrt, b1 = c.b1, b2 = c.b2;
    const float c1 = c.c1, c2 = c.c2, eps = c.eps, shrink = c.shrink, l2 = c.l2;
    float *restrict m = o->m, *restrict v = o->v;
    for (size_t i = 0; i < o->n; i++) {
        float w = params[i] * shrink;
        float g = grads[i] + l2 * w;
        m[i] = b1 * m[i] + c1 * g;
        v[i] = b2 * v[i] + c2 * (g * g);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] = w - step_size * m[i] / denom;
    }
}
