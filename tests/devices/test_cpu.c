/* test_cpu.c: the device interface (devices/device.c) and the CPU backend
 * (devices/cpu.c): the registry; CPU-set parsing; configuration and table
 * validation naming the field or slot at fault; predictions and input
 * gradients equal to eb_posterior_predict's and eb_predictor_input_grad's
 * bit for bit (samples and dropout bundles written here with the bundle
 * writer, and int8 and f16 ones, which the device runs on the quantized
 * kernels without a decoded copy); model bytes; load errors naming the
 * file; state errors;
 * affinity, threads and the slowdown hook's reporting; the defaults of
 * empty optional slots; eb_device_compare against the CPU oracle; and
 * allocation failures at every point of open, load and predict (leaks are
 * the sanitizer build's to find). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/eb_test.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "devices/eb_device.h"
#include "methods/eb_methods.h"
#include "methods/nn/nn_quant.h"

#define MLP "input 28x28x1; flatten; dense 16; relu; dense 10"
#define MLP_DROPOUT "input 28x28x1; flatten; dense 16; relu; dropout 0.3; dense 10"

static void scratch_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/devices_cpu_%s", EB_TEST_BINARY_DIR, name);
}

/* Writes a bundle of random parameters: S members (samples) or one theta
 * with S default draws (dropout), stored as sk (int8: one scale per
 * output channel, the quantize transform's grouping). */
