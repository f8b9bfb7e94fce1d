/* The Winograd convolution algorithm: the batch-level driver (packing,
 * filter transforms, the per-point GEMMs through hwc's kernels, batch-norm
 * fusions); the tile transforms are conv_wino_kern.h. See conv_wino.h. */
#include "ops/conv_wino.h"

#include <string.h>

/* Floats added to the distance of the points' planes in V and M: T*C
 * floats are a multiple of 4 KB, so a tile's 16 or 36 points would share
 * one L1 set (more than its ways) in the transforms' loads and stores. */
#define PSKEW 16

/* The transforms of F(m x m, 3x3), m 2 or 4, for the kernel set in use. */
static const wino_isa *isa_now(int m)
{
#ifdef DPT_HAVE_X86_KERNELS
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return m == 4 ? &dpt_wino4_isa_avx512 : &dpt_wino_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return m == 4 ? &dpt_wino4_isa_avx2 : &dpt_wino_isa_avx2;
#endif
    (void)m;
    return NULL;
}

static int imax(int a, int b) { return a > b ? a : b; }

/* F(4,3)'s error grows with the channels summed (y over c_in, dx over
 * c_out): against a double reference 2.2e-5 of the largest value at 512,
 * 2.5e-5 at 768, 3.2e-5 at 1024 (bench/RESULTS-wino.md); past 512 it would
 * drift beyond float rounding. F(2,3) stays under 2e-6 at 2048. */
#define WINO4_MAX_C 512

static int supports(const dpt_conv2d_desc *d, int m)
{
    return isa_now(m) != NULL && d->groups <= 1 && d->dilation <= 1 && d->stride == 1 &&
           d->kh == 3 && d->kw == 3 && d->pad >= 0 && d->pad <= 2 && d->c_in >= 16 &&
           d->c_out >= 16 && d->out_h >= 1 && d->out_w >= 1 &&
           (m == 2 || (d->c_in <= WINO4_MAX_C && d->c_out <= WINO4_MAX_C));
}

/* The geometry of one pass (forward, or dx as a forward over dy): tiles of
 * an oh x ow output over an input buffer of rows x cols pixels. */
typedef struct wino_geom {
    int ci, co, cip, cop; /* real and padded channels, in and out */
    int oh, ow, ntx, tpi; /* output, tiles a row, tiles an image */
    int cols;     /* input buffer row, in pixels */
    size_t ximg;  /* input buffer image, in floats */
} wino_geom;

/* The sizes of one call: tiles per GEMM (T), images per block (B), and
 * the buffers' shapes. */
typedef struct wino_plan {
    int npt; /* points per tile, (m+2)^2 */
    int T, B;
    int xr, xc;   /* x buffer (pad p): rows, cols */
    int dr, dc;   /* dy buffer (pad 2-p): rows, cols, for dx's tiles and dw's */
    size_t tmp, xp, dyp, u, ut, du, v, mm, yp, ds, end; /* offsets in work */
} wino_plan;

