/* Optimizers against PyTorch and against each other:
 *
 *   1. Adam and AdamW (tests/fixtures/optim_adam.safetensors, made by
 *      tests/fixtures/make_optim_fixtures.py): six steps per case with
 *      gradients of mixed scale; the update of every step, and the moments
 *      after the last, within float32 rounding; through dpt_adam and through
 *      the dpt_optim interface.
 *   2. The interface: dpt_optim of each kind gives the bits of dpt_sgdm_step
 *      and dpt_adam_step, names its state buffers, counts steps, checks its
 *      options.
 *   3. Learning-rate schedules, gradient clipping and whole runs with both
 *      against torch's schedulers, clip_grad_norm_ and optimizers
 *      (tests/fixtures/optim_sched.safetensors, made by
 *      make_optim_sched_fixtures.py); schedule texts that do not parse name
 *      the bad part.
 *   4. Checkpoints: Adam's state and step count round trip; a checkpoint of
 *      another kind is refused naming both; one written before the interface
 *      (tests/fixtures/ckpt_v2_sgdm.safetensors, by dptrain 60877bd) loads
 *      as SGDM's.
 *   5. dpt_fit with Adam, a cosine schedule with warm-up and clipping,
 *      stopped mid-epoch and resumed from its checkpoint: the model file is
 *      byte-identical to the uninterrupted run's; resuming with SGDM is
 *      refused naming both optimizers. */
#include "core/safetensors.h"
#include "dptrain/optim.h"
#include "dptrain/train.h"
#include "testfs.h"
#include "testutil.h"

#include <signal.h>
#include <unistd.h>

enum { MAX_N = 64 };

static double meta_num(const dpt_st *st, const char *cs, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s/%s", cs, key);
    const char *v = dpt_st_meta(st, k);
    CHECK_MSG(v != NULL, "metadata %s missing", k);
    return v ? atof(v) : 0.0;
}

static void read_t(const dpt_st *st, const char *cs, const char *name, float *dst, size_t n)
{
    char k[128];
    snprintf(k, sizeof k, "%s/%s", cs, name);
    dpt_status s = dpt_st_read_f32(st, k, dst, n);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
}

static void run_case(const dpt_st *st, const char *cs, int via_optim)
{
    printf("%s%s\n", cs, via_optim ? " (dpt_optim)" : "");
    const dpt_st_tensor *t0 = NULL;
    char k[128];
    snprintf(k, sizeof k, "%s/p0", cs);
    t0 = dpt_st_get(st, k);
    CHECK_MSG(t0 && t0->ndim == 1 && t0->shape[0] <= MAX_N, "%s missing or too large", k);
    if (!t0 || t0->ndim != 1 || t0->shape[0] > MAX_N)
        return;
    size_t n = (size_t)t0->shape[0];
    float p[MAX_N], prev[MAX_N], g[MAX_N], ref[MAX_N], d_got[MAX_N], d_ref[MAX_N];
    read_t(st, cs, "p0", p, n);
    dpt_adam *o = NULL;
    dpt_optim *opt = NULL;
    dpt_status s;
    if (via_optim) {
        dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
        oo.lr = (float)meta_num(st, cs, "lr");
        oo.beta1 = meta_num(st, cs, "beta1"), oo.beta2 = meta_num(st, cs, "beta2");
        oo.eps = (float)meta_num(st, cs, "eps");
        oo.weight_decay = (float)meta_num(st, cs, "weight_decay");
        oo.decoupled = (int)meta_num(st, cs, "decoupled");
        s = dpt_optim_new(DPT_OPTIM_ADAM, n, &oo, &opt);
        o = s == DPT_OK ? dpt_optim_adam(opt) : NULL;
    } else {
        s = dpt_adam_new(n, (float)meta_num(st, cs, "lr"), meta_num(st, cs, "beta1"),
                         meta_num(st, cs, "beta2"), (float)meta_num(st, cs, "eps"),
                         (float)meta_num(st, cs, "weight_decay"), &o);
    }
    CHECK_MSG(s == DPT_OK && o, "%s", dpt_last_error());
    if (s != DPT_OK || !o)
        return;
    if (!via_optim)
        o->decoupled = (int)meta_num(st, cs, "decoupled");
    int steps = (int)meta_num(st, cs, "steps");
    for (int t = 1; t <= steps; t++) {
        char gname[16], pname[16], label[64];
        snprintf(gname, sizeof gname, "g%d", t);
        snprintf(pname, sizeof pname, "p%d", t);
        read_t(st, cs, gname, g, n);
        read_t(st, cs, pname, ref, n);
        memcpy(prev, p, n * sizeof *p);
        if (via_optim)
            dpt_optim_step(opt, p, g);
        else
            dpt_adam_step(o, p, g);
        CHECK(o->step == t && (!opt || dpt_optim_step_count(opt) == t));
        /* Compare the update itself: the parameters move by about lr per
         * step, which a comparison of the parameters would hide. */
        for (size_t i = 0; i < n; i++) {
            d_got[i] = p[i] - prev[i];
            d_ref[i] = ref[i] - prev[i];
        }
        snprintf(label, sizeof label, "%s step %d update", cs, t);
        tu_check_close(label, d_got, d_ref, n, 1e-4);
        memcpy(p, ref, n * sizeof *p); /* next step from torch's parameters */
    }
    read_t(st, cs, "m", ref, n);
    snprintf(k, sizeof k, "%s m", cs);
    tu_check_close(k, o->m, ref, n, 1e-5);
    read_t(st, cs, "v", ref, n);
    snprintf(k, sizeof k, "%s v", cs);
    tu_check_close(k, o->v, ref, n, 1e-5);
    if (opt) {
        CHECK(dpt_optim_buffer(opt, 0) == o->m && dpt_optim_buffer(opt, 1) == o->v);
        dpt_optim_free(opt);
    } else {
        dpt_adam_free(o);
    }
}

