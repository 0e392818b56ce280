/* runner.c: runs a suite: for each job, a bundle (from the cache, or
 * trained and cached), measured on the device across the selected facets
 * into an in-memory record, then written to the results database in one
 * transaction. Also `eval`: the same measurements for one bundle. */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"
#include "common/eb_version.h"
#include "devices/eb_device.h"
#include "harness/eb_data.h"
#include "harness/eb_progress.h"
#include "harness/eb_runner.h"
#include "harness/eb_shift.h"
#include "metrics/eb_metrics.h"
#include "methods/eb_samplers.h"

/* ---- conventions ------------------------------------------------------ */

#define CONV_LATENCY "latency-single-stream-order-statistics-v1"
#define CONV_THROUGHPUT "throughput-offline-batches-v1"
#define CONV_LOAD "load-cold-fadvise-mincore-warm-v1"
#define CONV_MEMORY "memory-vmhwm-clear-refs-per-phase-v1"
#define CONV_STORAGE "storage-bundle-bytes-v1"

static const eb_results_convention conventions[] = {
    {EB_CONV_ACCURACY, "accuracy: predicted class = first maximum of the predictive (docs/metrics.md)"},
    {EB_CONV_NLL, "NLL of the predictive, probabilities floored at 1e-12 (docs/metrics.md)"},
    {EB_CONV_BRIER, "Brier score summed over classes, mean over examples (docs/metrics.md)"},
    {EB_CONV_UNCERTAINTY, "entropy decomposition in nats (docs/metrics.md)"},
    {EB_CONV_ECE, "ECE, 15 equal-width right-closed confidence bins (docs/metrics.md)"},
    {EB_CONV_MCE, "MCE over 15 equal-width right-closed bins (docs/metrics.md)"},
    {EB_CONV_ECE_ADAPTIVE, "adaptive ECE, 15 equal-mass bins (docs/metrics.md)"},
    {EB_CONV_ECE_CLASSWISE, "classwise (static) calibration error, 15 bins (docs/metrics.md)"},
    {EB_CONV_RELIABILITY, "reliability bins (docs/metrics.md)"},
    {EB_CONV_AUROC, "AUROC, Mann-Whitney, ties count one half (docs/metrics.md)"},
    {EB_CONV_AUPR, "AUPR as average precision, positives = OOD (docs/metrics.md)"},
    {EB_CONV_FPR95, "FPR at 95% TPR, smallest among ROC points (docs/metrics.md)"},
    {EB_CONV_ROC, "ROC points at every distinct threshold (docs/metrics.md)"},
    {EB_CONV_OOD_SCORES, "OOD scores: total entropy, mutual information, 1 - max p (docs/metrics.md)"},
    {EB_CONV_MISCLASSIFICATION, "misclassification-detection AUROC (docs/metrics.md)"},
    {EB_CONV_REJECTION, "accuracy-rejection curve on 100 points and its mean (docs/metrics.md)"},
    {EB_CONV_BOOTSTRAP, "percentile bootstrap over test examples (docs/metrics.md)"},
    {EB_CONV_FGSM, "L-infinity FGSM on the predictive NLL (docs/metrics.md)"},
    {EB_CONV_PGD, "L-infinity PGD on the predictive NLL (docs/metrics.md)"},
    {EB_CONV_SHIFT, "5 corruptions x 5 severities (docs/metrics.md)"},
    {CONV_LATENCY, "single-stream latency: warm-up, min queries and duration, order-statistic CI "
                   "of the median (docs/devices.md)"},
    {CONV_THROUGHPUT, "offline throughput over large batches (docs/devices.md)"},
    {CONV_LOAD, "load time: cold after posix_fadvise DONTNEED checked by mincore, then warm "
                "(docs/devices.md)"},
    {CONV_MEMORY, "peak RSS per phase: /proc/self/clear_refs reset, VmHWM (docs/devices.md)"},
    {CONV_STORAGE, "bundle bytes on disk (docs/devices.md)"},
};

const eb_results_convention *eb_runner_conventions(size_t *n)
{
    *n = sizeof conventions / sizeof conventions[0];
    return conventions;
}

/* ---- the in-memory record of one job ---------------------------------- */

typedef struct rec_metric {
    char facet[24], name[32], context[96], unit[16], convention[64];
    double value;
    int has_ci;
    double lo, hi, level;
    int higher;
} rec_metric;

typedef struct rec_curve {
    char kind[16], context[96];
    double *x, *y;
    size_t n;
} rec_curve;

typedef struct rec_bins {
    char context[48];
    eb_results_bin *b;
    size_t n;
} rec_bins;

typedef struct record {
    rec_metric *m;
    size_t n_m, cap_m;
    rec_curve *c;
    size_t n_c, cap_c;
    rec_bins *b;
    size_t n_b, cap_b;
    double *single; /* latency samples, owned */
    size_t n_single;
    double first[2];
    size_t n_first;
    int failed_alloc;
} record;

static void record_free(record *r)
{
    for (size_t i = 0; i < r->n_c; i++) {
        eb_free(r->c[i].x);
        eb_free(r->c[i].y);
    }
    for (size_t i = 0; i < r->n_b; i++)
        eb_free(r->b[i].b);
    eb_free(r->m);
    eb_free(r->c);
    eb_free(r->b);
    eb_free(r->single);
    memset(r, 0, sizeof *r);
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 64;
    while (ncap < need)
        ncap *= 2;
    void *q = eb_realloc(*p, ncap * size);
    if (!q)
        return -1;
    *p = q;
    *cap = ncap;
    return 0;
}

/* Adds a metric; value NaN is stored as NULL. ctx is printf-formatted. */
static eb_status add_metric(record *r, const char *facet, const char *name, double value,
                            int higher, const char *unit, const char *conv, eb_error *err,
                            const char *ctx, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 9, 10)))
#endif
    ;

static eb_status add_metric(record *r, const char *facet, const char *name, double value,
                            int higher, const char *unit, const char *conv, eb_error *err,
                            const char *ctx, ...)
{
    rec_metric *m;
    va_list ap;
    if (grow((void **)&r->m, &r->cap_m, r->n_m + 1, sizeof *r->m))
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory recording metric %s", name);
    m = &r->m[r->n_m++];
    memset(m, 0, sizeof *m);
    snprintf(m->facet, sizeof m->facet, "%s", facet);
    snprintf(m->name, sizeof m->name, "%s", name);
    va_start(ap, ctx);
    vsnprintf(m->context, sizeof m->context, ctx, ap);
    va_end(ap);
    snprintf(m->unit, sizeof m->unit, "%s", unit ? unit : "");
    snprintf(m->convention, sizeof m->convention, "%s", conv ? conv : "");
    m->value = value;
    m->higher = higher;
    return EB_OK;
}

/* Attaches an interval to the last metric added. */
static void last_ci(record *r, double lo, double hi, double level)
{
    rec_metric *m = &r->m[r->n_m - 1];
    if (isfinite(lo) && isfinite(hi)) {
        m->has_ci = 1;
        m->lo = lo;
        m->hi = hi;
        m->level = level;
    }
}

static eb_status add_curve(record *r, const char *kind, const char *context, const double *x,
                           const double *y, size_t n, eb_error *err)
{
    rec_curve *c;
    if (grow((void **)&r->c, &r->cap_c, r->n_c + 1, sizeof *r->c))
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory recording a curve");
    c = &r->c[r->n_c];
    memset(c, 0, sizeof *c);
    snprintf(c->kind, sizeof c->kind, "%s", kind);
    snprintf(c->context, sizeof c->context, "%s", context);
    c->x = eb_malloc((n ? n : 1) * sizeof *c->x);
    c->y = eb_malloc((n ? n : 1) * sizeof *c->y);
    if (!c->x || !c->y) {
        eb_free(c->x);
        eb_free(c->y);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory recording a curve");
    }
    /* undefined points (e.g. a detection AUROC at eps 0) are left out */
    c->n = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) {
            c->x[c->n] = x[i];
            c->y[c->n] = y[i];
            c->n++;
        }
    if (c->n == 0) {
        eb_free(c->x);
        eb_free(c->y);
        return EB_OK;
    }
    r->n_c++;
    return EB_OK;
}

static eb_status add_bins(record *r, const char *context, const eb_reliability_bin *rel,
                          size_t n, eb_error *err)
{
    rec_bins *b;
    if (grow((void **)&r->b, &r->cap_b, r->n_b + 1, sizeof *r->b))
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory recording bins");
    b = &r->b[r->n_b];
    snprintf(b->context, sizeof b->context, "%s", context);
    b->b = eb_malloc(n * sizeof *b->b);
    if (!b->b)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory recording bins");
    for (size_t i = 0; i < n; i++) {
        b->b[i].lo = rel[i].lo;
        b->b[i].hi = rel[i].hi;
        b->b[i].count = (int64_t)rel[i].count;
        b->b[i].confidence = rel[i].confidence;
        b->b[i].accuracy = rel[i].accuracy;
    }
    b->n = n;
    r->n_b++;
    return EB_OK;
}

