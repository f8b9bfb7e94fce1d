/* Max, average and global average pooling, NCHW float32.
 *
 * Each output pixel's window is clipped to the unpadded input: padding
 * never wins a max (it is -inf) and adds nothing to a sum (it is 0), while
 * the average still divides by the whole window (count_include_pad). The
 * desc checks guarantee every window holds at least one input pixel.
 *
 * The vector path (pool_kern.h, per kernel set) computes a row of outputs
 * per vector, each lane doing the scalar code's float operations in the
 * same order, so both give the same bits: input rows are padded (-inf for
 * max, −0 for sums: identities) and split into sw column phases, so that
 * tap (ki, kj) of outputs ox.. is one contiguous load at ox + kj / sw in
 * phase kj mod sw of input row oy·sh − ph + ki (rows outside the input are
 * skipped, as the scalar code clips them). A ring of kh packed rows per
 * plane, on the stack, serves consecutive output rows; windows or rows too
 * large for it take the scalar code. Average pooling's backward adds each
 * window's share into phase rows in the scalar code's order per pixel
 * (output rows ascending, and within one, columns ascending: taps kj
 * descending), a row written out once no later window reaches it. */
#include "ops/ops.h"
#include "ops/pool_isa.h"

#include <math.h>
#include <string.h>

int dpt_pool2d_desc_init(dpt_pool2d_desc *d)
{
    if (d->n <= 0 || d->c <= 0 || d->h <= 0 || d->w <= 0 || d->kh <= 0 || d->kw <= 0 ||
        d->sh <= 0 || d->sw <= 0 || d->ph < 0 || d->pw < 0)
        return -1;
    /* A padding as large as the window could make a window of padding only:
     * no maximum, and an average of nothing. */
    if (d->ph >= d->kh || d->pw >= d->kw)
        return -1;
    /* In 64 bits: sizes up to INT_MAX must not overflow the sum. */
    long long ph = (long long)d->h + 2LL * d->ph, pw = (long long)d->w + 2LL * d->pw;
    if (d->kh > ph || d->kw > pw)
        return -1;
    d->out_h = (int)((ph - d->kh) / d->sh + 1);
    d->out_w = (int)((pw - d->kw) / d->sw + 1);
    return 0;
}

/* The window of output (oy, ox) clipped to the input: rows [*y0, *y1),
 * columns [*x0, *x1). */
static void window(const dpt_pool2d_desc *d, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    int ys = oy * d->sh - d->ph, xs = ox * d->sw - d->pw;
    int ye = ys + d->kh, xe = xs + d->kw;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ye > d->h ? d->h : ye;
    *x1 = xe > d->w ? d->w : xe;
}

/* Index in the plane of the window's maximum; *val receives it. Scan order
 * and comparison are PyTorch's (val > max || isnan(val)), so ties go to the
 * first maximum and NaN propagates; the start index is the window's first
 * pixel, which keeps a window of -inf values pointing inside it. */
static int window_argmax(const dpt_pool2d_desc *d, const float *plane, int oy, int ox, float *val)
{
    int y0, y1, x0, x1;
    window(d, oy, ox, &y0, &y1, &x0, &x1);
    int best = y0 * d->w + x0;
    float m = -INFINITY;
    for (int iy = y0; iy < y1; iy++) {
        const float *r = plane + (size_t)iy * d->w;
        for (int ix = x0; ix < x1; ix++) {
            const float v = r[ix];
            /* Selects, not a branch: on real data which value wins is
             * unpredictable. */
            const int take = (v > m) | (v != v);
            m = take ? v : m;
            best = take ? iy * d->w + ix : best;
        }
    }
    *val = m;
    return best;
}

static void scalar_max_forward(const dpt_pool2d_desc *d, const float *x, float *y)
{
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * in_plane;
        float *yp = y + p * out_plane;
        for (int oy = 0; oy < d->out_h; oy++)
            for (int ox = 0; ox < d->out_w; ox++)
                window_argmax(d, xp, oy, ox, &yp[(size_t)oy * d->out_w + ox]);
    }
}

