/* Devices, contexts (streams, library handles, staging ring), memory and
 * transfers. */
#include "ops/cuda/gpu_internal.cuh"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------------ */

static dpt_status status_of(cudaError_t e)
{
    switch (e) {
    case cudaErrorMemoryAllocation:
        return DPT_ERR_NOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
        return DPT_ERR_UNSUPPORTED;
    default:
        return DPT_ERR_IO;
    }
}

dpt_status gpu_fail_cuda(const gpu_ctx *g, cudaError_t e, const char *layer, const char *what)
{
    return dpt_fail(status_of(e), "GPU %d: %s%s%s: %s", g ? g->device : -1, layer ? layer : "",
                    layer ? ": " : "", what, cudaGetErrorString(e));
}

dpt_status gpu_fail_cudnn(const gpu_ctx *g, cudnnStatus_t e, const char *layer, const char *what)
{
    dpt_status s = e == CUDNN_STATUS_ALLOC_FAILED ? DPT_ERR_NOMEM
                   : e == CUDNN_STATUS_NOT_SUPPORTED ? DPT_ERR_UNSUPPORTED
                                                     : DPT_ERR_IO;
    return dpt_fail(s, "GPU %d: %s%s%s: cuDNN: %s", g ? g->device : -1, layer ? layer : "",
                    layer ? ": " : "", what, cudnnGetErrorString(e));
}

dpt_status gpu_fail_cublas(const gpu_ctx *g, cublasStatus_t e, const char *layer, const char *what)
{
    dpt_status s = e == CUBLAS_STATUS_ALLOC_FAILED ? DPT_ERR_NOMEM : DPT_ERR_IO;
    return dpt_fail(s, "GPU %d: %s%s%s: cuBLAS: %s", g ? g->device : -1, layer ? layer : "",
                    layer ? ": " : "", what,
                    gpu_blas.status_string ? gpu_blas.status_string(e) : "(status unknown)");
}

/* ---- cuBLAS, loaded on first use ----------------------------------------------------- */

gpu_blas_api gpu_blas;

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static char blas_error[256];

#define DPT_STR_(x) #x
#define DPT_STR(x) DPT_STR_(x) /* the versioned name behind a cuBLAS macro */

static void blas_load(void)
{
    static const char *const names[] = {"libcublas.so." DPT_STR(CUBLAS_VER_MAJOR), "libcublas.so"};
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    /* Not on the search path: beside the CUDA runtime this process loaded
     * (the toolkit's layout). */
    Dl_info info;
    if (!h && dladdr((void *)&cudaGetDeviceCount, &info) && info.dli_fname) {
        char path[4096];
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash && snprintf(path, sizeof path, "%.*s/%s", (int)(slash - info.dli_fname),
                              info.dli_fname, names[0]) < (int)sizeof path)
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    if (!h) {
        snprintf(blas_error, sizeof blas_error, "cannot load cuBLAS: %s", dlerror());
        return;
    }
    gpu_blas_api a;
    const char *missing = NULL;
#define BLAS_SYM(field, sym)                                                                 \
    if (!missing && !(*(void **)&a.field = dlsym(h, DPT_STR(sym))))                          \
        missing = DPT_STR(sym);
    BLAS_SYM(create, cublasCreate)
    BLAS_SYM(destroy, cublasDestroy)
    BLAS_SYM(set_stream, cublasSetStream)
    BLAS_SYM(set_math_mode, cublasSetMathMode)
    BLAS_SYM(set_workspace, cublasSetWorkspace)
    BLAS_SYM(status_string, cublasGetStatusString)
    BLAS_SYM(sgemm, cublasSgemm)
    BLAS_SYM(gemm_ex, cublasGemmEx)
#undef BLAS_SYM
    if (missing) {
        snprintf(blas_error, sizeof blas_error, "cuBLAS has no %s", missing);
        dlclose(h);
        return;
    }
    gpu_blas = a; /* the handle stays open for the life of the process */
}

static dpt_status blas_ready(int device)
{
    pthread_once(&blas_once, blas_load);
    return gpu_blas.sgemm ? DPT_OK
                          : dpt_fail(DPT_ERR_UNSUPPORTED, "GPU %d: %s", device, blas_error);
}

dpt_status gpu_check_launch(const gpu_ctx *g, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? DPT_OK : gpu_fail_cuda(g, e, NULL, what);
}

