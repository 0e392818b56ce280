/* test_samplers.c: the samplers against posteriors known in closed form.
 *
 *  - the ziggurat's normals: moments and the Kolmogorov-Smirnov distance
 *    to the normal CDF (erfc); keyed noise is the same however it is
 *    sliced;
 *  - Bayesian linear regression with a Gaussian prior (posterior Gaussian,
 *    mean and covariance from numpy, below): SGLD, SGHMC, cSGLD, cSGHMC
 *    and HMC sample means within 3 Monte Carlo standard errors of the
 *    exact mean (the standard error from the samples' own effective sample
 *    size) and variances within 10%; mean-field VI means close to the
 *    exact mean and variances at or below the exact marginal variances
 *    (mean-field VI under-estimates them: its optimum is 1 / Lambda_ii,
 *    the inverse of the precision's diagonal, which the test also checks);
 *  - HMC on a correlated 2-D Gaussian: moments and a sane acceptance rate;
 *    the temperature scales the variance;
 *  - chains started far apart: split R-hat falls towards 1 as they mix;
 *  - the network methods: the same seed and thread count give
 *    byte-identical bundles, another seed does not;
 *  - every allocation of the samplers and of a method's training can
 *    fail: the error is EB_ERR_NOMEM with a sentence, nothing leaks (the
 *    sanitizer build checks) and no file is left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"
#include "methods/eb_samplers.h"

/* ---- Gaussian noise ---------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_normal_fill(void **state)
{
    const size_t n = 1000000;
    float *v = malloc(n * sizeof *v);
    double m = 0, m2 = 0, m3 = 0, m4 = 0, ks = 0;
    size_t tail = 0;
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 1, 1);
    eb_normal_fill(v, n, &r);
    for (size_t i = 0; i < n; i++) {
        m += v[i];
        m2 += (double)v[i] * v[i];
        m3 += (double)v[i] * v[i] * v[i];
        m4 += (double)v[i] * v[i] * v[i] * v[i];
        tail += fabs(v[i]) > 3.442619855899; /* beyond the base layer's edge */
    }
    m /= n;
    m2 /= n;
    m3 /= n;
    m4 /= n;
    qsort(v, n, sizeof *v, cmp_float);
    for (size_t i = 0; i < n; i++) {
        const double F = 0.5 * erfc(-v[i] / sqrt(2.0));
        const double d1 = fabs(F - (double)i / n), d2 = fabs(F - (double)(i + 1) / n);
        ks = fmax(ks, fmax(d1, d2));
    }
    printf("ziggurat: mean %.4f var %.4f skew %.4f kurt %.4f KS %.5f tail %zu\n", m, m2, m3, m4,
           ks, tail);
    /* standard errors for n = 1e6: mean 0.001, var 0.0014, m3 0.0039,
     * m4 0.0098 (bounds at 4 of them); KS at the 1% level: 1.63 / sqrt(n) */
    assert_true(fabs(m) < 0.004);
    assert_true(fabs(m2 - 1.0) < 0.006);
    assert_true(fabs(m3) < 0.016);
    assert_true(fabs(m4 - 3.0) < 0.04);
    assert_true(ks < 0.00163);
    /* P(|z| > 3.4426) = 5.76e-4, 576 +- 24 expected: the tail algorithm
     * is exercised and right in size */
    assert_true(tail > 480 && tail < 680);
    free(v);
}

static void test_noise_keyed_slices(void **state)
{
    const size_t K = 5000;
    float *whole = malloc(K * sizeof *whole), *parts = malloc(K * sizeof *parts);
    const size_t cuts[] = {0, 7, 1024, 1500, 4096, 4999, 5000};
    (void)state;
    eb_noise_keyed(whole, 0, K, 3, 9, 42);
    for (size_t c = 0; c + 1 < sizeof cuts / sizeof *cuts; c++)
        eb_noise_keyed(parts + cuts[c], cuts[c], cuts[c + 1], 3, 9, 42);
    assert_memory_equal(whole, parts, K * sizeof *whole);
    /* another step, seed or stream gives other noise */
    eb_noise_keyed(parts, 0, K, 3, 9, 43);
    assert_memory_not_equal(whole, parts, K * sizeof *whole);
    eb_noise_keyed(parts, 0, K, 4, 9, 42);
    assert_memory_not_equal(whole, parts, K * sizeof *whole);
    eb_noise_keyed(parts, 0, K, 3, 10, 42);
    assert_memory_not_equal(whole, parts, K * sizeof *whole);
    free(whole);
    free(parts);
}