static void scalar_max_backward(const dpt_pool2d_desc *d, const float *x, const float *dy,
                                float *dx)
{
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    memset(dx, 0, planes * in_plane * sizeof *dx);
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * in_plane, *gp = dy + p * out_plane;
        float *dp = dx + p * in_plane;
        for (int oy = 0; oy < d->out_h; oy++) {
            for (int ox = 0; ox < d->out_w; ox++) {
                float m;
                dp[window_argmax(d, xp, oy, ox, &m)] += gp[(size_t)oy * d->out_w + ox];
            }
        }
    }
}

static void scalar_avg_forward(const dpt_pool2d_desc *d, const float *x, float *y)
{
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    const float inv = 1.0f / (float)(d->kh * d->kw);
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * in_plane;
        float *yp = y + p * out_plane;
        for (int oy = 0; oy < d->out_h; oy++) {
            for (int ox = 0; ox < d->out_w; ox++) {
                int y0, y1, x0, x1;
                window(d, oy, ox, &y0, &y1, &x0, &x1);
                float s = 0.0f;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        s += xp[(size_t)iy * d->w + ix];
                yp[(size_t)oy * d->out_w + ox] = s * inv;
            }
        }
    }
}

static void scalar_avg_backward(const dpt_pool2d_desc *d, const float *dy, float *dx)
{
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    const float inv = 1.0f / (float)(d->kh * d->kw);
    memset(dx, 0, planes * in_plane * sizeof *dx);
    for (size_t p = 0; p < planes; p++) {
        const float *gp = dy + p * out_plane;
        float *dp = dx + p * in_plane;
        for (int oy = 0; oy < d->out_h; oy++) {
            for (int ox = 0; ox < d->out_w; ox++) {
                int y0, y1, x0, x1;
                window(d, oy, ox, &y0, &y1, &x0, &x1);
                float g = gp[(size_t)oy * d->out_w + ox] * inv;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        dp[(size_t)iy * d->w + ix] += g;
            }
        }
    }
}

void dpt_pool2d_reference(int mode, const dpt_pool2d_desc *d, const float *x, const float *dy,
                          float *out)
{
    switch (mode) {
    case 0: scalar_max_forward(d, x, out); break;
    case 1: scalar_max_backward(d, x, dy, out); break;
    case 2: scalar_avg_forward(d, x, out); break;
    default: scalar_avg_backward(d, dy, out); break;
    }
}

/* ---- the vector path ------------------------------------------------------ */

typedef float vt_pool4 __attribute__((vector_size(4 * 4)));
typedef int vi_pool4 __attribute__((vector_size(4 * 4)));
#define VN 4
#define VT vt_pool4
#define VI vi_pool4
#define KN(f) f##_generic
extern const pool_isa dpt_pool_isa_generic;

