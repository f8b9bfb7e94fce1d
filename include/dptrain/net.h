/* dptrain networks: a graph of named layers built from a text spec or from
 * C calls, with all learnables in one flat buffer, their gradients in a
 * second of the same layout, and batch-norm state in a third.
 *
 * Spec text: one layer per line, `<type> <name> [key=value ...]`, '#' starts
 * a comment. Every layer but the input takes `from=NAME[,NAME...]`: the
 * earlier layers it reads (default: the line above); every layer's output
 * but the last layer's must be read. Types and keys:
 *   input      size=HxWxC                 (first layer, exactly one)
 *   conv       filter=K[xK2] filters=F [stride=S] [padding=P] [bias=0|1]
 *              [dilation=D|DxD] [groups=G] (G divides channels and F)
 *   batchnorm  [epsilon=1e-5] [decay=0.1]
 *   relu
 *   leakyrelu  [alpha=0.01]               (alpha in [0, 1])
 *   sigmoid
 *   tanh
 *   maxpool    size=K[xK2] [stride=S[xS2]] [padding=P[xP2]]
 *   avgpool    size=K[xK2] [stride=S[xS2]] [padding=P[xP2]]
 *                                         (stride defaults to size; padding
 *                                          below size: -inf for max, zeros
 *                                          counted in the average)
 *   globalavgpool                         (mean per channel: [C, 1, 1])
 *   dropout    [p=0.5]                    (p in [0, 1); identity in predict)
 *   fc         outputs=N|classes          ("classes": filled in at build)
 *   softmax                               (last layer; pairs with the
 *                                          cross-entropy loss)
 *   add                                   (2 to 32 inputs of one shape: sum)
 *   concat                                (1 to 32 inputs: along channels)
 * Sequences (recurrent networks):
 *   sequenceinput size=F|vocab            (first layer instead of input: F
 *                                          features per time step)
 *   lstm       units=H [output=sequence|last]
 *   gru        units=H [output=sequence|last]
 * A sequence layer's output is [F, 1, 1] per time step (dpt_net_layer_shape)
 * laid out [n][T][F] with T = dpt_net_steps. fc, softmax, relu, leakyrelu,
 * sigmoid, tanh, add and concat run per time step on a sequence; dropout
 * keys element j = t*F + f of each observation; conv, batchnorm and the
 * pools refuse a sequence. lstm/gru output=last gives one [H, 1, 1] per
 * observation: the state after its last valid step. `size=vocab` and
 * `outputs=vocab` stand for dpt_net_from_spec's n_classes (a language
 * model passes its vocabulary's size there). LSTM/GRU learnables in
 * PyTorch's layout (G = 4 gates i, f, g, o for the LSTM; 3, r, z, n, for
 * the GRU): <layer>/InputWeights [G*H, F], RecurrentWeights [G*H, H],
 * InputBias [G*H], RecurrentBias [G*H] (torch's weight_ih_l0,
 * weight_hh_l0, bias_ih_l0, bias_hh_l0), initialised uniform in
 * ±1/sqrt(H) as PyTorch does.
 * A spec holds at most 10000 layers. Layer names: 1 to 63 bytes of valid
 * UTF-8, none of them white space, control or invisible characters, '/',
 * '"', backslash or ','.
 *
 * Table names follow MATLAB's Learnables/State tables: conv1/Weights,
 * conv1/Bias, bn1/Offset, bn1/Scale, fc/Weights, fc/Bias; state bn1/TrainedMean,
 * bn1/TrainedVariance. Weights use PyTorch's layouts (conv [F, C/G, K, K2],
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
 * and a language model's `size=vocab` and `outputs=vocab` (0: such a spec
 * is an error). max_batch sizes the activation buffers; forward on more
 * observations fails. Learnables are initialised from `seed` (Glorot
 * weights, zero biases, unit scales; LSTM/GRU uniform in ±1/sqrt(H)).
 * *out owned by caller. */
DPT_API dpt_status dpt_net_from_spec(const char *text, const char *source, int n_classes,
                                     int max_batch, uint64_t seed, dpt_net **out);
