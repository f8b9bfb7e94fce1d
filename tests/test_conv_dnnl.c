/* The DNNL convolution algorithm (src/ops/conv_dnnl.c) on its own: what the
 * table-wide property test does not look at.
 *
 * 1. Every pass (forward with and without bias, dx, dw, db), in both
 *    layouts (plain NCHW and oneDNN's blocked ones) and the automatic
 *    choice, against a
 *    float64 naive convolution on shapes covering stride, padding,
 *    dilation, groups, depthwise and 1x1, with
 *      max_i |got_i - ref_i| / max_i |ref_i|  <  1e-5.
 * 2. Deterministic: a second call gives the same bits, also after the
 *    cache was released (primitives made again) and when two threads run
 *    the same and other shapes at once (the cache is shared).
 * 3. The bias gradient is the GEMM path's bits exactly (same sum order).
 * 4. A call through dpt_conv2d_forward_ex / backward_ex takes the cache's
 *    lock once (supports' lookup is handed to the call), and a lookup no
 *    call takes does not keep its entry referenced.
 *
 * Skips (77) when dptrain was built without oneDNN (or DPT_KERNELS=generic,
 * the reference path, which leaves oneDNN out). */
#include "ops/conv_dnnl.h"
#include "ops/ops.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static int failures;

static unsigned long long rng = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

typedef struct bufs {
    dpt_conv2d_desc d;
    size_t nx, nw, ny;
    float *x, *w, *b, *dy, *y, *dx, *dw, *db, *work;
} bufs;

static float *rnd(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static void bufs_init(bufs *B, dpt_conv2d_desc d)
{
    if (dpt_conv2d_desc_init(&d) != 0) {
        fprintf(stderr, "bad test shape\n");
        exit(1);
    }
    B->d = d;
    B->nx = (size_t)d.n * d.c_in * d.h * d.w;
    B->nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
    B->ny = (size_t)d.n * d.c_out * d.out_h * d.out_w;
    B->x = rnd(B->nx), B->w = rnd(B->nw), B->b = rnd(d.c_out), B->dy = rnd(B->ny);
    B->y = rnd(B->ny), B->dx = rnd(B->nx), B->dw = rnd(B->nw), B->db = rnd(d.c_out);
    size_t wf = dpt_conv_dnnl_work_floats(&d);
    B->work = rnd(wf);
}

static void bufs_free(bufs *B)
{
    free(B->x), free(B->w), free(B->b), free(B->dy), free(B->y), free(B->dx);
    free(B->dw), free(B->db), free(B->work);
}

/* float64 reference: y, and from dy: dx, dw, db. */
static void naive(const dpt_conv2d_desc *d, const float *x, const float *w, const float *b,
                  const float *dy, double *y, double *dx, double *dw, double *db)
{
    const int G = d->groups, cgi = d->c_in / G, cgo = d->c_out / G;
    const size_t nx = (size_t)d->n * d->c_in * d->h * d->w;
    const size_t nw = (size_t)d->c_out * cgi * d->kh * d->kw;
    memset(dx, 0, nx * sizeof *dx);
    memset(dw, 0, nw * sizeof *dw);
    memset(db, 0, (size_t)d->c_out * sizeof *db);
    for (int i = 0; i < d->n; i++)
        for (int co = 0; co < d->c_out; co++)
            for (int oy = 0; oy < d->out_h; oy++)
                for (int ox = 0; ox < d->out_w; ox++) {
                    size_t yi = (((size_t)i * d->c_out + co) * d->out_h + oy) * d->out_w + ox;
                    double acc = b ? b[co] : 0.0, g = dy[yi];
                    db[co] += g;
                    for (int c = 0; c < cgi; c++) {
                        int ci = co / cgo * cgi + c;
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                int iy = oy * d->stride - d->pad + ki * d->dilation;
                                int ix = ox * d->stride - d->pad + kj * d->dilation;
                                if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
                                    continue;
                                size_t xi = (((size_t)i * d->c_in + ci) * d->h + iy) * d->w + ix;
                                size_t wi = (((size_t)co * cgi + c) * d->kh + ki) * d->kw + kj;
                                acc += (double)x[xi] * w[wi];
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                    }
                    y[yi] = acc;
                }
}

static double rel_err(const float *got, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - ref[i]);
        num = e > num || e != e ? e : num;
        den = fabs(ref[i]) > den ? fabs(ref[i]) : den;
    }
    return den > 0 ? num / den : num;
}

static void check(const char *what, const dpt_conv2d_desc *d, double e)
{
    if (!(e < TOL)) {
        failures++;
        fprintf(stderr,
                "FAIL %s: n%d c%d->%d %dx%d k%dx%d s%d p%d d%d g%d: rel err %.3g\n", what,
                d->n, d->c_in, d->c_out, d->h, d->w, d->kh, d->kw, d->stride, d->pad,
                d->dilation, d->groups, e);
    }
}

