/* dptrain optimizers over one flat parameter buffer.
 *
 * SGDM follows MATLAB's sgdmupdate: v = momentum·v − lr·(g + λ·w);
 * w = w + v. (PyTorch's SGD keeps b = momentum·b + g and w −= lr·b; for a
 * constant learning rate v = −lr·b, so both give the same weights.)
 * Adam follows PyTorch's torch.optim.Adam / AdamW (below).
 *
 * Ownership: an optimizer owns its state buffers (velocity; Adam's moments)
 * and the _free call releases them; params and grads stay the caller's
 * (normally the network's flat buffers, dpt_net_params / dpt_net_grads).
 * Thread-safety: not thread-safe; each worker owns its optimizer. Nothing
 * here is collective: the updates are local and identical on every worker
 * because the aggregated gradients are. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include "dptrain/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpt_sgdm {
    float lr;            /* learning rate (MATLAB default 0.01) */
    float momentum;      /* 0.9 */
    float weight_decay;  /* L2 factor λ added to the gradient; 0 = off */
    size_t n;            /* parameters */
    float *velocity;     /* [n], owned, zero at start */
} dpt_sgdm;

/* A new optimizer for n parameters with zero velocity. DPT_ERR_ARG (with
 * the values in the message) unless lr > 0, 0 <= momentum < 1 and
 * weight_decay >= 0. *out is owned by the caller (dpt_sgdm_free). */
DPT_API dpt_status dpt_sgdm_new(size_t n, float lr, float momentum, float weight_decay,
                                dpt_sgdm **out);
/* Release the optimizer and its velocity. NULL does nothing. */
DPT_API void dpt_sgdm_free(dpt_sgdm *o);
/* One update of params[n] from grads[n] (n as given to dpt_sgdm_new; both
 * buffers hold n floats). In a data-parallel loop every worker calls it
 * with the same aggregated gradients, so all stay identical. */
DPT_API void dpt_sgdm_step(dpt_sgdm *o, float *params, const float *grads);

/* ---- Adam ---------------------------------------------------------------- *
 * PyTorch's torch.optim.Adam (amsgrad off), and AdamW when decoupled is 1.
 * Step t = 1, 2, ...:
 *   g  = grad + λ·w                     (Adam)
 *   g  = grad,  w = w·(1 − lr·λ)        (AdamW, decoupled = 1)
 *   m  = β1·m + (1 − β1)·g
 *   v  = β2·v + (1 − β2)·g²
 *   w  = w − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)
 * (MATLAB's adamupdate is the same update without weight decay.) The bias
 * corrections are computed in float64, the rest in float32. The fields are
 * plain data: change lr between steps for a schedule; save m, v and step
 * with a checkpoint and put them back to resume. */
typedef struct dpt_adam {
    float lr;            /* learning rate (PyTorch default 0.001) */
    double beta1, beta2; /* moment decay rates, 0.9 and 0.999 (double so that
                            1 − β2 is exact to float32 precision) */
    float eps;           /* 1e-8 */
    float weight_decay;  /* λ; 0 = off */
    int decoupled;       /* 0: λ·w added to the gradient (Adam); 1: AdamW */
    long step;           /* updates done so far (t of the last update) */
    size_t n;            /* parameters */
    float *m, *v;        /* [n] each, owned: first and second moment, zero at start */
} dpt_adam;

/* A new Adam optimizer for n parameters, moments zero, step 0, decoupled 0
 * (set o->decoupled = 1 for AdamW). DPT_ERR_ARG (with the values in the
 * message) unless lr > 0, 0 <= beta1 < 1, 0 <= beta2 < 1, eps > 0 and
 * weight_decay >= 0. *out is owned by the caller (dpt_adam_free). */
DPT_API dpt_status dpt_adam_new(size_t n, float lr, double beta1, double beta2, float eps,
                                float weight_decay, dpt_adam **out);
/* Release the optimizer and its moment buffers. NULL does nothing. */
DPT_API void dpt_adam_free(dpt_adam *o);
/* One update of params[n] from grads[n]; increments o->step first. Same
 * contract as dpt_sgdm_step. */
DPT_API void dpt_adam_step(dpt_adam *o, float *params, const float *grads);

#ifdef __cplusplus
}
#endif
#endif
