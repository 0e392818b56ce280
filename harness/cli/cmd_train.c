/* cmd_train.c: `edgebayes train`: train one method into a bundle. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "harness/cli/cli.h"
#include "harness/eb_progress.h"
#include "methods/eb_methods.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes train --method METHOD --arch ARCH -o FILE [options]\n"
            "\n"
            "Trains a posterior approximation on Fashion-MNIST's training set and writes\n"
            "it as a bundle.\n"
            "\n"
            "  --method M      one of:");
    for (int i = 0; eb_methods[i]; i++)
        fprintf(fp, " %s", eb_methods[i]->name);
    fprintf(fp,
            "\n"
            "  --arch A        mlp, cnn, mlp-small, or an architecture text such as\n"
            "                  'input 28x28x1; flatten; dense 64; relu; dense 10'\n"
            "  -o, --output F  bundle file to write (atomically)\n"
            "  --samples S     ensemble members, or dropout passes at prediction\n"
            "  --epochs E      passes over the training set\n"
            "  --seed N        random seed (default 1)\n"
            "  --threads T     BLAS threads (default 1)\n"
            "  --set KEY=VAL   a method setting; repeatable (see below)\n"
            "  --quiet         no progress on stderr\n"
            "  --json          print the summary as JSON\n"
            "  -h, --help      this help\n"
            "\n"
            "Settings per method (default in brackets):\n");
    for (int i = 0; eb_methods[i]; i++) {
        const eb_method *m = eb_methods[i];
        fprintf(fp, "  %s: %s\n", m->name, m->summary);
        for (int k = 0; m->settings[k].key; k++)
            fprintf(fp, "    %-13s %s [%s]\n", m->settings[k].key, m->settings[k].help,
                    m->settings[k].def);
    }
    fprintf(fp, "The cnn architecture defaults to epochs=12.\n");
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int eb_cmd_train(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"method", required_argument, NULL, 'm'}, {"arch", required_argument, NULL, 'a'},
        {"output", required_argument, NULL, 'o'}, {"samples", required_argument, NULL, 'S'},
        {"epochs", required_argument, NULL, 'E'}, {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"set", required_argument, NULL, 'k'},
        {"quiet", no_argument, NULL, 'q'},        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *method_name = NULL, *arch_arg = NULL, *out = NULL, *samples = NULL,
               *epochs = NULL;
    const char *sets[64];
    int nsets = 0, quiet = 0, json = 0, c;
    long threads = 1;
    uint64_t seed = 1;
    const eb_method *m;
    eb_arch arch;
    eb_settings settings;
    eb_dataset train;
    eb_error err;
    eb_train_request req;
    eb_progress_out prog;
    char label[64];
    double t0;

    eb_error_clear(&err);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': method_name = optarg; break;
        case 'a': arch_arg = optarg; break;
        case 'o': out = optarg; break;
        case 'S': samples = optarg; break;
        case 'E': epochs = optarg; break;
        case 's':
            if (eb_cli_parse_u64(optarg, &seed))
                return eb_cli_usage_error("train", "--seed '%s' is not a non-negative integer",
                                          optarg);
            break;
        case 't':
            if (eb_cli_parse_long(optarg, 1, 256, &threads))
                return eb_cli_usage_error("train", "--threads '%s' is not a count from 1 to 256",
                                          optarg);
            break;
        case 'k':
            if (nsets == 64)
                return eb_cli_usage_error("train", "more than 64 --set options");
            sets[nsets++] = optarg;
            break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("train", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("train", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return eb_cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!method_name || !arch_arg || !out)
        return eb_cli_usage_error("train", "--method, --arch and -o are required");
    m = eb_method_find(method_name);
    if (!m)
        return eb_cli_usage_error("train", "unknown method '%s'", method_name);
    if (!strchr(arch_arg, ' ') && !strchr(arch_arg, ';')) {
        if (eb_arch_named(arch_arg, &arch, &err))
            return eb_cli_usage_error("train", "--arch: %s", err.msg);
    } else if (eb_arch_parse(arch_arg, &arch, &err)) {
        return eb_cli_usage_error("train", "--arch: %s", err.msg);
    }
    if (eb_method_settings(m, strchr(arch_arg, ' ') ? "custom" : arch_arg, &settings, &err))
        return eb_cli_fail("train", &err);
    if (epochs && eb_settings_set(&settings, "epochs", epochs, &err))
        return eb_cli_usage_error("train", "--epochs: %s", err.msg);
    if (samples) {
        int has = 0;
        for (int k = 0; m->settings[k].key; k++)
            has |= !strcmp(m->settings[k].key, "samples");
        if (!has)
            return eb_cli_usage_error("train", "--samples does not apply to method '%s'", m->name);
        if (eb_settings_set(&settings, "samples", samples, &err))
            return eb_cli_usage_error("train", "--samples: %s", err.msg);
    }
    for (int i = 0; i < nsets; i++)
        if (eb_settings_assign(&settings, sets[i], &err))
            return eb_cli_usage_error("train", "--set: %s", err.msg);

    if (eb_cli_load_dataset("fashion-mnist", "train", &train, &err))
        return eb_cli_fail("train", &err);
    snprintf(label, sizeof label, "%s/%s", m->name,
             strchr(arch_arg, ' ') ? "custom" : arch_arg);
    eb_progress_out_init(&prog, stderr, label, quiet);
    memset(&req, 0, sizeof req);
    req.arch = &arch;
    req.arch_name = strchr(arch_arg, ' ') ? "custom" : arch_arg;
    req.train = &train;
    req.settings = &settings;
    req.seed = seed;
    req.threads = (int)threads;
    req.progress = eb_progress_report;
    req.progress_ctx = &prog;
    t0 = now_sec();
    if (eb_method_train_bundle(m, &req, out, &err)) {
        eb_progress_out_finish(&prog);
        eb_dataset_free(&train);
        return eb_cli_fail("train", &err);
    }
    eb_progress_out_finish(&prog);
    eb_dataset_free(&train);
    if (json) {
        printf("{\"bundle\": ");
        eb_cli_json_string(stdout, out);
        printf(", \"method\": ");
        eb_cli_json_string(stdout, m->name);
        printf(", \"arch\": ");
        eb_cli_json_string(stdout, req.arch_name);
        printf(", \"seed\": %llu, \"threads\": %ld, \"params\": %zu, \"train_seconds\": ",
               (unsigned long long)seed, threads, arch.n_params);
        eb_cli_json_number(stdout, now_sec() - t0);
        printf("}\n");
    } else {
        printf("wrote %s (%s, %s, seed %llu, K = %zu) in %.1f s\n", out, m->name, req.arch_name,
               (unsigned long long)seed, arch.n_params, now_sec() - t0);
    }
    return EB_EXIT_OK;
}
