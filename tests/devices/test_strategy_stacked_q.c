/* test_strategy_stacked_q.c: `stacked` for int8 and f16 samples
 * posteriors (devices/strategy_stacked_q.c) against `loop`, the oracle,
 * through the device interface (strategy=loop vs strategy=stacked):
 * small mlp and cnn architectures, several S, n in {1, 3, 20} (the GEMV
 * path, the GEMV path over several inputs, and the batched kernels with
 * a partial chunk). Tolerance: int8 is bit-identical (same activation
 * quantization, exact integer sums, same float expressions); f16 sums
 * in the GEMV's own order, so its probabilities are held to an absolute
 * 1e-5 of loop's, and the largest difference is printed. Threads 1 and 2
 * give the same bytes. int8 with static activation scales (ACTSCALES)
 * is bit-identical too. Also: which entry the registry picks, and the
 * sentences that refuse other posteriors (and ACTSCALES of the wrong
 * count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "devices/eb_device.h"
#include "devices/strategy.h"
#include "methods/eb_methods.h"
#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_quant.h"

#define F16_TOL 1e-5

/* NI = 169 and 37 (tails of 16, 32 and 64), NO = 37 (not a multiple of
 * 4), a dropout layer (the identity for samples). */
#define MLP "input 13x13x1; flatten; dense 37; relu; dropout 0.2; dense 10"
/* conv first (no shared first-layer quantization), then a dense head */
#define CNN "input 10x10x2; conv2d 5; relu; maxpool; flatten; dense 19; relu; dense 10"

static void scratch_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/devices_stacked_q_%s", EB_TEST_BINARY_DIR, name);
}

/* Static activation scales (ACTSCALES) of write_samples_act: none, per
 * member and weighted layer, or one too many per member. */
enum { ACT_NONE = 0, ACT_STATIC = 1, ACT_WRONG_COUNT = 2 };

/* S random members of arch_text stored as sk (int8: one scale per output
 * channel, the quantize transform's grouping), with static activation
 * scales per act: member s, weighted layer j gets 0.004 + 0.003 ((s + j)
 * mod 5), ranges of 0.5 to 2.4 (the inputs lie in [-1, 1]; hidden layers
 * saturate in places, which the kernels must handle alike). */
static void write_samples_act(const char *path, const char *arch_text, uint32_t S,
                              uint64_t seed, eb_storage_kind sk, int act)
{
    uint64_t *groups = NULL;
    size_t ng = 0;
    eb_arch arch;
    eb_bundle_writer *w;
    eb_error err;
    eb_rng r;
    float *theta;
    assert_int_equal(eb_arch_parse(arch_text, &arch, &err), EB_OK);
    theta = malloc((size_t)S * arch.n_params * sizeof *theta);
    assert_non_null(theta);
    eb_rng_seed(&r, seed, 0);
    for (uint32_t s = 0; s < S; s++)
        eb_arch_init_params(&arch, theta + (size_t)s * arch.n_params, &r);
    /* biases away from zero so they matter */
    for (size_t k = 0; k < (size_t)S * arch.n_params; k++)
        if (k % 7 == 0)
            theta[k] += 0.05f;
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, arch_text, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, S, arch.n_params, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "test", &err), EB_OK);
    if (sk == EB_STORE_INT8)
        assert_int_equal(eb_quant_groups(&arch, &groups, &ng, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, sk, groups, ng, &err), EB_OK);
    if (act != ACT_NONE) {
        const size_t L = eb_quant_act_layers(&arch) + (act == ACT_WRONG_COUNT);
        float *a = malloc((size_t)S * L * sizeof *a);
        assert_non_null(a);
        for (uint32_t m = 0; m < S; m++)
            for (size_t j = 0; j < L; j++)
                a[m * L + j] = 0.004f + 0.003f * (float)((m + j) % 5);
        assert_int_equal(eb_bundle_writer_act_scales(w, a, L, &err), EB_OK);
        free(a);
    }
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    eb_free(groups);
    free(theta);
}

static void write_samples(const char *path, const char *arch_text, uint32_t S, uint64_t seed,
                          eb_storage_kind sk)
{
    write_samples_act(path, arch_text, S, seed, sk, ACT_NONE);
}

static eb_device *open_loaded(const char *strategy, int threads, const char *path)
{
    eb_device_config cfg;
    eb_device *dev;
    eb_device_info info;
    eb_error err;
    eb_device_config_default(&cfg);
    cfg.max_batch = 8; /* below n = 20: loop splits too */
    cfg.threads = threads;
    snprintf(cfg.options, sizeof cfg.options, "strategy=%s", strategy);
    if (eb_device_open("cpu", &cfg, &dev, &err) != EB_OK)
        fail_msg("open cpu (%s): %s", strategy, err.msg);
    if (eb_device_load(dev, path, NULL, &err) != EB_OK)
        fail_msg("load %s (%s): %s", path, strategy, err.msg);
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_string_equal(info.strategy, strategy);
    return dev;
}

