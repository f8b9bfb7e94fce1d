/* dptrain: train, evaluate and inspect networks, data-parallel. */
#include "cli/cli.h"
#include "core/text.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: dptrain <command> [options]\n"
    "\n"
    "Data-parallel training of neural networks with a custom training loop.\n"
    "\n"
    "commands:\n"
    "  train     train a network (single worker, worker threads or MPI ranks)\n"
    "  eval      accuracy and confusion matrix of a model on a dataset; bits per\n"
    "            character of a language model on a text file\n"
    "  predict   label and score of image files or .csv sequences\n"
    "  generate  sample text from a character language model\n"
    "  info      the default network spec, a network's layers and tables, a model file\n"
    "  export    write a model as an ONNX file (ONNX Runtime and other tools)\n"
    "  launch    train under mpirun -np N, restarted from its last checkpoint when it fails\n"
    "\n"
    "Run 'dptrain <command> --help' for a command's options.\n";

int cli_error(const char *fmt, ...)
{
    /* Messages carry names from outside (files, class names, spec text):
     * escape what a terminal would act on or hide. */
    char msg[4096], clean[4 * sizeof msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dpt_text_clean(clean, sizeof clean, msg, (size_t)-1, 0);
    fprintf(stderr, "dptrain: %s\n", clean);
    return 1;
}

const char *cli_clean(char *buf, size_t size, const char *s)
{
    dpt_text_clean(buf, size, s ? s : "", (size_t)-1, 0);
    return buf;
}

void cli_cell(const char *s, int width, int left)
{
    char buf[256];
    size_t cols = dpt_text_clean(buf, sizeof buf, s ? s : "", (size_t)-1, (size_t)width);
    int pad = width - (int)cols;
    printf("%*s%s%*s", left ? 0 : pad, "", buf, left ? pad : 0, "");
}

int cli_bytes(const char *what, const char *value, uint64_t *out)
{
    char clean[64];
    /* Strict: a plain decimal number (no sign, space, hex, inf or nan),
     * then at most one unit letter, then nothing. */
    int plain = value[0] >= '0' && value[0] <= '9' && !strpbrk(value, "xXnN");
    char *end = (char *)value;
    errno = 0;
    double v = plain ? strtod(value, &end) : 0.0, unit = 1.0;
    if (plain && *end) {
        const char *u = strchr("kmgt", *end | 0x20);
        if (u) { /* powers of 1024, as DPT_MAX_NET_MEMORY */
            for (const char *k = "kmgt"; k <= u; k++)
                unit *= 1024.0;
            end++;
        }
    }
    if (!plain || errno || *end || !isfinite(v) || v * unit > 4.6e18)
        goto bad;
    *out = (uint64_t)(v * unit);
    return 0;
bad:
    cli_error("%s: '%s' is not a size (bytes, or with K, M, G, T: e.g. 512M, 1.5G)", what,
              cli_clean(clean, sizeof clean, value));
    return -1;
}

int cli_lib_error(void) { return cli_error("%s", dpt_last_error()); }

int cli_int(const char *opt, const char *value, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < min || v > max) {
        cli_error("%s: '%s' is not an integer from %ld to %ld", opt, value, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const char *opt, const char *value, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !isfinite(v)) {
        cli_error("%s: '%s' is not a number", opt, value);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        puts("dptrain 0.1.0");
        return 0;
    }
    /* A DPT_* variable with a value the library would not accept ends
     * here, before any work, naming the variable. */
    if (dpt_env_check() != DPT_OK)
        return cli_lib_error();
    /* Each command sees argv[0] = "dptrain <command>" style arguments. */
    if (!strcmp(cmd, "train"))
        return cli_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval"))
        return cli_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "predict"))
        return cli_predict(argc - 1, argv + 1);
    if (!strcmp(cmd, "info"))
        return cli_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "launch"))
        return cli_launch(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate"))
        return cli_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "export"))
        return cli_export(argc - 1, argv + 1);
    cli_error("unknown command '%s' (train, eval, predict, generate, info, launch, export)",
              cmd);
    fputs(usage, stderr);
    return 1;
}
