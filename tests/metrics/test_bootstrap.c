/* test_bootstrap.c: percentile bootstrap intervals. The quantile rule
 * against numpy.percentile (numpy 1.24.2, run once); the resamples
 * (indices in range, uniform, deterministic for a seed, positives and
 * negatives apart in the paired form); the interval width of a mean
 * against the normal approximation; the ready-made metrics against the
 * public metric functions on gathered copies of the same resamples; no
 * allocation per resample; and the errors. */
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

static void test_quantile_against_numpy(void **state)
{
    /* v = np.sort([3.1, -2, 0.5, 7, 7, 1.25, 4, 0.3]);
     * np.percentile(v, 100 * q) for the q below */
    static const double v[8] = {-2.0, 0.3, 0.5, 1.25, 3.1, 4.0, 7.0, 7.0};
    static const double q[7] = {0.0, 0.025, 0.1, 0.5, 0.9, 0.975, 1.0};
    static const double want[7] = {-2.0, -1.5975, -0.38999999999999985, 2.175, 7.0, 7.0, 7.0};
    double w[200];
    (void)state;
    max_err = 0.0;
    for (int k = 0; k < 7; k++)
        near(eb_metric_quantile(v, 8, q[k]), want[k], 1e-12);
    /* w = np.arange(200) / 199: np.percentile(w, 2.5) =
     * 0.025000000000000005, np.percentile(w, 97.5) = 0.975 */
    for (int i = 0; i < 200; i++)
        w[i] = i / 199.0;
    near(eb_metric_quantile(w, 200, 0.025), 0.025000000000000005, 1e-12);
    near(eb_metric_quantile(w, 200, 0.975), 0.975, 1e-12);
    near(eb_metric_quantile(v, 1, 0.3), -2.0, 0.0);
    printf("quantile vs numpy.percentile: max error %.3g\n", max_err);
}

/* Counts how often each index is drawn; the value is the mean index. */
typedef struct count_ctx {
    size_t n, calls, counts[10];
} count_ctx;

static eb_status count_fn(void *vctx, const size_t *idx, size_t n, double *value, eb_error *err)
{
    count_ctx *c = vctx;
    double s = 0.0;
    (void)err;
    assert_int_equal(n, c->n);
    for (size_t i = 0; i < n; i++) {
        assert_true(idx[i] < c->n);
        c->counts[idx[i]]++;
        s += (double)idx[i];
    }
    c->calls++;
    *value = s / (double)n;
    return EB_OK;
}

static void test_resamples(void **state)
{
    count_ctx c = {10, 0, {0}};
    double lo, hi, lo2, hi2;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_bootstrap(count_fn, &c, 10, 5000, 0.95, 1, &lo, &hi, &err), EB_OK);
    assert_int_equal(c.calls, 5000);
    /* 50,000 draws over 10 indices: 5,000 each, sd sqrt(50000 0.1 0.9)
     * = 67; five sd is a test that fails only on a broken sampler */
    for (int i = 0; i < 10; i++)
        assert_true(c.counts[i] > 5000 - 335 && c.counts[i] < 5000 + 335);
    /* the mean index 4.5 lies inside; the mean of 10 uniform indices has
     * sd 2.87 / sqrt(10) = 0.91, so the 95% interval spans about 3.6 */
    assert_true(lo < 4.5 && hi > 4.5);
    assert_true(hi - lo > 2.8 && hi - lo < 4.4);
    /* deterministic for a seed, different for another */
    memset(c.counts, 0, sizeof c.counts);
    assert_int_equal(eb_metric_bootstrap(count_fn, &c, 10, 5000, 0.95, 1, &lo2, &hi2, &err), EB_OK);
    assert_true(lo2 == lo && hi2 == hi);
    assert_int_equal(eb_metric_bootstrap(count_fn, &c, 10, 5000, 0.95, 2, &lo2, &hi2, &err), EB_OK);
    assert_true(lo2 != lo || hi2 != hi);
}

typedef struct pair_ctx {
    size_t npos, nneg, calls;
} pair_ctx;

static eb_status pair_fn(void *vctx, const size_t *pi, size_t np_, const size_t *ni, size_t nn,
                         double *value, eb_error *err)
{
    pair_ctx *c = vctx;
    (void)err;
    assert_int_equal(np_, c->npos);
    assert_int_equal(nn, c->nneg);
    for (size_t i = 0; i < np_; i++)
        assert_true(pi[i] < c->npos);
    for (size_t i = 0; i < nn; i++)
        assert_true(ni[i] < c->nneg);
    *value = (double)c->calls++;
    return EB_OK;
}

