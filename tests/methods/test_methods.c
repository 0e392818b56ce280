/* test_methods.c: the first methods end to end on a slice of
 * Fashion-MNIST with a small network: training writes bundles that
 * predict, the same seed and thread count give byte-identical bundles,
 * ensemble members differ, MC dropout passes differ but are reproducible,
 * settings are validated, and a bundle whose architecture disagrees with
 * its parameters is refused. */
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
#include "harness/eb_data.h"
#include "methods/eb_bundle.h"
#include "methods/eb_methods.h"
#include "metrics/eb_metrics.h"

static eb_dataset train_full, test_full;
static eb_dataset train, test; /* views of the first images */
static eb_arch small;
static char dir[512];

static int setup(void **state)
{
    eb_data_config cfg;
    eb_error err;
    (void)state;
    if (eb_data_config_default(&cfg, &err) ||
        eb_dataset_load("fashion-mnist", "train", &cfg, &train_full, &err) ||
        eb_dataset_load("fashion-mnist", "test", &cfg, &test_full, &err)) {
        fprintf(stderr, "cannot load Fashion-MNIST: %s\n", err.msg);
        return -1;
    }
    train = train_full;
    train.n = 3000;
    test = test_full;
    test.n = 1000;
    if (eb_arch_parse("input 28x28x1; flatten; dense 32; relu; dense 10", &small, &err))
        return -1;
    snprintf(dir, sizeof dir, "%s/methods_%d", EB_TEST_BINARY_DIR, (int)getpid());
    return eb_mkdirs(dir, &err) == EB_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    eb_dataset_free(&train_full);
    eb_dataset_free(&test_full);
    return 0;
}

static int train_threads = 1;

static void train_to(const char *method, uint64_t seed, const char *sets, const char *path)
{
    const eb_method *m = eb_method_find(method);
    eb_settings s;
    eb_train_request req;
    eb_error err;

    assert_non_null(m);
    assert_int_equal(eb_method_settings(m, "custom", &s, &err), EB_OK);
    assert_int_equal(eb_settings_set(&s, "epochs", "3", &err), EB_OK);
    assert_int_equal(eb_settings_set(&s, "lr", "0.003", &err), EB_OK);
    assert_int_equal(eb_settings_assign_list(&s, sets, &err), EB_OK);
    memset(&req, 0, sizeof req);
    req.arch = &small;
    req.arch_name = "custom";
    req.train = &train;
    req.settings = &s;
    req.seed = seed;
    req.threads = train_threads;
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

/* accuracy of the bundle's predictive on the test slice */
static double evaluate(const char *path, uint32_t S, uint64_t seed, float **probs_out)
{
    eb_bundle *b;
    eb_posterior p;
    eb_error err;
    float *probs, *pbar;
    double acc;
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &p, &err), EB_OK);
    if (!S)
        S = eb_posterior_default_draws(&p);
    probs = malloc(test.n * S * 10 * sizeof *probs);
    pbar = malloc(test.n * 10 * sizeof *pbar);
    assert_int_equal(eb_posterior_predict(&p, test.x, test.n, S, seed, 100, probs, &err), EB_OK);
    eb_metric_predictive(pbar, probs, test.n, S, 10);
    acc = eb_metric_accuracy(pbar, test.y, test.n, 10);
    eb_posterior_release(&p);
    eb_bundle_close(b);
    free(pbar);
    if (probs_out)
        *probs_out = probs;
    else
        free(probs);
    return acc;
}

static void test_map_is_reproducible(void **state)
{
    char a[600], b[600], c[600];
    double acc;
    (void)state;
    snprintf(a, sizeof a, "%s/map-a.ebb", dir);
    snprintf(b, sizeof b, "%s/map-b.ebb", dir);
    snprintf(c, sizeof c, "%s/map-c.ebb", dir);
    train_to("map", 11, "", a);
    train_to("map", 11, "", b);
    train_to("map", 12, "", c);
    assert_true(same_file(a, b));
    assert_false(same_file(a, c));
    acc = evaluate(a, 0, 1, NULL);
    printf("map on 3000 images, 3 epochs: test accuracy %.3f\n", acc);
    assert_true(acc > 0.65);
}

