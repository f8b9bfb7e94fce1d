/* The output folder of `dptrain train` holds one run (DESIGN.md, invariant
 * 7): a lock refuses a second run while one is in it, and a new run does
 * not start over an earlier run's files unless told to (--overwrite), in
 * which case they are removed only once every input has been checked. */
#ifndef DPT_CLI_OUTDIR_H
#define DPT_CLI_OUTDIR_H

#include "dptrain/core.h"

typedef struct outdir {
    const char *dir;   /* borrowed */
    int lock_fd;       /* OUT/.dptrain.lock, held with flock; -1: not held */
    int clear;         /* 1: outdir_clear removes the earlier run's files */
} outdir;

/* Take OUT/.dptrain.lock for this process (released by outdir_unlock or by
 * the kernel when the process ends, so a crash never leaves it stuck) and
 * remove temporary files a crashed run left. On failure prints
 * "dptrain: --out OUT: ..." (a run in it: "in use by another run (pid N)")
 * and returns 1. */
int outdir_lock(outdir *o);
/* Whether a run may start in the folder: 0 when it holds no earlier run's
 * files, when resume is the folder's own checkpoint (the same run goes on),
 * or with overwrite (then o->clear is set); else prints the refusal and
 * returns 1. */
int outdir_check(outdir *o, const char *resume, int overwrite);
/* dpt_fit_config.on_start: remove the earlier run's files when o->clear. */
dpt_status outdir_clear(void *o);
/* Release the lock (the lock file stays: removing it would let two runs
 * each hold a lock on a different file of the same name). */
void outdir_unlock(outdir *o);

#endif
