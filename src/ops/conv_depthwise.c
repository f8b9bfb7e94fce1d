/* Depthwise convolution: every input channel ci is convolved on its own
 * with m filters (c_out = m·c_in, groups = c_in), one channel plane at a
 * time, everything a plane needs held in L1/L2.
 *
 * Phase planes. With stride s, output (oy, ox) and tap (ki, kj) read the
 * padded input at (oy·s + ki·dl, ox·s + kj·dl). The padded plane is split
 * into s·s phase planes, P_ab[r][c] = padded[r·s + a][c·s + b], so that the
 * tap reads P_ab at (oy + ki·dl / s, ox + kj·dl / s) with a = ki·dl mod s,
 * b = kj·dl mod s: a stride-1 read of one phase plane (for stride 1 the one
 * phase plane is the padded input). Every plane has the same row stride W,
 * and output (oy, ox) is computed at the "wide" position q = oy·W + ox, so a
 * tap is a contiguous vector load at q + its offset and the whole plane is
 * one run of vectors (rows narrower than a vector waste nothing but the
 * W − out_w junk columns, which are never stored).
 *
 *   forward  out[q] = b + Σ_t w[t]·P_t[q + off_t], then the rows of out are
 *            copied to y (with the batch norm's sums Σy, Σy²)
 *   dw[t]    = Σ_images Σ_q g[q]·P_t[q + off_t], g the output gradient in
 *            the wide layout with zero junk columns (a view into dyp)
 *   dx       the adjoint, per input phase (a, b): the taps of that phase
 *            gather from dyp, the output gradient padded by ro rows and co
 *            columns (the largest tap offsets):
 *            Q_ab[r][c] = Σ_{t in phase ab} w[t]·dyp[r + ro − ki·dl/s][c + co − kj·dl/s],
 *            then dx[y][x] = Q_{(y+p) mod s, (x+p) mod s}[(y+p)/s][(x+p)/s]
 *            (stride 2: input rows split into their column phases and dx
 *            rows joined from them by vector shuffles, pack2 and plane_dx2;
 *            larger strides through padded row copies).
 * Taps are read in groups (make_groups): sorted by read position, runs of
 * consecutive positions (a filter row within one phase plane) become one
 * vector load per output vector plus lane shifts (conv_dw_kern.h), since a
 * load per tap at an arbitrary float offset straddles two cache lines.
 * Memory: each plane's inputs are prefetched while the previous plane is
 * computed in cache (planes are often exactly a page, where the hardware
 * prefetcher stops).
 * The batch norm below (xa) is applied while an input plane is packed, the
 * one above (dya) while dy is packed, and xg's sums are formed while dx is
 * written: the algorithm is "fused" (conv_algo.h).
 *
 * Sums: dw per plane in float lanes, added into float64 per image; db, the
 * batch-norm sums and xg likewise (as the direct kernels). Deterministic and
 * single-threaded: the order of every sum is fixed by the shapes. */
#include "ops/conv_depthwise.h"

#include <assert.h>
#include <string.h>

/* The portable set: 4-float vectors (SSE on x86, whatever the compiler
 * makes of them elsewhere). */
typedef float vt_dw4 __attribute__((vector_size(4 * 4)));
typedef int vi_dw4 __attribute__((vector_size(4 * 4)));
#define VN 4
#define VT vt_dw4
#define VI vi_dw4
#define KN(f) f##_generic
#define DW_NV 4
#define DW_SHIFT_LOADS 1
extern const dw_isa dpt_dw_isa_generic;

static inline VT KN(fma)(VT a, VT b, VT c) { return a * b + c; }

