/* test_distill.c: the distill transform and prediction from distilled
 * students. Numerics: digamma and the Dirichlet log-pdf against values
 * worked by hand, the Dirichlet's expected entropy against Monte Carlo,
 * the precision solve as a round trip, every student loss (soft
 * cross-entropy, gped's entropy head, end2's tempered Dirichlet NLL)
 * against central finite differences. Prediction (an eb_posterior built
 * in memory): a bdk student's draws are softmax(z); a gped student's draws
 * have mean pbar and mean entropy equal to its head's value, an end2
 * student's draws mean alpha/alpha0, all within Monte Carlo error; draws
 * do not depend on batching; the input gradient matches finite
 * differences. The transform: each kind trains on a tiny synthetic set,
 * fits its teacher, is deterministic (same bytes), and refuses bad
 * settings. Sized students (student=mlp:W1,..., cnn:C1,C2,D) get the
 * architecture they name. Pruned students (sparsity > 0): every weighted
 * layer has exactly round(sparsity * n_weights) zero weights (the rule of
 * eb_prune_mask's layer scope), the clean-set loss after each cycle's
 * fine-tuning is not above the loss right after its cut, the bundle is
 * stored shared-sparse and is smaller than the dense student's, and the
 * same seed gives the same bundle bytes. */
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
#include "methods/eb_distill.h"
#include "methods/eb_methods.h"
#include "methods/eb_prune.h"

/* ---- numerics ------------------------------------------------------------ */

static void test_digamma(void **state)
{
    (void)state;
    /* psi(1) = -gamma; psi(1/2) = -gamma - 2 ln 2; psi(10) = H_9 - gamma */
    const double gamma_e = 0.57721566490153286;
    const double want[3] = {-gamma_e, -gamma_e - 2.0 * log(2.0), 2.8289682539682540 - gamma_e};
    const double x[3] = {1.0, 0.5, 10.0};
    double worst = 0.0;
    for (int i = 0; i < 3; i++) {
        double e = fabs(eb_digamma(x[i]) - want[i]);
        worst = e > worst ? e : worst;
    }
    /* recurrence psi(x + 1) = psi(x) + 1/x at small and large x */
    for (double v = 1e-3; v < 100.0; v *= 3.7) {
        double e = fabs(eb_digamma(v + 1.0) - eb_digamma(v) - 1.0 / v) / (1.0 + 1.0 / v);
        worst = e > worst ? e : worst;
    }
    printf("digamma: max error %.3g\n", worst);
    assert_true(worst < 1e-12);
}

static void test_dirichlet_logpdf(void **state)
{
    (void)state;
    const double alpha[3] = {2, 3, 4}, p[3] = {0.2, 0.3, 0.5};
    /* By hand: lgamma(9) - lgamma(2) - lgamma(3) - lgamma(4)
     *   + 1 ln 0.2 + 2 ln 0.3 + 3 ln 0.5
     * = ln 40320 - 0 - ln 2 - ln 6 - 1.6094379 - 2.4079456 - 2.0794415
     * = 2.0228711901914385 (python3: math.lgamma/math.log; this is what
     * scipy.stats.dirichlet.logpdf([.2,.3,.5], [2,3,4]) computes). */
    const double want = 2.0228711901914385;
    double got = eb_dirichlet_logpdf(alpha, p, 3);
    printf("dirichlet logpdf: %.15g, want %.15g, error %.3g\n", got, want, fabs(got - want));
    assert_true(fabs(got - want) < 1e-12);
    /* Dir(1, 1) is uniform on the simplex: density 1 */
    {
        const double a1[2] = {1, 1}, q[2] = {0.3, 0.7};
        assert_true(fabs(eb_dirichlet_logpdf(a1, q, 2)) < 1e-14);
    }
}

static double entropy_f(const float *p, int C)
{
    double h = 0.0;
    for (int c = 0; c < C; c++)
        if (p[c] > 0.0f)
            h -= (double)p[c] * log((double)p[c]);
    return h;
}

/* Monte Carlo mean and standard error of H(p) and of each p_c for
 * p ~ Dir(alpha), n draws. */
static void dirichlet_mc(const double *alpha, int C, int n, uint64_t seed, double *h_mean,
                         double *h_se, double *p_mean, double *p_se)
{
    eb_rng r;
    float p[16];
    double hs = 0.0, hs2 = 0.0, ps[16] = {0}, ps2[16] = {0};
    eb_rng_seed(&r, seed, 1);
    for (int i = 0; i < n; i++) {
        double h;
        eb_dirichlet_draw(p, alpha, C, &r);
        h = entropy_f(p, C);
        hs += h;
        hs2 += h * h;
        for (int c = 0; c < C; c++) {
            ps[c] += p[c];
            ps2[c] += (double)p[c] * p[c];
        }
    }
    *h_mean = hs / n;
    *h_se = sqrt((hs2 / n - *h_mean * *h_mean) / n);
    for (int c = 0; c < C; c++) {
        p_mean[c] = ps[c] / n;
        p_se[c] = sqrt((ps2[c] / n - p_mean[c] * p_mean[c]) / n) + 1e-12;
    }
}

