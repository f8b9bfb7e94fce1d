/* dptrain's GEMM (src/ops/gemm.c) against a naive double-precision
 * product, for every kernel set this CPU has: random shapes with edge
 * sizes (1, odd, not multiples of any vector width or tile, k past one
 * KC block, n past one NC block), every transpose case, alpha, beta 0, 1
 * and 0.5, leading dimensions wider than the matrices. Also: beta 0
 * never reads C (NaN there stays out), nothing outside C's m × n is
 * written, and the same call gives the same bits. */
#include "dptrain/dptrain.h"
#include "ops/gemm.h"
#include "ops/ops.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t seed = 12345u;

static uint32_t next(void)
{
    seed = seed * 1664525u + 1013904223u;
    return seed >> 8;
}

static int pick(int lo, int hi) { return lo + (int)(next() % (uint32_t)(hi - lo + 1)); }

static float rndf(void) { return (float)(next() * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

#define SENTINEL 1234.5f

/* One case: returns the number of failures. */
static int one(const char *set, int ta, int tb, int m, int n, int k, float alpha, float beta,
               int pad)
{
    const int ar = ta ? k : m, ac = ta ? m : k; /* A's stored shape */
    const int br = tb ? n : k, bc = tb ? k : n;
    const int lda = ac + pad, ldb = bc + pad, ldc = n + pad;
    float *A = malloc(((size_t)ar * lda + 1) * sizeof *A);
    float *B = malloc(((size_t)br * ldb + 1) * sizeof *B);
    float *C = malloc(((size_t)m * ldc + 1) * sizeof *C);
    float *C2 = malloc(((size_t)m * ldc + 1) * sizeof *C2);
    float *C0 = malloc(((size_t)m * ldc + 1) * sizeof *C0);
    int fails = 0;
    if (!A || !B || !C || !C2 || !C0) {
        CHECK(!"out of memory");
        goto done;
    }
    for (size_t i = 0; i < (size_t)ar * lda; i++)
        A[i] = rndf();
    for (size_t i = 0; i < (size_t)br * ldb; i++)
        B[i] = rndf();
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++)
            C0[(size_t)i * ldc + j] = j >= n ? SENTINEL : beta == 0.0f ? NAN : rndf();
    memcpy(C, C0, (size_t)m * ldc * sizeof *C);
    dpt_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    memcpy(C2, C0, (size_t)m * ldc * sizeof *C);
    dpt_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C2, ldc);
    CHECK_MSG(memcmp(C, C2, (size_t)m * ldc * sizeof *C) == 0,
              "%s: two identical calls differ (m %d n %d k %d)", set, m, n, k);
    /* With the packing buffer given (a NaN-filled one, sized by
     * dpt_sgemm_buf_floats): the same bits. */
    {
        const size_t nbuf = dpt_sgemm_buf_floats(m, n, k);
        float *buf = malloc((nbuf + 1) * sizeof *buf);
        if (buf) {
            for (size_t i = 0; i < nbuf; i++)
                buf[i] = NAN;
            memcpy(C2, C0, (size_t)m * ldc * sizeof *C);
            dpt_sgemm_buf(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C2, ldc,
                          nbuf ? buf : NULL);
            CHECK_MSG(memcmp(C, C2, (size_t)m * ldc * sizeof *C) == 0,
                      "%s: dpt_sgemm_buf differs from dpt_sgemm (m %d n %d k %d)", set, m, n, k);
        }
        free(buf);
    }
    double worst = 0.0;
    int wi = 0, wj = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            const float got = C[(size_t)i * ldc + j];
            if (j >= n) {
                if (got != SENTINEL && fails++ < 3)
                    fprintf(stderr, "%s: C[%d][%d] past n written\n", set, i, j);
                continue;
            }
            double s = 0.0, sa = 0.0;
            for (int p = 0; p < k; p++) {
                const double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                const double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            const double c0 = C0[(size_t)i * ldc + j];
            double ref = alpha * s, mag = fabs(alpha) * sa;
            if (beta != 0.0f) {
                ref += beta * c0;
                mag += fabs(beta * c0);
            }
            /* Float rounding of a k-term sum, and of the final scale/add. */
            const double tol = (k + 4) * 1.2e-7 * mag + 1e-30;
            const double e = fabs(got - ref) / tol;
            if (!(e <= 1.0)) {
                if (fails++ < 3)
                    fprintf(stderr, "%s: C[%d][%d] = %.9g, want %.9g (tol %.3g)\n", set, i, j,
                            got, ref, tol);
            } else if (e > worst) {
                worst = e;
                wi = i;
                wj = j;
            }
        }
    if (fails)
        fprintf(stderr, "%s: ta %d tb %d m %d n %d k %d alpha %g beta %g pad %d: %d wrong\n", set,
                ta, tb, m, n, k, alpha, beta, pad, fails);
    (void)wi;
    (void)wj;
done:
    free(A);
    free(B);
    free(C);
    free(C2);
    free(C0);
    return fails;
}

