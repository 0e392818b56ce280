/* test_fetch.c: eb_fetch against a tiny HTTP/1.1 server that this test
 * runs on 127.0.0.1 in a thread (no outside network, no Python), and
 * against file:// URLs. Checks the cache invariant after every failure:
 * no partial, temporary or unverified file is left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"
#include "harness/eb_data.h"

/* ------------------------------------------------------- the server -- */

#define PAYLOAD_LEN 5000

static unsigned char payload[PAYLOAD_LEN];
static char payload_sha[65];

/* Routes:
 *   /data/payload.bin  200 with the payload
 *   /missing.bin       404
 *   /short.bin         announces 1000 bytes, sends 100, closes
 *   /hang.bin          reads the request, never answers
 *   /redirect.bin      302 to /data/payload.bin
 * Connections are served one at a time; every response closes its
 * connection. */
typedef struct test_server {
    int listen_fd;
    int port;
    int wake[2]; /* a byte written to wake[1] stops the thread */
    pthread_t thread;
    pthread_mutex_t mu;
    int requests;
} test_server;

static test_server srv;

static int stop_requested(void)
{
    struct pollfd p = {srv.wake[0], POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

/* Waits until fd is readable or the server is told to stop (returns 0). */
static int wait_readable(int fd)
{
    struct pollfd p[2] = {{fd, POLLIN, 0}, {srv.wake[0], POLLIN, 0}};
    while (poll(p, 2, -1) < 0)
        if (errno != EINTR)
            return 0;
    return !(p[1].revents & POLLIN) && (p[0].revents & (POLLIN | POLLHUP | POLLERR));
}

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the client went away: nothing to do */
        p += n;
        len -= (size_t)n;
    }
}

static void send_head(int fd, const char *status, long length, const char *extra)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Length: %ld\r\nContent-Type: "
                     "application/octet-stream\r\nConnection: close\r\n%s\r\n",
                     status, length, extra);
    send_all(fd, head, (size_t)n);
}

static void serve(int fd)
{
    char req[4096], path[256];
    size_t used = 0;

    /* Read the request head. */
    req[0] = '\0';
    while (!strstr(req, "\r\n\r\n")) {
        ssize_t n;
        if (used + 1 >= sizeof req || !wait_readable(fd))
            return;
        n = recv(fd, req + used, sizeof req - 1 - used, 0);
        if (n <= 0)
            return;
        used += (size_t)n;
        req[used] = '\0';
    }
    if (sscanf(req, "GET %255s HTTP/1.1", path) != 1)
        return;
    path[strcspn(path, "?")] = '\0'; /* routes ignore the query */
    pthread_mutex_lock(&srv.mu);
    srv.requests++;
    pthread_mutex_unlock(&srv.mu);

    if (!strcmp(path, "/data/payload.bin")) {
        send_head(fd, "200 OK", PAYLOAD_LEN, "");
        send_all(fd, payload, PAYLOAD_LEN);
    } else if (!strcmp(path, "/short.bin")) {
        send_head(fd, "200 OK", 1000, "");
        send_all(fd, payload, 100);
    } else if (!strcmp(path, "/hang.bin")) {
        /* Hold the connection open, silent, until the client gives up. */
        char sink[256];
        while (wait_readable(fd) && recv(fd, sink, sizeof sink, 0) > 0) {
        }
    } else if (!strcmp(path, "/redirect.bin")) {
        char loc[128];
        snprintf(loc, sizeof loc, "Location: http://127.0.0.1:%d/data/payload.bin\r\n",
                 srv.port);
        send_head(fd, "302 Found", 0, loc);
    } else {
        send_head(fd, "404 Not Found", 9, "");
        send_all(fd, "not found", 9);
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd;
        if (!wait_readable(srv.listen_fd) || stop_requested())
            break;
        fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve(fd);
        close(fd);
    }
    return NULL;
}

