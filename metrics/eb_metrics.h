/* eb_metrics.h: quality metrics as pure functions over arrays (no I/O),
 * and the L-infinity attacks that perturb inputs through a gradient
 * callback (so this module never touches a device or a file).
 *
 * Conventions (docs/metrics.md is the one full statement; each pinned
 * convention has a stable id below, stored with every result):
 *   - member probabilities are probs (n, S, C); the predictive is their
 *     mean over S, pbar (n, C);
 *   - the predicted class is the first maximum of pbar (numpy's argmax)
 *     and the confidence is max_c pbar;
 *   - NLL floors probabilities at EB_METRIC_PROB_FLOOR before the log;
 *   - entropies are in nats;
 *   - AUROC counts ties between a positive and a negative as one half
 *     (the Mann-Whitney statistic); positives are the examples the score
 *     should rank high (e.g. out-of-distribution inputs);
 *   - functions that take labels check y[i] < C and return EB_ERR_ARG
 *     naming the first bad example (eb_metric_accuracy, _nll and _brier
 *     predate this and trust their labels);
 *   - every sum is accumulated in double.
 *
 * Source files: basic.c (accuracy, NLL, Brier, entropies, AUROC by ranks),
 * calibration.c, ood.c, selective.c, bootstrap.c, attack.c; shared
 * internals in metrics_internal.h. */
#ifndef EB_METRICS_H
#define EB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"

/* ------------------------------------------------- convention ids -- */

/* Stable ids of the pinned conventions (docs/metrics.md, "Convention
 * ids"). A result row names the id its number follows; a changed
 * definition gets a new id (-v2), never a silently changed meaning. */
#define EB_CONV_ACCURACY "accuracy-first-argmax-v1"
#define EB_CONV_NLL "nll-floor-1e-12-v1"
#define EB_CONV_BRIER "brier-sum-over-classes-v1"
#define EB_CONV_UNCERTAINTY "uncertainty-entropy-nats-v1"
#define EB_CONV_ECE "ece-15-equal-width-right-closed-v1"
#define EB_CONV_MCE "mce-15-equal-width-right-closed-v1"
#define EB_CONV_ECE_ADAPTIVE "ece-15-equal-mass-ties-wrong-first-v1"
#define EB_CONV_ECE_CLASSWISE "sce-15-equal-width-right-closed-v1"
#define EB_CONV_RELIABILITY "reliability-bins-v1"
#define EB_CONV_AUROC "auroc-mann-whitney-ties-half-v1"
#define EB_CONV_AUPR "aupr-average-precision-v1"
#define EB_CONV_FPR95 "fpr-at-95-tpr-v1"
#define EB_CONV_ROC "roc-all-thresholds-v1"
#define EB_CONV_OOD_SCORES "ood-scores-entropy-mi-maxprob-v1"
#define EB_CONV_MISCLASSIFICATION "misclassification-auroc-v1"
#define EB_CONV_REJECTION "accuracy-rejection-100-ties-expected-v1"
#define EB_CONV_BOOTSTRAP "bootstrap-percentile-200-v1"
#define EB_CONV_FGSM "fgsm-linf-v1"
#define EB_CONV_PGD "pgd-linf-random-start-strongest-with-fgsm-v1"

/* --------------------------------------------------- basic metrics -- */

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
 * Needs both sets non-empty and no NaN score (EB_ERR_ARG otherwise). This
 * is the rank-sum (Mann-Whitney) form; eb_metric_ood computes the same
 * number by a threshold sweep, and the tests hold the two together. */
eb_status eb_metric_auroc(const double *pos, size_t npos, const double *neg, size_t nneg,
                          double *auroc, eb_error *err);

/* ----------------------------------------------------- calibration -- */

#define EB_METRIC_ECE_BINS 15     /* the pinned bin count */
#define EB_METRIC_MAX_BINS 1024   /* most bins any calibration function takes */

/* One bin of a reliability diagram. Equal-width bins cover (lo, hi]
 * (the first also holds confidence exactly 0); equal-mass bins report
 * the smallest and largest confidence they hold as lo and hi. An empty
 * bin has count 0 and NaN lo/hi (equal mass only), confidence and
 * accuracy. */