static void write_bundle_as(const char *path, const char *arch_text, eb_repr_kind repr,
                            uint32_t S, uint64_t seed, eb_storage_kind sk)
{
    uint64_t *groups = NULL;
    size_t ng = 0;
    eb_arch arch;
    eb_bundle_writer *w;
    eb_error err;
    eb_rng r;
    uint32_t rows = repr == EB_REPR_SAMPLES ? S : 1;
    float *theta;
    assert_int_equal(eb_arch_parse(arch_text, &arch, &err), EB_OK);
    theta = malloc((size_t)rows * arch.n_params * sizeof *theta);
    assert_non_null(theta);
    eb_rng_seed(&r, seed, 0);
    for (uint32_t s = 0; s < rows; s++)
        eb_arch_init_params(&arch, theta + (size_t)s * arch.n_params, &r);
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, arch_text, &err), EB_OK);
    if (repr == EB_REPR_SAMPLES)
        assert_int_equal(eb_bundle_writer_samples(w, S, arch.n_params, theta, &err), EB_OK);
    else
        assert_int_equal(eb_bundle_writer_dropout(w, S, arch.n_params, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "test", &err), EB_OK);
    if (sk == EB_STORE_INT8)
        assert_int_equal(eb_quant_groups(&arch, &groups, &ng, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, sk, groups, ng, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    eb_free(groups);
    free(theta);
}

static void write_bundle(const char *path, const char *arch_text, eb_repr_kind repr, uint32_t S,
                         uint64_t seed)
{
    write_bundle_as(path, arch_text, repr, S, seed, EB_STORE_F32);
}

static eb_device *open_cpu(int max_batch, uint32_t max_draws)
{
    eb_device_config cfg;
    eb_device *dev;
    eb_error err;
    eb_device_config_default(&cfg);
    cfg.max_batch = max_batch;
    cfg.max_draws = max_draws;
    /* loop: the oracle, whose bytes equal the methods layer's (the other
     * strategies are held to it in test_strategy.c) */
    snprintf(cfg.options, sizeof cfg.options, "strategy=loop");
    if (eb_device_open("cpu", &cfg, &dev, &err) != EB_OK)
        fail_msg("open cpu: %s", err.msg);
    return dev;
}

/* ---- registry and CPU sets ---------------------------------------------- */

static void test_registry(void **state)
{
    eb_device *dev = (eb_device *)1;
    eb_error err;
    (void)state;
    assert_ptr_equal(eb_device_find("cpu"), &eb_device_cpu_ops);
    assert_null(eb_device_find("tpu"));
    assert_null(eb_device_find(NULL));
    assert_ptr_equal(eb_device_backends[0], &eb_device_cpu_ops);
    assert_int_equal(eb_device_open("tpu", NULL, &dev, &err), EB_ERR_NOTFOUND);
    assert_null(dev);
    assert_non_null(strstr(err.msg, "'tpu'"));
    assert_non_null(strstr(err.msg, "known: cpu"));
    assert_int_equal(eb_device_cpu_ops.version, EB_DEVICE_OPS_VERSION);
    assert_true(eb_device_cpu_ops.caps & EB_DEVICE_CAP_INPUT_GRAD);
    assert_true(eb_device_cpu_ops.caps & EB_DEVICE_CAP_LOCAL);
}

static void test_cpus_parse(void **state)
{
    eb_device_cpus set;
    eb_error err;
    char buf[64];
    (void)state;
    assert_int_equal(eb_device_cpus_parse("0-3,6", &set, &err), EB_OK);
    assert_int_equal(eb_device_cpus_count(&set), 5);
    assert_int_equal(set.bits[0], 0x4f);
    eb_device_cpus_format(&set, buf, sizeof buf);
    assert_string_equal(buf, "0-3,6");
    assert_int_equal(eb_device_cpus_parse("0x13", &set, &err), EB_OK); /* CPUs 0, 1, 4 */
    assert_int_equal(set.bits[0], 0x13);
    eb_device_cpus_format(&set, buf, sizeof buf);
    assert_string_equal(buf, "0-1,4");
    assert_int_equal(eb_device_cpus_parse("1023", &set, &err), EB_OK);
    assert_int_equal(set.bits[15], (uint64_t)1 << 63);
    assert_int_equal(eb_device_cpus_parse("64-65,2", &set, &err), EB_OK);
    assert_int_equal(set.bits[1], 3);
    eb_device_cpus_format(&set, buf, sizeof buf);
    assert_string_equal(buf, "2,64-65");
    eb_device_cpus_format(&set, buf, 3); /* truncation stays terminated */
    assert_int_equal(strlen(buf), 2);

    assert_int_equal(eb_device_cpus_parse("3-1", &set, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "backwards"));
    assert_int_equal(eb_device_cpus_parse("1,a", &set, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "at 'a'"));
    assert_int_equal(eb_device_cpus_parse("0-", &set, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_cpus_parse("2;3", &set, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_cpus_parse("1024", &set, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "1024"));
    assert_int_equal(eb_device_cpus_parse("0x0", &set, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no CPU"));
    assert_int_equal(eb_device_cpus_parse("0xg", &set, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_cpus_parse("0x", &set, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_cpus_parse("", &set, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_cpus_count(&set), 0); /* zeroed on failure */
}

static void test_config_errors(void **state)
{
    eb_device_config cfg;
    eb_device *dev;
    eb_error err;
    (void)state;
    eb_device_config_default(&cfg);
    cfg.threads = -1;
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "threads = -1"));
    eb_device_config_default(&cfg);
    cfg.max_batch = -5;
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "max_batch = -5"));
    eb_device_config_default(&cfg);
    snprintf(cfg.cpus, sizeof cfg.cpus, "0-x");
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "option cpus"));
    eb_device_config_default(&cfg);
    snprintf(cfg.cpus, sizeof cfg.cpus, "1000"); /* parses, but no such CPU here */
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "cpus '1000'"));
    eb_device_config_default(&cfg);
    snprintf(cfg.options, sizeof cfg.options, "host=board1");
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "host=board1"));
    assert_null(dev);
    snprintf(cfg.options, sizeof cfg.options, "strategy=fastest");
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown strategy"));
    assert_non_null(strstr(err.msg, "stacked"));
    assert_null(dev);
    snprintf(cfg.options, sizeof cfg.options, "strategy=");
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no strategy name"));
    /* defaults resolved */
    assert_int_equal(eb_device_open("cpu", NULL, &dev, &err), EB_OK);
    assert_int_equal(eb_device_get_config(dev)->max_batch, 256);
    assert_string_equal(eb_device_name(dev), "cpu");
    eb_device_close(dev);
    eb_device_close(NULL);
}

/* ---- predictions against the methods layer ------------------------------ */

