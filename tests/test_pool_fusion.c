/* Pooling fused with the batch norm (and ReLU) below it (graph.c's fusion
 * rule, layer_pool.c): a conv -> batchnorm -> relu -> maxpool stem and its
 * variants give the outputs and gradients of the plain plan, and the max
 * pooling's saved window taps (2x2 stride 2) give the same backward as a
 * search from x, over several steps and batch sizes; likewise a residual
 * add with the ReLU after it fused in. */
#include "net/net_impl.h"
#include "ops/ops.h"
#include "testutil.h"
#include "fusion_common.h"

#include <stdlib.h>
#include <string.h>

/* Odd input sizes (11x9): the 2x2 pooling drops a last row and column,
 * whose gradient must be +0. Pools: 2x2 max (saved taps) after bn+relu,
 * 3x3/s2/p1 max (searched) after bn+relu, 2x2 average after a bn alone. */
static const char spec[] =
    "input in size=11x9x3\n"
    "conv c1 filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm b1\n"
    "relu r1\n"
    "maxpool p1 size=2\n"
    "conv ca filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm ba\n"
    "add a from=ba,p1\n"
    "relu ra\n"
    "conv c2 filter=3 filters=6 padding=1 bias=0\n"
    "batchnorm b2\n"
    "relu r2\n"
    "maxpool p2 size=3 stride=2 padding=1\n"
    "conv c3 filter=1 filters=5 bias=0\n"
    "batchnorm b3\n"
    "avgpool p3 size=2\n"
    "fc f outputs=4\n";

enum { MAXB = 6 };

/* A fused and a plain plan of the same network (same seed: same weights). */
static dpt_net *build(int fusion)
{
    return fusion_net(spec, "stem", MAXB, 11, fusion);
}

int main(void)
{
    dpt_net *fused = build(1), *plain = build(0);
    if (!fused || !plain) {
        dpt_net_free(fused), dpt_net_free(plain);
        return tu_exit();
    }
    /* The plan: every pool reads its batch norm's input and normalises it
     * itself; the batch norms' outputs are never written. */
    const char *pools[] = {"p1", "p2", "p3"}, *bns[] = {"b1", "b2", "b3"};
    for (int k = 0; k < 3; k++) {
        int p = layer_index(fused, pools[k]), b = layer_index(fused, bns[k]);
        CHECK(p > 0 && b > 0);
        if (p < 0 || b < 0)
            continue;
        CHECK(fused->layers[b].bnf && fused->layers[b].bnf->out_virtual);
        CHECK(fused->layers[p].in_bnf == fused->layers[b].bnf);
        CHECK(fused->acts[b] == NULL);
        CHECK(plain->layers[p].in_bnf == NULL && plain->acts[b] != NULL);
    }
    /* add -> relu: the add applies the ReLU, the relu shares its output. */
    const int a = layer_index(fused, "a"), ra = layer_index(fused, "ra");
    CHECK(a > 0 && ra > 0 && fused->layers[a].relu_after && fused->layers[ra].fused);
    CHECK(fused->acts[ra] == fused->acts[a]);
    CHECK(!plain->layers[a].relu_after && !plain->layers[ra].fused);
    const size_t np = dpt_net_n_params(fused);
    CHECK(np == dpt_net_n_params(plain));
    memcpy(dpt_net_params(plain), dpt_net_params(fused), np * sizeof(float));
    dpt_rng rng;
    dpt_rng_seed(&rng, 3, 0);
    float x[MAXB * 11 * 9 * 3], dy[MAXB * 4];
    float *g = malloc(np * sizeof *g);
    /* Several steps and batch sizes (the saved taps follow the batch), a
     * PREDICT forward between (it keeps no taps). */
    static const int batches[] = {MAXB, 3, 1, MAXB};
    for (size_t it = 0; g && it < sizeof batches / sizeof *batches; it++) {
        const int n = batches[it];
        fill(&rng, x, (size_t)n * 11 * 9 * 3);
        fill(&rng, dy, (size_t)n * 4);
        const float *yf, *yp;
        CHECK(dpt_net_forward(fused, x, n, DPT_MODE_PREDICT, &yf) == DPT_OK);
        CHECK(dpt_net_forward(fused, x, n, DPT_MODE_TRAIN, &yf) == DPT_OK);
        CHECK(dpt_net_forward(plain, x, n, DPT_MODE_TRAIN, &yp) == DPT_OK);
        char what[96];
        snprintf(what, sizeof what, "step %zu (batch %d): output, fused pools vs plain", it, n);
        tu_check_close(what, yf, yp, (size_t)n * 4, 1e-5);
        CHECK(dpt_net_backward(fused, dy, 0) == DPT_OK);
        CHECK(dpt_net_backward(plain, dy, 0) == DPT_OK);
        memcpy(g, dpt_net_grads(fused), np * sizeof *g);
        snprintf(what, sizeof what, "step %zu (batch %d): gradients, fused pools vs plain", it, n);
        tu_check_close(what, g, dpt_net_grads(plain), np, 1e-4);
    }
    free(g);
    dpt_net_free(fused);
    dpt_net_free(plain);
    return tu_exit();
}
