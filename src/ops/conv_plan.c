/* Convolution plans: the algorithm of each convolution shape, chosen by
 * measurement when a network is planned (see ops.h, docs/kernels.md).
 *
 * Choices are remembered at two levels. In the process, a table keyed by
 * shape: the local workers each build a network, the first to plan a shape
 * measures it and the rest reuse its choice, so every worker runs the same
 * algorithm. On disk, a small text file keyed by CPU model, kernel set,
 * the algorithms that could run the shape, and the shape itself: later runs
 * read the choice instead of timing again, and get the same bits.
 *
 * Measurement and the cache file's read-modify-write happen under an
 * exclusive lock on "<cache>.lock", with the entry looked up again once the
 * lock is held: of several processes planning one shape at once (MPI ranks,
 * tests run in parallel), the first measures and writes, the others read
 * its choice. A choice is used only once it is in the file; where the file
 * cannot be written, the heuristic choice (AUTO) is kept, since a measured
 * choice nobody can read back would let two runs of the same command pick
 * differently on a noisy machine.
 *
 * The file is hostile input: lines longer than LINE_MAX_LEN, fields out of
 * range, unknown algorithms and malformed numbers are skipped (counted in
 * one note per file and process), at most FILE_MAX_BYTES are read, and at
 * most MAX_ENTRIES entries are kept when it is written back. */
#define _GNU_SOURCE /* flock */
#include "core/tmpfile.h"
#include "dptrain/core.h"
#include "ops/conv_algo.h"
#include "ops/ops.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY_MAX 512
#define PATH_MAX_LEN 4096
#define LINE_MAX_LEN 1024
#define FILE_MAX_BYTES (1 << 20)
#define MAX_ENTRIES 2048
/* Floating-point operations one timed run aims at: enough for a stable
 * figure (tens of milliseconds), little enough that planning a network of
 * ten wide layers takes seconds, once per machine. */
#define RUN_FLOPS 1.0e9
#define MEASURE_MAX_BATCH 32

const char *dpt_conv_plan_source_name(int source)
{
    static const char *const names[] = {"heuristic", "forced", "measured", "cache", "only"};
    return source >= 0 && source < (int)(sizeof names / sizeof *names) ? names[source] : "?";
}

static void note(dpt_conv_plan *p, const char *fmt, ...)
{
    size_t k = strlen(p->note);
    if (k + 3 >= sizeof p->note)
        return;
    if (k)
        k += (size_t)snprintf(p->note + k, sizeof p->note - k, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->note + k, sizeof p->note - k, fmt, ap);
    va_end(ap);
}

/* ---- the process's choices --------------------------------------------------- */

typedef struct memo {
    char key[KEY_MAX + PATH_MAX_LEN + 16]; /* key|cache path|remeasure */
    dpt_conv_plan plan;
} memo;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static memo *memos;                 /* guarded by lock */
static size_t n_memos, cap_memos;
static char warned[8][PATH_MAX_LEN]; /* cache files already reported malformed */
static int n_warned;

void dpt_conv_plan_forget(void)
{
    pthread_mutex_lock(&lock);
    free(memos);
    memos = NULL, n_memos = cap_memos = 0;
    n_warned = 0;
    pthread_mutex_unlock(&lock);
}

static const memo *memo_find(const char *key)
{
    for (size_t i = 0; i < n_memos; i++)
        if (strcmp(memos[i].key, key) == 0)
            return &memos[i];
    return NULL;
}

/* Keep the choice for the other workers; -1 on no memory. */
static int memo_add(const char *key, const dpt_conv_plan *p)
{
    if (n_memos == cap_memos) {
        size_t cap = cap_memos ? 2 * cap_memos : 32;
        memo *m = realloc(memos, cap * sizeof *m);
        if (!m)
            return -1;
        memos = m, cap_memos = cap;
    }
    snprintf(memos[n_memos].key, sizeof memos[n_memos].key, "%s", key);
    memos[n_memos++].plan = *p;
    return 0;
}

/* ---- keys -------------------------------------------------------------------- */

/* Characters a key may hold: the file's fields are split at spaces. */
static int key_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._-=;,+:@()", c) != NULL;
}

/* The CPU's model name from /proc/cpuinfo (bounded, sanitised), or
 * "unknown". Read once; the caller holds lock. */
static const char *cpu_model(void)
{
    static char model[80];
    if (model[0])
        return model;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f && errno == ENOMEM)
        return NULL; /* asked again next time */
    snprintf(model, sizeof model, "unknown");
    if (!f)
        return model;
    char line[512];
    for (int i = 0; i < 64 && fgets(line, sizeof line, f); i++) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t k = 0;
        for (; *v && *v != '\n' && k + 1 < sizeof model; v++)
            model[k++] = key_char((unsigned char)*v) ? *v : '_';
        model[k] = '\0';
        if (!k)
            snprintf(model, sizeof model, "unknown");
        break;
    }
    fclose(f);
    return model;
}

/* 0, or -1 on no memory. In pieces: glibc's snprintf allocates for a
 * format of many conversions, and can then fail. */