static void run(bufs *B, int bias, int with_dx)
{
    dpt_conv_dnnl_forward(&B->d, B->x, NULL, B->w, bias ? B->b : NULL, B->y, B->work, NULL,
                          NULL);
    dpt_conv_dnnl_backward(&B->d, B->x, NULL, B->w, B->dy, NULL, NULL, with_dx ? B->dx : NULL,
                           B->dw, B->db, B->work, NULL);
}

/* must: the shape has to be supported (the auto layout falls back to the
 * other layout where one has no kernel; a forced one does not). */
static void reference_case(dpt_conv2d_desc d0, int must)
{
    bufs B;
    bufs_init(&B, d0);
    const dpt_conv2d_desc *d = &B.d;
    if (!dpt_conv_dnnl_supports(d)) {
        if (!must) {
            bufs_free(&B);
            return;
        }
        failures++;
        fprintf(stderr, "FAIL: shape c%d->%d g%d not supported\n", d->c_in, d->c_out, d->groups);
        bufs_free(&B);
        return;
    }
    double *y = malloc(B.ny * sizeof *y), *dx = malloc(B.nx * sizeof *dx);
    double *dw = malloc(B.nw * sizeof *dw), *db = malloc((size_t)d->c_out * sizeof *db);
    if (!y || !dx || !dw || !db)
        exit(1);
    for (int bias = 0; bias < 2; bias++) {
        naive(d, B.x, B.w, bias ? B.b : NULL, B.dy, y, dx, dw, db);
        run(&B, bias, 1);
        check(bias ? "forward+bias" : "forward", d, rel_err(B.y, y, B.ny));
        check("dx", d, rel_err(B.dx, dx, B.nx));
        check("dw", d, rel_err(B.dw, dw, B.nw));
        check("db", d, rel_err(B.db, db, (size_t)d->c_out));
    }

    /* Same bits on a second run, with dx NULL leaving dx alone. */
    float *y1 = malloc(B.ny * sizeof *y1), *dw1 = malloc(B.nw * sizeof *dw1);
    float *dx1 = malloc(B.nx * sizeof *dx1);
    if (!y1 || !dw1 || !dx1)
        exit(1);
    memcpy(y1, B.y, B.ny * sizeof *y1), memcpy(dw1, B.dw, B.nw * sizeof *dw1);
    memcpy(dx1, B.dx, B.nx * sizeof *dx1);
    run(&B, 1, 0);
    if (memcmp(y1, B.y, B.ny * sizeof *y1) || memcmp(dw1, B.dw, B.nw * sizeof *dw1) ||
        memcmp(dx1, B.dx, B.nx * sizeof *dx1)) {
        failures++;
        fprintf(stderr, "FAIL: second run differs (or dx written when NULL)\n");
    }

    /* The bias gradient: the GEMM path's bits. */
    float *work = malloc((dpt_conv2d_work_floats(d) + 1) * sizeof *work);
    float *db_ref = malloc((size_t)d->c_out * sizeof *db_ref), *dw_ref = malloc(B.nw * 4);
    if (!work || !db_ref || !dw_ref)
        exit(1);
    dpt_ops_set_kernels("generic"); /* the GEMM path, not the direct kernels */
    dpt_conv2d_backward(d, B.x, B.w, B.dy, NULL, dw_ref, db_ref, work);
    dpt_ops_set_kernels("auto");
    if (memcmp(db_ref, B.db, (size_t)d->c_out * sizeof *db_ref)) {
        failures++;
        fprintf(stderr, "FAIL: db is not the GEMM path's bits\n");
    }
    free(work), free(db_ref), free(dw_ref);
    free(y1), free(dw1), free(dx1);
    free(y), free(dx), free(dw), free(db);
    bufs_free(&B);
}

/* ---- threads: the shared cache under concurrent use ---------------------- */

typedef struct job {
    bufs *B;
    float *y, *dw, *dx; /* this thread's outputs */
} job;

static void *worker(void *arg)
{
    job *j = arg;
    bufs *B = j->B;
    /* own work and outputs: the inputs are shared read-only */
    float *work = malloc((dpt_conv_dnnl_work_floats(&B->d) + 1) * sizeof *work);
    float *db = malloc((size_t)B->d.c_out * sizeof *db);
    if (!work || !db)
        exit(1);
    for (int r = 0; r < 3; r++) {
        dpt_conv_dnnl_forward(&B->d, B->x, NULL, B->w, B->b, j->y, work, NULL, NULL);
        dpt_conv_dnnl_backward(&B->d, B->x, NULL, B->w, B->dy, NULL, NULL, j->dx, j->dw, db,
                               work, NULL);
    }
    free(work), free(db);
    return NULL;
}