/* Defaults and edge cases that need no reference. */
static void test_basics(void)
{
    dpt_adam *o = NULL;
    CHECK(dpt_adam_new(0, 0.001f, 0.9f, 0.999f, 1e-8f, 0.0f, &o) == DPT_OK && o);
    dpt_adam_step(o, NULL, NULL); /* zero parameters: nothing to touch */
    CHECK(o->step == 1 && o->m == NULL && o->v == NULL);
    dpt_adam_free(o);
    dpt_adam_free(NULL);
    /* First step of Adam moves each parameter by lr·sign(g) (for |g| >> eps). */
    float w[3] = {1.0f, -2.0f, 0.5f}, g[3] = {3.0f, -0.25f, 0.0f};
    CHECK(dpt_adam_new(3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, &o) == DPT_OK);
    dpt_adam_step(o, w, g);
    CHECK(fabsf(w[0] - 0.9f) < 1e-6f && fabsf(w[1] + 1.9f) < 1e-6f && w[2] == 0.5f);
    dpt_adam_free(o);
}

/* ---- 2. the interface against the per-kind optimizers ------------------------ */

static void fill(float *x, size_t n, unsigned seed, float scale)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (2.0f * dpt_rng_uniform(&r) - 1.0f);
}

static void test_interface(void)
{
    printf("interface\n");
    enum { N = 53 };
    float w_ref[N], w[N], g[N], g2[N];
    /* SGDM: the bits of dpt_sgdm_step, with the rate changed between steps. */
    dpt_sgdm *ref = NULL;
    dpt_optim *o = NULL;
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.lr = 0.05f, oo.momentum = 0.8f, oo.weight_decay = 0.01f;
    CHECK(dpt_sgdm_new(N, 0.05f, 0.8f, 0.01f, &ref) == DPT_OK);
    CHECK(dpt_optim_new(DPT_OPTIM_SGDM, N, &oo, &o) == DPT_OK);
    if (!ref || !o)
        return;
    fill(w_ref, N, 1, 1.0f);
    memcpy(w, w_ref, sizeof w);
    for (int t = 1; t <= 5; t++) {
        fill(g, N, 10 + t, 0.5f);
        memcpy(g2, g, sizeof g);
        ref->lr = 0.05f / (float)t;
        dpt_optim_set_lr(o, 0.05f / (float)t);
        dpt_sgdm_step(ref, w_ref, g);
        dpt_optim_step(o, w, g2);
    }
    CHECK_MSG(memcmp(w, w_ref, sizeof w) == 0, "sgdm through dpt_optim differs from dpt_sgdm_step");
    CHECK(memcmp(dpt_optim_buffer(o, 0), ref->velocity, sizeof w) == 0);
    CHECK(dpt_optim_kind_of(o) == DPT_OPTIM_SGDM && dpt_optim_n(o) == N);
    CHECK(dpt_optim_n_buffers(o) == 1 && !strcmp(dpt_optim_buffer_name(o, 0), "Velocity"));
    CHECK(dpt_optim_buffer_name(o, 1) == NULL && dpt_optim_buffer(o, 1) == NULL);
    CHECK(dpt_optim_step_count(o) == 5 && dpt_optim_get_lr(o) == 0.01f);
    CHECK(dpt_optim_sgdm(o) && !dpt_optim_adam(o) && isnan(dpt_optim_last_norm(o)));
    dpt_sgdm_free(ref);
    dpt_optim_free(o);

    /* Adam and AdamW: the bits of dpt_adam_step. */
    for (int dec = 0; dec < 2; dec++) {
        dpt_adam *a = NULL;
        oo = (dpt_optim_opts)DPT_OPTIM_OPTS_INIT;
        oo.weight_decay = 0.02f, oo.decoupled = dec, oo.beta2 = 0.99;
        CHECK(dpt_adam_new(N, 0.001f, 0.9, 0.99, 1e-8f, 0.02f, &a) == DPT_OK);
        CHECK(dpt_optim_new(DPT_OPTIM_ADAM, N, &oo, &o) == DPT_OK);
        if (!a || !o)
            return;
        a->decoupled = dec;
        CHECK(dpt_optim_get_lr(o) == 0.001f); /* lr 0: Adam's default */
        fill(w_ref, N, 2, 1.0f);
        memcpy(w, w_ref, sizeof w);
        for (int t = 1; t <= 4; t++) {
            fill(g, N, 20 + t, 2.0f);
            memcpy(g2, g, sizeof g);
            dpt_adam_step(a, w_ref, g);
            dpt_optim_step(o, w, g2);
        }
        CHECK_MSG(memcmp(w, w_ref, sizeof w) == 0, "adam (decoupled %d) through dpt_optim differs", dec);
        CHECK(memcmp(dpt_optim_buffer(o, 0), a->m, sizeof w) == 0);
        CHECK(memcmp(dpt_optim_buffer(o, 1), a->v, sizeof w) == 0);
        CHECK(dpt_optim_n_buffers(o) == 2 && !strcmp(dpt_optim_buffer_name(o, 0), "AverageGrad") &&
              !strcmp(dpt_optim_buffer_name(o, 1), "AverageSqGrad"));
        CHECK(dpt_optim_step_count(o) == 4 && a->step == 4);
        dpt_optim_set_step_count(o, 9);
        CHECK(dpt_optim_adam(o)->step == 9);
        dpt_adam_free(a);
        dpt_optim_free(o);
    }
    dpt_optim_free(NULL);

    /* Names, defaults, bad options. */
    dpt_optim_kind k;
    CHECK(dpt_optim_kind_parse("adam", &k) == DPT_OK && k == DPT_OPTIM_ADAM);
    CHECK(dpt_optim_kind_parse("sgdm", &k) == DPT_OK && k == DPT_OPTIM_SGDM);
    CHECK(dpt_optim_kind_parse("rmsprop", &k) == DPT_ERR_ARG && strstr(dpt_last_error(), "'rmsprop'"));
    CHECK(!strcmp(dpt_optim_kind_name(DPT_OPTIM_ADAM), "adam") && !strcmp(dpt_optim_kind_name(7), "?"));
    CHECK(dpt_optim_default_lr(DPT_OPTIM_SGDM) == 0.01f && dpt_optim_default_lr(DPT_OPTIM_ADAM) == 0.001f);
    oo = (dpt_optim_opts)DPT_OPTIM_OPTS_INIT;
    oo.clip_norm = -1;
    CHECK(dpt_optim_new(DPT_OPTIM_SGDM, 3, &oo, &o) == DPT_ERR_ARG && !o &&
          strstr(dpt_last_error(), "clip norm -1"));
    oo.clip_norm = 0, oo.beta1 = 1.0;
    CHECK(dpt_optim_new(DPT_OPTIM_ADAM, 3, &oo, &o) == DPT_ERR_ARG && !o);
    CHECK(dpt_optim_new((dpt_optim_kind)5, 3, NULL, &o) == DPT_ERR_ARG && !o);
    oo = (dpt_optim_opts)DPT_OPTIM_OPTS_INIT;
    oo.version = 99;
    CHECK(dpt_optim_new(DPT_OPTIM_SGDM, 3, &oo, &o) == DPT_ERR_ARG && strstr(dpt_last_error(), "version 99"));
}

