/* test_attack.c: FGSM and PGD on a softmax-linear model whose input
 * gradient is written by hand: logits = W x + b, p = softmax(logits),
 * loss = -log p_y, so d loss / dx = W^T (p - e_y). FGSM moves every
 * coordinate by exactly eps in the gradient's sign and clips to [0, 1]
 * (a zero gradient leaves it); PGD stays in the eps-ball and [0, 1],
 * raises the loss at least as much as FGSM (three classes from x; two
 * classes from a random start, where it must reach FGSM's vertex), is
 * deterministic for a seed and independent of batching; eps = 0 returns x without a gradient
 * call; and the errors. Last, both attacks end to end through
 * eb_predictor_input_grad on a small random ensemble (the
 * finite-difference check of that gradient is in
 * tests/methods/test_posterior.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_methods.h"
#include "methods/nn/eb_rng.h"
#include "metrics/eb_metrics.h"

#define D 6
#define KMAX 3
#define NMAX 64

/* Three classes; column 5 is all zero, so the gradient of pixel 5 is
 * exactly 0. */
static const double W3[KMAX][D] = {{1.5, -2.0, 0.5, 1.0, -0.7, 0.0},
                                   {-1.0, 1.2, -0.3, 2.0, 0.4, 0.0},
                                   {0.2, 0.6, -1.1, -1.5, 0.9, 0.0}};
/* Two classes: the gradient is (p_0 - [y = 0]) (w_0 - w_1), whose sign
 * per pixel never changes, so PGD must end where FGSM does. */
static const double W2[KMAX][D] = {{0.8, -1.3, 0.4, 2.1, -0.6, 1.0},
                                   {-0.5, 0.9, -1.2, 0.3, 0.7, -0.4}};
static const double bias[KMAX] = {0.1, -0.2, 0.05};

typedef struct model {
    const double (*W)[D];
    int k;        /* classes */
    int calls;
    int fail_at;  /* the call that fails (0: none) */
    int nan_at;   /* the call that returns a NaN gradient (0: none) */
} model;

#define MODEL3 {W3, 3, 0, 0, 0}
#define MODEL2 {W2, 2, 0, 0, 0}

static void probs_of(const model *m, const float *x, double *p)
{
    double mx = -INFINITY, z = 0.0;
    for (int c = 0; c < m->k; c++) {
        p[c] = bias[c];
        for (int j = 0; j < D; j++)
            p[c] += m->W[c][j] * x[j];
        mx = fmax(mx, p[c]);
    }
    for (int c = 0; c < m->k; c++)
        z += p[c] = exp(p[c] - mx);
    for (int c = 0; c < m->k; c++)
        p[c] /= z;
}

static double loss_of(const model *m, const float *x, uint8_t y)
{
    double p[KMAX];
    probs_of(m, x, p);
    return -log(p[y]);
}

/* d(-log p_y) / dx = W^T (p - e_y), by hand. */
static double grad_of(const model *m, const float *x, uint8_t y, int j)
{
    double p[KMAX], g = 0.0;
    probs_of(m, x, p);
    for (int c = 0; c < m->k; c++)
        g += m->W[c][j] * (p[c] - (c == y ? 1.0 : 0.0));
    return g;
}

static eb_status grad_fn(void *ctx, const float *x, const uint8_t *y, size_t n, float *dx,
                         float *pbar, eb_error *err)
{
    model *m = ctx;
    m->calls++;
    if (m->calls == m->fail_at)
        return eb_error_set(err, EB_ERR_IO, "the device went away");
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < D; j++)
            dx[i * D + j] = (float)grad_of(m, x + i * D, y[i], j);
        if (pbar) {
            double p[KMAX];
            probs_of(m, x + i * D, p);
            for (int c = 0; c < m->k; c++)
                pbar[i * (size_t)m->k + (size_t)c] = (float)p[c];
        }
    }
    if (m->calls == m->nan_at)
        dx[D + 2] = NAN;
    return EB_OK;
}

/* n random inputs in [0, 1], some pixels at 0, 1 and near the edges. */
static void inputs(float *x, uint8_t *y, size_t n, int k, uint64_t seed)
{
    eb_rng r;
    eb_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < D; j++)
            x[i * D + j] = eb_rng_uniformf(&r);
        y[i] = (uint8_t)eb_rng_below(&r, (uint64_t)k);
    }
    x[0] = 0.0f;
    x[1] = 1.0f;
    x[2] = 0.98f;
    x[3] = 0.02f;
}

