/* Batch normalisation over (N, H, W) per channel, training and inference.
 *
 * Training mode normalises with the batch statistics and records them; the
 * running state is updated afterwards by dpt_net_update_state, once per
 * iteration, with the statistics of the whole minibatch (pooled across
 * workers, or already global under synchronised batch norm). */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bn_layer {
    float epsilon, decay;
    int channels;
    float *mean, *invstd;      /* [C] used by the last forward (and backward) */
    double *batch_mean;        /* [C] batch statistics of the last TRAIN forward */
    double *batch_var;         /* [C] biased */
    double count;              /* values per channel those statistics cover */
    int synced;                /* statistics were all-reduced (sync BN) */
    double *sums;              /* [2C + 1] scratch for all-reductions */
} bn_layer;

static dpt_status bn_create(dpt_layer *l)
{
    bn_layer *b = calloc(1, sizeof *b);
    if (!b)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    b->epsilon = 1e-5f, b->decay = 0.1f; /* MATLAB's defaults */
    l->priv = b;
    return DPT_OK;
}

static dpt_status bn_set(dpt_layer *l, const char *key, const char *value)
{
    bn_layer *b = l->priv;
    dpt_status s;
    if (strcmp(key, "epsilon") == 0) {
        if ((s = parse_float(key, value, &b->epsilon)) == DPT_OK && !(b->epsilon > 0))
            s = dpt_fail(DPT_ERR_FORMAT, "epsilon must be positive, not '%s'", value);
        return s;
    }
    if (strcmp(key, "decay") == 0) {
        if ((s = parse_float(key, value, &b->decay)) == DPT_OK && !(b->decay > 0 && b->decay <= 1))
            s = dpt_fail(DPT_ERR_FORMAT, "decay must be in (0, 1], not '%s'", value);
        return s;
    }
    return dpt_fail(DPT_ERR_FORMAT, "unknown key '%s' (batchnorm takes epsilon, decay)", key);
}

static dpt_status bn_infer(dpt_net *net, dpt_layer *l)
{
    bn_layer *b = l->priv;
    int c = l->in[0];
    memcpy(l->out, l->in, sizeof l->out);
    b->channels = c;
    b->mean = calloc((size_t)c, sizeof(float));
    b->invstd = calloc((size_t)c, sizeof(float));
    b->batch_mean = calloc((size_t)c, sizeof(double));
    b->batch_var = calloc((size_t)c, sizeof(double));
    b->sums = calloc((size_t)(2 * c + 1), sizeof(double));
    if (!b->mean || !b->invstd || !b->batch_mean || !b->batch_var || !b->sums)
        return dpt_fail(DPT_ERR_NOMEM, "batchnorm '%s': out of memory", l->name);
    dpt_status s = net_declare(net, l, DPT_KIND_LEARN, "Offset", 1, &c);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_LEARN, "Scale", 1, &c);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_POOLED, "TrainedMean", 1, &c);
    if (s == DPT_OK)
        s = net_declare(net, l, DPT_KIND_POOLED, "TrainedVariance", 1, &c);
    return s;
}

/* Learnables: Offset [C] then Scale [C]; state: TrainedMean [C], TrainedVariance [C]. */
static void bn_init(dpt_layer *l, dpt_rng *rng)
{
    (void)rng;
    int c = l->in[0];
    for (int i = 0; i < c; i++) {
        l->p[i] = 0.0f;     /* offset */
        l->p[c + i] = 1.0f; /* scale */
        l->s[i] = 0.0f;     /* running mean */
        l->s[c + i] = 1.0f; /* running variance */
    }
}

