/* LSTM and GRU kernels (src/ops/rnn.c) against PyTorch and finite
 * differences.
 *
 * 1. Reference: every case of tests/fixtures/ops_rnn.safetensors (made by
 *    make_rnn_fixtures.py: float64 torch on float32 inputs, each sequence
 *    run alone over its own length): outputs, final states and every
 *    gradient (x, w_ih, w_hh, b_ih, b_hh, h0, c0) must match with
 *      max_i |got_i - ref_i| / max_i |ref_i|  <  1e-5     (tu_check_close)
 * 2. Carried state: the same case run as two consecutive chunks, (h, c)
 *    fed from the first into the second and dh0/dc0 of the second fed back
 *    as dhn/dcn of the first, weight gradients summed, against the
 *    whole-sequence references (same tolerance).
 * 3. Finite differences on L = Σ y·r + Σ hn·rh + Σ cn·rc, float64 sums
 *    over the float32 kernels, central differences on random coordinates
 *    of every input, passing when |fd - g| <= 2e-2 · max(|g|, 0.1·max|g|).
 * 4. NULL initial states and NULL output gradients act as zeros.
 * 5. The kernels never write past the buffers their *_floats say (guard
 *    values after save and work stay intact).
 * Each of 1-6 runs with every kernel set the CPU has (generic: the BLAS
 * path; avx2, avx512: the vector kernels of rnn_isa.h).
 * 7. One-hot input (the sparse path of rnn.c: at most one x in 8 nonzero)
 *    against the dense path: the same sequences with a dense one added to
 *    the batch (whose output gradients are zero) give the same results
 *    within REF_TOL (the BLAS path's products differ in the last bits with
 *    the batch size).
 * 6. Left padding (pad_left = 1): every case with its sequences moved to
 *    the end of the T steps gives, shifted back, the same bytes as right
 *    padding for y, hn, cn, dx, dh0, dc0 (the same arithmetic on each
 *    sequence; within 1e-6 on the BLAS path) and matches the references; weight gradients sum the same
 *    rows in another order, so they match the references within REF_TOL. */
#include "dptrain/core.h"
#include "ops/ops.h"
#include "st_fixture.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_TOL 1e-5
#define FD_TOL 2e-2
#define GUARD 64

static int meta_int(const dpt_st *st, const char *cs, const char *k)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, k);
    const char *v = dpt_st_meta(st, key);
    CHECK_MSG(v != NULL, "fixture lacks metadata %s", key);
    return v ? atoi(v) : 0;
}

