/* Fully connected layer: y [n, out] = x [n, in] · wᵀ + b, w [out, in]
 * (PyTorch's nn.Linear layout), row-major: via cblas_sgemm, or, with the
 * avx2/avx512 kernel sets, fc_kern.h for a few outputs (a GEMM with 10
 * columns is mostly the BLAS packing its operands), which can also apply
 * the batch norm below on the fly, and fc_gemm.h for more (see wide()). */
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

/* The kernel set's GEMM for more outputs than fc_kern.h takes, where the
 * set has one. bench/fc_bench.sh on an AVX-512 EPYC, one thread, against
 * OpenBLAS (Haswell kernels): 1.15-1.9x faster on every shape tried (n 64
 * to 4096, in 89 to 1000, out 89 to 1000), forward and backward alike;
 * the avx2 set's measured 0.8-1.07x, so it has none. */
static const fc_isa *wide(int out)
{
    const fc_isa *k = out > FC_MAX_OUT ? dpt_ops_fc_isa() : NULL;
    return k && k->gemm ? k : NULL;
}

/* t [cols, ld] = aᵀ, a [rows, cols]: in 16 × 16 blocks, so neither side
 * is walked with a stride across the whole matrix. */
static void transpose(const float *a, int rows, int cols, float *t, int ld)
{
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 16)
            for (int c = c0; c < cols && c < c0 + 16; c++)
                for (int r = r0; r < rows && r < r0 + 16; r++)
                    t[(size_t)c * ld + r] = a[(size_t)r * cols + c];
}

/* C [m, p] = A · B, B [q, p] row-major (ldb = p), with the kernel set's
 * GEMM: the whole vectors of columns in place, the last p % vec through a
 * copy padded with zeros (so no tile copies B's rows per k). -1 without
 * memory for the copy, C untouched. */
static int gemm_b(const fc_isa *k, const float *A, size_t ars, size_t acs, const float *B,
                  float *C, int m, int p, int q)
{
    const int v = k->vec, pm = p / v * v, pt = p - pm;
    float *t = NULL;
    if (pt) {
        t = calloc((size_t)q * v, sizeof *t);
        if (!t)
            return -1;
        for (int j = 0; j < q; j++)
            memcpy(t + (size_t)j * v, B + (size_t)j * p + pm, (size_t)pt * sizeof *t);
    }
    if (pm)
        k->gemm(A, ars, acs, B, p, NULL, C, p, m, pm, q);
    if (pt)
        k->gemm(A, ars, acs, t, v, NULL, C + pm, p, m, pt, q);
    free(t);
    return 0;
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
    k = wide(out);
    /* The GEMM wants wᵀ [in, out] (vectors along the outputs), its rows
     * padded with zeros to whole vectors; without memory for it, the BLAS. */
    const int ld = k ? (out + k->vec - 1) / k->vec * k->vec : 0;
    float *wt = k ? calloc((size_t)in * ld, sizeof *wt) : NULL;
    if (wt) {
        transpose(w, out, in, wt, ld);
        k->gemm(x, (size_t)in, 1, wt, ld, b, y, out, n, out, in);
        free(wt);
        return;
    }
    /* Seed y with the bias so the GEMM adds onto it (beta = 1). */
    if (b) {
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++)
                y[(size_t)i * out + o] = b[o];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
                b ? 1.0f : 0.0f, y, out);
}

/* dx [n, in] = dy [n, out] · w [out, in] */
static void input_grad(const float *w, const float *dy, float *dx, int n, int in, int out)
{
    const fc_isa *k = small(out);
    const fc_isa *g = wide(out);
    if (k)
        k->backward_dx(dy, w, dx, n, in, out);
    else if (!g || gemm_b(g, dy, (size_t)out, 1, w, dx, n, in, out) != 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                    0.0f, dx, in);
}

void dpt_linear_backward(const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db, int n, int in, int out)
{
    const fc_isa *k = small(out), *g = wide(out);
    if (dx)
        input_grad(w, dy, dx, n, in, out);
    /* dw [out, in] = dyᵀ [out, n] · x [n, in] */
    if (k)
        k->backward_dw(x, dy, dw, n, in, out);
    else if (!g || gemm_b(g, dy, 1, (size_t)out, x, dw, out, in, n) != 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in,
                    0.0f, dw, in);
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
