/* cmd_eval.c: `edgebayes eval`: every facet of one bundle on a device. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "harness/cli/cli.h"
#include "harness/eb_runner.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes eval BUNDLE [--device cpu] [--db FILE] [options]\n"
            "\n"
            "Measures one bundle on a device across every facet of a suite's evaluation\n"
            "options (default: the quick suite's) and prints each value with its\n"
            "interval. With --db the result is also stored as a run of suite 'eval'.\n"
            "\n"
            "  --device NAME   the device (default: cpu)\n"
            "  --db FILE       store the result in this results database\n"
            "  --suite S       take the evaluation options from this suite (quick, paper\n"
            "                  or a file)\n"
            "  --label L       label of the stored run\n"
            "  --threads T     device threads (default: the suite's, or the online CPUs)\n"
            "  --strategy NAME the cpu device's execution strategy: auto (default), loop,\n"
            "                  stacked, ... (docs/devices.md)\n"
            "  --quiet         no progress on stderr\n"
            "  --json          machine-readable output\n"
            "  -h, --help      this help\n");
}

int eb_cmd_eval(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"device", required_argument, NULL, 'D'}, {"db", required_argument, NULL, 'd'},
        {"suite", required_argument, NULL, 's'},  {"label", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'}, {"strategy", required_argument, NULL, 'S'}, {"quiet", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    eb_eval_options o;
    eb_eval_metric *m;
    size_t n;
    int64_t run_id;
    eb_error err;
    int c, json = 0;
    long threads;

    memset(&o, 0, sizeof o);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'D': o.device = optarg; break;
        case 'd': o.db_path = optarg; break;
        case 's': o.suite = optarg; break;
        case 'l': o.label = optarg; break;
        case 't':
            if (eb_cli_parse_long(optarg, 1, 256, &threads))
                return eb_cli_usage_error("eval", "--threads '%s' is not a count from 1 to 256",
                                          optarg);
            o.threads = (int)threads;
            break;
        case 'S': o.strategy = optarg; break;
        case 'q': o.quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("eval", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("eval", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return eb_cli_usage_error("eval", "expected exactly one bundle file");
    o.bundle = argv[optind];
    if (eb_eval_bundle(&o, &m, &n, &run_id, &err))
        return eb_cli_fail("eval", &err);
    if (json) {
        printf("{\"bundle\": ");
        eb_cli_json_string(stdout, o.bundle);
        if (o.db_path)
            printf(", \"run\": %lld", (long long)run_id);
        printf(", \"metrics\": [");
        for (size_t i = 0; i < n; i++) {
            printf("%s\n  {\"facet\": \"%s\", \"name\": \"%s\", \"context\": ", i ? "," : "",
                   m[i].facet, m[i].name);
            eb_cli_json_string(stdout, m[i].context);
            printf(", \"value\": ");
            eb_cli_json_number(stdout, m[i].value);
            if (m[i].has_ci) {
                printf(", \"ci\": [");
                eb_cli_json_number(stdout, m[i].ci_low);
                printf(", ");
                eb_cli_json_number(stdout, m[i].ci_high);
                printf("]");
            }
            printf(", \"unit\": \"%s\"}", m[i].unit);
        }
        printf("\n]}\n");
    } else {
        for (size_t i = 0; i < n; i++) {
            char label[160];
            snprintf(label, sizeof label, "%s/%s%s%s", m[i].facet, m[i].name,
                     m[i].context[0] ? " " : "", m[i].context);
            printf("%-58s %14.6g", label, m[i].value);
            if (m[i].has_ci)
                printf("  [%.6g, %.6g]", m[i].ci_low, m[i].ci_high);
            printf(" %s\n", m[i].unit);
        }
        if (o.db_path)
            printf("stored as run %lld in %s\n", (long long)run_id, o.db_path);
    }
    eb_free(m);
    return EB_EXIT_OK;
}
