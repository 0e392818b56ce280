/* bench/train.c: training throughput of one epoch of Fashion-MNIST for an
 * architecture, as images per second, the median of several timed epochs.
 * SGD with momentum 0.9, batch 128, constant learning rate, the same
 * recipe bench/train_torch.py runs in PyTorch.
 *
 * Verify before timing: the fast kernels are first checked against the
 * naive references on one batch, and every timed epoch must lower the
 * loss below its starting value; a failed check exits 1 without timing.
 *
 *   bench_train --arch mlp|cnn [--threads T] [--epochs N] [--json]
 *   bench_train --ingest FILE --db DB [--label L]
 *
 * The second form stores the JSON lines bench/train.sh collected (both
 * sides, every OpenBLAS variant) in a results database as a run of suite
 * 'bench-train': one job per (architecture, threads, side) at its fastest
 * variant, metric training/images_per_sec, and the edgebayes/PyTorch
 * ratio, so throughput joins the other facets (history, compare).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "results/eb_results.h"
#include "harness/eb_data.h"
#include "methods/eb_methods.h"
#include "methods/nn/nn_kernels.h"

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The first dense layer of the architecture, fast against naive, on one
 * batch of real images. */
static int verify_kernels(const eb_arch *a, const eb_dataset *d)
{
    const eb_layer *L = NULL;
    float *theta, *o1, *o2;
    eb_rng r;
    double worst = 0.0;
    int n = 32;
    for (int i = 0; i < a->n_layers && !L; i++)
        if (a->layers[i].kind == EB_LAYER_DENSE && a->layers[i].in_size == a->in_size)
            L = &a->layers[i];
    if (!L)
        return 0; /* conv-first: the conv kernels are covered by the unit tests */
    theta = malloc(a->n_params * sizeof *theta);
    o1 = malloc((size_t)n * L->units * sizeof *o1);
    o2 = malloc((size_t)n * L->units * sizeof *o2);
    eb_rng_seed(&r, 1, 0);
    eb_arch_init_params(a, theta, &r);
    eb_kern_dense_forward(o1, d->x, theta + L->param_offset,
                          theta + L->param_offset + L->n_weights, n, (int)L->in_size, L->units);
    eb_kern_dense_forward_naive(o2, d->x, theta + L->param_offset,
                                theta + L->param_offset + L->n_weights, n, (int)L->in_size,
                                L->units);
    for (size_t i = 0; i < (size_t)n * L->units; i++) {
        double e = fabs((double)o1[i] - o2[i]) / (1.0 + fabs((double)o2[i]));
        if (e > worst)
            worst = e;
    }
    free(theta);
    free(o1);
    free(o2);
    if (worst > 1e-4) {
        fprintf(stderr, "bench_train: fast dense kernel differs from the reference by %g\n",
                worst);
        return -1;
    }
    return 0;
}

/* A string or number field of one of our own JSON lines. */
static int json_field(const char *line, const char *key, char *out, size_t len)
{
    char pat[64];
    const char *p;
    size_t n = 0;
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    if (*p == '"') {
        p++;
        while (*p && *p != '"' && n + 1 < len)
            out[n++] = *p++;
    } else {
        while (*p && *p != ',' && *p != '}' && n + 1 < len)
            out[n++] = *p++;
    }
    out[n] = '\0';
    return 0;
}

typedef struct best_row {
    char arch[16], side[16], variant[16], blas[160];
    int threads;
    double ips;
} best_row;

