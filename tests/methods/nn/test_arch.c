/* test_arch.c: architecture parsing, shape resolution, parameter counts
 * (the reference counts equal PyTorch's for the same layers: 269,322 for
 * the MLP and 225,034 for the CNN), text round trips, the dropout variant,
 * initialisation scale, every malformed spec's message, and the sized
 * names (mlp:W1,..., cnn:C1,C2,D) with their errors. */
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

/* Sized names: "mlp:W1,..." and "cnn:C1,C2,D". Parameter counts worked
 * by hand: mlp:64 is 784*64 + 64 + 64*10 + 10 = 50,890; mlp:512,512 is
 * 784*512 + 512 + 512*512 + 512 + 512*10 + 10 = 669,706; cnn:8,16,32 is
 * conv 9*1*8 + 8 = 80, conv 9*8*16 + 16 = 1,168, then 5*5*16 = 400
 * flat inputs: 400*32 + 32 = 12,832 and 32*10 + 10 = 330, in all 14,410. */
static void test_sized_architectures(void **state)
{
    eb_arch a, b;
    eb_error err;
    char text[EB_ARCH_TEXT_MAX];
    (void)state;
    assert_int_equal(eb_arch_named("mlp:64", &a, &err), EB_OK);
    assert_int_equal(a.n_params, 50890);
    assert_int_equal(a.n_layers, 4);
    assert_int_equal(eb_arch_format(&a, text, sizeof text, &err), EB_OK);
    assert_string_equal(text, "input 28x28x1\nflatten\ndense 64\nrelu\ndense 10\n");
    assert_int_equal(eb_arch_named("mlp:512,512", &a, &err), EB_OK);
    assert_int_equal(a.n_params, 669706);
    /* the plain names are the sized forms of their shapes */
    assert_int_equal(eb_arch_named("mlp:256,256", &a, &err), EB_OK);
    assert_int_equal(eb_arch_named("mlp", &b, &err), EB_OK);
    assert_memory_equal(&a, &b, sizeof a);
    assert_int_equal(eb_arch_named("mlp:32", &a, &err), EB_OK);
    assert_int_equal(eb_arch_named("mlp-small", &b, &err), EB_OK);
    assert_memory_equal(&a, &b, sizeof a);
    assert_int_equal(eb_arch_named("cnn:32,64,128", &a, &err), EB_OK);
    assert_int_equal(eb_arch_named("cnn", &b, &err), EB_OK);
    assert_memory_equal(&a, &b, sizeof a);
    assert_int_equal(eb_arch_named("cnn:8,16,32", &a, &err), EB_OK);
    assert_int_equal(a.n_params, 14410);
    /* limits: 1 to EB_ARCH_MAX_WIDTH, at most EB_ARCH_MAX_HIDDEN layers */
    assert_int_equal(eb_arch_named("mlp:4096", &a, &err), EB_OK);
    assert_int_equal(a.n_params, 784 * 4096 + 4096 + 4096 * 10 + 10);
    {
        char many[256] = "mlp:2";
        for (int i = 1; i < EB_ARCH_MAX_HIDDEN; i++)
            strcat(many, ",2");
        assert_int_equal(eb_arch_named(many, &a, &err), EB_OK);
        assert_int_equal(a.n_layers, EB_ARCH_MAX_LAYERS);
        strcat(many, ",2");
        assert_int_equal(eb_arch_named(many, &a, &err), EB_ERR_ARG);
        assert_non_null(strstr(err.msg, "more than 15 widths"));
    }
}

static void test_sized_malformed(void **state)
{
    static const struct {
        const char *name;
        const char *msg;
    } cases[] = {
        {"mlp:0,64", "architecture 'mlp:0,64': width 1 is 0; widths are from 1 to 4096"},
        {"mlp:64,4097", "architecture 'mlp:64,4097': width 2 is 4097; widths are from 1 to 4096"},
        {"mlp:99999999999999999999", "width 1 is 99999999999999999999; widths are from 1"},
        {"mlp:", "architecture 'mlp:': width 1 '' is not a whole number"},
        {"mlp:64,", "width 2 '' is not a whole number"},
        {"mlp:64,,32", "width 2 '' is not a whole number"},
        {"mlp:-5", "width 1 '-5' is not a whole number"},
        {"mlp:64x", "width 1 '64x' is not a whole number"},
        {"mlp:1e3", "width 1 '1e3' is not a whole number"},
        {"mlp: 64", "width 1 ' 64' is not a whole number"},
        {"cnn:32,64", "a sized cnn takes 3 widths"},
        {"cnn:32,64,128,10", "more than 3 widths"},
        {"cnn:a,64,128", "width 1 'a' is not a whole number"},
        {"mlp-small:32", "unknown architecture 'mlp-small:32'"},
        {"MLP:64", "unknown architecture"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eb_arch a;
        eb_error err;
        eb_error_clear(&err);
        assert_int_equal(eb_arch_named(cases[i].name, &a, &err), EB_ERR_ARG);
        printf("%s -> %s\n", cases[i].name, err.msg);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("'%s': message '%s' lacks '%s'", cases[i].name, err.msg, cases[i].msg);
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
        cmocka_unit_test(test_sized_architectures),
        cmocka_unit_test(test_sized_malformed),
        cmocka_unit_test(test_init_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
