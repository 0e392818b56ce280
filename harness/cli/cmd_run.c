/* cmd_run.c: `edgebayes run`: run a suite (default: the built-in `quick`)
 * into the results database and print one line per job. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "harness/eb_runner.h"
#include "harness/eb_suite.h"
#include "results/eb_results.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes run [SUITE] [--db FILE] [--shard i/n] [options]\n"
            "\n"
            "Runs a suite: every job (seed x architecture x method) is trained, or taken\n"
            "from the bundle cache, then measured on the device across every facet\n"
            "(quality, calibration, OOD detection, adversarial robustness, dataset shift,\n"
            "latency, throughput, load time, memory, storage) into one SQLite file, one\n"
            "transaction per job. Rerunning continues an interrupted run: finished jobs\n"
            "are skipped and bundles already built are not trained again.\n"
            "\n"
            "  SUITE           quick (default), paper, compression, or a suite file (docs/suites.md)\n"
            "  --db FILE       results database (default: out/results.db)\n"
            "  --shard i/n     run only the jobs of shard i of n (merge the shard\n"
            "                  databases with 'edgebayes merge')\n"
            "  --label L       a label for the run (e.g. nightly)\n"
            "  --jobs PATTERNS run only the jobs whose name (method/arch/seed, e.g.\n"
            "                  hmc/mlp-small/s1) matches one of these comma-separated\n"
            "                  shell patterns; the run is labelled with them\n"
            "  --list          print the jobs that would run (index, name, key) and exit\n"
            "  --cache DIR     bundle cache (default: $EB_CACHE_DIR/bundles, or\n"
            "                  ~/.cache/edgebayes/bundles)\n"
            "  --threads T     threads for training and the device (default: the suite's,\n"
            "                  or the online CPUs)\n"
            "  --strategy NAME the cpu device's execution strategy: auto (default), loop,\n"
            "                  stacked, ... (the suite's [device] strategy; docs/devices.md)\n"
            "  --print-suite   print the suite's text and exit\n"
            "  --quiet         no progress on stderr\n"
            "  --json          print the run's jobs and headline metrics as JSON\n"
            "  -h, --help      this help\n"
            "\n"
            "Exit status: 0 when every job finished, 1 when the run failed or a job\n"
            "failed (failed jobs are stored with their message), 2 on a usage error.\n");
}

static double metric_of(const eb_results_metric_list *l, const char *facet, const char *name,
                        const char *context)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].facet, facet) && !strcmp(l->v[i].name, name) &&
            !strcmp(l->v[i].context ? l->v[i].context : "", context))
            return l->v[i].value;
    return NAN;
}

static void print_cell(FILE *fp, double v, const char *fmt, int width)
{
    if (isnan(v))
        fprintf(fp, "%*s", width, "-");
    else
        fprintf(fp, fmt, width, v);
}

/* One line per job of the run, with the headline metrics. */
static eb_status print_jobs(const char *db_path, int64_t run_id, int json, eb_error *err)
{
    eb_results *db;
    eb_results_job_list jobs;
    eb_status st = eb_results_open_readonly(db_path, &db, err);
    if (st)
        return st;
    memset(&jobs, 0, sizeof jobs);
    st = eb_results_jobs(db, run_id, &jobs, err);
    if (st) {
        eb_results_close(db);
        return st;
    }
    if (json)
        printf("{\"db\": \"%s\", \"run\": %lld, \"jobs\": [", db_path, (long long)run_id);
    else
        printf("%-22s %4s %9s %8s %8s %9s %9s %10s %12s %s\n", "job", "S", "accuracy", "NLL",
               "ECE", "AUROC(H)", "PGD@0.1", "p50 ms", "bundle bytes", "status");
    for (size_t i = 0; i < jobs.n; i++) {
        const eb_results_job *j = &jobs.v[i];
        eb_results_metric_list ml;
        double acc, nll, ece, auroc, pgd, p50, bytes;
        memset(&ml, 0, sizeof ml);
        if ((st = eb_results_metrics(db, j->id, &ml, err)))
            break;
        acc = metric_of(&ml, "quality", "accuracy", "");
        nll = metric_of(&ml, "quality", "nll", "");
        ece = metric_of(&ml, "calibration", "ece", "");
        auroc = metric_of(&ml, "ood", "auroc", "score=entropy");
        pgd = metric_of(&ml, "adversarial", "accuracy", "attack=pgd,eps=0.1");
        p50 = metric_of(&ml, "latency", "p50", "");
        bytes = metric_of(&ml, "storage", "bundle_bytes", "");
        if (json) {
            printf("%s\n  {\"name\": ", i ? "," : "");
            eb_cli_json_string(stdout, j->name);
            printf(", \"key\": \"%s\", \"status\": \"%s\", \"draws\": %lld, \"accuracy\": ", j->key,
                   j->status, (long long)j->draws);
            eb_cli_json_number(stdout, acc);
            printf(", \"nll\": ");
            eb_cli_json_number(stdout, nll);
            printf(", \"ece\": ");
            eb_cli_json_number(stdout, ece);
            printf(", \"ood_auroc_entropy\": ");
            eb_cli_json_number(stdout, auroc);
            printf(", \"pgd_accuracy_eps_0.1\": ");
            eb_cli_json_number(stdout, pgd);
            printf(", \"latency_p50_s\": ");
            eb_cli_json_number(stdout, p50);
            printf(", \"bundle_bytes\": ");
            eb_cli_json_number(stdout, bytes);
            if (j->error) {
                printf(", \"error\": ");
                eb_cli_json_string(stdout, j->error);
            }
            printf("}");
        } else {
            printf("%-22.22s %4lld ", j->name, (long long)j->draws);
            print_cell(stdout, acc, "%*.4f", 9);
            putchar(' ');
            print_cell(stdout, nll, "%*.4f", 8);
            putchar(' ');
            print_cell(stdout, ece, "%*.4f", 8);
            putchar(' ');
            print_cell(stdout, auroc, "%*.4f", 9);
            putchar(' ');
            print_cell(stdout, pgd, "%*.4f", 9);
            putchar(' ');
            print_cell(stdout, p50 * 1e3, "%*.3f", 10);
            putchar(' ');
            print_cell(stdout, bytes, "%*.0f", 12);
            printf(" %s%s%s\n", j->status, j->error ? ": " : "", j->error ? j->error : "");
        }
        eb_results_metric_list_free(&ml);
    }
    if (json && !st)
        printf("\n]}\n");
    eb_results_job_list_free(&jobs);
    eb_results_close(db);
    return st;
}