/* ---- Bayesian linear regression ---------------------------------------- */

/* y = x . w + noise, noise variance 0.25, prior N(0, I). The data are
 * formulas so numpy can rebuild them:
 *   i = 0..99; x_i = (1, cos(0.7 i), 0.3 cos(0.7 i) + sin(1.3 i));
 *   e_i = ((37 i mod 11) - 5) / 3.2; y_i = 0.3 + 1.2 x_i1 - 0.8 x_i2 + 0.5 e_i
 * Exact posterior from /usr/bin/python3 (numpy 1.24.2):
 *   Lam = x.T @ x / 0.25 + np.eye(3); S = np.linalg.inv(Lam);
 *   m = S @ (x.T @ y / 0.25)
 * and mean-field VI's optimum variances 1 / np.diag(Lam). */
#define LIN_N 100
#define LIN_D 3
static const double lin_mean[LIN_D] = {0.29182142531314664, 1.1800377516475924,
                                       -0.8066348907320319};
static const double lin_var[LIN_D] = {2.4953926223315213e-03, 5.4888689523510982e-03,
                                      5.0296054731366977e-03};
static const double lin_mf_var[LIN_D] = {0.00249376558603491, 0.00491734931314107,
                                         0.00450482771251267};
static double lin_x[LIN_N][LIN_D], lin_y[LIN_N];
static long lin_calls;

static void lin_data(void)
{
    for (int i = 0; i < LIN_N; i++) {
        const double e = (double)(((37 * i) % 11) - 5) / 3.2;
        lin_x[i][0] = 1.0;
        lin_x[i][1] = cos(0.7 * i);
        lin_x[i][2] = 0.3 * cos(0.7 * i) + sin(1.3 * i);
        lin_y[i] = 0.3 + 1.2 * lin_x[i][1] - 0.8 * lin_x[i][2] + 0.5 * e;
    }
}

/* NLL_i = (y_i - x_i . theta)^2 / (2 * 0.25) */
static double lin_step(void *ctx, float *theta, const uint32_t *idx, int count, uint64_t pass,
                       uint64_t first, eb_update_fn update, void *uctx)
{
    float g[LIN_D] = {0, 0, 0};
    double nll = 0.0;
    (void)ctx;
    (void)pass;
    (void)first;
    lin_calls++;
    for (int k = 0; k < count; k++) {
        const double *x = lin_x[idx[k]];
        double r = lin_y[idx[k]];
        for (int j = 0; j < LIN_D; j++)
            r -= x[j] * theta[j];
        nll += r * r / 0.5;
        for (int j = 0; j < LIN_D; j++)
            g[j] += (float)(-r * x[j] / 0.25 / count);
    }
    update(uctx, theta, g, 0, LIN_D);
    return nll;
}

static eb_target lin_target(int max_batch)
{
    eb_target t;
    memset(&t, 0, sizeof t);
    lin_data();
    t.dim = LIN_D;
    t.n = LIN_N;
    t.max_batch = max_batch;
    t.step = lin_step;
    return t;
}

/* Means within 3 Monte Carlo standard errors (from each coordinate's
 * effective sample size) and variances within 10% of the exact ones. */
static void check_moments(const char *name, const float *s, int chains, int draws,
                          const double *mean, const double *var)
{
    const int S = chains * draws;
    double *series = malloc((size_t)S * sizeof *series);
    eb_error err;
    for (int j = 0; j < LIN_D; j++) {
        double m = 0.0, v = 0.0, ess, se;
        for (int k = 0; k < S; k++) {
            series[k] = s[(size_t)k * LIN_D + j];
            m += series[k];
        }
        m /= S;
        for (int k = 0; k < S; k++)
            v += (series[k] - m) * (series[k] - m);
        v /= S - 1;
        assert_int_equal(eb_diag_ess(series, chains, draws, &ess, &err), EB_OK);
        se = sqrt(v / ess);
        printf("%-7s w%d: mean %+.5f (exact %+.5f, %.2f SE, ESS %.0f)  var %.3e (exact %.3e, "
               "ratio %.3f)\n", name, j, m, mean[j], (m - mean[j]) / se, ess, v, var[j],
               v / var[j]);
        assert_true(ess > 300);
        assert_true(fabs(m - mean[j]) < 3.0 * se);
        assert_true(fabs(v / var[j] - 1.0) < 0.10);
    }
    free(series);
}

