/* eb_philox.h: counter-based normals for prediction-time noise.
 *
 * Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers:
 * as easy as 1, 2, 3", SC 2011) maps a 128-bit counter and a 64-bit key
 * to 128 random bits with no state, so any value of a stream is computed
 * on its own and sixteen of them at once in AVX-512 lanes. Each 32-bit
 * word becomes one standard normal by inversion: its top bit is the
 * sign, its next 23 bits a uniform v = (2m + 1) / 2^24 on (0, 1), and
 * |z| = sqrt(2) erfinv(v), erfinv by Giles' single-precision polynomials
 * ("Approximating the erfinv function", GPU Computing Gems, 2011) over a
 * logarithm of our own. No rejection, so no lane waits on another. The
 * values are a 2^24-level discretisation of N(0, 1), |z| <= 5.42 (the
 * normal's mass beyond is 6e-8).
 *
 * The AVX-512, AVX2 and portable paths do the same IEEE operations in
 * the same order (explicit fused multiply-adds in all), so every CPU
 * gives the same bits. */
#ifndef EB_PHILOX_H
#define EB_PHILOX_H

#include <stddef.h>
#include <stdint.h>

/* One Philox4x32-10 block: out = philox(ctr, key). */
void eb_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* The normal that one 32-bit word maps to (see above). */
float eb_philox_normal_of_bits(uint32_t u);

/* n normals of the stream (key; c1, c2, c3): value i is word
 * (i % 64) / 16 of block j = 16 (i / 64) + i % 16, the block's counter
 * (j, c1, c2, c3). So a prefix of the stream does not depend on n. */
void eb_philox_normal_fill(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                           uint32_t c3);
/* The same values by the portable path alone (the test's reference for
 * the vector path). */
void eb_philox_normal_fill_portable(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                                    uint32_t c3);
/* The same values by the 8-lane AVX2 path, where the CPU has AVX2 and
 * FMA (returns 1; else 0, out untouched). For the test. */
int eb_philox_fill_avx2(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                        uint32_t c3);
/* 1 when eb_philox_normal_fill runs 16 lanes of AVX-512 (else 8 of
 * AVX2 where the CPU has them, else the portable loop). */
int eb_philox_uses_avx512(void);

#endif /* EB_PHILOX_H */
