/* test_calibration.c: equal-width ECE, MCE and reliability bins,
 * equal-mass (adaptive) ECE and classwise ECE against a numpy
 * computation of the stated formulas (numpy 1.24.2, Debian 12's
 * python3-numpy; the script is below, so anyone can rerun it), plus
 * hand-worked edge cases: confidences exactly on bin edges, exactly 0 and
 * 1, all right, all wrong, and the argument errors. Agreement to 1e-6;
 * the maximum error is printed.
 *
 * The reference script (python3, run once):
 *
 *   import numpy as np
 *   P = np.array([...the 27 x 3 values of `pbar` below...],
 *                dtype=np.float32).reshape(-1, 3)
 *   y = np.array([...`labels` below...])
 *   B = 15
 *   conf = P.max(1).astype(np.float64); pred = P.argmax(1)
 *   acc = (pred == y).astype(np.float64)
 *   e = np.linspace(0, 1, B + 1)
 *   def width(c, a):
 *       ece, mce, bins = 0.0, 0.0, []
 *       for b in range(B):
 *           m = (c > e[b]) & (c <= e[b + 1]) | ((b == 0) & (c == 0))
 *           if m.any():
 *               g = abs(a[m].mean() - c[m].mean())
 *               ece += m.sum() / len(c) * g; mce = max(mce, g)
 *               bins.append((b, m.sum(), c[m].mean(), a[m].mean()))
 *       return ece, mce, bins
 *   ece, mce, bins = width(conf, acc)
 *   o = np.lexsort((acc, conf)); ea, ma, abins = 0.0, 0.0, []
 *   for g in np.array_split(o, B):
 *       if len(g):
 *           d = abs(acc[g].mean() - conf[g].mean())
 *           ea += len(g) / len(conf) * d; ma = max(ma, d)
 *           abins.append((len(g), conf[g].min(), conf[g].max(),
 *                         conf[g].mean(), acc[g].mean()))
 *   sce = np.mean([width(P[:, k].astype(np.float64),
 *                        (y == k).astype(np.float64))[0] for k in range(3)])
 *
 * np.lexsort((acc, conf)) sorts by confidence, then wrong before right:
 * the tie rule of eb_metric_ece_adaptive. */
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

#define N 27
#define C 3

/* 24 rows from a Dirichlet(1, 1, 1) rounded to 3 decimals (rows 0, 5 and
 * 6 equal, so the confidence 0.445 is tied between one right and two
 * wrong examples), then a confidence-1 row, a 0.6 row (0.6f lies just
 * above the edge 9/15) and a row whose two first classes tie. */
static const float pbar[N * C] = {
    0.307f, 0.445f, 0.248f, 0.200f, 0.046f, 0.754f, 0.003f, 0.828f, 0.169f, 0.260f, 0.469f,
    0.271f, 0.233f, 0.278f, 0.489f, 0.307f, 0.445f, 0.248f, 0.307f, 0.445f, 0.248f, 0.029f,
    0.595f, 0.376f, 0.688f, 0.149f, 0.163f, 0.683f, 0.304f, 0.013f, 0.151f, 0.522f, 0.327f,
    0.605f, 0.004f, 0.391f, 0.068f, 0.097f, 0.835f, 0.202f, 0.546f, 0.252f, 0.834f, 0.054f,
    0.112f, 0.091f, 0.440f, 0.469f, 0.081f, 0.243f, 0.676f, 0.066f, 0.095f, 0.839f, 0.355f,
    0.511f, 0.134f, 0.434f, 0.254f, 0.312f, 0.041f, 0.708f, 0.251f, 0.441f, 0.013f, 0.546f,
    0.394f, 0.395f, 0.211f, 0.380f, 0.439f, 0.181f, 1.0f,   0.0f,   0.0f,   0.6f,   0.4f,
    0.0f,   0.4f,   0.4f,   0.2f};
static const uint8_t labels[N] = {2, 2, 1, 2, 1, 1, 2, 1, 0, 0, 1, 0, 2, 2,
                                  0, 1, 0, 0, 1, 2, 2, 1, 1, 1, 0, 1, 0};

static double max_err;

static void near(double got, double want, double tol)
{
    double e = fabs(got - want);
    if (e > max_err)
        max_err = e;
    assert_float_equal(got, want, tol);
}

