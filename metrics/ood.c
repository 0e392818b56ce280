/* ood.c: out-of-distribution and misclassification detection: the score
 * functions (total entropy, mutual information, 1 - max pbar), and AUROC,
 * AUPR, FPR at a TPR and the ROC points from one sorted sweep over the
 * distinct thresholds. Conventions: docs/metrics.md ("Detection"). */
#include <math.h>
#include <stdlib.h>

#include "common/eb_alloc.h"
#include "metrics/eb_metrics.h"
#include "metrics/metrics_internal.h"

static const char *const score_names[EB_OOD_SCORE_COUNT_] = {
    /* [EB_OOD_SCORE_ENTROPY] = */ "entropy",
    /* [EB_OOD_SCORE_MI] = */ "mutual-information",
    /* [EB_OOD_SCORE_MAXPROB] = */ "one-minus-max-prob",
};

const char *eb_ood_score_name(eb_ood_score kind)
{
    if ((int)kind < 0 || kind >= EB_OOD_SCORE_COUNT_)
        return NULL;
    return score_names[kind];
}

eb_status eb_metric_ood_score(eb_ood_score kind, const float *probs, size_t n, size_t S, size_t C,
                              double *score, eb_error *err)
{
    if (n && (S == 0 || C == 0))
        return eb_error_set(err, EB_ERR_ARG, "OOD score needs draws and classes (got %zu and %zu)",
                            S, C);
    switch (kind) {
    case EB_OOD_SCORE_ENTROPY:
        eb_metric_uncertainty(score, NULL, NULL, probs, n, S, C);
        return EB_OK;
    case EB_OOD_SCORE_MI:
        eb_metric_uncertainty(NULL, NULL, score, probs, n, S, C);
        return EB_OK;
    case EB_OOD_SCORE_MAXPROB:
        /* pbar row by row in double, so no (n, C) buffer is needed */
        for (size_t i = 0; i < n; i++) {
            double best = 0.0;
            for (size_t c = 0; c < C; c++) {
                double m = 0.0;
                for (size_t k = 0; k < S; k++)
                    m += probs[(i * S + k) * C + c];
                m /= (double)S;
                if (c == 0 || m > best)
                    best = m;
            }
            score[i] = 1.0 - best;
        }
        return EB_OK;
    default:
        return eb_error_set(err, EB_ERR_ARG, "unknown OOD score kind %d (known: 0..%d)", (int)kind,
                            EB_OOD_SCORE_COUNT_ - 1);
    }
}

eb_status eb__check_scores(const double *pos, size_t npos, const double *neg, size_t nneg,
                           const char *what, eb_error *err)
{
    if (npos == 0 || nneg == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s needs positives and negatives (got %zu and %zu)",
                            what, npos, nneg);
    for (size_t k = 0; k < npos; k++)
        if (isnan(pos[k]))
            return eb_error_set(err, EB_ERR_ARG, "%s: score of positive %zu is NaN", what, k);
    for (size_t k = 0; k < nneg; k++)
        if (isnan(neg[k]))
            return eb_error_set(err, EB_ERR_ARG, "%s: score of negative %zu is NaN", what, k);
    return EB_OK;
}

/* Decreasing score; the order inside a tie does not matter, because the
 * sweep takes each tie group as one threshold. */
static int by_score_desc(const void *pa, const void *pb)
{
    double a = ((const eb__scored *)pa)->s, b = ((const eb__scored *)pb)->s;
    return (a < b) - (a > b);
}

void eb__scored_fill(eb__scored *v, const double *pos, size_t npos, const double *neg,
                     size_t nneg)
{
    for (size_t k = 0; k < npos; k++)
        v[k] = (eb__scored){pos[k], 1, k};
    for (size_t k = 0; k < nneg; k++)
        v[npos + k] = (eb__scored){neg[k], 0, k};
    eb__scored_sort(v, npos + nneg);
}

void eb__scored_sort(eb__scored *v, size_t n)
{
    qsort(v, n, sizeof *v, by_score_desc);
}

void eb__ood_sweep(const eb__scored *v, size_t nv, const uint32_t *wpos, const uint32_t *wneg,
                   size_t npos, size_t nneg, double tpr, eb_ood_result *out, double *fpr_out,
                   double *tpr_out, size_t *count)
{
    const double P = (double)npos, N = (double)nneg;
    double tp = 0.0, fp = 0.0, pairs = 0.0, ap = 0.0, prev_recall = 0.0, fpr_hit = NAN;
    size_t i = 0, points = 0;

    if (fpr_out) {
        fpr_out[points] = 0.0;
        tpr_out[points] = 0.0;
        points++;
    }
    while (i < nv) {
        double dtp = 0.0, dfp = 0.0, recall;
        size_t j = i;
        while (j < nv && v[j].s == v[i].s) {
            if (v[j].pos)
                dtp += wpos ? (double)wpos[v[j].orig] : 1.0;
            else
                dfp += wneg ? (double)wneg[v[j].orig] : 1.0;
            j++;
        }
        i = j;
        if (dtp + dfp == 0.0)
            continue; /* no copy of these scores in the resample */
        /* Each negative of this group beats the positives above it and
         * ties with the positives in it (one half each). */
        pairs += dfp * (tp + 0.5 * dtp);
        tp += dtp;
        fp += dfp;
        recall = tp / P;
        /* A group of negatives only adds no recall, so its precision
         * term vanishes, as in scikit-learn. */
        ap += (recall - prev_recall) * (tp / (tp + fp));
        prev_recall = recall;
        if (isnan(fpr_hit) && recall >= tpr)
            fpr_hit = fp / N; /* the first such point has the smallest FPR */
        if (fpr_out) {
            fpr_out[points] = fp / N;
            tpr_out[points] = recall;
            points++;
        }
    }
    out->auroc = pairs / (P * N);
    out->aupr = ap;
    out->fpr95 = fpr_hit;
    if (count)
        *count = points;
}

