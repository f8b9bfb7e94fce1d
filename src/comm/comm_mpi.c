/* The "mpi" communicator: one worker per MPI process, on a duplicate of
 * MPI_COMM_WORLD with MPI_ERRORS_RETURN (MPI errors become statuses).
 *
 * Sums do not use MPI_Allreduce: MPI leaves the order of the additions to
 * the implementation (it depends on the algorithm chosen for the message
 * size and process layout), so its result may differ in the last bits
 * from the rank-order sum comm.h promises and from the local backend. We
 * build the all-reduce from data movement, and add on our side:
 *   - large buffers: the same chunking as the local backend. MPI_Alltoallv
 *     hands chunk r of every rank's buffer to rank r, which adds the N rows
 *     in rank order (dpt_comm_sum_*), then MPI_Allgatherv (in place)
 *     distributes the chunks. Per rank that moves 2 (N-1)/N of the buffer,
 *     as a ring all-reduce does.
 *   - small buffers (n * N * element <= 64 KiB): MPI_Allgather of whole
 *     buffers, and every rank adds the N rows in rank order itself (one
 *     latency instead of two).
 * Either way each element is ((x0 + x1) + x2) + ... in the element type:
 * identical bits on every rank, every run, and equal to the local
 * backend's. Buffers are handled in segments of at most 2^24 elements so
 * MPI's int counts never overflow and the scratch stays bounded.
 * AND is MPI_Allreduce with MPI_LAND (exact in any order).
 *
 * Timeouts: a watchdog thread per process. Each collective records (op,
 * sequence number, deadline) before it calls MPI and clears it after; if
 * the deadline passes first, the watchdog prints
 *   dptrain: rank R: <op> #<seq> waited past <ms> ms; a peer rank may have died: <who>
 * on stderr and ends the job: MPI_Abort when MPI runs with
 * MPI_THREAD_MULTIPLE (calling MPI from this thread is allowed), otherwise
 * _exit(1), which the launcher (mpirun, srun) turns into ending every rank
 * (Open MPI 4.1 on 2 cores: about 2 s, against under 1 s for MPI_Abort).
 *
 * <who> names the missing ranks. An MPI collective does not say who has
 * not arrived, so the watchdogs ask each other, on a communicator of their
 * own (which needs MPI_THREAD_MULTIPLE; without it the line ends at "may
 * have died"): every watchdog answers questions every POLL_MS with where
 * its rank is (in which collective, or not in one), and a watchdog whose
 * deadline passed asks every peer and waits up to the grace below for the
 * answers. A peer that does not answer (dead, stopped, or its machine
 * unreachable) or is not in the same collective is named:
 *   rank 2 (no answer: dead, stopped or unreachable); rank 3 (in barrier #7)
 * The rank that waited never names a peer that is waiting with it.
 *
 * The small-buffer all-gather path and the watchdog's per-call bookkeeping
 * (one mutex, one signal) are the only costs over plain MPI calls. */
#include "comm/comm_impl.h"
#include "core/text.h"

#include <mpi.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MSG_BYTES 1024
#define SMALL_BYTES (64 * 1024)
#define SEGMENT_ELEMS ((size_t)1 << 24)
#define BCAST_PIECE ((size_t)1 << 30)
#define POLL_MS 20            /* a watchdog answers its peers' questions this often */
#define GRACE_MIN_MS 1000     /* how long a timed-out watchdog waits for answers: */
#define GRACE_MAX_MS 10000    /* the timeout, within these bounds */
#define TAG_ASK 1
#define TAG_ANSWER 2
#define MAX_NAMED 8           /* missing ranks listed by number, then a count */

