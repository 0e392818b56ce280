/* test_philox.c: Philox4x32-10 against the known answers published with
 * Random123 (tests/kat_vectors, the three "philox4x32 10" lines); the
 * AVX-512 normals against the portable path bit for bit; each word's
 * normal against the exact inverse normal CDF (bisection on libm's erfc,
 * in double); and the stream's moments and Kolmogorov-Smirnov distance
 * from N(0, 1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/nn/eb_philox.h"

static void test_known_answers(void **state)
{
    /* counter[4], key[2], expected[4] */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1}};
    (void)state;
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        eb_philox4x32_10(out, kat[i], kat[i] + 4);
        assert_memory_equal(out, kat[i] + 6, sizeof out);
    }
}

static void test_vector_path_same_bits(void **state)
{
    static const size_t lens[] = {1, 10, 15, 16, 17, 63, 64, 65, 256, 1000, 4099};
    float *a = malloc(4099 * sizeof *a), *b = malloc(4099 * sizeof *b);
    (void)state;
    assert_true(a && b);
    printf("eb_philox_normal_fill runs %s\n",
           eb_philox_uses_avx512() ? "16 AVX-512 lanes" : "the portable path");
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        const size_t n = lens[k];
        eb_philox_normal_fill(a, n, 0x0123456789abcdefULL + k, 7, (uint32_t)k, 3);
        eb_philox_normal_fill_portable(b, n, 0x0123456789abcdefULL + k, 7, (uint32_t)k, 3);
        assert_memory_equal(a, b, n * sizeof *a);
        if (eb_philox_fill_avx2(a, n, 0x0123456789abcdefULL + k, 7, (uint32_t)k, 3))
            assert_memory_equal(a, b, n * sizeof *a);
    }
    /* a prefix of the stream does not depend on n */
    eb_philox_normal_fill(a, 4099, 99, 1, 2, 3);
    eb_philox_normal_fill(b, 70, 99, 1, 2, 3);
    assert_memory_equal(a, b, 70 * sizeof *a);
    /* value i is word (i % 64) / 16 of block 16 (i / 64) + i % 16 */
    {
        const uint32_t ctr[4] = {16 * 2 + 5, 1, 2, 3}, key[2] = {99, 0};
        uint32_t words[4];
        eb_philox4x32_10(words, ctr, key);
        for (int w = 0; w < 4; w++) {
            const float z = eb_philox_normal_of_bits(words[w]);
            assert_memory_equal(&a[64 * 2 + 16 * w + 5], &z, sizeof z);
        }
    }
    /* another key, another stream */
    eb_philox_normal_fill(b, 64, 100, 1, 2, 3);
    assert_true(memcmp(a, b, 64 * sizeof *a) != 0);
    free(a);
    free(b);
}

/* x >= 0 with erfc(x) = q, by bisection in double */
static double erfc_inverse(double q)
{
    double lo = 0.0, hi = 8.0;
    for (int i = 0; i < 200 && hi - lo > 1e-15; i++) {
        const double mid = 0.5 * (lo + hi);
        if (erfc(mid) > q)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static void test_against_inverse_cdf(void **state)
{
    double worst = 0.0, worst_at = 0.0, biggest = 0.0;
    (void)state;
    for (uint32_t m = 0; m < (1u << 23); m += (m < 2000 || m > (1u << 23) - 2000) ? 1 : 97) {
        for (uint32_t sign = 0; sign < 2; sign++) {
            const uint32_t u = (sign << 31) | (m << 8) | 0x5a; /* low bits are ignored */
            const double v = (2.0 * m + 1.0) / 16777216.0;
            const double want = (sign ? -1.0 : 1.0) * sqrt(2.0) * erfc_inverse(1.0 - v);
            const double got = eb_philox_normal_of_bits(u);
            const double e = fabs(got - want) / (1.0 + fabs(want));
            if (e > worst) {
                worst = e;
                worst_at = want;
            }
            if (fabs(got) > biggest)
                biggest = fabs(got);
        }
    }
    printf("normal of bits against the exact inverse: max |err|/(1+|z|) %.3g (at z = %.3f); "
           "largest |z| %.4f\n",
           worst, worst_at, biggest);
    assert_true(worst < 1e-6);
    assert_true(biggest > 5.41 && biggest < 5.43);
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_moments_and_ks(void **state)
{
    const size_t n = (size_t)1 << 20;
    float *z = malloc(n * sizeof *z);
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0, mean, var, skew, kurt, d = 0.0;
    (void)state;
    assert_non_null(z);
    /* many short streams, as lrt draws them: 256 values per counter */
    for (size_t r = 0; r < n / 256; r++)
        eb_philox_normal_fill(z + r * 256, 256, 0x9e3779b97f4a7c15ULL, (uint32_t)(r % 100),
                              (uint32_t)(r / 100), 2);
    for (size_t i = 0; i < n; i++) {
        const double x = z[i];
        s1 += x;
        s2 += x * x;
        s3 += x * x * x;
        s4 += x * x * x * x;
    }
    mean = s1 / n;
    var = s2 / n - mean * mean;
    skew = s3 / n;
    kurt = s4 / n;
    qsort(z, n, sizeof *z, cmp_float);
    for (size_t i = 0; i < n; i++) {
        const double f = 0.5 * erfc(-z[i] / sqrt(2.0));
        const double a = fabs(f - (double)i / n), b = fabs(f - (double)(i + 1) / n);
        d = a > d ? a : d;
        d = b > d ? b : d;
    }
    printf("n=%zu mean %.5f var %.5f third %.5f fourth %.4f KS D %.5f (1%% critical %.5f)\n", n,
           mean, var, skew, kurt, d, 1.628 / sqrt((double)n));
    /* 5 standard errors: mean 1/sqrt(n), variance sqrt(2/n), third
     * moment sqrt(15/n), fourth sqrt(96/n) */
    assert_true(fabs(mean) < 5.0 / sqrt((double)n));
    assert_true(fabs(var - 1.0) < 5.0 * sqrt(2.0 / n));
    assert_true(fabs(skew) < 5.0 * sqrt(15.0 / n));
    assert_true(fabs(kurt - 3.0) < 5.0 * sqrt(96.0 / n));
    assert_true(d < 1.628 / sqrt((double)n));
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_vector_path_same_bits),
        cmocka_unit_test(test_against_inverse_cdf),
        cmocka_unit_test(test_moments_and_ks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
