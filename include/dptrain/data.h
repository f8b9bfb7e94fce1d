/* dptrain data: datastores (image folders, IDX files), per-label split,
 * shuffle, partition, bilinear resize, and a minibatch queue that decodes
 * the next batches on background threads (streaming a folder that is not
 * preloaded, in bounded memory).
 *
 * Two kinds of datastore hide behind one opaque type, dpt_datastore:
 *   - folder: root/<class>/<image file>, labels from the sub-folder names
 *     (MATLAB imageDatastore with LabelSource "foldernames"); images are
 *     decoded when read (PNG, JPEG, BMP, PGM/PPM through stb_image).
 *   - IDX:    the MNIST file format (images + labels files, optionally
 *     gzip-compressed), loaded into memory when opened.
 *
 * A datastore is an immutable list of observations (an index array) over a
 * shared, reference-counted source (the file list or the pixel memory).
 * split_each_label, shuffle, partition and subset return NEW datastores that
 * share the source; each one returned by any function here is owned by the
 * caller and freed with dpt_datastore_free, in any order (freeing the parent
 * first is fine). dpt_datastore_free(NULL) does nothing.
 *
 * Thread-safety: a datastore is never modified after it is made, so any
 * number of threads may call the const functions (read, label, ...) on the
 * same datastore at once, and make or free datastores sharing a source from
 * different threads. A dpt_mbq belongs to one thread at a time (its
 * decode threads are internal).
 *
 * Pixels: read and the minibatch queue produce float32 [C,H,W] in [0,1]
 * (uint8 value / 255). Channel conversion: grey -> 3 channels replicates
 * the grey value; colour -> 1 channel uses stb_image's integer luminance
 * (77 R + 150 G + 29 B) >> 8; an alpha channel is dropped. */
#ifndef DPTRAIN_DATA_H
#define DPTRAIN_DATA_H

#include "dptrain/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpt_datastore dpt_datastore;

/* Images with more pixels than this (4096 × 4096) are rejected as malformed:
 * a few header bytes can otherwise ask for gigabytes. */
#define DPT_MAX_IMAGE_PIXELS (1 << 24)

typedef enum dpt_datastore_kind {
    DPT_DATASTORE_FOLDER = 1, /* folder of class sub-folders of image files */
    DPT_DATASTORE_IDX = 2,    /* IDX images + labels, in memory */
    DPT_DATASTORE_MEMORY = 3  /* a program's arrays (dpt_datastore_from_memory) */
} dpt_datastore_kind;

/* ---- opening ------------------------------------------------------------ */

/* Options of dpt_datastore_open_folder. Start from DPT_FOLDER_OPTIONS_INIT. */
typedef struct dpt_folder_options {
    int version;      /* DPT_FOLDER_OPTIONS_VERSION */
    int skip_corrupt; /* 0 (default): an image file that cannot be decoded is
                         an error, reported when it is read (zero-byte files
                         already at open). 1: decode every image at open and
                         drop the ones that fail (and zero-byte ones); their
                         number and names are available from
                         dpt_datastore_n_corrupt / dpt_datastore_corrupt_file. */
    int preload;      /* 1: decode every image at open and keep the pixels in
                         memory (native size and channels); reads then do not
                         touch the files. 0 (default): decode on each read
                         (streaming: memory independent of the folder's
                         size). DPT_PRELOAD_AUTO: as 1 when the decoded
                         pixels fit cache_budget_bytes, else as 0; see
                         dpt_datastore_is_preloaded. */
    /* Version 2. */
    uint64_t cache_budget_bytes; /* for DPT_PRELOAD_AUTO: the most decoded
                         pixel bytes (h * w * c per image, native size) to
                         keep. The decision is made on an estimate (the image
                         headers of up to DPT_PRELOAD_SAMPLE files spread
                         over the folder, times the file count), so that a
                         folder far over the budget is not read whole to say
                         so; a preload that then goes over the budget is
                         dropped, and the datastore streams. */
} dpt_folder_options;

#define DPT_PRELOAD_AUTO 2
#define DPT_PRELOAD_SAMPLE 256

/* Version 1 (without cache_budget_bytes) is still accepted. */
#define DPT_FOLDER_OPTIONS_VERSION 2
#define DPT_FOLDER_OPTIONS_INIT {DPT_FOLDER_OPTIONS_VERSION, 0, 0, 0}

/* Open an image-folder datastore. The direct sub-folders of `root` are the
 * classes, in byte-wise (strcmp) order of their names; the class index is
 * the position in that order. Each class folder's files are observations in
 * strcmp order of their names, classes one after another. Files whose
 * extension (case-insensitive) is .png .jpg .jpeg .bmp .pgm .ppm .pnm are
 * images; other files in class folders are skipped and counted
 * (dpt_datastore_n_skipped). Names starting with '.' are ignored, and so are
 * files directly in root and folders below the class folders.
 * Errors (message names the path): root missing or unreadable (DPT_ERR_IO);
 * no class sub-folders; a class folder with no images; a zero-byte image
 * file; with skip_corrupt or preload, an image that fails to decode
 * (DPT_ERR_FORMAT). opt NULL means defaults. *out is owned by the caller. */
