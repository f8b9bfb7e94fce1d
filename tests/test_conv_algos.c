/* Every convolution algorithm of conv2d.c's table against a naive
 * double-precision convolution written here, on random shapes (a property
 * test: strides 1-3, paddings 0-2, dilations 1-2, plain, grouped and
 * depthwise, channels 1-300, batches 1-33, with and without batch norms
 * applied on the fly), for every kernel set the CPU has; then the plans
 * that choose among them (conv_plan.c): forced choices, the cache file's
 * round trip, hostile cache files, and networks that give the same
 * results whatever the plan.
 *
 * The loop runs over the table, so an algorithm added to it is checked
 * here without a line of this file changing. */
#include "dptrain/dptrain.h"
#include "ops/conv_algo.h"
#include "ops/ops.h"
#include "testfs.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ---- the reference ------------------------------------------------------------ */

typedef struct shape_case {
    dpt_conv2d_desc d;
    int bn_in, relu_in, bn_out, relu_out, need_dx, bias;
} shape_case;

/* All arrays of one case; ref_* in double. */
typedef struct data {
    float *x, *w, *b, *dy, *yref; /* yref: the reference output in float, fed to backward */
    float *bn_in, *bn_out;        /* 6 arrays of c each: mean scale shift kf ka kb */
    double *y, *sum, *sumsq, *dx, *dw, *db, *xg;
} data;

static void fill(dpt_rng *r, float *v, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        v[i] = s * (2.0f * dpt_rng_uniform(r) - 1.0f);
}

static dpt_bn_apply bn_of(const float *p, int c, int relu)
{
    return (dpt_bn_apply){p, p + c, p + 2 * c, relu, p + 3 * c, p + 4 * c, p + 5 * c};
}

/* The batch norm's forward as dpt_bn_apply defines it (the ReLU mask from
 * the same float expression). */
static double apply_fwd(const dpt_bn_apply *a, int c, float x)
{
    float xc = x - a->mean[c];
    float z = xc * a->scale[c] + a->shift[c];
    if (a->relu && !(z > 0.0f))
        return 0.0;
    return ((double)x - a->mean[c]) * a->scale[c] + a->shift[c];
}

static int relu_off(const dpt_bn_apply *a, int c, float x)
{
    return a->relu && !((x - a->mean[c]) * a->scale[c] + a->shift[c] > 0.0f);
}

static void reference(const shape_case *sc, data *D)
{
    const dpt_conv2d_desc *d = &sc->d;
    const int G = d->groups, cgi = d->c_in / G, cgo = d->c_out / G;
    const int H = d->h, W = d->w, OH = d->out_h, OW = d->out_w, P = OH * OW;
    const size_t nx = (size_t)d->n * d->c_in * H * W, ny = (size_t)d->n * d->c_out * P;
    dpt_bn_apply ai = bn_of(D->bn_in, d->c_in, sc->relu_in);
    dpt_bn_apply ao = bn_of(D->bn_out, d->c_out, sc->relu_out);
    double *xin = malloc(nx * sizeof *xin), *g = malloc(ny * sizeof *g);
    for (int i = 0; i < d->n; i++)
        for (int c = 0; c < d->c_in; c++)
            for (int k = 0; k < H * W; k++) {
                size_t at = ((size_t)i * d->c_in + c) * H * W + k;
                xin[at] = sc->bn_in ? apply_fwd(&ai, c, D->x[at]) : D->x[at];
            }
    /* forward */
    for (int i = 0; i < d->n; i++)
        for (int co = 0; co < d->c_out; co++) {
            int gr = co / cgo;
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double s = sc->bias ? D->b[co] : 0.0;
                    for (int ci = 0; ci < cgi; ci++)
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                int iy = oy * d->stride - d->pad + ki * d->dilation;
                                int ix = ox * d->stride - d->pad + kj * d->dilation;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                s += (double)D->w[(((size_t)co * cgi + ci) * d->kh + ki) * d->kw + kj] *
                                     xin[(((size_t)i * d->c_in + gr * cgi + ci) * H + iy) * W + ix];
                            }
                    D->y[((size_t)i * d->c_out + co) * P + oy * OW + ox] = s;
                }
        }
    for (int co = 0; co < d->c_out; co++)
        D->sum[co] = D->sumsq[co] = 0.0;
    for (size_t k = 0; k < ny; k++) {
        int co = (int)(k / P % d->c_out);
        D->yref[k] = (float)D->y[k];
        D->sum[co] += D->y[k], D->sumsq[co] += D->y[k] * D->y[k];
    }
    /* the gradient the convolution uses */
    for (size_t k = 0; k < ny; k++) {
        int co = (int)(k / P % d->c_out);
        if (!sc->bn_out) {
            g[k] = D->dy[k];
            continue;
        }
        double gv = relu_off(&ao, co, D->yref[k]) ? 0.0 : D->dy[k];
        g[k] = ao.kf[co] * gv - ao.ka[co] - ((double)D->yref[k] - ao.mean[co]) * ao.kb[co];
    }
    memset(D->dx, 0, nx * sizeof *D->dx);
    memset(D->dw, 0, (size_t)d->c_out * cgi * d->kh * d->kw * sizeof *D->dw);
    for (int co = 0; co < d->c_out; co++)
        D->db[co] = 0.0;
    for (int i = 0; i < d->n; i++)
        for (int co = 0; co < d->c_out; co++) {
            int gr = co / cgo;
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double gv = g[((size_t)i * d->c_out + co) * P + oy * OW + ox];
                    D->db[co] += gv;
                    for (int ci = 0; ci < cgi; ci++)
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                int iy = oy * d->stride - d->pad + ki * d->dilation;
                                int ix = ox * d->stride - d->pad + kj * d->dilation;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                size_t wi = (((size_t)co * cgi + ci) * d->kh + ki) * d->kw + kj;
                                size_t xi = (((size_t)i * d->c_in + gr * cgi + ci) * H + iy) * W + ix;
                                D->dw[wi] += gv * xin[xi];
                                D->dx[xi] += gv * D->w[wi];
                            }
                }
        }
    for (int c = 0; c < 2 * d->c_in; c++)
        D->xg[c] = 0.0;
    if (sc->bn_in)
        for (size_t k = 0; k < nx; k++) {
            int c = (int)(k / ((size_t)H * W) % d->c_in);
            if (relu_off(&ai, c, D->x[k]))
                continue;
            D->xg[c] += D->dx[k];
            D->xg[d->c_in + c] += D->dx[k] * ((double)D->x[k] - ai.mean[c]);
        }
    free(xin), free(g);
}

