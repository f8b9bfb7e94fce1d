/* Kernels in src/ops against PyTorch and against finite differences.
 *
 * 1. Reference: every case in tests/fixtures/ops_*.safetensors (made by
 *    make_ops_fixtures.py, float64 PyTorch on float32 inputs) is run through
 *    the kernels; each output and gradient must match with
 *      max_i |got_i - ref_i| / max_i |ref_i|  <  1e-5      (tu_rel_err)
 *    and losses with |got - ref| / |ref| < 1e-5.
 * 2. Finite differences on L = Σ y·r (r random), in float64 arithmetic over
 *    the float32 kernels: central differences on up to 30 random coordinates
 *    of each input and parameter, passing when
 *      |fd - g| <= 1e-2 · max(|g|, 0.1 · max_j |g_j|)
 *    (the floor keeps near-zero gradient entries from failing on float32
 *    noise in L).
 *
 * Set DPT_OPS_BENCH=1 to also time the example network's first two
 * convolutions (a measurement, not a test). */
#include "core/safetensors.h"
#include "dptrain/core.h"
#include "ops/conv_direct.h"
#include "ops/ops.h"
#include "ops/pool_isa.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REF_TOL 1e-5
#define FD_TOL 1e-2
#define FD_COORDS 30

/* Worst errors seen per kind of check, for the summary line. */
static double worst_ref, worst_loss, worst_fd;

static void note(double *worst, double e)
{
    if (e > *worst || e != e)
        *worst = e;
}

/* ---- fixture access ------------------------------------------------------ */

static const dpt_st_tensor *find(const dpt_st *st, const char *cs, const char *name)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    return dpt_st_get(st, key);
}

