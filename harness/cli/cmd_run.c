/* cmd_run.c: `edgebayes run`: the main job on its built-in default: train
 * the default models (map, a 5-member deep ensemble and MC dropout on the
 * `mlp` architecture), write their bundles, and print their evaluation.
 * A bundle already on disk whose metadata matches the request (method,
 * architecture, seed, every setting, code commit) is reused, so a rerun
 * trains nothing already built. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/eb_io.h"
#include "common/eb_version.h"
#include "harness/cli/cli.h"
#include "harness/eb_eval.h"
#include "harness/eb_progress.h"
#include "methods/eb_methods.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: edgebayes run [--out DIR] [--arch mlp|cnn] [options]\n"
            "\n"
            "Trains the default models (map; ensemble of 5; MC dropout with 30 passes)\n"
            "on Fashion-MNIST, writes their bundles to DIR/bundles, and prints accuracy,\n"
            "NLL, Brier score and the OOD AUROC against MNIST for each. Bundles already\n"
            "built with the same settings and code are reused.\n"
            "\n"
            "  --out DIR     output directory (default: out)\n"
            "  --arch A      mlp (default) or cnn\n"
            "  --seed N      seed (default 1)\n"
            "  --threads T   BLAS threads (default: the online CPUs)\n"
            "  --quiet       no progress on stderr\n"
            "  --json        print the evaluation as JSON\n"
            "  -h, --help    this help\n");
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 1 if the bundle at path was built from exactly this request. */
static int reusable(const char *path, const eb_method *m, const eb_train_request *req)
{
    eb_bundle *b;
    int ok = 1;
    char seed[32];
    if (!eb_file_exists(path) || eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &b, NULL))
        return 0;
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)req->seed);
#define SAME(key, want) (eb_bundle_meta_get(b, key) && !strcmp(eb_bundle_meta_get(b, key), want))
    ok &= SAME("method", m->name) && SAME("arch", req->arch_name) && SAME("seed", seed) &&
          SAME("code.commit", eb_version_commit()) && SAME("data.sha256", req->train->digest);
    for (int i = 0; i < req->settings->n; i++) {
        char key[80];
        snprintf(key, sizeof key, "hp.%s", req->settings->spec[i].key);
        ok &= SAME(key, req->settings->value[i]);
    }
#undef SAME
    eb_bundle_close(b);
    return ok;
}

typedef struct row {
    const char *method;
    eb_eval_result r;
    unsigned long long bytes;
    double train_s;
    int reused;
    char path[1024];
} row;

