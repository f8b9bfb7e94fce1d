/* Stopping dpt_fit on request, and temporary files that never follow links:
 *
 *   1. dpt_tmpfile_create with symlinks (and a file) planted at the names it
 *      tries: it skips them, and the files they point to are never written;
 *      with every name taken it fails with EEXIST. dpt_st_writer_save with
 *      links planted at its temporary names writes the target, not them.
 *   2. dpt_fit with the stop flag already set: DPT_ERR_INTERRUPTED before
 *      the first iteration, no model, no checkpoint, on_start called once.
 *   3. the stop flag set by the progress callback at iteration 5 (an event,
 *      not a time): the workers stop together a little later, no model is
 *      saved, the last checkpoint is where the result says; resuming from it
 *      gives a model byte-identical to a run never interrupted.
 *   4. on_start failing: the run fails with its message before any file is
 *      written or any progress is reported. */
#include "core/safetensors.h"
#include "core/tmpfile.h"
#include "dptrain/train.h"
#include "testfs.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char small_spec[] = "input in size=28x28x1\n"
                                 "conv c1 filter=3 filters=4 stride=2\n"
                                 "batchnorm bn1\n"
                                 "relu r1\n"
                                 "fc fc outputs=classes\n"
                                 "softmax sm\n";

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int file_is(const char *path, const char *text)
{
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strcmp(buf, text) == 0;
}

static void plant(const char *target, const char *path, int i, const char *victim)
{
    char name[1200];
    snprintf(name, sizeof name, "%s.tmp.%ld.%d", path, (long)getpid(), i);
    if (victim)
        CHECK(symlink(victim, name) == 0);
    else
        CHECK(close(open(name, O_WRONLY | O_CREAT | O_EXCL, 0644)) == 0);
    (void)target;
}

/* ---- 1. temporary files --------------------------------------------------- */

static void test_tmpfile(const char *tmp)
{
    char victim[1100], path[1100], got[1200], want[1200];
    snprintf(victim, sizeof victim, "%s/victim", tmp);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    FILE *v = fopen(victim, "w");
    CHECK(v && fputs("precious", v) >= 0 && fclose(v) == 0);
    for (int i = 0; i < 4; i++)
        plant(NULL, path, i, victim);
    plant(NULL, path, 4, NULL); /* a file, as a crash leaves */
    int fd = dpt_tmpfile_create(path, got, sizeof got);
    CHECK_MSG(fd >= 0, "dpt_tmpfile_create: %s", strerror(errno));
    snprintf(want, sizeof want, "%s.tmp.%ld.5", path, (long)getpid());
    CHECK_MSG(strcmp(got, want) == 0, "temporary %s, want %s", got, want);
    if (fd >= 0) {
        CHECK(write(fd, "new", 3) == 3);
        close(fd);
        unlink(got);
    }
    CHECK_MSG(file_is(victim, "precious"), "a planted link was followed");

    /* The safetensors writer: links at its first names; the target gets the
     * file, the victim nothing. */
    dpt_st_writer *w = NULL;
    float x[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    CHECK(dpt_st_writer_new(&w) == DPT_OK);
    CHECK(dpt_st_writer_add(w, "x", "F32", 1, shape, x, sizeof x) == DPT_OK);
    dpt_status s = dpt_st_writer_save(w, path);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    dpt_st *st = NULL;
    CHECK_MSG(dpt_st_open(path, &st) == DPT_OK, "%s", dpt_last_error());
    dpt_st_close(st);
    CHECK_MSG(file_is(victim, "precious"), "dpt_st_writer_save wrote through a planted link");
    struct stat ls;
    CHECK(lstat(path, &ls) == 0 && S_ISREG(ls.st_mode));

    /* Every name taken: a clear failure, nothing written anywhere. */
    char other[1100];
    snprintf(other, sizeof other, "%s/full.csv", tmp);
    for (int i = 0; i < 100; i++)
        plant(NULL, other, i, victim);
    errno = 0;
    fd = dpt_tmpfile_create(other, got, sizeof got);
    CHECK_MSG(fd < 0 && errno == EEXIST, "with 100 names taken: fd %d, %s", fd, strerror(errno));
    if (fd >= 0)
        close(fd);
    CHECK_MSG(file_is(victim, "precious"), "a planted link was followed");
    dpt_st_writer_free(w);
}

/* ---- 2-4. dpt_fit stopped --------------------------------------------------- */

typedef struct stopper {
    volatile sig_atomic_t flag;
    long at;          /* set flag when this iteration is reported (0: never) */
    int n_progress, n_start;
    dpt_status start_status;
} stopper;

static void on_progress(const dpt_progress *p, void *arg)
{
    stopper *st = arg;
    st->n_progress++;
    if (st->at && p->iteration >= st->at)
        st->flag = SIGTERM;
}

static dpt_status on_start(void *arg)
{
    stopper *st = arg;
    st->n_start++;
    return st->start_status ? dpt_fail(st->start_status, "out: refused by on_start") : DPT_OK;
}

static dpt_status fit(const dpt_datastore *train, int epochs, const char *model, const char *ckpt,
                      const char *resume, stopper *st, dpt_fit_result *res)
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
    cfg.model_out = model;
    cfg.checkpoint_out = ckpt;
    cfg.checkpoint_every = 3;
    cfg.resume = resume;
    if (st) {
        cfg.stop = &st->flag;
        cfg.progress = on_progress;
        cfg.progress_arg = st;
        cfg.on_start = on_start;
        cfg.on_start_arg = st;
    }
    return dpt_fit(&cfg, res);
}

