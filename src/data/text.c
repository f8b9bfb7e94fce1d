/* Text corpora for character language models: a UTF-8 file mapped to
 * vocabulary indices, an optional held-out tail, and B parallel streams cut
 * into chunks of T + 1 characters.
 *
 * The file is hostile (DESIGN.md invariant 6): its size is bounded before
 * it is read, it must be strict UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF, no NUL), and characters are named escaped in
 * messages. */
#include "data/data_internal.h"
#include "core/file.h"
#include "core/text.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CP 0x110000u

struct dpt_text {
    size_t n;         /* characters */
    int32_t *idx;     /* [n] vocabulary indices */
    int n_vocab;
    uint32_t *vocab;  /* [n_vocab] sorted code points */
};

/* Decode one UTF-8 character at s[0..n) (n >= 1): its length (1 to 4) and
 * code point, or 0 when the bytes there are not valid UTF-8. */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < (size_t)len)
        return 0;
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[k] & 0x3f);
    }
    if (v < min || v >= MAX_CP || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* A character for a message: escaped (\xNN for what a terminal would act
 * on) with its U+ code. */
static void show_char(char *buf, size_t cap, const unsigned char *s, int len, uint32_t cp)
{
    char esc[32];
    dpt_text_clean(esc, sizeof esc, (const char *)s, (size_t)len, 0);
    snprintf(buf, cap, "'%s' (U+%04X)", esc, (unsigned)cp);
}

static size_t line_of(const unsigned char *s, size_t off)
{
    size_t line = 1;
    for (size_t i = 0; i < off; i++)
        line += s[i] == '\n';
    return line;
}

/* Check s[0..n) is strict UTF-8 without NUL; count its characters. */
static dpt_status check_utf8(const char *what, const unsigned char *s, size_t n, size_t *n_chars)
{
    size_t i = 0, c = 0;
    while (i < n) {
        uint32_t cp = 0;
        if (s[i] == 0)
            return dpt_fail(DPT_ERR_FORMAT, "%s: binary file (a NUL byte at byte offset %zu)",
                            what, i);
        int len = utf8_decode(s + i, n - i, &cp);
        if (!len) {
            /* The offset where the bad sequence starts: a Latin-1 'é' is
             * named as itself, not as the byte after it. */
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: not UTF-8 text (byte 0x%02X at byte offset %zu; binary?)", what,
                            (unsigned)s[i], i);
        }
        i += (size_t)len;
        c++;
    }
    *n_chars = c;
    return DPT_OK;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int dpt_text_index_of(const dpt_text *t, uint32_t cp)
{
    const uint32_t *p = bsearch(&cp, t->vocab, (size_t)t->n_vocab, sizeof cp, cmp_u32);
    return p ? (int)(p - t->vocab) : -1;
}

void dpt_text_free(dpt_text *t)
{
    if (!t)
        return;
    free(t->idx);
    free(t->vocab);
    free(t);
}

static dpt_text *text_new(size_t n, const uint32_t *vocab, int n_vocab, dpt_status *st)
{
    dpt_text *t = calloc(1, sizeof *t);
    if (t) {
        t->n = n;
        t->n_vocab = n_vocab;
        t->idx = malloc((n ? n : 1) * sizeof *t->idx);
        t->vocab = malloc((size_t)(n_vocab ? n_vocab : 1) * sizeof *t->vocab);
        if (t->idx && t->vocab) {
            memcpy(t->vocab, vocab, (size_t)n_vocab * sizeof *vocab);
            return t;
        }
    }
    dpt_text_free(t);
    *st = dpt_fail(DPT_ERR_NOMEM, "text: out of memory for %zu characters", n);
    return NULL;
}

/* Map the characters of s (valid UTF-8, checked) from character `first` on
 * into t->idx, failing on one outside the vocabulary. lut: code point ->
 * index + 1 (0: absent), or NULL to search t's vocabulary. */
static dpt_status map_chars(const char *what, const unsigned char *s, size_t n, size_t start_byte,
                            dpt_text *t, const int32_t *lut)
{
    size_t i = start_byte, c = 0;
    while (i < n && c < t->n) {
        uint32_t cp = 0;
        int len = utf8_decode(s + i, n - i, &cp);
        int j = lut ? lut[cp] - 1 : dpt_text_index_of(t, cp);
        if (j < 0) {
            char ch[64];
            show_char(ch, sizeof ch, s + i, len, cp);
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: character %s at byte offset %zu (line %zu) is not in the "
                            "vocabulary",
                            what, ch, i, line_of(s, i));
        }
        t->idx[c++] = j;
        i += (size_t)len;
    }
    return DPT_OK;
}

