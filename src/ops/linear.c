/* Fully connected layer: y [n, out] = x [n, in] · wᵀ + b, w [out, in]
 * (PyTorch's nn.Linear layout), row-major: via cblas_sgemm, or, with the
 * avx2/avx512 kernel sets, fc_kern.h for a few outputs (a GEMM with 10
 * columns is mostly the BLAS packing its operands), which can also apply
 * the batch norm below on the fly, and dptrain's GEMM (gemm.h) for more
 * where it measured faster (see own_gemm()). */
#include "ops/gemm.h"
#include "ops/ops.h"
#include "ops/vec_isa.h"

#include <assert.h>
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

static const fc_isa *small(int out)
{
    return out <= FC_MAX_OUT ? dpt_ops_fc_isa() : NULL;
}

/* The kernels apply a batch norm when no vector step straddles two
 * channels. */
static const fc_isa *fusing(int in, int out, int hw)
{
    const fc_isa *k = small(out);
    return k && hw > 0 && hw % k->step == 0 && in % hw == 0 ? k : NULL;
}

/* dptrain's GEMM (gemm.h) for more outputs than fc_kern.h takes, with
 * the avx512 set: bench/gemm_bench.sh on an AVX-512 EPYC (Zen 5), one
 * thread, against OpenBLAS as this machine sets it (Haswell kernels): the
 * language model's fc (4096 × 256 → 89) 1.7-1.9x in its three products,
 * a 1024 → 1000 head 1.5-1.8x (bench/RESULTS-gemm.md). The avx2 set's
 * GEMM is at parity with the BLAS (0.8-1.2x), so with it (and generic)
 * these layers keep the BLAS. */
static int own_gemm(int out)
{
    return out > FC_MAX_OUT && strcmp(dpt_ops_kernels(), "avx512") == 0;
}

/* C [m, n] = op(A) · op(B) (+ C when beta is 1): the own GEMM or the BLAS. */
static void product(int own, int ta, int tb, int m, int n, int k, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    if (own)
        dpt_sgemm(ta, tb, m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

int dpt_linear_fuses_bn(int in, int out, int hw) { return fusing(in, out, hw) != NULL; }

/* db[o] = Σ_i dy[i][o] in float64. */
static void bias_grad(const float *dy, int n, int out, float *db)
{
    for (int o = 0; o < out; o++) {
        double s = 0.0;
        for (int i = 0; i < n; i++)
            s += dy[(size_t)i * out + o];
        db[o] = (float)s;
    }
}

void dpt_linear_forward(const float *x, const float *w, const float *b, float *y, int n,
                        int in, int out)
{
    const fc_isa *k = small(out);
    if (k) {
        k->forward(x, w, b, y, n, in, out, NULL, 0);
        return;
    }
    /* Seed y with the bias so the GEMM adds onto it (beta = 1). */
    if (b) {
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++)
                y[(size_t)i * out + o] = b[o];
    }
    product(own_gemm(out), 0, 1, n, out, in, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

/* dx [n, in] = dy [n, out] · w [out, in] */
static void input_grad(const float *w, const float *dy, float *dx, int n, int in, int out)
{
    const fc_isa *k = small(out);
    if (k)
        k->backward_dx(dy, w, dx, n, in, out);
    else
        product(own_gemm(out), 0, 0, n, in, out, dy, out, w, in, 0.0f, dx, in);
}

void dpt_linear_backward(const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db, int n, int in, int out)
{
    const fc_isa *k = small(out);
    if (dx)
        input_grad(w, dy, dx, n, in, out);
    /* dw [out, in] = dyᵀ [out, n] · x [n, in] */
    if (k)
        k->backward_dw(x, dy, dw, n, in, out);
    else
        product(own_gemm(out), 1, 0, out, in, n, dy, out, x, in, 0.0f, dw, in);
    if (db)
        bias_grad(dy, n, out, db);
}

void dpt_linear_forward_ex(const float *x, const dpt_bn_apply *xa, int hw, const float *w,
                           const float *b, float *y, int n, int in, int out, float *work)
{
    if (!xa) {
        dpt_linear_forward(x, w, b, y, n, in, out);
        return;
    }
    const fc_isa *k = fusing(in, out, hw);
    if (k) {
        k->forward(x, w, b, y, n, in, out, xa, hw);
        return;
    }
    for (int i = 0; i < n; i++) { /* no kernel for it: an image at a time */
        dpt_bn_apply_forward(x + (size_t)i * in, in / hw, hw, xa, work);
        dpt_linear_forward(work, w, b, y + (size_t)i * out, 1, in, out);
    }
}

void dpt_linear_backward_ex(const float *x, const dpt_bn_apply *xa, int hw, const float *w,
                            const float *dy, float *dx, float *dw, float *db, int n, int in,
                            int out, float *work, double *xg)
{
    assert(!xg || (xa && dx));
    if (!xa) {
        dpt_linear_backward(x, w, dy, dx, dw, db, n, in, out);
        return;
    }
    const int c = in / hw;
    /* The kernels take it when the sums are wanted (in a network the batch
     * norm's backward always needs them). */
    const fc_isa *k = xg ? fusing(in, out, hw) : NULL;
    if (k) {
        for (int ch = 0; ch < 2 * c; ch++)
            xg[ch] = 0.0;
        k->backward_bn(dy, w, dx, dw, n, in, out, xa, hw, x, xg);
        if (db)
            bias_grad(dy, n, out, db);
        return;
    }
    /* No kernel for it: dx does not depend on x, and dw = Σ_i dy_iᵀ ·
     * apply(x_i) an image at a time. */
    if (dx)
        input_grad(w, dy, dx, n, in, out);
    memset(dw, 0, (size_t)out * in * sizeof *dw);
    for (int i = 0; i < n; i++) {
        dpt_bn_apply_forward(x + (size_t)i * in, c, hw, xa, work);
        cblas_sger(CblasRowMajor, out, in, 1.0f, dy + (size_t)i * out, 1, work, 1, dw, in);
    }
    if (db)
        bias_grad(dy, n, out, db);
    if (xg) {
        for (int ch = 0; ch < 2 * c; ch++)
            xg[ch] = 0.0;
        dpt_bn_grad_sums(x, dx, n, c, hw, xa, xg, xg + c);
    }
}
