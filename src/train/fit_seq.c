/* dpt_fit on sequence data: sequence-folder classifiers and stateful
 * character language models (DESIGN.md, "carried state"), and their
 * evaluation. The loop's frame (setup, resume, progress, checkpoints, stop
 * requests) is fit.c's, shared through train_internal.h.
 *
 * Sequence folders: every epoch is shuffled with the seed rule of images
 * and cut into one contiguous block per worker (dpt_datastore_partition's
 * rule), so any worker count trains on the same global minibatches; each
 * worker pads its share to its own longest sequence (the masked loss makes
 * padding invisible).
 *
 * Language models: worker w owns streams [first, first + count) of the B
 * (dpt_text_stream_share) for the whole run, so the state it carries from
 * chunk k to chunk k + 1 is always its own streams'. Carried state is never
 * pooled; a checkpoint gathers every worker's slice into one tensor
 * "carry" [B, carry_floats] (an all-reduce of zero-padded slices: x + 0 is
 * exact), and each worker restores exactly its own slice on resume. */
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "train/train_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char lm_spec[] = "sequenceinput in size=vocab\n"
                              "lstm lstm1 units=256\n"
                              "fc fc outputs=vocab\n"
                              "softmax sm\n";

const char *dpt_net_default_lm_spec(void) { return lm_spec; }

const char *dpt_net_default_seq_spec(int n_features, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "sequenceinput in size=%d\n"
             "lstm lstm1 units=100 output=last\n"
             "fc fc outputs=classes\n"
             "softmax sm\n",
             n_features);
    return buf;
}

/* Features per time step of a sequence network's input. */
static int input_features(const dpt_net *net)
{
    int chw[3];
    dpt_net_input_shape(net, chw);
    return chw[0];
}

/* ---- batches ------------------------------------------------------------- */

/* Sequences obs[0..n) of ds into *x [n, T, F] (T = the longest of them),
 * zero where padded (first with pad_left, else last), their lengths into
 * len, and one-hot rows of the labels into t [n, k] (t may be NULL). *x
 * (*cap floats) grows to what this batch needs: sized by the batch, not by
 * the longest sequence of the data times the batch. */
static dpt_status pad_batch(const dpt_seqstore *ds, const uint32_t *obs, int n, int pad_left,
                            int k, float **xp, size_t *cap, int *len, float *t, int *steps)
{
    int f = dpt_seqstore_n_features(ds), T = 0;
    for (int i = 0; i < n; i++) {
        len[i] = (int)dpt_seqstore_length(ds, obs[i]);
        if (len[i] > T)
            T = len[i];
    }
    size_t need = (size_t)n * (size_t)T * (size_t)f;
    if (need > *cap) {
        float *grown = realloc(*xp, need * sizeof *grown);
        if (!grown)
            return dpt_fail(DPT_ERR_NOMEM, "out of memory for a minibatch of %d sequences of %d "
                            "steps", n, T);
        *xp = grown, *cap = need;
    }
    float *x = *xp;
    memset(x, 0, need * sizeof *x);
    for (int i = 0; i < n; i++) {
        size_t at = ((size_t)i * (size_t)T + (size_t)(pad_left ? T - len[i] : 0)) * (size_t)f;
        dpt_status s = dpt_seqstore_read(ds, obs[i], x + at);
        if (s != DPT_OK)
            return s;
    }
    if (t) {
        memset(t, 0, (size_t)n * (size_t)k * sizeof *t);
        for (int i = 0; i < n; i++)
            t[(size_t)i * k + dpt_seqstore_label(ds, obs[i])] = 1.0f;
    }
    *steps = T;
    return DPT_OK;
}

/* Vocabulary indices [n] as one-hot rows [n, v]. */
static void one_hot(const int32_t *idx, size_t n, int v, float *out)
{
    memset(out, 0, n * (size_t)v * sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i * (size_t)v + idx[i]] = 1.0f;
}

/* ---- evaluation ---------------------------------------------------------- */

