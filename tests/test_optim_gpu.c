/* The optimizers' device update (optim_gpu_step: gpu_sgdm, gpu_adam,
 * gpu_clip_grad_norm) against dpt_optim_step on the CPU: SGDM, Adam and
 * AdamW give the same bits (same per-step scalars from the host, explicitly
 * rounded float32 on the device); with clipping the norm agrees to float64
 * rounding (another summation order) and the update to float32 rounding.
 * Skips (exit 77) without CUDA or a GPU. */
#include "dptrain/gpu.h"
#include "dptrain/optim.h"
#include "testutil.h"

#ifdef DPT_HAVE_CUDA
#include "ops/cuda/gpu_ops.h"
#include "optim/optim_impl.h"

enum { N = 100003, STEPS = 5 };

static void fill(float *x, size_t n, unsigned seed, float scale)
{
    dpt_rng r;
    dpt_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (2.0f * dpt_rng_uniform(&r) - 1.0f);
}

static void run(gpu_ctx *g, const char *what, dpt_optim_kind kind, int decoupled, double clip)
{
    dpt_optim_opts oo = DPT_OPTIM_OPTS_INIT;
    oo.weight_decay = 0.01f, oo.decoupled = decoupled, oo.clip_norm = clip;
    dpt_optim *oc = NULL, *og = NULL;
    CHECK(dpt_optim_new(kind, N, &oo, &oc) == DPT_OK && dpt_optim_new(kind, N, &oo, &og) == DPT_OK);
    float *w = malloc(N * sizeof *w), *g_host = malloc(N * sizeof *g_host);
    float *back = malloc(N * sizeof *back);
    float *dw = NULL, *dg = NULL, *ds[2] = {NULL, NULL};
    size_t nb = oc ? dpt_optim_n_buffers(oc) : 0;
    dpt_status s = w && g_host && back && oc && og ? DPT_OK : DPT_ERR_NOMEM;
    if (s == DPT_OK)
        s = gpu_malloc(g, N * sizeof(float), (void **)&dw);
    if (s == DPT_OK)
        s = gpu_malloc(g, N * sizeof(float), (void **)&dg);
    for (size_t b = 0; s == DPT_OK && b < nb; b++)
        if ((s = gpu_malloc(g, N * sizeof(float), (void **)&ds[b])) == DPT_OK)
            s = gpu_zero(g, ds[b], N * sizeof(float));
    if (s == DPT_OK) {
        fill(w, N, 3, 1.0f);
        s = gpu_upload(g, dw, w, N * sizeof(float));
    }
    double worst_norm = 0;
    for (int t = 1; s == DPT_OK && t <= STEPS; t++) {
        fill(g_host, N, 100 + t, t == 2 ? 5.0f : 0.01f);
        float lr = dpt_optim_default_lr(kind) / (float)t; /* a schedule's changing rate */
        dpt_optim_set_lr(oc, lr), dpt_optim_set_lr(og, lr);
        if ((s = gpu_upload(g, dg, g_host, N * sizeof(float))) != DPT_OK)
            break;
        dpt_optim_step(oc, w, g_host);
        if ((s = optim_gpu_step(og, g, dw, dg, ds)) != DPT_OK)
            break;
        if (clip > 0) {
            double a = dpt_optim_last_norm(oc), b = dpt_optim_last_norm(og);
            double e = fabs(a - b) / a;
            worst_norm = e > worst_norm ? e : worst_norm;
        }
    }
    CHECK_MSG(s == DPT_OK, "%s: %s", what, dpt_last_error());
    if (s == DPT_OK && (s = gpu_download(g, back, dw, N * sizeof(float))) == DPT_OK) {
        CHECK(dpt_optim_step_count(og) == STEPS);
        if (clip > 0) {
            printf("  %-34s gradient norm rel err %.1e\n", what, worst_norm);
            CHECK_MSG(worst_norm < 1e-12, "%s: norm rel err %.3e", what, worst_norm);
            char label[96];
            snprintf(label, sizeof label, "%s parameters", what);
            tu_check_close(label, back, w, N, 1e-6);
        } else {
            int same = memcmp(back, w, N * sizeof(float)) == 0;
            for (size_t b = 0; same && b < nb; b++) {
                if ((s = gpu_download(g, back, ds[b], N * sizeof(float))) != DPT_OK)
                    break;
                same = memcmp(back, dpt_optim_buffer(oc, b), N * sizeof(float)) == 0;
            }
            printf("  %-34s %s\n", what, same ? "bit-identical to the CPU" : "DIFFERS from the CPU");
            CHECK_MSG(same && s == DPT_OK, "%s: device update differs from dpt_optim_step", what);
        }
    }
    gpu_mfree(dw), gpu_mfree(dg), gpu_mfree(ds[0]), gpu_mfree(ds[1]);
    free(w), free(g_host), free(back);
    dpt_optim_free(oc), dpt_optim_free(og);
}
#endif

int main(void)
{
    if (!dpt_gpu_have_cuda()) {
        printf("test_optim_gpu: skipped: this build of dptrain has no CUDA backend\n");
        return TU_SKIP;
    }
    if (dpt_gpu_count() < 1) {
        printf("test_optim_gpu: skipped: no usable GPU (CUDA build, but no device or driver)\n");
        return TU_SKIP;
    }
#ifdef DPT_HAVE_CUDA
    gpu_ctx *g = NULL;
    dpt_status s = gpu_ctx_new(0, 0, &g);
    if (s == DPT_OK)
        s = gpu_ctx_reserve_scratch(g, 1, 1);
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    if (s == DPT_OK) {
        printf("device update, %d parameters, %d steps, changing rate\n", N, STEPS);
        run(g, "sgdm", DPT_OPTIM_SGDM, 0, 0);
        run(g, "adam", DPT_OPTIM_ADAM, 0, 0);
        run(g, "adamw", DPT_OPTIM_ADAM, 1, 0);
        run(g, "adam, clip-norm 1", DPT_OPTIM_ADAM, 0, 1.0);
        run(g, "sgdm, clip-norm 0.5", DPT_OPTIM_SGDM, 0, 0.5);
    }
    gpu_ctx_free(g);
#endif
    return tu_exit();
}