static void check_matches_posterior(const char *arch, eb_repr_kind repr, uint32_t S)
{
    char path[512];
    eb_bundle *b;
    eb_posterior post;
    eb_device *dev;
    eb_device_load_timing t;
    eb_error err;
    const eb_device_model *m;
    const size_t n = 10, C = 10;
    float *x, *want, *got, *piece;

    scratch_path(path, sizeof path, repr == EB_REPR_SAMPLES ? "samples.ebb" : "dropout.ebb");
    write_bundle(path, arch, repr, S, 42);
    dev = open_cpu(4, 0); /* batch 4 < n: the device splits */
    assert_int_equal(eb_device_load(dev, path, &t, &err), EB_OK);
    assert_true(t.open_s > 0.0 && t.prepare_s > 0.0);
    assert_true(t.total_s >= t.open_s + t.prepare_s - 1e-9);
    assert_string_equal(eb_device_loaded_path(dev), path);
    m = eb_device_model_info(dev);
    assert_non_null(m);
    assert_int_equal(m->repr, repr);
    assert_int_equal(m->default_draws, S);
    x = eb_test_uniform_inputs(n, m->in_size, 7);
    want = malloc(n * S * C * sizeof *want);
    got = malloc(n * S * C * sizeof *got);
    piece = malloc(n * S * C * sizeof *piece);

    /* the reference: the methods layer straight from the file */
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &post, &err), EB_OK);
    assert_int_equal(eb_posterior_predict(&post, x, n, S, 99, 4, want, &err), EB_OK);

    assert_int_equal(eb_device_predict(dev, x, n, 0, 99, 0, got, &err), EB_OK); /* S = 0: default */
    assert_memory_equal(got, want, n * S * C * sizeof *got);
    /* one input at a time (the latency path) with its example index */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(eb_device_predict(dev, x + i * m->in_size, 1, S, 99, i,
                                           piece + i * S * C, &err), EB_OK);
    assert_memory_equal(piece, want, n * S * C * sizeof *piece);
    /* fewer draws: the first S' of each input's draws */
    assert_int_equal(eb_posterior_predict(&post, x, n, 1, 99, 4, want, &err), EB_OK);
    assert_int_equal(eb_device_predict(dev, x, n, 1, 99, 0, got, &err), EB_OK);
    assert_memory_equal(got, want, n * C * sizeof *got);
    if (repr == EB_REPR_DROPOUT) {
        /* another seed draws other masks */
        assert_int_equal(eb_device_predict(dev, x, n, 1, 100, 0, got, &err), EB_OK);
        assert_memory_not_equal(got, want, n * C * sizeof *got);
    }
    printf("%s: device predictions equal eb_posterior_predict for %zu inputs x %u draws\n",
           eb_repr_name(repr), n, S);
    eb_posterior_release(&post);
    eb_bundle_close(b);
    eb_device_close(dev);
    free(x);
    free(want);
    free(got);
    free(piece);
    remove(path);
}

static void test_predict_samples(void **state)
{
    (void)state;
    check_matches_posterior(MLP, EB_REPR_SAMPLES, 3);
}

static void test_predict_dropout(void **state)
{
    (void)state;
    check_matches_posterior(MLP_DROPOUT, EB_REPR_DROPOUT, 4);
}

static void check_input_grad(const char *arch, eb_repr_kind repr, uint32_t S)
{
    char path[512];
    eb_bundle *b;
    eb_posterior post;
    eb_predictor *pr;
    eb_device *dev;
    eb_error err;
    const size_t n = 6, C = 10;
    const uint8_t y[6] = {0, 3, 9, 1, 1, 5};
    size_t in;
    float *x, *dx_want, *dx_got, *pbar_want, *pbar_got;

    scratch_path(path, sizeof path, "grad.ebb");
    write_bundle(path, arch, repr, S, 5);
    dev = open_cpu(4, 0);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    in = eb_device_model_info(dev)->in_size;
    x = eb_test_uniform_inputs(n, in, 8);
    dx_want = malloc(n * in * sizeof *dx_want);
    dx_got = malloc(n * in * sizeof *dx_got);
    pbar_want = malloc(n * C * sizeof *pbar_want);
    pbar_got = malloc(n * C * sizeof *pbar_got);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &post, &err), EB_OK);
    assert_int_equal(eb_predictor_new(&post, 4, 0, &pr, &err), EB_OK);
    assert_int_equal(eb_predictor_input_grad(pr, x, y, n, S, 11, 0, dx_want, pbar_want, &err),
                     EB_OK);
    assert_int_equal(eb_device_input_grad(dev, x, y, n, S, 11, 0, dx_got, pbar_got, &err), EB_OK);
    assert_memory_equal(dx_got, dx_want, n * in * sizeof *dx_got);
    assert_memory_equal(pbar_got, pbar_want, n * C * sizeof *pbar_got);
    /* pbar may be NULL */
    assert_int_equal(eb_device_input_grad(dev, x, y, n, 0, 11, 0, dx_got, NULL, &err), EB_OK);
    assert_memory_equal(dx_got, dx_want, n * in * sizeof *dx_got);
    {
        double norm = 0.0;
        for (size_t k = 0; k < n * in; k++)
            norm += fabs(dx_got[k]);
        assert_true(norm > 0.0); /* a zero gradient would match trivially */
    }
    eb_predictor_free(pr);
    eb_posterior_release(&post);
    eb_bundle_close(b);
    eb_device_close(dev);
    free(x);
    free(dx_want);
    free(dx_got);
    free(pbar_want);
    free(pbar_got);
    remove(path);
}

static void test_input_grad(void **state)
{
    (void)state;
    check_input_grad(MLP, EB_REPR_SAMPLES, 3);
    check_input_grad(MLP_DROPOUT, EB_REPR_DROPOUT, 3);
}

