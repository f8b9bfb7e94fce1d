/* Direct convolution over a batch, one image (and one group) at a time,
 * using the micro-kernels of conv_kern.h: any stride, dilation, padding up
 * to the dilated filter's extent, and groups (one call per group on its
 * channel slices).
 *
 * The "wide" layout. An input plane [h, w] is copied into a zeroed plane of
 * width wp = w + pad and height h + 2·pad (plus zero slack at the end): the
 * pad zero columns after each row are also the left padding of the next
 * row. Output position (oy, ox) is computed at q = oy·wp + ox, so filter
 * tap (ky, kx) reads input position q + ky·dil·wp + kx·dil: for a run of
 * consecutive q the inputs of one tap are consecutive, and the convolution
 * is a GEMM whose B operand is never materialised. Columns ox >= out_w of
 * the wide output are junk (they straddle two rows): the kernel's masked
 * stores drop them and write the dense output directly (conv_out_map), or,
 * for rows narrower than a vector, the wide output is copied back row by
 * row. The junk costs (wp - out_w) / wp of the work (4% for 3x3 padding 1
 * on 24x24).
 *
 * Stride s > 1: polyphase. The padded plane (width wx = w + pad rounded up
 * to s, rows rounded up to s) is split into s·s phase planes, phase (a, b)
 * holding its rows ≡ a and columns ≡ b (mod s), each of width wp = wx / s.
 * Tap (ky, kx) at output (oy, ox) reads padded (oy·s + ky·dil, ox·s +
 * kx·dil), which is phase ((ky·dil) mod s, (kx·dil) mod s) at (oy + ky·dil
 * div s, ox + kx·dil div s): a stride-1 read, so with each tap's offset
 * including its phase plane's base (a channel's phases stored together,
 * the same offsets for every channel) the forward and weight-gradient
 * kernels run unchanged. A read past a phase row's end lands in the next
 * row's left padding (wx >= w + pad), as at stride 1. Stride 2 (the common
 * one) packs each image straight into its phase planes and interleaves the
 * data gradient's phases back with vector permutes (conv_kern.h's pack_s2,
 * unsplit_s2); larger strides go through a padded plane and scalar copies.
 *
 * Few taps in all (one input channel, 3x3 or 5x5: the stems): the forward
 * copies each tap's inputs into a dense plane of the output positions and
 * runs the kernel over those "channels" of one tap, storing whole vectors
 * (forward_group); the wide layout's masked stores cost as much as 9-25
 * multiply-adds per output.
 *
 *   forward   yw[co][q]  = b[co] + Σ_ci,t W[co][ci][t] · xp[ci][q + off[t]]
 *   data grad stride 1: dx is the "full" correlation of dy with the flipped
 *             filters: dy padded by (eh - pad, ew - pad) (e: the dilated
 *             extent - 1) into dyp of width wd = out_w + ew - pad (zero
 *             columns shared likewise), then
 *             dxw[ci][q] = Σ_co,t W[co][ci][flip t] · dyp[co][q + offd[t]],
 *             the forward kernel with input and output channels swapped.
 *             stride s: dx splits by phase. Padded dx at (u·s + a, v·s + b)
 *             gets W[t]·dy[u - ry_t][v - rx_t] from the taps t of phase
 *             (a, b) only (ry_t = ky·dil div s): per phase, a stride-1
 *             correlation of dy (padded by ry_max, rx_max on the top and
 *             left) with that phase's taps, one kernel call per phase over
 *             the phase's positions inside the image, interleaved back.
 *   weight grad dW[co][ci][t] = Σ_images Σ_q dyw[co][q] · xp[ci][q + off[t]]
 *             with dyw = dy in the wide layout (junk columns zero), per-lane
 *             partial sums over the whole batch, added up once at the end.
 *
 * Groups: one pass over the batch per group, on the group's channel
 * slices (images keep their full stride); depthwise and groups of fewer
 * than 4 channels are refused (a register tile would be mostly padding).
 *
 * Blocks of images: small planes are stacked several images to a kernel
 * call (block_images, make_geom), so the register tiles fill and the
 * weight gradient's partial sums are flushed once per block. For wide
 * layers those partial sums are reduced across lanes at each flush (kept
 * per lane they are c_out·c_in·taps vectors, megabytes streamed per call).
 * Blocking over input channels was not needed: on 4x4 and 8x8 planes of
 * 128-256 channels the forward kernel runs at 70% of the FMA peak over the
 * positions it computes (the junk rows and columns of so small a plane are
 * what it loses), and larger or smaller blocks of images (256-2048
 * positions, 384 KiB-3 MiB) measured the same within the noise.
 *
 * Everything a call touches per block (padded planes, wide output) is at
 * most about BLOCK_BYTES and stays in L2 while the kernel runs. */
#include "ops/conv_direct.h"

#include <string.h>

#define ALIGN_F 16 /* floats: regions start on 64-byte boundaries */
/* Most bytes of per-lane weight-gradient sums (make_geom's dw_lanes). */
#define DW_LANES_BYTES (512u << 10)

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }
static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }
static int dil_of(const dpt_conv2d_desc *d) { return d->dilation > 1 ? d->dilation : 1; }
static int groups_of(const dpt_conv2d_desc *d) { return d->groups > 1 ? d->groups : 1; }

/* Most taps in all (c_in·kh·kw) for the dense forward (forward_group): one
 * input channel of 3x3 or 5x5 (2.0x and 1.5x faster at batch 128); at 27
 * (3 channels, 3x3) copying the taps costs what the masks save (0.93-1.0x,
 * with memcpy or vector row copies alike). */
#define DENSE_MAX_K 25
/* More taps than that but few input channels (3 channels of 3x3: a colour
 * stem): "dense rows" instead, one plane per (channel, filter column) of
 * the output's width and all the rows the filter reaches, so that tap
 * (ky, kx) is that plane read ky·dl rows on: a third of the copying of one
 * plane per tap, and the same unmasked whole-vector stores. At most this
 * many planes (c_in·kw). */
#define DENSE_ROWS_MAX 12

/* Geometry of one group's descriptor under one kernel set. */
typedef struct geom {
    int s, dl;                  /* stride, dilation */
    int nb, rp;                 /* images per block; phase rows per image in a block */
    int kt, k_total;            /* taps per channel, c_in * kt */
    int ry, rx;                 /* (kh-1)·dl div s, (kw-1)·dl div s: the furthest phase offsets */
    int wx, hx;                 /* s > 1: the padded plane before the split (width, rows) */
    size_t ps_t;
    int wp, hp;                 /* phase plane (stride 1: the padded plane) */
    size_t ps_ph, ps_x;         /* plane stride, channel stride (s·s planes) */
    int nq_f;                   /* forward positions (out_h·wp rounded to a vector) */
    int wd, pdh, pdw;           /* dy padded for the data gradient */
    size_t ps_d;
    int nq_b;                   /* data-gradient positions (the most of any phase) */
    int nq_w;                   /* weight-gradient positions (out_h·wp rounded to vw) */
    int same;                   /* dyw is a view into dyp (rows as wide) */
    int map_f, map_b;           /* outputs stored through a conv_out_map */
    int co_pf, ci_pf;           /* channel counts padded to fwd_cb */
    int co_pw, k_pw;            /* padded to dw_cb, dw_kb */
    int dw_lanes;               /* weight-gradient partial sums per (co, k): vw or 1 */
    size_t ys_f, ys_b;          /* plane strides of the wide outputs */
    /* s > 1, data gradient: phase a of the rows covers dx rows u·s + a - pad
     * for u in [u0[a], u0[a] + nu[a]) (likewise v0, nv for the columns). */
    int u0[DPT_CONV_DIRECT_MAX_STRIDE], nu[DPT_CONV_DIRECT_MAX_STRIDE];
    int v0[DPT_CONV_DIRECT_MAX_STRIDE], nv[DPT_CONV_DIRECT_MAX_STRIDE];
    /* Phase a·s + b is read by some tap (a 1x1 filter of stride 2 reads one
     * phase of four: the others are neither split out nor convolved). */
    unsigned char used[DPT_CONV_DIRECT_MAX_STRIDE * DPT_CONV_DIRECT_MAX_STRIDE];
    /* Offsets (floats) of the regions in the work buffer. */
    size_t o_xp, o_tmp, o_out, o_dyp, o_dyw, o_zero, o_wpk, o_part, o_stats, o_bsum, o_map,
        o_ptr, o_xk, total;
    /* Forward over dense positions (stride 1, few taps in all, whole vectors
     * of outputs): see forward_group. */
    int dense;
    /* Forward over dense positions from one plane per (channel, filter
     * column): see dense_rows. */
    int dense_rows;
} geom;