DPT_API dpt_status dpt_datastore_open_folder(const char *root, const dpt_folder_options *opt,
                                             dpt_datastore **out);

/* Open an IDX (MNIST-format) datastore: images file (magic 0x00000803,
 * uint8, N x rows x cols) and labels file (magic 0x00000801, uint8, N). Either
 * file may be gzip-compressed; that is detected from its first bytes
 * (1f 8b), whatever its name. Both are read into memory here.
 * labels_path NULL: guessed from images_path by dpt_datastore_idx_labels_path.
 * Classes: max label + 1, named "0", "1", ... Errors name the file:
 * unreadable (DPT_ERR_IO); wrong magic, zero dimensions, a length
 * (decompressed length for gzip) that differs from what the header implies,
 * a truncated gzip stream, a label count that differs from the image count
 * (DPT_ERR_FORMAT). *out is owned by the caller. */
DPT_API dpt_status dpt_datastore_open_idx(const char *images_path, const char *labels_path,
                                          dpt_datastore **out);

/* dpt_datastore_open_idx with a given class count (> 0): every label must
 * be below n_classes (DPT_ERR_FORMAT naming the labels file and the
 * observation otherwise), and the datastore has n_classes classes even when
 * some never occur (a small test set). n_classes 0 means max label + 1. */
DPT_API dpt_status dpt_datastore_open_idx_classes(const char *images_path, const char *labels_path,
                                                  int n_classes, dpt_datastore **out);

/* Bounds of dpt_datastore_from_memory: classes, and bytes of pixels (16
 * GiB), checked before anything is copied. */
#define DPT_MEMORY_MAX_CLASSES 65536
#define DPT_MEMORY_MAX_BYTES ((uint64_t)16 << 30)

/* A datastore over images a program holds in memory (arrays from another
 * language: the Python package's numpy arrays): n images of h x w pixels
 * with c channels (1 to 4, as image files decode: 2 is grey + alpha, 4 is
 * RGBA), uint8, interleaved [n, h, w, c] (channels last), read as folder
 * images are (value / 255, channel conversion, resizing). labels[n] are
 * class indices in [0, n_classes); class_names[n_classes] name the classes
 * (NULL: "0", "1", ...), matched by dpt_datastore_match_classes and saved
 * in model files. `name` stands for the data in messages and as
 * dpt_datastore_file (NULL: "<memory>"). Pixels, labels and names are
 * copied: the caller's buffers may go right after. DPT_ERR_ARG naming the
 * argument for n < 1, h, w < 1, h * w over DPT_MAX_IMAGE_PIXELS, c outside
 * 1..4, n_classes outside 1..DPT_MEMORY_MAX_CLASSES, pixels over
 * DPT_MEMORY_MAX_BYTES, a NULL or empty class name, or a label out of range
 * (naming the observation). *out owned by the caller. */
DPT_API dpt_status dpt_datastore_from_memory(const uint8_t *pixels, size_t n, int h, int w, int c,
                                             const int32_t *labels, int n_classes,
                                             const char *const *class_names, const char *name,
                                             dpt_datastore **out);

/* The labels file that belongs to an IDX images file, by the MNIST naming
 * convention: in the file name, "images" becomes "labels" and "idx3"
 * becomes "idx1" (train-images-idx3-ubyte.gz -> train-labels-idx1-ubyte.gz).
 * When that file does not exist but the name with ".gz" added or removed
 * does, that one is chosen. Writes a NUL-terminated path into buf.
 * DPT_ERR_ARG when the name has no "images" part or buf is too small. */
DPT_API dpt_status dpt_datastore_idx_labels_path(const char *images_path, char *buf,
                                                 size_t buf_bytes);

/* Release a datastore (the shared source goes with the last datastore that
 * uses it). NULL does nothing. */
DPT_API void dpt_datastore_free(dpt_datastore *ds);

/* ---- queries (never fail; i must be < n_obs, k < n_classes) ------------- */

/* Whether ds reads an image folder or IDX files. */
DPT_API dpt_datastore_kind dpt_datastore_kind_of(const dpt_datastore *ds);
/* Number of observations in this datastore. */
DPT_API size_t dpt_datastore_n_obs(const dpt_datastore *ds);
/* Number of classes of the source (a split or partition keeps all classes,
 * even ones with no observation left in it). */
DPT_API int dpt_datastore_n_classes(const dpt_datastore *ds);
/* Name of class k; the pointer lives as long as the datastore. */
DPT_API const char *dpt_datastore_class_name(const dpt_datastore *ds, int k);
/* Class index (0-based) of observation i. */
DPT_API int dpt_datastore_label(const dpt_datastore *ds, size_t i);
/* counts[k] = number of observations with label k; counts has n_classes
 * elements. */
