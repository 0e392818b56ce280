/* test_bundle.c: the posterior bundle file (methods/bundle.c): round trips,
 * determinism, the inspect listing, every malformed-file rule of
 * docs/bundle-format.md (each with its code and a message naming the
 * field), the gaussian representation (MU and SIGMA), writer errors and
 * atomicity, and allocation-failure injection.
 *
 * Malformed files are made by a small builder that follows the documented
 * layout independently of the writer, then mutated; fix_crcs() recomputes
 * every CRC after a mutation so the structural check under test is the one
 * that fires, not the checksum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"
#include "methods/bundle_internal.h"
#include "methods/eb_bundle.h"

/* ---- little helpers ------------------------------------------------------ */

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void test_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/bundle_%d_%s", EB_TEST_BINARY_DIR, (int)getpid(), name);
}

/* A file image in a 64-aligned buffer, as open_memory requires. */
typedef struct tfile {
    unsigned char *p;
    size_t len;
} tfile;

static tfile tfile_new(size_t len)
{
    tfile f;
    f.p = eb_malloc_aligned(EB_BUNDLE_ALIGN, len + EB_BUNDLE_ALIGN);
    assert_non_null(f.p);
    memset(f.p, 0, len + EB_BUNDLE_ALIGN);
    f.len = len;
    return f;
}

static tfile tfile_copy(const tfile *src, size_t len)
{
    tfile f = tfile_new(len);
    memcpy(f.p, src->p, len < src->len ? len : src->len);
    return f;
}

static void tfile_free(tfile *f)
{
    eb_free_aligned(f->p);
    f->p = NULL;
}

static tfile tfile_read(const char *path)
{
    char *data;
    size_t len;
    eb_error err;
    tfile f;
    assert_int_equal(eb_file_read_all(path, &data, &len, &err), EB_OK);
    f = tfile_new(len);
    memcpy(f.p, data, len);
    eb_free(data);
    return f;
}

static void tfile_write(const tfile *f, const char *path)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(f->p, 1, f->len, fp), f->len);
    assert_int_equal(fclose(fp), 0);
}

static uint64_t table_off(const tfile *f) { return get64(f->p + EB_BH_TABLE_OFFSET); }
static uint32_t nsec(const tfile *f) { return get32(f->p + EB_BH_SECTION_COUNT); }
static unsigned char *entry(const tfile *f, uint32_t i)
{
    return f->p + table_off(f) + (uint64_t)i * EB_BUNDLE_ENTRY_SIZE;
}
static unsigned char *payload(const tfile *f, uint32_t i)
{
    return f->p + get64(entry(f, i) + EB_BE_OFFSET);
}

/* Recomputes section, table and header CRCs (where the fields in bounds
 * allow), so a mutation is seen by the structural checks. */
static void fix_crcs(tfile *f)
{
    uint64_t toff = table_off(f);
    uint32_t n = nsec(f);
    if (f->len >= EB_BUNDLE_HEADER_SIZE && toff <= f->len &&
        (uint64_t)n * EB_BUNDLE_ENTRY_SIZE <= f->len - toff) {
        for (uint32_t i = 0; i < n; i++) {
            uint64_t off = get64(entry(f, i) + EB_BE_OFFSET);
            uint64_t size = get64(entry(f, i) + EB_BE_SIZE);
            if (off <= f->len && size <= f->len - off)
                put32(entry(f, i) + EB_BE_CRC, (uint32_t)crc32(0, f->p + off, (uInt)size));
        }
        put32(f->p + EB_BH_TABLE_CRC,
              (uint32_t)crc32(0, f->p + toff, (uInt)(n * EB_BUNDLE_ENTRY_SIZE)));
    }
    put32(f->p + EB_BH_HEADER_CRC, 0);
    put32(f->p + EB_BH_HEADER_CRC, (uint32_t)crc32(0, f->p, EB_BUNDLE_HEADER_SIZE));
}

/* ---- an independent builder following docs/bundle-format.md -------------- */

typedef struct tsec {
    uint32_t type, dtype, flags;
    const void *data;
    uint64_t size;
} tsec;

/* Header at 0, table at 64, sections in the given order at the next
 * multiples of 64: the same canonical layout the writer uses. */
static tfile build(const tsec *s, uint32_t n)
{
    uint64_t pos = EB_BUNDLE_HEADER_SIZE + (uint64_t)n * EB_BUNDLE_ENTRY_SIZE;
    uint64_t off[16];
    tfile f;
    assert_true(n <= 16);
    for (uint32_t i = 0; i < n; i++) {
        off[i] = (pos + 63) / 64 * 64;
        pos = off[i] + s[i].size;
    }
    f = tfile_new((size_t)pos);
    memcpy(f.p, EB_BUNDLE_MAGIC, EB_BUNDLE_MAGIC_LEN);
    put16(f.p + EB_BH_MAJOR, 1);
    put16(f.p + EB_BH_MINOR, EB_BUNDLE_FORMAT_MINOR);
    put32(f.p + EB_BH_SECTION_COUNT, n);
    put64(f.p + EB_BH_FILE_SIZE, pos);
    put64(f.p + EB_BH_TABLE_OFFSET, EB_BUNDLE_HEADER_SIZE);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char *e = entry(&f, i);
        put32(e + EB_BE_TYPE, s[i].type);
        put32(e + EB_BE_DTYPE, s[i].dtype);
        put64(e + EB_BE_OFFSET, off[i]);
        put64(e + EB_BE_SIZE, s[i].size);
        put32(e + EB_BE_FLAGS, s[i].flags);
        if (s[i].size)
            memcpy(f.p + off[i], s[i].data, (size_t)s[i].size);
    }
    fix_crcs(&f);
    return f;
}

/* The content of a standard small bundle, each part replaceable. */
typedef struct spec {
    const char *meta;
    const char *arch;
    uint32_t kind, members, storage;
    uint64_t nparams;
    const float *params;
    uint64_t params_bytes;
    uint32_t params_dtype;
    unsigned char post[EB_BUNDLE_POSTERIOR_SIZE];
} spec;

static const float g_theta[15] = {0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.5f, 1.5f, 0.0f,
                                  -2.0f, 4.0f, 0.125f, -3.0f, 1.0f, 2.5f, -1.5f};

static spec spec_default(void)
{
    spec p;
    memset(&p, 0, sizeof p);
    p.meta = "dataset.sha256=abc\nmethod=ensemble\nseed=7\n";
    p.arch = "input 1x28x28\ndense 10\n";
    p.kind = EB_REPR_SAMPLES;
    p.members = 3;
    p.nparams = 5;
    p.storage = EB_STORE_F32;
    p.params = g_theta;
    p.params_bytes = sizeof g_theta;
    p.params_dtype = EB_DTYPE_F32;
    return p;
}

static void spec_post(spec *p)
{
    put32(p->post + EB_BP_KIND, p->kind);
    put32(p->post + EB_BP_MEMBERS, p->members);
    put64(p->post + EB_BP_NPARAMS, p->nparams);
    put32(p->post + EB_BP_STORAGE, p->storage);
}