static wino_plan plan_of(const dpt_conv2d_desc *d, int m)
{
    wino_plan q;
    q.npt = (m + 2) * (m + 2);
    const int cip = dpt_hwc_cpad(d->c_in), cop = dpt_hwc_cpad(d->c_out), C = imax(cip, cop);
    const int pe = 2 - d->pad, oh = d->out_h, ow = d->out_w;
    const int nty = (oh + m - 1) / m, ntx = (ow + m - 1) / m, tpi = nty * ntx;
    const int dty = (d->h + m - 1) / m, dtx = (d->w + m - 1) / m; /* dx's tiles */
    /* Tiles per GEMM: 32 measured as fast as or faster than 16, 64 and 128
     * on the layers of bench/wino_bench.c, both tile sizes (avx512; 64 and
     * 128 up to 15% slower): V and M (points x T x C) stay in L2 up to 128
     * channels (F(2,3)) or 64 (F(4,3)). */
    q.T = 32;
    q.B = q.T / tpi < 1 ? 1 : q.T / tpi > 16 ? 16 : q.T / tpi;
    q.xr = m * nty + 2, q.xc = m * ntx + 2;
    q.dr = imax(m * dty + 2, pe + m * nty), q.dc = imax(m * dtx + 2, pe + m * ntx);
    const size_t P = (size_t)oh * ow, hw = (size_t)d->h * d->w;
    size_t o = 0;
    q.tmp = o, o += dpt_hwc_al16(P * d->c_out);
    q.xp = o, o += dpt_hwc_al16((size_t)q.B * q.xr * q.xc * cip);
    q.dyp = o, o += dpt_hwc_al16((size_t)q.B * q.dr * q.dc * cop);
    q.u = o, o += dpt_hwc_al16((size_t)q.npt * d->c_in * cop);
    q.ut = o, o += dpt_hwc_al16((size_t)q.npt * d->c_out * cip);
    q.du = o, o += dpt_hwc_al16((size_t)q.npt * d->c_in * cop);
    q.v = o, o += dpt_hwc_al16((size_t)q.npt * (q.T * C + PSKEW));
    q.mm = o, o += dpt_hwc_al16((size_t)q.npt * (q.T * C + PSKEW));
    q.yp = o, o += dpt_hwc_al16((size_t)q.B * (P > hw ? P : hw) * C);
    q.ds = o, o += dpt_hwc_al16(4 * (size_t)d->c_out); /* 2 * c_out doubles */
    q.end = o;
    return q;
}

static size_t work_floats(const dpt_conv2d_desc *d, int m) { return plan_of(d, m).end; }

/* One forward pass over the nb images of a block: xp (the input, padded,
 * images g->ximg apart) -> yp [oh*ow][cop] per image (images yimg apart).
 * pf (may be NULL): lines fetched into L2 during the first GEMM. */
static void fwd_block(const wino_isa *isa, const wino_geom *g, const wino_plan *q, int nb,
                      const float *xp, const float *u, float *v, float *m, float *yp, size_t yimg,
                      conv_prefetch *pf)
{
    const size_t vps = (size_t)q->T * g->cip + PSKEW, mps = (size_t)q->T * g->cop + PSKEW;
    const size_t ups = (size_t)g->ci * g->cop;
    for (int k0 = 0; k0 < nb * g->tpi; k0 += q->T) {
        const int nt = nb * g->tpi - k0 < q->T ? nb * g->tpi - k0 : q->T;
        isa->in(xp, g->ximg, g->cols, g->cip, g->ntx, g->tpi, k0, nt, v, vps);
        /* Per point, a 1x1 convolution over a one-row "plane" of nt tiles. */
        const hwc_geom g1 = {g->ci, g->co, g->cip, g->cop, nt, 1, nt, 1, 1, 1, 1};
        for (int xi = 0; xi < q->npt; xi++)
            isa->hwc->fwd(&g1, 1, v + xi * vps, vps, u + xi * ups, m + xi * mps, mps,
                          k0 == 0 && xi == 0 ? pf : NULL);
        isa->out(m, mps, g->cop, g->ntx, g->tpi, k0, nt, g->oh, g->ow, yp, yimg);
    }
}