/* Two worker threads split each batch; the same count gives the same
 * bytes, and the model learns as well as with one. */
static void test_two_threads_are_reproducible(void **state)
{
    char a[600], b[600];
    double acc;
    (void)state;
    snprintf(a, sizeof a, "%s/map-t2a.ebb", dir);
    snprintf(b, sizeof b, "%s/map-t2b.ebb", dir);
    train_threads = 2;
    train_to("dropout", 11, "", a);
    train_to("dropout", 11, "", b);
    train_threads = 1;
    assert_true(same_file(a, b));
    acc = evaluate(a, 0, 1, NULL);
    printf("dropout with 2 threads: test accuracy %.3f\n", acc);
    assert_true(acc > 0.65);
}

static void test_ensemble_members_differ(void **state)
{
    char path[600];
    eb_bundle *b;
    eb_error err;
    float *probs;
    double acc, disagreement = 0.0;
    (void)state;
    snprintf(path, sizeof path, "%s/ensemble.ebb", dir);
    train_to("ensemble", 3, "samples=3", path);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_int_equal(eb_bundle_repr(b), EB_REPR_SAMPLES);
    assert_int_equal(eb_bundle_members(b), 3);
    assert_string_equal(eb_bundle_meta_get(b, "method"), "ensemble");
    assert_string_equal(eb_bundle_meta_get(b, "hp.samples"), "3");
    {
        const float *p = eb_bundle_params(b);
        size_t K = small.n_params;
        assert_true(memcmp(p, p + K, K * sizeof *p) != 0);
        assert_true(memcmp(p + K, p + 2 * K, K * sizeof *p) != 0);
    }
    eb_bundle_close(b);
    acc = evaluate(path, 0, 1, &probs);
    for (size_t i = 0; i < test.n; i++)
        for (int c = 0; c < 10; c++)
            disagreement += fabs(probs[(i * 3 + 0) * 10 + c] - probs[(i * 3 + 1) * 10 + c]);
    printf("ensemble of 3: accuracy %.3f, mean L1 between members %.3f\n", acc,
           disagreement / test.n);
    assert_true(acc > 0.65);
    assert_true(disagreement / test.n > 0.01);
    free(probs);
}

static void test_dropout_passes(void **state)
{
    char path[600];
    eb_bundle *b;
    eb_error err;
    eb_posterior p;
    float *p1, *p2;
    double acc;
    (void)state;
    snprintf(path, sizeof path, "%s/dropout.ebb", dir);
    train_to("dropout", 5, "samples=4 rate=0.3", path);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_int_equal(eb_bundle_repr(b), EB_REPR_DROPOUT);
    assert_int_equal(eb_posterior_from_bundle(b, &p, &err), EB_OK);
    assert_true(eb_arch_has_dropout(&p.arch));
    assert_int_equal(eb_posterior_default_draws(&p), 4);
    eb_posterior_release(&p);
    eb_bundle_close(b);
    acc = evaluate(path, 4, 9, &p1);
    evaluate(path, 4, 9, &p2);
    assert_memory_equal(p1, p2, test.n * 4 * 10 * sizeof *p1); /* same seed, same draws */
    assert_true(memcmp(p1, p1 + 10, 10 * sizeof *p1) != 0);    /* passes differ */
    free(p2);
    evaluate(path, 4, 10, &p2);
    assert_true(memcmp(p1, p2, test.n * 4 * 10 * sizeof *p1) != 0); /* seed matters */
    printf("MC dropout, 4 passes: accuracy %.3f\n", acc);
    assert_true(acc > 0.65);
    free(p1);
    free(p2);
}