/* Writes the record as the open job's rows. */
static eb_status record_store(eb_results *db, const record *r, eb_error *err)
{
    eb_results_metric *ms;
    eb_status st = EB_OK;
    ms = eb_calloc(r->n_m ? r->n_m : 1, sizeof *ms);
    if (!ms)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory storing metrics");
    for (size_t i = 0; i < r->n_m; i++) {
        const rec_metric *m = &r->m[i];
        ms[i].facet = m->facet;
        ms[i].name = m->name;
        ms[i].context = m->context;
        ms[i].value = m->value;
        ms[i].has_ci = m->has_ci;
        ms[i].ci_low = m->lo;
        ms[i].ci_high = m->hi;
        ms[i].ci_level = m->level;
        ms[i].unit = m->unit;
        ms[i].higher_is_better = m->higher;
        ms[i].convention = m->convention[0] ? m->convention : NULL;
    }
    if (r->n_m)
        st = eb_results_job_metrics(db, ms, r->n_m, err);
    eb_free(ms);
    for (size_t i = 0; !st && i < r->n_c; i++)
        st = eb_results_job_curve(db, r->c[i].kind, r->c[i].context, r->c[i].x, r->c[i].y,
                                  r->c[i].n, err);
    for (size_t i = 0; !st && i < r->n_b; i++)
        st = eb_results_job_bins(db, r->b[i].context, r->b[i].b, r->b[i].n, err);
    if (!st && r->n_single)
        st = eb_results_job_latency(db, "single", r->single, r->n_single, err);
    if (!st && r->n_first)
        st = eb_results_job_latency(db, "first", r->first, r->n_first, err);
    return st;
}

/* ---- data --------------------------------------------------------------- */

typedef struct eval_data {
    eb_dataset train, test, ood; /* owned */
    eb_dataset test_view, ood_view; /* limited views of the above */
    int have_train;
} eval_data;

static eb_status load_ref(const char *ref, eb_dataset *ds, eb_error *err)
{
    char name[64];
    const char *slash = strchr(ref, '/');
    eb_data_config cfg;
    eb_status st;
    if (!slash || (size_t)(slash - ref) >= sizeof name)
        return eb_error_set(err, EB_ERR_ARG, "dataset reference '%s' is not name/split", ref);
    snprintf(name, sizeof name, "%.*s", (int)(slash - ref), ref);
    st = eb_data_config_default(&cfg, err);
    if (!st)
        st = eb_dataset_load(name, slash + 1, &cfg, ds, err);
    return st;
}

static eb_dataset limited(const eb_dataset *d, size_t limit)
{
    eb_dataset v = *d;
    if (limit && limit < v.n)
        v.n = limit;
    return v;
}

static eb_status data_load(const eb_suite *s, eval_data *d, eb_error *err)
{
    eb_status st;
    memset(d, 0, sizeof *d);
    st = load_ref(s->test, &d->test, err);
    if (!st)
        st = load_ref(s->ood, &d->ood, err);
    if (st)
        return st;
    d->test_view = limited(&d->test, s->test_limit);
    d->ood_view = limited(&d->ood, s->ood_limit);
    return EB_OK;
}

static eb_status data_train(const eb_suite *s, eval_data *d, eb_error *err)
{
    eb_status st;
    if (d->have_train)
        return EB_OK;
    st = load_ref(s->train, &d->train, err);
    if (!st)
        d->have_train = 1;
    return st;
}

static void data_free(eval_data *d)
{
    eb_dataset_free(&d->train);
    eb_dataset_free(&d->test);
    eb_dataset_free(&d->ood);
}

/* ---- evaluation of a loaded device ------------------------------------ */

typedef struct grad_ctx {
    eb_device *dev;
    uint32_t S;
    uint64_t seed;
} grad_ctx;

static eb_status device_grad(void *ctx, const float *x, const uint8_t *y, size_t n, float *dx,
                             float *pbar, eb_error *err)
{
    grad_ctx *g = ctx;
    return eb_device_input_grad(g->dev, x, y, n, g->S, g->seed, 0, dx, pbar, err);
}

/* Scores of a prediction: pbar, per-example uncertainty. */
typedef struct scored {
    size_t n;
    float *probs;   /* (n, S, C) */
    float *pbar;    /* (n, C) */
    double *score[EB_OOD_SCORE_COUNT_]; /* (n) each */
} scored;

static void scored_free(scored *p)
{
    eb_free(p->probs);
    eb_free(p->pbar);
    for (int k = 0; k < EB_OOD_SCORE_COUNT_; k++)
        eb_free(p->score[k]);
    memset(p, 0, sizeof *p);
}

static eb_status predict_scored(eb_device *dev, const float *x, size_t n, uint32_t S, size_t C,
                                uint64_t seed, scored *out, eb_error *err)
{
    size_t len;
    eb_status st;
    memset(out, 0, sizeof *out);
    if (eb_size_mul(n * S, C * sizeof(float), &len))
        return eb_error_set(err, EB_ERR_NOMEM, "predictions of %zu inputs x %u draws overflow", n,
                            S);
    out->n = n;
    out->probs = eb_malloc(len ? len : 1);
    out->pbar = eb_malloc((n ? n : 1) * C * sizeof(float));
    for (int k = 0; k < EB_OOD_SCORE_COUNT_; k++)
        out->score[k] = eb_malloc((n ? n : 1) * sizeof(double));
    if (!out->probs || !out->pbar || !out->score[0] || !out->score[1] || !out->score[2]) {
        scored_free(out);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu bytes of predictions",
                            len);
    }
    st = eb_device_predict(dev, x, n, S, seed, 0, out->probs, err);
    if (!st) {
        eb_metric_predictive(out->pbar, out->probs, n, S, C);
        for (int k = 0; k < EB_OOD_SCORE_COUNT_ && !st; k++)
            st = eb_metric_ood_score((eb_ood_score)k, out->probs, n, S, C, out->score[k], err);
    }
    if (st)
        scored_free(out);
    return st;
}

static double mean_of(const double *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return n ? s / (double)n : NAN;
}

/* Accuracy, NLL and ECE of a prediction (used per epsilon and per shift). */
static eb_status basic_three(const scored *p, const uint8_t *y, size_t C, double *acc,
                             double *nll, double *ece, eb_error *err)
{
    *acc = eb_metric_accuracy(p->pbar, y, p->n, C);
    *nll = eb_metric_nll(p->pbar, y, p->n, C);
    return eb_metric_ece(p->pbar, y, p->n, C, EB_METRIC_ECE_BINS, ece, NULL, NULL, err);
}

static const char *const score_ctx[EB_OOD_SCORE_COUNT_] = {"entropy", "mi", "maxprob"};

static eb_status eval_quality(record *r, const eb_suite *s, const scored *t, const uint8_t *y,
                              size_t C, uint64_t seed, eb_error *err)
{
    const size_t n = t->n, B = (size_t)s->bootstrap;
    eb_status st;
    double lo, hi;
#define CI(metric)                                                                           \
    do {                                                                                     \
        if (B) {                                                                             \
            st = eb_metric_bootstrap_quality(metric, t->pbar, y, n, C, B, s->ci_level, seed, \
                                             &lo, &hi, err);                                 \
            if (st)                                                                          \
                return st;                                                                   \
            last_ci(r, lo, hi, s->ci_level);                                                 \
        }                                                                                    \
    } while (0)
    if (s->facets & EB_FACET_QUALITY) {
        if ((st = add_metric(r, "quality", "accuracy", eb_metric_accuracy(t->pbar, y, n, C), 1, "",
                             EB_CONV_ACCURACY, err, "%s", "")))
            return st;
        CI(EB_QUALITY_ACCURACY);
        if ((st = add_metric(r, "quality", "nll", eb_metric_nll(t->pbar, y, n, C), 0, "nats",
                             EB_CONV_NLL, err, "%s", "")))
            return st;
        CI(EB_QUALITY_NLL);
        if ((st = add_metric(r, "quality", "brier", eb_metric_brier(t->pbar, y, n, C), 0, "",
                             EB_CONV_BRIER, err, "%s", "")))
            return st;
        CI(EB_QUALITY_BRIER);
    }
    if (s->facets & EB_FACET_CALIBRATION) {
        eb_reliability_bin rel[EB_METRIC_ECE_BINS];
        double ece, mce, sce;
        if ((st = eb_metric_ece(t->pbar, y, n, C, EB_METRIC_ECE_BINS, &ece, &mce, rel, err)) ||
            (st = add_metric(r, "calibration", "ece", ece, 0, "", EB_CONV_ECE, err, "%s", "")))
            return st;
        CI(EB_QUALITY_ECE);
        if ((st = add_metric(r, "calibration", "mce", mce, 0, "", EB_CONV_MCE, err, "%s", "")) ||
            (st = add_bins(r, "binning=equal-width", rel, EB_METRIC_ECE_BINS, err)))
            return st;
        if ((st = eb_metric_ece_adaptive(t->pbar, y, n, C, EB_METRIC_ECE_BINS, &ece, &mce, rel,
                                         err)) ||
            (st = add_metric(r, "calibration", "ece_adaptive", ece, 0, "", EB_CONV_ECE_ADAPTIVE,
                             err, "%s", "")))
            return st;
        CI(EB_QUALITY_ECE_ADAPTIVE);
        if ((st = add_bins(r, "binning=equal-mass", rel, EB_METRIC_ECE_BINS, err)) ||
            (st = eb_metric_ece_classwise(t->pbar, y, n, C, EB_METRIC_ECE_BINS, &sce, err)) ||
            (st = add_metric(r, "calibration", "ece_classwise", sce, 0, "", EB_CONV_ECE_CLASSWISE,
                             err, "%s", "")))
            return st;
    }
#undef CI
    return EB_OK;
}

