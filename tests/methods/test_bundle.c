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
#include "devices/eb_device.h"
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
    /* 1: what the writer writes for every file without ACTSCALES (1.2) */
    put16(f.p + EB_BH_MINOR, 1);
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

/* A bundle large enough for the cold-load reader thread (8 MiB and up),
 * opened with its pages dropped from the cache (where the file system
 * lets them go): the same values as written; then one byte of its last
 * member changed on disk, dropped again: the CRC still catches it. */
static void test_large_cold_open(void **state)
{
    const uint32_t S = 3;
    const uint64_t K = 800000; /* 9.6 MB of weights */
    char path[512];
    float *theta = malloc(S * K * sizeof *theta);
    eb_bundle_writer *w;
    eb_bundle *b;
    eb_page_cache_state pc;
    eb_error err;
    FILE *fp;
    struct stat sb;
    int c;
    (void)state;
    assert_non_null(theta);
    for (uint64_t i = 0; i < S * K; i++)
        theta[i] = (float)(i % 1009) * 0.25f - 100.0f;
    test_path(path, sizeof path, "large.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x28x28\ndense 10\n", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, S, K, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);

    assert_int_equal(eb_measure_page_cache_drop(path, &pc, &err), EB_OK);
    printf("large bundle cold: %s\n", pc.verified ? "pages dropped" : pc.note);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_OK);
    assert_memory_equal(eb_bundle_params(b), theta, S * K * sizeof *theta);
    eb_bundle_close(b);

    /* a byte in the middle of the file (inside the weights, which are
     * nearly all of it): flipped on disk */
    assert_int_equal(stat(path, &sb), 0);
    fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)(sb.st_size / 2), SEEK_SET), 0);
    c = fgetc(fp);
    assert_int_equal(fseek(fp, -1, SEEK_CUR), 0);
    assert_int_not_equal(fputc(c ^ 0x40, fp), EOF);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(eb_measure_page_cache_drop(path, &pc, &err), EB_OK);
    assert_int_equal(eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, &err), EB_ERR_CHECKSUM);
    assert_null(b);
    printf("flipped byte: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "CRC-32"));
    unlink(path);
    free(theta);
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
        put16(f.p + EB_BH_MINOR, EB_BUNDLE_FORMAT_MINOR + 1); /* a newer minor may extend it */
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

/* ---- format 1.1: storage kinds and the distilled representation ---------- */

/* The f32 -> f16 conversion: every f16 survives a round trip, and every
 * float goes to its nearest f16 (ties to the even one), checked against
 * the neighbours rather than against another implementation. */
static void test_f16_conversion(void **state)
{
    uint32_t lcg = 12345;
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = eb_bundle__f16_to_f32((uint16_t)h);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) {
            assert_true(isnan(f));
            continue;
        }
        if (eb_bundle__f32_to_f16(f) != h)
            fail_msg("f16 0x%04x -> %g -> 0x%04x", h, (double)f, eb_bundle__f32_to_f16(f));
    }
    assert_true(eb_bundle__f16_to_f32(0x3c00) == 1.0f);
    assert_true(eb_bundle__f16_to_f32(0x7bff) == 65504.0f);
    assert_true(eb_bundle__f16_to_f32(0x0001) == 0x1p-24f);
    assert_int_equal(eb_bundle__f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(eb_bundle__f32_to_f16(65520.0f), 0x7c00); /* rounds to infinity */
    assert_int_equal(eb_bundle__f32_to_f16(-1e6f), 0xfc00);
    assert_int_equal(eb_bundle__f32_to_f16(0x1p-25f), 0x0000);  /* tie: to even 0 */
    assert_int_equal(eb_bundle__f32_to_f16(0x1.8p-24f), 0x0002); /* tie: to even 2 */
    assert_int_equal(eb_bundle__f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie: to even */
    assert_int_equal(eb_bundle__f32_to_f16(1.0f + 0x1.8p-10f), 0x3c02);
    for (int i = 0; i < 200000; i++) {
        uint32_t bits;
        float v, got, d;
        uint16_t q, mag;
        lcg = lcg * 1664525u + 1013904223u;
        /* exponents around the f16 range: 2^-30 .. 2^16 */
        bits = (lcg & 0x807fffffu) | ((uint32_t)(97 + (lcg >> 8) % 47) << 23);
        memcpy(&v, &bits, sizeof v);
        q = eb_bundle__f32_to_f16(v);
        mag = q & 0x7fffu;
        if (mag == 0x7c00u) {
            assert_true(fabsf(v) >= 65520.0f);
            continue;
        }
        got = eb_bundle__f16_to_f32(q);
        d = fabsf(v - got);
        for (int step = -1; step <= 1; step += 2) {
            float nb, dn;
            if ((step < 0 && mag == 0) || (step > 0 && mag == 0x7bffu))
                continue;
            nb = eb_bundle__f16_to_f32((uint16_t)((q & 0x8000u) | (uint16_t)(mag + step)));
            dn = fabsf(v - nb);
            if (d > dn || (d == dn && (mag & 1u)))
                fail_msg("%a -> 0x%04x (%a) but 0x%04x (%a) is nearer or the even tie", (double)v,
                         q, (double)got, (q & 0x8000u) | (uint16_t)(mag + step), (double)nb);
        }
    }
}

/* Half an ulp of f16 at x (the bound for a correctly rounded value). */
static double f16_half_ulp(float x)
{
    int e;
    if (fabsf(x) < 0x1p-14f)
        return ldexp(1.0, -25);
    frexpf(x, &e); /* x = m 2^e, m in [0.5, 1): ulp = 2^(e - 11) */
    return ldexp(1.0, e - 12);
}

/* Test posteriors: S = 3 rows of K = 40 values with zeros (for the sparse
 * kinds: position 5 is zero everywhere, others in some rows only), values
 * f16 cannot hold exactly, and powers of two it can. */
#define NK 40
static float g_rows[3 * NK], g_sig[NK];

static void fill_rows(void)
{
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < NK; k++) {
            float v = (float)((r + 1) * (k + 3)) * 0.0137f - 0.4f * (float)r;
            if (k % 4 == 1 || (k + r) % 7 == 0 || k == 5)
                v = 0.0f;
            if (k == 9)
                v = 0.5f * (float)(r + 1); /* exact in f16 */
            if (k == 11)
                v = -3.14159265f * (float)(r + 1);
            g_rows[r * NK + k] = v;
        }
    for (int k = 0; k < NK; k++)
        g_sig[k] = k % 4 == 1 || k == 5 ? 0.0f : 0.01f * (float)(k + 1);
}

static const uint64_t g_groups[4] = {0, 10, 11, NK}; /* runs of 10, 1 and 29 */

