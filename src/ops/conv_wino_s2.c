/* Winograd for stride-2 3x3 convolutions: the batch-level driver (packing,
 * filter transforms, the per-point GEMMs through hwc's kernels, batch-norm
 * fusions); the transforms are conv_wino_s2_kern.h. See conv_wino_s2.h. */
#include "ops/conv_wino_s2.h"

#include <string.h>

#define NPT 25 /* points of a tile: F(4x4, 2x2), 5x5 */

/* Floats added to the distance of the points' planes in V and M (as
 * conv_wino.c: T*C floats a multiple of 4 KB would put a tile's 25 points
 * in one L1 set). */
#define PSKEW 16

static const ws2_isa *isa_now(void)
{
#ifdef DPT_HAVE_X86_KERNELS
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &dpt_ws2_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return &dpt_ws2_isa_avx2;
#endif
    return NULL;
}

static int imax(int a, int b) { return a > b ? a : b; }
static int tiles(int n) { return (n + 3) / 4; }

/* F(4x4, 2x2)'s error grows with the channels summed, as wino4's does:
 * against a double reference (bench/wino_err, stride 2) 1.4e-5 of the
 * largest value at 512 channels, 1.8e-5 at 1024, 3.9e-5 at 2048; past
 * 1024 it would drift beyond float rounding (the line wino4 is held to). */
#define WINO_S2_MAX_C 1024

int dpt_conv_wino_s2_supports(const dpt_conv2d_desc *d)
{
    return isa_now() != NULL && d->groups <= 1 && d->dilation <= 1 && d->stride == 2 &&
           d->kh == 3 && d->kw == 3 && d->pad >= 0 && d->pad <= 2 && d->c_in >= 16 &&
           d->c_out >= 16 && d->c_in <= WINO_S2_MAX_C && d->c_out <= WINO_S2_MAX_C &&
           d->out_h >= 1 && d->out_w >= 1;
}

/* One F(4x4, 2x2) pass: the forward (s = the space-to-depth x, K = 4*cip,
 * N = c_out) or dx (s = dy padded by 1, K = c_out, N = 4*cip phases of dx). */
typedef struct ws2_pass {
    int kc, ks;       /* GEMM K (real), V's channels a tile (padded) */
    int cs_in, nph_in; /* input buffer: pixel stride, phases (4: space-to-depth) */
    int nc, ncp;      /* GEMM N: real, padded */
    int cs_out, nph_out; /* output buffer: pixel stride, phases (4: depth-to-space) */
    int oh, ow, ntx, tpi; /* outputs (of s), tiles a row, tiles an image */
    int xw, yw;       /* input, output buffer rows in pixels */
    size_t ximg, yimg;
} ws2_pass;

/* The points' kept phases (conv_wino_s2.h) of the forward (pad < 0) or of
 * dx for a convolution padded by pad. */
static ws2_pts pts_of(int pad)
{
    int z[2]; /* the point where phase component p's filter is zero, or -1 */
    for (int p = 0; p < 2; p++) {
        const int t0 = ws2_ktap(p, 0, pad) >= 0, t1 = ws2_ktap(p, 1, pad) >= 0;
        z[p] = t0 && t1 ? -1 : t0 ? 4 : 0;
    }
    ws2_pts pt;
    pt.all = 0;
    for (int xi = 0; xi < NPT; xi++) {
        pt.koff[xi] = pt.all, pt.nk[xi] = 0;
        for (int ph = 0; ph < 4; ph++) {
            const int keep = xi / 5 != z[ph >> 1] && xi % 5 != z[ph & 1];
            pt.slot[xi][ph] = (signed char)(keep ? pt.nk[xi]++ : -1);
        }
        pt.all += pt.nk[xi];
    }
    return pt;
}

