/* The "local" communicator: N worker threads in one process.
 *
 * All workers share one group: a mutex, one condition variable (on
 * CLOCK_MONOTONIC, so timeouts ignore wall-clock jumps) and one slot per
 * worker. Every collective starts with an entry barrier: the worker
 * publishes its slot (operation, sequence number, buffers, count, root,
 * flag) and waits, with the timeout, until all workers have arrived. The
 * worker that arrives last checks that all slots describe the same
 * collective and computes the AND, then releases the others (generation
 * counter). A waiting worker spins on the generation for a bounded time
 * (spin_ns), then sleeps on the condition variable (see spin_wait).
 *
 * All-reduce (sum) after the entry barrier, with no shared scratch memory:
 *   phase 1 (reduce-scatter): [0, n) is split into N chunks (starts on
 *     64-byte boundaries); worker r adds chunk r of every worker's send
 *     buffer in rank order 0..N-1 and writes the sum into chunk r of its
 *     own recv buffer. Only worker r touches chunk r of any buffer in this
 *     phase, and it reads all rows of an element before writing it, so
 *     recv == send (in place) is safe.
 *   inner barrier;
 *   phase 2 (all-gather): worker r copies chunk k (k != r) of worker k's
 *     recv buffer into its own recv buffer. Worker r's own chunk r is only
 *     read by others and chunks k != r of its buffer only written by it.
 *   inner barrier, so no worker returns (and reuses its buffers) while
 *     others still read them.
 * Each element is summed by exactly one worker in rank order, so every
 * worker gets the same bits whatever N, chunking or scheduling; the work
 * and the memory traffic are spread over all workers.
 *
 * Small all-reduces (N * n * element <= 2 MiB) and broadcasts (<= 1 MiB)
 * take one barrier instead: the worker that releases the entry barrier
 * computes the same rank-order sum (or copies root's buffer) into a shared
 * 1 MiB scratch buffer while the others are still blocked, and after the
 * release every worker copies the scratch into its own buffer. The
 * scratch is next written at the following release, which needs every
 * worker to have arrived again, hence to have finished copying. This path
 * exists because waking a blocked thread is the expensive part of a small
 * collective (about 100 us on a virtual machine), and it gives the same
 * bits as the parallel path. Inner barriers wait
 * without timeout and ignore aborts: once every worker has entered, the
 * rest is bounded work, and leaving early would let peers read buffers the
 * caller is free to reuse.
 *
 * Failure: the group is "broken" by a timeout, an abort (a failed worker),
 * a worker that returned from its function while others wait for it, or
 * mismatched collectives. Broken is sticky; see broken_result for who gets
 * which status. */
#include "comm/comm_impl.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG_BYTES 1024
#define DEFAULT_SPIN_NS 2000000L /* 2 ms: see spin_wait */
#define SCRATCH_BYTES ((size_t)1 << 20)        /* shared scratch, N >= 2 */
#define SMALL_SUM_READ_BYTES ((size_t)2 << 20) /* N * n * element limit */

typedef struct slot {
    /* Published at the entry of each collective, under the lock. */
    uint64_t seq;      /* the worker's sequence number for this call */
    comm_op op;
    const void *send;  /* sums: send buffer; broadcast: buf */
    void *recv;        /* sums: recv buffer; broadcast: buf */
    size_t n;          /* sums: elements; broadcast: bytes; else 0 */
    int root;          /* broadcast root, else -1 */
    int flag;          /* AND input (0/1), else 1 */
    /* Bookkeeping, under the lock. */
    uint64_t arrivals; /* entry barriers this worker has reached */
    int finished;      /* its worker function has returned */
} slot;