dpt_status dpt_evaluate_seq(dpt_net *net, const dpt_seqstore *ds, int pad_left, double *accuracy,
                            size_t *confusion)
{
    if (!net || !ds || !accuracy)
        return dpt_fail(DPT_ERR_ARG, "dpt_evaluate_seq: NULL argument");
    int k_ds = dpt_seqstore_n_classes(ds), k_net = dpt_net_n_outputs(net);
    int f = dpt_seqstore_n_features(ds);
    if (!dpt_net_is_sequence(net) || dpt_net_output_is_sequence(net))
        return dpt_fail(DPT_ERR_ARG, "evaluate: the network is not a sequence classifier (a "
                        "sequenceinput and one output per sequence, e.g. lstm output=last)");
    if (k_ds > k_net)
        return dpt_fail(DPT_ERR_SHAPE, "evaluate: the data has %d classes, the network %d outputs",
                        k_ds, k_net);
    if (f != input_features(net))
        return dpt_fail(DPT_ERR_SHAPE, "evaluate: the data has %d features per time step, the "
                        "network's input %d", f, input_features(net));
    int mb = dpt_net_max_batch(net);
    size_t n = dpt_seqstore_n_obs(ds), cap = 0;
    float *x = NULL;
    int *len = malloc((size_t)mb * sizeof *len), *pred = malloc((size_t)mb * sizeof *pred);
    uint32_t *obs = malloc((size_t)mb * sizeof *obs);
    dpt_status s = DPT_OK;
    if (!len || !pred || !obs) {
        s = dpt_fail(DPT_ERR_NOMEM, "evaluate: out of memory");
        goto done;
    }
    if (confusion)
        memset(confusion, 0, (size_t)k_ds * k_ds * sizeof *confusion);
    size_t correct = 0;
    for (size_t i0 = 0; i0 < n; i0 += (size_t)mb) {
        int m = n - i0 < (size_t)mb ? (int)(n - i0) : mb, T = 0;
        const float *y;
        for (int i = 0; i < m; i++)
            obs[i] = (uint32_t)(i0 + (size_t)i);
        if ((s = pad_batch(ds, obs, m, pad_left, 0, &x, &cap, len, NULL, &T)) != DPT_OK ||
            (s = dpt_net_set_steps(net, T, len, m, pad_left)) != DPT_OK ||
            (s = dpt_net_forward(net, x, m, DPT_MODE_PREDICT, &y)) != DPT_OK)
            goto done;
        dpt_argmax_rows(y, m, k_net, pred);
        for (int i = 0; i < m; i++) {
            int label = dpt_seqstore_label(ds, obs[i]);
            correct += pred[i] == label;
            if (confusion && pred[i] < k_ds)
                confusion[(size_t)label * k_ds + pred[i]]++;
        }
    }
    *accuracy = n ? (double)correct / (double)n : NAN;
done:
    free(x), free(len), free(pred), free(obs);
    return s;
}

dpt_status dpt_evaluate_text(dpt_net *net, const dpt_text *t, int n_streams, int seq_len,
                             double *bpc)
{
    if (!net || !t || !bpc)
        return dpt_fail(DPT_ERR_ARG, "dpt_evaluate_text: NULL argument");
    int v = dpt_text_n_vocab(t);
    if (!dpt_net_is_sequence(net) || !dpt_net_output_is_sequence(net) ||
        dpt_net_n_outputs(net) != v || input_features(net) != v)
        return dpt_fail(DPT_ERR_ARG, "evaluate: the network is not a language model of this "
                        "vocabulary (%d characters: a sequenceinput of that size and an output "
                        "per time step of that size)", v);
    if (n_streams < 1 || seq_len < 1)
        return dpt_fail(DPT_ERR_ARG, "evaluate: %d streams of %d steps", n_streams, seq_len);
    size_t nk = dpt_text_n_chunks(t, n_streams, seq_len);
    if (nk < 1)
        return dpt_fail(DPT_ERR_ARG, "evaluate: a text of %zu characters is too short for %d "
                        "streams of %d + 1 characters", dpt_text_n_chars(t), n_streams, seq_len);
    int mb = dpt_net_max_batch(net);
    size_t rows = (size_t)(mb < n_streams ? mb : n_streams) * (size_t)seq_len;
    int32_t *xi = malloc(rows * sizeof *xi), *yi = malloc(rows * sizeof *yi);
    float *x = malloc(rows * (size_t)v * sizeof *x);
    dpt_status s = DPT_OK;
    if (!xi || !yi || !x) {
        s = dpt_fail(DPT_ERR_NOMEM, "evaluate: out of memory");
        goto done;
    }
    dpt_net_set_stateful(net, 1);
    double sum = 0;
    /* More streams than the network's batch: in groups, each read from
     * zero state to its end, as if side by side. */
    for (int g = 0; g < n_streams; g += mb) {
        int cnt = n_streams - g < mb ? n_streams - g : mb;
        size_t r = (size_t)cnt * (size_t)seq_len;
        dpt_net_reset_state(net);
        if ((s = dpt_net_set_steps(net, seq_len, NULL, cnt, 0)) != DPT_OK)
            goto done;
        for (size_t k = 0; k < nk; k++) {
            const float *y;
            if ((s = dpt_text_batch(t, n_streams, seq_len, g, cnt, k, xi, yi)) != DPT_OK)
                goto done;
            one_hot(xi, r, v, x);
            if ((s = dpt_net_forward(net, x, cnt, DPT_MODE_PREDICT, &y)) != DPT_OK)
                goto done;
            for (size_t i = 0; i < r; i++) {
                double p = y[i * (size_t)v + yi[i]];
                sum -= log2(p > DBL_MIN ? p : DBL_MIN);
            }
        }
    }
    *bpc = sum / ((double)n_streams * (double)nk * (double)seq_len);
done:
    dpt_net_reset_state(net);
    free(xi), free(yi), free(x);
    return s;
}

