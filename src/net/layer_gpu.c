/* The CUDA entries of the layer table (layer_type.gpu_*): one set per layer
 * type, computing what the type's CPU forward and backward compute, with
 * device pointers, through ops/cuda.
 *
 * Each entry reads its layer's own configuration through the type's
 * accessors (net_impl.h: conv_layer_geom, bn_layer_conf, ...), never the
 * describe() text. The learnables, gradients and state are the device
 * copies of the flat buffers at the layer's table offsets (net_gpu_views);
 * l->p, l->g and l->s stay the host mirror's views, so pool_pack and
 * pool_apply keep running on the host.
 *
 * Batch norm keeps the CPU layer's semantics exactly (docs/gpu.md):
 * float64 sums Σx and Σx² per channel, all-reduced under synchronised
 * batch norm, mean and biased variance from them; the batch statistics go
 * into the network's per-step statistics buffer, which comes to the host in
 * one copy into the CPU layer's own batch_mean/batch_var, so the pooled
 * running-state update is the CPU layer's pool_pack/pool_apply. A ReLU
 * fused into the batch norm (relu_after) is computed inside it, forward and
 * backward, as on the CPU.
 *
 * gpu_supports is plain host code, compiled in every build, so that a
 * build without CUDA can still say which layers lack GPU code (the CLI's
 * --device auto decision and its tests). */
#include "net/net_impl.h"

#include <stdlib.h>
#include <string.h>

#ifdef DPT_HAVE_CUDA
#include "comm/comm_nccl.h"
#include "ops/cuda/gpu_ops.h"
#endif

/* ---- supports: which configurations have GPU code ------------------------------------ */

const char *gpu_supports_always(const dpt_layer *l)
{
    (void)l;
    return NULL;
}

const char *conv_gpu_supports(const dpt_layer *l)
{
    conv_geom g = conv_layer_geom(l);
    if (g.groups < 1 || l->in[0] % g.groups || l->out[0] % g.groups)
        return "groups do not divide the channels";
    if (g.dilation < 1)
        return "dilation < 1";
    return NULL;
}

#ifdef DPT_HAVE_CUDA

static size_t count3(const int *chw) { return (size_t)chw[0] * chw[1] * chw[2]; }

#define TRY(call)                       \
    do {                                \
        if ((s = (call)) != DPT_OK)     \
            goto fail;                  \
    } while (0)

/* ---- conv: cuDNN --------------------------------------------------------------------- */

typedef struct conv_gpu {
    gpu_conv *conv;
    size_t n_weights;
    int has_bias;
} conv_gpu;

dpt_status conv_gpu_setup(dpt_net *net, dpt_layer *l)
{
    conv_geom g = conv_layer_geom(l);
    conv_gpu *c = calloc(1, sizeof *c);
    if (!c)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    l->gpu_priv = c;
    c->has_bias = g.bias;
    c->n_weights = (size_t)l->out[0] * (l->in[0] / g.groups) * g.kh * g.kw;
    dpt_status s = gpu_conv_new(net_gpu_ctx(net), l->name, net->max_batch, l->in[0], l->in[1],
                                l->in[2], l->out[0], g.kh, g.kw, g.stride, g.pad, g.dilation,
                                g.groups, net_gpu_find_algorithms(net), &c->conv);
    if (s == DPT_OK)
        net_gpu_note(net, "  %s: %s\n", l->name, gpu_conv_describe(c->conv));
    return s;
}

void conv_gpu_release(dpt_layer *l)
{
    conv_gpu *c = l->gpu_priv;
    if (c)
        gpu_conv_free(c->conv);
    free(c);
    l->gpu_priv = NULL;
}

dpt_status conv_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                            dpt_mode mode)
{
    (void)mode;
    conv_gpu *c = l->gpu_priv;
    float *p, *g, *st;
    net_gpu_views(net, l, &p, &g, &st);
    return gpu_conv_forward(net_gpu_ctx(net), c->conv, n, x[0], p,
                            c->has_bias ? p + c->n_weights : NULL, y);
}

