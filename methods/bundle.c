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
    const float *params;       /* (rows, nparams), into data; gaussian: MU */
    const float *sigma;        /* gaussian: SIGMA (nparams), into data; else NULL */
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

/* POSTERIOR: representation, storage, S and K. Checked before anything
 * else about the sections, so a bundle of a representation or storage kind
 * this reader lacks is reported as such, not through one of its sections. */
static eb_status parse_posterior(eb_bundle *b, const bsec *s, int strict, eb_error *err)
{
    const unsigned char *p = b->data + s->offset;
    uint32_t kind, storage;

    if (s->size < EB_BUNDLE_POSTERIOR_SIZE || (strict && s->size != EB_BUNDLE_POSTERIOR_SIZE))
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR is %" PRIu64 " bytes; format %u.%u defines %u", s->size,
                     b->major, b->minor, EB_BUNDLE_POSTERIOR_SIZE);
    kind = rd32(p + EB_BP_KIND);
    storage = rd32(p + EB_BP_STORAGE);
    if (kind == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'kind' is 0");
    if (kind != EB_REPR_SAMPLES && kind != EB_REPR_DROPOUT && kind != EB_REPR_GAUSSIAN)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "section POSTERIOR: field 'kind' is %" PRIu32 " (%s), a representation "
                     "this reader does not implement", kind, eb_repr_name((eb_repr_kind)kind));
    if (storage == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'storage' is 0");
    if (storage != EB_STORE_F32)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "section POSTERIOR: field 'storage' is %" PRIu32 " (%s), a storage kind "
                     "this reader does not implement", storage,
                     eb_storage_name((eb_storage_kind)storage));
    if (strict && !all_zero(p + EB_BP_RESERVED, EB_BUNDLE_POSTERIOR_SIZE - EB_BP_RESERVED))
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR: field 'reserved' (bytes 20..31) is not zero");
    b->repr = (eb_repr_kind)kind;
    b->storage = (eb_storage_kind)storage;
    b->members = rd32(p + EB_BP_MEMBERS);
    b->nparams = rd64(p + EB_BP_NPARAMS);
    if (b->members == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'members' (S) is 0");
    if (b->nparams == 0)
        return bfail(b, err, EB_ERR_FORMAT, "section POSTERIOR: field 'nparams' (K) is 0");
    b->rows = b->repr == EB_REPR_SAMPLES ? b->members : 1;
    if (b->nparams > UINT64_MAX / sizeof(float) / b->rows)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section POSTERIOR: %" PRIu32 " x %" PRIu64 " x 4 bytes of parameters "
                     "overflows 64 bits", b->rows, b->nparams);
    return EB_OK;
}

/* One tensor the posterior header implies (PARAMS, MU or SIGMA): f32,
 * exactly rows x K x 4 bytes (parse_posterior proved the product fits),
 * all finite; SIGMA also non-negative. */
static eb_status bind_tensor(eb_bundle *b, const bsec *sec, const char *name, uint32_t rows,
                             unsigned flags, const float **out, eb_error *err)
{
    uint64_t need = (uint64_t)rows * b->nparams * sizeof(float);
    const float *v;
    if (!sec)
        return bfail(b, err, EB_ERR_FORMAT,
                     "representation '%s' needs a %s section and the file has none",
                     eb_repr_name(b->repr), name);
    if (sec->dtype != EB_DTYPE_F32)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section %s: field 'dtype' is %" PRIu32 " (%s); storage f32 needs 1 (f32)",
                     name, sec->dtype, dtype_name(sec->dtype));
    if (sec->size != need)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section %s is %" PRIu64 " bytes but %s needs %" PRIu32 " x %" PRIu64
                     " x 4 = %" PRIu64, name, sec->size, eb_repr_name(b->repr), rows, b->nparams,
                     need);
    /* data is 64-aligned (mmap, or checked by open_memory) and the offset is
     * a multiple of 64, so this is an aligned float array. */
    v = (const float *)(const void *)(b->data + sec->offset);
    if (!(flags & EB_BUNDLE_SKIP_TENSOR_CHECK)) {
        size_t total = (size_t)(need / sizeof(float));
        const int nonneg = sec->type == EB_SEC_SIGMA;
        for (size_t i = 0; i < total; i++) {
            if (!isfinite(v[i]))
                return bfail(b, err, EB_ERR_NUMERIC,
                             "section %s: value [%zu][%zu] is %s; parameters must be finite",
                             name, i / (size_t)b->nparams, i % (size_t)b->nparams,
                             isnan(v[i]) ? "NaN" : "infinite");
            if (nonneg && v[i] < 0.0f)
                return bfail(b, err, EB_ERR_NUMERIC,
                             "section %s: value [%zu] is %g; standard deviations must not be "
                             "negative", name, i, (double)v[i]);
        }
    }
    *out = v;
    return EB_OK;
}

