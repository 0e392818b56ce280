/* test_crash.c: a writer killed with SIGKILL at a random moment leaves a
 * database that opens cleanly, passes integrity_check and holds every
 * committed job exactly once with all its measurements; a rerun resumes
 * the same run and adds only the missing jobs; a killed shard (its WAL
 * not yet checkpointed) merges as it is.
 *
 * A child process (fork) opens the database and writes jobs in a loop, as
 * `edgebayes run` does; the parent kills it after a delay drawn from a
 * seeded stream, checks the file, and starts the next child. The delays
 * are fractions (1% to 15%) of the time an uninterrupted writer takes on
 * this machine, measured first, so the kills land mid-run whether fsync
 * is slow or nearly free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "methods/nn/eb_rng.h"
#include "results/eb_results.h"

#define DIR EB_TEST_BINARY_DIR "/"
#define DB DIR "crash.db"
#define MERGED DIR "crash_merged.db"
#define CALIBRATE DIR "crash_calibrate.db"
#define NJOBS 150
#define NMETRICS 12
#define NSAMPLES 64
#define ROUNDS 8
#define EB_STR_(x) #x
#define EB_STR(x) EB_STR_(x)

static void remove_db(const char *path)
{
    char p[1024];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static void provenance(eb_results_provenance *p)
{
    memset(p, 0, sizeof *p);
    p->label = "crash";
    p->suite = "crash-test";
    p->suite_sha256 = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    p->version = "0.1.0";
    p->git_commit = "feedbeef";
    p->compiler = "gcc";
    p->cflags = "-O3";
    p->cpu_model = "cpu";
    p->cores = 1;
    p->host = "host";
    p->libraries = "{}";
}

/* The child: resume (or begin) the run, then write every job not yet
 * done, each in its own transaction, and finish the run. Returns an exit
 * status; messages go to stderr. */
static int writer(const char *path)
{
    eb_results *db = NULL;
    eb_results_provenance p;
    eb_results_metric m[NMETRICS];
    double lat[NSAMPLES];
    char names[NMETRICS][16];
    eb_error err;
    int64_t run;
    int resumed;

    provenance(&p);
    if (eb_results_open(path, &db, &err) != EB_OK ||
        eb_results_run_resume_or_begin(db, &p, &run, &resumed, &err) != EB_OK)
        goto fail;
    memset(m, 0, sizeof m);
    for (int i = 0; i < NMETRICS; i++) {
        snprintf(names[i], sizeof names[i], "m%02d", i);
        m[i].facet = "quality";
        m[i].name = names[i];
        m[i].higher_is_better = 1;
    }
    for (int k = 0; k < NJOBS; k++) {
        eb_results_scope scope = {run, NULL, NULL};
        eb_results_job_def d;
        char key[32];
        int found;
        snprintf(key, sizeof key, "job%03d", k);
        if (eb_results_job_done(db, &scope, key, &found, &err) != EB_OK)
            goto fail;
        if (found)
            continue;
        memset(&d, 0, sizeof d);
        d.key = d.name = key;
        d.method = "map";
        d.arch = "mlp";
        d.device = "cpu";
        d.seed = (uint64_t)k;
        for (int i = 0; i < NMETRICS; i++)
            m[i].value = k + i / 100.0;
        for (int i = 0; i < NSAMPLES; i++)
            lat[i] = 1e-3 * (k + 1) + 1e-6 * i;
        if (eb_results_job_begin(db, run, &d, NULL, &err) != EB_OK ||
            eb_results_job_metrics(db, m, NMETRICS, &err) != EB_OK ||
            eb_results_job_latency(db, "single", lat, NSAMPLES, &err) != EB_OK ||
            eb_results_job_commit(db, 0.001 * k, &err) != EB_OK)
            goto fail;
    }
    if (eb_results_run_finish(db, run, &err) != EB_OK)
        goto fail;
    eb_results_close(db);
    return 0;
fail:
    fprintf(stderr, "crash writer: %s\n", err.msg);
    eb_results_close(db);
    return 1;
}

