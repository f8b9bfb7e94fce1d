/* IDX datastore (the MNIST file format), plain or gzip-compressed, read
 * into memory when opened.
 *
 * Layout (big-endian): magic (0x00000803 images: uint8, 3 dimensions;
 * 0x00000801 labels: uint8, 1 dimension), then one uint32 per dimension,
 * then the data. The length must be exactly what the header implies. */
#include "data/data_internal.h"
#include "core/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u

typedef struct idx_impl {
    char *images_path;
    uint8_t *buf;       /* the whole (decompressed) images file */
    const uint8_t *pix; /* [n, rows, cols] inside buf */
    int rows, cols;
} idx_impl;

/* A whole file in memory, decompressed when it starts with the gzip magic. */
typedef struct file_bytes {
    uint8_t *data;
    size_t len;
    int gzipped;
    int more; /* gzip: inflating stopped at len bytes with more data to come */
} file_bytes;

/* Deflate cannot do better than 1032:1 (a 258-byte match in 2 bits); the
 * slack covers gzip headers and tiny files. */
#define GZIP_MAX_RATIO 1032u
#define GZIP_SLACK (1u << 16)

static dpt_status check_idx(const char *path, const file_bytes *fb, uint32_t magic, int ndims,
                            uint32_t *dims);

/* The length the IDX header implies, or 0 when the dimensions overflow
 * (check_idx then says so). hdr holds at least 4 + 4 * ndims bytes. */
static uint64_t implied_length(const uint8_t *hdr, int ndims);
static uint32_t be32(const uint8_t *p);

/* Inflate until `limit` bytes in all, never more than the caller can use;
 * with `probe`, one byte more tells whether the stream goes on (fb->more). */