/* Read a spec file and call dpt_net_from_spec. */
DPT_API dpt_status dpt_net_from_spec_file(const char *path, int n_classes, int max_batch,
                                          uint64_t seed, dpt_net **out);
DPT_API void dpt_net_free(dpt_net *net);

/* The spec text the network was built from, with classes filled in. */
DPT_API const char *dpt_net_spec(const dpt_net *net);
DPT_API int dpt_net_max_batch(const dpt_net *net);

/* ---- building from C calls ------------------------------------------------------ *
 * A builder collects layers, one call per layer, and ends in dpt_net_build,
 * which parses what was collected exactly as spec text (each call appends
 * one spec line). For MATLAB's example:
 *
 *     dpt_net_builder *b;
 *     dpt_net_builder_new(&b);
 *     dpt_net_builder_add_input(b, "input", 28, 28, 1);
 *     dpt_net_builder_add_conv(b, "conv1", 5, 20, 1, 0);
 *     dpt_net_builder_add_batchnorm(b, "bn1");
 *     dpt_net_builder_add_relu(b, "relu1");
 *     ...
 *     dpt_net_builder_add_fc(b, "fc", DPT_NET_OUTPUTS_CLASSES);
 *     dpt_net_builder_add_softmax(b, "softmax");
 *     dpt_status s = dpt_net_build(b, n_classes, max_batch, seed, &net);
 *     dpt_net_builder_free(b);
 *
 * Errors are sticky: the first failing add records its status and message,
 * later adds do nothing and return that status, and dpt_net_build returns
 * it again with the same message, so a caller may check only the build.
 * Adds check their arguments (names, sizes); layer rules (shapes that do
 * not fit, a softmax that is not last, unknown keys of add_line) are
 * checked by dpt_net_build, whose messages say "net builder:<k>: ..." with
 * k the 1-based position of the layer in the order added.
 * Layer names: 1 to 63 bytes of valid UTF-8, none of them white space,
 * control or invisible characters, '/', '"', backslash, '#', '=' or ','.
 * Ownership: the builder is the caller's (dpt_net_builder_free); a network
 * built from it is independent of it. Thread-safety: one thread at a time
 * per builder. */
typedef struct dpt_net_builder dpt_net_builder;

/* dpt_net_builder_add_fc outputs value meaning "one per class": filled in
 * by dpt_net_build from its n_classes. */
#define DPT_NET_OUTPUTS_CLASSES 0

/* A new, empty builder. *out owned by the caller. */
DPT_API dpt_status dpt_net_builder_new(dpt_net_builder **out);
/* Release a builder. NULL does nothing. */
DPT_API void dpt_net_builder_free(dpt_net_builder *b);
/* Append one spec line, `<type> <name> [key=value ...]` (see the top of
 * this file), for keys the typed calls below do not take (conv
 * filter=3x5 or bias=0, batchnorm epsilon=... decay=...). The line must
 * not contain a newline. */
DPT_API dpt_status dpt_net_builder_add_line(dpt_net_builder *b, const char *line);
/* Image input of height × width × channels (first layer, exactly one). */
DPT_API dpt_status dpt_net_builder_add_input(dpt_net_builder *b, const char *name, int height,
                                             int width, int channels);
/* 2-D convolution with `filters` square filters of filter × filter, with
 * bias; stride >= 1, padding >= 0 on every side (MATLAB's
 * convolution2dLayer(filter, filters, Stride=stride, Padding=padding)). */
DPT_API dpt_status dpt_net_builder_add_conv(dpt_net_builder *b, const char *name, int filter,
                                            int filters, int stride, int padding);
/* Batch normalisation with epsilon 1e-5 and running-state decay 0.1. */
DPT_API dpt_status dpt_net_builder_add_batchnorm(dpt_net_builder *b, const char *name);
/* Rectified linear unit. */
DPT_API dpt_status dpt_net_builder_add_relu(dpt_net_builder *b, const char *name);
/* Fully connected layer with `outputs` outputs (>= 1), or
 * DPT_NET_OUTPUTS_CLASSES for one per class. */
