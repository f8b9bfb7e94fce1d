/* Temporary files for atomic writes (internal). A file is written under a
 * temporary name beside its final name, then renamed over it, so a reader
 * sees the old file or the new one, never half of one. The temporary name is
 * predictable in part, so it is created exclusively and never through a
 * symlink: a file or link planted at that name is left alone and another
 * name is tried, and nothing outside the folder is ever written. */
#ifndef DPT_CORE_TMPFILE_H
#define DPT_CORE_TMPFILE_H

#include <stddef.h>

/* Create a new, empty temporary file for `path`, named
 * "<path>.tmp.<pid>.<n>" in the same folder (n = 0, or the next free
 * number up to 99 when a file or link is in the way), opened write-only with
 * O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC and mode 0644 less the umask. Its name
 * goes to tmp (cap bytes). Returns the descriptor (the caller closes it and
 * renames or unlinks tmp), or -1 with errno set. */
int dpt_tmpfile_create(const char *path, char *tmp, size_t cap);

#endif
