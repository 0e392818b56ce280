/* bundle.c: the posterior bundle file: the validating mmap reader and the
 * deterministic, atomic writer. docs/bundle-format.md is the specification
 * this file implements; methods/bundle_internal.h holds its numbers.
 *
 * Reader invariant: no byte of the file is interpreted before the checks
 * that make the interpretation safe have passed, in this order: length >=
 * header, magic, major version, header CRC, file_size == real length, table
 * bounds, table CRC, each entry's bounds/alignment, no overlaps, zero
 * padding, section CRCs, then the typed contents. Bounds are checked by
 * subtraction (size <= file_size - offset) so no sum can wrap. Memory safety
 * never depends on a CRC matching: the fuzz target runs with CRC failures
 * ignored to prove it. */
#include "methods/eb_bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"
#include "methods/bundle_internal.h"

/* Parameters are handed out as `const float *` straight from the map, so
 * the host float must be IEEE 754 binary32 (and little-endian: checked at
 * run time by host_is_little_endian). */
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24 && FLT_MAX_EXP == 128,
               "bundle parameters are IEEE 754 binary32");

#if defined(__GNUC__)
#define EB_PRINTF_(f, a) __attribute__((format(printf, f, a)))
#else
#define EB_PRINTF_(f, a)
#endif

/* ---- names and small helpers ------------------------------------------- */

const char *eb_repr_name(eb_repr_kind kind)
{
    switch (kind) {
    case EB_REPR_SAMPLES: return "samples";
    case EB_REPR_GAUSSIAN: return "gaussian";
    case EB_REPR_DROPOUT: return "dropout";
    case EB_REPR_DISTILLED: return "distilled";
    }
    return "unknown";
}

const char *eb_storage_name(eb_storage_kind kind)
{
    switch (kind) {
    case EB_STORE_F32: return "f32";
    case EB_STORE_F16: return "f16";
    case EB_STORE_INT8: return "int8";
    case EB_STORE_SHARED_SPARSE: return "shared-sparse";
    case EB_STORE_CSR: return "csr";
    }
    return "unknown";
}

const char *eb_head_name(eb_head_kind head)
{
    switch (head) {
    case EB_HEAD_NONE: return "none";
    case EB_HEAD_CATEGORICAL: return "categorical";
    case EB_HEAD_GPED: return "gped";
    case EB_HEAD_DIRICHLET: return "dirichlet";
    }
    return "unknown";
}

static const char *section_type_name(uint32_t type)
{
    switch (type) {
    case EB_SEC_META: return "META";
    case EB_SEC_ARCH: return "ARCH";
    case EB_SEC_POSTERIOR: return "POSTERIOR";
    case EB_SEC_PARAMS: return "PARAMS";
    case EB_SEC_MU: return "MU";
    case EB_SEC_SIGMA: return "SIGMA";
    case EB_SEC_SCALES: return "SCALES";
    case EB_SEC_INDEX: return "INDEX";
    case EB_SEC_HEAD: return "HEAD";
    case EB_SEC_GROUPS: return "GROUPS";
    case EB_SEC_ROWPTR: return "ROWPTR";
    case EB_SEC_ACTSCALES: return "ACTSCALES";
    }
    return "unknown";
}

static const char *dtype_name(uint32_t dtype)
{
    switch (dtype) {
    case EB_DTYPE_BYTES: return "bytes";
    case EB_DTYPE_F32: return "f32";
    case EB_DTYPE_F16: return "f16";
    case EB_DTYPE_I8: return "i8";
    case EB_DTYPE_U32: return "u32";
    case EB_DTYPE_U64: return "u64";
    }
    return "unknown";
}

static int host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Little-endian field access, byte by byte: independent of the host's
 * alignment rules, so a field may be read from any offset. */
static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t eb_bundle__crc32(uint32_t crc, const void *data, uint64_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = (uint32_t)crc32(crc, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return crc;
}

/* IEEE binary16 from binary32, round to nearest even, by integer
 * arithmetic (no dependence on the host's _Float16 or FPU mode). */
uint16_t eb_bundle__f32_to_f16(float v)
{
    uint32_t x, ax, sign, q, rem;
    memcpy(&x, &v, sizeof x);
    sign = (x >> 16) & 0x8000u;
    ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf stays inf; NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
    if (ax >= 0x477ff000u) /* >= 65520: rounds past 65504, the largest f16 */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: an f16 subnormal (or zero) */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift, half;
        if (ax <= 0x33000000u) /* <= 2^-25: half the smallest subnormal or less, ties to 0 */
            return (uint16_t)sign;
        /* value = m 2^(e-150); in units of 2^-24 that is m 2^(e-126) */
        shift = 126u - e; /* 14 .. 24 */
        q = m >> shift;
        rem = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++; /* may carry into the smallest normal: still the right bits */
        return (uint16_t)(sign | q);
    }
    ax -= 0x38000000u; /* rebias the exponent from 127 to 15 */
    q = ax >> 13;
    rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
        q++; /* a carry into the exponent is the correct next binade */
    return (uint16_t)(sign | q);
}

float eb_bundle__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    float f;
    if (e == 0) {
        f = (float)m * 0x1p-24f; /* subnormal (or zero): exact */
        memcpy(&x, &f, sizeof x);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    memcpy(&f, &x, sizeof f);
    return f;
}

/* a * b into *out; 1 if it does not fit in 64 bits. */
static int mul64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a)
        return 1;
    *out = a * b;
    return 0;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Offset of the first byte that is not part of well-formed UTF-8 (no
 * overlong forms, no surrogates, nothing above U+10FFFF), or n if all is. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i < len)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += len;
    }
    return n;
}

static int meta_key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* Copies up to 48 bytes of untrusted text into out for a message, escaping
 * anything that is not printable ASCII, so a hostile file cannot put
 * control characters into a terminal through an error message. */
static const char *quote(char out[256], const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
    }
    if (n > 48) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* ---- the reader --------------------------------------------------------- */

/* One section table entry, decoded. */
typedef struct bsec {
    uint32_t type, dtype, flags, crc;
    uint64_t offset, size;
} bsec;

typedef struct bmeta {
    const char *key, *value; /* into eb_bundle.meta_text */
} bmeta;

struct eb_bundle {
    char *name;                /* path or memory name (owned) */
    const unsigned char *data; /* the whole file: map or borrowed buffer */
    size_t len;
    void *map;                 /* non-NULL when eb_bundle_open mapped the file */
    size_t map_len;
    unsigned major, minor;
    uint32_t nsections;
    bsec *sections;            /* (nsections), table order */
    char *arch;                /* NUL-terminated copy of ARCH */
    char *meta_text;           /* copy of META with '=' and '\n' turned into NULs */
    size_t nmeta;
    bmeta *meta;               /* (nmeta), sorted by key */
    eb_repr_kind repr;
    eb_storage_kind storage;
    uint32_t members;
    uint64_t nparams;
    uint32_t rows;
    eb_head_kind head;         /* distilled: its head; else EB_HEAD_NONE */
    const float *params;       /* f32 storage: (rows, nparams), into data; gaussian: MU */
    const float *sigma;        /* f32 gaussian: SIGMA (nparams), into data; else NULL */
    int ntensors;              /* 1, or 2 for gaussian */
    eb_bundle_stored stored[2]; /* EB_TENSOR_PARAMS (or MU), EB_TENSOR_SIGMA; validated */
};

static eb_status bfail(const eb_bundle *b, eb_error *err, eb_status code, const char *fmt, ...)
    EB_PRINTF_(4, 5);