static void test_model_info(void **state)
{
    char path[512];
    eb_bundle *b;
    eb_posterior post;
    eb_predictor *pr;
    eb_device *dev;
    eb_error err;
    const eb_device_model *m;
    (void)state;
    scratch_path(path, sizeof path, "model.ebb");
    write_bundle(path, MLP, EB_REPR_SAMPLES, 3, 1);
    dev = open_cpu(8, 0);
    assert_null(eb_device_model_info(dev));
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    m = eb_device_model_info(dev);
    /* K = 784*16 + 16 + 16*10 + 10 = 12730, by hand */
    assert_int_equal(m->n_params, 12730);
    assert_int_equal(m->n_classes, 10);
    assert_int_equal(m->in_size, 784);
    assert_int_equal(m->in_h, 28);
    assert_int_equal(m->in_w, 28);
    assert_int_equal(m->in_c, 1);
    assert_int_equal(m->default_draws, 3);
    assert_int_equal(m->max_draws, 3);
    assert_int_equal(m->max_batch, 8);
    assert_int_equal(m->param_bytes, 3u * 12730u * 4u);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    assert_int_equal(eb_posterior_from_bundle(b, &post, &err), EB_OK);
    assert_int_equal(eb_predictor_new(&post, 8, 3, &pr, &err), EB_OK);
    assert_int_equal(m->workspace_bytes, eb_predictor_bytes(pr));
    assert_int_equal(m->model_bytes, m->param_bytes + m->workspace_bytes);
    assert_int_equal(m->mapped_bytes, eb_bundle_file_size(b));
    assert_true(m->mapped_bytes > m->param_bytes);
    eb_predictor_free(pr);
    eb_posterior_release(&post);
    eb_bundle_close(b);
    eb_device_unload(dev);
    assert_null(eb_device_model_info(dev));
    assert_null(eb_device_loaded_path(dev));
    eb_device_unload(dev); /* a no-op */
    eb_device_close(dev);

    /* max_draws above the member count is capped to it; below, honoured */
    dev = open_cpu(8, 7);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_model_info(dev)->max_draws, 3);
    eb_device_close(dev); /* closes with the bundle loaded */
    dev = open_cpu(8, 2);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_model_info(dev)->max_draws, 2);
    eb_device_close(dev);
    remove(path);
}

/* int8 and f16 samples: the device keeps the values as stored and
 * predicts with the quantized kernels, bit for bit what a quantized
 * posterior's predictor gives (and, for int8, not the decoded f32
 * network's numbers); its model bytes are the tensor sections plus the
 * predictor, with no decoded copy; input gradients are the decoded
 * network's. */
