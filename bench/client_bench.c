/* Issue 5's figures: the cost of the progress queue with the CLI's client
 * (metrics.csv, loss.svg, terminal line) per iteration, as the ratio of
 * training time with and without it, side by side; and the size and write
 * time of a checkpoint of the example network.
 *
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/client_bench.c \
 *      src/cli/report.c -Lbuild -ldptrain -Wl,-rpath,$PWD/build -lm -o client_bench
 *   ./client_bench DATA_FOLDER OUT_DIR [rounds] */
#include "cli/report.h"
#include "dptrain/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: client_bench DATA_FOLDER OUT_DIR [rounds]\n");
        return 1;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    mkdir(argv[2], 0777);
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = 1;
    dpt_datastore *ds = NULL;
    if (dpt_datastore_open_folder(argv[1], &fo, &ds) != DPT_OK) {
        fprintf(stderr, "%s\n", dpt_last_error());
        return 1;
    }
    double with[32], without[32];
    for (int r = 0; r < rounds && r < 32; r++) {
        for (int k = 0; k < 2; k++) { /* alternate: without, with */
            static report rep;
            memset(&rep, 0, sizeof rep);
            rep.quiet = 1;
            snprintf(rep.csv_path, sizeof rep.csv_path, "%s/metrics.csv", argv[2]);
            snprintf(rep.svg_path, sizeof rep.svg_path, "%s/loss.svg", argv[2]);
            snprintf(rep.png_path, sizeof rep.png_path, "%s/loss.png", argv[2]);
            dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
            cfg.train = ds;
            cfg.epochs = 2;
            cfg.batch = 128;
            cfg.spmd.backend = DPT_COMM_LOCAL;
            cfg.spmd.n_workers = 1;
            if (k) {
                cfg.progress = report_progress;
                cfg.progress_arg = &rep;
            }
            dpt_fit_result res;
            if (dpt_fit(&cfg, &res) != DPT_OK) {
                fprintf(stderr, "%s\n", dpt_last_error());
                return 1;
            }
            if (k)
                report_finish(&rep);
            (k ? with : without)[r] = res.train_seconds / (double)res.iterations;
        }
    }
    qsort(with, (size_t)rounds, sizeof *with, cmp);
    qsort(without, (size_t)rounds, sizeof *without, cmp);
    double mw = with[rounds / 2], mo = without[rounds / 2];
    printf("per iteration: %.3f ms with progress queue + metrics.csv + loss.svg/png, %.3f ms without; "
           "ratio %.4f (median of %d alternating rounds)\n", 1e3 * mw, 1e3 * mo, mw / mo, rounds);

    /* Checkpoint of the example network: size and atomic write time (fsync). */
    dpt_net *net = NULL;
    dpt_sgdm *opt = NULL;
    dpt_net_from_spec(dpt_net_default_spec(), "<default>", 10, 1, 0, &net);
    dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0, &opt);
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", argv[2]);
    dpt_checkpoint_info info = {1, 0, 0, 0, 1, 0, 0, 0};
    double t[21];
    for (int i = 0; i < 21; i++) {
        double t0 = now_s();
        if (dpt_checkpoint_save(path, net, opt, &info, NULL, 0) != DPT_OK) {
            fprintf(stderr, "%s\n", dpt_last_error());
            return 1;
        }
        t[i] = now_s() - t0;
    }
    qsort(t, 21, sizeof *t, cmp);
    struct stat st;
    stat(path, &st);
    printf("checkpoint: %lld bytes, write (temporary file, fsync, rename) median %.2f ms of 21\n",
           (long long)st.st_size, 1e3 * t[10]);
    dpt_sgdm_free(opt);
    dpt_net_free(net);
    dpt_datastore_free(ds);
    return 0;
}
