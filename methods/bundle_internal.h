/* bundle_internal.h: the bundle file's on-disk constants and the one
 * internal entry point, shared by methods/bundle.c, its unit test and its
 * fuzz target. Not API: docs/bundle-format.md is the authority for the
 * layout, and these numbers must match its tables. */
#ifndef EB_BUNDLE_INTERNAL_H
#define EB_BUNDLE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "methods/eb_bundle.h"

/* PNG-style magic: a high-bit byte (catches 7-bit channels), "EBB", then
 * CR LF, ^Z, LF (catch text-mode line-ending conversion and DOS `type`). */
#define EB_BUNDLE_MAGIC "\x89" "EBB\r\n\x1a\n"
#define EB_BUNDLE_MAGIC_LEN 8

#define EB_BUNDLE_ALIGN 64u
#define EB_BUNDLE_HEADER_SIZE 64u
#define EB_BUNDLE_ENTRY_SIZE 32u
#define EB_BUNDLE_POSTERIOR_SIZE 32u
/* A reader limit, not a format one: far above what any bundle needs, low
 * enough that a hostile count cannot make open() allocate much. */
#define EB_BUNDLE_MAX_SECTIONS 1024u

/* Header field offsets (64 bytes). */
enum {
    EB_BH_MAGIC = 0,          /* u8[8] */
    EB_BH_MAJOR = 8,          /* u16 */
    EB_BH_MINOR = 10,         /* u16 */
    EB_BH_SECTION_COUNT = 12, /* u32 */
    EB_BH_FILE_SIZE = 16,     /* u64 */
    EB_BH_TABLE_OFFSET = 24,  /* u64 */
    EB_BH_TABLE_CRC = 32,     /* u32: CRC-32 of the whole section table */
    EB_BH_HEADER_CRC = 36,    /* u32: CRC-32 of these 64 bytes, this field zero */
    EB_BH_RESERVED = 40       /* u8[24], zero */
};

/* Section table entry field offsets (32 bytes). */
enum {
    EB_BE_TYPE = 0,    /* u32 */
    EB_BE_DTYPE = 4,   /* u32 */
    EB_BE_OFFSET = 8,  /* u64 */
    EB_BE_SIZE = 16,   /* u64 */
    EB_BE_CRC = 24,    /* u32: CRC-32 of the payload */
    EB_BE_FLAGS = 28   /* u32 */
};

/* Entry flags. */
#define EB_BUNDLE_FLAG_REQUIRED 1u
#define EB_BUNDLE_FLAGS_KNOWN EB_BUNDLE_FLAG_REQUIRED

/* POSTERIOR section field offsets (32 bytes). */
enum {
    EB_BP_KIND = 0,     /* u32 eb_repr_kind */
    EB_BP_MEMBERS = 4,  /* u32 S */
    EB_BP_NPARAMS = 8,  /* u64 K */
    EB_BP_STORAGE = 16, /* u32 eb_storage_kind */
    EB_BP_HEAD = 20,    /* u32 eb_head_kind (1.1; reserved zero in 1.0): distilled only */
    EB_BP_RESERVED = 24 /* u8[8], zero */
};

/* Section types. 1-15: structure and text; 16 and up: tensors. HEAD is
 * reserved (1.1 keeps the head kind in POSTERIOR and the head's weights in
 * theta); this reader treats it as unknown (refused if marked required).
 * Types from 0x80000000 are never assigned: free for private experiments. */
enum {
    EB_SEC_META = 1,
    EB_SEC_ARCH = 2,
    EB_SEC_POSTERIOR = 3,
    EB_SEC_PARAMS = 16, /* values: (S, K) samples, (1, K) dropout/distilled; sparse: see docs */
    EB_SEC_MU = 17,     /* gaussian mean (K), stored like PARAMS */
    EB_SEC_SIGMA = 18,  /* gaussian standard deviation (K), stored like PARAMS */
    EB_SEC_SCALES = 19, /* int8: f32 (tensors x rows, groups) */
    EB_SEC_INDEX = 20,  /* shared-sparse: u32 (N); csr: u32 (nnz) */
    EB_SEC_HEAD = 21,   /* reserved: distilled head */
    EB_SEC_GROUPS = 22, /* int8: u64 (groups + 1) offsets 0 .. K */
    EB_SEC_ROWPTR = 23, /* csr: u64 (rows + 1) offsets 0 .. nnz */
    EB_SEC_ACTSCALES = 24 /* int8 samples/distilled (1.2): f32 (rows, L) static activation scales */
};

/* Element types of a section's payload (entry field dtype). */
enum {
    EB_DTYPE_BYTES = 0, /* text or a fixed binary structure */
    EB_DTYPE_F32 = 1,
    EB_DTYPE_F16 = 2,
    EB_DTYPE_I8 = 3,
    EB_DTYPE_U32 = 4,
    EB_DTYPE_U64 = 5 /* 1.1 */
};

/* Internal open flag: CRC mismatches are not fatal. Only the fuzz target
 * uses it, so mutations behind the CRCs reach the structural checks; it
 * shows that memory safety never depends on a checksum. The public open
 * functions refuse it. */
#define EB_BUNDLE__IGNORE_CRC 0x80000000u

/* eb_bundle_open_memory with internal flags allowed. */
eb_status eb_bundle__open_memory(const void *data, size_t len, const char *name, unsigned flags,
                                 eb_bundle **out, eb_error *err);

/* IEEE binary16 <-> binary32. to_f16 rounds to nearest even (overflow
 * gives infinity, NaN stays NaN); from_f16 is exact. Shared with the tests,
 * which check them against an independent reference. */
uint16_t eb_bundle__f32_to_f16(float v);
float eb_bundle__f16_to_f32(uint16_t h);

/* zlib's crc32 over any length (zlib takes uInt lengths). */
uint32_t eb_bundle__crc32(uint32_t crc, const void *data, uint64_t len);

#endif /* EB_BUNDLE_INTERNAL_H */
