/* The GPU executor of a network: device copies of the flat buffers and the
 * activations, the layers' forward and backward through ops/cuda, the
 * training step with the loss, the all-reduce and the SGDM update on the
 * device, and the public API of dptrain/gpu.h.
 *
 * The CPU layers stay the definition: each GPU layer reads its
 * configuration from the CPU layer's canonical spec keys
 * (layer_type.describe, e.g. " filter=3 filters=20 padding=1") and its
 * shapes from the tables, computes what the CPU layer computes, and writes
 * the same flat-buffer layout. Batch norm keeps the CPU layer's semantics
 * exactly: float64 sums Σx and Σx² per channel (all-reduced under
 * synchronised batch norm), mean and biased variance from them, and the
 * running state updated once per iteration on the host from the pooled
 * statistics of the whole minibatch (DESIGN.md), with the CPU's own
 * formula; cuDNN's batch-norm routines keep float32 statistics and update
 * the running averages per call, which is not that. */
#include "comm/comm_nccl.h"
#include "dptrain/gpu.h"
#include "net/net_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DPT_HAVE_CUDA

#include "ops/cuda/gpu_ops.h"

static size_t out_count(const dpt_layer *l) { return (size_t)l->out[0] * l->out[1] * l->out[2]; }
static size_t in_count(const dpt_layer *l) { return (size_t)l->in[0] * l->in[1] * l->in[2]; }

enum gpu_kind { GL_INPUT, GL_CONV, GL_BN, GL_RELU, GL_FC, GL_SOFTMAX };

typedef struct gpu_layer {
    enum gpu_kind kind;
    float *p, *g, *s;          /* device views into the flat buffers */
    /* conv */
    gpu_conv *conv;
    int has_bias;
    size_t n_weights;
    /* batch norm */
    int channels;
    float epsilon, decay;
    float *mean, *invstd;      /* [C] used by the last forward (and backward) */
    double *sums_fwd;          /* [2C + 1] Σx, Σx², count (global under sync BN) */
    double *sums_bwd;          /* [2C] Σdy, Σdy·x̂ */
    double *batch;             /* [2C] batch mean and biased variance, inside
                                  net_gpu.stats at stats_offset */
    size_t stats_offset;
    int synced;                /* the last TRAIN forward's sums were all-reduced */
    int fuses_relu;            /* the next layer (a ReLU) is computed here */
    /* relu */
    int fused;                 /* computed by the batch norm before it */
} gpu_layer;

typedef struct net_gpu {
    gpu_ctx *ctx;
    dpt_gpu_options opt;
    float *params, *grads, *state; /* device flat buffers */
    float *velocity;               /* device [n_params], bound to vel_owner */
    dpt_sgdm *vel_owner;
    float **acts;                  /* [n_layers] device [max_batch, out] */
    float *gbuf[2];                /* ping-pong gradient buffers */
    float *dout;                   /* [max_batch, outputs]: dlogits or the caller's dy */
    float *targets;                /* [max_batch, outputs] */
    double *stats;                 /* device: [0] loss, then each BN's batch mean/var */
    double *stats_host;            /* pinned mirror */
    size_t n_stats;
    float *out_host;               /* pinned [max_batch, outputs]: forward's y */
    float *state_pinned;           /* pinned [n_state]: state upload */
    double *pool;                  /* host [n_pool + 1] for the state all-reduce */
    gpu_layer *layers;             /* [n_layers] */
    int params_stale, grads_stale, velocity_stale; /* host mirrors behind the device */
    dpt_gpu_comm *gcomm;           /* device all-reduce of the comm last used */
    char text[4096];               /* dpt_net_gpu_describe */
} net_gpu;

/* ---- layer configuration from the canonical spec keys -------------------------- */

typedef struct layer_keys {
    int kh, kw, filters, stride, pad, bias;
    float epsilon, decay;
} layer_keys;

