/* test_ood.c: OOD and misclassification detection. AUROC, AUPR, the ROC
 * points and FPR at 95% TPR on a fixed tied vector against scikit-learn
 * 1.2.1 (Debian 12's python3-sklearn), the score functions against
 * scipy.stats.entropy 1.10.1, the threshold sweep against naive O(n^2)
 * definitions and the rank-sum AUROC on random tied scores, and the
 * hand-worked extremes and errors. Agreement to 1e-6 (the counts make
 * most values exact); the maximum error is printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_rng.h"
#include "metrics/eb_metrics.h"

static double max_err;

static void near(double got, double want, double tol)
{
    double e = fabs(got - want);
    if (e > max_err)
        max_err = e;
    assert_float_equal(got, want, tol);
}

/* Python, run once:
 *   rng = np.random.default_rng(11)
 *   pos = np.round(rng.normal(0.6, 0.2, 20) * 20) / 20
 *   neg = np.round(rng.normal(0.4, 0.2, 25) * 20) / 20
 * (ties within and across the classes). */
static const double pos[20] = {0.6, 0.85, 0.85, 0.5,  0.55, 0.5,  0.7,  0.6,  0.75, 0.25,
                               0.9, 0.6,  0.75, 0.55, 0.5,  0.7,  0.75, 0.55, 0.55, 0.75};
static const double neg[25] = {0.25, 0.1,  0.5,  0.25, 0.0,  0.25, 0.3,  0.15, 0.1,
                               0.4,  0.6,  0.35, 0.25, 0.5,  0.55, 0.35, 0.5,  0.6,
                               0.35, 0.25, 0.45, 0.45, 0.6,  0.15, 0.25};

static void test_against_sklearn(void **state)
{
    /* y = np.r_[np.ones(20), np.zeros(25)]; s = np.r_[pos, neg]
     * roc_auc_score(y, s) = 0.896
     * average_precision_score(y, s) = 0.8646153846153847
     * fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False): 16 points
     * fpr[tpr >= 0.95].min() = 0.28; fpr[tpr >= 0.8].min() = 0.16 */
    static const double want_fpr[16] = {0.0,  0.0,  0.0, 0.0,  0.0,  0.12, 0.16, 0.28,
                                        0.36, 0.4,  0.52, 0.56, 0.8, 0.88, 0.96, 1.0};
    static const double want_tpr[16] = {0.0,  0.05, 0.15, 0.35, 0.45, 0.6, 0.8, 0.95,
                                        0.95, 0.95, 0.95, 0.95, 1.0,  1.0, 1.0, 1.0};
    double fpr[46], tpr[46], v;
    size_t count;
    eb_ood_result r;
    eb_error err;
    (void)state;
    max_err = 0.0;
    assert_int_equal(eb_metric_ood(pos, 20, neg, 25, &r, &err), EB_OK);
    near(r.auroc, 0.896, 1e-6);
    near(r.aupr, 0.8646153846153847, 1e-6);
    near(r.fpr95, 0.28, 1e-12);
    assert_int_equal(eb_metric_auroc(pos, 20, neg, 25, &v, &err), EB_OK);
    near(v, r.auroc, 1e-12);
    assert_int_equal(eb_metric_aupr(pos, 20, neg, 25, &v, &err), EB_OK);
    near(v, 0.8646153846153847, 1e-6);
    assert_int_equal(eb_metric_fpr_at_tpr(pos, 20, neg, 25, 0.95, &v, &err), EB_OK);
    near(v, 0.28, 1e-12);
    assert_int_equal(eb_metric_fpr_at_tpr(pos, 20, neg, 25, 0.8, &v, &err), EB_OK);
    near(v, 0.16, 1e-12);
    assert_int_equal(eb_metric_roc(pos, 20, neg, 25, fpr, tpr, &count, &err), EB_OK);
    assert_int_equal(count, 16);
    for (size_t k = 0; k < 16; k++) {
        near(fpr[k], want_fpr[k], 1e-12);
        near(tpr[k], want_tpr[k], 1e-12);
    }
    printf("detection vs scikit-learn: max error %.3g\n", max_err);
}

