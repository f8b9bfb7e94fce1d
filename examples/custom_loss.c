/* A loss of your own in the data-parallel loop: cross-entropy with label
 * smoothing, written here rather than taken from the library. The loop is
 * that of parallel_custom_loop.c, shortened; what changes is the loss and
 * its gradient, handed to dpt_net_backward, and dpt_train_aggregate
 * combining loss, gradients and batch-norm state across workers.
 *
 *   custom_loss DATA [EPOCHS [WORKERS]]
 *
 * Build: cc custom_loss.c $(pkg-config --cflags --libs dptrain) */
#include "dptrain/dptrain.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define SMOOTHING 0.1 /* share of each target spread evenly over the classes */

typedef struct run {
    const dpt_datastore *train, *test;
    int epochs;
    double accuracy; /* set by worker 1 */
} run;

/* Label-smoothed cross-entropy of probs [n, k] against one-hot targets
 * t [n, k]: the target becomes s = (1 − ε)·t + ε/k, the loss
 * −Σ s·log p / n, and its gradient at the softmax input (p − s) / n. Both
 * are multiplied by `weight`, this worker's share n / M of the minibatch,
 * so that summing over workers gives the minibatch's mean. */
static double smoothed_xent(const float *p, const float *t, int n, int k, double weight, float *dy)
{
    double loss = 0.0;
    for (int i = 0; i < n * k; i++) {
        double s = (1.0 - SMOOTHING) * t[i] + SMOOTHING / k;
        loss -= s * log(p[i] > 1e-30f ? p[i] : 1e-30f);
        dy[i] = (float)(weight * (p[i] - s) / n);
    }
    return weight * loss / n;
}

static dpt_status worker(dpt_comm *comm, void *arg)
{
    run *r = arg;
    int rank = dpt_comm_rank(comm), n_workers = dpt_comm_size(comm);
    int k = dpt_datastore_n_classes(r->train);
    int my_batch = 128 / n_workers + (rank < 128 % n_workers);
    dpt_net *net = NULL;
    dpt_sgdm *sgdm = NULL;
    dpt_datastore *shuffled = NULL, *mine = NULL;
    dpt_mbq *mbq = NULL;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "<default>", k, my_batch, 0, &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &sgdm);
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = my_batch, o.channels = 1, o.height = 28, o.width = 28;
    double loss = NAN;
    for (int epoch = 1; s == DPT_OK && epoch <= r->epochs; epoch++) {
        if ((s = dpt_datastore_shuffle(r->train, (uint64_t)epoch, &shuffled)) != DPT_OK ||
            (s = dpt_datastore_partition(shuffled, n_workers, rank, &mine)) != DPT_OK ||
            (s = dpt_mbq_new(mine, &o, &mbq)) != DPT_OK)
            break;
        for (;;) {
            int more = dpt_mbq_has_data(mbq);
            dpt_batch b;
            const float *p;
            double m_total;
            if ((s = dpt_comm_allreduce_and(comm, &more)) != DPT_OK || !more ||
                (s = dpt_mbq_next(mbq, &b)) != DPT_OK)
                break;
            m_total = b.n;
            if ((s = dpt_gplus_f64(comm, &m_total, 1, 1.0)) != DPT_OK ||
                (s = dpt_net_forward(net, b.x.data, b.n, DPT_MODE_TRAIN, &p)) != DPT_OK)
                break;
            /* The custom loss: its gradient goes into the network's output
             * gradient buffer and backward starts from the softmax input. */
            float *dy = dpt_net_output_grad(net);
            loss = smoothed_xent(p, b.y.data, b.n, k, b.n / m_total, dy);
            if ((s = dpt_net_backward(net, dy, 1)) != DPT_OK ||
                (s = dpt_train_aggregate(net, comm, &loss)) != DPT_OK)
                break;
            dpt_sgdm_step(sgdm, dpt_net_params(net), dpt_net_grads(net));
        }
        dpt_mbq_free(mbq), mbq = NULL;
        dpt_datastore_free(mine), mine = NULL;
        dpt_datastore_free(shuffled), shuffled = NULL;
        if (s == DPT_OK && rank == 0)
            printf("epoch %d  loss %.4f\n", epoch, loss);
    }
    if (s == DPT_OK && rank == 0)
        s = dpt_evaluate(net, r->test, &r->accuracy, NULL);
    dpt_mbq_free(mbq);
    dpt_datastore_free(mine);
    dpt_datastore_free(shuffled);
    dpt_sgdm_free(sgdm);
    dpt_net_free(net);
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: custom_loss DATA [EPOCHS [WORKERS]]\n");
        return 1;
    }
    dpt_spmd_config pool = DPT_SPMD_CONFIG_INIT;
    pool.n_workers = argc > 3 ? atoi(argv[3]) : 2;
    run r = {NULL, NULL, argc > 2 ? atoi(argv[2]) : 5, NAN};
    dpt_datastore *all = NULL, *train = NULL, *test = NULL;
    dpt_status s = dpt_datastore_open_folder(argv[1], NULL, &all);
    if (s == DPT_OK)
        s = dpt_datastore_split_each_label(all, 0.9, 0, &train, &test);
    r.train = train, r.test = test;
    if (s == DPT_OK)
        s = dpt_spmd_run(&pool, worker, &r);
    if (s == DPT_OK && !isnan(r.accuracy))
        printf("test accuracy %.3f\n", r.accuracy);
    if (s != DPT_OK)
        fprintf(stderr, "custom_loss: %s\n", dpt_last_error());
    dpt_datastore_free(test);
    dpt_datastore_free(train);
    dpt_datastore_free(all);
    return s == DPT_OK ? 0 : 1;
}
