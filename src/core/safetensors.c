/* safetensors reader and atomic writer.
 *
 * File layout: u64 little-endian header length L, L bytes of JSON, then the
 * data section. The JSON object maps each tensor name to
 *   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 * with offsets relative to the data section, plus an optional
 * "__metadata__" object of string values.
 *
 * The reader treats every file as hostile: every size and offset is checked
 * before use, arithmetic is overflow-checked, and the checks that compare
 * tensors with each other (duplicate names, overlapping ranges) sort instead
 * of comparing all pairs so that a huge header cannot make them quadratic. */
#include "core/safetensors.h"
#include "core/file.h"
#include "core/tmpfile.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The data section is copied to and from memory as is, so the host must
 * share the file's byte order. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c assumes a little-endian host");
#endif

/* JSON numbers are doubles; integers above 2^53 are not exact, and no real
 * file has dimensions or offsets that large. */
#define MAX_JSON_INT 9007199254740992.0

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},     {"I32", 4},
    {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2},     {"U8", 1},
    {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

/* The canonical spelling of a known dtype (static storage), or NULL. */
static const char *dtype_lookup(const char *name, size_t *size)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            *size = dtypes[i].size;
            return dtypes[i].name;
        }
    }
    return NULL;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ========================================================================
 * reading
 * ===================================================================== */

struct dpt_st {
    unsigned char *buf; /* the whole file */
    size_t n_tensors;
    dpt_st_tensor *tensors; /* header order; names owned (malloc) */
    size_t *by_name;        /* indices into tensors, sorted by name */
    size_t n_meta;
    struct meta { char *key, *value; } *meta; /* sorted by key */
    char *path; /* for error messages of dpt_st_read_f32 */
};

void dpt_st_close(dpt_st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_tensors; i++)
        free((char *)st->tensors[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->tensors);
    free(st->by_name);
    free(st->meta);
    free(st->buf);
    free(st->path);
    free(st);
}

/* A JSON number that is a whole number in [0, 2^53]. */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return 0;
    double v = j->valuedouble;
    if (!(v >= 0.0 && v <= MAX_JSON_INT) || v != (double)(uint64_t)v)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

/* qsort has no context argument; these compare through a pointer to the
 * tensor table set just before each sort. Sorting happens only inside
 * dpt_st_open on a table no other thread sees, but a file-scope pointer
 * would still race between threads opening files at once, hence
 * _Thread_local. */
static _Thread_local const dpt_st_tensor *sort_table;

static int cmp_name(const void *a, const void *b)
{
    const dpt_st_tensor *ta = &sort_table[*(const size_t *)a];
    const dpt_st_tensor *tb = &sort_table[*(const size_t *)b];
    return strcmp(ta->name, tb->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const dpt_st_tensor *ta = &sort_table[*(const size_t *)a];
    const dpt_st_tensor *tb = &sort_table[*(const size_t *)b];
    const unsigned char *pa = ta->data, *pb = tb->data;
    return pa < pb ? -1 : pa > pb;
}

/* Validate one header entry and fill *t (name not set). data_begin is the
 * start of the data section, data_bytes its length. Returns NULL on success
 * or a description of the problem. */
static const char *parse_entry(const cJSON *e, const unsigned char *data_begin,
                               uint64_t data_bytes, dpt_st_tensor *t, char *why, size_t why_n)
{
    if (!cJSON_IsObject(e))
        return "entry is not an object";

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return "missing or non-string \"dtype\"";
    size_t esize = 0;
    t->dtype = dtype_lookup(dt->valuestring, &esize);
    if (!t->dtype) {
        snprintf(why, why_n, "unknown dtype \"%.32s\"", dt->valuestring);
        return why;
    }

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(sh))
        return "missing or non-array \"shape\"";
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > DPT_ST_MAX_DIMS) {
        snprintf(why, why_n, "%d dimensions (at most %d supported)", ndim, DPT_ST_MAX_DIMS);
        return why;
    }
    t->ndim = ndim;
    /* Element count times element size, refusing overflow: the result must
     * fit the data section, which fits in memory. */
    uint64_t bytes = esize;
    int zero = 0, overflow = 0, k = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, sh)
    {
        uint64_t v;
        if (!json_uint(dim, &v))
            return "shape is not an array of non-negative integers";
        t->shape[k++] = (int64_t)v;
        if (v == 0)
            zero = 1;
        else if (!overflow && bytes > UINT64_MAX / v)
            overflow = 1;
        else if (!overflow)
            bytes *= v;
    }
    if (zero)
        bytes = 0;
    else if (overflow)
        return "shape too large";

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_uint(cJSON_GetArrayItem(off, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(off, 1), &end))
        return "\"data_offsets\" is not a pair of non-negative integers";
    if (begin > end) {
        snprintf(why, why_n, "data_offsets [%" PRIu64 ", %" PRIu64 "] run backwards", begin, end);
        return why;
    }
    if (end > data_bytes) {
        snprintf(why, why_n,
                 "data_offsets [%" PRIu64 ", %" PRIu64 "] outside the data section of %" PRIu64
                 " bytes",
                 begin, end, data_bytes);
        return why;
    }
    if (end - begin != bytes) {
        snprintf(why, why_n,
                 "data_offsets cover %" PRIu64 " bytes but shape and dtype need %" PRIu64,
                 end - begin, bytes);
        return why;
    }
    t->data = data_begin + begin;
    t->bytes = (size_t)bytes;
    return NULL;
}

