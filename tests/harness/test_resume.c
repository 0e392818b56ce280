/* test_resume.c: a run killed with SIGKILL mid-suite: the database opens
 * cleanly (integrity check), holds every finished job exactly once with
 * all its measurements, and rerunning the same command completes the rest
 * under the same run without duplicates or retraining cached bundles.
 * Kills at several points: during training, during evaluation, between
 * jobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/eb_io.h"

static char dir[512];

static const char suite[] =
    "[suite]\nname = resume-test\nseeds = 1, 2\narchs = mlp\nfacets = quality, calibration, "
    "ood, latency, storage\n"
    "[data]\ntest_limit = 300\nood_limit = 300\n"
    "[evaluation]\nbootstrap = 10\n"
    "[device]\nthreads = 1\nlatency_warmup = 2\nlatency_min_queries = 20\n"
    "latency_min_seconds = 0.05\n"
    "[method map]\nepochs = 1\n"
    "[method ensemble]\nepochs = 1\nsamples = 2\n";

/* Starts `edgebayes run` and SIGKILLs it after delay seconds (0: let it
 * finish). Returns 1 if it was killed. */
static int run_and_kill(const char *db, const char *cache_name, double delay)
{
    pid_t pid;
    fflush(stdout); /* or the child flushes our buffered output too */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char suite_path[700], cache[700];
        snprintf(suite_path, sizeof suite_path, "%s/suite.ini", dir);
        snprintf(cache, sizeof cache, "%s/%s", dir, cache_name);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(127);
        execl(EB_CLI_PATH, EB_CLI_PATH, "run", suite_path, "--db", db, "--cache", cache,
              "--quiet", (char *)NULL);
        _exit(127);
    }
    if (delay > 0) {
        struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
        int status;
        nanosleep(&ts, NULL);
        if (waitpid(pid, &status, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 1;
        }
        return 0;
    } else {
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        return 0;
    }
}

static long query_long(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Integrity, no duplicate or partial jobs; returns the done job count. */
static long check_db(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long jobs;
    if (!eb_file_exists(path))
        return 0; /* killed before the database was created */
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    if (query_long(db, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'") == 0) {
        sqlite3_close(db);
        return 0;
    }
    assert_int_equal(query_long(db, "SELECT count(*) FROM (SELECT key FROM jobs GROUP BY run_id, "
                                    "key HAVING count(*) > 1)"),
                     0);
    /* every done job has its measurements: accuracy and latency samples */
    assert_int_equal(query_long(db, "SELECT count(*) FROM jobs j WHERE status = 'done' AND NOT "
                                    "EXISTS (SELECT 1 FROM metrics m WHERE m.job_id = j.id AND "
                                    "m.name = 'accuracy')"),
                     0);
    assert_int_equal(query_long(db, "SELECT count(*) FROM jobs j WHERE status = 'done' AND NOT "
                                    "EXISTS (SELECT 1 FROM latency_samples s WHERE s.job_id = "
                                    "j.id)"),
                     0);
    jobs = query_long(db, "SELECT count(*) FROM jobs WHERE status = 'done'");
    sqlite3_close(db);
    return jobs;
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_kill_and_resume(void **state)
{
    /* kill points as fractions of an uninterrupted run's duration: during
     * the first training, mid-suite, near the end; each with an empty
     * bundle cache, so training is interrupted too */
    static const double fractions[] = {0.15, 0.5, 0.85};
    char db[700], cache[64];
    double full, t0;
    (void)state;
    snprintf(db, sizeof db, "%s/full.db", dir);
    t0 = now_sec();
    run_and_kill(db, "cache-full", 0);
    full = now_sec() - t0;
    assert_int_equal(check_db(db), 4);
    printf("an uninterrupted run takes %.2f s\n", full);
    for (size_t k = 0; k < sizeof fractions / sizeof fractions[0]; k++) {
        long before, after;
        sqlite3 *h;
        int killed;
        snprintf(db, sizeof db, "%s/r%zu.db", dir, k);
        snprintf(cache, sizeof cache, "cache%zu", k);
        killed = run_and_kill(db, cache, fractions[k] * full);
        before = check_db(db);
        printf("kill at %.0f%% (%.2f s): %s, %ld of 4 jobs done before\n", 100 * fractions[k],
               fractions[k] * full, killed ? "killed" : "it had finished", before);
        if (!killed)
            continue; /* nothing to resume; the timing moved (noisy machine) */
        run_and_kill(db, cache, 0); /* the rerun completes */
        after = check_db(db);
        assert_int_equal(after, 4);
        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        /* the resumed run stays one run, now finished */
        assert_int_equal(query_long(h, "SELECT count(*) FROM runs"), 1);
        assert_int_equal(query_long(h, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"),
                         1);
        sqlite3_close(h);
    }
}

static int setup(void **state)
{
    eb_error err;
    char path[700];
    FILE *fp;
    (void)state;
    snprintf(dir, sizeof dir, "%s/resume_%d", EB_TEST_BINARY_DIR, (int)getpid());
    if (eb_mkdirs(dir, &err) != EB_OK)
        return -1;
    snprintf(path, sizeof path, "%s/suite.ini", dir);
    fp = fopen(path, "w");
    if (!fp)
        return -1;
    fputs(suite, fp);
    fclose(fp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_and_resume),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