static void test_ece_against_numpy(void **state)
{
    /* width(): ece 0.1365185225451434, mce 0.6049999892711639, non-empty
     * bins (index, count, mean confidence, accuracy): */
    static const struct {
        size_t b, count;
        double conf, acc;
    } want[] = {{5, 1, 0.39500001072883606, 1.0},  {6, 6, 0.4346666634082794, 0.5},
                {7, 5, 0.49200000166893004, 0.4},  {8, 3, 0.562333345413208, 1.0 / 3.0},
                {9, 2, 0.6025000214576721, 0.5},   {10, 4, 0.6887500137090683, 0.5},
                {11, 1, 0.7540000081062317, 1.0},  {12, 4, 0.8339999914169312, 0.75},
                {14, 1, 1.0, 1.0}};
    eb_reliability_bin rel[EB_METRIC_ECE_BINS];
    double ece, mce;
    size_t k = 0;
    eb_error err;
    (void)state;
    max_err = 0.0;
    assert_int_equal(eb_metric_ece(pbar, labels, N, C, EB_METRIC_ECE_BINS, &ece, &mce, rel, &err),
                     EB_OK);
    near(ece, 0.1365185225451434, 1e-6);
    near(mce, 0.6049999892711639, 1e-6);
    for (size_t b = 0; b < EB_METRIC_ECE_BINS; b++) {
        near(rel[b].lo, (double)b / 15.0, 1e-15);
        near(rel[b].hi, (double)(b + 1) / 15.0, 1e-15);
        if (k < sizeof want / sizeof want[0] && want[k].b == b) {
            assert_int_equal(rel[b].count, want[k].count);
            near(rel[b].confidence, want[k].conf, 1e-6);
            near(rel[b].accuracy, want[k].acc, 1e-12);
            k++;
        } else {
            assert_int_equal(rel[b].count, 0);
            assert_true(isnan(rel[b].confidence) && isnan(rel[b].accuracy));
        }
    }
    /* outputs other than the ECE are optional */
    assert_int_equal(eb_metric_ece(pbar, labels, N, C, 15, &ece, NULL, NULL, &err), EB_OK);
    near(ece, 0.1365185225451434, 1e-6);
    printf("ECE/MCE/bins vs numpy: max error %.3g\n", max_err);
}

static void test_adaptive_against_numpy(void **state)
{
    /* abins: (count, min conf, max conf, mean conf, accuracy); 27 = 12 x 2
     * + 3 x 1, the larger groups first (numpy.array_split); ea
     * 0.30496296396961914, ma 0.8389999866485596 */
    static const double want[15][5] = {
        {2, 0.39500001072883606, 0.4000000059604645, 0.39750000834465027, 1.0},
        {2, 0.4339999854564667, 0.4390000104904175, 0.4364999979734421, 0.5},
        {2, 0.4449999928474426, 0.4449999928474426, 0.4449999928474426, 0.0},
        {2, 0.4449999928474426, 0.4690000116825104, 0.4570000022649765, 0.5},
        {2, 0.4690000116825104, 0.48899999260902405, 0.4790000021457672, 0.0},
        {2, 0.5109999775886536, 0.5220000147819519, 0.5164999961853027, 1.0},
        {2, 0.5460000038146973, 0.5460000038146973, 0.5460000038146973, 0.0},
        {2, 0.5950000286102295, 0.6000000238418579, 0.5975000262260437, 0.5},
        {2, 0.6050000190734863, 0.6759999990463257, 0.640500009059906, 0.5},
        {2, 0.6830000281333923, 0.6880000233650208, 0.6855000257492065, 1.0},
        {2, 0.7080000042915344, 0.7540000081062317, 0.7310000061988831, 0.5},
        {2, 0.828000009059906, 0.8339999914169312, 0.8310000002384186, 1.0},
        {1, 0.8349999785423279, 0.8349999785423279, 0.8349999785423279, 1.0},
        {1, 0.8389999866485596, 0.8389999866485596, 0.8389999866485596, 0.0},
        {1, 1.0, 1.0, 1.0, 1.0}};
    eb_reliability_bin rel[15];
    float rev[N * C];
    uint8_t rev_y[N];
    double ece, mce, ece_rev;
    eb_error err;
    (void)state;
    max_err = 0.0;
    assert_int_equal(eb_metric_ece_adaptive(pbar, labels, N, C, 15, &ece, &mce, rel, &err), EB_OK);
    near(ece, 0.30496296396961914, 1e-6);
    near(mce, 0.8389999866485596, 1e-6);
    for (size_t b = 0; b < 15; b++) {
        assert_int_equal(rel[b].count, (size_t)want[b][0]);
        near(rel[b].lo, want[b][1], 1e-7);
        near(rel[b].hi, want[b][2], 1e-7);
        near(rel[b].confidence, want[b][3], 1e-6);
        near(rel[b].accuracy, want[b][4], 1e-12);
    }
    /* the tie rule makes the value independent of the example order */
    for (size_t i = 0; i < N; i++) {
        memcpy(rev + i * C, pbar + (N - 1 - i) * C, C * sizeof(float));
        rev_y[i] = labels[N - 1 - i];
    }
    assert_int_equal(eb_metric_ece_adaptive(rev, rev_y, N, C, 15, &ece_rev, NULL, NULL, &err),
                     EB_OK);
    assert_true(ece_rev == ece);
    printf("adaptive ECE/bins vs numpy: max error %.3g\n", max_err);
}