/* ---- 3. schedules, clipping, runs against torch ------------------------------- */

static void test_schedule_parse(void)
{
    printf("schedule texts\n");
    dpt_lr_schedule s;
    CHECK(dpt_lr_schedule_parse(NULL, &s) == DPT_OK && s.kind == DPT_LR_CONSTANT && s.warmup == 0);
    CHECK(dpt_lr_schedule_parse("piecewise", &s) == DPT_OK && s.kind == DPT_LR_PIECEWISE &&
          s.every == 10 && s.drop == 0.1);
    CHECK(dpt_lr_schedule_parse("piecewise:every=3,drop=0.5,warmup=1", &s) == DPT_OK &&
          s.every == 3 && s.drop == 0.5 && s.warmup == 1);
    CHECK(dpt_lr_schedule_parse("cosine,warmup=2", &s) == DPT_OK && s.kind == DPT_LR_COSINE &&
          s.min_lr == 0 && s.warmup == 2);
    CHECK(dpt_lr_schedule_parse("warmup=0.5", &s) == DPT_OK && s.kind == DPT_LR_CONSTANT &&
          s.warmup == 0.5);
    /* The canonical text parses back to the same schedule. */
    dpt_lr_schedule t;
    char buf[160];
    CHECK(dpt_lr_schedule_parse("cosine:min=1e-5,warmup=0.3", &s) == DPT_OK);
    dpt_lr_schedule_format(&s, buf, sizeof buf);
    CHECK_MSG(dpt_lr_schedule_parse(buf, &t) == DPT_OK && !memcmp(&s, &t, sizeof s), "round trip of '%s'", buf);
    static const struct { const char *text, *needle; } bad[] = {
        {"linear", "unknown schedule 'linear'"},
        {"piecewise:every=0", "'every=0'"},
        {"piecewise:every=2.5", "'every=2.5'"},
        {"piecewise:drop=1.5", "'drop=1.5'"},
        {"piecewise:drop=0", "'drop=0'"},
        {"cosine:min=-1", "'min=-1'"},
        {"cosine:every=3", "unknown key 'every' for cosine"},
        {"piecewise,min=0.1", "unknown key 'min' for piecewise"},
        {"cosine,warmup=x", "'warmup=x'"},
        {"cosine,warmup", "'warmup' is not KEY=VALUE"},
        {"cosine,,warmup=1", "an empty item"},
        {"cosine:", "an empty item"},
        {"cosine,warmup=1,warmup=2", "'warmup' given twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s.kind = DPT_LR_COSINE, s.every = 77;
        dpt_status st = dpt_lr_schedule_parse(bad[i].text, &s);
        CHECK_MSG(st == DPT_ERR_ARG && strstr(dpt_last_error(), bad[i].needle) &&
                      strstr(dpt_last_error(), bad[i].text) && s.every == 77,
                  "'%s': status %d, message '%s' (want '%s')", bad[i].text, (int)st,
                  dpt_last_error(), bad[i].needle);
    }
}

static const double *f64(const dpt_st *st, const char *name, size_t n)
{
    const dpt_st_tensor *t = dpt_st_get(st, name);
    int ok = t && !strcmp(t->dtype, "F64") && t->ndim == 1 && (size_t)t->shape[0] == n;
    CHECK_MSG(ok, "%s missing or not F64 [%zu]", name, n);
    return ok ? (const double *)t->data : NULL;
}

/* Each comma-separated name of metadata `list`, in order. */
static int names(const dpt_st *st, const char *list, char out[][32], int max)
{
    const char *v = dpt_st_meta(st, list);
    CHECK_MSG(v != NULL, "metadata %s missing", list);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v ? v : "");
    int n = 0;
    for (char *save = NULL, *c = strtok_r(buf, ",", &save); c && n < max; c = strtok_r(NULL, ",", &save))
        snprintf(out[n++], 32, "%s", c);
    return n;
}

