/* LSTM and GRU on the GPU (gpu_rnn.h): cuBLAS for the input and recurrent
 * products, own kernels for the gates, following ops/rnn.c's BLAS path
 * step by step (same formulas, same order of the gate arithmetic, the
 * products' sums in cuBLAS's order).
 *
 * cuBLAS is column-major; rm_gemm takes row-major operands as ops/rnn.c's
 * cblas_sgemm calls do and swaps them (a row-major [r, c] matrix is the
 * column-major [c, r] one): C = op(A)·op(B) becomes Cᵀ = op(B)ᵀ·op(A)ᵀ.
 *
 * save, with S = N·T (the same sections as the CPU's):
 *   LSTM: gates [S][4H] (activated i, f, g, o), hprev [S][H], cprev [S][H],
 *         tc [S][H] (tanh of the cell after the step)
 *   GRU:  gates [S][3H] (activated r, z, n), hpart [S][3H] (W_hh h + b_hh),
 *         hprev [S][H]
 * work: dP [S][G·H], dHp [S][3H] (GRU; the LSTM's is dP), dh, dh2, dc [N][H].
 * Rows of sequence b are b·T + t: step t of every sequence is a strided
 * set of rows (stride T·G·H), which the per-step products address with
 * their leading dimension. */
#include "ops/cuda/gpu_internal.cuh"
#include "ops/cuda/gpu_rnn.h"

#include <float.h>

static size_t gh_of(const gpu_rnn_desc *d) { return (size_t)(d->lstm ? 4 : 3) * d->h; }

size_t gpu_rnn_save_floats(const gpu_rnn_desc *d)
{
    size_t s = (size_t)d->n * d->t, h = (size_t)d->h;
    return d->lstm ? s * (4 * h + 3 * h) : s * (3 * h + 3 * h + h);
}

size_t gpu_rnn_work_floats(const gpu_rnn_desc *d)
{
    size_t s = (size_t)d->n * d->t;
    return s * gh_of(d) * (d->lstm ? 1 : 2) + 3 * (size_t)d->n * d->h;
}

/* C [m][n] (row-major, ldc) = op(A) [m][k] · op(B) [k][n] + beta·C. */
static dpt_status rm_gemm(gpu_ctx *g, int ta, int tb, int m, int n, int k, const float *a,
                          int lda, const float *b, int ldb, float beta, float *c, int ldc,
                          const char *what)
{
    if (m <= 0 || n <= 0)
        return DPT_OK;
    const float one = 1.0f;
    cublasStatus_t e = gpu_blas.sgemm(g->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, b, ldb, a,
                                      lda, &beta, c, ldc);
    return e == CUBLAS_STATUS_SUCCESS ? DPT_OK : gpu_fail_cublas(g, e, "lstm/gru", what);
}

/* As ops/rnn.c: sigmoid, and tanh through expf (saturating cleanly). */
__device__ static float sigm(float v) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-v))); }
__device__ static float th(float v)
{
    return __fsub_rn(1.0f, __fdiv_rn(2.0f, __fadd_rn(expf(__fmul_rn(2.0f, v)), 1.0f)));
}

__device__ static int live(const int *len, int pad_left, int T, int b, int t)
{
    if (!len)
        return 1;
    return pad_left ? t >= T - len[b] : t < len[b];
}

/* ---- forward -------------------------------------------------------------------- */

/* gates [S][gh] = b1 (+ b2 where n2 > j): the bias rows the input product
 * adds onto (beta = 1), as the CPU's project seeds them. */
__global__ void rnn_seed_kernel(float *__restrict__ gates, size_t total, int gh,
                                const float *__restrict__ b1, const float *__restrict__ b2,
                                int n2)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(i % (size_t)gh);
        float v = b1 ? b1[j] : 0.0f;
        if (b2 && j < n2)
            v = __fadd_rn(v, b2[j]);
        gates[i] = v;
    }
}

