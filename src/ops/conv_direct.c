/* Direct stride-1 convolution over a batch, one image at a time, using the
 * micro-kernels of conv_kern.h.
 *
 * The "wide" layout. An input plane [h, w] is copied into a zeroed plane of
 * width wp = w + pad and height h + 2·pad (plus zero slack at the end): the
 * pad zero columns after each row are also the left padding of the next
 * row. Output position (oy, ox) is computed at q = oy·wp + ox, so filter
 * tap (ky, kx) reads input position q + ky·wp + kx: for a run of
 * consecutive q the inputs of one tap are consecutive, and the convolution
 * is a GEMM whose B operand is never materialised. Columns ox >= out_w of
 * the wide output are junk (they straddle two rows): the kernel's masked
 * stores drop them and write the dense output directly (conv_out_map), or,
 * for rows narrower than a vector, the wide output is copied back row by
 * row. The junk costs (wp - out_w) / wp of the work (4% for 3x3 padding 1
 * on 24x24).
 *
 *   forward   yw[co][q]  = b[co] + Σ_ci,t W[co][ci][t] · xp[ci][q + off[t]]
 *   data grad dx is the "full" correlation of dy with the flipped filters:
 *             dy padded by (kh-1-pad, kw-1-pad) into dyp of width
 *             wd = out_w + kw-1-pad (zero columns shared likewise), then
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
    int nq_f;                   /* forward positions (out_h·wp rounded to a vector) */
    int wd, hd, pdh, pdw;       /* dy padded for the data gradient */
    size_t ps_d;
    int nq_b;                   /* data-gradient positions (h·wd rounded) */
    int nq_w;                   /* weight-gradient positions (out_h·wp rounded to vw) */
    int same;                   /* dyw is a view into dyp (wd == wp, kernel 2·pad + 1) */
    int map_f, map_b;           /* outputs stored through a conv_out_map */
    int co_pf, ci_pf;           /* channel counts padded to fwd_cb */
    int co_pw, k_pw;            /* padded to dw_cb, dw_kb */
    size_t ys_f, ys_b;          /* plane strides of the wide outputs */
    /* Offsets (floats) of the regions in the work buffer. */
    size_t o_xp, o_out, o_dyp, o_dyw, o_zero, o_wpk, o_part, o_stats, o_bsum, o_map, o_ptr, total;
} geom;

