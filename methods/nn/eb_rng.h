/* eb_rng.h: the project's own seeded random number generator.
 *
 * xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64. Every
 * random decision in edgebayes (initialisation, data order, dropout masks,
 * sampler noise, bootstrap resamples) draws from an eb_rng derived from the
 * user's seed and a *stream* number naming the purpose, so results depend
 * on (seed, stream) only, never on thread scheduling, and the same seed and
 * thread count give the same bytes. */
#ifndef EB_RNG_H
#define EB_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct eb_rng {
    uint64_t s[4];
    double spare;   /* second Box-Muller normal, valid when has_spare */
    int has_spare;
} eb_rng;

/* Stream numbers used by more than one module, so no two purposes
 * collide. Per-member streams add the member index. */
enum {
    EB_STREAM_INIT = 0x1000,      /* weight initialisation (+ member) */
    EB_STREAM_ORDER = 0x2000,     /* mini-batch order (+ member) */
    EB_STREAM_DROPOUT = 0x3000,   /* dropout masks during training */
    EB_STREAM_PREDICT = 0x4000,   /* stochastic prediction passes */
    EB_STREAM_SAMPLER = 0x5000,   /* sampler noise */
    EB_STREAM_BOOTSTRAP = 0x6000, /* bootstrap resampling */
    EB_STREAM_ATTACK = 0xA000,    /* PGD random starts */
    EB_STREAM_SHIFT = 0xB000      /* dataset-shift corruptions (noise, directions) */
};

/* Seeds r from (seed, stream); distinct pairs give unrelated sequences. */
void eb_rng_seed(eb_rng *r, uint64_t seed, uint64_t stream);
/* splitmix64 of x: a cheap 64-bit mixer, also used to derive keys. */
uint64_t eb_rng_mix64(uint64_t x);

/* The next 64 bits (xoshiro256**). Inline: the samplers' and the lrt
 * strategy's normals call it once per value, and a call costs as much as
 * the generator itself. */
static inline uint64_t eb_rng_next(eb_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t x = s[1] * 5;
    const uint64_t result = ((x << 7) | (x >> 57)) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}
/* Uniform in [0, 1) with 53 (double) or 24 (float) random bits. */
double eb_rng_uniform(eb_rng *r);
float eb_rng_uniformf(eb_rng *r);
/* Uniform integer in [0, n), unbiased (Lemire's method); n > 0. */
uint64_t eb_rng_below(eb_rng *r, uint64_t n);
/* Standard normal (Box-Muller, one spare kept). */
double eb_rng_normal(eb_rng *r);
/* Fisher-Yates shuffle of a (n). */
void eb_rng_shuffle_u32(eb_rng *r, uint32_t *a, size_t n);

#endif /* EB_RNG_H */
