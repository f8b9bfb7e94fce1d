/* ops/cuda: the GPU kernels of dptrain behind a plain C interface.
 *
 * Internal to libdptrain: net/net_gpu.c and net/layer_gpu.c (a network on a
 * GPU and the layers' CUDA entries) and optim/optim.c (the device update) are
 * the only caller. Implemented in the .cu files beside this header, which
 * are compiled only when the build found the CUDA toolkit and cuDNN
 * (DPT_HAVE_CUDA). Nothing here needs a CUDA header, so C files include it
 * without CUDA's include paths and with -Werror.
 *
 * Every pointer called "device" lives in GPU memory of the context's device;
 * "pinned" is page-locked host memory from gpu_malloc_host; plain "host" is
 * any host memory. Layouts are those of ops/ops.h (NCHW, batch first,
 * float32), so a device buffer holds exactly what the CPU buffer would.
 *
 * All work is queued on the context's compute stream in call order; a call
 * returns once its work is queued (launch errors are reported at once,
 * errors inside kernels at the next call that waits: gpu_sync or a
 * download). Failures return a dpt_status with a message that names the
 * device, the operation and, where given, the layer. Gradient outputs are
 * overwritten, never accumulated. */
#ifndef DPT_GPU_OPS_H
#define DPT_GPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/core.h"
#include "ops/gpu_update.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- devices ------------------------------------------------------------------ */

/* Devices this build can run on: present, and our kernels have code for
 * their architecture. 0 when there is no driver or no device. */
int gpu_device_count(void);
/* Name, memory and compute capability of device i (any of the arguments
 * after i may be NULL). */
dpt_status gpu_device_query(int device, char *name, size_t name_n, size_t *mem_bytes,
                            int *cc_major, int *cc_minor, int *n_sm);
/* A key identifying the physical device (PCI bus id), for telling apart
 * workers that share a GPU. */
dpt_status gpu_device_bus_id(int device, char *buf, size_t n);

/* ---- context: one per network replica -------------------------------------------- */

typedef struct gpu_ctx gpu_ctx;

/* Make a context on `device`: a compute stream, a copy stream, cuBLAS and
 * cuDNN handles bound to the compute stream, and a pinned staging ring for
 * host-to-device copies. allow_tf32 0 keeps every float32 product in full
 * float32 (cuBLAS CUBLAS_DEFAULT_MATH, cuDNN CUDNN_FMA_MATH). */
dpt_status gpu_ctx_new(int device, int allow_tf32, gpu_ctx **out);
void gpu_ctx_free(gpu_ctx *g);
/* Make the context's device current on the calling thread (CUDA keeps the
 * current device per thread); every entry point of net_gpu.c calls it. */
dpt_status gpu_ctx_enter(gpu_ctx *g);
int gpu_ctx_device(const gpu_ctx *g);
int gpu_ctx_allow_tf32(const gpu_ctx *g);
/* The compute stream as a cudaStream_t (for NCCL calls in comm/). */
void *gpu_ctx_stream(gpu_ctx *g);
/* Grow the cuDNN workspace to at least `bytes` (set-up time only). */
dpt_status gpu_ctx_reserve_workspace(gpu_ctx *g, size_t bytes);
size_t gpu_ctx_workspace_bytes(const gpu_ctx *g);
/* Scratch for the deterministic reductions: per-channel sums over up to
 * max_channels channels and row sums over up to max_rows rows (set-up time
 * only). */
dpt_status gpu_ctx_reserve_scratch(gpu_ctx *g, int max_channels, int max_rows);

/* Products of conv and fc in bfloat16 from now on (DPT_PRECISION_BF16;
 * call before the layers' set-up), with a buffer for the bf16 copies of at
 * least max_values values (x, w and y or dy of the largest layer at the
 * largest batch): grows it, never shrinks; set-up time only. */
dpt_status gpu_ctx_set_bf16(gpu_ctx *g, size_t max_values);
int gpu_ctx_bf16(const gpu_ctx *g);

/* ---- memory and transfers ---------------------------------------------------------- */

