/* cpu.c: the CPU backend, the portable reference device and the oracle
 * other backends are tested against. It runs the bundle in this process:
 * eb_bundle_open maps the file and validates it (every CRC-32), the
 * posterior view points into the map, and one eb_predictor holds the
 * workspace, so a prediction allocates nothing. Parameters are used in
 * place, never copied, in f32 and, through EB_POSTERIOR_QUANTIZED, in
 * int8 and f16 (samples and distilled students run on the quantized
 * kernels, int8 with activations quantized per row) and, through
 * EB_POSTERIOR_SPARSE, shared-sparse and CSR samples (the `sparse`
 * strategy runs them in place; input gradients use a decoded copy made
 * at the first call); only what no strategy asked for can run in place
 * (quantized dropout and gaussian posteriors, an int8 grouping that
 * splits an output channel, sparse storage under `loop` or `stacked`) is
 * decoded into an f32 copy, which the model bytes then count. How the
 * members are run is the execution strategy (devices/strategy.h), the
 * option strategy=NAME. Threads are OpenBLAS's (process-wide); affinity is
 * set on the thread that opens the device. Both are restored at close.
 *
 * Testing hook: EB_INJECT_SLOWDOWN=f (a fraction, read at open) makes each
 * predict call busy-wait f times its own duration after computing, so a
 * nightly comparison can be shown to catch a slowdown. describe() reports
 * the value for the run's provenance. */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "devices/eb_device.h"
#include "devices/strategy.h"
#include "methods/eb_methods.h"

#define SLOWDOWN_ENV "EB_INJECT_SLOWDOWN"
#define SLOWDOWN_MAX 100.0

typedef struct cpu_ctx {
    eb_device_config cfg;
    double slowdown;          /* EB_INJECT_SLOWDOWN fraction; 0 off */
    int threads_before;       /* OpenBLAS threads at open, restored at close */
    int affinity_changed;     /* affinity_before is to be restored */
    cpu_set_t affinity_before;
    /* loaded state: all NULL/zero when nothing is loaded */
    eb_bundle *bundle;
    eb_posterior post;        /* into bundle's map (f32, int8, f16) or owned (decoded);
                               * outlives pred */
    eb_predictor *pred;       /* loop, and every input gradient; for a posterior kept
                               * sparse in place, made at the first input gradient
                               * over grad_post */
    eb_posterior grad_post;   /* sparse in place: the decoded copy gradients need */
    eb_strategy_run run;      /* the strategy predicting; ops NULL: loop through pred */
    uint32_t max_draws;
    char strategy[EB_STRATEGY_NAME_MAX]; /* as asked ("auto" by default) */
} cpu_ctx;

/* The options string: "strategy=NAME" (docs/devices.md); keys separated
 * by ';'. Every other key is refused by name. */
static eb_status parse_options(const char *options, char *strategy, eb_error *err)
{
    const char *q = options;
    snprintf(strategy, EB_STRATEGY_NAME_MAX, "auto");
    while (*q) {
        const char *end = strchr(q, ';'), *eq;
        size_t len = end ? (size_t)(end - q) : strlen(q);
        eq = memchr(q, '=', len);
        if (len == 0) {
            q += 1;
            continue;
        }
        if (!eq || (size_t)(eq - q) != 8 || strncmp(q, "strategy", 8))
            return eb_error_set(err, EB_ERR_ARG,
                                "cpu device option '%.*s': the cpu device takes only "
                                "strategy=NAME", (int)len, q);
        if (len - 9 == 0 || len - 9 >= EB_STRATEGY_NAME_MAX)
            return eb_error_set(err, EB_ERR_ARG, "cpu device option '%.*s': no strategy name",
                                (int)len, q);
        memcpy(strategy, eq + 1, len - 9);
        strategy[len - 9] = '\0';
        if (eb_strategy_check_name(strategy, err))
            return eb_error_prefix(err, "cpu device option '%.*s': ", (int)len, q);
        q += len;
    }
    return EB_OK;
}

/* EB_INJECT_SLOWDOWN: unset or empty is 0; otherwise a finite fraction
 * in [0, SLOWDOWN_MAX]. */
