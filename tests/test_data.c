/* Tests of the data layer: image-folder and IDX datastores, split, shuffle,
 * partition, bilinear resize, minibatch queue (prefetch on and off), and
 * every kind of bad input. Builds its own small files in a temporary
 * folder. Exit 0 pass, 1 fail.
 *
 * Usage: test_data [name-substring]   (runs only the matching tests, e.g.
 * "mbq" for the queue tests under ThreadSanitizer). */
#include "data/data_internal.h" /* raw_to_planes, for the resize bits */
#include "core/text.h"
#include "dptrain/data.h"
#include "testfs.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <stb_image_write.h>

static int n_fail, n_check;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        n_check++;                                                                        \
        if (!(cond)) {                                                                    \
            n_fail++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

/* A call that must succeed; prints the library's message if not. */
#define OK(call)                                                                          \
    do {                                                                                  \
        n_check++;                                                                        \
        dpt_status st_ = (call);                                                          \
        if (st_ != DPT_OK) {                                                              \
            n_fail++;                                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,      \
                    dpt_status_str(st_), dpt_last_error());                               \
        }                                                                                 \
    } while (0)

/* A call that must fail with status `want` and a message containing `needle`. */
#define FAILS(call, want, needle)                                                         \
    do {                                                                                  \
        n_check++;                                                                        \
        dpt_clear_error();                                                                \
        dpt_status st_ = (call);                                                          \
        if (st_ != (want) || !strstr(dpt_last_error(), (needle))) {                       \
            n_fail++;                                                                     \
            fprintf(stderr, "%s:%d: %s: got status %d (%s) message \"%s\"; want status %d with \"%s\"\n", \
                    __FILE__, __LINE__, #call, (int)st_, dpt_status_str(st_), dpt_last_error(), \
                    (int)(want), (needle));                                               \
        }                                                                                 \
    } while (0)

/* CHECK with a printf-style explanation. */
#define CHECK_MSG(cond, ...)                                                              \
    do {                                                                                  \
        n_check++;                                                                        \
        if (!(cond)) {                                                                    \
            n_fail++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                 \
        }                                                                                 \
    } while (0)

#define NEAR(a, b, tol) CHECK(fabs((double)(a) - (double)(b)) <= (tol))

static char tmp_root[512];

/* ---- file helpers ----------------------------------------------------------------- */

static void path_join(char *buf, size_t n, const char *a, const char *b)
{
    int len = snprintf(buf, n, "%s/%s", a, b);
    if (len < 0 || (size_t)len >= n) {
        fprintf(stderr, "path too long: %s/%s\n", a, b);
        exit(1);
    }
}

static void make_dir(const char *p)
{
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkdir %s: %s\n", p, strerror(errno));
        exit(1);
    }
}

/* A fresh folder tmp_root/<name>; returns its path in buf. */
static const char *fresh_dir(char *buf, size_t n, const char *name)
{
    path_join(buf, n, tmp_root, name);
    make_dir(buf);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* Deterministic test pixels: value depends on (seed, y, x, channel). */
static void fill_pixels(unsigned char *pix, int h, int w, int c, int seed)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                pix[(y * w + x) * c + k] = (unsigned char)((seed * 37 + y * 29 + x * 13 + k * 71) % 256);
}

