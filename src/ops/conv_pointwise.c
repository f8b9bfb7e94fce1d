/* The POINTWISE convolution algorithm (see conv_pointwise.h).
 *
 * A 1x1 filter with stride s and no padding reads input pixel
 * (oy·s, ox·s) for output pixel (oy, ox): with W [c_out, c_in] and an
 * image's input seen as X [c_in, P] (P = out_h·out_w, the sampled pixels;
 * with G groups each product below is G products on the groups' rows)
 *   forward   Y  [c_out, P] = W · X (+ b)
 *   backward  dW [c_out, c_in] = Σ_images G · Xᵀ   (G: the gradient used)
 *             dX [c_in, P]     = Wᵀ · G, scattered onto the sampled pixels
 *                                of dx (the others get 0).
 * Per block of nb images (dpt_conv_pointwise_block, from the shape only,
 * so the sums and their order never depend on anything else) the
 * products run over nb·P columns. A block's operands are read in place
 * when they already are the matrix (one image, stride 1, no batch norm);
 * otherwise packed once into a block buffer [c, nb·P], the input's batch
 * norm (xa) and the stride applied while copying, the output gradient's
 * batch norm (dya) likewise. What is left per block (bias, the output's
 * batch-norm sums, the bias gradient, the input batch norm's gradient
 * sums) runs on the block while it is still in cache, not in passes over
 * the whole batch afterwards. */
#include "ops/conv_pointwise.h"
#include "ops/gemm.h"

#include <assert.h>
#include <string.h>
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

/* Columns a block aims at (nb·P): enough for the GEMM's register tiles
 * (NR 32) on small planes. A plane of a multiple of 32 pixels (or a large
 * one) makes its own block: its product then writes y and dx in place,
 * with no copy out of a block buffer. BLOCK_MAX_FLOATS bounds the block
 * buffers (4 MiB), so they stay in L2/L3. */
#define BLOCK_COLS 256
#define BLOCK_MAX_FLOATS ((size_t)1 << 20)

static int groups_of(const dpt_conv2d_desc *d) { return d->groups > 1 ? d->groups : 1; }

int dpt_conv_pointwise_supports(const dpt_conv2d_desc *d)
{
    /* A 1x1 filter reads no neighbour, so dilation changes nothing. */
    return d->kh == 1 && d->kw == 1 && d->pad == 0;
}

int dpt_conv_pointwise_block(const dpt_conv2d_desc *d)
{
    const size_t P = (size_t)d->out_h * d->out_w;
    if (P % 32 == 0 || P >= 512)
        return 1;
    const size_t per = ((size_t)d->c_in + d->c_out) * P; /* block floats per image */
    size_t nb = (BLOCK_COLS + P - 1) / P;
    if (nb * per > BLOCK_MAX_FLOATS)
        nb = BLOCK_MAX_FLOATS / per;
    if (nb > (size_t)d->n)
        nb = (size_t)d->n;
    return nb < 1 ? 1 : (int)nb;
}

/* work: xb [c_in, nb·P] (the packed input, then the block's dX), yb
 * [c_out, nb·P] (the block's Y, or G), the GEMM's packing buffer, Wᵀ
 * (per group [c_in/G, c_out/G]), then 3·c_out doubles (bias-gradient
 * sums; a block's output sums). Each part on a 64-byte boundary of work. */
static size_t up16(size_t f) { return (f + 15) & ~(size_t)15; }

static size_t yb_offset(const dpt_conv2d_desc *d)
{
    const size_t P = (size_t)d->out_h * d->out_w;
    return up16((size_t)d->c_in * P * (size_t)dpt_conv_pointwise_block(d));
}

static size_t gbuf_offset(const dpt_conv2d_desc *d)
{
    const size_t P = (size_t)d->out_h * d->out_w;
    return yb_offset(d) + up16((size_t)d->c_out * P * (size_t)dpt_conv_pointwise_block(d));
}

/* The most packing buffer any of the three products needs for any block
 * (a partial last block has other column counts, and the GEMM's blocking
 * is not monotone in them). */
