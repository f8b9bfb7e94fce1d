/* dptrain export: a trained model as an ONNX file (dpt_net_export_onnx). */
#include "cli/cli.h"
#include "dptrain/net.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: dptrain export --model FILE --onnx OUT.onnx [--opset N]\n"
    "\n"
    "Write a model as an ONNX file for inference (ONNX Runtime and other tools):\n"
    "standard operators, batch dimension dynamic, batch norm with its running\n"
    "statistics, dropout as the identity. The input is what dptrain feeds the\n"
    "network: float32 NCHW with pixels scaled to [0, 1] (no other normalisation),\n"
    "or [N, T, F] for a sequence network; the class names and this description are\n"
    "in the file's metadata (docs/onnx.md). A layer without an ONNX form is an\n"
    "error naming it, and nothing is written.\n"
    "  --model FILE    model.safetensors written by dptrain train\n"
    "  --onnx FILE     the ONNX file to write (replaced atomically)\n"
    "  --opset N       ONNX operator set, 13 to 17 (default 17)\n"
    "  -h, --help      this help\n";

int cli_export(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"onnx", required_argument, 0, 'o'},
                                         {"opset", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL;
    long opset = 17;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 's':
            if (cli_int("--opset", optarg, 13, 17, &opset))
                return 1;
            break;
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("export: unknown or incomplete option '%s' (see dptrain export "
                             "--help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_error("export: unexpected argument '%s'", argv[optind]);
    if (!model)
        return cli_error("export: --model FILE is required");
    if (!out)
        return cli_error("export: --onnx FILE is required");
    dpt_net *net = NULL;
    int rc = 1;
    if (dpt_net_load(model, 1, &net) != DPT_OK) {
        cli_lib_error();
        goto done;
    }
    const char *task = dpt_net_meta(net, "task");
    dpt_kv meta[1];
    size_t n_meta = 0;
    if (task)
        meta[n_meta++] = (dpt_kv){"task", task};
    if (dpt_net_export_onnx(net, out, (int)opset, meta, n_meta) != DPT_OK) {
        cli_error("%s: %s", model, dpt_last_error());
        goto done;
    }
    char name[4096];
    printf("wrote %s (ONNX opset %ld, %d layers)\n", cli_clean(name, sizeof name, out), opset,
           dpt_net_n_layers(net));
    rc = 0;
done:
    dpt_net_free(net);
    return rc;
}
