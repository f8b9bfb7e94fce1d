/* Opening files named from outside: regular files only, never blocking. */
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind(mode_t m)
{
    if (S_ISDIR(m))
        return "a folder";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    return "not a file";
}

dpt_status dpt_file_open_regular(const char *path, int *fd_out, long long *size_out)
{
    *fd_out = -1;
    if (!path)
        return dpt_fail(DPT_ERR_ARG, "dpt_file_open_regular: path is NULL");
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer; O_NOCTTY: a terminal never becomes our controlling one. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int err = errno;
        struct stat sb;
        /* A socket cannot be opened at all (ENXIO): say what it is. */
        if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
            return dpt_fail(DPT_ERR_IO, "%s: not a regular file (%s)", path, kind(sb.st_mode));
        return dpt_fail(DPT_ERR_IO, "%s: cannot open: %s", path, strerror(err));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return dpt_fail(DPT_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return dpt_fail(DPT_ERR_IO, "%s: not a regular file (%s)", path, kind(sb.st_mode));
    }
    /* A regular file: reads may block normally (stdio and zlib do not
     * expect EAGAIN). */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        return dpt_fail(DPT_ERR_IO, "%s: cannot open: %s", path, strerror(err));
    }
    if (size_out)
        *size_out = (long long)sb.st_size;
    *fd_out = fd;
    return DPT_OK;
}

dpt_status dpt_file_fopen_regular(const char *path, FILE **out, long long *size_out)
{
    *out = NULL;
    int fd;
    dpt_status s = dpt_file_open_regular(path, &fd, size_out);
    if (s != DPT_OK)
        return s;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int err = errno;
        close(fd);
        return dpt_fail(err == ENOMEM ? DPT_ERR_NOMEM : DPT_ERR_IO, "%s: cannot open: %s", path,
                        strerror(err));
    }
    *out = f;
    return DPT_OK;
}
