/* The Winograd F(2x2, 3x3) and F(4x4, 3x3) transforms (conv_wino.h),
 * compiled once per instruction set by conv_wino_avx512.c /
 * conv_wino_avx2.c, which define VEC, VW, VLOAD, VSTORE, VADD, VSUB, VZERO,
 * VMUL, VFMA, VSET1, KERN(name) and HWC_ISA. Vectors over VW channels; a
 * tile's points are vectors in registers (36 of F(4,3) partly spilled). */

static void KERN(wino_in)(const float *xp, size_t ximg, int xw, int cs, int ntx, int tpi, int k0,
                          int nt, float *v, size_t ps)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const float *base = xp + b * ximg + ((size_t)2 * ty * xw + 2 * tx) * cs;
        float *o = v + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            VEC d[4][4], t[4][4];
            for (int i = 0; i < 4; i++)
                for (int l = 0; l < 4; l++)
                    d[i][l] = VLOAD(base + ((size_t)i * xw + l) * cs + c);
            /* B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3 */
            for (int l = 0; l < 4; l++) {
                t[0][l] = VSUB(d[0][l], d[2][l]);
                t[1][l] = VADD(d[1][l], d[2][l]);
                t[2][l] = VSUB(d[2][l], d[1][l]);
                t[3][l] = VSUB(d[1][l], d[3][l]);
            }
            /* (B^T d) B: the same on the columns */
            for (int i = 0; i < 4; i++) {
                VSTORE(o + (size_t)(4 * i + 0) * ps + c, VSUB(t[i][0], t[i][2]));
                VSTORE(o + (size_t)(4 * i + 1) * ps + c, VADD(t[i][1], t[i][2]));
                VSTORE(o + (size_t)(4 * i + 2) * ps + c, VSUB(t[i][2], t[i][1]));
                VSTORE(o + (size_t)(4 * i + 3) * ps + c, VSUB(t[i][1], t[i][3]));
            }
        }
    }
}

static void KERN(wino_out)(const float *m, size_t ps, int cs, int ntx, int tpi, int k0, int nt,
                           int oh, int ow, float *yp, size_t yimg)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const int ni = oh - 2 * ty < 2 ? 1 : 2, nj = ow - 2 * tx < 2 ? 1 : 2;
        float *base = yp + b * yimg + ((size_t)2 * ty * ow + 2 * tx) * cs;
        const float *in = m + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            VEC s[2][4];
            /* A^T m: rows m0+m1+m2, m1-m2-m3 */
            for (int l = 0; l < 4; l++) {
                const VEC m0 = VLOAD(in + (size_t)l * ps + c);
                const VEC m1 = VLOAD(in + (size_t)(4 + l) * ps + c);
                const VEC m2 = VLOAD(in + (size_t)(8 + l) * ps + c);
                const VEC m3 = VLOAD(in + (size_t)(12 + l) * ps + c);
                s[0][l] = VADD(VADD(m0, m1), m2);
                s[1][l] = VSUB(VSUB(m1, m2), m3);
            }
            for (int i = 0; i < ni; i++) {
                float *o = base + (size_t)i * ow * cs + c;
                VSTORE(o, VADD(VADD(s[i][0], s[i][1]), s[i][2]));
                if (nj > 1)
                    VSTORE(o + cs, VSUB(VSUB(s[i][1], s[i][2]), s[i][3]));
            }
        }
    }
}

static void KERN(wino_grad)(const float *dyp, size_t dimg, int dw, int cs, int ntx, int tpi,
                            int k0, int nt, float *z, size_t ps)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const float *base = dyp + b * dimg + ((size_t)2 * ty * dw + 2 * tx) * cs;
        float *o = z + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            const VEC d00 = VLOAD(base + c), d01 = VLOAD(base + cs + c);
            const VEC d10 = VLOAD(base + (size_t)dw * cs + c);
            const VEC d11 = VLOAD(base + (size_t)(dw + 1) * cs + c);
            /* A dY: rows d0, d0+d1, d0-d1, -d1 (columns 0, 1) */
            VEC t[4][2];
            t[0][0] = d00, t[0][1] = d01;
            t[1][0] = VADD(d00, d10), t[1][1] = VADD(d01, d11);
            t[2][0] = VSUB(d00, d10), t[2][1] = VSUB(d01, d11);
            t[3][0] = VSUB(VZERO(), d10), t[3][1] = VSUB(VZERO(), d11);
            /* (A dY) A^T: the same on the columns */
            for (int i = 0; i < 4; i++) {
                VSTORE(o + (size_t)(4 * i + 0) * ps + c, t[i][0]);
                VSTORE(o + (size_t)(4 * i + 1) * ps + c, VADD(t[i][0], t[i][1]));
                VSTORE(o + (size_t)(4 * i + 2) * ps + c, VSUB(t[i][0], t[i][1]));
                VSTORE(o + (size_t)(4 * i + 3) * ps + c, VSUB(VZERO(), t[i][1]));
            }
        }
    }
}


