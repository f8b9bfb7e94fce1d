/* The network as a graph: consumers of every node, the fusion rewrite over
 * single-consumer edges, and the buffer plan (activations, gradients by
 * lifetime), made once when the network is built. The executor in net.c
 * only follows the plan.
 *
 * Gradient buffers. Backward runs the nodes in reverse spec order (a
 * reverse topological order: inputs are always earlier lines). The
 * gradient at a node's output comes into being at the backward of its last
 * consumer in spec order (the first to run) and is last read by the node's
 * own backward; buffers whose intervals do not overlap are shared, so a
 * chain needs two (the old ping-pong) however deep it is. A node's first
 * contribution (in backward order) is written straight into its gradient;
 * each later one is written to a scratch buffer (taken from the same pool
 * for the length of one backward) and added, so a chain computes exactly
 * the bits it did before the graph, and fan-out is exact. */
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdlib.h>
#include <string.h>

static size_t count_of(const dpt_net *net, int i)
{
    const dpt_layer *l = &net->layers[i];
    /* A sequence's buffers hold the step capacity (dpt_net_set_steps). */
    return (size_t)l->out[0] * l->out[1] * l->out[2] * (size_t)net->max_batch *
           (l->seq ? (size_t)net->cap_steps : 1);
}

/* The consumer of node j when it has exactly one (else -1). */
static int only_consumer(const dpt_net *net, int j)
{
    return net->n_consumers[j] == 1 ? net->sole_consumer[j] : -1;
}

dpt_status net_check_graph(dpt_net *net)
{
    int L = net->n_layers;
    free(net->n_consumers);
    net->n_consumers = calloc(2 * (size_t)L, sizeof *net->n_consumers);
    if (!net->n_consumers)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    net->sole_consumer = net->n_consumers + L;
    for (int i = 1; i < L; i++)
        for (int k = 0; k < net->layers[i].n_in; k++) {
            net->n_consumers[net->layers[i].inputs[k]]++;
            net->sole_consumer[net->layers[i].inputs[k]] = i;
        }
    for (int i = 0; i < L - 1; i++) {
        const dpt_layer *l = &net->layers[i];
        if (net->n_consumers[i] == 0)
            return dpt_fail(DPT_ERR_FORMAT, "%s:%d: the output of %s '%s' goes to no layer (only "
                            "the last layer, '%s', is the network's output: name '%s' in a from= "
                            "or remove it)", net->source, l->line, l->type->name, l->name,
                            net->layers[L - 1].name, l->name);
    }
    return DPT_OK;
}

/* Fusion of conv -> batchnorm -> relu -> conv chains on the CPU (none with
 * the "generic" kernels, which stay the plain reference path), on edges
 * whose producer has one consumer, so no other layer sees a skipped or
 * unwritten output. Each saves whole passes over activation-sized buffers,
 * the bulk of the memory traffic of a small network:
 *  - conv then batchnorm: the conv adds up the batch-norm sums of its
 *    output while writing it (no reading pass in the batchnorm);
 *  - batchnorm then relu: the batchnorm applies the ReLU, forward and
 *    backward; the relu layer is skipped and shares its output buffer;
 *  - batchnorm (+ relu) then conv, or then fc where the fc kernels can
 *    (dpt_linear_fuses_bn): the batchnorm's output is never written; the
 *    conv normalises its input while packing it, the fc as it loads it (and
 *    again in backward, where they need that input for the weight
 *    gradient); or then maxpool / avgpool, which normalise an image at a
 *    time into cache-sized scratch and pool from there (a stem's conv ->
 *    batchnorm -> relu -> maxpool);
 *  - conv then batchnorm, backward: the batchnorm computes only its sums and
 *    per-channel coefficients; the conv forms its output gradient from them
 *    while packing it (the batchnorm's input gradient is never written).
 *  - the same, backward: the conv (fc, pooling) adds up the batchnorm's backward
 *    sums while it writes its input gradient (the gradient at the
 *    batchnorm's output), so the batchnorm reads neither that gradient nor
 *    its input again.
 * With these, a conv -> batchnorm -> relu block reads and writes its
 * activations about half as often. A non-finite value inside a fused
 * batchnorm is reported at the conv or fc after it. */
