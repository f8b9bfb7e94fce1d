/* Streaming an image folder (issue 21, part 3): a folder read from the
 * files by N decode threads gives the batches of the preloaded folder, bit
 * for bit, epoch after epoch, with shuffle, partition and augmentation as
 * dpt_fit draws them, for 1 and 2 workers; DPT_PRELOAD_AUTO keeps a folder
 * in memory only within its budget; a corrupt image met mid-epoch fails
 * that batch naming the file, and freeing the queue then stops its
 * threads (run under ASan for leaks); skip_corrupt drops it in both modes
 * alike. Builds its own JPEG folder in a temporary directory. */
#include "train/train_internal.h" /* fit_global_first */
#include "dptrain/data.h"
#include "testfs.h"
#include "testutil.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <stb_image_write.h>

static char root[4096];

/* Colour JPEGs of a few sizes (the queue resizes them to 8x8), 3 classes,
 * 41 images: batches of 6 leave a partial last batch. */
static void make_folder(const char *dir, int n)
{
    mkdir(dir, 0700);
    for (int k = 0; k < 3; k++) {
        char cdir[4200];
        snprintf(cdir, sizeof cdir, "%s/class%d", dir, k);
        mkdir(cdir, 0700);
    }
    for (int i = 0; i < n; i++) {
        int h = 8 + i % 3, w = 8 + (i * 5) % 4;
        unsigned char pix[11 * 11 * 3];
        for (int j = 0; j < h * w * 3; j++)
            pix[j] = (unsigned char)((i * 53 + j * 7 + (j % 3) * 90) % 256);
        char p[4300];
        snprintf(p, sizeof p, "%s/class%d/img%03d.jpg", dir, i % 3, i);
        if (!stbi_write_jpg(p, w, h, 3, pix, 90)) {
            fprintf(stderr, "cannot write %s\n", p);
            exit(1);
        }
    }
}

static dpt_datastore *open_folder(const char *dir, int preload, int skip_corrupt)
{
    dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
    o.preload = preload;
    o.skip_corrupt = skip_corrupt;
    dpt_datastore *ds = NULL;
    dpt_status st = dpt_datastore_open_folder(dir, &o, &ds);
    CHECK_MSG(st == DPT_OK, "open %s (preload %d): %s", dir, preload, dpt_last_error());
    return ds;
}

/* dpt_fit's position callback, for a worker of a global minibatch. */
typedef struct gpos {
    size_t n_obs;
    int n_workers, rank;
    const int *share;
} gpos;

static long global_first(size_t batch, void *arg)
{
    const gpos *g = arg;
    return fit_global_first(g->n_obs, g->n_workers, g->share, g->rank, batch);
}

#define BATCH 6
#define EPOCHS 2

/* Everything worker `rank` of n_workers gets in EPOCHS epochs, in order, as
 * dpt_fit feeds it: each epoch shuffled by its seed, partitioned, queued
 * with the augmentation key of the epoch and iteration. Appends every
 * batch's pixels, labels and observation files into the outputs; returns
 * the number of batches, or -1 on an error. */
typedef struct record {
    float *x;          /* all pixels, batch after batch */
    int32_t *labels;
    const char **files;
    size_t n;          /* observations recorded */
    size_t cap;
} record;