#define CUDA_TRY(g, call, what)                                                           \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess)                                                            \
            return gpu_fail_cuda((g), e_, NULL, (what));                                  \
    } while (0)

/* ---- devices --------------------------------------------------------------------------- */

/* An empty kernel: whether the runtime can find code for a device tells
 * whether this build runs there (sm_90 code and compute_90 PTX run on
 * compute capability 9.0 and newer). */
__global__ void probe_kernel(void) {}

static int device_usable(int i)
{
    int prev = 0;
    if (cudaGetDevice(&prev) != cudaSuccess)
        prev = 0;
    int ok = 0;
    if (cudaSetDevice(i) == cudaSuccess) {
        cudaFuncAttributes a;
        ok = cudaFuncGetAttributes(&a, probe_kernel) == cudaSuccess;
    }
    cudaGetLastError(); /* clear a non-sticky error of the probe */
    cudaSetDevice(prev);
    return ok;
}

int gpu_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    /* Devices keep CUDA's numbers (0 .. count-1), so an unusable device
     * ends the count: the ones after it are not offered. */
    int usable = 0;
    while (usable < n && device_usable(usable))
        usable++;
    return usable;
}

dpt_status gpu_device_query(int device, char *name, size_t name_n, size_t *mem_bytes,
                            int *cc_major, int *cc_minor, int *n_sm)
{
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return dpt_fail(status_of(e), "GPU %d: %s", device, cudaGetErrorString(e));
    }
    if (name && name_n)
        snprintf(name, name_n, "%s", p.name);
    if (mem_bytes)
        *mem_bytes = p.totalGlobalMem;
    if (cc_major)
        *cc_major = p.major;
    if (cc_minor)
        *cc_minor = p.minor;
    if (n_sm)
        *n_sm = p.multiProcessorCount;
    return DPT_OK;
}

dpt_status gpu_device_bus_id(int device, char *buf, size_t n)
{
    char tmp[64];
    cudaError_t e = cudaDeviceGetPCIBusId(tmp, (int)sizeof tmp, device);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return dpt_fail(status_of(e), "GPU %d: PCI bus id: %s", device, cudaGetErrorString(e));
    }
    snprintf(buf, n, "%s", tmp);
    return DPT_OK;
}

/* ---- context ----------------------------------------------------------------------------- */

dpt_status gpu_ctx_new(int device, int allow_tf32, gpu_ctx **out)
{
    *out = NULL;
    int n = gpu_device_count();
    if (device < 0 || device >= n)
        return dpt_fail(DPT_ERR_UNSUPPORTED, "GPU %d: no such usable device (%d found)", device, n);
    gpu_ctx *g = (gpu_ctx *)calloc(1, sizeof *g);
    if (!g)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    g->device = device;
    g->allow_tf32 = allow_tf32 ? 1 : 0;
    dpt_status s = DPT_OK;
    cudaError_t e;
    cudnnStatus_t de;
    cublasStatus_t be;
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        s = gpu_fail_cuda(g, e, NULL, "select device");
        goto fail;
    }
    if ((s = gpu_device_query(device, NULL, 0, NULL, NULL, NULL, &g->n_sm)) != DPT_OK)
        goto fail;
    if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&g->copy, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&g->ev_compute, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&g->ev_copied, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&g->ev_slot[0], cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&g->ev_slot[1], cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaMallocHost((void **)&g->staging, 2 * GPU_STAGING_SLOT_BYTES)) != cudaSuccess) {
        s = gpu_fail_cuda(g, e, NULL, "create streams and staging buffers");
        goto fail;
    }
    if ((s = blas_ready(device)) != DPT_OK)
        goto fail;
    if ((be = gpu_blas.create(&g->blas)) != CUBLAS_STATUS_SUCCESS ||
        (be = gpu_blas.set_stream(g->blas, g->stream)) != CUBLAS_STATUS_SUCCESS ||
        (be = gpu_blas.set_math_mode(g->blas, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                         : CUBLAS_DEFAULT_MATH)) !=
            CUBLAS_STATUS_SUCCESS) {
        s = gpu_fail_cublas(g, be, NULL, "create handle");
        goto fail;
    }
    /* After set_stream, which resets the workspace to the default pool. */
    if ((e = cudaMalloc(&g->blas_workspace, GPU_BLAS_WORKSPACE_BYTES)) != cudaSuccess) {
        s = gpu_fail_cuda(g, e, NULL, "allocate the cuBLAS workspace");
        goto fail;
    }
    if ((be = gpu_blas.set_workspace(g->blas, g->blas_workspace, GPU_BLAS_WORKSPACE_BYTES)) !=
        CUBLAS_STATUS_SUCCESS) {
        s = gpu_fail_cublas(g, be, NULL, "set the workspace");
        goto fail;
    }
    if ((de = cudnnCreate(&g->dnn)) != CUDNN_STATUS_SUCCESS ||
        (de = cudnnSetStream(g->dnn, g->stream)) != CUDNN_STATUS_SUCCESS) {
        s = gpu_fail_cudnn(g, de, NULL, "create handle");
        goto fail;
    }
    *out = g;
    return DPT_OK;
