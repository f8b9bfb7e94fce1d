/* dptrain optimizers over one flat parameter buffer.
 *
 * SGDM follows MATLAB's sgdmupdate: v = momentum·v − lr·(g + λ·w);
 * w = w + v. (PyTorch's SGD keeps b = momentum·b + g and w −= lr·b; for a
 * constant learning rate v = −lr·b, so both give the same weights.)
 * The optimizer owns its state buffer (velocity); dpt_sgdm_free releases
 * it. Not thread-safe; each worker owns one. */
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

/* A new optimizer for n parameters with zero velocity. */
DPT_API dpt_status dpt_sgdm_new(size_t n, float lr, float momentum, float weight_decay,
                                dpt_sgdm **out);
DPT_API void dpt_sgdm_free(dpt_sgdm *o);
/* One update of params[n] from grads[n]. */
DPT_API void dpt_sgdm_step(dpt_sgdm *o, float *params, const float *grads);

#ifdef __cplusplus
}
#endif
#endif
