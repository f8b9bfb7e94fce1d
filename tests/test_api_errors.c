/* Error paths of every fallible public call that examples/parallel_custom_loop.c
 * and examples/custom_loss.c use: a bad argument (or bad input) gives a
 * status and a message saying what is wrong, never a crash, and leaves
 * outputs NULL. Calls that cannot fail (accessors, dpt_sgdm_step,
 * dpt_argmax_rows, dpt_batch_shares, ...) are exercised by the examples and
 * by test_api; the _free calls are checked to accept NULL.
 * Uses only the public header. */
#include "dptrain/dptrain.h"
#include "testutil.h"

#include <unistd.h>

/* The status must be `want` and this thread's message must contain `needle`. */
static void expect(const char *what, dpt_status got, dpt_status want, const char *needle)
{
    const char *msg = dpt_last_error();
    CHECK_MSG(got == want, "%s: status %d (%s), want %d (%s); message '%s'", what, (int)got,
              dpt_status_str(got), (int)want, dpt_status_str(want), msg);
    CHECK_MSG(msg && *msg, "%s: no message", what);
    CHECK_MSG(msg && strstr(msg, needle), "%s: message '%s' lacks '%s'", what, msg ? msg : "",
              needle);
    dpt_clear_error();
}

static const char small_spec[] = "input in size=8x8x1\n"
                                 "conv c1 filter=3 filters=2\n"
                                 "batchnorm bn\n"
                                 "relu r\n"
                                 "fc fc outputs=classes\n"
                                 "softmax sm\n";

static void test_status_basics(void)
{
    dpt_clear_error();
    CHECK(strcmp(dpt_last_error(), "") == 0);
    CHECK(dpt_fail(DPT_ERR_IO, "%s: cannot open", "x.png") == DPT_ERR_IO);
    CHECK(strcmp(dpt_last_error(), "x.png: cannot open") == 0);
    for (int s = DPT_OK; s <= DPT_ERR_INTERRUPTED; s++)
        CHECK(dpt_status_str((dpt_status)s) && *dpt_status_str((dpt_status)s));
    dpt_clear_error();
}

/* Step 1: datastore, split, shuffle, partition, minibatch queue. */
static void test_data(const char *digits)
{
    dpt_datastore *ds = (dpt_datastore *)1, *a = (dpt_datastore *)1, *b = (dpt_datastore *)1;
    expect("open_folder missing", dpt_datastore_open_folder("/nonexistent/digits", NULL, &ds),
           DPT_ERR_IO, "/nonexistent/digits");
    CHECK(ds == NULL);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.version = 99;
    expect("open_folder version", dpt_datastore_open_folder(digits, &fo, &ds), DPT_ERR_ARG,
           "version 99");
    CHECK(ds == NULL);
    dpt_status s = dpt_datastore_open_folder(digits, NULL, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    expect("split fraction", dpt_datastore_split_each_label(ds, 1.5, 0, &a, &b), DPT_ERR_ARG,
           "fraction 1.5");
    CHECK(a == NULL && b == NULL);
    expect("partition i >= n", dpt_datastore_partition(ds, 2, 2, &a), DPT_ERR_ARG, "block 2 of 2");
    CHECK(a == NULL);
    expect("partition n = 0", dpt_datastore_partition(ds, 0, 0, &a), DPT_ERR_ARG, "of 0");
    /* shuffle has no argument it can reject; it must still work here. */
    CHECK(dpt_datastore_shuffle(ds, 1, &a) == DPT_OK && dpt_datastore_n_obs(a) == 400);
    dpt_datastore_free(a);

    dpt_mbq *q = (dpt_mbq *)1;
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = 0;
    expect("mbq batch 0", dpt_mbq_new(ds, &o, &q), DPT_ERR_ARG, "batch size 0");
    CHECK(q == NULL);
    o = (dpt_mbq_options)DPT_MBQ_OPTIONS_INIT;
    o.channels = 2;
    expect("mbq channels", dpt_mbq_new(ds, &o, &q), DPT_ERR_ARG, "2 channels");
    o = (dpt_mbq_options)DPT_MBQ_OPTIONS_INIT;
    o.version = 0;
    expect("mbq version", dpt_mbq_new(ds, &o, &q), DPT_ERR_ARG, "version 0");
    /* next() past the end of a pass */
    o = (dpt_mbq_options)DPT_MBQ_OPTIONS_INIT;
    o.batch_size = 400;
    o.prefetch = 0;
    s = dpt_mbq_new(ds, &o, &q);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        dpt_batch batch;
        CHECK(dpt_mbq_next(q, &batch) == DPT_OK && batch.n == 400);
        CHECK(!dpt_mbq_has_data(q));
        expect("mbq next past end", dpt_mbq_next(q, &batch), DPT_ERR_ARG, "no data left");
    }
    dpt_mbq_free(q);
    dpt_datastore_free(ds);
}