dpt_status dpt_text_open(const char *path, const dpt_text_options *opt, dpt_text **train,
                         dpt_text **heldout)
{
    dpt_text_options o = DPT_TEXT_OPTIONS_INIT;
    if (!path || !train)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_open: NULL argument");
    *train = NULL;
    if (heldout)
        *heldout = NULL;
    if (opt) {
        if (opt->version != DPT_TEXT_OPTIONS_VERSION)
            return dpt_fail(DPT_ERR_ARG, "dpt_text_open: options version %d, expected %d",
                            opt->version, DPT_TEXT_OPTIONS_VERSION);
        o = *opt;
    }
    if (!(o.heldout >= 0 && o.heldout <= 0.5))
        return dpt_fail(DPT_ERR_ARG, "dpt_text_open: heldout fraction %g is not in [0, 0.5]",
                        o.heldout);
    if (o.heldout > 0 && !heldout)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_open: a held-out fraction needs a heldout output");

    int fd;
    long long size;
    dpt_status st = dpt_file_open_regular(path, &fd, &size);
    if (st)
        return st;
    if (size > DPT_TEXT_MAX_BYTES) {
        close(fd);
        return dpt_fail(DPT_ERR_FORMAT, "%s: file of %lld bytes is larger than the %lld allowed",
                        path, size, (long long)DPT_TEXT_MAX_BYTES);
    }
    unsigned char *buf = malloc((size_t)size + 1);
    int32_t *lut = NULL;
    uint32_t *vocab = NULL;
    dpt_text *tr = NULL, *ho = NULL;
    size_t n = 0;
    if (!buf) {
        close(fd);
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory reading %lld bytes", path, size);
    }
    while (n < (size_t)size) {
        ssize_t r = read(fd, buf + n, (size_t)size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = dpt_fail(DPT_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break; /* shrank: use what is there */
        n += (size_t)r;
    }
    close(fd);
    if (st)
        goto done;
    size_t start = 0; /* a byte-order mark is not text */
    if (n >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf)
        start = 3;
    if (n == start) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: empty file (no text)", path);
        goto done;
    }
    size_t n_chars = 0;
    if ((st = check_utf8(path, buf + start, n - start, &n_chars)))
        goto done;
    size_t n_held = o.heldout > 0 ? (size_t)llround(o.heldout * (double)n_chars) : 0;
    size_t n_train = n_chars - n_held;
    if (o.heldout > 0 && (n_held == 0 || n_train == 0)) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: %zu characters, too short to split off %g as held-out "
                      "text", path, n_chars, o.heldout);
        goto done;
    }
    /* Byte where the held-out text starts. */
    size_t split = start;
    for (size_t c = 0; c < n_train; c++) {
        uint32_t cp = 0;
        split += (size_t)utf8_decode(buf + split, n - split, &cp);
    }

    int n_vocab;
    if (o.vocab) {
        n_vocab = o.vocab->n_vocab;
        vocab = malloc((size_t)(n_vocab ? n_vocab : 1) * sizeof *vocab);
        if (!vocab) {
            st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        memcpy(vocab, o.vocab->vocab, (size_t)n_vocab * sizeof *vocab);
    } else {
        /* The distinct code points of the training text, in order. */
        lut = calloc(MAX_CP, sizeof *lut);
        if (!lut) {
            st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        for (size_t i = start; i < split;) {
            uint32_t cp = 0;
            i += (size_t)utf8_decode(buf + i, n - i, &cp);
            lut[cp] = 1;
        }
        n_vocab = 0;
        for (uint32_t cp = 0; cp < MAX_CP; cp++)
            n_vocab += lut[cp] != 0;
        vocab = malloc((size_t)n_vocab * sizeof *vocab);
        if (!vocab) {
            st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        n_vocab = 0;
        for (uint32_t cp = 0; cp < MAX_CP; cp++)
            if (lut[cp]) {
                vocab[n_vocab] = cp;
                lut[cp] = ++n_vocab; /* index + 1 */
            }
    }
    if (!(tr = text_new(n_train, vocab, n_vocab, &st)))
        goto done;
    if ((st = map_chars(path, buf, n, start, tr, lut)))
        goto done;
    if (n_held) {
        if (!(ho = text_new(n_held, vocab, n_vocab, &st)))
            goto done;
        if ((st = map_chars(path, buf, n, split, ho, lut)))
            goto done;
    }
done:
    free(buf);
    free(lut);
    free(vocab);
    if (st) {
        dpt_text_free(tr);
        dpt_text_free(ho);
        return st;
    }
    *train = tr;
    if (heldout)
        *heldout = ho;
    return DPT_OK;
}

size_t dpt_text_n_chars(const dpt_text *t)
{
    return t->n;
}

const int32_t *dpt_text_indices(const dpt_text *t)
{
    return t->idx;
}

int dpt_text_n_vocab(const dpt_text *t)
{
    return t->n_vocab;
}

const uint32_t *dpt_text_vocab(const dpt_text *t)
{
    return t->vocab;
}

dpt_status dpt_text_encode(const dpt_text *t, const char *what, const char *s, size_t n,
                           int32_t *out, size_t *n_out)
{
    if (!t || !s || !out || !n_out)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_encode: NULL argument");
    if (!what)
        what = "text";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, c = 0;
    while (i < n) {
        uint32_t cp = 0;
        int len = u[i] ? utf8_decode(u + i, n - i, &cp) : 0;
        if (!len) {
            return dpt_fail(DPT_ERR_FORMAT, "%s: not UTF-8 text (byte 0x%02X at byte offset %zu)",
                            what, (unsigned)u[i], i);
        }
        int j = dpt_text_index_of(t, cp);
        if (j < 0) {
            char ch[64];
            show_char(ch, sizeof ch, u + i, len, cp);
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: character %s at byte offset %zu is not in the vocabulary", what,
                            ch, i);
        }
        out[c++] = j;
        i += (size_t)len;
    }
    *n_out = c;
    return DPT_OK;
}

size_t dpt_text_stream_length(const dpt_text *t, int n_streams)
{
    return n_streams > 0 ? t->n / (size_t)n_streams : 0;
}

size_t dpt_text_n_chunks(const dpt_text *t, int n_streams, int seq_len)
{
    size_t l = dpt_text_stream_length(t, n_streams);
    return seq_len > 0 && l >= 2 ? (l - 1) / (size_t)seq_len : 0;
}

dpt_status dpt_text_chunk(const dpt_text *t, int n_streams, int seq_len, int b, size_t k,
                          int32_t *out)
{
    if (!t || !out || n_streams < 1 || seq_len < 1 || b < 0 || b >= n_streams)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_chunk: stream %d of %d, length %d: bad argument",
                        b, n_streams, seq_len);
    size_t nk = dpt_text_n_chunks(t, n_streams, seq_len);
    if (k >= nk)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_chunk: chunk %zu of %zu out of range", k, nk);
    size_t first = (size_t)b * dpt_text_stream_length(t, n_streams) + k * (size_t)seq_len;
    memcpy(out, t->idx + first, ((size_t)seq_len + 1) * sizeof *out);
    return DPT_OK;
}