/* Read the whole of `path` into a fresh buffer. */
static dpt_status read_file(const char *path, unsigned char **buf_out, size_t *size_out)
{
    *buf_out = NULL;
    FILE *f = NULL;
    long long fsize = 0;
    dpt_status st = dpt_file_fopen_regular(path, &f, &fsize);
    if (st != DPT_OK)
        return st;
    unsigned char *buf = NULL;
    if (fsize < 0 || (uint64_t)fsize > SIZE_MAX - 1) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: file too large", path);
        goto done;
    }
    size_t size = (size_t)fsize;
    buf = malloc(size ? size : 1);
    if (!buf) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, size);
        goto done;
    }
    if (fread(buf, 1, size, f) != size) {
        st = dpt_fail(DPT_ERR_IO, "%s: read failed (file changed or I/O error)", path);
        goto done;
    }
    *buf_out = buf;
    *size_out = size;
    buf = NULL;
done:
    free(buf);
    fclose(f);
    return st;
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const struct meta *)a)->key, ((const struct meta *)b)->key);
}

static dpt_status parse_metadata(dpt_st *st, const cJSON *meta, const char *path)
{
    if (!cJSON_IsObject(meta))
        return dpt_fail(DPT_ERR_FORMAT, "%s: \"__metadata__\" is not an object", path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    if (n == 0)
        return DPT_OK;
    st->meta = calloc(n, sizeof *st->meta);
    if (!st->meta)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
    const cJSON *m;
    cJSON_ArrayForEach(m, meta)
    {
        if (!cJSON_IsString(m) || !m->valuestring || !m->string)
            return dpt_fail(DPT_ERR_FORMAT, "%s: metadata value of \"%.64s\" is not a string",
                            path, m->string ? m->string : "");
        struct meta *e = &st->meta[st->n_meta++]; /* counted first: close frees partial pairs */
        e->key = dup_str(m->string);
        e->value = dup_str(m->valuestring);
        if (!e->key || !e->value)
            return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
    }
    /* Sorted: duplicates become neighbours, and dpt_st_meta can bisect. */
    qsort(st->meta, st->n_meta, sizeof *st->meta, cmp_meta);
    for (size_t i = 1; i < st->n_meta; i++)
        if (strcmp(st->meta[i - 1].key, st->meta[i].key) == 0)
            return dpt_fail(DPT_ERR_FORMAT, "%s: duplicate metadata key \"%.64s\"", path,
                            st->meta[i].key);
    return DPT_OK;
}

dpt_status dpt_st_open(const char *path, dpt_st **out)
{
    *out = NULL;
    dpt_status status = DPT_OK;
    cJSON *root = NULL;
    char *header = NULL;
    dpt_st *st = calloc(1, sizeof *st);
    if (!st)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
    st->path = dup_str(path);
    if (!st->path) {
        status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }

    size_t size = 0;
    status = read_file(path, &st->buf, &size);
    if (status)
        goto fail;
    if (size < 8) {
        status = dpt_fail(DPT_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors header",
                          path, size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | st->buf[i];
    if (hlen > size - 8) {
        status = dpt_fail(DPT_ERR_FORMAT,
                          "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                          path, hlen, size);
        goto fail;
    }
    if (hlen < 2) {
        status = dpt_fail(DPT_ERR_FORMAT, "%s: header of %" PRIu64 " bytes is too short", path,
                          hlen);
        goto fail;
    }
    /* A NUL inside the header would silently end the JSON text early. */
    if (memchr(st->buf + 8, 0, (size_t)hlen)) {
        status = dpt_fail(DPT_ERR_FORMAT, "%s: header contains a NUL byte", path);
        goto fail;
    }
    header = malloc((size_t)hlen + 1);
    if (!header) {
        status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    memcpy(header, st->buf + 8, (size_t)hlen);
    header[hlen] = '\0';
    /* require_null_terminated: trailing garbage after the JSON value is an
     * error; trailing whitespace (the writer's padding) is allowed. */
    root = cJSON_ParseWithOpts(header, NULL, 1);
    if (!root) {
        status = dpt_fail(DPT_ERR_FORMAT, "%s: header is not valid JSON", path);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        status = dpt_fail(DPT_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }

    const unsigned char *data = st->buf + 8 + hlen;
    const uint64_t data_bytes = size - 8 - hlen;
    size_t n_entries = (size_t)cJSON_GetArraySize(root);
    st->tensors = calloc(n_entries ? n_entries : 1, sizeof *st->tensors);
    st->by_name = calloc(n_entries ? n_entries : 1, sizeof *st->by_name);
    if (!st->tensors || !st->by_name) {
        status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }

    int seen_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (!e->string) {
            status = dpt_fail(DPT_ERR_FORMAT, "%s: header entry without a name", path);
            goto fail;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta) {
                status = dpt_fail(DPT_ERR_FORMAT, "%s: duplicate \"__metadata__\"", path);
                goto fail;
            }
            seen_meta = 1;
            status = parse_metadata(st, e, path);
            if (status)
                goto fail;
            continue;
        }
        dpt_st_tensor *t = &st->tensors[st->n_tensors];
        char why[160];
        const char *problem = parse_entry(e, data, data_bytes, t, why, sizeof why);
        if (problem) {
            status = dpt_fail(DPT_ERR_FORMAT, "%s: tensor \"%.64s\": %s", path, e->string, problem);
            goto fail;
        }
        t->name = dup_str(e->string);
        if (!t->name) {
            status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        st->by_name[st->n_tensors] = st->n_tensors;
        st->n_tensors++;
    }

    /* Overlap: sort by start; each range must end before the next begins.
     * Empty tensors occupy nothing and cannot overlap. */
    sort_table = st->tensors;
    qsort(st->by_name, st->n_tensors, sizeof *st->by_name, cmp_begin);
    const unsigned char *prev_end = NULL;
    const char *prev_name = NULL;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const dpt_st_tensor *t = &st->tensors[st->by_name[i]];
        if (t->bytes == 0)
            continue;
        const unsigned char *b = t->data;
        if (prev_end && b < prev_end) {
            status = dpt_fail(DPT_ERR_FORMAT, "%s: tensors \"%.64s\" and \"%.64s\" overlap", path,
                              prev_name, t->name);
            goto fail;
        }
        prev_end = b + t->bytes;
        prev_name = t->name;
    }

    /* Names: sort, then equal neighbours are duplicates. The sorted index
     * stays for dpt_st_get's binary search. */
    qsort(st->by_name, st->n_tensors, sizeof *st->by_name, cmp_name);
    sort_table = NULL;
    for (size_t i = 1; i < st->n_tensors; i++) {
        const char *a = st->tensors[st->by_name[i - 1]].name;
        const char *b = st->tensors[st->by_name[i]].name;
        if (strcmp(a, b) == 0) {
            status = dpt_fail(DPT_ERR_FORMAT, "%s: duplicate tensor name \"%.64s\"", path, a);
            goto fail;
        }
    }

    cJSON_Delete(root);
    free(header);
    *out = st;
    return DPT_OK;

fail:
    sort_table = NULL;
    cJSON_Delete(root);
    free(header);
    dpt_st_close(st);
    return status;
}

size_t dpt_st_count(const dpt_st *st) { return st->n_tensors; }

const dpt_st_tensor *dpt_st_at(const dpt_st *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const dpt_st_tensor *dpt_st_get(const dpt_st *st, const char *name)
{
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dpt_st_tensor *t = &st->tensors[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *dpt_st_meta(const dpt_st *st, const char *key)
{
    size_t lo = 0, hi = st->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta[mid].key);
        if (c == 0)
            return st->meta[mid].value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t dpt_st_meta_count(const dpt_st *st) { return st->n_meta; }

void dpt_st_meta_at(const dpt_st *st, size_t i, const char **key, const char **value)
{
    *key = st->meta[i].key;
    *value = st->meta[i].value;
}

dpt_status dpt_st_read_f32(const dpt_st *st, const char *name, float *dst, size_t n)
{
    const dpt_st_tensor *t = dpt_st_get(st, name);
    if (!t)
        return dpt_fail(DPT_ERR_FORMAT, "%s: no tensor \"%s\"", st->path, name);
    if (strcmp(t->dtype, "F32") != 0)
        return dpt_fail(DPT_ERR_FORMAT, "%s: tensor \"%s\" is %s, expected F32", st->path, name,
                        t->dtype);
    if (t->bytes != n * sizeof(float))
        return dpt_fail(DPT_ERR_SHAPE, "%s: tensor \"%s\" has %zu elements, expected %zu",
                        st->path, name, t->bytes / sizeof(float), n);
    if (n)
        memcpy(dst, t->data, t->bytes);
    return DPT_OK;
}

/* ========================================================================
 * writing
 * ===================================================================== */

typedef struct entry {
    char *name;
    const char *dtype; /* static storage (dtypes table) */
    int ndim;
    int64_t shape[DPT_ST_MAX_DIMS];
    const void *data; /* borrowed */
    size_t bytes;
} entry;

struct dpt_st_writer {
    entry *entries;
    size_t n, cap;
    char **meta_keys, **meta_values;
    size_t n_meta, cap_meta;
};

dpt_status dpt_st_writer_new(dpt_st_writer **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return dpt_fail(DPT_ERR_NOMEM, "safetensors writer: out of memory");
    return DPT_OK;
}

void dpt_st_writer_free(dpt_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->entries[i].name);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->entries);
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

dpt_status dpt_st_writer_add(dpt_st_writer *w, const char *name, const char *dtype, int ndim,
                             const int64_t *shape, const void *data, size_t bytes)
{
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return dpt_fail(DPT_ERR_ARG, "safetensors writer: invalid tensor name \"%s\"",
                        name ? name : "(null)");
    size_t esize = 0;
    const char *canon = dtype ? dtype_lookup(dtype, &esize) : NULL;
    if (!canon)
        return dpt_fail(DPT_ERR_ARG, "safetensors writer: %s: unknown dtype \"%s\"", name,
                        dtype ? dtype : "(null)");
    if (ndim < 0 || ndim > DPT_ST_MAX_DIMS)
        return dpt_fail(DPT_ERR_ARG, "safetensors writer: %s: %d dimensions", name, ndim);
    uint64_t need = esize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return dpt_fail(DPT_ERR_ARG, "safetensors writer: %s: negative dimension", name);
        if (shape[i] && need > UINT64_MAX / (uint64_t)shape[i])
            return dpt_fail(DPT_ERR_ARG, "safetensors writer: %s: shape too large", name);
        need *= (uint64_t)shape[i];
    }
    if (need != bytes)
        return dpt_fail(DPT_ERR_ARG,
                        "safetensors writer: %s: %zu bytes given, shape and dtype need %" PRIu64,
                        name, bytes, need);
    if (bytes && !data)
        return dpt_fail(DPT_ERR_ARG, "safetensors writer: %s: no data", name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return dpt_fail(DPT_ERR_ARG, "safetensors writer: duplicate tensor name \"%s\"", name);

    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        entry *e = realloc(w->entries, cap * sizeof *e);
        if (!e)
            return dpt_fail(DPT_ERR_NOMEM, "safetensors writer: out of memory");
        w->entries = e;
        w->cap = cap;
    }
    entry *e = &w->entries[w->n];
    e->name = dup_str(name);
    if (!e->name)
        return dpt_fail(DPT_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = canon;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->data = data;
    e->bytes = bytes;
    w->n++;
    return DPT_OK;
}

dpt_status dpt_st_writer_meta(dpt_st_writer *w, const char *key, const char *value)
{
    if (!key || !value)
        return dpt_fail(DPT_ERR_ARG, "safetensors writer: NULL metadata key or value");
    char *v = dup_str(value);
    if (!v)
        return dpt_fail(DPT_ERR_NOMEM, "safetensors writer: out of memory");
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) { /* a repeated key replaces */
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return DPT_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
        char **k = realloc(w->meta_keys, cap * sizeof *k);
        if (k)
            w->meta_keys = k;
        char **vv = k ? realloc(w->meta_values, cap * sizeof *vv) : NULL;
        if (vv)
            w->meta_values = vv;
        if (!k || !vv) {
            free(v);
            return dpt_fail(DPT_ERR_NOMEM, "safetensors writer: out of memory");
        }
        w->cap_meta = cap;
    }
    char *k = dup_str(key);
    if (!k) {
        free(v);
        return dpt_fail(DPT_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_values[w->n_meta] = v;
    w->n_meta++;
    return DPT_OK;
}

/* Integers go in as raw JSON text: cJSON prints numbers from doubles and
 * would switch to exponent notation for large offsets. */
static int add_raw_int(cJSON *arr, uint64_t v)
{
    char num[32];
    snprintf(num, sizeof num, "%" PRIu64, v);
    cJSON *j = cJSON_CreateRaw(num);
    return j && cJSON_AddItemToArray(arr, j);
}

/* The header JSON, or NULL when out of memory (caller reports). */
static char *build_header(const dpt_st_writer *w)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    if (!root)
        return NULL;
    if (w->n_meta) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta)
            goto done;
        for (size_t i = 0; i < w->n_meta; i++)
            if (!cJSON_AddStringToObject(meta, w->meta_keys[i], w->meta_values[i]))
                goto done;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n; i++) {
        const entry *e = &w->entries[i];
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        if (!t || !cJSON_AddStringToObject(t, "dtype", e->dtype))
            goto done;
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        if (!shape)
            goto done;
        for (int d = 0; d < e->ndim; d++)
            if (!add_raw_int(shape, (uint64_t)e->shape[d]))
                goto done;
        cJSON *off = cJSON_AddArrayToObject(t, "data_offsets");
        if (!off || !add_raw_int(off, offset) || !add_raw_int(off, offset + e->bytes))
            goto done;
        offset += e->bytes;
    }
    text = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return text;
}

/* Directory part of path ("." when there is none). Caller frees. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return dup_str(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

dpt_status dpt_st_writer_save(dpt_st_writer *w, const char *path)
{
    dpt_status status = DPT_OK;
    char *header = NULL, *tmp = NULL, *dir = NULL;
    FILE *f = NULL;
    int tmp_exists = 0;

    header = build_header(w);
    if (!header) {
        status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory building the header", path);
        goto done;
    }
    /* Pad with spaces so the data section starts 8-byte aligned in the file
     * (the 8-byte length prefix keeps that alignment). */
    size_t hlen = strlen(header);
    size_t pad = (8 - hlen % 8) % 8;

    size_t tmp_n = strlen(path) + 48;
    tmp = malloc(tmp_n);
    dir = dir_of(path);
    if (!tmp || !dir) {
        status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* Created exclusively, never through a planted symlink. */
    int fd = dpt_tmpfile_create(path, tmp, tmp_n);
    if (fd < 0) {
        status = dpt_fail(DPT_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    tmp_exists = 1;
    f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        status = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }

    unsigned char len_le[8];
    uint64_t total = hlen + pad;
    for (int i = 0; i < 8; i++)
        len_le[i] = (unsigned char)(total >> (8 * i));
    static const char spaces[] = "       "; /* pad is at most 7 */
    int ok = fwrite(len_le, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen &&
             fwrite(spaces, 1, pad, f) == pad;
    for (size_t i = 0; ok && i < w->n; i++)
        if (w->entries[i].bytes)
            ok = fwrite(w->entries[i].data, 1, w->entries[i].bytes, f) == w->entries[i].bytes;
    if (!ok || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        status = dpt_fail(DPT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0) {
        status = dpt_fail(DPT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        status = dpt_fail(DPT_ERR_IO, "%s: cannot rename temporary file: %s", path,
                          strerror(errno));
        goto done;
    }
    tmp_exists = 0;

    /* Make the rename itself durable. Some file systems cannot fsync a
     * directory (EINVAL); the data is safe there anyway. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) {
        status = dpt_fail(DPT_ERR_IO, "%s: cannot open folder %s: %s", path, dir, strerror(errno));
        goto done;
    }
    if (fsync(dfd) != 0 && errno != EINVAL) {
        status = dpt_fail(DPT_ERR_IO, "%s: cannot sync folder %s: %s", path, dir, strerror(errno));
        close(dfd);
        goto done;
    }
    close(dfd);

done:
    if (f)
        fclose(f);
    if (tmp_exists)
        unlink(tmp);
    free(header);
    free(tmp);
    free(dir);
    return status;
}