static size_t gbuf_floats(const dpt_conv2d_desc *d)
{
    const int P = d->out_h * d->out_w, nb = dpt_conv_pointwise_block(d);
    size_t most = 0;
    for (int m = 1; m <= nb; m++) {
        const int cols = m * P;
        const int ci = d->c_in / groups_of(d), co = d->c_out / groups_of(d);
        const size_t f[4] = {dpt_sgemm_buf_floats(co, cols, ci),
                             dpt_sgemm_buf_floats(co, ci, cols),
                             dpt_sgemm_buf_floats(ci, cols, co),
                             dpt_sgemm_buf_floats(ci, co, cols)};
        for (int k = 0; k < 4; k++)
            most = f[k] > most ? f[k] : most;
    }
    return most;
}

static size_t wt_offset(const dpt_conv2d_desc *d) { return gbuf_offset(d) + up16(gbuf_floats(d)); }

static size_t sums_offset(const dpt_conv2d_desc *d)
{
    return wt_offset(d) + up16((size_t)d->c_out * (d->c_in / groups_of(d)));
}

/* Then the output sums' per-lane float64 accumulators (out_sums16): 2·16
 * doubles per output channel. */
static size_t lanes_offset(const dpt_conv2d_desc *d)
{
    return sums_offset(d) + up16(2 * 3 * (size_t)d->c_out);
}

/* Then dWᵀ (per group [c_in/G, c_out/G]) for dw_transposed. */
static size_t dwt_offset(const dpt_conv2d_desc *d)
{
    return lanes_offset(d) + up16(2 * 2 * 16 * (size_t)d->c_out);
}

size_t dpt_conv_pointwise_work_floats(const dpt_conv2d_desc *d)
{
    return dwt_offset(d) + (size_t)d->c_out * (d->c_in / groups_of(d));
}

/* Whether the weight gradient is formed as dWᵀ = X · Gᵀ (then transposed
 * once): both products sum over the block's pixels, the contiguous index of
 * both operands, so the GEMM packs one of them transposed; it is G's rows
 * then, fewer than X's when c_out < c_in (resnet's 64 -> 32 1x1: half the
 * transposing). Each dW element is the same chain of products over the
 * pixels in order either way. */
static int dw_transposed(const dpt_conv2d_desc *d) { return d->c_out < d->c_in; }

/* The element loops, compiled for each kernel set (avx512, avx2 through
 * target attributes, portable C otherwise) so that they run at the
 * vector width the GEMM does: built with the baseline flags alone they
 * stayed scalar, and the output gradient's batch norm alone took a
 * quarter of the backward pass. Each element gets the same float
 * expressions whatever the width (the build does not contract a·b + c),
 * so every set computes the same bits here. */
typedef struct pw_loops {
    /* dst[j] = src[j] through a batch norm (mu, sc, sh; ReLU when relu). */
    void (*bn_row)(const float *src, float *dst, int n, float mu, float sc, float sh, int relu);
    /* out[p] = the gradient at a batch norm's input from g at its output
     * and y its input (dpt_bn_apply's backward expression). */
    void (*dy_row)(const float *g, const float *y, float *out, int n, float mu, float sc, float sh,
                   float kf, float ka, float kb, int relu);
    /* dst[p] = src[p] + b. */
    void (*bias_row)(const float *src, float *dst, int n, float b);
    /* dst [oh, ow] = src [·, w] at rows and columns 2·(oy, ox), through
     * bn_row's batch norm when bn: a stride-2 input plane. */
    void (*pick2_plane)(const float *src, int h, int w, float *dst, int oh, int ow, int bn,
                        float mu, float sc, float sh, int relu);
    /* dst [h, w] = src [·, ow] at even rows and columns, 0 elsewhere: dx's
     * plane under stride 2 from its dX plane. */
    void (*spread2_plane)(const float *src, int ow, float *dst, int h, int w);
} pw_loops;

/* Loads are unconditional (a select, not a branch), so the loops
 * vectorise. */
