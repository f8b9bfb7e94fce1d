/* Device-buffer all-reduce: NCCL, or staged through pinned host memory
 * (see comm_nccl.h). */
#include "comm/comm_nccl.h"

#ifdef DPT_HAVE_CUDA

#include <cuda_runtime_api.h>
#ifdef DPT_HAVE_NCCL
#include <nccl.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dpt_gpu_comm {
    dpt_comm *comm;       /* borrowed */
    int device;
    cudaStream_t stream;  /* borrowed */
    int nccl;             /* 1: sums through NCCL */
#ifdef DPT_HAVE_NCCL
    ncclComm_t nc;
#endif
    void *pinned;         /* staging for the host path */
    size_t pinned_bytes;
};

static dpt_status cuda_fail(const dpt_gpu_comm *g, cudaError_t e, const char *what)
{
    return dpt_fail(e == cudaErrorMemoryAllocation ? DPT_ERR_NOMEM : DPT_ERR_COMM,
                    "GPU %d: worker %d: %s: %s", g->device, dpt_comm_rank(g->comm), what,
                    cudaGetErrorString(e));
}

#ifdef DPT_HAVE_NCCL
static dpt_status nccl_fail(const dpt_gpu_comm *g, ncclResult_t r, const char *what)
{
    const char *detail = g->nc ? ncclGetLastError(g->nc) : NULL;
    return dpt_fail(DPT_ERR_COMM, "GPU %d: worker %d: NCCL %s: %s%s%s", g->device,
                    dpt_comm_rank(g->comm), what, ncclGetErrorString(r),
                    detail && detail[0] ? ": " : "", detail ? detail : "");
}
#endif

/* A 52-bit key of (host, PCI bus id): exact as a double, so the keys of
 * all workers can be gathered with a float64 all-reduce (each worker fills
 * its own slot of a zero vector). */
static double device_key(int device)
{
    char host[256] = "", bus[64] = "";
    gethostname(host, sizeof host - 1);
    if (cudaDeviceGetPCIBusId(bus, (int)sizeof bus, device) != cudaSuccess) {
        cudaGetLastError();
        snprintf(bus, sizeof bus, "device-%d", device);
    }
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = host; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ '/') * 1099511628211ULL;
    for (const char *p = bus; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (double)((h & ((1ULL << 52) - 1)) | 1);
}

/* Collective: 1 when every worker's GPU is a different device; else names
 * two workers that share one in *a, *b. */
static dpt_status devices_distinct(dpt_gpu_comm *g, int *distinct, int *a, int *b)
{
    int size = dpt_comm_size(g->comm), rank = dpt_comm_rank(g->comm);
    double *keys = calloc((size_t)size, sizeof *keys);
    if (!keys)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    keys[rank] = device_key(g->device);
    dpt_status s = dpt_comm_allreduce_f64(g->comm, keys, keys, (size_t)size);
    *distinct = 1;
    for (int i = 0; s == DPT_OK && i < size && *distinct; i++)
        for (int j = i + 1; j < size; j++)
            if (keys[i] == keys[j]) {
                *distinct = 0, *a = i, *b = j;
                break;
            }
    free(keys);
    return s;
}

#ifdef DPT_HAVE_NCCL
static dpt_status nccl_init(dpt_gpu_comm *g)
{
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int rank = dpt_comm_rank(g->comm), size = dpt_comm_size(g->comm);
    ncclResult_t r = ncclSuccess;
    /* Rank 0's id reaches the others even when rank 0 failed to make one
     * (zeros): their init then fails instead of waiting. */
    int ok = 1;
    if (rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess)
        ok = 0;
    dpt_status s = dpt_comm_allreduce_and(g->comm, &ok);
    if (s != DPT_OK)
        return s;
    if (!ok)
        return rank == 0 ? nccl_fail(g, r, "unique id")
                         : dpt_fail(DPT_ERR_COMM, "NCCL: worker 0 could not make a unique id");
    if ((s = dpt_comm_broadcast(g->comm, &id, sizeof id, 0)) != DPT_OK)
        return s;
    cudaError_t e = cudaSetDevice(g->device);
    if (e != cudaSuccess)
        return cuda_fail(g, e, "select device");
    if ((r = ncclCommInitRank(&g->nc, size, id, rank)) != ncclSuccess) {
        g->nc = NULL;
        return nccl_fail(g, r, "init");
    }
    return DPT_OK;
}
#endif

