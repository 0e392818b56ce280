/* test_report.c: `edgebayes report` end to end and its numerical helpers.
 *
 * The fixture database is built here from results/schema.sql (read at
 * test time) with plain sqlite3 inserts: three runs (two finished, the
 * newest killed), jobs with every kind of row, NULL values, a job with no
 * latency, a failed job and a method name full of LaTeX specials. The
 * expected values (best marks, the shift mean, Pareto fronts) are worked
 * out by hand in the comments next to them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"
#include "reports/eb_report.h"
#include "reports/report_internal.h"

/* ---- helpers ---------------------------------------------------------- */

static void scratch(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/reports_%s_%d", EB_TEST_BINARY_DIR, name, (int)getpid());
}

static void rm_rf(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static void db_exec(sqlite3 *db, const char *fmt, ...)
{
    va_list ap;
    char *sql, *msg = NULL;
    va_start(ap, fmt);
    sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    assert_non_null(sql);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        print_error("SQL failed: %s\n%s\n", msg ? msg : "?", sql);
        sqlite3_free(msg);
        sqlite3_free(sql);
        fail();
    }
    sqlite3_free(sql);
}

/* A fresh database holding results/schema.sql and nothing else. */
static sqlite3 *schema_db(const char *path)
{
    char schema_path[4096], *schema;
    size_t len;
    sqlite3 *db = NULL;
    eb_error err;

    unlink(path);
    snprintf(schema_path, sizeof schema_path, "%s/results/schema.sql", EB_SOURCE_DIR);
    assert_int_equal(eb_file_read_all(schema_path, &schema, &len, &err), EB_OK);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    db_exec(db, "%s", schema);
    eb_free(schema);
    return db;
}

static const char *num(char *buf, double v)
{
    if (isnan(v))
        return "NULL";
    snprintf(buf, 40, "%.17g", v);
    return buf;
}

static void metric(sqlite3 *db, int job, const char *facet, const char *name, const char *ctx,
                   double v, double lo, double hi, int hib, const char *unit)
{
    char a[40], b[40], c[40];
    db_exec(db,
            "INSERT INTO metrics(job_id, facet, name, context, value, ci_low, ci_high, ci_level,"
            " unit, higher_is_better, convention) VALUES (%d, %Q, %Q, %Q, %s, %s, %s, %s, %Q, %d,"
            " %Q)",
            job, facet, name, ctx, num(a, v), num(b, lo), num(c, hi), isnan(lo) ? "NULL" : "0.95",
            unit, hib, strcmp(name, "ece") == 0 ? "ece-15-equal-width-right-closed-v1" : NULL);
}

static void curve(sqlite3 *db, int job, const char *kind, const char *ctx, const double *x,
                  const double *y, int n)
{
    for (int i = 0; i < n; i++) {
        char a[40], b[40];
        db_exec(db, "INSERT INTO curves VALUES (%d, %Q, %Q, %d, %s, %s)", job, kind, ctx, i,
                num(a, x[i]), num(b, y[i]));
    }
}

static void run_row(sqlite3 *db, int id, const char *started, const char *finished)
{
    db_exec(db,
            "INSERT INTO runs(id, uuid, label, suite, suite_sha256, started_at, finished_at,"
            " version, git_commit, compiler, cflags, cpu_model, cores, host, libraries)"
            " VALUES (%d, '00000000-0000-4000-8000-00000000000%d', 'nightly', 'quick',"
            " 'ab12', %Q, %Q, '0.1.0', 'deadbeef', 'gcc 12.2', '-O3', 'Test CPU @ 2GHz', 2,"
            " 'ci-host', '{\"openblas\": \"0.3.21\"}')",
            id, id, started, finished);
}

static void job_row(sqlite3 *db, int id, int run, const char *key, const char *name,
                    const char *method, const char *chain, int draws, int bundle,
                    const char *status, const char *error)
{
    db_exec(db,
            "INSERT INTO jobs(id, run_id, key, name, method, chain, arch, seed, device, draws,"
            " bundle_id, status, error, seconds, finished_at) VALUES (%d, %d, %Q, %Q, %Q, %Q,"
            " 'mlp', 1, 'cpu', %d, %s, %Q, %Q, 12.5, '2024-05-02T02:30:00Z')",
            id, run, key, name, method, chain, draws, bundle ? (bundle == 1 ? "1" : "2") : "NULL",
            status, error);
}

/* The method name of job 23: every LaTeX special that can reach a cell. */
#define ODD_METHOD "sgld_v2 #1 & 50% {x}"

/* Builds the fixture (see the file comment); every value below is the
 * one the expectations in the tests refer to. */
