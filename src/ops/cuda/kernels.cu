/* dptrain's own CUDA kernels: ReLU, softmax, cross-entropy, SGDM, batch
 * normalisation and per-channel sums.
 *
 * They follow the CPU kernels of ops/ line by line, including the
 * precision of each step (float64 sums, float32 elementwise arithmetic).
 * The elementwise float32 expressions use the explicitly rounded
 * intrinsics (__fmul_rn, __fadd_rn, ...) so the compiler does not fuse
 * them into FMAs: given the same inputs, SGDM, the normalisation and the
 * loss gradient give the same bits as the CPU code.
 *
 * Reductions are deterministic: a fixed partition of each channel over
 * blocks (depending only on n, c and the device's multiprocessor count),
 * each block reducing in a fixed tree, then one block per channel adding
 * the partials in a fixed order. No atomics. */
#include "ops/cuda/gpu_internal.cuh"

#include <float.h>

/* ---- block reductions -------------------------------------------------------------- */

__device__ static double2 warp_sum2(double2 v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v.x += __shfl_down_sync(0xffffffffu, v.x, o);
        v.y += __shfl_down_sync(0xffffffffu, v.y, o);
    }
    return v;
}

/* Sum of v over the block, valid in thread 0. blockDim.x is a multiple of
 * 32 and at most 1024. */
__device__ static double2 block_sum2(double2 v)
{
    __shared__ double2 warp_part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum2(v);
    if (lane == 0)
        warp_part[warp] = v;
    __syncthreads();
    int n_warps = blockDim.x >> 5;
    v = threadIdx.x < n_warps ? warp_part[threadIdx.x] : make_double2(0.0, 0.0);
    if (warp == 0)
        v = warp_sum2(v);
    return v;
}

/* ---- per-channel sums (NCHW, over n and hw) ----------------------------------------------- */

enum { SUMS_PLAIN = 0, SUMS_SQUARES = 1, SUMS_BACKWARD = 2 };

/* Blocks per channel: enough blocks in all to fill the device a few times,
 * at most one per observation. c·bpc <= c + 4·n_sm (the scratch bound of
 * gpu_ctx_reserve_scratch). */
static int blocks_per_channel(const gpu_ctx *g, int n, int c)
{
    int target = 4 * g->n_sm;
    int bpc = (target + c - 1) / c;
    if (bpc < 1)
        bpc = 1;
    if (bpc > n)
        bpc = n;
    return bpc;
}

/* Block (b, ch) sums its share of observations [i0, i1) of channel ch:
 *   PLAIN     (Σ x, 0)
 *   SQUARES   (Σ x, Σ x²)
 *   BACKWARD  (Σ g, Σ g·(x − mean[ch])) with g = dy, gated by relu_y > 0
 *             when relu_y is given. */
template <int MODE>
__global__ void chan_partial_kernel(const float *__restrict__ x, const float *__restrict__ dy,
                                    const float *__restrict__ relu_y,
                                    const float *__restrict__ mean, int n, int c, int hw, int bpc,
                                    double2 *__restrict__ partial)
{
    int ch = blockIdx.y, b = blockIdx.x;
    int per = (n + bpc - 1) / bpc;
    int i0 = b * per, i1 = min(n, i0 + per);
    unsigned total = i1 > i0 ? (unsigned)(i1 - i0) * (unsigned)hw : 0u;
    double m = MODE == SUMS_BACKWARD ? (double)mean[ch] : 0.0;
    double2 acc = make_double2(0.0, 0.0);
    for (unsigned e = threadIdx.x; e < total; e += blockDim.x) {
        unsigned i = (unsigned)i0 + e / (unsigned)hw, j = e % (unsigned)hw;
        size_t idx = ((size_t)i * c + ch) * hw + j;
        if (MODE == SUMS_PLAIN) {
            acc.x += (double)x[idx];
        } else if (MODE == SUMS_SQUARES) {
            double v = x[idx];
            acc.x += v;
            acc.y += v * v;
        } else {
            float gf = dy[idx];
            if (relu_y && !(relu_y[idx] > 0.0f))
                gf = 0.0f;
            double gd = gf;
            acc.x += gd;
            acc.y += gd * ((double)x[idx] - m);
        }
    }
    acc = block_sum2(acc);
    if (threadIdx.x == 0)
        partial[(size_t)ch * bpc + b] = acc;
}

/* One block per channel adds its bpc partials in a fixed order and writes:
 *   PLAIN     out_a[ch] = Σ x (float32)
 *   SQUARES   sums[ch] = Σ x, sums[c + ch] = Σ x², sums[2c] = count
 *   BACKWARD  sums[ch] = Σ g, sums[c + ch] = Σ g·x̂ = Σ g·(x − mean)·invstd;
 *             out_a = Σ g, out_b = Σ g·x̂ (float32: the offset and scale
 *             gradients) */