static const char *meta_str(const dpt_st *st, const char *cs, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s/%s", cs, key);
    const char *v = dpt_st_meta(st, k);
    CHECK_MSG(v != NULL, "metadata %s missing", k);
    return v ? v : "";
}

static void sched_case(const dpt_st *st, const char *cs)
{
    dpt_lr_schedule s;
    const char *spec = meta_str(st, cs, "spec");
    dpt_status rc = dpt_lr_schedule_parse(spec, &s);
    CHECK_MSG(rc == DPT_OK, "%s", dpt_last_error());
    double base = meta_num(st, cs, "base");
    int epochs = (int)meta_num(st, cs, "epochs");
    long per = (long)meta_num(st, cs, "per_epoch");
    char k[128];
    snprintf(k, sizeof k, "%s/lr", cs);
    const double *ref = f64(st, k, (size_t)epochs * per);
    if (rc != DPT_OK || !ref)
        return;
    double worst = 0;
    for (int e = 1; e <= epochs; e++)
        for (long i = 0; i < per; i++) {
            double want = ref[(e - 1) * per + i], got = dpt_lr_at(&s, base, e, i, per, epochs);
            double err = fabs(got - want) / base;
            if (err > worst)
                worst = err;
            CHECK_MSG(err < 1e-12, "%s: epoch %d iteration %ld: %.17g, torch %.17g", spec, e, i, got, want);
        }
    printf("  %-40s %d x %ld rates, max err %.1e of the base rate\n", spec, epochs, per, worst);
}