/* Writes repr x storage with the writer. */
static void write_kind(const char *path, eb_repr_kind repr, eb_storage_kind sk)
{
    eb_bundle_writer *w;
    eb_error err;
    eb_status st;
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "input 1x1x4\ndense 8\n", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_meta(w, "method", "test", &err), EB_OK);
    switch (repr) {
    case EB_REPR_SAMPLES: st = eb_bundle_writer_samples(w, 3, NK, g_rows, &err); break;
    case EB_REPR_DROPOUT: st = eb_bundle_writer_dropout(w, 12, NK, g_rows + NK, &err); break;
    case EB_REPR_GAUSSIAN: st = eb_bundle_writer_gaussian(w, 9, NK, g_rows, g_sig, &err); break;
    default: st = eb_bundle_writer_distilled(w, EB_HEAD_GPED, 4, NK, g_rows + 2 * NK, &err); break;
    }
    assert_int_equal(st, EB_OK);
    st = eb_bundle_writer_storage(w, sk, sk == EB_STORE_INT8 ? g_groups : NULL,
                                  sk == EB_STORE_INT8 ? 3 : 0, &err);
    if (st)
        fail_msg("storage %s: %s", eb_storage_name(sk), err.msg);
    if (eb_bundle_write(w, path, &err) != EB_OK)
        fail_msg("write: %s", err.msg);
    eb_bundle_writer_free(w);
}

/* The original row `row` of tensor t for repr. */
static const float *orig_row(eb_repr_kind repr, int t, uint32_t row)
{
    if (t == EB_TENSOR_SIGMA)
        return g_sig;
    switch (repr) {
    case EB_REPR_SAMPLES: return g_rows + (size_t)row * NK;
    case EB_REPR_DROPOUT: return g_rows + NK;
    case EB_REPR_GAUSSIAN: return g_rows;
    default: return g_rows + 2 * NK;
    }
}

static void check_decoded(const eb_bundle *b, eb_repr_kind repr, eb_storage_kind sk)
{
    const int T = repr == EB_REPR_GAUSSIAN ? 2 : 1;
    float dst[NK];
    eb_error err;
    double maxerr = 0.0;
    for (int t = 0; t < T; t++) {
        eb_bundle_stored sv;
        eb_bundle_stored_view(b, t, &sv);
        assert_int_equal(sv.kind, sk);
        assert_int_equal(sv.k, NK);
        assert_int_equal(sv.rows, eb_bundle_param_rows(b));
        assert_non_null(sv.values);
        for (uint32_t r = 0; r < sv.rows; r++) {
            const float *o = orig_row(repr, t, r);
            assert_int_equal(eb_bundle_decode(b, t, r, dst, &err), EB_OK);
            for (int k = 0; k < NK; k++) {
                double e = fabs((double)dst[k] - (double)o[k]), tol = 0.0;
                if (sk == EB_STORE_F16) {
                    int exact = eb_bundle__f16_to_f32(eb_bundle__f32_to_f16(o[k])) == o[k];
                    tol = exact ? 0.0 : f16_half_ulp(o[k]);
                } else if (sk == EB_STORE_INT8) {
                    uint64_t g = 0;
                    while (sv.groups[g + 1] <= (uint64_t)k)
                        g++;
                    /* scale/2 of rounding, plus float rounding of v/scale and q*scale */
                    tol = sv.scales[r * sv.n_groups + g] * (0.5 + 1e-5);
                }
                if (e > tol)
                    fail_msg("%s %s tensor %d [%u][%d]: %g decoded as %g (error %g > %g)",
                             eb_repr_name(repr), eb_storage_name(sk), t, r, k, (double)o[k],
                             (double)dst[k], e, tol);
                if (e > maxerr)
                    maxerr = e;
            }
        }
        if (sk == EB_STORE_INT8) {
            assert_int_equal(sv.n_groups, 3);
            assert_memory_equal(sv.groups, g_groups, sizeof g_groups);
        }
        if (sk == EB_STORE_SHARED_SPARSE) {
            /* exactly the positions nonzero in any row of any tensor */
            uint64_t j = 0;
            for (uint64_t k = 0; k < NK; k++) {
                int any = 0;
                for (int t2 = 0; t2 < T; t2++)
                    for (uint32_t r = 0; r < sv.rows; r++)
                        any |= orig_row(repr, t2, r)[k] != 0.0f;
                if (any) {
                    assert_true(j < sv.n_index);
                    assert_int_equal(sv.index[j], k);
                    j++;
                }
            }
            assert_int_equal(j, sv.n_index);
            assert_true(sv.n_index < NK); /* position 5 is zero everywhere */
            assert_null(sv.rowptr);
        }
        if (sk == EB_STORE_CSR) {
            assert_int_equal(sv.rowptr[0], 0);
            assert_int_equal(sv.rowptr[sv.rows], sv.n_index);
        }
    }
    print_message("%s %s: max |decoded - original| = %g\n", eb_repr_name(repr),
                  eb_storage_name(sk), maxerr);
}

/* Every storage kind x every representation: decoded values within the
 * kind's tolerance, f32 accessors NULL for the other kinds, the head, and
 * the same input written twice is byte-identical. */
static void test_storage_roundtrips(void **state)
{
    static const eb_repr_kind reprs[] = {EB_REPR_SAMPLES, EB_REPR_DROPOUT, EB_REPR_GAUSSIAN,
                                         EB_REPR_DISTILLED};
    char p1[512], p2[512];
    (void)state;
    fill_rows();
    test_path(p1, sizeof p1, "kind1.ebb");
    test_path(p2, sizeof p2, "kind2.ebb");
    for (int ri = 0; ri < 4; ri++)
        for (int sk = EB_STORE_F32; sk <= EB_STORE_CSR; sk++) {
            eb_bundle *b;
            eb_error err;
            tfile a, c;
            unsigned major, minor;
            write_kind(p1, reprs[ri], (eb_storage_kind)sk);
            write_kind(p2, reprs[ri], (eb_storage_kind)sk);
            a = tfile_read(p1);
            c = tfile_read(p2);
            assert_int_equal(a.len, c.len);
            assert_memory_equal(a.p, c.p, a.len);
            dump_seed(&a);
            tfile_free(&c);
            tfile_free(&a);
            for (int skip = 0; skip < 2; skip++) {
                assert_int_equal(eb_bundle_open(p1, skip ? EB_BUNDLE_SKIP_TENSOR_CHECK : 0, &b,
                                                &err), EB_OK);
                eb_bundle_version(b, &major, &minor);
                assert_int_equal(minor, 1);
                assert_int_equal(eb_bundle_repr(b), reprs[ri]);
                assert_int_equal(eb_bundle_storage(b), sk);
                assert_int_equal(eb_bundle_head(b),
                                 reprs[ri] == EB_REPR_DISTILLED ? EB_HEAD_GPED : EB_HEAD_NONE);
                assert_int_equal(eb_bundle_param_rows(b), reprs[ri] == EB_REPR_SAMPLES ? 3 : 1);
                if (sk == EB_STORE_F32) {
                    assert_non_null(eb_bundle_params(b));
                } else {
                    assert_null(eb_bundle_params(b));
                    assert_null(eb_bundle_sigma(b));
                }
                check_decoded(b, reprs[ri], (eb_storage_kind)sk);
                eb_bundle_close(b);
            }
        }
    assert_string_equal(eb_head_name(EB_HEAD_DIRICHLET), "dirichlet");
    assert_string_equal(eb_head_name(EB_HEAD_NONE), "none");
    assert_string_equal(eb_head_name((eb_head_kind)7), "unknown");
    unlink(p1);
    unlink(p2);
}