static inline VT KN(loadn)(const float *p, int n)
{
    VT v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

static inline void KN(storen)(float *p, VT v, int n) { memcpy(p, &v, (size_t)n * sizeof(float)); }

#include "ops/pool_kern.h"
#undef VN
#undef VT
#undef VI
#undef KN

static const pool_isa *pool_pick(void)
{
#if defined(__x86_64__) || defined(__i386__)
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &dpt_pool_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return &dpt_pool_isa_avx2;
#endif
    return &dpt_pool_isa_generic;
}

/* Stack budget of the ring (floats) and of the tap tables: under 48 KiB a
 * call, so that small thread stacks (musl's 128 KiB) are safe. */
#define RING_FLOATS 4096
#define MAX_TAPS 256
#define RMAX 16 /* widest vector: row slack */
#define ROW_MAX 1024 /* phase-row stride, and so outputs per row */

typedef struct ring {
    const pool_isa *k;
    const dpt_pool2d_desc *d;
    int sw, L, kh;  /* column phases, phase-row stride, slots */
    float pv;       /* padding value */
    float *buf;     /* [kh][sw][L] */
    float *z;       /* [sw·L]: one padded row before its split */
    int tag[MAX_TAPS]; /* input row held by each slot, -1: none */
} ring;

/* Geometry for d, or 0 when the vector path does not take it. */
static int ring_fits(const dpt_pool2d_desc *d, int *L)
{
    /* Columns per phase row: every window's taps, and every input column
     * (average pooling's backward writes each dx row from them). */
    int wc = d->out_w + (d->kw - 1) / d->sw;
    if ((d->pw + d->w + d->sw - 1) / d->sw > wc)
        wc = (d->pw + d->w + d->sw - 1) / d->sw;
    const long long l = ((long long)wc + RMAX - 1) / RMAX * RMAX + RMAX;
    if ((long long)d->kh * d->kw > MAX_TAPS || d->kh > MAX_TAPS)
        return 0;
    if (((long long)d->kh + 1) * d->sw * l > RING_FLOATS || l > ROW_MAX)
        return 0;
    *L = (int)l;
    return 1;
}

/* Phase b of input row iy (packed into its slot when not already there). */
static const float *ring_row(ring *r, const float *plane, int iy)
{
    const int slot = iy % r->kh, sw = r->sw, L = r->L;
    float *dst = r->buf + (size_t)slot * sw * L;
    if (r->tag[slot] != iy) {
        const dpt_pool2d_desc *d = r->d;
        const float *src = plane + (size_t)iy * d->w;
        if (sw == 1) {
            r->k->row_pad(src, d->w, r->pv, d->pw, L, dst);
        } else {
            r->k->row_pad(src, d->w, r->pv, d->pw, sw * L, r->z);
            if (sw == 2)
                r->k->deint2(r->z, L - RMAX, dst, dst + L);
            else
                for (int b = 0; b < sw; b++)
                    for (int c = 0; c < L; c++)
                        dst[(size_t)b * L + c] = r->z[(size_t)c * sw + b];
        }
        r->tag[slot] = iy;
    }
    return dst;
}

/* The taps of output row oy in scan order (input rows clipped): read
 * pointers, and each one's plane index at ox = 0 (tidx). Returns the
 * count; *y0 = the first input row. */
static int row_taps(ring *r, const float *plane, int oy, const float **tap, int *tidx, int *y0)
{
    const dpt_pool2d_desc *d = r->d;
    int nt = 0;
    *y0 = -1;
    for (int ki = 0; ki < d->kh; ki++) {
        const int iy = oy * d->sh - d->ph + ki;
        if (iy < 0 || iy >= d->h)
            continue;
        if (*y0 < 0)
            *y0 = iy;
        const float *rowp = ring_row(r, plane, iy);
        for (int kj = 0; kj < d->kw; kj++) {
            tap[nt] = rowp + (size_t)(kj % r->sw) * r->L + kj / r->sw;
            if (tidx)
                tidx[nt] = iy * d->w + kj - d->pw;
            nt++;
        }
    }
    return nt;
}

static void ring_init(ring *r, const pool_isa *k, const dpt_pool2d_desc *d, int L, float pv,
                      float *buf)
{
    r->k = k, r->d = d, r->sw = d->sw, r->L = L, r->kh = d->kh, r->pv = pv;
    r->buf = buf;
    r->z = buf + (size_t)d->kh * d->sw * L;
    for (int i = 0; i < d->kh; i++)
        r->tag[i] = -1;
}

/* mode 0: max forward, 2: average forward. */
static void vec_pool(const pool_isa *k, const dpt_pool2d_desc *d, int L, int mode,
                     const float *x, float *y)
{
    float buf[RING_FLOATS];
    const float *tap[MAX_TAPS];
    int tidx[MAX_TAPS];
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    const float inv = 1.0f / (float)(d->kh * d->kw);
    ring r;
    for (size_t p = 0; p < planes; p++) {
        ring_init(&r, k, d, L, mode == 2 ? -0.0f : -INFINITY, buf);
        const float *xp = x + p * in_plane;
        for (int oy = 0; oy < d->out_h; oy++) {
            int y0;
            const int nt = row_taps(&r, xp, oy, tap, tidx, &y0);
            const size_t o = p * out_plane + (size_t)oy * d->out_w;
            if (mode == 2) {
                k->avg_row(tap, nt, d->out_w, inv, y + o);
            } else {
                k->max_row(tap, tidx, nt, d->out_w, d->sw, d->pw, y0 * d->w, y + o, NULL);
            }
        }
    }
}

/* Average pooling's backward: slot rows accumulate [kh][sw][L] phases of
 * dx rows; a row is written to dx (and its slot cleared) once the windows
 * have passed it. */
static void flush_row(const pool_isa *k, const dpt_pool2d_desc *d, int L, float *buf, float *z,
                      int iy, float *dp)
{
    float *acc = buf + (size_t)(iy % d->kh) * d->sw * L;
    const float *src = acc + d->pw;
    if (d->sw == 2) {
        k->int2(acc, acc + L, L - RMAX, z);
        src = z + d->pw;
    } else if (d->sw > 2) {
        for (int b = 0; b < d->sw; b++)
            for (int c = 0; c < L; c++)
                z[(size_t)c * d->sw + b] = acc[(size_t)b * L + c];
        src = z + d->pw;
    }
    k->row_pad(src, d->w, 0.0f, 0, d->w, dp + (size_t)iy * d->w); /* a copy */
    memset(acc, 0, (size_t)d->sw * L * sizeof *acc);
}

/* Both backwards: x NULL for average pooling (each tap gets dy / (kh·kw)),
 * else max pooling (each tap gets dy where it is the window's maximum,
 * else +0: the same sums as the scalar scatter, whose dx starts at +0). */
static void vec_backward(const pool_isa *k, const dpt_pool2d_desc *d, int L, const float *x,
                         const float *dy, float *dx)
{
    float buf[RING_FLOATS], g[ROW_MAX], xbuf[RING_FLOATS];
    const float *tap[MAX_TAPS];
    int tidx[MAX_TAPS], idx[ROW_MAX];
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    const float inv = 1.0f / (float)(d->kh * d->kw);
    float *z = buf + (size_t)d->kh * d->sw * L;
    ring r;
    for (size_t p = 0; p < planes; p++) {
        float *dp = dx + p * in_plane;
        const float *gp = dy + p * out_plane;
        if (x)
            ring_init(&r, k, d, L, -INFINITY, xbuf);
        memset(buf, 0, (size_t)d->kh * d->sw * L * sizeof *buf);
        int done = 0; /* dx rows written */
        for (int oy = 0; oy < d->out_h; oy++) {
            const int top = oy * d->sh - d->ph;
            for (; done < top && done < d->h; done++)
                flush_row(k, d, L, buf, z, done, dp);
            if (x) {
                int y0;
                const int nt = row_taps(&r, x + p * in_plane, oy, tap, tidx, &y0);
                k->max_row(tap, tidx, nt, d->out_w, d->sw, d->pw, y0 * d->w, r.z, idx);
            } else {
                k->scale_row(gp + (size_t)oy * d->out_w, d->out_w, inv, g);
            }
            for (int ki = 0, t0 = 0; ki < d->kh; ki++) {
                const int iy = top + ki;
                if (iy < 0 || iy >= d->h)
                    continue;
                float *acc = buf + (size_t)(iy % d->kh) * d->sw * L;
                for (int kj = d->kw - 1; kj >= 0; kj--) {
                    float *dst = acc + (size_t)(kj % d->sw) * L + kj / d->sw;
                    if (x)
                        k->add_argmax(dst, gp + (size_t)oy * d->out_w, idx, tidx[t0 + kj],
                                      d->sw, d->out_w);
                    else
                        k->add_row(dst, g, d->out_w);
                }
                t0 += d->kw;
            }
        }
        for (; done < d->h; done++)
            flush_row(k, d, L, buf, z, done, dp);
    }
}

/* ---- 2x2 windows, stride 2, no padding ------------------------------------ *
 * The residual nets' pooling: straight from the input rows (no ring), an
 * output row per pair of input rows, and the tap each window took kept in
 * a byte when the caller wants the backward to need neither x nor a
 * second search. */

int dpt_maxpool2d_has_idx(const dpt_pool2d_desc *d)
{
    return d->kh == 2 && d->kw == 2 && d->sh == 2 && d->sw == 2 && d->ph == 0 && d->pw == 0;
}

/* The kernel set for a 2x2 pooling: avx512's 16-output vectors only on
 * rows that fill them (or long rows): a row of 14 (28x28 inputs) is one
 * masked vector, and masked loads and stores of 16 floats cost this
 * machine (Zen 5) more than avx2's full-plus-masked pair of 8 (2.2 against
 * 0.65 ms for 128x32x28x28, bench/dwpool_bench). */
static const pool_isa *max2_pick(const dpt_pool2d_desc *d)
{
    const pool_isa *k = pool_pick();
#if defined(__x86_64__) || defined(__i386__)
    if (k == &dpt_pool_isa_avx512 && d->out_w % 16 != 0 && d->out_w < 64)
        k = &dpt_pool_isa_avx2;
#else
    (void)d;
#endif
    return k;
}

static void max2_forward(const pool_isa *k, const dpt_pool2d_desc *d, const float *x, float *y,
                         unsigned char *idx)
{
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++)
        for (int oy = 0; oy < d->out_h; oy++) {
            const float *r0 = x + p * in_plane + (size_t)2 * oy * d->w;
            const size_t o = p * out_plane + (size_t)oy * d->out_w;
            k->max2_row(r0, r0 + d->w, d->out_w, y + o, idx ? idx + o : NULL);
        }
}

