/* eb_metrics.h: quality metrics as pure functions over arrays (no I/O).
 *
 * Conventions (docs/metrics.md holds the full list):
 *   - member probabilities are probs (n, S, C); the predictive is their
 *     mean over S, pbar (n, C);
 *   - the predicted class is the first maximum of pbar (numpy's argmax);
 *   - NLL floors probabilities at EB_METRIC_PROB_FLOOR before the log;
 *   - entropies are in nats;
 *   - AUROC counts ties between a positive and a negative as one half
 *     (the Mann-Whitney statistic); positives are the examples the score
 *     should rank high (e.g. out-of-distribution inputs). */
#ifndef EB_METRICS_H
#define EB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"

#define EB_METRIC_PROB_FLOOR 1e-12

/* pbar (n, C) = mean over S of probs (n, S, C). */
void eb_metric_predictive(float *pbar, const float *probs, size_t n, size_t S, size_t C);
/* Share of rows whose first-maximum class equals y. */
double eb_metric_accuracy(const float *pbar, const uint8_t *y, size_t n, size_t C);
/* Mean -log max(pbar[y], floor). */
double eb_metric_nll(const float *pbar, const uint8_t *y, size_t n, size_t C);
/* Mean over rows of sum_c (pbar[c] - [c == y])^2. */
double eb_metric_brier(const float *pbar, const uint8_t *y, size_t n, size_t C);

/* Per-example uncertainty decomposition from probs (n, S, C): total =
 * H[pbar], expected data = mean_s H[p_s], knowledge (mutual information)
 * = total - expected data. Any output may be NULL. */
void eb_metric_uncertainty(double *total, double *data, double *knowledge, const float *probs,
                           size_t n, size_t S, size_t C);

/* Area under the ROC curve of scores for pos (npos) against neg (nneg).
 * Needs both sets non-empty. */
eb_status eb_metric_auroc(const double *pos, size_t npos, const double *neg, size_t nneg,
                          double *auroc, eb_error *err);

#endif /* EB_METRICS_H */
