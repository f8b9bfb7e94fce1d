/* Fully connected layer: y [n, out] = x [n, in] · wᵀ + b, w [out, in]
 * (PyTorch's nn.Linear layout), row-major: via cblas_sgemm, or, for a few
 * outputs with the avx2/avx512 kernel sets, fc_kern.h (a GEMM with 10
 * columns is mostly the BLAS packing its operands). */
#include "ops/ops.h"
#include "ops/vec_isa.h"

#include <cblas.h>

static const fc_isa *small(int out)
{
    return out <= FC_MAX_OUT ? dpt_ops_fc_isa() : NULL;
}

void dpt_linear_forward(const float *x, const float *w, const float *b, float *y, int n,
                        int in, int out)
{
    const fc_isa *k = small(out);
    if (k) {
        k->forward(x, w, b, y, n, in, out);
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

void dpt_linear_backward(const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db, int n, int in, int out)
{
    const fc_isa *k = small(out);
    if (k) {
        if (dx)
            k->backward_dx(dy, w, dx, n, in, out);
        k->backward_dw(x, dy, dw, n, in, out);
    } else {
        /* dx [n, in] = dy [n, out] · w [out, in] */
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w,
                        in, 0.0f, dx, in);
        /* dw [out, in] = dyᵀ [out, n] · x [n, in] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in,
                    0.0f, dw, in);
    }
    if (db) {
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int i = 0; i < n; i++)
                s += dy[(size_t)i * out + o];
            db[o] = (float)s;
        }
    }
}