static int fusable_bn(const dpt_net *net, int i)
{
    const dpt_layer *l = &net->layers[i];
    if (l->type != &dpt_layer_batchnorm)
        return 0;
    int j = l->inputs[0];
    return net->layers[j].type == &dpt_layer_conv && net->n_consumers[j] == 1;
}

/* DPT_FUSION_BLK=0 leaves out the residual blocks' fusions below
 * (concat_bn, add_bn, add_pool; for measuring what they gain: the results
 * are the same bits). Read once per plan (plan_fusion). */
static int blk_fusion(void)
{
    const char *env = getenv("DPT_FUSION_BLK");
    return !(env && strcmp(env, "0") == 0);
}

/* concat then batchnorm: the concat adds up the batch norm's sums as it
 * copies each image (no reading pass in the batchnorm). */
static int concat_bn(const dpt_net *net, int i, int blk)
{
    const dpt_layer *l = &net->layers[i];
    if (!blk || l->type != &dpt_layer_batchnorm)
        return 0;
    int j = l->inputs[0];
    return net->layers[j].type == &dpt_layer_concat && net->n_consumers[j] == 1 &&
           !net->layers[j].seq;
}

/* ... and in backward, when every input of the concat has it as its only
 * consumer (and is not the input layer), the batchnorm writes its input
 * gradient straight into the concat inputs' gradients: no copy. */
static int concat_split(const dpt_net *net, int cat)
{
    const dpt_layer *l = &net->layers[cat];
    for (int k = 0; k < l->n_in; k++)
        if (l->inputs[k] == 0 || net->n_consumers[l->inputs[k]] != 1)
            return 0;
    return 1;
}

/* batchnorm then a two-input add (a residual block's end, b + shortcut, or
 * two batch norms added): the add normalises its inputs as it adds them
 * (and applies the ReLU after it, if fused), and in backward adds up the
 * batch norms' sums while it writes their gradients; the batch norms'
 * outputs are never written, and they read neither x nor the gradient
 * again for their sums. Every input of the add must get a gradient (none is
 * the input layer), so that the add always has both to write. */
static int add_bn(const dpt_net *net, int i, int blk)
{
    if (!blk)
        return 0;
    const dpt_layer *l = &net->layers[i];
    const int a = only_consumer(net, i);
    if (l->type != &dpt_layer_batchnorm || a <= 0)
        return 0;
    const dpt_layer *add = &net->layers[a];
    if (add->type != &dpt_layer_add || add->n_in != 2)
        return 0;
    return add->inputs[0] != 0 && add->inputs[1] != 0;
}

/* add_bn's add, its ReLU, then global average pooling (a residual
 * network's head): the add takes the plane means as it writes each plane,
 * and in backward spreads the pooling's gradient itself; the pooling runs
 * neither pass. Its output gradient must be a buffer of the plan (not the
 * caller's dy: it is neither the last layer nor the softmax's input). The
 * add and the pooling name each other in in_act. */
static void add_pool(dpt_net *net, int blk)
{
    for (int i = 1; blk && i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        const int r = only_consumer(net, i), g = r > 0 ? only_consumer(net, r) : -1;
        if (l->type != &dpt_layer_add || l->n_in != 2 || !l->relu_after || g <= 0 ||
            net->layers[g].type != &dpt_layer_globalavgpool ||
            l->out[1] * l->out[2] > DPT_BN_ADD_POOL_HW)
            continue;
        const int top = only_consumer(net, g);
        if (top <= 0 || net->layers[top].type == &dpt_layer_softmax)
            continue;
        int bn = 0;
        for (int k = 0; k < 2; k++) {
            const bn_fusion *f = net->layers[l->inputs[k]].bnf;
            bn |= f && f->into_add;
        }
        if (bn)
            l->in_act = g, net->layers[g].in_act = i;
    }
}

