/* LSTM and GRU over a batch of sequences, forward and backpropagation
 * through time (declared in ops.h, which gives the layouts).
 *
 * The input projections of all N·T steps are one product over x viewed as
 * [N·T, F]; it writes the gate buffer [N][T][G·H] in the same batch-major
 * order, so step t of every sequence is rows of stride T·G·H that the
 * per-step recurrent product (over the batch) adds into. The state before
 * each step is kept the same way ([N][T][H]), so the weight gradients of
 * all steps are again one product each, over N·T rows.
 *
 * Two paths, chosen with the other ops kernels (kernels.c, DPT_KERNELS):
 * "generic" calls the BLAS for every product; "avx2" and "avx512" run the
 * vector kernels of rnn_isa.h (rnn_kern.h): the per-step recurrence with
 * W_hh packed once per call and the gates fused into the product, the gate
 * gradients, dW_hh over all steps and the bias sums. Both are
 * deterministic, and each sequence's arithmetic is independent of the
 * rest of the batch and of where its padding is in the vector kernels.
 *
 * save (dpt_rnn_save_floats), with S = N·T:
 *   LSTM: gates [S][4H] (activated i, f, g, o), hprev [S][H], cprev [S][H],
 *         tc [S][H] (tanh of the cell after the step)
 *   GRU:  gates [S][3H] (activated r, z, n), hpart [S][3H] (W_hh h + b_hh;
 *         the vector kernels fill only its n third, W_hn h + b_hn, the
 *         only part the backward reads), hprev [S][H]
 * then w_ihᵀ [F][G·H] (sparse input, below), W_hh packed for the forward
 * kernels and N bytes of step masks.
 * work (dpt_rnn_work_floats): dP [S][G·H] (gradient of the input-side
 * pre-activations), dHp [S][3H] (GRU: of the hidden-side ones; the LSTM's
 * are dP), three [N][H] vectors: dh, dh2, dc, then dW_ihᵀ [F][G·H] (sparse
 * input), W_hh packed for the backward kernels and N bytes of step masks.
 *
 * Sparse input: a language model's x is one-hot (one nonzero in F = the
 * vocabulary), where the dense products with W_ih (the projection, dW_ih)
 * are mostly multiplications by zero. When at most one x in 8 is nonzero,
 * the projection adds the rows of w_ihᵀ that x selects and dW_ih adds the
 * rows of dP into the rows of dW_ihᵀ that x selects, in row order (the
 * same float arithmetic for a one-hot x: one product per output). */
#include "ops/gemm.h"
#include "ops/ops.h"
#include "ops/rnn_isa.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

static float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }

/* tanh through expf: glibc's tanhf goes through expm1f, which was a fifth
 * of an LSTM step; this form is as accurate in absolute terms (about 1e-7,
 * what float32 activations carry anyway) and saturates cleanly (expf
 * overflowing to inf gives 1, underflowing to 0 gives -1). */
static float th(float v) { return 1.0f - 2.0f / (expf(2.0f * v) + 1.0f); }

int dpt_rnn_gates(dpt_rnn_kind kind) { return kind == DPT_RNN_LSTM ? 4 : 3; }

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/* Floats of the saved state, before the sparse and packed sections. */
static size_t save_core(const dpt_rnn_desc *d)
{
    size_t s = (size_t)d->n * d->t, h = (size_t)d->h;
    if (d->kind == DPT_RNN_LSTM)
        return s * (4 * h + 3 * h);
    return s * (3 * h + 3 * h + h);
}

static size_t work_core(const dpt_rnn_desc *d)
{
    size_t s = (size_t)d->n * d->t, h = (size_t)d->h;
    size_t g = (size_t)dpt_rnn_gates(d->kind);
    return s * g * h * (d->kind == DPT_RNN_GRU ? 2 : 1) + 3 * (size_t)d->n * h;
}

static size_t gh_of(const dpt_rnn_desc *d) { return (size_t)dpt_rnn_gates(d->kind) * d->h; }

/* Packed W_hh, for any kernel set (rnn_isa.h's sizes at the widest). */
static size_t fwd_pack_max(const dpt_rnn_desc *d)
{
    return gh_of(d) * round_up((size_t)d->h, RNN_VN_MAX);
}

