/* cmd_transform.c: `edgebayes transform`: one transform applied to a
 * bundle, written as a new bundle with its parent recorded. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "harness/cli/cli.h"
#include "harness/eb_progress.h"
#include "methods/eb_transform.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes transform TRANSFORM IN -o OUT [options]\n"
            "\n"
            "Applies a transform to the bundle IN and writes the result to OUT\n"
            "(atomically), with IN recorded as its parent. Transforms that fine-tune\n"
            "or distil train on Fashion-MNIST's training set.\n"
            "\n"
            "  TRANSFORM       one of:");
    for (int i = 0; eb_transforms[i]; i++)
        fprintf(fp, " %s", eb_transforms[i]->name);
    fprintf(fp,
            "\n"
            "  -o, --output F  bundle file to write\n"
            "  --set KEY=VAL   a transform setting; repeatable (see below)\n"
            "  --seed N        random seed (default 1)\n"
            "  --threads T     threads (default 1)\n"
            "  --quiet         no progress on stderr\n"
            "  --json          print the summary as JSON\n"
            "  -h, --help      this help\n"
            "\n"
            "Settings per transform (default in brackets):\n");
    for (int i = 0; eb_transforms[i]; i++) {
        const eb_transform *t = eb_transforms[i];
        fprintf(fp, "  %s: %s\n", t->name, t->summary);
        for (int k = 0; t->settings[k].key; k++)
            fprintf(fp, "    %-15s %s [%s]%s\n", t->settings[k].key, t->settings[k].help,
                    t->settings[k].def,
                    t->short_key && !strcmp(t->short_key, t->settings[k].key)
                        ? " (the value of a chain step 'name:value')"
                        : "");
    }
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int eb_cmd_transform(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'}, {"set", required_argument, NULL, 'k'},
        {"seed", required_argument, NULL, 's'},   {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *out = NULL, *in, *sets[64];
    int nsets = 0, quiet = 0, json = 0, c;
    long threads = 1;
    uint64_t seed = 1;
    const eb_transform *t;
    eb_settings settings;
    eb_dataset train;
    int have_train = 0;
    eb_error err;
    eb_progress_out prog;
    double t0, secs = 0.0;
    eb_status st;

    eb_error_clear(&err);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'k':
            if (nsets == 64)
                return eb_cli_usage_error("transform", "more than 64 --set options");
            sets[nsets++] = optarg;
            break;
        case 's':
            if (eb_cli_parse_u64(optarg, &seed))
                return eb_cli_usage_error("transform",
                                          "--seed '%s' is not a non-negative integer", optarg);
            break;
        case 't':
            if (eb_cli_parse_long(optarg, 1, 256, &threads))
                return eb_cli_usage_error("transform",
                                          "--threads '%s' is not a count from 1 to 256", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("transform", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("transform", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return eb_cli_usage_error("transform", "give a transform and one input bundle");
    if (!out)
        return eb_cli_usage_error("transform", "-o OUT is required");
    t = eb_transform_find(argv[optind]);
    if (!t)
        return eb_cli_usage_error("transform", "unknown transform '%s'", argv[optind]);
    in = argv[optind + 1];
    if (!strcmp(in, out))
        return eb_cli_usage_error("transform", "OUT must differ from IN ('%s')", in);
    if (eb_transform_settings(t, &settings, &err))
        return eb_cli_fail("transform", &err);
    for (int i = 0; i < nsets; i++)
        if (eb_settings_assign(&settings, sets[i], &err))
            return eb_cli_usage_error("transform", "--set: %s", err.msg);
    if (eb_transform_needs_train(t, &settings)) {
        if (eb_cli_load_dataset("fashion-mnist", "train", &train, &err))
            return eb_cli_fail("transform", &err);
        have_train = 1;
    }
    eb_progress_out_init(&prog, stderr, t->name, quiet);
    t0 = now_sec();
    st = eb_transform_bundle(t, in, have_train ? &train : NULL, &settings, seed, (int)threads,
                             eb_progress_report, &prog, out, &secs, &err);
    eb_progress_out_finish(&prog);
    if (have_train)
        eb_dataset_free(&train);
    if (st)
        return eb_cli_fail("transform", &err);
    if (json) {
        printf("{\"bundle\": ");
        eb_cli_json_string(stdout, out);
        printf(", \"parent\": ");
        eb_cli_json_string(stdout, in);
        printf(", \"transform\": ");
        eb_cli_json_string(stdout, t->name);
        printf(", \"seed\": %llu, \"threads\": %ld, \"seconds\": ", (unsigned long long)seed,
               threads);
        eb_cli_json_number(stdout, now_sec() - t0);
        printf("}\n");
    } else {
        printf("wrote %s (%s of %s) in %.1f s\n", out, t->name, in, now_sec() - t0);
    }
    return EB_EXIT_OK;
}