static void test_expected_entropy_mc(void **state)
{
    (void)state;
    const float pbar[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    const double a0s[4] = {0.05, 0.8, 5.0, 200.0};
    for (int k = 0; k < 4; k++) {
        double alpha[4], hm, hse, pm[4], pse[4];
        double want = eb_dirichlet_expected_entropy(a0s[k], pbar, 4);
        for (int c = 0; c < 4; c++)
            alpha[c] = a0s[k] * pbar[c];
        dirichlet_mc(alpha, 4, 40000, 7 + (uint64_t)k, &hm, &hse, pm, pse);
        printf("alpha0 %g: E[H] formula %.5f, Monte Carlo %.5f +- %.5f\n", a0s[k], want, hm, hse);
        assert_true(fabs(hm - want) < 4.0 * hse + 1e-9);
        for (int c = 0; c < 4; c++)
            assert_true(fabs(pm[c] - pbar[c]) < 4.0 * pse[c] + 1e-6);
    }
    /* the limits: 0 as alpha0 -> 0, H[pbar] as alpha0 -> inf */
    assert_true(eb_dirichlet_expected_entropy(1e-9, pbar, 4) < 1e-6);
    assert_true(fabs(eb_dirichlet_expected_entropy(1e12, pbar, 4) - entropy_f(pbar, 4)) < 1e-6);
}

static void test_solve_precision(void **state)
{
    (void)state;
    const float pbar[3] = {0.7f, 0.2f, 0.1f};
    const double H = entropy_f(pbar, 3);
    double worst = 0.0;
    for (int i = 1; i < 20; i++) {
        const double h = H * i / 20.0;
        const double a0 = eb_dirichlet_solve_precision(pbar, 3, h);
        const double e = fabs(eb_dirichlet_expected_entropy(a0, pbar, 3) - h);
        worst = e > worst ? e : worst;
    }
    printf("precision solve: max |E[H] - h| %.3g\n", worst);
    assert_true(worst < 1e-9);
    /* out of reach: clamped to the ends of the bracket */
    assert_true(eb_dirichlet_solve_precision(pbar, 3, 10.0) >= 1e8 * 0.999);
    assert_true(eb_dirichlet_solve_precision(pbar, 3, -1.0) <= 1e-4 * 1.001);
}

/* ---- loss gradients by central finite differences ------------------------ */

typedef double (*loss_fn)(float *dz, const float *z, void *ctx);

static void check_fd(const char *name, loss_fn f, float *z, int len, void *ctx)
{
    float *dz = malloc((size_t)len * sizeof *dz);
    double worst = 0.0;
    f(dz, z, ctx);
    for (int k = 0; k < len; k++) {
        const float z0 = z[k], h = 1e-2f;
        double lp, lm, fd, e;
        z[k] = z0 + h;
        lp = f(NULL, z, ctx);
        z[k] = z0 - h;
        lm = f(NULL, z, ctx);
        z[k] = z0;
        fd = (lp - lm) / (2.0 * h);
        e = fabs(fd - dz[k]) / (1.0 + fabs(fd));
        worst = e > worst ? e : worst;
    }
    printf("%s: max relative gradient error %.3g over %d outputs\n", name, worst, len);
    assert_true(worst < 1e-3);
    free(dz);
}

typedef struct loss_ctx {
    int n, C, S;
    const float *t, *ent, *p;
    double T, smooth;
} loss_ctx;

static double soft_xent_f(float *dz, const float *z, void *vc)
{
    loss_ctx *c = vc;
    /* O = C + 1: the extra column must get no gradient */
    return eb_distill_soft_xent(dz, z, c->t, c->n, c->C + 1, c->C, 1.0f / (float)c->n);
}

static double gped_f(float *dz, const float *z, void *vc)
{
    loss_ctx *c = vc;
    return eb_distill_gped_loss(dz, z, c->t, c->ent, c->n, c->C, 2.5f, 1.0f / (float)c->n);
}

static double end2_f(float *dz, const float *z, void *vc)
{
    loss_ctx *c = vc;
    return eb_distill_end2_loss(dz, z, c->p, c->n, c->S, c->C, c->T, c->smooth,
                                1.0f / (float)c->n);
}

/* Random member probabilities p (n, S, C) with a spread of confidences. */
static void random_members(float *p, int n, int S, int C, eb_rng *r)
{
    for (int i = 0; i < n * S; i++) {
        float z[16];
        for (int c = 0; c < C; c++)
            z[c] = (float)(2.0 * eb_rng_normal(r));
        eb_softmax(p + (size_t)i * C, z, 1, C);
    }
}

static void test_loss_gradients(void **state)
{
    (void)state;
    enum { n = 4, C = 5, S = 6 };
    float z[n * (C + 1)], p[n * S * C], t[n * C], ent[n];
    loss_ctx c = {n, C, S, t, ent, p, 1.0, 1e-4};
    eb_rng r;
    eb_rng_seed(&r, 3, 0);
    random_members(p, n, S, C, &r);
    eb_distill_teacher_stats(t, ent, p, n, S, C);
    for (int i = 0; i < n * (C + 1); i++)
        z[i] = (float)eb_rng_normal(&r);
    check_fd("soft cross-entropy", soft_xent_f, z, n * (C + 1), &c);
    {
        float dz[n * (C + 1)];
        soft_xent_f(dz, z, &c);
        for (int i = 0; i < n; i++)
            assert_true(dz[i * (C + 1) + C] == 0.0f);
    }
    check_fd("gped loss", gped_f, z, n * (C + 1), &c);
    /* end2: log-concentrations around 1..3, at T = 1 and a hot T = 4 */
    for (int i = 0; i < n * C; i++)
        z[i] = (float)(1.5 + 0.8 * eb_rng_normal(&r));
    check_fd("end2 NLL, T=1", end2_f, z, n * C, &c);
    c.T = 4.0;
    c.smooth = 0.01;
    check_fd("end2 NLL, T=4", end2_f, z, n * C, &c);
    /* the end2 loss is the mean negative log-pdf of the tempered targets */
    {
        double alpha[C], q[C], want = 0.0, lq[C], m = -1e300, s = 0.0;
        for (int k = 0; k < C; k++)
            alpha[k] = exp(z[k]);
        for (int sm = 0; sm < S; sm++) {
            m = -1e300;
            s = 0.0;
            for (int k = 0; k < C; k++) {
                lq[k] = log((1.0 - c.smooth) * p[sm * C + k] + c.smooth / C) / c.T;
                m = lq[k] > m ? lq[k] : m;
            }
            for (int k = 0; k < C; k++)
                s += exp(lq[k] - m);
            for (int k = 0; k < C; k++)
                q[k] = exp(lq[k] - m) / s;
            want -= eb_dirichlet_logpdf(alpha, q, C) / S;
        }
        {
            double got = eb_distill_end2_loss(NULL, z, p, 1, S, C, c.T, c.smooth, 1.0f);
            printf("end2 loss %.12g, mean -logpdf %.12g\n", got, want);
            assert_true(fabs(got - want) < 1e-9 * (1.0 + fabs(want)));
        }
    }
}

/* ---- prediction from in-memory students ----------------------------------- */

typedef struct student {
    eb_posterior p;
    float *theta;
} student;

static void make_student(student *st, eb_head_kind head, int C, uint32_t draws, float gain)
{
    char arch[128];
    eb_rng r;
    memset(st, 0, sizeof *st);
    snprintf(arch, sizeof arch, "input 3x3x1; flatten; dense 8; relu; dense %d",
             C + (head == EB_HEAD_GPED));
    assert_int_equal(eb_arch_parse(arch, &st->p.arch, NULL), EB_OK);
    st->theta = malloc(st->p.arch.n_params * sizeof *st->theta);
    eb_rng_seed(&r, 99, (uint64_t)head);
    eb_arch_init_params(&st->p.arch, st->theta, &r);
    for (size_t i = 0; i < st->p.arch.n_params; i++)
        st->theta[i] = gain * st->theta[i] + 0.2f * (float)eb_rng_normal(&r);
    st->p.repr = EB_REPR_DISTILLED;
    st->p.head = head;
    st->p.members = draws;
    st->p.k = st->p.arch.n_params;
    st->p.params = st->theta;
}

static void random_inputs(float *x, size_t n, eb_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = eb_rng_uniformf(r);
}

static void test_predict_bdk(void **state)
{
    (void)state;
    student s;
    eb_net *net;
    float x[5 * 9], probs[5 * 3 * 4], sm[5 * 4];
    const float *z;
    eb_rng r;
    double worst = 0.0;
    make_student(&s, EB_HEAD_CATEGORICAL, 4, 1, 1.0f);
    assert_int_equal(eb_posterior_classes(&s.p), 4);
    assert_int_equal(eb_posterior_default_draws(&s.p), 1);
    eb_rng_seed(&r, 1, 1);
    random_inputs(x, 5 * 9, &r);
    assert_int_equal(eb_net_new(&s.p.arch, 5, &net, NULL), EB_OK);
    z = eb_net_forward(net, s.theta, x, 5, NULL);
    eb_softmax(sm, z, 5, 4);
    assert_int_equal(eb_posterior_predict(&s.p, x, 5, 3, 11, 2, probs, NULL), EB_OK);
    for (int i = 0; i < 5; i++)
        for (int d = 0; d < 3; d++)
            for (int c = 0; c < 4; c++) {
                double e = fabs(probs[(i * 3 + d) * 4 + c] - sm[i * 4 + c]);
                worst = e > worst ? e : worst;
            }
    printf("bdk: max |draw - softmax| %.3g\n", worst);
    assert_true(worst < 1e-6);
    eb_net_free(net);
    free(s.theta);
}

/* Draw statistics of a gped or end2 student: the mean of S draws against
 * the head's mean m, and (gped) the draws' mean entropy against the head's
 * value h, within 4.5 standard errors. */
static void check_dirichlet_student(eb_head_kind head)
{
    enum { n = 6, C = 4, S = 6000 };
    student s;
    eb_net *net;
    float x[n * 9];
    float *probs = malloc((size_t)n * S * C * sizeof *probs);
    const float *z;
    eb_rng r;
    make_student(&s, head, C, 100, 1.5f);
    assert_int_equal(eb_posterior_classes(&s.p), C);
    eb_rng_seed(&r, 2, 2);
    random_inputs(x, n * 9, &r);
    assert_int_equal(eb_net_new(&s.p.arch, n, &net, NULL), EB_OK);
    z = eb_net_forward(net, s.theta, x, n, NULL);
    assert_int_equal(eb_posterior_predict(&s.p, x, n, S, 21, 0, probs, NULL), EB_OK);
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * s.p.arch.n_classes;
        double m[C], a0 = 0.0, hs = 0.0, hs2 = 0.0, h_mean, h_se;
        if (head == EB_HEAD_GPED) {
            float zc[C];
            memcpy(zc, zi, sizeof zc);
            eb_softmax(zc, zc, 1, C);
            for (int c = 0; c < C; c++)
                m[c] = zc[c];
        } else {
            for (int c = 0; c < C; c++)
                a0 += exp(zi[c]);
            for (int c = 0; c < C; c++)
                m[c] = exp(zi[c]) / a0;
        }
        for (int c = 0; c < C; c++) {
            double ms = 0.0, ms2 = 0.0, se;
            for (int d = 0; d < S; d++) {
                const double v = probs[((size_t)i * S + d) * C + c];
                ms += v;
                ms2 += v * v;
            }
            ms /= S;
            se = sqrt((ms2 / S - ms * ms) / S);
            assert_true(fabs(ms - m[c]) < 4.5 * se + 1e-6);
        }
        for (int d = 0; d < S; d++) {
            const double h = entropy_f(probs + ((size_t)i * S + d) * C, C);
            hs += h;
            hs2 += h * h;
        }
        h_mean = hs / S;
        h_se = sqrt((hs2 / S - h_mean * h_mean) / S);
        if (head == EB_HEAD_GPED) {
            float pb[C];
            double head_h = log((double)C) / (1.0 + exp(-(double)zi[C])), H, want;
            for (int c = 0; c < C; c++)
                pb[c] = (float)m[c];
            H = entropy_f(pb, C);
            /* the mapping clamps h to what a Dirichlet with mean pbar reaches */
            want = head_h < H ? head_h : eb_dirichlet_expected_entropy(1e8, pb, C);
            printf("gped example %d: head h %.4f (H[pbar] %.4f), draws' mean entropy %.4f +- "
                   "%.4f\n", i, head_h, H, h_mean, h_se);
            assert_true(fabs(h_mean - want) < 4.5 * h_se + 1e-4);
        } else {
            double alpha[C];
            for (int c = 0; c < C; c++)
                alpha[c] = a0 * m[c];
            printf("end2 example %d: alpha0 %.3f, E[H] %.4f, draws' mean entropy %.4f +- %.4f\n",
                   i, a0, eb_dirichlet_expected_entropy(a0, (float[]){(float)m[0], (float)m[1],
                                                                    (float)m[2], (float)m[3]},
                                                        C),
                   h_mean, h_se);
            (void)alpha;
        }
    }
    /* keyed by example: the same draws whatever the batching */
    {
        eb_predictor *pr;
        float *again = malloc((size_t)n * 50 * C * sizeof *again);
        float *once = malloc((size_t)n * 50 * C * sizeof *once);
        assert_int_equal(eb_posterior_predict(&s.p, x, n, 50, 21, 0, once, NULL), EB_OK);
        assert_int_equal(eb_predictor_new(&s.p, 4, 50, &pr, NULL), EB_OK);
        assert_int_equal(eb_predictor_run(pr, x, 2, 50, 21, 0, again, NULL), EB_OK);
        assert_int_equal(eb_predictor_run(pr, x + 2 * 9, n - 2, 50, 21, 2, again + 2 * 50 * C,
                                          NULL),
                         EB_OK);
        assert_memory_equal(once, again, (size_t)n * 50 * C * sizeof *once);
        /* another seed, other draws */
        assert_int_equal(eb_predictor_run(pr, x, 2, 50, 22, 0, again, NULL), EB_OK);
        assert_memory_not_equal(once, again, 2 * 50 * C * sizeof *once);
        eb_predictor_free(pr);
        free(again);
        free(once);
    }
    eb_net_free(net);
    free(probs);
    free(s.theta);
}

