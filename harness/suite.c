/* suite.c: suite files (INI through inih), the built-in suites, and their
 * expansion into jobs with content keys. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "devices/eb_device.h"
#include "common/eb_io.h"
#include "harness/eb_shift.h"
#include "harness/eb_suite.h"

static const char quick_suite[] =
    "# quick: every method on mlp with one seed, in minutes on 2 cores. The\n"
    "# sampling methods run shorter than their defaults (docs/methods.md,\n"
    "# \"Quick-suite settings\"); HMC runs on its reference setting, a small\n"
    "# MLP on 1,000 training images.\n"
    "[suite]\n"
    "name = quick\n"
    "description = every method, mlp, one seed\n"
    "seeds = 1\n"
    "archs = mlp\n"
    "facets = all\n"
    "\n"
    "[data]\n"
    "train = fashion-mnist/train\n"
    "test = fashion-mnist/test\n"
    "ood = mnist/ood\n"
    "\n"
    "[evaluation]\n"
    "bootstrap = 200\n"
    "ci_level = 0.95\n"
    "\n"
    "[device]\n"
    "name = cpu\n"
    "latency_warmup = 20\n"
    "latency_min_queries = 200\n"
    "latency_min_seconds = 1\n"
    "throughput_batch = 256\n"
    "throughput_min_seconds = 1\n"
    "\n"
    "[adversarial]\n"
    "eps = 0, 0.01, 0.02, 0.05, 0.1, 0.2\n"
    "attacks = fgsm, pgd\n"
    "pgd_steps = 10\n"
    "pgd_step = 0.25\n"
    "random_start = 1\n"
    "subset = 1000\n"
    "\n"
    "[shift]\n"
    "corruptions = rotation, gaussian-noise, gaussian-blur, contrast, translation\n"
    "severities = 1, 2, 3, 4, 5\n"
    "subset = 2000\n"
    "\n"
    "[fidelity]\n"
    "reference = hmc\n"
    "\n"
    "[method map]\n"
    "\n"
    "[method ensemble]\n"
    "samples = 5\n"
    "\n"
    "[method dropout]\n"
    "samples = 30\n"
    "\n"
    "[method sgld]\n"
    "burnin = 5\n"
    "chains = 2\n"
    "samples = 10\n"
    "\n"
    "[method sghmc]\n"
    "burnin = 5\n"
    "samples = 10\n"
    "\n"
    "[method csgld]\n"
    "epochs = 20\n"
    "cycles = 5\n"
    "samples = 10\n"
    "\n"
    "[method csghmc]\n"
    "epochs = 10\n"
    "chains = 2\n"
    "cycles = 5\n"
    "samples = 10\n"
    "\n"
    "[method vi]\n"
    "epochs = 5\n"
    "samples = 10\n"
    "\n"
    "[method snapshot]\n"
    "epochs = 15\n"
    "samples = 5\n"
    "\n"
    "[method hmc]\n"
    "arch = mlp-small\n"
    "warmup = 100\n"
    "samples = 40\n"
    "thin = 2\n"
    "path_len = 0.1\n"
    "\n"
    "# Compressed posteriors (docs/suites.md, [chains]): one chain per\n"
    "# transform kind, at short settings.\n"
    "[transform prune-ft]\n"
    "transform = prune\n"
    "schedule = iterative\n"
    "finetune_epochs = 1\n"
    "\n"
    "[transform student]\n"
    "transform = distill\n"
    "epochs = 3\n"
    "anneal_epochs = 2\n"
    "augment = noise\n"
    "\n"
    "[chains]\n"
    "map-p90 = map -> prune-ft:0.9\n"
    "ensemble-p90 = ensemble -> prune-ft:0.9\n"
    "ensemble-int8 = ensemble -> quantize:int8\n"
    "vi-snr90 = vi -> prune:0.9\n"
    "ensemble-end2 = ensemble -> student:end2\n";

static const char compression_suite[] =
    "# compression: the cost a posterior can buy back. MAP and a 30-member\n"
    "# ensemble on mlp, pruned one-shot and iteratively with fine-tuning from\n"
    "# 50 to 98% sparsity, quantized to f16 and int8, and distilled into one\n"
    "# mlp student (BDK, GPED, EnD^2), plus a sweep of GPED student sizes\n"
    "# (784-32, 784-128, 784-256-256, 784-512-512, and 784-512-512 pruned to\n"
    "# 90 and 95% while distilling) for the storage-quality front; quality,\n"
    "# calibration, OOD, PGD at eps 0.1, latency, memory and storage for\n"
    "# each (docs/suites.md).\n"
    "[suite]\n"
    "name = compression\n"
    "description = map and a 30-member ensemble, pruned, quantized and distilled, mlp\n"
    "seeds = 1\n"
    "archs = mlp\n"
    "facets = quality, calibration, ood, misclassification, adversarial, latency, load, "
    "memory, storage, diagnostics\n"
    "\n"
    "[evaluation]\n"
    "bootstrap = 200\n"
    "\n"
    "[device]\n"
    "latency_warmup = 20\n"
    "latency_min_queries = 100\n"
    "latency_min_seconds = 0.5\n"
    "\n"
    "[adversarial]\n"
    "eps = 0, 0.1\n"
    "attacks = fgsm, pgd\n"
    "pgd_steps = 10\n"
    "pgd_step = 0.25\n"
    "subset = 500\n"
    "\n"
    "[method map]\n"
    "\n"
    "[method ensemble30]\n"
    "method = ensemble\n"
    "samples = 30\n"
    "epochs = 10\n"
    "\n"
    "[transform os]\n"
    "transform = prune\n"
    "schedule = oneshot\n"
    "\n"
    "[transform ft]\n"
    "transform = prune\n"
    "schedule = iterative\n"
    "\n"
    "# students learn from noise-perturbed training images (as the\n"
    "# distillation papers do): without them they recover little of the\n"
    "# teacher's OOD separation (docs/methods.md, Distillation)\n"
    "[transform student]\n"
    "transform = distill\n"
    "augment = noise\n"
    "\n"
    "# the student-size sweep for the storage-quality front: GPED students\n"
    "# of several sizes (ens30-gped is the 784-256-256 point), the largest\n"
    "# also pruned while distilling (magnitude cycles, each fine-tuned on\n"
    "# the distillation loss; stored sparse)\n"
    "[transform gped-32]\n"
    "transform = distill\n"
    "kind = gped\n"
    "augment = noise\n"
    "student = mlp:32\n"
    "\n"
    "[transform gped-64]\n"
    "transform = distill\n"
    "kind = gped\n"
    "augment = noise\n"
    "student = mlp:64\n"
    "\n"
    "[transform gped-128]\n"
    "transform = distill\n"
    "kind = gped\n"
    "augment = noise\n"
    "student = mlp:128\n"
    "\n"
    "[transform gped-512x2]\n"
    "transform = distill\n"
    "kind = gped\n"
    "augment = noise\n"
    "student = mlp:512,512\n"
    "\n"
    "[transform gped-512x2-p90]\n"
    "transform = distill\n"
    "kind = gped\n"
    "augment = noise\n"
    "student = mlp:512,512\n"
    "sparsity = 0.9\n"
    "prune_cycles = 3\n"
    "prune_epochs = 2\n"
    "\n"
    "[transform gped-512x2-p95]\n"
    "transform = distill\n"
    "kind = gped\n"
    "augment = noise\n"
    "student = mlp:512,512\n"
    "sparsity = 0.95\n"
    "prune_cycles = 3\n"
    "prune_epochs = 2\n"
    "\n"
    "[chains]\n"
    "map-os50 = map -> os:0.5\n"
    "map-os80 = map -> os:0.8\n"
    "map-os90 = map -> os:0.9\n"
    "map-os95 = map -> os:0.95\n"
    "map-os98 = map -> os:0.98\n"
    "map-ft50 = map -> ft:0.5\n"
    "map-ft80 = map -> ft:0.8\n"
    "map-ft90 = map -> ft:0.9\n"
    "map-ft95 = map -> ft:0.95\n"
    "map-ft98 = map -> ft:0.98\n"
    "ens30-os50 = ensemble30 -> os:0.5\n"
    "ens30-os80 = ensemble30 -> os:0.8\n"
    "ens30-os90 = ensemble30 -> os:0.9\n"
    "ens30-os95 = ensemble30 -> os:0.95\n"
    "ens30-os98 = ensemble30 -> os:0.98\n"
    "ens30-ft50 = ensemble30 -> ft:0.5\n"
    "ens30-ft80 = ensemble30 -> ft:0.8\n"
    "ens30-ft90 = ensemble30 -> ft:0.9\n"
    "ens30-ft95 = ensemble30 -> ft:0.95\n"
    "ens30-ft98 = ensemble30 -> ft:0.98\n"
    "map-int8 = map -> quantize:int8\n"
    "ens30-int8 = ensemble30 -> quantize:int8\n"
    "ens30-f16 = ensemble30 -> quantize:f16\n"
    "ens30-ft90-int8 = ensemble30 -> ft:0.9 -> quantize:int8\n"
    "ens30-bdk = ensemble30 -> student:bdk\n"
    "ens30-gped = ensemble30 -> student:gped\n"
    "ens30-end2 = ensemble30 -> student:end2\n"
    "ens30-gped-32 = ensemble30 -> gped-32\n"
    "ens30-gped-64 = ensemble30 -> gped-64\n"
    "ens30-gped-128 = ensemble30 -> gped-128\n"
    "ens30-gped-512x2 = ensemble30 -> gped-512x2\n"
    "ens30-gped-512x2-p90 = ensemble30 -> gped-512x2-p90\n"
    "ens30-gped-512x2-p95 = ensemble30 -> gped-512x2-p95\n";

static const char paper_suite[] =
    "# paper: both architectures, three seeds, every method at its defaults\n"
    "# (ensembles up to S = 30), and a reference group: full-batch HMC on a\n"
    "# small MLP over 1,000 training images, with the stochastic methods on\n"
    "# the same model and data scored for their fidelity to it.\n"
    "[suite]\n"
    "name = paper\n"
    "description = mlp and cnn, seeds 1-3, S up to 30, HMC fidelity reference\n"
    "seeds = 1, 2, 3\n"
    "archs = mlp, cnn\n"
    "facets = all\n"
    "\n"
    "[data]\n"
    "train = fashion-mnist/train\n"
    "test = fashion-mnist/test\n"
    "ood = mnist/ood\n"
    "\n"
    "[evaluation]\n"
    "bootstrap = 1000\n"
    "ci_level = 0.95\n"
    "\n"
    "[device]\n"
    "name = cpu\n"
    "latency_warmup = 50\n"
    "latency_min_queries = 1000\n"
    "latency_min_seconds = 5\n"
    "throughput_batch = 256\n"
    "throughput_min_seconds = 3\n"
    "\n"
    "[adversarial]\n"
    "eps = 0, 0.01, 0.02, 0.05, 0.1, 0.2\n"
    "attacks = fgsm, pgd\n"
    "pgd_steps = 20\n"
    "pgd_step = 0.125\n"
    "random_start = 1\n"
    "subset = 2000\n"
    "\n"
    "[shift]\n"
    "corruptions = rotation, gaussian-noise, gaussian-blur, contrast, translation\n"
    "severities = 1, 2, 3, 4, 5\n"
    "subset = 10000\n"
    "\n"
    "[fidelity]\n"
    "reference = hmc\n"
    "\n"
    "[method map]\n"
    "\n"
    "[method ensemble]\n"
    "samples = 5\n"
    "\n"
    "[method ensemble30]\n"
    "method = ensemble\n"
    "samples = 30\n"
    "\n"
    "[method dropout]\n"
    "samples = 30\n"
    "\n"
    "[method sgld]\n"
    "arch = mlp\n"
    "\n"
    "[method sghmc]\n"
    "arch = mlp\n"
    "\n"
    "[method csgld]\n"
    "arch = mlp\n"
    "\n"
    "[method csghmc]\n"
    "arch = mlp\n"
    "\n"
    "[method vi]\n"
    "arch = mlp\n"
    "\n"
    "[method snapshot]\n"
    "\n"
    "[method hmc]\n"
    "arch = mlp-small\n"
    "\n"
    "# the reference group's samplers run longer than their full-data\n"
    "# defaults: 1,000 images make 8 steps an epoch (docs/methods.md, HMC)\n"
    "[method sghmc-ref]\n"
    "method = sghmc\n"
    "arch = mlp-small\n"
    "subset = 1000\n"
    "temperature = 1\n"
    "burnin = 200\n"
    "thin = 10\n"
    "\n"
    "[method csghmc-ref]\n"
    "method = csghmc\n"
    "arch = mlp-small\n"
    "subset = 1000\n"
    "temperature = 1\n"
    "epochs = 1000\n"
    "\n"
    "[method vi-ref]\n"
    "method = vi\n"
    "arch = mlp-small\n"
    "subset = 1000\n"
    "temperature = 1\n"
    "epochs = 400\n"
    "\n"
    "[transform ft]\n"
    "transform = prune\n"
    "schedule = iterative\n"
    "\n"
    "# students learn from noise-perturbed training images (as the\n"
    "# distillation papers do): without them they recover little of the\n"
    "# teacher's OOD separation (docs/methods.md, Distillation)\n"
    "[transform student]\n"
    "transform = distill\n"
    "augment = noise\n"
    "\n"
    "[chains]\n"
    "map-ft90 = map -> ft:0.9\n"
    "ens30-ft90 = ensemble30 -> ft:0.9\n"
    "ens30-int8 = ensemble30 -> quantize:int8\n"
    "ens30-ft90-int8 = ensemble30 -> ft:0.9 -> quantize:int8\n"
    "vi-snr90 = vi -> prune:0.9\n"
    "ens30-gped = ensemble30 -> student:gped\n"
    "ens30-end2 = ensemble30 -> student:end2\n";

const char *eb_suite_builtin(const char *name)
{
    if (!strcmp(name, "quick"))
        return quick_suite;
    if (!strcmp(name, "paper"))
        return paper_suite;
    if (!strcmp(name, "compression"))
        return compression_suite;
    return NULL;
}

static const char *const facet_names[] = {
    "quality", "calibration", "ood",    "misclassification", "selective", "adversarial",
    "shift",   "latency",     "throughput", "load",           "memory",    "storage",
    "diagnostics", "fidelity"};

unsigned eb_facet_bit(const char *name)
{
    for (unsigned i = 0; i < sizeof facet_names / sizeof facet_names[0]; i++)
        if (!strcmp(name, facet_names[i]))
            return 1u << i;
    return 0;
}

const char *eb_facet_name(unsigned bit)
{
    for (unsigned i = 0; i < sizeof facet_names / sizeof facet_names[0]; i++)
        if (bit == 1u << i)
            return facet_names[i];
    return "?";
}


/* ---- parsing ---------------------------------------------------------- */

