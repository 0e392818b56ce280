/* calibration.c: expected calibration error with equal-width and
 * equal-mass bins, maximum calibration error, classwise ECE (static
 * calibration error) and the reliability bins behind them. The
 * conventions are pinned in docs/metrics.md ("Calibration"). */
#include <math.h>
#include <stdlib.h>

#include "common/eb_alloc.h"
#include "metrics/eb_metrics.h"
#include "metrics/metrics_internal.h"

/* Bin of p in [0, 1] among `bins` right-closed equal-width bins:
 * (b/bins, (b+1)/bins] is bin b, and 0 joins bin 0; that is,
 * ceil(p * bins) - 1, written as floor with an integral-edge check (no
 * libm call in the bootstrap's inner loop). For a float p the product
 * p * bins (bins <= EB_METRIC_MAX_BINS, 11 bits) is exact in double, so a
 * confidence exactly on an edge k/bins lands in bin k - 1 without
 * rounding doubt. */
static size_t width_bin(double p, size_t bins)
{
    double t = p * (double)bins;
    size_t b = (size_t)t; /* floor, t >= 0 */
    if ((double)b == t && b > 0)
        b--; /* on the edge b/bins: the bin it closes */
    return b < bins ? b : bins - 1;
}

/* Per-bin sums, kept on the stack: calibration allocates nothing. */
typedef struct bin_acc {
    size_t count;
    double conf;    /* sum of confidences */
    double correct; /* sum of correctness */
} bin_acc;

/* ECE, MCE and bins from filled accumulators; n is the total count. */
static void finish_bins(const bin_acc *acc, size_t bins, size_t n, double *ece, double *mce)
{
    double e = 0.0, m = 0.0;
    for (size_t b = 0; b < bins; b++) {
        double gap;
        if (!acc[b].count)
            continue;
        gap = fabs(acc[b].correct / (double)acc[b].count - acc[b].conf / (double)acc[b].count);
        e += (double)acc[b].count / (double)n * gap;
        if (gap > m)
            m = gap;
    }
    *ece = e;
    if (mce)
        *mce = m;
}

void eb__ece_width(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C,
                   size_t bins, double *ece, double *mce, eb_reliability_bin *rel)
{
    bin_acc acc[EB_METRIC_MAX_BINS] = {{0}};
    for (size_t k = 0; k < n; k++) {
        size_t i = EB__ROW(idx, k);
        size_t pred = eb__argmax(pbar + i * C, C);
        double p = pbar[i * C + pred];
        bin_acc *a = &acc[width_bin(p, bins)];
        a->count++;
        a->conf += p;
        a->correct += pred == y[i];
    }
    finish_bins(acc, bins, n, ece, mce);
    if (rel)
        for (size_t b = 0; b < bins; b++) {
            rel[b].lo = (double)b / (double)bins;
            rel[b].hi = (double)(b + 1) / (double)bins;
            rel[b].count = acc[b].count;
            rel[b].confidence = acc[b].count ? acc[b].conf / (double)acc[b].count : NAN;
            rel[b].accuracy = acc[b].count ? acc[b].correct / (double)acc[b].count : NAN;
        }
}

void eb__conf_fill(eb__conf *v, const float *pbar, const uint8_t *y, const double *score,
                   const size_t *idx, size_t n, size_t C)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = EB__ROW(idx, k);
        size_t pred = eb__argmax(pbar + i * C, C);
        v[k].conf = score ? score[i] : (double)pbar[i * C + pred];
        v[k].correct = pred == y[i] ? 1.0 : 0.0;
        v[k].orig = k;
    }
}

/* Confidence ascending, then wrong before right: a total order on the
 * (confidence, correct) pairs, so the sorted sequence, and every number
 * computed from it, does not depend on the order of the examples. */
static int by_conf_then_correct(const void *pa, const void *pb)
{
    const eb__conf *a = pa, *b = pb;
    if (a->conf != b->conf)
        return a->conf < b->conf ? -1 : 1;
    return (a->correct > b->correct) - (a->correct < b->correct);
}

void eb__conf_sort(eb__conf *v, size_t n)
{
    qsort(v, n, sizeof *v, by_conf_then_correct);
}