static void test_predict_gped(void **state)
{
    (void)state;
    check_dirichlet_student(EB_HEAD_GPED);
}

static void test_predict_end2(void **state)
{
    (void)state;
    check_dirichlet_student(EB_HEAD_DIRICHLET);
}

/* The input gradient of -log m_y (m the head's mean) against central
 * finite differences of that mean, computed through the network. */
static void check_input_grad(eb_head_kind head)
{
    enum { n = 3, C = 4 };
    student s;
    eb_predictor *pr;
    eb_net *net;
    float x[n * 9], dx[n * 9], pbar[n * C];
    const uint8_t y[n] = {0, 3, 1};
    eb_rng r;
    double worst = 0.0;
    make_student(&s, head, C, 10, 1.0f);
    eb_rng_seed(&r, 4, 4);
    random_inputs(x, n * 9, &r);
    assert_int_equal(eb_predictor_new(&s.p, 2, 0, &pr, NULL), EB_OK);
    assert_int_equal(eb_net_new(&s.p.arch, n, &net, NULL), EB_OK);
    assert_int_equal(eb_predictor_input_grad(pr, x, y, n, 0, 5, 0, dx, pbar, NULL), EB_OK);
    for (int k = 0; k < n * 9; k++) {
        const int i = k / 9, O = s.p.arch.n_classes;
        const float x0 = x[k], h = 1e-3f;
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float m[C], zc[C];
            const float *z;
            x[k] = x0 + (sgn ? -h : h);
            z = eb_net_forward(net, s.theta, x, n, NULL);
            for (int c = 0; c < C; c++)
                zc[c] = z[(size_t)i * O + c];
            eb_softmax(m, zc, 1, C);
            l[sgn] = -log((double)m[y[i]]);
        }
        x[k] = x0;
        {
            const double fd = (l[0] - l[1]) / (2.0 * h), e = fabs(fd - dx[k]) / (1.0 + fabs(fd));
            worst = e > worst ? e : worst;
        }
    }
    printf("head %d input gradient: max relative error %.3g\n", (int)head, worst);
    assert_true(worst < 2e-3);
    eb_net_free(net);
    eb_predictor_free(pr);
    free(s.theta);
}