/* max |got - ref| / max |ref|; NaN gives inf. */
static double rel_err(const float *got, const double *gotd, const double *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double v = got ? (double)got[i] : gotd[i];
        double e = fabs(v - ref[i]);
        if (e != e)
            return INFINITY;
        if (e > md)
            md = e;
        if (fabs(ref[i]) > mr)
            mr = fabs(ref[i]);
    }
    return md / (mr > 1e-30 ? mr : 1e-30);
}

static float *nans(size_t n)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = NAN;
    return v;
}

/* A random shape whose naive convolution stays small (the test takes
 * seconds): rejection-sampled. Channel counts mostly small, sometimes up
 * to 300. */
static int pick_channels(dpt_rng *r)
{
    uint32_t u = dpt_rng_below(r, 10);
    if (u < 6)
        return 1 + (int)dpt_rng_below(r, 8);
    if (u < 9)
        return 9 + (int)dpt_rng_below(r, 40);
    return 49 + (int)dpt_rng_below(r, 252);
}

static void random_case(dpt_rng *r, shape_case *sc)
{
    for (;;) {
        dpt_conv2d_desc d = {0};
        d.stride = 1 + (int)dpt_rng_below(r, 3);
        d.pad = (int)dpt_rng_below(r, 3);
        d.dilation = 1 + (int)dpt_rng_below(r, 2);
        d.kh = 1 + (int)dpt_rng_below(r, 4);
        d.kw = dpt_rng_below(r, 4) ? d.kh : 1 + (int)dpt_rng_below(r, 4);
        /* 0: plain, stride 1, no dilation, padding within the filter (the
         * direct kernels' home ground); 1: plain; 2: grouped; 3: depthwise */
        uint32_t kind = dpt_rng_below(r, 4);
        if (kind == 0) {
            d.stride = d.dilation = 1;
            d.kh += d.kh == 1, d.kw += d.kw == 1;
            int kmin = d.kh < d.kw ? d.kh : d.kw;
            d.pad = d.pad < kmin ? d.pad : kmin - 1;
        }
        if (kind == 3) {
            d.c_in = pick_channels(r);
            d.groups = d.c_in;
            d.c_out = d.c_in * (dpt_rng_below(r, 4) ? 1 : 2);
        } else if (kind == 2) {
            d.groups = 2 + (int)dpt_rng_below(r, 3);
            d.c_in = d.groups * (1 + (int)dpt_rng_below(r, 6));
            d.c_out = d.groups * (1 + (int)dpt_rng_below(r, 6));
        } else {
            d.groups = 1;
            d.c_in = pick_channels(r);
            d.c_out = pick_channels(r);
        }
        d.h = 1 + (int)dpt_rng_below(r, 20);
        d.w = 1 + (int)dpt_rng_below(r, 20);
        d.n = dpt_rng_below(r, 4) ? 1 + (int)dpt_rng_below(r, 6) : 1 + (int)dpt_rng_below(r, 33);
        if (dpt_conv2d_desc_init(&d) != 0)
            continue;
        double macs = (double)d.n * d.c_out * (d.c_in / d.groups) * d.kh * d.kw * d.out_h * d.out_w;
        if (macs > 4e5)
            continue;
        sc->d = d;
        sc->bn_in = dpt_rng_below(r, 3) == 0;
        sc->bn_out = dpt_rng_below(r, 3) == 0;
        sc->relu_in = (int)dpt_rng_below(r, 2);
        sc->relu_out = (int)dpt_rng_below(r, 2);
        sc->need_dx = sc->bn_in || dpt_rng_below(r, 4) != 0;
        sc->bias = dpt_rng_below(r, 4) != 0;
        return;
    }
}

static int n_checked[DPT_CONV_ALGO_COUNT], n_unfused;

/* One entry (as conv2d.c runs it) on this case against the reference. */
static void check_one(const shape_case *sc, data *D, const conv_algo *e, const char *label,
                      int idx)
{
    dpt_conv2d_desc d = sc->d;
    const size_t nx = (size_t)d.n * d.c_in * d.h * d.w, ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
    const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
    dpt_bn_apply ai = bn_of(D->bn_in, d.c_in, sc->relu_in);
    dpt_bn_apply ao = bn_of(D->bn_out, d.c_out, sc->relu_out);
    float *work = nans(dpt_conv_algo_work(e, &d));
    float *y = nans(ny), *dx = nans(nx), *dw = nans(nw), *db = nans((size_t)d.c_out);
    double *s = malloc(2 * (size_t)(d.c_out + d.c_in) * sizeof *s);
    double *xg = s + 2 * d.c_out;
    for (int k = 0; k < 2 * (d.c_out + d.c_in); k++)
        s[k] = NAN;
    dpt_conv_algo_forward(e, &d, D->x, sc->bn_in ? &ai : NULL, D->w, sc->bias ? D->b : NULL, y,
                          work, sc->bn_out ? s : NULL, sc->bn_out ? s + d.c_out : NULL);
    dpt_conv_algo_backward(e, &d, D->x, sc->bn_in ? &ai : NULL, D->w, D->dy,
                           sc->bn_out ? &ao : NULL, D->yref, sc->need_dx ? dx : NULL, dw,
                           sc->bias ? db : NULL, work, sc->bn_in ? xg : NULL);
    double err[7] = {rel_err(y, NULL, D->y, ny), rel_err(dw, NULL, D->dw, nw), 0, 0, 0, 0, 0};
    if (sc->bias)
        err[2] = rel_err(db, NULL, D->db, (size_t)d.c_out);
    if (sc->need_dx)
        err[3] = rel_err(dx, NULL, D->dx, nx);
    if (sc->bn_out) {
        err[4] = rel_err(NULL, s, D->sum, (size_t)d.c_out);
        err[5] = rel_err(NULL, s + d.c_out, D->sumsq, (size_t)d.c_out);
    }
    if (sc->bn_in)
        err[6] = rel_err(NULL, xg, D->xg, 2 * (size_t)d.c_in);
    static const char *const what[7] = {"y", "dw", "db", "dx", "sum", "sumsq", "xg"};
    /* Float32 sums of up to a few thousand terms: 1e-4 of the largest
     * value; the batch norm's backward sums (xg) add up whole channels of
     * products, some cancelling. */
    static const double tol[7] = {1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-3};
    for (int k = 0; k < 7; k++)
        CHECK_MSG(err[k] <= tol[k],
                  "case %d (%s): %s rel err %.2e: n=%d c_in=%d %dx%d c_out=%d k=%dx%d s=%d "
                  "p=%d d=%d g=%d bn_in=%d/%d bn_out=%d/%d dx=%d bias=%d",
                  idx, label, what[k], err[k], d.n, d.c_in, d.h, d.w, d.c_out, d.kh, d.kw,
                  d.stride, d.pad, d.dilation, d.groups, sc->bn_in, sc->relu_in, sc->bn_out,
                  sc->relu_out, sc->need_dx, sc->bias);
    free(work), free(y), free(dx), free(dw), free(db), free(s);
}

