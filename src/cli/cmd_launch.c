/* dptrain launch: run `mpirun -np N dptrain train ARGS` and, when the job
 * fails, restart it from the last checkpoint in its --out (torchrun's
 * --max-restarts, for MPI jobs). */
#include "cli/cli.h"
#include "dptrain/net.h"
#include "dptrain/train.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char help[] =
    "usage: dptrain launch -np N [options] -- train ARGS...\n"
    "\n"
    "Run 'mpirun -np N dptrain train ARGS' and restart the job from the last checkpoint\n"
    "in its --out when it fails (a rank killed, a host lost).\n"
    "  -np N, --np N       MPI ranks (required)\n"
    "  --max-restarts K    restarts after a failure (default 3; 0: run the job once)\n"
    "  --hostfile FILE     Open MPI hostfile, passed on to mpirun\n"
    "  --mpirun PATH       the mpirun to run (default: $DPT_MPIRUN, else mpirun on PATH)\n"
    "  --mpi-arg ARG       one more argument for mpirun, before the program (repeatable;\n"
    "                      e.g. --mpi-arg --oversubscribe)\n"
    "  -h, --help          this help\n"
    "\n"
    "A restart resumes from OUT/checkpoint.safetensors (OUT: the job's --out, default\n"
    "out) when this job wrote one, in place of any --resume in ARGS; otherwise it\n"
    "starts again with the same ARGS and --overwrite. Give train --checkpoint-every K\n"
    "so that a restart repeats at most K iterations: the final model is then\n"
    "byte-identical to an uninterrupted run's. A job that fails twice in a row the same\n"
    "way from the same checkpoint (a bad input, a NaN) is not restarted again.\n"
    "SIGINT, SIGTERM and SIGHUP go to mpirun and end the launch without a restart.\n"
    "Every DPT_* environment variable is passed to every rank (mpirun -x); as root,\n"
    "OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set for mpirun\n"
    "(Open MPI refuses to start as root otherwise). Exit status: 0 when the job\n"
    "succeeded, 1 otherwise.\n";

/* The signal handler forwards to the running mpirun, so its pid and the
 * signal seen are process-wide by nature (a handler has no argument). */
static volatile sig_atomic_t got_signal;
static volatile pid_t job_pid;

static void on_signal(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    got_signal = sig;
    pid_t p = job_pid;
    /* A signal from the terminal (Ctrl-C, hangup: si_code > 0, sent by the
     * kernel) reached mpirun too, in our process group: it is not sent
     * twice. One sent by a process to us alone (kill: si_code <= 0) is
     * passed on. */
    if (p > 0 && info->si_code <= 0)
        kill(p, sig);
}

/* The job's last lines on stderr that say what went wrong, kept while the
 * stream is passed through to ours. Lines longer than a buffer are cut. */
typedef struct tail_lines {
    char cur[512];
    size_t n_cur;
    char last_dpt[512];  /* last "dptrain: ..." line: the job's own words */
    char last_mpi[512];  /* last line where mpirun names a lost rank or host */
    char last_any[512];  /* last line that is not blank or a rule of dashes */
} tail_lines;

static void tail_end_line(tail_lines *t)
{
    t->cur[t->n_cur] = '\0';
    while (t->n_cur && (t->cur[t->n_cur - 1] == '\r' || t->cur[t->n_cur - 1] == ' '))
        t->cur[--t->n_cur] = '\0';
    /* Shown again in our own messages: no control characters from the job. */
    for (size_t i = 0; i < t->n_cur; i++)
        if ((unsigned char)t->cur[i] < 0x20 || t->cur[i] == 0x7f)
            t->cur[i] = '?';
    if (t->n_cur && strspn(t->cur, "-") != t->n_cur) {
        memcpy(t->last_any, t->cur, t->n_cur + 1);
        if (!strncmp(t->cur, "dptrain: ", 9))
            memcpy(t->last_dpt, t->cur, t->n_cur + 1);
        else if (strstr(t->cur, "mpirun noticed") || strstr(t->cur, "ORTE has lost"))
            memcpy(t->last_mpi, t->cur, t->n_cur + 1);
    }
    t->n_cur = 0;
}