static dpt_status bn_forward(dpt_net *net, dpt_layer *l, const float *const *xs, float *y,
                             int n, dpt_mode mode)
{
    const float *x = xs[0];
    bn_layer *b = l->priv;
    int c = b->channels, hw = l->in[1] * l->in[2];
    const float *offset = l->p, *scale = l->p + c;
    if (mode == DPT_MODE_PREDICT) {
        for (int i = 0; i < c; i++) {
            b->mean[i] = l->s[i];
            b->invstd[i] = (float)(1.0 / sqrt((double)l->s[c + i] + b->epsilon));
        }
    } else {
        double *sum = b->sums, *sumsq = b->sums + c;
        if (l->sums_in) /* added up by the conv below while it wrote x (net.c) */
            memcpy(b->sums, l->sums_in, 2 * (size_t)c * sizeof *b->sums);
        else
            dpt_bn_sums(x, n, c, hw, sum, sumsq);
        b->sums[2 * c] = (double)n * hw;
        b->synced = 0;
        if (net->sync_bn && dpt_comm_size(net->sync_bn) > 1) {
            dpt_status s = dpt_comm_allreduce_f64(net->sync_bn, b->sums, b->sums, (size_t)(2 * c + 1));
            if (s != DPT_OK)
                return s;
            b->synced = 1;
        }
        double count = b->sums[2 * c];
        b->count = count;
        for (int i = 0; i < c; i++) {
            double m = sum[i] / count;
            double v = sumsq[i] / count - m * m;
            if (v < 0) /* rounding when the variance is tiny */
                v = 0;
            b->batch_mean[i] = m;
            b->batch_var[i] = v;
            b->mean[i] = (float)m;
            b->invstd[i] = (float)(1.0 / sqrt(v + b->epsilon));
        }
    }
    if (l->bnf) { /* the convs around apply this batch norm (net.c) */
        bn_fusion *f = l->bnf;
        float *m = (float *)f->a.mean, *sc = (float *)f->a.scale, *sh = (float *)f->a.shift;
        for (int i = 0; i < c; i++) {
            m[i] = b->mean[i];
            sc[i] = scale[i] * b->invstd[i]; /* as dpt_bn_normalize forms it */
            sh[i] = offset[i];
        }
        if (f->out_virtual)
            return DPT_OK;
    }
    if (l->relu_after) /* the ReLU above is fused in (net.c) */
        dpt_bn_normalize_relu(x, n, c, hw, b->mean, b->invstd, scale, offset, y);
    else
        dpt_bn_normalize(x, n, c, hw, b->mean, b->invstd, scale, offset, y);
    return DPT_OK;
}

static dpt_status bn_backward(dpt_net *net, dpt_layer *l, const float *const *xs,
                              const float *y, const float *dy, float *const *dxs, int n)
{
    const float *x = xs[0];
    float *dx = dxs[0];
    (void)y;
    bn_layer *b = l->priv;
    int c = b->channels, hw = l->in[1] * l->in[2];
    double *sum_dy = b->sums, *sum_dy_xhat = b->sums + c;
    /* With the ReLU fused in, dy is at the ReLU's output; the _relu kernels
     * apply its mask. */
    const float *offset = l->p, *scale = l->p + c;
    if (l->bnf && l->bnf->out_virtual) {
        /* The conv above added them up while writing dy (net.c). */
        const double *xg = l->bnf->xg;
        for (int i = 0; i < c; i++) {
            sum_dy[i] = xg[i];
            sum_dy_xhat[i] = xg[c + i] * b->invstd[i];
        }
    } else if (l->relu_after) {
        dpt_bn_backward_sums_relu(x, dy, n, c, hw, b->mean, b->invstd, scale, offset, sum_dy,
                                  sum_dy_xhat);
    } else {
        dpt_bn_backward_sums(x, dy, n, c, hw, b->mean, b->invstd, sum_dy, sum_dy_xhat);
    }
    /* The parameter gradients are this worker's share; the gradient
     * all-reduce adds the shares. */
    float *doffset = l->g, *dscale = l->g + c;
    for (int i = 0; i < c; i++) {
        doffset[i] = (float)sum_dy[i];
        dscale[i] = (float)sum_dy_xhat[i];
    }
    if (l->bnf && l->bnf->dx_virtual) {
        /* The conv below forms dx while packing its gradient (net.c): it
         * needs only the coefficients, from the whole minibatch's sums. */
        if (b->synced) {
            dpt_status s = dpt_comm_allreduce_f64(net->sync_bn, b->sums, b->sums, (size_t)(2 * c));
            if (s != DPT_OK)
                return s;
        }
        bn_fusion *f = l->bnf;
        dpt_bn_backward_coeffs(c, b->invstd, scale, sum_dy, sum_dy_xhat,
                               b->synced ? b->count : (double)n * hw, (float *)f->a.kf,
                               (float *)f->a.ka, (float *)f->a.kb);
        return DPT_OK;
    }
    if (!dx)
        return DPT_OK;
    if (b->synced) {
        /* dx depends on the sums over the whole minibatch. */
        dpt_status s = dpt_comm_allreduce_f64(net->sync_bn, b->sums, b->sums, (size_t)(2 * c));
        if (s != DPT_OK)
            return s;
    }
    double count = b->synced ? b->count : (double)n * hw;
    if (l->bnf && l->bnf->dx_split) {
        /* Into the concat inputs' gradients (graph.c concat_split; no ReLU
         * fused here). */
        const dpt_layer *cat = &net->layers[l->inputs[0]];
        const node_plan *C = &net->plan[l->inputs[0]];
        int part_c[DPT_MAX_INPUTS];
        float *part_dx[DPT_MAX_INPUTS];
        for (int k = 0; k < cat->n_in; k++) {
            part_c[k] = cat->ins[k][0];
            part_dx[k] = net->buf[C->dx_buf[k]];
        }
        dpt_bn_backward_dx_split(x, dy, n, c, hw, b->mean, b->invstd, scale, sum_dy, sum_dy_xhat,
                                 count, cat->n_in, part_c, part_dx);
        return DPT_OK;
    }
    if (l->relu_after)
        dpt_bn_backward_dx_relu(x, dy, n, c, hw, b->mean, b->invstd, scale, offset, sum_dy,
                                sum_dy_xhat, count, dx);
    else
        dpt_bn_backward_dx(x, dy, n, c, hw, b->mean, b->invstd, scale, sum_dy, sum_dy_xhat, count,
                           dx);
    return DPT_OK;
}

