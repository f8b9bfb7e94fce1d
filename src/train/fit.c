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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A different, reproducible shuffle seed per epoch, the same on all workers. */
static uint64_t epoch_seed(uint64_t seed, int epoch)
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

typedef struct fit_job {
    const dpt_fit_config *cfg;
    dpt_fit_result *result;
    dpt_progress_queue *queue; /* NULL: no progress callback */
    char *classes_json;        /* the class names as a JSON array (model metadata) */
    atomic_int interrupted;    /* set by every worker that stopped on cfg->stop */
} fit_job;

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

/* Worker 0 saves the model with the class names and run facts. */
static dpt_status save_model(const fit_job *job, dpt_net *net, int n_workers, long iterations)
{
    char workers[32], iters[32], epochs[32];
    snprintf(workers, sizeof workers, "%d", n_workers);
    snprintf(iters, sizeof iters, "%ld", iterations);
    snprintf(epochs, sizeof epochs, "%d", job->cfg->epochs);
    dpt_kv meta[] = {{"classes", job->classes_json}, {"workers", workers}, {"iteration", iters},
                     {"epoch", epochs}};
    return dpt_net_save(net, job->cfg->model_out, meta, sizeof meta / sizeof *meta);
}

static dpt_status save_checkpoint(const fit_job *job, dpt_net *net, dpt_sgdm *opt, int epoch,
                                  long epoch_it, long iteration, int n_workers, double elapsed)
{
    /* A GPU network's learnables and velocity live on the device. */
    if (dpt_net_device(net) >= 0) {
        dpt_status s = dpt_net_sync_to_host(net);
        if (s != DPT_OK)
            return s;
    }
    dpt_checkpoint_info info = {epoch, epoch_it, iteration, job->cfg->seed, n_workers, elapsed,
                                job->cfg->batch, dpt_datastore_n_obs(job->cfg->train)};
    dpt_kv meta[] = {{"classes", job->classes_json}};
    return dpt_checkpoint_save(job->cfg->checkpoint_out, net, opt, &info, meta, 1);
}

/* What a resumed run must share with the run that wrote the checkpoint for
 * the continuation to be the same training: the seed (the split and every
 * epoch's shuffle), the training data, and mid-epoch the minibatch (the
 * position in the epoch counts minibatches). --epochs, --workers, --lr and
 * the like may change. */
static dpt_status check_resume(const dpt_fit_config *cfg, const dpt_checkpoint_info *start)
{
    const char *path = cfg->resume;
    if (start->seed != cfg->seed)
        return dpt_fail(DPT_ERR_ARG, "--seed: the checkpoint %s was written with --seed %" PRIu64
                        "; resuming needs the same (it sets the train/test split and the "
                        "shuffles)", path, start->seed);
    size_t n = dpt_datastore_n_obs(cfg->train);
    if (start->n_train && start->n_train != (uint64_t)n)
        return dpt_fail(DPT_ERR_ARG, "--data: the checkpoint %s was trained on %" PRIu64
                        " images, this run has %zu; resuming needs the same --data, --split and "
                        "--test", path, start->n_train, n);
    if (start->batch && start->batch != cfg->batch && start->epoch_iteration > 0)
        return dpt_fail(DPT_ERR_ARG, "--batch: the checkpoint %s was written with --batch %d; "
                        "resuming mid-epoch (after iteration %ld of epoch %d) needs the same",
                        path, start->batch, start->epoch_iteration, start->epoch);
    return DPT_OK;
}

