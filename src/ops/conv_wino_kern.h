/* The Winograd F(2x2, 3x3) transforms (conv_wino.h), compiled once per
 * instruction set by conv_wino_avx512.c / conv_wino_avx2.c, which define
 * VEC, VW, VLOAD, VSTORE, VADD, VSUB, VZERO, KERN(name) and HWC_ISA. Vectors
 * over VW channels; a tile's 16 points are 16 vectors in registers. */

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

const wino_isa KERN(dpt_wino_isa) = {&HWC_ISA, KERN(wino_in), KERN(wino_out), KERN(wino_grad)};
