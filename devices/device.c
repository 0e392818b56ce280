/* device.c: the device interface around a backend's table: the registry,
 * the eb_device handle (state checks, configuration validation, the
 * defaults of empty optional slots, the device's name on every error),
 * CPU-set parsing, and eb_device_compare, which tests a backend against
 * the CPU oracle. The slots themselves live in the backends (cpu.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "devices/eb_device.h"

/* ---- registry ---------------------------------------------------------- */

const eb_device_ops *const eb_device_backends[] = {&eb_device_cpu_ops, NULL};

const eb_device_ops *eb_device_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; eb_device_backends[i]; i++)
        if (strcmp(eb_device_backends[i]->name, name) == 0)
            return eb_device_backends[i];
    return NULL;
}

/* ---- CPU sets ------------------------------------------------------------ */

static void cpus_set(eb_device_cpus *s, unsigned i)
{
    s->bits[i / 64] |= (uint64_t)1 << (i % 64);
}

static int cpus_has(const eb_device_cpus *s, unsigned i)
{
    return (int)((s->bits[i / 64] >> (i % 64)) & 1u);
}

int eb_device_cpus_count(const eb_device_cpus *set)
{
    int n = 0;
    for (unsigned i = 0; i < EB_DEVICE_MAX_CPUS; i++)
        n += cpus_has(set, i);
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Mask form: "0x" then hex digits, the last digit holding CPUs 0-3. */
static eb_status parse_mask(const char *text, eb_device_cpus *set, eb_error *err)
{
    const char *digits = text + 2;
    size_t nd = strlen(digits);
    if (nd == 0)
        return eb_error_set(err, EB_ERR_ARG, "CPU mask '%s' has no hexadecimal digits", text);
    for (size_t k = 0; k < nd; k++) {
        int v = hexval(digits[nd - 1 - k]);
        if (v < 0)
            return eb_error_set(err, EB_ERR_ARG, "CPU mask '%s': '%c' is not a hexadecimal digit",
                                text, digits[nd - 1 - k]);
        for (unsigned b = 0; b < 4; b++) {
            if (!(v & (1 << b)))
                continue;
            if (k * 4 + b >= EB_DEVICE_MAX_CPUS)
                return eb_error_set(err, EB_ERR_ARG,
                                    "CPU mask '%s' names CPU %zu; at most %d CPUs are supported",
                                    text, k * 4 + b, EB_DEVICE_MAX_CPUS);
            cpus_set(set, (unsigned)(k * 4 + b));
        }
    }
    return EB_OK;
}

/* A CPU number at *p, advancing it; -1 when there is none. */
static long parse_cpu_number(const char **p)
{
    long v = 0;
    if (**p < '0' || **p > '9')
        return -1;
    while (**p >= '0' && **p <= '9') {
        v = v * 10 + (**p - '0');
        if (v > 1000000)
            v = 1000000; /* saturate; reported as out of range */
        (*p)++;
    }
    return v;
}

eb_status eb_device_cpus_parse(const char *text, eb_device_cpus *set, eb_error *err)
{
    const char *p = text;
    eb_status st;
    memset(set, 0, sizeof *set);
    if (!text || !*text)
        return eb_error_set(err, EB_ERR_ARG, "the CPU list is empty");
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        st = parse_mask(text, set, err);
    } else {
        st = EB_OK;
        for (;;) {
            const char *item = p;
            long lo = parse_cpu_number(&p), hi;
            if (lo < 0) {
                st = eb_error_set(err, EB_ERR_ARG,
                                  "CPU list '%s': expected a CPU number at '%s' (write e.g. "
                                  "'0-3,6' or a mask '0xf')", text, item);
                break;
            }
            hi = lo;
            if (*p == '-') {
                p++;
                hi = parse_cpu_number(&p);
                if (hi < 0) {
                    st = eb_error_set(err, EB_ERR_ARG,
                                      "CPU list '%s': the range at '%s' has no upper end", text,
                                      item);
                    break;
                }
                if (hi < lo) {
                    st = eb_error_set(err, EB_ERR_ARG,
                                      "CPU list '%s': the range %ld-%ld runs backwards", text, lo,
                                      hi);
                    break;
                }
            }
            if (hi >= EB_DEVICE_MAX_CPUS) {
                st = eb_error_set(err, EB_ERR_ARG,
                                  "CPU list '%s' names CPU %ld; at most %d CPUs are supported",
                                  text, hi, EB_DEVICE_MAX_CPUS);
                break;
            }
            for (long i = lo; i <= hi; i++)
                cpus_set(set, (unsigned)i);
            if (*p == '\0')
                break;
            if (*p != ',') {
                st = eb_error_set(err, EB_ERR_ARG, "CPU list '%s': unexpected '%c' at '%s'",
                                  text, *p, p);
                break;
            }
            p++;
        }
    }
    if (st == EB_OK && eb_device_cpus_count(set) == 0)
        st = eb_error_set(err, EB_ERR_ARG, "CPU mask '%s' selects no CPU", text);
    if (st)
        memset(set, 0, sizeof *set);
    return st;
}

