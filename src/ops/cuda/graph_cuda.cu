/* CUDA graphs of a context's compute stream (gpu_graph.h). */
#include "ops/cuda/gpu_graph.h"
#include "ops/cuda/gpu_internal.cuh"

#include <stdlib.h>

struct gpu_graph {
    cudaGraphExec_t exec;
    /* The context's workspaces when it was captured (gpu_graph_stale). */
    const void *workspace, *blas_workspace, *scratch, *bf16;
};

dpt_status gpu_graph_begin(gpu_ctx *g)
{
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing(g->stream, &st);
    if (e != cudaSuccess)
        return gpu_fail_cuda(g, e, NULL, "CUDA graph: capture status");
    if (st != cudaStreamCaptureStatusNone)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: CUDA graph: the stream is already being captured",
                        g->device);
    /* Thread-local: another thread's allocation or synchronisation (a
     * worker sharing this GPU) does not invalidate this capture. */
    e = cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal);
    return e == cudaSuccess ? DPT_OK : gpu_fail_cuda(g, e, NULL, "CUDA graph: begin capture");
}

dpt_status gpu_graph_end(gpu_ctx *g, int ok, gpu_graph **out)
{
    *out = NULL;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(g->stream, &graph);
    /* An uncapturable call leaves an error behind (invalidated capture):
     * cleared here, reported as this status. */
    cudaGetLastError();
    if (e != cudaSuccess || !ok) {
        if (graph)
            cudaGraphDestroy(graph);
        return e != cudaSuccess ? gpu_fail_cuda(g, e, NULL, "CUDA graph: capture") : DPT_OK;
    }
    if (!graph)
        return dpt_fail(DPT_ERR_IO, "GPU %d: CUDA graph: capture produced no graph", g->device);
    gpu_graph *r = (gpu_graph *)calloc(1, sizeof *r);
    if (!r) {
        cudaGraphDestroy(graph);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    e = cudaGraphInstantiateWithFlags(&r->exec, graph, 0);
    /* The executable graph is independent of the graph it was made from. */
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        cudaGetLastError();
        free(r);
        return gpu_fail_cuda(g, e, NULL, "CUDA graph: instantiate");
    }
    r->workspace = g->workspace;
    r->blas_workspace = g->blas_workspace;
    r->scratch = g->scratch;
    r->bf16 = g->bf16_buf;
    *out = r;
    return DPT_OK;
}

dpt_status gpu_graph_launch(gpu_ctx *g, gpu_graph *graph)
{
    cudaError_t e = cudaGraphLaunch(graph->exec, g->stream);
    return e == cudaSuccess ? DPT_OK : gpu_fail_cuda(g, e, NULL, "CUDA graph: launch");
}

void gpu_graph_free(gpu_graph *graph)
{
    if (!graph)
        return;
    cudaGraphExecDestroy(graph->exec);
    free(graph);
}

int gpu_graph_stale(const gpu_ctx *g, const gpu_graph *graph)
{
    return graph->workspace != g->workspace || graph->blas_workspace != g->blas_workspace ||
           graph->scratch != g->scratch || graph->bf16 != g->bf16_buf;
}
