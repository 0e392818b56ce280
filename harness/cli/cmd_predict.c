/* cmd_predict.c: `edgebayes predict`: accuracy, NLL and OOD detection of a
 * bundle on Fashion-MNIST's test set against the MNIST digits. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "harness/eb_eval.h"
#include "methods/eb_bundle.h"
#include "methods/eb_methods.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes predict FILE [--split test|ood] [options]\n"
            "\n"
            "Predicts with a bundle and prints, for --split test (default), accuracy,\n"
            "NLL and Brier score on Fashion-MNIST's 10,000 test images; for --split ood,\n"
            "the uncertainty on the 10,000 MNIST digits. Both print the AUROC of\n"
            "predictive entropy (and of mutual information) for telling MNIST\n"
            "(positive) from Fashion-MNIST test images.\n"
            "\n"
            "  --split S     test or ood\n"
            "  --samples S   draws (dropout passes, or the first S members); default: the\n"
            "                bundle's\n"
            "  --seed N      seed of stochastic passes (default 1)\n"
            "  --threads T   BLAS threads (default 1)\n"
            "  --json        machine-readable output\n"
            "  -h, --help    this help\n");
}

int eb_cmd_predict(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"split", required_argument, NULL, 'p'}, {"samples", required_argument, NULL, 'S'},
        {"seed", required_argument, NULL, 's'},  {"threads", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *split = "test";
    int json = 0, c, rc = EB_EXIT_FAIL;
    long samples = 0, threads = 1;
    uint64_t seed = 1;
    eb_bundle *b = NULL;
    eb_posterior post;
    eb_dataset test, ood;
    eb_eval_result r;
    eb_error err;

    memset(&test, 0, sizeof test);
    memset(&ood, 0, sizeof ood);
    memset(&post, 0, sizeof post); /* released at done: whatever failed */
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (strcmp(optarg, "test") && strcmp(optarg, "ood"))
                return eb_cli_usage_error("predict", "--split must be test or ood, not '%s'",
                                          optarg);
            split = optarg;
            break;
        case 'S':
            if (eb_cli_parse_long(optarg, 1, 100000, &samples))
                return eb_cli_usage_error("predict", "--samples '%s' is not a count from 1 to "
                                          "100000", optarg);
            break;
        case 's':
            if (eb_cli_parse_u64(optarg, &seed))
                return eb_cli_usage_error("predict", "--seed '%s' is not a non-negative integer",
                                          optarg);
            break;
        case 't':
            if (eb_cli_parse_long(optarg, 1, 256, &threads))
                return eb_cli_usage_error("predict", "--threads '%s' is not a count from 1 to 256",
                                          optarg);
            break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("predict", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("predict", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return eb_cli_usage_error("predict", "expected exactly one bundle file");
    eb_nn_set_threads((int)threads);
    if (eb_bundle_open(argv[optind], EB_BUNDLE_OPEN_DEFAULT, &b, &err) ||
        eb_posterior_from_bundle(b, &post, &err) ||
        eb_cli_load_dataset("fashion-mnist", "test", &test, &err) ||
        eb_cli_load_dataset("mnist", "ood", &ood, &err) ||
        eb_evaluate(&post, &test, &ood, (uint32_t)samples, seed, &r, &err)) {
        rc = eb_cli_fail("predict", &err);
        goto done;
    }
    if (json) {
        printf("{\"bundle\": ");
        eb_cli_json_string(stdout, argv[optind]);
        printf(", \"method\": ");
        eb_cli_json_string(stdout, eb_bundle_meta_get(b, "method") ? eb_bundle_meta_get(b, "method")
                                                                   : "");
        printf(", \"split\": \"%s\", \"draws\": %u", split, r.draws);
        if (!strcmp(split, "test")) {
            printf(", \"n\": %zu, \"accuracy\": ", r.n_test);
            eb_cli_json_number(stdout, r.accuracy);
            printf(", \"nll\": ");
            eb_cli_json_number(stdout, r.nll);
            printf(", \"brier\": ");
            eb_cli_json_number(stdout, r.brier);
            printf(", \"mean_entropy\": ");
            eb_cli_json_number(stdout, r.test_entropy);
            printf(", \"mean_mutual_info\": ");
            eb_cli_json_number(stdout, r.test_mi);
        } else {
            printf(", \"n\": %zu, \"mean_entropy\": ", r.n_ood);
            eb_cli_json_number(stdout, r.ood_entropy);
            printf(", \"mean_mutual_info\": ");
            eb_cli_json_number(stdout, r.ood_mi);
        }
        printf(", \"ood_auroc_entropy\": ");
        eb_cli_json_number(stdout, r.auroc_entropy);
        printf(", \"ood_auroc_mutual_info\": ");
        eb_cli_json_number(stdout, r.auroc_mi);
        printf(", \"predict_seconds\": ");
        eb_cli_json_number(stdout, r.predict_seconds);
        printf("}\n");
    } else {
        printf("bundle            %s (%s, %u draws)\n", argv[optind],
               eb_bundle_meta_get(b, "method") ? eb_bundle_meta_get(b, "method") : "?", r.draws);
        if (!strcmp(split, "test")) {
            printf("test images       %zu (fashion-mnist)\n", r.n_test);
            printf("accuracy          %.4f\n", r.accuracy);
            printf("NLL               %.4f\n", r.nll);
            printf("Brier             %.4f\n", r.brier);
            printf("mean entropy      %.4f nats\n", r.test_entropy);
        } else {
            printf("OOD images        %zu (mnist)\n", r.n_ood);
            printf("mean entropy      %.4f nats\n", r.ood_entropy);
            printf("mean mutual info  %.4f nats\n", r.ood_mi);
        }
        printf("OOD AUROC         %.4f by entropy, %.4f by mutual information\n",
               r.auroc_entropy, r.auroc_mi);
    }
    rc = EB_EXIT_OK;
done:
    eb_dataset_free(&test);
    eb_dataset_free(&ood);
    eb_posterior_release(&post);
    eb_bundle_close(b);
    return rc;
}