static void tail_feed(tail_lines *t, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n')
            tail_end_line(t);
        else if (t->n_cur < sizeof t->cur - 1)
            t->cur[t->n_cur++] = buf[i];
    }
}

/* What failed, in one line. A rank that died or a host that was lost comes
 * first: the other ranks' own lines are then consequences (a watchdog, a
 * stop on the SIGTERM mpirun sends them). */
static const char *tail_message(const tail_lines *t)
{
    return t->last_mpi[0] ? t->last_mpi : t->last_dpt[0] ? t->last_dpt : t->last_any;
}

static void write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, buf, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* our stderr is gone: the job goes on without it */
        buf += k, n -= (size_t)k;
    }
}

/* Run argv (argv[0] an absolute path) with its stderr through a pipe that we
 * copy to ours, keeping the last lines in *t. Returns the wait status, or -1
 * with a message printed when it could not be started. */
static int run_job(char *const argv[], const sigset_t *mask, tail_lines *t)
{
    int fds[2];
    if (pipe(fds) != 0)
        return cli_error("launch: cannot make a pipe: %s", strerror(errno)), -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    posix_spawnattr_init(&at);
    /* Our SIGPIPE is ignored (a closed stderr must not end the launcher);
     * mpirun gets the default back, and the signal mask we started with. */
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setsigmask(&at, mask);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid;
    int e = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(fds[1]);
    if (e != 0) {
        close(fds[0]);
        return cli_error("launch: cannot start %s: %s", argv[0], strerror(e)), -1;
    }
    job_pid = pid;
    if (got_signal) /* arrived while mpirun was being started: it may have missed it */
        kill(pid, got_signal);
    int fd = fds[0], status = 0;
    char buf[4096];
    for (;;) {
        if (fd >= 0) {
            /* The timeout covers an mpirun that exits while something it
             * started still holds the pipe open. */
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 200) > 0) {
                ssize_t k = read(fd, buf, sizeof buf);
                if (k > 0) {
                    write_all(STDERR_FILENO, buf, (size_t)k);
                    tail_feed(t, buf, (size_t)k);
                } else if (k == 0 || errno != EINTR) {
                    close(fd);
                    fd = -1;
                }
            }
        }
        pid_t w = waitpid(pid, &status, fd >= 0 ? WNOHANG : 0);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            status = -1;
            cli_error("launch: waiting for mpirun: %s", strerror(errno));
            break;
        }
    }
    job_pid = 0;
    if (fd >= 0) { /* what is left in the pipe, without waiting for more */
        fcntl(fd, F_SETFL, O_NONBLOCK);
        ssize_t k;
        while ((k = read(fd, buf, sizeof buf)) > 0) {
            write_all(STDERR_FILENO, buf, (size_t)k);
            tail_feed(t, buf, (size_t)k);
        }
        close(fd);
    }
    if (t->n_cur) { /* a last line without its newline: ours start on a line of their own */
        write_all(STDERR_FILENO, "\n", 1);
        tail_end_line(t);
    }
    return status;
}

/* Path of an executable: NAME with a slash as it is, else found on PATH. */
static int find_program(const char *name, char *path, size_t size)
{
    struct stat st;
    if (strchr(name, '/')) {
        if (snprintf(path, size, "%s", name) >= (int)size)
            return -1;
        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0 ? 0 : -1;
    }
    const char *dirs = getenv("PATH");
    if (!dirs || !*dirs)
        dirs = "/usr/local/bin:/usr/bin:/bin";
    while (*dirs) {
        size_t len = strcspn(dirs, ":");
        int k = snprintf(path, size, "%.*s/%s", (int)len, len ? dirs : ".", name);
        if (k > 0 && k < (int)size && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
            access(path, X_OK) == 0)
            return 0;
        dirs += len + (dirs[len] == ':');
    }
    return -1;
}

/* Whether arg names the train option `name` (without dashes) the way
 * getopt_long reads it: "--name", "--name=V", or an abbreviation ("--res").
 * *value is set for the "=" form. */
