/* test_diagnostics.c: split R-hat and effective sample size against values
 * computed once with numpy (formulas of BDA3 and the Stan reference
 * manual, written independently in Python) and against known behaviour:
 * a hand-worked R-hat, ESS of independent draws close to their count, ESS
 * of an AR(1) chain close to n (1 - phi) / (1 + phi), R-hat of chains
 * started far apart falling to 1; posterior fidelity and member
 * disagreement on hand-worked arrays; the predictive diagnostics of a
 * posterior; argument errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/eb_samplers.h"

/* draws[c][i] = sin(0.37 i + c) + 0.1 c + 0.05 ((13 i + 7 c) mod 5) */
static double *formula_draws(int chains, int n)
{
    double *d = malloc((size_t)chains * n * sizeof *d);
    for (int c = 0; c < chains; c++)
        for (int i = 0; i < n; i++)
            d[(size_t)c * n + i] = sin(0.37 * i + c) + 0.1 * c + 0.05 * ((13 * i + 7 * c) % 5);
    return d;
}

static void test_against_numpy(void **state)
{
    /* From /usr/bin/python3 (numpy 1.24.2): split each chain into halves
     * of n // 2 (x[:, :h] and x[:, n-h:]); rhat = sqrt(((h-1)/h W + B/h) /
     * W) with W = mean of var(ddof=1), B/h = var(half means, ddof=1); ESS
     * by Stan's compute_effective_sample_size (biased autocovariances,
     * Geyer's initial positive then monotone sequence, the last positive
     * even autocorrelation as a bias term, capped at M n log10(M n)). */
    static const struct {
        int chains, n;
        double rhat, ess;
    } ref[] = {
        {3, 20, 1.1274682055091434, 15.113404207600967},
        {2, 41, 0.9804923666642882, 17.132567278784336},
        {4, 100, 1.0019379664264876, 79.33514068023814},
    };
    (void)state;
    for (size_t k = 0; k < sizeof ref / sizeof *ref; k++) {
        double *d = formula_draws(ref[k].chains, ref[k].n), r, e;
        eb_error err;
        assert_int_equal(eb_diag_split_rhat(d, ref[k].chains, ref[k].n, &r, &err), EB_OK);
        assert_int_equal(eb_diag_ess(d, ref[k].chains, ref[k].n, &e, &err), EB_OK);
        printf("%d x %d: R-hat %.12f (numpy %.12f), ESS %.10f (numpy %.10f)\n", ref[k].chains,
               ref[k].n, r, ref[k].rhat, e, ref[k].ess);
        assert_true(fabs(r - ref[k].rhat) < 1e-12);
        assert_true(fabs(e - ref[k].ess) < 1e-9 * ref[k].ess);
        free(d);
    }
}

static void test_rhat_by_hand(void **state)
{
    /* chains (1 2 3 4) and (2 3 4 5) split into (1 2) (3 4) (2 3) (4 5):
     * h = 2, W = 0.5, half means 1.5 3.5 2.5 4.5 with variance 5/3;
     * var+ = (1/2) 0.5 + 5/3 = 23/12; R-hat = sqrt(23/6) */
    const double d[8] = {1, 2, 3, 4, 2, 3, 4, 5};
    const double same[8] = {2, 2, 2, 2, 2, 2, 2, 2}, apart[8] = {1, 1, 1, 1, 2, 2, 2, 2};
    double r;
    eb_error err;
    (void)state;
    assert_int_equal(eb_diag_split_rhat(d, 2, 4, &r, &err), EB_OK);
    assert_true(fabs(r - sqrt(23.0 / 6.0)) < 1e-14);
    /* constant chains: 1 when they agree, +inf when they do not */
    assert_int_equal(eb_diag_split_rhat(same, 2, 4, &r, &err), EB_OK);
    assert_true(r == 1.0);
    assert_int_equal(eb_diag_split_rhat(apart, 2, 4, &r, &err), EB_OK);
    assert_true(isinf(r));
    assert_int_equal(eb_diag_ess(same, 2, 4, &r, &err), EB_OK);
    assert_true(r == 8.0);
}