#define PW_LOOPS(S, ATTR)                                                                        \
    ATTR static void bn_row_##S(const float *restrict src, float *restrict dst, int n, float mu,  \
                                float sc, float sh, int relu)                                    \
    {                                                                                            \
        if (relu)                                                                                \
            for (int j = 0; j < n; j++) {                                                        \
                const float z = (src[j] - mu) * sc + sh;                                         \
                dst[j] = z > 0.0f ? z : 0.0f;                                                    \
            }                                                                                    \
        else                                                                                     \
            for (int j = 0; j < n; j++)                                                          \
                dst[j] = (src[j] - mu) * sc + sh;                                                \
    }                                                                                            \
    ATTR static void dy_row_##S(const float *restrict g, const float *restrict y,                \
                                float *restrict out, int n, float mu, float sc, float sh,        \
                                float kf, float ka, float kb, int relu)                          \
    {                                                                                            \
        if (relu)                                                                                \
            for (int p = 0; p < n; p++) {                                                        \
                const float xc = y[p] - mu, gp = g[p];                                           \
                const float gv = xc * sc + sh > 0.0f ? gp : 0.0f;                                \
                out[p] = kf * gv - ka - xc * kb;                                                 \
            }                                                                                    \
        else                                                                                     \
            for (int p = 0; p < n; p++) {                                                        \
                const float xc = y[p] - mu;                                                      \
                out[p] = kf * g[p] - ka - xc * kb;                                               \
            }                                                                                    \
    }                                                                                            \
    ATTR static void bias_row_##S(const float *src, float *dst, int n, float b)                  \
    {                                                                                            \
        for (int p = 0; p < n; p++)                                                              \
            dst[p] = src[p] + b;                                                                 \
    }                                                                                            \
    static const pw_loops loops_##S = {bn_row_##S, dy_row_##S, bias_row_##S, pick2_plane_##S, \
                                       spread2_plane_##S};

/* The portable stride-2 planes, and the tails of the vector ones. */
static void pick2_tail(const float *src, float *dst, int j, int n, int bn, float mu, float sc,
                       float sh, int relu)
{
    for (; j < n; j++) {
        const float v = src[2 * j];
        if (!bn) {
            dst[j] = v;
            continue;
        }
        const float z = (v - mu) * sc + sh;
        dst[j] = relu && !(z > 0.0f) ? 0.0f : z;
    }
}

static void pick2_plane_c(const float *src, int h, int w, float *dst, int oh, int ow, int bn,
                          float mu, float sc, float sh, int relu)
{
    (void)h;
    for (int oy = 0; oy < oh; oy++)
        pick2_tail(src + (size_t)2 * oy * w, dst + (size_t)oy * ow, 0, ow, bn, mu, sc, sh, relu);
}

static void spread2_plane_c(const float *src, int ow, float *dst, int h, int w)
{
    for (int yy = 0; yy < h; yy++, dst += w)
        for (int q = 0; q < w; q++)
            dst[q] = yy % 2 || q % 2 ? 0.0f : src[(size_t)(yy / 2) * ow + q / 2];
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define PW_X86 1
/* Stride-2 planes in whole vectors: the input's lines read with full
 * loads (a float at a time, the strided reads of a cold input were most of
 * the layer's forward in a network), the even values gathered by a
 * permute (AVX-512: two output rows of up to 8 per vector), edges through
 * masks; the batch norm as bn_row's float expressions, unfused. dx's
 * plane likewise written once, a vector at a time (it was zeroed, then
 * scattered into a float at a time). */
#define PW_AVX512 __attribute__((target("avx512f")))
#define PW_AVX2 __attribute__((target("avx2")))
static __mmask16 low16(int k)
{
    return (__mmask16)(k >= 16 ? 0xffff : (1u << (k > 0 ? k : 0)) - 1);
}

PW_AVX512 static __m512 bn16(__m512 v, int bn, __m512 mu, __m512 sc, __m512 sh, int relu)
{
    if (!bn)
        return v;
    v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, mu), sc), sh);
    /* z > 0 ? z : 0, NaN to 0 as the scalar select */
    return relu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), v)
                : v;
}

