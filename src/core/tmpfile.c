/* Temporary files created exclusively, never through a symlink. */
#include "core/tmpfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int dpt_tmpfile_create(const char *path, char *tmp, size_t cap)
{
    /* Distinct names for the threads of one process (the report thread and
     * worker 0 write at once); the clock makes the names hard to guess, and
     * a taken name (planted or left by a crash) only costs another try. */
    static atomic_uint counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int tries = 0; tries < 100; tries++) {
        unsigned n = atomic_fetch_add(&counter, 1) * 2654435761u ^ (unsigned)ts.tv_nsec;
        int len = snprintf(tmp, cap, "%s.tmp.%ld.%08x", path, (long)getpid(), n);
        if (len < 0 || (size_t)len >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST)
            return fd;
        ts.tv_nsec += 7919;
    }
    errno = EEXIST;
    return -1;
}
