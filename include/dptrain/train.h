/* dptrain training: one data-parallel step (forward, loss, backward,
 * aggregation of loss, gradients and batch-norm state, optimizer update).
 *
 * With comm NULL (or of size 1) the step is the ordinary single-worker step.
 * With N workers each calls dpt_train_step on its own share x [n_local, ...]
 * of the minibatch: the step is then collective. Each worker's loss and
 * gradients are weighted by n_local / M (M = Σ n_local) and summed, so the
 * result is the loss and gradient of the whole minibatch; batch-norm state is
 * pooled (DESIGN.md); every worker applies the same update and ends with
 * bit-identical learnables and state. */
#ifndef DPTRAIN_TRAIN_H
#define DPTRAIN_TRAIN_H

#include "dptrain/comm.h"
#include "dptrain/data.h"
#include "dptrain/net.h"
#include "dptrain/optim.h"

#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One training step with softmax cross-entropy against targets t [n_local, K]
 * (one-hot or soft rows). *loss receives the loss of the whole minibatch
 * (mean over its M observations), identical on every worker. *n_total (may
 * be NULL) receives M. Collective when comm has more than one worker. */
DPT_API dpt_status dpt_train_step(dpt_net *net, dpt_sgdm *opt, dpt_comm *comm, const float *x,
                                  const float *t, int n_local, double *loss, int *n_total);

/* dpt_train_step with any optimizer (dptrain/optim.h): the aggregated
 * gradient is clipped (when opt's clip norm is on) and opt's update applied,
 * the same on every worker. Set the learning rate of a schedule with
 * dpt_optim_set_lr before the call. */
DPT_API dpt_status dpt_train_step_optim(dpt_net *net, dpt_optim *opt, dpt_comm *comm,
                                        const float *x, const float *t, int n_local,
                                        double *loss, int *n_total);

/* The parts of dpt_train_step, for loops that need a custom loss: after
 * dpt_net_forward and dpt_net_backward with the loss gradient of this
 * worker's share already weighted by n_local / M, sum the gradients and the
 * weighted loss across workers and update the batch-norm state. */
DPT_API dpt_status dpt_train_aggregate(dpt_net *net, dpt_comm *comm, double *loss);

/* Where this worker's share lies in the global minibatch, for loops that
 * call dpt_net_forward themselves: *m_total receives M (every worker's
 * n_local summed) and *first this worker's first observation in it (the
 * shares of the workers before it). Pass *first to dpt_net_set_obs_offset,
 * with dpt_net_set_iteration, before the TRAIN forward, so dropout draws
 * what one worker on the whole minibatch would. One all-reduce; collective
 * when comm has more than one worker (NULL or one worker: 0 and n_local).
 * dpt_train_step does this itself. */
DPT_API dpt_status dpt_train_batch_position(dpt_comm *comm, int n_local, long *first,
                                            double *m_total);

/* Per-worker minibatch shares: floor(B/N) each, the remainder (B mod N) to
 * the first workers (the MATLAB example's rule). share[N] is filled. */
DPT_API void dpt_batch_shares(int batch, int n_workers, int *share);

/* The global minibatch for a GPU pool in the MATLAB example: the per-GPU
 * minibatch times the number of GPU workers; on CPU workers it is unchanged. */
DPT_API int dpt_batch_global(int batch, int n_workers, int on_gpu);

/* ---- the parallel step from one thread ---------------------------------------
 * N local workers, each with a replica of one network and its optimizer,
 * kept from step to step; dpt_parallel_step hands each worker its share of
 * a global minibatch (dpt_batch_shares, in order: worker 0 the first rows)
 * and runs dpt_train_step_optim on every worker (dpt_spmd_run, local
 * backend). For callers that cannot write a worker function, such as a
 * language binding whose code must not run on the library's threads; a C
 * program writes its own loop (examples/parallel_custom_loop.c). The
 * replicas stay bit-identical (DESIGN.md, invariant 2). One thread at a
 * time per dpt_parallel. */
typedef struct dpt_parallel dpt_parallel;