/* Sparse kinds are exact, including every value of every row; decode's
 * argument errors; stored_view of a missing tensor. */
static void test_decode_arguments(void **state)
{
    char path[512];
    eb_bundle *b;
    eb_bundle_stored sv;
    eb_error err;
    float dst[NK];
    (void)state;
    fill_rows();
    test_path(path, sizeof path, "decode.ebb");
    write_kind(path, EB_REPR_SAMPLES, EB_STORE_CSR);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    for (uint32_t r = 0; r < 3; r++) {
        assert_int_equal(eb_bundle_decode(b, EB_TENSOR_PARAMS, r, dst, &err), EB_OK);
        assert_memory_equal(dst, g_rows + r * NK, sizeof dst);
    }
    assert_int_equal(eb_bundle_decode(b, EB_TENSOR_PARAMS, 3, dst, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "row 3 of 3"));
    assert_int_equal(eb_bundle_decode(b, EB_TENSOR_SIGMA, 0, dst, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "has no tensor 1"));
    assert_int_equal(eb_bundle_decode(b, -1, 0, dst, &err), EB_ERR_ARG);
    eb_bundle_stored_view(b, EB_TENSOR_SIGMA, &sv);
    assert_int_equal(sv.kind, 0);
    assert_null(sv.values);
    eb_bundle_close(b);
    unlink(path);
}

static void test_storage_writer_errors(void **state)
{
    eb_bundle_writer *w;
    eb_error err;
    float big[4] = {1.0f, 2.0f, 3.0f, 4.0f}, two[8] = {0, 0, 0, 0, 0, 0, 0, 70000.0f};
    const uint64_t bad0[3] = {1, 2, 4}, flat[3] = {0, 2, 2}, shortg[3] = {0, 2, 3};
    const uint64_t ok[3] = {0, 2, 4};
    char path[512];
    (void)state;
    test_path(path, sizeof path, "never2.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_F16, NULL, 0, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "set the posterior first"));
    assert_int_equal(eb_bundle_writer_distilled(w, EB_HEAD_NONE, 1, 4, big, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "head 0 (none)"));
    assert_int_equal(eb_bundle_writer_distilled(w, (eb_head_kind)4, 1, 4, big, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_distilled(w, EB_HEAD_DIRICHLET, 0, 4, big, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "default_draws"));
    assert_int_equal(eb_bundle_writer_samples(w, 2, 4, two, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, (eb_storage_kind)6, NULL, 0, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "storage kind 6 is unknown"));
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_F16, ok, 2, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "groups are for int8 only"));
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, NULL, 0, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, bad0, 2, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "groups[0] is 1"));
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, flat, 2, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "groups[2] = 2 is not above groups[1] = 2"));
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, shortg, 2, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "groups[2] is 3; it must be K = 4"));
    /* 70000 is finite but beyond f16: named by row and index */
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_F16, NULL, 0, &err), EB_ERR_NUMERIC);
    assert_non_null(strstr(err.msg, "theta[1][3] = 70000 is beyond the f16 range"));
    /* int8 holds it; then another choice replaces it */
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, ok, 2, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_CSR, NULL, 0, &err), EB_OK);
    eb_bundle_writer_free(w);
    /* gaussian: sigma is checked too, and named */
    {
        float mu[2] = {1.0f, 2.0f}, sig[2] = {0.5f, 1e5f};
        assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_gaussian(w, 3, 2, mu, sig, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_F16, NULL, 0, &err),
                         EB_ERR_NUMERIC);
        assert_non_null(strstr(err.msg, "sigma[0][1] = 100000"));
        eb_bundle_writer_free(w);
    }
    assert_int_equal(access(path, F_OK), -1);
}

/* INT8 quantization by hand: scale = max|v| / 127 per (row, run), zero
 * runs have scale 0, q rounds half away from zero. */
