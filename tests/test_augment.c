/* Data augmentation (dpt_augment, MATLAB imageDataAugmenter):
 *
 *   1. the parser: every item, and bad text naming the bad item;
 *   2. each transform's exact effect on small synthetic images: reflection,
 *      integer translation (shift with zero fill), rotation by multiples of
 *      90 degrees, scale (bilinear values), identity; colour images of odd
 *      sizes, every channel moved alike;
 *   2b. against PyTorch (tests/fixtures/augment.safetensors, made by
 *      make_augment_fixtures.py): keys, draws and the transform computed
 *      independently, sampled by affine_grid + grid_sample;
 *   3. the minibatch queue: identity when off; the same batches with
 *      prefetch on and off and on a second pass; another epoch draws other
 *      transforms;
 *   4. worker-count independence: the global minibatches assembled from 1,
 *      2 and 3 workers' shares of a dpt_fit-style partition are bit-identical
 *      to one queue over the whole minibatches, and fit's position of a
 *      worker's share (fit_global_first) is where its batch really starts;
 *   5. dpt_fit with augmentation: reproducible byte for byte, different from
 *      no augmentation, and a run stopped mid-epoch and resumed gives the
 *      uninterrupted run's model;
 *   6. colour images of several sizes in a folder through a 32x32x3 network
 *      (resized on read), trained end to end with augmentation. */
#include "core/safetensors.h"
#include "dptrain/train.h"
#include "testfs.h"
#include "testutil.h"
#include "train/train_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h>

#define FAILS(call, needle)                                                              \
    do {                                                                                 \
        dpt_clear_error();                                                               \
        dpt_status st_ = (call);                                                         \
        CHECK_MSG(st_ == DPT_ERR_ARG && strstr(dpt_last_error(), (needle)),              \
                  "%s: status %d, message \"%s\", want \"%s\"", #call, (int)st_,         \
                  dpt_last_error(), (needle));                                           \
    } while (0)

/* ---- 1. parsing ------------------------------------------------------------------ */

static void test_parse(void)
{
    dpt_augment a;
    CHECK(dpt_augment_parse("reflect,translate=3,rotate=10,scale=0.9:1.1", &a) == DPT_OK);
    CHECK(a.reflect_x == 1 && a.reflect_y == 0);
    CHECK(a.translate_x[0] == -3 && a.translate_x[1] == 3 && a.translate_y[0] == -3 &&
          a.translate_y[1] == 3);
    CHECK(a.rotate[0] == -10 && a.rotate[1] == 10);
    CHECK(a.scale[0] == 0.9 && a.scale[1] == 1.1);
    CHECK(!dpt_augment_is_identity(&a) && dpt_augment_check(&a) == DPT_OK);

    CHECK(dpt_augment_parse("reflect-y,translate-x=-2:4,translate-y=1,rotate=-10:5,shear-x=5,"
                            "shear-y=-3:0,scale-x=0.5:1,scale-y=1:2", &a) == DPT_OK);
    CHECK(a.reflect_x == 0 && a.reflect_y == 1);
    CHECK(a.translate_x[0] == -2 && a.translate_x[1] == 4 && a.translate_y[0] == -1 &&
          a.translate_y[1] == 1);
    CHECK(a.rotate[0] == -10 && a.rotate[1] == 5 && a.shear_x[0] == -5 && a.shear_x[1] == 5);
    CHECK(a.shear_y[0] == -3 && a.shear_y[1] == 0 && a.scale_x[1] == 1 && a.scale_y[1] == 2);
    CHECK(a.scale[0] == 1 && a.scale[1] == 1);

    CHECK(dpt_augment_parse(" reflect-y , rotate=3 ", &a) == DPT_OK && a.reflect_y && a.rotate[1] == 3);
    CHECK(dpt_augment_parse("", &a) == DPT_OK && dpt_augment_is_identity(&a));
    CHECK(dpt_augment_parse("none", &a) == DPT_OK && dpt_augment_is_identity(&a));
    CHECK(dpt_augment_parse("rotate=0,translate=0:0", &a) == DPT_OK && dpt_augment_is_identity(&a));
    CHECK(dpt_augment_is_identity(NULL));

    /* Bad text: the item and the problem; *out untouched. */
    dpt_augment keep = DPT_AUGMENT_INIT;
    keep.reflect_y = 1;
    a = keep;
    FAILS(dpt_augment_parse("reflect,twist=3", &a), "item 'twist=3': unknown");
    CHECK(a.reflect_y == 1 && a.reflect_x == 0);
    FAILS(dpt_augment_parse("rotate", &a), "item 'rotate': needs a value (write rotate=DEGREES");
    FAILS(dpt_augment_parse("reflect=1", &a), "item 'reflect=1': takes no value");
    FAILS(dpt_augment_parse("rotate=ten", &a), "item 'rotate=ten': the value is not a number");
    FAILS(dpt_augment_parse("rotate=", &a), "item 'rotate=': the value is not a number");
    FAILS(dpt_augment_parse("rotate=10:-10", &a), "item 'rotate=10:-10': the value has MIN > MAX");
    FAILS(dpt_augment_parse("translate=-3", &a), "must not be negative");
    FAILS(dpt_augment_parse("translate=1:x", &a), "item 'translate=1:x': the value is not a number or MIN:MAX");
    FAILS(dpt_augment_parse("scale=1.1", &a), "item 'scale=1.1': the value needs a range MIN:MAX");
    FAILS(dpt_augment_parse("scale=0:2", &a), "item 'scale=0:2': the value must be within [0.001, 1000]");
    FAILS(dpt_augment_parse("shear-x=90", &a), "within (-90, 90) degrees");
    FAILS(dpt_augment_parse("rotate=inf", &a), "item 'rotate=inf': the value is not a number");
    FAILS(dpt_augment_parse("translate=1e9", &a), "must be within [-1e6, 1e6]");
    FAILS(dpt_augment_parse("reflect,reflect-x", &a), "item 'reflect-x': given twice");
    FAILS(dpt_augment_parse("translate=2,translate-y=1", &a), "item 'translate-y=1': given twice or together");
    FAILS(dpt_augment_parse("scale-x=1:2,scale=1:2", &a), "item 'scale=1:2': given twice or together");
    FAILS(dpt_augment_parse("reflect,,rotate=3", &a), "an empty item");
    FAILS(dpt_augment_parse("reflect,", &a), "an empty item");
    FAILS(dpt_augment_parse("reflect, ,rotate=1", &a), "an empty item");
    CHECK(a.reflect_y == 1 && a.reflect_x == 0 && a.rotate[1] == 0);

    dpt_augment h = DPT_AUGMENT_INIT;
    h.rotate[0] = 5, h.rotate[1] = 1;
    FAILS(dpt_augment_check(&h), "rotate range [5, 1] has MIN > MAX");
    h = (dpt_augment)DPT_AUGMENT_INIT;
    h.version = 7;
    FAILS(dpt_augment_check(&h), "version 7");
}