/* A preprocessing callback that fails: next() reports its message. */
static dpt_status failing_preprocess(float *x, int n, int c, int h, int w, const int32_t *labels,
                                     void *arg)
{
    (void)x, (void)n, (void)c, (void)h, (void)w, (void)labels, (void)arg;
    return dpt_fail(DPT_ERR_FORMAT, "preprocess: refused");
}

static void test_preprocess(const char *digits)
{
    dpt_datastore *ds = NULL;
    if (dpt_datastore_open_folder(digits, NULL, &ds) != DPT_OK)
        return;
    dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
    o.batch_size = 8;
    o.preprocess = failing_preprocess;
    dpt_mbq *q = NULL;
    CHECK(dpt_mbq_new(ds, &o, &q) == DPT_OK);
    dpt_batch b;
    if (q)
        expect("mbq preprocess failure", dpt_mbq_next(q, &b), DPT_ERR_FORMAT, "preprocess: refused");
    dpt_mbq_free(q);
    dpt_datastore_free(ds);
}

/* Step 2: the network builder and spec parser. */
static void test_builder(void)
{
    expect("builder_new NULL", dpt_net_builder_new(NULL), DPT_ERR_ARG, "out is NULL");
    expect("add to NULL builder", dpt_net_builder_add_relu(NULL, "r"), DPT_ERR_ARG,
           "builder is NULL");
    dpt_net *net = (dpt_net *)1;
    expect("build NULL builder", dpt_net_build(NULL, 10, 4, 0, &net), DPT_ERR_ARG,
           "builder is NULL");
    CHECK(net == NULL);

    dpt_net_builder *b = NULL;
    /* ',' separates from= names; control characters and invalid UTF-8
     * cannot go in the model file's JSON, nor a bidi override reach a
     * terminal: refused when added, not at build. */
    static const char *const odd[] = {"a,b", "a\001b", "a\177b", "a\377b", "a\342\200\256b"};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        CHECK(dpt_net_builder_new(&b) == DPT_OK);
        expect("odd name", dpt_net_builder_add_input(b, odd[i], 28, 28, 1), DPT_ERR_ARG,
               "bad layer name");
        dpt_net_builder_free(b);
    }
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    expect("build empty", dpt_net_build(b, 10, 4, 0, &net), DPT_ERR_ARG, "no layers");
    expect("bad name", dpt_net_builder_add_input(b, "my input", 28, 28, 1), DPT_ERR_ARG,
           "bad layer name 'my input'");
    /* sticky: a later valid add and the build repeat the first failure */
    expect("sticky add", dpt_net_builder_add_relu(b, "r"), DPT_ERR_ARG, "bad layer name");
    expect("sticky build", dpt_net_build(b, 10, 4, 0, &net), DPT_ERR_ARG, "bad layer name");
    CHECK(net == NULL);
    CHECK(strcmp(dpt_net_builder_spec(b), "") == 0);
    dpt_net_builder_free(b);

    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    expect("negative filter", dpt_net_builder_add_conv(b, "c", -3, 4, 1, 0), DPT_ERR_ARG,
           "layer 'c': filter must be 1 to 1000000, not -3");
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    expect("zero height", dpt_net_builder_add_input(b, "in", 0, 28, 1), DPT_ERR_ARG,
           "height must be 1 to 1000000, not 0");
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    expect("fc outputs -1", dpt_net_builder_add_fc(b, "fc", -1), DPT_ERR_ARG, "outputs");
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    expect("NULL name", dpt_net_builder_add_softmax(b, NULL), DPT_ERR_ARG, "needs a name");
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    expect("line with newline", dpt_net_builder_add_line(b, "relu a\nrelu b"), DPT_ERR_ARG,
           "no newline");
    dpt_net_builder_free(b);

    /* Rules checked at build, with the position of the layer. */
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_input(b, "in", 4, 4, 1);
    dpt_net_builder_add_conv(b, "c1", 7, 2, 1, 0);
    expect("filter too big", dpt_net_build(b, 10, 4, 0, &net), DPT_ERR_SHAPE,
           "net builder:2: conv 'c1': filter 7x7 does not fit the input 4x4");
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_input(b, "in", 4, 4, 1);
    dpt_net_builder_add_line(b, "relu r slope=2");
    expect("unknown key", dpt_net_build(b, 10, 4, 0, &net), DPT_ERR_FORMAT,
           "net builder:2: relu 'r'");
    dpt_net_builder_free(b);
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_input(b, "in", 4, 4, 1);
    dpt_net_builder_add_fc(b, "fc", DPT_NET_OUTPUTS_CLASSES);
    expect("classes unknown", dpt_net_build(b, 0, 4, 0, &net), DPT_ERR_ARG,
           "number of classes is not known");
    expect("max_batch 0", dpt_net_build(b, 10, 0, 0, &net), DPT_ERR_ARG, "max_batch");
    dpt_net_builder_free(b);

    expect("from_spec NULL text", dpt_net_from_spec(NULL, "x", 10, 4, 0, &net), DPT_ERR_ARG,
           "no spec text");
    expect("from_spec NULL out", dpt_net_from_spec(small_spec, "x", 10, 4, 0, NULL), DPT_ERR_ARG,
           "out is NULL");
    expect("from_spec unknown type", dpt_net_from_spec("input in size=4x4x1\nbogus b\n", "my.net",
                                                       10, 4, 0, &net),
           DPT_ERR_FORMAT, "my.net:2: unknown layer type 'bogus'");
    CHECK(net == NULL);
}

