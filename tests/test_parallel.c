/* The data-parallel step (DESIGN.md invariants 1-3): N local workers against
 * one worker on the whole minibatch, pooled batch-norm statistics, identical
 * workers, uneven shares, and reproducible model files. */
#include "dptrain/train.h"
#include "testutil.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum { M = 12, C = 1, H = 9, W = 9, K = 4, PIX = C * H * W };

static const char bn_spec[] = "input in size=9x9x1\n"
                              "conv c1 filter=3 filters=3 padding=1\n"
                              "batchnorm bn1\n"
                              "relu r1\n"
                              "conv c2 filter=3 filters=4 stride=2\n"
                              "batchnorm bn2\n"
                              "relu r2\n"
                              "fc fc outputs=4\n"
                              "softmax sm\n";
static const char plain_spec[] = "input in size=9x9x1\n"
                                 "conv c1 filter=3 filters=3 padding=1\n"
                                 "relu r1\n"
                                 "fc fc outputs=4\n"
                                 "softmax sm\n";

static float X[M * PIX], T[M * K];

static void make_batch(void)
{
    dpt_rng r;
    dpt_rng_seed(&r, 7, 1);
    for (int i = 0; i < M * PIX; i++)
        X[i] = dpt_rng_uniform(&r) * 2.0f - 0.5f;
    memset(T, 0, sizeof T);
    for (int i = 0; i < M; i++)
        T[i * K + (int)dpt_rng_below(&r, K)] = 1.0f;
}

/* What a worker leaves behind after one step, for the test to compare. */
typedef struct result {
    double loss;
    float *params, *grads, *state;
    uint64_t hash;
} result;

typedef struct job {
    const char *spec;
    int sync_bn, steps;
    result res[8];
} job;

