/* test_store.c: the results store: creating the schema, refusing foreign,
 * damaged and newer files without touching them, the migration machinery,
 * runs and provenance, jobs written in one transaction (round trips,
 * abort, failed jobs), resume, queries, validation messages, and
 * allocation failures on open and in queries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"
#include "results/eb_results.h"
#include "results/results_internal.h"

#define DIR EB_TEST_BINARY_DIR "/"
#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

static void remove_db(const char *path)
{
    char p[1024];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static eb_results *fresh(const char *path)
{
    eb_results *db = NULL;
    eb_error err;
    remove_db(path);
    if (eb_results_open(path, &db, &err) != EB_OK)
        fail_msg("%s", err.msg);
    return db;
}

/* Runs SQL on a file through SQLite directly (not through the store). */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *s = NULL;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(path, &s), SQLITE_OK);
    if (sqlite3_exec(s, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(s);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(s, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(s);
    return v;
}

static int64_t db_int(eb_results *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Checks that the file at path still holds exactly want (len bytes). */
static void assert_file_is(const char *path, const char *want, size_t len)
{
    char *data = NULL;
    size_t n = 0;
    assert_int_equal(eb_file_read_all(path, &data, &n, NULL), EB_OK);
    assert_int_equal(n, len);
    assert_memory_equal(data, want, len);
    eb_free(data);
}

static void provenance(eb_results_provenance *p, eb_results_machine *m)
{
    eb_error err;
    memset(p, 0, sizeof *p);
    if (eb_results_machine_probe(m, &err) != EB_OK)
        fail_msg("%s", err.msg);
    eb_results_provenance_set_machine(p, m);
    p->label = "nightly";
    p->suite = "quick";
    p->suite_sha256 = SHA_A;
    p->shard = "2/3";
    p->environment = "{\"threads\": 1}";
}

static eb_results_job_def job_def(const char *key)
{
    eb_results_job_def d;
    memset(&d, 0, sizeof d);
    d.key = key;
    d.name = key;
    d.method = "ensemble";
    d.chain = "prune:0.9";
    d.arch = "mlp";
    d.seed = 7;
    d.device = "cpu";
    d.draws = 5;
    d.settings = "{\"epochs\": 30}";
    return d;
}

/* ---- Creation and refusal -------------------------------------------------- */

static void test_create_and_reopen(void **state)
{
    const char *path = DIR "store_create.db";
    eb_results *db = fresh(path);
    char *schema = NULL, want[64];
    size_t n;
    (void)state;
    assert_string_equal(eb_results_path(db), path);
    assert_int_equal(db_int(db, "PRAGMA user_version"), EB_RESULTS_SCHEMA_VERSION);
    assert_int_equal(db_int(db, "PRAGMA application_id"), EB_RESULTS_APPLICATION_ID);
    assert_int_equal(db_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(db_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"), 10);
    eb_results_close(db);
    /* WAL is a property of the file, and it persists. */
    assert_int_equal(raw_int(path, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
    assert_int_equal(eb_results_open(path, &db, NULL), EB_OK);
    eb_results_close(db);
    assert_int_equal(eb_results_open_readonly(path, &db, NULL), EB_OK);
    eb_results_close(db);
    /* The documented schema and this build agree on the version. */
    assert_int_equal(eb_file_read_all(EB_SOURCE_DIR "/results/schema.sql", &schema, &n, NULL),
                     EB_OK);
    snprintf(want, sizeof want, "PRAGMA user_version = %d;", EB_RESULTS_SCHEMA_VERSION);
    assert_non_null(strstr(schema, want));
    eb_free(schema);
}

static void test_refuse_newer(void **state)
{
    const char *path = DIR "store_newer.db";
    eb_results *db = fresh(path);
    char *before = NULL;
    size_t n;
    eb_error err;
    (void)state;
    eb_results_close(db);
    raw_exec(path, "PRAGMA user_version = 99");
    assert_int_equal(eb_file_read_all(path, &before, &n, NULL), EB_OK);
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_UNSUPPORTED);
    assert_null(db);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "version 99"));
    assert_non_null(strstr(err.msg, "version 1,"));
    assert_int_equal(eb_results_open_readonly(path, &db, &err), EB_ERR_UNSUPPORTED);
    assert_file_is(path, before, n);
    eb_free(before);
}

static void test_refuse_text_file(void **state)
{
    const char *path = DIR "store_text.db";
    static const char text[] = "run,accuracy\nmap,0.88\n";
    eb_results *db = NULL;
    eb_error err;
    FILE *fp;
    (void)state;
    remove_db(path);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite(text, 1, sizeof text - 1, fp);
    fclose(fp);
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    print_message("%s\n", err.msg);
    assert_null(db);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "not an SQLite database"));
    assert_file_is(path, text, sizeof text - 1);
    assert_false(eb_file_exists(DIR "store_text.db-wal"));
    assert_int_equal(eb_results_open_readonly(path, &db, &err), EB_ERR_FORMAT);
}

static void test_refuse_foreign(void **state)
{
    const char *path = DIR "store_foreign.db";
    eb_results *db = NULL;
    char *before = NULL;
    size_t n;
    eb_error err;
    (void)state;
    remove_db(path);
    raw_exec(path, "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT);"
                   "INSERT INTO customers(name) VALUES ('ada')");
    assert_int_equal(eb_file_read_all(path, &before, &n, NULL), EB_OK);
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "another program"));
    assert_non_null(strstr(err.msg, "customers"));
    assert_file_is(path, before, n);
    assert_int_equal(raw_int(path, "SELECT journal_mode = 'delete' FROM pragma_journal_mode"),
                     1);
    eb_free(before);

    /* Another program's versioned file is not ours either, even at our
     * version number. */
    raw_exec(path, "PRAGMA user_version = 1");
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "user_version 1"));
    raw_exec(path, "PRAGMA user_version = 99");
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "user_version 99"));
    /* ... nor one that carries another application id. */
    raw_exec(path, "PRAGMA application_id = 1234");
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "0x000004d2"));
}

