/* MATLAB's "Train Network in Parallel with Custom Training Loop", step by
 * step, written against libdptrain's public API.
 *
 *   parallel_custom_loop DATA [EPOCHS [WORKERS [MODEL]]]
 *
 * DATA is a folder with one sub-folder of images per class (the digits:
 * DATA/0/1.png, ..., DATA/9/...); EPOCHS defaults to 20; MODEL, when
 * given, is where the trained network is saved (safetensors). Under
 * mpirun each rank is one worker.
 *
 * Step 3's canUseGPU: with GPUs (a CUDA build and a device), one worker
 * per GPU and the minibatch grown with their count (128 per GPU);
 * otherwise, or when WORKERS asks for more workers than there are GPUs, a
 * pool of CPU workers (WORKERS, default one per core) sharing 128.
 *
 * Build: cc parallel_custom_loop.c $(pkg-config --cflags --libs dptrain)
 * Each numbered step below is the step of the same number in the original. */
#include "dptrain/dptrain.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* What every worker needs, shared read-only (the variables the spmd block
 * uses), plus worker 1's results. */
typedef struct run {
    const dpt_datastore *train, *test;
    int n_classes;
    int epochs;
    int batch;              /* global minibatch size */
    int on_gpu;             /* step 3: one GPU per worker */
    float lr, momentum;
    const char *model_path; /* NULL: not saved */
    dpt_progress_queue *progress; /* worker 1 -> client */
    double accuracy;        /* set by worker 1 */
} run;

