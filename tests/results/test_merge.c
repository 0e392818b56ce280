/* test_merge.c: merging shard databases: two shards into one with ids
 * remapped and shared artifacts kept once, idempotence, a done job
 * replacing a failed one and a finished run updating its copy, and bad
 * inputs (text, foreign, newer, missing, the output itself, one bad shard
 * among good ones) refused with the output unchanged, row for row, and the
 * inputs never modified. */
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

#define DIR EB_TEST_BINARY_DIR "/"
#define SHA_DATA "1111111111111111111111111111111111111111111111111111111111111111"
#define SHA_BUNDLE "2222222222222222222222222222222222222222222222222222222222222222"

static const char *const tables[] = {"conventions", "runs",    "artifacts",
                                     "run_artifacts", "jobs",  "metrics",
                                     "latency_samples", "reliability_bins", "curves",
                                     "predictions"};
#define NTABLES (sizeof tables / sizeof tables[0])

static void remove_db(const char *path)
{
    char p[1024];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

/* Row counts of every table, read through SQLite directly. */
static void counts(const char *path, int64_t out[NTABLES])
{
    sqlite3 *s = NULL;
    assert_int_equal(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    for (size_t i = 0; i < NTABLES; i++) {
        sqlite3_stmt *st = NULL;
        char q[128];
        snprintf(q, sizeof q, "SELECT count(*) FROM %s", tables[i]);
        assert_int_equal(sqlite3_prepare_v2(s, q, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        out[i] = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(s);
}

static int64_t count_of(const char *path, const char *table)
{
    int64_t c[NTABLES];
    counts(path, c);
    for (size_t i = 0; i < NTABLES; i++)
        if (strcmp(tables[i], table) == 0)
            return c[i];
    fail_msg("no table %s", table);
    return -1;
}

static int64_t sql_int(const char *path, const char *q)
{
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(s, q, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(s);
    return v;
}

static void provenance(eb_results_provenance *p, const char *shard)
{
    memset(p, 0, sizeof *p);
    p->label = "nightly";
    p->suite = "quick";
    p->suite_sha256 = "abababababababababababababababababababababababababababababababab";
    p->shard = shard;
    p->version = "0.1.0";
    p->git_commit = "abc123";
    p->compiler = "gcc";
    p->cflags = "-O3";
    p->cpu_model = "cpu";
    p->cores = 2;
    p->host = "host";
    p->libraries = "{\"sqlite\": \"3\"}";
}

/* A job whose every measurement encodes its key's number v, so a row in
 * the merged file can be traced back to its job. */
static void add_job(eb_results *db, int64_t run, const char *key, double v, int64_t bundle)
{
    eb_results_job_def d;
    eb_results_metric m[2];
    eb_results_bin bins[2] = {{0, 0.5, 3, 0.3, 0.2}, {0.5, 1, 4, 0.8, v}};
    const double lat[3] = {v, v + 1, v + 2}, x[2] = {0, 1}, y[2] = {v, 1};
    const float probs[2] = {(float)v, 1.0f - (float)v};
    const uint8_t label = 1;

    memset(&d, 0, sizeof d);
    d.key = key;
    d.name = key;
    d.method = "map";
    d.arch = "mlp";
    d.device = "cpu";
    d.draws = 1;
    d.bundle_id = bundle;
    memset(m, 0, sizeof m);
    m[0] = (eb_results_metric){"quality", "accuracy", NULL, v, 1, v - 0.01, v + 0.01, 0.95, NULL,
                               1, "acc-v1"};
    m[1] = (eb_results_metric){"memory", "peak", "phase=predict", 1000 * v, 0, 0, 0, 0, "bytes",
                               0, NULL};
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_metrics(db, m, 2, NULL), EB_OK);
    assert_int_equal(eb_results_job_latency(db, "single", lat, 3, NULL), EB_OK);
    assert_int_equal(eb_results_job_bins(db, "binning=equal-width", bins, 2, NULL), EB_OK);
    assert_int_equal(eb_results_job_curve(db, "roc", "", x, y, 2, NULL), EB_OK);
    assert_int_equal(eb_results_job_predictions(db, "test", probs, &label, 1, 2, 0, NULL), EB_OK);
    assert_int_equal(eb_results_job_commit(db, v, NULL), EB_OK);
}

/* A shard: one run with the given jobs, the shared dataset and bundle. */
static void make_shard(const char *path, const char *shard, const char *const *keys,
                       const double *vals, size_t n, int finish)
{
    eb_results *db;
    eb_results_provenance p;
    eb_results_convention conv = {"acc-v1", "share of first-maximum hits"};
    eb_results_artifact data = {"dataset", SHA_DATA, "fashion-mnist/test", 100, NULL};
    eb_results_artifact bundle = {"bundle", SHA_BUNDLE, "map.ebb", 200, "{\"S\": 1}"};
    int64_t run, did, bid;

    remove_db(path);
    assert_int_equal(eb_results_open(path, &db, NULL), EB_OK);
    provenance(&p, shard);
    assert_int_equal(eb_results_conventions(db, &conv, 1, NULL), EB_OK);
    assert_int_equal(eb_results_run_begin(db, &p, &run, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_artifact_put(db, &data, &did, NULL), EB_OK);
    assert_int_equal(eb_results_artifact_put(db, &bundle, &bid, NULL), EB_OK);
    assert_int_equal(eb_results_run_artifact(db, run, did, "test", NULL), EB_OK);
    for (size_t i = 0; i < n; i++)
        add_job(db, run, keys[i], vals[i], bid);
    if (finish)
        assert_int_equal(eb_results_run_finish(db, run, NULL), EB_OK);
    eb_results_close(db);
}

static void snapshot(const char *path, char **data, size_t *n)
{
    assert_int_equal(eb_file_read_all(path, data, n, NULL), EB_OK);
}

static void test_merge_two_shards(void **state)
{
    const char *a = DIR "merge_a.db", *b = DIR "merge_b.db", *out = DIR "merge_out.db";
    const char *ka[2] = {"k1", "k2"}, *kb[2] = {"k3", "k4"};
    const double va[2] = {0.1, 0.2}, vb[2] = {0.3, 0.4};
    const char *inputs[2] = {a, b};
    int64_t before[NTABLES], after[NTABLES];
    eb_results_merge_stats s;
    char *snap_a, *snap_a2;
    size_t na, na2;
    eb_error err;
    (void)state;

    make_shard(a, "1/2", ka, va, 2, 1);
    make_shard(b, "2/2", kb, vb, 2, 1);
    /* Give the output its own ids first, so remapping is exercised. */
    make_shard(out, "1/1", (const char *const[]){"other"}, (const double[]){0.9}, 1, 1);
    snapshot(a, &snap_a, &na);

    assert_int_equal(eb_results_merge(out, inputs, 2, &s, &err), EB_OK);
    assert_int_equal(s.inputs, 2);
    assert_int_equal(s.runs_added, 2);
    assert_int_equal(s.jobs_added, 4);
    assert_int_equal(s.artifacts_added, 0); /* the output had both */
    counts(out, after);
    assert_int_equal(count_of(out, "runs"), 3);
    assert_int_equal(count_of(out, "jobs"), 5);
    assert_int_equal(count_of(out, "artifacts"), 2);
    assert_int_equal(count_of(out, "conventions"), 1);
    assert_int_equal(count_of(out, "run_artifacts"), 3);
    assert_int_equal(count_of(out, "metrics"), 10);
    assert_int_equal(count_of(out, "latency_samples"), 15);
    assert_int_equal(count_of(out, "reliability_bins"), 10);
    assert_int_equal(count_of(out, "curves"), 10);
    assert_int_equal(count_of(out, "predictions"), 5);
    /* Every measurement sits under the job it came from. */
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs j JOIN metrics m ON m.job_id = j.id "
                                  "WHERE m.name = 'accuracy' AND abs(m.value - j.seconds) < 1e-12"),
                     5);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs j JOIN latency_samples l ON "
                                  "l.job_id = j.id WHERE l.seq = 2 AND abs(l.seconds - "
                                  "j.seconds - 2) < 1e-12"),
                     5);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs j JOIN runs r ON r.id = j.run_id "
                                  "WHERE (j.key IN ('k1', 'k2') AND r.shard = '1/2') OR (j.key IN "
                                  "('k3', 'k4') AND r.shard = '2/2')"),
                     4);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs j JOIN artifacts a ON a.id = "
                                  "j.bundle_id WHERE a.sha256 = '" SHA_BUNDLE "'"),
                     5);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM pragma_foreign_key_check"), 0);

    /* Merging again, in any order, changes nothing. */
    memcpy(before, after, sizeof before);
    inputs[0] = b;
    inputs[1] = a;
    assert_int_equal(eb_results_merge(out, inputs, 2, &s, &err), EB_OK);
    assert_int_equal(s.inputs, 2);
    assert_int_equal(s.runs_added + s.jobs_added + s.artifacts_added + s.jobs_replaced, 0);
    counts(out, after);
    assert_memory_equal(before, after, sizeof before);

    /* Inputs are read-only to a merge. */
    snapshot(a, &snap_a2, &na2);
    assert_int_equal(na, na2);
    assert_memory_equal(snap_a, snap_a2, na);
    eb_free(snap_a);
    eb_free(snap_a2);

    /* A merge into a file that does not exist yet creates it. */
    remove_db(DIR "merge_new.db");
    assert_int_equal(eb_results_merge(DIR "merge_new.db", inputs, 2, NULL, &err), EB_OK);
    assert_int_equal(count_of(DIR "merge_new.db", "jobs"), 4);
    assert_int_equal(count_of(DIR "merge_new.db", "artifacts"), 2);
}

