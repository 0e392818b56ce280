/* test_optim.c: optimiser updates against hand-worked values.
 *
 * SGD with momentum mu on grad g: m <- mu m + g; theta <- theta - lr m.
 * Nesterov: theta <- theta - lr (g + mu m). Adam (Kingma & Ba 2015,
 * Algorithm 1): the first step moves each coordinate by lr * g / (|g| +
 * eps') = lr sign(g) for |g| >> eps. Weight decay wd adds wd * theta to g. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "methods/nn/eb_nn.h"

static void test_sgd_momentum_by_hand(void **state)
{
    eb_optim_config c;
    eb_optim o;
    float theta[2] = {1.0f, -2.0f}, g[2];
    (void)state;
    eb_optim_config_default(&c, EB_OPTIM_SGD);
    c.momentum = 0.5f;
    assert_int_equal(eb_optim_init(&o, &c, 2, NULL), EB_OK);
    g[0] = 1.0f; g[1] = 2.0f;
    eb_optim_step(&o, theta, g, 0.1f); /* m = (1, 2): theta = (0.9, -2.2) */
    assert_float_equal(theta[0], 0.9f, 1e-6);
    assert_float_equal(theta[1], -2.2f, 1e-6);
    g[0] = 1.0f; g[1] = 2.0f;
    eb_optim_step(&o, theta, g, 0.1f); /* m = (1.5, 3): theta = (0.75, -2.5) */
    assert_float_equal(theta[0], 0.75f, 1e-6);
    assert_float_equal(theta[1], -2.5f, 1e-6);
    eb_optim_free(&o);

    c.nesterov = 1;
    theta[0] = 1.0f;
    assert_int_equal(eb_optim_init(&o, &c, 1, NULL), EB_OK);
    g[0] = 1.0f;
    eb_optim_step(&o, theta, g, 0.1f); /* m = 1: theta = 1 - 0.1 (1 + 0.5) */
    assert_float_equal(theta[0], 0.85f, 1e-6);
    eb_optim_free(&o);
}

static void test_weight_decay_is_gaussian_prior_gradient(void **state)
{
    eb_optim_config c;
    eb_optim o;
    float theta[1] = {2.0f}, g[1] = {0.0f};
    (void)state;
    eb_optim_config_default(&c, EB_OPTIM_SGD);
    c.momentum = 0.0f;
    c.weight_decay = 0.1f;
    assert_int_equal(eb_optim_init(&o, &c, 1, NULL), EB_OK);
    eb_optim_step(&o, theta, g, 0.5f); /* theta = 2 - 0.5 * 0.1 * 2 */
    assert_float_equal(theta[0], 1.9f, 1e-6);
    eb_optim_free(&o);
}

static void test_adam_first_steps(void **state)
{
    eb_optim_config c;
    eb_optim o;
    float theta[3] = {0.0f, 0.0f, 0.0f}, g[3] = {0.3f, -40.0f, 0.0f};
    (void)state;
    eb_optim_config_default(&c, EB_OPTIM_ADAM);
    assert_int_equal(eb_optim_init(&o, &c, 3, NULL), EB_OK);
    eb_optim_step(&o, theta, g, 0.01f);
    assert_float_equal(theta[0], -0.01f, 1e-7);
    assert_float_equal(theta[1], 0.01f, 1e-7);
    assert_float_equal(theta[2], 0.0f, 0.0);
    /* second step, same gradient: m_hat = g, v_hat = g^2: again lr sign(g) */
    g[0] = 0.3f; g[1] = -40.0f;
    eb_optim_step(&o, theta, g, 0.01f);
    assert_float_equal(theta[0], -0.02f, 1e-7);
    assert_float_equal(theta[1], 0.02f, 1e-7);
    eb_optim_free(&o);
}

/* Inside a mask, Adam with weight decay: kept coordinates move exactly as
 * without a mask; pruned ones (even started non-zero, with a gradient)
 * end at 0 with zero moments, step after step. */