dpt_status dpt_text_stream_share(int n_streams, int n_workers, int w, int *first, int *count)
{
    if (n_streams < 1 || n_workers < 1 || w < 0 || w >= n_workers || !first || !count)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_stream_share: worker %d of %d, %d streams: bad "
                        "argument", w, n_workers, n_streams);
    int q = n_streams / n_workers, r = n_streams % n_workers;
    *count = q + (w < r);
    *first = w * q + (w < r ? w : r);
    return DPT_OK;
}

dpt_status dpt_text_batch(const dpt_text *t, int n_streams, int seq_len, int first, int count,
                          size_t k, int32_t *x, int32_t *y)
{
    if (!t || !x || !y || first < 0 || count < 0 || n_streams < 1 || count > n_streams - first)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_batch: streams %d..%d of %d: bad argument", first,
                        first + count - 1, n_streams);
    if (seq_len < 1)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_batch: sequence length %d: bad argument", seq_len);
    size_t nk = dpt_text_n_chunks(t, n_streams, seq_len), l = dpt_text_stream_length(t, n_streams);
    if (k >= nk)
        return dpt_fail(DPT_ERR_ARG, "dpt_text_batch: chunk %zu of %zu out of range", k, nk);
    size_t T = (size_t)seq_len;
    for (int j = 0; j < count; j++) {
        const int32_t *src = t->idx + (size_t)(first + j) * l + k * T;
        memcpy(x + (size_t)j * T, src, T * sizeof *x);
        memcpy(y + (size_t)j * T, src + 1, T * sizeof *y);
    }
    return DPT_OK;
}

dpt_status dpt_text_from_vocab(const char *what, const uint32_t *vocab, int n_vocab,
                               dpt_text **out)
{
    if (!out || (!vocab && n_vocab))
        return dpt_fail(DPT_ERR_ARG, "dpt_text_from_vocab: NULL argument");
    *out = NULL;
    if (!what)
        what = "vocabulary";
    if (n_vocab < 1 || n_vocab > DPT_TEXT_MAX_VOCAB)
        return dpt_fail(DPT_ERR_FORMAT, "%s: a vocabulary of %d characters (want 1 to %d)", what,
                        n_vocab, DPT_TEXT_MAX_VOCAB);
    /* Sorted and distinct: dpt_text_index_of searches it by bisection. NUL
     * cannot be in a text dpt_text_open reads. */
    for (int j = 0; j < n_vocab; j++) {
        uint32_t cp = vocab[j];
        if (cp == 0 || cp >= MAX_CP || (cp >= 0xd800 && cp <= 0xdfff))
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: vocabulary entry %d is %lu, not a Unicode character from 1 to "
                            "0x10FFFF (surrogates excluded)",
                            what, j, (unsigned long)cp);
        if (j && cp <= vocab[j - 1])
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: vocabulary entry %d (U+%04lX) does not follow entry %d (U+%04lX) "
                            "in increasing order",
                            what, j, (unsigned long)cp, j - 1, (unsigned long)vocab[j - 1]);
    }
    dpt_status st = DPT_OK;
    dpt_text *t = text_new(0, vocab, n_vocab, &st);
    if (!t)
        return st;
    *out = t;
    return DPT_OK;
}
