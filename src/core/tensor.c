/* Aligned allocation and float32 tensors. */
/* madvise and MADV_HUGEPAGE (Linux) are outside POSIX. */
#define _DEFAULT_SOURCE
#include "dptrain/core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Buffers of a few MB and up (activations, gradients) start on a 2 MB
 * boundary and ask for transparent huge pages: the kernels stream through
 * them image by image and channel by channel, and with 4 KB pages a step
 * walks more pages than the TLB holds. Where the kernel does not give huge
 * pages (THP off, other systems), they are ordinary memory. */
#define HUGE_BYTES ((size_t)2 << 20)

void *dpt_alloc(size_t bytes)
{
    if (bytes == 0)
        return NULL;
    size_t align = 64, rounded = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_BYTES) {
        align = HUGE_BYTES;
        rounded = (bytes + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1);
    }
#endif
    void *p = aligned_alloc(align, rounded);
    if (!p)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_BYTES)
        (void)madvise(p, rounded, MADV_HUGEPAGE); /* a hint: failure changes nothing */
#endif
    memset(p, 0, rounded);
    return p;
}

void dpt_free(void *p) { free(p); }

size_t dpt_shape_count(int ndim, const int *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return n;
}

dpt_status dpt_tensor_new(int ndim, const int *shape, dpt_tensor **out)
{
    *out = NULL;
    if (ndim < 1 || ndim > DPT_MAX_DIMS)
        return dpt_fail(DPT_ERR_ARG, "tensor: %d dimensions (1 to %d allowed)", ndim, DPT_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return dpt_fail(DPT_ERR_ARG, "tensor: negative size %d in dimension %d", shape[i], i);
    dpt_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return dpt_fail(DPT_ERR_NOMEM, "tensor: out of memory");
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->n = dpt_shape_count(ndim, shape);
    t->owns = 1;
    if (t->n) {
        t->data = dpt_alloc(t->n * sizeof(float));
        if (!t->data) {
            size_t n = t->n;
            free(t);
            return dpt_fail(DPT_ERR_NOMEM, "tensor: cannot allocate %zu floats", n);
        }
    }
    *out = t;
    return DPT_OK;
}

dpt_tensor dpt_tensor_view(float *data, int ndim, const int *shape)
{
    dpt_tensor t = {0};
    t.ndim = ndim;
    memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    t.n = dpt_shape_count(ndim, shape);
    t.data = data;
    return t;
}

void dpt_tensor_free(dpt_tensor *t)
{
    if (!t)
        return;
    if (t->owns)
        dpt_free(t->data);
    free(t);
}