static void make_fixture(const char *path)
{
    sqlite3 *db = schema_db(path);
    static const double eps[] = {0, 0.05, 0.1, 0.2};
    static const double sev[] = {1, 2, 3, 4, 5};
    static const double fpr[] = {0, 0.1, 0.3, 1}, tpr_a[] = {0, 0.5, 0.8, 1},
                        tpr_b[] = {0, 0.7, 0.9, 1};
    double y[5];

    db_exec(db, "BEGIN");
    db_exec(db, "INSERT INTO conventions VALUES ('ece-15-equal-width-right-closed-v1',"
                " 'ECE over 15 equal-width confidence bins, right-closed')");
    run_row(db, 1, "2024-05-01T02:00:00Z", "2024-05-01T03:00:00Z");
    run_row(db, 2, "2024-05-02T02:00:00Z", "2024-05-02T03:10:00Z");
    run_row(db, 3, "2024-05-03T02:00:00Z", NULL); /* killed: never the default */
    db_exec(db, "INSERT INTO artifacts VALUES (1, 'bundle', 'aa', 'map.ebb', 1077288, '{}'),"
                " (2, 'bundle', 'bb', 'ensemble.ebb', 5386440, '{}'),"
                " (3, 'dataset', 'cc', 'fashion-mnist/test', 7840016, '{}')");
    db_exec(db, "INSERT INTO run_artifacts VALUES (2, 3, 'test')");

    /* Run 2, the default selection. */
    job_row(db, 21, 2, "k-map", "map/mlp/s1", "map", "", 1, 1, "done", NULL);
    job_row(db, 22, 2, "k-ens", "ensemble/mlp/s1", "ensemble", "", 5, 2, "done", NULL);
    job_row(db, 23, 2, "k-odd", "odd/mlp/s1", ODD_METHOD, "prune:0.9", 10, 0, "done", NULL);
    job_row(db, 24, 2, "k-fail", "dropout/mlp/s1", "dropout", "", 30, 0, "failed",
            "out of memory <while> training");
    /* quality */
    metric(db, 21, "quality", "accuracy", "", 0.85, NAN, NAN, 1, "");
    metric(db, 22, "quality", "accuracy", "", 0.88, NAN, NAN, 1, "");
    metric(db, 23, "quality", "accuracy", "", 0.80, NAN, NAN, 1, "");
    metric(db, 21, "quality", "nll", "", 0.45, NAN, NAN, 0, "");
    metric(db, 22, "quality", "nll", "", 0.35, NAN, NAN, 0, "");
    metric(db, 23, "quality", "nll", "", NAN, NAN, NAN, 0, ""); /* stored NULL */
    metric(db, 21, "quality", "brier", "", 0.22, NAN, NAN, 0, "");
    metric(db, 22, "quality", "brier", "", 0.18, NAN, NAN, 0, "");
    metric(db, 23, "quality", "brier", "", 0.30, NAN, NAN, 0, "");
    /* ECE: a tie between ensemble and the odd job */
    metric(db, 21, "calibration", "ece", "", 0.05, NAN, NAN, 0, "");
    metric(db, 22, "calibration", "ece", "", 0.02, NAN, NAN, 0, "");
    metric(db, 23, "calibration", "ece", "", 0.02, NAN, NAN, 0, "");
    metric(db, 21, "ood", "auroc", "score=entropy", 0.80, NAN, NAN, 1, "");
    metric(db, 22, "ood", "auroc", "score=entropy", 0.90, NAN, NAN, 1, "");
    metric(db, 23, "ood", "auroc", "score=entropy", 0.95, NAN, NAN, 1, "");
    metric(db, 21, "ood", "auroc", "score=mi", NAN, NAN, NAN, 1, ""); /* S = 1: undefined */
    metric(db, 22, "ood", "auroc", "score=mi", 0.85, NAN, NAN, 1, "");
    metric(db, 23, "ood", "auroc", "score=mi", 0.70, NAN, NAN, 1, "");
    metric(db, 21, "misclassification", "auroc", "score=entropy", 0.75, NAN, NAN, 1, "");
    metric(db, 22, "misclassification", "auroc", "score=entropy", 0.80, NAN, NAN, 1, "");
    metric(db, 21, "adversarial", "accuracy", "attack=pgd,eps=0.1", 0.10, NAN, NAN, 1, "");
    metric(db, 22, "adversarial", "accuracy", "attack=pgd,eps=0.1", 0.20, NAN, NAN, 1, "");
    metric(db, 23, "adversarial", "accuracy", "attack=pgd,eps=0.1", 0.15, NAN, NAN, 1, "");
    /* Shift accuracy at severity 3: map (0.60 + 0.70) / 2 = 0.65,
     * ensemble (0.70 + 0.74) / 2 = 0.72; the odd job has severity 1 only,
     * so in a severity-3 column it has no value. Other severities differ
     * so that a wrong mean shows. */
    for (int s = 1; s <= 5; s++) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "corruption=rotation,severity=%d", s);
        metric(db, 21, "shift", "accuracy", ctx, s == 3 ? 0.60 : 0.9 - 0.05 * s, NAN, NAN, 1, "");
        metric(db, 22, "shift", "accuracy", ctx, s == 3 ? 0.70 : 0.9 - 0.04 * s, NAN, NAN, 1, "");
        snprintf(ctx, sizeof ctx, "corruption=noise,severity=%d", s);
        metric(db, 21, "shift", "accuracy", ctx, s == 3 ? 0.70 : 0.95 - 0.05 * s, NAN, NAN, 1, "");
        metric(db, 22, "shift", "accuracy", ctx, s == 3 ? 0.74 : 0.95 - 0.03 * s, NAN, NAN, 1, "");
    }
    metric(db, 23, "shift", "accuracy", "corruption=rotation,severity=1", 0.9, NAN, NAN, 1, "");
    /* resources; the odd job has no latency at all */
    metric(db, 21, "latency", "p50", "", 0.0012, 0.0011, 0.0013, 0, "s");
    metric(db, 22, "latency", "p50", "", 0.0055, 0.0050, 0.0060, 0, "s");
    metric(db, 21, "throughput", "inputs_per_second", "", 5000, NAN, NAN, 1, "images/s");
    metric(db, 22, "throughput", "inputs_per_second", "", 900, NAN, NAN, 1, "images/s");
    metric(db, 21, "load", "seconds", "cache=cold", 0.020, NAN, NAN, 0, "s");
    metric(db, 22, "load", "seconds", "cache=cold", 0.080, NAN, NAN, 0, "s");
    metric(db, 21, "load", "seconds", "cache=warm", 0.002, NAN, NAN, 0, "s");
    metric(db, 22, "load", "seconds", "cache=warm", 0.009, NAN, NAN, 0, "s");
    metric(db, 21, "memory", "peak_rss", "phase=predict", 30e6, NAN, NAN, 0, "bytes");
    metric(db, 22, "memory", "peak_rss", "phase=predict", 60e6, NAN, NAN, 0, "bytes");
    metric(db, 23, "memory", "peak_rss", "phase=predict", 45e6, NAN, NAN, 0, "bytes");
    metric(db, 21, "memory", "model_bytes", "", 1077288, NAN, NAN, 0, "bytes");
    metric(db, 22, "memory", "model_bytes", "", 5386440, NAN, NAN, 0, "bytes");
    metric(db, 23, "memory", "model_bytes", "", 2000000, NAN, NAN, 0, "bytes");
    /* storage: map from its artifact row only (1077288), ensemble stored */
    metric(db, 22, "storage", "bundle_bytes", "", 5386500, NAN, NAN, 0, "bytes");

    /* reliability bins: 15 equal-width, the empty ones NULL */
    for (int j = 21; j <= 22; j++)
        for (int b = 0; b < 15; b++) {
            double lo = b / 15.0, hi = (b + 1) / 15.0;
            int count = b < 5 ? 0 : 10 * (b - 4);
            char c[40], a[40];
            db_exec(db, "INSERT INTO reliability_bins VALUES (%d, 'binning=equal-width', %d,"
                        " %.17g, %.17g, %d, %s, %s)",
                    j, b, lo, hi, count, num(c, count ? (lo + hi) / 2 : NAN),
                    num(a, count ? (lo + hi) / 2 - 0.02 * (j - 20) : NAN));
        }
    curve(db, 21, "roc", "score=entropy", fpr, tpr_a, 4);
    curve(db, 22, "roc", "score=entropy", fpr, tpr_b, 4);
    curve(db, 23, "roc", "score=entropy", fpr, tpr_b, 4);
    curve(db, 21, "roc", "score=mi", fpr, tpr_a, 4); /* another score: not drawn */
    for (int j = 21; j <= 22; j++) {
        double acc[4], nll[4];
        for (int i = 0; i < 4; i++) {
            acc[i] = 0.85 - i * 0.2 + 0.03 * (j - 21);
            nll[i] = 0.4 + i * 1.5;
        }
        curve(db, j, "eps", "attack=fgsm,metric=accuracy", eps, acc, 4);
        curve(db, j, "eps", "attack=pgd,metric=accuracy", eps, acc, 4);
        curve(db, j, "eps", "attack=fgsm,metric=nll", eps, nll, 4);
        curve(db, j, "eps", "attack=pgd,metric=nll", eps, nll, 4);
    }
    /* ECE per severity: map rotation 0.02 s, noise 0.03 s, so the mean
     * the report computes is 0.025 s (0.025, 0.05, ..., 0.125). */
    for (int s = 0; s < 5; s++)
        y[s] = 0.02 * sev[s];
    curve(db, 21, "shift", "corruption=rotation,metric=ece", sev, y, 5);
    for (int s = 0; s < 5; s++)
        y[s] = 0.03 * sev[s];
    curve(db, 21, "shift", "corruption=noise,metric=ece", sev, y, 5);
    for (int s = 0; s < 5; s++)
        y[s] = 0.01 * sev[s];
    curve(db, 22, "shift", "corruption=rotation,metric=ece", sev, y, 5);
    curve(db, 22, "shift", "corruption=noise,metric=ece", sev, y, 5);
    for (int i = 0; i < 40; i++) {
        db_exec(db, "INSERT INTO latency_samples VALUES (21, 'single', %d, %.17g)", i,
                0.0010 + 0.00001 * ((i * 7) % 40));
        db_exec(db, "INSERT INTO latency_samples VALUES (22, 'single', %d, %.17g)", i,
                0.0050 + 0.00003 * ((i * 11) % 40));
    }
    db_exec(db, "INSERT INTO latency_samples VALUES (21, 'first', 0, 0.05)");

    /* Run 1 (older) and run 3 (killed, newest): history only. */
    job_row(db, 11, 1, "k-map", "map/mlp/s1", "map", "", 1, 1, "done", NULL);
    job_row(db, 12, 1, "k-ens", "ensemble/mlp/s1", "ensemble", "", 5, 2, "done", NULL);
    job_row(db, 31, 3, "k-map", "map/mlp/s1", "map", "", 1, 1, "done", NULL);
    metric(db, 11, "quality", "accuracy", "", 0.80, NAN, NAN, 1, "");
    metric(db, 12, "quality", "accuracy", "", 0.84, NAN, NAN, 1, "");
    metric(db, 31, "quality", "accuracy", "", 0.86, NAN, NAN, 1, "");
    metric(db, 11, "latency", "p50", "", 0.0013, NAN, NAN, 0, "s");
    db_exec(db, "COMMIT");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The whole file, NUL-terminated; the caller frees with eb_free. Copied
 * out of eb_file_read_all's buffer through a heap cell so gcc's
 * -Wdangling-pointer does not mistake it for the local it was read into. */
static char *slurp(const char *path, size_t *len)
{
    char **cell = malloc(sizeof *cell), *data;
    size_t n = 0;
    eb_error err;
    assert_non_null(cell);
    if (eb_file_read_all(path, cell, &n, &err) != EB_OK) {
        free(cell);
        print_error("%s\n", err.msg);
        fail();
    }
    data = *cell;
    free(cell);
    if (len)
        *len = n;
    return data;
}

