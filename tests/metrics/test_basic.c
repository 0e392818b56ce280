/* test_basic.c: accuracy, NLL, Brier, the entropy decomposition and AUROC
 * on fixed vectors. Expected values were computed with scikit-learn 1.2.1
 * (roc_auc_score, log_loss, accuracy_score) and scipy.stats.entropy on
 * Debian 12's python3-sklearn; the Brier score and the tie case are worked
 * by hand in the comments. Agreement to 1e-6. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "metrics/eb_metrics.h"

static const float pbar[4 * 3] = {0.7f, 0.2f, 0.1f, 0.1f, 0.8f, 0.1f,
                                  0.3f, 0.3f, 0.4f, 0.25f, 0.5f, 0.25f};
static const uint8_t labels[4] = {0, 1, 0, 2};

static void test_accuracy_nll_brier(void **state)
{
    (void)state;
    /* accuracy_score(y, p.argmax(1)) = 0.5; log_loss = 0.7925214151746922 */
    assert_float_equal(eb_metric_accuracy(pbar, labels, 4, 3), 0.5, 1e-12);
    assert_float_equal(eb_metric_nll(pbar, labels, 4, 3), 0.7925214151746922, 1e-6);
    /* Brier by hand: (0.09+0.04+0.01) + (0.01+0.04+0.01) + (0.49+0.09+0.16)
     * + (0.0625+0.25+0.5625) = 1.815; / 4 = 0.45375 */
    assert_float_equal(eb_metric_brier(pbar, labels, 4, 3), 0.45375, 1e-6);
}

static void test_nll_floor(void **state)
{
    const float p[2] = {1.0f, 0.0f};
    const uint8_t y[1] = {1};
    (void)state;
    assert_float_equal(eb_metric_nll(p, y, 1, 2), -log(EB_METRIC_PROB_FLOOR), 1e-9);
}

static void test_uncertainty_decomposition(void **state)
{
    /* members (n=2, S=3, C=2); scipy.stats.entropy gives total
     * 0.6730116670092565 and 0.6931471805599453, expected data entropy
     * 0.5363196474851994 and 0.6931471805599453, so mutual information
     * 0.13669201952405707 and 0 */
    const float probs[2 * 3 * 2] = {0.9f, 0.1f, 0.6f, 0.4f, 0.3f, 0.7f,
                                    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    double t[2], d[2], k[2];
    float pb[4];
    (void)state;
    eb_metric_uncertainty(t, d, k, probs, 2, 3, 2);
    assert_float_equal(t[0], 0.6730116670092565, 1e-6);
    assert_float_equal(t[1], 0.6931471805599453, 1e-6);
    assert_float_equal(d[0], 0.5363196474851994, 1e-6);
    assert_float_equal(d[1], 0.6931471805599453, 1e-6);
    assert_float_equal(k[0], 0.13669201952405707, 1e-6);
    assert_float_equal(k[1], 0.0, 1e-6);
    eb_metric_predictive(pb, probs, 2, 3, 2);
    assert_float_equal(pb[0], 0.6, 1e-6);
    assert_float_equal(pb[1], 0.4, 1e-6);
}

static void test_auroc(void **state)
{
    /* roc_auc_score on these 15 scores = 0.8125 (ties at 0.8, 0.7, 0.3
     * between the classes count one half) */
    const double pos[7] = {0.9, 0.8, 0.8, 0.55, 0.3, 0.7, 0.7};
    const double neg[8] = {0.1, 0.8, 0.4, 0.35, 0.7, 0.2, 0.05, 0.3};
    const double all_tied[2] = {1.0, 1.0};
    double a;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_auroc(pos, 7, neg, 8, &a, &err), EB_OK);
    assert_float_equal(a, 0.8125, 1e-12);
    /* swapping the classes gives 1 - AUROC */
    assert_int_equal(eb_metric_auroc(neg, 8, pos, 7, &a, &err), EB_OK);
    assert_float_equal(a, 0.1875, 1e-12);
    /* all ties: one half */
    assert_int_equal(eb_metric_auroc(all_tied, 1, all_tied + 1, 1, &a, &err), EB_OK);
    assert_float_equal(a, 0.5, 1e-12);
    assert_int_equal(eb_metric_auroc(pos, 7, neg, 0, &a, &err), EB_ERR_ARG);
    {
        const double bad[1] = {NAN};
        assert_int_equal(eb_metric_auroc(bad, 1, pos, 1, &a, &err), EB_ERR_ARG);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accuracy_nll_brier),
        cmocka_unit_test(test_nll_floor),
        cmocka_unit_test(test_uncertainty_decomposition),
        cmocka_unit_test(test_auroc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