/* The state before step 0 of every sequence: h0/c0 or zeros. */
__global__ void rnn_init_kernel(int N, int T, int H, const float *__restrict__ h0,
                                const float *__restrict__ c0, float *__restrict__ hprev,
                                float *__restrict__ cprev)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H)
        return;
    int b = i / H, j = i % H;
    size_t at = (size_t)b * T * H + j;
    hprev[at] = h0 ? h0[i] : 0.0f;
    if (cprev)
        cprev[at] = c0 ? c0[i] : 0.0f;
}

/* Step t's gates (their pre-activations in gates, W_hh h already added for
 * the LSTM; the GRU's hidden product without bias in hpart), one thread
 * per (sequence, unit). */
__global__ void lstm_step_kernel(int N, int T, int H, int t, const int *__restrict__ len,
                                 int pad_left, float *__restrict__ gates,
                                 float *__restrict__ hprev, float *__restrict__ cprev,
                                 float *__restrict__ tc, float *__restrict__ y,
                                 float *__restrict__ hn, float *__restrict__ cn)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H)
        return;
    int b = i / H, j = i % H;
    size_t row = (size_t)b * T + t;
    float *gr = gates + row * 4 * H;
    int on = live(len, pad_left, T, b, t);
    float hv = hprev[row * H + j], cv = cprev[row * H + j], thv = 0.0f;
    if (on) {
        float ig = sigm(gr[j]), fg = sigm(gr[H + j]);
        float gg = th(gr[2 * H + j]), og = sigm(gr[3 * H + j]);
        gr[j] = ig, gr[H + j] = fg, gr[2 * H + j] = gg, gr[3 * H + j] = og;
        cv = __fadd_rn(__fmul_rn(fg, cv), __fmul_rn(ig, gg));
        thv = th(cv);
        hv = __fmul_rn(og, thv);
    }
    tc[row * H + j] = thv;
    if (y)
        y[row * H + j] = on ? hv : 0.0f;
    if (t + 1 < T) {
        hprev[(row + 1) * H + j] = hv;
        cprev[(row + 1) * H + j] = cv;
    } else {
        if (hn)
            hn[(size_t)b * H + j] = hv;
        if (cn)
            cn[(size_t)b * H + j] = cv;
    }
}

__global__ void gru_step_kernel(int N, int T, int H, int t, const int *__restrict__ len,
                                int pad_left, const float *__restrict__ b_hh,
                                float *__restrict__ gates, float *__restrict__ hpart,
                                float *__restrict__ hprev, float *__restrict__ y,
                                float *__restrict__ hn)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H)
        return;
    int b = i / H, j = i % H;
    size_t row = (size_t)b * T + t;
    float *gr = gates + row * 3 * H, *hq = hpart + row * 3 * H;
    /* The CPU seeds the hidden product with b_hh; here it is added after
     * (the same value up to the product's rounding order). */
    if (b_hh) {
        hq[j] = __fadd_rn(hq[j], b_hh[j]);
        hq[H + j] = __fadd_rn(hq[H + j], b_hh[H + j]);
        hq[2 * H + j] = __fadd_rn(hq[2 * H + j], b_hh[2 * H + j]);
    }
    int on = live(len, pad_left, T, b, t);
    float hv = hprev[row * H + j];
    if (on) {
        float r = sigm(__fadd_rn(gr[j], hq[j])), z = sigm(__fadd_rn(gr[H + j], hq[H + j]));
        float nn = th(__fadd_rn(gr[2 * H + j], __fmul_rn(r, hq[2 * H + j])));
        gr[j] = r, gr[H + j] = z, gr[2 * H + j] = nn;
        hv = __fadd_rn(__fmul_rn(__fsub_rn(1.0f, z), nn), __fmul_rn(z, hv));
    }
    if (y)
        y[row * H + j] = on ? hv : 0.0f;
    if (t + 1 < T)
        hprev[(row + 1) * H + j] = hv;
    else if (hn)
        hn[(size_t)b * H + j] = hv;
}

static unsigned blocks_for(int n) { return (unsigned)((n + GPU_THREADS - 1) / GPU_THREADS); }

#define TRY(call)                       \
    do {                                \
        if ((s = (call)) != DPT_OK)     \
            return s;                   \
    } while (0)

