/* Communicator tests.
 *
 *   test_comm             local backend (threads): sums, AND, broadcast,
 *                         barrier, timeouts, failing workers, determinism,
 *                         configuration and argument checks.
 *   test_comm mpi         under mpirun: the same collectives on the MPI
 *                         backend, checked against the rank-order sum (so
 *                         the bits equal the local backend's).
 *   test_comm mpi-timeout under mpirun: rank 1 sleeps 300 s before a barrier
 *                         (past the script's limit: the job cannot end by
 *                         itself); rank 0's watchdog must end it.
 *   test_comm mpi-stop    under mpirun: the last rank stops itself (SIGSTOP)
 *                         before a barrier; the others' watchdogs must name it.
 *   test_comm mpi-fail    under mpirun: rank 1's worker fails; the job must
 *                         end at once with its message.
 * tests/test_comm_mpi.sh drives the MPI modes. */
#include "dptrain/comm.h"
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define MAXW 8

static const int worker_counts[] = {1, 2, 3, 4, 7};
#define N_COUNTS ((int)(sizeof worker_counts / sizeof worker_counts[0]))

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

/* ---- test values ----------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Worker r's element i: uniform in (-1, 1) times 2^e, e in -4..3, so that
 * the float sums round and the order of the additions shows in the bits. */
