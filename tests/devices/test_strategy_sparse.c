/* test_strategy_sparse.c: `sparse` (devices/strategy_sparse.c) through
 * the CPU device, on pruned samples bundles written shared-sparse and
 * CSR (mlp and cnn architectures, about 80% of each member's weights
 * zero, some biases zero, one output row pruned entirely): `auto`
 * resolves to it and keeps the values in place (no dense copy in the
 * model bytes); its probabilities equal loop's on the decoded weights
 * within 1e-5 absolute (the same products, zeros skipped, summed in
 * another order), for batches of 1, 3 and 20, fewer draws than members,
 * and the same bytes for one thread and two and one input at a time;
 * input gradients (made on a decoded copy at the first call) equal
 * loop's bit for bit; and strategy=stacked on such a bundle decodes it
 * and runs dense. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/eb_device.h"
#include "methods/eb_methods.h"
#include "methods/nn/eb_nn.h"

#define MLP "input 6x6x1; flatten; dense 20; relu; dense 17; relu; dense 5"
#define CNN "input 9x9x2; conv2d 4; relu; maxpool; flatten; dense 7; relu; dense 3"
#define TOL 1e-5

static void write_sparse(const char *path, const char *arch_text, uint32_t S,
                         eb_storage_kind kind, size_t *k_out)
{
    eb_arch a;
    eb_error err;
    eb_rng r;
    eb_bundle_writer *w;
    float *theta;
    assert_int_equal(eb_arch_parse(arch_text, &a, &err), EB_OK);
    theta = malloc((size_t)S * a.n_params * sizeof *theta);
    assert_non_null(theta);
    eb_rng_seed(&r, 17, 0);
    for (uint32_t s = 0; s < S; s++) {
        float *t = theta + (size_t)s * a.n_params;
        eb_arch_init_params(&a, t, &r);
        for (size_t k = 0; k < a.n_params; k++) {
            if (t[k] == 0.0f) /* biases start at zero: give most a value */
                t[k] = eb_rng_uniformf(&r) < 0.7f ? 0.1f * (float)eb_rng_normal(&r) : 0.0f;
            else if (eb_rng_uniformf(&r) < 0.8f) /* member-specific pattern (csr differs) */
                t[k] = 0.0f;
        }
        /* the first dense layer's row 2 pruned entirely, in every member */
        for (int i = 0; i < a.n_layers; i++)
            if (a.layers[i].kind == EB_LAYER_DENSE) {
                memset(t + a.layers[i].param_offset + 2 * a.layers[i].in_size, 0,
                       a.layers[i].in_size * sizeof(float));
                break;
            }
    }
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, arch_text, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, S, a.n_params, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "test", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, kind, NULL, 0, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    free(theta);
    *k_out = a.n_params;
}

static eb_device *open_dev(const char *strategy, int threads, uint32_t max_draws)
{
    eb_device_config cfg;
    eb_device *dev;
    eb_error err;
    eb_device_config_default(&cfg);
    cfg.max_batch = 8;
    cfg.threads = threads;
    cfg.max_draws = max_draws;
    snprintf(cfg.options, sizeof cfg.options, "strategy=%s", strategy);
    if (eb_device_open("cpu", &cfg, &dev, &err) != EB_OK)
        fail_msg("open: %s", err.msg);
    return dev;
}

static float *inputs(size_t n, size_t in)
{
    float *x = malloc(n * in * sizeof *x);
    eb_rng r;
    eb_rng_seed(&r, 5, 1);
    for (size_t i = 0; i < n * in; i++)
        x[i] = eb_rng_uniformf(&r);
    return x;
}

