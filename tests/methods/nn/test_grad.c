/* test_grad.c: central finite-difference checks of eb_net_backward, for
 * every layer kind on its own (followed by a dense output so the loss is
 * defined) and for whole networks, against both theta and the input.
 *
 * The loss is the mean softmax cross-entropy, evaluated in double from
 * float logits, so each loss value carries float rounding of ~1e-6 (1 +
 * |loss|); divided by 2h that is the noise floor of a difference
 * quotient, added to the tolerance. Two checks: per coordinate,
 * |fd - g| <= noise + 1e-4 + 3e-2 max(|fd|, |g|) (an indexing bug gives
 * O(1) errors on many coordinates); and along random unit directions v,
 * where g.v is large against the noise, to 1e-3 relative. A coordinate whose step
 * changes the activation pattern (a ReLU sign or a max-pool choice) is
 * retried with smaller steps and skipped if it still crosses a kink; at
 * most 5% may be skipped. Dropout layers run in SAMPLE
 * mode with a fixed (seed, pass), so the mask is the same in every
 * evaluation and the
 * function is smooth away from ReLU/max-pool kinks. */
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
#include "methods/nn/nn_kernels.h"

static uint64_t pattern;

/* The loss; also records the activation pattern of this evaluation. */
static double loss_at(eb_net *net, const float *theta, const float *x, const uint8_t *y, int n,
                      const eb_dropout_ctx *drop)
{
    const eb_arch *a = eb_net_arch(net);
    const float *logits = eb_net_forward(net, theta, x, n, drop);
    pattern = eb_net__activation_pattern(net);
    return eb_softmax_xent(NULL, logits, y, n, a->n_classes, 1.0f);
}

/* Central difference of the loss along coordinate v[i] (theta or x).
 * Returns 0 when every step tried crosses a kink (ReLU sign or max-pool
 * choice changes), where the quotient says nothing about the gradient.
 * *noise is the quotient's rounding floor: float logits give each loss
 * value a relative error of a few 1e-7, divided by 2h. */
static int central_diff(eb_net *net, const float *theta, const float *x, const uint8_t *y,
                        int n, const eb_dropout_ctx *drop, float *v, size_t i, double *fd,
                        double *noise)
{
    float keep = v[i];
    uint64_t p0;
    double l0 = loss_at(net, theta, x, y, n, drop);
    p0 = pattern;
    for (float h = 5e-3f; h >= 5e-3f / 64; h /= 8) {
        double lp, lm;
        uint64_t pp, pm;
        v[i] = keep + h;
        lp = loss_at(net, theta, x, y, n, drop);
        pp = pattern;
        v[i] = keep - h;
        lm = loss_at(net, theta, x, y, n, drop);
        pm = pattern;
        v[i] = keep;
        if (pp == p0 && pm == p0) {
            *fd = (lp - lm) / (2.0 * h);
            *noise = 1e-6 * (1.0 + fabs(l0)) / h;
            return 1;
        }
    }
    return 0;
}

