/* dpt_fit on sequence data (library level):
 *
 *   1. a sequence classifier (LSTM, output=last) on a generated, separable
 *      folder of variable-length sequences learns it (test accuracy well
 *      above chance), with right and with left padding; the model's
 *      metadata names the task, the features and the classes.
 *   2. a character language model: N = 2 and 3 local workers against one
 *      worker with all B streams give the same learnables (bit for bit, or
 *      the tolerance printed); held-out bits per character are reported in
 *      the result and the end-of-epoch progress records, below the
 *      uniform log2(V) after training; model metadata (task, vocab, seq_len).
 *   3. a language model stopped mid-epoch (the stop flag set from the
 *      progress callback at an iteration, an event the test controls),
 *      then resumed from its checkpoint, ends with a model file
 *      byte-identical to the uninterrupted run's; the checkpoint holds the
 *      carried state as "carry" [B, carry_floats].
 *   4. dpt_evaluate_text reads more streams than the network's batch in
 *      groups: the same bits per character as a network that takes them
 *      all at once.
 *   5. a version-2 config (written before the sequence fields) still
 *      trains images: dpt_fit reads none of the version-3 fields. */
#include "core/safetensors.h"
#include "dptrain/train.h"
#include "testfs.h"
#include "testutil.h"

#include <cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];

/* A metadata value of a model file, read from the file itself (buf cap
 * bytes; "" when absent). */
static const char *file_meta(const char *path, const char *key, char *buf, size_t cap)
{
    dpt_st *st = NULL;
    buf[0] = '\0';
    if (dpt_st_open(path, &st) == DPT_OK) {
        const char *v = dpt_st_meta(st, key);
        snprintf(buf, cap, "%s", v ? v : "");
        dpt_st_close(st);
    }
    return buf;
}

/* Largest |a - b| over the learnables of two model files (-1: unreadable). */
static double model_diff(const char *a, const char *b)
{
    dpt_net *na = NULL, *nb = NULL;
    double worst = -1;
    if (dpt_net_load(a, 1, &na) == DPT_OK && dpt_net_load(b, 1, &nb) == DPT_OK &&
        dpt_net_n_params(na) == dpt_net_n_params(nb)) {
        worst = 0;
        const float *pa = dpt_net_params(na), *pb = dpt_net_params(nb);
        for (size_t i = 0; i < dpt_net_n_params(na); i++) {
            double d = fabs((double)pa[i] - (double)pb[i]);
            if (!(d <= worst))
                worst = d;
        }
    }
    dpt_net_free(na);
    dpt_net_free(nb);
    return worst;
}

/* ---- 1. sequence classifier --------------------------------------------- */

/* Class "down": the first feature falls over the sequence; "up": it rises.
 * The second feature is noise. Lengths 2..9. */
static void write_seq_folder(const char *root, int per_class, unsigned seed)
{
    char p[512];
    mkdir(root, 0777);
    static const char *const cls[2] = {"down", "up"};
    dpt_rng r;
    dpt_rng_seed(&r, seed, 7);
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/%s", root, cls[c]);
        mkdir(p, 0777);
        for (int i = 0; i < per_class; i++) {
            snprintf(p, sizeof p, "%s/%s/s%03d.csv", root, cls[c], i);
            FILE *f = fopen(p, "w");
            int len = 2 + (int)dpt_rng_below(&r, 8);
            float v = dpt_rng_uniform(&r);
            for (int t = 0; t < len; t++) {
                float step = 0.1f + 0.2f * dpt_rng_uniform(&r);
                v += c ? step : -step;
                fprintf(f, "%.4f,%.4f\n", v, dpt_rng_uniform(&r) - 0.5f);
            }
            fclose(f);
        }
    }
}

static const char cls_spec[] = "sequenceinput in size=2\n"
                               "lstm lstm1 units=8 output=last\n"
                               "fc fc outputs=classes\n"
                               "softmax sm\n";

