/* The data-parallel training step of the MATLAB example, top to bottom. */
#include "dptrain/train.h"
#include "net/net_impl.h"
#include "ops/ops.h"

#include <stdlib.h>
#include <string.h>

static int multi(dpt_comm *comm) { return comm && dpt_comm_size(comm) > 1; }

dpt_status dpt_train_aggregate(dpt_net *net, dpt_comm *comm, double *loss)
{
    if (net->gpu) /* the same with device buffers */
        return net_gpu_aggregate(net, comm, loss);
    dpt_status s = DPT_OK;
    if (multi(comm)) {
        /* Gradients were weighted by n_local / M at the loss: a plain sum is
         * the gradient of the whole minibatch. One call, one flat buffer. */
        float *g = dpt_net_grads(net);
        s = dpt_comm_allreduce_f32(comm, g, g, dpt_net_n_params(net));
        if (s == DPT_OK)
            s = dpt_comm_allreduce_f64(comm, loss, loss, 1);
    }
    if (s == DPT_OK)
        s = dpt_net_update_state(net, comm);
    return s;
}

dpt_status dpt_train_step(dpt_net *net, dpt_sgdm *opt, dpt_comm *comm, const float *x,
                          const float *t, int n_local, double *loss, int *n_total)
{
    if (n_local < 1)
        return dpt_fail(DPT_ERR_ARG, "train step: %d observations on this worker", n_local);
    if (opt->n != dpt_net_n_params(net))
        return dpt_fail(DPT_ERR_ARG, "train step: optimizer has %zu parameters, network %zu",
                        opt->n, dpt_net_n_params(net));
    if (net->gpu) /* the same six steps with device buffers: net/net_gpu.c */
        return net_gpu_train_step(net, opt, comm, x, t, n_local, loss, n_total);
    /* 1. M, the size of the whole minibatch (shares may be uneven), and
     * this worker's first observation in it (randomness such as dropout is
     * drawn per global observation): every worker's share, in one
     * all-reduce of a slot per worker. */
    double m_total = n_local;
    long first = 0;
    dpt_status s = DPT_OK;
    if (multi(comm)) {
        int size = dpt_comm_size(comm), rank = dpt_comm_rank(comm);
        double small[64], *shares = size <= 64 ? small : calloc((size_t)size, sizeof *shares);
        if (!shares)
            return dpt_fail(DPT_ERR_NOMEM, "out of memory");
        memset(shares, 0, (size_t)size * sizeof *shares);
        shares[rank] = n_local;
        s = dpt_comm_allreduce_f64(comm, shares, shares, (size_t)size);
        m_total = 0;
        for (int j = 0; j < size; j++) {
            if (j < rank)
                first += (long)shares[j];
            m_total += shares[j];
        }
        if (shares != small)
            free(shares);
        if (s != DPT_OK)
            return s;
    }
    dpt_net_set_obs_offset(net, first);
    /* 2. Forward on this worker's share. */
    const float *p;
    if ((s = dpt_net_forward(net, x, n_local, DPT_MODE_TRAIN, &p)) != DPT_OK)
        return s;
    /* 3. Loss and its gradient at the logits, weighted by n_local / M. */
    int k = dpt_net_n_outputs(net);
    float w = (float)(n_local / m_total);
    float *dlogits = dpt_net_output_grad(net);
    double l = dpt_softmax_xent(p, t, n_local, k, w, dlogits) * (n_local / m_total);
    /* 4. Backward into the flat gradient buffer. */
    if ((s = dpt_net_backward(net, dlogits, 1)) != DPT_OK)
        return s;
    /* 5. Combine loss, gradients and batch-norm state across workers. */
    if ((s = dpt_train_aggregate(net, comm, &l)) != DPT_OK)
        return s;
    /* 6. The same update on every worker. */
    dpt_sgdm_step(opt, dpt_net_params(net), dpt_net_grads(net));
#ifndef NDEBUG
    /* Debug builds check invariant 2 after every step: every worker holds
     * worker 0's bits. */
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

void dpt_batch_shares(int batch, int n_workers, int *share)
{
    for (int j = 0; j < n_workers; j++)
        share[j] = batch / n_workers + (j < batch % n_workers ? 1 : 0);
}

int dpt_batch_global(int batch, int n_workers, int on_gpu)
{
    return on_gpu ? batch * n_workers : batch;
}