static void run_sgmcmc(const char *name, double lr, double friction, int cycles, int batch)
{
    eb_target t = lin_target(LIN_N);
    eb_sgmcmc_config c;
    eb_sampler_trace tr;
    eb_error err;
    float *s;
    memset(&c, 0, sizeof c);
    c.lr = lr;
    c.friction = friction;
    c.temperature = 1.0;
    c.prior_var = 1.0;
    c.batch = batch;
    c.noise = 1;
    c.chains = 2;
    c.seed = 5;
    if (cycles) {
        /* cycles of 10,000 steps; the sampling half of each re-mixes
         * after the noise-free half has collapsed onto the mode */
        c.cycles = cycles;
        c.steps = 10000L * cycles;
        c.explore = 0.5;
        c.per_cycle = 20;
        c.samples = cycles * c.per_cycle;
    } else {
        c.burnin = 20000;
        c.thin = 25;
        c.samples = 20000;
    }
    s = malloc((size_t)c.chains * c.samples * LIN_D * sizeof *s);
    if (eb_sgmcmc_run(&t, &c, NULL, s, &tr, &err) != EB_OK)
        fail_msg("%s: %s", name, err.msg);
    assert_int_equal(tr.chains, 2);
    assert_true(tr.points > 0 && isfinite(tr.loss[tr.points - 1]));
    check_moments(name, s, c.chains, c.samples, lin_mean, lin_var);
    eb_sampler_trace_free(&tr);
    free(s);
}

static void test_sgld_linear(void **state)
{
    (void)state;
    /* step lr / N = 5e-5 on U: eps * lambda_max = 0.02 (discretisation
     * bias ~1%), mini-batch noise inflation eps * V / 2 ~ 2% */
    run_sgmcmc("sgld", 0.005, 1.0, 0, 25);
}

static void test_sghmc_linear(void **state)
{
    (void)state;
    run_sgmcmc("sghmc", 0.0005, 0.1, 0, 25);
}

static void test_csgld_linear(void **state)
{
    (void)state;
    run_sgmcmc("csgld", 0.01, 1.0, 200, 25);
}

static void test_csghmc_linear(void **state)
{
    (void)state;
    run_sgmcmc("csghmc", 0.001, 0.1, 200, 25);
}

static void test_hmc_linear(void **state)
{
    eb_target t = lin_target(40); /* full batch in three chunks */
    eb_hmc_config c;
    eb_sampler_trace tr;
    eb_error err;
    float *s;
    (void)state;
    memset(&c, 0, sizeof c);
    c.path_len = 0.15;
    c.max_leapfrog = 50;
    c.warmup = 300;
    c.samples = 2000;
    c.thin = 1;
    c.target_accept = 0.8;
    c.temperature = 1.0;
    c.prior_var = 1.0;
    c.chains = 2;
    c.seed = 3;
    s = malloc((size_t)c.chains * c.samples * LIN_D * sizeof *s);
    if (eb_hmc_run(&t, &c, NULL, s, &tr, &err) != EB_OK)
        fail_msg("hmc: %s", err.msg);
    for (int k = 0; k < c.chains; k++) {
        printf("hmc chain %d: accept %.3f, eps %.4f, L %d\n", k, tr.accept_rate[k],
               tr.step_size[k], tr.leapfrog[k]);
        assert_true(tr.accept_rate[k] > 0.6 && tr.accept_rate[k] < 0.97);
    }
    check_moments("hmc", s, c.chains, c.samples, lin_mean, lin_var);
    eb_sampler_trace_free(&tr);
    free(s);
}