/* Prefix the current error with where training stopped. */
static dpt_status at_iteration(dpt_status s, int epoch, long iteration)
{
    char msg[768];
    snprintf(msg, sizeof msg, "%s", dpt_last_error());
    return dpt_fail(s, "epoch %d, iteration %ld: %s", epoch, iteration, msg);
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
    free(share);
    if (my_batch < 1)
        return dpt_fail(DPT_ERR_ARG, "--batch %d is smaller than the %d workers", cfg->batch,
                        n_workers);
    if (dpt_datastore_n_obs(cfg->train) < (size_t)n_workers)
        return dpt_fail(DPT_ERR_ARG, "%d workers but only %zu training images", n_workers,
                        dpt_datastore_n_obs(cfg->train));

    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_datastore *shuffled = NULL, *part = NULL;
    dpt_mbq *q = NULL;
    const char *source = cfg->spec_source ? cfg->spec_source : "<default spec>";
    dpt_status s = dpt_net_from_spec(cfg->spec ? cfg->spec : dpt_net_default_spec(), source,
                                     n_classes, max_share, cfg->seed, &net);
    if (s != DPT_OK)
        goto done;
    if (dpt_net_n_outputs(net) < n_classes) {
        s = dpt_fail(DPT_ERR_SHAPE, "%s: the network has %d outputs but the data has %d classes",
                     source, dpt_net_n_outputs(net), n_classes);
        goto done;
    }
    if ((s = dpt_sgdm_new(dpt_net_n_params(net), cfg->lr, cfg->momentum, cfg->weight_decay, &opt)))
        goto done;
    dpt_checkpoint_info start = {1, 0, 0, cfg->seed, n_workers, 0, cfg->batch, 0};
    if (cfg->resume && (s = dpt_checkpoint_load(cfg->resume, net, opt, &start)) != DPT_OK)
        goto done;
    /* Every worker starts from worker 0's learnables, state and velocity. */
    if ((s = dpt_comm_broadcast(comm, dpt_net_params(net), dpt_net_n_params(net) * sizeof(float), 0)) ||
        (s = dpt_comm_broadcast(comm, dpt_net_state(net), dpt_net_n_state_floats(net) * sizeof(float), 0)) ||
        (s = dpt_comm_broadcast(comm, opt->velocity, opt->n * sizeof(float), 0)))
        goto done;
    if (cfg->sync_bn)
        dpt_net_set_sync_bn(net, comm);
    /* One worker per GPU: the network moves once its host copy is final. */
    if (cfg->use_gpu && (s = dpt_net_to_gpu(net, dpt_gpu_for_worker(comm))) != DPT_OK)
        goto done;
    if (rank == 0) {
        job->result->epoch = start.epoch;
        job->result->iterations = job->result->start_iteration = start.iteration;
        /* Every input is checked: the caller may now prepare the output. */
        if (cfg->on_start && (s = cfg->on_start(cfg->on_start_arg)) != DPT_OK)
            goto done;
    }

    int chw[3];
    dpt_net_input_shape(net, chw);
    dpt_mbq_options mo = DPT_MBQ_OPTIONS_INIT;
    mo.batch_size = my_batch;
    mo.channels = chw[0], mo.height = chw[1], mo.width = chw[2];
    mo.prefetch = cfg->prefetch;

    double t0 = now_s() - start.elapsed_s, loss = NAN;
    long iteration = start.iteration, per_epoch = 0;
    int epoch = start.epoch;
    for (; epoch <= cfg->epochs; epoch++) {
        /* Shuffle with a seed every worker shares, then take this worker's
         * block: the blocks are disjoint and cover the data. */
        if ((s = dpt_datastore_shuffle(cfg->train, epoch_seed(cfg->seed, epoch), &shuffled)) ||
            (s = dpt_datastore_partition(shuffled, n_workers, rank, &part)) ||
            (s = dpt_mbq_new(part, &mo, &q)))
            goto done;
        long it_epoch = 0;
        /* Resuming inside an epoch: skip the batches already trained on. */
        long skip = epoch == start.epoch ? start.epoch_iteration : 0;
        for (;;) {
            /* Loop while every worker still has data and none was asked to
             * stop: one all-reduce for both. */
            int more = dpt_mbq_has_data(q) && !(cfg->stop && *cfg->stop);
            if ((s = dpt_comm_allreduce_and(comm, &more)) != DPT_OK)
                goto done;
            if (!more)
                break;
            double t_it = now_s();
            dpt_batch b;
            int m_total = 0;
            if ((s = dpt_mbq_next(q, &b)) != DPT_OK) {
                s = at_iteration(s, epoch, iteration + 1);
                goto done;
            }
            if (it_epoch < skip) {
                it_epoch++;
                continue;
            }
            /* Dropout masks follow (epoch, iteration): a resumed run draws
             * what the uninterrupted one did. */
            dpt_net_set_iteration(net, epoch, iteration + 1);
            s = dpt_train_step(net, opt, comm, b.x.data, b.y.data, b.n, &loss, &m_total);
            if (s == DPT_OK && !isfinite(loss))
                s = dpt_fail(DPT_ERR_NUMERIC, "the loss became %g (try a smaller --lr)", loss);
            if (s != DPT_OK) {
                s = at_iteration(s, epoch, iteration + 1);
                goto done;
            }
            iteration++, it_epoch++;
            if (rank == 0)
                job->result->epoch = epoch, job->result->iterations = iteration;
            if (rank == 0 && job->queue) {
                double t = now_s();
                dpt_progress p = {epoch, cfg->epochs, iteration, per_epoch, loss, t - t0,
                                  m_total / (t - t_it), cfg->lr, NAN, 0, rank, 0};
                dpt_progress_send(job->queue, &p);
            }
            if (rank == 0 && cfg->checkpoint_out && cfg->checkpoint_every > 0 &&
                iteration % cfg->checkpoint_every == 0 &&
                (s = save_checkpoint(job, net, opt, epoch, it_epoch, iteration, n_workers,
                                     now_s() - t0)) != DPT_OK)
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
            dpt_progress p = {epoch, cfg->epochs, iteration, per_epoch, loss, now_s() - t0, 0,
                              cfg->lr, acc, 1, rank, 0};
            dpt_progress_send(job->queue, &p);
        }
    }
    double train_s = now_s() - t0;
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
        if (cfg->model_out && (s = save_model(job, net, n_workers, iteration)) != DPT_OK)
            goto done;
        if (cfg->test && (s = dpt_evaluate(net, cfg->test, &r->test_accuracy, NULL)) != DPT_OK)
            goto done;
    }
