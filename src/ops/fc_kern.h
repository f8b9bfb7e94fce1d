/* Fully connected layer with few outputs (the classifier: 10 outputs over
 * 11,520 inputs), where a BLAS GEMM of n x 10 x 11520 is mostly packing and
 * bandwidth. Written once with GCC vector extensions and compiled per
 * instruction set next to bn_kern.h (vec_avx512.c, vec_avx2.c). Before
 * inclusion: VN, VT, KN(f) as for bn_kern.h, and the helpers KN(vload),
 * KN(vstore), KN(vset1), KN(vsum) that bn_kern.h defines (include it first).
 *
 * Shapes: x [n, in], w [out, in], y and dy [n, out]; out <= FC_MAX_OUT.
 * Forward takes FC_IMG images at a time, the weight gradient FC_DW_VEC
 * vectors of inputs (both defined by the includer: as many as the registers
 * hold accumulators for) so that each weight vector
 * loaded from cache serves several images; the bodies are inlined with out
 * a constant for the example's 10 classes, so the accumulators stay in
 * registers.
 *
 * With a (dpt_bn_apply, ops.h), x is a batch norm's input, channels of hw
 * consecutive inputs, and the layer sees its output (+ ReLU), formed as
 * each vector is loaded: the normalised activations are never written. The
 * caller (linear.c) guarantees hw % (FC_DW_VEC·VN) == 0, so no vector
 * step straddles two channels and there is no scalar tail. */

/* The batch norm (+ ReLU) of one channel on a vector: plane_normalize's
 * expression, so the values are the unfused pass's. */
static inline VT KN(fc_bn)(VT x, VT m, VT s, VT t, int relu)
{
    VT z = (x - m) * s + t;
    return relu ? KN(keep)(z, z > KN(vset1)(0.0f)) : z;
}

