/* test_strategy.c: the registry of execution strategies
 * (devices/strategy.c) and `stacked` for f32 samples posteriors
 * (devices/strategy_stacked.c), held to `loop` (eb_predictor_run, the
 * reference): the same member probabilities within 1e-5 absolute (the
 * two sum the same products in a different order: OpenBLAS against
 * eb_kern_dense_gemv's sixteen lanes), the same bytes for one thread and
 * two and for a batch split into pieces, on mlp and cnn architectures
 * with batches of 1, 3 and 20 (the GEMV path, and the sgemm path in
 * chunks with a tail). Through the device: the strategy option, what
 * describe() reports, and the model bytes counting the strategy's
 * workspace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/eb_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/eb_device.h"
#include "devices/strategy.h"
#include "methods/eb_methods.h"
#include "methods/nn/eb_nn.h"

#define MLP "input 6x6x1; flatten; dense 20; relu; dense 17; relu; dense 5"
#define CNN "input 9x9x2; conv2d 4; relu; maxpool; flatten; dense 7; relu; dense 3"
#define TOL 1e-5

/* A samples posterior of S members with random (He) weights, owned by
 * the caller (free p->params). */
static void make_samples(eb_posterior *p, const char *arch_text, uint32_t S, uint64_t seed)
{
    eb_error err;
    eb_rng r;
    float *theta;
    memset(p, 0, sizeof *p);
    assert_int_equal(eb_arch_parse(arch_text, &p->arch, &err), EB_OK);
    p->repr = EB_REPR_SAMPLES;
    p->members = S;
    p->k = p->arch.n_params;
    p->storage = EB_STORE_F32;
    theta = malloc((size_t)S * p->k * sizeof *theta);
    assert_non_null(theta);
    eb_rng_seed(&r, seed, 0);
    for (uint32_t s = 0; s < S; s++)
        eb_arch_init_params(&p->arch, theta + (size_t)s * p->k, &r);
    p->params = theta;
}

