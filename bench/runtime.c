/* bench/runtime.c: prediction runtime of the CPU backend's execution
 * strategies on synthetic posteriors, against the machine's roofline and
 * (through bench/runtime_torch.py's JSON lines) against PyTorch.
 *
 *   bench_runtime --setup DIR [--seed N]
 *   bench_runtime --dir DIR [--threads T] [--batch B] [--min-seconds X]
 *                 [--cases a,b] [--json] [--db DB [--label L]]
 *   bench_runtime --ingest FILE.jsonl [--ingest FILE2.jsonl] --db DB [--label L]
 *
 * --setup writes the cases (below) as bundles DIR/<case>.ebb from He-
 * initialised random weights (reproducible from --seed), and for the
 * PyTorch peer, for each f32 samples case, the raw weights DIR/<case>.f32
 * (S x K little-endian floats in the eb_nn.h theta layout), DIR/<case>.json
 * ({"arch", "S", "K", "arch_text"}), the fixed input DIR/input.f32 (784
 * floats, 28x28x1 NHWC) and DIR/<case>.probs.f32, the loop strategy's
 * member probabilities (S, 10) of that input at seed 0, so the peer checks
 * it computes the same function before it times anything.
 *
 * --dir measures every case under every strategy eb_strategy_names()
 * lists (a pair whose load says EB_ERR_UNSUPPORTED is skipped with a
 * note). Verify before timing: each strategy's member probabilities on 8
 * inputs are compared with the loop strategy's (max abs difference 1e-4
 * for strategies that reproduce loop's draws; a strategy that samples
 * differently, like lrt, is held to the mean over draws within 0.05); a
 * failed check exits 1 without timing that pair. Then eb_measure_load
 * (cold and warm load, first prediction), eb_measure_latency (one input
 * per call) and eb_measure_throughput (batches of --batch), with peak RSS
 * per phase. The machine's roofline is measured in the same run: read
 * bandwidth of a buffer well beyond the last-level cache and peak FMA
 * throughput, both at --threads; each pair gets its memory bound (weight
 * bytes / bandwidth), compute bound (FLOPs / peak) and the ratio of its
 * median latency to the larger. Prints a table, or with --json one JSON
 * line per (case, strategy) and one for the machine.
 *
 * --ingest stores JSON lines (ours and PyTorch's, {"side": "pytorch",
 * "case", "variant", ...}) in a results database as a run of suite
 * 'bench-runtime'; docs/bench.md lists the jobs and metrics. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "devices/eb_device.h"
#include "devices/strategy.h"
#include "methods/eb_methods.h"
#include "methods/eb_transform.h"
#include "methods/nn/nn_quant.h"
#include "results/eb_results.h"

#define N_INPUTS 256  /* inputs the latency and throughput loops cycle through */
#define N_VERIFY 8    /* inputs checked against loop before timing */
#define TOL_EXACT 1e-4
#define TOL_MEAN 0.05

/* ======================================================================
 * The cases.
 * ==================================================================== */

typedef enum { CASE_SAMPLES, CASE_INT8, CASE_GAUSSIAN, CASE_DROPOUT, CASE_F16 } case_kind;

typedef struct bench_case {
    const char *name;
    const char *arch; /* eb_arch_named */
    case_kind kind;
    uint32_t S;       /* members, or default draws */
} bench_case;