static size_t numel(const dpt_st_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

/* A malloc'd copy of F32 tensor "<cs>/<name>", or NULL when absent. A
 * present tensor of the wrong type fails the test. */
static float *load(const dpt_st *st, const char *cs, const char *name, size_t *n_out)
{
    const dpt_st_tensor *t = find(st, cs, name);
    if (!t)
        return NULL;
    size_t n = numel(t);
    float *p = malloc((n ? n : 1) * sizeof *p);
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    dpt_status s = dpt_st_read_f32(st, key, p, n);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (n_out)
        *n_out = n;
    return p;
}

/* load() for a tensor that must exist; aborts the case otherwise. */
static float *need(const dpt_st *st, const char *cs, const char *name, size_t *n_out)
{
    float *p = load(st, cs, name, n_out);
    CHECK_MSG(p != NULL, "fixture lacks %s/%s", cs, name);
    return p;
}

static double need_f64(const dpt_st *st, const char *cs, const char *name)
{
    const dpt_st_tensor *t = find(st, cs, name);
    CHECK_MSG(t && strcmp(t->dtype, "F64") == 0 && t->bytes == 8, "fixture lacks F64 %s/%s", cs,
              name);
    double v = NAN;
    if (t && t->bytes == 8)
        memcpy(&v, t->data, 8);
    return v;
}

static const char *meta(const dpt_st *st, const char *cs, const char *key)
{
    char k[256];
    snprintf(k, sizeof k, "%s/%s", cs, key);
    const char *v = dpt_st_meta(st, k);
    CHECK_MSG(v != NULL, "fixture lacks metadata %s", k);
    return v ? v : "0";
}

/* A buffer of NaN, so an output the kernel fails to write shows up. */
static float *fill_nan(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

static void cmp(const char *cs, const char *what, const float *got, const float *ref, size_t n)
{
    char label[256];
    snprintf(label, sizeof label, "%s %s", cs, what);
    note(&worst_ref, tu_check_close(label, got, ref, n, REF_TOL));
}

static void cmp_loss(const char *cs, double got, double ref)
{
    double e = fabs(got - ref) / fmax(fabs(ref), 1e-30);
    note(&worst_loss, e);
    int ok = e <= REF_TOL;
    printf("  %-40s rel err %.3e (tol %.0e) %s  [got %.10g, want %.10g]\n", cs, e, REF_TOL,
           ok ? "ok" : "FAIL", got, ref);
    if (!ok)
        ++*tu_failures();
}

typedef void (*case_fn)(const dpt_st *st, const char *cs);

/* Run fn on every case listed in the "cases" metadata of a fixture file. */
static void for_each_case(const char *file, case_fn fn)
{
    char path[1024];
    tu_fixture(file, path, sizeof path);
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(path, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    const char *list = dpt_st_meta(st, "cases");
    CHECK_MSG(list && *list, "%s: no \"cases\" metadata", path);
    printf("%s\n", file);
    char *copy = strdup(list ? list : "");
    char *save = NULL;
    int n = 0;
    for (char *cs = strtok_r(copy, ",", &save); cs; cs = strtok_r(NULL, ",", &save), n++)
        fn(st, cs);
    CHECK_MSG(n > 0, "%s: no cases", path);
    free(copy);
    dpt_st_close(st);
}

/* ---- reference cases ----------------------------------------------------- */

static void conv_case(const dpt_st *st, const char *cs)
{
    const dpt_st_tensor *tx = find(st, cs, "x"), *tw = find(st, cs, "w"), *ty = find(st, cs, "y");
    CHECK(tx && tw && ty && tx->ndim == 4 && tw->ndim == 4 && ty->ndim == 4);
    if (!(tx && tw && ty))
        return;
    dpt_conv2d_desc d = {.n = (int)tx->shape[0], .c_in = (int)tx->shape[1],
                         .h = (int)tx->shape[2], .w = (int)tx->shape[3],
                         .c_out = (int)tw->shape[0], .kh = (int)tw->shape[2],
                         .kw = (int)tw->shape[3], .stride = atoi(meta(st, cs, "stride")),
                         .pad = atoi(meta(st, cs, "pad"))};
    /* ops_conv_dg's cases; ops_conv2d's have neither (1). */
    char key[256];
    snprintf(key, sizeof key, "%s/dilation", cs);
    if (dpt_st_meta(st, key))
        d.dilation = atoi(dpt_st_meta(st, key));
    snprintf(key, sizeof key, "%s/groups", cs);
    if (dpt_st_meta(st, key))
        d.groups = atoi(dpt_st_meta(st, key));
    CHECK(dpt_conv2d_desc_init(&d) == 0);
    CHECK(tw->shape[1] == d.c_in / d.groups);
    CHECK(d.out_h == ty->shape[2] && d.out_w == ty->shape[3]);

    size_t nx, nw, ny, nb = 0;
    float *x = need(st, cs, "x", &nx), *w = need(st, cs, "w", &nw);
    float *b = load(st, cs, "b", &nb);
    float *dy = need(st, cs, "dy", &ny), *y_ref = need(st, cs, "y", NULL);
    float *dx_ref = need(st, cs, "dx", NULL), *dw_ref = need(st, cs, "dw", NULL);
    float *db_ref = b ? need(st, cs, "db", NULL) : NULL;
    size_t nwork = dpt_conv2d_work_floats(&d);
    float *work = fill_nan(nwork);
    float *y = fill_nan(ny), *dx = fill_nan(nx), *dw = fill_nan(nw);
    float *db = b ? fill_nan(nb) : NULL;

    dpt_conv2d_forward(&d, x, w, b, y, work);
    cmp(cs, "y", y, y_ref, ny);
    dpt_conv2d_backward(&d, x, w, dy, dx, dw, db, work);
    cmp(cs, "dx", dx, dx_ref, nx);
    cmp(cs, "dw", dw, dw_ref, nw);
    if (b)
        cmp(cs, "db", db, db_ref, nb);

    /* Without dx and db (a first layer), dw must come out the same bits. */
    float *dw2 = fill_nan(nw);
    dpt_conv2d_backward(&d, x, w, dy, NULL, dw2, NULL, work);
    CHECK_MSG(memcmp(dw, dw2, nw * sizeof *dw) == 0, "%s: dw differs without dx", cs);

    free(x), free(w), free(b), free(dy), free(y_ref), free(dx_ref), free(dw_ref), free(db_ref);
    free(work), free(y), free(dx), free(dw), free(db), free(dw2);
}

/* mean, biased var and invstd from the kernel's float64 sums, as the net
 * layer does. */
static void bn_stats(const float *x, int n, int c, int hw, double eps, float *mean, float *var,
                     float *invstd)
{
    double *sum = malloc(c * sizeof *sum), *sumsq = malloc(c * sizeof *sumsq);
    dpt_bn_sums(x, n, c, hw, sum, sumsq);
    double count = (double)n * hw;
    for (int ch = 0; ch < c; ch++) {
        double m = sum[ch] / count;
        double v = sumsq[ch] / count - m * m;
        if (v < 0)
            v = 0;
        mean[ch] = (float)m;
        if (var)
            var[ch] = (float)v;
        invstd[ch] = (float)(1.0 / sqrt(v + eps));
    }
    free(sum), free(sumsq);
}

static void bn_case(const dpt_st *st, const char *cs)
{
    const dpt_st_tensor *tx = find(st, cs, "x");
    CHECK(tx && tx->ndim == 4);
    if (!tx)
        return;
    const int n = (int)tx->shape[0], c = (int)tx->shape[1];
    const int hw = (int)(tx->shape[2] * tx->shape[3]);
    const double eps = atof(meta(st, cs, "eps")), mom = atof(meta(st, cs, "momentum"));
    size_t nx;
    float *x = need(st, cs, "x", &nx), *dy = need(st, cs, "dy", NULL);
    float *gamma = need(st, cs, "gamma", NULL), *beta = need(st, cs, "beta", NULL);
    float *rm_in = need(st, cs, "running_mean_in", NULL);
    float *rv_in = need(st, cs, "running_var_in", NULL);
    float *y_ref = need(st, cs, "y", NULL), *dx_ref = need(st, cs, "dx", NULL);
    float *dgamma_ref = need(st, cs, "dgamma", NULL), *dbeta_ref = need(st, cs, "dbeta", NULL);
    float *mean_ref = need(st, cs, "mean", NULL), *var_ref = need(st, cs, "var", NULL);
    float *rm_ref = need(st, cs, "running_mean", NULL), *rv_ref = need(st, cs, "running_var", NULL);

    float *mean = fill_nan(c), *var = fill_nan(c), *invstd = fill_nan(c);
    bn_stats(x, n, c, hw, eps, mean, var, invstd);
    cmp(cs, "batch mean", mean, mean_ref, c);
    cmp(cs, "batch var (biased)", var, var_ref, c);

    float *y = fill_nan(nx);
    dpt_bn_normalize(x, n, c, hw, mean, invstd, gamma, beta, y);
    cmp(cs, "y", y, y_ref, nx);

    double *sum_dy = malloc(c * sizeof *sum_dy), *sum_dy_xhat = malloc(c * sizeof *sum_dy_xhat);
    dpt_bn_backward_sums(x, dy, n, c, hw, mean, invstd, sum_dy, sum_dy_xhat);
    float *dgamma = fill_nan(c), *dbeta = fill_nan(c);
    for (int ch = 0; ch < c; ch++) {
        dgamma[ch] = (float)sum_dy_xhat[ch];
        dbeta[ch] = (float)sum_dy[ch];
    }
    cmp(cs, "dgamma", dgamma, dgamma_ref, c);
    cmp(cs, "dbeta", dbeta, dbeta_ref, c);
    float *dx = fill_nan(nx);
    dpt_bn_backward_dx(x, dy, n, c, hw, mean, invstd, gamma, sum_dy, sum_dy_xhat,
                       (double)n * hw, dx);
    cmp(cs, "dx", dx, dx_ref, nx);

    /* The running update the net layer applies once per iteration:
     * running = (1-m)·running + m·batch, variance unbiased (× M/(M-1)). */
    const double M = (double)n * hw;
    float *rm = fill_nan(c), *rv = fill_nan(c);
    for (int ch = 0; ch < c; ch++) {
        rm[ch] = (float)((1 - mom) * rm_in[ch] + mom * mean[ch]);
        rv[ch] = (float)((1 - mom) * rv_in[ch] + mom * var[ch] * M / (M - 1));
    }
    cmp(cs, "running mean", rm, rm_ref, c);
    cmp(cs, "running var", rv, rv_ref, c);

    free(x), free(dy), free(gamma), free(beta), free(rm_in), free(rv_in), free(y_ref);
    free(dx_ref), free(dgamma_ref), free(dbeta_ref), free(mean_ref), free(var_ref), free(rm_ref);
    free(rv_ref), free(mean), free(var), free(invstd), free(y), free(sum_dy), free(sum_dy_xhat);
    free(dgamma), free(dbeta), free(dx), free(rm), free(rv);
}

static void relu_case(const dpt_st *st, const char *cs)
{
    size_t n;
    float *x = need(st, cs, "x", &n), *dy = need(st, cs, "dy", NULL);
    float *y_ref = need(st, cs, "y", NULL), *dx_ref = need(st, cs, "dx", NULL);
    float *y = fill_nan(n), *dx = fill_nan(n);
    dpt_relu_forward(x, y, n);
    cmp(cs, "y", y, y_ref, n);
    dpt_relu_backward(y, dy, dx, n);
    cmp(cs, "dx", dx, dx_ref, n);
    /* In place (dx == dy). */
    dpt_relu_backward(y, dy, dy, n);
    CHECK_MSG(memcmp(dy, dx, n * sizeof *dx) == 0, "%s: in-place backward differs", cs);
    free(x), free(dy), free(y_ref), free(dx_ref), free(y), free(dx);
}

static void linear_case(const dpt_st *st, const char *cs)
{
    const dpt_st_tensor *tx = find(st, cs, "x"), *tw = find(st, cs, "w");
    CHECK(tx && tw && tx->ndim == 2 && tw->ndim == 2);
    if (!(tx && tw))
        return;
    const int n = (int)tx->shape[0], in = (int)tx->shape[1], out = (int)tw->shape[0];
    size_t nx, nw, ny, nb = 0;
    float *x = need(st, cs, "x", &nx), *w = need(st, cs, "w", &nw), *b = load(st, cs, "b", &nb);
    float *dy = need(st, cs, "dy", &ny), *y_ref = need(st, cs, "y", NULL);
    float *dx_ref = need(st, cs, "dx", NULL), *dw_ref = need(st, cs, "dw", NULL);
    float *db_ref = b ? need(st, cs, "db", NULL) : NULL;
    float *y = fill_nan(ny), *dx = fill_nan(nx), *dw = fill_nan(nw);
    float *db = b ? fill_nan(nb) : NULL;
    dpt_linear_forward(x, w, b, y, n, in, out);
    cmp(cs, "y", y, y_ref, ny);
    dpt_linear_backward(x, w, dy, dx, dw, db, n, in, out);
    cmp(cs, "dx", dx, dx_ref, nx);
    cmp(cs, "dw", dw, dw_ref, nw);
    if (b)
        cmp(cs, "db", db, db_ref, nb);
    float *dw2 = fill_nan(nw);
    dpt_linear_backward(x, w, dy, NULL, dw2, NULL, n, in, out);
    CHECK_MSG(memcmp(dw, dw2, nw * sizeof *dw) == 0, "%s: dw differs without dx", cs);
    free(x), free(w), free(b), free(dy), free(y_ref), free(dx_ref), free(dw_ref), free(db_ref);
    free(y), free(dx), free(dw), free(db), free(dw2);
}

static void loss_case(const dpt_st *st, const char *cs)
{
    const char *kind = meta(st, cs, "kind");
    const double loss_ref = need_f64(st, cs, "loss");
    if (strcmp(kind, "xent") == 0) {
        const dpt_st_tensor *tl = find(st, cs, "logits");
        CHECK(tl && tl->ndim == 2);
        if (!tl)
            return;
        const int n = (int)tl->shape[0], k = (int)tl->shape[1];
        size_t nl;
        float *logits = need(st, cs, "logits", &nl), *t = need(st, cs, "t", NULL);
        float *p_ref = need(st, cs, "p", NULL), *dl_ref = need(st, cs, "dlogits", NULL);
        float *p = fill_nan(nl), *dl = fill_nan(nl), *dl_half = fill_nan(nl);
        dpt_softmax_forward(logits, p, n, k);
        cmp(cs, "p", p, p_ref, nl);
        double loss = dpt_softmax_xent(p, t, n, k, 1.0f, dl);
        cmp_loss(cs, loss, loss_ref);
        cmp(cs, "dlogits", dl, dl_ref, nl);
        /* scale weights the gradient only; the loss comes back unscaled. */
        double loss2 = dpt_softmax_xent(p, t, n, k, 0.5f, dl_half);
        CHECK(loss2 == loss);
        for (size_t i = 0; i < nl; i++)
            dl[i] *= 0.5f;
        CHECK_MSG(tu_rel_err(dl_half, dl, nl, NULL) < 1e-6, "%s: scale 0.5", cs);
        CHECK(dpt_softmax_xent(p, t, n, k, 1.0f, NULL) == loss);
        free(logits), free(t), free(p_ref), free(dl_ref), free(p), free(dl), free(dl_half);
    } else if (strcmp(kind, "mse") == 0) {
        const dpt_st_tensor *ty = find(st, cs, "y");
        CHECK(ty && ty->ndim == 2);
        if (!ty)
            return;
        const int n = (int)ty->shape[0], k = (int)ty->shape[1];
        size_t ny;
        float *y = need(st, cs, "y", &ny), *t = need(st, cs, "t", NULL);
        float *dy_ref = need(st, cs, "dy", NULL), *dy = fill_nan(ny);
        double loss = dpt_mse(y, t, n, k, 1.0f, dy);
        cmp_loss(cs, loss, loss_ref);
        cmp(cs, "dy", dy, dy_ref, ny);
        CHECK(dpt_mse(y, t, n, k, 1.0f, NULL) == loss);
        free(y), free(t), free(dy_ref), free(dy);
    } else {
        CHECK_MSG(0, "%s: unknown loss kind %s", cs, kind);
    }
}

/* ---- finite differences ------------------------------------------------- */

typedef double (*objective)(void *ctx); /* L at the current inputs */

static void fill_normal(dpt_rng *rng, float *p, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * dpt_rng_normal(rng);
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Central differences of f with respect to `param` (n floats, perturbed in
 * place and restored) at up to FD_COORDS random coordinates, against the
 * analytic gradient `grad`. */
static void fd_check(const char *label, float *param, const float *grad, size_t n, objective f,
                     void *ctx, float h, dpt_rng *rng)
{
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(grad[i]));
    const size_t m = n < FD_COORDS ? n : FD_COORDS;
    double worst = 0.0;
    size_t worst_i = 0;
    double fd_at_worst = 0.0;
    for (size_t j = 0; j < m; j++) {
        size_t i = n <= FD_COORDS ? j : dpt_rng_below(rng, (uint32_t)n);
        const float v = param[i];
        const float vp = v + h, vm = v - h;
        param[i] = vp;
        double lp = f(ctx);
        param[i] = vm;
        double lm = f(ctx);
        param[i] = v;
        /* Divide by the step actually taken after float rounding. */
        double fd = (lp - lm) / ((double)vp - (double)vm);
        double e = fabs(fd - grad[i]) / fmax(fmax(fabs(grad[i]), 0.1 * gmax), 1e-30);
        if (e > worst || e != e) {
            worst = e;
            worst_i = i;
            fd_at_worst = fd;
        }
    }
    note(&worst_fd, worst);
    int ok = worst <= FD_TOL;
    printf("  %-40s fd err  %.3e (tol %.0e) %s", label, worst, FD_TOL, ok ? "ok" : "FAIL");
    if (!ok)
        printf("  [at %zu: fd %.7g, analytic %.7g]", worst_i, fd_at_worst, (double)grad[worst_i]);
    printf("\n");
    if (!ok)
        ++*tu_failures();
}

typedef struct conv_ctx {
    dpt_conv2d_desc d;
    float *x, *w, *b, *y, *r, *work;
    size_t ny;
} conv_ctx;

static double conv_objective(void *p)
{
    conv_ctx *c = p;
    dpt_conv2d_forward(&c->d, c->x, c->w, c->b, c->y, c->work);
    return dot(c->y, c->r, c->ny);
}

static void fd_conv_dg(dpt_rng *rng, int n, int c_in, int h, int w, int c_out, int k, int stride,
                       int pad, int dilation, int groups)
{
    conv_ctx c = {.d = {.n = n, .c_in = c_in, .h = h, .w = w, .c_out = c_out, .kh = k, .kw = k,
                        .stride = stride, .pad = pad, .dilation = dilation, .groups = groups}};
    CHECK(dpt_conv2d_desc_init(&c.d) == 0);
    const size_t nx = (size_t)n * c_in * h * w, nw = (size_t)c_out * (c_in / groups) * k * k;
    c.ny = (size_t)n * c_out * c.d.out_h * c.d.out_w;
    c.x = malloc(nx * sizeof(float));
    c.w = malloc(nw * sizeof(float));
    c.b = malloc(c_out * sizeof(float));
    c.y = malloc(c.ny * sizeof(float));
    c.r = malloc(c.ny * sizeof(float));
    c.work = fill_nan(dpt_conv2d_work_floats(&c.d));
    fill_normal(rng, c.x, nx, 1.0f);
    fill_normal(rng, c.w, nw, 0.5f);
    fill_normal(rng, c.b, c_out, 1.0f);
    fill_normal(rng, c.r, c.ny, 1.0f);
    float *dx = fill_nan(nx), *dw = fill_nan(nw), *db = fill_nan(c_out);
    /* dL/dy = r */
    dpt_conv2d_backward(&c.d, c.x, c.w, c.r, dx, dw, db, c.work);
    char label[128];
    snprintf(label, sizeof label, "conv n%d c%d-%d %dx%d k%d s%d p%d d%d g%d", n, c_in, c_out, h,
             w, k, stride, pad, dilation, groups);
    printf("%s\n", label);
    fd_check("  dx", c.x, dx, nx, conv_objective, &c, 1e-2f, rng);
    fd_check("  dw", c.w, dw, nw, conv_objective, &c, 1e-2f, rng);
    fd_check("  db", c.b, db, c_out, conv_objective, &c, 1e-2f, rng);
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(c.work);
    free(dx), free(dw), free(db);
}

static void fd_conv(dpt_rng *rng, int n, int c_in, int h, int w, int c_out, int k, int stride,
                    int pad)
{
    fd_conv_dg(rng, n, c_in, h, w, c_out, k, stride, pad, 1, 1);
}

typedef struct bn_ctx {
    int n, c, hw;
    double eps;
    float *x, *gamma, *beta, *y, *r, *mean, *invstd;
} bn_ctx;

/* The whole training-mode forward: the batch statistics move with x. */
static double bn_objective(void *p)
{
    bn_ctx *b = p;
    bn_stats(b->x, b->n, b->c, b->hw, b->eps, b->mean, NULL, b->invstd);
    dpt_bn_normalize(b->x, b->n, b->c, b->hw, b->mean, b->invstd, b->gamma, b->beta, b->y);
    return dot(b->y, b->r, (size_t)b->n * b->c * b->hw);
}

static void fd_bn(dpt_rng *rng, int n, int c, int hw)
{
    bn_ctx b = {.n = n, .c = c, .hw = hw, .eps = 1e-5};
    const size_t nx = (size_t)n * c * hw;
    b.x = malloc(nx * sizeof(float));
    b.y = malloc(nx * sizeof(float));
    b.r = malloc(nx * sizeof(float));
    b.gamma = malloc(c * sizeof(float));
    b.beta = malloc(c * sizeof(float));
    b.mean = malloc(c * sizeof(float));
    b.invstd = malloc(c * sizeof(float));
    fill_normal(rng, b.x, nx, 1.0f);
    fill_normal(rng, b.r, nx, 1.0f);
    for (int i = 0; i < c; i++) {
        b.gamma[i] = 1.0f + 0.5f * dpt_rng_normal(rng);
        b.beta[i] = 0.5f * dpt_rng_normal(rng);
    }
    bn_objective(&b);
    double *sum_dy = malloc(c * sizeof *sum_dy), *sum_dy_xhat = malloc(c * sizeof *sum_dy_xhat);
    float *dx = fill_nan(nx), *dgamma = fill_nan(c), *dbeta = fill_nan(c);
    dpt_bn_backward_sums(b.x, b.r, n, c, hw, b.mean, b.invstd, sum_dy, sum_dy_xhat);
    dpt_bn_backward_dx(b.x, b.r, n, c, hw, b.mean, b.invstd, b.gamma, sum_dy, sum_dy_xhat,
                       (double)n * hw, dx);
    for (int i = 0; i < c; i++) {
        dgamma[i] = (float)sum_dy_xhat[i];
        dbeta[i] = (float)sum_dy[i];
    }
    printf("batchnorm n%d c%d hw%d\n", n, c, hw);
    fd_check("  dx", b.x, dx, nx, bn_objective, &b, 1e-2f, rng);
    fd_check("  dgamma", b.gamma, dgamma, c, bn_objective, &b, 1e-2f, rng);
    fd_check("  dbeta", b.beta, dbeta, c, bn_objective, &b, 1e-2f, rng);
    free(b.x), free(b.y), free(b.r), free(b.gamma), free(b.beta), free(b.mean), free(b.invstd);
    free(sum_dy), free(sum_dy_xhat), free(dx), free(dgamma), free(dbeta);
}

typedef struct lin_ctx {
    int n, in, out;
    float *x, *w, *b, *y, *r;
} lin_ctx;

static double lin_objective(void *p)
{
    lin_ctx *l = p;
    dpt_linear_forward(l->x, l->w, l->b, l->y, l->n, l->in, l->out);
    return dot(l->y, l->r, (size_t)l->n * l->out);
}

static void fd_linear(dpt_rng *rng, int n, int in, int out)
{
    lin_ctx l = {.n = n, .in = in, .out = out};
    const size_t nx = (size_t)n * in, nw = (size_t)out * in, ny = (size_t)n * out;
    l.x = malloc(nx * sizeof(float));
    l.w = malloc(nw * sizeof(float));
    l.b = malloc(out * sizeof(float));
    l.y = malloc(ny * sizeof(float));
    l.r = malloc(ny * sizeof(float));
    fill_normal(rng, l.x, nx, 1.0f);
    fill_normal(rng, l.w, nw, 0.3f);
    fill_normal(rng, l.b, out, 1.0f);
    fill_normal(rng, l.r, ny, 1.0f);
    float *dx = fill_nan(nx), *dw = fill_nan(nw), *db = fill_nan(out);
    dpt_linear_backward(l.x, l.w, l.r, dx, dw, db, n, in, out);
    printf("linear n%d %d-%d\n", n, in, out);
    fd_check("  dx", l.x, dx, nx, lin_objective, &l, 1e-2f, rng);
    fd_check("  dw", l.w, dw, nw, lin_objective, &l, 1e-2f, rng);
    fd_check("  db", l.b, db, out, lin_objective, &l, 1e-2f, rng);
    free(l.x), free(l.w), free(l.b), free(l.y), free(l.r), free(dx), free(dw), free(db);
}

typedef struct xent_ctx {
    int n, k;
    float *logits, *t, *p;
} xent_ctx;

/* Here L is the loss itself. */
static double xent_objective(void *ctx)
{
    xent_ctx *x = ctx;
    dpt_softmax_forward(x->logits, x->p, x->n, x->k);
    return dpt_softmax_xent(x->p, x->t, x->n, x->k, 1.0f, NULL);
}

static void fd_xent(dpt_rng *rng, int n, int k, int soft)
{
    xent_ctx x = {.n = n, .k = k};
    const size_t nl = (size_t)n * k;
    x.logits = malloc(nl * sizeof(float));
    x.t = calloc(nl, sizeof(float));
    x.p = malloc(nl * sizeof(float));
    fill_normal(rng, x.logits, nl, 2.0f);
    for (int i = 0; i < n; i++) {
        if (soft) {
            float *ti = x.t + (size_t)i * k;
            double s = 0.0;
            for (int j = 0; j < k; j++)
                s += ti[j] = dpt_rng_uniform(rng) + 0.01f;
            for (int j = 0; j < k; j++)
                ti[j] = (float)(ti[j] / s);
        } else {
            x.t[(size_t)i * k + dpt_rng_below(rng, (uint32_t)k)] = 1.0f;
        }
    }
    float *dl = fill_nan(nl);
    dpt_softmax_forward(x.logits, x.p, n, k);
    dpt_softmax_xent(x.p, x.t, n, k, 1.0f, dl);
    char label[128];
    snprintf(label, sizeof label, "softmax_xent n%d k%d %s: dlogits", n, k,
             soft ? "soft" : "one-hot");
    fd_check(label, x.logits, dl, nl, xent_objective, &x, 1e-2f, rng);
    free(x.logits), free(x.t), free(x.p), free(dl);
}

/* ---- pooling, activations, dropout (PR 19's layers) ----------------------- */

static int meta_int(const dpt_st *st, const char *cs, const char *key)
{
    return atoi(meta(st, cs, key));
}

static void pool_case(const dpt_st *st, const char *cs)
{
    const dpt_st_tensor *tx = find(st, cs, "x"), *ty = find(st, cs, "y");
    CHECK(tx && ty && tx->ndim == 4 && ty->ndim == 4);
    if (!(tx && ty))
        return;
    const char *kind = meta(st, cs, "kind");
    const int n = (int)tx->shape[0], c = (int)tx->shape[1], h = (int)tx->shape[2],
              w = (int)tx->shape[3];
    size_t nx, ny;
    float *x = need(st, cs, "x", &nx), *dy = need(st, cs, "dy", &ny);
    float *y_ref = need(st, cs, "y", NULL), *dx_ref = need(st, cs, "dx", NULL);
    float *y = fill_nan(ny), *dx = fill_nan(nx);
    if (strcmp(kind, "global") == 0) {
        CHECK(ny == (size_t)n * c);
        dpt_global_avgpool_forward(x, y, n, c, h * w);
        dpt_global_avgpool_backward(dy, dx, n, c, h * w);
    } else {
        dpt_pool2d_desc d = {.n = n, .c = c, .h = h, .w = w, .kh = meta_int(st, cs, "kh"),
                             .kw = meta_int(st, cs, "kw"), .sh = meta_int(st, cs, "sh"),
                             .sw = meta_int(st, cs, "sw"), .ph = meta_int(st, cs, "ph"),
                             .pw = meta_int(st, cs, "pw")};
        CHECK(dpt_pool2d_desc_init(&d) == 0);
        CHECK(d.out_h == ty->shape[2] && d.out_w == ty->shape[3]);
        if (strcmp(kind, "max") == 0) {
            dpt_maxpool2d_forward(&d, x, y);
            dpt_maxpool2d_backward(&d, x, dy, dx);
        } else {
            CHECK(strcmp(kind, "avg") == 0);
            dpt_avgpool2d_forward(&d, x, y);
            dpt_avgpool2d_backward(&d, dy, dx);
        }
    }
    cmp(cs, "y", y, y_ref, ny);
    cmp(cs, "dx", dx, dx_ref, nx);
    free(x), free(dy), free(y_ref), free(dx_ref), free(y), free(dx);
}

static void act_case(const dpt_st *st, const char *cs)
{
    const char *kind = meta(st, cs, "kind");
    size_t n;
    float *x = need(st, cs, "x", &n), *dy = need(st, cs, "dy", NULL);
    float *y_ref = need(st, cs, "y", NULL), *dx_ref = need(st, cs, "dx", NULL);
    float *y = fill_nan(n), *dx = fill_nan(n);
    if (strcmp(kind, "leakyrelu") == 0) {
        float alpha = strtof(meta(st, cs, "alpha"), NULL);
        dpt_leakyrelu_forward(x, y, n, alpha);
        dpt_leakyrelu_backward(x, dy, dx, n, alpha);
    } else if (strcmp(kind, "sigmoid") == 0) {
        dpt_sigmoid_forward(x, y, n);
        dpt_sigmoid_backward(y, dy, dx, n);
    } else {
        CHECK(strcmp(kind, "tanh") == 0);
        dpt_tanh_forward(x, y, n);
        dpt_tanh_backward(y, dy, dx, n);
    }
    cmp(cs, "y", y, y_ref, n);
    cmp(cs, "dx", dx, dx_ref, n);
    /* In place (dx == dy), as the header allows. */
    memcpy(dx, dy, n * sizeof *dx);
    if (strcmp(kind, "leakyrelu") == 0)
        dpt_leakyrelu_backward(x, dx, dx, n, strtof(meta(st, cs, "alpha"), NULL));
    else if (strcmp(kind, "sigmoid") == 0)
        dpt_sigmoid_backward(y, dx, dx, n);
    else
        dpt_tanh_backward(y, dx, dx, n);
    cmp(cs, "dx in place", dx, dx_ref, n);
    free(x), free(dy), free(y_ref), free(dx_ref), free(y), free(dx);
}

static uint64_t meta_u64(const dpt_st *st, const char *cs, const char *key)
{
    return strtoull(meta(st, cs, key), NULL, 10);
}

/* The mask drawn by the C key function must be the fixture's (drawn in
 * Python from the same definition), element for element. */
static void dropout_case(const dpt_st *st, const char *cs)
{
    if (strcmp(cs, "keys") == 0)
        return; /* dropout_keys() */
    const dpt_st_tensor *tx = find(st, cs, "x");
    CHECK(tx && tx->ndim == 4);
    if (!tx)
        return;
    const int n = (int)tx->shape[0];
    const size_t per = (size_t)tx->shape[1] * tx->shape[2] * tx->shape[3];
    const float p = strtof(meta(st, cs, "p"), NULL);
    const uint64_t seed = meta_u64(st, cs, "seed"), epoch = meta_u64(st, cs, "epoch"),
                   it = meta_u64(st, cs, "iteration"), stream = meta_u64(st, cs, "stream"),
                   obs0 = meta_u64(st, cs, "obs0");
    size_t nx;
    float *x = need(st, cs, "x", &nx), *dy = need(st, cs, "dy", NULL);
    float *mask = need(st, cs, "mask", NULL), *y_ref = need(st, cs, "y", NULL);
    float *dx_ref = need(st, cs, "dx", NULL);
    float *y = fill_nan(nx), *dx = fill_nan(nx);
    dpt_dropout_apply(x, y, n, per, p, seed, epoch, it, stream, obs0);
    dpt_dropout_apply(dy, dx, n, per, p, seed, epoch, it, stream, obs0);
    size_t wrong = 0, dropped = 0;
    for (size_t i = 0; i < nx; i++) {
        /* x has no zeros (normal draws), so y == 0 exactly where dropped. */
        wrong += (y[i] == 0.0f) != (mask[i] == 0.0f);
        dropped += mask[i] == 0.0f;
    }
    CHECK_MSG(wrong == 0, "%s: %zu of %zu mask entries differ from the fixture's", cs, wrong, nx);
    printf("  %-40s mask %zu/%zu dropped, %zu differ\n", cs, dropped, nx, wrong);
    cmp(cs, "y", y, y_ref, nx);
    cmp(cs, "dx", dx, dx_ref, nx);

    /* Independent of how the minibatch is split among workers: the same
     * observation at the same global position gets the same mask, to the
     * bit, whatever slice it comes in. */
    float *y2 = fill_nan(nx);
    for (int a = 0; a < n;) {
        int m = 1 + (a % 2); /* slices of 1 and 2 observations */
        if (a + m > n)
            m = n - a;
        dpt_dropout_apply(x + (size_t)a * per, y2 + (size_t)a * per, m, per, p, seed, epoch, it,
                          stream, obs0 + (uint64_t)a);
        a += m;
    }
    CHECK_MSG(memcmp(y, y2, nx * sizeof *y) == 0, "%s: mask depends on the slicing", cs);
    /* In place gives the same bits. */
    memcpy(y2, x, nx * sizeof *y2);
    dpt_dropout_apply(y2, y2, n, per, p, seed, epoch, it, stream, obs0);
    CHECK_MSG(memcmp(y, y2, nx * sizeof *y) == 0, "%s: in place differs", cs);
    /* Another iteration, another stream (layer) or another position: another mask. */
    dpt_dropout_apply(x, y2, n, per, p, seed, epoch, it + 1, stream, obs0);
    CHECK_MSG(memcmp(y, y2, nx * sizeof *y) != 0, "%s: same mask on the next iteration", cs);
    dpt_dropout_apply(x, y2, n, per, p, seed, epoch, it, stream + 1, obs0);
    CHECK_MSG(memcmp(y, y2, nx * sizeof *y) != 0, "%s: same mask in another layer", cs);
    dpt_dropout_apply(x, y2, n, per, p, seed, epoch, it, stream, obs0 + 1);
    CHECK_MSG(memcmp(y, y2, nx * sizeof *y) != 0, "%s: same mask one position on", cs);
    /* p = 0: the identity, bit for bit. */
    dpt_dropout_apply(x, y2, n, per, 0.0f, seed, epoch, it, stream, obs0);
    CHECK_MSG(memcmp(x, y2, nx * sizeof *y) == 0, "%s: p=0 is not the identity", cs);
    free(x), free(dy), free(mask), free(y_ref), free(dx_ref), free(y), free(dx), free(y2);
}

/* dpt_mix64, dpt_rng_key and dpt_rng_key_uniform against values computed
 * in Python from core.h's definition (make_ops_fixtures.py, case "keys"). */
static void dropout_keys(void)
{
    char path[1024];
    tu_fixture("ops_dropout.safetensors", path, sizeof path);
    dpt_st *st = NULL;
    CHECK_MSG(dpt_st_open(path, &st) == DPT_OK, "%s", dpt_last_error());
    if (!st)
        return;
    int n_mix = 0, n_key = 0;
    for (int k = 0;; k++) {
        char key[64];
        snprintf(key, sizeof key, "keys/mix64/%d", k);
        const char *v = dpt_st_meta(st, key);
        if (!v)
            break;
        char *end;
        uint64_t z = strtoull(v, &end, 10), want = strtoull(end + 1, NULL, 10);
        CHECK_MSG(dpt_mix64(z) == want, "mix64(%llu) = %llu, Python says %llu",
                  (unsigned long long)z, (unsigned long long)dpt_mix64(z),
                  (unsigned long long)want);
        n_mix++;
    }
    for (int k = 0;; k++) {
        char key[64];
        snprintf(key, sizeof key, "keys/key/%d", k);
        const char *v = dpt_st_meta(st, key);
        if (!v)
            break;
        uint64_t a[9];
        const char *q = v;
        for (int i = 0; i < 9; i++) {
            char *end;
            a[i] = strtoull(q, &end, 10);
            q = *end ? end + 1 : end;
        }
        uint64_t got = dpt_rng_key(a[0], a[1], a[2], a[3], a[4]);
        CHECK_MSG(got == a[5], "key %d: %llu, Python says %llu", k, (unsigned long long)got,
                  (unsigned long long)a[5]);
        const uint64_t js[3] = {0, 1, 1000};
        for (int i = 0; i < 3; i++)
            CHECK_MSG(dpt_rng_key_uniform(a[5], js[i]) == (float)a[6 + i] / 16777216.0f,
                      "key %d: u(%llu) = %.9g, Python says %llu/2^24", k,
                      (unsigned long long)js[i], dpt_rng_key_uniform(a[5], js[i]),
                      (unsigned long long)a[6 + i]);
        n_key++;
    }
    CHECK(n_mix >= 5 && n_key >= 4);
    printf("counter-based keys: %d mix64 and %d key values as in Python\n", n_mix, n_key);
    dpt_st_close(st);
}

/* Finite differences for the pooling kernels and activations: L = Σ y·r. */
typedef struct unary_ctx {
    int kind; /* 0 max, 1 avg, 2 global, 3 leakyrelu, 4 sigmoid, 5 tanh, 6 dropout */
    dpt_pool2d_desc d;
    int n, c, hw;
    float alpha;
    float *x, *y, *r;
    size_t nx, ny;
} unary_ctx;

static void unary_forward(unary_ctx *u)
{
    switch (u->kind) {
    case 0: dpt_maxpool2d_forward(&u->d, u->x, u->y); break;
    case 1: dpt_avgpool2d_forward(&u->d, u->x, u->y); break;
    case 2: dpt_global_avgpool_forward(u->x, u->y, u->n, u->c, u->hw); break;
    case 3: dpt_leakyrelu_forward(u->x, u->y, u->nx, u->alpha); break;
    case 4: dpt_sigmoid_forward(u->x, u->y, u->nx); break;
    case 5: dpt_tanh_forward(u->x, u->y, u->nx); break;
    default:
        dpt_dropout_apply(u->x, u->y, u->n, u->nx / (size_t)u->n, u->alpha, 5, 1, 2, 3, 4);
        break;
    }
}

static double unary_objective(void *p)
{
    unary_ctx *u = p;
    unary_forward(u);
    return dot(u->y, u->r, u->ny);
}

static void fd_unary(dpt_rng *rng, const char *label, int kind, int n, int c, int h, int w,
                     int k, int s, int pad, float alpha)
{
    unary_ctx u = {.kind = kind, .n = n, .c = c, .hw = h * w, .alpha = alpha};
    u.nx = (size_t)n * c * h * w;
    u.ny = u.nx;
    if (kind <= 1) {
        u.d = (dpt_pool2d_desc){.n = n, .c = c, .h = h, .w = w, .kh = k, .kw = k, .sh = s,
                                .sw = s, .ph = pad, .pw = pad};
        CHECK(dpt_pool2d_desc_init(&u.d) == 0);
        u.ny = (size_t)n * c * u.d.out_h * u.d.out_w;
    } else if (kind == 2) {
        u.ny = (size_t)n * c;
    }
    u.x = malloc(u.nx * sizeof(float));
    u.y = malloc(u.ny * sizeof(float));
    u.r = malloc(u.ny * sizeof(float));
    fill_normal(rng, u.x, u.nx, 1.0f);
    fill_normal(rng, u.r, u.ny, 1.0f);
    float *dx = fill_nan(u.nx);
    unary_forward(&u);
    switch (kind) {
    case 0: dpt_maxpool2d_backward(&u.d, u.x, u.r, dx); break;
    case 1: dpt_avgpool2d_backward(&u.d, u.r, dx); break;
    case 2: dpt_global_avgpool_backward(u.r, dx, n, c, h * w); break;
    case 3: dpt_leakyrelu_backward(u.x, u.r, dx, u.nx, alpha); break;
    case 4: dpt_sigmoid_backward(u.y, u.r, dx, u.nx); break;
    case 5: dpt_tanh_backward(u.y, u.r, dx, u.nx); break;
    default:
        dpt_dropout_apply(u.r, dx, n, u.nx / (size_t)n, alpha, 5, 1, 2, 3, 4);
        break;
    }
    /* Max pooling: a step small enough not to change which value wins. */
    fd_check(label, u.x, dx, u.nx, unary_objective, &u, kind == 0 ? 1e-3f : 1e-2f, rng);
    free(u.x), free(u.y), free(u.r), free(dx);
}

static void fd_new_layers(dpt_rng *rng)
{
    fd_conv_dg(rng, 2, 4, 7, 8, 6, 3, 1, 2, 2, 2);
    fd_conv_dg(rng, 2, 3, 6, 7, 3, 3, 2, 1, 1, 3); /* depthwise */
    fd_conv_dg(rng, 1, 4, 9, 9, 2, 3, 1, 0, 3, 1);
    printf("pooling and activations\n");
    fd_unary(rng, "  maxpool k3 s2 p1: dx", 0, 2, 3, 7, 9, 3, 2, 1, 0);
    fd_unary(rng, "  maxpool k2 s1 p0: dx", 0, 1, 2, 5, 6, 2, 1, 0, 0);
    fd_unary(rng, "  avgpool k3 s2 p1: dx", 1, 2, 3, 7, 9, 3, 2, 1, 0);
    fd_unary(rng, "  avgpool k3 s1 p1: dx", 1, 1, 2, 5, 6, 3, 1, 1, 0);
    fd_unary(rng, "  globalavgpool: dx", 2, 2, 3, 5, 7, 0, 0, 0, 0);
    fd_unary(rng, "  leakyrelu 0.1: dx", 3, 2, 3, 4, 5, 0, 0, 0, 0.1f);
    fd_unary(rng, "  sigmoid: dx", 4, 2, 3, 4, 5, 0, 0, 0, 0);
    fd_unary(rng, "  tanh: dx", 5, 2, 3, 4, 5, 0, 0, 0, 0);
    fd_unary(rng, "  dropout 0.4: dx", 6, 3, 2, 4, 5, 0, 0, 0, 0.4f);
}

static void pool_desc_checks(void)
{
    dpt_pool2d_desc d = {.n = 1, .c = 1, .h = 7, .w = 9, .kh = 3, .kw = 3, .sh = 2, .sw = 2,
                         .ph = 1, .pw = 1};
    CHECK(dpt_pool2d_desc_init(&d) == 0 && d.out_h == 4 && d.out_w == 5);
    d.ph = 3; /* padding as large as the window: windows of padding only */
    CHECK(dpt_pool2d_desc_init(&d) == -1);
    d.ph = 1, d.kh = 10; /* window taller than the padded input */
    CHECK(dpt_pool2d_desc_init(&d) == -1);
    d.kh = 9; /* fits once padded */
    CHECK(dpt_pool2d_desc_init(&d) == 0 && d.out_h == 1);
    d.sw = 0;
    CHECK(dpt_pool2d_desc_init(&d) == -1);
    d.sw = 1, d.pw = -1;
    CHECK(dpt_pool2d_desc_init(&d) == -1);
    /* A max over a window that touches padding never takes the padding,
     * even when every input value is negative. */
    const float x[4] = {-5.0f, -3.0f, -4.0f, -6.0f};
    float y[9];
    dpt_pool2d_desc e = {.n = 1, .c = 1, .h = 2, .w = 2, .kh = 2, .kw = 2, .sh = 1, .sw = 1,
                         .ph = 1, .pw = 1};
    CHECK(dpt_pool2d_desc_init(&e) == 0 && e.out_h == 3);
    dpt_maxpool2d_forward(&e, x, y);
    CHECK(y[0] == -5.0f && y[4] == -3.0f && y[8] == -6.0f);
    /* The average divides by the whole window, padding included. */
    dpt_avgpool2d_forward(&e, x, y);
    CHECK(y[0] == -1.25f && y[4] == -4.5f);

    /* conv: dilation widens the filter's reach, groups must divide. */
    dpt_conv2d_desc c = {.n = 1, .c_in = 4, .h = 9, .w = 9, .c_out = 6, .kh = 3, .kw = 3,
                         .stride = 1, .pad = 0, .dilation = 2, .groups = 2};
    CHECK(dpt_conv2d_desc_init(&c) == 0 && c.out_h == 5 && c.out_w == 5);
    c.dilation = 5; /* reach 11 > 9 */
    CHECK(dpt_conv2d_desc_init(&c) == -1);
    c.pad = 1; /* reach 11 = 9 + 2 */
    CHECK(dpt_conv2d_desc_init(&c) == 0 && c.out_h == 1);
    c.groups = 3; /* 4 input channels */
    CHECK(dpt_conv2d_desc_init(&c) == -1);
    c.c_in = 6, c.c_out = 4; /* 4 filters */
    CHECK(dpt_conv2d_desc_init(&c) == -1);
    c.c_out = 3;
    CHECK(dpt_conv2d_desc_init(&c) == 0);
    c.dilation = -1;
    CHECK(dpt_conv2d_desc_init(&c) == -1);
}

/* ---- small direct checks ------------------------------------------------ */

static void desc_checks(void)
{
    dpt_conv2d_desc d = {.n = 1, .c_in = 1, .h = 28, .w = 28, .c_out = 20, .kh = 5, .kw = 5,
                         .stride = 1, .pad = 0};
    CHECK(dpt_conv2d_desc_init(&d) == 0 && d.out_h == 24 && d.out_w == 24);
    d.stride = 2, d.pad = 1;
    CHECK(dpt_conv2d_desc_init(&d) == 0 && d.out_h == 13 && d.out_w == 13);
    d.h = 3, d.pad = 0; /* filter taller than the input */
    CHECK(dpt_conv2d_desc_init(&d) == -1);
    d.pad = 1; /* fits once padded */
    CHECK(dpt_conv2d_desc_init(&d) == 0 && d.out_h == 1);
    d.stride = 0;
    CHECK(dpt_conv2d_desc_init(&d) == -1);
    d.stride = 1, d.pad = -1;
    CHECK(dpt_conv2d_desc_init(&d) == -1);
    d.pad = 0, d.c_in = 0;
    CHECK(dpt_conv2d_desc_init(&d) == -1);
}

/* Logits far apart: softmax must not overflow, and a probability that
 * underflows to 0 under a non-zero target must leave the loss finite. */
static void softmax_extremes(void)
{
    const float logits[4] = {1000.0f, -1000.0f, 0.0f, 1000.0f};
    float p[4];
    dpt_softmax_forward(logits, p, 1, 4);
    CHECK(p[0] == 0.5f && p[3] == 0.5f && p[1] == 0.0f && p[2] == 0.0f);
    const float t[4] = {0.0f, 1.0f, 0.0f, 0.0f};
    float dl[4];
    double loss = dpt_softmax_xent(p, t, 1, 4, 1.0f, dl);
    CHECK(isfinite(loss) && loss > 80.0);
    CHECK(dl[1] == -1.0f && dl[0] == 0.5f);
}

/* ---- timing (DPT_OPS_BENCH=1) ------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void bench_conv(const char *label, dpt_conv2d_desc d, int first_layer)
{
    dpt_rng rng;
    dpt_rng_seed(&rng, 7, 1);
    if (dpt_conv2d_desc_init(&d) != 0)
        return;
    const size_t nx = (size_t)d.n * d.c_in * d.h * d.w, nw = (size_t)d.c_out * d.c_in * d.kh * d.kw;
    const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float));
    float *b = malloc(d.c_out * sizeof(float)), *y = malloc(ny * sizeof(float));
    float *dy = malloc(ny * sizeof(float)), *dx = malloc(nx * sizeof(float));
    float *dw = malloc(nw * sizeof(float)), *db = malloc(d.c_out * sizeof(float));
    float *work = malloc((dpt_conv2d_work_floats(&d) + 1) * sizeof(float));
    fill_normal(&rng, x, nx, 1.0f);
    fill_normal(&rng, w, nw, 0.1f);
    fill_normal(&rng, b, d.c_out, 0.1f);
    fill_normal(&rng, dy, ny, 1.0f);
    const int reps = 10;
    double tf = 0, tb = 0;
    for (int r = 0; r <= reps; r++) { /* r == 0 warms up */
        double t0 = now_s();
        dpt_conv2d_forward(&d, x, w, b, y, work);
        double t1 = now_s();
        dpt_conv2d_backward(&d, x, w, dy, first_layer ? NULL : dx, dw, db, work);
        double t2 = now_s();
        if (r) {
            tf += t1 - t0;
            tb += t2 - t1;
        }
    }
    printf("bench %s: forward %.2f ms, backward %.2f ms%s (mean of %d)\n", label,
           1e3 * tf / reps, 1e3 * tb / reps, first_layer ? " (no dx)" : "", reps);
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(work);
}

/* The backward sums of the batch norm below a conv, formed while the conv
 * writes dx (dpt_conv2d_backward_ex's xg), against the batch norm's own
 * pass over dx (dpt_bn_backward_sums and _relu, with gamma = scale and
 * invstd = 1 so that their sums are xg's), with and without the ReLU: the
 * relative error of the worse. */
static double check_xg(const dpt_conv2d_desc *d, const float *x, const float *w, const float *dy,
                       float *work, dpt_rng *rng)
{
    const int c = d->c_in, hw = d->h * d->w;
    const size_t nx = (size_t)d->n * c * hw;
    const size_t nw = (size_t)d->c_out * (c / d->groups) * d->kh * d->kw;
    float *prm = malloc(3 * (size_t)c * sizeof *prm);
    fill_normal(rng, prm, 3 * (size_t)c, 0.5f);
    for (int ch = 0; ch < c; ch++)
        prm[c + ch] += 1.0f; /* scale near 1: about half the ReLU mask on */
    float *dx = fill_nan(nx), *dw = fill_nan(nw);
    double *g = malloc(4 * (size_t)c * sizeof *g), worst = 0.0;
    float *got = malloc(4 * (size_t)c * sizeof *got), *ones = malloc((size_t)c * sizeof *ones);
    for (int ch = 0; ch < c; ch++)
        ones[ch] = 1.0f;
    for (int relu = 0; relu < 2; relu++) {
        dpt_bn_apply a = {.mean = prm, .scale = prm + c, .shift = prm + 2 * c, .relu = relu};
        dpt_conv2d_backward_ex(d, x, &a, w, dy, NULL, NULL, dx, dw, NULL, work, g);
        if (relu)
            dpt_bn_backward_sums_relu(x, dx, d->n, c, hw, a.mean, ones, a.scale, a.shift,
                                      g + 2 * c, g + 3 * c);
        else
            dpt_bn_backward_sums(x, dx, d->n, c, hw, a.mean, ones, g + 2 * c, g + 3 * c);
        for (int i = 0; i < 4 * c; i++)
            got[i] = (float)g[i];
        double e = tu_rel_err(got, got + 2 * c, 2 * (size_t)c, NULL);
        if (e > worst)
            worst = e;
    }
    free(prm), free(dx), free(dw), free(g), free(got), free(ones);
    return worst;
}

/* Every kernel set this CPU supports against the generic one (im2col +
 * GEMM) on the example network's convolution shapes and a few awkward ones
 * (odd widths narrower than a vector, channel counts that do not fill a
 * register tile, non-square filters). */
static void cross_check_conv(const char *set, dpt_rng *rng, dpt_conv2d_desc d, int first_layer)
{
    CHECK(dpt_conv2d_desc_init(&d) == 0);
    const size_t nx = (size_t)d.n * d.c_in * d.h * d.w;
    const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
    const size_t ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float));
    float *b = malloc(d.c_out * sizeof(float)), *dy = malloc(ny * sizeof(float));
    fill_normal(rng, x, nx, 1.0f);
    fill_normal(rng, w, nw, 0.3f);
    fill_normal(rng, b, d.c_out, 0.5f);
    fill_normal(rng, dy, ny, 1.0f);
    float *out[2][4]; /* [generic, set][y, dx, dw, db] */
    double sums_err = 0.0, xg_err[2] = {0.0, 0.0};
    for (int pass = 0; pass < 2; pass++) {
        CHECK(dpt_ops_set_kernels(pass == 0 ? "generic" : set) == 0);
        /* The set's pass forces the direct kernels where they take the
         * shape (1x1 filters included); GEMM elsewhere. */
        d.algo = pass == 0 ? DPT_CONV_ALGO_AUTO : DPT_CONV_ALGO_DIRECT;
        float *work = fill_nan(dpt_conv2d_work_floats(&d));
        out[pass][0] = fill_nan(ny), out[pass][1] = fill_nan(nx);
        out[pass][2] = fill_nan(nw), out[pass][3] = fill_nan(d.c_out);
        dpt_conv2d_forward(&d, x, w, b, out[pass][0], work);
        dpt_conv2d_backward(&d, x, w, dy, first_layer ? NULL : out[pass][1], out[pass][2],
                            out[pass][3], work);
        if (pass == 1) {
            /* The batch-norm sums the conv adds up while writing y, and y
             * itself the same bits as without them. */
            double *s = malloc(4 * d.c_out * sizeof *s);
            float *y2 = fill_nan(ny);
            dpt_conv2d_forward_sums(&d, x, w, b, y2, work, s, s + d.c_out);
            CHECK_MSG(memcmp(y2, out[1][0], ny * sizeof *y2) == 0, "%s: y differs with sums", set);
            dpt_bn_sums(out[0][0], d.n, d.c_out, d.out_h * d.out_w, s + 2 * d.c_out,
                        s + 3 * d.c_out);
            float got[2 * 64], want[2 * 64];
            int m = d.c_out < 64 ? d.c_out : 64;
            for (int c = 0; c < m; c++) {
                got[c] = (float)s[c], want[c] = (float)s[2 * d.c_out + c];
                got[m + c] = (float)s[d.c_out + c], want[m + c] = (float)s[3 * d.c_out + c];
            }
            sums_err = tu_rel_err(got, want, 2 * (size_t)m, NULL);
            free(s), free(y2);
        }
        if (!first_layer)
            xg_err[pass] = check_xg(&d, x, w, dy, work, rng);
        free(work);
    }
    char label[160];
    snprintf(label, sizeof label, "%s n%d c%d-%d %dx%d k%dx%d p%d s%d d%d g%d%s", set, d.n, d.c_in,
             d.c_out, d.h, d.w, d.kh, d.kw, d.pad, d.stride, d.dilation, d.groups,
             dpt_conv_direct_supports(&d) ? " (direct)" : "");
    printf("%s vs generic\n", label);
    note(&worst_ref, tu_check_close("  y", out[1][0], out[0][0], ny, REF_TOL));
    if (!first_layer)
        note(&worst_ref, tu_check_close("  dx", out[1][1], out[0][1], nx, REF_TOL));
    note(&worst_ref, tu_check_close("  dw", out[1][2], out[0][2], nw, REF_TOL));
    note(&worst_ref, tu_check_close("  db", out[1][3], out[0][3], d.c_out, REF_TOL));
    note(&worst_ref, sums_err);
    printf("  %-40s rel err %.3e (tol %.0e) %s\n", "batch-norm sums of y", sums_err, REF_TOL,
           sums_err <= REF_TOL ? "ok" : "FAIL");
    CHECK(sums_err <= REF_TOL);
    for (int pass = 0; pass < 2 && !first_layer; pass++) {
        note(&worst_ref, xg_err[pass]);
        printf("  %-40s rel err %.3e (tol %.0e) %s\n",
               pass ? "bn sums with dx (set)" : "bn sums with dx (generic)", xg_err[pass], REF_TOL,
               xg_err[pass] <= REF_TOL ? "ok" : "FAIL");
        CHECK(xg_err[pass] <= REF_TOL);
    }
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 4; k++)
            free(out[pass][k]);
    free(x), free(w), free(b), free(dy);
}

