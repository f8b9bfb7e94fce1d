/* Private communicator interface: the backend vtable behind
 * include/dptrain/comm.h, and helpers shared by the backends.
 *
 * comm.c owns the public entry points: it validates arguments, counts the
 * sequence number of every collective call and dispatches to the backend
 * through `ops`. A backend embeds struct dpt_comm as the first member of
 * its own handle struct and creates and frees handles inside its
 * *_spmd_run function. */
#ifndef DPT_COMM_IMPL_H
#define DPT_COMM_IMPL_H

#include "dptrain/comm.h"

#include <stdint.h>

/* The collective a worker is in; also indexes dpt_comm_op_name. */
typedef enum comm_op {
    COMM_OP_SUM_F32 = 0,
    COMM_OP_SUM_F64,
    COMM_OP_AND,
    COMM_OP_BROADCAST,
    COMM_OP_BARRIER
} comm_op;

typedef struct dpt_comm_ops {
    dpt_comm_backend backend;
    /* Sum (F32/F64) of n elements, send -> recv (may alias); n may be 0. */
    dpt_status (*allreduce)(dpt_comm *c, comm_op op, const void *send, void *recv, size_t n);
    /* Logical AND of *flag (normalised to 0/1 by the caller). */
    dpt_status (*allreduce_and)(dpt_comm *c, int *flag);
    dpt_status (*broadcast)(dpt_comm *c, void *buf, size_t bytes, int root);
    dpt_status (*barrier)(dpt_comm *c);
    /* Mark failed with status s and message msg (never NULL). */
    void (*abort)(dpt_comm *c, dpt_status s, const char *msg);
} dpt_comm_ops;

struct dpt_comm {
    const dpt_comm_ops *ops;
    int rank;         /* 0..size-1 */
    int size;         /* number of workers */
    long timeout_ms;  /* <= 0: wait forever */
    uint64_t seq;     /* collective calls so far; the current call's number */
    double busy_s;    /* seconds inside collective calls (dpt_comm_wait_seconds);
                         written by the owning worker only */
};

/* "allreduce_f32", "allreduce_f64", "allreduce_and", "broadcast", "barrier". */
const char *dpt_comm_op_name(comm_op op);

/* Bytes per element of a sum op (4 or 8); 1 for broadcast. */
size_t dpt_comm_op_elem_bytes(comm_op op);

/* Split [0, n) into `parts` contiguous chunks whose starts are multiples
 * of `align` elements (so chunks do not share cache lines); chunk `part`
 * is [*lo, *hi), possibly empty. Same split for both backends. */
void dpt_comm_chunk(size_t n, int parts, int part, size_t align, size_t *lo, size_t *hi);

/* out[i] = ((rows[0][i] + rows[1][i]) + rows[2][i]) + ... for i in [0, n),
 * each addition rounded to the element type (rank-order sum). out may be
 * one of the rows (every row is read at i before out[i] is written). */
void dpt_comm_sum_f32(float *out, const float *const *rows, int n_rows, size_t n);
void dpt_comm_sum_f64(double *out, const double *const *rows, int n_rows, size_t n);

/* Backends' SPMD entry: run fn on `n_workers` workers (local) or on this
 * process's rank (mpi) with the resolved timeout (<= 0: forever). Same
 * contract as dpt_spmd_run. */
dpt_status dpt_comm_local_run(int n_workers, long timeout_ms, dpt_worker_fn fn, void *arg);
#ifdef DPT_HAVE_MPI
dpt_status dpt_comm_mpi_run(long timeout_ms, dpt_worker_fn fn, void *arg);
#endif

#endif
