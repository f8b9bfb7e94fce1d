/* The client side of `dptrain train`: the afterEach callback of the progress
 * queue. It draws the live progress line, appends metrics.csv and redraws
 * loss.svg (and loss.png through rsvg-convert when it is installed), always
 * by writing a temporary file and renaming it, so a viewer never sees half a
 * plot. Runs on the queue's client thread, never on a worker. */
#define _GNU_SOURCE /* SCHED_IDLE (Linux) */
#include "cli/report.h"
#include "core/tmpfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_hms(double s, char *buf, size_t cap)
{
    long t = s < 0 ? 0 : (long)(s + 0.5);
    snprintf(buf, cap, "%02ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static int push_point(report *r, int which, double x, double y)
{
    size_t *n = which ? &r->n_acc : &r->n_loss, *cap = which ? &r->cap_acc : &r->cap_loss;
    double **xs = which ? &r->acc_x : &r->loss_x, **ys = which ? &r->acc_y : &r->loss_y;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 1024;
        double *nx = realloc(*xs, c * sizeof **xs);
        if (nx)
            *xs = nx;
        double *ny = realloc(*ys, c * sizeof **ys);
        if (ny)
            *ys = ny;
        if (!nx || !ny)
            return -1;
        *cap = c;
    }
    (*xs)[*n] = x, (*ys)[*n] = y;
    (*n)++;
    return 0;
}

/* A step of 1, 2 or 5 × 10^k giving about `target` ticks over span. */
static double nice_step(double span, int target)
{
    if (!(span > 0))
        return 1;
    double raw = span / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void svg_write(report *r, FILE *f)
{
    const double W = 860, H = 500, L = 80, R = 80, T = 60, B = 60;
    const double pw = W - L - R, ph = H - T - B;
    double xmax = 1, ymax = 0;
    for (size_t i = 0; i < r->n_loss; i++) {
        if (r->loss_x[i] > xmax)
            xmax = r->loss_x[i];
        if (r->loss_y[i] > ymax)
            ymax = r->loss_y[i];
    }
    if (!(ymax > 0))
        ymax = 1;
    double xstep = nice_step(xmax, 8), ystep = nice_step(ymax, 6);
    xmax = ceil(xmax / xstep) * xstep;
    ymax = ceil(ymax / ystep) * ystep;
    char el[32];
    fmt_hms(r->elapsed_s, el, sizeof el);
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"32\" font-size=\"18\" text-anchor=\"middle\">Epoch: %d of %d, "
               "Elapsed: %s</text>\n", L + pw / 2, r->epoch, r->epochs, el);
    /* grid and axes */
    fprintf(f, "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n");
    for (double x = 0; x <= xmax + 1e-9; x += xstep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L + x / xmax * pw, T,
                L + x / xmax * pw, T + ph);
    for (double y = 0; y <= ymax + 1e-9; y += ystep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, T + ph - y / ymax * ph,
                L + pw, T + ph - y / ymax * ph);
    fprintf(f, "</g>\n<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"#333\"/>\n", L, T, pw, ph);
    fprintf(f, "<g font-size=\"12\" fill=\"#333\">\n");
    for (double x = 0; x <= xmax + 1e-9; x += xstep)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", L + x / xmax * pw,
                T + ph + 18, x);
    for (double y = 0; y <= ymax + 1e-9; y += ystep)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 8,
                T + ph - y / ymax * ph + 4, y);
    fprintf(f, "</g>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\">Iteration</text>\n",
            L + pw / 2, H - 18);
    fprintf(f, "<text x=\"22\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\" fill=\"#0b5cad\" "
               "transform=\"rotate(-90 22 %.1f)\">Loss</text>\n", T + ph / 2, T + ph / 2);
    /* the loss line */
    if (r->n_loss) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"1.5\" "
                   "stroke-linejoin=\"round\" points=\"");
        for (size_t i = 0; i < r->n_loss; i++)
            fprintf(f, "%.1f,%.1f ", L + r->loss_x[i] / xmax * pw,
                    T + ph - fmin(r->loss_y[i], ymax) / ymax * ph);
        fprintf(f, "\"/>\n");
    }
    /* test accuracy on a second axis, 0 to 100 % */
    if (r->n_acc) {
        fprintf(f, "<g font-size=\"12\" fill=\"#c55a11\">\n");
        for (int p = 0; p <= 100; p += 20)
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%d%%</text>\n", L + pw + 8, T + ph - p / 100.0 * ph + 4, p);
        fprintf(f, "</g>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\" "
                   "fill=\"#c55a11\" transform=\"rotate(90 %.1f %.1f)\">Test accuracy</text>\n",
                W - 22, T + ph / 2, W - 22, T + ph / 2);
        fprintf(f, "<polyline fill=\"none\" stroke=\"#c55a11\" stroke-width=\"2\" points=\"");
        for (size_t i = 0; i < r->n_acc; i++)
            fprintf(f, "%.1f,%.1f ", L + r->acc_x[i] / xmax * pw, T + ph - r->acc_y[i] * ph);
        fprintf(f, "\"/>\n<g fill=\"#c55a11\">\n");
        for (size_t i = 0; i < r->n_acc; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\"/>\n", L + r->acc_x[i] / xmax * pw,
                    T + ph - r->acc_y[i] * ph);
        fprintf(f, "</g>\n");
    }
    /* legend */
    /* Middle right: the loss has fallen there and accuracy is near the top. */
    double ly = T + ph * 0.4;
    fprintf(f, "<g font-size=\"13\">\n<rect x=\"%.0f\" y=\"%.0f\" width=\"150\" height=\"%d\" "
               "fill=\"white\" stroke=\"#bbb\"/>\n", L + pw - 160, ly, r->n_acc ? 48 : 28);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#0b5cad\" "
               "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">Training loss</text>\n",
            L + pw - 150, ly + 14, L + pw - 125, ly + 14, L + pw - 118, ly + 18);
    if (r->n_acc)
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#c55a11\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">Test accuracy</text>\n",
                L + pw - 150, ly + 34, L + pw - 125, ly + 34, L + pw - 118, ly + 38);
    fprintf(f, "</g>\n</svg>\n");
}