typedef struct mpi_comm {
    dpt_comm base;        /* first: a dpt_comm * is an mpi_comm * */
    MPI_Comm comm;        /* duplicate of MPI_COMM_WORLD */
    int thread_level;     /* MPI_Query_thread */
    pthread_t main_thread; /* the thread that runs the worker (calls MPI) */

    void *tmp;            /* scratch for received rows */
    size_t tmp_bytes;
    int *counts, *displs;   /* [size] chunk k of a segment: elements, offset */
    int *rcounts, *rdispls; /* [size] where rank k's rows land in tmp */
    const void **rows;      /* [size] row pointers for the sum */

    /* Set by dpt_comm_abort on a single-rank job (nothing to end). */
    int broken;
    dpt_status broken_status;
    char broken_msg[MSG_BYTES];

    /* Watchdog, under wd_mu. */
    pthread_mutex_t wd_mu;
    pthread_cond_t wd_cv;   /* CLOCK_MONOTONIC */
    pthread_t wd_thread;
    int wd_stop;
    int wd_active;          /* a collective is in progress */
    comm_op wd_op;
    uint64_t wd_seq;
    long wd_timeout_ms;     /* <= 0: no deadline */
    struct timespec wd_deadline;

    /* Watchdogs' questions and answers (MPI_COMM_NULL below
     * MPI_THREAD_MULTIPLE); used only by the watchdog thread. */
    MPI_Comm diag;
    int64_t *answers;        /* [size][3]: answered, in a collective, op * 2^32 + seq */
    MPI_Request *reqs;       /* [2 * size]: answer receives, question sends */
} mpi_comm;

static mpi_comm *as_mpi(dpt_comm *c) { return (mpi_comm *)c; }

/* End the whole job from any thread: MPI_Abort where this thread may call
 * MPI, else _exit(1), which the launcher turns into ending every rank. */
#ifdef DPT_COVERAGE
void __gcov_dump(void);
#endif

static void end_job(mpi_comm *m)
{
#ifdef DPT_COVERAGE
    /* gcov build (scripts/gen-errors-doc --coverage): MPI_Abort and _exit skip
     * the exit-time write of the counters, which would hide the message that
     * ended the job */
    __gcov_dump();
#endif
    if (m->thread_level == MPI_THREAD_MULTIPLE || pthread_equal(pthread_self(), m->main_thread))
        MPI_Abort(m->comm, 1);
    _exit(1);
}

/* ---- watchdog ------------------------------------------------------------ */