/* F(4x4, 3x3) (Lavin & Gray's matrices, points 0, ±1, ±2, ∞): 1-D
 * transforms of 6 (or 4) vectors, applied to the columns then the rows. */
static inline __attribute__((always_inline)) void KERN(w4_in1)(const VEC d[6], VEC r[6])
{
    const VEC c4 = VSET1(4.0f), c5 = VSET1(5.0f), c2 = VSET1(2.0f);
    /* B^T d: 4d0-5d2+d4, -4(d1+d2)+d3+d4, 4(d1-d2)-d3+d4, -2(d1-d3)-d2+d4,
     * 2(d1-d3)-d2+d4, 4d1-5d3+d5 */
    const VEC a = VSUB(d[4], d[2]), b = VSUB(d[3], d[1]);
    r[0] = VFMA(c4, d[0], VSUB(d[4], VMUL(c5, d[2])));
    r[1] = VSUB(VADD(d[3], d[4]), VMUL(c4, VADD(d[1], d[2])));
    r[2] = VFMA(c4, VSUB(d[1], d[2]), VSUB(d[4], d[3]));
    r[3] = VFMA(c2, b, a);
    r[4] = VSUB(a, VMUL(c2, b));
    r[5] = VFMA(c4, d[1], VSUB(d[5], VMUL(c5, d[3])));
}

static inline __attribute__((always_inline)) void KERN(w4_out1)(const VEC m[6], VEC y[4])
{
    const VEC c2 = VSET1(2.0f), c4 = VSET1(4.0f), c8 = VSET1(8.0f);
    /* A^T m: m0+m1+m2+m3+m4, (m1-m2)+2(m3-m4), (m1+m2)+4(m3+m4), (m1-m2)+8(m3-m4)+m5 */
    const VEC s12 = VADD(m[1], m[2]), d12 = VSUB(m[1], m[2]);
    const VEC s34 = VADD(m[3], m[4]), d34 = VSUB(m[3], m[4]);
    y[0] = VADD(VADD(m[0], s12), s34);
    y[1] = VFMA(c2, d34, d12);
    y[2] = VFMA(c4, s34, s12);
    y[3] = VADD(VFMA(c8, d34, d12), m[5]);
}

static inline __attribute__((always_inline)) void KERN(w4_grad1)(const VEC d[4], VEC z[6])
{
    const VEC c2 = VSET1(2.0f), c4 = VSET1(4.0f), c8 = VSET1(8.0f);
    /* A d: d0, d0+d1+d2+d3, d0-d1+d2-d3, d0+2d1+4d2+8d3, d0-2d1+4d2-8d3, d3 */
    const VEC e = VADD(d[0], d[2]), o = VADD(d[1], d[3]);
    const VEC e4 = VFMA(c4, d[2], d[0]), o8 = VFMA(c8, d[3], VMUL(c2, d[1]));
    z[0] = d[0];
    z[1] = VADD(e, o);
    z[2] = VSUB(e, o);
    z[3] = VADD(e4, o8);
    z[4] = VSUB(e4, o8);
    z[5] = d[3];
}

static void KERN(wino4_in)(const float *xp, size_t ximg, int xw, int cs, int ntx, int tpi, int k0,
                           int nt, float *v, size_t ps)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const float *base = xp + b * ximg + ((size_t)4 * ty * xw + 4 * tx) * cs;
        float *o = v + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            VEC t[6][6];
            for (int l = 0; l < 6; l++) { /* columns */
                VEC d[6], u[6];
                for (int i = 0; i < 6; i++)
                    d[i] = VLOAD(base + ((size_t)i * xw + l) * cs + c);
                KERN(w4_in1)(d, u);
                for (int i = 0; i < 6; i++)
                    t[i][l] = u[i];
            }
            for (int i = 0; i < 6; i++) { /* rows */
                VEC u[6];
                KERN(w4_in1)(t[i], u);
                for (int l = 0; l < 6; l++)
                    VSTORE(o + (size_t)(6 * i + l) * ps + c, u[l]);
            }
        }
    }
}