static int make_key(const dpt_conv2d_desc *d, int bn_in, int bn_out, int need_dx,
                    const char *cands, char *key)
{
    const char *cpu = cpu_model();
    if (!cpu)
        return -1;
    int k = snprintf(key, KEY_MAX, "cpu=%s;kernels=%s;algos=%s;", cpu, dpt_ops_kernels(), cands);
    const int v[14] = {d->n, d->c_in, d->h, d->w, d->c_out, d->kh, d->kw, d->stride, d->pad,
                       d->dilation > 1 ? d->dilation : 1, d->groups > 1 ? d->groups : 1,
                       bn_in != 0, bn_out != 0, need_dx != 0};
    static const char *const pre[14] = {"conv=", ",", ",", ",", ",", ",", ",", ",", ",", ",",
                                        ",", ";bn=", "", ";dx="};
    for (int i = 0; i < 14 && k >= 0 && k < KEY_MAX; i++) {
        int m = snprintf(key + k, KEY_MAX - (size_t)k, "%s%d", pre[i], v[i]);
        k = m < 0 ? -1 : k + m;
    }
    return k >= 0 && k < KEY_MAX ? 0 : -1;
}

/* ---- the cache file ------------------------------------------------------------ */

/* The cache file's path into buf; 0 when there is none (DPT_PLAN_CACHE
 * empty, no home, a path too long), with the reason in p's note. With
 * mkdirs, the default folders are created. */
static int cache_path(char *buf, size_t cap, int mkdirs, dpt_conv_plan *p)
{
    const char *env = getenv("DPT_PLAN_CACHE");
    if (env && *env) { /* empty is unset, as for every DPT_* variable */
        if (strlen(env) >= cap || strlen(env) > PATH_MAX_LEN - 32) {
            note(p, "DPT_PLAN_CACHE is longer than %d bytes", PATH_MAX_LEN - 32);
            return 0;
        }
        snprintf(buf, cap, "%s", env);
        return 1;
    }
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[PATH_MAX_LEN];
    int len;
    /* XDG: only an absolute path counts (a relative one is to be ignored). */
    if (xdg && xdg[0] == '/' && strlen(xdg) < PATH_MAX_LEN - 64)
        len = snprintf(dir, sizeof dir, "%s", xdg);
    else if (home && home[0] == '/' && strlen(home) < PATH_MAX_LEN - 64)
        len = snprintf(dir, sizeof dir, "%s/.cache", home);
    else {
        note(p, "no cache file (neither XDG_CACHE_HOME nor HOME is an absolute path)");
        return 0;
    }
    if (mkdirs)
        mkdir(dir, 0700);
    snprintf(dir + len, sizeof dir - (size_t)len, "/dptrain");
    if (mkdirs)
        mkdir(dir, 0700);
    if ((size_t)snprintf(buf, cap, "%s/conv-plan.txt", dir) >= cap) {
        note(p, "cache path too long");
        return 0;
    }
    return 1;
}

typedef struct entry {
    char key[KEY_MAX];
    int algo, n_meas;
    int unsure; /* 0: settled; k: timed k times without settling */
    double ms[DPT_CONV_ALGO_COUNT];
} entry;

static int parse_algo(const char *s, size_t len)
{
    char name[16];
    if (len == 0 || len >= sizeof name)
        return -1;
    memcpy(name, s, len);
    name[len] = '\0';
    int a = dpt_conv_algo_by_name(name);
    return a > DPT_CONV_ALGO_AUTO ? a : -1;
}

/* One line "v2 KEY ALGO N MS [unsure:K]" (MS: name:ms,... or "-") into
 * e; 0, -1 (malformed) or -3 (a v1 line: its figures are of N images,
 * its choice made on them, where v2's are of the key's batch; timed
 * again, and dropped when the file is written). Without the last field
 * the figures count as settled. */
static int parse_line(char *line, entry *e)
{
    char *f[7];
    int n = 0;
    for (char *t = line; n < 7;) {
        f[n++] = t;
        char *sp = strchr(t, ' ');
        if (!sp)
            break;
        *sp = '\0';
        t = sp + 1;
    }
    if (strcmp(f[0], "v1") == 0 && (n == 5 || n == 6))
        return -3;
    if ((n != 5 && n != 6) || strcmp(f[0], "v2") != 0)
        return -1;
    e->unsure = 0;
    if (n == 6) {
        if (strncmp(f[5], "unsure:", 7) != 0 || f[5][7] < '1' || f[5][7] > '9' || f[5][8])
            return -1;
        e->unsure = f[5][7] - '0';
    }
    size_t kl = strlen(f[1]);
    if (kl == 0 || kl >= KEY_MAX)
        return -1;
    for (size_t i = 0; i < kl; i++)
        if (!key_char((unsigned char)f[1][i]))
            return -1;
    memcpy(e->key, f[1], kl + 1);
    if ((e->algo = parse_algo(f[2], strlen(f[2]))) < 0)
        return -1;
    char *end;
    errno = 0;
    long nm = strtol(f[3], &end, 10);
    if (errno || *end || end == f[3] || nm < 1 || nm > 1000000)
        return -1;
    e->n_meas = (int)nm;
    for (int a = 0; a < DPT_CONV_ALGO_COUNT; a++)
        e->ms[a] = -2;
    if (strcmp(f[4], "-") == 0)
        return 0;
    for (char *t = f[4]; *t;) {
        char *colon = strchr(t, ':');
        if (!colon)
            return -1;
        int a = parse_algo(t, (size_t)(colon - t));
        if (a < 0)
            return -1;
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (errno || end == colon + 1 || !isfinite(v) || v < 0 || v > 1e7)
            return -1;
        e->ms[a] = v;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        t = end;
    }
    return 0;
}

