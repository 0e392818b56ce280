/* test_strategy_prefix.c: the `prefix` execution strategy
 * (devices/strategy_prefix.c) for MC dropout posteriors: the layers before
 * the first dropout once per input, the S passes stacked as rows after
 * it, with loop's own masks. So its probabilities equal loop's
 * (eb_predictor_run) up to rounding: held to 1e-5 absolute on every
 * probability, the largest difference printed, over small mlp and cnn
 * architectures made by eb_arch_with_dropout (and one with dropout right
 * after the input, and one with a rate-0 dropout before the first real
 * one), several S (1, 7, 40, 100), batch sizes, first_example offsets and
 * seeds. Also: the same bytes for 1 and 2 threads and for a batch split
 * into pieces; supports() refusals and auto choosing it. */
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

#include "devices/strategy.h"
#include "methods/eb_methods.h"
#include "methods/nn/eb_nn.h"

#define TOL 1e-5

/* A dropout posterior in memory: base (or, with rate 0, arch_text as
 * given) plus dropout at `rate` after every hidden ReLU, random weights
 * with nonzero biases. The caller frees *theta. */
static void make_dropout(eb_posterior *p, const char *arch_text, float rate, uint64_t seed,
                         float **theta)
{
    eb_arch base;
    eb_error err;
    eb_rng r;
    memset(p, 0, sizeof *p);
    if (eb_arch_parse(arch_text, &base, &err) != EB_OK)
        fail_msg("arch: %s", err.msg);
    if (rate > 0.0f)
        assert_int_equal(eb_arch_with_dropout(&base, rate, &p->arch, &err), EB_OK);
    else
        p->arch = base;
    p->repr = EB_REPR_DROPOUT;
    p->members = 10;
    p->k = p->arch.n_params;
    p->storage = EB_STORE_F32;
    *theta = malloc(p->k * sizeof **theta);
    assert_non_null(*theta);
    eb_rng_seed(&r, seed, 0);
    eb_arch_init_params(&p->arch, *theta, &r);
    for (size_t k = 0; k < p->k; k++)
        (*theta)[k] += 0.05f * (eb_rng_uniformf(&r) - 0.5f);
    p->params = *theta;
}

static void run_prefix(void *st, const float *x, size_t n, uint32_t S, uint64_t seed,
                       uint64_t first, int threads, float *probs)
{
    eb_error err;
    if (eb_strategy_prefix.run(st, x, n, S, seed, first, threads, probs, &err) != EB_OK)
        fail_msg("prefix run: %s", err.msg);
}

/* ---- supports ------------------------------------------------------------ */

static void test_supports(void **state)
{
    eb_posterior p;
    const eb_strategy_ops *ops;
    float *theta;
    eb_error err;
    (void)state;
    make_dropout(&p, "input 4x4x1; flatten; dense 8; relu; dense 3", 0.3f, 1, &theta);
    assert_int_equal(eb_strategy_prefix.reproduces_loop, 1);
    assert_int_equal(eb_strategy_prefix.supports(&p, &err), EB_OK);
    /* auto takes it: it draws what loop draws */
    assert_int_equal(eb_strategy_pick("auto", &p, &ops, &err), EB_OK);
    assert_ptr_equal(ops, &eb_strategy_prefix);
    assert_int_equal(eb_strategy_pick("prefix", &p, &ops, &err), EB_OK);
    assert_ptr_equal(ops, &eb_strategy_prefix);

    p.repr = EB_REPR_SAMPLES;
    assert_int_equal(eb_strategy_prefix.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "dropout posteriors"));
    p.repr = EB_REPR_GAUSSIAN;
    assert_int_equal(eb_strategy_prefix.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_int_equal(eb_strategy_pick("prefix", &p, &ops, &err), EB_ERR_UNSUPPORTED);
    p.repr = EB_REPR_DROPOUT;
    p.params = NULL;
    assert_int_equal(eb_strategy_prefix.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "f32"));
    p.params = theta;
    /* only rate-0 dropouts: nothing to stack */
    assert_int_equal(eb_arch_parse("input 4x4x1; flatten; dense 8; relu; dropout 0; dense 3",
                                   &p.arch, &err), EB_OK);
    assert_int_equal(eb_strategy_prefix.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "rate above 0"));
    printf("refusal: %s\n", err.msg);
    free(theta);
}

/* ---- against loop ---------------------------------------------------------- */