dpt_status gpu_rnn_forward(gpu_ctx *g, const gpu_rnn_desc *d, const float *x, const float *w_ih,
                           const float *w_hh, const float *b_ih, const float *b_hh,
                           const float *h0, const float *c0, float *y, float *hn, float *cn,
                           float *save)
{
    const int N = d->n, T = d->t, F = d->f, H = d->h, lstm = d->lstm;
    const int GH = (int)gh_of(d);
    const size_t S = (size_t)N * T;
    /* cuBLAS takes int sizes and leading dimensions (T·G·H the largest). */
    if (N <= 0 || T <= 0 || (size_t)N * H > 0x7fffffffu || S > 0x7fffffffu ||
        (size_t)T * GH > 0x7fffffffu)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: lstm/gru: %d sequences of %d steps and %d units",
                        g->device, N, T, H);
    float *gates = save;
    float *hpart = lstm ? NULL : gates + S * GH;
    float *hprev = lstm ? gates + S * GH : hpart + S * GH;
    float *cprev = lstm ? hprev + S * H : NULL;
    float *tc = lstm ? cprev + S * H : NULL;
    dpt_status s;
    /* The LSTM adds both biases up front; the GRU's b_hh belongs to the
     * hidden product (b_hn inside r·(W_hn h + b_hn)). */
    rnn_seed_kernel<<<gpu_grid(g, S * GH), GPU_THREADS, 0, g->stream>>>(gates, S * GH, GH, b_ih,
                                                                       b_hh, lstm ? GH : 0);
    TRY(gpu_check_launch(g, "lstm/gru forward (bias)"));
    TRY(rm_gemm(g, 0, 1, (int)S, GH, F, x, F, w_ih, F, 1.0f, gates, GH, "input product"));
    rnn_init_kernel<<<blocks_for(N * H), GPU_THREADS, 0, g->stream>>>(N, T, H, h0, c0, hprev,
                                                                     cprev);
    TRY(gpu_check_launch(g, "lstm/gru forward (initial state)"));
    for (int t = 0; t < T; t++) {
        if (lstm) {
            TRY(rm_gemm(g, 0, 1, N, GH, H, hprev + (size_t)t * H, T * H, w_hh, H, 1.0f,
                        gates + (size_t)t * GH, T * GH, "recurrent product"));
            lstm_step_kernel<<<blocks_for(N * H), GPU_THREADS, 0, g->stream>>>(
                N, T, H, t, d->len, d->pad_left, gates, hprev, cprev, tc, y, hn, cn);
        } else {
            TRY(rm_gemm(g, 0, 1, N, GH, H, hprev + (size_t)t * H, T * H, w_hh, H, 0.0f,
                        hpart + (size_t)t * GH, T * GH, "recurrent product"));
            gru_step_kernel<<<blocks_for(N * H), GPU_THREADS, 0, g->stream>>>(
                N, T, H, t, d->len, d->pad_left, b_hh, gates, hpart, hprev, y, hn);
        }
        TRY(gpu_check_launch(g, "lstm/gru forward (gates)"));
    }
    return DPT_OK;
}

/* ---- backward ------------------------------------------------------------------- */

__global__ void rnn_bwd_init_kernel(size_t nh, const float *__restrict__ dhn,
                                    float *__restrict__ dh, float *__restrict__ dc)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nh)
        return;
    dh[i] = dhn ? dhn[i] : 0.0f;
    dc[i] = 0.0f;
}

/* Step t's gate gradients (dP, and dHp for the GRU) from dh (the gradient
 * of the state after the step, without dy) and dy; dc updated in place;
 * h2 = the direct paths to the state before the step (the product with
 * W_hh is added after). A padded step passes dh through. */
