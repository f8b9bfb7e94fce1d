/* Training-step throughput of any image network on a GPU: the dptrain half
 * of scripts/gpu-check's table (bench/gpu_torch.py is PyTorch's half).
 *
 *   gpu_bench [--net SPEC] [--label NAME] [--classes K] [--algos heuristic|timed|both]
 *             [--precision fp32|tf32|bf16] [--seconds S] [--cpu] B [B ...]
 *
 * Builds the network (default: the MATLAB example's; --net a spec file;
 * K classes, default 10; seed 0), SGDM (lr 0.01, momentum 0.9), random
 * inputs in [0, 1) and one-hot targets, moves it to GPU 0 (--cpu: stays on
 * the CPU, one worker, to check this program where there is no GPU) and
 * runs dpt_train_step, which copies the minibatch from host memory and
 * brings the loss back every step: 10 warm-up steps, then steps for at
 * least S seconds (default 3) and 20 steps. One line per minibatch size
 * and algorithm choice (heuristic: cuDNN's heuristics, the default;
 * timed: find_algorithms):
 *
 *   BENCH dptrain net=NAME device="..." batch=B algos=A steps=N seconds=T
 *         ms_per_step=M images_per_s=R loss=L
 *
 * Exit status 1 on a bad argument or a failed step (the message says
 * which), 77 without a GPU unless --cpu. --precision needs a tree whose
 * dpt_gpu_options has the precision field (version 2 or later). */
#include "dptrain/dptrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int int_arg(const char *text, int lo, int hi, const char *what)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "gpu_bench: %s: '%s' is not an integer in %d..%d\n", what, text, lo, hi);
        exit(1);
    }
    return (int)v;
}

/* One measurement; DPT_OK or the failing call's status. */
static dpt_status run_one(const char *spec, const char *label, int classes, int B, int timed,
                          const char *precision, double seconds, int on_cpu)
{
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    float *x = NULL, *t = NULL;
    dpt_status s = spec ? dpt_net_from_spec_file(spec, classes, B, 0, &net)
                        : dpt_net_from_spec(dpt_net_default_spec(), "<default>", classes, B, 0,
                                            &net);
    dpt_gpu_options o = DPT_GPU_OPTIONS_INIT;
    o.find_algorithms = timed;
#if DPT_GPU_OPTIONS_VERSION >= 2
    if (s == DPT_OK && precision)
        s = dpt_precision_parse(precision, &o.precision);
#else
    if (s == DPT_OK && precision)
        s = dpt_fail(DPT_ERR_UNSUPPORTED, "--precision: this tree's GPU options have none");
#endif
    if (s == DPT_OK && !on_cpu)
        s = dpt_net_to_gpu_opts(net, &o);
    if (s == DPT_OK)
        s = dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &opt);
    size_t nx = 0;
    if (s == DPT_OK) {
        int chw[3];
        dpt_net_input_shape(net, chw);
        nx = (size_t)B * chw[0] * chw[1] * chw[2];
        x = malloc(nx * sizeof *x);
        t = calloc((size_t)B * classes, sizeof *t);
        if (!x || !t)
            s = dpt_fail(DPT_ERR_NOMEM, "gpu_bench: out of memory for a minibatch of %d", B);
    }
    if (s == DPT_OK) {
        dpt_rng r;
        dpt_rng_seed(&r, 61, 0);
        for (size_t i = 0; i < nx; i++)
            x[i] = dpt_rng_uniform(&r);
        for (int i = 0; i < B; i++)
            t[(size_t)i * classes + dpt_rng_below(&r, (uint32_t)classes)] = 1.0f;
    }
    double l = 0;
    for (int i = 0; s == DPT_OK && i < 10; i++)
        s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
    long steps = 0;
    double t0 = now_s(), el = 0;
    while (s == DPT_OK && (el < seconds || steps < 20)) {
        s = dpt_train_step(net, opt, NULL, x, t, B, &l, NULL);
        steps++;
        el = now_s() - t0;
    }
    if (s == DPT_OK) {
        char name[128] = "cpu";
        if (!on_cpu)
            dpt_gpu_name(0, name, sizeof name);
        printf("BENCH dptrain net=%s device=\"%s\" batch=%d algos=%s steps=%ld seconds=%.3f "
               "ms_per_step=%.4f images_per_s=%.1f loss=%.4f precision=%s\n",
               label, name, B, timed ? "timed" : "heuristic", steps, el, 1e3 * el / steps,
               B * steps / el, l, precision ? precision : "fp32");
        fflush(stdout);
    }
    free(x), free(t);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    return s;
}

int main(int argc, char **argv)
{
    const char *spec = NULL, *label = "example", *algos = "both", *precision = NULL;
    int classes = 10, on_cpu = 0, n_batches = 0;
    double seconds = 3;
    int *batches = calloc((size_t)argc, sizeof *batches);
    if (!batches)
        return 1;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        int more = a + 1 < argc;
        if (!strcmp(o, "--net") && more)
            spec = argv[++a];
        else if (!strcmp(o, "--label") && more)
            label = argv[++a];
        else if (!strcmp(o, "--classes") && more)
            classes = int_arg(argv[++a], 2, 100000, "--classes");
        else if (!strcmp(o, "--algos") && more)
            algos = argv[++a];
        else if (!strcmp(o, "--seconds") && more)
            seconds = int_arg(argv[++a], 0, 600, "--seconds");
        else if (!strcmp(o, "--precision") && more)
            precision = argv[++a];
        else if (!strcmp(o, "--cpu"))
            on_cpu = 1;
        else if (o[0] != '-')
            batches[n_batches++] = int_arg(o, 1, 1 << 20, "minibatch");
        else {
            fprintf(stderr, "gpu_bench: unknown or incomplete option '%s'\n", o);
            free(batches);
            return 1;
        }
    }
    int from = !strcmp(algos, "timed"), to = strcmp(algos, "heuristic") ? 1 : 0;
    if (strcmp(algos, "both") && strcmp(algos, "timed") && strcmp(algos, "heuristic")) {
        fprintf(stderr, "gpu_bench: --algos: '%s' is not heuristic, timed or both\n", algos);
        free(batches);
        return 1;
    }
    if (n_batches == 0) {
        fprintf(stderr, "usage: gpu_bench [--net SPEC] [--label NAME] [--classes K] "
                        "[--algos heuristic|timed|both] [--precision fp32|tf32|bf16] "
                        "[--seconds S] [--cpu] B [B ...]\n");
        free(batches);
        return 1;
    }
    if (!on_cpu && dpt_gpu_count() < 1) {
        printf("gpu_bench: no usable GPU (%s): skipped\n",
               dpt_gpu_have_cuda() ? "none found" : "built without CUDA");
        free(batches);
        return 77;
    }
    dpt_status s = DPT_OK;
    for (int b = 0; b < n_batches && s == DPT_OK; b++)
        for (int timed = from; timed <= to && s == DPT_OK; timed++)
            if (!(on_cpu && timed)) /* algorithm timing is the GPU's */
                s = run_one(spec, label, classes, batches[b], timed, precision, seconds, on_cpu);
    free(batches);
    if (s != DPT_OK) {
        fprintf(stderr, "gpu_bench: %s\n", dpt_last_error());
        return 1;
    }
    return 0;
}