static dpt_status worker(dpt_comm *comm, void *arg)
{
    job *j = arg;
    int rank = dpt_comm_rank(comm), n = dpt_comm_size(comm);
    int share[8], first = 0;
    dpt_batch_shares(M, n, share);
    for (int r = 0; r < rank; r++)
        first += share[r];
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = dpt_net_from_spec(j->spec, "t", K, M, 3, &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.05f, 0.9f, 0.0f, &opt);
    if (s == DPT_OK && j->sync_bn)
        dpt_net_set_sync_bn(net, comm);
    result *r = &j->res[rank];
    for (int step = 0; s == DPT_OK && step < j->steps; step++) {
        s = dpt_train_step(net, opt, comm, X + (size_t)first * PIX, T + (size_t)first * K,
                           share[rank], &r->loss, NULL);
        /* Invariant 2: identical learnables and state on every worker. */
        uint64_t h = dpt_net_hash(net), h0 = h;
        if (s == DPT_OK)
            s = dpt_comm_broadcast(comm, &h0, sizeof h0, 0);
        if (s == DPT_OK && h != h0)
            s = dpt_fail(DPT_ERR_COMM, "worker %d differs from worker 0 after step %d", rank, step);
    }
    if (s == DPT_OK) {
        size_t np = dpt_net_n_params(net), ns = dpt_net_n_state_floats(net);
        r->params = malloc(np * sizeof(float));
        r->grads = malloc(np * sizeof(float));
        r->state = malloc(ns * sizeof(float));
        memcpy(r->params, dpt_net_params(net), np * sizeof(float));
        memcpy(r->grads, dpt_net_grads(net), np * sizeof(float));
        if (ns) /* a network without batch norm has no state buffer */
            memcpy(r->state, dpt_net_state(net), ns * sizeof(float));
        r->hash = dpt_net_hash(net);
    }
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static size_t n_params(const char *spec, size_t *n_state)
{
    dpt_net *net = NULL;
    if (dpt_net_from_spec(spec, "t", K, 1, 0, &net) != DPT_OK)
        return 0;
    size_t n = dpt_net_n_params(net);
    *n_state = dpt_net_n_state_floats(net);
    dpt_net_free(net);
    return n;
}

static int run(const char *spec, int n_workers, int sync_bn, int steps, job *j)
{
    memset(j, 0, sizeof *j);
    j->spec = spec, j->sync_bn = sync_bn, j->steps = steps;
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = n_workers;
    dpt_status s = dpt_spmd_run(&cfg, worker, j);
    CHECK_MSG(s == DPT_OK, "N=%d: %s", n_workers, dpt_last_error());
    return s == DPT_OK ? 0 : -1;
}

static void free_job(job *j, int n)
{
    for (int r = 0; r < n; r++)
        free(j->res[r].params), free(j->res[r].grads), free(j->res[r].state);
}

/* Invariant 1 with synchronised batch norm (or none): N workers = 1 worker. */
static void test_equivalence(const char *spec, int sync_bn, const char *what)
{
    size_t ns = 0, np = n_params(spec, &ns);
    job one, many;
    if (run(spec, 1, sync_bn, 3, &one))
        return;
    for (int n = 2; n <= 4; n++) {
        if (run(spec, n, sync_bn, 3, &many))
            continue;
        char label[96];
        printf("%s, N=%d vs 1 (3 steps):\n", what, n);
        float l1 = (float)one.res[0].loss, ln = (float)many.res[0].loss;
        snprintf(label, sizeof label, "loss");
        tu_check_close(label, &ln, &l1, 1, 1e-5);
        tu_check_close("gradients", many.res[0].grads, one.res[0].grads, np, 1e-5);
        tu_check_close("updated learnables", many.res[0].params, one.res[0].params, np, 1e-5);
        if (ns)
            tu_check_close("state", many.res[0].state, one.res[0].state, ns, 1e-5);
        for (int r = 1; r < n; r++)
            CHECK_MSG(many.res[r].hash == many.res[0].hash, "worker %d differs", r);
        free_job(&many, n);
    }
    free_job(&one, 1);
}

/* Local batch norm (the MATLAB example's default): the pooled running
 * statistics equal those of the whole minibatch computed directly. */
static void test_pooled_state(void)
{
    /* Directly: the whole minibatch's batch statistics of bn1 (the input of
     * bn1 is the same on every worker before any update). */
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(bn_spec, "t", K, M, 3, &net) == DPT_OK);
    const float *y;
    CHECK(dpt_net_forward(net, X, M, DPT_MODE_TRAIN, &y) == DPT_OK);
    CHECK(dpt_net_update_state(net, NULL) == DPT_OK);
    long im = dpt_net_find_state(net, "bn1/TrainedMean"), iv = dpt_net_find_state(net, "bn1/TrainedVariance");
    size_t off_mean = dpt_net_state_info(net, (size_t)im)->offset;
    size_t off_var = dpt_net_state_info(net, (size_t)iv)->offset;
    float want_mean[3], want_var[3];
    memcpy(want_mean, dpt_net_state(net) + off_mean, sizeof want_mean);
    memcpy(want_var, dpt_net_state(net) + off_var, sizeof want_var);
    dpt_net_free(net);
    for (int n = 2; n <= 4; n++) {
        job j;
        if (run(bn_spec, n, 0, 1, &j))
            continue;
        printf("local batch norm, N=%d, pooled running statistics of bn1:\n", n);
        tu_check_close("TrainedMean", j.res[0].state + off_mean, want_mean, 3, 1e-5);
        tu_check_close("TrainedVariance", j.res[0].state + off_var, want_var, 3, 1e-5);
        for (int r = 1; r < n; r++)
            CHECK(j.res[r].hash == j.res[0].hash);
        free_job(&j, n);
    }
}

/* The pooled formula itself, on numbers: worker 0 holds {1, 2, 3}, worker 1
 * holds {10} (uneven slices); the whole batch has mean 4 and biased variance
 * 12.5, so running mean = 0.1·4 and running variance = 0.9 + 0.1·12.5·4/3. */