static const bench_case cases[] = {
    {"mlp-s1", "mlp", CASE_SAMPLES, 1},
    {"mlp-s10", "mlp", CASE_SAMPLES, 10},
    {"mlp-s30", "mlp", CASE_SAMPLES, 30},
    {"mlp-s100", "mlp", CASE_SAMPLES, 100},
    {"mlp-s100-int8", "mlp", CASE_INT8, 100}, /* quantized from mlp-s100 */
    {"mlp-s100-f16", "mlp", CASE_F16, 100},   /* the same, f16 */
    {"mlp-vi-s100", "mlp", CASE_GAUSSIAN, 100},
    {"mlp-dropout-s30", "mlp", CASE_DROPOUT, 30},
    {"cnn-s1", "cnn", CASE_SAMPLES, 1},
    {"cnn-s10", "cnn", CASE_SAMPLES, 10},
    {"cnn-s30", "cnn", CASE_SAMPLES, 30},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* The rate of the dropout method's default (methods/sgd_methods.c). */
#define DROPOUT_RATE 0.2f

static int path_of(char *out, size_t cap, const char *dir, const char *name, const char *ext)
{
    int n = snprintf(out, cap, "%s/%s%s", dir, name, ext);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int write_floats(const char *path, const float *v, size_t n, eb_error *err)
{
    FILE *fp = fopen(path, "wb");
    /* the project targets little-endian machines (docs/bundle-format.md),
     * so the in-memory floats are the file's bytes */
    if (!fp || fwrite(v, sizeof *v, n, fp) != n || fclose(fp) != 0) {
        if (fp)
            fclose(fp);
        eb_error_set(err, EB_ERR_IO, "cannot write '%s'", path);
        return -1;
    }
    return 0;
}

static int read_floats(const char *path, float *v, size_t n, eb_error *err)
{
    FILE *fp = fopen(path, "rb");
    size_t got = fp ? fread(v, sizeof *v, n, fp) : 0;
    if (fp)
        fclose(fp);
    if (got != n) {
        eb_error_set(err, EB_ERR_IO, "cannot read %zu floats from '%s' (run --setup first)", n,
                     path);
        return -1;
    }
    return 0;
}

/* The inputs: input 0 is DIR/input.f32, the rest uniform in [0, 1) from
 * a fixed stream (in_size 784 for both architectures). */
static void make_inputs(float *x /* (N_INPUTS, in) */, size_t in)
{
    eb_rng r;
    eb_rng_seed(&r, 7, 1);
    for (size_t i = 0; i < N_INPUTS * in; i++)
        x[i] = eb_rng_uniformf(&r);
}

/* Member s of a samples case: He-normal from its own stream, so the first
 * S members of mlp-s100 are mlp-s<S>'s. */
static void init_member(const eb_arch *a, float *theta, uint64_t seed, uint32_t s)
{
    eb_rng r;
    eb_rng_seed(&r, seed, 1000 + s);
    eb_arch_init_params(a, theta, &r);
}

static eb_status write_bundle(const char *path, const char *arch_text, const bench_case *c,
                              uint64_t K, const float *v, const float *sigma, uint64_t seed,
                              eb_error *err)
{
    eb_bundle_writer *w = NULL;
    char seed_text[32];
    eb_status st;
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    if ((st = eb_bundle_writer_new(&w, err)) || (st = eb_bundle_writer_arch(w, arch_text, err)))
        goto out;
    if (c->kind == CASE_GAUSSIAN)
        st = eb_bundle_writer_gaussian(w, c->S, K, v, sigma, err);
    else if (c->kind == CASE_DROPOUT)
        st = eb_bundle_writer_dropout(w, c->S, K, v, err);
    else
        st = eb_bundle_writer_samples(w, c->S, K, v, err);
    if (st || (st = eb_bundle_writer_meta(w, "method", "bench-runtime", err)) ||
        (st = eb_bundle_writer_meta(w, "bench.case", c->name, err)) ||
        (st = eb_bundle_writer_meta(w, "bench.seed", seed_text, err)))
        goto out;
    st = eb_bundle_write(w, path, err);
out:
    eb_bundle_writer_free(w);
    return st;
}

static eb_device *open_cpu(const char *strategy, int threads, int max_batch, eb_error *err)
{
    eb_device_config cfg;
    eb_device *dev = NULL;
    eb_device_config_default(&cfg);
    cfg.threads = threads;
    cfg.max_batch = max_batch;
    snprintf(cfg.options, sizeof cfg.options, "strategy=%s", strategy);
    if (eb_device_open("cpu", &cfg, &dev, err))
        return NULL;
    return dev;
}

/* The loop strategy's member probabilities (S, C) of input x, for the
 * peer's check. */
static int write_reference_probs(const char *dir, const bench_case *c, const float *x,
                                 eb_error *err)
{
    char path[4096], out[4096];
    eb_device *dev = open_cpu("loop", 1, 1, err);
    float *probs = NULL;
    int rc = -1;
    if (!dev)
        return -1;
    if (path_of(path, sizeof path, dir, c->name, ".ebb") ||
        path_of(out, sizeof out, dir, c->name, ".probs.f32")) {
        eb_error_set(err, EB_ERR_ARG, "directory name '%s' too long", dir);
        goto out;
    }
    if (eb_device_load(dev, path, NULL, err))
        goto out;
    probs = malloc((size_t)c->S * 10 * sizeof *probs);
    if (!probs || eb_device_predict(dev, x, 1, c->S, 0, 0, probs, err))
        goto out;
    rc = write_floats(out, probs, (size_t)c->S * 10, err);
out:
    free(probs);
    eb_device_close(dev);
    return rc;
}

static int setup(const char *dir, uint64_t seed)
{
    eb_error err;
    float *x = malloc(N_INPUTS * 784 * sizeof *x);
    char path[4096];
    int rc = 1;

    eb_error_clear(&err);
    if (!x)
        return 1;
    if (mkdir(dir, 0777) && access(dir, W_OK)) {
        fprintf(stderr, "bench_runtime: cannot create '%s'\n", dir);
        free(x);
        return 1;
    }
    make_inputs(x, 784);
    if (path_of(path, sizeof path, dir, "input", ".f32") || write_floats(path, x, 784, &err))
        goto fail;
    for (size_t i = 0; i < N_CASES; i++) {
        const bench_case *c = &cases[i];
        eb_arch arch;
        char text[EB_ARCH_TEXT_MAX], out[4096];
        float *v = NULL, *sigma = NULL;
        size_t rows = c->kind == CASE_SAMPLES ? c->S : 1;
        eb_status st;

        if (path_of(out, sizeof out, dir, c->name, ".ebb")) {
            eb_error_set(&err, EB_ERR_ARG, "directory name '%s' too long", dir);
            goto fail;
        }
        if (c->kind == CASE_INT8 || c->kind == CASE_F16) {
            /* the quantize transform of the f32 bundle with the same S */
            const eb_transform *t = eb_transform_find("quantize");
            eb_settings s;
            char parent[4096];
            snprintf(parent, sizeof parent, "%s/%s-s%u.ebb", dir, c->arch, c->S);
            if (!t || eb_transform_settings(t, &s, &err) ||
                eb_settings_set(&s, "precision", c->kind == CASE_INT8 ? "int8" : "f16", &err) ||
                eb_transform_bundle(t, parent, NULL, &s, seed, 1, NULL, NULL, out, NULL, &err))
                goto fail;
            fprintf(stderr, "bench_runtime: wrote %s\n", out);
            continue;
        }
        if (eb_arch_named(c->arch, &arch, &err))
            goto fail;
        if (c->kind == CASE_DROPOUT) {
            eb_arch base = arch;
            if (eb_arch_with_dropout(&base, DROPOUT_RATE, &arch, &err))
                goto fail;
        }
        if (eb_arch_format(&arch, text, sizeof text, &err))
            goto fail;
        v = malloc(rows * arch.n_params * sizeof *v);
        if (!v)
            goto fail;
        for (size_t s = 0; s < rows; s++)
            init_member(&arch, v + s * arch.n_params, seed, (uint32_t)s);
        if (c->kind == CASE_GAUSSIAN) {
            /* sigma = softplus(rho), rho uniform so sigma lies in [0.01, 0.05] */
            eb_rng r;
            double lo = log(expm1(0.01)), hi = log(expm1(0.05));
            sigma = malloc(arch.n_params * sizeof *sigma);
            if (!sigma) {
                free(v);
                goto fail;
            }
            eb_rng_seed(&r, seed, 999);
            for (size_t k = 0; k < arch.n_params; k++)
                sigma[k] = (float)log1p(exp(lo + (hi - lo) * eb_rng_uniform(&r)));
        }
        st = write_bundle(out, text, c, arch.n_params, v, sigma, seed, &err);
        if (!st && c->kind == CASE_SAMPLES) {
            /* the peer's copy: raw weights, their description, reference probs */
            char raw[4096], json[4096];
            FILE *fp;
            if (path_of(raw, sizeof raw, dir, c->name, ".f32") ||
                path_of(json, sizeof json, dir, c->name, ".json") ||
                write_floats(raw, v, rows * arch.n_params, &err)) {
                st = EB_ERR_IO;
            } else if (!(fp = fopen(json, "w"))) {
                st = eb_error_set(&err, EB_ERR_IO, "cannot write '%s'", json);
            } else {
                fprintf(fp, "{\"arch\": \"%s\", \"S\": %u, \"K\": %zu, \"arch_text\": \"",
                        c->arch, c->S, arch.n_params);
                for (const char *q = text; *q; q++) /* JSON-escaped: newlines, quotes */
                    if (*q == '\n')
                        fputs("\\n", fp);
                    else if (*q == '"' || *q == '\\')
                        fprintf(fp, "\\%c", *q);
                    else
                        fputc(*q, fp);
                fputs("\"}\n", fp);
                if (fclose(fp))
                    st = eb_error_set(&err, EB_ERR_IO, "cannot write '%s'", json);
            }
            if (!st && write_reference_probs(dir, c, x, &err))
                st = EB_ERR_IO;
        }
        free(v);
        free(sigma);
        if (st)
            goto fail;
        fprintf(stderr, "bench_runtime: wrote %s (K %zu)\n", out, arch.n_params);
    }
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "bench_runtime: %s\n", eb_error_message(&err));
    free(x);
    return rc;
}

/* ======================================================================
 * The roofline: read bandwidth and peak FMA throughput.
 * ==================================================================== */

/* Sum of p[0..n) with 32 independent accumulators (n a multiple of 32),
 * so the loads, not the add latency, bound it. Each target gets its own
 * clone: the widest loads the machine has. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static float
sum_block(const float *p, size_t n)
{
    float acc[32] = {0};
    for (size_t i = 0; i < n; i += 32)
        for (int j = 0; j < 32; j++)
            acc[j] += p[i + j];
    float s = 0;
    for (int j = 0; j < 32; j++)
        s += acc[j];
    return s;
}

typedef struct roofline {
    double bw_best, bw_median; /* bytes/s */
    size_t bw_bytes;           /* buffer */
    double flops_best;         /* flops/s */
    const char *isa;           /* the FMA unit used */
    int threads;
} roofline;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void measure_bandwidth(roofline *rf, int threads)
{
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    size_t bytes = (size_t)256 << 20, n;
    double bw[9];
    float *buf;
    volatile float sink = 0;
    if (l3 > 0 && (size_t)l3 * 4 > bytes)
        bytes = (size_t)l3 * 4;
    n = bytes / sizeof(float) / (32 * (size_t)threads) * (32 * (size_t)threads);
    buf = eb_malloc_aligned(64, n * sizeof *buf);
    if (!buf) {
        rf->bw_best = rf->bw_median = NAN;
        return;
    }
    /* first touch by the thread that reads it later */
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t chunk = n / (size_t)T, lo = chunk * (size_t)t;
        for (size_t i = lo; i < lo + chunk; i++)
            buf[i] = 1.0f;
    }
    for (int pass = 0; pass < 9; pass++) {
        double t0 = eb_measure_now(), s = 0;
#pragma omp parallel num_threads(threads) reduction(+ : s)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            size_t chunk = n / (size_t)T;
            s += sum_block(buf + chunk * (size_t)t, chunk);
        }
        bw[pass] = (double)(n * sizeof *buf) / (eb_measure_now() - t0);
        sink += (float)s;
    }
    (void)sink;
    qsort(bw, 9, sizeof bw[0], cmp_double);
    rf->bw_best = bw[8];
    rf->bw_median = bw[4];
    rf->bw_bytes = n * sizeof *buf;
    eb_free_aligned(buf);
}