dpt_status conv_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                             const float *dy, float *const *dx, int n)
{
    (void)y;
    conv_gpu *c = l->gpu_priv;
    float *p, *g, *st;
    net_gpu_views(net, l, &p, &g, &st);
    return gpu_conv_backward(net_gpu_ctx(net), c->conv, n, x[0], p, dy, dx[0], g,
                             c->has_bias ? g + c->n_weights : NULL);
}

/* ---- batch norm: own kernels, float64 statistics ----------------------------------------- */

typedef struct bn_gpu {
    int channels;
    float epsilon;
    float *mean, *invstd;  /* [C] used by the last forward (and backward) */
    double *sums_fwd;      /* [2C + 1] Σx, Σx², count (global under sync BN) */
    double *sums_bwd;      /* [2C] Σdy, Σdy·x̂ */
    double *batch;         /* [2C] batch mean and biased variance: a slice of the
                              network's per-step statistics (net_gpu_stats_reserve) */
    int synced;            /* the last TRAIN forward's sums were all-reduced */
} bn_gpu;

dpt_status bn_gpu_setup(dpt_net *net, dpt_layer *l)
{
    bn_gpu *b = calloc(1, sizeof *b);
    if (!b)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    l->gpu_priv = b;
    float decay;
    bn_layer_conf(l, &b->epsilon, &decay);
    double *host_mean, *host_var, *dev_var = NULL;
    bn_layer_batch(l, &host_mean, &host_var);
    size_t c = (size_t)l->in[0];
    b->channels = l->in[0];
    gpu_ctx *ctx = net_gpu_ctx(net);
    dpt_status s;
    TRY(gpu_malloc(ctx, c * sizeof(float), (void **)&b->mean));
    TRY(gpu_malloc(ctx, c * sizeof(float), (void **)&b->invstd));
    TRY(gpu_malloc(ctx, (2 * c + 1) * sizeof(double), (void **)&b->sums_fwd));
    TRY(gpu_malloc(ctx, 2 * c * sizeof(double), (void **)&b->sums_bwd));
    /* gpu_bn_stats writes mean then variance, [2C] in one piece: two
     * adjacent reservations, each copied to the host layer's own array. */
    TRY(net_gpu_stats_reserve(net, c, host_mean, &b->batch));
    TRY(net_gpu_stats_reserve(net, c, host_var, &dev_var));
    if (dev_var != b->batch + c)
        s = dpt_fail(DPT_ERR_ARG, "batchnorm '%s': statistics slots not adjacent", l->name);
fail:
    return s;
}

void bn_gpu_release(dpt_layer *l)
{
    bn_gpu *b = l->gpu_priv;
    if (b) {
        gpu_mfree(b->mean), gpu_mfree(b->invstd);
        gpu_mfree(b->sums_fwd), gpu_mfree(b->sums_bwd);
    }
    free(b);
    l->gpu_priv = NULL;
}

dpt_status bn_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                          dpt_mode mode)
{
    bn_gpu *b = l->gpu_priv;
    gpu_ctx *ctx = net_gpu_ctx(net);
    int c = b->channels, hw = l->in[1] * l->in[2];
    float *p, *g, *st;
    net_gpu_views(net, l, &p, &g, &st);
    dpt_status s;
    if (mode == DPT_MODE_PREDICT) {
        s = gpu_bn_running(ctx, st, c, b->epsilon, b->mean, b->invstd);
    } else {
        b->synced = 0;
        s = gpu_bn_sums(ctx, x[0], n, c, hw, b->sums_fwd);
        if (s == DPT_OK && net->sync_bn && dpt_comm_size(net->sync_bn) > 1) {
            dpt_gpu_comm *gc = NULL;
            if ((s = net_gpu_comm(net, net->sync_bn, &gc)) == DPT_OK &&
                (s = dpt_gpu_comm_allreduce_f64(gc, b->sums_fwd, (size_t)(2 * c + 1))) == DPT_OK)
                b->synced = 1;
        }
        if (s == DPT_OK)
            s = gpu_bn_stats(ctx, b->sums_fwd, c, b->epsilon, b->batch, b->mean, b->invstd);
    }
    /* Learnables: Offset [C] then Scale [C]. With the ReLU above fused in,
     * y is the ReLU's output (the two layers share the buffer). */
    if (s == DPT_OK)
        s = gpu_bn_normalize(ctx, x[0], n, c, hw, b->mean, b->invstd, p + c, p,
                             l->relu_after ? NULL : y, l->relu_after ? y : NULL);
    return s;
}