static float pooled_state[2][2];

static dpt_status pooled_worker(dpt_comm *comm, void *arg)
{
    (void)arg;
    static const char spec[] = "input in size=1x1x1\nbatchnorm bn\nfc fc outputs=2\nsoftmax sm\n";
    static const float xs[4] = {1, 2, 3, 10};
    int rank = dpt_comm_rank(comm);
    dpt_net *net = NULL;
    const float *y;
    dpt_status s = dpt_net_from_spec(spec, "t", 2, 3, 0, &net);
    if (s == DPT_OK)
        s = dpt_net_forward(net, rank == 0 ? xs : xs + 3, rank == 0 ? 3 : 1, DPT_MODE_TRAIN, &y);
    if (s == DPT_OK)
        s = dpt_net_update_state(net, comm);
    if (s == DPT_OK)
        memcpy(pooled_state[rank], dpt_net_state(net), sizeof pooled_state[rank]);
    dpt_net_free(net);
    return s;
}

static void test_pooled_formula_by_hand(void)
{
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = 2;
    dpt_status s = dpt_spmd_run(&cfg, pooled_worker, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    float want[2] = {0.4f, (float)(0.9 + 0.1 * 12.5 * 4.0 / 3.0)};
    printf("pooled formula, slices {1,2,3} and {10}:\n");
    tu_check_close("running mean and variance", pooled_state[0], want, 2, 1e-6);
    CHECK(memcmp(pooled_state[0], pooled_state[1], sizeof want) == 0);
}

/* ---- the whole loop: uneven shares, stopping together, reproducible files ---- */

static char tmpdir[256];

/* Write an IDX pair of n 9x9 images whose label is visible in the pixels. */
static void write_idx(const char *name, int n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", tmpdir, name);
    FILE *f = fopen(path, "wb");
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, 9, 0, 0, 0, 9};
    fwrite(hdr, 1, 16, f);
    dpt_rng r;
    dpt_rng_seed(&r, 11, 0);
    unsigned char *labels = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        labels[i] = (unsigned char)(i % K);
        for (int p = 0; p < 81; p++) {
            int on = (p / 9) % K == labels[i]; /* a bright row band per class */
            fputc((int)(on ? 200 : 0) + (int)dpt_rng_below(&r, 50), f);
        }
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", tmpdir, name);
    f = fopen(path, "wb");
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, (unsigned char)(n >> 8), (unsigned char)n};
    fwrite(lh, 1, 8, f);
    fwrite(labels, 1, (size_t)n, f);
    fclose(f);
    free(labels);
}

typedef struct count_arg {
    long iterations[64];
    int epochs_seen;
} count_arg;

static void count_progress(const dpt_progress *p, void *arg)
{
    count_arg *c = arg;
    if (p->end_of_epoch && p->epoch <= 64)
        c->iterations[p->epoch - 1] = p->iteration, c->epochs_seen++;
}

static dpt_status fit(const char *data, int n_workers, int batch, int epochs, const char *model,
                      count_arg *counts, double *acc)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", tmpdir, data);
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_idx(path, NULL, &ds);
    if (s != DPT_OK)
        return s;
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = bn_spec;
    cfg.spec_source = "bn_spec";
    cfg.train = ds;
    cfg.test = ds;
    cfg.epochs = epochs;
    cfg.batch = batch;
    cfg.seed = 5;
    cfg.spmd.backend = DPT_COMM_LOCAL;
    cfg.spmd.n_workers = n_workers;
    cfg.progress = count_progress;
    cfg.progress_arg = counts;
    cfg.model_out = model;
    dpt_fit_result res;
    s = dpt_fit(&cfg, &res);
    if (acc)
        *acc = res.test_accuracy;
    dpt_datastore_free(ds);
    return s;
}