/* Every algorithm the table supports for this case, on the kernel set in
 * use, against the reference in D: through the public entry points (so
 * the dispatch picks it), and each fused one again as if unfused (conv2d.c
 * applying the batch norms in scratch, as for an entry with fused = 0). */
static void check_algos(const shape_case *sc, data *D, const char *set, int idx)
{
    dpt_conv2d_desc d = sc->d;
    char label[64];
    for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++) {
        if (!dpt_conv_algo_supports(a, &d))
            continue;
        d.algo = a;
        CHECK(dpt_conv_algo_resolve(&d) == a);
        conv_algo e = *dpt_conv_algo_get(a);
        CHECK(dpt_conv_algo_work(&e, &d) <= dpt_conv2d_work_floats(&d));
        snprintf(label, sizeof label, "%s, %s", set, e.name);
        check_one(sc, D, &e, label, idx);
        n_checked[a]++;
        if (e.fused && (sc->bn_in || sc->bn_out) && a == DPT_CONV_ALGO_GEMM) {
            e.fused = 0;
            snprintf(label, sizeof label, "%s, %s run unfused", set, e.name);
            check_one(sc, D, &e, label, idx);
            n_unfused++;
        }
    }
}

/* Draws one case's data from r, computes the reference and checks every
 * algorithm under every kernel set the CPU has. */
static void check_case(dpt_rng *r, const shape_case *sc, int idx)
{
    static const char *const sets[] = {"generic", "avx2", "avx512"};
    const dpt_conv2d_desc *d = &sc->d;
    const size_t nx = (size_t)d->n * d->c_in * d->h * d->w;
    const size_t ny = (size_t)d->n * d->c_out * d->out_h * d->out_w;
    const size_t nw = (size_t)d->c_out * (d->c_in / d->groups) * d->kh * d->kw;
    data D = {0};
    D.x = malloc(nx * sizeof *D.x), D.w = malloc(nw * sizeof *D.w);
    D.b = malloc((size_t)d->c_out * sizeof *D.b), D.dy = malloc(ny * sizeof *D.dy);
    D.yref = malloc(ny * sizeof *D.yref);
    D.bn_in = malloc(6 * (size_t)d->c_in * sizeof *D.bn_in);
    D.bn_out = malloc(6 * (size_t)d->c_out * sizeof *D.bn_out);
    D.y = malloc(ny * sizeof *D.y), D.dx = malloc(nx * sizeof *D.dx);
    D.dw = malloc(nw * sizeof *D.dw), D.db = malloc((size_t)d->c_out * sizeof *D.db);
    D.sum = malloc((size_t)d->c_out * sizeof *D.sum);
    D.sumsq = malloc((size_t)d->c_out * sizeof *D.sumsq);
    D.xg = malloc(2 * (size_t)d->c_in * sizeof *D.xg);
    fill(r, D.x, nx, 1.0f), fill(r, D.w, nw, 0.5f), fill(r, D.b, (size_t)d->c_out, 0.5f);
    fill(r, D.dy, ny, 1.0f);
    fill(r, D.bn_in, 6 * (size_t)d->c_in, 0.5f);
    fill(r, D.bn_out, 6 * (size_t)d->c_out, 0.5f);
    for (int c = 0; c < d->c_in; c++) /* scales and kf near 1 */
        D.bn_in[d->c_in + c] += 1.0f, D.bn_in[3 * d->c_in + c] += 1.0f;
    for (int c = 0; c < d->c_out; c++)
        D.bn_out[d->c_out + c] += 1.0f, D.bn_out[3 * d->c_out + c] += 1.0f;
    reference(sc, &D);
    for (size_t s = 0; s < sizeof sets / sizeof *sets; s++) {
        if (!dpt_ops_kernels_supported(sets[s]) || dpt_ops_set_kernels(sets[s]) != 0)
            continue;
        check_algos(sc, &D, sets[s], idx);
    }
    free(D.x), free(D.w), free(D.b), free(D.dy), free(D.yref), free(D.bn_in), free(D.bn_out);
    free(D.y), free(D.dx), free(D.dw), free(D.db), free(D.sum), free(D.sumsq), free(D.xg);
}

