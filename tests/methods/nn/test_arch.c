/* test_arch.c: architecture parsing, shape resolution, parameter counts
 * (the reference counts equal PyTorch's for the same layers: 269,322 for
 * the MLP and 225,034 for the CNN), text round trips, the dropout variant,
 * initialisation scale, and every malformed spec's message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/nn/eb_nn.h"

static void test_reference_architectures(void **state)
{
    eb_arch a;
    eb_error err;
    (void)state;
    assert_int_equal(eb_arch_named("mlp", &a, &err), EB_OK);
    assert_int_equal(a.n_params, 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
    assert_int_equal(a.n_params, 269322);
    assert_int_equal(a.n_classes, 10);
    assert_int_equal(a.in_size, 784);
    assert_int_equal(eb_arch_named("cnn", &a, &err), EB_OK);
    assert_int_equal(a.n_params, 225034);
    /* conv 28->26, pool 13, conv 11, pool 5: flatten gives 5*5*64 = 1600 */
    assert_int_equal(a.layers[6].out_size, 1600);
    assert_int_equal(a.layers[7].param_offset, 320 + 18496);
    assert_int_equal(a.max_act, 26 * 26 * 32);
    assert_int_equal(eb_arch_named("resnet", &a, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "resnet"));
}

static void test_format_round_trip(void **state)
{
    const char *names[] = {"mlp", "cnn"};
    (void)state;
    for (int i = 0; i < 2; i++) {
        eb_arch a, b, d;
        eb_error err;
        char text[EB_ARCH_TEXT_MAX];
        assert_int_equal(eb_arch_named(names[i], &a, &err), EB_OK);
        assert_int_equal(eb_arch_format(&a, text, sizeof text, &err), EB_OK);
        assert_int_equal(eb_arch_parse(text, &b, &err), EB_OK);
        assert_memory_equal(&a, &b, sizeof a);
        assert_int_equal(eb_arch_with_dropout(&a, 0.25f, &d, &err), EB_OK);
        assert_true(eb_arch_has_dropout(&d));
        assert_false(eb_arch_has_dropout(&a));
        assert_int_equal(d.n_params, a.n_params);
        assert_int_equal(eb_arch_format(&d, text, sizeof text, &err), EB_OK);
        assert_int_equal(eb_arch_parse(text, &b, &err), EB_OK);
        assert_memory_equal(&d, &b, sizeof d);
        assert_int_equal(eb_arch_format(&a, text, 10, &err), EB_ERR_ARG);
    }
}

static void test_dropout_placement(void **state)
{
    eb_arch a, d;
    eb_error err;
    char text[EB_ARCH_TEXT_MAX];
    (void)state;
    assert_int_equal(eb_arch_named("mlp", &a, &err), EB_OK);
    assert_int_equal(eb_arch_with_dropout(&a, 0.5f, &d, &err), EB_OK);
    assert_int_equal(eb_arch_format(&d, text, sizeof text, &err), EB_OK);
    assert_string_equal(text, "input 28x28x1\nflatten\ndense 256\nrelu\ndropout 0.5\ndense 256\n"
                              "relu\ndropout 0.5\ndense 10\n");
    assert_int_equal(eb_arch_named("cnn", &a, &err), EB_OK);
    assert_int_equal(eb_arch_with_dropout(&a, 0.5f, &d, &err), EB_OK);
    assert_int_equal(eb_arch_format(&d, text, sizeof text, &err), EB_OK);
    assert_string_equal(text, "input 28x28x1\nconv2d 32\nrelu\nmaxpool\ndropout 0.5\nconv2d 64\n"
                              "relu\nmaxpool\ndropout 0.5\nflatten\ndense 128\nrelu\ndropout 0.5\n"
                              "dense 10\n");
    assert_int_equal(eb_arch_with_dropout(&a, 1.0f, &d, &err), EB_ERR_ARG);
}

static void test_parse_comments_and_separators(void **state)
{
    eb_arch a;
    eb_error err;
    (void)state;
    assert_int_equal(eb_arch_parse("# tiny\ninput 2x2x1 # pixels\n\nflatten;dense 3 ;  relu;"
                                   "dense 2\n",
                                   &a, &err),
                     EB_OK);
    assert_int_equal(a.n_layers, 4);
    assert_int_equal(a.n_params, 4 * 3 + 3 + 3 * 2 + 2);
}