static void test_classifier(void)
{
    char trd[300], ted[300], model[300];
    snprintf(trd, sizeof trd, "%s/seqtrain", tmp);
    snprintf(ted, sizeof ted, "%s/seqtest", tmp);
    snprintf(model, sizeof model, "%s/seqmodel.safetensors", tmp);
    write_seq_folder(trd, 40, 1);
    write_seq_folder(ted, 20, 2);
    dpt_seqstore *tr = NULL, *te = NULL;
    dpt_status s = dpt_seqstore_open(trd, NULL, &tr);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    s = dpt_seqstore_open(ted, NULL, &te);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (!tr || !te)
        return;
    for (int pad_left = 0; pad_left < 2; pad_left++) {
        dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
        cfg.spec = cls_spec;
        cfg.spec_source = "cls";
        cfg.seq_train = tr, cfg.seq_test = te;
        cfg.pad_left = pad_left;
        cfg.epochs = 12, cfg.batch = 16, cfg.seed = 3;
        cfg.optimizer = DPT_OPTIM_ADAM, cfg.lr = 0.03f;
        cfg.spmd.backend = DPT_COMM_LOCAL, cfg.spmd.n_workers = 2;
        cfg.model_out = model;
        dpt_fit_result res;
        s = dpt_fit(&cfg, &res);
        CHECK_MSG(s == DPT_OK, "classifier fit: %s", dpt_last_error());
        printf("sequence classifier (%s padding): test accuracy %.3f after %ld iterations\n",
               pad_left ? "left" : "right", res.test_accuracy, res.iterations);
        CHECK_MSG(res.test_accuracy >= 0.85, "accuracy %.3f (chance 0.5)", res.test_accuracy);
        CHECK(isnan(res.test_bpc));
        CHECK(res.iterations == 12 * 5); /* 80 sequences, minibatch 16 */
        dpt_net *net = NULL;
        s = dpt_net_load(model, 8, &net);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (net) {
            char task[64], f[64], c[256];
            file_meta(model, "task", task, sizeof task);
            file_meta(model, "features", f, sizeof f);
            file_meta(model, "classes", c, sizeof c);
            CHECK_MSG(!strcmp(task, "sequence_classification"), "task '%s'", task);
            CHECK(!strcmp(f, "2"));
            CHECK_MSG(!strcmp(c, "[\"down\",\"up\"]"), "classes %s", c);
            /* The model file classifies as dpt_fit measured. */
            double acc = 0;
            s = dpt_evaluate_seq(net, te, pad_left, &acc, NULL);
            CHECK_MSG(s == DPT_OK && fabs(acc - res.test_accuracy) < 1e-12, "reloaded: %.3f (%s)",
                      acc, dpt_last_error());
            dpt_net_free(net);
        }
    }
    /* A network for images, or an output per time step, is refused naming
     * the spec. */
    dpt_fit_config bad = DPT_FIT_CONFIG_INIT;
    bad.spec = "sequenceinput in size=2\nlstm l units=4\nfc fc outputs=classes\nsoftmax sm\n";
    bad.spec_source = "perstep.txt";
    bad.seq_train = tr, bad.epochs = 1, bad.batch = 4;
    bad.spmd.backend = DPT_COMM_LOCAL, bad.spmd.n_workers = 1;
    dpt_fit_result res;
    s = dpt_fit(&bad, &res);
    CHECK_MSG(s != DPT_OK && strstr(dpt_last_error(), "perstep.txt") &&
                  strstr(dpt_last_error(), "output=last"), "per-step classifier: %s",
              dpt_last_error());
    dpt_seqstore_free(tr);
    dpt_seqstore_free(te);
}

/* ---- 2, 3. language model --------------------------------------------------- */

static const char lm_spec[] = "sequenceinput in size=vocab\n"
                              "lstm lstm1 units=16\n"
                              "fc fc outputs=vocab\n"
                              "softmax sm\n";
#define LM_B 6
#define LM_T 8

typedef struct watch {
    volatile sig_atomic_t flag;
    long stop_at;             /* set flag when this iteration is reported (0: never) */
    int n_epoch_records, bpc_ok;
} watch;

static void on_progress(const dpt_progress *p, void *arg)
{
    watch *w = arg;
    if (w->stop_at && p->iteration >= w->stop_at)
        w->flag = SIGTERM;
    if (p->end_of_epoch) {
        w->n_epoch_records++;
        w->bpc_ok += isfinite(p->test_bpc) && p->test_bpc > 0;
    }
}

static dpt_status fit_lm(const dpt_text *tr, const dpt_text *te, int workers, int epochs,
                         const char *model, const char *ckpt, const char *resume, watch *w,
                         dpt_fit_result *res)
{
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = lm_spec;
    cfg.spec_source = "lm";
    cfg.text_train = tr, cfg.text_test = te;
    cfg.seq_len = LM_T;
    cfg.epochs = epochs, cfg.batch = LM_B, cfg.seed = 5;
    cfg.optimizer = DPT_OPTIM_ADAM, cfg.lr = 0.01f;
    cfg.spmd.backend = DPT_COMM_LOCAL, cfg.spmd.n_workers = workers;
    cfg.model_out = model;
    cfg.checkpoint_out = ckpt;
    cfg.checkpoint_every = ckpt ? 1 : 0;
    cfg.resume = resume;
    if (w) {
        cfg.stop = &w->flag;
        cfg.progress = on_progress;
        cfg.progress_arg = w;
    }
    return dpt_fit(&cfg, res);
}