/* Zeroed device memory on the context's device. */
dpt_status gpu_malloc(gpu_ctx *g, size_t bytes, void **p);
void gpu_mfree(void *p);
dpt_status gpu_malloc_host(size_t bytes, void **p);
void gpu_mfree_host(void *p);

/* Host -> device through the pinned staging ring on the copy stream: the
 * host bytes are consumed (copied into pinned chunks, each chunk's DMA
 * overlapping the copy of the next) before the call returns, and the
 * compute stream waits for the transfer before its next work. The copy
 * stream first waits for the compute stream's earlier work, so `dst` may
 * be a buffer the previous step still read. */
dpt_status gpu_upload(gpu_ctx *g, void *dst, const void *host, size_t bytes);
/* Device -> host, waiting for everything queued before it. */
dpt_status gpu_download(gpu_ctx *g, void *host, const void *src, size_t bytes);
/* Device -> pinned, queued (no wait); see gpu_sync. */
dpt_status gpu_download_async(gpu_ctx *g, void *pinned, const void *src, size_t bytes);
/* Pinned -> device, queued on the compute stream. */
dpt_status gpu_upload_async(gpu_ctx *g, void *dst, const void *pinned, size_t bytes);
dpt_status gpu_copy(gpu_ctx *g, void *dst, const void *src, size_t bytes);
/* rows rows of width_bytes each, device to device, from src (rows
 * src_pitch bytes apart) to dst (dst_pitch apart): a channel block of each
 * observation (concat). */
dpt_status gpu_copy_2d(gpu_ctx *g, void *dst, size_t dst_pitch, const void *src,
                       size_t src_pitch, size_t width_bytes, size_t rows);
dpt_status gpu_zero(gpu_ctx *g, void *dst, size_t bytes);
/* Wait for the compute stream; reports errors of kernels queued before.
 * `what` names the operation in a message. */
dpt_status gpu_sync(gpu_ctx *g, const char *what);

/* ---- convolution (cuDNN) -------------------------------------------------------------- */

typedef struct gpu_conv gpu_conv;

/* Describe a convolution of input [*, c_in, h, w], weights [c_out,
 * c_in / groups, kh, kw], stride, pad and dilation in both directions
 * (groups dividing c_in and c_out, as PyTorch), for batches of up to
 * max_batch. Chooses the forward, backward-data and backward-filter
 * algorithms for max_batch once (deterministic algorithms only; find 1:
 * cudnnFind*, timing every candidate, 0: cudnnGet*_v7 heuristics, the same
 * choice every run) and grows the context's workspace to what they need.
 * Another batch size gets its own choice, made once on first use, within
 * the workspace already planned. `name` is used in messages. */
dpt_status gpu_conv_new(gpu_ctx *g, const char *name, int max_batch, int c_in, int h, int w,
                        int c_out, int kh, int kw, int stride, int pad, int dilation,
                        int groups, int find, gpu_conv **out);
void gpu_conv_free(gpu_conv *c);
/* The chosen algorithms for max_batch, for logs ("fwd 1 bwd-data 1 ..."). */
const char *gpu_conv_describe(const gpu_conv *c);
/* y [n, c_out, oh, ow] = conv(x, w) + b (b may be NULL). */
dpt_status gpu_conv_forward(gpu_ctx *g, gpu_conv *c, int n, const float *x, const float *w,
                            const float *b, float *y);
/* dx (may be NULL), dw, db (may be NULL) from dy. */
dpt_status gpu_conv_backward(gpu_ctx *g, gpu_conv *c, int n, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *db);

/* ---- fully connected (cuBLAS): y [n, out] = x [n, in] · wᵀ + b, w [out, in] ---- */
dpt_status gpu_linear_forward(gpu_ctx *g, const float *x, const float *w, const float *b,
                              float *y, int n, int in, int out);
/* dx [n, in] (may be NULL), dw [out, in], db [out]. */
dpt_status gpu_linear_backward(gpu_ctx *g, const float *x, const float *w, const float *dy,
                               float *dx, float *dw, float *db, int n, int in, int out);