/* Steps 4-5: forward, loss, backward, tables, state, optimizers. */
static void test_compute(void)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(small_spec, "small", 3, 4, 0, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (!net)
        return;
    float x[4 * 64] = {0}, t[4 * 3] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0};
    const float *y = NULL;
    expect("backward before forward", dpt_net_backward(net, dpt_net_output_grad(net), 1),
           DPT_ERR_ARG, "needs a TRAIN-mode forward first");
    expect("update_state before forward", dpt_net_update_state(net, NULL), DPT_ERR_ARG,
           "needs a TRAIN-mode forward first");
    double loss = 0.0;
    expect("aggregate before forward", dpt_train_aggregate(net, NULL, &loss), DPT_ERR_ARG,
           "TRAIN-mode forward first");
    expect("forward too many", dpt_net_forward(net, x, 5, DPT_MODE_TRAIN, &y), DPT_ERR_ARG,
           "forward on 5 observations (1 to 4 allowed)");
    expect("forward none", dpt_net_forward(net, x, 0, DPT_MODE_TRAIN, &y), DPT_ERR_ARG,
           "forward on 0 observations");
    expect("forward NULL x", dpt_net_forward(net, NULL, 2, DPT_MODE_TRAIN, &y), DPT_ERR_ARG,
           "x is NULL");
    expect("forward NULL net", dpt_net_forward(NULL, x, 2, DPT_MODE_TRAIN, &y), DPT_ERR_ARG,
           "net is NULL");
    expect("forward bad mode", dpt_net_forward(net, x, 2, (dpt_mode)7, &y), DPT_ERR_ARG,
           "unknown mode 7");
    /* A PREDICT forward does not enable backward. */
    CHECK(dpt_net_forward(net, x, 2, DPT_MODE_PREDICT, &y) == DPT_OK);
    expect("backward after predict", dpt_net_backward(net, dpt_net_output_grad(net), 1),
           DPT_ERR_ARG, "TRAIN-mode forward first");
    CHECK(dpt_net_forward(net, x, 4, DPT_MODE_TRAIN, &y) == DPT_OK);
    expect("backward NULL dy", dpt_net_backward(net, NULL, 1), DPT_ERR_ARG, "dy is NULL");

    float *g = dpt_net_output_grad(net);
    expect("xent NULL probs", dpt_loss_softmax_xent(NULL, t, 4, 3, 1.0, &loss, g), DPT_ERR_ARG,
           "probs is NULL");
    expect("xent NULL targets", dpt_loss_softmax_xent(y, NULL, 4, 3, 1.0, &loss, g), DPT_ERR_ARG,
           "targets is NULL");
    expect("xent NULL loss", dpt_loss_softmax_xent(y, t, 4, 3, 1.0, NULL, g), DPT_ERR_ARG,
           "loss is NULL");
    expect("xent n 0", dpt_loss_softmax_xent(y, t, 0, 3, 1.0, &loss, g), DPT_ERR_ARG, "n=0");
    expect("xent NaN weight", dpt_loss_softmax_xent(y, t, 4, 3, NAN, &loss, g), DPT_ERR_ARG,
           "weight is nan");
    expect("mse k 0", dpt_loss_mse(y, t, 4, 0, 1.0, &loss, g), DPT_ERR_ARG, "k=0");
    expect("mse NULL y", dpt_loss_mse(NULL, t, 4, 3, 1.0, &loss, g), DPT_ERR_ARG, "y is NULL");

    double d = 1.0;
    float f = 1.0f;
    expect("gplus_f64 NULL", dpt_gplus_f64(NULL, NULL, 3, 1.0), DPT_ERR_ARG, "x is NULL");
    expect("gplus_f64 inf weight", dpt_gplus_f64(NULL, &d, 1, INFINITY), DPT_ERR_ARG, "weight is inf");
    expect("gplus_f32 NULL", dpt_gplus_f32(NULL, NULL, 3, 1.0), DPT_ERR_ARG, "buf is NULL");
    expect("gplus_f32 NaN weight", dpt_gplus_f32(NULL, &f, 1, NAN), DPT_ERR_ARG, "weight is nan");
    CHECK(d == 1.0 && f == 1.0f); /* untouched on failure */

    /* Softmax-input gradient on a network without softmax. */
    dpt_net *plain = NULL;
    CHECK(dpt_net_from_spec("input in size=2x2x1\nfc fc outputs=2\n", "plain", 0, 2, 0, &plain) ==
          DPT_OK);
    if (plain) {
        x[5] = NAN;
        expect("forward NaN input", dpt_net_forward(plain, x, 2, DPT_MODE_TRAIN, &y),
               DPT_ERR_NUMERIC, "non-finite values in the output of layer 'in'");
        x[5] = 0.0f;
        CHECK(dpt_net_forward(plain, x, 2, DPT_MODE_TRAIN, &y) == DPT_OK);
        expect("logits gradient without softmax", dpt_net_backward(plain, dpt_net_output_grad(plain), 1),
               DPT_ERR_ARG, "the last layer is 'fc', not softmax");
    }
    dpt_net_free(plain);

    float buf[8];
    expect("read unknown learnable", dpt_net_read_learnable(net, "c9/Weights", buf, 8),
           DPT_ERR_ARG, "no learnable 'c9/Weights'");
    expect("write wrong size", dpt_net_write_learnable(net, "c1/Bias", buf, 8), DPT_ERR_SHAPE,
           "c1/Bias has 2 elements, the buffer 8");
    expect("read state NULL", dpt_net_read_state(net, "bn/TrainedMean", NULL, 2), DPT_ERR_ARG,
           "NULL");
    expect("write unknown state", dpt_net_write_state(net, "bn/Mean", buf, 2), DPT_ERR_ARG,
           "no state entry 'bn/Mean'");

    dpt_sgdm *o = (dpt_sgdm *)1;
    expect("sgdm lr 0", dpt_sgdm_new(10, 0.0f, 0.9f, 0.0f, &o), DPT_ERR_ARG, "lr > 0");
    CHECK(o == NULL);
    expect("sgdm momentum 1", dpt_sgdm_new(10, 0.01f, 1.0f, 0.0f, &o), DPT_ERR_ARG, "momentum < 1");
    expect("sgdm NULL out", dpt_sgdm_new(10, 0.01f, 0.9f, 0.0f, NULL), DPT_ERR_ARG, "out is NULL");
    dpt_adam *a = (dpt_adam *)1;
    expect("adam beta2 1", dpt_adam_new(10, 0.001f, 0.9, 1.0, 1e-8f, 0.0f, &a), DPT_ERR_ARG,
           "beta2 < 1");
    CHECK(a == NULL);
    expect("adam eps 0", dpt_adam_new(10, 0.001f, 0.9, 0.999, 0.0f, 0.0f, &a), DPT_ERR_ARG, "eps > 0");
    expect("adam NULL out", dpt_adam_new(10, 0.001f, 0.9, 0.999, 1e-8f, 0.0f, NULL), DPT_ERR_ARG,
           "out is NULL");
    dpt_net_free(net);
}