static dpt_status read_keys(const dpt_net *net, const dpt_layer *l, layer_keys *k)
{
    *k = (layer_keys){0, 0, 0, 1, 0, 1, 1e-5f, 0.1f};
    char buf[256] = "";
    if (l->type->describe)
        l->type->describe(l, buf, sizeof buf);
    char *save = NULL;
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *key = tok, *v = eq + 1;
        int ok = 1;
        if (l->type == &dpt_layer_conv && strcmp(key, "filter") == 0) {
            if (sscanf(v, "%dx%d", &k->kh, &k->kw) != 2)
                ok = sscanf(v, "%d", &k->kh) == 1, k->kw = k->kh;
        } else if (l->type == &dpt_layer_conv && strcmp(key, "filters") == 0) {
            ok = sscanf(v, "%d", &k->filters) == 1;
        } else if (l->type == &dpt_layer_conv && strcmp(key, "stride") == 0) {
            ok = sscanf(v, "%d", &k->stride) == 1;
        } else if (l->type == &dpt_layer_conv && strcmp(key, "padding") == 0) {
            ok = sscanf(v, "%d", &k->pad) == 1;
        } else if (l->type == &dpt_layer_conv && strcmp(key, "bias") == 0) {
            ok = sscanf(v, "%d", &k->bias) == 1;
        } else if (l->type == &dpt_layer_batchnorm && strcmp(key, "epsilon") == 0) {
            ok = sscanf(v, "%f", &k->epsilon) == 1;
        } else if (l->type == &dpt_layer_batchnorm && strcmp(key, "decay") == 0) {
            ok = sscanf(v, "%f", &k->decay) == 1;
        } else if (!(l->type == &dpt_layer_fc && strcmp(key, "outputs") == 0) &&
                   !(l->type == &dpt_layer_input && strcmp(key, "size") == 0)) {
            return dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: %s '%s': key '%s' is not supported on "
                            "the GPU", net->source, l->line, l->type->name, l->name, key);
        }
        if (!ok)
            return dpt_fail(DPT_ERR_FORMAT, "%s: %s '%s': cannot read '%s=%s'", net->source,
                            l->type->name, l->name, key, v);
    }
    return DPT_OK;
}

/* ---- set-up and tear-down ---------------------------------------------------------- */