PW_AVX512 static void pick2_plane_avx512(const float *src, int h, int w, float *dst, int oh,
                                         int ow, int bn, float mu, float sc, float sh, int relu)
{
    const __m512 vmu = _mm512_set1_ps(mu), vsc = _mm512_set1_ps(sc), vsh = _mm512_set1_ps(sh);
    const size_t hw = (size_t)h * w;
    if (ow <= 8) { /* rows oy, oy + 1 from input rows 2oy, 2oy + 2 */
        int ix[16];
        for (int l = 0; l < 16; l++)
            ix[l] = l < ow ? 2 * l : l < 2 * ow ? 16 + 2 * (l - ow) : 0;
        const __m512i idx = _mm512_loadu_si512(ix);
        const __mmask16 ma = low16(2 * ow - 1);
        for (int oy = 0; oy < oh; oy += 2) {
            const int two = oy + 1 < oh;
            /* unmasked where the plane has the 16 values: a masked load
             * that misses the cache measured slower than a plain one */
            const size_t ra = (size_t)2 * oy * w, rb = ra + 2 * (size_t)w;
            const __m512 a = ra + 16 <= hw ? _mm512_loadu_ps(src + ra)
                                           : _mm512_maskz_loadu_ps(ma, src + ra);
            const __m512 b = !two ? _mm512_setzero_ps()
                             : rb + 16 <= hw ? _mm512_loadu_ps(src + rb)
                                             : _mm512_maskz_loadu_ps(ma, src + rb);
            const __m512 v = _mm512_permutex2var_ps(a, idx, b);
            _mm512_mask_storeu_ps(dst + (size_t)oy * ow, low16((1 + two) * ow),
                                  bn16(v, bn, vmu, vsc, vsh, relu));
        }
        return;
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                           30);
    for (int oy = 0; oy < oh; oy++) {
        const float *s = src + (size_t)2 * oy * w;
        float *o = dst + (size_t)oy * ow;
        for (int j = 0; j < ow; j += 16) {
            const int r = ow - j < 16 ? ow - j : 16, ns = 2 * r - 1; /* values to read */
            const __m512 a = _mm512_maskz_loadu_ps(low16(ns), s + 2 * j);
            const __m512 b = _mm512_maskz_loadu_ps(low16(ns - 16), s + 2 * j + 16);
            const __m512 v = _mm512_permutex2var_ps(a, even, b);
            _mm512_mask_storeu_ps(o + j, low16(r), bn16(v, bn, vmu, vsc, vsh, relu));
        }
    }
}

PW_AVX512 static void spread2_plane_avx512(const float *src, int ow, float *dst, int h, int w)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512i half = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const size_t hw = (size_t)h * w;
    for (int yy = 0; yy < h; yy++, dst += w)
        for (int q = 0; q < w; q += 16) {
            /* A row's last vector may run into the next row (written
             * after it) rather than be masked: masked stores into lines
             * not in cache measured slow; only the plane's end is masked. */
            const size_t at = (size_t)yy * w + q;
            const int r = w - q < 16 ? w - q : 16;
            const __mmask16 ms = at + 16 <= hw ? 0xffff : low16(r);
            __m512 v = zero;
            if (yy % 2 == 0) { /* the even lanes take the next (r + 1) / 2 of dX's row
                                * (a permute: an expanding load is slow on some CPUs) */
                const __m512 s = _mm512_maskz_loadu_ps(low16((r + 1) / 2),
                                                       src + (size_t)(yy / 2) * ow + q / 2);
                v = _mm512_maskz_permutexvar_ps((__mmask16)0x5555, half, s);
            }
            _mm512_mask_storeu_ps(dst + q, ms, v);
        }
}

/* The output's batch-norm sums over m images of y [c, P] (AVX-512): per
 * plane, Σ (v − K) and Σ (v − K)² in 16 float lanes (K: the channel's
 * first value, dpt_bn_sums' shift), each lane then added into its own
 * float64 accumulator, acc [c][2][16] (Σ, Σ²): dpt_bn_sums' numerics
 * (float within a plane, float64 across planes) without a call and two
 * horizontal sums per plane, which took a quarter of resnet's projection
 * forward. */