static void forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                    const float *w, const float *b, float *y, float *work, double *sum,
                    double *sumsq, int m)
{
    const wino_isa *isa = isa_now(m);
    const hwc_isa *h = isa->hwc;
    const wino_plan q = plan_of(d, m);
    const int cin = d->c_in, cout = d->c_out, hw = d->h * d->w, P = d->out_h * d->out_w;
    const int nty = (d->out_h + m - 1) / m, ntx = (d->out_w + m - 1) / m;
    const int cip = dpt_hwc_cpad(cin);
    const wino_geom g = {cin, cout, cip, dpt_hwc_cpad(cout), d->out_h, d->out_w, ntx, nty * ntx,
                         q.xc, (size_t)q.xr * q.xc * cip};
    float *xp = work + q.xp, *u = work + q.u, *yp = work + q.yp;
    const size_t yimg = (size_t)P * g.cop;
    isa->filt(w, cout, cin, g.cop, 0, u);
    memset(xp, 0, q.B * g.ximg * sizeof *xp);
    if (sum)
        for (int co = 0; co < cout; co++)
            sum[co] = sumsq[co] = 0.0;
    for (int i0 = 0; i0 < d->n; i0 += q.B) {
        const int nb = d->n - i0 < q.B ? d->n - i0 : q.B;
        for (int k = 0; k < nb; k++)
            h->pack(x + (size_t)(i0 + k) * cin * hw, cin, d->h, d->w, d->pad, q.xc, g.cip, xa,
                    xp + k * g.ximg);
        /* The next block's input, and this block's output planes (so that
         * the transposes back write to lines already owned), as hwc. */
        conv_prefetch pf = {{0}, {0}, 0, 0, 0};
        if (i0 + nb < d->n) {
            const int nn = d->n - i0 - nb < q.B ? d->n - i0 - nb : q.B;
            pf.p[0] = (const char *)(x + (size_t)(i0 + nb) * cin * hw);
            pf.lines[0] = (size_t)nn * cin * hw * sizeof(float) / 64;
        }
        pf.p[1] = (const char *)(y + (size_t)i0 * cout * P);
        pf.lines[1] = (size_t)nb * cout * P * sizeof(float) / 64;
        fwd_block(isa, &g, &q, nb, xp, u, work + q.v, work + q.mm, yp, yimg, &pf);
        for (int k = 0; k < nb; k++) {
            h->unpack(yp + k * yimg, cout, d->out_h, d->out_w, 0, d->out_w, g.cop, b,
                      y + (size_t)(i0 + k) * cout * P);
            if (sum)
                h->sums(yp + k * yimg, P, g.cop, cout, b, sum, sumsq);
        }
    }
}