/* The parts of a dx plane no window reaches (an odd last column or row):
 * +0, as in the reference's zeroed dx. */
static void max2_clear_edges(const dpt_pool2d_desc *d, float *dp)
{
    if (d->w > 2 * d->out_w)
        for (int iy = 0; iy < 2 * d->out_h; iy++)
            for (int ix = 2 * d->out_w; ix < d->w; ix++)
                dp[(size_t)iy * d->w + ix] = 0.0f;
    memset(dp + (size_t)2 * d->out_h * d->w, 0,
           (size_t)(d->h - 2 * d->out_h) * d->w * sizeof *dp);
}

/* From the saved taps (idx), or with idx NULL found again from x. */
static void max2_backward(const pool_isa *k, const dpt_pool2d_desc *d, const float *x,
                          const unsigned char *idx, const float *dy, float *dx)
{
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    float m[ROW_MAX];
    unsigned char t[ROW_MAX + DPT_POOL_IDX_SLACK];
    for (size_t p = 0; p < planes; p++) {
        float *dp = dx + p * in_plane;
        for (int oy = 0; oy < d->out_h; oy++) {
            float *d0 = dp + (size_t)2 * oy * d->w;
            const size_t o = p * out_plane + (size_t)oy * d->out_w;
            if (idx) {
                k->max2_back_row(dy + o, idx + o, d->out_w, d0, d0 + d->w);
                continue;
            }
            const float *r0 = x + p * in_plane + (size_t)2 * oy * d->w;
            for (int c0 = 0; c0 < d->out_w; c0 += ROW_MAX) {
                const int nc = d->out_w - c0 < ROW_MAX ? d->out_w - c0 : ROW_MAX;
                k->max2_row(r0 + 2 * c0, r0 + d->w + 2 * c0, nc, m, t);
                k->max2_back_row(dy + o + c0, t, nc, d0 + 2 * c0, d0 + d->w + 2 * c0);
            }
        }
        max2_clear_edges(d, dp);
    }
}