/* ---- 2. exact effects ------------------------------------------------------------- */

/* Pixel values that tell every pixel and channel apart (exact in float). */
static void pattern(float *x, int c, int h, int w)
{
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int i = 0; i < w; i++)
                x[((size_t)k * h + y) * w + i] = (float)(1 + 100 * k + 10 * y + i) / 1024.0f;
}

static float px(const float *x, int h, int w, int k, int y, int i)
{
    if (y < 0 || y >= h || i < 0 || i >= w)
        return 0.0f;
    return x[((size_t)k * h + y) * w + i];
}

/* The key of observation obs (seed 7, epoch 1, iteration 1). */
static uint64_t key_of(uint64_t obs) { return dpt_rng_key(7, 1, 1, DPT_AUGMENT_STREAM, obs); }

static dpt_augment parsed(const char *text)
{
    dpt_augment a = DPT_AUGMENT_INIT;
    dpt_status s = dpt_augment_parse(text, &a);
    CHECK_MSG(s == DPT_OK, "%s: %s", text, dpt_last_error());
    return a;
}

/* out equals want(k, y, x) exactly at every element. */
#define EXPECT_ALL(out, c, h, w, want, what)                                             \
    do {                                                                                 \
        int bad_ = 0;                                                                    \
        for (int k = 0; k < (c); k++)                                                    \
            for (int y = 0; y < (h); y++)                                                \
                for (int i = 0; i < (w); i++)                                            \
                    if ((out)[((size_t)k * (h) + y) * (w) + i] != (want))                \
                        bad_++;                                                          \
        CHECK_MSG(!bad_, "%s: %d of %d values differ", what, bad_, (c) * (h) * (w));     \
    } while (0)