/* Every reader error reads "bundle '<name>': <what is wrong>". */
static eb_status bfail(const eb_bundle *b, eb_error *err, eb_status code, const char *fmt, ...)
{
    char what[EB_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return eb_error_set(err, code, "bundle '%s': %s", b->name, what);
}

/* "section 2 (ARCH)" or "section 5 (type 99)". */
static const char *slabel(char out[64], const bsec *s, size_t i)
{
    const char *n = section_type_name(s->type);
    if (strcmp(n, "unknown") == 0)
        snprintf(out, 64, "section %zu (type %" PRIu32 ")", i, s->type);
    else
        snprintf(out, 64, "section %zu (%s)", i, n);
    return out;
}

/* An occupied byte range of the file, for the overlap and padding checks. */
typedef struct brange {
    uint64_t start, end;
    long id; /* -2 header, -1 section table, else the entry index */
} brange;

static int range_cmp(const void *pa, const void *pb)
{
    const brange *a = pa, *b = pb;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static const char *range_label(char out[64], const eb_bundle *b, const brange *r)
{
    if (r->id == -2)
        return "the header";
    if (r->id == -1)
        return "the section table";
    return slabel(out, &b->sections[r->id], (size_t)r->id);
}

/* Header: magic, version, CRC, reserved bytes, file size, table placement
 * and table CRC. Sets *strict (file minor <= ours: reserved fields must be
 * zero and sizes exact) and *table_offset. */
static eb_status check_header(eb_bundle *b, unsigned flags, int *strict, uint64_t *table_offset,
                              eb_error *err)
{
    const unsigned char *h = b->data;
    unsigned char copy[EB_BUNDLE_HEADER_SIZE];
    uint32_t stored, actual, count;
    uint64_t file_size, toff, tsize;

    if (b->len < EB_BUNDLE_HEADER_SIZE)
        return bfail(b, err, EB_ERR_FORMAT,
                     "the file is %zu bytes, shorter than the %u-byte header (truncated?)", b->len,
                     EB_BUNDLE_HEADER_SIZE);
    if (memcmp(h, EB_BUNDLE_MAGIC, EB_BUNDLE_MAGIC_LEN) != 0) {
        if (h[0] == 0x89 && memcmp(h + 1, "EBB", 3) == 0)
            return bfail(b, err, EB_ERR_FORMAT,
                         "field 'magic' has the bundle signature but damaged line-end bytes "
                         "(was the file copied in text mode?)");
        return bfail(b, err, EB_ERR_FORMAT,
                     "field 'magic' does not hold the bundle signature \\x89EBB\\r\\n\\x1a\\n "
                     "(not an edgebayes bundle)");
    }
    b->major = rd16(h + EB_BH_MAJOR);
    b->minor = rd16(h + EB_BH_MINOR);
    if (b->major != EB_BUNDLE_FORMAT_MAJOR)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "field 'format_major' is %u; this reader implements major version %d only",
                     b->major, EB_BUNDLE_FORMAT_MAJOR);
    memcpy(copy, h, sizeof copy);
    memset(copy + EB_BH_HEADER_CRC, 0, 4);
    stored = rd32(h + EB_BH_HEADER_CRC);
    actual = eb_bundle__crc32(0, copy, sizeof copy);
    if (stored != actual && !(flags & EB_BUNDLE__IGNORE_CRC))
        return bfail(b, err, EB_ERR_CHECKSUM,
                     "field 'header_crc' is 0x%08" PRIx32 " but the header's CRC-32 is 0x%08" PRIx32
                     " (the header is corrupted)", stored, actual);
    *strict = b->minor <= EB_BUNDLE_FORMAT_MINOR;
    if (*strict && !all_zero(h + EB_BH_RESERVED, EB_BUNDLE_HEADER_SIZE - EB_BH_RESERVED))
        return bfail(b, err, EB_ERR_FORMAT,
                     "field 'reserved' of the header (bytes 40..63) is not zero");
    file_size = rd64(h + EB_BH_FILE_SIZE);
    if (file_size != (uint64_t)b->len)
        return bfail(b, err, EB_ERR_FORMAT,
                     "field 'file_size' says %" PRIu64 " bytes but the file has %zu (%s)",
                     file_size, b->len, file_size > b->len ? "truncated" : "trailing data");
    count = rd32(h + EB_BH_SECTION_COUNT);
    if (count == 0 || count > EB_BUNDLE_MAX_SECTIONS)
        return bfail(b, err, EB_ERR_FORMAT, "field 'section_count' is %" PRIu32
                     "; it must be between 1 and %u", count, EB_BUNDLE_MAX_SECTIONS);
    toff = rd64(h + EB_BH_TABLE_OFFSET);
    if (toff < EB_BUNDLE_HEADER_SIZE || toff % EB_BUNDLE_ALIGN != 0)
        return bfail(b, err, EB_ERR_FORMAT,
                     "field 'table_offset' is %" PRIu64 "; it must be a multiple of %u at or "
                     "after the header", toff, EB_BUNDLE_ALIGN);
    tsize = (uint64_t)count * EB_BUNDLE_ENTRY_SIZE; /* count <= 1024: no overflow */
    if (toff > file_size || tsize > file_size - toff)
        return bfail(b, err, EB_ERR_FORMAT,
                     "the section table (%" PRIu32 " entries by field 'section_count', at "
                     "field 'table_offset' %" PRIu64 ") runs past the end of the %" PRIu64
                     "-byte file",
                     count, toff, file_size);
    stored = rd32(h + EB_BH_TABLE_CRC);
    actual = eb_bundle__crc32(0, h + toff, tsize);
    if (stored != actual && !(flags & EB_BUNDLE__IGNORE_CRC))
        return bfail(b, err, EB_ERR_CHECKSUM,
                     "field 'table_crc' is 0x%08" PRIx32 " but the section table's CRC-32 is "
                     "0x%08" PRIx32 " (the table is corrupted)", stored, actual);
    b->nsections = count;
    *table_offset = toff;
    return EB_OK;
}

/* Decodes the table; checks each entry's own fields and bounds. */
static eb_status check_entries(eb_bundle *b, int strict, uint64_t toff, eb_error *err)
{
    char lab[64];
    b->sections = eb_calloc(b->nsections, sizeof *b->sections);
    if (!b->sections)
        return bfail(b, err, EB_ERR_NOMEM, "out of memory for %" PRIu32 " section entries",
                     b->nsections);
    for (uint32_t i = 0; i < b->nsections; i++) {
        const unsigned char *e = b->data + toff + (uint64_t)i * EB_BUNDLE_ENTRY_SIZE;
        bsec *s = &b->sections[i];
        s->type = rd32(e + EB_BE_TYPE);
        s->dtype = rd32(e + EB_BE_DTYPE);
        s->offset = rd64(e + EB_BE_OFFSET);
        s->size = rd64(e + EB_BE_SIZE);
        s->crc = rd32(e + EB_BE_CRC);
        s->flags = rd32(e + EB_BE_FLAGS);
        slabel(lab, s, i);
        if (s->type == 0)
            return bfail(b, err, EB_ERR_FORMAT, "%s: field 'type' is 0, which is never valid",
                         lab);
        if (strict && (s->flags & ~EB_BUNDLE_FLAGS_KNOWN))
            return bfail(b, err, EB_ERR_FORMAT,
                         "%s: field 'flags' has unknown bits 0x%08" PRIx32 " set", lab,
                         s->flags & ~EB_BUNDLE_FLAGS_KNOWN);
        if (s->offset % EB_BUNDLE_ALIGN != 0)
            return bfail(b, err, EB_ERR_FORMAT,
                         "%s: field 'offset' is %" PRIu64 ", not a multiple of %u", lab,
                         s->offset, EB_BUNDLE_ALIGN);
        if (s->offset > b->len || s->size > b->len - s->offset)
            return bfail(b, err, EB_ERR_FORMAT,
                         "%s: fields 'offset' %" PRIu64 " and 'size' %" PRIu64
                         " reach past the end of the %zu-byte file", lab, s->offset, s->size,
                         b->len);
    }
    return EB_OK;
}

/* No two of header, table and sections share a byte, and every byte that
 * none of them owns (alignment padding, trailing bytes) is zero, so each
 * byte of a valid file is covered by a CRC or known to be zero. */
static eb_status check_layout(eb_bundle *b, uint64_t toff, eb_error *err)
{
    size_t n = (size_t)b->nsections + 2;
    brange *r = eb_malloc(n * sizeof *r);
    uint64_t covered = 0;
    long owner = -2;
    eb_status st = EB_OK;
    char la[64], lb[64];

    if (!r)
        return bfail(b, err, EB_ERR_NOMEM, "out of memory checking the section layout");
    r[0] = (brange){0, EB_BUNDLE_HEADER_SIZE, -2};
    r[1] = (brange){toff, toff + (uint64_t)b->nsections * EB_BUNDLE_ENTRY_SIZE, -1};
    for (uint32_t i = 0; i < b->nsections; i++)
        r[i + 2] = (brange){b->sections[i].offset, b->sections[i].offset + b->sections[i].size,
                            (long)i};
    qsort(r, n, sizeof *r, range_cmp);
    for (size_t i = 0; i < n && !st; i++) {
        if (r[i].start < covered) {
            /* Find the range it runs into, for the message. */
            const brange *prev = NULL;
            for (size_t j = 0; j < i; j++)
                if (r[j].end > r[i].start && r[j].start <= r[i].start)
                    prev = &r[j];
            st = bfail(b, err, EB_ERR_FORMAT,
                       "%s at bytes [%" PRIu64 ", %" PRIu64 ") overlaps %s at [%" PRIu64
                       ", %" PRIu64 ")", range_label(la, b, &r[i]), r[i].start, r[i].end,
                       prev ? range_label(lb, b, prev) : "another region",
                       prev ? prev->start : 0, prev ? prev->end : covered);
            break;
        }
        for (uint64_t k = covered; k < r[i].start; k++)
            if (b->data[k]) {
                st = bfail(b, err, EB_ERR_FORMAT,
                           "byte %" PRIu64 " (padding between %s and %s) is not zero", k,
                           owner == -2 ? "the header"
                                       : owner == -1 ? "the section table"
                                                     : slabel(la, &b->sections[owner],
                                                              (size_t)owner),
                           range_label(lb, b, &r[i]));
                break;
            }
        if (r[i].end > covered) {
            covered = r[i].end;
            owner = r[i].id;
        }
    }
    for (uint64_t k = covered; !st && k < b->len; k++)
        if (b->data[k])
            st = bfail(b, err, EB_ERR_FORMAT,
                       "byte %" PRIu64 " (padding after the last section) is not zero", k);
    eb_free(r);
    return st;
}

/* Sections of type 16 and up hold tensors; EB_BUNDLE_SKIP_TENSOR_CHECK skips
 * their CRC (and the finiteness scan). */
static int is_tensor_type(uint32_t type)
{
    return type >= EB_SEC_PARAMS && type < 0x80000000u;
}

static eb_status check_crcs(eb_bundle *b, unsigned flags, eb_error *err)
{
    char lab[64];
    if (flags & EB_BUNDLE__IGNORE_CRC)
        return EB_OK;
    for (uint32_t i = 0; i < b->nsections; i++) {
        const bsec *s = &b->sections[i];
        uint32_t actual;
        if ((flags & EB_BUNDLE_SKIP_TENSOR_CHECK) && is_tensor_type(s->type))
            continue;
        actual = eb_bundle__crc32(0, b->data + s->offset, s->size);
        if (actual != s->crc)
            return bfail(b, err, EB_ERR_CHECKSUM,
                         "%s: field 'crc' is 0x%08" PRIx32 " but the payload's CRC-32 is "
                         "0x%08" PRIx32 " (the section is corrupted)", slabel(lab, s, i),
                         s->crc, actual);
    }
    return EB_OK;
}

/* META: lines "key=value\n", keys [a-z0-9_.]{1,64} strictly increasing
 * (bytewise), values UTF-8 without NUL or CR. Parsed into a private copy so
 * the strings can be NUL-terminated. */
static eb_status parse_meta(eb_bundle *b, const bsec *s, eb_error *err)
{
    const char *src = (const char *)b->data + s->offset;
    size_t n = (size_t)s->size, lines = 0, line = 0, pos = 0;
    char q1[256], q2[256];

    if (s->size > EB_BUNDLE_META_MAX)
        return bfail(b, err, EB_ERR_FORMAT, "section META is %" PRIu64
                     " bytes, above the limit of %u", s->size, EB_BUNDLE_META_MAX);
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\0')
            return bfail(b, err, EB_ERR_FORMAT, "section META has a NUL byte at offset %zu", i);
        if (src[i] == '\n')
            lines++;
    }
    if (n > 0 && src[n - 1] != '\n')
        return bfail(b, err, EB_ERR_FORMAT,
                     "section META does not end with a newline (its last line is cut off)");
    b->meta_text = eb_malloc(n + 1);
    b->meta = eb_calloc(lines ? lines : 1, sizeof *b->meta);
    if (!b->meta_text || !b->meta)
        return bfail(b, err, EB_ERR_NOMEM, "out of memory for %zu metadata entries", lines);
    memcpy(b->meta_text, src, n);
    b->meta_text[n] = '\0';
    while (pos < n) {
        char *start = b->meta_text + pos;
        char *nl = memchr(start, '\n', n - pos); /* exists: text ends with '\n' */
        char *eq = memchr(start, '=', (size_t)(nl - start));
        size_t klen, vlen, bad;
        line++;
        if (!eq)
            return bfail(b, err, EB_ERR_FORMAT, "section META line %zu ('%s') has no '='", line,
                         quote(q1, start, (size_t)(nl - start)));
        klen = (size_t)(eq - start);
        vlen = (size_t)(nl - eq - 1);
        if (klen == 0 || klen > EB_BUNDLE_META_KEY_MAX)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section META line %zu: the key is %zu characters; it must be 1..%u",
                         line, klen, EB_BUNDLE_META_KEY_MAX);
        for (size_t k = 0; k < klen; k++)
            if (!meta_key_char((unsigned char)start[k]))
                return bfail(b, err, EB_ERR_FORMAT,
                             "section META line %zu: key '%s' has a character outside [a-z0-9_.]",
                             line, quote(q1, start, klen));
        if (memchr(eq + 1, '\r', vlen))
            return bfail(b, err, EB_ERR_FORMAT,
                         "section META line %zu: the value of key '%s' contains a carriage return",
                         line, quote(q1, start, klen));
        bad = utf8_invalid_at((const unsigned char *)eq + 1, vlen);
        if (bad != vlen)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section META line %zu: the value of key '%s' is not valid UTF-8 "
                         "(byte %zu)", line, quote(q1, start, klen), bad);
        *eq = '\0';
        *nl = '\0';
        if (b->nmeta > 0) {
            int c = strcmp(b->meta[b->nmeta - 1].key, start);
            if (c == 0)
                return bfail(b, err, EB_ERR_FORMAT, "section META line %zu: duplicate key '%s'",
                             line, quote(q1, start, klen));
            if (c > 0)
                return bfail(b, err, EB_ERR_FORMAT,
                             "section META line %zu: key '%s' comes after '%s' (keys must be "
                             "sorted bytewise)", line, quote(q1, start, klen),
                             quote(q2, b->meta[b->nmeta - 1].key,
                                   strlen(b->meta[b->nmeta - 1].key)));
        }
        b->meta[b->nmeta].key = start;
        b->meta[b->nmeta].value = eq + 1;
        b->nmeta++;
        pos = (size_t)(nl - b->meta_text) + 1;
    }
    return EB_OK;
}