/* AR(1) chains x_t = phi x_{t-1} + sqrt(1 - phi^2) z_t from x_0 = start. */
static double *ar1(int chains, int n, double phi, const double *start, uint64_t seed)
{
    double *d = malloc((size_t)chains * n * sizeof *d);
    float z[1];
    for (int c = 0; c < chains; c++) {
        eb_rng r;
        double x = start ? start[c] : 0.0;
        eb_rng_seed(&r, seed, (uint64_t)c);
        if (!start) { /* stationary start */
            eb_normal_fill(z, 1, &r);
            x = z[0];
        }
        for (int i = 0; i < n; i++) {
            eb_normal_fill(z, 1, &r);
            x = phi * x + sqrt(1.0 - phi * phi) * z[0];
            d[(size_t)c * n + i] = x;
        }
    }
    return d;
}

static void test_ess_known_cases(void **state)
{
    eb_error err;
    double e, r, *d;
    (void)state;
    /* independent draws: ESS close to their count, R-hat close to 1 */
    d = ar1(4, 1000, 0.0, NULL, 1);
    assert_int_equal(eb_diag_ess(d, 4, 1000, &e, &err), EB_OK);
    assert_int_equal(eb_diag_split_rhat(d, 4, 1000, &r, &err), EB_OK);
    printf("iid 4 x 1000: ESS %.0f, R-hat %.4f\n", e, r);
    assert_true(fabs(e / 4000.0 - 1.0) < 0.1);
    assert_true(r < 1.01);
    free(d);
    /* AR(1), phi = 0.8: integrated autocorrelation time (1 + phi) / (1 -
     * phi) = 9, so ESS ~ 20000 / 9 = 2222 */
    d = ar1(4, 5000, 0.8, NULL, 2);
    assert_int_equal(eb_diag_ess(d, 4, 5000, &e, &err), EB_OK);
    printf("AR(1) phi 0.8, 4 x 5000: ESS %.0f (theory 2222)\n", e);
    assert_true(fabs(e / 2222.2 - 1.0) < 0.15);
    free(d);
}

static void test_rhat_mixing(void **state)
{
    /* chains started at -20 and +20 with phi = 0.95 forget their start
     * after ~100 steps: R-hat over the first w draws falls towards 1 */
    const double start[2] = {-20.0, 20.0};
    const int windows[4] = {10, 100, 1000, 10000};
    double *d = ar1(2, 10000, 0.95, start, 3), *w = malloc(20000 * sizeof *w), r[4];
    eb_error err;
    (void)state;
    for (int k = 0; k < 4; k++) {
        for (int c = 0; c < 2; c++)
            memcpy(w + (size_t)c * windows[k], d + (size_t)c * 10000,
                   (size_t)windows[k] * sizeof *w);
        assert_int_equal(eb_diag_split_rhat(w, 2, windows[k], &r[k], &err), EB_OK);
        printf("R-hat over %5d draws: %.4f\n", windows[k], r[k]);
    }
    assert_true(r[0] > 3.0);
    assert_true(r[0] > r[1] && r[1] > r[2]);
    assert_true(r[3] < 1.01);
    free(d);
    free(w);
}

static void test_fidelity_by_hand(void **state)
{
    /* row 0: same argmax (0), |diff| = .1 + .1 + 0 -> tv .1
     * row 1: argmax 1 vs 2, |diff| = 0 + .5 + .5 -> tv .5
     * row 2: identical -> tv 0
     * agreement 2/3, tv (0.1 + 0.5 + 0) / 3 = 0.2 */
    const float p[9] = {0.6f, 0.3f, 0.1f, 0.2f, 0.7f, 0.1f, 1.0f / 3, 1.0f / 3, 1.0f / 3};
    const float q[9] = {0.5f, 0.4f, 0.1f, 0.2f, 0.2f, 0.6f, 1.0f / 3, 1.0f / 3, 1.0f / 3};
    double a, tv;
    (void)state;
    eb_diag_fidelity(p, q, 3, 3, &a, &tv);
    assert_true(fabs(a - 2.0 / 3.0) < 1e-12);
    assert_true(fabs(tv - 0.2) < 1e-6);
    eb_diag_fidelity(p, p, 3, 3, &a, &tv);
    assert_true(a == 1.0 && tv == 0.0);
}

