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

/* ---- one interface over every optimizer ---------------------------------- *
 * A dpt_optim is an SGDM or Adam optimizer behind one set of calls, so a
 * training loop, a checkpoint and the GPU path handle any kind alike. Its
 * state is a list of named float buffers of n each (SGDM: "Velocity"; Adam:
 * "AverageGrad" and "AverageSqGrad", MATLAB's names) plus a step count:
 * what a checkpoint saves and a resumed run puts back. */
typedef enum dpt_optim_kind {
    DPT_OPTIM_SGDM = 0, /* dpt_sgdm_step */
    DPT_OPTIM_ADAM = 1, /* dpt_adam_step (AdamW with decoupled = 1) */
} dpt_optim_kind;

typedef struct dpt_optim dpt_optim;

/* Hyper-parameters of every kind; each kind reads its own. */
typedef struct dpt_optim_opts {
    int version;          /* DPT_OPTIM_OPTS_VERSION */
    float lr;             /* learning rate; 0: the kind's default, 0.01 for SGDM
                             and 0.001 for Adam (MATLAB's trainingOptions) */
    float momentum;       /* SGDM: 0.9 */
    double beta1, beta2;  /* Adam: 0.9, 0.999 */
    float eps;            /* Adam: 1e-8 */
    float weight_decay;   /* both: λ, 0 = off */
    int decoupled;        /* Adam: 1 = AdamW */
    double clip_norm;     /* > 0: before each update, scale the gradient so its
                             global L2 norm is at most this (PyTorch's
                             clip_grad_norm_); 0: off */
} dpt_optim_opts;

#define DPT_OPTIM_OPTS_VERSION 1
#define DPT_OPTIM_OPTS_INIT {DPT_OPTIM_OPTS_VERSION, 0.0f, 0.9f, 0.9, 0.999, 1e-8f, 0.0f, 0, 0.0}

/* "sgdm" or "adam"; "?" for a value outside the enum. */
DPT_API const char *dpt_optim_kind_name(dpt_optim_kind kind);
/* The kind named "sgdm" or "adam"; DPT_ERR_ARG naming the text otherwise. */
DPT_API dpt_status dpt_optim_kind_parse(const char *name, dpt_optim_kind *kind);
/* The learning rate used when opts->lr is 0: 0.01 (SGDM), 0.001 (Adam). */
DPT_API float dpt_optim_default_lr(dpt_optim_kind kind);

/* A new optimizer of `kind` for n parameters, state zero, step count 0.
 * opts NULL means DPT_OPTIM_OPTS_INIT. DPT_ERR_ARG, naming the values, for
 * an unknown kind or version or a value out of range (as dpt_sgdm_new and
 * dpt_adam_new; clip_norm >= 0). *out owned by the caller (dpt_optim_free). */
DPT_API dpt_status dpt_optim_new(dpt_optim_kind kind, size_t n, const dpt_optim_opts *opts,
                                 dpt_optim **out);
/* Release the optimizer and its state. NULL does nothing. */
DPT_API void dpt_optim_free(dpt_optim *o);

/* The kind o was made with. */
DPT_API dpt_optim_kind dpt_optim_kind_of(const dpt_optim *o);
/* "sgdm", "adam", or "adamw" for Adam with decoupled weight decay: the name
 * a checkpoint records, and must match to be resumed. */
DPT_API const char *dpt_optim_name(const dpt_optim *o);
/* Parameters it updates (n of dpt_optim_new). */
DPT_API size_t dpt_optim_n(const dpt_optim *o);

/* One update of params[n] from grads[n]. With clip_norm > 0 the gradient's
 * global L2 norm is computed in float64 over the whole buffer and, when it
 * exceeds clip_norm, grads is scaled IN PLACE by clip_norm / (norm + 1e-6)
 * first (as torch.nn.utils.clip_grad_norm_), so call it after the
 * gradients are aggregated: every worker then clips alike. Increments the
 * step count. Same contract as dpt_sgdm_step otherwise. */
DPT_API void dpt_optim_step(dpt_optim *o, float *params, float *grads);

/* The learning rate of the next update; a schedule sets it before each. */
DPT_API void dpt_optim_set_lr(dpt_optim *o, float lr);
/* The learning rate the next update uses. */
DPT_API float dpt_optim_get_lr(const dpt_optim *o);
/* Set the gradient clipping threshold (0: off), as opts->clip_norm. */
DPT_API void dpt_optim_set_clip_norm(dpt_optim *o, double clip_norm);
/* The gradient norm measured at the last update with clipping on (before
 * clipping); NaN before any such update. */
DPT_API double dpt_optim_last_norm(const dpt_optim *o);