static void write_png(const char *path, int h, int w, int c, int seed)
{
    unsigned char pix[64 * 64 * 3];
    fill_pixels(pix, h, w, c, seed);
    if (!stbi_write_png(path, w, h, c, pix, w * c)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void write_bmp(const char *path, int h, int w, int c, int seed)
{
    unsigned char pix[64 * 64 * 3];
    fill_pixels(pix, h, w, c, seed);
    if (!stbi_write_bmp(path, w, h, c, pix)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* A flat-coloured JPEG, so lossy compression keeps the value close. */
static void write_jpg(const char *path, int h, int w, unsigned char v)
{
    unsigned char pix[64 * 64];
    memset(pix, v, sizeof pix);
    if (!stbi_write_jpg(path, w, h, 1, pix, 95)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void write_pgm(const char *path, int h, int w, int seed)
{
    unsigned char buf[64 * 64 + 64];
    int hdr = snprintf((char *)buf, 64, "P5\n%d %d\n255\n", w, h);
    fill_pixels(buf + hdr, h, w, 1, seed);
    write_bytes(path, buf, (size_t)hdr + (size_t)(h * w));
}

/* ---- IDX writers ----------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX images in memory: image i has pixel 0 = i % 256, pixel 1 = i / 256
 * (so tests can tell which observation they got), the rest a pattern. */
static unsigned char *idx_images(uint32_t n, uint32_t rows, uint32_t cols, size_t *len)
{
    *len = 16 + (size_t)n * rows * cols;
    unsigned char *b = malloc(*len);
    put_be32(b, 0x803);
    put_be32(b + 4, n);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char *p = b + 16 + (size_t)i * rows * cols;
        fill_pixels(p, (int)rows, (int)cols, 1, (int)i);
        p[0] = (unsigned char)(i % 256);
        p[1] = (unsigned char)(i / 256);
    }
    return b;
}

static unsigned char *idx_labels(uint32_t n, const unsigned char *labels, size_t *len)
{
    *len = 8 + n;
    unsigned char *b = malloc(*len);
    put_be32(b, 0x801);
    put_be32(b + 4, n);
    memcpy(b + 8, labels, n);
    return b;
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile g = gzopen(path, "wb");
    if (!g || gzwrite(g, data, (unsigned)len) != (int)len || gzclose(g) != Z_OK) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* Label of observation i in the IDX sets below: unbalanced classes. */
static unsigned char label_of(uint32_t i) { return (unsigned char)(i % 7 < 4 ? 0 : i % 7 < 6 ? 1 : 2); }

/* Write images + labels (n obs, rows x cols) into dir with MNIST names. */
static void write_idx_pair(const char *dir, const char *prefix, uint32_t n, uint32_t rows, uint32_t cols,
                           int gz, char *img_path, char *lab_path, size_t cap)
{
    size_t li, ll;
    unsigned char *labels = malloc(n);
    for (uint32_t i = 0; i < n; i++)
        labels[i] = label_of(i);
    unsigned char *im = idx_images(n, rows, cols, &li);
    unsigned char *lb = idx_labels(n, labels, &ll);
    char name[256];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
    path_join(img_path, cap, dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
    path_join(lab_path, cap, dir, name);
    if (gz) {
        write_gz(img_path, im, li);
        write_gz(lab_path, lb, ll);
    } else {
        write_bytes(img_path, im, li);
        write_bytes(lab_path, lb, ll);
    }
    free(labels);
    free(im);
    free(lb);
}

/* Which IDX observation a read returned (see idx_images). */
static int obs_id(const dpt_datastore *ds, size_t i)
{
    int h, w, c;
    if (dpt_datastore_image_size(ds, i, &h, &w, &c))
        return -1;
    float *buf = malloc((size_t)(h * w) * sizeof *buf);
    int id = -1;
    if (dpt_datastore_read(ds, i, 1, h, w, buf) == DPT_OK)
        id = (int)lroundf(buf[0] * 255.0f) + 256 * (int)lroundf(buf[1] * 255.0f);
    free(buf);
    return id;
}

/* An IDX datastore of n observations of 4x5 pixels. */
static dpt_datastore *idx_store(const char *name, uint32_t n)
{
    char dir[512], ip[1024], lp[1024];
    fresh_dir(dir, sizeof dir, name);
    write_idx_pair(dir, "train", n, 4, 5, 0, ip, lp, sizeof ip);
    dpt_datastore *ds = NULL;
    OK(dpt_datastore_open_idx(ip, lp, &ds));
    return ds;
}

/* ---- tests: folder datastore ---------------------------------------------------------- */

/* Builds root/{ant_9,bird,cat} with PNG, BMP, PGM, JPEG files and junk. */
static void make_image_folder(const char *root)
{
    char d[1024], p[1200];
    make_dir(root);
    path_join(d, sizeof d, root, "cat");
    make_dir(d);
    path_join(p, sizeof p, d, "b.png");
    write_png(p, 6, 5, 1, 1);
    path_join(p, sizeof p, d, "a.BMP"); /* extension case does not matter */
    write_bmp(p, 6, 5, 3, 2);
    path_join(p, sizeof p, d, "notes.txt");
    write_bytes(p, "hello", 5);
    path_join(d, sizeof d, root, "bird");
    make_dir(d);
    path_join(p, sizeof p, d, "x.pgm");
    write_pgm(p, 6, 5, 3);
    path_join(p, sizeof p, d, "y.jpg");
    write_jpg(p, 8, 8, 200);
    path_join(p, sizeof p, d, "README");
    write_bytes(p, "x", 1);
    path_join(p, sizeof p, d, ".hidden.png"); /* ignored, not counted */
    write_bytes(p, "x", 1);
    path_join(d, sizeof d, root, "ant_9");
    make_dir(d);
    path_join(p, sizeof p, d, "z.png");
    write_png(p, 6, 5, 3, 4);
    path_join(p, sizeof p, root, "toplevel.png"); /* not in a class: ignored */
    write_bytes(p, "x", 1);
}

static void test_folder_basic(void)
{
    char root[512];
    path_join(root, sizeof root, tmp_root, "imgs");
    make_image_folder(root);
    dpt_datastore *ds = NULL;
    OK(dpt_datastore_open_folder(root, NULL, &ds));
    if (!ds)
        return;
    CHECK(dpt_datastore_kind_of(ds) == DPT_DATASTORE_FOLDER);
    CHECK(dpt_datastore_n_obs(ds) == 5);
    CHECK(dpt_datastore_n_classes(ds) == 3);
    CHECK(!strcmp(dpt_datastore_class_name(ds, 0), "ant_9"));
    CHECK(!strcmp(dpt_datastore_class_name(ds, 1), "bird"));
    CHECK(!strcmp(dpt_datastore_class_name(ds, 2), "cat"));
    CHECK(dpt_datastore_n_skipped(ds) == 2);
    CHECK(dpt_datastore_n_corrupt(ds) == 0);
    /* Order: classes in order, files sorted by name within each. */
    const char *want[5] = {"ant_9/z.png", "bird/x.pgm", "bird/y.jpg", "cat/a.BMP", "cat/b.png"};
    int want_label[5] = {0, 1, 1, 2, 2};
    for (size_t i = 0; i < 5; i++) {
        const char *f = dpt_datastore_file(ds, i);
        size_t lf = strlen(f), lw = strlen(want[i]);
        CHECK(lf > lw && !strcmp(f + lf - lw, want[i]));
        CHECK(dpt_datastore_label(ds, i) == want_label[i]);
    }
    size_t counts[3];
    dpt_datastore_count_labels(ds, counts);
    CHECK(counts[0] == 1 && counts[1] == 2 && counts[2] == 2);

    int h, w, c;
    OK(dpt_datastore_image_size(ds, 3, &h, &w, &c));
    CHECK(h == 6 && w == 5 && c == 3);

    /* Lossless formats read back exactly, at native size. */
    unsigned char ref[6 * 5 * 3];
    float out[3 * 6 * 5];
    OK(dpt_datastore_read(ds, 4, 1, 6, 5, out)); /* grey PNG */
    fill_pixels(ref, 6, 5, 1, 1);
    int bad = 0;
    for (int j = 0; j < 30; j++)
        bad += fabsf(out[j] - ref[j] / 255.0f) > 1e-6f;
    CHECK(bad == 0);
    OK(dpt_datastore_read(ds, 1, 1, 6, 5, out)); /* PGM */
    fill_pixels(ref, 6, 5, 1, 3);
    bad = 0;
    for (int j = 0; j < 30; j++)
        bad += fabsf(out[j] - ref[j] / 255.0f) > 1e-6f;
    CHECK(bad == 0);
    OK(dpt_datastore_read(ds, 3, 3, 6, 5, out)); /* colour BMP, planes [3,H,W] */
    fill_pixels(ref, 6, 5, 3, 2);
    bad = 0;
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 30; j++)
            bad += fabsf(out[k * 30 + j] - ref[j * 3 + k] / 255.0f) > 1e-6f;
    CHECK(bad == 0);
    /* Colour read as grey: stb's integer luminance. */
    OK(dpt_datastore_read(ds, 3, 1, 6, 5, out));
    bad = 0;
    for (int j = 0; j < 30; j++) {
        int y = (ref[j * 3] * 77 + ref[j * 3 + 1] * 150 + ref[j * 3 + 2] * 29) >> 8;
        bad += fabsf(out[j] - y / 255.0f) > 1e-6f;
    }
    CHECK(bad == 0);
    /* Grey read as colour: replicated. */
    OK(dpt_datastore_read(ds, 4, 3, 6, 5, out));
    fill_pixels(ref, 6, 5, 1, 1);
    bad = 0;
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 30; j++)
            bad += fabsf(out[k * 30 + j] - ref[j] / 255.0f) > 1e-6f;
    CHECK(bad == 0);
    /* JPEG: lossy, flat value 200, resized 8x8 -> 4x4 stays flat. */
    OK(dpt_datastore_read(ds, 2, 1, 4, 4, out));
    bad = 0;
    for (int j = 0; j < 16; j++)
        bad += fabsf(out[j] - 200 / 255.0f) > 3 / 255.0f;
    CHECK(bad == 0);

    /* Preload gives the same values as decoding on read. */
    dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
    o.preload = 1;
    dpt_datastore *pre = NULL;
    OK(dpt_datastore_open_folder(root, &o, &pre));
    if (pre) {
        float a[3 * 7 * 9], b[3 * 7 * 9];
        bad = 0;
        for (size_t i = 0; i < 5; i++) {
            OK(dpt_datastore_read(ds, i, 3, 7, 9, a));
            OK(dpt_datastore_read(pre, i, 3, 7, 9, b));
            bad += memcmp(a, b, sizeof a) != 0;
        }
        CHECK(bad == 0);
    }
    /* A single file, as predict reads it: the same as the datastore read. */
    {
        float a[3 * 7 * 9], b[3 * 7 * 9];
        OK(dpt_datastore_read(ds, 3, 3, 7, 9, a));
        OK(dpt_image_load(dpt_datastore_file(ds, 3), 3, 7, 9, b));
        CHECK(memcmp(a, b, sizeof a) == 0);
        FAILS(dpt_image_load(dpt_datastore_file(ds, 3), 4, 7, 9, b), DPT_ERR_ARG, "a.BMP");
    }
    /* Bad read arguments. */
    FAILS(dpt_datastore_read(ds, 5, 1, 6, 5, out), DPT_ERR_ARG, "observation");
    FAILS(dpt_datastore_read(ds, 0, 2, 6, 5, out), DPT_ERR_ARG, "channels");
    dpt_datastore_free(pre);
    dpt_datastore_free(ds);
}

static void test_folder_errors(void)
{
    char root[512], d[1024], p[1200];
    dpt_datastore *ds = NULL;

    path_join(root, sizeof root, tmp_root, "no-such-folder");
    FAILS(dpt_datastore_open_folder(root, NULL, &ds), DPT_ERR_IO, "no-such-folder");
    CHECK(ds == NULL);

    /* Only files, no class folders. */
    fresh_dir(root, sizeof root, "flat");
    path_join(p, sizeof p, root, "a.png");
    write_png(p, 4, 4, 1, 0);
    FAILS(dpt_datastore_open_folder(root, NULL, &ds), DPT_ERR_FORMAT, "flat: no class sub-folders");

    /* A class folder with no images (only a text file). */
    fresh_dir(root, sizeof root, "emptyclass");
    path_join(d, sizeof d, root, "one");
    make_dir(d);
    path_join(p, sizeof p, d, "a.png");
    write_png(p, 4, 4, 1, 0);
    path_join(d, sizeof d, root, "two");
    make_dir(d);
    path_join(p, sizeof p, d, "notes.txt");
    write_bytes(p, "x", 1);
    FAILS(dpt_datastore_open_folder(root, NULL, &ds), DPT_ERR_FORMAT, "emptyclass/two: class folder has no images");

    /* A zero-byte image file: error at open, naming the file. */
    fresh_dir(root, sizeof root, "zero");
    path_join(d, sizeof d, root, "c");
    make_dir(d);
    path_join(p, sizeof p, d, "ok.png");
    write_png(p, 4, 4, 1, 0);
    path_join(p, sizeof p, d, "empty.png");
    write_bytes(p, "", 0);
    FAILS(dpt_datastore_open_folder(root, NULL, &ds), DPT_ERR_FORMAT, "zero/c/empty.png");

    /* A corrupt PNG (a valid signature, then garbage) and a truncated one:
     * open lists them, read fails naming the file. */
    fresh_dir(root, sizeof root, "corrupt");
    path_join(d, sizeof d, root, "c");
    make_dir(d);
    path_join(p, sizeof p, d, "a_ok.png");
    write_png(p, 4, 4, 1, 0);
    path_join(p, sizeof p, d, "b_bad.png");
    write_bytes(p, "\x89PNG\r\n\x1a\nthis is not a png at all", 32);
    {
        /* Truncated: the first half of a real PNG. */
        char src[1200];
        path_join(src, sizeof src, d, "a_ok.png");
        FILE *f = fopen(src, "rb");
        unsigned char buf[4096];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f)
            fclose(f);
        path_join(p, sizeof p, d, "c_trunc.png");
        write_bytes(p, buf, n / 2);
    }
    OK(dpt_datastore_open_folder(root, NULL, &ds));
    if (ds) {
        float out[16];
        CHECK(dpt_datastore_n_obs(ds) == 3);
        OK(dpt_datastore_read(ds, 0, 1, 4, 4, out));
        FAILS(dpt_datastore_read(ds, 1, 1, 4, 4, out), DPT_ERR_FORMAT, "corrupt/c/b_bad.png");
        FAILS(dpt_datastore_read(ds, 2, 1, 4, 4, out), DPT_ERR_FORMAT, "corrupt/c/c_trunc.png");
        FAILS(dpt_image_load(dpt_datastore_file(ds, 1), 1, 4, 4, out), DPT_ERR_FORMAT, "corrupt/c/b_bad.png");
        path_join(p, sizeof p, d, "gone.png");
        FAILS(dpt_image_load(p, 1, 4, 4, out), DPT_ERR_IO, "corrupt/c/gone.png");
        dpt_datastore_free(ds);
        ds = NULL;
    }
    /* preload: the corrupt file fails the open. */
    dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
    o.preload = 1;
    FAILS(dpt_datastore_open_folder(root, &o, &ds), DPT_ERR_FORMAT, "corrupt/c/b_bad.png");
    /* skip_corrupt: both bad files (and a zero-byte one) dropped, counted, named. */
    path_join(p, sizeof p, d, "d_empty.png");
    write_bytes(p, "", 0);
    o = (dpt_folder_options)DPT_FOLDER_OPTIONS_INIT;
    o.skip_corrupt = 1;
    OK(dpt_datastore_open_folder(root, &o, &ds));
    if (ds) {
        CHECK(dpt_datastore_n_obs(ds) == 1);
        CHECK(dpt_datastore_n_corrupt(ds) == 3);
        int seen = 0;
        for (size_t k = 0; k < dpt_datastore_n_corrupt(ds); k++) {
            const char *f = dpt_datastore_corrupt_file(ds, k);
            seen += strstr(f, "b_bad.png") != NULL || strstr(f, "c_trunc.png") != NULL ||
                    strstr(f, "d_empty.png") != NULL;
        }
        CHECK(seen == 3);
        /* and why: the problem without the file name in front */
        for (size_t k = 0; k < dpt_datastore_n_corrupt(ds); k++) {
            const char *f = dpt_datastore_corrupt_file(ds, k), *why = dpt_datastore_corrupt_reason(ds, k);
            CHECK(why != NULL);
            if (!why)
                continue;
            if (strstr(f, "d_empty.png"))
                CHECK_MSG(!strcmp(why, "empty file (0 bytes) is not an image"), "%s\n", why);
            else
                CHECK_MSG(!strncmp(why, "cannot decode image: ", 21), "%s: %s\n", f, why);
        }
        CHECK(dpt_datastore_corrupt_reason(ds, 3) == NULL);
        dpt_datastore_free(ds);
        ds = NULL;
    }
    /* A bad options version. */
    o.version = 99;
    FAILS(dpt_datastore_open_folder(root, &o, &ds), DPT_ERR_ARG, "version");
}

/* ---- tests: labels matched by class name ---------------------------------------------------- */

static void test_match_classes(void)
{
    char root[512];
    path_join(root, sizeof root, tmp_root, "imgs"); /* ant_9 (1), bird (2), cat (2) */
    make_image_folder(root);
    dpt_datastore *ds = NULL, *m = NULL, *m2 = NULL, *sub = NULL;
    OK(dpt_datastore_open_folder(root, NULL, &ds));
    if (!ds)
        return;
    /* The model's classes in another order, with more of them. */
    const char *names[5] = {"cat", "dog", "bird", "ant_9", "eel"};
    OK(dpt_datastore_match_classes(ds, "imgs", 5, names, &m));
    if (m) {
        CHECK(dpt_datastore_n_obs(m) == 5 && dpt_datastore_n_classes(m) == 5);
        for (int k = 0; k < 5; k++)
            CHECK(!strcmp(dpt_datastore_class_name(m, k), names[k]));
        const int want[5] = {3, 2, 2, 0, 0}; /* ant_9, bird, bird, cat, cat */
        for (size_t i = 0; i < 5; i++) {
            CHECK(dpt_datastore_label(m, i) == want[i]);
            CHECK(!strcmp(dpt_datastore_file(m, i), dpt_datastore_file(ds, i)));
        }
        size_t counts[5];
        dpt_datastore_count_labels(m, counts);
        CHECK(counts[0] == 2 && counts[1] == 0 && counts[2] == 2 && counts[3] == 1 && counts[4] == 0);
        /* Pixels come from the datastore underneath, bit for bit. */
        float a[3 * 6 * 5], b[3 * 6 * 5];
        OK(dpt_datastore_read(ds, 3, 3, 6, 5, a));
        OK(dpt_datastore_read(m, 3, 3, 6, 5, b));
        CHECK(!memcmp(a, b, sizeof a));
        int h = 0, w = 0, c = 0;
        OK(dpt_datastore_image_size(m, 3, &h, &w, &c));
        CHECK(h == 6 && w == 5 && c == 3);
        /* Subsets and a second matching stack; the parents may go first. */
        size_t pick[2] = {4, 1};
        OK(dpt_datastore_subset(m, pick, 2, &sub));
        const char *names2[3] = {"bird", "cat", "ant_9"};
        OK(dpt_datastore_match_classes(sub, NULL, 3, names2, &m2));
        dpt_datastore_free(m);
        m = NULL;
        dpt_datastore_free(sub);
        sub = NULL;
        if (m2) {
            CHECK(dpt_datastore_n_obs(m2) == 2);
            CHECK(dpt_datastore_label(m2, 0) == 1 && dpt_datastore_label(m2, 1) == 0); /* cat, bird */
            OK(dpt_datastore_read(m2, 0, 3, 6, 5, b));
            OK(dpt_datastore_read(ds, 4, 3, 6, 5, a));
            CHECK(!memcmp(a, b, sizeof a));
        }
        dpt_datastore_free(m2);
        m2 = NULL;
    }
    /* A class the names lack: an error naming it and the folder. */
    const char *few[2] = {"bird", "cat"};
    FAILS(dpt_datastore_match_classes(ds, "imgs", 2, few, &m), DPT_ERR_FORMAT,
          "imgs: class 'ant_9' is not one of the 2 classes the model knows ('bird', 'cat')");
    CHECK(m == NULL);
    /* ... unless the data has none of it (a subset without the ant). */
    size_t no_ant[2] = {1, 3};
    OK(dpt_datastore_subset(ds, no_ant, 2, &sub));
    OK(dpt_datastore_match_classes(sub, "imgs", 2, few, &m));
    CHECK(m && dpt_datastore_label(m, 0) == 0 && dpt_datastore_label(m, 1) == 1);
    dpt_datastore_free(m);
    dpt_datastore_free(sub);
    FAILS(dpt_datastore_match_classes(ds, "imgs", 0, few, &m), DPT_ERR_ARG, "no classes");
    dpt_datastore_free(ds);
}

/* Text from outside made printable: core/text.h. */
static void test_text_clean(void)
{
    char out[64];
    struct { const char *in; size_t max; const char *want; size_t cols; } cases[] = {
        {"plain", 0, "plain", 5},
        {"new\nline\ttab\x1b[2J", 0, "new\\x0aline\\x09tab\\x1b[2J", 25},
        {"\xff\xfe ok", 0, "\\xff\\xfe ok", 11},
        {"\xef\xbb\xbf" "conv", 0, "\\xef\\xbb\\xbfconv", 16},
        {"caf\xc3\xa9", 0, "caf\xc3\xa9", 4},             /* valid UTF-8 kept */
        {"\xc3\xa9\xc3\xa9\xc3\xa9", 2, "\xc3\xa9\xc3\xa9", 2}, /* cut by character */
        {"\xc0\xaf", 0, "\\xc0\\xaf", 8},                 /* overlong '/' */
        {"\xed\xa0\x80", 0, "\\xed\\xa0\\x80", 12},       /* a surrogate */
        {"\xc2\x9b" "1m", 0, "\\xc2\\x9b" "1m", 10},          /* C1 CSI */
        {"a\xe2\x80\xae" "b", 0, "a\\xe2\\x80\\xaeb", 14},    /* right-to-left override */
        {"ab\x01", 3, "ab", 2},                            /* an escape never cut */
        {"\xe2\x82", 0, "\\xe2\\x82", 8},                  /* truncated sequence */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t cols = dpt_text_clean(out, sizeof out, cases[i].in, (size_t)-1, cases[i].max);
        CHECK_MSG(!strcmp(out, cases[i].want) && cols == cases[i].cols, "case %zu: '%s' (%zu columns)\n", i,
                  out, cols);
    }
    /* A small buffer: whole characters only, always terminated. */
    char small[5];
    dpt_text_clean(small, sizeof small, "\xc3\xa9\xc3\xa9\xc3\xa9", (size_t)-1, 0);
    CHECK(!strcmp(small, "\xc3\xa9\xc3\xa9"));
    dpt_text_clean(small, sizeof small, "\x1b", (size_t)-1, 0);
    CHECK(!strcmp(small, "\\x1b"));
    dpt_text_clean(small, 4, "\x1b", (size_t)-1, 0);
    CHECK(!strcmp(small, ""));
}

/* ---- tests: split, shuffle, partition ------------------------------------------------------ */

static void test_split(void)
{
    const uint32_t N = 90; /* labels 0,1,2 with counts 52, 26, 12 */
    dpt_datastore *ds = idx_store("split", N);
    if (!ds)
        return;
    size_t counts[3];
    dpt_datastore_count_labels(ds, counts);
    CHECK(counts[0] == 52 && counts[1] == 26 && counts[2] == 12);

    dpt_datastore *a = NULL, *b = NULL, *a2 = NULL, *b2 = NULL, *a3 = NULL, *b3 = NULL;
    OK(dpt_datastore_split_each_label(ds, 0.9, 42, &a, &b));
    OK(dpt_datastore_split_each_label(ds, 0.9, 42, &a2, &b2));
    OK(dpt_datastore_split_each_label(ds, 0.9, 43, &a3, &b3));
    if (!a || !a2 || !a3)
        goto done;
    size_t ca[3], cb[3];
    dpt_datastore_count_labels(a, ca);
    dpt_datastore_count_labels(b, cb);
    /* round(0.9 * count) per label: 47 (46.8), 23 (23.4), 11 (10.8). */
    CHECK(ca[0] == 47 && ca[1] == 23 && ca[2] == 11);
    CHECK(cb[0] == 5 && cb[1] == 3 && cb[2] == 1);
    CHECK(dpt_datastore_n_obs(a) + dpt_datastore_n_obs(b) == N);
    /* Disjoint and covering; labels carried along; same seed same split. */
    int seen[90] = {0}, same = 1, differs = 0, label_ok = 1;
    for (size_t i = 0; i < dpt_datastore_n_obs(a); i++) {
        int id = obs_id(a, i);
        if (id >= 0 && id < 90)
            seen[id]++;
        label_ok &= dpt_datastore_label(a, i) == label_of((uint32_t)id);
        same &= id == obs_id(a2, i);
        differs |= id != obs_id(a3, i);
    }
    for (size_t i = 0; i < dpt_datastore_n_obs(b); i++) {
        int id = obs_id(b, i);
        if (id >= 0 && id < 90)
            seen[id]++;
        label_ok &= dpt_datastore_label(b, i) == label_of((uint32_t)id);
    }
    int cover = 1;
    for (int i = 0; i < 90; i++)
        cover &= seen[i] == 1;
    CHECK(cover);
    CHECK(label_ok);
    CHECK(same);
    CHECK(differs);
    /* Outputs keep the source order. */
    int sorted = 1;
    for (size_t i = 1; i < dpt_datastore_n_obs(a); i++)
        sorted &= obs_id(a, i - 1) < obs_id(a, i);
    CHECK(sorted);
    /* Edge fractions and bad ones. */
    dpt_datastore *e1 = NULL, *e2 = NULL;
    OK(dpt_datastore_split_each_label(ds, 1.0, 1, &e1, &e2));
    CHECK(e1 && e2 && dpt_datastore_n_obs(e1) == N && dpt_datastore_n_obs(e2) == 0);
    dpt_datastore_free(e1);
    dpt_datastore_free(e2);
    FAILS(dpt_datastore_split_each_label(ds, 1.5, 1, &e1, &e2), DPT_ERR_ARG, "fraction");
    FAILS(dpt_datastore_split_each_label(ds, NAN, 1, &e1, &e2), DPT_ERR_ARG, "fraction");
done:
    /* Free the parent first: the children keep the source alive. */
    dpt_datastore_free(ds);
    if (a)
        CHECK(obs_id(a, 0) >= 0);
    dpt_datastore_free(a);
    dpt_datastore_free(b);
    dpt_datastore_free(a2);
    dpt_datastore_free(b2);
    dpt_datastore_free(a3);
    dpt_datastore_free(b3);
}

static void test_shuffle_partition(void)
{
    const uint32_t N = 23;
    dpt_datastore *ds = idx_store("part", N);
    if (!ds)
        return;
    dpt_datastore *s1 = NULL, *s2 = NULL, *s3 = NULL;
    OK(dpt_datastore_shuffle(ds, 7, &s1));
    OK(dpt_datastore_shuffle(ds, 7, &s2));
    OK(dpt_datastore_shuffle(ds, 8, &s3));
    if (s1 && s2 && s3) {
        int seen[23] = {0}, same = 1, differs = 0, moved = 0;
        for (size_t i = 0; i < N; i++) {
            int id = obs_id(s1, i);
            if (id >= 0 && id < 23)
                seen[id]++;
            same &= id == obs_id(s2, i);
            differs |= id != obs_id(s3, i);
            moved |= id != (int)i;
            CHECK(obs_id(ds, i) == (int)i); /* the original is unchanged */
        }
        int perm = 1;
        for (int i = 0; i < 23; i++)
            perm &= seen[i] == 1;
        CHECK(perm && same && differs && moved);
    }
    dpt_datastore_free(s1);
    dpt_datastore_free(s2);
    dpt_datastore_free(s3);

    for (int n = 1; n <= 7; n++) {
        size_t next = 0;
        for (int i = 0; i < n; i++) {
            dpt_datastore *p = NULL;
            OK(dpt_datastore_partition(ds, n, i, &p));
            if (!p)
                continue;
            size_t want = N / (size_t)n + ((size_t)i < N % (size_t)n ? 1 : 0);
            CHECK(dpt_datastore_n_obs(p) == want);
            /* Contiguous and in order: covering and disjoint together. */
            for (size_t j = 0; j < dpt_datastore_n_obs(p); j++)
                CHECK(obs_id(p, j) == (int)(next + j));
            next += dpt_datastore_n_obs(p);
            dpt_datastore_free(p);
        }
        CHECK(next == N);
    }
    /* More blocks than observations: empty blocks at the end. */
    dpt_datastore *p = NULL;
    OK(dpt_datastore_partition(ds, 30, 29, &p));
    CHECK(p && dpt_datastore_n_obs(p) == 0);
    dpt_datastore_free(p);
    FAILS(dpt_datastore_partition(ds, 3, 3, &p), DPT_ERR_ARG, "partition");
    FAILS(dpt_datastore_partition(ds, 0, 0, &p), DPT_ERR_ARG, "partition");

    size_t pick[3] = {5, 5, 0};
    OK(dpt_datastore_subset(ds, pick, 3, &p));
    if (p)
        CHECK(obs_id(p, 0) == 5 && obs_id(p, 1) == 5 && obs_id(p, 2) == 0);
    dpt_datastore_free(p);
    pick[2] = 23;
    FAILS(dpt_datastore_subset(ds, pick, 3, &p), DPT_ERR_ARG, "index 23");
    dpt_datastore_free(ds);
}

/* ---- tests: resize ------------------------------------------------------------------------------ */

static void test_resize(void)
{
    /* 2x2 -> 4x4 by hand: along each axis the four outputs sit at source
     * positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (taps 1 and 1):
     * weights of (x0, x1): (1,0) (.75,.25) (.25,.75) (0,1). */
    const float in22[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    const float w4[4][2] = {{1, 0}, {.75f, .25f}, {.25f, .75f}, {0, 1}};
    float out[64];
    dpt_image_resize_bilinear(in22, 1, 2, 2, out, 4, 4);
    int bad = 0;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            float row0 = w4[x][0] * in22[0] + w4[x][1] * in22[1];
            float row1 = w4[x][0] * in22[2] + w4[x][1] * in22[3];
            bad += fabsf(out[y * 4 + x] - (w4[y][0] * row0 + w4[y][1] * row1)) > 1e-6f;
        }
    CHECK(bad == 0);
    NEAR(out[5], 0.75f, 1e-6); /* (.75*(.75*0+.25*1) + .25*(.75*2+.25*3)) */

    /* 3x3 -> 2x2 by hand: positions 0.25 and 1.75. */
    const float in33[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    dpt_image_resize_bilinear(in33, 1, 3, 3, out, 2, 2);
    /* value = 3*y + x at (y, x) because the image is linear. */
    NEAR(out[0], 3 * 0.25 + 0.25, 1e-6);
    NEAR(out[1], 3 * 0.25 + 1.75, 1e-6);
    NEAR(out[2], 3 * 1.75 + 0.25, 1e-6);
    NEAR(out[3], 3 * 1.75 + 1.75, 1e-6);

    /* Same size: the identity. */
    dpt_image_resize_bilinear(in33, 1, 3, 3, out, 3, 3);
    CHECK(memcmp(out, in33, sizeof in33) == 0);

    /* PyTorch reference, non-integer ratios, two channels. Generated with:
     *   import torch, torch.nn.functional as F
     *   torch.manual_seed(0)
     *   x = torch.rand(1, 2, 3, 5)
     *   up = F.interpolate(x, size=(4, 7), mode="bilinear", align_corners=False)
     *   down = F.interpolate(x, size=(2, 3), mode="bilinear", align_corners=False)
     * (torch 1.13 / 2.x, CPU, float32), printed with %.8f. */
    static const float tin[30] = {
        0.49625659f, 0.76822180f, 0.08847743f, 0.13203049f, 0.30742282f, 0.63407868f, 0.49009341f, 0.89644474f,
        0.45562798f, 0.63230628f, 0.34889346f, 0.40171731f, 0.02232575f, 0.16885895f, 0.29388845f, 0.51852179f,
        0.69766760f, 0.80001140f, 0.16102946f, 0.28226858f, 0.68160856f, 0.91519397f, 0.39709991f, 0.87415588f,
        0.41940832f, 0.55290705f, 0.95273811f, 0.03616482f, 0.18523103f, 0.37341738f};
    static const float tup[56] = {
        0.49625659f, 0.65166533f, 0.57400912f, 0.08847743f, 0.11958677f, 0.20719865f, 0.30742282f, 0.58239543f,
        0.58925039f, 0.59412456f, 0.59345698f, 0.40832978f, 0.40979153f, 0.51047498f, 0.52713424f, 0.48703030f,
        0.48886603f, 0.56865013f, 0.41110685f, 0.41550818f, 0.50539958f, 0.34889346f, 0.37907851f, 0.29331970f,
        0.02232576f, 0.12699233f, 0.22244303f, 0.29388845f, 0.51852179f, 0.62089080f, 0.72690868f, 0.80001134f,
        0.34359568f, 0.21298909f, 0.28226858f, 0.62045103f, 0.74226278f, 0.75207019f, 0.54819173f, 0.59000725f,
        0.50441092f, 0.36798093f, 0.63334548f, 0.80244696f, 0.73855191f, 0.26174927f, 0.51464915f, 0.52424586f,
        0.40216172f, 0.55290705f, 0.78138196f, 0.69085997f, 0.03616483f, 0.14264069f, 0.26588234f, 0.37341738f};
    static const float tdown[12] = {0.58670467f, 0.29046926f, 0.33007240f, 0.42139697f, 0.24085550f, 0.33251232f,
                                    0.62354541f, 0.69928354f, 0.32413936f, 0.70450568f, 0.12639864f, 0.37576413f};
    dpt_image_resize_bilinear(tin, 2, 3, 5, out, 4, 7);
    double maxerr = 0;
    for (int j = 0; j < 56; j++)
        maxerr = fmax(maxerr, fabs(out[j] - tup[j]));
    dpt_image_resize_bilinear(tin, 2, 3, 5, out, 2, 3);
    for (int j = 0; j < 12; j++)
        maxerr = fmax(maxerr, fabs(out[j] - tdown[j]));
    CHECK(maxerr < 1e-6);
    if (maxerr >= 1e-6)
        fprintf(stderr, "resize: max error against PyTorch %g\n", maxerr);

    /* Through a datastore read: a 2x2 PNG read at 4x4 is the resize of its
     * pixels. */
    char root[512], d[1024], p[1200];
    fresh_dir(root, sizeof root, "tiny");
    path_join(d, sizeof d, root, "k");
    make_dir(d);
    path_join(p, sizeof p, d, "t.png");
    const unsigned char px[4] = {0, 60, 120, 255};
    CHECK(stbi_write_png(p, 2, 2, 1, px, 2) != 0);
    dpt_datastore *ds = NULL;
    OK(dpt_datastore_open_folder(root, NULL, &ds));
    if (ds) {
        float f22[4], want[16];
        for (int j = 0; j < 4; j++)
            f22[j] = px[j] / 255.0f;
        dpt_image_resize_bilinear(f22, 1, 2, 2, want, 4, 4);
        OK(dpt_datastore_read(ds, 0, 1, 4, 4, out));
        bad = 0;
        for (int j = 0; j < 16; j++)
            bad += fabsf(out[j] - want[j]) > 1e-6f;
        CHECK(bad == 0);
        dpt_datastore_free(ds);
    }
}

/* ---- tests: IDX -------------------------------------------------------------------------------------- */

static void test_idx(void)
{
    char dir[512], ip[1024], lp[1024], gip[1024], glp[1024];
    fresh_dir(dir, sizeof dir, "idx");
    write_idx_pair(dir, "train", 20, 3, 4, 0, ip, lp, sizeof ip);
    write_idx_pair(dir, "t10k", 20, 3, 4, 1, gip, glp, sizeof gip);
    dpt_datastore *a = NULL, *b = NULL, *c = NULL;
    OK(dpt_datastore_open_idx(ip, lp, &a));
    OK(dpt_datastore_open_idx(gip, NULL, &b)); /* labels path guessed */
    OK(dpt_datastore_open_idx_classes(ip, lp, 10, &c));
    if (a && b && c) {
        CHECK(dpt_datastore_kind_of(a) == DPT_DATASTORE_IDX);
        CHECK(dpt_datastore_n_obs(a) == 20 && dpt_datastore_n_obs(b) == 20);
        CHECK(dpt_datastore_n_classes(a) == 3 && dpt_datastore_n_classes(c) == 10);
        CHECK(!strcmp(dpt_datastore_class_name(a, 2), "2"));
        CHECK(!strcmp(dpt_datastore_file(b, 3), gip));
        int h, w, ch;
        OK(dpt_datastore_image_size(a, 0, &h, &w, &ch));
        CHECK(h == 3 && w == 4 && ch == 1);
        unsigned char ref[12];
        float fa[3 * 12], fb[3 * 12];
        int bad = 0;
        for (uint32_t i = 0; i < 20; i++) {
            CHECK(dpt_datastore_label(a, i) == label_of(i));
            CHECK(dpt_datastore_label(b, i) == label_of(i));
            OK(dpt_datastore_read(a, i, 1, 3, 4, fa));
            OK(dpt_datastore_read(b, i, 3, 3, 4, fb)); /* grey -> 3 channels */
            fill_pixels(ref, 3, 4, 1, (int)i);
            ref[0] = (unsigned char)i;
            ref[1] = 0;
            for (int j = 0; j < 12; j++) {
                bad += fabsf(fa[j] - ref[j] / 255.0f) > 1e-6f;
                for (int k = 0; k < 3; k++)
                    bad += fb[k * 12 + j] != fa[j];
            }
        }
        CHECK(bad == 0);
    }
    dpt_datastore_free(a);
    dpt_datastore_free(b);
    dpt_datastore_free(c);

    /* Labels path guessing, including a ".gz" toggle. */
    char buf[1200];
    OK(dpt_datastore_idx_labels_path("/x/train-images-idx3-ubyte.gz", buf, sizeof buf));
    CHECK(!strcmp(buf, "/x/train-labels-idx1-ubyte.gz"));
    OK(dpt_datastore_idx_labels_path("/x/t10k-images.idx3-ubyte", buf, sizeof buf));
    CHECK(!strcmp(buf, "/x/t10k-labels.idx1-ubyte"));
    char plain_gz[1100];
    snprintf(plain_gz, sizeof plain_gz, "%s.gz", ip); /* labels exist without .gz */
    OK(dpt_datastore_idx_labels_path(plain_gz, buf, sizeof buf));
    CHECK(!strcmp(buf, lp));
    FAILS(dpt_datastore_idx_labels_path("/x/pictures.bin", buf, sizeof buf), DPT_ERR_ARG, "pictures.bin");

    if (getenv("DPT_FASHION_MNIST")) {
        /* Optional: the real thing, when Debian's dataset-fashion-mnist is
         * installed and the variable names its folder. */
        char fi[1024];
        snprintf(fi, sizeof fi, "%s/t10k-images-idx3-ubyte.gz", getenv("DPT_FASHION_MNIST"));
        OK(dpt_datastore_open_idx(fi, NULL, &a));
        if (a) {
            CHECK(dpt_datastore_n_obs(a) == 10000 && dpt_datastore_n_classes(a) == 10);
            dpt_datastore_free(a);
        }
    }
}

/* Write an IDX file from bytes, plain or gzip. */
static void put_file(const char *path, const unsigned char *b, size_t len, int gz)
{
    if (gz)
        write_gz(path, b, len);
    else
        write_bytes(path, b, len);
}

static void test_idx_errors(void)
{
    char dir[512], p[1024], lp[1024], good_lp[1024];
    fresh_dir(dir, sizeof dir, "idxbad");
    size_t li, ll;
    unsigned char labels[10] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 5};
    unsigned char *im = idx_images(10, 4, 4, &li);
    unsigned char *lb = idx_labels(10, labels, &ll);
    path_join(good_lp, sizeof good_lp, dir, "good-labels");
    write_bytes(good_lp, lb, ll);
    dpt_datastore *ds = NULL;

    for (int gz = 0; gz < 2; gz++) {
        const char *sfx = gz ? ".gz" : "";
        /* Wrong magic (labels magic in an images file). */
        snprintf(p, sizeof p, "%s/magic-images%s", dir, sfx);
        unsigned char *bad = malloc(li);
        memcpy(bad, im, li);
        put_be32(bad, 0x801);
        put_file(p, bad, li, gz);
        FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_FORMAT, p);
        CHECK(strstr(dpt_last_error(), "magic") != NULL);
        /* Dimensions that do not match the length: 12 images declared. */
        memcpy(bad, im, li);
        put_be32(bad + 4, 12);
        snprintf(p, sizeof p, "%s/dims-images%s", dir, sfx);
        put_file(p, bad, li, gz);
        FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_FORMAT, p);
        /* ... and longer than the header says (5x4 pixels declared). */
        memcpy(bad, im, li);
        put_be32(bad + 8, 3);
        put_file(p, bad, li, gz);
        FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_FORMAT, p);
        /* Truncated in the middle of the pixels. */
        snprintf(p, sizeof p, "%s/trunc-images%s", dir, sfx);
        put_file(p, im, li / 2, gz);
        FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_FORMAT, p);
        CHECK(strstr(dpt_last_error(), "truncated") != NULL);
        /* Truncated inside the header. */
        put_file(p, im, 10, gz);
        FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_FORMAT, p);
        /* Labels shorter than images: 8 labels for 10 images. */
        snprintf(p, sizeof p, "%s/ok-images%s", dir, sfx);
        put_file(p, im, li, gz);
        size_t l8;
        unsigned char *lb8 = idx_labels(8, labels, &l8);
        snprintf(lp, sizeof lp, "%s/short-labels%s", dir, sfx);
        put_file(lp, lb8, l8, gz);
        FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_FORMAT, lp);
        CHECK(strstr(dpt_last_error(), "8 labels for the 10 images") != NULL);
        free(lb8);
        /* A label file cut short (header says 10, 6 present). */
        snprintf(lp, sizeof lp, "%s/cut-labels%s", dir, sfx);
        put_file(lp, lb, ll - 4, gz);
        FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_FORMAT, lp);
        /* A label outside the class count (5 with 3 classes); fine with 0. */
        FAILS(dpt_datastore_open_idx_classes(p, good_lp, 3, &ds), DPT_ERR_FORMAT, "good-labels: label 5 of observation 9");
        OK(dpt_datastore_open_idx(p, good_lp, &ds));
        CHECK(ds && dpt_datastore_n_classes(ds) == 6);
        dpt_datastore_free(ds);
        ds = NULL;
        free(bad);
    }
    /* A gzip stream cut in the middle (compressed bytes missing). */
    {
        char gzp[1024], cut[1024];
        snprintf(gzp, sizeof gzp, "%s/whole-images.gz", dir);
        size_t lbig;
        unsigned char *big = idx_images(400, 8, 8, &lbig);
        write_gz(gzp, big, lbig);
        free(big);
        FILE *f = fopen(gzp, "rb");
        unsigned char *buf = malloc(1 << 20);
        size_t n = f ? fread(buf, 1, 1 << 20, f) : 0;
        if (f)
            fclose(f);
        snprintf(cut, sizeof cut, "%s/cut-images.gz", dir);
        write_bytes(cut, buf, n / 2);
        free(buf);
        FAILS(dpt_datastore_open_idx(cut, good_lp, &ds), DPT_ERR_FORMAT, cut);
        CHECK(strstr(dpt_last_error(), "truncated") != NULL);
    }
    /* Missing files, zero-byte file, bad class count. */
    snprintf(p, sizeof p, "%s/missing-images-idx3-ubyte", dir);
    FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_IO, p);
    FAILS(dpt_datastore_open_idx(p, NULL, &ds), DPT_ERR_IO, "missing-images-idx3-ubyte");
    snprintf(p, sizeof p, "%s/ok-images", dir);
    snprintf(lp, sizeof lp, "%s/nolabels", dir);
    FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_IO, lp);
    snprintf(p, sizeof p, "%s/zero-images", dir);
    write_bytes(p, "", 0);
    FAILS(dpt_datastore_open_idx(p, good_lp, &ds), DPT_ERR_FORMAT, p);
    FAILS(dpt_datastore_open_idx_classes(p, good_lp, -1, &ds), DPT_ERR_ARG, p);
    CHECK(ds == NULL);
    free(im);
    free(lb);
}

