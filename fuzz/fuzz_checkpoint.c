/* Fuzz checkpoint metadata: the input is the metadata of a checkpoint of a
 * small network, one "key=value" per line (a value may hold "\n" escapes
 * as the two characters backslash, n). The tensors are real, and the CRC is
 * recomputed over tensors and metadata as dptrain writes it, so the input
 * reaches the range checks and the resume logic rather than stopping at the
 * checksum; a first line "!raw" keeps the input's own "crc32" (or none).
 * A checkpoint that loads must hold numbers in range. */
#include "core/safetensors.h"
#include "dptrain/train.h"
#include "train/train_internal.h"
#include "fuzz_common.h"

#include <zlib.h>

static dpt_net *ck_net;
static dpt_sgdm *ck_opt;

static const char ck_spec[] = "input in size=6x6x1\nconv c1 filter=3 filters=2\nbatchnorm bn\n"
                              "relu r\nfc f outputs=3\nsoftmax s\n";

/* The tensors of ck_net and its optimizer into w. */
static int ck_add_tensors(dpt_st_writer *w)
{
    for (int tab = 0; tab < 2; tab++) {
        size_t n = tab ? dpt_net_n_state(ck_net) : dpt_net_n_learnables(ck_net);
        float *base = tab ? dpt_net_state(ck_net) : dpt_net_params(ck_net);
        for (size_t i = 0; i < n; i++) {
            const dpt_param_info *e = tab ? dpt_net_state_info(ck_net, i) : dpt_net_learnable(ck_net, i);
            int64_t shape[DPT_MAX_DIMS];
            for (int d = 0; d < e->ndim; d++)
                shape[d] = e->shape[d];
            if (dpt_st_writer_add(w, e->name, "F32", e->ndim, shape, base + e->offset,
                                  e->n * sizeof(float)) != DPT_OK)
                return 0;
        }
    }
    int64_t shape[1] = {(int64_t)ck_opt->n};
    return dpt_st_writer_add(w, "optim/Velocity", "F32", 1, shape, ck_opt->velocity,
                             ck_opt->n * sizeof(float)) == DPT_OK;
}

/* Write a checkpoint with the metadata in keys/values (n pairs) and, when
 * crc is not NULL, a "crc32" of crc. */
static int ck_write(const char *path, char **keys, char **values, size_t n, const char *crc)
{
    dpt_st_writer *w = NULL;
    if (dpt_st_writer_new(&w) != DPT_OK)
        return 0;
    int ok = ck_add_tensors(w);
    for (size_t i = 0; ok && i < n; i++)
        if (!(crc && strcmp(keys[i], "crc32") == 0))
            ok = dpt_st_writer_meta(w, keys[i], values[i]) == DPT_OK;
    if (ok && crc)
        ok = dpt_st_writer_meta(w, "crc32", crc) == DPT_OK;
    ok = ok && dpt_st_writer_save(w, path) == DPT_OK;
    dpt_st_writer_free(w);
    return ok;
}

/* The checksum of the file at path: tensors in file order, then (but for
 * format v1) the metadata but crc32 in key order, as key NUL value NUL. */
static int ck_crc(const char *path, char *out, size_t cap)
{
    dpt_st *st = NULL;
    if (dpt_st_open(path, &st) != DPT_OK)
        return 0;
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < dpt_st_count(st); i++) {
        const dpt_st_tensor *t = dpt_st_at(st, i);
        crc = crc32(crc, (const Bytef *)t->data, (uInt)t->bytes);
    }
    const char *fmt = dpt_st_meta(st, "format");
    int v1 = fmt && strcmp(fmt, "dptrain.checkpoint.v1") == 0;
    for (size_t i = 0; !v1 && i < dpt_st_meta_count(st); i++) {
        const char *k, *v;
        dpt_st_meta_at(st, i, &k, &v);
        if (strcmp(k, "crc32") == 0)
            continue;
        crc = crc32(crc, (const Bytef *)k, (uInt)strlen(k) + 1);
        crc = crc32(crc, (const Bytef *)v, (uInt)strlen(v) + 1);
    }
    dpt_st_close(st);
    snprintf(out, cap, "%08lx", (unsigned long)crc);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 1 << 16)
        return 0;
    if (!ck_net) {
        if (dpt_net_from_spec(ck_spec, "<fuzz>", 3, 1, 0, &ck_net) != DPT_OK ||
            dpt_sgdm_new(dpt_net_n_params(ck_net), 0.01f, 0.9f, 0, &ck_opt) != DPT_OK)
            abort();
    }
    /* Split into lines and key=value pairs; "\n" escapes become newlines
     * (the spec is several lines). "@spec" stands for this network's spec. */
    char *text = malloc(n + 1);
    char **keys = calloc(n / 2 + 2, sizeof *keys), **values = calloc(n / 2 + 2, sizeof *values);
    if (!text || !keys || !values)
        goto out;
    memcpy(text, data, n);
    text[n] = '\0';
    size_t np = 0;
    int raw = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strcmp(line, "!raw") == 0) {
            raw = 1;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *v = eq + 1, *o = v;
        for (char *p = v; *p; p++) {
            if (p[0] == '\\' && p[1] == 'n')
                *o++ = '\n', p++;
            else
                *o++ = *p;
        }
        *o = '\0';
        keys[np] = line;
        values[np] = strcmp(v, "@spec") == 0 ? (char *)dpt_net_spec(ck_net) : v;
        np++;
    }
    char path[512], crc[16];
    if (!fuzz_file((const uint8_t *)"", 0, "ckpt.safetensors", path, sizeof path))
        goto out;
    /* Duplicate or empty keys make the writer refuse: nothing to load. */
    if (!ck_write(path, keys, values, np, raw ? NULL : "00000000"))
        goto gone;
    if (!raw && !(ck_crc(path, crc, sizeof crc) && ck_write(path, keys, values, np, crc)))
        goto gone;
    dpt_checkpoint_info info, info2;
    dpt_status s1 = dpt_checkpoint_read_info(path, &info);
    dpt_status s2 = dpt_checkpoint_load(path, ck_net, ck_opt, &info2);
    /* What loads is in range, and both entry points agree. */
    if (s1 == DPT_OK && (info.epoch < 1 || info.epoch_iteration < 0 ||
                         info.epoch_iteration > info.iteration || info.n_workers < 1 ||
                         info.batch < 0 || !(info.elapsed_s >= 0)))
        abort();
    if (s2 == DPT_OK &&
        (s1 != DPT_OK || info.epoch != info2.epoch || info.iteration != info2.iteration ||
         info.epoch_iteration != info2.epoch_iteration || info.seed != info2.seed ||
         info.n_workers != info2.n_workers || info.batch != info2.batch ||
         info.n_train != info2.n_train))
        abort();
gone:
    unlink(path);
out:
    free(text);
    free(keys);
    free(values);
    return 0;
}