/* dense_rows' plane size: out_w columns, the output's rows and the
 * (kh - 1)·dl more the filter reaches. */
static size_t dense_rows_ps(const dpt_conv2d_desc *d, const geom *g)
{
    return ((size_t)d->out_h + (size_t)(d->kh - 1) * g->dl) * d->out_w;
}

/* The rows (or columns) of phase a inside an image of n rows after `pad`
 * rows of padding: u in [*u0, *u0 + *nu) with u·s + a in [pad, pad + n). */
static void phase_span(int a, int s, int pad, int n, int *u0, int *nu)
{
    int lo = pad >= a ? (pad - a + s - 1) / s : 0;
    int hi = pad + n - 1 >= a ? (pad + n - 1 - a) / s + 1 : 0;
    *u0 = lo;
    *nu = hi > lo ? hi - lo : 0;
}

/* Phase rows per image when images are stacked in a block: image j's
 * padded rows start at row j·rp·s of the stacked plane, its padding
 * shared with its neighbours' (as the columns share theirs), far enough
 * apart that no valid output reads a neighbour (see make_geom). */
static int period_rows(const dpt_conv2d_desc *d, int ry)
{
    const int s = d->stride;
    int rp = (d->h + d->pad + s - 1) / s;
    if (s > 1 && rp < d->out_h + ry)
        rp = d->out_h + ry;
    return rp;
}

/* Geometry of a block of nb images. Small planes are stacked nb to a
 * block, one tall plane: each kernel call then covers enough positions to
 * fill its register tiles and the weight gradient's per-lane partial sums
 * are flushed once per block instead of once per tiny image. Stacked at
 * rp phase rows apart, image j's output row oy is row j·rp + oy of the
 * stacked output (rows out_h .. rp-1 of each period are junk), its dx row
 * iy row j·rp + iy (stride 1; stride s: phase row j·rp + u).
 * Why nothing leaks between stacked images: at stride 1 (rp = h + pad) a
 * valid output row reads padded rows up to j·rp + h + 2·pad - 1, one
 * before image j + 1's first row, and dx row iy reads dy rows j·rp + iy ..
 * + eh, between image j - 1's last (j·rp - 1) and image j + 1's first
 * (j·rp + h + eh) dy rows of dyp. At stride s, rp >= out_h + ry keeps a
 * phase's dy reads (rows u - ry .. u of image j, u < rp) inside image j's
 * period likewise. */
