/* A data-parallel training step driven from one thread: N network
 * replicas, each with its optimizer, kept between steps; each call runs
 * dpt_spmd_run once, worker j training on its share of the minibatch with
 * dpt_train_step_optim. For callers that cannot write an spmd worker
 * function (a language binding whose code may not run on the library's
 * threads). */
#include "dptrain/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct dpt_parallel {
    int n_workers;
    int sync_bn;
    int n_in, n_out;   /* floats of one observation's input, classes */
    int max_batch;     /* global */
    dpt_net **nets;    /* [n_workers] replicas */
    dpt_optim **opts;  /* [n_workers] */
    int *share;        /* [n_workers], scratch of each step */
};

/* One step's arguments, shared read-only by the workers but for the loss. */
typedef struct step_job {
    dpt_parallel *p;
    const float *x, *t;
    int n;
    long epoch, iteration;
    double loss; /* worker 0's */
} step_job;

dpt_status dpt_parallel_new(const char *spec, const char *source, int n_classes, int max_batch,
                            uint64_t seed, int n_workers, dpt_optim_kind kind,
                            const dpt_optim_opts *opts, int sync_bn, dpt_parallel **out)
{
    if (!out)
        return dpt_fail(DPT_ERR_ARG, "parallel: NULL output");
    *out = NULL;
    if (n_workers < 1 || n_workers > 1024)
        return dpt_fail(DPT_ERR_ARG, "parallel: %d workers (1 to 1024)", n_workers);
    if (max_batch < n_workers)
        return dpt_fail(DPT_ERR_ARG, "parallel: minibatch %d is smaller than the %d workers",
                        max_batch, n_workers);
    dpt_parallel *p = calloc(1, sizeof *p);
    if (!p)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    p->n_workers = n_workers, p->sync_bn = sync_bn, p->max_batch = max_batch;
    p->nets = calloc((size_t)n_workers, sizeof *p->nets);
    p->opts = calloc((size_t)n_workers, sizeof *p->opts);
    p->share = calloc((size_t)n_workers, sizeof *p->share);
    dpt_status s = DPT_OK;
    if (!p->nets || !p->opts || !p->share) {
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Worker 0 holds the largest share (dpt_batch_shares). */
    dpt_batch_shares(max_batch, n_workers, p->share);
    for (int j = 0; j < n_workers; j++) {
        /* The same spec and seed: every replica starts with the same bits. */
        if ((s = dpt_net_from_spec(spec ? spec : dpt_net_default_spec(),
                                   source ? source : spec ? "<spec>" : "<default>", n_classes,
                                   p->share[0], seed, &p->nets[j])) != DPT_OK ||
            (s = dpt_optim_new(kind, dpt_net_n_params(p->nets[j]), opts, &p->opts[j])) != DPT_OK)
            goto fail;
    }
    if (dpt_net_is_sequence(p->nets[0])) {
        s = dpt_fail(DPT_ERR_ARG, "parallel: %s is a sequence network (image networks only)",
                     source ? source : "the spec");
        goto fail;
    }
    int chw[3];
    dpt_net_input_shape(p->nets[0], chw);
    p->n_in = chw[0] * chw[1] * chw[2];
    p->n_out = dpt_net_n_outputs(p->nets[0]);
    *out = p;
    return DPT_OK;
fail:
    dpt_parallel_free(p);
    return s;
}

void dpt_parallel_free(dpt_parallel *p)
{
    if (!p)
        return;
    for (int j = 0; p->nets && j < p->n_workers; j++)
        dpt_net_free(p->nets[j]);
    for (int j = 0; p->opts && j < p->n_workers; j++)
        dpt_optim_free(p->opts[j]);
    free(p->nets);
    free(p->opts);
    free(p->share);
    free(p);
}

int dpt_parallel_n_workers(const dpt_parallel *p) { return p ? p->n_workers : 0; }

dpt_net *dpt_parallel_net(dpt_parallel *p, int worker)
{
    return p && worker >= 0 && worker < p->n_workers ? p->nets[worker] : NULL;
}

dpt_optim *dpt_parallel_optim(dpt_parallel *p, int worker)
{
    return p && worker >= 0 && worker < p->n_workers ? p->opts[worker] : NULL;
}

void dpt_parallel_set_lr(dpt_parallel *p, float lr)
{
    for (int j = 0; p && j < p->n_workers; j++)
        dpt_optim_set_lr(p->opts[j], lr);
}

static dpt_status step_worker(dpt_comm *comm, void *arg)
{
    step_job *job = arg;
    dpt_parallel *p = job->p;
    int rank = dpt_comm_rank(comm);
    long first = 0;
    for (int j = 0; j < rank; j++)
        first += p->share[j];
    dpt_net *net = p->nets[rank];
    dpt_net_set_iteration(net, job->epoch, job->iteration);
    if (p->sync_bn)
        dpt_net_set_sync_bn(net, comm);
    double loss = NAN;
    dpt_status s = dpt_train_step_optim(net, p->opts[rank], comm, job->x + first * p->n_in,
                                        job->t + first * p->n_out, p->share[rank], &loss, NULL);
    /* The communicator ends with this call: no replica may keep it. */
    if (p->sync_bn)
        dpt_net_set_sync_bn(net, NULL);
    if (rank == 0)
        job->loss = loss;
    return s;
}

dpt_status dpt_parallel_step(dpt_parallel *p, const float *x, const float *t, int n, long epoch,
                             long iteration, double *loss)
{
    if (!p || !x || !t)
        return dpt_fail(DPT_ERR_ARG, "parallel step: %s is NULL", !p ? "p" : !x ? "x" : "t");
    if (n < p->n_workers || n > p->max_batch)
        return dpt_fail(DPT_ERR_ARG, "parallel step: %d observations (%d workers, minibatch at "
                        "most %d)", n, p->n_workers, p->max_batch);
    dpt_batch_shares(n, p->n_workers, p->share);
    step_job job = {p, x, t, n, epoch, iteration, NAN};
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = p->n_workers;
    dpt_status s = dpt_spmd_run(&cfg, step_worker, &job);
    if (s == DPT_OK && loss)
        *loss = job.loss;
    return s;
}