static int server_start(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0; /* ephemeral */
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (srv.listen_fd < 0 || bind(srv.listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(srv.listen_fd, 16) != 0 ||
        getsockname(srv.listen_fd, (struct sockaddr *)&a, &alen) != 0 || pipe(srv.wake) != 0)
        return -1;
    srv.port = ntohs(a.sin_port);
    pthread_mutex_init(&srv.mu, NULL);
    return pthread_create(&srv.thread, NULL, server_main, NULL) == 0 ? 0 : -1;
}

static void server_stop(void)
{
    if (write(srv.wake[1], "x", 1) != 1)
        return;
    pthread_join(srv.thread, NULL);
    close(srv.listen_fd);
    close(srv.wake[0]);
    close(srv.wake[1]);
    pthread_mutex_destroy(&srv.mu);
}

static int server_requests(void)
{
    int n;
    pthread_mutex_lock(&srv.mu);
    n = srv.requests;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

/* ---------------------------------------------------------- helpers -- */

static char scratch[512];
static eb_fetch_options quick; /* short limits so failures come fast */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int files_found;
static int count_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)sb;
    (void)ftw;
    if (flag == FTW_F)
        files_found++;
    return 0;
}

/* Regular files anywhere under dir (0 when dir does not exist). */
static int count_files(const char *dir)
{
    files_found = 0;
    nftw(dir, count_entry, 16, FTW_PHYS);
    return files_found;
}

static void cache_for(const char *test, char *out, size_t len)
{
    snprintf(out, len, "%s/cache_%s", scratch, test);
    rm_tree(out);
}

static void url_for(const char *path, char *out, size_t len)
{
    snprintf(out, len, "http://127.0.0.1:%d%s", srv.port, path);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void assert_contains(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fail_msg("message lacks '%s': %s", want, msg);
}

static void assert_file_is_payload(const char *path)
{
    char *data;
    size_t len;
    eb_error err;
    assert_int_equal(eb_file_read_all(path, &data, &len, &err), EB_OK);
    assert_int_equal(len, PAYLOAD_LEN);
    assert_memory_equal(data, payload, PAYLOAD_LEN);
    eb_free(data);
}

static int setup(void **state)
{
    eb_error err;
    (void)state;
    for (int i = 0; i < PAYLOAD_LEN; i++)
        payload[i] = (unsigned char)(i * 131 + (i >> 7));
    if (eb_sha256_buffer(payload, PAYLOAD_LEN, payload_sha, &err) != EB_OK)
        return -1;
    snprintf(scratch, sizeof scratch, "%s/fetch_scratch_%d", EB_TEST_BINARY_DIR, (int)getpid());
    rm_tree(scratch);
    if (eb_mkdirs(scratch, &err) != EB_OK)
        return -1;
    eb_fetch_options_default(&quick);
    quick.connect_timeout_ms = 2000;
    quick.stall_timeout_s = 1;
    quick.total_timeout_ms = 20000;
    return server_start();
}

static int teardown(void **state)
{
    (void)state;
    server_stop();
    rm_tree(scratch);
    return 0;
}

/* ------------------------------------------------------------ tests -- */

static void test_http_success_then_cached(void **state)
{
    char cache[640], url[256], path[1024], want[1024];
    eb_error err;
    int before;
    FILE *fp;
    (void)state;
    cache_for("success", cache, sizeof cache);
    url_for("/data/payload.bin", url, sizeof url);
    before = server_requests();
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err), EB_OK);
    snprintf(want, sizeof want, "%s/%s/payload.bin", cache, payload_sha);
    assert_string_equal(path, want);
    assert_file_is_payload(path);
    assert_int_equal(server_requests(), before + 1);
    assert_int_equal(count_files(cache), 1);

    /* Present and verifying: no transfer. */
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err), EB_OK);
    assert_string_equal(path, want);
    assert_int_equal(server_requests(), before + 1);

    /* Damaged in the cache: fetched again and repaired. */
    fp = fopen(path, "r+b");
    assert_non_null(fp);
    fputs("damage", fp);
    fclose(fp);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err), EB_OK);
    assert_int_equal(server_requests(), before + 2);
    assert_file_is_payload(path);
    assert_int_equal(count_files(cache), 1);
}

static void test_http_uppercase_digest(void **state)
{
    char cache[640], url[256], path[1024], upper[65];
    eb_error err;
    (void)state;
    cache_for("upper", cache, sizeof cache);
    url_for("/data/payload.bin", url, sizeof url);
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(payload_sha[i] >= 'a' ? payload_sha[i] - 32 : payload_sha[i]);
    assert_int_equal(eb_fetch(url, upper, cache, NULL, path, sizeof path, &err), EB_OK);
    assert_non_null(strstr(path, payload_sha)); /* the directory is lowercase */
}

