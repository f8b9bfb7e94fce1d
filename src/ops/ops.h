/* ops: CPU kernels on raw float32 buffers, layout NCHW (batch first).
 *
 * Internal to libdptrain (net/ calls them; users call the net API). Kernels
 * never allocate: callers pass any scratch space, sized by the *_work_floats
 * helpers. Kernels never fail at run time; shape checks happen when a
 * network is built (net/), so these only assert on our own bugs.
 *
 * Gradient outputs are overwritten, not accumulated. */
#ifndef DPT_OPS_H
#define DPT_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- kernel sets --------------------------------------------------------- *
 * "generic" (portable C and the BLAS), "avx2", "avx512" (direct convolution
 * kernels). The default is the best the CPU supports; the environment
 * variable DPT_KERNELS=generic|avx2|avx512 overrides it (a set the CPU lacks
 * falls back to the best one). Process-wide, like the BLAS thread count. */

/* Name of the set in use. */
const char *dpt_ops_kernels(void);
/* 1 when this CPU can run the named set. */
int dpt_ops_kernels_supported(const char *name);
/* Use the named set ("auto": the best); -1 when unknown or unsupported. Not
 * to be called while another thread runs kernels. */
int dpt_ops_set_kernels(const char *name);

/* ---- 2-D convolution (cross-correlation, as PyTorch and MATLAB) --------- */

typedef struct dpt_conv2d_desc {
    int n, c_in, h, w;      /* input  [n, c_in, h, w] */
    int c_out, kh, kw;      /* weights [c_out, c_in/groups, kh, kw], bias [c_out] */
    int stride, pad;        /* same stride/padding in both directions */
    int out_h, out_w;       /* filled by dpt_conv2d_desc_init */
    /* Filter taps dilation apart; channels split into `groups` groups (as
     * PyTorch: output channel co sees input channels of group
     * co / (c_out/groups) only). 0 reads as 1, so initialisers that predate
     * them keep working. */
    int dilation, groups;
    /* Which algorithm runs it (dpt_conv_algo): 0 (AUTO) is the heuristic
     * choice; the network planner (conv_plan.c) sets the measured one. One
     * the selected kernel set cannot run for this shape falls back to
     * GEMM, the reference path. */
    int algo;
} dpt_conv2d_desc;

/* The convolution algorithms: one entry each in conv2d.c's table
 * (conv_algo.h). The numbers are stable (cache files and tests name them
 * by dpt_conv_algo_name, never by number). */
typedef enum dpt_conv_algo {
    DPT_CONV_ALGO_AUTO = 0,  /* not planned: the heuristic choice */
    DPT_CONV_ALGO_GEMM,      /* im2col per image + cblas_sgemm: the reference path */
    DPT_CONV_ALGO_DIRECT,    /* conv_direct.c */
    DPT_CONV_ALGO_BATCHED,   /* conv_batched.c: im2col over image blocks + own GEMM */
    DPT_CONV_ALGO_DEPTHWISE, /* conv_depthwise.c */
    DPT_CONV_ALGO_DNNL,      /* conv_dnnl.c, where built with oneDNN */
    DPT_CONV_ALGO_POINTWISE, /* conv_pointwise.c: 1x1 filters as GEMMs over the planes */
    DPT_CONV_ALGO_HWC,       /* conv_hwc.c: channels in vector lanes, for wide layers */
    DPT_CONV_ALGO_WINO,      /* conv_wino.c: Winograd F(2x2, 3x3) over hwc's kernels */
    DPT_CONV_ALGO_WINO4,     /* conv_wino.c: Winograd F(4x4, 3x3) */
    DPT_CONV_ALGO_WINO_S2,   /* conv_wino_s2.c: stride-2 3x3 as Winograd F(4x4, 2x2) */
    DPT_CONV_ALGO_COUNT
} dpt_conv_algo;

/* "auto", "gemm", "direct", "batched", "depthwise", "dnnl", "pointwise", "hwc", "wino",
 * "wino4", "wino_s2"; "?" for a number out of range. */
