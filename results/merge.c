/* merge.c: combining shard databases into one (eb_results_merge).
 *
 * Every input is attached read-only to the output's connection as schema
 * "src" and copied with INSERT .. SELECT, so the rows never pass through
 * C. Identity across files: runs by uuid, artifacts by sha256,
 * conventions by id, jobs by (run uuid, key); row ids are remapped
 * (jobs through a temporary table src id -> output id). A job present
 * on both sides keeps the output's row, except that a done job replaces
 * a failed one. Hence merging is idempotent: a second merge of the same
 * file finds everything present and adds nothing. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/eb_alloc.h"
#include "results/results_internal.h"

/* Attaches path read-only as "src". */
static eb_status attach(eb_results *db, const char *path, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    char *uri = eb_results__uri(path, 1);
    int rc;

    if (!uri)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory merging '%s'", path);
    rc = sqlite3_prepare_v2(db->sql, "ATTACH DATABASE ?1 AS src", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, uri, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    eb_free(uri);
    if (rc != SQLITE_DONE && (sqlite3_errcode(db->sql) & 0xff) == SQLITE_NOTADB)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' is not an SQLite database (SQLite: %s); it was left untouched",
                            path, sqlite3_errmsg(db->sql));
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "cannot open input '%s'", path);
    return EB_OK;
}

static void detach(eb_results *db)
{
    sqlite3_exec(db->sql, "DETACH DATABASE src", NULL, NULL, NULL);
}

/* Runs a query expected to return no row; a row is a finding, copied
 * (first column as text) into found. Returns SQLite's last code. */
static int first_row(sqlite3 *sql, const char *q, char *found, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sql, q, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            snprintf(found, cap, "%s", t ? t : "NULL");
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Everything that must hold before an input may touch the output. */
static eb_status validate_attached(eb_results *db, const char *path, eb_error *err)
{
    eb_results__state state;
    int version = 0, rc;
    char found[512];
    eb_status st;

    st = eb_results__inspect(db->sql, "src", path, EB_RESULTS_SCHEMA_VERSION, &state, &version,
                             err);
    if (st != EB_OK)
        return st;
    if (state == EB_RESULTS__FRESH)
        return eb_error_set(err, EB_ERR_FORMAT, "'%s' is empty, not an edgebayes results database",
                            path);
    if (version != EB_RESULTS_SCHEMA_VERSION)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "'%s' has results schema version %d, older than version %d; open it "
                            "read-write once (any edgebayes command that writes results) to "
                            "upgrade it, then merge",
                            path, version, EB_RESULTS_SCHEMA_VERSION);
    if ((st = eb_results__check_tables(db->sql, "src", path, err)) != EB_OK)
        return st;
    rc = first_row(db->sql, "PRAGMA src.quick_check(1)", found, sizeof found);
    if (rc != SQLITE_ROW)
        return eb_results__sql_error(db->sql, err, "checking '%s'", path);
    if (strcmp(found, "ok") != 0)
        return eb_error_set(err, EB_ERR_FORMAT, "'%s' fails SQLite's quick_check: %s", path,
                            found);
    rc = first_row(db->sql, "PRAGMA src.foreign_key_check", found, sizeof found);
    if (rc == SQLITE_ROW)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' has rows whose references lead nowhere (first in table %s)",
                            path, found);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "checking the references of '%s'", path);
    rc = first_row(db->sql,
                   "SELECT s.id FROM src.conventions s JOIN main.conventions m ON m.id = s.id "
                   "WHERE m.description <> s.description LIMIT 1",
                   found, sizeof found);
    if (rc == SQLITE_ROW)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' describes convention '%s' differently from the output '%s'",
                            path, found, db->path);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "comparing the conventions of '%s'", path);
    rc = first_row(db->sql,
                   "SELECT s.sha256 FROM src.artifacts s JOIN main.artifacts m "
                   "ON m.sha256 = s.sha256 WHERE m.kind <> s.kind LIMIT 1",
                   found, sizeof found);
    if (rc == SQLITE_ROW)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "'%s' records artifact %s with another kind than the output '%s'",
                            path, found, db->path);
    if (rc != SQLITE_DONE)
        return eb_results__sql_error(db->sql, err, "comparing the artifacts of '%s'", path);
    return EB_OK;
}

/* One step of a merge: SQL and, when counted, where its changes go. */
typedef struct merge_step {
    const char *what;
    const char *sql;
    size_t *count; /* may be NULL */
} merge_step;