static int ingest(const char *file, const char *db_path, const char *label)
{
    FILE *fp = fopen(file, "r");
    char line[2048];
    best_row rows[64];
    int n = 0;
    eb_results *db = NULL;
    eb_results_machine mach;
    eb_results_provenance p;
    eb_error err;
    int64_t run_id;
    char sha[65];

    if (!fp) {
        fprintf(stderr, "bench_train: cannot open '%s'\n", file);
        return 1;
    }
    while (fgets(line, sizeof line, fp)) {
        best_row r;
        char num[64];
        int k;
        memset(&r, 0, sizeof r);
        if (json_field(line, "arch", r.arch, sizeof r.arch) ||
            json_field(line, "side", r.side, sizeof r.side) ||
            json_field(line, "variant", r.variant, sizeof r.variant) ||
            json_field(line, "threads", num, sizeof num))
            continue;
        r.threads = atoi(num);
        if (json_field(line, "images_per_sec", num, sizeof num))
            continue;
        r.ips = strtod(num, NULL);
        if (json_field(line, "blas", r.blas, sizeof r.blas))
            snprintf(r.blas, sizeof r.blas, "unknown");
        for (k = 0; k < n; k++)
            if (!strcmp(rows[k].arch, r.arch) && !strcmp(rows[k].side, r.side) &&
                rows[k].threads == r.threads)
                break;
        if (k == n && n < 64)
            rows[n++] = r;
        else if (k < n && r.ips > rows[k].ips)
            rows[k] = r;
    }
    fclose(fp);
    if (n == 0) {
        fprintf(stderr, "bench_train: no measurements in '%s'\n", file);
        return 1;
    }
    if (eb_sha256_file(file, sha, &err) || eb_results_open(db_path, &db, &err) ||
        eb_results_machine_probe(&mach, &err))
        goto fail;
    memset(&p, 0, sizeof p);
    eb_results_provenance_set_machine(&p, &mach);
    p.label = label;
    p.suite = "bench-train";
    p.suite_sha256 = sha;
    p.shard = "1/1";
    p.environment = "{}";
    if (eb_results_run_begin(db, &p, &run_id, NULL, &err))
        goto fail;
    for (int i = 0; i < n; i++) {
        eb_results_job_def def;
        eb_results_metric m[2];
        char name[128], key[65], ctx[256];
        int nm = 1;
        double torch = 0.0;
        if (snprintf(name, sizeof name, "train-epoch/%s/t%d/%s", rows[i].arch, rows[i].threads,
                     rows[i].side) >= (int)sizeof name)
            continue;
        if (eb_sha256_buffer(name, strlen(name), key, &err))
            goto fail;
        memset(&def, 0, sizeof def);
        def.key = key;
        def.name = name;
        def.method = "bench";
        def.chain = "";
        def.arch = rows[i].arch;
        def.device = "cpu";
        def.draws = 1;
        /* which OpenBLAS build was fastest is a setting of the job, not a
         * context: contexts must stay stable for runs to compare */
        if (snprintf(ctx, sizeof ctx, "{\"openblas\": \"%s\"}", rows[i].variant) >= (int)sizeof ctx)
            continue;
        def.settings = ctx;
        memset(m, 0, sizeof m);
        m[0].facet = "training";
        m[0].name = "images_per_sec";
        m[0].context = "";
        m[0].value = rows[i].ips;
        m[0].unit = "images/s";
        m[0].higher_is_better = 1;
        for (int k = 0; k < n; k++)
            if (!strcmp(rows[k].side, "pytorch") && !strcmp(rows[k].arch, rows[i].arch) &&
                rows[k].threads == rows[i].threads)
                torch = rows[k].ips;
        if (!strcmp(rows[i].side, "edgebayes") && torch > 0.0) {
            m[1].facet = "training";
            m[1].name = "ratio_to_pytorch";
            m[1].context = "";
            m[1].value = rows[i].ips / torch;
            m[1].unit = "";
            m[1].higher_is_better = 1;
            nm = 2;
        }
        if (eb_results_job_begin(db, run_id, &def, NULL, &err) ||
            eb_results_job_metrics(db, m, (size_t)nm, &err) ||
            eb_results_job_commit(db, 0.0, &err)) {
            eb_results_job_abort(db);
            goto fail;
        }
    }
    if (eb_results_run_finish(db, run_id, &err))
        goto fail;
    eb_results_close(db);
    printf("stored %d measurements as run %lld in %s\n", n, (long long)run_id, db_path);
    return 0;
fail:
    fprintf(stderr, "bench_train: %s\n", eb_error_message(&err));
    eb_results_close(db);
    return 1;
}

