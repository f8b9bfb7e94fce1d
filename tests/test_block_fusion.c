/* Batch norms fused into the residual add after them (graph.c add_bn,
 * layer_merge.c), and a concat taking the sums of the batch norm after it
 * (concat_bn; the batch norm writes the concat's input gradients), and the
 * global average pooling after the last add computed by it (add_pool): the three block ends of the residual networks (conv ->
 * batchnorm + shortcut; two batchnorms added; concat -> batchnorm, whose
 * batch norm has no conv below it) and an add without a ReLU after it give
 * the bits of the plan without this fusion (every other fusion on), and the
 * outputs and gradients of the plain plan, over several steps and batch
 * sizes; the add's two gradients share a buffer where that is safe.
 * 7x5 planes: a vector tail on every instruction set. */
#include "net/net_impl.h"
#include "ops/ops.h"
#include "testutil.h"
#include "fusion_common.h"

#include <stdlib.h>
#include <string.h>

static const char spec[] =
    "input in size=7x5x3\n"
    "conv c0 filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm b0\n"
    "relu r0\n"
    /* conv -> batchnorm + shortcut (read by another conv too), ReLU after */
    "conv c1a filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm b1a\n"
    "relu r1a\n"
    "conv c1 filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm b1\n"
    "add a1 from=b1,r0\n"
    "relu s1\n"
    /* two batch norms added, ReLU after */
    "conv c2 filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm b2\n"
    "conv p2 filter=1 filters=8 bias=0 from=s1\n"
    "batchnorm pb2\n"
    "add a2 from=b2,pb2\n"
    "relu s2\n"
    /* concat -> batchnorm + shortcut, the batch norm second, no ReLU */
    "conv ca filter=1 filters=3 bias=0 from=s2\n"
    "conv cb filter=3 filters=5 padding=1 bias=0 from=s2\n"
    "concat cat from=ca,cb\n"
    "batchnorm b3\n"
    "add a3 from=s2,b3\n"
    /* the shortcut is also read by z, which adds its gradient share before
     * c4 reads b4's: no shared buffer at a4; at a5 one */
    "conv c4 filter=3 filters=8 padding=1 bias=0\n"
    "batchnorm b4\n"
    "conv z filter=1 filters=8 bias=0 from=a3\n"
    "batchnorm bz\n"
    "add a4 from=b4,a3\n"
    "add a5 from=a4,bz\n"
    "relu s5\n"
    "globalavgpool gap\n"
    "fc f outputs=4\n";

enum { MAXB = 6, IN = 7 * 5 * 3 };

/* fusion: 0 plain; 1 every fusion; 2 every fusion but add_bn and concat_bn. */
static dpt_net *build(int fusion)
{
    if (fusion == 2)
        setenv("DPT_FUSION_BLK", "0", 1);
    dpt_net *net = fusion_net(spec, "block", MAXB, 4, fusion != 0);
    unsetenv("DPT_FUSION_BLK");
    return net;
}