static long run_epochs(const dpt_datastore *ds, int n_workers, int rank, int prefetch, int threads,
                       const dpt_augment *aug, record *rec)
{
    const int C = 3, H = 8, W = 8;
    const size_t chw = (size_t)C * H * W;
    int share[2];
    for (int j = 0; j < n_workers; j++)
        share[j] = BATCH / n_workers + (j < BATCH % n_workers ? 1 : 0);
    gpos g = {dpt_datastore_n_obs(ds), n_workers, rank, share};
    long batches = 0, iteration = 0;
    for (int epoch = 1; epoch <= EPOCHS; epoch++) {
        dpt_datastore *sh = NULL, *part = NULL;
        dpt_mbq *q = NULL;
        dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
        o.batch_size = share[rank];
        o.channels = C, o.height = H, o.width = W;
        o.prefetch = prefetch;
        o.decode_threads = threads;
        o.augment = aug;
        o.augment_seed = 5;
        o.augment_epoch = epoch;
        o.augment_iteration = iteration + 1;
        o.augment_first = global_first;
        o.augment_first_arg = &g;
        if (dpt_datastore_shuffle(ds, 100 + (uint64_t)epoch, &sh) ||
            dpt_datastore_partition(sh, n_workers, rank, &part) || dpt_mbq_new(part, &o, &q)) {
            fprintf(stderr, "setup: %s\n", dpt_last_error());
            dpt_datastore_free(sh);
            dpt_datastore_free(part);
            return -1;
        }
        while (dpt_mbq_has_data(q)) {
            dpt_batch b;
            if (dpt_mbq_next(q, &b) != DPT_OK) {
                fprintf(stderr, "next: %s\n", dpt_last_error());
                batches = -1;
                break;
            }
            if (rec->n + (size_t)b.n > rec->cap) {
                rec->cap = 2 * (rec->n + (size_t)b.n);
                rec->x = realloc(rec->x, rec->cap * chw * sizeof *rec->x);
                rec->labels = realloc(rec->labels, rec->cap * sizeof *rec->labels);
                rec->files = realloc(rec->files, rec->cap * sizeof *rec->files);
                if (!rec->x || !rec->labels || !rec->files)
                    exit(1);
            }
            memcpy(rec->x + rec->n * chw, b.x.data, (size_t)b.n * chw * sizeof(float));
            memcpy(rec->labels + rec->n, b.labels, (size_t)b.n * sizeof *b.labels);
            for (int j = 0; j < b.n; j++)
                rec->files[rec->n + (size_t)j] = dpt_datastore_file(part, b.obs[j]);
            rec->n += (size_t)b.n;
            batches++;
        }
        /* fit's iteration count: the worker with the fewest batches. */
        iteration += (long)(dpt_datastore_n_obs(ds) / BATCH);
        dpt_mbq_free(q);
        dpt_datastore_free(part);
        dpt_datastore_free(sh);
        if (batches < 0)
            return -1;
    }
    return batches;
}

static void record_free(record *r)
{
    free(r->x);
    free(r->labels);
    free(r->files);
    *r = (record){0};
}

/* Same observations, same files, same pixel bits. */
static int same_record(const record *a, const record *b)
{
    if (a->n != b->n || !a->n)
        return 0;
    if (memcmp(a->x, b->x, a->n * 3 * 8 * 8 * sizeof(float)) ||
        memcmp(a->labels, b->labels, a->n * sizeof *a->labels))
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->files[i], b->files[i]))
            return 0;
    return 1;
}

