/* The BATCHED convolution algorithm (src/ops/conv_batched.c) against a
 * naive double-precision convolution, forward (with bias) and backward
 * (dx, dw, db), for every kernel set this CPU has: strides 1-3, paddings
 * 0-2, dilations 1-2, groups (depthwise too), 1x1 filters, batches that
 * are not a multiple of the block of images (dpt_conv_batched_block) and
 * layers whose blocks hold one image; plus a batch norm applied on the fly
 * (fused: conv_batched.c applies xa and dya while lowering, and forms the
 * sums) against the GEMM algorithm, and the same bits on a second call. */
#include "dptrain/dptrain.h"
#include "ops/conv_batched.h"
#include "ops/ops.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t seed = 777u;

static float rndf(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)((seed >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *rnd(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = rndf();
    return p;
}

/* The convolution as PyTorch defines it, in double: y, and from dy the
 * gradients dx, dw, db. */
static void naive(const dpt_conv2d_desc *d, const float *x, const float *w, const float *b,
                  const float *dy, float *y, float *dx, float *dw, float *db)
{
    const int G = d->groups, cgi = d->c_in / G, cgo = d->c_out / G;
    const int oh = d->out_h, ow = d->out_w, dl = d->dilation;
    const size_t nx = (size_t)d->n * d->c_in * d->h * d->w, nw = (size_t)d->c_out * cgi * d->kh * d->kw;
    double *gx = calloc(nx, sizeof *gx), *gw = calloc(nw, sizeof *gw);
    for (int co = 0; co < d->c_out; co++) {
        double sb = 0.0;
        for (int i = 0; i < d->n; i++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    const size_t yi = (((size_t)i * d->c_out + co) * oh + oy) * ow + ox;
                    double s = b ? b[co] : 0.0;
                    const double g = dy[yi];
                    sb += g;
                    for (int c = 0; c < cgi; c++)
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                const int iy = oy * d->stride - d->pad + ki * dl;
                                const int ix = ox * d->stride - d->pad + kj * dl;
                                if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
                                    continue;
                                const int ci = co / cgo * cgi + c;
                                const size_t xi = (((size_t)i * d->c_in + ci) * d->h + iy) * d->w + ix;
                                const size_t wi = (((size_t)co * cgi + c) * d->kh + ki) * d->kw + kj;
                                s += (double)x[xi] * w[wi];
                                gx[xi] += g * w[wi];
                                gw[wi] += g * x[xi];
                            }
                    y[yi] = (float)s;
                }
        db[co] = (float)sb;
    }
    for (size_t i = 0; i < nx; i++)
        dx[i] = (float)gx[i];
    for (size_t i = 0; i < nw; i++)
        dw[i] = (float)gw[i];
    free(gx);
    free(gw);
}

typedef struct shape {
    int n, c_in, h, w, c_out, k, stride, pad, dil, groups;
} shape;

static void one(const char *set, const shape *s)
{
    dpt_conv2d_desc d = {.n = s->n, .c_in = s->c_in, .h = s->h, .w = s->w, .c_out = s->c_out,
                         .kh = s->k, .kw = s->k, .stride = s->stride, .pad = s->pad,
                         .dilation = s->dil, .groups = s->groups,
                         .algo = DPT_CONV_ALGO_BATCHED};
    if (dpt_conv2d_desc_init(&d) != 0) {
        CHECK_MSG(0, "bad test shape");
        return;
    }
    CHECK(dpt_conv_algo_resolve(&d) == DPT_CONV_ALGO_BATCHED);
    const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
    const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
    const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
    float *x = rnd(nx), *w = rnd(nw), *b = rnd(d.c_out), *dy = rnd(ny);
    float *y = rnd(ny), *dx = rnd(nx), *dw = rnd(nw), *db = rnd(d.c_out);
    float *ry = rnd(ny), *rdx = rnd(nx), *rdw = rnd(nw), *rdb = rnd(d.c_out);
    float *y2 = rnd(ny), *dx2 = rnd(nx), *dw2 = rnd(nw);
    float *work = malloc(dpt_conv2d_work_floats(&d) * sizeof *work + 64);
    naive(&d, x, w, b, dy, ry, rdx, rdw, rdb);
    dpt_conv2d_forward(&d, x, w, b, y, work);
    dpt_conv2d_backward(&d, x, w, dy, dx, dw, db, work);
    char name[160];
    snprintf(name, sizeof name, "%s n%d c%d>%d %dx%d k%d s%d p%d d%d g%d (nb %d)", set, s->n,
             s->c_in, s->c_out, s->h, s->w, s->k, s->stride, s->pad, s->dil, s->groups,
             dpt_conv_batched_block(&d));
    printf("%s\n", name);
    tu_check_close("y", y, ry, ny, 2e-5);
    tu_check_close("dx", dx, rdx, nx, 2e-5);
    tu_check_close("dw", dw, rdw, nw, 2e-5);
    tu_check_close("db", db, rdb, d.c_out, 2e-5);
    /* Same bits again (dw overwritten, not accumulated onto). */
    dpt_conv2d_forward(&d, x, w, b, y2, work);
    dpt_conv2d_backward(&d, x, w, dy, dx2, dw2, db, work);
    CHECK_MSG(memcmp(y, y2, ny * sizeof *y) == 0 && memcmp(dx, dx2, nx * sizeof *dx) == 0 &&
                  memcmp(dw, dw2, nw * sizeof *dw) == 0,
              "%s: second call differs", name);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(ry), free(rdx), free(rdw), free(rdb), free(y2), free(dx2), free(dw2), free(work);
}

/* With a batch norm + ReLU applied to the input and to the output
 * gradient: batched against the GEMM algorithm (both through conv2d.c). */
static void with_bn(const char *set, const shape *s)
{
    dpt_conv2d_desc d = {.n = s->n, .c_in = s->c_in, .h = s->h, .w = s->w, .c_out = s->c_out,
                         .kh = s->k, .kw = s->k, .stride = s->stride, .pad = s->pad,
                         .dilation = s->dil, .groups = s->groups,
                         .algo = DPT_CONV_ALGO_BATCHED};
    CHECK(dpt_conv2d_desc_init(&d) == 0);
    dpt_conv2d_desc r = d;
    r.algo = DPT_CONV_ALGO_GEMM;
    const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
    const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
    const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
    float *x = rnd(nx), *w = rnd(nw), *dy = rnd(ny), *yo = rnd(ny);
    float *pi = rnd(3 * (size_t)d.c_in), *po = rnd(6 * (size_t)d.c_out);
    for (int c = 0; c < d.c_in; c++)
        pi[d.c_in + c] = 0.5f + pi[d.c_in + c] * pi[d.c_in + c];
    dpt_bn_apply xa = {.mean = pi, .scale = pi + d.c_in, .shift = pi + 2 * d.c_in, .relu = 1};
    dpt_bn_apply ya = {.mean = po, .scale = po + d.c_out, .shift = po + 2 * d.c_out, .relu = 1,
                       .kf = po + 3 * d.c_out, .ka = po + 4 * d.c_out, .kb = po + 5 * d.c_out};
    size_t nwork = dpt_conv2d_work_floats(&d), rw = dpt_conv2d_work_floats(&r);
    float *work = malloc((nwork > rw ? nwork : rw) * sizeof *work);
    float *y[2], *dx[2], *dw[2], *db[2];
    double s1[2][16], s2[2][16], xg[2][32];
    CHECK(d.c_out <= 16 && d.c_in <= 16);
    for (int k = 0; k < 2; k++) {
        const dpt_conv2d_desc *dd = k ? &r : &d;
        y[k] = rnd(ny), dx[k] = rnd(nx), dw[k] = rnd(nw), db[k] = rnd(d.c_out);
        dpt_conv2d_forward_ex(dd, x, &xa, w, NULL, y[k], work, s1[k], s2[k]);
        dpt_conv2d_backward_ex(dd, x, &xa, w, dy, &ya, yo, dx[k], dw[k], db[k], work, xg[k]);
    }
    printf("%s n%d c%d>%d %dx%d k%d s%d g%d (nb %d), batch norm on the fly, against the gemm "
           "algorithm\n",
           set, d.n, d.c_in, d.c_out, d.h, d.w, d.kh, d.stride, d.groups,
           dpt_conv_batched_block(&d));
    tu_check_close("y", y[0], y[1], ny, 2e-5);
    tu_check_close("dx", dx[0], dx[1], nx, 2e-5);
    tu_check_close("dw", dw[0], dw[1], nw, 2e-5);
    tu_check_close("db", db[0], db[1], d.c_out, 2e-5);
    for (int c = 0; c < d.c_out; c++)
        CHECK(fabs(s1[0][c] - s1[1][c]) <= 1e-4 * (1 + fabs(s1[1][c])) &&
              fabs(s2[0][c] - s2[1][c]) <= 1e-4 * (1 + fabs(s2[1][c])));
    for (int c = 0; c < 2 * d.c_in; c++)
        CHECK(fabs(xg[0][c] - xg[1][c]) <= 1e-4 * (1 + fabs(xg[1][c])));
    for (int k = 0; k < 2; k++)
        free(y[k]), free(dx[k]), free(dw[k]), free(db[k]);
    free(x), free(w), free(dy), free(yo), free(pi), free(po), free(work);
}

int main(void)
{
    static const shape shapes[] = {
        {3, 4, 8, 8, 6, 3, 1, 1, 1, 1},     /* plain 3x3, one block */
        {37, 3, 5, 6, 5, 3, 2, 1, 1, 1},    /* P 9: one block of many images */
        {13, 2, 20, 20, 3, 3, 1, 1, 1, 1},  /* P 400: blocks of 6, 6 and 1 */
        {4, 6, 11, 9, 9, 3, 3, 2, 2, 3},    /* stride 3, pad 2, dilation 2, 3 groups */
        {5, 8, 7, 7, 8, 3, 2, 1, 1, 8},     /* depthwise, stride 2 */
        {6, 16, 6, 6, 33, 1, 1, 0, 1, 1},   /* 1x1 */
        {3, 10, 9, 9, 12, 1, 2, 0, 1, 2},   /* 1x1 stride 2, 2 groups */
        {3, 5, 17, 17, 7, 1, 1, 0, 1, 1},   /* 1x1, one image per block: x is col */
        {2, 6, 16, 16, 4, 1, 1, 0, 1, 2},   /* the same, 2 groups */
        {2, 3, 50, 50, 4, 5, 1, 2, 1, 1},   /* P 2500: one image per block */
        {9, 20, 4, 4, 30, 2, 1, 0, 2, 1},   /* even kernel, dilation 2, P 4 */
        {2, 300, 4, 4, 7, 3, 1, 1, 1, 1},   /* wide input: K 2700 past the GEMM's KC */
    };
    static const char *const sets[] = {"generic", "avx2", "avx512"};
    for (int k = 0; k < 3; k++) {
        if (!dpt_ops_kernels_supported(sets[k])) {
            printf("%s kernels not on this CPU, skipped\n", sets[k]);
            continue;
        }
        CHECK(dpt_ops_set_kernels(sets[k]) == 0);
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            one(sets[k], &shapes[i]);
        static const shape bn_shapes[] = {
            {5, 6, 9, 7, 8, 3, 2, 1, 1, 1},   /* blocks of several images */
            {3, 4, 20, 20, 5, 3, 1, 1, 1, 1}, /* one image per block: dy transformed in place */
            {2, 6, 17, 17, 4, 1, 1, 0, 1, 2}, /* 1x1, one image, 2 groups: x transformed */
        };
        for (size_t i = 0; i < sizeof bn_shapes / sizeof *bn_shapes; i++)
            with_bn(sets[k], &bn_shapes[i]);
    }
    dpt_ops_set_kernels("auto");
    return tu_exit();
}
