/* metrics.csv across a resume (src/cli/report.c, the progress callback of
 * `dptrain train`): the resumed run keeps the earlier run's rows before the
 * checkpoint and goes on as one run's history. The case that once lost a
 * row: a run stopped right after an epoch's last iteration (checkpointed
 * there, before the epoch's end), whose resumed run starts with that
 * epoch's end-of-epoch record. The records are fed here as dpt_fit sends
 * them, so the test does not depend on when a signal lands. */
#include "cli/report.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dpt_progress rec(int epoch, long it, int eoe, double acc)
{
    dpt_progress p;
    memset(&p, 0, sizeof p);
    p.epoch = epoch, p.epochs = 3, p.iteration = it, p.iterations_per_epoch = 2;
    p.loss = 1.0 / (double)it, p.elapsed_s = 0.5 * (double)it, p.images_per_s = 100;
    p.lr = 0.01, p.test_accuracy = acc, p.end_of_epoch = eoe, p.test_bpc = NAN;
    return p;
}

/* One run into folder dir: records [n]; resume as given. */
static void run(const char *dir, int resume, const dpt_progress *recs, int n)
{
    static report r; /* large */
    memset(&r, 0, sizeof r);
    r.quiet = 1, r.resume = resume, r.kind = REPORT_IMAGES;
    snprintf(r.csv_path, sizeof r.csv_path, "%s/metrics.csv", dir);
    snprintf(r.svg_path, sizeof r.svg_path, "%s/loss.svg", dir);
    for (int i = 0; i < n; i++)
        report_progress(&recs[i], &r);
    report_finish(&r);
    CHECK_MSG(!r.io_error, "report: %s", r.io_msg);
}

/* The (epoch, iteration, accuracy-field) of every row, as "e,i,a;" text. */
static void rows(const char *dir, char *out, size_t cap)
{
    char path[4200], line[512];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "no %s", path);
    out[0] = 0;
    if (!f)
        return;
    int first = 1;
    while (fgets(line, sizeof line, f)) {
        if (first) { /* the header */
            first = 0;
            continue;
        }
        int ep;
        long it;
        char *acc = strrchr(line, ',');
        CHECK(acc != NULL && sscanf(line, "%d,%ld,", &ep, &it) == 2);
        if (!acc)
            break;
        acc[strcspn(acc, "\n")] = 0;
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%d,%ld%s;", ep, it, acc);
    }
    fclose(f);
}

int main(void)
{
    char dir[] = "/tmp/dpt_test_report_XXXXXX", got[1024];
    CHECK(mkdtemp(dir) != NULL);

    /* Epochs of 2 iterations. The first run is stopped after iteration 4
     * (epoch 2's last) with a checkpoint there: no end-of-epoch record for
     * epoch 2. */
    dpt_progress a[] = {rec(1, 1, 0, NAN), rec(1, 2, 0, NAN), rec(1, 2, 1, 0.5),
                        rec(2, 3, 0, NAN), rec(2, 4, 0, NAN)};
    run(dir, 0, a, 5);
    rows(dir, got, sizeof got);
    CHECK_MSG(strcmp(got, "1,1,;1,2,0.500000;2,3,;2,4,;") == 0, "first run: %s", got);

    /* The resumed run skips epoch 2's done iterations and ends the epoch at
     * once: its first record is epoch 2's end, then epoch 3. Row 4 stays,
     * now with its accuracy. */
    dpt_progress b[] = {rec(2, 4, 1, 0.75), rec(3, 5, 0, NAN), rec(3, 6, 0, NAN),
                        rec(3, 6, 1, 0.875)};
    run(dir, 1, b, 4);
    rows(dir, got, sizeof got);
    CHECK_MSG(strcmp(got, "1,1,;1,2,0.500000;2,3,;2,4,0.750000;3,5,;3,6,0.875000;") == 0,
              "resumed at an epoch's end: %s", got);

    /* Resumed mid-epoch (checkpoint at iteration 3): row 4 was trained
     * again, so the old one is dropped and the new one written. */
    dpt_progress c[] = {rec(2, 4, 0, NAN), rec(2, 4, 1, 0.625)};
    run(dir, 1, c, 2);
    rows(dir, got, sizeof got);
    CHECK_MSG(strcmp(got, "1,1,;1,2,0.500000;2,3,;2,4,0.625000;") == 0, "resumed mid-epoch: %s",
              got);

    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return tu_exit();
}