static void test_exact(void)
{
    enum { C = 3, H = 5, W = 7 };
    float in[C * H * W], out[C * H * W];
    pattern(in, C, H, W);

    /* Off: a copy. */
    dpt_augment none = DPT_AUGMENT_INIT;
    dpt_augment_image(&none, key_of(0), in, out, C, H, W);
    CHECK(memcmp(in, out, sizeof in) == 0);

    /* Reflections: exact mirror when the draw says so (u(0) < 1/2 for x,
     * u(1) for y), else a copy; both outcomes occur among 16 observations. */
    dpt_augment rx = parsed("reflect"), ry = parsed("reflect-y");
    int n_flip = 0;
    for (uint64_t o = 0; o < 16; o++) {
        int flip = dpt_rng_key_uniform(key_of(o), 0) < 0.5f;
        n_flip += flip;
        dpt_augment_image(&rx, key_of(o), in, out, C, H, W);
        EXPECT_ALL(out, C, H, W, px(in, H, W, k, y, flip ? W - 1 - i : i), "reflect-x");
        int flip_y = dpt_rng_key_uniform(key_of(o), 1) < 0.5f;
        dpt_augment_image(&ry, key_of(o), in, out, C, H, W);
        EXPECT_ALL(out, C, H, W, px(in, H, W, k, flip_y ? H - 1 - y : y, i), "reflect-y");
    }
    CHECK_MSG(n_flip > 0 && n_flip < 16, "reflected %d of 16", n_flip);

    /* Integer translation: a shift right by 2 and up by 1, zeros moved in. */
    dpt_augment t = parsed("translate-x=2:2,translate-y=-1:-1");
    dpt_augment_image(&t, key_of(3), in, out, C, H, W);
    EXPECT_ALL(out, C, H, W, px(in, H, W, k, y + 1, i - 2), "translate");
    CHECK(out[0] == 0.0f && out[(H - 1) * W + W - 1] == 0.0f); /* filled corners */

    /* Rotation by 90 degrees, counter-clockwise on screen: the top-right
     * corner goes to the top-left. Centre (3, 2) is a pixel, so every pixel
     * lands on one: out(x, y) = in(cx - (y - cy), cy + (x - cx)). */
    dpt_augment r90 = parsed("rotate=90:90");
    dpt_augment_image(&r90, key_of(4), in, out, C, H, W);
    EXPECT_ALL(out, C, H, W, px(in, H, W, k, 2 + (i - 3), 3 - (y - 2)), "rotate 90");
    dpt_augment r180 = parsed("rotate=180:180"), rm90 = parsed("rotate=-90:-90");
    dpt_augment_image(&r180, key_of(4), in, out, C, H, W);
    EXPECT_ALL(out, C, H, W, px(in, H, W, k, H - 1 - y, W - 1 - i), "rotate 180");
    dpt_augment_image(&rm90, key_of(4), in, out, C, H, W);
    EXPECT_ALL(out, C, H, W, px(in, H, W, k, 2 - (i - 3), 3 + (y - 2)), "rotate -90");
    /* An even square (centre between pixels) also maps onto itself. */
    {
        enum { N = 4 };
        float a[2 * N * N], b[2 * N * N];
        pattern(a, 2, N, N);
        dpt_augment_image(&r90, key_of(5), a, b, 2, N, N);
        EXPECT_ALL(b, 2, N, N, px(a, N, N, k, i, N - 1 - y), "rotate 90, 4x4");
        CHECK(b[0] == a[N - 1]); /* top-right to top-left */
    }

    /* Scale 2 about the centre (3, 2): out(x, y) reads in(3 + (x-3)/2,
     * 2 + (y-2)/2), blending neighbours at half-pixel positions. */
    dpt_augment s2 = parsed("scale=2:2");
    dpt_augment_image(&s2, key_of(6), in, out, C, H, W);
    int bad = 0;
    for (int k = 0; k < C; k++)
        for (int y = 0; y < H; y++)
            for (int i = 0; i < W; i++) {
                double sx = 3 + (i - 3) / 2.0, sy = 2 + (y - 2) / 2.0;
                int x0 = (int)sx, y0 = (int)sy;
                double fx = sx - x0, fy = sy - y0;
                double want = (1 - fy) * ((1 - fx) * px(in, H, W, k, y0, x0) + fx * px(in, H, W, k, y0, x0 + 1)) +
                              fy * ((1 - fx) * px(in, H, W, k, y0 + 1, x0) + fx * px(in, H, W, k, y0 + 1, x0 + 1));
                bad += fabs(out[((size_t)k * H + y) * W + i] - want) > 1e-6;
            }
    CHECK_MSG(!bad, "scale 2: %d values off", bad);
    CHECK(out[2 * W + 3] == in[2 * W + 3] && out[0 * W + 1] == in[1 * W + 2]); /* on-grid points exact */
    /* Scale 1/2: out(x, y) reads in(3 + 2(x-3), 2 + 2(y-2)), always a
     * pixel: the picture shrinks to the middle, zeros around it. */
    dpt_augment sh = parsed("scale=0.5:0.5");
    dpt_augment_image(&sh, key_of(6), in, out, C, H, W);
    EXPECT_ALL(out, C, H, W, px(in, H, W, k, 2 * y - 2, 2 * i - 3), "scale 1/2");
    CHECK(out[2 * W + 3] == in[2 * W + 3] && out[2 * W + 0] == 0.0f && out[2 * W + 2] == in[2 * W + 1]);

    /* A random transform of several kinds at once: every channel moved
     * alike (each plane alone gives the same values), values stay in the
     * image's range, and drawing again gives the same bits. */
    dpt_augment all = parsed("reflect,reflect-y,rotate=30,scale=0.8:1.3,shear-x=10,shear-y=5,"
                             "translate=1.5");
    float plane[H * W], again[C * H * W];
    for (uint64_t o = 0; o < 8; o++) {
        dpt_augment_image(&all, key_of(o), in, out, C, H, W);
        dpt_augment_image(&all, key_of(o), in, again, C, H, W);
        CHECK(memcmp(out, again, sizeof out) == 0);
        for (int k = 0; k < C; k++) {
            dpt_augment_image(&all, key_of(o), in + k * H * W, plane, 1, H, W);
            CHECK_MSG(memcmp(plane, out + k * H * W, sizeof plane) == 0, "channel %d of obs %d", k, (int)o);
        }
        int in_range = 1;
        for (int j = 0; j < C * H * W; j++)
            in_range &= out[j] >= 0.0f && out[j] <= in[C * H * W - 1];
        CHECK(in_range);
    }
    dpt_augment_image(&all, key_of(1), in, out, C, H, W);
    dpt_augment_image(&all, key_of(2), in, again, C, H, W);
    CHECK(memcmp(out, again, sizeof out) != 0); /* another observation, another draw */

    /* Colour image of odd, non-square size (9 x 13; centre (6, 4)) rotated
     * a quarter turn: pixels beyond the other side's reach are zero. */
    {
        enum { HH = 9, WW = 13 };
        static float a[3 * HH * WW], b[3 * HH * WW];
        pattern(a, 3, HH, WW);
        dpt_augment_image(&r90, key_of(9), a, b, 3, HH, WW);
        EXPECT_ALL(b, 3, HH, WW, px(a, HH, WW, k, 4 + (i - 6), 6 - (y - 4)), "rotate 90, 3x9x13");
        CHECK(b[0] == 0.0f && b[2 * HH * WW + 4 * WW + 6] == a[2 * HH * WW + 4 * WW + 6]);
    }
}