static void gpu_release(dpt_net *net)
{
    net_gpu *G = net->gpu;
    if (!G)
        return;
    if (G->ctx)
        gpu_ctx_enter(G->ctx);
    dpt_gpu_comm_free(G->gcomm);
    if (G->layers) {
        for (int i = 0; i < net->n_layers; i++) {
            gpu_layer *gl = &G->layers[i];
            gpu_conv_free(gl->conv);
            gpu_mfree(gl->mean), gpu_mfree(gl->invstd);
            gpu_mfree(gl->sums_fwd), gpu_mfree(gl->sums_bwd);
            if (G->acts)
                gpu_mfree(G->acts[i]);
        }
    }
    free(G->layers);
    free(G->acts);
    gpu_mfree(G->params), gpu_mfree(G->grads), gpu_mfree(G->state), gpu_mfree(G->velocity);
    gpu_mfree(G->gbuf[0]), gpu_mfree(G->gbuf[1]);
    gpu_mfree(G->dout), gpu_mfree(G->targets), gpu_mfree(G->stats);
    gpu_mfree_host(G->stats_host), gpu_mfree_host(G->out_host), gpu_mfree_host(G->state_pinned);
    free(G->pool);
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

static dpt_status gpu_setup(dpt_net *net, const dpt_gpu_options *opt)
{
    net_gpu *G = calloc(1, sizeof *G);
    if (!G)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    net->gpu = G;
    G->opt = *opt;
    dpt_status s = DPT_OK;
    size_t nb = (size_t)net->max_batch;
    int L = net->n_layers;
    size_t k_out = out_count(&net->layers[L - 1]);
    G->layers = calloc((size_t)L, sizeof *G->layers);
    G->acts = calloc((size_t)L, sizeof *G->acts);
    if (!G->layers || !G->acts) {
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Which layers, which keys: fail before touching the device. */
    int max_c = 1;
    size_t n_bn_stats = 0;
    for (int i = 0; i < L; i++) {
        const dpt_layer *l = &net->layers[i];
        gpu_layer *gl = &G->layers[i];
        layer_keys k;
        /* This executor runs chains only: each layer reads the one before
         * and is read by the one after. */
        if (i > 0 && (l->n_in != 1 || l->inputs[0] != i - 1 ||
                      (i + 1 < L && net->n_consumers && net->n_consumers[i] != 1))) {
            s = dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: layer '%s' (%s): the GPU code runs only "
                         "a plain chain of layers, and this one %s", net->source, l->line,
                         l->name, l->type->name,
                         l->n_in != 1 || l->inputs[0] != i - 1 ? "does not take the layer above"
                                                               : "feeds several layers");
            goto fail;
        }
        TRY(read_keys(net, l, &k));
        if (l->type == &dpt_layer_input) {
            gl->kind = GL_INPUT;
        } else if (l->type == &dpt_layer_conv) {
            gl->kind = GL_CONV;
            const dpt_param_info *w = &net->learn[l->first_learnable];
            gl->has_bias = l->n_learnables == 2;
            gl->n_weights = w->n;
            if (w->ndim != 4 || w->shape[0] != l->out[0] || w->shape[1] != l->in[0] ||
                w->shape[2] != k.kh || w->shape[3] != k.kw || gl->has_bias != (k.bias != 0)) {
                s = dpt_fail(DPT_ERR_UNSUPPORTED, "%s: conv '%s': its tables do not match its "
                             "keys; the GPU code cannot run it", net->source, l->name);
                goto fail;
            }
            if (l->out[0] > max_c)
                max_c = l->out[0];
        } else if (l->type == &dpt_layer_batchnorm) {
            gl->kind = GL_BN;
            gl->channels = l->in[0];
            gl->epsilon = k.epsilon, gl->decay = k.decay;
            gl->stats_offset = 1 + n_bn_stats;
            n_bn_stats += 2 * (size_t)gl->channels;
            if (gl->channels > max_c)
                max_c = gl->channels;
        } else if (l->type == &dpt_layer_relu) {
            gl->kind = GL_RELU;
            if (opt->fuse_bn_relu && i > 0 && G->layers[i - 1].kind == GL_BN)
                gl->fused = 1, G->layers[i - 1].fuses_relu = 1;
        } else if (l->type == &dpt_layer_fc) {
            gl->kind = GL_FC;
            if (l->out[0] > max_c)
                max_c = l->out[0];
        } else if (l->type == &dpt_layer_softmax) {
            gl->kind = GL_SOFTMAX;
        } else {
            s = dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: layer '%s': type '%s' has no GPU code",
                         net->source, l->line, l->name, l->type->name);
            goto fail;
        }
    }
    TRY(gpu_ctx_new(opt->device, opt->allow_tf32, &G->ctx));
    gpu_ctx *ctx = G->ctx;
    TRY(gpu_ctx_reserve_scratch(ctx, max_c, net->max_batch));
    TRY(gpu_malloc(ctx, net->n_params * sizeof(float), (void **)&G->params));
    TRY(gpu_malloc(ctx, net->n_params * sizeof(float), (void **)&G->grads));
    TRY(gpu_malloc(ctx, net->n_state * sizeof(float), (void **)&G->state));
    size_t max_act = 0;
    for (int i = 0; i < L; i++) {
        size_t n = out_count(&net->layers[i]) * nb;
        if (n > max_act)
            max_act = n;
        TRY(gpu_malloc(ctx, n * sizeof(float), (void **)&G->acts[i]));
    }
    TRY(gpu_malloc(ctx, max_act * sizeof(float), (void **)&G->gbuf[0]));
    TRY(gpu_malloc(ctx, max_act * sizeof(float), (void **)&G->gbuf[1]));
    TRY(gpu_malloc(ctx, k_out * nb * sizeof(float), (void **)&G->dout));
    TRY(gpu_malloc(ctx, k_out * nb * sizeof(float), (void **)&G->targets));
    G->n_stats = 1 + n_bn_stats;
    TRY(gpu_malloc(ctx, G->n_stats * sizeof(double), (void **)&G->stats));
    TRY(gpu_malloc_host(G->n_stats * sizeof(double), (void **)&G->stats_host));
    TRY(gpu_malloc_host(k_out * nb * sizeof(float), (void **)&G->out_host));
    TRY(gpu_malloc_host((net->n_state ? net->n_state : 1) * sizeof(float),
                        (void **)&G->state_pinned));
    if (!(G->pool = calloc(net->n_pool + 1, sizeof(double)))) {
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int k = snprintf(G->text, sizeof G->text, "GPU %d, TF32 %s, %s, bn+relu fusion %s\n",
                     opt->device, opt->allow_tf32 ? "on" : "off",
                     opt->find_algorithms ? "timed cuDNN algorithms" : "cuDNN heuristics",
                     opt->fuse_bn_relu ? "on" : "off");
    for (int i = 0; i < L; i++) {
        dpt_layer *l = &net->layers[i];
        gpu_layer *gl = &G->layers[i];
        gl->p = l->n_learnables ? G->params + net->learn[l->first_learnable].offset : NULL;
        gl->g = l->n_learnables ? G->grads + net->learn[l->first_learnable].offset : NULL;
        gl->s = l->n_state ? G->state + net->state_tab[l->first_state].offset : NULL;
        if (gl->kind == GL_CONV) {
            layer_keys kk;
            TRY(read_keys(net, l, &kk));
            TRY(gpu_conv_new(ctx, l->name, net->max_batch, l->in[0], l->in[1], l->in[2],
                             l->out[0], kk.kh, kk.kw, kk.stride, kk.pad, opt->find_algorithms,
                             &gl->conv));
            if (k < (int)sizeof G->text)
                k += snprintf(G->text + k, sizeof G->text - (size_t)k, "  %s: %s\n", l->name,
                              gpu_conv_describe(gl->conv));
        } else if (gl->kind == GL_BN) {
            size_t c = (size_t)gl->channels;
            TRY(gpu_malloc(ctx, c * sizeof(float), (void **)&gl->mean));
            TRY(gpu_malloc(ctx, c * sizeof(float), (void **)&gl->invstd));
            TRY(gpu_malloc(ctx, (2 * c + 1) * sizeof(double), (void **)&gl->sums_fwd));
            TRY(gpu_malloc(ctx, 2 * c * sizeof(double), (void **)&gl->sums_bwd));
            gl->batch = G->stats + gl->stats_offset;
        }
    }
    /* Learnables and state to the device. */
    TRY(gpu_upload(ctx, G->params, net->params, net->n_params * sizeof(float)));
    TRY(gpu_upload(ctx, G->state, net->state, net->n_state * sizeof(float)));
    TRY(gpu_sync(ctx, "copy the network to the GPU"));
    net->last_n = 0; /* a backward needs a forward on the device first */
    return DPT_OK;
fail:
    gpu_release(net);
    return s;
}

/* ---- forward and backward on the device --------------------------------------------- */

/* The device all-reduce for comm, made (collectively) on first use. */
static dpt_status gcomm_for(dpt_net *net, dpt_comm *comm, dpt_gpu_comm **out)
{
    net_gpu *G = net->gpu;
    if (!G->gcomm || dpt_gpu_comm_host(G->gcomm) != comm) {
        dpt_gpu_comm_free(G->gcomm);
        G->gcomm = NULL;
        dpt_status s = dpt_gpu_comm_new(comm, gpu_ctx_device(G->ctx), gpu_ctx_stream(G->ctx),
                                        (int)G->opt.reduce, &G->gcomm);
        if (s != DPT_OK)
            return s;
        size_t k = strlen(G->text);
        snprintf(G->text + k, sizeof G->text - k, "gradient all-reduce over %d workers: %s\n",
                 dpt_comm_size(comm), dpt_gpu_comm_uses_nccl(G->gcomm) ? "NCCL"
                 : "staged through pinned host memory");
    }
    *out = G->gcomm;
    return DPT_OK;
}

static dpt_status layer_forward(dpt_net *net, int i, int n, dpt_mode mode)
{
    net_gpu *G = net->gpu;
    gpu_ctx *ctx = G->ctx;
    dpt_layer *l = &net->layers[i];
    gpu_layer *gl = &G->layers[i];
    const float *x = G->acts[i - 1];
    float *y = G->acts[i];
    dpt_status s = DPT_OK;
    switch (gl->kind) {
    case GL_CONV:
        return gpu_conv_forward(ctx, gl->conv, n, x, gl->p, gl->has_bias ? gl->p + gl->n_weights
                                                                         : NULL, y);
    case GL_BN: {
        int c = gl->channels, hw = l->in[1] * l->in[2];
        if (mode == DPT_MODE_PREDICT) {
            s = gpu_bn_running(ctx, gl->s, c, gl->epsilon, gl->mean, gl->invstd);
        } else {
            gl->synced = 0;
            s = gpu_bn_sums(ctx, x, n, c, hw, gl->sums_fwd);
            if (s == DPT_OK && net->sync_bn && dpt_comm_size(net->sync_bn) > 1) {
                dpt_gpu_comm *gc = NULL;
                if ((s = gcomm_for(net, net->sync_bn, &gc)) == DPT_OK &&
                    (s = dpt_gpu_comm_allreduce_f64(gc, gl->sums_fwd, (size_t)(2 * c + 1))) ==
                        DPT_OK)
                    gl->synced = 1;
            }
            if (s == DPT_OK)
                s = gpu_bn_stats(ctx, gl->sums_fwd, c, gl->epsilon, gl->batch, gl->mean,
                                 gl->invstd);
        }
        if (s == DPT_OK) /* Offset [C] then Scale [C] */
            s = gpu_bn_normalize(ctx, x, n, c, hw, gl->mean, gl->invstd, gl->p + c, gl->p,
                                 gl->fuses_relu ? NULL : y,
                                 gl->fuses_relu ? G->acts[i + 1] : NULL);
        return s;
    }
    case GL_RELU:
        return gl->fused ? DPT_OK : gpu_relu_forward(ctx, x, y, (size_t)n * out_count(l));
    case GL_FC: {
        int in = (int)in_count(l), out = l->out[0];
        return gpu_linear_forward(ctx, x, gl->p, gl->p + (size_t)in * out, y, n, in, out);
    }
    case GL_SOFTMAX:
        return gpu_softmax_forward(ctx, x, y, n, l->out[0]);
    case GL_INPUT:
        break;
    }
    return DPT_OK;
}

/* Upload x and run the layers; nothing comes back. */
static dpt_status device_forward(dpt_net *net, const float *x, int n, dpt_mode mode)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->acts[0], x, (size_t)n * out_count(&net->layers[0]) * sizeof(float));
    for (int i = 1; s == DPT_OK && i < net->n_layers; i++)
        s = layer_forward(net, i, n, mode);
    if (s != DPT_OK)
        return s;
    net->last_n = n;
    net->last_mode = mode;
    return DPT_OK;
}