static void test_classwise_against_numpy(void **state)
{
    double sce;
    eb_error err;
    (void)state;
    max_err = 0.0;
    /* sce = 0.2384197534303422 */
    assert_int_equal(eb_metric_ece_classwise(pbar, labels, N, C, 15, &sce, &err), EB_OK);
    near(sce, 0.2384197534303422, 1e-6);
    printf("classwise ECE vs numpy: max error %.3g\n", max_err);
}

/* Four bins with confidences exactly on the edges 0.25, 0.5 and 1 (exact
 * in float), one at 0.375 and one exactly 0 (an all-zero row). Worked by
 * hand: right-closed bins give bin 0 = {0.25 wrong, 0 wrong}: confidence
 * 0.125, accuracy 0, gap 0.125; bin 1 = {0.5 wrong, 0.375 right}:
 * confidence 0.4375, accuracy 0.5, gap 0.0625; bin 2 empty; bin 3 = {1
 * right}: gap 0. ECE = (2 x 0.125 + 2 x 0.0625) / 5 = 0.075, MCE 0.125.
 * (Left-closed bins would give 0.175: this case tells them apart.) */
static void test_bin_edges_by_hand(void **state)
{
    static const float p[5 * 4] = {0.25f, 0.25f,  0.25f, 0.25f, 0.5f, 0.5f, 0.0f,
                                   0.0f,  0.375f, 0.375f, 0.25f, 0.0f, 1.0f, 0.0f,
                                   0.0f,  0.0f,   0.0f,  0.0f,  0.0f, 0.0f};
    /* predicted classes (first maximum): 0, 0, 0, 0, 0 */
    static const uint8_t y[5] = {1, 1, 0, 0, 1};
    eb_reliability_bin rel[4];
    double ece, mce;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_ece(p, y, 5, 4, 4, &ece, &mce, rel, &err), EB_OK);
    assert_float_equal(ece, 0.075, 1e-12);
    assert_float_equal(mce, 0.125, 1e-12);
    assert_int_equal(rel[0].count, 2);
    assert_float_equal(rel[0].confidence, 0.125, 1e-12);
    assert_float_equal(rel[0].accuracy, 0.0, 1e-12);
    assert_int_equal(rel[1].count, 2);
    assert_float_equal(rel[1].confidence, 0.4375, 1e-12);
    assert_float_equal(rel[1].accuracy, 0.5, 1e-12);
    assert_int_equal(rel[2].count, 0);
    assert_int_equal(rel[3].count, 1);
    assert_float_equal(rel[3].lo, 0.75, 1e-15);
    assert_float_equal(rel[3].hi, 1.0, 1e-15);
}