/* Batch norm with and without the fused ReLU on one kernel set against the
 * generic set and against the unfused sequence (normalize, then ReLU;
 * ReLU backward, then batch-norm backward), on planes that fill whole
 * vectors and planes that leave a tail. */
static void cross_check_bn(const char *set, dpt_rng *rng, int n, int c, int hw)
{
    const size_t nx = (size_t)n * c * hw;
    float *x = malloc(nx * sizeof(float)), *dy = malloc(nx * sizeof(float));
    float *gamma = malloc(c * sizeof(float)), *beta = malloc(c * sizeof(float));
    fill_normal(rng, x, nx, 1.5f);
    for (size_t i = 0; i < nx; i++) /* a mean far from 0 in every other channel */
        x[i] += (float)((i / hw) % c % 2) * 4.0f;
    fill_normal(rng, dy, nx, 1.0f);
    fill_normal(rng, gamma, c, 0.3f);
    fill_normal(rng, beta, c, 0.5f);
    for (int ch = 0; ch < c; ch++)
        gamma[ch] += 1.0f;
    float *mean[2], *invstd[2], *y[2], *yr[2], *dx[2], *dxr[2];
    double *sd[2], *sdx[2];
    for (int pass = 0; pass < 2; pass++) {
        CHECK(dpt_ops_set_kernels(pass == 0 ? "generic" : set) == 0);
        mean[pass] = fill_nan(c), invstd[pass] = fill_nan(c);
        bn_stats(x, n, c, hw, 1e-5, mean[pass], NULL, invstd[pass]);
        y[pass] = fill_nan(nx), yr[pass] = fill_nan(nx), dx[pass] = fill_nan(nx);
        dxr[pass] = fill_nan(nx);
        sd[pass] = malloc(2 * c * sizeof(double)), sdx[pass] = sd[pass] + c;
        dpt_bn_normalize(x, n, c, hw, mean[pass], invstd[pass], gamma, beta, y[pass]);
        dpt_bn_normalize_relu(x, n, c, hw, mean[pass], invstd[pass], gamma, beta, yr[pass]);
        dpt_bn_backward_sums_relu(x, dy, n, c, hw, mean[pass], invstd[pass], gamma, beta, sd[pass],
                                  sdx[pass]);
        dpt_bn_backward_dx_relu(x, dy, n, c, hw, mean[pass], invstd[pass], gamma, beta, sd[pass],
                                sdx[pass], (double)n * hw, dxr[pass]);
        /* Unfused: relu(y), relu backward, then batch-norm backward. */
        float *r = fill_nan(nx), *g = fill_nan(nx);
        double *s1 = malloc(2 * c * sizeof(double));
        dpt_relu_forward(y[pass], r, nx);
        int same = memcmp(r, yr[pass], nx * sizeof(float)) == 0;
        CHECK_MSG(same, "%s n%d c%d hw%d: fused ReLU output differs from relu(normalize)", set, n,
                  c, hw);
        dpt_relu_backward(r, dy, g, nx);
        dpt_bn_backward_sums(x, g, n, c, hw, mean[pass], invstd[pass], s1, s1 + c);
        dpt_bn_backward_dx(x, g, n, c, hw, mean[pass], invstd[pass], gamma, s1, s1 + c,
                           (double)n * hw, dx[pass]);
        free(r), free(g), free(s1);
    }
    char label[160];
    snprintf(label, sizeof label, "%s batchnorm n%d c%d hw%d", set, n, c, hw);
    printf("%s vs generic, fused ReLU vs unfused\n", label);
    note(&worst_ref, tu_check_close("  batch mean", mean[1], mean[0], c, REF_TOL));
    note(&worst_ref, tu_check_close("  invstd", invstd[1], invstd[0], c, REF_TOL));
    note(&worst_ref, tu_check_close("  y", y[1], y[0], nx, REF_TOL));
    note(&worst_ref, tu_check_close("  y (fused ReLU)", yr[1], yr[0], nx, REF_TOL));
    note(&worst_ref, tu_check_close("  dx (fused ReLU)", dxr[1], dxr[0], nx, REF_TOL));
    note(&worst_ref, tu_check_close("  dx fused vs unfused", dxr[1], dx[1], nx, REF_TOL));
    for (int pass = 0; pass < 2; pass++) {
        free(mean[pass]), free(invstd[pass]), free(y[pass]), free(yr[pass]);
        free(dx[pass]), free(dxr[pass]), free(sd[pass]);
    }
    free(x), free(dy), free(gamma), free(beta);
}