static void test_fit_stop(const char *tmp)
{
    char fixture[1024];
    tu_fixture("digits400", fixture, sizeof fixture);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(fixture, &fo, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    char ref[1100], refck[1100], model[1100], ck[1100];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmp);
    snprintf(refck, sizeof refck, "%s/refck.safetensors", tmp);
    snprintf(model, sizeof model, "%s/stopped-model.safetensors", tmp);
    snprintf(ck, sizeof ck, "%s/stopped-ckpt.safetensors", tmp);
    dpt_fit_result res;

    /* 2. stopped before the first iteration */
    stopper st0 = {SIGINT, 0, 0, 0, DPT_OK};
    s = fit(ds, 2, model, ck, NULL, &st0, &res);
    CHECK_MSG(s == DPT_ERR_INTERRUPTED, "preset stop: status %d, %s", (int)s, dpt_last_error());
    CHECK_MSG(strstr(dpt_last_error(), "interrupted at epoch 1, iteration 0"), "message: %s", dpt_last_error());
    CHECK(res.iterations == 0 && res.start_iteration == 0 && res.checkpoint_iteration == -1);
    CHECK(st0.n_start == 1 && st0.n_progress == 0);
    CHECK(!exists(model) && !exists(ck));

    /* 4. on_start refuses: nothing written, nothing reported */
    stopper st4 = {0, 0, 0, 0, DPT_ERR_IO};
    s = fit(ds, 2, model, ck, NULL, &st4, &res);
    CHECK_MSG(s == DPT_ERR_IO && strstr(dpt_last_error(), "out: refused by on_start"), "on_start: %d %s",
              (int)s, dpt_last_error());
    CHECK(st4.n_start == 1 && st4.n_progress == 0);
    CHECK(!exists(model) && !exists(ck));

    /* 3. stopped from the progress callback at iteration 5 */
    s = fit(ds, 10, ref, refck, NULL, NULL, &res);
    CHECK_MSG(s == DPT_OK, "uninterrupted: %s", dpt_last_error());
    long total = res.iterations;
    stopper st3 = {0, 5, 0, 0, DPT_OK};
    s = fit(ds, 10, model, ck, NULL, &st3, &res);
    CHECK_MSG(s == DPT_ERR_INTERRUPTED, "stop at 5: status %d, %s", (int)s, dpt_last_error());
    printf("stop requested at iteration 5: stopped at epoch %d, iteration %ld of %ld; last checkpoint "
           "at iteration %ld\n", res.epoch, res.iterations, total, res.checkpoint_iteration);
    CHECK(res.iterations >= 5 && res.iterations <= total);
    CHECK(!exists(model));
    if (res.iterations < total) {
        CHECK(res.checkpoint_iteration == res.iterations / 3 * 3);
        char want[96];
        snprintf(want, sizeof want, "interrupted at epoch %d, iteration %ld", res.epoch, res.iterations);
        CHECK_MSG(strstr(dpt_last_error(), want), "message: %s", dpt_last_error());
        s = fit(ds, 10, model, ck, ck, NULL, &res);
        CHECK_MSG(s == DPT_OK, "resume: %s", dpt_last_error());
        CHECK_MSG(tu_same_bytes(ref, model), "stopped + resumed model differs from the uninterrupted one");
    }
    dpt_datastore_free(ds);
}

int main(void)
{
    char tmp[] = "/tmp/dpt_fit_stop_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_tmpfile(tmp);
    test_fit_stop(tmp);
    tu_remove_tree(tmp);
    return tu_exit();
}
