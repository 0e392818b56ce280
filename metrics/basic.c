/* basic.c: accuracy, NLL, Brier, the entropy decomposition, AUROC by
 * ranks, and the argument checks and row-selection cores the other
 * metric files share (metrics_internal.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "metrics/eb_metrics.h"
#include "metrics/metrics_internal.h"

void eb_metric_predictive(float *pbar, const float *probs, size_t n, size_t S, size_t C)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < C; c++) {
            double s = 0.0;
            for (size_t k = 0; k < S; k++)
                s += probs[(i * S + k) * C + c];
            pbar[i * C + c] = (float)(s / (double)S);
        }
    }
}

size_t eb__argmax(const float *p, size_t C)
{
    size_t best = 0;
    for (size_t c = 1; c < C; c++)
        if (p[c] > p[best])
            best = c;
    return best;
}

eb_status eb__check_labels(const uint8_t *y, size_t n, size_t C, const char *what, eb_error *err)
{
    for (size_t i = 0; i < n; i++)
        if ((size_t)y[i] >= C)
            return eb_error_set(err, EB_ERR_ARG,
                                "%s: label of example %zu is %u, not below the %zu classes", what,
                                i, (unsigned)y[i], C);
    return EB_OK;
}

eb_status eb__check_probs(const float *pbar, size_t n, size_t C, const char *what, eb_error *err)
{
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < C; c++) {
            float p = pbar[i * C + c];
            /* written so that NaN fails too */
            if (!(p >= 0.0f && p <= 1.0f))
                return eb_error_set(err, EB_ERR_ARG,
                                    "%s: probability of example %zu class %zu is %g, "
                                    "outside [0, 1]",
                                    what, i, c, (double)p);
        }
    return EB_OK;
}

double eb__accuracy(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C)
{
    size_t right = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = EB__ROW(idx, k);
        right += eb__argmax(pbar + i * C, C) == y[i];
    }
    return n ? (double)right / (double)n : 0.0;
}

double eb__nll(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C)
{
    double s = 0.0;
    for (size_t k = 0; k < n; k++) {
        size_t i = EB__ROW(idx, k);
        double p = pbar[i * C + y[i]];
        s -= log(p > EB_METRIC_PROB_FLOOR ? p : EB_METRIC_PROB_FLOOR);
    }
    return n ? s / (double)n : 0.0;
}

double eb__brier(const float *pbar, const uint8_t *y, const size_t *idx, size_t n, size_t C)
{
    double s = 0.0;
    for (size_t k = 0; k < n; k++) {
        size_t i = EB__ROW(idx, k);
        for (size_t c = 0; c < C; c++) {
            double d = pbar[i * C + c] - (c == y[i] ? 1.0 : 0.0);
            s += d * d;
        }
    }
    return n ? s / (double)n : 0.0;
}

double eb_metric_accuracy(const float *pbar, const uint8_t *y, size_t n, size_t C)
{
    return eb__accuracy(pbar, y, NULL, n, C);
}

double eb_metric_nll(const float *pbar, const uint8_t *y, size_t n, size_t C)
{
    return eb__nll(pbar, y, NULL, n, C);
}

double eb_metric_brier(const float *pbar, const uint8_t *y, size_t n, size_t C)
{
    return eb__brier(pbar, y, NULL, n, C);
}

static double entropy(const float *p, size_t C)
{
    double h = 0.0;
    for (size_t c = 0; c < C; c++)
        if (p[c] > 0.0f)
            h -= (double)p[c] * log((double)p[c]);
    return h;
}

void eb_metric_uncertainty(double *total, double *data, double *knowledge, const float *probs,
                           size_t n, size_t S, size_t C)
{
    for (size_t i = 0; i < n; i++) {
        double ht = 0.0, hd = 0.0;
        for (size_t c = 0; c < C; c++) {
            double m = 0.0;
            for (size_t k = 0; k < S; k++)
                m += probs[(i * S + k) * C + c];
            m /= (double)S;
            if (m > 0.0)
                ht -= m * log(m);
        }
        for (size_t k = 0; k < S; k++)
            hd += entropy(probs + (i * S + k) * C, C);
        hd /= (double)S;
        if (total)
            total[i] = ht;
        if (data)
            data[i] = hd;
        if (knowledge)
            knowledge[i] = ht - hd > 0.0 ? ht - hd : 0.0; /* >= 0 by concavity */
    }
}

typedef struct scored {
    double s;
    int pos;
} scored;

static int by_score(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

eb_status eb_metric_auroc(const double *pos, size_t npos, const double *neg, size_t nneg,
                          double *auroc, eb_error *err)
{
    size_t n = npos + nneg, i = 0;
    double rank_sum = 0.0;
    scored *v;

    if (npos == 0 || nneg == 0)
        return eb_error_set(err, EB_ERR_ARG, "AUROC needs positives and negatives (got %zu and %zu)",
                            npos, nneg);
    v = eb_malloc(n * sizeof *v);
    if (!v)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for AUROC of %zu scores", n);
    for (size_t k = 0; k < npos; k++)
        v[k] = (scored){pos[k], 1};
    for (size_t k = 0; k < nneg; k++)
        v[npos + k] = (scored){neg[k], 0};
    for (size_t k = 0; k < n; k++)
        if (isnan(v[k].s)) {
            eb_free(v);
            return eb_error_set(err, EB_ERR_ARG, "AUROC score %zu is NaN", k);
        }
    qsort(v, n, sizeof *v, by_score);
    /* Mann-Whitney: tied scores share their average rank (1-based). */
    while (i < n) {
        size_t j = i, tied_pos = 0;
        while (j < n && v[j].s == v[i].s) {
            tied_pos += (size_t)v[j].pos;
            j++;
        }
        rank_sum += (double)tied_pos * ((double)(i + 1) + (double)j) / 2.0;
        i = j;
    }
    *auroc = (rank_sum - (double)npos * ((double)npos + 1.0) / 2.0) / ((double)npos * (double)nneg);
    eb_free(v);
    return EB_OK;
}
