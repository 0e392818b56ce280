/* test_idx.c: the IDX reader and writer: round trips of every type, raw
 * and gzip, and every malformed case the reader must refuse with the right
 * code and a message naming the file and the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"
#include "harness/eb_data.h"

static char scratch[512];

static int setup_scratch(void **state)
{
    eb_error err;
    (void)state;
    snprintf(scratch, sizeof scratch, "%s/idx_scratch_%d", EB_TEST_BINARY_DIR, (int)getpid());
    return eb_mkdirs(scratch, &err) == EB_OK ? 0 : -1;
}

static int teardown_scratch(void **state)
{
    (void)state;
    rmdir(scratch); /* only once the tests removed their files */
    return 0;
}

/* gzip of buf (one member), into out[cap]; returns its length. */
static size_t gzip_buf(const void *buf, size_t len, unsigned char *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)buf;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    deflateEnd(&zs);
    return cap - zs.avail_out;
}

/* Expects eb_idx_parse to fail with `code` and a message holding `name`
 * and every one of the NULL-terminated substrings. */
static void expect_parse_error(const void *buf, size_t len, eb_status code, ...)
{
    eb_idx idx;
    eb_error err;
    const char *want;
    va_list ap;

    eb_error_clear(&err);
    assert_int_equal(eb_idx_parse(buf, len, "bad.idx", &idx, &err), code);
    assert_int_equal(err.code, code);
    assert_null(idx.data);
    eb_idx_free(&idx);
    if (!strstr(err.msg, "bad.idx"))
        fail_msg("message does not name the file: %s", err.msg);
    va_start(ap, code);
    while ((want = va_arg(ap, const char *)) != NULL)
        if (!strstr(err.msg, want))
            fail_msg("message lacks '%s': %s", want, err.msg);
    va_end(ap);
}

/* ------------------------------------------------------------ round trips */