DPT_API void dpt_datastore_count_labels(const dpt_datastore *ds, size_t *counts);
/* The file observation i comes from: the image file (folder) or the images
 * file (IDX). The pointer lives as long as the datastore. */
DPT_API const char *dpt_datastore_file(const dpt_datastore *ds, size_t i);
/* Files in class folders skipped at open because their extension is not an
 * image extension (0 for IDX). */
DPT_API size_t dpt_datastore_n_skipped(const dpt_datastore *ds);
/* Image files dropped at open because they failed to decode (only with
 * skip_corrupt; 0 otherwise), and the path of the k-th of them. */
DPT_API size_t dpt_datastore_n_corrupt(const dpt_datastore *ds);
DPT_API const char *dpt_datastore_corrupt_file(const dpt_datastore *ds, size_t k);
/* Why skipped file k was skipped ("cannot decode image: ...", "empty file
 * (0 bytes) is not an image"), or NULL for k out of range. The text may
 * hold bytes from the file or its name: escape it before showing it. */
DPT_API const char *dpt_datastore_corrupt_reason(const dpt_datastore *ds, size_t k);

/* 1 when ds's images are decoded in memory (an image folder opened with
 * preload, or with DPT_PRELOAD_AUTO within its budget, and IDX data); 0
 * when each read decodes its file. */
DPT_API int dpt_datastore_is_preloaded(const dpt_datastore *ds);
/* The decoded pixel bytes of the whole source (every image of the folder,
 * h * w * c, native size): exact when preloaded (*exact = 1), an estimate
 * from sampled headers when DPT_PRELOAD_AUTO chose to stream (*exact = 0),
 * 0 when not known (a folder opened with preload 0). exact may be NULL. */
DPT_API uint64_t dpt_datastore_decoded_bytes(const dpt_datastore *ds, int *exact);

/* Native size of observation i: height, width and channels as stored (1 to
 * 4 for image files; 1 for IDX). Reads the image header of a folder file
 * (no full decode). Any output pointer may be NULL. */
DPT_API dpt_status dpt_datastore_image_size(const dpt_datastore *ds, size_t i, int *h, int *w,
                                            int *c);

/* ---- new datastores from old (each *out owned by the caller) ------------ */

/* Observations idx[0..n) of ds, in that order (repeats allowed). */
DPT_API dpt_status dpt_datastore_subset(const dpt_datastore *ds, const size_t *idx, size_t n,
                                        dpt_datastore **out);

/* The observations of ds with their labels matched by class name to
 * names[0..n_classes) (a model's classes, or another dataset's): an
 * observation of ds's class "cat" gets the label j where names[j] is "cat".
 * *out has n_classes classes, names copied. A class of ds with observations
 * that is not in names is DPT_ERR_FORMAT naming `what` (the folder or file;
 * NULL: the first observation's file) and the class. IDX data's classes are
 * the label numbers "0", "1", ... as decimal text. */
DPT_API dpt_status dpt_datastore_match_classes(const dpt_datastore *ds, const char *what,
                                               int n_classes, const char *const *names,
                                               dpt_datastore **out);

/* Per-label random split (MATLAB splitEachLabel(ds, fraction, "randomized")):
 * for each label k, the positions of that label's observations, in ds
 * order, are permuted by dpt_rng_shuffle with an RNG seeded
 * dpt_rng_seed(seed, stream = k); the first round(fraction * count) of them
 * (round half away from zero) go to *first, the rest to *second. Both keep
 * the order of ds. Deterministic for a given seed; fraction in [0, 1].
 * Either output may be empty. */
DPT_API dpt_status dpt_datastore_split_each_label(const dpt_datastore *ds, double fraction,
                                                  uint64_t seed, dpt_datastore **first,
                                                  dpt_datastore **second);

/* A shuffled copy of ds (ds itself is unchanged): the observation order is
 * permuted by dpt_rng_shuffle with dpt_rng_seed(seed, stream = 0). */
DPT_API dpt_status dpt_datastore_shuffle(const dpt_datastore *ds, uint64_t seed,
                                         dpt_datastore **out);

/* Block i (0-based) of n contiguous blocks of ds: blocks are disjoint, cover
 * ds in order, and their sizes differ by at most one, the first
 * (n_obs mod n) blocks holding the extra observation. 1 <= n, 0 <= i < n. */
DPT_API dpt_status dpt_datastore_partition(const dpt_datastore *ds, int n, int i,
                                           dpt_datastore **out);

/* ---- reading -------------------------------------------------------------- */

/* Decode observation i into out, float32 [c, h, w] in [0, 1], converted to c
 * channels (1 or 3) and resized to h x w by dpt_image_resize_bilinear when
 * its size differs. out holds c*h*w floats, owned by the caller.
 * Errors name the file: unreadable (DPT_ERR_IO), cannot be decoded
 * (DPT_ERR_FORMAT); bad c, h, w or i (DPT_ERR_ARG). Thread-safe. */
DPT_API dpt_status dpt_datastore_read(const dpt_datastore *ds, size_t i, int c, int h, int w,
                                      float *out);