static void backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                     const float *w, const float *dy, const dpt_bn_apply *dya, const float *y,
                     float *dx, float *dw, float *db, float *work, double *xg, int m)
{
    const wino_isa *isa = isa_now(m);
    const hwc_isa *h = isa->hwc;
    const wino_plan q = plan_of(d, m);
    const int cin = d->c_in, cout = d->c_out, hw = d->h * d->w, P = d->out_h * d->out_w;
    const int cip = dpt_hwc_cpad(cin), cop = dpt_hwc_cpad(cout), pe = 2 - d->pad;
    const int nty = (d->out_h + m - 1) / m, ntx = (d->out_w + m - 1) / m, tpi = nty * ntx;
    const size_t ximg = (size_t)q.xr * q.xc * cip, dimg = (size_t)q.dr * q.dc * cop;
    /* dx: the forward over dy (padded by pe) with the flipped, transposed filters. */
    const int hty = (d->h + m - 1) / m, htx = (d->w + m - 1) / m;
    const wino_geom g2 = {cout, cin, cop, cip, d->h, d->w, htx, hty * htx, q.dc, dimg};
    float *tmp = work + q.tmp, *xp = work + q.xp, *dyp = work + q.dyp, *ut = work + q.ut;
    float *du = work + q.du, *v = work + q.v, *z = work + q.mm, *dxp = work + q.yp;
    double *dbs = (double *)(work + q.ds);
    const size_t vps = (size_t)q.T * cip + PSKEW, zps = (size_t)q.T * cop + PSKEW;
    const size_t ups = (size_t)cin * cop;
    memset(xp, 0, q.B * ximg * sizeof *xp);
    memset(dyp, 0, q.B * dimg * sizeof *dyp);
    memset(du, 0, q.npt * ups * sizeof *du);
    for (int co = 0; co < cout; co++)
        dbs[co] = 0.0;
    if (xg)
        for (int ci = 0; ci < 2 * cin; ci++)
            xg[ci] = 0.0;
    if (dx)
        isa->filt(w, cin, cout, cip, 1, ut);
    for (int i0 = 0; i0 < d->n; i0 += q.B) {
        const int nb = d->n - i0 < q.B ? d->n - i0 : q.B;
        for (int k = 0; k < nb; k++) {
            const int i = i0 + k;
            h->pack(x + (size_t)i * cin * hw, cin, d->h, d->w, d->pad, q.xc, cip, xa,
                    xp + k * ximg);
            /* The gradient the convolution uses (dya's backward applied), and db. */
            const float *dyi = dpt_hwc_dy_image(h, dy + (size_t)i * cout * P,
                                                y ? y + (size_t)i * cout * P : NULL, cout, P, dya,
                                                tmp, dbs);
            h->pack(dyi, cout, d->out_h, d->out_w, pe, q.dc, cop, NULL, dyp + k * dimg);
        }
        /* The next block's x, dy (and y), fetched during the first GEMM. */
        conv_prefetch pf = {{0}, {0}, 0, 0, 0};
        if (i0 + nb < d->n) {
            const int nn = d->n - i0 - nb < q.B ? d->n - i0 - nb : q.B;
            pf.p[0] = (const char *)(x + (size_t)(i0 + nb) * cin * hw);
            pf.lines[0] = (size_t)nn * cin * hw * sizeof(float) / 64;
            pf.p[1] = (const char *)(dy + (size_t)(i0 + nb) * cout * P);
            pf.lines[1] = (size_t)nn * cout * P * sizeof(float) / 64;
            if (dya) {
                pf.p[2] = (const char *)(y + (size_t)(i0 + nb) * cout * P);
                pf.lines[2] = pf.lines[1];
            }
        }
        /* dU[xi] += Σ_tiles V[xi][t][ci] Z[xi][t][co]. */
        const float *dy0 = dyp + ((size_t)pe * q.dc + pe) * cop;
        for (int k0 = 0; k0 < nb * tpi; k0 += q.T) {
            const int nt = nb * tpi - k0 < q.T ? nb * tpi - k0 : q.T;
            isa->in(xp, ximg, q.xc, cip, ntx, tpi, k0, nt, v, vps);
            isa->grad(dy0, dimg, q.dc, cop, ntx, tpi, k0, nt, z, zps);
            const hwc_geom g1 = {cin, cout, cip, cop, nt, 1, nt, 1, 1, 1, 1};
            for (int xi = 0; xi < q.npt; xi++)
                h->dw(&g1, 1, v + xi * vps, vps, z + xi * zps, nt * cop, zps, du + xi * ups,
                      k0 == 0 && xi == 0 ? &pf : NULL);
        }
        if (!dx)
            continue;
        const size_t ximg2 = (size_t)hw * cip;
        conv_prefetch pdx = {{(const char *)(dx + (size_t)i0 * cin * hw)},
                             {(size_t)nb * cin * hw * sizeof(float) / 64},
                             0,
                             0,
                             0};
        fwd_block(isa, &g2, &q, nb, dyp, ut, v, z, dxp, ximg2, &pdx);
        for (int k = 0; k < nb; k++) {
            const int i = i0 + k;
            float *dxi = dx + (size_t)i * cin * hw;
            h->unpack(dxp + k * ximg2, cin, d->h, d->w, 0, d->w, cip, NULL, dxi);
            if (xg)
                dpt_bn_grad_sums(x + (size_t)i * cin * hw, dxi, 1, cin, hw, xa, xg, xg + cin);
        }
    }
    isa->wgrad(du, cout, cin, cop, dw); /* dW = G^T dU G per channel pair */
    if (db)
        for (int co = 0; co < cout; co++)
            db[co] = (float)dbs[co];
}

/* The table's two entries: F(2x2, 3x3) ("wino") and F(4x4, 3x3) ("wino4"). */
int dpt_conv_wino_supports(const dpt_conv2d_desc *d) { return supports(d, 2); }
size_t dpt_conv_wino_work_floats(const dpt_conv2d_desc *d) { return work_floats(d, 2); }
void dpt_conv_wino_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq)
{
    forward(d, x, xa, w, b, y, work, sum, sumsq, 2);
}
void dpt_conv_wino_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg)
{
    backward(d, x, xa, w, dy, dya, y, dx, dw, db, work, xg, 2);
}

int dpt_conv_wino4_supports(const dpt_conv2d_desc *d) { return supports(d, 4); }
size_t dpt_conv_wino4_work_floats(const dpt_conv2d_desc *d) { return work_floats(d, 4); }
void dpt_conv_wino4_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *b, float *y, float *work, double *sum,
                            double *sumsq)
{
    forward(d, x, xa, w, b, y, work, sum, sumsq, 4);
}
void dpt_conv_wino4_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                             const float *w, const float *dy, const dpt_bn_apply *dya,
                             const float *y, float *dx, float *dw, float *db, float *work,
                             double *xg)
{
    backward(d, x, xa, w, dy, dya, y, dx, dw, db, work, xg, 4);
}