typedef struct group {
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* every state change broadcasts here */
    int n;              /* workers */
    int arrived;        /* at the current barrier */
    uint64_t gen;       /* barrier generation: +1 at every release (written
                         * atomically under mu, so spin_wait may read it
                         * without mu) */
    long spin_ns;       /* how long a waiter spins before it sleeps */

    /* Verdict of the last entry barrier, set by the worker that released
     * it; valid until the next release, which needs every worker again. */
    dpt_status rel_status;
    int rel_and;
    char rel_msg[MSG_BYTES];

    /* Sticky failure. broken_shared: the failure happened at the entry
     * barrier of generation broken_gen (timeout, a worker that returned),
     * so every worker waiting there shares the same status and message. */
    int broken;
    int broken_rank;
    int broken_shared;
    uint64_t broken_gen;
    dpt_status broken_status;
    char broken_msg[MSG_BYTES];

    /* First worker function to fail, for dpt_spmd_run's result. */
    int fail_rank;
    dpt_status fail_status;
    char fail_msg[MSG_BYTES];

    slot *slots;        /* [n] */
    void *scratch;      /* [SCRATCH_BYTES] when n >= 2: small collectives */
    const void **rows;  /* [n] row pointers for the releaser's sum */
} group;

typedef struct local_comm {
    dpt_comm base;      /* first: a dpt_comm * is a local_comm * */
    group *g;
    const void **rows;  /* [n] row pointers for the rank-order sum */
    dpt_worker_fn fn;
    void *arg;
} local_comm;

static local_comm *as_local(dpt_comm *c) { return (local_comm *)c; }

/* ---- failure state (lock held) --------------------------------------------- */

static void set_broken(group *g, int rank, dpt_status s, int shared, uint64_t gen, const char *msg)
{
    if (g->broken)
        return;
    g->broken = 1;
    g->broken_rank = rank;
    g->broken_status = s;
    g->broken_shared = shared;
    g->broken_gen = gen;
    snprintf(g->broken_msg, sizeof g->broken_msg, "%s", msg);
    pthread_cond_broadcast(&g->cv);
}

/* What a worker gets from a broken group. A worker that was waiting at the
 * entry barrier where a shared failure happened gets that failure itself
 * (e.g. DPT_ERR_TIMEOUT naming the missing workers); every other worker
 * gets DPT_ERR_COMM naming the worker that failed. */
static dpt_status broken_result(const group *g, const dpt_comm *c, comm_op op, int waited, uint64_t gen)
{
    if (g->broken_shared && waited && gen == g->broken_gen)
        return dpt_fail(g->broken_status, "%s", g->broken_msg);
    return dpt_fail(DPT_ERR_COMM, "%s #%llu: worker %d failed: %s", dpt_comm_op_name(op),
                    (unsigned long long)c->seq, g->broken_rank, g->broken_msg);
}

static void describe(char *buf, size_t size, const slot *s)
{
    const char *name = dpt_comm_op_name(s->op);
    unsigned long long seq = (unsigned long long)s->seq;
    switch (s->op) {
    case COMM_OP_SUM_F32:
    case COMM_OP_SUM_F64:
        snprintf(buf, size, "%s #%llu (n=%zu)", name, seq, s->n);
        break;
    case COMM_OP_BROADCAST:
        snprintf(buf, size, "%s #%llu (bytes=%zu, root %d)", name, seq, s->n, s->root);
        break;
    default:
        snprintf(buf, size, "%s #%llu", name, seq);
        break;
    }
}

/* Whether a collective takes the one-barrier path through g->scratch. A
 * function of (op, n, N) only, so every worker decides alike. */
static int small_path(const group *g, comm_op op, size_t n)
{
    if (g->n < 2 || n == 0)
        return 0;
    if (op == COMM_OP_BROADCAST)
        return n <= SCRATCH_BYTES;
    if (op != COMM_OP_SUM_F32 && op != COMM_OP_SUM_F64)
        return 0;
    size_t bytes = n * dpt_comm_op_elem_bytes(op);
    return bytes <= SCRATCH_BYTES && bytes * (size_t)g->n <= SMALL_SUM_READ_BYTES;
}

/* Run by the last worker to arrive at an entry barrier (lock held): check
 * that every worker called the same collective, compute the AND, and do
 * the data movement of a small collective (see the top of the file). */
