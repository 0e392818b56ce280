/* fuzz_idx.c: libFuzzer target for the IDX reader (raw and gzip).
 *
 * Every input must give either a well-formed array or an error whose
 * message names the input, never a crash, a leak or an out-of-bounds
 * read. Random bytes rarely survive as valid deflate data, so each input
 * is also gzip-compressed here and parsed again: the gzip path then sees
 * arbitrary decompressed content (lying headers, short and long data),
 * and must agree with the raw path on the status and the data. Contract
 * violations abort, so libFuzzer records them as crashes. CTest replays
 * tests/fuzz/corpus/idx through this file (replay_idx). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "harness/eb_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the parse contract; returns the status. */
static eb_status parse_checked(const uint8_t *data, size_t size, eb_idx *idx)
{
    eb_error err;
    eb_status st;

    eb_error_clear(&err);
    st = eb_idx_parse(data, size, "fuzz.idx", idx, &err);
    if (st == EB_OK) {
        size_t count = 1, esize = eb_idx_type_size(idx->type);
        volatile unsigned char sum = 0;
        if (esize == 0 || idx->ndim < 1 || idx->ndim > EB_IDX_MAX_DIMS || !idx->data)
            abort();
        for (int i = 0; i < idx->ndim; i++)
            count *= idx->dims[i];
        if (count != idx->count || count * esize > EB_IDX_MAX_DATA_BYTES)
            abort();
        /* Touch every byte so the sanitizer sees any short allocation. */
        for (size_t i = 0; i < count * esize; i++)
            sum ^= ((const unsigned char *)idx->data)[i];
        (void)sum;
    } else if (idx->data || idx->count || err.code != st || !strstr(err.msg, "fuzz.idx")) {
        /* A failure leaves nothing owned and explains itself. */
        abort();
    }
    return st;
}

/* gzip of data into a new malloc'd buffer (NULL if zlib fails). */
static unsigned char *gzip_of(const uint8_t *data, size_t size, size_t *out_len)
{
    z_stream zs;
    size_t cap = size + size / 100 + 64;
    unsigned char *out = malloc(cap);

    memset(&zs, 0, sizeof zs);
    if (!out || deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 1, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(out);
        return NULL;
    }
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)size;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
        deflateEnd(&zs);
        free(out);
        return NULL;
    }
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eb_idx raw, gz;
    eb_status st_raw, st_gz;
    unsigned char *packed;
    size_t packed_len = 0;

    st_raw = parse_checked(data, size, &raw);
    /* An input that is itself gzip would become gzip-of-gzip, which is
     * (rightly) not IDX: no comparison there. */
    if (!(size >= 2 && data[0] == 0x1f && data[1] == 0x8b) &&
        (packed = gzip_of(data, size, &packed_len)) != NULL) {
        st_gz = parse_checked(packed, packed_len, &gz);
        if (st_gz != st_raw)
            abort();
        if (st_raw == EB_OK &&
            (gz.type != raw.type || gz.count != raw.count ||
             memcmp(gz.dims, raw.dims, sizeof raw.dims) != 0 ||
             memcmp(gz.data, raw.data, raw.count * eb_idx_type_size(raw.type)) != 0))
            abort();
        eb_idx_free(&gz);
        free(packed);
    }
    eb_idx_free(&raw);
    return 0;
}