static void file_sha(const char *path, char hex[65])
{
    assert_int_equal(eb_sha256_file(path, hex, NULL), EB_OK);
}

/* ---- numerical helpers against hand-worked answers ------------------ */

static void test_pareto_front(void **state)
{
    /* Resource x (lower better), accuracy y (higher better):
     *   A (1, 0.80)  B (2, 0.90)  C (3, 0.85)  D (2, 0.90)  E (4, 0.95)
     * C is beaten by B (cheaper and better); A, B, D (equal to B: both
     * stay), E are on the front. */
    const double x[] = {1, 2, 3, 2, 4}, y[] = {0.80, 0.90, 0.85, 0.90, 0.95};
    unsigned char on[5];
    (void)state;
    rp_pareto_front(on, x, y, 5, 1);
    assert_memory_equal(on, ((unsigned char[]){1, 1, 0, 1, 1}), 5);
    /* Lower-is-better y (e.g. ECE): A (1, .05) B (2, .02) C (3, .02)
     * D (0.5, .10): C is beaten by B (same ECE, cheaper); the rest stay. */
    {
        const double x2[] = {1, 2, 3, 0.5}, y2[] = {0.05, 0.02, 0.02, 0.10};
        rp_pareto_front(on, x2, y2, 4, 0);
        assert_memory_equal(on, ((unsigned char[]){1, 1, 0, 1}), 4);
    }
    /* One point is its own front. */
    rp_pareto_front(on, x, y, 1, 0);
    assert_int_equal(on[0], 1);
}

static void test_mean_curve(void **state)
{
    /* Series 1 at x = 1, 2, 3; series 2 at x = 1, 3 only: the mean exists
     * at x = 1 ((0.1 + 0.3) / 2 = 0.2) and x = 3 ((0.5 + 0.9) / 2 = 0.7). */
    const double a[] = {1, 0.1, 2, 0.2, 3, 0.5}, b[] = {1, 0.3, 3, 0.9};
    rp_series sa = {0, "", 3, a, 0}, sb = {0, "", 2, b, 0};
    const rp_series *s[] = {&sa, &sb};
    double mx[3], my[3];
    size_t n;
    (void)state;
    n = rp_mean_curve(mx, my, 3, s, 2);
    assert_int_equal(n, 2);
    assert_true(mx[0] == 1 && fabs(my[0] - 0.2) < 1e-12);
    assert_true(mx[1] == 3 && fabs(my[1] - 0.7) < 1e-12);
    assert_int_equal(rp_mean_curve(mx, my, 3, s, 0), 0);
}

static void test_mark_best(void **state)
{
    rp_value v[4] = {{0.5, 0, 0, 1, 0, 1}, {0.7, 0, 0, 1, 0, 1}, {0.7, 0, 0, 1, 0, 1},
                     {0.9, 0, 0, 0, 0, 1}};
    const rp_value *p[4] = {&v[0], &v[1], &v[2], &v[3]};
    unsigned char best[4];
    (void)state;
    /* v[3] is absent (has = 0): its 0.9 never wins. Ties both marked. */
    assert_int_equal(rp_mark_best(best, p, 4, 1), 2);
    assert_memory_equal(best, ((unsigned char[]){0, 1, 1, 0}), 4);
    assert_int_equal(rp_mark_best(best, p, 4, 0), 1);
    assert_memory_equal(best, ((unsigned char[]){1, 0, 0, 0}), 4);
    /* Unknown direction, or a single value: nothing. */
    assert_int_equal(rp_mark_best(best, p, 4, -1), 0);
    assert_int_equal(rp_mark_best(best, p, 1, 1), 0);
}

static char *escaped(void (*fn)(FILE *, const char *), const char *s)
{
    static char buf[512];
    FILE *fp = fmemopen(buf, sizeof buf, "w");
    assert_non_null(fp);
    fn(fp, s);
    fclose(fp);
    return buf;
}