typedef struct parse_ctx {
    eb_suite *s;
    const char *text;
    const char *source;
    char msg[EB_ERROR_MSG_MAX];
    int failed;
    /* keys seen, to refuse duplicates: "section\x1fkey" */
    int n_seen;
    char seen[256][EB_SUITE_NAME_MAX * 2];
    /* [chains] lines, parsed once every method and transform is known */
    char chain_text[EB_SUITE_MAX_CHAINS][256];
} parse_ctx;

static int fail(parse_ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int fail(parse_ctx *c, const char *fmt, ...)
{
    va_list ap;
    if (!c->failed) {
        va_start(ap, fmt);
        vsnprintf(c->msg, sizeof c->msg, fmt, ap);
        va_end(ap);
        c->failed = 1;
    }
    return 0; /* inih: error on this line */
}

/* Splits a comma-separated list in place; returns the count (or -1 when
 * more than max). Items are trimmed. */
static int split_list(char *buf, char **items, int max)
{
    int n = 0;
    char *p = buf;
    while (p) {
        char *comma = strchr(p, ',');
        char *end;
        if (comma)
            *comma = '\0';
        while (isspace((unsigned char)*p))
            p++;
        end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*p) {
            if (n == max)
                return -1;
            items[n++] = p;
        }
        p = comma ? comma + 1 : NULL;
    }
    return n;
}

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    double x;
    errno = 0;
    x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

