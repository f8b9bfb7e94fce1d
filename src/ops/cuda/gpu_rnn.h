/* ops/cuda: LSTM and GRU on the GPU (rnn_cuda.cu) and the masked
 * cross-entropy of a sequence output, behind a plain C interface (no CUDA
 * header needed, as gpu_ops.h).
 *
 * The math, gate order, layouts and masking are those of ops/ops.h's
 * dpt_rnn_forward / dpt_rnn_backward (PyTorch's weights: LSTM gates i, f,
 * g, o; GRU r, z, n with n = tanh(W_in x + b_in + r·(W_hn h + b_hn))):
 * x [N][T][F], y [N][T][H], states [N][H]; a padded step (len, pad_left)
 * leaves the state unchanged, writes y = 0 and dx = 0 and ignores dy.
 * The input projection of all N·T steps is one cuBLAS product, the
 * recurrence one product per step (cuBLAS) plus one kernel for the gates;
 * the weight gradients are products over all N·T steps and the bias
 * gradients float64 column sums. Deterministic (no atomics; cuBLAS in its
 * default, deterministic mode). Every pointer is device memory of the
 * context's device; all work is queued on its compute stream. */
#ifndef DPT_GPU_RNN_H
#define DPT_GPU_RNN_H

#include <stddef.h>

#include "ops/cuda/gpu_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpu_rnn_desc {
    int lstm;       /* 1: LSTM (4 gates), 0: GRU (3 gates) */
    int n, t, f, h; /* batch N, steps T, features F, units H */
    int pad_left;   /* where the padding is (ops.h) */
    const int *len; /* device [N] valid steps, NULL: all T */
} gpu_rnn_desc;

/* Floats of the forward's saved values (gates, hidden products (GRU),
 * states before each step, cells and tanh of cells (LSTM)) and of the
 * backward's scratch (gradients of the pre-activations, dh/dc vectors). */
size_t gpu_rnn_save_floats(const gpu_rnn_desc *d);
size_t gpu_rnn_work_floats(const gpu_rnn_desc *d);

/* y [N,T,H] (may be NULL: output=last), hn, cn [N,H] (cn: LSTM only; may
 * be NULL), h0, c0 [N,H] (NULL: zeros). save: gpu_rnn_save_floats. */
dpt_status gpu_rnn_forward(gpu_ctx *g, const gpu_rnn_desc *d, const float *x, const float *w_ih,
                           const float *w_hh, const float *b_ih, const float *b_hh,
                           const float *h0, const float *c0, float *y, float *hn, float *cn,
                           float *save);
/* After gpu_rnn_forward with the same desc and save: dy [N,T,H] (NULL:
 * zero), dhn [N,H] (NULL: zero) the gradient of the final h. Overwrites
 * dw_ih, dw_hh, db_ih, db_hh and dx (NULL: not needed). work:
 * gpu_rnn_work_floats. */
dpt_status gpu_rnn_backward(gpu_ctx *g, const gpu_rnn_desc *d, const float *x,
                            const float *w_ih, const float *w_hh, const float *save,
                            const float *dy, const float *dhn, float *dx, float *dw_ih,
                            float *dw_hh, float *db_ih, float *db_hh, float *work);

/* Softmax cross-entropy of a sequence output: p, t [rows, k]; a row whose
 * target is all zero is padding (no loss, zero gradient); the others give
 * dlogits = (p − t)·w. *loss (device double) = Σ −t·log p over the valid
 * rows (p floored at FLT_MIN, as the CPU's seq_xent), summed in a fixed
 * order; NaN when a p is not finite. Needs the context's scratch for rows
 * doubles (gpu_ctx_reserve_scratch). */
dpt_status gpu_seq_xent(gpu_ctx *g, const float *p, const float *t, int rows, int k, float w,
                        float *dlogits, double *loss);

#ifdef __cplusplus
}
#endif
#endif
