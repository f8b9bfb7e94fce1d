/* The vector passes each instruction set provides: per-plane batch-norm
 * passes (bn_kern.h; batchnorm.c loops over images and channels) and the
 * few-output fully connected layer (fc_kern.h; linear.c). "generic" has its
 * own batch-norm passes and uses the BLAS for fc. Internal to ops/. */
#ifndef DPT_OPS_VEC_ISA_H
#define DPT_OPS_VEC_ISA_H

#include "ops/ops.h"

/* Outputs up to which fc_kern.h handles a fully connected layer. */
#define FC_MAX_OUT 16

typedef struct bn_isa {
    void (*sums)(const float *p, int n, float k, double *s1, double *s2);
    void (*normalize)(const float *x, int n, float m, float scale, float shift, float *y,
                      int relu);
    void (*backward_sums)(const float *x, const float *dy, int n, float m, float scale,
                          float shift, int relu, double *s_g, double *s_gx);
    void (*backward_dx)(const float *x, const float *dy, int n, float m, float scale, float shift,
                        int relu, float kf, float ka, float kb, float *dx);
    /* A residual add with its inputs' batch norms (c: m, scale, shift) */
    void (*add_bn)(const float *x0, const float *c0, const float *x1, const float *c1, int n,
                   int relu, float *y);
    void (*add_bn_bwd)(const float *y, const float *dy, const float *x0, float m0,
                       const float *x1, float m1, int n, int relu, float *d0, float *d1,
                       double *s);
} bn_isa;

/* forward's a: NULL, or the batch norm applied to x on the fly, and
 * backward_bn the whole backward with it (fc_kern.h); both need
 * hw % step == 0. */
typedef struct fc_isa {
    int step;
    void (*forward)(const float *x, const float *w, const float *b, float *y, int n, int in,
                    int out, const dpt_bn_apply *a, int hw);
    void (*backward_dx)(const float *dy, const float *w, float *dx, int n, int in, int out);
    void (*backward_dw)(const float *x, const float *dy, float *dw, int n, int in, int out);
    void (*backward_bn)(const float *dy, const float *w, float *dx, float *dw, int n, int in,
                        int out, const dpt_bn_apply *a, int hw, const float *x, double *xg);
} fc_isa;

#if defined(__x86_64__) || defined(__i386__)
extern const bn_isa dpt_bn_isa_avx512, dpt_bn_isa_avx2;
extern const fc_isa dpt_fc_isa_avx512, dpt_fc_isa_avx2;
#endif

/* The sets in use (kernels.c); NULL for generic. */
const bn_isa *dpt_ops_bn_isa(void);
const fc_isa *dpt_ops_fc_isa(void);

#endif