static void test_refuse_damaged(void **state)
{
    const char *path = DIR "store_damaged.db";
    eb_results *db = fresh(path);
    eb_error err;
    (void)state;
    eb_results_close(db);
    raw_exec(path, "DROP TABLE curves");
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "lacks table 'curves'"));
    raw_exec(path, "PRAGMA user_version = 0");
    assert_int_equal(eb_results_open(path, &db, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "damaged"));
}

static void test_missing_paths(void **state)
{
    eb_results *db = NULL;
    eb_error err;
    (void)state;
    assert_int_equal(eb_results_open_readonly(DIR "store_nothing_here.db", &db, &err),
                     EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, "does not exist"));
    assert_false(eb_file_exists(DIR "store_nothing_here.db"));
    assert_int_equal(eb_results_open(DIR "no/such/dir/x.db", &db, &err), EB_ERR_IO);
    assert_non_null(strstr(err.msg, "no/such/dir/x.db"));
    assert_int_equal(eb_results_open("", &db, &err), EB_ERR_ARG);
    /* A name SQLite would read as a URI is a plain file name here. */
    remove_db(DIR "file:odd?name#1.db");
    assert_int_equal(eb_results_open(DIR "file:odd?name#1.db", &db, &err), EB_OK);
    eb_results_close(db);
    assert_true(eb_file_exists(DIR "file:odd?name#1.db"));
    remove_db(DIR "file:odd?name#1.db");
}

/* The migration machinery on toy schemas: a fresh file is created at the
 * newest version; an older one gets exactly its pending upgrades, in one
 * transaction that a failing step undoes completely. */
static void test_migrations(void **state)
{
    const char *path = DIR "store_migrate.db";
    const eb_results__schema v1 = {"CREATE TABLE a(x);", 1, NULL, 0};
    const eb_results__migration ups[] = {{2, "ALTER TABLE a ADD COLUMN y;"},
                                         {3, "CREATE TABLE b(z);"}};
    const eb_results__schema v3 = {"CREATE TABLE a(x, y); CREATE TABLE b(z);", 3, ups, 2};
    const eb_results__migration bad_ups[] = {{2, "ALTER TABLE a ADD COLUMN y;"},
                                             {3, "CREATE TABLE b(z);"},
                                             {4, "CREATE TABLE c(w);"},
                                             {5, "ALTER TABLE nowhere ADD COLUMN q;"}};
    const eb_results__schema v5 = {"unused", 5, bad_ups, 4};
    /* Keeps only the upgrade to 3: files at version 2 or later only. */
    const eb_results__migration last[] = {{3, "CREATE TABLE b(z);"}};
    const eb_results__schema from2 = {"x", 3, last, 1};
    sqlite3 *s;
    eb_error err;
    (void)state;

    remove_db(path);
    assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                             &s, NULL),
                     EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &v1, &err), EB_OK);
    sqlite3_close(s);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 1);
    assert_int_equal(raw_int(path, "PRAGMA application_id"), EB_RESULTS_APPLICATION_ID);

    /* 1 -> 5 with a failing last step: still version 1, no table c. */
    assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE, &s, NULL), EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &v5, &err), EB_ERR_INTERNAL);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "from results schema version 4 to 5"));
    assert_non_null(strstr(err.msg, path));
    sqlite3_close(s);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 1);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);

    /* 1 -> 3: both upgrades, in order. */
    assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE, &s, NULL), EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &v3, &err), EB_OK);
    sqlite3_close(s);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 3);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM pragma_table_info('a')"), 2);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE name = 'b'"), 1);

    /* Already current: nothing to do. A fresh file: the full schema. */
    assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE, &s, NULL), EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &v3, &err), EB_OK);
    sqlite3_close(s);
    remove_db(path);
    assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                             &s, NULL),
                     EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &v3, &err), EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &from2, &err), EB_OK); /* at 3: no-op */
    sqlite3_close(s);
    /* A list that does not number its steps consecutively is a bug of
     * the build, refused before the file is read. */
    {
        const eb_results__migration skip[] = {{2, "x"}, {4, "y"}};
        const eb_results__schema bad = {"x", 4, skip, 2};
        assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE, &s, NULL), EB_OK);
        assert_int_equal(eb_results__migrate(s, path, &bad, &err), EB_ERR_INTERNAL);
        assert_non_null(strstr(err.msg, "numbered 2, expected 3"));
        sqlite3_close(s);
    }
    /* A file older than the oldest upgrade kept. */
    remove_db(path);
    assert_int_equal(eb_results__sqlite_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                             &s, NULL),
                     EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &v1, &err), EB_OK);
    assert_int_equal(eb_results__migrate(s, path, &from2, &err), EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "upgrades only from version 2"));
    sqlite3_close(s);
    remove_db(path);
}