/* 12 independent FMA chains a = a * b + c per call: enough to cover the
 * FMA latency on two ports. Returns a value that depends on every chain. */
#define FMA_CHAINS 12
__attribute__((target("avx512f"))) static float fma_avx512(long iters)
{
    __m512 a[FMA_CHAINS], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    float out = 0;
    for (int k = 0; k < FMA_CHAINS; k++)
        a[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < FMA_CHAINS; k++)
            a[k] = _mm512_fmadd_ps(a[k], b, c);
    for (int k = 0; k < FMA_CHAINS; k++)
        out += _mm512_reduce_add_ps(a[k]);
    return out;
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long iters)
{
    __m256 a[FMA_CHAINS], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    float out = 0, tmp[8];
    for (int k = 0; k < FMA_CHAINS; k++)
        a[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < FMA_CHAINS; k++)
            a[k] = _mm256_fmadd_ps(a[k], b, c);
    for (int k = 0; k < FMA_CHAINS; k++) {
        _mm256_storeu_ps(tmp, a[k]);
        for (int j = 0; j < 8; j++)
            out += tmp[j];
    }
    return out;
}

/* No FMA unit: a multiply and an add (still two flops per lane). */
static float fma_sse(long iters)
{
    __m128 a[FMA_CHAINS], b = _mm_set1_ps(0.999999f), c = _mm_set1_ps(1e-6f);
    float out = 0, tmp[4];
    for (int k = 0; k < FMA_CHAINS; k++)
        a[k] = _mm_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < FMA_CHAINS; k++)
            a[k] = _mm_add_ps(_mm_mul_ps(a[k], b), c);
    for (int k = 0; k < FMA_CHAINS; k++) {
        _mm_storeu_ps(tmp, a[k]);
        for (int j = 0; j < 4; j++)
            out += tmp[j];
    }
    return out;
}

static void measure_flops(roofline *rf, int threads)
{
    float (*fn)(long) = fma_sse;
    int lanes = 4;
    const long iters = 20 * 1000 * 1000;
    volatile float sink = 0;
    rf->isa = "sse";
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        fn = fma_avx512;
        lanes = 16;
        rf->isa = "avx512f";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        fn = fma_avx2;
        lanes = 8;
        rf->isa = "avx2+fma";
    }
    rf->flops_best = 0;
    /* best of 9 passes 20 ms apart: on a shared VM a core can be taken
     * away for a few hundred milliseconds (one run measured exactly half
     * the peak with 5 back-to-back passes), and a peak measured low makes
     * every compute bound look met */
    for (int pass = 0; pass < 9; pass++) {
        const struct timespec gap = {0, 20 * 1000 * 1000};
        double t0 = eb_measure_now(), s = 0, f;
#pragma omp parallel num_threads(threads) reduction(+ : s)
        s += fn(iters);
        f = 2.0 * lanes * FMA_CHAINS * (double)iters * threads / (eb_measure_now() - t0);
        if (f > rf->flops_best)
            rf->flops_best = f;
        sink += (float)s;
        nanosleep(&gap, NULL);
    }
    (void)sink;
}

/* Multiply-accumulates of one forward pass of the architecture. */
static double arch_macs(const eb_arch *a)
{
    double m = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        if (L->kind == EB_LAYER_DENSE)
            m += (double)L->in_size * L->units;
        else if (L->kind == EB_LAYER_CONV2D)
            m += (double)L->out_h * L->out_w * L->out_c * 9.0 * L->in_c;
    }
    return m;
}

/* Multiply-accumulates of one prediction under local reparameterisation
 * (`lrt`): the first dense layer's mean and variance once (2 products of
 * its shape, whatever S), every later layer's mean and variance for each
 * of the S draws. */
static double lrt_macs(const eb_arch *a, uint32_t S)
{
    double m = 0;
    int first = 1;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        if (L->kind != EB_LAYER_DENSE)
            continue;
        m += 2.0 * (double)L->in_size * L->units * (first ? 1.0 : (double)S);
        first = 0;
    }
    return m;
}

/* ======================================================================
 * Measuring one (case, strategy).
 * ==================================================================== */

typedef struct result {
    char case_name[48], strategy[EB_STRATEGY_NAME_MAX], resolved[EB_STRATEGY_NAME_MAX];
    const char *arch, *repr, *storage;
    uint32_t S;
    uint64_t K;
    int threads, batch;
    int verified;          /* 1 checked exactly, 2 checked on the mean */
    double verify_max_abs; /* against loop */
    eb_load_result load;
    eb_latency_stats lat;
    double lat_duration_s;
    eb_memory_phase lat_mem;
    eb_throughput_result tp;
    double weight_bytes, flops, mem_bound_s, compute_bound_s, bound_s, ratio;
} result;

static int strategy_reproduces(const char *name)
{
    for (size_t i = 0; eb_strategies[i]; i++)
        if (!strcmp(eb_strategies[i]->name, name))
            return eb_strategies[i]->reproduces_loop;
    return 1; /* auto picks only reproducing ones */
}

