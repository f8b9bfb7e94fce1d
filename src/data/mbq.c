/* Minibatch queue with background prefetch.
 *
 * Batch b of a pass holds order[b*B .. min((b+1)*B, N)). With prefetch, T
 * decode threads share T + 1 slots: the next batch to start, b, goes into
 * slot b % (T + 1) as soon as that slot is free, and whichever thread is
 * idle takes it, so up to T batches are decoded at once and memory stays
 * at T + 1 batches whatever the dataset's size (streaming a folder that is
 * not preloaded). Slots move FREE -> FILLING (a thread) -> READY -> HELD
 * (caller) -> FREE (caller's next call). The caller and the threads hand
 * slots over under one mutex with two condition variables; nobody spins.
 * A batch's contents depend only on b, the order and the augmentation key,
 * never on which thread fills it; without prefetch the caller fills slot 0
 * itself with the same function, so the contents are the same every way. */
#include "dptrain/data.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD };

typedef struct slot {
    float *x;          /* [B, C, H, W] */
    float *y;          /* [B, K] */
    int32_t *labels;   /* [B] */
    size_t *obs;       /* [B] */
    float *scratch;    /* [C, H, W] one augmented image (NULL: no augmentation) */
    int n;             /* observations filled */
    size_t batch;      /* which batch of the pass it holds (READY/HELD) */
    int state;         /* enum slot_state */
    dpt_status st;     /* result of filling it */
    char err[1024];    /* message when st != DPT_OK */
} slot;

struct dpt_mbq {
    dpt_datastore *ds; /* the queue's own copy of the caller's datastore */
    dpt_mbq_options opt;
    int C, H, W, K;
    size_t n_obs, n_batches;
    size_t *order;     /* [n_obs] this pass's order (indices into ds) */
    uint32_t *perm;    /* [n_obs] scratch for shuffles */
    slot *slots;       /* [n_slots] */
    int n_slots;       /* n_threads + 1 with prefetch, 1 without */
    size_t consume;    /* next batch the caller gets */
    int held;          /* slot the caller holds, or -1 */
    dpt_augment aug;   /* copy of opt.augment */
    int augment;       /* 1: aug transforms something */
    long aug_epoch, aug_iteration;  /* this pass's key (changes only in restart) */

    /* Shared with the worker; guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t work; /* worker waits: a slot became free, pause ended, quit */
    pthread_cond_t done; /* caller waits: a slot became READY or stopped FILLING */
    pthread_t *threads;  /* [n_threads] */
    int n_threads;       /* decode threads wanted (0 without prefetch) */
    int have_thread;     /* threads started (joined by release) */
    size_t produce;      /* next batch a thread fills */
    int paused;          /* 1: the worker must not start a batch */
    int quit;
    long next_epoch, next_iteration; /* dpt_mbq_set_augment_key, for the next pass */
};

/* Decode batch b into s. Runs on the worker thread (prefetch) or the
 * caller's; reads only q's fields that change while no slot is FILLING. */
static void fill(dpt_mbq *q, size_t b, slot *s)
{
    size_t B = (size_t)q->opt.batch_size;
    size_t start = b * B, end = start + B < q->n_obs ? start + B : q->n_obs;
    int n = (int)(end - start);
    size_t chw = (size_t)q->C * (size_t)q->H * (size_t)q->W;
    s->n = n;
    s->st = DPT_OK;
    s->err[0] = '\0';
    memset(s->y, 0, (size_t)n * (size_t)q->K * sizeof *s->y);
    dpt_status st = DPT_OK;
    for (int j = 0; j < n && !st; j++) {
        size_t o = q->order[start + (size_t)j];
        int label = dpt_datastore_label(q->ds, o);
        s->obs[j] = o;
        s->labels[j] = label;
        s->y[(size_t)j * (size_t)q->K + (size_t)label] = 1.0f;
        st = dpt_datastore_read(q->ds, o, q->C, q->H, q->W, s->x + (size_t)j * chw);
    }
    if (!st && q->augment) {
        /* Keyed by the position in the global minibatch, not in this
         * queue: a worker's share draws what one worker on all would. */
        long first = q->opt.augment_first ? q->opt.augment_first(b, q->opt.augment_first_arg) : 0;
        for (int j = 0; j < n; j++) {
            float *x = s->x + (size_t)j * chw;
            uint64_t key = dpt_rng_key(q->opt.augment_seed, (uint64_t)q->aug_epoch,
                                       (uint64_t)(q->aug_iteration + (long)b), DPT_AUGMENT_STREAM,
                                       (uint64_t)(first + j));
            dpt_augment_image(&q->aug, key, x, s->scratch, q->C, q->H, q->W);
            memcpy(x, s->scratch, chw * sizeof *x);
        }
    }
    if (!st && q->opt.preprocess) {
        dpt_clear_error();
        st = q->opt.preprocess(s->x, n, q->C, q->H, q->W, s->labels, q->opt.preprocess_arg);
        if (st && !dpt_last_error()[0])
            dpt_fail(st, "minibatch queue: preprocess step failed on batch %zu (%s)", b,
                     dpt_status_str(st));
    }
    if (st) {
        s->st = st;
        /* The message lives in this thread's last-error buffer; keep a copy
         * for the caller's thread. */
        strncpy(s->err, dpt_last_error(), sizeof s->err - 1);
        s->err[sizeof s->err - 1] = '\0';
    }
}