static eb_status parse_arch(eb_bundle *b, const bsec *s, eb_error *err)
{
    const unsigned char *src = b->data + s->offset;
    size_t n = (size_t)s->size, bad;

    if (n == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section ARCH is empty");
    if (s->size > EB_BUNDLE_ARCH_MAX)
        return bfail(b, err, EB_ERR_FORMAT, "section ARCH is %" PRIu64
                     " bytes, above the limit of %u", s->size, EB_BUNDLE_ARCH_MAX);
    if (memchr(src, '\0', n))
        return bfail(b, err, EB_ERR_FORMAT, "section ARCH has a NUL byte at offset %zu",
                     (size_t)((const unsigned char *)memchr(src, '\0', n) - src));
    bad = utf8_invalid_at(src, n);
    if (bad != n)
        return bfail(b, err, EB_ERR_FORMAT, "section ARCH is not valid UTF-8 (byte %zu)", bad);
    b->arch = eb_malloc(n + 1);
    if (!b->arch)
        return bfail(b, err, EB_ERR_NOMEM, "out of memory copying the %zu-byte ARCH section", n);
    memcpy(b->arch, src, n);
    b->arch[n] = '\0';
    return EB_OK;
}

/* POSTERIOR: representation, storage, head, S and K. Checked before
 * anything else about the sections, so a bundle of a representation or
 * storage kind this reader lacks is reported as such, not through one of
 * its sections. */
static eb_status parse_posterior(eb_bundle *b, const bsec *s, int strict, eb_error *err)
{
    const unsigned char *p = b->data + s->offset;
    uint32_t kind, storage, head;

    if (s->size < EB_BUNDLE_POSTERIOR_SIZE || (strict && s->size != EB_BUNDLE_POSTERIOR_SIZE))
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR is %" PRIu64 " bytes; format %u.%u defines %u", s->size,
                     b->major, b->minor, EB_BUNDLE_POSTERIOR_SIZE);
    kind = rd32(p + EB_BP_KIND);
    storage = rd32(p + EB_BP_STORAGE);
    head = rd32(p + EB_BP_HEAD);
    if (kind == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'kind' is 0");
    if (kind != EB_REPR_SAMPLES && kind != EB_REPR_DROPOUT && kind != EB_REPR_GAUSSIAN &&
        kind != EB_REPR_DISTILLED)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "section POSTERIOR: field 'kind' is %" PRIu32 " (%s), a representation "
                     "this reader does not implement", kind, eb_repr_name((eb_repr_kind)kind));
    if (storage == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'storage' is 0");
    if (storage < EB_STORE_F32 || storage > EB_STORE_CSR)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "section POSTERIOR: field 'storage' is %" PRIu32 " (%s), a storage kind "
                     "this reader does not implement", storage,
                     eb_storage_name((eb_storage_kind)storage));
    if (kind == EB_REPR_DISTILLED && (head < EB_HEAD_CATEGORICAL || head > EB_HEAD_DIRICHLET))
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR: field 'head' is %" PRIu32 " (%s); a distilled bundle "
                     "needs 1 (categorical), 2 (gped) or 3 (dirichlet)", head,
                     eb_head_name((eb_head_kind)head));
    if (kind != EB_REPR_DISTILLED && head != EB_HEAD_NONE)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR: field 'head' is %" PRIu32 " but only a distilled "
                     "bundle has a head (this one is %s); it must be 0", head,
                     eb_repr_name((eb_repr_kind)kind));
    if (strict && !all_zero(p + EB_BP_RESERVED, EB_BUNDLE_POSTERIOR_SIZE - EB_BP_RESERVED))
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR: field 'reserved' (bytes 24..31) is not zero");
    b->repr = (eb_repr_kind)kind;
    b->storage = (eb_storage_kind)storage;
    b->head = (eb_head_kind)head;
    b->members = rd32(p + EB_BP_MEMBERS);
    b->nparams = rd64(p + EB_BP_NPARAMS);
    if (b->members == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'members' (S) is 0");
    if (b->nparams == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'nparams' (K) is 0");
    b->rows = b->repr == EB_REPR_SAMPLES ? b->members : 1;
    b->ntensors = b->repr == EB_REPR_GAUSSIAN ? 2 : 1;
    if (b->nparams > UINT64_MAX / sizeof(float) / b->rows)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR: %" PRIu32 " x %" PRIu64 " x 4 bytes of parameters "
                     "overflows 64 bits", b->rows, b->nparams);
    return EB_OK;
}

/* The sections a bundle may hold, by role (check_sections fills them). */
typedef struct bsecs {
    const bsec *meta, *arch, *post, *params, *mu, *sigma, *scales, *index, *groups, *rowptr;
    const bsec *act;
} bsecs;

/* The dtype a section must have; name for messages. */
static eb_status need_dtype(eb_bundle *b, const bsec *sec, const char *name, uint32_t dtype,
                            eb_error *err)
{
    if (sec->dtype != dtype)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section %s: field 'dtype' is %" PRIu32 " (%s); storage %s needs %" PRIu32
                     " (%s)", name, sec->dtype, dtype_name(sec->dtype),
                     eb_storage_name(b->storage), dtype, dtype_name(dtype));
    return EB_OK;
}

/* An auxiliary section of the storage kind: required by `owner` storage
 * kinds, refused by the others (a file is never read as something it is
 * not). present: whether this storage uses it. */
static eb_status aux_presence(eb_bundle *b, const bsec *sec, const char *name, int used,
                              const char *owners, eb_error *err)
{
    if (used && !sec)
        return bfail(b, err, EB_ERR_FORMAT,
                     "storage '%s' needs a %s section and the file has none",
                     eb_storage_name(b->storage), name);
    if (!used && sec)
        return bfail(b, err, EB_ERR_FORMAT, "section %s belongs to storage %s, not '%s'", name,
                     owners, eb_storage_name(b->storage));
    return EB_OK;
}

/* INT8: GROUPS u64 (G + 1): 0 = g[0] < g[1] < ... < g[G] = K. */
static eb_status check_groups(eb_bundle *b, const bsec *sec, uint64_t *n_groups, eb_error *err)
{
    const unsigned char *p = b->data + sec->offset;
    uint64_t n, prev;
    eb_status st = need_dtype(b, sec, "GROUPS", EB_DTYPE_U64, err);
    if (st)
        return st;
    if (sec->size % 8 != 0 || sec->size < 16)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section GROUPS is %" PRIu64 " bytes; it must hold at least 2 u64 "
                     "offsets (8 bytes each)", sec->size);
    n = sec->size / 8;
    prev = rd64(p);
    if (prev != 0)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section GROUPS: offset [0] is %" PRIu64 "; it must be 0", prev);
    for (uint64_t i = 1; i < n; i++) {
        uint64_t g = rd64(p + 8 * i);
        if (g <= prev)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section GROUPS: offset [%" PRIu64 "] is %" PRIu64 ", not above "
                         "offset [%" PRIu64 "] %" PRIu64 " (offsets must increase)", i, g,
                         i - 1, prev);
        prev = g;
    }
    if (prev != b->nparams)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section GROUPS: the last offset [%" PRIu64 "] is %" PRIu64
                     "; it must be K = %" PRIu64, n - 1, prev, b->nparams);
    *n_groups = n - 1;
    return EB_OK;
}

/* INT8: SCALES f32 (tensors x rows, G), each finite and >= 0. */
static eb_status check_scales(eb_bundle *b, const bsec *sec, uint64_t n_groups, unsigned flags,
                              eb_error *err)
{
    uint64_t count, need;
    const float *v = (const float *)(const void *)(b->data + sec->offset);
    eb_status st = need_dtype(b, sec, "SCALES", EB_DTYPE_F32, err);
    if (st)
        return st;
    if (mul64((uint64_t)b->ntensors * b->rows, n_groups, &count) || mul64(count, 4, &need))
        return bfail(b, err, EB_ERR_FORMAT, "section SCALES: %d x %" PRIu32 " x %" PRIu64
                     " scales overflow 64 bits", b->ntensors, b->rows, n_groups);
    if (sec->size != need)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section SCALES is %" PRIu64 " bytes but %s needs %d x %" PRIu32
                     " x %" PRIu64 " groups x 4 = %" PRIu64, sec->size, eb_repr_name(b->repr),
                     b->ntensors, b->rows, n_groups, need);
    if (!(flags & EB_BUNDLE_SKIP_TENSOR_CHECK))
        for (uint64_t i = 0; i < count; i++)
            if (!isfinite(v[i]) || v[i] < 0.0f)
                return bfail(b, err, isfinite(v[i]) ? EB_ERR_FORMAT : EB_ERR_NUMERIC,
                             "section SCALES: scale [%" PRIu64 "][%" PRIu64 "] is %g; scales "
                             "must be finite and not negative", i / n_groups, i % n_groups,
                             (double)v[i]);
    return EB_OK;
}

/* Largest count of activation scales per row the reader takes: far above
 * any architecture's weighted layers (methods/nn: EB_ARCH_MAX_LAYERS). */
#define ACT_MAX_PER_ROW 1024u

/* ACTSCALES (1.2) f32 (rows, L): only for int8 samples and distilled
 * (whose int8 values the quantized kernels run; gaussian and dropout are
 * predicted from decoded f32), a whole number L >= 1 of scales per row,
 * each finite and > 0. The values are scanned whatever the flags: the
 * section is small and a zero or negative scale would silently zero a
 * layer. */
static eb_status check_act_scales(eb_bundle *b, const bsec *sec, uint64_t *n_act, eb_error *err)
{
    const float *v = (const float *)(const void *)(b->data + sec->offset);
    uint64_t per_row, count;
    eb_status st;
    if (b->storage != EB_STORE_INT8)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section ACTSCALES belongs to storage 'int8', not '%s'",
                     eb_storage_name(b->storage));
    if (b->repr != EB_REPR_SAMPLES && b->repr != EB_REPR_DISTILLED)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section ACTSCALES belongs to representations 'samples' and 'distilled' "
                     "(whose int8 values run in place), not '%s'", eb_repr_name(b->repr));
    if ((st = need_dtype(b, sec, "ACTSCALES", EB_DTYPE_F32, err)))
        return st;
    per_row = (uint64_t)b->rows * 4;
    if (sec->size == 0 || sec->size % per_row != 0 || sec->size / per_row > ACT_MAX_PER_ROW)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section ACTSCALES is %" PRIu64 " bytes; %s needs %" PRIu32
                     " rows x L scales x 4 with 1 <= L <= %u", sec->size,
                     eb_repr_name(b->repr), b->rows, ACT_MAX_PER_ROW);
    *n_act = sec->size / per_row;
    count = sec->size / 4;
    for (uint64_t i = 0; i < count; i++)
        if (!(v[i] > 0.0f) || !isfinite(v[i]))
            return bfail(b, err, isfinite(v[i]) ? EB_ERR_FORMAT : EB_ERR_NUMERIC,
                         "section ACTSCALES: scale [%" PRIu64 "][%" PRIu64 "] is %g; activation "
                         "scales must be finite and > 0", i / *n_act, i % *n_act, (double)v[i]);
    return EB_OK;
}

/* INDEX u32: SHARED_SPARSE: N indices, strictly increasing, < K. CSR:
 * strictly increasing within each row of ROWPTR (checked first), < K.
 * These checks are what make decoding memory-safe, so they run even with
 * EB_BUNDLE_SKIP_TENSOR_CHECK. */