static void make_geom(const conv_isa *isa, const dpt_conv2d_desc *d, geom *g)
{
    const int vw = isa->vw;
    g->kt = d->kh * d->kw;
    g->k_total = d->c_in * g->kt;
    g->wp = d->w + d->pad;
    g->hp = d->h + 2 * d->pad;
    g->nq_f = (int)round_up((size_t)d->out_h * g->wp, (size_t)vw);
    size_t off_max = (size_t)(d->kh - 1) * g->wp + (size_t)(d->kw - 1);
    size_t need = (size_t)g->nq_f + off_max;
    if (need < (size_t)g->hp * g->wp)
        need = (size_t)g->hp * g->wp;
    g->ps_x = round_up(need, ALIGN_F);

    g->pdh = d->kh - 1 - d->pad;
    g->pdw = d->kw - 1 - d->pad;
    g->wd = d->out_w + g->pdw;
    g->hd = d->out_h + 2 * g->pdh;
    g->nq_b = (int)round_up((size_t)d->h * g->wd, (size_t)vw);
    g->nq_w = (int)round_up((size_t)d->out_h * g->wp, (size_t)vw);
    g->same = g->wd == g->wp;
    size_t offd_max = (size_t)(d->kh - 1) * g->wd + (size_t)(d->kw - 1);
    need = (size_t)g->nq_b + offd_max;
    if (need < (size_t)g->hd * g->wd)
        need = (size_t)g->hd * g->wd;
    if (g->same && need < (size_t)g->pdh * g->wd + g->pdw + g->nq_w)
        need = (size_t)g->pdh * g->wd + g->pdw + g->nq_w;
    g->ps_d = round_up(need, ALIGN_F);
    g->map_f = d->out_w >= vw && g->wp >= vw;
    g->map_b = d->w >= vw && g->wd >= vw;

    g->co_pf = (int)round_up((size_t)d->c_out, (size_t)isa->fwd_cb);
    g->ci_pf = (int)round_up((size_t)d->c_in, (size_t)isa->fwd_cb);
    g->co_pw = (int)round_up((size_t)d->c_out, (size_t)isa->dw_cb);
    g->k_pw = (int)round_up((size_t)g->k_total, (size_t)isa->dw_kb);

    g->ys_f = round_up((size_t)g->nq_f, ALIGN_F);
    g->ys_b = round_up((size_t)g->nq_b, ALIGN_F);
    size_t out = g->map_f ? 0 : (size_t)d->c_out * g->ys_f;
    if (!g->map_b && (size_t)d->c_in * g->ys_b > out)
        out = (size_t)d->c_in * g->ys_b;
    size_t wpk = (size_t)g->co_pf * g->k_total;
    if ((size_t)g->ci_pf * d->c_out * g->kt > wpk)
        wpk = (size_t)g->ci_pf * d->c_out * g->kt;
    size_t n_map = (size_t)(g->nq_f > g->nq_b ? g->nq_f : g->nq_b) / vw;
    size_t o = 0;
    g->o_xp = o, o += round_up((size_t)d->c_in * g->ps_x, ALIGN_F);
    g->o_out = o, o += round_up(out, ALIGN_F);
    g->o_dyp = o, o += round_up((size_t)d->c_out * g->ps_d, ALIGN_F) + ALIGN_F; /* see dyp_at */
    g->o_dyw = o, o += g->same ? 0 : round_up((size_t)d->c_out * (size_t)g->nq_w, ALIGN_F);
    g->o_zero = o, o += round_up((size_t)g->nq_w, ALIGN_F);
    g->o_wpk = o, o += round_up(wpk, ALIGN_F);
    g->o_part = o, o += round_up((size_t)g->co_pw * g->k_pw * vw, ALIGN_F);
    g->o_stats = o, o += round_up((size_t)(d->c_out > d->c_in ? d->c_out : d->c_in) * 2 * vw,
                                  ALIGN_F);
    g->o_bsum = o, o += round_up((size_t)d->c_out * 2, ALIGN_F); /* doubles */
    /* Tables stored in the float buffer: the output map (5 ints per entry)
     * and the pointer tables of the weight-gradient kernel. */
    g->o_map = o, o += round_up(n_map * sizeof(conv_out_map) / sizeof(float) + 1, ALIGN_F);
    g->o_ptr = o, o += round_up((size_t)(g->co_pw + g->k_pw) * (sizeof(void *) / sizeof(float) + 1),
                                ALIGN_F);
    g->total = o;
}