static void test_escapes(void **state)
{
    (void)state;
    assert_string_equal(escaped(rp_latex_escape, ODD_METHOD),
                        "sgld\\_v2 \\#1 \\& 50\\% \\{x\\}");
    assert_string_equal(escaped(rp_latex_escape, "a\\b~c^d$e[f]"),
                        "a\\textbackslash{}b\\textasciitilde{}c\\textasciicircum{}d\\$e{[}f{]}");
    assert_string_equal(escaped(rp_md_escape, "a|b*c_d"), "a\\|b\\*c\\_d");
    assert_string_equal(escaped(rp_html_escape, "<a href=\"x\">&'"),
                        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    assert_string_equal(escaped(rp_gp_string, "it's"), "'it''s'");
    assert_string_equal(escaped(rp_dat_string, "say \"hi\""), "\"say 'hi'\"");
}

static void test_context_parsing(void **state)
{
    char v[16];
    (void)state;
    assert_true(rp_ctx_get("attack=pgd,metric=accuracy", "metric", v, sizeof v));
    assert_string_equal(v, "accuracy");
    assert_true(rp_ctx_get("attack=pgd,metric=accuracy", "attack", v, sizeof v));
    assert_string_equal(v, "pgd");
    assert_false(rp_ctx_get("attack=pgd", "att", v, sizeof v));
    assert_false(rp_ctx_get("", "attack", v, sizeof v));
    assert_false(rp_ctx_get("attack=a-very-long-name", "attack", v, 8));
}

/* ---- run selection (no rendering) ---------------------------------- */

static void test_run_selection(void **state)
{
    char db_path[4096];
    rp_db d;
    eb_error err;
    (void)state;
    scratch(db_path, sizeof db_path, "select.db");
    make_fixture(db_path);

    /* Default: the latest finished run (2), not the killed run 3. */
    assert_int_equal(rp_db_open(&d, db_path, &err), EB_OK);
    assert_int_equal(d.n_runs, 3);
    assert_int_equal(rp_db_select(&d, NULL, 0, &err), EB_OK);
    assert_int_equal(d.n_selected, 1);
    assert_int_equal(d.runs[d.latest].id, 2);
    assert_string_equal(d.sel_ids, "2");
    assert_int_equal(d.n_rows, 3); /* the failed job is not a row */
    /* Rows by method: "ensemble" < "map" < "sgld..." */
    assert_string_equal(d.jobs[d.rows[0]].method, "ensemble");
    assert_string_equal(d.jobs[d.rows[1]].method, "map");
    assert_string_equal(d.jobs[d.rows[2]].method, ODD_METHOD);
    rp_db_close(&d);

    {
        const char *by_label[] = {"nightly"}; /* latest finished with it: 2 */
        const char *by_uuid[] = {"00000000-0000-4000-8000-000000000003"};
        const char *two[] = {"1", "2", "1"};
        const char *bad[] = {"nope"};
        assert_int_equal(rp_db_open(&d, db_path, &err), EB_OK);
        assert_int_equal(rp_db_select(&d, by_label, 1, &err), EB_OK);
        assert_string_equal(d.sel_ids, "2");
        rp_db_close(&d);
        assert_int_equal(rp_db_open(&d, db_path, &err), EB_OK);
        assert_int_equal(rp_db_select(&d, by_uuid, 1, &err), EB_OK);
        assert_string_equal(d.sel_ids, "3");
        assert_int_equal(d.n_rows, 1);
        rp_db_close(&d);
        assert_int_equal(rp_db_open(&d, db_path, &err), EB_OK);
        assert_int_equal(rp_db_select(&d, two, 3, &err), EB_OK);
        assert_string_equal(d.sel_ids, "1,2");
        assert_int_equal(d.n_rows, 5);
        /* Same job in two runs: labels say which run. */
        assert_string_equal(d.jobs[d.rows[0]].label, "ensemble/mlp/s1 #1");
        assert_string_equal(d.jobs[d.rows[1]].label, "ensemble/mlp/s1 #2");
        rp_db_close(&d);
        assert_int_equal(rp_db_open(&d, db_path, &err), EB_OK);
        assert_int_equal(rp_db_select(&d, bad, 1, &err), EB_ERR_NOTFOUND);
        assert_non_null(strstr(err.msg, "'nope'"));
        rp_db_close(&d);
    }

    /* Only a killed run: no default. */
    {
        sqlite3 *db = schema_db(db_path);
        run_row(db, 1, "2024-05-01T02:00:00Z", NULL);
        sqlite3_close(db);
        assert_int_equal(rp_db_open(&d, db_path, &err), EB_OK);
        assert_int_equal(rp_db_select(&d, NULL, 0, &err), EB_ERR_NOTFOUND);
        assert_non_null(strstr(err.msg, "none has finished"));
        rp_db_close(&d);
    }
    unlink(db_path);
}

/* Every allocation of reading, the table and the plot files fails once
 * in turn: each failure is reported as out of memory, and the sanitizer
 * build shows nothing leaks. (gnuplot is not run here: too slow for
 * hundreds of rounds; its driver's allocations are few and plain.) */
static void test_allocation_failures(void **state)
{
    char db_path[4096], dir[4096];
    long n_allocs, start;
    eb_error err;
    size_t hist[] = {RP_COL_ACCURACY, RP_COL_LATENCY};
    (void)state;
    scratch(db_path, sizeof db_path, "alloc.db");
    /* Each round writes every plot's files, fsynced: on tmpfs, when there
     * is one, that costs nothing. */
    if (access("/dev/shm", W_OK) == 0)
        snprintf(dir, sizeof dir, "/dev/shm/eb_reports_alloc_%d", (int)getpid());
    else
        scratch(dir, sizeof dir, "alloc_plots");
    make_fixture(db_path);
    assert_int_equal(eb_mkdirs(dir, &err), EB_OK);

    for (long k = 0;; k++) {
        rp_db d;
        rp_table t;
        rp_plot plots[RP_N_PLOTS];
        eb_status s;
        start = eb_alloc_count();
        eb_alloc_fail_at(k);
        memset(&t, 0, sizeof t);
        memset(plots, 0, sizeof plots);
        s = rp_db_open(&d, db_path, &err);
        if (s == EB_OK)
            s = rp_db_select(&d, NULL, 0, &err);
        if (s == EB_OK)
            s = rp_table_build(&t, &d, &err);
        if (s == EB_OK)
            s = rp_plots_write(plots, &t, dir, hist, 2, &err);
        eb_alloc_fail_at(0);
        n_allocs = eb_alloc_count() - start;
        rp_plots_free(plots);
        rp_table_free(&t);
        rp_db_close(&d);
        if (k == 0) {
            assert_int_equal(s, EB_OK);
            assert_true(n_allocs > 10);
            continue;
        }
        if (s == EB_OK) {
            assert_true(k > 10); /* ran out of allocations to fail */
            break;
        }
        if (s != EB_ERR_NOMEM) {
            print_error("allocation %ld failed with %s: %s\n", k, eb_status_name(s), err.msg);
            fail();
        }
    }
    rm_rf(dir);
    unlink(db_path);
}

/* ---- file checks ------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The PNG's signature, IHDR size against the script's, and its image data
 * inflated to exactly the size the header declares. */
static void check_png(const char *path, long want_w, long want_h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t len, pos = 8, idat_len = 0;
    unsigned char *data = (unsigned char *)slurp(path, &len), *idat;
    uint32_t w, h;
    int depth, color, interlace, channels;

    assert_true(len > 33);
    assert_memory_equal(data, sig, 8);
    assert_memory_equal(data + 12, "IHDR", 4);
    w = be32(data + 16);
    h = be32(data + 20);
    depth = data[24];
    color = data[25];
    interlace = data[28];
    if ((long)w != want_w || (long)h != want_h) {
        print_error("%s is %ux%u, the script says %ldx%ld\n", path, w, h, want_w, want_h);
        fail();
    }
    idat = malloc(len);
    assert_non_null(idat);
    while (pos + 12 <= len) {
        uint32_t n = be32(data + pos);
        assert_true(pos + 12 + n <= len);
        if (memcmp(data + pos + 4, "IDAT", 4) == 0) {
            memcpy(idat + idat_len, data + pos + 8, n);
            idat_len += n;
        }
        if (memcmp(data + pos + 4, "IEND", 4) == 0)
            break;
        pos += 12 + n;
    }
    channels = color == 0 ? 1 : color == 2 ? 3 : color == 3 ? 1 : color == 4 ? 2 : 4;
    assert_int_equal(interlace, 0);
    {
        size_t row = 1 + ((size_t)w * (size_t)channels * (size_t)depth + 7) / 8;
        size_t want = row * h;
        unsigned char *raw = malloc(want + 1);
        uLongf got = (uLongf)want + 1;
        assert_non_null(raw);
        assert_int_equal(uncompress(raw, &got, idat, idat_len), Z_OK);
        assert_int_equal(got, want);
        free(raw);
    }
    free(idat);
    eb_free(data);
}

static long gp_number(const char *gp, const char *name)
{
    char key[32];
    const char *p;
    snprintf(key, sizeof key, "\n%s = ", name);
    p = strstr(gp, key);
    assert_non_null(p);
    return strtol(p + strlen(key), NULL, 10);
}

static const char *const all_plots[] = {"reliability",    "ood_roc",        "adv_accuracy",
                                        "adv_nll",        "shift_ece",      "pareto_latency",
                                        "pareto_storage", "pareto_memory",  "latency",
                                        "history"};
#define N_ALL_PLOTS (sizeof all_plots / sizeof all_plots[0])

static void check_plot_files(const char *out, const char *name)
{
    char path[4200], *gp, *svg, *pdf;
    size_t len;
    snprintf(path, sizeof path, "%s/plots/%s.gp", out, name);
    gp = slurp(path, NULL);
    /* The script renders every format itself, with relative paths. */
    assert_non_null(strstr(gp, "set terminal pngcairo"));
    assert_non_null(strstr(gp, "set terminal svg"));
    assert_non_null(strstr(gp, "set terminal pdfcairo"));
    assert_non_null(strstr(gp, "set output \""));
    assert_null(strstr(gp, out)); /* no absolute paths */
    snprintf(path, sizeof path, "%s/plots/%s.dat", out, name);
    assert_true(eb_file_exists(path));
    snprintf(path, sizeof path, "%s/plots/%s.png", out, name);
    check_png(path, gp_number(gp, "width"), gp_number(gp, "height"));
    snprintf(path, sizeof path, "%s/plots/%s.svg", out, name);
    svg = slurp(path, &len);
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "</svg>"));
    eb_free(svg);
    snprintf(path, sizeof path, "%s/plots/%s.pdf", out, name);
    pdf = slurp(path, &len);
    assert_true(len > 100 && memcmp(pdf, "%PDF", 4) == 0);
    /* The creation date is the latest selected run's start (run 2). */
    assert_non_null(memmem(pdf, len, "/CreationDate (D:20240502020000", 31));
    eb_free(pdf);
    eb_free(gp);
}

/* Splits a Markdown table row into cells (unescaped '|' separates). */
static int md_cells(const char *line, char cells[][128], int max)
{
    int n = -1;
    size_t k = 0;
    for (const char *p = line; *p && *p != '\n'; p++) {
        if (*p == '\\' && p[1]) {
            if (n >= 0 && k < 127)
                cells[n][k++] = p[1];
            p++;
            continue;
        }
        if (*p == '|') {
            if (n >= 0) {
                cells[n][k] = '\0';
                /* trim */
                while (k > 0 && cells[n][k - 1] == ' ')
                    cells[n][--k] = '\0';
            }
            if (n + 1 >= max)
                break;
            n++;
            k = 0;
            continue;
        }
        if (n >= 0 && !(k == 0 && *p == ' ') && k < 127)
            cells[n][k++] = *p;
    }
    return n < 0 ? 0 : n;
}

typedef struct md_table {
    char head[40][128];
    char rows[8][40][128];
    int ncols, nrows;
} md_table;

static void parse_md(const char *md, md_table *t)
{
    const char *line = strstr(md, "\n| Method");
    assert_non_null(line);
    line++;
    memset(t, 0, sizeof *t);
    t->ncols = md_cells(line, t->head, 40);
    line = strchr(line, '\n') + 1; /* alignment row */
    assert_true(strncmp(line, "| :--", 5) == 0);
    line = strchr(line, '\n') + 1;
    while (*line == '|' && t->nrows < 8) {
        assert_int_equal(md_cells(line, t->rows[t->nrows], 40), t->ncols);
        t->nrows++;
        line = strchr(line, '\n') + 1;
    }
}

