/* Direct stride-1 convolution over a batch, one image at a time, using the
 * micro-kernels of conv_kern.h.
 *
 * The "wide" layout. An input plane [h, w] is copied into a zeroed plane of
 * width wp = w + 2·pad and height h + 2·pad (plus zero slack at the end).
 * Output position (oy, ox) is computed at q = oy·wp + ox, so filter tap
 * (ky, kx) reads input position q + ky·wp + kx: for a run of consecutive q
 * the inputs of one tap are consecutive, and the convolution is a GEMM whose
 * B operand is never materialised. Columns ox >= out_w of the wide output
 * are junk (they straddle two rows) and are dropped when the output is
 * copied back to the dense layout; that costs (wp - out_w) / wp of the work
 * (8% for 3x3 padding 1 on 24x24).
 *
 *   forward   yw[co][q]  = b[co] + Σ_ci,t W[co][ci][t] · xp[ci][q + off[t]]
 *   data grad dx is the "full" correlation of dy with the flipped filters:
 *             dy padded by (kh-1-pad, kw-1-pad) into dyp of width wd, then
 *             dxw[ci][q] = Σ_co,t W[co][ci][flip t] · dyp[co][q + offd[t]],
 *             the forward kernel with input and output channels swapped
 *   weight grad dW[co][ci][t] = Σ_images Σ_q dyw[co][q] · xp[ci][q + off[t]]
 *             with dyw = dy in the wide layout (junk columns zero), per-lane
 *             partial sums over the whole batch, added up once at the end.
 *
 * Everything a call touches per image (padded planes, wide output) is a few
 * tens of KiB and stays in L1/L2 while the kernel runs. */
#include "ops/conv_direct.h"

#include <string.h>

#define ALIGN_F 16 /* floats: regions start on 64-byte boundaries */

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/* Geometry of one descriptor under one kernel set. */
typedef struct geom {
    int kt, k_total;            /* taps per channel, c_in * kt */
    int wp, hp;                 /* padded input */
    size_t ps_x;                /* plane stride of xp */
    int nq_f;                   /* forward positions, a multiple of the tile */
    int wd, hd, pdh, pdw;       /* dy padded for the data gradient */
    size_t ps_d;
    int nq_b;                   /* data-gradient positions (h·wd rounded) */
    int nq_w;                   /* weight-gradient positions (out_h·wp rounded to vw) */
    int co_pf, ci_pf;           /* channel counts padded to fwd_cb */
    int co_pw, k_pw;            /* padded to dw_cb, dw_kb */
    /* Offsets (floats) of the regions in the work buffer. */
    size_t o_xp, o_out, o_dyp, o_dyw, o_zero, o_wpk, o_part, o_ptr, total;
} geom;