static void test_input_grad(void **state)
{
    (void)state;
    check_input_grad(EB_HEAD_CATEGORICAL);
    check_input_grad(EB_HEAD_GPED);
    check_input_grad(EB_HEAD_DIRICHLET);
}

static void test_predict_refuses_bad_head(void **state)
{
    (void)state;
    student s;
    eb_predictor *pr;
    eb_error err;
    make_student(&s, EB_HEAD_CATEGORICAL, 4, 1, 1.0f);
    s.p.head = EB_HEAD_NONE;
    assert_int_equal(eb_predictor_new(&s.p, 4, 0, &pr, &err), EB_ERR_FORMAT);
    assert_null(pr);
    printf("refused: %s\n", err.msg);
    free(s.theta);
}

/* ---- the transform ------------------------------------------------------ */

enum { TN = 96, TC = 10, TS = 3 };

typedef struct fixture {
    eb_dataset data;
    eb_posterior teacher;
    float *teacher_params;
} fixture;

/* A tiny 28x28 training set and a random 3-member linear teacher whose
 * members disagree, so there is knowledge uncertainty to distil. */
static void make_fixture(fixture *f)
{
    eb_rng r;
    memset(f, 0, sizeof *f);
    snprintf(f->data.name, sizeof f->data.name, "synthetic");
    snprintf(f->data.split, sizeof f->data.split, "train");
    f->data.n = TN;
    f->data.c = 1;
    f->data.h = f->data.w = 28;
    f->data.n_classes = TC;
    f->data.x = eb_malloc_aligned(64, (size_t)TN * 784 * sizeof(float));
    f->data.y = malloc(TN);
    eb_rng_seed(&r, 5, 5);
    for (size_t i = 0; i < (size_t)TN * 784; i++)
        f->data.x[i] = eb_rng_uniformf(&r) < 0.3f ? eb_rng_uniformf(&r) : 0.0f;
    for (int i = 0; i < TN; i++)
        f->data.y[i] = (uint8_t)eb_rng_below(&r, TC);
    assert_int_equal(eb_arch_parse("input 28x28x1; flatten; dense 10", &f->teacher.arch, NULL),
                     EB_OK);
    f->teacher.repr = EB_REPR_SAMPLES;
    f->teacher.members = TS;
    f->teacher.k = f->teacher.arch.n_params;
    f->teacher_params = malloc((size_t)TS * f->teacher.k * sizeof(float));
    for (int s = 0; s < TS; s++)
        eb_arch_init_params(&f->teacher.arch, f->teacher_params + (size_t)s * f->teacher.k, &r);
    for (size_t i = 0; i < (size_t)TS * f->teacher.k; i++)
        f->teacher_params[i] *= 3.0f;
    f->teacher.params = f->teacher_params;
}