fail:
    gpu_ctx_free(g);
    return s;
}

void gpu_ctx_free(gpu_ctx *g)
{
    if (!g)
        return;
    cudaSetDevice(g->device);
    if (g->stream)
        cudaStreamSynchronize(g->stream);
    if (g->copy)
        cudaStreamSynchronize(g->copy);
    if (g->dnn)
        cudnnDestroy(g->dnn);
    if (g->blas)
        gpu_blas.destroy(g->blas);
    cudaFree(g->workspace);
    cudaFree(g->blas_workspace);
    cudaFree(g->scratch);
    cudaFree(g->bf16_buf);
    cudaFreeHost(g->staging);
    if (g->ev_slot[0])
        cudaEventDestroy(g->ev_slot[0]);
    if (g->ev_slot[1])
        cudaEventDestroy(g->ev_slot[1]);
    if (g->ev_copied)
        cudaEventDestroy(g->ev_copied);
    if (g->ev_compute)
        cudaEventDestroy(g->ev_compute);
    if (g->copy)
        cudaStreamDestroy(g->copy);
    if (g->stream)
        cudaStreamDestroy(g->stream);
    cudaGetLastError();
    free(g);
}

dpt_status gpu_ctx_enter(gpu_ctx *g)
{
    CUDA_TRY(g, cudaSetDevice(g->device), "select device");
    return DPT_OK;
}

int gpu_ctx_device(const gpu_ctx *g) { return g->device; }
int gpu_ctx_allow_tf32(const gpu_ctx *g) { return g->allow_tf32; }
void *gpu_ctx_stream(gpu_ctx *g) { return (void *)g->stream; }
size_t gpu_ctx_workspace_bytes(const gpu_ctx *g) { return g->workspace_bytes; }

dpt_status gpu_ctx_reserve_workspace(gpu_ctx *g, size_t bytes)
{
    if (bytes <= g->workspace_bytes)
        return DPT_OK;
    CUDA_TRY(g, cudaStreamSynchronize(g->stream), "workspace");
    cudaFree(g->workspace);
    g->workspace = NULL;
    g->workspace_bytes = 0;
    CUDA_TRY(g, cudaMalloc(&g->workspace, bytes), "allocate the cuDNN workspace");
    g->workspace_bytes = bytes;
    return DPT_OK;
}

dpt_status gpu_ctx_reserve_scratch(gpu_ctx *g, int max_channels, int max_rows)
{
    /* The reductions use at most c + 4·n_sm partials of two doubles each
     * (see kernels.cu), and one double per row for the loss. */
    size_t need = 2 * ((size_t)(max_channels > 0 ? max_channels : 1) + 4 * (size_t)g->n_sm);
    if ((size_t)max_rows > need)
        need = (size_t)max_rows;
    if (need <= g->scratch_doubles)
        return DPT_OK;
    CUDA_TRY(g, cudaStreamSynchronize(g->stream), "scratch");
    cudaFree(g->scratch);
    g->scratch = NULL;
    g->scratch_doubles = 0;
    CUDA_TRY(g, cudaMalloc((void **)&g->scratch, need * sizeof(double)), "allocate scratch");
    g->scratch_doubles = need;
    return DPT_OK;
}

/* ---- memory ------------------------------------------------------------------------------ */

dpt_status gpu_malloc(gpu_ctx *g, size_t bytes, void **p)
{
    *p = NULL;
    if (!bytes)
        return DPT_OK;
    char what[64];
    snprintf(what, sizeof what, "allocate %zu bytes", bytes);
    CUDA_TRY(g, cudaMalloc(p, bytes), what);
    CUDA_TRY(g, cudaMemsetAsync(*p, 0, bytes, g->stream), "clear new memory");
    return DPT_OK;
}

