/* migrate.c: what a results file is and how it reaches the current schema.
 *
 * Owns the recognition of a file (ours by application_id, fresh, foreign,
 * newer), the table check, this build's schema (results/schema.sql,
 * compiled in) with its upgrade list, and applying them in one
 * transaction. Policy (docs/results.md): schema.sql is always the
 * complete newest schema, so a fresh file is created from it directly; a
 * file at an older version v is upgraded by the entries v+1 .. newest of
 * `upgrades`, in order, all in one transaction, so a failed or killed
 * migration leaves the file at v. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_version.h"
#include "results/results_internal.h"

#include "eb_schema_gen.h"

/* Version 1 is the first schema, so there is nothing to upgrade yet.
 * Version 2 will add `static const eb_results__migration upgrades[] =
 * {{2, "ALTER TABLE ..."}};` here, point .upgrades at it, and change
 * schema.sql in the same commit to the complete version-2 schema. */
static const eb_results__schema current_schema = {
    /* .create_sql = */ eb_schema_sql_gen,
    /* .version = */ EB_RESULTS_SCHEMA_VERSION,
    /* .upgrades = */ NULL,
    /* .n_upgrades = */ 0,
};

const eb_results__schema *eb_results__schema_current(void)
{
    return &current_schema;
}

/* Tables of the current schema; a file of our application and version
 * lacking one was damaged or edited by hand. */
static const char *const required_tables[] = {
    "conventions", "runs",    "artifacts",        "run_artifacts", "jobs",
    "metrics",     "latency_samples", "reliability_bins", "curves",        "predictions"};

/* Runs a one-integer query. Returns SQLite's code: SQLITE_ROW on success. */
static int query_int(sqlite3 *sql, const char *q, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sql, q, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *out = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Reads failed: say what the file is when SQLite can tell. */
static eb_status read_failed(sqlite3 *sql, int rc, const char *path, eb_error *err)
{
    int prim = rc & 0xff;
    if (prim == SQLITE_NOTADB)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' is not an SQLite database (SQLite: %s); it was left untouched",
                            path, sqlite3_errmsg(sql));
    if (prim == SQLITE_CORRUPT)
        return eb_error_set(err, EB_ERR_FORMAT, "'%s' is a damaged SQLite database (SQLite: %s)",
                            path, sqlite3_errmsg(sql));
    return eb_results__sql_error(sql, err, "reading the header of '%s'", path);
}

eb_status eb_results__inspect(sqlite3 *sql, const char *schema, const char *path, int known,
                              eb_results__state *state, int *version, eb_error *err)
{
    char q[256];
    int64_t app = 0, ver = 0, nobj = 0;
    int rc;

    snprintf(q, sizeof q, "PRAGMA %s.application_id", schema);
    if ((rc = query_int(sql, q, &app)) != SQLITE_ROW)
        return read_failed(sql, rc, path, err);
    snprintf(q, sizeof q, "PRAGMA %s.user_version", schema);
    if ((rc = query_int(sql, q, &ver)) != SQLITE_ROW)
        return read_failed(sql, rc, path, err);
    snprintf(q, sizeof q, "SELECT count(*) FROM %s.sqlite_master", schema);
    if ((rc = query_int(sql, q, &nobj)) != SQLITE_ROW)
        return read_failed(sql, rc, path, err);

    *version = 0;
    if (app == 0 && ver == 0 && nobj == 0) {
        *state = EB_RESULTS__FRESH;
        return EB_OK;
    }
    if (app != EB_RESULTS_APPLICATION_ID) {
        /* Name one of its tables: it tells the user what the file is. */
        char example[96] = "";
        sqlite3_stmt *st = NULL;
        snprintf(q, sizeof q,
                 "SELECT name FROM %s.sqlite_master WHERE type = 'table' ORDER BY name LIMIT 1",
                 schema);
        if (sqlite3_prepare_v2(sql, q, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(example, sizeof example, ", e.g. table '%s'",
                     (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' is an SQLite database of another program, not an edgebayes "
                            "results database (application_id 0x%08" PRIx64
                            ", edgebayes writes 0x%08x; user_version %" PRId64 "; %" PRId64
                            " schema objects%s); it was left untouched",
                            path, (uint64_t)(uint32_t)app, (unsigned)EB_RESULTS_APPLICATION_ID,
                            ver, nobj, example);
    }
    if (ver > known)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "'%s' has results schema version %" PRId64
                            ", newer than version %d, the newest this edgebayes %s knows; "
                            "use a newer edgebayes (the file was left untouched)",
                            path, ver, known, eb_version());
    if (ver < 1)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' carries the edgebayes application_id but schema version %" PRId64
                            "; the file is damaged",
                            path, ver);
    *state = EB_RESULTS__OURS;
    *version = (int)ver;
    return EB_OK;
}

eb_status eb_results__check_tables(sqlite3 *sql, const char *schema, const char *path,
                                   eb_error *err)
{
    char q[256];
    for (size_t i = 0; i < sizeof required_tables / sizeof required_tables[0]; i++) {
        int64_t count = 0;
        int rc;
        snprintf(q, sizeof q,
                 "SELECT count(*) FROM %s.sqlite_master WHERE type = 'table' AND name = '%s'",
                 schema, required_tables[i]);
        if ((rc = query_int(sql, q, &count)) != SQLITE_ROW)
            return read_failed(sql, rc, path, err);
        if (count != 1)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "'%s' lacks table '%s' of results schema version %d; the file "
                                "is damaged or was edited by hand",
                                path, required_tables[i], EB_RESULTS_SCHEMA_VERSION);
    }
    return EB_OK;
}