/* Updates done so far (Adam: t of the last update, which its bias
 * corrections use). A resumed run sets it from the checkpoint. */
DPT_API long dpt_optim_step_count(const dpt_optim *o);
/* Set the step count (restoring a checkpoint). */
DPT_API void dpt_optim_set_step_count(dpt_optim *o, long steps);

/* The state buffers: how many, the name of buffer i ("Velocity";
 * "AverageGrad", "AverageSqGrad"), and its n floats, owned by o (read them
 * to save, write them to restore). NULL for i out of range, and the buffer
 * is NULL when n is 0. */
DPT_API size_t dpt_optim_n_buffers(const dpt_optim *o);
/* Name of state buffer i. */
DPT_API const char *dpt_optim_buffer_name(const dpt_optim *o, size_t i);
/* State buffer i: n floats owned by o. */
DPT_API float *dpt_optim_buffer(dpt_optim *o, size_t i);

/* The optimizer of each kind behind o (its fields may be read and set as
 * documented above), or NULL when o is of the other kind. Owned by o. */
DPT_API dpt_sgdm *dpt_optim_sgdm(dpt_optim *o);
/* As dpt_optim_sgdm, for Adam. */
DPT_API dpt_adam *dpt_optim_adam(dpt_optim *o);

/* Scale g[n] in place so that its L2 norm (computed in float64) is at most
 * max_norm, as torch.nn.utils.clip_grad_norm_: by max_norm / (norm + 1e-6)
 * when that is below 1. Returns the norm before clipping. */
DPT_API double dpt_clip_grad_norm(float *g, size_t n, double max_norm);

/* ---- learning-rate schedules ----------------------------------------------- *
 * A schedule gives the learning rate of every iteration from the base rate,
 * the position in training and the run's length; applied per iteration, the
 * same on every worker, and a resumed run continues it exactly (it depends
 * on the position only). Text form (--lr-schedule):
 *
 *   SCHEDULE := [NAME[:KEY=VALUE]] {,KEY=VALUE}
 *   constant                      the base rate (the default)
 *   piecewise[:every=E,drop=F]    multiply by F every E epochs (MATLAB's
 *                                 "piecewise"; defaults every=10, drop=0.1;
 *                                 PyTorch's StepLR stepped per epoch)
 *   cosine[:min=X]                from the base rate down to X (default 0)
 *                                 over the run's epochs, per iteration
 *                                 (PyTorch's CosineAnnealingLR with T_max =
 *                                 epochs x iterations per epoch)
 *   warmup=W (with any of them)   multiply by (t + 1) / ceil(W x iterations
 *                                 per epoch) over the first W epochs, t = the
 *                                 iteration counted from 0 (PyTorch's
 *                                 LinearLR chained with the schedule)
 *
 * e.g. "piecewise:every=10,drop=0.1", "cosine,warmup=2",
 * "cosine:min=1e-5,warmup=0.5", "warmup=1". */
typedef enum dpt_lr_kind {
    DPT_LR_CONSTANT = 0,
    DPT_LR_PIECEWISE = 1,
    DPT_LR_COSINE = 2,
} dpt_lr_kind;

typedef struct dpt_lr_schedule {
    dpt_lr_kind kind;
    int every;        /* piecewise: epochs between drops (>= 1) */
    double drop;      /* piecewise: factor per drop, in (0, 1] */
    double min_lr;    /* cosine: the rate at the end (>= 0) */
    double warmup;    /* epochs of linear warm-up (>= 0; 0: none) */
} dpt_lr_schedule;

#define DPT_LR_SCHEDULE_INIT {DPT_LR_CONSTANT, 10, 0.1, 0.0, 0.0}

/* Parse text (NULL or "" is constant) into *s. DPT_ERR_ARG with a message
 * naming the bad part ("lr schedule 'cosine:min=x': 'min=x': ...");
 * *s is unchanged then. */
DPT_API dpt_status dpt_lr_schedule_parse(const char *text, dpt_lr_schedule *s);
/* The schedule as text that parses back to it (canonical form, every
 * number at full precision), into buf[cap]. */
DPT_API void dpt_lr_schedule_format(const dpt_lr_schedule *s, char *buf, size_t cap);
/* The learning rate of the iteration at (epoch, it) of a run of `epochs`
 * epochs of per_epoch iterations each: epoch is 1-based, it the iterations
 * of that epoch already done (0-based position). Computed in float64. */
DPT_API double dpt_lr_at(const dpt_lr_schedule *s, double base_lr, int epoch, long it,
                         long per_epoch, int epochs);

#ifdef __cplusplus
}
#endif
#endif