/* Sizes of one call: tiles per GEMM (T), images per block (B), buffers. */
typedef struct ws2_plan {
    int T, B;   /* forward and dx's pass */
    int Tw, Bw; /* the backward: tiles per weight-gradient GEMM, images per block */
    int xr, xc;  /* x buffer (pad p, space-to-depth): rows, cols */
    int hs, wsd; /* dx's positions (of each phase) */
    int pe;      /* dy's padding at top and left (dx's pass) */
    int dr, dc;  /* dy buffer: rows, cols */
    size_t tmp, xp, dyp, u, ut, du, v, mm, yp, wt, ds, end;
} ws2_plan;

static ws2_plan plan_of(const dpt_conv2d_desc *d)
{
    ws2_plan q;
    const int cip = dpt_hwc_cpad(d->c_in), cop = dpt_hwc_cpad(d->c_out), C = imax(4 * cip, cop);
    const int nty = tiles(d->out_h), ntx = tiles(d->out_w), tpi = nty * ntx;
    /* 32 tiles measured as fast as or faster than 16, 64 and 128 on the
     * layers of bench/wino_bench.c (forward; the weight gradient's 128 was
     * faster on 128 -> 256 channels in one sweep, slower in another, and
     * slower on 32 -> 64): kept apart for that choice. */
    q.T = 32;
    q.B = q.T / tpi < 1 ? 1 : q.T / tpi > 64 ? 64 : q.T / tpi;
    q.Tw = 32;
    q.Bw = q.Tw / tpi < 1 ? 1 : q.Tw / tpi > 64 ? 64 : q.Tw / tpi;
    const int Bm = imax(q.B, q.Bw), Tm = imax(q.T, q.Tw);
    /* s rows 0 .. 4*nty: x rows up to 8*nty+1 (>= h+2p: zeros beyond) */
    q.xr = 8 * nty + 2, q.xc = 8 * ntx + 2;
    q.hs = (d->h + 1) / 2, q.wsd = (d->w + 1) / 2, q.pe = d->pad == 0;
    q.dr = imax(4 * tiles(q.hs) + 1, q.pe + 4 * nty);
    q.dc = imax(4 * tiles(q.wsd) + 1, q.pe + 4 * ntx);
    const size_t P = (size_t)d->out_h * d->out_w;
    const size_t dxs = (size_t)4 * q.hs * q.wsd * cip; /* dx in phases: 2hs x 2wsd pixels */
    size_t o = 0;
    q.tmp = o, o += dpt_hwc_al16(P * d->c_out);
    q.xp = o, o += dpt_hwc_al16((size_t)Bm * q.xr * q.xc * cip);
    q.dyp = o, o += dpt_hwc_al16((size_t)Bm * q.dr * q.dc * cop);
    /* the points' planes of the kept phases (ws2_uoff) */
    const size_t nf = (size_t)pts_of(-1).all, nx = (size_t)pts_of(d->pad).all;
    q.u = o, o += dpt_hwc_al16(nf * cip * cop + NPT * WS2_USKEW);
    q.ut = o, o += dpt_hwc_al16(nx * d->c_out * cip + NPT * WS2_USKEW);
    q.du = o, o += dpt_hwc_al16(nf * cip * cop + NPT * WS2_USKEW);
    q.v = o, o += dpt_hwc_al16((size_t)NPT * ((size_t)Tm * C + PSKEW));
    q.mm = o, o += dpt_hwc_al16((size_t)NPT * ((size_t)Tm * C + PSKEW));
    q.yp = o, o += dpt_hwc_al16((size_t)Bm * (P * cop > dxs ? P * cop : dxs));
    q.wt = o, o += dpt_hwc_al16((size_t)9 * imax(d->c_in * cop, d->c_out * cip));
    q.ds = o, o += dpt_hwc_al16(4 * (size_t)d->c_out); /* 2 * c_out doubles */
    q.end = o;
    return q;
}

size_t dpt_conv_wino_s2_work_floats(const dpt_conv2d_desc *d) { return plan_of(d).end; }