/* ---- elementwise and row kernels ------------------------------------------------------- */
/* y += x, one float32 addition per element (the executor's gradient
 * accumulation and the add layer: the CPU's bits). */
dpt_status gpu_add(gpu_ctx *g, float *y, const float *x, size_t n);
dpt_status gpu_relu_forward(gpu_ctx *g, const float *x, float *y, size_t n);
/* dx = dy where y > 0, else 0. */
dpt_status gpu_relu_backward(gpu_ctx *g, const float *y, const float *dy, float *dx, size_t n);
/* As ops/act.c: leaky ReLU (backward on x's sign), sigmoid and tanh
 * (backward from the output y). */
dpt_status gpu_leakyrelu_forward(gpu_ctx *g, const float *x, float *y, size_t n, float alpha);
dpt_status gpu_leakyrelu_backward(gpu_ctx *g, const float *x, const float *dy, float *dx,
                                  size_t n, float alpha);
dpt_status gpu_sigmoid_forward(gpu_ctx *g, const float *x, float *y, size_t n);
dpt_status gpu_sigmoid_backward(gpu_ctx *g, const float *y, const float *dy, float *dx, size_t n);
dpt_status gpu_tanh_forward(gpu_ctx *g, const float *x, float *y, size_t n);
dpt_status gpu_tanh_backward(gpu_ctx *g, const float *y, const float *dy, float *dx, size_t n);
/* dpt_dropout_apply on n observations of per floats (in may be dy, out dx:
 * the same mask); p > 0. Same bits as the host. */
dpt_status gpu_dropout(gpu_ctx *g, const float *in, float *out, int n, size_t per, float p,
                       uint64_t seed, uint64_t epoch, uint64_t iteration, uint64_t stream,
                       uint64_t obs0);
/* gpu_dropout with seed, epoch, iteration and obs0 read from the device
 * (dkey [4], in that order; a CUDA graph replays the launch unchanged). */
dpt_status gpu_dropout_keyed(gpu_ctx *g, const float *in, float *out, int n, size_t per, float p,
                             const uint64_t *dkey, uint64_t stream);
/* Max (is_max 1) or average pooling of x [n, c, h, w] into y [n, c, oh,
 * ow], and its backward into dx (overwritten; x is read for max only): as
 * ops/pool.c's dpt_maxpool2d_* / dpt_avgpool2d_*, the same bits. */
typedef struct gpu_pool {
    int c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
} gpu_pool;
dpt_status gpu_pool_forward(gpu_ctx *g, const gpu_pool *p, int is_max, const float *x, float *y,
                            int n);
dpt_status gpu_pool_backward(gpu_ctx *g, const gpu_pool *p, int is_max, const float *x,
                             const float *dy, float *dx, int n);
/* dpt_global_avgpool_forward / _backward (x [n, c, hw] -> y [n, c]). */
dpt_status gpu_global_avgpool_forward(gpu_ctx *g, const float *x, float *y, int n, int c, int hw);
dpt_status gpu_global_avgpool_backward(gpu_ctx *g, const float *dy, float *dx, int n, int c,
                                       int hw);
/* Row-wise softmax of z [n, k]. */
dpt_status gpu_softmax_forward(gpu_ctx *g, const float *z, float *p, int n, int k);
/* dx = p ⊙ (dy − Σ dy·p) per row. */
dpt_status gpu_softmax_backward(gpu_ctx *g, const float *p, const float *dy, float *dx, int n,
                                int k);
/* Cross-entropy of p [n, k] against targets t [n, k]: *loss (device
 * double) = mean over rows (as dpt_softmax_xent), dlogits = (p − t)·scale/n. */
dpt_status gpu_softmax_xent(gpu_ctx *g, const float *p, const float *t, int n, int k,
                            float scale, float *dlogits, double *loss);
/* SGD with momentum (MATLAB's sgdmupdate, as dpt_sgdm_step, same rounding). */
dpt_status gpu_sgdm(gpu_ctx *g, float *params, float *velocity, const float *grads, size_t n,
                    float lr, float momentum, float weight_decay);