static void test_identical(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/same", root);
    make_folder(dir, 41);
    dpt_datastore *mem = open_folder(dir, 1, 0), *stream = open_folder(dir, 0, 0);
    if (!mem || !stream)
        goto done;
    CHECK(dpt_datastore_is_preloaded(mem) && !dpt_datastore_is_preloaded(stream));
    dpt_augment aug = DPT_AUGMENT_INIT;
    CHECK(dpt_augment_parse("reflect,rotate=15,translate=1", &aug) == DPT_OK);
    for (int a = 0; a < 2; a++) {
        for (int n_workers = 1; n_workers <= 2; n_workers++) {
            for (int rank = 0; rank < n_workers; rank++) {
                /* Reference: preloaded, decoded in the caller's thread. */
                record ref = {0};
                long nb = run_epochs(mem, n_workers, rank, 0, 0, a ? &aug : NULL, &ref);
                CHECK(nb > 0);
                for (int threads = 1; threads <= 3; threads++) {
                    for (int preload = 0; preload < 2; preload++) {
                        record got = {0};
                        long gb = run_epochs(preload ? mem : stream, n_workers, rank, 1, threads,
                                             a ? &aug : NULL, &got);
                        CHECK_MSG(gb == nb && same_record(&ref, &got),
                                  "%s, %d decode threads, augment %d, worker %d of %d: batches differ "
                                  "from the preloaded ones", preload ? "preloaded" : "streaming",
                                  threads, a, rank, n_workers);
                        record_free(&got);
                    }
                }
                if (n_workers == 1) /* 41 images, 2 epochs: every one seen twice */
                    CHECK(ref.n == 2 * 41);
                record_free(&ref);
            }
        }
    }
    /* The augmentation really changed the pixels (else the check above
     * would prove nothing about its keys). */
    record plain = {0}, augd = {0};
    run_epochs(stream, 1, 0, 1, 2, NULL, &plain);
    run_epochs(stream, 1, 0, 1, 2, &aug, &augd);
    CHECK(plain.n == augd.n && plain.n && memcmp(plain.x, augd.x, plain.n * 192 * sizeof(float)) != 0);
    record_free(&plain);
    record_free(&augd);
done:
    dpt_datastore_free(mem);
    dpt_datastore_free(stream);
}

/* DPT_PRELOAD_AUTO: memory within the budget, streaming over it; the
 * decoded size is reported either way. */
static void test_auto(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/same", root); /* made by test_identical */
    uint64_t exact_bytes = 0;
    dpt_datastore *mem = open_folder(dir, 1, 0);
    if (mem) {
        int exact = 0;
        exact_bytes = dpt_datastore_decoded_bytes(mem, &exact);
        CHECK(exact == 1);
        /* 41 images of (8..10) x (8..11) x 3 */
        CHECK(exact_bytes > 41 * 8 * 8 * 3 && exact_bytes < 41 * 10 * 11 * 3);
    }
    for (int fits = 0; fits < 2; fits++) {
        dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
        o.preload = DPT_PRELOAD_AUTO;
        o.cache_budget_bytes = fits ? exact_bytes : exact_bytes / 2;
        dpt_datastore *ds = NULL;
        CHECK(dpt_datastore_open_folder(dir, &o, &ds) == DPT_OK);
        if (!ds)
            continue;
        int exact = -1;
        uint64_t b = dpt_datastore_decoded_bytes(ds, &exact);
        CHECK_MSG(dpt_datastore_is_preloaded(ds) == fits, "budget %llu, %llu bytes: preloaded %d",
                  (unsigned long long)o.cache_budget_bytes, (unsigned long long)exact_bytes,
                  dpt_datastore_is_preloaded(ds));
        if (fits)
            CHECK(exact == 1 && b == exact_bytes);
        else /* estimated from the headers: within the range of sizes */
            CHECK(exact == 0 && b > exact_bytes / 2 && b < 2 * exact_bytes);
        dpt_datastore_free(ds);
    }
    /* A version-1 options struct (no budget) still opens. */
    dpt_folder_options v1 = DPT_FOLDER_OPTIONS_INIT;
    v1.version = 1;
    dpt_datastore *ds = NULL;
    CHECK(dpt_datastore_open_folder(dir, &v1, &ds) == DPT_OK && !dpt_datastore_is_preloaded(ds));
    dpt_datastore_free(ds);
    dpt_folder_options bad = DPT_FOLDER_OPTIONS_INIT;
    bad.preload = 3;
    CHECK(dpt_datastore_open_folder(dir, &bad, &ds) == DPT_ERR_ARG && strstr(dpt_last_error(), dir));
    dpt_mbq_options mo = DPT_MBQ_OPTIONS_INIT;
    mo.decode_threads = DPT_MBQ_MAX_THREADS + 1;
    dpt_mbq *q = NULL;
    CHECK(mem && dpt_mbq_new(mem, &mo, &q) == DPT_ERR_ARG && strstr(dpt_last_error(), "decode threads"));
    CHECK(dpt_mbq_auto_threads() >= 1 && dpt_mbq_auto_threads() <= 4);
    dpt_datastore_free(mem);
}

