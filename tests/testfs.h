/* File-system helpers shared by the tests that make scratch folders
 * (static inline only; kept out of testutil.h, which every test includes,
 * so that <unistd.h> names stay out of the others). */
#ifndef DPT_TESTFS_H
#define DPT_TESTFS_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* rm -r path (a test's scratch folder); errors and over-long names are
 * skipped. */
static inline void tu_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[4096];
        int n = snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (n > 0 && (size_t)n < sizeof p)
            tu_remove_tree(p);
    }
    closedir(d);
    rmdir(path);
}

/* cp from to; 0 on success, -1 on any open, read, write or close error. */
static inline int tu_copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    int rc = a && b ? 0 : -1;
    char buf[8192];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, n, b) != n)
            rc = -1;
    if (a && ferror(a))
        rc = -1;
    if (a)
        fclose(a);
    if (b && fclose(b) != 0)
        rc = -1;
    return rc;
}

#endif