static void test_settings_are_validated(void **state)
{
    const eb_method *m = eb_method_find("ensemble");
    eb_settings s;
    eb_error err;
    (void)state;
    assert_null(eb_method_find("sgld-typo"));
    assert_int_equal(eb_method_settings(m, "cnn", &s, &err), EB_OK);
    assert_int_equal(eb_settings_int(&s, "epochs"), 12); /* the cnn override */
    assert_int_equal(eb_method_settings(m, "mlp", &s, &err), EB_OK);
    assert_int_equal(eb_settings_int(&s, "epochs"), 30);
    assert_int_equal(eb_settings_assign(&s, "lr=0.01", &err), EB_OK);
    assert_float_equal(eb_settings_float(&s, "lr"), 0.01, 1e-12);
    assert_int_equal(eb_settings_assign(&s, "colour=blue", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown setting 'colour'"));
    assert_non_null(strstr(err.msg, "weight_decay"));
    assert_int_equal(eb_settings_assign(&s, "epochs=0", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "'epochs'"));
    assert_int_equal(eb_settings_assign(&s, "epochs=3.5", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_assign(&s, "lr=fast", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_assign(&s, "lr=nan", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_assign(&s, "optimizer=rmsprop", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "adam|sgd"));
    assert_int_equal(eb_settings_assign(&s, "noequals", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_assign(&s, "=3", &err), EB_ERR_ARG);
    /* a list: in order, extra spaces skipped, stops at the first failure */
    assert_int_equal(eb_settings_assign_list(&s, "  lr=0.02 epochs=4  lr=0.03 ", &err), EB_OK);
    assert_float_equal(eb_settings_float(&s, "lr"), 0.03, 1e-12);
    assert_int_equal(eb_settings_int(&s, "epochs"), 4);
    assert_int_equal(eb_settings_assign_list(&s, "epochs=5 colour=red epochs=6", &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown setting 'colour'"));
    assert_int_equal(eb_settings_int(&s, "epochs"), 5);
    assert_int_equal(eb_settings_assign_list(&s, "", &err), EB_OK);
}

static void test_mismatched_bundle_is_refused(void **state)
{
    eb_bundle_writer *w;
    eb_bundle *b;
    eb_posterior p;
    eb_error err;
    char path[600];
    float theta[7] = {0};
    (void)state;
    snprintf(path, sizeof path, "%s/mismatch.ebb", dir);
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x1x2; dense 2", &err), EB_OK); /* K = 6 */
    assert_int_equal(eb_bundle_writer_samples(w, 1, 7, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &p, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "7 parameters per member"));
    eb_posterior_release(&p);
    eb_bundle_close(b);

    /* an architecture text that does not parse */
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x1x2; warp 9", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 1, 7, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &p, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "unknown layer 'warp'"));
    eb_posterior_release(&p);
    eb_bundle_close(b);
}

static void test_training_data_must_fit(void **state)
{
    eb_arch wrong;
    eb_sgd_config cfg;
    eb_error err;
    float theta[64];
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    eb_optim_config_default(&cfg.optim, EB_OPTIM_SGD);
    cfg.epochs = 1;
    cfg.batch = 8;
    cfg.schedule = EB_SCHEDULE_CONSTANT;
    assert_int_equal(eb_arch_parse("input 2x2x1; flatten; dense 10", &wrong, &err), EB_OK);
    assert_int_equal(eb_sgd_train(&wrong, &train, &cfg, 1, 0, theta, "x", NULL, NULL, NULL, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "does not fit"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_is_reproducible),
        cmocka_unit_test(test_two_threads_are_reproducible),
        cmocka_unit_test(test_ensemble_members_differ),
        cmocka_unit_test(test_dropout_passes),
        cmocka_unit_test(test_settings_are_validated),
        cmocka_unit_test(test_mismatched_bundle_is_refused),
        cmocka_unit_test(test_training_data_must_fit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
