/* dptrain's GEMM kernels (gemm_kern.h) of this tree against an older
 * commit's (symbols renamed old_*, bench/gemm_rows_ab.sh --gemm), alternated
 * in one process on the 1x1 convolutions' products: thread CPU ms of many
 * calls, median of the rounds, per shape and kernel set. */
#include "ops/gemm.h"

#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const gemm_isa old_dpt_gemm_isa_avx512, old_dpt_gemm_isa_avx2;

/* thread CPU milliseconds */
static double now(void) { return 1e3 * bench_cpu_s(); }

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 7;
    /* ta tb m n k: forward (W·X), dX (Wᵀ·G), dW (X·Gᵀ or G·Xᵀ) per block */
    static const int sh[][5] = {
        {0, 0, 32, 64, 64},  /* b3_a forward, 8x8 image */
        {0, 0, 64, 64, 32},  /* b3_a dX / b2_proj forward */
        {0, 1, 64, 32, 64},  /* b3_a dWᵀ = X·Gᵀ / b2_proj dW = G·Xᵀ per image */
        {0, 0, 32, 294, 64}, /* resnet-28 b3_a forward, 6 images of 7x7 */
        {0, 0, 64, 294, 32}, /* resnet-28 b3_a dX */
        {0, 1, 64, 32, 294}, /* resnet-28 dW over 6 images */
    };
    const gemm_isa *isa[2][2] = {{&old_dpt_gemm_isa_avx512, &dpt_gemm_isa_avx512},
                                 {&old_dpt_gemm_isa_avx2, &dpt_gemm_isa_avx2}};
    const char *names[2] = {"avx512", "avx2"};
    float *A = aligned_alloc(64, 1 << 20), *B = aligned_alloc(64, 1 << 20);
    float *C = aligned_alloc(64, 1 << 20), *buf = aligned_alloc(64, 1 << 22);
    for (int i = 0; i < (1 << 18); i++)
        A[i] = (float)(i % 7) * 0.1f, B[i] = (float)(i % 5) * 0.2f;
    for (int s = 0; s < 2; s++)
        for (size_t q = 0; q < sizeof sh / sizeof *sh; q++) {
            const int ta = sh[q][0], tb = sh[q][1], m = sh[q][2], n = sh[q][3], k = sh[q][4];
            const int calls = (int)(2e8 / (2.0 * m * n * k)) + 1;
            double t[2][64];
            for (int r = 0; r < rounds && r < 64; r++)
                for (int v = 0; v < 2; v++) {
                    const double t0 = now();
                    for (int c = 0; c < calls; c++)
                        isa[s][v]->gemm(ta, tb, m, n, k, 1.0f, A, ta ? m : k, B, tb ? k : n, 0,
                                        C, n, buf);
                    t[v][r] = now() - t0;
                }
            bench_sort(t[0], rounds);
            bench_sort(t[1], rounds);
            const double o = t[0][rounds / 2], w = t[1][rounds / 2];
            printf("%-6s ta %d tb %d m %3d n %3d k %3d: old %.1f GF/s new %.1f GF/s  new/old speed %.3f\n",
                   names[s], ta, tb, m, n, k, 2e-6 * m * n * k * calls / o,
                   2e-6 * m * n * k * calls / w, o / w);
        }
    return 0;
}