static void test_registry(void **state)
{
    const char *const *names = eb_strategy_names();
    const eb_strategy_ops *ops;
    eb_posterior p, d;
    eb_error err;
    int has_loop = 0, has_stacked = 0;
    (void)state;
    assert_string_equal(names[0], "auto");
    for (size_t i = 0; names[i]; i++) {
        has_loop |= !strcmp(names[i], "loop");
        has_stacked |= !strcmp(names[i], "stacked");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(names[i], names[j]); /* each once */
    }
    assert_true(has_loop && has_stacked);
    /* the last entry is loop, which runs anything */
    {
        size_t n = 0;
        while (eb_strategies[n])
            n++;
        assert_ptr_equal(eb_strategies[n - 1], &eb_strategy_loop);
    }

    make_samples(&p, MLP, 3, 1);
    assert_int_equal(eb_strategy_pick("auto", &p, &ops, &err), EB_OK);
    assert_string_equal(ops->name, "stacked");
    assert_int_equal(eb_strategy_pick(NULL, &p, &ops, &err), EB_OK);
    assert_string_equal(ops->name, "stacked");
    assert_int_equal(eb_strategy_pick("loop", &p, &ops, &err), EB_OK);
    assert_ptr_equal(ops, &eb_strategy_loop);
    assert_int_equal(eb_strategy_pick("warp", &p, &ops, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown strategy 'warp'"));
    assert_non_null(strstr(err.msg, "stacked"));
    assert_null(ops);

    /* a dropout posterior: f32 stacked refuses it, naming why; auto
     * picks an entry that reproduces loop's draws */
    d = p;
    d.repr = EB_REPR_DROPOUT;
    d.members = 4;
    assert_int_equal(eb_strategy_pick("auto", &d, &ops, &err), EB_OK);
    assert_true(ops->reproduces_loop);
    assert_int_equal(ops->supports(&d, NULL), EB_OK);
    assert_int_equal(eb_strategy_pick("stacked", &d, &ops, &err), EB_ERR_UNSUPPORTED);
    printf("stacked on dropout: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "dropout"));
    free((void *)p.params);
}

/* stacked against loop on one posterior for n inputs and S draws; the
 * same bytes with 1 and 2 threads and with the batch in two pieces. */
static void check_stacked(const char *arch_text, uint32_t S, size_t n)
{
    eb_posterior p;
    eb_strategy_run loop, st;
    eb_error err;
    float *x, *want, *got1, *got2, *pieces;
    double worst = 0.0;
    size_t CC, in;
    make_samples(&p, arch_text, S, 7 + n);
    CC = (size_t)p.arch.n_classes;
    in = p.arch.in_size;
    x = eb_test_uniform_inputs(n, in, 11 + S);
    want = malloc(n * S * CC * sizeof *want);
    got1 = malloc(n * S * CC * sizeof *got1);
    got2 = malloc(n * S * CC * sizeof *got2);
    pieces = malloc(n * S * CC * sizeof *pieces);
    assert_int_equal(eb_strategy_open("loop", &p, 8, S, &loop, &err), EB_OK);
    assert_int_equal(eb_strategy_open("stacked", &p, 8, S, &st, &err), EB_OK);
    assert_string_equal(st.ops->name, "stacked");
    assert_int_equal(loop.ops->run(loop.state, x, n, S, 5, 0, 1, want, &err), EB_OK);
    assert_int_equal(st.ops->run(st.state, x, n, S, 5, 0, 1, got1, &err), EB_OK);
    assert_int_equal(st.ops->run(st.state, x, n, S, 5, 0, 2, got2, &err), EB_OK);
    for (size_t i = 0; i < n * S * CC; i++) {
        double e = fabs((double)got1[i] - want[i]);
        if (e > worst)
            worst = e;
    }
    printf("stacked vs loop, %.30s... S=%u n=%zu: max abs diff %.3g (tol %g)\n", arch_text, S,
           n, worst, TOL);
    assert_true(worst <= TOL);
    assert_memory_equal(got1, got2, n * S * CC * sizeof *got1);
    if (n > 1) {
        size_t h = n / 2;
        assert_int_equal(st.ops->run(st.state, x, h, S, 5, 0, 2, pieces, &err), EB_OK);
        assert_int_equal(st.ops->run(st.state, x + h * in, n - h, S, 5, h, 1,
                                     pieces + h * S * CC, &err), EB_OK);
        assert_memory_equal(got1, pieces, n * S * CC * sizeof *got1);
    }
    /* fewer draws: the first S' members */
    if (S > 1) {
        assert_int_equal(st.ops->run(st.state, x, 1, 1, 5, 0, 2, pieces, &err), EB_OK);
        assert_memory_equal(pieces, got1, CC * sizeof *got1);
    }
    /* out of range */
    assert_int_equal(st.ops->run(st.state, x, 1, S + 1, 5, 0, 1, pieces, &err), EB_ERR_ARG);
    assert_int_equal(st.ops->run(st.state, x, 1, 0, 5, 0, 1, pieces, &err), EB_ERR_ARG);
    assert_true(st.ops->bytes(st.state) > 0);
    eb_strategy_close(&loop);
    eb_strategy_close(&st);
    free(x);
    free(want);
    free(got1);
    free(got2);
    free(pieces);
    free((void *)p.params);
}

static void test_stacked_mlp(void **state)
{
    (void)state;
    check_stacked(MLP, 1, 1);
    check_stacked(MLP, 5, 1);
    check_stacked(MLP, 5, 3);
    check_stacked(MLP, 7, 20); /* sgemm path, chunk with a tail */
}

static void test_stacked_cnn(void **state)
{
    (void)state;
    check_stacked(CNN, 1, 1);
    check_stacked(CNN, 3, 1);
    check_stacked(CNN, 5, 20);
}

/* Through the device: strategy=stacked runs, describe() names it, the
 * model bytes count its workspace, and a strategy that cannot run the
 * bundle fails the load naming the file. */
static void test_device_option(void **state)
{
    eb_posterior p;
    eb_bundle_writer *w;
    eb_device_config cfg;
    eb_device *dev, *ref;
    eb_device_info info;
    eb_error err;
    char path[512];
    float *x, *a, *b;
    const eb_device_model *m, *mref;
    (void)state;
    make_samples(&p, MLP, 4, 3);
    snprintf(path, sizeof path, "%s/devices_strategy.ebb", EB_TEST_BINARY_DIR);
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, MLP, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 4, p.k, p.params, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "test", &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);

    eb_device_config_default(&cfg);
    cfg.max_batch = 8;
    snprintf(cfg.options, sizeof cfg.options, "strategy=stacked");
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_OK);
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_string_equal(info.strategy, "stacked"); /* as asked, before a load */
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    snprintf(cfg.options, sizeof cfg.options, "strategy=loop");
    assert_int_equal(eb_device_open("cpu", &cfg, &ref, &err), EB_OK);
    assert_int_equal(eb_device_load(ref, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_string_equal(info.strategy, "stacked");
    assert_int_equal(eb_device_describe(ref, &info, &err), EB_OK);
    assert_string_equal(info.strategy, "loop");
    m = eb_device_model_info(dev);
    mref = eb_device_model_info(ref);
    assert_true(m->workspace_bytes > mref->workspace_bytes);
    assert_int_equal(m->param_bytes, mref->param_bytes);
    x = eb_test_uniform_inputs(3, p.arch.in_size, 1);
    a = malloc(3 * 4 * 5 * sizeof *a);
    b = malloc(3 * 4 * 5 * sizeof *b);
    assert_int_equal(eb_device_predict(dev, x, 3, 0, 1, 0, a, &err), EB_OK);
    assert_int_equal(eb_device_predict(ref, x, 3, 0, 1, 0, b, &err), EB_OK);
    for (size_t i = 0; i < 3 * 4 * 5; i++)
        assert_true(fabs((double)a[i] - b[i]) <= TOL);
    eb_device_close(ref);
    eb_device_close(dev);

    /* auto on a samples bundle resolves to stacked */
    snprintf(cfg.options, sizeof cfg.options, "strategy=auto");
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_OK);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_string_equal(info.strategy, "stacked");
    eb_device_close(dev);
    free(x);
    free(a);
    free(b);
    free((void *)p.params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_stacked_mlp),
        cmocka_unit_test(test_stacked_cnn),
        cmocka_unit_test(test_device_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
