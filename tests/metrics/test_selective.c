/* test_selective.c: the accuracy-rejection curve and its area against a
 * numpy computation of the stated rule (numpy 1.24.2, run once), and
 * hand-worked cases: a tie cut in half, all right, a custom confidence,
 * and the argument errors. Agreement to 1e-12; the maximum error is
 * printed.
 *
 * The reference, with P, y the 27 x 3 predictive and labels below:
 *
 *   conf = P.max(1).astype(np.float64)
 *   correct = (P.argmax(1) == y).astype(np.float64)
 *   def arc(conf, correct, grid):
 *       n = len(conf)
 *       rate = np.array([correct[conf == c].mean() for c in conf])
 *       r = rate[np.argsort(-conf, kind='stable')]
 *       acc = np.array([r[:n - k * n // grid].mean() for k in range(grid)])
 *       return acc, acc.mean()
 *
 * `rate` replaces each example's correctness by its tie group's mean: the
 * expectation over the orders of a tie cut by the rejection. On this
 * vector the tie at confidence 0.445 (one right, two wrong) is cut at
 * k = 19..25 of the 100-point grid, so the rule matters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "metrics/eb_metrics.h"

static const float pbar[27 * 3] = {
    0.307f, 0.445f, 0.248f, 0.200f, 0.046f, 0.754f, 0.003f, 0.828f, 0.169f, 0.260f, 0.469f,
    0.271f, 0.233f, 0.278f, 0.489f, 0.307f, 0.445f, 0.248f, 0.307f, 0.445f, 0.248f, 0.029f,
    0.595f, 0.376f, 0.688f, 0.149f, 0.163f, 0.683f, 0.304f, 0.013f, 0.151f, 0.522f, 0.327f,
    0.605f, 0.004f, 0.391f, 0.068f, 0.097f, 0.835f, 0.202f, 0.546f, 0.252f, 0.834f, 0.054f,
    0.112f, 0.091f, 0.440f, 0.469f, 0.081f, 0.243f, 0.676f, 0.066f, 0.095f, 0.839f, 0.355f,
    0.511f, 0.134f, 0.434f, 0.254f, 0.312f, 0.041f, 0.708f, 0.251f, 0.441f, 0.013f, 0.546f,
    0.394f, 0.395f, 0.211f, 0.380f, 0.439f, 0.181f, 1.0f,   0.0f,   0.0f,   0.6f,   0.4f,
    0.0f,   0.4f,   0.4f,   0.2f};
static const uint8_t labels[27] = {2, 2, 1, 2, 1, 1, 2, 1, 0, 0, 1, 0, 2, 2,
                                   0, 1, 0, 0, 1, 2, 2, 1, 1, 1, 0, 1, 0};

static double max_err;

static void near(double got, double want, double tol)
{
    double e = fabs(got - want);
    if (e > max_err)
        max_err = e;
    assert_float_equal(got, want, tol);
}

static void test_against_numpy(void **state)
{
    /* arc(conf, correct, 10) and arc(conf, correct, 100) */
    static const double want10[10] = {0.5555555555555556, 0.52, 0.5303030303030304,
                                      0.5789473684210527, 0.6470588235294118, 0.6428571428571429,
                                      0.7272727272727273, 0.7777777777777778, 0.8333333333333334,
                                      0.6666666666666666};
    static const double want100[100] = {
        0.55555555555555558, 0.55555555555555558, 0.55555555555555558, 0.55555555555555558,
        0.53846153846153844, 0.53846153846153844, 0.53846153846153844, 0.53846153846153844,
        0.52000000000000002, 0.52000000000000002, 0.52000000000000002, 0.52000000000000002,
        0.54166666666666663, 0.54166666666666663, 0.54166666666666663, 0.52173913043478271,
        0.52173913043478271, 0.52173913043478271, 0.52173913043478271, 0.53030303030303039,
        0.53030303030303039, 0.53030303030303039, 0.53030303030303039, 0.53968253968253976,
        0.53968253968253976, 0.53968253968253976, 0.55000000000000004, 0.55000000000000004,
        0.55000000000000004, 0.55000000000000004, 0.57894736842105265, 0.57894736842105265,
        0.57894736842105265, 0.57894736842105265, 0.61111111111111116, 0.61111111111111116,
        0.61111111111111116, 0.61111111111111116, 0.6470588235294118,  0.6470588235294118,
        0.6470588235294118,  0.625,               0.625,               0.625,
        0.625,               0.59999999999999998, 0.59999999999999998, 0.59999999999999998,
        0.59999999999999998, 0.6428571428571429,  0.6428571428571429,  0.6428571428571429,
        0.69230769230769229, 0.69230769230769229, 0.69230769230769229, 0.69230769230769229,
        0.66666666666666663, 0.66666666666666663, 0.66666666666666663, 0.66666666666666663,
        0.72727272727272729, 0.72727272727272729, 0.72727272727272729, 0.69999999999999996,
        0.69999999999999996, 0.69999999999999996, 0.69999999999999996, 0.77777777777777779,
        0.77777777777777779, 0.77777777777777779, 0.77777777777777779, 0.75,
        0.75,                0.75,                0.75,                0.7142857142857143,
        0.7142857142857143,  0.7142857142857143,  0.83333333333333337, 0.83333333333333337,
        0.83333333333333337, 0.83333333333333337, 0.80000000000000004, 0.80000000000000004,
        0.80000000000000004, 0.80000000000000004, 0.75,                0.75,
        0.75,                0.66666666666666663, 0.66666666666666663, 0.66666666666666663,
        0.66666666666666663, 0.5,                 0.5,                 0.5,
        0.5,                 1,                   1,                   1};
    double acc[100], area;
    eb_error err;
    (void)state;
    max_err = 0.0;
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 27, 3, NULL, 10, acc, &area, &err),
                     EB_OK);
    for (int k = 0; k < 10; k++)
        near(acc[k], want10[k], 1e-12);
    near(area, 0.6479772425716698, 1e-12);
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 27, 3, NULL, EB_METRIC_REJECTION_GRID,
                                               acc, &area, &err),
                     EB_OK);
    for (int k = 0; k < 100; k++)
        near(acc[k], want100[k], 1e-12);
    near(area, 0.6475995032703943, 1e-12);
    /* the area alone, without the curve */
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 27, 3, NULL, 100, NULL, &area, &err),
                     EB_OK);
    near(area, 0.6475995032703943, 1e-12);
    printf("accuracy-rejection curve vs numpy: max error %.3g\n", max_err);
}