/* Naive references, straight from the definitions. */
static double naive_auroc(const double *p, size_t np_, const double *q, size_t nq)
{
    double s = 0.0;
    for (size_t i = 0; i < np_; i++)
        for (size_t j = 0; j < nq; j++)
            s += p[i] > q[j] ? 1.0 : p[i] == q[j] ? 0.5 : 0.0;
    return s / ((double)np_ * (double)nq);
}

/* Counts of positives and negatives scoring >= t. */
static void at_least(const double *p, size_t np_, const double *q, size_t nq, double t, double *tp,
                     double *fp)
{
    *tp = *fp = 0.0;
    for (size_t i = 0; i < np_; i++)
        *tp += p[i] >= t;
    for (size_t j = 0; j < nq; j++)
        *fp += q[j] >= t;
}

/* Average precision and the smallest FPR with TPR >= target: every
 * distinct score is a threshold, visited from the largest down (found by
 * repeated scans for the next smaller score). */
static void naive_ap_fpr(const double *p, size_t np_, const double *q, size_t nq, double target,
                         double *ap, double *fpr)
{
    double t = INFINITY, prev_r = 0.0;
    int first = 1;
    *ap = 0.0;
    *fpr = 2.0;
    for (;;) {
        double next = -INFINITY, tp, fp;
        int found = 0;
        for (size_t i = 0; i < np_ + nq; i++) {
            double s = i < np_ ? p[i] : q[i - np_];
            if ((first || s < t) && (!found || s > next)) {
                next = s;
                found = 1;
            }
        }
        if (!found)
            break;
        first = 0;
        t = next;
        at_least(p, np_, q, nq, t, &tp, &fp);
        *ap += (tp / (double)np_ - prev_r) * tp / (tp + fp);
        prev_r = tp / (double)np_;
        if (tp / (double)np_ >= target && fp / (double)nq < *fpr)
            *fpr = fp / (double)nq;
    }
}

static void test_sweep_against_naive(void **state)
{
    double p[40], q[50];
    eb_rng r;
    (void)state;
    max_err = 0.0;
    eb_rng_seed(&r, 3, 0);
    for (int trial = 0; trial < 50; trial++) {
        size_t np_ = 1 + (size_t)eb_rng_below(&r, 40), nq = 1 + (size_t)eb_rng_below(&r, 50);
        double ap, fpr, rank;
        eb_ood_result o;
        eb_error err;
        /* scores on a coarse grid, so ties are common; an infinity too */
        for (size_t i = 0; i < np_; i++)
            p[i] = (double)eb_rng_below(&r, 12) / 4.0;
        for (size_t j = 0; j < nq; j++)
            q[j] = (double)eb_rng_below(&r, 9) / 4.0;
        if (trial % 5 == 0)
            p[0] = INFINITY;
        if (trial % 7 == 0)
            q[0] = -INFINITY;
        assert_int_equal(eb_metric_ood(p, np_, q, nq, &o, &err), EB_OK);
        assert_int_equal(eb_metric_auroc(p, np_, q, nq, &rank, &err), EB_OK);
        naive_ap_fpr(p, np_, q, nq, 0.95, &ap, &fpr);
        near(o.auroc, naive_auroc(p, np_, q, nq), 1e-12);
        near(o.auroc, rank, 1e-12);
        near(o.aupr, ap, 1e-12);
        near(o.fpr95, fpr, 1e-12);
    }
    printf("sweep vs naive definitions and rank sums (50 tied sets): max error %.3g\n", max_err);
}

