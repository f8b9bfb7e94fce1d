/* Layer-graph networks, whole: a residual network (max pooling, identity and
 * 1x1-projection shortcuts with add, concat, dropout, global average
 * pooling) and a graph of the other layer types, loss and every gradient
 * against PyTorch (tests/fixtures/make_graph_net_fixtures.py, which builds
 * the networks from the same spec text); dropout masks reproduced from the
 * counter-based key; then the residual network data-parallel: N = 2, 3, 4
 * local workers against one worker on the whole minibatch (synchronised
 * batch norm, dropout off and on), pooled state, identical workers, and
 * byte-identical reruns. */
#include "core/safetensors.h"
#include "ops/ops.h"
#include "dptrain/train.h"
#include "testutil.h"

#include <stdint.h>

static dpt_st *fix;
static uint64_t key_seed;
static long key_epoch, key_iteration, key_first;

static const char *meta(const char *case_name, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s/%s", case_name, key);
    return dpt_st_meta(fix, k);
}

/* Load the fixture's tensor "<case>/<what>/<table name>" into every entry of
 * net's learnables (or state) with write (the public calls a user has). */
static int write_tables(dpt_net *net, const char *c, int state)
{
    size_t n = state ? dpt_net_n_state(net) : dpt_net_n_learnables(net);
    for (size_t i = 0; i < n; i++) {
        const dpt_param_info *e = state ? dpt_net_state_info(net, i) : dpt_net_learnable(net, i);
        char name[200];
        snprintf(name, sizeof name, "%s/init/%s", c, e->name);
        float *buf = malloc(e->n * sizeof *buf);
        dpt_status s = dpt_st_read_f32(fix, name, buf, e->n);
        if (s == DPT_OK)
            s = state ? dpt_net_write_state(net, e->name, buf, e->n)
                      : dpt_net_write_learnable(net, e->name, buf, e->n);
        free(buf);
        if (s != DPT_OK) {
            fprintf(stderr, "%s: %s\n", name, dpt_last_error());
            ++*tu_failures();
            return -1;
        }
    }
    return 0;
}

/* Count the fixture's tensors named "<case>/<what>/...": every one must be a
 * table entry of the network (none silently skipped). */
static size_t count_prefixed(const char *c, const char *what)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/%s/", c, what);
    size_t n = 0;
    for (size_t i = 0; i < dpt_st_count(fix); i++)
        n += strncmp(dpt_st_at(fix, i)->name, prefix, strlen(prefix)) == 0;
    return n;
}

/* The network of case c with the fixture's initial tables, ready for a
 * training forward with the fixture's dropout key. */
static dpt_net *case_net(const char *c, int *n, int *k, float **x, float **t)
{
    const char *spec = meta(c, "spec"), *classes = meta(c, "classes");
    char xname[96];
    snprintf(xname, sizeof xname, "%s/x", c);
    const dpt_st_tensor *xt = dpt_st_get(fix, xname);
    CHECK_MSG(spec && classes && xt, "fixture lacks case %s", c);
    if (!spec || !classes || !xt)
        return NULL;
    *k = atoi(classes);
    *n = (int)xt->shape[0];
    size_t pix = (size_t)(xt->shape[1] * xt->shape[2] * xt->shape[3]);
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(spec, c, *k, *n, key_seed, &net);
    CHECK_MSG(s == DPT_OK, "%s: %s", c, dpt_last_error());
    if (s != DPT_OK)
        return NULL;
    int chw[3];
    dpt_net_input_shape(net, chw);
    CHECK((size_t)chw[0] * chw[1] * chw[2] == pix);
    CHECK(count_prefixed(c, "init") == dpt_net_n_learnables(net) + dpt_net_n_state(net));
    if (write_tables(net, c, 0) || write_tables(net, c, 1)) {
        dpt_net_free(net);
        return NULL;
    }
    *x = malloc((size_t)*n * pix * sizeof **x);
    *t = malloc((size_t)*n * *k * sizeof **t);
    char tname[96];
    snprintf(tname, sizeof tname, "%s/t", c);
    CHECK(dpt_st_read_f32(fix, xname, *x, (size_t)*n * pix) == DPT_OK);
    CHECK(dpt_st_read_f32(fix, tname, *t, (size_t)*n * *k) == DPT_OK);
    dpt_net_set_iteration(net, key_epoch, key_iteration);
    dpt_net_set_obs_offset(net, key_first);
    return net;
}

