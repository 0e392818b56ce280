/* test_posterior.c: prediction from posteriors: the reusable predictor
 * gives the same member probabilities whether a set is predicted at once
 * or in pieces (dropout masks are keyed by example index), and the input
 * gradient of the predictive's NLL, -log pbar(y|x) through all S draws,
 * matches central finite differences for samples, dropout and gaussian
 * posteriors. A gaussian posterior draws the same weights for a draw in
 * every batch, reduces to its mean when sigma is 0, and its draws have the
 * mean mu and the spread sigma. Posteriors decode every bundle storage
 * kind, a distilled one included. Quantized posteriors
 * (EB_POSTERIOR_QUANTIZED) keep int8 and f16 values in place, predict
 * with the quantized kernels (the member probabilities of
 * eb_qnet_forward_naive, within the quantization error of the decoded
 * f32 posterior), take input gradients on the decoded weights and hold
 * far less memory than a decoded copy. */
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
#include "methods/eb_methods.h"
#include "methods/nn/nn_quant.h"

/* A posterior over random parameters (no bundle needed). */
static void make_posterior(eb_posterior *p, const char *arch, eb_repr_kind repr, uint32_t S,
                           float **params)
{
    eb_error err;
    eb_rng r;
    uint32_t rows = repr == EB_REPR_SAMPLES ? S : repr == EB_REPR_GAUSSIAN ? 2 : 1;
    memset(p, 0, sizeof *p);
    assert_int_equal(eb_arch_parse(arch, &p->arch, &err), EB_OK);
    *params = malloc((size_t)rows * p->arch.n_params * sizeof(float));
    eb_rng_seed(&r, 17, 0);
    for (uint32_t s = 0; s < rows; s++)
        eb_arch_init_params(&p->arch, *params + (size_t)s * p->arch.n_params, &r);
    for (size_t i = 0; i < (size_t)rows * p->arch.n_params; i++)
        (*params)[i] += 0.1f * (float)eb_rng_normal(&r);
    p->repr = repr;
    p->members = S;
    p->k = p->arch.n_params;
    p->params = *params;
    if (repr == EB_REPR_GAUSSIAN) { /* row 1: sigma in [0.05, 0.15) */
        float *sigma = *params + p->k;
        for (size_t i = 0; i < p->k; i++)
            sigma[i] = 0.05f + 0.1f * eb_rng_uniformf(&r);
        p->sigma = sigma;
    }
}

static double nll_of(eb_predictor *pr, const float *x, const uint8_t *y, size_t n, uint32_t S,
                     size_t C, float *probs)
{
    double total = 0.0;
    assert_int_equal(eb_predictor_run(pr, x, n, S, 5, 0, probs, NULL), EB_OK);
    for (size_t i = 0; i < n; i++) {
        double m = 0.0;
        for (uint32_t s = 0; s < S; s++)
            m += probs[(i * S + s) * C + y[i]];
        total -= log(m / S);
    }
    return total;
}

static void check_input_grad(const char *arch, eb_repr_kind repr, uint32_t S)
{
    eb_posterior p;
    eb_predictor *pr;
    eb_error err;
    float *params, *x, *dx, *probs, *pbar;
    uint8_t y[4] = {0, 1, 2, 1};
    const size_t n = 4;
    size_t in, C, bad = 0, total = 0;
    eb_rng r;
    double worst = 0.0;

    make_posterior(&p, arch, repr, S, &params);
    in = p.arch.in_size;
    C = (size_t)p.arch.n_classes;
    assert_int_equal(eb_predictor_new(&p, 3, S, &pr, &err), EB_OK); /* batch 3 < n: split */
    x = malloc(n * in * sizeof *x);
    dx = malloc(n * in * sizeof *dx);
    probs = malloc(n * S * C * sizeof *probs);
    pbar = malloc(n * C * sizeof *pbar);
    eb_rng_seed(&r, 3, 0);
    for (size_t i = 0; i < n * in; i++)
        x[i] = eb_rng_uniformf(&r);
    assert_int_equal(eb_predictor_input_grad(pr, x, y, n, S, 5, 0, dx, pbar, &err), EB_OK);
    /* pbar is the mean of the member probabilities */
    nll_of(pr, x, y, n, S, C, probs);
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < C; c++) {
            double m = 0.0;
            for (uint32_t s = 0; s < S; s++)
                m += probs[(i * S + s) * C + c];
            assert_float_equal(pbar[i * C + c], m / S, 1e-6);
        }
    for (size_t k = 0; k < n * in; k++) {
        const float h = 1e-3f, keep = x[k];
        double lp, lm, fd, e;
        x[k] = keep + h;
        lp = nll_of(pr, x, y, n, S, C, probs);
        x[k] = keep - h;
        lm = nll_of(pr, x, y, n, S, C, probs);
        x[k] = keep;
        fd = (lp - lm) / (2.0 * h);
        e = fabs(fd - dx[k]) / (2e-3 + 2e-2 * fabs(fd));
        total++;
        if (e > 1.0)
            bad++; /* a ReLU kink within h */
        else if (e > worst)
            worst = e;
    }
    printf("%s %s S=%u: worst scaled error %.2f, %zu of %zu coordinates off (kinks)\n", arch,
           eb_repr_name(repr), S, worst, bad, total);
    assert_true(bad * 50 <= total);
    free(x); free(dx); free(probs); free(pbar); free(params);
    eb_predictor_free(pr);
}

