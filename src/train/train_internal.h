/* Private to libdptrain's train/ layer. */
#ifndef DPT_TRAIN_INTERNAL_H
#define DPT_TRAIN_INTERNAL_H

#include "dptrain/train.h"

#include <stdatomic.h>

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

/* ---- what dpt_fit's worker loops share (fit.c, fit_seq.c) ---- */

/* One run of dpt_fit, seen by every worker. */
typedef struct fit_job {
    const dpt_fit_config *cfg;
    dpt_fit_result *result;
    dpt_progress_queue *queue; /* NULL: no progress callback */
    char *classes_json;        /* the class names as a JSON array (model metadata);
                                  a language model's vocabulary (code points) */
    atomic_int interrupted;    /* set by every worker that stopped on cfg->stop */
    uint64_t n_train;          /* training observations (characters of a text) */
    const char *unit;          /* what n_train counts: "images", "sequences", "characters" */
    /* Each local worker's dpt_comm_wait_seconds in microseconds + 1 (0:
     * not yet published), for worker 0's progress records. */
    atomic_llong wait_us[DPT_PROGRESS_MAX_WAIT];
} fit_job;

/* Every worker after each iteration: publish its time in collectives. */
void fit_publish_wait(fit_job *job, const dpt_comm *comm);
/* Worker 0: copy the published times into a progress record. */
void fit_fill_wait(fit_job *job, const dpt_comm *comm, dpt_progress *p);

double fit_now_s(void);
/* The shuffle seed of an epoch, the same on all workers. */
uint64_t fit_epoch_seed(uint64_t seed, int epoch);
/* Prefix the current error with where training stopped. */
dpt_status fit_at_iteration(dpt_status s, int epoch, long iteration);
/* Iterations of an epoch of n_obs observations partitioned among the
 * workers (the fewest batches of any worker). */
long fit_epoch_iterations(size_t n_obs, int batch, int n_workers);
/* The network of the run (cfg->spec, else default_spec), its optimizer,
 * the checkpoint to resume (into *start; cfg->resume NULL: the start of
 * training) and worker 0's learnables, state and optimizer state on every
 * worker. n_classes resolves outputs=classes (and vocab). max_batch: this
 * run's largest share. check (may be NULL) refuses a network that does not
 * fit the data, before the resume and before cfg->on_start. */
typedef dpt_status (*fit_check_fn)(const fit_job *job, dpt_net *net, const char *source);
dpt_status fit_setup(const fit_job *job, dpt_comm *comm, const char *default_spec, int n_classes,
                     int max_batch, fit_check_fn check, dpt_net **net, dpt_optim **opt,
                     dpt_checkpoint_info *start);
/* Worker 0: the model file, with meta (the task's keys) and the run's
 * facts (workers, iteration, epoch). */
dpt_status fit_save_model(const fit_job *job, dpt_net *net, int n_workers, long iterations,
                          const dpt_kv *meta, size_t n_meta);
/* Worker 0: a checkpoint, with meta (beside "classes" and "lr_schedule")
 * and, when carry is not NULL, the tensor "carry" [carry_rows, carry_cols]. */
dpt_status fit_save_checkpoint(const fit_job *job, dpt_net *net, dpt_optim *opt, int epoch,
                               long epoch_it, long iteration, int n_workers, double elapsed,
                               const dpt_kv *meta, size_t n_meta, const float *carry,
                               int carry_rows, size_t carry_cols);
/* The sequence trainers' worker (fit_seq.c): sequence folders and
 * language models. */
dpt_status fit_seq_worker(dpt_comm *comm, void *arg);

/* ---- checkpoints with extra tensors (checkpoint.c) ---- */

/* An extra 2-D float32 tensor of a checkpoint (e.g. "carry"). */
typedef struct ckpt_tensor {
    const char *name;
    int64_t rows, cols;
    const float *data;       /* [rows][cols] */
} ckpt_tensor;

/* dpt_checkpoint_save_optim with extra tensors after the optimizer's,
 * covered by the checksum. */
dpt_status checkpoint_save_ex(const char *path, const dpt_net *net, const dpt_optim *opt,
                              const dpt_checkpoint_info *info, const dpt_kv *meta, size_t n_meta,
                              const ckpt_tensor *extra, size_t n_extra);
/* Rows [first, first + count) of the extra tensor `name` of a verified
 * checkpoint, which must be F32 of shape [rows, cols] (else DPT_ERR_SHAPE
 * naming the file, the tensor and both shapes). out: [count][cols]. */
dpt_status checkpoint_read_rows(const char *path, const char *name, int64_t rows, int64_t cols,
                                int64_t first, int64_t count, float *out);
/* A metadata value of a verified checkpoint, copied into buf (cap bytes);
 * "" when absent. */
dpt_status checkpoint_read_meta(const char *path, const char *key, char *buf, size_t cap);

#endif
