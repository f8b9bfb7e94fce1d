/* dptrain losses and gplus: the pieces of a custom training loop between
 * the forward pass and the optimizer update.
 *
 * A data-parallel iteration of the MATLAB example, written with them:
 *
 *     dpt_gplus_f64(comm, &m_total, 1, 1.0);               M = Σ n_local
 *     dpt_net_forward(net, x, n_local, DPT_MODE_TRAIN, &p);
 *     dpt_loss_softmax_xent(p, t, n_local, k, 1.0, &loss, dpt_net_output_grad(net));
 *     dpt_net_backward(net, dpt_net_output_grad(net), 1);
 *     dpt_gplus_f64(comm, &loss, 1, n_local / M);          loss of the minibatch
 *     dpt_gplus_f32(comm, dpt_net_grads(net), dpt_net_n_params(net), n_local / M);
 *     dpt_net_update_state(net, comm);                     pooled batch-norm state
 *     dpt_sgdm_step(opt, dpt_net_params(net), dpt_net_grads(net));
 *
 * Losses are means over the n rows (observations) of [n, k] row-major
 * matrices, multiplied by `weight`; so are their gradients. Pass
 * weight = n_local / M to get this worker's part of the minibatch loss
 * directly (then a plain sum across workers finishes the job, as
 * dpt_train_aggregate does), or weight 1 and let gplus apply n_local / M.
 *
 * Ownership: every buffer is the caller's; nothing is allocated.
 * Thread-safety: the loss functions are pure and may run on any thread.
 * The gplus calls are collectives: every worker of comm calls them, in the
 * same order, with the same n. */
#ifndef DPTRAIN_LOSS_H
#define DPTRAIN_LOSS_H

#include "dptrain/comm.h"
#include "dptrain/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- losses ----------------------------------------------------------------- */

/* Cross-entropy between the softmax output of a network, probs [n, k] (rows
 * summing to 1: the output of a net whose last layer is softmax), and
 * targets [n, k] (one-hot or soft rows summing to 1, as dpt_batch.y):
 *   *loss      = weight · (1/n) Σ_i Σ_j −t_ij · log p_ij
 *   dlogits    = weight · (p − t) / n          [n, k]
 * dlogits is the gradient with respect to the softmax *input* (the fused
 * softmax–cross-entropy gradient): pass it to dpt_net_backward(net,
 * dlogits, 1). It may be NULL (loss only) and may be the network's
 * dpt_net_output_grad buffer. A probability that underflowed to 0 under a
 * non-zero target counts as FLT_MIN, so the loss stays finite. Same values
 * as PyTorch's F.cross_entropy(logits, t) (mean reduction) times weight.
 * DPT_ERR_ARG (message names the argument) for NULL probs, targets or loss,
 * n < 1, k < 1, or a non-finite weight. */
DPT_API dpt_status dpt_loss_softmax_xent(const float *probs, const float *targets, int n, int k,
                                         double weight, double *loss, float *dlogits);

/* Half mean squared error, MATLAB's `mse` convention, between y [n, k] and
 * targets [n, k]:
 *   *loss = weight · (1/(2n)) Σ_i Σ_j (y_ij − t_ij)²
 *   dy    = weight · (y − t) / n               [n, k]
 * (PyTorch's MSELoss(reduction="mean") is this times 2/k.) dy is the
 * gradient with respect to the network output: pass it to
 * dpt_net_backward(net, dy, 0). It may be NULL. Errors as
 * dpt_loss_softmax_xent. */
DPT_API dpt_status dpt_loss_mse(const float *y, const float *targets, int n, int k, double weight,
                                double *loss, float *dy);

/* ---- gplus: weighted sums across workers --------------------------------- */

/* Collective (when comm has more than one worker). MATLAB's
 * gplus(weight · x): every worker's x[0..n) is multiplied by its own
 * weight, the products are summed across workers in rank order, and every
 * worker receives the sum in x (in place). With weight = n_local / M this
 * turns per-worker means into the mean of the whole minibatch; with weight
 * 1 it is a plain sum (e.g. M = Σ n_local, or counts of correct answers).
 * The sum is deterministic for a fixed worker count (see comm.h). With comm
 * NULL or of size 1, x is just multiplied by weight.
 * DPT_ERR_ARG for x NULL with n > 0 or a non-finite weight (not
 * collective then: the call does not synchronise); a failed collective
 * returns its status (DPT_ERR_COMM, DPT_ERR_TIMEOUT) and x is undefined. */
DPT_API dpt_status dpt_gplus_f64(dpt_comm *comm, double *x, size_t n, double weight);

/* Collective. dpt_gplus_f64 for float32 buffers, such as the flat gradient
 * buffer: buf[i] = Σ_j weight_j · buf_j[i], the product rounded to float32
 * before the sum. */
DPT_API dpt_status dpt_gplus_f32(dpt_comm *comm, float *buf, size_t n, double weight);

#ifdef __cplusplus
}
#endif
#endif
