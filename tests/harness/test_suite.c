/* test_suite.c: suite files: the built-in suites parse and expand into
 * jobs with stable, distinct keys; shards partition the jobs; settings
 * reach the jobs (plain and per-architecture keys); and every malformed
 * suite is refused with a message naming the file, the line and the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "harness/eb_suite.h"

static void test_builtin_suites(void **state)
{
    eb_suite s;
    eb_error err;
    eb_job *jobs;
    int n;
    (void)state;
    assert_int_equal(eb_suite_load("quick", &s, &err), EB_OK);
    assert_string_equal(s.name, "quick");
    assert_string_equal(s.source, "built-in:quick");
    assert_int_equal(s.n_seeds, 1);
    assert_int_equal(s.n_archs, 1);
    assert_int_equal(s.facets, EB_FACET_ALL);
    assert_true(s.n_methods >= 3);
    assert_int_equal(eb_suite_jobs(&s, 1, 1, &jobs, &n, &err), EB_OK);
    assert_true(s.n_chains >= 3);
    assert_int_equal(n, s.n_methods + s.n_chains);
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            assert_string_not_equal(jobs[i].key, jobs[k].key);
    assert_string_equal(jobs[1].name, "ensemble/mlp/s1");
    assert_int_equal(eb_settings_int(&jobs[1].settings, "samples"), 5);
    eb_free(jobs);

    assert_int_equal(eb_suite_load("paper", &s, &err), EB_OK);
    assert_int_equal(s.n_seeds, 3);
    assert_int_equal(s.n_archs, 2);
    assert_int_equal(eb_suite_jobs(&s, 1, 1, &jobs, &n, &err), EB_OK);
    /* per seed: 10 methods on mlp, the 5 that run on every suite arch also
     * on cnn, and the HMC reference group (4) on mlp-small; chains of map
     * and ensemble30 on both archs (6 x 2) and of vi on mlp (1) */
    assert_int_equal(n, 3 * (10 + 5 + 4 + 12 + 1));
    assert_string_equal(s.fidelity_reference, "hmc");
    /* the cnn architecture's default epochs reach its jobs */
    for (int i = 0; i < n; i++)
        if (!strcmp(jobs[i].arch, "cnn") && strcmp(jobs[i].m->label, "snapshot"))
            assert_int_equal(eb_settings_int(&jobs[i].settings, "epochs"), 12);
    eb_free(jobs);

    /* the compression study: 2 methods and 33 chains on mlp, 6 of them
     * the student-size sweep, whose step settings hold the sized students
     * and the pruning */
    assert_int_equal(eb_suite_load("compression", &s, &err), EB_OK);
    assert_int_equal(eb_suite_jobs(&s, 1, 1, &jobs, &n, &err), EB_OK);
    assert_int_equal(n, 2 + 33);
    {
        int sweep = 0, checked = 0;
        for (int i = 0; i < n; i++) {
            const eb_settings *st = &jobs[i].step_settings[0];
            if (strncmp(jobs[i].name, "ens30-gped-", 11))
                continue;
            sweep++;
            assert_non_null(jobs[i].chain);
            if (!strcmp(jobs[i].name, "ens30-gped-512x2-p95/mlp/s1")) {
                assert_string_equal(eb_settings_str(st, "student"), "mlp:512,512");
                assert_true(eb_settings_float(st, "sparsity") == 0.95);
                assert_string_equal(eb_settings_str(st, "kind"), "gped");
                checked++;
            }
            if (!strcmp(jobs[i].name, "ens30-gped-32/mlp/s1")) {
                assert_string_equal(eb_settings_str(st, "student"), "mlp:32");
                checked++;
            }
        }
        assert_int_equal(sweep, 6);
        assert_int_equal(checked, 2);
    }
    eb_free(jobs);
}

/* A method section's `arch` pins it to those architectures. */
static void test_pinned_archs(void **state)
{
    static const char text[] = "[suite]\narchs = mlp, cnn\n[method map]\n"
                               "[method hmc]\narch = mlp-small\n[method vi]\narch = mlp\n"
                               "[fidelity]\nreference = hmc\n";
    eb_suite s;
    eb_job *jobs;
    int n;
    eb_error err;
    (void)state;
    assert_int_equal(eb_suite_parse(text, "p.ini", &s, &err), EB_OK);
    assert_int_equal(eb_suite_jobs(&s, 1, 1, &jobs, &n, &err), EB_OK);
    assert_int_equal(n, 4);
    assert_string_equal(jobs[0].name, "map/mlp/s1");
    assert_string_equal(jobs[1].name, "vi/mlp/s1");
    assert_string_equal(jobs[2].name, "map/cnn/s1");
    assert_string_equal(jobs[3].name, "hmc/mlp-small/s1");
    eb_free(jobs);
    assert_int_equal(eb_suite_parse("[method map]\narch = vgg\n", "p.ini", &s, &err),
                     EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "p.ini:2: [method map] arch: unknown architecture 'vgg'"));
    assert_int_equal(eb_suite_parse("[method map]\n[fidelity]\nreference = hmc\n", "p.ini", &s,
                                    &err),
                     EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "p.ini:3: [fidelity] reference: no [method hmc] section"));
}

