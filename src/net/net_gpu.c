/* A network on a GPU: its device memory and host mirrors, and the public
 * API of dptrain/gpu.h.
 *
 * There is one executor (net.c) and one training step (train/step.c) for
 * both devices. On a GPU the executor's planned buffers are device memory
 * allocated here, and it runs each layer's CUDA entries (layer_type.gpu_*,
 * layer_gpu.c); this file holds what only a GPU network has: the context,
 * the device copies of the flat buffers (learnables, gradients, state) and
 * of the optimizer's state, staleness flags for the host mirrors, the
 * per-step statistics buffer (the loss and every batch norm's batch
 * statistics: one copy to the host per step, into the CPU layers' own
 * arrays, so the pooled running-state update is the CPU code), the device
 * all-reduce, and the device side of the step's few device-dependent
 * parts (net_impl.h: input and output transfers, the loss, the gradient
 * all-reduce, the optimizer update). */
#include "comm/comm_nccl.h"
#include "dptrain/gpu.h"
#include "net/net_gpu_graph.h"
#include "net/net_impl.h"
#include "optim/optim_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- which layers have GPU code (any build: it reads the layer table) -------------- */

dpt_status dpt_net_gpu_supported(const dpt_net *net)
{
    if (!net)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_gpu_supported: net is NULL");
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        const layer_type *t = l->type;
        int has = t->gpu_supports != NULL;
#ifdef DPT_HAVE_CUDA
        /* A type with a forward needs both CUDA entries (the input has none:
         * the executor places x). */
        has = has && (!t->forward || (t->gpu_forward && t->gpu_backward));
#endif
        const char *why = has ? t->gpu_supports(l) : NULL;
        if (!has)
            return dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: layer '%s' (%s) has no GPU code",
                            net->source, l->line, l->name, l->type->name);
        if (why)
            return dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: layer '%s' (%s) has no GPU code for "
                            "this configuration: %s", net->source, l->line, l->name,
                            l->type->name, why);
    }
    return DPT_OK;
}

#ifdef DPT_HAVE_CUDA

#include "ops/cuda/gpu_ops.h"
#include "ops/cuda/gpu_rnn.h"

static size_t count3(const int *chw) { return (size_t)chw[0] * chw[1] * chw[2]; }

/* Floats of node i's output for n observations of the current steps. */
static size_t node_count(const dpt_net *net, int i, int n)
{
    const dpt_layer *l = &net->layers[i];
    return (size_t)n * count3(l->out) * (l->seq ? (size_t)net->steps : 1);
}

/* Rows of the network's output for max_batch observations of the step
 * capacity (the loss's per-row scratch), and its floats (its gradient,
 * the targets). */
static int out_rows(const dpt_net *net)
{
    return net->max_batch * (net->layers[net->n_layers - 1].seq ? net->cap_steps : 1);
}

static size_t out_cap(const dpt_net *net)
{
    return (size_t)out_rows(net) * count3(net->layers[net->n_layers - 1].out);
}

/* n doubles of the statistics buffer at offset that go to host after the
 * per-step copy. */
typedef struct stats_dest {
    size_t offset, n;
    double *host;
} stats_dest;

/* What a graph step copies to the device before it runs (net_gpu_graph_
 * step): the update's scalars, then dropout's key. */
typedef struct step_values {
    gpu_update_scalars sc;
    uint64_t key[4];
} step_values;

typedef struct net_gpu {
    gpu_ctx *ctx;
    dpt_gpu_options opt;
    float *params, *grads, *state; /* device flat buffers */
    /* The optimizer's state on the device: buffer i mirrors the host
     * buffer ostate_host[i] (dpt_optim_buffer of the optimizer last used,
     * which identifies it: a dpt_sgdm wrapped anew each step keeps its
     * velocity's address). */
    float *ostate[2];              /* device [n_params] each */
    float *ostate_host[2];
    size_t n_ostate;               /* buffers bound; 0: none */
    float *dout;                   /* device [max_batch, outputs]: dlogits or the caller's dy */
    float *targets;                /* device [max_batch, outputs] */
    double *stats;                 /* device [n_stats]: [0] the loss, then reservations */
    double *stats_host;            /* pinned mirror */
    size_t n_stats, stats_used;
    stats_dest *dests;             /* [n_dests] */
    size_t n_dests;
    int loss_pending;              /* stats[0] holds a loss not yet brought to the host */
    double loss_scale;             /* ... to be multiplied by this (n_local / M) */
    float *out_host;               /* pinned [max_batch, outputs]: forward's y */
    float *state_pinned;           /* pinned [n_state]: state upload */
    int *len;                      /* device [max_batch]: net->len, uploaded by set_steps */
    uint64_t *drop_key;            /* device [4] in upd's block: seed, epoch, iteration, obs
                                      offset of the step (dropout under a CUDA graph) */
    int drop_key_live;             /* drop_key holds this step's values: dropout reads it */
    /* The optimizer's update inside the step's graph (one worker, or NCCL): */
    gpu_update_scalars *upd;       /* device: this step's scalars (optim_gpu_scalars) */
    double *upd_ss;                /* device: Σ g² of the last clipped update */
    dpt_optim *step_opt;           /* the update the next graph step takes (net_step_plan_update;
                                      borrowed for one dpt_train_step); NULL: outside */
    int upd_live, upd_kind, upd_clip; /* this graph step queues the update: its kind, clipping */
    int upd_done;                  /* ... and did: net_optim_step has nothing left to do */
    dpt_gpu_comm *step_gc;         /* NCCL all-reduce of the gradients before the update in the
                                      graph (several workers); NULL: one worker */
    int ar_done;                   /* the last graph step all-reduced: net_gpu_grads_allreduce
                                      has nothing left to do */
    unsigned gcomm_gen;            /* counts the device all-reduces made (a graph holds one) */
    dpt_optim *norm_opt;           /* its last_norm waits for upd_ss (net_gpu_stats_pull) */
    int params_stale, grads_stale, ostate_stale; /* host mirrors behind the device */
    dpt_status dev_error;          /* first failure of a void net_dev operation */
    char dev_message[256];
    dpt_gpu_comm *gcomm;           /* device all-reduce of the comm last used */
    gpu_graphs graphs;             /* the step as CUDA graphs (net_gpu_graph.c) */
    int bwd_done;                  /* the last net_gpu_graph_step ran the backward too */
    char text[4096];               /* dpt_net_gpu_describe */
} net_gpu;

/* ---- what the layer entries (layer_gpu.c) use ------------------------------------------ */

struct gpu_ctx *net_gpu_ctx(const dpt_net *net) { return net->gpu->ctx; }
int net_gpu_find_algorithms(const dpt_net *net) { return net->gpu->opt.find_algorithms; }