static void test_paired_resamples(void **state)
{
    pair_ctx c = {3, 7, 0};
    double lo, hi;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_bootstrap_paired(pair_fn, &c, 3, 7, 101, 0.9, 9, &lo, &hi, &err),
                     EB_OK);
    assert_int_equal(c.calls, 101);
    /* the values are 0..100: the 5% and 95% quantiles are 5 and 95 */
    assert_float_equal(lo, 5.0, 1e-12);
    assert_float_equal(hi, 95.0, 1e-12);
}

static void test_mean_interval_width(void **state)
{
    /* accuracy of 400 examples, 320 right: the bootstrap distribution of
     * a mean is close to normal with sd sqrt(0.8 0.2 / 400) = 0.02, so
     * the 95% interval is about 0.8 -+ 0.0392 */
    float pbar[400 * 2];
    uint8_t y[400];
    double lo, hi;
    eb_error err;
    (void)state;
    for (int i = 0; i < 400; i++) {
        pbar[2 * i] = 0.7f;
        pbar[2 * i + 1] = 0.3f;
        y[i] = i % 5 == 0; /* 80 wrong */
    }
    assert_int_equal(eb_metric_bootstrap_quality(EB_QUALITY_ACCURACY, pbar, y, 400, 2, 2000, 0.95,
                                                 11, &lo, &hi, &err),
                     EB_OK);
    printf("accuracy 0.8 of 400: interval [%.4f, %.4f], width %.4f (normal: 0.0784)\n", lo, hi,
           hi - lo);
    assert_true(lo < 0.8 && hi > 0.8);
    assert_true(fabs((lo + hi) / 2 - 0.8) < 0.01);
    assert_true(fabs((hi - lo) - 0.0784) < 0.012);
}

/* The test's own metric over a resample: gather the rows into copies
 * (buffers allocated once) and call the public function. */
#define NQ 60
#define CQ 3
typedef struct gather_ctx {
    eb_quality_metric m;
    const float *pbar;
    const uint8_t *y;
    float gp[NQ * CQ];
    uint8_t gy[NQ];
} gather_ctx;

static eb_status gather_fn(void *vctx, const size_t *idx, size_t n, double *value, eb_error *err)
{
    gather_ctx *g = vctx;
    double other;
    for (size_t i = 0; i < n; i++) {
        memcpy(g->gp + i * CQ, g->pbar + idx[i] * CQ, CQ * sizeof(float));
        g->gy[i] = g->y[idx[i]];
    }
    switch (g->m) {
    case EB_QUALITY_ACCURACY:
        *value = eb_metric_accuracy(g->gp, g->gy, n, CQ);
        return EB_OK;
    case EB_QUALITY_NLL:
        *value = eb_metric_nll(g->gp, g->gy, n, CQ);
        return EB_OK;
    case EB_QUALITY_BRIER:
        *value = eb_metric_brier(g->gp, g->gy, n, CQ);
        return EB_OK;
    case EB_QUALITY_ECE:
        return eb_metric_ece(g->gp, g->gy, n, CQ, 15, value, NULL, NULL, err);
    case EB_QUALITY_MCE:
        return eb_metric_ece(g->gp, g->gy, n, CQ, 15, &other, value, NULL, err);
    case EB_QUALITY_ECE_ADAPTIVE:
        return eb_metric_ece_adaptive(g->gp, g->gy, n, CQ, 15, value, NULL, NULL, err);
    case EB_QUALITY_ECE_CLASSWISE:
        return eb_metric_ece_classwise(g->gp, g->gy, n, CQ, 15, value, err);
    default:
        return EB_ERR_INTERNAL;
    }
}

typedef struct gather_ood {
    eb_ood_metric m;
    const double *pos, *neg;
    double gpos[40], gneg[50];
} gather_ood;

static eb_status gather_ood_fn(void *vctx, const size_t *pi, size_t np_, const size_t *ni,
                               size_t nn, double *value, eb_error *err)
{
    gather_ood *g = vctx;
    eb_ood_result r;
    eb_status st;
    for (size_t i = 0; i < np_; i++)
        g->gpos[i] = g->pos[pi[i]];
    for (size_t i = 0; i < nn; i++)
        g->gneg[i] = g->neg[ni[i]];
    st = eb_metric_ood(g->gpos, np_, g->gneg, nn, &r, err);
    *value = g->m == EB_OOD_AUROC ? r.auroc : g->m == EB_OOD_AUPR ? r.aupr : r.fpr95;
    return st;
}