/* The fully connected kernels of a set against the generic (BLAS) ones. */
static void cross_check_linear(const char *set, dpt_rng *rng, int n, int in, int out)
{
    float *x = malloc((size_t)n * in * sizeof(float));
    float *w = malloc((size_t)out * in * sizeof(float));
    float *b = malloc(out * sizeof(float)), *dy = malloc((size_t)n * out * sizeof(float));
    fill_normal(rng, x, (size_t)n * in, 1.0f);
    fill_normal(rng, w, (size_t)out * in, 0.05f);
    fill_normal(rng, b, out, 0.5f);
    fill_normal(rng, dy, (size_t)n * out, 1.0f);
    float *r[2][4];
    for (int pass = 0; pass < 2; pass++) {
        CHECK(dpt_ops_set_kernels(pass == 0 ? "generic" : set) == 0);
        r[pass][0] = fill_nan((size_t)n * out), r[pass][1] = fill_nan((size_t)n * in);
        r[pass][2] = fill_nan((size_t)out * in), r[pass][3] = fill_nan(out);
        dpt_linear_forward(x, w, b, r[pass][0], n, in, out);
        dpt_linear_backward(x, w, dy, r[pass][1], r[pass][2], r[pass][3], n, in, out);
    }
    /* The set's bytes again: the same, run to run (fixed summation order). */
    {
        float *y = fill_nan((size_t)n * out), *dx = fill_nan((size_t)n * in);
        float *dw = fill_nan((size_t)out * in), *db = fill_nan(out);
        dpt_linear_forward(x, w, b, y, n, in, out);
        dpt_linear_backward(x, w, dy, dx, dw, db, n, in, out);
        CHECK(memcmp(y, r[1][0], (size_t)n * out * sizeof *y) == 0);
        CHECK(memcmp(dx, r[1][1], (size_t)n * in * sizeof *dx) == 0);
        CHECK(memcmp(dw, r[1][2], (size_t)out * in * sizeof *dw) == 0);
        free(y), free(dx), free(dw), free(db);
    }
    char label[160];
    snprintf(label, sizeof label, "%s linear n%d %d-%d", set, n, in, out);
    printf("%s vs generic\n", label);
    note(&worst_ref, tu_check_close("  y", r[1][0], r[0][0], (size_t)n * out, REF_TOL));
    note(&worst_ref, tu_check_close("  dx", r[1][1], r[0][1], (size_t)n * in, REF_TOL));
    note(&worst_ref, tu_check_close("  dw", r[1][2], r[0][2], (size_t)out * in, REF_TOL));
    note(&worst_ref, tu_check_close("  db", r[1][3], r[0][3], out, REF_TOL));
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 4; k++)
            free(r[pass][k]);
    free(x), free(w), free(b), free(dy);
}