void net_gpu_views(const dpt_net *net, const dpt_layer *l, float **p, float **g, float **s)
{
    const net_gpu *G = net->gpu;
    size_t lo = l->n_learnables ? net->learn[l->first_learnable].offset : 0;
    *p = l->n_learnables ? G->params + lo : NULL;
    *g = l->n_learnables ? G->grads + lo : NULL;
    *s = l->n_state ? G->state + net->state_tab[l->first_state].offset : NULL;
}

void net_gpu_note(dpt_net *net, const char *fmt, ...)
{
    net_gpu *G = net->gpu;
    size_t k = strlen(G->text);
    if (k + 1 >= sizeof G->text)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(G->text + k, sizeof G->text - k, fmt, ap);
    va_end(ap);
}

dpt_status net_gpu_stats_reserve(dpt_net *net, size_t n, double *host, double **dev)
{
    net_gpu *G = net->gpu;
    if (G->stats_used + n > G->n_stats)
        return dpt_fail(DPT_ERR_ARG, "%s: GPU statistics buffer too small (%zu + %zu of %zu "
                        "doubles)", net->source, G->stats_used, n, G->n_stats);
    stats_dest *d = realloc(G->dests, (G->n_dests + 1) * sizeof *d);
    if (!d)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    G->dests = d;
    d[G->n_dests++] = (stats_dest){G->stats_used, n, host};
    *dev = G->stats + G->stats_used;
    G->stats_used += n;
    return DPT_OK;
}

/* The device all-reduce for comm, made (collectively) on first use. */
dpt_status net_gpu_comm(dpt_net *net, dpt_comm *comm, dpt_gpu_comm **out)
{
    net_gpu *G = net->gpu;
    if (!G->gcomm || dpt_gpu_comm_host(G->gcomm) != comm) {
        dpt_gpu_comm_free(G->gcomm);
        G->gcomm = NULL;
        dpt_status s = dpt_gpu_comm_new(comm, gpu_ctx_device(G->ctx), gpu_ctx_stream(G->ctx),
                                        (int)G->opt.reduce, &G->gcomm);
        if (s != DPT_OK)
            return s;
        G->gcomm_gen++;
        net_gpu_note(net, "gradient all-reduce over %d workers: %s\n", dpt_comm_size(comm),
                     dpt_gpu_comm_uses_nccl(G->gcomm) ? "NCCL"
                                                      : "staged through pinned host memory");
    }
    *out = G->gcomm;
    return DPT_OK;
}

/* ---- the executor on the device (net.c follows net->dev and net->plan) ------------ */

/* The void operations of net_dev queue kernels; a launch failure is kept
 * and reported after the backward (net_gpu_after_backward). */
static void keep_error(net_gpu *G, dpt_status s)
{
    if (s != DPT_OK && G->dev_error == DPT_OK) {
        G->dev_error = s;
        snprintf(G->dev_message, sizeof G->dev_message, "%s", dpt_last_error());
    }
}

static dpt_status dev_alloc(dpt_net *net, size_t n, float **out)
{
    return gpu_malloc(net->gpu->ctx, (n ? n : 1) * sizeof(float), (void **)out);
}
static void dev_release(dpt_net *net, float *p)
{
    (void)net;
    gpu_mfree(p);
}
static void dev_zero(dpt_net *net, float *p, size_t n)
{
    keep_error(net->gpu, gpu_zero(net->gpu->ctx, p, n * sizeof(float)));
}
static void dev_add(dpt_net *net, float *dst, const float *src, size_t n)
{
    keep_error(net->gpu, gpu_add(net->gpu->ctx, dst, src, n));
}
static void dev_copy(dpt_net *net, float *dst, const float *src, size_t n)
{
    keep_error(net->gpu, gpu_copy(net->gpu->ctx, dst, src, n * sizeof(float)));
}
static dpt_status dev_upload(dpt_net *net, float *dst, const float *host, size_t n)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    G->loss_pending = 0; /* a new forward: no step's loss is on the device */
    G->bwd_done = 0;
    return s == DPT_OK ? gpu_upload(G->ctx, dst, host, n * sizeof(float)) : s;
}
static dpt_status dev_download(dpt_net *net, float *host, const float *src, size_t n)
{
    return gpu_download(net->gpu->ctx, host, src, n * sizeof(float));
}
/* Copied back to check (the slow path; the executor's output check on a GPU
 * is net_gpu_get_output). */
static int dev_all_finite(dpt_net *net, const float *x, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    int ok = h && gpu_download(net->gpu->ctx, h, x, n * sizeof(float)) == DPT_OK;
    for (size_t j = 0; ok && j < n; j++)
        ok = isfinite(h[j]);
    free(h);
    return ok;
}
static dpt_status dev_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                              dpt_mode mode)
{
    return l->type->gpu_forward(net, l, x, y, n, mode);
}
static dpt_status dev_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                               const float *dy, float *const *dx, int n)
{
    return l->type->gpu_backward(net, l, x, y, dy, dx, n);
}

static const net_dev net_dev_gpu = {
    .name = "gpu", .alloc = dev_alloc, .release = dev_release, .zero = dev_zero,
    .add = dev_add, .copy = dev_copy, .upload = dev_upload, .download = dev_download,
    .all_finite = dev_all_finite, .forward = dev_forward, .backward = dev_backward,
};

dpt_status net_gpu_after_backward(dpt_net *net)
{
    net_gpu *G = net->gpu;
    G->grads_stale = 1;
    dpt_status s = G->dev_error;
    G->dev_error = DPT_OK;
    return s == DPT_OK ? DPT_OK : dpt_fail(s, "%s", G->dev_message);
}

/* A layer's fusion fields, as the CPU plan (graph.c plan_fusion) set them. */
typedef struct layer_fusion {
    int fused, relu_after, in_act;
    double *sums_out, *sums_in;
    bn_fusion *bnf, *in_bnf, *out_bnf;
} layer_fusion;

/* The CPU executor's plan and buffers while the network is on a GPU. */
struct exec_saved {
    const net_dev *dev;
    node_plan *plan;
    int *plan_ints;
    size_t *buf_floats;
    int n_buf, n_grad_bufs, n_grp;
    int *grp_buf;
    float **buf, **acts;
    layer_fusion *f; /* [n_layers] */
};

/* Put the CPU executor back (nothing when it is there): the device buffers
 * and plan go. */