/* Member probabilities of dev on x (N_VERIFY inputs) against ref's. */
static int verify(eb_device *dev, eb_device *ref, const char *name, const float *x, uint32_t S,
                  result *r, eb_error *err)
{
    size_t n = (size_t)N_VERIFY * S * 10;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    int exact = strategy_reproduces(name), rc = -1;
    double worst = 0;
    if (!a || !b) {
        eb_error_set(err, EB_ERR_NOMEM, "out of memory for the verification");
        goto out;
    }
    if (eb_device_predict(dev, x, N_VERIFY, S, 1, 0, a, err) ||
        eb_device_predict(ref, x, N_VERIFY, S, 1, 0, b, err))
        goto out;
    if (exact) {
        for (size_t i = 0; i < n; i++)
            if (fabs((double)a[i] - b[i]) > worst)
                worst = fabs((double)a[i] - b[i]);
    } else {
        for (size_t i = 0; i < N_VERIFY; i++)
            for (int c = 0; c < 10; c++) {
                double ma = 0, mb = 0;
                for (uint32_t s = 0; s < S; s++) {
                    ma += a[(i * S + s) * 10 + (size_t)c];
                    mb += b[(i * S + s) * 10 + (size_t)c];
                }
                if (fabs(ma - mb) / S > worst)
                    worst = fabs(ma - mb) / S;
            }
    }
    r->verify_max_abs = worst;
    r->verified = exact ? 1 : 2;
    if (worst > (exact ? TOL_EXACT : TOL_MEAN)) {
        eb_error_set(err, EB_ERR_NUMERIC,
                     "strategy %s differs from loop on %s by %.3g (%s, tolerance %g)", name,
                     r->case_name, worst, exact ? "member probabilities" : "mean over draws",
                     exact ? TOL_EXACT : TOL_MEAN);
        goto out;
    }
    rc = 0;
out:
    free(a);
    free(b);
    return rc;
}

typedef struct options {
    const char *dir;
    int threads, batch, json;
    double min_seconds;
    const char *only; /* comma-separated case names, or NULL */
} options;

static int case_selected(const options *o, const char *name)
{
    size_t n = strlen(name);
    const char *p = o->only;
    if (!p)
        return 1;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return 1;
        p += len + (e ? 1 : 0);
    }
    return 0;
}

/* 0 measured; 1 skipped (unsupported); -1 failed. */
static int measure_pair(const options *o, const bench_case *c, const char *path,
                        const char *strategy, eb_device *ref, const eb_dataset *inputs,
                        const roofline *rf, result *r, eb_error *err)
{
    eb_device *dev = open_cpu(strategy, o->threads, o->batch, err);
    eb_device_info info;
    eb_measure_config mc;
    eb_latency_result lat;
    const eb_device_model *m;
    eb_arch arch;
    eb_status st;
    int rc = -1;

    memset(&lat, 0, sizeof lat);
    if (!dev)
        return -1;
    st = eb_device_load(dev, path, NULL, err);
    if (st == EB_ERR_UNSUPPORTED) {
        rc = 1;
        goto out;
    }
    if (st)
        goto out;
    m = eb_device_model_info(dev);
    snprintf(r->case_name, sizeof r->case_name, "%s", c->name);
    snprintf(r->strategy, sizeof r->strategy, "%s", strategy);
    if (eb_device_describe(dev, &info, err))
        goto out;
    snprintf(r->resolved, sizeof r->resolved, "%s", info.strategy);
    r->arch = c->arch;
    r->repr = eb_repr_name(m->repr);
    r->storage = c->kind == CASE_INT8 ? "int8" : c->kind == CASE_F16 ? "f16" : "f32";
    r->S = m->default_draws;
    r->K = m->n_params;
    r->threads = o->threads;
    r->batch = o->batch;
    if (verify(dev, ref, strategy, inputs->x, r->S, r, err))
        goto out;

    eb_measure_config_default(&mc);
    mc.batch = o->batch;
    mc.min_seconds = o->min_seconds;
    mc.throughput_min_seconds = o->min_seconds;
    if (eb_measure_load(dev, path, inputs, &mc, &r->load, err) ||
        eb_measure_latency(dev, inputs, &mc, &lat, err))
        goto out;
    r->lat = lat.stats;
    r->lat_duration_s = lat.duration_s;
    r->lat_mem = lat.memory;
    if (eb_measure_throughput(dev, inputs, &mc, &r->tp, err))
        goto out;

    /* the roofline: weight bytes are the posterior's tensors as stored,
     * the least a prediction must read from memory (for samples every
     * member once; for gaussian and dropout one mu/sigma or theta, read
     * once if the draws reuse it from cache) */
    if (eb_arch_named(c->arch, &arch, err))
        goto out;
    r->weight_bytes = (double)m->param_bytes;
    /* the work the strategy in effect does: lrt's differs (its first
     * layer's moments once, then two products per draw) */
    r->flops = !strcmp(r->resolved, "lrt") ? 2.0 * lrt_macs(&arch, r->S)
                                           : 2.0 * r->S * arch_macs(&arch);
    r->mem_bound_s = r->weight_bytes / rf->bw_best;
    r->compute_bound_s = r->flops / rf->flops_best;
    r->bound_s = r->mem_bound_s > r->compute_bound_s ? r->mem_bound_s : r->compute_bound_s;
    r->ratio = r->lat.p50 / r->bound_s;
    rc = 0;
out:
    eb_latency_result_free(&lat);
    eb_device_close(dev);
    return rc;
}

static double peak_of(const eb_memory_phase *ph)
{
    return ph->available ? (double)ph->peak_rss : NAN;
}

static void json_num(FILE *fp, const char *key, double v)
{
    if (isfinite(v))
        fprintf(fp, ", \"%s\": %.9g", key, v);
    else
        fprintf(fp, ", \"%s\": null", key);
}

static void print_json(FILE *fp, const result *r, const roofline *rf)
{
    double peak = peak_of(&r->load.cold.memory);
    if (peak_of(&r->lat_mem) > peak || !isfinite(peak))
        peak = peak_of(&r->lat_mem);
    if (peak_of(&r->tp.memory) > peak || !isfinite(peak))
        peak = peak_of(&r->tp.memory);
    fprintf(fp,
            "{\"side\": \"edgebayes\", \"case\": \"%s\", \"strategy\": \"%s\", \"resolved\": "
            "\"%s\", \"arch\": \"%s\", \"repr\": \"%s\", \"storage\": \"%s\", \"S\": %u, "
            "\"K\": %llu, \"threads\": %d, \"batch\": %d, \"verified\": \"%s\"",
            r->case_name, r->strategy, r->resolved, r->arch, r->repr, r->storage, r->S,
            (unsigned long long)r->K, r->threads, r->batch,
            r->verified == 1 ? "exact" : "mean");
    json_num(fp, "verify_max_abs", r->verify_max_abs);
    json_num(fp, "latency_median_s", r->lat.p50);
    json_num(fp, "latency_p99_s", r->lat.p99);
    json_num(fp, "latency_median_ci_low_s", r->lat.median_ci.valid ? r->lat.median_ci.lo : NAN);
    json_num(fp, "latency_median_ci_high_s", r->lat.median_ci.valid ? r->lat.median_ci.hi : NAN);
    json_num(fp, "latency_queries", (double)r->lat.n);
    json_num(fp, "p99_supported", r->lat.p99_supported);
    json_num(fp, "throughput_inputs_per_s", r->tp.inputs_per_s);
    json_num(fp, "load_cold_s", r->load.cold.load_s);
    json_num(fp, "load_warm_s", r->load.warm.load_s);
    json_num(fp, "first_predict_cold_s", r->load.cold.first_predict_s);
    json_num(fp, "first_predict_warm_s", r->load.warm.first_predict_s);
    json_num(fp, "cold_verified", r->load.cold_verified);
    json_num(fp, "peak_rss_load_bytes", peak_of(&r->load.cold.memory));
    json_num(fp, "peak_rss_latency_bytes", peak_of(&r->lat_mem));
    json_num(fp, "peak_rss_throughput_bytes", peak_of(&r->tp.memory));
    json_num(fp, "peak_rss_bytes", peak);
    json_num(fp, "model_bytes", (double)r->load.model.model_bytes);
    json_num(fp, "bundle_bytes", (double)r->load.bundle_bytes);
    json_num(fp, "weight_bytes", r->weight_bytes);
    json_num(fp, "flops", r->flops);
    json_num(fp, "bandwidth_bytes_per_s", rf->bw_best);
    json_num(fp, "peak_flops_per_s", rf->flops_best);
    json_num(fp, "memory_bound_s", r->mem_bound_s);
    json_num(fp, "compute_bound_s", r->compute_bound_s);
    json_num(fp, "bound_s", r->bound_s);
    fprintf(fp, ", \"bound\": \"%s\"", r->mem_bound_s >= r->compute_bound_s ? "memory" : "compute");
    json_num(fp, "ratio_to_bound", r->ratio);
    fprintf(fp, ", \"blas\": \"%s\"}\n", eb_nn_blas_info());
}