static eb_status eval_ood(record *r, const eb_suite *s, const scored *t, const scored *o,
                          const uint8_t *y, size_t C, uint64_t seed, eb_error *err)
{
    eb_status st = EB_OK;
    double *fpr = NULL, *tpr = NULL;
    if (s->facets & EB_FACET_OOD) {
        size_t cap = t->n + o->n + 2;
        fpr = eb_malloc(cap * sizeof *fpr);
        tpr = eb_malloc(cap * sizeof *tpr);
        if (!fpr || !tpr) {
            st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for ROC points");
            goto done;
        }
        for (int k = 0; k < EB_OOD_SCORE_COUNT_; k++) {
            eb_ood_result res;
            size_t count = 0;
            double lo, hi;
            char ctx[48];
            snprintf(ctx, sizeof ctx, "score=%s", score_ctx[k]);
            if ((st = eb_metric_ood(o->score[k], o->n, t->score[k], t->n, &res, err)) ||
                (st = add_metric(r, "ood", "auroc", res.auroc, 1, "", EB_CONV_AUROC, err, "%s",
                                 ctx)))
                goto done;
            if (s->bootstrap) {
                if ((st = eb_metric_bootstrap_ood(EB_OOD_AUROC, o->score[k], o->n, t->score[k],
                                                  t->n, (size_t)s->bootstrap, s->ci_level, seed,
                                                  &lo, &hi, err)))
                    goto done;
                last_ci(r, lo, hi, s->ci_level);
            }
            if ((st = add_metric(r, "ood", "aupr", res.aupr, 1, "", EB_CONV_AUPR, err, "%s",
                                 ctx)) ||
                (st = add_metric(r, "ood", "fpr95", res.fpr95, 0, "", EB_CONV_FPR95, err, "%s",
                                 ctx)) ||
                (st = add_metric(r, "ood", "mean_score_ood", mean_of(o->score[k], o->n), 1, "",
                                 EB_CONV_OOD_SCORES, err, "%s", ctx)) ||
                (st = add_metric(r, "ood", "mean_score_test", mean_of(t->score[k], t->n), 0, "",
                                 EB_CONV_OOD_SCORES, err, "%s", ctx)) ||
                (st = eb_metric_roc(o->score[k], o->n, t->score[k], t->n, fpr, tpr, &count,
                                    err)) ||
                (st = add_curve(r, "roc", ctx, fpr, tpr, count, err)))
                goto done;
        }
    }
    if (s->facets & EB_FACET_MISCLASS) {
        for (int k = 0; k < EB_OOD_SCORE_COUNT_; k++) {
            double auroc;
            if ((st = eb_metric_misclassification_auroc(t->pbar, y, t->n, C, t->score[k], &auroc,
                                                        err)) ||
                (st = add_metric(r, "misclassification", "auroc", auroc, 1, "",
                                 EB_CONV_MISCLASSIFICATION, err, "score=%s", score_ctx[k])))
                goto done;
        }
    }
    if (s->facets & EB_FACET_SELECTIVE) {
        double acc[EB_METRIC_REJECTION_GRID], x[EB_METRIC_REJECTION_GRID], area;
        for (int i = 0; i < EB_METRIC_REJECTION_GRID; i++)
            x[i] = (double)i / EB_METRIC_REJECTION_GRID;
        if ((st = eb_metric_rejection_curve(t->pbar, y, t->n, C, NULL, EB_METRIC_REJECTION_GRID,
                                            acc, &area, err)) ||
            (st = add_curve(r, "selective", "score=maxprob", x, acc, EB_METRIC_REJECTION_GRID,
                            err)) ||
            (st = add_metric(r, "selective", "area", area, 1, "", EB_CONV_REJECTION, err,
                             "score=maxprob")))
            goto done;
    }
    /* uncertainty summaries, for reading the decomposition */
    if (s->facets & (EB_FACET_OOD | EB_FACET_QUALITY)) {
        if ((st = add_metric(r, "uncertainty", "total", mean_of(t->score[EB_OOD_SCORE_ENTROPY], t->n),
                             0, "nats", EB_CONV_UNCERTAINTY, err, "split=test")) ||
            (st = add_metric(r, "uncertainty", "knowledge", mean_of(t->score[EB_OOD_SCORE_MI], t->n),
                             0, "nats", EB_CONV_UNCERTAINTY, err, "split=test")) ||
            (st = add_metric(r, "uncertainty", "total", mean_of(o->score[EB_OOD_SCORE_ENTROPY], o->n),
                             1, "nats", EB_CONV_UNCERTAINTY, err, "split=ood")) ||
            (st = add_metric(r, "uncertainty", "knowledge", mean_of(o->score[EB_OOD_SCORE_MI], o->n),
                             1, "nats", EB_CONV_UNCERTAINTY, err, "split=ood")))
            goto done;
    }
done:
    eb_free(fpr);
    eb_free(tpr);
    return st;
}

static eb_status eval_adversarial(record *r, const eb_suite *s, eb_device *dev,
                                  const eb_dataset *test, const scored *clean_full, uint32_t S,
                                  size_t C, uint64_t seed, eb_error *err)
{
    const size_t n = s->adversarial_subset && s->adversarial_subset < test->n
                         ? s->adversarial_subset : test->n;
    const size_t d = test->n ? (size_t)test->h * test->w * test->c : 0;
    float *xadv = eb_malloc((n ? n : 1) * d * sizeof(float));
    double *cx = eb_malloc(EB_SUITE_MAX_LIST * sizeof(double));
    double *cy[4];
    grad_ctx g = {dev, S, seed};
    eb_status st = EB_OK;
    for (int k = 0; k < 4; k++)
        cy[k] = eb_malloc(EB_SUITE_MAX_LIST * sizeof(double));
    if (!xadv || !cx || !cy[0] || !cy[1] || !cy[2] || !cy[3]) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for adversarial examples");
        goto done;
    }
    if (!(eb_device_caps(dev) & EB_DEVICE_CAP_INPUT_GRAD)) {
        st = eb_error_set(err, EB_ERR_UNSUPPORTED,
                          "device '%s' gives no input gradient, so it cannot be attacked",
                          eb_device_name(dev));
        goto done;
    }
    for (int attack = 0; attack < 2; attack++) {
        const char *aname = attack == 0 ? "fgsm" : "pgd";
        if ((attack == 0 && !s->fgsm) || (attack == 1 && !s->pgd))
            continue;
        for (int e = 0; e < s->n_eps; e++) {
            const float eps = (float)s->eps[e];
            scored adv;
            double acc, nll, ece, auroc = NAN;
            if (attack == 0)
                st = eb_attack_fgsm(xadv, test->x, test->y, n, d, eps, device_grad, &g, err);
            else {
                eb_pgd_config pc;
                memset(&pc, 0, sizeof pc);
                pc.eps = eps;
                pc.step = (float)(s->pgd_step * eps);
                pc.steps = s->pgd_steps;
                pc.random_start = s->pgd_random_start;
                pc.seed = seed;
                /* the strongest candidate per example, FGSM's point
                 * included (docs/metrics.md) */
                pc.keep_best = 1;
                pc.fgsm_candidate = 1;
                pc.n_classes = (int)C;
                st = eb_attack_pgd(xadv, test->x, test->y, n, d, &pc, device_grad, &g, err);
            }
            if (st)
                goto done;
            st = predict_scored(dev, xadv, n, S, C, seed, &adv, err);
            if (st)
                goto done;
            st = basic_three(&adv, test->y, C, &acc, &nll, &ece, err);
            /* detection of the attacked inputs among the clean ones by MI */
            if (!st && eps > 0.0f)
                st = eb_metric_auroc(adv.score[EB_OOD_SCORE_MI], n,
                                     clean_full->score[EB_OOD_SCORE_MI], n, &auroc, err);
            scored_free(&adv);
            if (st)
                goto done;
            cx[e] = eps;
            cy[0][e] = acc;
            cy[1][e] = nll;
            cy[2][e] = ece;
            cy[3][e] = auroc;
            if ((st = add_metric(r, "adversarial", "accuracy", acc, 1, "",
                                 attack ? EB_CONV_PGD : EB_CONV_FGSM, err, "attack=%s,eps=%g",
                                 aname, (double)eps)) ||
                (st = add_metric(r, "adversarial", "nll", nll, 0, "nats",
                                 attack ? EB_CONV_PGD : EB_CONV_FGSM, err, "attack=%s,eps=%g",
                                 aname, (double)eps)) ||
                (st = add_metric(r, "adversarial", "ece", ece, 0, "",
                                 attack ? EB_CONV_PGD : EB_CONV_FGSM, err, "attack=%s,eps=%g",
                                 aname, (double)eps)) ||
                (eps > 0.0f &&
                 (st = add_metric(r, "adversarial", "mi_auroc", auroc, 1, "", EB_CONV_AUROC, err,
                                  "attack=%s,eps=%g", aname, (double)eps))))
                goto done;
        }
        {
            static const char *const names[4] = {"accuracy", "nll", "ece", "mi_auroc"};
            for (int k = 0; k < 4; k++) {
                char ctx[64];
                snprintf(ctx, sizeof ctx, "attack=%s,metric=%s", aname, names[k]);
                if ((st = add_curve(r, "eps", ctx, cx, cy[k], (size_t)s->n_eps, err)))
                    goto done;
            }
        }
    }
done:
    eb_free(xadv);
    eb_free(cx);
    for (int k = 0; k < 4; k++)
        eb_free(cy[k]);
    return st;
}