static void test_extremes(void **state)
{
    static const double hi[3] = {0.9, 0.8, 0.7}, lo[4] = {0.1, 0.2, 0.3, 0.4};
    static const double tied[3] = {0.5, 0.5, 0.5};
    double fpr[8], tpr[8];
    size_t count;
    eb_ood_result r;
    eb_error err;
    (void)state;
    /* perfect separation */
    assert_int_equal(eb_metric_ood(hi, 3, lo, 4, &r, &err), EB_OK);
    assert_float_equal(r.auroc, 1.0, 1e-15);
    assert_float_equal(r.aupr, 1.0, 1e-15);
    assert_float_equal(r.fpr95, 0.0, 1e-15);
    /* reversed: every negative above every positive; TPR reaches 0.95
     * only with all negatives in; AP = mean over the 3 positives of the
     * precisions 1/4, 2/5, 3/6 at their recalls */
    assert_int_equal(eb_metric_ood(lo, 3, hi, 3, &r, &err), EB_OK);
    assert_float_equal(r.auroc, 0.0, 1e-15);
    assert_float_equal(r.fpr95, 1.0, 1e-15);
    assert_float_equal(r.aupr, (1.0 / 4 + 2.0 / 5 + 3.0 / 6) / 3, 1e-12);
    /* all tied: one threshold; AUROC 1/2, AP = 3/6, FPR 1; the ROC is
     * (0, 0), (1, 1) */
    assert_int_equal(eb_metric_ood(tied, 3, tied, 3, &r, &err), EB_OK);
    assert_float_equal(r.auroc, 0.5, 1e-15);
    assert_float_equal(r.aupr, 0.5, 1e-15);
    assert_float_equal(r.fpr95, 1.0, 1e-15);
    assert_int_equal(eb_metric_roc(tied, 3, tied, 3, fpr, tpr, &count, &err), EB_OK);
    assert_int_equal(count, 2);
    assert_float_equal(fpr[0], 0.0, 0.0);
    assert_float_equal(tpr[1], 1.0, 0.0);
    assert_float_equal(fpr[1], 1.0, 0.0);
}