static void clip_case(const dpt_st *st, const char *cs)
{
    enum { N = 24 };
    float g[N], ref[N];
    read_t(st, cs, "g", g, N);
    read_t(st, cs, "clipped", ref, N);
    double norm = dpt_clip_grad_norm(g, N, meta_num(st, cs, "max_norm"));
    double want = meta_num(st, cs, "norm");
    CHECK_MSG(fabs(norm - want) <= 1e-6 * want, "%s: norm %.9g, torch %.9g", cs, norm, want);
    char label[64];
    snprintf(label, sizeof label, "%s clipped gradient", cs);
    tu_check_close(label, g, ref, N, 1e-6);
}

/* A run of torch's optimizer with clip_grad_norm_ before each step and the
 * rate of its schedule, through dpt_optim with clip_norm and dpt_lr_at. */
static void run_fixture(const dpt_st *st, const char *cs)
{
    enum { N = 29 };
    const char *kind = meta_str(st, cs, "kind");
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.lr = (float)meta_num(st, cs, "lr");
    oo.weight_decay = (float)meta_num(st, cs, "weight_decay");
    oo.clip_norm = meta_num(st, cs, "clip");
    dpt_optim_kind k = DPT_OPTIM_SGDM;
    if (strcmp(kind, "sgdm") != 0) {
        k = DPT_OPTIM_ADAM;
        oo.beta1 = meta_num(st, cs, "beta1"), oo.beta2 = meta_num(st, cs, "beta2");
        oo.eps = (float)meta_num(st, cs, "eps");
        oo.decoupled = !strcmp(kind, "adamw");
    } else {
        oo.momentum = (float)meta_num(st, cs, "momentum");
    }
    dpt_lr_schedule sched;
    CHECK(dpt_lr_schedule_parse(meta_str(st, cs, "schedule"), &sched) == DPT_OK);
    int epochs = (int)meta_num(st, cs, "epochs");
    long per = (long)meta_num(st, cs, "per_epoch");
    dpt_optim *o = NULL;
    CHECK_MSG(dpt_optim_new(k, N, &oo, &o) == DPT_OK, "%s", dpt_last_error());
    if (!o)
        return;
    float p[N], prev[N], g[N], ref[N], d_got[N], d_ref[N];
    read_t(st, cs, "p0", p, N);
    double worst = 0;
    for (int t = 1; t <= epochs * per; t++) {
        char name[16];
        snprintf(name, sizeof name, "g%d", t);
        read_t(st, cs, name, g, N);
        snprintf(name, sizeof name, "p%d", t);
        read_t(st, cs, name, ref, N);
        int e = (t - 1) / (int)per + 1;
        dpt_optim_set_lr(o, (float)dpt_lr_at(&sched, oo.lr, e, (t - 1) % per, per, epochs));
        memcpy(prev, p, sizeof p);
        dpt_optim_step(o, p, g);
        for (int i = 0; i < N; i++)
            d_got[i] = p[i] - prev[i], d_ref[i] = ref[i] - prev[i];
        double err = tu_rel_err(d_got, d_ref, N, NULL);
        if (err > worst)
            worst = err;
        CHECK_MSG(err < 1e-4, "%s step %d: update rel err %.3e", cs, t, err);
        memcpy(p, ref, sizeof p);
    }
    CHECK(dpt_optim_step_count(o) == epochs * per && !isnan(dpt_optim_last_norm(o)));
    printf("  %-40s %ld steps, update rel err %.1e\n", cs, epochs * per, worst);
    dpt_optim_free(o);
}