static void test_fgsm_exact(void **state)
{
    float x[NMAX * D], adv[NMAX * D], inplace[NMAX * D];
    uint8_t y[NMAX];
    const float eps = 0.05f;
    model m = MODEL3;
    int moved = 0, clipped = 0;
    eb_error err;
    (void)state;
    inputs(x, y, NMAX, 3, 1);
    assert_int_equal(eb_attack_fgsm(adv, x, y, NMAX, D, eps, grad_fn, &m, &err), EB_OK);
    assert_int_equal(m.calls, 1);
    for (size_t i = 0; i < NMAX; i++) {
        for (int j = 0; j < D; j++) {
            /* the sign of the gradient, recomputed here in double */
            double g = grad_of(&m, x + i * D, y[i], j);
            float want, v = x[i * D + j];
            want = g > 0 ? v + eps : g < 0 ? v - eps : v;
            if (want > 1.0f || want < 0.0f)
                clipped++;
            want = want < 0.0f ? 0.0f : want > 1.0f ? 1.0f : want;
            if (g != 0.0)
                moved++;
            if (adv[i * D + j] != want)
                fail_msg("example %zu pixel %d: %.9g, want %.9g (gradient %g)", i, j,
                         (double)adv[i * D + j], (double)want, g);
        }
        assert_true(loss_of(&m, adv + i * D, y[i]) > loss_of(&m, x + i * D, y[i]));
        assert_true(adv[i * D + 5] == x[i * D + 5]); /* zero gradient: unmoved */
    }
    assert_true(moved > 0 && clipped > 0);
    /* in place gives the same bytes */
    memcpy(inplace, x, sizeof x);
    assert_int_equal(eb_attack_fgsm(inplace, inplace, y, NMAX, D, eps, grad_fn, &m, &err), EB_OK);
    assert_memory_equal(inplace, adv, sizeof adv);
    /* eps = 0: x unchanged, no gradient taken */
    m.calls = 0;
    assert_int_equal(eb_attack_fgsm(adv, x, y, NMAX, D, 0.0f, grad_fn, &m, &err), EB_OK);
    assert_memory_equal(adv, x, sizeof x);
    assert_int_equal(m.calls, 0);
}

/* Largest |x_adv - x| and whether every value is in [0, 1]. */
static double ball_radius(const float *adv, const float *x, size_t count)
{
    double worst = 0.0;
    for (size_t k = 0; k < count; k++) {
        assert_true(adv[k] >= 0.0f && adv[k] <= 1.0f);
        worst = fmax(worst, fabs((double)adv[k] - (double)x[k]));
    }
    return worst;
}

static void test_pgd_against_fgsm(void **state)
{
    static float x[NMAX * D], fgsm[NMAX * D], adv[NMAX * D];
    uint8_t y[NMAX];
    const float eps = 0.1f;
    eb_pgd_config cfg = {eps, 0.0f, EB_PGD_DEFAULT_STEPS, 0, 42, 0, 0, 0, 0};
    model m3 = MODEL3, m2 = MODEL2;
    double worst = 0.0, min_gain = INFINITY;
    eb_error err;
    (void)state;
    /* Three classes, from x: the loss is convex in x, so its maxima over
     * the box are vertices, and PGD, which starts along FGSM's direction
     * and keeps climbing, ends at least as high on every one of these 64
     * examples. (With a random start PGD may climb to another, lower
     * vertex; the final iterate is returned, as in Madry et al.) */
    inputs(x, y, NMAX, 3, 2);
    assert_int_equal(eb_attack_fgsm(fgsm, x, y, NMAX, D, eps, grad_fn, &m3, &err), EB_OK);
    m3.calls = 0;
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m3, &err), EB_OK);
    assert_int_equal(m3.calls, EB_PGD_DEFAULT_STEPS);
    worst = ball_radius(adv, x, NMAX * D);
    for (size_t i = 0; i < NMAX; i++) {
        double gain = loss_of(&m3, adv + i * D, y[i]) - loss_of(&m3, fgsm + i * D, y[i]);
        min_gain = fmin(min_gain, gain);
        assert_true(gain >= -1e-9);
    }
    /* Two classes, random start: every gradient sign is fixed, and 10
     * steps of 2.5 eps / 10 cover the 2 eps from any start, so PGD lands
     * on FGSM's vertex: the same bytes. */
    inputs(x, y, NMAX, 2, 5);
    assert_int_equal(eb_attack_fgsm(fgsm, x, y, NMAX, D, eps, grad_fn, &m2, &err), EB_OK);
    cfg.random_start = 1;
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m2, &err), EB_OK);
    worst = fmax(worst, ball_radius(adv, x, NMAX * D));
    assert_memory_equal(adv, fgsm, sizeof adv);
    printf("PGD: max |x_adv - x| = %.9g (eps %.9g); min loss gain over FGSM %.3g\n", worst,
           (double)eps, min_gain);
    assert_true(worst <= (double)eps + 1e-7);
}