static void test_by_hand(void **state)
{
    /* two examples tied at 0.6, one right: with grid 2, k = 1 rejects
     * floor(1 x 2 / 2) = 1 of them; the kept one is right with
     * probability 1/2, so both points are 0.5 and so is the area */
    static const float tie[2 * 2] = {0.6f, 0.4f, 0.6f, 0.4f};
    static const uint8_t tie_y[2] = {0, 1};
    /* all right: accuracy 1 everywhere */
    static const float p3[3 * 2] = {0.9f, 0.1f, 0.3f, 0.7f, 0.55f, 0.45f};
    static const uint8_t right[3] = {0, 1, 0}, mixed[3] = {0, 0, 1};
    /* an uncertainty as confidence: higher = kept first */
    static const double conf[3] = {0.1, 0.9, 0.5};
    double acc[4], area;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_rejection_curve(tie, tie_y, 2, 2, NULL, 2, acc, &area, &err), EB_OK);
    assert_float_equal(acc[0], 0.5, 1e-15);
    assert_float_equal(acc[1], 0.5, 1e-15);
    assert_float_equal(area, 0.5, 1e-15);

    assert_int_equal(eb_metric_rejection_curve(p3, right, 3, 2, NULL, 4, acc, &area, &err), EB_OK);
    for (int k = 0; k < 4; k++)
        assert_float_equal(acc[k], 1.0, 1e-15);
    assert_float_equal(area, 1.0, 1e-15);

    /* mixed: predictions 0, 1, 0 against 0, 0, 1: only example 0 right.
     * By max pbar (0.9, 0.7, 0.55), grid 4 rejects 0, 0, 1, 2 examples
     * (floor(k 3 / 4)): accuracies 1/3, 1/3, 1/2, 1. */
    assert_int_equal(eb_metric_rejection_curve(p3, mixed, 3, 2, NULL, 4, acc, &area, &err), EB_OK);
    assert_float_equal(acc[0], 1.0 / 3, 1e-15);
    assert_float_equal(acc[1], 1.0 / 3, 1e-15);
    assert_float_equal(acc[2], 0.5, 1e-15);
    assert_float_equal(acc[3], 1.0, 1e-15);
    assert_float_equal(area, (1.0 / 3 + 1.0 / 3 + 0.5 + 1.0) / 4, 1e-15);
    /* by the given confidence (0.1, 0.9, 0.5) the right one goes first */
    assert_int_equal(eb_metric_rejection_curve(p3, mixed, 3, 2, conf, 4, acc, &area, &err), EB_OK);
    assert_float_equal(acc[2], 0.0, 1e-15);
    assert_float_equal(acc[3], 0.0, 1e-15);
}

static void test_errors(void **state)
{
    static const uint8_t bad[2] = {0, 5};
    double acc[4], area, conf[27] = {0};
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 0, 3, NULL, 4, acc, &area, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "needs examples, classes and grid points (got 0, 3, 4)"));
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 27, 3, NULL, 0, acc, &area, &err),
                     EB_ERR_ARG);
    assert_int_equal(eb_metric_rejection_curve(pbar, bad, 2, 3, NULL, 4, acc, &area, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "label of example 1 is 5"));
    conf[4] = NAN;
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 27, 3, conf, 4, acc, &area, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "confidence of example 4 is NaN"));
    eb_alloc_fail_at(1);
    assert_int_equal(eb_metric_rejection_curve(pbar, labels, 27, 3, NULL, 4, acc, &area, &err),
                     EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_numpy),
        cmocka_unit_test(test_by_hand),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