static void thread_case(void)
{
    dpt_conv2d_desc sh[2] = {
        {.n = 5, .c_in = 16, .h = 12, .w = 12, .c_out = 24, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 3, .c_in = 8, .h = 9, .w = 11, .c_out = 8, .kh = 3, .kw = 3, .stride = 2, .pad = 1,
         .groups = 8},
    };
    bufs B[2];
    for (int s = 0; s < 2; s++) {
        bufs_init(&B[s], sh[s]);
        run(&B[s], 1, 1); /* the single-threaded bits, in B[s].y/dw/dx */
    }
    dpt_conv_dnnl_release(); /* the threads make the primitives again, racing */
    enum { T = 4 };
    job jobs[T];
    pthread_t th[T];
    for (int t = 0; t < T; t++) {
        bufs *b = &B[t % 2];
        jobs[t].B = b;
        jobs[t].y = malloc(b->ny * 4), jobs[t].dw = malloc(b->nw * 4), jobs[t].dx = malloc(b->nx * 4);
        if (!jobs[t].y || !jobs[t].dw || !jobs[t].dx ||
            pthread_create(&th[t], NULL, worker, &jobs[t]) != 0)
            exit(1);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        bufs *b = jobs[t].B;
        if (memcmp(jobs[t].y, b->y, b->ny * 4) || memcmp(jobs[t].dw, b->dw, b->nw * 4) ||
            memcmp(jobs[t].dx, b->dx, b->nx * 4)) {
            failures++;
            fprintf(stderr, "FAIL: thread %d's results differ from the single-thread run\n", t);
        }
        free(jobs[t].y), free(jobs[t].dw), free(jobs[t].dx);
    }
    bufs_free(&B[0]), bufs_free(&B[1]);
}

/* ---- one locked lookup per call ------------------------------------------ *
 * dpt_conv2d_forward_ex / backward_ex ask supports() and then run the
 * algorithm: supports' lookup is handed to the call, so a call takes the
 * cache's lock once. A lookup that no call takes is let go by the thread's
 * next one, when the thread ends, and is dropped unread after a release. */

static int refs_of(const dpt_conv2d_desc *d)
{
    int r;
    dpt_conv_dnnl_locks(d, &r);
    return r;
}

static void *supports_then_exit(void *arg)
{
    return (void *)(intptr_t)dpt_conv_dnnl_supports(arg);
}

static void expect_int(const char *what, long long got, long long want)
{
    if (got != want) {
        failures++;
        fprintf(stderr, "FAIL %s: %lld, want %lld\n", what, got, want);
    }
}