/* Build n_workers (1 to 1024) replicas of the image network `spec` (NULL:
 * dpt_net_default_spec; `source` names it in messages, may be NULL) for
 * n_classes classes and seed as dpt_net_from_spec, each sized for its share
 * of a global minibatch of at most max_batch (>= n_workers), and an
 * optimizer of `kind` for each (opts as dpt_optim_new; NULL: defaults).
 * sync_bn 1: synchronised batch norm. Errors as those calls; a sequence
 * network is DPT_ERR_ARG. *out owned by the caller (dpt_parallel_free). */
DPT_API dpt_status dpt_parallel_new(const char *spec, const char *source, int n_classes,
                                    int max_batch, uint64_t seed, int n_workers,
                                    dpt_optim_kind kind, const dpt_optim_opts *opts, int sync_bn,
                                    dpt_parallel **out);
/* Release the replicas and optimizers. NULL does nothing. */
DPT_API void dpt_parallel_free(dpt_parallel *p);
/* Workers (replicas); 0 for NULL. */
DPT_API int dpt_parallel_n_workers(const dpt_parallel *p);
/* Worker `worker`'s replica and optimizer, owned by p (NULL out of range).
 * Read from replica 0 (save, evaluate, predict: all are equal); a change
 * to learnables, state or the optimizer must be made on every replica. */
DPT_API dpt_net *dpt_parallel_net(dpt_parallel *p, int worker);
DPT_API dpt_optim *dpt_parallel_optim(dpt_parallel *p, int worker);
/* Set the learning rate of every worker's optimizer (a schedule's rate). */
DPT_API void dpt_parallel_set_lr(dpt_parallel *p, float lr);
/* One data-parallel step on a global minibatch x [n, C, H, W] with targets
 * t [n, K] (one-hot or soft rows, K the network's outputs), n_workers <= n
 * <= max_batch: worker j trains on its dpt_batch_shares rows. epoch and
 * iteration (1-based) key dropout as in dpt_fit. *loss (may be NULL)
 * receives the loss of the whole minibatch. Blocks until every worker is
 * done; the caller's thread is worker 0. A failing worker's status and
 * message ("worker K: ...") are returned. */
DPT_API dpt_status dpt_parallel_step(dpt_parallel *p, const float *x, const float *t, int n,
                                     long epoch, long iteration, double *loss);

/* ---- checkpoints -------------------------------------------------------------
 * A checkpoint is a safetensors file: the learnables and state tables (as in
 * a model file), the optimizer's state (SGDM's velocity "optim/Velocity";
 * see dpt_checkpoint_save_optim for the other kinds), and in the
 * metadata the spec, the position in training and a CRC-32 of the tensor
 * data and of the metadata (format "dptrain.checkpoint.v2"), verified on
 * load. Files of format v1 (CRC of the tensors only) still load. Every
 * number in the metadata is range-checked on load. Writes are atomic: the
 * previous checkpoint survives a crash or a full disk mid-write. */
typedef struct dpt_checkpoint_info {
    int epoch;              /* epoch to continue in (1-based) */
    long epoch_iteration;   /* iterations of that epoch already done: the
                               position in its data order */
    long iteration;         /* iterations done over the whole run */
    uint64_t seed;          /* seed of initialisation and of every epoch's shuffle */
    int n_workers;          /* worker count that wrote it */
    double elapsed_s;       /* training time so far */
    /* What a resumed run must match (0: not recorded, e.g. a checkpoint of
     * format v1; then not checked). */
    int batch;              /* global minibatch */
    uint64_t n_train;       /* training observations */
} dpt_checkpoint_info;

/* Save net, opt (may be NULL: no velocity) and info to path, atomically.
 * meta: extra metadata (e.g. "classes"), may be NULL. */
DPT_API dpt_status dpt_checkpoint_save(const char *path, const dpt_net *net, const dpt_sgdm *opt,
                                       const dpt_checkpoint_info *info, const dpt_kv *meta,
                                       size_t n_meta);