static void test_open_alloc_failures(void **state)
{
    const char *path = DIR "store_alloc.db";
    long failures = 0;
    (void)state;
    remove_db(path);
    for (int existing = 0; existing < 2; existing++) {
        for (long at = 1; at < 100; at++) {
            eb_results *db = NULL;
            eb_error err;
            eb_status st;
            eb_alloc_fail_at(at);
            st = eb_results_open(path, &db, &err);
            eb_alloc_fail_at(0);
            if (st == EB_OK) {
                eb_results_close(db);
                break;
            }
            assert_int_equal(st, EB_ERR_NOMEM);
            assert_null(db);
            assert_non_null(strstr(err.msg, path));
            failures++;
        }
    }
    assert_true(failures >= 6); /* handle, path, URI; on both passes */
}

/* ---- Runs, jobs and queries ------------------------------------------------------ */

static void test_job_round_trip(void **state)
{
    const char *path = DIR "store_round.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    eb_results_convention conv[2] = {{"ece-15-equal-width-right-closed-v1", "15 bins"},
                                     {"nll-floor-1e-12-v1", "floored at 1e-12"}};
    eb_results_artifact bundle = {"bundle", SHA_A, "ensemble-mlp-seed7.ebb", 1234, "{\"S\": 5}"};
    eb_results_artifact data = {"dataset", SHA_B, "fashion-mnist/test", 7840016, NULL};
    eb_results_metric mt[3];
    eb_results_bin bins[2] = {{0.0, 0.5, 10, 0.3, 0.2}, {0.5, 1.0, 0, NAN, NAN}};
    const double lat[4] = {1e-3, 1.5e-3, 0.9e-3, 2e-3}, lat2[2] = {3e-3, 4e-3};
    const double cx[3] = {0, 0.5, 1}, cy[3] = {0, 0.8, 1};
    const float probs[2 * 3] = {0.7f, 0.2f, 0.1f, 0.25f, 0.5f, 0.25f};
    const uint8_t labels[2] = {0, 2};
    eb_results_run_list runs;
    eb_results_job_list jobs;
    eb_results_metric_list ml;
    eb_results_samples sl;
    eb_results_curve_list cl;
    eb_results_bin_list bl;
    char uuid[EB_RESULTS_UUID_LEN + 1];
    int64_t run, bid, did, bid2, job;
    eb_results_job_def d = job_def("ensemble/mlp/s7");
    eb_error err;
    (void)state;

    provenance(&p, &m);
    print_message("machine: %s | %s | %s | %d cores | %s\n", m.cpu_model, m.compiler, m.cflags,
                  m.cores, m.libraries);
    assert_non_null(strstr(m.libraries, "\"sqlite\""));
    assert_non_null(strstr(m.libraries, "\"openblas\""));
    assert_int_equal(eb_results_conventions(db, conv, 2, NULL), EB_OK);
    assert_int_equal(eb_results_conventions(db, conv, 2, NULL), EB_OK); /* idempotent */
    assert_int_equal(eb_results_run_begin(db, &p, &run, uuid, &err), EB_OK);
    assert_int_equal(strlen(uuid), 36);
    assert_int_equal(uuid[14], '4');
    assert_non_null(strchr("89ab", uuid[19]));
    assert_int_equal(eb_results_artifact_put(db, &bundle, &bid, NULL), EB_OK);
    assert_int_equal(eb_results_artifact_put(db, &data, &did, NULL), EB_OK);
    assert_int_equal(eb_results_artifact_put(db, &bundle, &bid2, NULL), EB_OK);
    assert_true(bid == bid2 && bid != did);
    assert_int_equal(eb_results_run_artifact(db, run, did, "test", NULL), EB_OK);
    assert_int_equal(eb_results_run_artifact(db, run, did, "test", NULL), EB_OK);
    assert_int_equal(eb_results_run_artifact(db, run, bid, "bundle", NULL), EB_OK);

    memset(mt, 0, sizeof mt);
    mt[0] = (eb_results_metric){"quality", "accuracy", NULL, 0.875, 1, 0.86, 0.89, 0.95, NULL,
                                1, NULL};
    mt[1] = (eb_results_metric){"calibration", "ece", "binning=equal-width", 0.031, 0, 0, 0, 0,
                                "", 0, "ece-15-equal-width-right-closed-v1"};
    mt[2] = (eb_results_metric){"ood", "auroc", "score=entropy", NAN, 0, 0, 0, 0, "", 1, NULL};
    d.bundle_id = bid;
    assert_int_equal(eb_results_job_begin(db, run, &d, &job, &err), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, mt, 3, &err), EB_OK);
    assert_int_equal(eb_results_job_latency(db, "single", lat, 4, &err), EB_OK);
    assert_int_equal(eb_results_job_latency(db, "single", lat2, 2, &err), EB_OK); /* appends */
    assert_int_equal(eb_results_job_latency(db, "first", lat2, 1, &err), EB_OK);
    assert_int_equal(eb_results_job_bins(db, "binning=equal-width", bins, 2, &err), EB_OK);
    assert_int_equal(eb_results_job_curve(db, "roc", "score=entropy", cx, cy, 3, &err), EB_OK);
    assert_int_equal(eb_results_job_predictions(db, "test", probs, labels, 2, 3, 100, &err),
                     EB_OK);
    assert_int_equal(eb_results_job_commit(db, 12.5, &err), EB_OK);
    assert_int_equal(eb_results_run_finish(db, run, &err), EB_OK);

    assert_int_equal(eb_results_runs(db, NULL, &runs, &err), EB_OK);
    assert_int_equal(runs.n, 1);
    assert_int_equal(runs.v[0].id, run);
    assert_string_equal(runs.v[0].uuid, uuid);
    assert_string_equal(runs.v[0].label, "nightly");
    assert_string_equal(runs.v[0].shard, "2/3");
    assert_string_equal(runs.v[0].suite_sha256, SHA_A);
    assert_string_equal(runs.v[0].git_commit, m.git_commit);
    assert_string_equal(runs.v[0].environment, "{\"threads\": 1}");
    assert_int_equal(runs.v[0].cores, m.cores);
    assert_non_null(runs.v[0].finished_at);
    assert_int_equal(strlen(runs.v[0].started_at), 24); /* 2024-01-02T03:04:05.678Z */
    assert_int_equal(runs.v[0].started_at[23], 'Z');
    assert_int_equal(runs.v[0].jobs_done, 1);
    eb_results_run_list_free(&runs);
    eb_results_run_list_free(&runs); /* a freed list is zeroed */

    assert_int_equal(eb_results_jobs(db, run, &jobs, &err), EB_OK);
    assert_int_equal(jobs.n, 1);
    assert_int_equal(jobs.v[0].id, job);
    assert_string_equal(jobs.v[0].key, "ensemble/mlp/s7");
    assert_string_equal(jobs.v[0].chain, "prune:0.9");
    assert_string_equal(jobs.v[0].status, "done");
    assert_null(jobs.v[0].error);
    assert_int_equal(jobs.v[0].seed, 7);
    assert_int_equal(jobs.v[0].draws, 5);
    assert_int_equal(jobs.v[0].bundle_id, bid);
    assert_float_equal(jobs.v[0].seconds, 12.5, 0);
    eb_results_job_list_free(&jobs);

    assert_int_equal(eb_results_metrics(db, job, &ml, &err), EB_OK);
    assert_int_equal(ml.n, 3); /* ordered by facet: calibration, ood, quality */
    assert_string_equal(ml.v[0].name, "ece");
    assert_string_equal(ml.v[0].convention, "ece-15-equal-width-right-closed-v1");
    assert_int_equal(ml.v[0].has_ci, 0);
    assert_true(isnan(ml.v[1].value));
    assert_string_equal(ml.v[1].context, "score=entropy");
    assert_float_equal(ml.v[2].value, 0.875, 0);
    assert_int_equal(ml.v[2].has_ci, 1);
    assert_float_equal(ml.v[2].ci_low, 0.86, 0);
    assert_float_equal(ml.v[2].ci_level, 0.95, 0);
    assert_string_equal(ml.v[2].context, "");
    assert_null(ml.v[2].convention);
    eb_results_metric_list_free(&ml);

    assert_int_equal(eb_results_latency(db, job, "single", &sl, &err), EB_OK);
    assert_int_equal(sl.n, 6);
    assert_float_equal(sl.v[1], 1.5e-3, 0);
    assert_float_equal(sl.v[5], 4e-3, 0);
    eb_results_samples_free(&sl);
    assert_int_equal(eb_results_latency(db, job, "first", &sl, &err), EB_OK);
    assert_int_equal(sl.n, 1);
    eb_results_samples_free(&sl);

    assert_int_equal(eb_results_curves(db, job, &cl, &err), EB_OK);
    assert_int_equal(cl.n, 3);
    assert_string_equal(cl.v[2].kind, "roc");
    assert_int_equal(cl.v[2].seq, 2);
    assert_float_equal(cl.v[1].y, 0.8, 0);
    eb_results_curve_list_free(&cl);

    assert_int_equal(eb_results_bins(db, job, "binning=equal-width", &bl, &err), EB_OK);
    assert_int_equal(bl.n, 2);
    assert_int_equal(bl.v[0].count, 10);
    assert_float_equal(bl.v[0].accuracy, 0.2, 0);
    assert_true(isnan(bl.v[1].confidence));
    eb_results_bin_list_free(&bl);

    /* Predictions are little-endian float32 blobs, example-numbered from
     * `first`. */
    {
        sqlite3_stmt *st = NULL;
        float back[3];
        assert_int_equal(sqlite3_prepare_v2(db->sql,
                                            "SELECT example, label, probs FROM predictions "
                                            "ORDER BY example",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 100);
        assert_int_equal(sqlite3_column_int(st, 1), 0);
        assert_int_equal(sqlite3_column_bytes(st, 2), 12);
        memcpy(back, sqlite3_column_blob(st, 2), 12);
        assert_memory_equal(back, probs, 12);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 1), 2);
        sqlite3_finalize(st);
    }
    assert_int_equal(db_int(db, "SELECT count(*) FROM run_artifacts"), 2);
    assert_int_equal(db_int(db, "PRAGMA foreign_key_check"), -1); /* no row */
    eb_results_close(db);
}