static float *nans(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

/* A buffer of n floats followed by GUARD guard values. */
static float *guarded(size_t n)
{
    float *p = nans(n + GUARD);
    for (int i = 0; i < GUARD; i++)
        p[n + i] = 12345.0f;
    return p;
}

static void check_guard(const char *what, const float *p, size_t n)
{
    for (int i = 0; i < GUARD; i++)
        if (p[n + i] != 12345.0f) {
            CHECK_MSG(0, "%s: written past its %zu floats", what, n);
            return;
        }
}

/* One case's tensors. */
typedef struct rcase {
    dpt_rnn_desc d;
    int *len;
    float *x, *w_ih, *w_hh, *b_ih, *b_hh, *h0, *c0, *dy, *dhn, *dcn;
    float *y, *hn, *cn, *dx, *dw_ih, *dw_hh, *db_ih, *db_hh, *dh0, *dc0; /* references */
} rcase;

static void rcase_load(const dpt_st *st, const char *cs, rcase *c)
{
    memset(c, 0, sizeof *c);
    char kind[256];
    snprintf(kind, sizeof kind, "%s/kind", cs);
    const char *k = dpt_st_meta(st, kind);
    c->d.kind = k && strcmp(k, "gru") == 0 ? DPT_RNN_GRU : DPT_RNN_LSTM;
    int n = c->d.n = meta_int(st, cs, "n"), t = c->d.t = meta_int(st, cs, "t");
    int f = c->d.f = meta_int(st, cs, "f"), h = c->d.h = meta_int(st, cs, "h");
    size_t gh = (size_t)dpt_rnn_gates(c->d.kind) * h, nh = (size_t)n * h;
    float *lf = fixture_load(st, cs, "len", n);
    c->len = malloc(n * sizeof *c->len);
    for (int b = 0; b < n; b++)
        c->len[b] = (int)lf[b];
    free(lf);
    c->x = fixture_load(st, cs, "x", (size_t)n * t * f);
    c->w_ih = fixture_load(st, cs, "w_ih", gh * f), c->w_hh = fixture_load(st, cs, "w_hh", gh * h);
    c->b_ih = fixture_load(st, cs, "b_ih", gh), c->b_hh = fixture_load(st, cs, "b_hh", gh);
    c->h0 = fixture_load(st, cs, "h0", nh), c->dy = fixture_load(st, cs, "dy", (size_t)n * t * h);
    c->dhn = fixture_load(st, cs, "dhn", nh);
    c->y = fixture_load(st, cs, "y", (size_t)n * t * h), c->hn = fixture_load(st, cs, "hn", nh);
    c->dx = fixture_load(st, cs, "dx", (size_t)n * t * f);
    c->dw_ih = fixture_load(st, cs, "dw_ih", gh * f), c->dw_hh = fixture_load(st, cs, "dw_hh", gh * h);
    c->db_ih = fixture_load(st, cs, "db_ih", gh), c->db_hh = fixture_load(st, cs, "db_hh", gh);
    c->dh0 = fixture_load(st, cs, "dh0", nh);
    if (c->d.kind == DPT_RNN_LSTM) {
        c->c0 = fixture_load(st, cs, "c0", nh), c->dcn = fixture_load(st, cs, "dcn", nh);
        c->cn = fixture_load(st, cs, "cn", nh), c->dc0 = fixture_load(st, cs, "dc0", nh);
    }
}

static void rcase_free(rcase *c)
{
    float **fs[] = {&c->x,  &c->w_ih, &c->w_hh, &c->b_ih,  &c->b_hh,  &c->h0,    &c->c0,
                    &c->dy, &c->dhn,  &c->dcn,  &c->y,     &c->hn,    &c->cn,    &c->dx,
                    &c->dw_ih, &c->dw_hh, &c->db_ih, &c->db_hh, &c->dh0, &c->dc0};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++)
        free(*fs[i]);
    free(c->len);
}

static void cmp(const char *cs, const char *what, const float *got, const float *ref, size_t n)
{
    char label[256];
    snprintf(label, sizeof label, "%s %s", cs, what);
    tu_check_close(label, got, ref, n, REF_TOL);
}

/* Whole sequences in one call, against the references. */
static void whole(const char *cs, const rcase *c)
{
    const dpt_rnn_desc *d = &c->d;
    const int lstm = d->kind == DPT_RNN_LSTM;
    size_t n = d->n, t = d->t, f = d->f, h = d->h, gh = (size_t)dpt_rnn_gates(d->kind) * h;
    size_t ns = dpt_rnn_save_floats(d), nw = dpt_rnn_work_floats(d);
    float *save = guarded(ns), *work = guarded(nw);
    float *y = nans(n * t * h), *hn = nans(n * h), *cn = nans(n * h);
    dpt_rnn_forward(d, c->x, c->len, c->w_ih, c->w_hh, c->b_ih, c->b_hh, c->h0, c->c0, y, hn,
                    lstm ? cn : NULL, save);
    cmp(cs, "y", y, c->y, n * t * h);
    cmp(cs, "hn", hn, c->hn, n * h);
    if (lstm)
        cmp(cs, "cn", cn, c->cn, n * h);
    float *dx = nans(n * t * f), *dwi = nans(gh * f), *dwh = nans(gh * h), *dbi = nans(gh);
    float *dbh = nans(gh), *dh0 = nans(n * h), *dc0 = nans(n * h);
    dpt_rnn_backward(d, c->x, c->len, c->w_ih, c->w_hh, save, c->dy, c->dhn, c->dcn, dx, dwi, dwh,
                     dbi, dbh, dh0, lstm ? dc0 : NULL, work);
    cmp(cs, "dx", dx, c->dx, n * t * f);
    cmp(cs, "dw_ih", dwi, c->dw_ih, gh * f);
    cmp(cs, "dw_hh", dwh, c->dw_hh, gh * h);
    cmp(cs, "db_ih", dbi, c->db_ih, gh);
    cmp(cs, "db_hh", dbh, c->db_hh, gh);
    cmp(cs, "dh0", dh0, c->dh0, n * h);
    if (lstm)
        cmp(cs, "dc0", dc0, c->dc0, n * h);
    check_guard("save", save, ns);
    check_guard("work", work, nw);
    /* Without dx, dh0, dc0 (optional outputs) the rest is unchanged. */
    float *dwi2 = nans(gh * f);
    dpt_rnn_backward(d, c->x, c->len, c->w_ih, c->w_hh, save, c->dy, c->dhn, c->dcn, NULL, dwi2,
                     dwh, dbi, dbh, NULL, NULL, work);
    CHECK_MSG(memcmp(dwi, dwi2, gh * f * sizeof *dwi) == 0, "%s: dw_ih differs without dx", cs);
    free(save), free(work), free(y), free(hn), free(cn), free(dx), free(dwi), free(dwh);
    free(dbi), free(dbh), free(dh0), free(dc0), free(dwi2);
}