const char *dpt_conv_algo_name(int algo);
/* The algorithm of that name (as dpt_conv_algo_name), or -1. */
int dpt_conv_algo_by_name(const char *name);
/* 1 when algorithm algo (not AUTO) is built in and can run d (d->algo is
 * ignored) with the selected kernel set. */
int dpt_conv_algo_supports(int algo, const dpt_conv2d_desc *d);
/* The algorithm that runs d: d->algo when it supports d, the heuristic
 * choice for AUTO, GEMM otherwise. Never AUTO. */
int dpt_conv_algo_resolve(const dpt_conv2d_desc *d);
/* The heuristic choice for d (what AUTO runs). */
int dpt_conv_algo_heuristic(const dpt_conv2d_desc *d);

/* Fill out_h/out_w; returns 0, or -1 when the (dilated) filter does not fit
 * the padded input, a size is not positive, or groups does not divide c_in
 * and c_out. */
int dpt_conv2d_desc_init(dpt_conv2d_desc *d);
/* Scratch floats needed by forward and backward with d->algo (for AUTO,
 * enough for any kernel set; for a named algorithm, enough for it and for
 * the GEMM fallback). */
size_t dpt_conv2d_work_floats(const dpt_conv2d_desc *d);
/* y[n, c_out, out_h, out_w] = conv(x, w) + b. b may be NULL (no bias). */
void dpt_conv2d_forward(const dpt_conv2d_desc *d, const float *x, const float *w,
                        const float *b, float *y, float *work);
/* dpt_conv2d_forward, and the per-channel sums batch norm needs of the
 * output, as dpt_bn_sums(y, n, c_out, out_h*out_w, sum, sumsq) computes them
 * (float64; the direct kernels add them up while y is still in registers). */
void dpt_conv2d_forward_sums(const dpt_conv2d_desc *d, const float *x, const float *w,
                             const float *b, float *y, float *work, double *sum, double *sumsq);
/* Batch norm (and the ReLU after it) applied by a convolution on the fly,
 * so that neither the normalised activations nor the batch norm's input
 * gradient is ever written out (net.c plans this for conv -> batchnorm ->
 * relu -> conv chains):
 *   forward, on the conv's input x:   z = (x − mean)·scale + shift,
 *                                     then max(0, z) when relu
 *   backward, on the conv's output gradient: the gradient g arriving at
 *   the batch norm's (ReLU's) output becomes the gradient at its input,
 *     dx = kf·g' − ka − (y − mean)·kb,  g' = g where z > 0 (relu) else g,
 *   with y the conv's output (the batch norm's input) and z as above.
 * All arrays have one entry per channel. The ReLU mask is the same float
 * expression as dpt_bn_normalize_relu's, so forward and backward agree
 * bit for bit. */
typedef struct dpt_bn_apply {
    const float *mean, *scale, *shift;
    int relu;
    const float *kf, *ka, *kb; /* backward only */
} dpt_bn_apply;

/* dpt_conv2d_forward_sums with the input given as the batch norm's input:
 * the convolution sees apply(x) (xa NULL: x itself). */
void dpt_conv2d_forward_ex(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq);
/* dpt_conv2d_backward with the same input convention (xa), and with dy
 * given at the output of a batch norm applied to this conv's output y
 * (dya non-NULL: the gradient the convolution uses is dya's backward of
 * dy, as above; dya NULL: dy itself and y unused). db is the sum of the
 * gradient the convolution uses. xg: NULL, or (with xa and dx) 2·c_in
 * doubles that receive what xa's batch norm needs for its backward,
 * dpt_bn_grad_sums(x, dx, ...), formed while dx is written. */
void dpt_conv2d_backward_ex(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg);
/* From dy [n, c_out, out_h, out_w]: dx (may be NULL: not needed for the first
 * layer), dw [c_out, c_in, kh, kw], db [c_out] (may be NULL). */