static void test_job_abort(void **state)
{
    const char *path = DIR "store_abort.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    eb_results_job_def d = job_def("j");
    eb_results_metric mt = {"quality", "accuracy", NULL, 0.5, 0, 0, 0, 0, NULL, 1, NULL};
    const double lat[2] = {1e-3, 2e-3};
    int64_t run;
    int found;
    (void)state;
    provenance(&p, &m);
    assert_int_equal(eb_results_run_begin(db, &p, &run, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, &mt, 1, NULL), EB_OK);
    assert_int_equal(eb_results_job_latency(db, "single", lat, 2, NULL), EB_OK);
    eb_results_job_abort(db);
    eb_results_job_abort(db); /* no job: no-op */
    assert_int_equal(db_int(db, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(db_int(db, "SELECT count(*) FROM metrics"), 0);
    assert_int_equal(db_int(db, "SELECT count(*) FROM latency_samples"), 0);
    assert_int_equal(eb_results_job_done(db, NULL, "j", &found, NULL), EB_OK);
    assert_int_equal(found, 0);
    /* Closing with a job open rolls it back too. */
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, &mt, 1, NULL), EB_OK);
    eb_results_close(db);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM runs"), 1);
}

static void test_failed_job(void **state)
{
    const char *path = DIR "store_failed.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    eb_results_job_def d = job_def("j");
    eb_results_metric mt = {"quality", "accuracy", NULL, 0.5, 0, 0, 0, 0, NULL, 1, NULL};
    const double lat[2] = {1e-3, 2e-3};
    eb_results_job_list jobs;
    eb_error err;
    int64_t run, first, second;
    int found;
    (void)state;
    provenance(&p, &m);
    assert_int_equal(eb_results_run_begin(db, &p, &run, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_begin(db, run, &d, &first, NULL), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, &mt, 1, NULL), EB_OK);
    assert_int_equal(eb_results_job_latency(db, "single", lat, 2, NULL), EB_OK);
    assert_int_equal(eb_results_job_fail(db, "", 1.0, &err), EB_ERR_ARG); /* needs a message */
    assert_int_equal(eb_results_job_fail(db, "loading bundle x.ebb: truncated", 3.0, &err),
                     EB_OK);
    assert_int_equal(eb_results_jobs(db, run, &jobs, NULL), EB_OK);
    assert_int_equal(jobs.n, 1);
    assert_string_equal(jobs.v[0].status, "failed");
    assert_string_equal(jobs.v[0].error, "loading bundle x.ebb: truncated");
    assert_float_equal(jobs.v[0].seconds, 3.0, 0);
    eb_results_job_list_free(&jobs);
    assert_int_equal(db_int(db, "SELECT count(*) FROM metrics"), 0);
    assert_int_equal(db_int(db, "SELECT count(*) FROM latency_samples"), 0);
    assert_int_equal(eb_results_job_done(db, NULL, "j", &found, NULL), EB_OK);
    assert_int_equal(found, 0); /* failed does not count as done */

    /* A rerun retries the failed job: the row is replaced. */
    assert_int_equal(eb_results_job_begin(db, run, &d, &second, NULL), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, &mt, 1, NULL), EB_OK);
    assert_int_equal(eb_results_job_commit(db, 2.0, NULL), EB_OK);
    assert_int_equal(db_int(db, "SELECT count(*) FROM jobs"), 1);
    assert_int_equal(db_int(db, "SELECT count(*) FROM jobs WHERE status = 'done'"), 1);
    assert_int_equal(eb_results_job_done(db, NULL, "j", &found, NULL), EB_OK);
    assert_int_equal(found, 1);
    /* ... but a done job is final. */
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "already done"));
    assert_int_equal(db_int(db, "SELECT count(*) FROM jobs"), 1);
    eb_results_close(db);
}

