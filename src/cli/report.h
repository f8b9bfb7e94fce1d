/* The progress callback of `dptrain train`: terminal line, metrics.csv,
 * loss.svg and loss.png in the output folder. */
#ifndef DPT_CLI_REPORT_H
#define DPT_CLI_REPORT_H

#include "dptrain/train.h"

#include <signal.h>
#include <stdio.h>
#include <sys/types.h>

/* What is trained: the unit of the speed and the held-out measure. */
enum { REPORT_IMAGES, REPORT_SEQUENCES, REPORT_TEXT };

typedef struct report {
    /* settings */
    int quiet, tty, resume;
    int kind;                       /* REPORT_*: images/s, sequences/s or characters/s;
                                       a language model's rows carry test_bpc */
    volatile sig_atomic_t *stop;    /* the stop request (may be NULL): no PNG and no
                                       progress lines then */
    long print_every;               /* plain lines every K iterations (0: per epoch) */
    char csv_path[4096], svg_path[4096], png_path[4096];
    /* state, touched only by the client thread */
    int started, have_pending, io_error, epoch, epochs;
    double elapsed_s, last_plot, last_line, first_elapsed;
    long first_iteration;
    dpt_progress pending;           /* last iteration row, waiting for its epoch's accuracy */
    char io_msg[4400];              /* the first failed write: "<file>: cannot write: <reason>" */
    FILE *csv;
    pid_t png_pid;                  /* an rsvg-convert still rendering (0: none) */
    char png_tmp[4200];             /* its output, renamed to png_path when it succeeds */
    double *loss_x, *loss_y, *acc_x, *acc_y;
    size_t n_loss, cap_loss, n_acc, cap_acc;
} report;

/* dpt_progress_fn for dpt_fit_config.progress; arg is a report. */
void report_progress(const dpt_progress *p, void *arg);
/* Flush the last row, close metrics.csv, draw the final plot, free memory.
 * report.io_error tells whether any write failed, io_msg which and why. */
void report_finish(report *r);

#endif
