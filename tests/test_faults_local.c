/* Worker faults under the local backend, driven through the library (one
 * worker thread cannot be killed from outside, and the library has no test
 * hooks):
 *
 *   1. a custom training loop (dpt_spmd_run + dpt_train_step) whose worker 1
 *      fails at iteration k while the other workers wait for it inside the
 *      step's collectives: dpt_spmd_run returns promptly (far below the
 *      collective timeout) with worker 1's status and message, and every
 *      other worker's collective fails with "worker 1 failed";
 *   2. dpt_fit on an image folder opened without preload, where an image
 *      file disappears (after epoch 1, the run continuing from its
 *      checkpoint): the worker that reads it fails, the others are released,
 *      dpt_fit returns the error naming the file, no model is written; with
 *      the file back, resuming from the last checkpoint gives a model file
 *      byte-identical to a run that was never interrupted. */
#include "dptrain/train.h"
#include "testfs.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A collective timeout far above anything the tests should wait: a failure
 * that is not propagated shows up as a run of about this length. The time
 * bounds below are half of it: far above what a slow, loaded machine needs
 * (the failures are seen by events, not timers), far below a timeout. */
#define TIMEOUT_MS 60000L
#define BOUND_S (TIMEOUT_MS / 2000.0)

static const char small_spec[] = "input in size=28x28x1\n"
                                 "conv c1 filter=3 filters=4 stride=2\n"
                                 "batchnorm bn1\n"
                                 "relu r1\n"
                                 "fc fc outputs=classes\n"
                                 "softmax sm\n";

/* ---- 1. custom loop, worker 1 fails at iteration k -------------------------- */

enum { N_WORKERS = 3, FAIL_RANK = 1, FAIL_AT = 4, STEPS = 20, BATCH = 12 };

typedef struct loop_job {
    dpt_status st[N_WORKERS];
    char msg[N_WORKERS][512];
    int steps_done[N_WORKERS];
    atomic_int at_fail; /* other workers that reached iteration FAIL_AT */
    double t_fail;      /* when the failing worker returned its error */
} loop_job;

static dpt_status loop_worker(dpt_comm *comm, void *arg)
{
    loop_job *j = arg;
    int rank = dpt_comm_rank(comm), n = dpt_comm_size(comm);
    int share[N_WORKERS];
    dpt_batch_shares(BATCH, n, share);
    enum { K = 10, PIX = 28 * 28 };
    float *x = malloc((size_t)share[rank] * PIX * sizeof *x);
    float *t = calloc((size_t)share[rank] * K, sizeof *t);
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_status s = x && t ? DPT_OK : dpt_fail(DPT_ERR_NOMEM, "out of memory");
    if (s == DPT_OK)
        s = dpt_net_from_spec(small_spec, "small", K, share[0], 1, &net);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    dpt_rng r;
    dpt_rng_seed(&r, 11, (uint64_t)rank);
    for (int it = 1; s == DPT_OK && it <= STEPS; it++) {
        for (int i = 0; i < share[rank] * PIX; i++)
            x[i] = dpt_rng_uniform(&r);
        memset(t, 0, (size_t)share[rank] * K * sizeof *t);
        for (int i = 0; i < share[rank]; i++)
            t[i * K + (int)dpt_rng_below(&r, K)] = 1.0f;
        if (it == FAIL_AT && rank != FAIL_RANK)
            atomic_fetch_add(&j->at_fail, 1);
        if (rank == FAIL_RANK && it == FAIL_AT) {
            /* Fail once the others are in iteration FAIL_AT (an event, not
             * a sleep a slow machine outruns; bounded against a hang).
             * The sleep after it makes it likely that they are inside the
             * step's first collective by then; the checks hold either way
             * (a collective entered after a failure fails at once). */
            struct timespec ms = {0, 1000000L}, ts = {0, 200 * 1000000L};
            for (long k = 0; k < TIMEOUT_MS && atomic_load(&j->at_fail) < N_WORKERS - 1; k++)
                nanosleep(&ms, NULL);
            nanosleep(&ts, NULL);
            s = dpt_fail(DPT_ERR_IO, "sensor feed lost at iteration %d", it);
            j->t_fail = now_s();
            break;
        }
        double loss = 0;
        s = dpt_train_step(net, opt, comm, x, t, share[rank], &loss, NULL);
        if (s == DPT_OK)
            j->steps_done[rank] = it;
    }
    j->st[rank] = s;
    snprintf(j->msg[rank], sizeof j->msg[rank], "%s", s ? dpt_last_error() : "");
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    free(x);
    free(t);
    return s;
}