static void test_quantized(void **state)
{
    const uint32_t S = 3;
    const size_t n = 10, C = 10, K = 12730;
    const uint8_t y[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    (void)state;
    for (int sk = EB_STORE_F16; sk <= EB_STORE_INT8; sk++) {
        char path[512];
        eb_bundle *b;
        eb_posterior pq, pd;
        eb_predictor *pr;
        eb_device *dev;
        eb_error err;
        const eb_device_model *m;
        float *x, *want, *got, *dec, *dx_want, *dx_got;
        uint64_t tensors;
        scratch_path(path, sizeof path, "quantized.ebb");
        write_bundle_as(path, MLP, EB_REPR_SAMPLES, S, 21, (eb_storage_kind)sk);
        dev = open_cpu(4, 0);
        assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
        m = eb_device_model_info(dev);
        x = eb_test_uniform_inputs(n, 784, 9);
        want = malloc(n * S * C * sizeof *want);
        got = malloc(n * S * C * sizeof *got);
        dec = malloc(n * S * C * sizeof *dec);
        dx_want = malloc(n * 784 * sizeof *dx_want);
        dx_got = malloc(n * 784 * sizeof *dx_got);
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
        assert_int_equal(eb_posterior_from_bundle_flags(b, EB_POSTERIOR_QUANTIZED, &pq, &err),
                         EB_OK);
        assert_true(eb_posterior_quantized(&pq));
        assert_int_equal(eb_posterior_from_bundle(b, &pd, &err), EB_OK);
        assert_int_equal(eb_posterior_predict(&pq, x, n, S, 99, 4, want, &err), EB_OK);
        assert_int_equal(eb_posterior_predict(&pd, x, n, S, 99, 4, dec, &err), EB_OK);
        assert_int_equal(eb_device_predict(dev, x, n, 0, 99, 0, got, &err), EB_OK);
        assert_memory_equal(got, want, n * S * C * sizeof *got);
        if (sk == EB_STORE_INT8)
            assert_memory_not_equal(got, dec, n * S * C * sizeof *got);
        /* model bytes: the stored sections (values; int8 SCALES (S, G) and
         * GROUPS (G + 1), G = 16 + 1 + 10 + 1 runs) and the predictor */
        tensors = sk == EB_STORE_F16 ? S * K * 2 : S * K + S * 28 * 4 + 29 * 8;
        assert_int_equal(m->param_bytes, tensors);
        assert_int_equal(eb_predictor_new(&pq, 4, S, &pr, &err), EB_OK);
        assert_int_equal(m->workspace_bytes, eb_predictor_bytes(pr));
        assert_int_equal(m->model_bytes, m->param_bytes + m->workspace_bytes);
        assert_true(m->workspace_bytes < S * K * sizeof(float)); /* no decoded copy */
        printf("%s mlp S=%u: param bytes %llu, workspace %llu, model %llu (f32 members: %zu)\n",
               eb_storage_name((eb_storage_kind)sk), S, (unsigned long long)m->param_bytes,
               (unsigned long long)m->workspace_bytes, (unsigned long long)m->model_bytes,
               (size_t)S * K * 4);
        /* the attack's gradient: the decoded network's */
        assert_int_equal(eb_predictor_input_grad(pr, x, y, n, S, 11, 0, dx_want, NULL, &err),
                         EB_OK);
        assert_int_equal(eb_device_input_grad(dev, x, y, n, S, 11, 0, dx_got, NULL, &err), EB_OK);
        assert_memory_equal(dx_got, dx_want, n * 784 * sizeof *dx_got);
        eb_predictor_free(pr);
        assert_int_equal(eb_predictor_new(&pd, 4, S, &pr, &err), EB_OK);
        assert_int_equal(eb_predictor_input_grad(pr, x, y, n, S, 11, 0, dx_want, NULL, &err),
                         EB_OK);
        assert_memory_equal(dx_got, dx_want, n * 784 * sizeof *dx_got);
        eb_predictor_free(pr);
        eb_posterior_release(&pq);
        eb_posterior_release(&pd);
        eb_bundle_close(b);
        eb_device_close(dev);
        free(x); free(want); free(got); free(dec); free(dx_want); free(dx_got);
        remove(path);
    }
}

/* ---- errors --------------------------------------------------------------- */

static void flip_params_byte(const char *path)
{
    eb_bundle *b;
    eb_error err;
    uint64_t off = 0;
    FILE *fp;
    int c;
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    for (size_t i = 0; i < eb_bundle_section_count(b); i++) {
        eb_bundle_section s;
        eb_bundle_section_info(b, i, &s);
        if (strcmp(s.type_name, "PARAMS") == 0)
            off = s.offset + s.size / 2;
    }
    eb_bundle_close(b);
    assert_true(off > 0);
    fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)off, SEEK_SET), 0);
    c = fgetc(fp);
    assert_int_equal(fseek(fp, (long)off, SEEK_SET), 0);
    fputc(c ^ 0x10, fp); /* a low mantissa bit: still finite, CRC must catch it */
    fclose(fp);
}

static void test_load_errors(void **state)
{
    char good[512], bad[512], missing[512];
    eb_device *dev;
    eb_error err;
    FILE *fp;
    (void)state;
    scratch_path(good, sizeof good, "good.ebb");
    scratch_path(bad, sizeof bad, "bad.ebb");
    scratch_path(missing, sizeof missing, "missing.ebb");
    remove(missing);
    write_bundle(good, MLP, EB_REPR_SAMPLES, 2, 3);
    write_bundle(bad, MLP, EB_REPR_SAMPLES, 2, 3);
    dev = open_cpu(4, 0);

    assert_int_equal(eb_device_load(dev, missing, NULL, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, missing));
    assert_non_null(strstr(err.msg, "device 'cpu'"));
    printf("missing: %s\n", err.msg);

    flip_params_byte(bad);
    assert_int_equal(eb_device_load(dev, bad, NULL, &err), EB_ERR_CHECKSUM);
    assert_non_null(strstr(err.msg, bad));
    printf("corrupt: %s\n", err.msg);

    fp = fopen(bad, "wb"); /* truncated: half a header */
    assert_non_null(fp);
    fputs("EBBUNDLE", fp);
    fclose(fp);
    assert_int_equal(eb_device_load(dev, bad, NULL, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, bad));

    /* an architecture whose K disagrees with the posterior */
    {
        eb_bundle_writer *w;
        float theta[6] = {0};
        assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_arch(w, "input 1x1x2; dense 3", &err), EB_OK);
        assert_int_equal(eb_bundle_writer_samples(w, 1, 6, theta, &err), EB_OK);
        assert_int_equal(eb_bundle_write(w, bad, &err), EB_OK);
        eb_bundle_writer_free(w);
        assert_int_equal(eb_device_load(dev, bad, NULL, &err), EB_ERR_FORMAT);
        assert_non_null(strstr(err.msg, bad));
        assert_non_null(strstr(err.msg, "parameters"));
    }

    /* the device is still usable after failures */
    assert_null(eb_device_model_info(dev));
    assert_int_equal(eb_device_load(dev, good, NULL, &err), EB_OK);
    eb_device_close(dev);
    remove(good);
    remove(bad);
}