static void test_sched_fixtures(void)
{
    printf("schedules, clipping and runs against torch\n");
    char path[1024], list[8][32];
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(tu_fixture("optim_sched.safetensors", path, sizeof path), &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    int n = names(st, "schedules", list, 8);
    CHECK(n == 5);
    for (int i = 0; i < n; i++)
        sched_case(st, list[i]);
    n = names(st, "clips", list, 8);
    CHECK(n == 2);
    for (int i = 0; i < n; i++)
        clip_case(st, list[i]);
    n = names(st, "runs", list, 8);
    CHECK(n == 3);
    for (int i = 0; i < n; i++)
        run_fixture(st, list[i]);
    dpt_st_close(st);
}

/* ---- 4. checkpoints -------------------------------------------------------------- */

static const char tiny_spec[] = "input in size=28x28x1\n"
                                "conv c1 filter=3 filters=2 stride=2\n"
                                "batchnorm bn1\n"
                                "relu r1\n"
                                "fc fc outputs=classes\n"
                                "softmax sm\n";

static void test_checkpoints(void)
{
    printf("checkpoints\n");
    char dir[] = "/tmp/dpt_optim_ck_XXXXXX", path[1100], fixture[1024];
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp");
        return;
    }
    snprintf(path, sizeof path, "%s/adam.safetensors", dir);
    dpt_net *net = NULL, *net2 = NULL;
    dpt_optim *a = NULL, *a2 = NULL, *sg = NULL;
    dpt_status s = dpt_net_from_spec(tiny_spec, "tiny", 10, 4, 3, &net);
    if (s == DPT_OK)
        s = dpt_net_from_spec(tiny_spec, "tiny", 10, 4, 4, &net2);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        goto done;
    size_t n = dpt_net_n_params(net);
    CHECK(dpt_optim_new(DPT_OPTIM_ADAM, n, NULL, &a) == DPT_OK);
    CHECK(dpt_optim_new(DPT_OPTIM_ADAM, n, NULL, &a2) == DPT_OK);
    CHECK(dpt_optim_new(DPT_OPTIM_SGDM, n, NULL, &sg) == DPT_OK);
    if (!a || !a2 || !sg)
        goto done;
    float *g = malloc(n * sizeof *g);
    for (int t = 0; g && t < 3; t++) {
        fill(g, n, 40 + t, 1.0f);
        dpt_optim_step(a, dpt_net_params(net), g);
    }
    free(g);
    dpt_checkpoint_info info = {2, 5, 17, 3, 2, 1.5, 16, 360}, got;
    s = dpt_checkpoint_save_optim(path, net, a, &info, NULL, 0);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    /* Another kind: refused naming both, nothing changed. */
    s = dpt_checkpoint_load_optim(path, net2, sg, &got);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "'adam'") && strstr(dpt_last_error(), "'sgdm'"),
              "sgdm from an adam checkpoint: %d %s", (int)s, dpt_last_error());
    CHECK(dpt_optim_step_count(sg) == 0);
    dpt_optim_adam(a2)->decoupled = 1; /* AdamW: another optimizer to resume with */
    CHECK(!strcmp(dpt_optim_name(a2), "adamw") && !strcmp(dpt_optim_name(a), "adam"));
    s = dpt_checkpoint_load_optim(path, net2, a2, &got);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "'adam'") && strstr(dpt_last_error(), "'adamw'"),
              "adamw from an adam checkpoint: %d %s", (int)s, dpt_last_error());
    CHECK(dpt_optim_step_count(a2) == 0);
    dpt_optim_adam(a2)->decoupled = 0;
    s = dpt_checkpoint_load(path, net2, dpt_optim_sgdm(sg), &got);
    CHECK_MSG(s == DPT_ERR_ARG, "dpt_checkpoint_load with a dpt_sgdm from an adam checkpoint: %d", (int)s);
    /* Same kind: every buffer, the step count and the network back. */
    s = dpt_checkpoint_load_optim(path, net2, a2, &got);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        CHECK(dpt_optim_step_count(a2) == 3 && got.iteration == 17 && got.epoch_iteration == 5);
        for (size_t b = 0; b < 2; b++)
            CHECK_MSG(memcmp(dpt_optim_buffer(a2, b), dpt_optim_buffer(a, b), n * sizeof(float)) == 0,
                      "buffer %s differs after the round trip", dpt_optim_buffer_name(a, b));
        CHECK(memcmp(dpt_net_params(net2), dpt_net_params(net), n * sizeof(float)) == 0);
    }
    /* A checkpoint of dptrain before the interface (format v2, SGDM's
     * velocity, no "optimizer"): loads into SGDM, refused for Adam. */
    tu_fixture("ckpt_v2_sgdm.safetensors", fixture, sizeof fixture);
    dpt_st *st = NULL;
    float *vel = malloc(n * sizeof *vel);
    CHECK(vel && dpt_st_open(fixture, &st) == DPT_OK && !dpt_st_meta(st, "optimizer"));
    CHECK(st && vel && dpt_st_read_f32(st, "optim/Velocity", vel, n) == DPT_OK);
    dpt_st_close(st);
    s = dpt_checkpoint_load_optim(fixture, net2, sg, &got);
    CHECK_MSG(s == DPT_OK, "pre-interface checkpoint: %s", dpt_last_error());
    if (s == DPT_OK && vel) {
        CHECK(got.iteration == 18 && dpt_optim_step_count(sg) == 18);
        CHECK_MSG(memcmp(dpt_optim_buffer(sg, 0), vel, n * sizeof(float)) == 0, "velocity not loaded");
    }
    free(vel);
    s = dpt_checkpoint_load_optim(fixture, net2, a2, &got);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "'sgdm'") && strstr(dpt_last_error(), "'adam'"),
              "adam from a pre-interface checkpoint: %d %s", (int)s, dpt_last_error());
