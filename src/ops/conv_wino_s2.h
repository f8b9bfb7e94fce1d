/* Winograd for stride-2 3x3 convolutions (conv2d.c's table entry
 * "wino_s2"): groups 1, dilation 1, padding 0-2, 16+ channels in and out,
 * the vector kernel sets. A stride-2 3x3 convolution is a stride-1 2x2
 * convolution over the space-to-depth input: s[a][b][ph][c] =
 * xpad[2a+py][2b+px][c] (ph = 2*py + px, 4*c_in channels), filter tap
 * (ty, tx) of phase ph = w[2ty+py][2tx+px] (zero where that is past 2).
 * That is computed as Winograd F(4x4, 2x2) (Toom-Cook points 0, 1, -1, 2,
 * inf): per 4x4 output tile, V = B^T d B over a 5x5 block of s, a GEMM per
 * point xi of the 25 (M[xi][tile][co] = Σ_k V[xi][tile][k] U[xi][k][co],
 * K = 4*c_in, hwc's 1x1 kernel as wino uses it), Y = A^T M A: 100 c_in
 * multiplications per 16 outputs, 81 with the phases whose transformed
 * filter is zero at a point skipped there (ws2_pts), against 144 direct.
 * The space-to-depth is the input transform's strided reads of hwc's
 * padded buffer.
 * Backward: dw accumulates dU[xi] += V[xi]^T Z[xi], Z = A dY A^T, then
 * dW = G^T dU G per phase, back to the 3x3 taps; dx, in phases of the
 * unpadded x (dx[2a+py][2b+px], ceil(h/2) x ceil(w/2) positions: no
 * tiles wasted on the padding), is a stride-1 2x2 correlation of dy (padded
 * by 1 at top and left for pad 0) with each phase's taps of w, the same
 * F(4x4, 2x2) pass with 4*c_in outputs, whose output transform writes each
 * phase to its pixels (depth-to-space). fused = 1. Internal to ops/. */
#ifndef DPT_OPS_CONV_WINO_S2_H
#define DPT_OPS_CONV_WINO_S2_H

#include "ops/conv_hwc.h"

/* The 1-D tap of 3 that tap t (0, 1) of phase component py takes, or -1
 * (past the filter). Forward (pad < 0): 2t + py. dx of a convolution
 * padded by pad: dx[2a+py] = Σ_e dy[a+e] w[py+pad-2e] over the two
 * e = t + e0 (e0 = -1 for pad 0, else 0) that give taps 0-2. */
static inline int ws2_ktap(int py, int t, int pad)
{
    const int k = pad < 0 ? 2 * t + py : py + pad - 2 * (t + (pad == 0 ? -1 : 0));
    return k < 0 || k > 2 ? -1 : k;
}

/* Which phases a pass's points keep. A phase component with one tap has
 * a transformed filter zero at one point: G's row 4 is (0, 1), row 0
 * (1/2, 0), so one tap t = 0 gives zeros at point 4, t = 1 at point 0
 * (forward: py = 1 has only t = 0; dx, pad 1: py = 0; pads 0 and 2: py = 1,
 * t = 1). Point xi = 5k + l keeps the phases not zero there (forward:
 * 4, 2 in row or column 4, 1 at (4, 4): 81 of 100 c_in multiplications
 * per 16 outputs, the count of the phases' 2x2, 2x1, 1x2 and 1x1 filters),
 * in phase order (slot), their planes one after another (koff). */
typedef struct ws2_pts {
    signed char slot[25][4]; /* phase ph's slot at point xi; -1: zero there */
    int nk[25];              /* phases kept at xi */
    int koff[25];            /* Σ nk over the points before xi */
    int all;                 /* Σ nk */
} ws2_pts;

/* Floats added per point to the planes' offsets in U and dU: the planes
 * are multiples of 4 KB, so the filter transforms' 25 stores (and the
 * weight gradient's 25 loads) of a step would share one L1 set. */
