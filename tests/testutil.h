/* Tiny helpers shared by the tests (static inline only).
 *
 * A test counts failures with CHECK / CHECK_MSG / tu_check_close and ends
 * with `return tu_exit();` (0 when all passed, 1 otherwise). A test that
 * cannot run here (no GPU, no MPI launcher) returns TU_SKIP, which ctest
 * reports as skipped. */
#ifndef DPT_TESTUTIL_H
#define DPT_TESTUTIL_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TU_SKIP 77

/* This translation unit's failure counter. */
static inline int *tu_failures(void)
{
    static int n;
    return &n;
}

static inline int tu_exit(void) { return *tu_failures() ? 1 : 0; }

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            ++*tu_failures();                                                          \
        }                                                                              \
    } while (0)

/* CHECK with a printf-style explanation. */
#define CHECK_MSG(cond, ...)                                                           \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            ++*tu_failures();                                                          \
        }                                                                              \
    } while (0)

/* Relative error of `got` against the reference `ref`, normalised by the
 * largest reference magnitude: max_i |got_i - ref_i| / max(max_i |ref_i|, tiny).
 * Scale-free, and not fooled by reference entries near zero. NaN anywhere in
 * `got` gives +inf. *worst_i (may be NULL) receives the index of the largest
 * difference. */
static inline double tu_rel_err(const float *got, const float *ref, size_t n, size_t *worst_i)
{
    double max_diff = 0.0, max_ref = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d != d)
            d = INFINITY;
        if (d > max_diff) {
            max_diff = d;
            wi = i;
        }
        if (fabs((double)ref[i]) > max_ref)
            max_ref = fabs((double)ref[i]);
    }
    if (worst_i)
        *worst_i = wi;
    return max_diff / (max_ref > 1e-30 ? max_ref : 1e-30);
}

/* Compare with tu_rel_err, print one line "  name: rel err E (tol T) ok|FAIL"
 * and count a failure when E > tol. Returns the error. */
static inline double tu_check_close(const char *name, const float *got, const float *ref, size_t n,
                                    double tol)
{
    size_t wi = 0;
    double e = tu_rel_err(got, ref, n, &wi);
    int ok = e <= tol;
    printf("  %-40s rel err %.3e (tol %.0e) %s", name, e, tol, ok ? "ok" : "FAIL");
    if (!ok && n)
        printf("  [worst at %zu: got %.9g, want %.9g]", wi, (double)got[wi], (double)ref[wi]);
    printf("\n");
    if (!ok)
        ++*tu_failures();
    return e;
}

/* Path of a file under tests/fixtures/: "$DPT_SOURCE_DIR/tests/fixtures/name"
 * (ctest sets DPT_SOURCE_DIR). Run by hand without it, the folder of this
 * header as the compiler saw it (absolute under CMake) stands in.
 * Writes into buf and returns it. */
static inline const char *tu_fixture(const char *name, char *buf, size_t size)
{
    const char *root = getenv("DPT_SOURCE_DIR");
    if (root && *root) {
        snprintf(buf, size, "%s/tests/fixtures/%s", root, name);
    } else {
        const char *self = __FILE__;
        const char *slash = strrchr(self, '/');
        int dir_len = slash ? (int)(slash - self) : 1;
        snprintf(buf, size, "%.*s/fixtures/%s", dir_len, slash ? self : ".", name);
    }
    return buf;
}

/* 1 when the files at a and b both open and hold the same bytes. */
static inline int tu_same_bytes(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = getc(fa), cb = getc(fb);
        same = ca == cb;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

#endif