/* y[i][o] = b[o] + Σ_k x[i][k] w[o][k]. */
static inline __attribute__((always_inline)) void KN(fc_forward_body)(
    const float *x, const float *w, const float *b, float *y, int n, int in, const int out,
    const dpt_bn_apply *a, int hw, const int relu)
{
    const int kv = in / VN * VN, span = a ? hw : kv;
    for (int i0 = 0; i0 < n; i0 += FC_IMG) {
        const int ni = n - i0 < FC_IMG ? n - i0 : FC_IMG;
        VT acc[FC_IMG][FC_MAX_OUT];
        for (int i = 0; i < FC_IMG; i++)
            for (int o = 0; o < out; o++)
                acc[i][o] = KN(vset1)(0.0f);
        for (int k0 = 0; k0 < kv; k0 += span) { /* with a, a channel at a time */
            VT m = KN(vset1)(0.0f), sc = m, sh = m;
            if (a) {
                const int ch = k0 / hw;
                m = KN(vset1)(a->mean[ch]), sc = KN(vset1)(a->scale[ch]);
                sh = KN(vset1)(a->shift[ch]);
            }
            for (int k = k0; k < k0 + span; k += VN) {
                VT xv[FC_IMG];
                for (int i = 0; i < FC_IMG; i++) {
                    xv[i] = KN(vload)(x + (size_t)(i0 + (i < ni ? i : 0)) * in + k);
                    if (a)
                        xv[i] = KN(fc_bn)(xv[i], m, sc, sh, relu);
                }
                for (int o = 0; o < out; o++) {
                    VT wv = KN(vload)(w + (size_t)o * in + k);
                    for (int i = 0; i < FC_IMG; i++)
                        acc[i][o] += xv[i] * wv;
                }
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
                           int in, int out, const dpt_bn_apply *a, int hw)
{
    if (a && a->relu && out == 10) /* the example network's */
        KN(fc_forward_body)(x, w, b, y, n, in, 10, a, hw, 1);
    else if (a && a->relu)
        KN(fc_forward_body)(x, w, b, y, n, in, out, a, hw, 1);
    else if (a)
        KN(fc_forward_body)(x, w, b, y, n, in, out, a, hw, 0);
    else if (out == 10)
        KN(fc_forward_body)(x, w, b, y, n, in, 10, NULL, 0, 0);
    else
        KN(fc_forward_body)(x, w, b, y, n, in, out, NULL, 0, 0);
}

/* Images per group in backward: the weights (dx) or weight gradients (dw)
 * stream through the cache once per group, and the group's rows of x or dx
 * are few enough streams for the prefetchers and the TLB. */
#define FC_GROUP 8

/* dx[i][k] = Σ_o dy[i][o] w[o][k]: per group of images, a vector of k at a
 * time, with that vector of every weight row held in registers. */
static inline __attribute__((always_inline)) void KN(fc_backward_dx_body)(
    const float *dy, const float *w, float *dx, int n, int in, const int out)
{
    const int kv = in / VN * VN;
    for (int i0 = 0; i0 < n; i0 += FC_GROUP) {
        const int i1 = n - i0 < FC_GROUP ? n : i0 + FC_GROUP;
        for (int k = 0; k < kv; k += VN) {
            VT wv[FC_MAX_OUT];
            for (int o = 0; o < out; o++)
                wv[o] = KN(vload)(w + (size_t)o * in + k);
            for (int i = i0; i < i1; i++) {
                const float *g = dy + (size_t)i * out;
                VT s = KN(vset1)(0.0f);
                for (int o = 0; o < out; o++)
                    s += KN(vset1)(g[o]) * wv[o];
                KN(vstore)(dx + (size_t)i * in + k, s);
            }
        }
    }
    for (int i = 0; i < n; i++)
        for (int k = kv; k < in; k++) {
            float s = 0.0f;
            for (int o = 0; o < out; o++)
                s += dy[(size_t)i * out + o] * w[(size_t)o * in + k];
            dx[(size_t)i * in + k] = s;
        }
}

static void KN(fc_backward_dx)(const float *dy, const float *w, float *dx, int n, int in, int out)
{
    if (out == 10)
        KN(fc_backward_dx_body)(dy, w, dx, n, in, 10);
    else
        KN(fc_backward_dx_body)(dy, w, dx, n, in, out);
}

/* One step of the weight gradient: dw[o][k + j] for j < FC_DW_VEC·VN over
 * images [i0, i1), added onto dw when add, else from zero; the out x
 * FC_DW_VEC accumulators stay in registers across the images. With bn, x is
 * normalised (m, sc, sh, relu: fc_bn) as it is loaded. */
static inline __attribute__((always_inline)) void KN(fc_dw_step)(
    const float *x, const float *dy, float *dw, int in, const int out, int k, int i0, int i1,
    int add, const int bn, VT m, VT sc, VT sh, const int relu)
{
    VT acc[FC_MAX_OUT][FC_DW_VEC];
    for (int o = 0; o < out; o++)
        for (int v = 0; v < FC_DW_VEC; v++)
            acc[o][v] = add ? KN(vload)(dw + (size_t)o * in + k + v * VN) : KN(vset1)(0.0f);
    for (int i = i0; i < i1; i++) {
        const float *xr = x + (size_t)i * in + k, *g = dy + (size_t)i * out;
        VT xv[FC_DW_VEC];
        for (int v = 0; v < FC_DW_VEC; v++) {
            xv[v] = KN(vload)(xr + v * VN);
            if (bn)
                xv[v] = KN(fc_bn)(xv[v], m, sc, sh, relu);
        }
        for (int o = 0; o < out; o++) {
            VT gv = KN(vset1)(g[o]);
            for (int v = 0; v < FC_DW_VEC; v++)
                acc[o][v] += gv * xv[v];
        }
    }
    for (int o = 0; o < out; o++)
        for (int v = 0; v < FC_DW_VEC; v++)
            KN(vstore)(dw + (size_t)o * in + k + v * VN, acc[o][v]);
}

/* dw[o][k] = Σ_i dy[i][o] x[i][k]: per group of images (the group's rows of
 * x are few enough streams), FC_DW_VEC vectors of k at a time, then a
 * scalar tail for the last in % (FC_DW_VEC·VN) inputs. */
static inline __attribute__((always_inline)) void KN(fc_backward_dw_body)(
    const float *x, const float *dy, float *dw, int n, int in, const int out)
{
    const int step = FC_DW_VEC * VN, kb = in / step * step;
    const VT zero = KN(vset1)(0.0f);
    for (int i0 = 0; i0 < n; i0 += FC_GROUP) {
        const int i1 = n - i0 < FC_GROUP ? n : i0 + FC_GROUP;
        for (int k = 0; k < kb; k += step)
            KN(fc_dw_step)(x, dy, dw, in, out, k, i0, i1, i0 > 0, 0, zero, zero, zero, 0);
    }
    for (int o = 0; o < out; o++)
        for (int k = kb; k < in; k++) {
            float s = 0.0f;
            for (int i = 0; i < n; i++)
                s += dy[(size_t)i * out + o] * x[(size_t)i * in + k];
            dw[(size_t)o * in + k] = s;
        }
}

static void KN(fc_backward_dw)(const float *x, const float *dy, float *dw, int n, int in, int out)
{
    if (out == 10)
        KN(fc_backward_dw_body)(x, dy, dw, n, in, 10);
    else
        KN(fc_backward_dw_body)(x, dy, dw, n, in, out);
}

/* The whole backward with the batch norm a applied to x on the fly, a
 * channel (hw inputs) at a time, so its parameters are broadcast once and
 * the channel's slice of x, w and dw stays in cache between the two passes:
 *   dx: per group of images as fc_backward_dx_body, and while dx is in
 *       registers the batch norm's backward sums xg[ch] += Σ g',
 *       xg[C + ch] += Σ g'·(x − mean), g' = dx masked by the ReLU
 *       (dpt_bn_grad_sums' sums, C = in / hw);
 *   dw: fc_dw_step over every image, x normalised as it is loaded (from
 *       L2: the dx pass just read it).
 * Channels outer: with groups outer (as the plain kernels), x was read from
 * memory twice and w and dw once per group of images. The sums are added in
 * the same order either way, so the bits do not depend on it. (One pass
 * doing dx and dw together measured no faster: its accumulators do not fit
 * the registers.) Needs hw % (FC_DW_VEC·VN) == 0. */
static inline __attribute__((always_inline)) void KN(fc_backward_bn_body)(
    const float *dy, const float *w, float *dx, float *dw, int n, int in, const int out,
    const dpt_bn_apply *a, int hw, const int relu, const float *x, double *xg)
{
    const VT zero = KN(vset1)(0.0f);
    for (int k0 = 0; k0 < in; k0 += hw) {
        const int ch = k0 / hw;
        const VT m = KN(vset1)(a->mean[ch]), sc = KN(vset1)(a->scale[ch]);
        const VT sh = KN(vset1)(a->shift[ch]);
        for (int i0 = 0; i0 < n; i0 += FC_GROUP) {
            const int i1 = n - i0 < FC_GROUP ? n : i0 + FC_GROUP;
            VT s1 = zero, s2 = zero;
            for (int k = k0; k < k0 + hw; k += VN) {
                VT wv[FC_MAX_OUT];
                for (int o = 0; o < out; o++)
                    wv[o] = KN(vload)(w + (size_t)o * in + k);
                for (int i = i0; i < i1; i++) {
                    const float *g = dy + (size_t)i * out;
                    VT s = zero;
                    for (int o = 0; o < out; o++)
                        s += KN(vset1)(g[o]) * wv[o];
                    KN(vstore)(dx + (size_t)i * in + k, s);
                    VT xc = KN(vload)(x + (size_t)i * in + k) - m;
                    if (relu)
                        s = KN(keep)(s, xc * sc + sh > zero);
                    s1 += s;
                    s2 += s * xc;
                }
            }
            xg[ch] += KN(vsum)(s1);
            xg[in / hw + ch] += KN(vsum)(s2);
        }
        for (int k = k0; k < k0 + hw; k += FC_DW_VEC * VN)
            KN(fc_dw_step)(x, dy, dw, in, out, k, 0, n, 0, 1, m, sc, sh, relu);
    }
}

static void KN(fc_backward_bn)(const float *dy, const float *w, float *dx, float *dw, int n,
                               int in, int out, const dpt_bn_apply *a, int hw, const float *x,
                               double *xg)
{
    if (a->relu && out == 10) /* the example network's */
        KN(fc_backward_bn_body)(dy, w, dx, dw, n, in, 10, a, hw, 1, x, xg);
    else if (a->relu)
        KN(fc_backward_bn_body)(dy, w, dx, dw, n, in, out, a, hw, 1, x, xg);
    else
        KN(fc_backward_bn_body)(dy, w, dx, dw, n, in, out, a, hw, 0, x, xg);
}
