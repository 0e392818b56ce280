/* test_cli.c: the edgebayes command line as a user meets it: exit codes
 * (0 success, 1 failure, 2 usage), --help everywhere, error messages that
 * name the flag or file at fault, JSON output, and a small end-to-end
 * train -> inspect -> predict whose bundle is byte-identical when trained
 * twice with the same seed. Runs the built binary (EB_CLI_PATH). */
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

#include "common/eb_alloc.h"
#include "common/eb_io.h"

static char dir[512];
static char out_path[600], err_path[600];
static char *out_text, *err_text;

/* Runs `edgebayes ARGS` through the shell; captures stdout and stderr.
 * Returns the exit status. */
static int run(const char *args)
{
    char cmd[4096];
    size_t len;
    int status;
    eb_free(out_text);
    eb_free(err_text);
    out_text = err_text = NULL;
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", EB_CLI_PATH, args, out_path, err_path);
    status = system(cmd);
    assert_int_equal(eb_file_read_all(out_path, &out_text, &len, NULL), EB_OK);
    assert_int_equal(eb_file_read_all(err_path, &err_text, &len, NULL), EB_OK);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

#define EXPECT(args, code, where, text)                                                     \
    do {                                                                                    \
        int rc_ = run(args);                                                                \
        if (rc_ != (code) || !strstr((where), (text)))                                      \
            fail_msg("edgebayes %s: exit %d (want %d); stdout '%s' stderr '%s' (want '%s')", \
                     args, rc_, code, out_text, err_text, text);                            \
    } while (0)

static int setup(void **state)
{
    eb_error err;
    (void)state;
    snprintf(dir, sizeof dir, "%s/cli_%d", EB_TEST_BINARY_DIR, (int)getpid());
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    return eb_mkdirs(dir, &err) == EB_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    eb_free(out_text);
    eb_free(err_text);
    return 0;
}

static void test_help_and_usage_errors(void **state)
{
    (void)state;
    EXPECT("", 2, err_text, "usage: edgebayes");
    EXPECT("--help", 0, out_text, "commands:");
    EXPECT("--version", 0, out_text, "edgebayes ");
    EXPECT("frobnicate", 2, err_text, "unknown command 'frobnicate'");
    EXPECT("train --help", 0, out_text, "usage: edgebayes train");
    EXPECT("inspect --help", 0, out_text, "usage: edgebayes inspect");
    EXPECT("predict --help", 0, out_text, "usage: edgebayes predict");
    EXPECT("run --help", 0, out_text, "usage: edgebayes run");
    EXPECT("train", 2, err_text, "--method, --arch and -o are required");
    EXPECT("train --method nope --arch mlp -o x.ebb", 2, err_text, "unknown method 'nope'");
    EXPECT("train --method map --arch mlp -o x.ebb --set colour=1", 2, err_text,
           "unknown setting 'colour'");
    EXPECT("train --method map --arch mlp -o x.ebb --set lr=-1", 2, err_text, "setting 'lr'");
    EXPECT("train --method map --arch mlp -o x.ebb --samples 3", 2, err_text,
           "--samples does not apply to method 'map'");
    EXPECT("train --method map --arch 'input 28x28x1; dense 10' -o x.ebb", 2, err_text,
           "add 'flatten'");
    EXPECT("train --method map --arch mlp -o x.ebb --threads 0", 2, err_text, "--threads '0'");
    EXPECT("train --method map --arch mlp -o x.ebb --seed -4", 2, err_text, "--seed '-4'");
    EXPECT("train --method map --arch mlp -o x.ebb --epochs many", 2, err_text, "'epochs'");
    EXPECT("train --method map --arch mlp -o", 2, err_text, "needs a value");
    EXPECT("train --bogus", 2, err_text, "unknown option '--bogus'");
    EXPECT("train --method map --arch mlp -o x.ebb extra", 2, err_text,
           "unexpected argument 'extra'");
    EXPECT("predict --split validation x.ebb", 2, err_text, "--split must be test or ood");
    EXPECT("predict", 2, err_text, "expected exactly one bundle file");
    EXPECT("inspect a.ebb b.ebb", 2, err_text, "expected exactly one bundle file");
    EXPECT("run --shard 3/2", 2, err_text, "--shard '3/2' is not i/n");
    EXPECT("run a.ini b.ini", 2, err_text, "unexpected argument 'b.ini'");
    EXPECT("run --print-suite nosuch", 2, err_text, "not a built-in suite");
    EXPECT("run --print-suite quick", 0, out_text, "[method ensemble]");
    EXPECT("run /nonexistent/suite.ini --db /nonexistent/x.db", 1, err_text, "neither a built-in suite");
    EXPECT("compare --db /nonexistent/r.db 1 2", 1, err_text, "/nonexistent/r.db");
    EXPECT("compare 1", 2, err_text, "expected BASE_RUN and CAND_RUN");
    EXPECT("merge out.db", 2, err_text, "expected OUT.db and at least one IN.db");
    EXPECT("report --db /nonexistent/r.db", 1, err_text, "/nonexistent/r.db");
    EXPECT("eval", 2, err_text, "expected exactly one bundle file");
    EXPECT("eval --help", 0, out_text, "usage: edgebayes eval");
    EXPECT("report --help", 0, out_text, "usage: edgebayes report");
    EXPECT("compare --help", 0, out_text, "usage: edgebayes compare");
    EXPECT("merge --help", 0, out_text, "usage: edgebayes merge");
}

static void test_failures_name_the_file(void **state)
{
    char args[1024], path[700];
    FILE *fp;
    (void)state;
    snprintf(args, sizeof args, "inspect %s/missing.ebb", dir);
    EXPECT(args, 1, err_text, "missing.ebb");
    snprintf(path, sizeof path, "%s/garbage.ebb", dir);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("this is not a bundle, just some text long enough to be read as a header ......", fp);
    fclose(fp);
    snprintf(args, sizeof args, "inspect %s", path);
    EXPECT(args, 1, err_text, "garbage.ebb");
    snprintf(args, sizeof args, "predict %s", path);
    EXPECT(args, 1, err_text, "garbage.ebb");
    /* an output directory that does not exist: failure, nothing written */
    snprintf(args, sizeof args,
             "train --method map --arch 'input 28x28x1; flatten; dense 8; relu; dense 10' "
             "--epochs 1 --quiet -o %s/no/such/dir/x.ebb",
             dir);
    EXPECT(args, 1, err_text, "x.ebb");
}

static void test_train_inspect_predict(void **state)
{
    char args[1024], a[700], b[700];
    char *da, *db;
    size_t la, lb;
    (void)state;
    snprintf(a, sizeof a, "%s/tiny-a.ebb", dir);
    snprintf(b, sizeof b, "%s/tiny-b.ebb", dir);
    snprintf(args, sizeof args,
             "train --method ensemble --samples 2 --arch "
             "'input 28x28x1; flatten; dense 16; relu; dense 10' --epochs 1 --seed 5 --json -o %s",
             a);
    EXPECT(args, 0, out_text, "\"method\": \"ensemble\"");
    assert_non_null(strstr(err_text, "epoch 1/1")); /* progress, plain lines when not a tty */
    snprintf(args, sizeof args,
             "train --method ensemble --samples 2 --arch "
             "'input 28x28x1; flatten; dense 16; relu; dense 10' --epochs 1 --seed 5 --quiet -o %s",
             b);
    EXPECT(args, 0, out_text, "wrote");
    assert_string_equal(err_text, ""); /* --quiet */
    assert_int_equal(eb_file_read_all(a, &da, &la, NULL), EB_OK);
    assert_int_equal(eb_file_read_all(b, &db, &lb, NULL), EB_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    eb_free(da);
    eb_free(db);

    snprintf(args, sizeof args, "inspect %s", a);
    EXPECT(args, 0, out_text, "representation  samples");
    assert_non_null(strstr(out_text, "hp.samples       2"));
    snprintf(args, sizeof args, "inspect --json %s", a);
    EXPECT(args, 0, out_text, "\"S\": 2, \"K\": 12730");
    snprintf(args, sizeof args, "predict --json %s", a);
    EXPECT(args, 0, out_text, "\"split\": \"test\", \"draws\": 2, \"n\": 10000, \"accuracy\": 0.");
    assert_non_null(strstr(out_text, "\"ood_auroc_entropy\": 0."));
    snprintf(args, sizeof args, "predict --split ood --samples 1 %s", a);
    EXPECT(args, 0, out_text, "OOD images        10000 (mnist)");
    snprintf(args, sizeof args, "predict --samples 3 %s", a);
    EXPECT(args, 1, err_text, "3 draws from a posterior of 2 samples");
}

/* Transforms from the command line and as suite chains: `transform`
 * records the lineage; a chain job builds each step once, and a second
 * run of the same suite takes every bundle, steps included, from the
 * cache. */
static void test_transform_and_chains(void **state)
{
    char args[2048], path[700], ebb[700], out[700];
    FILE *fp;
    (void)state;
    snprintf(ebb, sizeof ebb, "%s/small.ebb", dir);
    snprintf(out, sizeof out, "%s/small-int8.ebb", dir);
    snprintf(args, sizeof args,
             "train --method map --arch mlp-small --epochs 1 --quiet -o %s", ebb);
    EXPECT(args, 0, out_text, "wrote");
    snprintf(args, sizeof args, "transform quantize %s -o %s", ebb, out);
    EXPECT(args, 0, out_text, "quantize of");
    snprintf(args, sizeof args, "inspect %s", out);
    EXPECT(args, 0, out_text, "transform.chain  quantize:int8");
    snprintf(args, sizeof args, "transform quantize %s -o %s --set precision=int4", ebb, out);
    EXPECT(args, 2, err_text, "precision");
    snprintf(args, sizeof args, "transform shrink %s -o %s", ebb, out);
    EXPECT(args, 2, err_text, "unknown transform 'shrink'");

    snprintf(path, sizeof path, "%s/chains.ini", dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("[suite]\nname = chains\narchs = mlp-small\nfacets = quality, storage\n"
          "[data]\ntest_limit = 200\nood_limit = 200\n[evaluation]\nbootstrap = 0\n"
          "[method ensemble]\nepochs = 1\nsamples = 2\n"
          "[chains]\ne-int8 = ensemble -> quantize:int8\n"
          "e-p50-f16 = ensemble -> prune:0.5 -> quantize:f16\n",
          fp);
    fclose(fp);
    snprintf(args, sizeof args, "run %s --db %s/c1.db --cache %s/cache --threads 1", path, dir,
             dir);
    EXPECT(args, 0, err_text, "3 jobs: 3 done, 0 failed");
    assert_non_null(strstr(err_text, "3 bundles trained, 0 from the cache"));
    assert_non_null(strstr(out_text, "e-p50-f16/mlp-small/s1"));
    snprintf(args, sizeof args, "run %s --db %s/c2.db --cache %s/cache --threads 1", path, dir,
             dir);
    EXPECT(args, 0, err_text, "0 bundles trained, 3 from the cache");
    /* a filtered run is a run of its own, labelled with its patterns: it
     * runs one job into c2.db, whose unfiltered run finished above */
    snprintf(args, sizeof args,
             "run %s --db %s/c2.db --cache %s/cache --threads 1 --jobs 'e-int8/*' --json", path,
             dir, dir);
    EXPECT(args, 0, err_text, "1 jobs: 1 done, 0 failed, 0 skipped");
    assert_non_null(strstr(out_text, "\"e-int8/mlp-small/s1\""));
    assert_null(strstr(out_text, "e-p50-f16"));
    assert_null(strstr(err_text, "(resumed)"));
}

/* --list prints the jobs a run would do, after --shard and --jobs, and
 * touches no database or data; a pattern that selects nothing is an error
 * naming it. */
static void test_run_job_selection(void **state)
{
    int lines = 0;
    (void)state;
    EXPECT("run paper --list", 0, out_text, "28 hmc/mlp-small/s1 ");
    for (const char *p = out_text; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 96); /* 3 seeds x (mlp 16 + cnn 12 + mlp-small 4) */
    EXPECT("run paper --list --jobs 'hmc/*/s1,vi-ref/*'", 0, out_text, "31 vi-ref/mlp-small/s1 ");
    lines = 0;
    for (const char *p = out_text; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 4);
    assert_non_null(strstr(out_text, "28 hmc/mlp-small/s1 "));
    assert_non_null(strstr(out_text, "95 vi-ref/mlp-small/s3 "));
    assert_null(strstr(out_text, "hmc/mlp-small/s2"));
    /* shard 2 of 2 keeps the odd indices, then the patterns apply */
    EXPECT("run paper --list --shard 2/2 --jobs '*-ref/*'", 0, out_text, "93 sghmc-ref/mlp-small/s3 ");
    assert_null(strstr(out_text, "csghmc-ref/mlp-small/s1")); /* index 30 */
    EXPECT("run paper --list --jobs 'nothing*'", 1, err_text,
           "job pattern 'nothing*' matches none of the 96 jobs");
    EXPECT("run paper --list --jobs 'hmc/*,'", 1, err_text, "contain an empty pattern");
    EXPECT("run paper --jobs", 2, err_text, "--jobs needs a value");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_usage_errors),
        cmocka_unit_test(test_failures_name_the_file),
        cmocka_unit_test(test_train_inspect_predict),
        cmocka_unit_test(test_transform_and_chains),
        cmocka_unit_test(test_run_job_selection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