static eb_status read_slowdown(double *out, eb_error *err)
{
    const char *v = getenv(SLOWDOWN_ENV);
    char *end;
    double f;
    *out = 0.0;
    if (!v || !*v)
        return EB_OK;
    errno = 0;
    f = strtod(v, &end);
    if (end == v || *end != '\0' || errno || !isfinite(f) || f < 0.0 || f > SLOWDOWN_MAX)
        return eb_error_set(err, EB_ERR_ARG,
                            "environment variable %s='%s' is not a fraction in [0, %g] "
                            "(e.g. 0.2 for 20%% slower predictions)", SLOWDOWN_ENV, v,
                            SLOWDOWN_MAX);
    *out = f;
    return EB_OK;
}

static void to_cpu_set(const eb_device_cpus *in, cpu_set_t *out)
{
    CPU_ZERO(out);
    for (unsigned i = 0; i < EB_DEVICE_MAX_CPUS && i < CPU_SETSIZE; i++)
        if ((in->bits[i / 64] >> (i % 64)) & 1u)
            CPU_SET(i, out);
}

static eb_status cpu_open(const eb_device_config *cfg, void **ctx, eb_error *err)
{
    cpu_ctx *c;
    eb_status st;
    double slowdown;

    char strategy[EB_STRATEGY_NAME_MAX];

    st = parse_options(cfg->options, strategy, err);
    if (st)
        return st;
    st = read_slowdown(&slowdown, err);
    if (st)
        return st;
    c = eb_calloc(1, sizeof *c);
    if (!c)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the cpu device");
    c->cfg = *cfg;
    c->slowdown = slowdown;
    memcpy(c->strategy, strategy, sizeof c->strategy);
    if (cfg->cpus[0]) {
        eb_device_cpus set;
        cpu_set_t want;
        st = eb_device_cpus_parse(cfg->cpus, &set, err); /* checked by the handle */
        if (st) {
            eb_free(c);
            return st;
        }
        to_cpu_set(&set, &want);
        if (sched_getaffinity(0, sizeof c->affinity_before, &c->affinity_before) != 0) {
            st = eb_error_set(err, EB_ERR_IO, "cannot read the thread's CPU affinity: %s",
                              strerror(errno));
            eb_free(c);
            return st;
        }
        /* pid 0: the calling thread only, i.e. the measuring thread */
        if (sched_setaffinity(0, sizeof want, &want) != 0) {
            st = eb_error_set(err, errno == EINVAL ? EB_ERR_ARG : EB_ERR_IO,
                              "cpus '%s': cannot pin the thread to them (%s; are they online "
                              "and allowed to this process?)", cfg->cpus, strerror(errno));
            eb_free(c);
            return st;
        }
        c->affinity_changed = 1;
    }
    /* after the last failure point, so a failed open changes nothing */
    if (cfg->threads > 0) {
        c->threads_before = eb_nn_set_threads(0);
        eb_nn_set_threads(cfg->threads);
    }
    *ctx = c;
    return EB_OK;
}

static void cpu_unload(void *ctx)
{
    cpu_ctx *c = ctx;
    eb_strategy_close(&c->run);
    eb_predictor_free(c->pred);
    eb_posterior_release(&c->grad_post);
    memset(&c->grad_post, 0, sizeof c->grad_post);
    eb_posterior_release(&c->post); /* before the bundle: f32 views point into its map */
    eb_bundle_close(c->bundle);
    c->pred = NULL;
    c->bundle = NULL;
    memset(&c->post, 0, sizeof c->post);
    c->max_draws = 0;
}

static void cpu_close(void *ctx)
{
    cpu_ctx *c = ctx;
    cpu_unload(c);
    if (c->threads_before > 0)
        eb_nn_set_threads(c->threads_before);
    if (c->affinity_changed)
        (void)sched_setaffinity(0, sizeof c->affinity_before, &c->affinity_before);
    eb_free(c);
}

