/* safetensors reader and writer: round trip, a file written by Python,
 * malformed files, and atomic replacement. */
#include "core/safetensors.h"
#include "dptrain/core.h"
#include "testutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[512];

static void path_in_tmp(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* A file with an explicit header text and `data_bytes` bytes of data. */
static void write_st_raw(const char *path, const char *header, size_t data_bytes)
{
    size_t hlen = strlen(header);
    size_t n = 8 + hlen + data_bytes;
    unsigned char *buf = calloc(n, 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    write_bytes(path, buf, n);
    free(buf);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}

/* Files in tmpdir whose name contains ".tmp." (leftover temporaries). */
static int count_temporaries(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp."))
            n++;
    closedir(d);
    return n;
}

/* dpt_st_open must fail with `want` and a message naming the file. */
static void expect_open_fails(const char *what, const char *path, dpt_status want)
{
    dpt_st *st = (dpt_st *)&st; /* must be reset to NULL on failure */
    dpt_clear_error();
    dpt_status s = dpt_st_open(path, &st);
    const char *msg = dpt_last_error();
    int ok = s == want && st == NULL && strstr(msg, path) != NULL;
    printf("  %-36s -> %s: %s  %s\n", what, dpt_status_str(s), msg, ok ? "ok" : "FAIL");
    CHECK_MSG(s == want, "%s: status %d, want %d", what, (int)s, (int)want);
    CHECK_MSG(st == NULL, "%s: handle not NULL", what);
    CHECK_MSG(strstr(msg, path) != NULL, "%s: message lacks the path", what);
    if (s == DPT_OK)
        dpt_st_close(st);
}

static void bad_header(const char *what, const char *header, size_t data_bytes)
{
    char path[600];
    path_in_tmp(path, sizeof path, "bad.safetensors");
    write_st_raw(path, header, data_bytes);
    expect_open_fails(what, path, DPT_ERR_FORMAT);
}

/* ---- round trip ---------------------------------------------------------- */

static const float f32[6] = {1.5f, -0.0f, 3.4028235e38f, 1e-45f, -2.25f, 0.1f};
static const double f64[5] = {1.0 / 3.0, -1e300, 4.9e-324, 0.0, 123456789.125};
static const int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
static const uint8_t u8[3] = {0, 127, 255};
static const float one = 7.0f;

static dpt_status write_sample(const char *path)
{
    dpt_st_writer *w = NULL;
    dpt_status s = dpt_st_writer_new(&w);
    if (s)
        return s;
    const int64_t s23[2] = {2, 3}, s5[1] = {5}, s4[1] = {4}, s3[1] = {3}, s0[2] = {0, 4};
    s = dpt_st_writer_add(w, "conv1/Weights", "F32", 2, s23, f32, sizeof f32);
    if (!s)
        s = dpt_st_writer_add(w, "b/f64", "F64", 1, s5, f64, sizeof f64);
    if (!s)
        s = dpt_st_writer_add(w, "a/i64", "I64", 1, s4, i64, sizeof i64);
    if (!s)
        s = dpt_st_writer_add(w, "bytes", "U8", 1, s3, u8, sizeof u8);
    if (!s)
        s = dpt_st_writer_add(w, "empty", "F32", 2, s0, NULL, 0);
    if (!s)
        s = dpt_st_writer_add(w, "scalar", "F32", 0, NULL, &one, sizeof one);
    if (!s)
        s = dpt_st_writer_meta(w, "epoch", "3");
    if (!s)
        s = dpt_st_writer_meta(w, "spec", "{\"layers\": [\"conv\"]}\n\ttab \\ \xc3\xa9");
    if (!s)
        s = dpt_st_writer_meta(w, "epoch", "4"); /* replaces */
    if (!s)
        s = dpt_st_writer_save(w, path);
    dpt_st_writer_free(w);
    return s;
}

static void check_tensor(const dpt_st *st, size_t i, const char *name, const char *dtype,
                         int ndim, const int64_t *shape, const void *data, size_t bytes)
{
    const dpt_st_tensor *t = dpt_st_at(st, i);
    CHECK_MSG(t && strcmp(t->name, name) == 0, "tensor %zu is not %s", i, name);
    CHECK(dpt_st_get(st, name) == t);
    if (!t)
        return;
    CHECK_MSG(strcmp(t->dtype, dtype) == 0, "%s: dtype %s", name, t->dtype);
    CHECK_MSG(t->ndim == ndim, "%s: ndim %d", name, t->ndim);
    for (int d = 0; d < ndim && d < t->ndim; d++)
        CHECK_MSG(t->shape[d] == shape[d], "%s: dim %d", name, d);
    CHECK_MSG(t->bytes == bytes, "%s: %zu bytes", name, t->bytes);
    if (t->bytes == bytes && bytes)
        CHECK_MSG(memcmp(t->data, data, bytes) == 0, "%s: data differs", name);
}

static void test_round_trip(void)
{
    printf("round trip\n");
    char path[600];
    path_in_tmp(path, sizeof path, "model.safetensors");
    dpt_status s = write_sample(path);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    CHECK(count_temporaries() == 0);

    size_t n = 0;
    unsigned char *raw = slurp(path, &n);
    CHECK(raw && n >= 8);
    if (raw && n >= 8) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | raw[i];
        CHECK_MSG(hlen % 8 == 0, "header length %llu not a multiple of 8",
                  (unsigned long long)hlen);
        CHECK(n == 8 + hlen + sizeof f32 + sizeof f64 + sizeof i64 + sizeof u8 + sizeof one);
    }
    free(raw);

    dpt_st *st = NULL;
    s = dpt_st_open(path, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    CHECK(dpt_st_count(st) == 6);
    const int64_t s23[2] = {2, 3}, s5[1] = {5}, s4[1] = {4}, s3[1] = {3}, s0[2] = {0, 4};
    check_tensor(st, 0, "conv1/Weights", "F32", 2, s23, f32, sizeof f32);
    check_tensor(st, 1, "b/f64", "F64", 1, s5, f64, sizeof f64);
    check_tensor(st, 2, "a/i64", "I64", 1, s4, i64, sizeof i64);
    check_tensor(st, 3, "bytes", "U8", 1, s3, u8, sizeof u8);
    check_tensor(st, 4, "empty", "F32", 2, s0, NULL, 0);
    check_tensor(st, 5, "scalar", "F32", 0, NULL, &one, sizeof one);
    CHECK(dpt_st_at(st, 6) == NULL);
    CHECK(dpt_st_get(st, "missing") == NULL);
    CHECK(dpt_st_meta(st, "epoch") && strcmp(dpt_st_meta(st, "epoch"), "4") == 0);
    CHECK(dpt_st_meta(st, "spec") &&
          strcmp(dpt_st_meta(st, "spec"), "{\"layers\": [\"conv\"]}\n\ttab \\ \xc3\xa9") == 0);
    CHECK(dpt_st_meta(st, "nope") == NULL);

    float got[6];
    CHECK(dpt_st_read_f32(st, "conv1/Weights", got, 6) == DPT_OK);
    CHECK(memcmp(got, f32, sizeof got) == 0);
    CHECK(dpt_st_read_f32(st, "conv1/Weights", got, 5) == DPT_ERR_SHAPE);
    CHECK(strstr(dpt_last_error(), path) && strstr(dpt_last_error(), "conv1/Weights"));
    CHECK(dpt_st_read_f32(st, "b/f64", got, 5) == DPT_ERR_FORMAT);
    CHECK(dpt_st_read_f32(st, "missing", got, 1) == DPT_ERR_FORMAT);
    dpt_st_close(st);
    dpt_st_close(NULL);

    /* Saving again replaces the file. */
    dpt_st_writer *w = NULL;
    CHECK(dpt_st_writer_new(&w) == DPT_OK);
    const int64_t s1[1] = {1};
    CHECK(dpt_st_writer_add(w, "only", "F32", 1, s1, &one, sizeof one) == DPT_OK);
    CHECK(dpt_st_writer_save(w, path) == DPT_OK);
    dpt_st_writer_free(w);
    CHECK(dpt_st_open(path, &st) == DPT_OK);
    if (st) {
        CHECK(dpt_st_count(st) == 1 && dpt_st_get(st, "only"));
        CHECK(dpt_st_meta(st, "epoch") == NULL);
        dpt_st_close(st);
    }
    dpt_st_writer_free(NULL);
}

static void test_writer_args(void)
{
    printf("writer arguments\n");
    dpt_st_writer *w = NULL;
    CHECK(dpt_st_writer_new(&w) == DPT_OK);
    const int64_t s2[1] = {2}, neg[1] = {-1};
    const float v[2] = {1, 2};
    CHECK(dpt_st_writer_add(w, "a", "F32", 1, s2, v, sizeof v) == DPT_OK);
    CHECK(dpt_st_writer_add(w, "a", "F32", 1, s2, v, sizeof v) == DPT_ERR_ARG);
    CHECK(dpt_st_writer_add(w, "b", "F32", 1, s2, v, 4) == DPT_ERR_ARG);
    CHECK(dpt_st_writer_add(w, "c", "F33", 1, s2, v, sizeof v) == DPT_ERR_ARG);
    CHECK(dpt_st_writer_add(w, "d", "F32", 1, neg, v, sizeof v) == DPT_ERR_ARG);
    CHECK(dpt_st_writer_add(w, "__metadata__", "F32", 1, s2, v, sizeof v) == DPT_ERR_ARG);
    CHECK(dpt_st_writer_add(w, "e", "F32", 9, s2, v, sizeof v) == DPT_ERR_ARG);
    dpt_st_writer_free(w);
}

/* ---- a file written by Python -------------------------------------------- */

static void test_python_file(void)
{
    printf("file written by make_ops_fixtures.py\n");
    char path[1024];
    tu_fixture("st_python.safetensors", path, sizeof path);
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(path, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    CHECK(dpt_st_count(st) == 5);
    const float wts[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    const double dbl[4] = {1.0 / 3.0, -2.5, 1e-300, 12345.678};
    const int64_t cnt[3] = {-1, 0, ((int64_t)1 << 40) + 7};
    const float scalar = 42.0f;
    const int64_t s23[2] = {2, 3}, s4[1] = {4}, s3[1] = {3}, s03[2] = {0, 3};
    check_tensor(st, 0, "weights", "F32", 2, s23, wts, sizeof wts);
    check_tensor(st, 1, "a/double", "F64", 1, s4, dbl, sizeof dbl);
    check_tensor(st, 2, "counts", "I64", 1, s3, cnt, sizeof cnt);
    check_tensor(st, 3, "empty", "F32", 2, s03, NULL, 0);
    check_tensor(st, 4, "scalar", "F32", 0, NULL, &scalar, sizeof scalar);
    CHECK(dpt_st_meta(st, "format") && strcmp(dpt_st_meta(st, "format"), "pt") == 0);
    CHECK(dpt_st_meta(st, "note") != NULL);
    dpt_st_close(st);
}

/* ---- malformed files ----------------------------------------------------- */

static void test_bad_files(void)
{
    printf("malformed files\n");
    char path[600], good[600];
    path_in_tmp(good, sizeof good, "good.safetensors");
    CHECK(write_sample(good) == DPT_OK);
    size_t n = 0;
    unsigned char *raw = slurp(good, &n);
    CHECK(raw != NULL && n > 64);
    if (!raw)
        return;

    path_in_tmp(path, sizeof path, "truncated.safetensors");
    write_bytes(path, raw, n - 3); /* last tensor's range now past the end */
    expect_open_fails("truncated in the data", path, DPT_ERR_FORMAT);
    write_bytes(path, raw, 40); /* cut inside the header */
    expect_open_fails("truncated in the header", path, DPT_ERR_FORMAT);
    write_bytes(path, raw, 5);
    expect_open_fails("shorter than the length prefix", path, DPT_ERR_FORMAT);
    write_bytes(path, raw, 0);
    expect_open_fails("zero-byte file", path, DPT_ERR_FORMAT);

    unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    write_bytes(path, big, sizeof big);
    expect_open_fails("header length 2^64-1", path, DPT_ERR_FORMAT);
    unsigned char past[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_bytes(path, past, sizeof past);
    expect_open_fails("header length past the end", path, DPT_ERR_FORMAT);
    unsigned char nul[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, ' ', ' ', ' ', ' ', ' '};
    write_bytes(path, nul, sizeof nul);
    expect_open_fails("NUL inside the header", path, DPT_ERR_FORMAT);
    free(raw);

    bad_header("invalid JSON", "{\"a\": {\"dtype\": \"F32\",", 0);
    bad_header("trailing garbage", "{} x", 0);
    bad_header("array instead of object", "[1, 2]", 0);
    bad_header("string instead of object", "\"x\"", 0);
    bad_header("entry not an object", "{\"a\": 3}", 0);
    bad_header("missing dtype", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4);
    bad_header("non-string dtype", "{\"a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4);
    bad_header("unknown dtype", "{\"a\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4);
    bad_header("missing shape", "{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4);
    bad_header("shape not an array", "{\"a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4);
    bad_header("negative dimension", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4);
    bad_header("fractional dimension", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 6]}}", 6);
    bad_header("string dimension", "{\"a\": {\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", 4);
    bad_header("too many dimensions", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4);
    bad_header("shape overflows", "{\"a\": {\"dtype\": \"F64\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8);
    bad_header("shape/bytes mismatch", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8);
    bad_header("offsets out of range", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 8);
    bad_header("offsets reversed", "{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 0]}}", 8);
    bad_header("offsets not a pair", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 8);
    bad_header("huge offsets", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [1e300, 1e300]}}", 8);
    bad_header("overlapping ranges",
               "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
               " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12);
    bad_header("duplicate names",
               "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
               " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8);
    bad_header("metadata not an object", "{\"__metadata__\": [1]}", 0);
    bad_header("metadata value not a string", "{\"__metadata__\": {\"k\": 1}}", 0);
    bad_header("duplicate metadata key", "{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", 0);
    /* Nesting far past cJSON's limit: rejected, not a stack overflow. */
    enum { DEPTH = 100000 };
    char *deep = malloc(2 * DEPTH + 16);
    size_t k = 0;
    deep[k++] = '{', deep[k++] = '"', deep[k++] = 'a', deep[k++] = '"', deep[k++] = ':';
    for (int i = 0; i < DEPTH; i++)
        deep[k++] = '[';
    for (int i = 0; i < DEPTH; i++)
        deep[k++] = ']';
    deep[k++] = '}', deep[k] = '\0';
    bad_header("deep nesting", deep, 0);
    free(deep);

    /* Accepted edge cases: empty header object, empty tensor, padding. */
    path_in_tmp(path, sizeof path, "edge.safetensors");
    write_st_raw(path, "{\"z\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]},"
                       " \"y\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}   ", 2);
    dpt_st *st = NULL;
    CHECK_MSG(dpt_st_open(path, &st) == DPT_OK, "%s", dpt_last_error());
    if (st) {
        CHECK(dpt_st_count(st) == 2 && dpt_st_get(st, "z") && dpt_st_get(st, "y"));
        dpt_st_close(st);
    }
    write_st_raw(path, "{}", 0);
    CHECK_MSG(dpt_st_open(path, &st) == DPT_OK, "%s", dpt_last_error());
    if (st) {
        CHECK(dpt_st_count(st) == 0 && dpt_st_get(st, "a") == NULL);
        dpt_st_close(st);
    }

    path_in_tmp(path, sizeof path, "does-not-exist.safetensors");
    expect_open_fails("nonexistent file", path, DPT_ERR_IO);
    expect_open_fails("a directory", tmpdir, DPT_ERR_IO);
}

/* ---- atomic save --------------------------------------------------------- */

static void test_atomic(void)
{
    printf("atomic save\n");
    char path[600], nodir[700];
    path_in_tmp(path, sizeof path, "ckpt.safetensors");
    CHECK(write_sample(path) == DPT_OK);
    size_t n_old = 0;
    unsigned char *old = slurp(path, &n_old);

    /* A folder that does not exist: nothing can be created. */
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/ckpt.safetensors", tmpdir);
    dpt_st_writer *w = NULL;
    CHECK(dpt_st_writer_new(&w) == DPT_OK);
    const int64_t s1[1] = {1};
    CHECK(dpt_st_writer_add(w, "x", "F32", 1, s1, &one, sizeof one) == DPT_OK);
    dpt_status s = dpt_st_writer_save(w, nodir);
    printf("  missing folder -> %s: %s\n", dpt_status_str(s), dpt_last_error());
    CHECK(s == DPT_ERR_IO && strstr(dpt_last_error(), nodir));
    dpt_st_writer_free(w);

    /* Saving over the existing file fails half-way through writing (the
     * file-size limit stands in for a full disk): the old file must survive
     * intact and the temporary must be gone. */
    enum { BIG = 1 << 16 };
    float *big = calloc(BIG, sizeof *big);
    CHECK(dpt_st_writer_new(&w) == DPT_OK);
    const int64_t sbig[1] = {BIG};
    CHECK(dpt_st_writer_add(w, "big", "F32", 1, sbig, big, BIG * sizeof *big) == DPT_OK);
    struct rlimit saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    struct rlimit lim = saved;
    lim.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        s = dpt_st_writer_save(w, path);
        setrlimit(RLIMIT_FSIZE, &saved);
        printf("  write fails midway -> %s: %s\n", dpt_status_str(s), dpt_last_error());
        CHECK(s == DPT_ERR_IO && strstr(dpt_last_error(), path));
    } else {
        printf("  (cannot lower RLIMIT_FSIZE; mid-write failure not tested)\n");
    }
    signal(SIGXFSZ, old_handler);

    /* A read-only folder, where permissions apply (not to root). */
    char rodir[600], ropath[700];
    path_in_tmp(rodir, sizeof rodir, "ro");
    snprintf(ropath, sizeof ropath, "%s/ckpt.safetensors", rodir);
    CHECK(mkdir(rodir, 0755) == 0);
    CHECK(write_sample(ropath) == DPT_OK);
    if (geteuid() != 0 && chmod(rodir, 0555) == 0) {
        s = dpt_st_writer_save(w, ropath);
        printf("  read-only folder -> %s: %s\n", dpt_status_str(s), dpt_last_error());
        CHECK(s == DPT_ERR_IO && strstr(dpt_last_error(), ropath));
        chmod(rodir, 0755);
        dpt_st *st = NULL;
        CHECK(dpt_st_open(ropath, &st) == DPT_OK && dpt_st_count(st) == 6);
        dpt_st_close(st);
    }
    unlink(ropath);
    rmdir(rodir);
    dpt_st_writer_free(w);
    free(big);

    size_t n_now = 0;
    unsigned char *now = slurp(path, &n_now);
    CHECK_MSG(now && n_now == n_old && memcmp(now, old, n_old) == 0, "old file changed");
    CHECK_MSG(count_temporaries() == 0, "a temporary file was left behind");
    free(old);
    free(now);
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    char p[1024];
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(tmpdir);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dpt_test_st_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_writer_args();
    test_python_file();
    test_bad_files();
    test_atomic();
    remove_tmpdir();
    printf("%s\n", tu_exit() ? "FAILED" : "passed");
    return tu_exit();
}
