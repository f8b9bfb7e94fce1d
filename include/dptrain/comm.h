/* dptrain communicator: collectives among the N workers of a data-parallel
 * run (the spmd block of the MATLAB example).
 *
 * One opaque handle per worker. Backends: "local" (N threads in this
 * process, shared-memory reductions) and "mpi" (one process per worker).
 * Every collective must be called by every worker of the communicator, in
 * the same order (they are "collective"); each returns a dpt_status and on
 * failure leaves a message naming the operation, its sequence number and
 * the workers that did not arrive (timeouts) or the worker that failed.
 *
 * Determinism: for a fixed worker count, reductions add the workers'
 * contributions in rank order, so the same inputs give the same bits on
 * every run and on every worker.
 *
 * In place: recv may equal send. Sizes are element counts. */
#ifndef DPTRAIN_COMM_H
#define DPTRAIN_COMM_H

#include "dptrain/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpt_comm dpt_comm;

typedef enum dpt_comm_backend {
    DPT_COMM_AUTO = 0, /* mpi when started by an MPI launcher, else local */
    DPT_COMM_LOCAL,
    DPT_COMM_MPI
} dpt_comm_backend;

/* Parse "auto" | "local" | "mpi". */
DPT_API dpt_status dpt_comm_backend_parse(const char *name, dpt_comm_backend *out);
/* 1 when this process was started by mpirun/srun (environment variables). */
DPT_API int dpt_comm_launched_by_mpi(void);
/* 1 when the MPI backend is compiled in. */
DPT_API int dpt_comm_have_mpi(void);

/* Rank (0-based) and size of the communicator. */
DPT_API int dpt_comm_rank(const dpt_comm *c);
DPT_API int dpt_comm_size(const dpt_comm *c);

/* Collective. Sum of n floats across workers into recv on every worker. */
DPT_API dpt_status dpt_comm_allreduce_f32(dpt_comm *c, const float *send, float *recv, size_t n);
DPT_API dpt_status dpt_comm_allreduce_f64(dpt_comm *c, const double *send, double *recv, size_t n);
/* Collective. *flag becomes 1 on every worker iff it was non-zero on all. */
DPT_API dpt_status dpt_comm_allreduce_and(dpt_comm *c, int *flag);
/* Collective. Copy `bytes` bytes from root's buf into every worker's buf. */
DPT_API dpt_status dpt_comm_broadcast(dpt_comm *c, void *buf, size_t bytes, int root);
/* Collective. Returns when every worker has arrived. */
DPT_API dpt_status dpt_comm_barrier(dpt_comm *c);

/* Timeout for every later collective on this worker, in milliseconds
 * (0: wait forever). Default 600000 (10 minutes), or DPT_COMM_TIMEOUT_MS. */
DPT_API void dpt_comm_set_timeout_ms(dpt_comm *c, long ms);

/* Mark this worker as failed with the current thread's last error, so that
 * the other workers' pending and later collectives fail promptly with that
 * message instead of waiting (local backend; under MPI this aborts the job
 * after printing the message on stderr). */
DPT_API void dpt_comm_abort(dpt_comm *c, dpt_status s);

/* ---- SPMD entry ---------------------------------------------------------- */

/* The user's per-worker function: the body of the spmd block. */
typedef dpt_status (*dpt_worker_fn)(dpt_comm *comm, void *arg);

typedef struct dpt_spmd_config {
    int version;                /* DPT_SPMD_CONFIG_VERSION */
    dpt_comm_backend backend;   /* AUTO: mpi under a launcher, else local */
    int n_workers;              /* local backend: number of threads (>= 1) */
    long timeout_ms;            /* collective timeout; 0 = library default */
} dpt_spmd_config;

#define DPT_SPMD_CONFIG_VERSION 1
#define DPT_SPMD_CONFIG_INIT {DPT_SPMD_CONFIG_VERSION, DPT_COMM_AUTO, 1, 0}

/* Run fn(comm, arg) once per worker and wait for all of them. local: starts
 * n_workers threads. mpi: runs fn once in this process with the MPI world
 * communicator (MPI_Init/Finalize handled here). Returns DPT_OK when every
 * worker returned DPT_OK; otherwise the first failing worker's status, with
 * its message (prefixed by "worker K: ") as this thread's last error. When
 * one worker fails, the others' collectives fail promptly. */
DPT_API dpt_status dpt_spmd_run(const dpt_spmd_config *cfg, dpt_worker_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
