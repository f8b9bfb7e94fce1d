/* Reading and writing one entry of the learnables or state table by name. */
#include "net/net_impl.h"

#include <string.h>

/* Find `name` in the chosen table and check the caller's element count. */
static dpt_status lookup(const dpt_net *net, int is_state, const char *fn, const char *name,
                         const void *buf, size_t n, const dpt_param_info **e)
{
    if (!net || !name || !buf)
        return dpt_fail(DPT_ERR_ARG, "%s: %s is NULL", fn,
                        !net ? "net" : !name ? "name" : "the buffer");
    long i = is_state ? dpt_net_find_state(net, name) : dpt_net_find_learnable(net, name);
    if (i < 0)
        return dpt_fail(DPT_ERR_ARG, "%s: no %s '%s' in the network", fn,
                        is_state ? "state entry" : "learnable", name);
    *e = is_state ? dpt_net_state_info(net, (size_t)i) : dpt_net_learnable(net, (size_t)i);
    if ((*e)->n != n)
        return dpt_fail(DPT_ERR_SHAPE, "%s: %s has %zu elements, the buffer %zu", fn, name,
                        (*e)->n, n);
    return DPT_OK;
}

dpt_status dpt_net_read_learnable(const dpt_net *net, const char *name, float *out, size_t n)
{
    const dpt_param_info *e = NULL;
    dpt_status s = lookup(net, 0, "dpt_net_read_learnable", name, out, n, &e);
    if (s == DPT_OK)
        memcpy(out, net->params + e->offset, n * sizeof *out);
    return s;
}

dpt_status dpt_net_write_learnable(dpt_net *net, const char *name, const float *in, size_t n)
{
    const dpt_param_info *e = NULL;
    dpt_status s = lookup(net, 0, "dpt_net_write_learnable", name, in, n, &e);
    if (s == DPT_OK)
        memcpy(net->params + e->offset, in, n * sizeof *in);
    return s;
}

dpt_status dpt_net_read_state(const dpt_net *net, const char *name, float *out, size_t n)
{
    const dpt_param_info *e = NULL;
    dpt_status s = lookup(net, 1, "dpt_net_read_state", name, out, n, &e);
    if (s == DPT_OK)
        memcpy(out, net->state + e->offset, n * sizeof *out);
    return s;
}

dpt_status dpt_net_write_state(dpt_net *net, const char *name, const float *in, size_t n)
{
    const dpt_param_info *e = NULL;
    dpt_status s = lookup(net, 1, "dpt_net_write_state", name, in, n, &e);
    if (s == DPT_OK)
        memcpy(net->state + e->offset, in, n * sizeof *in);
    return s;
}
