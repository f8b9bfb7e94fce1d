/* --device auto|cpu|gpu: which device a run trains on (src/cli/cmd_train.c),
 * decided here so that the decision, and its messages, can be tested on a
 * machine without a GPU (tests/test_gpu.c passes n_gpus itself). */
#include "dptrain/gpu.h"
#include "train/train_internal.h"

#include <stdio.h>
#include <string.h>

int dpt_train_pick_device(const char *want, int n_gpus, long workers, const dpt_net *net,
                          char *notice, size_t cap)
{
    if (notice && cap)
        notice[0] = '\0';
    int is_auto = strcmp(want, "auto") == 0, is_gpu = strcmp(want, "gpu") == 0;
    if (!is_auto && !is_gpu && strcmp(want, "cpu") != 0) {
        dpt_fail(DPT_ERR_ARG, "--device: unknown device '%s' (auto, cpu, gpu)", want);
        return -1;
    }
    if (!is_auto && !is_gpu)
        return 0;
    /* auto with more --workers than GPUs: the user asked for CPU workers. */
    if (is_auto && (n_gpus < 1 || workers > n_gpus))
        return 0;
    if (is_gpu && n_gpus < 1) {
        dpt_fail(DPT_ERR_UNSUPPORTED, "--device gpu: no usable GPU (%s)",
                 dpt_gpu_have_cuda() ? "no CUDA device found"
                                     : "this dptrain was built without CUDA");
        return -1;
    }
    if (net && dpt_net_gpu_supported(net) != DPT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", dpt_last_error());
        if (is_gpu) {
            dpt_fail(DPT_ERR_UNSUPPORTED, "--device gpu: %s", why);
            return -1;
        }
        if (notice && cap)
            snprintf(notice, cap, "device: CPU workers, not the %d GPU%s: %s", n_gpus,
                     n_gpus == 1 ? "" : "s", why);
        return 0;
    }
    return 1;
}
