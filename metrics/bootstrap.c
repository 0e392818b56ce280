/* bootstrap.c: percentile bootstrap confidence intervals for any metric
 * given as a callback over a resample of example indices, a paired
 * variant that resamples positives and negatives apart, and ready-made
 * callbacks for the standard quality and detection metrics. Conventions:
 * docs/metrics.md ("Bootstrap intervals"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_rng.h"
#include "metrics/eb_metrics.h"
#include "metrics/metrics_internal.h"

double eb_metric_quantile(const double *sorted, size_t n, double q)
{
    double h, t, a, b;
    size_t i;
    if (n == 1 || q <= 0.0)
        return sorted[0];
    if (q >= 1.0)
        return sorted[n - 1];
    h = (double)(n - 1) * q;
    i = (size_t)h;
    if (i >= n - 1)
        return sorted[n - 1];
    t = h - (double)i;
    a = sorted[i];
    b = sorted[i + 1];
    /* numpy's _lerp: from the nearer end, so t = 1 gives b exactly */
    return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1.0 - t);
}

static int by_value(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static eb_status check_boot(size_t n, size_t B, double level, const char *what, eb_error *err)
{
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s needs at least one example to resample (got 0)",
                            what);
    if (B < 2)
        return eb_error_set(err, EB_ERR_ARG, "%s needs at least 2 resamples (got %zu)", what, B);
    if (!(level > 0.0 && level < 1.0))
        return eb_error_set(err, EB_ERR_ARG, "%s: level %g is outside (0, 1)", what, level);
    return EB_OK;
}

/* The interval from the B values (sorted here). */
static void percentile_interval(double *vals, size_t B, double level, double *lo, double *hi)
{
    qsort(vals, B, sizeof *vals, by_value);
    *lo = eb_metric_quantile(vals, B, (1.0 - level) / 2.0);
    *hi = eb_metric_quantile(vals, B, (1.0 + level) / 2.0);
}

/* Checks one resample's status and value and stores the value. */
static eb_status boot_value(eb_status st, double v, size_t b, size_t B, double *vals,
                            eb_error *err)
{
    if (st)
        return eb_error_prefix(err, "bootstrap resample %zu of %zu: ", b + 1, B);
    if (isnan(v))
        return eb_error_set(err, EB_ERR_NUMERIC, "bootstrap resample %zu of %zu: the metric is NaN",
                            b + 1, B);
    vals[b] = v;
    return EB_OK;
}

eb_status eb_metric_bootstrap(eb_metric_fn fn, void *ctx, size_t n, size_t B, double level,
                              uint64_t seed, double *lo, double *hi, eb_error *err)
{
    size_t *idx = NULL, bytes;
    double *vals = NULL;
    eb_status st = check_boot(n, B, level, "bootstrap", err);
    eb_rng r;

    if (st)
        return st;
    if (!fn)
        return eb_error_set(err, EB_ERR_ARG, "bootstrap: the metric callback is required");
    if (eb_size_mul(n, sizeof *idx, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "bootstrap: %zu examples overflow", n);
    idx = eb_malloc(bytes);
    vals = eb_calloc(B, sizeof *vals);
    if (!idx || !vals) {
        eb_free(idx);
        eb_free(vals);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "bootstrap: out of memory for %zu indices and %zu values", n, B);
    }
    eb_rng_seed(&r, seed, EB_STREAM_BOOTSTRAP);
    for (size_t b = 0; b < B && !st; b++) {
        double v = NAN;
        for (size_t i = 0; i < n; i++)
            idx[i] = (size_t)eb_rng_below(&r, n);
        st = fn(ctx, idx, n, &v, err); /* before boot_value reads v */
        st = boot_value(st, v, b, B, vals, err);
    }
    if (!st)
        percentile_interval(vals, B, level, lo, hi);
    eb_free(idx);
    eb_free(vals);
    return st;
}