__global__ void rnn_bwd_step_kernel(int lstm, int N, int T, int H, int t,
                                    const int *__restrict__ len, int pad_left,
                                    const float *__restrict__ gates,
                                    const float *__restrict__ hpart,
                                    const float *__restrict__ hprev,
                                    const float *__restrict__ cprev,
                                    const float *__restrict__ tc, const float *__restrict__ dy,
                                    float *dP, float *dHp, /* the same for the LSTM */
                                    const float *__restrict__ dh, float *__restrict__ dc,
                                    float *__restrict__ h2)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H)
        return;
    const int G = lstm ? 4 : 3;
    int b = i / H, j = i % H;
    size_t row = (size_t)b * T + t;
    float *pr = dP + row * G * H, *qr = dHp + row * G * H;
    if (!live(len, pad_left, T, b, t)) {
        for (int k = 0; k < G; k++) {
            pr[k * H + j] = 0.0f;
            if (!lstm)
                qr[k * H + j] = 0.0f;
        }
        h2[i] = dh[i];
        return;
    }
    const float *gr = gates + row * G * H;
    float gh = dy ? __fadd_rn(dh[i], dy[row * H + j]) : dh[i];
    if (lstm) {
        float ig = gr[j], fg = gr[H + j], gg = gr[2 * H + j], og = gr[3 * H + j];
        float thj = tc[row * H + j], cp = cprev[row * H + j];
        float dcj = __fadd_rn(dc[i], __fmul_rn(__fmul_rn(gh, og),
                                               __fsub_rn(1.0f, __fmul_rn(thj, thj))));
        pr[j] = __fmul_rn(__fmul_rn(__fmul_rn(dcj, gg), ig), __fsub_rn(1.0f, ig));
        pr[H + j] = __fmul_rn(__fmul_rn(__fmul_rn(dcj, cp), fg), __fsub_rn(1.0f, fg));
        pr[2 * H + j] = __fmul_rn(__fmul_rn(dcj, ig), __fsub_rn(1.0f, __fmul_rn(gg, gg)));
        pr[3 * H + j] = __fmul_rn(__fmul_rn(__fmul_rn(gh, thj), og), __fsub_rn(1.0f, og));
        dc[i] = __fmul_rn(dcj, fg);
        h2[i] = 0.0f;
    } else {
        const float *hq = hpart + row * 3 * H;
        float r = gr[j], z = gr[H + j], nn = gr[2 * H + j];
        float da = __fmul_rn(__fmul_rn(gh, __fsub_rn(1.0f, z)), __fsub_rn(1.0f, __fmul_rn(nn, nn)));
        float dr = __fmul_rn(__fmul_rn(__fmul_rn(da, hq[2 * H + j]), r), __fsub_rn(1.0f, r));
        float dz = __fmul_rn(__fmul_rn(__fmul_rn(gh, __fsub_rn(hprev[row * H + j], nn)), z),
                             __fsub_rn(1.0f, z));
        pr[j] = qr[j] = dr;
        pr[H + j] = qr[H + j] = dz;
        pr[2 * H + j] = da;
        qr[2 * H + j] = __fmul_rn(da, r);
        h2[i] = __fmul_rn(gh, z);
    }
}

