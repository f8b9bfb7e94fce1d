/* dptrain's single-precision GEMM, written once and compiled per
 * instruction set (gemm_avx512.c, gemm_avx2.c define VN, VT, KN(f),
 * GEMM_MR, GEMM_NV and the KN(vfma)/KN(vload)/KN(vstore)/KN(vset1)/
 * KN(vzero) helpers before including it, inside their target pragmas).
 * Internal to gemm.c, which picks the set.
 *
 * The loop nest is the one of Goto's GEMM (and BLIS's): for a block of
 * GEMM_NC columns and GEMM_KC of the sum, op(B) is packed once into
 * panels of NR = GEMM_NV·VN columns (each k's NR values side by side, the
 * block in L2/L3); for each block of GEMM_MC rows op(A) is packed into
 * panels of GEMM_MR rows (each k's MR values side by side, the block in
 * L2); the micro-kernel then keeps an MR × NR tile of C in registers over
 * the KC values of k, streaming one A panel and one B panel (in L1).
 * Packing makes every transpose case the same kernel, pads the edges with
 * zeros (a partial tile computes the whole tile and stores only its valid
 * part) and gives the kernel unit-stride reads; where a copy costs more
 * than it saves, full panels of A or B are read in place through strides
 * instead (GEMM_DIRECT_M, GEMM_DIRECT_A below).
 *
 * Deterministic: each C element is, per KC block in increasing k, a chain
 * of fused multiply-adds over k in order from zero, then added to C (beta
 * 1 or a later block) or stored (beta 0, first block); the blocking
 * depends only on the shape, never on threads (there are none) or on
 * where a tile falls. */

#define GEMM_NR (GEMM_NV * VN)

/* One R × NR tile (R = GEMM_MR, or fewer rows for the last panel; a
 * constant once inlined): acc = Σ_k ap[k][r] · bp[k·bs + c] over kc values
 * of k, then C = acc (+ C when accum); only mr <= R rows and nr columns of
 * C are touched. alpha is in the packed A (a register here would push
 * AVX2's 16 over and spill a B vector in the loop). */
static inline __attribute__((always_inline)) void KN(gemm_micro_r)(
    int R, int kc, const float *restrict ap, size_t ars, size_t acs, const float *restrict bp,
    size_t bs, float *C, int ldc, int accum, int mr, int nr)
{
    VT acc[GEMM_MR][GEMM_NV];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++)
            acc[r][v] = KN(vzero)();
    /* The tile of C is needed only after the loop: its lines (rows far
     * apart, often out of cache) are fetched while the loop runs. */
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
        if (r < mr) {
            __builtin_prefetch(C + (size_t)r * ldc, 1);
            __builtin_prefetch(C + (size_t)r * ldc + GEMM_NR - 1, 1);
        }
    for (int k = 0; k < kc; k++) {
        VT b[GEMM_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++)
            b[v] = KN(vload)(bp + v * VN);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const VT a = KN(vset1)(ap[r * ars]);
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++)
                acc[r][v] = KN(vfma)(a, b[v], acc[r][v]);
        }
        ap += acs;
        bp += bs;
    }
    if (mr == R && nr == GEMM_NR) {
#pragma GCC unroll 16
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++) {
                float *c = C + (size_t)r * ldc + v * VN;
                KN(vstore)(c, accum ? KN(vload)(c) + acc[r][v] : acc[r][v]);
            }
        return;
    }
    /* Edge tile: through a buffer, so nothing outside C's mr × nr is read
     * or written; the same arithmetic as above. */
    float t[GEMM_NR];
    for (int r = 0; r < mr; r++) {
        float *c = C + (size_t)r * ldc;
        if (accum) {
            memcpy(t, c, (size_t)nr * sizeof *t);
            for (int v = 0; v < GEMM_NV; v++)
                KN(vstore)(t + v * VN, KN(vload)(t + v * VN) + acc[r][v]);
        } else {
            for (int v = 0; v < GEMM_NV; v++)
                KN(vstore)(t + v * VN, acc[r][v]);
        }
        memcpy(c, t, (size_t)nr * sizeof *t);
    }
}

/* The last panel of a shape whose rows are not a multiple of MR (64 rows
 * in 12-row tiles: 5 full ones and 4 rows) computed as a tile of MR/3 or
 * 2·MR/3 rows, not a whole MR-row tile of which most rows are padding
 * (11 % of the work at 64 or 32 rows). Each C element's chain of
 * multiply-adds is unchanged: the same bits. Out of line: the full tile
 * stays the only kernel inlined into the loop. */
static __attribute__((noinline)) void KN(gemm_micro_s)(int kc, const float *restrict ap,
                                                        const float *restrict bp, size_t bs,
                                                        float *C, int ldc, int accum, int mr,
                                                        int nr)
{
    if (mr <= GEMM_MR / 3)
        KN(gemm_micro_r)(GEMM_MR / 3, kc, ap, 1, GEMM_MR, bp, bs, C, ldc, accum, mr, nr);
    else
        KN(gemm_micro_r)(2 * GEMM_MR / 3, kc, ap, 1, GEMM_MR, bp, bs, C, ldc, accum, mr, nr);
}

