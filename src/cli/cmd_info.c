/* dptrain info: the default spec, a network's layers and tables. */
#include "cli/cli.h"
#include "dptrain/gpu.h"
#include "dptrain/net.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: dptrain info [--spec] [--net SPEC] [--classes N] [--model FILE]\n"
    "                    [--plan [--batch N]]\n"
    "\n"
    "Without options: the default network (the MATLAB example's) for 10 classes.\n"
    "  --spec          print the default network spec text (start a new network from it)\n"
    "  --net SPEC      show the network of this spec file: layers, output shapes,\n"
    "                  learnables and state tables with sizes\n"
    "  --classes N     classes for a spec that says outputs=classes, or the vocabulary\n"
    "                  size for size=vocab and outputs=vocab (default: 10)\n"
    "  --model FILE    show a saved model: network, tables, training metadata\n"
    "  --plan          also plan the network's kernels as training does and show,\n"
    "                  per convolution layer, the shape, each algorithm's time for\n"
    "                  one forward + backward (ms; \"unsupported\" where it cannot run\n"
    "                  the shape, \"n/a\" where not timed), the one chosen and where\n"
    "                  the choice came from: measured (timed now, written to the\n"
    "                  plan cache), cache, forced (DPT_CONV_ALGO=<name>), heuristic\n"
    "                  (not timed: the reason follows) or only (one candidate).\n"
    "                  DPT_CONV_ALGO=heuristic|measure|<name> and DPT_PLAN_CACHE=FILE\n"
    "                  change how it is planned (docs/kernels.md)\n"
    "  --batch N       the minibatch per worker to plan for (default: 128)\n"
    "  -h, --help      this help\n";

static void print_shape(const dpt_param_info *e)
{
    char buf[64];
    int k = 0;
    for (int d = 0; d < e->ndim; d++)
        k += snprintf(buf + k, sizeof buf - (size_t)k, d ? "x%d" : "%d", e->shape[d]);
    char name[256];
    printf("  %-22s %-14s %9zu\n", cli_clean(name, sizeof name, e->name), buf, e->n);
}

/* Print layers and tables of a network (shared with info --model). */
void cli_print_net(const dpt_net *net)
{
    printf("layers (%d):\n", dpt_net_n_layers(net));
    for (int i = 0; i < dpt_net_n_layers(net); i++) {
        int chw[3];
        dpt_net_layer_shape(net, i, chw);
        char name[256];
        printf("  %2d  %-10s %-10s ", i + 1, cli_clean(name, sizeof name, dpt_net_layer_name(net, i)),
               dpt_net_layer_type(net, i));
        /* A sequence network's values are features per time step, or one
         * vector per sequence after lstm/gru output=last. */
        if (dpt_net_layer_is_sequence(net, i))
            printf("output %d per time step", chw[0]);
        else if (dpt_net_is_sequence(net))
            printf("output %d per sequence", chw[0]);
        else
            printf("output %dx%dx%d (HxWxC)", chw[1], chw[2], chw[0]);
        /* Its inputs (the graph): the layer above, or what from= named. */
        for (int k = 0; k < dpt_net_layer_n_inputs(net, i); k++)
            printf("%s%s", k ? "," : "  from ",
                   cli_clean(name, sizeof name,
                             dpt_net_layer_name(net, dpt_net_layer_input(net, i, k))));
        putchar('\n');
    }
    printf("learnables (%zu tensors, %zu parameters):\n", dpt_net_n_learnables(net),
           dpt_net_n_params(net));
    for (size_t i = 0; i < dpt_net_n_learnables(net); i++)
        print_shape(dpt_net_learnable(net, i));
    printf("state (%zu tensors, %zu values):\n", dpt_net_n_state(net), dpt_net_n_state_floats(net));
    for (size_t i = 0; i < dpt_net_n_state(net); i++)
        print_shape(dpt_net_state_info(net, i));
}

