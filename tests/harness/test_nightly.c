/* test_nightly.c: the nightly-CI check through the CLI: three runs of a
 * small latency suite in one database (a base, a rerun of the same build,
 * and one with the CPU device's testing hook EB_INJECT_SLOWDOWN=0.2 (1.0 under
 * AddressSanitizer) slowing every prediction); `edgebayes compare` must exit 1 for
 * the slowed run and 0 for the rerun. Machine noise can push one rerun
 * past the thresholds now and then (bench/compare_noise.sh measures how
 * often; a change in the machine's load between two runs is the usual
 * cause), so each pair is measured back to back and the rerun comparison
 * gets one retry with a fresh pair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/eb_io.h"

static char dir[512];

static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int status;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char suite[] =
    "[suite]\nname = nightly-test\nseeds = 1\narchs = mlp\nfacets = quality, latency\n"
    "[data]\ntest_limit = 200\nood_limit = 200\n"
    "[evaluation]\nbootstrap = 20\n"
    "[device]\nthreads = 1\nlatency_warmup = 50\nlatency_min_queries = 400\n"
    "latency_min_seconds = 0.5\n"
    "[method ensemble]\nepochs = 1\nsamples = 3\n";

static int run_labelled(const char *label, const char *env)
{
    return sh("%s %s run %s/suite.ini --db %s/r.db --cache %s/cache --label %s --quiet "
              "> /dev/null",
              env, EB_CLI_PATH, dir, dir, dir, label);
}

/* The injected slowdown: 20% in the release build, the nightly target;
 * under AddressSanitizer, whose run-to-run latency noise reaches ~20% by
 * itself (see below), 100%, so the test still shows a slowdown is caught
 * rather than racing the sanitizer's noise. */
#if defined(__SANITIZE_ADDRESS__)
#define SLOWDOWN "EB_INJECT_SLOWDOWN=1.0"
#else
#define SLOWDOWN "EB_INJECT_SLOWDOWN=0.2"
#endif

static void test_compare_flags_slowdown_not_rerun(void **state)
{
    int rc;
    (void)state;
    /* base and its rerun back to back, so a change in the machine's load
     * between them is unlikely; the slowed run last */
    assert_int_equal(run_labelled("base", ""), 0);
    assert_int_equal(run_labelled("rerun1", ""), 0);
    assert_int_equal(run_labelled("slow", SLOWDOWN), 0);
    rc = sh("%s compare --db %s/r.db base slow > %s/slow.txt", EB_CLI_PATH, dir, dir);
    assert_int_equal(rc, 1);
    assert_int_equal(sh("grep -q 'REGRESSION' %s/slow.txt", dir), 0);
    assert_int_equal(sh("grep -q 'latency/p50' %s/slow.txt", dir), 0);
    for (int attempt = 1; attempt <= 2; attempt++) {
        char base[32], label[32];
        if (attempt > 1) {
            /* the retry measures a fresh pair, again back to back */
            snprintf(base, sizeof base, "base%d", attempt);
            assert_int_equal(run_labelled(base, ""), 0);
        } else {
            snprintf(base, sizeof base, "base");
        }
        snprintf(label, sizeof label, "rerun%d", attempt);
        if (attempt > 1)
            assert_int_equal(run_labelled(label, ""), 0);
        rc = sh("%s compare --db %s/r.db %s %s > %s/rerun.txt", EB_CLI_PATH, dir, base, label,
                dir);
        printf("compare %s %s: exit %d\n", base, label, rc);
        if (rc == 0)
            break;
        sh("grep -E 'REGRESSION|worse' %s/rerun.txt", dir);
    }
#if defined(__SANITIZE_ADDRESS__)
    /* Under AddressSanitizer two identical runs' single-input latencies
     * differ by up to ~20% (shadow memory and the allocator's quarantine
     * move with the heap's history; measured in CI), far beyond the 5%
     * effect compare looks for, so only the release build asserts that a
     * rerun is not flagged; here the comparison must still run cleanly. */
    assert_true(rc == 0 || rc == 1);
#else
    assert_int_equal(rc, 0);
#endif
    /* JSON output parses as one object with the verdict */
    assert_int_equal(sh("%s compare --db %s/r.db base slow --json > %s/slow.json; test $? -eq 1",
                        EB_CLI_PATH, dir, dir),
                     0);
    assert_int_equal(sh("grep -q '\"regression\": true' %s/slow.json", dir), 0);
}

static int setup(void **state)
{
    eb_error err;
    char path[700];
    FILE *fp;
    (void)state;
    snprintf(dir, sizeof dir, "%s/nightly_%d", EB_TEST_BINARY_DIR, (int)getpid());
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
        cmocka_unit_test(test_compare_flags_slowdown_not_rerun),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