static void test_http_redirect(void **state)
{
    char cache[640], url[256], path[1024];
    eb_error err;
    (void)state;
    cache_for("redirect", cache, sizeof cache);
    url_for("/redirect.bin?mirror=1", url, sizeof url);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err), EB_OK);
    assert_non_null(strstr(path, "/redirect.bin")); /* named after the URL asked for */
    assert_file_is_payload(path);
}

static void test_http_404(void **state)
{
    char cache[640], url[256], path[1024];
    eb_error err;
    (void)state;
    cache_for("404", cache, sizeof cache);
    url_for("/missing.bin", url, sizeof url);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_NET);
    assert_contains(err.msg, url);
    assert_contains(err.msg, "HTTP status 404");
    assert_string_equal(path, "");
    assert_int_equal(count_files(cache), 0);
}

static void test_http_cut_short(void **state)
{
    char cache[640], url[256], path[1024];
    eb_error err;
    (void)state;
    cache_for("short", cache, sizeof cache);
    url_for("/short.bin", url, sizeof url);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_NET);
    assert_contains(err.msg, url);
    assert_contains(err.msg, "cut short");
    assert_contains(err.msg, "100 of 1000");
    assert_int_equal(count_files(cache), 0);
}

static void test_http_checksum_mismatch(void **state)
{
    char cache[640], url[256], path[1024], wrong[65];
    eb_error err;
    (void)state;
    cache_for("checksum", cache, sizeof cache);
    url_for("/data/payload.bin", url, sizeof url);
    assert_int_equal(eb_sha256_buffer("something else", 14, wrong, &err), EB_OK);
    assert_int_equal(eb_fetch(url, wrong, cache, &quick, path, sizeof path, &err),
                     EB_ERR_CHECKSUM);
    assert_contains(err.msg, url);
    assert_contains(err.msg, wrong);
    assert_contains(err.msg, payload_sha);
    assert_int_equal(count_files(cache), 0);
}

static void test_http_body_too_large(void **state)
{
    char cache[640], url[256], path[1024];
    eb_fetch_options small = quick;
    eb_error err;
    (void)state;
    cache_for("large", cache, sizeof cache);
    url_for("/data/payload.bin", url, sizeof url);
    small.max_bytes = 1000;
    assert_int_equal(eb_fetch(url, payload_sha, cache, &small, path, sizeof path, &err),
                     EB_ERR_NET);
    assert_contains(err.msg, "exceeds the limit of 1000 bytes");
    assert_int_equal(count_files(cache), 0);
}

static void test_http_server_never_answers(void **state)
{
    char cache[640], url[256], path[1024];
    eb_error err;
    double t0, elapsed;
    (void)state;
    cache_for("hang", cache, sizeof cache);
    url_for("/hang.bin", url, sizeof url);
    t0 = now_s();
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_TIMEOUT);
    elapsed = now_s() - t0;
    print_message("timed out after %.2f s (stall limit 1 s)\n", elapsed);
    assert_true(elapsed >= 0.5 && elapsed < 5.0);
    assert_contains(err.msg, url);
    assert_contains(err.msg, "timed out");
    assert_int_equal(count_files(cache), 0);
}

static void test_connection_refused(void **state)
{
    char cache[640], url[256], path[1024];
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    eb_error err;
    int fd, port;
    (void)state;
    /* A port that was just free: bind, note it, close. */
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    port = ntohs(a.sin_port);
    close(fd);
    cache_for("refused", cache, sizeof cache);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x.bin", port);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_NET);
    assert_contains(err.msg, url);
    assert_int_equal(count_files(cache), 0);
}

static void test_file_url(void **state)
{
    char cache[640], src[640], url[800], path[1024];
    eb_error err;
    FILE *fp;
    (void)state;
    cache_for("file", cache, sizeof cache);
    snprintf(src, sizeof src, "%s/source.bin", scratch);
    fp = fopen(src, "wb");
    assert_non_null(fp);
    fwrite(payload, 1, PAYLOAD_LEN, fp);
    fclose(fp);
    snprintf(url, sizeof url, "file://%s", src);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err), EB_OK);
    assert_non_null(strstr(path, "/source.bin"));
    assert_file_is_payload(path);
    unlink(src);

    /* Cached: the source is no longer needed. */
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err), EB_OK);

    snprintf(url, sizeof url, "file://%s/no-such-file.bin", scratch);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_NOTFOUND);
    assert_contains(err.msg, url);
    assert_int_equal(count_files(cache), 1);
}

