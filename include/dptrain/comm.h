/* dptrain communicator: collectives among the N workers of a data-parallel
 * run (the spmd block of the MATLAB example).
 *
 * One opaque handle per worker. Backends: "local" (N threads in this
 * process, shared-memory reductions) and "mpi" (one process per worker).
 * Every collective must be called by every worker of the communicator, in
 * the same order (they are "collective"); each returns a dpt_status and on
 * failure leaves a message naming the operation, its sequence number and
 * the workers that did not arrive (timeouts) or the worker that failed.
 * Sequence numbers count this worker's collective calls from 1, so
 * "allreduce_f32 #17" is the 17th collective call of the worker (a call
 * rejected for its arguments, DPT_ERR_ARG, does not count and does not
 * synchronise).
 *
 * Determinism: for a fixed worker count, reductions add the workers'
 * contributions in rank order, in the element type: element i of the
 * float32 sum is ((x0[i] + x1[i]) + x2[i]) + ... rounded to float32 after
 * each addition (float64 likewise in float64). So the same inputs give the
 * same bits on every run, on every worker, and under both backends (the MPI
 * backend does not use MPI's own reduction order; see comm_mpi.c).
 *
 * In place: recv may equal send. Otherwise send and recv must not overlap.
 * Sizes are element counts (broadcast: bytes). A count of 0 is allowed (the
 * call still synchronises) and then the pointers may be NULL.
 *
 * Threads: a worker's handle is used by one thread at a time (the worker's
 * own); dpt_comm_abort may be called from any thread.
 *
 * Failures are sticky (local backend, and mpi with one rank): after a
 * timeout, an abort, a failed worker, a worker that returned early or a
 * mismatched collective (workers calling different operations, counts or
 * roots at the same step; checked by the local backend only) the
 * communicator is broken and every later collective on every worker fails
 * promptly with DPT_ERR_COMM ("<op> #<seq>: worker K failed: <message>").
 * Under mpi with more than one rank such failures end the job instead (see
 * dpt_comm_set_timeout_ms and dpt_comm_abort): a process cannot release
 * peers blocked inside MPI any other way.
 *
 * Ownership: handles are created and freed by dpt_spmd_run; a handle is
 * valid only inside the worker function it was passed to. */
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

/* Default collective timeout in milliseconds (10 minutes). */
#define DPT_COMM_DEFAULT_TIMEOUT_MS 600000L

/* Parse "auto" | "local" | "mpi" (exact, lower case). DPT_ERR_ARG with a
 * message naming the text when it is none of them. */
DPT_API dpt_status dpt_comm_backend_parse(const char *name, dpt_comm_backend *out);
/* "auto", "local" or "mpi" (a static string; "unknown" for other values). */
DPT_API const char *dpt_comm_backend_name(dpt_comm_backend b);
/* 1 when this process was started by an MPI launcher, judged from the
 * environment: OMPI_COMM_WORLD_SIZE (Open MPI's mpirun), PMI_SIZE or
 * PMI_RANK (MPICH/Intel MPI hydra), PMIX_RANK (PMIx launchers),
 * MV2_COMM_WORLD_SIZE (MVAPICH), or SLURM_PROCID together with
 * SLURM_NTASKS > 1 (srun). */
DPT_API int dpt_comm_launched_by_mpi(void);
/* 1 when the MPI backend is compiled in. */
DPT_API int dpt_comm_have_mpi(void);

/* Rank (0-based) and size of the communicator (-1 and 0 for NULL). */
DPT_API int dpt_comm_rank(const dpt_comm *c);
DPT_API int dpt_comm_size(const dpt_comm *c);
/* The backend this communicator runs on (DPT_COMM_LOCAL or DPT_COMM_MPI). */
DPT_API dpt_comm_backend dpt_comm_get_backend(const dpt_comm *c);
/* Seconds this worker has spent inside collective calls on c so far
 * (waiting for the other workers, and the transfer itself): how long the
 * slower workers held it up. 0 for NULL. Read it from the worker's own
 * thread. */
DPT_API double dpt_comm_wait_seconds(const dpt_comm *c);

/* Collective. Sum of n floats across workers into recv on every worker, in
 * rank order (see the top of this file). */
DPT_API dpt_status dpt_comm_allreduce_f32(dpt_comm *c, const float *send, float *recv, size_t n);
DPT_API dpt_status dpt_comm_allreduce_f64(dpt_comm *c, const double *send, double *recv, size_t n);
/* Collective. *flag becomes 1 on every worker iff it was non-zero on all,
 * else 0. */
DPT_API dpt_status dpt_comm_allreduce_and(dpt_comm *c, int *flag);
/* Collective. Copy `bytes` bytes from root's buf into every worker's buf.
 * Every worker passes the same bytes and root. */
DPT_API dpt_status dpt_comm_broadcast(dpt_comm *c, void *buf, size_t bytes, int root);
/* Collective. Returns when every worker has arrived. */
DPT_API dpt_status dpt_comm_barrier(dpt_comm *c);