/* Step 7 and files: evaluation, save, load. */
static void test_files(const char *digits)
{
    char dir[] = "/tmp/dpt_api_errXXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    char path[256];
    dpt_net *net = NULL, *loaded = (dpt_net *)1;
    CHECK(dpt_net_from_spec(small_spec, "small", 3, 4, 0, &net) == DPT_OK);
    if (!net)
        return;
    snprintf(path, sizeof path, "%s/no/such/folder/model.safetensors", dir);
    expect("save into missing folder", dpt_net_save(net, path, NULL, 0), DPT_ERR_IO, path);
    expect("save NULL path", dpt_net_save(net, NULL, NULL, 0), DPT_ERR_ARG, "path is NULL");
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    expect("load missing", dpt_net_load(path, 4, &loaded), DPT_ERR_IO, path);
    CHECK(loaded == NULL);
    snprintf(path, sizeof path, "%s/garbage.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("this is not a model", f);
        fclose(f);
    }
    expect("load garbage", dpt_net_load(path, 4, &loaded), DPT_ERR_FORMAT, path);
    unlink(path);
    rmdir(dir);

    /* evaluate: 10 classes of digits against a 3-output network */
    dpt_datastore *ds = NULL;
    if (dpt_datastore_open_folder(digits, NULL, &ds) == DPT_OK) {
        double acc = 0.0;
        expect("evaluate class mismatch", dpt_evaluate(net, ds, &acc, NULL), DPT_ERR_SHAPE,
               "10 classes, the network 3 outputs");
    }
    dpt_datastore_free(ds);
    dpt_net_free(net);
}

