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

#endif