/* Decode one image file (any format dpt_datastore_open_folder reads) into
 * out, float32 [c, h, w] in [0, 1], converted and resized as by
 * dpt_datastore_read. For predicting single files. Errors name the file. */
DPT_API dpt_status dpt_image_load(const char *path, int c, int h, int w, float *out);

/* Bilinear resize of each of c planes from [c, ih, iw] to [c, oh, ow],
 * without antialiasing, with half-pixel centres (align_corners = false):
 * the same values as PyTorch F.interpolate(mode="bilinear",
 * align_corners=False), and the half-pixel mapping of MATLAB's
 * imresize(..., "bilinear", Antialiasing=false):
 *   scale = in / out;  src = max(0, (dst + 0.5) * scale - 0.5)
 *   i0 = floor(src);  i1 = min(i0 + 1, in - 1);  t = src - i0
 *   value = (1 - t) * x[i0] + t * x[i1]   (rows, then columns, separably)
 * computed in float32. in and out must not overlap. Sizes > 0. */
DPT_API void dpt_image_resize_bilinear(const float *in, int c, int ih, int iw, float *out, int oh,
                                       int ow);

/* ---- augmentation (MATLAB imageDataAugmenter) ------------------------------ */

/* Random geometric augmentation of training images, one affine transform per
 * observation (MATLAB imageDataAugmenter with its 'same' output view and
 * FillValue 0). With p the (x, y) position of a pixel centre (x to the right,
 * y down, 0-based) and c = ((w-1)/2, (h-1)/2) the image centre, the output
 * pixel at q takes the input's value at p where
 *     q = c + R * S * H * F * (p - c) + t
 *   F: reflection (x -> -x with reflect_x, y -> -y with reflect_y, each drawn
 *      with probability 1/2);
 *   H: shear, [1 tan(a); 0 1] * [1 0; tan(b) 1] (a in shear_x, b in shear_y,
 *      degrees);
 *   S: scale, diag(s * sx, s * sy), s drawn from scale, sx from scale_x,
 *      sy from scale_y (> 1 enlarges);
 *   R: rotation by an angle in rotate (degrees; positive turns the picture
 *      counter-clockwise on screen, as MATLAB's imrotate);
 *   t: translation in pixels (tx in translate_x, ty in translate_y; positive
 *      moves the picture right and down).
 * Each value is drawn uniformly from its [min, max] range (min == max: that
 * value). Values are read by bilinear interpolation; a neighbour outside the
 * image counts as 0. Every channel gets the same transform, the output has
 * the input's size. A transform that is the identity copies exactly;
 * reflections, integer translations, rotations by 180 degrees, and by 90 or
 * 270 degrees when h and w are both odd or both even (then pixel centres
 * land on pixel centres), move pixels without changing their values.
 *
 * The draws are a pure function of a key (dpt_rng_key with stream
 * DPT_AUGMENT_STREAM and obs = the observation's position in the global
 * minibatch): uniform value j of the key (dpt_rng_key_uniform) drives
 * draw j = 0, 1, ... in the order reflect_x, reflect_y, rotate, scale,
 * scale_x, scale_y, shear_x, shear_y, translate_x, translate_y (fixed,
 * whichever are on; a reflection happens when its value is < 1/2). So
 * N workers draw what one worker on the whole minibatch draws. */
typedef struct dpt_augment {
    int version;                  /* DPT_AUGMENT_VERSION */
    int reflect_x, reflect_y;     /* 1: random left-right / up-down reflection */
    double rotate[2];             /* degrees, [min, max]; {0, 0}: none */
    double scale[2];              /* both axes; {1, 1}: none */
    double scale_x[2], scale_y[2]; /* per axis, times scale; {1, 1}: none */
    double shear_x[2], shear_y[2]; /* degrees, each in (-90, 90) */
    double translate_x[2], translate_y[2]; /* pixels */
} dpt_augment;

#define DPT_AUGMENT_VERSION 1
#define DPT_AUGMENT_INIT                                                                  \
    {DPT_AUGMENT_VERSION, 0, 0, {0, 0}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0, 0}}

/* The stream of augmentation in dpt_rng_key ("aug\0"). */
#define DPT_AUGMENT_STREAM 0x61756700u

/* Parse an augmentation description into *out (which starts from
 * DPT_AUGMENT_INIT): comma-separated items (spaces around one are ignored),
 * each one of
 *   reflect | reflect-x        random left-right reflection
 *   reflect-y                  random up-down reflection
 *   rotate=A | rotate=MIN:MAX  degrees; A means -A:A
 *   scale=MIN:MAX              both axes, within [0.001, 1000]; also
 *                              scale-x=, scale-y=
 *   shear-x=A | shear-x=MIN:MAX, shear-y=...   degrees, within (-90, 90)
 *   translate=T | translate=MIN:MAX   pixels, both axes; T means -T:T;
 *                              also translate-x=, translate-y=
 * Values lie within [-1e6, 1e6]; ranges need MIN <= MAX; an item may not
 * appear twice, nor scale together with scale-x or scale-y (nor translate
 * with translate-x or translate-y). Empty text or "none" is no
 * augmentation. Errors (DPT_ERR_ARG) name the bad item and what is wrong
 * with it; *out is then unchanged. */