void dpt_conv2d_backward(const dpt_conv2d_desc *d, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db, float *work);
/* dpt_conv2d_backward_ex of a first layer (no dx, no xa) whose output
 * gradient comes through dya's batch norm (+ ReLU) and then a 2x2 stride-2
 * max pool: g at the batch norm's output is not given as dy but as the
 * pool's gradient pool_g [n, c_out, out_h / 2, out_w / 2] and taps
 * pool_idx (dpt_maxpool2d_forward_bnx): pool_g at each window's tap, +0
 * elsewhere, so the pool's dx (3/4 zeros, 4x the size) is never written
 * nor read (a stem's conv -> bn -> relu -> maxpool). Returns 0 when done,
 * -1 when d's algorithm cannot take it (only the direct one, one group,
 * does): the caller then expands g itself. */
int dpt_conv2d_backward_pooled(const dpt_conv2d_desc *d, const float *x, const float *w,
                               const float *pool_g, const unsigned char *pool_idx,
                               const dpt_bn_apply *dya, const float *y, float *dw, float *db,
                               float *work);

/* ---- convolution plans (conv_plan.c) ------------------------------------ *
 * Which algorithm runs a convolution layer, chosen once when a network is
 * planned: timed (forward + backward of every supported algorithm on
 * random data, the fastest kept) and remembered per shape, in the process
 * and in a cache file, so every worker and every later run on the machine
 * makes the same choice (and so computes the same bits). The environment
 * variable DPT_CONV_ALGO overrides it: a name of dpt_conv_algo_name forces
 * that algorithm (GEMM where it cannot run a shape), "heuristic" gives AUTO,
 * "measure" times again even where the cache file has the shape.
 * DPT_PLAN_CACHE names the cache file (default
 * $XDG_CACHE_HOME/dptrain/conv-plan.txt or ~/.cache/dptrain/conv-plan.txt;
 * /dev/null: none). Without a cache file that can be written, the heuristic
 * choice is kept: a measured choice that no later run can read back would
 * make runs differ. docs/kernels.md has the details. */

/* Where a plan's choice came from. */
enum {
    DPT_CONV_PLAN_HEURISTIC = 0, /* AUTO: not measured (see note for why) */
    DPT_CONV_PLAN_FORCED,        /* DPT_CONV_ALGO=<name> */
    DPT_CONV_PLAN_MEASURED,      /* timed now (and written to the cache file) */
    DPT_CONV_PLAN_CACHE,         /* read from the cache file */
    DPT_CONV_PLAN_ONLY           /* one algorithm supports the shape: nothing to time */
};

typedef struct dpt_conv_plan {
    int algo;     /* for dpt_conv2d_desc.algo (AUTO for the heuristic) */
    int runs;     /* the algorithm that runs: dpt_conv_algo_resolve's, never AUTO */
    int source;   /* DPT_CONV_PLAN_* */
    int n_meas;   /* images of the largest timed run; 0: nothing timed */
    int unsure;   /* 1: the timed figures did not settle (a busy machine) */
    /* Milliseconds of one forward + backward of the planned batch (d->n)
     * per algorithm (index dpt_conv_algo): timed where n_meas is the
     * batch (the finalists), else estimated from runs of fewer images;
     * -1 unsupported (or not built), -2 supported but not timed. */
    double ms[DPT_CONV_ALGO_COUNT];
    char note[256]; /* a fallback or a cache-file problem, else "" */
} dpt_conv_plan;

/* Plan d (d->n: the largest batch it will run; d->algo ignored) for a
 * layer whose input comes through a fused batch norm (bn_in), whose output
 * gradient does (bn_out), and that computes its input gradient (need_dx).
 * Thread-safe: concurrent callers with the same shape wait for the first
 * and share its choice. Returns 0; -1 when DPT_CONV_ALGO holds an unknown
 * value, -2 when out of memory (p->note says so). */
int dpt_conv_plan_choose(const dpt_conv2d_desc *d, int bn_in, int bn_out, int need_dx,
                         dpt_conv_plan *p);
/* "heuristic", "forced", "measured", "cache", "only". */
const char *dpt_conv_plan_source_name(int source);
/* Forget the choices made in this process (tests: the next plan reads the
 * cache file again). Not to be called while another thread plans. */