/* ---- tests: minibatch queue ------------------------------------------------------------------------- */

/* All batches of one pass: obs order, labels and pixels appended. */
typedef struct pass_log {
    size_t n_obs;
    int n_batches;
    int sizes[64];
    size_t obs[512];
    int labels[512];
    float *x; /* [n_obs, CHW] */
} pass_log;

static int run_pass(dpt_mbq *q, pass_log *log, size_t chw)
{
    memset(log->sizes, 0, sizeof log->sizes);
    log->n_obs = 0;
    log->n_batches = 0;
    while (dpt_mbq_has_data(q)) {
        dpt_batch b;
        dpt_status st = dpt_mbq_next(q, &b);
        if (st) {
            fprintf(stderr, "mbq next: %s\n", dpt_last_error());
            return 0;
        }
        log->sizes[log->n_batches++] = b.n;
        for (int j = 0; j < b.n; j++) {
            log->obs[log->n_obs] = b.obs[j];
            log->labels[log->n_obs] = b.labels[j];
            memcpy(log->x + log->n_obs * chw, b.x.data + (size_t)j * chw, chw * sizeof(float));
            log->n_obs++;
        }
    }
    return 1;
}

static int same_pass(const pass_log *a, const pass_log *b, size_t chw)
{
    return a->n_obs == b->n_obs && a->n_batches == b->n_batches &&
           !memcmp(a->obs, b->obs, a->n_obs * sizeof *a->obs) &&
           !memcmp(a->labels, b->labels, a->n_obs * sizeof *a->labels) &&
           !memcmp(a->x, b->x, a->n_obs * chw * sizeof(float));
}

