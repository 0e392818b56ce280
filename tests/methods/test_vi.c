/* test_vi.c: the gradients mean-field VI adds to the model core.
 *
 *  - softplus and its inverse;
 *  - the regulariser: KL(q || N(0, prior_var)) at T = 1 against scipy's
 *    numerical integration of q log(q / p), and its gradient (mu, rho)
 *    against central finite differences, at T = 1 and T = 0.3;
 *  - the network loss under q with the local reparameterisation trick
 *    (dense layers) and per-shard weight draws (conv2d): its gradient with
 *    respect to [mu | sigma] against central finite differences with the
 *    noise held fixed (smooth architectures: no ReLU or max-pool, so no
 *    kinks);
 *  - the local reparameterisation draws what explicit weight sampling
 *    draws: for one dense layer the mean loss over many examples' noise
 *    equals, within Monte Carlo error, the mean loss of explicitly sampled
 *    weights run through eb_net. */
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

static void test_softplus(void **state)
{
    (void)state;
    assert_true(fabs(eb_softplus(0.0) - log(2.0)) < 1e-15);
    assert_true(fabs(eb_softplus(-50.0) - exp(-50.0)) < 1e-30);
    assert_true(eb_softplus(800.0) == 800.0); /* no overflow */
    for (double y = 1e-6; y < 50.0; y *= 3.7)
        assert_true(fabs(eb_softplus(eb_softplus_inv(y)) / y - 1.0) < 1e-12);
}

static void test_regulariser(void **state)
{
    const float mu[2] = {0.5f, -1.0f}, rho[2] = {0.0f, 1.0f};
    float dmu[2], drho[2];
    double r;
    (void)state;
    /* scipy 1.10.1: sum over the two coordinates of
     * integrate.quad(lambda t: q.pdf(t) * (q.logpdf(t) - p.logpdf(t)),
     * -30, 30, epsabs=1e-13, epsrel=1e-13) with q = norm(mu, softplus(rho)),
     * p = norm(0, sqrt(0.5)) */
    r = eb_vi_regulariser(mu, rho, 2, 0.5, 1.0, dmu, drho);
    printf("KL %.15f (scipy 1.8559611333405468)\n", r);
    assert_true(fabs(r - 1.8559611333405468) < 1e-9);
    for (int t = 0; t < 2; t++) {
        const double T = t ? 0.3 : 1.0, h = 1e-3;
        double worst = 0.0;
        eb_vi_regulariser(mu, rho, 2, 0.5, T, dmu, drho);
        for (int i = 0; i < 4; i++) {
            float m[2] = {mu[0], mu[1]}, p[2] = {rho[0], rho[1]};
            float *v = i < 2 ? &m[i] : &p[i - 2];
            const float g = i < 2 ? dmu[i] : drho[i - 2];
            double up, dn, fd;
            *v += (float)h;
            up = eb_vi_regulariser(m, p, 2, 0.5, T, NULL, NULL);
            *v -= (float)(2 * h);
            dn = eb_vi_regulariser(m, p, 2, 0.5, T, NULL, NULL);
            fd = (up - dn) / (2 * h);
            worst = fmax(worst, fabs(fd - g) / fmax(1.0, fabs(fd)));
        }
        printf("regulariser T=%.1f: max relative gradient error %.2e\n", T, worst);
        assert_true(worst < 1e-4);
    }
}

/* Loss (mean over the shard) and gradient of the VI network at theta. */
static double vi_loss(const eb_vi_shard_ctx *c, void *ws, const float *theta, const float *x,
                      const uint8_t *y, int n, float *grad)
{
    return eb_vi_lrt_shard_ops.shard((void *)c, ws, theta, x, y, n, 1.0f / (float)n, 3, 10,
                                     grad) / n;
}

static void check_lrt_grad(const char *arch_text)
{
    eb_arch arch;
    eb_vi_shard_ctx c;
    eb_error err;
    void *ws;
    const int n = 5;
    size_t K, in;
    float *theta, *grad, *g2, *x;
    uint8_t y[5];
    eb_rng r;
    double worst = 0.0, base;
    int checked = 0;

    assert_int_equal(eb_arch_parse(arch_text, &arch, &err), EB_OK);
    K = arch.n_params;
    in = arch.in_size;
    c.arch = &arch;
    c.noise_seed = 77;
    assert_int_equal(eb_vi_lrt_shard_ops.worker_new(&c, n, &ws, &err), EB_OK);
    theta = malloc(2 * K * sizeof *theta);
    grad = malloc(2 * K * sizeof *grad);
    g2 = malloc(2 * K * sizeof *g2);
    x = malloc((size_t)n * in * sizeof *x);
    eb_rng_seed(&r, 4, 4);
    for (size_t i = 0; i < K; i++) {
        theta[i] = (float)(0.6 * eb_rng_normal(&r));
        theta[K + i] = 0.1f + 0.3f * eb_rng_uniformf(&r);
    }
    for (size_t i = 0; i < (size_t)n * in; i++)
        x[i] = eb_rng_uniformf(&r) * 2.0f - 1.0f;
    for (int i = 0; i < n; i++)
        y[i] = (uint8_t)(i % arch.n_classes);
    base = vi_loss(&c, ws, theta, x, y, n, grad);
    /* the noise is keyed: the same call gives the same loss */
    assert_true(vi_loss(&c, ws, theta, x, y, n, g2) == base);
    assert_memory_equal(grad, g2, 2 * K * sizeof *grad);
    for (size_t i = 0; i < 2 * K; i++) {
        const float h = 1e-2f * fmaxf(0.1f, fabsf(theta[i]));
        const float keep = theta[i];
        double up, dn, fd, e;
        theta[i] = keep + h;
        up = vi_loss(&c, ws, theta, x, y, n, g2);
        theta[i] = keep - h;
        dn = vi_loss(&c, ws, theta, x, y, n, g2);
        theta[i] = keep;
        fd = (up - dn) / (2.0 * (double)h);
        e = fabs(fd - grad[i]) / fmax(0.05, fabs(fd));
        if (e > worst)
            worst = e;
        checked++;
    }
    printf("%s: %d gradients (mu and sigma), max relative error %.2e\n", arch_text, checked,
           worst);
    assert_true(worst < 2e-2);
    eb_vi_lrt_shard_ops.worker_free(ws);
    free(theta);
    free(grad);
    free(g2);
    free(x);
}

