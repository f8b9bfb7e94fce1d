/* Private to libdptrain's train/ layer. */
#ifndef DPT_TRAIN_INTERNAL_H
#define DPT_TRAIN_INTERNAL_H

#include "dptrain/train.h"

/* The training position and facts in a checkpoint's metadata, verified as
 * dpt_checkpoint_load does (format, checksum over tensors and metadata,
 * every number in range), without a network: for checks made before the
 * workers start. */
dpt_status dpt_checkpoint_read_info(const char *path, dpt_checkpoint_info *info);
/* The optimizer's name ("sgdm", "adam", "adamw") of a verified checkpoint: for
 * checks made before the workers start. *kind is a static string. */
dpt_status dpt_checkpoint_read_optimizer(const char *path, const char **kind);

/* The device of a run for --device `want` ("auto", "cpu" or "gpu"), with
 * n_gpus usable GPUs (dpt_gpu_count()), `workers` the --workers asked for
 * (0: not given) and net a network of the run's spec (NULL: every layer is
 * taken to have GPU code). 1: GPUs; 0: CPU workers; -1: refused, with the
 * message set (an unknown device, --device gpu without a GPU, or with a
 * layer that has no GPU code: the message names it). When auto falls back
 * to CPU workers because of such a layer, notice[cap] gets a one-line
 * explanation to print (else it is empty). */
int dpt_train_pick_device(const char *want, int n_gpus, long workers, const dpt_net *net,
                          char *notice, size_t cap);

/* Where worker `rank`'s batch `batch` (0-based in the epoch) starts in the
 * global minibatch of its iteration in dpt_fit: the observations the
 * workers before it contribute to that iteration. Each epoch's n_obs
 * observations are cut into n_workers blocks (dpt_datastore_partition) and
 * worker j's batch b holds min(share[j], what is left of block j), so every
 * worker knows this without asking the others. */
long fit_global_first(size_t n_obs, int n_workers, const int *share, int rank, size_t batch);

#endif
