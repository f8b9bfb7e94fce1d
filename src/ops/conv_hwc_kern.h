/* The HWC convolution kernels (conv_hwc.h), compiled once per instruction
 * set by conv_hwc_avx512.c / conv_hwc_avx2.c, which define VEC, VW, VLOAD,
 * VSTORE, VSET1, VZERO, VFMA, VADD, KERN(name) and HWC_RMAX (positions or
 * channels per tile: with 2 vectors of accumulators per row, 2*HWC_RMAX
 * accumulators plus 2 operands and a broadcast fill the registers).
 *
 * Every tile is R rows x NV vectors (NV 1 or 2) of accumulators; R and NV
 * are constants in each instance (the switches below), so the accumulators
 * stay in registers. */

#define HWC_MAX_TAPS 1024

/* Output tiles are RY rows (1-3, possibly of different images) x RX
 * positions (RY*RX <= HWC_RMAX); row ry starts at xr_ry in the input and
 * y_ry in the output, its positions xs (input) and cop (output) apart.
 * acc[r][v] = Σ_tap Σ_ci xr_ry[toff[t] + rx*xs + ci] * w[(t*cin + ci)*ws + v*VW]
 * (w: the tile's block of output channels, ws = its width);
 * y_ry[rx*cop + v*VW] = acc[r][v]. */