static double seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC); /* C11 */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Step 6 (client side). Runs on the progress queue's client thread for
 * each record worker 1 sends (MATLAB's afterEach); training never waits
 * for it. */
static void show_progress(const dpt_progress *p, void *arg)
{
    (void)arg;
    printf("epoch %2d/%d  iteration %5ld  loss %.4f  elapsed %.1f s\n", p->epoch, p->epochs,
           p->iteration, p->loss, p->elapsed_s);
    fflush(stdout);
}

/* Step 2. Define the network: three conv–batch-norm–ReLU blocks, a fully
 * connected layer with one output per class, and softmax. Every worker
 * builds its own replica; the same seed gives every replica the same
 * initial learnables. */
static dpt_status define_network(int n_classes, int max_batch, dpt_net **net)
{
    dpt_net_builder *b = NULL;
    dpt_status s = dpt_net_builder_new(&b);
    if (s != DPT_OK)
        return s;
    dpt_net_builder_add_input(b, "input", 28, 28, 1);
    dpt_net_builder_add_conv(b, "conv1", 5, 20, 1, 0);
    dpt_net_builder_add_batchnorm(b, "bn1");
    dpt_net_builder_add_relu(b, "relu1");
    dpt_net_builder_add_conv(b, "conv2", 3, 20, 1, 1);
    dpt_net_builder_add_batchnorm(b, "bn2");
    dpt_net_builder_add_relu(b, "relu2");
    dpt_net_builder_add_conv(b, "conv3", 3, 20, 1, 1);
    dpt_net_builder_add_batchnorm(b, "bn3");
    dpt_net_builder_add_relu(b, "relu3");
    dpt_net_builder_add_fc(b, "fc", n_classes);
    dpt_net_builder_add_softmax(b, "softmax");
    /* Errors are sticky: the first failing add, if any, is reported here. */
    s = dpt_net_build(b, n_classes, max_batch, 0 /* seed */, net);
    dpt_net_builder_free(b);
    return s;
}

/* Step 7. Classify the test images in inference mode (batch norm uses the
 * trained running statistics) and count the correct answers. */
static dpt_status test_accuracy(dpt_net *net, const dpt_datastore *test, double *accuracy)
{
    int chw[3], k = dpt_net_n_outputs(net);
    dpt_net_input_shape(net, chw);
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = dpt_net_max_batch(net);
    o.channels = chw[0], o.height = chw[1], o.width = chw[2];
    dpt_mbq *q = NULL;
    dpt_status s = dpt_mbq_new(test, &o, &q);
    int *predicted = malloc((size_t)o.batch_size * sizeof *predicted);
    if (s == DPT_OK && !predicted)
        s = dpt_fail(DPT_ERR_NOMEM, "out of memory");
    long correct = 0, total = 0;
    while (s == DPT_OK && dpt_mbq_has_data(q)) {
        dpt_batch b;
        const float *scores;
        if ((s = dpt_mbq_next(q, &b)) != DPT_OK ||
            (s = dpt_net_forward(net, b.x.data, b.n, DPT_MODE_PREDICT, &scores)) != DPT_OK)
            break;
        dpt_argmax_rows(scores, b.n, k, predicted);
        for (int i = 0; i < b.n; i++)
            correct += predicted[i] == b.labels[i];
        total += b.n;
    }
    free(predicted);
    dpt_mbq_free(q);
    *accuracy = total ? (double)correct / (double)total : NAN;
    return s;
}

/* Steps 4 to 7 run in this function, once per worker (the spmd block). */
static dpt_status worker(dpt_comm *comm, void *arg)
{
    run *r = arg;
    int rank = dpt_comm_rank(comm), n_workers = dpt_comm_size(comm);
    dpt_net *net = NULL;
    dpt_sgdm *sgdm = NULL;
    dpt_datastore *shuffled = NULL, *mine = NULL;
    dpt_mbq *mbq = NULL;
    dpt_status s = DPT_OK;

    /* Step 4. This worker's share of the minibatch: floor(batch/N), the
     * remainder going to the first workers. */
    int *shares = malloc((size_t)n_workers * sizeof *shares);
    if (!shares)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    dpt_batch_shares(r->batch, n_workers, shares);
    int my_batch = shares[rank];
    free(shares);
    if (my_batch < 1)
        return dpt_fail(DPT_ERR_ARG, "minibatch %d is smaller than the %d workers", r->batch,
                        n_workers);

    if ((s = define_network(r->n_classes, my_batch, &net)) != DPT_OK ||
        (s = dpt_sgdm_new(dpt_net_n_params(net), r->lr, r->momentum, 0.0f, &sgdm)) != DPT_OK)
        goto done;
    /* Step 3 (cont.): each worker moves its replica to its own GPU. */
    if (r->on_gpu && (s = dpt_net_to_gpu(net, dpt_gpu_for_worker(comm))) != DPT_OK)
        goto done;

    /* Step 1 (cont.): the queue resizes each image to the network's input
     * size and one-hot encodes its label. */
    int chw[3];
    dpt_net_input_shape(net, chw);
    dpt_mbq_options options = DPT_MBQ_OPTIONS_INIT;
    options.batch_size = my_batch;
    options.channels = chw[0], options.height = chw[1], options.width = chw[2];

    double start = seconds(), loss = NAN;
    long iteration = 0;
    for (int epoch = 1; epoch <= r->epochs; epoch++) {
        /* Step 5. Shuffle (the same seed on every worker, so all see the same
         * order), then take this worker's partition of the data. */
        if ((s = dpt_datastore_shuffle(r->train, (uint64_t)epoch, &shuffled)) != DPT_OK ||
            (s = dpt_datastore_partition(shuffled, n_workers, rank, &mine)) != DPT_OK ||
            (s = dpt_mbq_new(mine, &options, &mbq)) != DPT_OK)
            goto done;

        for (;;) {
            /* Loop while *every* worker still has data. */
            int more = dpt_mbq_has_data(mbq);
            if ((s = dpt_comm_allreduce_and(comm, &more)) != DPT_OK)
                goto done;
            if (!more)
                break;
            dpt_batch b;
            if ((s = dpt_mbq_next(mbq, &b)) != DPT_OK)
                goto done;

            /* The whole minibatch has M observations; this worker's
             * results count with weight n_local / M. Its share starts at
             * observation `first` of the minibatch: layers that draw
             * randomness (dropout) draw by that place and the iteration,
             * so any worker count trains the same network. */
            double m_total;
            long first;
            if ((s = dpt_train_batch_position(comm, b.n, &first, &m_total)) != DPT_OK)
                goto done;
            double weight = b.n / m_total;
            dpt_net_set_iteration(net, epoch, iteration + 1);
            dpt_net_set_obs_offset(net, first);

            /* Loss and gradients on this worker's share: forward in
             * training mode, cross-entropy, backward from the gradient at
             * the softmax input. On a GPU the scores come back to the
             * host and the loss gradient goes to the device; the
             * gradients themselves stay there, so this worker's loss and
             * gradient are weighted at the loss, not by gplus. */
            const float *probs;
            float *dlogits = dpt_net_output_grad(net);
            if ((s = dpt_net_forward(net, b.x.data, b.n, DPT_MODE_TRAIN, &probs)) != DPT_OK ||
                (s = dpt_loss_softmax_xent(probs, b.y.data, b.n, r->n_classes,
                                           r->on_gpu ? weight : 1.0, &loss, dlogits)) != DPT_OK ||
                (s = dpt_net_backward(net, dlogits, 1)) != DPT_OK)
                goto done;

            if (r->on_gpu) {
                /* Sum the weighted loss and gradients across workers on the
                 * devices (NCCL, or staged through the host when GPUs are
                 * shared), pool the batch-norm state, and apply the SGDM
                 * update on the device: the same result as the gplus
                 * calls below. */
                if ((s = dpt_train_aggregate(net, comm, &loss)) != DPT_OK ||
                    (s = dpt_net_sgdm_step(net, sgdm)) != DPT_OK)
                    goto done;
            } else {
                /* Combine loss and gradients across workers:
                 * gplus(weight·x). Combine the batch-norm statistics with
                 * the same weights and update the running state
                 * (aggregateState). */
                if ((s = dpt_gplus_f64(comm, &loss, 1, weight)) != DPT_OK ||
                    (s = dpt_gplus_f32(comm, dpt_net_grads(net), dpt_net_n_params(net),
                                       weight)) != DPT_OK ||
                    (s = dpt_net_update_state(net, comm)) != DPT_OK)
                    goto done;
                /* Every worker applies the same SGDM update. */
                dpt_sgdm_step(sgdm, dpt_net_params(net), dpt_net_grads(net));
            }
            if (!isfinite(loss)) {
                s = dpt_fail(DPT_ERR_NUMERIC, "loss became %g at iteration %ld", loss, iteration);
                goto done;
            }
            iteration++;
        }
        dpt_mbq_free(mbq), mbq = NULL;
        dpt_datastore_free(mine), mine = NULL;
        dpt_datastore_free(shuffled), shuffled = NULL;

        /* Step 6. Worker 1 sends epoch, loss, iteration and elapsed time to
         * the client. */
        if (rank == 0 && r->progress) {
            dpt_progress p = {0};
            p.epoch = epoch, p.epochs = r->epochs, p.iteration = iteration, p.loss = loss;
            p.elapsed_s = seconds() - start, p.test_accuracy = NAN, p.end_of_epoch = 1;
            dpt_progress_send(r->progress, &p);
        }
    }

    /* Step 7 on worker 1: test accuracy, and the trained network saved. */
    if (rank == 0) {
        if ((s = test_accuracy(net, r->test, &r->accuracy)) != DPT_OK)
            goto done;
        /* A GPU network's host copy is brought up to date before saving. */
        if (r->model_path && ((s = dpt_net_sync_to_host(net)) != DPT_OK ||
                              (s = dpt_net_save(net, r->model_path, NULL, 0)) != DPT_OK))
            goto done;
    }
done:
    dpt_mbq_free(mbq);
    dpt_datastore_free(mine);
    dpt_datastore_free(shuffled);
    dpt_sgdm_free(sgdm);
    dpt_net_free(net);
    return s;
}

static int positive_int(const char *text, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 1 || v > 100000) {
        fprintf(stderr, "parallel_custom_loop: %s: '%s' is not a positive integer\n", what, text);
        exit(1);
    }
    return (int)v;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 5) {
        fprintf(stderr, "usage: parallel_custom_loop DATA [EPOCHS [WORKERS [MODEL]]]\n");
        return 1;
    }
    int epochs = argc > 2 ? positive_int(argv[2], "EPOCHS") : 20;
    int asked = argc > 3 ? positive_int(argv[3], "WORKERS") : 0;

    /* Step 1. An image datastore over the folder, labels from the
     * sub-folder names, split 90/10 per label at random. */
    dpt_datastore *all = NULL, *train = NULL, *test = NULL;
    dpt_status s = dpt_datastore_open_folder(argv[1], NULL, &all);
    if (s == DPT_OK)
        s = dpt_datastore_split_each_label(all, 0.9, 0 /* seed */, &train, &test);

    /* Step 3. canUseGPU: one worker per GPU when this build has CUDA and
     * a device is found, and the minibatch grows with the GPU count.
     * Otherwise (or when WORKERS asks for more workers than GPUs) a pool
     * of CPU workers, one per core unless WORKERS says otherwise, each
     * with its share of the cores for the BLAS, sharing a minibatch of
     * 128. Under mpirun the pool is the ranks, and each rank takes the
     * GPU of its node-local rank. */
    int n_gpus = dpt_gpu_count();
    int on_gpu = n_gpus > 0 && (asked == 0 || asked <= n_gpus);
    int workers = asked ? asked : on_gpu ? n_gpus : dpt_cpu_count();
    dpt_spmd_config pool = DPT_SPMD_CONFIG_INIT;
    pool.n_workers = workers;
    int cores = dpt_cpu_count();
    dpt_blas_set_threads(cores > workers ? cores / workers : 1);
    if (on_gpu) {
        char name[128] = "";
        dpt_gpu_name(0, name, sizeof name);
        printf("device: %d GPU worker(s) (%s), minibatch %d per GPU\n", workers, name, 128);
    } else {
        printf("device: CPU pool of %d worker(s), minibatch 128 shared\n", workers);
    }

    /* Step 4. Training options: 20 epochs, minibatch 128, SGD with
     * momentum (learning rate 0.01, momentum 0.9). */
    run r = {train, test, all ? dpt_datastore_n_classes(all) : 0, epochs,
             dpt_batch_global(128, workers, on_gpu), on_gpu, 0.01f, 0.9f,
             argc > 4 ? argv[4] : NULL, NULL, NAN};

    /* Step 6 (client side): a queue from worker 1 to this thread's callback. */
    if (s == DPT_OK)
        s = dpt_progress_queue_new(0, show_progress, NULL, &r.progress);

    /* Steps 4 to 7 on every worker. */
    if (s == DPT_OK)
        s = dpt_spmd_run(&pool, worker, &r);
    dpt_progress_queue_free(r.progress); /* delivers what is still queued */
    if (s == DPT_OK && !isnan(r.accuracy))
        printf("test accuracy %.3f (%zu test images)\n", r.accuracy, dpt_datastore_n_obs(test));
    if (s != DPT_OK)
        fprintf(stderr, "parallel_custom_loop: %s\n", dpt_last_error());
    dpt_datastore_free(test);
    dpt_datastore_free(train);
    dpt_datastore_free(all);
    return s == DPT_OK ? 0 : 1;
}
