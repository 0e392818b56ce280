/* fetch.c: downloads a URL into the content-addressed cache through libcurl
 * and verifies it by SHA-256.
 *
 * Owns eb_fetch and eb_fetch_options_default. Every transfer (file://,
 * http://, https://) goes through libcurl so local and remote sources
 * behave the same. The cache invariant: a file at <cache>/<sha256>/<name>
 * has that digest. It holds because a download is written to a temporary
 * file beside the target, hashed as it streams, and renamed into place
 * only after the digest matches; any failure removes the temporary file
 * (and the digest's directory when it is left empty). */
#include "harness/eb_data.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"

#define FETCH_DEFAULT_CONNECT_MS 30000L
#define FETCH_DEFAULT_STALL_S 60L
#define FETCH_DEFAULT_MAX_BYTES ((uint64_t)4 << 30)

void eb_fetch_options_default(eb_fetch_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->connect_timeout_ms = FETCH_DEFAULT_CONNECT_MS;
    opt->stall_timeout_s = FETCH_DEFAULT_STALL_S;
    opt->total_timeout_ms = 0;
    opt->max_bytes = FETCH_DEFAULT_MAX_BYTES;
}

/* curl_global_init is not guaranteed thread-safe on every libcurl
 * version; run it exactly once. Never cleaned up: other users of libcurl
 * in the process may still need it at exit. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* The last path segment of the URL, without query or fragment, reduced to
 * characters that are safe in a file name. */
static void url_basename(const char *url, char *out, size_t out_len)
{
    const char *end = url + strcspn(url, "?#");
    const char *start = end;
    size_t n = 0;

    while (start > url && start[-1] != '/')
        start--;
    for (const char *p = start; p < end && n + 1 < out_len; p++) {
        unsigned char c = (unsigned char)*p;
        out[n++] = (char)(isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+' ? c : '_');
    }
    out[n] = '\0';
    if (n == 0 || !strcmp(out, ".") || !strcmp(out, ".."))
        snprintf(out, out_len, "download");
}

static int url_scheme_ok(const char *url)
{
    return !strncasecmp(url, "file://", 7) || !strncasecmp(url, "http://", 7) ||
           !strncasecmp(url, "https://", 8);
}

/* Where curl's bytes go: the temporary file and the running digest. */
typedef struct fetch_sink {
    FILE *fp;
    eb_sha256 *sha;
    uint64_t bytes;
    uint64_t max_bytes;
    enum { SINK_OK, SINK_WRITE_FAILED, SINK_TOO_LARGE, SINK_HASH_FAILED } failure;
    int saved_errno;
} fetch_sink;

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    fetch_sink *k = userdata;
    size_t n = size * nmemb; /* curl guarantees size == 1 */

    if (n > k->max_bytes - k->bytes) {
        k->failure = SINK_TOO_LARGE;
        return 0;
    }
    if (fwrite(ptr, 1, n, k->fp) != n) {
        k->failure = SINK_WRITE_FAILED;
        k->saved_errno = errno;
        return 0;
    }
    if (eb_sha256_update(k->sha, ptr, n, NULL) != EB_OK) {
        k->failure = SINK_HASH_FAILED;
        return 0;
    }
    k->bytes += n;
    return n; /* anything else makes curl stop with CURLE_WRITE_ERROR */
}