/* A first layer's conv -> batchnorm (-> relu) -> 2x2 stride-2 maxpool (a
 * stem), the batch norm fused on both sides: the pool's backward only adds
 * up the batch norm's sums, and the conv forms its gradient straight from
 * the pool's (layer_pool.c, layer_conv.c), so the stem-sized dx of the
 * pool (3/4 zeros) is neither written nor read back. Only a conv with no
 * dx: nothing is planned between the pool's backward and the conv's that
 * could reuse the pool's output gradient, which the conv then reads. */
static void plan_stem_pool(dpt_net *net)
{
    for (int i = 1; i < net->n_layers; i++) {
        const dpt_layer *p = &net->layers[i];
        dpt_pool2d_desc pd;
        if (p->type != &dpt_layer_maxpool || !p->in_bnf || !pool_layer_desc(p, &pd) ||
            !dpt_maxpool2d_has_idx(&pd))
            continue;
        const dpt_layer *c = &net->layers[p->in_act];
        if (c->type == &dpt_layer_conv && c->out_bnf == p->in_bnf && c->inputs[0] == 0)
            p->in_bnf->pool_dy = 1;
    }
}

static dpt_status plan_fusion(dpt_net *net, int fusion)
{
    /* DPT_FUSION=0 turns it off (for measuring what it gains). */
    const char *env = getenv("DPT_FUSION");
    if (fusion < 0)
        fusion = !(strcmp(dpt_ops_kernels(), "generic") == 0 || (env && strcmp(env, "0") == 0));
    if (!fusion)
        return DPT_OK;
    const int blk = blk_fusion();
    /* add then relu (a residual block's end): the add applies the ReLU,
     * forward and backward (its mask from the add's output, which the relu
     * shares): one pass over the block's output instead of two. */
    for (int i = 1; i < net->n_layers; i++) {
        const int r = only_consumer(net, i);
        if (net->layers[i].type == &dpt_layer_add && r > 0 &&
            net->layers[r].type == &dpt_layer_relu)
            net->layers[i].relu_after = net->layers[r].fused = 1;
    }
    size_t n_sums = 0, n_bn = 0, n_buf = 0;
    for (int i = 1; i < net->n_layers; i++) {
        if (fusable_bn(net, i) || add_bn(net, i, blk) || concat_bn(net, i, blk)) {
            n_sums += 4 * (size_t)net->layers[i].in[0];
            n_bn++;
            n_buf += 6 * (size_t)net->layers[i].in[0];
        }
    }
    if (!n_bn)
        return DPT_OK;
    net->fuse_sums = calloc(n_sums, sizeof(double));
    net->fuse_bn = calloc(n_bn, sizeof *net->fuse_bn);
    net->fuse_buf = calloc(n_buf, sizeof(float));
    if (!net->fuse_sums || !net->fuse_bn || !net->fuse_buf)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    double *sums = net->fuse_sums;
    float *buf = net->fuse_buf;
    bn_fusion *f = net->fuse_bn;
    for (int i = 1; i < net->n_layers; i++) {
        const int conv_below = fusable_bn(net, i);
        if (!conv_below && !add_bn(net, i, blk) && !concat_bn(net, i, blk))
            continue;
        dpt_layer *l = &net->layers[i], *below = &net->layers[l->inputs[0]];
        const size_t c = (size_t)l->in[0];
        f->xg = sums + 2 * c;
        f->a.mean = buf, f->a.scale = buf + c, f->a.shift = buf + 2 * c;
        f->a.kf = buf + 3 * c, f->a.ka = buf + 4 * c, f->a.kb = buf + 5 * c;
        buf += 6 * c;
        l->bnf = f;
        if (conv_below) {
            below->sums_out = l->sums_in = sums;
            f->dx_virtual = 1;
            below->out_bnf = f;
        }
        if (concat_bn(net, i, blk)) {
            below->sums_out = l->sums_in = sums;
            f->dx_split = concat_split(net, l->inputs[0]);
        }
        sums += 4 * c;
        if (add_bn(net, i, blk))
            f->out_virtual = f->into_add = 1;
        if (!conv_below) { /* only the sums (concat_bn) or the add */
            f++;
            continue;
        }
        int top = i; /* the node whose output the next layer reads */
        int r = only_consumer(net, i);
        if (r > 0 && net->layers[r].type == &dpt_layer_relu) {
            l->relu_after = net->layers[r].fused = 1;
            f->a.relu = 1;
            top = r;
        }
        int c2 = only_consumer(net, top);
        dpt_layer *next = c2 > 0 ? &net->layers[c2] : NULL;
        if (next && (next->type == &dpt_layer_conv || next->type == &dpt_layer_maxpool ||
                     next->type == &dpt_layer_avgpool ||
                     (next->type == &dpt_layer_fc &&
                      dpt_linear_fuses_bn(next->in[0] * next->in[1] * next->in[2], next->out[0],
                                          next->in[1] * next->in[2])))) {
            f->out_virtual = 1;
            next->in_bnf = f;
            next->in_act = l->inputs[0]; /* the batchnorm's input */
        }
        f++;
    }
    add_pool(net, blk);
    plan_stem_pool(net);
    return DPT_OK;
}