void eb__ece_mass_sorted(const eb__conf *v, const uint32_t *w, size_t n, size_t total, size_t bins,
                         double *ece, double *mce, eb_reliability_bin *rel)
{
    bin_acc acc[EB_METRIC_MAX_BINS] = {{0}};
    size_t base = total / bins, extra = total % bins;
    size_t k = 0, left = n ? (w ? w[v[0].orig] : 1) : 0; /* copies of v[k] not yet placed */

    for (size_t b = 0; b < bins; b++) {
        /* numpy.array_split: the first total % bins groups get one more */
        size_t len = base + (b < extra ? 1 : 0);
        double lo = NAN, hi = NAN;
        for (size_t t = 0; t < len; t++) {
            while (left == 0) {
                k++;
                left = w ? w[v[k].orig] : 1;
            }
            acc[b].conf += v[k].conf;
            acc[b].correct += v[k].correct;
            if (t == 0)
                lo = v[k].conf;
            hi = v[k].conf;
            left--;
        }
        acc[b].count = len;
        if (rel) {
            rel[b].count = len;
            rel[b].lo = lo;
            rel[b].hi = hi;
            rel[b].confidence = len ? acc[b].conf / (double)len : NAN;
            rel[b].accuracy = len ? acc[b].correct / (double)len : NAN;
        }
    }
    finish_bins(acc, bins, total, ece, mce);
}

void eb__ece_classwise(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C,
                       size_t bins, double *sce)
{
    bin_acc acc[EB_METRIC_MAX_BINS];
    double total = 0.0;
    for (size_t c = 0; c < C; c++) {
        double e;
        for (size_t b = 0; b < bins; b++)
            acc[b] = (bin_acc){0, 0.0, 0.0};
        for (size_t k = 0; k < n; k++) {
            size_t i = EB__ROW(idx, k);
            double p = pbar[i * C + c];
            bin_acc *a = &acc[width_bin(p, bins)];
            a->count++;
            a->conf += p;
            a->correct += y[i] == c;
        }
        finish_bins(acc, bins, n, &e, NULL);
        total += e;
    }
    *sce = total / (double)C;
}

/* The checks every calibration entry point makes. */
static eb_status check_calibration(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                   size_t bins, const char *what, eb_error *err)
{
    eb_status st;
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s needs at least one example (got 0)", what);
    if (C == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s needs at least one class (got 0)", what);
    if (bins == 0 || bins > EB_METRIC_MAX_BINS)
        return eb_error_set(err, EB_ERR_ARG, "%s: %zu bins is outside 1..%d", what, bins,
                            EB_METRIC_MAX_BINS);
    st = eb__check_labels(y, n, C, what, err);
    if (st)
        return st;
    return eb__check_probs(pbar, n, C, what, err);
}

eb_status eb_metric_ece(const float *pbar, const uint8_t *y, size_t n, size_t C, size_t bins,
                        double *ece, double *mce, eb_reliability_bin *rel, eb_error *err)
{
    eb_status st = check_calibration(pbar, y, n, C, bins, "ECE", err);
    if (st)
        return st;
    eb__ece_width(pbar, y, NULL, n, C, bins, ece, mce, rel);
    return EB_OK;
}

eb_status eb_metric_ece_adaptive(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                 size_t bins, double *ece, double *mce, eb_reliability_bin *rel,
                                 eb_error *err)
{
    eb__conf *v;
    size_t bytes;
    eb_status st = check_calibration(pbar, y, n, C, bins, "adaptive ECE", err);
    if (st)
        return st;
    if (eb_size_mul(n, sizeof *v, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "adaptive ECE: %zu examples overflow", n);
    v = eb_malloc(bytes);
    if (!v)
        return eb_error_set(err, EB_ERR_NOMEM, "adaptive ECE: out of memory sorting %zu examples",
                            n);
    eb__conf_fill(v, pbar, y, NULL, NULL, n, C);
    eb__conf_sort(v, n);
    eb__ece_mass_sorted(v, NULL, n, n, bins, ece, mce, rel);
    eb_free(v);
    return EB_OK;
}

eb_status eb_metric_ece_classwise(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                  size_t bins, double *sce, eb_error *err)
{
    eb_status st = check_calibration(pbar, y, n, C, bins, "classwise ECE", err);
    if (st)
        return st;
    eb__ece_classwise(pbar, y, NULL, n, C, bins, sce);
    return EB_OK;
}