static void test_vi_linear(void **state)
{
    eb_target inner = lin_target(LIN_N), t;
    eb_vi_config c;
    eb_error err;
    float mu[LIN_D] = {0, 0, 0}, rho[LIN_D];
    (void)state;
    for (int j = 0; j < LIN_D; j++)
        rho[j] = (float)eb_softplus_inv(0.2);
    assert_int_equal(eb_target_reparam(&t, &inner, 11, &err), EB_OK);
    memset(&c, 0, sizeof c);
    c.lr = 0.01;
    c.cosine = 1;
    c.epochs = 3000;
    c.batch = 25;
    c.prior_var = 1.0;
    c.temperature = 1.0;
    c.seed = 2;
    if (eb_vi_run(&t, &c, mu, rho, NULL, NULL, &err) != EB_OK)
        fail_msg("vi: %s", err.msg);
    for (int j = 0; j < LIN_D; j++) {
        const double s = eb_softplus(rho[j]), v = s * s, sd = sqrt(lin_var[j]);
        printf("vi      w%d: mean %+.5f (exact %+.5f, %.3f sd)  var %.3e (exact marginal %.3e, "
               "1/Lambda_ii %.3e)\n", j, mu[j], lin_mean[j], (mu[j] - lin_mean[j]) / sd, v,
               lin_var[j], lin_mf_var[j]);
        /* the mean within a tenth of a posterior standard deviation */
        assert_true(fabs(mu[j] - lin_mean[j]) < 0.1 * sd);
        /* mean-field VI: at or below the marginal variance (1% slack for
         * the optimiser's noise), and at its optimum 1 / Lambda_ii */
        assert_true(v <= 1.01 * lin_var[j]);
        assert_true(fabs(v / lin_mf_var[j] - 1.0) < 0.05);
    }
    /* the correlated coordinates are strictly under-estimated */
    assert_true(eb_softplus(rho[1]) * eb_softplus(rho[1]) < 0.95 * lin_var[1]);
    eb_target_free(&t);
}

/* ---- HMC on a correlated 2-D Gaussian ---------------------------------- */

/* One "example" whose NLL is (theta - m)^T P (theta - m) / 2, P the
 * inverse of Sigma = [[1, 1.8], [1.8, 4]] (sd 1 and 2, correlation 0.9);
 * the prior's variance 1e8 makes its pull negligible (1e-8). */
static const double g2_m[2] = {1.0, -2.0};
static double g2_p[2][2];

static double g2_step(void *ctx, float *theta, const uint32_t *idx, int count, uint64_t pass,
                      uint64_t first, eb_update_fn update, void *uctx)
{
    const double d0 = theta[0] - g2_m[0], d1 = theta[1] - g2_m[1];
    float g[2];
    (void)ctx;
    (void)idx;
    (void)count;
    (void)pass;
    (void)first;
    g[0] = (float)(g2_p[0][0] * d0 + g2_p[0][1] * d1);
    g[1] = (float)(g2_p[1][0] * d0 + g2_p[1][1] * d1);
    update(uctx, theta, g, 0, 2);
    return 0.5 * (d0 * g[0] + d1 * g[1]);
}

static void hmc_gaussian(double T, double *mean, double *cov, double *accept)
{
    const double det = 1.0 * 4.0 - 1.8 * 1.8;
    eb_target t;
    eb_hmc_config c;
    eb_sampler_trace tr;
    eb_error err;
    float *s;
    const int S = 4000;
    g2_p[0][0] = 4.0 / det;
    g2_p[1][1] = 1.0 / det;
    g2_p[0][1] = g2_p[1][0] = -1.8 / det;
    memset(&t, 0, sizeof t);
    t.dim = 2;
    t.n = 1;
    t.max_batch = 1;
    t.step = g2_step;
    memset(&c, 0, sizeof c);
    c.path_len = 3.0;
    c.max_leapfrog = 100;
    c.warmup = 500;
    c.samples = S;
    c.thin = 1;
    c.target_accept = 0.8;
    c.temperature = T;
    c.prior_var = 1e8;
    c.chains = 1;
    c.seed = 9;
    s = malloc((size_t)S * 2 * sizeof *s);
    if (eb_hmc_run(&t, &c, NULL, s, &tr, &err) != EB_OK)
        fail_msg("hmc: %s", err.msg);
    mean[0] = mean[1] = cov[0] = cov[1] = cov[2] = 0.0;
    for (int k = 0; k < S; k++) {
        mean[0] += s[2 * k] / S;
        mean[1] += s[2 * k + 1] / S;
    }
    for (int k = 0; k < S; k++) {
        const double a = s[2 * k] - mean[0], b = s[2 * k + 1] - mean[1];
        cov[0] += a * a / (S - 1);
        cov[1] += a * b / (S - 1);
        cov[2] += b * b / (S - 1);
    }
    *accept = tr.accept_rate[0];
    printf("hmc 2-D T=%g: mean (%.3f, %.3f) cov (%.3f, %.3f, %.3f) accept %.3f eps %.3f L %d\n",
           T, mean[0], mean[1], cov[0], cov[1], cov[2], tr.accept_rate[0], tr.step_size[0],
           tr.leapfrog[0]);
    eb_sampler_trace_free(&tr);
    free(s);
}