#define BAD_NUMBER(c, sec, key, v, what) \
    fail(c, "[%s] %s: '%s' is not %s", sec, key, v, what)

static int handle_suite(parse_ctx *c, const char *key, const char *v)
{
    eb_suite *s = c->s;
    char buf[512], *items[EB_SUITE_MAX_LIST + 1];
    int n;
    if (!strcmp(key, "name")) {
        if (!*v || strlen(v) >= sizeof s->name)
            return fail(c, "[suite] name: must be 1 to %zu characters", sizeof s->name - 1);
        snprintf(s->name, sizeof s->name, "%s", v);
        return 1;
    }
    if (!strcmp(key, "description")) {
        snprintf(s->description, sizeof s->description, "%s", v);
        return 1;
    }
    if (strlen(v) >= sizeof buf)
        return fail(c, "[suite] %s: value too long", key);
    snprintf(buf, sizeof buf, "%s", v);
    if (!strcmp(key, "seeds")) {
        n = split_list(buf, items, EB_SUITE_MAX_SEEDS);
        if (n < 1)
            return fail(c, "[suite] seeds: give 1 to %d seeds", EB_SUITE_MAX_SEEDS);
        for (int i = 0; i < n; i++) {
            char *end;
            unsigned long long x;
            errno = 0;
            x = strtoull(items[i], &end, 10);
            if (errno || end == items[i] || *end || items[i][0] == '-')
                return BAD_NUMBER(c, "suite", "seeds", items[i], "a non-negative integer");
            s->seeds[i] = (uint64_t)x;
        }
        s->n_seeds = n;
        return 1;
    }
    if (!strcmp(key, "archs")) {
        n = split_list(buf, items, EB_SUITE_MAX_ARCHS);
        if (n < 1)
            return fail(c, "[suite] archs: give 1 to %d architectures", EB_SUITE_MAX_ARCHS);
        for (int i = 0; i < n; i++) {
            eb_arch a;
            eb_error e;
            if (eb_arch_named(items[i], &a, &e))
                return fail(c, "[suite] archs: %s", e.msg);
            snprintf(s->archs[i], sizeof s->archs[i], "%s", items[i]);
        }
        s->n_archs = n;
        return 1;
    }
    if (!strcmp(key, "facets")) {
        n = split_list(buf, items, EB_SUITE_MAX_LIST);
        if (n < 1)
            return fail(c, "[suite] facets: give 'all' or a list of facets");
        s->facets = 0;
        for (int i = 0; i < n; i++) {
            unsigned bit = !strcmp(items[i], "all") ? (unsigned)EB_FACET_ALL : eb_facet_bit(items[i]);
            if (!bit)
                return fail(c, "[suite] facets: unknown facet '%s' (known: all, quality, "
                               "calibration, ood, misclassification, selective, adversarial, "
                               "shift, latency, throughput, load, memory, storage, diagnostics, "
                               "fidelity)",
                            items[i]);
            s->facets |= bit;
        }
        return 1;
    }
    return fail(c, "[suite]: unknown key '%s' (known: name, description, seeds, archs, facets)",
                key);
}

static int dataset_ref(parse_ctx *c, const char *key, const char *v, char *out, size_t len)
{
    static const char *const known[] = {"fashion-mnist/train", "fashion-mnist/test",
                                        "mnist/ood"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(v, known[i])) {
            snprintf(out, len, "%s", v);
            return 1;
        }
    return fail(c, "[data] %s: unknown dataset '%s' (known: fashion-mnist/train, "
                   "fashion-mnist/test, mnist/ood)", key, v);
}

static int handle_data(parse_ctx *c, const char *key, const char *v)
{
    eb_suite *s = c->s;
    long x;
    if (!strcmp(key, "train"))
        return dataset_ref(c, key, v, s->train, sizeof s->train);
    if (!strcmp(key, "test"))
        return dataset_ref(c, key, v, s->test, sizeof s->test);
    if (!strcmp(key, "ood"))
        return dataset_ref(c, key, v, s->ood, sizeof s->ood);
    if (!strcmp(key, "test_limit") || !strcmp(key, "ood_limit")) {
        if (parse_long(v, 0, 100000000, &x))
            return BAD_NUMBER(c, "data", key, v, "a count (0 = all)");
        *(key[0] == 't' ? &s->test_limit : &s->ood_limit) = (size_t)x;
        return 1;
    }
    return fail(c, "[data]: unknown key '%s' (known: train, test, ood, test_limit, ood_limit)",
                key);
}

static int handle_evaluation(parse_ctx *c, const char *key, const char *v)
{
    eb_suite *s = c->s;
    long x;
    double d;
    if (!strcmp(key, "draws")) {
        if (parse_long(v, 0, 100000, &x))
            return BAD_NUMBER(c, "evaluation", key, v, "a count (0 = each posterior's default)");
        s->draws = (uint32_t)x;
        return 1;
    }
    if (!strcmp(key, "bootstrap")) {
        if (parse_long(v, 0, 100000, &x))
            return BAD_NUMBER(c, "evaluation", key, v, "a resample count (0 = no intervals)");
        s->bootstrap = (int)x;
        return 1;
    }
    if (!strcmp(key, "ci_level")) {
        if (parse_double(v, 0.5, 0.999, &d))
            return BAD_NUMBER(c, "evaluation", key, v, "a level from 0.5 to 0.999");
        s->ci_level = d;
        return 1;
    }
    if (!strcmp(key, "predictions")) {
        if (parse_long(v, 0, 1, &x))
            return BAD_NUMBER(c, "evaluation", key, v, "0 or 1");
        s->store_predictions = (int)x;
        return 1;
    }
    return fail(c, "[evaluation]: unknown key '%s' (known: draws, bootstrap, ci_level, "
                   "predictions)", key);
}