void gpu_mfree(void *p)
{
    if (p)
        cudaFree(p);
}

dpt_status gpu_malloc_host(size_t bytes, void **p)
{
    *p = NULL;
    if (!bytes)
        return DPT_OK;
    cudaError_t e = cudaMallocHost(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return gpu_fail_cuda(NULL, e, NULL, "allocate pinned host memory");
    }
    memset(*p, 0, bytes);
    return DPT_OK;
}

void gpu_mfree_host(void *p)
{
    if (p)
        cudaFreeHost(p);
}

/* ---- transfers --------------------------------------------------------------------------- */

dpt_status gpu_upload(gpu_ctx *g, void *dst, const void *host, size_t bytes)
{
    if (!bytes)
        return DPT_OK;
    /* The copy stream must not overwrite dst while earlier compute still
     * reads it. */
    CUDA_TRY(g, cudaEventRecord(g->ev_compute, g->stream), "upload");
    CUDA_TRY(g, cudaStreamWaitEvent(g->copy, g->ev_compute, 0), "upload");
    size_t off = 0;
    for (int k = 0; off < bytes; k++) {
        int slot = k & 1;
        size_t len = bytes - off < GPU_STAGING_SLOT_BYTES ? bytes - off : GPU_STAGING_SLOT_BYTES;
        unsigned char *pin = g->staging + (size_t)slot * GPU_STAGING_SLOT_BYTES;
        /* Wait until the slot's previous DMA has read it; meanwhile the
         * other slot's DMA runs, overlapping this memcpy. */
        if (g->slot_used[slot])
            CUDA_TRY(g, cudaEventSynchronize(g->ev_slot[slot]), "upload: staging");
        memcpy(pin, (const unsigned char *)host + off, len);
        CUDA_TRY(g, cudaMemcpyAsync((unsigned char *)dst + off, pin, len, cudaMemcpyHostToDevice,
                                    g->copy),
                 "upload");
        CUDA_TRY(g, cudaEventRecord(g->ev_slot[slot], g->copy), "upload");
        g->slot_used[slot] = 1;
        off += len;
    }
    CUDA_TRY(g, cudaEventRecord(g->ev_copied, g->copy), "upload");
    CUDA_TRY(g, cudaStreamWaitEvent(g->stream, g->ev_copied, 0), "upload");
    return DPT_OK;
}

dpt_status gpu_download(gpu_ctx *g, void *host, const void *src, size_t bytes)
{
    if (!bytes)
        return DPT_OK;
    CUDA_TRY(g, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, g->stream), "download");
    CUDA_TRY(g, cudaStreamSynchronize(g->stream), "download");
    return DPT_OK;
}

dpt_status gpu_download_async(gpu_ctx *g, void *pinned, const void *src, size_t bytes)
{
    if (!bytes)
        return DPT_OK;
    CUDA_TRY(g, cudaMemcpyAsync(pinned, src, bytes, cudaMemcpyDeviceToHost, g->stream), "download");
    return DPT_OK;
}

dpt_status gpu_upload_async(gpu_ctx *g, void *dst, const void *pinned, size_t bytes)
{
    if (!bytes)
        return DPT_OK;
    CUDA_TRY(g, cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyHostToDevice, g->stream), "upload");
    return DPT_OK;
}

dpt_status gpu_copy(gpu_ctx *g, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return DPT_OK;
    CUDA_TRY(g, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g->stream), "copy");
    return DPT_OK;
}

dpt_status gpu_copy_2d(gpu_ctx *g, void *dst, size_t dst_pitch, const void *src,
                       size_t src_pitch, size_t width_bytes, size_t rows)
{
    if (!width_bytes || !rows)
        return DPT_OK;
    CUDA_TRY(g, cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width_bytes, rows,
                                  cudaMemcpyDeviceToDevice, g->stream), "strided copy");
    return DPT_OK;
}

dpt_status gpu_zero(gpu_ctx *g, void *dst, size_t bytes)
{
    if (!bytes)
        return DPT_OK;
    CUDA_TRY(g, cudaMemsetAsync(dst, 0, bytes, g->stream), "clear");
    return DPT_OK;
}

dpt_status gpu_sync(gpu_ctx *g, const char *what)
{
    CUDA_TRY(g, cudaStreamSynchronize(g->stream), what);
    return DPT_OK;
}