DPT_API dpt_status dpt_augment_parse(const char *text, dpt_augment *out);

/* 1 when a (NULL allowed) transforms nothing: every image is unchanged. */
DPT_API int dpt_augment_is_identity(const dpt_augment *a);

/* Check a description made by hand: version, ranges (min <= max, finite),
 * scales > 0, shears within (-90, 90). DPT_ERR_ARG naming the field. */
DPT_API dpt_status dpt_augment_check(const dpt_augment *a);

/* Transform one observation, float32 [c, h, w], by the draw of `key`
 * (dpt_rng_key(seed, epoch, iteration, DPT_AUGMENT_STREAM, obs)), from in to
 * out (c*h*w floats each, not overlapping). a must pass dpt_augment_check. */
DPT_API void dpt_augment_image(const dpt_augment *a, uint64_t key, const float *in, float *out,
                               int c, int h, int w);

/* ---- minibatch queue (MATLAB minibatchqueue) ------------------------------ */

typedef struct dpt_mbq dpt_mbq;

/* A user preprocessing step, run on each batch after decoding and scaling
 * to [0, 1]: it may change x [n, c, h, w] in place. labels [n]. Runs on the
 * queue's decode threads when prefetch is on (with several, on different
 * batches at once), so it must not touch the caller's data, or state shared
 * between batches, without its own locking. Return DPT_OK, or a failure (set
 * the message with dpt_fail), which next() then returns for that batch. */
typedef dpt_status (*dpt_mbq_preprocess_fn)(float *x, int n, int c, int h, int w,
                                            const int32_t *labels, void *arg);

/* Options of dpt_mbq_new. Start from DPT_MBQ_OPTIONS_INIT. */
typedef struct dpt_mbq_options {
    int version;         /* DPT_MBQ_OPTIONS_VERSION */
    int batch_size;      /* observations per batch (default 128) */
    int channels;        /* output C, 1 or 3; 0 (default): native of obs 0 */
    int height, width;   /* output H, W; 0 (default): native of obs 0 */
    int prefetch;        /* 1 (default): background threads decode ahead
                            (decode_threads below; one thread: up to two
                            batches); 0: next() decodes */
    int drop_partial;    /* 1: discard a last batch smaller than batch_size;
                            0 (default): return it */
    dpt_mbq_preprocess_fn preprocess; /* NULL (default): none */
    void *preprocess_arg;             /* passed to preprocess */
    /* Version 2: random augmentation, done where the batch is decoded (a
     * decode thread with prefetch), before preprocess. NULL (default):
     * none. Observation j of batch b (0-based in the pass) is transformed by
     * dpt_augment_image with the key dpt_rng_key(augment_seed, augment_epoch,
     * augment_iteration + b, DPT_AUGMENT_STREAM, first + j), first =
     * augment_first(b, augment_first_arg) (NULL: 0), so that a worker's
     * queue can draw by the position in the global minibatch. The struct is
     * copied at dpt_mbq_new; the key fields can change between passes with
     * dpt_mbq_set_augment_key. */
    const dpt_augment *augment;
    uint64_t augment_seed;
    long augment_epoch;
    long augment_iteration;           /* key iteration of batch 0 */
    long (*augment_first)(size_t batch, void *arg);
    void *augment_first_arg;
    /* Version 3: decode threads with prefetch (ignored without). Each
     * thread decodes whole batches, batch b into buffer b mod (threads + 1),
     * so at most threads + 1 batches are in memory (one held by the caller)
     * whatever the dataset's size, and the batches are the same, bit for
     * bit, with any number of threads. 0 (default): dpt_mbq_auto_threads(). More
     * than one thread runs preprocess on several threads at once (on
     * different batches). At most DPT_MBQ_MAX_THREADS. */
    int decode_threads;
} dpt_mbq_options;

#define DPT_MBQ_MAX_THREADS 64

/* Versions 1 (without the augment fields) and 2 (without decode_threads)
 * are still accepted. */
#define DPT_MBQ_OPTIONS_VERSION 3
#define DPT_MBQ_OPTIONS_INIT                                                             \
    {DPT_MBQ_OPTIONS_VERSION, 128, 0, 0, 0, 1, 0, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, 0}

/* The decode threads a queue starts for decode_threads 0: half of
 * dpt_cpu_count() (the CPUs this process may run on), at least 1, at most
 * 4: decoding small images keeps up with a training step on fewer cores
 * than the step itself uses. */
DPT_API int dpt_mbq_auto_threads(void);

/* One minibatch, written into buffers owned by the queue: valid until the
 * next call to dpt_mbq_next, dpt_mbq_reset, dpt_mbq_shuffle or
 * dpt_mbq_free on that queue. The caller may modify x and y in place. */