static void test_masked_step(void **state)
{
    eb_optim_config c;
    eb_optim a, b;
    float ta[4] = {0.5f, -0.25f, 1.0f, 2.0f}, tb[4] = {0.5f, -0.25f, 1.0f, 2.0f};
    const uint8_t mask[4] = {1, 0, 1, 0};
    (void)state;
    eb_optim_config_default(&c, EB_OPTIM_ADAM);
    c.weight_decay = 0.1f;
    assert_int_equal(eb_optim_init(&a, &c, 4, NULL), EB_OK);
    assert_int_equal(eb_optim_init(&b, &c, 4, NULL), EB_OK);
    for (int step = 0; step < 3; step++) {
        float ga[4] = {0.3f, -4.0f, 0.7f, 1.5f}, gb[4] = {0.3f, -4.0f, 0.7f, 1.5f};
        eb_optim_begin_step(&a);
        eb_optim_step_masked_range(&a, ta, ga, 0.01f, mask, 0, 2);
        eb_optim_step_masked_range(&a, ta, ga, 0.01f, mask, 2, 4);
        eb_optim_step(&b, tb, gb, 0.01f);
        for (int i = 0; i < 4; i++) {
            if (mask[i]) {
                assert_true(ta[i] == tb[i]);
            } else {
                assert_true(ta[i] == 0.0f && a.m[i] == 0.0f && a.v[i] == 0.0f);
            }
        }
    }
    eb_optim_free(&a);
    eb_optim_free(&b);
    /* a NULL mask is the plain step */
    assert_int_equal(eb_optim_init(&a, &c, 4, NULL), EB_OK);
    assert_int_equal(eb_optim_init(&b, &c, 4, NULL), EB_OK);
    {
        float ga[4] = {0.3f, -4.0f, 0.7f, 1.5f}, gb[4] = {0.3f, -4.0f, 0.7f, 1.5f};
        eb_optim_begin_step(&a);
        eb_optim_step_masked_range(&a, ta, ga, 0.01f, NULL, 0, 4);
        eb_optim_begin_step(&b);
        eb_optim_step_range(&b, tb, gb, 0.01f, 0, 4);
        for (int i = 0; i < 4; i++)
            if (mask[i])
                assert_true(ta[i] == tb[i]);
    }
    eb_optim_free(&a);
    eb_optim_free(&b);
}

/* On f(x) = 0.5 * a * x^2 both optimisers converge to 0. */
static void test_converges_on_quadratic(void **state)
{
    (void)state;
    for (int kind = EB_OPTIM_SGD; kind <= EB_OPTIM_ADAM; kind++) {
        eb_optim_config c;
        eb_optim o;
        float x[1] = {5.0f}, g[1];
        eb_optim_config_default(&c, (eb_optim_kind)kind);
        assert_int_equal(eb_optim_init(&o, &c, 1, NULL), EB_OK);
        for (int t = 0; t < 3000; t++) {
            g[0] = 3.0f * x[0];
            eb_optim_step(&o, x, g, kind == EB_OPTIM_SGD ? 0.05f : 0.05f * (1.0f - t / 3000.0f));
        }
        printf("%s: x after 3000 steps %.3g\n", kind == EB_OPTIM_SGD ? "sgd" : "adam", (double)x[0]);
        assert_true(fabsf(x[0]) < 1e-2f);
        eb_optim_free(&o);
    }
}

static void test_bad_settings(void **state)
{
    eb_optim_config c;
    eb_optim o;
    eb_error err;
    (void)state;
    eb_optim_config_default(&c, EB_OPTIM_SGD);
    c.lr = -1.0f;
    assert_int_equal(eb_optim_init(&o, &c, 4, &err), EB_ERR_ARG);
    eb_optim_config_default(&c, EB_OPTIM_SGD);
    c.momentum = 1.0f;
    assert_int_equal(eb_optim_init(&o, &c, 4, &err), EB_ERR_ARG);
    c.kind = (eb_optim_kind)9;
    assert_int_equal(eb_optim_init(&o, &c, 4, &err), EB_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_momentum_by_hand),
        cmocka_unit_test(test_weight_decay_is_gaussian_prior_gradient),
        cmocka_unit_test(test_adam_first_steps),
        cmocka_unit_test(test_masked_step),
        cmocka_unit_test(test_converges_on_quadratic),
        cmocka_unit_test(test_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
