/* results_internal.h: what the files of results/ share and the tests may
 * reach, but the rest of edgebayes must not: the handle's layout, SQLite
 * error reporting, the migration machinery, the arena the query lists are
 * carved from, and the naive references beside the fast statistics. */
#ifndef EB_RESULTS_INTERNAL_H
#define EB_RESULTS_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "results/eb_results.h"

struct eb_results {
    sqlite3 *sql;
    char *path;        /* as opened, for messages */
    int readonly;
    int64_t job_id;    /* the open job, 0 when none */
    char job_key[160]; /* its key (cut), for messages */
};

/* ---- SQLite helpers (store.c) ---------------------------------------- */

/* Maps an SQLite result code to the eb_status that describes it best. */
eb_status eb_results__status_of(int rc);

/* Sets err to "<formatted context>: <SQLite's message>" with the status
 * of SQLite's last error on sql, and returns that status. */
eb_status eb_results__sql_error(sqlite3 *sql, eb_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Runs sql (no results); on failure sets err naming path and what. */
eb_status eb_results__exec(sqlite3 *sql, const char *path, const char *what, const char *text,
                           eb_error *err);

/* Opens path with flags (SQLITE_OPEN_*), sets the busy timeout and
 * extended result codes. On failure closes and sets err naming path. */
eb_status eb_results__sqlite_open(const char *path, int flags, sqlite3 **out, eb_error *err);

/* An SQLite URI for path ("file:" + percent-encoding, "?mode=ro" when
 * readonly): URIs are enabled in Debian's SQLite, so a plain path that
 * happened to start with "file:" would otherwise be misread. The caller
 * frees it with eb_free; NULL when out of memory. */
char *eb_results__uri(const char *path, int readonly);

/* Current time as ISO 8601 UTC with milliseconds: 24 characters + NUL. */
void eb_results__now_iso(char out[32]);

/* ---- Arena (store.c): the memory of query lists and comparisons ------ */

typedef struct eb_results__arena eb_results__arena;

/* Allocates size bytes aligned for any type from *a (created on first
 * use); NULL when out of memory. Freed all at once by _arena_free. */
void *eb_results__arena_alloc(eb_results__arena **a, size_t size);
/* Copies s into *a; NULL s gives NULL (and *ok untouched); out of memory
 * sets *ok = 0 and returns NULL. */
char *eb_results__arena_strdup(eb_results__arena **a, const char *s, int *ok);
void eb_results__arena_free(eb_results__arena *a);

/* Makes room for element n of the array v (n elements of elsize, *cap
 * allocated, eb_malloc'd): returns the array, moved when it grew, with
 * element n zeroed; NULL when out of memory (v is still valid and still
 * the caller's). */
void *eb_results__vec_room(void *v, size_t n, size_t *cap, size_t elsize);

/* ---- Schema and migrations (migrate.c) -------------------------------- */

/* One upgrade of the schema: SQL that takes a database from version - 1
 * to version. */
typedef struct eb_results__migration {
    int version;
    const char *sql;
} eb_results__migration;

/* A schema and how to reach it. A fresh file is created from create_sql,
 * the complete newest schema (results/schema.sql); a file at version v
 * (1 <= v < version) is brought up by the upgrades numbered v+1 ..
 * version, which must be consecutive and end at version. */
typedef struct eb_results__schema {
    const char *create_sql;
    int version;
    const eb_results__migration *upgrades;
    size_t n_upgrades;
} eb_results__schema;

/* This build's schema: results/schema.sql and its upgrade list. */
const eb_results__schema *eb_results__schema_current(void);

/* What a database file holds, as far as opening is concerned. */
typedef enum eb_results__state {
    EB_RESULTS__FRESH = 0, /* empty: no schema objects, ids 0 */
    EB_RESULTS__OURS       /* our application_id; *version set */
} eb_results__state;

/* Reads application_id, user_version and the schema objects of the
 * attached schema (e.g. "main", "src") and refuses what is not ours or
 * newer than known (the newest version this build knows), naming path. Reads
 * only; never writes. */
eb_status eb_results__inspect(sqlite3 *sql, const char *schema, const char *path, int known,
                              eb_results__state *state, int *version, eb_error *err);

/* Checks that every table of the current schema exists in schema. */
eb_status eb_results__check_tables(sqlite3 *sql, const char *schema, const char *path,
                                   eb_error *err);

/* Brings main up to schema->version in one BEGIN IMMEDIATE transaction,
 * re-inspecting inside it (another process may have migrated meanwhile):
 * creates a fresh file, or applies the pending upgrades in order, then
 * sets user_version and application_id. On any failure everything is
 * rolled back and err names path and the version that failed. */
eb_status eb_results__migrate(sqlite3 *sql, const char *path, const eb_results__schema *schema,
                              eb_error *err);

/* ---- Provenance (store.c) ---------------------------------------------- */

/* Extracts a CPU description from /proc/cpuinfo text into out (cap):
 * "model name" (x86), else "Model", else "Hardware", else "CPU
 * implementer 0x.. part 0x..", else "unknown". */
void eb_results__cpu_model_parse(const char *cpuinfo, char *out, size_t cap);

/* ---- Statistics (compare.c) -------------------------------------------- */

/* Reference Mann-Whitney: U of x by counting all nx*ny pairs, and the tie
 * term sum(t^3 - t) by counting equal values pairwise; O((nx+ny)^2), no
 * allocation. The fast eb_results_mann_whitney is tested against it. */
void eb_results__mann_whitney_naive(const double *x, size_t nx, const double *y, size_t ny,
                                    double *u, double *tie_term);

/* p-value of U (of x) from the normal approximation with continuity and
 * tie corrections, as scipy's _mwu asymptotic method. */
double eb_results__mann_whitney_p(double u, size_t nx, size_t ny, double tie_term,
                                  eb_results_alternative alt);

#endif /* EB_RESULTS_INTERNAL_H */
