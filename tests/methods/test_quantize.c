/* test_quantize.c: the quantize transform's calibrated int8 activations
 * (methods/quantize.c): with every training image and percentile 100 each
 * scale is max |x| / 127 of that member's layer input, recomputed here
 * with the naive f32 kernels; a percentile's scale is the nearest-rank
 * order statistic of |x| (sorted here) within the histogram's stated
 * resolution (at most 2^-11 above it); the scales reach the bundle and
 * the predictor (which then differs from the dynamic bundle's, and stays
 * close to the f32 posterior); the same seed gives the same bytes and the
 * draw depends on the seed; refusals name the setting. */
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
#include "methods/eb_bundle.h"
#include "methods/eb_methods.h"
#include "methods/eb_transform.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_kernels.h"
#include "methods/nn/nn_quant.h"

#define ARCH "input 6x6x1; flatten; dense 12; relu; dense 7; relu; dense 3"
#define NTRAIN 300
#define S 3

static eb_dataset train_set;
static eb_arch arch;
static float *theta; /* (S, K) */

static void scratch(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/methods_quantize_%s", EB_TEST_BINARY_DIR, name);
}

static int setup(void **state)
{
    eb_error err;
    eb_rng r;
    (void)state;
    assert_int_equal(eb_arch_parse(ARCH, &arch, &err), EB_OK);
    memset(&train_set, 0, sizeof train_set);
    snprintf(train_set.name, sizeof train_set.name, "synthetic");
    snprintf(train_set.split, sizeof train_set.split, "train");
    train_set.n = NTRAIN;
    train_set.c = 1;
    train_set.h = train_set.w = 6;
    train_set.n_classes = 3;
    train_set.x = eb_malloc_aligned(64, NTRAIN * 36 * sizeof(float));
    train_set.y = eb_malloc(NTRAIN);
    assert_non_null(train_set.x);
    assert_non_null(train_set.y);
    eb_rng_seed(&r, 5, 0);
    for (size_t i = 0; i < NTRAIN * 36; i++)
        train_set.x[i] = eb_rng_uniformf(&r);
    for (size_t i = 0; i < NTRAIN; i++)
        train_set.y[i] = (uint8_t)(i % 3);
    theta = malloc((size_t)S * arch.n_params * sizeof *theta);
    assert_non_null(theta);
    for (int s = 0; s < S; s++)
        eb_arch_init_params(&arch, theta + (size_t)s * arch.n_params, &r);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    eb_free_aligned(train_set.x);
    eb_free(train_set.y);
    free(theta);
    return 0;
}

static eb_posterior samples_posterior(void)
{
    eb_posterior p;
    memset(&p, 0, sizeof p);
    p.arch = arch;
    p.repr = EB_REPR_SAMPLES;
    p.members = S;
    p.k = arch.n_params;
    p.params = theta;
    return p;
}

static eb_status run_quantize(const eb_posterior *p, const char *sets, const eb_dataset *train,
                              uint64_t seed, eb_trained *out, eb_error *err)
{
    const eb_transform *t = eb_transform_find("quantize");
    eb_settings s;
    eb_transform_request req;
    eb_status st;
    assert_non_null(t);
    memset(out, 0, sizeof *out);
    st = eb_transform_settings(t, &s, err);
    if (st || (st = eb_settings_assign_list(&s, sets, err)))
        return st;
    memset(&req, 0, sizeof req);
    req.posterior = p;
    req.train = train;
    req.settings = &s;
    req.seed = seed;
    req.threads = 1;
    return t->apply(&req, out, err);
}

/* |x| of every input value of every weighted layer of member s over all
 * training images, with the naive f32 kernels: vals[j] (count[j]). */
static void layer_inputs(int s, float **vals, size_t *count)
{
    const size_t n = NTRAIN;
    const float *w0 = theta + (size_t)s * arch.n_params;
    float *a = malloc(n * arch.max_act * sizeof *a), *b = malloc(n * arch.max_act * sizeof *b);
    const float *in = train_set.x;
    int j = 0;
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < arch.n_layers; i++) {
        const eb_layer *L = &arch.layers[i];
        float *o = in == a ? b : a;
        if (L->kind == EB_LAYER_DENSE) {
            vals[j] = malloc(n * L->in_size * sizeof(float));
            assert_non_null(vals[j]);
            for (size_t k = 0; k < n * L->in_size; k++)
                vals[j][k] = fabsf(in[k]);
            count[j++] = n * L->in_size;
            eb_kern_dense_forward_naive(o, in, w0 + L->param_offset,
                                        w0 + L->param_offset + L->n_weights, (int)n,
                                        (int)L->in_size, L->units);
        } else if (L->kind == EB_LAYER_RELU) {
            for (size_t k = 0; k < n * L->out_size; k++)
                o[k] = in[k] > 0.0f ? in[k] : 0.0f;
        } else {
            continue;
        }
        in = o;
    }
    free(a);
    free(b);
}

