/* store.c: the results store: opening a database, conventions, runs and
 * their provenance, artifacts, jobs (one transaction each) and the
 * queries; plus the SQLite and memory helpers the other files of
 * results/ share (results_internal.h).
 *
 * Crash safety rests on SQLite: each job is one BEGIN IMMEDIATE ..
 * COMMIT transaction in WAL mode with synchronous=FULL, so a process
 * killed at any point leaves either the whole job or none of it. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"
#include "common/eb_version.h"
#include "methods/nn/eb_nn.h"
#include "results/results_internal.h"

/* ---- SQLite helpers ---------------------------------------------------- */

eb_status eb_results__status_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return EB_OK;
    case SQLITE_NOMEM: return EB_ERR_NOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return EB_ERR_TIMEOUT;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG: return EB_ERR_ARG;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_FORMAT: return EB_ERR_FORMAT;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM: return EB_ERR_IO;
    default: return EB_ERR_INTERNAL;
    }
}

eb_status eb_results__sql_error(sqlite3 *sql, eb_error *err, const char *fmt, ...)
{
    char head[EB_ERROR_MSG_MAX];
    va_list ap;
    int rc = sqlite3_extended_errcode(sql);
    eb_status code = eb_results__status_of(rc);

    if (code == EB_OK) /* called without an SQLite error: still a failure */
        code = EB_ERR_INTERNAL;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    return eb_error_set(err, code, "%s: %s", head, sqlite3_errmsg(sql));
}

eb_status eb_results__exec(sqlite3 *sql, const char *path, const char *what, const char *text,
                           eb_error *err)
{
    if (sqlite3_exec(sql, text, NULL, NULL, NULL) != SQLITE_OK)
        return eb_results__sql_error(sql, err, "%s in '%s'", what, path);
    return EB_OK;
}

char *eb_results__uri(const char *path, int readonly)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(path), cap, k = 0;
    char *u;

    if (eb_size_mul(n, 3, &cap) || eb_size_add(cap, 32, &cap))
        return NULL;
    if (!(u = eb_malloc(cap)))
        return NULL;
    /* "file:" + "//" + an empty authority before an absolute path, so a
     * path starting with "//" is never taken for a host name. */
    k += (size_t)sprintf(u, path[0] == '/' ? "file://" : "file:");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (isalnum(c) || strchr("-._~/", c)) {
            u[k++] = (char)c;
        } else {
            u[k++] = '%';
            u[k++] = hex[c >> 4];
            u[k++] = hex[c & 15];
        }
    }
    u[k] = '\0';
    if (readonly)
        strcat(u, "?mode=ro");
    return u;
}

eb_status eb_results__sqlite_open(const char *path, int flags, sqlite3 **out, eb_error *err)
{
    sqlite3 *sql = NULL;
    int rc;
    char *uri = eb_results__uri(path, (flags & SQLITE_OPEN_READONLY) != 0);

    *out = NULL;
    if (!uri)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory opening '%s'", path);
    rc = sqlite3_open_v2(uri, &sql, flags | SQLITE_OPEN_URI, NULL);
    eb_free(uri);
    if (rc != SQLITE_OK) {
        eb_status st = sql ? eb_results__sql_error(sql, err, "cannot open '%s'", path)
                           : eb_error_set(err, EB_ERR_NOMEM, "out of memory opening '%s'", path);
        sqlite3_close(sql);
        return st;
    }
    sqlite3_extended_result_codes(sql, 1);
    sqlite3_busy_timeout(sql, EB_RESULTS_BUSY_TIMEOUT_MS);
    *out = sql;
    return EB_OK;
}

void eb_results__now_iso(char out[32])
{
    struct timespec ts;
    struct tm tm;
    char day[24];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%.19s.%03dZ", day, (int)((ts.tv_nsec / 1000000) % 1000));
}

/* ---- Arena and vectors ------------------------------------------------- */

struct eb_results__arena {
    struct eb_results__arena *next;
    size_t cap, used;
    max_align_t data[]; /* cap bytes */
};

void *eb_results__arena_alloc(eb_results__arena **a, size_t size)
{
    const size_t align = alignof(max_align_t);
    size_t need = (size + align - 1) / align * align;
    eb_results__arena *b = *a;

    if (need < size)
        return NULL;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > 16384 ? need : 16384, total;
        if (eb_size_add(sizeof *b, cap, &total))
            return NULL;
        if (!(b = eb_malloc(total)))
            return NULL;
        b->next = *a;
        b->cap = cap;
        b->used = 0;
        *a = b;
    }
    b->used += need;
    return (char *)b->data + b->used - need;
}

char *eb_results__arena_strdup(eb_results__arena **a, const char *s, int *ok)
{
    size_t n;
    char *d;
    if (!s)
        return NULL;
    n = strlen(s) + 1;
    if (!(d = eb_results__arena_alloc(a, n))) {
        *ok = 0;
        return NULL;
    }
    memcpy(d, s, n);
    return d;
}

void eb_results__arena_free(eb_results__arena *a)
{
    while (a) {
        eb_results__arena *next = a->next;
        eb_free(a);
        a = next;
    }
}

void *eb_results__vec_room(void *v, size_t n, size_t *cap, size_t elsize)
{
    char *p = v;
    if (n >= *cap) {
        size_t ncap = *cap ? *cap * 2 : 16, bytes;
        if (eb_size_mul(ncap, elsize, &bytes) || !(p = eb_realloc(v, bytes)))
            return NULL;
        *cap = ncap;
    }
    memset(p + n * elsize, 0, elsize);
    return p;
}

/* ---- Small validators ------------------------------------------------- */