void dpt_conv_plan_forget(void);
/* Tests: fn(ctx, algo, n, round) replaces each timed run of n images
 * (round 0 is the warm-up; the run is not made) with the milliseconds it
 * returns, so a test can play a noisy machine, or an algorithm with a
 * per-call cost at a batch too large to run in a test, without depending
 * on this one's speed. NULL restores the clock. Not to be called while
 * another thread plans. */
typedef double (*dpt_conv_plan_timer)(void *ctx, int algo, int n, int round);
void dpt_conv_plan_set_timer(dpt_conv_plan_timer fn, void *ctx);

/* ---- batch normalisation over (n, h, w) per channel --------------------- *
 * Split into stats / normalise / backward-reduce / backward-apply so that a
 * synchronised batch norm can all-reduce the per-channel sums between the
 * steps. `count` is the number of values per channel the statistics cover
 * (n*h*w locally, the global total under synchronised batch norm). */

/* Per-channel sum and sum of squared deviations from `mean_in` is awkward to
 * pool; we return plain sums in float64 so a caller can all-reduce them:
 * sum[c] = Σ x, sumsq[c] = Σ x². */
void dpt_bn_sums(const float *x, int n, int c, int hw, double *sum, double *sumsq);
/* dpt_bn_sums an image at a time, for a pass that writes x image by image:
 * with sum and sumsq zeroed, dpt_bn_sums_image on each image x_i [c, hw] in
 * order (x0: image 0, already written), then dpt_bn_sums_finish: the same
 * bits as dpt_bn_sums. */
void dpt_bn_sums_image(const float *x, const float *x0, int c, int hw, double *sum,
                       double *sumsq);
void dpt_bn_sums_finish(const float *x0, int n, int c, int hw, double *sum, double *sumsq);
/* y = gamma * (x - mean) * invstd + beta, per channel. */
void dpt_bn_normalize(const float *x, int n, int c, int hw, const float *mean,
                      const float *invstd, const float *gamma, const float *beta, float *y);
/* Per-channel sums for backward: sum_dy[c] = Σ dy, sum_dy_xhat[c] = Σ dy·x̂
 * with x̂ = (x - mean) * invstd. dbeta = sum_dy, dgamma = sum_dy_xhat. */
void dpt_bn_backward_sums(const float *x, const float *dy, int n, int c, int hw,
                          const float *mean, const float *invstd, double *sum_dy,
                          double *sum_dy_xhat);
/* dx = gamma*invstd * (dy - sum_dy/count - x̂ * sum_dy_xhat/count). */
void dpt_bn_backward_dx(const float *x, const float *dy, int n, int c, int hw,
                        const float *mean, const float *invstd, const float *gamma,
                        const double *sum_dy, const double *sum_dy_xhat, double count,
                        float *dx);
/* dpt_bn_backward_dx with dx split along channels: channels [0, part_c[0])
 * to part_dx[0] [n, part_c[0], hw], the next part_c[1] to part_dx[1], ...
 * (the gradients of the inputs of a concat below, written in place). */
void dpt_bn_backward_dx_split(const float *x, const float *dy, int n, int c, int hw,
                              const float *mean, const float *invstd, const float *gamma,
                              const double *sum_dy, const double *sum_dy_xhat, double count,
                              int n_parts, const int *part_c, float *const *part_dx);
/* y = a applied to one image x [c, hw] (the float expressions of
 * dpt_bn_apply, an element at a time): for paths with no kernel that
 * applies it on the fly. */
void dpt_bn_apply_forward(const float *x, int c, int hw, const dpt_bn_apply *a, float *y);
/* Adds to s_g[ch] Σ g' and to s_gx[ch] Σ g'·(x − a->mean[ch]) over the
 * channel, with g' = g masked by a's ReLU (a->relu; the mask of
 * dpt_bn_apply): dpt_bn_backward_sums' two sums from a's fields, the second
 * not yet multiplied by invstd. */