static dpt_status invert(float *x, int n, int c, int h, int w, const int32_t *labels, void *arg)
{
    (void)labels;
    int *calls = arg;
    __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    for (size_t j = 0; j < (size_t)n * (size_t)(c * h * w); j++)
        x[j] = 1.0f - x[j];
    return DPT_OK;
}

static dpt_status refuse(float *x, int n, int c, int h, int w, const int32_t *labels, void *arg)
{
    (void)x, (void)n, (void)c, (void)h, (void)w, (void)labels, (void)arg;
    return dpt_fail(DPT_ERR_NUMERIC, "preprocess: refused this batch");
}

static void test_mbq(void)
{
    const uint32_t N = 50;
    dpt_datastore *ds = idx_store("mbq", N);
    if (!ds)
        return;
    const int C = 3, H = 6, W = 7, K = 3;
    size_t chw = (size_t)(C * H * W);
    pass_log on = {0}, off = {0};
    on.x = malloc(N * chw * sizeof(float));
    off.x = malloc(N * chw * sizeof(float));
    float *ref = malloc(chw * sizeof(float));

    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = 16;
    o.channels = C;
    o.height = H;
    o.width = W;
    dpt_mbq *qon = NULL, *qoff = NULL;
    OK(dpt_mbq_new(ds, &o, &qon));
    o.prefetch = 0;
    OK(dpt_mbq_new(ds, &o, &qoff));
    if (!qon || !qoff)
        goto done;
    CHECK(dpt_mbq_n_batches(qon) == 4 && dpt_mbq_n_obs(qon) == N);

    /* First batch: shapes, one-hot, labels, pixels equal to a direct read. */
    {
        dpt_batch b;
        OK(dpt_mbq_next(qon, &b));
        CHECK(b.n == 16);
        CHECK(b.x.ndim == 4 && b.x.shape[0] == 16 && b.x.shape[1] == C && b.x.shape[2] == H && b.x.shape[3] == W);
        CHECK(b.y.ndim == 2 && b.y.shape[0] == 16 && b.y.shape[1] == K);
        int bad = 0;
        for (int j = 0; j < b.n; j++) {
            CHECK(b.obs[j] == (size_t)j);
            CHECK(b.labels[j] == label_of((uint32_t)j));
            for (int k = 0; k < K; k++)
                bad += b.y.data[j * K + k] != (k == b.labels[j] ? 1.0f : 0.0f);
            OK(dpt_datastore_read(ds, (size_t)j, C, H, W, ref));
            bad += memcmp(ref, b.x.data + (size_t)j * chw, chw * sizeof(float)) != 0;
        }
        CHECK(bad == 0);
        dpt_mbq_reset(qon); /* reset in the middle of a pass */
    }
    /* The queue owns its data: the caller's datastore may go now. */
    dpt_datastore_free(ds);
    ds = NULL;

    /* Whole passes: sizes 16,16,16,2; prefetch on and off identical. */
    CHECK(run_pass(qon, &on, chw));
    CHECK(run_pass(qoff, &off, chw));
    CHECK(on.n_batches == 4 && on.sizes[0] == 16 && on.sizes[3] == 2);
    CHECK(same_pass(&on, &off, chw));
    {
        dpt_batch b;
        FAILS(dpt_mbq_next(qon, &b), DPT_ERR_ARG, "no data left");
    }
    /* Shuffle: same seed, same order on both queues and on every repeat;
     * the order is dpt_datastore_shuffle's; reset repeats it. */
    for (int rep = 0; rep < 3; rep++) {
        dpt_mbq_shuffle(qon, 11);
        dpt_mbq_shuffle(qoff, 11);
        CHECK(run_pass(qon, &on, chw));
        CHECK(run_pass(qoff, &off, chw));
        CHECK(same_pass(&on, &off, chw));
        size_t want[50];
        for (size_t i = 0; i < N; i++)
            want[i] = i;
        /* Fisher-Yates with stream 0, as documented. */
        dpt_rng r;
        dpt_rng_seed(&r, 11, 0);
        uint32_t perm[50];
        for (uint32_t i = 0; i < N; i++)
            perm[i] = i;
        dpt_rng_shuffle(&r, perm, N);
        int ok = 1;
        for (size_t i = 0; i < N; i++)
            ok &= on.obs[i] == want[perm[i]];
        CHECK(ok);
    }
    {
        pass_log again = {0};
        again.x = malloc(N * chw * sizeof(float));
        dpt_mbq_reset(qon);
        CHECK(run_pass(qon, &again, chw));
        CHECK(same_pass(&on, &again, chw));
        dpt_mbq_shuffle(qon, 12);
        CHECK(run_pass(qon, &again, chw));
        CHECK(!same_pass(&on, &again, chw));
        free(again.x);
    }
    /* Stress the hand-over: reset and shuffle while the worker is busy. */
    for (int rep = 0; rep < 50; rep++) {
        dpt_batch b;
        dpt_mbq_shuffle(qon, (uint64_t)rep);
        if (rep % 3)
            OK(dpt_mbq_next(qon, &b));
        if (rep % 5 == 0)
            dpt_mbq_reset(qon);
    }
done:
    dpt_mbq_free(qon);
    dpt_mbq_free(qoff);
    dpt_datastore_free(ds);
    free(on.x);
    free(off.x);
    free(ref);
}