static int is_option(const char *arg, const char *name, const char **value)
{
    if (strncmp(arg, "--", 2) != 0 || !arg[2])
        return 0;
    const char *s = arg + 2;
    size_t len = strcspn(s, "=");
    if (len > strlen(name) || strncmp(s, name, len) != 0)
        return 0;
    *value = s[len] == '=' ? s + len + 1 : NULL;
    return 1;
}

/* The value of the last --out or --resume in train's ARGS (NULL: none). */
static const char *train_option(char **args, int n, const char *name)
{
    const char *found = NULL, *v;
    for (int i = 1; i < n; i++)
        if (is_option(args[i], name, &v))
            found = v ? v : (i + 1 < n ? args[++i] : NULL);
    return found;
}

/* Where a restart without a checkpoint of this job begins: the same ARGS in
 * the folder the failed attempt wrote to. The output-folder rule refuses a
 * fresh run on a folder that holds a run's files unless --overwrite, and the
 * files there are the failed attempt's own. */
static const char *fresh_restart_flag(void) { return "--overwrite"; }

/* Epoch and iteration of a checkpoint, read (and verified) by the library. */
static dpt_status checkpoint_position(const char *path, dpt_checkpoint_info *info)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_load(path, 1, &net);
    if (s == DPT_OK)
        s = dpt_checkpoint_load(path, net, NULL, info);
    dpt_net_free(net);
    return s;
}

/* A failure message with the parts that differ between two runs of the
 * same fault (which rank reported it first, process ids) made neutral. */
static void neutral_message(const char *msg, char *out, size_t size)
{
    size_t o = 0;
    while (*msg && o + 1 < size) {
        if (!strncmp(msg, "rank ", 5) || !strncmp(msg, "PID ", 4) || !strncmp(msg, "pid ", 4)) {
            size_t k = msg[0] == 'r' ? 5 : 4;
            if (msg[k] >= '0' && msg[k] <= '9') {
                for (size_t i = 0; i < k && o + 1 < size; i++)
                    out[o++] = msg[i];
                msg += k;
                while (*msg >= '0' && *msg <= '9')
                    msg++;
                if (o + 1 < size)
                    out[o++] = 'N';
                continue;
            }
        }
        out[o++] = *msg++;
    }
    out[o] = '\0';
}