eb_status eb_metric_bootstrap_paired(eb_metric_pair_fn fn, void *ctx, size_t npos, size_t nneg,
                                     size_t B, double level, uint64_t seed, double *lo,
                                     double *hi, eb_error *err)
{
    size_t *idx = NULL, bytes;
    double *vals = NULL;
    eb_status st;
    eb_rng r;

    if (npos == 0 || nneg == 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "paired bootstrap needs positives and negatives (got %zu and %zu)",
                            npos, nneg);
    st = check_boot(npos + nneg, B, level, "paired bootstrap", err);
    if (st)
        return st;
    if (!fn)
        return eb_error_set(err, EB_ERR_ARG, "paired bootstrap: the metric callback is required");
    if (eb_size_mul(npos + nneg, sizeof *idx, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "paired bootstrap: %zu + %zu examples overflow", npos,
                            nneg);
    idx = eb_malloc(bytes);
    vals = eb_calloc(B, sizeof *vals);
    if (!idx || !vals) {
        eb_free(idx);
        eb_free(vals);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "paired bootstrap: out of memory for %zu indices and %zu values",
                            npos + nneg, B);
    }
    eb_rng_seed(&r, seed, EB_STREAM_BOOTSTRAP);
    for (size_t b = 0; b < B && !st; b++) {
        double v = NAN;
        for (size_t i = 0; i < npos; i++)
            idx[i] = (size_t)eb_rng_below(&r, npos);
        for (size_t i = 0; i < nneg; i++)
            idx[npos + i] = (size_t)eb_rng_below(&r, nneg);
        st = fn(ctx, idx, npos, idx + npos, nneg, &v, err);
        st = boot_value(st, v, b, B, vals, err);
    }
    if (!st)
        percentile_interval(vals, B, level, lo, hi);
    eb_free(idx);
    eb_free(vals);
    return st;
}

/* ----------------------------------------------- ready-made metrics -- */

static const char *const quality_names[EB_QUALITY_COUNT_] = {
    /* [EB_QUALITY_ACCURACY] = */ "accuracy",
    /* [EB_QUALITY_NLL] = */ "nll",
    /* [EB_QUALITY_BRIER] = */ "brier",
    /* [EB_QUALITY_ECE] = */ "ece",
    /* [EB_QUALITY_MCE] = */ "mce",
    /* [EB_QUALITY_ECE_ADAPTIVE] = */ "ece-adaptive",
    /* [EB_QUALITY_ECE_CLASSWISE] = */ "ece-classwise",
};

static const char *const ood_names[EB_OOD_COUNT_] = {
    /* [EB_OOD_AUROC] = */ "auroc",
    /* [EB_OOD_AUPR] = */ "aupr",
    /* [EB_OOD_FPR95] = */ "fpr95",
};

const char *eb_quality_metric_name(eb_quality_metric m)
{
    return (int)m >= 0 && m < EB_QUALITY_COUNT_ ? quality_names[m] : NULL;
}

const char *eb_ood_metric_name(eb_ood_metric m)
{
    return (int)m >= 0 && m < EB_OOD_COUNT_ ? ood_names[m] : NULL;
}

/* Context of the quality callback: the arrays (checked once) and, for
 * the equal-mass ECE, the examples sorted once plus the multiplicities
 * of a resample, so a resample costs O(n) and no sort. */
typedef struct quality_ctx {
    eb_quality_metric m;
    const float *pbar; /* (n, C) */
    const uint8_t *y;  /* (n) */
    size_t n, C;
    eb__conf *sorted;  /* (n), EB_QUALITY_ECE_ADAPTIVE only */
    uint32_t *w;       /* (n), multiplicity of each example */
} quality_ctx;

/* Multiplicities of the indices idx (m) into w (n). */
static void multiplicities(uint32_t *w, size_t n, const size_t *idx, size_t m)
{
    memset(w, 0, n * sizeof *w);
    for (size_t i = 0; i < m; i++)
        w[idx[i]]++;
}

static eb_status quality_fn(void *vctx, const size_t *idx, size_t n, double *value, eb_error *err)
{
    quality_ctx *q = vctx;
    double ece;
    (void)err;
    switch (q->m) {
    case EB_QUALITY_ACCURACY:
        *value = eb__accuracy(q->pbar, q->y, idx, n, q->C);
        break;
    case EB_QUALITY_NLL:
        *value = eb__nll(q->pbar, q->y, idx, n, q->C);
        break;
    case EB_QUALITY_BRIER:
        *value = eb__brier(q->pbar, q->y, idx, n, q->C);
        break;
    case EB_QUALITY_ECE:
        eb__ece_width(q->pbar, q->y, idx, n, q->C, EB_METRIC_ECE_BINS, value, NULL, NULL);
        break;
    case EB_QUALITY_MCE:
        eb__ece_width(q->pbar, q->y, idx, n, q->C, EB_METRIC_ECE_BINS, &ece, value, NULL);
        break;
    case EB_QUALITY_ECE_ADAPTIVE:
        multiplicities(q->w, q->n, idx, n);
        eb__ece_mass_sorted(q->sorted, q->w, q->n, n, EB_METRIC_ECE_BINS, value, NULL, NULL);
        break;
    case EB_QUALITY_ECE_CLASSWISE:
        eb__ece_classwise(q->pbar, q->y, idx, n, q->C, EB_METRIC_ECE_BINS, value);
        break;
    default:
        break; /* rejected before the resamples */
    }
    return EB_OK;
}

