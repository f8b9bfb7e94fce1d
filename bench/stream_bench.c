/* The data pipeline alone, as dptrain train runs it on an image folder,
 * without training: open the folder (--cache memory decodes every image
 * here; none lists the files), then minibatch queues over shuffled epochs
 * with the given decode threads, output resized to the network's input.
 * Public API only (links against libdptrain.so): the half of bench/stream.sh
 * that is not dptrain train.
 *
 *   stream_bench FOLDER [--cache memory|none] [--threads T] [--batch B]
 *                [--size S] [--epochs E] [--batches K]
 *
 * --batches K stops after K batches (0, the default: every batch of every
 * epoch), so a large folder's steady rate needs no whole epoch.
 * Prints: open time, time to the first batch after open (and from the
 * start), images/s after the first batch (the steady rate), and peak RSS
 * (getrusage), as one line of key=value pairs. */
#include "dptrain/dptrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stream_bench FOLDER [--cache memory|none] [--threads T] [--batch B] "
                        "[--size S] [--epochs E] [--batches K]\n");
        return 2;
    }
    const char *folder = argv[1], *cache = "none";
    int threads = 0, batch = 128, size = 32, epochs = 1;
    long max_batches = 0, done = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cache"))
            cache = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size"))
            size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--epochs"))
            epochs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batches"))
            max_batches = atol(argv[i + 1]);
        else {
            fprintf(stderr, "stream_bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    double t0 = now_s();
    dpt_folder_options fo = DPT_FOLDER_OPTIONS_INIT;
    fo.preload = !strcmp(cache, "memory");
    dpt_datastore *ds = NULL;
    if (dpt_datastore_open_folder(folder, &fo, &ds)) {
        fprintf(stderr, "stream_bench: %s\n", dpt_last_error());
        return 1;
    }
    double t_open = now_s() - t0, t_first = 0, t_rest = 0;
    size_t n_rest = 0;
    int rc = 0;
    for (int e = 0; e < epochs && !rc; e++) {
        dpt_datastore *sh = NULL;
        dpt_mbq *q = NULL;
        dpt_mbq_options o = DPT_MBQ_OPTIONS_INIT;
        o.batch_size = batch;
        o.channels = 3, o.height = o.width = size;
        o.decode_threads = threads;
        double ts = now_s();
        if (dpt_datastore_shuffle(ds, (uint64_t)e, &sh) || dpt_mbq_new(sh, &o, &q)) {
            fprintf(stderr, "stream_bench: %s\n", dpt_last_error());
            dpt_datastore_free(sh);
            rc = 1;
            break;
        }
        for (int b = 0; dpt_mbq_has_data(q) && !(max_batches && done >= max_batches); b++, done++) {
            dpt_batch bt;
            if (dpt_mbq_next(q, &bt)) {
                fprintf(stderr, "stream_bench: %s\n", dpt_last_error());
                rc = 1;
                break;
            }
            double t = now_s();
            if (e == 0 && b == 0)
                t_first = t - ts;
            else
                n_rest += (size_t)bt.n;
            if (e == 0 && b == 0)
                ts = t; /* the steady rate starts after the first batch */
        }
        t_rest += now_s() - ts;
        dpt_mbq_free(q);
        dpt_datastore_free(sh);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (!rc)
        printf("cache=%s images=%zu threads=%d batch=%d size=%d open_s=%.3f first_batch_s=%.4f "
               "first_from_start_s=%.3f steady_images_per_s=%.0f peak_rss_mb=%.1f\n",
               cache, dpt_datastore_n_obs(ds), threads ? threads : dpt_mbq_auto_threads(), batch,
               size, t_open, t_first, t_open + t_first, (double)n_rest / t_rest,
               (double)ru.ru_maxrss / 1024.0);
    dpt_datastore_free(ds);
    return rc;
}