static void add_ms(struct timespec *t, long ms)
{
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static int before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Answer every question waiting on the watchdogs' communicator with where
 * this rank is. Called without wd_mu held. */
static void answer_questions(mpi_comm *m)
{
    for (;;) {
        int flag = 0;
        MPI_Status ms;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_ASK, m->diag, &flag, &ms) != MPI_SUCCESS || !flag)
            return;
        int64_t q;
        if (MPI_Recv(&q, 1, MPI_INT64_T, ms.MPI_SOURCE, TAG_ASK, m->diag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return;
        pthread_mutex_lock(&m->wd_mu);
        int64_t a[3] = {1, m->wd_active, ((int64_t)m->wd_op << 32) | (int64_t)(m->wd_seq & 0xffffffffu)};
        pthread_mutex_unlock(&m->wd_mu);
        /* The asker posted its receive before asking: this send completes. */
        MPI_Send(a, 3, MPI_INT64_T, ms.MPI_SOURCE, TAG_ANSWER, m->diag);
    }
}

/* After a timeout in (op, seq): ask every peer where it is, wait for the
 * answers (answering the peers' own questions meanwhile), and describe the
 * ranks that are not in this collective into buf. Without wd_mu. */
static void find_missing(mpi_comm *m, comm_op op, uint64_t seq, long timeout_ms, char *buf, size_t cap)
{
    const int n = m->base.size, me = m->base.rank;
    int64_t ask = (int64_t)seq;
    for (int k = 0; k < n; k++) {
        m->answers[3 * k] = k == me;
        m->reqs[k] = m->reqs[n + k] = MPI_REQUEST_NULL;
        if (k == me)
            continue;
        MPI_Irecv(&m->answers[3 * k], 3, MPI_INT64_T, k, TAG_ANSWER, m->diag, &m->reqs[k]);
        MPI_Isend(&ask, 1, MPI_INT64_T, k, TAG_ASK, m->diag, &m->reqs[n + k]);
    }
    long grace = timeout_ms < GRACE_MIN_MS ? GRACE_MIN_MS : timeout_ms > GRACE_MAX_MS ? GRACE_MAX_MS : timeout_ms;
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    add_ms(&end, grace);
    for (;;) {
        answer_questions(m);
        int all = 1;
        for (int k = 0; k < n; k++) {
            int done = 1;
            if (m->reqs[k] != MPI_REQUEST_NULL && MPI_Test(&m->reqs[k], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                done = 0;
            all &= done;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (all || !before(&now, &end))
            break;
        struct timespec nap = {0, 5 * 1000000L};
        nanosleep(&nap, NULL);
    }
    int64_t want = ((int64_t)op << 32) | (int64_t)(seq & 0xffffffffu);
    size_t len = 0;
    int named = 0, more = 0;
    for (int k = 0; k < n; k++) {
        /* A receive still pending means no answer: reqs[k] not NULL. */
        int answered = k != me && m->reqs[k] == MPI_REQUEST_NULL && m->answers[3 * k];
        if (k == me || (answered && m->answers[3 * k + 1] && m->answers[3 * k + 2] == want))
            continue;
        if (named == MAX_NAMED) {
            more++;
            continue;
        }
        char where[96];
        if (!answered)
            snprintf(where, sizeof where, "no answer: dead, stopped or unreachable");
        else if (!m->answers[3 * k + 1])
            snprintf(where, sizeof where, "alive, not in a collective");
        else
            snprintf(where, sizeof where, "in %s #%llu", dpt_comm_op_name((comm_op)(m->answers[3 * k + 2] >> 32)),
                     (unsigned long long)(m->answers[3 * k + 2] & 0xffffffff));
        if (len < cap)
            len += (size_t)snprintf(buf + len, cap - len, "%srank %d (%s)", named ? "; " : "", k, where);
        named++;
    }
    if (more && len < cap)
        len += (size_t)snprintf(buf + len, cap - len, "; and %d more rank%s", more, more == 1 ? "" : "s");
    if (!named && len < cap)
        snprintf(buf + len, cap - len, "every rank answered from this collective");
}

static void *watchdog_main(void *p)
{
    mpi_comm *m = p;
    const int ask = m->diag != MPI_COMM_NULL && m->base.size > 1;
    pthread_mutex_lock(&m->wd_mu);
    while (!m->wd_stop) {
        if (ask && m->base.timeout_ms > 0) {
            /* Wake every POLL_MS, in a collective or not, to answer peers. */
            pthread_mutex_unlock(&m->wd_mu);
            answer_questions(m);
            pthread_mutex_lock(&m->wd_mu);
            if (m->wd_stop)
                break;
        }
        if (!m->wd_active || m->wd_timeout_ms <= 0) {
            if (ask && m->base.timeout_ms > 0) {
                struct timespec t;
                clock_gettime(CLOCK_MONOTONIC, &t);
                add_ms(&t, POLL_MS);
                pthread_cond_timedwait(&m->wd_cv, &m->wd_mu, &t);
            } else {
                pthread_cond_wait(&m->wd_cv, &m->wd_mu);
            }
            continue;
        }
        uint64_t seq = m->wd_seq;
        struct timespec until = m->wd_deadline, now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (ask) {
            struct timespec poll = now;
            add_ms(&poll, POLL_MS);
            if (before(&poll, &until))
                until = poll;
        }
        if (before(&now, &until))
            pthread_cond_timedwait(&m->wd_cv, &m->wd_mu, &until);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!m->wd_stop && m->wd_active && m->wd_seq == seq && !before(&now, &m->wd_deadline)) {
            comm_op op = m->wd_op;
            long ms = m->wd_timeout_ms;
            char who[1024] = "";
            if (ask) {
                pthread_mutex_unlock(&m->wd_mu);
                find_missing(m, op, seq, ms, who, sizeof who);
                pthread_mutex_lock(&m->wd_mu);
            }
            fprintf(stderr, "dptrain: rank %d: %s #%llu waited past %ld ms; a peer rank may have died%s%s\n",
                    m->base.rank, dpt_comm_op_name(op), (unsigned long long)seq, ms, who[0] ? ": " : "", who);
            fflush(stderr);
            end_job(m);
        }
    }
    pthread_mutex_unlock(&m->wd_mu);
    return NULL;
}

static void wd_begin(mpi_comm *m, comm_op op)
{
    pthread_mutex_lock(&m->wd_mu);
    m->wd_active = 1;
    m->wd_op = op;
    m->wd_seq = m->base.seq;
    m->wd_timeout_ms = m->base.timeout_ms;
    if (m->wd_timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &m->wd_deadline);
        add_ms(&m->wd_deadline, m->wd_timeout_ms);
    }
    pthread_cond_signal(&m->wd_cv);
    pthread_mutex_unlock(&m->wd_mu);
}

static void wd_end(mpi_comm *m)
{
    pthread_mutex_lock(&m->wd_mu);
    m->wd_active = 0;
    pthread_mutex_unlock(&m->wd_mu);
}

/* ---- helpers ------------------------------------------------------------- */

static dpt_status mpi_error(const mpi_comm *m, comm_op op, const char *call, int rc)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS)
        snprintf(s, sizeof s, "MPI error code %d", rc);
    return dpt_fail(DPT_ERR_COMM, "%s #%llu: %s failed: %s", dpt_comm_op_name(op),
                    (unsigned long long)m->base.seq, call, s);
}