static void property_test(void)
{
    /* The table and the names agree (a new entry's name is its enum's). */
    for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++) {
        const conv_algo *e = dpt_conv_algo_get(a);
        CHECK(!e || (strcmp(e->name, dpt_conv_algo_name(a)) == 0 && e->supports &&
                     e->work_floats && e->forward && e->backward));
        CHECK(dpt_conv_algo_by_name(dpt_conv_algo_name(a)) == a);
    }
    CHECK(dpt_conv_algo_get(DPT_CONV_ALGO_GEMM) != NULL);
    CHECK(dpt_conv_algo_get(DPT_CONV_ALGO_AUTO) == NULL && dpt_conv_algo_by_name("nope") == -1);
    const char *was = dpt_ops_kernels();
    char saved[16];
    snprintf(saved, sizeof saved, "%s", was);
    dpt_rng r;
    dpt_rng_seed(&r, 2121, 0);
    const int n_cases = 300;
    for (int idx = 0; idx < n_cases; idx++) {
        shape_case sc;
        random_case(&r, &sc);
        /* A few fixed cases first: depthwise, wide, strided with every fusion. */
        if (idx == 0)
            sc.d = (dpt_conv2d_desc){.n = 3, .c_in = 32, .h = 9, .w = 9, .c_out = 32, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1, .groups = 32};
        else if (idx == 1)
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 300, .h = 3, .w = 3, .c_out = 17, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1};
        else if (idx == 2)
            sc.d = (dpt_conv2d_desc){.n = 33, .c_in = 3, .h = 7, .w = 8, .c_out = 5, .kh = 3,
                                     .kw = 3, .stride = 2, .pad = 2, .dilation = 2};
        if (idx < 3) {
            CHECK(dpt_conv2d_desc_init(&sc.d) == 0);
            sc.bn_in = sc.bn_out = sc.relu_in = sc.need_dx = sc.bias = 1;
            sc.relu_out = idx & 1;
        }
        check_case(&r, &sc, idx);
    }
    /* 1x1 filters (pointwise), which the draw above makes rarely: shapes
     * of the same draw made 1x1 and unpadded (plain, grouped, depthwise;
     * strides 1-3), from
     * their own stream (the cases above stay what they were); first the
     * blockings conv_pointwise.c picks: a plane of 64 pixels (its own
     * block), 16-pixel planes in blocks of 16 images with a partial last
     * block, a strided odd plane, stride-2 planes of 16 and 39 columns. */
    dpt_rng r1;
    dpt_rng_seed(&r1, 2123, 0);
    const int n_1x1 = 80;
    const int pw_before = n_checked[DPT_CONV_ALGO_POINTWISE];
    for (int idx = 0; idx < n_1x1; idx++) {
        shape_case sc;
        random_case(&r1, &sc);
        sc.d.kh = sc.d.kw = 1, sc.d.pad = 0;
        if (idx == 0)
            sc.d = (dpt_conv2d_desc){.n = 5, .c_in = 64, .h = 8, .w = 8, .c_out = 128, .kh = 1,
                                     .kw = 1, .stride = 1};
        else if (idx == 1)
            sc.d = (dpt_conv2d_desc){.n = 20, .c_in = 48, .h = 4, .w = 4, .c_out = 40, .kh = 1,
                                     .kw = 1, .stride = 1};
        else if (idx == 2)
            sc.d = (dpt_conv2d_desc){.n = 7, .c_in = 32, .h = 14, .w = 13, .c_out = 64, .kh = 1,
                                     .kw = 1, .stride = 2};
        else if (idx == 3) /* resnet's projection: two output rows per vector */
            sc.d = (dpt_conv2d_desc){.n = 3, .c_in = 32, .h = 16, .w = 16, .c_out = 64, .kh = 1,
                                     .kw = 1, .stride = 2};
        else if (idx == 4) /* stride-2 rows of more than a vector, with a tail */
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 5, .h = 37, .w = 39, .c_out = 7, .kh = 1,
                                     .kw = 1, .stride = 2};
        if (idx < 5)
            sc.bn_in = sc.bn_out = sc.relu_in = sc.need_dx = sc.bias = 1, sc.relu_out = idx & 1;
        CHECK(dpt_conv2d_desc_init(&sc.d) == 0);
        check_case(&r1, &sc, n_cases + idx);
    }
    /* Every 1x1 case runs pointwise, on each kernel set. */
    CHECK(n_checked[DPT_CONV_ALGO_POINTWISE] - pw_before >= n_1x1);
    /* Wide layers (groups 1, 16+ channels in and out: what hwc runs) of
     * the same draw's strides, paddings, dilations and filters, from their
     * own stream; first the residual networks' shapes (a row split into
     * uneven tiles, stride 2, a channel count not a multiple of the
     * vector, a 7x7 plane, a 4x4 one) with every fusion. */
    dpt_rng r2;
    dpt_rng_seed(&r2, 2125, 0);
    const int n_wide = 43;
    const int hwc_before = n_checked[DPT_CONV_ALGO_HWC];
    for (int idx = 0; idx < n_wide; idx++) {
        shape_case sc;
        for (;;) {
            random_case(&r2, &sc);
            dpt_conv2d_desc d = sc.d;
            d.groups = 1;
            d.c_in = 16 + (int)dpt_rng_below(&r2, 33);
            d.c_out = 16 + (int)dpt_rng_below(&r2, 33);
            d.n = 1 + (int)dpt_rng_below(&r2, 3);
            if (dpt_conv2d_desc_init(&d) == 0 &&
                (double)d.n * d.c_out * d.c_in * d.kh * d.kw * d.out_h * d.out_w <= 2e6) {
                sc.d = d;
                break;
            }
        }
        if (idx == 0)
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 32, .h = 14, .w = 14, .c_out = 32, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1};
        else if (idx == 1)
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 32, .h = 16, .w = 16, .c_out = 64, .kh = 3,
                                     .kw = 3, .stride = 2, .pad = 1};
        else if (idx == 2)
            sc.d = (dpt_conv2d_desc){.n = 3, .c_in = 40, .h = 8, .w = 27, .c_out = 17, .kh = 3,
                                     .kw = 2, .stride = 3, .pad = 2, .dilation = 2};
        else if (idx == 3) /* 2 x 7 tiles (AVX-512), 13 channels per weight-gradient tile */
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 64, .h = 7, .w = 7, .c_out = 64, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1};
        else if (idx == 4) /* 4x4 planes: tiles take rows of 3 images (AVX-512), 4 = 3 + 1 */
            sc.d = (dpt_conv2d_desc){.n = 4, .c_in = 24, .h = 4, .w = 4, .c_out = 40, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1};
        else if (idx == 5) /* a weight gradient over groups of images (dwa over 256 KB:
                            * 9 + 2 images), channel blocks with a narrow last one (AVX-512) */
            sc.d = (dpt_conv2d_desc){.n = 11, .c_in = 176, .h = 4, .w = 4, .c_out = 144, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1};
        else if (idx == 6) /* the same, stride 2, one partial group (dx blocks 3 + 2) */
            sc.d = (dpt_conv2d_desc){.n = 5, .c_in = 96, .h = 8, .w = 8, .c_out = 112, .kh = 3,
                                     .kw = 3, .stride = 2, .pad = 1};
        else if (idx == 7) /* 16-pixel rows: 16x16 transposes (AVX-512) for 32 of the 40
                            * input and 16 of the 24 output channels, 8x8 for the rest */
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 40, .h = 16, .w = 16, .c_out = 24, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1};
        else if (idx == 8) /* dx as a gather over dy padded by 3 (dilation 2, pad 1) */
            sc.d = (dpt_conv2d_desc){.n = 3, .c_in = 20, .h = 6, .w = 9, .c_out = 36, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1, .dilation = 2};
        else if (idx == 9) /* the gather, unpadded input (dy padded by 2; dx plane larger
                            * than dy's: blocks of images differ) */
            sc.d = (dpt_conv2d_desc){.n = 4, .c_in = 33, .h = 6, .w = 6, .c_out = 48, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 0};
        else if (idx == 10) /* the gather with dy unpadded (pad = the kernel's reach) */
            sc.d = (dpt_conv2d_desc){.n = 2, .c_in = 16, .h = 5, .w = 7, .c_out = 48, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 2};
        if (idx < 11)
            sc.bn_in = sc.bn_out = sc.relu_in = sc.need_dx = sc.bias = 1, sc.relu_out = idx & 1;
        CHECK(dpt_conv2d_desc_init(&sc.d) == 0);
        check_case(&r2, &sc, n_cases + n_1x1 + idx);
    }
    /* hwc runs every one of them on each vector kernel set. */
    if (dpt_ops_kernels_supported("avx2"))
        CHECK(n_checked[DPT_CONV_ALGO_HWC] - hwc_before >= n_wide);
    /* The direct forward's dense rows (conv_direct.c: stride 1, c_in·kw
     * <= 12 per group, more than 25 taps in all, out_h·out_w a multiple of
     * the vector): 3x3 colour stems, 2-4 channels, paddings 0-2, dilation
     * 2, two groups of 4, a 5x5 filter of 2 channels (its taps a variable
     * count), with every fusion. */
    static const dpt_conv2d_desc rows[] = {
        {.n = 3, .c_in = 3, .h = 32, .w = 32, .c_out = 32, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 5, .c_in = 4, .h = 8, .w = 8, .c_out = 7, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 2, .c_in = 3, .h = 6, .w = 10, .c_out = 9, .kh = 3, .kw = 3, .stride = 1},
        {.n = 2, .c_in = 3, .h = 8, .w = 8, .c_out = 6, .kh = 3, .kw = 3, .stride = 1, .pad = 2,
         .dilation = 2},
        {.n = 3, .c_in = 8, .h = 4, .w = 8, .c_out = 10, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
         .groups = 2},
        {.n = 2, .c_in = 2, .h = 8, .w = 8, .c_out = 5, .kh = 5, .kw = 5, .stride = 1, .pad = 2},
    };
    const int n_rows = (int)(sizeof rows / sizeof *rows);
    const int direct_before = n_checked[DPT_CONV_ALGO_DIRECT];
    for (int idx = 0; idx < n_rows; idx++) {
        shape_case sc = {.d = rows[idx]};
        CHECK(dpt_conv2d_desc_init(&sc.d) == 0);
        sc.bn_in = sc.bn_out = sc.relu_in = sc.need_dx = sc.bias = 1;
        sc.relu_out = idx & 1;
        check_case(&r1, &sc, n_cases + n_1x1 + n_wide + idx);
    }
    CHECK(n_checked[DPT_CONV_ALGO_DIRECT] - direct_before >= n_rows);
    /* Winograd (conv_wino.c: 3x3, stride 1, pads 0-2; F(2,3) and F(4,3)):
     * the residual and VGG layers' planes (16x16 over 2 blocks of tiles, 8x8,
     * 4x4x256 over blocks of images: F(4,3)'s precision on 256-channel
     * sums), outputs not a multiple of the tile (a last tile row and column
     * partly outside: 7x5, 9x9 pad 0, 10x7 pad 2), pads 0 and 2, channel
     * counts not a multiple of the vector (17, 40), every fusion; then
     * plain and weight-gradient only (dx NULL). */
    static const dpt_conv2d_desc wino[] = {
        {.n = 3, .c_in = 32, .h = 16, .w = 16, .c_out = 32, .kh = 3, .kw = 3, .stride = 1,
         .pad = 1},
        {.n = 5, .c_in = 64, .h = 8, .w = 8, .c_out = 64, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 9, .c_in = 256, .h = 4, .w = 4, .c_out = 256, .kh = 3, .kw = 3, .stride = 1,
         .pad = 1},
        {.n = 2, .c_in = 17, .h = 7, .w = 5, .c_out = 40, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 3, .c_in = 40, .h = 9, .w = 9, .c_out = 17, .kh = 3, .kw = 3, .stride = 1, .pad = 0},
        {.n = 2, .c_in = 24, .h = 7, .w = 6, .c_out = 33, .kh = 3, .kw = 3, .stride = 1, .pad = 2},
        {.n = 4, .c_in = 16, .h = 5, .w = 9, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 0},
        {.n = 2, .c_in = 48, .h = 10, .w = 7, .c_out = 24, .kh = 3, .kw = 3, .stride = 1, .pad = 2},
        /* F(4,3) at its channel bound (512; y sums over c_in, dx over c_out). */
        {.n = 1, .c_in = 512, .h = 4, .w = 4, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 1, .c_in = 16, .h = 4, .w = 4, .c_out = 512, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    };
    const int n_wino = (int)(sizeof wino / sizeof *wino);
    const int wino_before = n_checked[DPT_CONV_ALGO_WINO];
    const int wino4_before = n_checked[DPT_CONV_ALGO_WINO4];
    for (int idx = 0; idx < n_wino; idx++) {
        shape_case sc = {.d = wino[idx]};
        CHECK(dpt_conv2d_desc_init(&sc.d) == 0);
        if (idx < n_wino - 2)
            sc.bn_in = sc.bn_out = sc.relu_in = sc.need_dx = sc.bias = 1, sc.relu_out = idx & 1;
        else if (idx == n_wino - 2)
            sc.need_dx = 1;
        check_case(&r1, &sc, n_cases + n_1x1 + n_wide + n_rows + idx);
    }
    /* wino and wino4 run every one of them on each vector kernel set. */
    if (dpt_ops_kernels_supported("avx2")) {
        CHECK(n_checked[DPT_CONV_ALGO_WINO] - wino_before >= n_wino);
        CHECK(n_checked[DPT_CONV_ALGO_WINO4] - wino4_before >= n_wino);
        /* Past 512 channels in or out, F(4,3)'s error would pass 3e-5 of
         * the largest value (bench/RESULTS-wino.md): no plan may pick it;
         * F(2,3) still runs. */
        dpt_ops_set_kernels("avx2");
        for (int k = 0; k < 3; k++) {
            dpt_conv2d_desc d = {.n = 2, .c_in = k == 1 ? 16 : 513, .h = 8, .w = 8,
                                 .c_out = k == 0 ? 16 : 513, .kh = 3, .kw = 3, .stride = 1,
                                 .pad = 1};
            CHECK(dpt_conv2d_desc_init(&d) == 0);
            CHECK_MSG(!dpt_conv_algo_supports(DPT_CONV_ALGO_WINO4, &d) &&
                          dpt_conv_algo_supports(DPT_CONV_ALGO_WINO, &d),
                      "wino4 past its channel bound: c_in %d c_out %d", d.c_in, d.c_out);
            d.c_in = d.c_in > 16 ? 512 : 16, d.c_out = d.c_out > 16 ? 512 : 16;
            CHECK(dpt_conv_algo_supports(DPT_CONV_ALGO_WINO4, &d));
        }
        /* wino_s2's line is 1024 channels (2048: 3.9e-5). */
        for (int k = 0; k < 3; k++) {
            dpt_conv2d_desc d = {.n = 1, .c_in = k == 1 ? 16 : 1025, .h = 8, .w = 8,
                                 .c_out = k == 0 ? 16 : 1025, .kh = 3, .kw = 3, .stride = 2,
                                 .pad = 1};
            CHECK(dpt_conv2d_desc_init(&d) == 0);
            CHECK_MSG(!dpt_conv_algo_supports(DPT_CONV_ALGO_WINO_S2, &d),
                      "wino_s2 past its channel bound: c_in %d c_out %d", d.c_in, d.c_out);
            d.c_in = d.c_in > 16 ? 1024 : 16, d.c_out = d.c_out > 16 ? 1024 : 16;
            CHECK(dpt_conv_algo_supports(DPT_CONV_ALGO_WINO_S2, &d));
        }
    }
    /* Stride-2 Winograd (conv_wino_s2.c: 3x3, stride 2, pads 0-2, F(4x4, 2x2)
     * over the space-to-depth input): the VGG and residual layers' planes
     * (32x32 -> 16x16 over 2 GEMMs, 16x16, 8x8x128 -> 256: K = 512 sums),
     * blocks of images (4x4 outputs, 18 images: blocks of 16 and 2), odd
     * planes (9x7, 15x15: tiles partly outside, the last s row beyond the
     * input), pads 0, 1 and 2, channel counts not a multiple of the vector
     * (17, 40), every fusion; then plain and weight-gradient only. */
    static const dpt_conv2d_desc ws2[] = {
        {.n = 2, .c_in = 32, .h = 32, .w = 32, .c_out = 64, .kh = 3, .kw = 3, .stride = 2,
         .pad = 1},
        {.n = 3, .c_in = 64, .h = 16, .w = 16, .c_out = 128, .kh = 3, .kw = 3, .stride = 2,
         .pad = 1},
        {.n = 3, .c_in = 128, .h = 8, .w = 8, .c_out = 256, .kh = 3, .kw = 3, .stride = 2,
         .pad = 1},
        {.n = 3, .c_in = 32, .h = 16, .w = 16, .c_out = 64, .kh = 3, .kw = 3, .stride = 2,
         .pad = 1},
        {.n = 18, .c_in = 16, .h = 8, .w = 8, .c_out = 32, .kh = 3, .kw = 3, .stride = 2,
         .pad = 1},
        {.n = 2, .c_in = 17, .h = 9, .w = 7, .c_out = 40, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
        {.n = 2, .c_in = 40, .h = 15, .w = 15, .c_out = 17, .kh = 3, .kw = 3, .stride = 2,
         .pad = 0},
        {.n = 3, .c_in = 24, .h = 9, .w = 7, .c_out = 33, .kh = 3, .kw = 3, .stride = 2, .pad = 2},
        {.n = 2, .c_in = 16, .h = 15, .w = 15, .c_out = 16, .kh = 3, .kw = 3, .stride = 2,
         .pad = 2},
        {.n = 2, .c_in = 40, .h = 10, .w = 9, .c_out = 24, .kh = 3, .kw = 3, .stride = 2, .pad = 0},
        {.n = 3, .c_in = 48, .h = 7, .w = 9, .c_out = 16, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
    };
    const int n_ws2 = (int)(sizeof ws2 / sizeof *ws2);
    const int ws2_before = n_checked[DPT_CONV_ALGO_WINO_S2];
    for (int idx = 0; idx < n_ws2; idx++) {
        shape_case sc = {.d = ws2[idx]};
        CHECK(dpt_conv2d_desc_init(&sc.d) == 0);
        if (idx < n_ws2 - 2)
            sc.bn_in = sc.bn_out = sc.relu_in = sc.need_dx = sc.bias = 1, sc.relu_out = idx & 1;
        else if (idx == n_ws2 - 2)
            sc.need_dx = 1;
        check_case(&r1, &sc, n_cases + n_1x1 + n_wide + n_rows + n_wino + idx);
    }
    if (dpt_ops_kernels_supported("avx2"))
        CHECK(n_checked[DPT_CONV_ALGO_WINO_S2] - ws2_before >= n_ws2);
    dpt_ops_set_kernels(saved);
    printf("property test: %d random shapes, %d 1x1 ones and %d wide ones;", n_cases, n_1x1,
           n_wide);
    for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++)
        printf(" %s %d", dpt_conv_algo_name(a), n_checked[a]);
    printf(" checks; %d of the unfused handling\n", n_unfused);
    CHECK(n_unfused > 10);
    CHECK(n_checked[DPT_CONV_ALGO_GEMM] >= n_cases); /* the reference runs every shape */
}

/* ---- plans ------------------------------------------------------------------------ */

static const char net_spec[] =
    "input in size=12x12x3\n"
    "conv c1 filter=3 filters=8 padding=1\n"
    "batchnorm b1\n"
    "relu r1\n"
    "conv c2 filter=3 filters=8 padding=1\n"
    "batchnorm b2\n"
    "relu r2\n"
    "conv c3 filter=3 filters=16 stride=2 padding=1\n"
    "relu r3\n"
    "conv c4 filter=3 filters=16 padding=2 dilation=2 groups=8\n"
    "relu r4\n"
    "conv c5 filter=1 filters=8\n"
    "fc f outputs=5\n"
    "softmax s\n";
#define BATCH 6

static dpt_net *build(void)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(net_spec, "plan test", 5, BATCH, 7, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    return net;
}

static int layer_of(const dpt_net *net, const char *name)
{
    for (int i = 0; i < dpt_net_n_layers(net); i++)
        if (strcmp(dpt_net_layer_name(net, i), name) == 0)
            return i;
    return -1;
}

/* Output and gradients of one TRAIN step on fixed data, into out (owned). */
static float *step(dpt_net *net, size_t *n_out)
{
    size_t np = dpt_net_n_params(net);
    float x[BATCH * 12 * 12 * 3], dy[BATCH * 5];
    dpt_rng r;
    dpt_rng_seed(&r, 99, 1);
    fill(&r, x, sizeof x / sizeof *x, 1.0f), fill(&r, dy, sizeof dy / sizeof *dy, 0.2f);
    const float *y = NULL;
    float *out = malloc((np + BATCH * 5) * sizeof *out);
    CHECK(dpt_net_forward(net, x, BATCH, DPT_MODE_TRAIN, &y) == DPT_OK);
    CHECK(dpt_net_backward(net, dy, 1) == DPT_OK);
    memcpy(out, y, BATCH * 5 * sizeof *out);
    memcpy(out + BATCH * 5, dpt_net_grads(net), np * sizeof *out);
    *n_out = np + BATCH * 5;
    return out;
}

static int read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return (int)n;
}

