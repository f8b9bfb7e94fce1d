/* Max, average and global average pooling, NCHW float32.
 *
 * Each output pixel's window is clipped to the unpadded input: padding
 * never wins a max (it is -inf) and adds nothing to a sum (it is 0), while
 * the average still divides by the whole window (count_include_pad). The
 * desc checks guarantee every window holds at least one input pixel. */
#include "ops/ops.h"

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

void dpt_maxpool2d_forward(const dpt_pool2d_desc *d, const float *x, float *y)
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

void dpt_maxpool2d_backward(const dpt_pool2d_desc *d, const float *x, const float *dy, float *dx)
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

void dpt_avgpool2d_forward(const dpt_pool2d_desc *d, const float *x, float *y)
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

void dpt_avgpool2d_backward(const dpt_pool2d_desc *d, const float *dy, float *dx)
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

void dpt_global_avgpool_forward(const float *x, float *y, int n, int c, int hw)
{
    const size_t planes = (size_t)n * c;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * (size_t)hw;
        /* float64: a large plane's small terms are not lost. */
        double s = 0.0;
        for (int j = 0; j < hw; j++)
            s += xp[j];
        y[p] = (float)(s / hw);
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
