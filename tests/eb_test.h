/* eb_test.h: small helpers shared by the cmocka tests (include after
 * <cmocka.h>): seeded random arrays and the relative error the kernel
 * tests compare with. */
#ifndef EB_TEST_H
#define EB_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "methods/nn/eb_rng.h"

/* n * in floats uniform in [0, 1) from (seed, stream 1): test inputs */
static inline float *eb_test_uniform_inputs(size_t n, size_t in, uint64_t seed)
{
    float *x = malloc(n * in * sizeof *x);
    eb_rng r;
    assert_non_null(x);
    eb_rng_seed(&r, seed, 1);
    for (size_t i = 0; i < n * in; i++)
        x[i] = eb_rng_uniformf(&r);
    return x;
}

/* n standard normals from r */
static inline float *eb_test_normal_floats(eb_rng *r, size_t n)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)eb_rng_normal(r);
    return v;
}

/* max |got - want| / (1 + |want|); a NaN anywhere makes it NaN */
static inline double eb_test_max_rel_err(const float *got, const float *want, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - want[i]) / (1.0 + fabs((double)want[i]));
        m = e > m || isnan(e) ? e : m;
    }
    return m;
}

#endif /* EB_TEST_H */
