/* 2-D convolution through cuDNN (its convolution API, NCHW float32, cross-
 * correlation as PyTorch and MATLAB).
 *
 * Algorithms are chosen once per layer and batch size: at set-up for the
 * network's max_batch (heuristics, cudnnGet*_v7, or timing with
 * cudnnFind*), on first use for any other batch size (heuristics, within
 * the workspace planned at set-up if they can). Only algorithms that cuDNN
 * marks deterministic are taken, so a run repeats bit for bit (should cuDNN
 * offer none for a shape, the best other one is taken and the layer's
 * description says so). Without TF32 the
 * descriptor's math type is CUDNN_FMA_MATH (no tensor-core TF32 kernels).
 * The bias is added, and its gradient summed, by our own kernels.
 *
 * With bf16 products (gpu_ctx_set_bf16) the descriptors are bfloat16 with
 * float32 compute (cuDNN's PSEUDO_BFLOAT16 configuration, tensor-op math
 * allowed): x, w and dy are rounded into the context's bf16 buffer, cuDNN
 * writes y, dx and dw as bf16 there, and they are widened into the float32
 * buffers the rest of the network uses. A shape for which cuDNN has no
 * bf16 algorithm runs in float32 (its description says so). */
#include "ops/cuda/gpu_internal.cuh"

#include <stdio.h>
#include <stdlib.h>

/* Workspace the set-up choice may plan for one convolution. */
#define CONV_WORKSPACE_LIMIT ((size_t)1 << 30)
/* Batch sizes remembered per layer (slot 0: max_batch). */
#define CONV_CACHE 8

typedef struct conv_algos {
    int n; /* batch size; 0: empty slot */
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
    size_t workspace; /* the largest of the three */
    int deterministic; /* 0: cuDNN offered no deterministic algorithm for one */
} conv_algos;

struct gpu_conv {
    char name[64];
    int c_in, h, w, c_out, kh, kw, stride, pad, oh, ow, max_batch, find;
    int bf16;                 /* descriptors and products in bf16 */
    size_t n_w;               /* weights: c_out * c_in / groups * kh * kw */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int desc_n;               /* batch size xd and yd describe */
    cudnnMathType_t desc_math;
    conv_algos cache[CONV_CACHE];
    int next_slot;
    char text[256];
};

#define DNN_TRY(g, c, call, what)                                                         \
    do {                                                                                  \
        cudnnStatus_t e_ = (call);                                                        \
        if (e_ != CUDNN_STATUS_SUCCESS)                                                   \
            return gpu_fail_cudnn((g), e_, (c)->name, (what));                            \
    } while (0)

/* bf16 data runs on tensor cores by definition; float32 data only with
 * TF32 allowed. */
static int math_allowed(const gpu_ctx *g, const gpu_conv *c, cudnnMathType_t m)
{
    /* ALLOW_CONVERSION would round float32 operands to FP16: neither TF32
     * nor what bf16 asked for. */
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        return 0;
    return c->bf16 || g->allow_tf32 || m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}

/* The math type a chosen algorithm runs with: float32 without TF32 always
 * FMA. */
static cudnnMathType_t run_math(const gpu_ctx *g, const gpu_conv *c, cudnnMathType_t m)
{
    return c->bf16 || g->allow_tf32 ? m : CUDNN_FMA_MATH;
}

/* The math type heuristics are asked with. */
static cudnnMathType_t ask_math(const gpu_ctx *g, const gpu_conv *c)
{
    return c->bf16 ? CUDNN_TENSOR_OP_MATH : g->allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

static cudnnDataType_t data_type(const gpu_conv *c)
{
    return c->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

static dpt_status set_math(gpu_ctx *g, gpu_conv *c, cudnnMathType_t m)
{
    if (c->desc_math != m) {
        DNN_TRY(g, c, cudnnSetConvolutionMathType(c->cd, m), "set math type");
        c->desc_math = m;
    }
    return DPT_OK;
}

static dpt_status set_batch(gpu_ctx *g, gpu_conv *c, int n)
{
    if (c->desc_n == n)
        return DPT_OK;
    DNN_TRY(g, c, cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NCHW, data_type(c), n, c->c_in,
                                             c->h, c->w),
            "input descriptor");
    DNN_TRY(g, c, cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NCHW, data_type(c), n,
                                             c->c_out, c->oh, c->ow),
            "output descriptor");
    c->desc_n = n;
    return DPT_OK;
}

/* The filter descriptor in the layer's data type, and the tensor
 * descriptors to be set again (set_batch). */
