/* fuzz_bundle.c: libFuzzer target for the bundle reader (methods/bundle.c).
 * Each input is a whole bundle file. It is copied into a 64-byte-aligned
 * buffer (as eb_bundle_open_memory requires), opened, and every accessor is
 * exercised, reading every parameter, so the sanitizers see any read the
 * validator should have prevented.
 *
 * The CRCs would stop almost every mutation at the first checksum, so an
 * input that fails with EB_ERR_CHECKSUM is opened a second time through
 * the internal entry point with EB_BUNDLE__IGNORE_CRC: the structural
 * checks behind the checksums get fuzzed too, and memory safety is shown
 * not to depend on a CRC. Also built as a plain corpus replayer for CTest
 * (tests/fuzz/replay_main.c). */
#include <stdint.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/bundle_internal.h"
#include "methods/eb_bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touches everything a consumer of the handle could touch. */
static void exercise(const eb_bundle *b)
{
    volatile float sink = 0.0f;
    volatile size_t chars = 0;
    unsigned major, minor;
    const float *p = eb_bundle_params(b);
    uint64_t total = (uint64_t)eb_bundle_param_rows(b) * eb_bundle_nparams(b);
    size_t n;

    chars += strlen(eb_bundle_path(b));
    chars += strlen(eb_bundle_arch(b));
    chars += strlen(eb_repr_name(eb_bundle_repr(b)));
    chars += strlen(eb_storage_name(eb_bundle_storage(b)));
    chars += (size_t)eb_bundle_members(b) + (size_t)eb_bundle_file_size(b);
    eb_bundle_version(b, &major, &minor);
    chars += major + minor;
    if (p) /* f32 storage only */
        for (uint64_t i = 0; i < total; i++)
            sink += p[i];
    chars += strlen(eb_head_name(eb_bundle_head(b)));
    /* Decode every row of every tensor: the reads a sparse index, a row
     * pointer or a scale group could send out of bounds. K is bounded by
     * the file only for dense kinds, so cap the scratch. */
    if (eb_bundle_nparams(b) <= (1u << 20)) {
        float *row = eb_malloc((size_t)eb_bundle_nparams(b) * sizeof *row);
        uint32_t rows = eb_bundle_param_rows(b);
        for (int t = 0; row && t < 2; t++) {
            eb_bundle_stored sv;
            eb_error err;
            eb_bundle_stored_view(b, t, &sv);
            if (!sv.values)
                continue;
            if (sv.rows != rows || sv.k != eb_bundle_nparams(b))
                __builtin_trap();
            if (sv.act_scales) { /* (rows, n_act), each finite and > 0 */
                if (t != EB_TENSOR_PARAMS || sv.n_act == 0)
                    __builtin_trap();
                for (uint64_t i = 0; i < (uint64_t)rows * sv.n_act; i++) {
                    if (!(sv.act_scales[i] > 0.0f))
                        __builtin_trap();
                    sink += sv.act_scales[i];
                }
            }
            for (uint32_t r = 0; r < rows && r < 4096; r++) {
                if (eb_bundle_decode(b, t, r, row, &err) != EB_OK)
                    __builtin_trap(); /* every row of a present tensor decodes */
                for (uint64_t k = 0; k < sv.k; k++)
                    sink += row[k];
            }
        }
        eb_free(row);
    }
    n = eb_bundle_meta_count(b);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v, *got;
        eb_bundle_meta_at(b, i, &k, &v);
        got = eb_bundle_meta_get(b, k);
        if (got != v) /* keys are unique: lookup finds this very entry */
            __builtin_trap();
        chars += strlen(k) + strlen(v);
    }
    if (eb_bundle_meta_get(b, "no.such.key"))
        chars++;
    n = eb_bundle_section_count(b);
    for (size_t i = 0; i < n; i++) {
        eb_bundle_section s;
        eb_bundle_section_info(b, i, &s);
        /* Validation promises these; check the promise. */
        if (s.offset % 64 != 0 || s.offset > eb_bundle_file_size(b) ||
            s.size > eb_bundle_file_size(b) - s.offset)
            __builtin_trap();
        chars += strlen(s.type_name) + strlen(s.dtype_name);
    }
    if ((uintptr_t)p % 64 != 0 || (p && eb_bundle_storage(b) != EB_STORE_F32))
        __builtin_trap();
    (void)sink;
    (void)chars;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eb_bundle *b = NULL;
    eb_error err;
    eb_status st;
    unsigned char *buf = eb_malloc_aligned(64, size);

    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    st = eb_bundle_open_memory(buf, size, "fuzz.ebb", EB_BUNDLE_OPEN_DEFAULT, &b, &err);
    if (st == EB_OK) {
        exercise(b);
        eb_bundle_close(b);
    } else {
        if (b || err.msg[0] == '\0')
            __builtin_trap(); /* failures leave no handle and always explain */
        if (st == EB_ERR_CHECKSUM &&
            eb_bundle__open_memory(buf, size, "fuzz.ebb", EB_BUNDLE__IGNORE_CRC, &b, &err) ==
                EB_OK) {
            exercise(b);
            eb_bundle_close(b);
        }
    }
    /* The fast-load path skips the tensor CRC and scan but must be just as
     * safe: once as a caller would use it, once behind the CRCs. */
    st = eb_bundle_open_memory(buf, size, "fuzz.ebb", EB_BUNDLE_SKIP_TENSOR_CHECK, &b, &err);
    if (st == EB_ERR_CHECKSUM)
        st = eb_bundle__open_memory(buf, size, "fuzz.ebb",
                                    EB_BUNDLE_SKIP_TENSOR_CHECK | EB_BUNDLE__IGNORE_CRC, &b, &err);
    if (st == EB_OK) {
        exercise(b);
        eb_bundle_close(b);
    }
    eb_free_aligned(buf);
    return 0;
}