int main(int argc, char **argv)
{
    const char *arch_name = "mlp";
    int threads = 1, epochs = 3, json = 0;
    eb_arch arch;
    eb_data_config cfg;
    eb_dataset train;
    eb_error err;
    eb_sgd_config sc;
    float *theta;
    double *ips;

    if (argc >= 2 && !strcmp(argv[1], "--ingest")) {
        const char *file = NULL, *db = NULL, *label = NULL;
        for (int i = 1; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--ingest"))
                file = argv[i + 1];
            else if (!strcmp(argv[i], "--db"))
                db = argv[i + 1];
            else if (!strcmp(argv[i], "--label"))
                label = argv[i + 1];
        }
        if (!file || !db) {
            fprintf(stderr, "usage: bench_train --ingest FILE --db DB [--label L]\n");
            return 2;
        }
        return ingest(file, db, label);
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--arch") && i + 1 < argc)
            arch_name = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc)
            epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else {
            fprintf(stderr, "usage: bench_train --arch mlp|cnn [--threads T] [--epochs N] "
                            "[--json]\n");
            return 2;
        }
    }
    if (threads < 1 || epochs < 1) {
        fprintf(stderr, "bench_train: --threads and --epochs must be positive\n");
        return 2;
    }
    if (eb_arch_named(arch_name, &arch, &err) || eb_data_config_default(&cfg, &err) ||
        eb_dataset_load("fashion-mnist", "train", &cfg, &train, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    eb_nn_set_threads(threads);
    if (verify_kernels(&arch, &train))
        return 1;
    memset(&sc, 0, sizeof sc);
    eb_optim_config_default(&sc.optim, EB_OPTIM_SGD);
    sc.optim.lr = 0.05f;
    sc.optim.momentum = 0.9f;
    sc.schedule = EB_SCHEDULE_CONSTANT;
    sc.batch = 128;
    sc.epochs = 1;
    sc.threads = threads; /* data-parallel workers, as `edgebayes train --threads` */
    theta = eb_malloc_aligned(64, arch.n_params * sizeof *theta);
    ips = calloc((size_t)epochs, sizeof *ips);
    for (int e = 0; e < epochs; e++) {
        double loss, t0 = now_sec();
        /* each timed epoch starts from a fresh initialisation: loss ~ln 10 */
        if (eb_sgd_train(&arch, &train, &sc, (uint64_t)e + 1, 0, theta, "bench", NULL, NULL,
                         &loss, &err)) {
            fprintf(stderr, "bench_train: %s\n", err.msg);
            return 1;
        }
        ips[e] = (double)train.n / (now_sec() - t0);
        if (!(loss < 0.9 * log(10.0))) {
            fprintf(stderr, "bench_train: epoch %d did not learn (mean loss %.4f)\n", e + 1, loss);
            return 1;
        }
        if (!json)
            fprintf(stderr, "bench_train %s threads=%d epoch %d: %.0f images/s, loss %.4f\n",
                    arch_name, threads, e + 1, ips[e], loss);
    }
    qsort(ips, (size_t)epochs, sizeof *ips, cmp_double);
    {
        double median = epochs % 2 ? ips[epochs / 2]
                                   : 0.5 * (ips[epochs / 2 - 1] + ips[epochs / 2]);
        if (json)
            printf("{\"side\": \"edgebayes\", \"arch\": \"%s\", \"threads\": %d, \"epochs\": %d, "
                   "\"images_per_sec\": %.1f, \"blas\": \"%s\"}\n",
                   arch_name, threads, epochs, median, eb_nn_blas_info());
        else
            printf("edgebayes %s threads=%d: %.0f images/s (median of %d epochs; %s)\n", arch_name,
                   threads, median, epochs, eb_nn_blas_info());
    }
    free(ips);
    eb_free_aligned(theta);
    eb_dataset_free(&train);
    return 0;
}
