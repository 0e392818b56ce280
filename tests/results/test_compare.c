/* test_compare.c: the Mann-Whitney U test against scipy, the fast U
 * against the pairwise reference, and the verdicts of eb_results_compare
 * on synthetic runs (latency shifts with noise, quality changes inside and
 * beyond their intervals, thresholds, new/missing/failed jobs).
 *
 * Expected U and p-values come from Debian 12's python3-scipy 1.10.1:
 *   scipy.stats.mannwhitneyu(x, y, method='asymptotic', use_continuity=True,
 *                            alternative=ALT)
 * for the samples written below; agreement to 1e-12 relative. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_rng.h"
#include "results/eb_results.h"
#include "results/results_internal.h"

#define DB_PATH EB_TEST_BINARY_DIR "/results_compare.db"

static void assert_close(double got, double want, double rel)
{
    double tol = rel * fmax(1.0, fabs(want));
    if (!(fabs(got - want) <= tol)) {
        print_error("got %.17g, want %.17g (|error| %.3g > %.3g)\n", got, want, fabs(got - want),
                    tol);
        fail();
    }
}

/* ---- Mann-Whitney against scipy ------------------------------------------ */

/* 12 and 15 values with ties inside and across the samples. */
static const double tx[12] = {1.2, 3.4, 2.2, 2.2, 5.0, 1.2, 4.4, 3.4, 6.1, 2.2, 0.5, 3.4};
static const double ty[15] = {2.2, 1.0, 1.2, 0.7, 2.2, 3.4, 0.9, 1.5,
                              2.0, 1.2, 0.5, 2.8, 1.9, 2.2, 0.3};

static void test_mwu_small_with_ties(void **state)
{
    double u, p;
    (void)state;
    /* mannwhitneyu(tx, ty, ...): statistic 136.5 for every alternative;
     * greater 0.011786933200144572, less 0.9896447684448016,
     * two-sided 0.023573866400289144 */
    assert_int_equal(eb_results_mann_whitney(tx, 12, ty, 15, EB_RESULTS_GREATER, &u, &p, NULL),
                     EB_OK);
    assert_close(u, 136.5, 1e-12);
    assert_close(p, 0.011786933200144572, 1e-12);
    assert_int_equal(eb_results_mann_whitney(tx, 12, ty, 15, EB_RESULTS_LESS, &u, &p, NULL),
                     EB_OK);
    assert_close(u, 136.5, 1e-12);
    assert_close(p, 0.9896447684448016, 1e-12);
    assert_int_equal(
        eb_results_mann_whitney(tx, 12, ty, 15, EB_RESULTS_TWO_SIDED, &u, &p, NULL), EB_OK);
    assert_close(u, 136.5, 1e-12);
    assert_close(p, 0.023573866400289144, 1e-12);
}

static void test_mwu_formula_samples(void **state)
{
    /* xs = [1.0 + ((i*37) % 23) / 10 for i in range(60)]
     * ys = [0.9 + ((j*53) % 19) / 10 for j in range(80)]
     * (the same IEEE operations in C, so the values, and their ties, are
     * identical): statistic 2993.5; greater 0.006217689756429981,
     * less 0.9938558894783267, two-sided 0.012435379512859963 */
    double xs[60], ys[80], u, p;
    (void)state;
    for (int i = 0; i < 60; i++)
        xs[i] = 1.0 + ((i * 37) % 23) / 10.0;
    for (int j = 0; j < 80; j++)
        ys[j] = 0.9 + ((j * 53) % 19) / 10.0;
    assert_int_equal(eb_results_mann_whitney(xs, 60, ys, 80, EB_RESULTS_GREATER, &u, &p, NULL),
                     EB_OK);
    assert_close(u, 2993.5, 1e-12);
    assert_close(p, 0.006217689756429981, 1e-12);
    assert_int_equal(eb_results_mann_whitney(xs, 60, ys, 80, EB_RESULTS_LESS, &u, &p, NULL),
                     EB_OK);
    assert_close(p, 0.9938558894783267, 1e-12);
    assert_int_equal(
        eb_results_mann_whitney(xs, 60, ys, 80, EB_RESULTS_TWO_SIDED, &u, &p, NULL), EB_OK);
    assert_close(p, 0.012435379512859963, 1e-12);
}