static void print_machine_json(FILE *fp, const roofline *rf)
{
    fprintf(fp, "{\"side\": \"edgebayes\", \"case\": \"machine\", \"strategy\": \"roofline\", "
                "\"threads\": %d, \"isa\": \"%s\"",
            rf->threads, rf->isa);
    json_num(fp, "bandwidth_bytes_per_s", rf->bw_best);
    json_num(fp, "bandwidth_median_bytes_per_s", rf->bw_median);
    json_num(fp, "bandwidth_buffer_bytes", (double)rf->bw_bytes);
    json_num(fp, "peak_flops_per_s", rf->flops_best);
    fputs("}\n", fp);
}

static int measure(const options *o, FILE *jsonl)
{
    const char *const *names = eb_strategy_names();
    float *x = eb_malloc_aligned(64, N_INPUTS * 784 * sizeof *x);
    uint8_t *y = calloc(N_INPUTS, 1);
    eb_dataset inputs;
    roofline rf;
    eb_error err;
    char path[4096];
    int rc = 0, any = 0;

    eb_error_clear(&err);
    if (!x || !y)
        return 1;
    make_inputs(x, 784);
    /* input 0 is the file the peer reads: the same numbers by construction */
    if (path_of(path, sizeof path, o->dir, "input", ".f32") || read_floats(path, x, 784, &err)) {
        fprintf(stderr, "bench_runtime: %s\n", eb_error_message(&err));
        eb_free_aligned(x);
        free(y);
        return 1;
    }
    memset(&inputs, 0, sizeof inputs);
    snprintf(inputs.name, sizeof inputs.name, "synthetic");
    snprintf(inputs.split, sizeof inputs.split, "bench");
    inputs.n = N_INPUTS;
    inputs.c = 1;
    inputs.h = inputs.w = 28;
    inputs.n_classes = 10;
    inputs.x = x;
    inputs.y = y;

    memset(&rf, 0, sizeof rf);
    rf.threads = o->threads;
    measure_bandwidth(&rf, o->threads);
    measure_flops(&rf, o->threads);
    fprintf(stderr,
            "bench_runtime: roofline at %d threads: read bandwidth %.2f GB/s (best of 9; median "
            "%.2f; %.0f MiB buffer), peak %.1f GFLOP/s (%s)\n",
            o->threads, rf.bw_best / 1e9, rf.bw_median / 1e9, rf.bw_bytes / 1048576.0,
            rf.flops_best / 1e9, rf.isa);
    if (o->json)
        print_machine_json(stdout, &rf);
    if (jsonl)
        print_machine_json(jsonl, &rf);
    if (!o->json)
        printf("%-16s %-8s %-8s %4s %10s %10s %10s %7s %8s %10s %9s %9s %8s\n", "case",
               "strategy", "ran", "S", "median ms", "p99 ms", "bound ms", "bound", "ratio",
               "inputs/s", "cold ms", "warm ms", "RSS MiB");

    for (size_t i = 0; i < N_CASES; i++) {
        const bench_case *c = &cases[i];
        eb_device *ref;
        if (!case_selected(o, c->name))
            continue;
        if (path_of(path, sizeof path, o->dir, c->name, ".ebb") || access(path, R_OK)) {
            fprintf(stderr, "bench_runtime: %s/%s.ebb is missing (run --setup %s first)\n",
                    o->dir, c->name, o->dir);
            rc = 1;
            continue;
        }
        ref = open_cpu("loop", o->threads, o->batch, &err);
        if (!ref || eb_device_load(ref, path, NULL, &err)) {
            fprintf(stderr, "bench_runtime: %s: %s\n", c->name, eb_error_message(&err));
            eb_device_close(ref);
            rc = 1;
            continue;
        }
        for (size_t k = 0; names[k]; k++) {
            result r;
            int m;
            memset(&r, 0, sizeof r);
            eb_error_clear(&err);
            m = measure_pair(o, c, path, names[k], ref, &inputs, &rf, &r, &err);
            if (m == 1) {
                fprintf(stderr, "bench_runtime: %s: strategy %s skipped: %s\n", c->name,
                        names[k], eb_error_message(&err));
                continue;
            }
            if (m < 0) {
                fprintf(stderr, "bench_runtime: %s, strategy %s: %s\n", c->name, names[k],
                        eb_error_message(&err));
                rc = 1;
                continue;
            }
            any = 1;
            if (o->json)
                print_json(stdout, &r, &rf);
            else
                printf("%-16s %-8s %-8s %4u %10.4f %10.4f %10.4f %7s %8.2f %10.0f %9.2f %9.2f "
                       "%8.1f\n",
                       r.case_name, r.strategy, r.resolved, r.S, r.lat.p50 * 1e3, r.lat.p99 * 1e3,
                       r.bound_s * 1e3, r.mem_bound_s >= r.compute_bound_s ? "memory" : "compute",
                       r.ratio, r.tp.inputs_per_s, r.load.cold.load_s * 1e3,
                       r.load.warm.load_s * 1e3, peak_of(&r.lat_mem) / 1048576.0);
            if (jsonl)
                print_json(jsonl, &r, &rf);
            fflush(stdout);
        }
        eb_device_close(ref);
    }
    eb_free_aligned(x);
    free(y);
    if (!any) {
        fprintf(stderr, "bench_runtime: nothing was measured\n");
        return 1;
    }
    return rc;
}

/* ======================================================================
 * Ingest: JSON lines into a results database.
 * ==================================================================== */

/* A string or number field of a flat JSON object line: "key": value, any
 * whitespace around the colon. 0 when found. */
static int json_field(const char *line, const char *key, char *out, size_t len)
{
    char pat[80];
    const char *p = line;
    size_t n = 0;
    snprintf(pat, sizeof pat, "\"%s\"", key);
    for (;;) {
        p = strstr(p, pat);
        if (!p)
            return -1;
        p += strlen(pat);
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == ':')
            break;
    }
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '"') {
        p++;
        while (*p && *p != '"' && n + 1 < len)
            out[n++] = *p++;
    } else {
        while (*p && *p != ',' && *p != '}' && *p != ' ' && n + 1 < len)
            out[n++] = *p++;
    }
    out[n] = '\0';
    return 0;
}