/* wt [inner][9][outer padded] = w[co][ci][9] with the outer channels
 * (dx 0: co, dx 1: ci) innermost, for the filter transforms' vector loads. */
static void w_outer(const float *w, int cin, int cout, int dx, float *wt)
{
    const int no = dx ? cin : cout, ni = dx ? cout : cin, nop = dpt_hwc_cpad(no);
    for (int i = 0; i < ni; i++)
        for (int k = 0; k < 9; k++) {
            float *row = wt + ((size_t)i * 9 + k) * nop;
            for (int o = 0; o < nop; o++)
                row[o] = o >= no ? 0.0f
                         : dx    ? w[((size_t)i * cin + o) * 9 + k]
                                 : w[((size_t)o * cin + i) * 9 + k];
        }
}

/* One pass over the nb images of a block: xp -> yp through u, the points'
 * GEMMs over their kept phases (pt: K in the forward, N in dx's pass). */
static void pass_block(const ws2_isa *isa, const ws2_pass *g, const ws2_plan *q, int nb,
                       const float *xp, const float *u, const ws2_pts *pt, float *v, float *m,
                       float *yp, conv_prefetch *pf)
{
    const size_t vps = (size_t)q->T * g->ks + PSKEW, mps = (size_t)q->T * g->ncp + PSKEW;
    const int s2d = g->nph_in == 4;
    for (int k0 = 0; k0 < nb * g->tpi; k0 += q->T) {
        const int nt = nb * g->tpi - k0 < q->T ? nb * g->tpi - k0 : q->T;
        isa->in(xp, g->ximg, g->xw, g->cs_in, g->nph_in, g->ntx, g->tpi, k0, nt, v, vps, pt);
        for (int xi = 0; xi < NPT; xi++) {
            /* forward: K the kept phases' channels; dx: N those (M's tiles
             * that far apart) */
            const int kc = s2d ? pt->nk[xi] * g->cs_in : g->kc;
            const int nn = s2d ? g->nc : pt->nk[xi] * g->cs_out;
            const size_t uo = ws2_uoff(pt, xi, (size_t)(s2d ? g->cs_in * g->ncp : g->kc * g->cs_out));
            const hwc_geom g1 = {kc, nn, g->ks, s2d ? g->ncp : nn, nt, 1, nt, 1, 1, 1, 1};
            isa->hwc->fwd(&g1, 1, v + xi * vps, vps, u + uo, m + xi * mps, mps,
                          k0 == 0 && xi == 0 ? pf : NULL);
        }
        isa->out(m, mps, g->cs_out, g->nph_out, g->ntx, g->tpi, k0, nt, g->oh, g->ow, yp, g->yimg,
                 g->yw, pt);
    }
}