static uint32_t spec_sections(spec *p, tsec s[4])
{
    spec_post(p);
    s[0] = (tsec){EB_SEC_META, EB_DTYPE_BYTES, EB_BUNDLE_FLAG_REQUIRED, p->meta, strlen(p->meta)};
    s[1] = (tsec){EB_SEC_ARCH, EB_DTYPE_BYTES, EB_BUNDLE_FLAG_REQUIRED, p->arch, strlen(p->arch)};
    s[2] = (tsec){EB_SEC_POSTERIOR, EB_DTYPE_BYTES, EB_BUNDLE_FLAG_REQUIRED, p->post,
                  sizeof p->post};
    s[3] = (tsec){EB_SEC_PARAMS, p->params_dtype, EB_BUNDLE_FLAG_REQUIRED, p->params,
                  p->params_bytes};
    return 4;
}

static tfile build_spec(spec *p)
{
    tsec s[4];
    return build(s, spec_sections(p, s));
}

static tfile build_default(void)
{
    spec p = spec_default();
    return build_spec(&p);
}

/* With EB_BUNDLE_SEED_DIR set, every file the tests open is also written
 * there, as seeds for the fuzz corpus (tests/fuzz/corpus/bundle is this,
 * merged with libFuzzer's findings and minimised with -merge=1). */
static void dump_seed(const tfile *f)
{
    static int n;
    const char *dir = getenv("EB_BUNDLE_SEED_DIR");
    char path[1024];
    FILE *fp;
    if (!dir)
        return;
    snprintf(path, sizeof path, "%s/test_%04d.ebb", dir, n++);
    fp = fopen(path, "wb");
    if (fp) {
        fwrite(f->p, 1, f->len, fp);
        fclose(fp);
    }
}

/* Opens f from memory and expects success; returns the handle. */
static eb_bundle *open_ok(const tfile *f, unsigned flags)
{
    eb_bundle *b = NULL;
    eb_error err;
    eb_error_clear(&err);
    dump_seed(f);
    if (eb_bundle_open_memory(f->p, f->len, "t.ebb", flags, &b, &err) != EB_OK)
        fail_msg("expected the bundle to open, got %s: %s", eb_status_name(err.code), err.msg);
    return b;
}

/* Opens f and expects `code` with a message that names the file and
 * contains `needle`. */
static void expect_fail(const tfile *f, unsigned flags, eb_status code, const char *needle)
{
    eb_bundle *b = (eb_bundle *)(uintptr_t)1;
    eb_error err;
    eb_status st;
    eb_error_clear(&err);
    dump_seed(f);
    st = eb_bundle_open_memory(f->p, f->len, "t.ebb", flags, &b, &err);
    if (st != code || !strstr(err.msg, needle) || !strstr(err.msg, "'t.ebb'"))
        fail_msg("expected %s with '%s', got %s: %s", eb_status_name(code), needle,
                 eb_status_name(st), err.msg);
    assert_null(b);
    assert_int_equal(err.code, code);
    if (getenv("EB_TEST_VERBOSE")) /* to review the sentences users will see */
        print_message("%s: %s\n", eb_status_name(st), err.msg);
}

static eb_status open_status(const tfile *f, unsigned flags)
{
    eb_bundle *b = NULL;
    eb_error err;
    eb_status st = eb_bundle_open_memory(f->p, f->len, "t.ebb", flags, &b, &err);
    if (st == EB_OK)
        eb_bundle_close(b);
    else
        assert_null(b);
    return st;
}

/* Writes a samples bundle with the writer to `path`. */
static void write_samples(const char *path, int reverse_meta)
{
    eb_bundle_writer *w;
    eb_error err;
    static const char *keys[] = {"method", "seed", "dataset.sha256"};
    static const char *vals[] = {"ensemble", "7", "abc"};
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x28x28\ndense 10\n", &err), EB_OK);
    for (int i = 0; i < 3; i++) {
        int k = reverse_meta ? 2 - i : i;
        assert_int_equal(eb_bundle_writer_meta(w, keys[k], vals[k], &err), EB_OK);
    }
    assert_int_equal(eb_bundle_writer_samples(w, 3, 5, g_theta, &err), EB_OK);
    if (eb_bundle_write(w, path, &err) != EB_OK)
        fail_msg("write: %s", err.msg);
    eb_bundle_writer_free(w);
}

/* ---- round trips, determinism, inspect ----------------------------------- */

static void test_roundtrip_samples(void **state)
{
    char path[512];
    eb_bundle *b;
    eb_error err;
    const char *k, *v;
    unsigned major, minor;
    struct stat sb;
    (void)state;
    test_path(path, sizeof path, "samples.ebb");
    write_samples(path, 0);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_string_equal(eb_bundle_path(b), path);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(eb_bundle_file_size(b), (uint64_t)sb.st_size);
    eb_bundle_version(b, &major, &minor);
    assert_int_equal(major, 1);
    assert_int_equal(minor, 1);
    assert_string_equal(eb_bundle_arch(b), "input 1x28x28\ndense 10\n");
    assert_int_equal(eb_bundle_repr(b), EB_REPR_SAMPLES);
    assert_string_equal(eb_repr_name(eb_bundle_repr(b)), "samples");
    assert_int_equal(eb_bundle_storage(b), EB_STORE_F32);
    assert_int_equal(eb_bundle_members(b), 3);
    assert_int_equal(eb_bundle_nparams(b), 5);
    assert_int_equal(eb_bundle_param_rows(b), 3);
    assert_int_equal((uintptr_t)eb_bundle_params(b) % 64, 0);
    assert_memory_equal(eb_bundle_params(b), g_theta, sizeof g_theta);
    /* Metadata comes back sorted by key whatever the call order was. */
    assert_int_equal(eb_bundle_meta_count(b), 3);
    eb_bundle_meta_at(b, 0, &k, &v);
    assert_string_equal(k, "dataset.sha256");
    assert_string_equal(v, "abc");
    eb_bundle_meta_at(b, 1, &k, &v);
    assert_string_equal(k, "method");
    eb_bundle_meta_at(b, 2, &k, &v);
    assert_string_equal(k, "seed");
    assert_string_equal(eb_bundle_meta_get(b, "seed"), "7");
    assert_string_equal(eb_bundle_meta_get(b, "method"), "ensemble");
    assert_null(eb_bundle_meta_get(b, "missing"));
    assert_null(eb_bundle_meta_get(b, ""));
    eb_bundle_close(b);
    unlink(path);
}

