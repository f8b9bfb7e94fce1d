/* Opening files named from outside (options, spec lines, folder entries).
 *
 * Internal to libdptrain. A path may name a FIFO, a device, a socket or a
 * folder: reading a FIFO nobody writes to blocks for ever, and a device can
 * stream without end. These helpers open without blocking, look at what was
 * opened (fstat on the descriptor, so nothing can be swapped in between),
 * and refuse anything but a regular file before a single byte is read. */
#ifndef DPT_CORE_FILE_H
#define DPT_CORE_FILE_H

#include "dptrain/core.h"

#include <stdio.h>

/* Open path read-only (O_CLOEXEC | O_NOCTTY, opened with O_NONBLOCK which is
 * cleared once the file is known to be regular). *fd_out: the descriptor,
 * owned by the caller (close it); -1 on failure. Fails with DPT_ERR_IO and
 * "<path>: cannot open: <reason>" or "<path>: not a regular file (a FIFO)"
 * (a folder, a device, a socket, ...). *size_out, if not NULL, receives
 * the file's size. */
dpt_status dpt_file_open_regular(const char *path, int *fd_out, long long *size_out);

/* The same as a stdio stream opened "rb"; the caller fcloses *out. */
dpt_status dpt_file_fopen_regular(const char *path, FILE **out, long long *size_out);

#endif
