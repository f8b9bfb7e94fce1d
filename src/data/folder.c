/* Image-folder datastore: root/<class>/<file>, decoded with stb_image.
 *
 * Opening lists the files (readdir + stat), nothing more unless the caller
 * asks for preload or skip_corrupt; reading decodes one file. */
#include "data/data_internal.h"
#include "core/file.h"

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image.h>

typedef struct cached_image {
    uint8_t *pix; /* [h, w, c] from stbi_load, or NULL */
    int h, w, c;
} cached_image;

typedef struct folder_impl {
    size_t n;
    char **paths;         /* [n] root/class/file */
    cached_image *cache;  /* [n] with preload, else NULL */
} folder_impl;

/* Push a skipped file as one allocation "path\0problem" (the problem without
 * the "path: " prefix a message starts with): dpt_datastore_corrupt_file
 * reads the path, dpt_datastore_corrupt_reason the problem. Takes path. */
static dpt_status push_corrupt(strlist *l, char *path, const char *why)
{
    size_t pl = strlen(path), wl;
    if (strncmp(why, path, pl) == 0 && strncmp(why + pl, ": ", 2) == 0)
        why += pl + 2;
    wl = strlen(why);
    char *e = realloc(path, pl + wl + 2);
    if (!e) {
        free(path);
        return dpt_fail(DPT_ERR_NOMEM, "image folder: out of memory listing files");
    }
    memcpy(e + pl + 1, why, wl + 1);
    return strlist_push(l, e);
}

static int has_image_ext(const char *name)
{
    static const char *const exts[] = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pnm"};
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (size_t k = 0; k < sizeof exts / sizeof *exts; k++)
        if (strcasecmp(dot, exts[k]) == 0)
            return 1;
    return 0;
}

dpt_status decode_image_file(const char *path, raw_image *img)
{
    FILE *f = NULL;
    dpt_status st = dpt_file_fopen_regular(path, &f, NULL);
    if (st)
        return st;
    int w = 0, h = 0, c = 0;
    /* Look at the header first: a few bytes can declare a gigapixel image,
     * and decoding that would take seconds and gigabytes (found by fuzzing). */
    if (!stbi_info_from_file(f, &w, &h, &c)) {
        /* The loader can be more lenient than the header reader (a PPM
         * without its maxval, found by fuzzing): never decode what we could
         * not size first. */
        const char *why = stbi_failure_reason();
        fclose(f);
        return dpt_fail(DPT_ERR_FORMAT, "%s: cannot decode image: %s", path,
                        why ? why : "unreadable header");
    }
    if (w < 1 || h < 1 || (long long)w * h > DPT_MAX_IMAGE_PIXELS) {
        fclose(f);
        return dpt_fail(DPT_ERR_FORMAT, "%s: image of %dx%d pixels is larger than the %d allowed",
                        path, w, h, DPT_MAX_IMAGE_PIXELS);
    }
    uint8_t *pix = stbi_load_from_file(f, &w, &h, &c, 0);
    fclose(f);
    if (!pix) {
        const char *why = stbi_failure_reason();
        return dpt_fail(DPT_ERR_FORMAT, "%s: cannot decode image: %s", path,
                        why ? why : "unknown reason");
    }
    if (c < 1 || c > 4 || w < 1 || h < 1) {
        stbi_image_free(pix);
        return dpt_fail(DPT_ERR_FORMAT, "%s: unsupported image (%dx%d, %d channels)", path, w, h, c);
    }
    *img = (raw_image){pix, pix, h, w, c};
    return DPT_OK;
}

/* Decode into a cache entry (which owns the pixels). */
static dpt_status decode_file(const char *path, cached_image *img)
{
    raw_image r;
    dpt_status st = decode_image_file(path, &r);
    if (st)
        return st;
    *img = (cached_image){r.owned, r.h, r.w, r.c};
    return DPT_OK;
}

dpt_status dpt_image_load(const char *path, int c, int h, int w, float *out)
{
    dpt_status st = check_output_shape(c, h, w, path);
    if (st)
        return st;
    raw_image img;
    if ((st = decode_image_file(path, &img)))
        return st;
    st = raw_to_output(&img, c, h, w, out, path);
    stbi_image_free(img.owned);
    return st;
}