int eb_cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},   {"arch", required_argument, NULL, 'a'},
        {"seed", required_argument, NULL, 's'},  {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},       {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    static const char *const methods[] = {"map", "ensemble", "dropout"};
    const char *out = "out", *arch_name = "mlp";
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    int quiet = 0, json = 0, c, rc = EB_EXIT_FAIL;
    uint64_t seed = 1;
    eb_arch arch;
    eb_dataset train, test, ood;
    eb_error err;
    char dir[1024];
    row rows[3];

    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    memset(&ood, 0, sizeof ood);
    memset(rows, 0, sizeof rows);
    if (threads < 1)
        threads = 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'a':
            if (strcmp(optarg, "mlp") && strcmp(optarg, "cnn"))
                return eb_cli_usage_error("run", "--arch must be mlp or cnn, not '%s'", optarg);
            arch_name = optarg;
            break;
        case 's':
            if (eb_cli_parse_u64(optarg, &seed))
                return eb_cli_usage_error("run", "--seed '%s' is not a non-negative integer",
                                          optarg);
            break;
        case 't':
            if (eb_cli_parse_long(optarg, 1, 256, &threads))
                return eb_cli_usage_error("run", "--threads '%s' is not a count from 1 to 256",
                                          optarg);
            break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        case ':': return eb_cli_usage_error("run", "%s needs a value", argv[optind - 1]);
        default: return eb_cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return eb_cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
    if (snprintf(dir, sizeof dir, "%s/bundles", out) >= (int)sizeof dir)
        return eb_cli_usage_error("run", "--out '%s' is too long", out);
    if (eb_mkdirs(dir, &err) || eb_arch_named(arch_name, &arch, &err) ||
        eb_cli_load_dataset("fashion-mnist", "train", &train, &err) ||
        eb_cli_load_dataset("fashion-mnist", "test", &test, &err) ||
        eb_cli_load_dataset("mnist", "ood", &ood, &err)) {
        rc = eb_cli_fail("run", &err);
        goto done;
    }
    eb_nn_set_threads((int)threads);
    for (int i = 0; i < 3; i++) {
        const eb_method *m = eb_method_find(methods[i]);
        eb_settings settings;
        eb_train_request req;
        eb_progress_out prog;
        eb_bundle *b = NULL;
        eb_posterior post;
        char label[64];
        double t0 = now_sec();

        row *rw = &rows[i];
        rw->method = methods[i];
        if (snprintf(rw->path, sizeof rw->path, "%s/%s-%s-seed%llu.ebb", dir, methods[i],
                     arch_name, (unsigned long long)seed) >= (int)sizeof rw->path) {
            rc = eb_cli_usage_error("run", "--out '%s' is too long", out);
            goto done;
        }
        if (eb_method_settings(m, arch_name, &settings, &err)) {
            rc = eb_cli_fail("run", &err);
            goto done;
        }
        memset(&req, 0, sizeof req);
        snprintf(label, sizeof label, "%s/%s", methods[i], arch_name);
        eb_progress_out_init(&prog, stderr, label, quiet);
        req.arch = &arch;
        req.arch_name = arch_name;
        req.train = &train;
        req.settings = &settings;
        req.seed = seed;
        req.threads = (int)threads;
        req.progress = eb_progress_report;
        req.progress_ctx = &prog;
        if (reusable(rw->path, m, &req)) {
            rw->reused = 1;
            if (!quiet)
                fprintf(stderr, "%s: reusing %s\n", label, rw->path);
        } else if (eb_method_train_bundle(m, &req, rw->path, &err)) {
            eb_progress_out_finish(&prog);
            rc = eb_cli_fail("run", &err);
            goto done;
        }
        eb_progress_out_finish(&prog);
        rw->train_s = rw->reused ? 0.0 : now_sec() - t0;
        if (eb_bundle_open(rw->path, EB_BUNDLE_OPEN_DEFAULT, &b, &err) ||
            eb_posterior_from_bundle(b, &post, &err) ||
            eb_evaluate(&post, &test, &ood, 0, seed, &rw->r, &err)) {
            eb_bundle_close(b);
            rc = eb_cli_fail("run", &err);
            goto done;
        }
        rw->bytes = (unsigned long long)eb_bundle_file_size(b);
        eb_bundle_close(b);
    }
    if (json) {
        printf("[");
        for (int i = 0; i < 3; i++) {
            const row *rw = &rows[i];
            printf("%s\n {\"method\": \"%s\", \"arch\": \"%s\", \"bundle\": ", i ? "," : "",
                   rw->method, arch_name);
            eb_cli_json_string(stdout, rw->path);
            printf(", \"draws\": %u, \"accuracy\": ", rw->r.draws);
            eb_cli_json_number(stdout, rw->r.accuracy);
            printf(", \"nll\": ");
            eb_cli_json_number(stdout, rw->r.nll);
            printf(", \"brier\": ");
            eb_cli_json_number(stdout, rw->r.brier);
            printf(", \"ood_auroc_entropy\": ");
            eb_cli_json_number(stdout, rw->r.auroc_entropy);
            printf(", \"ood_auroc_mutual_info\": ");
            eb_cli_json_number(stdout, rw->r.auroc_mi);
            printf(", \"bundle_bytes\": %llu, \"train_seconds\": ", rw->bytes);
            eb_cli_json_number(stdout, rw->train_s);
            printf(", \"reused\": %s}", rw->reused ? "true" : "false");
        }
        printf("\n]\n");
    } else {
        printf("%-9s %-4s %4s %9s %8s %8s %11s %11s %12s %9s\n", "method", "arch", "S", "accuracy",
               "NLL", "Brier", "AUROC(H)", "AUROC(MI)", "bytes", "train s");
        for (int i = 0; i < 3; i++) {
            const row *rw = &rows[i];
            char secs[16];
            if (rw->reused)
                snprintf(secs, sizeof secs, "reused");
            else
                snprintf(secs, sizeof secs, "%.1f", rw->train_s);
            printf("%-9s %-4s %4u %9.4f %8.4f %8.4f %11.4f %11.4f %12llu %9s\n", rw->method,
                   arch_name, rw->r.draws, rw->r.accuracy, rw->r.nll, rw->r.brier,
                   rw->r.auroc_entropy, rw->r.auroc_mi, rw->bytes, secs);
        }
        printf("test: fashion-mnist (%zu images); OOD: mnist (%zu digits); bundles in %s\n",
               test.n, ood.n, dir);
    }
    rc = EB_EXIT_OK;
done:
    eb_dataset_free(&train);
    eb_dataset_free(&test);
    eb_dataset_free(&ood);
    return rc;
}