/* Turns a failed transfer into a status and a sentence naming the URL. */
static eb_status transfer_error(CURL *curl, CURLcode rc, const char *url, const char *errbuf,
                                const fetch_sink *k, const eb_fetch_options *o, eb_error *err)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    long status = 0;
    curl_off_t announced = -1;

    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return eb_error_set(err, EB_ERR_TIMEOUT,
                            "fetching %s: timed out after %llu bytes (%s); limits: connect %ld "
                            "ms, stalled %ld s, total %ld ms (0 = none)",
                            url, (unsigned long long)k->bytes, why, o->connect_timeout_ms,
                            o->stall_timeout_s, o->total_timeout_ms);
    case CURLE_HTTP_RETURNED_ERROR:
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        return eb_error_set(err, EB_ERR_NET, "fetching %s: the server answered HTTP status %ld",
                            url, status);
    case CURLE_PARTIAL_FILE:
        curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
        return eb_error_set(err, EB_ERR_NET,
                            "fetching %s: the transfer was cut short: %llu of %lld announced "
                            "bytes arrived", url, (unsigned long long)k->bytes,
                            (long long)announced);
    case CURLE_WRITE_ERROR:
        if (k->failure == SINK_TOO_LARGE)
            return eb_error_set(err, EB_ERR_NET,
                                "fetching %s: the body exceeds the limit of %llu bytes", url,
                                (unsigned long long)o->max_bytes);
        if (k->failure == SINK_WRITE_FAILED)
            return eb_error_set(err, EB_ERR_IO,
                                "fetching %s: cannot write the download to the cache: %s", url,
                                strerror(k->saved_errno));
        return eb_error_set(err, EB_ERR_INTERNAL, "fetching %s: hashing the download failed",
                            url);
    case CURLE_FILE_COULDNT_READ_FILE:
        return eb_error_set(err, EB_ERR_NOTFOUND, "fetching %s: cannot read the file: %s", url,
                            why);
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return eb_error_set(err, EB_ERR_ARG, "fetching %s: the URL is not usable: %s", url, why);
    case CURLE_OUT_OF_MEMORY:
        return eb_error_set(err, EB_ERR_NOMEM, "fetching %s: libcurl ran out of memory", url);
    default:
        return eb_error_set(err, EB_ERR_NET, "fetching %s: %s", url, why);
    }
}

/* One transfer of url into t (already open), hashing into hex. */
static eb_status download(const char *url, eb_tmpfile *t, const eb_fetch_options *o,
                          char hex[EB_SHA256_HEX_LEN + 1], uint64_t *bytes, eb_error *err)
{
    char errbuf[CURL_ERROR_SIZE];
    fetch_sink k;
    CURL *curl;
    CURLcode rc;
    long status = 0;
    eb_status st;

    memset(&k, 0, sizeof k);
    k.fp = t->fp;
    k.max_bytes = o->max_bytes;
    st = eb_sha256_new(&k.sha, err);
    if (st)
        return st;
    curl = curl_easy_init();
    if (!curl) {
        eb_sha256_free(k.sha);
        return eb_error_set(err, EB_ERR_INTERNAL, "fetching %s: curl_easy_init failed", url);
    }
    errbuf[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &k);
    /* Timeouts through signals are unsafe in threaded programs. */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    /* Only the schemes we document; a redirect may never lead to file://
     * (a remote server must not be able to make us copy local files). */
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "file,http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_FILE | CURLPROTO_HTTP |
                                                     CURLPROTO_HTTPS));
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "edgebayes/" EB_VERSION);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    /* "Stalled" = below 1 byte/s for stall_timeout_s seconds: catches a
     * server that accepts and then never answers, or stops mid-body. */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, o->stall_timeout_s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, o->total_timeout_ms);

    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        st = transfer_error(curl, rc, url, errbuf, &k, o, err);
    } else {
        /* FAILONERROR is documented as not fail-safe (e.g. around
         * authentication): check the status ourselves too. */
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 400)
            st = eb_error_set(err, EB_ERR_NET, "fetching %s: the server answered HTTP status %ld",
                              url, status);
        else
            st = eb_sha256_final(k.sha, hex, err);
    }
    *bytes = k.bytes;
    curl_easy_cleanup(curl);
    eb_sha256_free(k.sha);
    return st;
}

