/* Temporary files created exclusively, never through a symlink. */
#include "core/tmpfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int dpt_tmpfile_create(const char *path, char *tmp, size_t cap)
{
    /* The name is predictable and need not be otherwise: O_EXCL|O_NOFOLLOW
     * never opens a file or link someone put there, and a taken name only
     * costs another try. Each file has one writer in a process, so two
     * threads never race for one name (and O_EXCL would settle it if they
     * did). */
    for (unsigned n = 0; n < 100; n++) {
        int len = snprintf(tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), n);
        if (len < 0 || (size_t)len >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}