template <int MODE>
__global__ void chan_final_kernel(const double2 *__restrict__ partial, int bpc, int c,
                                  double count, const float *__restrict__ invstd,
                                  double *__restrict__ sums, float *__restrict__ out_a,
                                  float *__restrict__ out_b)
{
    int ch = blockIdx.x;
    double2 acc = make_double2(0.0, 0.0);
    for (int b = threadIdx.x; b < bpc; b += blockDim.x) {
        double2 p = partial[(size_t)ch * bpc + b];
        acc.x += p.x;
        acc.y += p.y;
    }
    acc = block_sum2(acc);
    if (threadIdx.x != 0)
        return;
    if (MODE == SUMS_PLAIN) {
        out_a[ch] = (float)acc.x;
    } else if (MODE == SUMS_SQUARES) {
        sums[ch] = acc.x;
        sums[c + ch] = acc.y;
        if (ch == 0)
            sums[2 * c] = count;
    } else {
        /* invstd is constant over the channel: applied once, as on the CPU. */
        double sxh = acc.y * (double)invstd[ch];
        sums[ch] = acc.x;
        sums[c + ch] = sxh;
        out_a[ch] = (float)acc.x;
        out_b[ch] = (float)sxh;
    }
}

template <int MODE>
static dpt_status channel_sums(gpu_ctx *g, const float *x, const float *dy, const float *relu_y,
                               const float *mean, const float *invstd, int n, int c, int hw,
                               double *sums, float *out_a, float *out_b, const char *what)
{
    int bpc = blocks_per_channel(g, n, c);
    if ((size_t)2 * c * bpc > g->scratch_doubles)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: %s: reduction scratch too small (%d channels)",
                        g->device, what, c);
    if ((size_t)((n + bpc - 1) / bpc) * (size_t)hw > 0x7fffffffu)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: %s: %d x %d values per channel block is too many",
                        g->device, what, n, hw);
    double2 *partial = (double2 *)g->scratch;
    dim3 grid((unsigned)bpc, (unsigned)c);
    chan_partial_kernel<MODE><<<grid, GPU_THREADS, 0, g->stream>>>(x, dy, relu_y, mean, n, c, hw,
                                                                    bpc, partial);
    chan_final_kernel<MODE><<<c, 128, 0, g->stream>>>(partial, bpc, c, (double)n * hw, invstd,
                                                      sums, out_a, out_b);
    return gpu_check_launch(g, what);
}

dpt_status gpu_channel_sum(gpu_ctx *g, const float *x, int n, int c, int hw, float *out)
{
    return channel_sums<SUMS_PLAIN>(g, x, NULL, NULL, NULL, NULL, n, c, hw, NULL, out, NULL,
                                    "bias gradient");
}

/* ---- bias ------------------------------------------------------------------------------- */

template <typename I>
__global__ void bias_kernel(float *__restrict__ y, const float *__restrict__ b, I total, int c,
                            int hw, int seed)
{
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (I)gridDim.x * blockDim.x) {
        int ch = (int)((idx / (I)hw) % (I)c);
        y[idx] = seed ? b[ch] : __fadd_rn(y[idx], b[ch]);
    }
}

dpt_status gpu_bias(gpu_ctx *g, float *y, const float *b, int n, int c, int hw, int seed)
{
    size_t total = (size_t)n * c * hw;
    if (total < 0x7fffffffu)
        bias_kernel<unsigned><<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
            y, b, (unsigned)total, c, hw, seed);
    else
        bias_kernel<size_t><<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(y, b, total, c,
                                                                               hw, seed);
    return gpu_check_launch(g, "bias");
}

/* ---- ReLU ------------------------------------------------------------------------------------ */

__global__ void relu_forward_kernel(const float *__restrict__ x, float *__restrict__ y, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ void relu_backward_kernel(const float *__restrict__ y, const float *dy, float *dx,
                                     size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void add_kernel(float *__restrict__ y, const float *__restrict__ x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], x[i]);
}

dpt_status gpu_add(gpu_ctx *g, float *y, const float *x, size_t n)
{
    if (!n)
        return DPT_OK;
    add_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(y, x, n);
    return gpu_check_launch(g, "add");
}

/* ---- leaky ReLU, sigmoid, tanh, dropout, global average pooling ----------------------------
 * As ops/act.c and ops/pool.c, rounded step by step (expf and tanhf are
 * CUDA's, within 2 ulp of the host's). */

__global__ void leakyrelu_kernel(const float *__restrict__ x, const float *__restrict__ dy,
                                 float *__restrict__ out, size_t n, float alpha)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = dy ? dy[i] : x[i]; /* forward: x; backward: dy, on x's sign */
        out[i] = x[i] > 0.0f ? v : __fmul_rn(v, alpha);
    }
}

dpt_status gpu_leakyrelu_forward(gpu_ctx *g, const float *x, float *y, size_t n, float alpha)
{
    if (!n)
        return DPT_OK;
    leakyrelu_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(x, NULL, y, n, alpha);
    return gpu_check_launch(g, "leaky relu forward");
}

dpt_status gpu_leakyrelu_backward(gpu_ctx *g, const float *x, const float *dy, float *dx,
                                  size_t n, float alpha)
{
    if (!n)
        return DPT_OK;
    leakyrelu_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(x, dy, dx, n, alpha);
    return gpu_check_launch(g, "leaky relu backward");
}

