/* One run per output folder: the lock, the earlier run's files, leftover
 * temporaries. */
#include "cli/outdir.h"
#include "cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The files a run leaves in its folder. */
static const char *const run_files[] = {"model.safetensors", "checkpoint.safetensors", "metrics.csv",
                                        "loss.svg", "loss.png"};
#define N_RUN_FILES (sizeof run_files / sizeof *run_files)

static void join(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

/* Temporaries ("<file>.tmp...") of a run that was killed: no run holds the
 * folder now, so none of them is being written. Only regular files, which
 * is all a run leaves (anything else there is not ours, and harmless: a
 * temporary is never opened through it). */
static void remove_stale_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4200];
    while ((e = readdir(d)) != NULL) {
        for (size_t i = 0; i < N_RUN_FILES; i++) {
            size_t n = strlen(run_files[i]);
            struct stat st;
            if (strncmp(e->d_name, run_files[i], n) == 0 && strncmp(e->d_name + n, ".tmp", 4) == 0) {
                join(path, sizeof path, dir, e->d_name);
                if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
                    unlink(path);
                break;
            }
        }
    }
    closedir(d);
}

int outdir_lock(outdir *o)
{
    char path[4200];
    join(path, sizeof path, o->dir, ".dptrain.lock");
    /* Never through a symlink, never blocking on a FIFO planted there. */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0)
        return cli_error("--out %s: cannot open its lock file .dptrain.lock: %s", o->dir,
                         strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cli_error("--out %s: .dptrain.lock is not a regular file", o->dir);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char buf[32] = "";
        ssize_t n = err == EWOULDBLOCK ? pread(fd, buf, sizeof buf - 1, 0) : -1;
        close(fd);
        if (err != EWOULDBLOCK)
            return cli_error("--out %s: cannot lock .dptrain.lock: %s", o->dir, strerror(err));
        buf[n > 0 ? n : 0] = '\0';
        long pid = strtol(buf, NULL, 10);
        if (pid > 0)
            return cli_error("--out %s: in use by another run (pid %ld)", o->dir, pid);
        return cli_error("--out %s: in use by another run", o->dir);
    }
    /* The holder's pid, for the message a second run prints. */
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        int err = errno;
        close(fd);
        return cli_error("--out %s: cannot write .dptrain.lock: %s", o->dir, strerror(err));
    }
    o->lock_fd = fd;
    remove_stale_tmp(o->dir);
    return 0;
}

int outdir_check(outdir *o, const char *resume, int overwrite)
{
    char path[4200], found[512] = "";
    size_t n_found = 0;
    struct stat st;
    for (size_t i = 0; i < N_RUN_FILES; i++) {
        join(path, sizeof path, o->dir, run_files[i]);
        /* A folder by that name is no run's file: the write fails, naming it. */
        if (lstat(path, &st) != 0 || S_ISDIR(st.st_mode))
            continue;
        size_t len = strlen(found);
        snprintf(found + len, sizeof found - len, "%s%s", n_found ? ", " : "", run_files[i]);
        n_found++;
    }
    if (!n_found)
        return 0;
    /* The folder's own checkpoint: the same run continues, its files stay. */
    struct stat rs;
    join(path, sizeof path, o->dir, "checkpoint.safetensors");
    if (resume && stat(resume, &rs) == 0 && stat(path, &st) == 0 && rs.st_dev == st.st_dev &&
        rs.st_ino == st.st_ino)
        return 0;
    if (!overwrite)
        return cli_error("--out %s: holds an earlier run's files (%s); use another folder or "
                         "--overwrite", o->dir, found);
    o->clear = 1;
    return 0;
}

dpt_status outdir_clear(void *arg)
{
    outdir *o = arg;
    if (!o->clear)
        return DPT_OK;
    char path[4200];
    for (size_t i = 0; i < N_RUN_FILES; i++) {
        join(path, sizeof path, o->dir, run_files[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            return dpt_fail(DPT_ERR_IO, "--out %s: cannot remove the earlier run's %s: %s", o->dir,
                            run_files[i], strerror(errno));
    }
    o->clear = 0;
    return DPT_OK;
}

void outdir_unlock(outdir *o)
{
    if (o->lock_fd >= 0)
        close(o->lock_fd);
    o->lock_fd = -1;
}