static void test_custom_loop(void)
{
    printf("custom loop: worker %d of %d fails at iteration %d (collective timeout %ld ms)\n", FAIL_RANK,
           N_WORKERS, FAIL_AT, TIMEOUT_MS);
    loop_job j;
    memset(&j, 0, sizeof j);
    dpt_spmd_config cfg = DPT_SPMD_CONFIG_INIT;
    cfg.backend = DPT_COMM_LOCAL;
    cfg.n_workers = N_WORKERS;
    cfg.timeout_ms = TIMEOUT_MS;
    double t0 = now_s();
    dpt_status s = dpt_spmd_run(&cfg, loop_worker, &j);
    double t1 = now_s(), dt = t1 - t0;
    char want[128];
    snprintf(want, sizeof want, "worker %d: sensor feed lost at iteration %d", FAIL_RANK, FAIL_AT);
    printf("  returned %s %.1f ms after the failure: %s\n", dpt_status_str(s), (t1 - j.t_fail) * 1e3,
           dpt_last_error());
    CHECK_MSG(s == DPT_ERR_IO, "status %s, want the failing worker's (io)", dpt_status_str(s));
    CHECK_MSG(strcmp(dpt_last_error(), want) == 0, "message '%s', want '%s'", dpt_last_error(), want);
    CHECK_MSG(t1 - j.t_fail < BOUND_S,
              "returned %.1f s after the failure (%.1f s in all; timeout %ld ms): the failure was not propagated",
              t1 - j.t_fail, dt, TIMEOUT_MS);
    char peer[64];
    snprintf(peer, sizeof peer, "worker %d failed: sensor feed lost", FAIL_RANK);
    for (int r = 0; r < N_WORKERS; r++) {
        if (r == FAIL_RANK)
            continue;
        printf("  worker %d: %s after %d steps: %s\n", r, dpt_status_str(j.st[r]), j.steps_done[r], j.msg[r]);
        CHECK_MSG(j.st[r] == DPT_ERR_COMM && strstr(j.msg[r], peer),
                  "worker %d ended with %s '%s', want comm error naming worker %d", r,
                  dpt_status_str(j.st[r]), j.msg[r], FAIL_RANK);
        CHECK_MSG(j.steps_done[r] == FAIL_AT - 1, "worker %d did %d steps, want %d", r, j.steps_done[r],
                  FAIL_AT - 1);
    }
}

/* ---- 2. dpt_fit, an image file disappears mid-training ------------------------- */

/* Copy root/<class>/<file> (one level of class folders). */
static int copy_folder(const char *from, const char *to)
{
    DIR *d = opendir(from);
    if (!d || mkdir(to, 0777) != 0) {
        if (d)
            closedir(d);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        struct stat st;
        if (stat(a, &st) != 0)
            rc = -1;
        else if (S_ISDIR(st.st_mode))
            rc = copy_folder(a, b);
        else
            rc = tu_copy_file(a, b);
    }
    closedir(d);
    return rc;
}

static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = 0;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static dpt_status fit(const dpt_datastore *train, int epochs, const char *model, const char *ckpt,
                      const char *resume, dpt_fit_result *res)
{
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = small_spec;
    cfg.spec_source = "small";
    cfg.train = train;
    cfg.epochs = epochs;
    cfg.batch = 16;
    cfg.seed = 21;
    cfg.spmd.backend = DPT_COMM_LOCAL;
    cfg.spmd.n_workers = 2;
    cfg.spmd.timeout_ms = TIMEOUT_MS;
    cfg.model_out = model;
    cfg.checkpoint_out = ckpt;
    cfg.checkpoint_every = 4;
    cfg.resume = resume;
    return dpt_fit(&cfg, res);
}

/* Every image is read once per epoch, by one worker. So: train epoch 1,
 * remove a file, continue from the end-of-epoch checkpoint: the run fails
 * in epoch 2, at whichever iteration reads the file, with checkpoints
 * written before that. */