static void KERN(wino4_out)(const float *m, size_t ps, int cs, int ntx, int tpi, int k0, int nt,
                            int oh, int ow, float *yp, size_t yimg)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const int ni = oh - 4 * ty < 4 ? oh - 4 * ty : 4, nj = ow - 4 * tx < 4 ? ow - 4 * tx : 4;
        float *base = yp + b * yimg + ((size_t)4 * ty * ow + 4 * tx) * cs;
        const float *in = m + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            VEC s[4][6];
            for (int l = 0; l < 6; l++) { /* columns */
                VEC a[6], y[4];
                for (int i = 0; i < 6; i++)
                    a[i] = VLOAD(in + (size_t)(6 * i + l) * ps + c);
                KERN(w4_out1)(a, y);
                for (int i = 0; i < 4; i++)
                    s[i][l] = y[i];
            }
            for (int i = 0; i < ni; i++) { /* rows */
                VEC y[4];
                KERN(w4_out1)(s[i], y);
                float *o = base + (size_t)i * ow * cs + c;
                for (int l = 0; l < nj; l++)
                    VSTORE(o + (size_t)l * cs, y[l]);
            }
        }
    }
}

static void KERN(wino4_grad)(const float *dyp, size_t dimg, int dw, int cs, int ntx, int tpi,
                             int k0, int nt, float *z, size_t ps)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const float *base = dyp + b * dimg + ((size_t)4 * ty * dw + 4 * tx) * cs;
        float *o = z + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            VEC t[6][4];
            for (int l = 0; l < 4; l++) { /* columns */
                VEC d[4], u[6];
                for (int i = 0; i < 4; i++)
                    d[i] = VLOAD(base + ((size_t)i * dw + l) * cs + c);
                KERN(w4_grad1)(d, u);
                for (int i = 0; i < 6; i++)
                    t[i][l] = u[i];
            }
            for (int i = 0; i < 6; i++) { /* rows */
                VEC u[6];
                KERN(w4_grad1)(t[i], u);
                for (int l = 0; l < 6; l++)
                    VSTORE(o + (size_t)(6 * i + l) * ps + c, u[l]);
            }
        }
    }
}

/* ---- filter transforms, vectors over VW outer channels ---- */

/* o = G a for one filter column a (3 vectors): G (m+2 x 3) of F(2,3) or
 * F(4,3). m is a constant where this is inlined. */
static inline __attribute__((always_inline)) void KERN(wf_col)(const int m, const VEC a[3], VEC *o)
{
    if (m == 2) {
        const VEC h = VSET1(0.5f), s = VADD(a[0], a[2]);
        o[0] = a[0], o[3] = a[2];
        o[1] = VMUL(h, VADD(s, a[1]));
        o[2] = VMUL(h, VSUB(s, a[1]));
    } else {
        const VEC s = VADD(a[0], a[2]), m6 = VSET1(-1.0f / 6);
        const VEC p = VFMA(a[0], VSET1(1.0f / 24), VMUL(a[2], VSET1(1.0f / 6)));
        const VEC q = VMUL(a[1], VSET1(1.0f / 12));
        o[0] = VMUL(a[0], VSET1(0.25f)), o[5] = a[2];
        o[1] = VMUL(VADD(s, a[1]), m6);
        o[2] = VMUL(VSUB(s, a[1]), m6);
        o[3] = VADD(p, q), o[4] = VSUB(p, q);
    }
}

/* o = G^T e for one column e of m+2 vectors (3 out). */
static inline __attribute__((always_inline)) void KERN(wf_tcol)(const int m, const VEC *e, VEC o[3])
{
    if (m == 2) {
        const VEC h = VSET1(0.5f), s = VMUL(h, VADD(e[1], e[2]));
        o[0] = VADD(e[0], s);
        o[1] = VMUL(h, VSUB(e[1], e[2]));
        o[2] = VADD(s, e[3]);
    } else {
        const VEC s12 = VADD(e[1], e[2]), s34 = VADD(e[3], e[4]), c6 = VSET1(1.0f / 6);
        o[0] = VFMA(s34, VSET1(1.0f / 24), VFMA(s12, VSET1(-1.0f / 6), VMUL(e[0], VSET1(0.25f))));
        o[1] = VFMA(VSUB(e[3], e[4]), VSET1(1.0f / 12), VMUL(VSUB(e[2], e[1]), c6));
        o[2] = VFMA(VSUB(s34, s12), c6, e[5]);
    }
}

/* u[xi] in hwc's blocked weight layout (conv_hwc.c wblk, one tap: blocks
 * of 2*VW outer channels, each [ni][width]; a point's plane ni*nop floats)
 * = G g G^T, g the 3x3 filter of (inner i, outer o): w[o][i] (flip 0) or,
 * for dx, w[i][o] turned by 180 degrees (flip 1); zeros for o in no..nop.
 * A vector of outer channels at a time: each plane written in order. */