/* A corrupt file in the middle of the folder: preload refuses the folder;
 * streaming opens it and fails the batch that holds it, naming it, with the
 * batches before it intact; skip_corrupt drops it in both modes alike. */
static void test_corrupt(void)
{
    char dir[4200], bad[4300];
    snprintf(dir, sizeof dir, "%s/corrupt", root);
    make_folder(dir, 41);
    snprintf(bad, sizeof bad, "%s/class1/img022.jpg", dir); /* 22 % 3 == 1 */
    FILE *f = fopen(bad, "wb");
    CHECK(f && fputs("\xff\xd8\xff\xe0 not a jpeg after all", f) >= 0);
    if (f)
        fclose(f);

    dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
    o.preload = 1;
    dpt_datastore *ds = NULL;
    CHECK(dpt_datastore_open_folder(dir, &o, &ds) == DPT_ERR_FORMAT && strstr(dpt_last_error(), bad));
    dpt_datastore_free(ds);

    dpt_datastore *stream = open_folder(dir, 0, 0);
    for (int threads = 1; stream && threads <= 3; threads++) {
        dpt_mbq_options mo = DPT_MBQ_OPTIONS_INIT;
        mo.batch_size = 4;
        mo.channels = 3, mo.height = mo.width = 8;
        mo.decode_threads = threads;
        dpt_mbq *q = NULL;
        CHECK(dpt_mbq_new(stream, &mo, &q) == DPT_OK);
        if (!q)
            continue;
        /* Folder order: class0 (14 files), class1 (14, img022 the 8th). */
        size_t at = 0;
        int failed_at = -1;
        for (int b = 0; dpt_mbq_has_data(q); b++) {
            dpt_batch bt;
            dpt_status st = dpt_mbq_next(q, &bt);
            if (st) {
                CHECK_MSG(st == DPT_ERR_FORMAT && strstr(dpt_last_error(), bad),
                          "status %d, message %s", (int)st, dpt_last_error());
                failed_at = b;
                break; /* what a training loop does: stop and free the queue */
            }
            at += (size_t)bt.n;
        }
        CHECK_MSG(failed_at == (14 + 7) / 4 && at == (size_t)failed_at * 4, "failed at batch %d",
                  failed_at);
        dpt_mbq_free(q); /* joins the threads mid-pass (ASan: nothing leaked) */
    }

    /* skip_corrupt: found at open in both modes, the same batches. */
    dpt_datastore *mem = open_folder(dir, 1, 1), *skip = open_folder(dir, 0, 1);
    if (mem && skip) {
        CHECK(dpt_datastore_n_corrupt(mem) == 1 && dpt_datastore_n_corrupt(skip) == 1);
        CHECK(dpt_datastore_n_obs(skip) == 40 && !dpt_datastore_is_preloaded(skip));
        CHECK(strcmp(dpt_datastore_corrupt_file(skip, 0), bad) == 0);
        record a = {0}, b = {0};
        CHECK(run_epochs(mem, 1, 0, 0, 0, NULL, &a) > 0 && run_epochs(skip, 1, 0, 1, 2, NULL, &b) > 0);
        CHECK_MSG(same_record(&a, &b), "skip_corrupt: streaming and preloaded batches differ");
        record_free(&a);
        record_free(&b);
    }
    dpt_datastore_free(mem);
    dpt_datastore_free(skip);
    dpt_datastore_free(stream);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/dpt_test_stream_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        fprintf(stderr, "cannot make a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    test_identical();
    test_auto();
    test_corrupt();
    tu_remove_tree(root);
    printf("test_stream: %s\n", tu_exit() ? "FAILED" : "ok");
    return tu_exit();
}