static void check_case(const char *arch_text, eb_storage_kind kind)
{
    const uint32_t S = 5;
    const size_t n = 20;
    char path[512];
    size_t K;
    eb_error err;
    eb_device *sp, *sp1, *loop, *dense;
    eb_device_info info;
    const eb_device_model *m, *ml;
    float *x, *want, *got, *got1, *piece, *dx1, *dx2;
    size_t C, in;
    double worst = 0.0;

    snprintf(path, sizeof path, "%s/devices_sparse_%s.ebb", EB_TEST_BINARY_DIR,
             eb_storage_name(kind));
    write_sparse(path, arch_text, S, kind, &K);
    sp = open_dev("auto", 2, 0);
    sp1 = open_dev("sparse", 1, 0);
    loop = open_dev("loop", 1, 0);
    assert_int_equal(eb_device_load(sp, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_load(sp1, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_load(loop, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_describe(sp, &info, &err), EB_OK);
    assert_string_equal(info.strategy, "sparse");
    m = eb_device_model_info(sp);
    ml = eb_device_model_info(loop);
    C = (size_t)m->n_classes;
    in = m->in_size;
    printf("%s %.24s...: model bytes sparse in place %llu, loop with the dense copy %llu "
           "(dense f32 members %zu)\n", eb_storage_name(kind), arch_text,
           (unsigned long long)m->model_bytes, (unsigned long long)ml->model_bytes,
           (size_t)S * K * sizeof(float));
    /* no dense copy: for the mlp (whose activations are small) the
     * workspace holds less than the decoded members; always less than
     * loop's, which holds them */
    if (arch_text[6] == '6')
        assert_true(m->workspace_bytes < (uint64_t)S * K * sizeof(float));
    assert_true(m->model_bytes < ml->model_bytes);
    assert_true(ml->workspace_bytes >= (uint64_t)S * K * sizeof(float));
    assert_int_equal(m->param_bytes, ml->param_bytes);

    x = inputs(n, in);
    want = malloc(n * S * C * sizeof *want);
    got = malloc(n * S * C * sizeof *got);
    got1 = malloc(n * S * C * sizeof *got1);
    piece = malloc(n * S * C * sizeof *piece);
    assert_int_equal(eb_device_predict(loop, x, n, S, 1, 0, want, &err), EB_OK);
    assert_int_equal(eb_device_predict(sp, x, n, S, 1, 0, got, &err), EB_OK);
    assert_int_equal(eb_device_predict(sp1, x, n, S, 1, 0, got1, &err), EB_OK);
    for (size_t i = 0; i < n * S * C; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (e > worst)
            worst = e;
    }
    printf("  sparse vs loop: max abs diff %.3g (tol %g)\n", worst, TOL);
    assert_true(worst <= TOL);
    assert_memory_equal(got, got1, n * S * C * sizeof *got);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(eb_device_predict(sp, x + i * in, 1, S, 1, i, piece + i * S * C, &err),
                         EB_OK);
    assert_memory_equal(piece, got, 3 * S * C * sizeof *got);
    /* fewer draws */
    assert_int_equal(eb_device_predict(sp, x, 1, 2, 1, 0, piece, &err), EB_OK);
    assert_memory_equal(piece, got, 2 * C * sizeof *got);

    /* gradients: the decoded copy, so loop's bits */
    {
        uint8_t y[3] = {0, 1, 2};
        dx1 = malloc(3 * in * sizeof *dx1);
        dx2 = malloc(3 * in * sizeof *dx2);
        assert_int_equal(eb_device_input_grad(sp, x, y, 3, S, 1, 0, dx1, NULL, &err), EB_OK);
        assert_int_equal(eb_device_input_grad(loop, x, y, 3, S, 1, 0, dx2, NULL, &err), EB_OK);
        assert_memory_equal(dx1, dx2, 3 * in * sizeof *dx1);
        free(dx1);
        free(dx2);
    }

    /* stacked on a sparse bundle: decoded, dense */
    dense = open_dev("stacked", 2, 0);
    assert_int_equal(eb_device_load(dense, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_describe(dense, &info, &err), EB_OK);
    assert_string_equal(info.strategy, "stacked");
    assert_int_equal(eb_device_predict(dense, x, n, S, 1, 0, piece, &err), EB_OK);
    for (size_t i = 0; i < n * S * C; i++)
        assert_true(fabs((double)piece[i] - want[i]) <= TOL);
    eb_device_close(dense);

    /* a device capped below the member count (csr: tables for those only) */
    {
        eb_device *cap = open_dev("sparse", 2, 3);
        assert_int_equal(eb_device_load(cap, path, NULL, &err), EB_OK);
        assert_int_equal(eb_device_predict(cap, x, 2, 3, 1, 0, piece, &err), EB_OK);
        for (size_t i = 0; i < 2; i++)
            assert_memory_equal(piece + i * 3 * C, got + i * S * C, 3 * C * sizeof *got);
        eb_device_close(cap);
    }
    eb_device_close(sp);
    eb_device_close(sp1);
    eb_device_close(loop);
    free(x);
    free(want);
    free(got);
    free(got1);
    free(piece);
    remove(path);
}

static void test_shared_sparse_mlp(void **state)
{
    (void)state;
    check_case(MLP, EB_STORE_SHARED_SPARSE);
}

static void test_csr_mlp(void **state)
{
    (void)state;
    check_case(MLP, EB_STORE_CSR);
}

static void test_shared_sparse_cnn(void **state)
{
    (void)state;
    check_case(CNN, EB_STORE_SHARED_SPARSE);
}

static void test_csr_cnn(void **state)
{
    (void)state;
    check_case(CNN, EB_STORE_CSR);
}

/* sparse refuses what it cannot run, naming why */
static void test_refusals(void **state)
{
    char path[512];
    eb_device *dev;
    eb_error err;
    size_t K;
    (void)state;
    snprintf(path, sizeof path, "%s/devices_sparse_f32.ebb", EB_TEST_BINARY_DIR);
    write_sparse(path, MLP, 2, EB_STORE_F32, &K);
    dev = open_dev("sparse", 1, 0);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_ERR_UNSUPPORTED);
    printf("sparse on f32: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "sparse"));
    assert_non_null(strstr(err.msg, path));
    eb_device_close(dev);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_sparse_mlp),
        cmocka_unit_test(test_csr_mlp),
        cmocka_unit_test(test_shared_sparse_cnn),
        cmocka_unit_test(test_csr_cnn),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