static inline VT KN(loadn)(const float *p, int n)
{
    VT v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

static inline void KN(storen)(float *p, VT v, int n) { memcpy(p, &v, (size_t)n * sizeof(float)); }

#include "ops/conv_dw_kern.h"
#undef VN
#undef VT
#undef VI
#undef KN
#undef DW_NV
#undef DW_SHIFT_LOADS

/* Widest vector of any set: the geometry (and so the work size) is the
 * same whichever set runs. */
#define VMAX 16

static const dw_isa *pick(void)
{
#ifdef DPT_HAVE_DW_X86
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &dpt_dw_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return &dpt_dw_isa_avx2;
#endif
    return &dpt_dw_isa_generic;
}

/* Asks for n floats from p ahead of their use: the next plane's inputs are
 * fetched from memory while this plane is computed in cache (the hardware
 * prefetcher alone leaves the passes waiting on memory). */
static void prefetch(const float *p, size_t n)
{
    for (size_t k = 0; k < n; k += 16)
        __builtin_prefetch(p + k, 0, 3);
}

/* The same for n floats about to be written (fetched for ownership, so
 * that the plane's stores do not stall on memory one line at a time). */
static void prefetch_w(float *p, size_t n)
{
    for (size_t k = 0; k < n; k += 16)
        __builtin_prefetch(p + k, 1, 3);
}

static size_t rup(size_t v, size_t m) { return (v + m - 1) / m * m; }
static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

typedef struct geom {
    int s, dl, p, m, kt, np; /* stride, dilation, pad, multiplier, taps, phases s·s */
    int ro, co;              /* largest tap offset in phase rows / columns */
    int hph;                 /* phase rows holding input rows */
    int W;                   /* row stride of every plane */
    size_t nqf;              /* wide output positions, rounded to VMAX */
    size_t psx, psd, psq;    /* plane strides: input phases, dyp, dx phases */
    size_t zs;               /* row stride of the stride > 1 scratch rows */
    /* Regions of the work buffer, in floats, each on a 64-byte boundary. */
    size_t o_xph, o_out, o_dyp, o_dxph, o_zin, o_zpl, o_rows, o_src, o_wt, o_idx, o_ph, o_dwacc,
        o_bsum, o_grp, o_perm, o_dtmp, o_gph, total;
} geom;

static void make_geom(const dpt_conv2d_desc *d, geom *g)
{
    const int s = d->stride, dl = d->dilation > 1 ? d->dilation : 1, p = d->pad;
    g->s = s, g->dl = dl, g->p = p;
    g->m = d->c_out / d->c_in;
    g->kt = d->kh * d->kw;
    g->np = s * s;
    g->ro = (d->kh - 1) * dl / s;
    g->co = (d->kw - 1) * dl / s;
    g->hph = (d->h - 1 + p) / s + 1;
    const int wph = (d->w - 1 + p) / s + 1;
    g->W = (d->out_w > wph ? d->out_w : wph) + g->co;
    const size_t W = (size_t)g->W, tap_max = (size_t)g->ro * W + (size_t)g->co;
    g->nqf = rup((size_t)d->out_h * W, VMAX);
    /* Input phases: rows written up to hph (stride 2 writes a vector past
     * a row's end), read up to nqf plus the largest tap offset. */
    g->psx = rup(max_z((size_t)g->hph * W + VMAX, g->nqf + tap_max + VMAX), VMAX);
    /* dyp: read by dw up to nqf past its interior and by dx up to hph rows
     * (rounded) past the largest offset; each plus a tap group's slack. */
    g->psd = rup(max_z(tap_max + g->nqf, (size_t)g->hph * W + VMAX + tap_max) + VMAX, VMAX);
    g->psq = rup((size_t)g->hph * W + VMAX, VMAX);
    g->zs = rup((size_t)s * rup(W, VMAX) + VMAX, VMAX);
    const size_t kt_m = (size_t)g->kt * g->m;
    const size_t pf = sizeof(void *) / sizeof(float) + 1; /* floats per pointer, at most */
    size_t o = 0;
    g->o_xph = o, o += (size_t)g->np * g->psx;
    g->o_out = o, o += rup(g->nqf, VMAX);
    g->o_dyp = o, o += (size_t)g->m * g->psd;
    g->o_dxph = o, o += (size_t)g->np * g->psq;
    g->o_zin = o, o += s > 2 ? rup((size_t)d->h * g->zs, VMAX) : 0;
    g->o_zpl = o, o += s > 2 ? rup((size_t)d->h * g->zs, VMAX) : 0;
    g->o_rows = o, o += rup((size_t)d->h * pf, VMAX);
    g->o_src = o, o += rup((size_t)(g->kt + kt_m) * pf, VMAX);
    g->o_wt = o, o += rup(kt_m, VMAX);
    g->o_idx = o, o += rup(kt_m, VMAX);
    g->o_ph = o, o += rup((size_t)g->np + 1, VMAX);
    g->o_dwacc = o, o += rup((size_t)d->c_out * g->kt * 2, VMAX);
    g->o_bsum = o, o += rup((size_t)d->c_out * 2, VMAX);
    g->o_grp = o, o += rup((size_t)(g->kt + kt_m) * (pf + 1), VMAX);
    g->o_perm = o, o += rup((size_t)(g->kt + kt_m), VMAX);
    g->o_dtmp = o, o += rup((size_t)g->kt * 2, VMAX);
    g->o_gph = o, o += rup((size_t)g->np + 1, VMAX);
    g->total = o;
}

int dpt_conv_depthwise_supports(const dpt_conv2d_desc *d)
{
    const int groups = d->groups > 1 ? d->groups : 1;
    return groups == d->c_in && d->c_out % d->c_in == 0 && d->stride > 0 && d->pad >= 0 &&
           d->out_h > 0 && d->out_w > 0;
}

size_t dpt_conv_depthwise_work_floats(const dpt_conv2d_desc *d)
{
    geom g;
    make_geom(d, &g);
    return g.total;
}

/* The taps' read positions in the input phase planes (forward and dw). */
static void tap_sources(const dpt_conv2d_desc *d, const geom *g, const float *xph,
                        const float **src)
{
    for (int t = 0; t < g->kt; t++) {
        const int u = t / d->kw * g->dl, v = t % d->kw * g->dl;
        src[t] = xph + (size_t)((u % g->s) * g->s + v % g->s) * g->psx +
                 (size_t)(u / g->s) * g->W + (size_t)(v / g->s);
    }
}

/* The taps src[0 .. nt) sorted by read position (perm[e]: the tap read
 * e-th) and cut into runs of consecutive positions, at most DW_GMAX long:
 * the groups the kernels take. The order depends on the geometry only
 * (positions within one work buffer), so results stay deterministic. */
static int make_groups(const float *const *src, int nt, dw_grp *grp, int *perm)
{
    for (int e = 0; e < nt; e++) {
        int f = e;
        for (; f > 0 && src[perm[f - 1]] > src[e]; f--)
            perm[f] = perm[f - 1];
        perm[f] = e;
    }
    int ng = 0;
    for (int e = 0; e < nt;) {
        int n = 1;
        while (n < DW_GMAX && e + n < nt && src[perm[e + n]] == src[perm[e]] + n)
            n++;
        grp[ng].p = src[perm[e]];
        grp[ng++].n = n;
        e += n;
    }
    return ng;
}

/* Phase planes of input channel ci of one image (plane xc [h][w]), through
 * the batch norm xa when given; padding stays as zeroed once per call. */
static void pack_x(const dw_isa *k, const dpt_conv2d_desc *d, const geom *g, const float *xc,
                   const dpt_bn_apply *xa, int ci, float *xph, float *zin)
{
    const int s = g->s, W = g->W;
    if (s == 1) {
        k->plane_in(xc, d->h, d->w, xa, ci, xph + (size_t)g->p * W + g->p, (size_t)W);
        return;
    }
    if (s == 2) {
        k->pack2(xc, d->h, d->w, xa, ci, g->p, xph, g->psx, (size_t)W);
        return;
    }
    /* Larger strides: the padded rows first (zero outside [p, p + w)),
     * then split into their s column phases element by element. */
    k->plane_in(xc, d->h, d->w, xa, ci, zin + g->p, g->zs);
    for (int y = 0; y < d->h; y++) {
        const int u = y + g->p, a = u % s, r = u / s;
        const float *z = zin + (size_t)y * g->zs;
        float *dst = xph + (size_t)a * s * g->psx + (size_t)r * W;
        for (int b = 0; b < s; b++)
            for (int c = 0; c < W; c++)
                dst[(size_t)b * g->psx + c] = z[(size_t)c * s + b];
    }
}

void dpt_conv_depthwise_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                                const float *w, const float *b, float *y, float *work, double *sum,
                                double *sumsq)
{
    assert(dpt_conv_depthwise_supports(d));
    const dw_isa *k = pick();
    geom g;
    make_geom(d, &g);
    float *xph = work + g.o_xph, *out = work + g.o_out, *zin = work + g.o_zin;
    const float **src = (const float **)(void *)(work + g.o_src);
    dw_grp *grp = (dw_grp *)(void *)(work + g.o_grp);
    int *perm = (int *)(void *)(work + g.o_perm);
    float *wt = work + g.o_wt;
    memset(xph, 0, (size_t)g.np * g.psx * sizeof *xph);
    if (g.s > 2)
        memset(zin, 0, (size_t)d->h * g.zs * sizeof *zin);
    tap_sources(d, &g, xph, src);
    const int ng = make_groups(src, g.kt, grp, perm);
    if (sum)
        for (int co = 0; co < d->c_out; co++)
            sum[co] = sumsq[co] = 0.0;
    const size_t xs = (size_t)d->h * d->w, ys = (size_t)d->out_h * d->out_w;
    for (int i = 0; i < d->n; i++)
        for (int ci = 0; ci < d->c_in; ci++) {
            const size_t xoff = ((size_t)i * d->c_in + ci) * xs;
            pack_x(k, d, &g, x + xoff, xa, ci, xph, zin);
            if (i + 1 < d->n || ci + 1 < d->c_in) {
                prefetch(x + xoff + xs, xs);
                prefetch_w(y + ((size_t)i * d->c_out + (size_t)(ci + 1) * g.m) * ys,
                           (size_t)g.m * ys);
            }
            for (int j = 0; j < g.m; j++) {
                const int co = ci * g.m + j;
                for (int e = 0; e < g.kt; e++)
                    wt[e] = w[(size_t)co * g.kt + perm[e]];
                k->mac(grp, ng, wt, b ? b[co] : 0.0f, out, g.nqf);
                k->plane_out(out, d->out_h, d->out_w, (size_t)g.W,
                             y + ((size_t)i * d->c_out + co) * ys, sum ? sum + co : NULL,
                             sum ? sumsq + co : NULL);
            }
        }
}

