/* The convolution algorithms behind dpt_conv2d_forward_ex /
 * dpt_conv2d_backward_ex: one entry per dpt_conv_algo in conv2d.c's table.
 * Internal to ops/ (the planner in conv_plan.c loops over the table).
 *
 * An algorithm declares its functions in its own header
 * (src/ops/conv_<name>.h) and adds one line to the table in conv2d.c. */
#ifndef DPT_OPS_CONV_ALGO_H
#define DPT_OPS_CONV_ALGO_H

#include "ops/ops.h"

#include <stddef.h>

typedef struct conv_algo {
    const char *name; /* dpt_conv_algo_name's */
    int fused; /* 1: handles xa, dya, sum/sumsq and xg itself. 0: conv2d.c
                * applies xa/dya into scratch first and computes sums/xg
                * after, and calls with xa = dya = NULL, sum = sumsq = xg = NULL */
    /* 1 when it can run d with the selected kernel set (d->algo ignored). */
    int (*supports)(const dpt_conv2d_desc *d);
    /* Scratch floats forward and backward need (the unfused copies of
     * conv2d.c are added to this, not counted here). */
    size_t (*work_floats)(const dpt_conv2d_desc *d);
    /* The contracts of dpt_conv2d_forward_ex / dpt_conv2d_backward_ex
     * (ops.h): dx may be NULL, dw overwritten, db may be NULL, work holds
     * work_floats(d) floats. Deterministic (same inputs, same bits) and
     * independent of any thread count. */
    void (*forward)(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                    const float *w, const float *b, float *y, float *work, double *sum,
                    double *sumsq);
    void (*backward)(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                     const float *w, const float *dy, const dpt_bn_apply *dya, const float *y,
                     float *dx, float *dw, float *db, float *work, double *xg);
} conv_algo;

/* The table entry of algo, or NULL when algo is AUTO, out of range or not
 * built in. */
const conv_algo *dpt_conv_algo_get(int algo);

/* What dpt_conv2d_forward_ex / dpt_conv2d_backward_ex do with the entry a,
 * the batch norm applied in scratch for an unfused one included, and the
 * scratch that takes (a's own plus, unfused, a copy of the batch's input
 * and output gradient). Public to ops/ for the tests, which run an entry
 * as unfused to check that handling. */
size_t dpt_conv_algo_work(const conv_algo *a, const dpt_conv2d_desc *d);
void dpt_conv_algo_forward(const conv_algo *a, const dpt_conv2d_desc *d, const float *x,
                           const dpt_bn_apply *xa, const float *w, const float *b, float *y,
                           float *work, double *sum, double *sumsq);
void dpt_conv_algo_backward(const conv_algo *a, const dpt_conv2d_desc *d, const float *x,
                            const dpt_bn_apply *xa, const float *w, const float *dy,
                            const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                            float *db, float *work, double *xg);

#endif
