/* Checkpoints: model tables + optimizer velocity + training position in one
 * safetensors file, with a CRC-32 in the metadata.
 *
 * Format v2 (written): the CRC covers the tensor data in file order, then
 * every metadata pair but "crc32" itself, in strcmp order of the keys, as
 * key NUL value NUL: editing a number in the metadata is caught like a
 * flipped bit in a tensor. v1 (read only): the CRC covers the tensors. In
 * both, every number in the metadata is range-checked before use. */
#include "core/safetensors.h"
#include "train/train_internal.h"
#include "dptrain/train.h"
#include "optim/optim_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CKPT_FORMAT "dptrain.checkpoint.v2"
#define CKPT_FORMAT_V1 "dptrain.checkpoint.v1"

/* Bounds of the numbers in the metadata: what dptrain itself can write
 * (--epochs is at most 10^6; the end-of-run checkpoint names the epoch
 * after the last), with room, and far from overflowing a long or an int. */
#define CKPT_MAX_EPOCH 1000001L
#define CKPT_MAX_ITERATION (1L << 48)
#define CKPT_MAX_WORKERS (1L << 20)
#define CKPT_MAX_BATCH 0x7fffffffL
#define CKPT_MAX_ELAPSED 1e12 /* seconds: 30,000 years */

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

static int cmp_kv(const void *a, const void *b)
{
    return strcmp((*(const dpt_kv *const *)a)->key, (*(const dpt_kv *const *)b)->key);
}

/* One metadata pair into the CRC: key NUL value NUL, so moving bytes
 * between a key and its value changes the sum. */
static uLong crc_pair(uLong crc, const char *key, const char *value)
{
    crc = crc32(crc, (const Bytef *)key, (uInt)strlen(key) + 1);
    return crc32(crc, (const Bytef *)value, (uInt)strlen(value) + 1);
}

dpt_status dpt_checkpoint_save(const char *path, const dpt_net *net, const dpt_sgdm *opt,
                               const dpt_checkpoint_info *info, const dpt_kv *meta, size_t n_meta)
{
    dpt_optim o; /* a view of opt; saving only reads it */
    if (opt)
        optim_wrap_sgdm(&o, (dpt_sgdm *)opt);
    return dpt_checkpoint_save_optim(path, net, opt ? &o : NULL, info, meta, n_meta);
}

dpt_status dpt_checkpoint_save_optim(const char *path, const dpt_net *net, const dpt_optim *opt,
                                     const dpt_checkpoint_info *info, const dpt_kv *meta,
                                     size_t n_meta)
{
    return checkpoint_save_ex(path, net, opt, info, meta, n_meta, NULL, 0);
}