static int cmp_float(const void *x, const void *y)
{
    const float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* calibration = every image: percentile 100 gives max |x| / 127 exactly
 * (up to the f32 kernels' rounding of the hidden layers: relative 1e-5);
 * percentile 90 the nearest-rank order statistic, at most 2^-11 above. */
static void test_scales_by_hand(void **state)
{
    const eb_posterior p = samples_posterior();
    const size_t L = eb_quant_act_layers(&arch);
    eb_trained t100, t90;
    eb_error err;
    double worst100 = 0.0, worst90 = 0.0;
    (void)state;
    assert_int_equal(L, 3);
    assert_int_equal(run_quantize(&p, "activations=calibrated calibration=300 "
                                      "calib_percentile=100", &train_set, 1, &t100, &err), EB_OK);
    assert_int_equal(run_quantize(&p, "activations=calibrated calibration=300 "
                                      "calib_percentile=90", &train_set, 1, &t90, &err), EB_OK);
    assert_int_equal(t100.n_act, L);
    assert_int_equal(t100.storage, EB_STORE_INT8);
    for (int s = 0; s < S; s++) {
        float *vals[3];
        size_t count[3];
        layer_inputs(s, vals, count);
        for (size_t j = 0; j < L; j++) {
            const size_t rank = (size_t)ceil(0.9 * (double)count[j]); /* 1-based */
            float m = 0.0f, q90, got100 = t100.act_scales[s * L + j] * 127.0f,
                  got90 = t90.act_scales[s * L + j] * 127.0f;
            double e;
            for (size_t k = 0; k < count[j]; k++)
                m = vals[j][k] > m ? vals[j][k] : m;
            qsort(vals[j], count[j], sizeof(float), cmp_float);
            q90 = vals[j][rank - 1];
            e = fabs((double)got100 - m) / m;
            worst100 = e > worst100 ? e : worst100;
            assert_true(e <= 1e-5);
            if (j == 0) /* the input itself: no kernel rounding, exactly the max */
                assert_true(t100.act_scales[s * L] == m / 127.0f);
            e = ((double)got90 - q90) / q90;
            worst90 = fabs(e) > worst90 ? fabs(e) : worst90;
            assert_true(e >= -1e-5 && e <= ldexp(1.0, -11) + 1e-5);
            free(vals[j]);
        }
    }
    printf("percentile 100: scale x 127 within %.3g of max |x| (tol 1e-5); percentile 90: "
           "within %.3g of the order statistic (tol 2^-11 = %.3g, above)\n",
           worst100, worst90, ldexp(1.0, -11));
    eb_trained_free(&t100);
    eb_trained_free(&t90);
}

/* The draw of calibration images is the seed's: the same seed, the same
 * scales; another seed, other images (and other scales for a subset). */
static void test_seeded_draw(void **state)
{
    const eb_posterior p = samples_posterior();
    const char *sets = "activations=calibrated calibration=20 calib_percentile=100";
    eb_trained a, b, c;
    eb_error err;
    (void)state;
    assert_int_equal(run_quantize(&p, sets, &train_set, 7, &a, &err), EB_OK);
    assert_int_equal(run_quantize(&p, sets, &train_set, 7, &b, &err), EB_OK);
    assert_int_equal(run_quantize(&p, sets, &train_set, 8, &c, &err), EB_OK);
    assert_memory_equal(a.act_scales, b.act_scales, S * a.n_act * sizeof(float));
    assert_true(memcmp(a.act_scales, c.act_scales, S * a.n_act * sizeof(float)) != 0);
    eb_trained_free(&a);
    eb_trained_free(&b);
    eb_trained_free(&c);
}

/* A distilled student: one row of scales, calibrated like a member. */
static void test_distilled(void **state)
{
    eb_posterior p = samples_posterior();
    eb_trained t, m;
    eb_error err;
    (void)state;
    p.repr = EB_REPR_DISTILLED;
    p.members = 10;
    p.head = EB_HEAD_CATEGORICAL;
    assert_int_equal(run_quantize(&p, "activations=calibrated calibration=50", &train_set, 2, &t,
                                  &err), EB_OK);
    assert_int_equal(t.rows, 1);
    assert_int_equal(t.n_act, 3);
    p.repr = EB_REPR_SAMPLES;
    p.members = S;
    p.head = EB_HEAD_NONE;
    assert_int_equal(run_quantize(&p, "activations=calibrated calibration=50", &train_set, 2, &m,
                                  &err), EB_OK);
    /* the student is member 0's weights: the same scales as member 0 */
    assert_memory_equal(t.act_scales, m.act_scales, 3 * sizeof(float));
    eb_trained_free(&t);
    eb_trained_free(&m);
}

/* Through eb_transform_bundle: the same parent, settings and seed give
 * the same bytes; the bundle holds the scales (format 1.2); its
 * predictor runs them (probabilities differ from the dynamic bundle's)
 * and stays within 0.05 of the f32 posterior's probabilities. */
static void test_bundle_and_prediction(void **state)
{
    const eb_transform *t = eb_transform_find("quantize");
    char parent[512], out1[512], out2[512], dyn[512];
    const char *paths[3] = {out1, out2, dyn};
    eb_bundle_writer *w;
    eb_settings set;
    eb_error err;
    float *probs[4];
    double worst = 0.0;
    const size_t n = 40, C = 3;
    (void)state;
    scratch(parent, sizeof parent, "parent.ebb");
    scratch(out1, sizeof out1, "cal1.ebb");
    scratch(out2, sizeof out2, "cal2.ebb");
    scratch(dyn, sizeof dyn, "dyn.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, ARCH, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "ensemble", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, S, arch.n_params, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, parent, &err), EB_OK);
    eb_bundle_writer_free(w);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(eb_transform_settings(t, &set, &err), EB_OK);
        if (i < 2) {
            assert_int_equal(eb_settings_assign(&set, "activations=calibrated", &err), EB_OK);
            assert_int_equal(eb_settings_assign(&set, "calibration=100", &err), EB_OK);
        }
        /* dynamic needs no training data */
        if (eb_transform_bundle(t, parent, i < 2 ? &train_set : NULL, &set, 3, 1, NULL, NULL,
                                paths[i], NULL, &err) != EB_OK)
            fail_msg("%s", err.msg);
    }
    {
        FILE *f1 = fopen(out1, "rb"), *f2 = fopen(out2, "rb");
        int c1, c2;
        assert_non_null(f1);
        assert_non_null(f2);
        do {
            c1 = fgetc(f1);
            c2 = fgetc(f2);
            assert_int_equal(c1, c2);
        } while (c1 != EOF);
        fclose(f1);
        fclose(f2);
    }
    for (int i = 0; i < 4; i++) {
        eb_bundle *b;
        eb_posterior p;
        eb_predictor *pr;
        unsigned major, minor;
        eb_bundle_stored sv;
        const char *path = i == 3 ? parent : paths[i];
        probs[i] = malloc(n * S * C * sizeof(float));
        assert_non_null(probs[i]);
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
        eb_bundle_version(b, &major, &minor);
        eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
        assert_int_equal(minor, i < 2 ? 2 : 1);
        assert_int_equal(sv.n_act, i < 2 ? 3 : 0);
        if (i < 2)
            assert_string_equal(eb_bundle_meta_get(b, "quantize.activations"), "calibrated");
        assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_QUANTIZED, &p, &err),
                         EB_OK);
        assert_int_equal(eb_posterior_quantized(&p), i < 3);
        assert_int_equal(eb_predictor_new(&p, 16, 0, &pr, &err), EB_OK);
        assert_int_equal(eb_predictor_run(pr, train_set.x, n, 0, 1, 0, probs[i], &err), EB_OK);
        eb_predictor_free(pr);
        eb_posterior_release(&p);
        eb_bundle_close(b);
    }
    assert_true(memcmp(probs[0], probs[2], n * S * C * sizeof(float)) != 0);
    for (size_t k = 0; k < n * S * C; k++) {
        const double e = fabs((double)probs[0][k] - probs[3][k]);
        worst = e > worst ? e : worst;
    }
    printf("calibrated int8 vs f32 member probabilities: max |diff| %.3g (tol 0.05)\n", worst);
    assert_true(worst <= 0.05);
    for (int i = 0; i < 4; i++) {
        free(probs[i]);
        if (i < 3)
            unlink(paths[i]);
    }
    unlink(parent);
}

