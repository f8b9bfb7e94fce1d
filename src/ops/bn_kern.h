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
