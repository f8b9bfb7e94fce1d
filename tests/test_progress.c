/* The progress queue (MATLAB's DataQueue): order, no loss under a burst,
 * senders never blocked by a slow callback, coalescing when full, and
 * end-of-epoch records never dropped. */
#include "dptrain/train.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct sink {
    pthread_mutex_t mu;
    long seen[20000];
    int ends[64];
    int n, n_ends;
    long coalesced;
    /* A gate: with gated set, the callback waits until the test opens it
     * (or GATE_S pass: only when senders block, which the test then
     * reports), so the callback is as slow as it gets, on any machine. */
    int gated, open, gate_timed_out;
    pthread_cond_t cv;
} sink;

#define GATE_S 30

static void collect(const dpt_progress *p, void *arg)
{
    sink *s = arg;
    if (s->gated) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += GATE_S;
        pthread_mutex_lock(&s->mu);
        while (!s->open)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) {
                s->open = s->gate_timed_out = 1;
            }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    if (s->n < 20000)
        s->seen[s->n++] = p->iteration;
    if (p->end_of_epoch && s->n_ends < 64)
        s->ends[s->n_ends++] = p->epoch;
    s->coalesced += p->n_coalesced;
    pthread_mutex_unlock(&s->mu);
}

static void test_order_and_burst(void)
{
    static sink s;
    pthread_mutex_init(&s.mu, NULL);
    dpt_progress_queue *q = NULL;
    CHECK(dpt_progress_queue_new(4096, collect, &s, &q) == DPT_OK);
    for (long i = 1; i <= 3000; i++) {
        dpt_progress p = {0};
        p.iteration = i;
        dpt_progress_send(q, &p);
    }
    dpt_progress_queue_free(q); /* delivers everything queued */
    CHECK_MSG(s.n == 3000, "delivered %d of 3000", s.n);
    int ordered = 1;
    for (int i = 0; i < s.n; i++)
        ordered &= s.seen[i] == i + 1;
    CHECK(ordered);
}

/* The callback is held at a gate while 200 records are sent: all sends
 * return while it is held (senders that waited for it would hold the gate
 * shut until it gave up), and with 16 slots the queue is certainly full,
 * whatever the speeds of the two threads. */
static void test_slow_callback_never_blocks(void)
{
    static sink s;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.gated = 1;
    dpt_progress_queue *q = NULL;
    CHECK(dpt_progress_queue_new(16, collect, &s, &q) == DPT_OK);
    double t0 = now_s();
    for (long i = 1; i <= 200; i++) {
        dpt_progress p = {0};
        p.iteration = i;
        p.end_of_epoch = i % 50 == 0;
        p.epoch = (int)(i / 50);
        dpt_progress_send(q, &p);
    }
    double send_s = now_s() - t0;
    pthread_mutex_lock(&s.mu);
    int timed_out = s.gate_timed_out;
    s.open = 1;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    printf("200 sends while the callback is held, 16 slots: %.4f s\n", send_s);
    CHECK_MSG(!timed_out, "senders waited for the held callback (%.1f s, the gate gave up after %d s)", send_s,
              GATE_S);
    size_t merged = dpt_progress_coalesced(q);
    dpt_progress_queue_free(q);
    /* Full queue: ordinary records were coalesced (and say so), the four
     * end-of-epoch records all arrived, in order, and the last record sent
     * is the last delivered. */
    CHECK(merged > 0);
    CHECK_MSG(s.coalesced == (long)merged, "records report %ld merged, queue %zu", s.coalesced, merged);
    CHECK_MSG(s.n + (int)merged == 200, "delivered %d + coalesced %zu != 200", s.n, merged);
    CHECK(s.n_ends == 4 && s.ends[0] == 1 && s.ends[3] == 4);
    CHECK(s.seen[s.n - 1] == 200);
    int increasing = 1;
    for (int i = 1; i < s.n; i++)
        increasing &= s.seen[i] > s.seen[i - 1];
    CHECK(increasing);
}

/* Several worker threads send at once: every record arrives, each sender's
 * records in its own order. */
static sink multi;
static dpt_progress_queue *multi_q;

static void *sender(void *arg)
{
    long w = (long)arg;
    for (long i = 0; i < 1000; i++) {
        dpt_progress p = {0};
        p.iteration = w * 100000 + i;
        p.worker = (int)w;
        dpt_progress_send(multi_q, &p);
    }
    return NULL;
}

static void test_many_senders(void)
{
    pthread_mutex_init(&multi.mu, NULL);
    CHECK(dpt_progress_queue_new(8192, collect, &multi, &multi_q) == DPT_OK);
    pthread_t t[4];
    for (long w = 0; w < 4; w++)
        pthread_create(&t[w], NULL, sender, (void *)w);
    for (int w = 0; w < 4; w++)
        pthread_join(t[w], NULL);
    dpt_progress_queue_free(multi_q);
    CHECK(multi.n == 4000);
    long last[4] = {-1, -1, -1, -1};
    int ordered = 1;
    for (int i = 0; i < multi.n; i++) {
        long w = multi.seen[i] / 100000, k = multi.seen[i] % 100000;
        ordered &= k > last[w];
        last[w] = k;
    }
    CHECK(ordered);
}

int main(void)
{
    dpt_progress_queue *q = NULL;
    CHECK(dpt_progress_queue_new(4, NULL, NULL, &q) == DPT_ERR_ARG && q == NULL);
    dpt_progress_queue_free(NULL);
    test_order_and_burst();
    test_slow_callback_never_blocks();
    test_many_senders();
    return tu_exit();
}