void eb_device_cpus_format(const eb_device_cpus *set, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (unsigned i = 0; i < EB_DEVICE_MAX_CPUS;) {
        unsigned j;
        int w;
        if (!cpus_has(set, i)) {
            i++;
            continue;
        }
        for (j = i; j + 1 < EB_DEVICE_MAX_CPUS && cpus_has(set, j + 1); j++)
            ;
        if (j == i)
            w = snprintf(buf + used, len - used, "%s%u", used ? "," : "", i);
        else
            w = snprintf(buf + used, len - used, "%s%u-%u", used ? "," : "", i, j);
        if (w < 0 || (size_t)w >= len - used) {
            buf[len - 1] = '\0'; /* truncated */
            return;
        }
        used += (size_t)w;
        i = j + 1;
    }
}

/* ---- the handle ------------------------------------------------------------ */

struct eb_device {
    const eb_device_ops *ops;
    void *ctx;
    eb_device_config cfg; /* as validated, max_batch resolved */
    int loaded;
    eb_device_model model; /* valid while loaded */
    char path[4096];       /* of the loaded bundle */
};

/* A slot introduced in interface version `since`, or NULL when the table
 * was written for an older version (SQLite's iVersion rule). */
#define SLOT(dev, field, since) ((dev)->ops->version >= (since) ? (dev)->ops->field : NULL)

void eb_device_config_default(eb_device_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
}

static eb_status check_table(const eb_device_ops *ops, eb_error *err)
{
    const char *missing;
    if (!ops)
        return eb_error_set(err, EB_ERR_ARG, "no device table given");
    if (!ops->name || !*ops->name)
        return eb_error_set(err, EB_ERR_ARG, "a device table has no name");
    if (ops->version < 1 || ops->version > EB_DEVICE_OPS_VERSION)
        return eb_error_set(err, EB_ERR_ARG,
                            "device table '%s' declares interface version %d; this build knows "
                            "versions 1 to %d", ops->name, ops->version, EB_DEVICE_OPS_VERSION);
    missing = !ops->open     ? "open"
              : !ops->close  ? "close"
              : !ops->load   ? "load"
              : !ops->unload ? "unload"
              : !ops->model  ? "model"
              : !ops->predict ? "predict"
                              : NULL;
    if (missing)
        return eb_error_set(err, EB_ERR_ARG,
                            "device table '%s' leaves the required slot '.%s' empty", ops->name,
                            missing);
    if (!!(ops->caps & EB_DEVICE_CAP_INPUT_GRAD) != !!ops->input_grad)
        return eb_error_set(err, EB_ERR_ARG,
                            "device table '%s': the capability INPUT_GRAD and the slot "
                            "'.input_grad' disagree (one is set, the other not)", ops->name);
    return EB_OK;
}

