/* A stand-in for stb_image (cmake/fallback.cmake): binary PGM and PPM,
 * for a machine without libstb (the GPU check converts its PNG fixtures
 * to PGM). Every number in the header is bounded before use: the input is
 * a file from outside. */
#include "stb_image.h"

#include <stdint.h>
#include <stdlib.h>

static _Thread_local const char *failure;

const char *stbi_failure_reason(void) { return failure; }

void stbi_image_free(void *pixels) { free(pixels); }

static int fail(const char *why)
{
    failure = why;
    return 0;
}

/* The next header number after whitespace and '#' comments; 0 on error. */
static int header_number(FILE *f, int *out)
{
    int ch = fgetc(f);
    for (;;) {
        if (ch == '#') {
            while (ch != EOF && ch != '\n' && ch != '\r')
                ch = fgetc(f);
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' ||
                   ch == '\f') {
            ch = fgetc(f);
        } else {
            break;
        }
    }
    if (ch < '0' || ch > '9')
        return fail("PNM header: number expected");
    long v = 0;
    while (ch >= '0' && ch <= '9') {
        v = v * 10 + (ch - '0');
        if (v > (1L << 24))
            return fail("PNM header: number too large");
        ch = fgetc(f);
    }
    /* One whitespace character ends the number (after maxval: the last
     * byte before the samples). */
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != '\v' && ch != '\f')
        return fail("PNM header: whitespace expected after a number");
    *out = (int)v;
    return 1;
}

/* Reads the header at the file's position: 1 and x, y, comp, or 0. */
static int read_header(FILE *f, int *x, int *y, int *comp)
{
    int m0 = fgetc(f), m1 = fgetc(f), w, h, maxval;
    if (m0 != 'P' || (m1 != '5' && m1 != '6'))
        return fail("not a binary PGM/PPM: PNG, JPEG and BMP need stb_image "
                    "(this build has dptrain's PGM/PPM stand-in, DPT_FALLBACK=stb)");
    if (!header_number(f, &w) || !header_number(f, &h) || !header_number(f, &maxval))
        return 0;
    if (w < 1 || h < 1)
        return fail("PNM header: empty image");
    if (maxval < 1 || maxval > 255)
        return fail("PNM header: only 8-bit samples (maxval 1 to 255)");
    *x = w, *y = h, *comp = m1 == '5' ? 1 : 3;
    return 1;
}

int stbi_info_from_file(FILE *f, int *x, int *y, int *comp)
{
    long pos = ftell(f);
    int w, h, c, ok = read_header(f, &w, &h, &c);
    if (pos >= 0)
        fseek(f, pos, SEEK_SET);
    if (!ok)
        return 0;
    if (x)
        *x = w;
    if (y)
        *y = h;
    if (comp)
        *comp = c;
    return 1;
}

stbi_uc *stbi_load_from_file(FILE *f, int *x, int *y, int *comp, int req_comp)
{
    int w, h, c;
    if (req_comp != 0) {
        fail("the PGM/PPM stand-in returns native channels only");
        return NULL;
    }
    if (!read_header(f, &w, &h, &c))
        return NULL;
    /* Both at most 2^24 (header_number): the product fits 64 bits. */
    uint64_t n = (uint64_t)w * (uint64_t)h * (uint64_t)c;
    if (n > ((uint64_t)1 << 31)) {
        fail("PNM image too large");
        return NULL;
    }
    stbi_uc *pix = malloc((size_t)n);
    if (!pix) {
        fail("out of memory");
        return NULL;
    }
    if (fread(pix, 1, (size_t)n, f) != (size_t)n) {
        free(pix);
        fail("PNM data truncated");
        return NULL;
    }
    *x = w, *y = h, *comp = c;
    return pix;
}
