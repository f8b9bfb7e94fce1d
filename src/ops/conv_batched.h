/* The BATCHED convolution algorithm (conv2d.c's table entry "batched"):
 * im2col over a block of nb images at once into col [K, nb·P], one GEMM
 * per block and group with dptrain's own GEMM (gemm.h), so the layers with
 * small output planes (P = 64 or 16 pixels deep in a network) still get
 * products wide enough for the register tiles. Any stride, padding,
 * dilation and group count; fused = 0 (conv2d.c applies a batch norm
 * first). Internal to ops/. */
#ifndef DPT_OPS_CONV_BATCHED_H
#define DPT_OPS_CONV_BATCHED_H

#include "ops/ops.h"

#include <stddef.h>

int dpt_conv_batched_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_batched_work_floats(const dpt_conv2d_desc *d);
/* Images per block for d: what work_floats sizes and both passes use. */
int dpt_conv_batched_block(const dpt_conv2d_desc *d);
/* The conv_algo contracts (conv_algo.h), with xa = dya = NULL and
 * sum = sumsq = xg = NULL (fused = 0). */
void dpt_conv_batched_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                              const float *w, const float *b, float *y, float *work,
                              double *sum, double *sumsq);
void dpt_conv_batched_backward(const dpt_conv2d_desc *d, const float *x,
                               const dpt_bn_apply *xa, const float *w, const float *dy,
                               const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                               float *db, float *work, double *xg);

#endif