static void release_verdict(group *g)
{
    const slot *a = &g->slots[0];
    int all = 1;
    g->rel_status = DPT_OK;
    g->rel_msg[0] = '\0';
    for (int k = 0; k < g->n; k++) {
        const slot *b = &g->slots[k];
        if (b->seq != a->seq || b->op != a->op || b->n != a->n || b->root != a->root) {
            char da[160], db[160];
            describe(da, sizeof da, a);
            describe(db, sizeof db, b);
            g->rel_status = DPT_ERR_COMM;
            snprintf(g->rel_msg, sizeof g->rel_msg,
                     "%s #%llu: workers called different collectives: worker 0 called %s, worker %d called %s",
                     dpt_comm_op_name(a->op), (unsigned long long)a->seq, da, k, db);
            set_broken(g, k, DPT_ERR_COMM, 0, 0, g->rel_msg);
            return;
        }
        all &= b->flag;
    }
    g->rel_and = all;
    if (!small_path(g, a->op, a->n))
        return;
    if (a->op == COMM_OP_BROADCAST) {
        memcpy(g->scratch, g->slots[a->root].send, a->n);
        return;
    }
    for (int k = 0; k < g->n; k++)
        g->rows[k] = g->slots[k].send;
    if (a->op == COMM_OP_SUM_F32)
        dpt_comm_sum_f32(g->scratch, (const float *const *)g->rows, g->n, a->n);
    else
        dpt_comm_sum_f64(g->scratch, (const double *const *)g->rows, g->n, a->n);
}

/* A worker whose function has returned although it has not reached the
 * entry barrier that others wait at (lock held); -1 if none. */
static int returned_early(const group *g, uint64_t arrivals)
{
    for (int k = 0; k < g->n; k++)
        if (g->slots[k].finished && g->slots[k].arrivals < arrivals)
            return k;
    return -1;
}

static void timeout_message(const group *g, const dpt_comm *c, comm_op op, uint64_t arrivals, char *buf,
                            size_t size)
{
    int missing = 0;
    for (int k = 0; k < g->n; k++)
        missing += g->slots[k].arrivals < arrivals;
    int len = snprintf(buf, size, "%s #%llu: timed out after %ld ms waiting for worker%s", dpt_comm_op_name(op),
                       (unsigned long long)c->seq, c->timeout_ms, missing == 1 ? "" : "s");
    int first = 1;
    for (int k = 0; k < g->n && len > 0 && (size_t)len < size; k++) {
        if (g->slots[k].arrivals >= arrivals)
            continue;
        len += snprintf(buf + len, size - (size_t)len, "%s %d", first ? "" : ",", k);
        first = 0;
    }
}

/* ---- barriers ------------------------------------------------------------ */

static void deadline_after(long ms, struct timespec *t)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* Spin before sleeping. Workers meet at a barrier several times per
 * training step (the batch norms' sums, the gradient), and their arrivals
 * differ by a few milliseconds. A worker that sleeps on the condition
 * variable each time idles its core, and on the 2-core virtual machines we
 * measure on, workers that slept at every barrier ran the main job slower:
 * with this spin it took a median 0.95 of the time (10 alternated pairs,
 * docs/scaling.md). So a waiter first spins on the generation,
 * up to spin_ns, then sleeps as before: failures, timeouts and workers
 * that returned are still seen there. No spinning when there are more
 * workers than CPUs (a spinner would take the core its peer needs), and
 * never past limit_ns (a collective's timeout comes first).
 * Called and returns with mu held. */
static void spin_wait(group *g, uint64_t gen, long limit_ns)
{
    if (limit_ns <= 0)
        return;
    pthread_mutex_unlock(&g->mu);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned k = 1; __atomic_load_n(&g->gen, __ATOMIC_ACQUIRE) == gen; k++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (k % 64 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > limit_ns)
                break;
        }
    }
    pthread_mutex_lock(&g->mu);
}

/* The generation moves on: a release. */
static void next_gen(group *g)
{
    __atomic_store_n(&g->gen, g->gen + 1, __ATOMIC_RELEASE);
}

