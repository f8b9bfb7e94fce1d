/* Fully connected layer through cuBLAS: y [n, out] = x [n, in] · wᵀ + b,
 * w [out, in], all row-major (PyTorch's nn.Linear layout).
 *
 * cuBLAS is column-major: a row-major [r, c] matrix is the column-major
 * [c, r] matrix, its transpose. With X' = xᵀ (in × n), W' = wᵀ (in × out)
 * and Y' = yᵀ (out × n):
 *   forward   Y'  = W'ᵀ · X'          gemm(T, N, out, n, in)
 *   dx        DX' = W' · DY'          gemm(N, N, in, n, out)
 *   dw        DW' = X' · DY'ᵀ         gemm(N, T, in, out, n)
 * The bias gradient is a float64 column sum (as on the CPU). Whether
 * cuBLAS may use TF32 is the context's math mode (gpu_ctx_new). With bf16
 * products (gpu_ctx_set_bf16) x, w and dy are rounded to bf16 copies and
 * multiplied by cublasGemmEx with float32 accumulation into the same
 * float32 results. */
#include "ops/cuda/gpu_internal.cuh"

/* The same product with bf16 copies of a and b (cast by the caller). */
static dpt_status gemm16(gpu_ctx *g, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                         int k, const void *a, int lda, const void *b, int ldb, float beta,
                         float *c, int ldc, const char *what)
{
    const float one = 1.0f;
    cublasStatus_t e = gpu_blas.gemm_ex(g->blas, ta, tb, m, n, k, &one, a, CUDA_R_16BF, lda, b,
                                        CUDA_R_16BF, ldb, &beta, c, CUDA_R_32F, ldc,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return e == CUBLAS_STATUS_SUCCESS ? DPT_OK : gpu_fail_cublas(g, e, "fc", what);
}

/* The bf16 buffer as [n_a] then [n_b] values, the second part at
 * gpu_bf16_part(n_a) (NULL after dpt_fail). */
static unsigned short *bf16_pair(gpu_ctx *g, size_t n_a, size_t n_b)
{
    return (unsigned short *)gpu_bf16_buffer(g, gpu_bf16_part(n_a) + gpu_bf16_part(n_b), "fc");
}

static dpt_status gemm(gpu_ctx *g, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                       int k, const float *a, int lda, const float *b, int ldb, float beta,
                       float *c, int ldc, const char *what)
{
    const float one = 1.0f;
    cublasStatus_t e = gpu_blas.sgemm(g->blas, ta, tb, m, n, k, &one, a, lda, b, ldb, &beta, c, ldc);
    return e == CUBLAS_STATUS_SUCCESS ? DPT_OK : gpu_fail_cublas(g, e, "fc", what);
}

dpt_status gpu_linear_forward(gpu_ctx *g, const float *x, const float *w, const float *b,
                              float *y, int n, int in, int out)
{
    dpt_status s = DPT_OK;
    /* Seed y with the bias so the GEMM adds onto it (beta = 1), as the CPU
     * kernel does. */
    if (b && (s = gpu_bias(g, y, b, n, out, 1, 1)) != DPT_OK)
        return s;
    if (g->bf16) {
        const size_t nx = (size_t)n * in, nw = (size_t)out * in;
        unsigned short *xb = bf16_pair(g, nx, nw);
        if (!xb)
            return DPT_ERR_SHAPE;
        unsigned short *wb = xb + gpu_bf16_part(nx);
        if ((s = gpu_to_bf16(g, x, xb, nx)) != DPT_OK || (s = gpu_to_bf16(g, w, wb, nw)) != DPT_OK)
            return s;
        return gemm16(g, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, wb, in, xb, in, b ? 1.0f : 0.0f,
                      y, out, "forward (bf16)");
    }
    return gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w, in, x, in, b ? 1.0f : 0.0f, y, out,
                "forward");
}

dpt_status gpu_linear_backward(gpu_ctx *g, const float *x, const float *w, const float *dy,
                               float *dx, float *dw, float *db, int n, int in, int out)
{
    dpt_status s = DPT_OK;
    if (g->bf16) {
        /* Buffer: dy, then w (for dx) or x (for dw): one at a time. */
        const size_t ndy = (size_t)n * out, nw = (size_t)out * in, nx = (size_t)n * in;
        unsigned short *dyb = bf16_pair(g, ndy, nw > nx ? nw : nx);
        if (!dyb)
            return DPT_ERR_SHAPE;
        unsigned short *ob = dyb + gpu_bf16_part(ndy);
        if ((s = gpu_to_bf16(g, dy, dyb, ndy)) != DPT_OK)
            return s;
        if (dx && ((s = gpu_to_bf16(g, w, ob, nw)) != DPT_OK ||
                   (s = gemm16(g, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, ob, in, dyb, out, 0.0f,
                               dx, in, "backward (input gradient, bf16)")) != DPT_OK))
            return s;
        if ((s = gpu_to_bf16(g, x, ob, nx)) != DPT_OK ||
            (s = gemm16(g, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, ob, in, dyb, out, 0.0f, dw, in,
                        "backward (weight gradient, bf16)")) != DPT_OK)
            return s;
        return db ? gpu_channel_sum(g, dy, n, out, 1, db) : DPT_OK;
    }
    if (dx && (s = gemm(g, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, w, in, dy, out, 0.0f, dx, in,
                        "backward (input gradient)")) != DPT_OK)
        return s;
    if ((s = gemm(g, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x, in, dy, out, 0.0f, dw, in,
                  "backward (weight gradient)")) != DPT_OK)
        return s;
    /* db[o] = Σ_i dy[i, o]: dy [n, out] is NCHW with c = out, hw = 1. */
    if (db)
        s = gpu_channel_sum(g, dy, n, out, 1, db);
    return s;
}
