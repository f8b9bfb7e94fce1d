/* The POINTWISE convolution algorithm (conv2d.c's table entry
 * "pointwise"): 1x1 filters, any stride and group count, no padding.
 * No im2col: with the weights W [c_out, c_in] an image's output is one
 * product over its NCHW planes, y[n] = W · x[n] [c_in, P] (one per group
 * with groups: the group's rows of W, x and y), made with
 * dptrain's own GEMM (gemm.h) over blocks of images; the input's batch
 * norm and a stride are applied while the block's operand is packed,
 * and the output's batch-norm sums, the bias and the input gradient's
 * batch-norm sums are formed block by block while the block is in cache.
 * fused = 1. Internal to ops/. */
#ifndef DPT_OPS_CONV_POINTWISE_H
#define DPT_OPS_CONV_POINTWISE_H

#include "ops/ops.h"

#include <stddef.h>

int dpt_conv_pointwise_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_pointwise_work_floats(const dpt_conv2d_desc *d);
/* Images per block for d: what work_floats sizes and both passes use. */
int dpt_conv_pointwise_block(const dpt_conv2d_desc *d);
/* The conv_algo contracts (conv_algo.h). */
void dpt_conv_pointwise_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                                const float *w, const float *b, float *y, float *work,
                                double *sum, double *sumsq);
void dpt_conv_pointwise_backward(const dpt_conv2d_desc *d, const float *x,
                                 const dpt_bn_apply *xa, const float *w, const float *dy,
                                 const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                                 float *db, float *work, double *xg);

#endif