static eb_status check_index(eb_bundle *b, const bsec *sec, const uint64_t *rowptr,
                             uint64_t *n_index, eb_error *err)
{
    const uint32_t *ix = (const uint32_t *)(const void *)(b->data + sec->offset);
    uint32_t nrows = b->storage == EB_STORE_CSR ? b->rows : 1;
    uint64_t n;
    eb_status st = need_dtype(b, sec, "INDEX", EB_DTYPE_U32, err);
    if (st)
        return st;
    if (sec->size % 4 != 0)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section INDEX is %" PRIu64 " bytes, not a whole number of u32 indices",
                     sec->size);
    n = sec->size / 4;
    if (rowptr && rowptr[b->rows] != n)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section ROWPTR: the last offset [%" PRIu32 "] is %" PRIu64 " but section "
                     "INDEX holds %" PRIu64 " indices (nnz)", b->rows, rowptr[b->rows], n);
    for (uint32_t r = 0; r < nrows; r++) {
        uint64_t lo = rowptr ? rowptr[r] : 0, hi = rowptr ? rowptr[r + 1] : n;
        for (uint64_t j = lo; j < hi; j++) {
            if (ix[j] >= b->nparams)
                return bfail(b, err, EB_ERR_FORMAT,
                             "section INDEX: index [%" PRIu64 "] is %" PRIu32 ", not below K = %"
                             PRIu64, j, ix[j], b->nparams);
            if (j > lo && ix[j] <= ix[j - 1])
                return bfail(b, err, EB_ERR_FORMAT,
                             "section INDEX: index [%" PRIu64 "] is %" PRIu32 ", not above index "
                             "[%" PRIu64 "] %" PRIu32 " (indices must increase%s)", j, ix[j],
                             j - 1, ix[j - 1], rowptr ? " within a row" : "");
        }
    }
    *n_index = n;
    return EB_OK;
}

/* CSR: ROWPTR u64 (rows + 1): 0 = r[0] <= r[1] <= ... ; its end is checked
 * against INDEX in check_index. */
static eb_status check_rowptr(eb_bundle *b, const bsec *sec, const uint64_t **out, eb_error *err)
{
    const uint64_t *rp = (const uint64_t *)(const void *)(b->data + sec->offset);
    uint64_t need = ((uint64_t)b->rows + 1) * 8;
    eb_status st = need_dtype(b, sec, "ROWPTR", EB_DTYPE_U64, err);
    if (st)
        return st;
    if (sec->size != need)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section ROWPTR is %" PRIu64 " bytes but %s needs (%" PRIu32
                     " rows + 1) x 8 = %" PRIu64, sec->size, eb_repr_name(b->repr), b->rows,
                     need);
    if (rp[0] != 0)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section ROWPTR: offset [0] is %" PRIu64 "; it must be 0", rp[0]);
    for (uint32_t r = 1; r <= b->rows; r++)
        if (rp[r] < rp[r - 1] || rp[r] - rp[r - 1] > b->nparams)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section ROWPTR: offset [%" PRIu32 "] is %" PRIu64 " after offset [%"
                         PRIu32 "] %" PRIu64 " (offsets must not decrease, and a row holds at "
                         "most K = %" PRIu64 ")", r, rp[r], r - 1, rp[r - 1], b->nparams);
    *out = rp;
    return EB_OK;
}

/* One value tensor (PARAMS, MU or SIGMA) in the bundle's storage: dtype,
 * exact size (parse_posterior proved rows x K x 4 fits; N and nnz are
 * below that), then unless skipped every value finite (f32, f16), no int8
 * -128, SIGMA not negative. Fills the stored view's values. */
static eb_status bind_tensor(eb_bundle *b, const bsec *sec, const char *name, int t,
                             unsigned flags, eb_error *err)
{
    eb_bundle_stored *sv = &b->stored[t];
    const uint32_t rows = sv->rows;
    const int nonneg = t == EB_TENSOR_SIGMA;
    uint32_t dtype = EB_DTYPE_F32, esize = 4;
    uint64_t count, need;
    const unsigned char *data;
    eb_status st;

    if (!sec)
        return bfail(b, err, EB_ERR_FORMAT,
                     "representation '%s' needs a %s section and the file has none",
                     eb_repr_name(b->repr), name);
    if (b->storage == EB_STORE_F16)
        dtype = EB_DTYPE_F16, esize = 2;
    else if (b->storage == EB_STORE_INT8)
        dtype = EB_DTYPE_I8, esize = 1;
    if ((st = need_dtype(b, sec, name, dtype, err)))
        return st;
    if (b->storage == EB_STORE_SHARED_SPARSE)
        count = (uint64_t)rows * sv->n_index;
    else if (b->storage == EB_STORE_CSR)
        count = sv->n_index;
    else
        count = (uint64_t)rows * b->nparams;
    need = count * esize;
    if (sec->size != need) {
        if (b->storage == EB_STORE_SHARED_SPARSE)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section %s is %" PRIu64 " bytes but %s with N = %" PRIu64 " kept "
                         "indices needs %" PRIu32 " x %" PRIu64 " x 4 = %" PRIu64 " (storage "
                         "shared-sparse)", name, sec->size, eb_repr_name(b->repr), sv->n_index,
                         rows, sv->n_index, need);
        if (b->storage == EB_STORE_CSR)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section %s is %" PRIu64 " bytes but %s with nnz = %" PRIu64
                         " (section INDEX) needs %" PRIu64 " x 4 = %" PRIu64 " (storage csr)",
                         name, sec->size, eb_repr_name(b->repr), sv->n_index, sv->n_index, need);
        return bfail(b, err, EB_ERR_FORMAT,
                     "section %s is %" PRIu64 " bytes but %s needs %" PRIu32 " x %" PRIu64
                     " x %" PRIu32 " = %" PRIu64 "%s%s", name, sec->size, eb_repr_name(b->repr),
                     rows, b->nparams, esize, need,
                     b->storage == EB_STORE_F32 ? "" : " (storage ",
                     b->storage == EB_STORE_F32 ? "" : b->storage == EB_STORE_F16 ? "f16)"
                                                                                  : "int8)");
    }
    /* data is 64-aligned (mmap, or checked by open_memory) and the offset is
     * a multiple of 64, so the values are an aligned array of their type. */
    data = b->data + sec->offset;
    sv->values = data;
    if (flags & EB_BUNDLE_SKIP_TENSOR_CHECK)
        return EB_OK;
    /* f32 values (the common case, tens of millions of them): one
     * vectorised pass over the exponent bits; only a failure takes the
     * loop below, which names the value. (Not split over threads: an
     * OpenMP team started during a load made every later prediction of
     * the CPU device's strategies several times slower on this machine.) */
    if (b->storage == EB_STORE_F32 || b->storage == EB_STORE_SHARED_SPARSE ||
        b->storage == EB_STORE_CSR) {
        const uint32_t *u = (const uint32_t *)(const void *)data;
        uint32_t bad = 0;
        for (uint64_t i = 0; i < count; i++)
            bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u) |
                   (uint32_t)(nonneg && (u[i] >> 31) && (u[i] & 0x7fffffffu));
        if (!bad)
            return EB_OK;
    }
    for (uint64_t i = 0; i < count; i++) {
        float v;
        if (b->storage == EB_STORE_INT8) {
            const int8_t q = ((const int8_t *)(const void *)data)[i];
            uint64_t r = i / b->nparams, k = i % b->nparams, g = 0, lo = 0, hi = sv->n_groups;
            if (q == -128)
                return bfail(b, err, EB_ERR_FORMAT,
                             "section %s: value [%" PRIu64 "][%" PRIu64 "] is -128; int8 values "
                             "are symmetric, -127..127", name, r, k);
            if (!nonneg || q >= 0)
                continue;
            while (lo < hi) { /* the group of k: groups[g] <= k < groups[g + 1] */
                uint64_t mid = lo + (hi - lo) / 2;
                if (sv->groups[mid + 1] <= k)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            g = lo;
            v = (float)q * sv->scales[r * sv->n_groups + g];
        } else if (b->storage == EB_STORE_F16) {
            v = eb_bundle__f16_to_f32(((const uint16_t *)(const void *)data)[i]);
        } else {
            v = ((const float *)(const void *)data)[i];
        }
        if (!isfinite(v)) {
            /* (row, column) of the stored array; CSR values are one run */
            const uint64_t cols = b->storage == EB_STORE_CSR ? count : count / rows;
            return bfail(b, err, EB_ERR_NUMERIC,
                         "section %s: value [%" PRIu64 "][%" PRIu64 "] is %s; parameters must "
                         "be finite", name, i / cols, i % cols, isnan(v) ? "NaN" : "infinite");
        }
        if (nonneg && v < 0.0f)
            return bfail(b, err, EB_ERR_NUMERIC,
                         "section %s: value [%" PRIu64 "] is %g; standard deviations must not be "
                         "negative", name, i, (double)v);
    }
    return EB_OK;
}

/* The representation's tensors (PARAMS for samples, dropout and
 * distilled, MU and SIGMA for gaussian) and the storage kind's auxiliary
 * sections (int8: GROUPS, SCALES; shared-sparse: INDEX; csr: ROWPTR,
 * INDEX). A section of another representation or storage kind is refused
 * rather than ignored, so a file is never read as something it is not. */
static eb_status bind_params(eb_bundle *b, const bsecs *x, unsigned flags, eb_error *err)
{
    const eb_storage_kind sk = b->storage;
    const float *scales = NULL;
    const uint64_t *groups = NULL, *rowptr = NULL;
    const uint32_t *index = NULL;
    uint64_t n_groups = 0, n_index = 0, n_act = 0;
    eb_status st;

    if (b->repr != EB_REPR_GAUSSIAN && (x->mu || x->sigma))
        return bfail(b, err, EB_ERR_FORMAT,
                     "section %s belongs to representation 'gaussian', not '%s'",
                     x->mu ? "MU" : "SIGMA", eb_repr_name(b->repr));
    if (b->repr == EB_REPR_GAUSSIAN && x->params)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section PARAMS does not belong to representation 'gaussian' (it has MU "
                     "and SIGMA)");
    if ((st = aux_presence(b, x->groups, "GROUPS", sk == EB_STORE_INT8, "'int8'", err)) ||
        (st = aux_presence(b, x->scales, "SCALES", sk == EB_STORE_INT8, "'int8'", err)) ||
        (st = aux_presence(b, x->index, "INDEX",
                           sk == EB_STORE_SHARED_SPARSE || sk == EB_STORE_CSR,
                           "'shared-sparse' or 'csr'", err)) ||
        (st = aux_presence(b, x->rowptr, "ROWPTR", sk == EB_STORE_CSR, "'csr'", err)))
        return st;
    if (sk == EB_STORE_INT8) {
        if ((st = check_groups(b, x->groups, &n_groups, err)) ||
            (st = check_scales(b, x->scales, n_groups, flags, err)))
            return st;
        groups = (const uint64_t *)(const void *)(b->data + x->groups->offset);
        scales = (const float *)(const void *)(b->data + x->scales->offset);
    }
    if (sk == EB_STORE_CSR && (st = check_rowptr(b, x->rowptr, &rowptr, err)))
        return st;
    if (x->index) {
        if ((st = check_index(b, x->index, rowptr, &n_index, err)))
            return st;
        index = (const uint32_t *)(const void *)(b->data + x->index->offset);
    }
    if (x->act && (st = check_act_scales(b, x->act, &n_act, err)))
        return st;
    for (int t = 0; t < b->ntensors; t++) {
        eb_bundle_stored *sv = &b->stored[t];
        sv->kind = sk;
        sv->rows = b->rows;
        sv->k = b->nparams;
        if (sk == EB_STORE_INT8) {
            sv->scales = scales + (uint64_t)t * b->rows * n_groups;
            sv->groups = groups;
            sv->n_groups = n_groups;
        }
        sv->index = index;
        sv->n_index = n_index;
        sv->rowptr = rowptr;
    }
    if (x->act) {
        b->stored[EB_TENSOR_PARAMS].act_scales =
            (const float *)(const void *)(b->data + x->act->offset);
        b->stored[EB_TENSOR_PARAMS].n_act = n_act;
    }
    if (b->repr == EB_REPR_GAUSSIAN) {
        st = bind_tensor(b, x->mu, "MU", EB_TENSOR_PARAMS, flags, err);
        if (!st)
            st = bind_tensor(b, x->sigma, "SIGMA", EB_TENSOR_SIGMA, flags, err);
    } else {
        st = bind_tensor(b, x->params, "PARAMS", EB_TENSOR_PARAMS, flags, err);
    }
    if (st)
        return st;
    if (sk == EB_STORE_F32) {
        b->params = b->stored[EB_TENSOR_PARAMS].values;
        if (b->repr == EB_REPR_GAUSSIAN)
            b->sigma = b->stored[EB_TENSOR_SIGMA].values;
    }
    return EB_OK;
}

