/* idx.c: reads and writes IDX files (the container of MNIST and
 * Fashion-MNIST), raw or gzip-compressed.
 *
 * Owns eb_idx_parse, eb_idx_read_file, eb_idx_write_file, eb_idx_free and
 * the type helpers. Every input is treated as hostile: the header is
 * checked field by field before anything is allocated from it, the data
 * must be exactly as long as the header says, and gzip output is never
 * allowed to grow past what the header declares (plus a bounded look past
 * the end to report trailing bytes), so a decompression bomb costs at most
 * EB_IDX_MAX_DATA_BYTES of memory.
 *
 * A file is read whole into memory and then parsed, so files and the fuzzer
 * go through exactly the same code (eb_idx_parse). */
#include "harness/eb_data.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"

size_t eb_idx_type_size(uint8_t type)
{
    switch (type) {
    case EB_IDX_UBYTE:
    case EB_IDX_SBYTE:
        return 1;
    case EB_IDX_SHORT:
        return 2;
    case EB_IDX_INT:
    case EB_IDX_FLOAT:
        return 4;
    case EB_IDX_DOUBLE:
        return 8;
    default:
        return 0;
    }
}

const char *eb_idx_type_name(uint8_t type)
{
    switch (type) {
    case EB_IDX_UBYTE:
        return "ubyte";
    case EB_IDX_SBYTE:
        return "sbyte";
    case EB_IDX_SHORT:
        return "short";
    case EB_IDX_INT:
        return "int";
    case EB_IDX_FLOAT:
        return "float";
    case EB_IDX_DOUBLE:
        return "double";
    default:
        return "unknown";
    }
}

/* zlib allocates through the project allocator, so failure injection
 * reaches inside inflate and deflate too. */
static voidpf zalloc_eb(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return eb_calloc(items, size);
}

static void zfree_eb(voidpf opaque, voidpf ptr)
{
    (void)opaque;
    eb_free(ptr);
}