static inline __attribute__((always_inline)) void
KERN(wino_filt_m)(const float *w, int no, int ni, int nop, int flip, float *u, const int m)
{
    const int n = m + 2;
    const size_t ps = (size_t)ni * nop;
    for (int o0 = 0; o0 < nop; o0 += 2 * VW) {
        const int bw = nop - o0 < 2 * VW ? nop - o0 : 2 * VW;
        for (int i = 0; i < ni; i++) {
            float *ub = u + (size_t)o0 * ni + (size_t)i * bw;
            for (int v = 0; v < bw; v += VW) {
                float gt[9][VW];
                for (int l = 0; l < VW; l++) {
                    const int o = o0 + v + l;
                    const float *f = o >= no ? NULL
                                     : flip  ? w + ((size_t)i * no + o) * 9
                                             : w + ((size_t)o * ni + i) * 9;
                    for (int a = 0; a < 9; a++)
                        gt[a][l] = !f ? 0.0f : flip ? f[8 - a] : f[a];
                }
                VEC t[6][3], r[6];
                for (int c = 0; c < 3; c++) { /* G g, column c */
                    const VEC a[3] = {VLOAD(gt[c]), VLOAD(gt[3 + c]), VLOAD(gt[6 + c])};
                    KERN(wf_col)(m, a, r);
                    for (int k = 0; k < n; k++)
                        t[k][c] = r[k];
                }
                for (int k = 0; k < n; k++) { /* (G g) G^T, row k */
                    KERN(wf_col)(m, t[k], r);
                    for (int c = 0; c < n; c++)
                        VSTORE(ub + (size_t)(n * k + c) * ps + v, r[c]);
                }
            }
        }
    }
}

/* dw[o][i] (3x3, o < no) = G^T dU G, dU in the layout of wino_filt. */
static inline __attribute__((always_inline)) void
KERN(wino_wgrad_m)(const float *du, int no, int ni, int nop, float *dw, const int m)
{
    const int n = m + 2;
    const size_t ps = (size_t)ni * nop;
    for (int o0 = 0; o0 < no; o0 += 2 * VW) {
        const int bw = nop - o0 < 2 * VW ? nop - o0 : 2 * VW;
        for (int i = 0; i < ni; i++) {
            const float *db = du + (size_t)o0 * ni + (size_t)i * bw;
            for (int v = 0; v < bw && o0 + v < no; v += VW) {
                VEC t[3][6], e[6], r[3];
                for (int c = 0; c < n; c++) { /* G^T dU, column c */
                    for (int k = 0; k < n; k++)
                        e[k] = VLOAD(db + (size_t)(n * k + c) * ps + v);
                    KERN(wf_tcol)(m, e, r);
                    for (int k = 0; k < 3; k++)
                        t[k][c] = r[k];
                }
                float res[9][VW];
                for (int k = 0; k < 3; k++) { /* (G^T dU) G, row k */
                    KERN(wf_tcol)(m, t[k], r);
                    for (int c = 0; c < 3; c++)
                        VSTORE(res[3 * k + c], r[c]);
                }
                for (int l = 0; l < VW && o0 + v + l < no; l++) {
                    float *out = dw + ((size_t)(o0 + v + l) * ni + i) * 9;
                    for (int a = 0; a < 9; a++)
                        out[a] = res[a][l];
                }
            }
        }
    }
}

static void KERN(wino_filt2)(const float *w, int no, int ni, int nop, int flip, float *u)
{
    KERN(wino_filt_m)(w, no, ni, nop, flip, u, 2);
}
static void KERN(wino_filt4)(const float *w, int no, int ni, int nop, int flip, float *u)
{
    KERN(wino_filt_m)(w, no, ni, nop, flip, u, 4);
}
static void KERN(wino_wgrad2)(const float *du, int no, int ni, int nop, float *dw)
{
    KERN(wino_wgrad_m)(du, no, ni, nop, dw, 2);
}
static void KERN(wino_wgrad4)(const float *du, int no, int ni, int nop, float *dw)
{
    KERN(wino_wgrad_m)(du, no, ni, nop, dw, 4);
}

const wino_isa KERN(dpt_wino_isa) = {&HWC_ISA,         2, KERN(wino_in), KERN(wino_out),
                                     KERN(wino_grad),  KERN(wino_filt2), KERN(wino_wgrad2)};
const wino_isa KERN(dpt_wino4_isa) = {&HWC_ISA,         4, KERN(wino4_in), KERN(wino4_out),
                                      KERN(wino4_grad), KERN(wino_filt4), KERN(wino_wgrad4)};
