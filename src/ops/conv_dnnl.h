/* The DNNL convolution algorithm: oneDNN's convolution primitives (forward
 * with bias, backward data, backward weights) behind conv2d.c's algorithm
 * table. Built only with DPT_WITH_DNNL (CMake defines DPT_HAVE_DNNL when
 * oneDNN is found); without it supports() is 0 and the rest is never called.
 *
 * Not fused (the table's fused = 0): xa, dya, sum, sumsq and xg are always
 * NULL here, conv2d.c applies the batch norm around the call.
 *
 * Primitives are created once per shape (the whole desc, batch size
 * included) and kept in a bounded process-wide cache shared by the worker
 * threads; every call runs on the calling thread alone, so results do not
 * depend on the thread count and are the same bits every run. */
#ifndef DPT_OPS_CONV_DNNL_H
#define DPT_OPS_CONV_DNNL_H

#include "ops/ops.h"

#include <stddef.h>

/* 1 when oneDNN is built in, the kernel set is not "generic" (the portable
 * reference path), and oneDNN has a non-reference implementation of all
 * three passes for d's shape (creating and caching them; 0 on any failure). */
int dpt_conv_dnnl_supports(const dpt_conv2d_desc *d);
/* Floats of work forward/backward need for d: reordered copies of the
 * operands and oneDNN's scratchpad (0 when d is not supported). */
size_t dpt_conv_dnnl_work_floats(const dpt_conv2d_desc *d);
/* The contracts of dpt_conv2d_forward_ex / dpt_conv2d_backward_ex with
 * xa = dya = NULL, sum = sumsq = xg = NULL (asserted). d must be supported. */
void dpt_conv_dnnl_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq);
void dpt_conv_dnnl_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg);
/* Layout policy for shapes looked up from now on (benchmarks, tests):
 * "plain" (NCHW/OIHW into the primitive, no reorders), "any" (oneDNN's
 * blocked layouts, reorders each call), "auto" (the measured choice per
 * shape; the default, or DPT_DNNL_LAYOUT). -1 for another name. */
int dpt_conv_dnnl_set_layout(const char *name);
/* Frees every cached primitive (also registered with atexit on first use).
 * Not to be called while another thread runs a DNNL convolution. */
void dpt_conv_dnnl_release(void);
/* Test hook: how many times the cache's lock was taken so far (a convolution
 * call through dpt_conv2d_forward_ex / backward_ex takes it once), and in
 * *refs, where d is given, the references held to d's cached entry (-1: not
 * cached). */
unsigned long long dpt_conv_dnnl_locks(const dpt_conv2d_desc *d, int *refs);

#endif