PW_AVX512 static void out_sums16(const float *y, int m, int c, int P, const float *K,
                                 double *acc)
{
    const int full = P / 16 * 16;
    const __mmask16 tail = low16(P - full);
    for (int i = 0; i < m; i++)
        for (int ch = 0; ch < c; ch++) {
            const float *p = y + ((size_t)i * c + ch) * P;
            const __m512 k = _mm512_set1_ps(K[ch]);
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
            for (int j = 0; j < full; j += 16) {
                const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(p + j), k);
                a = _mm512_add_ps(a, v);
                b = _mm512_fmadd_ps(v, v, b);
            }
            if (tail) {
                const __m512 v =
                    _mm512_maskz_sub_ps(tail, _mm512_maskz_loadu_ps(tail, p + full), k);
                a = _mm512_add_ps(a, v);
                b = _mm512_fmadd_ps(v, v, b);
            }
            double *q = acc + (size_t)ch * 32;
            const __m512i ai = _mm512_castps_si512(a), bi = _mm512_castps_si512(b);
            const __m256 ah = _mm256_castsi256_ps(_mm512_extracti64x4_epi64(ai, 1));
            const __m256 bh = _mm256_castsi256_ps(_mm512_extracti64x4_epi64(bi, 1));
            const __m512d a0 = _mm512_cvtps_pd(_mm512_castps512_ps256(a)), a1 = _mm512_cvtps_pd(ah);
            const __m512d b0 = _mm512_cvtps_pd(_mm512_castps512_ps256(b)), b1 = _mm512_cvtps_pd(bh);
            _mm512_storeu_pd(q, _mm512_add_pd(_mm512_loadu_pd(q), a0));
            _mm512_storeu_pd(q + 8, _mm512_add_pd(_mm512_loadu_pd(q + 8), a1));
            _mm512_storeu_pd(q + 16, _mm512_add_pd(_mm512_loadu_pd(q + 16), b0));
            _mm512_storeu_pd(q + 24, _mm512_add_pd(_mm512_loadu_pd(q + 24), b1));
        }
}

PW_AVX2 static __m256i low8(int k)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

PW_AVX2 static void pick2_plane_avx2(const float *src, int h, int w, float *dst, int oh, int ow,
                                     int bn, float mu, float sc, float sh, int relu)
{
    const size_t hw = (size_t)h * w;
    const __m256 vmu = _mm256_set1_ps(mu), vsc = _mm256_set1_ps(sc), vsh = _mm256_set1_ps(sh);
    const __m256 zero = _mm256_setzero_ps();
    for (int oy = 0; oy < oh; oy++) {
        const float *s = src + (size_t)2 * oy * w;
        float *o = dst + (size_t)oy * ow;
        for (int j = 0; j < ow; j += 8) {
            const int r = ow - j < 8 ? ow - j : 8, ns = 2 * r - 1;
            const int room = (size_t)(s - src) + 2 * j + 16 <= hw; /* as the AVX-512 one */
            const __m256 a = room ? _mm256_loadu_ps(s + 2 * j)
                                  : _mm256_maskload_ps(s + 2 * j, low8(ns));
            const __m256 b = room ? _mm256_loadu_ps(s + 2 * j + 8)
                                  : _mm256_maskload_ps(s + 2 * j + 8, low8(ns - 8));
            /* a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs in order */
            const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            __m256 v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8));
            if (bn) {
                v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, vmu), vsc), vsh);
                if (relu)
                    v = _mm256_and_ps(v, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
            }
            if (r == 8)
                _mm256_storeu_ps(o + j, v);
            else
                _mm256_maskstore_ps(o + j, low8(r), v);
        }
    }
}

PW_AVX2 static void spread2_plane_avx2(const float *src, int ow, float *dst, int h, int w)
{
    const __m128 zero = _mm_setzero_ps();
    for (int yy = 0; yy < h; yy++, dst += w) {
        if (yy % 2) {
            memset(dst, 0, (size_t)w * sizeof *dst);
            continue;
        }
        const float *s = src + (size_t)(yy / 2) * ow;
        int q = 0;
        for (; q + 8 <= w; q += 8) { /* s[q/2 .. q/2 + 3], all within the row's ow */
            const __m128 v = _mm_loadu_ps(s + q / 2);
            _mm256_storeu_ps(dst + q,
                             _mm256_set_m128(_mm_unpackhi_ps(v, zero), _mm_unpacklo_ps(v, zero)));
        }
        for (; q < w; q++)
            dst[q] = q % 2 ? 0.0f : s[q / 2];
    }
}
#endif

PW_LOOPS(c, )
#ifdef PW_X86
PW_LOOPS(avx2, PW_AVX2)
PW_LOOPS(avx512, PW_AVX512)
#endif

static const pw_loops *loops(void)
{
#ifdef PW_X86
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &loops_avx512;
    if (strcmp(k, "avx2") == 0)
        return &loops_avx2;
#endif
    return &loops_c;
}

/* Asks for the lines of the m images from x on that pack_x will read, so
 * that under stride the next block's input arrives while this block's
 * products run (a network finds it out of cache: its rows, every s-th,
 * did not come early enough on their own). */