static float *random_inputs(size_t n, size_t in, uint64_t seed, int signed_too)
{
    float *x = malloc(n * in * sizeof *x);
    eb_rng r;
    assert_non_null(x);
    eb_rng_seed(&r, seed, 1);
    for (size_t i = 0; i < n * in; i++)
        x[i] = signed_too ? 2.0f * eb_rng_uniformf(&r) - 1.0f : eb_rng_uniformf(&r);
    return x;
}

/* stacked (threads 1 and 2) against loop for one stored bundle; act:
 * with static activation scales (int8), also checked to change loop's
 * probabilities against the same weights quantized dynamically. */
static void check_bundle_act(const char *arch_text, const char *tag, eb_storage_kind sk,
                             uint32_t S, int act)
{
    static const size_t ns[] = {1, 3, 20};
    char path[512], dyn_path[512];
    eb_device *loop, *st1, *st2, *dyn = NULL;
    eb_error err;
    double worst = 0.0;
    size_t in, C = 10;

    scratch_path(path, sizeof path, "bundle.ebb");
    write_samples_act(path, arch_text, S, 100 + S, sk, act);
    if (act) {
        scratch_path(dyn_path, sizeof dyn_path, "bundle_dyn.ebb");
        write_samples(dyn_path, arch_text, S, 100 + S, sk);
        dyn = open_loaded("loop", 1, dyn_path);
    }
    loop = open_loaded("loop", 2, path);
    st1 = open_loaded("stacked", 1, path);
    st2 = open_loaded("stacked", 2, path);
    in = eb_device_model_info(loop)->in_size;
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const size_t n = ns[t];
        float *x = random_inputs(n, in, 7 + n, (int)(t & 1));
        float *want = malloc(n * S * C * sizeof *want), *got1 = malloc(n * S * C * sizeof *got1);
        float *got2 = malloc(n * S * C * sizeof *got2);
        assert_non_null(want);
        assert_non_null(got1);
        assert_non_null(got2);
        for (uint32_t Sq = S; Sq >= 1; Sq = Sq > 2 ? Sq / 2 : Sq - 1) {
            const size_t len = n * Sq * C;
            assert_int_equal(eb_device_predict(loop, x, n, Sq, 5, 0, want, &err), EB_OK);
            if (eb_device_predict(st1, x, n, Sq, 5, 0, got1, &err) != EB_OK)
                fail_msg("stacked: %s", err.msg);
            assert_int_equal(eb_device_predict(st2, x, n, Sq, 5, 0, got2, &err), EB_OK);
            /* the thread count never changes a member's arithmetic */
            assert_memory_equal(got1, got2, len * sizeof *got1);
            if (sk == EB_STORE_INT8) {
                assert_memory_equal(got1, want, len * sizeof *got1);
                if (dyn) { /* the static scales are what ran */
                    assert_int_equal(eb_device_predict(dyn, x, n, Sq, 5, 0, got2, &err), EB_OK);
                    assert_true(memcmp(got2, want, len * sizeof *got2) != 0);
                }
            } else {
                for (size_t k = 0; k < len; k++) {
                    const double e = fabs((double)got1[k] - (double)want[k]);
                    if (!(e <= F16_TOL))
                        fail_msg("%s f16 S=%u n=%zu: prob %zu is %.9g, loop %.9g", tag, Sq, n, k,
                                 (double)got1[k], (double)want[k]);
                    worst = e > worst ? e : worst;
                }
            }
        }
        free(x);
        free(want);
        free(got1);
        free(got2);
    }
    if (sk == EB_STORE_INT8)
        printf("%s int8%s S=%u: stacked equals loop bit for bit (n = 1, 3, 20; threads 1 and "
               "2)\n", tag, act ? " static activation scales" : "", S);
    else
        printf("%s f16 S=%u: stacked within %.3g of loop (tolerance %g; n = 1, 3, 20), threads "
               "1 and 2 bit-identical\n",
               tag, S, worst, F16_TOL);
    eb_device_close(loop);
    eb_device_close(st1);
    eb_device_close(st2);
    remove(path);
    if (dyn) {
        eb_device_close(dyn);
        remove(dyn_path);
    }
}

static void check_bundle(const char *arch_text, const char *tag, eb_storage_kind sk, uint32_t S)
{
    check_bundle_act(arch_text, tag, sk, S, ACT_NONE);
}

static void test_matches_loop(void **state)
{
    static const uint32_t Ss[] = {1, 3, 8};
    (void)state;
    for (int sk = EB_STORE_F16; sk <= EB_STORE_INT8; sk++)
        for (size_t i = 0; i < sizeof Ss / sizeof Ss[0]; i++) {
            check_bundle(MLP, "mlp", (eb_storage_kind)sk, Ss[i]);
            check_bundle(CNN, "cnn", (eb_storage_kind)sk, Ss[i]);
        }
}

