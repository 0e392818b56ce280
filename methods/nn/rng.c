/* rng.c: xoshiro256** with splitmix64 seeding (public-domain algorithms by
 * Blackman and Vigna; this is our own implementation of the published
 * recurrences). */
#include "methods/nn/eb_rng.h"

#include <math.h>

uint64_t eb_rng_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void eb_rng_seed(eb_rng *r, uint64_t seed, uint64_t stream)
{
    /* Mix the pair so nearby seeds and streams start far apart; splitmix64
     * output is never all-zero across four words, which xoshiro forbids. */
    uint64_t x = eb_rng_mix64(seed) ^ eb_rng_mix64(stream ^ 0x6a09e667f3bcc909ULL);
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ULL;
        r->s[i] = eb_rng_mix64(x);
    }
    r->spare = 0.0;
    r->has_spare = 0;
}

double eb_rng_uniform(eb_rng *r)
{
    return (double)(eb_rng_next(r) >> 11) * 0x1.0p-53;
}

float eb_rng_uniformf(eb_rng *r)
{
    return (float)(eb_rng_next(r) >> 40) * 0x1.0p-24f;
}

uint64_t eb_rng_below(eb_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift with rejection of the biased low range. */
    unsigned __int128 m = (unsigned __int128)eb_rng_next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t threshold = (0 - n) % n;
        while (lo < threshold) {
            m = (unsigned __int128)eb_rng_next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double eb_rng_normal(eb_rng *r)
{
    double u1, u2, rad;
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    do {
        u1 = eb_rng_uniform(r);
    } while (u1 <= 0.0);
    u2 = eb_rng_uniform(r);
    rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(2.0 * M_PI * u2);
    r->has_spare = 1;
    return rad * cos(2.0 * M_PI * u2);
}

void eb_rng_shuffle_u32(eb_rng *r, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)eb_rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
