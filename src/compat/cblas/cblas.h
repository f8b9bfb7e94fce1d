/* The part of the CBLAS interface dptrain calls, for a build without
 * OpenBLAS (cmake/fallback.cmake, DPT_FALLBACK=cblas): implemented in
 * src/compat/cblas_own.c. The enumerators have CBLAS's standard values. */
#ifndef DPT_COMPAT_CBLAS_H
#define DPT_COMPAT_CBLAS_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
typedef int blasint;

/* C = alpha·op(A)·op(B) + beta·C (beta 0: C is only written). */
void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                 blasint m, blasint n, blasint k, float alpha, const float *A, blasint lda,
                 const float *B, blasint ldb, float beta, float *C, blasint ldc);
/* A [m, n] += alpha·x·yᵀ. */
void cblas_sger(enum CBLAS_ORDER order, blasint m, blasint n, float alpha, const float *x,
                blasint incx, const float *y, blasint incy, float *A, blasint lda);
/* The stand-in is single-threaded: the count is remembered, not used. */
void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

#endif