void dpt_conv_wino_s2_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                              const float *w, const float *b, float *y, float *work, double *sum,
                              double *sumsq)
{
    const ws2_isa *isa = isa_now();
    const hwc_isa *h = isa->hwc;
    const ws2_plan q = plan_of(d);
    const int cin = d->c_in, cout = d->c_out, hw = d->h * d->w, P = d->out_h * d->out_w;
    const int cip = dpt_hwc_cpad(cin), cop = dpt_hwc_cpad(cout), ntx = tiles(d->out_w);
    const ws2_pass g = {4 * cip, 4 * cip, cip, 4, cout, cop, cop, 1,
                        d->out_h, d->out_w, ntx, tiles(d->out_h) * ntx, q.xc, d->out_w,
                        (size_t)q.xr * q.xc * cip, (size_t)P * cop};
    float *xp = work + q.xp, *u = work + q.u, *yp = work + q.yp;
    const ws2_pts pt = pts_of(-1);
    w_outer(w, cin, cout, 0, work + q.wt);
    isa->filt(work + q.wt, cin, cout, cip, cop, 0, d->pad, &pt, u);
    memset(xp, 0, q.B * g.ximg * sizeof *xp);
    if (sum)
        for (int co = 0; co < cout; co++)
            sum[co] = sumsq[co] = 0.0;
    for (int i0 = 0; i0 < d->n; i0 += q.B) {
        const int nb = d->n - i0 < q.B ? d->n - i0 : q.B;
        for (int k = 0; k < nb; k++)
            h->pack(x + (size_t)(i0 + k) * cin * hw, cin, d->h, d->w, d->pad, q.xc, cip, xa,
                    xp + k * g.ximg);
        /* The next block's input and this block's output planes, as hwc. */
        conv_prefetch pf = {{0}, {0}, 0, 0, 0};
        if (i0 + nb < d->n) {
            const int nn = d->n - i0 - nb < q.B ? d->n - i0 - nb : q.B;
            pf.p[0] = (const char *)(x + (size_t)(i0 + nb) * cin * hw);
            pf.lines[0] = (size_t)nn * cin * hw * sizeof(float) / 64;
        }
        pf.p[1] = (const char *)(y + (size_t)i0 * cout * P);
        pf.lines[1] = (size_t)nb * cout * P * sizeof(float) / 64;
        pass_block(isa, &g, &q, nb, xp, u, &pt, work + q.v, work + q.mm, yp, &pf);
        for (int k = 0; k < nb; k++) {
            h->unpack(yp + k * g.yimg, cout, d->out_h, d->out_w, 0, d->out_w, cop, b,
                      y + (size_t)(i0 + k) * cout * P);
            if (sum)
                h->sums(yp + k * g.yimg, P, cop, cout, b, sum, sumsq);
        }
    }
}