static void test_mwu_degenerate(void **state)
{
    const double ones[5] = {1, 1, 1, 1, 1}, two = 2.0, one = 1.0, bad[2] = {1.0, NAN};
    double u, p;
    eb_error err;
    (void)state;
    /* mannwhitneyu([1.0, 1.0], [1.0, 1.0, 1.0], alternative='greater'):
     * statistic 3.0, pvalue 1.0 (every value tied) */
    assert_int_equal(eb_results_mann_whitney(ones, 2, ones, 3, EB_RESULTS_GREATER, &u, &p, NULL),
                     EB_OK);
    assert_close(u, 3.0, 0);
    assert_close(p, 1.0, 0);
    /* mannwhitneyu([2.0], [1.0]): greater 0.5, two-sided 1.0 */
    assert_int_equal(eb_results_mann_whitney(&two, 1, &one, 1, EB_RESULTS_GREATER, &u, &p, NULL),
                     EB_OK);
    assert_close(u, 1.0, 0);
    assert_close(p, 0.5, 1e-15);
    assert_int_equal(
        eb_results_mann_whitney(&two, 1, &one, 1, EB_RESULTS_TWO_SIDED, &u, &p, NULL), EB_OK);
    assert_close(p, 1.0, 1e-15);
    /* Empty and non-finite samples are refused with a sentence. */
    assert_int_equal(eb_results_mann_whitney(ones, 0, ones, 3, EB_RESULTS_GREATER, &u, &p, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "sample x is empty"));
    assert_int_equal(eb_results_mann_whitney(ones, 2, bad, 2, EB_RESULTS_GREATER, &u, &p, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "value 1 of sample y"));
    /* The scratch allocation fails cleanly. */
    eb_alloc_fail_at(1);
    assert_int_equal(eb_results_mann_whitney(tx, 12, ty, 15, EB_RESULTS_GREATER, &u, &p, &err),
                     EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
}

/* The merge-based U and tie term agree with counting every pair, on
 * random samples with many ties (values on a coarse grid). */
static void test_mwu_fast_vs_naive(void **state)
{
    eb_rng r;
    double x[97], y[131], maxerr = 0;
    (void)state;
    eb_rng_seed(&r, 7, EB_STREAM_BOOTSTRAP);
    for (int trial = 0; trial < 20; trial++) {
        size_t nx = 1 + eb_rng_below(&r, 97), ny = 1 + eb_rng_below(&r, 131);
        double grid = trial % 2 ? 0.25 : 1e-6; /* many ties / almost none */
        double u, p, un, tn, pn;
        for (size_t i = 0; i < nx; i++)
            x[i] = floor((eb_rng_normal(&r) + 0.3) / grid) * grid;
        for (size_t j = 0; j < ny; j++)
            y[j] = floor(eb_rng_normal(&r) / grid) * grid;
        for (int alt = EB_RESULTS_GREATER; alt <= EB_RESULTS_TWO_SIDED; alt++) {
            assert_int_equal(eb_results_mann_whitney(x, nx, y, ny, (eb_results_alternative)alt,
                                                     &u, &p, NULL),
                             EB_OK);
            eb_results__mann_whitney_naive(x, nx, y, ny, &un, &tn);
            pn = eb_results__mann_whitney_p(un, nx, ny, tn, (eb_results_alternative)alt);
            maxerr = fmax(maxerr, fabs(u - un));
            maxerr = fmax(maxerr, fabs(p - pn));
            assert_close(u, un, 1e-12);
            assert_close(p, pn, 1e-12);
        }
    }
    print_message("fast vs naive Mann-Whitney: max |error| %.3g\n", maxerr);
}

/* ---- Compare on synthetic runs ------------------------------------------ */

static int64_t new_run(eb_results *db, const char *label)
{
    eb_results_provenance p;
    int64_t id;
    memset(&p, 0, sizeof p);
    p.label = label;
    p.suite = "synthetic";
    p.suite_sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    p.version = "0.1.0";
    p.git_commit = label;
    p.compiler = "cc";
    p.cflags = "-O2";
    p.cpu_model = "test cpu";
    p.cores = 2;
    p.host = "test";
    p.libraries = "{}";
    assert_int_equal(eb_results_run_begin(db, &p, &id, NULL, NULL), EB_OK);
    return id;
}

static eb_results_metric metric(const char *facet, const char *name, double v, double lo,
                                double hi, int hib, const char *unit)
{
    eb_results_metric m;
    memset(&m, 0, sizeof m);
    m.facet = facet;
    m.name = name;
    m.value = v;
    if (!isnan(lo)) {
        m.has_ci = 1;
        m.ci_low = lo;
        m.ci_high = hi;
        m.ci_level = 0.95;
    }
    m.higher_is_better = hib;
    m.unit = unit;
    return m;
}

/* n latency samples around scale seconds with relative noise sd. */
static void samples(double *v, size_t n, double scale, double sd, uint64_t stream)
{
    eb_rng r;
    eb_rng_seed(&r, 11, stream);
    for (size_t i = 0; i < n; i++)
        v[i] = scale * exp(sd * eb_rng_normal(&r));
}

static void add_job(eb_results *db, int64_t run, const char *key, const eb_results_metric *m,
                    size_t nm, const double *lat, size_t nlat)
{
    eb_results_job_def d;
    memset(&d, 0, sizeof d);
    d.key = key;
    d.name = key;
    d.method = "map";
    d.arch = "mlp";
    d.device = "cpu";
    d.draws = 1;
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, m, nm, NULL), EB_OK);
    if (nlat)
        assert_int_equal(eb_results_job_latency(db, "single", lat, nlat, NULL), EB_OK);
    assert_int_equal(eb_results_job_commit(db, 1.0, NULL), EB_OK);
}