enum { ACT_SIGMOID = 0, ACT_TANH = 1 };

template <int ACT>
__global__ void act_forward_kernel(const float *__restrict__ x, float *__restrict__ y, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        if (ACT == ACT_TANH) {
            y[i] = tanhf(v);
        } else if (v >= 0.0f) { /* exp of a non-positive argument only */
            y[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-v)));
        } else {
            float e = expf(v);
            y[i] = __fdiv_rn(e, __fadd_rn(1.0f, e));
        }
    }
}

/* sigmoid: dx = dy·(1 − y)·y; tanh: dx = dy·(1 − y·y). */
template <int ACT>
__global__ void act_backward_kernel(const float *__restrict__ y, const float *__restrict__ dy,
                                    float *__restrict__ dx, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i];
        dx[i] = ACT == ACT_TANH ? __fmul_rn(dy[i], __fsub_rn(1.0f, __fmul_rn(v, v)))
                                : __fmul_rn(__fmul_rn(dy[i], __fsub_rn(1.0f, v)), v);
    }
}

dpt_status gpu_sigmoid_forward(gpu_ctx *g, const float *x, float *y, size_t n)
{
    if (!n)
        return DPT_OK;
    act_forward_kernel<ACT_SIGMOID><<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(x, y, n);
    return gpu_check_launch(g, "sigmoid forward");
}

dpt_status gpu_sigmoid_backward(gpu_ctx *g, const float *y, const float *dy, float *dx, size_t n)
{
    if (!n)
        return DPT_OK;
    act_backward_kernel<ACT_SIGMOID><<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(y, dy, dx, n);
    return gpu_check_launch(g, "sigmoid backward");
}

dpt_status gpu_tanh_forward(gpu_ctx *g, const float *x, float *y, size_t n)
{
    if (!n)
        return DPT_OK;
    act_forward_kernel<ACT_TANH><<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(x, y, n);
    return gpu_check_launch(g, "tanh forward");
}

dpt_status gpu_tanh_backward(gpu_ctx *g, const float *y, const float *dy, float *dx, size_t n)
{
    if (!n)
        return DPT_OK;
    act_backward_kernel<ACT_TANH><<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(y, dy, dx, n);
    return gpu_check_launch(g, "tanh backward");
}

__device__ static uint64_t mix64_dev(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* dpt_dropout_apply's mask and scale, element by element: observation
 * i / per of this call is obs0 + i / per of the global minibatch; dropped
 * elements are +0.0f, kept ones in·scale. pre = mix(mix(mix(mix(seed) ^
 * epoch) ^ iteration) ^ stream), so key = mix(pre ^ obs) as dpt_rng_key. */
__global__ void dropout_kernel(const float *__restrict__ in, float *__restrict__ out, size_t total,
                               size_t per, float scale, uint64_t drop_below, uint64_t pre,
                               uint64_t obs0)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t obs = i / per, j = i % per;
        uint64_t key = mix64_dev(pre ^ (obs0 + obs));
        float v = __fmul_rn(in[i], scale);
        out[i] = (mix64_dev(key ^ j) >> 40) >= drop_below ? v : 0.0f;
    }
}

/* dropout_kernel with the per-step part of the key read from the device
 * (dkey = {seed, epoch, iteration, obs0}, written before the step): the
 * launch's arguments are then the same every iteration, so a CUDA graph
 * replays it. pre is the host's mix of the same values. */
__global__ void dropout_keyed_kernel(const float *__restrict__ in, float *__restrict__ out,
                                     size_t total, size_t per, float scale, uint64_t drop_below,
                                     const uint64_t *__restrict__ dkey, uint64_t stream)
{
    const uint64_t pre = mix64_dev(mix64_dev(mix64_dev(mix64_dev(dkey[0]) ^ dkey[1]) ^ dkey[2]) ^
                                   stream);
    const uint64_t obs0 = dkey[3];
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t obs = i / per, j = i % per;
        uint64_t key = mix64_dev(pre ^ (obs0 + obs));
        float v = __fmul_rn(in[i], scale);
        out[i] = (mix64_dev(key ^ j) >> 40) >= drop_below ? v : 0.0f;
    }
}

dpt_status gpu_dropout_keyed(gpu_ctx *g, const float *in, float *out, int n, size_t per, float p,
                             const uint64_t *dkey, uint64_t stream)
{
    size_t total = (size_t)n * per;
    if (!total)
        return DPT_OK;
    const float scale = 1.0f / (1.0f - p);
    const uint64_t drop_below = (uint64_t)ceil((double)p * 16777216.0);
    dropout_keyed_kernel<<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
        in, out, total, per, scale, drop_below, dkey, stream);
    return gpu_check_launch(g, "dropout");
}