/* Known sections: at most one each, right dtype; unknown ones: refused if
 * required, skipped otherwise. Then the typed contents. */
static eb_status check_sections(eb_bundle *b, int strict, unsigned flags, eb_error *err)
{
    bsecs x;
    size_t first[11] = {0};
    long unknown_required = -1;
    char lab[64];
    eb_status st;

    memset(&x, 0, sizeof x);
    for (uint32_t i = 0; i < b->nsections; i++) {
        const bsec *s = &b->sections[i];
        const bsec **slot = NULL;
        size_t idx = 0;
        switch (s->type) {
        case EB_SEC_META: slot = &x.meta; idx = 0; break;
        case EB_SEC_ARCH: slot = &x.arch; idx = 1; break;
        case EB_SEC_POSTERIOR: slot = &x.post; idx = 2; break;
        case EB_SEC_PARAMS: slot = &x.params; idx = 3; break;
        case EB_SEC_MU: slot = &x.mu; idx = 4; break;
        case EB_SEC_SIGMA: slot = &x.sigma; idx = 5; break;
        case EB_SEC_SCALES: slot = &x.scales; idx = 6; break;
        case EB_SEC_INDEX: slot = &x.index; idx = 7; break;
        case EB_SEC_GROUPS: slot = &x.groups; idx = 8; break;
        case EB_SEC_ROWPTR: slot = &x.rowptr; idx = 9; break;
        case EB_SEC_ACTSCALES: slot = &x.act; idx = 10; break;
        default:
            /* Optional and unknown: skipped (it was bounds- and CRC-checked). */
            if ((s->flags & EB_BUNDLE_FLAG_REQUIRED) && unknown_required < 0)
                unknown_required = (long)i;
            continue;
        }
        if (*slot)
            return bfail(b, err, EB_ERR_FORMAT, "%s duplicates section %zu; a bundle has one %s",
                         slabel(lab, s, i), first[idx], section_type_name(s->type));
        *slot = s;
        first[idx] = i;
        if (!is_tensor_type(s->type) && s->dtype != EB_DTYPE_BYTES)
            return bfail(b, err, EB_ERR_FORMAT, "%s: field 'dtype' is %" PRIu32
                         "; it must be 0 (bytes)", slabel(lab, s, i), s->dtype);
    }
    if (!x.post)
        return bfail(b, err, EB_ERR_FORMAT, "the required POSTERIOR section is missing");
    st = parse_posterior(b, x.post, strict, err);
    if (st)
        return st;
    if (unknown_required >= 0)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "%s is marked required but this reader does not implement its type "
                     "(written by a newer edgebayes?)",
                     slabel(lab, &b->sections[unknown_required], (size_t)unknown_required));
    if (!x.arch)
        return bfail(b, err, EB_ERR_FORMAT, "the required ARCH section is missing");
    if (!x.meta)
        return bfail(b, err, EB_ERR_FORMAT, "the required META section is missing");
    st = bind_params(b, &x, flags, err);
    if (!st)
        st = parse_arch(b, x.arch, err);
    if (!st)
        st = parse_meta(b, x.meta, err);
    return st;
}

static eb_status validate(eb_bundle *b, unsigned flags, eb_error *err)
{
    int strict = 1;
    uint64_t toff = 0;
    eb_status st;

    if (!host_is_little_endian())
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "this host is big-endian; bundles are used in place as little-endian");
    st = check_header(b, flags, &strict, &toff, err);
    if (!st)
        st = check_entries(b, strict, toff, err);
    if (!st)
        st = check_layout(b, toff, err);
    if (!st)
        st = check_crcs(b, flags, err);
    if (!st)
        st = check_sections(b, strict, flags, err);
    return st;
}

void eb_bundle_close(eb_bundle *b)
{
    if (!b)
        return;
    if (b->map)
        munmap(b->map, b->map_len);
    eb_free(b->sections);
    eb_free(b->arch);
    eb_free(b->meta_text);
    eb_free(b->meta);
    eb_free(b->name);
    eb_free(b);
}

eb_status eb_bundle__open_memory(const void *data, size_t len, const char *name, unsigned flags,
                                 eb_bundle **out, eb_error *err)
{
    eb_bundle *b;
    eb_status st;
    size_t nlen;

    *out = NULL;
    if (!name)
        name = "(memory)";
    if (flags & ~(EB_BUNDLE_SKIP_TENSOR_CHECK | EB_BUNDLE__IGNORE_CRC))
        return eb_error_set(err, EB_ERR_ARG, "opening bundle '%s': unknown flags 0x%x", name,
                            flags);
    if (!data && len > 0)
        return eb_error_set(err, EB_ERR_ARG, "opening bundle '%s': the buffer is NULL", name);
    if ((uintptr_t)data % EB_BUNDLE_ALIGN != 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "opening bundle '%s': the buffer is not aligned to %u bytes "
                            "(allocate it with eb_malloc_aligned)", name, EB_BUNDLE_ALIGN);
    b = eb_calloc(1, sizeof *b);
    if (!b)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory opening bundle '%s'", name);
    nlen = strlen(name);
    b->name = eb_malloc(nlen + 1);
    if (!b->name) {
        eb_free(b);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory opening bundle '%s'", name);
    }
    memcpy(b->name, name, nlen + 1);
    b->data = data;
    b->len = len;
    st = validate(b, flags, err);
    if (st) {
        eb_bundle_close(b);
        return st;
    }
    *out = b;
    return EB_OK;
}

eb_status eb_bundle_open_memory(const void *data, size_t len, const char *name, unsigned flags,
                                eb_bundle **out, eb_error *err)
{
    if (flags & ~EB_BUNDLE_SKIP_TENSOR_CHECK) {
        *out = NULL;
        return eb_error_set(err, EB_ERR_ARG, "opening bundle '%s': unknown flags 0x%x",
                            name ? name : "(memory)", flags);
    }
    return eb_bundle__open_memory(data, len, name, flags, out, err);
}

/* A cold load's pages arrive faster through read(2) than through page
 * faults on the mapping (on this project's VMs: 32 MB in about 23 ms by
 * read(2), 35 to 45 ms faulted in behind the CRCs, and 40 to 55 ms with
 * MAP_POPULATE, which also serialises the I/O and the CRCs). So while the
 * validation walks the mapping front to back, a helper thread reads the
 * file ahead of it into a scratch buffer it discards: the page cache
 * fills at read(2) speed and the CRCs overlap the I/O. The mapping is
 * still the only copy anyone uses. Skipped for small files and when
 * every page is already resident (mincore), so a warm load costs
 * nothing extra; a thread that cannot start changes nothing. */
#define READER_MIN_BYTES ((size_t)8 << 20)
#define READER_CHUNK ((size_t)256 << 10)

typedef struct reader {
    pthread_t thread;
    int fd;
    size_t len;
} reader;

static void *reader_main(void *arg)
{
    const reader *r = arg;
    unsigned char buf[READER_CHUNK]; /* the thread's stack is sized for it */
    for (size_t off = 0; off < r->len;) {
        const ssize_t n = pread(r->fd, buf, READER_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the validation will report what is wrong */
        off += (size_t)n;
    }
    return NULL;
}

/* 1 when every page of the mapping is in the page cache */
static int all_resident(void *map, size_t len)
{
    const long page = sysconf(_SC_PAGESIZE);
    const size_t pages = (len + (size_t)page - 1) / (size_t)page;
    unsigned char vec[1024];
    if (page <= 0)
        return 0;
    for (size_t p0 = 0; p0 < pages; p0 += sizeof vec) {
        const size_t np = pages - p0 < sizeof vec ? pages - p0 : sizeof vec;
        if (mincore((char *)map + p0 * (size_t)page, np * (size_t)page, vec) != 0)
            return 0;
        for (size_t i = 0; i < np; i++)
            if (!(vec[i] & 1))
                return 0;
    }
    return 1;
}

eb_status eb_bundle_open(const char *path, unsigned flags, eb_bundle **out, eb_error *err)
{
    reader rd;
    int reading = 0;
    eb_bundle *b = NULL;
    struct stat sb;
    void *map;
    size_t len;
    int fd;
    eb_status st;

    *out = NULL;
    if (flags & ~EB_BUNDLE_SKIP_TENSOR_CHECK)
        return eb_error_set(err, EB_ERR_ARG, "opening bundle '%s': unknown flags 0x%x", path,
                            flags);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eb_error_set(err, errno == ENOENT ? EB_ERR_NOTFOUND : EB_ERR_IO,
                            "cannot open bundle '%s': %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return eb_error_set(err, EB_ERR_IO, "cannot stat bundle '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return eb_error_set(err, EB_ERR_IO, "bundle '%s' is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "bundle '%s' is larger than this process can map", path);
    }
    len = (size_t)sb.st_size;
    if (len < EB_BUNDLE_HEADER_SIZE) {
        /* mmap cannot map 0 bytes; report as the validator would. */
        close(fd);
        return eb_error_set(err, EB_ERR_FORMAT,
                            "bundle '%s': the file is %zu bytes, shorter than the %u-byte "
                            "header (truncated?)", path, len, EB_BUNDLE_HEADER_SIZE);
    }
    /* The validation reads the whole file front to back: ask the kernel
     * for all of it at once (large sequential reads queued now) rather
     * than a fault and a small readahead window at a time, and read ahead
     * of the validation where the file is cold (reader_main). Advice
     * only: failures change nothing. */
    (void)posix_fadvise(fd, 0, (off_t)len, POSIX_FADV_SEQUENTIAL);
    (void)posix_fadvise(fd, 0, (off_t)len, POSIX_FADV_WILLNEED);
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        return eb_error_set(err, EB_ERR_IO, "cannot map bundle '%s': %s", path, strerror(e));
    }
    if (len >= READER_MIN_BYTES && !all_resident(map, len)) {
        pthread_attr_t attr;
        rd.fd = fd;
        rd.len = len;
        if (pthread_attr_init(&attr) == 0) {
            if (pthread_attr_setstacksize(&attr, READER_CHUNK + ((size_t)128 << 10)) == 0)
                reading = pthread_create(&rd.thread, &attr, reader_main, &rd) == 0;
            pthread_attr_destroy(&attr);
        }
    }
    st = eb_bundle__open_memory(map, len, path, flags, &b, err);
    if (reading)
        pthread_join(rd.thread, NULL);
    close(fd); /* the mapping keeps the file referenced */
    if (st || !b) {
        munmap(map, len);
        return st;
    }
    b->map = map; /* from now on eb_bundle_close unmaps */
    b->map_len = len;
    *out = b;
    return EB_OK;
}

const char *eb_bundle_path(const eb_bundle *b) { return b->name; }
uint64_t eb_bundle_file_size(const eb_bundle *b) { return (uint64_t)b->len; }
const char *eb_bundle_arch(const eb_bundle *b) { return b->arch; }
eb_repr_kind eb_bundle_repr(const eb_bundle *b) { return b->repr; }
eb_storage_kind eb_bundle_storage(const eb_bundle *b) { return b->storage; }
uint32_t eb_bundle_members(const eb_bundle *b) { return b->members; }
uint64_t eb_bundle_nparams(const eb_bundle *b) { return b->nparams; }
uint32_t eb_bundle_param_rows(const eb_bundle *b) { return b->rows; }
const float *eb_bundle_params(const eb_bundle *b) { return b->params; }
eb_head_kind eb_bundle_head(const eb_bundle *b) { return b->head; }

