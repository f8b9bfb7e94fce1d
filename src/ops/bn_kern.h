/* Batch-norm passes over one channel plane at a time, written once with GCC
 * vector extensions and compiled per instruction set: batchnorm.c (4-float
 * vectors, any CPU), vec_avx512.c (16), vec_avx2.c (8). Before inclusion:
 *   VN      lanes            VT, VI  float and int vector types of VN lanes
 *   KN(f)   suffixed name of function f
 * Each plane's float result is added into float64 by the caller (see
 * batchnorm.c for the numerics). The fused ReLU mask is the forward's own
 * float expression (x − m)·scale + shift > 0, recomputed bit-for-bit. */
#include "ops/vec_lanes.h"

/* Σ (p − k) and Σ (p − k)² over n floats. */
static void KN(plane_sums)(const float *p, int n, float k, double *s1, double *s2)
{
    const VT kv = KN(vset1)(k), zero = KN(vset1)(0.0f);
    VT a = zero, b = zero, a2 = zero, b2 = zero;
    int j = 0;
    for (; j + 2 * VN <= n; j += 2 * VN) {
        VT v = KN(vload)(p + j) - kv, u = KN(vload)(p + j + VN) - kv;
        a += v, b += v * v;
        a2 += u, b2 += u * u;
    }
    for (; j + VN <= n; j += VN) {
        VT v = KN(vload)(p + j) - kv;
        a += v, b += v * v;
    }
    double t1 = KN(vsum)(a + a2), t2 = KN(vsum)(b + b2);
    for (; j < n; j++) {
        double v = (double)p[j] - k;
        t1 += v;
        t2 += v * v;
    }
    *s1 = t1;
    *s2 = t2;
}

/* y = (x − m)·scale + shift, ReLU'd when relu. */
static void KN(plane_normalize)(const float *x, int n, float m, float scale, float shift,
                                float *y, int relu)
{
    const VT mv = KN(vset1)(m), sv = KN(vset1)(scale), tv = KN(vset1)(shift);
    const VT zero = KN(vset1)(0.0f);
    int j = 0;
    if (relu) {
        for (; j + VN <= n; j += VN) {
            VT z = (KN(vload)(x + j) - mv) * sv + tv;
            KN(vstore)(y + j, KN(keep)(z, z > zero));
        }
    } else {
        for (; j + VN <= n; j += VN)
            KN(vstore)(y + j, (KN(vload)(x + j) - mv) * sv + tv);
    }
    for (; j < n; j++) {
        float z = (x[j] - m) * scale + shift;
        y[j] = relu && !(z > 0.0f) ? 0.0f : z;
    }
}

/* Σ g and Σ g·(x − m), g = dy masked by the ReLU when relu. */
static void KN(plane_backward_sums)(const float *x, const float *dy, int n, float m, float scale,
                                    float shift, int relu, double *s_g, double *s_gx)
{
    const VT mv = KN(vset1)(m), sv = KN(vset1)(scale), tv = KN(vset1)(shift);
    const VT zero = KN(vset1)(0.0f);
    VT a = zero, b = zero;
    int j = 0;
    for (; j + VN <= n; j += VN) {
        VT xc = KN(vload)(x + j) - mv, g = KN(vload)(dy + j);
        if (relu)
            g = KN(keep)(g, xc * sv + tv > zero);
        a += g;
        b += g * xc;
    }
    double t1 = KN(vsum)(a), t2 = KN(vsum)(b);
    for (; j < n; j++) {
        float xc = x[j] - m, g = dy[j];
        if (relu && !(xc * scale + shift > 0.0f))
            g = 0.0f;
        t1 += g;
        t2 += (double)g * xc;
    }
    *s_g = t1;
    *s_gx = t2;
}

/* dx = kf·g − ka − (x − m)·kb, g masked as above. */
static void KN(plane_backward_dx)(const float *x, const float *dy, int n, float m, float scale,
                                  float shift, int relu, float kf, float ka, float kb, float *dx)
{
    const VT mv = KN(vset1)(m), sv = KN(vset1)(scale), tv = KN(vset1)(shift);
    const VT kfv = KN(vset1)(kf), kav = KN(vset1)(ka), kbv = KN(vset1)(kb);
    const VT zero = KN(vset1)(0.0f);
    int j = 0;
    for (; j + VN <= n; j += VN) {
        VT xc = KN(vload)(x + j) - mv, g = KN(vload)(dy + j);
        if (relu)
            g = KN(keep)(g, xc * sv + tv > zero);
        KN(vstore)(dx + j, kfv * g - kav - xc * kbv);
    }
    for (; j < n; j++) {
        float xc = x[j] - m, g = dy[j];
        if (relu && !(xc * scale + shift > 0.0f))
            g = 0.0f;
        dx[j] = kf * g - ka - xc * kb;
    }
}