void dpt_conv_wino_s2_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                               const float *w, const float *dy, const dpt_bn_apply *dya,
                               const float *y, float *dx, float *dw, float *db, float *work,
                               double *xg)
{
    const ws2_isa *isa = isa_now();
    const hwc_isa *h = isa->hwc;
    const ws2_plan q = plan_of(d);
    const int cin = d->c_in, cout = d->c_out, hw = d->h * d->w, P = d->out_h * d->out_w;
    const int cip = dpt_hwc_cpad(cin), cop = dpt_hwc_cpad(cout);
    const int ntx = tiles(d->out_w), tpi = tiles(d->out_h) * ntx, sx = tiles(q.wsd);
    const size_t ximg = (size_t)q.xr * q.xc * cip, dimg = (size_t)q.dr * q.dc * cop;
    /* dx: 4*cip phases of hs x wsd positions as a pass over dy, written to
     * dx [2hs][2wsd][cip]. */
    const ws2_pass g2 = {cout, cop, cop, 1, 4 * cip, 4 * cip, cip, 4,
                         q.hs, q.wsd, sx, tiles(q.hs) * sx, q.dc, 2 * q.wsd,
                         dimg, (size_t)4 * q.hs * q.wsd * cip};
    float *tmp = work + q.tmp, *xp = work + q.xp, *dyp = work + q.dyp, *ut = work + q.ut;
    float *du = work + q.du, *v = work + q.v, *z = work + q.mm, *dxp = work + q.yp;
    double *dbs = (double *)(work + q.ds);
    const size_t vps = (size_t)q.Tw * 4 * cip + PSKEW, zps = (size_t)q.Tw * cop + PSKEW;
    const size_t ups = (size_t)cip * cop; /* per phase kept (pt.koff) */
    memset(xp, 0, q.Bw * ximg * sizeof *xp);
    memset(dyp, 0, q.Bw * dimg * sizeof *dyp);
    const ws2_pts pt = pts_of(-1), ptx = pts_of(d->pad); /* forward's (dw), dx's */
    memset(du, 0, (ws2_uoff(&pt, NPT - 1, ups) + pt.nk[NPT - 1] * ups) * sizeof *du);
    for (int co = 0; co < cout; co++)
        dbs[co] = 0.0;
    if (xg)
        for (int ci = 0; ci < 2 * cin; ci++)
            xg[ci] = 0.0;
    if (dx) {
        w_outer(w, cin, cout, 1, work + q.wt);
        isa->filt(work + q.wt, cin, cout, cip, cop, 1, d->pad, &ptx, ut);
    }
    for (int i0 = 0; i0 < d->n; i0 += q.Bw) {
        const int nb = d->n - i0 < q.Bw ? d->n - i0 : q.Bw;
        for (int k = 0; k < nb; k++) {
            const int i = i0 + k;
            h->pack(x + (size_t)i * cin * hw, cin, d->h, d->w, d->pad, q.xc, cip, xa,
                    xp + k * ximg);
            /* The gradient the convolution uses (dya's backward applied), and db. */
            const float *dyi = dpt_hwc_dy_image(h, dy + (size_t)i * cout * P,
                                                y ? y + (size_t)i * cout * P : NULL, cout, P, dya,
                                                tmp, dbs);
            h->pack(dyi, cout, d->out_h, d->out_w, q.pe, q.dc, cop, NULL, dyp + k * dimg);
        }
        /* The next block's x, dy (and y), fetched during the first GEMM. */
        conv_prefetch pf = {{0}, {0}, 0, 0, 0};
        if (i0 + nb < d->n) {
            const int nn = d->n - i0 - nb < q.Bw ? d->n - i0 - nb : q.Bw;
            pf.p[0] = (const char *)(x + (size_t)(i0 + nb) * cin * hw);
            pf.lines[0] = (size_t)nn * cin * hw * sizeof(float) / 64;
            pf.p[1] = (const char *)(dy + (size_t)(i0 + nb) * cout * P);
            pf.lines[1] = (size_t)nn * cout * P * sizeof(float) / 64;
            if (dya) {
                pf.p[2] = (const char *)(y + (size_t)(i0 + nb) * cout * P);
                pf.lines[2] = pf.lines[1];
            }
        }
        /* dU[xi] += Σ_tiles V[xi][t][k] Z[xi][t][co]. */
        const float *dy0 = dyp + ((size_t)q.pe * q.dc + q.pe) * cop;
        for (int k0 = 0; k0 < nb * tpi; k0 += q.Tw) {
            const int nt = nb * tpi - k0 < q.Tw ? nb * tpi - k0 : q.Tw;
            isa->in(xp, ximg, q.xc, cip, 4, ntx, tpi, k0, nt, v, vps, &pt);
            isa->grad(dy0, dimg, q.dc, cop, ntx, tpi, k0, nt, z, zps);
            for (int xi = 0; xi < NPT; xi++) {
                const hwc_geom g1 = {pt.nk[xi] * cip, cout, 4 * cip, cop, nt, 1, nt, 1, 1, 1, 1};
                h->dw(&g1, 1, v + xi * vps, vps, z + xi * zps, nt * cop, zps,
                      du + ws2_uoff(&pt, xi, ups), k0 == 0 && xi == 0 ? &pf : NULL);
            }
        }
        if (!dx)
            continue;
        conv_prefetch pdx = {{(const char *)(dx + (size_t)i0 * cin * hw)},
                             {(size_t)nb * cin * hw * sizeof(float) / 64},
                             0,
                             0,
                             0};
        pass_block(isa, &g2, &q, nb, dyp, ut, &ptx, v, z, dxp, &pdx);
        for (int k = 0; k < nb; k++) {
            const int i = i0 + k;
            float *dxi = dx + (size_t)i * cin * hw;
            h->unpack(dxp + k * g2.yimg, cin, d->h, d->w, 0, g2.yw, cip, NULL, dxi);
            if (xg)
                dpt_bn_grad_sums(x + (size_t)i * cin * hw, dxi, 1, cin, hw, xa, xg, xg + cin);
        }
    }
    isa->wgrad(du, cin, cout, cip, cop, &pt, dw); /* dW = G^T dU G, back to the 3x3 taps */
    if (db)
        for (int co = 0; co < cout; co++)
            db[co] = (float)dbs[co];
}
