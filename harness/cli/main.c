/* main.c: the edgebayes command line. Each subcommand lives in its own
 * cmd_<name>.c; this file dispatches and owns process exit codes:
 * 0 success, 1 failure, 2 usage error. */
#include <stdio.h>
#include <string.h>

#include "common/eb_version.h"
#include "harness/cli/cli.h"

static const eb_cli_command commands[] = {
    {"run", eb_cmd_run, "run a suite (default: quick) into the results database"},
    {"report", eb_cmd_report, "render the results database: page, tables, gnuplot plots"},
    {"compare", eb_cmd_compare, "a candidate run against a base run; exit 1 on regression"},
    {"merge", eb_cmd_merge, "combine shard databases"},
    {"eval", eb_cmd_eval, "measure one bundle on a device across every facet"},
    {"train", eb_cmd_train, "train one method into a posterior bundle"},
    {"transform", eb_cmd_transform, "prune, quantize or distil a bundle into a new one"},
    {"inspect", eb_cmd_inspect, "show what a bundle holds"},
    {"predict", eb_cmd_predict, "accuracy, NLL and OOD detection of a bundle"},
    {"help", NULL, "show this help"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: edgebayes <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'edgebayes <command> --help' describes each command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EB_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("edgebayes %s (%s)\n", eb_version(), eb_version_commit());
        return EB_EXIT_OK;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return EB_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].run && !strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "edgebayes: unknown command '%s' (try 'edgebayes help')\n", argv[1]);
    return EB_EXIT_USAGE;
}