static size_t bwd_pack_max(const dpt_rnn_desc *d)
{
    return gh_of(d) * round_up((size_t)d->h, RNN_BW_MAX);
}

static size_t mask_floats(const dpt_rnn_desc *d) { return ((size_t)d->n + 3) / 4; }

size_t dpt_rnn_save_floats(const dpt_rnn_desc *d)
{
    return save_core(d) + (size_t)d->f * gh_of(d) + fwd_pack_max(d) + mask_floats(d);
}

size_t dpt_rnn_work_floats(const dpt_rnn_desc *d)
{
    return work_core(d) + (size_t)d->f * gh_of(d) + bwd_pack_max(d) + mask_floats(d);
}

/* The vector kernels of the selected set; NULL: the BLAS path. */
static const rnn_isa *pick(void)
{
#ifdef DPT_HAVE_RNN_X86
    const char *k = dpt_ops_kernels();
    if (strcmp(k, "avx512") == 0)
        return &dpt_rnn_isa_avx512;
    if (strcmp(k, "avx2") == 0)
        return &dpt_rnn_isa_avx2;
#endif
    return NULL;
}

/* At most one x in 8 nonzero. */
static int sparse(const float *x, size_t s, int f)
{
    const size_t n = s * (size_t)f, lim = n / 8;
    size_t nz = 0;
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f && ++nz > lim)
            return 0;
    return 1;
}

/* out [m] += v · w [m]. */
static void axpy(const rnn_isa *isa, float *out, const float *w, float v, int m)
{
    if (isa) {
        isa->axpy(out, w, v, m);
        return;
    }
    for (int j = 0; j < m; j++)
        out[j] += v * w[j];
}

/* Whether step t of sequence b is a valid (unpadded) step. */
static int live(const dpt_rnn_desc *d, const int *len, int b, int t)
{
    if (!len)
        return 1;
    assert(len[b] >= 0 && len[b] <= d->t);
    return d->pad_left ? t >= d->t - len[b] : t < len[b];
}

/* The input-side products over all steps (x · w_ihᵀ, dPᵀ · x, dP · w_ih
 * with dense x): dptrain's GEMM (gemm.h) with the avx512 set, where
 * bench/gemm_bench measured it 1.2-2.0x OpenBLAS's Haswell kernels on
 * 4096 steps of 89 features into 4·256 gates (bench/RESULTS-gemm.md); the
 * avx2 set's GEMM is at parity with the BLAS, so with it and generic these
 * stay with the BLAS. The recurrence keeps its fused kernels, and
 * dW_hh rnn_kern.h's dw (gemm_bench --lstm: 0.80x and 0.84x the GEMM's time
 * at H 128 and 256, 1.08x at 512). */
