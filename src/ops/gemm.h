/* dptrain's own single-precision GEMM (internal to ops/): packed panels and
 * a register-blocked micro-kernel per instruction set (gemm_kern.h), so
 * that a BLAS that the machine forces onto narrower kernels (OpenBLAS with
 * OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU) does not decide the speed
 * of fc layers and GEMM-lowered convolutions. The kernel set in use
 * (dpt_ops_kernels()) picks the code: avx512 and avx2 have their own,
 * generic calls cblas_sgemm.
 *
 * Single-threaded (each worker is one core) and deterministic: the same
 * inputs and the same kernel set give the same bits, whatever the thread
 * count of the process or where a tile falls. */
#ifndef DPT_OPS_GEMM_H
#define DPT_OPS_GEMM_H

#include <stddef.h>

/* C [m, n] = alpha·op(A)·op(B) + beta·C, all row-major; op(A) [m, k] is
 * A [m, k] (lda ≥ k) when ta is 0 and Aᵀ with A [k, m] (lda ≥ m) when 1;
 * op(B) [k, n] likewise (B [k, n], ldb ≥ n, or B [n, k], ldb ≥ k). ldc ≥ n.
 * beta 0: C is only written (it may hold anything); any other beta scales
 * C first. m, n or k 0 are allowed (k 0: C = beta·C). Without memory for
 * its packing buffers it falls back to cblas_sgemm. */
void dpt_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* dpt_sgemm with its packing buffer given: buf holds
 * dpt_sgemm_buf_floats(m, n, k) floats (best on a 64-byte boundary), so a
 * caller making many products (conv_pointwise.c, an image at a time)
 * allocates nothing per call. The same bits as dpt_sgemm. */
void dpt_sgemm_buf(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, float *buf);
/* Floats dpt_sgemm_buf needs for [m, n] with k, for any kernel set (the
 * set may change between sizing and calling). */
size_t dpt_sgemm_buf_floats(int m, int n, int k);

/* 1 when the kernel set in use has its own GEMM kernels (0: dpt_sgemm is
 * cblas_sgemm). */
int dpt_sgemm_native(void);

/* The per-set table (gemm_kern.h): floats of packing buffer for a shape,
 * and C = alpha·op(A)·op(B) (+ C when accum) for k > 0. */
typedef struct gemm_isa {
    size_t (*buf_floats)(int m, int n, int k);
    void (*gemm)(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                 const float *B, int ldb, int accum, float *C, int ldc, float *buf);
} gemm_isa;

#if defined(__x86_64__) || defined(__i386__)
#define DPT_HAVE_GEMM_X86 1
extern const gemm_isa dpt_gemm_isa_avx512, dpt_gemm_isa_avx2;
#endif

#endif