static void test_mbq_options(void)
{
    const uint32_t N = 50;
    dpt_datastore *ds = idx_store("mbqopt", N);
    if (!ds)
        return;
    /* Defaults: native size (4x5, 1 channel), batch 128: one batch of 50. */
    dpt_mbq *q = NULL;
    OK(dpt_mbq_new(ds, NULL, &q));
    if (q) {
        int c, h, w, k;
        dpt_mbq_shape(q, &c, &h, &w, &k);
        CHECK(c == 1 && h == 4 && w == 5 && k == 3);
        dpt_batch b;
        OK(dpt_mbq_next(q, &b));
        CHECK(b.n == 50 && !dpt_mbq_has_data(q));
        dpt_mbq_free(q);
        q = NULL;
    }
    /* drop_partial: 3 batches of 16. */
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = 16;
    o.drop_partial = 1;
    OK(dpt_mbq_new(ds, &o, &q));
    if (q) {
        CHECK(dpt_mbq_n_batches(q) == 3);
        dpt_mbq_free(q);
        q = NULL;
    }
    /* Preprocess callback, prefetch on and off. */
    for (int pf = 0; pf < 2; pf++) {
        int calls = 0;
        o = (dpt_mbq_options)DPT_MBQ_OPTIONS_INIT;
        o.batch_size = 20;
        o.prefetch = pf;
        o.preprocess = invert;
        o.preprocess_arg = &calls;
        OK(dpt_mbq_new(ds, &o, &q));
        if (!q)
            continue;
        float ref[20];
        int bad = 0;
        size_t seen = 0;
        while (dpt_mbq_has_data(q)) {
            dpt_batch b;
            OK(dpt_mbq_next(q, &b));
            for (int j = 0; j < b.n; j++, seen++) {
                OK(dpt_datastore_read(ds, b.obs[j], 1, 4, 5, ref));
                for (int p = 0; p < 20; p++)
                    bad += b.x.data[j * 20 + p] != 1.0f - ref[p];
            }
        }
        CHECK(bad == 0 && seen == N);
        dpt_mbq_free(q); /* joins the worker: calls is final */
        q = NULL;
        CHECK(calls == 3);
        /* A failing preprocess surfaces from next(). */
        o.preprocess = refuse;
        OK(dpt_mbq_new(ds, &o, &q));
        if (q) {
            dpt_batch b;
            FAILS(dpt_mbq_next(q, &b), DPT_ERR_NUMERIC, "refused this batch");
            dpt_mbq_free(q);
            q = NULL;
        }
    }
    /* Bad options. */
    o = (dpt_mbq_options)DPT_MBQ_OPTIONS_INIT;
    o.batch_size = 0;
    FAILS(dpt_mbq_new(ds, &o, &q), DPT_ERR_ARG, "batch size");
    o.batch_size = 4;
    o.channels = 2;
    FAILS(dpt_mbq_new(ds, &o, &q), DPT_ERR_ARG, "channels");
    o.channels = 1;
    o.version = 0;
    FAILS(dpt_mbq_new(ds, &o, &q), DPT_ERR_ARG, "version");
    CHECK(q == NULL);
    dpt_datastore_free(ds);
}

