/* Tests of the sequence data readers: sequence folders of .csv files
 * (dpt_seqstore) and UTF-8 text corpora with parallel streams (dpt_text).
 * Writes its fixtures into a temporary folder. Exit 0 pass, 1 fail. */
#include "dptrain/data.h"
#include "testfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int n_fail, n_check;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        n_check++;                                                                        \
        if (!(cond)) {                                                                    \
            n_fail++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

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

/* A call that must fail with status `want` and a message containing both
 * needles (the second may be NULL). */
#define FAILS2(call, want, needle, needle2)                                               \
    do {                                                                                  \
        n_check++;                                                                        \
        dpt_clear_error();                                                                \
        dpt_status st_ = (call);                                                          \
        const char *n2_ = (needle2);                                                      \
        if (st_ != (want) || !strstr(dpt_last_error(), (needle)) ||                       \
            (n2_ && !strstr(dpt_last_error(), n2_))) {                                    \
            n_fail++;                                                                     \
            fprintf(stderr, "%s:%d: %s: got status %d message \"%s\"; want %d with \"%s\" \"%s\"\n", \
                    __FILE__, __LINE__, #call, (int)st_, dpt_last_error(), (int)(want),   \
                    (needle), n2_ ? n2_ : "");                                            \
        }                                                                                 \
    } while (0)

static char tmp[256];

static void put(const char *rel, const char *content, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(1);
    }
    fwrite(content, 1, n, f);
    fclose(f);
}

static void puts_(const char *rel, const char *content)
{
    put(rel, content, strlen(content));
}

static void mkd(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    mkdir(p, 0755);
}

static void path(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s/%s", tmp, rel);
}

/* A fresh folder `name` with classes a and b, F = 2, lengths 3, 1 and 2. */
static void good_folder(const char *name)
{
    char r[256];
    snprintf(r, sizeof r, "%s/a", name);
    mkd(name);
    mkd(r);
    snprintf(r, sizeof r, "%s/b", name);
    mkd(r);
    snprintf(r, sizeof r, "%s/a/x1.csv", name);
    puts_(r, "1,2\n3.5, -4\n5e-1,6\n");
    snprintf(r, sizeof r, "%s/a/x2.CSV", name);
    puts_(r, "7,8\r\n");
    snprintf(r, sizeof r, "%s/a/readme.txt", name);
    puts_(r, "ignored");
    snprintf(r, sizeof r, "%s/b/y.csv", name);
    puts_(r, "9,10\n11,12");
}

static void test_seq_good(void)
{
    char root[512];
    dpt_seqstore *s = NULL;
    good_folder("ok");
    path(root, sizeof root, "ok");
    OK(dpt_seqstore_open(root, NULL, &s));
    if (!s)
        return;
    CHECK(dpt_seqstore_n_obs(s) == 3);
    CHECK(dpt_seqstore_n_features(s) == 2);
    CHECK(dpt_seqstore_n_classes(s) == 2);
    CHECK(strcmp(dpt_seqstore_class_name(s, 0), "a") == 0);
    CHECK(strcmp(dpt_seqstore_class_name(s, 1), "b") == 0);
    CHECK(dpt_seqstore_label(s, 0) == 0 && dpt_seqstore_label(s, 1) == 0 &&
          dpt_seqstore_label(s, 2) == 1);
    CHECK(strstr(dpt_seqstore_file(s, 1), "a/x2.CSV") != NULL);
    CHECK(dpt_seqstore_length(s, 0) == 3);
    CHECK(dpt_seqstore_length(s, 1) == 1);
    CHECK(dpt_seqstore_length(s, 2) == 2);
    CHECK(dpt_seqstore_max_length(s) == 3);
    float x[6];
    OK(dpt_seqstore_read(s, 0, x));
    CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3.5f && x[3] == -4 && x[4] == 0.5f && x[5] == 6);
    OK(dpt_seqstore_read(s, 1, x));
    CHECK(x[0] == 7 && x[1] == 8);
    OK(dpt_seqstore_read(s, 2, x));
    CHECK(x[0] == 9 && x[1] == 10 && x[2] == 11 && x[3] == 12);
    FAILS2(dpt_seqstore_read(s, 3, x), DPT_ERR_ARG, "out of range", NULL);
    dpt_seqstore_free(s);

    /* Truncation keeps the first max_length steps. */
    dpt_seq_options o = DPT_SEQ_OPTIONS_INIT;
    o.max_length = 2;
    s = NULL;
    OK(dpt_seqstore_open(root, &o, &s));
    if (!s)
        return;
    CHECK(dpt_seqstore_length(s, 0) == 2);
    CHECK(dpt_seqstore_length(s, 1) == 1);
    CHECK(dpt_seqstore_length(s, 2) == 2);
    CHECK(dpt_seqstore_max_length(s) == 2);
    float y[4] = {0};
    OK(dpt_seqstore_read(s, 0, y));
    CHECK(y[0] == 1 && y[1] == 2 && y[2] == 3.5f && y[3] == -4);
    dpt_seqstore_free(s);
    o.max_length = -1;
    FAILS2(dpt_seqstore_open(root, &o, &s), DPT_ERR_ARG, "max_length", NULL);
    dpt_seqstore_free(NULL);
}