static dpt_status check_broken(const mpi_comm *m, comm_op op)
{
    if (!m->broken)
        return DPT_OK;
    return dpt_fail(DPT_ERR_COMM, "%s #%llu: worker %d failed: %s", dpt_comm_op_name(op),
                    (unsigned long long)m->base.seq, m->base.rank, m->broken_msg);
}

static dpt_status need_tmp(mpi_comm *m, comm_op op, size_t bytes)
{
    if (bytes == 0)
        bytes = 1;
    if (bytes <= m->tmp_bytes)
        return DPT_OK;
    void *p = realloc(m->tmp, bytes);
    if (!p)
        return dpt_fail(DPT_ERR_NOMEM, "%s #%llu: cannot allocate %zu bytes of scratch", dpt_comm_op_name(op),
                        (unsigned long long)m->base.seq, bytes);
    m->tmp = p;
    m->tmp_bytes = bytes;
    return DPT_OK;
}

static void sum_rows(comm_op op, void *out, const void **rows, int n_rows, size_t n)
{
    if (op == COMM_OP_SUM_F32)
        dpt_comm_sum_f32(out, (const float *const *)rows, n_rows, n);
    else
        dpt_comm_sum_f64(out, (const double *const *)rows, n_rows, n);
}

/* Rank-order sum of one segment (n <= SEGMENT_ELEMS). */
static dpt_status sum_segment(mpi_comm *m, comm_op op, const char *send, char *recv, size_t n)
{
    const int nw = m->base.size, me = m->base.rank;
    const size_t es = dpt_comm_op_elem_bytes(op);
    MPI_Datatype t = op == COMM_OP_SUM_F32 ? MPI_FLOAT : MPI_DOUBLE;
    dpt_status st;
    int rc;

    if (n * (size_t)nw * es <= SMALL_BYTES) {
        if ((st = need_tmp(m, op, n * (size_t)nw * es)))
            return st;
        rc = MPI_Allgather(send, (int)n, t, m->tmp, (int)n, t, m->comm);
        if (rc != MPI_SUCCESS)
            return mpi_error(m, op, "MPI_Allgather", rc);
        for (int k = 0; k < nw; k++)
            m->rows[k] = (const char *)m->tmp + (size_t)k * n * es;
        sum_rows(op, recv, m->rows, nw, n);
        return DPT_OK;
    }

    for (int k = 0; k < nw; k++) {
        size_t lo, hi;
        dpt_comm_chunk(n, nw, k, 64 / es, &lo, &hi);
        m->counts[k] = (int)(hi - lo);
        m->displs[k] = (int)lo;
    }
    const size_t mine = (size_t)m->counts[me];
    if ((st = need_tmp(m, op, mine * (size_t)nw * es)))
        return st;
    for (int k = 0; k < nw; k++) {
        m->rcounts[k] = (int)mine;
        m->rdispls[k] = (int)((size_t)k * mine);
    }
    rc = MPI_Alltoallv(send, m->counts, m->displs, t, m->tmp, m->rcounts, m->rdispls, t, m->comm);
    if (rc != MPI_SUCCESS)
        return mpi_error(m, op, "MPI_Alltoallv", rc);
    if (mine > 0) {
        for (int k = 0; k < nw; k++)
            m->rows[k] = (const char *)m->tmp + (size_t)k * mine * es;
        sum_rows(op, recv + (size_t)m->displs[me] * es, m->rows, nw, mine);
    }
    rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, m->counts, m->displs, t, m->comm);
    if (rc != MPI_SUCCESS)
        return mpi_error(m, op, "MPI_Allgatherv", rc);
    return DPT_OK;
}

/* ---- collectives --------------------------------------------------------- */