dpt_status gpu_dropout(gpu_ctx *g, const float *in, float *out, int n, size_t per, float p,
                       uint64_t seed, uint64_t epoch, uint64_t iteration, uint64_t stream,
                       uint64_t obs0)
{
    size_t total = (size_t)n * per;
    if (!total)
        return DPT_OK;
    const float scale = 1.0f / (1.0f - p);
    const uint64_t drop_below = (uint64_t)ceil((double)p * 16777216.0);
    uint64_t pre = seed;
    /* The host's mix (same constants), for the per-call part of the key. */
    const uint64_t parts[3] = {epoch, iteration, stream};
    for (int k = 0; k < 4; k++) {
        pre += 0x9e3779b97f4a7c15ULL;
        pre = (pre ^ (pre >> 30)) * 0xbf58476d1ce4e5b9ULL;
        pre = (pre ^ (pre >> 27)) * 0x94d049bb133111ebULL;
        pre = pre ^ (pre >> 31);
        if (k < 3)
            pre ^= parts[k];
    }
    dropout_kernel<<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(in, out, total, per, scale,
                                                                      drop_below, pre, obs0);
    return gpu_check_launch(g, "dropout");
}

/* One thread per (observation, channel) plane: float64 sum in the host's
 * order, so the same bits. */
__global__ void gap_forward_kernel(const float *__restrict__ x, float *__restrict__ y,
                                   size_t planes, int hw)
{
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < planes;
         p += (size_t)gridDim.x * blockDim.x) {
        const float *xp = x + p * (size_t)hw;
        double s = 0.0;
        for (int j = 0; j < hw; j++)
            s += xp[j];
        y[p] = (float)(s / hw);
    }
}

__global__ void gap_backward_kernel(const float *__restrict__ dy, float *__restrict__ dx,
                                    size_t total, int hw)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = __fdiv_rn(dy[i / (size_t)hw], (float)hw);
}

dpt_status gpu_global_avgpool_forward(gpu_ctx *g, const float *x, float *y, int n, int c, int hw)
{
    size_t planes = (size_t)n * c;
    if (!planes)
        return DPT_OK;
    gap_forward_kernel<<<gpu_grid(g, planes), GPU_THREADS, 0, g->stream>>>(x, y, planes, hw);
    return gpu_check_launch(g, "global average pooling forward");
}

dpt_status gpu_global_avgpool_backward(gpu_ctx *g, const float *dy, float *dx, int n, int c,
                                       int hw)
{
    size_t total = (size_t)n * c * hw;
    if (!total)
        return DPT_OK;
    gap_backward_kernel<<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(dy, dx, total, hw);
    return gpu_check_launch(g, "global average pooling backward");
}

/* ---- max and average pooling ------------------------------------------------------------------
 * As ops/pool.c, bit for bit: a window clipped to the input, the max's scan
 * order and tie rule (the first maximum, NaN taking over), the average's
 * float32 sum in row order times 1/(kh·kw). The backward runs per input
 * pixel over the windows that hold it in the host's (oy, ox) order, so the
 * additions of overlapping windows happen in the host's order too: no
 * atomics, the same bits. */

__device__ static void pool_window(const gpu_pool p, int oy, int ox, int *y0, int *y1, int *x0,
                                   int *x1)
{
    int ys = oy * p.sh - p.ph, xs = ox * p.sw - p.pw;
    int ye = ys + p.kh, xe = xs + p.kw;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ye > p.h ? p.h : ye;
    *x1 = xe > p.w ? p.w : xe;
}

__device__ static int pool_argmax(const gpu_pool p, const float *plane, int oy, int ox,
                                  float *val)
{
    int y0, y1, x0, x1;
    pool_window(p, oy, ox, &y0, &y1, &x0, &x1);
    int best = y0 * p.w + x0;
    float m = -INFINITY;
    for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++) {
            float v = plane[(size_t)iy * p.w + ix];
            if (v > m || v != v) {
                m = v;
                best = iy * p.w + ix;
            }
        }
    *val = m;
    return best;
}

__global__ void pool_forward_kernel(const float *__restrict__ x, float *__restrict__ y,
                                    size_t total, gpu_pool p, int is_max, float inv)
{
    size_t out_plane = (size_t)p.oh * p.ow, in_plane = (size_t)p.h * p.w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t plane = i / out_plane, r = i % out_plane;
        int oy = (int)(r / p.ow), ox = (int)(r % p.ow);
        const float *xp = x + plane * in_plane;
        if (is_max) {
            float m;
            pool_argmax(p, xp, oy, ox, &m);
            y[i] = m;
        } else {
            int y0, y1, x0, x1;
            pool_window(p, oy, ox, &y0, &y1, &x0, &x1);
            float s = 0.0f;
            for (int iy = y0; iy < y1; iy++)
                for (int ix = x0; ix < x1; ix++)
                    s = __fadd_rn(s, xp[(size_t)iy * p.w + ix]);
            y[i] = __fmul_rn(s, inv);
        }
    }
}