static void run(const char *kernels)
{
    CHECK(dpt_ops_set_kernels(kernels) == 0);
    printf("kernels %s\n", dpt_ops_kernels());
    dpt_net *nets[3] = {build(1), build(2), build(0)}; /* fused, without these, plain */
    if (!nets[0] || !nets[1] || !nets[2]) {
        for (int k = 0; k < 3; k++)
            dpt_net_free(nets[k]);
        return;
    }
    dpt_net *fused = nets[0];
    /* The plan: each batch norm before an add is applied by the add. */
    const char *bns[] = {"b1", "b2", "pb2", "b3", "b4", "bz"};
    const char *adds[] = {"a1", "a2", "a2", "a3", "a4", "a5"};
    for (int k = 0; k < 6; k++) {
        int b = layer_index(fused, bns[k]), a = layer_index(fused, adds[k]);
        CHECK(b > 0 && a > 0);
        if (b < 0 || a < 0)
            continue;
        CHECK(fused->layers[b].bnf && fused->layers[b].bnf->into_add &&
              fused->layers[b].bnf->out_virtual);
        CHECK(fused->acts[b] == NULL);
        CHECK(nets[1]->acts[b] != NULL && nets[2]->acts[b] != NULL);
        CHECK(!nets[1]->layers[b].bnf || !nets[1]->layers[b].bnf->into_add);
    }
    /* Both gradients of an add in one buffer where nothing writes into it
     * before the batch norm's gradient is read; not at a4. */
    for (int k = 0; k < 6; k++) {
        const int a = layer_index(fused, adds[k]);
        if (a < 0)
            continue;
        const int *db = fused->plan[a].dx_buf;
        CHECK_MSG((db[0] == db[1]) == (k != 4), "%s: gradient buffers %d %d", adds[k], db[0],
                  db[1]);
        CHECK(nets[1]->plan[a].dx_buf[0] != nets[1]->plan[a].dx_buf[1]);
    }
    /* concat -> batchnorm: the concat takes the sums. */
    const int cat = layer_index(fused, "cat"), b3 = layer_index(fused, "b3");
    CHECK(cat > 0 && b3 > 0 && fused->layers[cat].sums_out &&
          fused->layers[cat].sums_out == fused->layers[b3].sums_in);
    CHECK(nets[1]->layers[cat].sums_out == NULL && nets[2]->layers[cat].sums_out == NULL);
    /* ... and in backward writes the concat inputs' gradients itself. */
    CHECK(fused->layers[b3].bnf && fused->layers[b3].bnf->dx_split && fused->plan[cat].skip_bwd);
    CHECK(!nets[1]->plan[cat].skip_bwd && !nets[2]->plan[cat].skip_bwd);
    /* a5 -> relu -> gap: the add pools, the pooling runs no pass. */
    const int gap = layer_index(fused, "gap");
    CHECK(gap > 0 && fused->plan[gap].skip_fwd && fused->plan[gap].skip_bwd);
    CHECK(!nets[1]->plan[gap].skip_fwd && !nets[2]->plan[gap].skip_bwd);
    const size_t np = dpt_net_n_params(fused);
    for (int k = 1; k < 3; k++) {
        CHECK(dpt_net_n_params(nets[k]) == np);
        memcpy(dpt_net_params(nets[k]), dpt_net_params(fused), np * sizeof(float));
    }
    dpt_rng rng;
    dpt_rng_seed(&rng, 5, 0);
    float x[MAXB * IN], dy[MAXB * 4];
    float *g = malloc(np * sizeof *g);
    static const int batches[] = {MAXB, 3, 1, MAXB};
    for (size_t it = 0; g && it < sizeof batches / sizeof *batches; it++) {
        const int n = batches[it];
        fill(&rng, x, (size_t)n * IN);
        fill(&rng, dy, (size_t)n * 4);
        const float *y[3];
        CHECK(dpt_net_forward(fused, x, n, DPT_MODE_PREDICT, &y[0]) == DPT_OK);
        CHECK(dpt_net_forward(nets[1], x, n, DPT_MODE_PREDICT, &y[1]) == DPT_OK);
        CHECK_MSG(memcmp(y[0], y[1], (size_t)n * 4 * sizeof(float)) == 0,
                  "step %zu: predict output differs from the plan without add_bn, concat_bn", it);
        for (int k = 0; k < 3; k++)
            CHECK(dpt_net_forward(nets[k], x, n, DPT_MODE_TRAIN, &y[k]) == DPT_OK);
        CHECK_MSG(memcmp(y[0], y[1], (size_t)n * 4 * sizeof(float)) == 0,
                  "step %zu (batch %d): output differs from the plan without add_bn, concat_bn", it, n);
        char what[96];
        snprintf(what, sizeof what, "step %zu (batch %d): output, fused vs plain", it, n);
        tu_check_close(what, y[0], y[2], (size_t)n * 4, 1e-5);
        for (int k = 0; k < 3; k++)
            CHECK(dpt_net_backward(nets[k], dy, 0) == DPT_OK);
        memcpy(g, dpt_net_grads(fused), np * sizeof *g);
        CHECK_MSG(memcmp(g, dpt_net_grads(nets[1]), np * sizeof *g) == 0,
                  "step %zu (batch %d): gradients differ from the plan without add_bn, concat_bn", it, n);
        snprintf(what, sizeof what, "step %zu (batch %d): gradients, fused vs plain", it, n);
        tu_check_close(what, g, dpt_net_grads(nets[2]), np, 1e-4);
    }
    free(g);
    for (int k = 0; k < 3; k++)
        dpt_net_free(nets[k]);
}

int main(void)
{
    /* Every kernel set this CPU has ("generic" plans no fusion by itself,
     * but its passes are the portable path of dpt_bn_add_*). */
    static const char *sets[] = {"avx512", "avx2", "generic"};
    for (size_t k = 0; k < sizeof sets / sizeof *sets; k++)
        if (dpt_ops_kernels_supported(sets[k]))
            run(sets[k]);
    dpt_ops_set_kernels("auto");
    return tu_exit();
}