static int64_t q_int(sqlite3 *s, const char *q)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(s, q, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", q, sqlite3_errmsg(s));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Opens the file as the store would after a crash and checks it; returns
 * the number of jobs committed. */
static int64_t check_db(void)
{
    eb_results *db = NULL;
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    eb_error err;
    int64_t jobs;

    if (eb_results_open(DB, &db, &err) != EB_OK)
        fail_msg("reopening after SIGKILL: %s", err.msg);
    eb_results_close(db);
    assert_int_equal(sqlite3_open_v2(DB, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(s, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_true(q_int(s, "SELECT count(*) FROM runs") <= 1); /* resumed, never begun twice */
    jobs = q_int(s, "SELECT count(*) FROM jobs");
    assert_int_equal(q_int(s, "SELECT count(DISTINCT key) FROM jobs"), jobs);
    /* No partial job: each committed job has every measurement. */
    assert_int_equal(q_int(s, "SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM metrics "
                              "m WHERE m.job_id = j.id) <> " EB_STR(NMETRICS)
                              " OR (SELECT count(*) FROM latency_samples l WHERE l.job_id = "
                              "j.id) <> " EB_STR(NSAMPLES)),
                     0);
    assert_int_equal(q_int(s, "SELECT count(*) FROM metrics"), jobs * NMETRICS);
    /* Jobs are written in key order, so the committed ones are a prefix. */
    if (jobs > 0) {
        char q[128];
        snprintf(q, sizeof q, "SELECT count(*) FROM jobs WHERE key < 'job%03d'", (int)jobs);
        assert_int_equal(q_int(s, q), jobs);
    }
    sqlite3_close(s);
    return jobs;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs a writer to completion on path; returns its wall time (s). */
static double full_run(const char *path)
{
    int status = 0;
    double t0 = now_s();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(writer(path));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return now_s() - t0;
}

static int wal_present(void)
{
    return access(DB "-wal", F_OK) == 0;
}

static void test_sigkill_and_resume(void **state)
{
    eb_rng r;
    int64_t prev = 0, jobs = 0;
    int killed = 0, merged_wal = 0;
    double full_us;
    (void)state;

    remove_db(CALIBRATE);
    full_us = 1e6 * full_run(CALIBRATE);
    remove_db(CALIBRATE);
    print_message("an uninterrupted writer takes %.0f us\n", full_us);
    remove_db(DB);
    eb_rng_seed(&r, 2024, 0xC4A5);
    for (int round = 0; round < ROUNDS; round++) {
        struct timespec delay;
        int status = 0;
        long us = (long)(full_us * (0.01 + 0.14 * eb_rng_uniform(&r)));
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(writer(DB));
        delay.tv_sec = us / 1000000;
        delay.tv_nsec = (us % 1000000) * 1000;
        nanosleep(&delay, NULL);
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status)) {
            /* It finished before the signal: nothing left to resume. */
            assert_int_equal(WEXITSTATUS(status), 0);
            print_message("round %d: writer finished within %ld us\n", round, us);
            break;
        }
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        killed++;
        /* A killed shard merges as it is, WAL and all, read-only. (A
         * child killed before its schema committed leaves an empty file,
         * which merge rightly refuses.) */
        if (wal_present() && !merged_wal) {
            const char *in[1] = {DB};
            eb_error err;
            eb_status st;
            remove_db(MERGED);
            st = eb_results_merge(MERGED, in, 1, NULL, &err);
            assert_true(wal_present()); /* the input was not checkpointed */
            jobs = check_db();
            if (st != EB_OK) {
                if (jobs > 0 || !strstr(err.msg, "is empty"))
                    fail_msg("merging a killed shard with %lld jobs: %s", (long long)jobs,
                             err.msg);
            } else {
                sqlite3 *s;
                assert_int_equal(sqlite3_open_v2(MERGED, &s, SQLITE_OPEN_READONLY, NULL),
                                 SQLITE_OK);
                assert_int_equal(q_int(s, "SELECT count(*) FROM jobs"), jobs);
                assert_int_equal(q_int(s, "SELECT count(*) FROM latency_samples"),
                                 jobs * NSAMPLES);
                sqlite3_close(s);
                merged_wal = jobs > 0;
            }
        } else {
            jobs = check_db();
        }
        print_message("round %d: killed after %ld us with %lld jobs committed\n", round, us,
                      (long long)jobs);
        assert_true(jobs >= prev);
        prev = jobs;
    }
    assert_true(killed >= 2);

    /* Resume to the end: exactly the missing jobs are added, in one run. */
    {
        sqlite3 *s;
        full_run(DB);
        assert_int_equal(check_db(), NJOBS);
        assert_int_equal(sqlite3_open_v2(DB, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(q_int(s, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"), 1);
        assert_int_equal(q_int(s, "SELECT count(*) FROM latency_samples"), NJOBS * NSAMPLES);
        sqlite3_close(s);
    }
    /* A second rerun finds a finished run: it begins a new one, and the
     * scope of job_done decides what it skips (here: its own run). */
    {
        eb_results *db;
        eb_results_provenance p;
        int64_t run;
        int resumed;
        provenance(&p);
        assert_int_equal(eb_results_open(DB, &db, NULL), EB_OK);
        assert_int_equal(eb_results_run_resumable(db, &p, &run, NULL), EB_OK);
        assert_int_equal(run, 0);
        assert_int_equal(eb_results_run_resume_or_begin(db, &p, &run, &resumed, NULL), EB_OK);
        assert_int_equal(resumed, 0);
        eb_results_close(db);
    }
    print_message("%d kills; killed-shard merge exercised: %s\n", killed,
                  merged_wal ? "yes" : "no");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_and_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