/* The rows of C do not depend on how many rows there are: C's first m rows
 * for m rows of A are the same bits as for m + extra rows (the last panel
 * of a short m runs a kernel of fewer rows than the full tile; its chains
 * of multiply-adds must be those of the full tile). Returns failures. */
static int rows_same(const char *set, int ta, int m, int extra, int n, int k)
{
    const int M = m + extra;
    float *A = malloc((size_t)M * k * sizeof *A), *B = malloc((size_t)k * n * sizeof *B);
    float *C1 = malloc((size_t)M * n * sizeof *C1), *C2 = malloc((size_t)M * n * sizeof *C2);
    float *buf = NULL;
    int fails = 0;
    if (!A || !B || !C1 || !C2)
        goto done;
    /* A [M, k] (ta 0) or [k, M] (ta 1): the first m rows of op(A) equal. */
    for (size_t i = 0; i < (size_t)M * k; i++)
        A[i] = rndf();
    for (size_t i = 0; i < (size_t)k * n; i++)
        B[i] = rndf();
    buf = malloc(dpt_sgemm_buf_floats(M, n, k) * sizeof *buf + 64);
    if (!buf)
        goto done;
    float *al = (float *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    dpt_sgemm_buf(ta, 0, M, n, k, 1.0f, A, ta ? M : k, B, n, 0.0f, C2, n, al);
    if (ta) {
        /* op(A) of m rows: A's first m columns, same leading dimension. */
        dpt_sgemm_buf(ta, 0, m, n, k, 1.0f, A, M, B, n, 0.0f, C1, n, al);
    } else {
        dpt_sgemm_buf(ta, 0, m, n, k, 1.0f, A, k, B, n, 0.0f, C1, n, al);
    }
    if (memcmp(C1, C2, (size_t)m * n * sizeof *C1) != 0) {
        fprintf(stderr, "%s: ta %d m %d (+%d) n %d k %d: rows differ from the taller product\n",
                set, ta, m, extra, n, k);
        fails = 1;
    }
done:
    free(A);
    free(B);
    free(C1);
    free(C2);
    free(buf);
    return fails;
}

int main(void)
{
    static const char *const sets[] = {"generic", "avx2", "avx512"};
    static const int edge[] = {1, 2, 3, 5, 7, 8, 11, 12, 13, 15, 16, 17, 24, 31, 32, 33, 47, 65};
    const int n_edge = (int)(sizeof edge / sizeof *edge);
    for (int s = 0; s < 3; s++) {
        if (!dpt_ops_kernels_supported(sets[s])) {
            fprintf(stderr, "test_gemm: %s kernels not on this CPU, skipped\n", sets[s]);
            continue;
        }
        CHECK(dpt_ops_set_kernels(sets[s]) == 0);
        CHECK(dpt_sgemm_native() == (s != 0));
        int fails = 0;
        /* Small edge shapes, every transpose case and beta. */
        for (int t = 0; t < 4; t++)
            for (int c = 0; c < 24; c++) {
                const int m = edge[next() % n_edge], n = edge[next() % n_edge];
                const int k = edge[next() % n_edge];
                const float beta = c % 3 == 0 ? 0.0f : c % 3 == 1 ? 1.0f : 0.5f;
                fails += one(sets[s], t & 1, t >> 1, m, n, k, c % 4 == 3 ? -0.75f : 1.0f, beta,
                             c % 2 ? pick(1, 9) : 0);
            }
        /* Larger: several row and column blocks, k past one KC block. */
        for (int t = 0; t < 4; t++)
            for (int c = 0; c < 3; c++) {
                const int m = pick(100, 300), n = pick(100, 400), k = pick(250, 700);
                fails += one(sets[s], t & 1, t >> 1, m, n, k, 1.0f, c == 1 ? 1.0f : 0.0f,
                             pick(0, 5));
            }
        /* Long k (a conv's dW over a block of images), thin m. */
        fails += one(sets[s], 0, 1, 16, 27, 5000, 1.0f, 0.0f, 3);
        /* n past one NC block (4096 columns). */
        fails += one(sets[s], 0, 0, 13, 4200, 20, 1.0f, 1.0f, 1);
        /* Short last panels (the 1x1 convolutions' 64 and 32 rows, and
         * every remainder of 12 and 6) against full tiles; dptrain's own
         * GEMM only (the generic set's BLAS blocks as it likes). */
        for (int ta = 0; s > 0 && ta < 2; ta++)
            for (int m = 1; m <= 13; m++)
                fails += rows_same(sets[s], ta, m, 12 - m % 12, 37, 29);
        if (s > 0) {
            fails += rows_same(sets[s], 0, 64, 8, 64, 32);
            fails += rows_same(sets[s], 1, 32, 4, 49, 64);
        }
        /* k 0: C = beta·C. */
        fails += one(sets[s], 0, 0, 5, 7, 0, 1.0f, 0.5f, 2);
        fails += one(sets[s], 1, 0, 5, 7, 0, 1.0f, 0.0f, 0);
        CHECK_MSG(fails == 0, "%s: %d wrong elements", sets[s], fails);
    }
    dpt_ops_set_kernels("auto");
    return tu_exit();
}