static int handle_device(parse_ctx *c, const char *key, const char *v)
{
    eb_suite *s = c->s;
    long x;
    double d;
    if (!strcmp(key, "name")) {
        if (strcmp(v, "cpu"))
            return fail(c, "[device] name: unknown device '%s' (known: cpu)", v);
        snprintf(s->device, sizeof s->device, "%s", v);
        return 1;
    }
    if (!strcmp(key, "strategy")) {
        eb_error e;
        if (eb_device_cpu_strategy_check(v, &e))
            return fail(c, "[device] strategy: %s", e.msg);
        snprintf(s->strategy, sizeof s->strategy, "%s", v);
        return 1;
    }
    if (!strcmp(key, "threads") || !strcmp(key, "latency_warmup") ||
        !strcmp(key, "latency_min_queries") || !strcmp(key, "throughput_batch")) {
        long lo = !strcmp(key, "latency_warmup") || !strcmp(key, "threads") ? 0 : 1;
        if (parse_long(v, lo, 1000000, &x))
            return BAD_NUMBER(c, "device", key, v, lo ? "a positive count" : "a count");
        if (!strcmp(key, "threads"))
            s->threads = (int)x;
        else if (!strcmp(key, "latency_warmup"))
            s->latency_warmup = (int)x;
        else if (!strcmp(key, "latency_min_queries"))
            s->latency_min_queries = (int)x;
        else
            s->throughput_batch = (int)x;
        return 1;
    }
    if (!strcmp(key, "latency_min_seconds") || !strcmp(key, "throughput_min_seconds")) {
        if (parse_double(v, 0.0, 3600.0, &d))
            return BAD_NUMBER(c, "device", key, v, "a duration in seconds (0 to 3600)");
        *(key[0] == 'l' ? &s->latency_min_seconds : &s->throughput_min_seconds) = d;
        return 1;
    }
    return fail(c, "[device]: unknown key '%s' (known: name, strategy, threads, latency_warmup, "
                   "latency_min_queries, latency_min_seconds, throughput_batch, "
                   "throughput_min_seconds)", key);
}

static int handle_adversarial(parse_ctx *c, const char *key, const char *v)
{
    eb_suite *s = c->s;
    char buf[512], *items[EB_SUITE_MAX_LIST + 1];
    long x;
    double d;
    int n;
    if (!strcmp(key, "eps") || !strcmp(key, "attacks")) {
        if (strlen(v) >= sizeof buf)
            return fail(c, "[adversarial] %s: value too long", key);
        snprintf(buf, sizeof buf, "%s", v);
        n = split_list(buf, items, EB_SUITE_MAX_LIST);
        if (n < 1)
            return fail(c, "[adversarial] %s: give 1 to %d values", key, EB_SUITE_MAX_LIST);
        if (key[0] == 'e') {
            for (int i = 0; i < n; i++)
                if (parse_double(items[i], 0.0, 1.0, &s->eps[i]))
                    return BAD_NUMBER(c, "adversarial", key, items[i], "an epsilon in [0, 1]");
            s->n_eps = n;
        } else {
            s->fgsm = s->pgd = 0;
            for (int i = 0; i < n; i++) {
                if (!strcmp(items[i], "fgsm"))
                    s->fgsm = 1;
                else if (!strcmp(items[i], "pgd"))
                    s->pgd = 1;
                else
                    return fail(c, "[adversarial] attacks: unknown attack '%s' (known: fgsm, pgd)",
                                items[i]);
            }
        }
        return 1;
    }
    if (!strcmp(key, "pgd_steps")) {
        if (parse_long(v, 1, 10000, &x))
            return BAD_NUMBER(c, "adversarial", key, v, "a step count from 1 to 10000");
        s->pgd_steps = (int)x;
        return 1;
    }
    if (!strcmp(key, "pgd_step")) {
        if (parse_double(v, 1e-6, 10.0, &d))
            return BAD_NUMBER(c, "adversarial", key, v, "a step size as a fraction of eps (> 0)");
        s->pgd_step = d;
        return 1;
    }
    if (!strcmp(key, "random_start")) {
        if (parse_long(v, 0, 1, &x))
            return BAD_NUMBER(c, "adversarial", key, v, "0 or 1");
        s->pgd_random_start = (int)x;
        return 1;
    }
    if (!strcmp(key, "subset")) {
        if (parse_long(v, 0, 100000000, &x))
            return BAD_NUMBER(c, "adversarial", key, v, "a count of test images (0 = all)");
        s->adversarial_subset = (size_t)x;
        return 1;
    }
    return fail(c, "[adversarial]: unknown key '%s' (known: eps, attacks, pgd_steps, pgd_step, "
                   "random_start, subset)", key);
}

static int handle_shift(parse_ctx *c, const char *key, const char *v)
{
    eb_suite *s = c->s;
    char buf[512], *items[EB_SUITE_MAX_LIST + 1];
    long x;
    int n;
    if (!strcmp(key, "corruptions") || !strcmp(key, "severities")) {
        if (strlen(v) >= sizeof buf)
            return fail(c, "[shift] %s: value too long", key);
        snprintf(buf, sizeof buf, "%s", v);
        n = split_list(buf, items, EB_SUITE_MAX_LIST);
        if (n < 1)
            return fail(c, "[shift] %s: give 1 to %d values", key, EB_SUITE_MAX_LIST);
        for (int i = 0; i < n; i++) {
            if (key[0] == 'c') {
                int ok = 0;
                for (size_t k = 0; k < eb_shift_count(); k++)
                    ok |= !strcmp(items[i], eb_shift_name(k));
                if (!ok)
                    return fail(c, "[shift] corruptions: unknown corruption '%s' (known: "
                                   "rotation, gaussian-noise, gaussian-blur, contrast, "
                                   "translation)", items[i]);
                snprintf(s->corruptions[i], sizeof s->corruptions[i], "%s", items[i]);
            } else {
                if (parse_long(items[i], 1, 5, &x))
                    return BAD_NUMBER(c, "shift", key, items[i], "a severity from 1 to 5");
                s->severities[i] = (int)x;
            }
        }
        *(key[0] == 'c' ? &s->n_corruptions : &s->n_severities) = n;
        return 1;
    }
    if (!strcmp(key, "subset")) {
        if (parse_long(v, 0, 100000000, &x))
            return BAD_NUMBER(c, "shift", key, v, "a count of test images (0 = all)");
        s->shift_subset = (size_t)x;
        return 1;
    }
    return fail(c, "[shift]: unknown key '%s' (known: corruptions, severities, subset)", key);
}

static eb_suite_method *method_section(parse_ctx *c, const char *label)
{
    eb_suite *s = c->s;
    for (int i = 0; i < s->n_methods; i++)
        if (!strcmp(s->methods[i].label, label))
            return &s->methods[i];
    if (s->n_methods == EB_SUITE_MAX_METHODS)
        return NULL;
    memset(&s->methods[s->n_methods], 0, sizeof s->methods[0]);
    snprintf(s->methods[s->n_methods].label, EB_SUITE_NAME_MAX, "%s", label);
    return &s->methods[s->n_methods++];
}

static int known_section(const char *section)
{
    static const char *const names[] = {"suite",       "data",  "evaluation", "device",
                                        "adversarial", "shift", "fidelity",   "chains"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(section, names[i]))
            return 1;
    return !strncmp(section, "method ", 7) || !strncmp(section, "transform ", 10);
}

#define KNOWN_SECTIONS                                                                    \
    "suite, data, evaluation, device, adversarial, shift, fidelity, method <label>, "     \
    "transform <label>, chains"

/* The entry of a "transform <label>" section, created on first use; NULL
 * (with the failure recorded) for a bad label or too many sections. */
static eb_suite_transform *section_transform(parse_ctx *c, const char *section)
{
    const char *label = section + 10;
    eb_suite *s = c->s;
    while (*label == ' ')
        label++;
    if (!*label || strlen(label) >= EB_SUITE_NAME_MAX || strpbrk(label, " /:>")) {
        fail(c, "[%s]: a transform section needs a label without spaces, '/', ':' or '>', at "
                "most %d characters", section, EB_SUITE_NAME_MAX - 1);
        return NULL;
    }
    for (int i = 0; i < s->n_transforms; i++)
        if (!strcmp(s->transforms[i].label, label))
            return &s->transforms[i];
    if (s->n_transforms == EB_SUITE_MAX_TRANSFORMS) {
        fail(c, "[%s]: more than %d transform sections", section, EB_SUITE_MAX_TRANSFORMS);
        return NULL;
    }
    memset(&s->transforms[s->n_transforms], 0, sizeof s->transforms[0]);
    snprintf(s->transforms[s->n_transforms].label, EB_SUITE_NAME_MAX, "%s", label);
    return &s->transforms[s->n_transforms++];
}