static void make_geom(const conv_isa *isa, const dpt_conv2d_desc *d, geom *g)
{
    const int tile = isa->fwd_nv * isa->vw;
    g->kt = d->kh * d->kw;
    g->k_total = d->c_in * g->kt;
    g->wp = d->w + 2 * d->pad;
    g->hp = d->h + 2 * d->pad;
    g->nq_f = (int)round_up((size_t)d->out_h * g->wp, (size_t)tile);
    size_t off_max = (size_t)(d->kh - 1) * g->wp + (size_t)(d->kw - 1);
    size_t need = (size_t)g->nq_f + off_max;
    if (need < (size_t)g->hp * g->wp)
        need = (size_t)g->hp * g->wp;
    g->ps_x = round_up(need, ALIGN_F);

    g->pdh = d->kh - 1 - d->pad;
    g->pdw = d->kw - 1 - d->pad;
    g->wd = d->out_w + 2 * g->pdw;
    g->hd = d->out_h + 2 * g->pdh;
    g->nq_b = (int)round_up((size_t)d->h * g->wd, (size_t)tile);
    size_t offd_max = (size_t)(d->kh - 1) * g->wd + (size_t)(d->kw - 1);
    need = (size_t)g->nq_b + offd_max;
    if (need < (size_t)g->hd * g->wd)
        need = (size_t)g->hd * g->wd;
    g->ps_d = round_up(need, ALIGN_F);

    g->nq_w = (int)round_up((size_t)d->out_h * g->wp, (size_t)isa->vw);
    g->co_pf = (int)round_up((size_t)d->c_out, (size_t)isa->fwd_cb);
    g->ci_pf = (int)round_up((size_t)d->c_in, (size_t)isa->fwd_cb);
    g->co_pw = (int)round_up((size_t)d->c_out, (size_t)isa->dw_cb);
    g->k_pw = (int)round_up((size_t)g->k_total, (size_t)isa->dw_kb);

    size_t ys_f = round_up((size_t)g->nq_f, ALIGN_F), ys_b = round_up((size_t)g->nq_b, ALIGN_F);
    size_t out = (size_t)d->c_out * ys_f;
    if ((size_t)d->c_in * ys_b > out)
        out = (size_t)d->c_in * ys_b;
    size_t wpk = (size_t)g->co_pf * g->k_total;
    if ((size_t)g->ci_pf * d->c_out * g->kt > wpk)
        wpk = (size_t)g->ci_pf * d->c_out * g->kt;
    size_t o = 0;
    g->o_xp = o, o += round_up((size_t)d->c_in * g->ps_x, ALIGN_F);
    g->o_out = o, o += round_up(out, ALIGN_F);
    g->o_dyp = o, o += round_up((size_t)d->c_out * g->ps_d, ALIGN_F);
    g->o_dyw = o, o += round_up((size_t)d->c_out * (size_t)g->nq_w, ALIGN_F);
    g->o_zero = o, o += round_up((size_t)g->nq_w, ALIGN_F);
    g->o_wpk = o, o += round_up(wpk, ALIGN_F);
    g->o_part = o, o += round_up((size_t)g->co_pw * g->k_pw * isa->vw, ALIGN_F);
    /* Pointer tables of the weight-gradient kernel, stored in the float
     * buffer (two floats per pointer on LP64, rounded generously). */
    g->o_ptr = o, o += round_up((size_t)(g->co_pw + g->k_pw) * (sizeof(void *) / sizeof(float) + 1),
                                ALIGN_F);
    g->total = o;
}

const conv_isa *dpt_conv_direct_pick(const dpt_conv2d_desc *d)
{
    const conv_isa *isa = dpt_ops_conv_isa();
    if (!isa || d->stride != 1 || d->pad > d->kh - 1 || d->pad > d->kw - 1 ||
        d->kh * d->kw > DPT_CONV_DIRECT_MAX_TAPS)
        return NULL;
    /* A 1x1 filter is a plain GEMM over the image: the BLAS does that well. */
    if (d->kh == 1 && d->kw == 1)
        return NULL;
    return isa;
}

size_t dpt_conv_direct_work_floats(const dpt_conv2d_desc *d)
{
    size_t most = 0;
#ifdef DPT_HAVE_X86_KERNELS
    const conv_isa *all[] = {&dpt_conv_isa_avx512, &dpt_conv_isa_avx2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        geom g;
        make_geom(all[i], d, &g);
        if (g.total > most)
            most = g.total;
    }
#else
    (void)d;
#endif
    return most;
}

/* src [c][h][w] into dst planes of stride ps: each row at (row + ph)·wp + pw,
 * everything else up to ps zero. */
static void pad_planes(const float *src, int c, int h, int w, int ph, int pw, int wp, size_t ps,
                       float *dst)
{
    for (int ch = 0; ch < c; ch++) {
        const float *s = src + (size_t)ch * h * w;
        float *p = dst + (size_t)ch * ps;
        size_t top = (size_t)ph * wp + pw;
        memset(p, 0, top * sizeof *p);
        float *r = p + top;
        for (int y = 0; y < h; y++) {
            memcpy(r, s + (size_t)y * w, (size_t)w * sizeof *r);
            if (y + 1 < h)
                memset(r + w, 0, (size_t)(wp - w) * sizeof *r);
            r += wp;
        }
        /* After the last row: its right padding, the bottom rows, the slack. */
        float *end = p + ps, *tail = r - wp + w;
        memset(tail, 0, (size_t)(end - tail) * sizeof *r);
    }
}