static void round_trip(uint8_t type, int ndim, const uint32_t *dims, const void *data, int gz)
{
    char path[640];
    eb_idx idx;
    eb_error err;
    size_t count = 1, esize = eb_idx_type_size(type);
    char *raw;
    size_t raw_len;

    for (int i = 0; i < ndim; i++)
        count *= dims[i];
    snprintf(path, sizeof path, "%s/rt_%02x_%d_%d.idx%s", scratch, type, ndim, gz,
             gz ? ".gz" : "");
    assert_int_equal(eb_idx_write_file(path, type, ndim, dims, data, gz, &err), EB_OK);
    assert_int_equal(eb_file_read_all(path, &raw, &raw_len, &err), EB_OK);
    if (gz) {
        assert_int_equal((unsigned char)raw[0], 0x1f);
        assert_int_equal((unsigned char)raw[1], 0x8b);
    } else {
        /* Header bytes and big-endian data as the format defines them. */
        assert_int_equal(raw_len, 4 + 4 * (size_t)ndim + count * esize);
        assert_int_equal(raw[0], 0);
        assert_int_equal(raw[1], 0);
        assert_int_equal((unsigned char)raw[2], type);
        assert_int_equal(raw[3], ndim);
    }
    eb_free(raw);
    assert_int_equal(eb_idx_read_file(path, &idx, &err), EB_OK);
    assert_int_equal(idx.type, type);
    assert_int_equal(idx.ndim, ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(idx.dims[i], dims[i]);
    for (int i = ndim; i < EB_IDX_MAX_DIMS; i++)
        assert_int_equal(idx.dims[i], 0);
    assert_int_equal(idx.count, count);
    assert_memory_equal(idx.data, data, count * esize);
    eb_idx_free(&idx);
    assert_null(idx.data);
    assert_int_equal(unlink(path), 0);
}

static void test_round_trip_every_type(void **state)
{
    const uint8_t u8[6] = {0, 1, 127, 128, 254, 255};
    const int8_t i8[6] = {-128, -1, 0, 1, 100, 127};
    const int16_t i16[6] = {-32768, -2, 0, 0x1234, 300, 32767};
    const int32_t i32[6] = {INT32_MIN, -70000, 0, 0x12345678, 1, INT32_MAX};
    const float f32[6] = {-1.5f, 0.0f, 1e-30f, 3.25f, 65504.0f, -0.0f};
    const double f64[6] = {-1.5, 0.1, 1e-300, 3.25, 1e300, 2.0 / 3.0};
    const uint32_t d1[1] = {6}, d2[2] = {2, 3}, d3[3] = {1, 2, 3}, d4[4] = {1, 2, 1, 3};
    (void)state;
    for (int gz = 0; gz <= 1; gz++) {
        round_trip(EB_IDX_UBYTE, 3, d3, u8, gz);
        round_trip(EB_IDX_SBYTE, 1, d1, i8, gz);
        round_trip(EB_IDX_SHORT, 2, d2, i16, gz);
        round_trip(EB_IDX_INT, 4, d4, i32, gz);
        round_trip(EB_IDX_FLOAT, 2, d2, f32, gz);
        round_trip(EB_IDX_DOUBLE, 1, d1, f64, gz);
    }
}

/* A larger array crosses the writer's 64 KiB chunks and the reader's
 * buffer growth. */
static void test_round_trip_large(void **state)
{
    const uint32_t dims[2] = {300, 1000};
    int32_t *v = eb_malloc(300 * 1000 * sizeof *v);
    (void)state;
    assert_non_null(v);
    for (int i = 0; i < 300 * 1000; i++)
        v[i] = (int32_t)((uint32_t)i * 7919u - 1000000u); /* wraps: covers the sign bit */
    round_trip(EB_IDX_INT, 2, dims, v, 0);
    round_trip(EB_IDX_INT, 2, dims, v, 1);
    eb_free(v);
}

/* Bytes written by hand, so the reader is checked against the format
 * rather than against our own writer. */
static void test_parse_known_bytes(void **state)
{
    const unsigned char buf[] = {0, 0, 0x0B, 1, 0, 0, 0, 2, 0x12, 0x34, 0xFF, 0xFE};
    unsigned char gz[128];
    size_t gz_len;
    eb_idx idx;
    eb_error err;
    (void)state;
    assert_int_equal(eb_idx_parse(buf, sizeof buf, "known", &idx, &err), EB_OK);
    assert_int_equal(idx.type, EB_IDX_SHORT);
    assert_int_equal(idx.count, 2);
    assert_int_equal(((int16_t *)idx.data)[0], 0x1234);
    assert_int_equal(((int16_t *)idx.data)[1], -2);
    eb_idx_free(&idx);

    gz_len = gzip_buf(buf, sizeof buf, gz, sizeof gz);
    assert_int_equal(eb_idx_parse(gz, gz_len, "known.gz", &idx, &err), EB_OK);
    assert_int_equal(((int16_t *)idx.data)[1], -2);
    eb_idx_free(&idx);
}

/* Concatenated gzip members are one stream, as for gunzip. */
static void test_gzip_multi_member(void **state)
{
    const unsigned char buf[] = {0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2, 3, 4};
    unsigned char gz[256];
    size_t a, b;
    eb_idx idx;
    eb_error err;
    (void)state;
    a = gzip_buf(buf, 6, gz, sizeof gz);
    b = gzip_buf(buf + 6, sizeof buf - 6, gz + a, sizeof gz - a);
    assert_int_equal(eb_idx_parse(gz, a + b, "multi.gz", &idx, &err), EB_OK);
    assert_int_equal(idx.count, 4);
    assert_int_equal(((uint8_t *)idx.data)[3], 4);
    eb_idx_free(&idx);
}

/* ------------------------------------------------------- malformed input */

static void test_bad_magic(void **state)
{
    const unsigned char buf[] = {1, 0, 0x08, 1, 0, 0, 0, 1, 5};
    (void)state;
    expect_parse_error(buf, sizeof buf, EB_ERR_FORMAT, "not an IDX file", "0x01 0x00", NULL);
}

static void test_unknown_type(void **state)
{
    const unsigned char buf[] = {0, 0, 0x0A, 1, 0, 0, 0, 1, 5};
    (void)state;
    expect_parse_error(buf, sizeof buf, EB_ERR_FORMAT, "unknown IDX data type 0x0a", NULL);
}

static void test_zero_dimension(void **state)
{
    const unsigned char buf[] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 0};
    (void)state;
    expect_parse_error(buf, sizeof buf, EB_ERR_FORMAT, "dimension 2 of 2 is 0", "2 x 0", NULL);
}

static void test_dimension_count(void **state)
{
    const unsigned char none[] = {0, 0, 0x08, 0};
    const unsigned char five[] = {0, 0, 0x08, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
                                  0, 0, 0, 1, 0, 0, 0, 1, 7};
    (void)state;
    expect_parse_error(none, sizeof none, EB_ERR_FORMAT, "declares 0 dimensions", NULL);
    expect_parse_error(five, sizeof five, EB_ERR_FORMAT, "declares 5 dimensions",
                       "1 to 4", NULL);
}

static void test_truncated_header(void **state)
{
    const unsigned char three[] = {0, 0, 0x08};
    const unsigned char dims[] = {0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0};
    (void)state;
    expect_parse_error(three, sizeof three, EB_ERR_FORMAT, "ends after 3 bytes", NULL);
    expect_parse_error(NULL, 0, EB_ERR_FORMAT, "ends after 0 bytes", NULL);
    expect_parse_error(dims, sizeof dims, EB_ERR_FORMAT, "ends after 14 bytes",
                       "declares 3 dimensions", "needs 16 bytes", NULL);
}