static dpt_status mpi_allreduce(dpt_comm *c, comm_op op, const void *send, void *recv, size_t n)
{
    mpi_comm *m = as_mpi(c);
    dpt_status st = check_broken(m, op);
    if (st)
        return st;
    const size_t es = dpt_comm_op_elem_bytes(op);
    if (c->size == 1) {
        if (n > 0 && send != recv)
            memcpy(recv, send, n * es);
        return DPT_OK;
    }
    wd_begin(m, op);
    if (n == 0) {
        int rc = MPI_Barrier(m->comm);
        if (rc != MPI_SUCCESS)
            st = mpi_error(m, op, "MPI_Barrier", rc);
    }
    for (size_t off = 0; off < n && st == DPT_OK; off += SEGMENT_ELEMS) {
        size_t len = n - off < SEGMENT_ELEMS ? n - off : SEGMENT_ELEMS;
        st = sum_segment(m, op, (const char *)send + off * es, (char *)recv + off * es, len);
    }
    wd_end(m);
    return st;
}

static dpt_status mpi_allreduce_and(dpt_comm *c, int *flag)
{
    mpi_comm *m = as_mpi(c);
    dpt_status st = check_broken(m, COMM_OP_AND);
    if (st || c->size == 1)
        return st;
    wd_begin(m, COMM_OP_AND);
    int rc = MPI_Allreduce(MPI_IN_PLACE, flag, 1, MPI_INT, MPI_LAND, m->comm);
    wd_end(m);
    if (rc != MPI_SUCCESS)
        return mpi_error(m, COMM_OP_AND, "MPI_Allreduce", rc);
    *flag = *flag != 0;
    return DPT_OK;
}

static dpt_status mpi_broadcast(dpt_comm *c, void *buf, size_t bytes, int root)
{
    mpi_comm *m = as_mpi(c);
    dpt_status st = check_broken(m, COMM_OP_BROADCAST);
    if (st || c->size == 1)
        return st;
    wd_begin(m, COMM_OP_BROADCAST);
    int rc = MPI_SUCCESS;
    if (bytes == 0)
        rc = MPI_Barrier(m->comm);
    for (size_t off = 0; off < bytes && rc == MPI_SUCCESS; off += BCAST_PIECE) {
        size_t len = bytes - off < BCAST_PIECE ? bytes - off : BCAST_PIECE;
        rc = MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, m->comm);
    }
    wd_end(m);
    if (rc != MPI_SUCCESS)
        return mpi_error(m, COMM_OP_BROADCAST, bytes == 0 ? "MPI_Barrier" : "MPI_Bcast", rc);
    return DPT_OK;
}

static dpt_status mpi_barrier(dpt_comm *c)
{
    mpi_comm *m = as_mpi(c);
    dpt_status st = check_broken(m, COMM_OP_BARRIER);
    if (st || c->size == 1)
        return st;
    wd_begin(m, COMM_OP_BARRIER);
    int rc = MPI_Barrier(m->comm);
    wd_end(m);
    if (rc != MPI_SUCCESS)
        return mpi_error(m, COMM_OP_BARRIER, "MPI_Barrier", rc);
    return DPT_OK;
}

/* More than one rank: the peers can only be released by ending the job
 * (documented in comm.h as one of the two places the library prints). */
static void mpi_abort(dpt_comm *c, dpt_status s, const char *msg)
{
    mpi_comm *m = as_mpi(c);
    if (c->size > 1) {
        char clean[4 * MSG_BYTES]; /* names from files: escaped for the terminal */
        dpt_text_clean(clean, sizeof clean, msg, (size_t)-1, 0);
        fprintf(stderr, "dptrain: rank %d: %s\n", c->rank, clean);
        fflush(stderr);
        end_job(m);
    }
    if (!m->broken) {
        m->broken = 1;
        m->broken_status = s;
        snprintf(m->broken_msg, sizeof m->broken_msg, "%s", msg);
    }
}

static const dpt_comm_ops mpi_ops = {
    .backend = DPT_COMM_MPI,
    .allreduce = mpi_allreduce,
    .allreduce_and = mpi_allreduce_and,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
};

/* ---- SPMD entry ---------------------------------------------------------- */

static void finalize_at_exit(void)
{
    int done = 0;
    MPI_Finalized(&done);
    if (!done)
        MPI_Finalize();
}

