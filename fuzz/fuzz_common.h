/* Shared by the fuzz targets: put the input in a temporary file, for the
 * parsers that take a path (as users give them). */
#ifndef DPT_FUZZ_COMMON_H
#define DPT_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write data to a file named like `suffix` under the temp folder; returns
 * the path in buf, or NULL. */
static inline const char *fuzz_file(const uint8_t *data, size_t n, const char *suffix, char *buf,
                                    size_t cap)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, cap, "%s/dpt_fuzz_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), suffix);
    FILE *f = fopen(buf, "wb");
    if (!f)
        return NULL;
    int ok = fwrite(data, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? buf : NULL;
}

#endif