dpt_status bn_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                           const float *dy, float *const *dx, int n)
{
    bn_gpu *b = l->gpu_priv;
    gpu_ctx *ctx = net_gpu_ctx(net);
    int c = b->channels, hw = l->in[1] * l->in[2];
    float *p, *g, *st;
    net_gpu_views(net, l, &p, &g, &st);
    /* Fused: dy is the gradient at the ReLU's output, gated by that output. */
    const float *relu_y = l->relu_after ? y : NULL;
    dpt_status s = gpu_bn_backward_sums(ctx, x[0], dy, relu_y, n, c, hw, b->mean, b->invstd,
                                        b->sums_bwd, g, g + c);
    if (s != DPT_OK || !dx[0])
        return s;
    if (b->synced) { /* dx depends on the sums over the whole minibatch */
        dpt_gpu_comm *gc = NULL;
        if ((s = net_gpu_comm(net, net->sync_bn, &gc)) != DPT_OK ||
            (s = dpt_gpu_comm_allreduce_f64(gc, b->sums_bwd, (size_t)(2 * c))) != DPT_OK)
            return s;
    }
    /* sums_fwd[2C] is the count the statistics cover: local n·hw, or the
     * all-reduced total under synchronised batch norm. */
    return gpu_bn_backward_dx(ctx, x[0], dy, relu_y, n, c, hw, b->mean, b->invstd, p + c,
                              b->sums_bwd, b->sums_fwd + 2 * c, dx[0]);
}

/* ---- ReLU, fc, softmax --------------------------------------------------------------------- */

dpt_status relu_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                            dpt_mode mode)
{
    (void)mode;
    return gpu_relu_forward(net_gpu_ctx(net), x[0], y, (size_t)n * count3(l->out));
}

dpt_status relu_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                             const float *dy, float *const *dx, int n)
{
    (void)x;
    return dx[0] ? gpu_relu_backward(net_gpu_ctx(net), y, dy, dx[0], (size_t)n * count3(l->out))
                 : DPT_OK;
}

/* Over the flattened [C, H, W] input: w [out, in], then b [out]. */
dpt_status fc_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                          dpt_mode mode)
{
    (void)mode;
    int in = (int)count3(l->in), out = l->out[0];
    float *p, *g, *st;
    net_gpu_views(net, l, &p, &g, &st);
    return gpu_linear_forward(net_gpu_ctx(net), x[0], p, p + (size_t)in * out, y, n, in, out);
}

dpt_status fc_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                           const float *dy, float *const *dx, int n)
{
    (void)y;
    int in = (int)count3(l->in), out = l->out[0];
    float *p, *g, *st;
    net_gpu_views(net, l, &p, &g, &st);
    return gpu_linear_backward(net_gpu_ctx(net), x[0], p, dy, dx[0], g, g + (size_t)in * out, n,
                               in, out);
}

dpt_status softmax_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                               int n, dpt_mode mode)
{
    (void)mode;
    return gpu_softmax_forward(net_gpu_ctx(net), x[0], y, n, l->out[0]);
}

dpt_status softmax_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                const float *y, const float *dy, float *const *dx, int n)
{
    (void)x;
    return dx[0] ? gpu_softmax_backward(net_gpu_ctx(net), y, dy, dx[0], n, l->out[0]) : DPT_OK;
}

/* ---- add and concat (graph nodes) ------------------------------------------------------------ */

/* y = x0 + x1 + ... added left to right, as the CPU layer. */
dpt_status add_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                           dpt_mode mode)
{
    (void)mode;
    gpu_ctx *ctx = net_gpu_ctx(net);
    size_t cnt = (size_t)n * count3(l->out);
    dpt_status s = gpu_copy(ctx, y, x[0], cnt * sizeof(float));
    for (int k = 1; s == DPT_OK && k < l->n_in; k++)
        s = gpu_add(ctx, y, x[k], cnt);
    return s;
}