/* NULL for h0/c0 means zeros, NULL for dy/dhn/dcn means zero gradient
 * (output=last passes only dhn): same bytes as explicit zeros. */
static void nulls(const char *cs, const rcase *c)
{
    const dpt_rnn_desc *d = &c->d;
    size_t n = d->n, t = d->t, f = d->f, h = d->h, gh = (size_t)dpt_rnn_gates(d->kind) * h;
    float *zero = calloc(n * t * (h > f ? h : f), sizeof *zero);
    float *save[2], *y[2], *hn[2], *cn[2], *dx[2], *dwi[2], *dwh[2], *dbi[2], *dbh[2], *dh0[2];
    float *dc0[2], *work = nans(dpt_rnn_work_floats(d));
    for (int k = 0; k < 2; k++) {
        save[k] = nans(dpt_rnn_save_floats(d)), y[k] = nans(n * t * h), hn[k] = nans(n * h);
        cn[k] = nans(n * h), dx[k] = nans(n * t * f), dwi[k] = nans(gh * f);
        dwh[k] = nans(gh * h), dbi[k] = nans(gh), dbh[k] = nans(gh), dh0[k] = nans(n * h);
        dc0[k] = nans(n * h);
        dpt_rnn_forward(d, c->x, c->len, c->w_ih, c->w_hh, c->b_ih, c->b_hh, k ? zero : NULL,
                        k ? zero : NULL, y[k], hn[k], cn[k], save[k]);
        dpt_rnn_backward(d, c->x, c->len, c->w_ih, c->w_hh, save[k], k ? zero : NULL, c->dhn,
                         k ? zero : NULL, dx[k], dwi[k], dwh[k], dbi[k], dbh[k], dh0[k], dc0[k],
                         work);
    }
    int lstm = d->kind == DPT_RNN_LSTM;
    CHECK_MSG(memcmp(y[0], y[1], n * t * h * sizeof(float)) == 0, "%s: y, h0 NULL vs 0", cs);
    CHECK_MSG(memcmp(hn[0], hn[1], n * h * sizeof(float)) == 0, "%s: hn, h0 NULL vs 0", cs);
    CHECK_MSG(!lstm || memcmp(cn[0], cn[1], n * h * sizeof(float)) == 0, "%s: cn", cs);
    CHECK_MSG(memcmp(dx[0], dx[1], n * t * f * sizeof(float)) == 0, "%s: dx, dy NULL vs 0", cs);
    CHECK_MSG(memcmp(dwh[0], dwh[1], gh * h * sizeof(float)) == 0, "%s: dw_hh, NULL vs 0", cs);
    CHECK_MSG(memcmp(dh0[0], dh0[1], n * h * sizeof(float)) == 0, "%s: dh0, NULL vs 0", cs);
    CHECK_MSG(!lstm || memcmp(dc0[0], dc0[1], n * h * sizeof(float)) == 0, "%s: dc0", cs);
    for (int k = 0; k < 2; k++) {
        free(save[k]), free(y[k]), free(hn[k]), free(cn[k]), free(dx[k]), free(dwi[k]);
        free(dwh[k]), free(dbi[k]), free(dbh[k]), free(dh0[k]), free(dc0[k]);
    }
    free(zero), free(work);
}

