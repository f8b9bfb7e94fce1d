/* dptrain generate: sample text from a character language model.
 *
 * The network runs stateful with one stream: the prime's characters are fed
 * first (in chunks, the state carried from one to the next), then each
 * sampled character is fed back for the next one. Draws are counter-based
 * (dpt_rng_key / dpt_mix64, core.h): character i uses the i-th value of the
 * seed's key, so the same seed gives the same text whatever else changes
 * around it. The whole text is made before anything is written: an error
 * leaves no partial output, and --output is replaced atomically. */
#include "cli/cli.h"
#include "core/tmpfile.h"
#include "dptrain/data.h"
#include "dptrain/net.h"

#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The key stream of generate's draws ("gen"), apart from dropout's layer
 * indices and augmentation's 0x61756700. */
#define GENERATE_STREAM 0x67656e00u
/* Characters fed per forward while priming (bounds the step buffers), and
 * the most one-hot floats a chunk may take (a vocabulary of a million
 * characters feeds 4 at a time). */
#define PRIME_CHUNK 256
#define CHUNK_FLOATS (1L << 22)
#define MAX_LENGTH (1L << 24)

static const char help[] =
    "usage: dptrain generate --model FILE [--length N] [--prime TEXT] [--temperature X]\n"
    "                        [--seed S] [--output FILE]\n"
    "\n"
    "Sample text from a character language model (trained by dptrain train on a text\n"
    "file). The prime is written first, then N sampled characters, UTF-8.\n"
    "  --model FILE        model.safetensors of a language model\n"
    "  --length N          characters to sample (default 200)\n"
    "  --prime TEXT        text fed to the model before sampling (default \"\": the\n"
    "                      model starts after a newline, which is not written)\n"
    "  --temperature X     > 0; below 1 sharper, above 1 more random (default 1.0)\n"
    "  --seed S            the draws; the same seed gives the same text (default 0)\n"
    "  --output FILE       write the text to FILE (atomically) instead of stdout\n"
    "  -h, --help          this help\n";

/* ---- a language model's metadata --------------------------------------------- */

int cli_model_vocab(const dpt_net *net, const char *path, const char *cmd, dpt_text **out)
{
    const char *task = dpt_net_meta(net, "task");
    char buf[256];
    if (!task || strcmp(task, "language_model") != 0) {
        if (!task)
            return cli_error("%s: not a language model (no 'task' metadata); %s needs a model "
                             "trained on a text file",
                             path, cmd);
        return cli_error("%s: not a language model (task '%s'); %s needs a model trained on a "
                         "text file",
                         path, cli_clean(buf, sizeof buf, task), cmd);
    }
    const char *text = dpt_net_meta(net, "vocab");
    if (!text)
        return cli_error("%s: language model without 'vocab' metadata", path);
    int k = dpt_net_n_outputs(net), chw[3];
    dpt_net_input_shape(net, chw);
    if (!dpt_net_is_sequence(net) || !dpt_net_output_is_sequence(net))
        return cli_error("%s: a language model needs a sequence input and an output per time "
                         "step; this network has %s",
                         path, dpt_net_is_sequence(net) ? "one output per sequence"
                                                        : "no sequenceinput layer");
    cJSON *arr = cJSON_Parse(text);
    int rc = 1;
    uint32_t *cps = NULL;
    if (!cJSON_IsArray(arr)) {
        cli_error("%s: malformed 'vocab' metadata (want a JSON array of code points)", path);
        goto done;
    }
    /* The count is checked against the network before anything is sized by
     * it: the file's network bounds it. */
    int n = cJSON_GetArraySize(arr);
    if (n != k || chw[0] != k) {
        cli_error("%s: 'vocab' metadata has %d characters, but the network takes %d and "
                  "outputs %d per time step",
                  path, n, chw[0], k);
        goto done;
    }
    cps = malloc((size_t)(n ? n : 1) * sizeof *cps);
    if (!cps) {
        cli_error("out of memory");
        goto done;
    }
    int j = 0;
    for (cJSON *e = arr->child; e; e = e->next, j++) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(v >= 1 && v <= 0x10ffff && v == floor(v))) {
            cli_error("%s: 'vocab' entry %d is not a code point (an integer from 1 to 0x10FFFF)",
                      path, j);
            goto done;
        }
        cps[j] = (uint32_t)v;
    }
    if (dpt_text_from_vocab(path, cps, n, out) != DPT_OK) {
        cli_lib_error();
        goto done;
    }
    rc = 0;