static void test_score_functions(void **state)
{
    /* probs (n = 3, S = 2, C = 3); with P = the float32 array as float64,
     * pbar = P.mean(1), scipy.stats.entropy(pbar, axis=1) and
     * H - scipy.stats.entropy(P, axis=2).mean(1), 1 - pbar.max(1): */
    static const float probs[3 * 2 * 3] = {0.7f, 0.2f, 0.1f, 0.5f, 0.3f, 0.2f,
                                           0.1f, 0.8f, 0.1f, 0.6f, 0.2f, 0.2f,
                                           1.0f / 3, 1.0f / 3, 1.0f / 3, 0.2f, 0.2f, 0.6f};
    static const double want[3][3] = {
        {0.9376369703038127, 0.9985793319691805, 1.0606018039446705},
        {0.02190118012201614, 0.20392813580159452, 0.03616039326811826},
        {0.4000000059604645, 0.4999999925494194, 0.5333333164453506}};
    double s[3];
    eb_error err;
    (void)state;
    max_err = 0.0;
    for (int k = 0; k < EB_OOD_SCORE_COUNT_; k++) {
        assert_int_equal(eb_metric_ood_score((eb_ood_score)k, probs, 3, 2, 3, s, &err), EB_OK);
        for (int i = 0; i < 3; i++)
            near(s[i], want[k][i], 1e-6);
    }
    assert_string_equal(eb_ood_score_name(EB_OOD_SCORE_ENTROPY), "entropy");
    assert_string_equal(eb_ood_score_name(EB_OOD_SCORE_MI), "mutual-information");
    assert_string_equal(eb_ood_score_name(EB_OOD_SCORE_MAXPROB), "one-minus-max-prob");
    assert_null(eb_ood_score_name(EB_OOD_SCORE_COUNT_));
    assert_int_equal(eb_metric_ood_score(EB_OOD_SCORE_COUNT_, probs, 3, 2, 3, s, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown OOD score kind 3"));
    assert_int_equal(eb_metric_ood_score(EB_OOD_SCORE_MAXPROB, probs, 3, 0, 3, s, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "needs draws and classes (got 0 and 3)"));
    printf("OOD scores vs scipy: max error %.3g\n", max_err);
}

static void test_misclassification(void **state)
{
    /* The 27 x 3 predictive of test_calibration.c; with conf = P.max(1),
     * pred = P.argmax(1): roc_auc_score(pred != y, 1 - conf) = 0.6. */
    static const float pbar[27 * 3] = {
        0.307f, 0.445f, 0.248f, 0.200f, 0.046f, 0.754f, 0.003f, 0.828f, 0.169f, 0.260f, 0.469f,
        0.271f, 0.233f, 0.278f, 0.489f, 0.307f, 0.445f, 0.248f, 0.307f, 0.445f, 0.248f, 0.029f,
        0.595f, 0.376f, 0.688f, 0.149f, 0.163f, 0.683f, 0.304f, 0.013f, 0.151f, 0.522f, 0.327f,
        0.605f, 0.004f, 0.391f, 0.068f, 0.097f, 0.835f, 0.202f, 0.546f, 0.252f, 0.834f, 0.054f,
        0.112f, 0.091f, 0.440f, 0.469f, 0.081f, 0.243f, 0.676f, 0.066f, 0.095f, 0.839f, 0.355f,
        0.511f, 0.134f, 0.434f, 0.254f, 0.312f, 0.041f, 0.708f, 0.251f, 0.441f, 0.013f, 0.546f,
        0.394f, 0.395f, 0.211f, 0.380f, 0.439f, 0.181f, 1.0f,   0.0f,   0.0f,   0.6f,   0.4f,
        0.0f,   0.4f,   0.4f,   0.2f};
    static const uint8_t y[27] = {2, 2, 1, 2, 1, 1, 2, 1, 0, 0, 1, 0, 2, 2,
                                  0, 1, 0, 0, 1, 2, 2, 1, 1, 1, 0, 1, 0};
    static const float sure[2 * 2] = {0.9f, 0.1f, 0.2f, 0.8f};
    static const uint8_t sure_y[2] = {0, 1}, sure_wrong[2] = {1, 0}, bad_y[2] = {0, 2};
    double score[27], a;
    eb_error err;
    (void)state;
    max_err = 0.0;
    assert_int_equal(eb_metric_misclassification_auroc(pbar, y, 27, 3, NULL, &a, &err), EB_OK);
    near(a, 0.6, 1e-12);
    /* the same uncertainty given explicitly, and its negation reversing it */
    for (int i = 0; i < 27; i++) {
        float m = pbar[i * 3];
        for (int c = 1; c < 3; c++)
            m = pbar[i * 3 + c] > m ? pbar[i * 3 + c] : m;
        score[i] = 1.0 - (double)m;
    }
    assert_int_equal(eb_metric_misclassification_auroc(pbar, y, 27, 3, score, &a, &err), EB_OK);
    near(a, 0.6, 1e-12);
    for (int i = 0; i < 27; i++)
        score[i] = -score[i];
    assert_int_equal(eb_metric_misclassification_auroc(pbar, y, 27, 3, score, &a, &err), EB_OK);
    near(a, 0.4, 1e-12);
    /* all right, or all wrong: undefined, documented NaN */
    assert_int_equal(eb_metric_misclassification_auroc(sure, sure_y, 2, 2, NULL, &a, &err), EB_OK);
    assert_true(isnan(a));
    assert_int_equal(eb_metric_misclassification_auroc(sure, sure_wrong, 2, 2, NULL, &a, &err),
                     EB_OK);
    assert_true(isnan(a));
    assert_int_equal(eb_metric_misclassification_auroc(sure, bad_y, 2, 2, NULL, &a, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "label of example 1 is 2"));
    score[3] = NAN;
    assert_int_equal(eb_metric_misclassification_auroc(pbar, y, 27, 3, score, &a, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "score of example 3 is NaN"));
    printf("misclassification AUROC vs scikit-learn: max error %.3g\n", max_err);
}

static void test_errors(void **state)
{
    static const double p[2] = {0.1, NAN};
    double fpr[4], tpr[4], v;
    size_t count;
    eb_ood_result r;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_ood(pos, 20, neg, 0, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "needs positives and negatives (got 20 and 0)"));
    assert_int_equal(eb_metric_ood(p, 2, neg, 3, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "score of positive 1 is NaN"));
    assert_int_equal(eb_metric_roc(neg, 3, p, 2, fpr, tpr, &count, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "score of negative 1 is NaN"));
    assert_int_equal(eb_metric_fpr_at_tpr(pos, 20, neg, 25, 0.0, &v, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "target TPR 0 is outside (0, 1]"));
    assert_int_equal(eb_metric_fpr_at_tpr(pos, 20, neg, 25, 1.5, &v, &err), EB_ERR_ARG);
    eb_alloc_fail_at(1);
    assert_int_equal(eb_metric_aupr(pos, 20, neg, 25, &v, &err), EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
    assert_non_null(strstr(err.msg, "AUPR: out of memory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_sklearn),  cmocka_unit_test(test_sweep_against_naive),
        cmocka_unit_test(test_extremes),         cmocka_unit_test(test_score_functions),
        cmocka_unit_test(test_misclassification), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
