/* The row kernels of max and average pooling (pool_kern.h), compiled per
 * instruction set: pool.c itself ("generic", 4-float vectors),
 * conv_dw_avx512.c and conv_dw_avx2.c (beside the depthwise kernels, which
 * share their vector helpers). pool.c picks a set from dpt_ops_kernels().
 * Internal to ops/. */
#ifndef DPT_OPS_POOL_ISA_H
#define DPT_OPS_POOL_ISA_H

#include "ops/ops.h"

typedef struct pool_isa {
    int vn; /* floats per vector */
    /* dst[0 .. left) = pv, dst[left .. left + n) = src, dst[left + n ..
     * total) = pv: a row padded for the taps. */
    void (*row_pad)(const float *src, int n, float pv, int left, int total, float *dst);
    /* even[c] = z[2c], odd[c] = z[2c + 1], c < n rounded up to a vector;
     * and the inverse. */
    void (*deint2)(const float *z, int n, float *even, float *odd);
    void (*int2)(const float *even, const float *odd, int n, float *z);
    /* Max over nt taps for outputs ox < n of one row: tap t of output ox
     * reads tap[t][ox] (an input pixel, or -inf for padding), whose index
     * in the plane is tidx[t] + ox·sw; the taps in the scan order of
     * pool.c's window_argmax (row by row, the first of equal maxima, a NaN
     * taking over). y[ox] = the maximum; idx (NULL: not wanted) = its
     * index, or first + max(0, ox·sw − pw) (the window's first pixel) when
     * no tap took; idx has room for n rounded up to a vector. */
    void (*max_row)(const float *const *tap, const int *tidx, int nt, int n, int sw, int pw,
                    int first, float *y, int *idx);
    /* y[ox] = (Σ_t tap[t][ox], in tap order from +0) · inv, ox < n. */
    void (*avg_row)(const float *const *tap, int nt, int n, float inv, float *y);
    /* dst[j] = g[j]·inv, j < n. */
    void (*scale_row)(const float *g, int n, float inv, float *dst);
    /* dst[j] += g[j], j < n. */
    void (*add_row)(float *dst, const float *g, int n);
    /* dst[ox] += g[ox] where best[ox] == tidx + ox·sw (this tap is the
     * window's maximum), else += 0, ox < n (best readable to n rounded up
     * to a vector). */
    void (*add_argmax)(float *dst, const float *g, const int *best, int tidx, int sw, int n);
    /* 2x2 windows, stride 2, no padding, outputs ox < n of one row from
     * input rows r0 and r1 (columns 2ox, 2ox + 1): y[ox] = the maximum as
     * window_argmax finds it; idx (NULL: not wanted) = the tap it took,
     * 0..3 in scan order (r0's pair, then r1's); up to a vector of bytes
     * past idx[n - 1] may be written (DPT_POOL_IDX_SLACK: the caller's
     * room, or a row written later). */
    void (*max2_row)(const float *r0, const float *r1, int n, float *y, unsigned char *idx);
    /* max2_row of `rows` output rows (input rows r0 + 2·oy·w and the one
     * after; y, idx, xv rows n apart) with a batch norm applied first:
     * each tap is (v − bn[0])·bn[1] + bn[2] (mean, scale, shift), then
     * max(0, ·) when relu, the float expression of dpt_bn_apply_forward; xv (NULL: not
     * wanted) gets the input value (before the batch norm) at the tap
     * taken. */
    void (*max2_rows_bn)(const float *r0, int w, int rows, int n, const float *bn, int relu,
                         float *y, unsigned char *idx, float *xv);
    /* The backward of max2_row's row from its idx (read up to a vector
     * past idx[n - 1]): columns [0, 2n) of dx
     * rows d0 (r0's) and d1 get g[ox] + 0 at the tap taken, +0 elsewhere
     * (the scalar scatter into a zeroed dx). */
    void (*max2_back_row)(const float *g, const unsigned char *idx, int n, float *d0, float *d1);
    /* max2_back_row, and the backward sums of the batch norm (+ ReLU when
     * relu) that max2_rows_bn applied, over the row's window maxima (the
     * only nonzero gradients): g' = g masked by the ReLU of the maximum's
     * xv, st[0 .. VN) += g' and st[VN .. 2·VN) += g'·(xv − bn[0]) per
     * lane (st holds 2·VN floats, VN this set's lanes, each row's sums
     * added in turn); for `rows` rows of a plane (g, idx, xv rows n apart),
     * dx plane dp (input rows w apart; NULL: the sums only, no dx
     * written). */
    void (*max2_back_rows_bn)(const float *g, const unsigned char *idx, const float *xv,
                              int rows, int n, const float *bn, int relu, float *dp, int w,
                              float *st);
} pool_isa;

/* The scalar code the vector path must match bit for bit, for the tests:
 * mode 0 max forward (out = y), 1 max backward (out = dx, from x and
 * dy), 2 average forward (y), 3 average backward (dx from dy). */
void dpt_pool2d_reference(int mode, const dpt_pool2d_desc *d, const float *x, const float *dy,
                          float *out);

#if defined(__x86_64__) || defined(__i386__)
extern const pool_isa dpt_pool_isa_avx512, dpt_pool_isa_avx2;
#endif

#endif