static size_t bn_pool_doubles(const dpt_layer *l)
{
    return 2 * (size_t)((const bn_layer *)l->priv)->channels;
}

/* Σ m_j x̄_j and Σ m_j (s_j² + x̄_j²): divided by M they give x̄_c and
 * s_c² + x̄_c², which is the pooled formula of DESIGN.md rearranged. */
static void bn_pool_pack(const dpt_layer *l, int n_local, double *buf)
{
    const bn_layer *b = l->priv;
    int c = b->channels;
    for (int i = 0; i < c; i++) {
        buf[i] = n_local * b->batch_mean[i];
        buf[c + i] = n_local * (b->batch_var[i] + b->batch_mean[i] * b->batch_mean[i]);
    }
}

static void bn_pool_apply(dpt_layer *l, const double *buf, double n_total, int pooled)
{
    bn_layer *b = l->priv;
    int c = b->channels;
    double hw = (double)l->in[1] * l->in[2];
    double count = n_total * hw; /* values per channel in the whole minibatch */
    double d = b->decay;
    for (int i = 0; i < c; i++) {
        double m = b->batch_mean[i], v = b->batch_var[i];
        if (pooled) {
            m = buf[i] / n_total;
            v = buf[c + i] / n_total - m * m;
            if (v < 0)
                v = 0;
        }
        double unbiased = count > 1 ? v * count / (count - 1) : v;
        l->s[i] = (float)((1 - d) * l->s[i] + d * m);
        l->s[c + i] = (float)((1 - d) * l->s[c + i] + d * unbiased);
    }
}

static void bn_describe(const dpt_layer *l, char *buf, size_t cap)
{
    const bn_layer *b = l->priv;
    int k = 0;
    buf[0] = '\0';
    if (b->epsilon != 1e-5f)
        k = snprintf(buf, cap, " epsilon=%.9g", b->epsilon);
    if (b->decay != 0.1f)
        snprintf(buf + k, cap - (size_t)k, " decay=%.9g", b->decay);
}

static void bn_free(dpt_layer *l)
{
    bn_layer *b = l->priv;
    if (!b)
        return;
    free(b->mean), free(b->invstd), free(b->batch_mean), free(b->batch_var), free(b->sums);
    free(b);
}

/* For the CUDA entries (layer_gpu.c). */
void bn_layer_conf(const dpt_layer *l, float *epsilon, float *decay)
{
    const bn_layer *b = l->priv;
    *epsilon = b->epsilon, *decay = b->decay;
}

void bn_layer_batch(dpt_layer *l, double **mean, double **var)
{
    bn_layer *b = l->priv;
    *mean = b->batch_mean, *var = b->batch_var;
}

const layer_type dpt_layer_batchnorm = {
    .name = "batchnorm", .min_inputs = 1, .max_inputs = 1,
    .create = bn_create, .set = bn_set, .infer = bn_infer,
    .init = bn_init, .forward = bn_forward, .backward = bn_backward,
    .pool_doubles = bn_pool_doubles, .pool_pack = bn_pool_pack, .pool_apply = bn_pool_apply,
    .describe = bn_describe, .free = bn_free,
    .gpu_supports = gpu_supports_always, .gpu_setup = GPU_ENTRY(bn_gpu_setup),
    .gpu_release = GPU_ENTRY(bn_gpu_release), .gpu_forward = GPU_ENTRY(bn_gpu_forward),
    .gpu_backward = GPU_ENTRY(bn_gpu_backward),
};