static void test_merge_updates(void **state)
{
    const char *a = DIR "merge_upd_a.db", *out = DIR "merge_upd_out.db";
    const char *inputs[1] = {a};
    eb_results *db;
    eb_results_provenance p;
    eb_results_job_def d;
    eb_results_merge_stats s;
    int64_t run;
    int resumed;
    (void)state;

    /* A shard still running: one job done, one failed. */
    make_shard(a, "1/1", (const char *const[]){"k1"}, (const double[]){0.5}, 1, 0);
    assert_int_equal(eb_results_open(a, &db, NULL), EB_OK);
    provenance(&p, "1/1");
    assert_int_equal(eb_results_run_resume_or_begin(db, &p, &run, &resumed, NULL), EB_OK);
    assert_int_equal(resumed, 1);
    memset(&d, 0, sizeof d);
    d.key = d.name = "k2";
    d.method = "map";
    d.arch = "mlp";
    d.device = "cpu";
    assert_int_equal(eb_results_job_begin(db, run, &d, NULL, NULL), EB_OK);
    assert_int_equal(eb_results_job_fail(db, "diverged", 1, NULL), EB_OK);
    eb_results_close(db);

    remove_db(out);
    assert_int_equal(eb_results_merge(out, inputs, 1, &s, NULL), EB_OK);
    assert_int_equal(s.jobs_added, 2);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs WHERE status = 'failed'"), 1);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM runs WHERE finished_at IS NULL"), 1);

    /* The shard resumes: k2 now succeeds and the run finishes. */
    assert_int_equal(eb_results_open(a, &db, NULL), EB_OK);
    assert_int_equal(eb_results_run_resume_or_begin(db, &p, &run, &resumed, NULL), EB_OK);
    assert_int_equal(resumed, 1);
    add_job(db, run, "k2", 0.6, 0);
    assert_int_equal(eb_results_run_finish(db, run, NULL), EB_OK);
    eb_results_close(db);

    assert_int_equal(eb_results_merge(out, inputs, 1, &s, NULL), EB_OK);
    assert_int_equal(s.jobs_replaced, 1);
    assert_int_equal(s.jobs_added, 1);
    assert_int_equal(s.runs_finished, 1);
    assert_int_equal(s.runs_added, 0);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs"), 2);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM jobs WHERE status = 'done'"), 2);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM metrics m JOIN jobs j ON j.id = "
                                  "m.job_id WHERE j.key = 'k2'"),
                     2);
    assert_int_equal(sql_int(out, "SELECT count(*) FROM runs WHERE finished_at IS NULL"), 0);
}