/* Sequence b of whole [N][T][k] to and from chunks [N][t1][k], [N][T-t1][k]. */
static void split(float *a, float *b2, const float *whole, int b, int T, int t1, int k)
{
    const size_t t2 = (size_t)(T - t1);
    memcpy(a + (size_t)b * t1 * k, whole + (size_t)b * T * k, (size_t)t1 * k * sizeof *a);
    memcpy(b2 + b * t2 * k, whole + ((size_t)b * T + t1) * k, t2 * k * sizeof *a);
}

static void join(float *whole, const float *a, const float *b2, int b, int T, int t1, int k)
{
    const size_t t2 = (size_t)(T - t1);
    memcpy(whole + (size_t)b * T * k, a + (size_t)b * t1 * k, (size_t)t1 * k * sizeof *a);
    memcpy(whole + ((size_t)b * T + t1) * k, b2 + b * t2 * k, t2 * k * sizeof *a);
}

/* Two consecutive chunks [0, t1) and [t1, T): state carried forward,
 * dh0/dc0 carried backward, against the whole-sequence references. */
static void chunks(const char *cs, const rcase *c)
{
    const dpt_rnn_desc *d = &c->d;
    const int lstm = d->kind == DPT_RNN_LSTM;
    const int N = d->n, T = d->t, F = d->f, H = d->h;
    if (T < 2)
        return;
    const int t1 = T / 2 + 1, t2 = T - t1;
    const size_t gh = (size_t)dpt_rnn_gates(d->kind) * H, nh = (size_t)N * H;
    dpt_rnn_desc d1 = *d, d2 = *d;
    d1.t = t1, d2.t = t2;
    int *l1 = malloc(N * sizeof *l1), *l2 = malloc(N * sizeof *l2);
    float *x1 = nans((size_t)N * t1 * F), *x2 = nans((size_t)N * t2 * F);
    float *dy1 = nans((size_t)N * t1 * H), *dy2 = nans((size_t)N * t2 * H);
    for (int b = 0; b < N; b++) {
        int L = c->len[b];
        l1[b] = L < t1 ? L : t1, l2[b] = L > t1 ? L - t1 : 0;
        split(x1, x2, c->x, b, T, t1, F);
        split(dy1, dy2, c->dy, b, T, t1, H);
    }
    float *s1 = nans(dpt_rnn_save_floats(&d1)), *s2 = nans(dpt_rnn_save_floats(&d2));
    float *w1 = nans(dpt_rnn_work_floats(&d1)), *w2 = nans(dpt_rnn_work_floats(&d2));
    float *y = nans((size_t)N * T * H), *y1 = nans((size_t)N * t1 * H);
    float *y2 = nans((size_t)N * t2 * H);
    float *ha = nans(nh), *ca = nans(nh), *hb = nans(nh), *cb = nans(nh);
    dpt_rnn_forward(&d1, x1, l1, c->w_ih, c->w_hh, c->b_ih, c->b_hh, c->h0, c->c0, y1, ha, ca, s1);
    dpt_rnn_forward(&d2, x2, l2, c->w_ih, c->w_hh, c->b_ih, c->b_hh, ha, lstm ? ca : NULL, y2, hb,
                    cb, s2);
    for (int b = 0; b < N; b++)
        join(y, y1, y2, b, T, t1, H);
    cmp(cs, "chunked y", y, c->y, (size_t)N * T * H);
    cmp(cs, "chunked hn", hb, c->hn, nh);
    if (lstm)
        cmp(cs, "chunked cn", cb, c->cn, nh);

    float *g[2][4], *dxa = nans((size_t)N * t1 * F), *dxb = nans((size_t)N * t2 * F);
    for (int k = 0; k < 2; k++) {
        g[k][0] = nans(gh * F), g[k][1] = nans(gh * H), g[k][2] = nans(gh), g[k][3] = nans(gh);
    }
    float *dh = nans(nh), *dc = nans(nh), *dh0 = nans(nh), *dc0 = nans(nh);
    dpt_rnn_backward(&d2, x2, l2, c->w_ih, c->w_hh, s2, dy2, c->dhn, c->dcn, dxb, g[1][0], g[1][1],
                     g[1][2], g[1][3], dh, lstm ? dc : NULL, w2);
    dpt_rnn_backward(&d1, x1, l1, c->w_ih, c->w_hh, s1, dy1, dh, lstm ? dc : NULL, dxa, g[0][0],
                     g[0][1], g[0][2], g[0][3], dh0, lstm ? dc0 : NULL, w1);
    size_t sz[4] = {gh * F, gh * H, gh, gh};
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < sz[k]; i++)
            g[0][k][i] += g[1][k][i];
    float *dx = nans((size_t)N * T * F);
    for (int b = 0; b < N; b++)
        join(dx, dxa, dxb, b, T, t1, F);
    cmp(cs, "chunked dx", dx, c->dx, (size_t)N * T * F);
    cmp(cs, "chunked dw_ih", g[0][0], c->dw_ih, sz[0]);
    cmp(cs, "chunked dw_hh", g[0][1], c->dw_hh, sz[1]);
    cmp(cs, "chunked db_ih", g[0][2], c->db_ih, sz[2]);
    cmp(cs, "chunked db_hh", g[0][3], c->db_hh, sz[3]);
    cmp(cs, "chunked dh0", dh0, c->dh0, nh);
    if (lstm)
        cmp(cs, "chunked dc0", dc0, c->dc0, nh);
    free(l1), free(l2), free(x1), free(x2), free(dy1), free(dy2), free(s1), free(s2), free(w1);
    free(w2), free(y), free(y1), free(y2), free(ha), free(ca), free(hb), free(cb), free(dxa);
    free(dxb), free(dh), free(dc), free(dh0), free(dc0), free(dx);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 4; j++)
            free(g[k][j]);
}