static void test_pgd_determinism(void **state)
{
    static float x[NMAX * D], fgsm[NMAX * D], adv[NMAX * D], again[NMAX * D], other[NMAX * D],
        split[NMAX * D];
    uint8_t y[NMAX];
    const float eps = 0.1f;
    eb_pgd_config cfg = {eps, 0.0f, EB_PGD_DEFAULT_STEPS, 1, 42, 0, 0, 0, 0};
    model m = MODEL3;
    eb_error err;
    (void)state;
    inputs(x, y, NMAX, 3, 2);
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m, &err), EB_OK);
    assert_true(ball_radius(adv, x, NMAX * D) <= (double)eps + 1e-7);
    for (size_t i = 0; i < NMAX; i++)
        assert_true(loss_of(&m, adv + i * D, y[i]) > loss_of(&m, x + i * D, y[i]));
    /* deterministic for a seed; another seed starts elsewhere */
    assert_int_equal(eb_attack_pgd(again, x, y, NMAX, D, &cfg, grad_fn, &m, &err), EB_OK);
    assert_memory_equal(adv, again, sizeof adv);
    cfg.seed = 43;
    assert_int_equal(eb_attack_pgd(other, x, y, NMAX, D, &cfg, grad_fn, &m, &err), EB_OK);
    assert_memory_not_equal(adv, other, sizeof adv);
    /* keyed per example: two batches with first_example give the same */
    cfg.seed = 42;
    assert_int_equal(eb_attack_pgd(split, x, y, 20, D, &cfg, grad_fn, &m, &err), EB_OK);
    cfg.first_example = 20;
    assert_int_equal(eb_attack_pgd(split + 20 * D, x + 20 * D, y + 20, NMAX - 20, D, &cfg, grad_fn,
                                   &m, &err),
                     EB_OK);
    assert_memory_equal(adv, split, sizeof adv);
    /* one step of size eps from x is FGSM */
    assert_int_equal(eb_attack_fgsm(fgsm, x, y, NMAX, D, eps, grad_fn, &m, &err), EB_OK);
    cfg = (eb_pgd_config){eps, eps, 1, 0, 0, 0, 0, 0, 0};
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m, &err), EB_OK);
    assert_memory_equal(adv, fgsm, sizeof adv);
    /* eps = 0: x, no gradient */
    cfg = (eb_pgd_config){0.0f, 0.0f, 5, 1, 7, 0, 0, 0, 0};
    m.calls = 0;
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m, &err), EB_OK);
    assert_memory_equal(adv, x, sizeof x);
    assert_int_equal(m.calls, 0);
}

/* The predicted class of a 3-class model at x: first maximum. */
static int predicted(const model *m, const float *x)
{
    double p[KMAX];
    int best = 0;
    probs_of(m, x, p);
    for (int c = 1; c < m->k; c++)
        if (p[c] > p[best])
            best = c;
    return best;
}

/* keep_best with the FGSM candidate: with a random start (where the last
 * iterate can end weaker than FGSM, see above), the result is, example by
 * example, misclassified whenever FGSM's is, and otherwise at least as
 * high in loss; it stays in the ball; it costs steps + 3 gradient calls. */