void dpt_maxpool2d_forward_idx(const dpt_pool2d_desc *d, const float *x, float *y,
                               unsigned char *idx)
{
    if (dpt_maxpool2d_has_idx(d))
        max2_forward(max2_pick(d), d, x, y, idx);
    else
        dpt_maxpool2d_forward(d, x, y);
}

void dpt_maxpool2d_forward_bn(const dpt_pool2d_desc *d, const float *x, const dpt_bn_apply *a,
                              float *y, unsigned char *idx)
{
    dpt_maxpool2d_forward_bnx(d, x, a, y, idx, NULL);
}

void dpt_maxpool2d_forward_bnx(const dpt_pool2d_desc *d, const float *x, const dpt_bn_apply *a,
                               float *y, unsigned char *idx, float *xv)
{
    const pool_isa *k = max2_pick(d);
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        const int ch = (int)(p % (size_t)d->c);
        const float bn[3] = {a->mean[ch], a->scale[ch], a->shift[ch]};
        const size_t o = p * out_plane;
        k->max2_rows_bn(x + p * in_plane, d->w, d->out_h, d->out_w, bn, a->relu, y + o,
                        idx ? idx + o : NULL, xv ? xv + o : NULL);
    }
}

void dpt_maxpool2d_backward_bn(const dpt_pool2d_desc *d, const unsigned char *idx,
                               const float *xv, const dpt_bn_apply *a, const float *dy, float *dx,
                               double *s_g, double *s_gx)
{
    const pool_isa *k = max2_pick(d);
    const size_t in_plane = (size_t)d->h * d->w, out_plane = (size_t)d->out_h * d->out_w;
    const size_t planes = (size_t)d->n * d->c;
    /* Per-lane float sums over one plane (as dpt_bn_grad_sums keeps
     * them), added into float64 per plane in plane order. 2 x 16 floats:
     * room for the widest set; a narrower one leaves the rest 0. */
    float st[2 * RMAX];
    for (size_t p = 0; p < planes; p++) {
        const int ch = (int)(p % (size_t)d->c);
        const float bn[3] = {a->mean[ch], a->scale[ch], a->shift[ch]};
        float *dp = dx ? dx + p * in_plane : NULL;
        memset(st, 0, sizeof st);
        const size_t o = p * out_plane;
        k->max2_back_rows_bn(dy + o, idx + o, xv + o, d->out_h, d->out_w, bn, a->relu, dp, d->w,
                             st);
        if (dp)
            max2_clear_edges(d, dp);
        /* st is [2][VN] of the set: the lanes of s1 then those of s2. */
        const int vn = k->vn;
        double t1 = 0.0, t2 = 0.0;
        for (int l = 0; l < vn; l++)
            t1 += st[l], t2 += st[vn + l];
        s_g[ch] += t1;
        s_gx[ch] += t2;
    }
}