static double json_num_field(const char *line, const char *key)
{
    char v[64];
    char *end;
    double d;
    if (json_field(line, key, v, sizeof v) || !strcmp(v, "null"))
        return NAN;
    d = strtod(v, &end);
    return end == v ? NAN : d;
}

typedef struct row {
    char side[16], case_name[48], strategy[48], resolved[48], arch[16], repr[16], storage[16],
        blas[160], core[64], isa[32], variant_blas[16];
    int threads;
    uint32_t S;
    char *line; /* owned */
} row;

static double rnum(const row *r, const char *key)
{
    return json_num_field(r->line, key);
}

/* The fastest PyTorch row of a case (by median latency), or NULL. */
static const row *fastest_torch(const row *rows, size_t n, const char *case_name)
{
    const row *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].side, "pytorch") && !strcmp(rows[i].case_name, case_name) &&
            isfinite(rnum(&rows[i], "latency_median_s")) &&
            (!best || rnum(&rows[i], "latency_median_s") < rnum(best, "latency_median_s")))
            best = &rows[i];
    return best;
}

/* The roofline bound of a case from any of our rows, NAN when none. */
static double case_bound(const row *rows, size_t n, const char *case_name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].side, "edgebayes") && !strcmp(rows[i].case_name, case_name) &&
            isfinite(rnum(&rows[i], "bound_s")))
            return rnum(&rows[i], "bound_s");
    return NAN;
}

typedef struct mset {
    eb_results_metric m[40];
    size_t n;
} mset;

static void madd(mset *s, const char *facet, const char *name, const char *ctx, double v,
                 const char *unit, int hib)
{
    eb_results_metric *m;
    if (!isfinite(v) || s->n >= sizeof s->m / sizeof s->m[0])
        return;
    m = &s->m[s->n++];
    memset(m, 0, sizeof *m);
    m->facet = facet;
    m->name = name;
    m->context = ctx;
    m->value = v;
    m->unit = unit;
    m->higher_is_better = hib;
}

/* Parses a case name's S ("mlp-s30" -> 30); 0 when it has none. */
static uint32_t case_draws(const char *name)
{
    const char *p = name;
    while ((p = strstr(p, "-s")) != NULL) {
        char *end;
        unsigned long v;
        p += 2;
        v = strtoul(p, &end, 10);
        if (end != p && (*end == '\0' || *end == '-') && v > 0 && v < 1000000)
            return (uint32_t)v;
    }
    return 0;
}

static int read_rows(const char *file, row **rows, size_t *n, size_t *cap)
{
    FILE *fp = fopen(file, "r");
    char line[8192];
    if (!fp) {
        fprintf(stderr, "bench_runtime: cannot open '%s'\n", file);
        return -1;
    }
    while (fgets(line, sizeof line, fp)) {
        row r;
        char num[32];
        memset(&r, 0, sizeof r);
        if (json_field(line, "side", r.side, sizeof r.side) ||
            json_field(line, "case", r.case_name, sizeof r.case_name))
            continue;
        if (json_field(line, "strategy", r.strategy, sizeof r.strategy) &&
            json_field(line, "variant", r.strategy, sizeof r.strategy))
            snprintf(r.strategy, sizeof r.strategy, "default");
        if (json_field(line, "resolved", r.resolved, sizeof r.resolved))
            snprintf(r.resolved, sizeof r.resolved, "%s", r.strategy);
        if (json_field(line, "arch", r.arch, sizeof r.arch)) {
            /* PyTorch's lines name the case only: "mlp-s30" is arch mlp */
            size_t k = strcspn(r.case_name, "-");
            snprintf(r.arch, sizeof r.arch, "%.*s", (int)(k < 15 ? k : 15), r.case_name);
        }
        if (json_field(line, "repr", r.repr, sizeof r.repr))
            r.repr[0] = '\0';
        if (json_field(line, "storage", r.storage, sizeof r.storage))
            r.storage[0] = '\0';
        if (json_field(line, "blas", r.blas, sizeof r.blas))
            r.blas[0] = '\0';
        if (json_field(line, "core", r.core, sizeof r.core))
            r.core[0] = '\0';
        if (json_field(line, "isa", r.isa, sizeof r.isa))
            r.isa[0] = '\0';
        if (json_field(line, "variant_blas", r.variant_blas, sizeof r.variant_blas))
            r.variant_blas[0] = '\0';
        r.threads = json_field(line, "threads", num, sizeof num) ? 0 : atoi(num);
        r.S = json_field(line, "S", num, sizeof num) ? case_draws(r.case_name)
                                                      : (uint32_t)strtoul(num, NULL, 10);
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            row *g = realloc(*rows, nc * sizeof *g);
            if (!g)
                break;
            *rows = g;
            *cap = nc;
        }
        r.line = strdup(line);
        if (!r.line)
            break;
        (*rows)[(*n)++] = r;
    }
    fclose(fp);
    return 0;
}