static void test_roundtrip_dropout(void **state)
{
    char path[512];
    float theta[7];
    eb_bundle_writer *w;
    eb_bundle *b;
    eb_error err;
    (void)state;
    for (int i = 0; i < 7; i++)
        theta[i] = (float)i * 0.1f - 0.3f;
    test_path(path, sizeof path, "dropout.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 7 dropout=0.1", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_dropout(w, 20, 7, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    assert_int_equal(eb_bundle_repr(b), EB_REPR_DROPOUT);
    assert_string_equal(eb_repr_name(EB_REPR_DROPOUT), "dropout");
    assert_int_equal(eb_bundle_members(b), 20);
    assert_int_equal(eb_bundle_param_rows(b), 1);
    assert_int_equal(eb_bundle_nparams(b), 7);
    assert_int_equal((uintptr_t)eb_bundle_params(b) % 64, 0);
    assert_memory_equal(eb_bundle_params(b), theta, sizeof theta);
    assert_int_equal(eb_bundle_meta_count(b), 0); /* empty META section */
    assert_string_equal(eb_bundle_arch(b), "dense 7 dropout=0.1");
    eb_bundle_close(b);
    unlink(path);
}

static void test_deterministic_bytes(void **state)
{
    char p1[512], p2[512], p3[512];
    tfile a, b, c, d;
    eb_bundle_writer *w;
    eb_error err;
    (void)state;
    test_path(p1, sizeof p1, "det1.ebb");
    test_path(p2, sizeof p2, "det2.ebb");
    test_path(p3, sizeof p3, "det3.ebb");
    write_samples(p1, 0);
    write_samples(p2, 1); /* same content, metadata given in reverse order */
    a = tfile_read(p1);
    b = tfile_read(p2);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.p, b.p, a.len);
    /* One writer written twice gives the same bytes too. */
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x28x28\ndense 10\n", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "seed", "7", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "dataset.sha256", "abc", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "ensemble", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 3, 5, g_theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, p3, &err), EB_OK);
    c = tfile_read(p3);
    assert_int_equal(eb_bundle_write(w, p3, &err), EB_OK);
    d = tfile_read(p3);
    eb_bundle_writer_free(w);
    assert_int_equal(c.len, a.len);
    assert_memory_equal(c.p, a.p, a.len);
    assert_memory_equal(c.p, d.p, a.len);
    /* The independent builder produces the writer's exact bytes: the
     * documented layout and the implementation agree. */
    {
        tfile e = build_default();
        assert_int_equal(e.len, a.len);
        assert_memory_equal(e.p, a.p, a.len);
        tfile_free(&e);
    }
    tfile_free(&a);
    tfile_free(&b);
    tfile_free(&c);
    tfile_free(&d);
    unlink(p1);
    unlink(p2);
    unlink(p3);
}

static void test_inspect_listing(void **state)
{
    tfile f = build_default();
    eb_bundle *b = open_ok(&f, 0);
    eb_bundle_section s;
    static const char *names[] = {"META", "ARCH", "POSTERIOR", "PARAMS"};
    static const char *dt[] = {"bytes", "bytes", "bytes", "f32"};
    (void)state;
    assert_int_equal(eb_bundle_section_count(b), 4);
    for (size_t i = 0; i < 4; i++) {
        eb_bundle_section_info(b, i, &s);
        assert_string_equal(s.type_name, names[i]);
        assert_string_equal(s.dtype_name, dt[i]);
        assert_int_equal(s.offset % 64, 0);
        assert_int_equal(s.flags, EB_BUNDLE_FLAG_REQUIRED);
        assert_int_equal(s.crc32, (uint32_t)crc32(0, f.p + s.offset, (uInt)s.size));
    }
    eb_bundle_section_info(b, 0, &s);
    assert_int_equal(s.offset, 192); /* header 64 + table 4 x 32 */
    eb_bundle_section_info(b, 3, &s);
    assert_int_equal(s.size, 15 * 4);
    assert_int_equal(s.offset + s.size, eb_bundle_file_size(b));
    assert_string_equal(eb_storage_name(EB_STORE_SHARED_SPARSE), "shared-sparse");
    assert_string_equal(eb_repr_name((eb_repr_kind)99), "unknown");
    eb_bundle_close(b);
    tfile_free(&f);
}

/* The reader accepts any valid layout, not only the writer's: table at the
 * end, tensor first, gaps of zeros. */
static void test_noncanonical_layout_ok(void **state)
{
    tfile f = build_default(), g;
    uint64_t toff = (f.len + 63) / 64 * 64 + 128; /* table after a zero gap */
    eb_bundle *b;
    (void)state;
    g = tfile_new((size_t)(toff + 4 * EB_BUNDLE_ENTRY_SIZE));
    memcpy(g.p, f.p, f.len);
    memset(g.p + 64, 0, 128); /* old table position becomes padding */
    memcpy(g.p + toff, f.p + 64, 4 * EB_BUNDLE_ENTRY_SIZE);
    put64(g.p + EB_BH_TABLE_OFFSET, toff);
    put64(g.p + EB_BH_FILE_SIZE, g.len);
    fix_crcs(&g);
    b = open_ok(&g, 0);
    assert_memory_equal(eb_bundle_params(b), g_theta, sizeof g_theta);
    eb_bundle_close(b);
    tfile_free(&f);
    tfile_free(&g);
}

/* ---- header -------------------------------------------------------------- */

static void test_truncation_everywhere(void **state)
{
    tfile f = build_default();
    char path[512];
    (void)state;
    /* Every prefix, from 0 bytes to one short: an error, never a crash. */
    for (size_t n = 0; n < f.len; n++) {
        tfile t = tfile_copy(&f, n);
        eb_status st = open_status(&t, 0);
        if (st != EB_ERR_FORMAT)
            fail_msg("truncated to %zu of %zu bytes: got %s", n, f.len, eb_status_name(st));
        tfile_free(&t);
    }
    {
        tfile t = tfile_copy(&f, 63);
        expect_fail(&t, 0, EB_ERR_FORMAT, "shorter than the 64-byte header");
        tfile_free(&t);
        t = tfile_copy(&f, f.len - 1);
        expect_fail(&t, 0, EB_ERR_FORMAT, "field 'file_size'");
        tfile_free(&t);
    }
    /* Through the file path as well, at section boundaries. */
    test_path(path, sizeof path, "trunc.ebb");
    for (uint32_t i = 0; i < 4; i++) {
        size_t cuts[2] = {(size_t)get64(entry(&f, i) + EB_BE_OFFSET),
                          (size_t)get64(entry(&f, i) + EB_BE_OFFSET) + 1};
        for (int c = 0; c < 2; c++) {
            tfile t = tfile_copy(&f, cuts[c]);
            eb_bundle *b = NULL;
            eb_error err;
            tfile_write(&t, path);
            assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_ERR_FORMAT);
            assert_null(b);
            assert_non_null(strstr(err.msg, path));
            tfile_free(&t);
        }
    }
    {
        tfile t = tfile_copy(&f, 0);
        eb_bundle *b;
        eb_error err;
        tfile_write(&t, path);
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "0 bytes"));
        tfile_free(&t);
    }
    unlink(path);
    tfile_free(&f);
}

/* Every byte of a valid file is covered by a CRC or checked to be zero, so
 * flipping any one byte is detected. */
static void test_every_byte_flip_detected(void **state)
{
    tfile f = build_default();
    (void)state;
    for (size_t i = 0; i < f.len; i++) {
        eb_status st;
        f.p[i] ^= 0x20;
        st = open_status(&f, 0);
        if (st == EB_OK)
            fail_msg("flipping byte %zu of %zu went unnoticed", i, f.len);
        f.p[i] ^= 0x20;
    }
    assert_int_equal(open_status(&f, 0), EB_OK);
    tfile_free(&f);
}

static void test_bad_magic(void **state)
{
    tfile f = build_default();
    (void)state;
    f.p[1] = 'X';
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'magic'");
    f.p[1] = 'E';
    f.p[4] = '\n'; /* CR LF -> LF LF: a text-mode transfer */
    expect_fail(&f, 0, EB_ERR_FORMAT, "text mode");
    tfile_free(&f);
}

static void test_versions(void **state)
{
    tfile f = build_default();
    eb_bundle *b;
    unsigned major, minor;
    (void)state;
    put16(f.p + EB_BH_MAJOR, 2);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_UNSUPPORTED, "field 'format_major' is 2");
    put16(f.p + EB_BH_MAJOR, 0);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_UNSUPPORTED, "field 'format_major' is 0");
    /* A higher minor is read; its reserved fields and unknown flag bits are
     * ignored, since a newer minor may have given them a meaning. */
    put16(f.p + EB_BH_MAJOR, 1);
    put16(f.p + EB_BH_MINOR, 7);
    f.p[EB_BH_RESERVED + 3] = 0x55;
    put32(entry(&f, 0) + EB_BE_FLAGS, 0x80000001u);
    fix_crcs(&f);
    b = open_ok(&f, 0);
    eb_bundle_version(b, &major, &minor);
    assert_int_equal(minor, 7);
    eb_bundle_close(b);
    /* The same under this minor is refused. */
    put16(f.p + EB_BH_MINOR, 0);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'reserved' of the header");
    f.p[EB_BH_RESERVED + 3] = 0;
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section 0 (META): field 'flags' has unknown bits");
    tfile_free(&f);
}