__global__ void pool_backward_kernel(const float *__restrict__ x, const float *__restrict__ dy,
                                     float *__restrict__ dx, size_t total, gpu_pool p, int is_max,
                                     float inv)
{
    size_t out_plane = (size_t)p.oh * p.ow, in_plane = (size_t)p.h * p.w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t plane = i / in_plane, r = i % in_plane;
        int iy = (int)(r / p.w), ix = (int)(r % p.w);
        const float *xp = x ? x + plane * in_plane : NULL, *gp = dy + plane * out_plane;
        /* Windows whose rows hold iy: oy·sh − ph <= iy < oy·sh − ph + kh. */
        int oy0 = iy + p.ph - p.kh + 1, oy1 = (iy + p.ph) / p.sh;
        oy0 = oy0 <= 0 ? 0 : (oy0 + p.sh - 1) / p.sh;
        int ox0 = ix + p.pw - p.kw + 1, ox1 = (ix + p.pw) / p.sw;
        ox0 = ox0 <= 0 ? 0 : (ox0 + p.sw - 1) / p.sw;
        if (oy1 > p.oh - 1)
            oy1 = p.oh - 1;
        if (ox1 > p.ow - 1)
            ox1 = p.ow - 1;
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++) {
                float g = gp[(size_t)oy * p.ow + ox];
                if (is_max) {
                    float m;
                    if (pool_argmax(p, xp, oy, ox, &m) == iy * p.w + ix)
                        acc = __fadd_rn(acc, g);
                } else {
                    acc = __fadd_rn(acc, __fmul_rn(g, inv));
                }
            }
        dx[i] = acc;
    }
}

dpt_status gpu_pool_forward(gpu_ctx *g, const gpu_pool *p, int is_max, const float *x, float *y,
                            int n)
{
    size_t total = (size_t)n * p->c * p->oh * p->ow;
    if (!total)
        return DPT_OK;
    const float inv = 1.0f / (float)(p->kh * p->kw);
    pool_forward_kernel<<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(x, y, total, *p, is_max,
                                                                           inv);
    return gpu_check_launch(g, is_max ? "max pooling forward" : "average pooling forward");
}

dpt_status gpu_pool_backward(gpu_ctx *g, const gpu_pool *p, int is_max, const float *x,
                             const float *dy, float *dx, int n)
{
    size_t total = (size_t)n * p->c * p->h * p->w;
    if (!total)
        return DPT_OK;
    const float inv = 1.0f / (float)(p->kh * p->kw);
    pool_backward_kernel<<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
        is_max ? x : NULL, dy, dx, total, *p, is_max, inv);
    return gpu_check_launch(g, is_max ? "max pooling backward" : "average pooling backward");
}

dpt_status gpu_relu_forward(gpu_ctx *g, const float *x, float *y, size_t n)
{
    relu_forward_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(x, y, n);
    return gpu_check_launch(g, "relu forward");
}

dpt_status gpu_relu_backward(gpu_ctx *g, const float *y, const float *dy, float *dx, size_t n)
{
    relu_backward_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(y, dy, dx, n);
    return gpu_check_launch(g, "relu backward");
}

/* ---- softmax and cross-entropy (one thread per row) ------------------------------------------ */

__global__ void softmax_forward_kernel(const float *__restrict__ z, float *__restrict__ p, int n,
                                       int k)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const float *zi = z + (size_t)i * k;
    float *pi = p + (size_t)i * k;
    float zmax = zi[0];
    for (int j = 1; j < k; j++)
        if (zi[j] > zmax)
            zmax = zi[j];
    double sum = 0.0;
    for (int j = 0; j < k; j++) {
        float e = expf(__fsub_rn(zi[j], zmax));
        pi[j] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < k; j++)
        pi[j] = __fmul_rn(pi[j], inv);
}

__global__ void softmax_backward_kernel(const float *__restrict__ p, const float *__restrict__ dy,
                                        float *__restrict__ dx, int n, int k)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const float *pi = p + (size_t)i * k, *gi = dy + (size_t)i * k;
    double dot = 0.0;
    for (int j = 0; j < k; j++)
        dot += (double)gi[j] * pi[j];
    for (int j = 0; j < k; j++)
        dx[(size_t)i * k + j] = (float)__dmul_rn((double)pi[j], __dsub_rn((double)gi[j], dot));
}

/* Row i's loss −Σ t·log(max(p, FLT_MIN)) into row_loss[i], and the loss
 * gradient at the logits. A non-finite probability makes the row's loss NaN
 * (the floor would hide it): on the CPU the forward pass itself fails then,
 * here the training step sees the NaN loss and fails the same way. */
__global__ void xent_rows_kernel(const float *__restrict__ p, const float *__restrict__ t, int n,
                                 int k, float gscale, float *__restrict__ dlogits,
                                 double *__restrict__ row_loss)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    double loss = 0.0;
    int finite = 1;
    size_t row = (size_t)i * k;
    for (int j = 0; j < k; j++) {
        float pj = p[row + j], tj = t[row + j];
        finite &= isfinite(pj);
        if (tj != 0.0f) {
            double pd = pj > FLT_MIN ? (double)pj : (double)FLT_MIN;
            loss -= (double)tj * log(pd);
        }
        dlogits[row + j] = __fmul_rn(__fsub_rn(pj, tj), gscale);
    }
    row_loss[i] = finite ? loss : nan("");
}