static void exec_to_host(dpt_net *net)
{
    struct exec_saved *sv = net->host_exec;
    if (!sv)
        return;
    net_free_buffers(net); /* through net->dev: the device's */
    free(net->plan), free(net->plan_ints), free(net->buf_floats), free(net->grp_buf);
    net->dev = sv->dev, net->plan = sv->plan, net->plan_ints = sv->plan_ints;
    net->buf_floats = sv->buf_floats;
    net->n_buf = sv->n_buf, net->n_grad_bufs = sv->n_grad_bufs, net->n_grp = sv->n_grp;
    net->grp_buf = sv->grp_buf, net->buf = sv->buf, net->acts = sv->acts;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        const layer_fusion *f = &sv->f[i];
        l->fused = f->fused, l->relu_after = f->relu_after, l->in_act = f->in_act;
        l->sums_out = f->sums_out, l->sums_in = f->sums_in;
        l->bnf = f->bnf, l->in_bnf = f->in_bnf, l->out_bnf = f->out_bnf;
    }
    free(sv->f);
    free(sv);
    net->host_exec = NULL;
}

/* The executor on the device: the GPU's fusion (a ReLU that is the only
 * consumer of a batch norm computed inside it, when fuse_bn_relu; none of
 * the CPU's conv fusions), its buffer plan, device buffers. The CPU's is
 * kept to come back to. */
static dpt_status exec_to_device(dpt_net *net, int fuse_bn_relu)
{
    int L = net->n_layers;
    struct exec_saved *sv = calloc(1, sizeof *sv);
    layer_fusion *f = calloc((size_t)L, sizeof *f);
    if (!sv || !f) {
        free(sv), free(f);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    *sv = (struct exec_saved){net->dev,   net->plan,         net->plan_ints, net->buf_floats,
                              net->n_buf, net->n_grad_bufs, net->n_grp,     net->grp_buf,
                              net->buf,   net->acts,         f};
    net->host_exec = sv;
    net->plan = NULL, net->plan_ints = NULL, net->buf_floats = NULL, net->grp_buf = NULL;
    net->buf = net->acts = NULL;
    net->n_buf = net->n_grad_bufs = net->n_grp = 0;
    net->dev = &net_dev_gpu;
    for (int i = 0; i < L; i++) {
        dpt_layer *l = &net->layers[i];
        f[i] = (layer_fusion){l->fused, l->relu_after, l->in_act, l->sums_out, l->sums_in,
                              l->bnf, l->in_bnf, l->out_bnf};
        l->fused = l->relu_after = l->in_act = 0;
        l->sums_out = l->sums_in = NULL;
        l->bnf = l->in_bnf = l->out_bnf = NULL;
    }
    for (int i = 1; fuse_bn_relu && i < L; i++) {
        int r = net->n_consumers[i] == 1 ? net->sole_consumer[i] : -1;
        if (net->layers[i].type == &dpt_layer_batchnorm && r > 0 &&
            net->layers[r].type == &dpt_layer_relu)
            net->layers[i].relu_after = net->layers[r].fused = 1;
    }
    dpt_status s = net_plan_buffers(net);
    if (s == DPT_OK)
        s = net_alloc_buffers(net);
    if (s != DPT_OK)
        exec_to_host(net);
    return s;
}

/* ---- set-up and tear-down --------------------------------------------------------------- */

static void gpu_release(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!G)
        return;
    if (G->ctx)
        gpu_ctx_enter(G->ctx);
    exec_to_host(net); /* the executor's device buffers go, its host plan returns */
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].gpu_priv && net->layers[i].type->gpu_release)
            net->layers[i].type->gpu_release(&net->layers[i]);
    dpt_gpu_comm_free(G->gcomm);
    net_gpu_graph_clear(&G->graphs);
    gpu_mfree(G->params), gpu_mfree(G->grads), gpu_mfree(G->state);
    gpu_mfree(G->ostate[0]), gpu_mfree(G->ostate[1]);
    gpu_mfree(G->dout), gpu_mfree(G->targets), gpu_mfree(G->stats), gpu_mfree(G->len);
    gpu_mfree(G->upd); /* drop_key and upd_ss too */
    gpu_mfree_host(G->stats_host), gpu_mfree_host(G->out_host), gpu_mfree_host(G->state_pinned);
    free(G->dests);
    gpu_ctx_free(G->ctx);
    free(G);
    net->gpu = NULL;
}

void net_gpu_free(dpt_net *net)
{
    if (net)
        gpu_release(net);
}

#define TRY(call)                       \
    do {                                \
        if ((s = (call)) != DPT_OK)     \
            goto fail;                  \
    } while (0)

/* bf16 copies of one product's operands and result, planned when the
 * network moves and when its time steps grow (a step allocates nothing):
 * the largest layer with learnables, x + y + w at max_batch observations
 * of cap_steps. */
static dpt_status bf16_reserve(const dpt_net *net, gpu_ctx *ctx)
{
    size_t most = 0, rows = (size_t)net->max_batch * (size_t)(net->cap_steps > 0 ? net->cap_steps : 1);
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        size_t need = (count3(l->in) + count3(l->out)) * rows + l->n_learn_values;
        if (l->n_learn_values && need > most)
            most = need;
    }
    return gpu_ctx_set_bf16(ctx, most);
}

