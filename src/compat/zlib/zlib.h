/* Prototypes of the zlib functions dptrain calls, for a machine that has
 * the runtime libz.so.1 but not zlib's header (cmake/fallback.cmake,
 * DPT_FALLBACK=zlib). These are zlib's stable exported C interface (the
 * gz* functions take an opaque gzFile); the build links libz.so.1 itself. */
#ifndef DPT_COMPAT_ZLIB_H
#define DPT_COMPAT_ZLIB_H

#include <sys/types.h>

typedef unsigned char Bytef;
typedef unsigned int uInt;
typedef unsigned long uLong;
typedef void *voidp;
typedef const void *voidpc;
typedef struct gzFile_s *gzFile;

#define Z_NULL 0
#define Z_OK 0
#define Z_ERRNO (-1)
#define Z_BUF_ERROR (-5)

uLong crc32(uLong crc, const Bytef *buf, uInt len);
gzFile gzopen(const char *path, const char *mode);
gzFile gzdopen(int fd, const char *mode);
int gzbuffer(gzFile file, unsigned size);
int gzread(gzFile file, voidp buf, unsigned len);
int gzwrite(gzFile file, voidpc buf, unsigned len);
const char *gzerror(gzFile file, int *errnum);
int gzclose(gzFile file);
int gzclose_r(gzFile file);

#endif