/* Each planned layer's kernel choice (dptrain info --plan, step_bench). */
static void print_plan(const dpt_net *net)
{
    int any = 0;
    for (int i = 0; i < dpt_net_n_layers(net); i++) {
        dpt_layer_plan p;
        if (!dpt_net_layer_plan(net, i, &p))
            continue;
        char name[256];
        if (!any++)
            printf("plan (batch %d; ms: one forward + backward of the batch, timed or estimated "
                   "from runs of fewer images):\n", p.batch);
        printf("  %-10s %s\n", cli_clean(name, sizeof name, dpt_net_layer_name(net, i)), p.shape);
        printf("    ");
        for (int k = 0; k < p.n_candidates; k++) {
            if (p.candidates[k].ms >= 0)
                printf(" %s %.3f ms", p.candidates[k].name, p.candidates[k].ms);
            else
                printf(" %s %s", p.candidates[k].name,
                       p.candidates[k].ms == -1 ? "unsupported" : "n/a");
            putchar(k + 1 < p.n_candidates ? ',' : '\n');
        }
        printf("     -> %s (%s", p.algo, p.source);
        if (p.measure_batch)
            printf(", %d image%s timed%s", p.measure_batch, p.measure_batch == 1 ? "" : "s",
                   p.measure_batch < p.batch ? ", the batch's ms estimated" : "");
        printf(")\n");
        if (p.note[0])
            printf("     note: %s\n", cli_clean(name, sizeof name, p.note));
    }
    if (!any)
        printf("plan: no layer with a choice of kernels\n");
}

int cli_model_info(const char *path); /* cmd_eval.c */

int cli_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"spec", no_argument, 0, 's'},       {"net", required_argument, 0, 'n'},
        {"classes", required_argument, 0, 'c'}, {"model", required_argument, 0, 'm'},
        {"plan", no_argument, 0, 'p'},       {"batch", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0},
    };
    int show_spec = 0, plan = 0;
    long batch = 0;
    const char *spec_path = NULL, *model = NULL;
    long classes = 10;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': show_spec = 1; break;
        case 'n': spec_path = optarg; break;
        case 'm': model = optarg; break;
        case 'c':
            if (cli_int("--classes", optarg, 1, 1000000, &classes))
                return 1;
            break;
        case 'p': plan = 1; break;
        case 'b':
            if (cli_int("--batch", optarg, 1, 65536, &batch))
                return 1;
            break;
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("info: unknown or incomplete option '%s' (see dptrain info --help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_error("info: unexpected argument '%s'", argv[optind]);
    if (batch && !plan)
        return cli_error("info: --batch goes with --plan");
    if (plan && (show_spec || model))
        return cli_error("info: --plan goes with --net SPEC (or the default network)");
    /* Without --plan the network is built for one observation, which plans
     * nothing (nothing worth timing at a batch of one). */
    int max_batch = plan ? (batch ? (int)batch : 128) : 1;
    /* As training plans by default: one worker per core, each with a BLAS
     * of one thread (so the planner times on the thread's CPU clock). */
    if (plan)
        dpt_blas_set_threads(1);
    if (show_spec) {
        fputs(dpt_net_default_spec(), stdout);
        return 0;
    }
    if (model)
        return cli_model_info(model);
    dpt_net *net = NULL;
    dpt_status s = spec_path
                       ? dpt_net_from_spec_file(spec_path, (int)classes, max_batch, 0, &net)
                       : dpt_net_from_spec(dpt_net_default_spec(), "<default spec>",
                                           (int)classes, max_batch, 0, &net);
    if (s != DPT_OK)
        return cli_lib_error();
    char clean[4096];
    printf("network: %s\n", spec_path ? cli_clean(clean, sizeof clean, spec_path)
                                      : "default (MATLAB example), 10 classes");
    cli_print_net(net);
    if (plan)
        print_plan(net);
    dpt_net_free(net);
    printf("devices: %d CPU cores", dpt_cpu_count());
    int n_gpus = dpt_gpu_count();
    if (!dpt_gpu_have_cuda())
        printf("; GPUs: none (built without CUDA)\n");
    else
        printf("; GPUs: %d%s\n", n_gpus, n_gpus ? "" : " (CUDA build, no device found)");
    for (int i = 0; i < n_gpus; i++) {
        dpt_gpu_info g;
        if (dpt_gpu_query(i, &g) == DPT_OK)
            printf("  gpu %d: %s, %.1f GiB, compute capability %d.%d\n", i, g.name,
                   g.memory_bytes / 1073741824.0, g.cc_major, g.cc_minor);
    }
    return 0;
}