static inline __attribute__((always_inline)) void KN(gemm_micro)(
    int kc, const float *restrict ap, size_t ars, size_t acs, const float *restrict bp,
    size_t bs, float *C, int ldc, int accum, int mr, int nr)
{
    /* Short panels are always packed ([kc][MR], ars 1). */
    if (mr <= 2 * GEMM_MR / 3 && ars == 1 && acs == GEMM_MR)
        KN(gemm_micro_s)(kc, ap, bp, bs, C, ldc, accum, mr, nr);
    else
        KN(gemm_micro_r)(GEMM_MR, kc, ap, ars, acs, bp, bs, C, ldc, accum, mr, nr);
}

/* dst[k·ldd + r] = alpha · src[r·lds + k] for r < rows, k < kc: the
 * transposing copy of packing, in 4 × 4 blocks through SSE registers (a
 * float at a time, each row's k spread over kc different lines, was what
 * made an NT product with few rows of C slow). */
static void KN(gemm_pack_t)(const float *src, size_t lds, int rows, int kc, float alpha,
                            float *restrict dst, int ldd)
{
    const __m128 al = _mm_set1_ps(alpha);
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *s0 = src + (size_t)r * lds;
        int k = 0;
        for (; k + 4 <= kc; k += 4) {
            __m128 a = _mm_loadu_ps(s0 + k), b = _mm_loadu_ps(s0 + lds + k);
            __m128 c = _mm_loadu_ps(s0 + 2 * lds + k), d = _mm_loadu_ps(s0 + 3 * lds + k);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            float *o = dst + (size_t)k * ldd + r;
            _mm_storeu_ps(o, _mm_mul_ps(al, a));
            _mm_storeu_ps(o + ldd, _mm_mul_ps(al, b));
            _mm_storeu_ps(o + 2 * ldd, _mm_mul_ps(al, c));
            _mm_storeu_ps(o + 3 * ldd, _mm_mul_ps(al, d));
        }
        for (; k < kc; k++)
            for (int q = 0; q < 4; q++)
                dst[(size_t)k * ldd + r + q] = alpha * s0[(size_t)q * lds + k];
    }
    for (; r < rows; r++)
        for (int k = 0; k < kc; k++)
            dst[(size_t)k * ldd + r] = alpha * src[(size_t)r * lds + k];
}

/* bp ← op(B)[k0 .. k0+kc) × [j0 .. j0+nc) in NR-column panels, each
 * [kc][NR], the last one padded with zeros. op(B) = B [k, n] (tb 0) or
 * Bᵀ with B [n, k] (tb 1). */
static void KN(gemm_pack_b)(int tb, const float *B, int ldb, int k0, int kc, int j0, int nc,
                            float *restrict bp)
{
    for (int jp = 0; jp < nc; jp += GEMM_NR, bp += (size_t)kc * GEMM_NR) {
        const int w = nc - jp < GEMM_NR ? nc - jp : GEMM_NR;
        if (!tb) {
            const float *b = B + (size_t)k0 * ldb + j0 + jp;
            for (int k = 0; k < kc; k++, b += ldb) {
                float *d = bp + (size_t)k * GEMM_NR;
                if (w == GEMM_NR) {
                    memcpy(d, b, GEMM_NR * sizeof *d);
                } else {
                    memcpy(d, b, (size_t)w * sizeof *d);
                    memset(d + w, 0, (size_t)(GEMM_NR - w) * sizeof *d);
                }
            }
        } else {
            if (w < GEMM_NR)
                memset(bp, 0, (size_t)kc * GEMM_NR * sizeof *bp);
            KN(gemm_pack_t)(B + (size_t)(j0 + jp) * ldb + k0, (size_t)ldb, w, kc, 1.0f, bp,
                            GEMM_NR);
        }
    }
}

/* ap ← alpha·op(A)[i0 .. i0+mc) × [k0 .. k0+kc) in MR-row panels, each
 * [kc][MR], the last one padded with zeros. op(A) = A [m, k] (ta 0) or
 * Aᵀ with A [k, m] (ta 1). */
static void KN(gemm_pack_a)(int ta, const float *A, int lda, int i0, int mc, int k0, int kc,
                            float alpha, float *restrict ap)
{
    for (int ip = 0; ip < mc; ip += GEMM_MR, ap += (size_t)kc * GEMM_MR) {
        const int h = mc - ip < GEMM_MR ? mc - ip : GEMM_MR;
        if (ta) {
            const float *a = A + (size_t)k0 * lda + i0 + ip;
            for (int k = 0; k < kc; k++, a += lda) {
                float *d = ap + (size_t)k * GEMM_MR;
                if (alpha == 1.0f)
                    memcpy(d, a, (size_t)h * sizeof *d);
                else
                    for (int i = 0; i < h; i++)
                        d[i] = alpha * a[i];
                for (int i = h; i < GEMM_MR; i++)
                    d[i] = 0.0f;
            }
        } else {
            if (h < GEMM_MR)
                memset(ap, 0, (size_t)kc * GEMM_MR * sizeof *ap);
            KN(gemm_pack_t)(A + (size_t)(i0 + ip) * lda + k0, (size_t)lda, h, kc, alpha, ap,
                            GEMM_MR);
        }
    }
}