static void test_hmc_gaussian_2d(void **state)
{
    double m[2], c[3], acc;
    (void)state;
    hmc_gaussian(1.0, m, c, &acc);
    /* HMC draws are nearly independent here; with ~4000 of them the
     * standard errors are 0.02 and 0.04 for the means and ~3% for the
     * variances */
    assert_true(fabs(m[0] - 1.0) < 0.08);
    assert_true(fabs(m[1] + 2.0) < 0.16);
    assert_true(fabs(c[0] - 1.0) < 0.1);
    assert_true(fabs(c[2] - 4.0) < 0.4);
    assert_true(fabs(c[1] / sqrt(c[0] * c[2]) - 0.9) < 0.02);
    assert_true(acc > 0.6 && acc < 0.99);
    /* exp(-U / T): T = 2 doubles the covariance */
    hmc_gaussian(2.0, m, c, &acc);
    assert_true(fabs(c[0] - 2.0) < 0.2);
    assert_true(fabs(c[2] - 8.0) < 0.8);
    assert_true(acc > 0.6 && acc < 0.99);
}

/* ---- R-hat of chains started far apart --------------------------------- */

static eb_status far_init(void *ctx, int chain, float *theta, eb_error *err)
{
    (void)ctx;
    (void)err;
    for (int j = 0; j < LIN_D; j++)
        theta[j] = chain == 0 ? 5.0f : -5.0f;
    return EB_OK;
}

static void test_rhat_falls(void **state)
{
    eb_target t = lin_target(LIN_N);
    eb_sgmcmc_config c;
    eb_sampler_hooks h;
    eb_error err;
    const int samples = 4000;
    float *s;
    double *series = malloc(2 * (size_t)samples * sizeof *series);
    double rhat[4];
    const int windows[4] = {8, 40, 400, 4000};
    (void)state;
    memset(&c, 0, sizeof c);
    memset(&h, 0, sizeof h);
    h.init = far_init;
    c.lr = 0.005;
    c.friction = 1.0;
    c.temperature = 1.0;
    c.prior_var = 1.0;
    c.batch = 25;
    c.noise = 1;
    c.chains = 2;
    c.samples = samples;
    c.burnin = 0;
    c.thin = 25;
    c.seed = 1;
    s = malloc(2 * (size_t)samples * LIN_D * sizeof *s);
    assert_int_equal(eb_sgmcmc_run(&t, &c, &h, s, NULL, &err), EB_OK);
    /* R-hat of w1 over the first w draws of each chain */
    for (int k = 0; k < 4; k++) {
        const int w = windows[k];
        for (int ch = 0; ch < 2; ch++)
            for (int i = 0; i < w; i++)
                series[ch * w + i] = s[((size_t)ch * samples + (size_t)i) * LIN_D + 1];
        assert_int_equal(eb_diag_split_rhat(series, 2, w, &rhat[k], &err), EB_OK);
        printf("split R-hat over the first %4d draws: %.4f\n", w, rhat[k]);
    }
    assert_true(rhat[0] > 2.0);
    assert_true(rhat[0] > rhat[1] && rhat[1] > rhat[2]);
    assert_true(rhat[3] < 1.01);
    free(series);
    free(s);
}

/* ---- argument checks ----------------------------------------------------- */

static void test_bad_configs(void **state)
{
    eb_target t = lin_target(LIN_N);
    eb_sgmcmc_config c;
    eb_hmc_config hc;
    eb_error err;
    float s[64];
    (void)state;
    memset(&c, 0, sizeof c);
    c.lr = 0.01;
    c.friction = 1.5;
    c.temperature = 1;
    c.prior_var = 1;
    c.batch = 10;
    c.chains = 1;
    c.samples = 2;
    c.thin = 1;
    assert_int_equal(eb_sgmcmc_run(&t, &c, NULL, s, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "friction in (0, 1] (1.5)"));
    c.friction = 1;
    c.cycles = 2;
    c.per_cycle = 3; /* 2 x 3 != 2 samples */
    c.steps = 100;
    assert_int_equal(eb_sgmcmc_run(&t, &c, NULL, s, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "2 samples per chain are not 2 cycles x 3 per cycle"));
    c.per_cycle = 1;
    c.explore = 0.999; /* no sampling stage left */
    assert_int_equal(eb_sgmcmc_run(&t, &c, NULL, s, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "sampling stage"));
    /* a step size that diverges is reported, with the setting to change */
    c.cycles = 0;
    c.lr = 5.0;
    c.samples = 2;
    c.burnin = 200;
    assert_int_equal(eb_sgmcmc_run(&t, &c, NULL, s, NULL, &err), EB_ERR_NUMERIC);
    assert_non_null(strstr(err.msg, "lower the step size (setting lr)"));
    memset(&hc, 0, sizeof hc);
    hc.path_len = 1;
    hc.max_leapfrog = 10;
    hc.samples = 1;
    hc.thin = 1;
    hc.chains = 1;
    hc.target_accept = 1.5;
    hc.temperature = 1;
    hc.prior_var = 1;
    assert_int_equal(eb_hmc_run(&t, &hc, NULL, s, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "target_accept in (0, 1) (1.5)"));
}