static int worker_can_start(const dpt_mbq *q)
{
    return !q->paused && q->produce < q->n_batches &&
           q->slots[q->produce % (size_t)q->n_slots].state == SLOT_FREE;
}

static void *worker_main(void *arg)
{
    dpt_mbq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->quit && !worker_can_start(q))
            pthread_cond_wait(&q->work, &q->mu);
        if (q->quit)
            break;
        size_t b = q->produce++;
        slot *s = &q->slots[b % (size_t)q->n_slots];
        s->state = SLOT_FILLING;
        pthread_mutex_unlock(&q->mu);
        fill(q, b, s);
        pthread_mutex_lock(&q->mu);
        s->batch = b;
        s->state = SLOT_READY;
        pthread_cond_broadcast(&q->done);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void free_slots(dpt_mbq *q)
{
    for (int i = 0; q->slots && i < q->n_slots; i++) {
        dpt_free(q->slots[i].x);
        dpt_free(q->slots[i].y);
        free(q->slots[i].labels);
        free(q->slots[i].obs);
        dpt_free(q->slots[i].scratch);
    }
    free(q->slots);
}

static void release(dpt_mbq *q)
{
    if (q->have_thread) {
        pthread_mutex_lock(&q->mu);
        q->quit = 1;
        pthread_cond_broadcast(&q->work);
        pthread_mutex_unlock(&q->mu);
        for (int i = 0; i < q->have_thread; i++)
            pthread_join(q->threads[i], NULL);
    }
    free(q->threads);
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->done);
    pthread_mutex_destroy(&q->mu);
    free_slots(q);
    free(q->perm);
    free(q->order);
    dpt_datastore_free(q->ds);
    free(q);
}

