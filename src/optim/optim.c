/* One interface over SGDM and Adam (dptrain/optim.h): the training step,
 * checkpoints and the GPU executor take a dpt_optim and never ask which
 * kind it is, except through the named state buffers. */
#include "optim/optim_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef DPT_HAVE_CUDA
#include "ops/cuda/gpu_ops.h"
#endif

static const char *const sgdm_buffers[] = {"Velocity"};
static const char *const adam_buffers[] = {"AverageGrad", "AverageSqGrad"};

const char *dpt_optim_kind_name(dpt_optim_kind kind)
{
    switch (kind) {
    case DPT_OPTIM_SGDM: return "sgdm";
    case DPT_OPTIM_ADAM: return "adam";
    }
    return "?";
}

dpt_status dpt_optim_kind_parse(const char *name, dpt_optim_kind *kind)
{
    if (name && !strcmp(name, "sgdm"))
        *kind = DPT_OPTIM_SGDM;
    else if (name && !strcmp(name, "adam"))
        *kind = DPT_OPTIM_ADAM;
    else
        return dpt_fail(DPT_ERR_ARG, "unknown optimizer '%.40s' (sgdm, adam)", name ? name : "");
    return DPT_OK;
}

float dpt_optim_default_lr(dpt_optim_kind kind) { return kind == DPT_OPTIM_ADAM ? 0.001f : 0.01f; }

dpt_status dpt_optim_new(dpt_optim_kind kind, size_t n, const dpt_optim_opts *opts, dpt_optim **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_optim_new: out is NULL");
    *out = NULL;
    const dpt_optim_opts def = DPT_OPTIM_OPTS_INIT;
    if (!opts)
        opts = &def;
    if (opts->version != DPT_OPTIM_OPTS_VERSION)
        return dpt_fail(DPT_ERR_ARG, "dpt_optim_new: options of version %d, this library has %d",
                        opts->version, DPT_OPTIM_OPTS_VERSION);
    if (kind != DPT_OPTIM_SGDM && kind != DPT_OPTIM_ADAM)
        return dpt_fail(DPT_ERR_ARG, "dpt_optim_new: unknown optimizer kind %d", (int)kind);
    if (!(opts->clip_norm >= 0) || !isfinite(opts->clip_norm))
        return dpt_fail(DPT_ERR_ARG, "%s: clip norm %g must be a finite number >= 0 (0: off)",
                        dpt_optim_kind_name(kind), opts->clip_norm);
    float lr = opts->lr == 0.0f ? dpt_optim_default_lr(kind) : opts->lr;
    dpt_optim *o = calloc(1, sizeof *o);
    if (!o)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    o->kind = kind, o->n = n, o->clip_norm = opts->clip_norm, o->last_norm = NAN, o->owned = 1;
    dpt_status s = kind == DPT_OPTIM_SGDM
                       ? dpt_sgdm_new(n, lr, opts->momentum, opts->weight_decay, &o->sgdm)
                       : dpt_adam_new(n, lr, opts->beta1, opts->beta2, opts->eps,
                                      opts->weight_decay, &o->adam);
    if (s != DPT_OK) {
        free(o);
        return s;
    }
    if (o->adam)
        o->adam->decoupled = opts->decoupled ? 1 : 0;
    *out = o;
    return DPT_OK;
}

void optim_wrap_sgdm(dpt_optim *o, dpt_sgdm *s)
{
    memset(o, 0, sizeof *o);
    o->kind = DPT_OPTIM_SGDM, o->n = s->n, o->last_norm = NAN, o->sgdm = s;
}

void dpt_optim_free(dpt_optim *o)
{
    if (!o)
        return;
    if (o->owned) {
        dpt_sgdm_free(o->sgdm);
        dpt_adam_free(o->adam);
    }
    free(o);
}

dpt_optim_kind dpt_optim_kind_of(const dpt_optim *o) { return o->kind; }
size_t dpt_optim_n(const dpt_optim *o) { return o->n; }

const char *dpt_optim_name(const dpt_optim *o)
{
    if (o->adam)
        return o->adam->decoupled ? "adamw" : "adam";
    return "sgdm";
}

double dpt_clip_grad_norm(float *g, size_t n, double max_norm)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)g[i] * (double)g[i];
    double norm = sqrt(ss);
    /* torch's clip_coef, applied only when it shrinks (torch multiplies by
     * the clamped 1.0 otherwise, which changes nothing). */
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const float c = (float)coef;
        for (size_t i = 0; i < n; i++)
            g[i] *= c;
    }
    return norm;
}

