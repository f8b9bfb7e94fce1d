/* Checkpoints: model tables + optimizer velocity + training position in one
 * safetensors file, with a CRC-32 of the tensor data in the metadata. */
#include "core/safetensors.h"
#include "dptrain/train.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CKPT_FORMAT "dptrain.checkpoint.v1"

static dpt_status add_table(dpt_st_writer *w, const dpt_net *net, int state, const float *base,
                            uLong *crc)
{
    size_t n = state ? dpt_net_n_state(net) : dpt_net_n_learnables(net);
    for (size_t i = 0; i < n; i++) {
        const dpt_param_info *e = state ? dpt_net_state_info(net, i) : dpt_net_learnable(net, i);
        int64_t shape[DPT_MAX_DIMS];
        for (int d = 0; d < e->ndim; d++)
            shape[d] = e->shape[d];
        dpt_status s = dpt_st_writer_add(w, e->name, "F32", e->ndim, shape, base + e->offset,
                                         e->n * sizeof(float));
        if (s != DPT_OK)
            return s;
        *crc = crc32(*crc, (const Bytef *)(base + e->offset), (uInt)(e->n * sizeof(float)));
    }
    return DPT_OK;
}

dpt_status dpt_checkpoint_save(const char *path, const dpt_net *net, const dpt_sgdm *opt,
                               const dpt_checkpoint_info *info, const dpt_kv *meta, size_t n_meta)
{
    dpt_st_writer *w = NULL;
    dpt_status s = dpt_st_writer_new(&w);
    if (s != DPT_OK)
        return s;
    dpt_net *mnet = (dpt_net *)net; /* the accessors take non-const for writing */
    uLong crc = crc32(0L, Z_NULL, 0);
    s = add_table(w, net, 0, dpt_net_params(mnet), &crc);
    if (s == DPT_OK)
        s = add_table(w, net, 1, dpt_net_state(mnet), &crc);
    if (s == DPT_OK && opt && opt->n) {
        int64_t shape[1] = {(int64_t)opt->n};
        s = dpt_st_writer_add(w, "optim/Velocity", "F32", 1, shape, opt->velocity,
                              opt->n * sizeof(float));
        crc = crc32(crc, (const Bytef *)opt->velocity, (uInt)(opt->n * sizeof(float)));
    }
    char buf[6][64];
    snprintf(buf[0], sizeof buf[0], "%d", info->epoch);
    snprintf(buf[1], sizeof buf[1], "%ld", info->epoch_iteration);
    snprintf(buf[2], sizeof buf[2], "%ld", info->iteration);
    snprintf(buf[3], sizeof buf[3], "%" PRIu64, info->seed);
    snprintf(buf[4], sizeof buf[4], "%d", info->n_workers);
    snprintf(buf[5], sizeof buf[5], "%08lx", (unsigned long)crc);
    char elapsed[64];
    snprintf(elapsed, sizeof elapsed, "%.17g", info->elapsed_s);
    const dpt_kv fixed[] = {
        {"format", CKPT_FORMAT}, {"spec", dpt_net_spec(net)}, {"epoch", buf[0]},
        {"epoch_iteration", buf[1]}, {"iteration", buf[2]}, {"seed", buf[3]},
        {"workers", buf[4]}, {"crc32", buf[5]}, {"elapsed_s", elapsed},
    };
    for (size_t i = 0; s == DPT_OK && i < sizeof fixed / sizeof *fixed; i++)
        s = dpt_st_writer_meta(w, fixed[i].key, fixed[i].value);
    for (size_t i = 0; s == DPT_OK && i < n_meta; i++)
        s = dpt_st_writer_meta(w, meta[i].key, meta[i].value);
    if (s == DPT_OK)
        s = dpt_st_writer_save(w, path);
    dpt_st_writer_free(w);
    return s;
}

static int meta_long(const dpt_st *st, const char *key, long *out)
{
    const char *v = dpt_st_meta(st, key);
    char *end;
    if (!v)
        return -1;
    *out = strtol(v, &end, 10);
    return *end == '\0' && end != v ? 0 : -1;
}