static float val32(int r, size_t i)
{
    static const float scale[8] = {1.0f / 16, 1.0f / 8, 1.0f / 4, 1.0f / 2, 1.0f, 2.0f, 4.0f, 8.0f};
    uint64_t h = mix64(((uint64_t)r << 48) ^ (uint64_t)i);
    float u = (float)(h >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
    return u * scale[h & 7];
}

static double val64(int r, size_t i)
{
    uint64_t h = mix64(((uint64_t)(r + 100) << 48) ^ (uint64_t)i);
    double u = (double)(h >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
    return u * (double)(1 << (h & 7)) / 16.0;
}

/* Small integers: their float sums are exact, so the expected value is
 * known independently of any summation order. */
static float vint(int r, size_t i) { return (float)((int)((i * 7 + (size_t)r * 13) % 17) - 8); }

/* The promised result: ((x0 + x1) + x2) + ... in the element type. */
static void ref32(float *out, size_t n, int nw, float (*val)(int, size_t))
{
    for (size_t i = 0; i < n; i++) {
        float s = val(0, i);
        for (int k = 1; k < nw; k++)
            s += val(k, i);
        out[i] = s;
    }
}

static void ref64(double *out, size_t n, int nw)
{
    for (size_t i = 0; i < n; i++) {
        double s = val64(0, i);
        for (int k = 1; k < nw; k++)
            s += val64(k, i);
        out[i] = s;
    }
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ---- sums ------------------------------------------------------------------ */

typedef struct sum_case {
    size_t n;
    int f64;
    int inplace;
    float (*val)(int, size_t);   /* f32 values */
    const void *ref;             /* [n] expected result, every worker */
    dpt_status st[MAXW];
    int bits_ok[MAXW];           /* result == ref bit for bit */
    int send_ok[MAXW];           /* out of place: send left untouched */
    uint64_t hash[MAXW];
} sum_case;

static dpt_status sum_worker(dpt_comm *c, void *p)
{
    sum_case *sc = p;
    const int r = dpt_comm_rank(c);
    const size_t n = sc->n, es = sc->f64 ? sizeof(double) : sizeof(float);
    char *send = malloc(n ? n * es : 1);
    char *recv = sc->inplace ? send : malloc(n ? n * es : 1);
    if (!send || !recv) {
        free(send);
        if (recv != send)
            free(recv);
        return dpt_fail(DPT_ERR_NOMEM, "test: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (sc->f64)
            ((double *)send)[i] = val64(r, i);
        else
            ((float *)send)[i] = sc->val(r, i);
    }
    if (!sc->inplace)
        memset(recv, 0xff, n * es); /* NaN everywhere */
    dpt_status st = sc->f64 ? dpt_comm_allreduce_f64(c, (const double *)send, (double *)recv, n)
                            : dpt_comm_allreduce_f32(c, (const float *)send, (float *)recv, n);
    sc->st[r] = st;
    sc->bits_ok[r] = st == DPT_OK && memcmp(recv, sc->ref, n * es) == 0;
    sc->hash[r] = hash_bytes(recv, n * es);
    sc->send_ok[r] = 1;
    if (!sc->inplace)
        for (size_t i = 0; i < n; i += 97)
            if (sc->f64 ? ((double *)send)[i] != val64(r, i) : ((float *)send)[i] != sc->val(r, i))
                sc->send_ok[r] = 0;
    free(send);
    if (recv != send)
        free(recv);
    return st;
}

static dpt_spmd_config local_cfg(int nw)
{
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = nw;
    return cfg;
}

/* One all-reduce on nw workers; 1 when every worker got the reference bits.
 * *hash0 (may be NULL) receives worker 0's result hash. */
static int run_sum(size_t n, int nw, int f64, int inplace, float (*val)(int, size_t), const void *ref,
                   uint64_t *hash0)
{
    sum_case sc;
    memset(&sc, 0, sizeof sc);
    sc.n = n;
    sc.f64 = f64;
    sc.inplace = inplace;
    sc.val = val;
    sc.ref = ref;
    dpt_spmd_config cfg = local_cfg(nw);
    dpt_status st = dpt_spmd_run(&cfg, sum_worker, &sc);
    int ok = st == DPT_OK;
    CHECK_MSG(st == DPT_OK, "%s n=%zu N=%d: %s", f64 ? "f64" : "f32", n, nw, dpt_last_error());
    for (int r = 0; r < nw; r++) {
        CHECK_MSG(sc.bits_ok[r], "%s n=%zu N=%d %s: worker %d's result differs from the rank-order sum",
                  f64 ? "f64" : "f32", n, nw, inplace ? "in place" : "out of place", r);
        CHECK_MSG(sc.send_ok[r], "n=%zu N=%d: worker %d's send buffer was modified", n, nw, r);
        CHECK_MSG(sc.hash[r] == sc.hash[0], "n=%zu N=%d: worker %d's bits differ from worker 0's", n, nw, r);
        ok &= sc.bits_ok[r] && sc.send_ok[r] && sc.hash[r] == sc.hash[0];
    }
    if (hash0)
        *hash0 = sc.hash[0];
    return ok;
}

static void test_sums(void)
{
    /* 4096: one-barrier path of the local backend; 300000 and up: the
     * parallel reduce-scatter path (over 1 MiB). */
    static const size_t sizes[] = {0, 1, 7, 4096, 300000, 1000003, 10000000};
    const size_t max_n = 10000000;
    float *ref = malloc(max_n * sizeof *ref);
    double *ref_d = malloc(1000003 * sizeof *ref_d);
    if (!ref || !ref_d) {
        CHECK(!"out of memory");
        free(ref);
        free(ref_d);
        return;
    }
    for (int ci = 0; ci < N_COUNTS; ci++) {
        const int nw = worker_counts[ci];
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const size_t n = sizes[si];
            /* Odd worker counts in place (also keeps 10M x 7 within memory). */
            const int inplace = nw % 2 == 1;
            double t0 = now_s();
            ref32(ref, n, nw, val32);
            double t1 = now_s();
            int ok = run_sum(n, nw, 0, inplace, val32, ref, NULL);
            double t2 = now_s();
            printf("  allreduce_f32 N=%d n=%-8zu %-12s %s  (reference %.2f s, run %.2f s)\n", nw, n,
                   inplace ? "in place" : "out of place", ok ? "ok" : "FAIL", t1 - t0, t2 - t1);
            if (n <= 1000003) {
                ref64(ref_d, n, nw);
                ok = run_sum(n, nw, 1, inplace, NULL, ref_d, NULL);
                printf("  allreduce_f64 N=%d n=%-8zu %-12s %s\n", nw, n, inplace ? "in place" : "out of place",
                       ok ? "ok" : "FAIL");
            }
        }
    }
    /* The other buffer mode for a few sizes. */
    static const size_t more[] = {7, 1000003};
    for (size_t si = 0; si < 2; si++)
        for (int nw = 2; nw <= 4; nw += 2) {
            ref32(ref, more[si], nw, val32);
            int ok = run_sum(more[si], nw, 0, 1, val32, ref, NULL);
            printf("  allreduce_f32 N=%d n=%-8zu in place     %s\n", nw, more[si], ok ? "ok" : "FAIL");
        }
    /* Exact sums of small integers: the expected value needs no model of
     * the summation order. */
    for (int nw = 3; nw <= 7; nw += 4) {
        const size_t n = 1000003;
        for (size_t i = 0; i < n; i++) {
            long s = 0;
            for (int k = 0; k < nw; k++)
                s += (long)((i * 7 + (size_t)k * 13) % 17) - 8;
            ref[i] = (float)s;
        }
        int ok = run_sum(n, nw, 0, 0, vint, ref, NULL);
        printf("  allreduce_f32 N=%d n=%zu small integers (exact)  %s\n", nw, n, ok ? "ok" : "FAIL");
    }
    /* Determinism: two runs, same bits (and the rank order shows: the sum
     * differs from the reverse-order sum somewhere). */
    {
        const size_t n = 1000003;
        const int nw = 4;
        ref32(ref, n, nw, val32);
        uint64_t h1 = 0, h2 = 0;
        run_sum(n, nw, 0, 0, val32, ref, &h1);
        run_sum(n, nw, 0, 0, val32, ref, &h2);
        CHECK_MSG(h1 == h2, "two runs gave different bits");
        size_t differ = 0;
        for (size_t i = 0; i < n; i++) {
            float s = val32(nw - 1, i);
            for (int k = nw - 2; k >= 0; k--)
                s += val32(k, i);
            differ += s != ref[i];
        }
        CHECK_MSG(differ > 0, "test values do not expose the summation order");
        printf("  determinism: two runs identical: %s (reverse order differs in %zu of %zu)\n",
               h1 == h2 ? "ok" : "FAIL", differ, n);
    }
    free(ref);
    free(ref_d);
}

/* ---- AND, broadcast, barrier, mixed sequence -------------------------------- */

typedef struct and_case {
    int false_rank; /* -1: all true */
    int result[MAXW];
    dpt_status st[MAXW];
} and_case;

static dpt_status and_worker(dpt_comm *c, void *p)
{
    and_case *ac = p;
    int r = dpt_comm_rank(c);
    int flag = r == ac->false_rank ? 0 : 3 * (r + 1);
    ac->st[r] = dpt_comm_allreduce_and(c, &flag);
    ac->result[r] = flag;
    return ac->st[r];
}

static void test_and(void)
{
    int fails = *tu_failures();
    for (int ci = 0; ci < N_COUNTS; ci++) {
        const int nw = worker_counts[ci];
        const int cases[] = {-1, 0, nw - 1};
        for (int k = 0; k < 3; k++) {
            and_case ac;
            memset(&ac, 0, sizeof ac);
            ac.false_rank = cases[k];
            dpt_spmd_config cfg = local_cfg(nw);
            CHECK_MSG(dpt_spmd_run(&cfg, and_worker, &ac) == DPT_OK, "%s", dpt_last_error());
            for (int r = 0; r < nw; r++)
                CHECK_MSG(ac.result[r] == (cases[k] < 0 ? 1 : 0), "AND N=%d false at %d: worker %d got %d", nw,
                          cases[k], r, ac.result[r]);
        }
    }
    printf("  allreduce_and (all true, first false, last false; N=1..7)  %s\n",
           *tu_failures() == fails ? "ok" : "FAIL");
}

typedef struct bcast_case {
    int ok[MAXW];
} bcast_case;

static unsigned char pattern(size_t i, int root) { return (unsigned char)(i * 31 + 7 + (size_t)root); }

static dpt_status bcast_worker(dpt_comm *c, void *p)
{
    bcast_case *bc = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    /* Up to 1 MiB: one-barrier path of the local backend; above: peers
     * copy from root's buffer. */
    static const size_t sizes[] = {0, 1, 13, 1000003, 3000000};
    unsigned char *buf = malloc(3000000);
    if (!buf)
        return dpt_fail(DPT_ERR_NOMEM, "test: out of memory");
    int ok = 1;
    for (int ri = 0; ri < 2; ri++) {
        const int root = ri == 0 ? 0 : nw - 1;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const size_t bytes = sizes[si];
            for (size_t i = 0; i < bytes; i++)
                buf[i] = r == root ? pattern(i, root) : 0xab;
            dpt_status st = dpt_comm_broadcast(c, buf, bytes, root);
            if (st) {
                free(buf);
                return st;
            }
            for (size_t i = 0; i < bytes; i++)
                ok &= buf[i] == pattern(i, root);
        }
    }
    bc->ok[r] = ok;
    free(buf);
    return DPT_OK;
}

static void test_broadcast(void)
{
    int fails = *tu_failures();
    for (int ci = 0; ci < N_COUNTS; ci++) {
        bcast_case bc;
        memset(&bc, 0, sizeof bc);
        dpt_spmd_config cfg = local_cfg(worker_counts[ci]);
        CHECK_MSG(dpt_spmd_run(&cfg, bcast_worker, &bc) == DPT_OK, "%s", dpt_last_error());
        for (int r = 0; r < worker_counts[ci]; r++)
            CHECK_MSG(bc.ok[r], "broadcast N=%d: worker %d has wrong bytes", worker_counts[ci], r);
    }
    printf("  broadcast (root 0 and N-1; 0, 1, 13, 1000003, 3000000 bytes; N=1..7)  %s\n",
           *tu_failures() == fails ? "ok" : "FAIL");
}

#define ROUNDS 200

typedef struct barrier_case {
    atomic_int count[ROUNDS];
    int early[MAXW]; /* rounds where the worker saw fewer than N arrivals */
} barrier_case;

static dpt_status barrier_worker(dpt_comm *c, void *p)
{
    barrier_case *bc = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    for (int k = 0; k < ROUNDS; k++) {
        atomic_fetch_add(&bc->count[k], 1);
        dpt_status st = dpt_comm_barrier(c);
        if (st)
            return st;
        if (atomic_load(&bc->count[k]) != nw)
            bc->early[r]++;
    }
    return DPT_OK;
}

static void test_barrier(void)
{
    int fails = *tu_failures();
    for (int ci = 0; ci < N_COUNTS; ci++) {
        barrier_case *bc = calloc(1, sizeof *bc);
        if (!bc)
            return;
        for (int k = 0; k < ROUNDS; k++)
            atomic_init(&bc->count[k], 0);
        dpt_spmd_config cfg = local_cfg(worker_counts[ci]);
        CHECK_MSG(dpt_spmd_run(&cfg, barrier_worker, bc) == DPT_OK, "%s", dpt_last_error());
        for (int r = 0; r < worker_counts[ci]; r++)
            CHECK_MSG(bc->early[r] == 0, "barrier N=%d: worker %d left %d barriers early", worker_counts[ci], r,
                      bc->early[r]);
        free(bc);
    }
    printf("  barrier (%d rounds; N=1..7)  %s\n", ROUNDS, *tu_failures() == fails ? "ok" : "FAIL");
}

/* dpt_comm_wait_seconds: 0 before any collective, then the time inside
 * them: positive, never more than the wall-clock time around the calls,
 * never decreasing. Worker 1 arrives late, so worker 0 has waited. */
typedef struct wait_case {
    double before[2], after[2], wall[2];
} wait_case;

static dpt_status wait_worker(dpt_comm *c, void *p)
{
    wait_case *wc = p;
    const int r = dpt_comm_rank(c);
    wc->before[r] = dpt_comm_wait_seconds(c);
    if (r == 1)
        sleep_ms(20);
    double t0 = now_s();
    dpt_status st = dpt_comm_barrier(c);
    int flag = 1;
    if (st == DPT_OK)
        st = dpt_comm_allreduce_and(c, &flag);
    wc->wall[r] = now_s() - t0;
    wc->after[r] = dpt_comm_wait_seconds(c);
    return st;
}

static void test_wait_seconds(void)
{
    int fails = *tu_failures();
    CHECK(dpt_comm_wait_seconds(NULL) == 0.0);
    wait_case wc = {{-1, -1}, {0, 0}, {0, 0}};
    dpt_spmd_config cfg = local_cfg(2);
    CHECK_MSG(dpt_spmd_run(&cfg, wait_worker, &wc) == DPT_OK, "%s", dpt_last_error());
    for (int r = 0; r < 2; r++) {
        CHECK_MSG(wc.before[r] == 0.0, "worker %d: %g s in collectives before any", r, wc.before[r]);
        CHECK_MSG(wc.after[r] > 0.0 && wc.after[r] <= wc.wall[r] + 1e-6,
                  "worker %d: %g s in collectives, %g s around them", r, wc.after[r], wc.wall[r]);
    }
    printf("  time in collectives (worker 0 waited %.3f s)  %s\n", wc.after[0],
           *tu_failures() == fails ? "ok" : "FAIL");
}

/* Many small collectives of every kind back to back: exercises the
 * generation counter and slot reuse (and gives ThreadSanitizer work). */
static dpt_status mixed_worker(dpt_comm *c, void *p)
{
    int *bad = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    float x[37];
    double d[5];
    unsigned char b[16];
    for (int it = 0; it < 300; it++) {
        for (int i = 0; i < 37; i++)
            x[i] = (float)(r + i + it);
        dpt_status st = dpt_comm_allreduce_f32(c, x, x, 37);
        for (int i = 0; st == DPT_OK && i < 37; i++)
            if (x[i] != (float)(nw * (i + it) + nw * (nw - 1) / 2))
                bad[r]++;
        for (int i = 0; st == DPT_OK && i < 5; i++)
            d[i] = r == it % nw ? 1.5 : 0.0;
        if (st == DPT_OK)
            st = dpt_comm_allreduce_f64(c, d, d, 5);
        if (st == DPT_OK && d[4] != 1.5)
            bad[r]++;
        int flag = r != it % (nw + 1);
        if (st == DPT_OK)
            st = dpt_comm_allreduce_and(c, &flag);
        if (st == DPT_OK && flag != (it % (nw + 1) == nw))
            bad[r]++;
        memset(b, r == it % nw ? it & 0xff : 0, sizeof b);
        if (st == DPT_OK)
            st = dpt_comm_broadcast(c, b, sizeof b, it % nw);
        if (st == DPT_OK && b[15] != (it & 0xff))
            bad[r]++;
        if (st == DPT_OK && it % 7 == 0)
            st = dpt_comm_barrier(c);
        if (st)
            return st;
    }
    return DPT_OK;
}

static void test_mixed(void)
{
    int fails = *tu_failures();
    for (int nw = 2; nw <= 7; nw += 5) {
        int bad[MAXW] = {0};
        dpt_spmd_config cfg = local_cfg(nw);
        CHECK_MSG(dpt_spmd_run(&cfg, mixed_worker, bad) == DPT_OK, "%s", dpt_last_error());
        for (int r = 0; r < nw; r++)
            CHECK_MSG(bad[r] == 0, "mixed N=%d: worker %d saw %d wrong results", nw, r, bad[r]);
    }
    printf("  300 rounds of mixed collectives (N=2, 7)  %s\n", *tu_failures() == fails ? "ok" : "FAIL");
}

/* ---- failures: timeout, failing worker, early return, mismatch -------------- */

/* Workers wait for events of the others (counted in fail_case), not for
 * sleeps that a slow or loaded machine outruns: a worker that skips the
 * collective returns only once all the others came back from it; the late
 * worker enters only once another came back with the failure. Waits for
 * an event are bounded (EVENT_WAIT_MS, only against a broken library: the
 * event then never comes and the checks fail). */
#define EVENT_WAIT_MS 20000

typedef struct fail_case {
    int skip_mask;        /* workers that do not call the collective */
    int fail_rank;        /* worker whose function fails (-1: none) */
    int late_rank;        /* worker that enters after the failure (-1) */
    int mismatch;         /* 1: worker 0 broadcasts; 2: worker 2 sums n=6 */
    atomic_int entering;  /* workers about to call collective #2 */
    atomic_int returned;  /* workers back from collective #2 */
    dpt_status st[MAXW];
    double secs[MAXW];    /* time spent in the collective */
    char msg[MAXW][512];
} fail_case;

/* Wait until *n reaches want; 0 if it did within EVENT_WAIT_MS. */
static int await_count(atomic_int *n, int want)
{
    for (int ms = 0; ms < EVENT_WAIT_MS; ms++) {
        if (atomic_load(n) >= want)
            return 0;
        sleep_ms(1);
    }
    return atomic_load(n) >= want ? 0 : -1;
}

static dpt_status fail_worker(dpt_comm *c, void *p)
{
    fail_case *fc = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    dpt_status st = dpt_comm_barrier(c); /* #1, so the interesting call is #2 */
    if (st)
        return st;
    int n_skip = 0;
    for (int k = 0; k < nw; k++)
        n_skip += (fc->skip_mask >> k) & 1;
    const int n_callers = nw - n_skip - (fc->fail_rank >= 0) - (fc->late_rank >= 0);
    if (fc->skip_mask & (1 << r)) {
        /* Return only after the others came back (timed out): returning
         * earlier would be another failure, a worker that returned. */
        await_count(&fc->returned, n_callers);
        return DPT_OK;
    }
    if (r == fc->fail_rank) {
        /* Fail once the others are about to wait for this worker; the
         * sleep makes it likely that they are inside the collective by
         * then, but the checks hold either way (a collective entered after
         * a failure fails at once, with the same message). */
        await_count(&fc->entering, n_callers);
        sleep_ms(100);
        return dpt_fail(DPT_ERR_FORMAT, "bad thing 42");
    }
    if (r == fc->late_rank) /* enter only once the failure broke the group */
        await_count(&fc->returned, n_callers);
    else
        atomic_fetch_add(&fc->entering, 1);
    float x[6] = {1, 2, 3, 4, 5, 6};
    double t0 = now_s();
    if (fc->mismatch == 1 && r == 0)
        st = dpt_comm_broadcast(c, x, sizeof x, 0);
    else if (fc->mismatch == 2)
        st = dpt_comm_allreduce_f32(c, x, x, r == 2 ? 6 : 5);
    else if (fc->skip_mask)
        st = dpt_comm_allreduce_f32(c, x, x, 5);
    else
        st = dpt_comm_barrier(c);
    fc->secs[r] = now_s() - t0;
    fc->st[r] = st;
    snprintf(fc->msg[r], sizeof fc->msg[r], "%s", st ? dpt_last_error() : "");
    atomic_fetch_add(&fc->returned, 1);
    return st;
}

static dpt_status run_fail(fail_case *fc, int nw, long timeout_ms, char *msg, size_t msg_size, double *secs)
{
    dpt_spmd_config cfg = local_cfg(nw);
    cfg.timeout_ms = timeout_ms;
    double t0 = now_s();
    dpt_status st = dpt_spmd_run(&cfg, fail_worker, fc);
    *secs = now_s() - t0;
    snprintf(msg, msg_size, "%s", dpt_last_error());
    return st;
}

/* Waiters spin for a while before they sleep (DPT_SPIN_US, default 2 ms),
 * only with no more workers than CPUs. Seen from worker 0's thread CPU
 * time while the others arrive 30 ms late at each of 20 barriers: about 0
 * when it sleeps at once, about the budget per barrier when it spins. The
 * bounds are wide: a loaded machine deschedules spinners, so a spinner's
 * CPU time is its share of a core times the spin; the lower bounds hold
 * down to a share of 10% (20 x 2 ms x 0.1 = 4 ms), yet each case fails if
 * the budget is ignored, misread or applied when oversubscribed. Then a
 * spin budget (1 s) far longer than a collective's timeout (100 ms): the
 * timeout still ends the wait, well before the budget would. */
#define SPIN_ROUNDS 20
#define SPIN_LATE_MS 30

typedef struct spin_case {
    int early;         /* barriers worker 0 left before all arrived */
    atomic_int count[SPIN_ROUNDS];
    double cpu, wall;  /* worker 0, inside the barriers */
} spin_case;

static double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static dpt_status spin_worker(dpt_comm *c, void *p)
{
    spin_case *sc = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    for (int k = 0; k < SPIN_ROUNDS; k++) {
        if (r)
            sleep_ms(SPIN_LATE_MS);
        atomic_fetch_add(&sc->count[k], 1);
        double c0 = r ? 0.0 : thread_cpu_s(), w0 = r ? 0.0 : now_s();
        dpt_status st = dpt_comm_barrier(c);
        if (st)
            return st;
        if (r == 0) {
            sc->cpu += thread_cpu_s() - c0;
            sc->wall += now_s() - w0;
            if (atomic_load(&sc->count[k]) != nw)
                sc->early++;
        }
    }
    return DPT_OK;
}

static void test_spin(void)
{
    int fails = *tu_failures();
    const int cpus = dpt_cpu_count();
    static const struct {
        const char *budget;
        int over;               /* 1: one worker more than CPUs */
        double cpu_lo, cpu_hi;  /* worker 0's CPU seconds in the barriers */
    } cases[] = {
        {"0", 0, 0.0, 0.003},      /* sleeps at once */
        {"20000", 0, 0.04, 2.0},   /* spins 20 ms of each 30 ms wait */
        {"junk", 0, 0.004, 0.08},  /* invalid: the default 2 ms (40 ms in all) */
        {"20000", 1, 0.0, 0.003},  /* oversubscribed: never spins */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const int nw = cases[k].over ? cpus + 1 : 2;
        if (nw > MAXW || (!cases[k].over && cpus < 2))
            continue;
        setenv("DPT_SPIN_US", cases[k].budget, 1);
        spin_case *sc = calloc(1, sizeof *sc);
        if (!sc)
            return;
        dpt_spmd_config cfg = local_cfg(nw);
        CHECK_MSG(dpt_spmd_run(&cfg, spin_worker, sc) == DPT_OK, "%s", dpt_last_error());
        CHECK_MSG(sc->early == 0, "DPT_SPIN_US=%s: %d barriers left early", cases[k].budget,
                  sc->early);
        CHECK_MSG(sc->cpu >= cases[k].cpu_lo && sc->cpu <= cases[k].cpu_hi,
                  "DPT_SPIN_US=%s, %d workers on %d CPUs: worker 0 used %.4f s of CPU in %.3f s "
                  "of barriers, want %.3f..%.3f",
                  cases[k].budget, nw, cpus, sc->cpu, sc->wall, cases[k].cpu_lo, cases[k].cpu_hi);
        free(sc);
    }
    setenv("DPT_SPIN_US", "1000000", 1); /* 1 s of spinning allowed, 100 ms timeout */
    fail_case fc;
    memset(&fc, 0, sizeof fc);
    fc.skip_mask = 1 << 1;
    fc.fail_rank = fc.late_rank = -1;
    char msg[1024];
    double secs;
    dpt_status st = run_fail(&fc, 2, 100, msg, sizeof msg, &secs);
    CHECK_MSG(st == DPT_ERR_TIMEOUT && fc.st[0] == DPT_ERR_TIMEOUT, "status %d / %d: %s", st, fc.st[0],
              msg);
    CHECK_MSG(fc.secs[0] >= 0.09 && fc.secs[0] < 0.9, "timed out after %.3f s, want 0.1 (spinning the budget: 1 s)",
              fc.secs[0]);
    unsetenv("DPT_SPIN_US");
    printf("  spin, then sleep: CPU of a waiting worker with budgets 0, 20 ms, invalid (2 ms), "
           "oversubscribed; a timeout shorter than the budget  %s\n",
           *tu_failures() == fails ? "ok" : "FAIL");
}

static void test_timeout(void)
{
    static const struct {
        int mask;
        const char *want;
    } cases[] = {
        {1 << 2, "allreduce_f32 #2: timed out after 200 ms waiting for worker 2"},
        {(1 << 2) | (1 << 3), "allreduce_f32 #2: timed out after 200 ms waiting for workers 2, 3"},
    };
    for (int k = 0; k < 2; k++) {
        int fails = *tu_failures();
        fail_case fc;
        memset(&fc, 0, sizeof fc);
        fc.skip_mask = cases[k].mask;
        fc.fail_rank = fc.late_rank = -1;
        char msg[1024];
        double secs;
        dpt_status st = run_fail(&fc, 4, 200, msg, sizeof msg, &secs);
        for (int r = 0; r < 4; r++) {
            if (fc.skip_mask & (1 << r))
                continue;
            CHECK_MSG(fc.st[r] == DPT_ERR_TIMEOUT, "worker %d: status %d (%s)", r, fc.st[r], fc.msg[r]);
            CHECK_MSG(strcmp(fc.msg[r], cases[k].want) == 0, "worker %d: message '%s', want '%s'", r, fc.msg[r],
                      cases[k].want);
            /* A timer: never early; late only by scheduling delays (10 s
             * for a slow, loaded machine; a timeout that never fires ends
             * only when the skipping workers give up, after 20 s). */
            CHECK_MSG(fc.secs[r] >= 0.19 && fc.secs[r] < 10.0, "worker %d timed out after %.3f s", r,
                      fc.secs[r]);
        }
        CHECK_MSG(st == DPT_ERR_TIMEOUT, "dpt_spmd_run: status %d", st);
        CHECK_MSG(strncmp(msg, "worker ", 7) == 0 && strstr(msg, cases[k].want), "dpt_spmd_run: '%s'", msg);
        printf("  timeout names the missing worker(s): \"%s\"  %s\n", msg, *tu_failures() == fails ? "ok" : "FAIL");
    }
}

static void test_failing_worker(void)
{
    int fails = *tu_failures();
    fail_case fc;
    memset(&fc, 0, sizeof fc);
    fc.fail_rank = 1;
    fc.late_rank = 3;
    char msg[1024];
    double secs;
    dpt_status st = run_fail(&fc, 4, 30000, msg, sizeof msg, &secs);
    for (int r = 0; r < 4; r++) {
        if (r == 1)
            continue;
        CHECK_MSG(fc.st[r] == DPT_ERR_COMM, "worker %d: status %d (%s)", r, fc.st[r], fc.msg[r]);
        CHECK_MSG(strcmp(fc.msg[r], "barrier #2: worker 1 failed: bad thing 42") == 0, "worker %d: '%s'", r,
                  fc.msg[r]);
        CHECK_MSG(fc.secs[r] < 5.0, "worker %d waited %.3f s after worker 1 failed", r, fc.secs[r]);
    }
    /* Without the failure seen, the waits would last the 30 s timeout:
     * the bounds below leave a slow, loaded machine 6x and 3x margins. */
    CHECK_MSG(st == DPT_ERR_FORMAT, "dpt_spmd_run: status %d", st);
    CHECK_MSG(strcmp(msg, "worker 1: bad thing 42") == 0, "dpt_spmd_run: '%s'", msg);
    CHECK_MSG(secs < 10.0, "dpt_spmd_run took %.3f s", secs);
    printf("  failing worker releases the others (%.2f s): \"%s\"  %s\n", secs, msg,
           *tu_failures() == fails ? "ok" : "FAIL");
}

/* A worker that returns while the others wait for it. */
static dpt_status early_worker(dpt_comm *c, void *p)
{
    fail_case *fc = p;
    const int r = dpt_comm_rank(c);
    if (r == 2)
        return DPT_OK;
    double t0 = now_s();
    fc->st[r] = dpt_comm_barrier(c);
    fc->secs[r] = now_s() - t0;
    snprintf(fc->msg[r], sizeof fc->msg[r], "%s", dpt_last_error());
    return fc->st[r];
}

static void test_early_return(void)
{
    int fails = *tu_failures();
    fail_case fc;
    memset(&fc, 0, sizeof fc);
    dpt_spmd_config cfg = local_cfg(3);
    cfg.timeout_ms = 30000;
    dpt_status st = dpt_spmd_run(&cfg, early_worker, &fc);
    for (int r = 0; r < 2; r++) {
        CHECK_MSG(fc.st[r] == DPT_ERR_COMM, "worker %d: status %d", r, fc.st[r]);
        CHECK_MSG(strstr(fc.msg[r], "worker 2 returned from its worker function after 0 collective calls"),
                  "worker %d: '%s'", r, fc.msg[r]);
        CHECK_MSG(fc.secs[r] < 5.0, "worker %d waited %.3f s", r, fc.secs[r]);
    }
    CHECK_MSG(st == DPT_ERR_COMM, "dpt_spmd_run: status %d", st);
    printf("  worker returning early: \"%s\"  %s\n", dpt_last_error(), *tu_failures() == fails ? "ok" : "FAIL");
}

static void test_mismatch(void)
{
    static const char *const want[] = {
        NULL,
        "workers called different collectives: worker 0 called broadcast #2 (bytes=24, root 0), worker 1 called "
        "barrier #2",
        "workers called different collectives: worker 0 called allreduce_f32 #2 (n=5), worker 2 called "
        "allreduce_f32 #2 (n=6)",
    };
    for (int k = 1; k <= 2; k++) {
        int fails = *tu_failures();
        fail_case fc;
        memset(&fc, 0, sizeof fc);
        fc.fail_rank = fc.late_rank = -1;
        fc.mismatch = k;
        char msg[1024];
        double secs;
        dpt_status st = run_fail(&fc, 3, 30000, msg, sizeof msg, &secs);
        for (int r = 0; r < 3; r++) {
            CHECK_MSG(fc.st[r] == DPT_ERR_COMM, "worker %d: status %d", r, fc.st[r]);
            CHECK_MSG(strstr(fc.msg[r], want[k]), "worker %d: '%s'", r, fc.msg[r]);
        }
        CHECK(st == DPT_ERR_COMM);
        printf("  mismatched collectives: \"%s\"  %s\n", msg, *tu_failures() == fails ? "ok" : "FAIL");
    }
}

/* dpt_comm_abort from user code, then later collectives on the aborted
 * communicator fail at once. */
static dpt_status abort_worker(dpt_comm *c, void *p)
{
    fail_case *fc = p;
    const int r = dpt_comm_rank(c);
    float x = 1;
    if (r == 0) {
        dpt_fail(DPT_ERR_NUMERIC, "loss is NaN at iteration 3");
        dpt_comm_abort(c, DPT_ERR_NUMERIC);
        dpt_comm_abort(c, DPT_ERR_IO); /* second abort: no effect */
        fc->st[0] = dpt_comm_barrier(c);
        snprintf(fc->msg[0], sizeof fc->msg[0], "%s", dpt_last_error());
        return DPT_OK;
    }
    fc->st[r] = dpt_comm_allreduce_f32(c, &x, &x, 1);
    snprintf(fc->msg[r], sizeof fc->msg[r], "%s", dpt_last_error());
    dpt_status st = dpt_comm_barrier(c);
    fc->secs[r] = st == DPT_ERR_COMM;
    return fc->st[r];
}

static void test_abort(void)
{
    int fails = *tu_failures();
    fail_case fc;
    memset(&fc, 0, sizeof fc);
    dpt_spmd_config cfg = local_cfg(3);
    cfg.timeout_ms = 30000;
    dpt_status st = dpt_spmd_run(&cfg, abort_worker, &fc);
    CHECK_MSG(fc.st[0] == DPT_ERR_COMM && strcmp(fc.msg[0], "barrier #1: worker 0 failed: loss is NaN at iteration 3") == 0,
              "worker 0: '%s'", fc.msg[0]);
    for (int r = 1; r < 3; r++) {
        CHECK_MSG(fc.st[r] == DPT_ERR_COMM &&
                      strcmp(fc.msg[r], "allreduce_f32 #1: worker 0 failed: loss is NaN at iteration 3") == 0,
                  "worker %d: '%s'", r, fc.msg[r]);
        CHECK_MSG(fc.secs[r] == 1, "worker %d: a later collective did not fail", r);
    }
    CHECK(st == DPT_ERR_COMM);
    CHECK_MSG(strstr(dpt_last_error(), "worker 0 failed: loss is NaN") != NULL, "'%s'", dpt_last_error());
    printf("  dpt_comm_abort: \"%s\"  %s\n", dpt_last_error(), *tu_failures() == fails ? "ok" : "FAIL");
}

/* ---- configuration, arguments, accessors ----------------------------------- */

/* Worker r writes got[r]; every worker must see the same timeout. */
static dpt_status timeout_probe(dpt_comm *c, void *p)
{
    ((long *)p)[dpt_comm_rank(c)] = dpt_comm_get_timeout_ms(c);
    return DPT_OK;
}

static long probe_timeout(long cfg_ms, const char *env, dpt_status *st)
{
    if (env)
        setenv("DPT_COMM_TIMEOUT_MS", env, 1);
    else
        unsetenv("DPT_COMM_TIMEOUT_MS");
    dpt_spmd_config cfg = local_cfg(2);
    cfg.timeout_ms = cfg_ms;
    long got[2] = {-1, -2};
    *st = dpt_spmd_run(&cfg, timeout_probe, got);
    unsetenv("DPT_COMM_TIMEOUT_MS");
    return got[0] == got[1] ? got[0] : -3;
}

static dpt_status arg_worker(dpt_comm *c, void *p)
{
    int *bad = p;
    float x[4] = {1, 2, 3, 4};
    if (dpt_comm_rank(c) != 0 || dpt_comm_size(c) != 1 || dpt_comm_get_backend(c) != DPT_COMM_LOCAL)
        (*bad)++;
    if (dpt_comm_allreduce_f32(c, NULL, x, 3) != DPT_ERR_ARG ||
        strcmp(dpt_last_error(), "allreduce_f32 #1: send buffer is NULL (n=3)") != 0)
        (*bad)++;
    if (dpt_comm_allreduce_f32(c, x, x + 1, 3) != DPT_ERR_ARG || !strstr(dpt_last_error(), "overlap"))
        (*bad)++;
    if (dpt_comm_allreduce_and(c, NULL) != DPT_ERR_ARG)
        (*bad)++;
    if (dpt_comm_broadcast(c, x, 4, 1) != DPT_ERR_ARG ||
        strcmp(dpt_last_error(), "broadcast #1: root 1 is not a worker (size 1)") != 0)
        (*bad)++;
    if (dpt_comm_allreduce_f32(c, NULL, NULL, 0) != DPT_OK) /* n = 0: NULL is fine; this is #1 */
        (*bad)++;
    if (dpt_comm_allreduce_f64(c, NULL, NULL, 2) != DPT_ERR_ARG ||
        strcmp(dpt_last_error(), "allreduce_f64 #2: send buffer is NULL (n=2)") != 0)
        (*bad)++;
    if (dpt_comm_allreduce_f32(c, x, x + 1, 3) != DPT_ERR_ARG) /* recv = send + 1 overlaps */
        (*bad)++;
    float y[3];
    if (dpt_comm_allreduce_f32(c, x, y, 3) != DPT_OK || y[2] != 3.0f)
        (*bad)++;
    dpt_comm_set_timeout_ms(c, -5);
    if (dpt_comm_get_timeout_ms(c) != 0)
        (*bad)++;
    return DPT_OK;
}

static dpt_status noop_worker(dpt_comm *c, void *p)
{
    (void)c;
    (void)p;
    return DPT_OK;
}

static void with_env(const char *name, const char *value, int *saved_set, char *saved, size_t size)
{
    const char *old = getenv(name);
    *saved_set = old != NULL;
    if (old)
        snprintf(saved, size, "%s", old);
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

static void restore_env(const char *name, int saved_set, const char *saved)
{
    if (saved_set)
        setenv(name, saved, 1);
    else
        unsetenv(name);
}

static void test_config(void)
{
    int fails = *tu_failures();
    dpt_comm_backend b = DPT_COMM_MPI;
    CHECK(dpt_comm_backend_parse("auto", &b) == DPT_OK && b == DPT_COMM_AUTO);
    CHECK(dpt_comm_backend_parse("local", &b) == DPT_OK && b == DPT_COMM_LOCAL);
    CHECK(dpt_comm_backend_parse("mpi", &b) == DPT_OK && b == DPT_COMM_MPI);
    CHECK(dpt_comm_backend_parse("nccl", &b) == DPT_ERR_ARG && strstr(dpt_last_error(), "'nccl'"));
    CHECK(dpt_comm_backend_parse(NULL, &b) == DPT_ERR_ARG);
    CHECK(strcmp(dpt_comm_backend_name(DPT_COMM_LOCAL), "local") == 0);
    CHECK(strcmp(dpt_comm_backend_name(DPT_COMM_MPI), "mpi") == 0);
#ifdef DPT_HAVE_MPI
    CHECK(dpt_comm_have_mpi() == 1);
#else
    CHECK(dpt_comm_have_mpi() == 0);
#endif
    CHECK(dpt_comm_rank(NULL) == -1 && dpt_comm_size(NULL) == 0);
    CHECK(dpt_comm_barrier(NULL) == DPT_ERR_ARG);
    dpt_comm_abort(NULL, DPT_ERR_IO); /* no effect */

    /* Launcher detection from the environment. */
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK",
                                       "MV2_COMM_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"};
    enum { NV = sizeof vars / sizeof vars[0] };
    int saved_set[NV];
    char saved[NV][256];
    for (int i = 0; i < NV; i++)
        with_env(vars[i], NULL, &saved_set[i], saved[i], sizeof saved[i]);
    CHECK(dpt_comm_launched_by_mpi() == 0);
    setenv("SLURM_PROCID", "0", 1);
    setenv("SLURM_NTASKS", "1", 1);
    CHECK(dpt_comm_launched_by_mpi() == 0);
    setenv("SLURM_NTASKS", "4", 1);
    CHECK(dpt_comm_launched_by_mpi() == 1);
    unsetenv("SLURM_PROCID");
    unsetenv("SLURM_NTASKS");
    setenv("PMIX_RANK", "0", 1);
    CHECK(dpt_comm_launched_by_mpi() == 1);
    unsetenv("PMIX_RANK");
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    CHECK(dpt_comm_launched_by_mpi() == 1);
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    if (!dpt_comm_have_mpi()) {
        CHECK(dpt_spmd_run(&cfg, noop_worker, NULL) == DPT_ERR_UNSUPPORTED);
        CHECK_MSG(strstr(dpt_last_error(), "4 ranks") && strstr(dpt_last_error(), "no MPI"), "'%s'",
                  dpt_last_error());
    }
    unsetenv("OMPI_COMM_WORLD_SIZE");
    if (!dpt_comm_have_mpi()) {
        cfg.backend = DPT_COMM_MPI;
        CHECK(dpt_spmd_run(&cfg, noop_worker, NULL) == DPT_ERR_UNSUPPORTED);
        CHECK(strstr(dpt_last_error(), "no MPI support") != NULL);
    }
    for (int i = 0; i < NV; i++)
        restore_env(vars[i], saved_set[i], saved[i]);

    /* Config checks. */
    CHECK(dpt_spmd_run(NULL, noop_worker, NULL) == DPT_ERR_ARG);
    cfg = local_cfg(2);
    CHECK(dpt_spmd_run(&cfg, NULL, NULL) == DPT_ERR_ARG);
    cfg.version = 2;
    CHECK(dpt_spmd_run(&cfg, noop_worker, NULL) == DPT_ERR_ARG && strstr(dpt_last_error(), "version 2"));
    cfg = local_cfg(0);
    CHECK(dpt_spmd_run(&cfg, noop_worker, NULL) == DPT_ERR_ARG && strstr(dpt_last_error(), "0 workers"));
    cfg = local_cfg(100000);
    CHECK(dpt_spmd_run(&cfg, noop_worker, NULL) == DPT_ERR_ARG);
    cfg = local_cfg(2);
    cfg.backend = (dpt_comm_backend)42;
    CHECK(dpt_spmd_run(&cfg, noop_worker, NULL) == DPT_ERR_ARG);

    /* Timeout: config, then DPT_COMM_TIMEOUT_MS, then the default. */
    int saved_to_set;
    char saved_to[256];
    with_env("DPT_COMM_TIMEOUT_MS", NULL, &saved_to_set, saved_to, sizeof saved_to);
    dpt_status st;
    CHECK(probe_timeout(0, NULL, &st) == DPT_COMM_DEFAULT_TIMEOUT_MS && st == DPT_OK);
    CHECK(probe_timeout(0, "1234", &st) == 1234 && st == DPT_OK);
    CHECK(probe_timeout(0, "0", &st) == 0 && st == DPT_OK);
    CHECK(probe_timeout(77, "1234", &st) == 77 && st == DPT_OK);
    CHECK(probe_timeout(-1, NULL, &st) == 0 && st == DPT_OK);
    probe_timeout(0, "12s", &st);
    CHECK(st == DPT_ERR_ARG && strstr(dpt_last_error(), "DPT_COMM_TIMEOUT_MS: '12s'"));
    restore_env("DPT_COMM_TIMEOUT_MS", saved_to_set, saved_to);

    /* Argument checks inside a worker. */
    int bad = 0;
    cfg = local_cfg(1);
    CHECK_MSG(dpt_spmd_run(&cfg, arg_worker, &bad) == DPT_OK, "%s", dpt_last_error());
    CHECK_MSG(bad == 0, "%d argument checks failed", bad);
    printf("  configuration, launcher detection, argument checks  %s\n", *tu_failures() == fails ? "ok" : "FAIL");
}

/* ---- MPI modes -------------------------------------------------------------- */

typedef struct mpi_case {
    const char *mode;
    int bad;
} mpi_case;

static dpt_status mpi_check_sum(dpt_comm *c, size_t n, int f64, int inplace, int *bad)
{
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    char *send = malloc(n ? n * es : 1), *ref = malloc(n ? n * es : 1);
    char *recv = inplace ? send : malloc(n ? n * es : 1);
    if (!send || !recv || !ref) {
        free(send);
        free(ref);
        if (recv != send)
            free(recv);
        return dpt_fail(DPT_ERR_NOMEM, "test: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (f64)
            ((double *)send)[i] = val64(r, i);
        else
            ((float *)send)[i] = val32(r, i);
    }
    if (f64)
        ref64((double *)ref, n, nw);
    else
        ref32((float *)ref, n, nw, val32);
    double t0 = now_s();
    dpt_status st = f64 ? dpt_comm_allreduce_f64(c, (const double *)send, (double *)recv, n)
                        : dpt_comm_allreduce_f32(c, (const float *)send, (float *)recv, n);
    double t1 = now_s();
    int ok = st == DPT_OK && memcmp(recv, ref, n * es) == 0;
    if (!ok) {
        fprintf(stderr, "rank %d: FAIL %s n=%zu %s: %s\n", r, f64 ? "allreduce_f64" : "allreduce_f32", n,
                inplace ? "in place" : "out of place", st ? dpt_last_error() : "bits differ from rank-order sum");
        (*bad)++;
    } else if (r == 0) {
        printf("  %s N=%d n=%-8zu %-12s ok (%.3f s)\n", f64 ? "allreduce_f64" : "allreduce_f32", nw, n,
               inplace ? "in place" : "out of place", t1 - t0);
    }
    free(send);
    free(ref);
    if (recv != send)
        free(recv);
    return st;
}

static dpt_status mpi_worker(dpt_comm *c, void *p)
{
    mpi_case *mc = p;
    const int r = dpt_comm_rank(c), nw = dpt_comm_size(c);
    dpt_status st = DPT_OK;
    if (strcmp(mc->mode, "mpi-timeout") == 0) {
        if (r == 1) /* past test_comm_mpi.sh's limit: only the watchdog ends the job */
            sleep_ms(300000);
        return dpt_comm_barrier(c);
    }
    if (strcmp(mc->mode, "mpi-stop") == 0) {
        /* The last rank stops itself (as SIGSTOP from outside would): it
         * never arrives and can answer no watchdog's question. */
        if (r == nw - 1)
            raise(SIGSTOP);
        return dpt_comm_barrier(c);
    }
    if (strcmp(mc->mode, "mpi-fail") == 0) {
        if (r == 1) {
            /* Likely (not needed) to find rank 0 waiting in the barrier. */
            sleep_ms(100);
            return dpt_fail(DPT_ERR_FORMAT, "bad thing 42");
        }
        /* Past test_comm_mpi.sh's limit: only the failure ends the job. */
        dpt_comm_set_timeout_ms(c, 300000);
        return dpt_comm_barrier(c);
    }

    if (r == 0)
        printf("test_comm: MPI backend checks, %d ranks\n", nw);
    if (dpt_comm_get_backend(c) != DPT_COMM_MPI) {
        fprintf(stderr, "rank %d: FAIL backend is %s\n", r, dpt_comm_backend_name(dpt_comm_get_backend(c)));
        mc->bad++;
    }
    const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
    if (ws && atoi(ws) != nw) {
        fprintf(stderr, "rank %d: FAIL size %d, OMPI_COMM_WORLD_SIZE %s\n", r, nw, ws);
        mc->bad++;
    }
    static const size_t sizes[] = {0, 1, 7, 4096, 8193, 1000003, 10000000};
    for (size_t i = 0; st == DPT_OK && i < sizeof sizes / sizeof sizes[0]; i++)
        st = mpi_check_sum(c, sizes[i], 0, (int)(i % 2), &mc->bad);
    for (size_t i = 0; st == DPT_OK && i < 6; i++)
        st = mpi_check_sum(c, sizes[i], 1, (int)((i + 1) % 2), &mc->bad);
    if (st == DPT_OK) /* the other buffer mode for the big one */
        st = mpi_check_sum(c, 1000003, 0, 1, &mc->bad);
    for (int k = -1; st == DPT_OK && k < nw; k++) {
        int flag = r == k ? 0 : r + 2;
        st = dpt_comm_allreduce_and(c, &flag);
        if (st == DPT_OK && flag != (k < 0)) {
            fprintf(stderr, "rank %d: FAIL AND with rank %d false gave %d\n", r, k, flag);
            mc->bad++;
        }
    }
    if (st == DPT_OK && r == 0)
        printf("  allreduce_and ok\n");
    if (st == DPT_OK) {
        bcast_case bc;
        memset(&bc, 0, sizeof bc);
        st = bcast_worker(c, &bc);
        if (st == DPT_OK && !bc.ok[r]) {
            fprintf(stderr, "rank %d: FAIL broadcast\n", r);
            mc->bad++;
        } else if (st == DPT_OK && r == 0) {
            printf("  broadcast ok\n");
        }
    }
    for (int k = 0; st == DPT_OK && k < 50; k++)
        st = dpt_comm_barrier(c);
    if (st == DPT_OK) {
        int bad[1] = {0};
        /* mixed_worker indexes bad[] by rank; give it a private slot. */
        int slots[1024] = {0};
        st = nw <= 1024 ? mixed_worker(c, slots) : DPT_OK;
        bad[0] = nw <= 1024 ? slots[r] : 0;
        if (bad[0]) {
            fprintf(stderr, "rank %d: FAIL %d wrong results in mixed collectives\n", r, bad[0]);
            mc->bad++;
        } else if (st == DPT_OK && r == 0) {
            printf("  barrier, 300 rounds of mixed collectives ok\n");
        }
    }
    if (st)
        return st;
    if (mc->bad)
        return dpt_fail(DPT_ERR_COMM, "%d MPI checks failed on rank %d", mc->bad, r);
    return DPT_OK;
}

static int run_mpi_mode(const char *mode)
{
    if (!dpt_comm_have_mpi()) {
        printf("test_comm %s: this build has no MPI backend; skipped\n", mode);
        return TU_SKIP;
    }
    mpi_case mc = {mode, 0};
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_MPI;
    dpt_status st = dpt_spmd_run(&cfg, mpi_worker, &mc);
    if (st) {
        fprintf(stderr, "test_comm %s: %s\n", mode, dpt_last_error());
        return 1;
    }
    if (strcmp(mode, "mpi") == 0)
        printf("test_comm: rank checks passed\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strncmp(argv[1], "mpi", 3) == 0)
            return run_mpi_mode(argv[1]);
        fprintf(stderr, "usage: test_comm [mpi|mpi-timeout|mpi-stop|mpi-fail]\n");
        return 2;
    }
    if (dpt_comm_launched_by_mpi()) {
        printf("test_comm: started by an MPI launcher without a mode; running the MPI checks\n");
        return run_mpi_mode("mpi");
    }
    double t0 = now_s();
    printf("test_comm: local backend\n");
    test_config();
    test_and();
    test_broadcast();
    test_barrier();
    test_wait_seconds();
    test_mixed();
    test_timeout();
    test_spin();
    test_failing_worker();
    test_early_return();
    test_mismatch();
    test_abort();
    test_sums();
    printf("test_comm: %s (%.1f s)\n", tu_exit() ? "FAILED" : "passed", now_s() - t0);
    return tu_exit();
}