static void test_input_grad_samples(void **state)
{
    (void)state;
    check_input_grad("input 3x3x1; flatten; dense 6; relu; dense 3", EB_REPR_SAMPLES, 3);
    check_input_grad("input 5x5x1; conv2d 2; relu; maxpool; flatten; dense 3", EB_REPR_SAMPLES, 2);
}

static void test_input_grad_dropout(void **state)
{
    (void)state;
    check_input_grad("input 3x3x1; flatten; dense 8; relu; dropout 0.4; dense 3", EB_REPR_DROPOUT,
                     4);
}

static void test_input_grad_gaussian(void **state)
{
    (void)state;
    check_input_grad("input 3x3x1; flatten; dense 6; relu; dense 3", EB_REPR_GAUSSIAN, 4);
    check_input_grad("input 5x5x1; conv2d 2; relu; maxpool; flatten; dense 3", EB_REPR_GAUSSIAN,
                     3);
}

static void test_gaussian_draws(void **state)
{
    const char *arch = "input 2x2x1; flatten; dense 6; relu; dense 4";
    eb_posterior g, m;
    eb_predictor *pr, *pm;
    float *params, *x, *whole, *piece, *other;
    const size_t n = 10, S = 5, C = 4;
    eb_rng r;
    (void)state;
    make_posterior(&g, arch, EB_REPR_GAUSSIAN, (uint32_t)S, &params);
    x = malloc(n * 4 * sizeof *x);
    whole = malloc(n * S * C * sizeof *whole);
    piece = malloc(n * S * C * sizeof *piece);
    other = malloc(n * S * C * sizeof *other);
    eb_rng_seed(&r, 1, 0);
    for (size_t i = 0; i < n * 4; i++)
        x[i] = eb_rng_uniformf(&r);
    /* a draw's weights do not depend on the batch: pieces equal the whole */
    assert_int_equal(eb_predictor_new(&g, 3, 0, &pr, NULL), EB_OK);
    assert_int_equal(eb_predictor_run(pr, x, n, 0, 9, 0, whole, NULL), EB_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(eb_predictor_run(pr, x + i * 4, 1, 0, 9, i, piece + i * S * C, NULL),
                         EB_OK);
    assert_memory_equal(whole, piece, n * S * C * sizeof *whole);
    /* more draws than the default are allowed (they are sampled) */
    eb_predictor_free(pr);
    assert_int_equal(eb_predictor_new(&g, 3, 50, &pr, NULL), EB_OK);
    /* draws differ from each other and between seeds */
    assert_memory_not_equal(whole, whole + C, C * sizeof *whole);
    assert_int_equal(eb_predictor_run(pr, x, n, (uint32_t)S, 10, 0, other, NULL), EB_OK);
    assert_memory_not_equal(whole, other, n * S * C * sizeof *whole);
    eb_predictor_free(pr);
    /* sigma = 0: every draw is the network at mu, bit for bit */
    memset(params + g.k, 0, g.k * sizeof *params);
    m = g;
    m.repr = EB_REPR_SAMPLES;
    m.members = 1;
    m.sigma = NULL;
    assert_int_equal(eb_predictor_new(&g, 4, 0, &pr, NULL), EB_OK);
    assert_int_equal(eb_predictor_new(&m, 4, 0, &pm, NULL), EB_OK);
    assert_int_equal(eb_predictor_run(pr, x, n, 0, 9, 0, whole, NULL), EB_OK);
    assert_int_equal(eb_predictor_run(pm, x, n, 0, 9, 0, piece, NULL), EB_OK);
    for (size_t i = 0; i < n; i++)
        for (size_t s = 0; s < S; s++)
            assert_memory_equal(whole + (i * S + s) * C, piece + i * C, C * sizeof *whole);
    eb_predictor_free(pr);
    eb_predictor_free(pm);
    free(x); free(whole); free(piece); free(other); free(params);
}

static void test_gaussian_weight_moments(void **state)
{
    /* "input 1x1x1; dense 2" at input 1: logit c is w_c + b_c, so with
     * independent Gaussian weights log(p1 / p0) = z1 - z0 is Gaussian with
     * the mean and variance written below; check both over 4000 draws. */
    eb_posterior g;
    eb_predictor *pr;
    float params[2 * 4] = {0.3f, -0.2f, 0.5f, 0.1f, /* mu: w0 w1 b0 b1 */
                           0.4f, 0.3f, 0.2f, 0.1f}; /* sigma */
    const uint32_t S = 4000;
    float x[1] = {1.0f}, *probs = malloc(S * 2 * sizeof *probs);
    double m = 0.0, v = 0.0, em, ev;
    eb_error err;
    (void)state;
    memset(&g, 0, sizeof g);
    assert_int_equal(eb_arch_parse("input 1x1x1; dense 2", &g.arch, &err), EB_OK);
    g.repr = EB_REPR_GAUSSIAN;
    g.members = S;
    g.k = 4;
    g.params = params;
    g.sigma = params + 4;
    assert_int_equal(eb_predictor_new(&g, 1, 0, &pr, NULL), EB_OK);
    assert_int_equal(eb_predictor_run(pr, x, 1, 0, 3, 0, probs, NULL), EB_OK);
    for (uint32_t s = 0; s < S; s++) {
        const double d = log(probs[2 * s + 1] / probs[2 * s]);
        m += d / S;
        v += d * d / S;
    }
    v -= m * m;
    /* z1 - z0 = (w1 + b1) - (w0 + b0): mean -0.2 + 0.1 - 0.3 - 0.5 = -0.9,
     * variance 0.3^2 + 0.1^2 + 0.4^2 + 0.2^2 = 0.30 */
    em = -0.9;
    ev = 0.30;
    printf("gaussian draws: logit difference mean %.4f (%.2f), variance %.4f (%.2f)\n", m, em,
           v, ev);
    assert_true(fabs(m - em) < 4.0 * sqrt(ev / S));
    assert_true(fabs(v / ev - 1.0) < 4.0 * sqrt(2.0 / S));
    eb_predictor_free(pr);
    free(probs);
}

static void test_pieces_equal_whole(void **state)
{
    eb_posterior p;
    eb_predictor *pr;
    float *params, *x, *whole, *piece;
    const size_t n = 10, S = 3;
    eb_rng r;
    (void)state;
    make_posterior(&p, "input 2x2x1; flatten; dense 6; relu; dropout 0.5; dense 4", EB_REPR_DROPOUT,
                   3, &params);
    x = malloc(n * 4 * sizeof *x);
    whole = malloc(n * S * 4 * sizeof *whole);
    piece = malloc(n * S * 4 * sizeof *piece);
    eb_rng_seed(&r, 1, 0);
    for (size_t i = 0; i < n * 4; i++)
        x[i] = eb_rng_uniformf(&r);
    assert_int_equal(eb_predictor_new(&p, 4, 0, &pr, NULL), EB_OK);
    assert_int_equal(eb_predictor_run(pr, x, n, 0, 9, 0, whole, NULL), EB_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(eb_predictor_run(pr, x + i * 4, 1, 0, 9, i, piece + i * S * 4, NULL),
                         EB_OK);
    assert_memory_equal(whole, piece, n * S * 4 * sizeof *whole);
    assert_int_equal(eb_posterior_predict(&p, x, n, 0, 9, 7, piece, NULL), EB_OK);
    assert_memory_equal(whole, piece, n * S * 4 * sizeof *whole);
    assert_int_equal(eb_predictor_run(pr, x, n, 4, 9, 0, whole, NULL), EB_ERR_ARG);
    {
        uint8_t ybad[1] = {9};
        eb_error err;
        assert_int_equal(eb_predictor_input_grad(pr, x, ybad, 1, 0, 9, 0, piece, NULL, &err),
                         EB_ERR_ARG);
        assert_non_null(strstr(err.msg, "label 9"));
    }
    eb_predictor_free(pr);
    free(x); free(whole); free(piece); free(params);
}

/* Posteriors from bundles of every storage kind: non-f32 values are
 * decoded into an owned, 64-byte-aligned buffer (params, then sigma for
 * gaussian) equal to eb_bundle_decode's rows, and predict; f32 keeps
 * pointing into the map; a distilled bundle is viewed (head filled in) and
 * predicted through its head; release frees and is idempotent. */
static void test_from_bundle_storage(void **state)
{
    const char *arch = "input 1x1x2; dense 3"; /* K = 2 x 3 + 3 = 9 */
    float theta[3 * 9], sigma[9], dst[9], x[2] = {0.5f, -1.0f}, probs[3 * 3];
    const uint64_t groups[3] = {0, 6, 9}; /* weights, biases */
    char path[512];
    eb_error err;
    (void)state;
    for (int i = 0; i < 27; i++)
        theta[i] = i % 3 == 0 ? 0.0f : 0.1f * (float)(i - 13);
    for (int i = 0; i < 9; i++)
        sigma[i] = 0.05f * (float)(i % 4);
    snprintf(path, sizeof path, "%s/posterior_%d.ebb", EB_TEST_BINARY_DIR, (int)getpid());
    for (int repr = EB_REPR_SAMPLES; repr <= EB_REPR_DISTILLED; repr++)
        for (int sk = EB_STORE_F32; sk <= EB_STORE_CSR; sk++) {
            eb_bundle_writer *w;
            eb_bundle *b;
            eb_posterior p;
            eb_predictor *pr = NULL;
            eb_status st;
            const char *a = repr == EB_REPR_DROPOUT ? "input 1x1x2; dropout 0.5; dense 3" : arch;
            const uint32_t rows = repr == EB_REPR_SAMPLES ? 3 : 1;
            assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
            assert_int_equal(eb_bundle_writer_arch(w, a, &err), EB_OK);
            if (repr == EB_REPR_SAMPLES)
                st = eb_bundle_writer_samples(w, 3, 9, theta, &err);
            else if (repr == EB_REPR_GAUSSIAN)
                st = eb_bundle_writer_gaussian(w, 2, 9, theta, sigma, &err);
            else if (repr == EB_REPR_DROPOUT)
                st = eb_bundle_writer_dropout(w, 2, 9, theta, &err);
            else
                st = eb_bundle_writer_distilled(w, EB_HEAD_CATEGORICAL, 2, 9, theta, &err);
            assert_int_equal(st, EB_OK);
            assert_int_equal(eb_bundle_writer_storage(w, (eb_storage_kind)sk,
                                                      sk == EB_STORE_INT8 ? groups : NULL,
                                                      sk == EB_STORE_INT8 ? 2 : 0, &err),
                             EB_OK);
            assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
            eb_bundle_writer_free(w);
            assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
            if (eb_posterior_from_bundle(b, &p, &err) != EB_OK)
                fail_msg("%s %s: %s", eb_repr_name((eb_repr_kind)repr),
                         eb_storage_name((eb_storage_kind)sk), err.msg);
            assert_int_equal(p.storage, sk);
            assert_int_equal(p.head, repr == EB_REPR_DISTILLED ? EB_HEAD_CATEGORICAL
                                                               : EB_HEAD_NONE);
            if (sk == EB_STORE_F32) {
                assert_null(p.owned);
                assert_ptr_equal(p.params, eb_bundle_params(b));
            } else {
                assert_non_null(p.owned);
                assert_ptr_equal(p.params, p.owned);
                assert_int_equal((uintptr_t)p.owned % 64, 0);
            }
            assert_int_equal((uintptr_t)p.params % 64, 0);
            for (uint32_t r = 0; r < rows; r++) {
                assert_int_equal(eb_bundle_decode(b, EB_TENSOR_PARAMS, r, dst, &err), EB_OK);
                assert_memory_equal(p.params + r * 9, dst, sizeof dst);
            }
            if (repr == EB_REPR_GAUSSIAN) {
                assert_int_equal(eb_bundle_decode(b, EB_TENSOR_SIGMA, 0, dst, &err), EB_OK);
                assert_memory_equal(p.sigma, dst, sizeof dst);
                if (sk != EB_STORE_F32)
                    assert_ptr_equal(p.sigma, p.owned + 9);
            } else {
                assert_null(p.sigma);
            }
            st = eb_predictor_new(&p, 1, 0, &pr, &err);
            {
                double sum = 0.0;
                assert_int_equal(st, EB_OK);
                assert_int_equal(eb_predictor_run(pr, x, 1, 0, 3, 0, probs, &err), EB_OK);
                for (int c = 0; c < 3; c++)
                    sum += probs[c];
                assert_true(fabs(sum - 1.0) < 1e-5);
                eb_predictor_free(pr);
            }
            eb_posterior_release(&p);
            assert_null(p.owned);
            eb_posterior_release(&p); /* idempotent */
            eb_bundle_close(b);
        }
    remove(path);
}

/* Writes a samples (or, S = 0, a distilled categorical student) bundle of
 * random weights for arch text `arch` with storage sk (int8: the
 * per-output-channel grouping of eb_quant_groups). */
static void write_quantized(const char *path, const char *arch, uint32_t S, eb_storage_kind sk,
                            uint64_t seed)
{
    eb_bundle_writer *w;
    eb_arch a;
    eb_error err;
    eb_rng r;
    uint64_t *groups = NULL;
    size_t ng = 0;
    const uint32_t rows = S ? S : 1;
    float *theta;
    assert_int_equal(eb_arch_parse(arch, &a, &err), EB_OK);
    theta = malloc((size_t)rows * a.n_params * sizeof *theta);
    eb_rng_seed(&r, seed, 0);
    for (uint32_t s = 0; s < rows; s++)
        eb_arch_init_params(&a, theta + (size_t)s * a.n_params, &r);
    for (size_t i = 0; i < (size_t)rows * a.n_params; i++)
        theta[i] += 0.05f * (float)eb_rng_normal(&r);
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, arch, &err), EB_OK);
    if (S)
        assert_int_equal(eb_bundle_writer_samples(w, S, a.n_params, theta, &err), EB_OK);
    else
        assert_int_equal(eb_bundle_writer_distilled(w, EB_HEAD_CATEGORICAL, 4, a.n_params, theta,
                                                    &err),
                         EB_OK);
    if (sk == EB_STORE_INT8)
        assert_int_equal(eb_quant_groups(&a, &groups, &ng, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, sk, groups, ng, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    eb_free(groups);
    free(theta);
}

/* The reference member probabilities (n, S, C) of a quantized bundle:
 * per member an eb_qnet with that row's stored values copied in, run by
 * eb_qnet_forward_naive, softmax (distilled categorical: S copies). */
static void naive_member_probs(const eb_posterior *p, const float *x, size_t n, uint32_t S,
                               float *probs)
{
    const eb_bundle_stored *sv = &p->stored;
    const eb_qnet_storage qs = sv->kind == EB_STORE_INT8 ? EB_QNET_INT8 : EB_QNET_F16;
    const size_t C = (size_t)p->arch.n_classes, elem = qs == EB_QNET_INT8 ? 1 : 2;
    float *z = malloc(n * C * sizeof *z), *pz = malloc(n * C * sizeof *pz);
    for (uint32_t s = 0; s < S; s++) {
        const uint32_t row = p->repr == EB_REPR_SAMPLES ? s : 0;
        eb_qnet *q;
        eb_error err;
        assert_int_equal(eb_qnet_new(&p->arch, qs, (int)n, &q, &err), EB_OK);
        assert_int_equal(
            eb_qnet_set_weights(q, (const char *)sv->values + (size_t)row * p->k * elem,
                                qs == EB_QNET_INT8 ? sv->scales + row * sv->n_groups : NULL,
                                qs == EB_QNET_INT8 ? sv->groups : NULL,
                                qs == EB_QNET_INT8 ? (size_t)sv->n_groups : 0, &err),
            EB_OK);
        assert_int_equal(eb_qnet_forward_naive(q, x, n, z, &err), EB_OK);
        eb_softmax(pz, z, (int)n, (int)C);
        for (size_t i = 0; i < n; i++)
            memcpy(probs + (i * S + s) * C, pz + i * C, C * sizeof *pz);
        eb_qnet_free(q);
    }
    free(z);
    free(pz);
}

static void check_quantized(const char *arch, uint32_t S, eb_storage_kind sk)
{
    char path[512];
    eb_bundle *b;
    eb_posterior pq, pd;
    eb_predictor *prq, *prd;
    eb_bundle_stored sv;
    eb_error err;
    const size_t n = 7;
    const uint32_t D = S ? S : 3; /* draws predicted */
    uint8_t y[7] = {0, 1, 2, 0, 1, 2, 0};
    size_t in, C, K;
    float *x, *got, *want, *dec, *dxq, *dxd, *pbq, *pbd;
    double worst_ref = 0.0, worst_spread = 0.0, worst_rel = 0.0;
    size_t argmax_same = 0, bytes_q, bytes_d;
    eb_rng r;

    snprintf(path, sizeof path, "%s/posterior_q_%d.ebb", EB_TEST_BINARY_DIR, (int)getpid());
    write_quantized(path, arch, S, sk, 31 + S);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_QUANTIZED, &pq, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &pd, &err), EB_OK);
    /* kept as stored, in place: nothing decoded */
    assert_true(eb_posterior_quantized(&pq));
    assert_false(eb_posterior_quantized(&pd));
    assert_null(pq.params);
    assert_null(pq.owned);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    assert_ptr_equal(pq.stored.values, sv.values);
    assert_int_equal(pq.stored.kind, sk);
    in = pq.arch.in_size;
    C = eb_posterior_classes(&pq);
    K = pq.k;
    x = malloc(n * in * sizeof *x);
    got = malloc(n * D * C * sizeof *got);
    want = malloc(n * D * C * sizeof *want);
    dec = malloc(n * D * C * sizeof *dec);
    dxq = malloc(n * in * sizeof *dxq);
    dxd = malloc(n * in * sizeof *dxd);
    pbq = malloc(n * C * sizeof *pbq);
    pbd = malloc(n * C * sizeof *pbd);
    eb_rng_seed(&r, 4, 0);
    for (size_t i = 0; i < n * in; i++)
        x[i] = eb_rng_uniformf(&r);

    /* batch 3 < n: the predictor splits */
    assert_int_equal(eb_predictor_new(&pq, 3, D, &prq, &err), EB_OK);
    assert_int_equal(eb_predictor_new(&pd, 3, D, &prd, &err), EB_OK);
    bytes_q = eb_predictor_bytes(prq);
    bytes_d = eb_predictor_bytes(prd);
    assert_int_equal(eb_predictor_run(prq, x, n, D, 5, 0, got, &err), EB_OK);
    assert_int_equal(eb_predictor_run(prd, x, n, D, 5, 0, dec, &err), EB_OK);
    naive_member_probs(&pq, x, n, D, want);
    for (size_t k = 0; k < n * D * C; k++) {
        const double e = fabs((double)got[k] - want[k]);
        worst_ref = e > worst_ref ? e : worst_ref;
    }
    /* against the decoded f32 posterior: log p_q - log p_f32 over the
     * classes of one member is the logit error up to a shift; its spread
     * (max - min) is at most twice the max-norm logit error. It is taken
     * relative to the spread of the f32 logits themselves (log p_f32). */
    for (size_t i = 0; i < n * D; i++) {
        double lo = 1e300, hi = -1e300, zlo = 1e300, zhi = -1e300;
        size_t aq = 0, ad = 0;
        for (size_t c = 0; c < C; c++) {
            const double d = log(got[i * C + c]) - log(dec[i * C + c]);
            const double zd = log(dec[i * C + c]);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            zlo = zd < zlo ? zd : zlo;
            zhi = zd > zhi ? zd : zhi;
            aq = got[i * C + c] > got[i * C + aq] ? c : aq;
            ad = dec[i * C + c] > dec[i * C + ad] ? c : ad;
        }
        worst_spread = hi - lo > worst_spread ? hi - lo : worst_spread;
        if ((hi - lo) / (zhi - zlo + 1e-3) > worst_rel)
            worst_rel = (hi - lo) / (zhi - zlo + 1e-3);
        argmax_same += aq == ad;
    }
    printf("%.30s... (K = %zu) %s %s S=%u: vs naive qnet max |dp| %.3g; vs decoded f32 logit "
           "error spread %.3g (%.3g of the logits' spread), argmax agrees %zu/%zu; predictor "
           "bytes %zu quantized, %zu + %zu decoded\n",
           arch, K, S ? "samples" : "distilled", eb_storage_name(sk), D, worst_ref,
           worst_spread, worst_rel, argmax_same, n * D, bytes_q, bytes_d,
           (size_t)(S ? S : 1) * K * 4);
    if (sk == EB_STORE_INT8) {
        assert_true(worst_ref == 0.0); /* the same integers and float expressions */
        /* activations are quantized: not the f32 network's numbers... */
        assert_memory_not_equal(got, dec, n * D * C * sizeof *got);
        /* ...but near them: int8 rounds each activation and weight by at
         * most 1/254 of its row's largest value, and through these two or
         * three weighted layers the logit error stays well under 10% of
         * the logits' own spread (seen: 1-4%). The rigorous bound on the
         * logits is test_quant.c's; here a wrong scale, channel or member
         * would be off by the order of the logits themselves. */
        assert_true(worst_rel < 0.1);
    } else {
        assert_true(worst_ref < 1e-6);
        assert_true(worst_rel < 1e-4); /* f16 weights, f32 arithmetic */
    }
    assert_true(argmax_same * 10 >= n * D * 9);

    /* input gradient: the f32 gradient of the decoded weights, bit for bit */
    assert_int_equal(eb_predictor_input_grad(prq, x, y, n, D, 5, 0, dxq, pbq, &err), EB_OK);
    assert_int_equal(eb_predictor_input_grad(prd, x, y, n, D, 5, 0, dxd, pbd, &err), EB_OK);
    assert_memory_equal(dxq, dxd, n * in * sizeof *dxq);
    assert_memory_equal(pbq, pbd, n * C * sizeof *pbq);
    {
        double norm = 0.0;
        for (size_t k = 0; k < n * in; k++)
            norm += fabs(dxq[k]);
        assert_true(norm > 0.0);
    }
    /* the gradient's f32 side is allocated on demand and counted */
    assert_true(eb_predictor_bytes(prq) >= bytes_q + K * sizeof(float));
    /* prediction still runs the quantized kernels afterwards */
    assert_int_equal(eb_predictor_run(prq, x, n, D, 5, 0, dec, &err), EB_OK);
    assert_memory_equal(dec, got, n * D * C * sizeof *got);

    eb_predictor_free(prq);
    eb_predictor_free(prd);
    eb_posterior_release(&pq);
    assert_false(eb_posterior_quantized(&pq));
    eb_posterior_release(&pd);
    eb_bundle_close(b);
    free(x); free(got); free(want); free(dec); free(dxq); free(dxd); free(pbq); free(pbd);
    remove(path);
}