static int nonempty(const char *s)
{
    return s && *s;
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* 1 when text is a JSON object, by SQLite's own JSON parser. */
static eb_status check_json_object(eb_results *db, const char *text, const char *what,
                                   eb_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc, ok = 0;

    rc = sqlite3_prepare_v2(db->sql,
                            "SELECT CASE WHEN json_valid(?1) THEN json_type(?1) = 'object' "
                            "ELSE 0 END",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            ok = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return eb_results__sql_error(db->sql, err, "checking %s", what);
    if (!ok)
        return eb_error_set(err, EB_ERR_ARG, "%s is not a JSON object: '%.200s'", what, text);
    return EB_OK;
}

/* Lowercases a digest into out[65] after checking it. */
static eb_status copy_sha256(const char *s, char out[EB_SHA256_HEX_LEN + 1], const char *what,
                             eb_error *err)
{
    if (!s || !eb_sha256_hex_valid(s))
        return eb_error_set(err, EB_ERR_ARG, "%s '%s' is not a SHA-256 digest (64 hex digits)",
                            what, s ? s : "(null)");
    for (int i = 0; i < EB_SHA256_HEX_LEN; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[EB_SHA256_HEX_LEN] = '\0';
    return EB_OK;
}

static eb_status need_no_job(eb_results *db, const char *what, eb_error *err)
{
    if (db->job_id)
        return eb_error_set(err, EB_ERR_ARG,
                            "cannot %s in '%s' while job '%s' is open; commit or abort it first",
                            what, db->path, db->job_key);
    return EB_OK;
}

static eb_status need_job(eb_results *db, const char *what, eb_error *err)
{
    if (!db->job_id)
        return eb_error_set(err, EB_ERR_ARG, "cannot %s in '%s': no job is open (call "
                            "eb_results_job_begin first)",
                            what, db->path);
    return EB_OK;
}

/* ---- Opening -------------------------------------------------------------- */

static eb_status open_common(const char *path, int readonly, eb_results **out, eb_error *err)
{
    eb_results *db;
    eb_results__state state;
    int version = 0;
    eb_status st;
    size_t n;

    *out = NULL;
    if (!nonempty(path))
        return eb_error_set(err, EB_ERR_ARG, "the results database path is empty");
    if (!(db = eb_calloc(1, sizeof *db)))
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory opening results database '%s'",
                            path);
    n = strlen(path) + 1;
    if (!(db->path = eb_malloc(n))) {
        eb_free(db);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory opening results database '%s'",
                            path);
    }
    memcpy(db->path, path, n);
    db->readonly = readonly;
    if (readonly && !eb_file_exists(path)) {
        st = eb_error_set(err, EB_ERR_NOTFOUND, "results database '%s' does not exist", path);
        goto fail;
    }
    st = eb_results__sqlite_open(path,
                                 readonly ? SQLITE_OPEN_READONLY
                                          : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                 &db->sql, err);
    if (st != EB_OK)
        goto fail;
    /* Recognise the file before anything could write to it. */
    st = eb_results__inspect(db->sql, "main", path, EB_RESULTS_SCHEMA_VERSION, &state, &version,
                             err);
    if (st != EB_OK)
        goto fail;
    if (readonly) {
        if (state == EB_RESULTS__FRESH) {
            st = eb_error_set(err, EB_ERR_FORMAT,
                              "'%s' is empty, not an edgebayes results database", path);
            goto fail;
        }
        if (version < EB_RESULTS_SCHEMA_VERSION) {
            st = eb_error_set(err, EB_ERR_UNSUPPORTED,
                              "'%s' has results schema version %d, older than version %d; open "
                              "it read-write once (any edgebayes command that writes results) "
                              "to upgrade it",
                              path, version, EB_RESULTS_SCHEMA_VERSION);
            goto fail;
        }
    } else {
        sqlite3_stmt *q = NULL;
        const char *mode = NULL;
        char got[16] = "";
        /* WAL: readers (reports, compare) never block the writer, and a
         * commit is one append, so a killed writer leaves the last
         * committed job intact. journal_mode cannot change inside a
         * transaction, so it comes before the migration. */
        if (sqlite3_prepare_v2(db->sql, "PRAGMA journal_mode = WAL", -1, &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            mode = (const char *)sqlite3_column_text(q, 0);
        snprintf(got, sizeof got, "%s", mode ? mode : "");
        sqlite3_finalize(q);
        if (strcmp(got, "wal") != 0) {
            st = eb_results__sql_error(db->sql, err,
                                       "cannot switch '%s' to WAL journaling (journal mode "
                                       "'%s'; a network file system?)",
                                       path, got);
            goto fail;
        }
        st = eb_results__exec(db->sql, path, "setting synchronous=FULL",
                              "PRAGMA synchronous = FULL", err);
        if (st != EB_OK)
            goto fail;
        st = eb_results__migrate(db->sql, path, eb_results__schema_current(), err);
        if (st != EB_OK)
            goto fail;
    }
    st = eb_results__exec(db->sql, path, "enabling foreign keys", "PRAGMA foreign_keys = ON",
                          err);
    if (st != EB_OK)
        goto fail;
    st = eb_results__check_tables(db->sql, "main", path, err);
    if (st != EB_OK)
        goto fail;
    *out = db;
    return EB_OK;

fail:
    sqlite3_close(db->sql);
    eb_free(db->path);
    eb_free(db);
    return st;
}

eb_status eb_results_open(const char *path, eb_results **db, eb_error *err)
{
    return open_common(path, 0, db, err);
}

eb_status eb_results_open_readonly(const char *path, eb_results **db, eb_error *err)
{
    return open_common(path, 1, db, err);
}

void eb_results_close(eb_results *db)
{
    if (!db)
        return;
    eb_results_job_abort(db);
    sqlite3_close(db->sql);
    eb_free(db->path);
    eb_free(db);
}

const char *eb_results_path(const eb_results *db)
{
    return db->path;
}

/* ---- Conventions ------------------------------------------------------------- */

eb_status eb_results_conventions(eb_results *db, const eb_results_convention *list, size_t n,
                                 eb_error *err)
{
    sqlite3_stmt *get = NULL, *put = NULL;
    eb_status st;

    if ((st = need_no_job(db, "register conventions", err)) != EB_OK)
        return st;
    for (size_t i = 0; i < n; i++)
        if (!nonempty(list[i].id) || !nonempty(list[i].description))
            return eb_error_set(err, EB_ERR_ARG,
                                "convention %zu has an empty id or description", i);
    if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "registering conventions in '%s'", db->path);
    if (sqlite3_prepare_v2(db->sql, "SELECT description FROM conventions WHERE id = ?1", -1,
                           &get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->sql, "INSERT INTO conventions(id, description) VALUES (?1, ?2)",
                           -1, &put, NULL) != SQLITE_OK) {
        st = eb_results__sql_error(db->sql, err, "registering conventions in '%s'", db->path);
        goto done;
    }
    for (size_t i = 0; i < n && st == EB_OK; i++) {
        int rc;
        sqlite3_reset(get);
        sqlite3_bind_text(get, 1, list[i].id, -1, SQLITE_STATIC);
        rc = sqlite3_step(get);
        if (rc == SQLITE_ROW) {
            const char *have = (const char *)sqlite3_column_text(get, 0);
            if (!have || strcmp(have, list[i].description) != 0)
                st = eb_error_set(err, EB_ERR_ARG,
                                  "convention '%s' is recorded in '%s' as '%s', not '%s'; a "
                                  "changed convention needs a new id",
                                  list[i].id, db->path, have ? have : "", list[i].description);
            continue;
        }
        if (rc != SQLITE_DONE) {
            st = eb_results__sql_error(db->sql, err, "reading convention '%s' in '%s'",
                                       list[i].id, db->path);
            continue;
        }
        sqlite3_reset(put);
        sqlite3_bind_text(put, 1, list[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_text(put, 2, list[i].description, -1, SQLITE_STATIC);
        if (sqlite3_step(put) != SQLITE_DONE)
            st = eb_results__sql_error(db->sql, err, "recording convention '%s' in '%s'",
                                       list[i].id, db->path);
    }
done:
    sqlite3_finalize(get);
    sqlite3_finalize(put);
    if (st == EB_OK && sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = eb_results__sql_error(db->sql, err, "committing conventions to '%s'", db->path);
    if (st != EB_OK && !sqlite3_get_autocommit(db->sql))
        sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* ---- Provenance --------------------------------------------------------------- */

/* Copies the value of the first line "key<spaces>: value" of text into
 * out; 1 when found and non-empty. Keys match exactly and case-sensitively
 * ("model name" is not "model"; ARM's "Processor" is not x86's
 * "processor"). */
static int cpuinfo_value(const char *text, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        const char *p = line + klen;
        if (!end)
            end = line + strlen(line);
        if ((size_t)(end - line) > klen && strncmp(line, key, klen) == 0) {
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            if (p < end && *p == ':') {
                const char *v = p + 1, *e = end;
                while (v < e && (*v == ' ' || *v == '\t'))
                    v++;
                while (e > v && isspace((unsigned char)e[-1]))
                    e--;
                if (e > v) {
                    size_t len = (size_t)(e - v);
                    if (len >= cap)
                        len = cap - 1;
                    memcpy(out, v, len);
                    out[len] = '\0';
                    return 1;
                }
            }
        }
        line = *end ? end + 1 : NULL;
    }
    return 0;
}

void eb_results__cpu_model_parse(const char *cpuinfo, char *out, size_t cap)
{
    /* x86; Raspberry Pi and other boards; older ARM kernels; MIPS. */
    static const char *const keys[] = {"model name", "Model", "Hardware", "Processor",
                                       "cpu model"};
    char impl[32], part[32];

    if (cap == 0)
        return;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (cpuinfo_value(cpuinfo, keys[i], out, cap))
            return;
    /* Modern arm64 kernels print only the ID registers' fields. */
    if (cpuinfo_value(cpuinfo, "CPU implementer", impl, sizeof impl) &&
        cpuinfo_value(cpuinfo, "CPU part", part, sizeof part)) {
        snprintf(out, cap, "CPU implementer %s part %s", impl, part);
        return;
    }
    snprintf(out, cap, "unknown");
}

/* The flags the library was built with: CMakeLists.txt passes them as
 * EB_CFLAGS ("<build type>: <flags>"). */
static void probe_cflags(char *out, size_t cap)
{
#ifdef EB_CFLAGS
    snprintf(out, cap, "%s", EB_CFLAGS);
#else
    snprintf(out, cap, "unknown (built without EB_CFLAGS)");
#endif
}

/* {"sqlite": .., "curl": .., ...} built by SQLite's json_object, so every
 * version string is escaped by a JSON implementation, not by hand. */
static eb_status probe_libraries(char *out, size_t cap, eb_error *err)
{
    sqlite3 *mem = NULL;
    sqlite3_stmt *st = NULL;
    const curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
    eb_status status = EB_OK;
    int rc;

    rc = sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(mem,
                                "SELECT json_object('sqlite', ?1, 'curl', ?2, 'zlib', ?3, "
                                "'openssl', ?4, 'openblas', ?5)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sqlite3_libversion(), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, curl && curl->version ? curl->version : "unknown", -1,
                          SQLITE_STATIC);
        sqlite3_bind_text(st, 3, zlibVersion(), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, OpenSSL_version(OPENSSL_VERSION), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, eb_nn_blas_info(), -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_ROW) {
        status = mem ? eb_results__sql_error(mem, err, "describing the linked libraries")
                     : eb_error_set(err, EB_ERR_NOMEM, "out of memory describing the linked "
                                                     "libraries");
    } else {
        const char *json = (const char *)sqlite3_column_text(st, 0);
        if (!json || strlen(json) >= cap)
            status = eb_error_set(err, EB_ERR_INTERNAL,
                                  "the linked libraries' versions do not fit %zu bytes", cap);
        else
            memcpy(out, json, strlen(json) + 1);
    }
    sqlite3_finalize(st);
    sqlite3_close(mem);
    return status;
}

eb_status eb_results_machine_probe(eb_results_machine *m, eb_error *err)
{
    char *cpuinfo = NULL;
    size_t len;
    long cores;

    memset(m, 0, sizeof *m);
    snprintf(m->version, sizeof m->version, "%s", eb_version());
    snprintf(m->git_commit, sizeof m->git_commit, "%s", eb_version_commit());
#if defined(__clang__)
    snprintf(m->compiler, sizeof m->compiler, "clang %s", __clang_version__);
#elif defined(__GNUC__)
    snprintf(m->compiler, sizeof m->compiler, "gcc %s", __VERSION__);
#else
    snprintf(m->compiler, sizeof m->compiler, "unknown C compiler");
#endif
    probe_cflags(m->cflags, sizeof m->cflags);
    if (eb_file_read_all("/proc/cpuinfo", &cpuinfo, &len, NULL) == EB_OK) {
        eb_results__cpu_model_parse(cpuinfo, m->cpu_model, sizeof m->cpu_model);
        eb_free(cpuinfo);
    } else {
        /* No procfs (a container without it): the architecture at least. */
        struct utsname u;
        snprintf(m->cpu_model, sizeof m->cpu_model, "unknown %s",
                 uname(&u) == 0 ? u.machine : "");
    }
    cores = sysconf(_SC_NPROCESSORS_ONLN);
    m->cores = cores >= 1 && cores <= 1 << 20 ? (int)cores : 1;
    if (gethostname(m->host, sizeof m->host) != 0 || !m->host[0])
        snprintf(m->host, sizeof m->host, "unknown");
    m->host[sizeof m->host - 1] = '\0';
    return probe_libraries(m->libraries, sizeof m->libraries, err);
}

void eb_results_provenance_set_machine(eb_results_provenance *p, const eb_results_machine *m)
{
    p->version = m->version;
    p->git_commit = m->git_commit;
    p->compiler = m->compiler;
    p->cflags = m->cflags;
    p->cpu_model = m->cpu_model;
    p->cores = m->cores;
    p->host = m->host;
    p->libraries = m->libraries;
}

/* ---- Runs ------------------------------------------------------------------------ */

/* 1 when `SELECT 1 FROM <table> WHERE id = ?` finds id; -1 on error. */
static int row_exists_id(eb_results *db, const char *table, int64_t id)
{
    sqlite3_stmt *st = NULL;
    char q[96];
    int rc;
    snprintf(q, sizeof q, "SELECT 1 FROM %s WHERE id = ?1", table);
    rc = sqlite3_prepare_v2(db->sql, q, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}


/* Parses "i/n" (1 <= i <= n; NULL means "1/1") into canonical text. */
static eb_status parse_shard(const char *text, char out[48], eb_error *err)
{
    const char *s = text ? text : "1/1";
    long i, n;
    char *end;
    errno = 0;
    i = strtol(s, &end, 10);
    if (end == s || *end != '/' || errno)
        goto bad;
    s = end + 1;
    n = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno || i < 1 || n < 1 || i > n)
        goto bad;
    snprintf(out, 48, "%ld/%ld", i, n);
    return EB_OK;
bad:
    return eb_error_set(err, EB_ERR_ARG, "run shard '%s' is not 'i/n' with 1 <= i <= n", text);
}

/* Checks p; fills the normalised digest and shard. */
static eb_status check_provenance(eb_results *db, const eb_results_provenance *p,
                                  char sha[EB_SHA256_HEX_LEN + 1], char shard[48], eb_error *err)
{
    const struct {
        const char *name, *value;
    } req[] = {{"suite", p->suite},         {"version", p->version},
               {"git_commit", p->git_commit}, {"compiler", p->compiler},
               {"cflags", p->cflags},       {"cpu_model", p->cpu_model},
               {"host", p->host},           {"libraries", p->libraries}};
    eb_status st;

    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!nonempty(req[i].value))
            return eb_error_set(err, EB_ERR_ARG, "run provenance field '%s' is empty",
                                req[i].name);
    if (p->cores < 1)
        return eb_error_set(err, EB_ERR_ARG, "run provenance field 'cores' is %d, not >= 1",
                            p->cores);
    if ((st = copy_sha256(p->suite_sha256, sha, "run provenance field 'suite_sha256'", err)))
        return st;
    if ((st = parse_shard(p->shard, shard, err)))
        return st;
    if ((st = check_json_object(db, p->libraries, "run provenance field 'libraries'", err)))
        return st;
    if (p->environment &&
        (st = check_json_object(db, p->environment, "run provenance field 'environment'", err)))
        return st;
    return EB_OK;
}

/* A random version-4 UUID from the kernel's generator. */
static eb_status make_uuid(char out[EB_RESULTS_UUID_LEN + 1], eb_error *err)
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return eb_error_set(err, EB_ERR_IO, "cannot draw a run uuid from getrandom: %s",
                                strerror(errno));
        got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, EB_RESULTS_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return EB_OK;
}

/* Inserts the run; no transaction of its own (the caller's, or autocommit). */
static eb_status insert_run(eb_results *db, const eb_results_provenance *p, const char *sha,
                            const char *shard, int64_t *run_id, char *uuid_out, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    char uuid[EB_RESULTS_UUID_LEN + 1], now[32];
    eb_status status;

    if ((status = make_uuid(uuid, err)) != EB_OK)
        return status;
    eb_results__now_iso(now);
    if (sqlite3_prepare_v2(db->sql,
                           "INSERT INTO runs(uuid, label, suite, suite_sha256, shard, started_at, "
                           "version, git_commit, compiler, cflags, cpu_model, cores, host, "
                           "libraries, environment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                           "?10, ?11, ?12, ?13, ?14, ?15)",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "beginning a run of suite '%s' in '%s'",
                                     p->suite, db->path);
    sqlite3_bind_text(st, 1, uuid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->label, -1, SQLITE_STATIC); /* NULL binds NULL */
    sqlite3_bind_text(st, 3, p->suite, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, sha, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, shard, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, p->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, p->git_commit, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, p->compiler, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, p->cflags, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, p->cpu_model, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 12, p->cores);
    sqlite3_bind_text(st, 13, p->host, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 14, p->libraries, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 15, p->environment ? p->environment : "{}", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        status = eb_results__sql_error(db->sql, err, "beginning a run of suite '%s' in '%s'",
                                       p->suite, db->path);
        sqlite3_finalize(st);
        return status;
    }
    sqlite3_finalize(st);
    *run_id = sqlite3_last_insert_rowid(db->sql);
    if (uuid_out)
        memcpy(uuid_out, uuid, sizeof uuid);
    return EB_OK;
}

eb_status eb_results_run_begin(eb_results *db, const eb_results_provenance *p, int64_t *run_id,
                               char uuid[EB_RESULTS_UUID_LEN + 1], eb_error *err)
{
    char sha[EB_SHA256_HEX_LEN + 1], shard[48];
    eb_status st;
    if ((st = need_no_job(db, "begin a run", err)) != EB_OK ||
        (st = check_provenance(db, p, sha, shard, err)) != EB_OK)
        return st;
    return insert_run(db, p, sha, shard, run_id, uuid, err);
}

static eb_status find_resumable(eb_results *db, const eb_results_provenance *p, const char *sha,
                                const char *shard, int64_t *run_id, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *run_id = 0;
    rc = sqlite3_prepare_v2(db->sql,
                            "SELECT id FROM runs WHERE finished_at IS NULL AND suite = ?1 AND "
                            "suite_sha256 = ?2 AND shard = ?3 AND label IS ?4 AND version = ?5 "
                            "AND git_commit = ?6 ORDER BY started_at DESC, id DESC LIMIT 1",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, p->suite, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sha, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, shard, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, p->label, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, p->version, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, p->git_commit, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *run_id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "looking for an unfinished run of suite '%s' "
                                     "in '%s'",
                                     p->suite, db->path);
    return EB_OK;
}

eb_status eb_results_run_resumable(eb_results *db, const eb_results_provenance *p,
                                   int64_t *run_id, eb_error *err)
{
    char sha[EB_SHA256_HEX_LEN + 1], shard[48];
    eb_status st;
    *run_id = 0;
    if ((st = check_provenance(db, p, sha, shard, err)) != EB_OK)
        return st;
    return find_resumable(db, p, sha, shard, run_id, err);
}

eb_status eb_results_run_resume_or_begin(eb_results *db, const eb_results_provenance *p,
                                         int64_t *run_id, int *resumed, eb_error *err)
{
    char sha[EB_SHA256_HEX_LEN + 1], shard[48];
    eb_status st;

    *run_id = 0;
    if (resumed)
        *resumed = 0;
    if ((st = need_no_job(db, "begin a run", err)) != EB_OK ||
        (st = check_provenance(db, p, sha, shard, err)) != EB_OK)
        return st;
    if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "locking '%s' to begin a run", db->path);
    st = find_resumable(db, p, sha, shard, run_id, err);
    if (st == EB_OK && *run_id) {
        if (resumed)
            *resumed = 1;
    } else if (st == EB_OK) {
        st = insert_run(db, p, sha, shard, run_id, NULL, err);
    }
    if (st == EB_OK && sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = eb_results__sql_error(db->sql, err, "committing the run to '%s'", db->path);
    if (st != EB_OK) {
        if (!sqlite3_get_autocommit(db->sql))
            sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
        *run_id = 0;
        if (resumed)
            *resumed = 0;
    }
    return st;
}

eb_status eb_results_run_finish(eb_results *db, int64_t run_id, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    char now[32];
    eb_status status;
    int rc;

    if ((status = need_no_job(db, "finish a run", err)) != EB_OK)
        return status;
    eb_results__now_iso(now);
    rc = sqlite3_prepare_v2(db->sql, "UPDATE runs SET finished_at = ?1 WHERE id = ?2", -1, &st,
                            NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, now, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, run_id);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "finishing run %" PRId64 " in '%s'", run_id,
                                     db->path);
    if (sqlite3_changes(db->sql) == 0)
        return eb_error_set(err, EB_ERR_NOTFOUND, "run %" PRId64 " does not exist in '%s'",
                            run_id, db->path);
    return EB_OK;
}

/* The latest run labelled `label` (a finished one if any): 1 found, 0 not,
 * -1 on an SQL error. */
static int run_by_label(eb_results *db, const char *label, int64_t *run_id)
{
    sqlite3_stmt *st = NULL;
    int rc, found = 0;
    rc = sqlite3_prepare_v2(db->sql,
                            "SELECT id FROM runs WHERE label = ?1 ORDER BY finished_at IS NULL, "
                            "started_at DESC, id DESC LIMIT 1",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, label, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *run_id = sqlite3_column_int64(st, 0);
            found = 1;
            rc = SQLITE_DONE;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? found : -1;
}

eb_status eb_results_run_lookup(eb_results *db, const char *ref, int64_t *run_id, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    size_t len = ref ? strlen(ref) : 0, digits = 0, uuidish = 0;
    int rc, matches = 0;

    *run_id = 0;
    /* a label names the latest run carrying it (as in reports); ids and
     * uuids are tried after an exact label match fails */
    if (len > 0) {
        int found = run_by_label(db, ref, run_id);
        if (found < 0)
            return eb_results__sql_error(db->sql, err, "looking up run '%s' in '%s'", ref,
                                         db->path);
        if (found)
            return EB_OK;
    }
    for (size_t i = 0; i < len; i++) {
        digits += isdigit((unsigned char)ref[i]) != 0;
        uuidish += isxdigit((unsigned char)ref[i]) || ref[i] == '-';
    }
    if (len == 0 || (digits != len && (uuidish != len || len < 4)))
        return eb_error_set(err, EB_ERR_ARG,
                            "run reference '%s' is neither a run label, a run id nor a uuid (or "
                            "a prefix of at least 4 characters of one)",
                            ref ? ref : "");
    /* Digits only: an id first (a uuid prefix made of digits only needs
     * to be told apart by more characters than any id has). */
    if (digits == len && len <= 18) {
        int found = row_exists_id(db, "runs", strtoll(ref, NULL, 10));
        if (found < 0)
            return eb_results__sql_error(db->sql, err, "looking up run '%s' in '%s'", ref,
                                         db->path);
        if (found) {
            *run_id = strtoll(ref, NULL, 10);
            return EB_OK;
        }
    }
    if (len < 4 || uuidish != len)
        return eb_error_set(err, EB_ERR_NOTFOUND, "no run '%s' in '%s'", ref, db->path);
    rc = sqlite3_prepare_v2(db->sql,
                            "SELECT id FROM runs WHERE substr(uuid, 1, length(?1)) = lower(?1) "
                            "LIMIT 2",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, ref, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (matches++ == 0)
                *run_id = sqlite3_column_int64(st, 0);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        *run_id = 0;
        return eb_results__sql_error(db->sql, err, "looking up run '%s' in '%s'", ref, db->path);
    }
    if (matches == 0)
        return eb_error_set(err, EB_ERR_NOTFOUND, "no run '%s' in '%s'", ref, db->path);
    if (matches > 1) {
        *run_id = 0;
        return eb_error_set(err, EB_ERR_ARG,
                            "run reference '%s' matches more than one uuid in '%s'; give more "
                            "characters",
                            ref, db->path);
    }
    return EB_OK;
}

/* ---- Artifacts ------------------------------------------------------------------ */

eb_status eb_results_artifact_put(eb_results *db, const eb_results_artifact *a, int64_t *id,
                                  eb_error *err)
{
    char sha[EB_SHA256_HEX_LEN + 1];
    sqlite3_stmt *st = NULL;
    eb_status status;
    int rc;

    *id = 0;
    if (!a->kind || (strcmp(a->kind, "bundle") && strcmp(a->kind, "dataset")))
        return eb_error_set(err, EB_ERR_ARG, "artifact kind '%s' is not 'bundle' or 'dataset'",
                            a->kind ? a->kind : "(null)");
    if ((status = copy_sha256(a->sha256, sha, "artifact sha256", err)) != EB_OK)
        return status;
    if (!nonempty(a->name))
        return eb_error_set(err, EB_ERR_ARG, "artifact %s has an empty name", sha);
    if (a->bytes < 0)
        return eb_error_set(err, EB_ERR_ARG, "artifact '%s' has %" PRId64 " bytes", a->name,
                            a->bytes);
    if (a->meta && (status = check_json_object(db, a->meta, "artifact meta", err)) != EB_OK)
        return status;

    rc = sqlite3_prepare_v2(db->sql, "SELECT id, kind FROM artifacts WHERE sha256 = ?1", -1, &st,
                            NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 1);
        if (!kind || strcmp(kind, a->kind) != 0)
            status = eb_error_set(err, EB_ERR_ARG,
                                  "artifact %s ('%s') is recorded in '%s' as a %s, not a %s", sha,
                                  a->name, db->path, kind ? kind : "?", a->kind);
        else
            *id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return status;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "looking up artifact '%s' in '%s'", a->name,
                                     db->path);
    rc = sqlite3_prepare_v2(db->sql,
                            "INSERT INTO artifacts(kind, sha256, name, bytes, meta) "
                            "VALUES (?1, ?2, ?3, ?4, ?5)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, a->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sha, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, a->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, a->bytes);
        sqlite3_bind_text(st, 5, a->meta ? a->meta : "{}", -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "recording artifact '%s' in '%s'", a->name,
                                     db->path);
    *id = sqlite3_last_insert_rowid(db->sql);
    return EB_OK;
}

eb_status eb_results_run_artifact(eb_results *db, int64_t run_id, int64_t artifact_id,
                                  const char *role, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (!nonempty(role))
        return eb_error_set(err, EB_ERR_ARG, "artifact role is empty");
    rc = sqlite3_prepare_v2(db->sql,
                            "INSERT OR IGNORE INTO run_artifacts(run_id, artifact_id, role) "
                            "VALUES (?1, ?2, ?3)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_int64(st, 2, artifact_id);
        sqlite3_bind_text(st, 3, role, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err,
                                     "linking artifact %" PRId64 " to run %" PRId64
                                     " as '%s' in '%s' (do both exist?)",
                                     artifact_id, run_id, role, db->path);
    return EB_OK;
}

/* ---- Jobs ---------------------------------------------------------------------------- */

static eb_status check_job_def(eb_results *db, const eb_results_job_def *d, eb_error *err)
{
    const struct {
        const char *name, *value;
    } req[] = {{"key", d->key},       {"name", d->name},    {"method", d->method},
               {"arch", d->arch},     {"device", d->device}};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!nonempty(req[i].value))
            return eb_error_set(err, EB_ERR_ARG, "job '%s': field '%s' is empty",
                                or_empty(d->key), req[i].name);
    if (d->seed > (uint64_t)INT64_MAX)
        return eb_error_set(err, EB_ERR_ARG,
                            "job '%s': seed %" PRIu64 " does not fit SQLite's signed 64-bit "
                            "integers (at most %" PRId64 ")",
                            d->key, d->seed, INT64_MAX);
    if (d->bundle_id < 0)
        return eb_error_set(err, EB_ERR_ARG, "job '%s': bundle_id %" PRId64 " is negative", d->key,
                            d->bundle_id);
    if (d->settings) {
        char what[256];
        snprintf(what, sizeof what, "job '%.200s' field 'settings'", d->key);
        return check_json_object(db, d->settings, what, err);
    }
    return EB_OK;
}

eb_status eb_results_job_begin(eb_results *db, int64_t run_id, const eb_results_job_def *def,
                               int64_t *job_id, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_status status;
    char now[32];
    int rc, exists;

    if (job_id)
        *job_id = 0;
    if ((status = need_no_job(db, "begin a job", err)) != EB_OK ||
        (status = check_job_def(db, def, err)) != EB_OK)
        return status;
    /* IMMEDIATE: the write lock is taken now, so the job never fails late
     * on a lock another process holds (the busy timeout waits here). */
    if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "starting job '%s' in '%s'", def->key,
                                     db->path);
    if ((exists = row_exists_id(db, "runs", run_id)) != 1) {
        status = exists < 0 ? eb_results__sql_error(db->sql, err, "starting job '%s' in '%s'",
                                                    def->key, db->path)
                            : eb_error_set(err, EB_ERR_NOTFOUND,
                                           "job '%s': run %" PRId64 " does not exist in '%s'",
                                           def->key, run_id, db->path);
        goto fail;
    }
    if (def->bundle_id && (exists = row_exists_id(db, "artifacts", def->bundle_id)) != 1) {
        status = exists < 0 ? eb_results__sql_error(db->sql, err, "starting job '%s' in '%s'",
                                                    def->key, db->path)
                            : eb_error_set(err, EB_ERR_NOTFOUND,
                                           "job '%s': bundle artifact %" PRId64
                                           " does not exist in '%s'",
                                           def->key, def->bundle_id, db->path);
        goto fail;
    }
    /* A job of this run and key: done is final, failed is retried. */
    rc = sqlite3_prepare_v2(db->sql, "SELECT id, status FROM jobs WHERE run_id = ?1 AND key = ?2",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_text(st, 2, def->key, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        int64_t old = sqlite3_column_int64(st, 0);
        int done = strcmp((const char *)sqlite3_column_text(st, 1), "done") == 0;
        sqlite3_finalize(st);
        st = NULL;
        if (done) {
            status = eb_error_set(err, EB_ERR_ARG,
                                  "job '%s' is already done in run %" PRId64 " of '%s'",
                                  def->key, run_id, db->path);
            goto fail;
        }
        rc = sqlite3_prepare_v2(db->sql, "DELETE FROM jobs WHERE id = ?1", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, old);
            rc = sqlite3_step(st);
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_DONE) {
        status = eb_results__sql_error(db->sql, err, "starting job '%s' in '%s'", def->key,
                                       db->path);
        goto fail;
    }
    /* Status, seconds and finished_at are provisional until commit or
     * fail rewrites them; no other connection sees the row before. */
    eb_results__now_iso(now);
    rc = sqlite3_prepare_v2(db->sql,
                            "INSERT INTO jobs(run_id, key, name, method, chain, arch, seed, "
                            "device, draws, settings, bundle_id, status, seconds, finished_at) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'done', 0, ?12)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_text(st, 2, def->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, def->method, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, or_empty(def->chain), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, def->arch, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (int64_t)def->seed);
        sqlite3_bind_text(st, 8, def->device, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 9, def->draws);
        sqlite3_bind_text(st, 10, def->settings ? def->settings : "{}", -1, SQLITE_STATIC);
        if (def->bundle_id)
            sqlite3_bind_int64(st, 11, def->bundle_id);
        else
            sqlite3_bind_null(st, 11);
        sqlite3_bind_text(st, 12, now, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        status = eb_results__sql_error(db->sql, err, "recording job '%s' in '%s'", def->key,
                                       db->path);
        goto fail;
    }
    db->job_id = sqlite3_last_insert_rowid(db->sql);
    snprintf(db->job_key, sizeof db->job_key, "%s", def->key);
    if (job_id)
        *job_id = db->job_id;
    return EB_OK;

fail:
    if (!sqlite3_get_autocommit(db->sql))
        sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
    return status;
}

static eb_status check_metric(const eb_results_metric *m, size_t i, eb_error *err)
{
    if (!nonempty(m->facet) || !nonempty(m->name))
        return eb_error_set(err, EB_ERR_ARG, "metric %zu has an empty facet or name", i);
    if (m->higher_is_better != 0 && m->higher_is_better != 1)
        return eb_error_set(err, EB_ERR_ARG, "metric %s/%s: higher_is_better is %d, not 0 or 1",
                            m->facet, m->name, m->higher_is_better);
    if (m->has_ci && (!isfinite(m->ci_low) || !isfinite(m->ci_high) || m->ci_low > m->ci_high ||
                      !(m->ci_level > 0 && m->ci_level < 1)))
        return eb_error_set(err, EB_ERR_ARG,
                            "metric %s/%s: interval [%g, %g] at level %g is not finite, ordered "
                            "and in (0, 1)",
                            m->facet, m->name, m->ci_low, m->ci_high, m->ci_level);
    return EB_OK;
}

eb_status eb_results_job_metrics(eb_results *db, const eb_results_metric *m, size_t n,
                                 eb_error *err)
{
    sqlite3_stmt *conv = NULL, *put = NULL;
    eb_status status;

    if ((status = need_job(db, "add metrics", err)) != EB_OK)
        return status;
    for (size_t i = 0; i < n; i++)
        if ((status = check_metric(&m[i], i, err)) != EB_OK) {
            eb_error_prefix(err, "job '%s': ", db->job_key);
            return status;
        }
    if (sqlite3_prepare_v2(db->sql, "SELECT 1 FROM conventions WHERE id = ?1", -1, &conv,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->sql,
                           "INSERT INTO metrics(job_id, facet, name, context, value, ci_low, "
                           "ci_high, ci_level, unit, higher_is_better, convention) VALUES (?1, "
                           "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                           -1, &put, NULL) != SQLITE_OK) {
        status = eb_results__sql_error(db->sql, err, "job '%s': adding metrics in '%s'",
                                       db->job_key, db->path);
        goto done;
    }
    for (size_t i = 0; i < n && status == EB_OK; i++) {
        const eb_results_metric *x = &m[i];
        int rc;
        if (x->convention) {
            sqlite3_reset(conv);
            sqlite3_bind_text(conv, 1, x->convention, -1, SQLITE_STATIC);
            rc = sqlite3_step(conv);
            if (rc == SQLITE_DONE) {
                status = eb_error_set(err, EB_ERR_ARG,
                                      "job '%s': metric %s/%s names convention '%s', which is "
                                      "not registered in '%s' (eb_results_conventions)",
                                      db->job_key, x->facet, x->name, x->convention, db->path);
                break;
            }
            if (rc != SQLITE_ROW) {
                status = eb_results__sql_error(db->sql, err, "job '%s': reading conventions",
                                               db->job_key);
                break;
            }
        }
        sqlite3_reset(put);
        sqlite3_clear_bindings(put);
        sqlite3_bind_int64(put, 1, db->job_id);
        sqlite3_bind_text(put, 2, x->facet, -1, SQLITE_STATIC);
        sqlite3_bind_text(put, 3, x->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(put, 4, or_empty(x->context), -1, SQLITE_STATIC);
        sqlite3_bind_double(put, 5, x->value); /* NaN binds NULL */
        if (x->has_ci) {
            sqlite3_bind_double(put, 6, x->ci_low);
            sqlite3_bind_double(put, 7, x->ci_high);
            sqlite3_bind_double(put, 8, x->ci_level);
        }
        sqlite3_bind_text(put, 9, or_empty(x->unit), -1, SQLITE_STATIC);
        sqlite3_bind_int(put, 10, x->higher_is_better);
        sqlite3_bind_text(put, 11, x->convention, -1, SQLITE_STATIC);
        rc = sqlite3_step(put);
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            status = eb_error_set(err, EB_ERR_ARG,
                                  "job '%s': metric %s/%s with context '%s' was already added",
                                  db->job_key, x->facet, x->name, or_empty(x->context));
        else if (rc != SQLITE_DONE)
            status = eb_results__sql_error(db->sql, err, "job '%s': adding metric %s/%s in '%s'",
                                           db->job_key, x->facet, x->name, db->path);
    }
done:
    sqlite3_finalize(conv);
    sqlite3_finalize(put);
    return status;
}

eb_status eb_results_job_latency(eb_results *db, const char *kind, const double *seconds,
                                 size_t n, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_status status;
    int64_t seq = 0;
    int rc;

    if ((status = need_job(db, "add latency samples", err)) != EB_OK)
        return status;
    if (!nonempty(kind))
        return eb_error_set(err, EB_ERR_ARG, "job '%s': latency sample kind is empty",
                            db->job_key);
    /* All checked before the first insert: a bad sample adds nothing. */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(seconds[i]) || seconds[i] < 0)
            return eb_error_set(err, EB_ERR_ARG,
                                "job '%s': latency sample %zu of kind '%s' is %g, not a finite "
                                "non-negative number of seconds",
                                db->job_key, i, kind, seconds[i]);
    rc = sqlite3_prepare_v2(db->sql,
                            "SELECT coalesce(max(seq) + 1, 0) FROM latency_samples "
                            "WHERE job_id = ?1 AND kind = ?2",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, db->job_id);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            seq = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_ROW)
        rc = sqlite3_prepare_v2(db->sql,
                                "INSERT INTO latency_samples(job_id, kind, seq, seconds) "
                                "VALUES (?1, ?2, ?3, ?4)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, db->job_id);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        /* One statement, re-bound per sample: no parsing or allocation
         * per row. */
        for (size_t i = 0; i < n; i++) {
            sqlite3_bind_int64(st, 3, seq + (int64_t)i);
            sqlite3_bind_double(st, 4, seconds[i]);
            if ((rc = sqlite3_step(st)) != SQLITE_DONE)
                break;
            sqlite3_reset(st);
        }
        if (n == 0)
            rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE)
        status = eb_results__sql_error(db->sql, err,
                                       "job '%s': adding latency samples of kind '%s' in '%s'",
                                       db->job_key, kind, db->path);
    sqlite3_finalize(st);
    return status;
}

eb_status eb_results_job_bins(eb_results *db, const char *context, const eb_results_bin *bins,
                              size_t n, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_status status;
    int rc;

    if ((status = need_job(db, "add reliability bins", err)) != EB_OK)
        return status;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(bins[i].lo) || !isfinite(bins[i].hi) || bins[i].lo > bins[i].hi ||
            bins[i].count < 0)
            return eb_error_set(err, EB_ERR_ARG,
                                "job '%s': reliability bin %zu of '%s' has edges [%g, %g] and "
                                "count %" PRId64 " (edges must be finite and ordered, the count "
                                ">= 0)",
                                db->job_key, i, or_empty(context), bins[i].lo, bins[i].hi,
                                bins[i].count);
    rc = sqlite3_prepare_v2(db->sql,
                            "INSERT INTO reliability_bins(job_id, context, bin, lo, hi, count, "
                            "confidence, accuracy) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = SQLITE_DONE;
        sqlite3_bind_int64(st, 1, db->job_id);
        sqlite3_bind_text(st, 2, or_empty(context), -1, SQLITE_STATIC);
        for (size_t i = 0; i < n; i++) {
            sqlite3_bind_int64(st, 3, (int64_t)i);
            sqlite3_bind_double(st, 4, bins[i].lo);
            sqlite3_bind_double(st, 5, bins[i].hi);
            sqlite3_bind_int64(st, 6, bins[i].count);
            sqlite3_bind_double(st, 7, bins[i].confidence); /* NaN binds NULL */
            sqlite3_bind_double(st, 8, bins[i].accuracy);
            if ((rc = sqlite3_step(st)) != SQLITE_DONE)
                break;
            sqlite3_reset(st);
        }
    }
    if (rc != SQLITE_DONE)
        status = eb_results__sql_error(db->sql, err,
                                       "job '%s': adding reliability bins '%s' in '%s'",
                                       db->job_key, or_empty(context), db->path);
    sqlite3_finalize(st);
    return status;
}

eb_status eb_results_job_curve(eb_results *db, const char *kind, const char *context,
                               const double *x, const double *y, size_t n, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_status status;
    int rc;

    if ((status = need_job(db, "add a curve", err)) != EB_OK)
        return status;
    if (!nonempty(kind))
        return eb_error_set(err, EB_ERR_ARG, "job '%s': curve kind is empty", db->job_key);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || !isfinite(y[i]))
            return eb_error_set(err, EB_ERR_ARG,
                                "job '%s': point %zu of curve %s '%s' is (%g, %g), not finite",
                                db->job_key, i, kind, or_empty(context), x[i], y[i]);
    rc = sqlite3_prepare_v2(db->sql,
                            "INSERT INTO curves(job_id, kind, context, seq, x, y) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = SQLITE_DONE;
        sqlite3_bind_int64(st, 1, db->job_id);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, or_empty(context), -1, SQLITE_STATIC);
        for (size_t i = 0; i < n; i++) {
            sqlite3_bind_int64(st, 4, (int64_t)i);
            sqlite3_bind_double(st, 5, x[i]);
            sqlite3_bind_double(st, 6, y[i]);
            if ((rc = sqlite3_step(st)) != SQLITE_DONE)
                break;
            sqlite3_reset(st);
        }
    }
    if (rc != SQLITE_DONE)
        status = eb_results__sql_error(db->sql, err, "job '%s': adding curve %s '%s' in '%s'",
                                       db->job_key, kind, or_empty(context), db->path);
    sqlite3_finalize(st);
    return status;
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

eb_status eb_results_job_predictions(eb_results *db, const char *split, const float *probs,
                                     const uint8_t *labels, size_t n, size_t n_classes,
                                     size_t first, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_status status;
    size_t row_bytes = 0;
    unsigned char *swap = NULL;
    int rc;

    if ((status = need_job(db, "add predictions", err)) != EB_OK)
        return status;
    if (!nonempty(split))
        return eb_error_set(err, EB_ERR_ARG, "job '%s': prediction split is empty", db->job_key);
    if (n_classes == 0 || eb_size_mul(n_classes, 4, &row_bytes) || row_bytes > INT32_MAX ||
        first > (size_t)INT64_MAX - n)
        return eb_error_set(err, EB_ERR_ARG,
                            "job '%s': predictions of '%s' with %zu classes from example %zu "
                            "do not fit the table",
                            db->job_key, split, n_classes, first);
    /* The blobs are little-endian float32; a big-endian host converts
     * through one row buffer allocated here, outside the loop. */
    if (!host_is_little_endian() && !(swap = eb_malloc(row_bytes)))
        return eb_error_set(err, EB_ERR_NOMEM, "job '%s': out of memory storing predictions",
                            db->job_key);
    rc = sqlite3_prepare_v2(db->sql,
                            "INSERT INTO predictions(job_id, split, example, label, probs) "
                            "VALUES (?1, ?2, ?3, ?4, ?5)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = SQLITE_DONE;
        sqlite3_bind_int64(st, 1, db->job_id);
        sqlite3_bind_text(st, 2, split, -1, SQLITE_STATIC);
        for (size_t i = 0; i < n; i++) {
            const void *row = probs + i * n_classes;
            if (swap) {
                const unsigned char *src = row;
                for (size_t b = 0; b < row_bytes; b += 4) {
                    swap[b] = src[b + 3];
                    swap[b + 1] = src[b + 2];
                    swap[b + 2] = src[b + 1];
                    swap[b + 3] = src[b];
                }
                row = swap;
            }
            sqlite3_bind_int64(st, 3, (int64_t)(first + i));
            if (labels)
                sqlite3_bind_int(st, 4, labels[i]);
            else
                sqlite3_bind_null(st, 4);
            sqlite3_bind_blob(st, 5, row, (int)row_bytes, SQLITE_STATIC);
            if ((rc = sqlite3_step(st)) != SQLITE_DONE)
                break;
            sqlite3_reset(st);
        }
    }
    if (rc != SQLITE_DONE)
        status = eb_results__sql_error(db->sql, err, "job '%s': adding predictions of '%s' in '%s'",
                                       db->job_key, split, db->path);
    sqlite3_finalize(st);
    eb_free(swap);
    return status;
}

/* The job's transaction is gone when SQLite rolled it back on its own
 * (an I/O error, a full disk): nothing can be committed any more. */
static eb_status need_live_transaction(eb_results *db, eb_error *err)
{
    if (sqlite3_get_autocommit(db->sql))
        return eb_error_set(err, EB_ERR_IO,
                            "job '%s': its transaction in '%s' was rolled back by an earlier "
                            "error; abort the job",
                            db->job_key, db->path);
    return EB_OK;
}

/* Rewrites the open job's final status and commits. */
static eb_status finish_job(eb_results *db, const char *status_text, const char *message,
                            double seconds, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    char now[32];
    eb_status status;
    int rc;

    if ((status = need_live_transaction(db, err)) != EB_OK)
        return status;
    if (!isfinite(seconds) || seconds < 0)
        return eb_error_set(err, EB_ERR_ARG, "job '%s': wall time %g s is not finite and >= 0",
                            db->job_key, seconds);
    eb_results__now_iso(now);
    rc = sqlite3_prepare_v2(db->sql,
                            "UPDATE jobs SET status = ?1, error = ?2, seconds = ?3, "
                            "finished_at = ?4 WHERE id = ?5",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, status_text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, message, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 3, seconds);
        sqlite3_bind_text(st, 4, now, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, db->job_id);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "job '%s': recording its end in '%s'",
                                     db->job_key, db->path);
    if (sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "job '%s': committing it to '%s'",
                                     db->job_key, db->path);
    db->job_id = 0;
    db->job_key[0] = '\0';
    return EB_OK;
}

eb_status eb_results_job_commit(eb_results *db, double seconds, eb_error *err)
{
    eb_status status;
    if ((status = need_job(db, "commit a job", err)) != EB_OK)
        return status;
    return finish_job(db, "done", NULL, seconds, err);
}

void eb_results_job_abort(eb_results *db)
{
    if (!db || !db->job_id)
        return;
    if (!sqlite3_get_autocommit(db->sql))
        sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
    db->job_id = 0;
    db->job_key[0] = '\0';
}

eb_status eb_results_job_fail(eb_results *db, const char *message, double seconds,
                              eb_error *err)
{
    static const char *const children[] = {"metrics", "latency_samples", "reliability_bins",
                                           "curves", "predictions"};
    eb_status status;

    if ((status = need_job(db, "record a failed job", err)) != EB_OK)
        return status;
    if (!nonempty(message))
        return eb_error_set(err, EB_ERR_ARG, "job '%s': a failed job needs its error message",
                            db->job_key);
    if ((status = need_live_transaction(db, err)) != EB_OK)
        return status;
    /* A failed job has no measurements: drop what was added before the
     * failure, inside the same transaction. */
    for (size_t i = 0; i < sizeof children / sizeof children[0]; i++) {
        sqlite3_stmt *st = NULL;
        char q[96];
        int rc;
        snprintf(q, sizeof q, "DELETE FROM %s WHERE job_id = ?1", children[i]);
        rc = sqlite3_prepare_v2(db->sql, q, -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, db->job_id);
            rc = sqlite3_step(st);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return eb_results__sql_error(db->sql, err, "job '%s': clearing its %s in '%s'",
                                         db->job_key, children[i], db->path);
    }
    return finish_job(db, "failed", message, seconds, err);
}

eb_status eb_results_job_done(eb_results *db, const eb_results_scope *scope, const char *key,
                              int *found, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *found = 0;
    if (!nonempty(key))
        return eb_error_set(err, EB_ERR_ARG, "job key is empty");
    rc = sqlite3_prepare_v2(db->sql,
                            "SELECT EXISTS (SELECT 1 FROM jobs j JOIN runs r ON r.id = j.run_id "
                            "WHERE j.key = ?1 AND j.status = 'done' AND (?2 = 0 OR r.id = ?2) "
                            "AND (?3 IS NULL OR r.suite = ?3) AND (?4 IS NULL OR r.label = ?4))",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, scope ? scope->run_id : 0);
        sqlite3_bind_text(st, 3, scope ? scope->suite : NULL, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, scope ? scope->label : NULL, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *found = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return eb_results__sql_error(db->sql, err, "looking for job '%s' in '%s'", key,
                                     db->path);
    return EB_OK;
}

/* ---- Queries ----------------------------------------------------------------------- */

static const char *col_text(eb_results__arena **mem, sqlite3_stmt *st, int col, int *ok)
{
    return eb_results__arena_strdup(mem, (const char *)sqlite3_column_text(st, col), ok);
}

static double col_real(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* A query over rows of elsize bytes: fill() converts the current row of
 * st into the zeroed element, copying its strings into *mem and clearing
 * *ok when out of memory. The array and arena are the caller's on
 * success and freed here on failure. */
typedef void (*row_fill)(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok);

static eb_status run_query(eb_results *db, sqlite3_stmt *st, size_t elsize, row_fill fill,
                           void **out_v, size_t *out_n, eb_results__arena **out_mem,
                           const char *what, eb_error *err)
{
    eb_results__arena *mem = NULL;
    char *v = NULL;
    size_t n = 0, cap = 0;
    int rc, ok = 1;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char *grown = eb_results__vec_room(v, n, &cap, elsize);
        if (!grown) {
            ok = 0;
            break;
        }
        v = grown;
        fill(v + n * elsize, st, &mem, &ok);
        if (!ok)
            break;
        n++;
    }
    sqlite3_finalize(st);
    if (!ok || rc != SQLITE_DONE) {
        eb_status status =
            !ok ? eb_error_set(err, EB_ERR_NOMEM, "out of memory reading %s from '%s'", what,
                               db->path)
                : eb_results__sql_error(db->sql, err, "reading %s from '%s'", what, db->path);
        eb_free(v);
        eb_results__arena_free(mem);
        return status;
    }
    *out_v = v;
    *out_n = n;
    if (out_mem)
        *out_mem = mem;
    else
        eb_results__arena_free(mem);
    return EB_OK;
}

static void fill_run(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok)
{
    eb_results_run *r = el;
    r->id = sqlite3_column_int64(st, 0);
    r->uuid = col_text(mem, st, 1, ok);
    r->label = col_text(mem, st, 2, ok);
    r->suite = col_text(mem, st, 3, ok);
    r->suite_sha256 = col_text(mem, st, 4, ok);
    r->shard = col_text(mem, st, 5, ok);
    r->started_at = col_text(mem, st, 6, ok);
    r->finished_at = col_text(mem, st, 7, ok);
    r->version = col_text(mem, st, 8, ok);
    r->git_commit = col_text(mem, st, 9, ok);
    r->compiler = col_text(mem, st, 10, ok);
    r->cflags = col_text(mem, st, 11, ok);
    r->cpu_model = col_text(mem, st, 12, ok);
    r->host = col_text(mem, st, 13, ok);
    r->libraries = col_text(mem, st, 14, ok);
    r->environment = col_text(mem, st, 15, ok);
    r->cores = sqlite3_column_int64(st, 16);
    r->jobs_done = sqlite3_column_int64(st, 17);
    r->jobs_failed = sqlite3_column_int64(st, 18);
}

eb_status eb_results_runs(eb_results *db, const eb_results_scope *scope,
                          eb_results_run_list *out, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_results__arena *mem = NULL;
    void *v = NULL;
    eb_status status;

    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db->sql,
                           "SELECT r.id, uuid, label, suite, suite_sha256, shard, started_at, "
                           "r.finished_at, version, git_commit, compiler, cflags, cpu_model, "
                           "host, libraries, environment, cores, "
                           "(SELECT count(*) FROM jobs j WHERE j.run_id = r.id AND "
                           "j.status = 'done'), "
                           "(SELECT count(*) FROM jobs j WHERE j.run_id = r.id AND "
                           "j.status = 'failed') "
                           "FROM runs r WHERE (?1 = 0 OR r.id = ?1) AND (?2 IS NULL OR suite = ?2) "
                           "AND (?3 IS NULL OR label = ?3) ORDER BY started_at, r.id",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "listing runs in '%s'", db->path);
    sqlite3_bind_int64(st, 1, scope ? scope->run_id : 0);
    sqlite3_bind_text(st, 2, scope ? scope->suite : NULL, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, scope ? scope->label : NULL, -1, SQLITE_STATIC);
    status = run_query(db, st, sizeof(eb_results_run), fill_run, &v, &out->n, &mem, "runs", err);
    if (status == EB_OK) {
        out->v = v;
        out->mem_ = mem;
    }
    return status;
}

void eb_results_run_list_free(eb_results_run_list *l)
{
    if (!l)
        return;
    eb_free(l->v);
    eb_results__arena_free(l->mem_);
    memset(l, 0, sizeof *l);
}

static void fill_job(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok)
{
    eb_results_job *j = el;
    j->id = sqlite3_column_int64(st, 0);
    j->run_id = sqlite3_column_int64(st, 1);
    j->key = col_text(mem, st, 2, ok);
    j->name = col_text(mem, st, 3, ok);
    j->method = col_text(mem, st, 4, ok);
    j->chain = col_text(mem, st, 5, ok);
    j->arch = col_text(mem, st, 6, ok);
    j->seed = sqlite3_column_int64(st, 7);
    j->device = col_text(mem, st, 8, ok);
    j->draws = sqlite3_column_int64(st, 9);
    j->settings = col_text(mem, st, 10, ok);
    j->bundle_id = sqlite3_column_int64(st, 11); /* NULL reads as 0 */
    j->status = col_text(mem, st, 12, ok);
    j->error = col_text(mem, st, 13, ok);
    j->seconds = sqlite3_column_double(st, 14);
    j->finished_at = col_text(mem, st, 15, ok);
}

eb_status eb_results_jobs(eb_results *db, int64_t run_id, eb_results_job_list *out,
                          eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_results__arena *mem = NULL;
    void *v = NULL;
    eb_status status;

    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db->sql,
                           "SELECT id, run_id, key, name, method, chain, arch, seed, device, "
                           "draws, settings, bundle_id, status, error, seconds, finished_at "
                           "FROM jobs WHERE run_id = ?1 ORDER BY key",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "listing jobs of run %" PRId64 " in '%s'",
                                     run_id, db->path);
    sqlite3_bind_int64(st, 1, run_id);
    status = run_query(db, st, sizeof(eb_results_job), fill_job, &v, &out->n, &mem, "jobs", err);
    if (status == EB_OK) {
        out->v = v;
        out->mem_ = mem;
    }
    return status;
}

