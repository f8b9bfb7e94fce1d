/* The part of stb_image's interface dptrain calls, for a build without
 * stb (cmake/fallback.cmake, DPT_FALLBACK=stb): implemented in
 * src/compat/stb_own.c for binary PGM (P5) and PPM (P6) with 8-bit
 * samples; other formats fail with a reason naming the stand-in. Same
 * contract as stb_image: info leaves the file where it was, load reads
 * from the current position, pixels [h, w, c] are freed with
 * stbi_image_free. */
#ifndef DPT_COMPAT_STB_IMAGE_H
#define DPT_COMPAT_STB_IMAGE_H

#include <stdio.h>

typedef unsigned char stbi_uc;

int stbi_info_from_file(FILE *f, int *x, int *y, int *comp);
/* req_comp must be 0 (native channels): the only use dptrain makes. */
stbi_uc *stbi_load_from_file(FILE *f, int *x, int *y, int *comp, int req_comp);
const char *stbi_failure_reason(void);
void stbi_image_free(void *pixels);

#endif