/* The method entry of a "method <label>" section, created on first use;
 * NULL (with the failure recorded) for a bad label. */
static eb_suite_method *section_method(parse_ctx *c, const char *section)
{
    const char *label = section + 7;
    eb_suite_method *m;
    while (*label == ' ')
        label++;
    if (!*label || strlen(label) >= EB_SUITE_NAME_MAX || strchr(label, ' ') ||
        strchr(label, '/')) {
        fail(c, "[%s]: a method section needs a label without spaces or '/', at most %d "
                "characters", section, EB_SUITE_NAME_MAX - 1);
        return NULL;
    }
    m = method_section(c, label);
    if (!m)
        fail(c, "[%s]: more than %d method sections", section, EB_SUITE_MAX_METHODS);
    return m;
}

/* inih calls the handler only for key = value lines, so sections without
 * keys ("[method map]" alone is a complete method entry) and misspelt
 * empty sections are found by scanning the headers first. Returns the line
 * of the first bad header, or 0. */
static int scan_sections(parse_ctx *c)
{
    int line = 1;
    const char *p = c->text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *q = p;
        while (q < p + len && (*q == ' ' || *q == '\t'))
            q++;
        if (q < p + len && *q == '[') {
            const char *close = memchr(q, ']', (size_t)(p + len - q));
            char section[160];
            if (close) {
                const char *a = q + 1, *b = close;
                while (a < b && isspace((unsigned char)*a))
                    a++;
                while (b > a && isspace((unsigned char)b[-1]))
                    b--;
                snprintf(section, sizeof section, "%.*s", (int)(b - a), a);
                if (!known_section(section)) {
                    fail(c, "unknown section [%s] (known: " KNOWN_SECTIONS ")", section);
                    return line;
                }
                if (!strncmp(section, "method ", 7) && !section_method(c, section))
                    return line;
                if (!strncmp(section, "transform ", 10) && !section_transform(c, section))
                    return line;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
        line++;
    }
    return 0;
}

/* Records one `key = value` setting of a [method] or [transform] section
 * (checked against the spec after parsing). */
static int add_setting(parse_ctx *c, const char *section, char (*keys)[EB_SUITE_NAME_MAX],
                       char (*values)[EB_SETTING_VALUE_MAX], int *n, int max, const char *key,
                       const char *value)
{
    if (*n == max)
        return fail(c, "[%s]: too many settings", section);
    if (strlen(key) >= EB_SUITE_NAME_MAX || strlen(value) >= EB_SETTING_VALUE_MAX)
        return fail(c, "[%s] %s: name or value too long", section, key);
    snprintf(keys[*n], EB_SUITE_NAME_MAX, "%s", key);
    snprintf(values[*n], EB_SETTING_VALUE_MAX, "%s", value);
    (*n)++;
    return 1;
}

/* "prune, quantize, distill": the transform table's names. */
static const char *transform_names(void)
{
    static char buf[256];
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; eb_transforms[i] && used < sizeof buf; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", i ? ", " : "",
                                 eb_transforms[i]->name);
    return buf;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
    parse_ctx *c = user;
    char tag[EB_SUITE_NAME_MAX * 2];

    if (c->failed)
        return 0;
    snprintf(tag, sizeof tag, "%s\x1f%s", section, key);
    for (int i = 0; i < c->n_seen; i++)
        if (!strcmp(c->seen[i], tag))
            return fail(c, "[%s] %s: given twice", section, key);
    if (c->n_seen < (int)(sizeof c->seen / sizeof c->seen[0]))
        snprintf(c->seen[c->n_seen++], sizeof c->seen[0], "%s", tag);

    if (!strcmp(section, "suite"))
        return handle_suite(c, key, value);
    if (!strcmp(section, "data"))
        return handle_data(c, key, value);
    if (!strcmp(section, "evaluation"))
        return handle_evaluation(c, key, value);
    if (!strcmp(section, "device"))
        return handle_device(c, key, value);
    if (!strcmp(section, "adversarial"))
        return handle_adversarial(c, key, value);
    if (!strcmp(section, "shift"))
        return handle_shift(c, key, value);
    if (!strcmp(section, "fidelity")) {
        if (strcmp(key, "reference"))
            return fail(c, "[fidelity]: unknown key '%s' (known: reference)", key);
        if (!*value || strlen(value) >= sizeof c->s->fidelity_reference)
            return fail(c, "[fidelity] reference: give a method label");
        snprintf(c->s->fidelity_reference, sizeof c->s->fidelity_reference, "%s", value);
        return 1;
    }
    if (!strncmp(section, "method ", 7)) {
        eb_suite_method *m = section_method(c, section);
        if (!m)
            return 0;
        if (!strcmp(key, "method")) {
            m->method = eb_method_find(value);
            if (!m->method)
                return fail(c, "[%s] method: unknown method '%s'", section, value);
            return 1;
        }
        if (!strcmp(key, "arch")) {
            char buf[256], *items[EB_SUITE_MAX_ARCHS + 1];
            int n;
            snprintf(buf, sizeof buf, "%s", value);
            n = split_list(buf, items, EB_SUITE_MAX_ARCHS);
            if (n < 1)
                return fail(c, "[%s] arch: give 1 to %d architectures", section,
                            EB_SUITE_MAX_ARCHS);
            for (int i = 0; i < n; i++) {
                eb_arch a;
                eb_error e;
                if (eb_arch_named(items[i], &a, &e))
                    return fail(c, "[%s] arch: %s", section, e.msg);
                snprintf(m->archs[i], sizeof m->archs[i], "%s", items[i]);
            }
            m->n_archs = n;
            return 1;
        }
        return add_setting(c, section, m->set_key, m->set_value, &m->n_sets,
                           EB_SETTINGS_MAX * 2, key, value);
    }
    if (!strncmp(section, "transform ", 10)) {
        eb_suite_transform *t = section_transform(c, section);
        if (!t)
            return 0;
        if (!strcmp(key, "transform")) {
            t->transform = eb_transform_find(value);
            if (!t->transform)
                return fail(c, "[%s] transform: unknown transform '%s' (known: %s)", section,
                            value, transform_names());
            return 1;
        }
        return add_setting(c, section, t->set_key, t->set_value, &t->n_sets, EB_SETTINGS_MAX,
                           key, value);
    }
    if (!strcmp(section, "chains")) {
        eb_suite *s = c->s;
        if (s->n_chains == EB_SUITE_MAX_CHAINS)
            return fail(c, "[chains]: more than %d chains", EB_SUITE_MAX_CHAINS);
        if (!*key || strlen(key) >= EB_SUITE_NAME_MAX || strpbrk(key, " /"))
            return fail(c, "[chains] %s: a chain label has no spaces or '/' and at most %d "
                           "characters", key, EB_SUITE_NAME_MAX - 1);
        for (int i = 0; i < s->n_methods; i++)
            if (!strcmp(s->methods[i].label, key))
                return fail(c, "[chains] %s: the label is already a method section's", key);
        if (strlen(value) >= sizeof c->chain_text[0])
            return fail(c, "[chains] %s: chain longer than %zu characters", key,
                        sizeof c->chain_text[0] - 1);
        memset(&s->chains[s->n_chains], 0, sizeof s->chains[0]);
        snprintf(s->chains[s->n_chains].label, EB_SUITE_NAME_MAX, "%s", key);
        snprintf(c->chain_text[s->n_chains], sizeof c->chain_text[0], "%s", value);
        s->n_chains++;
        return 1;
    }
    return fail(c, "unknown section [%s] (known: " KNOWN_SECTIONS ")", section);
}

