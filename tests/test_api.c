/* The public building blocks a custom loop needs, by value: the network
 * builder against spec text, learnables and state read/written by name,
 * the public losses, gplus on 3 workers, and a hand-written data-parallel
 * step (the sequence of examples/parallel_custom_loop.c) against
 * dpt_train_step, and dpt_cpu_count under a narrowed affinity. Uses only
 * the public header. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "dptrain/dptrain.h"
#include "testutil.h"

#ifdef __linux__
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

/* ---- builder ------------------------------------------------------------------ */

static void test_builder(void)
{
    dpt_net_builder *b = NULL;
    CHECK(dpt_net_builder_new(&b) == DPT_OK && b);
    CHECK(strcmp(dpt_net_builder_spec(b), "") == 0);
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
    dpt_net_builder_add_fc(b, "fc", DPT_NET_OUTPUTS_CLASSES);
    CHECK(dpt_net_builder_add_softmax(b, "softmax") == DPT_OK);
    dpt_net *built = NULL, *parsed = NULL;
    dpt_status s = dpt_net_build(b, 10, 8, 42, &built);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    s = dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 8, 42, &parsed);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (built && parsed) {
        /* The same network: layers, keys, tables and initial values. */
        CHECK_MSG(strcmp(dpt_net_spec(built), dpt_net_spec(parsed)) == 0, "\n%s\nvs\n%s",
                  dpt_net_spec(built), dpt_net_spec(parsed));
        CHECK(dpt_net_n_params(built) == 123090);
        CHECK(dpt_net_n_learnables(built) == 14 && dpt_net_n_state(built) == 6);
        CHECK(dpt_net_hash(built) == dpt_net_hash(parsed));
    }
    /* The builder is unchanged by a build and builds again. */
    dpt_net *again = NULL;
    CHECK(dpt_net_build(b, 10, 8, 42, &again) == DPT_OK && again);
    if (again && built)
        CHECK(dpt_net_hash(again) == dpt_net_hash(built));
    dpt_net_free(again);
    dpt_net_free(built);
    dpt_net_free(parsed);
    dpt_net_builder_free(b);

    /* add_line for keys the typed calls lack; fixed outputs. */
    CHECK(dpt_net_builder_new(&b) == DPT_OK);
    dpt_net_builder_add_input(b, "in", 6, 7, 3);
    dpt_net_builder_add_line(b, "conv c filter=3x2 filters=4 bias=0   # no bias");
    dpt_net_builder_add_line(b, "batchnorm bn epsilon=0.001 decay=0.2");
    dpt_net_builder_add_fc(b, "fc", 5);
    dpt_net *net = NULL;
    s = dpt_net_build(b, 0, 2, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (net) {
        int chw[3];
        dpt_net_layer_shape(net, 1, chw);
        CHECK(chw[0] == 4 && chw[1] == 4 && chw[2] == 6);
        CHECK(dpt_net_n_outputs(net) == 5);
        CHECK(dpt_net_find_learnable(net, "c/Bias") == -1);
        CHECK(strstr(dpt_net_spec(net), "epsilon=0.001") != NULL);
    }
    dpt_net_free(net);
    dpt_net_builder_free(b);
}

/* ---- tables by name ------------------------------------------------------------- */

static void test_tables(void)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 4, 3, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (!net)
        return;
    const dpt_param_info *e = dpt_net_learnable(net, (size_t)dpt_net_find_learnable(net, "fc/Bias"));
    float bias[10], back[10];
    for (int i = 0; i < 10; i++)
        bias[i] = 0.25f * (float)i - 1.0f;
    CHECK(dpt_net_write_learnable(net, "fc/Bias", bias, 10) == DPT_OK);
    CHECK(memcmp(dpt_net_params(net) + e->offset, bias, sizeof bias) == 0);
    CHECK(dpt_net_read_learnable(net, "fc/Bias", back, 10) == DPT_OK);
    CHECK(memcmp(back, bias, sizeof bias) == 0);
    /* State: a fresh network starts with mean 0 and variance 1. */
    float mean[20], var[20];
    CHECK(dpt_net_read_state(net, "bn2/TrainedMean", mean, 20) == DPT_OK);
    CHECK(dpt_net_read_state(net, "bn2/TrainedVariance", var, 20) == DPT_OK);
    CHECK(mean[0] == 0.0f && mean[19] == 0.0f && var[0] == 1.0f && var[19] == 1.0f);
    var[7] = 2.5f;
    CHECK(dpt_net_write_state(net, "bn2/TrainedVariance", var, 20) == DPT_OK);
    const dpt_param_info *v = dpt_net_state_info(net, (size_t)dpt_net_find_state(net, "bn2/TrainedVariance"));
    CHECK(dpt_net_state(net)[v->offset + 7] == 2.5f);
    dpt_net_free(net);
}