static void test_quantized_samples(void **state)
{
    char mlp[4096];
    eb_arch a;
    (void)state;
    assert_int_equal(eb_arch_named("mlp", &a, NULL), EB_OK);
    assert_int_equal(eb_arch_format(&a, mlp, sizeof mlp, NULL), EB_OK);
    for (int sk = EB_STORE_F16; sk <= EB_STORE_INT8; sk++) {
        check_quantized("input 6x6x2; conv2d 3; relu; maxpool; flatten; dense 5; relu; dense 3",
                        3, (eb_storage_kind)sk);
        check_quantized("input 28x28x1; flatten; dense 16; relu; dense 10", 4,
                        (eb_storage_kind)sk);
        check_quantized(mlp, 3, (eb_storage_kind)sk); /* the `mlp` architecture */
    }
}

static void test_quantized_distilled(void **state)
{
    (void)state;
    check_quantized("input 28x28x1; flatten; dense 16; relu; dense 10", 0, EB_STORE_INT8);
    check_quantized("input 6x6x2; conv2d 3; relu; maxpool; flatten; dense 3", 0, EB_STORE_F16);
}

/* The memory of a quantized predictor on the `mlp` architecture: the
 * stored int8 values are used in place, so the predictor holds its
 * workspace and a few floats per member, far below one f32 copy of the
 * members. */
