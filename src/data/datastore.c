/* Datastore operations common to every kind: an index array over a shared,
 * reference-counted source. Nothing here knows how pixels are stored. */
#include "data/data_internal.h"

#include <math.h>
#include <stdio.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct dpt_datastore {
    dpt_source *src;
    size_t n;      /* observations */
    uint32_t *idx; /* [n] observation numbers in src */
};

/* Streams for dpt_rng_seed, so that shuffles and splits never share one. */
#define SHUFFLE_STREAM 0u

char *data_strdup(const char *s, dpt_status *st)
{
    size_t len = strlen(s) + 1;
    char *p = malloc(len);
    if (!p) {
        *st = dpt_fail(DPT_ERR_NOMEM, "out of memory copying a name");
        return NULL;
    }
    memcpy(p, s, len);
    return p;
}

dpt_status strlist_push(strlist *l, char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(s);
            return dpt_fail(DPT_ERR_NOMEM, "out of memory listing files");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return DPT_OK;
}

void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (strlist){0};
}

char *data_join_path(const char *dir, const char *name, dpt_status *st)
{
    size_t a = strlen(dir), b = strlen(name);
    while (a > 1 && dir[a - 1] == '/')
        a--;
    char *p = malloc(a + b + 2);
    if (!p) {
        *st = dpt_fail(DPT_ERR_NOMEM, "out of memory joining a path");
        return NULL;
    }
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

dpt_status data_list_dir(const char *dir, strlist *names)
{
    DIR *d = opendir(dir);
    if (!d)
        return dpt_fail(DPT_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    dpt_status st = DPT_OK;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *s = data_strdup(e->d_name, &st);
        if (!s || (st = strlist_push(names, s)))
            break;
        errno = 0;
    }
    if (!st && errno)
        st = dpt_fail(DPT_ERR_IO, "%s: cannot read folder: %s", dir, strerror(errno));
    closedir(d);
    if (!st && names->n > 1) /* an empty folder has no array (qsort takes no NULL) */
        qsort(names->v, names->n, sizeof *names->v, cmp_str);
    return st;
}

void source_destroy(dpt_source *src)
{
    if (!src)
        return;
    if (src->ops && src->impl)
        src->ops->destroy(src->impl);
    if (src->class_names)
        for (int k = 0; k < src->n_classes; k++)
            free(src->class_names[k]);
    free(src->class_names);
    for (size_t k = 0; k < src->n_corrupt; k++)
        free(src->corrupt[k]);
    free(src->corrupt);
    free(src->labels);
    free(src);
}

/* A datastore over src with room for n indices; takes one reference. */
static dpt_status ds_alloc(dpt_source *src, size_t n, dpt_datastore **out)
{
    dpt_datastore *ds = calloc(1, sizeof *ds);
    uint32_t *idx = malloc(n ? n * sizeof *idx : 1);
    if (!ds || !idx) {
        free(ds);
        free(idx);
        return dpt_fail(DPT_ERR_NOMEM, "datastore: cannot allocate %zu indices", n);
    }
    ds->src = src;
    ds->n = n;
    ds->idx = idx;
    atomic_fetch_add(&src->refs, 1);
    *out = ds;
    return DPT_OK;
}

dpt_status source_wrap(dpt_source *src, dpt_datastore **out)
{
    *out = NULL;
    if (src->n_obs > UINT32_MAX)
        return dpt_fail(DPT_ERR_ARG, "%s: %zu observations (at most %u supported)",
                        src->n_obs ? src->ops->file(src, 0) : "datastore", src->n_obs, UINT32_MAX);
    atomic_init(&src->refs, 0);
    dpt_status st = ds_alloc(src, src->n_obs, out);
    if (st)
        return st;
    for (size_t i = 0; i < src->n_obs; i++)
        (*out)->idx[i] = (uint32_t)i;
    return DPT_OK;
}

void dpt_datastore_free(dpt_datastore *ds)
{
    if (!ds)
        return;
    /* The last reference releases the source; acq_rel orders every other
     * datastore's use of it before the destruction. */
    if (atomic_fetch_sub_explicit(&ds->src->refs, 1, memory_order_acq_rel) == 1)
        source_destroy(ds->src);
    free(ds->idx);
    free(ds);
}

static const source_ops named_ops;

/* ---- queries --------------------------------------------------------------- */

dpt_datastore_kind dpt_datastore_kind_of(const dpt_datastore *ds) { return ds->src->kind; }

size_t dpt_datastore_n_obs(const dpt_datastore *ds) { return ds->n; }

int dpt_datastore_n_classes(const dpt_datastore *ds) { return ds->src->n_classes; }

const char *dpt_datastore_class_name(const dpt_datastore *ds, int k)
{
    if (k < 0 || k >= ds->src->n_classes)
        return NULL;
    return ds->src->class_names[k];
}

int dpt_datastore_label(const dpt_datastore *ds, size_t i)
{
    if (i >= ds->n)
        return -1;
    return ds->src->labels[ds->idx[i]];
}

void dpt_datastore_count_labels(const dpt_datastore *ds, size_t *counts)
{
    memset(counts, 0, (size_t)ds->src->n_classes * sizeof *counts);
    for (size_t i = 0; i < ds->n; i++)
        counts[ds->src->labels[ds->idx[i]]]++;
}

const char *dpt_datastore_file(const dpt_datastore *ds, size_t i)
{
    if (i >= ds->n)
        return NULL;
    return ds->src->ops->file(ds->src, ds->idx[i]);
}

size_t dpt_datastore_n_skipped(const dpt_datastore *ds) { return ds->src->n_skipped; }

size_t dpt_datastore_n_corrupt(const dpt_datastore *ds) { return ds->src->n_corrupt; }

const char *dpt_datastore_corrupt_file(const dpt_datastore *ds, size_t k)
{
    return k < ds->src->n_corrupt ? ds->src->corrupt[k] : NULL;
}

const char *dpt_datastore_corrupt_reason(const dpt_datastore *ds, size_t k)
{
    /* folder.c stores "path\0problem" in one allocation */
    const char *p = dpt_datastore_corrupt_file(ds, k);
    return p ? p + strlen(p) + 1 : NULL;
}

int dpt_datastore_is_preloaded(const dpt_datastore *ds)
{
    const dpt_source *s = ds->src;
    while (s->ops == &named_ops) /* a relabelled source reads the one under it */
        s = ((const dpt_datastore *)s->impl)->src;
    return s->preloaded;
}

uint64_t dpt_datastore_decoded_bytes(const dpt_datastore *ds, int *exact)
{
    const dpt_source *s = ds->src;
    while (s->ops == &named_ops)
        s = ((const dpt_datastore *)s->impl)->src;
    if (exact)
        *exact = s->decoded_exact;
    return s->decoded_bytes;
}

dpt_status dpt_datastore_image_size(const dpt_datastore *ds, size_t i, int *h, int *w, int *c)
{
    if (i >= ds->n)
        return dpt_fail(DPT_ERR_ARG, "datastore: observation %zu of %zu", i, ds->n);
    int hh = 0, ww = 0, cc = 0;
    dpt_status st = ds->src->ops->size(ds->src, ds->idx[i], &hh, &ww, &cc);
    if (st)
        return st;
    if (h)
        *h = hh;
    if (w)
        *w = ww;
    if (c)
        *c = cc;
    return DPT_OK;
}

/* ---- new datastores from old ------------------------------------------------ */

dpt_status dpt_datastore_subset(const dpt_datastore *ds, const size_t *idx, size_t n,
                                dpt_datastore **out)
{
    if (!(ds && out && (idx || n == 0)))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_subset: NULL argument");
    *out = NULL;
    for (size_t j = 0; j < n; j++)
        if (idx[j] >= ds->n)
            return dpt_fail(DPT_ERR_ARG, "datastore subset: index %zu at position %zu is past %zu observations",
                            idx[j], j, ds->n);
    dpt_status st = ds_alloc(ds->src, n, out);
    if (st)
        return st;
    for (size_t j = 0; j < n; j++)
        (*out)->idx[j] = ds->idx[idx[j]];
    return DPT_OK;
}

dpt_status dpt_datastore_split_each_label(const dpt_datastore *ds, double fraction, uint64_t seed,
                                          dpt_datastore **first, dpt_datastore **second)
{
    if (!(ds && first && second))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_split_each_label: NULL argument");
    *first = *second = NULL;
    if (!(fraction >= 0.0 && fraction <= 1.0))
        return dpt_fail(DPT_ERR_ARG, "split_each_label: fraction %g is outside [0, 1]", fraction);
    dpt_status st = DPT_OK;
    int K = ds->src->n_classes;
    uint32_t *pos = malloc(ds->n ? ds->n * sizeof *pos : 1);      /* one label's positions */
    unsigned char *in_first = calloc(ds->n ? ds->n : 1, 1);       /* [n] 1: goes to first */
    dpt_datastore *a = NULL, *b = NULL;
    if (!pos || !in_first) {
        st = dpt_fail(DPT_ERR_NOMEM, "split_each_label: out of memory");
        goto done;
    }
    size_t n_first = 0;
    for (int k = 0; k < K; k++) {
        size_t m = 0;
        for (size_t i = 0; i < ds->n; i++)
            if (ds->src->labels[ds->idx[i]] == k)
                pos[m++] = (uint32_t)i;
        if (!m)
            continue;
        dpt_rng r;
        dpt_rng_seed(&r, seed, (uint64_t)k);
        dpt_rng_shuffle(&r, pos, m);
        size_t take = (size_t)llround(fraction * (double)m);
        if (take > m)
            take = m;
        for (size_t j = 0; j < take; j++)
            in_first[pos[j]] = 1;
        n_first += take;
    }
    if ((st = ds_alloc(ds->src, n_first, &a)) || (st = ds_alloc(ds->src, ds->n - n_first, &b)))
        goto done;
    size_t ia = 0, ib = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if (in_first[i])
            a->idx[ia++] = ds->idx[i];
        else
            b->idx[ib++] = ds->idx[i];
    }
    *first = a;
    *second = b;
    a = b = NULL;
done:
    dpt_datastore_free(a);
    dpt_datastore_free(b);
    free(pos);
    free(in_first);
    return st;
}

