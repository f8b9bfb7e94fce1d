/* Model files: the learnables and state tables as named safetensors
 * tensors, the spec in the metadata, so PyTorch (or json + struct) can read
 * the weights and dptrain can rebuild the network. */
#include "core/safetensors.h"
#include "net/net_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_FORMAT "dptrain.model.v1"

static dpt_status add_table(dpt_st_writer *w, const dpt_param_info *tab, size_t n,
                            const float *base)
{
    for (size_t i = 0; i < n; i++) {
        int64_t shape[DPT_MAX_DIMS];
        for (int d = 0; d < tab[i].ndim; d++)
            shape[d] = tab[i].shape[d];
        dpt_status s = dpt_st_writer_add(w, tab[i].name, "F32", tab[i].ndim, shape,
                                         base + tab[i].offset, tab[i].n * sizeof(float));
        if (s != DPT_OK)
            return s;
    }
    return DPT_OK;
}

dpt_status dpt_net_save(const dpt_net *net, const char *path, const dpt_kv *meta, size_t n_meta)
{
    if (!net || !path || (!meta && n_meta))
        return dpt_fail(DPT_ERR_ARG, "dpt_net_save: %s is NULL",
                        !net ? "net" : !path ? "path" : "meta");
    dpt_st_writer *w = NULL;
    dpt_status s = dpt_st_writer_new(&w);
    if (s == DPT_OK)
        s = dpt_st_writer_meta(w, "format", MODEL_FORMAT);
    if (s == DPT_OK)
        s = dpt_st_writer_meta(w, "spec", net->spec);
    for (size_t i = 0; s == DPT_OK && i < n_meta; i++)
        s = dpt_st_writer_meta(w, meta[i].key, meta[i].value);
    if (s == DPT_OK)
        s = add_table(w, net->learn, net->n_learn, net->params);
    if (s == DPT_OK)
        s = add_table(w, net->state_tab, net->n_state_tab, net->state);
    if (s == DPT_OK)
        s = dpt_st_writer_save(w, path);
    dpt_st_writer_free(w);
    return s;
}

/* Check one table entry against the file; a wrong shape names the tensor.
 * dst NULL: check only; else copy too. */
static dpt_status read_entry(const dpt_st *st, const char *path, const dpt_param_info *e,
                             float *dst)
{
    const dpt_st_tensor *t = dpt_st_get(st, e->name);
    if (!t)
        return dpt_fail(DPT_ERR_FORMAT, "%s: tensor '%s' missing (the file is for another "
                        "network)", path, e->name);
    int same = t->ndim == e->ndim && strcmp(t->dtype, "F32") == 0;
    for (int d = 0; same && d < e->ndim; d++)
        same = t->shape[d] == e->shape[d];
    if (!same) {
        char want[64], got[64];
        int k = 0;
        for (int d = 0; d < e->ndim; d++)
            k += snprintf(want + k, sizeof want - (size_t)k, d ? "x%d" : "%d", e->shape[d]);
        k = 0;
        got[0] = '\0';
        for (int d = 0; d < t->ndim && k < 48; d++)
            k += snprintf(got + k, sizeof got - (size_t)k, d ? "x%lld" : "%lld",
                          (long long)t->shape[d]);
        return dpt_fail(DPT_ERR_SHAPE, "%s: tensor '%s' is %s %s, the network needs F32 %s", path,
                        e->name, t->dtype, got, want);
    }
    return dst ? dpt_st_read_f32(st, e->name, dst, e->n) : DPT_OK;
}

static dpt_status copy_tables(dpt_net *net, const dpt_st *st, const char *path)
{
    dpt_status s = DPT_OK;
    for (size_t i = 0; s == DPT_OK && i < net->n_learn; i++)
        s = read_entry(st, path, &net->learn[i], net->params + net->learn[i].offset);
    for (size_t i = 0; s == DPT_OK && i < net->n_state_tab; i++)
        s = read_entry(st, path, &net->state_tab[i], net->state + net->state_tab[i].offset);
    return s;
}

/* Every table entry has its tensor in the file, with its shape. */
static dpt_status check_tables(const dpt_net *net, void *ctx)
{
    const dpt_st *st = ctx;
    dpt_status s = DPT_OK;
    for (size_t i = 0; s == DPT_OK && i < net->n_learn; i++)
        s = read_entry(st, net->source, &net->learn[i], NULL);
    for (size_t i = 0; s == DPT_OK && i < net->n_state_tab; i++)
        s = read_entry(st, net->source, &net->state_tab[i], NULL);
    return s;
}