/* Dense [c][oh][ow] from wide planes [c][ys] of row stride wp. */
static void compact(const float *wide, int c, int oh, int ow, int wp, size_t ys, float *dst)
{
    for (int ch = 0; ch < c; ch++) {
        const float *s = wide + (size_t)ch * ys;
        float *o = dst + (size_t)ch * oh * ow;
        for (int y = 0; y < oh; y++)
            memcpy(o + (size_t)y * ow, s + (size_t)y * wp, (size_t)ow * sizeof *o);
    }
}

void dpt_conv_direct_forward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                             const float *w, const float *b, float *y, float *work)
{
    geom g;
    make_geom(isa, d, &g);
    float *xp = work + g.o_xp, *out = work + g.o_out, *wpk = work + g.o_wpk;
    const size_t ys = round_up((size_t)g.nq_f, ALIGN_F);
    int offs[DPT_CONV_DIRECT_MAX_TAPS];
    const int kt = g.kt;
    for (int ky = 0; ky < d->kh; ky++)
        for (int kx = 0; kx < d->kw; kx++)
            offs[ky * d->kw + kx] = ky * g.wp + kx;
    /* wpk: per block of fwd_cb output channels, [ci][t][fwd_cb]. */
    const int cb = isa->fwd_cb;
    for (int co = 0; co < g.co_pf; co++) {
        float *blk = wpk + (size_t)(co / cb) * g.k_total * cb + co % cb;
        for (int k = 0; k < g.k_total; k++)
            blk[(size_t)k * cb] = co < d->c_out ? w[(size_t)co * g.k_total + k] : 0.0f;
    }
    const size_t x_img = (size_t)d->c_in * d->h * d->w;
    const size_t y_img = (size_t)d->c_out * d->out_h * d->out_w;
    for (int i = 0; i < d->n; i++) {
        pad_planes(x + i * x_img, d->c_in, d->h, d->w, d->pad, d->pad, g.wp, g.ps_x, xp);
        isa->fwd(xp, g.ps_x, d->c_in, kt, offs, wpk, b, d->c_out, out, ys, g.nq_f);
        compact(out, d->c_out, d->out_h, d->out_w, g.wp, ys, y + i * y_img);
    }
}

