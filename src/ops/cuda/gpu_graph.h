/* ops/cuda: CUDA graphs of the work queued on a context's compute stream.
 *
 * Internal to libdptrain (net/net_gpu_graph.c is the caller). Between
 * gpu_graph_begin and gpu_graph_end nothing runs: the calls made on the
 * context (kernels, cuDNN, cuBLAS, device-to-device copies) are recorded
 * into a graph, which gpu_graph_end instantiates; gpu_graph_launch then
 * replays it on the compute stream, in order with the work queued before
 * and after, with the same kernels and arguments (so the same bits).
 * Capture is thread-local (cudaStreamCaptureModeThreadLocal): other
 * threads, such as workers sharing the GPU, keep running eagerly; a call
 * that cannot be captured (a synchronisation, a host copy, an allocation
 * on this thread) makes gpu_graph_end fail, and the caller runs the work
 * eagerly instead. */
#ifndef DPT_GPU_GRAPH_H
#define DPT_GPU_GRAPH_H

#include "dptrain/core.h"
#include "ops/cuda/gpu_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An instantiated graph (cudaGraphExec_t), owned by the caller:
 * gpu_graph_free releases it (NULL does nothing). */
typedef struct gpu_graph gpu_graph;

/* Start recording the compute stream. Fails when the stream is already
 * being captured. */
dpt_status gpu_graph_begin(gpu_ctx *g);
/* Stop recording. ok 1: instantiate what was recorded into *out; ok 0:
 * the recorded work is dropped (the caller's body failed) and *out is
 * NULL. Either way the stream is out of capture mode on return, and a
 * capture error (an uncapturable call) is the returned status. */
dpt_status gpu_graph_end(gpu_ctx *g, int ok, gpu_graph **out);
/* Replay on the compute stream (queued; errors inside surface at the next
 * call that waits). */
dpt_status gpu_graph_launch(gpu_ctx *g, gpu_graph *graph);
void gpu_graph_free(gpu_graph *graph);
/* 1 when the context's workspaces (cuDNN's, cuBLAS's, the reductions'
 * scratch) moved since the graph was captured: its recorded addresses are
 * gone, capture again. */
int gpu_graph_stale(const gpu_ctx *g, const gpu_graph *graph);

#ifdef __cplusplus
}
#endif
#endif