/* A residual add of two planes with batch norms applied on the fly (each
 * input's m, scale, shift; an input without one passes m = 0, scale = 1,
 * shift = −0, exact for every float), ReLU'd when relu: y = v0 + v1, each
 * v the expression of plane_normalize, so the bits are those of the
 * batch norm's pass followed by the add's. */
static void KN(plane_add_bn)(const float *x0, const float *c0, const float *x1, const float *c1,
                             int n, int relu, float *y)
{
    const VT m0 = KN(vset1)(c0[0]), s0 = KN(vset1)(c0[1]), t0 = KN(vset1)(c0[2]);
    const VT m1 = KN(vset1)(c1[0]), s1 = KN(vset1)(c1[1]), t1 = KN(vset1)(c1[2]);
    const VT zero = KN(vset1)(0.0f);
    int j = 0;
    if (relu) {
        for (; j + VN <= n; j += VN) {
            VT z = ((KN(vload)(x0 + j) - m0) * s0 + t0) + ((KN(vload)(x1 + j) - m1) * s1 + t1);
            KN(vstore)(y + j, KN(keep)(z, z > zero));
        }
    } else {
        for (; j + VN <= n; j += VN)
            KN(vstore)(y + j,
                       ((KN(vload)(x0 + j) - m0) * s0 + t0) + ((KN(vload)(x1 + j) - m1) * s1 + t1));
    }
    for (; j < n; j++) {
        float z = ((x0[j] - c0[0]) * c0[1] + c0[2]) + ((x1[j] - c1[0]) * c1[1] + c1[2]);
        y[j] = relu && !(z > 0.0f) ? 0.0f : z;
    }
}

/* Its backward: g = dy, masked by y > 0 when relu, written to d0 and d1;
 * s[0] = Σ g, s[1] = Σ g·(x0 − m0), s[2] = Σ g·(x1 − m1) (x1 NULL: not
 * formed), each as plane_backward_sums forms it (the batch norms'
 * backward sums). */
static void KN(plane_add_bn_bwd)(const float *y, const float *dy, const float *x0, float m0,
                                 const float *x1, float m1, int n, int relu, float *d0, float *d1,
                                 double *s)
{
    const VT mv0 = KN(vset1)(m0), mv1 = KN(vset1)(m1), zero = KN(vset1)(0.0f);
    VT a = zero, b0 = zero, b1 = zero;
    int j = 0;
    if (x1) {
        for (; j + VN <= n; j += VN) {
            VT g = KN(vload)(dy + j);
            if (relu)
                g = KN(keep)(g, KN(vload)(y + j) > zero);
            KN(vstore)(d0 + j, g);
            KN(vstore)(d1 + j, g);
            a += g;
            b0 += g * (KN(vload)(x0 + j) - mv0);
            b1 += g * (KN(vload)(x1 + j) - mv1);
        }
    } else {
        for (; j + VN <= n; j += VN) {
            VT g = KN(vload)(dy + j);
            if (relu)
                g = KN(keep)(g, KN(vload)(y + j) > zero);
            KN(vstore)(d0 + j, g);
            KN(vstore)(d1 + j, g);
            a += g;
            b0 += g * (KN(vload)(x0 + j) - mv0);
        }
    }
    /* Each vsum is a chain of VN float64 adds: not formed for nothing. */
    double t = KN(vsum)(a), u0 = KN(vsum)(b0), u1 = x1 ? KN(vsum)(b1) : 0.0;
    for (; j < n; j++) {
        float g = dy[j];
        if (relu && !(y[j] > 0.0f))
            g = 0.0f;
        d0[j] = d1[j] = g;
        t += g;
        u0 += (double)g * (x0[j] - m0);
        if (x1)
            u1 += (double)g * (x1[j] - m1);
    }
    s[0] = t, s[1] = u0, s[2] = u1;
}