/* Load a checkpoint into an existing net (same spec) and opt (may be NULL).
 * Fails, naming the file and the problem, when the checksum does not match
 * (tensors or metadata edited), a number in the metadata is out of range,
 * the file is truncated, or a tensor is missing or of another shape (the
 * first mismatched tensor is named); net and opt are unchanged then. */
DPT_API dpt_status dpt_checkpoint_load(const char *path, dpt_net *net, dpt_sgdm *opt,
                                       dpt_checkpoint_info *info);

/* The same with any optimizer (opt may be NULL): its state buffers are
 * saved as "optim/<buffer name>" ("optim/Velocity" for SGDM, as before;
 * "optim/AverageGrad" and "optim/AverageSqGrad" for Adam) and its name
 * (dpt_optim_name) and step count in the metadata ("optimizer",
 * "optim_step"). */
DPT_API dpt_status dpt_checkpoint_save_optim(const char *path, const dpt_net *net,
                                             const dpt_optim *opt,
                                             const dpt_checkpoint_info *info,
                                             const dpt_kv *meta, size_t n_meta);
/* Load into net and opt (may be NULL) as dpt_checkpoint_load. A checkpoint
 * of another optimizer than opt's (dpt_optim_name: Adam and AdamW differ)
 * fails naming both (DPT_ERR_ARG); one
 * written before the optimizer interface (no "optimizer" in its metadata)
 * is SGDM's, with step count = its iteration. Every state buffer and the
 * step count are restored, so the next update is the one an uninterrupted
 * run would make; hyper-parameters (learning rate, betas) stay opt's. */
DPT_API dpt_status dpt_checkpoint_load_optim(const char *path, dpt_net *net, dpt_optim *opt,
                                             dpt_checkpoint_info *info);

/* ---- evaluation ----------------------------------------------------------- */

/* Classify every observation of ds with net in PREDICT mode, in batches of at
 * most dpt_net_max_batch(net). *accuracy receives the fraction correct;
 * confusion (may be NULL) receives K×K counts, row = true class, column =
 * predicted, K = dpt_datastore_n_classes(ds), which must not exceed the
 * network's outputs. Not collective. */
DPT_API dpt_status dpt_evaluate(dpt_net *net, const dpt_datastore *ds, double *accuracy,
                                size_t *confusion);

/* Classify every sequence of ds with net (a sequence network whose output
 * is one row per sequence, e.g. lstm output=last) in PREDICT mode, in
 * batches of at most dpt_net_max_batch(net), each padded to its longest
 * sequence (pad_left 1: padding first). *accuracy and confusion (may be
 * NULL; K×K, K = dpt_seqstore_n_classes(ds)) as dpt_evaluate. Changes the
 * network's steps (dpt_net_set_steps). Not collective. */
DPT_API dpt_status dpt_evaluate_seq(dpt_net *net, const dpt_seqstore *ds, int pad_left,
                                    double *accuracy, size_t *confusion);

/* Bits per character of a language model (input and output of t's
 * vocabulary size, output per time step) on text t: t cut into n_streams
 * streams (dpt_text_n_chunks) read in chunks of seq_len with the state
 * carried from chunk to chunk (stateful, from zero state), every
 * next-character target scored; *bpc = mean of -log2 p(target). Streams
 * beyond dpt_net_max_batch(net) are read in groups, each from zero state.
 * Leaves the network stateful with its carried state reset. DPT_ERR_ARG
 * when the text has no chunk of that many streams and steps. Not
 * collective. */
DPT_API dpt_status dpt_evaluate_text(dpt_net *net, const dpt_text *t, int n_streams, int seq_len,
                                     double *bpc);

/* The default network specs of the sequence trainers (static strings):
 * a character language model, `sequenceinput in size=vocab / lstm lstm1
 * units=256 / fc fc outputs=vocab / softmax sm` (vocab is the n_classes of
 * dpt_net_from_spec), and a sequence classifier of F features,
 * `sequenceinput in size=F / lstm lstm1 units=100 output=last / fc fc
 * outputs=classes / softmax sm`, written into buf (cap bytes). */
