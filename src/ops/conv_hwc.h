/* The HWC convolution algorithm (conv2d.c's table entry "hwc"): channels
 * in vector lanes, as oneDNN lays wide layers out. Per image the input
 * (its batch norm applied) is packed into a zero-padded [H+2p][W+2p][C]
 * buffer; an output tile of R positions of one row x 1-2 vectors of output
 * channels accumulates broadcast(x[pos][ci]) * w[tap][ci][co-vector], so
 * stride and dilation only move the broadcast's address. The tile goes to
 * an [P][C_out] buffer that is transposed back to the NCHW planes, where
 * the bias is added and the output's batch-norm sums are taken.
 * Backward: dx, at stride 1 with a square kernel, as the forward tiles
 * over dy zero-padded by dil*(k-1)-p with the flipped, transposed weights
 * (stored once); elsewhere by scattering, per tap, the tile's Σ_co
 * dy[pos][co] * w[tap][co][ci-vector] into a padded [H+2p][W+2p][C]
 * gradient (any stride or dilation the same way); dw as acc[ci][co-vector] += x[pos][ci] *
 * dy[pos][co-vector] per tap; the output's batch-norm backward applied
 * while dy is packed. Groups 1, at least 16 channels in and out; the
 * vector kernel sets only. fused = 1. Internal to ops/. */
#ifndef DPT_OPS_CONV_HWC_H
#define DPT_OPS_CONV_HWC_H

#include "ops/conv_direct.h" /* conv_prefetch */
#include "ops/ops.h"

#include <stddef.h>

/* Channel counts are padded to this in the packed buffers (a multiple of
 * every kernel set's vector, so the scratch size does not depend on the set). */
#define DPT_HWC_CPAD 16
/* The most images a block takes (hwc_isa.block). */
#define DPT_HWC_MAX_BLOCK 3
/* The most images a weight-gradient pass takes (conv_hwc.c dw_group). */
#define DPT_HWC_MAX_GROUP 12

/* The geometry the kernels see (one image). */
typedef struct hwc_geom {
    int c_in, c_out;   /* real counts; packed pixels are cip floats apart */
    int cip, cop;      /* padded to DPT_HWC_CPAD */
    int wp;            /* padded input row, in pixels */
    int oh, ow, stride, dil, kh, kw;
} hwc_geom;

typedef struct hwc_isa {
    const char *name;
    int vw; /* floats per vector: the weight blocks are 2*vw channels wide */
    /* Images per block (1 to DPT_HWC_MAX_BLOCK) for an oh x ow output:
     * tiles take rows of several images on small planes. */
    int (*block)(int oh, int ow);
    /* For the nb images of a block (packed images ximg floats apart, outputs
     * yimg): yp [oh*ow][cop] = conv(xp [hp][wp][cip], wpk), wpk in blocks of
     * 2*vw output channels (the last may be vw), each [kh*kw][c_in][width]
     * (conv_hwc.c wblk): a tile reads its weights in one stream.
     * pf (may be NULL): the next block's lines, fetched into L2 while the
     * kernel runs, spread over its taps (pf->per is set here). */
    void (*fwd)(const hwc_geom *g, int nb, const float *xp, size_t ximg, const float *wpk,
                float *yp, size_t yimg, conv_prefetch *pf);
    /* dxp [hp][wp][cip] += the scatter of dyp [oh*ow][cop] through wt,
     * blocks of 2*vw input channels each [kh*kw][c_out][width], for the nb
     * images of a block (as fwd); pf's lines are fetched over its taps. */
    void (*dx)(const hwc_geom *g, int nb, const float *dyp, size_t yimg, const float *wt,
               float *dxp, size_t ximg, conv_prefetch *pf);
    /* dwa (the layout of fwd's wpk) += Σ_img Σ_pos xp[pos+tap][ci] * dyp[pos][co]
     * over nb images (as fwd; dyp's rows dyrow floats apart, images yimg): on small planes a register tile then sums
     * several images before it adds into dwa (which may not fit in L2). */
    void (*dw)(const hwc_geom *g, int nb, const float *xp, size_t ximg, const float *dyp,
               int dyrow, size_t yimg, float *dwa, conv_prefetch *pf);
    /* dst [(y+pad)*wp + x+pad][c] (pixel stride cs) = src [c][y][x] for c
     * channels of h x w planes, a's forward applied (a may be NULL); lanes
     * up to c rounded to 8 get zeros. */
    void (*pack)(const float *src, int c, int h, int w, int pad, int wp, int cs,
                 const dpt_bn_apply *a, float *dst);
    /* The inverse, plus bias[c] (bias may be NULL). */
    void (*unpack)(const float *src, int c, int h, int w, int pad, int wp, int cs,
                   const float *bias, float *dst);
    /* One plane of n through the output batch norm's backward (as conv2d.c's
     * unfused path, dpt_bn_apply); returns the sum of out. */
    float (*bnback)(const float *g, const float *y, int n, float mean, float scale, float shift,
                    float kf, float ka, float kb, int relu, float *out);
    /* sum[c] += Σ y, sumsq[c] += Σ y² over one image's yp [P][cop] (+ bias,
     * may be NULL), for its c real channels. */
    void (*sums)(const float *yp, int P, int cop, int c, const float *bias, double *sum,
                 double *sumsq);
} hwc_isa;

#if defined(__x86_64__) || defined(__i386__)
#ifndef DPT_HAVE_X86_KERNELS
#define DPT_HAVE_X86_KERNELS 1
#endif
extern const hwc_isa dpt_hwc_isa_avx512;
extern const hwc_isa dpt_hwc_isa_avx2;
#endif

/* Channels padded to DPT_HWC_CPAD, and a scratch offset rounded to 16
 * floats (64 bytes): for hwc and the algorithms built on its kernels. */
static inline int dpt_hwc_cpad(int c)
{
    return (c + DPT_HWC_CPAD - 1) / DPT_HWC_CPAD * DPT_HWC_CPAD;
}
static inline size_t dpt_hwc_al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* One image's output gradient as the convolution uses it: dyi (c_out planes
 * of P) through dya's backward (the output batch norm, the expression of
 * conv2d.c's unfused path) into tmp, or dyi itself without dya; dbs[co]
 * += its sums (db). Returns the planes to pack. Shared by hwc, wino and
 * wino_s2, whose backward passes take dy the same way. */
const float *dpt_hwc_dy_image(const hwc_isa *isa, const float *dyi, const float *yi, int c_out,
                              int P, const dpt_bn_apply *dya, float *tmp, double *dbs);

int dpt_conv_hwc_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_hwc_work_floats(const dpt_conv2d_desc *d);
/* The conv_algo contracts (conv_algo.h). */
void dpt_conv_hwc_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                          const float *w, const float *b, float *y, float *work, double *sum,
                          double *sumsq);
void dpt_conv_hwc_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *dy, const dpt_bn_apply *dya,
                           const float *y, float *dx, float *dw, float *db, float *work,
                           double *xg);

#endif
