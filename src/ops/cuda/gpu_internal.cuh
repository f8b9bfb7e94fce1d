/* Shared by the .cu files of ops/cuda: the context struct and error helpers.
 * Not included by C code (see gpu_ops.h for the C interface). */
#ifndef DPT_GPU_INTERNAL_CUH
#define DPT_GPU_INTERNAL_CUH

#include "ops/cuda/gpu_ops.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

/* Two pinned slots of this size form the host-to-device staging ring. */
#define GPU_STAGING_SLOT_BYTES ((size_t)1 << 20)
/* Threads per block of the elementwise and reduction kernels (a multiple
 * of 32: the block reductions work warp by warp). */
#define GPU_THREADS 256

/* cuBLAS's workspace, set explicitly: under stream capture cuBLAS does not
 * draw from its default pool, so without one a captured product could
 * take another algorithm than the eager one (other bits). 32 MiB is what
 * cuBLAS itself uses on Hopper. */
#define GPU_BLAS_WORKSPACE_BYTES ((size_t)32 << 20)

struct gpu_ctx {
    int device;
    int allow_tf32;
    int n_sm;                   /* multiprocessors: sizes the reduction grids */
    cudaStream_t stream;        /* compute: every kernel and library call */
    cudaStream_t copy;          /* host-to-device uploads through the ring */
    cudaEvent_t ev_compute;     /* copy stream waits for compute up to here */
    cudaEvent_t ev_copied;      /* compute stream waits for an upload */
    cudaEvent_t ev_slot[2];     /* last DMA out of each staging slot */
    int slot_used[2];
    unsigned char *staging;     /* pinned [2 * GPU_STAGING_SLOT_BYTES] */
    cublasHandle_t blas;
    void *blas_workspace;       /* cuBLAS's own workspace (GPU_BLAS_WORKSPACE_BYTES): the
                                   same one eagerly and inside a CUDA graph capture */
    cudnnHandle_t dnn;
    void *workspace;            /* cuDNN workspace, shared by the conv layers */
    size_t workspace_bytes;
    double *scratch;            /* partial sums of the reductions */
    size_t scratch_doubles;
    int bf16;                   /* DPT_PRECISION_BF16: conv and fc products in bf16 */
    void *bf16_buf;             /* __nv_bfloat16 [bf16_values]: one product's operands
                                   and result (precision.cu), shared by the layers */
    size_t bf16_values;
};

/* dpt_fail with "GPU <d>: [<layer>: ]<what>: <CUDA's message>" and a status
 * chosen from the error (out of memory, no usable device, or DPT_ERR_IO for
 * a failed device operation). */
dpt_status gpu_fail_cuda(const gpu_ctx *g, cudaError_t e, const char *layer, const char *what);
dpt_status gpu_fail_cudnn(const gpu_ctx *g, cudnnStatus_t e, const char *layer, const char *what);
dpt_status gpu_fail_cublas(const gpu_ctx *g, cublasStatus_t e, const char *layer,
                           const char *what);
/* cuBLAS, loaded with dlopen when the first GPU context is made rather
 * than linked: loading libcublas (and the libcublasLt it pulls in) costs
 * about 150 MB of resident memory in every process that links it, GPU or
 * not. Only the entry points dptrain uses. */
typedef struct gpu_blas_api {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
    cublasStatus_t (*set_workspace)(cublasHandle_t, void *, size_t);
    const char *(*status_string)(cublasStatus_t);
    cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const float *, const float *, int, const float *, int, const float *,
                            float *, int);
    /* Mixed types (bf16 operands, float32 results): DPT_PRECISION_BF16. */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                              int, const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
} gpu_blas_api;
/* Filled by gpu_ctx_new; valid in any function that has a gpu_ctx. */
extern gpu_blas_api gpu_blas;

/* After kernel launches: the launch error, if any. */
dpt_status gpu_check_launch(const gpu_ctx *g, const char *what);

/* Blocks for a grid-stride loop over `total` elements. */
static inline unsigned gpu_grid(const gpu_ctx *g, size_t total)
{
    size_t blocks = (total + GPU_THREADS - 1) / GPU_THREADS;
    size_t cap = (size_t)g->n_sm * 16;
    if (blocks > cap)
        blocks = cap;
    return blocks ? (unsigned)blocks : 1u;
}

/* Per-channel sums of the fused ReLU-gated or plain forms, used by conv
 * (bias gradient) and linear (bias gradient): out[ch] = Σ over (n, hw) of
 * x, in float64, rounded to float32. */
dpt_status gpu_channel_sum(gpu_ctx *g, const float *x, int n, int c, int hw, float *out);
/* ---- bf16 products (precision.cu) ---- */
/* The context's bf16 buffer as n_values bf16 values, or NULL after a
 * dpt_fail naming `layer` when the set-up planned less (a bug of the
 * planning: nothing is allocated during a step). */
void *gpu_bf16_buffer(gpu_ctx *g, size_t n_values, const char *layer);
/* A product's parts (x, w, y, ...) each start on 256 bytes in the buffer
 * (what cudaMalloc gives, and what tensor-core kernels' vector loads want):
 * a part of n values takes gpu_bf16_part(n). gpu_ctx_set_bf16 adds room
 * for the rounding up of GPU_BF16_PARTS parts to what it is asked for. */
#define GPU_BF16_PARTS 4
static inline size_t gpu_bf16_part(size_t n) { return (n + 127) & ~(size_t)127; }
/* dst [n] (bf16, device) = src [n] rounded to nearest even; and back. */
dpt_status gpu_to_bf16(gpu_ctx *g, const float *src, void *dst, size_t n);
dpt_status gpu_from_bf16(gpu_ctx *g, const void *src, float *dst, size_t n);

/* y[i, ch, j] = b[ch] (seed == 1) or y += b[ch] (seed == 0). */
dpt_status gpu_bias(gpu_ctx *g, float *y, const float *b, int n, int c, int hw, int seed);

#endif
