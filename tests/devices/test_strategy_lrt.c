/* test_strategy_lrt.c: the `lrt` execution strategy (devices/strategy_lrt.c),
 * local reparameterisation of mean-field gaussian posteriors.
 *
 * What it must hold to, and why only in distribution: for ONE input,
 * drawing each dense layer's pre-activations h ~ N(mu_W a + mu_b,
 * sigma_W^2 a^2 + sigma_b^2) has exactly the distribution of drawing the
 * whole weight matrices and computing W a + b (the rows of W are
 * independent gaussians, and a layer's weights are independent of its
 * input, which earlier layers' weights made). So per input the member
 * probabilities of lrt and of loop (eb_predictor_run, whole-weight draws)
 * are equal in distribution, not draw by draw. Across a batch they differ
 * on purpose: loop's draw s shares one weight sample between all inputs,
 * lrt's draws are independent per input (test_batch_independence).
 *
 * Tests: supports() refusals; the first layer's mean and variance
 * against a naive double-precision sum; the same bytes for 1 and 2
 * threads and for a batch split into pieces, the first of S draws
 * equal to S = 1's up to rounding; and the distribution test: N = 20000 draws of lrt against
 * 20000 of loop on a small mlp, per-class mean and variance of the
 * member probabilities within 5 Monte Carlo standard errors of the
 * difference, and a two-sample Kolmogorov-Smirnov statistic on the
 * logit difference log(p0 / p1) below its critical value at
 * alpha = 1e-4 (c sqrt(2 / N) = 2.225 * 0.01 = 0.0222, see ks_crit), with a
 * posterior whose sigma is 1.3 times larger as the negative control the
 * same test must reject. */
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

#define SMALL "input 4x4x1; flatten; dense 8; relu; dense 3"
#define MLP "input 28x28x1; flatten; dense 64; relu; dense 32; relu; dropout 0.2; dense 10"

/* A gaussian posterior built in memory: mu from the architecture's
 * initialisation, sigma = scale * (0.5 + U[0,1)) * 0.5 (so 0.25 to 0.75
 * times scale). block holds mu then sigma; the caller frees it. */
static void make_gaussian(eb_posterior *p, const char *arch_text, float scale, uint64_t seed,
                          float **block)
{
    eb_error err;
    eb_rng r;
    memset(p, 0, sizeof *p);
    if (eb_arch_parse(arch_text, &p->arch, &err) != EB_OK)
        fail_msg("arch: %s", err.msg);
    p->repr = EB_REPR_GAUSSIAN;
    p->members = 10;
    p->k = p->arch.n_params;
    p->storage = EB_STORE_F32;
    *block = malloc(2 * p->k * sizeof **block);
    assert_non_null(*block);
    eb_rng_seed(&r, seed, 0);
    eb_arch_init_params(&p->arch, *block, &r);
    for (size_t k = 0; k < p->k; k++) {
        (*block)[k] += 0.1f * (eb_rng_uniformf(&r) - 0.5f); /* nonzero biases too */
        (*block)[p->k + k] = scale * 0.5f * (0.5f + eb_rng_uniformf(&r));
    }
    p->params = *block;
    p->sigma = *block + p->k;
}

static void *open_lrt(const eb_posterior *p, int max_batch, uint32_t max_draws)
{
    void *st = NULL;
    eb_error err;
    assert_int_equal(eb_strategy_lrt.supports(p, NULL), EB_OK);
    if (eb_strategy_lrt.create(p, max_batch, max_draws, &st, &err) != EB_OK)
        fail_msg("lrt create: %s", err.msg);
    return st;
}

static void run_lrt(void *st, const float *x, size_t n, uint32_t S, uint64_t seed,
                    uint64_t first, int threads, float *probs)
{
    eb_error err;
    if (eb_strategy_lrt.run(st, x, n, S, seed, first, threads, probs, &err) != EB_OK)
        fail_msg("lrt run: %s", err.msg);
}

/* ---- supports ------------------------------------------------------------ */

