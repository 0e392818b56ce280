/* basic.c: accuracy, NLL, Brier, the entropy decomposition and AUROC. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "metrics/eb_metrics.h"

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

static size_t argmax(const float *p, size_t C)
{
    size_t best = 0;
    for (size_t c = 1; c < C; c++)
        if (p[c] > p[best])
            best = c;
    return best;
}

double eb_metric_accuracy(const float *pbar, const uint8_t *y, size_t n, size_t C)
{
    size_t right = 0;
    for (size_t i = 0; i < n; i++)
        right += argmax(pbar + i * C, C) == y[i];
    return n ? (double)right / (double)n : 0.0;
}

double eb_metric_nll(const float *pbar, const uint8_t *y, size_t n, size_t C)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double p = pbar[i * C + y[i]];
        s -= log(p > EB_METRIC_PROB_FLOOR ? p : EB_METRIC_PROB_FLOOR);
    }
    return n ? s / (double)n : 0.0;
}

double eb_metric_brier(const float *pbar, const uint8_t *y, size_t n, size_t C)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < C; c++) {
            double d = pbar[i * C + c] - (c == y[i] ? 1.0 : 0.0);
            s += d * d;
        }
    return n ? s / (double)n : 0.0;
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