/* Adam / AdamW (as dpt_adam_step, same rounding): the per-step scalars come
 * from the host (optim/optim_impl.h's adam_begin_step: bias corrections in
 * float64, rounded to float32), the elementwise update is float32 with
 * explicitly rounded operations. m, v: device [n] moments. */
dpt_status gpu_adam(gpu_ctx *g, float *params, float *m, float *v, const float *grads, size_t n,
                    float step_size, float bc2_sqrt, float b1, float b2, float c1, float c2,
                    float eps, float shrink, float l2);
/* As dpt_clip_grad_norm on device grads [n]: the L2 norm in float64 (one
 * block, fixed order: deterministic), brought to the host (this waits for
 * the stream), then grads scaled by max_norm / (norm + 1e-6) when that is
 * below 1. *norm receives the norm before clipping. */
dpt_status gpu_clip_grad_norm(gpu_ctx *g, float *grads, size_t n, double max_norm, double *norm);
/* gpu_sgdm, gpu_adam and gpu_clip_grad_norm with their per-step scalars
 * read from the device (sc: ops/gpu_update.h, copied there before the
 * step), so that nothing waits for the host and a CUDA graph can hold
 * them; the same bits. The clipping leaves Σ g² in *ss (device; the norm
 * is its square root) and scales when max_norm / (norm + 1e-6) < 1. */
dpt_status gpu_sgdm_dev(gpu_ctx *g, float *params, float *velocity, const float *grads, size_t n,
                        const gpu_update_scalars *sc);
dpt_status gpu_adam_dev(gpu_ctx *g, float *params, float *m, float *v, const float *grads,
                        size_t n, const gpu_update_scalars *sc);
dpt_status gpu_clip_grad_norm_dev(gpu_ctx *g, float *grads, size_t n,
                                  const gpu_update_scalars *sc, double *ss);

/* ---- batch normalisation over (n, h, w) per channel -------------------------------------- *
 * The split of ops/ops.h, with the per-channel sums in float64 computed by
 * a deterministic two-pass reduction (fixed partition, fixed order): same
 * inputs, same bits. */

/* sums [2c + 1]: Σx per channel, Σx² per channel, then the count n·hw. */
dpt_status gpu_bn_sums(gpu_ctx *g, const float *x, int n, int c, int hw, double *sums);
/* From sums (possibly all-reduced): batch [2c] = mean and biased variance
 * (float64), mean/invstd [c] (float32) for normalising. */
dpt_status gpu_bn_stats(gpu_ctx *g, const double *sums, int c, float epsilon, double *batch,
                        float *mean, float *invstd);
/* From the running state [2c] (mean, variance) for PREDICT mode. */
dpt_status gpu_bn_running(gpu_ctx *g, const float *state, int c, float epsilon, float *mean,
                          float *invstd);
/* y = gamma·(x − mean)·invstd + beta; y_relu = max(y, 0) for a ReLU that
 * follows (fused). Either may be NULL (not written). */
dpt_status gpu_bn_normalize(gpu_ctx *g, const float *x, int n, int c, int hw, const float *mean,
                            const float *invstd, const float *gamma, const float *beta, float *y,
                            float *y_relu);
/* sums [2c] = Σ dy and Σ dy·x̂ per channel; doffset = Σ dy, dscale = Σ dy·x̂
 * (float32, the local shares). relu_y non-NULL: dy is the gradient at the
 * output of a fused ReLU whose output was relu_y (gated by relu_y > 0). */
dpt_status gpu_bn_backward_sums(gpu_ctx *g, const float *x, const float *dy,
                                const float *relu_y, int n, int c, int hw, const float *mean,
                                const float *invstd, double *sums, float *doffset,
                                float *dscale);
/* dx = gamma·invstd·(dy − Σdy/count − x̂·Σdy·x̂/count), count read from the
 * device double *count. relu_y as above. */
dpt_status gpu_bn_backward_dx(gpu_ctx *g, const float *x, const float *dy, const float *relu_y,
                              int n, int c, int hw, const float *mean, const float *invstd,
                              const float *gamma, const double *sums, const double *count,
                              float *dx);

#ifdef __cplusplus
}
#endif
#endif