static dpt_status gpu_setup(dpt_net *net, const dpt_gpu_options *opt)
{
    /* Every layer must have GPU code: fail naming the first that has not,
     * before touching the device. */
    dpt_status s = dpt_net_gpu_supported(net);
    if (s != DPT_OK)
        return s;
    net_gpu *G = calloc(1, sizeof *G);
    if (!G)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    net->gpu = G;
    G->opt = *opt;
    int L = net->n_layers;
    size_t n_out = out_cap(net);
    int max_c = 1; /* the per-channel reductions' scratch: batch norm, biases */
    for (int i = 0; i < L; i++) {
        const dpt_layer *l = &net->layers[i];
        max_c = l->out[0] > max_c ? l->out[0] : max_c;
        max_c = l->in[0] > max_c ? l->in[0] : max_c;
    }
    /* tf32 is the old allow_tf32; bf16 keeps TF32 off for what stays
     * float32 (only the products of conv and fc change type). */
    const int tf32 = opt->allow_tf32 || opt->precision == DPT_PRECISION_TF32;
    TRY(gpu_ctx_new(opt->device, tf32, &G->ctx));
    gpu_ctx *ctx = G->ctx;
    if (opt->precision == DPT_PRECISION_BF16)
        TRY(bf16_reserve(net, ctx));
    snprintf(G->text, sizeof G->text, "GPU %d, precision %s, TF32 %s, %s, bn+relu fusion %s\n",
             opt->device,
             opt->precision == DPT_PRECISION_BF16 ? "bf16 (conv and fc products)"
                                                   : tf32 ? "tf32" : "fp32",
             tf32 ? "on" : "off",
             opt->find_algorithms ? "timed cuDNN algorithms" : "cuDNN heuristics",
             opt->fuse_bn_relu ? "on" : "off");
    TRY(gpu_ctx_reserve_scratch(ctx, max_c, out_rows(net)));
    TRY(gpu_malloc(ctx, (net->n_params ? net->n_params : 1) * sizeof(float), (void **)&G->params));
    TRY(gpu_malloc(ctx, (net->n_params ? net->n_params : 1) * sizeof(float), (void **)&G->grads));
    TRY(gpu_malloc(ctx, (net->n_state ? net->n_state : 1) * sizeof(float), (void **)&G->state));
    TRY(gpu_malloc(ctx, n_out * sizeof(float), (void **)&G->dout));
    TRY(gpu_malloc(ctx, n_out * sizeof(float), (void **)&G->targets));
    /* The loss, then what the layers reserve: at most their pooled doubles. */
    G->n_stats = 1 + net->n_pool;
    G->stats_used = 1;
    TRY(gpu_malloc(ctx, G->n_stats * sizeof(double), (void **)&G->stats));
    TRY(gpu_malloc_host(G->n_stats * sizeof(double), (void **)&G->stats_host));
    TRY(gpu_malloc_host(n_out * sizeof(float), (void **)&G->out_host));
    TRY(gpu_malloc_host((net->n_state ? net->n_state : 1) * sizeof(float),
                        (void **)&G->state_pinned));
    TRY(gpu_malloc(ctx, (size_t)net->max_batch * sizeof(int), (void **)&G->len));
    /* A graph step's per-step values, uploaded together (step_values):
     * the update's scalars and dropout's key; then the norm's Σ g². */
    TRY(gpu_malloc(ctx, sizeof(step_values) + sizeof(double), (void **)&G->upd));
    G->drop_key = (uint64_t *)((char *)G->upd + offsetof(step_values, key));
    G->upd_ss = (double *)((char *)G->upd + sizeof(step_values));
    /* The executor's buffers on the device, planned for this device's
     * fusion (bn+relu only, when fuse_bn_relu). */
    TRY(exec_to_device(net, opt->fuse_bn_relu));
    for (int i = 0; i < L; i++) {
        dpt_layer *l = &net->layers[i];
        if (l->type->gpu_setup)
            TRY(l->type->gpu_setup(net, l));
    }
    TRY(gpu_upload(ctx, G->params, net->params, net->n_params * sizeof(float)));
    TRY(gpu_upload(ctx, G->state, net->state, net->n_state * sizeof(float)));
    TRY(net_gpu_put_lengths(net));
    TRY(gpu_sync(ctx, "copy the network to the GPU"));
    net->last_n = 0; /* a backward needs a forward on the device first */
    /* CUDA graphs: on unless asked not to or a layer rules them out. */
    char why[200];
    const char *no = !opt->cuda_graph         ? "option cuda_graph 0"
                     : net_gpu_graph_env_off() ? "DPT_CUDA_GRAPH=0"
                                               : net_gpu_graph_refusal(net, why, sizeof why);
    G->graphs.on = !no;
    if (no)
        snprintf(G->graphs.why, sizeof G->graphs.why, "%s", no);
    net_gpu_note(net, "CUDA graph: %s%s\n", no ? "off: " : "on (forward, loss, backward and, "
                 "with one worker or NCCL, the all-reduce and update; one per minibatch shape, "
                 "captured at its second step)", no ? no : "");
    return DPT_OK;
fail:
    gpu_release(net);
    return s;
}

/* The sequences' valid lengths (net->len) to the device, when
 * dpt_net_set_steps gives them: never inside a step, so a step's launches
 * are the same for any lengths (a CUDA graph replays them). */
dpt_status net_gpu_put_lengths(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!net->len)
        return DPT_OK;
    dpt_status s = gpu_ctx_enter(G->ctx);
    return s == DPT_OK ? gpu_upload(G->ctx, G->len, net->len, (size_t)net->len_n * sizeof(int))
                       : s;
}

const int *net_gpu_lengths(const dpt_net *net) { return net->len ? net->gpu->len : NULL; }

const uint64_t *net_gpu_dropout_key(const dpt_net *net)
{
    return net->gpu->drop_key_live ? net->gpu->drop_key : NULL;
}

/* Steps grown on the GPU: the host plan is grown as on the CPU
 * (net_grow_steps: plan, memory bound, the layers' host buffers), then
 * the device plan, the output-sized buffers and the device buffers of the
 * layers whose size follows the steps (keep_floats: lstm/gru, whose
 * carried state goes through the host on the way) are made again. The
 * context, the other layers' device state and the device all-reduce stay,
 * so workers that grow at different times keep one communicator. */
dpt_status net_gpu_grow_steps(dpt_net *net, int cap)
{
    net_gpu *G = net->gpu;
    gpu_ctx *ctx = G->ctx;
    dpt_status s = gpu_ctx_enter(ctx);
    if (s == DPT_OK)
        s = gpu_sync(ctx, "grow the time steps");
    if (s != DPT_OK)
        return s;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (l->type->keep_floats && l->gpu_priv && l->type->gpu_release)
            l->type->gpu_release(l);
    }
    exec_to_host(net);
    /* On failure net_grow_steps keeps the old capacity: the device is set
     * up again for whichever capacity the network has. */
    s = net_grow_steps(net, cap);
    dpt_status s2 = net->buf ? exec_to_device(net, G->opt.fuse_bn_relu)
                             : dpt_fail(DPT_ERR_NOMEM, "%s: no buffers", net->source);
    if (s2 != DPT_OK) {
        /* Back on the host plan with net->gpu set: nothing may run on it. */
        net_free_buffers(net);
        return s != DPT_OK ? s : s2;
    }
    char msg[512] = "";
    if (s != DPT_OK)
        snprintf(msg, sizeof msg, "%s", dpt_last_error());
    size_t n_out = out_cap(net);
    gpu_mfree(G->dout), gpu_mfree(G->targets), gpu_mfree_host(G->out_host);
    G->dout = G->targets = G->out_host = NULL;
    if ((s2 = gpu_ctx_reserve_scratch(ctx, 1, out_rows(net))) == DPT_OK &&
        (G->opt.precision != DPT_PRECISION_BF16 || (s2 = bf16_reserve(net, ctx)) == DPT_OK) &&
        (s2 = gpu_malloc(ctx, n_out * sizeof(float), (void **)&G->dout)) == DPT_OK &&
        (s2 = gpu_malloc(ctx, n_out * sizeof(float), (void **)&G->targets)) == DPT_OK)
        s2 = gpu_malloc_host(n_out * sizeof(float), (void **)&G->out_host);
    for (int i = 0; s2 == DPT_OK && i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (l->type->keep_floats && !l->gpu_priv && l->type->gpu_setup)
            s2 = l->type->gpu_setup(net, l);
    }
    net->last_n = 0;
    if (s2 != DPT_OK) {
        net_free_buffers(net); /* a forward fails cleanly (net->buf) */
        return s2;
    }
    return s != DPT_OK ? dpt_fail(s, "%s", msg) : DPT_OK;
}

