/* dptrain eval and info --model: load a model and report on it. */
#include "cli/cli.h"
#include "dptrain/train.h"

#include <cJSON.h>
#include <errno.h>
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
    "  --model FILE    model.safetensors written by dptrain train\n"
    "  --data PATH     image folder (one sub-folder per class) or IDX images file;\n"
    "                  classes matched to the model's by name (IDX: \"0\", \"1\", ...)\n"
    "  --labels FILE   IDX labels file (default: found beside the images file)\n"
    "  --batch N       observations per forward pass (default 256)\n"
    "  --json          print one JSON object: accuracy, n, per-class counts, confusion\n"
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
    static const char *const keys[] = {"format", "classes", "epoch", "iteration", "workers"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = dpt_net_meta(net, keys[i]);
        if (v)
            printf("  %-10s %s\n", keys[i], cli_clean(buf, sizeof buf, v));
    }
    cli_print_net(net);
    dpt_net_free(net);
    return 0;
}

int cli_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"labels", required_argument, 0, 'l'}, {"json", no_argument, 0, 'j'},
        {"batch", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *data = NULL, *labels = NULL;
    int json = 0, c;
    long batch = 256;
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
    if (cli_model_classes(net, model, &classes))
        goto done;
    struct stat st;
    if (stat(data, &st) != 0) {
        cli_error("%s: %s", data, strerror(errno));
        goto done;
    }
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
    size_t n = dpt_datastore_n_obs(ds);
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
            cJSON_AddItemToObject(per, cli_clean(key, sizeof key, dpt_datastore_class_name(ds, i)), pc);
        }
        cJSON_AddItemToObject(o, "confusion", cm);
        char *txt = cJSON_PrintUnformatted(o);
        if (txt)
            puts(txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        printf("accuracy: %.4f (%zu images)\n", acc, n);
        printf("confusion matrix (rows: true class, columns: predicted):\n%12s", "");
        /* Class names are cut to the column by character, not by byte. */
        for (int j = 0; j < k; j++) {
            putchar(' ');
            cli_cell(dpt_datastore_class_name(ds, j), 7, 0);
        }
        putchar('\n');
        for (int i = 0; i < k; i++) {
            cli_cell(dpt_datastore_class_name(ds, i), 12, 0);
            for (int j = 0; j < k; j++)
                printf(" %7zu", conf[(size_t)i * k + j]);
            putchar('\n');
        }
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
