/* cmd_report.c: `edgebayes report`: render the results database. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "reports/eb_report.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes report [--db FILE] [-o DIR] [--runs RUN...] [options]\n"
            "\n"
            "Writes DIR/index.html (provenance, the multi-facet table with the best value\n"
            "per column marked, every plot), tables.md and tables.tex (booktabs), and\n"
            "for every plot a gnuplot script with its data beside the PNG, SVG and PDF it\n"
            "renders, so one plot can be restyled and rerun (docs/reports.md). Reads the\n"
            "database only.\n"
            "\n"
            "  --db FILE        results database (default: out/results.db)\n"
            "  -o, --out DIR    output directory (default: out/report)\n"
            "  --runs R         a run id, uuid or label; repeatable (default: the latest\n"
            "                   finished run)\n"
            "  --history KEY    a column for the history plot; repeatable (default:\n"
            "                   accuracy, nll, ece, ood_auroc_entropy, latency_p50)\n"
            "  --gnuplot PROG   gnuplot to run (default: gnuplot on PATH)\n"
            "  --title T        page title\n"
            "  -h, --help       this help\n"
            "\n"
            "Columns:");
    for (size_t i = 0; i < eb_report_column_count(); i++)
        fprintf(fp, "%s %s", i ? "," : "", eb_report_column_key(i));
    fprintf(fp, "\n");
}

int eb_cmd_report(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},      {"out", required_argument, NULL, 'o'},
        {"runs", required_argument, NULL, 'r'},    {"history", required_argument, NULL, 'H'},
        {"gnuplot", required_argument, NULL, 'g'}, {"title", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    const char *db = "out/results.db", *out = "out/report";
    const char *runs[64], *history[64];
    eb_report_options o;
    eb_error err;
    int c;

    memset(&o, 0, sizeof o);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'o': out = optarg; break;
        case 'r':
            if (o.n_runs == 64)
                return eb_cli_usage_error("report", "more than 64 --runs");
            runs[o.n_runs++] = optarg;
            break;
        case 'H':
            if (o.n_history == 64)
                return eb_cli_usage_error("report", "more than 64 --history keys");
            history[o.n_history++] = optarg;
            break;
        case 'g': o.gnuplot = optarg; break;
        case 'T': o.title = optarg; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("report", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("report", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return eb_cli_usage_error("report", "unexpected argument '%s'", argv[optind]);
    o.runs = o.n_runs ? runs : NULL;
    o.history = o.n_history ? history : NULL;
    if (eb_report_write(db, out, &o, &err))
        return eb_cli_fail("report", &err);
    printf("wrote %s/index.html\n", out);
    return EB_EXIT_OK;
}
