/* Helper of tests/test_onnx.sh and bench/onnx_digits.sh: models to export
 * and dptrain's own outputs to compare ONNX Runtime against.
 *
 *   onnx_ref make SPEC N_CLASSES SEED OUT.safetensors
 *       a network from a spec file with random learnables (seed) and
 *       random batch-norm running statistics (so the inference form is
 *       exercised), saved with class names "c0".."c<K-1>".
 *   onnx_ref run MODEL N T SEED X.bin Y.bin
 *       N random inputs (T time steps for a sequence network; 1 otherwise)
 *       through dpt_net_forward in PREDICT mode: x and y as raw float32
 *       (little-endian, the host's order on the machines we run on).
 *   onnx_ref images MODEL LIST X.bin Y.bin
 *       the image files named in LIST (one path a line) decoded as dptrain
 *       predict decodes them (dpt_image_load), and the network's outputs.
 * Prints the shapes of what it wrote on stdout. Exit 1 with a message on
 * any error. */
#include "dptrain/dptrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "onnx_ref: %s: %s\n", what, dpt_last_error());
    return 1;
}

static int write_floats(const char *path, const float *v, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(v, sizeof *v, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "onnx_ref: %s: cannot write\n", path);
        return 1;
    }
    return 0;
}

static uint64_t rng_state = 88172645463325252ull;
static double uniform(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static int cmd_make(char **argv)
{
    int k = atoi(argv[1]);
    uint64_t seed = strtoull(argv[2], NULL, 10);
    dpt_net *net = NULL;
    if (k < 1 || k > 1000)
        return fprintf(stderr, "onnx_ref: bad class count\n"), 1;
    if (dpt_net_from_spec_file(argv[0], k, 8, seed, &net) != DPT_OK)
        return fail(argv[0]);
    rng_state ^= seed * 0x9E3779B97F4A7C15ull;
    /* Batch norm: running mean in [-0.5, 0.5], variance in [0.5, 1.5]; and
     * biases and offsets non-zero, so a dropped term shows. */
    for (size_t i = 0; i < dpt_net_n_state(net); i++) {
        const dpt_param_info *e = dpt_net_state_info(net, i);
        float *s = dpt_net_state(net) + e->offset;
        int var = strstr(e->param, "Variance") != NULL;
        for (size_t j = 0; j < e->n; j++)
            s[j] = (float)(var ? 0.5 + uniform() : uniform() - 0.5);
    }
    for (size_t i = 0; i < dpt_net_n_learnables(net); i++) {
        const dpt_param_info *e = dpt_net_learnable(net, i);
        if (strcmp(e->param, "Bias") && strcmp(e->param, "Offset") && strcmp(e->param, "Scale"))
            continue;
        float *p = dpt_net_params(net) + e->offset;
        for (size_t j = 0; j < e->n; j++)
            p[j] = (float)(strcmp(e->param, "Scale") ? 0.2 * (uniform() - 0.5)
                                                      : 0.75 + 0.5 * uniform());
    }
    char classes[16384];
    size_t len = 0;
    classes[len++] = '[';
    for (int c = 0; c < k; c++)
        len += (size_t)snprintf(classes + len, sizeof classes - len, "%s\"c%d\"", c ? "," : "", c);
    snprintf(classes + len, sizeof classes - len, "]");
    dpt_kv meta[1] = {{"classes", classes}};
    dpt_status s = dpt_net_save(net, argv[3], meta, 1);
    dpt_net_free(net);
    return s ? fail(argv[3]) : 0;
}

static int cmd_run(char **argv)
{
    int n = atoi(argv[1]), t = atoi(argv[2]), rc = 1;
    uint64_t seed = strtoull(argv[3], NULL, 10);
    dpt_net *net = NULL;
    float *x = NULL;
    const float *y;
    if (n < 1 || n > 64 || t < 1 || t > 1000)
        return fprintf(stderr, "onnx_ref: bad N or T\n"), 1;
    if (dpt_net_load(argv[0], n, &net) != DPT_OK)
        return fail(argv[0]);
    int chw[3], seq = dpt_net_is_sequence(net);
    dpt_net_input_shape(net, chw);
    if (!seq)
        t = 1;
    size_t per = (size_t)chw[0] * chw[1] * chw[2] * t;
    x = malloc((size_t)n * per * sizeof *x);
    if (!x)
        goto done;
    rng_state ^= seed * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n * per; i++) /* pixels in [0, 1]; features in [-1, 1] */
        x[i] = (float)(seq ? 2 * uniform() - 1 : uniform());
    if (seq && dpt_net_set_steps(net, t, NULL, n, 0) != DPT_OK) {
        fail("set_steps");
        goto done;
    }
    if (dpt_net_forward(net, x, n, DPT_MODE_PREDICT, &y) != DPT_OK) {
        fail("forward");
        goto done;
    }
    int k = dpt_net_n_outputs(net), steps = dpt_net_output_is_sequence(net) ? t : 1;
    if (write_floats(argv[4], x, (size_t)n * per) ||
        write_floats(argv[5], y, (size_t)n * steps * k))
        goto done;
    if (seq && steps > 1)
        printf("x %d %d %d\ny %d %d %d\n", n, t, chw[0], n, t, k);
    else if (seq)
        printf("x %d %d %d\ny %d %d\n", n, t, chw[0], n, k);
    else
        printf("x %d %d %d %d\ny %d %d\n", n, chw[0], chw[1], chw[2], n, k);
    rc = 0;
done:
    free(x);
    dpt_net_free(net);
    return rc;
}