void dpt_bn_grad_sums(const float *x, const float *g, int n, int c, int hw, const dpt_bn_apply *a,
                      double *s_g, double *s_gx);
/* A residual add of two inputs [n, c, hw], each with a batch norm applied
 * on the fly (a0, a1; NULL: none; no ReLU of their own), ReLU'd when relu:
 * the bits of the batch norms' passes then the add's. Backward: dy at the
 * output (masked by y > 0 when relu) to both inputs' gradients d0, d1, and
 * for each input with a batch norm (xg0, xg1 non-NULL: 2·c doubles each)
 * dpt_bn_grad_sums' two sums of x_k and that gradient, in the same pass. */
void dpt_bn_add_forward(const float *x0, const dpt_bn_apply *a0, const float *x1,
                        const dpt_bn_apply *a1, int n, int c, int hw, int relu, float *y,
                        float *mean);
void dpt_bn_add_backward(const float *y, const float *dy, int n, int c, int hw, int relu,
                         const float *x0, const dpt_bn_apply *a0, double *xg0, const float *x1,
                         const dpt_bn_apply *a1, double *xg1, float *d0, float *d1,
                         const float *dmean);
/* With a global average pooling after the add (and its ReLU): mean non-NULL
 * receives dpt_global_avgpool_forward of y [n, c] in the same pass, and
 * with dmean non-NULL the backward takes the pooling's output gradient
 * [n, c] instead of dy (dy unused), spread as dpt_global_avgpool_backward
 * spreads it; hw at most DPT_BN_ADD_POOL_HW then. */
#define DPT_BN_ADD_POOL_HW 1024
/* The per-channel coefficients of dx = kf·dy − ka − (x − mean)·kb that
 * dpt_bn_backward_dx uses (kf = gamma·invstd, ka = kf·sum_dy/count,
 * kb = kf·sum_dy_xhat/count·invstd, formed in float64); for dpt_bn_apply. */
void dpt_bn_backward_coeffs(int c, const float *invstd, const float *gamma, const double *sum_dy,
                            const double *sum_dy_xhat, double count, float *kf, float *ka,
                            float *kb);
/* Batch norm fused with the ReLU after it: y = max(0, normalize(x)); the
 * backward pair takes dy at the ReLU's output and masks it where the
 * forward's pre-ReLU value was not positive (recomputed from x, bit-exact),
 * so the ReLU needs no pass and no buffer of its own. */
void dpt_bn_normalize_relu(const float *x, int n, int c, int hw, const float *mean,
                           const float *invstd, const float *gamma, const float *beta, float *y);
void dpt_bn_backward_sums_relu(const float *x, const float *dy, int n, int c, int hw,
                               const float *mean, const float *invstd, const float *gamma,
                               const float *beta, double *sum_dy, double *sum_dy_xhat);
void dpt_bn_backward_dx_relu(const float *x, const float *dy, int n, int c, int hw,
                             const float *mean, const float *invstd, const float *gamma,
                             const float *beta, const double *sum_dy, const double *sum_dy_xhat,
                             double count, float *dx);

/* ---- pooling, NCHW ------------------------------------------------------ *
 * Windows of kh x kw every sh x sw pixels over the input padded by ph / pw
 * on each side, no ceil mode (PyTorch's defaults). Max pooling sees padding
 * as -inf; average pooling as 0, always dividing by kh*kw (PyTorch's
 * count_include_pad=True, MATLAB's padding value 0). */
typedef struct dpt_pool2d_desc {
    int n, c, h, w;         /* input [n, c, h, w] */
    int kh, kw, sh, sw, ph, pw;
    int out_h, out_w;       /* filled by dpt_pool2d_desc_init */
} dpt_pool2d_desc;

/* Fill out_h/out_w; returns 0, or -1 when a size or stride is not positive,
 * a padding is negative or not below the window (a window of padding
 * only), or the window is larger than the padded input. */