/* int8 with static activation scales (ACTSCALES, a scale per member and
 * weighted layer): stacked equals loop bit for bit, and the scales
 * change the result. */
static void test_static_scales_match_loop(void **state)
{
    static const uint32_t Ss[] = {1, 3, 8};
    (void)state;
    for (size_t i = 0; i < sizeof Ss / sizeof Ss[0]; i++) {
        check_bundle_act(MLP, "mlp", EB_STORE_INT8, Ss[i], ACT_STATIC);
        check_bundle_act(CNN, "cnn", EB_STORE_INT8, Ss[i], ACT_STATIC);
    }
}

/* ACTSCALES whose count per member is not the architecture's weighted
 * layers: the bundle opens (it does not parse the architecture), the
 * posterior refuses it, naming the section and both counts. */
static void test_static_scales_wrong_count(void **state)
{
    char path[512];
    eb_bundle *b;
    eb_posterior p;
    eb_error err;
    (void)state;
    scratch_path(path, sizeof path, "wrong_count.ebb");
    write_samples_act(path, MLP, 2, 9, EB_STORE_INT8, ACT_WRONG_COUNT);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    for (unsigned flags = 0; flags <= EB_POSTERIOR_QUANTIZED; flags += EB_POSTERIOR_QUANTIZED) {
        eb_error_clear(&err);
        assert_int_equal(eb_posterior_from_bundle_flags(b, flags, &p, &err), EB_ERR_FORMAT);
        printf("refusal: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "section ACTSCALES holds 3 scales per row but the "
                                        "architecture has 2 weighted layers"));
    }
    eb_bundle_close(b);
    remove(path);
}

/* auto and stacked choose this entry for int8 and f16 samples; other
 * posteriors get each entry's reason. */
static void test_pick_and_refuse(void **state)
{
    char path[512];
    eb_error err;
    (void)state;
    scratch_path(path, sizeof path, "pick.ebb");
    for (int sk = EB_STORE_F32; sk <= EB_STORE_INT8; sk++) {
        eb_bundle *b;
        eb_posterior p;
        const eb_strategy_ops *ops;
        write_samples(path, MLP, 3, 1, (eb_storage_kind)sk);
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
        assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_QUANTIZED, &p, &err),
                         EB_OK);
        assert_int_equal(eb_strategy_pick("stacked", &p, &ops, &err), EB_OK);
        assert_ptr_equal(ops, sk == EB_STORE_F32 ? &eb_strategy_stacked_f32
                                                 : &eb_strategy_stacked_q);
        assert_int_equal(eb_strategy_pick("auto", &p, &ops, &err), EB_OK);
        assert_string_equal(ops->name, "stacked");
        if (sk == EB_STORE_F32) {
            eb_error_clear(&err);
            assert_int_equal(eb_strategy_stacked_q.supports(&p, &err), EB_ERR_UNSUPPORTED);
            assert_non_null(strstr(err.msg, "int8 or f16"));
            assert_non_null(strstr(err.msg, "f32"));
        }
        eb_posterior_release(&p);
        eb_bundle_close(b);
    }
    /* a dropout posterior: neither half of stacked runs it */
    {
        eb_posterior p;
        const eb_strategy_ops *ops;
        memset(&p, 0, sizeof p);
        p.repr = EB_REPR_DROPOUT;
        eb_error_clear(&err);
        assert_int_equal(eb_strategy_stacked_q.supports(&p, &err), EB_ERR_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "samples posteriors"));
        eb_error_clear(&err);
        assert_int_equal(eb_strategy_pick("stacked", &p, &ops, &err), EB_ERR_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "stacked (int8/f16)"));
        assert_non_null(strstr(err.msg, "stacked (f32)"));
        printf("refusal: %s\n", err.msg);
    }
    remove(path);
}

/* Draw limits and the bytes reported. */
static void test_limits(void **state)
{
    char path[512];
    eb_device *dev;
    eb_error err;
    float x[169], probs[4 * 10];
    (void)state;
    memset(x, 0, sizeof x);
    scratch_path(path, sizeof path, "limits.ebb");
    write_samples(path, MLP, 4, 3, EB_STORE_INT8);
    dev = open_loaded("stacked", 2, path);
    assert_int_equal(eb_device_predict(dev, x, 1, 5, 1, 0, probs, &err), EB_ERR_ARG);
    /* all-zero input: scale 0, the logits are the biases */
    assert_int_equal(eb_device_predict(dev, x, 1, 4, 1, 0, probs, &err), EB_OK);
    for (int k = 0; k < 40; k++)
        assert_true(probs[k] > 0.0f && probs[k] < 1.0f);
    eb_device_close(dev);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_loop),
        cmocka_unit_test(test_static_scales_match_loop),
        cmocka_unit_test(test_static_scales_wrong_count),
        cmocka_unit_test(test_pick_and_refuse),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