void eb_bundle_stored_view(const eb_bundle *b, int tensor, eb_bundle_stored *out)
{
    if (tensor < 0 || tensor >= b->ntensors)
        memset(out, 0, sizeof *out);
    else
        *out = b->stored[tensor];
}

eb_status eb_bundle_decode(const eb_bundle *b, int tensor, uint32_t row, float *dst,
                           eb_error *err)
{
    const eb_bundle_stored *sv;
    const uint64_t K = b->nparams;
    if (tensor < 0 || tensor >= b->ntensors)
        return eb_error_set(err, EB_ERR_ARG, "bundle '%s': a %s posterior has no tensor %d",
                            b->name, eb_repr_name(b->repr), tensor);
    sv = &b->stored[tensor];
    if (row >= sv->rows)
        return eb_error_set(err, EB_ERR_ARG, "bundle '%s': row %" PRIu32 " of %" PRIu32,
                            b->name, row, sv->rows);
    switch (sv->kind) {
    case EB_STORE_F32:
        memcpy(dst, (const float *)sv->values + (uint64_t)row * K, (size_t)K * sizeof *dst);
        break;
    case EB_STORE_F16: {
        const uint16_t *h = (const uint16_t *)sv->values + (uint64_t)row * K;
        for (uint64_t k = 0; k < K; k++)
            dst[k] = eb_bundle__f16_to_f32(h[k]);
        break;
    }
    case EB_STORE_INT8: {
        const int8_t *q = (const int8_t *)sv->values + (uint64_t)row * K;
        const float *scale = sv->scales + (uint64_t)row * sv->n_groups;
        for (uint64_t g = 0; g < sv->n_groups; g++)
            for (uint64_t k = sv->groups[g]; k < sv->groups[g + 1]; k++)
                dst[k] = (float)q[k] * scale[g];
        break;
    }
    case EB_STORE_SHARED_SPARSE: {
        const float *v = (const float *)sv->values + (uint64_t)row * sv->n_index;
        memset(dst, 0, (size_t)K * sizeof *dst);
        for (uint64_t j = 0; j < sv->n_index; j++)
            dst[sv->index[j]] = v[j];
        break;
    }
    case EB_STORE_CSR: {
        const float *v = sv->values;
        memset(dst, 0, (size_t)K * sizeof *dst);
        for (uint64_t j = sv->rowptr[row]; j < sv->rowptr[row + 1]; j++)
            dst[sv->index[j]] = v[j];
        break;
    }
    }
    return EB_OK;
}
const float *eb_bundle_sigma(const eb_bundle *b) { return b->sigma; }
size_t eb_bundle_meta_count(const eb_bundle *b) { return b->nmeta; }
size_t eb_bundle_section_count(const eb_bundle *b) { return b->nsections; }

void eb_bundle_version(const eb_bundle *b, unsigned *major, unsigned *minor)
{
    if (major)
        *major = b->major;
    if (minor)
        *minor = b->minor;
}