/* Steps 3-6: workers, collectives, progress queue. */
static dpt_status failing_worker(dpt_comm *comm, void *arg)
{
    (void)arg;
    if (dpt_comm_rank(comm) == 1)
        return dpt_fail(DPT_ERR_IO, "worker one could not read its data");
    int more = 1;
    return dpt_comm_allreduce_and(comm, &more); /* fails: worker 1 is gone */
}

static dpt_status noop_worker(dpt_comm *comm, void *arg)
{
    (void)comm, (void)arg;
    return DPT_OK;
}

static void ignore_progress(const dpt_progress *p, void *arg) { (void)p, (void)arg; }

static void test_workers(void)
{
    expect("spmd NULL config", dpt_spmd_run(NULL, noop_worker, NULL), DPT_ERR_ARG,
           "config is NULL");
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = 0;
    expect("spmd 0 workers", dpt_spmd_run(&cfg, noop_worker, NULL), DPT_ERR_ARG, "0");
    cfg.n_workers = 2;
    expect("spmd NULL fn", dpt_spmd_run(&cfg, NULL, NULL), DPT_ERR_ARG, "worker function is NULL");
    cfg.version = 42;
    expect("spmd version", dpt_spmd_run(&cfg, noop_worker, NULL), DPT_ERR_ARG, "version 42");
    cfg.version = DPT_SPMD_CONFIG_VERSION;
    cfg.timeout_ms = 20000;
    expect("failing worker", dpt_spmd_run(&cfg, failing_worker, NULL), DPT_ERR_IO,
           "worker 1: worker one could not read its data");
    expect("allreduce_and NULL comm", dpt_comm_allreduce_and(NULL, &cfg.n_workers), DPT_ERR_ARG,
           "communicator is NULL");
    CHECK(dpt_comm_rank(NULL) == -1 && dpt_comm_size(NULL) == 0);

    dpt_progress_queue *q = (dpt_progress_queue *)1;
    expect("progress queue without callback", dpt_progress_queue_new(0, NULL, NULL, &q),
           DPT_ERR_ARG, "no callback");
    CHECK(q == NULL);
    CHECK(dpt_progress_queue_new(4, ignore_progress, NULL, &q) == DPT_OK);
    dpt_progress p = {0};
    dpt_progress_send(q, &p);
    dpt_progress_queue_free(q);
}