/* ---- transfers around the executor ------------------------------------------------------ */

/* The first layer whose output holds a NaN or infinity (copied back layer
 * by layer: the slow path after a non-finite result). */
dpt_status net_gpu_name_nonfinite(dpt_net *net, int n, const char *otherwise)
{
    net_gpu *G = net->gpu;
    for (int i = 1; i < net->n_layers; i++) {
        const float *a = net->acts[i];
        if (!a || net->layers[i].relu_after)
            continue; /* not kept, or shared with its fused ReLU (checked as that) */
        size_t cnt = node_count(net, i, n);
        float *h = malloc(cnt * sizeof(float));
        if (!h)
            return dpt_fail(DPT_ERR_NOMEM, "out of memory");
        dpt_status s = gpu_download(G->ctx, h, a, cnt * sizeof(float));
        int bad = 0;
        for (size_t j = 0; s == DPT_OK && j < cnt && !bad; j++)
            bad = !isfinite(h[j]);
        free(h);
        if (s != DPT_OK)
            return s;
        if (bad)
            return dpt_fail(DPT_ERR_NUMERIC, "non-finite values in the output of layer '%s' (%s)",
                            net->layers[i].name, net->layers[i].type->name);
    }
    return dpt_fail(DPT_ERR_NUMERIC, "%s", otherwise);
}

dpt_status net_gpu_get_output(dpt_net *net, const float *dev, int n, const float **y)
{
    net_gpu *G = net->gpu;
    size_t cnt = node_count(net, net->n_layers - 1, n);
    dpt_status s = gpu_download(G->ctx, G->out_host, dev, cnt * sizeof(float));
    if (s != DPT_OK)
        return s;
    for (size_t j = 0; j < cnt; j++)
        if (!isfinite(G->out_host[j]))
            return net_gpu_name_nonfinite(net, n, "non-finite values in the network output");
    *y = G->out_host;
    return DPT_OK;
}

dpt_status net_gpu_put_dy(dpt_net *net, const float *dy, size_t n, const float **dev)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->dout, dy, n * sizeof(float));
    *dev = G->dout;
    return s;
}

const float *net_gpu_dlogits(const dpt_net *net) { return net->gpu->dout; }

/* ---- the device parts of a training step (train/step.c) ----------------------------------- */

dpt_status net_gpu_loss_xent(dpt_net *net, const float *t, int n, float w, double scale,
                             const float **dlogits)
{
    net_gpu *G = net->gpu;
    int L = net->n_layers, k = (int)count3(net->layers[L - 1].out);
    /* t NULL: the targets are on the device already (net_gpu_graph_step). */
    dpt_status s = t ? gpu_upload(G->ctx, G->targets, t, node_count(net, L - 1, n) * sizeof(float))
                     : DPT_OK;
    /* The loss into stats[0], brought to the host with the batch-norm
     * statistics (net_gpu_stats_pull); the gradient at the logits. A
     * sequence output: the sum over its valid rows (the step's scale
     * divides by all workers' valid rows), padded rows masked. */
    if (s == DPT_OK && dpt_net_output_is_sequence(net))
        s = gpu_seq_xent(G->ctx, net->acts[L - 1], G->targets, n * net->steps, k, w, G->dout,
                         G->stats);
    else if (s == DPT_OK)
        s = gpu_softmax_xent(G->ctx, net->acts[L - 1], G->targets, n, k, w, G->dout, G->stats);
    if (s == DPT_OK)
        G->loss_pending = 1, G->loss_scale = scale;
    *dlogits = G->dout;
    return s;
}

/* ---- CUDA graphs of the step (net_gpu_graph.h) ------------------------------------------- */

void net_gpu_graph_replayed(dpt_net *net, int n, double scale)
{
    net_gpu *G = net->gpu;
    net->last_n = n;
    net->last_mode = DPT_MODE_TRAIN;
    G->loss_pending = 1, G->loss_scale = scale;
    G->grads_stale = 1;
    net_gpu_graph_update_queued(net);
    /* Dropout's host bookkeeping of this iteration, as its forward does. */
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type == &dpt_layer_dropout) {
            dropout_key k;
            dropout_layer_begin(net, &net->layers[i], DPT_MODE_TRAIN, &k);
        }
}

int net_gpu_graph_wanted(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!G->graphs.on || net->prof || net_gpu_graph_step_refusal(net))
        return 0; /* eager (a step refusal: this step only) */
    if (net->sync_bn && dpt_comm_size(net->sync_bn) > 1) {
        G->graphs.on = 0;
        snprintf(G->graphs.why, sizeof G->graphs.why, "batch norm synchronised across workers "
                 "(an all-reduce inside the forward)");
        net_gpu_note(net, "CUDA graph: off: %s\n", G->graphs.why);
        if (gpu_ctx_enter(G->ctx) == DPT_OK)
            net_gpu_graph_clear(&G->graphs);
        return 0;
    }
    return 1;
}

static dpt_status bind_optim(dpt_net *net, dpt_optim *o);

dpt_status net_gpu_graph_step(dpt_net *net, const float *t, int n, float w, double scale,
                              graph_body body)
{
    net_gpu *G = net->gpu;
    int L = net->n_layers;
    size_t k = count3(net->layers[L - 1].out);
    G->bwd_done = 0;
    /* A sequence output has a target row per step. */
    dpt_status s = gpu_upload(G->ctx, G->targets, t,
                              (size_t)n * k * (dpt_net_output_is_sequence(net) ? net->steps : 1) *
                                  sizeof(float));
    /* The values the graph reads from the device, in one stream-ordered
     * copy before the replay (the launches' arguments stay the same every
     * iteration): dropout's key, and for the update inside the graph
     * (net_step_plan_update said so) its scalars, with the host's
     * bookkeeping of the step done now and the optimizer's state bound
     * (uploaded at its first step, before any capture). */
    step_values v;
    memset(&v, 0, sizeof v);
    net_gpu_graph_dropout_key(net, v.key);
    G->upd_live = G->upd_done = 0;
    int upd = 0;
    if (s == DPT_OK && G->step_opt && (s = bind_optim(net, G->step_opt)) == DPT_OK) {
        G->upd_kind = optim_gpu_scalars(G->step_opt, &v.sc);
        G->upd_clip = v.sc.max_norm > 0;
        upd = 1;
    }
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->upd, &v, sizeof v);
    G->drop_key_live = s == DPT_OK;
    G->upd_live = s == DPT_OK && upd;
    if (s == DPT_OK)
        s = net_gpu_graph_run(net, &G->graphs, n, w, scale, body);
    G->drop_key_live = 0;
    G->upd_live = 0;
    G->bwd_done = s == DPT_OK;
    return s;
}

int net_gpu_graph_took_backward(dpt_net *net)
{
    net_gpu *G = net->gpu;
    int done = G && G->bwd_done;
    if (G)
        G->bwd_done = 0;
    return done;
}