dpt_status add_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                            const float *dy, float *const *dx, int n)
{
    (void)x, (void)y;
    gpu_ctx *ctx = net_gpu_ctx(net);
    size_t bytes = (size_t)n * count3(l->out) * sizeof(float);
    dpt_status s = DPT_OK;
    for (int k = 0; s == DPT_OK && k < l->n_in; k++)
        if (dx[k])
            s = gpu_copy(ctx, dx[k], dy, bytes);
    return s;
}

/* Along the channels: input k's [C_k, H, W] block of each observation at
 * its channel offset in y's [C, H, W]. */
dpt_status concat_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                              int n, dpt_mode mode)
{
    (void)mode;
    gpu_ctx *ctx = net_gpu_ctx(net);
    size_t hw = (size_t)l->out[1] * l->out[2], row = count3(l->out), off = 0;
    dpt_status s = DPT_OK;
    for (int k = 0; s == DPT_OK && k < l->n_in; k++) {
        size_t part = (size_t)l->ins[k][0] * hw;
        s = gpu_copy_2d(ctx, y + off, row * sizeof(float), x[k], part * sizeof(float),
                        part * sizeof(float), (size_t)n);
        off += part;
    }
    return s;
}

dpt_status concat_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                               const float *y, const float *dy, float *const *dx, int n)
{
    (void)x, (void)y;
    gpu_ctx *ctx = net_gpu_ctx(net);
    size_t hw = (size_t)l->out[1] * l->out[2], row = count3(l->out), off = 0;
    dpt_status s = DPT_OK;
    for (int k = 0; s == DPT_OK && k < l->n_in; k++) {
        size_t part = (size_t)l->ins[k][0] * hw;
        if (dx[k])
            s = gpu_copy_2d(ctx, dx[k], part * sizeof(float), dy + off, row * sizeof(float),
                            part * sizeof(float), (size_t)n);
        off += part;
    }
    return s;
}

/* ---- leaky ReLU, sigmoid, tanh, dropout, global average pooling ------------------------------ */

dpt_status leaky_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                             dpt_mode mode)
{
    (void)mode;
    return gpu_leakyrelu_forward(net_gpu_ctx(net), x[0], y, (size_t)n * count3(l->out),
                                 leaky_layer_alpha(l));
}

dpt_status leaky_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                              const float *dy, float *const *dx, int n)
{
    (void)y;
    return dx[0] ? gpu_leakyrelu_backward(net_gpu_ctx(net), x[0], dy, dx[0],
                                          (size_t)n * count3(l->out), leaky_layer_alpha(l))
                 : DPT_OK;
}

dpt_status sigmoid_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                               int n, dpt_mode mode)
{
    (void)mode;
    return gpu_sigmoid_forward(net_gpu_ctx(net), x[0], y, (size_t)n * count3(l->out));
}

dpt_status sigmoid_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                const float *y, const float *dy, float *const *dx, int n)
{
    (void)x;
    return dx[0] ? gpu_sigmoid_backward(net_gpu_ctx(net), y, dy, dx[0], (size_t)n * count3(l->out))
                 : DPT_OK;
}

dpt_status tanh_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                            dpt_mode mode)
{
    (void)mode;
    return gpu_tanh_forward(net_gpu_ctx(net), x[0], y, (size_t)n * count3(l->out));
}

dpt_status tanh_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                             const float *dy, float *const *dx, int n)
{
    (void)x;
    return dx[0] ? gpu_tanh_backward(net_gpu_ctx(net), y, dy, dx[0], (size_t)n * count3(l->out))
                 : DPT_OK;
}

/* Values of one observation: a sequence's T steps (as the CPU layer). */
static size_t drop_per(const dpt_net *net, const dpt_layer *l)
{
    return count3(l->out) * (l->seq ? (size_t)net->steps : 1);
}