/* Entry barrier of a collective (lock held): publish this worker's slot and
 * wait until every worker has arrived, the timeout passes, or the group
 * breaks. On DPT_OK the verdict (g->rel_*) of this release is readable
 * until the caller's next barrier. */
static dpt_status enter(local_comm *lc, comm_op op, const void *send, void *recv, size_t n, int root, int flag)
{
    group *g = lc->g;
    dpt_comm *c = &lc->base;
    if (g->broken)
        return broken_result(g, c, op, 0, 0);

    slot *s = &g->slots[c->rank];
    s->seq = c->seq;
    s->op = op;
    s->send = send;
    s->recv = recv;
    s->n = n;
    s->root = root;
    s->flag = flag;
    s->arrivals++;

    uint64_t gen = g->gen;
    if (++g->arrived == g->n) {
        g->arrived = 0;
        release_verdict(g);
        next_gen(g);
        pthread_cond_broadcast(&g->cv);
    } else {
        long ms = c->timeout_ms;
        struct timespec deadline;
        if (ms > 0)
            deadline_after(ms, &deadline);
        int timed_out = 0;
        spin_wait(g, gen, ms > 0 && ms * 1000000L < g->spin_ns ? ms * 1000000L : g->spin_ns);
        while (g->gen == gen) {
            if (g->broken)
                return broken_result(g, c, op, 1, gen);
            int k = returned_early(g, s->arrivals);
            if (k >= 0 || timed_out) {
                char msg[MSG_BYTES];
                if (k >= 0)
                    snprintf(msg, sizeof msg,
                             "%s #%llu: worker %d returned from its worker function after %llu collective "
                             "calls and will never join this one",
                             dpt_comm_op_name(op), (unsigned long long)c->seq, k,
                             (unsigned long long)g->slots[k].arrivals);
                else
                    timeout_message(g, c, op, s->arrivals, msg, sizeof msg);
                set_broken(g, c->rank, k >= 0 ? DPT_ERR_COMM : DPT_ERR_TIMEOUT, 1, gen, msg);
                return broken_result(g, c, op, 1, gen);
            }
            if (ms > 0)
                timed_out = pthread_cond_timedwait(&g->cv, &g->mu, &deadline) == ETIMEDOUT;
            else
                pthread_cond_wait(&g->cv, &g->mu);
        }
    }
    if (g->rel_status)
        return dpt_fail(g->rel_status, "%s", g->rel_msg);
    return DPT_OK;
}

/* Barrier between the phases of a collective every worker has entered:
 * no timeout, ignores failures (see the top of the file). */