/* *loss = (Σ row_loss) / n, one block, fixed order. */
__global__ void mean_rows_kernel(const double *__restrict__ row_loss, int n, double *loss)
{
    double2 acc = make_double2(0.0, 0.0);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        acc.x += row_loss[i];
    acc = block_sum2(acc);
    if (threadIdx.x == 0)
        *loss = acc.x / n;
}

dpt_status gpu_softmax_forward(gpu_ctx *g, const float *z, float *p, int n, int k)
{
    softmax_forward_kernel<<<(n + 127) / 128, 128, 0, g->stream>>>(z, p, n, k);
    return gpu_check_launch(g, "softmax forward");
}

dpt_status gpu_softmax_backward(gpu_ctx *g, const float *p, const float *dy, float *dx, int n,
                                int k)
{
    softmax_backward_kernel<<<(n + 127) / 128, 128, 0, g->stream>>>(p, dy, dx, n, k);
    return gpu_check_launch(g, "softmax backward");
}

dpt_status gpu_softmax_xent(gpu_ctx *g, const float *p, const float *t, int n, int k,
                            float scale, float *dlogits, double *loss)
{
    if ((size_t)n > g->scratch_doubles)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: cross-entropy: scratch too small for %d rows",
                        g->device, n);
    const float gscale = scale / (float)n; /* as dpt_softmax_xent */
    xent_rows_kernel<<<(n + 127) / 128, 128, 0, g->stream>>>(p, t, n, k, gscale, dlogits,
                                                            g->scratch);
    mean_rows_kernel<<<1, GPU_THREADS, 0, g->stream>>>(g->scratch, n, loss);
    return gpu_check_launch(g, "cross-entropy");
}

/* ---- SGDM ----------------------------------------------------------------------------------- */

__device__ __forceinline__ static void sgdm_body(float *__restrict__ w, float *__restrict__ v,
                                                 const float *__restrict__ grad, size_t n,
                                                 float lr, float mu, float wd)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* v = mu·v − lr·(g + wd·w); w = w + v, rounded step by step as the
         * CPU's dpt_sgdm_step. */
        float vi = __fsub_rn(__fmul_rn(mu, v[i]), __fmul_rn(lr, __fadd_rn(grad[i], __fmul_rn(wd, w[i]))));
        v[i] = vi;
        w[i] = __fadd_rn(w[i], vi);
    }
}

__global__ void sgdm_kernel(float *__restrict__ w, float *__restrict__ v,
                            const float *__restrict__ grad, size_t n, float lr, float mu, float wd)
{
    sgdm_body(w, v, grad, n, lr, mu, wd);
}

/* The scalars from the device (ops/gpu_update.h: lr, momentum, decay). */
__global__ void sgdm_dev_kernel(float *__restrict__ w, float *__restrict__ v,
                                const float *__restrict__ grad, size_t n,
                                const gpu_update_scalars *__restrict__ sc)
{
    sgdm_body(w, v, grad, n, sc->c[0], sc->c[1], sc->c[2]);
}

dpt_status gpu_sgdm_dev(gpu_ctx *g, float *params, float *velocity, const float *grads, size_t n,
                        const gpu_update_scalars *sc)
{
    if (!n)
        return DPT_OK;
    sgdm_dev_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(params, velocity, grads, n,
                                                                   sc);
    return gpu_check_launch(g, "sgdm update");
}

dpt_status gpu_sgdm(gpu_ctx *g, float *params, float *velocity, const float *grads, size_t n,
                    float lr, float momentum, float weight_decay)
{
    if (!n)
        return DPT_OK;
    sgdm_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(params, velocity, grads, n, lr,
                                                               momentum, weight_decay);
    return gpu_check_launch(g, "sgdm update");
}

/* ---- Adam ----------------------------------------------------------------------------------- */

__device__ __forceinline__ static void adam_body(float *__restrict__ w, float *__restrict__ m,
                                                 float *__restrict__ v,
                                                 const float *__restrict__ grad, size_t n,
                                                 float step_size, float bc2_sqrt, float b1,
                                                 float b2, float c1, float c2, float eps,
                                                 float shrink, float l2)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* dpt_adam_step's expressions, rounded step by step in its order. */
        float wi = __fmul_rn(w[i], shrink);
        float gi = __fadd_rn(grad[i], __fmul_rn(l2, wi));
        float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(c1, gi));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(c2, __fmul_rn(gi, gi)));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        w[i] = __fsub_rn(wi, __fdiv_rn(__fmul_rn(step_size, mi), denom));
    }
}

__global__ void adam_kernel(float *__restrict__ w, float *__restrict__ m, float *__restrict__ v,
                            const float *__restrict__ grad, size_t n, float step_size,
                            float bc2_sqrt, float b1, float b2, float c1, float c2, float eps,
                            float shrink, float l2)
{
    adam_body(w, m, v, grad, n, step_size, bc2_sqrt, b1, b2, c1, c2, eps, shrink, l2);
}