static int cmd_images(char **argv)
{
    FILE *list = fopen(argv[1], "r");
    dpt_net *net = NULL;
    float *x = NULL, *y = NULL;
    int rc = 1, n = 0, cap = 0;
    char line[4096];
    if (!list)
        return fprintf(stderr, "onnx_ref: %s: cannot open\n", argv[1]), 1;
    if (dpt_net_load(argv[0], 1, &net) != DPT_OK) {
        fail(argv[0]);
        goto done;
    }
    int chw[3], k = dpt_net_n_outputs(net);
    dpt_net_input_shape(net, chw);
    size_t per = (size_t)chw[0] * chw[1] * chw[2];
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            float *nx = realloc(x, (size_t)cap * per * sizeof *x);
            float *ny = realloc(y, (size_t)cap * k * sizeof *y);
            if (nx)
                x = nx;
            if (ny)
                y = ny;
            if (!nx || !ny)
                goto done;
        }
        const float *out;
        /* One image per forward, as dptrain predict does. */
        if (dpt_image_load(line, chw[0], chw[1], chw[2], x + (size_t)n * per) != DPT_OK ||
            dpt_net_forward(net, x + (size_t)n * per, 1, DPT_MODE_PREDICT, &out) != DPT_OK) {
            fail(line);
            goto done;
        }
        memcpy(y + (size_t)n * k, out, (size_t)k * sizeof *y);
        n++;
    }
    if (write_floats(argv[2], x, (size_t)n * per) || write_floats(argv[3], y, (size_t)n * k))
        goto done;
    printf("x %d %d %d %d\ny %d %d\n", n, chw[0], chw[1], chw[2], n, k);
    rc = 0;
done:
    fclose(list);
    free(x);
    free(y);
    dpt_net_free(net);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "make"))
        return cmd_make(argv + 2);
    if (argc == 8 && !strcmp(argv[1], "run"))
        return cmd_run(argv + 2);
    if (argc == 6 && !strcmp(argv[1], "images"))
        return cmd_images(argv + 2);
    fprintf(stderr, "usage: onnx_ref make SPEC N_CLASSES SEED OUT | run MODEL N T SEED X Y | "
                    "images MODEL LIST X Y\n");
    return 1;
}
