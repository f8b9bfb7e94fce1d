/* What the fusion tests (test_pool_fusion, test_stem_pool,
 * test_block_fusion) share: a network from a spec planned with or without
 * fusion, a layer by name, random values in [-1, 1). Include after
 * net/net_impl.h and testutil.h. */
#ifndef DPT_TESTS_FUSION_COMMON_H
#define DPT_TESTS_FUSION_COMMON_H

#include <string.h>

/* The network of spec (source names it in messages), its plan made again
 * with fusion on or off, buffers allocated; same seed: same weights. NULL
 * (and a failed check) on error. */
static inline dpt_net *fusion_net(const char *spec, const char *source, int max_batch,
                                  uint64_t seed, int fusion)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, source, 0, max_batch, seed, &net);
    if (s == DPT_OK)
        s = net_replan(net, fusion);
    if (s == DPT_OK)
        s = net_alloc_buffers(net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK) {
        dpt_net_free(net);
        return NULL;
    }
    return net;
}

static inline int layer_index(const dpt_net *net, const char *name)
{
    for (int i = 0; i < net->n_layers; i++)
        if (strcmp(net->layers[i].name, name) == 0)
            return i;
    return -1;
}

static inline void fill(dpt_rng *r, float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = 2.0f * dpt_rng_uniform(r) - 1.0f;
}

#endif