/* ---- the network methods: determinism ---------------------------------- */

static eb_dataset train_full, train;
static eb_arch small;
static char dir[512];

static int setup(void **state)
{
    eb_data_config cfg;
    eb_error err;
    (void)state;
    if (eb_data_config_default(&cfg, &err) ||
        eb_dataset_load("fashion-mnist", "train", &cfg, &train_full, &err)) {
        fprintf(stderr, "cannot load Fashion-MNIST: %s\n", err.msg);
        return -1;
    }
    train = train_full;
    train.n = 1000;
    if (eb_arch_parse("input 28x28x1; flatten; dense 16; relu; dense 10", &small, &err))
        return -1;
    snprintf(dir, sizeof dir, "%s/samplers_%d", EB_TEST_BINARY_DIR, (int)getpid());
    return eb_mkdirs(dir, &err) == EB_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    eb_dataset_free(&train_full);
    return 0;
}

static void train_to(const char *method, uint64_t seed, const char *sets, const char *path)
{
    const eb_method *m = eb_method_find(method);
    eb_settings s;
    eb_train_request req;
    eb_error err;
    assert_non_null(m);
    assert_int_equal(eb_method_settings(m, "custom", &s, &err), EB_OK);
    if (eb_settings_assign_list(&s, sets, &err) != EB_OK)
        fail_msg("%s: %s", sets, err.msg);
    memset(&req, 0, sizeof req);
    req.arch = &small;
    req.arch_name = "custom";
    req.train = &train;
    req.settings = &s;
    req.seed = seed;
    req.threads = 2;
    if (eb_method_train_bundle(m, &req, path, &err) != EB_OK)
        fail_msg("training %s: %s", method, err.msg);
}

static int same_file(const char *a, const char *b)
{
    char *da, *db;
    size_t la, lb;
    int same;
    assert_int_equal(eb_file_read_all(a, &da, &la, NULL), EB_OK);
    assert_int_equal(eb_file_read_all(b, &db, &lb, NULL), EB_OK);
    same = la == lb && memcmp(da, db, la) == 0;
    eb_free(da);
    eb_free(db);
    return same;
}

static void check_deterministic(const char *method, const char *sets)
{
    char a[600], b[600], c[600];
    eb_bundle *bd;
    eb_error err;
    snprintf(a, sizeof a, "%s/%s-a.ebb", dir, method);
    snprintf(b, sizeof b, "%s/%s-b.ebb", dir, method);
    snprintf(c, sizeof c, "%s/%s-c.ebb", dir, method);
    train_to(method, 21, sets, a);
    train_to(method, 21, sets, b);
    train_to(method, 22, sets, c);
    assert_true(same_file(a, b));
    assert_false(same_file(a, c));
    /* the traces are in the metadata */
    assert_int_equal(eb_bundle_open(a, 0, &bd, &err), EB_OK);
    assert_non_null(eb_bundle_meta_get(bd, "trace.chain0.loss"));
    assert_null(strchr(eb_bundle_meta_get(bd, "trace.chain0.loss"), '\n'));
    assert_string_equal(eb_bundle_meta_get(bd, "method"), method);
    eb_bundle_close(bd);
}

static void test_deterministic_sgld(void **state)
{
    char a[600];
    eb_bundle *b;
    eb_error err;
    (void)state;
    check_deterministic("sgld", "samples=8 chains=2 burnin=1 thin=1 probe=200");
    snprintf(a, sizeof a, "%s/sgld-a.ebb", dir);
    assert_int_equal(eb_bundle_open(a, 0, &b, &err), EB_OK);
    assert_int_equal(eb_bundle_members(b), 8);
    /* per-chain traces and the probe diagnostics */
    assert_non_null(eb_bundle_meta_get(b, "trace.chain1.nll"));
    assert_non_null(eb_bundle_meta_get(b, "trace.chain1.loglik"));
    assert_non_null(eb_bundle_meta_get(b, "diag.rhat_max"));
    assert_non_null(eb_bundle_meta_get(b, "diag.ess_min"));
    assert_string_equal(eb_bundle_meta_get(b, "hp.chains"), "2");
    eb_bundle_close(b);
}