DPT_API const char *dpt_net_default_lm_spec(void);
DPT_API const char *dpt_net_default_seq_spec(int n_features, char *buf, size_t cap);

/* ---- the batteries-included loop (what `dptrain train` runs) --------------- */

/* Workers whose collective wait a progress record carries. */
#define DPT_PROGRESS_MAX_WAIT 64

/* A progress record, sent by worker 0 (MATLAB's DataQueue message). */
typedef struct dpt_progress {
    int epoch, epochs;        /* 1-based epoch, total epochs */
    long iteration;           /* 1-based, counted over the whole run */
    long iterations_per_epoch;
    double loss;              /* loss of the whole minibatch */
    double elapsed_s;         /* since training started */
    double images_per_s;      /* over the last iteration */
    double lr;
    double test_accuracy;     /* NaN unless measured at this record */
    int end_of_epoch;         /* 1: summary at the end of an epoch */
    int worker;               /* rank of the sender */
    long n_coalesced;         /* earlier records merged into this one */
    /* Language models: held-out bits per character, NaN unless measured at
     * this record (images_per_s then counts characters, sequence
     * classifiers count sequences). */
    double test_bpc;
    /* Seconds each worker has spent inside collective calls since the run
     * started (dpt_comm_wait_seconds; a worker slower than the others
     * makes them wait): comm_wait_s[w] for the first n_comm_wait workers
     * (at most DPT_PROGRESS_MAX_WAIT), as of its latest iteration; NaN for
     * a worker worker 0 cannot see (another MPI rank's process). */
    int n_comm_wait;
    double comm_wait_s[DPT_PROGRESS_MAX_WAIT];
} dpt_progress;

typedef void (*dpt_progress_fn)(const dpt_progress *p, void *arg);

/* ---- progress queue (MATLAB's DataQueue with afterEach) -------------------
 * Workers send small records; a client thread runs the callback on each, in
 * the order sent, never blocking the senders: the queue is bounded, and when
 * it is full an ordinary record replaces the newest queued ordinary record
 * (coalescing; the replaced one is counted in n_coalesced of the next record
 * delivered). End-of-epoch records are never coalesced or dropped. */
typedef struct dpt_progress_queue dpt_progress_queue;

/* A queue of `capacity` records (0: 1024) whose client thread calls
 * fn(record, arg) for each. *out owned by the caller. */
DPT_API dpt_status dpt_progress_queue_new(size_t capacity, dpt_progress_fn fn, void *arg,
                                          dpt_progress_queue **out);
/* Queue a copy of *p. Never blocks on the callback; thread-safe (any worker
 * thread may send). */
DPT_API void dpt_progress_send(dpt_progress_queue *q, const dpt_progress *p);
/* Records coalesced so far because the queue was full. */
DPT_API size_t dpt_progress_coalesced(const dpt_progress_queue *q);
/* Deliver every queued record, stop the client thread and free the queue
 * (a polled queue: free it, with the records not taken). NULL does nothing. */
DPT_API void dpt_progress_queue_free(dpt_progress_queue *q);

/* A queue without a client thread: records wait, in the order sent (with
 * the same coalescing when full), until the owner takes them with
 * dpt_progress_queue_poll on a thread of its choosing. For callers that
 * must run the callback on one thread of their own (a language binding
 * whose code may not run on the library's threads: the Python package
 * polls from its main thread while dpt_fit runs on another). *out owned
 * by the caller (dpt_progress_queue_free). */
DPT_API dpt_status dpt_progress_queue_new_polled(size_t capacity, dpt_progress_queue **out);

/* Take the oldest record of a polled queue into *out: 1 when one was
 * taken, 0 when none came within timeout_ms milliseconds (0: do not wait;
 * a wait may end early, so poll again) or q is not a polled queue.
 * Thread-safe against senders; one thread polls. */
DPT_API int dpt_progress_queue_poll(dpt_progress_queue *q, dpt_progress *out, long timeout_ms);

/* A dpt_progress_fn that sends *p to the queue given as its argument
 * (dpt_progress_send): set dpt_fit_config.progress to it and
 * progress_arg to a queue, so records reach a polled queue. */