void eb_results_job_list_free(eb_results_job_list *l)
{
    if (!l)
        return;
    eb_free(l->v);
    eb_results__arena_free(l->mem_);
    memset(l, 0, sizeof *l);
}

static void fill_metric(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok)
{
    eb_results_metric *m = el;
    m->facet = col_text(mem, st, 0, ok);
    m->name = col_text(mem, st, 1, ok);
    m->context = col_text(mem, st, 2, ok);
    m->value = col_real(st, 3);
    m->has_ci = sqlite3_column_type(st, 4) != SQLITE_NULL &&
                sqlite3_column_type(st, 5) != SQLITE_NULL &&
                sqlite3_column_type(st, 6) != SQLITE_NULL;
    m->ci_low = col_real(st, 4);
    m->ci_high = col_real(st, 5);
    m->ci_level = col_real(st, 6);
    m->unit = col_text(mem, st, 7, ok);
    m->higher_is_better = sqlite3_column_int(st, 8);
    m->convention = col_text(mem, st, 9, ok);
}

eb_status eb_results_metrics(eb_results *db, int64_t job_id, eb_results_metric_list *out,
                             eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_results__arena *mem = NULL;
    void *v = NULL;
    eb_status status;

    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db->sql,
                           "SELECT facet, name, context, value, ci_low, ci_high, ci_level, unit, "
                           "higher_is_better, convention FROM metrics WHERE job_id = ?1 "
                           "ORDER BY facet, name, context",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "listing metrics of job %" PRId64 " in '%s'",
                                     job_id, db->path);
    sqlite3_bind_int64(st, 1, job_id);
    status = run_query(db, st, sizeof(eb_results_metric), fill_metric, &v, &out->n, &mem,
                       "metrics", err);
    if (status == EB_OK) {
        out->v = v;
        out->mem_ = mem;
    }
    return status;
}