typedef struct eb_reliability_bin {
    double lo, hi;
    size_t count;
    double confidence; /* mean confidence of the bin's examples */
    double accuracy;   /* share of them predicted correctly */
} eb_reliability_bin;

/* Expected calibration error with `bins` equal-width, right-closed
 * confidence bins (EB_METRIC_ECE_BINS for the pinned EB_CONV_ECE): bin b
 * is (b/bins, (b+1)/bins], confidence 0 goes to bin 0, and
 * ECE = sum_b (n_b / n) |acc_b - conf_b|. The bin of a confidence p is
 * ceil(p * bins) - 1, exact in double for float p. *mce (may be NULL)
 * gets the maximum of |acc_b - conf_b| over non-empty bins; rel (bins
 * entries, may be NULL) gets the bins. Needs n >= 1, 1 <= bins <=
 * EB_METRIC_MAX_BINS, labels < C, and every confidence in [0, 1]
 * (EB_ERR_ARG naming the example otherwise). Allocates nothing. */
eb_status eb_metric_ece(const float *pbar, const uint8_t *y, size_t n, size_t C, size_t bins,
                        double *ece, double *mce, eb_reliability_bin *rel, eb_error *err);

/* Adaptive (equal-mass) ECE: examples sorted by confidence ascending,
 * ties ordered wrong-before-right (so the value depends only on the
 * multiset of (confidence, correct) pairs, not on example order), then
 * cut into `bins` consecutive groups as numpy.array_split does: the first
 * n % bins groups hold floor(n / bins) + 1 examples, the rest
 * floor(n / bins); with n < bins the last bins - n groups are empty and
 * skipped. ECE = sum_b (n_b / n) |acc_b - conf_b|; *mce (may be NULL) is
 * the largest gap over non-empty groups; rel (bins entries, may be NULL)
 * gets the groups. Same argument checks as eb_metric_ece; allocates one
 * n-element scratch array (EB_ERR_NOMEM). */
eb_status eb_metric_ece_adaptive(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                 size_t bins, double *ece, double *mce, eb_reliability_bin *rel,
                                 eb_error *err);

/* Classwise ECE, the "static calibration error" of Nixon et al. 2019
 * (Kull et al. 2019's classwise-ECE): for every class c, the column
 * pbar[:, c] is binned into `bins` equal-width right-closed bins against
 * the indicator [y == c], giving sum_b (n_b / n) |freq_b - conf_b|; the
 * result is the mean over the C classes. Every probability must lie in
 * [0, 1]. Allocates nothing. */
eb_status eb_metric_ece_classwise(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                  size_t bins, double *sce, eb_error *err);

/* ------------------------------------------------- OOD detection -- */

/* The per-example OOD scores (higher = more likely OOD). */
typedef enum eb_ood_score {
    EB_OOD_SCORE_ENTROPY = 0, /* total entropy H[pbar] (nats) */
    EB_OOD_SCORE_MI,          /* mutual information H[pbar] - mean_s H[p_s] */
    EB_OOD_SCORE_MAXPROB,     /* 1 - max_c pbar */
    EB_OOD_SCORE_COUNT_
} eb_ood_score;

/* "entropy", "mutual-information", "one-minus-max-prob"; NULL when out of
 * range. */
const char *eb_ood_score_name(eb_ood_score kind);
/* score (n) from member probabilities probs (n, S, C). EB_ERR_ARG for an
 * unknown kind, or S or C of 0. Allocates nothing. */
eb_status eb_metric_ood_score(eb_ood_score kind, const float *probs, size_t n, size_t S, size_t C,
                              double *score, eb_error *err);

#define EB_METRIC_FPR_AT_TPR 0.95 /* the pinned TPR of EB_CONV_FPR95 */

/* The three detection numbers from one sort of the scores. */
typedef struct eb_ood_result {
    double auroc; /* Mann-Whitney, ties one half (EB_CONV_AUROC) */
    double aupr;  /* average precision, positives = OOD (EB_CONV_AUPR) */
    double fpr95; /* smallest FPR among ROC points with TPR >= 0.95 */
} eb_ood_result;