/* The valid entries of the cache file (*out, owned by the caller; none
 * when it does not exist), the count of skipped lines in *bad. A path
 * that is not a regular file or cannot be read gives -1, no memory -2. */
static int load(const char *path, entry **out, size_t *n_out, int *bad, int *old, int *cut)
{
    *out = NULL, *n_out = 0, *bad = 0, *old = 0, *cut = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        int e = errno;
        close(fd);
        return e == ENOMEM ? -2 : -1;
    }
    entry *v = NULL;
    size_t n = 0, cap = 0, total = 0;
    char line[LINE_MAX_LEN + 1];
    int c = 0;
    while (c != EOF) {
        /* One line, a byte at a time: bounded, and a NUL byte cannot hide
         * the rest of it. */
        size_t len = 0;
        int long_line = 0, nul = 0;
        while ((c = fgetc(f)) != EOF && c != '\n') {
            if (++total > FILE_MAX_BYTES)
                break;
            if (c == '\0')
                nul = 1;
            if (len < LINE_MAX_LEN)
                line[len++] = (char)c;
            else
                long_line = 1;
        }
        if (total > FILE_MAX_BYTES) {
            *cut = 1;
            break;
        }
        total++;
        line[len] = '\0';
        if (len == 0 || (line[0] == '#' && !long_line && !nul))
            continue;
        if (long_line || nul) {
            (*bad)++;
            continue;
        }
        if (n == 2 * MAX_ENTRIES) { /* bounds the duplicate search below too */
            *cut = 1;
            break;
        }
        entry e;
        int parsed = parse_line(line, &e);
        if (parsed != 0) {
            (*(parsed == -3 ? old : bad))++;
            continue;
        }
        for (size_t i = 0; i < n; i++) /* a later line replaces an earlier one */
            if (strcmp(v[i].key, e.key) == 0) {
                memmove(&v[i], &v[i + 1], (n - i - 1) * sizeof *v);
                n--;
                break;
            }
        if (n == cap) {
            size_t c2 = cap ? 2 * cap : 64;
            entry *w = realloc(v, c2 * sizeof *w);
            if (!w) {
                free(v);
                fclose(f);
                return -2;
            }
            v = w, cap = c2;
        }
        v[n++] = e;
    }
    fclose(f);
    *out = v, *n_out = n;
    return 0;
}

static const entry *find(const entry *v, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].key, key) == 0)
            return &v[i];
    return NULL;
}

/* Write the entries (the last MAX_ENTRIES) atomically; 0, or -1 (errno;
 * -2 for no memory). */
static int save(const char *path, const entry *v, size_t n)
{
    char tmp[PATH_MAX_LEN + 64];
    int fd = dpt_tmpfile_create(path, tmp, sizeof tmp);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd), unlink(tmp);
        errno = e;
        return e == ENOMEM ? -2 : -1;
    }
    fputs("# dptrain convolution plans: v2 KEY ALGORITHM IMAGES-TIMED MS-PER-ALGORITHM "
          "[unsure:TIMES-TIMED]\n"
          "# (written by dptrain when it plans a network; safe to delete)\n", f);
    for (size_t i = n > MAX_ENTRIES ? n - MAX_ENTRIES : 0; i < n; i++) {
        fprintf(f, "v2 %s %s %d ", v[i].key, dpt_conv_algo_name(v[i].algo), v[i].n_meas);
        int any = 0;
        for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++)
            if (v[i].ms[a] >= 0)
                fprintf(f, "%s%s:%.4f", any++ ? "," : "", dpt_conv_algo_name(a), v[i].ms[a]);
        fputs(any ? "" : "-", f);
        if (v[i].unsure)
            fprintf(f, " unsure:%d", v[i].unsure > 9 ? 9 : v[i].unsure);
        fputc('\n', f);
    }
    int ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    int e = errno;
    if (fclose(f) != 0 && ok)
        ok = 0, e = errno;
    if (ok && rename(tmp, path) == 0)
        return 0;
    if (ok)
        e = errno;
    unlink(tmp);
    errno = e;
    return e == ENOMEM ? -2 : -1;
}

/* Note once per file and process that lines were skipped. */
static void note_bad(dpt_conv_plan *p, const char *path, int bad, int old, int cut)
{
    if (!bad && !old && !cut)
        return;
    for (int i = 0; i < n_warned; i++)
        if (strcmp(warned[i], path) == 0)
            return;
    if (n_warned < (int)(sizeof warned / sizeof *warned))
        snprintf(warned[n_warned++], sizeof warned[0], "%s", path);
    if (bad)
        note(p, "cache file %s: %d malformed line%s ignored", path, bad, bad == 1 ? "" : "s");
    if (old && bad)
        note(p, "%d line%s of format v1 ignored (timed again)", old, old == 1 ? "" : "s");
    else if (old)
        note(p, "cache file %s: %d line%s of format v1 ignored (timed again)", path, old,
             old == 1 ? "" : "s");
    if (cut)
        note(p, "cache file %s: read in part (at most %d bytes and %d entries are read)", path,
             FILE_MAX_BYTES, 2 * MAX_ENTRIES);
}

/* ---- measurement ------------------------------------------------------------- */