static void test_validation_messages(void **state)
{
    const char *path = DIR "store_valid.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    eb_results_job_def d = job_def("j");
    eb_results_metric mt = {"quality", "accuracy", NULL, 0.5, 0, 0, 0, 0, NULL, 1, NULL};
    eb_results_convention c1 = {"ece-v1", "15 bins"}, c2 = {"ece-v1", "20 bins"};
    eb_results_artifact a = {"bundle", SHA_A, "b.ebb", 10, NULL};
    const double bad_lat[2] = {1e-3, NAN}, x[1] = {NAN}, y[1] = {0};
    int64_t run, id;
    eb_error err;
    (void)state;
    provenance(&p, &m);

#define EXPECT(call, code, text)                                                              \
    do {                                                                                      \
        eb_error_clear(&err);                                                                 \
        assert_int_equal((call), (code));                                                     \
        if (!strstr(err.msg, (text)))                                                         \
            fail_msg("message '%s' lacks '%s'", err.msg, (text));                             \
    } while (0)

    p.shard = "3/2";
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG, "shard '3/2'");
    p.shard = "1/x";
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG, "shard '1/x'");
    p.shard = NULL;
    p.suite_sha256 = "abc";
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG, "suite_sha256");
    p.suite_sha256 = SHA_A;
    p.environment = "{threads: 1}";
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG,
           "field 'environment' is not a JSON object");
    p.environment = "[1, 2]";
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG, "environment");
    p.environment = NULL;
    p.cores = 0;
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG, "'cores'");
    p.cores = 1;
    p.host = "";
    EXPECT(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_ARG, "'host' is empty");
    p.host = "h";
    assert_int_equal(eb_results_run_begin(db, &p, &run, NULL, &err), EB_OK);

    EXPECT(eb_results_conventions(db, &c1, 1, &err), EB_OK, "");
    EXPECT(eb_results_conventions(db, &c2, 1, &err), EB_ERR_ARG, "needs a new id");
    a.kind = "model";
    EXPECT(eb_results_artifact_put(db, &a, &id, &err), EB_ERR_ARG, "kind 'model'");
    a.kind = "bundle";
    assert_int_equal(eb_results_artifact_put(db, &a, &id, &err), EB_OK);
    a.kind = "dataset";
    EXPECT(eb_results_artifact_put(db, &a, &id, &err), EB_ERR_ARG, "as a bundle, not a dataset");
    EXPECT(eb_results_run_artifact(db, run, 999, "test", &err), EB_ERR_ARG, "artifact 999");

    EXPECT(eb_results_job_metrics(db, &mt, 1, &err), EB_ERR_ARG, "no job is open");
    EXPECT(eb_results_job_commit(db, 1, &err), EB_ERR_ARG, "no job is open");
    EXPECT(eb_results_job_begin(db, 999, &d, NULL, &err), EB_ERR_NOTFOUND, "run 999");
    d.key = "";
    EXPECT(eb_results_job_begin(db, run, &d, NULL, &err), EB_ERR_ARG, "field 'key' is empty");
    d.key = "j";
    d.seed = UINT64_MAX;
    EXPECT(eb_results_job_begin(db, run, &d, NULL, &err), EB_ERR_ARG, "does not fit");
    d.seed = 1;
    d.settings = "not json";
    EXPECT(eb_results_job_begin(db, run, &d, NULL, &err), EB_ERR_ARG, "'settings'");
    d.settings = NULL;
    d.bundle_id = 999;
    EXPECT(eb_results_job_begin(db, run, &d, NULL, &err), EB_ERR_NOTFOUND,
           "bundle artifact 999");
    d.bundle_id = 0;
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, &err), EB_OK);
    EXPECT(eb_results_job_begin(db, run, &d, NULL, &err), EB_ERR_ARG, "while job 'j' is open");
    EXPECT(eb_results_run_begin(db, &p, &id, NULL, &err), EB_ERR_ARG, "is open");
    mt.convention = "nll-v9";
    EXPECT(eb_results_job_metrics(db, &mt, 1, &err), EB_ERR_ARG, "'nll-v9', which is not "
                                                                 "registered");
    mt.convention = NULL;
    mt.has_ci = 1;
    mt.ci_low = 0.6;
    mt.ci_high = 0.4;
    mt.ci_level = 0.95;
    EXPECT(eb_results_job_metrics(db, &mt, 1, &err), EB_ERR_ARG, "quality/accuracy: interval");
    mt.has_ci = 0;
    assert_int_equal(eb_results_job_metrics(db, &mt, 1, &err), EB_OK);
    EXPECT(eb_results_job_metrics(db, &mt, 1, &err), EB_ERR_ARG, "already added");
    EXPECT(eb_results_job_latency(db, "single", bad_lat, 2, &err), EB_ERR_ARG,
           "latency sample 1");
    EXPECT(eb_results_job_curve(db, "roc", "", x, y, 1, &err), EB_ERR_ARG, "point 0 of curve");
    EXPECT(eb_results_job_commit(db, -1, &err), EB_ERR_ARG, "wall time");
    assert_int_equal(eb_results_job_commit(db, 1, &err), EB_OK);
    assert_int_equal(db_int(db, "SELECT count(*) FROM metrics"), 1);
    assert_int_equal(db_int(db, "SELECT count(*) FROM latency_samples"), 0);
    EXPECT(eb_results_run_finish(db, 999, &err), EB_ERR_NOTFOUND, "run 999");