static void write_text(const char *path)
{
    /* A little language: words from a small set, in a fixed pseudo-random
     * order, so the next character is often predictable. */
    static const char *const words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "dog ",
                                        "ran\n"};
    FILE *f = fopen(path, "w");
    dpt_rng r;
    dpt_rng_seed(&r, 11, 0);
    for (int i = 0; i < 900; i++)
        fputs(words[dpt_rng_below(&r, 8)], f);
    fclose(f);
}

static void test_language_model(void)
{
    char txt[300], m1[300], m2[300], m3[300], ref[300], refck[300], stopped[300], ck[300];
    snprintf(txt, sizeof txt, "%s/text.txt", tmp);
    snprintf(m1, sizeof m1, "%s/lm1.safetensors", tmp);
    snprintf(m2, sizeof m2, "%s/lm2.safetensors", tmp);
    snprintf(m3, sizeof m3, "%s/lm3.safetensors", tmp);
    snprintf(ref, sizeof ref, "%s/lmref.safetensors", tmp);
    snprintf(refck, sizeof refck, "%s/lmrefck.safetensors", tmp);
    snprintf(stopped, sizeof stopped, "%s/lmstopped.safetensors", tmp);
    snprintf(ck, sizeof ck, "%s/lmck.safetensors", tmp);
    write_text(txt);
    dpt_text_options o = DPT_TEXT_OPTIONS_INIT;
    o.heldout = 0.1;
    dpt_text *tr = NULL, *te = NULL;
    dpt_status s = dpt_text_open(txt, &o, &tr, &te);
    CHECK_MSG(s == DPT_OK && te, "%s", dpt_last_error());
    if (!tr || !te)
        return;
    int v = dpt_text_n_vocab(tr);
    long per_epoch = (long)dpt_text_n_chunks(tr, LM_B, LM_T);

    /* 2. one worker with all streams against 2 and 3 workers */
    dpt_fit_result r1, r2, r3;
    watch w1 = {0};
    s = fit_lm(tr, te, 1, 2, m1, NULL, NULL, &w1, &r1);
    CHECK_MSG(s == DPT_OK, "1 worker: %s", dpt_last_error());
    s = fit_lm(tr, te, 2, 2, m2, NULL, NULL, NULL, &r2);
    CHECK_MSG(s == DPT_OK, "2 workers: %s", dpt_last_error());
    s = fit_lm(tr, te, 3, 2, m3, NULL, NULL, NULL, &r3);
    CHECK_MSG(s == DPT_OK, "3 workers: %s", dpt_last_error());
    CHECK(r1.iterations == 2 * per_epoch && r2.iterations == r1.iterations &&
          r3.iterations == r1.iterations);
    double d2 = model_diff(m1, m2), d3 = model_diff(m1, m3);
    printf("language model, %ld iterations of %d streams x %d steps: 1 vs 2 workers max |diff| "
           "%.3g%s, 1 vs 3 workers %.3g%s; held-out bpc %.4f (uniform %.4f)\n", r1.iterations,
           LM_B, LM_T, d2, tu_same_bytes(m1, m2) ? " (model files identical)" : "", d3,
           tu_same_bytes(m1, m3) ? " (model files identical)" : "", r1.test_bpc, log2(v));
    CHECK_MSG(d2 >= 0 && d2 <= 1e-5, "1 vs 2 workers: max |diff| %g", d2);
    CHECK_MSG(d3 >= 0 && d3 <= 1e-5, "1 vs 3 workers: max |diff| %g", d3);
    CHECK_MSG(fabs(r1.test_bpc - r2.test_bpc) < 1e-3 && fabs(r1.test_bpc - r3.test_bpc) < 1e-3,
              "bpc %g %g %g", r1.test_bpc, r2.test_bpc, r3.test_bpc);
    CHECK_MSG(isfinite(r1.test_bpc) && r1.test_bpc < 0.9 * log2(v), "held-out bpc %g, uniform %g",
              r1.test_bpc, log2(v));
    CHECK_MSG(w1.n_epoch_records == 2 && w1.bpc_ok == 2, "end-of-epoch records %d, with bpc %d",
              w1.n_epoch_records, w1.bpc_ok);
    dpt_net *net = NULL;
    s = dpt_net_load(m1, 1, &net);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (net) {
        char task[64], voc[4096], sl[32];
        file_meta(m1, "task", task, sizeof task);
        file_meta(m1, "vocab", voc, sizeof voc);
        file_meta(m1, "seq_len", sl, sizeof sl);
        CHECK_MSG(!strcmp(task, "language_model"), "task '%s'", task);
        CHECK(atoi(sl) == LM_T);
        cJSON *arr = cJSON_Parse(voc);
        int same = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == v;
        for (int i = 0; same && i < v; i++)
            same = cJSON_GetArrayItem(arr, i)->valuedouble == (double)dpt_text_vocab(tr)[i];
        CHECK_MSG(same, "vocab %s", voc);
        cJSON_Delete(arr);

        /* 4. more streams than the batch: read in groups */
        double b_small = 0, b_all = 0;
        dpt_net *wide = NULL;
        s = dpt_net_load(m1, 5, &wide);
        CHECK(s == DPT_OK);
        s = dpt_evaluate_text(net, te, 5, LM_T, &b_small);
        CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
        if (wide)
            s = dpt_evaluate_text(wide, te, 5, LM_T, &b_all);
        CHECK_MSG(s == DPT_OK && fabs(b_small - b_all) < 1e-5 * b_all, "grouped %g, at once %g",
                  b_small, b_all);
        dpt_net_free(wide);
        dpt_net_free(net);
    }

    /* 3. stopped mid-epoch, resumed: the same model file bytes */
    s = fit_lm(tr, te, 2, 3, ref, refck, NULL, NULL, &r1);
    CHECK_MSG(s == DPT_OK, "uninterrupted: %s", dpt_last_error());
    long total = r1.iterations;
    dpt_st *st = NULL;
    s = dpt_st_open(refck, &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (st) {
        const dpt_st_tensor *c = dpt_st_get(st, "carry");
        CHECK_MSG(c && c->ndim == 2 && c->shape[0] == LM_B && c->shape[1] == 2 * 16,
                  "carry tensor %s", c ? "of another shape" : "missing");
        dpt_st_close(st);
    }
    /* Twice: resumed on the same 2 workers (byte-identical), and on 3
     * (each takes its own streams' state from the gathered tensor; the
     * sums of gradients then add in another order). */
    for (int resume_workers = 2; resume_workers <= 3; resume_workers++) {
        watch ws = {0, per_epoch + 3, 0, 0};
        s = fit_lm(tr, te, 2, 3, stopped, ck, NULL, &ws, &r2);
        CHECK_MSG(s == DPT_ERR_INTERRUPTED, "stop: status %d, %s", (int)s, dpt_last_error());
        printf("stop requested at iteration %ld: stopped at epoch %d, iteration %ld of %ld "
               "(%ld per epoch)\n", ws.stop_at, r2.epoch, r2.iterations, total, per_epoch);
        CHECK(r2.checkpoint_iteration == r2.iterations);
        if (s != DPT_ERR_INTERRUPTED || r2.iterations >= total)
            continue;
        CHECK_MSG(r2.iterations % per_epoch != 0, "stopped at an epoch's end (%ld)", r2.iterations);
        s = fit_lm(tr, te, resume_workers, 3, stopped, ck, ck, NULL, &r3);
        CHECK_MSG(s == DPT_OK, "resume: %s", dpt_last_error());
        double d = model_diff(ref, stopped);
        printf("stopped at %ld, resumed on %d workers: %s (max |diff| %g)\n", r2.iterations,
               resume_workers, tu_same_bytes(ref, stopped) ? "the same model file" : "differs", d);
        if (resume_workers == 2)
            CHECK_MSG(tu_same_bytes(ref, stopped), "stopped + resumed: the model differs from the "
                      "uninterrupted one (max |diff| %g)", d);
        else
            CHECK_MSG(d >= 0 && d <= 1e-5, "resumed on 3 workers: max |diff| %g", d);
    }
    dpt_text_free(tr);
    dpt_text_free(te);
}

/* ---- 5. older configs ------------------------------------------------------ */

static void test_config_v2(void)
{
    char fixture[1024];
    tu_fixture("digits400", fixture, sizeof fixture);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(fixture, &fo, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (!ds)
        return;
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.version = 2;
    cfg.spec = "input in size=28x28x1\nfc fc outputs=classes\nsoftmax sm\n";
    cfg.train = ds;
    cfg.epochs = 1, cfg.batch = 100;
    cfg.spmd.backend = DPT_COMM_LOCAL, cfg.spmd.n_workers = 2;
    /* What a caller of version 2 leaves past its struct: never read. */
    cfg.seq_train = (const dpt_seqstore *)&cfg;
    cfg.text_train = (const dpt_text *)&cfg;
    cfg.seq_len = -5;
    dpt_fit_result res;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_OK && res.iterations == 4 && isnan(res.test_bpc), "version-2 config: %s",
              dpt_last_error());
    /* Version 3 with two kinds of data is refused. */
    cfg.version = 3;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "give one of"), "two kinds: %s",
              dpt_last_error());
    dpt_datastore_free(ds);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/dpt_fit_seq_%ld", (long)getpid());
    if (mkdir(tmp, 0700) != 0) {
        perror(tmp);
        return 1;
    }
    test_classifier();
    test_language_model();
    test_config_v2();
    tu_remove_tree(tmp);
    return tu_exit();
}
