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

/* Where weight (tap t, inner channel i of n, outer channel o of a padded
 * count op) goes in the kernels' blocked layout (conv_hwc.h): blocks of
 * 2*vw outer channels (the last may be narrower), each [taps][n][width],
 * so that a tile streams its block's weights from consecutive lines (on
 * 256 channels the rows of an unblocked [taps][n][op] are 1 KB apart and
 * the hardware prefetcher does not follow them across pages). */
static size_t wblk(int vw, int taps, int n, int op, int t, int i, int o)
{
    const int o0 = o / (2 * vw) * (2 * vw), bw = op - o0 < 2 * vw ? op - o0 : 2 * vw;
    return (size_t)o0 * taps * n + ((size_t)t * n + i) * bw + (o - o0);
}

int dpt_conv_hwc_supports(const dpt_conv2d_desc *d)
{
    /* Narrow layers fill too few lanes (the direct kernels vectorise over
     * positions instead); the tap offsets live in a fixed array. */
    return isa_now() != NULL && (d->groups <= 1) && d->c_in >= 16 && d->c_out >= 16 &&
           d->kh * d->kw <= 1024;
}

static hwc_geom geom_of(const dpt_conv2d_desc *d)
{
    hwc_geom g = {d->c_in, d->c_out, dpt_hwc_cpad(d->c_in), dpt_hwc_cpad(d->c_out),
                  d->w + 2 * d->pad, d->out_h, d->out_w, d->stride,
                  d->dilation > 1 ? d->dilation : 1, d->kh, d->kw};
    return g;
}

/* Stride 1, square kernel, pad at most the kernel's reach: dx as the
 * forward kernel over dy zero-padded by this much (returned; -1 where the
 * scatter is used) with the flipped, transposed weights. Every tap's sum
 * stays in registers and dx is stored once, instead of a read-modify-write
 * of the padded gradient per tap. */
static int gather_pad(const dpt_conv2d_desc *d)
{
    const int dil = d->dilation > 1 ? d->dilation : 1, reach = dil * (d->kh - 1);
    if (d->stride != 1 || d->kh != d->kw || d->pad > reach)
        return -1;
    return reach - d->pad;
}

/* The scratch of one pass, as offsets from work (64-byte aligned each). */
typedef struct hwc_bufs {
    size_t tmp, xp, wk, yp, dxp, dwa, ds, end;
} hwc_bufs;

/* Images per block the scratch is sized for: every kernel set's block
 * (hwc_isa.block) fits, small planes only. */
static int max_block(const dpt_conv2d_desc *d)
{
    return d->out_h * d->out_w <= 100 ? DPT_HWC_MAX_BLOCK : 1;
}

/* Images per weight-gradient pass for blocks of B: where dwa is large
 * (2.4 MB on 256 channels: read and written per pass), several blocks, so
 * that a register tile sums at least 128 positions before it adds into
 * dwa, while the packed inputs stay under 1 MB. Not where dwa stays in
 * L2: groups slowed the stride-2 resnet layers' backward by 3-9%
 * (bench/hwc_ab.sh). */
static int dw_group(const dpt_conv2d_desc *d, int B)
{
    const size_t P = (size_t)d->out_h * d->out_w;
    const size_t ximg =
        ((size_t)d->h + 2 * d->pad) * ((size_t)d->w + 2 * d->pad) * dpt_hwc_cpad(d->c_in);
    const size_t dwa = (size_t)d->kh * d->kw * d->c_in * dpt_hwc_cpad(d->c_out) * sizeof(float);
    int G = B;
    if (dwa <= ((size_t)256 << 10))
        return G;
    while (G + B <= DPT_HWC_MAX_GROUP && (size_t)G * P < 128 &&
           (size_t)(G + B) * ximg * sizeof(float) <= ((size_t)1 << 20))
        G += B;
    return G;
}

static int max_group(const dpt_conv2d_desc *d)
{
    int most = 1;
    for (int B = 1; B <= max_block(d); B++)
        if (dw_group(d, B) > most)
            most = dw_group(d, B);
    return most;
}

static hwc_bufs bufs_of(const dpt_conv2d_desc *d)
{
    const hwc_geom g = geom_of(d);
    const size_t hp = (size_t)d->h + 2 * d->pad, P = (size_t)g.oh * g.ow;
    const size_t taps = (size_t)d->kh * d->kw, B = (size_t)max_block(d);
    const size_t G = (size_t)max_group(d);
    const int pe = gather_pad(d) > 0 ? gather_pad(d) : 0; /* dy's padding */
    const size_t yrows = (size_t)(g.oh + 2 * pe) * (g.ow + 2 * pe);
    hwc_bufs b;
    size_t o = 0;
    b.tmp = o, o += dpt_hwc_al16(P * d->c_out); /* one image's output gradient, dya applied */
    b.xp = o, o += dpt_hwc_al16(G * hp * g.wp * g.cip);
    b.wk = o, o += dpt_hwc_al16(taps * (size_t)dpt_hwc_cpad(d->c_out) * g.cip); /* wpk or wt */
    b.yp = o, o += dpt_hwc_al16(G * (yrows > P ? yrows : P) * g.cop);
    b.dxp = o, o += dpt_hwc_al16(B * hp * g.wp * g.cip);
    b.dwa = o, o += dpt_hwc_al16(taps * (size_t)g.c_in * g.cop);
    b.ds = o, o += dpt_hwc_al16(4 * (size_t)d->c_out); /* 2 * c_out doubles */
    b.end = o;
    return b;
}

