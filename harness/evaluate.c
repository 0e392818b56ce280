/* evaluate.c: predictions on the test and OOD sets, scored. */
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "harness/eb_eval.h"
#include "metrics/eb_metrics.h"

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* probs (n, S, C) for data; total and MI per example. */
static eb_status predict_set(const eb_posterior *p, const eb_dataset *d, uint32_t S,
                             uint64_t seed, float **probs, double **total, double **mi,
                             eb_error *err)
{
    const size_t C = eb_posterior_classes(p);
    size_t bytes;
    eb_status st;

    *probs = NULL;
    *total = *mi = NULL;
    if ((size_t)d->h * d->w * d->c != p->arch.in_size)
        return eb_error_set(err, EB_ERR_ARG,
                            "dataset %s/%s has %dx%dx%d images; the posterior expects %dx%dx%d",
                            d->name, d->split, d->h, d->w, d->c, p->arch.in_h, p->arch.in_w,
                            p->arch.in_c);
    if (eb_size_mul(d->n * S, C * sizeof(float), &bytes))
        return eb_error_set(err, EB_ERR_NOMEM, "predictions of %zu x %u draws overflow", d->n, S);
    *probs = eb_malloc(bytes);
    *total = eb_malloc(d->n * sizeof **total);
    *mi = eb_malloc(d->n * sizeof **mi);
    if (!*probs || !*total || !*mi)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu bytes of predictions",
                            bytes);
    st = eb_posterior_predict(p, d->x, d->n, S, seed, 0, *probs, err);
    if (st)
        return st;
    eb_metric_uncertainty(*total, NULL, *mi, *probs, d->n, S, C);
    return EB_OK;
}

static double mean(const double *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return n ? s / (double)n : 0.0;
}

eb_status eb_evaluate(const eb_posterior *p, const eb_dataset *test, const eb_dataset *ood,
                      uint32_t S, uint64_t seed, eb_eval_result *r, eb_error *err)
{
    const size_t C = eb_posterior_classes(p);
    float *probs = NULL, *pbar = NULL, *oprobs = NULL;
    double *total = NULL, *mi = NULL, *ototal = NULL, *omi = NULL;
    eb_status st;
    double t0 = now_sec();

    memset(r, 0, sizeof *r);
    if (S == 0)
        S = eb_posterior_default_draws(p);
    r->draws = S;
    st = predict_set(p, test, S, seed, &probs, &total, &mi, err);
    if (st)
        goto done;
    pbar = eb_malloc(test->n * C * sizeof *pbar);
    if (!pbar) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the predictive");
        goto done;
    }
    eb_metric_predictive(pbar, probs, test->n, S, C);
    r->n_test = test->n;
    r->accuracy = eb_metric_accuracy(pbar, test->y, test->n, C);
    r->nll = eb_metric_nll(pbar, test->y, test->n, C);
    r->brier = eb_metric_brier(pbar, test->y, test->n, C);
    r->test_entropy = mean(total, test->n);
    r->test_mi = mean(mi, test->n);
    if (ood) {
        st = predict_set(p, ood, S, seed, &oprobs, &ototal, &omi, err);
        if (st)
            goto done;
        r->n_ood = ood->n;
        r->ood_entropy = mean(ototal, ood->n);
        r->ood_mi = mean(omi, ood->n);
        st = eb_metric_auroc(ototal, ood->n, total, test->n, &r->auroc_entropy, err);
        if (!st)
            st = eb_metric_auroc(omi, ood->n, mi, test->n, &r->auroc_mi, err);
    }
    r->predict_seconds = now_sec() - t0;
done:
    eb_free(probs);
    eb_free(pbar);
    eb_free(oprobs);
    eb_free(total);
    eb_free(mi);
    eb_free(ototal);
    eb_free(omi);
    return st;
}