static void make_geom(const conv_isa *isa, const dpt_conv2d_desc *d, int nb, geom *g)
{
    const int vw = isa->vw, s = d->stride, dl = dil_of(d);
    const int eh = (d->kh - 1) * dl, ew = (d->kw - 1) * dl;
    g->s = s;
    g->dl = dl;
    g->nb = nb;
    g->kt = d->kh * d->kw;
    g->k_total = d->c_in * g->kt;
    g->ry = eh / s;
    g->rx = ew / s;
    g->rp = period_rows(d, g->ry);
    memset(g->used, 0, sizeof g->used);
    for (int ky = 0; ky < d->kh; ky++)
        for (int kx = 0; kx < d->kw; kx++)
            g->used[(ky * dl % s) * s + kx * dl % s] = 1;
    const size_t span = (size_t)(nb - 1) * g->rp; /* stacked rows before the last image */
    g->wx = (int)round_up((size_t)d->w + d->pad, (size_t)s);
    g->hx = (int)round_up(span * s + d->h + 2 * (size_t)d->pad, (size_t)s);
    /* Stride 2 packs straight into the phase planes (pack_s2): no tmp. */
    g->ps_t = s > 2 ? round_up((size_t)g->hx * g->wx, ALIGN_F) : 0;
    g->wp = g->wx / s;
    g->hp = g->hx / s;
    g->nq_f = (int)round_up((span + d->out_h) * g->wp, (size_t)vw);
    g->nq_w = g->nq_f;
    size_t need = max_z((size_t)g->nq_f + (size_t)g->ry * g->wp + (size_t)g->rx,
                        (size_t)g->hp * g->wp);
    g->ps_ph = round_up(need, ALIGN_F);
    g->ps_x = (size_t)s * s * g->ps_ph;

    if (s == 1) {
        g->pdh = eh - d->pad;
        g->pdw = ew - d->pad;
        g->wd = d->out_w + g->pdw;
        size_t hd = span + d->out_h + 2 * (size_t)g->pdh;
        g->nq_b = (int)round_up((span + d->h) * g->wd, (size_t)vw);
        g->same = g->wd == g->wp;
        need = max_z((size_t)g->nq_b + (size_t)eh * g->wd + (size_t)ew, hd * g->wd);
        if (g->same)
            need = max_z(need, (size_t)g->pdh * g->wd + g->pdw + g->nq_w);
        g->map_b = d->w >= vw && g->wd >= vw;
    } else {
        g->pdh = g->ry;
        g->pdw = g->rx;
        g->wd = d->out_w + g->rx;
        for (int a = 0; a < s; a++) {
            phase_span(a, s, d->pad, d->h, &g->u0[a], &g->nu[a]);
            phase_span(a, s, d->pad, d->w, &g->v0[a], &g->nv[a]);
            if (g->v0[a] + g->nv[a] > g->wd)
                g->wd = g->v0[a] + g->nv[a];
        }
        need = (span + g->ry + d->out_h + 1) * g->wd;
        g->nq_b = 0;
        for (int a = 0; a < s; a++)
            for (int b = 0; b < s; b++) {
                if (!g->nu[a] || !g->nv[b])
                    continue;
                size_t nq = round_up((span + g->nu[a] - 1) * g->wd + g->nv[b], (size_t)vw);
                if ((int)nq > g->nq_b)
                    g->nq_b = (int)nq;
                need = max_z(need, (size_t)g->u0[a] * g->wd + g->v0[b] + nq +
                                       (size_t)g->ry * g->wd + g->rx);
            }
        /* Rows as wide as the phase planes' (3x3 stride 2 padding 1 and most
         * others): the weight gradient's dy is the interior of dyp, as at
         * stride 1, so dy goes through the batch norm's backward once. */
        g->same = g->wd == g->wp;
        if (g->same)
            need = max_z(need, (size_t)g->pdh * g->wd + g->pdw + g->nq_w);
        g->map_b = 0;
    }
    g->ps_d = round_up(need, ALIGN_F);
    g->map_f = d->out_w >= vw && g->wp >= vw;

    g->co_pf = (int)round_up((size_t)d->c_out, (size_t)isa->fwd_cb);
    g->ci_pf = (int)round_up((size_t)d->c_in, (size_t)isa->fwd_cb);
    g->co_pw = (int)round_up((size_t)d->c_out, (size_t)isa->dw_cb);
    g->k_pw = (int)round_up((size_t)g->k_total, (size_t)isa->dw_kb);

    g->ys_f = round_up((size_t)g->nq_f, ALIGN_F);
    g->ys_b = round_up((size_t)g->nq_b, ALIGN_F);
    size_t out = g->map_f ? 0 : (size_t)d->c_out * g->ys_f;
    /* Stride 2: both column phases of a row phase at once (unsplit_s2). */
    const size_t n_out_b = (size_t)d->c_in * g->ys_b * (s == 2 ? 2 : 1);
    if ((!g->map_b || s > 1) && n_out_b > out)
        out = n_out_b;
    size_t wpk = (size_t)g->co_pf * g->k_total;
    if ((size_t)g->ci_pf * d->c_out * g->kt > wpk)
        wpk = (size_t)g->ci_pf * d->c_out * g->kt;
    size_t n_map = (size_t)(g->nq_f > g->nq_b ? g->nq_f : g->nq_b) / vw;
    size_t o = 0;
    g->o_xp = o, o += round_up((size_t)d->c_in * g->ps_x, ALIGN_F);
    g->o_tmp = o, o += (size_t)d->c_in * g->ps_t;
    g->o_out = o, o += round_up(out, ALIGN_F);
    g->o_dyp = o, o += round_up((size_t)d->c_out * g->ps_d, ALIGN_F) + ALIGN_F; /* see dyp_at */
    g->o_dyw = o, o += g->same ? 0 : round_up((size_t)d->c_out * (size_t)g->nq_w, ALIGN_F);
    g->o_zero = o, o += round_up((size_t)g->nq_w, ALIGN_F);
    g->o_wpk = o, o += round_up(wpk, ALIGN_F);
    /* Per-lane weight-gradient sums while they fit L2, else summed across
     * lanes per call (backward_group). */
    g->dw_lanes = (size_t)g->co_pw * g->k_pw * vw * sizeof(float) > DW_LANES_BYTES ? 1 : vw;
    g->o_part = o, o += round_up((size_t)g->co_pw * g->k_pw * g->dw_lanes, ALIGN_F);
    g->o_stats = o, o += round_up((size_t)(d->c_out > d->c_in ? d->c_out : d->c_in) * 2 * vw,
                                  ALIGN_F);
    g->o_bsum = o, o += round_up((size_t)d->c_out * 2, ALIGN_F); /* doubles */
    /* Tables stored in the float buffer: the output map (5 ints per entry)
     * and the pointer tables of the weight-gradient kernel. */
    g->o_map = o, o += round_up(n_map * sizeof(conv_out_map) / sizeof(float) + 1, ALIGN_F);
    g->o_ptr = o, o += round_up((size_t)(g->co_pw + g->k_pw) * (sizeof(void *) / sizeof(float) + 1),
                                ALIGN_F);
    const size_t P = (size_t)d->out_h * d->out_w;
    g->dense = s == 1 && g->k_total <= DENSE_MAX_K && P % (size_t)vw == 0;
    g->dense_rows = s == 1 && !g->dense && d->c_in * d->kw <= DENSE_ROWS_MAX &&
                    P % (size_t)vw == 0 && d->kh <= DPT_CONV_DIRECT_MAX_TAPS;
    g->o_xk = o;
    if (g->dense)
        o += round_up((size_t)g->k_total * P, ALIGN_F);
    else if (g->dense_rows)
        o += round_up((size_t)d->c_in * d->kw * dense_rows_ps(d, g), ALIGN_F) + ALIGN_F;
    g->total = o;
}

/* Images per block (make_geom), for a whole descriptor d: enough of them
 * for about BLOCK_POS stacked positions when planes are small, while a
 * block's planes (input phases, padded dy, wide dy) stay within
 * BLOCK_BYTES (L2), and map offsets (block of images) within an int. */
#define BLOCK_POS 512
#define BLOCK_BYTES (768u << 10)
static int block_images(const dpt_conv2d_desc *d)
{
    const int s = d->stride, G = groups_of(d);
    const size_t rp = (size_t)period_rows(d, (d->kh - 1) * dil_of(d) / s);
    const size_t wp = ((size_t)d->w + d->pad + s - 1) / s;
    const size_t pos = rp * wp; /* phase positions of one image */
    size_t nb = (BLOCK_POS + pos - 1) / pos;
    const size_t bytes = sizeof(float) * pos *
                         ((size_t)d->c_in / G * s * s + 2 * ((size_t)d->c_out / G));
    if (nb > BLOCK_BYTES / bytes)
        nb = BLOCK_BYTES / bytes;
    if (nb > (size_t)d->n)
        nb = (size_t)d->n;
    size_t img = max_z((size_t)d->c_in * d->h * d->w, (size_t)d->c_out * d->out_h * d->out_w);
    if (nb > (1u << 30) / img)
        nb = (1u << 30) / img;
    return nb < 1 ? 1 : (int)nb;
}

/* One group's descriptor: c_in and c_out of a group, groups 1. */
static dpt_conv2d_desc group_desc(const dpt_conv2d_desc *d)
{
    dpt_conv2d_desc gd = *d;
    gd.c_in = d->c_in / groups_of(d);
    gd.c_out = d->c_out / groups_of(d);
    gd.groups = 1;
    gd.dilation = dil_of(d);
    return gd;
}

const conv_isa *dpt_conv_direct_supports(const dpt_conv2d_desc *d)
{
    const conv_isa *isa = dpt_ops_conv_isa();
    const int dl = dil_of(d), G = groups_of(d);
    if (!isa || d->stride < 1 || d->stride > DPT_CONV_DIRECT_MAX_STRIDE ||
        d->kh * d->kw > DPT_CONV_DIRECT_MAX_TAPS)
        return NULL;
    /* Padding wider than the dilated filter would need dx rows no output
     * reads and a wider wrap-around than the layout gives: refused. */
    if ((long long)d->pad > (long long)(d->kh - 1) * dl ||
        (long long)d->pad > (long long)(d->kw - 1) * dl)
        return NULL;
    /* Depthwise and tiny groups: a tile of FWD_CB channels would be mostly
     * padding (conv_depthwise.c's job). */
    if (G > 1 && (d->c_in / G < 4 || d->c_out / G < 4))
        return NULL;
    /* Tap offsets are ints: planes far beyond any image size are refused. */
    dpt_conv2d_desc gd = group_desc(d);
#ifdef DPT_HAVE_X86_KERNELS
    const conv_isa *all[] = {&dpt_conv_isa_avx512, &dpt_conv_isa_avx2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        geom g;
        if ((long long)d->h * d->w > (1LL << 26))
            return NULL;
        make_geom(all[i], &gd, block_images(d), &g);
        if (g.ps_x > (1u << 28) || g.ps_d > (1u << 28))
            return NULL;
    }
#endif
    return isa;
}

const conv_isa *dpt_conv_direct_pick(const dpt_conv2d_desc *d)
{
    /* 1x1 filters included: the kernels beat this machine's BLAS on the
     * pointwise convolutions of bench/suite.py's networks (1.5-2x). */
    return dpt_conv_direct_supports(d);
}

