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
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
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