static void write_file(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK(fwrite(text, 1, n, f) == n);
        fclose(f);
    }
}

static void plan_tests(const char *dir)
{
    char cache[4096], text[1 << 16];
    snprintf(cache, sizeof cache, "%s/plan.txt", dir);
    setenv("DPT_PLAN_CACHE", cache, 1);
    unsetenv("DPT_CONV_ALGO");
    dpt_ops_set_kernels("auto");

    /* The heuristic reference. */
    setenv("DPT_CONV_ALGO", "heuristic", 1);
    dpt_net *net = build();
    if (!net)
        return;
    size_t n_ref = 0;
    float *ref = step(net, &n_ref);
    dpt_layer_plan p;
    CHECK(dpt_net_layer_plan(net, layer_of(net, "c2"), &p) == 1);
    CHECK(strcmp(p.source, "heuristic") == 0 && p.batch == BATCH);
    CHECK(dpt_net_layer_plan(net, layer_of(net, "b1"), &p) == 0); /* not a conv */
    dpt_net_free(net);

    /* Forced, for every algorithm name: the same results within float
     * rounding; a shape the algorithm cannot run gets GEMM, with a note. */
    for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++) {
        setenv("DPT_CONV_ALGO", dpt_conv_algo_name(a), 1);
        net = build();
        if (!net)
            continue;
        for (int i = 0; i < dpt_net_n_layers(net); i++) {
            if (!dpt_net_layer_plan(net, i, &p))
                continue;
            CHECK(strcmp(p.source, "forced") == 0);
            int runs = dpt_conv_algo_by_name(p.algo);
            CHECK_MSG(runs == a || (runs == DPT_CONV_ALGO_GEMM && strstr(p.note, "gemm")),
                      "forced %s on %s: runs %s (%s)", dpt_conv_algo_name(a),
                      dpt_net_layer_name(net, i), p.algo, p.note);
        }
        size_t n = 0;
        float *got = step(net, &n);
        char what[64];
        snprintf(what, sizeof what, "network, DPT_CONV_ALGO=%s", dpt_conv_algo_name(a));
        tu_check_close(what, got, ref, n, 1e-4);
        free(got);
        dpt_net_free(net);
    }
    /* c4's groups have 2 channels: the direct kernels refuse it. */
    setenv("DPT_CONV_ALGO", "direct", 1);
    net = build();
    if (net) {
        CHECK(dpt_net_layer_plan(net, layer_of(net, "c4"), &p) == 1);
        CHECK(strcmp(p.algo, "gemm") == 0 && strstr(p.note, "does not support"));
        dpt_net_free(net);
    }
    setenv("DPT_CONV_ALGO", "fastest-please", 1);
    net = NULL;
    CHECK(dpt_net_from_spec(net_spec, "plan test", 5, BATCH, 7, &net) != DPT_OK && !net);
    CHECK(strstr(dpt_last_error(), "DPT_CONV_ALGO") != NULL);

    /* Measured: written to the cache file, same results as the heuristic. */
    unsetenv("DPT_CONV_ALGO");
    dpt_conv_plan_forget();
    net = build();
    if (!net)
        return;
    int c2 = layer_of(net, "c2");
    CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
    int two = p.n_candidates >= 2 && p.candidates[0].ms != -1 && p.candidates[1].ms != -1;
    char first_algo[16];
    snprintf(first_algo, sizeof first_algo, "%s", p.algo);
    size_t n = 0;
    float *got = step(net, &n);
    tu_check_close("network, measured plan", got, ref, n, 1e-4);
    free(got);
    dpt_net_free(net);
    if (!two) {
        printf("  one algorithm for c2 with kernels %s: cache checks skipped\n", dpt_ops_kernels());
        return;
    }
    CHECK_MSG(strcmp(p.source, "measured") == 0, "source %s (%s)", p.source, p.note);
    CHECK(p.measure_batch >= 2 && p.measure_batch <= BATCH);
    CHECK(read_file(cache, text, sizeof text) > 0 && strstr(text, "\nv2 cpu=") != NULL);

    /* In the process: a second network (another worker) shares the choice
     * without reading the file. */
    net = build();
    if (net) {
        CHECK(dpt_net_layer_plan(net, c2, &p) == 1 && strcmp(p.source, "measured") == 0 &&
              strcmp(p.algo, first_algo) == 0);
        dpt_net_free(net);
    }
    /* A new process (forget): read from the file, same choice. */
    dpt_conv_plan_forget();
    net = build();
    if (net) {
        CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
        CHECK_MSG(strcmp(p.source, "cache") == 0 && strcmp(p.algo, first_algo) == 0,
                  "second plan: %s from %s (%s)", p.algo, p.source, p.note);
        dpt_net_free(net);
    }
    /* The file decides: c2's line edited to the other algorithm is
     * followed (so it is read, not measured again). */
    const char *other = strcmp(first_algo, "gemm") == 0 ? "direct" : "gemm";
    {
        char edited[1 << 16];
        size_t k = 0;
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char *f1 = strchr(line, ' '), *f2 = f1 ? strchr(f1 + 1, ' ') : NULL;
            char *f3 = f2 ? strchr(f2 + 1, ' ') : NULL;
            /* c2: 8 -> 8 channels, 12x12, bn on both sides */
            if (f3 && strstr(line, "conv=6,8,12,12,8,3,3,1,1,1,1;bn=11")) {
                *f2 = '\0';
                k += (size_t)snprintf(edited + k, sizeof edited - k, "%s %s%s\n", line, other, f3);
            } else {
                k += (size_t)snprintf(edited + k, sizeof edited - k, "%s\n", line);
            }
        }
        write_file(cache, edited, k);
    }
    dpt_conv_plan_forget();
    net = build();
    if (net) {
        CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
        CHECK_MSG(strcmp(p.source, "cache") == 0 && strcmp(p.algo, other) == 0,
                  "edited cache: %s from %s (%s)", p.algo, p.source, p.note);
        dpt_net_free(net);
    }

    /* Hostile cache files: garbage, a huge line, wrong fields, NUL bytes;
     * each skipped, one note, the plan measured, the file rewritten clean. */
    {
        char bad[300000];
        size_t k = 0;
        k += (size_t)snprintf(bad + k, sizeof bad - k, "\x01\x02garbage\xff\n");
        memset(bad + k, 'A', 200000), k += 200000, bad[k++] = '\n';
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v2 a b c d\n");
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v2 cpu=x;conv=1 direct -5 gemm:1\n");
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v2 cpu=x;conv=1 fastest 3 -\n");
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v2 cpu=x;conv=1 gemm 3 gemm:nan\n");
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v2 cpu=x;conv=1 gemm 3 gemm:1e300\n");
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v2 cpu x gemm 3 -\n");
        memcpy(bad + k, "v2 cpu=x\0y gemm 3 -\n", 20), k += 20;
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v3 cpu=x gemm 3 -\n");
        /* A line of the older format: its figures were of fewer images
         * than the batch; not malformed, timed again. */
        k += (size_t)snprintf(bad + k, sizeof bad - k, "v1 cpu=x;conv=1 gemm 3 gemm:1\n");
        write_file(cache, bad, k);
        dpt_conv_plan_forget();
        net = build();
        if (net) {
            CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
            CHECK_MSG(strcmp(p.source, "measured") == 0, "hostile cache: %s (%s)", p.source,
                      p.note);
            int notes = 0;
            for (int i = 0; i < dpt_net_n_layers(net); i++)
                if (dpt_net_layer_plan(net, i, &p) && strstr(p.note, "malformed lines ignored")) {
                    notes++;
                    CHECK_MSG(strstr(p.note, "10 malformed") != NULL, "%s", p.note);
                    CHECK_MSG(strstr(p.note, "1 line of format v1") != NULL, "%s", p.note);
                }
            CHECK(notes == 1); /* one note per file, not per layer */
            got = step(net, &n);
            tu_check_close("network, after a hostile cache", got, ref, n, 1e-4);
            free(got);
            dpt_net_free(net);
        }
        CHECK(read_file(cache, text, sizeof text) > 0 && !strstr(text, "garbage") &&
              !strstr(text, "AAAA") && strstr(text, "\nv2 cpu=") && !strstr(text, "\nv1 "));
    }
    /* No cache to write: the heuristic, with the reason. A folder in
     * place of the file, then a folder that does not exist. */
    {
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/a-folder", dir);
        CHECK(mkdir(sub, 0700) == 0);
        setenv("DPT_PLAN_CACHE", sub, 1);
        dpt_conv_plan_forget();
        net = build();
        if (net) {
            CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
            CHECK_MSG(strcmp(p.source, "heuristic") == 0 && strstr(p.note, "not a regular file"),
                      "%s: %s", p.source, p.note);
            dpt_net_free(net);
        }
        snprintf(sub, sizeof sub, "%s/missing/plan.txt", dir);
        setenv("DPT_PLAN_CACHE", sub, 1);
        net = build();
        if (net) {
            CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
            CHECK_MSG(strcmp(p.source, "heuristic") == 0 && strstr(p.note, "cannot"), "%s: %s",
                      p.source, p.note);
            dpt_net_free(net);
        }
        /* /dev/null: how to say "no cache"; no lock file is made beside it. */
        setenv("DPT_PLAN_CACHE", "/dev/null", 1);
        net = build();
        if (net) {
            CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
            CHECK(strcmp(p.source, "heuristic") == 0 && strstr(p.note, "not a regular file"));
            dpt_net_free(net);
        }
        struct stat st;
        CHECK(stat("/dev/null.lock", &st) != 0);
        /* Measuring on request still works without a cache (not kept). */
        setenv("DPT_CONV_ALGO", "measure", 1);
        net = build();
        if (net) {
            CHECK(dpt_net_layer_plan(net, c2, &p) == 1);
            CHECK_MSG(strcmp(p.source, "measured") == 0 && p.candidates[0].ms >= 0, "%s: %s",
                      p.source, p.note);
            size_t nm = 0;
            got = step(net, &nm);
            tu_check_close("network, DPT_CONV_ALGO=measure", got, ref, nm, 1e-4);
            free(got);
            dpt_net_free(net);
        }
        unsetenv("DPT_CONV_ALGO");
    }
    free(ref);
}

