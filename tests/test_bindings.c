/* The library calls added for language bindings (the Python package):
 * the memory datastore (pixels and labels read back as a folder's are,
 * bounds refused with a message), the polled progress queue (order,
 * coalescing, timeouts, dpt_progress_forward) and the parallel step from
 * one thread (replicas identical after every step, the loss and the
 * learnables those of one worker on the whole minibatch). */
#include "dptrain/dptrain.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_memory_datastore(void)
{
    enum { N = 5, H = 3, W = 4 };
    uint8_t pix[N * H * W * 3];
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 37 + 11);
    int32_t labels[N] = {2, 0, 1, 2, 0};
    const char *names[3] = {"cat", "dog", "emu"};
    dpt_datastore *ds = NULL;
    CHECK(dpt_datastore_from_memory(pix, N, H, W, 3, labels, 3, names, "arr", &ds) == DPT_OK);
    if (!ds)
        return;
    CHECK(dpt_datastore_kind_of(ds) == DPT_DATASTORE_MEMORY);
    CHECK(dpt_datastore_n_obs(ds) == N && dpt_datastore_n_classes(ds) == 3);
    CHECK(strcmp(dpt_datastore_class_name(ds, 1), "dog") == 0);
    CHECK(strcmp(dpt_datastore_file(ds, 4), "arr") == 0);
    CHECK(dpt_datastore_label(ds, 0) == 2 && dpt_datastore_label(ds, 4) == 0);
    CHECK(dpt_datastore_is_preloaded(ds));
    /* Pixel (y, x, ch) of image i, as [C, H, W] in [0, 1]. */
    float out[3 * H * W];
    CHECK(dpt_datastore_read(ds, 3, 3, H, W, out) == DPT_OK);
    int bad = 0;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                bad += out[(ch * H + y) * W + x] !=
                       (float)pix[((3 * H + y) * W + x) * 3 + ch] * (1.0f / 255.0f);
    CHECK_MSG(bad == 0, "%d pixels differ", bad);
    /* Grey through stb's luminance, as a colour file read as grey. */
    CHECK(dpt_datastore_read(ds, 1, 1, H, W, out) == DPT_OK);
    const uint8_t *p = pix + H * W * 3;
    CHECK(out[0] == (float)((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8) * (1.0f / 255.0f));
    /* Resized reads work as on any datastore. */
    float big[2 * 2 * 6 * 8];
    CHECK(dpt_datastore_read(ds, 0, 1, 6, 8, big) == DPT_OK);
    /* A split keeps the source alive after the parent goes. */
    dpt_datastore *a = NULL, *b = NULL;
    CHECK(dpt_datastore_split_each_label(ds, 0.5, 1, &a, &b) == DPT_OK);
    dpt_datastore_free(ds);
    CHECK(a && b && dpt_datastore_n_obs(a) + dpt_datastore_n_obs(b) == N);
    CHECK(b && dpt_datastore_read(b, 0, 3, H, W, out) == DPT_OK);
    dpt_datastore_free(a);
    dpt_datastore_free(b);
    /* Matching by class name, default names "0", "1", ... */
    ds = NULL;
    CHECK(dpt_datastore_from_memory(pix, N, H, W, 1, labels, 3, NULL, NULL, &ds) == DPT_OK);
    CHECK(ds && strcmp(dpt_datastore_class_name(ds, 2), "2") == 0 &&
          strcmp(dpt_datastore_file(ds, 0), "<memory>") == 0);
    dpt_datastore_free(ds);

    /* Refusals name the problem; nothing is made. */
    struct {
        size_t n;
        int h, w, c, k;
        int32_t lab0;
        const char *want;
    } cases[] = {
        {0, H, W, 3, 3, 0, "no images"},
        {N, 0, W, 3, 3, 0, "pixels"},
        {N, 4097, 4097, 1, 3, 0, "pixels"},
        {N, H, W, 5, 3, 0, "channels"},
        {N, H, W, 3, 0, 0, "classes"},
        {N, H, W, 3, 3, 3, "label 3 of observation 0"},
        {N, H, W, 3, 3, -1, "label -1"},
        {(size_t)1 << 40, 64, 64, 4, 3, 0, "exceed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int32_t lab[N];
        memcpy(lab, labels, sizeof lab);
        lab[0] = cases[i].lab0;
        ds = (dpt_datastore *)1;
        dpt_status s = dpt_datastore_from_memory(pix, cases[i].n, cases[i].h, cases[i].w,
                                                 cases[i].c, lab, cases[i].k, NULL, "arr", &ds);
        CHECK_MSG(s == DPT_ERR_ARG && !ds && strstr(dpt_last_error(), cases[i].want) &&
                      strstr(dpt_last_error(), "arr"),
                  "case %zu: status %d, message '%s'", i, (int)s, dpt_last_error());
    }
    const char *noname[3] = {"a", "", "c"};
    CHECK(dpt_datastore_from_memory(pix, N, H, W, 3, labels, 3, noname, "arr", &ds) == DPT_ERR_ARG &&
          strstr(dpt_last_error(), "class 1 has no name"));
}

static void test_polled_queue(void)
{
    dpt_progress_queue *q = NULL;
    CHECK(dpt_progress_queue_new_polled(4, &q) == DPT_OK && q);
    if (!q)
        return;
    dpt_progress r;
    CHECK(dpt_progress_queue_poll(q, &r, 0) == 0);
    CHECK(dpt_progress_queue_poll(q, &r, 20) == 0); /* waits, then nothing */
    /* Six ordinary records into four slots: the last two coalesce into the
     * newest, whose n_coalesced says so. */
    for (long i = 1; i <= 6; i++) {
        dpt_progress p = {0};
        p.iteration = i;
        dpt_progress_forward(&p, q); /* what dpt_fit's progress callback does */
    }
    long got[8];
    int n = 0;
    while (n < 8 && dpt_progress_queue_poll(q, &r, 0))
        got[n++] = r.iteration + 100 * r.n_coalesced;
    CHECK_MSG(n == 4 && got[0] == 1 && got[1] == 2 && got[2] == 3 && got[3] == 206,
              "n %d: %ld %ld %ld %ld", n, got[0], got[1], got[2], got[3]);
    CHECK(dpt_progress_coalesced(q) == 2);
    /* End-of-epoch records are never coalesced: the ring grows. */
    for (long i = 1; i <= 6; i++) {
        dpt_progress p = {0};
        p.iteration = i, p.end_of_epoch = 1;
        dpt_progress_send(q, &p);
    }
    n = 0;
    while (dpt_progress_queue_poll(q, &r, 0))
        n += r.end_of_epoch;
    CHECK(n == 6);
    /* Records left in the queue go with it. */
    dpt_progress p = {0};
    dpt_progress_send(q, &p);
    dpt_progress_queue_free(q);
}

/* Digits-like data: a stroke per class, so training has something to learn. */
static void make_batch(float *x, float *t, int n, int k, int hw, unsigned seed)
{
    memset(t, 0, (size_t)n * k * sizeof *t);
    for (int i = 0; i < n; i++) {
        int c = (int)((i * 7 + seed) % (unsigned)k);
        t[i * k + c] = 1;
        for (int j = 0; j < hw * hw; j++)
            x[(size_t)i * hw * hw + j] =
                (float)(((j / hw == c * 2 + 3) || (j % hw == c + 5)) ? 0.9 : 0.1 * ((j * 13 + i) % 7) / 7.0);
    }
}

static void test_parallel(void)
{
    enum { B = 10, K = 10, HW = 28, STEPS = 3 };
    /* One algorithm choice for both: the plan is measured per local batch
     * (10 images here, 4/3/3 there) and may pick wino4 for one and direct
     * for the other, whose float rounding (1e-5 of a layer's largest value)
     * compounds over the steps past these tolerances. The invariants here
     * are the aggregation's; the plan's own tolerance is test_conv_plan's. */
    setenv("DPT_CONV_ALGO", "heuristic", 1);
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    dpt_parallel *p = NULL, *one = NULL;
    /* Synchronised batch norm: three workers then compute what one does on
     * the whole minibatch (local statistics would legitimately differ). */
    CHECK(dpt_parallel_new(NULL, NULL, K, B, 7, 3, DPT_OPTIM_SGDM, &oo, 1, &p) == DPT_OK);
    CHECK(dpt_parallel_new(NULL, NULL, K, B, 7, 1, DPT_OPTIM_SGDM, &oo, 0, &one) == DPT_OK);
    if (!p || !one) {
        dpt_parallel_free(p);
        dpt_parallel_free(one);
        return;
    }
    CHECK(dpt_parallel_n_workers(p) == 3 && dpt_parallel_net(p, 3) == NULL &&
          dpt_parallel_optim(p, 2) != NULL);
    float *x = malloc(sizeof(float) * B * HW * HW), *t = malloc(sizeof(float) * B * K);
    for (int s = 1; s <= STEPS; s++) {
        make_batch(x, t, B, K, HW, (unsigned)s);
        double l3 = NAN, l1 = NAN;
        CHECK(dpt_parallel_step(p, x, t, B, 1, s, &l3) == DPT_OK);
        CHECK(dpt_parallel_step(one, x, t, B, 1, s, &l1) == DPT_OK);
        /* Invariant 1: the aggregated loss is the whole minibatch's. */
        CHECK_MSG(fabs(l3 - l1) <= 1e-5 * fabs(l1), "step %d: loss %.9g (3 workers) vs %.9g", s,
                  l3, l1);
        /* Invariant 2: the replicas stay bit-identical. */
        uint64_t h0 = dpt_net_hash(dpt_parallel_net(p, 0));
        CHECK(h0 == dpt_net_hash(dpt_parallel_net(p, 1)) && h0 == dpt_net_hash(dpt_parallel_net(p, 2)));
    }
    /* Invariant 8: three workers train what one does (float rounding). */
    dpt_net *a = dpt_parallel_net(p, 0), *b = dpt_parallel_net(one, 0);
    double err = tu_rel_err(dpt_net_params(a), dpt_net_params(b), dpt_net_n_params(a), NULL);
    CHECK_MSG(err < 1e-4, "learnables differ by %g", err);
    /* A smaller minibatch is fine; fewer rows than workers or more than
     * max_batch is refused, saying so. */
    double l;
    CHECK(dpt_parallel_step(p, x, t, 4, 1, 9, &l) == DPT_OK && isfinite(l));
    CHECK(dpt_parallel_step(p, x, t, 2, 1, 10, &l) == DPT_ERR_ARG &&
          strstr(dpt_last_error(), "2 observations"));
    CHECK(dpt_parallel_step(p, x, t, B + 1, 1, 10, &l) == DPT_ERR_ARG);
    dpt_parallel_set_lr(p, 0.5f);
    CHECK(dpt_optim_get_lr(dpt_parallel_optim(p, 2)) == 0.5f);
    /* A bad spec fails with the parser's message, naming the source. */
    dpt_parallel *bad = NULL;
    CHECK(dpt_parallel_new("input in size=28x28x1\nbogus b\n", "my.net", K, B, 0, 2,
                           DPT_OPTIM_SGDM, NULL, 0, &bad) != DPT_OK &&
          !bad && strstr(dpt_last_error(), "my.net"));
    CHECK(dpt_parallel_new(NULL, NULL, K, 2, 0, 3, DPT_OPTIM_SGDM, NULL, 0, &bad) == DPT_ERR_ARG);
    free(x);
    free(t);
    dpt_parallel_free(p);
    dpt_parallel_free(one);
    dpt_parallel_free(NULL);
    unsetenv("DPT_CONV_ALGO");
}

int main(void)
{
    test_memory_datastore();
    test_polled_queue();
    test_parallel();
    return tu_exit();
}