static eb_status eval_shift(record *r, const eb_suite *s, eb_device *dev, const eb_dataset *test,
                            uint32_t S, size_t C, uint64_t seed, eb_error *err)
{
    const size_t n = s->shift_subset && s->shift_subset < test->n ? s->shift_subset : test->n;
    const size_t d = (size_t)test->h * test->w * test->c;
    float *xs = eb_malloc((n ? n : 1) * d * sizeof(float));
    double sev[EB_SUITE_MAX_LIST], vals[3][EB_SUITE_MAX_LIST], sum[3][EB_SUITE_MAX_LIST];
    eb_status st = EB_OK;
    if (!xs)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for corrupted images");
    memset(sum, 0, sizeof sum);
    for (int c = 0; c < s->n_corruptions; c++) {
        for (int k = 0; k < s->n_severities; k++) {
            scored p;
            double acc, nll, ece;
            st = eb_shift_apply(s->corruptions[c], s->severities[k], test->x, n, test->h, test->w,
                                test->c, seed, 0, xs, err);
            if (!st)
                st = predict_scored(dev, xs, n, S, C, seed, &p, err);
            if (st)
                goto done;
            st = basic_three(&p, test->y, C, &acc, &nll, &ece, err);
            scored_free(&p);
            if (st)
                goto done;
            sev[k] = s->severities[k];
            vals[0][k] = acc;
            vals[1][k] = nll;
            vals[2][k] = ece;
            for (int m = 0; m < 3; m++)
                sum[m][k] += vals[m][k];
            if ((st = add_metric(r, "shift", "accuracy", acc, 1, "", EB_CONV_SHIFT, err,
                                 "corruption=%s,severity=%d", s->corruptions[c],
                                 s->severities[k])) ||
                (st = add_metric(r, "shift", "nll", nll, 0, "nats", EB_CONV_SHIFT, err,
                                 "corruption=%s,severity=%d", s->corruptions[c],
                                 s->severities[k])) ||
                (st = add_metric(r, "shift", "ece", ece, 0, "", EB_CONV_SHIFT, err,
                                 "corruption=%s,severity=%d", s->corruptions[c],
                                 s->severities[k])))
                goto done;
        }
        for (int m = 0; m < 3; m++) {
            static const char *const names[3] = {"accuracy", "nll", "ece"};
            char ctx[96];
            snprintf(ctx, sizeof ctx, "corruption=%s,metric=%s", s->corruptions[c], names[m]);
            if ((st = add_curve(r, "shift", ctx, sev, vals[m], (size_t)s->n_severities, err)))
                goto done;
        }
    }
    for (int m = 0; m < 3 && s->n_corruptions; m++) {
        static const char *const names[3] = {"accuracy", "nll", "ece"};
        char ctx[96];
        double mean[EB_SUITE_MAX_LIST];
        for (int k = 0; k < s->n_severities; k++)
            mean[k] = sum[m][k] / s->n_corruptions;
        snprintf(ctx, sizeof ctx, "corruption=mean,metric=%s", names[m]);
        if ((st = add_curve(r, "shift", ctx, sev, mean, (size_t)s->n_severities, err)))
            goto done;
    }
done:
    eb_free(xs);
    return st;
}

static eb_status add_memory(record *r, const char *phase, const eb_memory_phase *ph,
                            eb_error *err)
{
    eb_status st;
    if (!ph->available)
        return EB_OK;
    st = add_metric(r, "memory", "peak_rss", (double)ph->peak_rss, 0, "bytes", CONV_MEMORY, err,
                    "phase=%s", phase);
    /* what the phase itself added on top of the harness's resident data */
    if (!st && ph->peak_reset && ph->peak_rss >= ph->start.vm_rss)
        st = add_metric(r, "memory", "peak_rss_growth", (double)(ph->peak_rss - ph->start.vm_rss),
                        0, "bytes", CONV_MEMORY, err, "phase=%s", phase);
    if (!st && ph->end.have)
        st = add_metric(r, "memory", "rss_anon", (double)ph->end.rss_anon, 0, "bytes", CONV_MEMORY,
                        err, "phase=%s", phase);
    if (!st && ph->end.have)
        st = add_metric(r, "memory", "rss_file", (double)ph->end.rss_file, 0, "bytes", CONV_MEMORY,
                        err, "phase=%s", phase);
    return st;
}

/* Every facet of the bundle at path on dev, into r. The device ends
 * loaded. */
/* Convergence and diversity of a posterior's members (facet
 * diagnostics): member disagreement on the test set, split R-hat and ESS of
 * the predictive on a probe set across the bundle's chains, HMC's
 * acceptance rate. */
static eb_status eval_diagnostics(record *r, const char *path, const scored *t, uint32_t S,
                                  size_t C, const eb_dataset *test, eb_error *err)
{
    eb_bundle *b = NULL;
    eb_posterior p;
    eb_status st;
    const char *chains_text;
    int chains;
    double accept = 0.0;
    int n_accept = 0;

    if (S >= 2 && (st = add_metric(r, "diagnostics", "disagreement",
                                   eb_diag_disagreement(t->probs, t->n, S, C), 1, "", NULL, err,
                                   "%s", "")))
        return st;
    if ((st = eb_bundle_open(path, EB_BUNDLE_SKIP_TENSOR_CHECK, &b, err)))
        return st;
    for (int c = 0; c < 100; c++) {
        char key[64];
        const char *v;
        snprintf(key, sizeof key, "hmc.chain%d.accept_rate", c);
        v = eb_bundle_meta_get(b, key);
        if (!v)
            break;
        accept += strtod(v, NULL);
        n_accept++;
    }
    if (n_accept && (st = add_metric(r, "diagnostics", "accept_rate", accept / n_accept, 1, "",
                                     NULL, err, "%s", ""))) {
        eb_bundle_close(b);
        return st;
    }
    chains_text = eb_bundle_meta_get(b, "hp.chains");
    chains = chains_text ? atoi(chains_text) : 1;
    st = eb_posterior_from_bundle(b, &p, err);
    if (!st && p.repr == EB_REPR_SAMPLES && chains >= 2 && p.members % (uint32_t)chains == 0 &&
        p.members / (uint32_t)chains >= 4) {
        /* the predictive of the first 200 test images as the probe set */
        const size_t probes = test->n < 200 ? test->n : 200;
        eb_chain_diag cd;
        st = eb_posterior_chain_diag(&p, chains, test->x, test->y, probes, &cd, err);
        if (!st)
            st = add_metric(r, "diagnostics", "chains", chains, 1, "", NULL, err, "%s", "");
        if (!st)
            st = add_metric(r, "diagnostics", "rhat_max", cd.rhat_max, 0, "", NULL, err, "%s",
                            "");
        if (!st)
            st = add_metric(r, "diagnostics", "rhat_mean", cd.rhat_mean, 0, "", NULL, err, "%s",
                            "");
        if (!st)
            st = add_metric(r, "diagnostics", "ess_min", cd.ess_min, 1, "", NULL, err, "%s", "");
        if (!st)
            st = add_metric(r, "diagnostics", "ess_mean", cd.ess_mean, 1, "", NULL, err, "%s",
                            "");
    }
    eb_posterior_release(&p); /* safe after a failed from_bundle too */
    eb_bundle_close(b);
    return st;
}

