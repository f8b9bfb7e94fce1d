/* Vector kernels of the recurrent layers (rnn.c), written once in
 * rnn_kern.h and compiled per instruction set (rnn_avx512.c, rnn_avx2.c).
 * rnn.c picks a set from dpt_ops_kernels(); "generic" keeps the BLAS path.
 * Internal to ops/.
 *
 * The recurrence is a product of the batch's states [n, H] with W_hhᵀ per
 * step, small in n (the batch share of one worker), where a BLAS call packs
 * all of W_hh again every step. These kernels take W_hh packed once per
 * forward or backward call, and fuse what follows the product into it:
 *   forward: the gate activations, the cell and the new state of the units
 *     a tile computed (the packed forward panel holds the G gates of VN
 *     units side by side, so a tile of rows has every gate of its units);
 *   backward: the gradient of the gates (elementwise, vectorised) and the
 *     product giving dh of the step before.
 * Every row's arithmetic is the same whichever tile it falls in, so a
 * sequence's results do not depend on the rest of the batch or on where
 * its padding is. */
#ifndef DPT_OPS_RNN_ISA_H
#define DPT_OPS_RNN_ISA_H

#include "ops/ops.h"

#include <stddef.h>

/* One step of the forward pass over the n rows (sequences) of the batch.
 * Row pointers are base + b * ld. */
typedef struct rnn_fwd {
    int n, h, lstm;
    const unsigned char *live; /* [n]: 0 where step t is padding for row b */
    const float *wp;           /* W_hh packed by fwd_pack */
    const float *hp;           /* [n][h] state before the step */
    const float *cp;           /* [n][h] LSTM cell before the step */
    float *gates;              /* [n][G·h]: in the input projection (+ biases), out activated */
    float *hq;                 /* GRU: [n][h] out W_hn h + b_hn (the n gate's hidden part) */
    const float *b_hn;         /* GRU: [h] (NULL: zero) */
    float *tc;                 /* LSTM: [n][h] out tanh(c') (0 on padded steps) */
    float *y;                  /* [n][h] out h' (0 on padded steps) */
    float *hn, *cn;            /* [n][h] out h', c' (the next step's hp, cp); may be NULL */
    size_t hp_ld, cp_ld, g_ld, hq_ld, tc_ld, y_ld, hn_ld, cn_ld;
} rnn_fwd;

/* The gate gradients of one backward step, then dh before it. */
typedef struct rnn_bwd {
    int n, h, lstm;
    const unsigned char *live;
    const float *wp;       /* W_hh packed by bwd_pack */
    const float *gates;    /* [n][G·h] activated gates of the step */
    const float *hp;       /* GRU: [n][h] state before the step */
    const float *cp;       /* LSTM: [n][h] cell before the step */
    const float *hq;       /* GRU: [n][h] W_hn h + b_hn */
    const float *tc;       /* LSTM: [n][h] tanh(c') */
    const float *dy;       /* [n][h] or NULL */
    float *dp;             /* [n][G·h] out: gradient of the input-side pre-activations */
    float *dq;             /* GRU: [n][3h] out: of the hidden-side ones (LSTM: dp) */
    float *dh;             /* [n][h] in: gradient of h' (without dy); read only */
    float *dc;             /* LSTM: [n][h] in/out: of c', becomes that of c */
    float *dh_out;         /* [n][h] out: gradient of the state before the step */
    size_t g_ld, hp_ld, cp_ld, hq_ld, tc_ld, dy_ld, dp_ld, dq_ld;
} rnn_bwd;

typedef struct rnn_isa {
    /* Packed copies of w_hh [G·h][h]: forward panels (the G gates of VN
     * units, for every k) and backward panels (RNN_BW units for every k of
     * G·h); floats they take, at most what dpt_rnn_*_floats reserve. */
    size_t (*fwd_pack_floats)(int g, int h);
    void (*fwd_pack)(const float *w_hh, int g, int h, float *wp);
    void (*fwd_step)(const rnn_fwd *s);
    size_t (*bwd_pack_floats)(int g, int h);
    void (*bwd_pack)(const float *w_hh, int g, int h, float *wp);
    void (*bwd_step)(const rnn_bwd *s);
    /* dw [gh][h] = dpᵀ [gh][s] · hp [s][h] (the weight gradient of W_hh
     * over all steps), one fused chain per element in row order. */
    void (*dw)(const float *dp, size_t s, int gh, const float *hp, int h, float *dw);
    /* db[j] = Σ_r dp[r][j] over s rows of gh, in float64 and row order. */
    void (*colsum)(const float *dp, size_t s, int gh, float *db);
    /* out[j] += v · w[j] for j < m (sparse input rows). */
    void (*axpy)(float *out, const float *w, float v, int m);
} rnn_isa;

/* Units per backward panel, and the widest vector, for the sizes rnn.c
 * reserves. */
#define RNN_VN_MAX 16
#define RNN_BW_MAX 64

#if defined(__x86_64__) || defined(__i386__)
#define DPT_HAVE_RNN_X86 1
extern const rnn_isa dpt_rnn_isa_avx512, dpt_rnn_isa_avx2;
#endif

#endif