static eb_status check_config(const eb_device_ops *ops, eb_device_config *cfg, eb_error *err)
{
    if (cfg->threads < 0)
        return eb_error_set(err, EB_ERR_ARG, "device '%s': threads = %d must be 0 or more",
                            ops->name, cfg->threads);
    if (cfg->max_batch < 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "device '%s': max_batch = %d must be 0 (default 256) or more",
                            ops->name, cfg->max_batch);
    if (cfg->max_batch == 0)
        cfg->max_batch = 256;
    if (!memchr(cfg->cpus, '\0', sizeof cfg->cpus) ||
        !memchr(cfg->options, '\0', sizeof cfg->options))
        return eb_error_set(err, EB_ERR_ARG, "device '%s': cpus or options is not terminated",
                            ops->name);
    if (cfg->cpus[0]) {
        eb_device_cpus set;
        eb_status st = eb_device_cpus_parse(cfg->cpus, &set, err);
        if (st) {
            eb_error_prefix(err, "device '%s' option cpus: ", ops->name);
            return st;
        }
        if (!(ops->caps & EB_DEVICE_CAP_AFFINITY))
            return eb_error_set(err, EB_ERR_UNSUPPORTED,
                                "device '%s' cannot pin threads to CPUs (cpus = '%s')", ops->name,
                                cfg->cpus);
    }
    if (cfg->threads > 0 && !(ops->caps & EB_DEVICE_CAP_THREADS))
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "device '%s' cannot set its thread count (threads = %d)", ops->name,
                            cfg->threads);
    return EB_OK;
}

eb_status eb_device_open_ops(const eb_device_ops *ops, const eb_device_config *cfg,
                             eb_device **out, eb_error *err)
{
    eb_device *dev;
    eb_status st;

    *out = NULL;
    st = check_table(ops, err);
    if (st)
        return st;
    dev = eb_calloc(1, sizeof *dev);
    if (!dev)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory opening device '%s'", ops->name);
    dev->ops = ops;
    if (cfg)
        dev->cfg = *cfg;
    else
        eb_device_config_default(&dev->cfg);
    st = check_config(ops, &dev->cfg, err);
    if (st == EB_OK) {
        st = ops->open(&dev->cfg, &dev->ctx, err);
        if (st)
            eb_error_prefix(err, "opening device '%s': ", ops->name);
    }
    if (st) {
        eb_free(dev);
        return st;
    }
    *out = dev;
    return EB_OK;
}

eb_status eb_device_open(const char *name, const eb_device_config *cfg, eb_device **out,
                         eb_error *err)
{
    const eb_device_ops *ops = eb_device_find(name);
    if (!ops) {
        char known[256] = "";
        size_t used = 0;
        *out = NULL;
        for (size_t i = 0; eb_device_backends[i] && used < sizeof known; i++) {
            int w = snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                             eb_device_backends[i]->name);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        return eb_error_set(err, EB_ERR_NOTFOUND, "unknown device '%s' (known: %s)",
                            name ? name : "(null)", known);
    }
    return eb_device_open_ops(ops, cfg, out, err);
}

void eb_device_close(eb_device *dev)
{
    if (!dev)
        return;
    eb_device_unload(dev);
    dev->ops->close(dev->ctx);
    eb_free(dev);
}

const char *eb_device_name(const eb_device *dev)
{
    return dev->ops->name;
}

unsigned eb_device_caps(const eb_device *dev)
{
    return dev->ops->caps;
}

const eb_device_config *eb_device_get_config(const eb_device *dev)
{
    return &dev->cfg;
}

