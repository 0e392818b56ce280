/* metrics_internal.h: the cores shared between the metric source files
 * (not API; eb_metrics.h is the public header).
 *
 * Every core works on a row selection: idx (n) lists the rows to use,
 * with repetitions allowed (a bootstrap resample), or is NULL for rows
 * 0..n-1. Cores trust their arguments: the public functions validate
 * labels, probabilities and scores once, and the bootstrap validates the
 * whole arrays once before its resamples, so no resample re-checks or
 * allocates. */
#ifndef EB_METRICS_INTERNAL_H
#define EB_METRICS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/eb_metrics.h"

/* Row k of a selection. */
#define EB__ROW(idx, k) ((idx) ? (idx)[k] : (k))

/* First maximum of p (C >= 1), numpy's argmax. */
size_t eb__argmax(const float *p, size_t C);

/* EB_ERR_ARG naming `what` and the first example whose label is >= C. */
eb_status eb__check_labels(const uint8_t *y, size_t n, size_t C, const char *what, eb_error *err);
/* EB_ERR_ARG naming `what` and the first entry of pbar (n, C) that is NaN
 * or outside [0, 1]. */
eb_status eb__check_probs(const float *pbar, size_t n, size_t C, const char *what, eb_error *err);

double eb__accuracy(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C);
double eb__nll(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C);
double eb__brier(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C);

/* Equal-width ECE/MCE/bins (eb_metric_ece); n >= 1, bins in
 * [1, EB_METRIC_MAX_BINS]. mce and rel may be NULL. */
void eb__ece_width(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C,
                   size_t bins, double *ece, double *mce, eb_reliability_bin *rel);

/* One example for sorting by confidence: `correct` is 0 or 1 (the
 * rejection curve later replaces it by its tie group's mean). */
typedef struct eb__conf {
    double conf;
    double correct;
    size_t orig; /* position in the selection it was filled from */
} eb__conf;

/* Fills v (n) with the confidence (max pbar, or score[row] when score is
 * not NULL) and correctness of the selected rows; v[k].orig = k. */
void eb__conf_fill(eb__conf *v, const float *pbar, const uint8_t *y, const double *score,
                   const size_t *idx, size_t n, size_t C);
/* Sorts v (n) by confidence ascending, wrong before right in a tie. */
void eb__conf_sort(eb__conf *v, size_t n);
/* Equal-mass ECE over `total` examples given as the sorted v (n), entry
 * k counted w[v[k].orig] times (a bootstrap resample's multiplicities;
 * NULL: once each, total = n). Copies of one entry are identical, so the
 * walk adds exactly what sorting the expanded sample would. total >= 1;
 * the weights sum to total. */
void eb__ece_mass_sorted(const eb__conf *v, const uint32_t *w, size_t n, size_t total, size_t bins,
                         double *ece, double *mce, eb_reliability_bin *rel);

/* Classwise ECE (eb_metric_ece_classwise). */
void eb__ece_classwise(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C,
                       size_t bins, double *sce);

/* One score for the detection sweep: its value, class, and index into
 * the positives or the negatives. */
typedef struct eb__scored {
    double s;
    int pos;
    size_t orig;
} eb__scored;

/* EB_ERR_ARG naming `what` when npos or nneg is 0 or a score is NaN. */
eb_status eb__check_scores(const double *pos, size_t npos, const double *neg, size_t nneg,
                           const char *what, eb_error *err);
/* Fills v (npos + nneg) with the positives then the negatives and sorts
 * it by decreasing score. */
void eb__scored_fill(eb__scored *v, const double *pos, size_t npos, const double *neg,
                     size_t nneg);
void eb__scored_sort(eb__scored *v, size_t n);
/* AUROC, AUPR and the smallest FPR with TPR >= tpr, by one sweep over the
 * distinct thresholds of the sorted v (nv entries). Each entry counts
 * wpos[orig] or wneg[orig] times (a bootstrap resample's multiplicities;
 * both NULL: once), and npos, nneg are the weighted totals, both >= 1.
 * Thresholds whose entries all have weight 0 are skipped. When fpr and
 * tpr_out are not NULL (unweighted only) they get the ROC points and
 * *count their number. */
void eb__ood_sweep(const eb__scored *v, size_t nv, const uint32_t *wpos, const uint32_t *wneg,
                   size_t npos, size_t nneg, double tpr, eb_ood_result *out, double *fpr,
                   double *tpr_out, size_t *count);

#endif /* EB_METRICS_INTERNAL_H */