/* The upgrade list must number consecutive versions ending at the newest;
 * a broken list is a bug of this build, caught before touching a file. */
static eb_status check_schema(const eb_results__schema *s, eb_error *err)
{
    if (!s->create_sql || s->version < 1)
        return eb_error_set(err, EB_ERR_INTERNAL, "the results schema has no creation script");
    for (size_t i = 0; i < s->n_upgrades; i++) {
        int want = s->version - (int)(s->n_upgrades - 1 - i);
        if (s->upgrades[i].version != want || !s->upgrades[i].sql)
            return eb_error_set(err, EB_ERR_INTERNAL,
                                "results schema upgrade %zu is numbered %d, expected %d", i,
                                s->upgrades[i].version, want);
    }
    return EB_OK;
}

eb_status eb_results__migrate(sqlite3 *sql, const char *path, const eb_results__schema *schema,
                              eb_error *err)
{
    eb_results__state state;
    int from = 0;
    eb_status st;
    char q[128];

    if ((st = check_schema(schema, err)) != EB_OK)
        return st;
    /* IMMEDIATE: take the write lock before reading the version, so two
     * processes opening one fresh file cannot both create it. */
    if (sqlite3_exec(sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return eb_results__sql_error(sql, err, "locking '%s' to check its schema version", path);
    st = eb_results__inspect(sql, "main", path, schema->version, &state, &from, err);
    if (st != EB_OK)
        goto fail;
    if (state == EB_RESULTS__OURS && from == schema->version) {
        sqlite3_exec(sql, "COMMIT", NULL, NULL, NULL); /* read only: cannot fail usefully */
        return EB_OK;
    }
    if (state == EB_RESULTS__FRESH) {
        if (sqlite3_exec(sql, schema->create_sql, NULL, NULL, NULL) != SQLITE_OK) {
            st = eb_results__sql_error(sql, err, "creating results schema version %d in '%s'",
                                       schema->version, path);
            goto fail;
        }
    } else {
        int first = schema->version - (int)schema->n_upgrades + 1;
        if (from + 1 < first) {
            st = eb_error_set(err, EB_ERR_UNSUPPORTED,
                              "'%s' has results schema version %d; this edgebayes upgrades only "
                              "from version %d on (use an older edgebayes to upgrade it first)",
                              path, from, first - 1);
            goto fail;
        }
        for (size_t i = 0; i < schema->n_upgrades; i++) {
            const eb_results__migration *m = &schema->upgrades[i];
            if (m->version <= from)
                continue;
            if (sqlite3_exec(sql, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
                st = eb_results__sql_error(sql, err,
                                           "upgrading '%s' from results schema version %d to %d",
                                           path, m->version - 1, m->version);
                goto fail;
            }
        }
    }
    snprintf(q, sizeof q, "PRAGMA main.user_version = %d; PRAGMA main.application_id = %d",
             schema->version, (int)EB_RESULTS_APPLICATION_ID);
    if (sqlite3_exec(sql, q, NULL, NULL, NULL) != SQLITE_OK) {
        st = eb_results__sql_error(sql, err, "recording schema version %d in '%s'",
                                   schema->version, path);
        goto fail;
    }
    if (sqlite3_exec(sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        st = eb_results__sql_error(sql, err, "committing results schema version %d to '%s'",
                                   schema->version, path);
        goto fail;
    }
    return EB_OK;

fail:
    if (!sqlite3_get_autocommit(sql))
        sqlite3_exec(sql, "ROLLBACK", NULL, NULL, NULL);
    return st;
}