static void product(const rnn_isa *isa, int ta, int tb, int m, int n, int k, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
#ifdef DPT_HAVE_RNN_X86
    if (isa == &dpt_rnn_isa_avx512) {
        dpt_sgemm(ta, tb, m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#else
    (void)isa;
#endif
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* out [S][gh] = x [S][f] · w_ihᵀ + bias rows (b1, plus b2 on the first
 * n2 columns). wt: room for w_ihᵀ [f][gh] (sparse x). */
static void project(const rnn_isa *isa, const float *x, const float *w_ih, const float *b1,
                    const float *b2, int n2, float *out, int s, int f, int gh, float *wt)
{
    if (s <= 0)
        return;
    const int sp = sparse(x, (size_t)s, f);
    if (sp) /* w_ihᵀ, a block of rows at a time so both sides stay in cache */
        for (int j0 = 0; j0 < gh; j0 += 16)
            for (int k = 0; k < f; k++)
                for (int j = j0; j < gh && j < j0 + 16; j++)
                    wt[(size_t)k * gh + j] = w_ih[(size_t)j * f + k];
    for (int j = 0; j < gh; j++) /* row 0 holds the bias row until it comes last */
        out[j] = (b1 ? b1[j] : 0.0f) + (b2 && j < n2 ? b2[j] : 0.0f);
    for (int r = s - 1; r >= 0; r--) {
        float *o = out + (size_t)r * gh;
        if (r > 0)
            memcpy(o, out, (size_t)gh * sizeof *o);
        /* The sparse rows while the row is in cache. */
        for (int k = 0; sp && k < f; k++) {
            const float v = x[(size_t)r * f + k];
            if (v != 0.0f)
                axpy(isa, o, wt + (size_t)k * gh, v, gh);
        }
    }
    if (!sp)
        product(isa, 0, 1, s, gh, f, x, f, w_ih, f, 1.0f, out, gh);
}

/* The vector kernels' forward: one fused call per step. */
static void forward_isa(const rnn_isa *isa, const dpt_rnn_desc *d, const int *len,
                        const float *w_hh, const float *b_hh, float *save, float *y, float *hn,
                        float *cn)
{
    const int N = d->n, T = d->t, H = d->h, lstm = d->kind == DPT_RNN_LSTM;
    const int G = dpt_rnn_gates(d->kind), GH = G * H;
    const size_t S = (size_t)N * T;
    float *gates = save;
    float *hpart = lstm ? NULL : gates + S * GH;
    float *hprev = lstm ? gates + S * GH : hpart + S * 3 * H;
    float *cprev = lstm ? hprev + S * H : NULL;
    float *tc = lstm ? cprev + S * H : NULL;
    float *wp = save + save_core(d) + (size_t)d->f * GH;
    unsigned char *live_b = (unsigned char *)(wp + fwd_pack_max(d));
    isa->fwd_pack(w_hh, G, H, wp);
    const size_t TH = (size_t)T * H;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < N; b++)
            live_b[b] = (unsigned char)live(d, len, b, t);
        const int last = t + 1 == T;
        rnn_fwd st = {
            .n = N, .h = H, .lstm = lstm, .live = live_b, .wp = wp,
            .hp = hprev + (size_t)t * H, .hp_ld = TH,
            .cp = lstm ? cprev + (size_t)t * H : NULL, .cp_ld = TH,
            .gates = gates + (size_t)t * GH, .g_ld = (size_t)T * GH,
            .hq = lstm ? NULL : hpart + (size_t)t * GH + 2 * H, .hq_ld = (size_t)T * GH,
            .b_hn = !lstm && b_hh ? b_hh + 2 * H : NULL,
            .tc = lstm ? tc + (size_t)t * H : NULL, .tc_ld = TH,
            .y = y + (size_t)t * H, .y_ld = TH,
            .hn = last ? hn : hprev + (size_t)(t + 1) * H, .hn_ld = last ? (size_t)H : TH,
            .cn = !lstm ? NULL : last ? cn : cprev + (size_t)(t + 1) * H,
            .cn_ld = last ? (size_t)H : TH,
        };
        isa->fwd_step(&st);
    }
}

void dpt_rnn_forward(const dpt_rnn_desc *d, const float *x, const int *len, const float *w_ih,
                     const float *w_hh, const float *b_ih, const float *b_hh, const float *h0,
                     const float *c0, float *y, float *hn, float *cn, float *save)
{
    const int N = d->n, T = d->t, F = d->f, H = d->h, lstm = d->kind == DPT_RNN_LSTM;
    const int G = dpt_rnn_gates(d->kind), GH = G * H;
    const size_t S = (size_t)N * T;
    const rnn_isa *isa = pick();
    float *gates = save;
    float *hpart = lstm ? NULL : gates + S * GH;
    float *hprev = lstm ? gates + S * GH : hpart + S * 3 * H;
    float *cprev = lstm ? hprev + S * H : NULL;
    float *tc = lstm ? cprev + S * H : NULL;
    if (T <= 0) {
        /* No steps: the state passes through. */
        for (size_t i = 0; i < (size_t)N * H; i++) {
            if (hn)
                hn[i] = h0 ? h0[i] : 0.0f;
            if (lstm && cn)
                cn[i] = c0 ? c0[i] : 0.0f;
        }
        return;
    }

    /* The LSTM adds both biases up front; the GRU's b_hn belongs inside
     * r·(W_hn h + b_hn), so the BLAS path seeds the hidden product with
     * b_hh and the vector kernels add b_hr, b_hz up front and b_hn in the
     * step. */
    project(isa, x, w_ih, b_ih, b_hh, lstm ? GH : isa ? 2 * H : 0, gates, (int)S, F, GH,
            save + save_core(d));
    for (int b = 0; b < N; b++) {
        for (int j = 0; j < H; j++) {
            hprev[(size_t)b * T * H + j] = h0 ? h0[(size_t)b * H + j] : 0.0f;
            if (lstm)
                cprev[(size_t)b * T * H + j] = c0 ? c0[(size_t)b * H + j] : 0.0f;
        }
    }
    if (isa) {
        forward_isa(isa, d, len, w_hh, b_hh, save, y, hn, cn);
        return;
    }
    if (!lstm)
        for (size_t r = 0; r < S; r++)
            for (int j = 0; j < GH; j++)
                hpart[r * GH + j] = b_hh ? b_hh[j] : 0.0f;
    for (int t = 0; t < T; t++) {
        float *acc = lstm ? gates + (size_t)t * GH : hpart + (size_t)t * GH;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, GH, H, 1.0f,
                    hprev + (size_t)t * H, T * H, w_hh, H, 1.0f, acc, T * GH);
        for (int b = 0; b < N; b++) {
            const size_t row = (size_t)b * T + t;
            const int on = live(d, len, b, t);
            float *gr = gates + row * GH, *yr = y + row * H;
            const float *hp = hprev + row * H;
            float *hnext = t + 1 < T ? hprev + (row + 1) * H : (hn ? hn + (size_t)b * H : NULL);
            if (lstm) {
                const float *cp = cprev + row * H;
                float *cnext = t + 1 < T ? cprev + (row + 1) * H : (cn ? cn + (size_t)b * H : NULL);
                for (int j = 0; j < H; j++) {
                    float hv = hp[j], cv = cp[j], thv = 0.0f;
                    if (on) {
                        float i = sigm(gr[j]), f = sigm(gr[H + j]);
                        float g = th(gr[2 * H + j]), o = sigm(gr[3 * H + j]);
                        gr[j] = i, gr[H + j] = f, gr[2 * H + j] = g, gr[3 * H + j] = o;
                        cv = f * cv + i * g;
                        thv = th(cv);
                        hv = o * thv;
                    }
                    tc[row * H + j] = thv;
                    yr[j] = on ? hv : 0.0f;
                    if (hnext)
                        hnext[j] = hv;
                    if (cnext)
                        cnext[j] = cv;
                }
            } else {
                const float *hq = hpart + row * GH;
                for (int j = 0; j < H; j++) {
                    float hv = hp[j];
                    if (on) {
                        float r = sigm(gr[j] + hq[j]), z = sigm(gr[H + j] + hq[H + j]);
                        float nn = th(gr[2 * H + j] + r * hq[2 * H + j]);
                        gr[j] = r, gr[H + j] = z, gr[2 * H + j] = nn;
                        hv = (1.0f - z) * nn + z * hv;
                    }
                    yr[j] = on ? hv : 0.0f;
                    if (hnext)
                        hnext[j] = hv;
                }
            }
        }
    }
}