static eb_status cpu_load(void *ctx, const char *path, eb_device_load_timing *timing,
                          eb_error *err)
{
    cpu_ctx *c = ctx;
    double t0 = eb_measure_now(), t1, t2;
    eb_status st;
    uint32_t draws;

    /* Default flags: every CRC-32 and the finiteness of every parameter
     * are checked, so the load reads the whole file (the protocol times
     * a validated load). */
    st = eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &c->bundle, err);
    if (st)
        return st;
    t1 = eb_measure_now();
    /* int8 and f16 stay as stored and run on the quantized kernels;
     * shared-sparse and CSR samples stay as stored for the sparse
     * strategy */
    st = eb_posterior_from_bundle_flags(c->bundle, EB_POSTERIOR_QUANTIZED | EB_POSTERIOR_SPARSE,
                                        &c->post, err);
    if (st)
        goto fail;
    draws = c->cfg.max_draws ? c->cfg.max_draws : eb_posterior_default_draws(&c->post);
    if (c->post.repr == EB_REPR_SAMPLES && draws > c->post.members)
        draws = c->post.members; /* a samples posterior has no more draws */
    c->max_draws = draws;
    {
        const eb_strategy_ops *ops = NULL;
        st = eb_strategy_pick(c->strategy, &c->post, &ops, err);
        if (eb_posterior_sparse(&c->post) &&
            (st == EB_ERR_UNSUPPORTED || (st == EB_OK && ops == &eb_strategy_loop))) {
            /* the strategy asked for runs dense weights: decode them */
            eb_posterior_release(&c->post);
            st = eb_posterior_from_bundle_flags(c->bundle, EB_POSTERIOR_QUANTIZED, &c->post, err);
            if (st)
                goto fail;
            st = eb_strategy_pick(c->strategy, &c->post, &ops, err);
        }
        if (st) {
            eb_error_prefix(err, "bundle '%s': ", path);
            goto fail;
        }
        /* loop predicts through it; every strategy's input gradients do */
        if (!eb_posterior_sparse(&c->post) &&
            (st = eb_predictor_new(&c->post, c->cfg.max_batch, draws, &c->pred, err))) {
            eb_error_prefix(err, "bundle '%s': ", path);
            goto fail;
        }
        if (ops != &eb_strategy_loop &&
            (st = eb_strategy_open(ops->name, &c->post, c->cfg.max_batch, draws, &c->run, err))) {
            eb_error_prefix(err, "bundle '%s': ", path);
            goto fail;
        }
    }
    t2 = eb_measure_now();
    timing->open_s = t1 - t0;
    timing->prepare_s = t2 - t1;
    timing->total_s = t2 - t0;
    return EB_OK;
fail:
    cpu_unload(c);
    return st;
}

static eb_status cpu_model(void *ctx, eb_device_model *m, eb_error *err)
{
    const cpu_ctx *c = ctx;
    const eb_arch *a = &c->post.arch;
    (void)err;
    m->repr = c->post.repr;
    m->n_classes = (int)eb_posterior_classes(&c->post);
    m->in_h = a->in_h;
    m->in_w = a->in_w;
    m->in_c = a->in_c;
    m->in_size = a->in_size;
    m->n_params = c->post.k;
    m->default_draws = eb_posterior_default_draws(&c->post);
    m->max_draws = c->max_draws;
    m->max_batch = c->cfg.max_batch;
    /* Every tensor section (types 16 and up, docs/bundle-format.md): the
     * values, and with other representations or storage kinds sigma,
     * scales or index sets too. All are used in place from the map. */
    m->param_bytes = 0;
    for (size_t i = 0; i < eb_bundle_section_count(c->bundle); i++) {
        eb_bundle_section s;
        eb_bundle_section_info(c->bundle, i, &s);
        if (s.type >= 16 && s.type < 0x80000000u)
            m->param_bytes += s.size;
    }
    /* For a quantized posterior this includes each member's f32 biases
     * and int8 channel scales (eb_qweights); its weights are the tensor
     * sections above, used in place. */
    m->workspace_bytes = (c->pred ? eb_predictor_bytes(c->pred) : 0) +
                         (c->run.ops ? c->run.ops->bytes(c->run.state) : 0);
    if (c->post.owned) /* decoded storage: params (rows, K) and sigma, as f32 */
        m->workspace_bytes += ((c->post.repr == EB_REPR_SAMPLES ? (uint64_t)c->post.members : 1) +
                               (c->post.repr == EB_REPR_GAUSSIAN ? 1 : 0)) *
                              c->post.k * sizeof(float);
    m->model_bytes = m->param_bytes + m->workspace_bytes;
    m->mapped_bytes = eb_bundle_file_size(c->bundle);
    return EB_OK;
}