/* Detection of pos (npos, e.g. OOD inputs) against neg (nneg) by a score
 * that should rank positives high. AUPR is scikit-learn's
 * average_precision_score: sum over the distinct thresholds t (scores
 * taken in decreasing order, tied scores one threshold) of
 * (R_t - R_{t-1}) P_t. FPR at 95% TPR takes the ROC points themselves,
 * no interpolation. Needs npos, nneg >= 1 and no NaN score (EB_ERR_ARG);
 * allocates one (npos + nneg) array (EB_ERR_NOMEM). */
eb_status eb_metric_ood(const double *pos, size_t npos, const double *neg, size_t nneg,
                        eb_ood_result *out, eb_error *err);
/* The average precision alone (as eb_metric_ood). */
eb_status eb_metric_aupr(const double *pos, size_t npos, const double *neg, size_t nneg,
                         double *aupr, eb_error *err);
/* The smallest FPR among ROC points whose TPR (tp / npos, in double) is
 * >= tpr (0 < tpr <= 1; EB_METRIC_FPR_AT_TPR for the pinned metric). */
eb_status eb_metric_fpr_at_tpr(const double *pos, size_t npos, const double *neg, size_t nneg,
                               double tpr, double *fpr, eb_error *err);

/* ROC points, as sklearn.metrics.roc_curve(drop_intermediate=False):
 * (0, 0), then one point per distinct score in decreasing order, ending at
 * (1, 1). fpr and tpr are caller-owned arrays of npos + nneg + 1 entries;
 * *count gets the number of points written (distinct scores + 1).
 * Checks and allocation as eb_metric_ood. */
eb_status eb_metric_roc(const double *pos, size_t npos, const double *neg, size_t nneg,
                        double *fpr, double *tpr, size_t *count, eb_error *err);

/* Misclassification detection: AUROC where the positives are the
 * examples whose first-maximum class differs from y and the score is an
 * uncertainty (higher = more likely wrong): score (n), or NULL for
 * 1 - max_c pbar. When every example is right, or every one wrong, the
 * AUROC is undefined: *auroc is NaN and the call returns EB_OK (a
 * property of the data, e.g. at a large attack epsilon, not a caller
 * error). EB_ERR_ARG for a label >= C or a NaN score; allocates one
 * n-element array (EB_ERR_NOMEM). */
eb_status eb_metric_misclassification_auroc(const float *pbar, const uint8_t *y, size_t n,
                                            size_t C, const double *score, double *auroc,
                                            eb_error *err);

/* ------------------------------------------- selective prediction -- */

#define EB_METRIC_REJECTION_GRID 100 /* rejection rates 0, 0.01, ..., 0.99 */

/* Accuracy-rejection curve on the grid r_k = k / grid, k = 0..grid-1:
 * reject the floor(k * n / grid) least confident examples (integer
 * arithmetic, so at least one example is always kept) and take the
 * accuracy of the rest into acc[k]. confidence (n) ranks the examples
 * (higher = kept first), or NULL for max_c pbar. Examples tied in
 * confidence across the cut count by expectation over a uniformly random
 * order of the tie: if m of a tied group of g with c correct are kept,
 * they add m * c / g correct. *area (may be NULL) is the mean of acc over
 * the grid. acc (grid) is caller-owned and may be NULL. Needs n >= 1,
 * grid >= 1, labels < C, no NaN confidence (EB_ERR_ARG); allocates one
 * n-element array (EB_ERR_NOMEM). */
eb_status eb_metric_rejection_curve(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                    const double *confidence, size_t grid, double *acc,
                                    double *area, eb_error *err);

/* ------------------------------------------------------ bootstrap -- */

#define EB_METRIC_BOOTSTRAP_RESAMPLES 200 /* the pinned B */
#define EB_METRIC_BOOTSTRAP_LEVEL 0.95    /* the pinned interval level */

