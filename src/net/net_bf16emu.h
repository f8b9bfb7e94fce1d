/* A CPU emulation of DPT_PRECISION_BF16 (src/net/net_bf16emu.c), to
 * measure on a machine without a GPU what bf16 products do to training:
 * not a product feature (CPU workers train in float32), used by
 * tests/test_gpu_precision.c (its check and its --emulate mode). */
#ifndef DPT_NET_BF16EMU_H
#define DPT_NET_BF16EMU_H

#include "dptrain/net.h"

/* Round f to the nearest bfloat16, ties to even (as CUDA's
 * __float2bfloat16_rn), returned widened to float. NaN stays NaN. */
float net_bf16_round(float f);

/* From now on run net's conv and fc layers as the GPU's bf16 mode does:
 * x, the weights and dy rounded to bf16 before the float32 CPU kernel (so
 * the products are exact and the sums float32), a convolution's y, dw and
 * dx rounded to bf16 after it (cuDNN writes them in bf16); the fc's
 * results, biases and every other layer stay float32. The network must be
 * on the CPU and built without conv/fc fusion (DPT_FUSION=0 in the
 * environment at build): fused convolutions read their input through the
 * batch norm, which this cannot round. DPT_ERR_UNSUPPORTED otherwise
 * (naming the layer). Lasts until the network moves to a GPU. */
dpt_status net_emulate_bf16(dpt_net *net);

#endif