static void test_shards_partition_jobs(void **state)
{
    eb_suite s;
    eb_job *all, *part;
    int n_all, n, seen = 0;
    (void)state;
    assert_int_equal(eb_suite_load("paper", &s, NULL), EB_OK);
    assert_int_equal(eb_suite_jobs(&s, 1, 1, &all, &n_all, NULL), EB_OK);
    for (int k = 1; k <= 4; k++) {
        assert_int_equal(eb_suite_jobs(&s, k, 4, &part, &n, NULL), EB_OK);
        for (int i = 0; i < n; i++) {
            assert_int_equal(part[i].index % 4, k - 1);
            assert_string_equal(part[i].key, all[part[i].index].key);
        }
        seen += n;
        eb_free(part);
    }
    assert_int_equal(seen, n_all);
    assert_int_equal(eb_suite_jobs(&s, 0, 4, &part, &n, NULL), EB_ERR_ARG);
    assert_int_equal(eb_suite_jobs(&s, 5, 4, &part, &n, NULL), EB_ERR_ARG);
    eb_free(all);
}

static const char base[] = "[suite]\nname = t\nseeds = 4, 5\narchs = mlp, cnn\n"
                           "[method ens]\nmethod = ensemble\nsamples = 3\ncnn.epochs = 2\n"
                           "epochs = 7\n";

static void test_settings_and_keys(void **state)
{
    eb_suite s, s2;
    eb_job *jobs, *jobs2;
    int n, n2;
    eb_error err;
    char text[1024];
    (void)state;
    assert_int_equal(eb_suite_parse(base, "t.ini", &s, &err), EB_OK);
    assert_int_equal(eb_suite_jobs(&s, 1, 1, &jobs, &n, &err), EB_OK);
    assert_int_equal(n, 4);
    assert_string_equal(jobs[0].name, "ens/mlp/s4");
    assert_int_equal(eb_settings_int(&jobs[0].settings, "epochs"), 7);
    assert_int_equal(eb_settings_int(&jobs[1].settings, "epochs"), 2); /* cnn override */
    assert_int_equal(eb_settings_int(&jobs[1].settings, "samples"), 3);
    /* the same text gives the same keys; a changed setting changes them */
    assert_int_equal(eb_suite_parse(base, "t.ini", &s2, &err), EB_OK);
    assert_int_equal(eb_suite_jobs(&s2, 1, 1, &jobs2, &n2, &err), EB_OK);
    for (int i = 0; i < n; i++)
        assert_string_equal(jobs[i].key, jobs2[i].key);
    eb_free(jobs2);
    snprintf(text, sizeof text, "%s[evaluation]\nbootstrap = 50\n", base);
    assert_int_equal(eb_suite_parse(text, "t.ini", &s2, &err), EB_OK);
    assert_int_equal(eb_suite_jobs(&s2, 1, 1, &jobs2, &n2, &err), EB_OK);
    assert_string_not_equal(jobs[0].key, jobs2[0].key);
    eb_free(jobs2);
    eb_free(jobs);
}

static void expect_error(const char *text, const char *want)
{
    eb_suite s;
    eb_error err;
    eb_error_clear(&err);
    assert_int_equal(eb_suite_parse(text, "bad.ini", &s, &err), EB_ERR_FORMAT);
    if (!strstr(err.msg, want))
        fail_msg("suite:\n%s\nmessage '%s' lacks '%s'", text, err.msg, want);
}