/* "10000 x 28 x 28" into buf. */
static void format_dims(char *buf, size_t len, int ndim, const uint32_t *dims)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < len; i++) {
        int n = snprintf(buf + used, len - used, i ? " x %lu" : "%lu", (unsigned long)dims[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* ------------------------------------------------------------ reading -- */

/* A byte stream over an in-memory file: the bytes themselves, or their
 * gzip decompression. Everything the parser reads comes through src_read. */
typedef struct idx_src {
    const char *name;
    const unsigned char *buf;
    size_t len;
    size_t pos; /* raw: next byte to deliver; gzip: next byte to hand to zlib */
    int gzip;
    int zs_live; /* inflateInit2 succeeded: inflateEnd is owed */
    int ended;   /* gzip: the last member has ended and nothing follows */
    z_stream zs;
} idx_src;

static eb_status src_open(idx_src *s, const void *buf, size_t len, const char *name,
                          eb_error *err)
{
    int rc;

    memset(s, 0, sizeof *s);
    s->name = name;
    s->buf = buf;
    s->len = len;
    s->gzip = len >= 2 && s->buf[0] == 0x1f && s->buf[1] == 0x8b;
    if (!s->gzip)
        return EB_OK;
    s->zs.zalloc = zalloc_eb;
    s->zs.zfree = zfree_eb;
    /* 15 + 16: a gzip wrapper only (the magic told us so); zlib checks the
     * CRC-32 and length in each member's trailer. */
    rc = inflateInit2(&s->zs, 15 + 16);
    if (rc != Z_OK)
        return eb_error_set(err, rc == Z_MEM_ERROR ? EB_ERR_NOMEM : EB_ERR_INTERNAL,
                            "%s: cannot start gzip decompression (zlib error %d)", name, rc);
    s->zs_live = 1;
    return EB_OK;
}

static void src_close(idx_src *s)
{
    if (s->zs_live)
        inflateEnd(&s->zs);
    s->zs_live = 0;
}

/* Offset in the compressed input of the next byte zlib will consume. */
static size_t src_in_offset(const idx_src *s)
{
    return s->pos - s->zs.avail_in;
}

/* Delivers up to n bytes into dst and sets *got. *got < n only at the end
 * of the stream. Gzip corruption, a cut-short stream or garbage after the
 * last member is an EB_ERR_FORMAT. Concatenated gzip members are one
 * stream, as gunzip treats them. */
static eb_status src_read(idx_src *s, void *dst, size_t n, size_t *got, eb_error *err)
{
    unsigned char *out = dst;

    *got = 0;
    if (!s->gzip) {
        size_t k = s->len - s->pos < n ? s->len - s->pos : n;
        if (k)
            memcpy(out, s->buf + s->pos, k);
        s->pos += k;
        *got = k;
        return EB_OK;
    }
    while (*got < n && !s->ended) {
        size_t want = n - *got;
        uInt avail_before;
        int rc;

        /* zlib counts in uInt; feed and drain in slices that fit. */
        if (s->zs.avail_in == 0 && s->pos < s->len) {
            size_t k = s->len - s->pos < (size_t)1 << 30 ? s->len - s->pos : (size_t)1 << 30;
            s->zs.next_in = (Bytef *)(s->buf + s->pos);
            s->zs.avail_in = (uInt)k;
            s->pos += k;
        }
        avail_before = want < (size_t)1 << 30 ? (uInt)want : (uInt)1 << 30;
        s->zs.next_out = out + *got;
        s->zs.avail_out = avail_before;
        rc = inflate(&s->zs, Z_NO_FLUSH);
        *got += avail_before - s->zs.avail_out;
        if (rc == Z_STREAM_END) {
            size_t off = src_in_offset(s);
            if (off == s->len) {
                s->ended = 1;
            } else if (s->len - off >= 2 && s->buf[off] == 0x1f && s->buf[off + 1] == 0x8b) {
                if (inflateReset(&s->zs) != Z_OK)
                    return eb_error_set(err, EB_ERR_INTERNAL,
                                        "%s: zlib could not restart at the gzip member at "
                                        "byte %zu", s->name, off);
            } else {
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "%s: %zu byte%s of garbage follow%s the end of the gzip "
                                    "stream at byte %zu", s->name, s->len - off,
                                    s->len - off == 1 ? "" : "s", s->len - off == 1 ? "s" : "",
                                    off);
            }
        } else if (rc == Z_BUF_ERROR) {
            /* No progress possible: output space remains, so the input ran
             * out before the member's end marker. */
            if (s->zs.avail_in == 0 && s->pos == s->len)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "%s: the gzip stream is cut short: the file ends at byte "
                                    "%zu before the compressed data is complete",
                                    s->name, s->len);
            return eb_error_set(err, EB_ERR_INTERNAL,
                                "%s: zlib made no progress at compressed byte %zu", s->name,
                                src_in_offset(s));
        } else if (rc == Z_MEM_ERROR) {
            return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory decompressing gzip data",
                                s->name);
        } else if (rc != Z_OK) {
            /* Z_DATA_ERROR (bad deflate data, CRC or length mismatch) and
             * Z_NEED_DICT (gzip never uses one) both mean corruption. */
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: corrupt gzip data near compressed byte %zu: %s", s->name,
                                src_in_offset(s), s->zs.msg ? s->zs.msg : "invalid stream");
        } else if (s->zs.avail_in == 0 && s->pos == s->len &&
                   s->zs.avail_out == avail_before) {
            /* Z_OK without progress and without input left: same as above. */
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: the gzip stream is cut short: the file ends at byte "
                                "%zu before the compressed data is complete",
                                s->name, s->len);
        }
    }
    return EB_OK;
}

/* Reports a data length that differs from the header's. `have_is_floor`:
 * the file holds at least `have` bytes (we stopped counting). */
static eb_status length_error(const char *name, int ndim, const uint32_t *dims, uint8_t type,
                              uint64_t want, uint64_t have, int have_is_floor, eb_error *err)
{
    char shape[64];
    const char *extra = have > want ? "too much" : "too little";

    format_dims(shape, sizeof shape, ndim, dims);
    if (eb_idx_type_size(type) == 1)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: header says %s bytes of data but the file holds %s%llu (%s)",
                            name, shape, have_is_floor ? "more than " : "",
                            (unsigned long long)have, extra);
    return eb_error_set(err, EB_ERR_FORMAT,
                        "%s: header says %s %s values (%llu bytes) of data but the file "
                        "holds %s%llu bytes (%s)",
                        name, shape, eb_idx_type_name(type), (unsigned long long)want,
                        have_is_floor ? "more than " : "", (unsigned long long)have, extra);
}

/* Big-endian elements to host order, in place. */
static void to_host_order(unsigned char *p, size_t count, size_t size)
{
    for (size_t i = 0; i < count; i++, p += size) {
        if (size == 2) {
            uint16_t v = (uint16_t)((unsigned)p[0] << 8 | p[1]);
            memcpy(p, &v, 2);
        } else if (size == 4) {
            uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            memcpy(p, &v, 4);
        } else if (size == 8) {
            uint64_t v = 0;
            for (int b = 0; b < 8; b++)
                v = v << 8 | p[b];
            memcpy(p, &v, 8);
        }
    }
}

