/* A stand-in for OpenBLAS's CBLAS (cmake/fallback.cmake): plain loops, in
 * a fixed order (deterministic), for a machine without libopenblas. Only
 * the generic kernel set, the recurrent layers' products and dpt_sgemm's
 * out-of-memory path reach it: the x86 kernel sets have their own GEMM. */
#include "cblas.h"

#include <stdatomic.h>
#include <stddef.h>

static _Atomic int n_threads = 1;

void openblas_set_num_threads(int n) { atomic_store(&n_threads, n < 1 ? 1 : n); }
int openblas_get_num_threads(void) { return atomic_load(&n_threads); }

/* Row-major C [m, n] = alpha·op(A)·op(B) + beta·C. */
static void sgemm_rm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < n; j++)
            c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        if (!tb) {
            /* B [k, n]: rows of B streamed, the inner loop contiguous in j. */
            for (int p = 0; p < k; p++) {
                float a = alpha * (ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
                const float *b = B + (size_t)p * ldb;
                for (int j = 0; j < n; j++)
                    c[j] += a * b[j];
            }
        } else {
            /* B [n, k]: a dot product per element of C. */
            for (int j = 0; j < n; j++) {
                const float *b = B + (size_t)j * ldb;
                float s = 0.0f;
                if (!ta) {
                    const float *a = A + (size_t)i * lda;
                    for (int p = 0; p < k; p++)
                        s += a[p] * b[p];
                } else {
                    for (int p = 0; p < k; p++)
                        s += A[(size_t)p * lda + i] * b[p];
                }
                c[j] += alpha * s;
            }
        }
    }
}

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                 blasint m, blasint n, blasint k, float alpha, const float *A, blasint lda,
                 const float *B, blasint ldb, float beta, float *C, blasint ldc)
{
    int at = ta != CblasNoTrans, bt = tb != CblasNoTrans;
    if (order == CblasRowMajor)
        sgemm_rm(at, bt, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else /* column-major C is row-major Cᵀ = op(B)ᵀ·op(A)ᵀ */
        sgemm_rm(bt, at, n, m, k, alpha, B, ldb, A, lda, beta, C, ldc);
}

void cblas_sger(enum CBLAS_ORDER order, blasint m, blasint n, float alpha, const float *x,
                blasint incx, const float *y, blasint incy, float *A, blasint lda)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float v = alpha * x[(size_t)i * incx] * y[(size_t)j * incy];
            if (order == CblasRowMajor)
                A[(size_t)i * lda + j] += v;
            else
                A[(size_t)j * lda + i] += v;
        }
}