dpt_status checkpoint_save_ex(const char *path, const dpt_net *net, const dpt_optim *opt,
                              const dpt_checkpoint_info *info, const dpt_kv *meta, size_t n_meta,
                              const ckpt_tensor *extra, size_t n_extra)
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
    /* The optimizer's state buffers as optim/<name> (SGDM's optim/Velocity
     * as in every earlier format). */
    dpt_optim *mopt = (dpt_optim *)opt; /* the buffer accessor is non-const */
    size_t n_opt = opt ? dpt_optim_n(opt) : 0;
    char tname[64];
    for (size_t b = 0; s == DPT_OK && n_opt && b < dpt_optim_n_buffers(opt); b++) {
        int64_t shape[1] = {(int64_t)n_opt};
        const float *data = dpt_optim_buffer(mopt, b);
        snprintf(tname, sizeof tname, "optim/%s", dpt_optim_buffer_name(opt, b));
        s = dpt_st_writer_add(w, tname, "F32", 1, shape, data, n_opt * sizeof(float));
        crc = crc32(crc, (const Bytef *)data, (uInt)(n_opt * sizeof(float)));
    }
    /* Extra tensors (a language model's carried state) after the
     * optimizer's, in the checksum like every other. */
    for (size_t i = 0; s == DPT_OK && i < n_extra; i++) {
        int64_t shape[2] = {extra[i].rows, extra[i].cols};
        size_t bytes = (size_t)extra[i].rows * (size_t)extra[i].cols * sizeof(float);
        s = dpt_st_writer_add(w, extra[i].name, "F32", 2, shape, extra[i].data, bytes);
        crc = crc32(crc, (const Bytef *)extra[i].data, (uInt)bytes);
    }
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%ld", opt ? dpt_optim_step_count(opt) : 0L);
    char buf[8][64];
    snprintf(buf[0], sizeof buf[0], "%d", info->epoch);
    snprintf(buf[1], sizeof buf[1], "%ld", info->epoch_iteration);
    snprintf(buf[2], sizeof buf[2], "%ld", info->iteration);
    snprintf(buf[3], sizeof buf[3], "%" PRIu64, info->seed);
    snprintf(buf[4], sizeof buf[4], "%d", info->n_workers);
    snprintf(buf[6], sizeof buf[6], "%d", info->batch);
    snprintf(buf[7], sizeof buf[7], "%" PRIu64, info->n_train);
    char elapsed[64];
    snprintf(elapsed, sizeof elapsed, "%.17g", info->elapsed_s);
    const dpt_kv fixed[] = {
        {"format", CKPT_FORMAT}, {"spec", dpt_net_spec(net)}, {"epoch", buf[0]},
        {"epoch_iteration", buf[1]}, {"iteration", buf[2]}, {"seed", buf[3]},
        {"workers", buf[4]}, {"elapsed_s", elapsed}, {"batch", buf[6]}, {"train_images", buf[7]},
        {"optimizer", opt ? dpt_optim_name(opt) : ""},
        {"optim_step", step_text},
    };
    /* Every pair the CRC covers, sorted by key as the reader sees them;
     * batch and train_images only when known (0: not recorded). */
    const size_t n_fixed = sizeof fixed / sizeof *fixed;
    const dpt_kv **all = s == DPT_OK ? malloc((n_fixed + n_meta) * sizeof *all) : NULL;
    if (!all) {
        dpt_st_writer_free(w);
        return s != DPT_OK ? s : dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t k = 0;
    for (size_t i = 0; i < n_fixed; i++) {
        if ((!strcmp(fixed[i].key, "batch") && !info->batch) ||
            (!strcmp(fixed[i].key, "train_images") && !info->n_train) ||
            (!strncmp(fixed[i].key, "optim", 5) && !opt))
            continue;
        all[k++] = &fixed[i];
    }
    for (size_t i = 0; i < n_meta; i++)
        all[k++] = &meta[i];
    size_t n_all = k;
    qsort(all, n_all, sizeof *all, cmp_kv);
    for (size_t i = 0; s == DPT_OK && i < n_all; i++) {
        if (!strcmp(all[i]->key, "crc32")) {
            s = dpt_fail(DPT_ERR_ARG, "%s: metadata key \"crc32\" is reserved", path);
            break;
        }
        crc = crc_pair(crc, all[i]->key, all[i]->value);
        s = dpt_st_writer_meta(w, all[i]->key, all[i]->value);
    }
    free(all);
    snprintf(buf[5], sizeof buf[5], "%08lx", (unsigned long)crc);
    if (s == DPT_OK)
        s = dpt_st_writer_meta(w, "crc32", buf[5]);
    if (s == DPT_OK)
        s = dpt_st_writer_save(w, path);
    dpt_st_writer_free(w);
    return s;
}

/* A decimal integer in [min, max] (no sign games, no trailing bytes, no
 * overflow); 0 on success. */
static int parse_range(const char *v, long min, long max, long *out)
{
    if (!v || !*v || !(*v == '-' || (*v >= '0' && *v <= '9')))
        return -1;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end != '\0' || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

static int parse_u64(const char *v, uint64_t *out)
{
    if (!v || !(*v >= '0' && *v <= '9'))
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* A metadata number, or a message naming the key, its value and the range. */
static dpt_status meta_range(const dpt_st *st, const char *path, const char *key, long min,
                             long max, int required, long *out)
{
    const char *v = dpt_st_meta(st, key);
    if (!v && !required) {
        *out = 0;
        return DPT_OK;
    }
    if (!v)
        return dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"%s\" is missing", path, key);
    if (parse_range(v, min, max, out))
        return dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"%s\" is '%.40s', not an integer in [%ld, %ld]",
                        path, key, v, min, max);
    return DPT_OK;
}

/* Format, checksum and the numbers of the metadata of an open checkpoint
 * into *info. */