DPT_API dpt_status dpt_net_builder_add_fc(dpt_net_builder *b, const char *name, int outputs);
/* Softmax over the outputs (last layer; pairs with the cross-entropy loss). */
DPT_API dpt_status dpt_net_builder_add_softmax(dpt_net_builder *b, const char *name);
/* The layers the next added layer takes its input from: names of earlier
 * layers joined by commas ("conv1,skip"), written as its from= key (by
 * default a layer reads the layer added before it). Applies to the next
 * add call only. */
DPT_API dpt_status dpt_net_builder_set_from(dpt_net_builder *b, const char *inputs);
/* Elementwise sum of 2 to 32 layers of one shape, named in `inputs` as for
 * dpt_net_builder_set_from (a residual connection: "conv2,relu1"). */
DPT_API dpt_status dpt_net_builder_add_add(dpt_net_builder *b, const char *name,
                                           const char *inputs);
/* Concatenation of 1 to 32 layers along channels (their heights and widths
 * equal), named in `inputs`, in that order. */
DPT_API dpt_status dpt_net_builder_add_concat(dpt_net_builder *b, const char *name,
                                              const char *inputs);
/* dpt_net_builder_add_conv with filter taps `dilation` pixels apart
 * (>= 1) and the channels in `groups` groups (>= 1, dividing the input
 * channels and filters; groups = input channels and filters = a multiple
 * of them: depthwise). Weights [filters, channels/groups, filter, filter]
 * as PyTorch's Conv2d(dilation=, groups=); MATLAB's
 * convolution2dLayer(DilationFactor=) and groupedConvolution2dLayer. */
DPT_API dpt_status dpt_net_builder_add_conv_ex(dpt_net_builder *b, const char *name, int filter,
                                               int filters, int stride, int padding,
                                               int dilation, int groups);
/* Max pooling over size × size windows every `stride` pixels (>= 1; the
 * spec's default is stride = size), padding >= 0 on every side, smaller
 * than size, that never wins a maximum (PyTorch's MaxPool2d, MATLAB's
 * maxPooling2dLayer). */
DPT_API dpt_status dpt_net_builder_add_maxpool(dpt_net_builder *b, const char *name, int size,
                                               int stride, int padding);
/* Average pooling, arguments as maxpool; padding counts as zeros and every
 * window divides by size² (PyTorch's AvgPool2d with count_include_pad=True,
 * MATLAB's averagePooling2dLayer). */
DPT_API dpt_status dpt_net_builder_add_avgpool(dpt_net_builder *b, const char *name, int size,
                                               int stride, int padding);
/* The mean of each channel: C × H × W in, C × 1 × 1 out (MATLAB's
 * globalAveragePooling2dLayer, PyTorch's AdaptiveAvgPool2d(1)). */
DPT_API dpt_status dpt_net_builder_add_globalavgpool(dpt_net_builder *b, const char *name);
/* Dropout with probability p in [0, 1) in training, kept values scaled by
 * 1/(1-p); the identity in prediction. The masks depend on the seed,
 * epoch, iteration, layer and the observation's position in the global
 * minibatch, not on the number of workers. */
DPT_API dpt_status dpt_net_builder_add_dropout(dpt_net_builder *b, const char *name, float p);
/* Leaky ReLU: x where x > 0, else alpha·x, alpha in [0, 1] (the spec's
 * default is 0.01). */
DPT_API dpt_status dpt_net_builder_add_leakyrelu(dpt_net_builder *b, const char *name,
                                                 float alpha);
/* Logistic sigmoid 1/(1+exp(-x)). */
DPT_API dpt_status dpt_net_builder_add_sigmoid(dpt_net_builder *b, const char *name);
/* Hyperbolic tangent. */
DPT_API dpt_status dpt_net_builder_add_tanh(dpt_net_builder *b, const char *name);
/* dpt_net_builder_add_sequenceinput features value meaning "the
 * vocabulary's size" (size=vocab: dpt_net_build's n_classes). */
#define DPT_NET_SIZE_VOCAB 0
/* Sequence input of `features` values per time step (first layer, in
 * place of an image input), or DPT_NET_SIZE_VOCAB. */
DPT_API dpt_status dpt_net_builder_add_sequenceinput(dpt_net_builder *b, const char *name,
                                                     int features);