DPT_API void dpt_progress_forward(const dpt_progress *p, void *queue);

typedef struct dpt_fit_config {
    int version;                  /* DPT_FIT_CONFIG_VERSION */
    const char *spec;             /* network spec text (NULL: the default) */
    const char *spec_source;      /* its name for messages */
    const dpt_datastore *train;   /* borrowed */
    const dpt_datastore *test;    /* borrowed; may be NULL; its labels are matched to
                                   * train's by class name (dpt_datastore_match_classes) */
    int epochs;                   /* 20 */
    int batch;                    /* global minibatch, 128 */
    float lr, momentum, weight_decay; /* 0.01, 0.9, 0 */
    uint64_t seed;                /* 0 */
    dpt_spmd_config spmd;         /* workers and backend */
    int sync_bn;                  /* 1: synchronised batch norm */
    int prefetch;                 /* 1: decode the next batch in the background */
    int eval_every_epoch;         /* 1: test accuracy after every epoch */
    dpt_progress_fn progress;     /* called on worker 0 after every iteration */
    void *progress_arg;
    const char *model_out;        /* path of model.safetensors (NULL: not saved) */
    const char *const *class_names; /* [n_classes] for the model's metadata */
    const char *checkpoint_out;   /* path of checkpoint.safetensors (NULL: none) */
    long checkpoint_every;        /* iterations between checkpoints (0: only at
                                     the end); one is always written at the end */
    const char *resume;           /* checkpoint to continue from (NULL: start) */
    int use_gpu;                  /* 1: every worker trains on its GPU
                                     (dpt_gpu_for_worker; see dptrain/gpu.h) */
    /* A stop request, owned by the caller (NULL: none), typically set to the
     * signal number by a SIGINT/SIGTERM handler. The workers look at it at
     * every iteration boundary and agree on it in the all-workers-have-data
     * all-reduce, so all of them stop after the same iteration and none is
     * left waiting in a collective; no file is being written then. dpt_fit
     * then returns DPT_ERR_INTERRUPTED without saving the model, and
     * dpt_fit_result says where it stopped. Under MPI, set it in every rank's
     * process or in none (mpirun forwards SIGINT and SIGTERM to every rank). */
    volatile sig_atomic_t *stop;
    /* Called once, by worker 0, after every input has been loaded and
     * checked (network, checkpoint to resume) and before the first iteration,
     * so before any output file is written (NULL: none); a status other than
     * DPT_OK, with its message set by dpt_fail, fails the run. The CLI clears
     * an earlier run's files from the output folder here. */
    dpt_status (*on_start)(void *arg);
    void *on_start_arg;
    /* ---- version 2: the optimizer (a version-1 config trains with SGDM,
     * a constant rate and no clipping) ---- */
    dpt_optim_kind optimizer;     /* DPT_OPTIM_SGDM; lr above is its base rate
                                     (set 0.001 for Adam, its usual default) */
    double beta1, beta2;          /* Adam: 0.9, 0.999 */
    float epsilon;                /* Adam: 1e-8 */
    int decoupled;                /* Adam: 1 = AdamW (weight_decay decoupled) */
    dpt_lr_schedule lr_schedule;  /* constant; the rate of each iteration is
                                     dpt_lr_at(&lr_schedule, lr, epoch, it,
                                     iterations per epoch, epochs) */
    double clip_norm;             /* > 0: clip the aggregated gradient's global
                                     L2 norm to this; 0: off */
    /* Random augmentation of the training images (NULL: none; borrowed,
     * checked by dpt_fit): observation k of the global minibatch of
     * iteration i (1-based over the run) in epoch e is transformed by the
     * key dpt_rng_key(seed, e, i, DPT_AUGMENT_STREAM, k), on each worker's
     * prefetch thread, so any worker count draws the same transforms and a
     * resumed run continues exactly. Test data is never augmented. */
    const dpt_augment *augment;
    /* ---- version 3: sequence data (a version-1 or 2 config trains on
     * images). Give exactly one of train, seq_train and text_train. ---- */
    /* A sequence classifier (borrowed): every epoch is shuffled and
     * partitioned as images are; each worker pads its batch to its longest
     * sequence (pad_left) with the lengths given to dpt_net_set_steps.
     * seq_test (may be NULL) must have train's classes, in the same order,
     * and its features. */
    const dpt_seqstore *seq_train, *seq_test;
    /* A character language model (borrowed): text_train is cut into B =
     * batch streams; worker w owns dpt_text_stream_share's streams for the
     * whole run and carries their recurrent state from one iteration to the
     * next (stateful mode, reset at each epoch's start); iteration k of an
     * epoch feeds chunk k of every stream (seq_len steps, one-hot inputs
     * and next-character targets). text_test (may be NULL; the training
     * vocabulary) gives the held-out bits per character after every epoch
     * (dpt_evaluate_text). Checkpoints hold the carried state of all B
     * streams as the tensor "carry" [B, dpt_net_carry_floats]. */
    const dpt_text *text_train, *text_test;
    int seq_len;                  /* language model: steps per iteration, 64 */
    int pad_left;                 /* sequence folders: 1 = padding first
                                     (--sequence-padding left), 0 = last */
    /* ---- version 4 (a version-1 to 3 config trains in fp32) ---- */
    int precision;                /* a dpt_precision (dptrain/gpu.h) for the
                                     products of GPU workers, DPT_PRECISION_FP32
                                     (0); dpt_fit refuses another with use_gpu 0:
                                     CPU workers compute in float32 only */
    int cuda_graph;               /* GPU workers: 1 (default) each step's forward,
                                     loss and backward as a CUDA graph where the
                                     network allows it (dpt_gpu_options.cuda_graph),
                                     0 eager launches; no effect on CPU workers */
} dpt_fit_config;