/* The slowdown hook: spin until the monotonic clock reaches `until`. A
 * busy wait, not a sleep, so the thread keeps its CPU busy as a slower
 * kernel would. */
static void spin_until(double until)
{
    while (eb_measure_now() < until)
        ;
}

static eb_status cpu_predict(void *ctx, const float *x, size_t n, uint32_t S, uint64_t seed,
                             uint64_t first_example, float *probs, eb_error *err)
{
    cpu_ctx *c = ctx;
    double t0 = 0.0;
    eb_status st;
    if (c->slowdown > 0.0)
        t0 = eb_measure_now();
    if (c->run.ops)
        st = c->run.ops->run(c->run.state, x, n, S, seed, first_example, eb_nn_set_threads(0),
                             probs, err);
    else
        st = eb_predictor_run(c->pred, x, n, S, seed, first_example, probs, err);
    if (c->slowdown > 0.0) {
        double t1 = eb_measure_now();
        spin_until(t1 + (t1 - t0) * c->slowdown);
    }
    return st;
}

static eb_status cpu_input_grad(void *ctx, const float *x, const uint8_t *y, size_t n,
                                uint32_t S, uint64_t seed, uint64_t first_example, float *dx,
                                float *pbar, eb_error *err)
{
    cpu_ctx *c = ctx;
    eb_status st;
    if (!c->pred) {
        /* sparse in place: gradients run on a decoded copy, made once */
        if ((st = eb_posterior_from_bundle(c->bundle, &c->grad_post, err)))
            return st;
        if ((st = eb_predictor_new(&c->grad_post, c->cfg.max_batch, c->max_draws, &c->pred,
                                   err))) {
            eb_posterior_release(&c->grad_post);
            return st;
        }
    }
    return eb_predictor_input_grad(c->pred, x, y, n, S, seed, first_example, dx, pbar, err);
}

static eb_status cpu_describe(void *ctx, eb_device_info *info, eb_error *err)
{
    const cpu_ctx *c = ctx;
    cpu_set_t now;
    (void)err;
    snprintf(info->description, sizeof info->description, "%s", eb_nn_blas_info());
    snprintf(info->strategy, sizeof info->strategy, "%s",
             c->run.ops ? c->run.ops->name : c->pred ? "loop" : c->strategy);
    info->threads = eb_nn_set_threads(0);
    if (sched_getaffinity(0, sizeof now, &now) == 0) {
        eb_device_cpus set;
        memset(&set, 0, sizeof set);
        for (unsigned i = 0; i < EB_DEVICE_MAX_CPUS && i < CPU_SETSIZE; i++)
            if (CPU_ISSET(i, &now))
                set.bits[i / 64] |= (uint64_t)1 << (i % 64);
        eb_device_cpus_format(&set, info->cpus, sizeof info->cpus);
    }
    info->max_batch = c->cfg.max_batch;
    info->injected_slowdown = c->slowdown;
    return EB_OK;
}

eb_status eb_device_cpu_strategy_check(const char *name, eb_error *err)
{
    return eb_strategy_check_name(name, err);
}

const eb_device_ops eb_device_cpu_ops = {
    /* .version = */ EB_DEVICE_OPS_VERSION,
    /* .name = */ "cpu",
    /* .summary = */ "this process on the CPU (OpenBLAS); the reference backend",
    /* .caps = */ EB_DEVICE_CAP_INPUT_GRAD | EB_DEVICE_CAP_THREADS | EB_DEVICE_CAP_AFFINITY |
        EB_DEVICE_CAP_LOCAL | EB_DEVICE_CAP_DETERMINISTIC,
    /* .open = */ cpu_open,
    /* .close = */ cpu_close,
    /* .load = */ cpu_load,
    /* .unload = */ cpu_unload,
    /* .model = */ cpu_model,
    /* .predict = */ cpu_predict,
    /* .input_grad = */ cpu_input_grad,
    /* .describe = */ cpu_describe,
    /* .evict = */ NULL,             /* default: this machine's page cache */
    /* .memory_reset_peak = */ NULL, /* default: /proc/self/clear_refs */
    /* .memory_read = */ NULL,       /* default: /proc/self/status */
};