static void test_deterministic_sghmc(void **state)
{
    (void)state;
    check_deterministic("sghmc", "samples=4 burnin=1 thin=1 probe=100");
}

static void test_deterministic_csghmc(void **state)
{
    (void)state;
    check_deterministic("csghmc", "samples=4 epochs=4 cycles=2 probe=100");
    check_deterministic("csgld", "samples=4 epochs=4 cycles=2 probe=100");
}

static void test_deterministic_hmc(void **state)
{
    char a[600];
    eb_bundle *b;
    eb_error err;
    (void)state;
    check_deterministic("hmc", "samples=4 chains=2 warmup=10 thin=1 init_epochs=1 subset=300 "
                               "probe=100 max_leapfrog=5");
    snprintf(a, sizeof a, "%s/hmc-a.ebb", dir);
    assert_int_equal(eb_bundle_open(a, 0, &b, &err), EB_OK);
    assert_non_null(eb_bundle_meta_get(b, "hmc.chain1.accept_rate"));
    assert_non_null(eb_bundle_meta_get(b, "hmc.chain0.step_size"));
    eb_bundle_close(b);
}

static void test_deterministic_vi_snapshot(void **state)
{
    char a[600];
    eb_bundle *b;
    eb_error err;
    (void)state;
    check_deterministic("vi", "epochs=2 samples=5");
    check_deterministic("snapshot", "epochs=4 samples=2");
    snprintf(a, sizeof a, "%s/vi-a.ebb", dir);
    assert_int_equal(eb_bundle_open(a, 0, &b, &err), EB_OK);
    assert_int_equal(eb_bundle_repr(b), EB_REPR_GAUSSIAN);
    assert_int_equal(eb_bundle_members(b), 5);
    assert_non_null(eb_bundle_sigma(b));
    eb_bundle_close(b);
}

static void test_method_settings_errors(void **state)
{
    const eb_method *m = eb_method_find("sgld");
    eb_settings s;
    eb_train_request req;
    eb_trained t;
    eb_error err;
    (void)state;
    assert_int_equal(eb_method_settings(m, "custom", &s, &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "samples=7", &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "chains=2", &err), EB_OK);
    memset(&req, 0, sizeof req);
    req.arch = &small;
    req.arch_name = "custom";
    req.train = &train;
    req.settings = &s;
    req.seed = 1;
    req.threads = 1;
    assert_int_equal(m->train(&req, &t, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "'samples' (7) must be a multiple of setting 'chains' (2)"));
    m = eb_method_find("csghmc");
    assert_int_equal(eb_method_settings(m, "custom", &s, &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "samples=30", &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "cycles=4", &err), EB_OK);
    req.settings = &s;
    assert_int_equal(m->train(&req, &t, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "multiple of setting 'cycles' (4)"));
}

/* Fails the k-th allocation for k = 1, 2, ... until the call succeeds;
 * every failure must be a clean EB_ERR_NOMEM. */
typedef eb_status (*alloc_case)(eb_error *err);

static void fail_each_allocation(const char *name, alloc_case f)
{
    int k;
    for (k = 1; k < 500; k++) {
        eb_error err;
        eb_status st;
        eb_error_clear(&err);
        eb_alloc_fail_at(k);
        st = f(&err);
        eb_alloc_fail_at(0);
        if (st == EB_OK)
            break;
        if (st != EB_ERR_NOMEM || !err.msg[0])
            fail_msg("%s: allocation %d failed with %s: '%s'", name, k, eb_status_name(st),
                     err.msg);
    }
    printf("%s: survived failures of each of its first %d allocations\n", name, k - 1);
    assert_true(k > 3 && k < 500);
}

static eb_status alloc_sgmcmc(eb_error *err)
{
    eb_target t = lin_target(LIN_N);
    eb_sgmcmc_config c;
    eb_sampler_trace tr;
    float s[2 * 4 * LIN_D];
    eb_status st;
    memset(&c, 0, sizeof c);
    c.lr = 0.005;
    c.friction = 1;
    c.temperature = 1;
    c.prior_var = 1;
    c.batch = 25;
    c.noise = 1;
    c.chains = 2;
    c.samples = 4;
    c.thin = 1;
    st = eb_sgmcmc_run(&t, &c, NULL, s, &tr, err);
    if (!st)
        eb_sampler_trace_free(&tr);
    return st;
}

