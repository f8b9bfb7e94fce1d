/* dptrain eval and info --model: load a model and report on it. */
#include "cli/cli.h"
#include "dptrain/train.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void cli_print_net(const dpt_net *net); /* cmd_info.c */

static const char help[] =
    "usage: dptrain eval --model FILE --data PATH [--labels FILE] [--json]\n"
    "\n"
    "Classify a dataset with a trained model; print accuracy and the confusion matrix.\n"
    "For a language model, print the bits per character and perplexity of a text.\n"
    "  --model FILE    model.safetensors written by dptrain train\n"
    "  --data PATH     image folder (one sub-folder per class) or IDX images file;\n"
    "                  a sequence folder (class sub-folders of .csv files) for a\n"
    "                  sequence classifier; a UTF-8 text file for a language model.\n"
    "                  Classes matched to the model's by name (IDX: \"0\", \"1\", ...)\n"
    "  --labels FILE   IDX labels file (default: found beside the images file)\n"
    "  --batch N       observations per forward pass (default 256)\n"
    "  --json          print one JSON object: accuracy, n, per-class counts, confusion;\n"
    "                  for a text: bits_per_character, perplexity (2^bits), characters\n"
    "sequences:\n"
    "  --sequence-padding left|right\n"
    "                  where a minibatch pads shorter sequences (default right)\n"
    "  --max-length T  keep the first T time steps of each sequence (default 0: all)\n"
    "language models:\n"
    "  --streams N     the text is read as N parallel streams, each from zero state\n"
    "                  (default 64; dptrain train scores held-out text with --batch)\n"
    "  --seq-len T     characters per chunk (default: the model's, else 64)\n"
    "  -h, --help      this help\n";

/* Class names from the model's "classes" metadata (a JSON array); a model
 * saved without them (dpt_net_save with no metadata) gets "0".."K-1". */
int cli_model_classes(const dpt_net *net, const char *path, cJSON **out)
{
    const char *text = dpt_net_meta(net, "classes");
    if (!text) {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; arr && i < dpt_net_n_outputs(net); i++) {
            char name[16];
            snprintf(name, sizeof name, "%d", i);
            cJSON_AddItemToArray(arr, cJSON_CreateString(name));
        }
        if (!arr)
            return cli_error("out of memory");
        *out = arr;
        return 0;
    }
    cJSON *arr = cJSON_Parse(text);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != dpt_net_n_outputs(net)) {
        cJSON_Delete(arr);
        return cli_error("%s: malformed 'classes' metadata (want a JSON array of %d names)", path,
                         dpt_net_n_outputs(net));
    }
    for (int i = 0; i < cJSON_GetArraySize(arr); i++)
        if (!cJSON_IsString(cJSON_GetArrayItem(arr, i))) {
            cJSON_Delete(arr);
            return cli_error("%s: class name %d is not a string", path, i);
        }
    *out = arr;
    return 0;
}

int cli_model_info(const char *path)
{
    dpt_net *net = NULL;
    if (dpt_net_load(path, 1, &net) != DPT_OK)
        return cli_lib_error();
    char buf[4096];
    printf("model: %s\n", cli_clean(buf, sizeof buf, path));
    static const char *const keys[] = {"format", "task",      "classes", "seq_len",
                                       "features", "epoch", "iteration", "workers"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = dpt_net_meta(net, keys[i]);
        if (v)
            printf("  %-10s %s\n", keys[i], cli_clean(buf, sizeof buf, v));
    }
    /* A vocabulary is long: its size and its characters as text. */
    const char *task = dpt_net_meta(net, "task");
    dpt_text *vocab = NULL;
    if (task && !strcmp(task, "language_model")) {
        if (cli_model_vocab(net, path, "info", &vocab)) {
            dpt_net_free(net);
            return 1;
        }
        int v = dpt_text_n_vocab(vocab);
        const uint32_t *cp = dpt_text_vocab(vocab);
        char *txt = malloc(4 * (size_t)v + 1);
        size_t k = 0;
        for (int j = 0; txt && j < v; j++)
            k += cli_utf8_put(txt + k, cp[j]);
        if (txt) {
            txt[k] = 0;
            char *clean = malloc(4 * k + 16);
            if (clean)
                printf("  %-10s %d characters: %s\n", "vocab", v, cli_clean(clean, 4 * k + 16, txt));
            free(clean);
        }
        free(txt);
        dpt_text_free(vocab);
    }
    cli_print_net(net);
    dpt_net_free(net);
    return 0;
}