/* ---- source table --------------------------------------------------------- */

static const char *folder_file(const dpt_source *s, size_t obs)
{
    return ((const folder_impl *)s->impl)->paths[obs];
}

static dpt_status folder_load(const dpt_source *s, size_t obs, raw_image *img)
{
    const folder_impl *f = s->impl;
    if (f->cache) {
        const cached_image *c = &f->cache[obs];
        *img = (raw_image){c->pix, NULL, c->h, c->w, c->c};
        return DPT_OK;
    }
    return decode_image_file(f->paths[obs], img);
}

static void folder_release(raw_image *img)
{
    stbi_image_free(img->owned);
    img->owned = NULL;
}

static dpt_status folder_size(const dpt_source *s, size_t obs, int *h, int *w, int *c)
{
    const folder_impl *f = s->impl;
    if (f->cache) {
        *h = f->cache[obs].h;
        *w = f->cache[obs].w;
        *c = f->cache[obs].c;
        return DPT_OK;
    }
    FILE *fp = NULL;
    dpt_status st = dpt_file_fopen_regular(f->paths[obs], &fp, NULL);
    if (st)
        return st;
    int ok = stbi_info_from_file(fp, w, h, c);
    fclose(fp);
    if (!ok) {
        const char *why = stbi_failure_reason();
        return dpt_fail(DPT_ERR_FORMAT, "%s: cannot read image header: %s", f->paths[obs],
                        why ? why : "unknown reason");
    }
    return DPT_OK;
}

static void folder_destroy(void *impl)
{
    folder_impl *f = impl;
    for (size_t i = 0; i < f->n; i++) {
        free(f->paths[i]);
        if (f->cache)
            stbi_image_free(f->cache[i].pix);
    }
    free(f->paths);
    free(f->cache);
    free(f);
}

static const source_ops folder_ops = {folder_file, folder_load, folder_release, folder_size,
                                      folder_destroy};

/* ---- open ------------------------------------------------------------------- */

/* Decoded bytes of the folder, estimated from the headers of up to
 * DPT_PRELOAD_SAMPLE files spread evenly over it (the mean, times the file
 * count). A header that cannot be read is left out of the mean: the file
 * is reported when it is decoded. */
static uint64_t estimate_bytes(const strlist *files)
{
    size_t n = files->n, k = n < DPT_PRELOAD_SAMPLE ? n : DPT_PRELOAD_SAMPLE, ok = 0;
    double sum = 0;
    for (size_t j = 0; j < k; j++) {
        FILE *fp = NULL;
        if (dpt_file_fopen_regular(files->v[j * n / k], &fp, NULL))
            continue;
        int w, h, c;
        if (stbi_info_from_file(fp, &w, &h, &c) && w > 0 && h > 0 && c > 0) {
            sum += (double)w * (double)h * (double)c;
            ok++;
        }
        fclose(fp);
    }
    dpt_clear_error();
    return ok ? (uint64_t)(sum / (double)ok * (double)n) : 0;
}

static uint64_t kept_bytes(const cached_image *cache, size_t n)
{
    uint64_t b = 0;
    for (size_t i = 0; cache && i < n; i++)
        b += (uint64_t)cache[i].h * (uint64_t)cache[i].w * (uint64_t)cache[i].c;
    return b;
}

/* Files of one class folder: append image paths (and labels) to files,
 * count the rest. */