/* ---- 2b. against PyTorch ------------------------------------------------------------ */

static const char *case_meta(const dpt_st *st, const char *cs, const char *key)
{
    char k[256];
    snprintf(k, sizeof k, "%s/%s", cs, key);
    const char *v = dpt_st_meta(st, k);
    return v ? v : "";
}

static void test_reference(void)
{
    char path[1024];
    tu_fixture("augment.safetensors", path, sizeof path);
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(path, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    char list[4096];
    snprintf(list, sizeof list, "%s", dpt_st_meta(st, "cases") ? dpt_st_meta(st, "cases") : "");
    int n_cases = 0;
    double worst = 0;
    for (char *cs = strtok(list, ","); cs; cs = strtok(NULL, ",")) {
        char name[300];
        snprintf(name, sizeof name, "%s/x", cs);
        const dpt_st_tensor *t = dpt_st_get(st, name);
        CHECK_MSG(t && t->ndim == 3, "%s", name);
        if (!(t && t->ndim == 3))
            continue;
        int c = (int)t->shape[0], h = (int)t->shape[1], w = (int)t->shape[2];
        size_t n = (size_t)c * h * w;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *got = malloc(n * sizeof *got);
        CHECK(dpt_st_read_f32(st, name, x, n) == DPT_OK);
        snprintf(name, sizeof name, "%s/y", cs);
        CHECK(dpt_st_read_f32(st, name, y, n) == DPT_OK);
        dpt_augment a = parsed(case_meta(st, cs, "spec"));
        uint64_t key = dpt_rng_key(strtoull(case_meta(st, cs, "seed"), NULL, 10),
                                   strtoull(case_meta(st, cs, "epoch"), NULL, 10),
                                   strtoull(case_meta(st, cs, "iteration"), NULL, 10), DPT_AUGMENT_STREAM,
                                   strtoull(case_meta(st, cs, "obs"), NULL, 10));
        CHECK_MSG(key == strtoull(case_meta(st, cs, "key"), NULL, 10), "%s: key differs from Python's", cs);
        dpt_augment_image(&a, key, x, got, c, h, w);
        double err = 0;
        for (size_t i = 0; i < n; i++)
            err = fmax(err, fabs((double)got[i] - (double)y[i]));
        CHECK_MSG(err <= 1e-5, "%s (%s, %dx%dx%d): max |difference| %g from PyTorch", cs,
                  case_meta(st, cs, "spec"), c, h, w, err);
        worst = fmax(worst, err);
        n_cases++;
        free(x);
        free(y);
        free(got);
    }
    CHECK(n_cases == 12);
    printf("  %d cases against PyTorch affine_grid + grid_sample: max |difference| %.2g\n", n_cases, worst);
    dpt_st_close(st);
}

/* ---- 3-4. the minibatch queue, and the worker count --------------------------------- */

static dpt_datastore *open_digits(void)
{
    char fixture[1024];
    tu_fixture("digits400", fixture, sizeof fixture);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(fixture, &fo, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    return ds;
}

/* Every batch of one pass, concatenated: [n_obs, chw]. */
static float *one_pass(dpt_mbq *q, size_t chw)
{
    float *all = malloc(dpt_mbq_n_obs(q) * chw * sizeof *all);
    size_t at = 0;
    while (all && dpt_mbq_has_data(q)) {
        dpt_batch b;
        if (dpt_mbq_next(q, &b) != DPT_OK) {
            free(all);
            return NULL;
        }
        memcpy(all + at * chw, b.x.data, (size_t)b.n * chw * sizeof *all);
        at += (size_t)b.n;
    }
    return all;
}

static void test_queue(dpt_datastore *digits)
{
    size_t idx[50];
    for (size_t i = 0; i < 50; i++)
        idx[i] = i * 7 % 400;
    dpt_datastore *ds = NULL;
    CHECK(dpt_datastore_subset(digits, idx, 50, &ds) == DPT_OK);
    size_t chw = 28 * 28;
    dpt_augment aug = parsed("reflect,rotate=20,translate=2,scale=0.9:1.1");
    dpt_augment off = DPT_AUGMENT_INIT;
    float *res[5] = {0};
    for (int v = 0; v < 5; v++) {
        dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
        o.batch_size = 8;
        o.prefetch = v != 1;
        o.augment = v == 0 ? NULL : v == 4 ? &off : &aug;
        o.augment_seed = 11;
        o.augment_epoch = 2;
        o.augment_iteration = 5;
        dpt_mbq *q = NULL;
        CHECK(dpt_mbq_new(ds, &o, &q) == DPT_OK);
        res[v] = one_pass(q, chw);
        if (v == 2) { /* a second pass, another epoch, then back */
            dpt_mbq_set_augment_key(q, 3, 5);
            dpt_mbq_reset(q);
            float *other = one_pass(q, chw);
            CHECK(other && memcmp(other, res[2], 50 * chw * sizeof(float)) != 0);
            free(other);
            dpt_mbq_set_augment_key(q, 2, 5);
            dpt_mbq_reset(q);
            free(res[2]);
            res[2] = one_pass(q, chw);
        }
        if (v == 3) { /* another seed */
            dpt_mbq_free(q);
            o.augment_seed = 12;
            CHECK(dpt_mbq_new(ds, &o, &q) == DPT_OK);
            free(res[3]);
            res[3] = one_pass(q, chw);
        }
        dpt_mbq_free(q);
    }
    size_t bytes = 50 * chw * sizeof(float);
    CHECK(res[0] && res[1] && res[2] && res[3] && res[4]);
    if (res[0] && res[1] && res[2] && res[3] && res[4]) {
        CHECK_MSG(memcmp(res[0], res[4], bytes) == 0, "an identity augmentation changed the pixels");
        CHECK_MSG(memcmp(res[0], res[1], bytes) != 0, "augmentation changed nothing");
        CHECK_MSG(memcmp(res[1], res[2], bytes) == 0, "prefetch on/off or a second pass differ");
        CHECK_MSG(memcmp(res[1], res[3], bytes) != 0, "another seed drew the same");
        /* Each observation is the transform of its key: batch b, position j. */
        float want[28 * 28];
        for (int i = 0; i < 50; i++) {
            uint64_t key = dpt_rng_key(11, 2, (uint64_t)(5 + i / 8), DPT_AUGMENT_STREAM, (uint64_t)(i % 8));
            dpt_augment_image(&aug, key, res[0] + (size_t)i * chw, want, 1, 28, 28);
            CHECK_MSG(memcmp(want, res[1] + (size_t)i * chw, sizeof want) == 0, "observation %d", i);
        }
    }
    for (int v = 0; v < 5; v++)
        free(res[v]);

    /* A version-1 options struct (no augment fields) still works. */
    dpt_mbq_options v1 = DPT_MBQ_OPTIONS_INIT;
    v1.version = 1;
    v1.augment = &aug; /* beyond a version-1 struct: not read */
    dpt_mbq *q = NULL;
    CHECK(dpt_mbq_new(ds, &v1, &q) == DPT_OK);
    float *plain = q ? one_pass(q, chw) : NULL;
    dpt_mbq_free(q);
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    CHECK(dpt_mbq_new(ds, &o, &q) == DPT_OK);
    float *plain2 = q ? one_pass(q, chw) : NULL;
    dpt_mbq_free(q);
    CHECK(plain && plain2 && memcmp(plain, plain2, 50 * chw * sizeof(float)) == 0);
    free(plain);
    free(plain2);
    /* A bad description is refused by the queue. */
    dpt_augment bad = DPT_AUGMENT_INIT;
    bad.scale[0] = -1;
    o.augment = &bad;
    FAILS(dpt_mbq_new(ds, &o, &q), "scale range [-1, 1]");
    dpt_datastore_free(ds);
}

typedef struct share_pos {
    size_t n_obs;
    int n_workers, rank;
    const int *share;
} share_pos;

static long share_first(size_t batch, void *arg)
{
    const share_pos *p = arg;
    return fit_global_first(p->n_obs, p->n_workers, p->share, p->rank, batch);
}

/* dpt_fit's data path for N workers (partition, per-worker queues of their
 * share, iterations while every worker has data) over n observations: the
 * global minibatches assembled from the workers' augmented batches must be
 * bit-identical to one queue over those same minibatches. */
static void check_workers(dpt_datastore *digits, size_t n, int batch, int N, const dpt_augment *aug)
{
    size_t chw = 28 * 28;
    size_t *idx = malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = (i * 13 + 5) % 400;
    dpt_datastore *ds = NULL;
    CHECK(dpt_datastore_subset(digits, idx, n, &ds) == DPT_OK);
    int share[8];
    dpt_batch_shares(batch, N, share);
    dpt_mbq *q[8] = {0};
    share_pos pos[8];
    size_t block_start[8], start = 0;
    for (int j = 0; j < N; j++) {
        dpt_datastore *part = NULL;
        CHECK(dpt_datastore_partition(ds, N, j, &part) == DPT_OK);
        block_start[j] = start;
        start += dpt_datastore_n_obs(part);
        pos[j] = (share_pos){n, N, j, share};
        dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
        o.batch_size = share[j];
        o.augment = aug;
        o.augment_seed = 5;
        o.augment_epoch = 3;
        o.augment_iteration = 40;
        o.augment_first = share_first;
        o.augment_first_arg = &pos[j];
        o.prefetch = j % 2 == 0;
        CHECK(dpt_mbq_new(part, &o, &q[j]) == DPT_OK);
        dpt_datastore_free(part);
    }
    /* Assemble, recording which observations went where. */
    float *got = malloc(n * chw * sizeof *got);
    size_t *order = malloc(n * sizeof *order), m = 0;
    long iters = 0;
    int all_have = 1;
    for (int j = 0; j < N; j++)
        all_have &= q[j] && dpt_mbq_has_data(q[j]);
    int misplaced = 0;
    while (all_have) {
        long at = 0;
        for (int j = 0; j < N; j++) {
            dpt_batch b;
            CHECK(dpt_mbq_next(q[j], &b) == DPT_OK);
            misplaced += share_first((size_t)iters, &pos[j]) != at;
            memcpy(got + m * chw, b.x.data, (size_t)b.n * chw * sizeof *got);
            for (int i = 0; i < b.n; i++)
                order[m++] = block_start[j] + b.obs[i];
            at += b.n;
        }
        iters++;
        for (int j = 0; j < N; j++)
            all_have &= dpt_mbq_has_data(q[j]);
    }
    CHECK_MSG(!misplaced, "%d workers: fit_global_first is not where a share starts (%d times)", N,
              misplaced);
    /* One worker on the whole minibatches. */
    dpt_datastore *whole = NULL;
    CHECK(dpt_datastore_subset(ds, order, m, &whole) == DPT_OK);
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = batch;
    o.augment = aug;
    o.augment_seed = 5;
    o.augment_epoch = 3;
    o.augment_iteration = 40;
    dpt_mbq *one = NULL;
    CHECK(dpt_mbq_new(whole, &o, &one) == DPT_OK);
    float *want = one ? one_pass(one, chw) : NULL;
    CHECK(want && dpt_mbq_n_batches(one) == (size_t)iters);
    CHECK_MSG(want && memcmp(want, got, m * chw * sizeof *got) == 0,
              "%d workers, %zu images, minibatch %d: not what one worker draws", N, n, batch);
    printf("  %d worker%s, %zu images, minibatch %d: %ld iterations, %zu images augmented as by one "
           "worker\n", N, N == 1 ? "" : "s", n, batch, iters, m);
    free(want);
    dpt_mbq_free(one);
    dpt_datastore_free(whole);
    for (int j = 0; j < N; j++)
        dpt_mbq_free(q[j]);
    free(got);
    free(order);
    dpt_datastore_free(ds);
    free(idx);
}

static void test_workers(dpt_datastore *digits)
{
    dpt_augment aug = parsed("reflect,reflect-y,rotate=15,scale=0.9:1.1,translate=2.5");
    for (int N = 1; N <= 3; N++) {
        check_workers(digits, 60, 10, N, &aug);  /* full minibatches */
        check_workers(digits, 37, 10, N, &aug);  /* a partial last one, uneven shares */
    }
    check_workers(digits, 38, 7, 3, &aug);
}

/* ---- 5. dpt_fit: reproducible, resumable ---------------------------------------- */

static const char small_spec[] = "input in size=28x28x1\n"
                                 "conv c1 filter=3 filters=4 stride=2\n"
                                 "batchnorm bn1\n"
                                 "relu r1\n"
                                 "fc fc outputs=classes\n"
                                 "softmax sm\n";

typedef struct stopper {
    volatile sig_atomic_t flag;
    long at;
} stopper;

static void on_progress(const dpt_progress *p, void *arg)
{
    stopper *st = arg;
    if (st->at && p->iteration >= st->at)
        st->flag = SIGTERM;
}

static dpt_status fit(const dpt_datastore *train, const dpt_augment *aug, const char *model,
                      const char *ckpt, const char *resume, stopper *st)
{
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = small_spec;
    cfg.spec_source = "small";
    cfg.train = train;
    cfg.epochs = 2;
    cfg.batch = 16;
    cfg.seed = 21;
    cfg.spmd.backend = DPT_COMM_LOCAL;
    cfg.spmd.n_workers = 3;
    cfg.model_out = model;
    cfg.checkpoint_out = ckpt;
    cfg.checkpoint_every = ckpt ? 3 : 0;
    cfg.resume = resume;
    cfg.augment = aug;
    if (st) {
        cfg.stop = &st->flag;
        cfg.progress = on_progress;
        cfg.progress_arg = st;
    }
    dpt_fit_result res;
    return dpt_fit(&cfg, &res);
}

static void test_fit(dpt_datastore *digits, const char *tmp)
{
    size_t idx[150];
    for (size_t i = 0; i < 150; i++)
        idx[i] = i * 8 / 3;
    dpt_datastore *ds = NULL;
    CHECK(dpt_datastore_subset(digits, idx, 150, &ds) == DPT_OK);
    dpt_augment aug = parsed("reflect,rotate=10,translate=2,scale=0.9:1.1");
    char a[1100], b[1100], plain[1100], stopped[1100], ck[1100];
    snprintf(a, sizeof a, "%s/a.safetensors", tmp);
    snprintf(b, sizeof b, "%s/b.safetensors", tmp);
    snprintf(plain, sizeof plain, "%s/plain.safetensors", tmp);
    snprintf(stopped, sizeof stopped, "%s/stopped.safetensors", tmp);
    snprintf(ck, sizeof ck, "%s/ck.safetensors", tmp);
    dpt_status s = fit(ds, &aug, a, NULL, NULL, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    CHECK(fit(ds, &aug, b, NULL, NULL, NULL) == DPT_OK);
    CHECK_MSG(tu_same_bytes(a, b), "augmented training is not reproducible");
    CHECK(fit(ds, NULL, plain, NULL, NULL, NULL) == DPT_OK);
    CHECK_MSG(!tu_same_bytes(a, plain), "augmentation had no effect on training");
    /* Stopped at iteration 5 (epoch 1 has 10), resumed from the checkpoint
     * of iteration 3 or 6: mid-epoch, the draws continue where they were. */
    stopper st = {0, 5};
    s = fit(ds, &aug, stopped, ck, NULL, &st);
    CHECK_MSG(s == DPT_ERR_INTERRUPTED, "stop: %d %s", (int)s, dpt_last_error());
    s = fit(ds, &aug, stopped, ck, ck, NULL);
    CHECK_MSG(s == DPT_OK, "resume: %s", dpt_last_error());
    CHECK_MSG(tu_same_bytes(a, stopped), "stopped + resumed augmented run differs from the uninterrupted one");
    /* A bad description is refused before training. */
    dpt_augment bad = DPT_AUGMENT_INIT;
    bad.shear_x[1] = 95;
    FAILS(fit(ds, &bad, b, NULL, NULL, NULL), "shear_x range [0, 95]");
    dpt_datastore_free(ds);
}

/* ---- 6. colour images of any size through a 32x32x3 network ------------------------ */

static const char colour_spec[] = "input in size=32x32x3\n"
                                  "conv c1 filter=3 filters=6 stride=2 padding=1\n"
                                  "batchnorm bn1\n"
                                  "relu r1\n"
                                  "fc fc outputs=classes\n"
                                  "softmax sm\n";

/* Class k's images: mostly colour channel k, a bright square somewhere,
 * noise; sizes vary (odd, non-square, larger and smaller than 32). */
static void write_colour_folder(const char *root)
{
    static const int sizes[][2] = {{32, 32}, {37, 29}, {21, 45}, {64, 48}, {17, 17}, {33, 31}};
    mkdir(root, 0777);
    unsigned rnd = 12345;
    for (int k = 0; k < 3; k++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/class%d", root, k);
        mkdir(dir, 0777);
        for (int i = 0; i < 24; i++) {
            int h = sizes[i % 6][0], w = sizes[i % 6][1];
            unsigned char *pix = malloc((size_t)h * w * 3);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int ch = 0; ch < 3; ch++) {
                        rnd = rnd * 1103515245u + 12345u;
                        int v = (int)(rnd >> 26) + (ch == k ? 150 : 30);
                        if (y > h / 4 && y < h / 2 && x > w / 3 && x < w / 2 + 2)
                            v += 60;
                        pix[((size_t)y * w + x) * 3 + ch] = (unsigned char)(v > 255 ? 255 : v);
                    }
            char path[1300];
            snprintf(path, sizeof path, "%s/img%02d.png", dir, i);
            CHECK(stbi_write_png(path, w, h, 3, pix, w * 3) != 0);
            free(pix);
        }
    }
}

static void test_colour(const char *tmp)
{
    char root[1100];
    snprintf(root, sizeof root, "%s/colour", tmp);
    write_colour_folder(root);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *all = NULL, *train = NULL, *test = NULL;
    dpt_status s = dpt_datastore_open_folder(root, &fo, &all);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    int h, w, c;
    CHECK(dpt_datastore_image_size(all, 1, &h, &w, &c) == DPT_OK && h == 37 && w == 29 && c == 3);
    CHECK(dpt_datastore_split_each_label(all, 0.75, 3, &train, &test) == DPT_OK);
    char model[1100];
    snprintf(model, sizeof model, "%s/colour.safetensors", tmp);
    dpt_augment aug = parsed("reflect,translate=2,rotate=10");
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = colour_spec;
    cfg.spec_source = "colour";
    cfg.train = train;
    cfg.test = test;
    cfg.epochs = 6;
    cfg.batch = 12;
    cfg.seed = 4;
    cfg.spmd.backend = DPT_COMM_LOCAL;
    cfg.spmd.n_workers = 2;
    cfg.model_out = model;
    cfg.augment = &aug;
    dpt_fit_result res;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_OK, "colour training: %s", dpt_last_error());
    printf("  colour folder (3 classes, 6 image sizes) through a 32x32x3 network, 2 workers, "
           "augmented: test accuracy %.3f\n", res.test_accuracy);
    /* The classes differ by their dominant colour: far above chance (1/3). */
    CHECK_MSG(s == DPT_OK && res.test_accuracy >= 0.8, "test accuracy %.3f", res.test_accuracy);
    /* The saved model classifies a colour file of another size. */
    dpt_net *net = NULL;
    CHECK(s == DPT_OK && dpt_net_load(model, 1, &net) == DPT_OK);
    if (net) {
        float x[3 * 32 * 32];
        const float *y;
        char img[1300];
        snprintf(img, sizeof img, "%s/class2/img03.png", root);
        CHECK(dpt_image_load(img, 3, 32, 32, x) == DPT_OK);
        CHECK(dpt_net_forward(net, x, 1, DPT_MODE_PREDICT, &y) == DPT_OK);
        int pred = -1;
        dpt_argmax_rows(y, 1, 3, &pred);
        CHECK_MSG(pred == 2, "predicted class %d for a class-2 image", pred);
        dpt_net_free(net);
    }
    dpt_datastore_free(all);
    dpt_datastore_free(train);
    dpt_datastore_free(test);
}

int main(void)
{
    char tmp[] = "/tmp/dpt_augment_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_parse();
    test_exact();
    test_reference();
    dpt_datastore *digits = open_digits();
    if (digits) {
        test_queue(digits);
        test_workers(digits);
        test_fit(digits, tmp);
        dpt_datastore_free(digits);
    }
    test_colour(tmp);
    tu_remove_tree(tmp);
    return tu_exit();
}