void dpt_conv_direct_backward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                              const float *w, const float *dy, float *dx, float *dw, float *db,
                              float *work)
{
    geom g;
    make_geom(isa, d, &g);
    const int kt = g.kt, vw = isa->vw;
    float *xp = work + g.o_xp, *out = work + g.o_out, *wpk = work + g.o_wpk;
    float *dyp = work + g.o_dyp, *dyw = work + g.o_dyw, *zero = work + g.o_zero;
    float *part = work + g.o_part;
    const float **dptr = (const float **)(void *)(work + g.o_ptr);
    const float **xptr = dptr + g.co_pw;
    const size_t ys = round_up((size_t)g.nq_b, ALIGN_F);

    int od[DPT_CONV_DIRECT_MAX_TAPS];
    if (dx) {
        for (int ty = 0; ty < d->kh; ty++)
            for (int tx = 0; tx < d->kw; tx++)
                od[ty * d->kw + tx] = ty * g.wd + tx;
        /* wpk for the data gradient: per block of fwd_cb input channels,
         * [co][t][fwd_cb] with the filter flipped in both directions. */
        const int cb = isa->fwd_cb;
        const size_t kb = (size_t)d->c_out * kt;
        for (int ci = 0; ci < g.ci_pf; ci++) {
            float *blk = wpk + (size_t)(ci / cb) * kb * cb + ci % cb;
            for (int co = 0; co < d->c_out; co++)
                for (int ty = 0; ty < d->kh; ty++)
                    for (int tx = 0; tx < d->kw; tx++) {
                        size_t k = ((size_t)co * d->kh + ty) * d->kw + tx;
                        blk[k * cb] = ci < d->c_in
                                          ? w[(((size_t)co * d->c_in + ci) * d->kh + d->kh - 1 - ty) *
                                                  d->kw + d->kw - 1 - tx]
                                          : 0.0f;
                    }
        }
    }

    memset(zero, 0, (size_t)g.nq_w * sizeof *zero);
    memset(part, 0, (size_t)g.co_pw * g.k_pw * vw * sizeof *part);
    for (int co = 0; co < g.co_pw; co++)
        dptr[co] = co < d->c_out ? dyw + (size_t)co * g.nq_w : zero;
    for (int k = 0; k < g.k_pw; k++) {
        if (k < g.k_total) {
            int ci = k / kt, t = k % kt;
            xptr[k] = xp + (size_t)ci * g.ps_x + (size_t)(t / d->kw) * g.wp + t % d->kw;
        } else {
            xptr[k] = zero;
        }
    }
    double bsum[256];
    const int bias_here = db && d->c_out <= 256;
    if (bias_here)
        memset(bsum, 0, sizeof bsum);

    const int P = d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * d->h * d->w;
    const size_t y_img = (size_t)d->c_out * P;
    for (int i = 0; i < d->n; i++) {
        const float *xi = x + i * x_img, *dyi = dy + i * y_img;
        pad_planes(xi, d->c_in, d->h, d->w, d->pad, d->pad, g.wp, g.ps_x, xp);
        /* dyw: dy in the wide layout of row stride wp, junk columns zero. */
        for (int co = 0; co < d->c_out; co++) {
            const float *s = dyi + (size_t)co * P;
            float *r = dyw + (size_t)co * g.nq_w;
            float acc = 0.0f;
            for (int oy = 0; oy < d->out_h; oy++) {
                for (int ox = 0; ox < d->out_w; ox++) {
                    r[ox] = s[ox];
                    acc += s[ox];
                }
                for (int ox = d->out_w; ox < g.wp; ox++)
                    r[ox] = 0.0f;
                s += d->out_w;
                r += g.wp;
            }
            float *end = dyw + (size_t)co * g.nq_w + g.nq_w;
            r -= g.wp - d->out_w;
            memset(r, 0, (size_t)(end - r) * sizeof *r);
            if (bias_here)
                bsum[co] += acc;
        }
        isa->dw(dptr, g.co_pw, xptr, g.k_pw, g.nq_w, part);
        if (dx) {
            pad_planes(dyi, d->c_out, d->out_h, d->out_w, g.pdh, g.pdw, g.wd, g.ps_d, dyp);
            isa->fwd(dyp, g.ps_d, d->c_out, kt, od, wpk, NULL, d->c_in, out, ys, g.nq_b);
            compact(out, d->c_in, d->h, d->w, g.wd, ys, dx + i * x_img);
        }
    }
    for (int co = 0; co < d->c_out; co++)
        for (int k = 0; k < g.k_total; k++) {
            const float *pp = part + ((size_t)co * g.k_pw + k) * vw;
            float s = 0.0f;
            for (int l = 0; l < vw; l++)
                s += pp[l];
            dw[(size_t)co * g.k_total + k] = s;
        }
    if (db) {
        for (int co = 0; co < d->c_out; co++) {
            if (bias_here) {
                db[co] = (float)bsum[co];
            } else {
                double s = 0.0;
                for (int i = 0; i < d->n; i++)
                    for (int q = 0; q < P; q++)
                        s += dy[i * y_img + (size_t)co * P + q];
                db[co] = (float)s;
            }
        }
    }
}