static void test_malformed_specs(void **state)
{
    static const struct {
        const char *text;
        const char *msg;
    } cases[] = {
        {"", "no 'input"},
        {"dense 10", "first item must be 'input"},
        {"input 28x28; flatten; dense 10", "'input' needs a shape"},
        {"input 28x28x1x; flatten; dense 10", "'input' needs a shape"},
        {"input 0x28x1; flatten; dense 10", "input shape 0x28x1"},
        {"input 28x28x1; input 28x28x1; flatten; dense 10", "a second 'input'"},
        {"input 28x28x1; dense 10", "add 'flatten'"},
        {"input 28x28x1; flatten; dense", "needs a unit count"},
        {"input 28x28x1; flatten; dense 0", "needs a unit count"},
        {"input 28x28x1; flatten; dense -5", "needs a unit count"},
        {"input 28x28x1; flatten; dense 1e3", "needs a unit count"},
        {"input 28x28x1; flatten; dense 99999999", "needs a unit count"},
        {"input 28x28x1; flatten; dense 10 20", "needs a unit count"},
        {"input 28x28x1; flatten; dense 10 20 30 40", "too many words"},
        {"input 28x28x1; flatten; dense 10; relu", "last layer is relu"},
        {"input 28x28x1; flatten; dense 1", "1 output classes"},
        {"input 28x28x1; flatten; dropout 1.0; dense 10", "not a number in [0, 1)"},
        {"input 28x28x1; flatten; dropout nan; dense 10", "not a number in [0, 1)"},
        {"input 28x28x1; flatten; dropout; dense 10", "needs a rate"},
        {"input 28x28x1; relu 3; flatten; dense 10", "takes no value"},
        {"input 28x28x1; softmax; flatten; dense 10", "unknown layer 'softmax'"},
        {"input 2x2x1; conv2d 4; flatten; dense 10", "smaller than the 3x3 kernel"},
        {"input 1x5x1; maxpool; flatten; dense 10", "smaller than the 2x2 window"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eb_arch a;
        eb_error err;
        eb_error_clear(&err);
        assert_int_equal(eb_arch_parse(cases[i].text, &a, &err), EB_ERR_FORMAT);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("'%s': message '%s' lacks '%s'", cases[i].text, err.msg, cases[i].msg);
    }
    {
        /* too many layers, and too long a text */
        char big[EB_ARCH_TEXT_MAX + 10];
        eb_arch a;
        eb_error err;
        strcpy(big, "input 1x1x4");
        for (int i = 0; i < 40; i++)
            strcat(big, "; relu");
        strcat(big, "; dense 2");
        assert_int_equal(eb_arch_parse(big, &a, &err), EB_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "more than 32 layers"));
        memset(big, ' ', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        assert_int_equal(eb_arch_parse(big, &a, &err), EB_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "at most"));
    }
}

static void test_init_scale(void **state)
{
    eb_arch a;
    eb_error err;
    eb_rng r;
    float *theta;
    double s2 = 0.0;
    const eb_layer *L;
    (void)state;
    assert_int_equal(eb_arch_named("mlp", &a, &err), EB_OK);
    theta = malloc(a.n_params * sizeof *theta);
    eb_rng_seed(&r, 1, EB_STREAM_INIT);
    eb_arch_init_params(&a, theta, &r);
    L = &a.layers[1]; /* dense 784 -> 256, He: variance 2/784 */
    for (size_t i = 0; i < L->n_weights; i++)
        s2 += (double)theta[L->param_offset + i] * theta[L->param_offset + i];
    printf("first layer weight variance %.6f (He: %.6f)\n", s2 / L->n_weights, 2.0 / 784);
    assert_true(fabs(s2 / L->n_weights / (2.0 / 784) - 1.0) < 0.02);
    for (size_t i = 0; i < L->n_bias; i++)
        assert_true(theta[L->param_offset + L->n_weights + i] == 0.0f);
    free(theta);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_architectures),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_dropout_placement),
        cmocka_unit_test(test_parse_comments_and_separators),
        cmocka_unit_test(test_malformed_specs),
        cmocka_unit_test(test_init_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