static void inner_barrier(group *g)
{
    pthread_mutex_lock(&g->mu);
    uint64_t gen = g->gen;
    if (++g->arrived == g->n) {
        g->arrived = 0;
        next_gen(g);
        pthread_cond_broadcast(&g->cv);
    } else {
        spin_wait(g, gen, g->spin_ns);
        while (g->gen == gen)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

/* ---- collectives --------------------------------------------------------- */

static dpt_status local_allreduce(dpt_comm *c, comm_op op, const void *send, void *recv, size_t n)
{
    local_comm *lc = as_local(c);
    group *g = lc->g;
    pthread_mutex_lock(&g->mu);
    dpt_status st = enter(lc, op, send, recv, n, -1, 1);
    pthread_mutex_unlock(&g->mu);
    if (st || n == 0)
        return st;

    const size_t es = dpt_comm_op_elem_bytes(op);
    const int nw = g->n, r = c->rank;
    if (nw == 1) {
        if (send != recv)
            memcpy(recv, send, n * es);
        return DPT_OK;
    }
    if (small_path(g, op, n)) {
        memcpy(recv, g->scratch, n * es);
        return DPT_OK;
    }

    size_t lo, hi;
    dpt_comm_chunk(n, nw, r, 64 / es, &lo, &hi);
    if (hi > lo) {
        for (int k = 0; k < nw; k++)
            lc->rows[k] = (const char *)g->slots[k].send + lo * es;
        if (op == COMM_OP_SUM_F32)
            dpt_comm_sum_f32((float *)recv + lo, (const float *const *)lc->rows, nw, hi - lo);
        else
            dpt_comm_sum_f64((double *)recv + lo, (const double *const *)lc->rows, nw, hi - lo);
    }
    inner_barrier(g);
    for (int k = 0; k < nw; k++) {
        if (k == r)
            continue;
        dpt_comm_chunk(n, nw, k, 64 / es, &lo, &hi);
        const char *src = (const char *)g->slots[k].recv + lo * es;
        char *dst = (char *)recv + lo * es;
        if (hi > lo && src != dst)
            memcpy(dst, src, (hi - lo) * es);
    }
    inner_barrier(g);
    return DPT_OK;
}

static dpt_status local_allreduce_and(dpt_comm *c, int *flag)
{
    local_comm *lc = as_local(c);
    pthread_mutex_lock(&lc->g->mu);
    dpt_status st = enter(lc, COMM_OP_AND, NULL, NULL, 0, -1, *flag);
    if (st == DPT_OK)
        *flag = lc->g->rel_and;
    pthread_mutex_unlock(&lc->g->mu);
    return st;
}

static dpt_status local_broadcast(dpt_comm *c, void *buf, size_t bytes, int root)
{
    local_comm *lc = as_local(c);
    group *g = lc->g;
    pthread_mutex_lock(&g->mu);
    dpt_status st = enter(lc, COMM_OP_BROADCAST, buf, buf, bytes, root, 1);
    pthread_mutex_unlock(&g->mu);
    if (st || bytes == 0 || g->n == 1)
        return st;
    if (small_path(g, COMM_OP_BROADCAST, bytes)) {
        if (c->rank != root)
            memcpy(buf, g->scratch, bytes);
        return DPT_OK;
    }
    const void *src = g->slots[root].recv;
    if (c->rank != root && src != buf)
        memcpy(buf, src, bytes);
    inner_barrier(g); /* root's buffer stays untouched until all have copied */
    return DPT_OK;
}

static dpt_status local_barrier(dpt_comm *c)
{
    local_comm *lc = as_local(c);
    pthread_mutex_lock(&lc->g->mu);
    dpt_status st = enter(lc, COMM_OP_BARRIER, NULL, NULL, 0, -1, 1);
    pthread_mutex_unlock(&lc->g->mu);
    return st;
}

static void local_abort(dpt_comm *c, dpt_status s, const char *msg)
{
    group *g = as_local(c)->g;
    pthread_mutex_lock(&g->mu);
    set_broken(g, c->rank, s, 0, 0, msg);
    pthread_mutex_unlock(&g->mu);
}

static const dpt_comm_ops local_ops = {
    .backend = DPT_COMM_LOCAL,
    .allreduce = local_allreduce,
    .allreduce_and = local_allreduce_and,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .abort = local_abort,
};

/* ---- SPMD entry ---------------------------------------------------------- */

/* Record how worker `rank`'s function ended: a failure breaks the group
 * (so peers stop waiting) and is remembered if it is the first; either
 * way the worker is marked finished so peers waiting for it give up. */
static void finish_worker(group *g, int rank, dpt_status st, const char *why)
{
    char msg[MSG_BYTES];
    if (st) {
        const char *e = why ? why : dpt_last_error();
        snprintf(msg, sizeof msg, "%s", e[0] ? e : dpt_status_str(st));
    }
    pthread_mutex_lock(&g->mu);
    if (st) {
        if (g->fail_rank < 0) {
            g->fail_rank = rank;
            g->fail_status = st;
            memcpy(g->fail_msg, msg, sizeof msg);
        }
        set_broken(g, rank, st, 0, 0, msg);
    }
    g->slots[rank].finished = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *worker_main(void *p)
{
    local_comm *lc = p;
    dpt_clear_error();
    dpt_status st = lc->fn(&lc->base, lc->arg);
    finish_worker(lc->g, lc->base.rank, st, NULL);
    return NULL;
}

static dpt_status group_init(group *g, int n)
{
    memset(g, 0, sizeof *g);
    g->n = n;
    g->fail_rank = -1;
    /* DPT_SPIN_US: the spin budget in microseconds (0: sleep at once);
     * more workers than CPUs never spin. */
    g->spin_ns = DEFAULT_SPIN_NS;
    const char *env = getenv("DPT_SPIN_US");
    if (env && *env) {
        char *end;
        long us = strtol(env, &end, 10);
        if (*end == '\0' && us >= 0 && us <= 1000000)
            g->spin_ns = us * 1000;
    }
    if (n > dpt_cpu_count())
        g->spin_ns = 0;
    g->slots = calloc((size_t)n, sizeof *g->slots);
    g->rows = calloc((size_t)n, sizeof *g->rows);
    g->scratch = n >= 2 ? malloc(SCRATCH_BYTES) : NULL;
    if (!g->slots || !g->rows || (n >= 2 && !g->scratch)) {
        free(g->slots);
        free(g->rows);
        free(g->scratch);
        return dpt_fail(DPT_ERR_NOMEM, "local communicator: cannot allocate the state of %d workers", n);
    }
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0)
        rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0) {
        rc = pthread_mutex_init(&g->mu, NULL);
        if (rc)
            pthread_cond_destroy(&g->cv);
    }
    if (rc) {
        free(g->slots);
        free(g->rows);
        free(g->scratch);
        return dpt_fail(DPT_ERR_NOMEM, "local communicator: cannot create its lock: %s", strerror(rc));
    }
    return DPT_OK;
}

static void group_destroy(group *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g->slots);
    free(g->rows);
    free(g->scratch);
}