/* Local workers: threads building the same network at once share one
 * timing per shape; the file gets one line per shape. */
static void *build_thread(void *arg)
{
    dpt_net **out = arg;
    if (dpt_net_from_spec(net_spec, "plan test", 5, BATCH, 7, out) != DPT_OK)
        *out = NULL;
    return NULL;
}

static void thread_test(const char *dir)
{
    char cache[4096], text[1 << 16];
    snprintf(cache, sizeof cache, "%s/threads.txt", dir);
    setenv("DPT_PLAN_CACHE", cache, 1);
    unsetenv("DPT_CONV_ALGO");
    dpt_conv_plan_forget();
    enum { T = 4 };
    pthread_t th[T];
    dpt_net *nets[T] = {0};
    for (int t = 0; t < T; t++)
        CHECK(pthread_create(&th[t], NULL, build_thread, &nets[t]) == 0);
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++)
        CHECK(nets[t] != NULL);
    if (!nets[0])
        return;
    for (int i = 0; i < dpt_net_n_layers(nets[0]); i++) {
        dpt_layer_plan p0, p;
        if (!dpt_net_layer_plan(nets[0], i, &p0))
            continue;
        for (int t = 1; t < T; t++)
            if (nets[t]) {
                CHECK(dpt_net_layer_plan(nets[t], i, &p) == 1);
                CHECK_MSG(strcmp(p.algo, p0.algo) == 0 && strcmp(p.source, p0.source) == 0 &&
                              memcmp(p.candidates, p0.candidates, sizeof p.candidates) == 0,
                          "worker %d, %s: %s (%s) against %s (%s)", t,
                          dpt_net_layer_name(nets[0], i), p.algo, p.source, p0.algo, p0.source);
            }
    }
    for (int t = 0; t < T; t++)
        dpt_net_free(nets[t]);
    /* c1 and c2 have two candidates with AVX2/AVX-512: one line each. */
    if (read_file(cache, text, sizeof text) > 0) {
        int lines = 0;
        for (const char *q = strstr(text, "\nv2 "); q; q = strstr(q + 1, "\nv2 "))
            lines++;
        CHECK_MSG(lines <= 5, "%d lines in the cache file for 5 conv layers", lines);
        const char *c2 = "conv=6,8,12,12,8,3,3,1,1,1,1;bn=11";
        const char *first = strstr(text, c2);
        CHECK(!first || !strstr(first + 1, c2)); /* c2 timed once, by one worker */
    }
}