/* Line number of `key` inside section `section` in text (1-based), or of
 * the section header when key is NULL; 0 if not found. Used to name lines
 * in errors found after parsing. */
static int find_line(const char *text, const char *section, const char *key)
{
    int line = 1, in_section = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *q = p;
        while (q < p + len && isspace((unsigned char)*q))
            q++;
        if (q < p + len && *q == '[') {
            const char *close = memchr(q, ']', (size_t)(p + len - q));
            if (close) {
                size_t n = (size_t)(close - q - 1);
                /* compare with the section name, inner spaces trimmed */
                const char *a = q + 1;
                while (a < close && isspace((unsigned char)*a))
                    a++, n--;
                while (n && isspace((unsigned char)a[n - 1]))
                    n--;
                in_section = n == strlen(section) && !strncmp(a, section, n);
                if (in_section && !key)
                    return line;
            }
        } else if (in_section && key) {
            size_t k = strlen(key);
            if ((size_t)(p + len - q) > k && !strncmp(q, key, k)) {
                const char *r = q + k;
                while (r < p + len && isspace((unsigned char)*r))
                    r++;
                if (r < p + len && (*r == '=' || *r == ':'))
                    return line;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
        line++;
    }
    return 0;
}

static void set_defaults(eb_suite *s)
{
    memset(s, 0, sizeof *s);
    s->n_seeds = 1;
    s->seeds[0] = 1;
    s->n_archs = 1;
    snprintf(s->archs[0], sizeof s->archs[0], "mlp");
    s->facets = EB_FACET_ALL;
    snprintf(s->train, sizeof s->train, "fashion-mnist/train");
    snprintf(s->test, sizeof s->test, "fashion-mnist/test");
    snprintf(s->ood, sizeof s->ood, "mnist/ood");
    s->bootstrap = 200;
    s->ci_level = 0.95;
    snprintf(s->device, sizeof s->device, "cpu");
    snprintf(s->strategy, sizeof s->strategy, "auto");
    s->latency_warmup = 20;
    s->latency_min_queries = 200;
    s->latency_min_seconds = 1.0;
    s->throughput_batch = 256;
    s->throughput_min_seconds = 1.0;
    s->n_eps = 6;
    s->eps[0] = 0.0;
    s->eps[1] = 0.01;
    s->eps[2] = 0.02;
    s->eps[3] = 0.05;
    s->eps[4] = 0.1;
    s->eps[5] = 0.2;
    s->fgsm = s->pgd = 1;
    s->pgd_steps = 10;
    s->pgd_step = 0.25;
    s->pgd_random_start = 1;
    s->adversarial_subset = 1000;
    s->n_corruptions = (int)eb_shift_count();
    for (int i = 0; i < s->n_corruptions; i++)
        snprintf(s->corruptions[i], sizeof s->corruptions[i], "%s", eb_shift_name((size_t)i));
    s->n_severities = 5;
    for (int i = 0; i < 5; i++)
        s->severities[i] = i + 1;
    s->shift_subset = 2000;
}

/* Checks each method section's settings against its method's spec. */
static eb_status validate_methods(parse_ctx *c, eb_error *err)
{
    eb_suite *s = c->s;
    if (s->n_methods == 0)
        return eb_error_set(err, EB_ERR_FORMAT, "%s: the suite has no [method <label>] section",
                            c->source);
    for (int i = 0; i < s->n_methods; i++) {
        eb_suite_method *m = &s->methods[i];
        char section[EB_SUITE_NAME_MAX + 8];
        snprintf(section, sizeof section, "method %s", m->label);
        if (!m->method) {
            m->method = eb_method_find(m->label);
            if (!m->method)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "%s:%d: [%s]: '%s' is not a method; add 'method = <kind>' "
                                    "(known: map, ensemble, dropout, ...)",
                                    c->source, find_line(c->text, section, NULL), section,
                                    m->label);
        }
        for (int k = 0; k < m->n_sets; k++) {
            eb_settings st;
            eb_error e;
            const char *key = m->set_key[k], *dot = strchr(key, '.');
            if (dot) {
                char arch[EB_SUITE_NAME_MAX];
                eb_arch a;
                snprintf(arch, sizeof arch, "%.*s", (int)(dot - key), key);
                if (eb_arch_named(arch, &a, NULL))
                    return eb_error_set(err, EB_ERR_FORMAT,
                                        "%s:%d: [%s] %s: unknown architecture '%s' before '.'",
                                        c->source, find_line(c->text, section, key), section, key,
                                        arch);
                key = dot + 1;
            }
            if (eb_settings_init(&st, m->method->settings, &e) ||
                eb_settings_set(&st, key, m->set_value[k], &e))
                return eb_error_set(err, EB_ERR_FORMAT, "%s:%d: [%s] %s: %s", c->source,
                                    find_line(c->text, section, m->set_key[k]), section,
                                    m->set_key[k], e.msg);
        }
    }
    return EB_OK;
}

eb_status eb_chain_step_settings(const eb_suite *s, const eb_chain_step *step,
                                 eb_settings *st, eb_error *err)
{
    eb_status rc = eb_settings_init(st, step->transform->settings, err);
    if (!rc && step->section >= 0) {
        const eb_suite_transform *t = &s->transforms[step->section];
        for (int k = 0; k < t->n_sets && !rc; k++)
            rc = eb_settings_set(st, t->set_key[k], t->set_value[k], err);
        if (rc)
            eb_error_prefix(err, "[transform %s]: ", t->label);
    }
    if (!rc && step->value[0]) {
        rc = eb_settings_set(st, step->transform->short_key, step->value, err);
        if (rc)
            eb_error_prefix(err, "step '%s:%s': ", step->transform->name, step->value);
    }
    return rc;
}

