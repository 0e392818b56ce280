/* cmd_merge.c: `edgebayes merge`: combine shard databases. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "results/eb_results.h"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: edgebayes merge OUT.db IN.db...\n"
                "\n"
                "Merges results databases (for example the shards of 'edgebayes run\n"
                "--shard i/n') into OUT.db, created if missing. Runs are matched by uuid,\n"
                "jobs by run and key, artifacts by SHA-256, so merging the same input twice\n"
                "changes nothing. Every input is validated first; an input that is not an\n"
                "edgebayes results database is refused by name and nothing is written.\n"
                "\n"
                "  --json      print the counts as JSON\n"
                "  -h, --help  this help\n");
}

int eb_cmd_merge(int argc, char **argv)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    eb_results_merge_stats st;
    eb_error err;
    int c, json = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        default: return eb_cli_usage_error("merge", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind < 2)
        return eb_cli_usage_error("merge", "expected OUT.db and at least one IN.db");
    if (eb_results_merge(argv[optind], (const char *const *)argv + optind + 1,
                         (size_t)(argc - optind - 1), &st, &err))
        return eb_cli_fail("merge", &err);
    if (json)
        printf("{\"out\": \"%s\", \"inputs\": %zu, \"runs_added\": %zu, \"runs_finished\": %zu, "
               "\"jobs_added\": %zu, \"jobs_replaced\": %zu, \"artifacts_added\": %zu}\n",
               argv[optind], st.inputs, st.runs_added, st.runs_finished, st.jobs_added,
               st.jobs_replaced, st.artifacts_added);
    else
        printf("merged %zu databases into %s: %zu runs, %zu jobs (%zu replaced failed ones), %zu "
               "artifacts added\n",
               st.inputs, argv[optind], st.runs_added, st.jobs_added, st.jobs_replaced,
               st.artifacts_added);
    return EB_EXIT_OK;
}
