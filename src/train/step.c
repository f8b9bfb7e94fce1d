/* The data-parallel training step of the MATLAB example, top to bottom:
 * one step for every device. Where the network's buffers live (host or
 * GPU) matters only inside the calls to net/ (net_impl.h's step
 * interface): the forward with the loss, the backward, the gradient
 * all-reduce and the pooled state are the network's, on its device. */
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "net/net_impl.h"
#include "optim/optim_impl.h"
#include "ops/ops.h"

#include <stdlib.h>
#include <string.h>

static int multi(dpt_comm *comm) { return comm && dpt_comm_size(comm) > 1; }

static dpt_status batch_position(dpt_comm *comm, int n_local, long *first, double *m_total,
                                 double *rows);

dpt_status dpt_train_aggregate(dpt_net *net, dpt_comm *comm, double *loss)
{
    /* Gradients were weighted by n_local / M at the loss: a plain sum is
     * the gradient of the whole minibatch. One call, one flat buffer. The
     * loss rides in the float64 all-reduce of the pooled state. */
    dpt_status s = net_grads_allreduce(net, comm);
    return s == DPT_OK ? net_pool_state(net, comm, loss) : s;
}

dpt_status dpt_train_step(dpt_net *net, dpt_sgdm *opt, dpt_comm *comm, const float *x,
                          const float *t, int n_local, double *loss, int *n_total)
{
    if (!opt)
        return dpt_fail(DPT_ERR_ARG, "train step: opt is NULL");
    dpt_optim o; /* a view of opt: its velocity is updated in place */
    optim_wrap_sgdm(&o, opt);
    return dpt_train_step_optim(net, &o, comm, x, t, n_local, loss, n_total);
}

dpt_status dpt_train_step_optim(dpt_net *net, dpt_optim *opt, dpt_comm *comm, const float *x,
                                const float *t, int n_local, double *loss, int *n_total)
{
    if (!net || !opt)
        return dpt_fail(DPT_ERR_ARG, "train step: %s is NULL", !net ? "net" : "opt");
    if (n_local < 1)
        return dpt_fail(DPT_ERR_ARG, "train step: %d observations on this worker", n_local);
    if (dpt_optim_n(opt) != dpt_net_n_params(net))
        return dpt_fail(DPT_ERR_ARG, "train step: optimizer has %zu parameters, network %zu",
                        dpt_optim_n(opt), dpt_net_n_params(net));
    if (!x || !t)
        return dpt_fail(DPT_ERR_ARG, "train step: %s is NULL", !x ? "x" : "t");
    /* 1. M, the size of the whole minibatch (shares may be uneven), and
     * this worker's first observation in it (randomness such as dropout is
     * drawn per global observation): every worker's share, in one
     * all-reduce of a slot per worker. */
    double m_total = n_local;
    long first = 0;
    /* A sequence output's loss is the mean over the valid time steps of
     * the whole minibatch (padding excluded): their count rides in the
     * same all-reduce. */
    int seq = dpt_net_output_is_sequence(net);
    double rows = seq ? (double)net_loss_valid_rows(net, t, n_local) : 0;
    dpt_status s = batch_position(comm, n_local, &first, &m_total, seq ? &rows : NULL);
    if (s != DPT_OK)
        return s;
    if (seq && rows < 1)
        return dpt_fail(DPT_ERR_ARG, "train step: the minibatch has no valid time step (every "
                        "target row is zero: all padding)");
    dpt_net_set_obs_offset(net, first);
    /* 2. Forward on this worker's share, and 3. the loss and its gradient
     * at the logits, weighted by n_local / M, or per valid time step by
     * 1 / their count (on a GPU the loss reaches the host in step 5). */
    double l = 0;
    float w = seq ? (float)(1.0 / rows) : (float)(n_local / m_total);
    /* On a GPU with one worker the update (6.) joins the step's CUDA graph. */
    net_step_plan_update(net, opt, comm);
    if ((s = net_step_forward_loss(net, x, t, n_local, w, seq ? 1.0 / rows : n_local / m_total,
                                   &l)) != DPT_OK)
        return s;
    /* 4. Backward into the flat gradient buffer. */
    if ((s = net_step_backward(net)) != DPT_OK)
        return s;
    /* 5. Combine loss, gradients and batch-norm state across workers. */
    if ((s = dpt_train_aggregate(net, comm, &l)) != DPT_OK)
        return s;
    /* 6. The same update on every worker, where the network lives. */
    if ((s = net_optim_step(net, opt)) != DPT_OK)
        return s;
#ifndef NDEBUG
    /* Debug builds check invariant 2 after every step: every worker holds
     * worker 0's bits (on a GPU this copies the learnables back). */
    if (multi(comm)) {
        uint64_t h = dpt_net_hash(net), h0 = h;
        if ((s = dpt_comm_broadcast(comm, &h0, sizeof h0, 0)) != DPT_OK)
            return s;
        if (h != h0)
            return dpt_fail(DPT_ERR_COMM, "worker %d's learnables or state differ from worker 0's "
                            "after a step", dpt_comm_rank(comm));
    }
#endif
    *loss = l;
    if (n_total)
        *n_total = (int)m_total;
    return DPT_OK;
}

dpt_status dpt_train_batch_position(dpt_comm *comm, int n_local, long *first, double *m_total)
{
    if (!first || !m_total)
        return dpt_fail(DPT_ERR_ARG, "dpt_train_batch_position: %s is NULL",
                        !first ? "first" : "m_total");
    return batch_position(comm, n_local, first, m_total, NULL);
}

/* dpt_train_batch_position, and with rows (not NULL) this worker's count
 * summed over the workers in the same all-reduce (one more slot). */
static dpt_status batch_position(dpt_comm *comm, int n_local, long *first, double *m_total,
                                 double *rows)
{
    *first = 0;
    *m_total = n_local;
    if (!multi(comm))
        return DPT_OK;
    /* A slot per worker, summed: every worker learns every share. */
    int size = dpt_comm_size(comm), rank = dpt_comm_rank(comm);
    size_t slots = (size_t)size + (rows ? 1 : 0);
    double small[65], *shares = slots <= 65 ? small : calloc(slots, sizeof *shares);
    if (!shares)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    memset(shares, 0, slots * sizeof *shares);
    shares[rank] = n_local;
    if (rows)
        shares[size] = *rows;
    dpt_status s = dpt_comm_allreduce_f64(comm, shares, shares, slots);
    if (s == DPT_OK && rows)
        *rows = shares[size];
    if (s == DPT_OK) {
        *m_total = 0;
        for (int j = 0; j < size; j++) {
            if (j < rank)
                *first += (long)shares[j];
            *m_total += shares[j];
        }
    }
    if (shares != small)
        free(shares);
    return s;
}

void dpt_batch_shares(int batch, int n_workers, int *share)
{
    for (int j = 0; j < n_workers; j++)
        share[j] = batch / n_workers + (j < batch % n_workers ? 1 : 0);
}

int dpt_batch_global(int batch, int n_workers, int on_gpu)
{
    return on_gpu ? batch * n_workers : batch;
}