/* A cache that cannot be created: an I/O error naming the URL and path. */
static void test_cache_not_writable(void **state)
{
    char cache[700], blocker[640], url[256], path[1024];
    eb_error err;
    FILE *fp;
    (void)state;
    snprintf(blocker, sizeof blocker, "%s/a-regular-file", scratch);
    fp = fopen(blocker, "wb");
    assert_non_null(fp);
    fclose(fp);
    snprintf(cache, sizeof cache, "%s/cache", blocker);
    url_for("/data/payload.bin", url, sizeof url);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_IO);
    assert_contains(err.msg, url);
    assert_contains(err.msg, blocker);
    unlink(blocker);
}

static void test_invalid_arguments(void **state)
{
    char cache[640], url[256], path[1024], tiny[8];
    eb_error err;
    int before = server_requests();
    (void)state;
    cache_for("args", cache, sizeof cache);
    url_for("/data/payload.bin", url, sizeof url);
    assert_int_equal(eb_fetch(url, "abc123", cache, &quick, path, sizeof path, &err),
                     EB_ERR_ARG);
    assert_contains(err.msg, "'abc123'");
    assert_contains(err.msg, "64 hex digits");
    {
        char bad[65];
        memcpy(bad, payload_sha, 65);
        bad[7] = 'g';
        assert_int_equal(eb_fetch(url, bad, cache, &quick, path, sizeof path, &err),
                         EB_ERR_ARG);
        assert_contains(err.msg, bad);
    }
    assert_int_equal(eb_fetch(url, NULL, cache, &quick, path, sizeof path, &err), EB_ERR_ARG);
    assert_int_equal(eb_fetch("ftp://example.org/x", payload_sha, cache, &quick, path,
                              sizeof path, &err), EB_ERR_ARG);
    assert_contains(err.msg, "ftp://example.org/x");
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, tiny, sizeof tiny, &err),
                     EB_ERR_ARG);
    assert_contains(err.msg, "output buffer");
    assert_int_equal(server_requests(), before); /* refused before any transfer */
    assert_int_equal(count_files(cache), 0);
}

/* Every project allocation on the fetch path can fail: the result is
 * EB_ERR_NOMEM, no leak (sanitizer build) and nothing left in the cache. */
static void test_allocation_failures(void **state)
{
    char cache[640], src[640], url[800], path[1024];
    eb_error err;
    FILE *fp;
    int saw_nomem = 0;
    (void)state;
    snprintf(src, sizeof src, "%s/alloc-source.bin", scratch);
    fp = fopen(src, "wb");
    assert_non_null(fp);
    fwrite(payload, 1, PAYLOAD_LEN, fp);
    fclose(fp);
    snprintf(url, sizeof url, "file://%s", src);
    cache_for("alloc", cache, sizeof cache);
    for (long n = 1; n < 50; n++) {
        eb_status st;
        rm_tree(cache);
        eb_alloc_fail_at(n);
        st = eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err);
        eb_alloc_fail_at(0);
        if (st == EB_OK)
            break;
        assert_int_equal(st, EB_ERR_NOMEM);
        assert_contains(err.msg, "SHA-256");
        assert_int_equal(count_files(cache), 0);
        saw_nomem = 1;
    }
    assert_true(saw_nomem);
    assert_file_is_payload(path);
    /* And when the cached copy is being verified. */
    eb_alloc_fail_at(1);
    assert_int_equal(eb_fetch(url, payload_sha, cache, &quick, path, sizeof path, &err),
                     EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
    assert_int_equal(count_files(cache), 1); /* a hashing failure deletes nothing */
    unlink(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_success_then_cached),
        cmocka_unit_test(test_http_uppercase_digest),
        cmocka_unit_test(test_http_redirect),
        cmocka_unit_test(test_http_404),
        cmocka_unit_test(test_http_cut_short),
        cmocka_unit_test(test_http_checksum_mismatch),
        cmocka_unit_test(test_http_body_too_large),
        cmocka_unit_test(test_http_server_never_answers),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_file_url),
        cmocka_unit_test(test_cache_not_writable),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