/* Rounds of timed runs after the warm-up: at least MIN_ROUNDS, at most
 * MAX_ROUNDS, and no new round once the timed runs of a shape (of a phase:
 * the small runs, then the finalists on the batch, see measure) took BUDGET_MS
 * (a slow figure on a busy machine must not make planning take
 * minutes). A candidate's figure is settled when its two best runs agree
 * within AGREE; one settled at CLEAR_LOSER times the leader's best (or
 * unsettled at three times) is not run again. A challenger replaces the heuristic's choice only when
 * faster by KEEP_MARGIN: a near tie is as likely noise as a win, and a
 * timed choice is kept for good. An entry whose figures did not settle is
 * marked unsure:K in the cache and used like any other (later processes
 * and MPI ranks must choose the same); DPT_CONV_ALGO=measure times it
 * again, keeping each algorithm's best of the timings (K counts them, up
 * to RETIME_MAX). */
#define MIN_ROUNDS 2
#define MAX_ROUNDS 12
#define BUDGET_MS 2000.0
#define AGREE 0.03
#define CLEAR_LOSER 1.5
#define KEEP_MARGIN 0.05
#define RETIME_MAX 3
/* A timed run repeats the pass until it lasts about MIN_RUN_MS (from the
 * warm-up's fastest, at most MAX_REPEAT passes): a run of a fraction of a
 * millisecond is mostly timer, cache and frequency noise. */
#define MIN_RUN_MS 4.0
#define MAX_REPEAT 16
/* Finalists (measure): the candidates whose estimate for the batch is
 * within FINAL_MARGIN of the best one (the estimates were seen off by up
 * to 15% where small batches run partly empty blocks); timed on the whole
 * batch where the best estimate is at most FINAL_MAX_MS and the batch's
 * x, dx, y, dy fit in FINAL_MAX_BYTES. */
#define FINAL_MARGIN 0.3
#define FINAL_MAX_MS 400.0
#define FINAL_MAX_BYTES (512.0 * 1024 * 1024)

static dpt_conv_plan_timer timer_hook; /* guarded by lock */
static void *timer_ctx;

void dpt_conv_plan_set_timer(dpt_conv_plan_timer fn, void *ctx)
{
    pthread_mutex_lock(&lock);
    timer_hook = fn, timer_ctx = ctx;
    pthread_mutex_unlock(&lock);
}

/* The thread's CPU time where everything a candidate runs runs on this
 * thread (a BLAS of one thread; oneDNN and dptrain's own kernels run on
 * the caller): time the machine spends on other processes, preemption
 * included, is not counted, which on a loaded machine is most of the
 * noise. With a BLAS of several threads the work is partly elsewhere, so
 * wall time. While one worker times, the others of the process (and of
 * other processes, through the file lock) wait asleep. */
static clockid_t timing_clock(void)
{
    return dpt_blas_threads() <= 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
}