eb_status eb_device_describe(eb_device *dev, eb_device_info *info, eb_error *err)
{
    eb_status (*describe)(void *, eb_device_info *, eb_error *) = SLOT(dev, describe, 1);
    memset(info, 0, sizeof *info);
    snprintf(info->backend, sizeof info->backend, "%s", dev->ops->name);
    snprintf(info->description, sizeof info->description, "%s",
             dev->ops->summary ? dev->ops->summary : "");
    info->threads = dev->cfg.threads;
    snprintf(info->cpus, sizeof info->cpus, "%s", dev->cfg.cpus);
    info->max_batch = dev->cfg.max_batch;
    if (describe) {
        eb_status st = describe(dev->ctx, info, err);
        if (st) {
            eb_error_prefix(err, "device '%s': ", dev->ops->name);
            return st;
        }
    }
    return EB_OK;
}

/* The model a backend reports must be usable by the handle's checks. */
static eb_status check_model(const eb_device *dev, const eb_device_model *m, eb_error *err)
{
    if (m->n_classes < 1 || m->in_size < 1 || m->default_draws < 1 || m->max_draws < 1 ||
        m->max_batch < 1)
        return eb_error_set(err, EB_ERR_INTERNAL,
                            "device '%s' reported an unusable model for '%s' (classes %d, input "
                            "size %zu, default draws %u, max draws %u, max batch %d)",
                            dev->ops->name, dev->path, m->n_classes, m->in_size,
                            m->default_draws, m->max_draws, m->max_batch);
    return EB_OK;
}

eb_status eb_device_load(eb_device *dev, const char *path, eb_device_load_timing *timing,
                         eb_error *err)
{
    eb_device_load_timing local;
    eb_status st;
    if (!timing)
        timing = &local;
    memset(timing, 0, sizeof *timing);
    if (dev->loaded)
        return eb_error_set(err, EB_ERR_ARG,
                            "device '%s' already holds bundle '%s'; unload it before loading '%s'",
                            dev->ops->name, dev->path, path);
    if (strlen(path) >= sizeof dev->path)
        return eb_error_set(err, EB_ERR_ARG, "bundle path '%.64s...' is longer than %zu bytes",
                            path, sizeof dev->path - 1);
    st = dev->ops->load(dev->ctx, path, timing, err);
    if (st) {
        eb_error_prefix(err, "device '%s': ", dev->ops->name);
        return st;
    }
    snprintf(dev->path, sizeof dev->path, "%s", path);
    memset(&dev->model, 0, sizeof dev->model);
    st = dev->ops->model(dev->ctx, &dev->model, err);
    if (st == EB_OK)
        st = check_model(dev, &dev->model, err);
    else
        eb_error_prefix(err, "device '%s', bundle '%s': ", dev->ops->name, path);
    if (st) {
        dev->ops->unload(dev->ctx);
        dev->path[0] = '\0';
        return st;
    }
    dev->loaded = 1;
    return EB_OK;
}

void eb_device_unload(eb_device *dev)
{
    if (!dev->loaded)
        return;
    dev->ops->unload(dev->ctx);
    dev->loaded = 0;
    dev->path[0] = '\0';
    memset(&dev->model, 0, sizeof dev->model);
}

const eb_device_model *eb_device_model_info(const eb_device *dev)
{
    return dev->loaded ? &dev->model : NULL;
}

const char *eb_device_loaded_path(const eb_device *dev)
{
    return dev->loaded ? dev->path : NULL;
}

/* Resolves S = 0 and checks the state shared by predict and input_grad. */
static eb_status check_call(const eb_device *dev, uint32_t *S, eb_error *err)
{
    if (!dev->loaded)
        return eb_error_set(err, EB_ERR_ARG, "device '%s': no bundle is loaded",
                            dev->ops->name);
    if (*S == 0)
        *S = dev->model.default_draws;
    if (*S > dev->model.max_draws)
        return eb_error_set(err, EB_ERR_ARG,
                            "device '%s': %u draws asked of bundle '%s', which this device "
                            "allows at most %u (see eb_device_config.max_draws)",
                            dev->ops->name, *S, dev->path, dev->model.max_draws);
    return EB_OK;
}

