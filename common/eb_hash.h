/* eb_hash.h: SHA-256 digests through OpenSSL's libcrypto, as lowercase
 * hex. Used to verify fetched datasets and to content-address bundles. */
#ifndef EB_HASH_H
#define EB_HASH_H

#include <stddef.h>

#include "common/eb_status.h"

#define EB_SHA256_HEX_LEN 64

typedef struct eb_sha256 eb_sha256; /* opaque streaming context */

/* The caller frees the context with eb_sha256_free (also after final). */
eb_status eb_sha256_new(eb_sha256 **ctx, eb_error *err);
eb_status eb_sha256_update(eb_sha256 *ctx, const void *data, size_t len, eb_error *err);
/* Writes 64 hex digits and a NUL into hex[65]. */
eb_status eb_sha256_final(eb_sha256 *ctx, char hex[EB_SHA256_HEX_LEN + 1], eb_error *err);
void eb_sha256_free(eb_sha256 *ctx);

/* One-shot digests of a buffer and of a whole file. */
eb_status eb_sha256_buffer(const void *data, size_t len, char hex[EB_SHA256_HEX_LEN + 1],
                           eb_error *err);
eb_status eb_sha256_file(const char *path, char hex[EB_SHA256_HEX_LEN + 1], eb_error *err);

/* 1 if s is exactly 64 hex digits (either case). */
int eb_sha256_hex_valid(const char *s);

#endif /* EB_HASH_H */