static int ingest(const char *const *files, size_t n_files, const char *db_path,
                  const char *label)
{
    row *rows = NULL;
    size_t n = 0, cap = 0, stored = 0;
    eb_results *db = NULL;
    eb_results_machine mach;
    eb_results_provenance p;
    eb_error err;
    int64_t run_id;
    char sha[65];
    int rc = 1;

    eb_error_clear(&err);
    for (size_t f = 0; f < n_files; f++)
        if (read_rows(files[f], &rows, &n, &cap))
            goto out;
    if (n == 0) {
        fprintf(stderr, "bench_runtime: no measurements in the files given\n");
        goto out;
    }
    /* the run's identity: the first file's hash (the edgebayes lines) */
    if (eb_sha256_file(files[0], sha, &err) || eb_results_open(db_path, &db, &err) ||
        eb_results_machine_probe(&mach, &err))
        goto fail;
    memset(&p, 0, sizeof p);
    eb_results_provenance_set_machine(&p, &mach);
    p.label = label ? label : "bench-runtime";
    p.suite = "bench-runtime";
    p.suite_sha256 = sha;
    p.shard = "1/1";
    p.environment = "{}";
    if (eb_results_run_begin(db, &p, &run_id, NULL, &err))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const row *r = &rows[i];
        eb_results_job_def def;
        mset ms;
        char name[256], key[65], settings[1024];
        int dup = 0;
        if (snprintf(name, sizeof name, "runtime/%s/%s/%s/t%d", r->case_name, r->strategy,
                     r->side, r->threads) >= (int)sizeof name)
            continue;
        /* the same pair measured more than once (under each OpenBLAS
         * build): the fastest median is stored, the first of equals */
        for (size_t k = 0; k < n && !dup; k++) {
            double mk, mi;
            if (k == i || strcmp(rows[k].case_name, r->case_name) ||
                strcmp(rows[k].strategy, r->strategy) || strcmp(rows[k].side, r->side) ||
                rows[k].threads != r->threads)
                continue;
            mk = rnum(&rows[k], "latency_median_s");
            mi = rnum(r, "latency_median_s");
            if (!isfinite(mi) || !isfinite(mk))
                dup = k < i; /* no latency (machine, probe lines): the first */
            else
                dup = mk < mi || (mk == mi && k < i);
        }
        if (dup)
            continue;
        if (eb_sha256_buffer(name, strlen(name), key, &err))
            goto fail;
        memset(&ms, 0, sizeof ms);
        if (!strcmp(r->case_name, "machine")) {
            madd(&ms, "machine", "read_bandwidth", "", rnum(r, "bandwidth_bytes_per_s"),
                 "bytes/s", 1);
            madd(&ms, "machine", "read_bandwidth_median", "",
                 rnum(r, "bandwidth_median_bytes_per_s"), "bytes/s", 1);
            madd(&ms, "machine", "bandwidth_buffer_bytes", "", rnum(r, "bandwidth_buffer_bytes"),
                 "bytes", 1);
            madd(&ms, "machine", "peak_flops", "", rnum(r, "peak_flops_per_s"), "flops/s", 1);
        } else {
            double med = rnum(r, "latency_median_s"), bound = rnum(r, "bound_s");
            const row *t = fastest_torch(rows, n, r->case_name);
            if (!isfinite(bound))
                bound = case_bound(rows, n, r->case_name);
            madd(&ms, "latency", "p50", "", med, "s", 0);
            if (isfinite(rnum(r, "latency_median_ci_low_s")) &&
                isfinite(rnum(r, "latency_median_ci_high_s")) && ms.n) {
                ms.m[ms.n - 1].has_ci = 1;
                ms.m[ms.n - 1].ci_low = rnum(r, "latency_median_ci_low_s");
                ms.m[ms.n - 1].ci_high = rnum(r, "latency_median_ci_high_s");
                ms.m[ms.n - 1].ci_level = 0.95;
            }
            madd(&ms, "latency", "p99", "", rnum(r, "latency_p99_s"), "s", 0);
            madd(&ms, "latency", "queries", "", rnum(r, "latency_queries"), "", 1);
            madd(&ms, "latency", "p99_supported", "", rnum(r, "p99_supported"), "", 1);
            madd(&ms, "latency", "first_prediction", "cache=cold",
                 rnum(r, "first_predict_cold_s"), "s", 0);
            madd(&ms, "latency", "first_prediction", "cache=warm",
                 rnum(r, "first_predict_warm_s"), "s", 0);
            madd(&ms, "throughput", "inputs_per_second", "", rnum(r, "throughput_inputs_per_s"),
                 "inputs/s", 1);
            madd(&ms, "throughput", "batch", "", rnum(r, "batch"), "inputs", 1);
            madd(&ms, "load", "seconds", "cache=cold", rnum(r, "load_cold_s"), "s", 0);
            madd(&ms, "load", "seconds", "cache=warm", rnum(r, "load_warm_s"), "s", 0);
            /* PyTorch's one load time: its own definition (runtime_torch.py) */
            madd(&ms, "load", "seconds", "", rnum(r, "load_s"), "s", 0);
            madd(&ms, "load", "cold_verified", "", rnum(r, "cold_verified"), "", 1);
            madd(&ms, "memory", "peak_rss", "phase=load", rnum(r, "peak_rss_load_bytes"), "bytes",
                 0);
            madd(&ms, "memory", "peak_rss", "phase=latency", rnum(r, "peak_rss_latency_bytes"),
                 "bytes", 0);
            madd(&ms, "memory", "peak_rss", "phase=throughput",
                 rnum(r, "peak_rss_throughput_bytes"), "bytes", 0);
            /* the report's Peak RSS column reads phase=predict: the largest */
            madd(&ms, "memory", "peak_rss", "phase=predict", rnum(r, "peak_rss_bytes"), "bytes",
                 0);
            madd(&ms, "memory", "model_bytes", "", rnum(r, "model_bytes"), "bytes", 0);
            madd(&ms, "storage", "bundle_bytes", "", rnum(r, "bundle_bytes"), "bytes", 0);
            madd(&ms, "roofline", "weight_bytes", "", rnum(r, "weight_bytes"), "bytes", 0);
            madd(&ms, "roofline", "flops", "", rnum(r, "flops"), "flops", 0);
            madd(&ms, "roofline", "memory_bound_seconds", "", rnum(r, "memory_bound_s"), "s", 0);
            madd(&ms, "roofline", "compute_bound_seconds", "", rnum(r, "compute_bound_s"), "s",
                 0);
            madd(&ms, "roofline", "bound_seconds", "", bound, "s", 0);
            madd(&ms, "roofline", "ratio_to_bound", "", med / bound, "", 0);
            madd(&ms, "verify", "max_abs_diff", "", rnum(r, "verify_max_abs"), "", 0);
            /* --load-probe lines (strategy "probe-<resolved>"); NaN and so
             * skipped on every other line */
            madd(&ms, "load", "disk_read_seconds", "cache=cold", rnum(r, "disk_read_cold_s"), "s",
                 0);
            madd(&ms, "load", "load_and_first_seconds", "cache=cold",
                 rnum(r, "load_and_first_s"), "s", 0);
            madd(&ms, "load", "ratio_to_disk_read", "cache=cold", rnum(r, "ratio_to_disk_read"),
                 "", 0);
            madd(&ms, "memory", "peak_rss", "phase=process", rnum(r, "peak_rss_process_bytes"),
                 "bytes", 0);
            madd(&ms, "memory", "peak_rss_over_bundle", "phase=process",
                 rnum(r, "peak_minus_bundle_bytes"), "bytes", 0);
            if (!strcmp(r->side, "edgebayes") && t)
                madd(&ms, "latency", "ratio_to_pytorch", "", med / rnum(t, "latency_median_s"),
                     "", 0);
        }
        if (snprintf(settings, sizeof settings,
                     "{\"case\": \"%s\", \"strategy\": \"%s\", \"resolved\": \"%s\", \"side\": "
                     "\"%s\", \"repr\": \"%s\", \"storage\": \"%s\", \"threads\": %d, \"blas\": "
                     "\"%s\", \"core\": \"%s\", \"isa\": \"%s\", \"openblas_variant\": \"%s\"}",
                     r->case_name, r->strategy, r->resolved, r->side, r->repr, r->storage,
                     r->threads, r->blas, r->core, r->isa, r->variant_blas) >= (int)sizeof settings)
            snprintf(settings, sizeof settings, "{\"case\": \"%s\"}", r->case_name);
        memset(&def, 0, sizeof def);
        def.key = key;
        def.name = name;
        def.method = "bench";
        def.chain = "";
        def.arch = r->arch[0] ? r->arch : "none";
        def.device = "cpu";
        def.draws = r->S;
        def.settings = settings;
        if (eb_results_job_begin(db, run_id, &def, NULL, &err) ||
            eb_results_job_metrics(db, ms.m, ms.n, &err) ||
            eb_results_job_commit(db, 0.0, &err)) {
            eb_results_job_abort(db);
            goto fail;
        }
        stored++;
    }
    if (eb_results_run_finish(db, run_id, &err))
        goto fail;
    printf("stored %zu measurements as run %lld (suite bench-runtime) in %s\n", stored,
           (long long)run_id, db_path);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_runtime: %s\n", eb_error_message(&err));
out:
    eb_results_close(db);
    for (size_t i = 0; i < n; i++)
        free(rows[i].line);
    free(rows);
    return rc;
}

/* ======================================================================
 * main
 * ==================================================================== */