int dpt_pool2d_desc_init(dpt_pool2d_desc *d);
/* y [n, c, out_h, out_w] = max over each window. */
void dpt_maxpool2d_forward(const dpt_pool2d_desc *d, const float *x, float *y);
/* dx [n, c, h, w] from dy: each window's gradient goes to its maximum,
 * found again from x by the forward's scan (row by row, the first of equal
 * maxima, a NaN taking over: PyTorch's CPU rule); overlapping windows add. */
void dpt_maxpool2d_backward(const dpt_pool2d_desc *d, const float *x, const float *dy, float *dx);
/* Max pooling that keeps each window's choice for its backward, so that
 * the backward reads neither x nor searches again: for shapes where
 * dpt_maxpool2d_has_idx (2x2 windows, stride 2, no padding: the common
 * downsampling), idx [n, c, out_h, out_w] bytes (NULL: not kept) receives
 * the tap each window took (DPT_POOL_IDX_SLACK more bytes allocated);
 * other shapes ignore idx. Same bits as the
 * plain pair. */
int dpt_maxpool2d_has_idx(const dpt_pool2d_desc *d);
/* idx holds n·c·out_h·out_w bytes plus this slack: the kernels store and
 * load whole vectors of taps. */
#define DPT_POOL_IDX_SLACK 64
void dpt_maxpool2d_forward_idx(const dpt_pool2d_desc *d, const float *x, float *y,
                               unsigned char *idx);
/* dpt_maxpool2d_forward_idx of the batch norm a applied to x (only where
 * dpt_maxpool2d_has_idx): the bits of dpt_bn_apply_forward then
 * dpt_maxpool2d_forward_idx, in one pass (graph.c's bn -> pool fusion). */
void dpt_maxpool2d_forward_bn(const dpt_pool2d_desc *d, const float *x, const dpt_bn_apply *a,
                              float *y, unsigned char *idx);
/* The same, and xv [n, c, out_h, out_w] (NULL: not wanted) gets x at each
 * window's maximum (before the batch norm), for dpt_maxpool2d_backward_bn. */
void dpt_maxpool2d_forward_bnx(const dpt_pool2d_desc *d, const float *x, const dpt_bn_apply *a,
                               float *y, unsigned char *idx, float *xv);
/* dpt_maxpool2d_backward_idx (dx NULL: not written), and the sums of the batch norm's backward
 * that dpt_bn_grad_sums would take from x and this dx (the gradient at the
 * batch norm's output) added into s_g[c] and s_gx[c], taken from idx and xv
 * of dpt_maxpool2d_forward_bnx: only the window maxima have a nonzero
 * gradient, so neither x nor dx is read back (same values, summed in
 * another order). */
void dpt_maxpool2d_backward_bn(const dpt_pool2d_desc *d, const unsigned char *idx,
                               const float *xv, const dpt_bn_apply *a, const float *dy, float *dx,
                               double *s_g, double *s_gx);
/* dpt_maxpool2d_backward from the idx of dpt_maxpool2d_forward_idx (only
 * where dpt_maxpool2d_has_idx). */
void dpt_maxpool2d_backward_idx(const dpt_pool2d_desc *d, const unsigned char *idx,
                                const float *dy, float *dx);
/* y = sum of each window / (kh*kw). */
void dpt_avgpool2d_forward(const dpt_pool2d_desc *d, const float *x, float *y);
/* dx: each window's dy / (kh*kw) to every input pixel of it, added up. */
void dpt_avgpool2d_backward(const dpt_pool2d_desc *d, const float *dy, float *dx);
/* Global average over hw per channel: x [n, c, hw] -> y [n, c]. */
void dpt_global_avgpool_forward(const float *x, float *y, int n, int c, int hw);
/* dx [n, c, hw] = dy [n, c] / hw. */
void dpt_global_avgpool_backward(const float *dy, float *dx, int n, int c, int hw);

/* ---- elementwise activations (act.c) ---------------------------------------- *
 * Backward overwrites dx; dx may equal dy. */