dpt_status dpt_comm_local_run(int n_workers, long timeout_ms, dpt_worker_fn fn, void *arg)
{
    group g;
    dpt_status st = group_init(&g, n_workers);
    if (st)
        return st;
    const size_t n = (size_t)n_workers;
    local_comm *comms = calloc(n, sizeof *comms);
    const void **rows = calloc(n * n, sizeof *rows);
    pthread_t *threads = calloc(n, sizeof *threads);
    if (!comms || !rows || !threads) {
        st = dpt_fail(DPT_ERR_NOMEM, "local communicator: cannot allocate %d workers", n_workers);
        goto done;
    }
    for (int r = 0; r < n_workers; r++) {
        local_comm *lc = &comms[r];
        lc->base.ops = &local_ops;
        lc->base.rank = r;
        lc->base.size = n_workers;
        lc->base.timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
        lc->base.seq = 0;
        lc->g = &g;
        lc->rows = rows + (size_t)r * n;
        lc->fn = fn;
        lc->arg = arg;
    }

    /* Worker 0 runs on this thread; 1..n-1 on new threads. */
    int started = 1;
    for (; started < n_workers; started++) {
        int rc = pthread_create(&threads[started], NULL, worker_main, &comms[started]);
        if (rc) {
            char why[MSG_BYTES];
            snprintf(why, sizeof why, "cannot start its thread: %s", strerror(rc));
            for (int k = started; k < n_workers; k++)
                finish_worker(&g, k, DPT_ERR_NOMEM, why);
            break;
        }
    }
    if (started == n_workers) {
        dpt_clear_error();
        dpt_status s0 = fn(&comms[0].base, arg);
        finish_worker(&g, 0, s0, NULL);
    } else {
        finish_worker(&g, 0, DPT_ERR_NOMEM, "not run: another worker's thread could not start");
    }
    for (int k = 1; k < started; k++)
        pthread_join(threads[k], NULL);

    /* No other thread is left: the group can be read without the lock. */
    if (g.fail_rank >= 0)
        st = dpt_fail(g.fail_status, "worker %d: %s", g.fail_rank, g.fail_msg);
    else
        st = DPT_OK;
done:
    free(threads);
    free(rows);
    free(comms);
    group_destroy(&g);
    return st;
}