int net_gpu_graph_update_code(const dpt_net *net)
{
    const net_gpu *G = net->gpu;
    /* The NCCL communicator's generation too: a graph holds its calls. */
    return G->upd_live ? 1 + G->upd_kind + 2 * G->upd_clip +
                             (G->step_gc ? 4 + 8 * (int)(G->gcomm_gen & 0xffff) : 0)
                       : 0;
}

dpt_status net_gpu_graph_tail(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!G->upd_live)
        return DPT_OK;
    /* Several workers: the gradients' NCCL all-reduce first (queued on
     * this stream; NCCL calls may be captured). */
    dpt_status s = G->step_gc ? dpt_gpu_comm_allreduce_f32(G->step_gc, G->grads, net->n_params)
                              : DPT_OK;
    if (s != DPT_OK)
        return s;
    s = optim_gpu_step_dev(G->upd_kind, G->upd_clip, net->n_params, G->ctx, G->params,
                                      G->grads, G->ostate, G->upd, G->upd_ss);
    if (s == DPT_OK)
        net_gpu_graph_update_queued(net);
    return s;
}

void net_gpu_graph_update_queued(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!G->upd_live)
        return;
    G->upd_done = 1;
    G->ar_done = G->step_gc != NULL;
    G->params_stale = G->ostate_stale = G->grads_stale = 1;
    G->norm_opt = G->upd_clip ? G->step_opt : NULL;
}

void net_step_plan_update(dpt_net *net, dpt_optim *opt, dpt_comm *comm)
{
    net_gpu *G = net->gpu;
    if (!G)
        return;
    /* One worker: nothing between the backward and the update (the
     * pooled state does not touch the learnables). Several: the gradient
     * all-reduce comes first; inside the graph too when it is NCCL's
     * (known from the first step on, which makes the communicator), else
     * (staged through host memory) both stay outside. */
    int multi = comm && dpt_comm_size(comm) > 1;
    int nccl = multi && G->gcomm && dpt_gpu_comm_host(G->gcomm) == comm &&
               dpt_gpu_comm_uses_nccl(G->gcomm);
    G->step_opt = G->graphs.on && (!multi || nccl) ? opt : NULL;
    G->step_gc = G->step_opt && nccl ? G->gcomm : NULL;
    G->upd_done = G->ar_done = 0;
}

int net_gpu_graph_counts(const dpt_net *net, long *eager, long *captures, long *replays)
{
    const net_gpu *G = net ? net->gpu : NULL;
    *eager = G ? G->graphs.eager : 0;
    *captures = G ? G->graphs.captures : 0;
    *replays = G ? G->graphs.replays : 0;
    return G && G->graphs.on;
}

dpt_status net_gpu_grads_allreduce(dpt_net *net, dpt_comm *comm)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (G->ar_done) { /* inside the step's graph, before its update */
        G->ar_done = 0;
        return s;
    }
    if (s != DPT_OK || !comm || dpt_comm_size(comm) < 2)
        return s;
    dpt_gpu_comm *gc = NULL;
    if ((s = net_gpu_comm(net, comm, &gc)) == DPT_OK)
        s = dpt_gpu_comm_allreduce_f32(gc, G->grads, net->n_params);
    G->grads_stale = 1;
    return s;
}

dpt_status net_gpu_stats_pull(dpt_net *net, double *loss)
{
    net_gpu *G = net->gpu;
    if (G->stats_used == 1 && !(loss && G->loss_pending) && !G->norm_opt)
        return DPT_OK; /* nothing to bring: no batch norm, no loss on the device */
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = gpu_download(G->ctx, G->stats_host, G->stats, G->stats_used * sizeof(double));
    if (s != DPT_OK)
        return s;
    for (size_t i = 0; i < G->n_dests; i++)
        memcpy(G->dests[i].host, G->stats_host + G->dests[i].offset,
               G->dests[i].n * sizeof(double));
    if (loss && G->loss_pending)
        *loss = G->stats_host[0] * G->loss_scale;
    G->loss_pending = 0;
    /* The norm of an update clipped inside the graph (the stream has
     * finished: a copy of 8 bytes). */
    if (G->norm_opt) {
        double ss = 0;
        s = gpu_download(G->ctx, &ss, G->upd_ss, sizeof ss);
        if (s == DPT_OK)
            G->norm_opt->last_norm = sqrt(ss);
        G->norm_opt = NULL;
    }
    return s;
}

dpt_status net_gpu_state_push(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!net->n_state)
        return DPT_OK;
    /* Queued through pinned memory; the stream orders it before any later
     * use of the state. */
    memcpy(G->state_pinned, net->state, net->n_state * sizeof(float));
    return gpu_upload_async(G->ctx, G->state, G->state_pinned, net->n_state * sizeof(float));
}

/* Bind o's state to the device (uploaded at its first step here, and again
 * after each dpt_net_sync_to_host or _to_device, which unbind it). Another
 * optimizer replaces a bound one without touching it (it may be freed
 * already): the device copy is dropped. */
static dpt_status bind_optim(dpt_net *net, dpt_optim *o)
{
    net_gpu *G = net->gpu;
    size_t nb = dpt_optim_n_buffers(o);
    if (nb > 2)
        return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: an optimizer with %zu state buffers (the GPU "
                        "step keeps 2)", net->source, nb);
    int same = nb == G->n_ostate;
    for (size_t i = 0; same && i < nb; i++)
        same = G->ostate_host[i] == dpt_optim_buffer(o, i);
    if (same && nb)
        return DPT_OK;
    G->n_ostate = 0;
    dpt_status s = DPT_OK;
    for (size_t i = 0; s == DPT_OK && i < nb; i++) {
        float *host = dpt_optim_buffer(o, i);
        if (!G->ostate[i])
            s = gpu_malloc(G->ctx, (net->n_params ? net->n_params : 1) * sizeof(float),
                           (void **)&G->ostate[i]);
        if (s == DPT_OK && host)
            s = gpu_upload(G->ctx, G->ostate[i], host, net->n_params * sizeof(float));
        G->ostate_host[i] = host;
    }
    if (s == DPT_OK)
        G->n_ostate = nb, G->ostate_stale = 0;
    return s;
}

/* The optimizer's update on the device (dpt_optim's kinds, clipping
 * included: optim/optim.c optim_gpu_step). */
static dpt_status device_optim(dpt_net *net, dpt_optim *o)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = bind_optim(net, o);
    if (s == DPT_OK)
        s = optim_gpu_step(o, G->ctx, G->params, G->grads, G->ostate);
    if (s == DPT_OK) /* clipping scales the gradients in place */
        G->params_stale = G->ostate_stale = G->grads_stale = 1;
    return s;
}