static dpt_status verify(const dpt_st *st, const char *path, dpt_checkpoint_info *info)
{
    dpt_status s = DPT_OK;
    const char *fmt = dpt_st_meta(st, "format"), *crc_text = dpt_st_meta(st, "crc32");
    int v1 = fmt && strcmp(fmt, CKPT_FORMAT_V1) == 0;
    if (!fmt || (!v1 && strcmp(fmt, CKPT_FORMAT) != 0) || !crc_text) {
        return dpt_fail(DPT_ERR_FORMAT, "%s: not a dptrain checkpoint (format '%.40s')", path,
                        fmt ? fmt : "missing");
    }
    /* The checksum covers the tensors in file order (the order they were
     * written in), then (v2) the metadata in key order. */
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < dpt_st_count(st); i++) {
        const dpt_st_tensor *t = dpt_st_at(st, i);
        crc = crc32(crc, (const Bytef *)t->data, (uInt)t->bytes);
    }
    for (size_t i = 0; !v1 && i < dpt_st_meta_count(st); i++) {
        const char *key, *value;
        dpt_st_meta_at(st, i, &key, &value);
        if (strcmp(key, "crc32") != 0)
            crc = crc_pair(crc, key, value);
    }
    char want[16];
    snprintf(want, sizeof want, "%08lx", (unsigned long)crc);
    if (strcmp(want, crc_text) != 0) {
        return dpt_fail(DPT_ERR_FORMAT, "%s: checksum mismatch (stored %.16s, %s %s): the file "
                        "is damaged or was edited", path, crc_text,
                        v1 ? "data" : "data and metadata", want);
    }
    long epoch, epoch_it, it, workers, batch, n_train_l;
    uint64_t seed = 0;
    const char *seed_text = dpt_st_meta(st, "seed"), *el = dpt_st_meta(st, "elapsed_s");
    if ((s = meta_range(st, path, "epoch", 1, CKPT_MAX_EPOCH, 1, &epoch)) ||
        (s = meta_range(st, path, "iteration", 0, CKPT_MAX_ITERATION, 1, &it)) ||
        (s = meta_range(st, path, "epoch_iteration", 0, it, 1, &epoch_it)) ||
        (s = meta_range(st, path, "workers", 1, CKPT_MAX_WORKERS, 1, &workers)) ||
        (s = meta_range(st, path, "batch", 1, CKPT_MAX_BATCH, 0, &batch)) ||
        (s = meta_range(st, path, "train_images", 1, LONG_MAX, 0, &n_train_l)))
        return s;
    if (parse_u64(seed_text, &seed)) {
        return dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"seed\" is '%.40s', not an integer in [0, %" PRIu64 "]",
                        path, seed_text ? seed_text : "missing", UINT64_MAX);
    }
    double elapsed = 0;
    if (el) {
        char *end;
        elapsed = strtod(el, &end);
        if (*end != '\0' || end == el || !(elapsed >= 0 && elapsed <= CKPT_MAX_ELAPSED)) {
            return dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"elapsed_s\" is '%.40s', not a number "
                            "of seconds in [0, %g]", path, el, CKPT_MAX_ELAPSED);
        }
    }
    *info = (dpt_checkpoint_info){(int)epoch, epoch_it, it, seed, (int)workers, elapsed,
                                  (int)batch, (uint64_t)n_train_l};
    return DPT_OK;
}

dpt_status dpt_checkpoint_read_info(const char *path, dpt_checkpoint_info *info)
{
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(path, &st);
    if (s == DPT_OK)
        s = verify(st, path, info);
    dpt_st_close(st);
    return s;
}

dpt_status dpt_checkpoint_read_optimizer(const char *path, const char **kind)
{
    dpt_st *st = NULL;
    dpt_checkpoint_info info;
    dpt_status s = dpt_st_open(path, &st);
    if (s == DPT_OK && (s = verify(st, path, &info)) == DPT_OK) {
        static const char *const names[] = {"sgdm", "adam", "adamw"};
        /* Checkpoints from before the interface hold SGDM's velocity. */
        const char *v = dpt_st_meta(st, "optimizer");
        *kind = v ? NULL : names[0];
        for (int i = 0; v && i < 3; i++)
            if (!strcmp(v, names[i]))
                *kind = names[i];
        if (!*kind)
            s = dpt_fail(DPT_ERR_FORMAT, "%s: metadata \"optimizer\" is '%.40s', not sgdm, adam "
                         "or adamw", path, v);
    }
    dpt_st_close(st);
    return s;
}

dpt_status dpt_checkpoint_load(const char *path, dpt_net *net, dpt_sgdm *opt,
                               dpt_checkpoint_info *info)
{
    dpt_optim o; /* a view of opt: the velocity is read into it */
    if (opt)
        optim_wrap_sgdm(&o, opt);
    return dpt_checkpoint_load_optim(path, net, opt ? &o : NULL, info);
}

