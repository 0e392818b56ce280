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

/* max |v[k]| over n values */
static inline double eb_test_max_abs(const float *v, size_t n)
{
    double m = 0.0;
    for (size_t k = 0; k < n; k++)
        m = fabs(v[k]) > m ? fabs(v[k]) : m;
    return m;
}

/* the largest L1 norm of the rows of w (rows, cols): a layer's gain in
 * the max norm, for the quantized kernels' error bounds */
static inline double eb_test_l1max_rows(const float *w, int rows, size_t cols)
{
    double l1max = 0.0;
    for (int u = 0; u < rows; u++) {
        double l1 = 0.0;
        for (size_t k = 0; k < cols; k++)
            l1 += fabs(w[(size_t)u * cols + k]);
        l1max = l1 > l1max ? l1 : l1max;
    }
    return l1max;
}

#endif /* EB_TEST_H */