done:
    free(cps);
    cJSON_Delete(arr);
    return rc;
}

int cli_model_seq_len(const dpt_net *net, const char *path, long *out)
{
    const char *s = dpt_net_meta(net, "seq_len");
    *out = 64;
    if (!s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 65536) {
        char buf[64];
        return cli_error("%s: 'seq_len' metadata '%s' is not an integer from 1 to 65536", path,
                         cli_clean(buf, sizeof buf, s));
    }
    *out = v;
    return 0;
}

/* ---- sampling ----------------------------------------------------------------- */

/* Index drawn from probabilities p[0..v) sharpened by the temperature
 * (p^(1/temp), renormalised), with u uniform in [0, 1). Sums in double in
 * index order, so the same p and u give the same index everywhere; at
 * temperature 1 no exp/log is involved. -1 when no entry has weight. */
static int sample(const float *p, int v, double temp, double u, double *w)
{
    double pmax = 0;
    for (int i = 0; i < v; i++)
        if (p[i] > pmax)
            pmax = p[i];
    if (!(pmax > 0))
        return -1;
    double total = 0, lmax = log(pmax);
    for (int i = 0; i < v; i++) {
        double q = p[i] > 0 ? p[i] : 0;
        w[i] = temp == 1.0 ? q : q > 0 ? exp((log(q) - lmax) / temp) : 0;
        total += w[i];
    }
    double target = u * total, cum = 0;
    int last = -1;
    for (int i = 0; i < v; i++) {
        if (w[i] <= 0)
            continue;
        cum += w[i];
        last = i;
        if (cum > target)
            return i;
    }
    return last; /* rounding left target at the very top */
}