/* ---- buffer plan ------------------------------------------------------------------ */

typedef struct planner {
    dpt_net *net;
    int *free_ids;  /* gradient buffers not in use */
    int n_free, cap_free;
    int cap_buf, cap_grp;
    /* Gradient buffers held by two groups (add_shares): [buffer, groups
     * still alive] pairs. */
    int shared[2 * 64];
    int n_shared;
} planner;

static int new_buf(planner *p, size_t floats)
{
    dpt_net *net = p->net;
    if (net->n_buf == p->cap_buf) {
        int cap = p->cap_buf ? 2 * p->cap_buf : 64;
        size_t *f = realloc(net->buf_floats, (size_t)cap * sizeof *f);
        if (!f)
            return -1;
        net->buf_floats = f;
        p->cap_buf = cap;
    }
    net->buf_floats[net->n_buf] = floats;
    return net->n_buf++;
}

/* A gradient buffer of at least `floats`: the smallest free one that is
 * large enough, else the largest free one grown, else a new one. */
static int take_grad(planner *p, size_t floats)
{
    size_t *sz = p->net->buf_floats;
    int best = -1, largest = -1;
    for (int k = 0; k < p->n_free; k++) {
        int b = p->free_ids[k];
        if (sz[b] >= floats && (best < 0 || sz[b] < sz[p->free_ids[best]]))
            best = k;
        if (largest < 0 || sz[b] > sz[p->free_ids[largest]])
            largest = k;
    }
    if (best < 0)
        best = largest;
    if (best < 0) {
        int b = new_buf(p, floats);
        if (b >= 0)
            p->net->n_grad_bufs++;
        return b;
    }
    int b = p->free_ids[best];
    p->free_ids[best] = p->free_ids[--p->n_free];
    if (sz[b] < floats)
        sz[b] = floats;
    return b;
}

static int give_grad(planner *p, int b)
{
    if (p->n_free == p->cap_free) {
        int cap = p->cap_free ? 2 * p->cap_free : 16;
        int *f = realloc(p->free_ids, (size_t)cap * sizeof *f);
        if (!f)
            return -1;
        p->free_ids = f, p->cap_free = cap;
    }
    p->free_ids[p->n_free++] = b;
    return 0;
}

/* A gradient group (one gradient tensor, shared by the nodes fusion passes
 * it through) with its buffer; buffer -1: the caller's dy. */
static int new_group(planner *p, int buf)
{
    dpt_net *net = p->net;
    if (net->n_grp == p->cap_grp) {
        int cap = p->cap_grp ? 2 * p->cap_grp : 64;
        int *g = realloc(net->grp_buf, (size_t)cap * sizeof *g);
        if (!g)
            return -1;
        net->grp_buf = g, p->cap_grp = cap;
    }
    net->grp_buf[net->n_grp] = buf;
    return net->n_grp++;
}

/* An add that applies its inputs' batch norms (add_bn) reads their inputs. */
static void add_bn_inputs(const dpt_net *net, const dpt_layer *l, node_plan *P)
{
    for (int k = 0; k < l->n_in; k++) {
        const dpt_layer *in = &net->layers[l->inputs[k]];
        if (in->bnf && in->bnf->into_add)
            P->x_act[k] = net->plan[in->inputs[0]].act;
    }
}

