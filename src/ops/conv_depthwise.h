/* Depthwise convolution (groups == c_in, c_out a multiple of c_in): the
 * DEPTHWISE entry of conv2d.c's algorithm table (conv_depthwise.c), and the
 * per-plane vector passes each instruction set provides (conv_dw_kern.h,
 * compiled by conv_depthwise.c for "generic" and by conv_dw_avx512.c,
 * conv_dw_avx2.c). Internal to ops/. */
#ifndef DPT_OPS_CONV_DEPTHWISE_H
#define DPT_OPS_CONV_DEPTHWISE_H

#include "ops/ops.h"

#include <stddef.h>

/* A run of n (1 to DW_GMAX) taps reading consecutive floats from p on:
 * the kernels read p[q + k] for k < n as shifts of vectors loaded at p + q
 * (and a vector past the last position read, so every plane read through
 * a group has VN floats of slack past it). */
#define DW_GMAX 3
typedef struct dw_grp {
    const float *p;
    int n;
} dw_grp;

typedef struct dw_isa {
    int vn; /* floats per vector */
    /* out[q] = bias + Σ_e wt[e]·src_e[q], q < nq (a multiple of vn), the
     * taps e as ng groups, wt in their order. */
    void (*mac)(const dw_grp *grp, int ng, const float *wt, float bias, float *out, size_t nq);
    /* res[e] += Σ_q g[q]·src_e[q], q < nq (a multiple of vn), for the taps
     * e of the ng groups in their order. */
    void (*dots)(const float *g, const dw_grp *grp, int ng, size_t nq, double *res);
    /* A plane [h][w] into rows ds apart: as is, or through the batch norm
     * a (forward: channel ch of a; may be NULL). */
    void (*plane_in)(const float *src, int h, int w, const dpt_bn_apply *a, int ch, float *dst,
                     size_t ds);
    /* An output gradient plane [h][n] into rows ds apart: dy, or through
     * a's backward (y [h][n] the batch norm's input; a may be NULL);
     * *sum += Σ dst. */
    void (*plane_grad)(const float *dy, const float *y, int h, int n, const dpt_bn_apply *a,
                       int ch, float *dst, size_t ds, double *sum);
    /* dst [rows][n] = the first n columns of each row of wide (row stride
     * ws); sum, sumsq (NULL: none) += Σ dst, Σ dst². */
    void (*plane_out)(const float *wide, int rows, int n, size_t ws, float *dst, double *sum,
                      double *sumsq);
    /* dst [h][w] = rows[r][0 .. w); with a (NULL: none), the sums
     * dpt_bn_grad_sums(x, dst, ...) forms for channel ch, added into *sg,
     * *sgx. */
    void (*plane_dx)(const float *const *rows, int h, int w, float *dst, const float *x,
                     const dpt_bn_apply *a, int ch, double *sg, double *sgx);
    /* Stride 2: the four input phase planes (phase (a, b) at (2a + b)·ps,
     * rows W apart; padding p) from the plane src [h][w] through a (NULL:
     * as is), in one pass; and plane_dx from the data gradient's phase
     * planes in that layout. */
    void (*pack2)(const float *src, int h, int w, const dpt_bn_apply *a, int ch, int p,
                  float *ph, size_t ps, size_t W);
    void (*plane_dx2)(const float *ph, size_t ps, size_t W, int h, int w, int p, float *dst,
                      const float *x, const dpt_bn_apply *a, int ch, double *sg, double *sgx);
} dw_isa;

#if defined(__x86_64__) || defined(__i386__)
#define DPT_HAVE_DW_X86 1
extern const dw_isa dpt_dw_isa_avx512, dpt_dw_isa_avx2;
#endif

/* The algorithm-table entry (conv_algo.h's contracts; fused: handles xa,
 * dya, the batch-norm sums and xg itself). supports: groups == c_in and
 * c_out a multiple of c_in (a channel multiplier), any kernel size, stride,
 * padding and dilation. */
int dpt_conv_depthwise_supports(const dpt_conv2d_desc *d);
size_t dpt_conv_depthwise_work_floats(const dpt_conv2d_desc *d);
void dpt_conv_depthwise_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                                const float *w, const float *b, float *y, float *work, double *sum,
                                double *sumsq);
void dpt_conv_depthwise_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                                 const float *w, const float *dy, const dpt_bn_apply *dya,
                                 const float *y, float *dx, float *dw, float *db, float *work,
                                 double *xg);

#endif