dpt_status dpt_mbq_new(const dpt_datastore *ds, const dpt_mbq_options *opt, dpt_mbq **out)
{
    if (!(ds && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_mbq_new: NULL argument");
    *out = NULL;
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    if (opt) {
        if (opt->version < 1 || opt->version > DPT_MBQ_OPTIONS_VERSION)
            return dpt_fail(DPT_ERR_ARG, "minibatch queue: options version %d (this library knows 1 "
                            "to %d)", opt->version, DPT_MBQ_OPTIONS_VERSION);
        /* An older caller's struct ends before the fields of later versions. */
        memcpy(&o, opt, opt->version == 1   ? offsetof(dpt_mbq_options, augment)
                        : opt->version == 2 ? offsetof(dpt_mbq_options, decode_threads)
                                            : sizeof o);
    }
    if (o.decode_threads < 0 || o.decode_threads > DPT_MBQ_MAX_THREADS)
        return dpt_fail(DPT_ERR_ARG, "minibatch queue: %d decode threads (0 for automatic, at most %d)",
                        o.decode_threads, DPT_MBQ_MAX_THREADS);
    if (o.augment) {
        dpt_status as = dpt_augment_check(o.augment);
        if (as)
            return as;
    }
    if (o.batch_size < 1)
        return dpt_fail(DPT_ERR_ARG, "minibatch queue: batch size %d (must be >= 1)", o.batch_size);
    if (o.channels != 0 && o.channels != 1 && o.channels != 3)
        return dpt_fail(DPT_ERR_ARG, "minibatch queue: %d channels (1 or 3)", o.channels);
    if (o.height < 0 || o.width < 0)
        return dpt_fail(DPT_ERR_ARG, "minibatch queue: output size %dx%d", o.height, o.width);
    size_t n = dpt_datastore_n_obs(ds);
    if ((!o.channels || !o.height || !o.width)) {
        if (!n)
            return dpt_fail(DPT_ERR_ARG, "minibatch queue: empty datastore and no output size given");
        int h, w, c;
        dpt_status st = dpt_datastore_image_size(ds, 0, &h, &w, &c);
        if (st)
            return st;
        if (!o.channels)
            o.channels = c >= 3 ? 3 : 1;
        if (!o.height)
            o.height = h;
        if (!o.width)
            o.width = w;
    }

    dpt_mbq *q = calloc(1, sizeof *q);
    if (!q)
        return dpt_fail(DPT_ERR_NOMEM, "minibatch queue: out of memory");
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->work, NULL);
    pthread_cond_init(&q->done, NULL);
    q->opt = o;
    q->C = o.channels;
    q->H = o.height;
    q->W = o.width;
    q->K = dpt_datastore_n_classes(ds);
    q->n_obs = n;
    size_t B = (size_t)o.batch_size;
    q->n_batches = o.drop_partial ? n / B : (n + B - 1) / B;
    q->n_threads = o.prefetch ? (o.decode_threads ? o.decode_threads : dpt_mbq_auto_threads()) : 0;
    q->n_slots = q->n_threads + 1;
    q->held = -1;
    q->augment = o.augment && !dpt_augment_is_identity(o.augment);
    if (q->augment)
        q->aug = *o.augment;
    q->aug_epoch = q->next_epoch = o.augment_epoch;
    q->aug_iteration = q->next_iteration = o.augment_iteration;
    q->order = malloc((n ? n : 1) * sizeof *q->order);
    q->perm = malloc((n ? n : 1) * sizeof *q->perm);
    dpt_status st = DPT_OK;
    q->slots = calloc((size_t)q->n_slots, sizeof *q->slots);
    q->threads = calloc(q->n_threads ? (size_t)q->n_threads : 1, sizeof *q->threads);
    if (!q->order || !q->perm || !q->slots || !q->threads) {
        st = dpt_fail(DPT_ERR_NOMEM, "minibatch queue: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        q->order[i] = i;
    /* The queue's own datastore: the same observations, so indices into it
     * are 0..n-1 and the caller may free ds. */
    if ((st = dpt_datastore_subset(ds, q->order, n, &q->ds)))
        goto fail;
    size_t chw = (size_t)q->C * (size_t)q->H * (size_t)q->W;
    for (int i = 0; i < q->n_slots; i++) {
        slot *s = &q->slots[i];
        s->x = dpt_alloc(B * chw * sizeof *s->x);
        s->y = dpt_alloc(B * (size_t)(q->K ? q->K : 1) * sizeof *s->y);
        s->labels = malloc(B * sizeof *s->labels);
        s->obs = malloc(B * sizeof *s->obs);
        s->scratch = q->augment ? dpt_alloc(chw * sizeof *s->scratch) : NULL;
        if (!s->x || !s->y || !s->labels || !s->obs || (q->augment && !s->scratch)) {
            st = dpt_fail(DPT_ERR_NOMEM, "minibatch queue: cannot allocate batches of %zu x %dx%dx%d", B, q->C,
                          q->H, q->W);
            goto fail;
        }
    }
    for (int i = 0; i < q->n_threads; i++) {
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0) {
            st = dpt_fail(DPT_ERR_NOMEM, "minibatch queue: cannot start decode thread %d of %d", i + 1,
                          q->n_threads);
            goto fail; /* release stops and joins the ones started */
        }
        q->have_thread = i + 1;
    }
    *out = q;
    return DPT_OK;
fail:
    release(q);
    return st;
}

int dpt_mbq_auto_threads(void)
{
    int n = dpt_cpu_count() / 2;
    return n < 1 ? 1 : n > 4 ? 4 : n;
}

int dpt_mbq_has_data(const dpt_mbq *q) { return q->consume < q->n_batches; }

size_t dpt_mbq_n_batches(const dpt_mbq *q) { return q->n_batches; }

size_t dpt_mbq_n_obs(const dpt_mbq *q) { return q->n_obs; }

void dpt_mbq_shape(const dpt_mbq *q, int *c, int *h, int *w, int *n_classes)
{
    if (c)
        *c = q->C;
    if (h)
        *h = q->H;
    if (w)
        *w = q->W;
    if (n_classes)
        *n_classes = q->K;
}

dpt_status dpt_mbq_next(dpt_mbq *q, dpt_batch *out)
{
    if (!(q && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_mbq_next: NULL argument");
    memset(out, 0, sizeof *out);
    if (q->consume >= q->n_batches)
        return dpt_fail(DPT_ERR_ARG, "minibatch queue: no data left in this pass (%zu batches); call reset",
                        q->n_batches);
    size_t b = q->consume++;
    slot *s;
    if (q->have_thread) {
        pthread_mutex_lock(&q->mu);
        if (q->held >= 0) {
            q->slots[q->held].state = SLOT_FREE;
            q->held = -1;
            pthread_cond_broadcast(&q->work);
        }
        s = &q->slots[b % (size_t)q->n_slots];
        while (!(s->state == SLOT_READY && s->batch == b))
            pthread_cond_wait(&q->done, &q->mu);
        s->state = SLOT_HELD;
        q->held = (int)(b % (size_t)q->n_slots);
        pthread_mutex_unlock(&q->mu);
    } else {
        s = &q->slots[0];
        fill(q, b, s);
    }
    if (s->st)
        return dpt_fail(s->st, "%s", s->err);
    int xs[4] = {s->n, q->C, q->H, q->W}, ys[2] = {s->n, q->K};
    out->n = s->n;
    out->x = dpt_tensor_view(s->x, 4, xs);
    out->y = dpt_tensor_view(s->y, 2, ys);
    out->labels = s->labels;
    out->obs = s->obs;
    return DPT_OK;
}

static int any_filling(const dpt_mbq *q)
{
    for (int i = 0; i < q->n_slots; i++)
        if (q->slots[i].state == SLOT_FILLING)
            return 1;
    return 0;
}

/* Stop the worker between batches, optionally shuffle the order (from the
 * original order, by seed), and restart the pass from batch 0. */
static void restart(dpt_mbq *q, int shuffle, uint64_t seed)
{
    if (q->have_thread) {
        pthread_mutex_lock(&q->mu);
        q->paused = 1;
        while (any_filling(q))
            pthread_cond_wait(&q->done, &q->mu);
    }
    /* No batch is being filled now, so order and key may change. */
    q->aug_epoch = q->next_epoch;
    q->aug_iteration = q->next_iteration;
    if (shuffle) {
        /* The permutation dpt_datastore_shuffle(seed) makes: Fisher-Yates
         * on uint32 positions, stream 0. */
        for (size_t i = 0; i < q->n_obs; i++)
            q->perm[i] = (uint32_t)i;
        dpt_rng r;
        dpt_rng_seed(&r, seed, 0);
        dpt_rng_shuffle(&r, q->perm, q->n_obs);
        for (size_t i = 0; i < q->n_obs; i++)
            q->order[i] = q->perm[i];
    }
    for (int i = 0; i < q->n_slots; i++)
        q->slots[i].state = SLOT_FREE;
    q->held = -1;
    q->consume = 0;
    if (q->have_thread) {
        q->produce = 0;
        q->paused = 0;
        pthread_cond_broadcast(&q->work);
        pthread_mutex_unlock(&q->mu);
    }
}

void dpt_mbq_reset(dpt_mbq *q) { restart(q, 0, 0); }

void dpt_mbq_set_augment_key(dpt_mbq *q, long epoch, long iteration)
{
    /* Read only by restart, which holds the mutex too. */
    if (q->have_thread)
        pthread_mutex_lock(&q->mu);
    q->next_epoch = epoch;
    q->next_iteration = iteration;
    if (q->have_thread)
        pthread_mutex_unlock(&q->mu);
}

void dpt_mbq_shuffle(dpt_mbq *q, uint64_t seed) { restart(q, 1, seed); }

void dpt_mbq_free(dpt_mbq *q)
{
    if (q)
        release(q);
}