dpt_status dpt_gpu_comm_new(dpt_comm *comm, int device, void *stream, int mode,
                            dpt_gpu_comm **out)
{
    *out = NULL;
    if (!comm)
        return dpt_fail(DPT_ERR_ARG, "device all-reduce: communicator is NULL");
    dpt_gpu_comm *g = calloc(1, sizeof *g);
    if (!g)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    g->comm = comm, g->device = device, g->stream = (cudaStream_t)stream;
    int have_nccl = 0;
#ifdef DPT_HAVE_NCCL
    have_nccl = 1;
#endif
    /* Every worker must take the same path: agree on whether all want NCCL
     * and whether their GPUs are distinct (NCCL refuses two ranks on one
     * device). */
    int want = have_nccl && mode != DPT_GPU_COMM_STAGED &&
               (dpt_comm_size(comm) > 1 || mode == DPT_GPU_COMM_NCCL);
    int distinct = 1, a = 0, b = 0;
    dpt_status s = dpt_comm_allreduce_and(comm, &want);
    if (s == DPT_OK)
        s = devices_distinct(g, &distinct, &a, &b);
    if (s == DPT_OK && mode == DPT_GPU_COMM_NCCL && !want)
        s = dpt_fail(DPT_ERR_UNSUPPORTED, have_nccl
                     ? "device all-reduce: NCCL was asked for, but not by every worker"
                     : "device all-reduce: NCCL was asked for, but this build has no NCCL");
    if (s == DPT_OK && mode == DPT_GPU_COMM_NCCL && !distinct)
        s = dpt_fail(DPT_ERR_UNSUPPORTED, "device all-reduce: NCCL needs one GPU per worker, "
                     "but workers %d and %d share a GPU", a, b);
#ifdef DPT_HAVE_NCCL
    if (s == DPT_OK && want && distinct) {
        if ((s = nccl_init(g)) == DPT_OK)
            g->nccl = 1;
    }
#endif
    if (s != DPT_OK) {
        dpt_gpu_comm_free(g);
        return s;
    }
    *out = g;
    return DPT_OK;
}

void dpt_gpu_comm_free(dpt_gpu_comm *g)
{
    if (!g)
        return;
#ifdef DPT_HAVE_NCCL
    if (g->nc)
        ncclCommDestroy(g->nc);
#endif
    if (g->pinned)
        cudaFreeHost(g->pinned);
    free(g);
}

int dpt_gpu_comm_uses_nccl(const dpt_gpu_comm *g) { return g && g->nccl; }
dpt_comm *dpt_gpu_comm_host(const dpt_gpu_comm *g) { return g ? g->comm : NULL; }

/* Host path: device -> pinned, wait, host all-reduce, pinned -> device
 * (queued; the stream orders it before any later use of the buffer and
 * before the next staging copy). */
static dpt_status staged(dpt_gpu_comm *g, void *dev, size_t n, size_t elem)
{
    size_t bytes = n * elem;
    if (bytes > g->pinned_bytes) {
        cudaError_t e = cudaStreamSynchronize(g->stream);
        if (e != cudaSuccess)
            return cuda_fail(g, e, "all-reduce staging");
        if (g->pinned)
            cudaFreeHost(g->pinned);
        g->pinned = NULL, g->pinned_bytes = 0;
        if ((e = cudaMallocHost(&g->pinned, bytes)) != cudaSuccess) {
            g->pinned = NULL;
            return cuda_fail(g, e, "allocate all-reduce staging");
        }
        g->pinned_bytes = bytes;
    }
    cudaError_t e = cudaMemcpyAsync(g->pinned, dev, bytes, cudaMemcpyDeviceToHost, g->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess)
        return cuda_fail(g, e, "all-reduce: copy to host");
    dpt_status s = elem == sizeof(float)
                       ? dpt_comm_allreduce_f32(g->comm, g->pinned, g->pinned, n)
                       : dpt_comm_allreduce_f64(g->comm, g->pinned, g->pinned, n);
    if (s != DPT_OK)
        return s;
    if ((e = cudaMemcpyAsync(dev, g->pinned, bytes, cudaMemcpyHostToDevice, g->stream)) !=
        cudaSuccess)
        return cuda_fail(g, e, "all-reduce: copy to device");
    return DPT_OK;
}

static dpt_status allreduce(dpt_gpu_comm *g, void *dev, size_t n, size_t elem)
{
    if (!g)
        return dpt_fail(DPT_ERR_ARG, "device all-reduce: no communicator");
#ifdef DPT_HAVE_NCCL
    if (g->nccl) {
        if (!n)
            return DPT_OK;
        ncclResult_t r = ncclAllReduce(dev, dev, n, elem == sizeof(float) ? ncclFloat : ncclDouble,
                                       ncclSum, g->nc, g->stream);
        return r == ncclSuccess ? DPT_OK : nccl_fail(g, r, "all-reduce");
    }
#endif
    return staged(g, dev, n, elem);
}

dpt_status dpt_gpu_comm_allreduce_f32(dpt_gpu_comm *g, float *dev, size_t n)
{
    return allreduce(g, dev, n, sizeof(float));
}

dpt_status dpt_gpu_comm_allreduce_f64(dpt_gpu_comm *g, double *dev, size_t n)
{
    return allreduce(g, dev, n, sizeof(double));
}

#else /* no CUDA: nothing uses the device all-reduce */

typedef int dpt_comm_nccl_unused;

#endif