static dpt_status inflate_some(const char *path, gzFile g, file_bytes *fb, size_t limit, int probe)
{
    size_t cap = fb->len, len = fb->len;
    uint8_t *data = fb->data;
    while (len < limit) {
        if (cap - len < (1u << 20) && cap < limit) {
            size_t want = cap < (1u << 20) ? (1u << 21) : cap * 2;
            if (want > limit)
                want = limit;
            uint8_t *d = realloc(data, want);
            if (!d) {
                fb->data = data;
                return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory (%zu bytes decompressed)", path, len);
            }
            data = d;
            cap = want;
        }
        size_t room = cap - len;
        unsigned chunk = (unsigned)(room > (1u << 30) ? (1u << 30) : room);
        int got = gzread(g, data + len, chunk);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(g, &zerr);
            fb->data = data;
            return dpt_fail(DPT_ERR_FORMAT, "%s: corrupt gzip data: %s", path, msg);
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    fb->data = data;
    fb->len = len;
    if (probe && len == limit) {
        /* One byte past what is wanted tells whether the stream goes on. */
        unsigned char probe;
        int got = gzread(g, &probe, 1);
        if (got > 0)
            fb->more = 1;
    }
    return DPT_OK;
}

/* Decompress the IDX file open on fd (at offset 0). Inflates the header
 * first and then at most the length it implies plus one byte, so a small
 * file that inflates to gigabytes costs no more than its header promises;
 * a header promising more than the compressed size can hold is refused
 * before inflating anything else. */
static dpt_status read_gzip(const char *path, int fd, long long csize, uint32_t magic, int ndims,
                            file_bytes *fb)
{
    gzFile g = gzdopen(fd, "rb"); /* owns fd from here */
    if (!g) {
        close(fd);
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory opening the gzip stream", path);
    }
    gzbuffer(g, 1u << 17);
    fb->gzipped = 1;
    size_t header = 4 + 4 * (size_t)ndims;
    dpt_status st = inflate_some(path, g, fb, header, 0);
    if (!st && fb->len == header) {
        uint64_t expect = implied_length(fb->data, ndims);
        file_bytes stub = *fb;
        uint32_t dims[3];
        /* Magic and dimensions, before inflating the rest: the stub claims
         * the implied length (or an impossible one when there is none). */
        stub.len = expect ? (size_t)expect : SIZE_MAX;
        st = check_idx(path, &stub, magic, ndims, dims);
        if (!st && expect > (uint64_t)csize * GZIP_MAX_RATIO + GZIP_SLACK) {
            st = dpt_fail(DPT_ERR_FORMAT,
                          "%s: truncated: the header says %llu bytes but %lld bytes of gzip data "
                          "cannot inflate to more than %llu",
                          path, (unsigned long long)expect, csize,
                          (unsigned long long)csize * GZIP_MAX_RATIO + GZIP_SLACK);
        } else if (!st) {
            st = inflate_some(path, g, fb, (size_t)expect, 1);
        }
    }
    int zerr = Z_OK;
    if (!st && !fb->more) {
        gzerror(g, &zerr);
        if (zerr == Z_BUF_ERROR)
            st = dpt_fail(DPT_ERR_FORMAT, "%s: truncated: the gzip stream ends early (after %zu decompressed bytes)",
                          path, fb->len);
        else if (zerr != Z_OK)
            st = dpt_fail(DPT_ERR_FORMAT, "%s: corrupt gzip data: %s", path, gzerror(g, &zerr));
    }
    int rc = gzclose_r(g);
    /* Closing a stream left unfinished on purpose (fb->more) says nothing
     * about the file. */
    if (!st && !fb->more && rc == Z_BUF_ERROR)
        st = dpt_fail(DPT_ERR_FORMAT, "%s: truncated: the gzip stream ends early", path);
    else if (!st && !fb->more && rc != Z_OK)
        st = dpt_fail(DPT_ERR_IO, "%s: error closing gzip file", path);
    if (st) {
        free(fb->data);
        *fb = (file_bytes){0};
    }
    return st;
}

/* read(2) until n bytes or the end of the file; the count read, -1 on error. */
static ssize_t read_full(int fd, void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* The IDX file at path, checked against `magic` and `ndims`: plain files
 * have their header checked against their size before the rest is read. */
static dpt_status read_file(const char *path, uint32_t magic, int ndims, file_bytes *fb)
{
    *fb = (file_bytes){0};
    int fd;
    long long size = 0;
    dpt_status st = dpt_file_open_regular(path, &fd, &size);
    if (st)
        return st;
    uint8_t hdr[16];
    size_t header = 4 + 4 * (size_t)ndims;
    ssize_t m = read_full(fd, hdr, header);
    if (m < 0) {
        st = dpt_fail(DPT_ERR_IO, "%s: read error: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (m >= 2 && hdr[0] == 0x1f && hdr[1] == 0x8b) {
        if (lseek(fd, 0, SEEK_SET) != 0) {
            st = dpt_fail(DPT_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
            close(fd);
            return st;
        }
        return read_gzip(path, fd, size, magic, ndims, fb);
    }
    /* The header against the file's size first: a wrong length is found
     * without reading (or allocating) the rest. */
    file_bytes stub = {hdr, size < 0 ? 0 : (size_t)size, 0, 0};
    if ((size_t)m < header)
        stub.len = (size_t)m;
    uint32_t dims[3];
    if ((st = check_idx(path, &stub, magic, ndims, dims))) {
        close(fd);
        return st;
    }
    size_t len = stub.len;
    uint8_t *data = malloc(len ? len : 1);
    if (!data) {
        close(fd);
        return dpt_fail(DPT_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, len);
    }
    memcpy(data, hdr, header);
    ssize_t got = read_full(fd, data + header, len - header);
    close(fd);
    if (got < 0 || (size_t)got != len - header) {
        free(data);
        return dpt_fail(DPT_ERR_IO, "%s: read %zu of %zu bytes", path,
                        got < 0 ? header : header + (size_t)got, len);
    }
    fb->data = data;
    fb->len = len;
    return DPT_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static uint64_t implied_length(const uint8_t *hdr, int ndims)
{
    uint64_t n = 1;
    for (int d = 0; d < ndims; d++) {
        uint32_t v = be32(hdr + 4 + 4 * (size_t)d);
        if (v == 0 || n > UINT64_MAX / v)
            return 0;
        n *= v;
    }
    return n > UINT64_MAX - 16 ? 0 : n + 4 + 4 * (uint64_t)ndims;
}

/* Check that fb is an IDX file with `magic` and the given number of
 * dimensions, whose length is exactly header + product of dims. */
static dpt_status check_idx(const char *path, const file_bytes *fb, uint32_t magic, int ndims,
                            uint32_t *dims)
{
    const char *what = ndims == 3 ? "images" : "labels";
    const char *len_name = fb->gzipped ? "decompressed length" : "length";
    size_t header = 4 + 4 * (size_t)ndims;
    if (fb->len < 4)
        return dpt_fail(DPT_ERR_FORMAT, "%s: truncated: %zu bytes, too short for an IDX header", path, fb->len);
    uint32_t got = be32(fb->data);
    if (got != magic)
        return dpt_fail(DPT_ERR_FORMAT,
                        "%s: not an IDX %s file: magic number 0x%08x, expected 0x%08x", path, what, got,
                        magic);
    if (fb->len < header)
        return dpt_fail(DPT_ERR_FORMAT, "%s: truncated: %s %zu bytes, the IDX header needs %zu", path,
                        len_name, fb->len, header);
    uint64_t expect = 1;
    int overflow = 0;
    for (int d = 0; d < ndims; d++) {
        dims[d] = be32(fb->data + 4 + 4 * (size_t)d);
        if (dims[d] == 0)
            return dpt_fail(DPT_ERR_FORMAT, "%s: dimension %d is zero", path, d);
        if (expect > UINT64_MAX / dims[d])
            overflow = 1;
        else
            expect *= dims[d];
    }
    if (overflow || expect > SIZE_MAX - header)
        return dpt_fail(DPT_ERR_FORMAT, "%s: dimensions too large", path);
    expect += header;
    if (expect > DPT_MAX_IDX_BYTES)
        return dpt_fail(DPT_ERR_FORMAT,
                        "%s: dimensions too large: the header says %llu bytes, more than the %llu "
                        "an IDX file may hold",
                        path, (unsigned long long)expect, (unsigned long long)DPT_MAX_IDX_BYTES);
    if (fb->more)
        return dpt_fail(DPT_ERR_FORMAT,
                        "%s: the decompressed data goes on past the %llu bytes the header's "
                        "dimensions imply",
                        path, (unsigned long long)expect);
    if (fb->len < expect) {
        if (ndims == 3)
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: truncated: the header says %u images of %ux%u (%llu bytes) but the %s is %zu bytes",
                            path, dims[0], dims[1], dims[2], (unsigned long long)expect, len_name, fb->len);
        return dpt_fail(DPT_ERR_FORMAT, "%s: truncated: the header says %u labels (%llu bytes) but the %s is %zu bytes",
                        path, dims[0], (unsigned long long)expect, len_name, fb->len);
    }
    if (fb->len > expect)
        return dpt_fail(DPT_ERR_FORMAT,
                        "%s: %zu bytes after the data: the %s (%zu) does not match the header's dimensions (%llu bytes)",
                        path, fb->len - (size_t)expect, len_name, fb->len, (unsigned long long)expect);
    if (ndims == 3 && (dims[1] > 65535 || dims[2] > 65535))
        return dpt_fail(DPT_ERR_FORMAT, "%s: images of %ux%u are too large", path, dims[1], dims[2]);
    return DPT_OK;
}

/* ---- source table --------------------------------------------------------- */

static const char *idx_file(const dpt_source *s, size_t obs)
{
    (void)obs;
    return ((const idx_impl *)s->impl)->images_path;
}

static dpt_status idx_load(const dpt_source *s, size_t obs, raw_image *img)
{
    const idx_impl *x = s->impl;
    size_t plane = (size_t)x->rows * (size_t)x->cols;
    *img = (raw_image){x->pix + obs * plane, NULL, x->rows, x->cols, 1};
    return DPT_OK;
}

static void idx_release(raw_image *img) { img->owned = NULL; }

static dpt_status idx_size(const dpt_source *s, size_t obs, int *h, int *w, int *c)
{
    (void)obs;
    const idx_impl *x = s->impl;
    *h = x->rows;
    *w = x->cols;
    *c = 1;
    return DPT_OK;
}

static void idx_destroy(void *impl)
{
    idx_impl *x = impl;
    free(x->images_path);
    free(x->buf);
    free(x);
}

static const source_ops idx_ops = {idx_file, idx_load, idx_release, idx_size, idx_destroy};

/* ---- open --------------------------------------------------------------------- */

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

dpt_status dpt_datastore_idx_labels_path(const char *images_path, char *buf, size_t buf_bytes)
{
    size_t len = strlen(images_path);
    const char *slash = strrchr(images_path, '/');
    const char *base = slash ? slash + 1 : images_path;
    const char *img = strstr(base, "images");
    if (!img)
        return dpt_fail(DPT_ERR_ARG, "%s: cannot guess the labels file (no \"images\" in the name); give it explicitly",
                        images_path);
    if (len + 4 >= buf_bytes) /* room for a ".gz" added below */
        return dpt_fail(DPT_ERR_ARG, "%s: path too long", images_path);
    memcpy(buf, images_path, len + 1);
    memcpy(buf + (img - images_path), "labels", 6);
    char *idx3 = strstr(buf + (base - images_path), "idx3");
    if (idx3)
        idx3[3] = '1';
    if (file_exists(buf))
        return DPT_OK;
    /* Try the other compression: add or remove ".gz". */
    size_t n = strlen(buf);
    if (n > 3 && strcmp(buf + n - 3, ".gz") == 0) {
        buf[n - 3] = '\0';
        if (file_exists(buf))
            return DPT_OK;
        buf[n - 3] = '.';
    } else {
        memcpy(buf + n, ".gz", 4);
        if (file_exists(buf))
            return DPT_OK;
        buf[n] = '\0';
    }
    return DPT_OK; /* the plain guess; opening it reports a missing file */
}

dpt_status dpt_datastore_open_idx(const char *images_path, const char *labels_path, dpt_datastore **out)
{
    return dpt_datastore_open_idx_classes(images_path, labels_path, 0, out);
}

dpt_status dpt_datastore_open_idx_classes(const char *images_path, const char *labels_path, int n_classes,
                                          dpt_datastore **out)
{
    if (!(images_path && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_open_idx: NULL argument");
    *out = NULL;
    if (n_classes < 0)
        return dpt_fail(DPT_ERR_ARG, "%s: %d classes", images_path, n_classes);
    char guess[4096];
    dpt_status st;
    if (!labels_path) {
        if ((st = dpt_datastore_idx_labels_path(images_path, guess, sizeof guess)))
            return st;
        labels_path = guess;
    }
    file_bytes im = {0}, lb = {0};
    idx_impl *impl = NULL;
    dpt_source *src = NULL;
    uint32_t idims[3] = {0}, ldims[1] = {0};
    if ((st = read_file(images_path, IDX_IMAGES_MAGIC, 3, &im)) ||
        (st = check_idx(images_path, &im, IDX_IMAGES_MAGIC, 3, idims)))
        goto fail;
    if ((st = read_file(labels_path, IDX_LABELS_MAGIC, 1, &lb)) ||
        (st = check_idx(labels_path, &lb, IDX_LABELS_MAGIC, 1, ldims)))
        goto fail;
    if (ldims[0] != idims[0]) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: %u labels for the %u images of %s", labels_path, ldims[0], idims[0],
                      images_path);
        goto fail;
    }
    size_t n = idims[0];
    const uint8_t *lab = lb.data + 8;
    int max_label = 0;
    for (size_t i = 0; i < n; i++) {
        if (n_classes && lab[i] >= n_classes) {
            st = dpt_fail(DPT_ERR_FORMAT, "%s: label %u of observation %zu is outside the %d classes", labels_path,
                          lab[i], i, n_classes);
            goto fail;
        }
        if (lab[i] > max_label)
            max_label = lab[i];
    }
    int K = n_classes ? n_classes : max_label + 1;

    src = calloc(1, sizeof *src);
    impl = calloc(1, sizeof *impl);
    if (!src || !impl) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", images_path);
        goto fail;
    }
    src->kind = DPT_DATASTORE_IDX;
    src->ops = &idx_ops;
    src->n_obs = n;
    src->labels = malloc(n * sizeof *src->labels);
    src->class_names = calloc((size_t)K, sizeof *src->class_names);
    if (!src->labels || !src->class_names) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", images_path);
        goto fail;
    }
    src->n_classes = K;
    for (int k = 0; k < K; k++) {
        char name[16];
        snprintf(name, sizeof name, "%d", k);
        if (!(src->class_names[k] = data_strdup(name, &st)))
            goto fail;
    }
    for (size_t i = 0; i < n; i++)
        src->labels[i] = lab[i];
    if (!(impl->images_path = data_strdup(images_path, &st)))
        goto fail;
    impl->buf = im.data;
    im.data = NULL;
    impl->pix = impl->buf + 16;
    impl->rows = (int)idims[1];
    impl->cols = (int)idims[2];
    src->preloaded = 1; /* read into memory above */
    src->decoded_exact = 1;
    src->decoded_bytes = (uint64_t)n * (uint64_t)impl->rows * (uint64_t)impl->cols;
    src->impl = impl;
    impl = NULL;
    if ((st = source_wrap(src, out)))
        goto fail;
    free(lb.data);
    return DPT_OK;

fail:
    if (impl)
        idx_destroy(impl);
    source_destroy(src);
    free(im.data);
    free(lb.data);
    return st;
}