/* ---- losses ----------------------------------------------------------------------- */

static void test_losses(void)
{
    /* Two rows of three classes; the first target one-hot, the second soft. */
    const float p[6] = {0.7f, 0.2f, 0.1f, 0.25f, 0.25f, 0.5f};
    const float t[6] = {1.0f, 0.0f, 0.0f, 0.0f, 0.5f, 0.5f};
    double want = -(log(0.7) + 0.5 * log(0.25) + 0.5 * log(0.5)) / 2.0;
    double loss = 0.0;
    float g[6];
    CHECK(dpt_loss_softmax_xent(p, t, 2, 3, 1.0, &loss, g) == DPT_OK);
    CHECK_MSG(fabs(loss - want) < 1e-6, "xent %.9f, want %.9f", loss, want);
    for (int i = 0; i < 6; i++)
        CHECK(fabsf(g[i] - (p[i] - t[i]) / 2.0f) < 1e-7f);
    /* weight scales loss and gradient alike; NULL gradient: loss only */
    double half = 0.0;
    CHECK(dpt_loss_softmax_xent(p, t, 2, 3, 0.5, &half, g) == DPT_OK);
    CHECK(fabs(half - 0.5 * want) < 1e-7);
    CHECK(fabsf(g[0] - 0.5f * (0.7f - 1.0f) / 2.0f) < 1e-7f);
    CHECK(dpt_loss_softmax_xent(p, t, 2, 3, 1.0, &loss, NULL) == DPT_OK && fabs(loss - want) < 1e-6);

    /* Half mean squared error, MATLAB's mse: Σ (y - t)² / (2n). */
    const float y[4] = {1.0f, 2.0f, 3.0f, 4.0f}, z[4] = {0.0f, 0.0f, 1.0f, 0.0f};
    float dy[4];
    CHECK(dpt_loss_mse(y, z, 2, 2, 1.0, &loss, dy) == DPT_OK);
    CHECK_MSG(fabs(loss - (1.0 + 4.0 + 4.0 + 16.0) / 4.0) < 1e-9, "mse %g", loss);
    CHECK(dy[0] == 0.5f && dy[1] == 1.0f && dy[2] == 1.0f && dy[3] == 2.0f);
    CHECK(dpt_loss_mse(y, z, 2, 2, 2.0, &loss, NULL) == DPT_OK && fabs(loss - 12.5) < 1e-9);
}

/* ---- gplus on 3 workers -------------------------------------------------------------- */

typedef struct gplus_job {
    double scalar[3];
    float buf[3][5];
} gplus_job;

static dpt_status gplus_worker(dpt_comm *comm, void *arg)
{
    gplus_job *j = arg;
    int r = dpt_comm_rank(comm);
    double x = r + 1, w = (r + 1) / 6.0;
    float b[5];
    for (int i = 0; i < 5; i++)
        b[i] = (float)(10 * i + r);
    dpt_status s = dpt_gplus_f64(comm, &x, 1, w);
    if (s == DPT_OK)
        s = dpt_gplus_f32(comm, b, 5, 1.0);
    j->scalar[r] = x;
    memcpy(j->buf[r], b, sizeof b);
    return s;
}

static void test_gplus(void)
{
    gplus_job j;
    memset(&j, 0, sizeof j);
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = 3;
    dpt_status s = dpt_spmd_run(&cfg, gplus_worker, &j);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    for (int r = 0; r < 3; r++) {
        /* Σ (r+1)·(r+1)/6 = 14/6, the same on every worker */
        CHECK_MSG(fabs(j.scalar[r] - 14.0 / 6.0) < 1e-12, "worker %d: %.17g", r, j.scalar[r]);
        for (int i = 0; i < 5; i++)
            CHECK(j.buf[r][i] == (float)(30 * i + 3));
    }
    /* Without a communicator: only the weight. */
    double x = 3.0;
    float b[2] = {1.0f, -2.0f};
    CHECK(dpt_gplus_f64(NULL, &x, 1, 0.5) == DPT_OK && x == 1.5);
    CHECK(dpt_gplus_f32(NULL, b, 2, 0.25) == DPT_OK && b[0] == 0.25f && b[1] == -0.5f);
    CHECK(dpt_gplus_f64(NULL, NULL, 0, 1.0) == DPT_OK);
}

/* ---- a hand-written step equals dpt_train_step ------------------------------------ */

enum { M = 9, PIX = 36, K = 3 };
static const char step_spec[] = "input in size=6x6x1\n"
                                "conv c1 filter=3 filters=2 padding=1\n"
                                "batchnorm bn\n"
                                "relu r\n"
                                "fc fc outputs=3\n"
                                "softmax sm\n";