/* LSTM / GRU of `units` (>= 1) on a sequence; output_last 0: the output of
 * every time step (output=sequence), 1: the state after each
 * observation's last valid step (output=last). */
DPT_API dpt_status dpt_net_builder_add_lstm(dpt_net_builder *b, const char *name, int units,
                                            int output_last);
DPT_API dpt_status dpt_net_builder_add_gru(dpt_net_builder *b, const char *name, int units,
                                           int output_last);
/* The spec text collected so far ("" when empty; NULL for b NULL); valid
 * until the next add or free. Save it to rebuild the same network later
 * with dpt_net_from_spec_file. */
DPT_API const char *dpt_net_builder_spec(const dpt_net_builder *b);
/* Build the network: dpt_net_from_spec on the collected text, with source
 * "net builder" in messages. n_classes, max_batch and seed as there. The
 * builder is not changed and may build again. *out owned by the caller. */
DPT_API dpt_status dpt_net_build(const dpt_net_builder *b, int n_classes, int max_batch,
                                 uint64_t seed, dpt_net **out);

/* ---- layers ---------------------------------------------------------------- */

/* Number of layers, the input layer included (12 for the example network). */
DPT_API int dpt_net_n_layers(const dpt_net *net);
/* Name ("conv1") and type ("conv") of layer i, 0 <= i < dpt_net_n_layers;
 * the strings live as long as the network. */
DPT_API const char *dpt_net_layer_name(const dpt_net *net, int i);
DPT_API const char *dpt_net_layer_type(const dpt_net *net, int i);
/* The layers layer i reads: how many (0 for the input layer), and the
 * index of the k-th (0 <= k < that count; -1 out of range). */
DPT_API int dpt_net_layer_n_inputs(const dpt_net *net, int i);
DPT_API int dpt_net_layer_input(const dpt_net *net, int i, int k);
/* Output shape of layer i for one observation: [C, H, W] (fc: [N, 1, 1]). */
DPT_API void dpt_net_layer_shape(const dpt_net *net, int i, int chw[3]);
/* Input [C, H, W] and number of outputs of the network. */
DPT_API void dpt_net_input_shape(const dpt_net *net, int chw[3]);
DPT_API int dpt_net_n_outputs(const dpt_net *net);

/* How layer i's kernels were chosen when the network was built: for each
 * convolution layer, the algorithm that runs it, timed against the others
 * on the layer's shape at the network's max_batch or read from the plan
 * cache (docs/kernels.md: DPT_CONV_ALGO, DPT_PLAN_CACHE). */
#define DPT_PLAN_MAX_CANDIDATES 12
typedef struct dpt_layer_plan {
    char shape[96];     /* "32x32x64 -> 16x16x128 k3x3 s2 p1 d1 g1" (+ " bn-in", " bn-out":
                           a batch norm applied on the fly) */
    char algo[16];      /* the algorithm that runs: "gemm", "direct", ... */
    char source[16];    /* "measured" (timed now), "cache" (read from the cache file),
                           "forced" (DPT_CONV_ALGO=<name>), "heuristic" (not timed: see
                           note), "only" (the one algorithm that supports the shape) */
    int batch;          /* the batch planned for (the network's max_batch) */
    int measure_batch;  /* images of the largest timed run; 0: nothing timed */
    int n_candidates;
    struct {
        char name[16];
        double ms;      /* one forward + backward of batch images, milliseconds (the best
                           of the runs; where measure_batch < batch, estimated from runs of
                           fewer images); -1: cannot run this shape (or not built in); -2:
                           can, not timed */
    } candidates[DPT_PLAN_MAX_CANDIDATES];
    char note[256];     /* why a fallback or the heuristic, a cache file problem; or "" */
} dpt_layer_plan;

/* 1 with *out filled when layer i has a kernel plan (a convolution layer),
 * else 0 (other layers, i out of range). */
DPT_API int dpt_net_layer_plan(const dpt_net *net, int i, dpt_layer_plan *out);

/* ---- tables and flat buffers ------------------------------------------------ */