static double now_ms(clockid_t c)
{
    struct timespec t;
    if (clock_gettime(c, &t) != 0)
        clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void fill(float *v, size_t n, uint64_t *s, float scale)
{
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
        v[i] = scale * ((float)(*s >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
    }
}

/* The choice from timed figures (p->ms, -1/-2 for none) among the
 * candidates in[]: the fastest, unless the heuristic's choice is within
 * KEEP_MARGIN of it; else, of those within KEEP_MARGIN, the lowest
 * numbered, so that two candidates within noise of each other (wino and
 * wino4 on vgg's 4x4x256) do not swap between fresh plans. */
static int decide(const dpt_conv_plan *p, const dpt_conv2d_desc *d, const int *in)
{
    int best = -1;
    for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++)
        if (in[a] && p->ms[a] >= 0 && (best < 0 || p->ms[a] < p->ms[best])) /* ties: the lower number */
            best = a;
    if (best < 0)
        return best;
    const double near = p->ms[best] * (1.0 + KEEP_MARGIN);
    int h = dpt_conv_algo_heuristic(d);
    if (h != best && h > 0 && h < DPT_CONV_ALGO_COUNT && in[h] && p->ms[h] >= 0 && near > p->ms[h])
        return h;
    for (int a = 1; a < best; a++)
        if (in[a] && p->ms[a] >= 0 && near > p->ms[a])
            return a;
    return best;
}

/* Images per timed run: up to MEASURE_MAX_BATCH, fewer where one run would
 * pass RUN_FLOPS (at least 2 where the batch has them, so per-batch costs
 * are not all a run measures). Below the batch, a power of two: the
 * algorithms work in blocks of images (wino: 32 tiles), and a run of 17
 * images on blocks of 8 or 16 would time a last block nearly empty, which
 * the batch (128, 64: powers of two in practice) does not have. */
static int measure_batch(const dpt_conv2d_desc *d, int need_dx)
{
    double per = 2.0 * d->c_out * (d->c_in / (d->groups > 1 ? d->groups : 1)) * d->kh * d->kw *
                 (double)d->out_h * d->out_w * (need_dx ? 3 : 2);
    int m = d->n < MEASURE_MAX_BATCH ? d->n : MEASURE_MAX_BATCH;
    double fit = per > 0 ? RUN_FLOPS / per : m;
    int lo = d->n < 2 ? d->n : 2;
    if (fit < m)
        m = (int)fit;
    if (m < d->n)
        for (int p = 2; p <= m; p *= 2)
            if (2 * p > m) {
                m = p;
                break;
            }
    return m < lo ? lo : m;
}

/* The time of N images from runs of n0 < n images: linear, t(N) = t(n) +
 * (t(n) - t(n0)) (N - n) / (n - n0), so a per-call cost (filter
 * transforms, reorders) counts once, as in the step, instead of once per
 * n images. Kept between t(n) (more images never take less time) and
 * t(n) N / n (nor more per image): a noisy pair of runs cannot send the
 * estimate anywhere. */
static double extrapolate(double t0, int n0, double t, int n, int N)
{
    if (n >= N || n0 >= n)
        return t;
    double e = t + (t - t0) * (double)(N - n) / (double)(n - n0);
    double hi = t * (double)N / n;
    return e < t ? t : e > hi ? hi : e;
}

/* What the candidates run on: random data for the largest batch timed. */
typedef struct bench {
    dpt_conv2d_desc d;
    int need_dx;
    const dpt_bn_apply *xa, *dya;
    float *x, *dx, *y, *dy, *w, *dw, *b, *db, *work;
    double *sum, *sumsq, *xg;
    clockid_t clk;
} bench;

/* One timed run of algorithm a: k passes (forward + backward) of n images;
 * milliseconds per pass. A test's timer replaces the run. */
static double run_ms(bench *B, int a, int n, int k, int round)
{
    if (timer_hook)
        return timer_hook(timer_ctx, a, n, round);
    B->d.algo = a, B->d.n = n;
    double t0 = now_ms(B->clk);
    for (int j = 0; j < k; j++) {
        dpt_conv2d_forward_ex(&B->d, B->x, B->xa, B->w, B->b, B->y, B->work, B->sum, B->sumsq);
        dpt_conv2d_backward_ex(&B->d, B->x, B->xa, B->w, B->dy, B->dya, B->y,
                               B->need_dx ? B->dx : NULL, B->dw, B->db, B->work, B->xg);
    }
    return (now_ms(B->clk) - t0) / k;
}

/* Rounds of runs of the live candidates at ns sizes (sz[0] < sz[1]), each
 * one's figure for N images in fig (extrapolated from the two sizes' best
 * runs, or the one size's best). Each candidate runs once to warm up (one
 * three times slower than the fastest then is not run again), then the
 * candidates take turns, in alternating order, so a slow minute of the
 * machine hits them all; the best run counts, since on a shared machine
 * interference only ever adds time. live[] is left with the candidates
 * still in at the end; 1 when the figures settled. */
static int rounds(bench *B, const int *sz, int ns, int N, int *live, double *fig)
{
    enum { A = DPT_CONV_ALGO_COUNT };
    double b1[2][A], b2[2][A], warm[2][A], fastest[2] = {INFINITY, INFINITY}, spent = 0;
    int settled = 0, repeat[2] = {1, 1}, ran[A];
    for (int s = 0; s < 2; s++)
        for (int a = 0; a < A; a++)
            b1[s][a] = b2[s][a] = warm[s][a] = INFINITY;
    for (int a = 0; a < A; a++)
        ran[a] = live[a];
#define FIG(v, a) (ns == 1 ? (v)[0][a] : extrapolate((v)[0][a], sz[0], (v)[1][a], sz[1], N))
    for (int r = 0; r <= MAX_ROUNDS && !settled; r++) {
        for (int i = 1; i < A; i++) {
            /* Alternating order: no candidate always runs right after the
             * same one (whose cache footprint or clock boost it inherits). */
            int a = r % 2 ? i : A - i;
            if (!live[a])
                continue;
            for (int s = 0; s < ns; s++) {
                const int k = r == 0 ? 1 : repeat[s];
                double ms = run_ms(B, a, sz[s], k, r);
                if (r == 0) { /* the warm-up: only to drop clear losers */
                    warm[s][a] = ms;
                    if (ms < fastest[s])
                        fastest[s] = ms;
                    continue;
                }
                spent += ms * k;
                if (ms < b1[s][a])
                    b2[s][a] = b1[s][a], b1[s][a] = ms;
                else if (ms < b2[s][a])
                    b2[s][a] = ms;
            }
        }
        if (r == 0) {
            double best = INFINITY;
            for (int a = 1; a < A; a++)
                if (live[a] && FIG(warm, a) < best)
                    best = FIG(warm, a);
            for (int a = 1; a < A; a++)
                if (live[a] && FIG(warm, a) > 3 * best)
                    live[a] = 0;
            for (int s = 0; s < ns; s++)
                if (fastest[s] > 0 && fastest[s] < MIN_RUN_MS)
                    repeat[s] = fastest[s] * MAX_REPEAT < MIN_RUN_MS
                                    ? MAX_REPEAT
                                    : (int)ceil(MIN_RUN_MS / fastest[s]);
            continue;
        }
        if (r < MIN_ROUNDS)
            continue;
        int lead = -1;
        for (int a = 1; a < A; a++)
            if (live[a] && (lead < 0 || FIG(b1, a) < FIG(b1, lead)))
                lead = a;
        settled = 1;
        for (int a = 1; a < A; a++) {
            if (!live[a])
                continue;
            int agree = 1;
            for (int s = 0; s < ns; s++)
                agree &= b2[s][a] <= b1[s][a] * (1.0 + AGREE);
            /* A settled figure CLEAR_LOSER times the leader's no longer
             * matters; an unsettled one may be a preempted winner, so it
             * is timed again unless far behind. */
            if (FIG(b1, a) > (agree ? CLEAR_LOSER : 3.0) * FIG(b1, lead))
                live[a] = 0;
            else if (!agree)
                settled = 0;
        }
        if (!settled && spent >= BUDGET_MS)
            break;
    }
    for (int a = 1; a < A; a++)
        if (ran[a])
            fig[a] = b1[ns - 1][a] < INFINITY ? FIG(b1, a) : FIG(warm, a);
#undef FIG
    return settled;
}

/* Time every supported algorithm on random data: p->ms (each one's time
 * for the batch d0->n), p->n_meas (images of the largest timed run),
 * p->unsure (1 when the figures did not settle within the rounds and
 * budget); in final[] the candidates the choice is made among. -1 when
 * out of memory. Where a run of the batch would pass RUN_FLOPS, each
 * candidate is timed on n (measure_batch) and n / 4 images and its time
 * for the batch extrapolated; those within FINAL_MARGIN of the best
 * estimate (the finalists) are then timed on the whole batch, which
 * decides (below FINAL_MAX_MS and FINAL_MAX_BYTES: else the estimates). */
static int measure(const dpt_conv2d_desc *d0, int bn_in, int bn_out, int need_dx,
                   dpt_conv_plan *p, int *final)
{
    enum { A = DPT_CONV_ALGO_COUNT };
    const int N = d0->n, n = measure_batch(d0, need_dx);
    const int two = n < N;
    const int sz[2] = {two ? (n / 4 > 1 ? n / 4 : 1) : n, n};
    bench B = {.d = *d0, .need_dx = need_dx, .clk = timing_clock()};
    dpt_conv2d_desc d = *d0;
    const size_t px = (size_t)d.c_in * d.h * d.w, py = (size_t)d.c_out * d.out_h * d.out_w;
    const size_t nw = (size_t)d.c_out * (d.c_in / d.groups) * d.kh * d.kw;
    /* The whole batch's buffers, where the finalists may be timed on it. */
    int cap = two && (double)N * (px + py) * 2 * sizeof(float) <= FINAL_MAX_BYTES ? N : n;
    size_t nwork = 0;
    for (int a = 1; a < A; a++) {
        if (p->ms[a] == -1)
            continue;
        d.algo = a, d.n = cap;
        size_t k = dpt_conv2d_work_floats(&d);
        if (k > nwork)
            nwork = k;
    }
    const size_t nx = (size_t)cap * px, ny = (size_t)cap * py;
    const size_t nbn = 6 * (size_t)(d.c_in > d.c_out ? d.c_in : d.c_out);
    float *x = malloc(nx * sizeof *x), *dx = malloc(nx * sizeof *dx);
    float *y = malloc(ny * sizeof *y), *dy = malloc(ny * sizeof *dy);
    float *w = malloc(nw * sizeof *w), *dw = malloc(nw * sizeof *dw);
    float *b = malloc((size_t)d.c_out * sizeof *b), *db = malloc((size_t)d.c_out * sizeof *db);
    float *work = calloc(nwork + 1, sizeof *work), *bn = malloc(nbn * sizeof *bn);
    double *sums = malloc(2 * (size_t)(d.c_out + d.c_in) * sizeof *sums);
    int rc = -1;
    if (!x || !dx || !y || !dy || !w || !dw || !b || !db || !work || !bn || !sums)
        goto done;
    uint64_t s = 0x9e3779b97f4a7c15ull;
    fill(x, nx, &s, 1.0f), fill(dy, ny, &s, 1.0f), fill(w, nw, &s, 0.1f), fill(b, d.c_out, &s, 0.1f);
    fill(bn, nbn, &s, 0.5f);
    memset(dx, 0, nx * sizeof *dx), memset(y, 0, ny * sizeof *y), memset(dw, 0, nw * sizeof *dw);
    /* Touch every page of the scratch now: calloc's pages are mapped on
     * first write, and the first algorithm to use megabytes of scratch
     * (whole-batch copies) would pay faults in its warm-up, which decides
     * who is dropped, that a network's own scratch never costs a step.
     * Volatile, so the stores are not folded into calloc's zeroing. */
    for (size_t i = 0; i < nwork + 1; i += 1024)
        ((volatile float *)work)[i] = 0.0f;
    /* Batch-norm coefficients as a trained network has them (scale near 1,
     * a ReLU masking about half): the fused paths do the same work. */
    const size_t cm = nbn / 6;
    for (size_t i = 0; i < cm; i++)
        bn[cm + i] += 1.0f, bn[3 * cm + i] += 1.0f;
    dpt_bn_apply ap = {bn, bn + cm, bn + 2 * cm, 1, bn + 3 * cm, bn + 4 * cm, bn + 5 * cm};
    B.xa = bn_in ? &ap : NULL, B.dya = bn_out ? &ap : NULL;
    B.sum = bn_out ? sums : NULL, B.sumsq = bn_out ? sums + d.c_out : NULL;
    B.xg = bn_in && need_dx ? sums + 2 * d.c_out : NULL;
    B.x = x, B.dx = dx, B.y = y, B.dy = dy, B.w = w, B.dw = dw, B.b = b, B.db = db, B.work = work;

    int live[A];
    double fig[A];
    for (int a = 0; a < A; a++)
        live[a] = a > 0 && p->ms[a] != -1, fig[a] = -2, final[a] = 0;
    int settled = rounds(&B, sz, two ? 2 : 1, N, live, fig);
    p->n_meas = n;
    int lead = -1, n_final = 0;
    for (int a = 1; a < A; a++)
        if (live[a] && (lead < 0 || fig[a] < fig[lead]))
            lead = a;
    for (int a = 1; a < A; a++)
        if (live[a] && fig[a] <= fig[lead] * (1.0 + FINAL_MARGIN))
            final[a] = 1, n_final++;
    if (two && n_final > 1 && cap == N && fig[lead] <= FINAL_MAX_MS) {
        const int szN[1] = {N};
        double at[A];
        int in[A];
        for (int a = 0; a < A; a++)
            in[a] = final[a], at[a] = -2;
        settled = rounds(&B, szN, 1, N, in, at);
        for (int a = 1; a < A; a++)
            if (final[a])
                fig[a] = at[a];
        p->n_meas = N;
    } else {
        for (int a = 1; a < A; a++)
            final[a] = p->ms[a] != -1;
    }
    for (int a = 1; a < A; a++)
        if (p->ms[a] != -1)
            p->ms[a] = fig[a];
    p->unsure = !settled;
    rc = 0;
done:
    free(x), free(dx), free(y), free(dy), free(w), free(dw), free(b), free(db);
    free(work), free(bn), free(sums);
    return rc;
}

/* ---- choosing ------------------------------------------------------------------ */

static void set_choice(dpt_conv_plan *p, const dpt_conv2d_desc *d, int algo, int source)
{
    dpt_conv2d_desc e = *d;
    e.algo = algo;
    p->algo = algo;
    p->runs = dpt_conv_algo_resolve(&e);
    p->source = source;
}

/* The heuristic, with the reason already noted. */
static void keep_heuristic(dpt_conv_plan *p, const dpt_conv2d_desc *d)
{
    note(p, "heuristic kept: a measured choice must go to a cache file so that later runs "
            "make it too");
    set_choice(p, d, DPT_CONV_ALGO_AUTO, DPT_CONV_PLAN_HEURISTIC);
}

/* Measured or read, under the process lock and the file lock: 0, or -2
 * when out of memory. */
static int plan_measured(const dpt_conv2d_desc *d, int bn_in, int bn_out, int need_dx,
                         const char *key, int remeasure, dpt_conv_plan *p)
{
    char path[PATH_MAX_LEN], lockpath[PATH_MAX_LEN + 8];
    int lfd = -1, rc = 0, best = -1, tries = 0, final[DPT_CONV_ALGO_COUNT];
    entry *v = NULL;
    size_t n = 0;
    struct stat st;
    if (!cache_path(path, sizeof path, 1, p))
        path[0] = '\0';
    /* Not a regular file (a folder, /dev/null: how to say "no cache"):
     * looked at before a lock file is made beside it. */
    if (path[0] && stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        note(p, "cache file %s is not a regular file", path);
        path[0] = '\0';
    }
    if (path[0]) {
        snprintf(lockpath, sizeof lockpath, "%s.lock", path);
        lfd = open(lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (lfd < 0 || flock(lfd, LOCK_EX) != 0) {
            note(p, "cache file %s cannot be locked: %s", path, strerror(errno));
            path[0] = '\0';
        }
    }
    int bad = 0, old1 = 0, cut = 0, got = path[0] ? load(path, &v, &n, &bad, &old1, &cut) : 0;
    if (got == -2)
        goto nomem;
    if (got != 0) {
        note(p, "cache file %s cannot be read", path);
        path[0] = '\0';
    }
    if (!path[0] && !remeasure) {
        keep_heuristic(p, d);
        goto done;
    }
    if (path[0])
        note_bad(p, path, bad, old1, cut);
    /* A cached line is used as it is, unsure or not: every later process
     * (the other MPI ranks, the next run) must make the same choice
     * (invariant 3). Only DPT_CONV_ALGO=measure times it again. */
    const entry *old = find(v, n, key), *hit = remeasure ? NULL : old;
    if (hit && dpt_conv_algo_supports(hit->algo, d)) {
        for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++)
            if (p->ms[a] != -1)
                p->ms[a] = hit->ms[a];
        p->n_meas = hit->n_meas;
        p->unsure = hit->unsure != 0;
        set_choice(p, d, hit->algo, DPT_CONV_PLAN_CACHE);
        goto done;
    }
    if (measure(d, bn_in, bn_out, need_dx, p, final) != 0)
        goto nomem;
    if (old && old->unsure && old->n_meas == p->n_meas) {
        /* Timed again (DPT_CONV_ALGO=measure) after figures that had not
         * settled: each algorithm's best of both timings (interference
         * only adds). */
        tries = old->unsure < RETIME_MAX ? old->unsure : RETIME_MAX - 1;
        for (int a = 1; a < DPT_CONV_ALGO_COUNT; a++)
            if (p->ms[a] >= 0 && old->ms[a] >= 0 && old->ms[a] < p->ms[a])
                p->ms[a] = old->ms[a];
        note(p, "timed again (timing %d): the earlier figures had not settled", tries + 1);
    }
    if ((best = decide(p, d, final)) < 0)
        goto nomem;
    if (p->unsure)
        note(p, "figures did not settle within %d rounds or %.0f ms of runs (a busy machine?)",
             MAX_ROUNDS, BUDGET_MS);
    set_choice(p, d, best, DPT_CONV_PLAN_MEASURED);
    if (!path[0])
        goto done; /* DPT_CONV_ALGO=measure without a cache: used, not kept */
    size_t i = n;
    for (size_t j = 0; j < n; j++)
        if (strcmp(v[j].key, key) == 0)
            i = j;
    if (i == n) {
        entry *w = realloc(v, (n + 1) * sizeof *w);
        if (!w)
            goto nomem;
        v = w, n++;
    }
    snprintf(v[i].key, KEY_MAX, "%s", key);
    v[i].algo = best, v[i].n_meas = p->n_meas;
    v[i].unsure = p->unsure ? tries + 1 : 0;
    for (int a = 0; a < DPT_CONV_ALGO_COUNT; a++)
        v[i].ms[a] = p->ms[a] >= 0 ? p->ms[a] : -2;
    int saved = save(path, v, n);
    if (saved == -2)
        goto nomem;
    if (saved != 0) {
        note(p, "cache file %s cannot be written: %s", path, strerror(errno));
        if (!remeasure)
            keep_heuristic(p, d);
    }
    goto done;
nomem:
    rc = -2;
    snprintf(p->note, sizeof p->note, "out of memory planning the convolution");
done:
    free(v);
    if (lfd >= 0)
        close(lfd);
    return rc;
}

int dpt_conv_plan_choose(const dpt_conv2d_desc *d, int bn_in, int bn_out, int need_dx,
                         dpt_conv_plan *p)
{
    memset(p, 0, sizeof *p);
    char cands[128] = "";
    int n_cand = 0, only = DPT_CONV_ALGO_GEMM;
    for (int a = 0; a < DPT_CONV_ALGO_COUNT; a++) {
        p->ms[a] = -1;
        if (a > 0 && dpt_conv_algo_supports(a, d)) {
            p->ms[a] = -2;
            size_t k = strlen(cands);
            snprintf(cands + k, sizeof cands - k, "%s%s", n_cand ? "+" : "", dpt_conv_algo_name(a));
            n_cand++, only = a;
        }
    }
    /* DPT_CONV_ALGO: a name, "heuristic", "measure"; unset or "auto": the
     * cached or measured choice. */
    const char *env = getenv("DPT_CONV_ALGO");
    int remeasure = 0;
    if (env && *env && strcmp(env, "auto") != 0) {
        int a = strlen(env) < 32 ? dpt_conv_algo_by_name(env) : -1;
        if (strcmp(env, "heuristic") == 0) {
            note(p, "DPT_CONV_ALGO=heuristic");
            set_choice(p, d, DPT_CONV_ALGO_AUTO, DPT_CONV_PLAN_HEURISTIC);
            return 0;
        }
        if (strcmp(env, "measure") == 0) {
            remeasure = 1;
        } else if (a > DPT_CONV_ALGO_AUTO) {
            set_choice(p, d, a, DPT_CONV_PLAN_FORCED);
            if (!dpt_conv_algo_get(a))
                note(p, "%s is not built in: gemm (the reference) runs", env);
            else if (p->runs != a)
                note(p, "%s does not support this shape: gemm (the reference) runs", env);
            return 0;
        } else {
            snprintf(p->note, sizeof p->note,
                     "DPT_CONV_ALGO: '%.40s' is not an algorithm (auto, heuristic, measure, gemm, "
                     "direct, batched, depthwise, dnnl, pointwise, hwc, wino, wino4, wino_s2)", env);
            return -1;
        }
    }
    if (n_cand == 1) {
        set_choice(p, d, only, DPT_CONV_PLAN_ONLY);
        return 0;
    }
    if (d->n < 2 && !remeasure) {
        note(p, "a batch of one: nothing worth timing");
        set_choice(p, d, DPT_CONV_ALGO_AUTO, DPT_CONV_PLAN_HEURISTIC);
        return 0;
    }
    pthread_mutex_lock(&lock);
    char key[KEY_MAX], path[PATH_MAX_LEN], mkey[KEY_MAX + PATH_MAX_LEN + 16];
    if (make_key(d, bn_in, bn_out, need_dx, cands, key) != 0) {
        pthread_mutex_unlock(&lock);
        snprintf(p->note, sizeof p->note, "out of memory planning the convolution");
        return -2;
    }
    /* The process's choices are per cache file too: a test that points
     * DPT_PLAN_CACHE elsewhere starts afresh. */
    dpt_conv_plan scratch;
    memset(&scratch, 0, sizeof scratch);
    if (!cache_path(path, sizeof path, 0, &scratch))
        path[0] = '\0';
    /* Three conversions: see make_key. */
    snprintf(mkey, sizeof mkey, "%s|%s|%d", key, path, remeasure);
    const memo *m = memo_find(mkey);
    int rc = 0;
    if (m) {
        *p = m->plan;
    } else {
        rc = plan_measured(d, bn_in, bn_out, need_dx, key, remeasure, p);
        if (rc == 0 && memo_add(mkey, p) != 0) {
            snprintf(p->note, sizeof p->note, "out of memory planning the convolution");
            rc = -2;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