static inline __attribute__((always_inline)) void
KERN(hwc_fwd_tile)(const float *x0, const float *x1, const float *x2, int xs, const int *toff,
                   int nt, int cin, const float *w, int ws, int cop, float *y0, float *y1, float *y2,
                   conv_prefetch *pf, const int RY, const int RX, const int NV)
{
    VEC acc[HWC_RMAX][2];
#pragma GCC unroll 16
    for (int r = 0; r < RY * RX; r++)
        acc[r][0] = acc[r][1] = VZERO();
    for (int t = 0; t < nt; t++) {
        const float *xt0 = x0 + toff[t], *xt1 = x1 + toff[t], *xt2 = x2 + toff[t];
        const float *wt = w + (size_t)t * cin * ws;
        conv_prefetch_step(pf); /* a few lines a tap: a burst would stall */
        for (int ci = 0; ci < cin; ci++) {
            const VEC w0 = VLOAD(wt + (size_t)ci * ws);
            const VEC w1 = NV > 1 ? VLOAD(wt + (size_t)ci * ws + VW) : w0;
#pragma GCC unroll 4
            for (int ry = 0; ry < RY; ry++) {
                const float *xt = ry == 0 ? xt0 : ry == 1 ? xt1 : xt2;
#pragma GCC unroll 16
                for (int rx = 0; rx < RX; rx++) {
                    const VEC bx = VSET1(xt[rx * xs + ci]);
                    acc[ry * RX + rx][0] = VFMA(bx, w0, acc[ry * RX + rx][0]);
                    if (NV > 1)
                        acc[ry * RX + rx][1] = VFMA(bx, w1, acc[ry * RX + rx][1]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int ry = 0; ry < RY; ry++) {
        float *yr = ry == 0 ? y0 : ry == 1 ? y1 : y2;
#pragma GCC unroll 16
        for (int rx = 0; rx < RX; rx++) {
            float *o = yr + (size_t)rx * cop;
            VSTORE(o, acc[ry * RX + rx][0]);
            if (NV > 1)
                VSTORE(o + VW, acc[ry * RX + rx][1]);
        }
    }
}

/* The same tiles over dy (row ry at dy_ry, positions cop apart); for each
 * tap t: acc[r][v] = Σ_co dy_ry[rx*cop + co] * w[(t*cout + co)*cip + v*VW]
 * (w: the tile's block of input channels, cip = its width),
 * then dx_ry[toff[t] + rx*xs + v*VW] += acc[r][v]. */
static inline __attribute__((always_inline)) void
KERN(hwc_dx_tile)(const float *dy0, const float *dy1, const float *dy2, int cop, const float *w,
                  int cip, int cout, const int *toff, int nt, float *dx0, float *dx1, float *dx2,
                  int xs, conv_prefetch *pf, const int RY, const int RX, const int NV)
{
    for (int t = 0; t < nt; t++) {
        conv_prefetch_step(pf);
        VEC acc[HWC_RMAX][2];
#pragma GCC unroll 16
        for (int r = 0; r < RY * RX; r++)
            acc[r][0] = acc[r][1] = VZERO();
        const float *wt = w + (size_t)t * cout * cip;
        for (int co = 0; co < cout; co++) {
            const VEC w0 = VLOAD(wt + (size_t)co * cip);
            const VEC w1 = NV > 1 ? VLOAD(wt + (size_t)co * cip + VW) : w0;
#pragma GCC unroll 4
            for (int ry = 0; ry < RY; ry++) {
                const float *dr = ry == 0 ? dy0 : ry == 1 ? dy1 : dy2;
#pragma GCC unroll 16
                for (int rx = 0; rx < RX; rx++) {
                    const VEC bd = VSET1(dr[(size_t)rx * cop + co]);
                    acc[ry * RX + rx][0] = VFMA(bd, w0, acc[ry * RX + rx][0]);
                    if (NV > 1)
                        acc[ry * RX + rx][1] = VFMA(bd, w1, acc[ry * RX + rx][1]);
                }
            }
        }
#pragma GCC unroll 4
        for (int ry = 0; ry < RY; ry++) {
            float *dt = (ry == 0 ? dx0 : ry == 1 ? dx1 : dx2) + toff[t];
#pragma GCC unroll 16
            for (int rx = 0; rx < RX; rx++) {
                float *p = dt + (size_t)rx * xs;
                VSTORE(p, VADD(VLOAD(p), acc[ry * RX + rx][0]));
                if (NV > 1)
                    VSTORE(p + VW, VADD(VLOAD(p + VW), acc[ry * RX + rx][1]));
            }
        }
    }
}

/* acc[r][v] = Σ_b Σ_oy Σ_ox x[b*ximg + oy*xrow + ox*xs + r] * dy[b*yimg + (oy*ow + ox)*cop + v*VW]
 * over nb images; dwa[r*ws + v*VW] += acc[r][v]. */
static inline __attribute__((always_inline)) void
KERN(hwc_dw_tile)(const float *x, int xrow, int xs, size_t ximg, const float *dy, int cop,
                  int dyrow, size_t yimg, int nb, int oh, int ow, float *dwa, int ws,
                  conv_prefetch *pf,
                  const int R, const int NV)
{
    VEC acc[HWC_RMAX][2];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = VZERO();
    /* The nb*oh rows as one loop (dy's rows are evenly spaced across the
     * images; x jumps at each image's end): a nested image loop measured
     * 4% slower on one image. */
    const float *xb = x, *xr = x, *db = dy, *dr = dy; /* dy's rows dyrow apart */
    for (int q = 0, oy = 0; q < nb * oh; q++) {
        conv_prefetch_step(pf); /* a few lines a row: a burst would stall */
        for (int ox = 0; ox < ow; ox++) {
            const float *xq = xr + (size_t)ox * xs;
            const VEC d0 = VLOAD(dr + (size_t)ox * cop);
            const VEC d1 = NV > 1 ? VLOAD(dr + (size_t)ox * cop + VW) : d0;
#pragma GCC unroll 16
            for (int r = 0; r < R; r++) {
                const VEC bx = VSET1(xq[r]);
                acc[r][0] = VFMA(bx, d0, acc[r][0]);
                if (NV > 1)
                    acc[r][1] = VFMA(bx, d1, acc[r][1]);
            }
        }
        dr += dyrow;
        xr += xrow;
        if (++oy == oh)
            oy = 0, xb += ximg, xr = xb, db += yimg, dr = db;
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        float *p = dwa + (size_t)r * ws;
        VSTORE(p, VADD(VLOAD(p), acc[r][0]));
        if (NV > 1)
            VSTORE(p + VW, VADD(VLOAD(p + VW), acc[r][1]));
    }
}

/* One instance per (R, NV): case NV*32 + R. */
#define HWC_CASE(fn, r, ...)                                                                   \
    case 32 + (r): fn(__VA_ARGS__, (r), 1); break;                                             \
    case 64 + (r): fn(__VA_ARGS__, (r), 2); break;
#if HWC_RMAX == 14
#define HWC_CASES(fn, ...)                                                                     \
    HWC_CASE(fn, 1, __VA_ARGS__) HWC_CASE(fn, 2, __VA_ARGS__) HWC_CASE(fn, 3, __VA_ARGS__)     \
    HWC_CASE(fn, 4, __VA_ARGS__) HWC_CASE(fn, 5, __VA_ARGS__) HWC_CASE(fn, 6, __VA_ARGS__)     \
    HWC_CASE(fn, 7, __VA_ARGS__) HWC_CASE(fn, 8, __VA_ARGS__) HWC_CASE(fn, 9, __VA_ARGS__)     \
    HWC_CASE(fn, 10, __VA_ARGS__) HWC_CASE(fn, 11, __VA_ARGS__) HWC_CASE(fn, 12, __VA_ARGS__)  \
    HWC_CASE(fn, 13, __VA_ARGS__) HWC_CASE(fn, 14, __VA_ARGS__)
#elif HWC_RMAX == 6
#define HWC_CASES(fn, ...)                                                                     \
    HWC_CASE(fn, 1, __VA_ARGS__) HWC_CASE(fn, 2, __VA_ARGS__) HWC_CASE(fn, 3, __VA_ARGS__)     \
    HWC_CASE(fn, 4, __VA_ARGS__) HWC_CASE(fn, 5, __VA_ARGS__) HWC_CASE(fn, 6, __VA_ARGS__)
#else
#error "HWC_RMAX: 6 or 14"
#endif

/* 2-D tiles: case NV*256 + RY*16 + RX. */
#define HWC_CASE2(fn, ry, rx, ...)                                                             \
    case 256 + (ry) * 16 + (rx): fn(__VA_ARGS__, (ry), (rx), 1); break;                        \
    case 512 + (ry) * 16 + (rx): fn(__VA_ARGS__, (ry), (rx), 2); break;
#define HWC_ROW2(fn, ry, ...)                                                                  \
    HWC_CASE2(fn, ry, 1, __VA_ARGS__) HWC_CASE2(fn, ry, 2, __VA_ARGS__)
#define HWC_ROW4(fn, ry, ...)                                                                  \
    HWC_ROW2(fn, ry, __VA_ARGS__) HWC_CASE2(fn, ry, 3, __VA_ARGS__)                            \
    HWC_CASE2(fn, ry, 4, __VA_ARGS__)
#define HWC_ROW6(fn, ry, ...)                                                                  \
    HWC_ROW4(fn, ry, __VA_ARGS__) HWC_CASE2(fn, ry, 5, __VA_ARGS__)                            \
    HWC_CASE2(fn, ry, 6, __VA_ARGS__)
#if HWC_RMAX == 14
#define HWC_CASES2(fn, ...)                                                                    \
    HWC_ROW6(fn, 1, __VA_ARGS__) HWC_CASE2(fn, 1, 7, __VA_ARGS__)                              \
    HWC_CASE2(fn, 1, 8, __VA_ARGS__) HWC_CASE2(fn, 1, 9, __VA_ARGS__)                          \
    HWC_CASE2(fn, 1, 10, __VA_ARGS__) HWC_CASE2(fn, 1, 11, __VA_ARGS__)                        \
    HWC_CASE2(fn, 1, 12, __VA_ARGS__) HWC_CASE2(fn, 1, 13, __VA_ARGS__)                        \
    HWC_CASE2(fn, 1, 14, __VA_ARGS__) HWC_ROW6(fn, 2, __VA_ARGS__)                             \
    HWC_CASE2(fn, 2, 7, __VA_ARGS__) HWC_ROW4(fn, 3, __VA_ARGS__)
#else
#define HWC_CASES2(fn, ...)                                                                    \
    HWC_ROW6(fn, 1, __VA_ARGS__) HWC_CASE2(fn, 2, 1, __VA_ARGS__)                              \
    HWC_CASE2(fn, 2, 2, __VA_ARGS__) HWC_CASE2(fn, 2, 3, __VA_ARGS__) HWC_ROW2(fn, 3, __VA_ARGS__)
#endif

/* Rows per output tile (1-3): the fewest tiles of at most HWC_RMAX
 * positions over the oh x ow plane (rows of a tile are split evenly). */
static int KERN(hwc_rows)(int oh, int ow)
{
    int best = 1, nbest = 0;
    for (int ry = 1; ry <= 3; ry++) {
        const int rxm = HWC_RMAX / ry;
        const int n = (oh + ry - 1) / ry * ((ow + rxm - 1) / rxm);
        if (ry == 1 || n < nbest)
            best = ry, nbest = n;
    }
    return best;
}

/* Vectors (1 or 2) of the channel block starting at c0 of a padded count cp. */
static inline int KERN(hwc_nv)(int cp, int c0) { return cp - c0 >= 2 * VW ? 2 : 1; }

/* Spread what pf still has over steps calls of conv_prefetch_step. */
static void KERN(hwc_pf_spread)(conv_prefetch *pf, size_t steps)
{
    if (!pf)
        return;
    size_t left = 0;
    for (int i = 0; i < 3; i++)
        left += pf->lines[i];
    pf->per = left / (steps ? steps : 1) + 1;
}

/* Images per block (1-3): on planes of at most 100 positions whose own
 * tiles are less than 80% full (4x4, 5x5), enough images that the block's
 * rows split into whole tiles of RY rows. Elsewhere 1: blocks measured no
 * faster on 7x7 and 8x8 planes (tiles 87-89% full) and slowed the
 * backward (bench/hwc_bench.sh, alternated). */
static int KERN(hwc_block)(int oh, int ow)
{
    if (oh * ow > 100)
        return 1;
    const int ry = KERN(hwc_rows)(oh, ow), rxm = HWC_RMAX / ry;
    const int tiles = (oh + ry - 1) / ry * ((ow + rxm - 1) / rxm);
    if (5 * oh * ow >= 4 * tiles * ry * rxm)
        return 1;
    int b = 1;
    while (b < 3 && b * oh % ry != 0)
        b++;
    return b;
}

/* The start of output row q (image q / oh, row q % oh) at column x0, in
 * the input (xp, images ximg apart, positions s*cs apart) and in a
 * [oh*ow][c] output (images yimg apart). */
static inline const float *KERN(hwc_in_row)(const hwc_geom *g, const float *xp, size_t ximg,
                                             int cs, int q, int x0)
{
    const int b = q / g->oh, oy = q % g->oh;
    return xp + b * ximg + ((size_t)oy * g->stride * g->wp + (size_t)x0 * g->stride) * cs;
}

static inline size_t KERN(hwc_out_row)(const hwc_geom *g, size_t yimg, int c, int q, int x0)
{
    const int b = q / g->oh, oy = q % g->oh;
    return b * yimg + ((size_t)oy * g->ow + x0) * c;
}

static void KERN(hwc_fwd)(const hwc_geom *g, int nb, const float *xp, size_t ximg,
                          const float *wpk, float *yp, size_t yimg, conv_prefetch *pf)
{
    int toff[HWC_MAX_TAPS];
    const int nt = g->kh * g->kw, cin = g->c_in, cip = g->cip, cop = g->cop;
    const int xs = g->stride * cip;
    for (int ki = 0; ki < g->kh; ki++)
        for (int kj = 0; kj < g->kw; kj++)
            toff[ki * g->kw + kj] = (ki * g->dil * g->wp + kj * g->dil) * cip;
    const int ry = KERN(hwc_rows)(g->oh, g->ow), rxm = HWC_RMAX / ry;
    const int nch = (g->ow + rxm - 1) / rxm, rows = nb * g->oh;
    KERN(hwc_pf_spread)(pf, (size_t)((rows + ry - 1) / ry) * nch * ((cop + 2 * VW - 1) / (2 * VW)) *
                                nt);
    for (int co0 = 0; co0 < cop;) {
        const int nv = KERN(hwc_nv)(cop, co0);
        for (int q = 0; q < rows; q += ry) {
            const int RY = rows - q < ry ? rows - q : ry;
            const int q1 = RY > 1 ? q + 1 : q, q2 = RY > 2 ? q + 2 : q;
            for (int k = 0; k < nch; k++) {
                const int x0 = k * g->ow / nch, RX = (k + 1) * g->ow / nch - x0;
                const float *xa = KERN(hwc_in_row)(g, xp, ximg, cip, q, x0);
                const float *xb = KERN(hwc_in_row)(g, xp, ximg, cip, q1, x0);
                const float *xc = KERN(hwc_in_row)(g, xp, ximg, cip, q2, x0);
                float *ya = yp + KERN(hwc_out_row)(g, yimg, cop, q, x0) + co0;
                float *yb = yp + KERN(hwc_out_row)(g, yimg, cop, q1, x0) + co0;
                float *yc = yp + KERN(hwc_out_row)(g, yimg, cop, q2, x0) + co0;
                switch (nv * 256 + RY * 16 + RX) {
                    HWC_CASES2(KERN(hwc_fwd_tile), xa, xb, xc, xs, toff, nt, cin,
                               wpk + (size_t)co0 * nt * cin, nv * VW, cop, ya, yb, yc, pf)
                default: break;
                }
            }
        }
        co0 += nv * VW;
    }
}

static void KERN(hwc_dx)(const hwc_geom *g, int nb, const float *dyp, size_t yimg,
                         const float *wt, float *dxp, size_t ximg, conv_prefetch *pf)
{
    int toff[HWC_MAX_TAPS];
    const int nt = g->kh * g->kw, cip = g->cip, cop = g->cop, xs = g->stride * cip;
    for (int ki = 0; ki < g->kh; ki++)
        for (int kj = 0; kj < g->kw; kj++)
            toff[ki * g->kw + kj] = (ki * g->dil * g->wp + kj * g->dil) * cip;
    const int ry = KERN(hwc_rows)(g->oh, g->ow), rxm = HWC_RMAX / ry;
    const int nch = (g->ow + rxm - 1) / rxm, rows = nb * g->oh;
    KERN(hwc_pf_spread)(pf, (size_t)((rows + ry - 1) / ry) * nch * ((cip + 2 * VW - 1) / (2 * VW)) *
                                nt);
    for (int c0 = 0; c0 < cip;) {
        const int nv = KERN(hwc_nv)(cip, c0);
        for (int q = 0; q < rows; q += ry) {
            const int RY = rows - q < ry ? rows - q : ry;
            const int q1 = RY > 1 ? q + 1 : q, q2 = RY > 2 ? q + 2 : q;
            for (int k = 0; k < nch; k++) {
                const int x0 = k * g->ow / nch, RX = (k + 1) * g->ow / nch - x0;
                const float *da = dyp + KERN(hwc_out_row)(g, yimg, cop, q, x0);
                const float *db = dyp + KERN(hwc_out_row)(g, yimg, cop, q1, x0);
                const float *dc = dyp + KERN(hwc_out_row)(g, yimg, cop, q2, x0);
                float *xa = (float *)KERN(hwc_in_row)(g, dxp, ximg, cip, q, x0) + c0;
                float *xb = (float *)KERN(hwc_in_row)(g, dxp, ximg, cip, q1, x0) + c0;
                float *xc = (float *)KERN(hwc_in_row)(g, dxp, ximg, cip, q2, x0) + c0;
                switch (nv * 256 + RY * 16 + RX) {
                    HWC_CASES2(KERN(hwc_dx_tile), da, db, dc, cop,
                               wt + (size_t)c0 * nt * g->c_out, nv * VW, g->c_out, toff, nt,
                               xa, xb, xc, xs, pf)
                default: break;
                }
            }
        }
        c0 += nv * VW;
    }
}

static void KERN(hwc_dw)(const hwc_geom *g, int nb, const float *xp, size_t ximg,
                         const float *dyp, int dyrow, size_t yimg, float *dwa, conv_prefetch *pf)
{
    const int cin = g->c_in, cip = g->cip, cop = g->cop;
    const int xs = g->stride * cip, xrow = g->stride * g->wp * cip;
    const int nch = (cin + HWC_RMAX - 1) / HWC_RMAX;
    KERN(hwc_pf_spread)(pf, (size_t)g->kh * g->kw * nch * ((cop + 2 * VW - 1) / (2 * VW)) * g->oh *
                                nb);
    /* dwa in the blocked layout of the weights (conv_hwc.c wblk), each block
     * swept in order: its tiles' rows are consecutive lines. */
    for (int co0 = 0; co0 < cop;) {
        const int nv = KERN(hwc_nv)(cop, co0);
        for (int ki = 0; ki < g->kh; ki++)
            for (int kj = 0; kj < g->kw; kj++) {
                const int t = ki * g->kw + kj;
                const float *xt = xp + (size_t)(ki * g->dil * g->wp + kj * g->dil) * cip;
                for (int k = 0; k < nch; k++) {
                    const int c0 = k * cin / nch, R = (k + 1) * cin / nch - c0;
                    float *dwt = dwa + (size_t)co0 * g->kh * g->kw * cin +
                                 ((size_t)t * cin + c0) * nv * VW;
                    switch (nv * 32 + R) {
                        HWC_CASES(KERN(hwc_dw_tile), xt + c0, xrow, xs, ximg, dyp + co0, cop,
                                  dyrow, yimg, nb, g->oh, g->ow, dwt, nv * VW, pf)
                    default: break;
                    }
                }
            }
        co0 += nv * VW;
    }
}

/* ---- layout changes: 8x8 blocks transposed in AVX registers (both sets
 * have AVX), edges by masked loads and stores ---- */

static inline __m256i KERN(hwc_mask8)(int n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* r[i] lane j -> r[j] lane i. */
static inline void KERN(hwc_tr8)(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

#if VW == 16
/* r[i] lane j -> r[j] lane i, 16 x 16 (AVX-512: a third fewer shuffles per
 * float than 8x8 blocks, and whole-line loads and stores). */
static inline void KERN(hwc_tr16)(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* u[4i+m] 128-bit lane j holds rows 4i..4i+3 of column 4j+m. */
    for (int m = 0; m < 4; m++) {
        const __m512 s0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
        const __m512 s1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
        const __m512 s2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
        const __m512 s3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
        r[m] = _mm512_shuffle_f32x4(s0, s2, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(s1, s3, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
        r[12 + m] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
    }
}

/* hwc_pack for rows of a multiple of 16 pixels, channels 0 .. c rounded
 * down to 16. */
static void KERN(hwc_pack16)(const float *src, int c, int h, int w, int pad, int wp, int cs,
                             const dpt_bn_apply *a, float *dst)
{
    const __m512 z0 = _mm512_setzero_ps();
    const size_t hw = (size_t)h * w;
    for (int y = 0; y < h; y++)
        for (int x0 = 0; x0 < w; x0 += 16) {
            float *o = dst + ((size_t)(y + pad) * wp + pad + x0) * cs;
            for (int c0 = 0; c0 + 16 <= c; c0 += 16) {
                const float *in = src + (size_t)c0 * hw + (size_t)y * w + x0;
                __m512 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = _mm512_loadu_ps(in + i * hw);
                if (a) /* a's forward, the expression of the batch-norm kernels */
                    for (int i = 0; i < 16; i++) {
                        const int ch = c0 + i;
                        __m512 z = _mm512_mul_ps(_mm512_sub_ps(r[i], _mm512_set1_ps(a->mean[ch])),
                                                 _mm512_set1_ps(a->scale[ch]));
                        z = _mm512_add_ps(z, _mm512_set1_ps(a->shift[ch]));
                        r[i] = a->relu ? _mm512_maskz_mov_ps(
                                             _mm512_cmp_ps_mask(z, z0, _CMP_GT_OQ), z)
                                       : z;
                    }
                KERN(hwc_tr16)(r);
                for (int p = 0; p < 16; p++)
                    _mm512_storeu_ps(o + (size_t)p * cs + c0, r[p]);
            }
        }
}

/* hwc_unpack for rows of a multiple of 16 pixels, channels 0 .. c rounded
 * down to 16. */
static void KERN(hwc_unpack16)(const float *src, int c, int h, int w, int pad, int wp, int cs,
                               const float *bias, float *dst)
{
    const size_t hw = (size_t)h * w;
    for (int y = 0; y < h; y++)
        for (int x0 = 0; x0 < w; x0 += 16) {
            const float *in = src + ((size_t)(y + pad) * wp + pad + x0) * cs;
            for (int c0 = 0; c0 + 16 <= c; c0 += 16) {
                __m512 r[16];
                for (int p = 0; p < 16; p++)
                    r[p] = _mm512_loadu_ps(in + (size_t)p * cs + c0);
                KERN(hwc_tr16)(r);
                float *o = dst + (size_t)c0 * hw + (size_t)y * w + x0;
                for (int i = 0; i < 16; i++)
                    _mm512_storeu_ps(o + i * hw, bias ? _mm512_add_ps(r[i], _mm512_set1_ps(bias[c0 + i]))
                                                      : r[i]);
            }
        }
}
#endif

/* dst [(y+pad)*wp + x+pad][c] (pixel stride cs) = src [c][y][x], for the
 * c channels of h x w planes; channels c..(c rounded up to 8) get zeros. */
static void KERN(hwc_pack)(const float *src, int c, int h, int w, int pad, int wp, int cs,
                           const dpt_bn_apply *a, float *dst)
{
    const __m256 z0 = _mm256_setzero_ps();
    const size_t hw = (size_t)h * w;
    int cstart = 0; /* the channels the 8x8 blocks below take */
#if VW == 16
    if (w % 16 == 0 && c >= 16) {
        KERN(hwc_pack16)(src, c, h, w, pad, wp, cs, a, dst);
        cstart = c / 16 * 16;
    }
#endif
    for (int y = 0; y < h && cstart < c; y++)
        for (int x0 = 0; x0 < w; x0 += 8) {
            const int np = w - x0 < 8 ? w - x0 : 8;
            const __m256i m = KERN(hwc_mask8)(np);
            float *o = dst + ((size_t)(y + pad) * wp + pad + x0) * cs;
            for (int c0 = cstart; c0 < c; c0 += 8) {
                const float *in = src + (size_t)c0 * hw + (size_t)y * w + x0;
                __m256 r[8];
                /* Masked loads and stores only at the edges (slow on some
                 * CPUs). */
                for (int i = 0; i < 8; i++)
                    r[i] = c0 + i >= c ? _mm256_setzero_ps()
                           : np == 8   ? _mm256_loadu_ps(in + i * hw)
                                       : _mm256_maskload_ps(in + i * hw, m);
                if (a) /* a's forward, the expression of the batch-norm kernels */
                    for (int i = 0; i < 8 && c0 + i < c; i++) {
                        const int ch = c0 + i;
                        __m256 z = _mm256_mul_ps(_mm256_sub_ps(r[i], _mm256_set1_ps(a->mean[ch])),
                                                 _mm256_set1_ps(a->scale[ch]));
                        z = _mm256_add_ps(z, _mm256_set1_ps(a->shift[ch]));
                        r[i] = a->relu ? _mm256_and_ps(z, _mm256_cmp_ps(z, z0, _CMP_GT_OQ)) : z;
                    }
                KERN(hwc_tr8)(r);
                for (int p = 0; p < np; p++)
                    _mm256_storeu_ps(o + (size_t)p * cs + c0, r[p]);
            }
        }
}

/* dst [c][y][x] = src [(y+pad)*wp + x+pad][c] (pixel stride cs) + bias[c]
 * (bias may be NULL). */
static void KERN(hwc_unpack)(const float *src, int c, int h, int w, int pad, int wp, int cs,
                             const float *bias, float *dst)
{
    const size_t hw = (size_t)h * w;
    int cstart = 0; /* the channels the 8x8 blocks below take */
#if VW == 16
    if (w % 16 == 0 && c >= 16) {
        KERN(hwc_unpack16)(src, c, h, w, pad, wp, cs, bias, dst);
        cstart = c / 16 * 16;
    }
#endif
    for (int y = 0; y < h && cstart < c; y++)
        for (int x0 = 0; x0 < w; x0 += 8) {
            const int np = w - x0 < 8 ? w - x0 : 8;
            const __m256i m = KERN(hwc_mask8)(np);
            const float *in = src + ((size_t)(y + pad) * wp + pad + x0) * cs;
            for (int c0 = cstart; c0 < c; c0 += 8) {
                const int nr = c - c0 < 8 ? c - c0 : 8;
                __m256 r[8];
                for (int p = 0; p < 8; p++)
                    r[p] = p < np ? _mm256_loadu_ps(in + (size_t)p * cs + c0) : _mm256_setzero_ps();
                KERN(hwc_tr8)(r);
                float *o = dst + (size_t)c0 * hw + (size_t)y * w + x0;
                for (int i = 0; i < nr; i++) {
                    __m256 v = r[i];
                    if (bias)
                        v = _mm256_add_ps(v, _mm256_set1_ps(bias[c0 + i]));
                    if (np == 8)
                        _mm256_storeu_ps(o + i * hw, v);
                    else
                        _mm256_maskstore_ps(o + i * hw, m, v);
                }
            }
        }
}

/* out = the batch norm backward of a (dpt_bn_apply) on one plane of n:
 * kf*g' - ka - (y - mean)*kb, g' = g masked by the ReLU (z = (y - mean)*scale
 * + shift > 0, multiply and add rounded apart as the scalar expression);
 * returns the plane's sum of out. */
static float KERN(hwc_bnback)(const float *g, const float *y, int n, float mean, float scale,
                              float shift, float kf, float ka, float kb, int relu, float *out)
{
    const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(scale);
    const __m256 vh = _mm256_set1_ps(shift), vf = _mm256_set1_ps(kf);
    const __m256 va = _mm256_set1_ps(ka), vb = _mm256_set1_ps(kb), z0 = _mm256_setzero_ps();
    __m256 acc = z0;
    for (int j = 0; j < n; j += 8) {
        const int full = n - j >= 8;
        const __m256i m = KERN(hwc_mask8)(n - j);
        const __m256 xc = _mm256_sub_ps(full ? _mm256_loadu_ps(y + j) : _mm256_maskload_ps(y + j, m), vm);
        __m256 gv = full ? _mm256_loadu_ps(g + j) : _mm256_maskload_ps(g + j, m);
        if (relu)
            gv = _mm256_and_ps(gv, _mm256_cmp_ps(_mm256_add_ps(_mm256_mul_ps(xc, vs), vh), z0,
                                                 _CMP_GT_OQ));
        __m256 v = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(vf, gv), va), _mm256_mul_ps(xc, vb));
        if (full) {
            _mm256_storeu_ps(out + j, v);
        } else {
            v = _mm256_and_ps(v, _mm256_castsi256_ps(m));
            _mm256_maskstore_ps(out + j, m, v);
        }
        acc = _mm256_add_ps(acc, v);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}

/* sum[c] += Σ_pos y, sumsq[c] += Σ_pos y² for one image's [P][cop] output
 * (+ bias, may be NULL), channels in lanes: no horizontal sum per plane.
 * The numerics of dpt_bn_sums on one image: float sums of y − K (K the
 * channel's first value), turned into plain sums in double. */
static void KERN(hwc_sums)(const float *yp, int P, int cop, int c, const float *bias,
                           double *sum, double *sumsq)
{
    for (int c0 = 0; c0 < c; c0 += VW) {
        const int nc = c - c0 < VW ? c - c0 : VW;
        float bb[VW] = {0}, fa[VW], fq[VW], kk[VW];
        for (int i = 0; bias && i < nc; i++)
            bb[i] = bias[c0 + i];
        const VEC bv = VLOAD(bb), k = VADD(VLOAD(yp + c0), bv);
        VEC a0 = VZERO(), q0 = VZERO(), a1 = VZERO(), q1 = VZERO();
        int p = 0;
        for (; p + 2 <= P; p += 2) {
            const VEC v = VSUB(VADD(VLOAD(yp + (size_t)p * cop + c0), bv), k);
            const VEC u = VSUB(VADD(VLOAD(yp + (size_t)(p + 1) * cop + c0), bv), k);
            a0 = VADD(a0, v), q0 = VFMA(v, v, q0);
            a1 = VADD(a1, u), q1 = VFMA(u, u, q1);
        }
        if (p < P) {
            const VEC v = VSUB(VADD(VLOAD(yp + (size_t)p * cop + c0), bv), k);
            a0 = VADD(a0, v), q0 = VFMA(v, v, q0);
        }
        VSTORE(fa, VADD(a0, a1));
        VSTORE(fq, VADD(q0, q1));
        VSTORE(kk, k);
        for (int i = 0; i < nc; i++) {
            const double s1 = fa[i], s2 = fq[i], K = kk[i];
            sum[c0 + i] += s1 + P * K;
            sumsq[c0 + i] += s2 + 2.0 * K * s1 + P * K * K;
        }
    }
}

const hwc_isa KERN(dpt_hwc_isa) = {ISA_NAME, VW,     KERN(hwc_block),  KERN(hwc_fwd),
                                   KERN(hwc_dx),     KERN(hwc_dw),     KERN(hwc_pack),
                                   KERN(hwc_unpack), KERN(hwc_bnback), KERN(hwc_sums)};