__global__ void adam_dev_kernel(float *__restrict__ w, float *__restrict__ m,
                                float *__restrict__ v, const float *__restrict__ grad, size_t n,
                                const gpu_update_scalars *__restrict__ sc)
{
    const float *c = sc->c;
    adam_body(w, m, v, grad, n, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]);
}

dpt_status gpu_adam_dev(gpu_ctx *g, float *params, float *m, float *v, const float *grads,
                        size_t n, const gpu_update_scalars *sc)
{
    if (!n)
        return DPT_OK;
    adam_dev_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(params, m, v, grads, n, sc);
    return gpu_check_launch(g, "adam update");
}

dpt_status gpu_adam(gpu_ctx *g, float *params, float *m, float *v, const float *grads, size_t n,
                    float step_size, float bc2_sqrt, float b1, float b2, float c1, float c2,
                    float eps, float shrink, float l2)
{
    if (!n)
        return DPT_OK;
    adam_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(params, m, v, grads, n, step_size,
                                                               bc2_sqrt, b1, b2, c1, c2, eps,
                                                               shrink, l2);
    return gpu_check_launch(g, "adam update");
}

/* ---- gradient clipping ---------------------------------------------------------------------- */

enum { CLIP_THREADS = 1024 };

/* Σ x² in float64 by one block: thread i takes i, i + 1024, ..., then a
 * fixed tree. One block keeps the order independent of the device. */
__global__ void sumsq_kernel(const float *__restrict__ x, size_t n, double *__restrict__ out)
{
    double acc = 0.0;
    for (size_t i = threadIdx.x; i < n; i += CLIP_THREADS)
        acc += (double)x[i] * (double)x[i];
    double2 s = block_sum2(make_double2(acc, 0.0));
    if (threadIdx.x == 0)
        *out = s.x;
}

__global__ void scale_kernel(float *__restrict__ x, size_t n, float c)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], c);
}

dpt_status gpu_clip_grad_norm(gpu_ctx *g, float *grads, size_t n, double max_norm, double *norm)
{
    if (g->scratch_doubles < 1)
        return dpt_fail(DPT_ERR_ARG, "GPU %d: gradient clipping: no reduction scratch", g->device);
    double ss = 0.0;
    sumsq_kernel<<<1, CLIP_THREADS, 0, g->stream>>>(grads, n, g->scratch);
    dpt_status s = gpu_check_launch(g, "gradient norm");
    if (s == DPT_OK)
        s = gpu_download(g, &ss, g->scratch, sizeof ss);
    if (s != DPT_OK)
        return s;
    *norm = sqrt(ss);
    /* As dpt_clip_grad_norm: torch's coefficient, applied when it shrinks. */
    double coef = max_norm / (*norm + 1e-6);
    if (coef < 1.0 && n) {
        scale_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(grads, n, (float)coef);
        s = gpu_check_launch(g, "gradient clipping");
    }
    return s;
}

/* gpu_clip_grad_norm's scaling with the coefficient computed on the
 * device from ss (the sum of squares) and sc->max_norm, in the host's
 * float64 operations (correctly rounded there as here): the same
 * coefficient, and no wait for the host. */
__global__ void scale_clip_kernel(float *__restrict__ x, size_t n, const double *__restrict__ ss,
                                  const gpu_update_scalars *__restrict__ sc)
{
    const double norm = __dsqrt_rn(*ss);
    const double coef = __ddiv_rn(sc->max_norm, __dadd_rn(norm, 1e-6));
    if (!(coef < 1.0))
        return;
    const float c = __double2float_rn(coef);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], c);
}

dpt_status gpu_clip_grad_norm_dev(gpu_ctx *g, float *grads, size_t n,
                                  const gpu_update_scalars *sc, double *ss)
{
    sumsq_kernel<<<1, CLIP_THREADS, 0, g->stream>>>(grads, n, ss);
    dpt_status s = gpu_check_launch(g, "gradient norm");
    if (s == DPT_OK && n) {
        scale_clip_kernel<<<gpu_grid(g, n), GPU_THREADS, 0, g->stream>>>(grads, n, ss, sc);
        s = gpu_check_launch(g, "gradient clipping");
    }
    return s;
}

/* ---- batch normalisation ---------------------------------------------------------------------- */

dpt_status gpu_bn_sums(gpu_ctx *g, const float *x, int n, int c, int hw, double *sums)
{
    return channel_sums<SUMS_SQUARES>(g, x, NULL, NULL, NULL, NULL, n, c, hw, sums, NULL, NULL,
                                      "batch norm statistics");
}

__global__ void bn_stats_kernel(const double *__restrict__ sums, int c, float epsilon,
                                double *__restrict__ batch, float *__restrict__ mean,
                                float *__restrict__ invstd)
{
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c)
        return;
    double count = sums[2 * c];
    double m = sums[ch] / count;
    double v = __dsub_rn(sums[c + ch] / count, __dmul_rn(m, m));
    if (v < 0) /* rounding when the variance is tiny */
        v = 0;
    batch[ch] = m;
    batch[c + ch] = v;
    mean[ch] = (float)m;
    invstd[ch] = (float)(1.0 / sqrt(__dadd_rn(v, (double)epsilon)));
}

