/* The Winograd F(4x4, 2x2) transforms of the stride-2 path (conv_wino_s2.h),
 * compiled once per instruction set by conv_wino_s2_avx512.c /
 * conv_wino_s2_avx2.c, which define VEC, VW, VLOAD, VSTORE, VADD, VSUB,
 * VZERO, VMUL, VFMA, VSET1, KERN(name) and HWC_ISA. Toom-Cook points 0, 1,
 * -1, 2, inf: the smallest constants for 5 points. Vectors over VW
 * channels; 1-D transforms applied to the columns, then the rows. */

/* B^T d: 2d0-d1-2d2+d3, -2d1-d2+d3, 2d1-3d2+d3, d3-d1, 2d1-d2-2d3+d4 */
static inline __attribute__((always_inline)) void KERN(s2_in1)(const VEC d[5], VEC r[5])
{
    const VEC c2 = VSET1(2.0f), c3 = VSET1(3.0f);
    const VEC b = VSUB(d[3], d[1]);
    r[0] = VFMA(c2, VSUB(d[0], d[2]), b);
    r[1] = VSUB(b, VADD(d[1], d[2]));
    r[2] = VFMA(c3, VSUB(d[1], d[2]), b);
    r[3] = b;
    r[4] = VSUB(VSUB(d[4], d[2]), VADD(b, b));
}

/* A^T m: m0+m1+m2+m3, m1-m2+2m3, m1+m2+4m3, m1-m2+8m3+m4 */
static inline __attribute__((always_inline)) void KERN(s2_out1)(const VEC m[5], VEC y[4])
{
    const VEC s = VADD(m[1], m[2]), d = VSUB(m[1], m[2]);
    y[0] = VADD(VADD(m[0], s), m[3]);
    y[1] = VFMA(VSET1(2.0f), m[3], d);
    y[2] = VFMA(VSET1(4.0f), m[3], s);
    y[3] = VADD(VFMA(VSET1(8.0f), m[3], d), m[4]);
}

/* A d: d0, d0+d1+d2+d3, d0-d1+d2-d3, d0+2d1+4d2+8d3, d3 */
static inline __attribute__((always_inline)) void KERN(s2_grad1)(const VEC d[4], VEC z[5])
{
    const VEC e = VADD(d[0], d[2]), o = VADD(d[1], d[3]);
    const VEC c4 = VSET1(4.0f);
    z[0] = d[0];
    z[1] = VADD(e, o);
    z[2] = VSUB(e, o);
    z[3] = VFMA(VSET1(2.0f), VFMA(c4, d[3], d[1]), VFMA(c4, d[2], d[0]));
    z[4] = d[3];
}

/* G a: a0/2, -(a0+a1)/2, (a1-a0)/6, (a0+2a1)/6, a1 */
static inline __attribute__((always_inline)) void KERN(s2_g1)(const VEC a[2], VEC u[5])
{
    const VEC h = VSET1(0.5f), s6 = VSET1(1.0f / 6);
    u[0] = VMUL(h, a[0]);
    u[1] = VMUL(VSET1(-0.5f), VADD(a[0], a[1]));
    u[2] = VMUL(s6, VSUB(a[1], a[0]));
    u[3] = VMUL(s6, VFMA(VSET1(2.0f), a[1], a[0]));
    u[4] = a[1];
}

/* G^T e: (e0-e1)/2 + (e3-e2)/6, -e1/2 + e2/6 + e3/3 + e4 */
static inline __attribute__((always_inline)) void KERN(s2_gt1)(const VEC e[5], VEC o[2])
{
    const VEC s6 = VSET1(1.0f / 6);
    o[0] = VFMA(VSET1(0.5f), VSUB(e[0], e[1]), VMUL(s6, VSUB(e[3], e[2])));
    o[1] = VFMA(VSET1(-0.5f), e[1], VFMA(s6, e[2], VFMA(VSET1(1.0f / 3), e[3], e[4])));
}

static void KERN(s2_in)(const float *xp, size_t ximg, int xw, int cs, int nph, int ntx, int tpi,
                        int k0, int nt, float *v, size_t ps, const ws2_pts *pt)
{
    const int st = nph == 4 ? 2 : 1; /* s pixels st apart in xp */
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        for (int ph = 0; ph < nph; ph++) {
            const int py = ph >> 1, px = ph & 1;
            const float *base =
                xp + b * ximg + ((size_t)(4 * st * ty + py) * xw + 4 * st * tx + px) * cs;
            float *o = v + (size_t)j * nph * cs;
            int slot[25]; /* where this phase goes at each point (-1: nowhere) */
            for (int xi = 0; xi < 25; xi++)
                slot[xi] = nph == 4 ? pt->slot[xi][ph] : 0;
            for (int c = 0; c < cs; c += VW) {
                VEC t[5][5];
                for (int l = 0; l < 5; l++) { /* columns */
                    VEC d[5], u[5];
                    for (int i = 0; i < 5; i++)
                        d[i] = VLOAD(base + ((size_t)st * i * xw + st * l) * cs + c);
                    KERN(s2_in1)(d, u);
                    for (int i = 0; i < 5; i++)
                        t[i][l] = u[i];
                }
                for (int i = 0; i < 5; i++) { /* rows */
                    VEC u[5];
                    KERN(s2_in1)(t[i], u);
                    for (int l = 0; l < 5; l++)
                        if (slot[5 * i + l] >= 0)
                            VSTORE(o + (size_t)(5 * i + l) * ps + (size_t)slot[5 * i + l] * cs + c,
                                   u[l]);
                }
            }
        }
    }
}