dpt_status dpt_checkpoint_load_optim(const char *path, dpt_net *net, dpt_optim *opt,
                                     dpt_checkpoint_info *info)
{
    dpt_st *st = NULL;
    float *params = NULL, *state = NULL, *vel = NULL;
    long opt_step = 0;
    dpt_checkpoint_info got;
    dpt_status s = dpt_st_open(path, &st);
    if (s != DPT_OK)
        return s;
    if ((s = verify(st, path, &got)) != DPT_OK)
        goto done;
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
    size_t n_opt = opt ? dpt_optim_n(opt) : 0, n_buf = opt ? dpt_optim_n_buffers(opt) : 0;
    if (opt) {
        /* A checkpoint without "optimizer" is from before the interface:
         * SGDM's velocity only. */
        const char *kind = dpt_st_meta(st, "optimizer");
        const char *mine = dpt_optim_name(opt);
        if (!kind)
            kind = "sgdm";
        if (strcmp(kind, mine) != 0) {
            s = dpt_fail(DPT_ERR_ARG, "%s: the checkpoint was written with optimizer '%.40s', "
                         "this run uses '%s'; resume with the same optimizer", path, kind, mine);
            goto done;
        }
        if ((s = meta_range(st, path, "optim_step", 0, CKPT_MAX_ITERATION, 0, &opt_step)) != DPT_OK)
            goto done;
        if (!dpt_st_meta(st, "optim_step"))
            opt_step = got.iteration; /* v1/v2: one SGDM update per iteration */
        vel = malloc(n_buf * n_opt * sizeof(float) + 1);
        if (!vel) {
            s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
            goto done;
        }
        char tname[64];
        for (size_t b = 0; b < n_buf && n_opt; b++) {
            snprintf(tname, sizeof tname, "optim/%s", dpt_optim_buffer_name(opt, b));
            if ((s = dpt_st_read_f32(st, tname, vel + b * n_opt, n_opt)) != DPT_OK)
                goto done;
        }
        for (size_t b = 0; b < n_buf && n_opt; b++)
            memcpy(dpt_optim_buffer(opt, b), vel + b * n_opt, n_opt * sizeof(float));
        dpt_optim_set_step_count(opt, opt_step);
    }
    memcpy(dpt_net_params(net), params, np * sizeof(float));
    if (ns) /* a network without batch norm has no state buffer (NULL) */
        memcpy(dpt_net_state(net), state, ns * sizeof(float));
    *info = got;
done:
    free(params), free(state), free(vel);
    dpt_st_close(st);
    return s;
}

dpt_status checkpoint_read_rows(const char *path, const char *name, int64_t rows, int64_t cols,
                                int64_t first, int64_t count, float *out)
{
    dpt_st *st = NULL;
    dpt_checkpoint_info info;
    float *all = NULL;
    dpt_status s = dpt_st_open(path, &st);
    if (s != DPT_OK)
        return s;
    if ((s = verify(st, path, &info)) != DPT_OK)
        goto done;
    if (first < 0 || count < 0 || first + count > rows) {
        s = dpt_fail(DPT_ERR_ARG, "%s: rows %lld..%lld of '%s' [%lld, %lld]: out of range", path,
                     (long long)first, (long long)(first + count - 1), name, (long long)rows,
                     (long long)cols);
        goto done;
    }
    const dpt_st_tensor *t = dpt_st_get(st, name);
    if (!t || t->ndim != 2 || strcmp(t->dtype, "F32") != 0 || t->shape[0] != rows ||
        t->shape[1] != cols) {
        if (!t)
            s = dpt_fail(DPT_ERR_SHAPE, "%s: tensor '%s' is missing: the checkpoint is for "
                         "another run", path, name);
        else
            s = dpt_fail(DPT_ERR_SHAPE, "%s: tensor '%s' is %s of %d dimensions [%lld, %lld, ...], "
                         "this run needs F32 [%lld, %lld]", path, name, t->dtype, t->ndim,
                         (long long)(t->ndim > 0 ? t->shape[0] : 0),
                         (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)rows,
                         (long long)cols);
        goto done;
    }
    size_t n = (size_t)rows * (size_t)cols;
    if (!(all = malloc(n * sizeof *all + 1))) {
        s = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((s = dpt_st_read_f32(st, name, all, n)) != DPT_OK)
        goto done;
    if (count)
        memcpy(out, all + (size_t)first * (size_t)cols, (size_t)count * (size_t)cols * sizeof *out);
done:
    free(all);
    dpt_st_close(st);
    return s;
}

dpt_status checkpoint_read_meta(const char *path, const char *key, char *buf, size_t cap)
{
    dpt_st *st = NULL;
    dpt_checkpoint_info info;
    dpt_status s = dpt_st_open(path, &st);
    if (s == DPT_OK && (s = verify(st, path, &info)) == DPT_OK) {
        const char *v = dpt_st_meta(st, key);
        snprintf(buf, cap, "%s", v ? v : "");
    }
    dpt_st_close(st);
    return s;
}
