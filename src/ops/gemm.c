/* dpt_sgemm: the kernel set's GEMM (gemm_kern.h) or, for "generic", the
 * BLAS. See gemm.h. */
#include "ops/gemm.h"
#include "ops/ops.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

static const gemm_isa *isa(void)
{
#ifdef DPT_HAVE_GEMM_X86
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &dpt_gemm_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return &dpt_gemm_isa_avx2;
#endif
    return NULL;
}

int dpt_sgemm_native(void) { return isa() != NULL; }

static void blas(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

size_t dpt_sgemm_buf_floats(int m, int n, int k)
{
    if (m <= 0 || n <= 0 || k <= 0)
        return 0;
#ifdef DPT_HAVE_GEMM_X86
    const size_t a = dpt_gemm_isa_avx512.buf_floats(m, n, k);
    const size_t b = dpt_gemm_isa_avx2.buf_floats(m, n, k);
    return a > b ? a : b;
#else
    return 0;
#endif
}

/* The product with buf NULL: dpt_sgemm allocates it (or takes the BLAS). */
static void sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc, float *buf)
{
    if (m <= 0 || n <= 0)
        return;
    const gemm_isa *g = isa();
    if (!g) {
        blas(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* beta other than 0 and 1: scale C here, then accumulate onto it. */
    if (beta != 0.0f && beta != 1.0f)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                C[(size_t)i * ldc + j] *= beta;
    if (k <= 0 || alpha == 0.0f) {
        if (beta == 0.0f)
            for (int i = 0; i < m; i++)
                memset(C + (size_t)i * ldc, 0, (size_t)n * sizeof *C);
        return;
    }
    void *own = NULL;
    if (!buf) {
        size_t bytes = g->buf_floats(m, n, k) * sizeof(float);
        if (posix_memalign(&own, 64, bytes) != 0) {
            blas(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta == 0.0f ? 0.0f : 1.0f, C, ldc);
            return;
        }
        buf = own;
    }
    g->gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta != 0.0f, C, ldc, buf);
    free(own);
}

void dpt_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc)
{
    sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void dpt_sgemm_buf(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, float *buf)
{
    sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, buf);
}