static void free_fixture(fixture *f)
{
    eb_free_aligned(f->data.x);
    free(f->data.y);
    free(f->teacher_params);
}

static eb_status distill(const fixture *f, const char *const *sets, uint64_t seed, eb_trained *out,
                         eb_error *err)
{
    eb_settings s;
    eb_transform_request req;
    assert_int_equal(eb_settings_init(&s, eb_transform_distill.settings, NULL), EB_OK);
    assert_int_equal(eb_settings_set(&s, "student", "mlp-small", NULL), EB_OK);
    assert_int_equal(eb_settings_set(&s, "batch", "32", NULL), EB_OK);
    for (int i = 0; sets[i]; i++)
        assert_int_equal(eb_settings_assign(&s, sets[i], NULL), EB_OK);
    memset(&req, 0, sizeof req);
    req.posterior = &f->teacher;
    req.train = &f->data;
    req.settings = &s;
    req.seed = seed;
    req.threads = 1;
    return eb_transform_distill.apply(&req, out, err);
}

/* The mean over the training set of KL(teacher pbar || student mean), and
 * the student's expected data entropy error against the teacher's. */
static void fit_of(const fixture *f, const eb_trained *t, double *kl, double *ent_err)
{
    eb_posterior sp;
    float *tp = malloc((size_t)TN * TS * TC * sizeof *tp), tbar[TN * TC], tent[TN];
    float *spr = malloc((size_t)TN * 200 * TC * sizeof *spr), sbar[TN * TC], sent[TN];
    memset(&sp, 0, sizeof sp);
    sp.arch = t->arch;
    sp.repr = t->repr;
    sp.members = t->members;
    sp.k = t->arch.n_params;
    sp.params = t->params;
    sp.head = (eb_head_kind)t->head;
    assert_int_equal(eb_posterior_predict(&f->teacher, f->data.x, TN, TS, 1, 0, tp, NULL), EB_OK);
    assert_int_equal(eb_posterior_predict(&sp, f->data.x, TN, 200, 1, 0, spr, NULL), EB_OK);
    eb_distill_teacher_stats(tbar, tent, tp, TN, TS, TC);
    eb_distill_teacher_stats(sbar, sent, spr, TN, 200, TC);
    *kl = *ent_err = 0.0;
    for (int i = 0; i < TN; i++) {
        for (int c = 0; c < TC; c++)
            if (tbar[i * TC + c] > 0.0f)
                *kl += tbar[i * TC + c] * log(tbar[i * TC + c] / (sbar[i * TC + c] + 1e-12)) / TN;
        *ent_err += fabs(tent[i] - sent[i]) / TN;
    }
    free(tp);
    free(spr);
}

/* end2's objective at T = 1 over the training set. */
static double end2_nll(const fixture *f, const eb_trained *t)
{
    eb_net *net;
    float *tp = malloc((size_t)TN * TS * TC * sizeof *tp);
    const float *z;
    double v;
    assert_int_equal(eb_net_new(&t->arch, TN, &net, NULL), EB_OK);
    assert_int_equal(eb_posterior_predict(&f->teacher, f->data.x, TN, TS, 1, 0, tp, NULL), EB_OK);
    z = eb_net_forward(net, t->params, f->data.x, TN, NULL);
    v = eb_distill_end2_loss(NULL, z, tp, TN, TS, TC, 1.0, 1e-4, 1.0f);
    eb_net_free(net);
    free(tp);
    return v;
}