/* Every allocation of the calibrated transform failing in turn: an
 * out-of-memory error, nothing leaked (the sanitizer build checks), and
 * once all succeed the scales of an undisturbed run. */
static void test_alloc_failures(void **state)
{
    const eb_posterior p = samples_posterior();
    const char *sets = "activations=calibrated calibration=40";
    eb_trained ref;
    eb_error err;
    int done = 0;
    (void)state;
    assert_int_equal(run_quantize(&p, sets, &train_set, 4, &ref, &err), EB_OK);
    for (long n = 1; n < 200 && !done; n++) {
        eb_trained t;
        eb_status st;
        eb_alloc_fail_at(n);
        st = run_quantize(&p, sets, &train_set, 4, &t, &err);
        eb_alloc_fail_at(0);
        if (st == EB_OK) {
            assert_memory_equal(t.act_scales, ref.act_scales, S * ref.n_act * sizeof(float));
            done = 1;
        } else {
            assert_int_equal(st, EB_ERR_NOMEM);
        }
        eb_trained_free(&t);
    }
    assert_true(done);
    eb_trained_free(&ref);
}

static void expect_refusal(const eb_posterior *p, const char *sets, const eb_dataset *train,
                           const char *needle)
{
    eb_trained t;
    eb_error err;
    eb_error_clear(&err);
    assert_int_equal(run_quantize(p, sets, train, 1, &t, &err), EB_ERR_ARG);
    printf("  -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, needle));
    eb_trained_free(&t);
}

static void test_refusals(void **state)
{
    eb_posterior p = samples_posterior();
    float sigma[1024];
    eb_settings s;
    eb_error err;
    (void)state;
    expect_refusal(&p, "activations=calibrated precision=f16", &train_set,
                   "activations=calibrated needs precision=int8");
    expect_refusal(&p, "activations=calibrated", NULL, "none were given");
    expect_refusal(&p, "activations=calibrated calibration=301", &train_set,
                   "calibration=301 images, but the training set 'synthetic' has 300");
    assert_true(arch.n_params <= 1024);
    for (size_t k = 0; k < arch.n_params; k++)
        sigma[k] = 0.01f;
    p.repr = EB_REPR_GAUSSIAN;
    p.members = 10;
    p.sigma = sigma;
    expect_refusal(&p, "activations=calibrated", &train_set,
                   "a gaussian posterior is predicted from decoded f32 weights");
    assert_int_equal(eb_transform_settings(eb_transform_find("quantize"), &s, &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "activations=static", &err), EB_ERR_ARG);
    printf("  -> %s\n", err.msg);
    assert_int_equal(eb_settings_assign(&s, "calib_percentile=40", &err), EB_ERR_ARG);
    printf("  -> %s\n", err.msg);
    assert_int_equal(eb_settings_assign(&s, "calibration=0", &err), EB_ERR_ARG);
    printf("  -> %s\n", err.msg);
}

/* Callers load training data only where the transform reads it: quantize
 * only to calibrate, prune and distill always. */
static void test_needs_train(void **state)
{
    const eb_transform *q = eb_transform_find("quantize");
    eb_settings s;
    eb_error err;
    (void)state;
    assert_int_equal(eb_transform_settings(q, &s, &err), EB_OK);
    assert_false(eb_transform_needs_train(q, &s));
    assert_int_equal(eb_settings_assign(&s, "precision=f16", &err), EB_OK);
    assert_false(eb_transform_needs_train(q, &s));
    assert_int_equal(eb_settings_assign(&s, "precision=int8", &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "activations=calibrated", &err), EB_OK);
    assert_true(eb_transform_needs_train(q, &s));
    assert_true(eb_transform_needs_train(eb_transform_find("prune"), &s));
    assert_true(eb_transform_needs_train(eb_transform_find("distill"), &s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scales_by_hand),
        cmocka_unit_test(test_seeded_draw),
        cmocka_unit_test(test_distilled),
        cmocka_unit_test(test_bundle_and_prediction),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_needs_train),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