static void prefetch_x(const dpt_conv2d_desc *d, const float *x, int m)
{
    const int s = d->stride;
    const size_t span = ((size_t)(d->out_w - 1) * s + 1) * sizeof(float);
    for (int i = 0; i < m; i++)
        for (int ci = 0; ci < d->c_in; ci++) {
            const char *plane = (const char *)(x + ((size_t)i * d->c_in + ci) * d->h * d->w);
            for (int oy = 0; oy < d->out_h; oy++) {
                const char *row = plane + (size_t)oy * s * d->w * sizeof(float);
                for (size_t o = 0; o < span; o += 64)
                    __builtin_prefetch(row + o);
                __builtin_prefetch(row + span - 1);
            }
        }
}

/* xb [c_in, cols], columns i·P .. i·P + P of image i of the m images
 * from x on: its sampled pixels, through a's batch norm when a is set
 * (dpt_bn_apply's expressions, the ReLU's mask included). */
static void pack_x(const dpt_conv2d_desc *d, const float *x, int m, const dpt_bn_apply *a,
                   float *xb, size_t cols)
{
    const pw_loops *L = loops();
    const int s = d->stride, oh = d->out_h, ow = d->out_w, P = oh * ow;
    const size_t hw = (size_t)d->h * d->w, x_img = (size_t)d->c_in * hw;
    for (int ci = 0; ci < d->c_in; ci++) {
        const float mu = a ? a->mean[ci] : 0.0f, sc = a ? a->scale[ci] : 1.0f;
        const float sh = a ? a->shift[ci] : 0.0f;
        const int relu = a && a->relu;
        for (int i = 0; i < m; i++) {
            const float *src = x + i * x_img + ci * hw;
            float *dst = xb + ci * cols + (size_t)i * P;
            if (s == 1) {
                if (!a)
                    memcpy(dst, src, (size_t)P * sizeof *dst);
                else
                    L->bn_row(src, dst, P, mu, sc, sh, relu);
                continue;
            }
            if (s == 2) {
                L->pick2_plane(src, d->h, d->w, dst, oh, ow, a != NULL, mu, sc, sh, relu);
                continue;
            }
            for (int oy = 0; oy < oh; oy++, dst += ow) {
                const float *row = src + (size_t)oy * s * d->w;
                if (!a) {
                    for (int ox = 0; ox < ow; ox++)
                        dst[ox] = row[(size_t)ox * s];
                } else {
                    for (int ox = 0; ox < ow; ox++) {
                        const float z = (row[(size_t)ox * s] - mu) * sc + sh;
                        dst[ox] = relu && !(z > 0.0f) ? 0.0f : z;
                    }
                }
            }
        }
    }
}

/* Σ r[0..P) in float64, through 16 float partial sums (a plain float64
 * chain does not vectorise; each partial covers P/16 values). */
static double row_sum(const float *r, int P)
{
    float part[16] = {0};
    int p = 0;
    for (; p + 16 <= P; p += 16)
        for (int l = 0; l < 16; l++)
            part[l] += r[p + l];
    double s = 0.0;
    for (int l = 0; l < 16; l++)
        s += part[l];
    for (; p < P; p++)
        s += r[p];
    return s;
}