done:
    dpt_mbq_free(q);
    dpt_datastore_free(part);
    dpt_datastore_free(shuffled);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
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

dpt_status dpt_fit(const dpt_fit_config *cfg, dpt_fit_result *result)
{
    if (!cfg || cfg->version != DPT_FIT_CONFIG_VERSION)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: config missing or of another version");
    if (!cfg->train)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: no training data");
    if (cfg->epochs < 1 || cfg->batch < 1)
        return dpt_fail(DPT_ERR_ARG, "dpt_fit: epochs and batch must be >= 1");
    memset(result, 0, sizeof *result);
    result->checkpoint_iteration = -1;
    /* A checkpoint that cannot continue this run is refused before any
     * worker starts (dpt_checkpoint_load checks it again against the
     * network). */
    if (cfg->resume) {
        dpt_checkpoint_info start;
        dpt_status rs = dpt_checkpoint_read_info(cfg->resume, &start);
        if (rs == DPT_OK)
            rs = check_resume(cfg, &start);
        if (rs != DPT_OK)
            return rs;
    }
    /* The test data's labels by class name, as the training data names
     * them: a test set with some of the classes, or in another order, is
     * scored under its own names, never by position. */
    dpt_fit_config own = *cfg;
    dpt_datastore *matched = NULL;
    if (cfg->test && !same_classes(cfg->train, cfg->test)) {
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
    }
    fit_job job = {cfg, result, NULL, classes_json(cfg, dpt_datastore_n_classes(cfg->train)), 0};
    if (!job.classes_json) {
        dpt_datastore_free(matched);
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    }
    dpt_status s = DPT_OK;
    if (cfg->progress)
        s = dpt_progress_queue_new(0, cfg->progress, cfg->progress_arg, &job.queue);
    if (s == DPT_OK)
        s = dpt_spmd_run(&cfg->spmd, fit_worker, &job);
    /* Deliver what the workers sent before returning, even after a failure. */
    dpt_progress_queue_free(job.queue);
    cJSON_free(job.classes_json);
    dpt_datastore_free(matched);
    if (s == DPT_OK && atomic_load(&job.interrupted))
        s = dpt_fail(DPT_ERR_INTERRUPTED, "interrupted at epoch %d, iteration %ld", result->epoch,
                     result->iterations);
    return s;
}