static void test_transform_kinds(void **state)
{
    (void)state;
    fixture f;
    const char *kinds[3] = {"kind=bdk", "kind=gped", "kind=end2"};
    const eb_head_kind heads[3] = {EB_HEAD_CATEGORICAL, EB_HEAD_GPED, EB_HEAD_DIRICHLET};
    make_fixture(&f);
    for (int k = 0; k < 3; k++) {
        const char *sets[] = {kinds[k], "epochs=1", "anneal_epochs=0", NULL};
        const char *long_sets[] = {kinds[k], "epochs=60", "lr=0.003", "anneal_epochs=20", NULL};
        eb_trained t1, t2;
        eb_error err;
        double kl0, kl, e0, e;
        assert_int_equal(distill(&f, sets, 3, &t1, &err), EB_OK);
        assert_int_equal(t1.repr, EB_REPR_DISTILLED);
        assert_int_equal(t1.rows, 1);
        assert_int_equal(t1.head, heads[k]);
        assert_int_equal(t1.members, heads[k] == EB_HEAD_CATEGORICAL ? 1 : 100);
        assert_int_equal(t1.arch.n_classes, TC + (heads[k] == EB_HEAD_GPED));
        assert_non_null(strstr(t1.meta, "distill.epoch_loss="));
        assert_non_null(strstr(t1.meta, "distill.teacher_draws=3\n"));
        fit_of(&f, &t1, &kl0, &e0);
        /* same seed and threads: the same student bytes */
        assert_int_equal(distill(&f, sets, 3, &t2, &err), EB_OK);
        assert_memory_equal(t1.params, t2.params, t1.arch.n_params * sizeof(float));
        eb_trained_free(&t2);
        /* another seed: another student */
        assert_int_equal(distill(&f, sets, 4, &t2, &err), EB_OK);
        assert_memory_not_equal(t1.params, t2.params, t1.arch.n_params * sizeof(float));
        eb_trained_free(&t2);
        /* trained longer, it fits the teacher */
        assert_int_equal(distill(&f, long_sets, 3, &t2, &err), EB_OK);
        fit_of(&f, &t2, &kl, &e);
        printf("%s: KL(teacher || student) %.4f after 1 epoch, %.4f after 60; |data entropy "
               "error| %.4f -> %.4f\n", kinds[k], kl0, kl, e0, e);
        assert_true(kl < 0.5 * kl0);
        if (heads[k] == EB_HEAD_DIRICHLET) {
            /* a Dirichlet cannot match 3 disagreeing members exactly: it
             * must fit their mean and lower its own objective */
            const double nll0 = end2_nll(&f, &t1), nll = end2_nll(&f, &t2);
            printf("end2: Dirichlet NLL of the members (T = 1) %.4f -> %.4f\n", nll0, nll);
            assert_true(kl < 0.1);
            assert_true(nll < nll0 - 1.0);
        } else {
            assert_true(kl < 0.05);
        }
        if (heads[k] == EB_HEAD_GPED) {
            assert_true(e < 0.5 * e0);
            assert_true(e < 0.05);
        }
        if (heads[k] == EB_HEAD_DIRICHLET)
            assert_non_null(strstr(t2.meta, "distill.epoch_temperature=10,"));
        eb_trained_free(&t1);
        eb_trained_free(&t2);
    }
    free_fixture(&f);
}

static void test_transform_augment(void **state)
{
    (void)state;
    fixture f;
    const char *augs[2] = {"augment=noise", "augment=shift"};
    make_fixture(&f);
    for (int a = 0; a < 2; a++) {
        const char *sets[] = {"kind=gped", "epochs=2", augs[a], NULL};
        const char *plain[] = {"kind=gped", "epochs=2", NULL};
        eb_trained t1, t2, t3;
        assert_int_equal(distill(&f, sets, 3, &t1, NULL), EB_OK);
        assert_int_equal(distill(&f, sets, 3, &t2, NULL), EB_OK);
        assert_int_equal(distill(&f, plain, 3, &t3, NULL), EB_OK);
        assert_memory_equal(t1.params, t2.params, t1.arch.n_params * sizeof(float));
        /* the perturbed inputs change what is learnt */
        assert_memory_not_equal(t1.params, t3.params, t1.arch.n_params * sizeof(float));
        eb_trained_free(&t1);
        eb_trained_free(&t2);
        eb_trained_free(&t3);
    }
    free_fixture(&f);
}

/* A gaussian teacher: its default draws, or teacher_draws of them, are
 * sampled per example; the student still fits the draws' predictive. */
static void test_transform_gaussian_teacher(void **state)
{
    (void)state;
    fixture f;
    eb_trained t;
    float *sigma;
    const char *sets[] = {"kind=gped", "epochs=1", "teacher_draws=7", NULL};
    make_fixture(&f);
    sigma = f.teacher_params + f.teacher.k; /* row 1 of the samples: reuse as sigma */
    for (size_t i = 0; i < f.teacher.k; i++)
        sigma[i] = 0.05f;
    f.teacher.repr = EB_REPR_GAUSSIAN;
    f.teacher.sigma = sigma;
    f.teacher.members = 30;
    assert_int_equal(distill(&f, sets, 2, &t, NULL), EB_OK);
    assert_non_null(strstr(t.meta, "distill.teacher_draws=7\n"));
    assert_non_null(strstr(t.meta, "distill.teacher_repr=gaussian\n"));
    eb_trained_free(&t);
    {
        const char *dflt[] = {"kind=bdk", "epochs=1", NULL};
        assert_int_equal(distill(&f, dflt, 2, &t, NULL), EB_OK);
        assert_non_null(strstr(t.meta, "distill.teacher_draws=30\n"));
        eb_trained_free(&t);
    }
    free_fixture(&f);
}

static void test_transform_refuses(void **state)
{
    (void)state;
    fixture f;
    eb_trained t;
    eb_error err;
    const char *too_many[] = {"teacher_draws=4", NULL};
    const char *none[] = {NULL};
    eb_settings s;
    make_fixture(&f);
    assert_int_equal(distill(&f, too_many, 1, &t, &err), EB_ERR_ARG);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "teacher_draws"));
    assert_null(t.params);
    /* a 3x3 student input against 28x28 data */
    f.data.h = f.data.w = 3;
    assert_int_equal(distill(&f, none, 1, &t, &err), EB_ERR_ARG);
    printf("refused: %s\n", err.msg);
    f.data.h = f.data.w = 28;
    /* an end2 student still annealing at its last epoch */
    {
        const char *annealing[] = {"kind=end2", "epochs=3", "anneal_epochs=3", NULL};
        assert_int_equal(distill(&f, annealing, 1, &t, &err), EB_ERR_ARG);
        assert_non_null(strstr(err.msg, "anneal_epochs (3) must be below epochs (3)"));
        assert_null(t.params);
    }
    /* settings are validated on the way in */
    assert_int_equal(eb_settings_init(&s, eb_transform_distill.settings, NULL), EB_OK);
    assert_int_equal(eb_settings_set(&s, "kind", "kd", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_set(&s, "temperature", "0.5", &err), EB_ERR_ARG);
    assert_string_equal(eb_transform_distill.short_key, "kind");
    free_fixture(&f);
}

/* ---- sized and pruned students ------------------------------------------ */

