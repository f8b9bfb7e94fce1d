/* The HWC convolution algorithm: the batch-level driver (packing,
 * transposes, batch-norm fusions); the kernels are conv_hwc_kern.h.
 * See conv_hwc.h for the layout. */
#include "ops/conv_hwc.h"

#include <string.h>

static const hwc_isa *isa_now(void)
{
#ifdef DPT_HAVE_X86_KERNELS
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &dpt_hwc_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return &dpt_hwc_isa_avx2;
#endif
    return NULL;
}

static int cpad(int c) { return (c + DPT_HWC_CPAD - 1) / DPT_HWC_CPAD * DPT_HWC_CPAD; }
static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

int dpt_conv_hwc_supports(const dpt_conv2d_desc *d)
{
    /* Narrow layers fill too few lanes (the direct kernels vectorise over
     * positions instead); the tap offsets live in a fixed array. */
    return isa_now() != NULL && (d->groups <= 1) && d->c_in >= 16 && d->c_out >= 16 &&
           d->kh * d->kw <= 1024;
}

static hwc_geom geom_of(const dpt_conv2d_desc *d)
{
    hwc_geom g = {d->c_in, d->c_out, cpad(d->c_in), cpad(d->c_out), d->w + 2 * d->pad,
                  d->out_h, d->out_w, d->stride, d->dilation > 1 ? d->dilation : 1, d->kh, d->kw};
    return g;
}

/* The scratch of one pass, as offsets from work (64-byte aligned each). */
typedef struct hwc_bufs {
    size_t tmp, xp, wk, yp, dxp, dwa, ds, end;
} hwc_bufs;

static hwc_bufs bufs_of(const dpt_conv2d_desc *d)
{
    const hwc_geom g = geom_of(d);
    const size_t hp = (size_t)d->h + 2 * d->pad, P = (size_t)g.oh * g.ow;
    const size_t taps = (size_t)d->kh * d->kw;
    hwc_bufs b;
    size_t img = (size_t)d->c_in * d->h * d->w, o = 0;
    b.tmp = o, o += al16(img);
    b.xp = o, o += al16(hp * g.wp * g.cip);
    b.wk = o, o += al16(taps * (size_t)cpad(d->c_out) * g.cip); /* wpk or wt */
    b.yp = o, o += al16(P * g.cop);
    b.dxp = o, o += al16(hp * g.wp * g.cip);
    b.dwa = o, o += al16(taps * (size_t)g.c_in * g.cop);
    b.ds = o, o += al16(4 * (size_t)d->c_out); /* 2 * c_out doubles */
    b.end = o;
    return b;
}

size_t dpt_conv_hwc_work_floats(const dpt_conv2d_desc *d) { return bufs_of(d).end; }

/* xp [(iy+pad)*wp + ix+pad][c] = src [c][iy][ix] for the c channels of one
 * image; the padding is left as it is (zero). */
static void pack(const float *src, int c, int h, int w, int pad, int wp, float *xp)
{
    for (int iy = 0; iy < h; iy++) {
        float *row = xp + ((size_t)(iy + pad) * wp + pad) * c;
        for (int ch = 0; ch < c; ch++) {
            const float *s = src + ((size_t)ch * h + iy) * w;
            for (int ix = 0; ix < w; ix++)
                row[(size_t)ix * c + ch] = s[ix];
        }
    }
}

void dpt_conv_hwc_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                          const float *w, const float *b, float *y, float *work, double *sum,
                          double *sumsq)
{
    const hwc_isa *isa = isa_now();
    const hwc_geom g = geom_of(d);
    const hwc_bufs bf = bufs_of(d);
    const int cin = d->c_in, cout = d->c_out, hw = d->h * d->w, P = g.oh * g.ow;
    const int taps = d->kh * d->kw, hp = d->h + 2 * d->pad;
    float *tmp = work + bf.tmp, *xp = work + bf.xp, *wpk = work + bf.wk, *yp = work + bf.yp;
    double *s1 = (double *)(work + bf.ds), *s2 = s1 + cout;
    memset(xp, 0, (size_t)hp * g.wp * cin * sizeof *xp);
    /* wpk [tap][ci][co], co padded with zeros to cop. */
    memset(wpk, 0, (size_t)taps * cin * g.cop * sizeof *wpk);
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++)
                wpk[((size_t)t * cin + ci) * g.cop + co] = w[((size_t)co * cin + ci) * taps + t];
    if (sum)
        for (int co = 0; co < cout; co++)
            sum[co] = sumsq[co] = 0.0;
    for (int i = 0; i < d->n; i++) {
        const float *src = x + (size_t)i * cin * hw;
        if (xa) {
            dpt_bn_apply_forward(src, cin, hw, xa, tmp);
            src = tmp;
        }
        pack(src, cin, d->h, d->w, d->pad, g.wp, xp);
        isa->fwd(&g, xp, wpk, yp);
        float *yi = y + (size_t)i * cout * P;
        for (int co = 0; co < cout; co++) {
            const float bb = b ? b[co] : 0.0f;
            float *yc = yi + (size_t)co * P;
            const float *s = yp + co;
            for (int p = 0; p < P; p++)
                yc[p] = s[(size_t)p * g.cop] + bb;
        }
        if (sum) {
            /* Per image while y is in cache. */
            dpt_bn_sums(yi, 1, cout, P, s1, s2);
            for (int co = 0; co < cout; co++)
                sum[co] += s1[co], sumsq[co] += s2[co];
        }
    }
}