/* One case: loss, every gradient and the updated batch-norm state. */
static void test_case(const char *c)
{
    int n = 0, k = 0;
    float *x = NULL, *t = NULL;
    dpt_net *net = case_net(c, &n, &k, &x, &t);
    if (!net)
        return;
    printf("%s: %d learnables, %d observations\n", c, (int)dpt_net_n_learnables(net), n);
    const float *p;
    CHECK_MSG(dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &p) == DPT_OK, "%s", dpt_last_error());
    float *dl = dpt_net_output_grad(net);
    float loss = (float)dpt_softmax_xent(p, t, n, k, 1.0f, dl), loss_ref;
    char name[200];
    snprintf(name, sizeof name, "%s/loss", c);
    CHECK(dpt_st_read_f32(fix, name, &loss_ref, 1) == DPT_OK);
    tu_check_close("loss", &loss, &loss_ref, 1, 1e-5);
    CHECK_MSG(dpt_net_backward(net, dl, 1) == DPT_OK, "%s", dpt_last_error());
    CHECK(count_prefixed(c, "grad") == dpt_net_n_learnables(net));
    for (size_t i = 0; i < dpt_net_n_learnables(net); i++) {
        const dpt_param_info *e = dpt_net_learnable(net, i);
        float *ref = malloc(e->n * sizeof *ref);
        const float *got = dpt_net_grads(net) + e->offset;
        snprintf(name, sizeof name, "%s/grad/%s", c, e->name);
        CHECK_MSG(dpt_st_read_f32(fix, name, ref, e->n) == DPT_OK, "%s", dpt_last_error());
        float ref_max = 0, got_max = 0;
        for (size_t j = 0; j < e->n; j++) {
            ref_max = fmaxf(ref_max, fabsf(ref[j]));
            got_max = fmaxf(got_max, fabsf(got[j]));
        }
        snprintf(name, sizeof name, "d %s", e->name);
        if (ref_max < 1e-12f) {
            /* A bias before batch norm (also through a concat) does not
             * change the loss: zero up to rounding on both sides. */
            printf("  %-40s max |got| %.1e (reference zero)\n", name, (double)got_max);
            CHECK_MSG(got_max < 1e-6f, "%s: %g should be zero", name, (double)got_max);
        } else {
            tu_check_close(name, got, ref, e->n, 1e-5);
        }
        free(ref);
    }
    /* Running statistics: PyTorch's update from this batch. */
    CHECK(dpt_net_update_state(net, NULL) == DPT_OK);
    CHECK(count_prefixed(c, "state") == dpt_net_n_state(net));
    for (size_t i = 0; i < dpt_net_n_state(net); i++) {
        const dpt_param_info *e = dpt_net_state_info(net, i);
        float *ref = malloc(e->n * sizeof *ref);
        snprintf(name, sizeof name, "%s/state/%s", c, e->name);
        CHECK_MSG(dpt_st_read_f32(fix, name, ref, e->n) == DPT_OK, "%s", dpt_last_error());
        tu_check_close(e->name, dpt_net_state(net) + e->offset, ref, e->n, 1e-5);
        free(ref);
    }
    dpt_net_free(net);
    free(x), free(t);
}

/* Dropout: identity when predicting (p = 0.25 and p = 0 give the same bits),
 * and its mask follows the observation's global position (another first
 * observation gives another loss). */
static void test_dropout_modes(void)
{
    int n, k, n0, k0;
    float *x, *t, *x0, *t0;
    dpt_net *drop = case_net("res_drop", &n, &k, &x, &t);
    dpt_net *none = case_net("res_p0", &n0, &k0, &x0, &t0);
    if (!drop || !none)
        goto done;
    const float *y, *y0;
    CHECK(dpt_net_forward(drop, x, n, DPT_MODE_PREDICT, &y) == DPT_OK);
    float *keep = malloc((size_t)n * k * sizeof *keep);
    memcpy(keep, y, (size_t)n * k * sizeof *keep);
    CHECK(dpt_net_forward(none, x0, n0, DPT_MODE_PREDICT, &y0) == DPT_OK);
    CHECK_MSG(memcmp(keep, y0, (size_t)n * k * sizeof *keep) == 0,
              "predicting, dropout p=0.25 must be the identity");
    float loss_ref;
    CHECK(dpt_st_read_f32(fix, "res_drop/loss", &loss_ref, 1) == DPT_OK);
    dpt_net_set_obs_offset(drop, key_first + 1);
    CHECK(dpt_net_forward(drop, x, n, DPT_MODE_TRAIN, &y) == DPT_OK);
    float loss = (float)dpt_softmax_xent(y, t, n, k, 1.0f, NULL);
    printf("dropout: first observation %ld instead of %ld: loss %.6f, reference %.6f\n",
           key_first + 1, key_first, (double)loss, (double)loss_ref);
    CHECK(fabsf(loss - loss_ref) > 1e-4f);
    free(keep);
done:
    dpt_net_free(drop), dpt_net_free(none);
    free(x), free(t), free(x0), free(t0);
}