static void test_state_errors(void **state)
{
    char path[512];
    eb_device *dev;
    eb_error err;
    float x[784] = {0}, probs[40], dx[784];
    uint8_t y = 10;
    (void)state;
    scratch_path(path, sizeof path, "state.ebb");
    write_bundle(path, MLP, EB_REPR_SAMPLES, 3, 4);
    dev = open_cpu(4, 0);
    assert_int_equal(eb_device_predict(dev, x, 1, 0, 0, 0, probs, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no bundle is loaded"));
    assert_int_equal(eb_device_input_grad(dev, x, &y, 1, 0, 0, 0, dx, NULL, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unload it"));
    assert_int_equal(eb_device_predict(dev, x, 1, 4, 0, 0, probs, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "at most 3"));
    assert_int_equal(eb_device_predict(dev, x, 0, 0, 0, 0, probs, &err), EB_OK); /* n = 0 */
    assert_int_equal(eb_device_input_grad(dev, x, &y, 1, 0, 0, 0, dx, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "label 10"));
    assert_non_null(strstr(err.msg, path));
    eb_device_close(dev);
    remove(path);
}

/* ---- threads, affinity, slowdown ----------------------------------------- */

static void test_affinity_and_threads(void **state)
{
    eb_device_config cfg;
    eb_device *dev;
    eb_device_info info;
    eb_error err;
    cpu_set_t before, during, after;
    int first = -1, threads_before = eb_nn_set_threads(0);
    (void)state;
    assert_int_equal(sched_getaffinity(0, sizeof before, &before), 0);
    for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
        if (CPU_ISSET(i, &before))
            first = i;
    assert_true(first >= 0);
    eb_device_config_default(&cfg);
    snprintf(cfg.cpus, sizeof cfg.cpus, "%d", first);
    cfg.threads = 2;
    assert_int_equal(eb_device_open("cpu", &cfg, &dev, &err), EB_OK);
    assert_int_equal(sched_getaffinity(0, sizeof during, &during), 0);
    assert_int_equal(CPU_COUNT(&during), 1);
    assert_true(CPU_ISSET(first, &during));
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_string_equal(info.backend, "cpu");
    assert_string_equal(info.cpus, cfg.cpus);
    assert_non_null(strstr(info.description, "OpenBLAS"));
    assert_int_equal(info.threads, eb_nn_set_threads(0));
    assert_int_equal(info.max_batch, 256);
    printf("device: %s; threads %d; cpus %s\n", info.description, info.threads, info.cpus);
    if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
        assert_int_equal(info.threads, 2);
    eb_device_close(dev);
    assert_int_equal(sched_getaffinity(0, sizeof after, &after), 0);
    assert_true(CPU_EQUAL(&before, &after));
    assert_int_equal(eb_nn_set_threads(0), threads_before);
}

static void test_slowdown_env(void **state)
{
    eb_device *dev;
    eb_device_info info;
    eb_error err;
    (void)state;
    setenv("EB_INJECT_SLOWDOWN", "fast", 1);
    assert_int_equal(eb_device_open("cpu", NULL, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "EB_INJECT_SLOWDOWN='fast'"));
    setenv("EB_INJECT_SLOWDOWN", "-0.1", 1);
    assert_int_equal(eb_device_open("cpu", NULL, &dev, &err), EB_ERR_ARG);
    setenv("EB_INJECT_SLOWDOWN", "0.25", 1);
    assert_int_equal(eb_device_open("cpu", NULL, &dev, &err), EB_OK);
    unsetenv("EB_INJECT_SLOWDOWN");
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_true(info.injected_slowdown == 0.25);
    eb_device_close(dev);
    assert_int_equal(eb_device_open("cpu", NULL, &dev, &err), EB_OK);
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_true(info.injected_slowdown == 0.0);
    eb_device_close(dev);
}

/* ---- tables: validation and the defaults of optional slots --------------- */

static void test_table_validation(void **state)
{
    eb_device_ops t;
    eb_device *dev;
    eb_error err;
    (void)state;
    t = eb_device_cpu_ops;
    t.version = 0;
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "version 0"));
    t.version = EB_DEVICE_OPS_VERSION + 1;
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_ERR_ARG);
    t = eb_device_cpu_ops;
    t.predict = NULL;
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "'.predict'"));
    t = eb_device_cpu_ops;
    t.unload = NULL;
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "'.unload'"));
    t = eb_device_cpu_ops;
    t.input_grad = NULL; /* capability still claimed */
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "INPUT_GRAD"));
    t = eb_device_cpu_ops;
    t.name = "";
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_ERR_ARG);
    assert_int_equal(eb_device_open_ops(NULL, NULL, &dev, &err), EB_ERR_ARG);
    assert_null(dev);
}

