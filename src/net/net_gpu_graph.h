/* The training step of a GPU network as a CUDA graph (net_gpu_graph.c).
 *
 * What the graph holds: the forward from the device copy of x, the loss
 * against the device copy of the targets, the backward into the gradient
 * buffer and, with one worker or several on NCCL (the gradients'
 * all-reduce inside too), the optimizer's update (its per-step
 * scalars read from a device buffer written before the replay; clipping's
 * coefficient computed on the device): every launch of a step but the
 * transfers. Dropout reads its per-step key from the device the same way.
 * What stays outside, and why: the minibatch's upload (a host memcpy into
 * the pinned staging ring on the copy stream, then an event the compute
 * stream waits on: queued before the replay), the gradient all-reduce
 * when staged through host memory (and with it the update), NCCL's at
 * the first step (which makes its communicator collectively), the one
 * copy of the loss and the batch-norm statistics to the host with the
 * host's pooled running-state update and its upload. Those are 2 to 5
 * calls a step; the graph replaces every per-layer launch.
 *
 * One graph per minibatch shape (graph_key): the observations n, the time
 * steps T (and the steps the buffers hold), lengths given or not and the
 * padding side, the loss weight w = n/M (a kernel argument) and the update
 * held. A shape is run eagerly
 * the first time (cuDNN chooses its algorithms for a new n, kernels are
 * loaded: nothing that may not happen under capture is left for the
 * capture), captured the second time and replayed from then on; the last
 * GRAPH_SLOTS shapes are kept. Replay runs the same kernels with the same
 * arguments as the eager launches, so the bits are the same.
 *
 * Where graphs are not used, the step runs its launches eagerly as before,
 * and the reason is noted once in dpt_net_gpu_describe: the option or
 * DPT_CUDA_GRAPH=0, a layer type not known to be capturable (layer
 * types added later), dropout on left-padded sequences (that step only: its
 * launches follow the lengths), synchronised batch
 * norm across workers (an all-reduce inside the forward), or a capture
 * that failed. Per-layer profiling (net->prof) runs eagerly. */
#ifndef DPT_NET_GPU_GRAPH_H
#define DPT_NET_GPU_GRAPH_H

#include "net/net_impl.h"

#include <stdint.h>

/* ---- host logic, any build (tests/test_gpu_graph.c checks it without a GPU) ---- */

/* DPT_CUDA_GRAPH: 1 when it turns graphs off ("0" or "off"), else 0
 * (unset, empty, "1", "on"; other values are refused by dpt_env_check). */
int net_gpu_graph_env_off(void);
/* 1 when v is a value DPT_CUDA_GRAPH accepts ("0", "1", "off", "on"). */
int net_gpu_graph_env_valid(const char *v);
/* Why net's training step cannot be one graph, from its layers alone
 * (NULL: it can), written into why[n]. */
const char *net_gpu_graph_refusal(const dpt_net *net, char *why, size_t n);
/* Why this step of net (as dpt_net_set_steps left it) runs eagerly though
 * graphs are on (NULL: it need not): dropout on left-padded sequences. */
const char *net_gpu_graph_step_refusal(const dpt_net *net);
/* Dropout's per-step key {seed, epoch, iteration, obs offset}, uploaded
 * before each graph step (gpu_dropout_keyed reads it). */
void net_gpu_graph_dropout_key(const dpt_net *net, uint64_t key[4]);

#define GRAPH_SLOTS 8

typedef struct graph_key {
    int n, steps;
    int cap_steps;   /* the steps the buffers were sized for: buffers grown by
                        dpt_net_set_steps are new addresses, so a new shape */
    uint32_t w_bits; /* the loss weight's float32 bits */
    int has_len;     /* valid lengths given (dpt_net_set_steps): lstm/gru pass
                        the device copy, else NULL (their kernels' arguments) */
    int pad_left;    /* padding first (an argument of the recurrent kernels) */
    int update;      /* the optimizer's update in the graph: 0 none, else 1 +
                        GPU_UPDATE_* + 2 when clipping (net_gpu_graph_update_code) */
} graph_key;

/* The key of a step of n observations with loss weight w on net as it is
 * now (steps, step capacity, lengths present, padding side). */
graph_key net_gpu_graph_key(const dpt_net *net, int n, float w, int update);

typedef struct graph_slot {
    graph_key key;
    int warm;        /* ran eagerly once */
    void *graph;     /* gpu_graph * once captured; NULL before */
    unsigned long used;
} graph_slot;

/* A network's graphs: on/off, the shapes seen, counters for tests. */
typedef struct gpu_graphs {
    int on;                 /* 0: eager launches (why says why) */
    char why[256];
    graph_slot slot[GRAPH_SLOTS];
    unsigned long clock;
    long eager, captures, replays;
} gpu_graphs;

enum { GRAPH_RUN_EAGER = 0, GRAPH_RUN_CAPTURE = 1, GRAPH_RUN_REPLAY = 2 };

/* What to do for a step of shape k: EAGER (first time: the slot becomes
 * warm), CAPTURE (second time: store the graph in (*slot)->graph) or
 * REPLAY ((*slot)->graph). A new shape takes a free slot or the least
 * recently used one; a graph it held is handed back in *evicted for the
 * caller to free (else NULL). */
int gpu_graphs_next(gpu_graphs *G, graph_key k, graph_slot **slot, void **evicted);

/* ---- the device part (CUDA builds; net_gpu.c calls it) ------------------------- */

/* One training step's launches on the device, x and the targets already
 * there: forward, the loss (weight w, scale) and backward. */
typedef dpt_status (*graph_body)(dpt_net *net, int n, float w, double scale);

/* Run body for a step of n observations as the graphs say: eagerly,
 * captured then replayed, or replayed (with body's host-side effects
 * redone by net_gpu_graph_replayed). A capture that fails turns graphs off
 * for this network, notes why, and runs body eagerly. */
dpt_status net_gpu_graph_run(dpt_net *net, gpu_graphs *G, int n, float w, double scale,
                             graph_body body);
/* Free every graph (the device must be current). */
void net_gpu_graph_clear(gpu_graphs *G);

/* net_gpu.c's side. After a replay: what body does on the host besides
 * its launches (the executor's last forward: n observations in TRAIN
 * mode; a loss × scale pending on the device; the gradient mirror stale). */
void net_gpu_graph_replayed(dpt_net *net, int n, double scale);
/* The optimizer's update in this step's graph: its key code (0: none), the
 * launches queued after body (eager and under capture), and the host's
 * side once they are queued or replayed (mirrors stale, the norm pending). */
int net_gpu_graph_update_code(const dpt_net *net);
dpt_status net_gpu_graph_tail(dpt_net *net);
void net_gpu_graph_update_queued(dpt_net *net);
/* 1 when this step should go through net_gpu_graph_step: graphs on, no
 * per-layer profiling, no batch norm synchronised across workers (that
 * turns graphs off, noted once). 0 in builds without CUDA. */
int net_gpu_graph_wanted(dpt_net *net);
/* The targets t [n, outputs] (host) to the device, then body through
 * net_gpu_graph_run; the step's backward is then done (net_gpu_graph_took_
 * backward answers 1 once). */
dpt_status net_gpu_graph_step(dpt_net *net, const float *t, int n, float w, double scale,
                              graph_body body);
int net_gpu_graph_took_backward(dpt_net *net);
/* For tests: whether graphs are on for net, and how many steps ran
 * eagerly, were captured and were replayed (0s for a CPU network). */
int net_gpu_graph_counts(const dpt_net *net, long *eager, long *captures, long *replays);

#endif