static void test_free_null(void)
{
    dpt_datastore_free(NULL);
    dpt_mbq_free(NULL);
    dpt_net_free(NULL);
    dpt_net_builder_free(NULL);
    dpt_sgdm_free(NULL);
    dpt_adam_free(NULL);
    dpt_progress_queue_free(NULL);
    dpt_tensor_free(NULL);
    dpt_free(NULL);
    CHECK(dpt_net_builder_spec(NULL) == NULL);
}

/* dpt_env_check: each DPT_* variable with a value the library cannot use
 * is an error naming it; unset, empty and accepted values pass. */
static void test_env_check(void)
{
    static const char *const vars[] = {"DPT_SPIN_US", "DPT_COMM_TIMEOUT_MS", "DPT_FUSION", "DPT_FUSION_BLK",
                                       "DPT_KERNELS", "DPT_CGROUP_ROOT", "DPT_MAX_NET_MEMORY"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    CHECK(dpt_env_check() == DPT_OK);
    static const struct { const char *var, *value, *needle; } bad[] = {
        {"DPT_SPIN_US", "fast", "DPT_SPIN_US: 'fast' is not a number of microseconds from 0 to 1000000"},
        {"DPT_SPIN_US", "1000001", "DPT_SPIN_US: '1000001'"},
        {"DPT_SPIN_US", "+5", "DPT_SPIN_US: '+5'"},
        {"DPT_COMM_TIMEOUT_MS", "10s", "DPT_COMM_TIMEOUT_MS: '10s' is not a number of milliseconds"},
        {"DPT_COMM_TIMEOUT_MS", "99999999999999999999", "DPT_COMM_TIMEOUT_MS: '9999"},
        {"DPT_FUSION", "off", "DPT_FUSION: 'off' is not 0 (off) or 1 (on, the default)"},
        {"DPT_FUSION_BLK", "off", "DPT_FUSION_BLK: 'off' is not 0 (the residual blocks' fusions off) or 1"},
        {"DPT_FUSION_BLK", "00", "DPT_FUSION_BLK: '00'"},
        {"DPT_KERNELS", "AVX2", "DPT_KERNELS: 'AVX2' is not a kernel set (auto, generic, avx2, avx512)"},
        {"DPT_CGROUP_ROOT", "sys/fs/cgroup", "DPT_CGROUP_ROOT: 'sys/fs/cgroup' is not an absolute path"},
        {"DPT_CGROUP_ROOT", "/nonexistent/cgroup", "DPT_CGROUP_ROOT: /nonexistent/cgroup: No such file"},
        {"DPT_CGROUP_ROOT", "/proc/version", "DPT_CGROUP_ROOT: /proc/version is not a folder"},
        {"DPT_MAX_NET_MEMORY", "lots", "DPT_MAX_NET_MEMORY: 'lots' is not a size of at least 1M"},
        {"DPT_MAX_NET_MEMORY", "512", "DPT_MAX_NET_MEMORY: '512' is not a size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv(bad[i].var, bad[i].value, 1);
        expect(bad[i].var, dpt_env_check(), DPT_ERR_ARG, bad[i].needle);
        unsetenv(bad[i].var);
    }
    static const struct { const char *var, *value; } good[] = {
        {"DPT_SPIN_US", "0"}, {"DPT_SPIN_US", "1000000"}, {"DPT_SPIN_US", ""},
        {"DPT_COMM_TIMEOUT_MS", "0"}, {"DPT_COMM_TIMEOUT_MS", "600000"}, {"DPT_FUSION", "0"},
        {"DPT_FUSION", "1"}, {"DPT_FUSION_BLK", "0"}, {"DPT_FUSION_BLK", "1"}, {"DPT_FUSION_BLK", ""},
        {"DPT_KERNELS", "auto"}, {"DPT_KERNELS", "generic"}, {"DPT_CGROUP_ROOT", "/"},
        {"DPT_MAX_NET_MEMORY", "512M"}, {"DPT_MAX_NET_MEMORY", "16G"}, {"DPT_MAX_NET_MEMORY", ""},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        setenv(good[i].var, good[i].value, 1);
        CHECK_MSG(dpt_env_check() == DPT_OK, "%s=%s refused: %s", good[i].var, good[i].value, dpt_last_error());
        unsetenv(good[i].var);
    }
}

/* dpt_fit matches the test data's classes to the training data's by name:
 * a test class the training data lacks fails before any training. */
static void test_fit_classes(const char *digits)
{
    char dir[] = "/tmp/dpt_api_errors_XXXXXX", img[64], lab[64];
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    snprintf(img, sizeof img, "%s/t-images-idx3-ubyte", dir);
    snprintf(lab, sizeof lab, "%s/t-labels-idx1-ubyte", dir);
    /* two 8x8 images labelled 1 and 12 (IDX classes "0".."12") */
    static const unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 8};
    static const unsigned char lh[10] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 12};
    unsigned char pix[128] = {0};
    FILE *f = fopen(img, "wb");
    CHECK(f && fwrite(ih, 1, 16, f) == 16 && fwrite(pix, 1, 128, f) == 128);
    if (f)
        fclose(f);
    f = fopen(lab, "wb");
    CHECK(f && fwrite(lh, 1, 10, f) == 10);
    if (f)
        fclose(f);
    dpt_datastore *train = NULL, *test = NULL;
    if (dpt_datastore_open_folder(digits, NULL, &train) == DPT_OK &&
        dpt_datastore_open_idx(img, lab, &test) == DPT_OK) {
        dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
        cfg.spec = small_spec;
        cfg.train = train;
        cfg.test = test;
        cfg.epochs = 1;
        cfg.batch = 8;
        cfg.spmd.n_workers = 1;
        dpt_fit_result r;
        expect("fit with a test class the training data lacks", dpt_fit(&cfg, &r), DPT_ERR_FORMAT,
               "test data: class '12' is not one of the 10 classes");
    } else {
        CHECK_MSG(0, "open: %s", dpt_last_error());
    }
    dpt_datastore_free(train);
    dpt_datastore_free(test);
    unlink(img);
    unlink(lab);
    rmdir(dir);
}

int main(void)
{
    char digits[1024];
    tu_fixture("digits400", digits, sizeof digits);
    test_status_basics();
    test_data(digits);
    test_preprocess(digits);
    test_builder();
    test_compute();
    test_files(digits);
    test_workers();
    test_free_null();
    test_env_check();
    test_fit_classes(digits);
    return tu_exit();
}