void eb_results_metric_list_free(eb_results_metric_list *l)
{
    if (!l)
        return;
    eb_free(l->v);
    eb_results__arena_free(l->mem_);
    memset(l, 0, sizeof *l);
}

static void fill_double(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok)
{
    (void)mem;
    (void)ok;
    *(double *)el = sqlite3_column_double(st, 0);
}

eb_status eb_results_latency(eb_results *db, int64_t job_id, const char *kind,
                             eb_results_samples *out, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    void *v = NULL;
    eb_status status;

    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db->sql,
                           "SELECT seconds FROM latency_samples WHERE job_id = ?1 AND kind = ?2 "
                           "ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "reading latency samples of job %" PRId64
                                     " in '%s'",
                                     job_id, db->path);
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    status = run_query(db, st, sizeof(double), fill_double, &v, &out->n, NULL,
                       "latency samples", err);
    if (status == EB_OK)
        out->v = v;
    return status;
}

void eb_results_samples_free(eb_results_samples *s)
{
    if (!s)
        return;
    eb_free(s->v);
    memset(s, 0, sizeof *s);
}

static void fill_point(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok)
{
    eb_results_curve_point *p = el;
    p->kind = col_text(mem, st, 0, ok);
    p->context = col_text(mem, st, 1, ok);
    p->seq = sqlite3_column_int64(st, 2);
    p->x = sqlite3_column_double(st, 3);
    p->y = sqlite3_column_double(st, 4);
}