static void test_extremes_by_hand(void **state)
{
    /* confidence exactly 0 (right) goes to bin 0, exactly 1 (wrong) to bin
     * 14: each bin's gap is 1, so ECE = MCE = 1 */
    static const float p01[2 * 2] = {0.0f, 0.0f, 1.0f, 0.0f};
    static const uint8_t y01[2] = {0, 1};
    /* all right at confidence 1: ECE 0; all wrong at confidence 1: ECE 1 */
    static const float sure[3 * 2] = {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f};
    static const uint8_t right[3] = {0, 1, 0}, wrong[3] = {1, 0, 1};
    eb_reliability_bin rel[15];
    double ece, mce, sce;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_ece(p01, y01, 2, 2, 15, &ece, &mce, rel, &err), EB_OK);
    assert_float_equal(ece, 1.0, 1e-12);
    assert_float_equal(mce, 1.0, 1e-12);
    assert_int_equal(rel[0].count, 1);
    assert_int_equal(rel[14].count, 1);

    assert_int_equal(eb_metric_ece(sure, right, 3, 2, 15, &ece, &mce, NULL, &err), EB_OK);
    assert_float_equal(ece, 0.0, 1e-12);
    assert_int_equal(eb_metric_ece_adaptive(sure, right, 3, 2, 15, &ece, &mce, NULL, &err), EB_OK);
    assert_float_equal(ece, 0.0, 1e-12);
    assert_int_equal(eb_metric_ece_classwise(sure, right, 3, 2, 15, &sce, &err), EB_OK);
    assert_float_equal(sce, 0.0, 1e-12);

    assert_int_equal(eb_metric_ece(sure, wrong, 3, 2, 15, &ece, &mce, NULL, &err), EB_OK);
    assert_float_equal(ece, 1.0, 1e-12);
    assert_float_equal(mce, 1.0, 1e-12);
    /* n = 3 < 15 equal-mass groups: three singletons, the rest empty */
    assert_int_equal(eb_metric_ece_adaptive(sure, wrong, 3, 2, 15, &ece, &mce, rel, &err), EB_OK);
    assert_float_equal(ece, 1.0, 1e-12);
    assert_int_equal(rel[2].count, 1);
    assert_int_equal(rel[3].count, 0);
    assert_true(isnan(rel[3].lo) && isnan(rel[3].confidence));
    /* classwise, all wrong: per class, the bins at 0 and 1 have
     * frequency 1 and 0 (gap 1 each, all 3 examples): 1 */
    assert_int_equal(eb_metric_ece_classwise(sure, wrong, 3, 2, 15, &sce, &err), EB_OK);
    assert_float_equal(sce, 1.0, 1e-12);
}

static void expect_arg(eb_status st, const eb_error *err, const char *needle)
{
    assert_int_equal(st, EB_ERR_ARG);
    if (!strstr(err->msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
}

static void test_errors(void **state)
{
    static const float bad_nan[2] = {NAN, 0.5f}, bad_big[2] = {1.5f, 0.0f};
    static const uint8_t y0[1] = {0}, y7[1] = {7};
    double v;
    eb_error err;
    (void)state;
    expect_arg(eb_metric_ece(pbar, labels, 0, C, 15, &v, NULL, NULL, &err), &err,
               "at least one example");
    expect_arg(eb_metric_ece(pbar, labels, N, C, 0, &v, NULL, NULL, &err), &err, "0 bins");
    expect_arg(eb_metric_ece_adaptive(pbar, labels, N, C, EB_METRIC_MAX_BINS + 1, &v, NULL, NULL,
                                      &err),
               &err, "1025 bins");
    expect_arg(eb_metric_ece(pbar, y7, 1, C, 15, &v, NULL, NULL, &err), &err,
               "label of example 0 is 7");
    expect_arg(eb_metric_ece(bad_nan, y0, 1, 2, 15, &v, NULL, NULL, &err), &err,
               "example 0 class 0 is nan");
    expect_arg(eb_metric_ece_classwise(bad_big, y0, 1, 2, 15, &v, &err), &err,
               "outside [0, 1]");
    expect_arg(eb_metric_ece_adaptive(pbar, labels, N, 0, 15, &v, NULL, NULL, &err), &err,
               "at least one class");
    /* the adaptive ECE's one allocation failing */
    eb_alloc_fail_at(1);
    assert_int_equal(eb_metric_ece_adaptive(pbar, labels, N, C, 15, &v, NULL, NULL, &err),
                     EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
    assert_non_null(strstr(err.msg, "adaptive ECE"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ece_against_numpy),
        cmocka_unit_test(test_adaptive_against_numpy),
        cmocka_unit_test(test_classwise_against_numpy),
        cmocka_unit_test(test_bin_edges_by_hand),
        cmocka_unit_test(test_extremes_by_hand),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