/* ---- the worker ---------------------------------------------------------- */

/* The network fits the data, before anything else happens (fit_setup). */
static dpt_status check_net(const fit_job *job, dpt_net *net, const char *source)
{
    const dpt_fit_config *cfg = job->cfg;
    if (!dpt_net_is_sequence(net))
        return dpt_fail(DPT_ERR_ARG, "%s: sequence data needs a network that starts with "
                        "sequenceinput", source);
    if (cfg->text_train) {
        int v = dpt_text_n_vocab(cfg->text_train);
        if (!dpt_net_output_is_sequence(net))
            return dpt_fail(DPT_ERR_ARG, "%s: a language model needs an output per time step "
                            "(no lstm or gru output=last)", source);
        if (input_features(net) != v || dpt_net_n_outputs(net) != v)
            return dpt_fail(DPT_ERR_SHAPE, "%s: a language model of %d characters needs "
                            "sequenceinput size=vocab and %d outputs (outputs=vocab); the "
                            "network has %d inputs and %d outputs", source, v, v,
                            input_features(net), dpt_net_n_outputs(net));
        return DPT_OK;
    }
    int k = dpt_seqstore_n_classes(cfg->seq_train), f = dpt_seqstore_n_features(cfg->seq_train);
    if (dpt_net_output_is_sequence(net))
        return dpt_fail(DPT_ERR_ARG, "%s: a sequence classifier needs one output per sequence "
                        "(lstm or gru output=last before the last fc)", source);
    if (input_features(net) != f)
        return dpt_fail(DPT_ERR_SHAPE, "%s: the data has %d features per time step, the "
                        "network's sequenceinput %d", source, f, input_features(net));
    if (dpt_net_n_outputs(net) < k)
        return dpt_fail(DPT_ERR_SHAPE, "%s: the network has %d outputs but the data has %d "
                        "classes", source, dpt_net_n_outputs(net), k);
    return DPT_OK;
}

/* What every iteration's loop needs, whichever kind of data. */
typedef struct seq_run {
    fit_job *job;
    dpt_comm *comm;
    dpt_net *net;
    dpt_optim *opt;
    int rank, n_workers;
    const int *share;
    dpt_checkpoint_info start;
    double t0, base_lr;
    /* language model */
    int first, count;          /* this worker's streams */
    float *carry;              /* [B, carry_floats] for checkpoints (NULL: classifier) */
    size_t carry_floats;
} seq_run;

/* The metadata of the model and the checkpoint: the task and its facts. */
static size_t task_meta(const fit_job *job, dpt_kv *kv, char *num, size_t cap)
{
    const dpt_fit_config *cfg = job->cfg;
    if (cfg->text_train) {
        snprintf(num, cap, "%d", cfg->seq_len);
        kv[0] = (dpt_kv){"task", "language_model"};
        kv[1] = (dpt_kv){"seq_len", num};
        return 2;
    }
    snprintf(num, cap, "%d", dpt_seqstore_n_features(cfg->seq_train));
    kv[0] = (dpt_kv){"task", "sequence_classification"};
    kv[1] = (dpt_kv){"features", num};
    return 2;
}