/* Number of entries in the learnables table (14 for the example network:
 * Weights and Bias of each conv and the fc, Offset and Scale of each batch
 * norm). */
DPT_API size_t dpt_net_n_learnables(const dpt_net *net);
/* Entry i of the learnables table, in layer order, or NULL when i is out
 * of range. Points into the network (do not free). */
DPT_API const dpt_param_info *dpt_net_learnable(const dpt_net *net, size_t i);
/* Number of entries in the state table (TrainedMean and TrainedVariance of
 * each batch norm: 6 for the example network). */
DPT_API size_t dpt_net_n_state(const dpt_net *net);
/* Entry i of the state table, or NULL when i is out of range. */
DPT_API const dpt_param_info *dpt_net_state_info(const dpt_net *net, size_t i);
/* Index in the learnables (state) table by full name, or -1. */
DPT_API long dpt_net_find_learnable(const dpt_net *net, const char *name);
DPT_API long dpt_net_find_state(const dpt_net *net, const char *name);

/* Copy the learnable `name` ("conv1/Weights") out of the network into
 * out[n] (read), or from in[n] into the network (write). n must equal the
 * entry's element count; values are in the entry's shape, row-major
 * (PyTorch's layout). In a data-parallel run, write the same values on
 * every worker (or broadcast them) or the workers stop being identical.
 * DPT_ERR_ARG for a NULL argument or a name not in the table (the message
 * names it), DPT_ERR_SHAPE when n differs. Not collective. */
DPT_API dpt_status dpt_net_read_learnable(const dpt_net *net, const char *name, float *out,
                                          size_t n);
DPT_API dpt_status dpt_net_write_learnable(dpt_net *net, const char *name, const float *in,
                                           size_t n);
/* The same for the state table ("bn1/TrainedMean"). */
DPT_API dpt_status dpt_net_read_state(const dpt_net *net, const char *name, float *out, size_t n);
DPT_API dpt_status dpt_net_write_state(dpt_net *net, const char *name, const float *in, size_t n);

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
 * gradient (× the steps it holds, at least dpt_net_steps, for a sequence
 * output): fill it and pass it to dpt_net_backward. A dpt_net_set_steps
 * that grows the buffers moves it: ask again after that. */
DPT_API float *dpt_net_output_grad(dpt_net *net);

/* FNV-1a hash of the learnables and the pooled state (batch-norm
 * statistics): equal on every worker after every step (the "workers stay
 * identical" invariant). Carried state (per worker) is not hashed. */
DPT_API uint64_t dpt_net_hash(const dpt_net *net);

/* The training position, for layers that draw randomness per iteration
 * (dropout): masks depend on (seed, epoch, iteration, layer, observation),
 * never on the worker. Set before each TRAIN forward (dpt_fit does; a loop of
 * its own calls it with dpt_net_set_obs_offset, see dpt_train_batch_position). */
DPT_API void dpt_net_set_iteration(dpt_net *net, long epoch, long iteration);

/* This worker's first observation in the global minibatch (0 on one
 * worker); dpt_train_step sets it from every worker's share. A caller that
 * runs its own step with several workers sets it before forward. */
DPT_API void dpt_net_set_obs_offset(dpt_net *net, long first);

/* Reset every layer's carried state (recurrent layers' streams); nothing
 * for a network without carried state. */
DPT_API void dpt_net_reset_state(dpt_net *net);

/* ---- sequences ------------------------------------------------------------------ *
 * A sequence network (first layer sequenceinput) runs on x [n, T, F]
 * (observation major) and gives y [n, T, outputs], or [n, outputs] when
 * its output is not a sequence (after lstm output=last). dpt_net_forward
 * and dpt_net_backward keep their signatures; T is dpt_net_steps. The
 * recurrent layers give zeros on padded steps and ignore what reaches them
 * there, so padding changes no valid output and no gradient; the output
 * rows of padded steps (what the layers after them make of those zeros)
 * mean nothing: skip them, and give them a zero loss gradient (the
 * training step does: a target row of all zeros is padding). */