/* Timeout for every later collective on this worker, in milliseconds
 * (0 or negative: wait forever). The initial value comes from
 * dpt_spmd_config.timeout_ms, else the environment variable
 * DPT_COMM_TIMEOUT_MS, else DPT_COMM_DEFAULT_TIMEOUT_MS.
 * local: a worker that waits longer than this for the others to arrive
 * fails with DPT_ERR_TIMEOUT and "<op> #<seq>: timed out after <ms> ms
 * waiting for workers 2, 3" (the workers that had not arrived).
 * mpi: a watchdog thread in each process prints "dptrain: rank R: <op>
 * #<seq> waited past <ms> ms; a peer rank may have died: <who>" on stderr
 * and ends the whole job, which could not continue anyway. <who> names the
 * ranks not in that collective, as their watchdogs answer (within the
 * timeout, 1 to 10 s): "rank 2 (no answer: dead, stopped or unreachable)",
 * "rank 1 (alive, not in a collective)", "rank 3 (in barrier #7)". The
 * library initialises MPI with MPI_THREAD_MULTIPLE for this; where MPI runs
 * with less (a program that initialised it itself), the line ends at "may
 * have died" and no rank is named. It calls MPI_Abort when MPI runs with
 * MPI_THREAD_MULTIPLE, else _exit(1) (MPI may only be called from the main
 * thread), which mpirun/srun turn into ending every rank. */
DPT_API void dpt_comm_set_timeout_ms(dpt_comm *c, long ms);
DPT_API long dpt_comm_get_timeout_ms(const dpt_comm *c);

/* Mark this worker as failed with status s and the calling thread's last
 * error message (or the status's name when there is none), so that the
 * other workers' pending and later collectives fail promptly with
 * DPT_ERR_COMM and "<op> #<seq>: worker K failed: <message>" instead of
 * waiting. The first abort of a communicator wins; later ones do nothing.
 * dpt_spmd_run calls this itself for a worker function that fails, so user
 * code rarely needs to. Any thread may call it.
 * mpi with more than one rank: prints "dptrain: rank R: <message>" on
 * stderr and ends the whole job with MPI_Abort (from a thread other than
 * the worker's without MPI_THREAD_MULTIPLE: _exit(1)); does not return.
 * mpi with one rank: behaves as local (later collectives fail). This and
 * the MPI timeout watchdog are the only places where the library prints,
 * because ending the job is the only way to release the peer ranks. */
DPT_API void dpt_comm_abort(dpt_comm *c, dpt_status s);

/* ---- SPMD entry ---------------------------------------------------------- */

/* The user's per-worker function: the body of the spmd block. */
typedef dpt_status (*dpt_worker_fn)(dpt_comm *comm, void *arg);

typedef struct dpt_spmd_config {
    int version;                /* DPT_SPMD_CONFIG_VERSION */
    dpt_comm_backend backend;   /* AUTO: mpi under a launcher, else local */
    int n_workers;              /* local backend: number of threads (1..1024);
                                   ignored under mpi (one worker per process) */
    long timeout_ms;            /* collective timeout; 0 = library default
                                   (DPT_COMM_TIMEOUT_MS or 10 minutes);
                                   negative = wait forever */
} dpt_spmd_config;

#define DPT_SPMD_CONFIG_VERSION 1
#define DPT_SPMD_CONFIG_INIT {DPT_SPMD_CONFIG_VERSION, DPT_COMM_AUTO, 1, 0}

/* Run fn(comm, arg) once per worker and wait for all of them.
 *
 * local: runs n_workers workers as threads of this process; worker 0 runs
 * on the calling thread. `arg` is shared by all workers (fn must not write
 * to it without its own synchronisation, except to per-rank slots).
 *
 * mpi (DPT_COMM_MPI, or AUTO under an MPI launcher): runs fn once in this
 * process on a duplicate of MPI_COMM_WORLD. MPI is initialised here
 * (MPI_Init_thread, MPI_THREAD_FUNNELED) unless the caller already did, and
 * then finalised at process exit (atexit); a caller that initialised MPI
 * finalises it itself. Collectives must be called from the thread that
 * initialised MPI. DPT_ERR_UNSUPPORTED when the build has no MPI backend
 * (also for AUTO under a launcher with more than one rank, where running
 * local workers instead would silently train N separate models).
 *
 * Returns DPT_OK when every worker returned DPT_OK; otherwise the first
 * failing worker's status (first by time), with its message prefixed by
 * "worker K: " as this thread's last error. When one worker fails, the
 * others' collectives fail promptly (see dpt_comm_abort); under mpi with
 * more than one rank a failing worker ends the job: its message is printed
 * as "dptrain: rank R: <message>" on stderr, then MPI_Abort.
 * A worker that returns while the others wait for it in a collective
 * (local) makes that collective fail with DPT_ERR_COMM naming it.
 * DPT_ERR_ARG for a NULL or malformed config, an unknown version, a bad
 * worker count or an unparsable DPT_COMM_TIMEOUT_MS. */
DPT_API dpt_status dpt_spmd_run(const dpt_spmd_config *cfg, dpt_worker_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