static void test_lrt_gradients(void **state)
{
    (void)state;
    check_lrt_grad("input 1x1x3; dense 4; dense 3");
    check_lrt_grad("input 2x3x1; flatten; dense 5; dense 4; dense 3");
    check_lrt_grad("input 5x5x2; conv2d 3; conv2d 2; flatten; dense 3");
}

static void test_lrt_matches_weight_sampling(void **state)
{
    /* one dense layer, one input repeated as 4000 examples: with the
     * local reparameterisation each example's logits are an independent
     * draw of x W^T + b under q, so the mean loss matches the mean loss
     * of 4000 explicit weight draws */
    const int n = 4000;
    eb_arch arch;
    eb_vi_shard_ctx c;
    eb_error err;
    eb_net *net;
    void *ws;
    float *theta, *grad, *x, *w;
    uint8_t *y;
    double lrt, expl = 0.0, expl2 = 0.0, se;
    size_t K;
    eb_rng r;
    (void)state;
    assert_int_equal(eb_arch_parse("input 1x1x3; dense 3", &arch, &err), EB_OK);
    K = arch.n_params;
    c.arch = &arch;
    c.noise_seed = 5;
    assert_int_equal(eb_vi_lrt_shard_ops.worker_new(&c, n, &ws, &err), EB_OK);
    assert_int_equal(eb_net_new(&arch, 1, &net, &err), EB_OK);
    theta = malloc(2 * K * sizeof *theta);
    grad = malloc(2 * K * sizeof *grad);
    w = malloc(K * sizeof *w);
    x = malloc((size_t)n * 3 * sizeof *x);
    y = malloc((size_t)n);
    eb_rng_seed(&r, 8, 8);
    for (size_t i = 0; i < K; i++) {
        theta[i] = (float)(0.5 * eb_rng_normal(&r));
        theta[K + i] = 0.5f + 0.5f * eb_rng_uniformf(&r);
    }
    for (int i = 0; i < n; i++) {
        x[3 * i] = 0.9f;
        x[3 * i + 1] = -0.4f;
        x[3 * i + 2] = 0.7f;
        y[i] = 1;
    }
    lrt = vi_loss(&c, ws, theta, x, y, n, grad);
    for (int s = 0; s < n; s++) {
        float eps[16];
        const float *logits;
        double l;
        eb_normal_fill(eps, K, &r);
        for (size_t i = 0; i < K; i++)
            w[i] = theta[i] + theta[K + i] * eps[i];
        logits = eb_net_forward(net, w, x, 1, NULL);
        l = eb_softmax_xent(NULL, logits, y, 1, 3, 1.0f);
        expl += l / n;
        expl2 += l * l / n;
    }
    se = sqrt((expl2 - expl * expl) / n);
    printf("mean loss: local reparameterisation %.4f, explicit weights %.4f (SE %.4f)\n", lrt,
           expl, se);
    assert_true(fabs(lrt - expl) < 4.0 * sqrt(2.0) * se);
    eb_vi_lrt_shard_ops.worker_free(ws);
    eb_net_free(net);
    free(theta);
    free(grad);
    free(w);
    free(x);
    free(y);
}

static void test_refuses_dropout(void **state)
{
    eb_arch arch;
    eb_vi_shard_ctx c;
    eb_error err;
    void *ws;
    (void)state;
    assert_int_equal(eb_arch_parse("input 1x1x3; dense 4; relu; dropout 0.2; dense 2", &arch,
                                   &err), EB_OK);
    c.arch = &arch;
    c.noise_seed = 1;
    assert_int_equal(eb_vi_lrt_shard_ops.worker_new(&c, 4, &ws, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "dropout layers"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softplus),
        cmocka_unit_test(test_regulariser),
        cmocka_unit_test(test_lrt_gradients),
        cmocka_unit_test(test_lrt_matches_weight_sampling),
        cmocka_unit_test(test_refuses_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