/* y = x where x > 0, else alpha·x. */
void dpt_leakyrelu_forward(const float *x, float *y, size_t n, float alpha);
/* dx = dy where x > 0, else alpha·dy (PyTorch's rule, on the input). */
void dpt_leakyrelu_backward(const float *x, const float *dy, float *dx, size_t n, float alpha);
/* y = 1 / (1 + exp(−x)). */
void dpt_sigmoid_forward(const float *x, float *y, size_t n);
/* dx = dy·y·(1 − y), from the forward's output y. */
void dpt_sigmoid_backward(const float *y, const float *dy, float *dx, size_t n);
void dpt_tanh_forward(const float *x, float *y, size_t n);
/* dx = dy·(1 − y²), from the forward's output y. */
void dpt_tanh_backward(const float *y, const float *dy, float *dx, size_t n);

/* ---- dropout ------------------------------------------------------------------ *
 * out = in · 1/(1−p) where element j of observation i is kept, else 0: it
 * is dropped when dpt_rng_key_uniform(key_i, j) < p, key_i =
 * dpt_rng_key(seed, epoch, iteration, stream, obs0 + i) (core.h). in and
 * out are [n, per]. The forward (in = x) and the backward (in = dy) are
 * the same call with the same key arguments. 0 <= p < 1; out may equal in. */
void dpt_dropout_apply(const float *in, float *out, int n, size_t per, float p, uint64_t seed,
                       uint64_t epoch, uint64_t iteration, uint64_t stream, uint64_t obs0);

/* ---- ReLU ---------------------------------------------------------------- */
void dpt_relu_forward(const float *x, float *y, size_t n);
/* dx = dy where y > 0, else 0 (y is the forward output). dx may equal dy. */
void dpt_relu_backward(const float *y, const float *dy, float *dx, size_t n);

/* ---- fully connected: y[n, out] = x[n, in] · wᵀ + b, w [out, in] -------- */
void dpt_linear_forward(const float *x, const float *w, const float *b, float *y, int n,
                        int in, int out);
/* dx [n, in] (may be NULL), dw [out, in], db [out] (may be NULL). */
void dpt_linear_backward(const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db, int n, int in, int out);
/* The same with x given as a batch norm's input (xa; channels of hw
 * consecutive inputs, in a multiple of hw): the layer sees xa applied to x,
 * and with xg (needs dx) the batch norm's backward sums come with dx, as
 * dpt_conv2d_backward_ex's. dpt_linear_fuses_bn says whether the kernels do
 * that on the fly for these sizes (the backward only with xg); otherwise it
 * goes an image at a time through work (in floats), correct but slower
 * than the BLAS unfused. */
int dpt_linear_fuses_bn(int in, int out, int hw);
void dpt_linear_forward_ex(const float *x, const dpt_bn_apply *xa, int hw, const float *w,
                           const float *b, float *y, int n, int in, int out, float *work);
void dpt_linear_backward_ex(const float *x, const dpt_bn_apply *xa, int hw, const float *w,
                            const float *dy, float *dx, float *dw, float *db, int n, int in,
                            int out, float *work, double *xg);

/* ---- softmax and cross-entropy ------------------------------------------- */
/* Row-wise softmax of logits [n, k] into p [n, k] (max-subtracted). */
void dpt_softmax_forward(const float *logits, float *p, int n, int k);
/* Mean cross-entropy over the n rows between probabilities p and targets t
 * (one-hot or soft, rows summing to 1), and its gradient with respect to the
 * logits: dlogits = (p - t) * scale / n, where scale lets a caller weight
 * the loss (1 for a plain mean). Returns the (unscaled) mean loss. dlogits
 * may be NULL. */
double dpt_softmax_xent(const float *p, const float *t, int n, int k, float scale,
                        float *dlogits);
/* Mean squared error 0.5·Σ(y - t)² / n and its gradient (y - t)·scale / n. */
double dpt_mse(const float *y, const float *t, int n, int k, float scale, float *dy);