/* Checks, one sorted copy, one sweep: the body of the public detectors. */
static eb_status detect(const double *pos, size_t npos, const double *neg, size_t nneg, double tpr,
                        const char *what, eb_ood_result *out, double *fpr_out, double *tpr_out,
                        size_t *count, eb_error *err)
{
    eb__scored *v;
    size_t bytes;
    eb_status st = eb__check_scores(pos, npos, neg, nneg, what, err);
    if (st)
        return st;
    if (!(tpr > 0.0 && tpr <= 1.0))
        return eb_error_set(err, EB_ERR_ARG, "%s: target TPR %g is outside (0, 1]", what, tpr);
    if (eb_size_mul(npos + nneg, sizeof *v, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "%s: %zu + %zu scores overflow", what, npos, nneg);
    v = eb_malloc(bytes);
    if (!v)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory sorting %zu scores", what,
                            npos + nneg);
    eb__scored_fill(v, pos, npos, neg, nneg);
    eb__ood_sweep(v, npos + nneg, NULL, NULL, npos, nneg, tpr, out, fpr_out, tpr_out, count);
    eb_free(v);
    return EB_OK;
}

eb_status eb_metric_ood(const double *pos, size_t npos, const double *neg, size_t nneg,
                        eb_ood_result *out, eb_error *err)
{
    return detect(pos, npos, neg, nneg, EB_METRIC_FPR_AT_TPR, "OOD detection", out, NULL, NULL,
                  NULL, err);
}

eb_status eb_metric_aupr(const double *pos, size_t npos, const double *neg, size_t nneg,
                         double *aupr, eb_error *err)
{
    eb_ood_result r;
    eb_status st =
        detect(pos, npos, neg, nneg, EB_METRIC_FPR_AT_TPR, "AUPR", &r, NULL, NULL, NULL, err);
    if (!st)
        *aupr = r.aupr;
    return st;
}

eb_status eb_metric_fpr_at_tpr(const double *pos, size_t npos, const double *neg, size_t nneg,
                               double tpr, double *fpr, eb_error *err)
{
    eb_ood_result r;
    eb_status st = detect(pos, npos, neg, nneg, tpr, "FPR at TPR", &r, NULL, NULL, NULL, err);
    if (!st)
        *fpr = r.fpr95;
    return st;
}

eb_status eb_metric_roc(const double *pos, size_t npos, const double *neg, size_t nneg,
                        double *fpr, double *tpr, size_t *count, eb_error *err)
{
    eb_ood_result r;
    return detect(pos, npos, neg, nneg, EB_METRIC_FPR_AT_TPR, "ROC curve", &r, fpr, tpr, count,
                  err);
}

eb_status eb_metric_misclassification_auroc(const float *pbar, const uint8_t *y, size_t n,
                                            size_t C, const double *score, double *auroc,
                                            eb_error *err)
{
    const char *what = "misclassification AUROC";
    eb__scored *v;
    eb_ood_result r;
    size_t wrong = 0, bytes;
    eb_status st;

    if (n == 0 || C == 0)
        return eb_error_set(err, EB_ERR_ARG, "%s needs examples and classes (got %zu and %zu)",
                            what, n, C);
    st = eb__check_labels(y, n, C, what, err);
    if (st)
        return st;
    if (eb_size_mul(n, sizeof *v, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "%s: %zu examples overflow", what, n);
    v = eb_malloc(bytes);
    if (!v)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory sorting %zu scores", what, n);
    for (size_t i = 0; i < n; i++) {
        size_t pred = eb__argmax(pbar + i * C, C);
        v[i].s = score ? score[i] : 1.0 - (double)pbar[i * C + pred];
        v[i].pos = pred != y[i];
        v[i].orig = i;
        if (isnan(v[i].s)) {
            eb_free(v);
            return eb_error_set(err, EB_ERR_ARG, "%s: %s of example %zu is NaN", what,
                                score ? "score" : "1 - max pbar", i);
        }
        wrong += (size_t)v[i].pos;
    }
    if (wrong == 0 || wrong == n) {
        /* documented: undefined with one class present */
        eb_free(v);
        *auroc = NAN;
        return EB_OK;
    }
    eb__scored_sort(v, n);
    eb__ood_sweep(v, n, NULL, NULL, wrong, n - wrong, EB_METRIC_FPR_AT_TPR, &r, NULL, NULL, NULL);
    eb_free(v);
    *auroc = r.auroc;
    return EB_OK;
}