/* Each bad input is refused naming it, and the output keeps every row. */
static void test_merge_bad_inputs(void **state)
{
    const char *good = DIR "merge_good.db", *out = DIR "merge_bad_out.db";
    const char *text = DIR "merge_text.db", *foreign = DIR "merge_foreign.db";
    const char *newer = DIR "merge_newer.db", *conflict = DIR "merge_conflict.db";
    int64_t before[NTABLES], after[NTABLES];
    eb_results *db;
    eb_error err;
    FILE *fp;
    sqlite3 *s;
    (void)state;

    make_shard(out, "1/1", (const char *const[]){"k0"}, (const double[]){0.1}, 1, 1);
    make_shard(good, "1/2", (const char *const[]){"k1"}, (const double[]){0.2}, 1, 1);
    make_shard(newer, "2/2", (const char *const[]){"k2"}, (const double[]){0.3}, 1, 1);
    assert_int_equal(sqlite3_open(newer, &s), SQLITE_OK);
    assert_int_equal(sqlite3_exec(s, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(s);
    /* Same convention id, another meaning. */
    make_shard(conflict, "2/2", (const char *const[]){"k3"}, (const double[]){0.3}, 1, 1);
    assert_int_equal(sqlite3_open(conflict, &s), SQLITE_OK);
    assert_int_equal(sqlite3_exec(s, "UPDATE conventions SET description = 'top-5'", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(s);
    remove_db(text);
    fp = fopen(text, "w");
    assert_non_null(fp);
    fputs("not a database at all\n", fp);
    fclose(fp);
    remove_db(foreign);
    assert_int_equal(sqlite3_open(foreign, &s), SQLITE_OK);
    assert_int_equal(sqlite3_exec(s, "CREATE TABLE runs(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(s);

    counts(out, before);
    {
        const struct {
            const char *inputs[2];
            size_t n;
            eb_status code;
            const char *names, *says;
        } cases[] = {
            {{good, text}, 2, EB_ERR_FORMAT, text, "not an SQLite database"},
            {{good, foreign}, 2, EB_ERR_FORMAT, foreign, "another program"},
            {{good, newer}, 2, EB_ERR_UNSUPPORTED, newer, "version 99"},
            {{good, conflict}, 2, EB_ERR_FORMAT, conflict, "convention 'acc-v1'"},
            {{good, DIR "merge_missing.db"}, 2, EB_ERR_NOTFOUND, "merge_missing.db",
             "does not exist"},
            {{good, out}, 2, EB_ERR_ARG, out, "is the output"},
            {{good, DIR "./merge_bad_out.db"}, 2, EB_ERR_ARG, "./merge_bad_out.db",
             "is the output"},
            {{good, NULL}, 0, EB_ERR_ARG, out, "no input"},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            eb_results_merge_stats st;
            eb_error_clear(&err);
            assert_int_equal(eb_results_merge(out, cases[i].inputs, cases[i].n, &st, &err),
                             cases[i].code);
            print_message("%s\n", err.msg);
            if (!strstr(err.msg, cases[i].names) || !strstr(err.msg, cases[i].says))
                fail_msg("case %zu: '%s' lacks '%s' or '%s'", i, err.msg, cases[i].names,
                         cases[i].says);
            assert_int_equal(st.inputs, 0);
            counts(out, after);
            assert_memory_equal(before, after, sizeof before);
        }
    }
    /* The refused foreign file was not touched either. */
    assert_int_equal(sql_int(foreign, "PRAGMA application_id"), 0);
    assert_int_equal(sql_int(foreign, "SELECT journal_mode = 'delete' FROM pragma_journal_mode"),
                     1);
    /* An output that is itself not ours is refused before anything. */
    {
        const char *in[1] = {good};
        assert_int_equal(eb_results_merge(foreign, in, 1, NULL, &err), EB_ERR_FORMAT);
        assert_non_null(strstr(err.msg, foreign));
    }
    /* And the good shard alone still merges. */
    {
        const char *in[1] = {good};
        assert_int_equal(eb_results_merge(out, in, 1, NULL, &err), EB_OK);
        assert_int_equal(count_of(out, "jobs"), 2);
    }
    assert_int_equal(eb_results_open(out, &db, NULL), EB_OK);
    eb_results_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_two_shards),
        cmocka_unit_test(test_merge_updates),
        cmocka_unit_test(test_merge_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