static void test_file_size_mismatch(void **state)
{
    tfile f = build_default(), g;
    (void)state;
    /* One extra byte the header does not count. */
    g = tfile_copy(&f, f.len + 1);
    expect_fail(&g, 0, EB_ERR_FORMAT, "trailing data");
    tfile_free(&g);
    put64(f.p + EB_BH_FILE_SIZE, f.len + 64);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'file_size' says");
    tfile_free(&f);
}

static void test_header_and_table_crc(void **state)
{
    tfile f = build_default();
    (void)state;
    f.p[EB_BH_RESERVED] = 1; /* no fix_crcs */
    expect_fail(&f, 0, EB_ERR_CHECKSUM, "field 'header_crc'");
    f.p[EB_BH_RESERVED] = 0;
    entry(&f, 1)[EB_BE_SIZE] ^= 1;
    expect_fail(&f, 0, EB_ERR_CHECKSUM, "field 'table_crc'");
    tfile_free(&f);
}

static void test_section_count_and_table(void **state)
{
    tfile f = build_default();
    (void)state;
    put32(f.p + EB_BH_SECTION_COUNT, 0);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'section_count' is 0");
    put32(f.p + EB_BH_SECTION_COUNT, 0xFFFFFFFFu);
    put32(f.p + EB_BH_HEADER_CRC, 0);
    put32(f.p + EB_BH_HEADER_CRC, (uint32_t)crc32(0, f.p, 64));
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'section_count' is 4294967295");
    put32(f.p + EB_BH_SECTION_COUNT, 100); /* 3200 bytes of table: past the end */
    put32(f.p + EB_BH_HEADER_CRC, 0);
    put32(f.p + EB_BH_HEADER_CRC, (uint32_t)crc32(0, f.p, 64));
    expect_fail(&f, 0, EB_ERR_FORMAT, "runs past the end");
    put32(f.p + EB_BH_SECTION_COUNT, 4);
    put64(f.p + EB_BH_TABLE_OFFSET, 0); /* inside the header */
    put32(f.p + EB_BH_HEADER_CRC, 0);
    put32(f.p + EB_BH_HEADER_CRC, (uint32_t)crc32(0, f.p, 64));
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'table_offset' is 0");
    put64(f.p + EB_BH_TABLE_OFFSET, 96); /* misaligned */
    put32(f.p + EB_BH_HEADER_CRC, 0);
    put32(f.p + EB_BH_HEADER_CRC, (uint32_t)crc32(0, f.p, 64));
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'table_offset' is 96");
    put64(f.p + EB_BH_TABLE_OFFSET, UINT64_MAX - 63);
    put32(f.p + EB_BH_HEADER_CRC, 0);
    put32(f.p + EB_BH_HEADER_CRC, (uint32_t)crc32(0, f.p, 64));
    expect_fail(&f, 0, EB_ERR_FORMAT, "runs past the end");
    tfile_free(&f);
}

/* ---- section table entries ------------------------------------------------ */

static void test_section_crc_each(void **state)
{
    tfile f = build_default();
    static const char *labels[] = {"section 0 (META): field 'crc'", "section 1 (ARCH): field 'crc'",
                                   "section 2 (POSTERIOR): field 'crc'",
                                   "section 3 (PARAMS): field 'crc'"};
    (void)state;
    for (uint32_t i = 0; i < 4; i++) {
        payload(&f, i)[0] ^= 0x01;
        expect_fail(&f, 0, EB_ERR_CHECKSUM, labels[i]);
        payload(&f, i)[0] ^= 0x01;
    }
    /* SKIP_TENSOR_CHECK skips the PARAMS CRC only. */
    payload(&f, 3)[0] ^= 0x01;
    assert_int_equal(open_status(&f, EB_BUNDLE_SKIP_TENSOR_CHECK), EB_OK);
    payload(&f, 3)[0] ^= 0x01;
    payload(&f, 1)[0] ^= 0x01;
    expect_fail(&f, EB_BUNDLE_SKIP_TENSOR_CHECK, EB_ERR_CHECKSUM, "section 1 (ARCH)");
    tfile_free(&f);
}

static void test_overlap(void **state)
{
    tfile f = build_default();
    (void)state;
    /* ARCH placed on top of META. */
    put64(entry(&f, 1) + EB_BE_OFFSET, get64(entry(&f, 0) + EB_BE_OFFSET));
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "overlaps");
    tfile_free(&f);
    /* A section over the section table. */
    f = build_default();
    put64(entry(&f, 2) + EB_BE_OFFSET, 64);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT,
                "the section table at bytes [64, 192) overlaps section 2 (POSTERIOR)");
    tfile_free(&f);
    /* A section over the header. */
    f = build_default();
    put64(entry(&f, 2) + EB_BE_OFFSET, 0);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "overlaps");
    tfile_free(&f);
}

static void test_misaligned_and_out_of_bounds(void **state)
{
    tfile f = build_default();
    uint64_t off;
    (void)state;
    off = get64(entry(&f, 3) + EB_BE_OFFSET);
    put64(entry(&f, 3) + EB_BE_OFFSET, off + 4);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section 3 (PARAMS): field 'offset' is");
    put64(entry(&f, 3) + EB_BE_OFFSET, off + 64);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section 3 (PARAMS): fields 'offset'");
    put64(entry(&f, 3) + EB_BE_OFFSET, off);
    put64(entry(&f, 3) + EB_BE_SIZE, UINT64_MAX); /* size overflow */
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "reach past the end");
    put64(entry(&f, 3) + EB_BE_SIZE, 60);
    put64(entry(&f, 3) + EB_BE_OFFSET, UINT64_MAX - 63); /* offset + size wraps */
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "reach past the end");
    put64(entry(&f, 3) + EB_BE_OFFSET, off);
    put32(entry(&f, 3) + EB_BE_TYPE, 0);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'type' is 0");
    tfile_free(&f);
}

static void test_nonzero_padding(void **state)
{
    tfile f = build_default(), g;
    uint64_t meta_end = get64(entry(&f, 0) + EB_BE_OFFSET) + get64(entry(&f, 0) + EB_BE_SIZE);
    (void)state;
    f.p[meta_end] = 'x';
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "padding between section 0 (META) and section 1 (ARCH)");
    f.p[meta_end] = 0;
    /* Trailing bytes counted by file_size but owned by no section. */
    g = tfile_copy(&f, f.len + 8);
    g.p[f.len + 7] = 1;
    put64(g.p + EB_BH_FILE_SIZE, g.len);
    fix_crcs(&g);
    expect_fail(&g, 0, EB_ERR_FORMAT, "padding after the last section");
    g.p[f.len + 7] = 0;
    fix_crcs(&g);
    assert_int_equal(open_status(&g, 0), EB_OK); /* zero trailing padding is fine */
    tfile_free(&g);
    tfile_free(&f);
}