/* The index of the node whose backward last reads the gradient at an
 * add_bn batch norm's output: the conv below it when that conv forms the
 * batch norm's backward, else the batch norm. */
static int bn_grad_reader(const dpt_net *net, int b)
{
    const dpt_layer *l = &net->layers[b];
    return l->bnf->dx_virtual ? l->inputs[0] : b;
}

/* An add that applies a batch norm (add_bn) writes the same gradient to both
 * inputs: one buffer can hold both when both gradients come into being
 * here (no acc) and nothing writes into it while it is still to be read:
 * the only writes are other consumers of a plain input adding their share,
 * and those must run (in backward order) after every batch norm's reader,
 * or be that reader (a node reads its gradient before its share is added). */
static int add_shares(const dpt_net *net, int i, const node_plan *P)
{
    const dpt_layer *l = &net->layers[i];
    if (l->type != &dpt_layer_add || l->n_in != 2 || P->acc[0] || P->dx_buf[0] < 0)
        return 0;
    int reader = net->n_layers, any = 0;
    for (int k = 0; k < 2; k++) {
        const dpt_layer *in = &net->layers[l->inputs[k]];
        if (in->bnf && in->bnf->into_add) {
            int r = bn_grad_reader(net, l->inputs[k]);
            reader = r < reader ? r : reader;
            any = 1;
        }
    }
    if (!any || l->inputs[0] == l->inputs[1])
        return 0;
    for (int k = 0; k < 2; k++) {
        const int x = l->inputs[k];
        const dpt_layer *in = &net->layers[x];
        if (in->bnf && in->bnf->into_add)
            continue;
        for (int j = x + 1; j < net->n_layers; j++) /* x's other consumers */
            for (int m = 0; m < net->layers[j].n_in; m++)
                if (j != i && net->layers[j].inputs[m] == x && j > reader)
                    return 0;
    }
    return 1;
}

/* A group's buffer back to the pool, unless another group still holds it. */
static int release_grad(planner *p, int b)
{
    for (int k = 0; k < p->n_shared; k++)
        if (p->shared[2 * k] == b && p->shared[2 * k + 1] > 1) {
            p->shared[2 * k + 1]--;
            return 0;
        }
    return give_grad(p, b);
}