dpt_status gpu_rnn_backward(gpu_ctx *g, const gpu_rnn_desc *d, const float *x,
                            const float *w_ih, const float *w_hh, const float *save,
                            const float *dy, const float *dhn, float *dx, float *dw_ih,
                            float *dw_hh, float *db_ih, float *db_hh, float *work)
{
    const int N = d->n, T = d->t, F = d->f, H = d->h, lstm = d->lstm;
    const int GH = (int)gh_of(d);
    const size_t S = (size_t)N * T, NH = (size_t)N * H;
    if (N <= 0 || T <= 0 || NH > 0x7fffffffu || S > 0x7fffffffu || (size_t)T * GH > 0x7fffffffu)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: lstm/gru: %d sequences of %d steps and %d units",
                        g->device, N, T, H);
    const float *gates = save;
    const float *hpart = lstm ? NULL : gates + S * GH;
    const float *hprev = lstm ? gates + S * GH : hpart + S * GH;
    const float *cprev = lstm ? hprev + S * H : NULL;
    const float *tc = lstm ? cprev + S * H : NULL;
    float *dP = work, *dHp = lstm ? dP : dP + S * GH;
    float *dh = dHp + S * GH, *dh2 = dh + NH, *dc = dh2 + NH;
    dpt_status s;
    rnn_bwd_init_kernel<<<blocks_for((int)NH), GPU_THREADS, 0, g->stream>>>(NH, dhn, dh, dc);
    TRY(gpu_check_launch(g, "lstm/gru backward (init)"));
    for (int t = T - 1; t >= 0; t--) {
        rnn_bwd_step_kernel<<<blocks_for((int)NH), GPU_THREADS, 0, g->stream>>>(
            lstm, N, T, H, t, d->len, d->pad_left, gates, hpart, hprev, cprev, tc, dy, dP, dHp,
            dh, dc, dh2);
        TRY(gpu_check_launch(g, "lstm/gru backward (gates)"));
        /* dh before step t = (hidden-side gradients of step t) · W_hh plus
         * the direct paths written into dh2. */
        TRY(rm_gemm(g, 0, 0, N, H, GH, dHp + (size_t)t * GH, T * GH, w_hh, H, 1.0f, dh2, H,
                    "recurrent gradient"));
        float *sw = dh;
        dh = dh2, dh2 = sw;
    }
    TRY(rm_gemm(g, 1, 0, GH, F, (int)S, dP, GH, x, F, 0.0f, dw_ih, F, "input weight gradient"));
    TRY(rm_gemm(g, 1, 0, GH, H, (int)S, dHp, GH, hprev, H, 0.0f, dw_hh, H,
                "recurrent weight gradient"));
    /* Bias gradients: float64 column sums over the S rows, as on the CPU. */
    TRY(gpu_channel_sum(g, dP, (int)S, GH, 1, db_ih));
    if (lstm) /* the same gradients on both sides */
        TRY(gpu_copy(g, db_hh, db_ih, (size_t)GH * sizeof(float)));
    else
        TRY(gpu_channel_sum(g, dHp, (int)S, GH, 1, db_hh));
    if (dx)
        TRY(rm_gemm(g, 0, 0, (int)S, F, GH, dP, GH, w_ih, F, 0.0f, dx, F, "input gradient"));
    return DPT_OK;
}

/* ---- masked cross-entropy of a sequence output -------------------------------------- */

__global__ void seq_xent_rows_kernel(const float *__restrict__ p, const float *__restrict__ t,
                                     int rows, int k, float w, float *__restrict__ dlogits,
                                     double *__restrict__ row_loss)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows)
        return;
    size_t at = (size_t)i * k;
    int valid = 0;
    for (int j = 0; j < k && !valid; j++)
        valid = t[at + j] != 0.0f;
    if (!valid) {
        for (int j = 0; j < k; j++)
            dlogits[at + j] = 0.0f;
        row_loss[i] = 0.0;
        return;
    }
    double loss = 0.0;
    int finite = 1;
    for (int j = 0; j < k; j++) {
        float pj = p[at + j], tj = t[at + j];
        finite &= isfinite(pj);
        if (tj != 0.0f)
            loss -= (double)tj * log(pj > FLT_MIN ? (double)pj : (double)FLT_MIN);
        dlogits[at + j] = __fmul_rn(__fsub_rn(pj, tj), w);
    }
    row_loss[i] = finite ? loss : nan("");
}

/* *loss = Σ row_loss, one block, a fixed tree: deterministic. */
__global__ void seq_sum_rows_kernel(const double *__restrict__ row_loss, int rows, double *loss)
{
    __shared__ double part[GPU_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x)
        acc += row_loss[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o)
            part[threadIdx.x] += part[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *loss = part[0];
}

dpt_status gpu_seq_xent(gpu_ctx *g, const float *p, const float *t, int rows, int k, float w,
                        float *dlogits, double *loss)
{
    if (rows < 1 || (size_t)rows > g->scratch_doubles)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: sequence cross-entropy: scratch too small for %d "
                        "rows", g->device, rows);
    seq_xent_rows_kernel<<<(rows + 127) / 128, 128, 0, g->stream>>>(p, t, rows, k, w, dlogits,
                                                                   g->scratch);
    seq_sum_rows_kernel<<<1, GPU_THREADS, 0, g->stream>>>(g->scratch, rows, loss);
    return gpu_check_launch(g, "sequence cross-entropy");
}