/* ---- host mirrors -------------------------------------------------------------------------- */

void net_gpu_pull(dpt_net *net)
{
    if (!net || !net->gpu)
        return;
    net_gpu *G = net->gpu;
    if (!G->params_stale && !G->grads_stale)
        return;
    /* Failures surface at the next device call; the mirror stays as it was. */
    if (gpu_ctx_enter(G->ctx) != DPT_OK)
        return;
    if (G->params_stale &&
        gpu_download(G->ctx, net->params, G->params, net->n_params * sizeof(float)) == DPT_OK)
        G->params_stale = 0;
    if (G->grads_stale &&
        gpu_download(G->ctx, net->grads, G->grads, net->n_params * sizeof(float)) == DPT_OK)
        G->grads_stale = 0;
}

static dpt_status sync_to_host(dpt_net *net)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK && G->params_stale &&
        (s = gpu_download(G->ctx, net->params, G->params, net->n_params * sizeof(float))) == DPT_OK)
        G->params_stale = 0;
    if (s == DPT_OK && G->grads_stale &&
        (s = gpu_download(G->ctx, net->grads, G->grads, net->n_params * sizeof(float))) == DPT_OK)
        G->grads_stale = 0;
    for (size_t i = 0; s == DPT_OK && G->ostate_stale && i < G->n_ostate; i++)
        if (G->ostate_host[i])
            s = gpu_download(G->ctx, G->ostate_host[i], G->ostate[i],
                             net->n_params * sizeof(float));
    if (s == DPT_OK)
        s = gpu_sync(G->ctx, "copy the network to the host");
    if (s == DPT_OK) {
        /* The host optimizer state is the current one now: the next step
         * uploads it again (from whichever optimizer it is given). */
        G->n_ostate = 0;
        G->ostate_stale = 0;
    }
    return s;
}

dpt_status net_gpu_debug_download(dpt_net *net, const float *dev, float *host, size_t n)
{
    net_gpu *G = net->gpu;
    if (!G)
        return dpt_fail(DPT_ERR_ARG, "not a GPU network");
    dpt_status s = gpu_ctx_enter(G->ctx);
    return s == DPT_OK ? gpu_download(G->ctx, host, dev, n * sizeof(float)) : s;
}

dpt_status net_gpu_debug_allreduce(dpt_net *net, dpt_comm *comm, float *host, size_t n)
{
    net_gpu *G = net->gpu;
    if (!G || n > net->n_params)
        return dpt_fail(DPT_ERR_ARG, "not a GPU network, or n too large");
    dpt_gpu_comm *gc = NULL;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->grads, host, n * sizeof(float));
    if (s == DPT_OK)
        s = net_gpu_comm(net, comm, &gc);
    if (s == DPT_OK)
        s = dpt_gpu_comm_allreduce_f32(gc, G->grads, n);
    if (s == DPT_OK)
        s = gpu_download(G->ctx, host, G->grads, n * sizeof(float));
    G->grads_stale = 1;
    return s;
}

#endif /* DPT_HAVE_CUDA */

/* ---- public API (dptrain/gpu.h) ------------------------------------------------------- */

int dpt_gpu_have_cuda(void)
{
#ifdef DPT_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int dpt_gpu_have_nccl(void)
{
#if defined(DPT_HAVE_CUDA) && defined(DPT_HAVE_NCCL)
    return 1;
#else
    return 0;
#endif
}

int dpt_gpu_count(void)
{
#ifdef DPT_HAVE_CUDA
    return gpu_device_count();
#else
    return 0;
#endif
}

dpt_status dpt_gpu_query(int device, dpt_gpu_info *out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "dpt_gpu_query: out is NULL");
    memset(out, 0, sizeof *out);
#ifdef DPT_HAVE_CUDA
    int n = gpu_device_count();
    if (device < 0 || device >= n)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: no such device (%d usable)", device, n);
    return gpu_device_query(device, out->name, sizeof out->name, &out->memory_bytes,
                            &out->cc_major, &out->cc_minor, &out->multiprocessors);
#else
    return dpt_fail(DPT_ERR_UNSUPPORTED, "GPU %d: this build of dptrain has no CUDA support",
                    device);
#endif
}

dpt_status dpt_gpu_name(int device, char *buf, size_t n)
{
    if (!buf || !n)
        return dpt_fail(DPT_ERR_ARG, "dpt_gpu_name: no buffer");
    buf[0] = '\0';
    dpt_gpu_info info;
    dpt_status s = dpt_gpu_query(device, &info);
    if (s == DPT_OK)
        snprintf(buf, n, "%s", info.name);
    return s;
}

static long env_long(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return -1;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || x < 0 ? -1 : x;
}

int dpt_gpu_for_worker(const dpt_comm *comm)
{
    int n = dpt_gpu_count();
    if (n < 1)
        return -1;
    if (!comm)
        return 0;
    long local = -1;
    if (dpt_comm_get_backend(comm) == DPT_COMM_MPI) {
        static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                           "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"};
        for (size_t i = 0; i < sizeof vars / sizeof *vars && local < 0; i++)
            local = env_long(vars[i]);
    }
    if (local < 0)
        local = dpt_comm_rank(comm);
    return (int)(local % n);
}

dpt_status dpt_net_to_gpu(dpt_net *net, int device)
{
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.device = device;
    return dpt_net_to_gpu_opts(net, &o);
}

dpt_status dpt_net_to_gpu_opts(dpt_net *net, const dpt_gpu_options *opt)
{
    if (!net || !opt)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_to_gpu: %s is NULL", !net ? "net" : "options");
    if (opt->version < 1 || opt->version > DPT_GPU_OPTIONS_VERSION)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_to_gpu: options version %d, this library knows 1 to %d",
                        opt->version, DPT_GPU_OPTIONS_VERSION);
    /* A version-1 struct ends before `precision`: read only its part. */
    dpt_gpu_options full = DPT_GPU_OPTIONS_INIT;
    if (opt->version == 1) {
        memcpy(&full, opt, offsetof(dpt_gpu_options, precision));
        full.version = DPT_GPU_OPTIONS_VERSION;
        opt = &full;
    }
    if (opt->precision != DPT_PRECISION_FP32 && opt->precision != DPT_PRECISION_TF32 &&
        opt->precision != DPT_PRECISION_BF16)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_to_gpu: unknown precision %d (fp32 0, tf32 1, bf16 2)",
                        (int)opt->precision);
    if (opt->reduce != DPT_GPU_REDUCE_AUTO && opt->reduce != DPT_GPU_REDUCE_NCCL &&
        opt->reduce != DPT_GPU_REDUCE_STAGED)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_to_gpu: unknown reduce mode %d", (int)opt->reduce);
#ifdef DPT_HAVE_CUDA
    dpt_status s = dpt_net_to_cpu(net);
    if (s != DPT_OK)
        return s;
    return gpu_setup(net, opt);