static dpt_status plan_buffers(dpt_net *net)
{
    int L = net->n_layers;
    planner pl = {.net = net};
    if (L < 2) /* infer_shapes refuses an input-only network */
        return dpt_fail(DPT_ERR_FORMAT, "%s: the network has only an input layer", net->source);
    size_t n_edges = 0;
    for (int i = 0; i < L; i++)
        n_edges += (size_t)net->layers[i].n_in;
    net->plan = calloc((size_t)L, sizeof *net->plan);
    net->plan_ints = calloc(4 * n_edges + 1, sizeof *net->plan_ints);
    if (!net->plan || !net->plan_ints)
        goto fail;
    int *ints = net->plan_ints;
    for (int i = 0; i < L; i++) {
        int m = net->layers[i].n_in;
        node_plan *P = &net->plan[i];
        P->x_act = ints, P->dx_buf = ints + m, P->acc = ints + 2 * m, P->dx_grp = ints + 3 * m;
        ints += 4 * m;
    }
    /* Activations: one buffer per materialised output; a fused relu
     * shares its batchnorm's; an output no one reads (the conv after it
     * normalises on the fly) has none. */
    for (int i = 0; i < L; i++) {
        dpt_layer *l = &net->layers[i];
        node_plan *P = &net->plan[i];
        const dpt_layer *in0 = l->n_in ? &net->layers[l->inputs[0]] : NULL;
        int virt = (l->bnf && l->bnf->out_virtual) ||
                   (l->fused && in0->bnf && in0->bnf->out_virtual);
        if (virt)
            P->act = -1;
        else if (l->fused)
            P->act = net->plan[l->inputs[0]].act;
        else if ((P->act = new_buf(&pl, count_of(net, i))) < 0)
            goto fail;
        for (int k = 0; k < l->n_in; k++) {
            P->x_act[k] = net->plan[l->inputs[k]].act;
            P->dx_buf[k] = P->dx_grp[k] = -1;
        }
        if (l->in_bnf)
            P->x_act[0] = net->plan[l->in_act].act;
        add_bn_inputs(net, l, P);
        P->skip_fwd = l->type == &dpt_layer_globalavgpool && l->in_act; /* add_pool */
        P->grp = -1;
    }
    /* Gradients, in backward order. */
    if ((net->plan[L - 1].grp = new_group(&pl, -1)) < 0)
        goto fail;
    for (int i = L - 1; i >= 1; i--) {
        dpt_layer *l = &net->layers[i];
        node_plan *P = &net->plan[i];
        /* Fused relu, or a batchnorm whose input gradient the conv below
         * forms: the gradient passes through to the input unchanged. */
        if (l->fused || (l->bnf && l->bnf->dx_virtual)) {
            P->skip_bwd = l->fused;
            net->plan[l->inputs[0]].grp = P->grp;
            continue;
        }
        int scratch[DPT_MAX_INPUTS], n_scratch = 0;
        for (int k = 0; k < l->n_in; k++) {
            int j = l->inputs[k];
            if (j == 0) /* no gradient for the input layer */
                continue;
            node_plan *Q = &net->plan[j];
            int b;
            if (k == 1 && Q->grp < 0 && pl.n_shared < 64 && add_shares(net, i, P) &&
                net->buf_floats[P->dx_buf[0]] >= count_of(net, j)) {
                b = P->dx_buf[0]; /* the gradient input 0 gets: the same values */
                pl.shared[2 * pl.n_shared] = b, pl.shared[2 * pl.n_shared + 1] = 2;
                pl.n_shared++;
            } else if ((b = take_grad(&pl, count_of(net, j))) < 0) {
                goto fail;
            }
            if (Q->grp < 0) {
                if ((Q->grp = new_group(&pl, b)) < 0)
                    goto fail;
            } else {
                P->acc[k] = 1;
                scratch[n_scratch++] = b;
            }
            P->dx_buf[k] = b;
            P->dx_grp[k] = Q->grp;
        }
        for (int k = 0; k < n_scratch; k++)
            if (give_grad(&pl, scratch[k]))
                goto fail;
        if (l->type == &dpt_layer_globalavgpool && l->in_act) /* add_pool */
            P->skip_bwd = 1;
        /* The batchnorm above writes these gradients (concat_split). */
        const int top = only_consumer(net, i);
        if (l->type == &dpt_layer_concat && top > 0 && net->layers[top].bnf &&
            net->layers[top].bnf->dx_split)
            P->skip_bwd = 1;
        /* add_pool: the pooling's output gradient is read by the add, so it
         * lives until the add's backward. */
        const int pool_of_add = l->type == &dpt_layer_add ? l->in_act : 0;
        if (pool_of_add && release_grad(&pl, net->grp_buf[net->plan[pool_of_add].grp]))
            goto fail;
        if (l->type == &dpt_layer_globalavgpool && l->in_act)
            continue;
        if (net->grp_buf[P->grp] >= 0 && release_grad(&pl, net->grp_buf[P->grp]))
            goto fail;
    }
    free(pl.free_ids);
    return DPT_OK;
fail:
    free(pl.free_ids);
    return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory planning buffers", net->source);
}

/* The layers' kernel choices (layer_type.plan), which may depend on the
 * fusion (a batch norm applied on the fly) and on whether a layer's input
 * gradient is wanted. */
dpt_status net_plan_kernels(dpt_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        if (!l->type->plan)
            continue;
        dpt_status s = l->type->plan(net, l);
        if (s != DPT_OK)
            return s;
    }
    /* Planned again on a built network: a new choice may need more
     * scratch than the old one (a first build sizes it later). */
    if (net->work) {
        size_t need = 0;
        for (int i = 0; i < net->n_layers; i++) {
            const dpt_layer *l = &net->layers[i];
            size_t w = l->type->work_floats ? l->type->work_floats(l, net->max_batch) : 0;
            if (w > need)
                need = w;
        }
        if (need > net->work_floats) {
            dpt_free(net->work);
            net->work_floats = 0;
            if (!(net->work = dpt_alloc(need * sizeof(float))))
                return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for scratch", net->source);
            net->work_floats = need;
        }
    }
    return DPT_OK;
}