static void test_supports(void **state)
{
    eb_posterior p;
    const eb_strategy_ops *ops;
    float *block;
    eb_error err;
    (void)state;

    make_gaussian(&p, SMALL, 1.0f, 1, &block);
    assert_int_equal(eb_strategy_pick("lrt", &p, &ops, &err), EB_OK);
    assert_ptr_equal(ops, &eb_strategy_lrt);
    assert_int_equal(eb_strategy_lrt.reproduces_loop, 0);
    /* auto never picks it: it does not draw what loop draws */
    assert_int_equal(eb_strategy_pick("auto", &p, &ops, &err), EB_OK);
    assert_ptr_not_equal(ops, &eb_strategy_lrt);

    p.repr = EB_REPR_SAMPLES;
    assert_int_equal(eb_strategy_lrt.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "gaussian"));
    p.repr = EB_REPR_DROPOUT;
    assert_int_equal(eb_strategy_lrt.supports(&p, &err), EB_ERR_UNSUPPORTED);
    p.repr = EB_REPR_GAUSSIAN;
    p.sigma = NULL;
    assert_int_equal(eb_strategy_lrt.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "sigma"));
    p.sigma = block + p.k;
    /* a convolution's outputs share weights: refused, naming the layer */
    assert_int_equal(eb_arch_parse("input 6x6x1; conv2d 2; relu; flatten; dense 3", &p.arch, &err),
                     EB_OK);
    assert_int_equal(eb_strategy_lrt.supports(&p, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "layer 1 is a conv2d"));
    printf("conv refusal: %s\n", err.msg);
    assert_int_equal(eb_strategy_pick("lrt", &p, &ops, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "conv2d"));
    free(block);
}

/* ---- first layer against a naive double-precision sum -------------------- */

static void check_first_moments(const char *arch_text)
{
    eb_posterior p;
    float *block, *x, mean[64], var[64];
    double worst_m = 0.0, worst_v = 0.0;
    void *st;
    const eb_layer *L;
    size_t first = 0;
    make_gaussian(&p, arch_text, 1.0f, 3, &block);
    while (p.arch.layers[first].kind != EB_LAYER_DENSE)
        first++;
    L = &p.arch.layers[first];
    assert_true(L->units <= 64);
    st = open_lrt(&p, 2, 4);
    x = eb_test_uniform_inputs(1, p.arch.in_size, 5);
    for (size_t i = 0; i < p.arch.in_size; i++)
        x[i] -= 0.5f; /* signed inputs: the ReLU prefix of one arch below bites */
    eb_strategy__lrt_first_moments(st, x, mean, var);
    {
        /* the input of the first dense layer, naively: a copy through the
         * prefix (maxpool 2x2 or relu, the only prefix layers used here) */
        const size_t NI = L->in_size;
        double *a = malloc(NI * sizeof *a);
        assert_non_null(a);
        if (first > 0 && p.arch.layers[0].kind == EB_LAYER_MAXPOOL) {
            const int H = p.arch.in_h, W = p.arch.in_w;
            for (int py = 0; py < H / 2; py++)
                for (int px = 0; px < W / 2; px++) {
                    double m = x[(2 * py) * W + 2 * px];
                    m = fmax(m, x[(2 * py) * W + 2 * px + 1]);
                    m = fmax(m, x[(2 * py + 1) * W + 2 * px]);
                    m = fmax(m, x[(2 * py + 1) * W + 2 * px + 1]);
                    a[py * (W / 2) + px] = m;
                }
        } else if (first > 0 && p.arch.layers[0].kind == EB_LAYER_RELU) {
            for (size_t i = 0; i < NI; i++)
                a[i] = x[i] > 0.0f ? x[i] : 0.0;
        } else {
            for (size_t i = 0; i < NI; i++)
                a[i] = x[i];
        }
        for (int u = 0; u < L->units; u++) {
            const float *mw = p.params + L->param_offset + (size_t)u * NI;
            const float *sw = p.sigma + L->param_offset + (size_t)u * NI;
            double m = p.params[L->param_offset + L->n_weights + (size_t)u];
            double sb = p.sigma[L->param_offset + L->n_weights + (size_t)u];
            double v = sb * sb, mscale = fabs(m), vscale = v, em, ev;
            for (size_t i = 0; i < NI; i++) {
                m += (double)mw[i] * a[i];
                mscale += fabs((double)mw[i] * a[i]);
                v += (double)sw[i] * sw[i] * a[i] * a[i];
                vscale += (double)sw[i] * sw[i] * a[i] * a[i];
            }
            em = fabs(mean[u] - m) / mscale;
            ev = fabs(var[u] - v) / vscale;
            worst_m = fmax(worst_m, em);
            worst_v = fmax(worst_v, ev);
        }
        free(a);
    }
    printf("%s: first-layer mean and variance, max relative error %.3g and %.3g "
           "(bound 1e-5 of the sum of |terms|)\n", arch_text, worst_m, worst_v);
    assert_true(worst_m < 1e-5);
    assert_true(worst_v < 1e-5);
    eb_strategy_lrt.destroy(st);
    free(x);
    free(block);
}