static eb_status alloc_hmc(eb_error *err)
{
    eb_target t = lin_target(30);
    eb_hmc_config c;
    eb_sampler_trace tr;
    float s[2 * 4 * LIN_D];
    eb_status st;
    memset(&c, 0, sizeof c);
    c.path_len = 0.1;
    c.max_leapfrog = 5;
    c.warmup = 3;
    c.samples = 4;
    c.thin = 1;
    c.target_accept = 0.8;
    c.temperature = 1;
    c.prior_var = 1;
    c.chains = 2;
    st = eb_hmc_run(&t, &c, NULL, s, &tr, err);
    if (!st)
        eb_sampler_trace_free(&tr);
    return st;
}

static eb_status alloc_vi(eb_error *err)
{
    eb_target inner = lin_target(LIN_N), t;
    eb_vi_config c;
    float mu[LIN_D] = {0, 0, 0}, rho[LIN_D] = {-3, -3, -3};
    eb_sampler_trace tr;
    eb_status st = eb_target_reparam(&t, &inner, 1, err);
    if (st)
        return st;
    memset(&c, 0, sizeof c);
    c.lr = 0.01;
    c.epochs = 2;
    c.batch = 25;
    c.prior_var = 1;
    c.temperature = 1;
    st = eb_vi_run(&t, &c, mu, rho, NULL, &tr, err);
    if (!st)
        eb_sampler_trace_free(&tr);
    eb_target_free(&t);
    return st;
}

static const char *alloc_method;
static eb_status alloc_train(eb_error *err)
{
    const eb_method *m = eb_method_find(alloc_method);
    eb_settings s;
    eb_train_request req;
    char path[600];
    eb_status st;
    snprintf(path, sizeof path, "%s/alloc-%s.ebb", dir, alloc_method);
    st = eb_method_settings(m, "custom", &s, err);
    if (st)
        return st;
    if (!strcmp(alloc_method, "vi"))
        eb_settings_assign(&s, "epochs=1", err);
    else if (!strcmp(alloc_method, "hmc"))
        eb_settings_assign(&s, "warmup=2", err), eb_settings_assign(&s, "samples=4", err),
            eb_settings_assign(&s, "init_epochs=1", err), eb_settings_assign(&s, "subset=200", err),
            eb_settings_assign(&s, "probe=50", err), eb_settings_assign(&s, "thin=1", err);
    else
        eb_settings_assign(&s, "samples=4", err), eb_settings_assign(&s, "chains=2", err),
            eb_settings_assign(&s, "burnin=0", err), eb_settings_assign(&s, "probe=50", err);
    memset(&req, 0, sizeof req);
    req.arch = &small;
    req.arch_name = "custom";
    req.train = &train;
    req.settings = &s;
    req.seed = 1;
    req.threads = 2;
    st = eb_method_train_bundle(m, &req, path, err);
    /* a failed training leaves no file behind */
    if (st)
        assert_false(eb_file_exists(path));
    return st;
}

static void test_allocation_failures(void **state)
{
    (void)state;
    fail_each_allocation("eb_sgmcmc_run", alloc_sgmcmc);
    fail_each_allocation("eb_hmc_run", alloc_hmc);
    fail_each_allocation("eb_vi_run", alloc_vi);
    alloc_method = "sgld";
    fail_each_allocation("train sgld", alloc_train);
    alloc_method = "hmc";
    fail_each_allocation("train hmc", alloc_train);
    alloc_method = "vi";
    fail_each_allocation("train vi", alloc_train);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_fill),
        cmocka_unit_test(test_noise_keyed_slices),
        cmocka_unit_test(test_sgld_linear),
        cmocka_unit_test(test_sghmc_linear),
        cmocka_unit_test(test_csgld_linear),
        cmocka_unit_test(test_csghmc_linear),
        cmocka_unit_test(test_hmc_linear),
        cmocka_unit_test(test_vi_linear),
        cmocka_unit_test(test_hmc_gaussian_2d),
        cmocka_unit_test(test_rhat_falls),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_deterministic_sgld),
        cmocka_unit_test(test_deterministic_sghmc),
        cmocka_unit_test(test_deterministic_csghmc),
        cmocka_unit_test(test_deterministic_hmc),
        cmocka_unit_test(test_deterministic_vi_snapshot),
        cmocka_unit_test(test_method_settings_errors),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