#undef EXPECT
    eb_results_close(db);

    /* A read-only handle refuses writes, naming the file. */
    assert_int_equal(eb_results_open_readonly(path, &db, NULL), EB_OK);
    assert_int_equal(eb_results_run_begin(db, &p, &run, NULL, &err), EB_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    eb_results_close(db);
}

static void test_resume(void **state)
{
    const char *path = DIR "store_resume.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    eb_results_job_def d = job_def("k1");
    eb_results_scope by_run = {0, NULL, NULL}, by_suite = {0, "quick", NULL},
                     other_suite = {0, "paper", NULL}, by_label = {0, NULL, "nightly"},
                     other_label = {0, NULL, "weekly"};
    int64_t r1, r2, r3, r4, found_run;
    int resumed, found;
    (void)state;
    provenance(&p, &m);

    assert_int_equal(eb_results_run_resume_or_begin(db, &p, &r1, &resumed, NULL), EB_OK);
    assert_int_equal(resumed, 0);
    assert_int_equal(eb_results_job_begin(db, r1, &d, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_commit(db, 1, NULL), EB_OK);
    /* Killed: run 1 stays unfinished, and a rerun continues it. */
    assert_int_equal(eb_results_run_resume_or_begin(db, &p, &r2, &resumed, NULL), EB_OK);
    assert_int_equal(resumed, 1);
    assert_int_equal(r2, r1);
    assert_int_equal(eb_results_run_resumable(db, &p, &found_run, NULL), EB_OK);
    assert_int_equal(found_run, r1);
    /* Another shard, another label or another build starts its own run. */
    p.shard = "3/3";
    assert_int_equal(eb_results_run_resumable(db, &p, &found_run, NULL), EB_OK);
    assert_int_equal(found_run, 0);
    p.shard = "2/3";
    p.label = NULL;
    assert_int_equal(eb_results_run_resumable(db, &p, &found_run, NULL), EB_OK);
    assert_int_equal(found_run, 0);
    p.label = "nightly";
    p.git_commit = "0123abcd-dirty";
    assert_int_equal(eb_results_run_resume_or_begin(db, &p, &r3, &resumed, NULL), EB_OK);
    assert_int_equal(resumed, 0);
    assert_true(r3 != r1);
    p.git_commit = m.git_commit;
    /* A finished run is never resumed. */
    assert_int_equal(eb_results_run_finish(db, r1, NULL), EB_OK);
    assert_int_equal(eb_results_run_resume_or_begin(db, &p, &r4, &resumed, NULL), EB_OK);
    assert_int_equal(resumed, 0);
    assert_true(r4 != r1 && r4 != r3);

    /* job_done: any run, or narrowed by run, suite, label. */
    assert_int_equal(eb_results_job_done(db, NULL, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 1);
    by_run.run_id = r1;
    assert_int_equal(eb_results_job_done(db, &by_run, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 1);
    by_run.run_id = r4;
    assert_int_equal(eb_results_job_done(db, &by_run, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 0);
    assert_int_equal(eb_results_job_done(db, &by_suite, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 1);
    assert_int_equal(eb_results_job_done(db, &other_suite, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 0);
    assert_int_equal(eb_results_job_done(db, &by_label, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 1);
    assert_int_equal(eb_results_job_done(db, &other_label, "k1", &found, NULL), EB_OK);
    assert_int_equal(found, 0);
    assert_int_equal(eb_results_job_done(db, NULL, "k2", &found, NULL), EB_OK);
    assert_int_equal(found, 0);
    eb_results_close(db);
}

static void test_run_lookup(void **state)
{
    const char *path = DIR "store_lookup.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    char uuid[EB_RESULTS_UUID_LEN + 1], ref[16];
    int64_t r1, r2, got;
    eb_error err;
    (void)state;
    provenance(&p, &m);
    assert_int_equal(eb_results_run_begin(db, &p, &r1, uuid, NULL), EB_OK);
    assert_int_equal(eb_results_run_begin(db, &p, &r2, NULL, NULL), EB_OK);
    snprintf(ref, sizeof ref, "%lld", (long long)r2);
    assert_int_equal(eb_results_run_lookup(db, ref, &got, NULL), EB_OK);
    assert_int_equal(got, r2);
    assert_int_equal(eb_results_run_lookup(db, uuid, &got, NULL), EB_OK);
    assert_int_equal(got, r1);
    memcpy(ref, uuid, 8);
    ref[8] = '\0';
    assert_int_equal(eb_results_run_lookup(db, ref, &got, NULL), EB_OK);
    assert_int_equal(got, r1);
    assert_int_equal(eb_results_run_lookup(db, "zz-top", &got, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "'zz-top'"));
    assert_int_equal(eb_results_run_lookup(db, "777", &got, &err), EB_ERR_NOTFOUND);
    assert_int_equal(sqlite3_exec(db->sql,
                                  "UPDATE runs SET uuid = 'abcd' || substr(uuid, 5)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(eb_results_run_lookup(db, "abcd", &got, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "more than one"));
    eb_results_close(db);
}

static void test_query_alloc_failures(void **state)
{
    const char *path = DIR "store_qalloc.db";
    eb_results *db = fresh(path);
    eb_results_provenance p;
    eb_results_machine m;
    eb_results_job_def d = job_def("j");
    eb_results_metric mt[40];
    int64_t run, job;
    long failures = 0;
    (void)state;
    provenance(&p, &m);
    assert_int_equal(eb_results_run_begin(db, &p, &run, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_begin(db, run, &d, &job, NULL), EB_OK);
    for (int i = 0; i < 40; i++) {
        static char names[40][16];
        snprintf(names[i], sizeof names[i], "m%02d", i);
        mt[i] = (eb_results_metric){"quality", names[i], NULL, i, 0, 0, 0, 0, NULL, 1, NULL};
    }
    assert_int_equal(eb_results_job_metrics(db, mt, 40, NULL), EB_OK);
    assert_int_equal(eb_results_job_commit(db, 1, NULL), EB_OK);
    for (long at = 1; at < 100; at++) {
        eb_results_metric_list l;
        eb_error err;
        eb_status st;
        eb_alloc_fail_at(at);
        st = eb_results_metrics(db, job, &l, &err);
        eb_alloc_fail_at(0);
        if (st == EB_OK) {
            assert_int_equal(l.n, 40);
            eb_results_metric_list_free(&l);
            break;
        }
        assert_int_equal(st, EB_ERR_NOMEM);
        assert_null(l.v);
        assert_non_null(strstr(err.msg, "out of memory reading metrics"));
        failures++;
    }
    assert_true(failures >= 3); /* vector growth and the arena */
    eb_results_close(db);
}

static void test_cpu_model_parse(void **state)
{
    char out[128];
    (void)state;
    eb_results__cpu_model_parse("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\n"
                                "model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz  \n"
                                "stepping\t: 7\n",
                                out, sizeof out);
    assert_string_equal(out, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz");
    eb_results__cpu_model_parse("processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\n"
                                "CPU part\t: 0xd08\n\nHardware\t: BCM2835\n"
                                "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
                                out, sizeof out);
    assert_string_equal(out, "Raspberry Pi 4 Model B Rev 1.4");
    eb_results__cpu_model_parse("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n",
                                out, sizeof out);
    assert_string_equal(out, "CPU implementer 0x41 part 0xd0c");
    eb_results__cpu_model_parse("Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\n", out,
                                sizeof out);
    assert_string_equal(out, "ARMv7 Processor rev 4 (v7l)");
    eb_results__cpu_model_parse("model name\t:\n", out, sizeof out);
    assert_string_equal(out, "unknown");
    eb_results__cpu_model_parse("model name: a very long name", out, 7);
    assert_string_equal(out, "a very");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_reopen),
        cmocka_unit_test(test_refuse_newer),
        cmocka_unit_test(test_refuse_text_file),
        cmocka_unit_test(test_refuse_foreign),
        cmocka_unit_test(test_refuse_damaged),
        cmocka_unit_test(test_missing_paths),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_open_alloc_failures),
        cmocka_unit_test(test_job_round_trip),
        cmocka_unit_test(test_job_abort),
        cmocka_unit_test(test_failed_job),
        cmocka_unit_test(test_validation_messages),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_run_lookup),
        cmocka_unit_test(test_query_alloc_failures),
        cmocka_unit_test(test_cpu_model_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