#else
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: cannot move the network to GPU %d: this build of "
                    "dptrain has no CUDA support", net->source, opt->device);
#endif
}

dpt_status dpt_net_to_cpu(dpt_net *net)
{
    if (!net)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_to_cpu: net is NULL");
#ifdef DPT_HAVE_CUDA
    if (net->gpu) {
        dpt_status s = sync_to_host(net);
        if (s != DPT_OK)
            return s;
        gpu_release(net);
        net->last_n = 0; /* the activations stayed on the device */
    }
#endif
    return DPT_OK;
}

int dpt_net_device(const dpt_net *net)
{
#ifdef DPT_HAVE_CUDA
    if (net && net->gpu)
        return gpu_ctx_device(net->gpu->ctx);
#else
    (void)net;
#endif
    return -1;
}

dpt_status dpt_net_sync_to_host(dpt_net *net)
{
    if (!net)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_sync_to_host: net is NULL");
#ifdef DPT_HAVE_CUDA
    if (net->gpu)
        return sync_to_host(net);
#endif
    return DPT_OK;
}

dpt_status dpt_net_sync_to_device(dpt_net *net)
{
    if (!net)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_sync_to_device: net is NULL");
#ifdef DPT_HAVE_CUDA
    net_gpu *G = net->gpu;
    if (!G)
        return DPT_OK;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->params, net->params, net->n_params * sizeof(float));
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->state, net->state, net->n_state * sizeof(float));
    if (s == DPT_OK)
        s = gpu_sync(G->ctx, "copy the network to the GPU");
    if (s == DPT_OK) {
        G->params_stale = G->grads_stale = 0;
        /* The next step takes the state from its optimizer again. */
        G->n_ostate = 0;
        G->ostate_stale = 0;
    }
    return s;
#else
    return DPT_OK;
#endif
}

dpt_status net_optim_step(dpt_net *net, dpt_optim *opt)
{
#ifdef DPT_HAVE_CUDA
    if (net->gpu) {
        net_gpu *G = net->gpu;
        /* Done inside the step's graph (its step count and scalars at
         * net_gpu_graph_step). */
        int done = G->upd_done && opt == G->step_opt;
        G->upd_done = 0, G->step_opt = NULL, G->step_gc = NULL, G->ar_done = 0;
        if (!done)
            G->norm_opt = NULL; /* borrowed for this step only */
        return done ? DPT_OK : device_optim(net, opt);
    }
#endif
    dpt_optim_step(opt, net->params, net->grads);
    return DPT_OK;
}

dpt_status dpt_net_optim_step(dpt_net *net, dpt_optim *opt)
{
    if (!net || !opt)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_optim_step: %s is NULL", !net ? "net" : "opt");
    if (dpt_optim_n(opt) != net->n_params)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_optim_step: optimizer has %zu parameters, network "
                        "%zu", dpt_optim_n(opt), net->n_params);
    return net_optim_step(net, opt);
}

dpt_status dpt_net_sgdm_step(dpt_net *net, dpt_sgdm *opt)
{
    if (!net || !opt)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_sgdm_step: %s is NULL", !net ? "net" : "opt");
    if (opt->n != net->n_params)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_sgdm_step: optimizer has %zu parameters, network "
                        "%zu", opt->n, net->n_params);
    dpt_optim o; /* a view of opt: its velocity is the state */
    optim_wrap_sgdm(&o, opt);
    return net_optim_step(net, &o);
}

const char *dpt_net_gpu_describe(const dpt_net *net)
{
#ifdef DPT_HAVE_CUDA
    if (net && net->gpu)
        return net->gpu->text;
#else
    (void)net;
#endif
    return "cpu";
}

#ifndef DPT_HAVE_CUDA
/* Without CUDA net->gpu is never set, and net.c and train/step.c never
 * reach these; they keep the linker satisfied. */
static dpt_status no_cuda(const dpt_net *net)
{
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
void net_gpu_free(dpt_net *net) { (void)net; }
void net_step_plan_update(dpt_net *net, dpt_optim *opt, dpt_comm *comm)
{
    (void)net, (void)opt, (void)comm;
}
dpt_status net_gpu_grow_steps(dpt_net *net, int cap)
{
    (void)cap;
    return no_cuda(net);
}
dpt_status net_gpu_put_lengths(dpt_net *net) { return no_cuda(net); }
void net_gpu_pull(dpt_net *net) { (void)net; }
dpt_status net_gpu_after_backward(dpt_net *net) { return no_cuda(net); }
const float *net_gpu_dlogits(const dpt_net *net)
{
    (void)net;
    return NULL;
}
dpt_status net_gpu_get_output(dpt_net *net, const float *dev, int n, const float **y)
{
    (void)dev, (void)n, (void)y;
    return no_cuda(net);
}
dpt_status net_gpu_put_dy(dpt_net *net, const float *dy, size_t n, const float **dev)
{
    (void)dy, (void)n, (void)dev;
    return no_cuda(net);
}
dpt_status net_gpu_name_nonfinite(dpt_net *net, int n, const char *otherwise)
{
    (void)n, (void)otherwise;
    return no_cuda(net);
}
dpt_status net_gpu_loss_xent(dpt_net *net, const float *t, int n, float w, double scale,
                             const float **dlogits)
{
    (void)t, (void)n, (void)w, (void)scale, (void)dlogits;
    return no_cuda(net);
}
dpt_status net_gpu_grads_allreduce(dpt_net *net, dpt_comm *comm)
{
    (void)comm;
    return no_cuda(net);
}
dpt_status net_gpu_stats_pull(dpt_net *net, double *loss)
{
    (void)loss;
    return no_cuda(net);
}
dpt_status net_gpu_state_push(dpt_net *net) { return no_cuda(net); }
int net_gpu_graph_wanted(dpt_net *net)
{
    (void)net;
    return 0;
}
dpt_status net_gpu_graph_step(dpt_net *net, const float *t, int n, float w, double scale,
                              graph_body body)
{
    (void)t, (void)n, (void)w, (void)scale, (void)body;
    return no_cuda(net);
}
int net_gpu_graph_took_backward(dpt_net *net)
{
    (void)net;
    return 0;
}
int net_gpu_graph_counts(const dpt_net *net, long *eager, long *captures, long *replays)
{
    (void)net;
    *eager = *captures = *replays = 0;
    return 0;
}
dpt_status net_gpu_debug_download(dpt_net *net, const float *dev, float *host, size_t n)
{
    (void)dev, (void)host, (void)n;
    return no_cuda(net);
}
dpt_status net_gpu_debug_allreduce(dpt_net *net, dpt_comm *comm, float *host, size_t n)
{
    (void)comm, (void)host, (void)n;
    return no_cuda(net);
}
#endif