/* A folder with one class holding the given files (name, content). */
static void bad_folder(const char *name, const char *file, const char *content, size_t n)
{
    char r[256];
    mkd(name);
    snprintf(r, sizeof r, "%s/c", name);
    mkd(r);
    snprintf(r, sizeof r, "%s/c/good.csv", name);
    puts_(r, "1,2,3\n4,5,6\n");
    snprintf(r, sizeof r, "%s/c/%s", name, file);
    put(r, content, n);
}

static void expect_bad(const char *name, const char *file, const char *content, dpt_status want,
                       const char *needle, const char *needle2)
{
    char root[512], fpath[600];
    dpt_seqstore *s = NULL;
    bad_folder(name, file, content, strlen(content));
    path(root, sizeof root, name);
    snprintf(fpath, sizeof fpath, "%s/c/%s", root, file);
    FAILS2(dpt_seqstore_open(root, NULL, &s), want, fpath, needle);
    if (needle2)
        FAILS2(dpt_seqstore_open(root, NULL, &s), want, needle2, NULL);
    CHECK(s == NULL);
}

static void test_seq_bad(void)
{
    expect_bad("widths", "w.csv", "1,2,3\n4,5\n", DPT_ERR_FORMAT, "line 2: 2 values, but line 1 has 3",
               NULL);
    expect_bad("nan", "n.csv", "1,2,3\n4,abc\x1b,6\n", DPT_ERR_FORMAT, "line 2: field 2",
               "\"abc\\x1b\" is not a finite number");
    expect_bad("nan2", "n.csv", "1,2,3\n4,nan,6\n", DPT_ERR_FORMAT, "line 2: field 2 \"nan\"", NULL);
    expect_bad("emptyfield", "e.csv", "1,,3\n", DPT_ERR_FORMAT, "line 1: field 2 is empty", NULL);
    expect_bad("empty", "z.csv", "", DPT_ERR_FORMAT, "empty file", NULL);
    expect_bad("blank", "z.csv", "1,2,3\n\n4,5,6\n", DPT_ERR_FORMAT, "line 2: empty line", NULL);
    /* Every file must have the first file's F: the message names both. */
    expect_bad("feat", "z.csv", "1,2\n", DPT_ERR_FORMAT, "2 features per time step", "c/good.csv");
    /* A line over the bound. */
    {
        size_t n = DPT_SEQ_MAX_LINE_BYTES + 10;
        char *big = malloc(n + 1);
        memset(big, '1', n);
        big[n] = 0;
        expect_bad("longline", "l.csv", big, DPT_ERR_FORMAT, "line 1:", "more than the");
        free(big);
    }
    /* More time steps than allowed (one byte per step plus its newline). */
    {
        size_t n = 2 * ((size_t)DPT_SEQ_MAX_STEPS + 1);
        char *big = malloc(n + 1);
        for (size_t i = 0; i < n; i += 2)
            big[i] = '1', big[i + 1] = '\n';
        big[n] = 0;
        bad_folder("steps", "s.csv", "", 0);
        put("steps/c/good.csv", "1\n", 2);
        put("steps/c/s.csv", big, n);
        free(big);
        char root[512];
        dpt_seqstore *s = NULL;
        path(root, sizeof root, "steps");
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_FORMAT, "steps/c/s.csv: more than",
               "lines (time steps)");
    }
    /* Sizes are refused before anything is allocated or read: sparse files
     * (no disk space) of one byte over the per-file bound, and of a total
     * over the bound of all files. */
    {
        char root[512], fp[600];
        dpt_seqstore *s = NULL;
        bad_folder("huge", "h.csv", "", 0);
        path(fp, sizeof fp, "huge/c/h.csv");
        CHECK(truncate(fp, DPT_SEQ_MAX_FILE_BYTES + 1) == 0);
        path(root, sizeof root, "huge");
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_FORMAT, "huge/c/h.csv: file of",
               "larger than");
        mkd("total");
        mkd("total/c");
        int k_max = (int)(DPT_SEQ_MAX_TOTAL_BYTES / DPT_SEQ_MAX_FILE_BYTES) + 1;
        for (int k = 0; k < k_max; k++) {
            char rel[64];
            snprintf(rel, sizeof rel, "total/c/%02d.csv", k);
            put(rel, "", 0);
            path(fp, sizeof fp, rel);
            CHECK(truncate(fp, DPT_SEQ_MAX_FILE_BYTES) == 0);
        }
        path(root, sizeof root, "total");
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_FORMAT, "total: the .csv files hold more",
               NULL);
    }
    /* A .csv that is not a regular file (a folder named x.csv). */
    {
        char root[512], fp[600];
        dpt_seqstore *s = NULL;
        bad_folder("dirfile", "ok.csv", "1,2,3\n", 6);
        mkd("dirfile/c/x.csv");
        path(root, sizeof root, "dirfile");
        snprintf(fp, sizeof fp, "%s/c/x.csv", root);
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_IO, fp, "not a regular file");
    }
    /* No class folders; a class without .csv files; a missing root. */
    {
        char root[512];
        dpt_seqstore *s = NULL;
        mkd("noclass");
        path(root, sizeof root, "noclass");
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_FORMAT, "no class sub-folders", NULL);
        mkd("nocsv");
        mkd("nocsv/k");
        puts_("nocsv/k/a.txt", "1\n");
        path(root, sizeof root, "nocsv");
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_FORMAT, "nocsv/k: class folder without",
               NULL);
        path(root, sizeof root, "missing");
        FAILS2(dpt_seqstore_open(root, NULL, &s), DPT_ERR_IO, "missing", NULL);
    }
}