/* The fully connected layer with the batch norm (+ ReLU) below it applied
 * on the fly (dpt_linear_forward_ex, _backward_ex) on kernel set `set`,
 * against the generic set run on the normalised input written out, and the
 * batch norm's backward sums against dpt_bn_backward_sums_relu over that
 * dx. `fused` says whether the set's kernels should do it on the fly for
 * this shape (else the image-at-a-time path runs). */
static void cross_check_linear_bn(const char *set, dpt_rng *rng, int n, int c, int hw, int out,
                                  int fused)
{
    const int in = c * hw;
    const size_t nx = (size_t)n * in, nw = (size_t)out * in;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float));
    float *b = malloc(out * sizeof(float)), *dy = malloc((size_t)n * out * sizeof(float));
    float *prm = malloc(4 * (size_t)c * sizeof(float)), *z = fill_nan(nx);
    fill_normal(rng, x, nx, 1.0f);
    fill_normal(rng, w, nw, 0.05f);
    fill_normal(rng, b, out, 0.5f);
    fill_normal(rng, dy, (size_t)n * out, 1.0f);
    fill_normal(rng, prm, 3 * (size_t)c, 0.5f);
    for (int ch = 0; ch < c; ch++) {
        prm[c + ch] += 1.0f; /* scale near 1: about half the ReLU mask on */
        prm[3 * c + ch] = 1.0f; /* invstd for the reference sums */
    }
    dpt_bn_apply a = {.mean = prm, .scale = prm + c, .shift = prm + 2 * c, .relu = 1};
    float *r[2][4]; /* [reference, set][y, dx, dw, db] */
    double *g = malloc(4 * (size_t)c * sizeof *g);
    for (int pass = 0; pass < 2; pass++) {
        CHECK(dpt_ops_set_kernels(pass == 0 ? "generic" : set) == 0);
        r[pass][0] = fill_nan((size_t)n * out), r[pass][1] = fill_nan(nx);
        r[pass][2] = fill_nan(nw), r[pass][3] = fill_nan(out);
        if (pass == 0) {
            for (int i = 0; i < n; i++)
                dpt_bn_apply_forward(x + (size_t)i * in, c, hw, &a, z + (size_t)i * in);
            dpt_linear_forward(z, w, b, r[0][0], n, in, out);
            dpt_linear_backward(z, w, dy, r[0][1], r[0][2], r[0][3], n, in, out);
            dpt_bn_backward_sums_relu(x, r[0][1], n, c, hw, a.mean, prm + 3 * c, a.scale,
                                      a.shift, g + 2 * c, g + 3 * c);
        } else {
            CHECK(dpt_linear_fuses_bn(in, out, hw) == fused);
            float *work = fill_nan((size_t)in);
            dpt_linear_forward_ex(x, &a, hw, w, b, r[1][0], n, in, out, work);
            dpt_linear_backward_ex(x, &a, hw, w, dy, r[1][1], r[1][2], r[1][3], n, in, out, work,
                                   g);
            free(work);
        }
    }
    float *got = malloc(4 * (size_t)c * sizeof *got);
    for (int i = 0; i < 4 * c; i++)
        got[i] = (float)g[i];
    printf("%s linear n%d %dx%d-%d, batch norm applied on the fly%s, vs generic\n", set, n, c,
           hw, out, fused ? "" : " (an image at a time)");
    note(&worst_ref, tu_check_close("  y", r[1][0], r[0][0], (size_t)n * out, REF_TOL));
    note(&worst_ref, tu_check_close("  dx", r[1][1], r[0][1], nx, REF_TOL));
    note(&worst_ref, tu_check_close("  dw", r[1][2], r[0][2], nw, REF_TOL));
    note(&worst_ref, tu_check_close("  db", r[1][3], r[0][3], out, REF_TOL));
    note(&worst_ref, tu_check_close("  batch-norm sums with dx", got, got + 2 * c, 2 * (size_t)c,
                                    REF_TOL));
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 4; k++)
            free(r[pass][k]);
    free(x), free(w), free(b), free(dy), free(prm), free(z), free(g), free(got);
}

