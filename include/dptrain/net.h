/* dptrain networks: a chain of named layers built from a text spec or from
 * C calls, with all learnables in one flat buffer, their gradients in a
 * second of the same layout, and batch-norm state in a third.
 *
 * Spec text: one layer per line, `<type> <name> [key=value ...]`, '#' starts
 * a comment. Types and keys:
 *   input      size=HxWxC                 (first layer, exactly one)
 *   conv       filter=K[xK2] filters=F [stride=S] [padding=P] [bias=0|1]
 *   batchnorm  [epsilon=1e-5] [decay=0.1]
 *   relu
 *   fc         outputs=N|classes          ("classes": filled in at build)
 *   softmax                               (last layer; pairs with the
 *                                          cross-entropy loss)
 *
 * Table names follow MATLAB's Learnables/State tables: conv1/Weights,
 * conv1/Bias, bn1/Offset, bn1/Scale, fc/Weights, fc/Bias; state bn1/TrainedMean,
 * bn1/TrainedVariance. Weights use PyTorch's layouts (conv [F, C, K, K2],
 * fc [N, C*H*W] over the NCHW-flattened input) so saved files load directly.
 *
 * Ownership: dpt_net_free releases the network and every buffer it hands
 * out. Pointers returned by accessors stay valid for the network's life.
 * Thread-safety: a network is used by one thread at a time; data-parallel
 * workers each own a replica. */
#ifndef DPTRAIN_NET_H
#define DPTRAIN_NET_H

#include "dptrain/comm.h"
#include "dptrain/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpt_net dpt_net;

typedef enum dpt_mode {
    DPT_MODE_PREDICT = 0, /* batch norm uses the running statistics */
    DPT_MODE_TRAIN = 1    /* batch statistics; keeps what backward needs */
} dpt_mode;

/* One entry of the learnables or state table. */
typedef struct dpt_param_info {
    const char *name;          /* "conv1/Weights" */
    const char *layer;         /* "conv1" */
    const char *param;         /* "Weights" */
    int ndim;
    int shape[DPT_MAX_DIMS];
    size_t offset;             /* first element in the flat buffer */
    size_t n;                  /* element count */
} dpt_param_info;

/* The example network of the MATLAB example, as spec text with
 * `outputs=classes` on its fully connected layer. Static string. */
DPT_API const char *dpt_net_default_spec(void);

/* Parse spec text and build the network. `source` names the text in error
 * messages ("net.txt", "<default>"). n_classes replaces `outputs=classes`
 * (0: such a spec is an error). max_batch sizes the activation buffers;
 * forward on more observations fails. Learnables are initialised from
 * `seed` (Glorot weights, zero biases, unit scales). *out owned by caller. */
DPT_API dpt_status dpt_net_from_spec(const char *text, const char *source, int n_classes,
                                     int max_batch, uint64_t seed, dpt_net **out);
/* Read a spec file and call dpt_net_from_spec. */
DPT_API dpt_status dpt_net_from_spec_file(const char *path, int n_classes, int max_batch,
                                          uint64_t seed, dpt_net **out);
DPT_API void dpt_net_free(dpt_net *net);

/* The spec text the network was built from, with classes filled in. */
DPT_API const char *dpt_net_spec(const dpt_net *net);
DPT_API int dpt_net_max_batch(const dpt_net *net);

/* ---- layers ---------------------------------------------------------------- */
DPT_API int dpt_net_n_layers(const dpt_net *net);
DPT_API const char *dpt_net_layer_name(const dpt_net *net, int i);
DPT_API const char *dpt_net_layer_type(const dpt_net *net, int i);
/* Output shape of layer i for one observation: [C, H, W] (fc: [N, 1, 1]). */
DPT_API void dpt_net_layer_shape(const dpt_net *net, int i, int chw[3]);
/* Input [C, H, W] and number of outputs of the network. */
DPT_API void dpt_net_input_shape(const dpt_net *net, int chw[3]);
DPT_API int dpt_net_n_outputs(const dpt_net *net);

/* ---- tables and flat buffers ------------------------------------------------ */
DPT_API size_t dpt_net_n_learnables(const dpt_net *net);
DPT_API const dpt_param_info *dpt_net_learnable(const dpt_net *net, size_t i);
DPT_API size_t dpt_net_n_state(const dpt_net *net);
DPT_API const dpt_param_info *dpt_net_state_info(const dpt_net *net, size_t i);
/* Index in the learnables (state) table by full name, or -1. */
DPT_API long dpt_net_find_learnable(const dpt_net *net, const char *name);
DPT_API long dpt_net_find_state(const dpt_net *net, const char *name);