#define DPT_FIT_CONFIG_VERSION 4
#define DPT_FIT_CONFIG_INIT                                                             \
    {DPT_FIT_CONFIG_VERSION, NULL, NULL, NULL, NULL, 20, 128, 0.01f, 0.9f, 0.0f, 0,       \
     DPT_SPMD_CONFIG_INIT, 0, 1, 0, NULL, NULL, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL, NULL, \
     DPT_OPTIM_SGDM, 0.9, 0.999, 1e-8f, 0, DPT_LR_SCHEDULE_INIT, 0.0, NULL,              \
     NULL, NULL, NULL, NULL, 64, 0, 0, 1}

typedef struct dpt_fit_result {
    double final_loss;
    double test_accuracy;         /* NaN without a test set */
    long iterations;
    double train_seconds;
    int n_workers;
    /* Filled by worker 0 also when dpt_fit fails or is interrupted: */
    int epoch;                    /* the epoch training was in when it ended */
    long start_iteration;         /* iterations done before this call (resume) */
    long checkpoint_iteration;    /* iteration of the last checkpoint this call
                                     wrote, -1: none */
    double test_bpc;              /* language model: held-out bits per
                                     character at the end; NaN otherwise */
} dpt_fit_result;

/* Train a network as the MATLAB example does: per epoch, shuffle the training
 * data with a seed all workers share, partition it among the workers, and
 * loop while every worker has data; each iteration is dpt_train_step. Then
 * worker 0 saves the model and classifies the test set. Sequence folders
 * and language models (version 3: seq_train, text_train) train the same
 * way; a language model's test result is test_bpc, and its model file's
 * metadata holds "task": "language_model", "vocab" (the code points, a
 * JSON array in index order) and "seq_len"; a sequence classifier's
 * "task": "sequence_classification", "features" and "classes". When cfg->stop is
 * set, training stops at the next iteration boundary and dpt_fit returns
 * DPT_ERR_INTERRUPTED ("interrupted at epoch E, iteration I"); result->
 * iterations, epoch and checkpoint_iteration then tell where (worker 0's
 * process). */
DPT_API dpt_status dpt_fit(const dpt_fit_config *cfg, dpt_fit_result *result);

#ifdef __cplusplus
}
#endif
#endif
