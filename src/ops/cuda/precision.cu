/* BF16 products (DPT_PRECISION_BF16): the casts between float32 and
 * bfloat16 and the context's buffer for the bf16 copies.
 *
 * Activations, gradients and learnables stay float32 in device memory
 * between layers, so every other kernel keeps one type; a convolution or
 * fc layer casts its operands into this buffer right before its product
 * and widens the result right after (conv_cudnn.cu, linear_cublas.cu).
 * That costs a pass over x, w and y per product, small next to the
 * product's own traffic, and leaves the master weights, batch norm and the
 * loss in float32 without a second code path. The buffer is one per
 * context (layers run one after another on its stream), planned at
 * set-up for the largest layer, so a step allocates nothing (CUDA graphs
 * can capture it). */
#include "ops/cuda/gpu_internal.cuh"

#include <cuda_bf16.h>

__global__ void to_bf16_kernel(const float *__restrict__ src, __nv_bfloat16 *__restrict__ dst,
                               size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]); /* nearest even; NaN stays NaN */
}

__global__ void from_bf16_kernel(const __nv_bfloat16 *__restrict__ src, float *__restrict__ dst,
                                 size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]); /* exact */
}

dpt_status gpu_to_bf16(gpu_ctx *g, const float *src, void *dst, size_t n)
{
    if (!n)
        return DPT_OK;
    to_bf16_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(src, (__nv_bfloat16 *)dst, n);
    return gpu_check_launch(g, "round to bf16");
}

dpt_status gpu_from_bf16(gpu_ctx *g, const void *src, float *dst, size_t n)
{
    if (!n)
        return DPT_OK;
    from_bf16_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(
        (const __nv_bfloat16 *)src, dst, n);
    return gpu_check_launch(g, "widen bf16");
}

dpt_status gpu_ctx_set_bf16(gpu_ctx *g, size_t max_values)
{
    g->bf16 = 1;
    max_values += GPU_BF16_PARTS * 128; /* each part rounded up to 128 values */
    if (max_values <= g->bf16_values)
        return DPT_OK;
    cudaError_t e;
    /* Layers may still read the old buffer: wait before freeing it. */
    if ((e = cudaStreamSynchronize(g->stream)) != cudaSuccess)
        return gpu_fail_cuda(g, e, NULL, "bf16 buffer");
    cudaFree(g->bf16_buf);
    g->bf16_buf = NULL;
    g->bf16_values = 0;
    if ((e = cudaMalloc(&g->bf16_buf, max_values * sizeof(__nv_bfloat16))) != cudaSuccess)
        return gpu_fail_cuda(g, e, NULL, "allocate the bf16 buffer");
    g->bf16_values = max_values;
    return DPT_OK;
}

int gpu_ctx_bf16(const gpu_ctx *g) { return g->bf16; }

void *gpu_bf16_buffer(gpu_ctx *g, size_t n_values, const char *layer)
{
    if (n_values <= g->bf16_values && g->bf16_buf)
        return g->bf16_buf;
    dpt_fail(DPT_ERR_SHAPE, "GPU %d: %s: the bf16 products need %zu values, set-up planned %zu",
             g->device, layer, n_values, g->bf16_values);
    return NULL;
}