/* A metric over a resample: value of the metric on the examples idx (n
 * indices into the caller's arrays, with repetitions). Must not keep idx.
 * Returns EB_OK or an error, which ends the bootstrap. */
typedef eb_status (*eb_metric_fn)(void *ctx, const size_t *idx, size_t n, double *value,
                                  eb_error *err);
/* The same over a resample of positives and negatives drawn apart. */
typedef eb_status (*eb_metric_pair_fn)(void *ctx, const size_t *pos_idx, size_t npos,
                                       const size_t *neg_idx, size_t nneg, double *value,
                                       eb_error *err);

/* The q-quantile (0 <= q <= 1) of sorted (n >= 1, ascending) with
 * numpy.percentile's default linear interpolation: h = (n - 1) q,
 * sorted[floor h] + (h - floor h) (sorted[floor h + 1] - sorted[floor h]). */
double eb_metric_quantile(const double *sorted, size_t n, double q);

/* Percentile bootstrap interval: B resamples of n examples drawn with
 * replacement (eb_rng_below on the stream (seed, EB_STREAM_BOOTSTRAP),
 * n draws per resample in order), fn evaluated on each, and
 * [lo, hi] = the (1 - level)/2 and (1 + level)/2 quantiles of the B
 * values (eb_metric_quantile). Deterministic for (seed, n, B). The index
 * and value buffers are allocated once (EB_ERR_NOMEM); nothing is
 * allocated per resample. Needs n >= 1, B >= 2, 0 < level < 1
 * (EB_ERR_ARG); a NaN value from fn is EB_ERR_NUMERIC naming the
 * resample; fn's errors are returned with the resample number prefixed. */
eb_status eb_metric_bootstrap(eb_metric_fn fn, void *ctx, size_t n, size_t B, double level,
                              uint64_t seed, double *lo, double *hi, eb_error *err);
/* As eb_metric_bootstrap, resampling npos positives and nneg negatives
 * separately (each resample keeps both classes, so AUROC and friends stay
 * defined): per resample, npos draws below npos, then nneg draws below
 * nneg, from the one stream (seed, EB_STREAM_BOOTSTRAP). */
eb_status eb_metric_bootstrap_paired(eb_metric_pair_fn fn, void *ctx, size_t npos, size_t nneg,
                                     size_t B, double level, uint64_t seed, double *lo,
                                     double *hi, eb_error *err);

/* Ready-made bootstrap intervals for the standard metrics, on the same
 * resamples as eb_metric_bootstrap(_paired) with the same seed. The
 * sort-based metrics (equal-mass ECE, AUROC, AUPR, FPR95) sort the data
 * once and weigh each resample by its multiplicities, which gives the
 * same numbers as sorting every resample in O(n) per resample; all
 * scratch is allocated before the resamples (EB_ERR_NOMEM). Labels,
 * probabilities (binned metrics) and scores are checked as by the
 * metric functions (EB_ERR_ARG). */
typedef enum eb_quality_metric {
    EB_QUALITY_ACCURACY = 0,
    EB_QUALITY_NLL,
    EB_QUALITY_BRIER,
    EB_QUALITY_ECE,          /* equal width, EB_METRIC_ECE_BINS */
    EB_QUALITY_MCE,          /* equal width, EB_METRIC_ECE_BINS */
    EB_QUALITY_ECE_ADAPTIVE, /* equal mass, EB_METRIC_ECE_BINS */
    EB_QUALITY_ECE_CLASSWISE,
    EB_QUALITY_COUNT_
} eb_quality_metric;

typedef enum eb_ood_metric {
    EB_OOD_AUROC = 0,
    EB_OOD_AUPR,
    EB_OOD_FPR95,
    EB_OOD_COUNT_
} eb_ood_metric;

/* "accuracy", "nll", "brier", "ece", "mce", "ece-adaptive",
 * "ece-classwise"; NULL when out of range. */
const char *eb_quality_metric_name(eb_quality_metric m);
/* "auroc", "aupr", "fpr95"; NULL when out of range. */
const char *eb_ood_metric_name(eb_ood_metric m);