/* The first layer whose output holds a NaN or infinity (copied back layer
 * by layer: the slow path after a non-finite result). */
static dpt_status name_nonfinite(dpt_net *net, int n, const char *otherwise)
{
    net_gpu *G = net->gpu;
    for (int i = 1; i < net->n_layers; i++) {
        if (G->layers[i].kind == GL_BN && G->layers[i].fuses_relu)
            continue; /* output not kept; its ReLU's is */
        size_t cnt = (size_t)n * out_count(&net->layers[i]);
        float *h = malloc(cnt * sizeof(float));
        if (!h)
            return dpt_fail(DPT_ERR_NOMEM, "out of memory");
        dpt_status s = gpu_download(G->ctx, h, G->acts[i], cnt * sizeof(float));
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

dpt_status net_gpu_forward(dpt_net *net, const float *x, int n, dpt_mode mode, const float **y)
{
    net_gpu *G = net->gpu;
    dpt_status s = device_forward(net, x, n, mode);
    size_t k = out_count(&net->layers[net->n_layers - 1]);
    if (s == DPT_OK)
        s = gpu_download(G->ctx, G->out_host, G->acts[net->n_layers - 1],
                         (size_t)n * k * sizeof(float));
    if (s != DPT_OK)
        return s;
    for (size_t j = 0; j < (size_t)n * k; j++)
        if (!isfinite(G->out_host[j]))
            return name_nonfinite(net, n, "non-finite values in the network output");
    *y = G->out_host;
    return DPT_OK;
}

static dpt_status layer_backward(dpt_net *net, int i, int n, const float *dy, float *dx)
{
    net_gpu *G = net->gpu;
    gpu_ctx *ctx = G->ctx;
    dpt_layer *l = &net->layers[i];
    gpu_layer *gl = &G->layers[i];
    const float *x = G->acts[i - 1], *y = G->acts[i];
    dpt_status s = DPT_OK;
    switch (gl->kind) {
    case GL_CONV:
        return gpu_conv_backward(ctx, gl->conv, n, x, gl->p, dy, dx, gl->g,
                                 gl->has_bias ? gl->g + gl->n_weights : NULL);
    case GL_BN: {
        int c = gl->channels, hw = l->in[1] * l->in[2];
        /* Fused: dy is the gradient at the ReLU's output, gated here by it. */
        const float *relu_y = gl->fuses_relu ? G->acts[i + 1] : NULL;
        s = gpu_bn_backward_sums(ctx, x, dy, relu_y, n, c, hw, gl->mean, gl->invstd,
                                 gl->sums_bwd, gl->g, gl->g + c);
        if (s != DPT_OK || !dx)
            return s;
        if (gl->synced) { /* dx depends on the sums over the whole minibatch */
            dpt_gpu_comm *gc = NULL;
            if ((s = gcomm_for(net, net->sync_bn, &gc)) != DPT_OK ||
                (s = dpt_gpu_comm_allreduce_f64(gc, gl->sums_bwd, (size_t)(2 * c))) != DPT_OK)
                return s;
        }
        /* sums_fwd[2C] is the count the statistics cover: local n·hw, or
         * the all-reduced total under synchronised batch norm. */
        return gpu_bn_backward_dx(ctx, x, dy, relu_y, n, c, hw, gl->mean, gl->invstd, gl->p + c,
                                  gl->sums_bwd, gl->sums_fwd + 2 * c, dx);
    }
    case GL_RELU:
        return dx ? gpu_relu_backward(ctx, y, dy, dx, (size_t)n * out_count(l)) : DPT_OK;
    case GL_FC: {
        int in = (int)in_count(l), out = l->out[0];
        return gpu_linear_backward(ctx, x, gl->p, dy, dx, gl->g, gl->g + (size_t)in * out, n, in,
                                   out);
    }
    case GL_SOFTMAX:
        return gpu_softmax_backward(ctx, y, dy, dx, n, l->out[0]);
    case GL_INPUT:
        break;
    }
    return DPT_OK;
}

/* Backward from the device gradient dy at the output of layer `top`. */
static dpt_status device_backward(dpt_net *net, const float *dy, int top)
{
    net_gpu *G = net->gpu;
    int n = net->last_n, which = 0;
    const float *g = dy;
    for (int i = top; i >= 1; i--) {
        if (G->layers[i].fused)
            continue; /* its batch norm takes the gradient at its output as it is */
        float *dx = i > 1 ? G->gbuf[which] : NULL; /* the input needs no gradient */
        dpt_status s = layer_backward(net, i, n, g, dx);
        if (s != DPT_OK)
            return s;
        g = dx;
        which ^= 1;
    }
    G->grads_stale = 1;
    return DPT_OK;
}

dpt_status net_gpu_backward(dpt_net *net, const float *dy, int dy_is_logits)
{
    net_gpu *G = net->gpu;
    int top = net->n_layers - 1;
    if (dy_is_logits) {
        if (net->layers[top].type != &dpt_layer_softmax)
            return dpt_fail(DPT_ERR_ARG, "%s: gradient given at the logits, but the last layer is "
                            "'%s', not softmax", net->source, net->layers[top].name);
        top--;
    }
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = gpu_upload(G->ctx, G->dout, dy,
                       (size_t)net->last_n * out_count(&net->layers[top]) * sizeof(float));
    if (s == DPT_OK)
        s = device_backward(net, G->dout, top);
    return s;
}

/* ---- running state, aggregation, update --------------------------------------------- */

/* The running-state update of dpt_net_update_state from the batch
 * statistics in stats_host (already downloaded), with the CPU layer's
 * pooling and formula. `loss` (may be NULL) rides along in the same
 * float64 all-reduce. Returns DPT_ERR_NUMERIC, leaving the state alone,
 * when the all-reduced loss is not finite. */
static dpt_status pool_state(dpt_net *net, dpt_comm *comm, double *loss)
{
    net_gpu *G = net->gpu;
    if (!loss && G->n_stats == 1)
        return DPT_OK; /* no batch norm: nothing to update (as on the CPU) */
    int multi = comm && dpt_comm_size(comm) > 1;
    int pooled = multi && !(net->sync_bn && net->sync_bn == comm);
    double *buf = G->pool;
    size_t k = 0;
    if (loss)
        buf[k++] = *loss;
    size_t head = k;
    buf[k++] = net->last_n;
    for (int i = 0; i < net->n_layers; i++) {
        const gpu_layer *gl = &G->layers[i];
        if (gl->kind != GL_BN)
            continue;
        const double *bm = G->stats_host + gl->stats_offset, *bv = bm + gl->channels;
        for (int c = 0; c < gl->channels; c++) {
            buf[k + c] = net->last_n * bm[c];
            buf[k + gl->channels + c] = net->last_n * (bv[c] + bm[c] * bm[c]);
        }
        k += 2 * (size_t)gl->channels;
    }
    dpt_status s = DPT_OK;
    if (multi && (s = dpt_comm_allreduce_f64(comm, buf, buf, k)) != DPT_OK)
        return s;
    if (loss) {
        *loss = buf[0];
        if (!isfinite(buf[0]))
            return name_nonfinite(net, net->last_n, "the loss became non-finite on another worker");
    }
    double n_total = buf[head];
    k = head + 1;
    for (int i = 0; i < net->n_layers; i++) {
        const gpu_layer *gl = &G->layers[i];
        if (gl->kind != GL_BN)
            continue;
        const dpt_layer *l = &net->layers[i];
        int c = gl->channels;
        float *st = net->state + net->state_tab[l->first_state].offset;
        const double *bm = G->stats_host + gl->stats_offset, *bv = bm + c;
        double hw = (double)l->in[1] * l->in[2];
        double count = n_total * hw; /* values per channel in the whole minibatch */
        double d = gl->decay;
        for (int j = 0; j < c; j++) {
            double m = bm[j], v = bv[j];
            if (pooled) {
                m = buf[k + j] / n_total;
                v = buf[k + c + j] / n_total - m * m;
                if (v < 0)
                    v = 0;
            }
            double unbiased = count > 1 ? v * count / (count - 1) : v;
            st[j] = (float)((1 - d) * st[j] + d * m);
            st[c + j] = (float)((1 - d) * st[c + j] + d * unbiased);
        }
        k += 2 * (size_t)c;
    }
    /* The host state is the one that changed: queue its copy to the device
     * (through pinned memory; the stream orders it before any later use). */
    memcpy(G->state_pinned, net->state, net->n_state * sizeof(float));
    return gpu_upload_async(G->ctx, G->state, G->state_pinned, net->n_state * sizeof(float));
}

static dpt_status download_stats(net_gpu *G)
{
    return gpu_download(G->ctx, G->stats_host, G->stats, G->n_stats * sizeof(double));
}

dpt_status net_gpu_update_state(dpt_net *net, dpt_comm *comm)
{
    net_gpu *G = net->gpu;
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = download_stats(G);
    return s == DPT_OK ? pool_state(net, comm, NULL) : s;
}

static dpt_status grads_allreduce(dpt_net *net, dpt_comm *comm)
{
    if (!comm || dpt_comm_size(comm) < 2)
        return DPT_OK;
    dpt_gpu_comm *gc = NULL;
    dpt_status s = gcomm_for(net, comm, &gc);
    if (s == DPT_OK)
        s = dpt_gpu_comm_allreduce_f32(gc, net->gpu->grads, net->n_params);
    return s;
}

dpt_status net_gpu_aggregate(dpt_net *net, dpt_comm *comm, double *loss)
{
    net_gpu *G = net->gpu;
    if (net->last_mode != DPT_MODE_TRAIN || net->last_n == 0)
        return dpt_fail(DPT_ERR_ARG, "%s: aggregation needs a TRAIN-mode forward first",
                        net->source);
    dpt_status s = gpu_ctx_enter(G->ctx);
    if (s == DPT_OK)
        s = grads_allreduce(net, comm);
    if (s == DPT_OK)
        s = download_stats(G);
    return s == DPT_OK ? pool_state(net, comm, loss) : s;
}

/* Bind opt's velocity to the device (uploaded at its first step here, and
 * again after each dpt_net_sync_to_host, which unbinds it). Another
 * optimizer replaces a bound one without touching it (it may be freed
 * already): its device velocity is dropped. */
static dpt_status bind_velocity(dpt_net *net, dpt_sgdm *opt)
{
    net_gpu *G = net->gpu;
    if (G->vel_owner == opt)
        return DPT_OK;
    dpt_status s = DPT_OK;
    G->vel_owner = NULL;
    if (!G->velocity &&
        (s = gpu_malloc(G->ctx, net->n_params * sizeof(float), (void **)&G->velocity)) != DPT_OK)
        return s;
    if ((s = gpu_upload(G->ctx, G->velocity, opt->velocity, net->n_params * sizeof(float))) !=
        DPT_OK)
        return s;
    G->vel_owner = opt;
    G->velocity_stale = 0;
    return DPT_OK;
}

static dpt_status device_sgdm(dpt_net *net, dpt_sgdm *opt)
{
    net_gpu *G = net->gpu;
    dpt_status s = bind_velocity(net, opt);
    if (s == DPT_OK)
        s = gpu_sgdm(G->ctx, G->params, G->velocity, G->grads, net->n_params, opt->lr,
                     opt->momentum, opt->weight_decay);
    if (s == DPT_OK)
        G->params_stale = G->velocity_stale = 1;
    return s;
}

dpt_status net_gpu_train_step(dpt_net *net, dpt_sgdm *opt, dpt_comm *comm, const float *x,
                              const float *t, int n_local, double *loss, int *n_total)
{
    net_gpu *G = net->gpu;
    int L = net->n_layers, multi = comm && dpt_comm_size(comm) > 1;
    if (net->layers[L - 1].type != &dpt_layer_softmax)
        return dpt_fail(DPT_ERR_ARG, "%s: gradient given at the logits, but the last layer is "
                        "'%s', not softmax", net->source, net->layers[L - 1].name);
    if (!x || !t)
        return dpt_fail(DPT_ERR_ARG, "train step: %s is NULL", !x ? "x" : "t");
    if (n_local > net->max_batch)
        return dpt_fail(DPT_ERR_ARG, "%s: forward on %d observations (1 to %d allowed)",
                        net->source, n_local, net->max_batch);
    /* 1. M, the size of the whole minibatch (shares may be uneven). */
    double m_total = n_local;
    dpt_status s = DPT_OK;
    if (multi && (s = dpt_comm_allreduce_f64(comm, &m_total, &m_total, 1)) != DPT_OK)
        return s;
    /* 2. Forward on this worker's share; the targets follow it up. */
    int k = (int)out_count(&net->layers[L - 1]);
    if ((s = device_forward(net, x, n_local, DPT_MODE_TRAIN)) != DPT_OK ||
        (s = gpu_upload(G->ctx, G->targets, t, (size_t)n_local * k * sizeof(float))) != DPT_OK)
        return s;
    /* 3. Loss (into stats[0]) and its gradient at the logits, weighted by
     * n_local / M. */
    float w = (float)(n_local / m_total);
    if ((s = gpu_softmax_xent(G->ctx, G->acts[L - 1], G->targets, n_local, k, w, G->dout,
                              G->stats)) != DPT_OK)
        return s;
    /* 4. Backward into the flat gradient buffer. */
    if ((s = device_backward(net, G->dout, L - 2)) != DPT_OK)
        return s;
    /* 5. Gradients across workers on the device; the loss and the
     * batch-norm statistics come to the host in one copy and are combined
     * in one float64 all-reduce. */
    if ((s = grads_allreduce(net, comm)) != DPT_OK || (s = download_stats(G)) != DPT_OK)
        return s;
    double l = G->stats_host[0] * (n_local / m_total);
    if ((s = pool_state(net, comm, &l)) != DPT_OK)
        return s;
    /* 6. The same update on every worker. */
    if ((s = device_sgdm(net, opt)) != DPT_OK)
        return s;
#ifndef NDEBUG
    /* As in train/step.c: debug builds check that every worker holds worker
     * 0's bits (this copies the learnables back every step). */
    if (multi) {
        uint64_t h = dpt_net_hash(net), h0 = h;
        if ((s = dpt_comm_broadcast(comm, &h0, sizeof h0, 0)) != DPT_OK)
            return s;
        if (h != h0)
            return dpt_fail(DPT_ERR_COMM, "worker %d's learnables or state differ from worker 0's "
                            "after a step", dpt_comm_rank(comm));
    }
#endif
    *loss = l;
    if (n_total)
        *n_total = (int)m_total;
    return DPT_OK;
}

/* ---- host mirrors -------------------------------------------------------------------- */

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
    if (s == DPT_OK && G->vel_owner && G->velocity_stale)
        s = gpu_download(G->ctx, G->vel_owner->velocity, G->velocity,
                         net->n_params * sizeof(float));
    if (s == DPT_OK)
        s = gpu_sync(G->ctx, "copy the network to the host");
    if (s == DPT_OK) {
        /* The host velocity is the current one now: the next step uploads
         * it again (from whichever optimizer it is given). */
        G->vel_owner = NULL;
        G->velocity_stale = 0;
    }
    return s;
}

dpt_status net_gpu_debug_download(dpt_net *net, int what, int index, float *host, size_t n)
{
    net_gpu *G = net->gpu;
    if (!G)
        return dpt_fail(DPT_ERR_ARG, "not a GPU network");
    const float *src = what == 0 ? G->gbuf[index & 1] : G->acts[index];
    dpt_status s = gpu_ctx_enter(G->ctx);
    return s == DPT_OK ? gpu_download(G->ctx, host, src, n * sizeof(float)) : s;
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
        s = gcomm_for(net, comm, &gc);
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
    if (opt->version != DPT_GPU_OPTIONS_VERSION)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_to_gpu: options version %d, this library knows %d",
                        opt->version, DPT_GPU_OPTIONS_VERSION);
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
        /* The next step takes the velocity from its optimizer again. */
        G->vel_owner = NULL;
        G->velocity_stale = 0;
    }
    return s;