/* Sequence b of [N][T][k] moved so its L valid steps end at T (dir 1) or
 * back to the start (dir 0); the rest zero. */
static void shift(float *dst, const float *src, int b, int T, int L, int k, int dir)
{
    float *o = dst + (size_t)b * T * k;
    const float *i = src + (size_t)b * T * k;
    memset(o, 0, (size_t)T * k * sizeof *o);
    memcpy(o + (size_t)(dir ? T - L : 0) * k, i + (size_t)(dir ? 0 : T - L) * k,
           (size_t)L * k * sizeof *o);
}

/* Bit for bit with the vector kernels (each sequence's arithmetic is its
 * own); the BLAS path's products may take another route for rows at the
 * edge of a block, so there within 1e-6 of the largest. */
static void same(const char *cs, const char *what, const float *a, const float *b, size_t n)
{
    if (strcmp(dpt_ops_kernels(), "generic") == 0) {
        char label[256];
        snprintf(label, sizeof label, "%s %s left vs right", cs, what);
        tu_check_close(label, a, b, n, 1e-6);
        return;
    }
    CHECK_MSG(memcmp(a, b, n * sizeof *a) == 0, "%s: %s differs between left and right padding",
              cs, what);
}

/* The case with left padding against right padding and the references. */
static void left(const char *cs, const rcase *c)
{
    const int lstm = c->d.kind == DPT_RNN_LSTM;
    const int N = c->d.n, T = c->d.t, F = c->d.f, H = c->d.h;
    const size_t gh = (size_t)dpt_rnn_gates(c->d.kind) * H, nh = (size_t)N * H;
    const size_t nx = (size_t)N * T * F, ny = (size_t)N * T * H;
    dpt_rnn_desc dl = c->d;
    dl.pad_left = 1;
    float *xl = nans(nx), *dyl = nans(ny), *r[2][9];
    for (int b = 0; b < N; b++) {
        shift(xl, c->x, b, T, c->len[b], F, 1);
        shift(dyl, c->dy, b, T, c->len[b], H, 1);
    }
    size_t sz[9] = {ny, nh, nh, nx, gh * F, gh * H, gh, nh, nh}; /* y hn cn dx dwi dwh dbi dh0 dc0 */
    for (int k = 0; k < 2; k++) {
        const dpt_rnn_desc *d = k ? &dl : &c->d;
        float *save = nans(dpt_rnn_save_floats(d)), *work = nans(dpt_rnn_work_floats(d));
        float *dwi = nans(gh * F), *dbh = nans(gh);
        for (int j = 0; j < 9; j++)
            r[k][j] = nans(sz[j]);
        dpt_rnn_forward(d, k ? xl : c->x, c->len, c->w_ih, c->w_hh, c->b_ih, c->b_hh, c->h0, c->c0,
                        r[k][0], r[k][1], lstm ? r[k][2] : NULL, save);
        dpt_rnn_backward(d, k ? xl : c->x, c->len, c->w_ih, c->w_hh, save, k ? dyl : c->dy,
                         c->dhn, c->dcn, r[k][3], r[k][4], r[k][5], r[k][6], dbh, r[k][7],
                         lstm ? r[k][8] : NULL, work);
        free(save), free(work), free(dwi), free(dbh);
    }
    float *y = nans(ny), *dx = nans(nx);
    for (int b = 0; b < N; b++) {
        /* Padded steps must be exactly zero before shifting them away. */
        for (int t = 0; t < T - c->len[b]; t++) {
            for (int j = 0; j < H; j++)
                CHECK_MSG(r[1][0][((size_t)b * T + t) * H + j] == 0.0f, "%s: left y nonzero", cs);
            for (int j = 0; j < F; j++)
                CHECK_MSG(r[1][3][((size_t)b * T + t) * F + j] == 0.0f, "%s: left dx nonzero", cs);
        }
        shift(y, r[1][0], b, T, c->len[b], H, 0);
        shift(dx, r[1][3], b, T, c->len[b], F, 0);
    }
    same(cs, "y", y, r[0][0], ny);
    same(cs, "hn", r[1][1], r[0][1], nh);
    same(cs, "dx", dx, r[0][3], nx);
    same(cs, "dh0", r[1][7], r[0][7], nh);
    if (lstm) {
        same(cs, "cn", r[1][2], r[0][2], nh);
        same(cs, "dc0", r[1][8], r[0][8], nh);
    }
    cmp(cs, "left y", y, c->y, ny);
    cmp(cs, "left dx", dx, c->dx, nx);
    cmp(cs, "left dw_ih", r[1][4], c->dw_ih, gh * F);
    cmp(cs, "left dw_hh", r[1][5], c->dw_hh, gh * H);
    cmp(cs, "left db_ih", r[1][6], c->db_ih, gh);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 9; j++)
            free(r[k][j]);
    free(xl), free(dyl), free(y), free(dx);
}