eb_status eb_device_predict(eb_device *dev, const float *x, size_t n, uint32_t S, uint64_t seed,
                            uint64_t first_example, float *probs, eb_error *err)
{
    eb_status st = check_call(dev, &S, err);
    if (st || n == 0)
        return st;
    st = dev->ops->predict(dev->ctx, x, n, S, seed, first_example, probs, err);
    if (st)
        eb_error_prefix(err, "device '%s': ", dev->ops->name);
    return st;
}

eb_status eb_device_input_grad(eb_device *dev, const float *x, const uint8_t *y, size_t n,
                               uint32_t S, uint64_t seed, uint64_t first_example, float *dx,
                               float *pbar, eb_error *err)
{
    eb_status (*grad)(void *, const float *, const uint8_t *, size_t, uint32_t, uint64_t,
                      uint64_t, float *, float *, eb_error *) = SLOT(dev, input_grad, 1);
    eb_status st;
    if (!grad)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "device '%s' cannot compute input gradients (no input_grad slot)",
                            dev->ops->name);
    st = check_call(dev, &S, err);
    if (st || n == 0)
        return st;
    for (size_t i = 0; i < n; i++)
        if ((int)y[i] >= dev->model.n_classes)
            return eb_error_set(err, EB_ERR_ARG,
                                "device '%s': label %u of input %zu is not below the %d classes "
                                "of bundle '%s'", dev->ops->name, y[i], i, dev->model.n_classes,
                                dev->path);
    st = grad(dev->ctx, x, y, n, S, seed, first_example, dx, pbar, err);
    if (st)
        eb_error_prefix(err, "device '%s': ", dev->ops->name);
    return st;
}

/* ---- optional slots with their defaults --------------------------------- */

eb_status eb_device_evict(eb_device *dev, const char *path, eb_page_cache_state *out,
                          eb_error *err)
{
    eb_status (*evict)(void *, const char *, eb_page_cache_state *, eb_error *) =
        SLOT(dev, evict, 1);
    eb_status st;
    memset(out, 0, sizeof *out);
    if (evict)
        st = evict(dev->ctx, path, out, err);
    else if (dev->ops->caps & EB_DEVICE_CAP_LOCAL)
        st = eb_measure_page_cache_drop(path, out, err);
    else
        st = eb_error_set(err, EB_ERR_UNSUPPORTED,
                          "device '%s' cannot drop a file from its page cache", dev->ops->name);
    if (st && st != EB_ERR_UNSUPPORTED)
        eb_error_prefix(err, "device '%s': ", dev->ops->name);
    return st;
}

eb_status eb_device_memory_reset_peak(eb_device *dev, eb_error *err)
{
    eb_status (*reset)(void *, eb_error *) = SLOT(dev, memory_reset_peak, 1);
    if (reset)
        return reset(dev->ctx, err);
    if (dev->ops->caps & EB_DEVICE_CAP_LOCAL)
        return eb_measure_proc_reset_peak(err);
    return eb_error_set(err, EB_ERR_UNSUPPORTED, "device '%s' cannot reset its peak memory",
                        dev->ops->name);
}

eb_status eb_device_memory_read(eb_device *dev, eb_proc_memory *out, eb_error *err)
{
    eb_status (*rd)(void *, eb_proc_memory *, eb_error *) = SLOT(dev, memory_read, 1);
    memset(out, 0, sizeof *out);
    if (rd)
        return rd(dev->ctx, out, err);
    if (dev->ops->caps & EB_DEVICE_CAP_LOCAL)
        return eb_measure_proc_memory(out, err);
    return eb_error_set(err, EB_ERR_UNSUPPORTED, "device '%s' cannot report its memory",
                        dev->ops->name);
}

/* ---- comparison against a reference device ------------------------------ */

static size_t argmax_mean(const float *probs, size_t S, size_t C)
{
    size_t best = 0;
    double best_v = -1.0;
    for (size_t c = 0; c < C; c++) {
        double m = 0.0;
        for (size_t s = 0; s < S; s++)
            m += probs[s * C + c];
        if (m > best_v) { /* first maximum, as eb_metric_accuracy */
            best_v = m;
            best = c;
        }
    }
    return best;
}

