/* Direct stride-1 convolution micro-kernels, written once and compiled per
 * instruction set: conv_avx512.c and conv_avx2.c define the vector macros
 * below, then include this file.
 *
 * Both kernels work on one image in the "wide" layout (conv_direct.c): a
 * zero-padded input plane of width wp, and an output whose row stride is also
 * wp, so output position q and filter tap t read input position q + off[t].
 * Every tap is then a contiguous (unaligned) vector load, with no im2col.
 *
 * Needed before inclusion:
 *   VEC             vector type of VW floats
 *   VLOAD(p)        unaligned load      VSTORE(p, v)  unaligned store
 *   VSET1(x)        broadcast           VZERO()       zeros
 *   VFMA(a, b, c)   a * b + c           VADD(a, b)
 *   VW              lanes
 *   FWD_CB, FWD_NV  forward tile: FWD_CB output channels x FWD_NV vectors
 *   DW_CB, DW_KB    weight-gradient tile: DW_CB channels x DW_KB filter taps
 *   KERN(name)      the suffixed function name
 * Register budget: FWD_CB*FWD_NV + FWD_NV + 1 and DW_CB*DW_KB + DW_CB + DW_KB
 * vector registers (32 on AVX-512, 16 on AVX2). */
#include "ops/conv_direct.h"

#include <stddef.h>

/* y[co][q] (co < c_out, q < nq, nq a multiple of FWD_NV*VW) =
 *   bias[co] + Σ_ci Σ_t wpk[...] * x[ci*ps + q + off[t]].
 * wpk: for each block of FWD_CB output channels (c_out padded with zero
 * weights to a multiple of FWD_CB), [ci][t][FWD_CB] contiguous. */
static void KERN(fwd)(const float *x, size_t ps, int c_in, int kt, const int *off,
                      const float *wpk, const float *bias, int c_out, float *y, size_t ys, int nq)
{
    const int tile = FWD_NV * VW;
    const size_t kblk = (size_t)c_in * kt * FWD_CB;
    for (int c0 = 0; c0 < c_out; c0 += FWD_CB) {
        const float *wb = wpk + (size_t)(c0 / FWD_CB) * kblk;
        const int cn = c_out - c0 < FWD_CB ? c_out - c0 : FWD_CB;
        for (int q = 0; q < nq; q += tile) {
            VEC acc[FWD_CB][FWD_NV];
#pragma GCC unroll 16
            for (int c = 0; c < FWD_CB; c++) {
                VEC b0 = (bias && c < cn) ? VSET1(bias[c0 + c]) : VZERO();
#pragma GCC unroll 4
                for (int v = 0; v < FWD_NV; v++)
                    acc[c][v] = b0;
            }
            const float *w = wb;
            for (int ci = 0; ci < c_in; ci++) {
                const float *xc = x + (size_t)ci * ps + q;
                for (int t = 0; t < kt; t++) {
                    const float *xt = xc + off[t];
                    VEC xv[FWD_NV];
#pragma GCC unroll 4
                    for (int v = 0; v < FWD_NV; v++)
                        xv[v] = VLOAD(xt + v * VW);
#pragma GCC unroll 16
                    for (int c = 0; c < FWD_CB; c++) {
                        VEC wv = VSET1(w[c]);
#pragma GCC unroll 4
                        for (int v = 0; v < FWD_NV; v++)
                            acc[c][v] = VFMA(wv, xv[v], acc[c][v]);
                    }
                    w += FWD_CB;
                }
            }
#pragma GCC unroll 16
            for (int c = 0; c < FWD_CB; c++) {
                if (c < cn) {
                    float *yc = y + (size_t)(c0 + c) * ys + q;
#pragma GCC unroll 4
                    for (int v = 0; v < FWD_NV; v++)
                        VSTORE(yc + v * VW, acc[c][v]);
                }
            }
        }
    }
}

/* part[co][k][lane] += Σ_q dy[co][q] * xk[k][q], lanes kept apart (summed
 * once at the end of the batch). dy: c_out rows of stride dys (c_out padded
 * to DW_CB with rows pointing at zeros); xk: K pointers, K padded to DW_KB.
 * nq is a multiple of VW. */
static void KERN(dw)(const float *const *dy, int c_out, const float *const *xk, int k_total,
                     int nq, float *part)
{
    for (int c0 = 0; c0 < c_out; c0 += DW_CB) {
        for (int k0 = 0; k0 < k_total; k0 += DW_KB) {
            VEC acc[DW_CB][DW_KB];
#pragma GCC unroll 16
            for (int c = 0; c < DW_CB; c++)
#pragma GCC unroll 16
                for (int j = 0; j < DW_KB; j++)
                    acc[c][j] = VZERO();
            const float *dp[DW_CB], *xp[DW_KB];
#pragma GCC unroll 16
            for (int c = 0; c < DW_CB; c++)
                dp[c] = dy[c0 + c];
#pragma GCC unroll 16
            for (int j = 0; j < DW_KB; j++)
                xp[j] = xk[k0 + j];
            for (int q = 0; q < nq; q += VW) {
                VEC d[DW_CB];
#pragma GCC unroll 16
                for (int c = 0; c < DW_CB; c++)
                    d[c] = VLOAD(dp[c] + q);
#pragma GCC unroll 16
                for (int j = 0; j < DW_KB; j++) {
                    VEC xv = VLOAD(xp[j] + q);
#pragma GCC unroll 16
                    for (int c = 0; c < DW_CB; c++)
                        acc[c][j] = VFMA(d[c], xv, acc[c][j]);
                }
            }
#pragma GCC unroll 16
            for (int c = 0; c < DW_CB; c++) {
#pragma GCC unroll 16
                for (int j = 0; j < DW_KB; j++) {
                    float *pp = part + ((size_t)(c0 + c) * k_total + k0 + j) * VW;
                    VSTORE(pp, VADD(VLOAD(pp), acc[c][j]));
                }
            }
        }
    }
}