static void test_duplicate_and_missing(void **state)
{
    spec p = spec_default();
    tsec s[5];
    tfile f;
    (void)state;
    spec_sections(&p, s);
    s[4] = s[1]; /* a second ARCH */
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section 4 (ARCH) duplicates section 1");
    tfile_free(&f);
    s[4] = s[3]; /* a second PARAMS */
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section 4 (PARAMS) duplicates section 3");
    tfile_free(&f);

    f = build(s + 1, 3); /* no META */
    expect_fail(&f, 0, EB_ERR_FORMAT, "required META section is missing");
    tfile_free(&f);
    {
        tsec t[3] = {s[0], s[2], s[3]}; /* no ARCH */
        f = build(t, 3);
        expect_fail(&f, 0, EB_ERR_FORMAT, "required ARCH section is missing");
        tfile_free(&f);
    }
    {
        tsec t[3] = {s[0], s[1], s[3]}; /* no POSTERIOR */
        f = build(t, 3);
        expect_fail(&f, 0, EB_ERR_FORMAT, "required POSTERIOR section is missing");
        tfile_free(&f);
    }
    f = build(s, 3); /* no PARAMS */
    expect_fail(&f, 0, EB_ERR_FORMAT, "needs a PARAMS section");
    tfile_free(&f);
}

static void test_unknown_sections(void **state)
{
    spec p = spec_default();
    tsec s[5];
    tfile f;
    eb_bundle *b;
    eb_bundle_section info;
    static const char blob[] = "future data";
    (void)state;
    spec_sections(&p, s);
    s[4] = (tsec){99, EB_DTYPE_BYTES, EB_BUNDLE_FLAG_REQUIRED, blob, sizeof blob};
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_UNSUPPORTED, "section 4 (type 99) is marked required");
    tfile_free(&f);
    /* A reserved but unimplemented type is treated the same way. */
    s[4].type = EB_SEC_HEAD;
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_UNSUPPORTED, "section 4 (HEAD) is marked required");
    tfile_free(&f);
    /* Optional: skipped, still listed, still CRC-checked. */
    s[4].type = 0x80000001u;
    s[4].flags = 0;
    s[4].dtype = 77;
    f = build(s, 5);
    b = open_ok(&f, 0);
    assert_int_equal(eb_bundle_section_count(b), 5);
    eb_bundle_section_info(b, 4, &info);
    assert_string_equal(info.type_name, "unknown");
    assert_string_equal(info.dtype_name, "unknown");
    assert_int_equal(info.size, sizeof blob);
    eb_bundle_close(b);
    payload(&f, 4)[0] ^= 1;
    expect_fail(&f, 0, EB_ERR_CHECKSUM, "section 4 (type 2147483649)");
    tfile_free(&f);
}

static void test_dtype_mismatch(void **state)
{
    spec p = spec_default();
    tfile f;
    (void)state;
    p.params_dtype = EB_DTYPE_F16;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section PARAMS: field 'dtype' is 2 (f16)");
    tfile_free(&f);
    f = build_default();
    put32(entry(&f, 0) + EB_BE_DTYPE, EB_DTYPE_F32);
    fix_crcs(&f);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section 0 (META): field 'dtype' is 1");
    tfile_free(&f);
}

/* ---- POSTERIOR and the tensor -------------------------------------------- */

static void test_tensor_size_mismatch(void **state)
{
    spec p = spec_default();
    tfile f;
    (void)state;
    p.params_bytes = 14 * 4; /* S x K = 15 */
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section PARAMS is 56 bytes but samples needs 3 x 5 x 4 = 60");
    tfile_free(&f);
    p = spec_default();
    p.kind = EB_REPR_DROPOUT; /* dropout: 1 x K = 5 values, file has 15 */
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "dropout needs 1 x 5 x 4 = 20");
    tfile_free(&f);
    p.params_bytes = 20;
    f = build_spec(&p);
    assert_int_equal(open_status(&f, 0), EB_OK);
    tfile_free(&f);
}

static void test_zero_and_overflowing_shapes(void **state)
{
    spec p = spec_default();
    tfile f;
    (void)state;
    p.members = 0;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'members' (S) is 0");
    tfile_free(&f);
    p = spec_default();
    p.nparams = 0;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'nparams' (K) is 0");
    tfile_free(&f);
    p = spec_default();
    p.members = 4;
    p.nparams = UINT64_C(1) << 62;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "overflows 64 bits");
    tfile_free(&f);
    p.members = 1;
    p.nparams = (UINT64_C(1) << 62) + 15; /* x4 wraps to 60, the real size */
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "overflows 64 bits");
    tfile_free(&f);
}

static void test_posterior_fields(void **state)
{
    spec p = spec_default();
    tfile f;
    (void)state;
    p.post[EB_BP_RESERVED + 5] = 1;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section POSTERIOR: field 'reserved'");
    tfile_free(&f);
    p = spec_default();
    p.kind = 0;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'kind' is 0");
    tfile_free(&f);
    p = spec_default();
    p.storage = 0;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'storage' is 0");
    tfile_free(&f);
    /* POSTERIOR must be exactly 32 bytes at this minor. */
    {
        tsec s[4];
        unsigned char big[40] = {0};
        p = spec_default();
        spec_sections(&p, s);
        memcpy(big, p.post, 32);
        s[2].data = big;
        s[2].size = 40;
        f = build(s, 4);
        expect_fail(&f, 0, EB_ERR_FORMAT, "section POSTERIOR is 40 bytes");
        put16(f.p + EB_BH_MINOR, 2); /* a newer minor may extend it */
        fix_crcs(&f);
        assert_int_equal(open_status(&f, 0), EB_OK);
        tfile_free(&f);
        s[2].size = 31;
        f = build(s, 4);
        expect_fail(&f, 0, EB_ERR_FORMAT, "section POSTERIOR is 31 bytes");
        tfile_free(&f);
    }
}

static void test_unsupported_kinds(void **state)
{
    static const uint32_t kinds[] = {5, 9};
    static const char *knames[] = {"field 'kind' is 5 (unknown)", "(unknown)"};
    static const uint32_t stores[] = {6, 7, 0x80000000u, 77};
    static const char *snames[] = {"field 'storage' is 6 (unknown)", "(unknown)", "(unknown)",
                                   "(unknown)"};
    (void)state;
    for (int i = 0; i < 2; i++) {
        spec p = spec_default();
        tfile f;
        p.kind = kinds[i];
        f = build_spec(&p);
        expect_fail(&f, 0, EB_ERR_UNSUPPORTED, knames[i]);
        tfile_free(&f);
    }
    for (int i = 0; i < 4; i++) {
        spec p = spec_default();
        tfile f;
        p.storage = stores[i];
        f = build_spec(&p);
        expect_fail(&f, 0, EB_ERR_UNSUPPORTED, snames[i]);
        tfile_free(&f);
    }
}

/* A gaussian bundle as the builder lays it out: MU and SIGMA (K = 5) in
 * place of PARAMS, S = default draws. */
static const float g_sigma[5] = {0.1f, 0.0f, 2.0f, 0.25f, 1e-3f};

static uint32_t gaussian_sections(spec *p, tsec s[5], const float *sigma)
{
    p->kind = EB_REPR_GAUSSIAN;
    p->members = 30;
    spec_sections(p, s);
    s[3] = (tsec){EB_SEC_MU, EB_DTYPE_F32, EB_BUNDLE_FLAG_REQUIRED, g_theta, 5 * 4};
    s[4] = (tsec){EB_SEC_SIGMA, EB_DTYPE_F32, EB_BUNDLE_FLAG_REQUIRED, sigma, 5 * 4};
    return 5;
}