eb_status eb_device_compare(eb_device *dev, eb_device *reference, const float *x,
                            const uint8_t *y, size_t n, uint32_t S, uint64_t seed,
                            eb_device_agreement *out, eb_error *err)
{
    const eb_device_model *a = eb_device_model_info(dev), *b = eb_device_model_info(reference);
    float *pa = NULL, *pb = NULL, *ga = NULL, *gb = NULL;
    size_t C, in, np, ng, agree = 0;
    eb_status st;

    memset(out, 0, sizeof *out);
    if (!a || !b)
        return eb_error_set(err, EB_ERR_ARG, "comparing devices '%s' and '%s': %s holds no bundle",
                            dev->ops->name, reference->ops->name,
                            !a ? "the first" : "the reference");
    if (a->in_size != b->in_size || a->n_classes != b->n_classes)
        return eb_error_set(err, EB_ERR_ARG,
                            "comparing devices '%s' and '%s': their bundles differ in shape "
                            "(input %zu vs %zu floats, %d vs %d classes)", dev->ops->name,
                            reference->ops->name, a->in_size, b->in_size, a->n_classes,
                            b->n_classes);
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "comparing devices: no inputs given");
    if (S == 0)
        S = b->default_draws;
    C = (size_t)a->n_classes;
    in = a->in_size;
    if (eb_size_mul(n, S, &np) || eb_size_mul(np, C * sizeof(float), &np) ||
        eb_size_mul(n, in * sizeof(float), &ng))
        return eb_error_set(err, EB_ERR_ARG, "comparing devices: %zu inputs x %u draws overflow",
                            n, S);
    pa = eb_malloc(np);
    pb = eb_malloc(np);
    if (!pa || !pb) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory comparing devices (%zu bytes)",
                          2 * np);
        goto done;
    }
    st = eb_device_predict(dev, x, n, S, seed, 0, pa, err);
    if (st == EB_OK)
        st = eb_device_predict(reference, x, n, S, seed, 0, pb, err);
    if (st)
        goto done;
    out->n = n;
    out->draws = S;
    for (size_t k = 0; k < n * S * C; k++) {
        double d = fabs((double)pa[k] - (double)pb[k]);
        if (d > out->max_abs_prob_diff || isnan(d)) {
            out->max_abs_prob_diff = isnan(d) ? INFINITY : d;
            out->worst_prob_index = k;
        }
    }
    for (size_t i = 0; i < n; i++)
        agree += argmax_mean(pa + i * S * C, S, C) == argmax_mean(pb + i * S * C, S, C);
    out->top1_agreement = (double)agree / (double)n;
    if (y && SLOT(dev, input_grad, 1) && SLOT(reference, input_grad, 1)) {
        ga = eb_malloc(ng);
        gb = eb_malloc(ng);
        if (!ga || !gb) {
            st = eb_error_set(err, EB_ERR_NOMEM, "out of memory comparing input gradients");
            goto done;
        }
        st = eb_device_input_grad(dev, x, y, n, S, seed, 0, ga, NULL, err);
        if (st == EB_OK)
            st = eb_device_input_grad(reference, x, y, n, S, seed, 0, gb, NULL, err);
        if (st)
            goto done;
        out->grad_compared = 1;
        for (size_t k = 0; k < n * in; k++) {
            double d = fabs((double)ga[k] - (double)gb[k]);
            if (isnan(d))
                d = INFINITY;
            if (d > out->max_abs_grad_diff)
                out->max_abs_grad_diff = d;
            if (fabs((double)gb[k]) > out->max_abs_grad_ref)
                out->max_abs_grad_ref = fabs((double)gb[k]);
        }
    }
done:
    eb_free(pa);
    eb_free(pb);
    eb_free(ga);
    eb_free(gb);
    return st;
}
