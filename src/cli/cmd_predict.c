/* dptrain predict: label and score of image files, or of .csv sequences for
 * a sequence classifier. */
#include "cli/cli.h"
#include "dptrain/data.h"
#include "dptrain/net.h"

#include <cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_model_classes(const dpt_net *net, const char *path, cJSON **out); /* cmd_eval.c */

static const char help[] =
    "usage: dptrain predict --model FILE IMAGE...|SEQUENCE.csv...\n"
    "\n"
    "Print the predicted label and its score (softmax probability) for each image,\n"
    "or for each sequence (a .csv file, one time step per line) with a sequence\n"
    "classifier: one line per file, FILE<tab>LABEL<tab>SCORE.\n"
    "  --model FILE    model.safetensors written by dptrain train\n"
    "  -h, --help      this help\n";

/* One line per .csv file, as for images; every file is read and checked
 * (its width against the network's features) before anything is printed. */
static int predict_sequences(dpt_net *net, const char *model, char **files, int n_files)
{
    const char *task = dpt_net_meta(net, "task");
    if (task && !strcmp(task, "language_model"))
        return cli_error("%s: a language model predicts characters, not classes (dptrain "
                         "generate samples text from it)",
                         model);
    cJSON *classes = NULL;
    if (cli_model_classes(net, model, &classes))
        return 1;
    int chw[3], k = dpt_net_n_outputs(net), per_step = dpt_net_output_is_sequence(net), rc = 1;
    dpt_net_input_shape(net, chw);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n_files; i++) {
            size_t steps;
            int f;
            float *x = NULL;
            const float *y;
            char file[4096], name[1024];
            if (dpt_seq_load(files[i], 0, &steps, &f, &x) != DPT_OK) {
                cli_lib_error();
                goto done;
            }
            if (f != chw[0]) {
                free(x);
                cli_error("%s: %d features per time step, but the model %s takes %d",
                          cli_clean(file, sizeof file, files[i]), f, model, chw[0]);
                goto done;
            }
            if (pass == 0 || steps > INT_MAX) {
                free(x);
                if (pass == 0)
                    continue;
                cli_error("%s: too many time steps", files[i]);
                goto done;
            }
            dpt_status st = dpt_net_set_steps(net, (int)steps, NULL, 1, 0);
            if (!st)
                st = dpt_net_forward(net, x, 1, DPT_MODE_PREDICT, &y);
            free(x);
            if (st) {
                cli_lib_error();
                goto done;
            }
            /* A network with an output per time step: the last step's,
             * which has seen the whole sequence. */
            if (per_step)
                y += (steps - 1) * (size_t)k;
            int best;
            dpt_argmax_rows(y, 1, k, &best);
            printf("%s\t%s\t%.4f\n", cli_clean(file, sizeof file, files[i]),
                   cli_clean(name, sizeof name, cJSON_GetArrayItem(classes, best)->valuestring),
                   (double)y[best]);
        }
    }
    rc = 0;
done:
    cJSON_Delete(classes);
    return rc;
}

int cli_predict(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("predict: unknown or incomplete option '%s' (see dptrain predict "
                             "--help)", argv[optind - 1]);
        }
    }
    if (!model)
        return cli_error("predict: --model FILE is required");
    if (optind >= argc)
        return cli_error("predict: no image or sequence files given");
    dpt_net *net = NULL;
    cJSON *classes = NULL;
    float *x = NULL;
    int rc = 1;
    if (dpt_net_load(model, 1, &net) != DPT_OK) {
        rc = cli_lib_error();
        goto done;
    }
    if (dpt_net_is_sequence(net)) {
        rc = predict_sequences(net, model, argv + optind, argc - optind);
        goto done;
    }
    if (cli_model_classes(net, model, &classes))
        goto done;
    int chw[3];
    dpt_net_input_shape(net, chw);
    x = malloc((size_t)chw[0] * chw[1] * chw[2] * sizeof *x);
    if (!x)
        goto done;
    int k = dpt_net_n_outputs(net);
    /* Decode every image before printing, so a bad file fails the whole
     * command before any output. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = optind; i < argc; i++) {
            const float *y;
            if (dpt_image_load(argv[i], chw[0], chw[1], chw[2], x) != DPT_OK) {
                rc = cli_lib_error();
                goto done;
            }
            if (pass == 0)
                continue;
            if (dpt_net_forward(net, x, 1, DPT_MODE_PREDICT, &y) != DPT_OK) {
                rc = cli_lib_error();
                goto done;
            }
            int best;
            dpt_argmax_rows(y, 1, k, &best);
            /* One line per image: a newline or tab in a file or class name
             * must not make two. */
            char file[4096], name[1024];
            printf("%s\t%s\t%.4f\n", cli_clean(file, sizeof file, argv[i]),
                   cli_clean(name, sizeof name, cJSON_GetArrayItem(classes, best)->valuestring),
                   (double)y[best]);
        }
    }
    rc = 0;
done:
    free(x);
    cJSON_Delete(classes);
    dpt_net_free(net);
    return rc;
}