static const eb_results_compare_job *find_job(const eb_results_comparison *c, const char *key)
{
    for (size_t i = 0; i < c->n_jobs; i++)
        if (strcmp(c->jobs[i].key, key) == 0)
            return &c->jobs[i];
    fail_msg("job %s not in the comparison", key);
    return NULL;
}

static const eb_results_compare_item *find_item(const eb_results_compare_job *j,
                                                const char *facet, const char *name)
{
    for (size_t i = 0; i < j->n_items; i++)
        if (strcmp(j->items[i].facet, facet) == 0 && strcmp(j->items[i].name, name) == 0)
            return &j->items[i];
    fail_msg("item %s/%s not in job %s", facet, name, j->key);
    return NULL;
}

static eb_results *fresh_db(void)
{
    eb_results *db;
    unlink(DB_PATH);
    unlink(DB_PATH "-wal");
    unlink(DB_PATH "-shm");
    assert_int_equal(eb_results_open(DB_PATH, &db, NULL), EB_OK);
    return db;
}

static void test_latency_verdicts(void **state)
{
    static double base[300], same[300], slow[300], fast[300], tiny[300], tiny_base[300];
    const double few_base[3] = {1.0e-3, 1.3e-3, 0.8e-3}, few_slow[3] = {1.4e-3, 1.5e-3, 1.35e-3};
    eb_results *db = fresh_db();
    eb_results_comparison *c;
    const eb_results_compare_item *it;
    eb_results_metric p50 = metric("latency", "p50", 1e-3, NAN, NAN, 0, "s");
    int64_t b, k;
    (void)state;

    samples(base, 300, 1e-3, 0.10, 1);
    memcpy(same, base, sizeof same);
    samples(slow, 300, 1.2e-3, 0.10, 2); /* 20% slower, independent noise */
    samples(fast, 300, 0.8e-3, 0.10, 3);
    samples(tiny_base, 300, 1e-3, 0.005, 4);
    samples(tiny, 300, 1.02e-3, 0.005, 5); /* significant, but only 2% */

    b = new_run(db, "base");
    k = new_run(db, "cand");
    add_job(db, b, "identical", &p50, 1, base, 300);
    add_job(db, k, "identical", &p50, 1, same, 300);
    add_job(db, b, "shift20", &p50, 1, base, 300);
    add_job(db, k, "shift20", &p50, 1, slow, 300);
    add_job(db, b, "faster", &p50, 1, base, 300);
    add_job(db, k, "faster", &p50, 1, fast, 300);
    add_job(db, b, "small-effect", &p50, 1, tiny_base, 300);
    add_job(db, k, "small-effect", &p50, 1, tiny, 300);
    add_job(db, b, "few", &p50, 1, few_base, 3);
    add_job(db, k, "few", &p50, 1, few_slow, 3);

    assert_int_equal(eb_results_compare(db, b, k, NULL, &c, NULL), EB_OK);
    assert_int_equal(c->n_jobs, 5);

    it = find_item(find_job(c, "identical"), "latency", "samples");
    assert_int_equal(it->rule, EB_RESULTS_RULE_MANN_WHITNEY);
    assert_int_equal(it->verdict, EB_RESULTS_SAME);
    assert_true(it->p_worse > 0.4);
    assert_int_equal(it->base_n, 300);
    assert_close(it->delta, 0, 0);

    it = find_item(find_job(c, "shift20"), "latency", "samples");
    print_message("20%% shift: medians %.4g -> %.4g s, p_worse %.3g\n", it->base, it->cand,
                  it->p_worse);
    assert_int_equal(it->verdict, EB_RESULTS_WORSE);
    assert_true(it->p_worse < 1e-6);
    assert_true(it->rel_delta > 0.1);
    assert_int_equal(find_job(c, "shift20")->verdict, EB_RESULTS_WORSE);
    /* The p50 summary follows the samples' verdict. */
    it = find_item(find_job(c, "shift20"), "latency", "p50");
    assert_int_equal(it->rule, EB_RESULTS_RULE_SAMPLES);
    assert_int_equal(it->verdict, EB_RESULTS_WORSE);

    it = find_item(find_job(c, "faster"), "latency", "samples");
    assert_int_equal(it->verdict, EB_RESULTS_BETTER);
    assert_true(it->p_better < 1e-6);

    /* Significant, but below the 5% minimum effect: same. */
    it = find_item(find_job(c, "small-effect"), "latency", "samples");
    print_message("2%% shift: p_worse %.3g, rel %.3f\n", it->p_worse, it->rel_delta);
    assert_true(it->p_worse < 0.01);
    assert_int_equal(it->verdict, EB_RESULTS_SAME);

    /* A large effect on 3 samples each is not significant at 0.01. */
    it = find_item(find_job(c, "few"), "latency", "samples");
    assert_true(it->p_worse > 0.01);
    assert_true(it->rel_delta > 0.2);
    assert_int_equal(it->verdict, EB_RESULTS_SAME);

    assert_int_equal(c->overall, EB_RESULTS_WORSE);
    assert_int_equal(c->regression, 1);
    assert_int_equal(c->job_counts[EB_RESULTS_WORSE], 1);
    assert_int_equal(c->job_counts[EB_RESULTS_BETTER], 1);
    assert_int_equal(c->job_counts[EB_RESULTS_SAME], 3);
    eb_results_comparison_free(c);

    /* The same run against itself: nothing moves. */
    assert_int_equal(eb_results_compare(db, b, b, NULL, &c, NULL), EB_OK);
    assert_int_equal(c->regression, 0);
    assert_int_equal(c->overall, EB_RESULTS_SAME);
    assert_int_equal(c->job_counts[EB_RESULTS_SAME], 5);
    eb_results_comparison_free(c);
    eb_results_close(db);
}