/* db[j] = Σ_r dp[r][j] in float64, a block of columns at a time so the
 * rows are read contiguously (column by column strides through all S·GH
 * floats once per column). */
static void colsum(const float *dp, size_t s, int gh, float *db)
{
    enum { BLK = 64 };
    for (int j0 = 0; j0 < gh; j0 += BLK) {
        const int nj = gh - j0 < BLK ? gh - j0 : BLK;
        double acc[BLK] = {0};
        for (size_t r = 0; r < s; r++) {
            const float *row = dp + r * gh + j0;
            for (int j = 0; j < nj; j++)
                acc[j] += row[j];
        }
        for (int j = 0; j < nj; j++)
            db[j0 + j] = (float)acc[j];
    }
}

/* The vector kernels' backward recurrence: dP (and dHp) of every step;
 * returns the buffer holding dh before step 0 (dh or dh2 of work). */
static float *backward_isa(const rnn_isa *isa, const dpt_rnn_desc *d, const int *len,
                           const float *w_hh, const float *save, const float *dy, float *work)
{
    const int N = d->n, T = d->t, H = d->h, lstm = d->kind == DPT_RNN_LSTM;
    const int G = dpt_rnn_gates(d->kind), GH = G * H;
    const size_t S = (size_t)N * T, NH = (size_t)N * H, TH = (size_t)T * H;
    const float *gates = save;
    const float *hpart = lstm ? NULL : gates + S * GH;
    const float *hprev = lstm ? gates + S * GH : hpart + S * 3 * H;
    const float *cprev = lstm ? hprev + S * H : NULL;
    const float *tc = lstm ? cprev + S * H : NULL;
    float *dP = work, *dHp = lstm ? dP : dP + S * GH;
    float *dh = dHp + S * GH, *dh2 = dh + NH, *dc = dh2 + NH;
    float *wp = work + work_core(d) + (size_t)d->f * GH;
    unsigned char *live_b = (unsigned char *)(wp + bwd_pack_max(d));
    isa->bwd_pack(w_hh, G, H, wp);
    for (int t = T - 1; t >= 0; t--) {
        for (int b = 0; b < N; b++)
            live_b[b] = (unsigned char)live(d, len, b, t);
        rnn_bwd st = {
            .n = N, .h = H, .lstm = lstm, .live = live_b, .wp = wp,
            .gates = gates + (size_t)t * GH, .g_ld = (size_t)T * GH,
            .hp = hprev + (size_t)t * H, .hp_ld = TH,
            .cp = lstm ? cprev + (size_t)t * H : NULL, .cp_ld = TH,
            .hq = lstm ? NULL : hpart + (size_t)t * GH + 2 * H, .hq_ld = (size_t)T * GH,
            .tc = lstm ? tc + (size_t)t * H : NULL, .tc_ld = TH,
            .dy = dy ? dy + (size_t)t * H : NULL, .dy_ld = TH,
            .dp = dP + (size_t)t * GH, .dp_ld = (size_t)T * GH,
            .dq = dHp + (size_t)t * GH, .dq_ld = (size_t)T * GH,
            .dh = dh, .dc = dc, .dh_out = dh2,
        };
        isa->bwd_step(&st);
        float *sw = dh;
        dh = dh2, dh2 = sw;
    }
    return dh;
}

