/* test_common.c: status messages, error records, the allocator's failure
 * injection, overflow-checked sizes, temporary-file commits and SHA-256. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"
#include "common/eb_status.h"

static void test_strerror_covers_every_code(void **state)
{
    (void)state;
    for (int c = 0; c < EB_STATUS_COUNT_; c++) {
        assert_non_null(eb_strerror((eb_status)c));
        assert_true(strncmp(eb_status_name((eb_status)c), "EB_", 3) == 0);
    }
    assert_string_equal(eb_strerror(EB_OK), "success");
    assert_string_equal(eb_status_name(EB_ERR_FORMAT), "EB_ERR_FORMAT");
    assert_string_equal(eb_strerror((eb_status)999), "unknown status");
}

static void test_error_set_and_prefix(void **state)
{
    eb_error err;
    (void)state;
    eb_error_clear(&err);
    assert_string_equal(eb_error_message(&err), "success");
    assert_int_equal(eb_error_set(&err, EB_ERR_FORMAT, "field '%s' is %d", "magic", 7),
                     EB_ERR_FORMAT);
    assert_string_equal(err.msg, "field 'magic' is 7");
    assert_int_equal(eb_error_prefix(&err, "file %s: ", "a.ebb"), EB_ERR_FORMAT);
    assert_string_equal(err.msg, "file a.ebb: field 'magic' is 7");
    assert_int_equal(eb_error_set(NULL, EB_ERR_IO, "x"), EB_ERR_IO);
}

static void test_alloc_failure_injection(void **state)
{
    void *a, *b;
    (void)state;
    eb_alloc_fail_at(2);
    a = eb_malloc(16);
    b = eb_malloc(16);
    assert_non_null(a);
    assert_null(b);
    b = eb_malloc(16);
    assert_non_null(b);
    eb_free(a);
    eb_free(b);
}

static void test_size_overflow(void **state)
{
    size_t r;
    (void)state;
    assert_int_equal(eb_size_mul(3, 4, &r), 0);
    assert_int_equal(r, 12);
    assert_int_equal(eb_size_mul(SIZE_MAX / 2 + 1, 2, &r), -1);
    assert_int_equal(eb_size_add(SIZE_MAX, 1, &r), -1);
}

static void test_tmpfile_commit_and_abort(void **state)
{
    char path[256], *data;
    size_t len;
    eb_tmpfile t;
    eb_error err;
    (void)state;
    snprintf(path, sizeof path, "%s/common_tmpfile_%d.txt", EB_TEST_BINARY_DIR, (int)getpid());
    unlink(path);
    assert_int_equal(eb_tmpfile_open(&t, path, &err), EB_OK);
    fputs("partial", t.fp);
    eb_tmpfile_abort(&t);
    assert_false(eb_file_exists(path));
    assert_int_equal(eb_tmpfile_open(&t, path, &err), EB_OK);
    fputs("hello", t.fp);
    assert_int_equal(eb_tmpfile_commit(&t, &err), EB_OK);
    assert_int_equal(eb_file_read_all(path, &data, &len, &err), EB_OK);
    assert_int_equal(len, 5);
    assert_string_equal(data, "hello");
    eb_free(data);
    unlink(path);
    assert_int_equal(eb_file_read_all(path, &data, &len, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, path));
}

/* Digests from FIPS 180-2 appendix B (the "abc" and empty-string vectors). */
static void test_sha256_known_vectors(void **state)
{
    char hex[65];
    (void)state;
    assert_int_equal(eb_sha256_buffer("abc", 3, hex, NULL), EB_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(eb_sha256_buffer("", 0, hex, NULL), EB_OK);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_true(eb_sha256_hex_valid(hex));
    hex[10] = 'g';
    assert_false(eb_sha256_hex_valid(hex));
    assert_false(eb_sha256_hex_valid("abc"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_covers_every_code),
        cmocka_unit_test(test_error_set_and_prefix),
        cmocka_unit_test(test_alloc_failure_injection),
        cmocka_unit_test(test_size_overflow),
        cmocka_unit_test(test_tmpfile_commit_and_abort),
        cmocka_unit_test(test_sha256_known_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