typedef struct dpt_batch {
    int n;                 /* observations in this batch (<= batch_size) */
    dpt_tensor x;          /* view [n, C, H, W], pixels in [0, 1] (then preprocess) */
    dpt_tensor y;          /* view [n, K], one-hot labels, K = n_classes */
    const int32_t *labels; /* [n] class indices */
    const size_t *obs;     /* [n] observation indices in the queue's datastore */
} dpt_batch;

/* A queue over the observations of ds, in ds order until dpt_mbq_shuffle.
 * The queue keeps its own reference to ds's observations, so ds may be
 * freed right after. opt NULL means defaults. Starts the decode threads
 * when prefetch is on. *out is owned by the caller (dpt_mbq_free). */
DPT_API dpt_status dpt_mbq_new(const dpt_datastore *ds, const dpt_mbq_options *opt,
                               dpt_mbq **out);

/* 1 while the current pass has batches left. */
DPT_API int dpt_mbq_has_data(const dpt_mbq *q);

/* The next batch of the current pass into *out (see dpt_batch for how long
 * its buffers live). The last batch may be partial. A batch that fails to
 * decode (or whose preprocess step fails) returns the error with the
 * message naming the file; the queue still moves past that batch.
 * DPT_ERR_ARG when the pass has no data left. */
DPT_API dpt_status dpt_mbq_next(dpt_mbq *q, dpt_batch *out);

/* Start a new pass over the same order. Waits for a batch being decoded in
 * the background to finish (no decoding is lost track of). */
DPT_API void dpt_mbq_reset(dpt_mbq *q);

/* Start a new pass in a new order: the permutation dpt_datastore_shuffle
 * would make with this seed, applied to the queue's original order (so the
 * same seed gives the same order whatever came before). */
DPT_API void dpt_mbq_shuffle(dpt_mbq *q, uint64_t seed);

/* Set the epoch and the iteration of batch 0 in the augmentation key
 * (dpt_mbq_options); they take effect at the next dpt_mbq_reset or
 * dpt_mbq_shuffle (the pass being decoded keeps its key). No effect on a
 * queue without augmentation. */
DPT_API void dpt_mbq_set_augment_key(dpt_mbq *q, long epoch, long iteration);

/* Batches per pass, observations, and the output shape of the queue. */
DPT_API size_t dpt_mbq_n_batches(const dpt_mbq *q);
DPT_API size_t dpt_mbq_n_obs(const dpt_mbq *q);
DPT_API void dpt_mbq_shape(const dpt_mbq *q, int *c, int *h, int *w, int *n_classes);

/* Stop the decode threads (a batch being decoded is finished first) and
 * release everything. NULL does nothing. */
DPT_API void dpt_mbq_free(dpt_mbq *q);

/* ---- sequence folders (class sub-folders of .csv files) ------------------- */

typedef struct dpt_seqstore dpt_seqstore;

/* Bounds on what a sequence folder may hold; anything larger is refused
 * (DPT_ERR_FORMAT naming the file) before it is allocated. */
#define DPT_SEQ_MAX_LINE_BYTES 65536                /* one time step's line */
#define DPT_SEQ_MAX_STEPS 1000000                   /* time steps per file */
#define DPT_SEQ_MAX_FILE_BYTES (256ll << 20)        /* one .csv file */
#define DPT_SEQ_MAX_TOTAL_BYTES (2048ll << 20)      /* all .csv files together */
#define DPT_SEQ_MAX_VALUES (1ll << 28)              /* numbers kept in memory (1 GiB) */

/* Options of dpt_seqstore_open. Start from DPT_SEQ_OPTIONS_INIT. */
typedef struct dpt_seq_options {
    int version;     /* DPT_SEQ_OPTIONS_VERSION */
    long max_length; /* > 0: keep only the first max_length time steps of each
                        file (the rest is still validated); 0 (default): all */
} dpt_seq_options;

#define DPT_SEQ_OPTIONS_VERSION 1
#define DPT_SEQ_OPTIONS_INIT {DPT_SEQ_OPTIONS_VERSION, 0}

/* Open a sequence folder: the direct sub-folders of root are the classes
 * (strcmp order, names starting with '.' ignored), and each class folder's
 * files ending in .csv (case-insensitive) are observations, in strcmp order,
 * classes one after another; other files are ignored, and so are files
 * directly in root. A .csv file holds one time step per line (LF or CRLF),
 * F comma-separated finite decimal numbers per line (spaces around a number
 * are allowed); files may have different numbers of lines. Everything is
 * read into memory here (float32). Errors (DPT_ERR_FORMAT unless said;
 * messages name the file and, for a line, "line N"): root or a folder
 * unreadable (DPT_ERR_IO); no class folder; a class folder without .csv
 * files; a .csv that is not a regular file (DPT_ERR_IO); an empty file; an
 * empty line; a line over DPT_SEQ_MAX_LINE_BYTES; more than
 * DPT_SEQ_MAX_STEPS lines; a file over DPT_SEQ_MAX_FILE_BYTES, files over
 * DPT_SEQ_MAX_TOTAL_BYTES together, or more than DPT_SEQ_MAX_VALUES numbers
 * kept; a row whose width differs from the
 * file's first row (both widths named); a field that is not a finite number
 * (quoted, with unprintable bytes escaped); a file whose width differs from
 * the first file's (both files named). opt NULL means defaults. *out is
 * owned by the caller (dpt_seqstore_free). */