/* A remote-like backend: the CPU backend's required slots only, no
 * capabilities: every optional slot takes its default. */
static void test_optional_defaults(void **state)
{
    char path[512];
    eb_device_ops t = eb_device_cpu_ops;
    eb_device_config cfg;
    eb_device *dev;
    eb_device_info info;
    eb_page_cache_state cache;
    eb_proc_memory mem;
    eb_error err;
    float x[784] = {0}, dx[784];
    uint8_t y = 1;
    (void)state;
    t.name = "bare";
    t.summary = "test double";
    t.caps = 0;
    t.input_grad = NULL;
    t.describe = NULL;
    scratch_path(path, sizeof path, "bare.ebb");
    write_bundle(path, MLP, EB_REPR_SAMPLES, 2, 6);
    eb_device_config_default(&cfg);
    cfg.threads = 2; /* not THREADS-capable */
    assert_int_equal(eb_device_open_ops(&t, &cfg, &dev, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "threads = 2"));
    cfg.threads = 0;
    snprintf(cfg.cpus, sizeof cfg.cpus, "0");
    assert_int_equal(eb_device_open_ops(&t, &cfg, &dev, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "cpus = '0'"));
    cfg.cpus[0] = '\0';
    cfg.max_batch = 3;
    assert_int_equal(eb_device_open_ops(&t, &cfg, &dev, &err), EB_OK);
    assert_int_equal(eb_device_caps(dev), 0);
    assert_int_equal(eb_device_describe(dev, &info, &err), EB_OK);
    assert_string_equal(info.backend, "bare");
    assert_string_equal(info.description, "test double");
    assert_int_equal(info.max_batch, 3);
    assert_true(info.injected_slowdown == 0.0);
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_input_grad(dev, x, &y, 1, 0, 0, 0, dx, NULL, &err),
                     EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "'bare'"));
    assert_int_equal(eb_device_evict(dev, path, &cache, &err), EB_ERR_UNSUPPORTED);
    assert_int_equal(eb_device_memory_reset_peak(dev, &err), EB_ERR_UNSUPPORTED);
    assert_int_equal(eb_device_memory_read(dev, &mem, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "'bare'"));
    eb_device_close(dev);

    /* the same table claiming LOCAL gets this process's readings */
    t.caps = EB_DEVICE_CAP_LOCAL;
    assert_int_equal(eb_device_open_ops(&t, NULL, &dev, &err), EB_OK);
    assert_int_equal(eb_device_memory_read(dev, &mem, &err), EB_OK);
    assert_true(mem.vm_rss > 0);
    assert_int_equal(eb_device_evict(dev, path, &cache, &err), EB_OK);
    {
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(cache.file_bytes, (uint64_t)sb.st_size);
        assert_true(cache.pages > 0);
    }
    eb_device_close(dev);
    remove(path);
}

/* ---- testing a backend against the oracle -------------------------------- */

/* A faulty backend: the CPU backend with the first probability of every
 * call raised by 0.01. */
static eb_status skewed_predict(void *ctx, const float *x, size_t n, uint32_t S, uint64_t seed,
                                uint64_t first_example, float *probs, eb_error *err)
{
    eb_status st = eb_device_cpu_ops.predict(ctx, x, n, S, seed, first_example, probs, err);
    probs[0] += 0.01f;
    return st;
}