static void test_int8_scales(void **state)
{
    const float v[2 * 6] = {1.27f, -0.635f, 0.0f, 0.0f, 0.0f, 0.0f,
                            -2.54f, 0.01f, 4.0f, 0.0f, -1.0f, 0.5f};
    const uint64_t groups[3] = {0, 3, 6};
    char path[512];
    eb_bundle_writer *w;
    eb_bundle *b;
    eb_bundle_stored sv;
    eb_error err;
    const int8_t *q;
    (void)state;
    test_path(path, sizeof path, "int8.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 3", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, 2, 6, v, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, groups, 2, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    q = sv.values;
    assert_true(sv.scales[0] == 1.27f / 127.0f);
    assert_true(sv.scales[1] == 0.0f); /* all-zero run */
    assert_true(sv.scales[2] == 4.0f / 127.0f);
    assert_true(sv.scales[3] == 1.0f / 127.0f);
    assert_int_equal(q[0], 127);
    assert_int_equal(q[1], -64); /* -63.5 rounds away from zero */
    assert_int_equal(q[3], 0);
    assert_int_equal(q[6], -81); /* -2.54 / (4 / 127) = -80.6 */
    assert_int_equal(q[7], 0);
    assert_int_equal(q[8], 127);
    assert_int_equal(q[10], -127);
    assert_int_equal(q[11], 64);
    eb_bundle_close(b);
    unlink(path);
}

/* size of the canonical layout of sections of these sizes */
static uint64_t layout_size(const uint64_t *sizes, int n)
{
    uint64_t pos = EB_BUNDLE_HEADER_SIZE + (uint64_t)n * EB_BUNDLE_ENTRY_SIZE;
    for (int i = 0; i < n; i++)
        pos = (pos + 63) / 64 * 64 + sizes[i];
    return pos;
}

/* A 90%-sparse S = 30 posterior sharing one pruning mask: shared-sparse
 * costs 4N + 4SN bytes of payload against 12 bytes per nonzero of
 * per-member COO; the file must be within 40% of COO, and its size is
 * exactly the documented layout. CSR's size is checked the same way. */
static void test_shared_sparse_size(void **state)
{
    enum { S = 30, K = 10000 };
    static float theta[S * K];
    static const char arch[] = "dense 10";
    const char *meta = "method=test\n";
    char path[512];
    uint64_t N = 0, nnz = 0, sizes[6], expect, coo;
    eb_bundle_writer *w;
    eb_bundle *b;
    eb_error err;
    struct stat sb;
    (void)state;
    for (int s = 0; s < S; s++)
        for (int k = 0; k < K; k++)
            theta[s * K + k] = k % 10 == 3 ? 0.001f * (float)(k + 1) * (float)(s + 1) : 0.0f;
    for (int k = 0; k < K; k++)
        N += k % 10 == 3;
    nnz = (uint64_t)S * N;
    test_path(path, sizeof path, "sparse_size.ebb");
    for (int csr = 0; csr < 2; csr++) {
        assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_arch(w, arch, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_meta(w, "method", "test", &err), EB_OK);
        assert_int_equal(eb_bundle_writer_samples(w, S, K, theta, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_storage(w, csr ? EB_STORE_CSR : EB_STORE_SHARED_SPARSE,
                                                  NULL, 0, &err), EB_OK);
        assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
        eb_bundle_writer_free(w);
        assert_int_equal(stat(path, &sb), 0);
        sizes[0] = strlen(meta);
        sizes[1] = strlen(arch);
        sizes[2] = EB_BUNDLE_POSTERIOR_SIZE;
        if (!csr) { /* META ARCH POSTERIOR PARAMS (S, N) f32, INDEX (N) u32 */
            sizes[3] = (uint64_t)S * N * 4;
            sizes[4] = N * 4;
            expect = layout_size(sizes, 5);
        } else { /* ... PARAMS (nnz) f32, INDEX (nnz) u32, ROWPTR (S + 1) u64 */
            sizes[3] = nnz * 4;
            sizes[4] = nnz * 4;
            sizes[5] = (S + 1) * 8;
            expect = layout_size(sizes, 6);
        }
        coo = 12 * nnz;
        print_message("%s: %lld bytes, per-member COO %llu (%.1f%%)\n",
                      csr ? "csr" : "shared-sparse", (long long)sb.st_size,
                      (unsigned long long)coo, 100.0 * (double)sb.st_size / (double)coo);
        assert_int_equal((uint64_t)sb.st_size, expect);
        if (!csr)
            assert_true((double)sb.st_size <= 0.40 * (double)coo);
        assert_int_equal(eb_bundle_open(path, 0, &b, &err), EB_OK);
        {
            eb_bundle_stored sv;
            eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
            assert_int_equal(sv.n_index, csr ? nnz : N);
        }
        eb_bundle_close(b);
    }
    unlink(path);
}

/* ---- malformed 1.1 sections, built by hand ------------------------------- */

/* A bundle of kind/storage with the given tensor and auxiliary sections
 * (K = 4, S = 2 for samples); any of them may be replaced or dropped. */
typedef struct kspec {
    spec p;
    tsec s[10];
    uint32_t n;
} kspec;

static const int8_t g_q[8] = {127, -3, 0, 64, 1, 2, 3, -127};
static const float g_scales[4] = {0.01f, 0.5f, 0.02f, 0.0f};
static const uint64_t g_grp[3] = {0, 2, 4};
static const uint16_t g_h[8] = {0x3c00, 0xbc00, 0, 0x7bff, 0x0001, 0x3555, 0x4000, 0x8000};
static const uint32_t g_ix[3] = {0, 2, 3};
static const float g_sv[6] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
static const uint64_t g_rp[3] = {0, 2, 3};

static tfile kbuild(kspec *k)
{
    return build(k->s, k->n);
}

static void kspec_init(kspec *k, eb_storage_kind sk)
{
    memset(k, 0, sizeof *k);
    k->p = spec_default();
    k->p.members = 2;
    k->p.nparams = 4;
    k->p.storage = sk;
    spec_sections(&k->p, k->s);
    k->n = 4;
    switch (sk) {
    case EB_STORE_F16:
        k->s[3].dtype = EB_DTYPE_F16, k->s[3].data = g_h, k->s[3].size = sizeof g_h;
        break;
    case EB_STORE_INT8:
        k->s[3].dtype = EB_DTYPE_I8, k->s[3].data = g_q, k->s[3].size = sizeof g_q;
        k->s[4] = (tsec){EB_SEC_SCALES, EB_DTYPE_F32, 1, g_scales, sizeof g_scales};
        k->s[5] = (tsec){EB_SEC_GROUPS, EB_DTYPE_U64, 1, g_grp, sizeof g_grp};
        k->n = 6;
        break;
    case EB_STORE_SHARED_SPARSE: /* N = 3 of K = 4, (2, 3) values */
        k->s[3].data = g_sv, k->s[3].size = sizeof g_sv;
        k->s[4] = (tsec){EB_SEC_INDEX, EB_DTYPE_U32, 1, g_ix, sizeof g_ix};
        k->n = 5;
        break;
    case EB_STORE_CSR: /* row 0: {0, 2}, row 1: {3} */
        k->s[3].data = g_sv, k->s[3].size = 3 * 4;
        k->s[4] = (tsec){EB_SEC_INDEX, EB_DTYPE_U32, 1, g_ix, sizeof g_ix};
        k->s[5] = (tsec){EB_SEC_ROWPTR, EB_DTYPE_U64, 1, g_rp, sizeof g_rp};
        k->n = 6;
        break;
    default:
        k->s[3].size = 8 * 4;
        break;
    }
}

static void kexpect(kspec *k, eb_status code, const char *needle)
{
    tfile f = kbuild(k);
    expect_fail(&f, 0, code, needle);
    tfile_free(&f);
}

/* Every hand-built kind opens and decodes as documented; the writer
 * produces the same bytes as the builder (shared-sparse, csr). */
static void test_handbuilt_kinds_ok(void **state)
{
    static const float want[4][8] = {
        {1.0f, -1.0f, 0.0f, 65504.0f, 0x1p-24f, 0x1.554p-2f, 2.0f, -0.0f},
        {1.27f, -0.03f, 0.0f, 32.0f, 0.02f, 0.04f, 0.0f, -0.0f},
        {1.0f, 0.0f, 2.0f, 3.0f, 4.0f, 0.0f, 5.0f, 6.0f},
        {1.0f, 0.0f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f}};
    (void)state;
    for (int sk = EB_STORE_F16; sk <= EB_STORE_CSR; sk++) {
        kspec k;
        tfile f;
        eb_bundle *b;
        eb_error err;
        float dst[8];
        kspec_init(&k, (eb_storage_kind)sk);
        f = kbuild(&k);
        b = open_ok(&f, 0);
        for (uint32_t r = 0; r < 2; r++) {
            assert_int_equal(eb_bundle_decode(b, EB_TENSOR_PARAMS, r, dst + 4 * r, &err), EB_OK);
        }
        for (int i = 0; i < 8; i++)
            if (fabsf(dst[i] - want[sk - 2][i]) > 1e-6f)
                fail_msg("%s value %d: %g, want %g", eb_storage_name((eb_storage_kind)sk), i,
                         (double)dst[i], (double)want[sk - 2][i]);
        eb_bundle_close(b);
        if (sk >= EB_STORE_SHARED_SPARSE) { /* the writer lays out the same bytes */
            char path[512];
            eb_bundle_writer *w;
            tfile g;
            test_path(path, sizeof path, "hand.ebb");
            assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
            assert_int_equal(eb_bundle_writer_arch(w, k.p.arch, &err), EB_OK);
            assert_int_equal(eb_bundle_writer_meta(w, "dataset.sha256", "abc", &err), EB_OK);
            assert_int_equal(eb_bundle_writer_meta(w, "method", "ensemble", &err), EB_OK);
            assert_int_equal(eb_bundle_writer_meta(w, "seed", "7", &err), EB_OK);
            assert_int_equal(eb_bundle_writer_samples(w, 2, 4, want[sk - 2], &err), EB_OK);
            assert_int_equal(eb_bundle_writer_storage(w, (eb_storage_kind)sk, NULL, 0, &err),
                             EB_OK);
            assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
            eb_bundle_writer_free(w);
            g = tfile_read(path);
            /* shared-sparse: the kept set is {0, 2, 3} (1 is zero in both
             * rows); csr: rows {0, 2} and {3}: the builder's sections */
            assert_int_equal(g.len, f.len);
            assert_memory_equal(g.p, f.p, f.len);
            tfile_free(&g);
            unlink(path);
        }
        tfile_free(&f);
    }
}

/* ---- ACTSCALES (1.2): static activation scales --------------------------- */

/* The writer stores (rows, L) scales as ACTSCALES, required, after the
 * int8 sections, in a file of minor 2; the reader hands them out with
 * the PARAMS view; without them (or once removed) the file is minor 1
 * and byte-identical to what 1.1 wrote. */
static void test_act_scales_roundtrip(void **state)
{
    const float v[2 * 6] = {1.27f, -0.635f, 0.0f, 0.3f, 0.0f, 0.1f,
                            -2.54f, 0.01f, 4.0f, 0.0f, -1.0f, 0.5f};
    const float act[2 * 3] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    const uint64_t groups[3] = {0, 3, 6};
    char path[512], path2[512];
    eb_bundle *b;
    eb_bundle_stored sv;
    eb_bundle_section info;
    eb_error err;
    unsigned major, minor;
    tfile f, g;
    (void)state;
    test_path(path, sizeof path, "act.ebb");
    test_path(path2, sizeof path2, "act2.ebb");
    for (int with = 1; with >= 0; with--) {
        eb_bundle_writer *w;
        assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_arch(w, "dense 3", &err), EB_OK);
        assert_int_equal(eb_bundle_writer_samples(w, 2, 6, v, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_act_scales(w, act, 3, &err), EB_OK);
        assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, groups, 2, &err), EB_OK);
        if (!with) /* removed again */
            assert_int_equal(eb_bundle_writer_act_scales(w, NULL, 0, &err), EB_OK);
        assert_int_equal(eb_bundle_write(w, with ? path : path2, &err), EB_OK);
        eb_bundle_writer_free(w);
    }
    f = tfile_read(path);
    b = open_ok(&f, 0);
    eb_bundle_version(b, &major, &minor);
    assert_int_equal(minor, 2);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    assert_int_equal(sv.n_act, 3);
    assert_memory_equal(sv.act_scales, act, sizeof act);
    assert_int_equal(eb_bundle_section_count(b), 7);
    eb_bundle_section_info(b, 6, &info);
    assert_string_equal(info.type_name, "ACTSCALES");
    assert_string_equal(info.dtype_name, "f32");
    assert_int_equal(info.size, sizeof act);
    assert_int_equal(info.flags, EB_BUNDLE_FLAG_REQUIRED);
    eb_bundle_close(b);
    b = open_ok(&f, EB_BUNDLE_SKIP_TENSOR_CHECK);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    assert_memory_equal(sv.act_scales, act, sizeof act);
    eb_bundle_close(b);
    /* the file without them: minor 1, no ACTSCALES, the other sections'
     * bytes unchanged */
    g = tfile_read(path2);
    b = open_ok(&g, 0);
    eb_bundle_version(b, &major, &minor);
    assert_int_equal(minor, 1);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    assert_null(sv.act_scales);
    assert_int_equal(sv.n_act, 0);
    assert_int_equal(eb_bundle_section_count(b), 6);
    eb_bundle_close(b);
    assert_memory_equal(payload(&f, 3), payload(&g, 3), 12); /* PARAMS */
    tfile_free(&f);
    tfile_free(&g);
    unlink(path);
    unlink(path2);
}

