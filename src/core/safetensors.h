/* safetensors files: 8-byte little-endian header length, a JSON header
 * mapping tensor names to {dtype, shape, data_offsets} plus an optional
 * "__metadata__" object of string values, then the raw little-endian data.
 * PyTorch's safetensors package (and anything with json + struct) reads them.
 *
 * Internal to libdptrain: net/ and train/ use it for models and checkpoints,
 * tests use it for reference fixtures. */
#ifndef DPT_SAFETENSORS_H
#define DPT_SAFETENSORS_H

#include "dptrain/core.h"

#include <stdint.h>

#define DPT_ST_MAX_DIMS 8

/* ---- reading --------------------------------------------------------------
 * dpt_st_open reads and validates the whole file: header length within the
 * file, JSON well-formed, every entry has a known dtype, a shape whose size
 * matches its byte range, ranges inside the data section and not
 * overlapping. Errors name the file and the problem. The returned handle
 * owns the file contents; pointers from dpt_st_get stay valid until
 * dpt_st_close. */
typedef struct dpt_st dpt_st;

typedef struct dpt_st_tensor {
    const char *name;
    const char *dtype;     /* "F32", "F64", "I64", "I32", "U8", ... */
    int ndim;
    int64_t shape[DPT_ST_MAX_DIMS];
    const void *data;      /* inside the file buffer; may be unaligned */
    size_t bytes;
} dpt_st_tensor;

dpt_status dpt_st_open(const char *path, dpt_st **out);
void dpt_st_close(dpt_st *st);
size_t dpt_st_count(const dpt_st *st);
/* The i-th tensor in file order (header order). */
const dpt_st_tensor *dpt_st_at(const dpt_st *st, size_t i);
/* Tensor by name, or NULL. */
const dpt_st_tensor *dpt_st_get(const dpt_st *st, const char *name);
/* __metadata__ value by key, or NULL. */
const char *dpt_st_meta(const dpt_st *st, const char *key);
/* The metadata pairs in byte order of their keys (strcmp): i < count. */
size_t dpt_st_meta_count(const dpt_st *st);
void dpt_st_meta_at(const dpt_st *st, size_t i, const char **key, const char **value);
/* Copy an F32 tensor into dst (n floats) after checking dtype and element
 * count; errors name the file and the tensor. */
dpt_status dpt_st_read_f32(const dpt_st *st, const char *name, float *dst, size_t n);

/* ---- writing --------------------------------------------------------------
 * Tensors are added by reference (data borrowed until save/free); save writes
 * atomically: a temporary file in the same folder, fsync, rename over the
 * target, fsync of the folder. On any error the target is left untouched and
 * the temporary removed. */
typedef struct dpt_st_writer dpt_st_writer;

dpt_status dpt_st_writer_new(dpt_st_writer **out);
void dpt_st_writer_free(dpt_st_writer *w);
dpt_status dpt_st_writer_add(dpt_st_writer *w, const char *name, const char *dtype, int ndim,
                             const int64_t *shape, const void *data, size_t bytes);
dpt_status dpt_st_writer_meta(dpt_st_writer *w, const char *key, const char *value);
dpt_status dpt_st_writer_save(dpt_st_writer *w, const char *path);

#endif