/* ---- data-parallel: N workers against one on the whole minibatch ---------- */

enum { M = 12, K = 5, MAX_WORKERS = 4 };

typedef struct result {
    double loss;
    float *params, *grads, *state;
    uint64_t hash;
} result;

typedef struct job {
    const char *spec;
    const float *x, *t;
    size_t pix;
    int sync_bn, steps;
    result res[MAX_WORKERS];
} job;

static dpt_status worker(dpt_comm *comm, void *arg)
{
    job *j = arg;
    int rank = dpt_comm_rank(comm), n = dpt_comm_size(comm);
    int share[MAX_WORKERS], first = 0;
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
        /* Each step its own masks (iteration), the same on every worker
         * count; dpt_train_step sets this worker's first observation. */
        dpt_net_set_iteration(net, 1, step + 1);
        s = dpt_train_step(net, opt, comm, j->x + (size_t)first * j->pix, j->t + (size_t)first * K,
                           share[rank], &r->loss, NULL);
    }
    if (s == DPT_OK) {
        size_t np = dpt_net_n_params(net), ns = dpt_net_n_state_floats(net);
        r->params = malloc(np * sizeof(float));
        r->grads = malloc(np * sizeof(float));
        r->state = malloc(ns * sizeof(float));
        memcpy(r->params, dpt_net_params(net), np * sizeof(float));
        memcpy(r->grads, dpt_net_grads(net), np * sizeof(float));
        memcpy(r->state, dpt_net_state(net), ns * sizeof(float));
        r->hash = dpt_net_hash(net);
    }
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static int run(job *j, int n_workers)
{
    for (int r = 0; r < MAX_WORKERS; r++)
        memset(&j->res[r], 0, sizeof j->res[r]);
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = n_workers;
    dpt_status s = dpt_spmd_run(&cfg, worker, j);
    CHECK_MSG(s == DPT_OK, "N=%d: %s", n_workers, dpt_last_error());
    return s == DPT_OK ? 0 : -1;
}

static void free_results(job *j)
{
    for (int r = 0; r < MAX_WORKERS; r++)
        free(j->res[r].params), free(j->res[r].grads), free(j->res[r].state);
}

/* Random minibatch of M observations for the spec's input. */
static float *make_batch(const char *spec, float *t, size_t *pix)
{
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(spec, "t", K, 1, 0, &net) == DPT_OK);
    if (!net)
        return NULL;
    int chw[3];
    dpt_net_input_shape(net, chw);
    dpt_net_free(net);
    *pix = (size_t)chw[0] * chw[1] * chw[2];
    float *x = malloc(M * *pix * sizeof *x);
    dpt_rng rng;
    dpt_rng_seed(&rng, 19, 0);
    for (size_t i = 0; i < M * *pix; i++)
        x[i] = dpt_rng_uniform(&rng) * 2.0f - 0.5f;
    memset(t, 0, M * K * sizeof *t);
    for (int i = 0; i < M; i++)
        t[i * K + (int)dpt_rng_below(&rng, K)] = 1.0f;
    return x;
}

/* Invariants 1-3 with synchronised batch norm, 3 steps: loss, gradients,
 * learnables and state of N workers equal one worker's; all workers
 * identical; a rerun gives the same bits. */