void dpt_optim_step(dpt_optim *o, float *params, float *grads)
{
    if (o->clip_norm > 0)
        o->last_norm = dpt_clip_grad_norm(grads, o->n, o->clip_norm);
    if (o->kind == DPT_OPTIM_ADAM) {
        dpt_adam_step(o->adam, params, grads);
    } else {
        dpt_sgdm_step(o->sgdm, params, grads);
        o->sgdm_steps++;
    }
}

void dpt_optim_set_lr(dpt_optim *o, float lr)
{
    if (o->adam)
        o->adam->lr = lr;
    else
        o->sgdm->lr = lr;
}

float dpt_optim_get_lr(const dpt_optim *o) { return o->adam ? o->adam->lr : o->sgdm->lr; }
void dpt_optim_set_clip_norm(dpt_optim *o, double clip_norm) { o->clip_norm = clip_norm; }
double dpt_optim_last_norm(const dpt_optim *o) { return o->last_norm; }
long dpt_optim_step_count(const dpt_optim *o) { return o->adam ? o->adam->step : o->sgdm_steps; }

void dpt_optim_set_step_count(dpt_optim *o, long steps)
{
    if (o->adam)
        o->adam->step = steps;
    else
        o->sgdm_steps = steps;
}

size_t dpt_optim_n_buffers(const dpt_optim *o) { return o->adam ? 2 : 1; }

const char *dpt_optim_buffer_name(const dpt_optim *o, size_t i)
{
    if (i >= dpt_optim_n_buffers(o))
        return NULL;
    return o->adam ? adam_buffers[i] : sgdm_buffers[i];
}

float *dpt_optim_buffer(dpt_optim *o, size_t i)
{
    if (i >= dpt_optim_n_buffers(o))
        return NULL;
    if (o->adam)
        return i == 0 ? o->adam->m : o->adam->v;
    return o->sgdm->velocity;
}

dpt_sgdm *dpt_optim_sgdm(dpt_optim *o) { return o ? o->sgdm : NULL; }
dpt_adam *dpt_optim_adam(dpt_optim *o) { return o ? o->adam : NULL; }

int optim_gpu_scalars(dpt_optim *o, gpu_update_scalars *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->max_norm = o->clip_norm > 0 ? o->clip_norm : 0.0;
    if (o->kind == DPT_OPTIM_ADAM) {
        const adam_coeffs c = adam_begin_step(o->adam);
        const float v[9] = {c.step_size, c.bc2_sqrt, c.b1, c.b2, c.c1, c.c2, c.eps, c.shrink, c.l2};
        memcpy(sc->c, v, sizeof v);
        return GPU_UPDATE_ADAM;
    }
    sc->c[0] = o->sgdm->lr, sc->c[1] = o->sgdm->momentum, sc->c[2] = o->sgdm->weight_decay;
    o->sgdm_steps++;
    return GPU_UPDATE_SGDM;
}

#ifdef DPT_HAVE_CUDA
dpt_status optim_gpu_step_dev(int kind, int clip, size_t n, gpu_ctx *g, float *params,
                              float *grads, float *const *state, const gpu_update_scalars *sc,
                              double *ss)
{
    dpt_status s = clip ? gpu_clip_grad_norm_dev(g, grads, n, sc, ss) : DPT_OK;
    if (s != DPT_OK)
        return s;
    return kind == GPU_UPDATE_ADAM ? gpu_adam_dev(g, params, state[0], state[1], grads, n, sc)
                                   : gpu_sgdm_dev(g, params, state[0], grads, n, sc);
}

dpt_status optim_gpu_step(dpt_optim *o, gpu_ctx *g, float *params, float *grads,
                          float *const *state)
{
    dpt_status s = DPT_OK;
    if (o->clip_norm > 0) {
        double norm = 0;
        if ((s = gpu_clip_grad_norm(g, grads, o->n, o->clip_norm, &norm)) != DPT_OK)
            return s;
        o->last_norm = norm;
    }
    if (o->kind == DPT_OPTIM_ADAM) {
        const adam_coeffs c = adam_begin_step(o->adam);
        return gpu_adam(g, params, state[0], state[1], grads, o->n, c.step_size, c.bc2_sqrt, c.b1,
                        c.b2, c.c1, c.c2, c.eps, c.shrink, c.l2);
    }
    const dpt_sgdm *m = o->sgdm;
    s = gpu_sgdm(g, params, state[0], grads, o->n, m->lr, m->momentum, m->weight_decay);
    if (s == DPT_OK)
        o->sgdm_steps++;
    return s;
}
#endif