int eb_cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},     {"shard", required_argument, NULL, 's'},
        {"label", required_argument, NULL, 'l'},  {"cache", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'}, {"strategy", required_argument, NULL, 'S'}, {"print-suite", no_argument, NULL, 'p'},
        {"jobs", required_argument, NULL, 'J'},   {"list", no_argument, NULL, 'L'},
        {"quiet", no_argument, NULL, 'q'},        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    eb_run_options o;
    eb_run_summary sum;
    eb_error err;
    int c, json = 0, print_suite = 0, list = 0;
    long threads = 0;

    memset(&o, 0, sizeof o);
    o.db_path = "out/results.db";
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o.db_path = optarg; break;
        case 's': {
            int i, n, used = 0;
            if (sscanf(optarg, "%d/%d%n", &i, &n, &used) != 2 || optarg[used] || n < 1 || i < 1 ||
                i > n)
                return eb_cli_usage_error("run", "--shard '%s' is not i/n with 1 <= i <= n",
                                          optarg);
            o.shard_index = i;
            o.shard_count = n;
            break;
        }
        case 'l': o.label = optarg; break;
        case 'c': o.cache_dir = optarg; break;
        case 't':
            if (eb_cli_parse_long(optarg, 1, 256, &threads))
                return eb_cli_usage_error("run", "--threads '%s' is not a count from 1 to 256",
                                          optarg);
            o.threads = (int)threads;
            break;
        case 'p': print_suite = 1; break;
        case 'S': o.strategy = optarg; break;
        case 'J': o.jobs = optarg; break;
        case 'L': list = 1; break;
        case 'q': o.quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("run", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return eb_cli_usage_error("run", "unexpected argument '%s'", argv[optind + 1]);
    if (optind < argc)
        o.suite = argv[optind];
    if (print_suite) {
        const char *text = eb_suite_builtin(o.suite ? o.suite : "quick");
        if (!text)
            return eb_cli_usage_error("run", "--print-suite: '%s' is not a built-in suite "
                                      "(quick, paper, compression)", o.suite);
        fputs(text, stdout);
        return EB_EXIT_OK;
    }
    eb_error_clear(&err);
    if (list) {
        if (eb_run_list_jobs(&o, stdout, &err))
            return eb_cli_fail("run", &err);
        return EB_EXIT_OK;
    }
    if (eb_run_suite(&o, &sum, &err)) {
        if (err.code == EB_ERR_ARG || err.code == EB_ERR_FORMAT)
            fprintf(stderr, "edgebayes run: %s\n", eb_error_message(&err));
        else
            fprintf(stderr, "edgebayes run: %s\n", eb_error_message(&err));
        return EB_EXIT_FAIL;
    }
    if (!o.quiet)
        fprintf(stderr,
                "run %lld%s: %d jobs: %d done, %d failed, %d skipped (done earlier); %d bundles "
                "trained, %d from the cache\n",
                (long long)sum.run_id, sum.resumed ? " (resumed)" : "", sum.jobs_total,
                sum.jobs_done, sum.jobs_failed, sum.jobs_skipped, sum.bundles_trained,
                sum.bundles_cached);
    if (print_jobs(o.db_path, sum.run_id, json, &err))
        return eb_cli_fail("run", &err);
    return sum.jobs_failed ? EB_EXIT_FAIL : EB_EXIT_OK;
}