static void test_truncated_and_trailing_data(void **state)
{
    const unsigned char shortu8[] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5};
    const unsigned char longu8[] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7};
    const unsigned char shorti32[] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0};
    unsigned char gz[128];
    size_t gz_len;
    (void)state;
    expect_parse_error(shortu8, sizeof shortu8, EB_ERR_FORMAT,
                       "header says 2 x 3 bytes of data but the file holds 5 (too little)", NULL);
    expect_parse_error(longu8, sizeof longu8, EB_ERR_FORMAT,
                       "header says 2 x 3 bytes of data but the file holds 7 (too much)", NULL);
    expect_parse_error(shorti32, sizeof shorti32, EB_ERR_FORMAT,
                       "header says 2 int values (8 bytes)", "holds 7 bytes", NULL);
    /* The same inside a valid gzip stream. */
    gz_len = gzip_buf(shortu8, sizeof shortu8, gz, sizeof gz);
    expect_parse_error(gz, gz_len, EB_ERR_FORMAT, "but the file holds 5 (too little)", NULL);
    gz_len = gzip_buf(longu8, sizeof longu8, gz, sizeof gz);
    expect_parse_error(gz, gz_len, EB_ERR_FORMAT, "but the file holds 7 (too much)", NULL);
}

static void test_corrupt_gzip(void **state)
{
    unsigned char data[4096 + 12], gz[8192], bad[8192];
    size_t gz_len;
    (void)state;
    memset(data, 0, sizeof data);
    data[2] = 0x08;
    data[3] = 1;
    data[6] = 0x10; /* 4096 */
    for (size_t i = 8; i < sizeof data - 4; i++)
        data[i] = (unsigned char)(i * 31 + (i >> 5));
    gz_len = gzip_buf(data, sizeof data - 4, gz, sizeof gz);

    /* A flipped bit in the deflate data. */
    memcpy(bad, gz, gz_len);
    bad[gz_len / 2] ^= 0x55;
    expect_parse_error(bad, gz_len, EB_ERR_FORMAT, "gzip", NULL);
    /* A wrong CRC-32 in the trailer: all data arrived, still corrupt. */
    memcpy(bad, gz, gz_len);
    bad[gz_len - 8] ^= 1;
    expect_parse_error(bad, gz_len, EB_ERR_FORMAT, "corrupt gzip data", "incorrect data check",
                       NULL);
    /* Cut short inside the compressed stream. */
    expect_parse_error(gz, gz_len - 20, EB_ERR_FORMAT, "gzip stream is cut short", NULL);
    /* Cut short in the trailer, after all data bytes. */
    expect_parse_error(gz, gz_len - 3, EB_ERR_FORMAT, "gzip stream is cut short", NULL);
    /* Garbage after the gzip stream. */
    memcpy(bad, gz, gz_len);
    memcpy(bad + gz_len, "junk", 4);
    expect_parse_error(bad, gz_len + 4, EB_ERR_FORMAT, "4 bytes of garbage follow", NULL);
    /* Only the magic. */
    expect_parse_error(gz, 2, EB_ERR_FORMAT, "gzip stream is cut short", NULL);
}

static void test_huge_dimensions(void **state)
{
    const unsigned char u8[] = {0, 0, 0x08, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3};
    /* 2^28 doubles = 2 GiB: each dimension fine, the product too big. */
    const unsigned char f64[] = {0, 0, 0x0E, 2, 0, 0, 0x40, 0, 0, 0, 0x40, 0};
    /* Exactly at the cap is allowed by the header check (then the data is
     * missing, which is the error we get). */
    const unsigned char cap[] = {0, 0, 0x08, 2, 0, 0, 0x40, 0, 0, 1, 0, 0};
    (void)state;
    expect_parse_error(u8, sizeof u8, EB_ERR_FORMAT, "4294967295 x 4294967295",
                       "more than the 1073741824-byte limit", NULL);
    expect_parse_error(f64, sizeof f64, EB_ERR_FORMAT, "16384 x 16384 double values",
                       "limit", NULL);
    expect_parse_error(cap, sizeof cap, EB_ERR_FORMAT, "16384 x 65536 bytes of data",
                       "holds 0 (too little)", NULL);
}

/* A gzip bomb: a header promising 1 GiB and a stream of zeros that would
 * deliver more. The reader must stop at the header's size (and the
 * bounded trailing check) instead of inflating without end. */