/* The CPU layer's mask on in -> out. A left-padded sequence keys each
 * observation's elements from its first valid step (its padded steps pass
 * through), as layer_dropout.c's apply_left. */
static dpt_status drop_apply(dpt_net *net, const dpt_layer *l, const float *in, float *out,
                             int n, const dropout_key *k)
{
    gpu_ctx *ctx = net_gpu_ctx(net);
    const size_t obs = drop_per(net, l);
    const uint64_t *dkey = net_gpu_dropout_key(net);
    /* Inside a graph step the key's per-step part is on the device (the
     * same mask; left padding never reaches here: net_gpu_graph_step_
     * refusal). */
    if (dkey && !(l->seq && net->pad_left && net->len))
        return gpu_dropout_keyed(ctx, in, out, n, obs, k->p, dkey, k->stream);
    if (!(l->seq && net->pad_left && net->len))
        return gpu_dropout(ctx, in, out, n, obs, k->p, k->seed, k->epoch, k->iteration,
                           k->stream, k->obs0);
    dpt_status s = DPT_OK;
    for (int i = 0; s == DPT_OK && i < n; i++) {
        const size_t pad = (size_t)(net->steps - net->len[i]) * count3(l->out);
        const float *a = in + (size_t)i * obs;
        float *b = out + (size_t)i * obs;
        if (a != b && pad)
            s = gpu_copy(ctx, b, a, pad * sizeof *b);
        if (s == DPT_OK && obs > pad)
            s = gpu_dropout(ctx, a + pad, b + pad, 1, obs - pad, k->p, k->seed, k->epoch,
                            k->iteration, k->stream, k->obs0 + (uint64_t)i);
    }
    return s;
}

/* The mask of the CPU layer (seed, epoch, iteration, node, global
 * observation), drawn on the device: the same bits. */
dpt_status dropout_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                               int n, dpt_mode mode)
{
    dropout_key k;
    if (!dropout_layer_begin(net, l, mode, &k))
        return gpu_copy(net_gpu_ctx(net), y, x[0], (size_t)n * drop_per(net, l) * sizeof(float));
    return drop_apply(net, l, x[0], y, n, &k);
}

dpt_status dropout_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x,
                                const float *y, const float *dy, float *const *dx, int n)
{
    (void)x, (void)y;
    dropout_key k;
    if (!dx[0])
        return DPT_OK;
    if (!dropout_layer_last(l, &k))
        return gpu_copy(net_gpu_ctx(net), dx[0], dy, (size_t)n * drop_per(net, l) * sizeof(float));
    return drop_apply(net, l, dy, dx[0], n, &k);
}

static int pool_of(const dpt_layer *l, gpu_pool *p)
{
    dpt_pool2d_desc d;
    int is_max = pool_layer_desc(l, &d);
    *p = (gpu_pool){d.c, d.h, d.w, d.kh, d.kw, d.sh, d.sw, d.ph, d.pw, d.out_h, d.out_w};
    return is_max;
}

dpt_status pool_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                            dpt_mode mode)
{
    (void)mode;
    gpu_pool p;
    int is_max = pool_of(l, &p);
    return gpu_pool_forward(net_gpu_ctx(net), &p, is_max, x[0], y, n);
}

dpt_status pool_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                             const float *dy, float *const *dx, int n)
{
    (void)y;
    gpu_pool p;
    int is_max = pool_of(l, &p);
    return dx[0] ? gpu_pool_backward(net_gpu_ctx(net), &p, is_max, x[0], dy, dx[0], n) : DPT_OK;
}

dpt_status gap_gpu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                           dpt_mode mode)
{
    (void)mode;
    return gpu_global_avgpool_forward(net_gpu_ctx(net), x[0], y, n, l->in[0], l->in[1] * l->in[2]);
}

dpt_status gap_gpu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                            const float *dy, float *const *dx, int n)
{
    (void)x, (void)y;
    return dx[0] ? gpu_global_avgpool_backward(net_gpu_ctx(net), dy, dx[0], n, l->in[0],
                                               l->in[1] * l->in[2])
                 : DPT_OK;
}

#endif /* DPT_HAVE_CUDA */