eb_status eb_metric_bootstrap_quality(eb_quality_metric m, const float *pbar, const uint8_t *y,
                                      size_t n, size_t C, size_t B, double level, uint64_t seed,
                                      double *lo, double *hi, eb_error *err)
{
    quality_ctx q = {m, pbar, y, n, C, NULL, NULL};
    const char *name = eb_quality_metric_name(m);
    eb_status st;

    if (!name)
        return eb_error_set(err, EB_ERR_ARG, "bootstrap: unknown quality metric %d (known: 0..%d)",
                            (int)m, EB_QUALITY_COUNT_ - 1);
    if (n == 0 || C == 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "bootstrap of %s needs examples and classes (got %zu and %zu)", name, n,
                            C);
    st = eb__check_labels(y, n, C, name, err);
    if (!st && m >= EB_QUALITY_ECE)
        st = eb__check_probs(pbar, n, C, name, err); /* binning needs [0, 1] */
    if (st)
        return eb_error_prefix(err, "bootstrap: ");
    if (m == EB_QUALITY_ECE_ADAPTIVE) {
        size_t bytes;
        if (eb_size_mul(n, sizeof *q.sorted, &bytes))
            return eb_error_set(err, EB_ERR_ARG, "bootstrap of %s: %zu examples overflow", name,
                                n);
        q.sorted = eb_malloc(bytes);
        q.w = eb_malloc(n * sizeof *q.w); /* smaller than q.sorted */
        if (!q.sorted || !q.w) {
            eb_free(q.sorted);
            eb_free(q.w);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "bootstrap of %s: out of memory for %zu examples", name, n);
        }
        eb__conf_fill(q.sorted, pbar, y, NULL, NULL, n, C);
        eb__conf_sort(q.sorted, n);
    }
    st = eb_metric_bootstrap(quality_fn, &q, n, B, level, seed, lo, hi, err);
    eb_free(q.sorted);
    eb_free(q.w);
    if (st)
        return eb_error_prefix(err, "bootstrap of %s: ", name);
    return EB_OK;
}

/* Context of the detection callback: the scores sorted once, and the
 * multiplicities of a resample's positives and negatives. */
typedef struct ood_ctx {
    eb_ood_metric m;
    size_t npos, nneg;
    eb__scored *sorted; /* (npos + nneg) */
    uint32_t *wpos;     /* (npos) */
    uint32_t *wneg;     /* (nneg) */
} ood_ctx;

static eb_status ood_fn(void *vctx, const size_t *pos_idx, size_t npos, const size_t *neg_idx,
                        size_t nneg, double *value, eb_error *err)
{
    ood_ctx *o = vctx;
    eb_ood_result r;
    (void)err;
    multiplicities(o->wpos, o->npos, pos_idx, npos);
    multiplicities(o->wneg, o->nneg, neg_idx, nneg);
    eb__ood_sweep(o->sorted, o->npos + o->nneg, o->wpos, o->wneg, npos, nneg,
                  EB_METRIC_FPR_AT_TPR, &r, NULL, NULL, NULL);
    *value = o->m == EB_OOD_AUROC ? r.auroc : o->m == EB_OOD_AUPR ? r.aupr : r.fpr95;
    return EB_OK;
}

eb_status eb_metric_bootstrap_ood(eb_ood_metric m, const double *pos, size_t npos,
                                  const double *neg, size_t nneg, size_t B, double level,
                                  uint64_t seed, double *lo, double *hi, eb_error *err)
{
    ood_ctx o = {m, npos, nneg, NULL, NULL, NULL};
    const char *name = eb_ood_metric_name(m);
    size_t bytes;
    eb_status st;

    if (!name)
        return eb_error_set(err, EB_ERR_ARG, "bootstrap: unknown OOD metric %d (known: 0..%d)",
                            (int)m, EB_OOD_COUNT_ - 1);
    st = eb__check_scores(pos, npos, neg, nneg, name, err);
    if (st)
        return eb_error_prefix(err, "bootstrap: ");
    if (eb_size_mul(npos + nneg, sizeof *o.sorted, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "bootstrap of %s: %zu + %zu scores overflow", name,
                            npos, nneg);
    o.sorted = eb_malloc(bytes);
    o.wpos = eb_malloc((npos + nneg) * sizeof *o.wpos); /* smaller than o.sorted */
    if (!o.sorted || !o.wpos) {
        eb_free(o.sorted);
        eb_free(o.wpos);
        return eb_error_set(err, EB_ERR_NOMEM, "bootstrap of %s: out of memory for %zu scores",
                            name, npos + nneg);
    }
    o.wneg = o.wpos + npos;
    eb__scored_fill(o.sorted, pos, npos, neg, nneg);
    st = eb_metric_bootstrap_paired(ood_fn, &o, npos, nneg, B, level, seed, lo, hi, err);
    eb_free(o.sorted);
    eb_free(o.wpos);
    if (st)
        return eb_error_prefix(err, "bootstrap of %s: ", name);
    return EB_OK;
}