/* Copies the attached input into main; the caller holds the transaction. */
static eb_status merge_attached(eb_results *db, const char *path, eb_results_merge_stats *s,
                                eb_error *err)
{
    size_t jobs_new = 0;
    const merge_step steps[] = {
        {"conventions",
         "INSERT INTO main.conventions(id, description) SELECT id, description FROM "
         "src.conventions WHERE id NOT IN (SELECT id FROM main.conventions) ORDER BY id",
         NULL},
        {"artifacts",
         "INSERT INTO main.artifacts(kind, sha256, name, bytes, meta) SELECT kind, sha256, name, "
         "bytes, meta FROM src.artifacts WHERE sha256 NOT IN (SELECT sha256 FROM "
         "main.artifacts) ORDER BY id",
         &s->artifacts_added},
        {"runs",
         "INSERT INTO main.runs(uuid, label, suite, suite_sha256, shard, started_at, "
         "finished_at, version, git_commit, compiler, cflags, cpu_model, cores, host, libraries, "
         "environment) SELECT uuid, label, suite, suite_sha256, shard, started_at, finished_at, "
         "version, git_commit, compiler, cflags, cpu_model, cores, host, libraries, environment "
         "FROM src.runs WHERE uuid NOT IN (SELECT uuid FROM main.runs) ORDER BY started_at, id",
         &s->runs_added},
        /* A run merged while unfinished (its shard was still running, or
         * resumed later) takes the end time a later copy supplies. */
        {"run end times",
         "UPDATE main.runs SET finished_at = (SELECT s.finished_at FROM src.runs s WHERE "
         "s.uuid = runs.uuid) WHERE finished_at IS NULL AND uuid IN (SELECT uuid FROM src.runs "
         "WHERE finished_at IS NOT NULL)",
         &s->runs_finished},
        {"run artifacts",
         "INSERT OR IGNORE INTO main.run_artifacts(run_id, artifact_id, role) SELECT mr.id, "
         "ma.id, sra.role FROM src.run_artifacts sra JOIN src.runs sr ON sr.id = sra.run_id "
         "JOIN main.runs mr ON mr.uuid = sr.uuid JOIN src.artifacts sa ON sa.id = "
         "sra.artifact_id JOIN main.artifacts ma ON ma.sha256 = sa.sha256",
         NULL},
        /* A done job replaces a failed one (the rerun that succeeded);
         * its measurements go with it by ON DELETE CASCADE. */
        {"failed jobs",
         "DELETE FROM main.jobs WHERE status = 'failed' AND id IN (SELECT mj.id FROM main.jobs "
         "mj JOIN main.runs mr ON mr.id = mj.run_id JOIN src.runs sr ON sr.uuid = mr.uuid JOIN "
         "src.jobs sj ON sj.run_id = sr.id AND sj.key = mj.key WHERE sj.status = 'done')",
         &s->jobs_replaced},
        {"job map",
         "CREATE TEMP TABLE eb_merge_jobs(src_id INTEGER PRIMARY KEY, dst_id INTEGER)", NULL},
        {"new jobs",
         "INSERT INTO temp.eb_merge_jobs(src_id) SELECT sj.id FROM src.jobs sj JOIN src.runs sr "
         "ON sr.id = sj.run_id JOIN main.runs mr ON mr.uuid = sr.uuid WHERE NOT EXISTS (SELECT "
         "1 FROM main.jobs mj WHERE mj.run_id = mr.id AND mj.key = sj.key)",
         &jobs_new},
        {"jobs",
         "INSERT INTO main.jobs(run_id, key, name, method, chain, arch, seed, device, draws, "
         "settings, bundle_id, status, error, seconds, finished_at) SELECT mr.id, sj.key, "
         "sj.name, sj.method, sj.chain, sj.arch, sj.seed, sj.device, sj.draws, sj.settings, "
         "(SELECT ma.id FROM src.artifacts sa JOIN main.artifacts ma ON ma.sha256 = sa.sha256 "
         "WHERE sa.id = sj.bundle_id), sj.status, sj.error, sj.seconds, sj.finished_at FROM "
         "temp.eb_merge_jobs t JOIN src.jobs sj ON sj.id = t.src_id JOIN src.runs sr ON sr.id = "
         "sj.run_id JOIN main.runs mr ON mr.uuid = sr.uuid ORDER BY sj.id",
         NULL},
        {"job ids",
         "UPDATE temp.eb_merge_jobs SET dst_id = (SELECT mj.id FROM src.jobs sj JOIN src.runs sr "
         "ON sr.id = sj.run_id JOIN main.runs mr ON mr.uuid = sr.uuid JOIN main.jobs mj ON "
         "mj.run_id = mr.id AND mj.key = sj.key WHERE sj.id = eb_merge_jobs.src_id)",
         NULL},
        {"metrics",
         "INSERT INTO main.metrics(job_id, facet, name, context, value, ci_low, ci_high, "
         "ci_level, unit, higher_is_better, convention) SELECT t.dst_id, facet, name, context, "
         "value, ci_low, ci_high, ci_level, unit, higher_is_better, convention FROM src.metrics "
         "x JOIN temp.eb_merge_jobs t ON t.src_id = x.job_id",
         NULL},
        {"latency samples",
         "INSERT INTO main.latency_samples(job_id, kind, seq, seconds) SELECT t.dst_id, kind, "
         "seq, seconds FROM src.latency_samples x JOIN temp.eb_merge_jobs t ON t.src_id = "
         "x.job_id",
         NULL},
        {"reliability bins",
         "INSERT INTO main.reliability_bins(job_id, context, bin, lo, hi, count, confidence, "
         "accuracy) SELECT t.dst_id, context, bin, lo, hi, count, confidence, accuracy FROM "
         "src.reliability_bins x JOIN temp.eb_merge_jobs t ON t.src_id = x.job_id",
         NULL},
        {"curves",
         "INSERT INTO main.curves(job_id, kind, context, seq, x, y) SELECT t.dst_id, kind, "
         "context, seq, x.x, x.y FROM src.curves x JOIN temp.eb_merge_jobs t ON t.src_id = "
         "x.job_id",
         NULL},
        {"predictions",
         "INSERT INTO main.predictions(job_id, split, example, label, probs) SELECT t.dst_id, "
         "split, example, label, probs FROM src.predictions x JOIN temp.eb_merge_jobs t ON "
         "t.src_id = x.job_id",
         NULL},
        {"job map", "DROP TABLE temp.eb_merge_jobs", NULL},
    };

    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (sqlite3_exec(db->sql, steps[i].sql, NULL, NULL, NULL) != SQLITE_OK)
            return eb_results__sql_error(db->sql, err, "merging the %s of '%s' into '%s'",
                                         steps[i].what, path, db->path);
        if (steps[i].count)
            *steps[i].count += (size_t)sqlite3_changes(db->sql);
    }
    s->jobs_added += jobs_new;
    return EB_OK;
}

