/* A stem (first-layer conv -> batchnorm (-> relu) -> 2x2 max pool) planned
 * with graph.c's plan_stem_pool: the pool's backward leaves its dx
 * unwritten and the conv forms its gradient from the pool's gradient and
 * taps (conv_kern.h's pad_bnback_pool; layer_conv.c expands it for other
 * algorithms). Against the plain plan over several steps and batch sizes,
 * for every x86 kernel set this CPU has, with the direct algorithm and
 * with GEMM (the expanding fallback), on widths that end a vector row
 * early, late and exactly (9, 28, 34), odd sizes (an unpooled last row and
 * column), with and without the ReLU and a bias. */
#include "net/net_impl.h"
#include "ops/ops.h"
#include "testutil.h"
#include "fusion_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXB = 5 };

static const struct {
    const char *spec;
    int h, w, c;
} nets[] = {
    {"input in size=12x34x3\n"
     "conv c1 filter=3 filters=8 padding=1 bias=0\n"
     "batchnorm b1\n"
     "relu r1\n"
     "maxpool p1 size=2\n"
     "conv c2 filter=3 filters=4 padding=1 bias=0\n"
     "batchnorm b2\n"
     "relu r2\n"
     "fc f outputs=3\n",
     12, 34, 3},
    {"input in size=11x9x1\n"
     "conv c1 filter=3 filters=6 padding=1 bias=1\n"
     "batchnorm b1\n"
     "maxpool p1 size=2\n"
     "fc f outputs=3\n",
     11, 9, 1},
    {"input in size=28x28x1\n"
     "conv c1 filter=3 filters=5 padding=1 bias=0\n"
     "batchnorm b1\n"
     "relu r1\n"
     "maxpool p1 size=2\n"
     "fc f outputs=3\n",
     28, 28, 1},
};

static dpt_net *build(const char *spec, int fusion)
{
    return fusion_net(spec, "stem", MAXB, 3, fusion);
}

static void run(const char *kernels, const char *algo, int k)
{
    setenv("DPT_CONV_ALGO", algo, 1);
    dpt_net *fused = build(nets[k].spec, 1), *plain = build(nets[k].spec, 0);
    if (!fused || !plain) {
        dpt_net_free(fused), dpt_net_free(plain);
        return;
    }
    const int p = layer_index(fused, "p1"), b = layer_index(fused, "b1");
    CHECK(p > 0 && b > 0);
    if (p > 0 && b > 0) {
        /* The pool's backward hands its gradient to the conv. */
        CHECK(fused->layers[b].bnf && fused->layers[b].bnf->pool_dy);
        CHECK(fused->layers[p].in_bnf == fused->layers[b].bnf);
        CHECK(plain->layers[p].in_bnf == NULL);
    }
    const size_t np = dpt_net_n_params(fused);
    CHECK(np == dpt_net_n_params(plain));
    memcpy(dpt_net_params(plain), dpt_net_params(fused), np * sizeof(float));
    dpt_rng rng;
    dpt_rng_seed(&rng, 5, (unsigned)k);
    const size_t in = (size_t)nets[k].h * nets[k].w * nets[k].c;
    float *x = malloc(MAXB * in * sizeof *x), dy[MAXB * 3];
    float *g = malloc(np * sizeof *g);
    static const int batches[] = {MAXB, 2, 1, MAXB};
    for (size_t it = 0; x && g && it < sizeof batches / sizeof *batches; it++) {
        const int n = batches[it];
        fill(&rng, x, (size_t)n * in);
        fill(&rng, dy, (size_t)n * 3);
        const float *yf, *yp;
        CHECK(dpt_net_forward(fused, x, n, DPT_MODE_TRAIN, &yf) == DPT_OK);
        CHECK(dpt_net_forward(plain, x, n, DPT_MODE_TRAIN, &yp) == DPT_OK);
        char what[160];
        snprintf(what, sizeof what, "%s, %s, net %d, step %zu (batch %d): output", kernels, algo,
                 k, it, n);
        tu_check_close(what, yf, yp, (size_t)n * 3, 1e-5);
        CHECK(dpt_net_backward(fused, dy, 0) == DPT_OK);
        CHECK(dpt_net_backward(plain, dy, 0) == DPT_OK);
        memcpy(g, dpt_net_grads(fused), np * sizeof *g);
        snprintf(what, sizeof what, "%s, %s, net %d, step %zu (batch %d): gradients", kernels,
                 algo, k, it, n);
        tu_check_close(what, g, dpt_net_grads(plain), np, 1e-4);
        /* Handed over and taken: nothing left for a later step. */
        if (b > 0 && fused->layers[b].bnf)
            CHECK(fused->layers[b].bnf->pool_g == NULL);
    }
    free(x);
    free(g);
    dpt_net_free(fused);
    dpt_net_free(plain);
}

/* The fused bn + ReLU 2x2 max pool's plane kernels (a plane per call) on
 * their own against a scalar loop, odd sizes and rows of 1-3 vectors
 * included: y, the taps and xv the same bits, dx the same bits, the
 * backward sums close (another summation order). */