done:
    dpt_optim_free(a);
    dpt_optim_free(a2);
    dpt_optim_free(sg);
    dpt_net_free(net);
    dpt_net_free(net2);
    tu_remove_tree(dir);
}

/* ---- 5. dpt_fit with Adam and a schedule, stopped and resumed ------------------- */

typedef struct stopper {
    volatile sig_atomic_t flag;
    long at;
    double lr[64]; /* the rate reported at each iteration (1-based) */
} stopper;

static void on_progress(const dpt_progress *p, void *arg)
{
    stopper *st = arg;
    if (!p->end_of_epoch && p->iteration > 0 && p->iteration < 64)
        st->lr[p->iteration] = p->lr;
    if (st->at && p->iteration >= st->at)
        st->flag = SIGTERM;
}

static dpt_status fit(const dpt_datastore *train, dpt_optim_kind kind, const char *model,
                      const char *ckpt, const char *resume, stopper *st, dpt_fit_result *res)
{
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = tiny_spec;
    cfg.spec_source = "tiny";
    cfg.train = train;
    cfg.epochs = 3;
    cfg.batch = 32;
    cfg.seed = 5;
    cfg.spmd.backend = DPT_COMM_LOCAL;
    cfg.spmd.n_workers = 2;
    cfg.model_out = model;
    cfg.checkpoint_out = ckpt;
    cfg.checkpoint_every = 4;
    cfg.resume = resume;
    cfg.optimizer = kind;
    cfg.lr = 0.003f;
    cfg.decoupled = 1, cfg.weight_decay = 0.01f;
    cfg.clip_norm = 0.5;
    CHECK(dpt_lr_schedule_parse("cosine:min=1e-4,warmup=0.5", &cfg.lr_schedule) == DPT_OK);
    cfg.stop = &st->flag;
    cfg.progress = on_progress;
    cfg.progress_arg = st;
    return dpt_fit(&cfg, res);
}

