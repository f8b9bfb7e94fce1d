/* Private to libdptrain: the optimizer interface's internals, for the
 * training step (a dpt_optim over a caller's dpt_sgdm, without copying its
 * velocity) and for the GPU executor (the same update on device buffers). */
#ifndef DPT_OPTIM_IMPL_H
#define DPT_OPTIM_IMPL_H

#include "dptrain/optim.h"

struct dpt_optim {
    dpt_optim_kind kind;
    size_t n;
    double clip_norm;   /* 0: off */
    double last_norm;   /* norm before clipping at the last clipped update; NaN */
    long sgdm_steps;    /* SGDM's step count (Adam keeps its own, adam->step) */
    dpt_sgdm *sgdm;     /* exactly one of these two is set */
    dpt_adam *adam;
    int owned;          /* 1: sgdm/adam freed with o (0: a wrapper, optim_wrap_sgdm) */
};

/* o (caller's storage, e.g. on the stack) as a dpt_optim over s, which
 * stays the caller's: no allocation, nothing to free. Clipping off. */
void optim_wrap_sgdm(dpt_optim *o, dpt_sgdm *s);

/* Adam's per-step scalars, computed on the host exactly as dpt_adam_step
 * does (bias corrections in float64, then rounded to float32), after
 * incrementing the step count: the CPU loop and the GPU kernel use the same
 * values, so they round alike. */
typedef struct adam_coeffs {
    float step_size, bc2_sqrt, b1, b2, c1, c2, eps, shrink, l2;
} adam_coeffs;
adam_coeffs adam_begin_step(dpt_adam *o);

/* One update's scalars for the GPU (ops/gpu_update.h), with the host's
 * bookkeeping of the step done as dpt_optim_step does it (Adam's and
 * SGDM's step counts advanced; the bias corrections of the new step):
 * called once per update, before it is queued. Returns GPU_UPDATE_SGDM or
 * GPU_UPDATE_ADAM. */
#include "ops/gpu_update.h"
int optim_gpu_scalars(dpt_optim *o, gpu_update_scalars *sc);

#ifdef DPT_HAVE_CUDA
typedef struct gpu_ctx gpu_ctx;
/* One update as dpt_optim_step, on device buffers of g's device: params,
 * grads [n]; state[i] the device mirror of dpt_optim_buffer(o, i) for every
 * i < dpt_optim_n_buffers(o). Clipping (when on) measures the norm on the
 * device (float64, fixed order: the same on every worker of one device
 * kind, not bit-equal to the CPU's sum) and waits for it once. The step
 * count and last norm are kept on the host as dpt_optim_step does. Queued
 * on g's stream; the caller marks its host mirrors stale. */
dpt_status optim_gpu_step(dpt_optim *o, gpu_ctx *g, float *params, float *grads,
                          float *const *state);
/* The same update with its scalars read from the device: sc (device) holds
 * what optim_gpu_scalars packed for this step (copied there before), ss
 * (device) receives the gradients' sum of squares when clipping (the norm
 * is its square root; o->last_norm is set by the caller once it has it).
 * Nothing waits for the device: a CUDA graph can hold it. kind: what
 * optim_gpu_scalars returned; clip: sc->max_norm > 0. */
dpt_status optim_gpu_step_dev(int kind, int clip, size_t n, gpu_ctx *g, float *params,
                              float *grads, float *const *state, const gpu_update_scalars *sc,
                              double *ss);
#endif

#endif