static void KERN(s2_out)(const float *m, size_t ps, int cs, int nph, int ntx, int tpi, int k0,
                         int nt, int oh, int ow, float *yp, size_t yimg, int yw,
                         const ws2_pts *pt)
{
    const int st = nph == 4 ? 2 : 1;
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const int ni = oh - 4 * ty < 4 ? oh - 4 * ty : 4, nj = ow - 4 * tx < 4 ? ow - 4 * tx : 4;
        for (int ph = 0; ph < nph; ph++) {
            const int py = ph >> 1, px = ph & 1;
            float *base =
                yp + b * yimg + ((size_t)(4 * st * ty + py) * yw + 4 * st * tx + px) * cs;
            const float *in[25]; /* the point's vector of this phase (NULL: zero) */
            for (int xi = 0; xi < 25; xi++) {
                const int sl = nph == 4 ? pt->slot[xi][ph] : 0;
                in[xi] = sl < 0 ? NULL
                         : m + xi * ps + (size_t)j * (nph == 4 ? pt->nk[xi] : 1) * cs +
                               (size_t)sl * cs;
            }
            for (int c = 0; c < cs; c += VW) {
                VEC s[4][5];
                for (int l = 0; l < 5; l++) { /* columns */
                    VEC a[5], y[4];
                    for (int i = 0; i < 5; i++)
                        a[i] = in[5 * i + l] ? VLOAD(in[5 * i + l] + c) : VZERO();
                    KERN(s2_out1)(a, y);
                    for (int i = 0; i < 4; i++)
                        s[i][l] = y[i];
                }
                for (int i = 0; i < ni; i++) { /* rows */
                    VEC y[4];
                    KERN(s2_out1)(s[i], y);
                    float *o = base + (size_t)st * i * yw * cs + c;
                    for (int l = 0; l < nj; l++)
                        VSTORE(o + (size_t)st * l * cs, y[l]);
                }
            }
        }
    }
}

static void KERN(s2_grad)(const float *dyp, size_t dimg, int dw, int cs, int ntx, int tpi, int k0,
                          int nt, float *z, size_t ps)
{
    for (int j = 0; j < nt; j++) {
        const int k = k0 + j, b = k / tpi, r = k % tpi, ty = r / ntx, tx = r % ntx;
        const float *base = dyp + b * dimg + ((size_t)4 * ty * dw + 4 * tx) * cs;
        float *o = z + (size_t)j * cs;
        for (int c = 0; c < cs; c += VW) {
            VEC t[5][4];
            for (int l = 0; l < 4; l++) { /* columns */
                VEC d[4], u[5];
                for (int i = 0; i < 4; i++)
                    d[i] = VLOAD(base + ((size_t)i * dw + l) * cs + c);
                KERN(s2_grad1)(d, u);
                for (int i = 0; i < 5; i++)
                    t[i][l] = u[i];
            }
            for (int i = 0; i < 5; i++) { /* rows */
                VEC u[5];
                KERN(s2_grad1)(t[i], u);
                for (int l = 0; l < 5; l++)
                    VSTORE(o + (size_t)(5 * i + l) * ps + c, u[l]);
            }
        }
    }
}

/* wt: w with the outer channels innermost, [inner][9][outer padded with
 * zeros] (dx 0: [cin][9][cop]; dx 1: [cout][9][cip]), so that a vector of
 * outer channels is one load. */