eb_status eb_suite_parse_chain(const eb_suite *s, const char *text, eb_suite_chain *c,
                               eb_error *err)
{
    char buf[256], *parts[EB_CHAIN_MAX_STEPS + 2];
    int n = 0;
    size_t used;
    char *p;

    if (strlen(text) >= sizeof buf)
        return eb_error_set(err, EB_ERR_FORMAT, "chain '%s' is too long", text);
    snprintf(buf, sizeof buf, "%s", text);
    /* split on "->" */
    p = buf;
    for (;;) {
        char *arrow = strstr(p, "->"), *a, *e;
        if (arrow)
            *arrow = '\0';
        for (a = p; isspace((unsigned char)*a); a++)
            ;
        for (e = a + strlen(a); e > a && isspace((unsigned char)e[-1]);)
            *--e = '\0';
        if (!*a)
            return eb_error_set(err, EB_ERR_FORMAT, "chain '%s': an empty step", text);
        if (n == EB_CHAIN_MAX_STEPS + 1)
            return eb_error_set(err, EB_ERR_FORMAT, "chain '%s': more than %d transform steps",
                                text, EB_CHAIN_MAX_STEPS);
        parts[n++] = a;
        if (!arrow)
            break;
        p = arrow + 2;
    }
    if (n < 2)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "chain '%s': give a method and at least one step, as in "
                            "'ensemble -> prune:0.9 -> quantize:int8'", text);
    c->method = -1;
    for (int i = 0; i < s->n_methods; i++)
        if (!strcmp(s->methods[i].label, parts[0]))
            c->method = i;
    if (c->method < 0)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "chain '%s': '%s' is not the label of a [method] section", text,
                            parts[0]);
    c->n_steps = n - 1;
    used = (size_t)snprintf(c->text, sizeof c->text, "%s", parts[0]);
    for (int i = 1; i < n; i++) {
        eb_chain_step *st = &c->steps[i - 1];
        char *colon = strchr(parts[i], ':');
        const char *name = parts[i];
        eb_settings tmp;
        eb_status rc;
        if (colon) {
            *colon = '\0';
            if (!colon[1] || strlen(colon + 1) >= sizeof st->value)
                return eb_error_set(err, EB_ERR_FORMAT, "chain '%s': step '%s:' needs a value",
                                    text, name);
            snprintf(st->value, sizeof st->value, "%s", colon + 1);
        } else {
            st->value[0] = '\0';
        }
        st->section = -1;
        st->transform = NULL;
        for (int k = 0; k < s->n_transforms; k++)
            if (!strcmp(s->transforms[k].label, name)) {
                st->section = k;
                st->transform = s->transforms[k].transform;
            }
        if (!st->transform)
            st->transform = eb_transform_find(name);
        if (!st->transform)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "chain '%s': '%s' is neither a [transform] label nor a "
                                "transform (known: %s)", text, name, transform_names());
        if (st->value[0] && !st->transform->short_key)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "chain '%s': transform '%s' takes no ':value'", text,
                                st->transform->name);
        rc = eb_chain_step_settings(s, st, &tmp, err);
        if (rc) {
            eb_error_prefix(err, "chain '%s': ", text);
            return EB_ERR_FORMAT;
        }
        if (used < sizeof c->text)
            used += (size_t)snprintf(c->text + used, sizeof c->text - used, " -> %s%s%s",
                                     name, st->value[0] ? ":" : "", st->value);
    }
    if (used >= sizeof c->text)
        return eb_error_set(err, EB_ERR_FORMAT, "chain '%s' is too long", text);
    return EB_OK;
}

/* Resolves [transform] sections and [chains] lines. */
static eb_status validate_chains(parse_ctx *c, eb_error *err)
{
    eb_suite *s = c->s;
    for (int i = 0; i < s->n_transforms; i++) {
        eb_suite_transform *t = &s->transforms[i];
        char section[EB_SUITE_NAME_MAX + 12];
        snprintf(section, sizeof section, "transform %s", t->label);
        if (!t->transform) {
            t->transform = eb_transform_find(t->label);
            if (!t->transform)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "%s:%d: [%s]: '%s' is not a transform; add 'transform = "
                                    "<kind>' (known: %s)",
                                    c->source, find_line(c->text, section, NULL), section,
                                    t->label, transform_names());
        }
        for (int k = 0; k < t->n_sets; k++) {
            eb_settings st;
            eb_error e;
            if (eb_settings_init(&st, t->transform->settings, &e) ||
                eb_settings_set(&st, t->set_key[k], t->set_value[k], &e))
                return eb_error_set(err, EB_ERR_FORMAT, "%s:%d: [%s] %s: %s", c->source,
                                    find_line(c->text, section, t->set_key[k]), section,
                                    t->set_key[k], e.msg);
        }
    }
    for (int i = 0; i < s->n_chains; i++) {
        eb_suite_chain *ch = &s->chains[i];
        eb_error e;
        if (eb_suite_parse_chain(s, c->chain_text[i], ch, &e))
            return eb_error_set(err, EB_ERR_FORMAT, "%s:%d: [chains] %s: %s", c->source,
                                find_line(c->text, "chains", ch->label), ch->label, e.msg);
        for (int k = 0; k < i; k++)
            if (!strcmp(s->chains[k].label, ch->label))
                return eb_error_set(err, EB_ERR_FORMAT, "%s:%d: [chains] %s: given twice",
                                    c->source, find_line(c->text, "chains", ch->label),
                                    ch->label);
    }
    return EB_OK;
}

eb_status eb_suite_parse(const char *text, const char *source, eb_suite *s, eb_error *err)
{
    parse_ctx *c;
    int line;
    eb_status st;

    set_defaults(s);
    c = eb_calloc(1, sizeof *c);
    if (!c)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory parsing %s", source);
    c->s = s;
    c->text = text;
    c->source = source;
    snprintf(s->source, sizeof s->source, "%s", source);
    line = scan_sections(c);
    if (line == 0)
        line = ini_parse_string(text, handler, c);
    if (line != 0) {
        if (c->failed)
            st = eb_error_set(err, EB_ERR_FORMAT, "%s:%d: %s", source, line, c->msg);
        else
            st = eb_error_set(err, EB_ERR_FORMAT,
                              "%s:%d: not an INI line (expected [section] or key = value)",
                              source, line);
        eb_free(c);
        return st;
    }
    if (!s->name[0])
        snprintf(s->name, sizeof s->name, "%s", "unnamed");
    st = validate_methods(c, err);
    if (!st)
        st = validate_chains(c, err);
    if (!st && s->fidelity_reference[0]) {
        int found = 0;
        for (int i = 0; i < s->n_methods; i++)
            found |= !strcmp(s->methods[i].label, s->fidelity_reference);
        if (!found)
            st = eb_error_set(err, EB_ERR_FORMAT,
                              "%s:%d: [fidelity] reference: no [method %s] section", source,
                              find_line(text, "fidelity", "reference"), s->fidelity_reference);
    }
    if (!st && s->pgd && s->pgd_steps < 1)
        st = eb_error_set(err, EB_ERR_FORMAT, "%s: [adversarial] pgd_steps must be positive",
                          source);
    if (!st)
        st = eb_sha256_buffer(text, strlen(text), s->sha256, err);
    eb_free(c);
    return st;
}

eb_status eb_suite_load(const char *name_or_path, eb_suite *s, eb_error *err)
{
    const char *builtin = eb_suite_builtin(name_or_path);
    char *text;
    size_t len;
    eb_status st;
    char source[300];

    if (builtin) {
        snprintf(source, sizeof source, "built-in:%s", name_or_path);
        return eb_suite_parse(builtin, source, s, err);
    }
    st = eb_file_read_all(name_or_path, &text, &len, err);
    if (st) {
        if (st == EB_ERR_NOTFOUND)
            eb_error_set(err, st, "suite '%s' is neither a built-in suite (quick, paper, compression) nor a "
                                  "readable file", name_or_path);
        return st;
    }
    if (strlen(text) != len) {
        eb_free(text);
        return eb_error_set(err, EB_ERR_FORMAT, "%s: the suite file contains a NUL byte",
                            name_or_path);
    }
    st = eb_suite_parse(text, name_or_path, s, err);
    eb_free(text);
    return st;
}

/* ---- jobs -------------------------------------------------------------- */

