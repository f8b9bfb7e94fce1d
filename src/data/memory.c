/* Memory datastore: images a program hands over as one array (the Python
 * package's numpy arrays), copied once and then read like IDX pixels. */
#include "data/data_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mem_impl {
    char *name;   /* what dpt_datastore_file answers */
    uint8_t *pix; /* [n, h, w, c] */
    int h, w, c;
} mem_impl;

static const char *mem_file(const dpt_source *s, size_t obs)
{
    (void)obs;
    return ((const mem_impl *)s->impl)->name;
}

static dpt_status mem_load(const dpt_source *s, size_t obs, raw_image *img)
{
    const mem_impl *m = s->impl;
    size_t bytes = (size_t)m->h * (size_t)m->w * (size_t)m->c;
    *img = (raw_image){m->pix + obs * bytes, NULL, m->h, m->w, m->c};
    return DPT_OK;
}

static void mem_release(raw_image *img) { img->owned = NULL; }

static dpt_status mem_size(const dpt_source *s, size_t obs, int *h, int *w, int *c)
{
    (void)obs;
    const mem_impl *m = s->impl;
    *h = m->h, *w = m->w, *c = m->c;
    return DPT_OK;
}

static void mem_destroy(void *impl)
{
    mem_impl *m = impl;
    free(m->name);
    free(m->pix);
    free(m);
}

static const source_ops mem_ops = {mem_file, mem_load, mem_release, mem_size, mem_destroy};

dpt_status dpt_datastore_from_memory(const uint8_t *pixels, size_t n, int h, int w, int c,
                                     const int32_t *labels, int n_classes,
                                     const char *const *class_names, const char *name,
                                     dpt_datastore **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "memory datastore: NULL output");
    *out = NULL;
    const char *what = name ? name : "<memory>";
    if (!pixels || !labels)
        return dpt_fail(DPT_ERR_ARG, "%s: NULL %s", what, !pixels ? "pixels" : "labels");
    if (n < 1)
        return dpt_fail(DPT_ERR_ARG, "%s: no images", what);
    if (h < 1 || w < 1 || (int64_t)h * w > DPT_MAX_IMAGE_PIXELS)
        return dpt_fail(DPT_ERR_ARG, "%s: images of %dx%d pixels (1 to %d pixels each)", what, h,
                        w, DPT_MAX_IMAGE_PIXELS);
    if (c < 1 || c > 4)
        return dpt_fail(DPT_ERR_ARG, "%s: %d channels (1 to 4)", what, c);
    if (n_classes < 1 || n_classes > DPT_MEMORY_MAX_CLASSES)
        return dpt_fail(DPT_ERR_ARG, "%s: %d classes (1 to %d)", what, n_classes,
                        DPT_MEMORY_MAX_CLASSES);
    uint64_t per = (uint64_t)h * (uint64_t)w * (uint64_t)c;
    if (n > DPT_MEMORY_MAX_BYTES / per)
        return dpt_fail(DPT_ERR_ARG, "%s: %zu images of %llu bytes exceed %llu bytes", what, n,
                        (unsigned long long)per, (unsigned long long)DPT_MEMORY_MAX_BYTES);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return dpt_fail(DPT_ERR_ARG, "%s: label %d of observation %zu is outside the %d classes",
                            what, (int)labels[i], i, n_classes);
    for (int k = 0; class_names && k < n_classes; k++)
        if (!class_names[k] || !class_names[k][0])
            return dpt_fail(DPT_ERR_ARG, "%s: class %d has no name", what, k);

    dpt_status st = DPT_OK;
    dpt_source *src = calloc(1, sizeof *src);
    mem_impl *m = calloc(1, sizeof *m);
    size_t bytes = (size_t)(n * per);
    if (!src || !m || !(m->pix = malloc(bytes)) ||
        !(src->labels = malloc(n * sizeof *src->labels)) ||
        !(src->class_names = calloc((size_t)n_classes, sizeof *src->class_names))) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory (%zu bytes of pixels)", what, bytes);
        goto fail;
    }
    src->kind = DPT_DATASTORE_MEMORY;
    src->ops = &mem_ops;
    src->n_obs = n;
    src->n_classes = n_classes;
    for (int k = 0; k < n_classes; k++) {
        char num[16];
        snprintf(num, sizeof num, "%d", k);
        if (!(src->class_names[k] = data_strdup(class_names ? class_names[k] : num, &st)))
            goto fail;
    }
    memcpy(src->labels, labels, n * sizeof *labels);
    memcpy(m->pix, pixels, bytes);
    m->h = h, m->w = w, m->c = c;
    if (!(m->name = data_strdup(what, &st)))
        goto fail;
    src->preloaded = 1;
    src->decoded_exact = 1;
    src->decoded_bytes = (uint64_t)bytes;
    src->impl = m;
    m = NULL;
    if ((st = source_wrap(src, out)) != DPT_OK)
        goto fail;
    return DPT_OK;
fail:
    if (m)
        mem_destroy(m);
    source_destroy(src);
    return st;
}