/* Checks a header's type, rank and dims; on success stores the element
 * count and data byte count. Shared by the reader and the writer. */
static eb_status check_shape(const char *name, uint8_t type, int ndim, const uint32_t *dims,
                             size_t *count, uint64_t *nbytes, eb_error *err)
{
    size_t esize = eb_idx_type_size(type);
    uint64_t n = 1;
    char shape[64];

    if (esize == 0)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: unknown IDX data type 0x%02x (known: 0x08 ubyte, 0x09 sbyte, "
                            "0x0B short, 0x0C int, 0x0D float, 0x0E double)", name, type);
    if (ndim < 1 || ndim > EB_IDX_MAX_DIMS)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: header declares %d dimensions; this reader accepts 1 to %d",
                            name, ndim, EB_IDX_MAX_DIMS);
    format_dims(shape, sizeof shape, ndim, dims);
    for (int i = 0; i < ndim; i++)
        if (dims[i] == 0)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: dimension %d of %d is 0 (header says %s); every "
                                "dimension must be at least 1", name, i + 1, ndim, shape);
    /* Each step stays below the cap, so the product cannot overflow. */
    for (int i = 0; i < ndim; i++) {
        if (n > EB_IDX_MAX_DATA_BYTES / esize / dims[i])
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: header says %s %s values, more than the %llu-byte limit "
                                "on IDX data", name, shape, eb_idx_type_name(type),
                                (unsigned long long)EB_IDX_MAX_DATA_BYTES);
        n *= dims[i];
    }
    *count = (size_t)n;
    *nbytes = n * esize;
    return EB_OK;
}

/* Reads the data that follows the header into a new buffer of exactly
 * nbytes, then makes sure nothing follows it. */
static eb_status read_data(idx_src *s, const eb_idx *hdr, uint64_t nbytes, unsigned char **data,
                           eb_error *err)
{
    unsigned char *buf = NULL;
    size_t have = 0, cap = 0, got;
    eb_status st;

    *data = NULL;
    if (!s->gzip) {
        /* The length is known: check it before allocating anything. */
        size_t left = s->len - s->pos;
        if (left != nbytes)
            return length_error(s->name, hdr->ndim, hdr->dims, hdr->type, nbytes, left, 0, err);
        buf = eb_malloc((size_t)nbytes);
        if (!buf)
            return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory for %llu bytes of data",
                                s->name, (unsigned long long)nbytes);
        st = src_read(s, buf, (size_t)nbytes, &got, err); /* raw reads cannot fail */
        *data = buf;
        return st;
    }
    /* Gzip: the real length is unknown until the stream ends, so the
     * buffer grows with what actually arrives (at most doubling), never
     * trusting the header with a large allocation up front. */
    while (have < nbytes) {
        if (have == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 16;
            unsigned char *nb;
            if (ncap > nbytes)
                ncap = (size_t)nbytes;
            nb = eb_realloc(buf, ncap);
            if (!nb) {
                eb_free(buf);
                return eb_error_set(err, EB_ERR_NOMEM,
                                    "%s: out of memory for %zu bytes of data", s->name, ncap);
            }
            buf = nb;
            cap = ncap;
        }
        st = src_read(s, buf + have, cap - have, &got, err);
        if (st) {
            eb_free(buf);
            return st;
        }
        have += got;
        if (have < cap)
            break; /* end of stream */
    }
    if (have < nbytes) {
        eb_free(buf);
        return length_error(s->name, hdr->ndim, hdr->dims, hdr->type, nbytes, have, 0, err);
    }
    /* Drain the rest of the stream: this both checks the gzip trailer (a
     * CRC error after the last data byte is still corruption) and counts
     * trailing bytes, up to a bound so a bomb cannot keep us busy. */
    {
        unsigned char scratch[4096];
        uint64_t extra = 0;
        do {
            st = src_read(s, scratch, sizeof scratch, &got, err);
            if (st) {
                eb_free(buf);
                return st;
            }
            extra += got;
        } while (got == sizeof scratch && extra <= EB_IDX_MAX_DATA_BYTES);
        if (extra) {
            eb_free(buf);
            return length_error(s->name, hdr->ndim, hdr->dims, hdr->type, nbytes,
                                nbytes + extra, got == sizeof scratch, err);
        }
    }
    *data = buf;
    return EB_OK;
}