size_t dpt_conv_hwc_work_floats(const dpt_conv2d_desc *d) { return bufs_of(d).end; }

const float *dpt_hwc_dy_image(const hwc_isa *isa, const float *dyi, const float *yi, int c_out,
                              int P, const dpt_bn_apply *dya, float *tmp, double *dbs)
{
    if (dya) {
        for (int co = 0; co < c_out; co++)
            dbs[co] += isa->bnback(dyi + (size_t)co * P, yi + (size_t)co * P, P, dya->mean[co],
                                   dya->scale[co], dya->shift[co], dya->kf[co], dya->ka[co],
                                   dya->kb[co], dya->relu, tmp + (size_t)co * P);
        return tmp;
    }
    for (int co = 0; co < c_out; co++) {
        float s = 0.0f;
        for (int p = 0; p < P; p++)
            s += dyi[(size_t)co * P + p];
        dbs[co] += s;
    }
    return dyi;
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
    float *xp = work + bf.xp, *wpk = work + bf.wk, *yp = work + bf.yp;
    const int B = isa->block(g.oh, g.ow) < max_block(d) ? isa->block(g.oh, g.ow) : max_block(d);
    const size_t ximg = (size_t)hp * g.wp * g.cip, yimg = (size_t)P * g.cop;
    memset(xp, 0, B * ximg * sizeof *xp);
    /* wpk: blocks of co, each [tap][ci][width], co padded with zeros to cop. */
    memset(wpk, 0, (size_t)taps * cin * g.cop * sizeof *wpk);
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++)
                wpk[wblk(isa->vw, taps, cin, g.cop, t, ci, co)] =
                    w[((size_t)co * cin + ci) * taps + t];
    if (sum)
        for (int co = 0; co < cout; co++)
            sum[co] = sumsq[co] = 0.0;
    for (int i0 = 0; i0 < d->n; i0 += B) {
        const int nb = d->n - i0 < B ? d->n - i0 : B;
        for (int k = 0; k < nb; k++)
            isa->pack(x + (size_t)(i0 + k) * cin * hw, cin, d->h, d->w, d->pad, g.wp, g.cip, xa,
                      xp + k * ximg);
        conv_prefetch pf = {{0}, {0}, 0, 0, 0};
        if (i0 + nb < d->n) {
            const int nn = d->n - i0 - nb < B ? d->n - i0 - nb : B;
            pf.p[0] = (const char *)(x + (size_t)(i0 + nb) * cin * hw);
            pf.lines[0] = (size_t)nn * cin * hw * sizeof(float) / 64;
        }
        /* And this block's output planes, so that the transposes below
         * write to cache lines already owned rather than wait on a read
         * for ownership from memory each (the planes are MBs per batch). */
        pf.p[1] = (const char *)(y + (size_t)i0 * cout * P);
        pf.lines[1] = (size_t)nb * cout * P * sizeof(float) / 64;
        isa->fwd(&g, nb, xp, ximg, wpk, yp, yimg, &pf);
        for (int k = 0; k < nb; k++) {
            float *yi = y + (size_t)(i0 + k) * cout * P;
            isa->unpack(yp + k * yimg, cout, g.oh, g.ow, 0, g.ow, g.cop, b, yi);
            if (sum) /* from the packed tile, in cache, channels in lanes */
                isa->sums(yp + k * yimg, P, g.cop, cout, b, sum, sumsq);
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
    const int B = isa->block(g.oh, g.ow) < max_block(d) ? isa->block(g.oh, g.ow) : max_block(d);
    const int pe = dx ? gather_pad(d) : -1;
    /* dyp: [oh+2pe][ow+2pe][cop] per image where dx gathers (pe >= 0). */
    const int pz = pe > 0 ? pe : 0, wpy = g.ow + 2 * pz;
    const size_t ximg = (size_t)hp * g.wp * g.cip, yimg = (size_t)(g.oh + 2 * pz) * wpy * g.cop;
    const size_t y0 = ((size_t)pz * wpy + pz) * g.cop; /* dy's first position */
    /* The gather's geometry: the forward's, dy as the input, dx the output. */
    const hwc_geom g2 = {cout, cin, g.cop, g.cip, wpy, d->h, d->w, 1, g.dil, d->kh, d->kw};
    const int B2 = isa->block(d->h, d->w) < max_block(d) ? isa->block(d->h, d->w) : max_block(d);
    const int G = dw_group(d, B);
    memset(xp, 0, G * ximg * sizeof *xp);
    memset(dyp, 0, G * yimg * sizeof *dyp);
    memset(dwa, 0, (size_t)taps * cin * g.cop * sizeof *dwa);
    for (int co = 0; co < cout; co++)
        dbs[co] = 0.0;
    if (xg)
        for (int ci = 0; ci < 2 * cin; ci++)
            xg[ci] = 0.0;
    if (dx) {
        /* wt: blocks of ci, each [tap][co][width], ci padded with zeros to cip. */
        memset(wt, 0, (size_t)taps * cout * g.cip * sizeof *wt);
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int t = 0; t < taps; t++) /* taps flipped for the gather */
                    wt[wblk(isa->vw, taps, cout, g.cip, pe >= 0 ? taps - 1 - t : t, co, ci)] =
                        w[((size_t)co * cin + ci) * taps + t];
    }
    for (int i0 = 0; i0 < d->n; i0 += G) {
        const int ng = d->n - i0 < G ? d->n - i0 : G;
        for (int k = 0; k < ng; k++) {
            const int i = i0 + k;
            float *xpk = xp + k * ximg, *dypk = dyp + k * yimg;
            isa->pack(x + (size_t)i * cin * hw, cin, d->h, d->w, d->pad, g.wp, g.cip, xa, xpk);
            /* The gradient the convolution uses (dya's backward applied), and db. */
            const float *dyi = dpt_hwc_dy_image(isa, dy + (size_t)i * cout * P,
                                                y ? y + (size_t)i * cout * P : NULL, cout, P, dya,
                                                tmp, dbs);
            isa->pack(dyi, cout, g.oh, g.ow, pz, wpy, g.cop, NULL, dypk);
        }
        /* The next group, fetched while this one's weight gradient is formed. */
        conv_prefetch pf = {{0}, {0}, 0, 0, 0};
        if (i0 + ng < d->n) {
            const int nn = d->n - i0 - ng < G ? d->n - i0 - ng : G;
            pf.p[0] = (const char *)(x + (size_t)(i0 + ng) * cin * hw);
            pf.lines[0] = (size_t)nn * cin * hw * sizeof(float) / 64;
            pf.p[1] = (const char *)(dy + (size_t)(i0 + ng) * cout * P);
            pf.lines[1] = (size_t)nn * cout * P * sizeof(float) / 64;
            if (dya) {
                pf.p[2] = (const char *)(y + (size_t)(i0 + ng) * cout * P);
                pf.lines[2] = pf.lines[1];
            }
        }
        isa->dw(&g, ng, xp, ximg, dyp + y0, wpy * g.cop, yimg, dwa, &pf);
        if (!dx)
            continue;
        if (pe >= 0) {
            const size_t dimg = (size_t)d->h * d->w * g.cip;
            for (int k0 = 0; k0 < ng; k0 += B2) {
                const int nb = ng - k0 < B2 ? ng - k0 : B2;
                /* dx's planes, written after the kernel (as the forward's y) */
                conv_prefetch pdx = {{(const char *)(dx + (size_t)(i0 + k0) * cin * hw)},
                                     {(size_t)nb * cin * hw * sizeof(float) / 64},
                                     0,
                                     0,
                                     0};
                isa->fwd(&g2, nb, dyp + k0 * yimg, yimg, wt, dxp, dimg, &pdx);
                for (int k = 0; k < nb; k++) {
                    const int i = i0 + k0 + k;
                    float *dxi = dx + (size_t)i * cin * hw;
                    isa->unpack(dxp + k * dimg, cin, d->h, d->w, 0, d->w, g.cip, NULL, dxi);
                    if (xg)
                        dpt_bn_grad_sums(x + (size_t)i * cin * hw, dxi, 1, cin, hw, xa, xg,
                                         xg + cin);
                }
            }
            continue;
        }
        for (int k0 = 0; k0 < ng; k0 += B) {
            const int nb = ng - k0 < B ? ng - k0 : B;
            memset(dxp, 0, nb * ximg * sizeof *dxp);
            conv_prefetch pdx = {{(const char *)(dx + (size_t)(i0 + k0) * cin * hw)},
                                 {(size_t)nb * cin * hw * sizeof(float) / 64},
                                 0,
                                 0,
                                 0};
            isa->dx(&g, nb, dyp + k0 * yimg, yimg, wt, dxp, ximg, &pdx);
            for (int k = 0; k < nb; k++) {
                const int i = i0 + k0 + k;
                float *dxi = dx + (size_t)i * cin * hw;
                isa->unpack(dxp + k * ximg, cin, d->h, d->w, d->pad, g.wp, g.cip, NULL, dxi);
                if (xg)
                    dpt_bn_grad_sums(x + (size_t)i * cin * hw, dxi, 1, cin, hw, xa, xg, xg + cin);
            }
        }
    }
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++)
                dw[((size_t)co * cin + ci) * taps + t] = dwa[wblk(isa->vw, taps, cin, g.cop, t, ci, co)];
    if (db)
        for (int co = 0; co < cout; co++)
            db[co] = (float)dbs[co];
}