/* Checks up to max_coords coordinates of theta (spread evenly) and of x. */
static void grad_check(const char *text, int n, size_t max_coords)
{
    eb_arch a;
    eb_error err;
    eb_net *net;
    eb_rng r;
    float *theta, *grad, *x, *dx, *dlogits;
    uint8_t *y;
    double worst_t = 0.0, worst_x = 0.0, worst_dir = 0.0;
    eb_dropout_ctx drop = {EB_DROPOUT_SAMPLE, 99, 5, 0};
    size_t step, tried = 0, kinks = 0, dirs = 0;

    assert_int_equal(eb_arch_parse(text, &a, &err), EB_OK);
    assert_int_equal(eb_net_new(&a, n, &net, &err), EB_OK);
    theta = malloc(a.n_params * sizeof(float));
    grad = malloc(a.n_params * sizeof(float));
    x = malloc((size_t)n * a.in_size * sizeof(float));
    dx = malloc((size_t)n * a.in_size * sizeof(float));
    dlogits = malloc((size_t)n * a.n_classes * sizeof(float));
    y = malloc((size_t)n);
    eb_rng_seed(&r, 7, 0);
    eb_arch_init_params(&a, theta, &r);
    /* non-zero biases so every parameter matters */
    for (size_t i = 0; i < a.n_params; i++)
        theta[i] += 0.05f * (float)eb_rng_normal(&r);
    /* pixels in [0, 1], as the networks will see */
    for (size_t i = 0; i < (size_t)n * a.in_size; i++)
        x[i] = eb_rng_uniformf(&r);
    for (int i = 0; i < n; i++)
        y[i] = (uint8_t)eb_rng_below(&r, (uint64_t)a.n_classes);

    {
        const float *logits = eb_net_forward(net, theta, x, n, &drop);
        eb_softmax_xent(dlogits, logits, y, n, a.n_classes, 1.0f / n);
        eb_net_backward(net, theta, dlogits, grad, dx);
    }
    step = a.n_params > max_coords ? a.n_params / max_coords : 1;
    for (size_t i = 0; i < a.n_params; i += step) {
        double fd, noise, e;
        tried++;
        if (!central_diff(net, theta, x, y, n, &drop, theta, i, &fd, &noise)) {
            kinks++;
            continue;
        }
        e = fabs(fd - grad[i]) / (noise + 1e-4 + 3e-2 * fmax(fabs(fd), fabs(grad[i])));
        if (e > worst_t)
            worst_t = e;
        if (e > 1.0)
            printf("  theta[%zu]: analytic %.6g finite-diff %.6g\n", i, (double)grad[i], fd);
    }
    step = (size_t)n * a.in_size > max_coords ? (size_t)n * a.in_size / max_coords : 1;
    for (size_t i = 0; i < (size_t)n * a.in_size; i += step) {
        double fd, noise, e;
        tried++;
        if (!central_diff(net, theta, x, y, n, &drop, x, i, &fd, &noise)) {
            kinks++;
            continue;
        }
        e = fabs(fd - dx[i]) / (noise + 1e-4 + 3e-2 * fmax(fabs(fd), fabs(dx[i])));
        if (e > worst_x)
            worst_x = e;
        if (e > 1.0)
            printf("  x[%zu]: analytic %.6g finite-diff %.6g\n", i, (double)dx[i], fd);
    }
    /* directional derivatives along random unit vectors in theta, with
     * the same kink detection: a direction moves every unit at once, so
     * it needs a small step */
    {
        float *v = malloc(a.n_params * sizeof(float)), *t2 = malloc(a.n_params * sizeof(float));
        for (int d = 0; d < 4; d++) {
            double norm = 0.0, gv = 0.0;
            uint64_t p0;
            for (size_t i = 0; i < a.n_params; i++) {
                v[i] = (float)eb_rng_normal(&r);
                norm += (double)v[i] * v[i];
            }
            norm = sqrt(norm);
            for (size_t i = 0; i < a.n_params; i++) {
                v[i] = (float)(v[i] / norm);
                gv += (double)grad[i] * v[i];
            }
            loss_at(net, theta, x, y, n, &drop);
            p0 = pattern;
            for (double hd = 1e-2; hd > 1e-4; hd /= 4) {
                double lp, lm, fd, e;
                uint64_t pp;
                for (size_t i = 0; i < a.n_params; i++)
                    t2[i] = theta[i] + (float)hd * v[i];
                lp = loss_at(net, t2, x, y, n, &drop);
                pp = pattern;
                for (size_t i = 0; i < a.n_params; i++)
                    t2[i] = theta[i] - (float)hd * v[i];
                lm = loss_at(net, t2, x, y, n, &drop);
                if (pp != p0 || pattern != p0)
                    continue;
                fd = (lp - lm) / (2.0 * hd);
                e = fabs(fd - gv) / (1e-6 * 4.0 / hd + 1e-3 * fabs(gv));
                if (e > worst_dir)
                    worst_dir = e;
                dirs++;
                break;
            }
        }
        free(v);
        free(t2);
    }
    printf("%-50.50s K=%-6zu scaled err: theta %.2f input %.2f directional %.2f (%zu of 4); "
           "%zu of %zu coordinates on a kink\n",
           text, a.n_params, worst_t, worst_x, worst_dir, dirs, kinks, tried);
    assert_true(kinks * 20 <= tried);
    assert_true(dirs >= 2);
    assert_true(worst_t <= 1.0);
    assert_true(worst_x <= 1.0);
    assert_true(worst_dir <= 1.0);
    eb_net_free(net);
    free(theta); free(grad); free(x); free(dx); free(dlogits); free(y);
}

static void test_dense_layer(void **s) { (void)s; grad_check("input 1x1x5; dense 3", 4, 1000); }
static void test_conv2d_layer(void **s)
{
    (void)s;
    grad_check("input 5x6x2; conv2d 3; flatten; dense 3", 3, 1000);
}
static void test_maxpool_layer(void **s)
{
    (void)s;
    grad_check("input 5x4x2; maxpool; flatten; dense 3", 3, 1000);
}
static void test_relu_layer(void **s) { (void)s; grad_check("input 1x1x6; relu; dense 3", 4, 1000); }
static void test_dropout_layer(void **s)
{
    (void)s;
    grad_check("input 1x1x8; dropout 0.5; dense 3", 4, 1000);
}
static void test_flatten_layer(void **s)
{
    (void)s;
    grad_check("input 3x3x2; flatten; dense 4", 2, 1000);
}
static void test_small_mlp(void **s)
{
    (void)s;
    grad_check("input 4x4x1; flatten; dense 12; relu; dropout 0.3; dense 8; relu; dense 5", 6, 2000);
}
static void test_small_cnn(void **s)
{
    (void)s;
    grad_check("input 10x10x2; conv2d 4; relu; maxpool; conv2d 3; relu; maxpool; flatten; "
               "dense 6; relu; dropout 0.2; dense 4",
               3, 2000);
}
/* The reference architectures themselves, on a sample of coordinates. */
static void test_reference_mlp(void **s)
{
    (void)s;
    grad_check("input 28x28x1; flatten; dense 256; relu; dense 256; relu; dense 10", 4, 300);
}
static void test_reference_cnn(void **s)
{
    (void)s;
    grad_check("input 28x28x1; conv2d 32; relu; maxpool; conv2d 64; relu; maxpool; flatten; "
               "dense 128; relu; dense 10",
               2, 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_layer),   cmocka_unit_test(test_conv2d_layer),
        cmocka_unit_test(test_maxpool_layer), cmocka_unit_test(test_relu_layer),
        cmocka_unit_test(test_dropout_layer), cmocka_unit_test(test_flatten_layer),
        cmocka_unit_test(test_small_mlp),     cmocka_unit_test(test_small_cnn),
        cmocka_unit_test(test_reference_mlp), cmocka_unit_test(test_reference_cnn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