eb_status eb_idx_parse(const void *buf, size_t len, const char *name, eb_idx *out,
                       eb_error *err)
{
    unsigned char head[4 + 4 * EB_IDX_MAX_DIMS];
    unsigned char *data = NULL;
    idx_src s;
    eb_idx h;
    uint64_t nbytes = 0;
    size_t got;
    eb_status st;

    if (out)
        memset(out, 0, sizeof *out);
    if (!name)
        name = "<memory>";
    if (!out || (!buf && len))
        return eb_error_set(err, EB_ERR_ARG, "%s: eb_idx_parse needs a buffer and an output",
                            name);
    memset(&h, 0, sizeof h);
    st = src_open(&s, buf, len, name, err);
    if (st)
        return st;

    st = src_read(&s, head, 4, &got, err);
    if (st)
        goto done;
    if (got < 4) {
        st = eb_error_set(err, EB_ERR_FORMAT,
                          "%s: the file ends after %zu byte%s, inside the 4-byte IDX header "
                          "(two zero bytes, type, dimension count)", name, got,
                          got == 1 ? "" : "s");
        goto done;
    }
    if (head[0] != 0 || head[1] != 0) {
        st = eb_error_set(err, EB_ERR_FORMAT,
                          "%s: not an IDX file: it starts with bytes 0x%02x 0x%02x where IDX "
                          "has two zero bytes", name, head[0], head[1]);
        goto done;
    }
    h.type = head[2];
    h.ndim = head[3];
    if (eb_idx_type_size(h.type) == 0 || h.ndim < 1 || h.ndim > EB_IDX_MAX_DIMS) {
        st = check_shape(name, h.type, h.ndim, h.dims, &h.count, &nbytes, err);
        goto done;
    }
    st = src_read(&s, head + 4, 4 * (size_t)h.ndim, &got, err);
    if (st)
        goto done;
    if (got < 4 * (size_t)h.ndim) {
        st = eb_error_set(err, EB_ERR_FORMAT,
                          "%s: the file ends after %zu bytes, inside the header, which "
                          "declares %d dimensions and so needs %d bytes", name, 4 + got,
                          h.ndim, 4 + 4 * h.ndim);
        goto done;
    }
    for (int i = 0; i < h.ndim; i++) {
        const unsigned char *p = head + 4 + 4 * i;
        h.dims[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    }
    st = check_shape(name, h.type, h.ndim, h.dims, &h.count, &nbytes, err);
    if (st)
        goto done;
    st = read_data(&s, &h, nbytes, &data, err);
    if (st)
        goto done;
    to_host_order(data, h.count, eb_idx_type_size(h.type));
    h.data = data;
    *out = h;
done:
    src_close(&s);
    return st;
}

eb_status eb_idx_read_file(const char *path, eb_idx *out, eb_error *err)
{
    char *buf;
    size_t len;
    eb_status st;

    if (out)
        memset(out, 0, sizeof *out);
    st = eb_file_read_all(path, &buf, &len, err);
    if (st)
        return st;
    st = eb_idx_parse(buf, len, path, out, err);
    eb_free(buf);
    return st;
}

void eb_idx_free(eb_idx *idx)
{
    if (!idx)
        return;
    eb_free(idx->data);
    memset(idx, 0, sizeof *idx);
}

/* ------------------------------------------------------------ writing -- */

/* Where written bytes go: straight to the file, or through deflate. */
typedef struct idx_sink {
    const char *path;
    FILE *fp;
    int gzip;
    z_stream zs;
    unsigned char zbuf[1 << 16];
} idx_sink;

static eb_status sink_deflate(idx_sink *k, const void *p, size_t n, int flush, eb_error *err)
{
    int rc;

    k->zs.next_in = (Bytef *)p;
    k->zs.avail_in = (uInt)n; /* callers pass at most 64 KiB */
    do {
        size_t produced;
        k->zs.next_out = k->zbuf;
        k->zs.avail_out = sizeof k->zbuf;
        rc = deflate(&k->zs, flush);
        if (rc == Z_STREAM_ERROR)
            return eb_error_set(err, EB_ERR_INTERNAL, "%s: zlib deflate failed", k->path);
        produced = sizeof k->zbuf - k->zs.avail_out;
        if (produced && fwrite(k->zbuf, 1, produced, k->fp) != produced)
            return eb_error_set(err, EB_ERR_IO, "cannot write '%s'", k->path);
    } while (k->zs.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
    return EB_OK;
}

static eb_status sink_write(idx_sink *k, const void *p, size_t n, eb_error *err)
{
    if (k->gzip)
        return sink_deflate(k, p, n, Z_NO_FLUSH, err);
    if (n && fwrite(p, 1, n, k->fp) != n)
        return eb_error_set(err, EB_ERR_IO, "cannot write '%s'", k->path);
    return EB_OK;
}

/* Host-order elements to big-endian bytes. */
static void to_big_endian(unsigned char *dst, const unsigned char *src, size_t count,
                          size_t size)
{
    for (size_t i = 0; i < count; i++, dst += size, src += size) {
        if (size == 1) {
            dst[0] = src[0];
        } else if (size == 2) {
            uint16_t v;
            memcpy(&v, src, 2);
            dst[0] = (unsigned char)(v >> 8);
            dst[1] = (unsigned char)v;
        } else if (size == 4) {
            uint32_t v;
            memcpy(&v, src, 4);
            for (int b = 0; b < 4; b++)
                dst[b] = (unsigned char)(v >> (24 - 8 * b));
        } else {
            uint64_t v;
            memcpy(&v, src, 8);
            for (int b = 0; b < 8; b++)
                dst[b] = (unsigned char)(v >> (56 - 8 * b));
        }
    }
}

eb_status eb_idx_write_file(const char *path, uint8_t type, int ndim, const uint32_t *dims,
                            const void *data, int gzip, eb_error *err)
{
    unsigned char head[4 + 4 * EB_IDX_MAX_DIMS];
    unsigned char chunk[1 << 16];
    const unsigned char *src = data;
    size_t count = 0, esize, per_chunk, done = 0;
    uint64_t nbytes;
    eb_tmpfile t;
    idx_sink *k;
    eb_status st;

    if (!path || !dims || !data)
        return eb_error_set(err, EB_ERR_ARG, "%s: eb_idx_write_file needs a path, dims and data",
                            path ? path : "<no path>");
    if (ndim < 1 || ndim > EB_IDX_MAX_DIMS)
        return eb_error_set(err, EB_ERR_ARG, "%s: cannot write %d dimensions; IDX files here "
                            "have 1 to %d", path, ndim, EB_IDX_MAX_DIMS);
    st = check_shape(path, type, ndim, dims, &count, &nbytes, err);
    if (st) {
        /* The same rules as the reader's, but here the caller is at fault. */
        eb_error_prefix(err, "refusing to write an IDX file: ");
        if (err)
            err->code = EB_ERR_ARG;
        return EB_ERR_ARG;
    }
    esize = eb_idx_type_size(type);

    /* The sink holds a 64 KiB buffer: keep it off the stack. */
    k = eb_calloc(1, sizeof *k);
    if (!k)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory preparing to write", path);
    k->path = path;
    k->gzip = gzip != 0;
    if (k->gzip) {
        k->zs.zalloc = zalloc_eb;
        k->zs.zfree = zfree_eb;
        /* 15 + 16: gzip wrapper. zlib's default header has no name and a
         * zero mtime, so equal data gives byte-identical files. */
        if (deflateInit2(&k->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
            eb_free(k);
            return eb_error_set(err, EB_ERR_NOMEM, "%s: cannot start gzip compression", path);
        }
    }
    st = eb_tmpfile_open(&t, path, err);
    if (st)
        goto fail_nofile;
    k->fp = t.fp;

    head[0] = head[1] = 0;
    head[2] = type;
    head[3] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++)
        for (int b = 0; b < 4; b++)
            head[4 + 4 * i + b] = (unsigned char)(dims[i] >> (24 - 8 * b));
    st = sink_write(k, head, 4 + 4 * (size_t)ndim, err);
    per_chunk = sizeof chunk / esize;
    while (!st && done < count) {
        size_t n = count - done < per_chunk ? count - done : per_chunk;
        to_big_endian(chunk, src + done * esize, n, esize);
        st = sink_write(k, chunk, n * esize, err);
        done += n;
    }
    if (!st && k->gzip)
        st = sink_deflate(k, NULL, 0, Z_FINISH, err);
    if (st) {
        eb_tmpfile_abort(&t);
        goto fail_nofile;
    }
    st = eb_tmpfile_commit(&t, err);
fail_nofile:
    if (k->gzip)
        deflateEnd(&k->zs);
    eb_free(k);
    return st;
}