static void describe_status(int status, char *out, size_t size)
{
    if (WIFSIGNALED(status))
        snprintf(out, size, "mpirun killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, size, "mpirun exit status %d", WEXITSTATUS(status));
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

int cli_launch(int argc, char **argv)
{
    enum { O_NP = 256, O_MAX, O_HOSTFILE, O_MPIRUN, O_MPIARG };
    static const struct option opts[] = {
        {"np", required_argument, 0, O_NP},           {"max-restarts", required_argument, 0, O_MAX},
        {"hostfile", required_argument, 0, O_HOSTFILE}, {"mpirun", required_argument, 0, O_MPIRUN},
        {"mpi-arg", required_argument, 0, O_MPIARG},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    long np = 0, max_restarts = 3;
    const char *hostfile = NULL, *mpirun = getenv("DPT_MPIRUN"), *mpirun_opt = "DPT_MPIRUN";
    int c, n_mpi_args = 0;
    optind = 1;
    opterr = 0;
    /* "+": stop at the first non-option, so `launch -np 2 train --data D`
     * works without "--"; long_only: Open MPI's spelling "-np". */
    while ((c = getopt_long_only(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case O_NP:
            if (cli_int("-np", optarg, 1, 4096, &np))
                return 1;
            break;
        case O_MAX:
            if (cli_int("--max-restarts", optarg, 0, 1000, &max_restarts))
                return 1;
            break;
        case O_HOSTFILE: hostfile = optarg; break;
        case O_MPIRUN: mpirun = optarg, mpirun_opt = "--mpirun"; break;
        case O_MPIARG: n_mpi_args++; break;
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("launch: unknown or incomplete option '%s' (see dptrain launch --help)",
                             argv[optind - 1]);
        }
    }
    if (np == 0)
        return cli_error("launch: -np N is required (see dptrain launch --help)");
    if (optind >= argc || strcmp(argv[optind], "train") != 0)
        return cli_error("launch: the job must be 'train ARGS...' after the options (got %s%s%s)",
                         optind < argc ? "'" : "nothing", optind < argc ? argv[optind] : "",
                         optind < argc ? "'" : "");
    char **train = argv + optind;
    int n_train = argc - optind;
    if (hostfile) {
        struct stat st;
        if (stat(hostfile, &st) != 0)
            return cli_error("--hostfile %s: %s", hostfile, strerror(errno));
        if (!S_ISREG(st.st_mode))
            return cli_error("--hostfile %s: not a regular file", hostfile);
    }
    char mpirun_path[PATH_MAX], exe[PATH_MAX];
    if (mpirun && !*mpirun)
        return cli_error("%s: empty (name the mpirun to run)", mpirun_opt);
    if (find_program(mpirun ? mpirun : "mpirun", mpirun_path, sizeof mpirun_path) != 0)
        return mpirun ? cli_error("%s %s: not an executable file", mpirun_opt, mpirun)
                      : cli_error("launch: mpirun not found on PATH (install Open MPI, or name "
                                  "it with --mpirun PATH or DPT_MPIRUN)");
    /* Every rank runs this very dptrain, by absolute path (on other hosts it
     * must be at the same path). */
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return cli_error("launch: cannot find this program (/proc/self/exe): %s", strerror(errno));
    exe[k] = '\0';

    const char *every = train_option(train, n_train, "checkpoint-every");
    if (max_restarts > 0 && (!every || strspn(every, "0") == strlen(every)))
        fputs("dptrain launch: note: no --checkpoint-every K in the train options, so a restart "
              "starts from the beginning\n", stderr);
    const char *out = train_option(train, n_train, "out");
    const char *user_resume = train_option(train, n_train, "resume");
    if (!out)
        out = "out";
    char ckpt[PATH_MAX];
    if (snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out) >= (int)sizeof ckpt)
        return cli_error("--out %s: path too long", out);
    /* A checkpoint already there belongs to this job only if the job starts
     * from it; any other one is an earlier run's, never to resume from. */
    struct stat ckpt_start, st;
    int had_ckpt = stat(ckpt, &ckpt_start) == 0;
    int resumed_from_it = 0;
    if (had_ckpt && user_resume && stat(user_resume, &st) == 0)
        resumed_from_it = st.st_dev == ckpt_start.st_dev && st.st_ino == ckpt_start.st_ino;

    if (geteuid() == 0) { /* the user's own settings win */
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
    size_t n_env = 0;
    for (char **e = environ; *e; e++)
        n_env += !strncmp(*e, "DPT_", 4);
    /* mpirun -np N [--hostfile F] [-x DPT_...]... [ARG]... EXE train ARGS [--resume C] [--overwrite] */
    size_t cap = 8 + 2 * n_env + (size_t)n_mpi_args + (size_t)n_train + 4;
    char **av = calloc(cap, sizeof *av);
    if (!av)
        return cli_error("out of memory");
    char np_text[16];
    snprintf(np_text, sizeof np_text, "%ld", np);
    size_t n = 0;
    av[n++] = mpirun_path;
    av[n++] = "-np";
    av[n++] = np_text;
    if (hostfile)
        av[n++] = "--hostfile", av[n++] = (char *)hostfile;
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "DPT_", 4))
            av[n++] = "-x", av[n++] = *e; /* NAME=VALUE: on remote hosts too */
    optind = 1; /* the --mpi-arg values, in order */
    while ((c = getopt_long_only(argc, argv, "+h", opts, NULL)) != -1)
        if (c == O_MPIARG)
            av[n++] = optarg;
    av[n++] = exe;
    const size_t n_fixed = n; /* what follows "train" changes per attempt */

    struct sigaction sa, old[3];
    static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: a wait returns, to see the signal */
    sigemptyset(&sa.sa_mask);
    got_signal = 0;
    for (int i = 0; i < 3; i++) {
        sigaction(sigs[i], NULL, &old[i]);
        if (old[i].sa_handler != SIG_IGN) /* e.g. SIGINT of a job started with & */
            sigaction(sigs[i], &sa, NULL);
    }
    struct sigaction sa_pipe, old_pipe;
    memset(&sa_pipe, 0, sizeof sa_pipe);
    sa_pipe.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa_pipe, &old_pipe);
    sigset_t mask;
    sigprocmask(SIG_SETMASK, NULL, &mask);

    int rc = 1, have_prev = 0;
    long prev_it = -1;
    char prev_msg[512] = "";
    const char *resume_from = NULL; /* NULL: ARGS as given */
    int fresh = 0;
    for (long attempt = 0;; attempt++) {
        n = n_fixed;
        for (int i = 0; i < n_train; i++) {
            const char *v;
            if (resume_from && is_option(train[i], "resume", &v)) {
                i += v == NULL; /* and its value */
                continue;
            }
            av[n++] = train[i];
        }
        if (resume_from)
            av[n++] = "--resume", av[n++] = (char *)resume_from;
        if (fresh)
            av[n++] = (char *)fresh_restart_flag();
        av[n] = NULL;
        if (got_signal)
            break;
        tail_lines t;
        memset(&t, 0, sizeof t);
        int status = run_job(av, &mask, &t);
        if (status == -1)
            break;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            if (attempt > 0)
                fprintf(stderr, "dptrain launch: the job succeeded after %ld restart%s\n", attempt,
                        attempt == 1 ? "" : "s");
            rc = 0;
            break;
        }
        if (got_signal)
            break;
        char how[64], msg[512];
        describe_status(status, how, sizeof how);
        const char *said = tail_message(&t);
        fprintf(stderr, "dptrain launch: the job failed (%s)%s%s\n", how, *said ? ": " : "", said);
        /* Where a restart would begin: this job's own last checkpoint. */
        dpt_checkpoint_info info;
        int use_ckpt = stat(ckpt, &st) == 0 && (!had_ckpt || resumed_from_it ||
                                                !same_file(&st, &ckpt_start));
        if (use_ckpt && checkpoint_position(ckpt, &info) != DPT_OK) {
            cli_error("launch: not restarting: %s", dpt_last_error());
            break;
        }
        long it = use_ckpt ? info.iteration : -1;
        neutral_message(said, msg, sizeof msg);
        if (have_prev && it == prev_it && !strcmp(msg, prev_msg)) {
            if (it < 0)
                cli_error("launch: the job failed twice the same way before its first "
                          "checkpoint; not restarting");
            else
                cli_error("launch: the job failed twice the same way from the checkpoint at "
                          "iteration %ld; not restarting", it);
            break;
        }
        if (attempt >= max_restarts) {
            cli_error("launch: the job failed; no restarts left (--max-restarts %ld)", max_restarts);
            break;
        }
        have_prev = 1, prev_it = it;
        memcpy(prev_msg, msg, sizeof prev_msg);
        if (use_ckpt) {
            resume_from = ckpt, fresh = 0;
            fprintf(stderr, "dptrain launch: restart %ld of %ld: resuming from %s at epoch %d, "
                    "iteration %ld (%ld into the epoch)\n", attempt + 1, max_restarts, ckpt,
                    info.epoch, info.iteration, info.epoch_iteration);
        } else {
            /* The user's own --resume, if any, stays: it is where the job
             * begins when it has not yet written a checkpoint. */
            resume_from = NULL, fresh = 1;
            fprintf(stderr, "dptrain launch: restart %ld of %ld: no checkpoint of this job in %s; "
                    "starting %s\n", attempt + 1, max_restarts, out,
                    user_resume ? "again from --resume" : "afresh");
        }
    }
    if (got_signal && rc != 0) {
        if (stat(ckpt, &st) == 0 && (!had_ckpt || resumed_from_it || !same_file(&st, &ckpt_start)))
            cli_error("launch: stopped by signal %d; not restarting (last checkpoint: %s)",
                      (int)got_signal, ckpt);
        else
            cli_error("launch: stopped by signal %d; not restarting (no checkpoint)",
                      (int)got_signal);
        rc = 1;
    }
    for (int i = 0; i < 3; i++)
        if (old[i].sa_handler != SIG_IGN)
            sigaction(sigs[i], &old[i], NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);
    free(av);
    return rc;
}