size_t cli_utf8_put(char *s, uint32_t cp)
{
    if (cp < 0x80) {
        s[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        s[0] = (char)(0xc0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        s[0] = (char)(0xe0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        s[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    s[0] = (char)(0xf0 | (cp >> 18));
    s[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    s[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    s[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static int chunk_of(int v)
{
    long c = CHUNK_FLOATS / v;
    return c < 1 ? 1 : c > PRIME_CHUNK ? PRIME_CHUNK : (int)c;
}

/* Feed idx[0..n) to the stateful network (one stream) and leave the
 * probabilities after the last one in *p. x holds chunk_of(v) * v floats. */
static dpt_status feed(dpt_net *net, const int32_t *idx, size_t n, int v, float *x,
                       const float **p)
{
    int steps = -1;
    size_t chunk = (size_t)chunk_of(v);
    for (size_t a = 0; a < n; a += chunk) {
        int t = (int)(n - a < chunk ? n - a : chunk);
        dpt_status st;
        if (t != steps && (st = dpt_net_set_steps(net, t, NULL, 1, 0)) != DPT_OK)
            return st;
        steps = t;
        memset(x, 0, (size_t)t * (size_t)v * sizeof *x);
        for (int s = 0; s < t; s++)
            x[(size_t)s * v + idx[a + (size_t)s]] = 1.0f;
        const float *y;
        if ((st = dpt_net_forward(net, x, 1, DPT_MODE_PREDICT, &y)) != DPT_OK)
            return st;
        *p = y + (size_t)(t - 1) * v;
    }
    return DPT_OK;
}

/* Write len bytes to path atomically (temporary file beside it, fsync,
 * rename); an existing path must be a regular file (or a link, which is
 * replaced, not followed). */
static int write_atomic(const char *path, const char *buf, size_t len)
{
    struct stat sb;
    if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode))
        return cli_error("--output %s: not a regular file", path);
    char tmp[4200];
    int fd = dpt_tmpfile_create(path, tmp, sizeof tmp);
    if (fd < 0)
        return cli_error("--output %s: cannot create: %s", path, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int e = off < len ? (errno ? errno : EIO) : 0;
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) != 0)
        e = errno;
    if (e) {
        unlink(tmp);
        return cli_error("--output %s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int cli_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"length", required_argument, 0, 'n'},
        {"prime", required_argument, 0, 'p'},  {"temperature", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},   {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *model = NULL, *prime = "", *output = NULL;
    long length = 200;
    double temp = 1.0;
    unsigned long long seed = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prime = optarg; break;
        case 'o': output = optarg; break;
        case 'n':
            if (cli_int("--length", optarg, 0, MAX_LENGTH, &length))
                return 1;
            break;
        case 't':
            if (cli_double("--temperature", optarg, &temp))
                return 1;
            if (!(temp > 0))
                return cli_error("--temperature: %s is not above 0", optarg);
            break;
        case 's': {
            char *end;
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] < '0' || optarg[0] > '9')
                return cli_error("--seed: '%s' is not an integer from 0 to 2^64-1", optarg);
            break;
        }
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("generate: unknown or incomplete option '%s' (see dptrain generate "
                             "--help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_error("generate: unexpected argument '%s'", argv[optind]);
    if (!model)
        return cli_error("generate: --model FILE is required");

    int rc = 1;
    dpt_net *net = NULL;
    dpt_text *vocab = NULL;
    int32_t *idx = NULL;
    float *x = NULL;
    double *w = NULL;
    char *text = NULL;
    if (dpt_net_load(model, 1, &net) != DPT_OK)
        goto fail;
    if (cli_model_vocab(net, model, "generate", &vocab))
        goto done;
    int v = dpt_text_n_vocab(vocab);
    const uint32_t *cps = dpt_text_vocab(vocab);
    size_t plen = strlen(prime), n_idx = 0;
    idx = malloc((plen ? plen : 1) * sizeof *idx);
    x = malloc((size_t)chunk_of(v) * (size_t)v * sizeof *x);
    w = malloc((size_t)v * sizeof *w);
    /* The prime's bytes and at most 4 bytes a sampled character. */
    text = malloc(plen + 4 * (size_t)length + 1);
    if (!idx || !x || !w || !text) {
        cli_error("out of memory");
        goto done;
    }
    if (dpt_text_encode(vocab, "--prime", prime, plen, idx, &n_idx) != DPT_OK)
        goto fail;
    if (n_idx == 0) {
        /* Nothing to start from: start as at a new paragraph, after a
         * newline (or, without one, the vocabulary's first character). */
        int nl = dpt_text_index_of(vocab, '\n');
        idx[0] = nl >= 0 ? nl : 0;
        n_idx = 1;
    }
    dpt_net_set_stateful(net, 1);
    dpt_net_reset_state(net);
    const float *p = NULL;
    if (feed(net, idx, n_idx, v, x, &p) != DPT_OK)
        goto fail;
    memcpy(text, prime, plen);
    size_t len = plen;
    uint64_t key = dpt_rng_key(seed, 0, 0, GENERATE_STREAM, 0);
    for (long i = 0; i < length; i++) {
        double u = (double)(dpt_mix64(key ^ (uint64_t)i) >> 11) * 0x1p-53;
        int k = sample(p, v, temp, u, w);
        if (k < 0) {
            cli_error("%s: the model's output has no character with a probability above 0 "
                      "(character %ld)",
                      model, i + 1);
            goto done;
        }
        len += cli_utf8_put(text + len, cps[k]);
        if (i + 1 < length) {
            int32_t one = k;
            if (feed(net, &one, 1, v, x, &p) != DPT_OK)
                goto fail;
        }
    }
    if (output) {
        if (write_atomic(output, text, len))
            goto done;
    } else {
        fwrite(text, 1, len, stdout);
        if (len && text[len - 1] != '\n' && isatty(STDOUT_FILENO))
            putchar('\n');
        if (fflush(stdout) != 0 || ferror(stdout)) {
            cli_error("stdout: cannot write: %s", strerror(errno));
            goto done;
        }
    }
    rc = 0;
    goto done;
fail:
    rc = cli_lib_error();
done:
    free(text);
    free(w);
    free(x);
    free(idx);
    dpt_text_free(vocab);
    dpt_net_free(net);
    return rc;
}