static void test_first_moments(void **state)
{
    (void)state;
    check_first_moments(SMALL);
    check_first_moments("input 28x28x1; flatten; dense 64; relu; dense 10");
    check_first_moments("input 12x12x1; maxpool; flatten; dense 16; relu; dense 3");
    check_first_moments("input 6x6x1; relu; flatten; dense 16; relu; dense 3");
}

/* ---- reproducibility ------------------------------------------------------ */

static void test_same_bytes(void **state)
{
    static const uint32_t draws[] = {1, 13, 100, 300};
    eb_posterior p;
    float *block, *x;
    const size_t n = 7, C = 10;
    (void)state;
    make_gaussian(&p, MLP, 1.0f, 11, &block);
    x = eb_test_uniform_inputs(n, p.arch.in_size, 12);
    for (size_t d = 0; d < sizeof draws / sizeof draws[0]; d++) {
        const uint32_t S = draws[d];
        const size_t len = n * S * C;
        float *one = malloc(len * sizeof *one), *two = malloc(len * sizeof *two);
        float *piece = malloc(len * sizeof *piece), *other = malloc(len * sizeof *other);
        void *st = open_lrt(&p, 8, 300), *small = open_lrt(&p, 2, S);
        assert_true(one && two && piece && other);
        run_lrt(st, x, n, S, 77, 5, 1, one);
        run_lrt(st, x, n, S, 77, 5, 2, two);
        assert_memory_equal(one, two, len * sizeof *one);
        /* in pieces, each with its example index, through a smaller batch */
        run_lrt(small, x, 3, S, 77, 5, 2, piece);
        run_lrt(small, x + 3 * p.arch.in_size, 1, S, 77, 8, 1, piece + 3 * S * C);
        run_lrt(small, x + 4 * p.arch.in_size, 3, S, 77, 9, 2, piece + 4 * S * C);
        assert_memory_equal(one, piece, len * sizeof *one);
        /* the first of S draws per input is the draw of S = 1: the same
         * noise, in a matrix product of another size (rounding only) */
        run_lrt(st, x, n, 1, 77, 5, 2, other);
        for (size_t i = 0; i < n; i++)
            for (size_t c = 0; c < C; c++)
                assert_true(fabsf(other[i * C + c] - one[i * S * C + c]) < 1e-5f);
        /* another seed, other draws; every probability row sums to 1 */
        run_lrt(st, x, n, S, 78, 5, 2, other);
        assert_memory_not_equal(one, other, len * sizeof *one);
        for (size_t r = 0; r < n * S; r++) {
            double sum = 0.0;
            for (size_t c = 0; c < C; c++)
                sum += one[r * C + c];
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
        printf("S = %u: same bytes for 1 and 2 threads and for the batch in pieces\n", S);
        eb_strategy_lrt.destroy(st);
        eb_strategy_lrt.destroy(small);
        free(one);
        free(two);
        free(piece);
        free(other);
    }
    {
        void *st = open_lrt(&p, 8, 20);
        eb_error err;
        float probs[10];
        assert_int_equal(eb_strategy_lrt.run(st, x, 1, 21, 1, 0, 1, probs, &err), EB_ERR_ARG);
        assert_true(eb_strategy_lrt.bytes(st) >= p.k * sizeof(float)); /* sigma^2 at least */
        eb_strategy_lrt.destroy(st);
    }
    free(x);
    free(block);
}

/* ---- distribution against loop's whole-weight draws ------------------------ */

#define N_DRAWS 20000

typedef struct moments {
    double mean, var, se_mean, se_var;
} moments;

static moments sample_moments(const float *v, size_t n, size_t stride)
{
    double m = 0.0, m2 = 0.0, m4 = 0.0;
    moments out;
    for (size_t i = 0; i < n; i++)
        m += v[i * stride];
    m /= (double)n;
    for (size_t i = 0; i < n; i++) {
        const double d = v[i * stride] - m;
        m2 += d * d;
        m4 += d * d * d * d;
    }
    m2 /= (double)(n - 1);
    m4 /= (double)n;
    out.mean = m;
    out.var = m2;
    out.se_mean = sqrt(m2 / (double)n);
    /* the sample variance's standard error: sqrt((mu4 - sigma^4) / n) */
    out.se_var = sqrt(fmax(m4 - m2 * m2, 0.0) / (double)n);
    return out;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Two-sample KS statistic of a (n) and b (n), both sorted in place. */
static double ks_stat(double *a, double *b, size_t n)
{
    size_t i = 0, j = 0;
    double d = 0.0;
    qsort(a, n, sizeof *a, cmp_double);
    qsort(b, n, sizeof *b, cmp_double);
    while (i < n && j < n) {
        const double v = a[i] < b[j] ? a[i] : b[j];
        while (i < n && a[i] <= v)
            i++;
        while (j < n && b[j] <= v)
            j++;
        d = fmax(d, fabs((double)i - (double)j) / (double)n);
    }
    return d;
}

/* The critical D at alpha = 1e-4 for two samples of n: c(alpha)
 * sqrt(2 / n), c(alpha) = sqrt(-ln(alpha / 2) / 2) = 2.225. */
static double ks_crit(size_t n)
{
    return sqrt(-log(1e-4 / 2.0) / 2.0) * sqrt(2.0 / (double)n);
}

/* log(p0 / p1) = z0 - z1 of every draw of input i (probs (n, S, C)). */
static void logit_diff(double *out, const float *probs, size_t i, size_t S, size_t C)
{
    for (size_t s = 0; s < S; s++) {
        const float *q = probs + (i * S + s) * C;
        out[s] = log((double)q[0]) - log((double)q[1]);
    }
}

static void loop_probs(const eb_posterior *p, const float *x, size_t n, uint32_t S,
                       uint64_t seed, float *probs)
{
    eb_predictor *pr;
    eb_error err;
    assert_int_equal(eb_predictor_new(p, (int)n, S, &pr, &err), EB_OK);
    assert_int_equal(eb_predictor_run(pr, x, n, S, seed, 0, probs, &err), EB_OK);
    eb_predictor_free(pr);
}

static void check_distribution(const char *arch_text)
{
    eb_posterior p, wide;
    float *block, *wblock, *x, *lp, *wp, *lw;
    double *da = malloc(N_DRAWS * sizeof *da), *db = malloc(N_DRAWS * sizeof *db);
    const size_t C = 3, n = 2;
    void *st, *wst;
    double d, crit = ks_crit(N_DRAWS);

    printf("%s\n", arch_text);
    make_gaussian(&p, arch_text, 1.0f, 21, &block);
    make_gaussian(&wide, arch_text, 1.3f, 21, &wblock); /* the same mu, sigma x 1.3 */
    x = eb_test_uniform_inputs(n, p.arch.in_size, 22);
    lp = malloc(n * N_DRAWS * C * sizeof *lp);
    wp = malloc(n * N_DRAWS * C * sizeof *wp);
    lw = malloc(n * N_DRAWS * C * sizeof *lw);
    assert_true(da && db && lp && wp && lw);
    st = open_lrt(&p, 2, N_DRAWS);
    wst = open_lrt(&wide, 2, N_DRAWS);
    run_lrt(st, x, n, N_DRAWS, 31, 0, 2, lp);
    run_lrt(wst, x, n, N_DRAWS, 31, 0, 2, lw);
    loop_probs(&p, x, n, N_DRAWS, 32, wp);

    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < C; c++) {
            const moments a = sample_moments(lp + i * N_DRAWS * C + c, N_DRAWS, C);
            const moments b = sample_moments(wp + i * N_DRAWS * C + c, N_DRAWS, C);
            const double zm = fabs(a.mean - b.mean) / hypot(a.se_mean, b.se_mean);
            const double zv = fabs(a.var - b.var) / hypot(a.se_var, b.se_var);
            printf("input %zu class %zu: mean lrt %.5f loop %.5f (%.2f SE); var lrt %.5f loop "
                   "%.5f (%.2f SE)\n", i, c, a.mean, b.mean, zm, a.var, b.var, zv);
            assert_true(zm < 5.0);
            assert_true(zv < 5.0);
        }
        logit_diff(da, lp, i, N_DRAWS, C);
        logit_diff(db, wp, i, N_DRAWS, C);
        d = ks_stat(da, db, N_DRAWS);
        printf("input %zu: KS D(lrt, loop) on log(p0/p1) = %.4f (critical %.4f at alpha 1e-4)\n",
               i, d, crit);
        assert_true(d < crit);
        /* the negative control: sigma x 1.3 is told apart */
        logit_diff(da, lw, i, N_DRAWS, C);
        logit_diff(db, wp, i, N_DRAWS, C);
        d = ks_stat(da, db, N_DRAWS);
        printf("input %zu: KS D(lrt sigma x 1.3, loop) = %.4f (must exceed %.4f)\n", i, d, crit);
        assert_true(d > crit);
    }
    eb_strategy_lrt.destroy(st);
    eb_strategy_lrt.destroy(wst);
    free(block);
    free(wblock);
    free(x);
    free(lp);
    free(wp);
    free(lw);
    free(da);
    free(db);
}