DPT_API dpt_status dpt_seqstore_open(const char *root, const dpt_seq_options *opt,
                                     dpt_seqstore **out);

/* Release a sequence store. NULL does nothing. */
DPT_API void dpt_seqstore_free(dpt_seqstore *s);

/* Per-label random split of a sequence store, by the rule of
 * dpt_datastore_split_each_label (label k's observations permuted with
 * dpt_rng_seed(seed, stream = k); the first round(fraction * count) go to
 * *first, the rest to *second; both keep s's order and all its classes).
 * The outputs are copies, owned by the caller (dpt_seqstore_free); either
 * may hold no observation. fraction in [0, 1], else DPT_ERR_ARG. */
DPT_API dpt_status dpt_seqstore_split_each_label(const dpt_seqstore *s, double fraction,
                                                 uint64_t seed, dpt_seqstore **first,
                                                 dpt_seqstore **second);

/* Number of observations (files). */
DPT_API size_t dpt_seqstore_n_obs(const dpt_seqstore *s);
/* Features per time step (F, the same for every file). */
DPT_API int dpt_seqstore_n_features(const dpt_seqstore *s);
/* Number of classes (class folders). */
DPT_API int dpt_seqstore_n_classes(const dpt_seqstore *s);
/* Name of class k (< n_classes); the pointer lives as long as s. */
DPT_API const char *dpt_seqstore_class_name(const dpt_seqstore *s, int k);
/* Class index of observation i (< n_obs). */
DPT_API int dpt_seqstore_label(const dpt_seqstore *s, size_t i);
/* Path of observation i's file; the pointer lives as long as s. */
DPT_API const char *dpt_seqstore_file(const dpt_seqstore *s, size_t i);
/* Time steps of observation i (after max_length truncation; >= 1). */
DPT_API size_t dpt_seqstore_length(const dpt_seqstore *s, size_t i);
/* The longest observation's time steps. */
DPT_API size_t dpt_seqstore_max_length(const dpt_seqstore *s);

/* Copy observation i into out, float32 [length(i), F] (time step major),
 * out owned by the caller. DPT_ERR_ARG when i >= n_obs. Thread-safe. */
DPT_API dpt_status dpt_seqstore_read(const dpt_seqstore *s, size_t i, float *out);

/* Label the observations of s by class name against names[0..n_classes)
 * (a model's classes), in place: afterwards s has those n_classes classes
 * (copied) and an observation of s's class "cat" has the label j where
 * names[j] is "cat", as dpt_datastore_match_classes does for images. A
 * class of s that is not in names is DPT_ERR_FORMAT naming `what` (the
 * folder) and the class; s is unchanged on any failure. */
DPT_API dpt_status dpt_seqstore_match_classes(dpt_seqstore *s, const char *what, int n_classes,
                                              const char *const *names);

/* Read one .csv sequence file outside a folder (for predicting): its time
 * steps, validated as dpt_seqstore_open validates a file, with the same
 * bounds; max_length > 0 keeps the first max_length steps. *x receives
 * float32 [*n_steps, *n_features] (time step major), owned by the caller
 * (free). Errors as dpt_seqstore_open's for one file, naming path. */
DPT_API dpt_status dpt_seq_load(const char *path, long max_length, size_t *n_steps,
                                int *n_features, float **x);

/* ---- text corpora for character language models ---------------------------- */

typedef struct dpt_text dpt_text;

/* Text files larger than this are refused before they are read. */
#define DPT_TEXT_MAX_BYTES (1024ll << 20)

/* Options of dpt_text_open. Start from DPT_TEXT_OPTIONS_INIT. */
typedef struct dpt_text_options {
    int version;           /* DPT_TEXT_OPTIONS_VERSION */
    double heldout;        /* in [0, 0.5]: the last round(heldout * n)
                              characters become the held-out text (0.1 for
                              the usual 10%); 0 (default): none */
    const dpt_text *vocab; /* NULL (default): the vocabulary is made from the
                              training text; else this text's vocabulary is
                              used (a --test file, a model's vocabulary) */
} dpt_text_options;

#define DPT_TEXT_OPTIONS_VERSION 1
#define DPT_TEXT_OPTIONS_INIT {DPT_TEXT_OPTIONS_VERSION, 0.0, NULL}