static dpt_status init_mpi(void)
{
    int inited = 0, finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized)
        return dpt_fail(DPT_ERR_COMM, "mpi communicator: MPI was already finalised in this process");
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        /* MULTIPLE lets the watchdog thread ask the peers which of them is
         * missing (and end the job with MPI_Abort); with less it still
         * times out, without names. */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS)
            return dpt_fail(DPT_ERR_COMM, "mpi communicator: MPI_Init_thread failed (error %d)", rc);
        atexit(finalize_at_exit);
    }
    int is_main = 0, level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    MPI_Is_thread_main(&is_main);
    if (!is_main && level < MPI_THREAD_SERIALIZED)
        return dpt_fail(DPT_ERR_ARG, "mpi communicator: dpt_spmd_run must be called from the thread that "
                                     "initialised MPI (MPI thread level %d)", level);
    return DPT_OK;
}

static void comm_free(mpi_comm *m)
{
    if (!m)
        return;
    if (m->comm != MPI_COMM_NULL)
        MPI_Comm_free(&m->comm);
    if (m->diag != MPI_COMM_NULL)
        MPI_Comm_free(&m->diag);
    free(m->answers);
    free(m->reqs);
    free(m->tmp);
    free(m->counts);
    free(m->rows);
    free(m);
}

dpt_status dpt_comm_mpi_run(long timeout_ms, dpt_worker_fn fn, void *arg)
{
    dpt_status st = init_mpi();
    if (st)
        return st;

    mpi_comm *m = calloc(1, sizeof *m);
    if (!m)
        return dpt_fail(DPT_ERR_NOMEM, "mpi communicator: out of memory");
    m->comm = m->diag = MPI_COMM_NULL;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->comm);
    if (rc != MPI_SUCCESS) {
        m->comm = MPI_COMM_NULL;
        comm_free(m);
        return dpt_fail(DPT_ERR_COMM, "mpi communicator: MPI_Comm_dup failed (error %d)", rc);
    }
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(m->comm, &rank);
    MPI_Comm_size(m->comm, &size);
    MPI_Query_thread(&m->thread_level);
    m->main_thread = pthread_self();
    m->base.ops = &mpi_ops;
    m->base.rank = rank;
    m->base.size = size;
    m->base.timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
    m->counts = calloc(4 * (size_t)size, sizeof *m->counts);
    m->rows = calloc((size_t)size, sizeof *m->rows);
    if (!m->counts || !m->rows) {
        comm_free(m);
        return dpt_fail(DPT_ERR_NOMEM, "mpi communicator: out of memory");
    }
    /* Same level on every rank (one launch, one library): all or none dup. */
    if (m->thread_level == MPI_THREAD_MULTIPLE && size > 1) {
        m->answers = calloc(3 * (size_t)size, sizeof *m->answers);
        m->reqs = calloc(2 * (size_t)size, sizeof *m->reqs);
        if (!m->answers || !m->reqs) {
            comm_free(m);
            return dpt_fail(DPT_ERR_NOMEM, "mpi communicator: out of memory");
        }
        if (MPI_Comm_dup(MPI_COMM_WORLD, &m->diag) != MPI_SUCCESS)
            m->diag = MPI_COMM_NULL;
        else
            MPI_Comm_set_errhandler(m->diag, MPI_ERRORS_RETURN);
    }
    m->displs = m->counts + size;
    m->rcounts = m->counts + 2 * (size_t)size;
    m->rdispls = m->counts + 3 * (size_t)size;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&m->wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0) {
        pthread_mutex_init(&m->wd_mu, NULL);
        rc = pthread_create(&m->wd_thread, NULL, watchdog_main, m);
        if (rc) {
            pthread_mutex_destroy(&m->wd_mu);
            pthread_cond_destroy(&m->wd_cv);
        }
    }
    if (rc) {
        comm_free(m);
        return dpt_fail(DPT_ERR_NOMEM, "mpi communicator: cannot start the watchdog thread: %s", strerror(rc));
    }

    dpt_clear_error();
    st = fn(&m->base, arg);
    if (st) {
        char msg[MSG_BYTES];
        const char *e = dpt_last_error();
        snprintf(msg, sizeof msg, "%s", e[0] ? e : dpt_status_str(st));
        if (size > 1)
            mpi_abort(&m->base, st, msg); /* does not return */
        st = dpt_fail(st, "worker %d: %s", rank, msg);
    }

    pthread_mutex_lock(&m->wd_mu);
    m->wd_stop = 1;
    pthread_cond_signal(&m->wd_cv);
    pthread_mutex_unlock(&m->wd_mu);
    pthread_join(m->wd_thread, NULL);
    pthread_mutex_destroy(&m->wd_mu);
    pthread_cond_destroy(&m->wd_cv);
    comm_free(m);
    return st;
}