static void test_ready_made_match_public_functions(void **state)
{
    static gather_ctx g;
    static gather_ood go;
    float pbar[NQ * CQ];
    uint8_t y[NQ];
    double pos[40], neg[50];
    eb_rng r;
    eb_error err;
    (void)state;
    max_err = 0.0;
    eb_rng_seed(&r, 21, 0);
    for (int i = 0; i < NQ; i++) {
        double a = eb_rng_uniform(&r), b = eb_rng_uniform(&r) * (1.0 - a);
        /* rounded to 0.05, so confidences tie often */
        pbar[i * CQ] = (float)(round(a * 20) / 20);
        pbar[i * CQ + 1] = (float)(round(b * 20) / 20);
        pbar[i * CQ + 2] = 1.0f - pbar[i * CQ] - pbar[i * CQ + 1];
        if (pbar[i * CQ + 2] < 0.0f)
            pbar[i * CQ + 2] = 0.0f;
        y[i] = (uint8_t)eb_rng_below(&r, CQ);
    }
    for (int m = 0; m < EB_QUALITY_COUNT_; m++) {
        double lo, hi, lo2, hi2;
        g = (gather_ctx){.m = (eb_quality_metric)m, .pbar = pbar, .y = y};
        assert_int_equal(eb_metric_bootstrap_quality((eb_quality_metric)m, pbar, y, NQ, CQ, 50,
                                                     0.9, 5, &lo, &hi, &err),
                         EB_OK);
        assert_int_equal(eb_metric_bootstrap(gather_fn, &g, NQ, 50, 0.9, 5, &lo2, &hi2, &err),
                         EB_OK);
        near(lo, lo2, 1e-12);
        near(hi, hi2, 1e-12);
        assert_true(lo <= hi);
        assert_non_null(eb_quality_metric_name((eb_quality_metric)m));
    }
    for (int i = 0; i < 40; i++)
        pos[i] = round(eb_rng_uniform(&r) * 10 + 3) / 10;
    for (int i = 0; i < 50; i++)
        neg[i] = round(eb_rng_uniform(&r) * 10) / 10;
    for (int m = 0; m < EB_OOD_COUNT_; m++) {
        double lo, hi, lo2, hi2;
        go = (gather_ood){.m = (eb_ood_metric)m, .pos = pos, .neg = neg};
        assert_int_equal(eb_metric_bootstrap_ood((eb_ood_metric)m, pos, 40, neg, 50, 50, 0.9, 5,
                                                 &lo, &hi, &err),
                         EB_OK);
        assert_int_equal(
            eb_metric_bootstrap_paired(gather_ood_fn, &go, 40, 50, 50, 0.9, 5, &lo2, &hi2, &err),
            EB_OK);
        near(lo, lo2, 1e-12);
        near(hi, hi2, 1e-12);
        assert_true(lo <= hi);
    }
    assert_string_equal(eb_quality_metric_name(EB_QUALITY_ECE_ADAPTIVE), "ece-adaptive");
    assert_string_equal(eb_ood_metric_name(EB_OOD_FPR95), "fpr95");
    assert_null(eb_ood_metric_name(EB_OOD_COUNT_));
    printf("ready-made bootstrap metrics vs public functions: max error %.3g\n", max_err);
}

static void test_no_allocation_per_resample(void **state)
{
    float pbar[4 * 2] = {0.9f, 0.1f, 0.4f, 0.6f, 0.8f, 0.2f, 0.3f, 0.7f};
    uint8_t y[4] = {0, 0, 1, 1};
    double pos[3] = {0.9, 0.5, 0.7}, neg[3] = {0.1, 0.6, 0.2}, lo, hi;
    long few, many;
    eb_error err;
    (void)state;
    few = eb_alloc_count();
    assert_int_equal(eb_metric_bootstrap_quality(EB_QUALITY_ECE_ADAPTIVE, pbar, y, 4, 2, 10, 0.95,
                                                 1, &lo, &hi, &err),
                     EB_OK);
    few = eb_alloc_count() - few;
    many = eb_alloc_count();
    assert_int_equal(eb_metric_bootstrap_quality(EB_QUALITY_ECE_ADAPTIVE, pbar, y, 4, 2, 500, 0.95,
                                                 1, &lo, &hi, &err),
                     EB_OK);
    many = eb_alloc_count() - many;
    assert_int_equal(few, many);
    assert_true(few <= 4);
    few = eb_alloc_count();
    assert_int_equal(eb_metric_bootstrap_ood(EB_OOD_AUPR, pos, 3, neg, 3, 10, 0.95, 1, &lo, &hi,
                                             &err),
                     EB_OK);
    few = eb_alloc_count() - few;
    many = eb_alloc_count();
    assert_int_equal(eb_metric_bootstrap_ood(EB_OOD_AUPR, pos, 3, neg, 3, 500, 0.95, 1, &lo, &hi,
                                             &err),
                     EB_OK);
    many = eb_alloc_count() - many;
    assert_int_equal(few, many);
}

static eb_status constant_fn(void *ctx, const size_t *idx, size_t n, double *value, eb_error *err)
{
    (void)ctx;
    (void)idx;
    (void)n;
    (void)err;
    *value = 0.25;
    return EB_OK;
}