/* Remember the first failed write (file and reason) for the end of the
 * run; errno is the reason. */
static void io_fail(report *r, const char *path)
{
    int e = errno;
    if (!r->io_error)
        snprintf(r->io_msg, sizeof r->io_msg, "%s: cannot write: %s", path, e ? strerror(e) : "I/O error");
    r->io_error = 1;
}

/* A new temporary file beside path (never through a symlink), as a stream;
 * its name goes to tmp. NULL on failure, with nothing left behind. */
static FILE *tmp_open(const char *path, char *tmp, size_t cap)
{
    int fd = dpt_tmpfile_create(path, tmp, cap);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
    }
    return f;
}

/* Write path atomically: a temporary file, then rename. */
static int write_svg(report *r)
{
    char tmp[4200];
    FILE *f = tmp_open(r->svg_path, tmp, sizeof tmp);
    if (!f)
        return -1;
    svg_write(r, f);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, r->svg_path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* loss.png from loss.svg through rsvg-convert, when it is installed. */
/* Collect the renderer started by write_png: with `block`, wait for it
 * (ending it at once when training is asked to stop); without, only look.
 * Its PNG replaces the last one when it succeeded and no stop came. */
static void png_reap(report *r, int block)
{
    if (r->png_pid <= 0)
        return;
    const int stopping = r->stop && *r->stop;
    int st = 0;
    pid_t w;
    while ((w = waitpid(r->png_pid, &st, block && !stopping ? 0 : WNOHANG)) < 0 && errno == EINTR)
        ;
    if (w == 0) {
        if (!block && !stopping)
            return; /* still rendering */
        /* mpirun sends SIGKILL soon after forwarding SIGTERM: end it now */
        kill(r->png_pid, SIGKILL);
        while ((w = waitpid(r->png_pid, &st, 0)) < 0 && errno == EINTR)
            ;
    }
    if (w == r->png_pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 && !stopping)
        rename(r->png_tmp, r->png_path);
    else
        unlink(r->png_tmp);
    r->png_pid = 0;
}

/* loss.png from loss.svg by rsvg-convert, when it is installed. During
 * training (`final` 0) it renders on idle time and nobody waits for it:
 * while the last render still runs this one is skipped (loss.svg is always
 * current), so a machine kept busy by others never holds training up. The
 * final render runs at normal priority and is waited for. */
static void write_png(report *r, int final)
{
    png_reap(r, 0);
    if (r->png_pid > 0) {
        if (!final)
            return;
        kill(r->png_pid, SIGKILL); /* an older plot: the final one replaces it */
        png_reap(r, 1);
    }
    /* We create the temporary file (exclusively, never through a symlink)
     * and hand it to rsvg-convert as its stdout: given a name, it would
     * open it with a plain open that follows links. */
    int fd = dpt_tmpfile_create(r->png_path, r->png_tmp, sizeof r->png_tmp);
    if (fd < 0)
        return;
    char *argv[] = {"rsvg-convert", r->svg_path, NULL};
    /* Its complaints (a full disk, say) are not in our message format, and
     * a failure only means no PNG this time: its stderr goes to /dev/null. */
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) {
        close(fd);
        unlink(r->png_tmp);
        return;
    }
    posix_spawn_file_actions_adddup2(&fa, fd, STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int spawned = posix_spawnp(&pid, "rsvg-convert", &fa, NULL, argv, environ) == 0;
    posix_spawn_file_actions_destroy(&fa);
    close(fd);
    if (!spawned) {
        unlink(r->png_tmp);
        return; /* not installed: the SVG is the plot */
    }
    r->png_pid = pid;
#ifdef SCHED_IDLE
    /* The workers keep every core busy: the renderer (about 60 ms of CPU
     * at each epoch's end) runs only on idle time, so it never takes a
     * worker's core and holds the others at the next all-reduce. (glibc's
     * posix_spawn takes no SCHED_IDLE; the first instants at normal
     * priority do not matter. Failure leaves it at normal priority.) */
    if (!final) {
        struct sched_param sp = {.sched_priority = 0};
        (void)sched_setscheduler(pid, SCHED_IDLE, &sp);
    }
#endif
    if (final)
        png_reap(r, 1);
}

static void csv_row(report *r, const dpt_progress *p, double acc)
{
    if (!r->csv)
        return;
    fprintf(r->csv, "%d,%ld,%.9g,%.3f,%.1f,%.6g,", p->epoch, p->iteration, p->loss, p->elapsed_s,
            p->images_per_s, p->lr);
    if (!isnan(acc))
        fprintf(r->csv, "%.6f", acc);
    fputc('\n', r->csv);
}

/* The columns: the speed's unit and the held-out measure depend on what is
 * trained (test_bpc: a language model's held-out bits per character). */
static const char *const csv_headers[] = {
    "epoch,iteration,loss,elapsed_s,images_per_s,lr,test_accuracy\n",
    "epoch,iteration,loss,elapsed_s,sequences_per_s,lr,test_accuracy\n",
    "epoch,iteration,loss,elapsed_s,chars_per_s,lr,test_bpc\n",
};
static const char *const units[] = {"images/s", "sequences/s", "chars/s"};

/* The held-out measure of an end-of-epoch record (NaN: none). */
static double heldout(const report *r, const dpt_progress *p)
{
    return r->kind == REPORT_TEXT ? p->test_bpc : p->test_accuracy;
}

/* The earlier run's metrics.csv, to read on resume. */
static FILE *csv_open_old(const char *path)
{
    /* Only a regular file: not through a symlink, never blocking on a FIFO. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return NULL;
    FILE *f = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? fdopen(fd, "r") : NULL;
    if (!f)
        close(fd);
    return f;
}

/* On resume, keep the rows of the earlier run that come before `iteration`
 * (rows after the checkpoint were trained again) and reload them into the
 * plot. When the resumed run's first record is an end-of-epoch record
 * (eoe: the run was stopped after the epoch's last iteration, before its
 * end), that iteration's row is not trained again: it becomes the pending
 * row, written with the held-out measure the record brings. The file is written under a temporary name and renamed into place, and
 * the rows that follow are appended through the same descriptor: nothing is
 * ever opened by the final name, so a symlink planted there is replaced, not
 * followed. */
static void csv_open(report *r, long iteration, int eoe)
{
    FILE *old = r->resume ? csv_open_old(r->csv_path) : NULL;
    char tmp[4200];
    FILE *f = tmp_open(r->csv_path, tmp, sizeof tmp);
    if (!f) {
        io_fail(r, r->csv_path);
        if (old)
            fclose(old);
        return;
    }
    fputs(csv_headers[r->kind], f);
    char line[512];
    while (old && fgets(line, sizeof line, old)) {
        int ep;
        long it;
        double loss, el, ips, lr, acc;
        int n = sscanf(line, "%d,%ld,%lf,%lf,%lf,%lf,%lf", &ep, &it, &loss, &el, &ips, &lr, &acc);
        /* A row cut short by a killed run has no newline: dropped. */
        if (n < 6 || it > iteration || !strchr(line, '\n'))
            continue;
        if (it == iteration) {
            if (eoe) {
                dpt_progress *q = &r->pending;
                memset(q, 0, sizeof *q);
                q->epoch = ep, q->iteration = it, q->loss = loss, q->elapsed_s = el;
                q->images_per_s = ips, q->lr = lr;
                r->have_pending = 1;
                push_point(r, 0, (double)it, loss);
            }
            continue;
        }
        fputs(line, f);
        push_point(r, 0, (double)it, loss);
        if (n == 7 && r->kind != REPORT_TEXT) /* the accuracy axis is 0 to 100 % */
            push_point(r, 1, (double)it, acc);
    }
    if (old)
        fclose(old);
    if (fflush(f) != 0 || rename(tmp, r->csv_path) != 0) {
        io_fail(r, r->csv_path);
        fclose(f);
        unlink(tmp);
        return;
    }
    r->csv = f;
}

void report_progress(const dpt_progress *p, void *arg)
{
    report *r = arg;
    double now = mono_s();
    if (!r->started) {
        r->started = 1;
        csv_open(r, p->iteration, p->end_of_epoch);
    }
    r->epoch = p->epoch, r->epochs = p->epochs, r->elapsed_s = p->elapsed_s;
    if (!p->end_of_epoch) {
        if (r->have_pending)
            csv_row(r, &r->pending, NAN);
        r->pending = *p, r->have_pending = 1;
        push_point(r, 0, (double)p->iteration, p->loss);
    } else {
        /* The epoch's last iteration row carries its test accuracy (bits
         * per character). */
        if (r->have_pending)
            csv_row(r, &r->pending, heldout(r, p));
        r->have_pending = 0;
        if (!isnan(p->test_accuracy) && r->kind != REPORT_TEXT)
            push_point(r, 1, (double)p->iteration, p->test_accuracy);
        if (r->csv && (fflush(r->csv) != 0 || ferror(r->csv)))
            io_fail(r, r->csv_path);
    }
    if (p->end_of_epoch || now - r->last_plot > 2.0) {
        if (write_svg(r) != 0)
            io_fail(r, r->svg_path);
        r->last_plot = now;
        if (p->end_of_epoch && r->png_path[0] && !(r->stop && *r->stop))
            write_png(r, 0);
    }
    /* the terminal; not once a stop is requested: mpirun, stopping the job,
     * no longer reads the ranks' output, and a full pipe would block us */
    if (r->quiet || (r->stop && *r->stop))
        return;
    char el[32], eta[32] = "--:--:--";
    fmt_hms(p->elapsed_s, el, sizeof el);
    if (p->iterations_per_epoch > 0 && p->iteration > r->first_iteration) {
        double total = (double)p->iterations_per_epoch * p->epochs;
        double rate = (p->elapsed_s - r->first_elapsed) / (double)(p->iteration - r->first_iteration);
        fmt_hms(rate * (total - (double)p->iteration), eta, sizeof eta);
    }
    if (r->first_iteration == 0 && !p->end_of_epoch)
        r->first_iteration = p->iteration - 1, r->first_elapsed = p->elapsed_s;
    if (p->end_of_epoch) {
        if (r->tty)
            fputs("\r\033[K", stdout);
        printf("epoch %d/%d  iteration %ld  loss %.4f  elapsed %s", p->epoch, p->epochs,
               p->iteration, p->loss, el);
        if (r->kind == REPORT_TEXT && !isnan(p->test_bpc))
            printf("  held-out bits/char %.4f", p->test_bpc);
        else if (r->kind != REPORT_TEXT && !isnan(p->test_accuracy))
            printf("  test accuracy %.4f", p->test_accuracy);
        putchar('\n');
        fflush(stdout);
    } else if (r->tty) {
        if (now - r->last_line > 0.1) {
            printf("\r\033[Kepoch %d/%d  iteration %ld  loss %.4f  %.0f %s  elapsed %s  ETA %s",
                   p->epoch, p->epochs, p->iteration, p->loss, p->images_per_s, units[r->kind], el,
                   eta);
            fflush(stdout);
            r->last_line = now;
        }
    } else if (r->print_every > 0 && p->iteration % r->print_every == 0) {
        printf("epoch %d/%d  iteration %ld  loss %.4f  %.0f %s  elapsed %s  ETA %s\n", p->epoch,
               p->epochs, p->iteration, p->loss, p->images_per_s, units[r->kind], el, eta);
        fflush(stdout);
    }
}

void report_finish(report *r)
{
    if (r->have_pending)
        csv_row(r, &r->pending, NAN);
    r->have_pending = 0;
    if (r->csv && (ferror(r->csv) | fclose(r->csv)) != 0) {
        if (!errno)
            errno = EIO;
        io_fail(r, r->csv_path);
    }
    r->csv = NULL;
    if (r->started) {
        if (write_svg(r) != 0)
            io_fail(r, r->svg_path);
        if (r->png_path[0] && !(r->stop && *r->stop))
            write_png(r, 1);
    }
    png_reap(r, 1); /* a stopped run's render in flight: ended, its file removed */
    free(r->loss_x), free(r->loss_y), free(r->acc_x), free(r->acc_y);
    r->loss_x = r->loss_y = r->acc_x = r->acc_y = NULL;
}