void dpt_conv_hwc_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *dy, const dpt_bn_apply *dya,
                           const float *y, float *dx, float *dw, float *db, float *work,
                           double *xg)
{
    const hwc_isa *isa = isa_now();
    const hwc_geom g = geom_of(d);
    const hwc_bufs bf = bufs_of(d);
    const int cin = d->c_in, cout = d->c_out, hw = d->h * d->w, P = g.oh * g.ow;
    const int taps = d->kh * d->kw, hp = d->h + 2 * d->pad;
    float *tmp = work + bf.tmp, *xp = work + bf.xp, *wt = work + bf.wk, *dyp = work + bf.yp;
    float *dxp = work + bf.dxp, *dwa = work + bf.dwa;
    double *dbs = (double *)(work + bf.ds);
    memset(xp, 0, (size_t)hp * g.wp * cin * sizeof *xp);
    memset(dyp, 0, (size_t)P * g.cop * sizeof *dyp);
    memset(dwa, 0, (size_t)taps * cin * g.cop * sizeof *dwa);
    for (int co = 0; co < cout; co++)
        dbs[co] = 0.0;
    if (xg)
        for (int ci = 0; ci < 2 * cin; ci++)
            xg[ci] = 0.0;
    if (dx) {
        /* wt [tap][co][ci], ci padded with zeros to cip. */
        memset(wt, 0, (size_t)taps * cout * g.cip * sizeof *wt);
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int t = 0; t < taps; t++)
                    wt[((size_t)t * cout + co) * g.cip + ci] = w[((size_t)co * cin + ci) * taps + t];
    }
    for (int i = 0; i < d->n; i++) {
        const float *xi = x + (size_t)i * cin * hw, *src = xi;
        if (xa) {
            dpt_bn_apply_forward(xi, cin, hw, xa, tmp);
            src = tmp;
        }
        pack(src, cin, d->h, d->w, d->pad, g.wp, xp);
        /* dyp [pos][co]: the gradient the convolution uses (dya's backward
         * applied, the expression of conv2d.c's unfused path), and db. */
        const float *dyi = dy + (size_t)i * cout * P;
        for (int co = 0; co < cout; co++) {
            const float *gc = dyi + (size_t)co * P;
            float *o = dyp + co;
            double s = 0.0;
            if (dya) {
                const float *yc = y + ((size_t)i * cout + co) * P;
                const float m = dya->mean[co], sc = dya->scale[co], sh = dya->shift[co];
                const float kf = dya->kf[co], ka = dya->ka[co], kb = dya->kb[co];
                for (int p = 0; p < P; p++) {
                    float xc = yc[p] - m, gv = gc[p];
                    if (dya->relu && !(xc * sc + sh > 0.0f))
                        gv = 0.0f;
                    const float v = kf * gv - ka - xc * kb;
                    o[(size_t)p * g.cop] = v;
                    s += v;
                }
            } else {
                for (int p = 0; p < P; p++) {
                    o[(size_t)p * g.cop] = gc[p];
                    s += gc[p];
                }
            }
            dbs[co] += s;
        }
        isa->dw(&g, xp, dyp, dwa);
        if (!dx)
            continue;
        memset(dxp, 0, (size_t)hp * g.wp * g.cip * sizeof *dxp);
        isa->dx(&g, dyp, wt, dxp);
        float *dxi = dx + (size_t)i * cin * hw;
        for (int iy = 0; iy < d->h; iy++) {
            const float *row = dxp + ((size_t)(iy + d->pad) * g.wp + d->pad) * g.cip;
            for (int ci = 0; ci < cin; ci++) {
                float *o = dxi + ((size_t)ci * d->h + iy) * d->w;
                for (int ix = 0; ix < d->w; ix++)
                    o[ix] = row[(size_t)ix * g.cip + ci];
            }
        }
        if (xg)
            dpt_bn_grad_sums(xi, dxi, 1, cin, hw, xa, xg, xg + cin);
    }
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++)
                dw[((size_t)co * cin + ci) * taps + t] = dwa[((size_t)t * cin + ci) * g.cop + co];
    if (db)
        for (int co = 0; co < cout; co++)
            db[co] = (float)dbs[co];
}