void dpt_rnn_backward(const dpt_rnn_desc *d, const float *x, const int *len, const float *w_ih,
                      const float *w_hh, const float *save, const float *dy, const float *dhn,
                      const float *dcn, float *dx, float *dw_ih, float *dw_hh, float *db_ih,
                      float *db_hh, float *dh0, float *dc0, float *work)
{
    const int N = d->n, T = d->t, F = d->f, H = d->h, lstm = d->kind == DPT_RNN_LSTM;
    const int G = dpt_rnn_gates(d->kind), GH = G * H;
    const size_t S = (size_t)N * T, NH = (size_t)N * H;
    const float *gates = save;
    const float *hpart = lstm ? NULL : gates + S * GH;
    const float *hprev = lstm ? gates + S * GH : hpart + S * 3 * H;
    const float *cprev = lstm ? hprev + S * H : NULL;
    const float *tc = lstm ? cprev + S * H : NULL;
    float *dP = work;
    float *dHp = lstm ? dP : dP + S * GH; /* the LSTM's hidden side is dP itself */
    float *dh = dHp + S * GH;
    float *dh2 = dh + NH, *dc = dh2 + NH;

    for (size_t i = 0; i < NH; i++) {
        dh[i] = dhn ? dhn[i] : 0.0f;
        dc[i] = lstm && dcn ? dcn[i] : 0.0f;
    }
    const rnn_isa *isa = pick();
    if (isa)
        dh = backward_isa(isa, d, len, w_hh, save, dy, work);
    for (int t = T - 1; t >= 0 && !isa; t--) {
        for (int b = 0; b < N; b++) {
            const size_t row = (size_t)b * T + t;
            float *pr = dP + row * GH, *qr = dHp + row * GH;
            float *hb = dh + (size_t)b * H, *h2 = dh2 + (size_t)b * H, *cb = dc + (size_t)b * H;
            if (!live(d, len, b, t)) {
                /* A padded step: the state passed through unchanged. */
                memset(pr, 0, (size_t)GH * sizeof *pr);
                if (!lstm)
                    memset(qr, 0, (size_t)GH * sizeof *qr);
                memcpy(h2, hb, (size_t)H * sizeof *h2);
                continue;
            }
            const float *gr = gates + row * GH, *hp = hprev + row * H;
            const float *dyr = dy ? dy + row * H : NULL;
            if (lstm) {
                const float *cp = cprev + row * H, *th = tc + row * H;
                for (int j = 0; j < H; j++) {
                    float i = gr[j], f = gr[H + j], g = gr[2 * H + j], o = gr[3 * H + j];
                    float gh = hb[j] + (dyr ? dyr[j] : 0.0f);
                    float dcj = cb[j] + gh * o * (1.0f - th[j] * th[j]);
                    pr[j] = dcj * g * i * (1.0f - i);
                    pr[H + j] = dcj * cp[j] * f * (1.0f - f);
                    pr[2 * H + j] = dcj * i * (1.0f - g * g);
                    pr[3 * H + j] = gh * th[j] * o * (1.0f - o);
                    cb[j] = dcj * f;
                    h2[j] = 0.0f;
                }
            } else {
                const float *hq = hpart + row * GH;
                for (int j = 0; j < H; j++) {
                    float r = gr[j], z = gr[H + j], nn = gr[2 * H + j];
                    float gh = hb[j] + (dyr ? dyr[j] : 0.0f);
                    float da = gh * (1.0f - z) * (1.0f - nn * nn);
                    float dr = da * hq[2 * H + j] * r * (1.0f - r);
                    float dz = gh * (hp[j] - nn) * z * (1.0f - z);
                    pr[j] = qr[j] = dr;
                    pr[H + j] = qr[H + j] = dz;
                    pr[2 * H + j] = da;
                    qr[2 * H + j] = da * r;
                    h2[j] = gh * z;
                }
            }
        }
        /* dh before step t = (hidden-side gradients of step t) · W_hh,
         * plus the direct paths seeded into dh2 above. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, H, GH, 1.0f,
                    dHp + (size_t)t * GH, T * GH, w_hh, H, 1.0f, dh2, H);
        float *sw = dh;
        dh = dh2, dh2 = sw;
    }
    if (dh0)
        memcpy(dh0, dh, NH * sizeof *dh0);
    if (lstm && dc0)
        memcpy(dc0, dc, NH * sizeof *dc0);

    const int s = (int)S;
    if (sparse(x, S, F)) {
        /* dW_ihᵀ [F][GH] row k += x[r][k] · dP[r] over rows r in order. */
        float *wt = work + work_core(d);
        memset(wt, 0, (size_t)F * GH * sizeof *wt);
        for (size_t r = 0; r < S; r++)
            for (int k = 0; k < F; k++) {
                const float v = x[r * F + k];
                if (v != 0.0f)
                    axpy(isa, wt + (size_t)k * GH, dP + r * GH, v, GH);
            }
        for (int j = 0; j < GH; j++)
            for (int k = 0; k < F; k++)
                dw_ih[(size_t)j * F + k] = wt[(size_t)k * GH + j];
    } else {
        product(isa, 1, 0, GH, F, s, dP, GH, x, F, 0.0f, dw_ih, F);
    }
    if (isa)
        isa->dw(dHp, S, GH, hprev, H, dw_hh);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, GH, H, s, 1.0f, dHp, GH, hprev, H,
                    0.0f, dw_hh, H);
    void (*csum)(const float *, size_t, int, float *) = isa ? isa->colsum : colsum;
    csum(dP, S, GH, db_ih);
    if (lstm) /* the same gradients on both sides */
        memcpy(db_hh, db_ih, (size_t)GH * sizeof *db_hh);
    else
        csum(dHp, S, GH, db_hh);
    if (dx)
        product(isa, 0, 0, s, F, GH, dP, GH, w_ih, F, 0.0f, dx, F);
}