static void test_uneven_shares(void)
{
    /* 130 images, B = 128, N = 3: shares 43/43/42, partitions 44/43/43, so
     * workers 0 and 2 have a second (tiny) batch and worker 1 has none: the
     * loop must stop for everyone after one iteration per epoch. */
    write_idx("u130", 130);
    count_arg c = {0};
    char model[512];
    snprintf(model, sizeof model, "%s/u.safetensors", tmpdir);
    dpt_status s = fit("u130", 3, 128, 2, model, &c, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    CHECK(c.epochs_seen == 2);
    CHECK_MSG(c.iterations[0] == 1 && c.iterations[1] == 2, "iterations %ld %ld", c.iterations[0],
              c.iterations[1]);
    /* 300 images, N = 3, B = 128: partitions of 100 = 43+43+14 / 43+43+14 /
     * 42+42+16: three iterations per epoch for all. */
    write_idx("u300", 300);
    memset(&c, 0, sizeof c);
    s = fit("u300", 3, 128, 1, model, &c, NULL);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    CHECK_MSG(c.iterations[0] == 3, "iterations %ld", c.iterations[0]);
}

static int file_bytes(const char *path, unsigned char **data, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(*n ? *n : 1);
    size_t got = fread(*data, 1, *n, f);
    fclose(f);
    return got == *n ? 0 : -1;
}

static void test_reproducible(void)
{
    write_idx("r400", 400);
    char a[512], b[512], c1[512];
    snprintf(a, sizeof a, "%s/a.safetensors", tmpdir);
    snprintf(b, sizeof b, "%s/b.safetensors", tmpdir);
    snprintf(c1, sizeof c1, "%s/c.safetensors", tmpdir);
    count_arg c = {0};
    double acc = 0;
    CHECK(fit("r400", 2, 32, 3, a, &c, &acc) == DPT_OK);
    printf("reproducibility: 2 workers, 3 epochs on 400 images, accuracy %.3f\n", acc);
    CHECK_MSG(acc > 0.6, "accuracy %.3f should be well above chance (0.25)", acc);
    CHECK(fit("r400", 2, 32, 3, b, &c, NULL) == DPT_OK);
    CHECK(fit("r400", 1, 32, 3, c1, &c, NULL) == DPT_OK);
    unsigned char *da = NULL, *db = NULL, *dc = NULL;
    size_t na = 0, nb = 0, nc = 0;
    CHECK(file_bytes(a, &da, &na) == 0 && file_bytes(b, &db, &nb) == 0 && file_bytes(c1, &dc, &nc) == 0);
    CHECK_MSG(na == nb && na > 0 && memcmp(da, db, na) == 0, "same seed and N: model files differ");
    /* A different worker count is a different (local batch-norm) computation:
     * the files differ, which shows the comparison above can fail. */
    CHECK(!(na == nc && memcmp(da, dc, na) == 0));
    free(da), free(db), free(dc);
}

static void test_bad_worker_counts(void)
{
    write_idx("b5", 5);
    count_arg c = {0};
    char model[512];
    snprintf(model, sizeof model, "%s/bad.safetensors", tmpdir);
    CHECK(fit("b5", 4, 2, 1, model, &c, NULL) == DPT_ERR_ARG); /* batch 2 < 4 workers */
    CHECK_MSG(strstr(dpt_last_error(), "smaller than the 4 workers") != NULL, "%s", dpt_last_error());
    CHECK(fit("b5", 7, 16, 1, model, &c, NULL) == DPT_ERR_ARG); /* 7 workers, 5 images */
    CHECK_MSG(strstr(dpt_last_error(), "only 5 training images") != NULL, "%s", dpt_last_error());
    CHECK(access(model, F_OK) != 0); /* nothing written */
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dpt_parallel_XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    make_batch();
    test_equivalence(bn_spec, 1, "synchronised batch norm");
    test_equivalence(plain_spec, 0, "no batch norm");
    test_pooled_state();
    test_pooled_formula_by_hand();
    test_uneven_shares();
    test_reproducible();
    test_bad_worker_counts();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_exit();
}