/* ---- recurrent layers: LSTM and GRU (rnn.c) -------------------------------- *
 * PyTorch's gate order and weight layouts, so weights map onto
 * torch.nn.LSTM / torch.nn.GRU (one layer, unidirectional):
 *   LSTM: w_ih [4H, F], w_hh [4H, H], b_ih [4H], b_hh [4H], gates i, f, g, o;
 *         c' = f·c + i·g, h' = o·tanh(c')
 *   GRU:  w_ih [3H, F], w_hh [3H, H], b_ih [3H], b_hh [3H], gates r, z, n;
 *         n = tanh(W_in x + b_in + r·(W_hn h + b_hn)), h' = (1 − z)·n + z·h
 * Sequences are batch-major, as the data pipeline lays out a minibatch:
 * x [N][T][F], y [N][T][H]; states h, c [N][H].
 * len [N] (NULL: every sequence has T steps) masks padded steps (t >= len[b],
 * or t < T - len[b] with pad_left): a padded step leaves sequence b's state
 * unchanged, writes y = 0 (and dx = 0) there and ignores dy there, so
 * padding changes neither outputs nor gradients, on either side (len 0 is
 * allowed: the state passes straight through). The input projections of
 * all N·T steps are one product (a gather when x is one-hot); the
 * recurrence is one product per step over the batch, through the vector
 * kernels of the selected ops kernel set (rnn_isa.h) or the BLAS
 * (generic). Results are deterministic for a kernel set. */
typedef enum dpt_rnn_kind { DPT_RNN_LSTM = 0, DPT_RNN_GRU = 1 } dpt_rnn_kind;

typedef struct dpt_rnn_desc {
    dpt_rnn_kind kind;
    int n, t, f, h; /* batch N, steps T, features F, units H */
    int pad_left;   /* 0: sequence b's valid steps are [0, len[b]) (padding last);
                       1: they are [T - len[b], T) (padding first) */
} dpt_rnn_desc;

/* Gates per unit: 4 (LSTM) or 3 (GRU). */
int dpt_rnn_gates(dpt_rnn_kind kind);
/* Floats the forward pass keeps for the backward pass (`save`: the
 * activated gates, the hidden products (GRU), the state before each step
 * and the cell after it (LSTM), and the forward's packed weights); the
 * caller owns it and passes the same buffer, untouched, to
 * dpt_rnn_backward. */
size_t dpt_rnn_save_floats(const dpt_rnn_desc *d);
/* Scratch floats dpt_rnn_backward needs (the forward needs none). */
size_t dpt_rnn_work_floats(const dpt_rnn_desc *d);
/* y [N,T,H] = the output of every step (zero on padded steps); hn, cn [N,H]
 * (may be NULL) = the state after each sequence's last step, to carry into
 * the next chunk. h0, c0 [N,H]: the initial state (NULL: zeros). c0 and cn
 * are for the LSTM only (ignored for the GRU). */
void dpt_rnn_forward(const dpt_rnn_desc *d, const float *x, const int *len, const float *w_ih,
                     const float *w_hh, const float *b_ih, const float *b_hh, const float *h0,
                     const float *c0, float *y, float *hn, float *cn, float *save);
/* Backpropagation through time, after dpt_rnn_forward with the same
 * arguments filled `save`. dy [N,T,H] is the gradient of every step's
 * output (NULL: zero, e.g. output=last, which passes it as dhn), dhn, dcn
 * [N,H] that of the final state (NULL: zero). Writes (overwrites) dw_ih,
 * dw_hh, db_ih, db_hh, and, where not NULL, dx [N,T,F] (zero on padded
 * steps) and dh0, dc0 [N,H] (to feed the previous chunk's dhn/dcn when
 * backpropagating across chunks); dx NULL (an input layer) also saves its
 * product. work: dpt_rnn_work_floats(d). */
void dpt_rnn_backward(const dpt_rnn_desc *d, const float *x, const int *len, const float *w_ih,
                      const float *w_hh, const float *save, const float *dy, const float *dhn,
                      const float *dcn, float *dx, float *dw_ih, float *dw_hh, float *db_ih,
                      float *db_hh, float *dh0, float *dc0, float *work);

#endif