static void test_act_scales_writer_errors(void **state)
{
    const float v[6] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, sig[3] = {0.1f, 0.1f, 0.1f};
    float act[2] = {0.5f, 0.25f};
    const uint64_t groups[2] = {0, 3};
    char path[512];
    eb_bundle_writer *w;
    eb_error err;
    (void)state;
    test_path(path, sizeof path, "act_err.ebb");
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, "dense 3", &err), EB_OK);
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 1, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "set the posterior first"));
    assert_int_equal(eb_bundle_writer_samples(w, 2, 3, v, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 0, &err), EB_ERR_ARG);
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 2000, &err), EB_ERR_ARG);
    act[1] = 0.0f;
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 1, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "scale [1][0] is 0"));
    act[1] = -INFINITY;
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 1, &err), EB_ERR_NUMERIC);
    act[1] = 0.25f;
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 1, &err), EB_OK);
    /* still f32: refused at write time, no file left */
    assert_int_equal(eb_bundle_write(w, path, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "need int8 storage, not f32"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(eb_bundle_writer_storage(w, EB_STORE_INT8, groups, 1, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    /* gaussian and dropout are predicted from decoded f32: refused */
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_gaussian(w, 4, 3, v, sig, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_act_scales(w, act, 1, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "not gaussian"));
    eb_bundle_writer_free(w);
    unlink(path);
}

/* Hand-built ACTSCALES: every rule refused with the section named. */
static void test_malformed_act_scales(void **state)
{
    kspec k;
    const float ok[2 * 3] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    const float neg[2 * 3] = {0.1f, 0.2f, 0.3f, -1.0f, 0.5f, 0.6f};
    const float zero[2 * 3] = {0.1f, 0.0f, 0.3f, 0.4f, 0.5f, 0.6f};
    const float nan_[2 * 3] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, NAN};
    tfile f;
    eb_bundle *b;
    eb_bundle_stored sv;
    (void)state;
    kspec_init(&k, EB_STORE_INT8);
    k.s[6] = (tsec){EB_SEC_ACTSCALES, EB_DTYPE_F32, 1, ok, sizeof ok};
    k.n = 7;
    f = kbuild(&k);
    b = open_ok(&f, 0);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    assert_int_equal(sv.n_act, 3);
    assert_true(sv.act_scales[5] == 0.6f);
    eb_bundle_close(b);
    tfile_free(&f);
    k.s[6].flags = 0; /* optional or required: the reader knows the type */
    f = kbuild(&k);
    b = open_ok(&f, 0);
    eb_bundle_close(b);
    tfile_free(&f);
    k.s[6].flags = 1;
    k.s[6].size = 20;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES is 20 bytes; samples needs 2 rows x L scales");
    k.s[6].size = 0;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES is 0 bytes");
    k.s[6].size = sizeof ok;
    k.s[6].dtype = EB_DTYPE_F16;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES: field 'dtype' is 2 (f16); storage int8 needs 1");
    k.s[6].dtype = EB_DTYPE_F32;
    k.s[6].data = neg;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES: scale [1][0] is -1; activation scales must "
                               "be finite and > 0");
    k.s[6].data = zero;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES: scale [0][1] is 0");
    {
        tfile z = kbuild(&k); /* scanned on the fast path too */
        expect_fail(&z, EB_BUNDLE_SKIP_TENSOR_CHECK, EB_ERR_FORMAT, "section ACTSCALES");
        tfile_free(&z);
    }
    k.s[6].data = nan_;
    kexpect(&k, EB_ERR_NUMERIC, "section ACTSCALES: scale [1][2] is nan");
    k.s[6].data = ok;
    k.s[7] = k.s[6];
    k.n = 8;
    kexpect(&k, EB_ERR_FORMAT, "duplicates section 6; a bundle has one ACTSCALES");
    /* another storage kind, another representation */
    kspec_init(&k, EB_STORE_F32);
    k.s[4] = (tsec){EB_SEC_ACTSCALES, EB_DTYPE_F32, 1, ok, sizeof ok};
    k.n = 5;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES belongs to storage 'int8', not 'f32'");
    kspec_init(&k, EB_STORE_INT8);
    k.p.kind = EB_REPR_DROPOUT;
    k.p.members = 5;
    k.s[3].size = 4; /* one row of K = 4 */
    k.s[4].size = 2 * 4;
    spec_post(&k.p);
    k.s[6] = (tsec){EB_SEC_ACTSCALES, EB_DTYPE_F32, 1, ok, 3 * 4};
    k.n = 7;
    kexpect(&k, EB_ERR_FORMAT, "section ACTSCALES belongs to representations 'samples' and "
                               "'distilled'");
}

static void test_malformed_int8(void **state)
{
    kspec k;
    const uint64_t g_bad0[3] = {1, 2, 4}, g_flat[3] = {0, 2, 2}, g_end[3] = {0, 2, 3};
    const float sc_neg[4] = {0.01f, -1.0f, 0.0f, 0.0f}, sc_nan[4] = {0.01f, 0.0f, NAN, 0.0f};
    const int8_t q_min[8] = {0, 0, 0, 0, 0, -128, 0, 0};
    (void)state;
    kspec_init(&k, EB_STORE_INT8);
    k.n = 5; /* no GROUPS */
    kexpect(&k, EB_ERR_FORMAT, "storage 'int8' needs a GROUPS section");
    kspec_init(&k, EB_STORE_INT8);
    k.s[4] = k.s[5];
    k.n = 5; /* no SCALES */
    kexpect(&k, EB_ERR_FORMAT, "storage 'int8' needs a SCALES section");
    kspec_init(&k, EB_STORE_INT8);
    k.s[5].dtype = EB_DTYPE_U32;
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS: field 'dtype' is 4 (u32); storage int8 needs 5 (u64)");
    kspec_init(&k, EB_STORE_INT8);
    k.s[5].size = 8;
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS is 8 bytes; it must hold at least 2");
    k.s[5].size = 20;
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS is 20 bytes");
    kspec_init(&k, EB_STORE_INT8);
    k.s[5].data = g_bad0;
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS: offset [0] is 1; it must be 0");
    k.s[5].data = g_flat;
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS: offset [2] is 2, not above offset [1] 2");
    k.s[5].data = g_end;
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS: the last offset [2] is 3; it must be K = 4");
    kspec_init(&k, EB_STORE_INT8);
    k.s[4].size = 12;
    kexpect(&k, EB_ERR_FORMAT, "section SCALES is 12 bytes but samples needs 1 x 2 x 2 groups x 4 = 16");
    k.s[4].size = 16;
    k.s[4].dtype = EB_DTYPE_F16;
    kexpect(&k, EB_ERR_FORMAT, "section SCALES: field 'dtype' is 2 (f16)");
    kspec_init(&k, EB_STORE_INT8);
    k.s[4].data = sc_neg;
    kexpect(&k, EB_ERR_FORMAT, "section SCALES: scale [0][1] is -1; scales must be finite and not negative");
    k.s[4].data = sc_nan;
    kexpect(&k, EB_ERR_NUMERIC, "section SCALES: scale [1][0] is nan");
    kspec_init(&k, EB_STORE_INT8);
    k.s[3].data = q_min;
    kexpect(&k, EB_ERR_FORMAT, "section PARAMS: value [1][1] is -128");
    {
        tfile f = kbuild(&k); /* a value check: skipped on the fast path */
        assert_int_equal(open_status(&f, EB_BUNDLE_SKIP_TENSOR_CHECK), EB_OK);
        tfile_free(&f);
    }
    kspec_init(&k, EB_STORE_INT8);
    k.s[3].size = 7;
    kexpect(&k, EB_ERR_FORMAT, "section PARAMS is 7 bytes but samples needs 2 x 4 x 1 = 8 (storage int8)");
    k.s[3].size = 8;
    k.s[3].dtype = EB_DTYPE_F32;
    kexpect(&k, EB_ERR_FORMAT, "section PARAMS: field 'dtype' is 1 (f32); storage int8 needs 3 (i8)");
    /* an int8 section in another storage */
    kspec_init(&k, EB_STORE_F32);
    k.s[4] = (tsec){EB_SEC_SCALES, EB_DTYPE_F32, 1, g_scales, sizeof g_scales};
    k.n = 5;
    kexpect(&k, EB_ERR_FORMAT, "section SCALES belongs to storage 'int8', not 'f32'");
    k.s[4] = (tsec){EB_SEC_GROUPS, EB_DTYPE_U64, 1, g_grp, sizeof g_grp};
    kexpect(&k, EB_ERR_FORMAT, "section GROUPS belongs to storage 'int8', not 'f32'");
    k.s[4] = (tsec){EB_SEC_INDEX, EB_DTYPE_U32, 1, g_ix, sizeof g_ix};
    kexpect(&k, EB_ERR_FORMAT, "section INDEX belongs to storage 'shared-sparse' or 'csr'");
    k.s[4] = (tsec){EB_SEC_ROWPTR, EB_DTYPE_U64, 1, g_rp, sizeof g_rp};
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR belongs to storage 'csr', not 'f32'");
}

static void test_malformed_f16(void **state)
{
    kspec k;
    uint16_t inf[8], nan[8], neg[8];
    tsec s[5];
    spec p;
    tfile f;
    (void)state;
    memcpy(inf, g_h, sizeof inf);
    memcpy(nan, g_h, sizeof nan);
    inf[6] = 0x7c00;
    nan[2] = 0x7e00;
    kspec_init(&k, EB_STORE_F16);
    k.s[3].data = inf;
    kexpect(&k, EB_ERR_NUMERIC, "section PARAMS: value [1][2] is infinite");
    k.s[3].data = nan;
    kexpect(&k, EB_ERR_NUMERIC, "section PARAMS: value [0][2] is NaN");
    f = kbuild(&k);
    assert_int_equal(open_status(&f, EB_BUNDLE_SKIP_TENSOR_CHECK), EB_OK);
    tfile_free(&f);
    kspec_init(&k, EB_STORE_F16);
    k.s[3].size = 14;
    kexpect(&k, EB_ERR_FORMAT, "section PARAMS is 14 bytes but samples needs 2 x 4 x 2 = 16 (storage f16)");
    k.s[3].size = 16;
    k.s[3].dtype = EB_DTYPE_F32;
    kexpect(&k, EB_ERR_FORMAT, "storage f16 needs 2 (f16)");
    /* gaussian f16: a negative sigma (-2^-24) is refused, -0 is fine */
    p = spec_default();
    p.storage = EB_STORE_F16;
    gaussian_sections(&p, s, g_sigma);
    neg[0] = 0x3c00, neg[1] = 0, neg[2] = 0x8001, neg[3] = 0x4000, neg[4] = 0x8000;
    s[3] = (tsec){EB_SEC_MU, EB_DTYPE_F16, 1, g_h, 5 * 2};
    s[4] = (tsec){EB_SEC_SIGMA, EB_DTYPE_F16, 1, neg, 5 * 2};
    f = build(s, 5);
    expect_fail(&f, 0, EB_ERR_NUMERIC, "section SIGMA: value [2] is -5.96");
    tfile_free(&f);
    neg[0] = 0x8000, neg[1] = 0x7bff, neg[2] = 0x0001, neg[3] = 0x3555, neg[4] = 0x4000;
    f = build(s, 5);
    {
        eb_bundle *b = open_ok(&f, 0);
        float d[5];
        eb_error err;
        assert_int_equal(eb_bundle_decode(b, EB_TENSOR_SIGMA, 0, d, &err), EB_OK);
        assert_true(d[1] == 65504.0f);
        eb_bundle_close(b);
    }
    tfile_free(&f);
}

static void test_malformed_sparse(void **state)
{
    kspec k;
    const uint32_t ix_dec[3] = {0, 3, 2}, ix_dup[3] = {0, 2, 2}, ix_k[3] = {0, 2, 4};
    const uint32_t ix_rows[3] = {2, 3, 0}; /* csr: each row increasing, not across rows */
    const uint64_t rp_bad0[3] = {1, 2, 3}, rp_dec[3] = {0, 3, 2}, rp_end[3] = {0, 2, 2},
                   rp_wide[3] = {0, 5, 3};
    const float sv_nan[6] = {1.0f, NAN, 3.0f, 4.0f, 5.0f, 6.0f};
    (void)state;
    kspec_init(&k, EB_STORE_SHARED_SPARSE);
    k.n = 4;
    kexpect(&k, EB_ERR_FORMAT, "storage 'shared-sparse' needs a INDEX section");
    kspec_init(&k, EB_STORE_SHARED_SPARSE);
    k.s[4].data = ix_dec;
    kexpect(&k, EB_ERR_FORMAT, "section INDEX: index [2] is 2, not above index [1] 3 (indices must increase)");
    k.s[4].data = ix_dup;
    kexpect(&k, EB_ERR_FORMAT, "section INDEX: index [2] is 2, not above index [1] 2");
    k.s[4].data = ix_k;
    kexpect(&k, EB_ERR_FORMAT, "section INDEX: index [2] is 4, not below K = 4");
    {   /* the structural index checks also run on the fast path */
        tfile f = kbuild(&k);
        expect_fail(&f, EB_BUNDLE_SKIP_TENSOR_CHECK, EB_ERR_FORMAT, "not below K = 4");
        tfile_free(&f);
    }
    kspec_init(&k, EB_STORE_SHARED_SPARSE);
    k.s[4].size = 10;
    kexpect(&k, EB_ERR_FORMAT, "section INDEX is 10 bytes, not a whole number of u32 indices");
    k.s[4].size = 12;
    k.s[4].dtype = EB_DTYPE_U64;
    kexpect(&k, EB_ERR_FORMAT, "section INDEX: field 'dtype' is 5 (u64); storage shared-sparse needs 4 (u32)");
    kspec_init(&k, EB_STORE_SHARED_SPARSE);
    k.s[4].size = 8; /* N = 2: PARAMS must be 2 x 2 x 4 */
    kexpect(&k, EB_ERR_FORMAT, "section PARAMS is 24 bytes but samples with N = 2 kept indices needs 2 x 2 x 4 = 16");
    kspec_init(&k, EB_STORE_SHARED_SPARSE);
    k.s[3].data = sv_nan;
    kexpect(&k, EB_ERR_NUMERIC, "section PARAMS: value [0][1] is NaN");
    kspec_init(&k, EB_STORE_SHARED_SPARSE);
    k.s[4].size = 0; /* N = 0: all zero, with empty PARAMS */
    k.s[3].size = 0;
    {
        tfile f = kbuild(&k);
        eb_bundle *b = open_ok(&f, 0);
        float d[4] = {9, 9, 9, 9};
        eb_error err;
        assert_int_equal(eb_bundle_decode(b, 0, 1, d, &err), EB_OK);
        assert_true(d[0] == 0.0f && d[3] == 0.0f);
        eb_bundle_close(b);
        tfile_free(&f);
    }

    kspec_init(&k, EB_STORE_CSR);
    k.s[5] = k.s[4];
    k.n = 5;
    kexpect(&k, EB_ERR_FORMAT, "storage 'csr' needs a ROWPTR section");
    kspec_init(&k, EB_STORE_CSR);
    k.s[5].size = 16;
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR is 16 bytes but samples needs (2 rows + 1) x 8 = 24");
    kspec_init(&k, EB_STORE_CSR);
    k.s[5].dtype = EB_DTYPE_U32;
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR: field 'dtype' is 4 (u32); storage csr needs 5 (u64)");
    k.s[5].dtype = EB_DTYPE_U64;
    k.s[5].data = rp_bad0;
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR: offset [0] is 1; it must be 0");
    k.s[5].data = rp_dec;
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR: offset [2] is 2 after offset [1] 3 (offsets must not decrease");
    k.s[5].data = rp_wide;
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR: offset [1] is 5 after offset [0] 0");
    k.s[5].data = rp_end;
    kexpect(&k, EB_ERR_FORMAT, "section ROWPTR: the last offset [2] is 2 but section INDEX holds 3 indices (nnz)");
    kspec_init(&k, EB_STORE_CSR);
    k.s[4].data = ix_dec; /* row 0 = {0, 3}, row 1 = {2}: fine across rows */
    {
        tfile f = kbuild(&k);
        eb_bundle *b = open_ok(&f, 0);
        eb_bundle_close(b);
        tfile_free(&f);
    }
    k.s[4].data = ix_rows; /* row 0 = {2, 3}, row 1 = {0} */
    {
        tfile f = kbuild(&k);
        eb_bundle *b = open_ok(&f, 0);
        eb_bundle_close(b);
        tfile_free(&f);
    }
    {
        const uint64_t rp_one[3] = {0, 3, 3}; /* row 0 = {0, 2, 2}: a repeat within a row */
        kspec_init(&k, EB_STORE_CSR);
        k.s[4].data = ix_dup;
        k.s[5].data = rp_one;
        kexpect(&k, EB_ERR_FORMAT, "section INDEX: index [2] is 2, not above index [1] 2 "
                                   "(indices must increase within a row)");
        k.s[4].data = ix_k;
        kexpect(&k, EB_ERR_FORMAT, "section INDEX: index [2] is 4, not below K = 4");
    }
    kspec_init(&k, EB_STORE_CSR);
    k.s[3].size = 8;
    kexpect(&k, EB_ERR_FORMAT, "section PARAMS is 8 bytes but samples with nnz = 3 (section "
                               "INDEX) needs 3 x 4 = 12 (storage csr)");
}

static void test_head_field(void **state)
{
    spec p;
    tfile f;
    eb_bundle *b;
    (void)state;
    p = spec_default();
    p.kind = EB_REPR_DISTILLED;
    p.params_bytes = 5 * 4;
    f = build_spec(&p);
    expect_fail(&f, 0, EB_ERR_FORMAT, "field 'head' is 0 (none); a distilled bundle needs 1");
    tfile_free(&f);
    put32(p.post + EB_BP_HEAD, 4);
    {
        tsec s[4];
        spec_post(&p);
        put32(p.post + EB_BP_HEAD, 4); /* spec_post leaves the head alone */
        f = build(s, spec_sections(&p, s));
        expect_fail(&f, 0, EB_ERR_FORMAT, "field 'head' is 4 (unknown); a distilled bundle");
        tfile_free(&f);
        put32(p.post + EB_BP_HEAD, EB_HEAD_DIRICHLET);
        f = build(s, 4);
        b = open_ok(&f, 0);
        assert_int_equal(eb_bundle_repr(b), EB_REPR_DISTILLED);
        assert_int_equal(eb_bundle_head(b), EB_HEAD_DIRICHLET);
        assert_int_equal(eb_bundle_param_rows(b), 1);
        eb_bundle_close(b);
        tfile_free(&f);
        /* the reserved bytes after the head */
        p.post[EB_BP_RESERVED + 7] = 1;
        f = build(s, 4);
        expect_fail(&f, 0, EB_ERR_FORMAT, "field 'reserved' (bytes 24..31) is not zero");
        /* a newer minor may use them; the head is still read */
        put16(f.p + EB_BH_MINOR, EB_BUNDLE_FORMAT_MINOR + 1);
        fix_crcs(&f);
        b = open_ok(&f, 0);
        assert_int_equal(eb_bundle_head(b), EB_HEAD_DIRICHLET);
        eb_bundle_close(b);
        tfile_free(&f);
    }
    /* a head on another representation */
    p = spec_default();
    {
        tsec s[4];
        spec_sections(&p, s);
        put32(p.post + EB_BP_HEAD, EB_HEAD_CATEGORICAL);
        f = build(s, 4);
        expect_fail(&f, 0, EB_ERR_FORMAT, "field 'head' is 1 but only a distilled bundle has a "
                                          "head (this one is samples)");
        tfile_free(&f);
    }
}

/* A file written by format 1.0 (minor 0, f32, the head bytes zero as
 * reserved) still reads, strictly, for each 1.0 representation. */
static void test_format_1_0_reads(void **state)
{
    spec p = spec_default();
    tsec s[5];
    tfile f;
    eb_bundle *b;
    unsigned major, minor;
    (void)state;
    f = build_spec(&p);
    put16(f.p + EB_BH_MINOR, 0);
    fix_crcs(&f);
    b = open_ok(&f, 0);
    eb_bundle_version(b, &major, &minor);
    assert_int_equal(major, 1);
    assert_int_equal(minor, 0);
    assert_int_equal(eb_bundle_storage(b), EB_STORE_F32);
    assert_int_equal(eb_bundle_head(b), EB_HEAD_NONE);
    assert_memory_equal(eb_bundle_params(b), g_theta, sizeof g_theta);
    eb_bundle_close(b);
    tfile_free(&f);
    p = spec_default();
    f = build(s, gaussian_sections(&p, s, g_sigma));
    put16(f.p + EB_BH_MINOR, 0);
    fix_crcs(&f);
    b = open_ok(&f, 0);
    assert_memory_equal(eb_bundle_sigma(b), g_sigma, sizeof g_sigma);
    eb_bundle_close(b);
    tfile_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_samples),
        cmocka_unit_test(test_large_cold_open),
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
        cmocka_unit_test(test_f16_conversion),
        cmocka_unit_test(test_storage_roundtrips),
        cmocka_unit_test(test_decode_arguments),
        cmocka_unit_test(test_storage_writer_errors),
        cmocka_unit_test(test_int8_scales),
        cmocka_unit_test(test_shared_sparse_size),
        cmocka_unit_test(test_handbuilt_kinds_ok),
        cmocka_unit_test(test_malformed_int8),
        cmocka_unit_test(test_act_scales_roundtrip),
        cmocka_unit_test(test_act_scales_writer_errors),
        cmocka_unit_test(test_malformed_act_scales),
        cmocka_unit_test(test_malformed_f16),
        cmocka_unit_test(test_malformed_sparse),
        cmocka_unit_test(test_head_field),
        cmocka_unit_test(test_format_1_0_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