/* Read a UTF-8 text file (a leading byte-order mark is dropped) and map its
 * characters (Unicode code points) to vocabulary indices. The training text
 * is the file without its held-out tail. The vocabulary is the sorted set of
 * distinct code points of the training text, unless opt->vocab gives one.
 * *train receives the training text; *heldout (may be NULL when
 * opt->heldout is 0) the held-out tail, with the same vocabulary, or NULL
 * when there is none. Errors name the file: not a regular file or
 * unreadable (DPT_ERR_IO); larger than DPT_TEXT_MAX_BYTES; "empty file";
 * "binary file (a NUL byte at byte offset N)"; "not UTF-8 text (byte 0xNN at
 * byte offset N)"; too short to split; a held-out (or, with opt->vocab, any)
 * character missing from the vocabulary, named escaped with its U+ code,
 * byte offset and line (all DPT_ERR_FORMAT); bad options (DPT_ERR_ARG).
 * Both outputs are owned by the caller (dpt_text_free). */
DPT_API dpt_status dpt_text_open(const char *path, const dpt_text_options *opt, dpt_text **train,
                                 dpt_text **heldout);

/* Release a text. NULL does nothing. */
DPT_API void dpt_text_free(dpt_text *t);

/* Characters (code points) in t. */
DPT_API size_t dpt_text_n_chars(const dpt_text *t);
/* The characters of t as vocabulary indices, [n_chars]; lives as long as t. */
DPT_API const int32_t *dpt_text_indices(const dpt_text *t);
/* Vocabulary size, and the vocabulary: sorted code points [n_vocab]; index j
 * stands for code point vocab[j]. The pointer lives as long as t. */
DPT_API int dpt_text_n_vocab(const dpt_text *t);
DPT_API const uint32_t *dpt_text_vocab(const dpt_text *t);
/* Index of code point cp in t's vocabulary, or -1. */
DPT_API int dpt_text_index_of(const dpt_text *t, uint32_t cp);

/* Map UTF-8 text (s, n bytes; for a --prime) to t's vocabulary indices:
 * out holds at least n entries (one per byte is enough); *n_out receives
 * the characters written. Errors (DPT_ERR_FORMAT) name `what`: not UTF-8
 * (byte offset), or a character missing from the vocabulary (escaped, with
 * its U+ code and byte offset). */
DPT_API dpt_status dpt_text_encode(const dpt_text *t, const char *what, const char *s, size_t n,
                                   int32_t *out, size_t *n_out);

/* A text of no characters with the vocabulary vocab[0..n_vocab) (a model's,
 * for dpt_text_open's vocab option and dpt_text_encode): the code points
 * must be strictly increasing Unicode scalar values from U+0001 to
 * U+10FFFF (no surrogates), 1 <= n_vocab <= DPT_TEXT_MAX_VOCAB; otherwise
 * DPT_ERR_FORMAT naming `what` (the model file) and the entry. *out owned by
 * the caller (dpt_text_free). */
#define DPT_TEXT_MAX_VOCAB (1 << 20)
DPT_API dpt_status dpt_text_from_vocab(const char *what, const uint32_t *vocab, int n_vocab,
                                       dpt_text **out);

/* Parallel streams (stateful training): t is cut into B contiguous streams of
 * L = floor(n_chars / B) characters each (stream b starts at b * L; the last
 * n_chars mod B characters are unused). Chunk k of a stream is the T + 1
 * characters from position k * T of the stream: inputs are the first T,
 * next-character targets the last T. A stream has floor((L - 1) / T)
 * chunks (0 when L < 2), so every target lies inside its own stream. */
DPT_API size_t dpt_text_stream_length(const dpt_text *t, int n_streams);
DPT_API size_t dpt_text_n_chunks(const dpt_text *t, int n_streams, int seq_len);

/* Write chunk k of stream b into out, [seq_len + 1] indices (owned by the
 * caller). DPT_ERR_ARG when n_streams < 1, seq_len < 1, b >= n_streams or
 * k >= n_chunks. Thread-safe. */
DPT_API dpt_status dpt_text_chunk(const dpt_text *t, int n_streams, int seq_len, int b, size_t k,
                                  int32_t *out);

/* The streams worker w of n_workers owns for a whole epoch: *count streams
 * from *first on. Shares are those of dpt_batch_shares (floor(B/N) each,
 * the first B mod N workers one more), so worker w's streams are the
 * observations it holds in the global minibatch. DPT_ERR_ARG when
 * n_streams < 1, n_workers < 1 or w is not in [0, n_workers). */
DPT_API dpt_status dpt_text_stream_share(int n_streams, int n_workers, int w, int *first,
                                         int *count);

/* Chunk k of streams first .. first + count - 1 (of n_streams), split into
 * inputs x [count, seq_len] and next-character targets y [count, seq_len]
 * (row j: stream first + j), both owned by the caller. Errors as
 * dpt_text_chunk, and DPT_ERR_ARG when the streams are not within
 * [0, n_streams). */
DPT_API dpt_status dpt_text_batch(const dpt_text *t, int n_streams, int seq_len, int first,
                                  int count, size_t k, int32_t *x, int32_t *y);

#ifdef __cplusplus
}
#endif
#endif