static void test_quality_verdicts(void **state)
{
    eb_results *db = fresh_db();
    eb_results_comparison *c;
    const eb_results_compare_job *j;
    const eb_results_compare_item *it;
    eb_results_compare_config cfg;
    eb_results_convention conv[2] = {{"ece-v1", "15 bins"}, {"ece-v2", "20 bins"}};
    int64_t b, k;
    (void)state;

    assert_int_equal(eb_results_conventions(db, conv, 2, NULL), EB_OK);
    {
        eb_results_metric bm[10] = {
            metric("quality", "acc_drop", 0.90, 0.89, 0.91, 1, ""),
            metric("quality", "acc_within", 0.90, 0.89, 0.91, 1, ""),
            metric("quality", "acc_tiny", 0.900, 0.8995, 0.9005, 1, ""),
            metric("calibration", "ece", 0.02, 0.018, 0.022, 0, ""),
            metric("quality", "nll", 0.50, 0.48, 0.52, 0, ""),
            metric("memory", "model_bytes", 1000, NAN, NAN, 0, "bytes"),
            metric("memory", "param_bytes", 1000, NAN, NAN, 0, "bytes"),
            metric("memory", "peak_rss", 1000, NAN, NAN, 0, "bytes"),
            metric("training", "from_cache", 0, NAN, NAN, 0, ""),
            metric("calibration", "ece_conv", 0.02, NAN, NAN, 0, ""),
        };
        eb_results_metric cm[10] = {
            metric("quality", "acc_drop", 0.85, 0.84, 0.86, 1, ""),     /* beyond: worse */
            metric("quality", "acc_within", 0.895, 0.885, 0.905, 1, ""), /* overlap: same */
            metric("quality", "acc_tiny", 0.898, 0.8975, 0.8985, 1, ""),  /* apart, < 1%: same */
            metric("calibration", "ece", 0.05, 0.045, 0.055, 0, ""),      /* lower is better: worse */
            metric("quality", "nll", 0.40, 0.38, 0.42, 0, ""),            /* better */
            metric("memory", "model_bytes", 1100, NAN, NAN, 0, "bytes"),  /* +10% > 5%: worse */
            metric("memory", "param_bytes", 1030, NAN, NAN, 0, "bytes"),  /* +3%: same */
            /* a single noisy measurement: +50% is within its noise */
            metric("memory", "peak_rss", 1500, NAN, NAN, 0, "bytes"),
            metric("training", "from_cache", 1, NAN, NAN, 0, ""), /* cached now: no verdict */
            metric("calibration", "ece_conv", 0.02, NAN, NAN, 0, ""),
        };
        bm[9].convention = "ece-v1";
        cm[9].convention = "ece-v2";
        b = new_run(db, "base");
        k = new_run(db, "cand");
        add_job(db, b, "q", bm, 10, NULL, 0);
        add_job(db, k, "q", cm, 10, NULL, 0);
        /* A metric only in the base, one only in the candidate. */
        add_job(db, b, "q2", bm, 1, NULL, 0);
        add_job(db, k, "q2", cm + 1, 1, NULL, 0);
        /* Jobs on one side only, and a candidate that failed. */
        add_job(db, b, "gone", bm, 1, NULL, 0);
        add_job(db, k, "added", cm, 1, NULL, 0);
        add_job(db, b, "breaks", bm, 1, NULL, 0);
    }
    {
        eb_results_job_def d;
        memset(&d, 0, sizeof d);
        d.key = d.name = "breaks";
        d.method = "map";
        d.arch = "mlp";
        d.device = "cpu";
        assert_int_equal(eb_results_job_begin(db, k, &d, NULL, NULL), EB_OK);
        assert_int_equal(eb_results_job_fail(db, "out of memory", 0.5, NULL), EB_OK);
    }

    assert_int_equal(eb_results_compare(db, b, k, NULL, &c, NULL), EB_OK);
    j = find_job(c, "q");
    it = find_item(j, "quality", "acc_drop");
    assert_int_equal(it->rule, EB_RESULTS_RULE_INTERVALS);
    assert_int_equal(it->verdict, EB_RESULTS_WORSE);
    assert_close(it->delta, -0.05, 1e-12);
    assert_close(it->base_ci_low, 0.89, 0);
    assert_close(it->cand_ci_high, 0.86, 0);
    assert_true(isnan(it->p_worse));
    assert_int_equal(find_item(j, "quality", "acc_within")->verdict, EB_RESULTS_SAME);
    assert_int_equal(find_item(j, "quality", "acc_tiny")->verdict, EB_RESULTS_SAME);
    assert_int_equal(find_item(j, "calibration", "ece")->verdict, EB_RESULTS_WORSE);
    assert_int_equal(find_item(j, "quality", "nll")->verdict, EB_RESULTS_BETTER);
    it = find_item(j, "memory", "peak_rss");
    assert_int_equal(it->rule, EB_RESULTS_RULE_SINGLE_TIMING);
    assert_int_equal(it->verdict, EB_RESULTS_SAME);
    it = find_item(j, "training", "from_cache");
    assert_int_equal(it->rule, EB_RESULTS_RULE_INFORMATIONAL);
    assert_int_equal(it->verdict, EB_RESULTS_SAME);
    it = find_item(j, "memory", "model_bytes");
    assert_int_equal(it->rule, EB_RESULTS_RULE_THRESHOLD);
    assert_int_equal(it->verdict, EB_RESULTS_WORSE);
    assert_close(it->rel_delta, 0.1, 1e-12);
    assert_string_equal(it->unit, "bytes");
    assert_int_equal(find_item(j, "memory", "param_bytes")->verdict, EB_RESULTS_SAME);
    assert_int_equal(find_item(j, "calibration", "ece_conv")->verdict,
                     EB_RESULTS_INCOMPARABLE);
    assert_int_equal(j->verdict, EB_RESULTS_WORSE);

    j = find_job(c, "q2");
    assert_int_equal(find_item(j, "quality", "acc_drop")->verdict, EB_RESULTS_MISSING);
    assert_int_equal(find_item(j, "quality", "acc_within")->verdict, EB_RESULTS_NEW);
    assert_int_equal(j->verdict, EB_RESULTS_SAME);

    assert_int_equal(find_job(c, "gone")->verdict, EB_RESULTS_MISSING);
    assert_int_equal(find_job(c, "added")->verdict, EB_RESULTS_NEW);
    j = find_job(c, "breaks");
    assert_int_equal(j->verdict, EB_RESULTS_WORSE);
    assert_string_equal(j->cand_status, "failed");
    assert_string_equal(j->cand_error, "out of memory");
    assert_int_equal(c->regression, 1);
    eb_results_comparison_free(c);

    /* The thresholds are configurable: at 15% the model-bytes change is
     * same; at a 30% noisy threshold the peak RSS change is worse. */
    eb_results_compare_defaults(&cfg);
    cfg.threshold = 0.15;
    cfg.noisy_threshold = 0.3;
    assert_int_equal(eb_results_compare(db, b, k, &cfg, &c, NULL), EB_OK);
    assert_int_equal(find_item(find_job(c, "q"), "memory", "model_bytes")->verdict,
                     EB_RESULTS_SAME);
    assert_int_equal(find_item(find_job(c, "q"), "memory", "peak_rss")->verdict,
                     EB_RESULTS_WORSE);
    assert_close(c->config.threshold, 0.15, 0);
    eb_results_comparison_free(c);
    eb_results_close(db);
}

