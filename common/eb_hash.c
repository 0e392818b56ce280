/* eb_hash.c: SHA-256 through libcrypto's EVP interface. */
#include "common/eb_hash.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

struct eb_sha256 {
    EVP_MD_CTX *md;
};

#include "common/eb_alloc.h"

eb_status eb_sha256_new(eb_sha256 **out, eb_error *err)
{
    eb_sha256 *c = eb_calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory creating a SHA-256 context");
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        eb_sha256_free(c);
        return eb_error_set(err, EB_ERR_INTERNAL, "libcrypto could not start a SHA-256 digest");
    }
    *out = c;
    return EB_OK;
}

eb_status eb_sha256_update(eb_sha256 *c, const void *data, size_t len, eb_error *err)
{
    if (len && EVP_DigestUpdate(c->md, data, len) != 1)
        return eb_error_set(err, EB_ERR_INTERNAL, "libcrypto SHA-256 update failed");
    return EB_OK;
}

eb_status eb_sha256_final(eb_sha256 *c, char hex[EB_SHA256_HEX_LEN + 1], eb_error *err)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char digits[] = "0123456789abcdef";

    if (EVP_DigestFinal_ex(c->md, d, &n) != 1 || n != 32)
        return eb_error_set(err, EB_ERR_INTERNAL, "libcrypto SHA-256 final failed");
    for (unsigned int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
    return EB_OK;
}

void eb_sha256_free(eb_sha256 *c)
{
    if (!c)
        return;
    EVP_MD_CTX_free(c->md);
    eb_free(c);
}

eb_status eb_sha256_buffer(const void *data, size_t len, char hex[EB_SHA256_HEX_LEN + 1],
                           eb_error *err)
{
    eb_sha256 *c;
    eb_status st = eb_sha256_new(&c, err);
    if (st)
        return st;
    st = eb_sha256_update(c, data, len, err);
    if (!st)
        st = eb_sha256_final(c, hex, err);
    eb_sha256_free(c);
    return st;
}

eb_status eb_sha256_file(const char *path, char hex[EB_SHA256_HEX_LEN + 1], eb_error *err)
{
    unsigned char buf[1 << 16];
    eb_sha256 *c;
    eb_status st;
    size_t got;
    FILE *fp = fopen(path, "rb");

    if (!fp)
        return eb_error_set(err, errno == ENOENT ? EB_ERR_NOTFOUND : EB_ERR_IO,
                            "cannot open '%s' to hash it: %s", path, strerror(errno));
    st = eb_sha256_new(&c, err);
    if (st) {
        fclose(fp);
        return st;
    }
    while (!st && (got = fread(buf, 1, sizeof buf, fp)) > 0)
        st = eb_sha256_update(c, buf, got, err);
    if (!st && ferror(fp))
        st = eb_error_set(err, EB_ERR_IO, "cannot read '%s' to hash it", path);
    if (!st)
        st = eb_sha256_final(c, hex, err);
    eb_sha256_free(c);
    fclose(fp);
    return st;
}

int eb_sha256_hex_valid(const char *s)
{
    size_t i;
    for (i = 0; i < 64; i++)
        if (!s[i] || !isxdigit((unsigned char)s[i]))
            return 0;
    return s[64] == '\0';
}