static void test_malformed_suites(void **state)
{
    (void)state;
    expect_error("[suite]\nname = x\n[metod map]\n", "bad.ini:3: unknown section [metod map]");
    expect_error("[suite]\nname = x\ncolour = red\n[method map]\n",
                 "bad.ini:3: [suite]: unknown key 'colour'");
    expect_error("[suite]\nseeds = 1, two\n[method map]\n",
                 "bad.ini:2: [suite] seeds: 'two' is not a non-negative integer");
    expect_error("[suite]\narchs = resnet\n[method map]\n",
                 "bad.ini:2: [suite] archs: unknown architecture 'resnet'");
    expect_error("[suite]\nfacets = speed\n[method map]\n",
                 "bad.ini:2: [suite] facets: unknown facet 'speed'");
    expect_error("[suite]\nname = a\nname = b\n[method map]\n", "bad.ini:3: [suite] name: given twice");
    expect_error("[method sgld2]\nsamples = 3\n",
                 "bad.ini:1: [method sgld2]: 'sgld2' is not a method");
    expect_error("[method x]\nmethod = magic\n", "bad.ini:2: [method x] method: unknown method 'magic'");
    expect_error("[suite]\nname = x\n\n[method ensemble]\nsamples = many\n",
                 "bad.ini:5: [method ensemble] samples: setting 'samples': 'many'");
    expect_error("[method map]\nlr = 0.1\ncolour = 3\n",
                 "bad.ini:3: [method map] colour: unknown setting 'colour'");
    expect_error("[method map]\nvgg.epochs = 3\n",
                 "bad.ini:2: [method map] vgg.epochs: unknown architecture 'vgg'");
    expect_error("[suite]\nname = x\n", "bad.ini: the suite has no [method <label>] section");
    expect_error("[suite]\nthis line is not ini\n[method map]\n", "bad.ini:2: not an INI line");
    expect_error("[adversarial]\neps = 0, 2\n[method map]\n",
                 "bad.ini:2: [adversarial] eps: '2' is not an epsilon in [0, 1]");
    expect_error("[adversarial]\nattacks = cw\n[method map]\n",
                 "bad.ini:2: [adversarial] attacks: unknown attack 'cw'");
    expect_error("[shift]\ncorruptions = fog\n[method map]\n",
                 "bad.ini:2: [shift] corruptions: unknown corruption 'fog'");
    expect_error("[shift]\nseverities = 0\n[method map]\n",
                 "bad.ini:2: [shift] severities: '0' is not a severity from 1 to 5");
    expect_error("[device]\nname = tpu\n[method map]\n", "bad.ini:2: [device] name: unknown device 'tpu'");
    expect_error("[device]\nstrategy = fastest\n[method map]\n",
                 "bad.ini:2: [device] strategy: unknown strategy 'fastest' (known: auto, ");
    {
        eb_suite ok;
        eb_error e;
        assert_int_equal(eb_suite_parse("[device]\nstrategy = loop\n[method map]\n", "ok.ini", &ok,
                                        &e), EB_OK);
        assert_string_equal(ok.strategy, "loop");
        assert_int_equal(eb_suite_parse("[method map]\n", "ok.ini", &ok, &e), EB_OK);
        assert_string_equal(ok.strategy, "auto");
    }
    expect_error("[device]\nlatency_min_seconds = -1\n[method map]\n",
                 "bad.ini:2: [device] latency_min_seconds: '-1' is not a duration");
    expect_error("[data]\ntest = cifar/test\n[method map]\n",
                 "bad.ini:2: [data] test: unknown dataset 'cifar/test'");
    expect_error("[evaluation]\nci_level = 2\n[method map]\n",
                 "bad.ini:2: [evaluation] ci_level: '2' is not a level");
    expect_error("[method a b]\n", "bad.ini:1: [method a b]: a method section needs a label");
}

/* [transform] sections and [chains]: chain jobs follow the method jobs,
 * take their steps' settings (defaults, section keys, then the short
 * value), have their own keys, and change nothing of the method jobs. */
static void test_chains(void **state)
{
    static const char text[] =
        "[suite]\narchs = mlp\nseeds = 1, 2\n"
        "[method ensemble]\nsamples = 3\n"
        "[transform prune-ft]\ntransform = prune\nschedule = iterative\n"
        "[chains]\nens-p90 = ensemble -> prune-ft:0.9\n"
        "ens-int8 = ensemble->quantize:int8\n"
        "ens-p50-f16 = ensemble -> prune:0.5 -> quantize:f16\n";
    static const char plain[] = "[suite]\narchs = mlp\nseeds = 1, 2\n"
                                "[method ensemble]\nsamples = 3\n";
    eb_suite *s = eb_malloc(sizeof *s), *s2 = eb_malloc(sizeof *s2);
    eb_error err;
    eb_job *jobs, *pj;
    int n, pn;
    (void)state;
    assert_non_null(s);
    assert_non_null(s2);
    assert_int_equal(eb_suite_parse(text, "c.ini", s, &err), EB_OK);
    assert_int_equal(s->n_transforms, 1);
    assert_int_equal(s->n_chains, 3);
    assert_string_equal(s->chains[1].text, "ensemble -> quantize:int8");
    assert_int_equal(s->chains[2].n_steps, 2);
    assert_int_equal(eb_suite_jobs(s, 1, 1, &jobs, &n, &err), EB_OK);
    assert_int_equal(n, 2 * 4);
    assert_null(jobs[0].chain);
    assert_string_equal(jobs[1].name, "ens-p90/mlp/s1");
    assert_ptr_equal(jobs[1].chain, &s->chains[0]);
    assert_string_equal(jobs[1].m->label, "ensemble");
    assert_int_equal(eb_settings_int(&jobs[1].settings, "samples"), 3);
    assert_string_equal(eb_settings_str(&jobs[1].step_settings[0], "schedule"), "iterative");
    assert_true(eb_settings_float(&jobs[1].step_settings[0], "sparsity") == 0.9);
    assert_string_equal(eb_settings_str(&jobs[2].step_settings[0], "precision"), "int8");
    assert_string_equal(eb_settings_str(&jobs[3].step_settings[1], "precision"), "f16");
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            assert_string_not_equal(jobs[i].key, jobs[k].key);
    /* adding chains leaves the method jobs' keys as they were */
    assert_int_equal(eb_suite_parse(plain, "p.ini", s2, &err), EB_OK);
    assert_int_equal(eb_suite_jobs(s2, 1, 1, &pj, &pn, &err), EB_OK);
    assert_int_equal(pn, 2);
    assert_string_equal(pj[0].key, jobs[0].key);
    assert_string_equal(pj[1].key, jobs[4].key);
    eb_free(pj);
    eb_free(jobs);
    eb_free(s);
    eb_free(s2);
}