static void KERN(s2_filt)(const float *wt, int cin, int cout, int cip, int cop, int dx, int pad,
                          const ws2_pts *pt, float *u)
{
    const int ni = dx ? cout : 4 * cip, nop = dx ? 4 * cip : cop;
    for (int o0 = 0; o0 < nop; o0 += 2 * VW) {
        const int bw = nop - o0 < 2 * VW ? nop - o0 : 2 * VW;
        for (int i = 0; i < ni; i++) {
            for (int v = 0; v < bw; v += VW) {
                /* dx 0: inner i = ph*cip + ci, outer co; dx 1: inner co, outer
                 * ph*cip + ci (a vector within one phase: cip is a multiple of VW) */
                const int k = dx ? o0 + v : i, ph = k / cip, ci = k % cip;
                const float *src = dx ? wt + (size_t)i * 9 * cip + ci : wt + (size_t)ci * 9 * cop + o0 + v;
                const size_t ks = dx ? (size_t)cip : (size_t)cop;
                VEC g[4];
                for (int a = 0; a < 4; a++) {
                    const int ky = ws2_ktap(ph >> 1, a >> 1, dx ? pad : -1);
                    const int kx = ws2_ktap(ph & 1, a & 1, dx ? pad : -1);
                    g[a] = ky < 0 || kx < 0 || (!dx && ci >= cin) ? VZERO()
                                                                  : VLOAD(src + (ky * 3 + kx) * ks);
                }
                VEC t[5][2], r[5];
                for (int c = 0; c < 2; c++) { /* G g, column c */
                    const VEC a[2] = {g[c], g[2 + c]};
                    KERN(s2_g1)(a, r);
                    for (int q = 0; q < 5; q++)
                        t[q][c] = r[q];
                }
                for (int q = 0; q < 5; q++) { /* (G g) G^T, row q */
                    KERN(s2_g1)(t[q], r);
                    for (int c = 0; c < 5; c++) {
                        const int xi = 5 * q + c, sl = pt->slot[xi][ph];
                        if (sl < 0)
                            continue;
                        /* the point's plane [ni][nop] at koff*cip*(cop or
                         * cout): dx 0 row slot*cip + ci; dx 1 column
                         * slot*cip + ci, in its block of 2*VW */
                        float *pl = u + ws2_uoff(pt, xi, (size_t)cip * (dx ? cout : cop));
                        if (!dx) {
                            const int row = sl * cip + ci;
                            VSTORE(pl + (size_t)o0 * pt->nk[xi] * cip + (size_t)row * bw + v, r[c]);
                        } else {
                            const int col = sl * cip + ci, np = pt->nk[xi] * cip;
                            const int b0 = col / (2 * VW) * (2 * VW);
                            const int bw2 = np - b0 < 2 * VW ? np - b0 : 2 * VW;
                            VSTORE(pl + (size_t)b0 * ni + (size_t)i * bw2 + (col - b0), r[c]);
                        }
                    }
                }
            }
        }
    }
}

static void KERN(s2_wgrad)(const float *du, int cin, int cout, int cip, int cop,
                           const ws2_pts *pt, float *dw)
{
    for (int o0 = 0; o0 < cout; o0 += 2 * VW) {
        const int bw = cop - o0 < 2 * VW ? cop - o0 : 2 * VW;
        for (int ph = 0; ph < 4; ph++)
            for (int ci = 0; ci < cin; ci++) {
                const float *db[25]; /* the point's row of this phase (NULL: zero) */
                for (int xi = 0; xi < 25; xi++) {
                    const int sl = pt->slot[xi][ph];
                    db[xi] = sl < 0 ? NULL
                                    : du + ws2_uoff(pt, xi, (size_t)cip * cop) +
                                          (size_t)o0 * pt->nk[xi] * cip +
                                          (size_t)(sl * cip + ci) * bw;
                }
                for (int v = 0; v < bw && o0 + v < cout; v += VW) {
                    VEC t[2][5], e[5], r[2];
                    for (int c = 0; c < 5; c++) { /* G^T dU, column c */
                        for (int q = 0; q < 5; q++)
                            e[q] = db[5 * q + c] ? VLOAD(db[5 * q + c] + v) : VZERO();
                        KERN(s2_gt1)(e, r);
                        t[0][c] = r[0], t[1][c] = r[1];
                    }
                    float res[4][VW];
                    for (int q = 0; q < 2; q++) { /* (G^T dU) G, row q */
                        KERN(s2_gt1)(t[q], r);
                        VSTORE(res[2 * q], r[0]);
                        VSTORE(res[2 * q + 1], r[1]);
                    }
                    for (int a = 0; a < 4; a++) {
                        const int ky = ws2_ktap(ph >> 1, a >> 1, -1);
                        const int kx = ws2_ktap(ph & 1, a & 1, -1);
                        if (ky < 0 || kx < 0)
                            continue;
                        for (int l = 0; l < VW && o0 + v + l < cout; l++)
                            dw[((size_t)(o0 + v + l) * cin + ci) * 9 + ky * 3 + kx] = res[a][l];
                    }
                }
            }
    }
}

const ws2_isa KERN(dpt_ws2_isa) = {&HWC_ISA,        KERN(s2_in),   KERN(s2_out),
                                   KERN(s2_grad),   KERN(s2_filt), KERN(s2_wgrad)};