/* Accuracy and the confusion matrix (k x k, rows the true class) of n
 * observations ("images", "sequences"), as a table or one JSON object. */
static void print_accuracy(double acc, size_t n, const char *what, int k, const char *const *names,
                           const size_t *conf, int json)
{
    if (json) {
        cJSON *o = cJSON_CreateObject(), *per = cJSON_CreateObject(), *cm = cJSON_CreateArray();
        cJSON_AddNumberToObject(o, "accuracy", acc);
        cJSON_AddNumberToObject(o, "n", (double)n);
        cJSON_AddItemToObject(o, "per_class", per);
        for (int i = 0; i < k; i++) {
            size_t tot = 0;
            cJSON *row = cJSON_CreateArray();
            for (int j = 0; j < k; j++) {
                tot += conf[(size_t)i * k + j];
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)conf[(size_t)i * k + j]));
            }
            cJSON_AddItemToArray(cm, row);
            cJSON *pc = cJSON_CreateObject();
            cJSON_AddNumberToObject(pc, "n", (double)tot);
            cJSON_AddNumberToObject(pc, "correct", (double)conf[(size_t)i * k + i]);
            cJSON_AddNumberToObject(pc, "accuracy", tot ? (double)conf[(size_t)i * k + i] / tot : 0);
            /* JSON cannot carry invalid UTF-8: the key escaped as printed */
            char key[1024];
            cJSON_AddItemToObject(per, cli_clean(key, sizeof key, names[i]), pc);
        }
        cJSON_AddItemToObject(o, "confusion", cm);
        char *txt = cJSON_PrintUnformatted(o);
        if (txt)
            puts(txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        printf("accuracy: %.4f (%zu %s)\n", acc, n, what);
        printf("confusion matrix (rows: true class, columns: predicted):\n%12s", "");
        /* Class names are cut to the column by character, not by byte. */
        for (int j = 0; j < k; j++) {
            putchar(' ');
            cli_cell(names[j], 7, 0);
        }
        putchar('\n');
        for (int i = 0; i < k; i++) {
            cli_cell(names[i], 12, 0);
            for (int j = 0; j < k; j++)
                printf(" %7zu", conf[(size_t)i * k + j]);
            putchar('\n');
        }
    }
}

typedef struct seq_opts {
    int pad_left;
    long max_length, streams, seq_len; /* seq_len 0: the model's */
} seq_opts;