static void test_sized_students(void **state)
{
    (void)state;
    fixture f;
    eb_trained t;
    eb_error err;
    eb_settings s;
    make_fixture(&f);
    {
        const char *sets[] = {"kind=gped", "epochs=1", "student=mlp:16,8", NULL};
        assert_int_equal(distill(&f, sets, 1, &t, &err), EB_OK);
        /* 784*16 + 16 + 16*8 + 8 + 8*11 + 11 (gped: C + 1 = 11 outputs) */
        assert_int_equal(t.arch.n_params, 784 * 16 + 16 + 16 * 8 + 8 + 8 * 11 + 11);
        assert_int_equal(t.arch.n_layers, 6);
        assert_int_equal(t.arch.layers[1].units, 16);
        assert_int_equal(t.arch.layers[3].units, 8);
        eb_trained_free(&t);
    }
    {
        const char *sets[] = {"kind=bdk", "epochs=1", "student=cnn:2,3,4", NULL};
        assert_int_equal(distill(&f, sets, 1, &t, &err), EB_OK);
        /* conv 9*2 + 2, conv 9*2*3 + 3, dense 5*5*3 = 75 -> 4, dense 4 -> 10 */
        assert_int_equal(t.arch.n_params, 20 + 57 + 75 * 4 + 4 + 4 * 10 + 10);
        eb_trained_free(&t);
    }
    {
        const char *sets[] = {"student=mlp:0,8", NULL};
        assert_int_equal(distill(&f, sets, 1, &t, &err), EB_ERR_ARG);
        printf("refused: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "setting 'student'"));
        assert_non_null(strstr(err.msg, "'mlp:0,8': width 1 is 0"));
        assert_null(t.params);
    }
    /* the setting takes a name or a sized form, nothing else */
    assert_int_equal(eb_settings_init(&s, eb_transform_distill.settings, NULL), EB_OK);
    assert_int_equal(eb_settings_set(&s, "student", "mlp:512,512", &err), EB_OK);
    assert_string_equal(eb_settings_str(&s, "student"), "mlp:512,512");
    assert_int_equal(eb_settings_set(&s, "student", "cnn", &err), EB_OK);
    assert_int_equal(eb_settings_set(&s, "student", "resnet", &err), EB_ERR_ARG);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "setting 'student'"));
    assert_int_equal(eb_settings_set(&s, "student", "mlp:", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_set(&s, "student", "mlp: 64", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_set(&s, "student", "mlp-small:32", &err), EB_ERR_ARG);
    free_fixture(&f);
}

/* Writes t as a bundle (as the transform's writer does, without the
 * parent's metadata) to a file of this test, and returns its bytes. */
static char *bundle_bytes(const eb_trained *t, const char *name, size_t *len)
{
    char path[600];
    eb_bundle_writer *w;
    eb_error err;
    char *data;
    snprintf(path, sizeof path, "%s/distill_%d_%s", EB_TEST_BINARY_DIR, (int)getpid(), name);
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_trained_write_meta(t, w, &err), EB_OK);
    assert_int_equal(eb_trained_to_writer(t, w, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    assert_int_equal(eb_file_read_all(path, &data, len, &err), EB_OK);
    unlink(path);
    return data;
}

/* The "dense;pruned,tuned;..." list of distill.prune_loss. */
static int prune_losses(const eb_trained *t, double *dense, double *pruned, double *tuned, int max)
{
    const char *p = strstr(t->meta, "distill.prune_loss=");
    char *end;
    int n = 0;
    assert_non_null(p);
    p += strlen("distill.prune_loss=");
    *dense = strtod(p, &end);
    while (*end == ';' && n < max) {
        pruned[n] = strtod(end + 1, &end);
        assert_int_equal(*end, ',');
        tuned[n++] = strtod(end + 1, &end);
    }
    assert_int_equal(*end, '\n');
    return n;
}

static void test_pruned_students(void **state)
{
    (void)state;
    fixture f;
    const char *kinds[3] = {"kind=bdk", "kind=gped", "kind=end2"};
    make_fixture(&f);
    for (int k = 0; k < 3; k++) {
        const char *sets[] = {kinds[k], "epochs=10", "lr=0.003", "anneal_epochs=1",
                              "student=mlp:32,16", "sparsity=0.9", "prune_cycles=3",
                              "prune_epochs=4", "prune_lr=0.003", NULL};
        const char *dense_sets[] = {kinds[k], "epochs=10", "lr=0.003", "anneal_epochs=1",
                                    "student=mlp:32,16", NULL};
        eb_trained t, t2, d;
        eb_error err;
        double dense, pruned[8], tuned[8];
        char *b1, *b2, *bd;
        size_t l1, l2, ld;
        int n;
        assert_int_equal(distill(&f, sets, 3, &t, &err), EB_OK);
        assert_int_equal(t.storage, EB_STORE_SHARED_SPARSE);
        /* per layer exactly round(0.9 * n_weights) zeros: the rule of
         * eb_prune_mask (layer scope), which the transform uses */
        for (int l = 0; l < t.arch.n_layers; l++) {
            const eb_layer *L = &t.arch.layers[l];
            size_t zeros = 0;
            if (!L->n_weights)
                continue;
            for (size_t i = 0; i < L->n_weights; i++)
                zeros += t.params[L->param_offset + i] == 0.0f;
            assert_int_equal(zeros, (size_t)llround(0.9 * (double)L->n_weights));
        }
        assert_non_null(strstr(t.meta, "distill.prune_target=0.9\n"));
        assert_non_null(strstr(t.meta, "distill.prune_cycles=3\n"));
        {
            /* the achieved share over all weights, for the runner's
             * compression facet (not exactly 0.9: each layer rounds) */
            const char *v = strstr(t.meta, "prune.sparsity=");
            assert_non_null(v);
            assert_true(fabs(strtod(v + strlen("prune.sparsity="), NULL) -
                             eb_prune_sparsity(&t.arch, t.params, -1)) < 1e-8);
        }
        assert_non_null(strstr(t.meta, "distill.prune_epoch_loss="));
        /* fine-tuning on the distillation loss recovers from each cut */
        n = prune_losses(&t, &dense, pruned, tuned, 8);
        assert_int_equal(n, 3);
        printf("%s: clean loss dense %.4f", kinds[k], dense);
        for (int c = 0; c < n; c++) {
            printf("; cycle %d: pruned %.4f -> tuned %.4f", c + 1, pruned[c], tuned[c]);
            assert_true(tuned[c] <= pruned[c]);
        }
        printf("\n");
        /* same seed and threads: the same bundle bytes */
        assert_int_equal(distill(&f, sets, 3, &t2, &err), EB_OK);
        b1 = bundle_bytes(&t, "p1.ebb", &l1);
        b2 = bundle_bytes(&t2, "p2.ebb", &l2);
        assert_int_equal(l1, l2);
        assert_memory_equal(b1, b2, l1);
        /* stored sparse, the pruned student's file is smaller */
        assert_int_equal(distill(&f, dense_sets, 3, &d, &err), EB_OK);
        assert_true(d.storage == 0 || d.storage == EB_STORE_F32);
        assert_null(strstr(d.meta, "prune."));
        bd = bundle_bytes(&d, "dense.ebb", &ld);
        printf("%s: bundle bytes dense %zu, 90%% pruned %zu\n", kinds[k], ld, l1);
        assert_true(l1 < ld / 2);
        /* the pruned network is the dense one's training, then cycles */
        assert_memory_not_equal(t.params, d.params, t.arch.n_params * sizeof(float));
        eb_free(b1);
        eb_free(b2);
        eb_free(bd);
        eb_trained_free(&t);
        eb_trained_free(&t2);
        eb_trained_free(&d);
    }
    {
        /* no fine-tuning: one-shot cuts in cycles; the loss lists match */
        const char *sets[] = {"kind=bdk", "epochs=1", "sparsity=0.5", "prune_cycles=1",
                              "prune_epochs=0", NULL};
        eb_trained t;
        double dense, pruned[2], tuned[2];
        assert_int_equal(distill(&f, sets, 1, &t, NULL), EB_OK);
        assert_int_equal(prune_losses(&t, &dense, pruned, tuned, 2), 1);
        assert_true(pruned[0] == tuned[0]);
        assert_null(strstr(t.meta, "distill.prune_epoch_loss="));
        eb_trained_free(&t);
    }
    free_fixture(&f);
}

static void test_pruned_refuses(void **state)
{
    (void)state;
    fixture f;
    eb_trained t;
    eb_error err;
    eb_settings s;
    static const char *const orphan[] = {"prune_cycles=2", "prune_epochs=1", "prune_lr=0.01"};
    make_fixture(&f);
    for (int i = 0; i < 3; i++) {
        const char *sets[] = {"epochs=1", orphan[i], NULL};
        char key[32];
        assert_int_equal(distill(&f, sets, 1, &t, &err), EB_ERR_ARG);
        printf("refused: %s\n", err.msg);
        snprintf(key, sizeof key, "setting '%.*s'", (int)strcspn(orphan[i], "="), orphan[i]);
        assert_non_null(strstr(err.msg, key));
        assert_non_null(strstr(err.msg, "sparsity is 0"));
        assert_null(t.params);
    }
    assert_int_equal(eb_settings_init(&s, eb_transform_distill.settings, NULL), EB_OK);
    assert_int_equal(eb_settings_set(&s, "sparsity", "1", &err), EB_ERR_ARG);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "setting 'sparsity'"));
    assert_int_equal(eb_settings_set(&s, "sparsity", "-0.1", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_set(&s, "prune_cycles", "0", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "setting 'prune_cycles'"));
    assert_int_equal(eb_settings_set(&s, "prune_epochs", "-1", &err), EB_ERR_ARG);
    assert_int_equal(eb_settings_set(&s, "prune_lr", "0", &err), EB_ERR_ARG);
    free_fixture(&f);
}

/* Every allocation of a pruned distillation failing in turn: each failure
 * is EB_ERR_NOMEM with nothing left allocated (the sanitizer build checks
 * for leaks), and the run succeeds once the failure is past its
 * allocations. */
static void test_pruned_alloc_failures(void **state)
{
    (void)state;
    fixture f;
    const char *sets[] = {"kind=gped", "epochs=1", "sparsity=0.8", "prune_cycles=2",
                          "prune_epochs=1", NULL};
    int failures = 0;
    make_fixture(&f);
    for (long n = 1; n < 500; n++) {
        eb_trained t;
        eb_error err;
        eb_status st;
        eb_alloc_fail_at(n);
        st = distill(&f, sets, 1, &t, &err);
        eb_alloc_fail_at(0);
        if (st == EB_OK) {
            eb_trained_free(&t);
            break;
        }
        if (st != EB_ERR_NOMEM)
            fail_msg("allocation %ld: status %d (%s)", n, (int)st, err.msg);
        assert_null(t.params);
        failures++;
    }
    printf("%d allocations failed in turn, each refused cleanly\n", failures);
    assert_true(failures > 10);
    free_fixture(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digamma),
        cmocka_unit_test(test_dirichlet_logpdf),
        cmocka_unit_test(test_expected_entropy_mc),
        cmocka_unit_test(test_solve_precision),
        cmocka_unit_test(test_loss_gradients),
        cmocka_unit_test(test_predict_bdk),
        cmocka_unit_test(test_predict_gped),
        cmocka_unit_test(test_predict_end2),
        cmocka_unit_test(test_input_grad),
        cmocka_unit_test(test_predict_refuses_bad_head),
        cmocka_unit_test(test_transform_kinds),
        cmocka_unit_test(test_transform_augment),
        cmocka_unit_test(test_transform_gaussian_teacher),
        cmocka_unit_test(test_transform_refuses),
        cmocka_unit_test(test_sized_students),
        cmocka_unit_test(test_pruned_students),
        cmocka_unit_test(test_pruned_refuses),
        cmocka_unit_test(test_pruned_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
