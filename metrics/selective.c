/* selective.c: selective prediction, the accuracy-rejection curve and its
 * area. Conventions: docs/metrics.md ("Selective prediction"). */
#include <math.h>
#include <stdlib.h>

#include "common/eb_alloc.h"
#include "metrics/eb_metrics.h"
#include "metrics/metrics_internal.h"

/* Decreasing confidence: the kept examples are a prefix. */
static int by_conf_desc(const void *pa, const void *pb)
{
    double a = ((const eb__conf *)pa)->conf, b = ((const eb__conf *)pb)->conf;
    return (a < b) - (a > b);
}

/* Replaces each example's correctness by the mean of its tie group, so a
 * cut through a tie counts the expectation over the tie's orders. */
static void tie_average(eb__conf *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        double right = 0.0;
        while (j < n && v[j].conf == v[i].conf)
            right += v[j++].correct;
        for (size_t k = i; k < j; k++)
            v[k].correct = right / (double)(j - i);
        i = j;
    }
}

eb_status eb_metric_rejection_curve(const float *pbar, const uint8_t *y, size_t n, size_t C,
                                    const double *confidence, size_t grid, double *acc,
                                    double *area, eb_error *err)
{
    const char *what = "accuracy-rejection curve";
    eb__conf *v;
    size_t bytes, top, kept = 0;
    double right = 0.0, sum = 0.0;
    eb_status st;

    if (n == 0 || C == 0 || grid == 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "%s needs examples, classes and grid points (got %zu, %zu, %zu)", what,
                            n, C, grid);
    if (eb_size_mul(grid, n, &top))
        return eb_error_set(err, EB_ERR_ARG, "%s: grid %zu times %zu examples overflows", what,
                            grid, n);
    st = eb__check_labels(y, n, C, what, err);
    if (st)
        return st;
    if (eb_size_mul(n, sizeof *v, &bytes))
        return eb_error_set(err, EB_ERR_ARG, "%s: %zu examples overflow", what, n);
    v = eb_malloc(bytes);
    if (!v)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory sorting %zu examples", what, n);
    eb__conf_fill(v, pbar, y, confidence, NULL, n, C);
    for (size_t i = 0; i < n; i++)
        if (isnan(v[i].conf)) {
            eb_free(v);
            return eb_error_set(err, EB_ERR_ARG, "%s: %s of example %zu is NaN", what,
                                confidence ? "confidence" : "max pbar", i);
        }
    qsort(v, n, sizeof *v, by_conf_desc);
    tie_average(v, n);
    /* From the largest rejection rate down, the kept prefix only grows,
     * so one pass accumulates every point. k * n < grid * n fits (checked). */
    for (size_t k = grid; k-- > 0;) {
        size_t keep = n - k * n / grid; /* >= 1 because k < grid */
        double a;
        while (kept < keep)
            right += v[kept++].correct;
        a = right / (double)keep;
        if (acc)
            acc[k] = a;
        sum += a;
    }
    eb_free(v);
    if (area)
        *area = sum / (double)grid;
    return EB_OK;
}