const char *eb_bundle_meta_get(const eb_bundle *b, const char *key)
{
    size_t lo = 0, hi = b->nmeta; /* keys are sorted: binary search */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(b->meta[mid].key, key);
        if (c == 0)
            return b->meta[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void eb_bundle_meta_at(const eb_bundle *b, size_t i, const char **key, const char **value)
{
    *key = b->meta[i].key;
    *value = b->meta[i].value;
}

void eb_bundle_section_info(const eb_bundle *b, size_t i, eb_bundle_section *info)
{
    const bsec *s = &b->sections[i];
    info->type = s->type;
    info->type_name = section_type_name(s->type);
    info->dtype = s->dtype;
    info->dtype_name = dtype_name(s->dtype);
    info->flags = s->flags;
    info->offset = s->offset;
    info->size = s->size;
    info->crc32 = s->crc;
}

/* ---- the writer --------------------------------------------------------- */

typedef struct wmeta {
    char *key;   /* one allocation: "key\0value\0" */
    char *value; /* into the same allocation */
} wmeta;

struct eb_bundle_writer {
    char *arch;
    size_t arch_len;
    wmeta *meta; /* (nmeta), kept sorted by key */
    size_t nmeta, meta_cap;
    size_t meta_bytes; /* size of the META text: sum of "key=value\n" */
    int has_posterior;
    eb_repr_kind repr;
    uint32_t members;
    uint32_t rows;
    uint64_t nparams;
    const float *theta; /* (rows, nparams), borrowed; gaussian: mu */
    const float *sigma; /* gaussian: (nparams), borrowed; else NULL */
    eb_head_kind head;  /* distilled: its head; else EB_HEAD_NONE */
    eb_storage_kind storage; /* 0 until eb_bundle_writer_storage: f32 */
    uint64_t *groups;   /* INT8: (n_groups + 1), owned copy */
    size_t n_groups;
    float *act;         /* ACTSCALES: (rows, n_act), owned copy; NULL: none */
    size_t n_act;
};

eb_status eb_bundle_writer_new(eb_bundle_writer **out, eb_error *err)
{
    *out = eb_calloc(1, sizeof **out);
    if (!*out)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory creating a bundle writer");
    return EB_OK;
}

void eb_bundle_writer_free(eb_bundle_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nmeta; i++)
        eb_free(w->meta[i].key);
    eb_free(w->meta);
    eb_free(w->arch);
    eb_free(w->groups);
    eb_free(w->act);
    eb_free(w);
}

eb_status eb_bundle_writer_arch(eb_bundle_writer *w, const char *arch_text, eb_error *err)
{
    size_t n, bad;
    if (w->arch)
        return eb_error_set(err, EB_ERR_ARG, "eb_bundle_writer_arch: the architecture is already set");
    if (!arch_text || !arch_text[0])
        return eb_error_set(err, EB_ERR_ARG, "eb_bundle_writer_arch: the architecture spec is empty");
    n = strlen(arch_text);
    if (n > EB_BUNDLE_ARCH_MAX)
        return eb_error_set(err, EB_ERR_ARG,
                            "eb_bundle_writer_arch: the architecture spec is %zu bytes, above "
                            "the limit of %u", n, EB_BUNDLE_ARCH_MAX);
    bad = utf8_invalid_at((const unsigned char *)arch_text, n);
    if (bad != n)
        return eb_error_set(err, EB_ERR_ARG,
                            "eb_bundle_writer_arch: the architecture spec is not valid UTF-8 "
                            "(byte %zu)", bad);
    w->arch = eb_malloc(n + 1);
    if (!w->arch)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory copying the architecture spec");
    memcpy(w->arch, arch_text, n + 1);
    w->arch_len = n;
    return EB_OK;
}

eb_status eb_bundle_writer_meta(eb_bundle_writer *w, const char *key, const char *value,
                                eb_error *err)
{
    char q[256];
    size_t klen, vlen, bad, lo = 0, hi = w->nmeta, line;
    char *copy;

    if (!key || !value)
        return eb_error_set(err, EB_ERR_ARG, "eb_bundle_writer_meta: key and value must not be NULL");
    klen = strlen(key);
    vlen = strlen(value);
    if (klen == 0 || klen > EB_BUNDLE_META_KEY_MAX)
        return eb_error_set(err, EB_ERR_ARG,
                            "metadata key '%s' is %zu characters; it must be 1..%u",
                            quote(q, key, klen), klen, EB_BUNDLE_META_KEY_MAX);
    for (size_t i = 0; i < klen; i++)
        if (!meta_key_char((unsigned char)key[i]))
            return eb_error_set(err, EB_ERR_ARG,
                                "metadata key '%s' has a character outside [a-z0-9_.]",
                                quote(q, key, klen));
    if (strpbrk(value, "\n\r"))
        return eb_error_set(err, EB_ERR_ARG,
                            "the value of metadata key '%s' contains a line break", key);
    bad = utf8_invalid_at((const unsigned char *)value, vlen);
    if (bad != vlen)
        return eb_error_set(err, EB_ERR_ARG,
                            "the value of metadata key '%s' is not valid UTF-8 (byte %zu)", key,
                            bad);
    line = klen + vlen + 2; /* "key=value\n" */
    if (w->meta_bytes > EB_BUNDLE_META_MAX || line > EB_BUNDLE_META_MAX - w->meta_bytes)
        return eb_error_set(err, EB_ERR_ARG,
                            "metadata key '%s': the META section would exceed %u bytes", key,
                            EB_BUNDLE_META_MAX);
    while (lo < hi) { /* insertion point in the sorted list */
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->meta[mid].key, key);
        if (c == 0)
            return eb_error_set(err, EB_ERR_ARG, "metadata key '%s' is given twice", key);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (w->nmeta == w->meta_cap) {
        size_t cap = w->meta_cap ? w->meta_cap * 2 : 16;
        wmeta *m = eb_realloc(w->meta, cap * sizeof *m);
        if (!m)
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory adding metadata key '%s'", key);
        w->meta = m;
        w->meta_cap = cap;
    }
    copy = eb_malloc(klen + vlen + 2);
    if (!copy)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory adding metadata key '%s'", key);
    memcpy(copy, key, klen + 1);
    memcpy(copy + klen + 1, value, vlen + 1);
    memmove(w->meta + lo + 1, w->meta + lo, (w->nmeta - lo) * sizeof *w->meta);
    w->meta[lo].key = copy;
    w->meta[lo].value = copy + klen + 1;
    w->nmeta++;
    w->meta_bytes += line;
    return EB_OK;
}

static eb_status writer_posterior(eb_bundle_writer *w, const char *fn, eb_repr_kind repr,
                                  uint32_t S, uint64_t K, const float *theta, eb_error *err)
{
    uint32_t rows = repr == EB_REPR_SAMPLES ? S : 1;
    uint64_t total;

    if (w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "%s: the writer already holds a posterior", fn);
    if (S == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s: %s must be at least 1", fn,
                            repr == EB_REPR_SAMPLES ? "S (members)" : "default_draws");
    if (K == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s: K (parameters) must be at least 1", fn);
    if (!theta)
        return eb_error_set(err, EB_ERR_ARG, "%s: theta is NULL", fn);
    if (K > UINT64_MAX / sizeof(float) / rows || (uint64_t)rows * K > SIZE_MAX / sizeof(float))
        return eb_error_set(err, EB_ERR_ARG, "%s: %" PRIu32 " x %" PRIu64 " floats do not fit "
                            "in memory", fn, rows, K);
    total = (uint64_t)rows * K;
    for (uint64_t i = 0; i < total; i++)
        if (!isfinite(theta[i]))
            return eb_error_set(err, EB_ERR_NUMERIC,
                                "%s: theta[%" PRIu64 "][%" PRIu64 "] is %s; parameters must be "
                                "finite", fn, i / K, i % K, isnan(theta[i]) ? "NaN" : "infinite");
    w->has_posterior = 1;
    w->repr = repr;
    w->members = S;
    w->rows = rows;
    w->nparams = K;
    w->theta = theta;
    return EB_OK;
}

eb_status eb_bundle_writer_samples(eb_bundle_writer *w, uint32_t S, uint64_t K,
                                   const float *theta, eb_error *err)
{
    return writer_posterior(w, "eb_bundle_writer_samples", EB_REPR_SAMPLES, S, K, theta, err);
}

eb_status eb_bundle_writer_dropout(eb_bundle_writer *w, uint32_t default_draws, uint64_t K,
                                   const float *theta, eb_error *err)
{
    return writer_posterior(w, "eb_bundle_writer_dropout", EB_REPR_DROPOUT, default_draws, K,
                            theta, err);
}

eb_status eb_bundle_writer_gaussian(eb_bundle_writer *w, uint32_t default_draws, uint64_t K,
                                    const float *mu, const float *sigma, eb_error *err)
{
    static const char fn[] = "eb_bundle_writer_gaussian";
    eb_status st;
    if (w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "%s: the writer already holds a posterior", fn);
    if (!sigma)
        return eb_error_set(err, EB_ERR_ARG, "%s: sigma is NULL", fn);
    /* sigma first, so a valid mu does not leave a half-set posterior */
    for (uint64_t i = 0; i < K; i++)
        if (!isfinite(sigma[i]) || sigma[i] < 0.0f)
            return eb_error_set(err, isfinite(sigma[i]) ? EB_ERR_ARG : EB_ERR_NUMERIC,
                                "%s: sigma[%" PRIu64 "] is %g; standard deviations must be "
                                "finite and not negative", fn, i, (double)sigma[i]);
    st = writer_posterior(w, fn, EB_REPR_GAUSSIAN, default_draws, K, mu, err);
    if (!st)
        w->sigma = sigma;
    return st;
}

eb_status eb_bundle_writer_distilled(eb_bundle_writer *w, eb_head_kind head, uint32_t default_draws,
                                     uint64_t K, const float *theta, eb_error *err)
{
    static const char fn[] = "eb_bundle_writer_distilled";
    eb_status st;
    if (w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "%s: the writer already holds a posterior", fn);
    if (head < EB_HEAD_CATEGORICAL || head > EB_HEAD_DIRICHLET)
        return eb_error_set(err, EB_ERR_ARG, "%s: head %d (%s) is not a student head; it must "
                            "be categorical, gped or dirichlet", fn, (int)head, eb_head_name(head));
    st = writer_posterior(w, fn, EB_REPR_DISTILLED, default_draws, K, theta, err);
    if (!st)
        w->head = head;
    return st;
}

eb_status eb_bundle_writer_storage(eb_bundle_writer *w, eb_storage_kind kind,
                                   const uint64_t *groups, size_t n_groups, eb_error *err)
{
    static const char fn[] = "eb_bundle_writer_storage";
    const int T = w->repr == EB_REPR_GAUSSIAN ? 2 : 1;
    const uint64_t K = w->nparams;
    uint64_t *copy = NULL;

    if (!w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "%s: set the posterior first (its values decide "
                            "the encoding)", fn);
    if (kind < EB_STORE_F32 || kind > EB_STORE_CSR)
        return eb_error_set(err, EB_ERR_ARG, "%s: storage kind %d is unknown", fn, (int)kind);
    if (kind != EB_STORE_INT8 && (groups || n_groups))
        return eb_error_set(err, EB_ERR_ARG, "%s: groups are for int8 only (storage %s got %zu)",
                            fn, eb_storage_name(kind), n_groups);
    if (kind == EB_STORE_INT8) {
        if (!groups || n_groups == 0)
            return eb_error_set(err, EB_ERR_ARG, "%s: int8 needs groups (n_groups >= 1)", fn);
        if (n_groups > K)
            return eb_error_set(err, EB_ERR_ARG, "%s: %zu groups for K = %" PRIu64
                                " parameters; each group holds at least one", fn, n_groups, K);
        if (groups[0] != 0)
            return eb_error_set(err, EB_ERR_ARG, "%s: groups[0] is %" PRIu64 "; it must be 0",
                                fn, groups[0]);
        for (size_t g = 1; g <= n_groups; g++)
            if (groups[g] <= groups[g - 1])
                return eb_error_set(err, EB_ERR_ARG, "%s: groups[%zu] = %" PRIu64 " is not above "
                                    "groups[%zu] = %" PRIu64, fn, g, groups[g], g - 1,
                                    groups[g - 1]);
        if (groups[n_groups] != K)
            return eb_error_set(err, EB_ERR_ARG, "%s: groups[%zu] is %" PRIu64 "; it must be K "
                                "= %" PRIu64, fn, n_groups, groups[n_groups], K);
    }
    if (kind == EB_STORE_F16)
        for (int t = 0; t < T; t++) {
            const float *v = t == 0 ? w->theta : w->sigma;
            for (uint64_t i = 0; i < (uint64_t)w->rows * K && (t == 0 || i < K); i++)
                if ((eb_bundle__f32_to_f16(v[i]) & 0x7fffu) == 0x7c00u)
                    return eb_error_set(err, EB_ERR_NUMERIC,
                                        "%s: %s[%" PRIu64 "][%" PRIu64 "] = %g is beyond the f16 "
                                        "range (|v| must round to at most 65504)", fn,
                                        w->repr == EB_REPR_GAUSSIAN ? (t ? "sigma" : "mu")
                                                                    : "theta",
                                        i / K, i % K, (double)v[i]);
        }
    if ((kind == EB_STORE_SHARED_SPARSE || kind == EB_STORE_CSR) && K > UINT64_C(1) << 32)
        for (int t = 0; t < T; t++) {
            const float *v = t == 0 ? w->theta : w->sigma;
            for (uint64_t r = 0; r < (t == 0 ? w->rows : 1u); r++)
                for (uint64_t k = UINT64_C(1) << 32; k < K; k++)
                    if (v[r * K + k] != 0.0f)
                        return eb_error_set(err, EB_ERR_ARG,
                                            "%s: value [%" PRIu64 "][%" PRIu64 "] is nonzero but "
                                            "sparse indices are u32", fn, r, k);
        }
    if (kind == EB_STORE_INT8) {
        copy = eb_malloc((n_groups + 1) * sizeof *copy);
        if (!copy)
            return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory copying %zu groups", fn,
                                n_groups);
        memcpy(copy, groups, (n_groups + 1) * sizeof *copy);
    }
    eb_free(w->groups);
    w->groups = copy;
    w->n_groups = kind == EB_STORE_INT8 ? n_groups : 0;
    w->storage = kind;
    return EB_OK;
}

eb_status eb_bundle_writer_act_scales(eb_bundle_writer *w, const float *act, size_t n_act,
                                      eb_error *err)
{
    static const char fn[] = "eb_bundle_writer_act_scales";
    float *copy;
    size_t count;

    if (!w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "%s: set the posterior first (its rows decide the "
                            "count)", fn);
    if (!act && n_act == 0) {
        eb_free(w->act);
        w->act = NULL;
        w->n_act = 0;
        return EB_OK;
    }
    if (w->repr != EB_REPR_SAMPLES && w->repr != EB_REPR_DISTILLED)
        return eb_error_set(err, EB_ERR_ARG, "%s: static activation scales are for samples and "
                            "distilled posteriors, not %s", fn, eb_repr_name(w->repr));
    if (!act || n_act == 0 || n_act > ACT_MAX_PER_ROW)
        return eb_error_set(err, EB_ERR_ARG, "%s: %zu scales per row; give 1 to %u", fn,
                            act ? n_act : (size_t)0, ACT_MAX_PER_ROW);
    count = (size_t)w->rows * n_act;
    for (size_t i = 0; i < count; i++)
        if (!(act[i] > 0.0f) || !isfinite(act[i]))
            return eb_error_set(err, isfinite(act[i]) ? EB_ERR_ARG : EB_ERR_NUMERIC,
                                "%s: scale [%zu][%zu] is %g; activation scales must be finite "
                                "and > 0", fn, i / n_act, i % n_act, (double)act[i]);
    copy = eb_malloc(count * sizeof *copy);
    if (!copy)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory copying %zu scales", fn, count);
    memcpy(copy, act, count * sizeof *copy);
    eb_free(w->act);
    w->act = copy;
    w->n_act = n_act;
    return EB_OK;
}

static uint64_t align_up(uint64_t x)
{
    return (x + EB_BUNDLE_ALIGN - 1) / EB_BUNDLE_ALIGN * EB_BUNDLE_ALIGN;
}

/* Writes n zero bytes. */
static int write_zeros(FILE *fp, uint64_t n)
{
    static const unsigned char zeros[EB_BUNDLE_ALIGN];
    while (n > 0) {
        size_t k = n > sizeof zeros ? sizeof zeros : (size_t)n;
        if (fwrite(zeros, 1, k, fp) != k)
            return -1;
        n -= k;
    }
    return 0;
}

/* The encoded tensors of one write: what eb_bundle_write puts in the
 * tensor sections for the writer's storage kind. Buffers are owned (freed
 * by enc_free); for f32 the values point at the borrowed inputs. */
typedef struct wenc {
    const void *values[2]; /* per tensor (PARAMS or MU, SIGMA) */
    uint64_t values_size[2];
    uint32_t values_dtype;
    void *owned[2];
    float *scales;     /* INT8: (tensors x rows, groups) */
    uint64_t scales_size;
    uint32_t *index;   /* SHARED_SPARSE: (N); CSR: (nnz) */
    uint64_t index_size;
    uint64_t *rowptr;  /* CSR: (rows + 1) */
    uint64_t rowptr_size;
} wenc;

static void enc_free(wenc *e)
{
    eb_free(e->owned[0]);
    eb_free(e->owned[1]);
    eb_free(e->scales);
    eb_free(e->index);
    eb_free(e->rowptr);
}

/* The source rows of tensor t: theta (rows, K), or sigma (1, K). */
static const float *w_tensor(const eb_bundle_writer *w, int t)
{
    return t == 0 ? w->theta : w->sigma;
}

/* INT8, one row of one run: scale = max |v| / 127 (0 if all zero), q =
 * round(v / scale) (half away from zero) clamped to [-127, 127]. A scale
 * that underflows to 0 for a nonzero run stores zeros (|v| < 2e-43). */
static float quantize_run(const float *v, int8_t *q, uint64_t n)
{
    float maxabs = 0.0f, scale;
    for (uint64_t k = 0; k < n; k++)
        if (fabsf(v[k]) > maxabs)
            maxabs = fabsf(v[k]);
    scale = maxabs / 127.0f;
    for (uint64_t k = 0; k < n; k++) {
        float r = scale > 0.0f ? roundf(v[k] / scale) : 0.0f;
        q[k] = (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r);
    }
    return scale;
}

/* Encodes the writer's tensors for its storage kind. */
static eb_status encode(const eb_bundle_writer *w, wenc *e, const char *path, eb_error *err)
{
    const int T = w->repr == EB_REPR_GAUSSIAN ? 2 : 1;
    const uint64_t K = w->nparams, rows = w->rows, cells = rows * K;
    const eb_storage_kind sk = w->storage ? w->storage : EB_STORE_F32;

    memset(e, 0, sizeof *e);
    switch (sk) {
    case EB_STORE_F32:
        e->values_dtype = EB_DTYPE_F32;
        for (int t = 0; t < T; t++) {
            e->values[t] = w_tensor(w, t);
            e->values_size[t] = cells * sizeof(float);
        }
        return EB_OK;
    case EB_STORE_F16:
        e->values_dtype = EB_DTYPE_F16;
        for (int t = 0; t < T; t++) {
            const float *src = w_tensor(w, t);
            uint16_t *h = eb_malloc((size_t)cells * sizeof *h);
            if (!h)
                goto nomem;
            for (uint64_t i = 0; i < cells; i++)
                h[i] = eb_bundle__f32_to_f16(src[i]);
            e->owned[t] = h;
            e->values[t] = h;
            e->values_size[t] = cells * sizeof *h;
        }
        return EB_OK;
    case EB_STORE_INT8: {
        const uint64_t G = w->n_groups;
        e->values_dtype = EB_DTYPE_I8;
        e->scales = eb_malloc((size_t)(T * rows * G) * sizeof *e->scales);
        if (!e->scales)
            goto nomem;
        e->scales_size = T * rows * G * sizeof *e->scales;
        for (int t = 0; t < T; t++) {
            const float *src = w_tensor(w, t);
            int8_t *q = eb_malloc((size_t)cells);
            if (!q)
                goto nomem;
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t g = 0; g < G; g++) {
                    const uint64_t lo = w->groups[g], n = w->groups[g + 1] - lo;
                    e->scales[((uint64_t)t * rows + r) * G + g] =
                        quantize_run(src + r * K + lo, q + r * K + lo, n);
                }
            e->owned[t] = q;
            e->values[t] = q;
            e->values_size[t] = cells;
        }
        return EB_OK;
    }
    case EB_STORE_SHARED_SPARSE: {
        uint64_t N = 0, j = 0;
        e->values_dtype = EB_DTYPE_F32;
        /* the kept set: positions nonzero in any row of any tensor */
        for (uint64_t k = 0; k < K; k++) {
            int keep = 0;
            for (int t = 0; t < T && !keep; t++)
                for (uint64_t r = 0; r < rows && !keep; r++)
                    keep = w_tensor(w, t)[r * K + k] != 0.0f;
            N += (uint64_t)keep;
        }
        e->index = eb_malloc((size_t)(N ? N : 1) * sizeof *e->index);
        if (!e->index)
            goto nomem;
        e->index_size = N * sizeof *e->index;
        for (uint64_t k = 0; k < K; k++) {
            int keep = 0;
            for (int t = 0; t < T && !keep; t++)
                for (uint64_t r = 0; r < rows && !keep; r++)
                    keep = w_tensor(w, t)[r * K + k] != 0.0f;
            if (keep)
                e->index[j++] = (uint32_t)k; /* < 2^32: eb_bundle_writer_storage checked */
        }
        for (int t = 0; t < T; t++) {
            const float *src = w_tensor(w, t);
            float *v = eb_malloc((size_t)(rows * N > 0 ? rows * N : 1) * sizeof *v);
            if (!v)
                goto nomem;
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t i = 0; i < N; i++)
                    v[r * N + i] = src[r * K + e->index[i]];
            e->owned[t] = v;
            e->values[t] = v;
            e->values_size[t] = rows * N * sizeof *v;
        }
        return EB_OK;
    }
    case EB_STORE_CSR: {
        uint64_t nnz = 0, j = 0;
        e->values_dtype = EB_DTYPE_F32;
        /* per row; gaussian (rows = 1): one pattern, where mu or sigma is nonzero */
        e->rowptr = eb_malloc((size_t)(rows + 1) * sizeof *e->rowptr);
        if (!e->rowptr)
            goto nomem;
        e->rowptr_size = (rows + 1) * sizeof *e->rowptr;
        for (int pass = 0; pass < 2; pass++) {
            j = 0;
            for (uint64_t r = 0; r < rows; r++) {
                if (pass == 1)
                    e->rowptr[r] = j;
                for (uint64_t k = 0; k < K; k++) {
                    int keep = 0;
                    for (int t = 0; t < T; t++)
                        keep |= w_tensor(w, t)[r * K + k] != 0.0f;
                    if (!keep)
                        continue;
                    if (pass == 1) {
                        e->index[j] = (uint32_t)k;
                        for (int t = 0; t < T; t++)
                            ((float *)e->owned[t])[j] = w_tensor(w, t)[r * K + k];
                    }
                    j++;
                }
            }
            if (pass == 0) {
                nnz = j;
                e->index = eb_malloc((size_t)(nnz ? nnz : 1) * sizeof *e->index);
                if (!e->index)
                    goto nomem;
                e->index_size = nnz * sizeof *e->index;
                for (int t = 0; t < T; t++) {
                    e->owned[t] = eb_malloc((size_t)(nnz ? nnz : 1) * sizeof(float));
                    if (!e->owned[t])
                        goto nomem;
                    e->values[t] = e->owned[t];
                    e->values_size[t] = nnz * sizeof(float);
                }
            }
        }
        e->rowptr[rows] = nnz;
        return EB_OK;
    }
    }
    return eb_error_set(err, EB_ERR_INTERNAL, "cannot write bundle '%s': storage %d", path,
                        (int)sk);