static void fixture_cases(void)
{
    char path[1024];
    tu_fixture("ops_rnn.safetensors", path, sizeof path);
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(path, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    const char *cases = dpt_st_meta(st, "cases");
    CHECK(cases != NULL);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", cases ? cases : "");
    int count = 0;
    for (char *cs = strtok(buf, ","); cs; cs = strtok(NULL, ","), count++) {
        rcase c;
        rcase_load(st, cs, &c);
        whole(cs, &c);
        chunks(cs, &c);
        nulls(cs, &c);
        left(cs, &c);
        rcase_free(&c);
    }
    CHECK_MSG(count == 10, "expected 10 cases, found %d", count);
    dpt_st_close(st);
}

/* ---- finite differences ------------------------------------------------- */

typedef struct fd_net {
    dpt_rnn_desc d;
    const int *len;
    float *p[7]; /* x, w_ih, w_hh, b_ih, b_hh, h0, c0 */
    size_t np[7];
    float *r, *rh, *rc, *y, *hn, *cn, *save;
} fd_net;

static double fd_loss(fd_net *m)
{
    const dpt_rnn_desc *d = &m->d;
    const int lstm = d->kind == DPT_RNN_LSTM;
    dpt_rnn_forward(d, m->p[0], m->len, m->p[1], m->p[2], m->p[3], m->p[4], m->p[5],
                    lstm ? m->p[6] : NULL, m->y, m->hn, m->cn, m->save);
    double l = 0.0;
    size_t ny = (size_t)d->n * d->t * d->h, nh = (size_t)d->n * d->h;
    for (size_t i = 0; i < ny; i++)
        l += (double)m->y[i] * m->r[i];
    for (size_t i = 0; i < nh; i++)
        l += (double)m->hn[i] * m->rh[i] + (lstm ? (double)m->cn[i] * m->rc[i] : 0.0);
    return l;
}

static float urand(dpt_rng *rng) { return (float)(dpt_rng_uniform(rng) * 2.0 - 1.0); }

static void fd_check(dpt_rng *rng, dpt_rnn_kind kind, int n, int t, int f, int h, const int *len,
                     int pad_left)
{
    static const char *names[7] = {"x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0"};
    fd_net m = {.d = {kind, n, t, f, h, pad_left}, .len = len};
    const int lstm = kind == DPT_RNN_LSTM;
    size_t gh = (size_t)dpt_rnn_gates(kind) * h, nh = (size_t)n * h, ny = (size_t)n * t * h;
    size_t np[7] = {(size_t)n * t * f, gh * f, gh * h, gh, gh, nh, nh};
    for (int k = 0; k < 7; k++) {
        m.np[k] = np[k];
        m.p[k] = malloc(np[k] * sizeof(float));
        for (size_t i = 0; i < np[k]; i++)
            m.p[k][i] = urand(rng) * (k == 0 ? 1.0f : 0.6f);
    }
    m.r = malloc(ny * sizeof(float)), m.rh = malloc(nh * sizeof(float));
    m.rc = malloc(nh * sizeof(float));
    for (size_t i = 0; i < ny; i++)
        m.r[i] = urand(rng);
    for (size_t i = 0; i < nh; i++)
        m.rh[i] = urand(rng), m.rc[i] = urand(rng);
    m.y = malloc(ny * sizeof(float)), m.hn = malloc(nh * sizeof(float));
    m.cn = malloc(nh * sizeof(float));
    m.save = malloc(dpt_rnn_save_floats(&m.d) * sizeof(float));
    float *work = malloc(dpt_rnn_work_floats(&m.d) * sizeof(float));
    float *g[7];
    for (int k = 0; k < 7; k++)
        g[k] = nans(np[k]);
    fd_loss(&m);
    dpt_rnn_backward(&m.d, m.p[0], len, m.p[1], m.p[2], m.save, m.r, m.rh, lstm ? m.rc : NULL,
                     g[0], g[1], g[2], g[3], g[4], g[5], lstm ? g[6] : NULL, work);
    double worst = 0.0;
    for (int k = 0; k < (lstm ? 7 : 6); k++) {
        float gmax = 0.0f;
        for (size_t i = 0; i < np[k]; i++)
            gmax = fmaxf(gmax, fabsf(g[k][i]));
        for (int s = 0; s < 20; s++) {
            size_t i = dpt_rng_below(rng, (uint32_t)np[k]);
            float keep = m.p[k][i];
            const float eps = 1e-2f;
            m.p[k][i] = keep + eps;
            double lp = fd_loss(&m);
            m.p[k][i] = keep - eps;
            double lm = fd_loss(&m);
            m.p[k][i] = keep;
            double fd = (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
            double ref = fmax(fabs(g[k][i]), 0.1 * gmax);
            double e = ref > 0 ? fabs(fd - g[k][i]) / ref : fabs(fd);
            if (e > worst)
                worst = e;
            CHECK_MSG(e <= FD_TOL, "%s fd %s[%zu]: fd %.6g, backward %.6g",
                      lstm ? "lstm" : "gru", names[k], i, fd, (double)g[k][i]);
        }
    }
    printf("  fd %s n%d t%d f%d h%d%s: worst rel err %.3e (tol %.0e)\n", lstm ? "lstm" : "gru", n,
           t, f, h, pad_left ? " left" : "", worst, FD_TOL);
    for (int k = 0; k < 7; k++)
        free(m.p[k]), free(g[k]);
    free(m.r), free(m.rh), free(m.rc), free(m.y), free(m.hn), free(m.cn), free(m.save), free(work);
}

/* Forward and backward of c sequences ([c][T][F], zero output gradients
 * from sequence z on); outputs into o[0..9]: y hn cn dx dwi dwh dbi dbh dh0 dc0. */
static void run_all(dpt_rnn_desc *d, const float *x, const int *len, float *const *w,
                    const float *dy, const float *dhn, float **o)
{
    const int lstm = d->kind == DPT_RNN_LSTM;
    float *save = nans(dpt_rnn_save_floats(d)), *work = nans(dpt_rnn_work_floats(d));
    dpt_rnn_forward(d, x, len, w[0], w[1], w[2], w[3], NULL, NULL, o[0], o[1], lstm ? o[2] : NULL,
                    save);
    dpt_rnn_backward(d, x, len, w[0], w[1], save, dy, dhn, lstm ? dhn : NULL, o[3], o[4], o[5],
                     o[6], o[7], o[8], lstm ? o[9] : NULL, work);
    free(save), free(work);
}

static void sparse_check(dpt_rng *rng, dpt_rnn_kind kind)
{
    const int N = 4, T = 9, F = 20, H = 24, lstm = kind == DPT_RNN_LSTM;
    const size_t gh = (size_t)dpt_rnn_gates(kind) * H;
    static const int len[4] = {9, 4, 0, 9};
    float *x = calloc((size_t)N * T * F, sizeof *x), *dy = calloc((size_t)N * T * H, sizeof *dy);
    float *dhn = calloc((size_t)N * H, sizeof *dhn), *w[4];
    size_t nw[4] = {gh * F, gh * H, gh, gh};
    for (int k = 0; k < 4; k++) {
        w[k] = malloc(nw[k] * sizeof(float));
        for (size_t i = 0; i < nw[k]; i++)
            w[k][i] = urand(rng) * 0.3f;
    }
    for (int r = 0; r < (N - 1) * T; r++) {
        x[(size_t)r * F + dpt_rng_below(rng, F)] = 1.0f;
        for (int j = 0; j < H; j++)
            dy[(size_t)r * H + j] = (r % T) < len[r / T] ? urand(rng) : 0.0f;
    }
    for (int j = 0; j < (N - 1) * H; j++)
        dhn[j] = urand(rng);
    for (int i = 0; i < T * F; i++) /* the dense sequence */
        x[(size_t)(N - 1) * T * F + i] = urand(rng);
    size_t sz[10] = {(size_t)N * T * H, (size_t)N * H, (size_t)N * H, (size_t)N * T * F,
                     nw[0], nw[1], gh, gh, (size_t)N * H, (size_t)N * H};
    size_t part[10] = {(size_t)(N - 1) * T * H, (size_t)(N - 1) * H, (size_t)(N - 1) * H,
                       (size_t)(N - 1) * T * F, nw[0], nw[1], gh, gh, (size_t)(N - 1) * H,
                       (size_t)(N - 1) * H};
    static const char *names[10] = {"y", "hn", "cn", "dx", "dw_ih", "dw_hh", "db_ih", "db_hh",
                                    "dh0", "dc0"};
    float *o[2][10];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 10; j++)
            o[k][j] = nans(sz[j]);
    dpt_rnn_desc dd = {kind, N, T, F, H, 0}, ds = {kind, N - 1, T, F, H, 0};
    run_all(&dd, x, len, w, dy, dhn, o[0]);
    run_all(&ds, x, len, w, dy, dhn, o[1]);
    for (int j = 0; j < 10; j++) {
        if (!lstm && (j == 2 || j == 9))
            continue;
        char label[64];
        snprintf(label, sizeof label, "%s one-hot %s", lstm ? "lstm" : "gru", names[j]);
        tu_check_close(label, o[1][j], o[0][j], part[j], REF_TOL);
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 10; j++)
            free(o[k][j]);
    for (int k = 0; k < 4; k++)
        free(w[k]);
    free(x), free(dy), free(dhn);
}

int main(void)
{
    /* Every kernel set this CPU has: the BLAS path ("generic") and the
     * vector kernels of rnn_isa.h. */
    static const char *sets[] = {"generic", "avx2", "avx512"};
    for (int ks = 0; ks < 3; ks++) {
        if (!dpt_ops_kernels_supported(sets[ks])) {
            printf("kernels %s: not on this CPU, skipped\n", sets[ks]);
            continue;
        }
        dpt_ops_set_kernels(sets[ks]);
        printf("kernels %s\n", sets[ks]);
        fixture_cases();
        dpt_rng rng_state, *rng = &rng_state;
        dpt_rng_seed(rng, 2020, 0);
        static const int len[4] = {7, 2, 0, 5};
        for (int k = 0; k < 2; k++) {
            dpt_rnn_kind kind = k ? DPT_RNN_GRU : DPT_RNN_LSTM;
            fd_check(rng, kind, 4, 7, 3, 5, len, 0);
            fd_check(rng, kind, 4, 7, 3, 5, len, 1);
            fd_check(rng, kind, 2, 1, 4, 3, NULL, 0);
            sparse_check(rng, kind);
        }
    }
    dpt_ops_set_kernels("auto");
    return tu_exit();
}