static dpt_status set_types(gpu_ctx *g, gpu_conv *c, int c_in_group)
{
    DNN_TRY(g, c, cudnnSetFilter4dDescriptor(c->wd, data_type(c), CUDNN_TENSOR_NCHW, c->c_out,
                                             c_in_group, c->kh, c->kw),
            "filter descriptor");
    c->desc_n = 0;
    return DPT_OK;
}

static dpt_status no_algo(gpu_ctx *g, gpu_conv *c, const char *which, int n, size_t limit)
{
    return dpt_fail(DPT_ERR_UNSUPPORTED,
                    "GPU %d: %s: cuDNN offers no %s algorithm for a batch of %d within %zu "
                    "bytes of workspace%s",
                    g->device, c->name, which, n, limit,
                    c->bf16 ? " in bf16" : g->allow_tf32 ? "" : " without TF32");
}

/* The first acceptable entry of a cuDNN performance list (best first):
 * supported, deterministic, of an allowed math type, and whose workspace
 * (asked again with the math type it will run with) fits the limit. */
#define PICK(PERF_T, GET_V7, FIND, WS_SIZE, ARGS, COUNT, OUT_ALGO, OUT_MATH, OUT_WS, WHICH)      \
    do {                                                                                        \
        PERF_T perf_[COUNT];                                                                    \
        int got_ = 0, found_ = 0;                                                               \
        dpt_status s_ = set_math(g, c, ask_math(g, c));                                         \
        if (s_ != DPT_OK)                                                                       \
            return s_;                                                                          \
        if (find)                                                                               \
            DNN_TRY(g, c, FIND(g->dnn, ARGS, COUNT, &got_, perf_), "find " WHICH " algorithm"); \
        else                                                                                    \
            DNN_TRY(g, c, GET_V7(g->dnn, ARGS, COUNT, &got_, perf_), "choose " WHICH " algorithm"); \
        /* Pass 0 takes only deterministic algorithms; pass 1, reached only  \
         * when cuDNN offers none, any (and says so in the description). */ \
        for (int i_ = 0; i_ < 2 * got_ && !found_; i_++) {                                      \
            int pass_ = i_ >= got_;                                                             \
            const PERF_T *p_ = &perf_[i_ % got_];                                               \
            size_t ws_ = 0;                                                                     \
            if (p_->status != CUDNN_STATUS_SUCCESS || !math_allowed(g, c, p_->mathType) ||      \
                (!pass_ && p_->determinism != CUDNN_DETERMINISTIC))                             \
                continue;                                                                       \
            if ((s_ = set_math(g, c, run_math(g, c, p_->mathType))) != DPT_OK)                  \
                return s_;                                                                      \
            if (WS_SIZE(g->dnn, ARGS, p_->algo, &ws_) != CUDNN_STATUS_SUCCESS || ws_ > limit)   \
                continue;                                                                       \
            OUT_ALGO = p_->algo;                                                                \
            OUT_MATH = run_math(g, c, p_->mathType);                                            \
            OUT_WS = ws_;                                                                       \
            if (pass_)                                                                          \
                a->deterministic = 0;                                                           \
            found_ = 1;                                                                         \
        }                                                                                       \
        if (!found_)                                                                            \
            return no_algo(g, c, WHICH, n, limit);                                              \
    } while (0)

#define FWD_ARGS c->xd, c->wd, c->cd, c->yd
#define BWD_DATA_ARGS c->wd, c->yd, c->cd, c->xd
#define BWD_FILTER_ARGS c->xd, c->yd, c->cd, c->wd

static dpt_status choose(gpu_ctx *g, gpu_conv *c, int n, int find, size_t limit, conv_algos *a)
{
    dpt_status s = set_batch(g, c, n);
    if (s != DPT_OK)
        return s;
    size_t ws_f = 0, ws_d = 0, ws_w = 0;
    a->deterministic = 1;
    PICK(cudnnConvolutionFwdAlgoPerf_t, cudnnGetConvolutionForwardAlgorithm_v7,
         cudnnFindConvolutionForwardAlgorithm, cudnnGetConvolutionForwardWorkspaceSize, FWD_ARGS,
         CUDNN_CONVOLUTION_FWD_ALGO_COUNT, a->fwd, a->fwd_math, ws_f, "forward");
    PICK(cudnnConvolutionBwdDataAlgoPerf_t, cudnnGetConvolutionBackwardDataAlgorithm_v7,
         cudnnFindConvolutionBackwardDataAlgorithm, cudnnGetConvolutionBackwardDataWorkspaceSize,
         BWD_DATA_ARGS, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, a->bwd_data, a->bwd_data_math,
         ws_d, "backward-data");
    PICK(cudnnConvolutionBwdFilterAlgoPerf_t, cudnnGetConvolutionBackwardFilterAlgorithm_v7,
         cudnnFindConvolutionBackwardFilterAlgorithm,
         cudnnGetConvolutionBackwardFilterWorkspaceSize, BWD_FILTER_ARGS,
         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, a->bwd_filter, a->bwd_filter_math, ws_w,
         "backward-filter");
    a->n = n;
    a->workspace = ws_f > ws_d ? ws_f : ws_d;
    if (ws_w > a->workspace)
        a->workspace = ws_w;
    return DPT_OK;
}