/* Max and average pooling, forward and backward, on the selected kernel
 * set against the scalar code (dpt_pool2d_reference), bit for bit, on
 * random shapes: windows 1-5, strides 1-3, paddings below the window,
 * rows narrower and wider than a vector. Values are small integers (ties
 * everywhere, ±0 among them) with some -inf and NaN, so the maximum's tie
 * rule and NaN rule are exercised. */
static void pool_vs_scalar(dpt_rng *rng)
{
    int bad = 0, cases = 0, idx_cases = 0;
    for (int it = 0; it < 300; it++) {
        dpt_pool2d_desc d;
        d.n = 1 + (int)(dpt_rng_uniform(rng) * 3), d.c = 1 + (int)(dpt_rng_uniform(rng) * 3);
        d.kh = 1 + (int)(dpt_rng_uniform(rng) * 5), d.kw = 1 + (int)(dpt_rng_uniform(rng) * 5);
        d.sh = 1 + (int)(dpt_rng_uniform(rng) * 3), d.sw = 1 + (int)(dpt_rng_uniform(rng) * 3);
        d.ph = (int)(dpt_rng_uniform(rng) * d.kh), d.pw = (int)(dpt_rng_uniform(rng) * d.kw);
        d.h = 1 + (int)(dpt_rng_uniform(rng) * 40), d.w = 1 + (int)(dpt_rng_uniform(rng) * 40);
        if (it % 3 == 0) /* the networks' shapes: 2x2 stride 2, 3x3 stride 2 pad 1 */
            d.kh = d.kw = 2 + it % 2, d.sh = d.sw = 2, d.ph = d.pw = it % 2;
        if (dpt_pool2d_desc_init(&d) != 0)
            continue;
        cases++;
        const size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.c * d.out_h * d.out_w;
        float *x = malloc(nx * sizeof *x), *dy = malloc(ny * sizeof *dy);
        const size_t nmax = nx > ny ? nx : ny;
        float *a = malloc(nmax * sizeof *a), *b = malloc(nmax * sizeof *b);
        float *ybuf = malloc(ny * sizeof *ybuf);
        unsigned char *idx = malloc(ny + DPT_POOL_IDX_SLACK);
        for (size_t i = 0; i < nx; i++) {
            double u = dpt_rng_uniform(rng);
            x[i] = u < 0.02   ? -INFINITY
                   : u < 0.03 ? NAN
                   : u < 0.1  ? -0.0f
                              : (float)(int)(u * 7) - 3;
        }
        if (it % 5 == 0) /* planes of -inf only: the index rule */
            for (size_t i = 0; i < nx; i++)
                x[i] = -INFINITY;
        fill_normal(rng, dy, ny, 1.0f);
        for (int mode = 0; mode < 4; mode++) {
            const size_t n = mode % 2 ? nx : ny;
            for (size_t i = 0; i < n; i++)
                a[i] = b[i] = 1234.5f;
            dpt_pool2d_reference(mode, &d, x, dy, a);
            switch (mode) {
            case 0: dpt_maxpool2d_forward(&d, x, b); break;
            case 1: dpt_maxpool2d_backward(&d, x, dy, b); break;
            case 2: dpt_avgpool2d_forward(&d, x, b); break;
            default: dpt_avgpool2d_backward(&d, dy, b); break;
            }
            int differs = memcmp(a, b, n * sizeof *a) != 0;
            /* The saved-tap pair where the shape has it: the same bits. */
            if (mode < 2 && dpt_maxpool2d_has_idx(&d)) {
                for (size_t i = 0; i < n; i++)
                    b[i] = 1234.5f;
                memset(idx, 0xee, ny);
                dpt_maxpool2d_forward_idx(&d, x, mode == 0 ? b : ybuf, idx);
                if (mode == 1)
                    dpt_maxpool2d_backward_idx(&d, idx, dy, b);
                differs |= memcmp(a, b, n * sizeof *a) != 0;
                idx_cases++;
            }
            if (mode == 0 && dpt_maxpool2d_has_idx(&d)) {
                /* With a batch norm (+ ReLU) applied on the fly: the bits
                 * of applying it first. */
                float bnp[3 * 3];
                for (int i = 0; i < 3 * d.c; i++)
                    bnp[i] = (float)(dpt_rng_uniform(rng) * 2 - 0.5);
                const dpt_bn_apply ba = {.mean = bnp, .scale = bnp + d.c, .shift = bnp + 2 * d.c,
                                         .relu = (it / 6) % 2};
                const size_t img = (size_t)d.c * d.h * d.w;
                float *xb = malloc(nx * sizeof *xb);
                for (int i = 0; i < d.n; i++)
                    dpt_bn_apply_forward(x + i * img, d.c, d.h * d.w, &ba, xb + i * img);
                dpt_pool2d_reference(0, &d, xb, dy, a);
                unsigned char *idx2 = malloc(ny + DPT_POOL_IDX_SLACK);
                dpt_maxpool2d_forward_idx(&d, xb, ybuf, idx);
                dpt_maxpool2d_forward_bn(&d, x, &ba, b, idx2);
                differs |= memcmp(a, b, n * sizeof *a) != 0 || memcmp(idx, idx2, ny) != 0;
                free(xb), free(idx2);
            }
            if (differs) {
                if (bad++ < 5)
                    printf("  pool mode %d n%d c%d %dx%d k%dx%d s%dx%d p%dx%d: differs\n", mode,
                           d.n, d.c, d.h, d.w, d.kh, d.kw, d.sh, d.sw, d.ph, d.pw);
            }
        }
        free(x), free(dy), free(a), free(b), free(idx), free(ybuf);
    }
    printf("  pooling %s vs scalar: %d shapes (%d with saved taps), %d differ\n",
           dpt_ops_kernels(), cases, idx_cases / 2, bad);
    CHECK(bad == 0 && cases > 100 && idx_cases > 40);
}