static void test_quantized_memory(void **state)
{
    char path[512], text[4096];
    eb_arch a;
    eb_bundle *b;
    eb_posterior pq;
    eb_predictor *pr;
    eb_error err;
    const uint32_t S = 5;
    size_t bytes, dense;
    (void)state;
    assert_int_equal(eb_arch_named("mlp", &a, &err), EB_OK);
    assert_int_equal(eb_arch_format(&a, text, sizeof text, &err), EB_OK);
    snprintf(path, sizeof path, "%s/posterior_m_%d.ebb", EB_TEST_BINARY_DIR, (int)getpid());
    write_quantized(path, text, S, EB_STORE_INT8, 77);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_QUANTIZED, &pq, &err), EB_OK);
    assert_true(eb_posterior_quantized(&pq));
    assert_int_equal(eb_predictor_new(&pq, 1, 0, &pr, &err), EB_OK);
    bytes = eb_predictor_bytes(pr);
    dense = (size_t)S * pq.k * sizeof(float);
    printf("mlp int8 S=%u, batch 1: predictor %zu bytes; the decoded copy alone would be %zu "
           "(K = %zu); the stored int8 values %zu\n",
           S, bytes, dense, pq.k, (size_t)S * pq.k);
    assert_true(bytes * 20 < dense);
    eb_predictor_free(pr);
    eb_posterior_release(&pq);
    eb_bundle_close(b);
    remove(path);
}