/* Block sizes for an extent of x with blocks of at most max, split
 * evenly (k 288 with KC 256: two of 144, not 256 and a short 32 whose
 * tiles would mostly load and store C) and rounded up to unit. */
static int KN(gemm_block)(int x, int max, int unit)
{
    const int nblk = (x + max - 1) / max;
    const int b = (x + nblk - 1) / nblk;
    return (b + unit - 1) / unit * unit;
}

/* Rows of C up to which op(B) = B is read in place rather than packed
 * (the set may say): packing B costs a copy that few rows of C do not
 * amortise, and a block of B read in place stays in L1/L2 anyway. A not
 * transposed is read in place unless GEMM_DIRECT_A is 0 (its broadcasts
 * take any stride). */
#ifndef GEMM_DIRECT_M
#define GEMM_DIRECT_M (3 * GEMM_MR)
#endif
#ifndef GEMM_DIRECT_A
#define GEMM_DIRECT_A 1
#endif

/* Floats of packing buffer the driver needs for this shape (A's block
 * then B's). */
static size_t KN(gemm_buf_floats)(int m, int n, int k)
{
    const size_t kc = (size_t)KN(gemm_block)(k, GEMM_KC, 1);
    const size_t mc = (size_t)KN(gemm_block)(m, GEMM_MC, GEMM_MR);
    const size_t nc = (size_t)KN(gemm_block)(n, GEMM_NC, GEMM_NR);
    return kc * (mc + nc);
}

/* C = alpha·op(A)·op(B) + (accum ? C : 0), k > 0; buf holds
 * gemm_buf_floats(m, n, k) floats, aligned to a vector. */
static void KN(gemm)(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                     const float *B, int ldb, int accum, float *C, int ldc, float *buf)
{
    const int KC = KN(gemm_block)(k, GEMM_KC, 1), MC = KN(gemm_block)(m, GEMM_MC, GEMM_MR);
    const int NC = KN(gemm_block)(n, GEMM_NC, GEMM_NR);
    const int direct = !tb && m <= GEMM_DIRECT_M;
    /* A in place too (alpha 1): its full MR-row panels are read through
     * strides, only the last, partial one is packed. */
    const int direct_a = alpha == 1.0f && !ta && GEMM_DIRECT_A;
    const size_t a_rs = ta ? 1 : (size_t)lda, a_cs = ta ? (size_t)lda : 1;
    float *ap = buf, *bp = buf + (size_t)KC * MC;
    for (int jc = 0; jc < n; jc += NC) {
        const int nc = n - jc < NC ? n - jc : NC;
        for (int pc = 0; pc < k; pc += KC) {
            const int kc = k - pc < KC ? k - pc : KC;
            const int acc = accum || pc > 0;
            /* In place: only the last, partial panel is packed (a row of
             * B has nothing readable past its n values). */
            const int full = direct ? nc / GEMM_NR * GEMM_NR : 0;
            if (full < nc)
                KN(gemm_pack_b)(tb, B, ldb, pc, kc, jc + full, nc - full, bp + (size_t)full * kc);
            for (int ic = 0; ic < m; ic += MC) {
                const int mc = m - ic < MC ? m - ic : MC;
                const int afull = direct_a ? mc / GEMM_MR * GEMM_MR : 0;
                if (afull < mc)
                    KN(gemm_pack_a)(ta, A, lda, ic + afull, mc - afull, pc, kc, alpha,
                                    ap + (size_t)afull * kc);
                for (int jr = 0; jr < nc; jr += GEMM_NR) {
                    const int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                    const int inplace = jr < full;
                    const float *bpp = inplace ? B + (size_t)pc * ldb + jc + jr : bp + (size_t)jr * kc;
                    const size_t bs = inplace ? (size_t)ldb : GEMM_NR;
                    for (int ir = 0; ir < mc; ir += GEMM_MR) {
                        const int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                        float *c = C + (size_t)(ic + ir) * ldc + jc + jr;
                        if (ir < afull)
                            KN(gemm_micro)(kc, A + (size_t)(ic + ir) * a_rs + (size_t)pc * a_cs,
                                           a_rs, a_cs, bpp, bs, c, ldc, acc, mr, nr);
                        else
                            KN(gemm_micro)(kc, ap + (size_t)ir * kc, 1, GEMM_MR, bpp, bs, c, ldc,
                                           acc, mr, nr);
                    }
                }
            }
        }
    }
}

const gemm_isa KN(dpt_gemm_isa) = {
    .buf_floats = KN(gemm_buf_floats),
    .gemm = KN(gemm),
};
