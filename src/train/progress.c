/* The progress queue: workers push records into a bounded ring; one client
 * thread pops them and runs the callback outside the lock, so a slow
 * callback never holds up a worker. */
#include "dptrain/train.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dpt_progress_queue {
    pthread_mutex_t mu;
    pthread_cond_t nonempty;
    pthread_t client;
    dpt_progress *ring;
    size_t cap, head, count; /* records ring[head .. head+count) */
    size_t coalesced;
    int stopping;
    int polled; /* 1: no client thread; the owner takes records with poll */
    dpt_progress_fn fn;
    void *arg;
};

static void *client_main(void *arg)
{
    dpt_progress_queue *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->count == 0 && !q->stopping)
            pthread_cond_wait(&q->nonempty, &q->mu);
        if (q->count == 0)
            break;
        dpt_progress rec = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_mutex_unlock(&q->mu);
        q->fn(&rec, q->arg);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* The ring and its lock, without a client thread. */
static dpt_status queue_alloc(size_t capacity, dpt_progress_queue **out)
{
    *out = NULL;
    dpt_progress_queue *q = calloc(1, sizeof *q);
    if (!q)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    q->cap = capacity ? capacity : 1024;
    q->ring = calloc(q->cap, sizeof *q->ring);
    if (!q->ring) {
        free(q);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->nonempty, NULL);
    *out = q;
    return DPT_OK;
}

dpt_status dpt_progress_queue_new(size_t capacity, dpt_progress_fn fn, void *arg,
                                  dpt_progress_queue **out)
{
    *out = NULL;
    if (!fn)
        return dpt_fail(DPT_ERR_ARG, "progress queue: no callback");
    dpt_progress_queue *q;
    dpt_status s = queue_alloc(capacity, &q);
    if (s != DPT_OK)
        return s;
    q->fn = fn, q->arg = arg;
    if (pthread_create(&q->client, NULL, client_main, q) != 0) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->nonempty);
        free(q->ring);
        free(q);
        return dpt_fail(DPT_ERR_NOMEM, "progress queue: cannot start the client thread");
    }
    *out = q;
    return DPT_OK;
}

/* Double the ring, keeping order: only for end-of-epoch records, which are
 * rare, so a full queue of them means the callback is far behind. */
static int grow(dpt_progress_queue *q)
{
    dpt_progress *r = calloc(2 * q->cap, sizeof *r);
    if (!r)
        return -1;
    for (size_t i = 0; i < q->count; i++)
        r[i] = q->ring[(q->head + i) % q->cap];
    free(q->ring);
    q->ring = r, q->head = 0, q->cap *= 2;
    return 0;
}

void dpt_progress_send(dpt_progress_queue *q, const dpt_progress *p)
{
    pthread_mutex_lock(&q->mu);
    dpt_progress rec = *p;
    if (q->count == q->cap) {
        size_t tail = (q->head + q->count - 1) % q->cap;
        if (!rec.end_of_epoch && !q->ring[tail].end_of_epoch) {
            /* Coalesce: the newer ordinary record replaces the newest one. */
            rec.n_coalesced += q->ring[tail].n_coalesced + 1;
            q->ring[tail] = rec;
            q->coalesced++;
            pthread_mutex_unlock(&q->mu);
            return;
        }
        if (grow(q) != 0) { /* out of memory: drop an ordinary record, count it */
            q->coalesced++;
            pthread_mutex_unlock(&q->mu);
            return;
        }
    }
    q->ring[(q->head + q->count) % q->cap] = rec;
    q->count++;
    pthread_cond_signal(&q->nonempty);
    pthread_mutex_unlock(&q->mu);
}

size_t dpt_progress_coalesced(const dpt_progress_queue *q)
{
    pthread_mutex_lock((pthread_mutex_t *)&q->mu);
    size_t n = q->coalesced;
    pthread_mutex_unlock((pthread_mutex_t *)&q->mu);
    return n;
}

dpt_status dpt_progress_queue_new_polled(size_t capacity, dpt_progress_queue **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "progress queue: NULL argument");
    dpt_status s = queue_alloc(capacity, out);
    if (s == DPT_OK)
        (*out)->polled = 1;
    return s;
}

int dpt_progress_queue_poll(dpt_progress_queue *q, dpt_progress *out, long timeout_ms)
{
    if (!q || !out || !q->polled)
        return 0;
    pthread_mutex_lock(&q->mu);
    if (q->count == 0 && timeout_ms > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L)
            until.tv_sec++, until.tv_nsec -= 1000000000L;
        /* A spurious wake-up just ends the wait early: the caller polls again. */
        while (q->count == 0 && pthread_cond_timedwait(&q->nonempty, &q->mu, &until) == 0)
            ;
    }
    int got = q->count > 0;
    if (got) {
        *out = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
    pthread_mutex_unlock(&q->mu);
    return got;
}

void dpt_progress_forward(const dpt_progress *p, void *queue)
{
    if (queue && p)
        dpt_progress_send(queue, p);
}

void dpt_progress_queue_free(dpt_progress_queue *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_signal(&q->nonempty);
    pthread_mutex_unlock(&q->mu);
    if (!q->polled)
        pthread_join(q->client, NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->nonempty);
    free(q->ring);
    free(q);
}