void dpt_maxpool2d_backward_idx(const dpt_pool2d_desc *d, const unsigned char *idx,
                                const float *dy, float *dx)
{
    max2_backward(max2_pick(d), d, NULL, idx, dy, dx);
}

void dpt_maxpool2d_forward(const dpt_pool2d_desc *d, const float *x, float *y)
{
    int L;
    if (dpt_maxpool2d_has_idx(d))
        max2_forward(max2_pick(d), d, x, y, NULL);
    else if (ring_fits(d, &L))
        vec_pool(pool_pick(), d, L, 0, x, y);
    else
        scalar_max_forward(d, x, y);
}

void dpt_maxpool2d_backward(const dpt_pool2d_desc *d, const float *x, const float *dy, float *dx)
{
    int L;
    if (dpt_maxpool2d_has_idx(d))
        max2_backward(max2_pick(d), d, x, NULL, dy, dx);
    else if (ring_fits(d, &L))
        vec_backward(pool_pick(), d, L, x, dy, dx);
    else
        scalar_max_backward(d, x, dy, dx);
}

void dpt_avgpool2d_forward(const dpt_pool2d_desc *d, const float *x, float *y)
{
    int L;
    if (ring_fits(d, &L))
        vec_pool(pool_pick(), d, L, 2, x, y);
    else
        scalar_avg_forward(d, x, y);
}

void dpt_avgpool2d_backward(const dpt_pool2d_desc *d, const float *dy, float *dx)
{
    int L;
    if (ring_fits(d, &L))
        vec_backward(pool_pick(), d, L, NULL, dy, dx);
    else
        scalar_avg_backward(d, dy, dx);
}

void dpt_global_avgpool_forward(const float *x, float *y, int n, int c, int hw)
{
    const size_t planes = (size_t)n * c;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * (size_t)hw;
        /* float64: a large plane's small terms are not lost; in four
         * chains, since one float64 add chain (latency 4) was the cost of
         * the whole pass. */
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int j = 0;
        for (; j + 4 <= hw; j += 4) {
            s0 += xp[j], s1 += xp[j + 1];
            s2 += xp[j + 2], s3 += xp[j + 3];
        }
        for (; j < hw; j++)
            s0 += xp[j];
        y[p] = (float)(((s0 + s1) + (s2 + s3)) / hw);
    }
}

void dpt_global_avgpool_backward(const float *dy, float *dx, int n, int c, int hw)
{
    const size_t planes = (size_t)n * c;
    for (size_t p = 0; p < planes; p++) {
        const float g = dy[p] / (float)hw;
        float *dp = dx + p * (size_t)hw;
        for (int j = 0; j < hw; j++)
            dp[j] = g;
    }
}