typedef struct step_job {
    float x[M * PIX], t[M * K];
    int by_hand;
    float *params[2], *state[2];
    double loss[2];
    size_t np, ns;
} step_job;

static dpt_status step_worker(dpt_comm *comm, void *arg)
{
    step_job *j = arg;
    int r = dpt_comm_rank(comm);
    int share[2];
    dpt_batch_shares(M, 2, share); /* 5 and 4: uneven on purpose */
    int first = r ? share[0] : 0, n = share[r];
    const float *x = j->x + first * PIX, *t = j->t + first * K;
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = dpt_net_from_spec(step_spec, "step", 0, 5, 11, &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.1f, 0.9f, 0.0f, &opt);
    double loss = 0.0;
    for (int it = 0; s == DPT_OK && it < 2; it++) {
        if (!j->by_hand) {
            s = dpt_train_step(net, opt, comm, x, t, n, &loss, NULL);
            continue;
        }
        double m_total = n;
        const float *p;
        float *dl = dpt_net_output_grad(net);
        if ((s = dpt_gplus_f64(comm, &m_total, 1, 1.0)) != DPT_OK ||
            (s = dpt_net_forward(net, x, n, DPT_MODE_TRAIN, &p)) != DPT_OK ||
            (s = dpt_loss_softmax_xent(p, t, n, K, 1.0, &loss, dl)) != DPT_OK ||
            (s = dpt_net_backward(net, dl, 1)) != DPT_OK ||
            (s = dpt_gplus_f64(comm, &loss, 1, n / m_total)) != DPT_OK ||
            (s = dpt_gplus_f32(comm, dpt_net_grads(net), dpt_net_n_params(net), n / m_total)) ||
            (s = dpt_net_update_state(net, comm)) != DPT_OK)
            break;
        dpt_sgdm_step(opt, dpt_net_params(net), dpt_net_grads(net));
    }
    if (s == DPT_OK) {
        j->params[r] = malloc(dpt_net_n_params(net) * sizeof(float));
        j->state[r] = malloc(dpt_net_n_state_floats(net) * sizeof(float));
        memcpy(j->params[r], dpt_net_params(net), dpt_net_n_params(net) * sizeof(float));
        memcpy(j->state[r], dpt_net_state(net), dpt_net_n_state_floats(net) * sizeof(float));
        j->loss[r] = loss;
        j->np = dpt_net_n_params(net), j->ns = dpt_net_n_state_floats(net);
    }
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

static void test_hand_written_step(void)
{
    static step_job ref, mine;
    dpt_rng rng;
    dpt_rng_seed(&rng, 5, 0);
    for (int i = 0; i < M * PIX; i++)
        ref.x[i] = dpt_rng_uniform(&rng);
    for (int i = 0; i < M; i++)
        ref.t[i * K + (int)dpt_rng_below(&rng, K)] = 1.0f;
    memcpy(mine.x, ref.x, sizeof ref.x);
    memcpy(mine.t, ref.t, sizeof ref.t);
    mine.by_hand = 1;
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = 2;
    dpt_status s = dpt_spmd_run(&cfg, step_worker, &ref);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    s = dpt_spmd_run(&cfg, step_worker, &mine);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (ref.params[0] && mine.params[0] && mine.params[1]) {
        size_t np = mine.np, ns = mine.ns;
        CHECK(np == 18 + 2 + 4 + 3 * 72 + 3 && ns == 4);
        tu_check_close("hand-written step: learnables", mine.params[0], ref.params[0], np, 1e-5);
        tu_check_close("hand-written step: state", mine.state[0], ref.state[0], ns, 1e-5);
        CHECK(memcmp(mine.params[0], mine.params[1], np * sizeof(float)) == 0);
        CHECK(memcmp(mine.state[0], mine.state[1], ns * sizeof(float)) == 0);
        CHECK_MSG(fabs(mine.loss[0] - ref.loss[0]) < 1e-6 * fabs(ref.loss[0]), "loss %.9g vs %.9g",
                  mine.loss[0], ref.loss[0]);
        CHECK(mine.loss[0] == mine.loss[1]);
    }
    for (int r = 0; r < 2; r++) {
        free(ref.params[r]), free(ref.state[r]);
        free(mine.params[r]), free(mine.state[r]);
    }
}

/* ---- machine ------------------------------------------------------------------ */

/* The default worker count follows the CPUs the process may run on:
 * narrowed to one CPU, dpt_cpu_count says 1, and back again. */
static void test_cpu_count(void)
{
#ifdef __linux__
    cpu_set_t all, one;
    if (sched_getaffinity(0, sizeof all, &all) != 0) {
        printf("cpu count: no affinity mask here, skipped\n");
        return;
    }
    /* No cgroup quota in the way (test_cpu_quota has those). */
    CHECK(setenv("DPT_CGROUP_ROOT", "/nonexistent/dpt-cgroup", 1) == 0);
    CHECK(dpt_cpu_count() == CPU_COUNT(&all));
    int first = 0;
    while (first < CPU_SETSIZE && !CPU_ISSET(first, &all))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
    CHECK(dpt_cpu_count() == 1);
    CHECK(sched_setaffinity(0, sizeof all, &all) == 0);
    CHECK(dpt_cpu_count() == CPU_COUNT(&all));
    unsetenv("DPT_CGROUP_ROOT");
    printf("cpu count: %d allowed, 1 when pinned to CPU %d\n", CPU_COUNT(&all), first);
#endif
}

#ifdef __linux__
static void put_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}
#endif