/* A corrupt image in the folder: next() reports it, with the file name,
 * whether it was decoded in the background or not; the queue goes on. */
static void test_mbq_error(void)
{
    char root[512], d[1024], p[1200];
    fresh_dir(root, sizeof root, "mbqbad");
    path_join(d, sizeof d, root, "c");
    make_dir(d);
    for (int i = 0; i < 9; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        path_join(p, sizeof p, d, name);
        if (i == 5)
            write_bytes(p, "\x89PNG\r\n\x1a\ngarbage garbage garbage", 31);
        else
            write_png(p, 8, 8, 1, i);
    }
    dpt_datastore *ds = NULL;
    OK(dpt_datastore_open_folder(root, NULL, &ds));
    if (!ds)
        return;
    for (int pf = 0; pf < 2; pf++) {
        dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
        o.batch_size = 4;
        o.prefetch = pf;
        o.height = o.width = 5;
        dpt_mbq *q = NULL;
        OK(dpt_mbq_new(ds, &o, &q));
        if (!q)
            continue;
        dpt_batch b;
        OK(dpt_mbq_next(q, &b));
        CHECK(b.n == 4);
        FAILS(dpt_mbq_next(q, &b), DPT_ERR_FORMAT, "mbqbad/c/img5.png");
        CHECK(dpt_mbq_has_data(q));
        OK(dpt_mbq_next(q, &b));
        CHECK(b.n == 1 && !dpt_mbq_has_data(q));
        /* The error comes back on every pass. */
        dpt_mbq_reset(q);
        OK(dpt_mbq_next(q, &b));
        FAILS(dpt_mbq_next(q, &b), DPT_ERR_FORMAT, "img5.png");
        dpt_mbq_free(q);
    }
    dpt_datastore_free(ds);
}