static const char *math_name(cudnnMathType_t m)
{
    switch (m) {
    case CUDNN_FMA_MATH: return "fma";
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    default: return "tensor-op-conv";
    }
}

dpt_status gpu_conv_new(gpu_ctx *g, const char *name, int max_batch, int c_in, int h, int w,
                        int c_out, int kh, int kw, int stride, int pad, int dilation, int groups,
                        int find, gpu_conv **out)
{
    *out = NULL;
    gpu_conv *c = (gpu_conv *)calloc(1, sizeof *c);
    if (!c)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    snprintf(c->name, sizeof c->name, "%s", name);
    c->c_in = c_in, c->h = h, c->w = w, c->c_out = c_out, c->kh = kh, c->kw = kw;
    c->stride = stride, c->pad = pad, c->max_batch = max_batch, c->find = find;
    /* PyTorch's output size with dilation; grouped weights are
     * [c_out, c_in / groups, kh, kw], as cuDNN takes them. */
    c->oh = (h + 2 * pad - dilation * (kh - 1) - 1) / stride + 1;
    c->ow = (w + 2 * pad - dilation * (kw - 1) - 1) / stride + 1;
    c->desc_math = (cudnnMathType_t)-1;
    dpt_status s = DPT_OK;
    cudnnStatus_t e;
    int dn, dc, dh, dw, bf16_refused = 0;
    if ((e = cudnnCreateTensorDescriptor(&c->xd)) != CUDNN_STATUS_SUCCESS ||
        (e = cudnnCreateTensorDescriptor(&c->yd)) != CUDNN_STATUS_SUCCESS ||
        (e = cudnnCreateFilterDescriptor(&c->wd)) != CUDNN_STATUS_SUCCESS ||
        (e = cudnnCreateConvolutionDescriptor(&c->cd)) != CUDNN_STATUS_SUCCESS ||
        (e = cudnnSetConvolution2dDescriptor(c->cd, pad, pad, stride, stride, dilation, dilation,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) !=
            CUDNN_STATUS_SUCCESS ||
        (e = cudnnSetConvolutionGroupCount(c->cd, groups)) != CUDNN_STATUS_SUCCESS) {
        s = gpu_fail_cudnn(g, e, name, "create descriptors");
        goto fail;
    }
    c->n_w = (size_t)c_out * (c_in / groups) * kh * kw;
    c->bf16 = g->bf16;
    if ((s = set_types(g, c, c_in / groups)) != DPT_OK || (s = set_batch(g, c, max_batch)) != DPT_OK)
        goto fail;
    if ((e = cudnnGetConvolution2dForwardOutputDim(c->cd, c->xd, c->wd, &dn, &dc, &dh, &dw)) !=
        CUDNN_STATUS_SUCCESS) {
        s = gpu_fail_cudnn(g, e, name, "output size");
        goto fail;
    }
    if (dn != max_batch || dc != c_out || dh != c->oh || dw != c->ow) {
        s = dpt_fail(DPT_ERR_SHAPE, "GPU %d: %s: cuDNN computes an output of %dx%dx%dx%d, the "
                     "network %dx%dx%dx%d", g->device, name, dn, dc, dh, dw, max_batch, c_out,
                     c->oh, c->ow);
        goto fail;
    }
    s = choose(g, c, max_batch, find, CONV_WORKSPACE_LIMIT, &c->cache[0]);
    if (s != DPT_OK && c->bf16) {
        /* No bf16 algorithm for this shape (cuDNN's bf16 kernels want
         * tensor-core friendly shapes): this layer stays float32. */
        c->bf16 = 0;
        if ((s = set_types(g, c, c_in / groups)) != DPT_OK)
            goto fail;
        s = choose(g, c, max_batch, find, CONV_WORKSPACE_LIMIT, &c->cache[0]);
        bf16_refused = 1;
    }
    if (s != DPT_OK || (s = gpu_ctx_reserve_workspace(g, c->cache[0].workspace)) != DPT_OK)
        goto fail;
    /* bf16 copies of x, y (dy, later dx) and w at max_batch: planned now. */
    if (c->bf16 && (s = gpu_ctx_set_bf16(g, (size_t)max_batch * ((size_t)c_in * h * w +
                                                                 (size_t)c_out * c->oh * c->ow) +
                                                c->n_w)) != DPT_OK)
        goto fail;
    c->next_slot = 1;
    snprintf(c->text, sizeof c->text,
             "%sbatch %d: forward algo %d (%s), backward-data algo %d (%s), backward-filter algo %d "
             "(%s), workspace %zu bytes, %s%s",
             c->bf16 ? "bf16, " : bf16_refused ? "fp32 (cuDNN has no bf16 algorithm here), " : "",
             max_batch, (int)c->cache[0].fwd, math_name(c->cache[0].fwd_math),
             (int)c->cache[0].bwd_data, math_name(c->cache[0].bwd_data_math),
             (int)c->cache[0].bwd_filter, math_name(c->cache[0].bwd_filter_math),
             c->cache[0].workspace, find ? "timed (cudnnFind)" : "heuristics (cudnnGet_v7)",
             c->cache[0].deterministic ? "" : ", NOT all deterministic");
    *out = c;
    return DPT_OK;
fail:
    gpu_conv_free(c);
    return s;
}

void gpu_conv_free(gpu_conv *c)
{
    if (!c)
        return;
    if (c->cd)
        cudnnDestroyConvolutionDescriptor(c->cd);
    if (c->wd)
        cudnnDestroyFilterDescriptor(c->wd);
    if (c->yd)
        cudnnDestroyTensorDescriptor(c->yd);
    if (c->xd)
        cudnnDestroyTensorDescriptor(c->xd);
    free(c);
}

const char *gpu_conv_describe(const gpu_conv *c) { return c->text; }

/* The algorithms for batch n: remembered, or chosen now by heuristics
 * within the workspace the set-up planned. */
static dpt_status algos_for(gpu_ctx *g, gpu_conv *c, int n, const conv_algos **out)
{
    for (int i = 0; i < CONV_CACHE; i++)
        if (c->cache[i].n == n) {
            *out = &c->cache[i];
            return DPT_OK;
        }
    conv_algos a;
    dpt_status s = choose(g, c, n, 0, g->workspace_bytes, &a);
    if (s == DPT_ERR_UNSUPPORTED) {
        /* Nothing fits the planned workspace for this batch size: grow it
         * (rare: smaller batches usually need less). */
        if ((s = choose(g, c, n, 0, CONV_WORKSPACE_LIMIT, &a)) == DPT_OK)
            s = gpu_ctx_reserve_workspace(g, a.workspace);
    }
    if (s != DPT_OK)
        return s;
    int slot = c->next_slot;
    c->next_slot = c->next_slot + 1 < CONV_CACHE ? c->next_slot + 1 : 1;
    c->cache[slot] = a;
    *out = &c->cache[slot];
    return DPT_OK;
}

dpt_status gpu_conv_forward(gpu_ctx *g, gpu_conv *c, int n, const float *x, const float *w,
                            const float *b, float *y)
{
    const conv_algos *a = NULL;
    dpt_status s;
    if ((s = algos_for(g, c, n, &a)) != DPT_OK || (s = set_batch(g, c, n)) != DPT_OK ||
        (s = set_math(g, c, a->fwd_math)) != DPT_OK)
        return s;
    const float one = 1.0f, zero = 0.0f;
    if (c->bf16) {
        /* Buffer: x [n_x], y [n_y], w [n_w]. */
        const size_t nx = (size_t)n * c->c_in * c->h * c->w, ny = (size_t)n * c->c_out * c->oh * c->ow;
        unsigned short *xb = (unsigned short *)gpu_bf16_buffer(
            g, gpu_bf16_part(nx) + gpu_bf16_part(ny) + gpu_bf16_part(c->n_w), c->name);
        if (!xb)
            return DPT_ERR_SHAPE;
        unsigned short *yb = xb + gpu_bf16_part(nx), *wb = yb + gpu_bf16_part(ny);
        if ((s = gpu_to_bf16(g, x, xb, nx)) != DPT_OK || (s = gpu_to_bf16(g, w, wb, c->n_w)) != DPT_OK)
            return s;
        DNN_TRY(g, c, cudnnConvolutionForward(g->dnn, &one, c->xd, xb, c->wd, wb, c->cd, a->fwd,
                                              g->workspace, g->workspace_bytes, &zero, c->yd, yb),
                "forward (bf16)");
        if ((s = gpu_from_bf16(g, yb, y, ny)) != DPT_OK)
            return s;
    } else {
        DNN_TRY(g, c, cudnnConvolutionForward(g->dnn, &one, c->xd, x, c->wd, w, c->cd, a->fwd,
                                              g->workspace, g->workspace_bytes, &zero, c->yd, y),
                "forward");
    }
    if (b)
        s = gpu_bias(g, y, b, n, c->c_out, c->oh * c->ow, 0);
    return s;
}

/* gpu_conv_backward in bf16. Buffer: x then dx [n_x], dy [n_y], w then dw
 * [n_w]: dw first (from x and dy), then dx (from w and dy) over x. */
static dpt_status backward_bf16(gpu_ctx *g, gpu_conv *c, const conv_algos *a, int n,
                                const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db)
{
    const float one = 1.0f, zero = 0.0f;
    const size_t nx = (size_t)n * c->c_in * c->h * c->w, ny = (size_t)n * c->c_out * c->oh * c->ow;
    unsigned short *xb = (unsigned short *)gpu_bf16_buffer(
        g, gpu_bf16_part(nx) + gpu_bf16_part(ny) + gpu_bf16_part(c->n_w), c->name);
    if (!xb)
        return DPT_ERR_SHAPE;
    unsigned short *yb = xb + gpu_bf16_part(nx), *wb = yb + gpu_bf16_part(ny);
    dpt_status s;
    if ((s = set_math(g, c, a->bwd_filter_math)) != DPT_OK ||
        (s = gpu_to_bf16(g, x, xb, nx)) != DPT_OK || (s = gpu_to_bf16(g, dy, yb, ny)) != DPT_OK)
        return s;
    DNN_TRY(g, c, cudnnConvolutionBackwardFilter(g->dnn, &one, c->xd, xb, c->yd, yb, c->cd,
                                                 a->bwd_filter, g->workspace, g->workspace_bytes,
                                                 &zero, c->wd, wb),
            "backward (weight gradient, bf16)");
    if ((s = gpu_from_bf16(g, wb, dw, c->n_w)) != DPT_OK)
        return s;
    if (dx) {
        if ((s = set_math(g, c, a->bwd_data_math)) != DPT_OK ||
            (s = gpu_to_bf16(g, w, wb, c->n_w)) != DPT_OK)
            return s;
        DNN_TRY(g, c, cudnnConvolutionBackwardData(g->dnn, &one, c->wd, wb, c->yd, yb, c->cd,
                                                   a->bwd_data, g->workspace,
                                                   g->workspace_bytes, &zero, c->xd, xb),
                "backward (input gradient, bf16)");
        if ((s = gpu_from_bf16(g, xb, dx, nx)) != DPT_OK)
            return s;
    }
    return db ? gpu_channel_sum(g, dy, n, c->c_out, c->oh * c->ow, db) : DPT_OK;
}

dpt_status gpu_conv_backward(gpu_ctx *g, gpu_conv *c, int n, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *db)
{
    const conv_algos *a = NULL;
    dpt_status s;
    if ((s = algos_for(g, c, n, &a)) != DPT_OK || (s = set_batch(g, c, n)) != DPT_OK ||
        (s = set_math(g, c, a->bwd_filter_math)) != DPT_OK)
        return s;
    const float one = 1.0f, zero = 0.0f;
    if (c->bf16)
        return backward_bf16(g, c, a, n, x, w, dy, dx, dw, db);
    DNN_TRY(g, c, cudnnConvolutionBackwardFilter(g->dnn, &one, c->xd, x, c->yd, dy, c->cd,
                                                 a->bwd_filter, g->workspace, g->workspace_bytes,
                                                 &zero, c->wd, dw),
            "backward (weight gradient)");
    if (dx) {
        if ((s = set_math(g, c, a->bwd_data_math)) != DPT_OK)
            return s;
        DNN_TRY(g, c, cudnnConvolutionBackwardData(g->dnn, &one, c->wd, w, c->yd, dy, c->cd,
                                                   a->bwd_data, g->workspace,
                                                   g->workspace_bytes, &zero, c->xd, dx),
                "backward (input gradient)");
    }
    if (db)
        s = gpu_channel_sum(g, dy, n, c->c_out, c->oh * c->ow, db);
    return s;
}
