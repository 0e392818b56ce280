/* cmd_compare.c: `edgebayes compare`: a candidate run against a base run,
 * every facet side by side, exit status 1 on a regression beyond noise
 * (the nightly CI check). The statistics are in results/compare.c. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "results/eb_results.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes compare [--db FILE] BASE_RUN CAND_RUN [options]\n"
            "\n"
            "Compares every job (matched by key) and facet of two runs in one database\n"
            "(merge them first if needed; runs are ids, uuids or labels) and exits 1\n"
            "when the candidate is worse beyond noise:\n"
            "  latency: a one-sided Mann-Whitney U test on the raw samples at --alpha AND\n"
            "    the candidate's median slower by at least --min-effect;\n"
            "  metrics with bootstrap intervals: worse by more than --quality-min-effect\n"
            "    (relative) AND the intervals do not overlap;\n"
            "  single timings without intervals (load time, throughput, first prediction,\n"
            "    peak RSS, training time): worse by more than --noisy-threshold;\n"
            "  other metrics: worse by more than --threshold (relative).\n"
            "\n"
            "  --db FILE                 results database (default: out/results.db)\n"
            "  --alpha A                 U-test level (default 0.01)\n"
            "  --min-effect E            latency effect size (default 0.05)\n"
            "  --quality-min-effect Q    (default 0.01)\n"
            "  --threshold T             (default 0.05)\n"
            "  --noisy-threshold T       (default 1.0: twice as slow or as large)\n"
            "  --missing-regresses       a job missing from the candidate is a regression\n"
            "  --all                     list every item, not only changes\n"
            "  --json                    machine-readable output\n"
            "  -h, --help                this help\n"
            "\n"
            "Exit status: 0 no regression, 1 regression or failure, 2 usage error.\n");
}

static int parse_unit_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static void json_item(const eb_results_compare_item *it)
{
    printf("{\"facet\": \"%s\", \"name\": \"%s\", \"context\": ", it->facet, it->name);
    eb_cli_json_string(stdout, it->context ? it->context : "");
    printf(", \"unit\": \"%s\", \"higher_is_better\": %d, \"base\": ", it->unit ? it->unit : "",
           it->higher_is_better);
    eb_cli_json_number(stdout, it->base);
    if (it->base_has_ci) {
        printf(", \"base_ci\": [");
        eb_cli_json_number(stdout, it->base_ci_low);
        printf(", ");
        eb_cli_json_number(stdout, it->base_ci_high);
        printf("]");
    }
    printf(", \"candidate\": ");
    eb_cli_json_number(stdout, it->cand);
    if (it->cand_has_ci) {
        printf(", \"candidate_ci\": [");
        eb_cli_json_number(stdout, it->cand_ci_low);
        printf(", ");
        eb_cli_json_number(stdout, it->cand_ci_high);
        printf("]");
    }
    printf(", \"delta\": ");
    eb_cli_json_number(stdout, it->delta);
    printf(", \"relative_delta\": ");
    eb_cli_json_number(stdout, it->rel_delta);
    printf(", \"p_worse\": ");
    eb_cli_json_number(stdout, it->p_worse);
    printf(", \"rule\": \"%s\", \"verdict\": \"%s\"}", eb_results_rule_name(it->rule),
           eb_results_verdict_name(it->verdict));
}

static void text_value(double v, int has_ci, double lo, double hi)
{
    char buf[80];
    if (isnan(v))
        snprintf(buf, sizeof buf, "-");
    else if (has_ci)
        snprintf(buf, sizeof buf, "%.5g [%.4g, %.4g]", v, lo, hi);
    else
        snprintf(buf, sizeof buf, "%.5g", v);
    printf(" %-30s", buf);
}

int eb_cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},
        {"alpha", required_argument, NULL, 'a'},
        {"min-effect", required_argument, NULL, 'e'},
        {"quality-min-effect", required_argument, NULL, 'Q'},
        {"threshold", required_argument, NULL, 'T'},
        {"noisy-threshold", required_argument, NULL, 'N'},
        {"missing-regresses", no_argument, NULL, 'm'},
        {"all", no_argument, NULL, 'A'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *db_path = "out/results.db";
    eb_results_compare_config cfg;
    eb_results *db = NULL;
    eb_results_comparison *cmp = NULL;
    int64_t base, cand;
    eb_error err;
    int c, json = 0, all = 0, rc;

    eb_results_compare_defaults(&cfg);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': db_path = optarg; break;
        case 'a':
            if (parse_unit_double(optarg, 1e-12, 0.5, &cfg.alpha))
                return eb_cli_usage_error("compare", "--alpha '%s' is not in (0, 0.5]", optarg);
            break;
        case 'e':
            if (parse_unit_double(optarg, 0.0, 10.0, &cfg.latency_min_effect))
                return eb_cli_usage_error("compare", "--min-effect '%s' is not in [0, 10]", optarg);
            break;
        case 'Q':
            if (parse_unit_double(optarg, 0.0, 10.0, &cfg.quality_min_effect))
                return eb_cli_usage_error("compare", "--quality-min-effect '%s' is not in [0, 10]",
                                          optarg);
            break;
        case 'T':
            if (parse_unit_double(optarg, 0.0, 10.0, &cfg.threshold))
                return eb_cli_usage_error("compare", "--threshold '%s' is not in [0, 10]", optarg);
            break;
        case 'N':
            if (parse_unit_double(optarg, 0.0, 100.0, &cfg.noisy_threshold))
                return eb_cli_usage_error("compare", "--noisy-threshold '%s' is not in [0, 100]",
                                          optarg);
            break;
        case 'm': cfg.missing_regresses = 1; break;
        case 'A': all = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("compare", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("compare", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return eb_cli_usage_error("compare", "expected BASE_RUN and CAND_RUN");
    if (eb_results_open_readonly(db_path, &db, &err) ||
        eb_results_run_lookup(db, argv[optind], &base, &err) ||
        eb_results_run_lookup(db, argv[optind + 1], &cand, &err) ||
        eb_results_compare(db, base, cand, &cfg, &cmp, &err)) {
        eb_results_close(db);
        return eb_cli_fail("compare", &err);
    }
    if (json) {
        printf("{\"base_run\": %lld, \"candidate_run\": %lld, \"regression\": %s, \"overall\": "
               "\"%s\", \"config\": {\"alpha\": %g, \"latency_min_effect\": %g, "
               "\"quality_min_effect\": %g, \"threshold\": %g, \"noisy_threshold\": %g}, "
               "\"jobs\": [",
               (long long)base, (long long)cand, cmp->regression ? "true" : "false",
               eb_results_verdict_name(cmp->overall), cfg.alpha, cfg.latency_min_effect,
               cfg.quality_min_effect, cfg.threshold, cfg.noisy_threshold);
        for (size_t i = 0; i < cmp->n_jobs; i++) {
            const eb_results_compare_job *j = &cmp->jobs[i];
            printf("%s\n {\"name\": ", i ? "," : "");
            eb_cli_json_string(stdout, j->name ? j->name : "");
            printf(", \"key\": \"%s\", \"verdict\": \"%s\", \"items\": [", j->key,
                   eb_results_verdict_name(j->verdict));
            for (size_t k = 0; k < j->n_items; k++) {
                printf("%s\n  ", k ? "," : "");
                json_item(&j->items[k]);
            }
            printf("]}");
        }
        printf("\n]}\n");
    } else {
        printf("base run %lld vs candidate run %lld in %s\n", (long long)base, (long long)cand,
               db_path);
        for (size_t i = 0; i < cmp->n_jobs; i++) {
            const eb_results_compare_job *j = &cmp->jobs[i];
            printf("\n%s: %s\n", j->name ? j->name : j->key, eb_results_verdict_name(j->verdict));
            for (size_t k = 0; k < j->n_items; k++) {
                const eb_results_compare_item *it = &j->items[k];
                char label[160];
                if (!all && it->verdict == EB_RESULTS_SAME)
                    continue;
                snprintf(label, sizeof label, "%s/%s%s%s", it->facet, it->name,
                         it->context && it->context[0] ? " " : "", it->context ? it->context : "");
                printf("  %-44.44s", label);
                text_value(it->base, it->base_has_ci, it->base_ci_low, it->base_ci_high);
                text_value(it->cand, it->cand_has_ci, it->cand_ci_low, it->cand_ci_high);
                printf(" %+7.2f%% %s", isnan(it->rel_delta) ? 0.0 : 100.0 * it->rel_delta,
                       eb_results_verdict_name(it->verdict));
                if (!isnan(it->p_worse))
                    printf(" (p = %.2g)", it->p_worse);
                printf("\n");
            }
        }
        printf("\n%s: %zu jobs; items: %zu worse, %zu better, %zu same\n",
               cmp->regression ? "REGRESSION" : "no regression", cmp->n_jobs,
               cmp->item_counts[EB_RESULTS_WORSE], cmp->item_counts[EB_RESULTS_BETTER],
               cmp->item_counts[EB_RESULTS_SAME]);
    }
    rc = cmp->regression ? EB_EXIT_FAIL : EB_EXIT_OK;
    eb_results_comparison_free(cmp);
    eb_results_close(db);
    return rc;
}