static int md_col(const md_table *t, const char *prefix)
{
    for (int c = 0; c < t->ncols; c++)
        if (strncmp(t->head[c], prefix, strlen(prefix)) == 0)
            return c;
    print_error("no column '%s'\n", prefix);
    fail();
    return -1;
}

/* Row order (by method): 0 ensemble, 1 map, 2 the odd method. */
static void expect_cells(const md_table *t, const char *col, const char *e, const char *m,
                         const char *o)
{
    int c = md_col(t, col);
    const char *want[3] = {e, m, o};
    for (int r = 0; r < 3; r++)
        if (strcmp(t->rows[r][c], want[r]) != 0) {
            print_error("column '%s' row %d: '%s', expected '%s'\n", col, r, t->rows[r][c],
                        want[r]);
            fail();
        }
}

/* HTML sanity without a browser: tags balance (void elements aside),
 * every local src/href names a file of the report, every #fragment an id
 * on the page, and nothing is fetched from elsewhere. */
static void check_html(const char *out, const char *html)
{
    static const char *const voids[] = {"meta", "link", "img", "br", "hr", "input", "col"};
    char stack[64][16];
    int depth = 0;
    for (const char *p = strchr(html, '<'); p; p = strchr(p + 1, '<')) {
        char name[16];
        size_t k = 0;
        int closing = p[1] == '/';
        const char *q = p + 1 + closing;
        int is_void = 0;
        if (p[1] == '!')
            continue;
        while (k < sizeof name - 1 && ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9')))
            name[k++] = *q++;
        name[k] = '\0';
        assert_true(k > 0);
        for (size_t v = 0; v < sizeof voids / sizeof voids[0]; v++)
            is_void |= strcmp(name, voids[v]) == 0;
        if (is_void)
            continue;
        if (closing) {
            assert_true(depth > 0);
            if (strcmp(stack[depth - 1], name) != 0) {
                print_error("</%s> closes <%s>\n", name, stack[depth - 1]);
                fail();
            }
            depth--;
        } else {
            assert_true(depth < 64);
            strcpy(stack[depth++], name);
        }
    }
    assert_int_equal(depth, 0);
    assert_null(strstr(html, "http://"));
    assert_null(strstr(html, "https://"));
    assert_null(strstr(html, "<script"));
    for (const char *attr = html; (attr = strstr(attr, "=\"")) != NULL; attr += 2) {
        char target[512], path[4800];
        const char *end;
        size_t n;
        if (!(attr >= html + 4 && (strncmp(attr - 4, "href", 4) == 0 ||
                                   strncmp(attr - 3, "src", 3) == 0)))
            continue;
        end = strchr(attr + 2, '"');
        assert_non_null(end);
        n = (size_t)(end - attr - 2);
        assert_true(n < sizeof target);
        memcpy(target, attr + 2, n);
        target[n] = '\0';
        if (strncmp(target, "data:", 5) == 0)
            continue;
        if (target[0] == '#') {
            char id[600];
            snprintf(id, sizeof id, "id=\"%s\"", target + 1);
            if (!strstr(html, id)) {
                print_error("link %s has no target\n", target);
                fail();
            }
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", out, target);
        if (!eb_file_exists(path)) {
            print_error("index.html links to %s, which does not exist\n", target);
            fail();
        }
    }
}

/* ---- the full report --------------------------------------------- */

static void write_report(const char *db, const char *out, const eb_report_options *opt)
{
    eb_error err;
    eb_error_clear(&err);
    if (eb_report_write(db, out, opt, &err) != EB_OK) {
        print_error("eb_report_write: %s\n", err.msg);
        fail();
    }
}

static void test_full_report(void **state)
{
    char db_path[4096], out[4096], path[4200], sha_before[65], sha_after[65];
    char *md, *tex, *html, *dat;
    md_table t;
    (void)state;
    scratch(db_path, sizeof db_path, "full.db");
    scratch(out, sizeof out, "full");
    rm_rf(out);
    make_fixture(db_path);
    file_sha(db_path, sha_before);
    write_report(db_path, out, NULL);
    file_sha(db_path, sha_after);
    assert_string_equal(sha_before, sha_after); /* reports never write */

    for (size_t i = 0; i < N_ALL_PLOTS; i++)
        check_plot_files(out, all_plots[i]);

    /* The Markdown table: values, em dashes and the best marks worked out
     * in make_fixture. */
    snprintf(path, sizeof path, "%s/tables.md", out);
    md = slurp(path, NULL);
    parse_md(md, &t);
    assert_int_equal(t.nrows, 3);
    assert_string_equal(t.rows[0][0], "ensemble");
    assert_string_equal(t.rows[2][0], ODD_METHOD);
    assert_string_equal(t.rows[2][1], "prune:0.9");
    assert_string_equal(t.rows[1][1], "none");
    assert_string_equal(t.head[md_col(&t, "Accuracy")], "Accuracy \xE2\x86\x91");
    assert_string_equal(t.head[md_col(&t, "NLL")], "NLL \xE2\x86\x93");
    expect_cells(&t, "Accuracy", "**0.8800**", "0.8500", "0.8000");
    expect_cells(&t, "NLL", "**0.3500**", "0.4500", "\xE2\x80\x94");
    expect_cells(&t, "ECE", "**0.0200**", "0.0500", "**0.0200**"); /* a tie */
    expect_cells(&t, "Brier", "**0.1800**", "0.2200", "0.3000");
    expect_cells(&t, "OOD AUROC (entropy)", "0.9000", "0.8000", "**0.9500**");
    expect_cells(&t, "OOD AUROC (MI)", "**0.8500**", "\xE2\x80\x94", "0.7000");
    expect_cells(&t, "Misclassification AUROC", "**0.8000**", "0.7500", "\xE2\x80\x94");
    expect_cells(&t, "PGD accuracy", "**0.2000**", "0.1000", "0.1500");
    /* (0.70 + 0.74) / 2 and (0.60 + 0.70) / 2; the odd job has no severity 3 */
    expect_cells(&t, "Shift accuracy (mean at severity 3)", "**0.7200**", "0.6500",
                 "\xE2\x80\x94");
    /* 5.5 ms is the column's largest: two decimals; CI in brackets */
    expect_cells(&t, "Latency p50 (ms)", "5.50 [5.00, 6.00]", "**1.20 [1.10, 1.30]**",
                 "\xE2\x80\x94");
    expect_cells(&t, "Throughput", "900", "**5000**", "\xE2\x80\x94");
    expect_cells(&t, "Load cold (ms)", "80.0", "**20.0**", "\xE2\x80\x94");
    expect_cells(&t, "Load warm (ms)", "9.00", "**2.00**", "\xE2\x80\x94");
    /* 60e6 / 2^20 = 57.2, 30e6 / 2^20 = 28.6, 45e6 / 2^20 = 42.9 */
    expect_cells(&t, "Peak RSS (MiB)", "57.2", "**28.6**", "42.9");
    /* 5386440 / 2^20 = 5.14, 1077288 / 2^20 = 1.03, 2000000 / 2^20 = 1.91 */
    expect_cells(&t, "Model in memory (MiB)", "5.14", "**1.03**", "1.91");
    /* map from its artifact row (1077288), ensemble stored (5386500) */
    expect_cells(&t, "Bundle on disk (MiB)", "5.14", "**1.03**", "\xE2\x80\x94");
    eb_free(md);

    /* LaTeX: booktabs rules, escaped specials, bold and dashes. */
    snprintf(path, sizeof path, "%s/tables.tex", out);
    tex = slurp(path, NULL);
    assert_non_null(strstr(tex, "\\toprule"));
    assert_non_null(strstr(tex, "\\midrule"));
    assert_non_null(strstr(tex, "\\bottomrule"));
    assert_non_null(strstr(tex, "\nsgld\\_v2 \\#1 \\& 50\\% \\{x\\} & prune:0.9 & mlp & 1 &"));
    assert_non_null(strstr(tex, "\\textbf{0.8800}"));
    assert_non_null(strstr(tex, "\\textbf{1.20 {[}1.10, 1.30{]}}"));
    assert_non_null(strstr(tex, " & ---"));
    assert_null(strstr(tex, "sgld_v2"));
    eb_free(tex);

    /* index.html: structure, links, plots, notes, provenance, escaping. */
    snprintf(path, sizeof path, "%s/index.html", out);
    html = slurp(path, NULL);
    check_html(out, html);
    for (size_t i = 0; i < N_ALL_PLOTS; i++) {
        char img[128];
        snprintf(img, sizeof img, "<img src=\"plots/%s.svg\"", all_plots[i]);
        assert_non_null(strstr(html, img));
    }
    assert_null(strstr(html, "gnuplot warned"));
    assert_non_null(strstr(html, "sgld_v2 #1 &amp; 50% {x}"));
    assert_non_null(strstr(html, "out of memory &lt;while&gt; training")); /* failed job */
    assert_non_null(strstr(html, "ece-15-equal-width-right-closed-v1"));
    assert_non_null(strstr(html, "fashion-mnist/test"));
    assert_non_null(strstr(html, "Test CPU @ 2GHz"));
    /* The odd job has no latency: the plots say so. */
    assert_non_null(strstr(html, "No latency samples for: odd/mlp/s1."));
    assert_non_null(strstr(html, "No reliability bins for: odd/mlp/s1."));
    assert_non_null(strstr(html, "<strong>0.8800</strong>"));
    eb_free(html);

    /* The shift mean computed by the report: map's (0.02 s + 0.03 s) / 2. */
    snprintf(path, sizeof path, "%s/plots/shift_ece.dat", out);
    dat = slurp(path, NULL);
    assert_non_null(strstr(dat, "map/mlp/s1, mean computed by the report over 2 corruptions;"
                                " severity ece\n1 0.025\n2 0.05\n3 0.075\n4 0.1\n5 0.125\n"));
    eb_free(dat);

    /* Pareto fronts against peak memory (MiB): accuracy map (28.6, 0.85)
     * and ensemble (57.2, 0.88) are on it, the odd job (42.9, 0.80) is
     * beaten by map; ECE (lower better) map (28.6, 0.05) and odd
     * (42.9, 0.02), which beats ensemble's (57.2, 0.02). */
    snprintf(path, sizeof path, "%s/plots/pareto_memory.dat", out);
    dat = slurp(path, NULL);
    assert_non_null(strstr(dat, "the Pareto front of index 0, by peak_rss\n"
                                "28.6102295 0.85\n57.220459 0.88\n\n"));
    assert_non_null(strstr(dat, "the Pareto front of index 4, by peak_rss\n"
                                "28.6102295 0.05\n42.9153442 0.02\n\n"));
    eb_free(dat);

    /* History: k-map in runs 1, 2, 3 (run indices 0, 1, 2). */
    snprintf(path, sizeof path, "%s/plots/history.dat", out);
    dat = slurp(path, NULL);
    assert_non_null(strstr(dat, "accuracy, job key k-map\n# run_index accuracy run_id started_at\n"
                                "0 0.8 1 \"2024-05-01T02:00:00Z\"\n"
                                "1 0.85 2 \"2024-05-02T02:00:00Z\"\n"
                                "2 0.86 3 \"2024-05-03T02:00:00Z\"\n"));
    eb_free(dat);
    rm_rf(out);
    unlink(db_path);
}

/* dir/name into out, checked. */
static void join(char *out, size_t cap, const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    assert_true(a + b + 2 <= cap);
    memcpy(out, dir, a);
    out[a] = '/';
    memcpy(out + a + 1, name, b + 1);
}

/* Lists the regular files under dir (recursively), sorted. */
static size_t list_files(const char *dir, const char *rel, char names[][320], size_t n,
                         size_t max)
{
    char path[4400];
    struct dirent **ents;
    int k;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    k = scandir(path, &ents, NULL, alphasort);
    assert_true(k >= 0);
    for (int i = 0; i < k; i++) {
        char sub[300];
        struct stat st;
        if (ents[i]->d_name[0] != '.') {
            snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", ents[i]->d_name);
            snprintf(path, sizeof path, "%s/%s", dir, sub);
            assert_int_equal(stat(path, &st), 0);
            if (S_ISDIR(st.st_mode)) {
                n = list_files(dir, sub, names, n, max);
            } else {
                assert_true(n < max);
                snprintf(names[n++], 320, "%s", sub);
            }
        }
        free(ents[i]);
    }
    free(ents);
    return n;
}

/* The same database gives the same files; the scripts, rerun by gnuplot
 * in plots/, reproduce the PNG and SVG byte for byte, and the PDF up to
 * its creation date (cairo stamps the current time; the report pins it). */
static void test_deterministic_and_rerun(void **state)
{
    char db_path[4096], a[4096], b[4096], cmd[8400];
    static char na[128][320], nb[128][320];
    size_t n, m;
    (void)state;
    scratch(db_path, sizeof db_path, "det.db");
    scratch(a, sizeof a, "det_a");
    scratch(b, sizeof b, "det_b");
    rm_rf(a);
    rm_rf(b);
    make_fixture(db_path);
    write_report(db_path, a, NULL);
    write_report(db_path, b, NULL);
    n = list_files(a, "", na, 0, 128);
    m = list_files(b, "", nb, 0, 128);
    assert_int_equal(n, m);
    assert_int_equal(n, 3 + 5 * N_ALL_PLOTS); /* html, md, tex + 5 per plot */
    for (size_t i = 0; i < n; i++) {
        char pa[8400], pb[8400], ha[65], hb[65];
        assert_string_equal(na[i], nb[i]);
        join(pa, sizeof pa, a, na[i]);
        join(pb, sizeof pb, b, nb[i]);
        file_sha(pa, ha);
        file_sha(pb, hb);
        if (strcmp(ha, hb) != 0) {
            print_error("%s differs between two reports of one database\n", na[i]);
            fail();
        }
    }
    /* Rerun three scripts by hand, as an author would, then compare with
     * the other report. */
    {
        static const char *const rerun[] = {"reliability", "pareto_latency", "latency"};
        for (size_t i = 0; i < 3; i++) {
            char pdf[4400];
            snprintf(cmd, sizeof cmd, "cd '%s/plots' && rm -f %s.png %s.svg %s.pdf &&"
                                      " gnuplot %s.gp",
                     a, rerun[i], rerun[i], rerun[i], rerun[i]);
            assert_int_equal(system(cmd), 0);
            snprintf(pdf, sizeof pdf, "%s/plots/%s.pdf", a, rerun[i]);
            assert_int_equal(rp_pdf_set_date(pdf, "20240502020000", NULL), EB_OK);
            for (int e = 0; e < 3; e++) {
                static const char *const ext[] = {"png", "svg", "pdf"};
                char pa[4400], pb[4400], ha[65], hb[65];
                snprintf(pa, sizeof pa, "%s/plots/%s.%s", a, rerun[i], ext[e]);
                snprintf(pb, sizeof pb, "%s/plots/%s.%s", b, rerun[i], ext[e]);
                file_sha(pa, ha);
                file_sha(pb, hb);
                if (strcmp(ha, hb) != 0) {
                    print_error("rerunning %s.gp changed %s.%s\n", rerun[i], rerun[i], ext[e]);
                    fail();
                }
            }
        }
        /* One format only, through the script's variable. */
        snprintf(cmd, sizeof cmd,
                 "cd '%s/plots' && rm -f ood_roc.svg ood_roc.png && gnuplot -e \"formats='svg'\""
                 " ood_roc.gp && test -f ood_roc.svg && test ! -f ood_roc.png",
                 a);
        assert_int_equal(system(cmd), 0);
    }
    rm_rf(a);
    rm_rf(b);
    unlink(db_path);
}

/* ---- sparse and refused databases ------------------------------------ */

/* One run, one job, accuracy and two shift curves that share no
 * severity: every plot but the shift one is skipped with a note, its mean
 * panel says "no data", and the files an earlier report left for the
 * skipped plots are removed. */
static void test_sparse_database(void **state)
{
    char db_path[4096], out[4096], path[4200], *html, *md;
    sqlite3 *db;
    eb_tmpfile t;
    (void)state;
    scratch(db_path, sizeof db_path, "sparse.db");
    scratch(out, sizeof out, "sparse");
    rm_rf(out);
    db = schema_db(db_path);
    run_row(db, 1, "2024-05-01T02:00:00Z", "2024-05-01T03:00:00Z");
    job_row(db, 1, 1, "k", "map/mlp/s1", "map", "", 1, 0, "done", NULL);
    metric(db, 1, "quality", "accuracy", "", 0.9, NAN, NAN, 1, "");
    {
        static const double s12[] = {1, 2}, s34[] = {3, 4}, e[] = {0.1, 0.2};
        curve(db, 1, "shift", "corruption=rotation,metric=ece", s12, e, 2);
        curve(db, 1, "shift", "corruption=noise,metric=ece", s34, e, 2);
    }
    sqlite3_close(db);
    /* a stale plot of an earlier report */
    snprintf(path, sizeof path, "%s/plots", out);
    assert_int_equal(eb_mkdirs(path, NULL), EB_OK);
    snprintf(path, sizeof path, "%s/plots/ood_roc.png", out);
    assert_int_equal(eb_tmpfile_open(&t, path, NULL), EB_OK);
    fputs("old", t.fp);
    assert_int_equal(eb_tmpfile_commit(&t, NULL), EB_OK);

    write_report(db_path, out, NULL);
    assert_false(eb_file_exists(path));
    snprintf(path, sizeof path, "%s/index.html", out);
    html = slurp(path, NULL);
    check_html(out, html);
    {
        const char *img = strstr(html, "<img");
        assert_non_null(img);
        assert_true(strncmp(img, "<img src=\"plots/shift_ece.svg\"", 30) == 0);
        assert_null(strstr(img + 1, "<img"));
    }
    assert_null(strstr(html, "gnuplot warned"));
    assert_non_null(strstr(html, "Skipped: no reliability_bins rows"));
    assert_non_null(strstr(html, "Skipped: no curves of kind &#39;roc&#39;"));
    assert_non_null(strstr(html, "Skipped: no latency_samples"));
    assert_non_null(strstr(html, "Skipped: the history needs a metric measured in at least"
                                 " two runs"));
    eb_free(html);
    snprintf(path, sizeof path, "%s/plots/shift_ece.gp", out);
    html = slurp(path, NULL);
    assert_non_null(strstr(html, "set title 'mean over corruptions'\n"
                                 "    set label 1 'no data'"));
    eb_free(html);
    snprintf(path, sizeof path, "%s/plots/shift_ece.png", out);
    assert_true(eb_file_exists(path));
    snprintf(path, sizeof path, "%s/tables.md", out);
    md = slurp(path, NULL);
    /* A single value is not marked best. */
    assert_non_null(strstr(md, "| map | none | mlp | 1 | cpu | 1 | 0.9000 |"));
    eb_free(md);
    rm_rf(out);
    unlink(db_path);
}

/* The sparsity plot: one line per pruning recipe (the chain without its
 * numeric values), points in sparsity order, each line starting at the
 * unpruned job of the same method label; unpruned chains are not drawn. */
static void test_sparsity_plot(void **state)
{
    char db_path[4096], out[4096], path[4200], *dat;
    const char *ft, *os, *p0, *p5, *p9;
    sqlite3 *db;
    (void)state;
    scratch(db_path, sizeof db_path, "sparsity.db");
    scratch(out, sizeof out, "sparsity");
    rm_rf(out);
    db = schema_db(db_path);
    run_row(db, 1, "2024-05-01T02:00:00Z", "2024-05-01T03:00:00Z");
    job_row(db, 1, 1, "k1", "map/mlp/s1", "map", "", 1, 0, "done", NULL);
    job_row(db, 2, 1, "k2", "ft90/mlp/s1", "map", "map -> ft:0.9", 1, 0, "done", NULL);
    job_row(db, 3, 1, "k3", "ft50/mlp/s1", "map", "map -> ft:0.5", 1, 0, "done", NULL);
    job_row(db, 4, 1, "k4", "os90/mlp/s1", "map", "map -> os:0.9", 1, 0, "done", NULL);
    job_row(db, 5, 1, "k5", "int8/mlp/s1", "map", "map -> quantize:int8", 1, 0, "done", NULL);
    for (int j = 1; j <= 5; j++) {
        static const double sp[] = {0, 0.9, 0.5, 0.9, 0}, acc[] = {0.90, 0.89, 0.905, 0.3, 0.9};
        metric(db, j, "compression", "sparsity", "", sp[j - 1], NAN, NAN, 1, "");
        metric(db, j, "quality", "accuracy", "", acc[j - 1], NAN, NAN, 1, "");
    }
    sqlite3_close(db);
    write_report(db_path, out, NULL);
    snprintf(path, sizeof path, "%s/plots/sparsity.dat", out);
    dat = slurp(path, NULL);
    ft = strstr(dat, "# index 0: Accuracy against sparsity, map -> ft (mlp, s1)\n");
    os = strstr(dat, "# index 1: Accuracy against sparsity, map -> os (mlp, s1)\n");
    assert_non_null(ft);
    assert_non_null(os);
    p0 = strstr(ft, "\n0 0.9 ");
    p5 = strstr(ft, "\n0.5 0.905 ");
    p9 = strstr(ft, "\n0.9 0.89 ");
    assert_true(p0 && p5 && p9 && p0 < p5 && p5 < p9 && p9 < os);
    assert_non_null(strstr(os, "\n0 0.9 "));
    assert_non_null(strstr(os, "\n0.9 0.3 "));
    assert_null(strstr(dat, "quantize"));
    eb_free(dat);
    snprintf(path, sizeof path, "%s/plots/sparsity.png", out);
    assert_true(eb_file_exists(path));
    rm_rf(out);
    unlink(db_path);
}

/* The runtime benchmark's run (suite bench-runtime): the `runtime` plot
 * draws one line per strategy against S, the roofline bound and PyTorch's
 * fastest variant; the runtime table lists every row but the machine's. */
static void test_runtime_plot(void **state)
{
    char db_path[4096], out[4096], path[4200], *dat, *md, *html;
    const char *loop, *bound, *torch;
    sqlite3 *db;
    (void)state;
    scratch(db_path, sizeof db_path, "runtime.db");
    scratch(out, sizeof out, "runtime");
    rm_rf(out);
    db = schema_db(db_path);
    run_row(db, 1, "2024-05-01T02:00:00Z", "2024-05-01T03:00:00Z");
    db_exec(db, "UPDATE runs SET suite = 'bench-runtime' WHERE id = 1");
    job_row(db, 1, 1, "k1", "runtime/mlp-s1/loop/edgebayes/t2", "bench", "", 1, 0, "done", NULL);
    job_row(db, 2, 1, "k2", "runtime/mlp-s10/loop/edgebayes/t2", "bench", "", 10, 0, "done",
            NULL);
    job_row(db, 3, 1, "k3", "runtime/mlp-s10/bmm/pytorch/t2", "bench", "", 10, 0, "done", NULL);
    job_row(db, 4, 1, "k4", "runtime/mlp-s10/loop/pytorch/t2", "bench", "", 10, 0, "done", NULL);
    job_row(db, 5, 1, "k5", "runtime/machine/roofline/edgebayes/t2", "bench", "", 0, 0, "done",
            NULL);
    job_row(db, 6, 1, "k6", "runtime/mlp-s100-int8/loop/edgebayes/t2", "bench", "", 100, 0,
            "done", NULL);
    metric(db, 1, "latency", "p50", "", 0.0001, NAN, NAN, 0, "s");
    metric(db, 1, "roofline", "bound_seconds", "", 0.0002, NAN, NAN, 0, "s");
    metric(db, 1, "roofline", "memory_bound_seconds", "", 0.0002, NAN, NAN, 0, "s");
    metric(db, 1, "roofline", "compute_bound_seconds", "", 0.00001, NAN, NAN, 0, "s");
    metric(db, 2, "latency", "p50", "", 0.003, NAN, NAN, 0, "s");
    metric(db, 2, "roofline", "bound_seconds", "", 0.002, NAN, NAN, 0, "s");
    metric(db, 2, "roofline", "ratio_to_bound", "", 1.5, NAN, NAN, 0, "");
    metric(db, 3, "latency", "p50", "", 0.004, NAN, NAN, 0, "s");
    metric(db, 4, "latency", "p50", "", 0.005, NAN, NAN, 0, "s");
    metric(db, 5, "machine", "read_bandwidth", "", 1e10, NAN, NAN, 1, "bytes/s");
    metric(db, 5, "machine", "peak_flops", "", 5e10, NAN, NAN, 1, "flops/s");
    metric(db, 6, "latency", "p50", "", 0.007, NAN, NAN, 0, "s");
    sqlite3_close(db);
    write_report(db_path, out, NULL);

    snprintf(path, sizeof path, "%s/plots/runtime.dat", out);
    dat = slurp(path, NULL);
    loop = strstr(dat, "# index 0: mlp, mlp, edgebayes strategy loop\n# S median_ms\n1 0.1\n10 3\n");
    bound = strstr(dat, "# index 1: mlp, mlp, roofline bound\n# S bound_ms\n1 0.2\n10 2\n");
    torch = strstr(dat, "# index 2: mlp, mlp, pytorch fastest variant\n# S median_ms variant\n"
                        "10 4 \"bmm\"\n");
    assert_true(loop && bound && torch && loop < bound && bound < torch);
    /* the int8 case is its own family, a point of its own */
    assert_non_null(strstr(dat, "# index 3: mlp, mlp-int8, edgebayes strategy loop\n"
                                "# S median_ms\n100 7\n"));
    assert_null(strstr(dat, "machine"));
    eb_free(dat);
    snprintf(path, sizeof path, "%s/plots/runtime.png", out);
    assert_true(eb_file_exists(path));

    snprintf(path, sizeof path, "%s/tables.md", out);
    md = slurp(path, NULL);
    assert_non_null(strstr(md, "## Runtime benchmark"));
    assert_non_null(strstr(md, "| mlp-s1 | 1 | edgebayes | loop | 0.1 | \xE2\x80\x94 | 0.2 | memory"));
    assert_non_null(strstr(md, "| mlp-s10 | 10 | edgebayes | loop | 3 | \xE2\x80\x94 | 2 |  | 1.5"));
    assert_non_null(strstr(md, "| mlp-s10 | 10 | pytorch | bmm | 4 |"));
    assert_null(strstr(md, "| machine"));
    eb_free(md);
    snprintf(path, sizeof path, "%s/index.html", out);
    html = slurp(path, NULL);
    assert_non_null(strstr(html, "<section id=\"runtime\">"));
    assert_non_null(strstr(html, "read bandwidth 10 GB/s, peak 50 GFLOP/s"));
    eb_free(html);
    rm_rf(out);
    unlink(db_path);
}

static void expect_failure(const char *db, const char *out, const eb_report_options *opt,
                           eb_status code, const char *needle)
{
    eb_error err;
    eb_error_clear(&err);
    assert_int_equal(eb_report_write(db, out, opt, &err), code);
    if (!strstr(err.msg, needle)) {
        print_error("message '%s' lacks '%s'\n", err.msg, needle);
        fail();
    }
}

static void test_refusals(void **state)
{
    char db_path[4096], out[4096];
    sqlite3 *db;
    FILE *fp;
    (void)state;
    scratch(db_path, sizeof db_path, "refuse.db");
    scratch(out, sizeof out, "refuse");

    /* empty: the schema and no runs */
    sqlite3_close(schema_db(db_path));
    expect_failure(db_path, out, NULL, EB_ERR_NOTFOUND, "holds no runs");
    /* newer schema */
    db = schema_db(db_path);
    db_exec(db, "PRAGMA user_version = 99");
    sqlite3_close(db);
    expect_failure(db_path, out, NULL, EB_ERR_UNSUPPORTED, "schema version 99");
    /* another program's SQLite file */
    db = schema_db(db_path);
    db_exec(db, "PRAGMA application_id = 42");
    sqlite3_close(db);
    expect_failure(db_path, out, NULL, EB_ERR_FORMAT, "application_id is 42");
    /* an SQLite file without our schema */
    unlink(db_path);
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    db_exec(db, "CREATE TABLE x(a)");
    sqlite3_close(db);
    expect_failure(db_path, out, NULL, EB_ERR_FORMAT, "schema version (PRAGMA user_version) is 0");
    /* not SQLite at all */
    fp = fopen(db_path, "w");
    assert_non_null(fp);
    fputs("this is not a database, just some text long enough to look like a file header\n",
          fp);
    fclose(fp);
    expect_failure(db_path, out, NULL, EB_ERR_FORMAT, "not a readable SQLite database");
    unlink(db_path);
    expect_failure(db_path, out, NULL, EB_ERR_NOTFOUND, "does not exist");
    expect_failure(NULL, out, NULL, EB_ERR_ARG, "no results database");

    /* a bad option or run, and a missing or failing gnuplot */
    make_fixture(db_path);
    {
        eb_report_options opt = {0};
        const char *runs[] = {"42"};
        const char *hist[] = {"accuracy", "speed"};
        opt.runs = runs;
        opt.n_runs = 1;
        expect_failure(db_path, out, &opt, EB_ERR_NOTFOUND, "run '42' matches no run");
        memset(&opt, 0, sizeof opt);
        opt.history = hist;
        opt.n_history = 2;
        expect_failure(db_path, out, &opt, EB_ERR_ARG, "history metric 'speed'");
        memset(&opt, 0, sizeof opt);
        opt.gnuplot = "edgebayes-no-such-gnuplot";
        expect_failure(db_path, out, &opt, EB_ERR_NOTFOUND, "was not found on PATH");
        opt.gnuplot = "/nonexistent/gnuplot";
        expect_failure(db_path, out, &opt, EB_ERR_NOTFOUND, "'/nonexistent/gnuplot'");
        /* `false` exits 1: the report fails naming the script */
        opt.gnuplot = "false";
        expect_failure(db_path, out, &opt, EB_ERR_IO, "reliability.gp (exit status 1)");
    }
    rm_rf(out);
    unlink(db_path);
}

/* A database file nobody may write (and in WAL mode, as a results store
 * may leave it) is read all the same: the connection is read-only. */
static void test_read_only_file(void **state)
{
    char db_path[4096], out[4096], path[4200];
    sqlite3 *db;
    (void)state;
    scratch(db_path, sizeof db_path, "ro.db");
    scratch(out, sizeof out, "ro");
    rm_rf(out);
    make_fixture(db_path);
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    db_exec(db, "PRAGMA journal_mode = WAL");
    sqlite3_close(db);
    assert_int_equal(chmod(db_path, 0444), 0);
    {
        const char *runs[] = {"1"};
        eb_report_options opt = {0};
        opt.runs = runs;
        opt.n_runs = 1;
        opt.title = "Read-only <check>";
        write_report(db_path, out, &opt);
    }
    snprintf(path, sizeof path, "%s/index.html", out);
    {
        char *html = slurp(path, NULL);
        assert_non_null(strstr(html, "<h1>Read-only &lt;check&gt;</h1>"));
        assert_non_null(strstr(html, "Run #1"));
        eb_free(html);
    }
    chmod(db_path, 0644);
    rm_rf(out);
    unlink(db_path);
    snprintf(path, sizeof path, "%s-wal", db_path);
    unlink(path);
    snprintf(path, sizeof path, "%s-shm", db_path);
    unlink(path);
}

static void test_column_api(void **state)
{
    (void)state;
    assert_int_equal(eb_report_column_count(), RP_N_COLUMNS);
    assert_string_equal(eb_report_column_key(0), "accuracy");
    assert_string_equal(eb_report_column_heading(RP_COL_LATENCY), "Latency p50");
    assert_null(eb_report_column_key(RP_N_COLUMNS));
    for (size_t i = 0; i < RP_N_COLUMNS; i++)
        for (size_t j = i + 1; j < RP_N_COLUMNS; j++)
            assert_true(strcmp(eb_report_column_key(i), eb_report_column_key(j)) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pareto_front),
        cmocka_unit_test(test_sparsity_plot),
        cmocka_unit_test(test_runtime_plot),
        cmocka_unit_test(test_mean_curve),
        cmocka_unit_test(test_mark_best),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_context_parsing),
        cmocka_unit_test(test_column_api),
        cmocka_unit_test(test_run_selection),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_full_report),
        cmocka_unit_test(test_deterministic_and_rerun),
        cmocka_unit_test(test_sparse_database),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_read_only_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