/* The depthwise algorithm (conv_depthwise.c) on the selected kernel set
 * against the GEMM path (im2col + BLAS per group): y with the batch-norm
 * sums, dx with xg's sums, dw, db; with a batch norm (and ReLU) applied on
 * the fly to the input (xa) and to the output gradient (dya) when bn, as
 * net.c's fusion plans them. Checked twice: same bits both times. */
static void cross_check_depthwise(dpt_rng *rng, int n, int c, int mult, int h, int w, int k,
                                  int stride, int pad, int dil, int bn)
{
    dpt_conv2d_desc d = {.n = n, .c_in = c, .h = h, .w = w, .c_out = c * mult, .kh = k, .kw = k,
                         .stride = stride, .pad = pad, .dilation = dil, .groups = c};
    CHECK(dpt_conv2d_desc_init(&d) == 0);
    CHECK(dpt_conv_algo_supports(DPT_CONV_ALGO_DEPTHWISE, &d));
    const int co = d.c_out, P = d.out_h * d.out_w;
    const size_t nx = (size_t)n * c * h * w, nw = (size_t)co * k * k, ny = (size_t)n * co * P;
    float *x = malloc(nx * sizeof(float)), *wt = malloc(nw * sizeof(float));
    float *b = malloc(co * sizeof(float)), *dy = malloc(ny * sizeof(float));
    float *yb = malloc(ny * sizeof(float)); /* the batch norm's input for dya */
    fill_normal(rng, x, nx, 1.0f);
    fill_normal(rng, wt, nw, 0.3f);
    fill_normal(rng, b, co, 0.5f);
    fill_normal(rng, dy, ny, 1.0f);
    fill_normal(rng, yb, ny, 1.0f);
    /* xa over c channels, dya over co: mean, scale, shift, kf, ka, kb. */
    float *pa = malloc(6 * (size_t)(c + co) * sizeof(float));
    fill_normal(rng, pa, 6 * (size_t)(c + co), 0.5f);
    for (int ch = 0; ch < c; ch++)
        pa[c + ch] += 1.0f;
    float *pd = pa + 6 * (size_t)c;
    dpt_bn_apply xa = {.mean = pa, .scale = pa + c, .shift = pa + 2 * c, .relu = bn > 1};
    dpt_bn_apply dya = {.mean = pd, .scale = pd + co, .shift = pd + 2 * co, .relu = bn > 1,
                        .kf = pd + 3 * co, .ka = pd + 4 * co, .kb = pd + 5 * co};
    float *out[3][4]; /* [gemm, depthwise, depthwise again][y, dx, dw, db] */
    double *s[3];
    d.algo = DPT_CONV_ALGO_DEPTHWISE; /* its work size covers the GEMM fallback too */
    float *work = fill_nan(dpt_conv2d_work_floats(&d));
    for (int pass = 0; pass < 3; pass++) {
        out[pass][0] = fill_nan(ny), out[pass][1] = fill_nan(nx);
        out[pass][2] = fill_nan(nw), out[pass][3] = fill_nan(co);
        s[pass] = malloc((2 * (size_t)co + 2 * (size_t)c) * sizeof(double));
        for (int i = 0; i < 2 * co + 2 * c; i++)
            s[pass][i] = 7.0; /* overwritten, not added to */
        double *xg = bn ? s[pass] + 2 * co : NULL;
        /* Through conv2d.c's table: the algorithm named in the desc. */
        d.algo = pass == 0 ? DPT_CONV_ALGO_GEMM : DPT_CONV_ALGO_DEPTHWISE;
        dpt_conv2d_forward_ex(&d, x, bn ? &xa : NULL, wt, b, out[pass][0], work, s[pass],
                              s[pass] + co);
        dpt_conv2d_backward_ex(&d, x, bn ? &xa : NULL, wt, dy, bn ? &dya : NULL, yb,
                               out[pass][1], out[pass][2], out[pass][3], work, xg);
    }
    char label[160];
    snprintf(label, sizeof label, "depthwise %s n%d c%d x%d %dx%d k%d s%d p%d d%d bn%d",
             dpt_ops_kernels(), n, c, mult, h, w, k, stride, pad, dil, bn);
    printf("%s vs gemm\n", label);
    note(&worst_ref, tu_check_close("  y", out[1][0], out[0][0], ny, REF_TOL));
    note(&worst_ref, tu_check_close("  dx", out[1][1], out[0][1], nx, REF_TOL));
    note(&worst_ref, tu_check_close("  dw", out[1][2], out[0][2], nw, REF_TOL));
    note(&worst_ref, tu_check_close("  db", out[1][3], out[0][3], co, REF_TOL));
    const size_t ns = 2 * (size_t)co + (bn ? 2 * (size_t)c : 0);
    float *got = malloc(ns * sizeof(float)), *want = malloc(ns * sizeof(float));
    for (size_t i = 0; i < ns; i++)
        got[i] = (float)s[1][i], want[i] = (float)s[0][i];
    note(&worst_ref, tu_check_close("  bn sums of y, xg", got, want, ns, REF_TOL));
    int same = 1;
    for (int k4 = 0; k4 < 4; k4++) {
        size_t len = k4 == 0 ? ny : k4 == 1 ? nx : k4 == 2 ? nw : (size_t)co;
        same &= memcmp(out[1][k4], out[2][k4], len * sizeof(float)) == 0;
    }
    same &= memcmp(s[1], s[2], ns * sizeof(double)) == 0;
    CHECK_MSG(same, "%s: a second run gave other bits", label);
    for (int pass = 0; pass < 3; pass++) {
        for (int k4 = 0; k4 < 4; k4++)
            free(out[pass][k4]);
        free(s[pass]);
    }
    free(got), free(want), free(work), free(pa);
    free(x), free(wt), free(b), free(dy), free(yb);
}

/* Depthwise shapes: kernels 3 and 5, strides 1 and 2 (and 3), dilation 2,
 * paddings 0-2, odd widths narrower and wider than a vector, a channel
 * multiplier, batches 1 and 33, with and without the fused batch norms;
 * and MobileNet's layers (examples/nets/mobilenet-32x32x3.net). */