dpt_status dpt_checkpoint_load(const char *path, dpt_net *net, dpt_sgdm *opt,
                               dpt_checkpoint_info *info)
{
    dpt_st *st = NULL;
    float *params = NULL, *state = NULL, *vel = NULL;
    dpt_status s = dpt_st_open(path, &st);
    if (s != DPT_OK)
        return s;
    const char *fmt = dpt_st_meta(st, "format"), *crc_text = dpt_st_meta(st, "crc32");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0 || !crc_text) {
        s = dpt_fail(DPT_ERR_FORMAT, "%s: not a dptrain checkpoint (format '%s')", path,
                     fmt ? fmt : "missing");
        goto done;
    }
    /* The checksum covers the tensors in file order: the order they were
     * written in. */
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < dpt_st_count(st); i++) {
        const dpt_st_tensor *t = dpt_st_at(st, i);
        crc = crc32(crc, (const Bytef *)t->data, (uInt)t->bytes);
    }
    char want[16];
    snprintf(want, sizeof want, "%08lx", (unsigned long)crc);
    if (strcmp(want, crc_text) != 0) {
        s = dpt_fail(DPT_ERR_FORMAT, "%s: checksum mismatch (stored %s, data %s): the file is "
                     "damaged", path, crc_text, want);
        goto done;
    }
    long epoch, epoch_it, it, workers;
    const char *seed_text = dpt_st_meta(st, "seed"), *el = dpt_st_meta(st, "elapsed_s");
    if (meta_long(st, "epoch", &epoch) || meta_long(st, "epoch_iteration", &epoch_it) ||
        meta_long(st, "iteration", &it) || meta_long(st, "workers", &workers) || !seed_text ||
        epoch < 1 || epoch_it < 0 || it < 0 || workers < 1) {
        s = dpt_fail(DPT_ERR_FORMAT, "%s: missing or bad training position in the metadata", path);
        goto done;
    }
    /* Read into scratch first, so a mismatch leaves net and opt untouched. */
    size_t np = dpt_net_n_params(net), ns = dpt_net_n_state_floats(net);
    params = malloc(np * sizeof(float) + 1);
    state = malloc(ns * sizeof(float) + 1);
    if (!params || !state) {
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int tab = 0; tab < 2 && s == DPT_OK; tab++) {
        size_t n = tab ? dpt_net_n_state(net) : dpt_net_n_learnables(net);
        for (size_t i = 0; i < n && s == DPT_OK; i++) {
            const dpt_param_info *e = tab ? dpt_net_state_info(net, i) : dpt_net_learnable(net, i);
            const dpt_st_tensor *t = dpt_st_get(st, e->name);
            int same = t && t->ndim == e->ndim && strcmp(t->dtype, "F32") == 0;
            for (int d = 0; same && d < e->ndim; d++)
                same = t->shape[d] == e->shape[d];
            if (!same)
                s = dpt_fail(DPT_ERR_SHAPE, "%s: tensor '%s' %s: the checkpoint is for another "
                             "network", path, e->name, t ? "has another shape" : "is missing");
            else
                s = dpt_st_read_f32(st, e->name, (tab ? state : params) + e->offset, e->n);
        }
    }
    if (s != DPT_OK)
        goto done;
    const char *spec = dpt_st_meta(st, "spec");
    if (!spec || strcmp(spec, dpt_net_spec(net)) != 0) {
        s = dpt_fail(DPT_ERR_FORMAT, "%s: the checkpoint's network spec differs from this "
                     "network's", path);
        goto done;
    }
    if (opt) {
        vel = malloc(opt->n * sizeof(float) + 1);
        if (!vel) {
            s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((s = dpt_st_read_f32(st, "optim/Velocity", vel, opt->n)) != DPT_OK)
            goto done;
        memcpy(opt->velocity, vel, opt->n * sizeof(float));
    }
    memcpy(dpt_net_params(net), params, np * sizeof(float));
    memcpy(dpt_net_state(net), state, ns * sizeof(float));
    info->epoch = (int)epoch;
    info->epoch_iteration = epoch_it;
    info->iteration = it;
    info->seed = strtoull(seed_text, NULL, 10);
    info->n_workers = (int)workers;
    info->elapsed_s = el ? strtod(el, NULL) : 0;
done:
    free(params), free(state), free(vel);
    dpt_st_close(st);
    return s;
}