size_t dpt_conv_direct_work_floats(const dpt_conv2d_desc *d)
{
    size_t most = 0;
#ifdef DPT_HAVE_X86_KERNELS
    if ((long long)d->h * d->w > (1LL << 26) || d->stride > DPT_CONV_DIRECT_MAX_STRIDE)
        return 0; /* never supported */
    dpt_conv2d_desc gd = group_desc(d);
    const conv_isa *all[] = {&dpt_conv_isa_avx512, &dpt_conv_isa_avx2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        geom g;
        make_geom(all[i], &gd, block_images(d), &g);
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

/* Where stacked row r of a block lands: image r / rp of nbk (img floats
 * apart), row r % rp of oh; -1 for the junk rows between images and rows
 * past the block's last image. */
static long long row_at(int r, int rp, int oh, int nbk, size_t img, int ow)
{
    int j = r / rp, y = r % rp;
    if (j >= nbk || y >= oh)
        return -1;
    return (long long)j * (long long)img + (long long)y * ow;
}

/* The dense planes [c][oh][ow] of nbk images (img floats apart) from
 * stacked wide planes [c][ys] of row stride wp, rp rows per image. */
static void compact(const float *wide, int c, int oh, int ow, int wp, size_t ys, int rp, int nbk,
                    size_t img, float *dst)
{
    for (int ch = 0; ch < c; ch++)
        for (int j = 0; j < nbk; j++) {
            const float *s = wide + (size_t)ch * ys + (size_t)j * rp * wp;
            float *o = dst + (size_t)j * img + (size_t)ch * oh * ow;
            for (int y = 0; y < oh; y++)
                memcpy(o + (size_t)y * ow, s + (size_t)y * wp, (size_t)ow * sizeof *o);
        }
}

/* The conv_out_map of stacked wide positions [0, nq) (row stride wp, rows
 * of ow valid columns, oh valid rows of every rp, nbk images img floats
 * apart in the output) for vectors of vw lanes; needs wp, ow >= vw. */
static void make_map(conv_out_map *map, int nq, int vw, int oh, int ow, int wp, int rp, int nbk,
                     size_t img)
{
    for (int q = 0, e = 0; q < nq; q += vw, e++) {
        conv_out_map m = {0, 0, 0, 0, 0, 0, 0};
        int r = q / wp, c = q % wp;
        long long at = row_at(r, rp, oh, nbk, img, ow);
        if (at >= 0 && c < ow) {
            m.off_a = (int)at + c;
            m.hi_a = ow - c < vw ? ow - c : vw;
        }
        int lo = wp - c; /* first lane in row r + 1 */
        long long nx = row_at(r + 1, rp, oh, nbk, img, ow);
        if (lo < vw && nx >= 0) {
            m.lo_b = lo;
            m.hi_b = lo + ow < vw ? lo + ow : vw;
            m.off_b = (int)nx - lo;
        }
        m.bits_a = (1u << m.hi_a) - 1u;
        m.bits_b = ((1u << m.hi_b) - 1u) & ~((1u << m.lo_b) - 1u);
        map[e] = m;
    }
}

/* Multiply-adds of a kernel step per line it may prefetch, at least. */
#define PREFETCH_FMA_PER_LINE 128

/* Spread over `steps` kernel tiles or blocks (the kernels step once per
 * whole tile or block, each at least step_fma vector multiply-adds): the
 * lines of up to three regions (NULL: none). */
static void prefetch_plan(conv_prefetch *pf, const void *a, const void *b, const void *c,
                          size_t bytes_a, size_t bytes_bc, size_t steps, size_t step_fma)
{
    const void *p[3] = {a, b, c};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        pf->p[i] = p[i];
        pf->lines[i] = p[i] ? ((i ? bytes_bc : bytes_a) + 63) / 64 : 0;
        total += pf->lines[i];
    }
    pf->per = steps ? (total + steps - 1) / steps : 0;
    /* Few, short steps (the stem's weight gradient: 16 tiles of about
     * 1000 multiply-adds an image, 200 lines each) would issue prefetches
     * faster than memory answers them, and a prefetch that finds the miss
     * queue full stalls: its backward ran 1.6x slower than with none. So
     * at most a line per PREFETCH_FMA_PER_LINE multiply-adds (8 there);
     * the rest of the next block comes through the hardware prefetchers as
     * the pack reads it. Wide layers' long steps keep their share (a fixed
     * cap of 8 cost a 32-channel 14x14 forward about 5 %). */
    size_t cap = step_fma / PREFETCH_FMA_PER_LINE;
    if (cap < 1)
        cap = 1;
    if (pf->per > cap)
        pf->per = cap;
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

/* The forward tap offsets: tap (ky, kx) reads phase ((ky·dl) mod s,
 * (kx·dl) mod s) at row and column offsets (ky·dl div s, kx·dl div s). */
static void tap_offsets(const dpt_conv2d_desc *d, const geom *g, int *off)
{
    const int s = g->s;
    for (int ky = 0; ky < d->kh; ky++)
        for (int kx = 0; kx < d->kw; kx++) {
            int ey = ky * g->dl, ex = kx * g->dl;
            off[ky * d->kw + kx] = (int)((size_t)((ey % s) * s + ex % s) * g->ps_ph) +
                                   (ey / s) * g->wp + ex / s;
        }
}

/* Stride s > 1: the padded planes tmp [c][hx][wx] split into the phase
 * planes of xp (phase (a, b) of channel ch at ch·ps_x + (a·s + b)·ps_ph). */
static void split_phases(const float *tmp, int c, const geom *g, float *xp)
{
    const int s = g->s, wp = g->wp;
    for (int ch = 0; ch < c; ch++)
        for (int a = 0; a < s; a++)
            for (int b = 0; b < s; b++) {
                if (!g->used[a * s + b])
                    continue;
                float *dst = xp + (size_t)ch * g->ps_x + (size_t)(a * s + b) * g->ps_ph;
                const float *src = tmp + (size_t)ch * g->ps_t + (size_t)a * g->wx + b;
                for (int r = 0; r < g->hp; r++) {
                    const float *sr = src + (size_t)r * s * g->wx;
                    float *o = dst + (size_t)r * wp;
                    if (s == 2)
                        for (int j = 0; j < wp; j++)
                            o[j] = sr[2 * j];
                    else
                        for (int j = 0; j < wp; j++)
                            o[j] = sr[(size_t)j * s];
                }
            }
}

/* The dense tap planes of image j of a block (stride 1): xk[k][oy·ow + ox]
 * = the padded input of channel k / kt at row oy + ky·dl, column ox +
 * kx·dl (tap k % kt = (ky, kx)): row copies out of the padded planes. */
static void dense_taps(const dpt_conv2d_desc *d, const geom *g, const float *xp, int j, float *xk)
{
    const size_t P = (size_t)d->out_h * d->out_w, ow = (size_t)d->out_w;
    for (int ci = 0; ci < d->c_in; ci++)
        for (int ky = 0; ky < d->kh; ky++)
            for (int kx = 0; kx < d->kw; kx++) {
                const float *src = xp + (size_t)ci * g->ps_x +
                                   ((size_t)j * g->rp + (size_t)ky * g->dl) * g->wp +
                                   (size_t)kx * g->dl;
                float *dst = xk + (((size_t)ci * d->kh + ky) * d->kw + kx) * P;
                for (int oy = 0; oy < d->out_h; oy++)
                    memcpy(dst + oy * ow, src + (size_t)oy * g->wp, ow * sizeof *dst);
            }
}

/* The dense-row planes of image j of a block (stride 1): xk[ci·kw + kx]
 * [r·ow + ox] = the padded input of channel ci at row r, column ox + kx·dl,
 * so that tap (ky, kx) of output q = oy·ow + ox reads plane ci·kw + kx at q
 * + ky·dl·ow. */
static void dense_rows(const dpt_conv2d_desc *d, const geom *g, const float *xp, int j, float *xk)
{
    const size_t ow = (size_t)d->out_w, ps = dense_rows_ps(d, g);
    const int rows = (int)(ps / ow);
    for (int ci = 0; ci < d->c_in; ci++)
        for (int kx = 0; kx < d->kw; kx++) {
            const float *src = xp + (size_t)ci * g->ps_x + (size_t)j * g->rp * g->wp +
                               (size_t)kx * g->dl;
            float *dst = xk + ((size_t)ci * d->kw + kx) * ps;
            for (int r = 0; r < rows; r++)
                memcpy(dst + r * ow, src + (size_t)r * g->wp, ow * sizeof *dst);
        }
}

/* Image j of a block's input (through xa when given) into the planes the
 * kernels read: straight into xp at strides 1 and 2 (its phase planes),
 * into tmp at stride s > 2 (split into phases once the block is packed). */
static void pack_input(const conv_isa *isa, const dpt_conv2d_desc *d, const geom *g, int j,
                       const float *xi, const dpt_bn_apply *xa, float *xp, float *tmp)
{
    if (g->s == 2) {
        isa->pack_s2(xi, d->c_in, d->h, d->w, d->pad, (size_t)j * g->rp * 2, g->wp, g->ps_x,
                     g->ps_ph, g->used, xp, xa);
        return;
    }
    const size_t row0 = (size_t)j * g->rp * g->s * g->wx;
    float *dst = (g->s == 1 ? xp : tmp) + row0;
    const size_t ps = g->s == 1 ? g->ps_x : g->ps_t;
    if (xa)
        isa->pad_bn(xi, d->c_in, d->h, d->w, d->pad, d->pad, g->wx, ps, dst, xa);
    else
        isa->pad(xi, d->c_in, d->h, d->w, d->pad, d->pad, g->wx, ps, dst, NULL);
}

/* Positions of a block of nbk images (the last block may be short). */
static int block_nq(const geom *g, int nbk, int rows, int width, int vw)
{
    return (int)round_up(((size_t)(nbk - 1) * g->rp + rows) * width, (size_t)vw);
}

/* The next block's inputs for the kernels to prefetch: all of it when a
 * group's images are contiguous (one group), else its first image's. */
static size_t next_bytes(size_t img, size_t grp, int nbn)
{
    return (img == grp ? (size_t)nbn * img : grp) * sizeof(float);
}

/* One group (d: its channel counts, groups 1) of a batch whose images are
 * x_img and y_img floats apart, nb images per block; x, y, w, b, sum and
 * sumsq point at the group's slices. */
static void forward_group(const conv_isa *isa, const dpt_conv2d_desc *d, int nb, size_t x_img,
                          size_t y_img, const float *x, const dpt_bn_apply *xa, const float *w,
                          const float *b, float *y, float *work, double *sum, double *sumsq)
{
    geom g;
    make_geom(isa, d, nb, &g);
    const int vw = isa->vw;
    float *xp = work + g.o_xp, *tmp = work + g.o_tmp, *out = work + g.o_out;
    float *wpk = work + g.o_wpk, *stats = work + g.o_stats;
    conv_out_map *map = g.map_f ? (conv_out_map *)(void *)(work + g.o_map) : NULL;
    int offs[DPT_CONV_DIRECT_MAX_TAPS];
    const int kt = g.kt;
    tap_offsets(d, &g, offs);
    /* wpk: per block of fwd_cb output channels, [ci][t][fwd_cb]; dense
     * rows: [ci][kx][ky][fwd_cb] (its "channels" are (ci, kx), its taps ky). */
    const int cb = isa->fwd_cb;
    for (int co = 0; co < g.co_pf; co++) {
        float *blk = wpk + (size_t)(co / cb) * g.k_total * cb + co % cb;
        for (int k = 0; k < g.k_total; k++) {
            int kw_ = k;
            if (g.dense_rows) { /* k = (ci·kw + kx)·kh + ky */
                const int ky = k % d->kh, cx = k / d->kh;
                kw_ = ((cx / d->kw) * d->kh + ky) * d->kw + cx % d->kw;
            }
            blk[(size_t)k * cb] = co < d->c_out ? w[(size_t)co * g.k_total + kw_] : 0.0f;
        }
    }
    const int P = d->out_h * d->out_w;
    if (sum)
        for (int co = 0; co < d->c_out; co++)
            sum[co] = sumsq[co] = 0.0;
    const size_t x_grp = (size_t)d->c_in * d->h * d->w;
    const size_t fwd_steps = (size_t)(g.co_pf / isa->fwd_cb) * (size_t)(g.nq_f / (isa->fwd_nv * vw));
    const size_t fwd_fma = (size_t)g.k_total * isa->fwd_cb * isa->fwd_nv; /* a whole tile's */
    int map_nbk = 0;
    for (int i0 = 0; i0 < d->n; i0 += nb) {
        const int nbk = d->n - i0 < nb ? d->n - i0 : nb;
        /* The padding is zeroed once and never written again; a short last
         * block zeroes the slots of the images it lacks too. */
        if (i0 == 0 || nbk < nb) {
            zero_planes(xp, d->c_in, g.ps_x);
            if (g.s > 2)
                zero_planes(tmp, d->c_in, g.ps_t);
        }
        float *yb = y + i0 * y_img;
        const int nq = block_nq(&g, nbk, d->out_h, g.wp, vw);
        conv_prefetch pf, *pfp = NULL;
        if (i0 + nbk < d->n) {
            const int nbn = d->n - i0 - nbk < nb ? d->n - i0 - nbk : nb;
            prefetch_plan(&pf, x + (i0 + nbk) * x_img, NULL, NULL, next_bytes(x_img, x_grp, nbn),
                          0, fwd_steps, fwd_fma);
            pfp = &pf;
        }
        for (int j = 0; j < nbk; j++)
            pack_input(isa, d, &g, j, x + (i0 + j) * x_img, xa, xp, tmp);
        if (g.s > 2)
            split_phases(tmp, d->c_in, &g, xp);
        if (g.dense) {
            /* Few taps in all (the stems: 1 or 3 channels, 3x3): the
             * per-output work of the wide layout's masked stores through
             * the map and of its junk columns cost as much as the 9-27
             * multiply-adds themselves. So each tap's inputs are copied
             * once into a dense plane of the output's positions (K·P
             * floats, from the padded planes), and the kernel runs as a
             * product over K "channels" of one tap, storing whole vectors
             * of dense output rows. */
            float *xk = work + g.o_xk, *st = sum ? stats : NULL;
            const int zero_off = 0;
            if (st)
                memset(st, 0, (size_t)d->c_out * 2 * vw * sizeof *st);
            for (int j = 0; j < nbk; j++) {
                dense_taps(d, &g, xp, j, xk);
                isa->fwd(xk, (size_t)P, g.k_total, 1, &zero_off, wpk, b, d->c_out,
                         yb + (size_t)j * y_img, (size_t)P, P, NULL, st, NULL, NULL, pfp);
            }
            if (st)
                add_lane_sums(st, d->c_out, vw, sum, sumsq);
        } else if (g.dense_rows) {
            float *xk = work + g.o_xk, *st = sum ? stats : NULL;
            int offr[DPT_CONV_DIRECT_MAX_TAPS];
            for (int ky = 0; ky < d->kh; ky++)
                offr[ky] = ky * g.dl * d->out_w;
            if (st)
                memset(st, 0, (size_t)d->c_out * 2 * vw * sizeof *st);
            for (int j = 0; j < nbk; j++) {
                dense_rows(d, &g, xp, j, xk);
                isa->fwd(xk, dense_rows_ps(d, &g), d->c_in * d->kw, d->kh, offr, wpk, b, d->c_out,
                         yb + (size_t)j * y_img, (size_t)P, P, NULL, st, NULL, NULL, pfp);
            }
            if (st)
                add_lane_sums(st, d->c_out, vw, sum, sumsq);
        } else if (map) {
            if (map_nbk != nbk)
                make_map(map, nq, vw, d->out_h, d->out_w, g.wp, g.rp, nbk, y_img);
            map_nbk = nbk;
            float *st = sum ? stats : NULL;
            if (st)
                memset(st, 0, (size_t)d->c_out * 2 * vw * sizeof *st);
            isa->fwd(xp, g.ps_x, d->c_in, kt, offs, wpk, b, d->c_out, yb, (size_t)P, nq, map, st,
                     NULL, NULL, pfp);
            if (st)
                add_lane_sums(st, d->c_out, vw, sum, sumsq);
        } else {
            isa->fwd(xp, g.ps_x, d->c_in, kt, offs, wpk, b, d->c_out, out, g.ys_f, nq, NULL, NULL,
                     NULL, NULL, pfp);
            /* The sums as the copy goes (was a second pass over y). */
            float *st = sum ? stats : NULL;
            isa->compact(out, d->c_out, d->out_h, d->out_w, g.wp, g.ys_f, g.rp, nbk, y_img, yb,
                         st);
            if (st)
                add_lane_sums(st, d->c_out, vw, sum, sumsq);
        }
    }
}

/* Per-channel arrays of a batch norm applied to a group's channels. */
static const float *shift_p(const float *p, size_t k) { return p ? p + k : NULL; }
static dpt_bn_apply bn_slice(const dpt_bn_apply *a, size_t c0)
{
    dpt_bn_apply r = *a;
    r.mean = shift_p(a->mean, c0), r.scale = shift_p(a->scale, c0);
    r.shift = shift_p(a->shift, c0);
    r.kf = shift_p(a->kf, c0), r.ka = shift_p(a->ka, c0), r.kb = shift_p(a->kb, c0);
    return r;
}

void dpt_conv_direct_forward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                             const dpt_bn_apply *xa, const float *w, const float *b, float *y,
                             float *work, double *sum, double *sumsq)
{
    const dpt_conv2d_desc gd = group_desc(d);
    const int nb = block_images(d);
    const size_t hw = (size_t)d->h * d->w, P = (size_t)d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * hw, y_img = (size_t)d->c_out * P;
    const size_t K = (size_t)gd.c_in * d->kh * d->kw;
    for (int g = 0; g < groups_of(d); g++) {
        const size_t ci0 = (size_t)g * gd.c_in, co0 = (size_t)g * gd.c_out;
        dpt_bn_apply ga;
        if (xa)
            ga = bn_slice(xa, ci0);
        forward_group(isa, &gd, nb, x_img, y_img, x + ci0 * hw, xa ? &ga : NULL, w + co0 * K,
                      b ? b + co0 : NULL, y + co0 * P, work, sum ? sum + co0 : NULL,
                      sum ? sumsq + co0 : NULL);
    }
}

/* Stride s > 1: the stacked wide output of phase (a, b) of the data
 * gradient (rows of stride wd from (u0[a], v0[b]), rp rows per image) into
 * the dense dx planes of nbk images x_img floats apart; out NULL: zeros
 * (a phase no tap reaches). */
static void scatter_phase(const float *out, int c, const dpt_conv2d_desc *d, const geom *g, int a,
                          int b, int nbk, size_t x_img, float *dx)
{
    const int s = g->s;
    for (int ch = 0; ch < c; ch++)
        for (int j = 0; j < nbk; j++) {
            const float *o = out ? out + (size_t)ch * g->ys_b + (size_t)j * g->rp * g->wd : NULL;
            float *dc = dx + j * x_img + (size_t)ch * d->h * d->w;
            for (int u = 0; u < g->nu[a]; u++) {
                const float *orow = o ? o + (size_t)u * g->wd : NULL;
                float *drow = dc + (size_t)((g->u0[a] + u) * s + a - d->pad) * d->w +
                              (size_t)(g->v0[b] * s + b - d->pad);
                for (int v = 0; v < g->nv[b]; v++)
                    drow[(size_t)v * s] = out ? orow[v] : 0.0f;
            }
        }
}

/* dy given as a 2x2 stride-2 max pool's gradient g and taps idx (whole
 * images' planes of out_h / 2 x out_w / 2, c_out of them an image); see
 * dpt_conv2d_backward_pooled. */
typedef struct conv_pool_src {
    const float *g;
    const unsigned char *idx;
} conv_pool_src;

static void backward_group(const conv_isa *isa, const dpt_conv2d_desc *d, int nb, size_t x_img,
                           size_t y_img, const float *x, const dpt_bn_apply *xa, const float *w,
                           const float *dy, const conv_pool_src *pool, const dpt_bn_apply *dya,
                           const float *y, float *dx, float *dw, float *db, float *work,
                           double *xg_s, double *xg_x)
{
    geom g;
    make_geom(isa, d, nb, &g);
    const int kt = g.kt, vw = isa->vw, s = g.s;
    float *xp = work + g.o_xp, *tmp = work + g.o_tmp, *out = work + g.o_out;
    float *wpk = work + g.o_wpk, *zero = work + g.o_zero, *part = work + g.o_part;
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

    int off[DPT_CONV_DIRECT_MAX_TAPS], od[DPT_CONV_DIRECT_MAX_TAPS];
    /* s > 1: the taps of phase p are od[ph_at[p] .. ph_at[p] + ph_n[p]), their
     * packed weights at wpk + ci_pf·c_out·ph_at[p]. */
    int ph_at[DPT_CONV_DIRECT_MAX_STRIDE * DPT_CONV_DIRECT_MAX_STRIDE];
    int ph_n[DPT_CONV_DIRECT_MAX_STRIDE * DPT_CONV_DIRECT_MAX_STRIDE];
    tap_offsets(d, &g, off);
    const int cb = isa->fwd_cb;
    if (dx && s == 1) {
        for (int ty = 0; ty < d->kh; ty++)
            for (int tx = 0; tx < d->kw; tx++)
                od[ty * d->kw + tx] = ty * g.dl * g.wd + tx * g.dl;
        /* wpk for the data gradient: per block of fwd_cb input channels,
         * [co][t][fwd_cb] with the filter flipped in both directions. */
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
    } else if (dx) {
        int tk[DPT_CONV_DIRECT_MAX_TAPS], n = 0;
        for (int a = 0; a < s; a++)
            for (int b = 0; b < s; b++) {
                const int p = a * s + b;
                ph_at[p] = n;
                for (int ky = 0; ky < d->kh; ky++)
                    for (int kx = 0; kx < d->kw; kx++) {
                        const int ey = ky * g.dl, ex = kx * g.dl;
                        if (ey % s != a || ex % s != b)
                            continue;
                        od[n] = (g.ry - ey / s) * g.wd + g.rx - ex / s;
                        tk[n++] = ky * d->kw + kx;
                    }
                ph_n[p] = n - ph_at[p];
                const int kp = ph_n[p];
                const size_t kb = (size_t)d->c_out * kp;
                float *base = wpk + (size_t)g.ci_pf * d->c_out * ph_at[p];
                for (int ci = 0; ci < g.ci_pf; ci++) {
                    float *blk = base + (size_t)(ci / cb) * kb * cb + ci % cb;
                    for (int co = 0; co < d->c_out; co++)
                        for (int j = 0; j < kp; j++)
                            blk[((size_t)co * kp + j) * cb] =
                                ci < d->c_in
                                    ? w[((size_t)co * d->c_in + ci) * kt + tk[ph_at[p] + j]]
                                    : 0.0f;
                }
            }
    }

    memset(zero, 0, (size_t)g.nq_w * sizeof *zero);
    const int lanes = g.dw_lanes, reduced = lanes == 1;
    memset(part, 0, (size_t)g.co_pw * g.k_pw * lanes * sizeof *part);
    for (int co = 0; co < g.co_pw; co++)
        dptr[co] = co < d->c_out ? dyw + (size_t)co * dys : zero;
    for (int k = 0; k < g.k_pw; k++)
        xptr[k] = k < g.k_total ? xp + (size_t)(k / kt) * g.ps_x + off[k % kt] : zero;
    double *bsum = db ? (double *)(void *)(work + g.o_bsum) : NULL;
    float *stats = work + g.o_stats;
    for (int ci = 0; xg_s && ci < d->c_in; ci++)
        xg_s[ci] = xg_x[ci] = 0.0;
    for (int co = 0; db && co < d->c_out; co++)
        bsum[co] = 0.0;

    const size_t x_grp = (size_t)d->c_in * d->h * d->w;
    const size_t y_grp = (size_t)d->c_out * d->out_h * d->out_w;
    /* dy given as a max pool's gradient (with dya) */
    const int pooled = pool && dya;
    const size_t P = (size_t)d->out_h * d->out_w, p2 = (size_t)(d->out_h / 2) * (d->out_w / 2);
    /* The next block's x, dy and y are fetched while this one's weight
     * gradient (and data gradient) run. */
    size_t bwd_steps = (size_t)(g.co_pw / isa->dw_cb) * (size_t)(g.k_pw / isa->dw_kb);
    if (dx)
        bwd_steps += (size_t)(g.ci_pf / isa->fwd_cb) * (size_t)(g.nq_b / (isa->fwd_nv * vw)) *
                     (size_t)s * s;
    /* The shorter of a weight-gradient tile (a block's positions) and a
     * data-gradient tile. */
    size_t bwd_fma = (size_t)(g.nq_w / vw) * isa->dw_cb * isa->dw_kb;
    if (dx && (size_t)d->c_out * kt * isa->fwd_cb * isa->fwd_nv < bwd_fma)
        bwd_fma = (size_t)d->c_out * kt * isa->fwd_cb * isa->fwd_nv;
    int map_nbk = 0;
    for (int i0 = 0; i0 < d->n; i0 += nb) {
        const int nbk = d->n - i0 < nb ? d->n - i0 : nb;
        /* Padding and junk rows are zeroed once and never written again; a
         * short last block zeroes the slots of the images it lacks too (the
         * weight gradient's last vector may reach into them). */
        if (i0 == 0 || nbk < nb) {
            zero_planes(xp, d->c_in, g.ps_x);
            if (s > 2)
                zero_planes(tmp, d->c_in, g.ps_t);
            if (g.same || dx)
                zero_planes(dyp, d->c_out, g.ps_d);
            if (!g.same)
                zero_planes(dyw, d->c_out, (size_t)g.nq_w);
        }
        conv_prefetch pf, *pfp = NULL;
        if (i0 + nbk < d->n) {
            const int nbn = d->n - i0 - nbk < nb ? d->n - i0 - nbk : nb;
            const size_t i1 = (size_t)(i0 + nbk);
            /* dy from a pool's gradient: its quarter-size
             * planes come through the hardware prefetchers. */
            prefetch_plan(&pf, x + i1 * x_img, pooled ? NULL : dy + i1 * y_img,
                          y ? y + i1 * y_img : NULL,
                          next_bytes(x_img, x_grp, nbn), next_bytes(y_img, y_grp, nbn),
                          bwd_steps, bwd_fma);
            pfp = &pf;
        }
        for (int j = 0; j < nbk; j++) {
            const size_t i = (size_t)(i0 + j);
            const float *dyi = pooled ? NULL : dy + i * y_img, *yi = y ? y + i * y_img : NULL;
            /* pooled: image i's planes of the pool's gradient and taps */
            const size_t pimg = pooled ? y_img / P * p2 : 0;
            const float *pgi = pooled ? pool->g + i * pimg : NULL;
            const unsigned char *pii = pooled ? pool->idx + i * pimg : NULL;
            pack_input(isa, d, &g, j, x + i * x_img, xa, xp, tmp);
            /* dyp for the data gradient, dyw (row stride wp, junk columns
             * and rows zero) for the weight gradient: one buffer for a
             * "same" convolution. With dya, the batch norm's backward on
             * the way. The first pack also adds up the bias gradient (per
             * lane, into the stats scratch, free until the data gradient). */
            float *csum = db ? stats : NULL;
            if (g.same || dx) {
                float *dst = dyp + (size_t)j * g.rp * g.wd;
                if (pooled)
                    isa->pad_bnback_pool(pgi, pii, yi, d->c_out, d->out_h, d->out_w, g.pdh, g.pdw,
                                         g.wd, g.ps_d, dst, dya, csum);
                else if (dya)
                    isa->pad_bnback(dyi, yi, d->c_out, d->out_h, d->out_w, g.pdh, g.pdw, g.wd,
                                    g.ps_d, dst, dya, csum);
                else
                    isa->pad(dyi, d->c_out, d->out_h, d->out_w, g.pdh, g.pdw, g.wd, g.ps_d, dst,
                             csum);
                csum = NULL;
            }
            if (!g.same) {
                float *dst = dyw + (size_t)j * g.rp * g.wp;
                if (pooled)
                    isa->pad_bnback_pool(pgi, pii, yi, d->c_out, d->out_h, d->out_w, 0, 0, g.wp,
                                         (size_t)g.nq_w, dst, dya, csum);
                else if (dya)
                    isa->pad_bnback(dyi, yi, d->c_out, d->out_h, d->out_w, 0, 0, g.wp,
                                    (size_t)g.nq_w, dst, dya, csum);
                else
                    isa->pad(dyi, d->c_out, d->out_h, d->out_w, 0, 0, g.wp, (size_t)g.nq_w, dst,
                             csum);
            }
            for (int co = 0; db && co < d->c_out; co++) {
                double sm = 0.0;
                for (int l = 0; l < vw; l++)
                    sm += stats[(size_t)co * vw + l];
                bsum[co] += sm;
            }
        }
        if (s > 2)
            split_phases(tmp, d->c_in, &g, xp);
        isa->dw(dptr, g.co_pw, xptr, g.k_pw, block_nq(&g, nbk, d->out_h, g.wp, vw), part, reduced,
                pfp);
        if (!dx)
            continue;
        float *dxb = dx + i0 * x_img;
        const float *xb = x + i0 * x_img;
        if (s == 2) {
            /* Per row phase, both column phases, then interleaved into dx.
             * Even dx columns ix = 2k are padded columns 2k + pad, phase
             * be = pad & 1 at v = k + (pad >> 1) = v0[be] + k; odd ones
             * phase 1 - be at v0[1 - be] + k (phase_span), so column k of
             * each phase's output is dx column 2k or 2k + 1. */
            const int be = d->pad & 1;
            for (int a = 0; a < 2; a++) {
                if (!g.nu[a])
                    continue;
                float *ob[2] = {NULL, NULL};
                for (int b = 0; b < 2; b++) {
                    const int p = a * 2 + b;
                    if (!g.nv[b] || !ph_n[p])
                        continue;
                    ob[b] = out + (size_t)b * d->c_in * g.ys_b;
                    const int nq = (int)round_up(
                        ((size_t)(nbk - 1) * g.rp + g.nu[a] - 1) * g.wd + g.nv[b], (size_t)vw);
                    isa->fwd(dyp + (size_t)g.u0[a] * g.wd + g.v0[b], g.ps_d, d->c_out, ph_n[p],
                             od + ph_at[p], wpk + (size_t)g.ci_pf * d->c_out * ph_at[p], NULL,
                             d->c_in, ob[b], g.ys_b, nq, NULL, NULL, NULL, NULL, pfp);
                }
                isa->unsplit_s2(ob[be], ob[1 - be], g.ys_b, g.wd, g.rp, d->c_in, nbk, g.nu[a],
                                g.u0[a] * 2 + a - d->pad, d->h, d->w, x_img, dxb);
            }
            for (int j = 0; xg_s && j < nbk; j++)
                dpt_bn_grad_sums(xb + j * x_img, dxb + j * x_img, 1, d->c_in, d->h * d->w, xa,
                                 xg_s, xg_x);
            continue;
        }
        if (s > 1) {
            for (int a = 0; a < s; a++)
                for (int b = 0; b < s; b++) {
                    if (!g.nu[a] || !g.nv[b])
                        continue;
                    const int p = a * s + b;
                    if (!ph_n[p]) {
                        scatter_phase(NULL, d->c_in, d, &g, a, b, nbk, x_img, dxb);
                        continue;
                    }
                    const int nq = (int)round_up(
                        ((size_t)(nbk - 1) * g.rp + g.nu[a] - 1) * g.wd + g.nv[b], (size_t)vw);
                    isa->fwd(dyp + (size_t)g.u0[a] * g.wd + g.v0[b], g.ps_d, d->c_out, ph_n[p],
                             od + ph_at[p], wpk + (size_t)g.ci_pf * d->c_out * ph_at[p], NULL,
                             d->c_in, out, g.ys_b, nq, NULL, NULL, NULL, NULL, pfp);
                    scatter_phase(out, d->c_in, d, &g, a, b, nbk, x_img, dxb);
                }
            for (int j = 0; xg_s && j < nbk; j++)
                dpt_bn_grad_sums(xb + j * x_img, dxb + j * x_img, 1, d->c_in, d->h * d->w, xa,
                                 xg_s, xg_x);
            continue;
        }
        const int nq = block_nq(&g, nbk, d->h, g.wd, vw);
        if (map) {
            if (map_nbk != nbk)
                make_map(map, nq, vw, d->h, d->w, g.wd, g.rp, nbk, x_img);
            map_nbk = nbk;
            /* With xg, the sums of the batch norm below come with dx. */
            float *st = xg_s ? stats : NULL;
            if (st)
                memset(st, 0, (size_t)d->c_in * 2 * vw * sizeof *st);
            isa->fwd(dyp, g.ps_d, d->c_out, kt, od, wpk, NULL, d->c_in, dxb, (size_t)d->h * d->w,
                     nq, map, st, st ? xb : NULL, st ? xa : NULL, pfp);
            if (st)
                add_lane_sums(st, d->c_in, vw, xg_s, xg_x);
        } else {
            isa->fwd(dyp, g.ps_d, d->c_out, kt, od, wpk, NULL, d->c_in, out, g.ys_b, nq, NULL,
                     NULL, NULL, NULL, pfp);
            compact(out, d->c_in, d->h, d->w, g.wd, g.ys_b, g.rp, nbk, x_img, dxb);
            for (int j = 0; xg_s && j < nbk; j++)
                dpt_bn_grad_sums(xb + j * x_img, dxb + j * x_img, 1, d->c_in, d->h * d->w, xa,
                                 xg_s, xg_x);
        }
    }
    for (int co = 0; co < d->c_out; co++)
        for (int k = 0; k < g.k_total; k++) {
            const float *pp = part + ((size_t)co * g.k_pw + k) * lanes;
            float sm = 0.0f;
            for (int l = 0; l < lanes; l++)
                sm += pp[l];
            dw[(size_t)co * g.k_total + k] = sm;
        }
    for (int co = 0; db && co < d->c_out; co++)
        db[co] = (float)bsum[co];
}

void dpt_conv_direct_backward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                              const dpt_bn_apply *xa, const float *w, const float *dy,
                              const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                              float *db, float *work, double *xg)
{
    const dpt_conv2d_desc gd = group_desc(d);
    const int nb = block_images(d);
    const size_t hw = (size_t)d->h * d->w, P = (size_t)d->out_h * d->out_w;
    const size_t x_img = (size_t)d->c_in * hw, y_img = (size_t)d->c_out * P;
    const size_t K = (size_t)gd.c_in * d->kh * d->kw;
    for (int g = 0; g < groups_of(d); g++) {
        const size_t ci0 = (size_t)g * gd.c_in, co0 = (size_t)g * gd.c_out;
        dpt_bn_apply ga, gb;
        if (xa)
            ga = bn_slice(xa, ci0);
        if (dya)
            gb = bn_slice(dya, co0);
        backward_group(isa, &gd, nb, x_img, y_img, x + ci0 * hw, xa ? &ga : NULL, w + co0 * K,
                       dy + co0 * P, NULL, dya ? &gb : NULL, y ? y + co0 * P : NULL,
                       dx ? dx + ci0 * hw : NULL, dw + co0 * K, db ? db + co0 : NULL, work,
                       xg ? xg + ci0 : NULL, xg ? xg + d->c_in + ci0 : NULL);
    }
}

/* Here rather than in conv2d.c's table: only the direct kernels take it. */
int dpt_conv2d_backward_pooled(const dpt_conv2d_desc *d, const float *x, const float *w,
                               const float *pool_g, const unsigned char *pool_idx,
                               const dpt_bn_apply *dya, const float *y, float *dw, float *db,
                               float *work)
{
    if (groups_of(d) != 1 || !dya || dpt_conv_algo_resolve(d) != DPT_CONV_ALGO_DIRECT)
        return -1;
    const conv_isa *isa = dpt_conv_direct_supports(d);
    if (!isa)
        return -1;
    const conv_pool_src pool = {pool_g, pool_idx};
    const size_t x_img = (size_t)d->c_in * d->h * d->w;
    const size_t y_img = (size_t)d->c_out * d->out_h * d->out_w;
    const dpt_conv2d_desc gd = group_desc(d);
    /* dy is never read: the pool's gradient stands in for it */
    backward_group(isa, &gd, block_images(d), x_img, y_img, x, NULL, w, pool_g, &pool, dya, y,
                   NULL, dw, db, work, NULL, NULL);
    return 0;
}