eb_status eb_results_curves(eb_results *db, int64_t job_id, eb_results_curve_list *out,
                            eb_error *err)
{
    sqlite3_stmt *st = NULL;
    eb_results__arena *mem = NULL;
    void *v = NULL;
    eb_status status;

    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db->sql,
                           "SELECT kind, context, seq, x, y FROM curves WHERE job_id = ?1 "
                           "ORDER BY kind, context, seq",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "reading curves of job %" PRId64 " in '%s'",
                                     job_id, db->path);
    sqlite3_bind_int64(st, 1, job_id);
    status = run_query(db, st, sizeof(eb_results_curve_point), fill_point, &v, &out->n, &mem,
                       "curves", err);
    if (status == EB_OK) {
        out->v = v;
        out->mem_ = mem;
    }
    return status;
}

void eb_results_curve_list_free(eb_results_curve_list *l)
{
    if (!l)
        return;
    eb_free(l->v);
    eb_results__arena_free(l->mem_);
    memset(l, 0, sizeof *l);
}

static void fill_bin(void *el, sqlite3_stmt *st, eb_results__arena **mem, int *ok)
{
    eb_results_bin *b = el;
    (void)mem;
    (void)ok;
    b->lo = sqlite3_column_double(st, 0);
    b->hi = sqlite3_column_double(st, 1);
    b->count = sqlite3_column_int64(st, 2);
    b->confidence = col_real(st, 3);
    b->accuracy = col_real(st, 4);
}

eb_status eb_results_bins(eb_results *db, int64_t job_id, const char *context,
                          eb_results_bin_list *out, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    void *v = NULL;
    eb_status status;

    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db->sql,
                           "SELECT lo, hi, count, confidence, accuracy FROM reliability_bins "
                           "WHERE job_id = ?1 AND context = ?2 ORDER BY bin",
                           -1, &st, NULL) != SQLITE_OK)
        return eb_results__sql_error(db->sql, err, "reading reliability bins of job %" PRId64
                                     " in '%s'",
                                     job_id, db->path);
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_text(st, 2, or_empty(context), -1, SQLITE_STATIC);
    status = run_query(db, st, sizeof(eb_results_bin), fill_bin, &v, &out->n, NULL,
                       "reliability bins", err);
    if (status == EB_OK)
        out->v = v;
    return status;
}

void eb_results_bin_list_free(eb_results_bin_list *l)
{
    if (!l)
        return;
    eb_free(l->v);
    memset(l, 0, sizeof *l);
}