/* What AUTO runs when nothing was timed: direct where it applies, the
 * depthwise kernels for depthwise layers, GEMM for the rest, and GEMM for
 * everything with the generic (reference) set. */
static void heuristic_test(void)
{
    dpt_conv2d_desc plain = {.n = 4, .c_in = 16, .h = 12, .w = 12, .c_out = 16, .kh = 3,
                             .kw = 3, .stride = 1, .pad = 1};
    dpt_conv2d_desc dw = plain, tiny = plain;
    dw.groups = 16;
    tiny.groups = 8; /* 2 channels per group: direct refuses, not depthwise */
    CHECK(dpt_conv2d_desc_init(&plain) == 0 && dpt_conv2d_desc_init(&dw) == 0 &&
          dpt_conv2d_desc_init(&tiny) == 0);
    const char *saved = dpt_ops_kernels();
    if (dpt_ops_kernels_supported("avx2") && dpt_ops_set_kernels("avx2") == 0) {
        CHECK(dpt_conv_algo_heuristic(&plain) == DPT_CONV_ALGO_DIRECT);
        CHECK(dpt_conv_algo_heuristic(&dw) == DPT_CONV_ALGO_DEPTHWISE);
        CHECK(dpt_conv_algo_heuristic(&tiny) == DPT_CONV_ALGO_GEMM);
    }
    CHECK(dpt_ops_set_kernels("generic") == 0);
    CHECK(dpt_conv_algo_heuristic(&plain) == DPT_CONV_ALGO_GEMM);
    CHECK(dpt_conv_algo_heuristic(&dw) == DPT_CONV_ALGO_GEMM);
    dpt_ops_set_kernels(saved);
}

int main(void)
{
    property_test();
    heuristic_test();
    char dir[4096];
    const char *base = getenv("DPT_BINARY_DIR");
    snprintf(dir, sizeof dir, "%s/test_conv_algos.XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    plan_tests(dir);
    thread_test(dir);
    tu_remove_tree(dir);
    return tu_exit();
}