eb_status eb_fetch(const char *url, const char *sha256_hex, const char *cache_dir,
                   const eb_fetch_options *opt, char *out_path, size_t out_len, eb_error *err)
{
    char want[EB_SHA256_HEX_LEN + 1], got[EB_SHA256_HEX_LEN + 1];
    char base[256], dir[4096], path[4096];
    eb_fetch_options o;
    eb_tmpfile t;
    uint64_t bytes = 0;
    eb_status st;
    int n;

    if (out_path && out_len)
        out_path[0] = '\0';
    if (!url || !cache_dir || !out_path)
        return eb_error_set(err, EB_ERR_ARG, "eb_fetch needs a URL, a cache directory and an "
                            "output buffer");
    if (!sha256_hex || !eb_sha256_hex_valid(sha256_hex))
        return eb_error_set(err, EB_ERR_ARG,
                            "fetching %s: the expected SHA-256 '%s' is not 64 hex digits", url,
                            sha256_hex ? sha256_hex : "(null)");
    if (!url_scheme_ok(url))
        return eb_error_set(err, EB_ERR_ARG,
                            "fetching %s: only file://, http:// and https:// URLs are supported",
                            url);
    for (int i = 0; i <= EB_SHA256_HEX_LEN; i++)
        want[i] = (char)tolower((unsigned char)sha256_hex[i]);

    eb_fetch_options_default(&o);
    if (opt) {
        if (opt->connect_timeout_ms > 0)
            o.connect_timeout_ms = opt->connect_timeout_ms;
        if (opt->stall_timeout_s > 0)
            o.stall_timeout_s = opt->stall_timeout_s;
        if (opt->total_timeout_ms > 0)
            o.total_timeout_ms = opt->total_timeout_ms;
        if (opt->max_bytes > 0)
            o.max_bytes = opt->max_bytes;
    }

    url_basename(url, base, sizeof base);
    n = snprintf(dir, sizeof dir, "%s/%s", cache_dir, want);
    if (n < 0 || (size_t)n >= sizeof dir)
        return eb_error_set(err, EB_ERR_ARG, "fetching %s: cache directory '%s' is too long",
                            url, cache_dir);
    n = snprintf(path, sizeof path, "%s/%s", dir, base);
    if (n < 0 || (size_t)n >= sizeof path)
        return eb_error_set(err, EB_ERR_ARG, "fetching %s: cache directory '%s' is too long",
                            url, cache_dir);
    if ((size_t)n >= out_len)
        return eb_error_set(err, EB_ERR_ARG,
                            "fetching %s: the output buffer (%zu bytes) cannot hold the cache "
                            "path '%s'", url, out_len, path);

    /* Already cached? The name promises the digest; check the promise. */
    if (eb_file_exists(path)) {
        st = eb_sha256_file(path, got, err);
        if (st == EB_OK && !strcmp(got, want)) {
            memcpy(out_path, path, (size_t)n + 1);
            return EB_OK;
        }
        if (st == EB_ERR_NOMEM || st == EB_ERR_INTERNAL) /* says nothing about the file */
            return eb_error_prefix(err, "fetching %s: ", url);
        /* Corrupted or truncated by something outside our control. Remove
         * it now, so the cache invariant holds even if the download fails. */
        unlink(path);
    }

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK)
        return eb_error_set(err, EB_ERR_INTERNAL, "fetching %s: libcurl failed to initialise: %s",
                            url, curl_easy_strerror(curl_init_result));

    st = eb_mkdirs(dir, err);
    if (st)
        return eb_error_prefix(err, "fetching %s: ", url);
    st = eb_tmpfile_open(&t, path, err);
    if (st) {
        rmdir(dir);
        return eb_error_prefix(err, "fetching %s: ", url);
    }
    st = download(url, &t, &o, got, &bytes, err);
    if (!st && strcmp(got, want) != 0)
        st = eb_error_set(err, EB_ERR_CHECKSUM,
                          "fetching %s: checksum mismatch: expected SHA-256 %s but the %llu "
                          "bytes received have SHA-256 %s", url, want,
                          (unsigned long long)bytes, got);
    if (st) {
        eb_tmpfile_abort(&t);
        rmdir(dir); /* only succeeds when empty: keeps other files there */
        return st;
    }
    st = eb_tmpfile_commit(&t, err);
    if (st) {
        rmdir(dir);
        return eb_error_prefix(err, "fetching %s: ", url);
    }
    memcpy(out_path, path, (size_t)n + 1);
    return EB_OK;
}