static void test_gzip_bomb_is_bounded(void **state)
{
    const size_t zeros = (size_t)64 << 20; /* 64 MiB of zeros: ~64 KiB compressed */
    const unsigned char head[] = {0, 0, 0x08, 1, 0, 0x10, 0, 0}; /* promises 1 MiB */
    unsigned char *plain = eb_calloc(1, zeros), *gz;
    size_t cap = zeros / 500, gz_len;
    (void)state;
    assert_non_null(plain);
    gz = eb_malloc(cap);
    assert_non_null(gz);
    memcpy(plain, head, sizeof head);
    gz_len = gzip_buf(plain, zeros, gz, cap);
    eb_free(plain);
    expect_parse_error(gz, gz_len, EB_ERR_FORMAT, "header says 1048576 bytes of data",
                       "(too much)", NULL);
    eb_free(gz);
}

static void test_read_file_missing(void **state)
{
    char path[640];
    eb_idx idx;
    eb_error err;
    (void)state;
    snprintf(path, sizeof path, "%s/does-not-exist.idx", scratch);
    assert_int_equal(eb_idx_read_file(path, &idx, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, path));
    assert_null(idx.data);
}

static void test_read_file_names_path(void **state)
{
    const unsigned char buf[] = {0, 0, 0x08, 1, 0, 0, 0, 3, 1, 2};
    char path[640];
    eb_idx idx;
    eb_error err;
    FILE *fp;
    (void)state;
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", scratch);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_int_equal(eb_idx_read_file(path, &idx, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "header says 3 bytes of data but the file holds 2"));
    unlink(path);
}

static void test_write_rejects_bad_arguments(void **state)
{
    const uint32_t dims[2] = {2, 0}, ok[1] = {1};
    const uint8_t data[4] = {0};
    char path[640];
    eb_error err;
    (void)state;
    snprintf(path, sizeof path, "%s/never.idx", scratch);
    assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 2, dims, data, 0, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "dimension 2 of 2 is 0"));
    assert_int_equal(eb_idx_write_file(path, 0x0A, 1, ok, data, 0, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown IDX data type"));
    assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 0, ok, data, 0, &err), EB_ERR_ARG);
    assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 5, ok, data, 0, &err), EB_ERR_ARG);
    assert_false(eb_file_exists(path));
    /* A directory that does not exist: an I/O error and no file. */
    snprintf(path, sizeof path, "%s/no/such/dir/x.idx", scratch);
    assert_int_equal(eb_idx_write_file(path, EB_IDX_UBYTE, 1, ok, data, 1, &err), EB_ERR_IO);
    assert_non_null(strstr(err.msg, "no/such/dir"));
}

/* Every allocation the parser makes can fail; each failure must be
 * reported as EB_ERR_NOMEM without leaking (the sanitizer build checks
 * the leaks). */
static void test_allocation_failures(void **state)
{
    const uint32_t dims[2] = {100, 50};
    uint8_t data[5000];
    unsigned char gz[8192];
    size_t gz_len;
    unsigned char raw[5012];
    int saw_nomem = 0;
    (void)state;
    for (int i = 0; i < 5000; i++)
        data[i] = (uint8_t)(i * 13);
    raw[0] = raw[1] = 0;
    raw[2] = 0x08;
    raw[3] = 2;
    for (int b = 0; b < 4; b++) {
        raw[4 + b] = (unsigned char)(dims[0] >> (24 - 8 * b));
        raw[8 + b] = (unsigned char)(dims[1] >> (24 - 8 * b));
    }
    memcpy(raw + 12, data, sizeof data);
    gz_len = gzip_buf(raw, sizeof raw, gz, sizeof gz);
    for (long n = 1; n < 100; n++) {
        eb_idx idx;
        eb_error err;
        eb_status st;
        eb_alloc_fail_at(n);
        st = eb_idx_parse(gz, gz_len, "alloc.gz", &idx, &err);
        eb_alloc_fail_at(0);
        if (st == EB_OK) {
            assert_memory_equal(idx.data, data, sizeof data);
            eb_idx_free(&idx);
            break;
        }
        assert_int_equal(st, EB_ERR_NOMEM);
        assert_non_null(strstr(err.msg, "alloc.gz"));
        saw_nomem = 1;
    }
    assert_true(saw_nomem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_large),
        cmocka_unit_test(test_parse_known_bytes),
        cmocka_unit_test(test_gzip_multi_member),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_zero_dimension),
        cmocka_unit_test(test_dimension_count),
        cmocka_unit_test(test_truncated_header),
        cmocka_unit_test(test_truncated_and_trailing_data),
        cmocka_unit_test(test_corrupt_gzip),
        cmocka_unit_test(test_huge_dimensions),
        cmocka_unit_test(test_gzip_bomb_is_bounded),
        cmocka_unit_test(test_read_file_missing),
        cmocka_unit_test(test_read_file_names_path),
        cmocka_unit_test(test_write_rejects_bad_arguments),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup_scratch, teardown_scratch);
}