static void depthwise_cases(dpt_rng *rng)
{
    static const int cs[][10] = {
        /* n, c, mult, h, w, k, stride, pad, dil, bn */
        {1, 3, 1, 7, 9, 3, 1, 1, 1, 0},   {33, 2, 1, 5, 5, 3, 1, 0, 1, 2},
        {2, 4, 1, 11, 13, 3, 2, 1, 1, 1}, {1, 5, 1, 16, 16, 3, 2, 1, 1, 2},
        {2, 3, 1, 9, 17, 5, 1, 2, 1, 0},  {33, 2, 1, 12, 11, 5, 2, 2, 1, 2},
        {2, 3, 1, 13, 19, 3, 1, 2, 2, 1}, {1, 2, 1, 14, 15, 3, 2, 0, 2, 2},
        {3, 2, 1, 10, 23, 5, 1, 1, 2, 0}, {2, 3, 2, 9, 10, 3, 1, 1, 1, 2},
        {2, 2, 3, 12, 13, 3, 2, 1, 1, 1}, {2, 3, 1, 17, 31, 3, 3, 1, 1, 2},
        {1, 2, 1, 40, 37, 3, 1, 1, 1, 2}, {2, 2, 1, 4, 3, 3, 1, 2, 1, 0},
        {1, 1, 1, 6, 5, 1, 1, 0, 1, 1},   {2, 3, 1, 8, 8, 2, 2, 0, 1, 2},
        {3, 32, 1, 32, 32, 3, 1, 1, 1, 2}, {3, 64, 1, 32, 32, 3, 2, 1, 1, 2},
        {3, 128, 1, 16, 16, 3, 1, 1, 1, 2}, {3, 128, 1, 16, 16, 3, 2, 1, 1, 2},
        /* edges: a 1x1 image under padding wider than the filter, one
         * column, a wide dilated filter at stride 3, padding beyond the
         * taps' reach at stride 2, a 7-wide filter on a 7-wide image */
        {1, 2, 1, 1, 1, 1, 1, 2, 1, 1},   {2, 3, 1, 5, 1, 3, 1, 1, 1, 2},
        {1, 2, 1, 9, 9, 7, 3, 3, 2, 1},   {1, 2, 1, 3, 20, 3, 2, 2, 1, 2},
        {2, 2, 2, 7, 7, 7, 1, 0, 1, 2},   {1, 3, 1, 6, 35, 3, 3, 2, 2, 0},
        /* stride 2 on rows of several 2-vector chunks for every set (the
         * phases split and joined in registers), odd and even padding */
        {2, 3, 1, 9, 45, 3, 2, 1, 1, 2},  {1, 2, 2, 6, 70, 3, 2, 2, 1, 1},
        {2, 2, 1, 7, 33, 3, 2, 0, 1, 2},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        const int *a = cs[i];
        cross_check_depthwise(rng, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
    }
}

/* The shapes cross_check_conv runs on every kernel set. */
#define CONV(N, CI, H, W, CO, KH, KW, PAD)                                                  \
    {.n = N, .c_in = CI, .h = H, .w = W, .c_out = CO, .kh = KH, .kw = KW, .stride = 1, \
     .pad = PAD}
#define CONVX(N, CI, H, W, CO, KH, KW, PAD, S, DIL, G)                                       \
    {.n = N, .c_in = CI, .h = H, .w = W, .c_out = CO, .kh = KH, .kw = KW, .stride = S, .pad = PAD, \
     .dilation = DIL, .groups = G}
static const struct {
    dpt_conv2d_desc d;
    int first_layer; /* no dx */
} conv_cases[] = {
    /* The example network's conv1 and conv2/conv3. */
    {CONV(5, 1, 28, 28, 20, 5, 5, 0), 1},
    {CONV(5, 20, 24, 24, 20, 3, 3, 1), 0},
    /* A larger batch: state carried from image to image (padding zeroed
     * once, per-lane partial sums) must not leak. */
    {CONV(37, 6, 11, 10, 7, 3, 3, 1), 0},
    /* 3x3 filters on wider planes (rows longer than two vectors), padding 0
     * and 2, channel counts that do not fill a register tile. */
    {CONV(3, 7, 38, 36, 13, 3, 3, 1), 0},
    {CONV(2, 3, 10, 12, 6, 3, 3, 0), 0},
    {CONV(2, 4, 6, 8, 1, 3, 3, 2), 0},
    /* Rows narrower than a vector, non-square and tall filters. */
    {CONV(3, 7, 5, 3, 13, 3, 3, 2), 0},
    {CONV(2, 3, 17, 33, 23, 2, 4, 1), 0},
    {CONV(2, 33, 9, 9, 1, 5, 1, 0), 0},
    {CONV(2, 4, 19, 21, 6, 5, 5, 1), 0},
    /* Stride (polyphase), dilation and groups (conv_direct.c): strides 2
     * and 3 with every phase's tap count, planes whose padded size is not
     * a multiple of the stride (rows and columns no output reads), padding
     * 0 to the dilated extent, 1x1 filters, groups of 4+ channels, rows
     * narrower and wider than a vector. */
    {CONVX(3, 5, 16, 16, 7, 3, 3, 1, 2, 1, 1), 0},
    {CONVX(2, 6, 17, 15, 9, 3, 3, 1, 2, 1, 1), 0},
    {CONVX(2, 3, 40, 37, 6, 3, 3, 1, 2, 1, 1), 0},
    {CONVX(2, 4, 13, 14, 5, 5, 5, 2, 3, 1, 1), 0},
    {CONVX(3, 4, 11, 9, 6, 3, 3, 0, 2, 1, 1), 0},
    {CONVX(2, 8, 12, 12, 10, 1, 1, 0, 2, 1, 1), 0},
    {CONVX(2, 3, 23, 20, 4, 4, 2, 1, 3, 1, 1), 0},
    {CONVX(2, 1, 28, 28, 6, 5, 5, 2, 2, 1, 1), 1},
    {CONVX(2, 5, 14, 13, 6, 3, 3, 2, 1, 2, 1), 0},
    {CONVX(2, 5, 30, 33, 7, 3, 3, 4, 1, 2, 1), 0},
    {CONVX(2, 4, 15, 16, 5, 3, 3, 3, 2, 2, 1), 0},
    {CONVX(2, 3, 19, 18, 4, 3, 2, 1, 3, 3, 1), 0},
    {CONVX(3, 8, 10, 10, 8, 3, 3, 1, 1, 1, 2), 0},
    {CONVX(2, 12, 9, 11, 15, 3, 3, 1, 2, 1, 3), 0},
    {CONVX(2, 16, 20, 18, 16, 3, 3, 2, 1, 2, 4), 0},
    {CONVX(5, 32, 8, 8, 64, 3, 3, 1, 2, 1, 1), 0},
    {CONVX(33, 8, 6, 7, 8, 3, 3, 1, 2, 1, 2), 0},
    /* Blocks of stacked images (conv_direct.c's block_images) whose rows
     * fill a vector, so the outputs go through the blocked output map, and
     * a short last block. */
    {CONVX(5, 7, 16, 16, 9, 3, 3, 1, 1, 1, 1), 0},
    {CONVX(5, 6, 32, 32, 10, 3, 3, 1, 2, 1, 1), 0},
    /* Refused by the direct kernels (checked on the generic path here):
     * padding wider than the filter, depthwise. */
    {CONVX(2, 3, 8, 8, 4, 3, 3, 3, 2, 1, 1), 0},
    {CONVX(2, 6, 8, 8, 6, 3, 3, 1, 2, 1, 6), 0},
};
#undef CONV
#undef CONVX

int main(void)
{
    desc_checks();
    pool_desc_checks();
    softmax_extremes();
    dropout_keys();

    /* Every kernel set this CPU can run, the generic one first: the
     * PyTorch fixtures, finite differences, and each faster set against
     * generic on the example network's shapes and awkward ones (odd widths
     * narrower than a vector, channel counts that do not fill a register
     * tile, non-square filters, planes and rows with a tail). */
    static const char *const sets[] = {"generic", "avx2", "avx512"};
    for (size_t k = 0; k < sizeof sets / sizeof *sets; k++) {
        if (!dpt_ops_kernels_supported(sets[k])) {
            printf("kernel set %s: not supported by this CPU, skipped\n", sets[k]);
            continue;
        }
        CHECK(dpt_ops_set_kernels(sets[k]) == 0);
        printf("== kernel set %s\n", dpt_ops_kernels());
        for_each_case("ops_conv2d.safetensors", conv_case);
        for_each_case("ops_batchnorm.safetensors", bn_case);
        for_each_case("ops_relu.safetensors", relu_case);
        for_each_case("ops_linear.safetensors", linear_case);
        for_each_case("ops_conv_dg.safetensors", conv_case);
        dpt_rng rng;
        dpt_rng_seed(&rng, 2024, 3);
        printf("finite differences\n");
        fd_conv(&rng, 2, 3, 7, 9, 4, 3, 2, 1);
        fd_conv(&rng, 1, 2, 6, 5, 3, 5, 1, 2);
        fd_conv(&rng, 3, 1, 5, 7, 2, 1, 1, 0);
        fd_conv(&rng, 2, 3, 6, 7, 11, 3, 1, 1);
        fd_bn(&rng, 3, 2, 5);
        fd_bn(&rng, 1, 3, 12);
        fd_linear(&rng, 5, 7, 4);
        depthwise_cases(&rng);
        pool_vs_scalar(&rng);
        if (k == 0) { /* generic: the image-at-a-time path only */
            cross_check_linear_bn(sets[k], &rng, 3, 2, 64, 10, 0);
            continue;
        }
        for (size_t j = 0; j < sizeof conv_cases / sizeof *conv_cases; j++)
            cross_check_conv(sets[k], &rng, conv_cases[j].d, conv_cases[j].first_layer);
        cross_check_bn(sets[k], &rng, 5, 20, 576);
        cross_check_bn(sets[k], &rng, 3, 3, 37);
        cross_check_bn(sets[k], &rng, 4, 5, 1);
        cross_check_linear(sets[k], &rng, 5, 11520, 10);
        /* More images than the kernels' groups of 8 (FC_GROUP), the last
         * group short: sums carried from group to group. */
        cross_check_linear(sets[k], &rng, 19, 200, 10);
        cross_check_linear(sets[k], &rng, 7, 37, 3);
        cross_check_linear(sets[k], &rng, 3, 100, 16);
        /* More outputs than fc_kern.h holds: dptrain's GEMM (gemm.h, with
         * the avx512 set) with partial tiles of outputs or inputs, B read
         * in place or packed, blocks of k and rows (tests/test_gemm.c
         * checks the GEMM itself). */
        cross_check_linear(sets[k], &rng, 2, 50, 17);
        for (int n = 1; n <= 33; n++)
            cross_check_linear(sets[k], &rng, n, 37 + n % 2 * 27, 17 + n % 3 * 36);
        cross_check_linear(sets[k], &rng, 50, 256, 89); /* the language model's fc */
        cross_check_linear(sets[k], &rng, 7, 300, 100);
        cross_check_linear(sets[k], &rng, 300, 20, 33);
        cross_check_linear(sets[k], &rng, 3, 16, 1000);
        /* The example's fc over bn3, and shapes the kernels leave to the
         * image-at-a-time path: planes not a whole vector step, and more
         * outputs than they take. */
        cross_check_linear_bn(sets[k], &rng, 5, 20, 576, 10, 1);
        cross_check_linear_bn(sets[k], &rng, 19, 3, 64, 10, 1); /* groups of 8 */
        cross_check_linear_bn(sets[k], &rng, 3, 3, 37, 10, 0);
        cross_check_linear_bn(sets[k], &rng, 2, 4, 64, 17, 0);
    }
    CHECK(dpt_ops_set_kernels("auto") == 0);
    printf("== kernel set %s for the rest\n", dpt_ops_kernels());
    for_each_case("ops_loss.safetensors", loss_case);
    for_each_case("ops_pool.safetensors", pool_case);
    for_each_case("ops_act.safetensors", act_case);
    for_each_case("ops_dropout.safetensors", dropout_case);

    dpt_rng rng;
    dpt_rng_seed(&rng, 2024, 3);
    printf("finite differences\n");
    fd_xent(&rng, 4, 6, 0);
    fd_xent(&rng, 3, 5, 1);
    fd_new_layers(&rng);

    if (getenv("DPT_OPS_BENCH")) {
        bench_conv("conv1 n128 1x28x28 -> 20 5x5", (dpt_conv2d_desc){.n = 128, .c_in = 1,
                   .h = 28, .w = 28, .c_out = 20, .kh = 5, .kw = 5, .stride = 1, .pad = 0}, 1);
        bench_conv("conv2 n128 20x24x24 -> 20 3x3 p1", (dpt_conv2d_desc){.n = 128, .c_in = 20,
                   .h = 24, .w = 24, .c_out = 20, .kh = 3, .kw = 3, .stride = 1, .pad = 1}, 0);
    }

    printf("worst: reference rel err %.3e, loss rel err %.3e, finite-difference err %.3e\n",
           worst_ref, worst_loss, worst_fd);
    printf("%s\n", tu_exit() ? "FAILED" : "passed");
    return tu_exit();
}