static void test_disagreement_by_hand(void **state)
{
    /* n = 2 rows, S = 3 members, C = 2.
     * row 0: votes 0, 0, 1 -> pairs (0,1) agree, (0,2) (1,2) differ: 2/3
     * row 1: votes 1, 1, 1 -> 0
     * mean 1/3 */
    const float probs[12] = {0.9f, 0.1f, 0.8f, 0.2f, 0.3f, 0.7f,
                             0.1f, 0.9f, 0.4f, 0.6f, 0.2f, 0.8f};
    float big[2 * 2 * 300];
    (void)state;
    assert_true(fabs(eb_diag_disagreement(probs, 2, 3, 2) - 1.0 / 3.0) < 1e-12);
    assert_true(eb_diag_disagreement(probs, 2, 1, 2) == 0.0);
    /* more classes than the counting table: the pairwise path agrees */
    memset(big, 0, sizeof big);
    big[0 * 300 + 299] = 1.0f; /* row 0 member 0: class 299 */
    big[1 * 300 + 5] = 1.0f;   /* row 0 member 1: class 5 */
    big[2 * 300 + 7] = 1.0f;   /* row 1 member 0: class 7 */
    big[3 * 300 + 7] = 1.0f;   /* row 1 member 1: class 7 */
    assert_true(fabs(eb_diag_disagreement(big, 2, 2, 300) - 0.5) < 1e-12);
}

static void test_predictive_and_errors(void **state)
{
    eb_chain_diag d;
    eb_error err;
    double q[2 * 8 * 3], r;
    eb_posterior p;
    float *params, x[2 * 4];
    uint8_t y[2] = {0, 1};
    eb_rng g;
    (void)state;
    /* two chains of 8 draws, 3 probes: probe 2 differs between chains */
    for (int s = 0; s < 16; s++)
        for (int i = 0; i < 3; i++)
            q[s * 3 + i] = 0.5 + 0.01 * sin(s * 1.7 + i) + (i == 2 && s >= 8 ? 0.3 : 0.0);
    assert_int_equal(eb_diag_predictive(q, 2, 8, 3, &d, &err), EB_OK);
    printf("predictive: R-hat max %.3f mean %.3f, ESS min %.2f mean %.2f\n", d.rhat_max,
           d.rhat_mean, d.ess_min, d.ess_mean);
    assert_int_equal(d.chains, 2);
    assert_int_equal(d.draws, 8);
    assert_true(d.rhat_max > 5.0);
    assert_true(d.ess_min <= d.ess_mean);
    /* too few draws: named */
    assert_int_equal(eb_diag_split_rhat(q, 2, 3, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "4 draws per chain (got 2 chains of 3)"));
    assert_int_equal(eb_diag_ess(q, 0, 8, &r, &err), EB_ERR_ARG);
    assert_int_equal(eb_diag_predictive(q, 2, 8, 0, &d, &err), EB_ERR_ARG);

    /* a posterior of 8 members read as 2 chains of 4 */
    memset(&p, 0, sizeof p);
    assert_int_equal(eb_arch_parse("input 1x1x4; dense 2", &p.arch, &err), EB_OK);
    params = malloc(8 * p.arch.n_params * sizeof *params);
    eb_rng_seed(&g, 1, 2);
    eb_normal_fill(params, 8 * p.arch.n_params, &g);
    eb_normal_fill(x, 8, &g);
    p.repr = EB_REPR_SAMPLES;
    p.members = 8;
    p.k = p.arch.n_params;
    p.params = params;
    assert_int_equal(eb_posterior_chain_diag(&p, 2, x, y, 2, &d, &err), EB_OK);
    assert_true(d.probes == 2 && d.draws == 4);
    assert_true(isfinite(d.ess_mean));
    assert_int_equal(eb_posterior_chain_diag(&p, 3, x, y, 2, &d, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "8 members do not split into 3 chains"));
    y[1] = 7;
    assert_int_equal(eb_posterior_chain_diag(&p, 2, x, y, 2, &d, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "label 7 of probe 1"));
    free(params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_numpy),
        cmocka_unit_test(test_rhat_by_hand),
        cmocka_unit_test(test_ess_known_cases),
        cmocka_unit_test(test_rhat_mixing),
        cmocka_unit_test(test_fidelity_by_hand),
        cmocka_unit_test(test_disagreement_by_hand),
        cmocka_unit_test(test_predictive_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