/* --load-probe: the deployment's first second, in a fresh process (so
 * the peak RSS is this process's own, as PyTorch's ru_maxrss is): the
 * bundle's bytes read cold with read(2) (the disk's time for them),
 * then, the cache dropped again, a cold eb_device_load plus the first
 * single-input prediction, and the process's peak RSS (VmHWM) with the
 * baseline before the load. One JSON line. */
static int load_probe(const char *path, const char *strategy, int threads)
{
    eb_error err;
    eb_page_cache_state pc;
    eb_proc_memory before, after;
    eb_device *dev;
    const eb_device_model *m;
    eb_device_info info;
    double t0, read_s, load_s, first_s;
    float *x = NULL, *probs = NULL;
    char *buf;
    size_t got = 0;
    FILE *fp;
    eb_rng r;

    eb_error_clear(&err);
    if (eb_measure_proc_memory(&before, &err))
        goto fail;
    /* the disk: the file's bytes, cold, into a buffer freed before the load */
    if (eb_measure_page_cache_drop(path, &pc, &err))
        goto fail;
    fp = fopen(path, "rb");
    buf = malloc(1 << 20);
    if (!fp || !buf) {
        fprintf(stderr, "bench_runtime: cannot read '%s'\n", path);
        if (fp)
            fclose(fp);
        free(buf);
        return 1;
    }
    t0 = eb_measure_now();
    for (size_t n; (n = fread(buf, 1, 1 << 20, fp)) > 0;)
        got += n;
    read_s = eb_measure_now() - t0;
    fclose(fp);
    free(buf);
    if (eb_measure_page_cache_drop(path, &pc, &err) || eb_measure_proc_reset_peak(&err) ||
        eb_measure_proc_memory(&before, &err))
        goto fail;
    dev = open_cpu(strategy, threads, 1, &err);
    if (!dev)
        goto fail;
    t0 = eb_measure_now();
    if (eb_device_load(dev, path, NULL, &err)) {
        eb_device_close(dev);
        goto fail;
    }
    load_s = eb_measure_now() - t0;
    m = eb_device_model_info(dev);
    x = malloc(m->in_size * sizeof *x);
    probs = malloc((size_t)m->default_draws * (size_t)m->n_classes * sizeof *probs);
    eb_rng_seed(&r, 1, 0);
    for (size_t i = 0; x && i < m->in_size; i++)
        x[i] = eb_rng_uniformf(&r);
    t0 = eb_measure_now();
    if (!x || !probs || eb_device_predict(dev, x, 1, 0, 0, 0, probs, &err)) {
        eb_device_close(dev);
        free(x);
        free(probs);
        goto fail;
    }
    first_s = eb_measure_now() - t0;
    if (eb_measure_proc_memory(&after, &err) || eb_device_describe(dev, &info, &err)) {
        eb_device_close(dev);
        free(x);
        free(probs);
        goto fail;
    }
    {
        const char *base = strrchr(path, '/');
        size_t len;
        base = base ? base + 1 : path;
        len = strlen(base);
        if (len > 4 && !strcmp(base + len - 4, ".ebb"))
            len -= 4;
        printf("{\"side\": \"edgebayes\", \"case\": \"%.*s\", \"strategy\": \"probe-%s\", ",
               (int)len, base, info.strategy);
    }
    printf("\"probe\": \"load\", \"bundle\": \"%s\", \"resolved\": "
           "\"%s\", \"threads\": %d, \"bundle_bytes\": %zu, \"disk_read_cold_s\": %.9g, "
           "\"cold_verified\": %d, \"load_cold_s\": %.9g, \"first_predict_cold_s\": %.9g, "
           "\"load_and_first_s\": %.9g, \"ratio_to_disk_read\": %.4g, "
           "\"baseline_rss_bytes\": %llu, \"peak_rss_process_bytes\": %llu, "
           "\"peak_minus_bundle_bytes\": %lld}\n",
           path, info.strategy, threads, got, read_s, pc.verified, load_s, first_s,
           load_s + first_s, (load_s + first_s) / read_s, (unsigned long long)before.vm_rss,
           (unsigned long long)after.vm_hwm,
           (long long)after.vm_hwm - (long long)got);
    eb_device_close(dev);
    free(x);
    free(probs);
    return 0;
fail:
    fprintf(stderr, "bench_runtime: load probe of '%s': %s\n", path, err.msg);
    return 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_runtime --setup DIR [--seed N]\n"
            "       bench_runtime --dir DIR [--threads T] [--batch B] [--min-seconds X]\n"
            "                     [--cases a,b] [--json] [--db DB [--label L]]\n"
            "       bench_runtime --ingest FILE.jsonl [--ingest FILE2.jsonl ...] --db DB"
            " [--label L]\n"
            "       bench_runtime --load-probe BUNDLE [--strategy NAME] [--threads T]\n");
}

int main(int argc, char **argv)
{
    options o;
    const char *setup_dir = NULL, *db = NULL, *label = NULL, *probe = NULL, *strategy = "auto";
    const char *ingest_files[16];
    size_t n_ingest = 0;
    uint64_t seed = 2024;

    memset(&o, 0, sizeof o);
    o.threads = 1;
    o.batch = 64;
    o.min_seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o.json = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--setup"))
            setup_dir = v;
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dir"))
            o.dir = v;
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--batch"))
            o.batch = atoi(v);
        else if (!strcmp(a, "--min-seconds"))
            o.min_seconds = strtod(v, NULL);
        else if (!strcmp(a, "--cases"))
            o.only = v;
        else if (!strcmp(a, "--db"))
            db = v;
        else if (!strcmp(a, "--label"))
            label = v;
        else if (!strcmp(a, "--load-probe"))
            probe = v;
        else if (!strcmp(a, "--strategy"))
            strategy = v;
        else if (!strcmp(a, "--ingest") && n_ingest < 16)
            ingest_files[n_ingest++] = v;
        else {
            usage();
            return 2;
        }
    }
    if (setup_dir)
        return setup(setup_dir, seed);
    if (probe)
        return load_probe(probe, strategy, o.threads);
    if (n_ingest) {
        if (!db) {
            usage();
            return 2;
        }
        return ingest(ingest_files, n_ingest, db, label);
    }
    if (!o.dir) {
        usage();
        return 2;
    }
    if (o.threads < 1 || o.threads > EB_STRATEGY_MAX_THREADS || o.batch < 1 || o.batch > 4096 ||
        !(o.min_seconds >= 0)) {
        fprintf(stderr, "bench_runtime: --threads must be in [1, %d], --batch in [1, 4096] and "
                        "--min-seconds >= 0\n",
                EB_STRATEGY_MAX_THREADS);
        return 2;
    }
    if (!db)
        return measure(&o, NULL);
    {
        /* measure into a JSON-lines file beside the database, then store it */
        char file[4096];
        FILE *fp;
        int rc;
        const char *files[1];
        if (snprintf(file, sizeof file, "%s.runtime.jsonl", db) >= (int)sizeof file)
            return 2;
        fp = fopen(file, "w");
        if (!fp) {
            fprintf(stderr, "bench_runtime: cannot write '%s'\n", file);
            return 1;
        }
        rc = measure(&o, fp);
        if (fclose(fp))
            rc = 1;
        files[0] = file;
        if (rc == 0)
            rc = ingest(files, 1, db, label);
        return rc;
    }
}