static void test_gaussian_roundtrip(void **state)
{
    char path[600];
    eb_bundle_writer *w;
    eb_bundle *b;
    eb_bundle_section info;
    eb_error err;
    spec p = spec_default();
    tsec s[5];
    tfile f, g;
    (void)state;
    test_path(path, sizeof path, "gaussian.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x28x28\ndense 10\n", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "ensemble", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "seed", "7", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "dataset.sha256", "abc", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_gaussian(w, 30, 5, g_theta, g_sigma, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    /* the writer's bytes are the documented layout, byte for byte */
    f = tfile_read(path);
    g = build(s, gaussian_sections(&p, s, g_sigma));
    assert_int_equal(f.len, g.len);
    assert_memory_equal(f.p, g.p, f.len);
    tfile_free(&g);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_int_equal(eb_bundle_repr(b), EB_REPR_GAUSSIAN);
    assert_int_equal(eb_bundle_members(b), 30);
    assert_int_equal(eb_bundle_nparams(b), 5);
    assert_int_equal(eb_bundle_param_rows(b), 1);
    assert_memory_equal(eb_bundle_params(b), g_theta, 5 * sizeof(float));
    assert_memory_equal(eb_bundle_sigma(b), g_sigma, 5 * sizeof(float));
    assert_int_equal((uintptr_t)eb_bundle_sigma(b) % 64, 0);
    assert_int_equal(eb_bundle_section_count(b), 5);
    eb_bundle_section_info(b, 3, &info);
    assert_string_equal(info.type_name, "MU");
    eb_bundle_section_info(b, 4, &info);
    assert_string_equal(info.type_name, "SIGMA");
    assert_string_equal(info.dtype_name, "f32");
    eb_bundle_close(b);
    /* samples and dropout bundles have no sigma */
    b = open_ok(&f, 0);
    eb_bundle_close(b);
    tfile_free(&f);
    f = build_default();
    b = open_ok(&f, 0);
    assert_null(eb_bundle_sigma(b));
    eb_bundle_close(b);
    tfile_free(&f);
    unlink(path);
}

static void test_gaussian_malformed(void **state)
{
    const float neg[5] = {0.1f, 0.2f, -0.5f, 0.25f, 1.0f};
    float nan_mu[5];
    spec p = spec_default();
    tsec s[5];
    tfile f;
    (void)state;
    /* a missing SIGMA, a missing MU */
    f = build(s, gaussian_sections(&p, s, g_sigma) - 1);
    expect_fail(&f, 0, EB_ERR_FORMAT, "representation 'gaussian' needs a SIGMA section");
    tfile_free(&f);
    gaussian_sections(&p, s, g_sigma);
    s[3] = s[4];
    f = build(s, 4);
    expect_fail(&f, 0, EB_ERR_FORMAT, "representation 'gaussian' needs a MU section");
    tfile_free(&f);
    /* PARAMS does not belong in a gaussian bundle, MU not in samples */
    gaussian_sections(&p, s, g_sigma);
    s[4] = (tsec){EB_SEC_PARAMS, EB_DTYPE_F32, EB_BUNDLE_FLAG_REQUIRED, g_theta, 5 * 4};
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section PARAMS does not belong to representation "
                                      "'gaussian'");
    tfile_free(&f);
    p = spec_default();
    spec_sections(&p, s);
    s[4] = (tsec){EB_SEC_MU, EB_DTYPE_F32, 0, g_theta, 5 * 4};
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section MU belongs to representation 'gaussian', not "
                                      "'samples'");
    tfile_free(&f);
    /* sizes and dtypes are those of K, not S x K */
    p = spec_default();
    gaussian_sections(&p, s, g_sigma);
    s[4].size = 4 * 4;
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section SIGMA is 16 bytes but gaussian needs 1 x 5 x 4 "
                                      "= 20");
    tfile_free(&f);
    gaussian_sections(&p, s, g_sigma);
    s[3].dtype = EB_DTYPE_F16;
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section MU: field 'dtype' is 2 (f16)");
    tfile_free(&f);
    /* a negative sigma, a NaN mean; the tensor check can be skipped */
    gaussian_sections(&p, s, neg);
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_NUMERIC, "section SIGMA: value [2] is -0.5");
    assert_int_equal(open_status(&f, EB_BUNDLE_SKIP_TENSOR_CHECK), EB_OK);
    tfile_free(&f);
    memcpy(nan_mu, g_theta, sizeof nan_mu);
    nan_mu[4] = NAN;
    gaussian_sections(&p, s, g_sigma);
    s[3].data = nan_mu;
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_NUMERIC, "section MU: value [0][4] is NaN");
    tfile_free(&f);
}