void eb_settings_text(const eb_settings *st, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    /* spec order is fixed per method or transform, so this is canonical */
    for (int i = 0; i < st->n && used < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s=%s", i ? ";" : "", st->spec[i].key,
                         st->value[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

void eb_job_settings_text(const eb_job *j, char *buf, size_t len)
{
    eb_settings_text(&j->settings, buf, len);
}

static eb_status job_settings(const eb_suite *s, const eb_suite_method *m, const char *arch,
                              eb_settings *st, eb_error *err)
{
    eb_status rc = eb_method_settings(m->method, arch, st, err);
    /* plain keys first, then this architecture's overrides */
    for (int pass = 0; pass < 2 && !rc; pass++)
        for (int k = 0; k < m->n_sets && !rc; k++) {
            const char *key = m->set_key[k], *dot = strchr(key, '.');
            if (pass == 0 && !dot)
                rc = eb_settings_set(st, key, m->set_value[k], err);
            else if (pass == 1 && dot && (size_t)(dot - key) == strlen(arch) &&
                     !strncmp(key, arch, strlen(arch)))
                rc = eb_settings_set(st, dot + 1, m->set_value[k], err);
        }
    if (rc)
        eb_error_prefix(err, "%s: [method %s]: ", s->source, m->label);
    return rc;
}

/* The canonical definition hashed into a job's key. */
static eb_status job_key(const eb_suite *s, eb_job *j, eb_error *err)
{
    char text[8192], settings[4096];
    size_t used;
    int w;
    eb_job_settings_text(j, settings, sizeof settings);
    w = snprintf(text, sizeof text,
                 "edgebayes-job-v1\nlabel=%s\nmethod=%s\narch=%s\nseed=%llu\nsettings=%s\n"
                 "data=%s,%s,%s,%zu,%zu\nevaluation=%u,%d,%.6g,%d\nfacets=%u\n"
                 "device=%s,%d,%d,%d,%.6g,%d,%.6g\n"
                 "adversarial=%d,%d,%d,%.6g,%d,%zu,",
                 j->chain ? j->chain->label : j->m->label, j->m->method->name, j->arch, (unsigned long long)j->seed, settings,
                 s->train, s->test, s->ood, s->test_limit, s->ood_limit, s->draws, s->bootstrap,
                 s->ci_level, s->store_predictions, s->facets, s->device, s->threads,
                 s->latency_warmup, s->latency_min_queries, s->latency_min_seconds,
                 s->throughput_batch, s->throughput_min_seconds, s->fgsm, s->pgd, s->pgd_steps,
                 s->pgd_step, s->pgd_random_start, s->adversarial_subset);
    if (w < 0 || (size_t)w >= sizeof text)
        return eb_error_set(err, EB_ERR_INTERNAL, "job definition too long");
    used = (size_t)w;
    for (int i = 0; i < s->n_eps && used < sizeof text; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "%.6g;", s->eps[i]);
    if (used < sizeof text)
        used += (size_t)snprintf(text + used, sizeof text - used, "\nshift=%zu,", s->shift_subset);
    for (int i = 0; i < s->n_corruptions && used < sizeof text; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "%s;", s->corruptions[i]);
    for (int i = 0; i < s->n_severities && used < sizeof text; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "%d;", s->severities[i]);
    /* a strategy other than the default is part of the job (the default
     * leaves existing keys unchanged) */
    if (strcmp(s->strategy, "auto") && used < sizeof text)
        used += (size_t)snprintf(text + used, sizeof text - used, "\nstrategy=%s", s->strategy);
    if (j->chain) {
        /* a chain job: its steps with their full settings (a plain method
         * job's key text is unchanged, so existing keys stay valid) */
        if (used < sizeof text)
            used += (size_t)snprintf(text + used, sizeof text - used, "\nchain=%s",
                                     j->chain->text);
        for (int i = 0; i < j->chain->n_steps && used < sizeof text; i++) {
            char st[2048];
            eb_settings_text(&j->step_settings[i], st, sizeof st);
            used += (size_t)snprintf(text + used, sizeof text - used, "\nstep=%s;%s",
                                     j->chain->steps[i].transform->name, st);
        }
    }
    if (used >= sizeof text)
        return eb_error_set(err, EB_ERR_INTERNAL, "job definition too long");
    return eb_sha256_buffer(text, used, j->key, err);
}

/* The architectures a suite's jobs run on: the suite's, then any a method
 * section pins that the suite does not list. */
static int all_archs(const eb_suite *s, char out[][EB_SUITE_NAME_MAX], int max)
{
    int n = 0;
    for (int a = 0; a < s->n_archs && n < max; a++)
        snprintf(out[n++], EB_SUITE_NAME_MAX, "%s", s->archs[a]);
    for (int m = 0; m < s->n_methods; m++)
        for (int a = 0; a < s->methods[m].n_archs; a++) {
            int seen = 0;
            for (int k = 0; k < n; k++)
                seen |= !strcmp(out[k], s->methods[m].archs[a]);
            if (!seen && n < max)
                snprintf(out[n++], EB_SUITE_NAME_MAX, "%s", s->methods[m].archs[a]);
        }
    return n;
}

static int runs_on(const eb_suite *s, const eb_suite_method *m, const char *arch)
{
    const int n = m->n_archs ? m->n_archs : s->n_archs;
    for (int a = 0; a < n; a++)
        if (!strcmp(m->n_archs ? m->archs[a] : s->archs[a], arch))
            return 1;
    return 0;
}

eb_status eb_suite_jobs(const eb_suite *s, int shard_index, int shard_count, eb_job **jobs,
                        int *n_jobs, eb_error *err)
{
    char archs[EB_SUITE_MAX_ARCHS * (EB_SUITE_MAX_METHODS + 1)][EB_SUITE_NAME_MAX];
    int n_archs = all_archs(s, archs, (int)(sizeof archs / sizeof archs[0]));
    int total = s->n_seeds * n_archs * (s->n_methods + s->n_chains), n = 0, index = 0;
    eb_job *out;
    *jobs = NULL;
    *n_jobs = 0;
    if (shard_count < 1 || shard_index < 1 || shard_index > shard_count)
        return eb_error_set(err, EB_ERR_ARG, "shard %d/%d: need 1 <= i <= n", shard_index,
                            shard_count);
    out = eb_calloc((size_t)(total ? total : 1), sizeof *out);
    if (!out)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %d jobs", total);
    for (int si = 0; si < s->n_seeds; si++)
        for (int a = 0; a < n_archs; a++) {
            for (int mi = 0; mi < s->n_methods; mi++) {
                eb_job *j;
                eb_status st;
                if (!runs_on(s, &s->methods[mi], archs[a]))
                    continue;
                if (index++ % shard_count != shard_index - 1)
                    continue;
                j = &out[n];
                j->index = index - 1;
                j->m = &s->methods[mi];
                j->seed = s->seeds[si];
                memcpy(j->arch, archs[a], sizeof j->arch);
                snprintf(j->name, sizeof j->name, "%s/%s/s%llu", j->m->label, j->arch,
                         (unsigned long long)j->seed);
                st = job_settings(s, j->m, j->arch, &j->settings, err);
                if (!st)
                    st = job_key(s, j, err);
                if (st) {
                    eb_free(out);
                    return st;
                }
                n++;
            }
            for (int ci = 0; ci < s->n_chains; ci++) {
                const eb_suite_chain *ch = &s->chains[ci];
                eb_job *j;
                eb_status st;
                if (!runs_on(s, &s->methods[ch->method], archs[a]))
                    continue;
                if (index++ % shard_count != shard_index - 1)
                    continue;
                j = &out[n];
                j->index = index - 1;
                j->m = &s->methods[ch->method];
                j->chain = ch;
                j->seed = s->seeds[si];
                memcpy(j->arch, archs[a], sizeof j->arch);
                snprintf(j->name, sizeof j->name, "%s/%s/s%llu", ch->label, j->arch,
                         (unsigned long long)j->seed);
                st = job_settings(s, j->m, j->arch, &j->settings, err);
                for (int k = 0; k < ch->n_steps && !st; k++)
                    st = eb_chain_step_settings(s, &ch->steps[k], &j->step_settings[k], err);
                if (!st)
                    st = job_key(s, j, err);
                if (st) {
                    eb_free(out);
                    return st;
                }
                n++;
            }
        }
    *jobs = out;
    *n_jobs = n;
    return EB_OK;
}