#else
    return DPT_OK;
#endif
}

dpt_status dpt_net_sgdm_step(dpt_net *net, dpt_sgdm *opt)
{
    if (!net || !opt)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_sgdm_step: %s is NULL", !net ? "net" : "opt");
    if (opt->n != net->n_params)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_sgdm_step: optimizer has %zu parameters, network "
                        "%zu", opt->n, net->n_params);
#ifdef DPT_HAVE_CUDA
    if (net->gpu) {
        dpt_status s = gpu_ctx_enter(net->gpu->ctx);
        return s == DPT_OK ? device_sgdm(net, opt) : s;
    }
#endif
    dpt_sgdm_step(opt, net->params, net->grads);
    return DPT_OK;
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
/* Without CUDA net->gpu is never set; these keep the linker satisfied. */
dpt_status net_gpu_forward(dpt_net *net, const float *x, int n, dpt_mode mode, const float **y)
{
    (void)x, (void)n, (void)mode, (void)y;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
dpt_status net_gpu_backward(dpt_net *net, const float *dy, int dy_is_logits)
{
    (void)dy, (void)dy_is_logits;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
dpt_status net_gpu_update_state(dpt_net *net, dpt_comm *comm)
{
    (void)comm;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
void net_gpu_pull(dpt_net *net) { (void)net; }
dpt_status net_gpu_debug_download(dpt_net *net, int what, int index, float *host, size_t n)
{
    (void)what, (void)index, (void)host, (void)n;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
dpt_status net_gpu_debug_allreduce(dpt_net *net, dpt_comm *comm, float *host, size_t n)
{
    (void)comm, (void)host, (void)n;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
void net_gpu_free(dpt_net *net) { (void)net; }
dpt_status net_gpu_train_step(dpt_net *net, dpt_sgdm *opt, dpt_comm *comm, const float *x,
                              const float *t, int n_local, double *loss, int *n_total)
{
    (void)opt, (void)comm, (void)x, (void)t, (void)n_local, (void)loss, (void)n_total;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
dpt_status net_gpu_aggregate(dpt_net *net, dpt_comm *comm, double *loss)
{
    (void)comm, (void)loss;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: no CUDA support", net->source);
}
#endif