static void rows_check(const char *kernels)
{
    static const int hw[][2] = {{28, 28}, {32, 32}, {9, 11}, {6, 70}};
    dpt_rng rng;
    dpt_rng_seed(&rng, 9, 1);
    for (size_t s = 0; s < sizeof hw / sizeof *hw; s++) {
        dpt_pool2d_desc d = {.n = 2, .c = 3, .h = hw[s][0], .w = hw[s][1], .kh = 2, .kw = 2,
                             .sh = 2, .sw = 2};
        CHECK(dpt_pool2d_desc_init(&d) == 0);
        const size_t ni = (size_t)d.n * d.c * d.h * d.w;
        const size_t no = (size_t)d.n * d.c * d.out_h * d.out_w;
        float *x = malloc(ni * sizeof *x), *dx = calloc(ni, sizeof *dx);
        float *rdx = calloc(ni, sizeof *dx), *y = malloc(no * sizeof *y);
        float *xv = malloc(no * sizeof *xv), *g = malloc(no * sizeof *g);
        unsigned char *idx = malloc(no + DPT_POOL_IDX_SLACK);
        if (!x || !dx || !rdx || !y || !xv || !g || !idx)
            abort();
        fill(&rng, x, ni);
        fill(&rng, g, no);
        const float mean[3] = {0.1f, -0.2f, 0.0f}, scale[3] = {1.5f, 0.7f, -1.1f},
                    shift[3] = {0.05f, 0.3f, -0.1f};
        for (int relu = 0; relu < 2; relu++) {
            const dpt_bn_apply a = {.mean = mean, .scale = scale, .shift = shift, .relu = relu};
            double sg[3] = {0}, sgx[3] = {0}, rg[3] = {0}, rgx[3] = {0};
            dpt_maxpool2d_forward_bnx(&d, x, &a, y, idx, xv);
            memset(dx, 0, ni * sizeof *dx);
            dpt_maxpool2d_backward_bn(&d, idx, xv, &a, g, dx, sg, sgx);
            memset(rdx, 0, ni * sizeof *rdx);
            int bad = 0;
            for (int p = 0; p < d.n * d.c; p++)
                for (int oy = 0; oy < d.out_h; oy++)
                    for (int ox = 0; ox < d.out_w; ox++) {
                        const int ch = p % d.c;
                        float best = 0.0f, bx = 0.0f;
                        int bt = 0;
                        for (int t = 0; t < 4; t++) {
                            const size_t at =
                                ((size_t)p * d.h + 2 * oy + t / 2) * d.w + 2 * ox + t % 2;
                            const float v = x[at];
                            float z = (v - mean[ch]) * scale[ch] + shift[ch];
                            if (relu && !(z > 0.0f))
                                z = 0.0f;
                            if (t == 0 || z > best) {
                                best = z, bx = v, bt = t;
                            }
                        }
                        const size_t o = ((size_t)p * d.out_h + oy) * d.out_w + ox;
                        bad |= memcmp(&y[o], &best, sizeof best) ||
                               memcmp(&xv[o], &bx, sizeof bx) || idx[o] != bt;
                        const size_t at = ((size_t)p * d.h + 2 * oy + bt / 2) * d.w + 2 * ox;
                        rdx[at + bt % 2] += g[o] + 0.0f;
                        const float xc = bx - mean[ch];
                        if (!relu || xc * scale[ch] + shift[ch] > 0.0f)
                            rg[ch] += g[o], rgx[ch] += (double)g[o] * xc;
                    }
            char what[160];
            snprintf(what, sizeof what, "%s, pool planes %dx%d relu %d: y, taps, xv", kernels, d.h,
                     d.w, relu);
            CHECK_MSG(!bad, "%s", what);
            snprintf(what, sizeof what, "%s, pool planes %dx%d relu %d: dx", kernels, d.h, d.w,
                     relu);
            CHECK_MSG(memcmp(dx, rdx, ni * sizeof *dx) == 0, "%s", what);
            for (int ch = 0; ch < 3; ch++) {
                snprintf(what, sizeof what, "%s, pool planes %dx%d relu %d: bn sums", kernels, d.h,
                         d.w, relu);
                CHECK_MSG(fabs(sg[ch] - rg[ch]) < 1e-4 * (1 + fabs(rg[ch])) &&
                              fabs(sgx[ch] - rgx[ch]) < 1e-4 * (1 + fabs(rgx[ch])),
                          "%s", what);
            }
        }
        free(x), free(dx), free(rdx), free(y), free(xv), free(g), free(idx);
    }
}

int main(void)
{
    static const char *sets[] = {"avx512", "avx2"};
    int ran = 0;
    for (size_t s = 0; s < sizeof sets / sizeof *sets; s++) {
        if (dpt_ops_set_kernels(sets[s]) != 0)
            continue;
        ran++;
        rows_check(sets[s]);
        for (int k = 0; k < (int)(sizeof nets / sizeof *nets); k++) {
            run(sets[s], "direct", k);
            run(sets[s], "gemm", k);
        }
    }
    if (!ran)
        printf("test_stem_pool: no x86 kernel set here (the fusion needs one); skipped\n");
    return tu_exit();
}
