/* Fuzz safetensors loading: the reader, the model loader and the
 * checkpoint loader (into the example network). */
#include "core/safetensors.h"
#include "dptrain/train.h"
#include "fuzz_common.h"

static dpt_net *example;
static dpt_sgdm *opt;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 4 << 20)
        return 0;
    if (!example) {
        if (dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 1, 0, &example) != DPT_OK ||
            dpt_sgdm_new(dpt_net_n_params(example), 0.01f, 0.9f, 0, &opt) != DPT_OK)
            abort();
    }
    char path[512];
    if (!fuzz_file(data, n, "model.safetensors", path, sizeof path))
        return 0;
    dpt_st *st = NULL;
    if (dpt_st_open(path, &st) == DPT_OK) {
        for (size_t i = 0; i < dpt_st_count(st); i++) {
            const dpt_st_tensor *t = dpt_st_at(st, i);
            if (strcmp(t->dtype, "F32") == 0 && t->bytes <= (1u << 20)) {
                float *buf = malloc(t->bytes + 4);
                if (buf)
                    (void)dpt_st_read_f32(st, t->name, buf, t->bytes / 4);
                free(buf);
            }
        }
        (void)dpt_st_meta(st, "spec");
        dpt_st_close(st);
    }
    dpt_net *net = NULL;
    if (dpt_net_load(path, 1, &net) == DPT_OK)
        dpt_net_free(net);
    dpt_checkpoint_info info;
    (void)dpt_checkpoint_load(path, example, opt, &info);
    unlink(path);
    return 0;
}
