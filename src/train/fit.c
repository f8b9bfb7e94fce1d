/* The MATLAB example's training loop (DESIGN.md, steps 4-7) as one call,
 * and evaluation. Each worker runs fit_worker; worker 0 reports progress,
 * saves the model and measures test accuracy. */
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "train/train_internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double fit_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A different, reproducible shuffle seed per epoch, the same on all workers. */
uint64_t fit_epoch_seed(uint64_t seed, int epoch)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(epoch + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

dpt_status dpt_evaluate(dpt_net *net, const dpt_datastore *ds, double *accuracy, size_t *confusion)
{
    int k_ds = dpt_datastore_n_classes(ds), k_net = dpt_net_n_outputs(net);
    if (k_ds > k_net)
        return dpt_fail(DPT_ERR_SHAPE, "evaluate: the data has %d classes, the network %d outputs",
                        k_ds, k_net);
    int chw[3];
    dpt_net_input_shape(net, chw);
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = dpt_net_max_batch(net);
    o.channels = chw[0], o.height = chw[1], o.width = chw[2];
    dpt_mbq *q = NULL;
    dpt_status s = dpt_mbq_new(ds, &o, &q);
    if (s != DPT_OK)
        return s;
    int *pred = malloc((size_t)o.batch_size * sizeof *pred);
    if (!pred) {
        dpt_mbq_free(q);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    if (confusion)
        memset(confusion, 0, (size_t)k_ds * k_ds * sizeof *confusion);
    size_t correct = 0, total = 0;
    while (s == DPT_OK && dpt_mbq_has_data(q)) {
        dpt_batch b;
        const float *y;
        if ((s = dpt_mbq_next(q, &b)) != DPT_OK)
            break;
        if ((s = dpt_net_forward(net, b.x.data, b.n, DPT_MODE_PREDICT, &y)) != DPT_OK)
            break;
        dpt_argmax_rows(y, b.n, k_net, pred);
        for (int i = 0; i < b.n; i++) {
            correct += pred[i] == b.labels[i];
            if (confusion && pred[i] < k_ds)
                confusion[(size_t)b.labels[i] * k_ds + pred[i]]++;
        }
        total += (size_t)b.n;
    }
    free(pred);
    dpt_mbq_free(q);
    if (s == DPT_OK)
        *accuracy = total ? (double)correct / (double)total : NAN;
    return s;
}

/* The class names as a JSON array of strings (cJSON does the escaping);
 * missing names become "0".."K-1". Freed with cJSON_free. */
static char *classes_json(const dpt_fit_config *cfg, int n_classes)
{
    cJSON *arr = cJSON_CreateArray();
    for (int k = 0; arr && k < n_classes; k++) {
        char fallback[16];
        const char *name = cfg->class_names ? cfg->class_names[k] : NULL;
        if (!name) {
            snprintf(fallback, sizeof fallback, "%d", k);
            name = fallback;
        }
        cJSON *item = cJSON_CreateString(name);
        if (!item || !cJSON_AddItemToArray(arr, item)) {
            cJSON_Delete(item);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    char *text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return text;
}

/* Worker 0 saves the model with the task's metadata and the run's facts. */
void fit_publish_wait(fit_job *job, const dpt_comm *comm)
{
    int r = dpt_comm_rank(comm);
    if (r >= 0 && r < DPT_PROGRESS_MAX_WAIT)
        atomic_store_explicit(&job->wait_us[r], (long long)(dpt_comm_wait_seconds(comm) * 1e6) + 1,
                              memory_order_relaxed);
}

void fit_fill_wait(fit_job *job, const dpt_comm *comm, dpt_progress *p)
{
    int n = dpt_comm_size(comm);
    p->n_comm_wait = n < DPT_PROGRESS_MAX_WAIT ? n : DPT_PROGRESS_MAX_WAIT;
    for (int w = 0; w < p->n_comm_wait; w++) {
        long long v = atomic_load_explicit(&job->wait_us[w], memory_order_relaxed);
        p->comm_wait_s[w] = v > 0 ? (double)(v - 1) * 1e-6 : NAN;
    }
}

dpt_status fit_save_model(const fit_job *job, dpt_net *net, int n_workers, long iterations,
                          const dpt_kv *meta, size_t n_meta)
{
    char workers[32], iters[32], epochs[32];
    snprintf(workers, sizeof workers, "%d", n_workers);
    snprintf(iters, sizeof iters, "%ld", iterations);
    snprintf(epochs, sizeof epochs, "%d", job->cfg->epochs);
    dpt_kv all[16];
    size_t n = 0;
    for (size_t i = 0; i < n_meta && n < 13; i++)
        all[n++] = meta[i];
    all[n++] = (dpt_kv){"workers", workers};
    all[n++] = (dpt_kv){"iteration", iters};
    all[n++] = (dpt_kv){"epoch", epochs};
    return dpt_net_save(net, job->cfg->model_out, all, n);
}

dpt_status fit_save_checkpoint(const fit_job *job, dpt_net *net, dpt_optim *opt, int epoch,
                               long epoch_it, long iteration, int n_workers, double elapsed,
                               const dpt_kv *meta, size_t n_meta, const float *carry,
                               int carry_rows, size_t carry_cols)
{
    /* A GPU network's learnables and optimizer state live on the device. */
    if (dpt_net_device(net) >= 0) {
        dpt_status s = dpt_net_sync_to_host(net);
        if (s != DPT_OK)
            return s;
    }
    dpt_checkpoint_info info = {epoch, epoch_it, iteration, job->cfg->seed, n_workers, elapsed,
                                job->cfg->batch, job->n_train};
    /* The schedule for the record: its position is the epoch and
     * iteration above, from which a resumed run computes the same rates. */
    char sched[160];
    dpt_lr_schedule_format(&job->cfg->lr_schedule, sched, sizeof sched);
    dpt_kv all[16] = {{job->cfg->text_train ? "vocab" : "classes", job->classes_json},
                      {"lr_schedule", sched}};
    size_t n = 2;
    for (size_t i = 0; i < n_meta && n < 16; i++)
        all[n++] = meta[i];
    ckpt_tensor extra = {"carry", carry_rows, (int64_t)carry_cols, carry};
    return checkpoint_save_ex(job->cfg->checkpoint_out, net, opt, &info, all, n, &extra,
                              carry ? 1 : 0);
}

static dpt_status save_checkpoint(const fit_job *job, dpt_net *net, dpt_optim *opt, int epoch,
                                  long epoch_it, long iteration, int n_workers, double elapsed)
{
    return fit_save_checkpoint(job, net, opt, epoch, epoch_it, iteration, n_workers, elapsed,
                               NULL, 0, NULL, 0, 0);
}

/* What a resumed run must share with the run that wrote the checkpoint for
 * the continuation to be the same training: the seed (the split and every
 * epoch's shuffle), the training data, and mid-epoch the minibatch (the
 * position in the epoch counts minibatches). --epochs, --workers, --lr and
 * the like may change. */
static dpt_status check_resume(const fit_job *job, const dpt_checkpoint_info *start)
{
    const dpt_fit_config *cfg = job->cfg;
    const char *path = cfg->resume;
    const char *kind = NULL, *mine = cfg->optimizer == DPT_OPTIM_ADAM && cfg->decoupled
                                         ? "adamw" : dpt_optim_kind_name(cfg->optimizer);
    dpt_status s = dpt_checkpoint_read_optimizer(path, &kind);
    if (s != DPT_OK)
        return s;
    if (strcmp(kind, mine) != 0)
        return dpt_fail(DPT_ERR_ARG, "--optimizer: the checkpoint %s was written with --optimizer "
                        "%s; this run uses %s (resuming needs the same optimizer)", path, kind,
                        mine);
    if (start->seed != cfg->seed)
        return dpt_fail(DPT_ERR_ARG, "--seed: the checkpoint %s was written with --seed %" PRIu64
                        "; resuming needs the same (it sets the train/test split and the "
                        "shuffles)", path, start->seed);
    uint64_t n = job->n_train;
    if (start->n_train && start->n_train != n)
        return dpt_fail(DPT_ERR_ARG, "--data: the checkpoint %s was trained on %" PRIu64
                        " %s, this run has %" PRIu64 "; resuming needs the same --data, --split "
                        "and --test", path, start->n_train, job->unit, n);
    if (start->batch && start->batch != cfg->batch && start->epoch_iteration > 0)
        return dpt_fail(DPT_ERR_ARG, "--batch: the checkpoint %s was written with --batch %d; "
                        "resuming mid-epoch (after iteration %ld of epoch %d) needs the same",
                        path, start->batch, start->epoch_iteration, start->epoch);
    if (cfg->text_train && start->epoch_iteration > 0) {
        /* Mid-epoch, the position counts chunks of --seq-len characters. */
        char have[32];
        dpt_status s2 = checkpoint_read_meta(path, "seq_len", have, sizeof have);
        if (s2 != DPT_OK)
            return s2;
        if (atoi(have) != cfg->seq_len)
            return dpt_fail(DPT_ERR_ARG, "--seq-len: the checkpoint %s was written with --seq-len "
                            "%.20s; resuming mid-epoch (after iteration %ld of epoch %d) needs "
                            "the same", path, have[0] ? have : "(none)", start->epoch_iteration,
                            start->epoch);
    }
    return DPT_OK;
}

/* Iterations of one epoch of n_obs observations: each worker's block of
 * the partition in batches of its share, the fewest batches of any worker
 * (the loop stops when one runs out). */
long fit_epoch_iterations(size_t n_obs, int batch, int n_workers)
{
    long fewest = -1;
    for (int j = 0; j < n_workers; j++) {
        size_t part = n_obs / (size_t)n_workers + ((size_t)j < n_obs % (size_t)n_workers);
        size_t share = (size_t)(batch / n_workers + (j < batch % n_workers));
        long k = share ? (long)((part + share - 1) / share) : 0;
        if (fewest < 0 || k < fewest)
            fewest = k;
    }
    return fewest > 0 ? fewest : 1;
}

/* Prefix the current error with where training stopped. */
dpt_status fit_at_iteration(dpt_status s, int epoch, long iteration)
{
    char msg[768];
    snprintf(msg, sizeof msg, "%s", dpt_last_error());
    return dpt_fail(s, "epoch %d, iteration %ld: %s", epoch, iteration, msg);
}

long fit_global_first(size_t n_obs, int n_workers, const int *share, int rank, size_t batch)
{
    size_t n = n_obs, N = (size_t)n_workers;
    long first = 0;
    for (int j = 0; j < rank; j++) {
        size_t block = n / N + ((size_t)j < n % N ? 1 : 0), m = (size_t)share[j];
        size_t done = batch * m;
        first += (long)(done >= block ? 0 : block - done < m ? block - done : m);
    }
    return first;
}

/* The augmentation's position callback (dpt_mbq_options.augment_first). */
typedef struct global_pos {
    size_t n_obs;
    int n_workers, rank;
    const int *share;
} global_pos;

static long first_in_global_batch(size_t batch, void *arg)
{
    const global_pos *g = arg;
    return fit_global_first(g->n_obs, g->n_workers, g->share, g->rank, batch);
}

dpt_status fit_setup(const fit_job *job, dpt_comm *comm, const char *default_spec, int n_classes,
                     int max_batch, fit_check_fn check, dpt_net **out_net, dpt_optim **out_opt,
                     dpt_checkpoint_info *start)
{
    const dpt_fit_config *cfg = job->cfg;
    int rank = dpt_comm_rank(comm), n_workers = dpt_comm_size(comm);
    dpt_net *net = NULL;
    dpt_optim *opt = NULL;
    const char *source = cfg->spec_source ? cfg->spec_source : "<default spec>";
    dpt_status s = dpt_net_from_spec(cfg->spec ? cfg->spec : default_spec, source, n_classes,
                                     max_batch, cfg->seed, &net);
    if (s != DPT_OK || (check && (s = check(job, net, source)) != DPT_OK))
        goto done;
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.lr = cfg->lr, oo.momentum = cfg->momentum, oo.weight_decay = cfg->weight_decay;
    oo.beta1 = cfg->beta1, oo.beta2 = cfg->beta2, oo.eps = cfg->epsilon;
    oo.decoupled = cfg->decoupled, oo.clip_norm = cfg->clip_norm;
    if ((s = dpt_optim_new(cfg->optimizer, dpt_net_n_params(net), &oo, &opt)) != DPT_OK)
        goto done;
    *start = (dpt_checkpoint_info){1, 0, 0, cfg->seed, n_workers, 0, cfg->batch, 0};
    if (cfg->resume && (s = dpt_checkpoint_load_optim(cfg->resume, net, opt, start)) != DPT_OK)
        goto done;
    /* Every worker starts from worker 0's learnables, state and optimizer
     * state (the step count came from the same checkpoint on every one). */
    if ((s = dpt_comm_broadcast(comm, dpt_net_params(net), dpt_net_n_params(net) * sizeof(float), 0)) ||
        (s = dpt_comm_broadcast(comm, dpt_net_state(net), dpt_net_n_state_floats(net) * sizeof(float), 0)))
        goto done;
    for (size_t b = 0; b < dpt_optim_n_buffers(opt) && dpt_optim_n(opt); b++)
        if ((s = dpt_comm_broadcast(comm, dpt_optim_buffer(opt, b), dpt_optim_n(opt) * sizeof(float),
                                    0)) != DPT_OK)
            goto done;
    if (cfg->sync_bn)
        dpt_net_set_sync_bn(net, comm);
    /* One worker per GPU: the network moves once its host copy is final. */
    if (cfg->use_gpu) {
        dpt_gpu_options go = DPT_GPU_OPTIONS_INIT;
        go.device = dpt_gpu_for_worker(comm);
        go.precision = (dpt_precision)cfg->precision;
        go.cuda_graph = cfg->cuda_graph;
        if ((s = dpt_net_to_gpu_opts(net, &go)) != DPT_OK)
            goto done;
    }
    if (rank == 0) {
        job->result->epoch = start->epoch;
        job->result->iterations = job->result->start_iteration = start->iteration;
        /* Every input is checked: the caller may now prepare the output. */
        if (cfg->on_start && (s = cfg->on_start(cfg->on_start_arg)) != DPT_OK)
            goto done;
    }
done:
    if (s != DPT_OK) {
        dpt_optim_free(opt);
        dpt_net_free(net);
        net = NULL, opt = NULL;
    }
    *out_net = net, *out_opt = opt;
    return s;
}

/* The image network fits the data: an output per class. */
static dpt_status check_net(const fit_job *job, dpt_net *net, const char *source)
{
    int n_classes = dpt_datastore_n_classes(job->cfg->train);
    if (dpt_net_n_outputs(net) < n_classes)
        return dpt_fail(DPT_ERR_SHAPE, "%s: the network has %d outputs but the data has %d classes",
                        source, dpt_net_n_outputs(net), n_classes);
    return DPT_OK;
}

static dpt_status fit_worker(dpt_comm *comm, void *arg)
{
    fit_job *job = arg;
    const dpt_fit_config *cfg = job->cfg;
    int rank = dpt_comm_rank(comm), n_workers = dpt_comm_size(comm);
    int n_classes = dpt_datastore_n_classes(cfg->train);
    int *share = malloc((size_t)n_workers * sizeof *share);
    if (!share)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    dpt_batch_shares(cfg->batch, n_workers, share);
    int my_batch = share[rank], max_share = share[0];
    if (my_batch < 1) {
        free(share);
        return dpt_fail(DPT_ERR_ARG, "--batch %d is smaller than the %d workers", cfg->batch,
                        n_workers);
    }
    if (dpt_datastore_n_obs(cfg->train) < (size_t)n_workers) {
        free(share);
        return dpt_fail(DPT_ERR_ARG, "%d workers but only %zu training images", n_workers,
                        dpt_datastore_n_obs(cfg->train));
    }
    global_pos gpos = {dpt_datastore_n_obs(cfg->train), n_workers, rank, share};

    dpt_net *net = NULL;
    dpt_optim *opt = NULL;
    dpt_datastore *shuffled = NULL, *part = NULL;
    dpt_mbq *q = NULL;
    dpt_checkpoint_info start;
    dpt_status s = fit_setup(job, comm, dpt_net_default_spec(), n_classes, max_share, check_net,
                             &net, &opt, &start);
    if (s != DPT_OK)
        goto done;
    int chw[3];
    dpt_net_input_shape(net, chw);
    dpt_mbq_options mo = DPT_MBQ_OPTIONS_INIT;
    mo.batch_size = my_batch;
    mo.channels = chw[0], mo.height = chw[1], mo.width = chw[2];
    mo.prefetch = cfg->prefetch;
    if (cfg->augment && !dpt_augment_is_identity(cfg->augment)) {
        mo.augment = cfg->augment;
        mo.augment_seed = cfg->seed;
        mo.augment_first = first_in_global_batch;
        mo.augment_first_arg = &gpos;
    }

    /* The schedule's iterations per epoch: the loop runs while every
     * worker has data, so the worker with the fewest batches sets it. */
    long planned = fit_epoch_iterations(dpt_datastore_n_obs(cfg->train), cfg->batch, n_workers);
    const double base_lr = dpt_optim_get_lr(opt); /* cfg->lr, or the kind's default for 0 */
    double t0 = fit_now_s() - start.elapsed_s, loss = NAN, lr = base_lr;
    long iteration = start.iteration, per_epoch = 0;
    int epoch = start.epoch;
    for (; epoch <= cfg->epochs; epoch++) {
        /* Resuming inside an epoch: skip the batches already trained on. */
        long skip = epoch == start.epoch ? start.epoch_iteration : 0;
        /* Batch b of this epoch is iteration (iterations before it) + b + 1:
         * the augmentation key. */
        mo.augment_epoch = epoch;
        mo.augment_iteration = iteration - skip + 1;
        /* Shuffle with a seed every worker shares, then take this worker's
         * block: the blocks are disjoint and cover the data. */
        if ((s = dpt_datastore_shuffle(cfg->train, fit_epoch_seed(cfg->seed, epoch), &shuffled)) ||
            (s = dpt_datastore_partition(shuffled, n_workers, rank, &part)) ||
            (s = dpt_mbq_new(part, &mo, &q)))
            goto done;
        long it_epoch = 0;
        for (;;) {
            /* Loop while every worker still has data and none was asked to
             * stop: one all-reduce for both. */
            int more = dpt_mbq_has_data(q) && !(cfg->stop && *cfg->stop);
            if ((s = dpt_comm_allreduce_and(comm, &more)) != DPT_OK)
                goto done;
            if (!more)
                break;
            double t_it = fit_now_s();
            dpt_batch b;
            int m_total = 0;
            if ((s = dpt_mbq_next(q, &b)) != DPT_OK) {
                s = fit_at_iteration(s, epoch, iteration + 1);
                goto done;
            }
            if (it_epoch < skip) {
                it_epoch++;
                continue;
            }
            /* Dropout masks follow (epoch, iteration): a resumed run draws
             * what the uninterrupted one did. */
            dpt_net_set_iteration(net, epoch, iteration + 1);
            lr = dpt_lr_at(&cfg->lr_schedule, base_lr, epoch, it_epoch, planned, cfg->epochs);
            dpt_optim_set_lr(opt, (float)lr);
            s = dpt_train_step_optim(net, opt, comm, b.x.data, b.y.data, b.n, &loss, &m_total);
            if (s == DPT_OK && !isfinite(loss))
                s = dpt_fail(DPT_ERR_NUMERIC, "the loss became %g (try a smaller --lr)", loss);
            if (s != DPT_OK) {
                s = fit_at_iteration(s, epoch, iteration + 1);
                goto done;
            }
            iteration++, it_epoch++;
            fit_publish_wait(job, comm);
            if (rank == 0)
                job->result->epoch = epoch, job->result->iterations = iteration;
            if (rank == 0 && job->queue) {
                double t = fit_now_s();
                dpt_progress p = {epoch, cfg->epochs, iteration, per_epoch, loss, t - t0,
                                  m_total / (t - t_it), lr, NAN, 0, rank, 0, NAN, 0, {0}};
                fit_fill_wait(job, comm, &p);
                dpt_progress_send(job->queue, &p);
            }
            if (rank == 0 && cfg->checkpoint_out && cfg->checkpoint_every > 0 &&
                iteration % cfg->checkpoint_every == 0 &&
                (s = save_checkpoint(job, net, opt, epoch, it_epoch, iteration, n_workers,
                                     fit_now_s() - t0)) != DPT_OK)
                goto done;
            if (rank == 0 && cfg->checkpoint_out && cfg->checkpoint_every > 0 &&
                iteration % cfg->checkpoint_every == 0)
                job->result->checkpoint_iteration = iteration;
        }
        /* The loop ended because a worker ran out of data or because one was
         * asked to stop: a second all-reduce (once per epoch) tells which,
         * the same on every worker. */
        if (cfg->stop) {
            int go_on = !*cfg->stop;
            if ((s = dpt_comm_allreduce_and(comm, &go_on)) != DPT_OK)
                goto done;
            if (!go_on) {
                atomic_store(&job->interrupted, 1);
                goto done;
            }
        }
        per_epoch = it_epoch;
        dpt_mbq_free(q), q = NULL;
        dpt_datastore_free(part), part = NULL;
        dpt_datastore_free(shuffled), shuffled = NULL;
        if (rank == 0 && job->queue) {
            double acc = NAN;
            if (cfg->eval_every_epoch && cfg->test &&
                (s = dpt_evaluate(net, cfg->test, &acc, NULL)) != DPT_OK)
                goto done;
            dpt_progress p = {epoch, cfg->epochs, iteration, per_epoch, loss, fit_now_s() - t0, 0,
                              lr, acc, 1, rank, 0, NAN, 0, {0}};
            fit_fill_wait(job, comm, &p);
            dpt_progress_send(job->queue, &p);
        }
    }
    double train_s = fit_now_s() - t0;
    if (rank == 0) {
        dpt_fit_result *r = job->result;
        r->final_loss = loss;
        r->iterations = iteration;
        r->train_seconds = train_s;
        r->n_workers = n_workers;
        r->test_accuracy = NAN;
        /* The end-of-training checkpoint: a later --resume with more epochs
         * continues from here. */
        if (cfg->checkpoint_out &&
            (s = save_checkpoint(job, net, opt, epoch, 0, iteration, n_workers, train_s)) != DPT_OK)
            goto done;
        if (cfg->checkpoint_out)
            r->checkpoint_iteration = iteration;
        if (dpt_net_device(net) >= 0 && (s = dpt_net_sync_to_host(net)) != DPT_OK)
            goto done;
        if (cfg->model_out && (s = fit_save_model(job, net, n_workers, iteration, &(dpt_kv){"classes", job->classes_json}, 1)) != DPT_OK)
            goto done;
        if (cfg->test && (s = dpt_evaluate(net, cfg->test, &r->test_accuracy, NULL)) != DPT_OK)
            goto done;
    }
done:
    dpt_mbq_free(q);
    dpt_datastore_free(part);
    dpt_datastore_free(shuffled);
    dpt_optim_free(opt);
    dpt_net_free(net);
    free(share);
    return s;
}

/* Same class names in the same order (the usual case: a split of one
 * dataset): nothing to match. */
static int same_classes(const dpt_datastore *a, const dpt_datastore *b)
{
    int k = dpt_datastore_n_classes(a);
    if (dpt_datastore_n_classes(b) != k)
        return 0;
    for (int i = 0; i < k; i++)
        if (strcmp(dpt_datastore_class_name(a, i), dpt_datastore_class_name(b, i)) != 0)
            return 0;
    return 1;
}

/* The vocabulary of a language model as a JSON array of its code points
 * (index order). Freed with cJSON_free. */
static char *vocab_json(const dpt_text *t)
{
    int n = dpt_text_n_vocab(t);
    const uint32_t *v = dpt_text_vocab(t);
    cJSON *arr = cJSON_CreateArray();
    for (int k = 0; arr && k < n; k++) {
        cJSON *item = cJSON_CreateNumber((double)v[k]);
        if (!item || !cJSON_AddItemToArray(arr, item)) {
            cJSON_Delete(item);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    char *text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return text;
}

/* The class names of a sequence folder as a JSON array. */
static char *seq_classes_json(const dpt_seqstore *s)
{
    int k = dpt_seqstore_n_classes(s);
    const char **names = calloc((size_t)k + 1, sizeof *names);
    if (!names)
        return NULL;
    for (int i = 0; i < k; i++)
        names[i] = dpt_seqstore_class_name(s, i);
    dpt_fit_config c = {0};
    c.class_names = names;
    char *text = classes_json(&c, k);
    free(names);
    return text;
}

/* The sequence trainers' data, checked before any worker starts. */
static dpt_status check_seq_data(const dpt_fit_config *cfg)
{
    if (cfg->seq_train) {
        const dpt_seqstore *tr = cfg->seq_train, *te = cfg->seq_test;
        if (te && dpt_seqstore_n_features(te) != dpt_seqstore_n_features(tr))
            return dpt_fail(DPT_ERR_SHAPE, "test data: %d features per time step, the training "
                            "data %d", dpt_seqstore_n_features(te), dpt_seqstore_n_features(tr));
        int same = te ? dpt_seqstore_n_classes(te) == dpt_seqstore_n_classes(tr) : 1;
        for (int k = 0; te && same && k < dpt_seqstore_n_classes(tr); k++)
            same = !strcmp(dpt_seqstore_class_name(te, k), dpt_seqstore_class_name(tr, k));
        if (!same)
            return dpt_fail(DPT_ERR_ARG, "test data: its classes differ from the training data's "
                            "(label it by the training classes' names first: "
                            "dpt_seqstore_match_classes)");
        return DPT_OK;
    }
    if (cfg->seq_len < 1 || cfg->seq_len > DPT_SEQ_MAX_STEPS)
        return dpt_fail(DPT_ERR_ARG, "--seq-len %d: must be in [1, %d]", cfg->seq_len,
                        DPT_SEQ_MAX_STEPS);
    if (dpt_text_n_chunks(cfg->text_train, cfg->batch, cfg->seq_len) < 1)
        return dpt_fail(DPT_ERR_ARG, "--data: the training text of %zu characters is too short "
                        "for %d streams (--batch) of %d + 1 characters (--seq-len)",
                        dpt_text_n_chars(cfg->text_train), cfg->batch, cfg->seq_len);
    const dpt_text *te = cfg->text_test;
    if (te && dpt_text_n_vocab(te) != dpt_text_n_vocab(cfg->text_train))
        return dpt_fail(DPT_ERR_ARG, "test text: its vocabulary (%d characters) is not the "
                        "training text's (%d); open it with the training vocabulary",
                        dpt_text_n_vocab(te), dpt_text_n_vocab(cfg->text_train));
    return DPT_OK;
}

dpt_status dpt_fit(const dpt_fit_config *cfg, dpt_fit_result *result)
{
    if (!cfg || cfg->version < 1 || cfg->version > DPT_FIT_CONFIG_VERSION)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: config missing or of another version");
    /* A version-1 or 2 config ends before the optimizer or the sequence
     * fields: copy its part into a full config with their defaults. */
    dpt_fit_config full = DPT_FIT_CONFIG_INIT;
    if (cfg->version < DPT_FIT_CONFIG_VERSION) {
        memcpy(&full, cfg, cfg->version == 1   ? offsetof(dpt_fit_config, optimizer)
                           : cfg->version == 2 ? offsetof(dpt_fit_config, seq_train)
                                               : offsetof(dpt_fit_config, precision));
        full.version = DPT_FIT_CONFIG_VERSION;
        cfg = &full;
    }
    int n_data = !!cfg->train + !!cfg->seq_train + !!cfg->text_train;
    if (n_data == 0)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: no training data");
    if (n_data > 1)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: give one of train, seq_train and text_train");
    const int seq = cfg->seq_train || cfg->text_train;
    if (cfg->epochs < 1 || cfg->batch < 1)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: epochs and batch must be >= 1");
    if (cfg->precision != DPT_PRECISION_FP32 && cfg->precision != DPT_PRECISION_TF32 &&
        cfg->precision != DPT_PRECISION_BF16)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: unknown precision %d (fp32 0, tf32 1, bf16 2)",
                        cfg->precision);
    if (cfg->cuda_graph != 0 && cfg->cuda_graph != 1)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: cuda_graph %d (0 or 1)", cfg->cuda_graph);
    if (cfg->precision != DPT_PRECISION_FP32 && !cfg->use_gpu)
        return dpt_fail(DPT_ERR_UNSUPPORTED, "dpt_fit: precision %s needs GPU workers (CPU "
                        "workers compute in fp32 only)",
                        dpt_precision_name((dpt_precision)cfg->precision));
    const dpt_lr_schedule *ls = &cfg->lr_schedule;
    if ((ls->kind != DPT_LR_CONSTANT && ls->kind != DPT_LR_PIECEWISE && ls->kind != DPT_LR_COSINE) ||
        ls->every < 1 || !(ls->drop > 0 && ls->drop <= 1) || !(ls->min_lr >= 0) ||
        !(ls->warmup >= 0 && ls->warmup <= 1e6))
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: lr schedule out of range (kind %d, every %d, drop %g, "
                        "min %g, warmup %g)", (int)ls->kind, ls->every, ls->drop, ls->min_lr,
                        ls->warmup);
    if (cfg->augment && seq)
        return dpt_fail(DPT_ERR_ARG, "--augment: applies to images, not sequence data");
    if (cfg->augment) {
        dpt_status as = dpt_augment_check(cfg->augment);
        if (as != DPT_OK)
            return as;
    }
    if (seq) {
        dpt_status ss = check_seq_data(cfg);
        if (ss != DPT_OK)
            return ss;
    }
    memset(result, 0, sizeof *result);
    result->checkpoint_iteration = -1;
    result->test_bpc = NAN;
    fit_job job = {cfg, result, NULL, NULL, 0, 0, "images", {0}};
    if (cfg->seq_train)
        job.n_train = dpt_seqstore_n_obs(cfg->seq_train), job.unit = "sequences";
    else if (cfg->text_train)
        job.n_train = dpt_text_n_chars(cfg->text_train), job.unit = "characters";
    else
        job.n_train = dpt_datastore_n_obs(cfg->train);
    /* A checkpoint that cannot continue this run is refused before any
     * worker starts (dpt_checkpoint_load checks it again against the
     * network). */
    if (cfg->resume) {
        dpt_checkpoint_info start;
        dpt_status rs = dpt_checkpoint_read_info(cfg->resume, &start);
        if (rs == DPT_OK)
            rs = check_resume(&job, &start);
        if (rs != DPT_OK)
            return rs;
    }
    /* The test data's labels by class name, as the training data names
     * them: a test set with some of the classes, or in another order, is
     * scored under its own names, never by position. */
    dpt_fit_config own = *cfg;
    dpt_datastore *matched = NULL;
    if (!seq && cfg->test && !same_classes(cfg->train, cfg->test)) {
        int k = dpt_datastore_n_classes(cfg->train);
        const char **names = calloc((size_t)k, sizeof *names);
        if (!names)
            return dpt_fail(DPT_ERR_NOMEM, "out of memory");
        for (int i = 0; i < k; i++)
            names[i] = dpt_datastore_class_name(cfg->train, i);
        dpt_status ms = dpt_datastore_match_classes(cfg->test, "test data", k, names, &matched);
        free(names);
        if (ms != DPT_OK)
            return ms;
        own.test = matched;
        cfg = &own;
        job.cfg = cfg;
    }
    job.classes_json = cfg->text_train  ? vocab_json(cfg->text_train)
                       : cfg->seq_train ? seq_classes_json(cfg->seq_train)
                                        : classes_json(cfg, dpt_datastore_n_classes(cfg->train));
    if (!job.classes_json) {
        dpt_datastore_free(matched);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    dpt_status s = DPT_OK;
    if (cfg->progress)
        s = dpt_progress_queue_new(0, cfg->progress, cfg->progress_arg, &job.queue);
    if (s == DPT_OK)
        s = dpt_spmd_run(&cfg->spmd, seq ? fit_seq_worker : fit_worker, &job);
    /* Deliver what the workers sent before returning, even after a failure. */
    dpt_progress_queue_free(job.queue);
    cJSON_free(job.classes_json);
    dpt_datastore_free(matched);
    if (s == DPT_OK && atomic_load(&job.interrupted))
        s = dpt_fail(DPT_ERR_INTERRUPTED, "interrupted at epoch %d, iteration %ld", result->epoch,
                     result->iterations);
    return s;
}