dpt_status dpt_net_load_into(dpt_net *net, const char *path)
{
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(path, &st);
    if (s == DPT_OK)
        s = copy_tables(net, st, path);
    dpt_st_close(st);
    return s;
}

static const char *const kept_keys[] = {"format", "spec", "classes", "epoch", "iteration",
                                        "trained", "workers", "accuracy", "task", "vocab",
                                        "seq_len", "features"};

/* The numbers among the kept metadata, range-checked on load (what dptrain
 * writes, with room): a model is refused rather than shown with nonsense. */
static const struct {
    const char *key;
    long min, max;
} numeric_keys[] = {{"epoch", 0, 1000001L}, {"iteration", 0, 1L << 48}, {"workers", 1, 1L << 20}};

static dpt_status check_numbers(const dpt_st *st, const char *path)
{
    for (size_t i = 0; i < sizeof numeric_keys / sizeof *numeric_keys; i++) {
        const char *v = dpt_st_meta(st, numeric_keys[i].key);
        if (!v)
            continue;
        char *end;
        errno = 0;
        long x = *v >= '0' && *v <= '9' ? strtol(v, &end, 10) : -1;
        if (x < numeric_keys[i].min || x > numeric_keys[i].max || errno || *end != '\0')
            return dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"%s\" is '%.40s', not an integer in "
                            "[%ld, %ld]", path, numeric_keys[i].key, v, numeric_keys[i].min,
                            numeric_keys[i].max);
    }
    const char *acc = dpt_st_meta(st, "accuracy");
    if (acc) {
        char *end;
        double a = strtod(acc, &end);
        if (end == acc || *end != '\0' || !(a >= 0 && a <= 1))
            return dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"accuracy\" is '%.40s', not a number "
                            "in [0, 1]", path, acc);
    }
    return DPT_OK;
}

dpt_status dpt_net_load(const char *path, int max_batch, dpt_net **out)
{
    if (!path || !out)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_load: %s is NULL", !path ? "path" : "out");
    *out = NULL;
    dpt_st *st = NULL;
    dpt_net *net = NULL;
    dpt_status s = dpt_st_open(path, &st);
    if (s != DPT_OK)
        return s;
    const char *fmt = dpt_st_meta(st, "format");
    const char *spec = dpt_st_meta(st, "spec");
    if (!fmt || strncmp(fmt, "dptrain.", 8) != 0 || !spec) {
        s = dpt_fail(DPT_ERR_FORMAT, "%s: not a dptrain model (no 'format'/'spec' metadata)", path);
        goto done;
    }
    if ((s = check_numbers(st, path)) != DPT_OK)
        goto done;
    /* The file's tensors are checked against the spec's shapes before the
     * network's buffers are allocated: a spec edited to need gigabytes
     * fails at once on its first mismatched tensor. */
    if ((s = net_from_spec_checked(spec, path, 0, max_batch, 0, check_tables, (void *)st,
                                   &net)) != DPT_OK)
        goto done;
    if ((s = copy_tables(net, st, path)) != DPT_OK)
        goto done;
    size_t nk = sizeof kept_keys / sizeof *kept_keys;
    net->meta = calloc(2 * nk, sizeof *net->meta);
    if (!net->meta) {
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nk; i++) {
        const char *v = dpt_st_meta(st, kept_keys[i]);
        if (!v)
            continue;
        net->meta[2 * net->n_meta] = strdup(kept_keys[i]);
        net->meta[2 * net->n_meta + 1] = strdup(v);
        net->n_meta++;
        if (!net->meta[2 * net->n_meta - 2] || !net->meta[2 * net->n_meta - 1]) {
            s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
done:
    dpt_st_close(st);
    if (s != DPT_OK)
        dpt_net_free(net);
    else
        *out = net;
    return s;
}

const char *dpt_net_meta(const dpt_net *net, const char *key)
{
    for (size_t i = 0; i < net->n_meta; i++)
        if (strcmp(net->meta[2 * i], key) == 0)
            return net->meta[2 * i + 1];
    return NULL;
}