/* Every worker's carried state into r->carry (collective), for a
 * checkpoint: each worker writes its rows, zeros elsewhere, then a sum. */
static dpt_status gather_carry(seq_run *r)
{
    if (!r->carry)
        return DPT_OK;
    int b = r->job->cfg->batch;
    size_t cf = r->carry_floats, n = (size_t)b * cf;
    memset(r->carry, 0, n * sizeof *r->carry);
    dpt_status s = cf ? dpt_net_carry_get(r->net, r->count, r->carry + (size_t)r->first * cf)
                      : DPT_OK;
    if (s == DPT_OK && r->n_workers > 1 && n)
        s = dpt_comm_allreduce_f32(r->comm, r->carry, r->carry, n);
    return s;
}

static dpt_status checkpoint(seq_run *r, int epoch, long epoch_it, long iteration, double elapsed)
{
    dpt_status s = gather_carry(r);
    if (s != DPT_OK || r->rank != 0)
        return s;
    dpt_kv kv[2];
    char num[32];
    size_t n = task_meta(r->job, kv, num, sizeof num);
    return fit_save_checkpoint(r->job, r->net, r->opt, epoch, epoch_it, iteration, r->n_workers,
                               elapsed, kv, n, r->carry, r->job->cfg->batch, r->carry_floats);
}

/* The stop request and "every worker has data", agreed in one all-reduce. */
static dpt_status agree_more(seq_run *r, int have, int *more)
{
    const dpt_fit_config *cfg = r->job->cfg;
    *more = have && !(cfg->stop && *cfg->stop);
    return dpt_comm_allreduce_and(r->comm, more);
}

/* After an epoch's loop: whether it ended on a stop request (the same on
 * every worker). */
static dpt_status stopped(seq_run *r, int *stop)
{
    const dpt_fit_config *cfg = r->job->cfg;
    *stop = 0;
    if (!cfg->stop)
        return DPT_OK;
    int go_on = !*cfg->stop;
    dpt_status s = dpt_comm_allreduce_and(r->comm, &go_on);
    *stop = !go_on;
    return s;
}

/* After an iteration: the result, progress and the periodic checkpoint. */
static dpt_status after_step(seq_run *r, int epoch, long it_epoch, long iteration,
                             long per_epoch, double loss, double per_s, double lr)
{
    fit_job *job = r->job;
    const dpt_fit_config *cfg = job->cfg;
    fit_publish_wait(job, r->comm);
    if (r->rank == 0)
        job->result->epoch = epoch, job->result->iterations = iteration;
    if (r->rank == 0 && job->queue) {
        dpt_progress p = {epoch, cfg->epochs, iteration, per_epoch, loss, fit_now_s() - r->t0,
                          per_s, lr, NAN, 0, r->rank, 0, NAN, 0, {0}};
        fit_fill_wait(job, r->comm, &p);
        dpt_progress_send(job->queue, &p);
    }
    if (cfg->checkpoint_out && cfg->checkpoint_every > 0 && iteration % cfg->checkpoint_every == 0) {
        dpt_status s = checkpoint(r, epoch, it_epoch, iteration, fit_now_s() - r->t0);
        if (s != DPT_OK)
            return s;
        if (r->rank == 0)
            job->result->checkpoint_iteration = iteration;
    }
    return DPT_OK;
}

/* The held-out bits per character of a language model: as many streams as
 * the minibatch (fewer when the text is short), from zero state. */
static dpt_status text_bpc(const dpt_fit_config *cfg, dpt_net *net, double *bpc)
{
    *bpc = NAN;
    const dpt_text *t = cfg->text_test;
    if (!t)
        return DPT_OK;
    int streams = cfg->batch, T = cfg->seq_len;
    while (streams > 1 && dpt_text_n_chunks(t, streams, T) < 1)
        streams--;
    if (dpt_text_n_chunks(t, streams, T) < 1) {
        if (dpt_text_n_chars(t) < 2)
            return DPT_OK; /* nothing to score */
        T = (int)dpt_text_n_chars(t) - 1;
    }
    return dpt_evaluate_text(net, t, streams, T, bpc);
}