static void test_malformed_chains(void **state)
{
    (void)state;
    expect_error("[method map]\n[chains]\nx = sgld -> prune:0.9\n",
                 "bad.ini:3: [chains] x: chain 'sgld -> prune:0.9': 'sgld' is not the label of a "
                 "[method] section");
    expect_error("[method map]\n[chains]\nx = map -> shrink:0.9\n",
                 "bad.ini:3: [chains] x: chain 'map -> shrink:0.9': 'shrink' is neither a "
                 "[transform] label nor a transform");
    expect_error("[method map]\n[chains]\nx = map\n",
                 "bad.ini:3: [chains] x: chain 'map': give a method and at least one step");
    expect_error("[method map]\n[chains]\nx = map -> -> prune\n",
                 "bad.ini:3: [chains] x: chain 'map -> -> prune': an empty step");
    expect_error("[method map]\n[chains]\nx = map -> prune:2\n",
                 "bad.ini:3: [chains] x: chain 'map -> prune:2': step 'prune:2': setting "
                 "'sparsity'");
    expect_error("[method map]\n[chains]\nx = map -> quantize:int4\n",
                 "bad.ini:3: [chains] x: chain 'map -> quantize:int4': step 'quantize:int4'");
    expect_error("[method map]\n[chains]\nx = map -> prune -> prune -> prune -> prune -> "
                 "prune\n",
                 "more than 4 transform steps");
    expect_error("[method map]\n[chains]\nmap = map -> prune\n",
                 "bad.ini:3: [chains] map: the label is already a method section's");
    expect_error("[method map]\n[chains]\nx = map -> prune\nx = map -> quantize\n",
                 "bad.ini:4: [chains] x: given twice");
    expect_error("[method map]\n[transform squash]\nlevel = 3\n",
                 "bad.ini:2: [transform squash]: 'squash' is not a transform");
    expect_error("[method map]\n[transform q]\ntransform = quantize\nbits = 3\n",
                 "bad.ini:4: [transform q] bits: unknown setting 'bits'");
    expect_error("[method map]\n[transform q]\ntransform = zip\n",
                 "bad.ini:3: [transform q] transform: unknown transform 'zip'");
}

static void test_files(void **state)
{
    eb_suite s;
    eb_error err;
    char path[512];
    FILE *fp;
    (void)state;
    assert_int_equal(eb_suite_load("/nonexistent/suite.ini", &s, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, "neither a built-in suite"));
    snprintf(path, sizeof path, "%s/suite_%d.ini", EB_TEST_BINARY_DIR, (int)getpid());
    fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite("[method map]\n\0x", 1, 15, fp);
    fclose(fp);
    assert_int_equal(eb_suite_load(path, &s, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "NUL byte"));
    fp = fopen(path, "wb");
    fputs("[suite]\nname = filed\n[method map]\nepochs = 2\n", fp);
    fclose(fp);
    assert_int_equal(eb_suite_load(path, &s, &err), EB_OK);
    assert_string_equal(s.name, "filed");
    assert_string_equal(s.source, path);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_suites),    cmocka_unit_test(test_pinned_archs),
        cmocka_unit_test(test_shards_partition_jobs),
        cmocka_unit_test(test_settings_and_keys), cmocka_unit_test(test_malformed_suites),
        cmocka_unit_test(test_files),             cmocka_unit_test(test_chains),
        cmocka_unit_test(test_malformed_chains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