static void check_against_loop(const char *arch_text, float rate)
{
    static const uint32_t draws[] = {1, 7, 40, 100};
    static const int batches[] = {1, 5, 16};
    static const uint64_t firsts[] = {0, 1000};
    static const uint64_t seeds[] = {3, 99};
    const size_t n = 11;
    eb_posterior p;
    float *theta, *x;
    size_t C;
    double worst = 0.0;
    eb_error err;
    make_dropout(&p, arch_text, rate, 5, &theta);
    C = (size_t)p.arch.n_classes;
    x = eb_test_uniform_inputs(n, p.arch.in_size, 6);
    for (size_t d = 0; d < sizeof draws / sizeof draws[0]; d++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            const uint32_t S = draws[d];
            const size_t len = n * S * C;
            float *want = malloc(len * sizeof *want), *got = malloc(len * sizeof *got);
            float *two = malloc(len * sizeof *two);
            eb_predictor *pr;
            void *st;
            assert_true(want && got && two);
            assert_int_equal(eb_predictor_new(&p, batches[b], S, &pr, &err), EB_OK);
            assert_int_equal(eb_strategy_prefix.create(&p, batches[b], S, &st, &err), EB_OK);
            for (size_t f = 0; f < 2; f++)
                for (size_t sd = 0; sd < 2; sd++) {
                    assert_int_equal(eb_predictor_run(pr, x, n, S, seeds[sd], firsts[f], want,
                                                      &err), EB_OK);
                    run_prefix(st, x, n, S, seeds[sd], firsts[f], 1, got);
                    run_prefix(st, x, n, S, seeds[sd], firsts[f], 2, two);
                    assert_memory_equal(got, two, len * sizeof *got);
                    for (size_t k = 0; k < len; k++) {
                        const double e = fabs((double)got[k] - want[k]);
                        if (e > worst)
                            worst = e;
                        if (e > TOL)
                            fail_msg("%s S=%u batch %d first %llu seed %llu: probability %zu "
                                     "is %.7f, loop's %.7f", arch_text, S, batches[b],
                                     (unsigned long long)firsts[f],
                                     (unsigned long long)seeds[sd], k, got[k], want[k]);
                    }
                }
            eb_predictor_free(pr);
            eb_strategy_prefix.destroy(st);
            free(want);
            free(got);
            free(two);
        }
    printf("%s (dropout %.2f): prefix equals loop within %.1e (largest difference %.3g) over "
           "S 1..100, batches 1/5/16, two offsets and seeds; threads 1 and 2 the same bytes\n",
           arch_text, (double)rate, TOL, worst);
    free(theta);
    free(x);
}

static void test_mlp(void **state)
{
    (void)state;
    check_against_loop("input 8x8x1; flatten; dense 32; relu; dense 16; relu; dense 5", 0.3f);
}

static void test_cnn(void **state)
{
    (void)state;
    check_against_loop("input 12x12x2; conv2d 4; relu; maxpool; conv2d 6; relu; maxpool; "
                       "flatten; dense 16; relu; dense 4", 0.25f);
    /* channel counts that take the direct kernel on AVX-512, before the
     * first dropout (one input at a time) and after it (a block of passes) */
    check_against_loop("input 10x10x1; conv2d 16; relu; maxpool; conv2d 32; relu; flatten; "
                       "dense 8; relu; dense 3", 0.25f);
}

static void test_dropout_first(void **state)
{
    (void)state;
    /* nothing before the first dropout; a rate-0 dropout before a real one */
    check_against_loop("input 6x6x1; flatten; dropout 0.2; dense 8; relu; dropout 0.5; dense 3",
                       0.0f);
    check_against_loop("input 6x6x1; flatten; dense 8; relu; dropout 0; dense 8; relu; "
                       "dropout 0.4; dense 3", 0.0f);
}

/* ---- batch split ------------------------------------------------------------ */

static void test_same_bytes_split(void **state)
{
    eb_posterior p;
    float *theta, *x, *whole, *piece;
    const size_t n = 7, C = 10;
    const uint32_t S = 50;
    void *big, *small;
    eb_error err;
    (void)state;
    make_dropout(&p, "input 28x28x1; flatten; dense 64; relu; dense 32; relu; dense 10", 0.2f, 9,
                 &theta);
    x = eb_test_uniform_inputs(n, p.arch.in_size, 10);
    whole = malloc(n * S * C * sizeof *whole);
    piece = malloc(n * S * C * sizeof *piece);
    assert_true(whole && piece);
    assert_int_equal(eb_strategy_prefix.create(&p, 8, S, &big, &err), EB_OK);
    assert_int_equal(eb_strategy_prefix.create(&p, 2, S, &small, &err), EB_OK);
    run_prefix(big, x, n, S, 4, 20, 2, whole);
    run_prefix(small, x, 3, S, 4, 20, 1, piece);
    run_prefix(small, x + 3 * p.arch.in_size, 1, S, 4, 23, 2, piece + 3 * S * C);
    run_prefix(small, x + 4 * p.arch.in_size, 3, S, 4, 24, 2, piece + 4 * S * C);
    assert_memory_equal(whole, piece, n * S * C * sizeof *whole);
    assert_int_equal(eb_strategy_prefix.run(big, x, 1, S + 1, 4, 0, 1, piece, &err), EB_ERR_ARG);
    assert_true(eb_strategy_prefix.bytes(big) > 0);
    printf("S = %u: the batch in pieces gives the same bytes\n", S);
    eb_strategy_prefix.destroy(big);
    eb_strategy_prefix.destroy(small);
    free(theta);
    free(x);
    free(whole);
    free(piece);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supports),
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_dropout_first),
        cmocka_unit_test(test_same_bytes_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