dpt_status dpt_datastore_shuffle(const dpt_datastore *ds, uint64_t seed, dpt_datastore **out)
{
    if (!(ds && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_shuffle: NULL argument");
    *out = NULL;
    dpt_status st = ds_alloc(ds->src, ds->n, out);
    if (st)
        return st;
    memcpy((*out)->idx, ds->idx, ds->n * sizeof *ds->idx);
    dpt_rng r;
    dpt_rng_seed(&r, seed, SHUFFLE_STREAM);
    dpt_rng_shuffle(&r, (*out)->idx, ds->n);
    return DPT_OK;
}

dpt_status dpt_datastore_partition(const dpt_datastore *ds, int n, int i, dpt_datastore **out)
{
    if (!(ds && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_partition: NULL argument");
    *out = NULL;
    if (n < 1 || i < 0 || i >= n)
        return dpt_fail(DPT_ERR_ARG, "partition: block %d of %d (need 1 <= n and 0 <= i < n)", i, n);
    size_t base = ds->n / (size_t)n, extra = ds->n % (size_t)n, ui = (size_t)i;
    size_t start = ui * base + (ui < extra ? ui : extra);
    size_t len = base + (ui < extra ? 1 : 0);
    dpt_status st = ds_alloc(ds->src, len, out);
    if (st)
        return st;
    memcpy((*out)->idx, ds->idx + start, len * sizeof *ds->idx);
    return DPT_OK;
}

/* ---- reading ------------------------------------------------------------------- */

void raw_to_planes(const raw_image *img, int c, float *out)
{
    const float s = 1.0f / 255.0f;
    size_t hw = (size_t)img->h * (size_t)img->w;
    const uint8_t *p = img->pix;
    int nc = img->c;
    if (c == 1) {
        for (size_t j = 0; j < hw; j++, p += nc) {
            /* stb_image's luminance, so a colour file read as grey matches
             * stbi_load(..., 1). */
            int v = nc >= 3 ? ((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8) : p[0];
            out[j] = (float)v * s;
        }
        return;
    }
    for (size_t j = 0; j < hw; j++, p += nc) {
        if (nc >= 3) {
            out[j] = (float)p[0] * s;
            out[hw + j] = (float)p[1] * s;
            out[2 * hw + j] = (float)p[2] * s;
        } else {
            float v = (float)p[0] * s;
            out[j] = out[hw + j] = out[2 * hw + j] = v;
        }
    }
}

/* Source index and weight of output position dst along an axis of
 * in -> out samples (half-pixel centres, clamped at both edges). */
static inline void tap(int dst, float scale, int in, int *i0, int *i1, float *t)
{
    float src = ((float)dst + 0.5f) * scale - 0.5f;
    if (src < 0.0f)
        src = 0.0f;
    int a = (int)src;
    if (a > in - 1)
        a = in - 1;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    *t = src - (float)a;
}

void dpt_image_resize_bilinear(const float *in, int c, int ih, int iw, float *out, int oh, int ow)
{
    const float sx = (float)iw / (float)ow, sy = (float)ih / (float)oh;
    for (int ch = 0; ch < c; ch++) {
        const float *plane = in + (size_t)ch * (size_t)ih * (size_t)iw;
        float *o = out + (size_t)ch * (size_t)oh * (size_t)ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            float ty;
            tap(oy, sy, ih, &y0, &y1, &ty);
            float uy = 1.0f - ty;
            const float *r0 = plane + (size_t)y0 * (size_t)iw;
            const float *r1 = plane + (size_t)y1 * (size_t)iw;
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                float tx;
                tap(ox, sx, iw, &x0, &x1, &tx);
                float ux = 1.0f - tx;
                o[(size_t)oy * (size_t)ow + (size_t)ox] =
                    uy * (ux * r0[x0] + tx * r0[x1]) + ty * (ux * r1[x0] + tx * r1[x1]);
            }
        }
    }
}

/* Pixel j (row-major) of channel ch as raw_to_planes converts it. */
static inline float raw_sample(const raw_image *img, int c, int ch, size_t j)
{
    const float s = 1.0f / 255.0f;
    const uint8_t *p = img->pix + j * (size_t)img->c;
    if (img->c < 3)
        return (float)p[0] * s;
    if (c == 1)
        return (float)((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8) * s;
    return (float)p[ch] * s;
}

/* raw_to_planes then dpt_image_resize_bilinear, the same arithmetic and
 * bits, but reading the 8-bit pixels where they are: an image at the pixel
 * cap is never converted to float whole (up to 200 MB). */
static void resize_raw(const raw_image *img, int c, float *out, int oh, int ow)
{
    const int ih = img->h, iw = img->w;
    const float sx = (float)iw / (float)ow, sy = (float)ih / (float)oh;
    for (int ch = 0; ch < c; ch++) {
        float *o = out + (size_t)ch * (size_t)oh * (size_t)ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            float ty;
            tap(oy, sy, ih, &y0, &y1, &ty);
            float uy = 1.0f - ty;
            const size_t r0 = (size_t)y0 * (size_t)iw, r1 = (size_t)y1 * (size_t)iw;
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                float tx;
                tap(ox, sx, iw, &x0, &x1, &tx);
                float ux = 1.0f - tx;
                float a = raw_sample(img, c, ch, r0 + (size_t)x0);
                float b = raw_sample(img, c, ch, r0 + (size_t)x1);
                float d = raw_sample(img, c, ch, r1 + (size_t)x0);
                float e = raw_sample(img, c, ch, r1 + (size_t)x1);
                o[(size_t)oy * (size_t)ow + (size_t)ox] = uy * (ux * a + tx * b) + ty * (ux * d + tx * e);
            }
        }
    }
}

dpt_status check_output_shape(int c, int h, int w, const char *what)
{
    if ((c != 1 && c != 3) || h < 1 || w < 1)
        return dpt_fail(DPT_ERR_ARG, "%s: output %dx%dx%d (channels must be 1 or 3, sizes > 0)", what, c, h,
                        w);
    return DPT_OK;
}

dpt_status raw_to_output(const raw_image *img, int c, int h, int w, float *out, const char *path)
{
    if (img->h == h && img->w == w) {
        raw_to_planes(img, c, out);
        return DPT_OK;
    }
    (void)path;
    resize_raw(img, c, out, h, w);
    return DPT_OK;
}

dpt_status dpt_datastore_read(const dpt_datastore *ds, size_t i, int c, int h, int w, float *out)
{
    if (!(ds && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_read: NULL argument");
    if (i >= ds->n)
        return dpt_fail(DPT_ERR_ARG, "datastore read: observation %zu of %zu", i, ds->n);
    dpt_status st = check_output_shape(c, h, w, "datastore read");
    if (st)
        return st;
    raw_image img = {0};
    const dpt_source *src = ds->src;
    size_t obs = ds->idx[i];
    /* A relabelled source reads from the source under it: load and release
     * there, so the pixels go back to the source that made them. */
    while (src->ops == &named_ops) {
        const dpt_datastore *in = src->impl;
        obs = in->idx[obs];
        src = in->src;
    }
    if ((st = src->ops->load(src, obs, &img)))
        return st;
    st = raw_to_output(&img, c, h, w, out, src->ops->file(src, obs));
    if (img.owned)
        src->ops->release(&img);
    return st;
}

/* ---- labels matched by class name -------------------------------------------- */

/* A source over another datastore's observations with other labels: the
 * pixels come from the inner datastore, the class list is the caller's. */
static const char *named_file(const dpt_source *s, size_t obs)
{
    const dpt_datastore *in = s->impl;
    return in->src->ops->file(in->src, in->idx[obs]);
}

/* Not called: dpt_datastore_read goes down to the inner source itself (so
 * its release gets the pixels back). */
static dpt_status named_load(const dpt_source *s, size_t obs, raw_image *img)
{
    (void)s, (void)obs, (void)img;
    return dpt_fail(DPT_ERR_ARG, "relabelled datastore: internal read");
}

static void named_release(raw_image *img) { (void)img; }

static dpt_status named_size(const dpt_source *s, size_t obs, int *h, int *w, int *c)
{
    const dpt_datastore *in = s->impl;
    return in->src->ops->size(in->src, in->idx[obs], h, w, c);
}

static void named_destroy(void *impl) { dpt_datastore_free(impl); }

static const source_ops named_ops = {named_file, named_load, named_release, named_size, named_destroy};

dpt_status dpt_datastore_match_classes(const dpt_datastore *ds, const char *what, int n_classes,
                                       const char *const *names, dpt_datastore **out)
{
    if (!(ds && out && names && n_classes > 0))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_match_classes: NULL argument or no classes");
    *out = NULL;
    if (!what)
        what = ds->n ? dpt_datastore_file(ds, 0) : "datastore";
    const dpt_source *in = ds->src;
    int32_t map_small[256], *map = in->n_classes <= 256 ? map_small : malloc((size_t)in->n_classes * sizeof *map);
    if (!map)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", what);
    dpt_status st = DPT_OK;
    dpt_source *src = NULL;
    dpt_datastore *inner = NULL;
    /* Only classes with observations must be known: IDX data's classes
     * run up to its largest label, some of them maybe empty. */
    for (int k = 0; k < in->n_classes; k++)
        map[k] = -2;
    for (size_t i = 0; i < ds->n; i++)
        map[in->labels[ds->idx[i]]] = -1;
    for (int k = 0; k < in->n_classes; k++) {
        if (map[k] == -2)
            continue;
        for (int j = 0; j < n_classes; j++)
            if (names[j] && strcmp(names[j], in->class_names[k]) == 0) {
                map[k] = j;
                break;
            }
        if (map[k] < 0) {
            /* Name a few of the known classes: enough to see the mismatch. */
            char known[256] = "";
            size_t len = 0;
            for (int j = 0; j < n_classes && len < sizeof known - 1; j++)
                len += (size_t)snprintf(known + len, sizeof known - len, "%s'%s'", j ? ", " : "",
                                        names[j] ? names[j] : "");
            if (len >= sizeof known - 1)
                strcpy(known + sizeof known - 5, "...");
            st = dpt_fail(DPT_ERR_FORMAT, "%s: class '%s' is not one of the %d classes the model knows (%s)",
                          what, in->class_names[k], n_classes, known);
            goto done;
        }
    }
    /* inner: every observation of ds, in ds order; holds the reference */
    if ((st = ds_alloc(ds->src, ds->n, &inner)))
        goto done;
    memcpy(inner->idx, ds->idx, ds->n * sizeof *inner->idx);
    src = calloc(1, sizeof *src);
    if (!src || !(src->labels = malloc(ds->n ? ds->n * sizeof *src->labels : 1)) ||
        !(src->class_names = calloc((size_t)n_classes, sizeof *src->class_names))) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", what);
        goto done;
    }
    src->kind = in->kind;
    src->n_obs = ds->n;
    src->n_classes = n_classes;
    for (int j = 0; j < n_classes; j++)
        if (!(src->class_names[j] = data_strdup(names[j] ? names[j] : "", &st)))
            goto done;
    for (size_t i = 0; i < ds->n; i++)
        src->labels[i] = map[in->labels[ds->idx[i]]];
    src->n_skipped = in->n_skipped;
    src->ops = &named_ops;
    src->impl = inner;
    inner = NULL;
    if ((st = source_wrap(src, out)))
        goto done;
    src = NULL;
done:
    if (map != map_small)
        free(map);
    dpt_datastore_free(inner);
    source_destroy(src);
    return st;
}
