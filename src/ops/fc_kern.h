/* Fully connected layer with few outputs (the classifier: 10 outputs over
 * 11,520 inputs), where a BLAS GEMM of n x 10 x 11520 is mostly packing and
 * bandwidth. Written once with GCC vector extensions and compiled per
 * instruction set next to bn_kern.h (vec_avx512.c, vec_avx2.c). Before
 * inclusion: VN, VT, KN(f) as for bn_kern.h, and the helpers KN(vload),
 * KN(vstore), KN(vset1), KN(vsum) that bn_kern.h defines (include it first).
 *
 * Shapes: x [n, in], w [out, in], y and dy [n, out]; out <= FC_MAX_OUT.
 * Forward takes FC_IMG images at a time (defined by the includer: as many as
 * the registers hold FC_IMG x out accumulators) so that each weight vector
 * loaded from cache serves several images; the bodies are inlined with out
 * a constant for the example's 10 classes, so the accumulators stay in
 * registers. */

/* y[i][o] = b[o] + Σ_k x[i][k] w[o][k]. */
static inline __attribute__((always_inline)) void KN(fc_forward_body)(
    const float *x, const float *w, const float *b, float *y, int n, int in, const int out)
{
    const int kv = in / VN * VN;
    for (int i0 = 0; i0 < n; i0 += FC_IMG) {
        const int ni = n - i0 < FC_IMG ? n - i0 : FC_IMG;
        VT acc[FC_IMG][FC_MAX_OUT];
        for (int i = 0; i < FC_IMG; i++)
            for (int o = 0; o < out; o++)
                acc[i][o] = KN(vset1)(0.0f);
        for (int k = 0; k < kv; k += VN) {
            VT xv[FC_IMG];
            for (int i = 0; i < FC_IMG; i++)
                xv[i] = KN(vload)(x + (size_t)(i0 + (i < ni ? i : 0)) * in + k);
            for (int o = 0; o < out; o++) {
                VT wv = KN(vload)(w + (size_t)o * in + k);
                for (int i = 0; i < FC_IMG; i++)
                    acc[i][o] += xv[i] * wv;
            }
        }
        for (int i = 0; i < ni; i++)
            for (int o = 0; o < out; o++) {
                double s = KN(vsum)(acc[i][o]);
                const float *xr = x + (size_t)(i0 + i) * in, *wr = w + (size_t)o * in;
                for (int k = kv; k < in; k++)
                    s += xr[k] * wr[k];
                y[(size_t)(i0 + i) * out + o] = (float)s + (b ? b[o] : 0.0f);
            }
    }
}

static void KN(fc_forward)(const float *x, const float *w, const float *b, float *y, int n,
                           int in, int out)
{
    if (out == 10)
        KN(fc_forward_body)(x, w, b, y, n, in, 10);
    else
        KN(fc_forward_body)(x, w, b, y, n, in, out);
}

/* dx[i][k] = Σ_o dy[i][o] w[o][k]. */
static inline __attribute__((always_inline)) void KN(fc_backward_dx_body)(
    const float *dy, const float *w, float *dx, int n, int in, const int out)
{
    const int kv = in / VN * VN;
    for (int i = 0; i < n; i++) {
        const float *g = dy + (size_t)i * out;
        float *d = dx + (size_t)i * in;
        VT gv[FC_MAX_OUT];
        for (int o = 0; o < out; o++)
            gv[o] = KN(vset1)(g[o]);
        for (int k = 0; k < kv; k += VN) {
            VT s = KN(vset1)(0.0f);
            for (int o = 0; o < out; o++)
                s += gv[o] * KN(vload)(w + (size_t)o * in + k);
            KN(vstore)(d + k, s);
        }
        for (int k = kv; k < in; k++) {
            float s = 0.0f;
            for (int o = 0; o < out; o++)
                s += g[o] * w[(size_t)o * in + k];
            d[k] = s;
        }
    }
}

static void KN(fc_backward_dx)(const float *dy, const float *w, float *dx, int n, int in, int out)
{
    if (out == 10)
        KN(fc_backward_dx_body)(dy, w, dx, n, in, 10);
    else
        KN(fc_backward_dx_body)(dy, w, dx, n, in, out);
}

/* dw[o][k] = Σ_i dy[i][o] x[i][k], FC_DW_IMG images per pass over dw. */
#define FC_DW_IMG 4
static void KN(fc_backward_dw)(const float *x, const float *dy, float *dw, int n, int in, int out)
{
    const int kv = in / VN * VN;
    for (int i0 = 0; i0 < n; i0 += FC_DW_IMG) {
        const int ni = n - i0 < FC_DW_IMG ? n - i0 : FC_DW_IMG;
        float g[FC_DW_IMG][FC_MAX_OUT]; /* broadcast from memory in the loop */
        for (int i = 0; i < FC_DW_IMG; i++)
            for (int o = 0; o < out; o++)
                g[i][o] = i < ni ? dy[(size_t)(i0 + i) * out + o] : 0.0f;
        for (int k = 0; k < kv; k += VN) {
            VT xv[FC_DW_IMG];
            for (int i = 0; i < FC_DW_IMG; i++)
                xv[i] = KN(vload)(x + (size_t)(i0 + (i < ni ? i : 0)) * in + k);
            for (int o = 0; o < out; o++) {
                float *p = dw + (size_t)o * in + k;
                VT s = i0 ? KN(vload)(p) : KN(vset1)(0.0f);
                for (int i = 0; i < FC_DW_IMG; i++)
                    s += KN(vset1)(g[i][o]) * xv[i];
                KN(vstore)(p, s);
            }
        }
        for (int o = 0; o < out; o++)
            for (int k = kv; k < in; k++) {
                float s = i0 ? dw[(size_t)o * in + k] : 0.0f;
                for (int i = 0; i < ni; i++)
                    s += dy[(size_t)(i0 + i) * out + o] * x[(size_t)(i0 + i) * in + k];
                dw[(size_t)o * in + k] = s;
            }
    }
}