nomem:
    enc_free(e);
    memset(e, 0, sizeof *e);
    return eb_error_set(err, EB_ERR_NOMEM, "out of memory encoding bundle '%s' as %s", path,
                        eb_storage_name(sk));
}

/* The most sections one bundle gets: META, ARCH, POSTERIOR, MU, SIGMA,
 * SCALES, GROUPS (int8) or INDEX, ROWPTR (csr). */
#define W_MAX 10

eb_status eb_bundle_write(eb_bundle_writer *w, const char *path, eb_error *err)
{
    unsigned char head[EB_BUNDLE_HEADER_SIZE + W_MAX * EB_BUNDLE_ENTRY_SIZE];
    unsigned char post[EB_BUNDLE_POSTERIOR_SIZE];
    const void *payload[W_MAX];
    uint64_t size[W_MAX], offset[W_MAX], pos;
    uint32_t types[W_MAX], dtypes[W_MAX];
    int nsec = 0;
    size_t head_len;
    char *meta_text;
    size_t m = 0;
    wenc enc;
    eb_tmpfile t;
    eb_status st;

    if (!w->arch)
        return eb_error_set(err, EB_ERR_ARG, "cannot write bundle '%s': no architecture was set "
                            "(eb_bundle_writer_arch)", path);
    if (!w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "cannot write bundle '%s': no posterior was set "
                            "(eb_bundle_writer_samples, _dropout, _gaussian or _distilled)",
                            path);
    if (!host_is_little_endian())
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "cannot write bundle '%s': this host is big-endian", path);
    if (w->act && w->storage != EB_STORE_INT8)
        return eb_error_set(err, EB_ERR_ARG, "cannot write bundle '%s': static activation "
                            "scales (ACTSCALES) need int8 storage, not %s", path,
                            eb_storage_name(w->storage ? w->storage : EB_STORE_F32));

    st = encode(w, &enc, path, err);
    if (st)
        return st;
    meta_text = eb_malloc(w->meta_bytes);
    if (!meta_text) {
        enc_free(&enc);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory writing bundle '%s'", path);
    }
    for (size_t i = 0; i < w->nmeta; i++) {
        size_t kl = strlen(w->meta[i].key), vl = strlen(w->meta[i].value);
        memcpy(meta_text + m, w->meta[i].key, kl);
        meta_text[m + kl] = '=';
        memcpy(meta_text + m + kl + 1, w->meta[i].value, vl);
        meta_text[m + kl + 1 + vl] = '\n';
        m += kl + vl + 2;
    }

    memset(post, 0, sizeof post);
    wr32(post + EB_BP_KIND, (uint32_t)w->repr);
    wr32(post + EB_BP_MEMBERS, w->members);
    wr64(post + EB_BP_NPARAMS, w->nparams);
    wr32(post + EB_BP_STORAGE, (uint32_t)(w->storage ? w->storage : EB_STORE_F32));
    wr32(post + EB_BP_HEAD, (uint32_t)w->head);

    /* Sections in increasing type order (the canonical layout). */
#define W_ADD(ty, dt, pl, sz)                                                                      \
    do {                                                                                           \
        types[nsec] = (ty);                                                                        \
        dtypes[nsec] = (dt);                                                                       \
        payload[nsec] = (pl);                                                                      \
        size[nsec] = (sz);                                                                         \
        nsec++;                                                                                    \
    } while (0)
    W_ADD(EB_SEC_META, EB_DTYPE_BYTES, meta_text, w->meta_bytes);
    W_ADD(EB_SEC_ARCH, EB_DTYPE_BYTES, w->arch, w->arch_len);
    W_ADD(EB_SEC_POSTERIOR, EB_DTYPE_BYTES, post, sizeof post);
    if (w->repr == EB_REPR_GAUSSIAN) {
        W_ADD(EB_SEC_MU, enc.values_dtype, enc.values[0], enc.values_size[0]);
        W_ADD(EB_SEC_SIGMA, enc.values_dtype, enc.values[1], enc.values_size[1]);
    } else {
        W_ADD(EB_SEC_PARAMS, enc.values_dtype, enc.values[0], enc.values_size[0]);
    }
    if (enc.scales) {
        W_ADD(EB_SEC_SCALES, EB_DTYPE_F32, enc.scales, enc.scales_size);
    }
    if (enc.index) {
        W_ADD(EB_SEC_INDEX, EB_DTYPE_U32, enc.index, enc.index_size);
    }
    if (enc.scales) {
        W_ADD(EB_SEC_GROUPS, EB_DTYPE_U64, w->groups, (w->n_groups + 1) * sizeof *w->groups);
    }
    if (enc.rowptr) {
        W_ADD(EB_SEC_ROWPTR, EB_DTYPE_U64, enc.rowptr, enc.rowptr_size);
    }
    if (w->act) {
        W_ADD(EB_SEC_ACTSCALES, EB_DTYPE_F32, w->act, (uint64_t)w->rows * w->n_act * 4);
    }
#undef W_ADD
    head_len = EB_BUNDLE_HEADER_SIZE + (size_t)nsec * EB_BUNDLE_ENTRY_SIZE;

    /* Layout: header, table right after it, then the sections in table
     * order, each at the next multiple of 64; the file ends where the last
     * ends. Every unused byte is zero. */
    memset(head, 0, sizeof head);
    pos = head_len;
    for (int i = 0; i < nsec; i++) {
        unsigned char *e = head + EB_BUNDLE_HEADER_SIZE + i * EB_BUNDLE_ENTRY_SIZE;
        offset[i] = align_up(pos);
        pos = offset[i] + size[i];
        wr32(e + EB_BE_TYPE, types[i]);
        wr32(e + EB_BE_DTYPE, dtypes[i]);
        wr64(e + EB_BE_OFFSET, offset[i]);
        wr64(e + EB_BE_SIZE, size[i]);
        wr32(e + EB_BE_CRC, eb_bundle__crc32(0, payload[i], size[i]));
        wr32(e + EB_BE_FLAGS, EB_BUNDLE_FLAG_REQUIRED);
    }
    memcpy(head, EB_BUNDLE_MAGIC, EB_BUNDLE_MAGIC_LEN);
    wr16(head + EB_BH_MAJOR, EB_BUNDLE_FORMAT_MAJOR);
    /* The lowest minor that describes the file: 1.2 only adds ACTSCALES,
     * so every other file stays byte-identical to what 1.1 wrote. */
    wr16(head + EB_BH_MINOR, w->act ? 2 : 1);
    wr32(head + EB_BH_SECTION_COUNT, (uint32_t)nsec);
    wr64(head + EB_BH_FILE_SIZE, pos);
    wr64(head + EB_BH_TABLE_OFFSET, EB_BUNDLE_HEADER_SIZE);
    wr32(head + EB_BH_TABLE_CRC, eb_bundle__crc32(0, head + EB_BUNDLE_HEADER_SIZE,
                                                  (uint64_t)nsec * EB_BUNDLE_ENTRY_SIZE));
    wr32(head + EB_BH_HEADER_CRC, eb_bundle__crc32(0, head, EB_BUNDLE_HEADER_SIZE));

    st = eb_tmpfile_open(&t, path, err);
    if (st) {
        eb_free(meta_text);
        enc_free(&enc);
        return eb_error_prefix(err, "cannot write bundle: ");
    }
    pos = head_len;
    if (fwrite(head, 1, head_len, t.fp) != head_len)
        st = EB_ERR_IO;
    for (int i = 0; i < nsec && !st; i++) {
        if (write_zeros(t.fp, offset[i] - pos) != 0 ||
            (size[i] > 0 && fwrite(payload[i], 1, (size_t)size[i], t.fp) != size[i]))
            st = EB_ERR_IO;
        pos = offset[i] + size[i];
    }
    eb_free(meta_text);
    enc_free(&enc);
    if (st) {
        int e = errno; /* before abort's fclose/unlink can change it */
        eb_tmpfile_abort(&t);
        return eb_error_set(err, EB_ERR_IO, "cannot write bundle '%s': %s", path, strerror(e));
    }
    /* Flush, fsync, rename; on failure the temporary file is removed. */
    return eb_tmpfile_commit(&t, err);
}
