/* PCG32: small state, good statistics, identical output on every platform
 * because it uses only 64-bit integer arithmetic. */
#include "dptrain/core.h"

#include <math.h>

void dpt_rng_seed(dpt_rng *r, uint64_t seed, uint64_t stream)
{
    r->state = 0;
    r->inc = (stream << 1) | 1u;
    dpt_rng_u32(r);
    r->state += seed;
    dpt_rng_u32(r);
}

uint32_t dpt_rng_u32(dpt_rng *r)
{
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    uint32_t rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

uint32_t dpt_rng_below(dpt_rng *r, uint32_t bound)
{
    /* Reject the low values that would make the modulo uneven. */
    uint32_t threshold = (uint32_t)(-bound) % bound;
    for (;;) {
        uint32_t x = dpt_rng_u32(r);
        if (x >= threshold)
            return x % bound;
    }
}

float dpt_rng_uniform(dpt_rng *r) { return (float)(dpt_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

float dpt_rng_normal(dpt_rng *r)
{
    /* Box-Muller; u1 in (0,1] so the log is finite. One value per call keeps
     * the stream position simple to save and restore. */
    double u1 = ((double)(dpt_rng_u32(r) >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(dpt_rng_u32(r) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void dpt_rng_shuffle(dpt_rng *r, uint32_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        uint32_t j = dpt_rng_below(r, (uint32_t)i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* ---- counter-based draws (core.h gives the definition in full) ----------- */

uint64_t dpt_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t dpt_rng_key(uint64_t seed, uint64_t epoch, uint64_t iteration, uint64_t stream,
                     uint64_t obs)
{
    return dpt_mix64(dpt_mix64(dpt_mix64(dpt_mix64(dpt_mix64(seed) ^ epoch) ^ iteration) ^
                               stream) ^
                     obs);
}

float dpt_rng_key_uniform(uint64_t key, uint64_t j)
{
    return (float)(dpt_mix64(key ^ j) >> 40) * (1.0f / 16777216.0f);
}
