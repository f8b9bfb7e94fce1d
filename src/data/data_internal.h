/* Private to src/data: the shared source behind every dpt_datastore.
 *
 * A source is made once by an open function and never changes afterwards;
 * datastores are index arrays into it and hold one reference each. */
#ifndef DPT_DATA_INTERNAL_H
#define DPT_DATA_INTERNAL_H

#include "dptrain/data.h"

#include <stdatomic.h>

/* The most an IDX file (images or labels, decompressed) may hold: 4 GiB,
 * over five times EMNIST's largest. The header's dimensions are checked
 * against it before anything is allocated. */
#define DPT_MAX_IDX_BYTES ((uint64_t)4 << 30)

/* Native pixels of one observation: uint8, [h, w, c] interleaved. */
typedef struct raw_image {
    const uint8_t *pix; /* [h, w, c] */
    void *owned;        /* non-NULL: give back with ops->release after use */
    int h, w, c;
} raw_image;

typedef struct dpt_source dpt_source;

/* What a kind of source does; one table per kind (folder.c, idx.c). */
typedef struct source_ops {
    /* Path of the file observation obs comes from. */
    const char *(*file)(const dpt_source *s, size_t obs);
    /* Native pixels of observation obs (thread-safe). */
    dpt_status (*load)(const dpt_source *s, size_t obs, raw_image *img);
    /* Free img->owned (pixels a load call decoded for this read). */
    void (*release)(raw_image *img);
    /* Native size without a full decode. */
    dpt_status (*size)(const dpt_source *s, size_t obs, int *h, int *w, int *c);
    /* Release impl (not the source itself). */
    void (*destroy)(void *impl);
} source_ops;

struct dpt_source {
    atomic_size_t refs;
    dpt_datastore_kind kind;
    const source_ops *ops;
    void *impl;
    size_t n_obs;
    int n_classes;
    char **class_names;  /* [n_classes] */
    int32_t *labels;     /* [n_obs] */
    size_t n_skipped;    /* non-image files */
    size_t n_corrupt;
    char **corrupt;      /* [n_corrupt] paths */
    int preloaded;       /* 1: pixels in memory */
    uint64_t decoded_bytes; /* dpt_datastore_decoded_bytes */
    int decoded_exact;
};

/* Make a datastore owning a new source (refs = 1) with every observation in
 * order. On success the datastore owns src (and its impl); on failure the
 * caller still owns src. */
dpt_status source_wrap(dpt_source *src, dpt_datastore **out);
/* Release everything a source owns, the impl through ops->destroy. Used by
 * the open functions on failure and by the last datastore's free. */
void source_destroy(dpt_source *src);

/* Convert native pixels to float [c, h, w] in [0, 1] (c = 1 or 3) at
 * native size. */
void raw_to_planes(const raw_image *img, int c, float *out);
/* The same, resized to h x w (bilinear) when the size differs; `path`
 * names the image in an out-of-memory message. */
dpt_status raw_to_output(const raw_image *img, int c, int h, int w, float *out, const char *path);
/* Check the output shape of a read: c 1 or 3, h and w > 0. */
dpt_status check_output_shape(int c, int h, int w, const char *what);
/* Decode an image file with stb_image, native channels; img->owned is the
 * stb buffer (free with stbi_image_free). */
dpt_status decode_image_file(const char *path, raw_image *img);

/* strdup that reports DPT_ERR_NOMEM through *st (left alone on success). */
char *data_strdup(const char *s, dpt_status *st);

/* A growable list of strings, owned (folder and sequence-folder listings). */
typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;
/* Append s (taken: freed on failure). */
dpt_status strlist_push(strlist *l, char *s);
void strlist_free(strlist *l);
/* "dir/name" without doubled slashes; NOMEM through *st. */
char *data_join_path(const char *dir, const char *name, dpt_status *st);
/* The sorted names in dir, without those starting with '.'. */
dpt_status data_list_dir(const char *dir, strlist *names);

#endif