static void test_parallel(const char *c)
{
    const char *spec = meta(c, "spec");
    float t[M * K];
    size_t pix = 0;
    float *x = spec ? make_batch(spec, t, &pix) : NULL;
    if (!x)
        return;
    job one = {.spec = spec, .x = x, .t = t, .pix = pix, .sync_bn = 1, .steps = 3}, many = one, again = one;
    if (run(&one, 1))
        goto done;
    size_t np = 0, ns = 0;
    dpt_net *net = NULL;
    if (dpt_net_from_spec(spec, "t", K, 1, 0, &net) == DPT_OK)
        np = dpt_net_n_params(net), ns = dpt_net_n_state_floats(net);
    dpt_net_free(net);
    for (int n = 2; n <= MAX_WORKERS; n++) {
        if (run(&many, n))
            continue;
        printf("%s, synchronised batch norm, N=%d vs 1 (%d steps):\n", c, n, one.steps);
        for (int r = 1; r < n; r++)
            CHECK_MSG(many.res[r].hash == many.res[0].hash, "N=%d: worker %d differs from 0", n, r);
        float l1 = (float)one.res[0].loss, ln = (float)many.res[0].loss;
        tu_check_close("loss", &ln, &l1, 1, 1e-5);
        tu_check_close("gradients", many.res[0].grads, one.res[0].grads, np, 1e-5);
        tu_check_close("updated learnables", many.res[0].params, one.res[0].params, np, 1e-5);
        tu_check_close("batch-norm state", many.res[0].state, one.res[0].state, ns, 1e-5);
        if (n == 3) {
            if (run(&again, 3) == 0) {
                CHECK_MSG(again.res[0].hash == many.res[0].hash, "N=3 rerun: hash differs");
                CHECK(memcmp(again.res[0].params, many.res[0].params, np * sizeof(float)) == 0);
                CHECK(memcmp(again.res[0].grads, many.res[0].grads, np * sizeof(float)) == 0);
                CHECK(memcmp(again.res[0].state, many.res[0].state, ns * sizeof(float)) == 0);
                CHECK(again.res[0].loss == many.res[0].loss);
                printf("  rerun of N=3: identical bits\n");
            }
            free_results(&again);
        }
        free_results(&many);
    }
done:
    free_results(&one);
    free(x);
}

/* Local batch norm (the example's default): after one step, the stem's
 * running statistics are the pooled statistics of the whole minibatch
 * (its input is the same for every worker count), and every worker holds
 * the same state. */
static void test_pooled_local(const char *c)
{
    const char *spec = meta(c, "spec");
    float t[M * K];
    size_t pix = 0;
    float *x = spec ? make_batch(spec, t, &pix) : NULL;
    if (!x)
        return;
    dpt_net *net = NULL;
    CHECK(dpt_net_from_spec(spec, "t", K, 1, 0, &net) == DPT_OK);
    long im = net ? dpt_net_find_state(net, "stem_bn/TrainedMean") : -1;
    long iv = net ? dpt_net_find_state(net, "stem_bn/TrainedVariance") : -1;
    CHECK(im >= 0 && iv >= 0);
    size_t om = im >= 0 ? dpt_net_state_info(net, (size_t)im)->offset : 0;
    size_t ov = iv >= 0 ? dpt_net_state_info(net, (size_t)iv)->offset : 0;
    size_t nc = im >= 0 ? dpt_net_state_info(net, (size_t)im)->n : 0;
    dpt_net_free(net);
    job one = {.spec = spec, .x = x, .t = t, .pix = pix, .sync_bn = 0, .steps = 1}, many = one;
    if (nc && run(&one, 1) == 0) {
        for (int n = 2; n <= MAX_WORKERS; n++) {
            if (run(&many, n))
                continue;
            printf("%s, local batch norm, N=%d, pooled running statistics of stem_bn:\n", c, n);
            tu_check_close("TrainedMean", many.res[0].state + om, one.res[0].state + om, nc, 1e-5);
            tu_check_close("TrainedVariance", many.res[0].state + ov, one.res[0].state + ov, nc, 1e-5);
            for (int r = 1; r < n; r++)
                CHECK_MSG(many.res[r].hash == many.res[0].hash, "N=%d: worker %d differs", n, r);
            free_results(&many);
        }
    }
    free_results(&one);
    free(x);
}

int main(void)
{
    char path[1024];
    dpt_status s = dpt_st_open(tu_fixture("graph_net.safetensors", path, sizeof path), &fix);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return tu_exit();
    key_seed = strtoull(dpt_st_meta(fix, "seed"), NULL, 10);
    key_epoch = atol(dpt_st_meta(fix, "epoch"));
    key_iteration = atol(dpt_st_meta(fix, "iteration"));
    key_first = atol(dpt_st_meta(fix, "first_obs"));
    /* Every case of the fixture (its metadata lists them). */
    char cases[256];
    snprintf(cases, sizeof cases, "%s", dpt_st_meta(fix, "cases") ? dpt_st_meta(fix, "cases") : "");
    CHECK(strstr(cases, "res_p0") && strstr(cases, "res_drop"));
    for (char *save = NULL, *c = strtok_r(cases, ",", &save); c; c = strtok_r(NULL, ",", &save))
        test_case(c);
    test_dropout_modes();
    test_parallel("res_p0");
    test_parallel("res_drop");
    test_pooled_local("res_p0");
    dpt_st_close(fix);
    return tu_exit();
}