const conv_isa *dpt_conv_direct_pick(const dpt_conv2d_desc *d)
{
    const conv_isa *isa = dpt_ops_conv_isa();
    if (!isa || d->stride != 1 || d->dilation > 1 || d->groups > 1 || d->pad > d->kh - 1 || d->pad > d->kw - 1 ||
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

/* Inputs are copied into the interior of padded planes by isa->pad; the
 * padding around them is zeroed once per call and never written again, so
 * every image after the first costs only the copy. */
static void zero_planes(float *dst, int c, size_t ps)
{
    memset(dst, 0, (size_t)c * ps * sizeof *dst);
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

/* The conv_out_map of wide positions [0, nq) (row stride wp, rows of ow
 * valid columns, oh rows) for vectors of vw lanes; needs wp, ow >= vw. */
static void make_map(conv_out_map *map, int nq, int vw, int oh, int ow, int wp)
{
    for (int q = 0, e = 0; q < nq; q += vw, e++) {
        conv_out_map m = {0, 0, 0, 0, 0, 0, 0};
        int r = q / wp, c = q % wp;
        if (r < oh && c < ow) {
            m.off_a = r * ow + c;
            m.hi_a = ow - c < vw ? ow - c : vw;
        }
        int lo = wp - c; /* first lane in row r + 1 */
        if (lo < vw && r + 1 < oh) {
            m.lo_b = lo;
            m.hi_b = lo + ow < vw ? lo + ow : vw;
            m.off_b = (r + 1) * ow - lo;
        }
        m.bits_a = (1u << m.hi_a) - 1u;
        m.bits_b = ((1u << m.hi_b) - 1u) & ~((1u << m.lo_b) - 1u);
        map[e] = m;
    }
}

/* Spread over `steps` kernel tiles or blocks (the kernels step once per
 * whole tile or block): the lines of up to three regions (NULL: none). */
static void prefetch_plan(conv_prefetch *pf, const void *a, const void *b, const void *c,
                          size_t bytes_a, size_t bytes_bc, size_t steps)
{
    const void *p[3] = {a, b, c};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        pf->p[i] = p[i];
        pf->lines[i] = p[i] ? ((i ? bytes_bc : bytes_a) + 63) / 64 : 0;
        total += pf->lines[i];
    }
    pf->per = steps ? (total + steps - 1) / steps : 0;
    pf->r = 0;
    pf->j = 0;
}

/* The kernels' per-lane sums of one image, st[c][2][vw], added into a[c]
 * and b[c] in float64: each float sum covers one image's plane, so the
 * batch total keeps its precision. */
static void add_lane_sums(const float *st, int c, int vw, double *a, double *b)
{
    for (int ch = 0; ch < c; ch++) {
        double s1 = 0.0, s2 = 0.0;
        for (int l = 0; l < vw; l++) {
            s1 += st[(size_t)ch * 2 * vw + l];
            s2 += st[(size_t)ch * 2 * vw + vw + l];
        }
        a[ch] += s1;
        b[ch] += s2;
    }
}

void dpt_conv_direct_forward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                             const dpt_bn_apply *xa, const float *w, const float *b, float *y,
                             float *work, double *sum, double *sumsq)
{
    geom g;
    make_geom(isa, d, &g);
    const int vw = isa->vw;
    float *xp = work + g.o_xp, *out = work + g.o_out, *wpk = work + g.o_wpk;
    float *stats = work + g.o_stats;
    conv_out_map *map = g.map_f ? (conv_out_map *)(void *)(work + g.o_map) : NULL;
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
    if (map)
        make_map(map, g.nq_f, vw, d->out_h, d->out_w, g.wp);
    const int P = d->out_h * d->out_w;
    if (sum)
        for (int co = 0; co < d->c_out; co++)
            sum[co] = sumsq[co] = 0.0;
    const size_t x_img = (size_t)d->c_in * d->h * d->w;
    const size_t y_img = (size_t)d->c_out * P;
    const size_t fwd_steps = (size_t)(g.co_pf / isa->fwd_cb) * (size_t)(g.nq_f / (isa->fwd_nv * vw));
    zero_planes(xp, d->c_in, g.ps_x);
    for (int i = 0; i < d->n; i++) {
        float *yi = y + i * y_img;
        conv_prefetch pf, *pfp = NULL;
        if (i + 1 < d->n) {
            prefetch_plan(&pf, x + (i + 1) * x_img, NULL, NULL, x_img * sizeof *x, 0, fwd_steps);
            pfp = &pf;
        }
        if (xa)
            isa->pad_bn(x + i * x_img, d->c_in, d->h, d->w, d->pad, d->pad, g.wp, g.ps_x, xp, xa);
        else
            isa->pad(x + i * x_img, d->c_in, d->h, d->w, d->pad, d->pad, g.wp, g.ps_x, xp, NULL);
        if (map) {
            float *st = sum ? stats : NULL;
            if (st)
                memset(st, 0, (size_t)d->c_out * 2 * vw * sizeof *st);
            isa->fwd(xp, g.ps_x, d->c_in, kt, offs, wpk, b, d->c_out, yi, (size_t)P, g.nq_f, map,
                     st, NULL, NULL, pfp);
            if (st)
                add_lane_sums(st, d->c_out, vw, sum, sumsq);
        } else {
            isa->fwd(xp, g.ps_x, d->c_in, kt, offs, wpk, b, d->c_out, out, g.ys_f, g.nq_f, NULL,
                     NULL, NULL, NULL, pfp);
            compact(out, d->c_out, d->out_h, d->out_w, g.wp, g.ys_f, yi);
            if (sum) {
                double *tmp = (double *)(void *)stats; /* 2 c_out doubles fit */
                dpt_bn_sums(yi, 1, d->c_out, P, tmp, tmp + d->c_out);
                for (int co = 0; co < d->c_out; co++) {
                    sum[co] += tmp[co];
                    sumsq[co] += tmp[d->c_out + co];
                }
            }
        }
    }
}

void dpt_conv_direct_backward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                              const dpt_bn_apply *xa, const float *w, const float *dy,
                              const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                              float *db, float *work, double *xg)
{
    geom g;
    make_geom(isa, d, &g);
    const int kt = g.kt, vw = isa->vw;
    float *xp = work + g.o_xp, *out = work + g.o_out, *wpk = work + g.o_wpk;
    float *zero = work + g.o_zero, *part = work + g.o_part;
    /* For a "same" convolution the wide dy of the weight gradient is the
     * interior of the padded dy of the data gradient: pack once, and start
     * dyp where that interior falls on a 64-byte boundary, so that the
     * weight-gradient kernel's dy loads are aligned (about 8 % of it). */
    const size_t dyw_at = (size_t)g.pdh * g.wd + g.pdw;
    float *dyp = work + g.o_dyp + (g.same ? (ALIGN_F - dyw_at % ALIGN_F) % ALIGN_F : 0);
    float *dyw = g.same ? dyp + dyw_at : work + g.o_dyw;
    const size_t dys = g.same ? g.ps_d : (size_t)g.nq_w;
    conv_out_map *map = g.map_b ? (conv_out_map *)(void *)(work + g.o_map) : NULL;
    const float **dptr = (const float **)(void *)(work + g.o_ptr);
    const float **xptr = dptr + g.co_pw;

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
                        size_t src = (((size_t)co * d->c_in + ci) * d->kh + d->kh - 1 - ty) * d->kw +
                                     d->kw - 1 - tx;
                        blk[k * cb] = ci < d->c_in ? w[src] : 0.0f;
                    }
        }
        if (map)
            make_map(map, g.nq_b, vw, d->h, d->w, g.wd);
    }

    memset(zero, 0, (size_t)g.nq_w * sizeof *zero);
    memset(part, 0, (size_t)g.co_pw * g.k_pw * vw * sizeof *part);
    for (int co = 0; co < g.co_pw; co++)
        dptr[co] = co < d->c_out ? dyw + (size_t)co * dys : zero;
    for (int k = 0; k < g.k_pw; k++) {
        if (k < g.k_total) {
            int ci = k / kt, t = k % kt;
            xptr[k] = xp + (size_t)ci * g.ps_x + (size_t)(t / d->kw) * g.wp + t % d->kw;
        } else {
            xptr[k] = zero;
        }
    }
    double *bsum = db ? (double *)(void *)(work + g.o_bsum) : NULL;
    float *stats = work + g.o_stats;
    for (int ci = 0; xg && ci < 2 * d->c_in; ci++)
        xg[ci] = 0.0;
    for (int co = 0; db && co < d->c_out; co++)
        bsum[co] = 0.0;

    const int P = d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * d->h * d->w;
    const size_t y_img = (size_t)d->c_out * P;
    zero_planes(xp, d->c_in, g.ps_x);
    if (g.same || dx)
        zero_planes(dyp, d->c_out, g.ps_d);
    if (!g.same)
        zero_planes(dyw, d->c_out, (size_t)g.nq_w);
    /* The next image's x, dy and y are fetched while this one's weight
     * gradient (and data gradient) run. */
    size_t bwd_steps = (size_t)(g.co_pw / isa->dw_cb) * (size_t)(g.k_pw / isa->dw_kb);
    if (dx)
        bwd_steps += (size_t)(g.ci_pf / isa->fwd_cb) * (size_t)(g.nq_b / (isa->fwd_nv * vw));
    for (int i = 0; i < d->n; i++) {
        const float *xi = x + i * x_img, *dyi = dy + i * y_img, *yi = y ? y + i * y_img : NULL;
        conv_prefetch pf, *pfp = NULL;
        if (i + 1 < d->n) {
            prefetch_plan(&pf, x + (i + 1) * x_img, dy + (i + 1) * y_img,
                          y ? y + (i + 1) * y_img : NULL, x_img * sizeof *x, y_img * sizeof *y,
                          bwd_steps);
            pfp = &pf;
        }
        if (xa)
            isa->pad_bn(xi, d->c_in, d->h, d->w, d->pad, d->pad, g.wp, g.ps_x, xp, xa);
        else
            isa->pad(xi, d->c_in, d->h, d->w, d->pad, d->pad, g.wp, g.ps_x, xp, NULL);
        /* dyp for the data gradient, dyw (row stride wp, junk columns and
         * tail zero) for the weight gradient: one buffer for a "same"
         * convolution. With dya, the batch norm's backward on the way. The
         * first pack also adds up the bias gradient (per lane, into the
         * stats scratch, free until the data gradient). */
        float *csum = db ? stats : NULL;
        if (g.same || dx) {
            if (dya)
                isa->pad_bnback(dyi, yi, d->c_out, d->out_h, d->out_w, g.pdh, g.pdw, g.wd, g.ps_d,
                                dyp, dya, csum);
            else
                isa->pad(dyi, d->c_out, d->out_h, d->out_w, g.pdh, g.pdw, g.wd, g.ps_d, dyp, csum);
            csum = NULL;
        }
        if (!g.same) {
            if (dya)
                isa->pad_bnback(dyi, yi, d->c_out, d->out_h, d->out_w, 0, 0, g.wp,
                                (size_t)g.nq_w, dyw, dya, csum);
            else
                isa->pad(dyi, d->c_out, d->out_h, d->out_w, 0, 0, g.wp, (size_t)g.nq_w, dyw, csum);
        }
        for (int co = 0; db && co < d->c_out; co++) {
            double s = 0.0;
            for (int l = 0; l < vw; l++)
                s += stats[(size_t)co * vw + l];
            bsum[co] += s;
        }
        isa->dw(dptr, g.co_pw, xptr, g.k_pw, g.nq_w, part, pfp);
        if (dx) {
            float *dxi = dx + i * x_img;
            if (map) {
                /* With xg, the sums of the batch norm below come with dx. */
                float *st = xg ? stats : NULL;
                if (st)
                    memset(st, 0, (size_t)d->c_in * 2 * vw * sizeof *st);
                isa->fwd(dyp, g.ps_d, d->c_out, kt, od, wpk, NULL, d->c_in, dxi,
                         (size_t)d->h * d->w, g.nq_b, map, st, st ? xi : NULL, st ? xa : NULL,
                         pfp);
                if (st)
                    add_lane_sums(st, d->c_in, vw, xg, xg + d->c_in);
            } else {
                isa->fwd(dyp, g.ps_d, d->c_out, kt, od, wpk, NULL, d->c_in, out, g.ys_b, g.nq_b,
                         NULL, NULL, NULL, NULL, pfp);
                compact(out, d->c_in, d->h, d->w, g.wd, g.ys_b, dxi);
                if (xg)
                    dpt_bn_grad_sums(xi, dxi, 1, d->c_in, d->h * d->w, xa, xg, xg + d->c_in);
            }
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
    for (int co = 0; db && co < d->c_out; co++)
        db[co] = (float)bsum[co];
}