eb_status eb_metric_bootstrap_quality(eb_quality_metric m, const float *pbar, const uint8_t *y,
                                      size_t n, size_t C, size_t B, double level, uint64_t seed,
                                      double *lo, double *hi, eb_error *err);
eb_status eb_metric_bootstrap_ood(eb_ood_metric m, const double *pos, size_t npos,
                                  const double *neg, size_t nneg, size_t B, double level,
                                  uint64_t seed, double *lo, double *hi, eb_error *err);

/* -------------------------------------------------------- attacks -- */

/* The gradient a device provides (methods/eb_methods.h's
 * eb_predictor_input_grad through all S members is the reference one):
 * dx (n, d) = d(-log pbar(y | x)) / dx for inputs x (n, d) with labels y
 * (n); pbar (n, C) gets the predictive at x when not NULL (the attacks
 * here pass NULL). Returns EB_OK or an error naming what failed. */
typedef eb_status (*eb_grad_fn)(void *ctx, const float *x, const uint8_t *y, size_t n, float *dx,
                                float *pbar, eb_error *err);

/* FGSM (Goodfellow et al. 2015), L-infinity on [0, 1] pixels:
 * x_adv = clip(x + eps * sign(dx), 0, 1), with sign(0) = 0 and the sum
 * rounded once to float. x (n, d) must lie in [0, 1] (EB_ERR_ARG naming
 * the example and pixel); eps >= 0 and finite. eps = 0 copies x without
 * calling grad. x_adv (n, d) is caller-owned and may be x itself (the
 * gradient is taken before anything is written). A NaN in dx is
 * EB_ERR_NUMERIC. Allocates one (n, d) gradient buffer (EB_ERR_NOMEM).
 * After an error, x_adv holds no defined result. */
eb_status eb_attack_fgsm(float *x_adv, const float *x, const uint8_t *y, size_t n, size_t d,
                         float eps, eb_grad_fn grad, void *ctx, eb_error *err);

#define EB_PGD_DEFAULT_STEPS 10

typedef struct eb_pgd_config {
    float eps;              /* L-infinity radius, >= 0 */
    float step;             /* step size; 0 = 2.5 * eps / steps (Madry et al. 2018) */
    int steps;              /* iterations, >= 1 (EB_PGD_DEFAULT_STEPS) */
    int random_start;       /* non-zero: start at clip(x + U[-eps, eps], 0, 1) */
    uint64_t seed;          /* random start: example i's noise comes from */
    uint64_t first_example; /* (seed, first_example + i), see docs/metrics.md */
    /* Strongest candidate instead of the last iterate: each example keeps,
     * among the points the attack evaluates (the start, every iterate, the
     * final point, and the FGSM point when fgsm_candidate is set), the
     * first one its predictive misclassifies, else the one of highest
     * -log pbar(y|x). Needs n_classes (to read the callback's pbar); costs
     * one more gradient call (two more with fgsm_candidate). With
     * fgsm_candidate, PGD's result is never weaker than FGSM's at the same
     * eps, example by example. */
    int keep_best;
    int fgsm_candidate;
    int n_classes;
} eb_pgd_config;

/* PGD (Madry et al. 2018), L-infinity on [0, 1]: from x (or the random
 * start), `steps` times x <- clip(proj_eps(x + step * sign(dx)), 0, 1),
 * where proj_eps clamps every coordinate to [x0 - eps, x0 + eps] around
 * the clean x0; the last iterate is returned (or, with keep_best, the
 * strongest candidate per example). The random start is keyed
 * per example (so a batch split gives the same bytes). Same input checks
 * and eps = 0 shortcut as FGSM; x_adv (n, d) must not overlap x (x_adv
 * == x is EB_ERR_ARG). Allocates one (n, d) gradient buffer
 * (EB_ERR_NOMEM). After an error, x_adv holds no defined result. */
eb_status eb_attack_pgd(float *x_adv, const float *x, const uint8_t *y, size_t n, size_t d,
                        const eb_pgd_config *cfg, eb_grad_fn grad, void *ctx, eb_error *err);

#endif /* EB_METRICS_H */