/* EB_POSTERIOR_QUANTIZED decodes what the quantized kernels cannot run:
 * an int8 grouping that splits an output channel, dropout and gaussian
 * posteriors, f32 and sparse storage; unknown flags are refused. */
static void test_quantized_fallback(void **state)
{
    const float theta[9] = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.05f, 0.0f, -0.05f};
    const float sigma[9] = {0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f};
    const uint64_t split[3] = {0, 3, 9}; /* channel 1's weights are [2, 4) */
    const uint64_t chan[5] = {0, 2, 4, 6, 9};
    char path[512];
    eb_error err;
    (void)state;
    snprintf(path, sizeof path, "%s/posterior_f_%d.ebb", EB_TEST_BINARY_DIR, (int)getpid());
    for (int c = 0; c < 6; c++) {
        eb_bundle_writer *w;
        eb_bundle *b;
        eb_posterior p;
        eb_repr_kind repr = c == 2 ? EB_REPR_DROPOUT : c == 3 ? EB_REPR_GAUSSIAN
                                                              : EB_REPR_SAMPLES;
        eb_storage_kind sk = c == 4 ? EB_STORE_CSR : c == 5 ? EB_STORE_F32 : EB_STORE_INT8;
        const uint64_t *groups = c == 0 ? split : chan;
        assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_arch(w, repr == EB_REPR_DROPOUT
                                                      ? "input 1x1x2; dropout 0.5; dense 3"
                                                      : "input 1x1x2; dense 3",
                                               &err),
                         EB_OK);
        if (repr == EB_REPR_GAUSSIAN)
            assert_int_equal(eb_bundle_writer_gaussian(w, 2, 9, theta, sigma, &err), EB_OK);
        else if (repr == EB_REPR_DROPOUT)
            assert_int_equal(eb_bundle_writer_dropout(w, 2, 9, theta, &err), EB_OK);
        else
            assert_int_equal(eb_bundle_writer_samples(w, 1, 9, theta, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_storage(w, sk, sk == EB_STORE_INT8 ? groups : NULL,
                                                  sk == EB_STORE_INT8 ? (c == 0 ? 2 : 4) : 0,
                                                  &err),
                         EB_OK);
        assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
        eb_bundle_writer_free(w);
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
        assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_QUANTIZED, &p, &err),
                         EB_OK);
        /* c == 1: the control, kept quantized */
        assert_int_equal(eb_posterior_quantized(&p), c == 1);
        assert_true(c == 1 ? p.params == NULL : p.params != NULL);
        eb_posterior_release(&p);
        assert_int_equal(eb_posterior_from_bundle_flags(b, 4, &p, &err), EB_ERR_ARG);
        assert_non_null(strstr(err.msg, "unknown"));
        /* EB_POSTERIOR_SPARSE keeps only sparse samples (c == 4) in place;
         * eb_predictor refuses such a posterior */
        assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_SPARSE, &p, &err), EB_OK);
        assert_int_equal(eb_posterior_sparse(&p), c == 4);
        assert_true(c == 4 ? p.params == NULL : p.params != NULL);
        if (c == 4) {
            eb_predictor *pr;
            assert_int_equal(eb_predictor_new(&p, 4, 1, &pr, &err), EB_ERR_ARG);
            assert_non_null(strstr(err.msg, "sparse strategy"));
        }
        eb_posterior_release(&p);
        eb_bundle_close(b);
    }
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_grad_samples),
        cmocka_unit_test(test_input_grad_dropout),
        cmocka_unit_test(test_input_grad_gaussian),
        cmocka_unit_test(test_gaussian_draws),
        cmocka_unit_test(test_gaussian_weight_moments),
        cmocka_unit_test(test_pieces_equal_whole),
        cmocka_unit_test(test_from_bundle_storage),
        cmocka_unit_test(test_quantized_samples),
        cmocka_unit_test(test_quantized_distilled),
        cmocka_unit_test(test_quantized_memory),
        cmocka_unit_test(test_quantized_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