static void test_pgd_keep_best(void **state)
{
    static float x[NMAX * D], fgsm[NMAX * D], adv[NMAX * D], last[NMAX * D];
    uint8_t y[NMAX];
    const float eps = 0.1f;
    eb_pgd_config cfg = {eps, 0.0f, EB_PGD_DEFAULT_STEPS, 1, 42, 0, 1, 1, 3};
    eb_pgd_config plain = {eps, 0.0f, EB_PGD_DEFAULT_STEPS, 1, 42, 0, 0, 0, 0};
    model m3 = MODEL3;
    eb_error err;
    size_t fgsm_wrong = 0, pgd_wrong = 0, last_weaker = 0;
    (void)state;
    inputs(x, y, NMAX, 3, 2);
    assert_int_equal(eb_attack_fgsm(fgsm, x, y, NMAX, D, eps, grad_fn, &m3, &err), EB_OK);
    assert_int_equal(eb_attack_pgd(last, x, y, NMAX, D, &plain, grad_fn, &m3, &err), EB_OK);
    m3.calls = 0;
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m3, &err), EB_OK);
    assert_int_equal(m3.calls, EB_PGD_DEFAULT_STEPS + 3);
    assert_true(ball_radius(adv, x, NMAX * D) <= eps + 1e-6);
    for (size_t i = 0; i < NMAX; i++) {
        int f_wrong = predicted(&m3, fgsm + i * D) != y[i];
        int p_wrong = predicted(&m3, adv + i * D) != y[i];
        fgsm_wrong += (size_t)f_wrong;
        pgd_wrong += (size_t)p_wrong;
        last_weaker += loss_of(&m3, last + i * D, y[i]) < loss_of(&m3, fgsm + i * D, y[i]);
        if (f_wrong)
            assert_true(p_wrong);
        else if (!p_wrong)
            assert_true(loss_of(&m3, adv + i * D, y[i]) >=
                        loss_of(&m3, fgsm + i * D, y[i]) - 1e-9);
    }
    printf("keep_best: %zu of %d misclassified (FGSM %zu); the plain last iterate was weaker "
           "than FGSM on %zu\n",
           pgd_wrong, NMAX, fgsm_wrong, last_weaker);
    assert_true(pgd_wrong >= fgsm_wrong);
    /* keep_best needs the class count */
    cfg.n_classes = 0;
    assert_int_equal(eb_attack_pgd(adv, x, y, NMAX, D, &cfg, grad_fn, &m3, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "n_classes"));
}

