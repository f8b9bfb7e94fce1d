/* The Winograd convolution algorithm (conv2d.c's table entry "wino"):
 * F(2x2, 3x3) after Lavin & Gray (2015), for 3x3 filters at stride 1,
 * dilation 1, groups 1, padding 0-2, 16+ channels in and out, on the
 * vector kernel sets. Each 2x2 block of outputs ("tile") reads a 4x4 block
 * of the input d; with V = B^T d B and U = G g G^T (per channel pair) it is
 * Y = A^T [Σ_ci U[ci][co] ⊙ V[ci]] A: 16 multiplications per channel pair
 * for 4 outputs instead of 36. Per point xi of the 4x4 the channel sum is
 * a GEMM over the tiles, M[xi][tile][co] = Σ_ci V[xi][tile][ci] U[xi][ci][co],
 * which is hwc's 1x1 forward kernel over a "plane" of tiles (conv_hwc.h);
 * only the transforms are new (conv_wino_kern.h).
 * Data layout as hwc: the input, its batch norm applied, is packed into a
 * zero-padded [rows][cols][cip] buffer (large enough that every tile is
 * whole), outputs go to [P][cop] and are transposed back by hwc's unpack.
 * Backward: dx is the same forward over dy zero-padded by 2-pad with the
 * flipped, transposed filters; dw, since Y is linear in U:
 * dU[xi][ci][co] = Σ_tiles V[xi][t][ci] Z[xi][t][co] with Z = A dY A^T
 * (hwc's 1x1 weight-gradient kernel), then dW = G^T dU G. fused = 1.
 * Internal to ops/. */
#ifndef DPT_OPS_CONV_WINO_H
#define DPT_OPS_CONV_WINO_H

#include "ops/conv_hwc.h"

/* The transforms of one kernel set. Tile k of a block (images tpi tiles
 * apart, ntx tiles a row) is image k / tpi, tile row (k % tpi) / ntx,
 * column (k % tpi) % ntx; a call takes tiles k0 .. k0+nt-1, the transformed
 * point xi of tile k0+j at buf[xi*ps + j*cs] (cs channels, padded). */
typedef struct wino_isa {
    const hwc_isa *hwc; /* the GEMM kernels, pack, unpack, sums, bnback */
    int m;              /* F(m x m, 3x3): outputs per tile side (2 or 4); the
                         * tiles below are (m+2)^2 points and m apart */
    /* V = B^T d B: d the 4x4 block at row 2*ty, column 2*tx of image b of
     * xp ([.][xw][cs], images ximg apart). */
    void (*in)(const float *xp, size_t ximg, int xw, int cs, int ntx, int tpi, int k0, int nt,
               float *v, size_t ps);
    /* yp [(2ty+i)*ow + 2tx+j][cs] (images yimg apart) = (A^T m A)[i][j] for
     * the outputs inside oh x ow. */
    void (*out)(const float *m, size_t ps, int cs, int ntx, int tpi, int k0, int nt, int oh,
                int ow, float *yp, size_t yimg);
    /* z = A dY A^T: dY the 2x2 block at row 2*ty, column 2*tx of image b of
     * dyp ([.][dw][cs], images dimg apart; zero beyond the output). */
    void (*grad)(const float *dyp, size_t dimg, int dw, int cs, int ntx, int tpi, int k0, int nt,
                 float *z, size_t ps);
    /* u[xi] = G g G^T in hwc's blocked 1x1 weight layout (conv_hwc.c wblk:
     * per point [ni][nop] in blocks of 2*vw outer channels), g the 3x3
     * filter of inner channel i and outer o: w[o][i] (flip 0) or, for dx,
     * w[i][o] turned by 180 degrees (flip 1); zeros for o in no..nop. */
    void (*filt)(const float *w, int no, int ni, int nop, int flip, float *u);
    /* dw[o][i] = G^T du G (du in filt's layout), for o < no. */
    void (*wgrad)(const float *du, int no, int ni, int nop, float *dw);
} wino_isa;

#ifdef DPT_HAVE_X86_KERNELS
extern const wino_isa dpt_wino_isa_avx512;
extern const wino_isa dpt_wino_isa_avx2;
extern const wino_isa dpt_wino4_isa_avx512;
extern const wino_isa dpt_wino4_isa_avx2;
#endif

int dpt_conv_wino_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_wino_work_floats(const dpt_conv2d_desc *d);
/* The conv_algo contracts (conv_algo.h). */
void dpt_conv_wino_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq);
void dpt_conv_wino_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg);
/* F(4x4, 3x3) ("wino4"): 36 multiplications per 16 outputs instead of 144,
 * at some precision (the transforms' constants up to 8 and 1/24). */
int dpt_conv_wino4_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_wino4_work_floats(const dpt_conv2d_desc *d);
void dpt_conv_wino4_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *b, float *y, float *work, double *sum,
                            double *sumsq);
void dpt_conv_wino4_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                             const float *w, const float *dy, const dpt_bn_apply *dya,
                             const float *y, float *dx, float *dw, float *db, float *work,
                             double *xg);

#endif
