/* The optimizer update's per-step scalars as the GPU reads them from a
 * device buffer (one host-to-device copy before the step), so the update's
 * launches keep the same arguments every step and a CUDA graph can hold
 * them. Plain C, any build: optim/ packs it, ops/cuda/ reads it. */
#ifndef DPT_OPS_GPU_UPDATE_H
#define DPT_OPS_GPU_UPDATE_H

enum { GPU_UPDATE_SGDM = 0, GPU_UPDATE_ADAM = 1 };

typedef struct gpu_update_scalars {
    double max_norm;  /* gradient clipping's bound; 0: no clipping */
    /* SGDM: lr, momentum, weight decay; Adam: adam_coeffs' step_size,
     * bc2_sqrt, b1, b2, c1, c2, eps, shrink, l2 (optim_impl.h). */
    float c[9];
    float unused;     /* 48 bytes */
} gpu_update_scalars;

#endif
