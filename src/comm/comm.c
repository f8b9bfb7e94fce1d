/* Communicator front end: argument checks, sequence numbers, dispatch to
 * the backend vtable, backend selection and the SPMD entry point. */
#include "comm/comm_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double dpt_comm_wait_seconds(const dpt_comm *c)
{
    return c ? c->busy_s : 0.0;
}

/* ---- backend names and launcher detection -------------------------------- */

dpt_status dpt_comm_backend_parse(const char *name, dpt_comm_backend *out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_comm_backend_parse: out is NULL");
    if (!name)
        return dpt_fail(DPT_ERR_ARG, "communicator backend: missing name (expected auto, local or mpi)");
    if (strcmp(name, "auto") == 0)
        *out = DPT_COMM_AUTO;
    else if (strcmp(name, "local") == 0)
        *out = DPT_COMM_LOCAL;
    else if (strcmp(name, "mpi") == 0)
        *out = DPT_COMM_MPI;
    else
        return dpt_fail(DPT_ERR_ARG, "communicator backend '%s': expected auto, local or mpi", name);
    return DPT_OK;
}

const char *dpt_comm_backend_name(dpt_comm_backend b)
{
    switch (b) {
    case DPT_COMM_AUTO: return "auto";
    case DPT_COMM_LOCAL: return "local";
    case DPT_COMM_MPI: return "mpi";
    }
    return "unknown";
}

static int env_set(const char *name)
{
    const char *v = getenv(name);
    return v && v[0];
}

/* Integer value of an environment variable, or `dflt` when unset or not a
 * number. */
static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    if (!v || !v[0])
        return dflt;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end)
        return dflt;
    return x;
}

int dpt_comm_launched_by_mpi(void)
{
    if (env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_SIZE") || env_set("PMI_RANK") ||
        env_set("PMIX_RANK") || env_set("MV2_COMM_WORLD_SIZE"))
        return 1;
    if (env_set("SLURM_PROCID") && env_long("SLURM_NTASKS", 1) > 1)
        return 1;
    return 0;
}

/* Number of ranks the launcher says it started, 0 when unknown. */
static long launcher_world_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE",
                                       "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        long n = env_long(vars[i], 0);
        if (n > 0)
            return n;
    }
    return 0;
}