static void lock_case(void)
{
    dpt_conv2d_desc sh[2] = {
        {.n = 2, .c_in = 8, .h = 8, .w = 8, .c_out = 8, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
         .algo = DPT_CONV_ALGO_DNNL},
        {.n = 2, .c_in = 4, .h = 6, .w = 6, .c_out = 8, .kh = 3, .kw = 3, .stride = 2, .pad = 1,
         .algo = DPT_CONV_ALGO_DNNL},
    };
    bufs B[2];
    for (int s = 0; s < 2; s++)
        bufs_init(&B[s], sh[s]);
    const dpt_conv2d_desc *d = &B[0].d, *d1 = &B[1].d;
    float *work = malloc((dpt_conv2d_work_floats(d) + 1) * sizeof *work);
    float *y = malloc(B[0].ny * 4), *dx = malloc(B[0].nx * 4), *dw = malloc(B[0].nw * 4);
    float *db = malloc((size_t)d->c_out * 4);
    if (!work || !y || !dx || !dw || !db)
        exit(1);
    run(&B[0], 1, 1); /* makes the entry; B[0].y/dx/dw/db: the direct calls' bits */
    expect_int("refs after direct calls", refs_of(d), 0);

    unsigned long long n0 = dpt_conv_dnnl_locks(NULL, NULL);
    dpt_conv2d_forward_ex(d, B[0].x, NULL, B[0].w, B[0].b, y, work, NULL, NULL);
    expect_int("locks taken by forward_ex", (long long)(dpt_conv_dnnl_locks(NULL, NULL) - n0), 1);
    n0 = dpt_conv_dnnl_locks(NULL, NULL);
    dpt_conv2d_backward_ex(d, B[0].x, NULL, B[0].w, B[0].dy, NULL, NULL, dx, dw, db, work, NULL);
    expect_int("locks taken by backward_ex", (long long)(dpt_conv_dnnl_locks(NULL, NULL) - n0), 1);
    expect_int("refs after the _ex calls", refs_of(d), 0);
    if (memcmp(y, B[0].y, B[0].ny * 4) || memcmp(dx, B[0].dx, B[0].nx * 4) ||
        memcmp(dw, B[0].dw, B[0].nw * 4) || memcmp(db, B[0].db, (size_t)d->c_out * 4)) {
        failures++;
        fprintf(stderr, "FAIL: the _ex calls differ from the direct calls\n");
    }

    /* supports() without a call: kept, then let go by the next lookup */
    expect_int("supports", dpt_conv_dnnl_supports(d), 1);
    expect_int("refs kept by supports", refs_of(d), 1);
    expect_int("supports (other shape)", dpt_conv_dnnl_supports(d1), 1);
    expect_int("refs after another lookup", refs_of(d), 0);
    expect_int("refs kept (other shape)", refs_of(d1), 1);
    dpt_conv2d_forward_ex(d, B[0].x, NULL, B[0].w, B[0].b, y, work, NULL, NULL);
    expect_int("refs of the other shape after a call", refs_of(d1), 0);
    expect_int("refs after a call", refs_of(d), 0);
    if (memcmp(y, B[0].y, B[0].ny * 4)) {
        failures++;
        fprintf(stderr, "FAIL: forward_ex after another shape's supports differs\n");
    }

    /* ... and by its thread's end */
    pthread_t th;
    void *ok = NULL;
    if (pthread_create(&th, NULL, supports_then_exit, (void *)d) != 0 || pthread_join(th, &ok))
        exit(1);
    expect_int("supports in a thread", (intptr_t)ok, 1);
    expect_int("refs after the thread ended", refs_of(d), 0);

    /* ... and dropped unread after a release (ASan: no use after free) */
    expect_int("supports before release", dpt_conv_dnnl_supports(d), 1);
    dpt_conv_dnnl_release();
    dpt_conv2d_forward_ex(d, B[0].x, NULL, B[0].w, B[0].b, y, work, NULL, NULL);
    expect_int("refs after release and a call", refs_of(d), 0);
    if (memcmp(y, B[0].y, B[0].ny * 4)) {
        failures++;
        fprintf(stderr, "FAIL: forward_ex after a release differs\n");
    }
    free(work), free(y), free(dx), free(dw), free(db);
    bufs_free(&B[0]), bufs_free(&B[1]);
}

int main(void)
{
    dpt_conv2d_desc probe = {.n = 1, .c_in = 1, .h = 4, .w = 4, .c_out = 1, .kh = 3, .kw = 3,
                             .stride = 1};
    if (dpt_conv2d_desc_init(&probe) != 0 || !dpt_conv_dnnl_supports(&probe)) {
        printf("test_conv_dnnl: skipped: built without oneDNN, DPT_KERNELS=generic, or oneDNN "
               "unusable here\n");
        return 77;
    }
    const dpt_conv2d_desc cases[] = {
        /* n  ci  h   w  co kh kw s  p  (out)  dil g */
        {.n = 2, .c_in = 3, .h = 10, .w = 9, .c_out = 5, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
        {.n = 3, .c_in = 16, .h = 8, .w = 8, .c_out = 32, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
        {.n = 1, .c_in = 7, .h = 11, .w = 13, .c_out = 6, .kh = 5, .kw = 3, .stride = 3, .pad = 2},
        {.n = 2, .c_in = 12, .h = 9, .w = 9, .c_out = 8, .kh = 3, .kw = 3, .stride = 1, .pad = 2,
         .dilation = 2},
        {.n = 2, .c_in = 12, .h = 8, .w = 8, .c_out = 18, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
         .groups = 3},
        {.n = 4, .c_in = 32, .h = 8, .w = 8, .c_out = 32, .kh = 3, .kw = 3, .stride = 2, .pad = 1,
         .groups = 32},
        {.n = 3, .c_in = 17, .h = 7, .w = 6, .c_out = 40, .kh = 1, .kw = 1, .stride = 1},
        {.n = 2, .c_in = 64, .h = 6, .w = 6, .c_out = 48, .kh = 1, .kw = 1, .stride = 2},
        {.n = 1, .c_in = 1, .h = 5, .w = 5, .c_out = 1, .kh = 5, .kw = 5, .stride = 1},
    };
    const char *layouts[] = {"plain", "any", "auto"};
    for (int l = 0; l < 3; l++) {
        dpt_conv_dnnl_set_layout(layouts[l]);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            reference_case(cases[i], l == 2);
    }
    thread_case();
    lock_case();
    dpt_conv_dnnl_release();
    if (failures) {
        fprintf(stderr, "test_conv_dnnl: %d failures\n", failures);
        return 1;
    }
    printf("test_conv_dnnl: ok\n");
    return 0;
}