static eb_status evaluate(eb_device *dev, const char *path, const eb_suite *s,
                          const eval_data *data, uint64_t seed, uint32_t *draws, record *r,
                          float **pbar_out, eb_error *err)
{
    const eb_dataset *test = &data->test_view, *ood = &data->ood_view;
    eb_measure_config mc;
    const eb_device_model *model;
    scored t, o;
    eb_memory_phase ph;
    uint32_t S;
    size_t C;
    eb_status st;

    memset(&t, 0, sizeof t);
    memset(&o, 0, sizeof o);
    eb_measure_config_default(&mc);
    mc.seed = seed;
    mc.draws = s->draws;
    mc.level = s->ci_level;
    mc.warmup = (size_t)s->latency_warmup;
    mc.min_queries = (size_t)s->latency_min_queries;
    mc.min_seconds = s->latency_min_seconds;
    mc.batch = s->throughput_batch;
    mc.throughput_min_seconds = s->throughput_min_seconds;

    if (s->facets & EB_FACET_LOAD) {
        eb_load_result lr;
        st = eb_measure_load(dev, path, test, &mc, &lr, err);
        if (st)
            return st;
        if ((st = add_metric(r, "load", "seconds", lr.cold.load_s, 0, "s", CONV_LOAD, err,
                             "cache=cold")) ||
            (st = add_metric(r, "load", "seconds", lr.warm.load_s, 0, "s", CONV_LOAD, err,
                             "cache=warm")) ||
            (st = add_metric(r, "load", "cold_verified", lr.cold_verified, 1, "", CONV_LOAD, err,
                             "%s", "")) ||
            (st = add_metric(r, "latency", "first_prediction", lr.cold.first_predict_s, 0, "s",
                             CONV_LATENCY, err, "cache=cold")) ||
            (st = add_metric(r, "latency", "first_prediction", lr.warm.first_predict_s, 0, "s",
                             CONV_LATENCY, err, "cache=warm")) ||
            (st = add_memory(r, "load", &lr.cold.memory, err)))
            return st;
        r->first[0] = lr.cold.first_predict_s;
        r->first[1] = lr.warm.first_predict_s;
        r->n_first = 2;
    } else {
        eb_device_load_timing timing;
        if ((st = eb_device_load(dev, path, &timing, err)))
            return st;
    }
    model = eb_device_model_info(dev);
    C = (size_t)model->n_classes;
    S = s->draws ? s->draws : model->default_draws;
    *draws = S;
    if (s->facets & EB_FACET_STORAGE) {
        struct stat stt;
        if (stat(path, &stt) != 0)
            return eb_error_set(err, EB_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
        if ((st = add_metric(r, "storage", "bundle_bytes", (double)stt.st_size, 0, "bytes",
                             CONV_STORAGE, err, "%s", "")))
            return st;
    }
    if (s->facets & EB_FACET_MEMORY) {
        if ((st = add_metric(r, "memory", "model_bytes", (double)model->model_bytes, 0, "bytes",
                             CONV_MEMORY, err, "%s", "")) ||
            (st = add_metric(r, "memory", "param_bytes", (double)model->param_bytes, 0, "bytes",
                             CONV_MEMORY, err, "%s", "")))
            return st;
    }

    /* predictions on the test and OOD sets */
    if (pbar_out)
        *pbar_out = NULL;
    if ((st = eb_measure_memory_begin(dev, &ph, err)))
        return st;
    st = predict_scored(dev, test->x, test->n, S, C, seed, &t, err);
    if (!st)
        st = predict_scored(dev, ood->x, ood->n, S, C, seed, &o, err);
    if (!st)
        st = eb_measure_memory_end(dev, &ph, err);
    if (!st && (s->facets & EB_FACET_MEMORY))
        st = add_memory(r, "predict", &ph, err);
    if (!st)
        st = eval_quality(r, s, &t, test->y, C, seed, err);
    if (!st)
        st = eval_ood(r, s, &t, &o, test->y, C, seed, err);
    if (!st && (s->facets & EB_FACET_DIAGNOSTICS))
        st = eval_diagnostics(r, path, &t, S, C, test, err);
    if (!st && pbar_out) {
        *pbar_out = eb_malloc(t.n * C * sizeof **pbar_out);
        if (!*pbar_out)
            st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the predictive");
        else
            memcpy(*pbar_out, t.pbar, t.n * C * sizeof **pbar_out);
    }
    if (!st && (s->facets & EB_FACET_ADVERSARIAL)) {
        st = eb_measure_memory_begin(dev, &ph, err);
        if (!st)
            st = eval_adversarial(r, s, dev, test, &t, S, C, seed, err);
        if (!st)
            st = eb_measure_memory_end(dev, &ph, err);
        if (!st && (s->facets & EB_FACET_MEMORY))
            st = add_memory(r, "attack", &ph, err);
    }
    scored_free(&t);
    scored_free(&o);
    if (!st && (s->facets & EB_FACET_SHIFT))
        st = eval_shift(r, s, dev, test, S, C, seed, err);
    if (!st && (s->facets & EB_FACET_LATENCY)) {
        eb_latency_result lat;
        memset(&lat, 0, sizeof lat);
        st = eb_measure_latency(dev, test, &mc, &lat, err);
        if (!st) {
            const eb_latency_stats *ls = &lat.stats;
            if (!(st = add_metric(r, "latency", "p50", ls->p50, 0, "s", CONV_LATENCY, err, "%s",
                                  ""))) {
                if (ls->median_ci.valid)
                    last_ci(r, ls->median_ci.lo, ls->median_ci.hi, ls->median_ci.level);
            }
            if (!st)
                st = add_metric(r, "latency", "p90", ls->p90, 0, "s", CONV_LATENCY, err, "%s", "");
            if (!st)
                st = add_metric(r, "latency", "p99", ls->p99, 0, "s", CONV_LATENCY, err, "%s", "");
            if (!st)
                st = add_metric(r, "latency", "mean", ls->mean, 0, "s", CONV_LATENCY, err, "%s",
                                "");
            if (!st)
                st = add_metric(r, "latency", "p99_supported", ls->p99_supported, 1, "",
                                CONV_LATENCY, err, "%s", "");
            if (!st)
                st = add_metric(r, "latency", "queries", (double)lat.n, 1, "", CONV_LATENCY, err,
                                "%s", "");
            if (!st && (s->facets & EB_FACET_MEMORY))
                st = add_memory(r, "latency", &lat.memory, err);
            if (!st) {
                r->single = lat.samples; /* take ownership */
                r->n_single = lat.n;
                lat.samples = NULL;
            }
        }
        eb_latency_result_free(&lat);
    }
    if (!st && (s->facets & EB_FACET_THROUGHPUT)) {
        eb_throughput_result tp;
        st = eb_measure_throughput(dev, test, &mc, &tp, err);
        if (!st)
            st = add_metric(r, "throughput", "inputs_per_second", tp.inputs_per_s, 1, "inputs/s",
                            CONV_THROUGHPUT, err, "%s", "");
        if (!st)
            st = add_metric(r, "throughput", "batch", tp.batch, 1, "inputs", CONV_THROUGHPUT, err,
                            "%s", "");
    }
    return st;
}

/* ---- bundles: the content-addressed cache ------------------------------ */

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static eb_status default_cache(char *out, size_t len, eb_error *err)
{
    eb_data_config cfg;
    eb_status st = eb_data_config_default(&cfg, err);
    if (st)
        return st;
    if (snprintf(out, len, "%s/bundles", cfg.cache_dir) >= (int)len)
        return eb_error_set(err, EB_ERR_ARG, "cache directory path is too long");
    return EB_OK;
}

/* The bundle's content hash: everything its bytes depend on. */
static eb_status bundle_hash(const eb_job *j, int threads, const char *train_digest,
                             char hex[65], eb_error *err)
{
    char text[6144], settings[4096], arch_text[EB_ARCH_TEXT_MAX];
    eb_arch a;
    int w;
    eb_status st = eb_arch_named(j->arch, &a, err);
    if (st)
        return st;
    if ((st = eb_arch_format(&a, arch_text, sizeof arch_text, err)))
        return st;
    eb_job_settings_text(j, settings, sizeof settings);
    w = snprintf(text, sizeof text,
                 "edgebayes-bundle-v1\nmethod=%s\narch=%s\nsettings=%s\nseed=%llu\nthreads=%d\n"
                 "train=%s\ncode=%s %s\n",
                 j->m->method->name, arch_text, settings, (unsigned long long)j->seed, threads,
                 train_digest, eb_version(), eb_version_commit());
    if (w < 0 || (size_t)w >= sizeof text)
        return eb_error_set(err, EB_ERR_INTERNAL, "bundle definition too long");
    return eb_sha256_buffer(text, (size_t)w, hex, err);
}

typedef struct bundle_ref {
    char path[1200];
    char sha256[65]; /* of the file */
    int trained;     /* built in this run */
    double train_seconds; /* from this run or the cache's sidecar; NAN if unknown */
    double transform_seconds; /* a chain's steps together; NAN if unknown, 0 for none */
} bundle_ref;

/* The cache's file names for a bundle hash: the bundle and, beside it, its
 * sidecar with the seconds it took to build (kept out of the bundle so its
 * bytes do not depend on timing). */
static eb_status cache_paths(const char *cache, const char *hash, char *path, size_t plen,
                             char *side, size_t slen, eb_error *err)
{
    if (snprintf(path, plen, "%s/%s.ebb", cache, hash) >= (int)plen ||
        snprintf(side, slen, "%s/%s.train", cache, hash) >= (int)slen)
        return eb_error_set(err, EB_ERR_ARG, "cache directory '%s' is too long", cache);
    return EB_OK;
}

/* 1 when path holds a bundle that opens and validates; *seconds is then
 * the sidecar's time, NAN when it has none. A damaged cache entry is
 * rebuilt rather than trusted. */
static int cache_hit(const char *path, const char *side, double *seconds)
{
    eb_bundle *bb = NULL;
    char *text;
    size_t len;
    *seconds = NAN;
    if (!eb_file_exists(path) || eb_bundle_open(path, EB_BUNDLE_OPEN_DEFAULT, &bb, NULL) != EB_OK)
        return 0;
    eb_bundle_close(bb);
    if (eb_file_read_all(side, &text, &len, NULL) == EB_OK) {
        *seconds = strtod(text, NULL);
        eb_free(text);
    }
    return 1;
}

/* Writes the sidecar; a failure only loses the time, never the bundle. */
static void cache_note_seconds(const char *side, double seconds)
{
    eb_tmpfile tf;
    if (eb_tmpfile_open(&tf, side, NULL) == EB_OK) {
        fprintf(tf.fp, "%.6f\n", seconds);
        if (eb_tmpfile_commit(&tf, NULL) != EB_OK)
            eb_tmpfile_abort(&tf);
    }
}

static eb_status get_bundle(const eb_run_options *o, const eb_suite *s, const eb_job *j,
                            int threads, eval_data *data, const char *cache, bundle_ref *b,
                            FILE *log, eb_error *err)
{
    char hash[65], side[1300];
    eb_status st;
    memset(b, 0, sizeof *b);
    b->train_seconds = NAN;
    if ((st = data_train(s, data, err)))
        return st;
    if ((st = bundle_hash(j, threads, data->train.digest, hash, err)))
        return st;
    if ((st = cache_paths(cache, hash, b->path, sizeof b->path, side, sizeof side, err)))
        return st;
    if (cache_hit(b->path, side, &b->train_seconds)) {
        eb_dataset_free(&data->train); /* needed only for its digest here */
        data->have_train = 0;
        return eb_sha256_file(b->path, b->sha256, err);
    }
    {
        eb_train_request req;
        eb_progress_out prog;
        eb_arch arch;
        char label[200];
        double t0 = now_sec();
        if ((st = eb_mkdirs(cache, err)) || (st = eb_arch_named(j->arch, &arch, err)))
            return st;
        snprintf(label, sizeof label, "%s", j->name);
        eb_progress_out_init(&prog, log, label, o->quiet);
        memset(&req, 0, sizeof req);
        req.arch = &arch;
        req.arch_name = j->arch;
        req.train = &data->train;
        req.settings = &j->settings;
        req.seed = j->seed;
        req.threads = threads;
        req.progress = eb_progress_report;
        req.progress_ctx = &prog;
        st = eb_method_train_bundle(j->m->method, &req, b->path, err);
        eb_progress_out_finish(&prog);
        /* the training set (188 MB of floats) is not part of what the device
         * measures: release it before evaluation; the next training job
         * reloads it from the dataset cache */
        eb_dataset_free(&data->train);
        data->have_train = 0;
        if (st)
            return st;
        b->trained = 1;
        b->train_seconds = now_sec() - t0;
        cache_note_seconds(side, b->train_seconds);
    }
    return eb_sha256_file(b->path, b->sha256, err);
}

/* What compression a bundle carries: the share of zero weights a pruning
 * step reached and the bits per stored value (32 for f32 and the sparse
 * kinds' values). Read from the bundle itself, for every job, so plain
 * and compressed posteriors sit on the same axes. */
static eb_status add_compression(record *r, const eb_bundle *b, eb_error *err)
{
    const char *v;
    double sparsity = 0.0, bits = 32.0;
    eb_status st;
    if ((v = eb_bundle_meta_get(b, "prune.sparsity")))
        sparsity = strtod(v, NULL);
    switch (eb_bundle_storage(b)) {
    case EB_STORE_F16: bits = 16.0; break;
    case EB_STORE_INT8: bits = 8.0; break;
    default: break;
    }
    st = add_metric(r, "compression", "sparsity", sparsity, 1, "", NULL, err, "%s", "");
    if (!st)
        st = add_metric(r, "compression", "bits", bits, 0, "bits", NULL, err, "%s", "");
    return st;
}

/* The cache name of one transform step: its parent's bytes, the transform,
 * settings, seed, thread count and code. */
static eb_status step_hash(const char *parent_sha, const eb_transform *t,
                           const eb_settings *st, uint64_t seed, int threads, char hex[65],
                           eb_error *err)
{
    char text[6144], settings[4096];
    int w;
    eb_settings_text(st, settings, sizeof settings);
    w = snprintf(text, sizeof text,
                 "edgebayes-transform-v1\nparent=%s\ntransform=%s\nsettings=%s\nseed=%llu\n"
                 "threads=%d\ncode=%s %s\n",
                 parent_sha, t->name, settings, (unsigned long long)seed, threads, eb_version(),
                 eb_version_commit());
    if (w < 0 || (size_t)w >= sizeof text)
        return eb_error_set(err, EB_ERR_INTERNAL, "transform definition too long");
    return eb_sha256_buffer(text, (size_t)w, hex, err);
}

/* The bundle of a job: the method's (get_bundle), then for a chain job
 * each step applied to the previous bundle, every step cached by its own
 * hash, so chains sharing a prefix share its bundles. */
static eb_status get_job_bundle(const eb_run_options *o, const eb_suite *s, const eb_job *j,
                                int threads, eval_data *data, const char *cache, bundle_ref *b,
                                FILE *log, eb_error *err)
{
    eb_status st = get_bundle(o, s, j, threads, data, cache, b, log, err);
    b->transform_seconds = 0.0;
    if (st || !j->chain)
        return st;
    for (int i = 0; i < j->chain->n_steps; i++) {
        const eb_chain_step *step = &j->chain->steps[i];
        const eb_settings *set = &j->step_settings[i];
        char hash[65], path[1200], side[1300];
        double secs = NAN;
        if ((st = step_hash(b->sha256, step->transform, set, j->seed, threads, hash, err)))
            return st;
        if ((st = cache_paths(cache, hash, path, sizeof path, side, sizeof side, err)))
            return st;
        if (!cache_hit(path, side, &secs)) {
            eb_progress_out prog;
            char label[300];
            const eb_dataset *train = NULL;
            if (eb_transform_needs_train(step->transform, set)) {
                if ((st = data_train(s, data, err)))
                    return st;
                train = &data->train;
            }
            snprintf(label, sizeof label, "%s %s", j->name, step->transform->name);
            eb_progress_out_init(&prog, log, label, o->quiet);
            st = eb_transform_bundle(step->transform, b->path, train, set, j->seed, threads,
                                     eb_progress_report, &prog, path, &secs, err);
            eb_progress_out_finish(&prog);
            eb_dataset_free(&data->train);
            data->have_train = 0;
            if (st)
                return st;
            b->trained = 1;
            cache_note_seconds(side, secs);
        }
        b->transform_seconds += secs;
        snprintf(b->path, sizeof b->path, "%s", path);
        if ((st = eb_sha256_file(b->path, b->sha256, err)))
            return st;
    }
    return EB_OK;
}

/* The reference posterior's test predictive per seed, computed once. */
typedef struct ref_cache {
    int n;
    uint64_t seed[EB_SUITE_MAX_SEEDS];
    float *pbar[EB_SUITE_MAX_SEEDS]; /* (test n, C) */
    size_t C;
} ref_cache;

static void ref_cache_free(ref_cache *c)
{
    for (int i = 0; i < c->n; i++)
        eb_free(c->pbar[i]);
    c->n = 0;
}

/* Fidelity of job j to the suite's reference posterior (facet fidelity):
 * top-1 agreement and mean total variation of the test predictives, for
 * jobs on the reference's architecture and training subset (the same
 * model of the same data); the reference of the same seed. */
static eb_status eval_fidelity(const eb_run_options *o, const eb_suite *s, const eb_job *all,
                               int n_all, const eb_job *j, eb_device *dev, eval_data *data,
                               const char *cache, int threads, ref_cache *refs,
                               const float *pbar, record *r, FILE *log, eb_error *err)
{
    const eb_job *ref = NULL;
    float *rp = NULL;
    double agree, tv;
    eb_status st;
    if (!(s->facets & EB_FACET_FIDELITY) || !s->fidelity_reference[0] || !pbar ||
        (!j->chain && !strcmp(j->m->label, s->fidelity_reference)))
        return EB_OK;
    for (int i = 0; i < n_all && !ref; i++)
        if (!all[i].chain && !strcmp(all[i].m->label, s->fidelity_reference) &&
            all[i].seed == j->seed &&
            !strcmp(all[i].arch, j->arch))
            ref = &all[i];
    if (!ref || eb_settings_int(&ref->settings, "subset") != eb_settings_int(&j->settings,
                                                                                "subset"))
        return EB_OK; /* not the reference's model and data */
    for (int i = 0; i < refs->n; i++)
        if (refs->seed[i] == j->seed)
            rp = refs->pbar[i];
    if (!rp) {
        bundle_ref b;
        eb_device_load_timing timing;
        const eb_device_model *model;
        scored t;
        if (refs->n == EB_SUITE_MAX_SEEDS)
            return eb_error_set(err, EB_ERR_INTERNAL, "too many reference seeds");
        if ((st = get_bundle(o, s, ref, threads, data, cache, &b, log, err)))
            return eb_error_prefix(err, "fidelity reference %s: ", ref->name);
        if ((st = eb_device_load(dev, b.path, &timing, err)))
            return st;
        model = eb_device_model_info(dev);
        refs->C = (size_t)model->n_classes; /* read before the unload clears it */
        st = predict_scored(dev, data->test_view.x, data->test_view.n,
                            s->draws ? s->draws : model->default_draws, refs->C, ref->seed, &t,
                            err);
        eb_device_unload(dev);
        if (st)
            return st;
        refs->seed[refs->n] = j->seed;
        refs->pbar[refs->n++] = t.pbar;
        rp = t.pbar;
        t.pbar = NULL;
        scored_free(&t);
    }
    /* the job and its reference predict the same classes of the same test set */
    eb_diag_fidelity(pbar, rp, data->test_view.n, refs->C, &agree, &tv);
    /* the reference is the suite's [fidelity] reference, one per suite */
    if ((st = add_metric(r, "fidelity", "agreement", agree, 1, "", NULL, err, "%s", "")))
        return st;
    return add_metric(r, "fidelity", "total_variation", tv, 0, "", NULL, err, "%s", "");
}

/* JSON object of a bundle's metadata for the artifacts table. */
static char *bundle_meta_json(const eb_bundle *b)
{
    size_t cap = 4096, used = 0;
    char *out = eb_malloc(cap);
    if (!out)
        return NULL;
    out[used++] = '{';
    for (size_t i = 0; i < eb_bundle_meta_count(b); i++) {
        const char *k, *v;
        size_t need;
        eb_bundle_meta_at(b, i, &k, &v);
        if (!strncmp(k, "trace.", 6))
            continue; /* long per-chain traces stay in the bundle */
        need = used + 2 * (strlen(k) + strlen(v)) + 16;
        if (need >= cap) {
            char *grown;
            while (cap <= need)
                cap *= 2;
            grown = eb_realloc(out, cap);
            if (!grown) {
                eb_free(out);
                return NULL;
            }
            out = grown;
        }
        if (used > 1)
            out[used++] = ',';
        out[used++] = '"';
        for (const char *p = k; *p; p++)
            out[used++] = *p;
        out[used++] = '"';
        out[used++] = ':';
        out[used++] = '"';
        for (const char *p = v; *p; p++) {
            if (*p == '"' || *p == '\\')
                out[used++] = '\\';
            out[used++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        }
        out[used++] = '"';
    }
    out[used++] = '}';
    out[used] = '\0';
    return out;
}

/* A job's settings as a JSON object: numbers for numeric settings. */
static void settings_json(const eb_settings *st, char *buf, size_t len)
{
    size_t used = 0;
    int w = snprintf(buf, len, "{");
    used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < st->n && used < len; i++) {
        const int quoted = st->spec[i].type == EB_SET_CHOICE;
        w = snprintf(buf + used, len - used, "%s\"%s\":%s%s%s", i ? "," : "", st->spec[i].key,
                     quoted ? "\"" : "", st->value[i], quoted ? "\"" : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (used + 2 <= len)
        snprintf(buf + used, len - used, "}");
}

/* ---- the run ------------------------------------------------------------ */

static void logf_(FILE *log, int quiet, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void logf_(FILE *log, int quiet, const char *fmt, ...)
{
    va_list ap;
    if (quiet)
        return;
    va_start(ap, fmt);
    vfprintf(log, fmt, ap);
    va_end(ap);
    fflush(log);
}

static eb_status open_device(const eb_suite *s, int threads, eb_device **dev, eb_error *err)
{
    eb_device_config cfg;
    eb_device_config_default(&cfg);
    cfg.threads = threads;
    cfg.max_batch = s->throughput_batch > 256 ? s->throughput_batch : 256;
    if (!strcmp(s->device, "cpu"))
        snprintf(cfg.options, sizeof cfg.options, "strategy=%s", s->strategy);
    return eb_device_open(s->device, &cfg, dev, err);
}

static int effective_threads(const eb_suite *s, int override)
{
    long n;
    if (override > 0)
        return override;
    if (s->threads > 0)
        return s->threads;
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static eb_status begin_run(eb_results *db, const eb_suite *s, const char *label,
                           const char *shard, eb_device *dev, int threads, int64_t *run_id,
                           int *resumed, eb_error *err)
{
    eb_results_machine mach;
    eb_results_provenance p;
    eb_device_info info;
    size_t nconv;
    const eb_results_convention *conv = eb_runner_conventions(&nconv);
    char env[512];
    eb_status st = eb_results_conventions(db, conv, nconv, err);
    if (st)
        return st;
    if ((st = eb_results_machine_probe(&mach, err)) || (st = eb_device_describe(dev, &info, err)))
        return st;
    snprintf(env, sizeof env,
             "{\"threads\":%d,\"device\":\"%s\",\"device_threads\":%d,\"cpus\":\"%s\","
             "\"strategy\":\"%s\",\"injected_slowdown\":%g}",
             threads, info.backend, info.threads, info.cpus, info.strategy,
             info.injected_slowdown);
    memset(&p, 0, sizeof p);
    eb_results_provenance_set_machine(&p, &mach);
    p.label = label;
    p.suite = s->name;
    p.suite_sha256 = s->sha256;
    p.shard = shard;
    p.environment = env;
    return eb_results_run_resume_or_begin(db, &p, run_id, resumed, err);
}

static eb_status register_datasets(eb_results *db, int64_t run_id, const eval_data *d,
                                   eb_error *err)
{
    const struct {
        const eb_dataset *ds;
        const char *role;
    } sets[] = {{&d->test, "test"}, {&d->ood, "ood"}, {&d->train, "train"}};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        eb_results_artifact a;
        int64_t id;
        char name[96];
        eb_status st;
        if (!sets[i].ds->n)
            continue;
        snprintf(name, sizeof name, "%s/%s", sets[i].ds->name, sets[i].ds->split);
        memset(&a, 0, sizeof a);
        a.kind = "dataset";
        a.sha256 = sets[i].ds->digest;
        a.name = name;
        a.bytes = (int64_t)(sets[i].ds->n * ((size_t)sets[i].ds->h * sets[i].ds->w + 1));
        a.meta = "{}";
        if ((st = eb_results_artifact_put(db, &a, &id, err)) ||
            (st = eb_results_run_artifact(db, run_id, id, sets[i].role, err)))
            return st;
    }
    return EB_OK;
}

eb_status eb_run_select_jobs(const char *patterns, eb_job *jobs, int *n, eb_error *err)
{
    char pat[512];
    size_t len = strlen(patterns);
    int kept = 0;
    if (len >= sizeof pat)
        return eb_error_set(err, EB_ERR_ARG, "job patterns '%.40s...' are longer than %zu "
                            "characters", patterns, sizeof pat - 1);
    /* every pattern must be non-empty and match some job */
    for (const char *p = patterns;; p++) {
        const char *end = strchr(p, ',');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        int hit = 0;
        memcpy(pat, p, l);
        pat[l] = '\0';
        if (!l)
            return eb_error_set(err, EB_ERR_ARG, "job patterns '%s' contain an empty pattern",
                                patterns);
        for (int i = 0; i < *n && !hit; i++)
            hit = !fnmatch(pat, jobs[i].name, 0);
        if (!hit)
            return eb_error_set(err, EB_ERR_ARG, "job pattern '%s' matches none of the %d jobs "
                                "(names like '%s'; list them with --list)", pat, *n,
                                *n ? jobs[0].name : "method/arch/s1");
        if (!end)
            break;
        p = end;
    }
    for (int i = 0; i < *n; i++) {
        int hit = 0;
        for (const char *p = patterns; !hit;) {
            const char *end = strchr(p, ',');
            size_t l = end ? (size_t)(end - p) : strlen(p);
            memcpy(pat, p, l);
            pat[l] = '\0';
            hit = !fnmatch(pat, jobs[i].name, 0);
            if (!end)
                break;
            p = end + 1;
        }
        if (hit)
            jobs[kept++] = jobs[i];
    }
    *n = kept;
    return EB_OK;
}

/* The suite and the jobs o selects (shard, patterns); the caller frees
 * both with eb_free. */
static eb_status selected_jobs(const eb_run_options *o, eb_suite **suite, eb_job **jobs, int *n,
                               eb_error *err)
{
    const int si = o->shard_index ? o->shard_index : 1, sc = o->shard_count ? o->shard_count : 1;
    eb_suite *s = eb_malloc(sizeof *s);
    eb_status st;
    *suite = NULL;
    *jobs = NULL;
    *n = 0;
    if (!s)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the suite");
    if ((st = eb_suite_load(o->suite ? o->suite : "quick", s, err)))
        goto fail;
    if (o->strategy) /* before the jobs: a strategy is part of their keys */
        snprintf(s->strategy, sizeof s->strategy, "%s", o->strategy);
    if ((st = eb_suite_jobs(s, si, sc, jobs, n, err)))
        goto fail;
    if (o->jobs && (st = eb_run_select_jobs(o->jobs, *jobs, n, err)))
        goto fail;
    *suite = s;
    return EB_OK;
fail:
    eb_free(*jobs);
    *jobs = NULL;
    *n = 0;
    eb_free(s);
    return st;
}

eb_status eb_run_list_jobs(const eb_run_options *o, FILE *fp, eb_error *err)
{
    eb_suite *s;
    eb_job *jobs;
    int n;
    eb_status st = selected_jobs(o, &s, &jobs, &n, err);
    if (st)
        return st;
    for (int i = 0; i < n; i++)
        fprintf(fp, "%d %s %s\n", jobs[i].index, jobs[i].name, jobs[i].key);
    eb_free(jobs);
    eb_free(s);
    return EB_OK;
}

eb_status eb_run_suite(const eb_run_options *o, eb_run_summary *sum, eb_error *err)
{
    FILE *log = o->log ? o->log : stderr;
    eb_suite *s = NULL;
    eb_results *db = NULL;
    eb_device *dev = NULL;
    eb_job *jobs = NULL, *all_jobs = NULL;
    int n_all = 0;
    ref_cache refs;
    eval_data data;
    char cache[1024], shard[32], dbdir[1024], label[768];
    const char *db_path = o->db_path ? o->db_path : "out/results.db";
    int n_jobs = 0, threads, si = o->shard_index ? o->shard_index : 1,
        sc = o->shard_count ? o->shard_count : 1;
    eb_status st;

    memset(sum, 0, sizeof *sum);
    memset(&data, 0, sizeof data);
    memset(&refs, 0, sizeof refs);
    if ((st = selected_jobs(o, &s, &jobs, &n_jobs, err)) ||
        (st = eb_suite_jobs(s, 1, 1, &all_jobs, &n_all, err)))
        goto done;
    /* a filtered run is a run of its own (resume and finish) */
    if (o->jobs)
        snprintf(label, sizeof label, "%s%sjobs=%s", o->label ? o->label : "",
                 o->label ? " " : "", o->jobs);
    else
        snprintf(label, sizeof label, "%s", o->label ? o->label : "");
    sum->jobs_total = n_jobs;
    threads = effective_threads(s, o->threads);
    if (o->cache_dir)
        snprintf(cache, sizeof cache, "%s", o->cache_dir);
    else if ((st = default_cache(cache, sizeof cache, err)))
        goto done;
    snprintf(shard, sizeof shard, "%d/%d", si, sc);
    /* the database's directory */
    snprintf(dbdir, sizeof dbdir, "%s", db_path);
    {
        char *slash = strrchr(dbdir, '/');
        if (slash && slash != dbdir) {
            *slash = '\0';
            if ((st = eb_mkdirs(dbdir, err)))
                goto done;
        }
    }
    if ((st = data_load(s, &data, err)) || (st = open_device(s, threads, &dev, err)) ||
        (st = eb_results_open(db_path, &db, err)) ||
        (st = begin_run(db, s, label[0] ? label : NULL, shard, dev, threads, &sum->run_id,
                          &sum->resumed, err)) ||
        (st = register_datasets(db, sum->run_id, &data, err)))
        goto done;
    logf_(log, o->quiet, "run %lld%s: suite %s (%s), shard %s, %d jobs, %d threads, db %s\n",
          (long long)sum->run_id, sum->resumed ? " (resumed)" : "", s->name, s->source, shard,
          n_jobs, threads, db_path);
    for (int i = 0; i < n_jobs; i++) {
        eb_job *j = &jobs[i];
        eb_results_scope scope = {sum->run_id, NULL, NULL};
        int found = 0;
        bundle_ref b;
        record rec;
        eb_error jerr;
        uint32_t draws = 0;
        double t0 = now_sec();
        char settings[4096], *meta = NULL;
        int64_t job_id, bundle_id = 0;
        eb_results_job_def def;
        eb_bundle *opened = NULL;

        if ((st = eb_results_job_done(db, &scope, j->key, &found, err)))
            goto done;
        if (found) {
            sum->jobs_skipped++;
            logf_(log, o->quiet, "[%d/%d] %s: done earlier, skipped\n", i + 1, n_jobs, j->name);
            continue;
        }
        memset(&rec, 0, sizeof rec);
        eb_error_clear(&jerr);
        logf_(log, o->quiet, "[%d/%d] %s\n", i + 1, n_jobs, j->name);
        st = get_job_bundle(o, s, j, threads, &data, cache, &b, log, &jerr);
        if (!st) {
            if (b.trained)
                sum->bundles_trained++;
            else
                sum->bundles_cached++;
            float *pbar = NULL;
            st = evaluate(dev, b.path, s, &data, j->seed, &draws, &rec, &pbar, &jerr);
            eb_device_unload(dev);
            if (!st)
                st = eval_fidelity(o, s, all_jobs, n_all, j, dev, &data, cache, threads, &refs,
                                   pbar, &rec, log, &jerr);
            eb_free(pbar);
        }
        if (!st && isfinite(b.train_seconds))
            st = add_metric(&rec, "training", "seconds", b.train_seconds, 0, "s", NULL, &jerr,
                            "%s", "");
        if (!st && j->chain && isfinite(b.transform_seconds))
            st = add_metric(&rec, "training", "transform_seconds", b.transform_seconds, 0, "s",
                            NULL, &jerr, "%s", "");
        if (!st)
            st = add_metric(&rec, "training", "from_cache", !b.trained, 0, "", NULL, &jerr, "%s",
                            "");
        /* one open serves the compression facet and the artifact's metadata */
        if (!st)
            st = eb_bundle_open(b.path, EB_BUNDLE_SKIP_TENSOR_CHECK, &opened, &jerr);
        if (!st)
            st = add_compression(&rec, opened, &jerr);
        if (opened) {
            meta = bundle_meta_json(opened);
            eb_bundle_close(opened);
            opened = NULL;
        }
        /* register the bundle and store everything in one transaction */
        settings_json(&j->settings, settings, sizeof settings);
        memset(&def, 0, sizeof def);
        def.key = j->key;
        def.name = j->name;
        def.method = j->m->method->name;
        def.chain = j->chain ? j->chain->text : "";
        def.arch = j->arch;
        def.seed = j->seed;
        def.device = s->device;
        def.draws = draws;
        def.settings = settings;
        if (!st) {
            eb_results_artifact a;
            struct stat stt;
            memset(&a, 0, sizeof a);
            a.kind = "bundle";
            a.sha256 = b.sha256;
            a.name = strrchr(b.path, '/') ? strrchr(b.path, '/') + 1 : b.path;
            a.bytes = stat(b.path, &stt) == 0 ? (int64_t)stt.st_size : 0;
            a.meta = meta ? meta : "{}";
            st = eb_results_artifact_put(db, &a, &bundle_id, err);
            if (!st)
                st = eb_results_run_artifact(db, sum->run_id, bundle_id, "bundle", err);
            eb_free(meta);
            meta = NULL;
            if (st) {
                record_free(&rec);
                goto done;
            }
            def.bundle_id = bundle_id;
            if ((st = eb_results_job_begin(db, sum->run_id, &def, &job_id, err)) ||
                (st = record_store(db, &rec, err)) ||
                (st = eb_results_job_commit(db, now_sec() - t0, err))) {
                eb_results_job_abort(db);
                record_free(&rec);
                goto done;
            }
            sum->jobs_done++;
            logf_(log, o->quiet, "[%d/%d] %s: done in %.1f s (%zu metrics)\n", i + 1, n_jobs,
                  j->name, now_sec() - t0, rec.n_m);
        } else {
            /* the job failed: store it as failed with its message */
            logf_(log, o->quiet, "[%d/%d] %s: FAILED: %s\n", i + 1, n_jobs, j->name,
                  eb_error_message(&jerr));
            if ((st = eb_results_job_begin(db, sum->run_id, &def, &job_id, err)) ||
                (st = eb_results_job_fail(db, eb_error_message(&jerr), now_sec() - t0, err))) {
                eb_results_job_abort(db);
                eb_free(meta);
                record_free(&rec);
                goto done;
            }
            sum->jobs_failed++;
        }
        eb_free(meta);
        record_free(&rec);
    }
    st = eb_results_run_finish(db, sum->run_id, err);
done:
    eb_free(jobs);
    eb_free(all_jobs);
    ref_cache_free(&refs);
    eb_device_close(dev);
    eb_results_close(db);
    data_free(&data);
    eb_free(s);
    return st;
}

/* ---- eval: one bundle ------------------------------------------------- */

eb_status eb_eval_bundle(const eb_eval_options *o, eb_eval_metric **metrics, size_t *n,
                         int64_t *run_id, eb_error *err)
{
    FILE *log = o->log ? o->log : stderr;
    eb_suite *s;
    eb_device *dev = NULL;
    eb_results *db = NULL;
    eval_data data;
    record rec;
    uint32_t draws = 0;
    int threads;
    char sha[65];
    eb_status st;
    double t0 = now_sec();

    *metrics = NULL;
    *n = 0;
    if (run_id)
        *run_id = 0;
    memset(&rec, 0, sizeof rec);
    memset(&data, 0, sizeof data);
    s = eb_malloc(sizeof *s);
    if (!s)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the suite");
    if ((st = eb_suite_load(o->suite ? o->suite : "quick", s, err)))
        goto done;
    if (o->device)
        snprintf(s->device, sizeof s->device, "%s", o->device);
    if (o->strategy)
        snprintf(s->strategy, sizeof s->strategy, "%s", o->strategy);
    threads = effective_threads(s, o->threads);
    if ((st = eb_sha256_file(o->bundle, sha, err)) || (st = data_load(s, &data, err)) ||
        (st = open_device(s, threads, &dev, err)))
        goto done;
    logf_(log, o->quiet, "evaluating %s on %s (%d threads)\n", o->bundle, s->device, threads);
    if ((st = evaluate(dev, o->bundle, s, &data, 1, &draws, &rec, NULL, err)))
        goto done;
    if (o->db_path) {
        int64_t rid, job_id, bundle_id;
        int resumed;
        eb_results_artifact a;
        eb_results_job_def def;
        char key[65], keytext[256], *meta, name[300];
        char method[64] = "unknown", arch[64] = "unknown";
        eb_bundle *b;
        struct stat stt;
        /* the job is this bundle under this suite's evaluation options */
        snprintf(keytext, sizeof keytext, "edgebayes-eval-v1\n%s\n%s\n%s\n", sha, s->sha256,
                 s->device);
        snprintf(s->name, sizeof s->name, "eval");
        if ((st = eb_sha256_buffer(keytext, strlen(keytext), key, err)) ||
            (st = eb_results_open(o->db_path, &db, err)) ||
            (st = begin_run(db, s, o->label, "1/1", dev, threads, &rid, &resumed, err)) ||
            (st = register_datasets(db, rid, &data, err)))
            goto done;
        /* one open gives the artifact's metadata and the job's method and arch */
        meta = NULL;
        if (eb_bundle_open(o->bundle, EB_BUNDLE_SKIP_TENSOR_CHECK, &b, NULL) == EB_OK) {
            meta = bundle_meta_json(b);
            if (eb_bundle_meta_get(b, "method"))
                snprintf(method, sizeof method, "%s", eb_bundle_meta_get(b, "method"));
            if (eb_bundle_meta_get(b, "arch"))
                snprintf(arch, sizeof arch, "%s", eb_bundle_meta_get(b, "arch"));
            eb_bundle_close(b);
        }
        memset(&a, 0, sizeof a);
        a.kind = "bundle";
        a.sha256 = sha;
        a.name = strrchr(o->bundle, '/') ? strrchr(o->bundle, '/') + 1 : o->bundle;
        a.bytes = stat(o->bundle, &stt) == 0 ? (int64_t)stt.st_size : 0;
        a.meta = meta ? meta : "{}";
        st = eb_results_artifact_put(db, &a, &bundle_id, err);
        eb_free(meta);
        if (st || (st = eb_results_run_artifact(db, rid, bundle_id, "bundle", err)))
            goto done;
        {
            snprintf(name, sizeof name, "%s/%s/eval", method, arch);
            memset(&def, 0, sizeof def);
            def.key = key;
            def.name = name;
            def.method = method;
            def.chain = "";
            def.arch = arch;
            def.seed = 1;
            def.device = s->device;
            def.draws = draws;
            def.settings = "";
            def.bundle_id = bundle_id;
            if ((st = eb_results_job_begin(db, rid, &def, &job_id, err)) ||
                (st = record_store(db, &rec, err)) ||
                (st = eb_results_job_commit(db, now_sec() - t0, err)) ||
                (st = eb_results_run_finish(db, rid, err))) {
                eb_results_job_abort(db);
                goto done;
            }
        }
        if (run_id)
            *run_id = rid;
    }
    *metrics = eb_calloc(rec.n_m ? rec.n_m : 1, sizeof **metrics);
    if (!*metrics) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the results");
        goto done;
    }
    for (size_t i = 0; i < rec.n_m; i++) {
        eb_eval_metric *m = &(*metrics)[i];
        snprintf(m->facet, sizeof m->facet, "%s", rec.m[i].facet);
        snprintf(m->name, sizeof m->name, "%s", rec.m[i].name);
        snprintf(m->context, sizeof m->context, "%s", rec.m[i].context);
        snprintf(m->unit, sizeof m->unit, "%s", rec.m[i].unit);
        m->value = rec.m[i].value;
        m->has_ci = rec.m[i].has_ci;
        m->ci_low = rec.m[i].lo;
        m->ci_high = rec.m[i].hi;
    }
    *n = rec.n_m;
done:
    record_free(&rec);
    eb_device_close(dev);
    eb_results_close(db);
    data_free(&data);
    eb_free(s);
    return st;
}