static void test_fit_resume(const char *tmp)
{
    printf("dpt_fit with AdamW, cosine with warm-up and clipping: stopped and resumed\n");
    char fixture[1024], ref[1100], refck[1100], model[1100], ck[1100];
    tu_fixture("digits400", fixture, sizeof fixture);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(fixture, &fo, &ds);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s)
        return;
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmp);
    snprintf(refck, sizeof refck, "%s/refck.safetensors", tmp);
    snprintf(model, sizeof model, "%s/model.safetensors", tmp);
    snprintf(ck, sizeof ck, "%s/ck.safetensors", tmp);
    dpt_fit_result res;
    stopper full, part, rest;
    memset(&full, 0, sizeof full), memset(&part, 0, sizeof part), memset(&rest, 0, sizeof rest);
    s = fit(ds, DPT_OPTIM_ADAM, ref, refck, NULL, &full, &res);
    CHECK_MSG(s == DPT_OK, "uninterrupted: %s", dpt_last_error());
    long total = res.iterations;
    /* 400 images, 2 workers of 16 each: 13 iterations an epoch; the rate
     * rises over the first half epoch, then falls. */
    CHECK(total > 12 && total < 64);
    CHECK_MSG(full.lr[1] < full.lr[4] && full.lr[total] < full.lr[8] && full.lr[total] > 1e-4,
              "rates %g %g %g %g", full.lr[1], full.lr[4], full.lr[8], full.lr[total]);
    part.at = 22; /* mid-epoch (2, 9), after the checkpoint at 20: 21 and 22 are redone */
    s = fit(ds, DPT_OPTIM_ADAM, model, ck, NULL, &part, &res);
    CHECK_MSG(s == DPT_ERR_INTERRUPTED, "stop: %d %s", (int)s, dpt_last_error());
    CHECK(res.checkpoint_iteration > 0 && res.checkpoint_iteration < total);
    printf("  %ld iterations; stopped at %ld, checkpoint at %ld\n", total, res.iterations,
           res.checkpoint_iteration);
    long from = res.checkpoint_iteration;
    /* Resuming with another optimizer: refused, naming both. */
    s = fit(ds, DPT_OPTIM_SGDM, model, NULL, ck, &rest, &res);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "--optimizer adamw;") &&
                  strstr(dpt_last_error(), "uses sgdm"),
              "resume with sgdm: %d %s", (int)s, dpt_last_error());
    CHECK(access(model, F_OK) != 0);
    s = fit(ds, DPT_OPTIM_ADAM, model, NULL, ck, &rest, &res);
    CHECK_MSG(s == DPT_OK, "resume: %s", dpt_last_error());
    CHECK_MSG(tu_same_bytes(ref, model), "stopped + resumed model differs from the uninterrupted one");
    int same_rates = 1;
    for (long i = from + 1; i <= total; i++)
        same_rates &= rest.lr[i] == full.lr[i];
    CHECK_MSG(same_rates, "the resumed run's rates differ from the uninterrupted run's");

    /* A version-1 config (a program built before the optimizer fields)
     * trains with SGDM at a constant rate: whatever lies where the new
     * fields are is not read. A version-2 config's schedule is checked. */
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = tiny_spec, cfg.spec_source = "tiny", cfg.train = ds, cfg.epochs = 1, cfg.batch = 64;
    cfg.spmd.backend = DPT_COMM_LOCAL, cfg.spmd.n_workers = 1;
    stopper v1;
    memset(&v1, 0, sizeof v1);
    cfg.progress = on_progress, cfg.progress_arg = &v1;
    cfg.optimizer = (dpt_optim_kind)7, cfg.lr_schedule.every = 0, cfg.clip_norm = -5;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_ERR_ARG && strstr(dpt_last_error(), "lr schedule out of range"), "v2 with every=0: %d %s",
              (int)s, dpt_last_error());
    cfg.version = 1;
    s = dpt_fit(&cfg, &res);
    CHECK_MSG(s == DPT_OK && v1.lr[1] == (double)0.01f && v1.lr[res.iterations] == (double)0.01f,
              "version-1 config: %d %s (rates %g, %g)", (int)s, s ? dpt_last_error() : "", v1.lr[1],
              v1.lr[res.iterations]);
    dpt_datastore_free(ds);
}

int main(void)
{
    char path[1024];
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(tu_fixture("optim_adam.safetensors", path, sizeof path), &st);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        const char *cases = dpt_st_meta(st, "cases");
        CHECK(cases != NULL);
        char list[256];
        snprintf(list, sizeof list, "%s", cases ? cases : "");
        int n_cases = 0;
        for (char *save = NULL, *c = strtok_r(list, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
            run_case(st, c, 0);
            run_case(st, c, 1);
            n_cases++;
        }
        CHECK(n_cases == 3);
        dpt_st_close(st);
    }
    test_basics();
    test_interface();
    test_schedule_parse();
    test_sched_fixtures();
    test_checkpoints();
    char tmp[] = "/tmp/dpt_optim_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_fit_resume(tmp);
    tu_remove_tree(tmp);
    return tu_exit();
}