/* A cgroup CPU quota caps the count below the affinity mask: fake cgroup
 * trees under DPT_CGROUP_ROOT with v2's cpu.max and v1's cfs files, for
 * whichever hierarchies /proc/self/cgroup says this process is in (the
 * files at the tree's root bind every cgroup below it). */
static void test_cpu_quota(void)
{
#ifdef __linux__
    cpu_set_t all;
    FILE *pc = fopen("/proc/self/cgroup", "r");
    if (sched_getaffinity(0, sizeof all, &all) != 0 || !pc) {
        if (pc)
            fclose(pc);
        printf("cpu quota: no affinity mask or /proc/self/cgroup here, skipped\n");
        return;
    }
    const int cpus = CPU_COUNT(&all), two = cpus < 2 ? cpus : 2;
    int v1 = 0, v2 = 0;
    char line[1024];
    while (fgets(line, sizeof line, pc)) {
        if (strncmp(line, "0::", 3) == 0)
            v2 = 1;
        char *c = strchr(line, ':'), *e = c ? strchr(c + 1, ':') : NULL;
        if (e) {
            char list[512];
            snprintf(list, sizeof list, ",%.*s,", (int)(e - c - 1), c + 1);
            if (strstr(list, ",cpu,"))
                v1 = 1;
        }
    }
    fclose(pc);
    char root[] = "/tmp/dpt_cgroup_XXXXXX", v1dir[64];
    CHECK(mkdtemp(root) != NULL);
    snprintf(v1dir, sizeof v1dir, "%s/cpu", root);
    CHECK(mkdir(v1dir, 0700) == 0);
    CHECK(setenv("DPT_CGROUP_ROOT", root, 1) == 0);
    CHECK(dpt_cpu_count() == cpus); /* no quota files */
    if (v2) {
        put_file(root, "cpu.max", "100000 100000\n");
        CHECK(dpt_cpu_count() == 1);
        put_file(root, "cpu.max", "150000 100000\n"); /* 1.5 CPUs: 2 workers */
        CHECK(dpt_cpu_count() == two);
        put_file(root, "cpu.max", "max 100000\n");
        CHECK(dpt_cpu_count() == cpus);
        put_file(root, "cpu.max", "garbage\n");
        CHECK(dpt_cpu_count() == cpus);
        put_file(root, "cpu.max", "50000 100000\n"); /* half a CPU: still 1 */
        CHECK(dpt_cpu_count() == 1);
    }
    if (v1) {
        char path[128];
        snprintf(path, sizeof path, "%s/cpu.max", root);
        unlink(path); /* v1 alone */
        put_file(v1dir, "cpu.cfs_period_us", "100000\n");
        put_file(v1dir, "cpu.cfs_quota_us", "-1\n");
        CHECK(dpt_cpu_count() == cpus);
        put_file(v1dir, "cpu.cfs_quota_us", "200000\n");
        CHECK(dpt_cpu_count() == two);
        put_file(v1dir, "cpu.cfs_quota_us", "100000\n");
        CHECK(dpt_cpu_count() == 1);
    }
    const char *files[] = {"cpu.max", "cpu/cpu.cfs_period_us", "cpu/cpu.cfs_quota_us"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        unlink(path); /* those the checks above wrote */
    }
    CHECK(rmdir(v1dir) == 0 && rmdir(root) == 0);
    unsetenv("DPT_CGROUP_ROOT");
    CHECK(dpt_cpu_count() <= cpus); /* the real cgroups may have a quota */
    printf("cpu quota: %d CPUs, quotas of 1 and 2 give 1 and %d (v2 %s, v1 %s)\n", cpus, two,
           v2 ? "checked" : "absent", v1 ? "checked" : "absent");
    CHECK(v1 || v2);
#endif
}

int main(void)
{
    test_cpu_count();
    test_cpu_quota();
    test_builder();
    test_tables();
    test_losses();
    test_gplus();
    test_hand_written_step();
    return tu_exit();
}