/* Flat buffers: learnables and gradients hold dpt_net_n_params floats in the
 * same layout; state holds dpt_net_n_state_floats. Owned by the network. */
DPT_API size_t dpt_net_n_params(const dpt_net *net);
DPT_API float *dpt_net_params(dpt_net *net);
DPT_API float *dpt_net_grads(dpt_net *net);
DPT_API size_t dpt_net_n_state_floats(const dpt_net *net);
DPT_API float *dpt_net_state(dpt_net *net);

/* ---- compute ---------------------------------------------------------------- */

/* Forward pass on x [n, C, H, W] (n <= max_batch). *y points at the output
 * [n, outputs] inside the network (valid until the next forward). In TRAIN
 * mode batch norm normalises with the batch statistics (synchronised across
 * workers when dpt_net_set_sync_bn was given a communicator: then forward is
 * collective) and records them for dpt_net_update_state; running state is
 * not touched. A non-finite output fails with DPT_ERR_NUMERIC naming the
 * first layer whose output went non-finite. */
DPT_API dpt_status dpt_net_forward(dpt_net *net, const float *x, int n, dpt_mode mode,
                                   const float **y);

/* Backward pass after a TRAIN forward: dy [n, outputs] is the loss gradient
 * with respect to the network output, or, when dy_is_logits is 1 and the last
 * layer is softmax, with respect to the softmax input (the fused
 * softmax-cross-entropy gradient). Gradients are written (not accumulated)
 * into the gradient buffer. Collective under synchronised batch norm. */
DPT_API dpt_status dpt_net_backward(dpt_net *net, const float *dy, int dy_is_logits);

/* Synchronised batch norm: with comm non-NULL (size > 1), training-mode batch
 * statistics and their backward sums are all-reduced, so N workers compute
 * what one worker computes on the whole minibatch. NULL turns it off. */
DPT_API void dpt_net_set_sync_bn(dpt_net *net, dpt_comm *comm);

/* Update the running batch-norm state from the last TRAIN forward:
 * running = (1 - d)·running + d·batch, with the batch statistics of the whole
 * minibatch: with comm (size > 1) and local batch norm, the workers' batch
 * means and variances are pooled with weights n_local/M (DESIGN.md) before
 * the update; under synchronised batch norm or with comm NULL the batch
 * statistics are already those of the whole minibatch. The variance is made
 * unbiased (× M/(M−1)) after pooling. Collective when comm is non-NULL. */
DPT_API dpt_status dpt_net_update_state(dpt_net *net, dpt_comm *comm);

/* A network-owned buffer of max_batch × outputs floats for a loss
 * gradient: fill it and pass it to dpt_net_backward. */
DPT_API float *dpt_net_output_grad(dpt_net *net);

/* FNV-1a hash of the learnables and state bytes: equal on every worker after
 * every step (the "workers stay identical" invariant). */
DPT_API uint64_t dpt_net_hash(const dpt_net *net);

/* ---- model files (safetensors) ------------------------------------------------ */

/* A key and value of a model file's metadata. */
typedef struct dpt_kv {
    const char *key;
    const char *value;
} dpt_kv;

/* Save learnables and state as named float32 tensors (table names as keys,
 * PyTorch layouts) with the spec ("spec"), "format" and the caller's
 * metadata (e.g. "classes": a JSON array of class names) in __metadata__.
 * Atomic: the file is either the old one or the new one. */
DPT_API dpt_status dpt_net_save(const dpt_net *net, const char *path, const dpt_kv *meta,
                                size_t n_meta);
/* Load a model saved by dpt_net_save: rebuild the network from its spec and
 * fill learnables and state; a missing or wrong-shaped tensor fails naming
 * it. max_batch as in dpt_net_from_spec. *out owned by the caller. */
DPT_API dpt_status dpt_net_load(const char *path, int max_batch, dpt_net **out);
/* Copy learnables and state from an open model/checkpoint into an existing
 * network whose spec matches (used by resume). */
DPT_API dpt_status dpt_net_load_into(dpt_net *net, const char *path);
/* A metadata value of the file the network was loaded from ("classes",
 * "format", "spec", and any key the saver added), or NULL. */
DPT_API const char *dpt_net_meta(const dpt_net *net, const char *key);

/* Predicted class (argmax of the output) for each row of y [n, k]. */
DPT_API void dpt_argmax_rows(const float *y, int n, int k, int *labels);

#ifdef __cplusplus
}
#endif
#endif