/* The input must exist and must not be the output under another name. */
static eb_status check_path(const char *path, const struct stat *out_st, const char *out_path,
                            eb_error *err)
{
    struct stat in_st;
    if (!path || !*path)
        return eb_error_set(err, EB_ERR_ARG, "an input path is empty");
    if (stat(path, &in_st) != 0 || !S_ISREG(in_st.st_mode))
        return eb_error_set(err, EB_ERR_NOTFOUND, "input '%s' does not exist or is not a file",
                            path);
    if (in_st.st_dev == out_st->st_dev && in_st.st_ino == out_st->st_ino)
        return eb_error_set(err, EB_ERR_ARG, "input '%s' is the output database '%s'", path,
                            out_path);
    return EB_OK;
}

eb_status eb_results_merge(const char *out_path, const char *const *in_paths, size_t n,
                           eb_results_merge_stats *stats, eb_error *err)
{
    eb_results_merge_stats local;
    eb_results *db = NULL;
    struct stat out_st;
    eb_status st;

    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "no input databases to merge into '%s'",
                            out_path ? out_path : "");
    if ((st = eb_results_open(out_path, &db, err)) != EB_OK)
        return st;
    if (stat(out_path, &out_st) != 0) {
        st = eb_error_set(err, EB_ERR_IO, "cannot stat the output '%s'", out_path);
        goto done;
    }
    /* Validate all inputs before writing anything: a bad shard in the
     * list stops the merge with the output unchanged. */
    for (size_t i = 0; i < n; i++) {
        if ((st = check_path(in_paths[i], &out_st, out_path, err)) != EB_OK)
            goto done;
        if ((st = attach(db, in_paths[i], err)) != EB_OK)
            goto done;
        st = validate_attached(db, in_paths[i], err);
        detach(db);
        if (st != EB_OK) {
            eb_error_prefix(err, "merge into '%s' refused: ", out_path);
            goto done;
        }
    }
    for (size_t i = 0; i < n; i++) {
        eb_results_merge_stats one; /* counted into stats only once committed */
        memset(&one, 0, sizeof one);
        if ((st = attach(db, in_paths[i], err)) != EB_OK)
            goto done;
        if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
            st = eb_results__sql_error(db->sql, err, "locking '%s' to merge '%s'", out_path,
                                       in_paths[i]);
        } else {
            /* Re-validated inside the transaction: the output may have
             * changed since the first pass (another writer). */
            st = validate_attached(db, in_paths[i], err);
            if (st == EB_OK)
                st = merge_attached(db, in_paths[i], &one, err);
            if (st == EB_OK && sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                st = eb_results__sql_error(db->sql, err, "committing the merge of '%s' into '%s'",
                                           in_paths[i], out_path);
            if (st != EB_OK && !sqlite3_get_autocommit(db->sql))
                sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
        }
        detach(db);
        if (st != EB_OK)
            goto done;
        stats->inputs++;
        stats->runs_added += one.runs_added;
        stats->runs_finished += one.runs_finished;
        stats->jobs_added += one.jobs_added;
        stats->jobs_replaced += one.jobs_replaced;
        stats->artifacts_added += one.artifacts_added;
    }
done:
    eb_results_close(db);
    return st;
}
