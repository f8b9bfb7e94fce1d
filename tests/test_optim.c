/* Adam and AdamW against PyTorch (tests/fixtures/optim_adam.safetensors, made
 * by tests/fixtures/make_optim_fixtures.py): six steps per case with
 * gradients of mixed scale; the update of every step, and the moments after
 * the last, within float32 rounding. */
#include "core/safetensors.h"
#include "dptrain/optim.h"
#include "testutil.h"

enum { MAX_N = 64 };

static double meta_num(const dpt_st *st, const char *cs, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s/%s", cs, key);
    const char *v = dpt_st_meta(st, k);
    CHECK_MSG(v != NULL, "metadata %s missing", k);
    return v ? atof(v) : 0.0;
}

static void read(const dpt_st *st, const char *cs, const char *name, float *dst, size_t n)
{
    char k[128];
    snprintf(k, sizeof k, "%s/%s", cs, name);
    dpt_status s = dpt_st_read_f32(st, k, dst, n);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
}

static void run_case(const dpt_st *st, const char *cs)
{
    printf("%s\n", cs);
    const dpt_st_tensor *t0 = NULL;
    char k[128];
    snprintf(k, sizeof k, "%s/p0", cs);
    t0 = dpt_st_get(st, k);
    CHECK_MSG(t0 && t0->ndim == 1 && t0->shape[0] <= MAX_N, "%s missing or too large", k);
    if (!t0 || t0->ndim != 1 || t0->shape[0] > MAX_N)
        return;
    size_t n = (size_t)t0->shape[0];
    float p[MAX_N], prev[MAX_N], g[MAX_N], ref[MAX_N], d_got[MAX_N], d_ref[MAX_N];
    read(st, cs, "p0", p, n);
    dpt_adam *o = NULL;
    dpt_status s = dpt_adam_new(n, (float)meta_num(st, cs, "lr"), meta_num(st, cs, "beta1"),
                                meta_num(st, cs, "beta2"), (float)meta_num(st, cs, "eps"),
                                (float)meta_num(st, cs, "weight_decay"), &o);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s != DPT_OK)
        return;
    o->decoupled = (int)meta_num(st, cs, "decoupled");
    int steps = (int)meta_num(st, cs, "steps");
    for (int t = 1; t <= steps; t++) {
        char gname[16], pname[16], label[64];
        snprintf(gname, sizeof gname, "g%d", t);
        snprintf(pname, sizeof pname, "p%d", t);
        read(st, cs, gname, g, n);
        read(st, cs, pname, ref, n);
        memcpy(prev, p, n * sizeof *p);
        dpt_adam_step(o, p, g);
        CHECK(o->step == t);
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
    read(st, cs, "m", ref, n);
    snprintf(k, sizeof k, "%s m", cs);
    tu_check_close(k, o->m, ref, n, 1e-5);
    read(st, cs, "v", ref, n);
    snprintf(k, sizeof k, "%s v", cs);
    tu_check_close(k, o->v, ref, n, 1e-5);
    dpt_adam_free(o);
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
            run_case(st, c);
            n_cases++;
        }
        CHECK(n_cases == 3);
        dpt_st_close(st);
    }
    test_basics();
    return tu_exit();
}
