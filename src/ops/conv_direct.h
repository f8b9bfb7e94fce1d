/* Direct convolution: the micro-kernel table each instruction set
 * provides (conv_avx512.c, conv_avx2.c, built from conv_kern.h), and the
 * batch-level driver in conv_direct.c that conv2d.c calls. Internal to ops/. */
#ifndef DPT_OPS_CONV_DIRECT_H
#define DPT_OPS_CONV_DIRECT_H

#include "ops/ops.h"

#include <stddef.h>

/* Filters with more taps (kh·kw) take the GEMM path. */
#define DPT_CONV_DIRECT_MAX_TAPS 1024
/* Strides above this take another algorithm (s·s phase planes). */
#define DPT_CONV_DIRECT_MAX_STRIDE 8

/* Where one vector of wide output positions goes in a dense output plane:
 * lanes [0, hi_a) to plane + off_a + lane (the rest of one row), lanes
 * [lo_b, hi_b) to plane + off_b + lane (the start of the next row). An empty
 * range (hi <= lo) has offset 0. Needs rows at least one vector wide, so a
 * vector never spans more than two rows and off_b >= 0. */
typedef struct conv_out_map {
    int off_a, hi_a, off_b, lo_b, hi_b;
    unsigned bits_a, bits_b; /* the two lane ranges as bit masks (lane l: bit l) */
} conv_out_map;

/* Lines of the next image's inputs, fetched into L2 a few at a time while
 * the kernels work on the current image: the packing of the next image then
 * reads L2 instead of waiting on memory (a pack is a short, memory-bound
 * pass the hardware prefetchers do not get ahead of). The driver fills the
 * regions and per (lines per tile or block, so that they are spread over
 * the call); the kernels call conv_prefetch_step once per tile or block. */
typedef struct conv_prefetch {
    const char *p[3];
    size_t lines[3];
    size_t per;
    int r;    /* cursor: region, */
    size_t j; /* line within it */
} conv_prefetch;

static inline void conv_prefetch_step(conv_prefetch *pf)
{
    if (!pf)
        return;
    for (size_t k = 0; k < pf->per; k++) {
        while (pf->r < 3 && pf->j >= pf->lines[pf->r])
            pf->r++, pf->j = 0;
        if (pf->r == 3)
            return;
        __builtin_prefetch(pf->p[pf->r] + 64 * pf->j++, 0, 2); /* into L2 */
    }
}

typedef struct conv_isa {
    const char *name;
    int vw;             /* floats per vector */
    int fwd_cb, fwd_nv; /* forward tile: channels x vectors */
    int dw_cb, dw_kb;   /* weight-gradient tile: channels x taps */
    /* See conv_kern.h for the exact contracts. */
    void (*fwd)(const float *x, size_t ps, int c_in, int kt, const int *off, const float *wpk,
                const float *bias, int c_out, float *y, size_t ys, int nq,
                const conv_out_map *map, float *stats, const float *bx, const dpt_bn_apply *ba,
                conv_prefetch *pf);
    void (*dw)(const float *const *dy, int c_out, const float *const *xk, int k_total, int nq,
               float *part, int reduced, conv_prefetch *pf);
    /* csum: NULL, or per-lane sums of the packed values per channel. */
    void (*pad)(const float *src, int c, int h, int w, int ph, int pw, int wp, size_t ps,
                float *dst, float *csum);
    /* pad with a batch norm applied (forward), and the gradient through a
     * batch norm above (backward); see dpt_bn_apply in ops.h. */
    void (*pad_bn)(const float *src, int c, int h, int w, int ph, int pw, int wp, size_t ps,
                   float *dst, const dpt_bn_apply *a);
    void (*pad_bnback)(const float *g, const float *y, int c, int h, int w, int ph, int pw, int wp,
                       size_t ps, float *dst, const dpt_bn_apply *a, float *csum);
    /* pad_bnback with g from a max pool's gradient pg and taps pi (one
     * image's planes; see dpt_conv2d_backward_pooled). */
    void (*pad_bnback_pool)(const float *pg, const unsigned char *pi, const float *y, int c,
                            int h, int w, int ph, int pw, int wp, size_t ps, float *dst,
                            const dpt_bn_apply *a, float *csum);
    /* Stride 2: an image (through a, NULL: none) straight into its phase
     * planes (conv_kern.h). */
    void (*pack_s2)(const float *src, int c, int h, int w, int pad, size_t row0, int wp,
                    size_t ps_x, size_t ps_ph, const unsigned char *used, float *dst,
                    const dpt_bn_apply *a);
    /* Stride 2: two column phases of the data gradient back into dx rows. */
    void (*unsplit_s2)(const float *oe, const float *oo, size_t ys, int wd, int rp, int c,
                       int nbk, int nu, int iy0, int h, int w, size_t x_img, float *dx);
    /* Stacked wide output planes into dense ones, with per-lane sums
     * (stats NULL: none). */
    void (*compact)(const float *wide, int c, int oh, int ow, int wp, size_t ys, int rp, int nbk,
                    size_t img, float *dst, float *stats);
} conv_isa;

#if defined(__x86_64__) || defined(__i386__)
#define DPT_HAVE_X86_KERNELS 1
extern const conv_isa dpt_conv_isa_avx512;
extern const conv_isa dpt_conv_isa_avx2;
#endif

/* The direct kernels of the selected set (kernels.c), NULL for generic. */
const conv_isa *dpt_ops_conv_isa(void);
/* The kernel set the direct algorithm runs d with, NULL when it cannot:
 * generic kernels selected, stride above DPT_CONV_DIRECT_MAX_STRIDE,
 * padding wider than the dilated filter's extent minus one, depthwise or
 * tiny groups (fewer than 4 channels in or out per group), or planes too
 * large for int tap offsets. */
const conv_isa *dpt_conv_direct_supports(const dpt_conv2d_desc *d);
/* The heuristic choice when no measured plan says otherwise: today every
 * shape dpt_conv_direct_supports takes. */
const conv_isa *dpt_conv_direct_pick(const dpt_conv2d_desc *d);
/* Scratch floats the direct path needs for d with any kernel set. */
size_t dpt_conv_direct_work_floats(const dpt_conv2d_desc *d);
/* sum, sumsq: NULL, or per-channel Σy and Σy² of the output (as
 * dpt_conv2d_forward_sums). */
void dpt_conv_direct_forward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                             const dpt_bn_apply *xa, const float *w, const float *b, float *y,
                             float *work, double *sum, double *sumsq);
void dpt_conv_direct_backward(const conv_isa *isa, const dpt_conv2d_desc *d, const float *x,
                              const dpt_bn_apply *xa, const float *w, const float *dy,
                              const dpt_bn_apply *dya, const float *y, float *dx, float *dw,
                              float *db, float *work, double *xg);

#endif