static void test_gaussian_writer_errors(void **state)
{
    const float neg[5] = {0.1f, 0.2f, -0.5f, 0.25f, 1.0f};
    const float inf_sigma[5] = {0.1f, INFINITY, 0.5f, 0.25f, 1.0f};
    eb_bundle_writer *w;
    eb_error err;
    char path[600];
    (void)state;
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_gaussian(w, 30, 5, g_theta, neg, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "sigma[2] is -0.5"));
    assert_int_equal(eb_bundle_writer_gaussian(w, 30, 5, g_theta, inf_sigma, &err),
                     EB_ERR_NUMERIC);
    assert_int_equal(eb_bundle_writer_gaussian(w, 30, 5, g_theta, NULL, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_gaussian(w, 0, 5, g_theta, g_sigma, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "default_draws must be at least 1"));
    /* nothing was set by the failures: no posterior yet */
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x28x28\ndense 10\n", &err), EB_OK);
    test_path(path, sizeof path, "gaussian-none.ebb");
    assert_int_equal(eb_bundle_write(w, path, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no posterior was set"));
    assert_int_equal(eb_bundle_writer_gaussian(w, 30, 5, g_theta, g_sigma, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 3, 5, g_theta, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_gaussian(w, 30, 5, g_theta, g_sigma, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "already holds a posterior"));
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    unlink(path);
}

static void test_non_finite_params(void **state)
{
    float theta[15];
    spec p = spec_default();
    tfile f;
    (void)state;
    memcpy(theta, g_theta, sizeof theta);
    theta[7] = NAN;
    p.params = theta;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_NUMERIC, "value [1][2] is NaN");
    assert_int_equal(open_status(&f, EB_BUNDLE_SKIP_TENSOR_CHECK), EB_OK);
    tfile_free(&f);
    theta[7] = 0.0f;
    theta[14] = -INFINITY;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_NUMERIC, "value [2][4] is infinite");
    tfile_free(&f);
}

/* ---- META and ARCH -------------------------------------------------------- */

static void meta_case(const char *meta, eb_status code, const char *needle)
{
    spec p = spec_default();
    tfile f;
    p.meta = meta;
    f = build_spec(&p);
    expect_fail(&f, 0, code, needle);
    tfile_free(&f);
}

static void test_meta_rules(void **state)
{
    static const char nul_meta[] = "a=1\nb=x\0y\n";
    spec p = spec_default();
    tsec s[4];
    tfile f;
    eb_bundle *b;
    (void)state;
    meta_case("a=1\na=2\n", EB_ERR_FORMAT, "line 2: duplicate key 'a'");
    meta_case("b=1\na=2\n", EB_ERR_FORMAT, "line 2: key 'a' comes after 'b'");
    meta_case("Method=x\n", EB_ERR_FORMAT, "line 1: key 'Method' has a character outside");
    meta_case("a b=x\n", EB_ERR_FORMAT, "key 'a b'");
    meta_case("=x\n", EB_ERR_FORMAT, "line 1: the key is 0 characters");
    meta_case("a=1\nnoequals\n", EB_ERR_FORMAT, "line 2 ('noequals') has no '='");
    meta_case("a=1\nb=2", EB_ERR_FORMAT, "does not end with a newline");
    meta_case("a=1\r\n", EB_ERR_FORMAT, "carriage return");
    meta_case("a=\xff\n", EB_ERR_FORMAT, "not valid UTF-8");
    meta_case("a=\xc0\xaf\n", EB_ERR_FORMAT, "not valid UTF-8"); /* overlong '/' */
    meta_case("a=\xed\xa0\x80\n", EB_ERR_FORMAT, "not valid UTF-8"); /* surrogate */
    meta_case("\x1b[31m=x\n", EB_ERR_FORMAT, "key '\\x1b[31m'"); /* escaped in the message */
    meta_case("a=\xf0\x80\x80\x80\n", EB_ERR_FORMAT, "not valid UTF-8"); /* overlong, 4 bytes */
    meta_case("a=\xf4\x90\x80\x80\n", EB_ERR_FORMAT, "not valid UTF-8"); /* above U+10FFFF */
    meta_case("a=\xe2\x82\n", EB_ERR_FORMAT, "not valid UTF-8");         /* cut sequence */
    /* Long hostile text is cut in messages. */
    meta_case("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
              EB_ERR_FORMAT, "line 1 ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...') has no '='");
    meta_case("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x\n", EB_ERR_FORMAT,
              "the key is 65 characters");
    /* NUL cannot go through a C string: build it by hand. */
    spec_sections(&p, s);
    s[0].data = nul_meta;
    s[0].size = sizeof nul_meta - 1;
    f = build(s, 4);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section META has a NUL byte at offset 7");
    tfile_free(&f);
    /* Allowed: empty values, '=' inside values, UTF-8, the full key alphabet. */
    p = spec_default();
    p.meta = "a.b_c9=x=y\nempty=\nname=\xc3\xa9t\xc3\xa9 \xf0\x9f\x99\x82\n";
    f = build_spec(&p);
    b = open_ok(&f, 0);
    assert_string_equal(eb_bundle_meta_get(b, "a.b_c9"), "x=y");
    assert_string_equal(eb_bundle_meta_get(b, "empty"), "");
    assert_string_equal(eb_bundle_meta_get(b, "name"), "\xc3\xa9t\xc3\xa9 \xf0\x9f\x99\x82");
    eb_bundle_close(b);
    tfile_free(&f);
}

/* The 1 MiB limits of ARCH and META, on both sides. */
static void test_text_size_limits(void **state)
{
    size_t n = EB_BUNDLE_ARCH_MAX + 1;
    char *big = eb_malloc(n + 1);
    eb_bundle_writer *w;
    eb_error err;
    spec p = spec_default();
    tfile f;
    (void)state;
    assert_non_null(big);
    memset(big, 'a', n);
    big[n] = '\0';
    p.arch = big;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section ARCH is 1048577 bytes, above the limit");
    tfile_free(&f);
    p = spec_default();
    big[n - 2] = '=';
    big[n - 1] = '\n'; /* one 1 MiB + 1 line "aaa...a=\n" */
    p.meta = big;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section META is 1048577 bytes, above the limit");
    tfile_free(&f);

    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    memset(big, 'a', n);
    assert_int_equal(eb_bundle_writer_arch(w, big, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "above the limit"));
    big[n - 1] = '\0'; /* exactly the limit is fine */
    assert_int_equal(eb_bundle_writer_arch(w, big, &err), EB_OK);
    /* META: values add up past 1 MiB. */
    big[512 * 1024] = '\0';
    assert_int_equal(eb_bundle_writer_meta(w, "a", big, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "b", big, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "would exceed"));
    eb_bundle_writer_free(w);
    eb_free(big);
}

static void test_arch_rules(void **state)
{
    static const char nul_arch[] = "dense\0 10";
    spec p = spec_default();
    tsec s[4];
    tfile f;
    (void)state;
    p.arch = "";
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section ARCH is empty");
    tfile_free(&f);
    p.arch = "dense \xe2\x82\n"; /* cut multi-byte sequence */
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section ARCH is not valid UTF-8 (byte 6)");
    tfile_free(&f);
    p = spec_default();
    spec_sections(&p, s);
    s[1].data = nul_arch;
    s[1].size = sizeof nul_arch - 1;
    f = build(s, 4);
    expect_fail(&f, 0, EB_ERR_FORMAT, "section ARCH has a NUL byte at offset 5");
    tfile_free(&f);
}

/* ---- open() arguments ---------------------------------------------------- */

static void test_open_arguments(void **state)
{
    tfile f = build_default();
    eb_bundle *b;
    eb_error err;
    char path[512];
    (void)state;
    assert_int_equal(eb_bundle_open_memory(f.p + 4, f.len - 4, "x", 0, &b, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "not aligned to 64"));
    assert_null(b);
    assert_int_equal(eb_bundle_open_memory(f.p, f.len, "x", 0x10, &b, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown flags"));
    /* The internal ignore-CRC flag is not reachable through the API. */
    assert_int_equal(eb_bundle_open_memory(f.p, f.len, "x", EB_BUNDLE__IGNORE_CRC, &b, &err),
                     EB_ERR_ARG);
    assert_int_equal(eb_bundle_open(EB_TEST_BINARY_DIR, EB_BUNDLE__IGNORE_CRC, &b, &err),
                     EB_ERR_ARG);
    assert_int_equal(eb_bundle_open_memory(NULL, 10, NULL, 0, &b, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_open_memory(NULL, 0, NULL, 0, &b, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "bundle '(memory)'"));
    test_path(path, sizeof path, "does-not-exist.ebb");
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, path));
    assert_null(b);
    assert_int_equal(eb_bundle_open(EB_TEST_BINARY_DIR, 0, &b, &err), EB_ERR_IO);
    assert_non_null(strstr(err.msg, "not a regular file"));
    /* The ignore-CRC entry point still validates structure. */
    f.p[f.len - 2] ^= 0x01; /* a mantissa bit: the CRC no longer matches */
    assert_int_equal(eb_bundle__open_memory(f.p, f.len, "x", EB_BUNDLE__IGNORE_CRC, &b, &err),
                     EB_OK);
    eb_bundle_close(b);
    eb_bundle_close(NULL);
    tfile_free(&f);
}

/* ---- writer -------------------------------------------------------------- */

static void test_writer_argument_errors(void **state)
{
    eb_bundle_writer *w;
    eb_error err;
    float bad[3] = {1.0f, NAN, 2.0f};
    char path[512];
    (void)state;
    test_path(path, sizeof path, "never.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no architecture"));
    assert_int_equal(eb_bundle_writer_meta(w, "Bad", "x", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "metadata key 'Bad'"));
    assert_int_equal(eb_bundle_writer_meta(w, "", "x", &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_meta(w, "a=b", "x", &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_meta(w, "k", "two\nlines", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "line break"));
    assert_int_equal(eb_bundle_writer_meta(w, "k", "\xfe", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_int_equal(eb_bundle_writer_meta(w, "k", "v", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "k", "w", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "'k' is given twice"));
    assert_int_equal(eb_bundle_writer_arch(w, "", &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_arch(w, "dense\xc3", &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 3", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 4", &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "already set"));
    assert_int_equal(eb_bundle_write(w, path, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no posterior"));
    assert_int_equal(eb_bundle_writer_samples(w, 0, 3, g_theta, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "S (members)"));
    assert_int_equal(eb_bundle_writer_dropout(w, 0, 3, g_theta, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "default_draws"));
    assert_int_equal(eb_bundle_writer_samples(w, 1, 0, g_theta, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_samples(w, 1, 3, NULL, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_samples(w, 2, UINT64_MAX / 2, g_theta, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_samples(w, 1, 3, bad, &err), EB_ERR_NUMERIC);
    assert_non_null(strstr(err.msg, "theta[0][1] is NaN"));
    assert_int_equal(eb_bundle_writer_samples(w, 1, 3, g_theta, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_dropout(w, 1, 3, g_theta, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "already holds a posterior"));
    eb_bundle_writer_free(w);
    eb_bundle_writer_free(NULL);
    assert_int_equal(access(path, F_OK), -1);
}

/* 1 if the test directory holds a leftover temporary file for `base`. */
static int tmp_leftover(const char *base)
{
    DIR *d = opendir(EB_TEST_BINARY_DIR);
    struct dirent *e;
    int found = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (strncmp(e->d_name, base, strlen(base)) == 0 && strstr(e->d_name, ".tmp."))
            found = 1;
    closedir(d);
    return found;
}

static void test_writer_atomic(void **state)
{
    char path[512], bad_dir[512], base[128];
    tfile before, after;
    eb_bundle_writer *w;
    eb_error err;
    float *big;
    struct rlimit old, lim;
    void (*old_handler)(int);
    const size_t K = 1 << 18; /* 1 MiB of parameters */
    (void)state;
    /* Into a directory that does not exist: an error, no file. */
    test_path(bad_dir, sizeof bad_dir, "no-such-dir/b.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 3", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 1, 3, g_theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, bad_dir, &err), EB_ERR_IO);
    assert_non_null(strstr(err.msg, "no-such-dir"));
    assert_int_equal(access(bad_dir, F_OK), -1);
    eb_bundle_writer_free(w);

    /* A write that fails half-way (the file-size limit makes the write
     * fail with EFBIG) leaves the existing bundle untouched and no
     * temporary file behind. */
    test_path(path, sizeof path, "atomic.ebb");
    snprintf(base, sizeof base, "bundle_%d_atomic.ebb", (int)getpid());
    write_samples(path, 0);
    before = tfile_read(path);
    big = eb_malloc(K * sizeof *big);
    assert_non_null(big);
    for (size_t i = 0; i < K; i++)
        big[i] = (float)i;
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 3", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 1, K, big, &err), EB_OK);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 100000;
    old_handler = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_ERR_IO);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    assert_non_null(strstr(err.msg, path));
    after = tfile_read(path);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.p, before.p, before.len);
    assert_false(tmp_leftover(base));
    /* Without the limit the same writer succeeds. */
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    {
        eb_bundle *b;
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
        assert_int_equal(eb_bundle_nparams(b), K);
        assert_memory_equal(eb_bundle_params(b), big, K * sizeof *big);
        eb_bundle_close(b);
    }
    eb_free(big);
    tfile_free(&before);
    tfile_free(&after);
    unlink(path);
}

/* ---- allocation failure injection ---------------------------------------- */

static void test_alloc_failures_open(void **state)
{
    tfile f = build_default();
    char path[512];
    int saw_fail = 0;
    (void)state;
    test_path(path, sizeof path, "allocfail.ebb");
    tfile_write(&f, path);
    for (int via_path = 0; via_path < 2; via_path++) {
        for (long n = 1; n < 100; n++) {
            eb_bundle *b = (eb_bundle *)(uintptr_t)1;
            eb_error err;
            eb_status st;
            eb_alloc_fail_at(n);
            st = via_path ? eb_bundle_open(path, 0, &b, &err)
                          : eb_bundle_open_memory(f.p, f.len, "t.ebb", 0, &b, &err);
            eb_alloc_fail_at(0);
            if (st == EB_OK) {
                assert_true(n > 1);
                eb_bundle_close(b);
                break;
            }
            assert_int_equal(st, EB_ERR_NOMEM);
            assert_null(b);
            assert_non_null(strstr(err.msg, "out of memory"));
            saw_fail++;
        }
    }
    assert_true(saw_fail >= 2);
    unlink(path);
    tfile_free(&f);
}

static void test_alloc_failures_write(void **state)
{
    char path[512];
    int done = 0;
    (void)state;
    test_path(path, sizeof path, "allocfail_w.ebb");
    for (long n = 1; n < 100 && !done; n++) {
        eb_bundle_writer *w = NULL;
        eb_error err;
        eb_status st;
        unlink(path);
        eb_alloc_fail_at(n);
        st = eb_bundle_writer_new(&w, &err);
        if (!st)
            st = eb_bundle_writer_arch(w, "dense 3", &err);
        for (int i = 0; i < 20 && !st; i++) { /* enough keys to grow the array */
            char key[16];
            snprintf(key, sizeof key, "k%02d", 19 - i);
            st = eb_bundle_writer_meta(w, key, "v", &err);
        }
        if (!st)
            st = eb_bundle_writer_samples(w, 3, 5, g_theta, &err);
        if (!st)
            st = eb_bundle_write(w, path, &err);
        eb_alloc_fail_at(0);
        eb_bundle_writer_free(w);
        if (st == EB_OK) {
            eb_bundle *b;
            assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
            assert_int_equal(eb_bundle_meta_count(b), 20);
            eb_bundle_close(b);
            done = 1;
        } else {
            assert_int_equal(st, EB_ERR_NOMEM);
            assert_int_equal(access(path, F_OK), -1);
        }
    }
    assert_true(done);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_samples),
        cmocka_unit_test(test_roundtrip_dropout),
        cmocka_unit_test(test_deterministic_bytes),
        cmocka_unit_test(test_inspect_listing),
        cmocka_unit_test(test_noncanonical_layout_ok),
        cmocka_unit_test(test_truncation_everywhere),
        cmocka_unit_test(test_every_byte_flip_detected),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_file_size_mismatch),
        cmocka_unit_test(test_header_and_table_crc),
        cmocka_unit_test(test_section_count_and_table),
        cmocka_unit_test(test_section_crc_each),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_misaligned_and_out_of_bounds),
        cmocka_unit_test(test_nonzero_padding),
        cmocka_unit_test(test_duplicate_and_missing),
        cmocka_unit_test(test_unknown_sections),
        cmocka_unit_test(test_dtype_mismatch),
        cmocka_unit_test(test_tensor_size_mismatch),
        cmocka_unit_test(test_zero_and_overflowing_shapes),
        cmocka_unit_test(test_posterior_fields),
        cmocka_unit_test(test_unsupported_kinds),
        cmocka_unit_test(test_gaussian_roundtrip),
        cmocka_unit_test(test_gaussian_malformed),
        cmocka_unit_test(test_gaussian_writer_errors),
        cmocka_unit_test(test_non_finite_params),
        cmocka_unit_test(test_meta_rules),
        cmocka_unit_test(test_arch_rules),
        cmocka_unit_test(test_text_size_limits),
        cmocka_unit_test(test_open_arguments),
        cmocka_unit_test(test_writer_argument_errors),
        cmocka_unit_test(test_writer_atomic),
        cmocka_unit_test(test_alloc_failures_open),
        cmocka_unit_test(test_alloc_failures_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