/* Fails at the third resample, or gives NaN there. */
static eb_status failing_fn(void *ctx, const size_t *idx, size_t n, double *value, eb_error *err)
{
    int *calls = ctx;
    (void)idx;
    (void)n;
    *value = 1.0;
    if (++*calls == 3) {
        if (calls[1])
            *value = NAN;
        else
            return eb_error_set(err, EB_ERR_IO, "the test metric broke");
    }
    return EB_OK;
}

static void test_constant_and_errors(void **state)
{
    static const float pbar[2 * 2] = {0.9f, 0.1f, 0.4f, 0.6f};
    static const uint8_t y[2] = {0, 1}, bad_y[2] = {0, 4};
    static const double p[2] = {0.3, 0.4}, q[2] = {0.1, NAN};
    int calls[2] = {0, 0};
    double lo, hi;
    eb_error err;
    (void)state;
    assert_int_equal(eb_metric_bootstrap(constant_fn, NULL, 5, 20, 0.95, 0, &lo, &hi, &err), EB_OK);
    assert_true(lo == 0.25 && hi == 0.25);

    assert_int_equal(eb_metric_bootstrap(failing_fn, calls, 5, 10, 0.95, 0, &lo, &hi, &err),
                     EB_ERR_IO);
    assert_string_equal(err.msg, "bootstrap resample 3 of 10: the test metric broke");
    calls[0] = 0;
    calls[1] = 1;
    assert_int_equal(eb_metric_bootstrap(failing_fn, calls, 5, 10, 0.95, 0, &lo, &hi, &err),
                     EB_ERR_NUMERIC);
    assert_string_equal(err.msg, "bootstrap resample 3 of 10: the metric is NaN");

    assert_int_equal(eb_metric_bootstrap(constant_fn, NULL, 0, 20, 0.95, 0, &lo, &hi, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "at least one example"));
    assert_int_equal(eb_metric_bootstrap(constant_fn, NULL, 5, 1, 0.95, 0, &lo, &hi, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "at least 2 resamples (got 1)"));
    assert_int_equal(eb_metric_bootstrap(constant_fn, NULL, 5, 20, 1.0, 0, &lo, &hi, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "level 1 is outside (0, 1)"));
    assert_int_equal(eb_metric_bootstrap(NULL, NULL, 5, 20, 0.95, 0, &lo, &hi, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "callback is required"));
    assert_int_equal(eb_metric_bootstrap_paired(pair_fn, NULL, 0, 5, 20, 0.95, 0, &lo, &hi, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "(got 0 and 5)"));
    assert_int_equal(eb_metric_bootstrap_quality(EB_QUALITY_COUNT_, pbar, y, 2, 2, 20, 0.95, 0, &lo,
                                                 &hi, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown quality metric 7"));
    assert_int_equal(eb_metric_bootstrap_quality(EB_QUALITY_NLL, pbar, bad_y, 2, 2, 20, 0.95, 0,
                                                 &lo, &hi, &err),
                     EB_ERR_ARG);
    assert_string_equal(err.msg,
                        "bootstrap: nll: label of example 1 is 4, not below the 2 classes");
    assert_int_equal(eb_metric_bootstrap_ood(EB_OOD_AUROC, p, 2, q, 2, 20, 0.95, 0, &lo, &hi, &err),
                     EB_ERR_ARG);
    assert_string_equal(err.msg, "bootstrap: auroc: score of negative 1 is NaN");
    /* each allocation failing in turn: the ready-made metric's sorted
     * copy and multiplicities, then the index and value buffers */
    for (long k = 1; k <= 4; k++) {
        eb_alloc_fail_at(k);
        assert_int_equal(eb_metric_bootstrap_quality(EB_QUALITY_ECE_ADAPTIVE, pbar, y, 2, 2, 20,
                                                     0.95, 0, &lo, &hi, &err),
                         EB_ERR_NOMEM);
        eb_alloc_fail_at(0);
        assert_non_null(strstr(err.msg, "out of memory"));
    }
    for (long k = 1; k <= 4; k++) {
        eb_alloc_fail_at(k);
        assert_int_equal(
            eb_metric_bootstrap_ood(EB_OOD_AUROC, p, 2, p, 2, 20, 0.95, 0, &lo, &hi, &err),
            EB_ERR_NOMEM);
        eb_alloc_fail_at(0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantile_against_numpy),
        cmocka_unit_test(test_resamples),
        cmocka_unit_test(test_paired_resamples),
        cmocka_unit_test(test_mean_interval_width),
        cmocka_unit_test(test_ready_made_match_public_functions),
        cmocka_unit_test(test_no_allocation_per_resample),
        cmocka_unit_test(test_constant_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
