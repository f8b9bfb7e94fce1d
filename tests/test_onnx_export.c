/* dpt_net_export_onnx's contract without outside tools (tests/test_onnx.sh
 * checks the files with onnx's checker and ONNX Runtime): a file is
 * written for the example network; bad arguments fail; a layer the
 * exporter has no ONNX form for fails naming it and leaves an earlier file
 * untouched, with no temporary file behind; an unwritable path fails
 * naming it. Skips in a build without ONNX support, after checking that
 * the call says so. */
#include "net/net_impl.h"
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long file_bytes(const char *path, unsigned char *head, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t got = fread(head, 1, cap, f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return got ? n : 0;
}

/* Files in dir other than . and .. */
static int n_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/dpt_onnx_XXXXXX", path[256], bad[300];
    if (!mkdtemp(dir))
        return perror("mkdtemp"), 1;
    snprintf(path, sizeof path, "%s/net.onnx", dir);
    dpt_net *net = NULL;
    if (dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 4, 1, &net) != DPT_OK) {
        fprintf(stderr, "build: %s\n", dpt_last_error());
        return 1;
    }
    dpt_kv meta[2] = {{"classes", "[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]"},
                      {"author", "test"}};
    dpt_status s = dpt_net_export_onnx(net, path, 17, meta, 2);
    if (s == DPT_ERR_UNSUPPORTED && strstr(dpt_last_error(), "without ONNX support")) {
        printf("skip: built without ONNX support (%s)\n", dpt_last_error());
        dpt_net_free(net);
        rmdir(dir);
        return TU_SKIP;
    }
    CHECK_MSG(s == DPT_OK, "%s", dpt_last_error());
    unsigned char head[4096];
    long n = file_bytes(path, head, sizeof head);
    /* ModelProto field 1 (ir_version, varint) = 8 comes first. */
    CHECK_MSG(n > 100000 && head[0] == 0x08 && head[1] == 8, "%ld bytes, %02x %02x", n, head[0],
              head[1]);
    CHECK(n_entries(dir) == 1);

    /* Arguments. */
    CHECK(dpt_net_export_onnx(net, path, 12, NULL, 0) == DPT_ERR_ARG &&
          strstr(dpt_last_error(), "opset 12"));
    CHECK(dpt_net_export_onnx(net, path, 18, NULL, 0) == DPT_ERR_ARG);
    dpt_kv reserved[1] = {{"dptrain.spec", "x"}}, twice[2] = {{"a", "1"}, {"a", "2"}};
    CHECK(dpt_net_export_onnx(net, path, 13, reserved, 1) == DPT_ERR_ARG &&
          strstr(dpt_last_error(), "reserved"));
    CHECK(dpt_net_export_onnx(net, path, 13, twice, 2) == DPT_ERR_ARG &&
          strstr(dpt_last_error(), "given twice"));
    CHECK(dpt_net_export_onnx(NULL, path, 13, NULL, 0) == DPT_ERR_ARG);
    CHECK(file_bytes(path, head, sizeof head) == n); /* untouched by the refusals */

    /* A layer type the exporter does not know: bn2 disguised as one. */
    int bn2 = -1;
    for (int i = 0; i < net->n_layers; i++)
        if (!strcmp(net->layers[i].name, "bn2"))
            bn2 = i;
    CHECK(bn2 > 0);
    if (bn2 > 0) {
        const layer_type *real = net->layers[bn2].type;
        layer_type fake = *real;
        fake.name = "mystery";
        net->layers[bn2].type = &fake;
        s = dpt_net_export_onnx(net, path, 17, NULL, 0);
        net->layers[bn2].type = real;
        CHECK_MSG(s == DPT_ERR_UNSUPPORTED && strstr(dpt_last_error(), "layer 'bn2' (mystery)"),
                  "status %d: %s", (int)s, dpt_last_error());
        CHECK(file_bytes(path, head, sizeof head) == n); /* the earlier file stays */
        CHECK(n_entries(dir) == 1);                     /* no temporary file left */
    }

    /* A folder that does not exist. */
    snprintf(bad, sizeof bad, "%s/no/such/net.onnx", dir);
    CHECK(dpt_net_export_onnx(net, bad, 17, NULL, 0) == DPT_ERR_IO &&
          strstr(dpt_last_error(), bad));

    /* Opset 13 is written as asked: the same graph, another opset_import. */
    CHECK(dpt_net_export_onnx(net, path, 13, NULL, 0) == DPT_OK);
    CHECK(n_entries(dir) == 1);

    dpt_net_free(net);
    unlink(path);
    rmdir(dir);
    return tu_exit();
}