static dpt_status list_class(const char *cdir, int label, int drop_empty, strlist *files,
                             int32_t **labels, size_t *labels_cap, dpt_source *src,
                             strlist *corrupt)
{
    strlist names = {0};
    dpt_status st = data_list_dir(cdir, &names);
    size_t before = files->n;
    for (size_t j = 0; !st && j < names.n; j++) {
        char *path = data_join_path(cdir, names.v[j], &st);
        if (!path)
            break;
        struct stat sb;
        if (stat(path, &sb) != 0) {
            st = dpt_fail(DPT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
            free(path);
            break;
        }
        if (S_ISDIR(sb.st_mode) || (!S_ISREG(sb.st_mode) && !has_image_ext(names.v[j]))) {
            free(path); /* deeper folders and special files are not observations */
            continue;
        }
        if (!S_ISREG(sb.st_mode)) {
            /* Named like an image but a FIFO, socket or device: reading it
             * could block or never end, and skipping it would silently drop
             * an observation the user meant. */
            int fd;
            st = dpt_file_open_regular(path, &fd, NULL);
            if (!st) { /* became a regular file since the stat */
                close(fd);
                st = dpt_fail(DPT_ERR_IO, "%s: changed while being listed", path);
            }
            free(path);
            break;
        }
        if (!has_image_ext(names.v[j])) {
            src->n_skipped++;
            free(path);
            continue;
        }
        if (sb.st_size == 0) {
            if (!drop_empty) {
                st = dpt_fail(DPT_ERR_FORMAT, "%s: empty file (0 bytes) is not an image", path);
                free(path);
                break;
            }
            st = push_corrupt(corrupt, path, "empty file (0 bytes) is not an image");
            continue;
        }
        if (files->n == *labels_cap) {
            size_t cap = *labels_cap ? 2 * *labels_cap : 256;
            int32_t *l = realloc(*labels, cap * sizeof *l);
            if (!l) {
                st = dpt_fail(DPT_ERR_NOMEM, "image folder: out of memory listing files");
                free(path);
                break;
            }
            *labels = l;
            *labels_cap = cap;
        }
        (*labels)[files->n] = label;
        st = strlist_push(files, path);
    }
    if (!st && files->n == before)
        st = dpt_fail(DPT_ERR_FORMAT, "%s: class folder has no images", cdir);
    strlist_free(&names);
    return st;
}

dpt_status dpt_datastore_open_folder(const char *root, const dpt_folder_options *opt,
                                     dpt_datastore **out)
{
    if (!(root && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_datastore_open_folder: NULL argument");
    *out = NULL;
    dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
    if (opt) {
        if (opt->version < 1 || opt->version > DPT_FOLDER_OPTIONS_VERSION)
            return dpt_fail(DPT_ERR_ARG, "%s: folder options version %d (this library knows 1 to %d)",
                            root, opt->version, DPT_FOLDER_OPTIONS_VERSION);
        /* A version-1 caller's struct ends before cache_budget_bytes. */
        memcpy(&o, opt, opt->version == 1 ? offsetof(dpt_folder_options, cache_budget_bytes) : sizeof o);
    }
    if (o.preload < 0 || o.preload > DPT_PRELOAD_AUTO)
        return dpt_fail(DPT_ERR_ARG, "%s: preload %d (0, 1 or DPT_PRELOAD_AUTO)", root, o.preload);
    struct stat sb;
    if (stat(root, &sb) != 0)
        return dpt_fail(DPT_ERR_IO, "%s: cannot open folder: %s", root, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return dpt_fail(DPT_ERR_IO, "%s: not a folder", root);

    dpt_status st = DPT_OK;
    strlist entries = {0}, classes = {0}, files = {0}, corrupt = {0};
    int32_t *labels = NULL;
    size_t labels_cap = 0;
    folder_impl *impl = NULL;
    dpt_source *src = calloc(1, sizeof *src);
    if (!src) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);
        goto fail;
    }
    src->kind = DPT_DATASTORE_FOLDER;
    src->ops = &folder_ops;

    if ((st = data_list_dir(root, &entries)))
        goto fail;
    for (size_t j = 0; j < entries.n; j++) {
        char *p = data_join_path(root, entries.v[j], &st);
        if (!p)
            goto fail;
        int is_dir = stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
        if (!is_dir) {
            free(p);
            continue;
        }
        if ((st = strlist_push(&classes, p)))
            goto fail;
    }
    if (classes.n == 0) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: no class sub-folders (expected root/<class>/<image files>)", root);
        goto fail;
    }
    if (classes.n > INT32_MAX) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: too many class folders", root);
        goto fail;
    }
    int drop = o.skip_corrupt != 0;
    for (size_t k = 0; k < classes.n; k++)
        if ((st = list_class(classes.v[k], (int)k, drop, &files, &labels, &labels_cap, src, &corrupt)))
            goto fail;

    /* Class names are the folder names (entries that are directories, in
     * the same sorted order). */
    src->class_names = calloc(classes.n, sizeof *src->class_names);
    if (!src->class_names) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);
        goto fail;
    }
    src->n_classes = (int)classes.n;
    for (size_t k = 0; k < classes.n; k++) {
        const char *slash = strrchr(classes.v[k], '/');
        if (!(src->class_names[k] = data_strdup(slash ? slash + 1 : classes.v[k], &st)))
            goto fail;
    }

    impl = calloc(1, sizeof *impl);
    if (!impl) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);
        goto fail;
    }
    /* Auto: decide on the sampled estimate, so a folder far over the
     * budget is not decoded (nor every header read) to find that out. */
    int preload = o.preload == 1;
    uint64_t estimate = 0, kept = 0;
    if (o.preload == DPT_PRELOAD_AUTO) {
        estimate = estimate_bytes(&files);
        preload = estimate <= o.cache_budget_bytes;
    }
    if (preload || o.skip_corrupt) {
        cached_image *cache = calloc(files.n ? files.n : 1, sizeof *cache);
        if (!cache) {
            st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);
            goto fail;
        }
        /* Decode every file; keep the good ones in order (compacting the
         * lists in place), drop or fail on the bad ones. */
        size_t keep = 0;
        for (size_t i = 0; i < files.n; i++) {
            st = decode_file(files.v[i], &cache[keep]);
            if (st == DPT_ERR_NOMEM || (st && !o.skip_corrupt)) {
                for (size_t j = 0; j < keep; j++)
                    stbi_image_free(cache[j].pix);
                free(cache);
                goto fail;
            }
            if (st) {
                st = push_corrupt(&corrupt, files.v[i], dpt_last_error());
                files.v[i] = NULL;
                if (st) {
                    for (size_t j = 0; j < keep; j++)
                        stbi_image_free(cache[j].pix);
                    free(cache);
                    goto fail;
                }
                continue;
            }
            if (preload && o.preload == DPT_PRELOAD_AUTO) {
                kept += (uint64_t)cache[keep].h * (uint64_t)cache[keep].w * (uint64_t)cache[keep].c;
                if (kept > o.cache_budget_bytes) {
                    /* The sample was wrong: stream after all, and say how
                     * much the whole folder would have taken. */
                    preload = 0;
                    estimate = (uint64_t)((double)kept * (double)files.n / (double)(i + 1));
                    for (size_t j = 0; j < keep; j++) {
                        stbi_image_free(cache[j].pix);
                        cache[j].pix = NULL;
                    }
                }
            }
            if (!preload) {
                stbi_image_free(cache[keep].pix);
                cache[keep].pix = NULL;
            }
            files.v[keep] = files.v[i];
            labels[keep] = labels[i];
            if (keep != i)
                files.v[i] = NULL;
            keep++;
            /* Without skip_corrupt nothing was dropped (keep == i + 1), so
             * the lists are whole when the preload stops here. */
            if (!preload && !o.skip_corrupt) {
                keep = files.n;
                break;
            }
        }
        files.n = keep;
        dpt_clear_error();
        if (preload)
            impl->cache = cache;
        else
            free(cache);
        /* A class may have lost all its images. */
        for (size_t k = 0; k < classes.n; k++) {
            size_t m = 0;
            for (size_t i = 0; i < files.n; i++)
                m += labels[i] == (int32_t)k;
            if (!m) {
                st = dpt_fail(DPT_ERR_FORMAT, "%s: class folder has no images that can be decoded",
                              classes.v[k]);
                goto fail;
            }
        }
    }
    src->preloaded = preload;
    src->decoded_exact = preload;
    src->decoded_bytes = preload ? kept_bytes(impl->cache, files.n) : estimate;
    impl->n = files.n;
    impl->paths = files.v;
    files = (strlist){0};
    src->impl = impl;
    impl = NULL;
    src->n_obs = src->impl ? ((folder_impl *)src->impl)->n : 0;
    src->labels = labels;
    labels = NULL;
    src->n_corrupt = corrupt.n;
    src->corrupt = corrupt.v;
    corrupt = (strlist){0};
    if ((st = source_wrap(src, out)))
        goto fail;
    strlist_free(&entries);
    strlist_free(&classes);
    return DPT_OK;

fail:
    if (impl) {
        impl->n = 0;
        folder_destroy(impl);
    }
    source_destroy(src);
    free(labels);
    strlist_free(&entries);
    strlist_free(&classes);
    strlist_free(&files);
    strlist_free(&corrupt);
    return st;
}
