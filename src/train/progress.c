/* The progress queue: workers push records into a bounded ring; one client
 * thread pops them and runs the callback outside the lock, so a slow
 * callback never holds up a worker. */
#include "dptrain/train.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct dpt_progress_queue {
    pthread_mutex_t mu;
    pthread_cond_t nonempty;
    pthread_t client;
    dpt_progress *ring;
    size_t cap, head, count; /* records ring[head .. head+count) */
    size_t coalesced;
    int stopping;
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

dpt_status dpt_progress_queue_new(size_t capacity, dpt_progress_fn fn, void *arg,
                                  dpt_progress_queue **out)
{
    *out = NULL;
    if (!fn)
        return dpt_fail(DPT_ERR_ARG, "progress queue: no callback");
    dpt_progress_queue *q = calloc(1, sizeof *q);
    if (!q)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    q->cap = capacity ? capacity : 1024;
    q->ring = calloc(q->cap, sizeof *q->ring);
    q->fn = fn, q->arg = arg;
    if (!q->ring) {
        free(q);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->nonempty, NULL);
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

void dpt_progress_queue_free(dpt_progress_queue *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_signal(&q->nonempty);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->client, NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->nonempty);
    free(q->ring);
    free(q);
}