static void test_missing_and_config(void **state)
{
    eb_results *db = fresh_db();
    eb_results_comparison *c;
    eb_results_compare_config cfg;
    eb_results_metric m = metric("quality", "accuracy", 0.9, NAN, NAN, 1, "");
    eb_error err;
    int64_t b, k;
    long fails = 0;
    (void)state;

    b = new_run(db, "base");
    k = new_run(db, "cand");
    add_job(db, b, "a", &m, 1, NULL, 0);
    add_job(db, b, "b", &m, 1, NULL, 0);
    add_job(db, k, "a", &m, 1, NULL, 0);

    assert_int_equal(eb_results_compare(db, b, k, NULL, &c, NULL), EB_OK);
    assert_int_equal(c->regression, 0);
    assert_int_equal(c->job_counts[EB_RESULTS_MISSING], 1);
    eb_results_comparison_free(c);
    eb_results_compare_defaults(&cfg);
    cfg.missing_regresses = 1;
    assert_int_equal(eb_results_compare(db, b, k, &cfg, &c, NULL), EB_OK);
    assert_int_equal(c->regression, 1);
    eb_results_comparison_free(c);

    cfg.alpha = 0;
    assert_int_equal(eb_results_compare(db, b, k, &cfg, &c, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "alpha"));
    assert_null(c);
    assert_int_equal(eb_results_compare(db, b, 999, NULL, &c, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, "candidate run 999"));

    /* Every allocation of a comparison failing in turn: a clean
     * EB_ERR_NOMEM each time (the sanitizer build checks for leaks). */
    for (long at = 1; at < 1000; at++) {
        eb_status st;
        eb_alloc_fail_at(at);
        st = eb_results_compare(db, b, k, NULL, &c, &err);
        eb_alloc_fail_at(0);
        if (st == EB_OK) {
            eb_results_comparison_free(c);
            break;
        }
        assert_int_equal(st, EB_ERR_NOMEM);
        assert_null(c);
        fails++;
    }
    assert_true(fails > 3);
    eb_results_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mwu_small_with_ties),
        cmocka_unit_test(test_mwu_formula_samples),
        cmocka_unit_test(test_mwu_degenerate),
        cmocka_unit_test(test_mwu_fast_vs_naive),
        cmocka_unit_test(test_latency_verdicts),
        cmocka_unit_test(test_quality_verdicts),
        cmocka_unit_test(test_missing_and_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