static void test_fit_file_vanishes(const char *tmp)
{
    char fixture[1024], data[1024], victim[1100], moved[1100];
    tu_fixture("digits400", fixture, sizeof fixture);
    snprintf(data, sizeof data, "%s/digits", tmp);
    if (copy_folder(fixture, data) != 0) {
        CHECK_MSG(0, "cannot copy %s to %s", fixture, data);
        return;
    }
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT; /* no preload: files are read every epoch */
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(data, &fo, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    snprintf(victim, sizeof victim, "%s", dpt_datastore_file(ds, dpt_datastore_n_obs(ds) / 2));
    snprintf(moved, sizeof moved, "%s/vanished.png", tmp);

    char ref[1100], scratch[1100], ck1[1100], ck2[1100], model[1100], resumed[1100];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmp);
    snprintf(scratch, sizeof scratch, "%s/scratch.safetensors", tmp);
    snprintf(ck1, sizeof ck1, "%s/epoch1.safetensors", tmp);
    snprintf(ck2, sizeof ck2, "%s/ckpt.safetensors", tmp);
    snprintf(model, sizeof model, "%s/model.safetensors", tmp);
    snprintf(resumed, sizeof resumed, "%s/resumed.safetensors", tmp);

    dpt_fit_result res;
    double t0 = now_s();
    s = fit(ds, 3, ref, scratch, NULL, &res);
    double t_ref = now_s() - t0;
    CHECK_MSG(s == DPT_OK, "uninterrupted run: %s", dpt_last_error());
    long total = res.iterations;
    printf("dpt_fit, 2 workers, folder without preload: 3 epochs (%ld iterations) in %.0f ms\n", total,
           t_ref * 1e3);
    s = fit(ds, 1, scratch, ck1, NULL, &res);
    CHECK_MSG(s == DPT_OK, "epoch 1: %s", dpt_last_error());

    CHECK(rename(victim, moved) == 0);
    t0 = now_s();
    s = fit(ds, 3, model, ck2, ck1, &res);
    double t_fault = now_s() - t0;
    printf("  %s removed after epoch 1: dpt_fit returned %s after %.0f ms: %s\n", victim, dpt_status_str(s),
           t_fault * 1e3, dpt_last_error());
    CHECK_MSG(s == DPT_ERR_IO, "status %s, want io", dpt_status_str(s));
    CHECK_MSG(strncmp(dpt_last_error(), "worker ", 7) == 0 && strstr(dpt_last_error(), victim) &&
                  strstr(dpt_last_error(), "No such file"),
              "message '%s' should name the worker and the missing file", dpt_last_error());
    CHECK_MSG(t_fault < t_ref + BOUND_S, "failing run took %.1f s (3 epochs take %.1f s; timeout %ld ms)", t_fault,
              t_ref, TIMEOUT_MS);
    CHECK_MSG(!exists(model), "a model was written by the failed run");

    /* The file is back; continue from the last checkpoint before the fault. */
    CHECK(rename(moved, victim) == 0);
    const char *last = exists(ck2) ? ck2 : ck1;
    dpt_net *probe = NULL;
    dpt_checkpoint_info info;
    s = dpt_net_from_spec(small_spec, "small", dpt_datastore_n_classes(ds), 8, 21, &probe);
    if (s == DPT_OK)
        s = dpt_checkpoint_load(last, probe, NULL, &info);
    CHECK_MSG(s == DPT_OK, "last checkpoint before the fault does not load: %s", dpt_last_error());
    if (s == DPT_OK)
        printf("  last checkpoint: epoch %d, position %ld, iteration %ld of %ld\n", info.epoch,
               info.epoch_iteration, info.iteration, total);
    dpt_net_free(probe);
    s = fit(ds, 3, resumed, scratch, last, &res);
    CHECK_MSG(s == DPT_OK, "resume: %s", dpt_last_error());
    CHECK_MSG(s == DPT_OK && res.iterations == total, "resumed run ended at iteration %ld, want %ld",
              res.iterations, total);
    int same = s == DPT_OK && same_file(resumed, ref);
    CHECK_MSG(same, "resumed model differs from the uninterrupted one");
    if (same)
        printf("  resumed: model file identical to the uninterrupted run\n");
    dpt_datastore_free(ds);
}

int main(void)
{
    char tmp[] = "/tmp/dpt_faults_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_custom_loop();
    test_fit_file_vanishes(tmp);
    tu_remove_tree(tmp);
    return tu_exit();
}