void dpt_conv_pointwise_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                                const float *w, const float *b, float *y, float *work,
                                double *sum, double *sumsq)
{
    const pw_loops *L = loops();
    const int P = d->out_h * d->out_w, nb = dpt_conv_pointwise_block(d);
    const int G = groups_of(d), cg_in = d->c_in / G, cg_out = d->c_out / G;
    const size_t w_grp = (size_t)cg_out * cg_in;
    const size_t x_img = (size_t)d->c_in * d->h * d->w, y_img = (size_t)d->c_out * P;
    float *xb = work, *yb = work + yb_offset(d), *gbuf = work + gbuf_offset(d);
    double *bs = (double *)(void *)(work + sums_offset(d)), *bq = bs + d->c_out;
    for (int c = 0; sum && c < d->c_out; c++)
        sum[c] = sumsq[c] = 0.0;
#ifdef PW_X86
    const int lanes = sum && L == &loops_avx512;
#else
    const int lanes = 0;
#endif
    double *acc = (double *)(void *)(work + lanes_offset(d));
    float *shift = work + sums_offset(d); /* K per channel, over bs (unused then) */
    for (size_t k = 0; lanes && k < (size_t)32 * d->c_out; k++)
        acc[k] = 0.0;
    for (int i0 = 0; i0 < d->n; i0 += nb) {
        const int m = d->n - i0 < nb ? d->n - i0 : nb;
        const size_t cols = (size_t)m * P;
        const float *B = x + i0 * x_img;
        if (m > 1 || xa || d->stride > 1) {
            pack_x(d, B, m, xa, xb, cols);
            B = xb;
            if (d->stride > 1 && i0 + m < d->n)
                prefetch_x(d, x + (i0 + m) * x_img, d->n - i0 - m < nb ? d->n - i0 - m : nb);
        }
        float *yi = y + i0 * y_img;
        float *C = m == 1 ? yi : yb;
        for (int g = 0; g < G; g++) /* a group's rows of W, B and C */
            dpt_sgemm_buf(0, 0, cg_out, (int)cols, cg_in, 1.0f, w + g * w_grp, cg_in,
                          B + g * cg_in * cols, (int)cols, 0.0f, C + g * cg_out * cols, (int)cols,
                          gbuf);
        for (int i = 0; i < m; i++)
            for (int co = 0; co < d->c_out; co++) {
                float *dst = yi + i * y_img + (size_t)co * P;
                const float *src = C + (size_t)co * cols + (size_t)i * P;
                if (b)
                    L->bias_row(src, dst, P, b[co]);
                else if (src != dst) {
                    memcpy(dst, src, (size_t)P * sizeof *dst);
                }
            }
        if (lanes) { /* the block's outputs, while in cache */
#ifdef PW_X86
            for (int c = 0; i0 == 0 && c < d->c_out; c++)
                shift[c] = y[(size_t)c * P];
            out_sums16(yi, m, d->c_out, P, shift, acc);
#endif
        } else if (sum) {
            dpt_bn_sums(yi, m, d->c_out, P, bs, bq);
            for (int c = 0; c < d->c_out; c++)
                sum[c] += bs[c], sumsq[c] += bq[c];
        }
    }
    for (int c = 0; lanes && c < d->c_out; c++) {
        double s1 = 0.0, s2 = 0.0;
        for (int l = 0; l < 16; l++)
            s1 += acc[(size_t)c * 32 + l], s2 += acc[(size_t)c * 32 + 16 + l];
        /* back to plain sums (dpt_bn_sums): Σx = S1 + nK, Σx² = S2 + 2K·S1 + nK² */
        const double k = shift[c], cnt = (double)d->n * P;
        sum[c] = s1 + cnt * k;
        sumsq[c] = s2 + 2.0 * k * s1 + cnt * k * k;
    }
}

