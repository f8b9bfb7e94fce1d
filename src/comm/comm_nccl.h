/* All-reduce of device buffers among the workers of a communicator: NCCL
 * when the build has it and every worker has a GPU of its own, otherwise
 * staged through pinned host memory and the communicator's own (local or
 * MPI) all-reduce.
 *
 * A dpt_gpu_comm belongs to one worker and rides on that worker's dpt_comm
 * (borrowed, must outlive it): creating it is collective over the dpt_comm
 * (rank 0 makes the ncclUniqueId and broadcasts it with dpt_comm_broadcast,
 * so the same code bootstraps NCCL over the local backend, threads with one
 * GPU each, and over MPI, one process per GPU). Every later call is
 * collective too and must be made by all workers in the same order, like
 * the dpt_comm collectives, interleaved with them in the same order.
 *
 * Sums: staged sums are those of the dpt_comm (rank order, the same bits as
 * the CPU path); NCCL's are identical on every worker but in NCCL's order.
 * NCCL calls are queued on the given CUDA stream and return at once; staged
 * calls wait for the stream, reduce on the host, and queue the copy back.
 * A dead peer makes NCCL wait forever (NCCL has no timeout here); the
 * staged path has the dpt_comm's timeout.
 *
 * Internal to libdptrain (net/net_gpu.c); compiled to nothing without
 * CUDA. */
#ifndef DPT_COMM_NCCL_H
#define DPT_COMM_NCCL_H

#include "dptrain/comm.h"

typedef struct dpt_gpu_comm dpt_gpu_comm;

/* How device buffers are reduced (the values of dpt_gpu_reduce in
 * dptrain/gpu.h). */
#define DPT_GPU_COMM_AUTO 0   /* NCCL when built with it and GPUs are distinct */
#define DPT_GPU_COMM_NCCL 1   /* NCCL or fail (also for a single worker) */
#define DPT_GPU_COMM_STAGED 2 /* always through host memory */

/* Collective over comm. `stream` is the worker's cudaStream_t. */
dpt_status dpt_gpu_comm_new(dpt_comm *comm, int device, void *stream, int mode,
                            dpt_gpu_comm **out);
void dpt_gpu_comm_free(dpt_gpu_comm *g);
/* 1 when the sums go through NCCL. */
int dpt_gpu_comm_uses_nccl(const dpt_gpu_comm *g);
/* The communicator it was made for. */
dpt_comm *dpt_gpu_comm_host(const dpt_gpu_comm *g);
/* Collective: in-place sum of n device values over the workers. */
dpt_status dpt_gpu_comm_allreduce_f32(dpt_gpu_comm *g, float *dev, size_t n);
dpt_status dpt_gpu_comm_allreduce_f64(dpt_gpu_comm *g, double *dev, size_t n);

#endif