void dpt_conv_depthwise_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                                 const float *w, const float *dy, const dpt_bn_apply *dya,
                                 const float *y, float *dx, float *dw, float *db, float *work,
                                 double *xg)
{
    assert(dpt_conv_depthwise_supports(d));
    assert(!xg || (xa && dx));
    const dw_isa *k = pick();
    geom g;
    make_geom(d, &g);
    const int s = g.s, W = g.W, kt = g.kt, m = g.m;
    float *xph = work + g.o_xph, *dyp = work + g.o_dyp, *dxph = work + g.o_dxph;
    float *zin = work + g.o_zin, *zpl = work + g.o_zpl, *wt = work + g.o_wt;
    const float **rows = (const float **)(void *)(work + g.o_rows);
    const float **src = (const float **)(void *)(work + g.o_src);
    const float **dsrc = src + kt; /* the dx gathers, phase after phase */
    int *idx = (int *)(void *)(work + g.o_idx), *ph = (int *)(void *)(work + g.o_ph);
    double *dwacc = (double *)(void *)(work + g.o_dwacc);
    double *bsum = (double *)(void *)(work + g.o_bsum);
    double *dtmp = (double *)(void *)(work + g.o_dtmp);
    dw_grp *grp = (dw_grp *)(void *)(work + g.o_grp), *dgrp = grp + kt;
    int *perm = (int *)(void *)(work + g.o_perm), *dperm = perm + kt;

    memset(xph, 0, (size_t)g.np * g.psx * sizeof *xph);
    memset(dyp, 0, (size_t)m * g.psd * sizeof *dyp);
    memset(dxph, 0, (size_t)g.np * g.psq * sizeof *dxph);
    if (s > 2)
        memset(zin, 0, (size_t)d->h * g.zs * sizeof *zin);
    tap_sources(d, &g, xph, src);
    /* Per input phase (a, b): its taps of every one of the m filters, as
     * read positions in dyp (from the phase's first computed row r0(a)). */
    int n_src = 0;
    for (int a = 0; a < s; a++) {
        const int r0 = g.p - a > 0 ? (g.p - a + s - 1) / s : 0;
        for (int bb = 0; bb < s; bb++) {
            ph[a * s + bb] = n_src;
            for (int j = 0; j < m; j++)
                for (int t = 0; t < kt; t++) {
                    const int u = t / d->kw * g.dl, v = t % d->kw * g.dl;
                    if (u % s != a || v % s != bb)
                        continue;
                    dsrc[n_src] = dyp + (size_t)j * g.psd +
                                  (size_t)(r0 + g.ro - u / s) * W + (size_t)(g.co - v / s);
                    idx[n_src++] = j * kt + t;
                }
        }
    }
    ph[g.np] = n_src;
    const int ng = make_groups(src, kt, grp, perm);
    /* The dx taps of each phase in groups: phase q's taps are dsrc[ph[q] ..
     * ph[q + 1]), its groups dgrp[gph[q] .. gph[q + 1]), its taps in group
     * order dperm[ph[q] ..] (indices into the phase's range). */
    int *gph = (int *)(void *)(work + g.o_gph);
    for (int q = 0, ngd = 0; q <= g.np; q++) {
        gph[q] = ngd;
        if (q < g.np)
            ngd += make_groups(dsrc + ph[q], ph[q + 1] - ph[q], dgrp + ngd, dperm + ph[q]);
    }
    for (size_t e = 0; e < (size_t)d->c_out * kt; e++)
        dwacc[e] = 0.0;
    for (int co = 0; co < d->c_out; co++)
        bsum[co] = 0.0;
    for (int ci = 0; xg && ci < 2 * d->c_in; ci++)
        xg[ci] = 0.0;

    const size_t xs = (size_t)d->h * d->w, ys = (size_t)d->out_h * d->out_w;
    for (int i = 0; i < d->n; i++)
        for (int ci = 0; ci < d->c_in; ci++) {
            const size_t xoff = ((size_t)i * d->c_in + ci) * xs;
            pack_x(k, d, &g, x + xoff, xa, ci, xph, zin);
            if (i + 1 < d->n || ci + 1 < d->c_in) {
                const size_t ynext = ((size_t)i * d->c_out + (size_t)(ci + 1) * m) * ys;
                prefetch(x + xoff + xs, xs);
                prefetch(dy + ynext, (size_t)m * ys);
                if (dx)
                    prefetch_w(dx + xoff + xs, xs);
                if (dya)
                    prefetch(y + ynext, (size_t)m * ys);
            }
            for (int j = 0; j < m; j++) {
                const int co = ci * m + j;
                const size_t yoff = ((size_t)i * d->c_out + co) * ys;
                float *dj = dyp + (size_t)j * g.psd + (size_t)g.ro * W + g.co;
                k->plane_grad(dy + yoff, dya ? y + yoff : NULL, d->out_h, d->out_w, dya, co, dj,
                              (size_t)W, bsum + co);
                for (int e = 0; e < kt; e++)
                    dtmp[e] = 0.0;
                k->dots(dj, grp, ng, g.nqf, dtmp);
                for (int e = 0; e < kt; e++)
                    dwacc[(size_t)co * kt + perm[e]] += dtmp[e];
            }
            if (!dx)
                continue;
            for (int a = 0; a < s; a++) {
                const int r0 = g.p - a > 0 ? (g.p - a + s - 1) / s : 0;
                const int r1 = d->h - 1 + g.p - a >= 0 ? (d->h - 1 + g.p - a) / s + 1 : 0;
                if (r1 <= r0)
                    continue;
                const size_t nq = rup((size_t)(r1 - r0) * W, VMAX);
                for (int bb = 0; bb < s; bb++) {
                    const int e0 = ph[a * s + bb], ne = ph[a * s + bb + 1] - e0;
                    float *dst = dxph + (size_t)(a * s + bb) * g.psq + (size_t)r0 * W;
                    for (int e = 0; e < ne; e++)
                        wt[e] = w[(size_t)ci * m * kt + idx[e0 + dperm[e0 + e]]];
                    if (ne)
                        k->mac(dgrp + gph[a * s + bb], gph[a * s + bb + 1] - gph[a * s + bb], wt,
                               0.0f, dst, nq);
                    else /* no tap lands on this phase */
                        memset(dst, 0, nq * sizeof *dst);
                }
            }
            if (s == 2) {
                k->plane_dx2(dxph, g.psq, (size_t)W, d->h, d->w, g.p, dx + xoff, x + xoff,
                             xg ? xa : NULL, ci, xg ? xg + ci : NULL, xg ? xg + d->c_in + ci : NULL);
                continue;
            }
            for (int yy = 0; yy < d->h; yy++) {
                const int u = yy + g.p, a = u % s, r = u / s;
                const float *q0 = dxph + (size_t)a * s * g.psq + (size_t)r * W;
                if (s == 1) {
                    rows[yy] = q0 + g.p;
                    continue;
                }
                float *z = zpl + (size_t)yy * g.zs;
                for (int bb = 0; bb < s; bb++)
                    for (int c = 0; c < W; c++)
                        z[(size_t)c * s + bb] = q0[(size_t)bb * g.psq + c];
                rows[yy] = z + g.p;
            }
            k->plane_dx(rows, d->h, d->w, dx + xoff, x + xoff, xg ? xa : NULL, ci,
                        xg ? xg + ci : NULL, xg ? xg + d->c_in + ci : NULL);
        }
    for (size_t e = 0; e < (size_t)d->c_out * kt; e++)
        dw[e] = (float)dwacc[e];
    for (int co = 0; db && co < d->c_out; co++)
        db[co] = (float)bsum[co];
}