/* One epoch of a sequence classifier. */
static dpt_status classifier_epoch(seq_run *r, int epoch, long skip, long planned, long *iteration,
                                   long *it_epoch, double *loss, double *lr, uint32_t *order,
                                   float **x, size_t *x_cap, float *t, int *len)
{
    const dpt_fit_config *cfg = r->job->cfg;
    const dpt_seqstore *ds = cfg->seq_train;
    size_t n = dpt_seqstore_n_obs(ds), N = (size_t)r->n_workers, rk = (size_t)r->rank;
    int k = dpt_net_n_outputs(r->net), my = r->share[r->rank];
    /* The epoch's order: dpt_datastore_shuffle's permutation with fit.c's
     * seed rule, then this worker's contiguous block. */
    for (size_t i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    dpt_rng rng;
    dpt_rng_seed(&rng, fit_epoch_seed(cfg->seed, epoch), 0);
    dpt_rng_shuffle(&rng, order, n);
    size_t block = n / N + (rk < n % N), start = rk * (n / N) + (rk < n % N ? rk : n % N);
    const uint32_t *mine = order + start;
    *it_epoch = skip;
    for (;;) {
        size_t at = (size_t)*it_epoch * (size_t)my;
        int more;
        dpt_status s = agree_more(r, at < block, &more);
        if (s != DPT_OK)
            return s;
        if (!more)
            return DPT_OK;
        double t_it = fit_now_s();
        int m = block - at < (size_t)my ? (int)(block - at) : my, T = 0, m_total = 0;
        if ((s = pad_batch(ds, mine + at, m, cfg->pad_left, k, x, x_cap, len, t, &T)) != DPT_OK ||
            (s = dpt_net_set_steps(r->net, T, len, m, cfg->pad_left)) != DPT_OK)
            return fit_at_iteration(s, epoch, *iteration + 1);
        dpt_net_set_iteration(r->net, epoch, *iteration + 1);
        *lr = dpt_lr_at(&cfg->lr_schedule, r->base_lr, epoch, *it_epoch, planned, cfg->epochs);
        dpt_optim_set_lr(r->opt, (float)*lr);
        s = dpt_train_step_optim(r->net, r->opt, r->comm, *x, t, m, loss, &m_total);
        if (s == DPT_OK && !isfinite(*loss))
            s = dpt_fail(DPT_ERR_NUMERIC, "the loss became %g (try a smaller --lr)", *loss);
        if (s != DPT_OK)
            return fit_at_iteration(s, epoch, *iteration + 1);
        ++*iteration, ++*it_epoch;
        if ((s = after_step(r, epoch, *it_epoch, *iteration, planned, *loss,
                            m_total / (fit_now_s() - t_it), *lr)) != DPT_OK)
            return s;
    }
}

/* One epoch of a language model: chunk k of this worker's streams at
 * iteration k, the state carried between them. */
static dpt_status lm_epoch(seq_run *r, int epoch, long skip, long planned, long *iteration,
                           long *it_epoch, double *loss, double *lr, int32_t *xi, int32_t *yi,
                           float *x, float *t)
{
    const dpt_fit_config *cfg = r->job->cfg;
    const dpt_text *text = cfg->text_train;
    int B = cfg->batch, T = cfg->seq_len, v = dpt_text_n_vocab(text);
    size_t rows = (size_t)r->count * (size_t)T;
    *it_epoch = skip;
    dpt_status s = dpt_net_set_steps(r->net, T, NULL, r->count, 0);
    if (s != DPT_OK)
        return s;
    for (;;) {
        int more, m_total = 0;
        if ((s = agree_more(r, *it_epoch < planned, &more)) != DPT_OK)
            return s;
        if (!more)
            return DPT_OK;
        double t_it = fit_now_s();
        if ((s = dpt_text_batch(text, B, T, r->first, r->count, (size_t)*it_epoch, xi, yi)) != DPT_OK)
            return fit_at_iteration(s, epoch, *iteration + 1);
        one_hot(xi, rows, v, x);
        one_hot(yi, rows, v, t);
        dpt_net_set_iteration(r->net, epoch, *iteration + 1);
        *lr = dpt_lr_at(&cfg->lr_schedule, r->base_lr, epoch, *it_epoch, planned, cfg->epochs);
        dpt_optim_set_lr(r->opt, (float)*lr);
        s = dpt_train_step_optim(r->net, r->opt, r->comm, x, t, r->count, loss, &m_total);
        if (s == DPT_OK && !isfinite(*loss))
            s = dpt_fail(DPT_ERR_NUMERIC, "the loss became %g (try a smaller --lr)", *loss);
        if (s != DPT_OK)
            return fit_at_iteration(s, epoch, *iteration + 1);
        ++*iteration, ++*it_epoch;
        /* characters per second */
        if ((s = after_step(r, epoch, *it_epoch, *iteration, planned, *loss,
                            (double)m_total * T / (fit_now_s() - t_it), *lr)) != DPT_OK)
            return s;
    }
}

dpt_status fit_seq_worker(dpt_comm *comm, void *arg)
{
    fit_job *job = arg;
    const dpt_fit_config *cfg = job->cfg;
    const int lm = cfg->text_train != NULL;
    seq_run r = {.job = job, .comm = comm, .rank = dpt_comm_rank(comm),
                 .n_workers = dpt_comm_size(comm)};
    int *share = malloc((size_t)r.n_workers * sizeof *share);
    uint32_t *order = NULL;
    int32_t *xi = NULL, *yi = NULL;
    float *x = NULL, *t = NULL;
    size_t x_cap = 0; /* floats in x (a classifier's grows with its batches) */
    int *len = NULL;
    if (!share)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    r.share = share;
    dpt_batch_shares(cfg->batch, r.n_workers, share);
    int my = share[r.rank];
    dpt_status s = DPT_OK;
    if (my < 1) {
        s = dpt_fail(DPT_ERR_ARG, "--batch %d is smaller than the %d workers", cfg->batch,
                     r.n_workers);
        goto done;
    }
    if (!lm && dpt_seqstore_n_obs(cfg->seq_train) < (size_t)r.n_workers) {
        s = dpt_fail(DPT_ERR_ARG, "%d workers but only %zu training sequences", r.n_workers,
                     dpt_seqstore_n_obs(cfg->seq_train));
        goto done;
    }
    char spec_buf[256];
    const char *def = lm ? dpt_net_default_lm_spec()
                         : dpt_net_default_seq_spec(dpt_seqstore_n_features(cfg->seq_train),
                                                    spec_buf, sizeof spec_buf);
    int n_classes = lm ? dpt_text_n_vocab(cfg->text_train) : dpt_seqstore_n_classes(cfg->seq_train);
    if ((s = fit_setup(job, comm, def, n_classes, share[0], check_net, &r.net, &r.opt, &r.start)))
        goto done;

    long planned;
    if (lm) {
        int v = dpt_text_n_vocab(cfg->text_train);
        size_t rows = (size_t)my * (size_t)cfg->seq_len;
        if ((s = dpt_text_stream_share(cfg->batch, r.n_workers, r.rank, &r.first, &r.count)))
            goto done;
        r.carry_floats = dpt_net_carry_floats(r.net);
        xi = malloc(rows * sizeof *xi), yi = malloc(rows * sizeof *yi);
        x = malloc(rows * (size_t)v * sizeof *x), t = malloc(rows * (size_t)v * sizeof *t);
        r.carry = malloc((size_t)cfg->batch * r.carry_floats * sizeof *r.carry + 1);
        if (!xi || !yi || !x || !t || !r.carry) {
            s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
            goto done;
        }
        dpt_net_set_stateful(r.net, 1);
        planned = (long)dpt_text_n_chunks(cfg->text_train, cfg->batch, cfg->seq_len);
        /* Mid-epoch, each worker takes its own streams' carried state. */
        if (cfg->resume && r.start.epoch_iteration > 0 && r.carry_floats) {
            if ((s = checkpoint_read_rows(cfg->resume, "carry", cfg->batch,
                                          (int64_t)r.carry_floats, r.first, r.count,
                                          r.carry)) != DPT_OK ||
                (s = dpt_net_carry_set(r.net, r.count, r.carry)) != DPT_OK)
                goto done;
        }
    } else {
        const dpt_seqstore *ds = cfg->seq_train;
        size_t n = dpt_seqstore_n_obs(ds);
        int k = dpt_net_n_outputs(r.net);
        order = malloc(n * sizeof *order);
        t = malloc((size_t)my * (size_t)k * sizeof *t);
        len = malloc((size_t)my * sizeof *len);
        if (!order || !t || !len) {
            s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
            goto done;
        }
        planned = fit_epoch_iterations(n, cfg->batch, r.n_workers);
    }

    r.base_lr = dpt_optim_get_lr(r.opt);
    r.t0 = fit_now_s() - r.start.elapsed_s;
    double loss = NAN, lr = r.base_lr;
    long iteration = r.start.iteration;
    int epoch = r.start.epoch;
    for (; epoch <= cfg->epochs; epoch++) {
        long skip = epoch == r.start.epoch ? r.start.epoch_iteration : 0, it_epoch = 0;
        /* Each epoch reads every stream from its start: no state from the
         * epoch before (a resumed run restored it above). */
        if (lm && skip == 0)
            dpt_net_reset_state(r.net);
        s = lm ? lm_epoch(&r, epoch, skip, planned, &iteration, &it_epoch, &loss, &lr, xi, yi, x, t)
               : classifier_epoch(&r, epoch, skip, planned, &iteration, &it_epoch, &loss, &lr,
                                  order, &x, &x_cap, t, len);
        if (s != DPT_OK)
            goto done;
        int stop;
        if ((s = stopped(&r, &stop)) != DPT_OK)
            goto done;
        if (stop) {
            atomic_store(&job->interrupted, 1);
            goto done;
        }
        if (r.rank == 0 && job->queue) {
            double acc = NAN, bpc = NAN;
            if (lm) {
                /* The evaluation runs its own streams through the network:
                 * this worker's carried state is kept aside meanwhile, so
                 * the end-of-run checkpoint holds the training streams'. */
                float *mine = r.carry + (size_t)r.first * r.carry_floats;
                if ((r.carry_floats && (s = dpt_net_carry_get(r.net, r.count, mine)) != DPT_OK) ||
                    (s = text_bpc(cfg, r.net, &bpc)) != DPT_OK ||
                    (r.carry_floats && (s = dpt_net_carry_set(r.net, r.count, mine)) != DPT_OK) ||
                    (s = dpt_net_set_steps(r.net, cfg->seq_len, NULL, r.count, 0)) != DPT_OK)
                    goto done;
            } else if (cfg->eval_every_epoch && cfg->seq_test)
                s = dpt_evaluate_seq(r.net, cfg->seq_test, cfg->pad_left, &acc, NULL);
            if (s != DPT_OK)
                goto done;
            dpt_progress p = {epoch, cfg->epochs, iteration, it_epoch, loss, fit_now_s() - r.t0,
                              0, lr, acc, 1, r.rank, 0, bpc, 0, {0}};
            fit_fill_wait(job, r.comm, &p);
            dpt_progress_send(job->queue, &p);
        }
    }
    double train_s = fit_now_s() - r.t0;
    /* The end-of-training checkpoint (a later --resume with more epochs
     * goes on from here); the carried state is gathered on every worker. */
    if (cfg->checkpoint_out && (s = checkpoint(&r, epoch, 0, iteration, train_s)) != DPT_OK)
        goto done;
    if (r.rank == 0) {
        dpt_fit_result *res = job->result;
        res->final_loss = loss;
        res->iterations = iteration;
        res->train_seconds = train_s;
        res->n_workers = r.n_workers;
        res->test_accuracy = NAN;
        if (cfg->checkpoint_out)
            res->checkpoint_iteration = iteration;
        dpt_kv kv[3];
        char num[32];
        size_t n = task_meta(job, kv, num, sizeof num);
        kv[n++] = (dpt_kv){lm ? "vocab" : "classes", job->classes_json};
        /* A GPU network's learnables and state live on the device. */
        if (dpt_net_device(r.net) >= 0 && (s = dpt_net_sync_to_host(r.net)) != DPT_OK)
            goto done;
        if (cfg->model_out && (s = fit_save_model(job, r.net, r.n_workers, iteration, kv, n)))
            goto done;
        if (lm)
            s = text_bpc(cfg, r.net, &res->test_bpc);
        else if (cfg->seq_test)
            s = dpt_evaluate_seq(r.net, cfg->seq_test, cfg->pad_left, &res->test_accuracy, NULL);
    }
done:
    free(order), free(xi), free(yi), free(x), free(t), free(len), free(r.carry);
    dpt_optim_free(r.opt);
    dpt_net_free(r.net);
    free(share);
    return s;
}