/* A sequence classifier on a sequence folder, classes matched by name. */
static int eval_seq(dpt_net *net, const char *model, const char *data, const seq_opts *o, int json)
{
    int rc = 1, k = dpt_net_n_outputs(net);
    cJSON *classes = NULL;
    dpt_seqstore *ds = NULL;
    size_t *conf = NULL;
    const char **names = NULL;
    double acc;
    if (dpt_net_output_is_sequence(net)) {
        cli_error("%s: the network gives an output per time step, not one per sequence; eval "
                  "classifies sequences (lstm or gru output=last) or scores a language model "
                  "on a text file",
                  model);
        goto done;
    }
    if (cli_model_classes(net, model, &classes))
        goto done;
    struct stat st;
    if (stat(data, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cli_error("%s: not a folder (a sequence classifier is evaluated on a folder of class "
                  "sub-folders of .csv files)",
                  data);
        goto done;
    }
    dpt_seq_options so = DPT_SEQ_OPTIONS_INIT;
    so.max_length = o->max_length;
    names = malloc((size_t)k * sizeof *names);
    conf = calloc((size_t)k * k, sizeof *conf);
    if (!names || !conf) {
        cli_error("out of memory");
        goto done;
    }
    for (int i = 0; i < k; i++)
        names[i] = cJSON_GetArrayItem(classes, i)->valuestring;
    if (dpt_seqstore_open(data, &so, &ds) != DPT_OK ||
        dpt_seqstore_match_classes(ds, data, k, names) != DPT_OK ||
        dpt_evaluate_seq(net, ds, o->pad_left, &acc, conf) != DPT_OK) {
        cli_lib_error();
        goto done;
    }
    print_accuracy(acc, dpt_seqstore_n_obs(ds), "sequences", k, names, conf, json);
    rc = 0;
done:
    free(names);
    free(conf);
    dpt_seqstore_free(ds);
    cJSON_Delete(classes);
    return rc;
}

/* A language model on a text file: bits per character over streams read
 * in chunks with the state carried (dpt_evaluate_text). */
static int eval_text(dpt_net *net, const char *model, const char *data, const seq_opts *o,
                     int json)
{
    int rc = 1;
    dpt_text *vocab = NULL, *t = NULL;
    long T = o->seq_len;
    if (cli_model_vocab(net, model, "eval", &vocab))
        goto done;
    if (!T && cli_model_seq_len(net, model, &T))
        goto done;
    struct stat st;
    if (stat(data, &st) == 0 && S_ISDIR(st.st_mode)) {
        cli_error("%s: a folder; a language model is evaluated on a text file", data);
        goto done;
    }
    dpt_text_options to = DPT_TEXT_OPTIONS_INIT;
    to.vocab = vocab;
    if (dpt_text_open(data, &to, &t, NULL) != DPT_OK) {
        cli_lib_error();
        goto done;
    }
    /* A text too short for the streams asked for is read as fewer (as the
     * trainer scores a short held-out text), then in one shorter chunk. */
    int streams = (int)o->streams;
    while (streams > 1 && dpt_text_n_chunks(t, streams, (int)T) < 1)
        streams--;
    if (dpt_text_n_chunks(t, streams, (int)T) < 1) {
        if (dpt_text_n_chars(t) < 2) {
            cli_error("%s: %zu character(s): nothing to score (a character is scored by the "
                      "one before it)",
                      data, dpt_text_n_chars(t));
            goto done;
        }
        T = (long)dpt_text_n_chars(t) - 1;
    }
    double bpc;
    if (dpt_evaluate_text(net, t, streams, (int)T, &bpc) != DPT_OK) {
        cli_lib_error();
        goto done;
    }
    size_t nk = dpt_text_n_chunks(t, streams, (int)T), scored = nk * (size_t)T * (size_t)streams;
    if (json) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "bits_per_character", bpc);
        cJSON_AddNumberToObject(r, "perplexity", pow(2.0, bpc));
        cJSON_AddNumberToObject(r, "characters", (double)dpt_text_n_chars(t));
        cJSON_AddNumberToObject(r, "scored", (double)scored);
        cJSON_AddNumberToObject(r, "streams", streams);
        cJSON_AddNumberToObject(r, "seq_len", (double)T);
        cJSON_AddNumberToObject(r, "vocabulary", dpt_text_n_vocab(vocab));
        char *txt = cJSON_PrintUnformatted(r);
        if (txt)
            puts(txt);
        free(txt);
        cJSON_Delete(r);
    } else {
        printf("bits per character: %.4f\nperplexity: %.4f\n", bpc, pow(2.0, bpc));
        printf("(%zu of %zu characters scored: %d streams read in chunks of %ld)\n", scored,
               dpt_text_n_chars(t), streams, T);
    }
    rc = 0;
done:
    dpt_text_free(t);
    dpt_text_free(vocab);
    return rc;
}

