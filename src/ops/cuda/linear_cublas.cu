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
 * cuBLAS may use TF32 is the context's math mode (gpu_ctx_new). */
#include "ops/cuda/gpu_internal.cuh"

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
    return gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w, in, x, in, b ? 1.0f : 0.0f, y, out,
                "forward");
}

dpt_status gpu_linear_backward(gpu_ctx *g, const float *x, const float *w, const float *dy,
                               float *dx, float *dw, float *db, int n, int in, int out)
{
    dpt_status s = DPT_OK;
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