static void test_distribution(void **state)
{
    (void)state;
    check_distribution(SMALL);
    /* a later layer of 16 units: the packed direct kernel where the CPU
     * has AVX-512 (eb_kern_dense_packed), sgemm elsewhere */
    check_distribution("input 4x4x1; flatten; dense 8; relu; dense 16; relu; dense 3");
}

/* Across a batch: loop's draw s shares its weights between inputs, so
 * the two inputs' logit differences are correlated draw by draw; lrt's
 * are independent (|r| within 5 / sqrt(N) of 0). */
static void test_batch_independence(void **state)
{
    eb_posterior p;
    float *block, *x, *lp, *wp;
    double *a0 = malloc(N_DRAWS * sizeof *a0), *a1 = malloc(N_DRAWS * sizeof *a1);
    const size_t C = 3, n = 2;
    double r_lrt = 0.0, r_loop = 0.0;
    void *st;
    (void)state;
    make_gaussian(&p, SMALL, 1.0f, 21, &block);
    x = eb_test_uniform_inputs(n, p.arch.in_size, 22);
    lp = malloc(n * N_DRAWS * C * sizeof *lp);
    wp = malloc(n * N_DRAWS * C * sizeof *wp);
    assert_true(a0 && a1 && lp && wp);
    st = open_lrt(&p, 2, N_DRAWS);
    run_lrt(st, x, n, N_DRAWS, 31, 0, 1, lp);
    loop_probs(&p, x, n, N_DRAWS, 32, wp);
    for (int which = 0; which < 2; which++) {
        const float *q = which ? wp : lp;
        double m0 = 0, m1 = 0, c = 0, v0 = 0, v1 = 0;
        logit_diff(a0, q, 0, N_DRAWS, C);
        logit_diff(a1, q, 1, N_DRAWS, C);
        for (size_t s = 0; s < N_DRAWS; s++) {
            m0 += a0[s];
            m1 += a1[s];
        }
        m0 /= N_DRAWS;
        m1 /= N_DRAWS;
        for (size_t s = 0; s < N_DRAWS; s++) {
            c += (a0[s] - m0) * (a1[s] - m1);
            v0 += (a0[s] - m0) * (a0[s] - m0);
            v1 += (a1[s] - m1) * (a1[s] - m1);
        }
        *(which ? &r_loop : &r_lrt) = c / sqrt(v0 * v1);
    }
    printf("correlation between two inputs' draws: lrt %.4f (bound %.4f), loop %.4f\n", r_lrt,
           5.0 / sqrt((double)N_DRAWS), r_loop);
    assert_true(fabs(r_lrt) < 5.0 / sqrt((double)N_DRAWS));
    assert_true(fabs(r_loop) > 0.2);
    eb_strategy_lrt.destroy(st);
    free(block);
    free(x);
    free(lp);
    free(wp);
    free(a0);
    free(a1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supports),
        cmocka_unit_test(test_first_moments),
        cmocka_unit_test(test_same_bytes),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_batch_independence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