/* ---- text ------------------------------------------------------------------ */

static void test_text_vocab(void)
{
    char p[512];
    /* "é" is two bytes (U+00E9), "€" three (U+20AC). */
    puts_("t1.txt", "ba\xc3\xa9" "a\n\xe2\x82\xac" "b");
    path(p, sizeof p, "t1.txt");
    dpt_text *t = NULL, *h = NULL;
    OK(dpt_text_open(p, NULL, &t, NULL));
    if (!t)
        return;
    CHECK(dpt_text_n_chars(t) == 7);
    CHECK(dpt_text_n_vocab(t) == 5);
    const uint32_t *v = dpt_text_vocab(t);
    CHECK(v[0] == '\n' && v[1] == 'a' && v[2] == 'b' && v[3] == 0xe9 && v[4] == 0x20ac);
    const int32_t *ix = dpt_text_indices(t);
    int32_t want[7] = {2, 1, 3, 1, 0, 4, 2};
    CHECK(memcmp(ix, want, sizeof want) == 0);
    CHECK(dpt_text_index_of(t, 0xe9) == 3);
    CHECK(dpt_text_index_of(t, 'z') == -1);
    int32_t enc[8];
    size_t ne = 0;
    OK(dpt_text_encode(t, "--prime", "\xc3\xa9" "ab", 4, enc, &ne));
    CHECK(ne == 3 && enc[0] == 3 && enc[1] == 1 && enc[2] == 2);
    FAILS2(dpt_text_encode(t, "--prime", "az", 2, enc, &ne), DPT_ERR_FORMAT, "--prime: character 'z' (U+007A)",
           "byte offset 1");
    FAILS2(dpt_text_encode(t, "--prime", "a\xff", 2, enc, &ne), DPT_ERR_FORMAT, "not UTF-8",
           "byte offset 1");

    /* Another file with t's vocabulary: a missing character is named,
     * escaped, with its position. */
    puts_("t2.txt", "ab\n\x1b");
    path(p, sizeof p, "t2.txt");
    dpt_text_options o = DPT_TEXT_OPTIONS_INIT;
    o.vocab = t;
    FAILS2(dpt_text_open(p, &o, &h, NULL), DPT_ERR_FORMAT, "'\\x1b' (U+001B) at byte offset 3",
           "(line 2)");
    puts_("t3.txt", "\xef\xbb\xbf" "ab\xe2\x82\xac");
    path(p, sizeof p, "t3.txt");
    OK(dpt_text_open(p, &o, &h, NULL));
    if (h) {
        CHECK(dpt_text_n_chars(h) == 3 && dpt_text_n_vocab(h) == 5);
        CHECK(dpt_text_indices(h)[2] == 4);
    }
    dpt_text_free(h);
    dpt_text_free(t);
    dpt_text_free(NULL);
}