/* DPT_SEQ_MAX_STEPS bounds the time steps of one forward. */
#define DPT_SEQ_MAX_STEPS 1000000
/* 1 when the network's input is a sequence (sequenceinput). */
DPT_API int dpt_net_is_sequence(const dpt_net *net);
/* 1 when layer i's output is a sequence (per time step, [n][T][shape]). */
DPT_API int dpt_net_layer_is_sequence(const dpt_net *net, int i);
/* 1 when its output is per time step ([n, T, outputs]); 0 for one output
 * per observation (e.g. after lstm output=last). */
DPT_API int dpt_net_output_is_sequence(const dpt_net *net);
/* The time steps of the next forwards: x holds n sequences of t steps
 * ([n, t, F], observation major), len[n] the valid steps of each (NULL:
 * all t; copied), pad_left 0: valid steps first, 1: padding first. Buffers
 * grow when t exceeds what they hold (DPT_ERR_NOMEM, or DPT_ERR_SHAPE past
 * DPT_MAX_NET_MEMORY or DPT_SEQ_MAX_STEPS). Stays in effect until the next
 * call; a forward of more than n observations fails while len is given.
 * For a network that is not a sequence network: DPT_ERR_ARG unless t == 1.
 * Not collective. */
DPT_API dpt_status dpt_net_set_steps(dpt_net *net, int t, const int *len, int n, int pad_left);
/* The current time steps (1 for a network that is not a sequence network). */
DPT_API int dpt_net_steps(const dpt_net *net);
/* Stateful mode (language models): each forward of the recurrent layers
 * starts from the carried state of stream slot i (i < n, i < max_batch)
 * and, after a TRAIN or PREDICT forward, carries the state after the last
 * step into that slot (truncated BPTT: no gradient flows into earlier
 * chunks). Off (default): every forward starts from zero state and nothing
 * is carried. Carried state lives with the layers: not in the state table,
 * not in model files, not hashed; each worker's replica carries its own
 * streams. */
DPT_API void dpt_net_set_stateful(dpt_net *net, int on);
/* Carried state: floats per stream slot (Σ over recurrent layers of H, and
 * H more for an LSTM's cell; 0 without recurrent layers), and copies of
 * slots [0, n) (n <= max_batch) out of / into the network,
 * [n][carry_floats], layers in spec order, h then c. */
DPT_API size_t dpt_net_carry_floats(const dpt_net *net);
DPT_API dpt_status dpt_net_carry_get(const dpt_net *net, int n, float *out);
DPT_API dpt_status dpt_net_carry_set(dpt_net *net, int n, const float *in);

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

/* ---- ONNX export (docs/onnx.md) --------------------------------------------------- */

/* Write the network as an ONNX model for inference at `path`: standard
 * operators of opset `opset` (13 to 17) in the default domain, IR version
 * 8, batch norm in its inference form (running statistics), dropout as the
 * identity, LSTM/GRU with ONNX's gate order; the batch dimension is
 * dynamic ("N"), and for a sequence network the time steps too ("T",
 * input [N, T, F], every sequence full length). The graph's input and
 * output are named after the network's first and last layers; learnables
 * keep their table names ("conv1/Weights"). metadata_props hold meta[n_meta]
 * (keys unique, none starting "dptrain."), the model file's "classes"
 * when meta has none, and dptrain.input, dptrain.input_layout,
 * dptrain.input_scale, dptrain.output and dptrain.spec describing how to
 * feed it (pixels scaled to [0, 1], NCHW). Atomic: the file is the old
 * one or the new one. Errors: a layer without an ONNX form fails with
 * DPT_ERR_UNSUPPORTED naming it, and nothing is written; DPT_ERR_ARG for
 * a bad opset or metadata; DPT_ERR_UNSUPPORTED too in a build without
 * ONNX support (protobuf-c and onnx.proto not found at configure time);
 * DPT_ERR_IO when the file cannot be written. Not collective. */
DPT_API dpt_status dpt_net_export_onnx(const dpt_net *net, const char *path, int opset,
                                       const dpt_kv *meta, size_t n_meta);

/* Predicted class (argmax of the output) for each row of y [n, k]. */
DPT_API void dpt_argmax_rows(const float *y, int n, int k, int *labels);

#ifdef __cplusplus
}
#endif
#endif