int cli_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"labels", required_argument, 0, 'l'}, {"json", no_argument, 0, 'j'},
        {"batch", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
        {"sequence-padding", required_argument, 0, 'P'},
        {"max-length", required_argument, 0, 'L'}, {"streams", required_argument, 0, 'S'},
        {"seq-len", required_argument, 0, 'T'},  {0, 0, 0, 0},
    };
    const char *model = NULL, *data = NULL, *labels = NULL;
    int json = 0, c;
    long batch = 256;
    seq_opts so = {0, 0, 64, 0};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case 'l': labels = optarg; break;
        case 'j': json = 1; break;
        case 'b':
            if (cli_int("--batch", optarg, 1, 1 << 16, &batch))
                return 1;
            break;
        case 'P':
            if (strcmp(optarg, "left") && strcmp(optarg, "right"))
                return cli_error("--sequence-padding: '%s' is not left or right", optarg);
            so.pad_left = !strcmp(optarg, "left");
            break;
        case 'L':
            if (cli_int("--max-length", optarg, 0, DPT_SEQ_MAX_STEPS, &so.max_length))
                return 1;
            break;
        case 'S':
            if (cli_int("--streams", optarg, 1, 1 << 16, &so.streams))
                return 1;
            break;
        case 'T':
            if (cli_int("--seq-len", optarg, 1, 65536, &so.seq_len))
                return 1;
            break;
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("eval: unknown or incomplete option '%s' (see dptrain eval --help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_error("eval: unexpected argument '%s'", argv[optind]);
    if (!model || !data)
        return cli_error("eval: --model FILE and --data PATH are required");

    int rc = 1;
    dpt_net *net = NULL;
    dpt_datastore *ds = NULL;
    cJSON *classes = NULL;
    size_t *conf = NULL;
    if (dpt_net_load(model, (int)batch, &net) != DPT_OK)
        goto fail;
    struct stat st;
    if (stat(data, &st) != 0) {
        cli_error("%s: %s", data, strerror(errno));
        goto done;
    }
    if (dpt_net_is_sequence(net)) {
        /* A language model by its metadata, or by its shape when given a
         * text (then eval_text says what the metadata lacks). */
        const char *task = dpt_net_meta(net, "task");
        int lm = (task && !strcmp(task, "language_model")) ||
                 (dpt_net_output_is_sequence(net) && !S_ISDIR(st.st_mode));
        rc = lm ? eval_text(net, model, data, &so, json) : eval_seq(net, model, data, &so, json);
        goto done;
    }
    if (cli_model_classes(net, model, &classes))
        goto done;
    if (S_ISDIR(st.st_mode)) {
        dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
        if (dpt_datastore_open_folder(data, &o, &ds) != DPT_OK)
            goto fail;
    } else if (dpt_datastore_open_idx(data, labels, &ds) != DPT_OK) {
        goto fail;
    }
    /* Labels by class name: the data's "cat" is the model's "cat" wherever
     * each has it; a class the model does not know is an error. */
    int k = dpt_net_n_outputs(net);
    const char **names = calloc((size_t)k, sizeof *names);
    if (!names) {
        cli_error("out of memory");
        goto done;
    }
    for (int i = 0; i < k; i++)
        names[i] = cJSON_GetArrayItem(classes, i)->valuestring;
    dpt_datastore *matched = NULL;
    dpt_status ms = dpt_datastore_match_classes(ds, data, k, names, &matched);
    free(names);
    if (ms != DPT_OK)
        goto fail;
    dpt_datastore_free(ds);
    ds = matched;
    conf = calloc((size_t)k * k, sizeof *conf);
    double acc;
    if (!conf || dpt_evaluate(net, ds, &acc, conf) != DPT_OK)
        goto fail;
    {
        const char **nm = malloc((size_t)k * sizeof *nm);
        if (!nm) {
            cli_error("out of memory");
            goto done;
        }
        for (int i = 0; i < k; i++)
            nm[i] = dpt_datastore_class_name(ds, i);
        print_accuracy(acc, dpt_datastore_n_obs(ds), "images", k, nm, conf, json);
        free(nm);
    }
    rc = 0;
    goto done;
fail:
    rc = cli_lib_error();
done:
    free(conf);
    cJSON_Delete(classes);
    dpt_datastore_free(ds);
    dpt_net_free(net);
    return rc;
}