/* The representation's tensors: PARAMS for samples and dropout, MU and
 * SIGMA for gaussian; a tensor of another representation is refused rather
 * than ignored, so a file is never read as something it is not. */
static eb_status bind_params(eb_bundle *b, const bsec *params, const bsec *mu, const bsec *sigma,
                             unsigned flags, eb_error *err)
{
    eb_status st;
    if (b->repr != EB_REPR_GAUSSIAN) {
        if (mu || sigma)
            return bfail(b, err, EB_ERR_FORMAT,
                         "section %s belongs to representation 'gaussian', not '%s'",
                         mu ? "MU" : "SIGMA", eb_repr_name(b->repr));
        return bind_tensor(b, params, "PARAMS", b->rows, flags, &b->params, err);
    }
    if (params)
        return bfail(b, err, EB_ERR_FORMAT,
                     "section PARAMS does not belong to representation 'gaussian' (it has MU "
                     "and SIGMA)");
    st = bind_tensor(b, mu, "MU", 1, flags, &b->params, err);
    if (!st)
        st = bind_tensor(b, sigma, "SIGMA", 1, flags, &b->sigma, err);
    return st;
}

/* Known sections: at most one each, right dtype; unknown ones: refused if
 * required, skipped otherwise. Then the typed contents. */
static eb_status check_sections(eb_bundle *b, int strict, unsigned flags, eb_error *err)
{
    const bsec *meta = NULL, *arch = NULL, *post = NULL, *params = NULL, *mu = NULL,
               *sigma = NULL;
    size_t first[6] = {0, 0, 0, 0, 0, 0};
    long unknown_required = -1;
    char lab[64];
    eb_status st;

    for (uint32_t i = 0; i < b->nsections; i++) {
        const bsec *s = &b->sections[i];
        const bsec **slot = NULL;
        size_t idx = 0;
        switch (s->type) {
        case EB_SEC_META: slot = &meta; idx = 0; break;
        case EB_SEC_ARCH: slot = &arch; idx = 1; break;
        case EB_SEC_POSTERIOR: slot = &post; idx = 2; break;
        case EB_SEC_PARAMS: slot = &params; idx = 3; break;
        case EB_SEC_MU: slot = &mu; idx = 4; break;
        case EB_SEC_SIGMA: slot = &sigma; idx = 5; break;
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
    if (!post)
        return bfail(b, err, EB_ERR_FORMAT, "the required POSTERIOR section is missing");
    st = parse_posterior(b, post, strict, err);
    if (st)
        return st;
    if (unknown_required >= 0)
        return bfail(b, err, EB_ERR_UNSUPPORTED,
                     "%s is marked required but this reader does not implement its type "
                     "(written by a newer edgebayes?)",
                     slabel(lab, &b->sections[unknown_required], (size_t)unknown_required));
    if (!arch)
        return bfail(b, err, EB_ERR_FORMAT, "the required ARCH section is missing");
    if (!meta)
        return bfail(b, err, EB_ERR_FORMAT, "the required META section is missing");
    st = bind_params(b, params, mu, sigma, flags, err);
    if (!st)
        st = parse_arch(b, arch, err);
    if (!st)
        st = parse_meta(b, meta, err);
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

eb_status eb_bundle_open(const char *path, unsigned flags, eb_bundle **out, eb_error *err)
{
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
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        return eb_error_set(err, EB_ERR_IO, "cannot map bundle '%s': %s", path, strerror(e));
    }
    close(fd); /* the mapping keeps the file referenced */
    st = eb_bundle__open_memory(map, len, path, flags, &b, err);
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

/* Sections in the order written: the samples and dropout representations
 * have PARAMS as their fourth, gaussian has MU and SIGMA. */
enum { W_META, W_ARCH, W_POSTERIOR, W_PARAMS, W_SIGMA, W_MAX };

eb_status eb_bundle_write(eb_bundle_writer *w, const char *path, eb_error *err)
{
    unsigned char head[EB_BUNDLE_HEADER_SIZE + W_MAX * EB_BUNDLE_ENTRY_SIZE];
    unsigned char post[EB_BUNDLE_POSTERIOR_SIZE];
    const void *payload[W_MAX];
    uint64_t size[W_MAX], offset[W_MAX], pos;
    uint32_t types[W_MAX] = {EB_SEC_META, EB_SEC_ARCH, EB_SEC_POSTERIOR, EB_SEC_PARAMS,
                             EB_SEC_SIGMA};
    static const uint32_t dtypes[W_MAX] = {EB_DTYPE_BYTES, EB_DTYPE_BYTES, EB_DTYPE_BYTES,
                                           EB_DTYPE_F32, EB_DTYPE_F32};
    const int nsec = w->repr == EB_REPR_GAUSSIAN ? W_MAX : W_SIGMA;
    const size_t head_len = EB_BUNDLE_HEADER_SIZE + (size_t)nsec * EB_BUNDLE_ENTRY_SIZE;
    char *meta_text;
    size_t m = 0;
    eb_tmpfile t;
    eb_status st;

    if (!w->arch)
        return eb_error_set(err, EB_ERR_ARG, "cannot write bundle '%s': no architecture was set "
                            "(eb_bundle_writer_arch)", path);
    if (!w->has_posterior)
        return eb_error_set(err, EB_ERR_ARG, "cannot write bundle '%s': no posterior was set "
                            "(eb_bundle_writer_samples, _dropout or _gaussian)", path);
    if (!host_is_little_endian())
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "cannot write bundle '%s': this host is big-endian", path);

    meta_text = eb_malloc(w->meta_bytes);
    if (!meta_text)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory writing bundle '%s'", path);
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
    wr32(post + EB_BP_STORAGE, EB_STORE_F32);

    payload[W_META] = meta_text;
    size[W_META] = w->meta_bytes;
    payload[W_ARCH] = w->arch;
    size[W_ARCH] = w->arch_len;
    payload[W_POSTERIOR] = post;
    size[W_POSTERIOR] = sizeof post;
    payload[W_PARAMS] = w->theta;
    size[W_PARAMS] = (uint64_t)w->rows * w->nparams * sizeof(float);
    if (w->repr == EB_REPR_GAUSSIAN) {
        types[W_PARAMS] = EB_SEC_MU;
        payload[W_SIGMA] = w->sigma;
        size[W_SIGMA] = w->nparams * sizeof(float);
    }

    /* Layout: header, table right after it, then the sections in table
     * order, each at the next multiple of 64; the file ends where the last
     * (the big tensor) ends. Every unused byte is zero. */
    memset(head, 0, sizeof head);
    pos = EB_BUNDLE_HEADER_SIZE + nsec * EB_BUNDLE_ENTRY_SIZE;
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
    wr16(head + EB_BH_MINOR, EB_BUNDLE_FORMAT_MINOR);
    wr32(head + EB_BH_SECTION_COUNT, (uint32_t)nsec);
    wr64(head + EB_BH_FILE_SIZE, pos);
    wr64(head + EB_BH_TABLE_OFFSET, EB_BUNDLE_HEADER_SIZE);
    wr32(head + EB_BH_TABLE_CRC, eb_bundle__crc32(0, head + EB_BUNDLE_HEADER_SIZE,
                                                  nsec * EB_BUNDLE_ENTRY_SIZE));
    wr32(head + EB_BH_HEADER_CRC, eb_bundle__crc32(0, head, EB_BUNDLE_HEADER_SIZE));

    st = eb_tmpfile_open(&t, path, err);
    if (st) {
        eb_free(meta_text);
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
    if (st) {
        int e = errno; /* before abort's fclose/unlink can change it */
        eb_tmpfile_abort(&t);
        eb_free(meta_text);
        return eb_error_set(err, EB_ERR_IO, "cannot write bundle '%s': %s", path, strerror(e));
    }
    eb_free(meta_text);
    /* Flush, fsync, rename; on failure the temporary file is removed. */
    return eb_tmpfile_commit(&t, err);
}