dpt_status net_plan(dpt_net *net)
{
    dpt_status s = plan_fusion(net, -1);
    if (s == DPT_OK)
        s = plan_buffers(net);
    return s;
}

/* The plan without the buffers and the fusion, the graph kept. */
static void drop_plan(dpt_net *net)
{
    net_free_buffers(net);
    free(net->plan), free(net->plan_ints), free(net->buf_floats), free(net->grp_buf);
    free(net->fuse_sums), free(net->fuse_bn), free(net->fuse_buf);
    net->plan = NULL, net->plan_ints = NULL, net->buf_floats = NULL, net->grp_buf = NULL;
    net->fuse_sums = NULL, net->fuse_bn = NULL, net->fuse_buf = NULL;
    net->n_buf = net->n_grp = net->n_grad_bufs = 0;
    for (int i = 0; i < net->n_layers; i++) {
        dpt_layer *l = &net->layers[i];
        l->fused = l->relu_after = l->in_act = 0;
        l->sums_out = l->sums_in = NULL;
        l->bnf = l->in_bnf = l->out_bnf = NULL;
    }
}

dpt_status net_replan(dpt_net *net, int fusion)
{
    drop_plan(net);
    dpt_status s = plan_fusion(net, fusion);
    if (s == DPT_OK)
        s = plan_buffers(net);
    if (s == DPT_OK)
        s = net_plan_kernels(net);
    return s;
}

dpt_status net_plan_buffers(dpt_net *net) { return plan_buffers(net); }

/* Floats of the activation buffers (*acts) and of the gradient and
 * scratch buffers (*grads) the plan allocates. */
void net_plan_floats(const dpt_net *net, double *acts, double *grads)
{
    double all = 0, a = 0;
    for (int b = 0; b < net->n_buf; b++)
        all += (double)net->buf_floats[b];
    for (int i = 0; i < net->n_layers; i++) {
        int b = net->plan[i].act;
        /* A fused relu shares the buffer of the node it reads. */
        if (b >= 0 && !(net->layers[i].fused && net->plan[net->layers[i].inputs[0]].act == b))
            a += (double)net->buf_floats[b];
    }
    *acts = a, *grads = all - a;
}

dpt_status net_alloc_buffers(dpt_net *net)
{
    net->buf = calloc((size_t)net->n_buf + 1, sizeof *net->buf);
    net->acts = calloc((size_t)net->n_layers, sizeof *net->acts);
    if (!net->buf || !net->acts)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", net->source);
    for (int b = 0; b < net->n_buf; b++) {
        dpt_status s = net->dev->alloc(net, net->buf_floats[b], &net->buf[b]);
        if (s != DPT_OK)
            return dpt_fail(s, "%s: out of memory for a buffer of %zu floats", net->source,
                            net->buf_floats[b]);
    }
    for (int i = 0; i < net->n_layers; i++)
        net->acts[i] = net->plan[i].act >= 0 ? net->buf[net->plan[i].act] : NULL;
    return DPT_OK;
}

void net_free_buffers(dpt_net *net)
{
    if (net->buf && net->dev)
        for (int b = 0; b < net->n_buf; b++)
            net->dev->release(net, net->buf[b]);
    free(net->buf);
    net->buf = NULL;
    free(net->acts);
    net->acts = NULL;
}

void net_free_plan(dpt_net *net)
{
    drop_plan(net);
    free(net->n_consumers);
    net->n_consumers = net->sole_consumer = NULL;
}

int net_n_grad_buffers(const dpt_net *net) { return net->n_grad_bufs; }

const float *net_node_grad(const dpt_net *net, int node)
{
    if (node < 1 || node >= net->n_layers || !net->buf)
        return NULL;
    int g = net->plan[node].grp;
    int b = g >= 0 ? net->grp_buf[g] : -1;
    return b >= 0 ? net->buf[b] : NULL;
}