dpt_status gpu_bn_stats(gpu_ctx *g, const double *sums, int c, float epsilon, double *batch,
                        float *mean, float *invstd)
{
    bn_stats_kernel<<<(c + 127) / 128, 128, 0, g->stream>>>(sums, c, epsilon, batch, mean, invstd);
    return gpu_check_launch(g, "batch norm statistics");
}

__global__ void bn_running_kernel(const float *__restrict__ state, int c, float epsilon,
                                  float *__restrict__ mean, float *__restrict__ invstd)
{
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c)
        return;
    mean[ch] = state[ch];
    invstd[ch] = (float)(1.0 / sqrt(__dadd_rn((double)state[c + ch], (double)epsilon)));
}

dpt_status gpu_bn_running(gpu_ctx *g, const float *state, int c, float epsilon, float *mean,
                          float *invstd)
{
    bn_running_kernel<<<(c + 127) / 128, 128, 0, g->stream>>>(state, c, epsilon, mean, invstd);
    return gpu_check_launch(g, "batch norm running statistics");
}

template <typename I>
__global__ void bn_normalize_kernel(const float *__restrict__ x, I total, int c, int hw,
                                    const float *__restrict__ mean,
                                    const float *__restrict__ invstd,
                                    const float *__restrict__ gamma,
                                    const float *__restrict__ beta, float *__restrict__ y,
                                    float *__restrict__ y_relu)
{
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (I)gridDim.x * blockDim.x) {
        int ch = (int)((idx / (I)hw) % (I)c);
        float scale = __fmul_rn(gamma[ch], invstd[ch]);
        float v = __fadd_rn(__fmul_rn(__fsub_rn(x[idx], mean[ch]), scale), beta[ch]);
        if (y)
            y[idx] = v;
        if (y_relu)
            y_relu[idx] = v > 0.0f ? v : 0.0f;
    }
}

dpt_status gpu_bn_normalize(gpu_ctx *g, const float *x, int n, int c, int hw, const float *mean,
                            const float *invstd, const float *gamma, const float *beta, float *y,
                            float *y_relu)
{
    size_t total = (size_t)n * c * hw;
    if (total < 0x7fffffffu)
        bn_normalize_kernel<unsigned><<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
            x, (unsigned)total, c, hw, mean, invstd, gamma, beta, y, y_relu);
    else
        bn_normalize_kernel<size_t><<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
            x, total, c, hw, mean, invstd, gamma, beta, y, y_relu);
    return gpu_check_launch(g, "batch norm");
}

dpt_status gpu_bn_backward_sums(gpu_ctx *g, const float *x, const float *dy,
                                const float *relu_y, int n, int c, int hw, const float *mean,
                                const float *invstd, double *sums, float *doffset,
                                float *dscale)
{
    return channel_sums<SUMS_BACKWARD>(g, x, dy, relu_y, mean, invstd, n, c, hw, sums, doffset,
                                       dscale, "batch norm backward");
}

template <typename I>
__global__ void bn_backward_dx_kernel(const float *__restrict__ x, const float *__restrict__ dy,
                                      const float *__restrict__ relu_y, I total, int c, int hw,
                                      const float *__restrict__ mean,
                                      const float *__restrict__ invstd,
                                      const float *__restrict__ gamma,
                                      const double *__restrict__ sums,
                                      const double *__restrict__ count_p, float *__restrict__ dx)
{
    const double count = *count_p;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (I)gridDim.x * blockDim.x) {
        int ch = (int)((idx / (I)hw) % (I)c);
        double m = mean[ch], is = invstd[ch];
        double k = __dmul_rn((double)gamma[ch], is);
        double a = sums[ch] / count, b = sums[c + ch] / count;
        float gf = dy[idx];
        if (relu_y && !(relu_y[idx] > 0.0f))
            gf = 0.0f;
        double xhat = __dmul_rn(__dsub_rn((double)x[idx], m), is);
        dx[idx] = (float)__dmul_rn(k, __dsub_rn(__dsub_rn((double)gf, a), __dmul_rn(xhat, b)));
    }
}

dpt_status gpu_bn_backward_dx(gpu_ctx *g, const float *x, const float *dy, const float *relu_y,
                              int n, int c, int hw, const float *mean, const float *invstd,
                              const float *gamma, const double *sums, const double *count,
                              float *dx)
{
    size_t total = (size_t)n * c * hw;
    if (total < 0x7fffffffu)
        bn_backward_dx_kernel<unsigned><<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
            x, dy, relu_y, (unsigned)total, c, hw, mean, invstd, gamma, sums, count, dx);
    else
        bn_backward_dx_kernel<size_t><<<gpu_grid(g, total), GPU_THREADS, 0, g->stream>>>(
            x, dy, relu_y, total, c, hw, mean, invstd, gamma, sums, count, dx);
    return gpu_check_launch(g, "batch norm backward");
}