static void test_compare_with_oracle(void **state)
{
    char path[512];
    eb_device_ops skewed = eb_device_cpu_ops;
    eb_device *oracle, *dev;
    eb_device_agreement a;
    eb_error err;
    const size_t n = 12;
    uint8_t y[12];
    float *x;
    (void)state;
    skewed.name = "skewed";
    skewed.predict = skewed_predict;
    scratch_path(path, sizeof path, "compare.ebb");
    write_bundle(path, MLP_DROPOUT, EB_REPR_DROPOUT, 3, 8);
    oracle = open_cpu(5, 0);
    assert_int_equal(eb_device_load(oracle, path, NULL, &err), EB_OK);
    x = eb_test_uniform_inputs(n, 784, 9);
    for (size_t i = 0; i < n; i++)
        y[i] = (uint8_t)(i % 10);

    assert_int_equal(eb_device_compare(oracle, oracle, x, y, n, 0, 4, &a, &err), EB_OK);
    assert_true(a.max_abs_prob_diff == 0.0);
    assert_true(a.top1_agreement == 1.0);
    assert_int_equal(a.grad_compared, 1);
    assert_true(a.max_abs_grad_diff == 0.0);
    assert_true(a.max_abs_grad_ref > 0.0);
    assert_int_equal(a.draws, 3);

    assert_int_equal(eb_device_open_ops(&skewed, NULL, &dev, &err), EB_OK);
    assert_int_equal(eb_device_compare(dev, oracle, x, y, n, 2, 4, &a, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "the first holds no bundle"));
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_device_compare(dev, oracle, x, y, n, 2, 4, &a, &err), EB_OK);
    printf("skewed vs oracle: max |dp| %.6f at %zu, top-1 agreement %.3f, max |d dx| %g\n",
           a.max_abs_prob_diff, a.worst_prob_index, a.top1_agreement, a.max_abs_grad_diff);
    assert_float_equal(a.max_abs_prob_diff, 0.01, 1e-6);
    assert_int_equal(a.worst_prob_index, 0);
    assert_int_equal(a.grad_compared, 1);
    assert_true(a.max_abs_grad_diff == 0.0); /* its gradient is the CPU's */
    assert_int_equal(eb_device_compare(dev, oracle, x, NULL, n, 2, 4, &a, &err), EB_OK);
    assert_int_equal(a.grad_compared, 0);
    eb_device_close(dev);
    eb_device_close(oracle);
    free(x);
    remove(path);
}

/* ---- allocation failures -------------------------------------------------- */

/* Fails every allocation of open, load, predict (and input_grad) in turn:
 * each reports EB_ERR_NOMEM with a message. Returns how many points
 * failed. */
static int alloc_failures(const char *path, int grad)
{
    float *x, probs[30], dx[784];
    const uint8_t y[1] = {2};
    int failures = 0;
    x = eb_test_uniform_inputs(1, 784, 3);
    for (long k = 1;; k++) {
        eb_device *dev = NULL;
        eb_error err;
        eb_status st;
        long before = eb_alloc_count(), used;
        eb_alloc_fail_at(k);
        st = eb_device_open("cpu", NULL, &dev, &err);
        if (st == EB_OK)
            st = eb_device_load(dev, path, NULL, &err);
        if (st == EB_OK)
            st = eb_device_predict(dev, x, 1, 0, 1, 0, probs, &err);
        if (st == EB_OK && grad)
            st = eb_device_input_grad(dev, x, y, 1, 0, 1, 0, dx, NULL, &err);
        used = eb_alloc_count() - before;
        eb_alloc_fail_at(0);
        eb_device_close(dev);
        if (used < k) { /* the injected failure was never reached */
            assert_int_equal(st, EB_OK);
            break;
        }
        assert_int_equal(st, EB_ERR_NOMEM);
        assert_true(err.msg[0] != '\0');
        failures++;
    }
    free(x);
    return failures;
}

static void test_alloc_failures(void **state)
{
    char path[512];
    int failures;
    (void)state;
    scratch_path(path, sizeof path, "alloc.ebb");
    write_bundle(path, MLP_DROPOUT, EB_REPR_DROPOUT, 3, 10);
    failures = alloc_failures(path, 0);
    printf("%d allocation points failed cleanly\n", failures);
    assert_true(failures >= 4);
    /* a quantized bundle: the shared workspace, every member's weights,
     * and the input gradient's f32 side allocated on demand */
    write_bundle_as(path, MLP, EB_REPR_SAMPLES, 3, 10, EB_STORE_INT8);
    failures = alloc_failures(path, 1);
    printf("int8 samples with an input gradient: %d allocation points failed cleanly\n",
           failures);
    assert_true(failures >= 8);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_cpus_parse),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_predict_samples),
        cmocka_unit_test(test_predict_dropout),
        cmocka_unit_test(test_input_grad),
        cmocka_unit_test(test_model_info),
        cmocka_unit_test(test_quantized),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_state_errors),
        cmocka_unit_test(test_affinity_and_threads),
        cmocka_unit_test(test_slowdown_env),
        cmocka_unit_test(test_table_validation),
        cmocka_unit_test(test_optional_defaults),
        cmocka_unit_test(test_compare_with_oracle),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