/* ---- driver ------------------------------------------------------------------------------------ */

/* ---- tests: hostile files (issue 18) ------------------------------------------------------------------ */

/* A FIFO or a folder is refused before a byte is read (opening a FIFO
 * blocked for ever); a gzip IDX file is inflated no further than its
 * header implies; an image is resized from its 8-bit pixels with exactly
 * the bits of converting it whole to float first. */
static void test_hostile(void)
{
    char dir[512], fifo[1024], lp[1024], ip[1024], p[1024];
    fresh_dir(dir, sizeof dir, "hostile");
    size_t li, ll;
    unsigned char labels[10] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
    unsigned char *im = idx_images(10, 4, 4, &li);
    unsigned char *lb = idx_labels(10, labels, &ll);
    path_join(lp, sizeof lp, dir, "labels");
    write_bytes(lp, lb, ll);
    path_join(ip, sizeof ip, dir, "images");
    write_bytes(ip, im, li);
    path_join(fifo, sizeof fifo, dir, "fifo.png");
    CHECK(mkfifo(fifo, 0600) == 0);
    dpt_datastore *ds = NULL;
    float px[3 * 28 * 28];
    FAILS(dpt_datastore_open_idx(fifo, lp, &ds), DPT_ERR_IO, "fifo.png: not a regular file (a FIFO)");
    FAILS(dpt_datastore_open_idx(ip, fifo, &ds), DPT_ERR_IO, "fifo.png: not a regular file (a FIFO)");
    FAILS(dpt_image_load(fifo, 1, 28, 28, px), DPT_ERR_IO, "fifo.png: not a regular file (a FIFO)");
    FAILS(dpt_image_load(dir, 1, 28, 28, px), DPT_ERR_IO, "not a regular file (a folder)");
    FAILS(dpt_datastore_open_idx("/dev/null", lp, &ds), DPT_ERR_IO, "not a regular file (a character device)");
    CHECK(ds == NULL);

    /* 10 images of 4x4 by the header, then 8 MB more: refused after
     * inflating the 176 bytes it implies and one more. */
    size_t extra = 8u << 20;
    unsigned char *big = calloc(li + extra, 1);
    memcpy(big, im, li);
    path_join(p, sizeof p, dir, "long-images.gz");
    write_gz(p, big, li + extra);
    FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_FORMAT,
          "the decompressed data goes on past the 176 bytes the header's dimensions imply");
    /* A header promising 784 MB from 4 KB of gzip data. */
    put_be32(big + 4, 1000000);
    put_be32(big + 8, 28), put_be32(big + 12, 28);
    path_join(p, sizeof p, dir, "promise-images.gz");
    write_gz(p, big, 4096);
    FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_FORMAT, "cannot inflate to more than");
    put_be32(big + 4, 0xffffffffu);
    put_be32(big + 8, 0xffff), put_be32(big + 12, 0xffff);
    path_join(p, sizeof p, dir, "huge-images");
    write_bytes(p, big, 4096);
    FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_FORMAT, "dimensions too large");
    put_be32(big + 4, 10000), put_be32(big + 8, 1000), put_be32(big + 12, 1000);
    write_bytes(p, big, 4096); /* 10 GB by the header: past the 4 GiB cap */
    FAILS(dpt_datastore_open_idx(p, lp, &ds), DPT_ERR_FORMAT, "more than the 4294967296 an IDX file may hold");
    free(big);

    /* Resize from 8-bit pixels: the same bits as raw_to_planes followed by
     * dpt_image_resize_bilinear, colour to grey, colour, grey to colour. */
    const int w = 37, h = 23;
    for (int nc = 1; nc <= 3; nc += 2) {
        unsigned char *pix = malloc((size_t)w * h * nc + 64);
        int hdr = snprintf((char *)pix, 64, "%s %d %d 255\n", nc == 3 ? "P6" : "P5", w, h);
        uint32_t r = 12345;
        for (int i = 0; i < w * h * nc; i++)
            pix[hdr + i] = (unsigned char)((r = r * 1103515245u + 12345u) >> 16);
        path_join(p, sizeof p, dir, nc == 3 ? "rgb.ppm" : "grey.pgm");
        write_bytes(p, pix, (size_t)hdr + (size_t)w * h * nc);
        raw_image img = {pix + hdr, NULL, h, w, nc};
        for (int c = 1; c <= 3; c += 2) {
            float *whole = malloc((size_t)c * w * h * sizeof *whole), want[3 * 28 * 28];
            raw_to_planes(&img, c, whole);
            dpt_image_resize_bilinear(whole, c, h, w, want, 28, 28);
            OK(dpt_image_load(p, c, 28, 28, px));
            CHECK(memcmp(px, want, (size_t)c * 28 * 28 * sizeof *px) == 0);
            free(whole);
        }
        free(pix);
    }
    free(im);
    free(lb);
}

typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case;

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"folder_basic", test_folder_basic},   {"folder_errors", test_folder_errors},
        {"split", test_split},                 {"shuffle_partition", test_shuffle_partition},
        {"resize", test_resize},               {"idx", test_idx},
        {"idx_errors", test_idx_errors},       {"mbq", test_mbq},
        {"mbq_options", test_mbq_options},     {"mbq_error", test_mbq_error},
        {"hostile", test_hostile},
        {"match_classes", test_match_classes}, {"text_clean", test_text_clean},
    };
    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/dpt_test_data_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmp_root)) {
        fprintf(stderr, "cannot make a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    int ran = 0;
    for (size_t t = 0; t < sizeof tests / sizeof *tests; t++) {
        if (argc > 1 && !strstr(tests[t].name, argv[1]))
            continue;
        int before = n_fail;
        tests[t].fn();
        ran++;
        printf("%-20s %s\n", tests[t].name, n_fail == before ? "ok" : "FAILED");
    }
    tu_remove_tree(tmp_root);
    printf("%d tests, %d checks, %d failed\n", ran, n_check, n_fail);
    return n_fail ? 1 : 0;
}