#define WS2_USKEW 16
/* Where point xi's plane starts in U or dU, unit floats a kept phase. */
static inline size_t ws2_uoff(const ws2_pts *pt, int xi, size_t unit)
{
    return (size_t)pt->koff[xi] * unit + (size_t)xi * WS2_USKEW;
}

/* Tile k of a block (images tpi tiles apart, ntx tiles a row) is image
 * k / tpi, tile row (k % tpi) / ntx, column (k % tpi) % ntx; a call takes
 * tiles k0 .. k0+nt-1. A tile's point xi of phase ph, channel c lies at
 * buf[xi*ps + j*nph*cs + ph*cs + c] (j = k - k0). */
typedef struct ws2_isa {
    const hwc_isa *hwc; /* the GEMM kernels, pack, unpack, sums, bnback */
    /* V = B^T d B, d the 5x5 block of s at tile (ty, tx): nph 4, s pixel
     * (a, b) of phase (py, px) is xp[(2a+py)*xw + 2b+px] (space-to-depth),
     * stored in the phase's slot of each point (pt; none: not stored; a
     * tile 4*cs floats); nph 1, s = xp. Pixels cs floats apart, images ximg. */
    void (*in)(const float *xp, size_t ximg, int xw, int cs, int nph, int ntx, int tpi, int k0,
               int nt, float *v, size_t ps, const ws2_pts *pt);
    /* Y = A^T m A into the outputs inside oh x ow (of s): nph 1, output
     * (a, b) at yp[a*yw + b] (m's tiles cs apart); nph 4, phase (py, px)
     * at yp[(2a+py)*yw + 2b+px] (depth-to-space), in m at point xi in its
     * slot (pt; none: zero), tiles nk(xi)*cs apart. Pixels cs floats
     * apart, images yimg. */
    void (*out)(const float *m, size_t ps, int cs, int nph, int ntx, int tpi, int k0, int nt,
                int oh, int ow, float *yp, size_t yimg, int yw, const ws2_pts *pt);
    /* z = A dY A^T, dY the 4x4 block at row 4*ty, column 4*tx of dyp
     * ([.][dw][cs], images dimg apart; zero beyond the output). */
    void (*grad)(const float *dyp, size_t dimg, int dw, int cs, int ntx, int tpi, int k0, int nt,
                 float *z, size_t ps);
    /* u[xi] = G g G^T in hwc's blocked 1x1 weight layout (conv_hwc.c wblk:
     * per point [ni][nop] in blocks of 2*vw outer channels), the planes of
     * the points' kept phases (pt) one after another. dx 0: inner
     * slot*cip + ci (ni = nk*cip), outer co (nop = cop), g phase ph's 2x2
     * taps of w[co][ci] (ws2_ktap, pad -1); dx 1: inner co (ni = cout),
     * outer slot*cip + ci (nop = nk*cip), g dx's phase ph's taps for a
     * convolution padded by pad. Zeros for padded channels.
     * wt: w[co][ci][9] as [ci][9][cop] (dx 0) or [co][9][cip] (dx 1),
     * zeros in the padded lanes (conv_wino_s2.c w_outer). */
    void (*filt)(const float *wt, int cin, int cout, int cip, int cop, int dx, int pad,
                 const ws2_pts *pt, float *u);
    /* dw[co][ci][3x3] = the taps of G^T du G (du in filt's dx 0 layout). */
    void (*wgrad)(const float *du, int cin, int cout, int cip, int cop, const ws2_pts *pt,
                  float *dw);
} ws2_isa;

#ifdef DPT_HAVE_X86_KERNELS
extern const ws2_isa dpt_ws2_isa_avx512;
extern const ws2_isa dpt_ws2_isa_avx2;
#endif

int dpt_conv_wino_s2_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_wino_s2_work_floats(const dpt_conv2d_desc *d);
/* The conv_algo contracts (conv_algo.h). */
void dpt_conv_wino_s2_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                              const float *w, const float *b, float *y, float *work, double *sum,
                              double *sumsq);
void dpt_conv_wino_s2_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                               const float *w, const float *dy, const dpt_bn_apply *dya,
                               const float *y, float *dx, float *dw, float *db, float *work,
                               double *xg);

#endif
