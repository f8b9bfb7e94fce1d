/* A small register-blocked GEMM for the fully connected layer with more
 * outputs than fc_kern.h holds in registers (the language model's 89
 * characters over 256 LSTM units): OpenBLAS picks its Haswell (8-float)
 * kernels on AVX-512 CPUs and packs both operands every call, which for
 * these thin shapes costs more than the arithmetic. Written once with GCC
 * vector extensions, compiled per instruction set by vec_kern.h after
 * bn_kern.h (KN(vload), KN(vstore), KN(vset1)).
 *
 *   C[r][c] = bias[c] (or 0) + Σ_k A[r·ars + k·acs] · B[k·ldb + c]
 *   r < m, c < p, k < q; C row-major with ldc.
 *
 * A is read through strides so that one kernel serves y = x·wᵀ (A = x,
 * B = wᵀ), dx = dy·w (A = dy, B = w) and dw = dyᵀ·x (A = dyᵀ: ars = 1,
 * acs = out). Each tile is GEMM_MR rows × 2 vectors of C in registers
 * (12 accumulators: fits AVX2's 16 registers with the two B vectors and a
 * broadcast). Every C element is summed over k in order 0..q-1 from the
 * bias, whatever the blocking, so the bytes are the same run to run. */

#define GEMM_MR 6
/* k in chunks of GEMM_KC (a 2-vector panel of B, GEMM_KC × 2·VN floats,
 * stays in L1 across a chunk's row tiles) and rows in chunks of GEMM_ROWS
 * (GEMM_ROWS × GEMM_KC of A stays in L2 across the column panels). */
#define GEMM_KC 256
#define GEMM_ROWS (8 * GEMM_MR)

/* One tile: mr rows × nv vectors of C from column c, over k in [k0, k1);
 * the first chunk starts from the bias, later ones from C. pc valid
 * columns (nv·VN when full): a partial tile passes C and the bias through
 * a zeroed buffer, so nothing past them is read or written (B's rows are
 * padded, see fc_gemm). */
static inline __attribute__((always_inline)) void KN(gemm_tile)(
    const float *A, size_t ars, size_t acs, const float *B, int ldb, const float *bias,
    float *C, int ldc, const int mr, const int nv, const int full, int pc, int k0, int k1)
{
    VT acc[GEMM_MR][2];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            float t[2 * VN] = {0};
            const float *src = k0 > 0 ? C + (size_t)r * ldc : bias;
            if (src && full)
                acc[r][v] = KN(vload)(src + v * VN);
            else {
                if (src)
                    memcpy(t, src, (size_t)pc * sizeof *t);
                acc[r][v] = KN(vload)(t + v * VN);
            }
        }
    for (int k = k0; k < k1; k++) {
        const float *a = A + (size_t)k * acs, *bk = B + (size_t)k * ldb;
        VT bv[2];
        for (int v = 0; v < nv; v++)
            bv[v] = KN(vload)(bk + v * VN);
        for (int r = 0; r < mr; r++) {
            const VT av = KN(vset1)(a[(size_t)r * ars]);
            for (int v = 0; v < nv; v++)
                acc[r][v] += av * bv[v];
        }
    }
    for (int r = 0; r < mr; r++) {
        float *cr = C + (size_t)r * ldc;
        if (full)
            for (int v = 0; v < nv; v++)
                KN(vstore)(cr + v * VN, acc[r][v]);
        else {
            float t[2 * VN];
            for (int v = 0; v < nv; v++)
                KN(vstore)(t + v * VN, acc[r][v]);
            memcpy(cr, t, (size_t)pc * sizeof *t);
        }
    }
}

/* Rows [r0, r1) of C at column c: full tiles of GEMM_MR rows, then one
 * tile of the rows left (each count its own instance, so the accumulators
 * stay in registers). */
static inline __attribute__((always_inline)) void KN(gemm_rows)(
    const float *A, size_t ars, size_t acs, const float *B, int ldb, const float *bias,
    float *C, int ldc, int r0, int r1, int c, const int nv, const int full, int pc, int k0,
    int k1)
{
    const float *bc = bias ? bias + c : NULL;
    int r = r0;
    for (; r + GEMM_MR <= r1; r += GEMM_MR)
        KN(gemm_tile)(A + (size_t)r * ars, ars, acs, B + c, ldb, bc, C + (size_t)r * ldc + c,
                      ldc, GEMM_MR, nv, full, pc, k0, k1);
    const float *a = A + (size_t)r * ars;
    float *cr = C + (size_t)r * ldc + c;
    switch (r1 - r) { /* GEMM_MR 6 */
    case 5: KN(gemm_tile)(a, ars, acs, B + c, ldb, bc, cr, ldc, 5, nv, full, pc, k0, k1); break;
    case 4: KN(gemm_tile)(a, ars, acs, B + c, ldb, bc, cr, ldc, 4, nv, full, pc, k0, k1); break;
    case 3: KN(gemm_tile)(a, ars, acs, B + c, ldb, bc, cr, ldc, 3, nv, full, pc, k0, k1); break;
    case 2: KN(gemm_tile)(a, ars, acs, B + c, ldb, bc, cr, ldc, 2, nv, full, pc, k0, k1); break;
    case 1: KN(gemm_tile)(a, ars, acs, B + c, ldb, bc, cr, ldc, 1, nv, full, pc, k0, k1); break;
    default: break;
    }
}

/* B's rows must be readable up to p rounded up to whole vectors (the
 * padding zero or not: its products land in columns never stored). */
static void KN(fc_gemm)(const float *A, size_t ars, size_t acs, const float *B, int ldb,
                        const float *bias, float *C, int ldc, int m, int p, int q)
{
    if (q == 0) { /* no sum: C is the bias */
        for (int r = 0; r < m; r++)
            for (int c = 0; c < p; c++)
                C[(size_t)r * ldc + c] = bias ? bias[c] : 0.0f;
        return;
    }
    for (int k0 = 0; k0 < q; k0 += GEMM_KC) {
        const int k1 = q - k0 < GEMM_KC ? q : k0 + GEMM_KC;
        for (int r0 = 0; r0 < m; r0 += GEMM_ROWS) {
            const int r1 = m - r0 < GEMM_ROWS ? m : r0 + GEMM_ROWS;
            int c = 0;
            for (; c + 2 * VN <= p; c += 2 * VN)
                KN(gemm_rows)(A, ars, acs, B, ldb, bias, C, ldc, r0, r1, c, 2, 1, 2 * VN, k0,
                              k1);
            if (p - c > VN) /* two vectors, the second partial */
                KN(gemm_rows)(A, ars, acs, B, ldb, bias, C, ldc, r0, r1, c, 2, 0, p - c, k0, k1);
            else if (p - c == VN)
                KN(gemm_rows)(A, ars, acs, B, ldb, bias, C, ldc, r0, r1, c, 1, 1, VN, k0, k1);
            else if (p > c)
                KN(gemm_rows)(A, ars, acs, B, ldb, bias, C, ldc, r0, r1, c, 1, 0, p - c, k0, k1);
        }
    }
}