static void test_errors(void **state)
{
    float x[4 * D], adv[4 * D];
    uint8_t y[4];
    eb_pgd_config cfg = {0.1f, 0.0f, 3, 1, 1, 0, 0, 0, 0};
    model m = MODEL3;
    eb_error err;
    (void)state;
    inputs(x, y, 4, 3, 3);
    assert_int_equal(eb_attack_fgsm(adv, x, y, 4, D, -0.1f, grad_fn, &m, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "FGSM: epsilon -0.1"));
    assert_int_equal(eb_attack_fgsm(adv, x, y, 4, D, NAN, grad_fn, &m, &err), EB_ERR_ARG);
    x[D + 3] = 1.5f;
    assert_int_equal(eb_attack_fgsm(adv, x, y, 4, D, 0.1f, grad_fn, &m, &err), EB_ERR_ARG);
    assert_string_equal(err.msg, "FGSM: input 1 value 3 is 1.5, outside [0, 1]");
    x[D + 3] = 0.5f;
    assert_int_equal(eb_attack_pgd(x, x, y, 4, D, &cfg, grad_fn, &m, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "x_adv must not be x"));
    cfg.steps = 0;
    assert_int_equal(eb_attack_pgd(adv, x, y, 4, D, &cfg, grad_fn, &m, &err), EB_ERR_ARG);
    assert_string_equal(err.msg, "PGD: steps 0 must be >= 1");
    cfg.steps = 3;
    cfg.step = -1.0f;
    assert_int_equal(eb_attack_pgd(adv, x, y, 4, D, &cfg, grad_fn, &m, &err), EB_ERR_ARG);
    cfg.step = 0.0f;
    assert_int_equal(eb_attack_pgd(adv, x, y, 4, D, NULL, grad_fn, &m, &err), EB_ERR_ARG);
    /* the callback's error, and a NaN gradient, come back named */
    m = (model){W3, 3, 0, 2, 0};
    assert_int_equal(eb_attack_pgd(adv, x, y, 4, D, &cfg, grad_fn, &m, &err), EB_ERR_IO);
    assert_string_equal(err.msg, "PGD step 2 of 3: gradient callback: the device went away");
    m = (model){W3, 3, 0, 1, 0};
    assert_int_equal(eb_attack_fgsm(adv, x, y, 4, D, 0.1f, grad_fn, &m, &err), EB_ERR_IO);
    assert_string_equal(err.msg, "FGSM: gradient callback: the device went away");
    m = (model){W3, 3, 0, 0, 1};
    assert_int_equal(eb_attack_fgsm(adv, x, y, 4, D, 0.1f, grad_fn, &m, &err), EB_ERR_NUMERIC);
    assert_string_equal(err.msg, "FGSM: gradient of input 1 value 2 is NaN");
    /* the gradient buffer's allocation */
    m = (model){W3, 3, 0, 0, 0};
    eb_alloc_fail_at(1);
    assert_int_equal(eb_attack_pgd(adv, x, y, 4, D, &cfg, grad_fn, &m, &err), EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
    eb_alloc_fail_at(1);
    assert_int_equal(eb_attack_fgsm(adv, x, y, 4, D, 0.1f, grad_fn, &m, &err), EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
    /* nothing to attack */
    assert_int_equal(eb_attack_fgsm(adv, x, y, 0, D, 0.1f, grad_fn, &m, &err), EB_OK);
}

/* The callback a device gives, here straight from a predictor. */
typedef struct predictor_grad {
    eb_predictor *pr;
    uint32_t S;
    uint64_t seed;
} predictor_grad;

static eb_status predictor_grad_fn(void *ctx, const float *x, const uint8_t *y, size_t n,
                                   float *dx, float *pbar, eb_error *err)
{
    predictor_grad *g = ctx;
    return eb_predictor_input_grad(g->pr, x, y, n, g->S, g->seed, 0, dx, pbar, err);
}

static double predictive_nll(eb_predictor *pr, const float *x, const uint8_t *y, size_t n,
                             uint32_t S, float *probs, float *pbar)
{
    assert_int_equal(eb_predictor_run(pr, x, n, S, 1, 0, probs, NULL), EB_OK);
    eb_metric_predictive(pbar, probs, n, S, 10);
    return eb_metric_nll(pbar, y, n, 10);
}

/* End to end through eb_predictor_input_grad: a 3-member MLP ensemble on
 * random weights, 8 random images. Both attacks raise the predictive NLL
 * and stay in the ball. */
static void test_through_predictor(void **state)
{
    enum { N = 8, S = 3, IN = 784 };
    static float x[N * IN], adv[N * IN], probs[N * S * 10], pbar[N * 10];
    uint8_t y[N];
    eb_posterior p;
    eb_predictor *pr;
    predictor_grad g;
    eb_pgd_config cfg = {0.05f, 0.0f, 5, 1, 3, 0, 0, 0, 0};
    float *params;
    double clean, fgsm, pgd;
    eb_error err;
    eb_rng r;
    (void)state;
    memset(&p, 0, sizeof p);
    assert_int_equal(eb_arch_parse("input 28x28x1; flatten; dense 16; relu; dense 10", &p.arch,
                                   &err),
                     EB_OK);
    params = eb_malloc((size_t)S * p.arch.n_params * sizeof *params);
    assert_non_null(params);
    eb_rng_seed(&r, 8, 0);
    for (uint32_t s = 0; s < S; s++)
        eb_arch_init_params(&p.arch, params + (size_t)s * p.arch.n_params, &r);
    p.repr = EB_REPR_SAMPLES;
    p.members = S;
    p.k = p.arch.n_params;
    p.params = params;
    assert_int_equal(eb_predictor_new(&p, N, S, &pr, &err), EB_OK);
    for (size_t i = 0; i < N * IN; i++)
        x[i] = eb_rng_uniformf(&r);
    for (size_t i = 0; i < N; i++)
        y[i] = (uint8_t)eb_rng_below(&r, 10);
    g = (predictor_grad){pr, S, 1};
    clean = predictive_nll(pr, x, y, N, S, probs, pbar);
    assert_int_equal(eb_attack_fgsm(adv, x, y, N, IN, 0.05f, predictor_grad_fn, &g, &err), EB_OK);
    fgsm = predictive_nll(pr, adv, y, N, S, probs, pbar);
    assert_int_equal(eb_attack_pgd(adv, x, y, N, IN, &cfg, predictor_grad_fn, &g, &err), EB_OK);
    assert_true(ball_radius(adv, x, N * IN) <= 0.05 + 1e-7);
    pgd = predictive_nll(pr, adv, y, N, S, probs, pbar);
    printf("predictor: predictive NLL clean %.4f, FGSM %.4f, PGD %.4f (eps 0.05)\n", clean, fgsm,
           pgd);
    assert_true(fgsm > clean);
    assert_true(pgd > clean);
    eb_predictor_free(pr);
    eb_free(params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fgsm_exact),
        cmocka_unit_test(test_pgd_against_fgsm),
        cmocka_unit_test(test_pgd_determinism),
        cmocka_unit_test(test_pgd_keep_best),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_through_predictor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