int dpt_comm_have_mpi(void)
{
#ifdef DPT_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

/* ---- accessors ------------------------------------------------------------ */

int dpt_comm_rank(const dpt_comm *c) { return c ? c->rank : -1; }
int dpt_comm_size(const dpt_comm *c) { return c ? c->size : 0; }

dpt_comm_backend dpt_comm_get_backend(const dpt_comm *c)
{
    return c ? c->ops->backend : DPT_COMM_AUTO;
}

void dpt_comm_set_timeout_ms(dpt_comm *c, long ms)
{
    if (c)
        c->timeout_ms = ms > 0 ? ms : 0;
}

long dpt_comm_get_timeout_ms(const dpt_comm *c) { return c ? c->timeout_ms : 0; }

/* ---- helpers shared by the backends --------------------------------------- */

const char *dpt_comm_op_name(comm_op op)
{
    switch (op) {
    case COMM_OP_SUM_F32: return "allreduce_f32";
    case COMM_OP_SUM_F64: return "allreduce_f64";
    case COMM_OP_AND: return "allreduce_and";
    case COMM_OP_BROADCAST: return "broadcast";
    case COMM_OP_BARRIER: return "barrier";
    }
    return "collective";
}

size_t dpt_comm_op_elem_bytes(comm_op op)
{
    switch (op) {
    case COMM_OP_SUM_F32: return sizeof(float);
    case COMM_OP_SUM_F64: return sizeof(double);
    case COMM_OP_AND: return sizeof(int);
    default: return 1;
    }
}

void dpt_comm_chunk(size_t n, int parts, int part, size_t align, size_t *lo, size_t *hi)
{
    size_t per = (n + (size_t)parts - 1) / (size_t)parts;
    per = (per + align - 1) / align * align;
    size_t a = per * (size_t)part;
    if (a > n)
        a = n;
    size_t b = n - a < per ? n : a + per;
    *lo = a;
    *hi = b;
}

/* Block size of the rank-order sum: the partial sums of one block stay in
 * L1 while every row is added into them. */
#define SUM_BLOCK 1024

void dpt_comm_sum_f32(float *out, const float *const *rows, int n_rows, size_t n)
{
    float acc[SUM_BLOCK];
    for (size_t b = 0; b < n; b += SUM_BLOCK) {
        size_t m = n - b < SUM_BLOCK ? n - b : SUM_BLOCK;
        const float *r0 = rows[0] + b;
        for (size_t i = 0; i < m; i++)
            acc[i] = r0[i];
        for (int k = 1; k < n_rows; k++) {
            const float *rk = rows[k] + b;
            for (size_t i = 0; i < m; i++)
                acc[i] += rk[i];
        }
        memcpy(out + b, acc, m * sizeof *acc);
    }
}

void dpt_comm_sum_f64(double *out, const double *const *rows, int n_rows, size_t n)
{
    double acc[SUM_BLOCK];
    for (size_t b = 0; b < n; b += SUM_BLOCK) {
        size_t m = n - b < SUM_BLOCK ? n - b : SUM_BLOCK;
        const double *r0 = rows[0] + b;
        for (size_t i = 0; i < m; i++)
            acc[i] = r0[i];
        for (int k = 1; k < n_rows; k++) {
            const double *rk = rows[k] + b;
            for (size_t i = 0; i < m; i++)
                acc[i] += rk[i];
        }
        memcpy(out + b, acc, m * sizeof *acc);
    }
}

/* ---- collectives: checks, sequence number, dispatch ------------------------ */

/* A call rejected for its arguments does not reach the backend and does
 * not count: sequence numbers count the collectives the workers enter, so
 * they agree across workers. Messages about a rejected call name the
 * number it would have had (seq + 1). */
static unsigned long long next_seq(const dpt_comm *c) { return (unsigned long long)c->seq + 1; }

static dpt_status allreduce_sum(dpt_comm *c, comm_op op, const void *send, void *recv, size_t n)
{
    if (!c)
        return dpt_fail(DPT_ERR_ARG, "%s: communicator is NULL", dpt_comm_op_name(op));
    if (n > 0 && (!send || !recv))
        return dpt_fail(DPT_ERR_ARG, "%s #%llu: %s buffer is NULL (n=%zu)", dpt_comm_op_name(op), next_seq(c),
                        send ? "recv" : "send", n);
    if (n > SIZE_MAX / 2 / dpt_comm_op_elem_bytes(op))
        return dpt_fail(DPT_ERR_ARG, "%s #%llu: count %zu is too large", dpt_comm_op_name(op), next_seq(c), n);
    if (n > 0 && send != recv) {
        uintptr_t s = (uintptr_t)send, r = (uintptr_t)recv;
        size_t bytes = n * dpt_comm_op_elem_bytes(op);
        if (s < r + bytes && r < s + bytes)
            return dpt_fail(DPT_ERR_ARG, "%s #%llu: send and recv overlap without being equal",
                            dpt_comm_op_name(op), next_seq(c));
    }
    c->seq++;
    double t0 = now_s();
    dpt_status st = c->ops->allreduce(c, op, send, recv, n);
    c->busy_s += now_s() - t0;
    return st;
}

dpt_status dpt_comm_allreduce_f32(dpt_comm *c, const float *send, float *recv, size_t n)
{
    return allreduce_sum(c, COMM_OP_SUM_F32, send, recv, n);
}

dpt_status dpt_comm_allreduce_f64(dpt_comm *c, const double *send, double *recv, size_t n)
{
    return allreduce_sum(c, COMM_OP_SUM_F64, send, recv, n);
}

dpt_status dpt_comm_allreduce_and(dpt_comm *c, int *flag)
{
    if (!c)
        return dpt_fail(DPT_ERR_ARG, "allreduce_and: communicator is NULL");
    if (!flag)
        return dpt_fail(DPT_ERR_ARG, "allreduce_and #%llu: flag is NULL", next_seq(c));
    int v = *flag != 0;
    c->seq++;
    double t0 = now_s();
    dpt_status st = c->ops->allreduce_and(c, &v);
    c->busy_s += now_s() - t0;
    if (st == DPT_OK)
        *flag = v;
    return st;
}

dpt_status dpt_comm_broadcast(dpt_comm *c, void *buf, size_t bytes, int root)
{
    if (!c)
        return dpt_fail(DPT_ERR_ARG, "broadcast: communicator is NULL");
    if (root < 0 || root >= c->size)
        return dpt_fail(DPT_ERR_ARG, "broadcast #%llu: root %d is not a worker (size %d)", next_seq(c), root,
                        c->size);
    if (bytes > 0 && !buf)
        return dpt_fail(DPT_ERR_ARG, "broadcast #%llu: buf is NULL (bytes=%zu)", next_seq(c), bytes);
    c->seq++;
    double t0 = now_s();
    dpt_status st = c->ops->broadcast(c, buf, bytes, root);
    c->busy_s += now_s() - t0;
    return st;
}

dpt_status dpt_comm_barrier(dpt_comm *c)
{
    if (!c)
        return dpt_fail(DPT_ERR_ARG, "barrier: communicator is NULL");
    c->seq++;
    double t0 = now_s();
    dpt_status st = c->ops->barrier(c);
    c->busy_s += now_s() - t0;
    return st;
}

void dpt_comm_abort(dpt_comm *c, dpt_status s)
{
    if (!c)
        return;
    /* Copy: the backend may call dpt_fail on this thread, which rewrites
     * the buffer dpt_last_error points to. */
    char msg[1024];
    const char *e = dpt_last_error();
    snprintf(msg, sizeof msg, "%s", e[0] ? e : dpt_status_str(s));
    c->ops->abort(c, s == DPT_OK ? DPT_ERR_COMM : s, msg);
}

/* ---- SPMD entry ----------------------------------------------------------- */

/* Initial timeout: the config's, else DPT_COMM_TIMEOUT_MS, else the
 * default. Result <= 0 means wait forever. */
static dpt_status resolve_timeout(const dpt_spmd_config *cfg, long *out)
{
    if (cfg->timeout_ms != 0) {
        *out = cfg->timeout_ms > 0 ? cfg->timeout_ms : 0;
        return DPT_OK;
    }
    const char *v = getenv("DPT_COMM_TIMEOUT_MS");
    if (!v || !v[0]) {
        *out = DPT_COMM_DEFAULT_TIMEOUT_MS;
        return DPT_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < 0)
        return dpt_fail(DPT_ERR_ARG,
                        "DPT_COMM_TIMEOUT_MS: '%s' is not a number of milliseconds (0 waits forever)", v);
    *out = x;
    return DPT_OK;
}

#define MAX_LOCAL_WORKERS 1024

dpt_status dpt_spmd_run(const dpt_spmd_config *cfg, dpt_worker_fn fn, void *arg)
{
    if (!cfg)
        return dpt_fail(DPT_ERR_ARG, "dpt_spmd_run: config is NULL");
    if (cfg->version != DPT_SPMD_CONFIG_VERSION)
        return dpt_fail(DPT_ERR_ARG, "dpt_spmd_run: config version %d, this library knows %d", cfg->version,
                        DPT_SPMD_CONFIG_VERSION);
    if (!fn)
        return dpt_fail(DPT_ERR_ARG, "dpt_spmd_run: worker function is NULL");
    long timeout_ms = 0;
    dpt_status st = resolve_timeout(cfg, &timeout_ms);
    if (st)
        return st;

    dpt_comm_backend b = cfg->backend;
    switch (b) {
    case DPT_COMM_AUTO:
        if (!dpt_comm_launched_by_mpi()) {
            b = DPT_COMM_LOCAL;
        } else if (dpt_comm_have_mpi()) {
            b = DPT_COMM_MPI;
        } else if (launcher_world_size() > 1) {
            return dpt_fail(DPT_ERR_UNSUPPORTED,
                            "started by an MPI launcher with %ld ranks, but this build of dptrain has no MPI "
                            "backend; rebuild with MPI (libopenmpi-dev) or run without the launcher",
                            launcher_world_size());
        } else {
            b = DPT_COMM_LOCAL;
        }
        break;
    case DPT_COMM_LOCAL:
    case DPT_COMM_MPI:
        break;
    default:
        return dpt_fail(DPT_ERR_ARG, "dpt_spmd_run: unknown backend %d", (int)cfg->backend);
    }

    if (b == DPT_COMM_LOCAL) {
        if (cfg->n_workers < 1 || cfg->n_workers > MAX_LOCAL_WORKERS)
            return dpt_fail(DPT_ERR_ARG, "dpt_spmd_run: %d workers (expected 1 to %d)", cfg->n_workers,
                            MAX_LOCAL_WORKERS);
        return dpt_comm_local_run(cfg->n_workers, timeout_ms, fn, arg);
    }
#ifdef DPT_HAVE_MPI
    return dpt_comm_mpi_run(timeout_ms, fn, arg);
#else
    return dpt_fail(DPT_ERR_UNSUPPORTED,
                    "communicator backend 'mpi': this build of dptrain has no MPI support; rebuild with MPI "
                    "(libopenmpi-dev) or use the local backend");
#endif
}