void dpt_conv_pointwise_backward(const dpt_conv2d_desc *d, const float *x,
                                 const dpt_bn_apply *xa, const float *w, const float *dy,
                                 const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                                 float *db, float *work, double *xg)
{
    assert(!xg || (xa && dx));
    const pw_loops *L = loops();
    const int P = d->out_h * d->out_w, nb = dpt_conv_pointwise_block(d), hw = d->h * d->w;
    const int s = d->stride, ow = d->out_w;
    const int G = groups_of(d), cg_in = d->c_in / G, cg_out = d->c_out / G;
    const size_t w_grp = (size_t)cg_out * cg_in;
    const size_t x_img = (size_t)d->c_in * hw, y_img = (size_t)d->c_out * P;
    float *xb = work, *yb = work + yb_offset(d), *gbuf = work + gbuf_offset(d);
    double *bsum = (double *)(void *)(work + sums_offset(d));
    for (int c = 0; db && c < d->c_out; c++)
        bsum[c] = 0.0;
    for (int c = 0; xg && c < 2 * d->c_in; c++)
        xg[c] = 0.0;
    /* Wᵀ once, so that dX's products read it in place instead of packing
     * a transposed W for every block. */
    float *wt = work + wt_offset(d);
    float *dwt = dw_transposed(d) ? work + dwt_offset(d) : NULL;
    for (int g = 0; dx && g < G; g++)
        for (int co = 0; co < cg_out; co++)
            for (int ci = 0; ci < cg_in; ci++)
                wt[g * w_grp + (size_t)ci * cg_out + co] = w[g * w_grp + (size_t)co * cg_in + ci];
    for (int i0 = 0; i0 < d->n; i0 += nb) {
        const int m = d->n - i0 < nb ? d->n - i0 : nb;
        const size_t cols = (size_t)m * P;
        /* Gr [c_out, cols]: the gradient the convolution uses. */
        const float *Gr = dy + i0 * y_img;
        if (m > 1 || dya) {
            for (int i = 0; i < m; i++)
                for (int co = 0; co < d->c_out; co++) {
                    const size_t off = (i0 + i) * y_img + (size_t)co * P;
                    float *row = yb + (size_t)co * cols + (size_t)i * P;
                    if (dya)
                        L->dy_row(dy + off, y + off, row, P, dya->mean[co], dya->scale[co],
                                  dya->shift[co], dya->kf[co], dya->ka[co], dya->kb[co],
                                  dya->relu);
                    else
                        memcpy(row, dy + off, (size_t)P * sizeof *row);
                }
            Gr = yb;
        }
        for (int co = 0; db && co < d->c_out; co++)
            bsum[co] += row_sum(Gr + (size_t)co * cols, (int)cols);
        const float *B = x + i0 * x_img;
        if (m > 1 || xa || s > 1) {
            pack_x(d, B, m, xa, xb, cols);
            B = xb;
            if (s > 1 && i0 + m < d->n)
                prefetch_x(d, x + (i0 + m) * x_img, d->n - i0 - m < nb ? d->n - i0 - m : nb);
        }
        for (int g = 0; g < G; g++) {
            if (dwt)
                dpt_sgemm_buf(0, 1, cg_in, cg_out, (int)cols, 1.0f, B + g * cg_in * cols, (int)cols,
                              Gr + g * cg_out * cols, (int)cols, i0 == 0 ? 0.0f : 1.0f,
                              dwt + g * w_grp, cg_out, gbuf);
            else
                dpt_sgemm_buf(0, 1, cg_out, cg_in, (int)cols, 1.0f, Gr + g * cg_out * cols,
                              (int)cols, B + g * cg_in * cols, (int)cols, i0 == 0 ? 0.0f : 1.0f,
                              dw + g * w_grp, cg_in, gbuf);
        }
        if (!dx)
            continue;
        /* dX: straight into dx when it is the matrix, else into xb (done
         * with the packed input) and scattered. */
        float *dxi = dx + i0 * x_img;
        const int in_place = m == 1 && s == 1;
        float *D = in_place ? dxi : xb;
        for (int g = 0; g < G; g++)
            dpt_sgemm_buf(0, 0, cg_in, (int)cols, cg_out, 1.0f, wt + g * w_grp, cg_out,
                          Gr + g * cg_out * cols, (int)cols, 0.0f, D + g * cg_in * cols, (int)cols,
                          gbuf);
        for (int i = 0; !in_place && i < m; i++)
            for (int ci = 0; ci < d->c_in; ci++) {
                const float *src = D + (size_t)ci * cols + (size_t)i * P;
                float *plane = dxi + i * x_img + (size_t)ci * hw;
                if (s == 1) {
                    memcpy(plane, src, (size_t)P * sizeof *plane);
                    continue;
                }
                if (s == 2) {
                    L->spread2_plane(src, ow, plane, d->h, d->w);
                    continue;
                }
                memset(plane, 0, (size_t)hw * sizeof *plane);
                for (int oy = 0; oy < d->out_h; oy++) {
                    float *row = plane + (size_t)oy * s * d->w;
                    for (int ox = 0; ox < ow; ox++)
                        row[(size_t)ox * s] = src[(size_t)oy * ow + ox];
                }
            }
        if (xg) /* what xa's batch norm needs, from the block's dx while in cache */
            dpt_bn_grad_sums(x + i0 * x_img, dxi, m, d->c_in, hw, xa, xg, xg + d->c_in);
    }
    for (int g = 0; dwt && g < G; g++)
        for (int co = 0; co < cg_out; co++)
            for (int ci = 0; ci < cg_in; ci++)
                dw[g * w_grp + (size_t)co * cg_in + ci] = dwt[g * w_grp + (size_t)ci * cg_out + co];
    for (int c = 0; db && c < d->c_out; c++)
        db[c] = (float)bsum[c];
}