static void test_text_bad(void)
{
    char p[512];
    dpt_text *t = NULL;
    puts_("empty.txt", "");
    path(p, sizeof p, "empty.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, p, "empty file");
    puts_("bom.txt", "\xef\xbb\xbf");
    path(p, sizeof p, "bom.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, p, "empty file");
    put("bin.txt", "ab\0cd", 5);
    path(p, sizeof p, "bin.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, "binary file",
           "NUL byte at byte offset 2");
    puts_("latin1.txt", "caf\xe9 ok");
    path(p, sizeof p, "latin1.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, "not UTF-8",
           "byte 0xE9 at byte offset 3");
    puts_("overlong.txt", "ab\xc0\xaf");
    path(p, sizeof p, "overlong.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, "not UTF-8", "byte offset 2");
    puts_("surrogate.txt", "\xed\xa0\x80");
    path(p, sizeof p, "surrogate.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, "not UTF-8", "byte offset 0");
    puts_("trunc.txt", "abc\xe2\x82");
    path(p, sizeof p, "trunc.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, "not UTF-8", "byte offset 3");
    put("big.txt", "", 0);
    path(p, sizeof p, "big.txt");
    CHECK(truncate(p, DPT_TEXT_MAX_BYTES + 1) == 0);
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_FORMAT, "big.txt: file of", "larger than");
    unlink(p);
    mkd("folder.txt");
    path(p, sizeof p, "folder.txt");
    FAILS2(dpt_text_open(p, NULL, &t, NULL), DPT_ERR_IO, "not a regular file", NULL);
    CHECK(t == NULL);
}

static void test_text_heldout(void)
{
    char p[512];
    dpt_text *t = NULL, *h = NULL;
    /* 20 characters: the last 2 (10%) are held out. */
    puts_("h.txt", "abcabcabcabcabcabcab");
    path(p, sizeof p, "h.txt");
    dpt_text_options o = DPT_TEXT_OPTIONS_INIT;
    o.heldout = 0.1;
    OK(dpt_text_open(p, &o, &t, &h));
    if (t && h) {
        CHECK(dpt_text_n_chars(t) == 18 && dpt_text_n_chars(h) == 2);
        CHECK(dpt_text_indices(h)[0] == 0 && dpt_text_indices(h)[1] == 1);
        CHECK(dpt_text_n_vocab(h) == 3);
    }
    dpt_text_free(t);
    dpt_text_free(h);
    t = h = NULL;
    /* A held-out character the training text lacks: named with its place. */
    puts_("h2.txt", "abababababababababa\xc3\xa9");
    path(p, sizeof p, "h2.txt");
    FAILS2(dpt_text_open(p, &o, &t, &h), DPT_ERR_FORMAT, "(U+00E9) at byte offset 19",
           "not in the vocabulary");
    CHECK(t == NULL && h == NULL);
    puts_("h3.txt", "abc");
    path(p, sizeof p, "h3.txt");
    FAILS2(dpt_text_open(p, &o, &t, &h), DPT_ERR_FORMAT, "too short", NULL);
    o.heldout = 0.9;
    FAILS2(dpt_text_open(p, &o, &t, &h), DPT_ERR_ARG, "heldout", NULL);
}

static void test_text_streams(void)
{
    char p[512];
    dpt_text *t = NULL;
    /* 26 letters, indices 0..25 in order. */
    puts_("s.txt", "abcdefghijklmnopqrstuvwxyz");
    path(p, sizeof p, "s.txt");
    OK(dpt_text_open(p, NULL, &t, NULL));
    if (!t)
        return;
    /* B = 3: streams of 8 (a..h, i..p, q..x; y z unused); T = 3: chunks of
     * 4 at offsets 0 and 3 (a 3rd would need position 9 > 7). */
    CHECK(dpt_text_stream_length(t, 3) == 8);
    CHECK(dpt_text_n_chunks(t, 3, 3) == 2);
    int32_t c[4];
    OK(dpt_text_chunk(t, 3, 3, 0, 0, c));
    CHECK(c[0] == 0 && c[1] == 1 && c[2] == 2 && c[3] == 3);
    OK(dpt_text_chunk(t, 3, 3, 0, 1, c));
    CHECK(c[0] == 3 && c[3] == 6);
    OK(dpt_text_chunk(t, 3, 3, 1, 1, c));
    CHECK(c[0] == 11 && c[1] == 12 && c[2] == 13 && c[3] == 14);
    OK(dpt_text_chunk(t, 3, 3, 2, 1, c));
    CHECK(c[0] == 19 && c[3] == 22);
    /* Chunks of one stream follow each other: the target of the last input
     * of chunk k is the first input of chunk k + 1. */
    int32_t d[4];
    OK(dpt_text_chunk(t, 3, 3, 2, 0, d));
    CHECK(d[3] == c[0]);
    FAILS2(dpt_text_chunk(t, 3, 3, 0, 2, c), DPT_ERR_ARG, "out of range", NULL);
    FAILS2(dpt_text_chunk(t, 3, 3, 3, 0, c), DPT_ERR_ARG, "bad argument", NULL);
    FAILS2(dpt_text_chunk(t, 0, 3, 0, 0, c), DPT_ERR_ARG, "bad argument", NULL);
    /* Worker shares of B = 3 streams over 2 workers: [0, 2) and [2, 3);
     * their batches together are the one-worker batch. */
    int f0, c0, f1, c1;
    OK(dpt_text_stream_share(3, 2, 0, &f0, &c0));
    OK(dpt_text_stream_share(3, 2, 1, &f1, &c1));
    CHECK(f0 == 0 && c0 == 2 && f1 == 2 && c1 == 1);
    FAILS2(dpt_text_stream_share(3, 2, 2, &f1, &c1), DPT_ERR_ARG, "worker 2 of 2", NULL);
    int32_t xa[9], ya[9], xw[9], yw[9];
    OK(dpt_text_batch(t, 3, 3, 0, 3, 1, xa, ya));
    OK(dpt_text_batch(t, 3, 3, f0, c0, 1, xw, yw));
    OK(dpt_text_batch(t, 3, 3, f1, c1, 1, xw + 3 * c0, yw + 3 * c0));
    CHECK(memcmp(xa, xw, sizeof xa) == 0 && memcmp(ya, yw, sizeof ya) == 0);
    /* Row 1 of chunk 1: inputs l m n, targets m n o. */
    CHECK(xa[3] == 11 && xa[5] == 13 && ya[3] == 12 && ya[5] == 14);
    FAILS2(dpt_text_batch(t, 3, 3, 2, 2, 0, xa, ya), DPT_ERR_ARG, "streams 2..3 of 3", NULL);
    FAILS2(dpt_text_batch(t, 3, 3, 0, 3, 2, xa, ya), DPT_ERR_ARG, "out of range", NULL);
    CHECK(dpt_text_n_chunks(t, 26, 1) == 0); /* streams of 1: no target */
    CHECK(dpt_text_n_chunks(t, 13, 1) == 1);
    CHECK(dpt_text_n_chunks(t, 1, 25) == 1);
    CHECK(dpt_text_n_chunks(t, 1, 26) == 0);
    dpt_text_free(t);
}

/* One .csv file outside a folder (predict), and a vocabulary from a model
 * (generate, eval): the checks a folder's files get, and a hostile
 * vocabulary refused naming the entry. */
static void test_seq_load_and_vocab(void)
{
    char p[512];
    size_t steps = 0;
    int f = 0;
    float *x = NULL;
    mkd("one");
    puts_("one/s.csv", "1,2\n3.5, -4\n5e-1,6\n");
    path(p, sizeof p, "one/s.csv");
    OK(dpt_seq_load(p, 0, &steps, &f, &x));
    CHECK(steps == 3 && f == 2 && x && x[0] == 1 && x[3] == -4 && x[5] == 6);
    free(x);
    x = NULL;
    OK(dpt_seq_load(p, 2, &steps, &f, &x));
    CHECK(steps == 2 && f == 2 && x && x[3] == -4);
    free(x);
    x = NULL;
    puts_("one/w.csv", "1,2\n3\n");
    path(p, sizeof p, "one/w.csv");
    FAILS2(dpt_seq_load(p, 0, &steps, &f, &x), DPT_ERR_FORMAT, "w.csv: line 2", "different widths");
    CHECK(x == NULL);
    puts_("one/n.csv", "1,zz\n");
    path(p, sizeof p, "one/n.csv");
    FAILS2(dpt_seq_load(p, 0, &steps, &f, &x), DPT_ERR_FORMAT, "n.csv: line 1: field 2", "\"zz\"");
    path(p, sizeof p, "one");
    FAILS2(dpt_seq_load(p, 0, &steps, &f, &x), DPT_ERR_IO, "one", NULL);

    dpt_text *v = NULL;
    const uint32_t good[] = {'\n', ' ', 'a', 'b', 0x2014};
    OK(dpt_text_from_vocab("m.safetensors", good, 5, &v));
    CHECK(v && dpt_text_n_vocab(v) == 5 && dpt_text_n_chars(v) == 0);
    if (v) {
        CHECK(dpt_text_index_of(v, 0x2014) == 4 && dpt_text_index_of(v, 'c') == -1);
        int32_t idx[16];
        size_t n = 0;
        OK(dpt_text_encode(v, "--prime", "ab \xe2\x80\x94", 6, idx, &n));
        CHECK(n == 4 && idx[0] == 2 && idx[3] == 4);
        FAILS2(dpt_text_encode(v, "--prime", "abc", 3, idx, &n), DPT_ERR_FORMAT, "--prime",
               "'c' (U+0063)");
    }
    dpt_text_free(v);
    const uint32_t unsorted[] = {'a', 'a'}, surrogate[] = {'a', 0xd800}, big[] = {0x110000},
                   nul[] = {0};
    FAILS2(dpt_text_from_vocab("m", unsorted, 2, &v), DPT_ERR_FORMAT, "m: vocabulary entry 1",
           "increasing");
    FAILS2(dpt_text_from_vocab("m", surrogate, 2, &v), DPT_ERR_FORMAT, "entry 1 is 55296", NULL);
    FAILS2(dpt_text_from_vocab("m", big, 1, &v), DPT_ERR_FORMAT, "entry 0 is 1114112", NULL);
    FAILS2(dpt_text_from_vocab("m", nul, 1, &v), DPT_ERR_FORMAT, "entry 0 is 0", NULL);
    FAILS2(dpt_text_from_vocab("m", good, 0, &v), DPT_ERR_FORMAT, "vocabulary of 0", NULL);
    CHECK(v == NULL);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/dpt_seqdata_%ld", (long)getpid());
    if (mkdir(tmp, 0700) != 0) {
        perror(tmp);
        return 1;
    }
    test_seq_good();
    test_seq_bad();
    test_text_vocab();
    test_text_bad();
    test_text_heldout();
    test_text_streams();
    test_seq_load_and_vocab();
    tu_remove_tree(tmp);
    printf("test_seqdata: %d checks, %d failed\n", n_check, n_fail);
    return n_fail ? 1 : 0;
}
