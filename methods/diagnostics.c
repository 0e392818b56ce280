/* diagnostics.c: MCMC convergence diagnostics (split R-hat, effective
 * sample size), posterior fidelity against a reference predictive, and
 * member disagreement: pure numerics over arrays, plus the one function
 * that feeds a posterior's member predictions into them. */
#include <math.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_samplers.h"

/* The split chains: 2 * chains halves of h = floor(n / 2) draws; the
 * middle draw of an odd n is dropped. Half j of chain m starts at draw
 * m * n + j * (n - h). */
static const double *half_at(const double *draws, int n, int half)
{
    const int h = n / 2, m = half / 2, j = half % 2;
    return draws + (size_t)m * (size_t)n + (size_t)j * (size_t)(n - h);
}

static eb_status check_shape(const char *what, int chains, int n, eb_error *err)
{
    if (chains < 1 || n < 4)
        return eb_error_set(err, EB_ERR_ARG, "%s needs at least 1 chain and 4 draws per chain "
                            "(got %d chains of %d)", what, chains, n);
    return EB_OK;
}

/* Per split chain: means (M), variances with denominator h - 1 (M). */
static void split_moments(const double *draws, int chains, int n, double *mean, double *var)
{
    const int M = 2 * chains, h = n / 2;
    for (int k = 0; k < M; k++) {
        const double *x = half_at(draws, n, k);
        double s = 0.0, ss = 0.0;
        for (int i = 0; i < h; i++)
            s += x[i];
        s /= h;
        for (int i = 0; i < h; i++)
            ss += (x[i] - s) * (x[i] - s);
        mean[k] = s;
        var[k] = ss / (h - 1);
    }
}

/* W (mean within variance) and var+ (BDA3 eq. 11.3) of the split chains. */
static eb_status split_w_varplus(const double *draws, int chains, int n, double *W,
                                 double *varplus, double *B_over_h, eb_error *err)
{
    const int M = 2 * chains, h = n / 2;
    double *mean = eb_malloc(2 * (size_t)M * sizeof *mean), *var, grand = 0.0, b = 0.0, w = 0.0;
    if (!mean)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for diagnostics");
    var = mean + M;
    split_moments(draws, chains, n, mean, var);
    for (int k = 0; k < M; k++) {
        grand += mean[k];
        w += var[k];
    }
    grand /= M;
    w /= M;
    for (int k = 0; k < M; k++)
        b += (mean[k] - grand) * (mean[k] - grand);
    b /= (M - 1); /* B / h: the variance of the chain means */
    *W = w;
    *B_over_h = b;
    *varplus = (double)(h - 1) / h * w + b;
    eb_free(mean);
    return EB_OK;
}

eb_status eb_diag_split_rhat(const double *draws, int chains, int n, double *rhat,
                             eb_error *err)
{
    double W, vp, b;
    eb_status st = check_shape("split R-hat", chains, n, err);
    if (!st)
        st = split_w_varplus(draws, chains, n, &W, &vp, &b, err);
    if (st)
        return st;
    if (W <= 0.0)
        *rhat = b > 0.0 ? INFINITY : 1.0;
    else
        *rhat = sqrt(vp / W);
    return EB_OK;
}

/* Mean over split chains of the lag-t autocovariance with denominator h
 * (the biased estimator Stan's FFT computes). */
static double mean_acov(const double *draws, int chains, int n, const double *mean, int t)
{
    const int M = 2 * chains, h = n / 2;
    double total = 0.0;
    for (int k = 0; k < M; k++) {
        const double *x = half_at(draws, n, k);
        double s = 0.0;
        for (int i = 0; i + t < h; i++)
            s += (x[i] - mean[k]) * (x[i + t] - mean[k]);
        total += s / h;
    }
    return total / M;
}

eb_status eb_diag_ess(const double *draws, int chains, int n, double *ess, eb_error *err)
{
    const int M = 2 * chains, h = n / 2;
    double *mean = NULL, *var, *rho = NULL, W, vp, b, tau, total = (double)M * h, rho_even,
           rho_odd;
    int s, max_s;
    eb_status st = check_shape("ESS", chains, n, err);
    if (st)
        return st;
    mean = eb_malloc(2 * (size_t)M * sizeof *mean);
    rho = eb_calloc((size_t)h + 2, sizeof *rho);
    if (!mean || !rho) {
        eb_free(mean);
        eb_free(rho);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for diagnostics");
    }
    var = mean + M;
    split_moments(draws, chains, n, mean, var);
    st = split_w_varplus(draws, chains, n, &W, &vp, &b, err);
    if (st)
        goto done;
    if (!(vp > 0.0)) {
        /* constant draws: nothing to correlate; every draw counts */
        *ess = total;
        goto done;
    }
    /* Stan's compute_effective_sample_size: Geyer's initial positive
     * sequence over pairs of autocorrelations, the last positive even one
     * kept as a bias term, then made monotone. */
    rho_even = 1.0;
    rho[0] = 1.0;
    rho_odd = 1.0 - (W - mean_acov(draws, chains, n, mean, 1)) / vp;
    rho[1] = rho_odd;
    s = 1;
    while (s < h - 4 && rho_even + rho_odd > 0.0) {
        rho_even = 1.0 - (W - mean_acov(draws, chains, n, mean, s + 1)) / vp;
        rho_odd = 1.0 - (W - mean_acov(draws, chains, n, mean, s + 2)) / vp;
        if (rho_even + rho_odd >= 0.0) {
            rho[s + 1] = rho_even;
            rho[s + 2] = rho_odd;
        }
        s += 2;
    }
    max_s = s;
    if (rho_even > 0.0)
        rho[max_s + 1] = rho_even;
    for (int k = 1; k <= max_s - 3; k += 2)
        if (rho[k + 1] + rho[k + 2] > rho[k - 1] + rho[k]) {
            rho[k + 1] = (rho[k - 1] + rho[k]) / 2.0;
            rho[k + 2] = rho[k + 1];
        }
    tau = -1.0;
    for (int k = 0; k < max_s; k++)
        tau += 2.0 * rho[k];
    tau += rho[max_s + 1];
    *ess = total / tau;
    if (!(tau > 0.0) || *ess > total * log10(total))
        *ess = total * log10(total);
done:
    eb_free(mean);
    eb_free(rho);
    return st;
}

static size_t argmax(const float *p, size_t C)
{
    size_t best = 0;
    for (size_t c = 1; c < C; c++)
        if (p[c] > p[best])
            best = c;
    return best;
}

void eb_diag_fidelity(const float *pbar, const float *pref, size_t n, size_t C,
                      double *agreement, double *tv)
{
    size_t agree = 0;
    double dist = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *a = pbar + i * C, *r = pref + i * C;
        double d = 0.0;
        agree += argmax(a, C) == argmax(r, C);
        for (size_t c = 0; c < C; c++)
            d += fabs((double)a[c] - (double)r[c]);
        dist += 0.5 * d;
    }
    *agreement = n ? (double)agree / (double)n : 0.0;
    *tv = n ? dist / (double)n : 0.0;
}

double eb_diag_disagreement(const float *probs, size_t n, size_t S, size_t C)
{
    /* per row: with n_c members voting class c, the agreeing pairs are
     * sum_c n_c (n_c - 1) / 2 out of S (S - 1) / 2 */
    double total = 0.0;
    const double pairs = (double)S * (double)(S - 1) / 2.0;
    if (S < 2 || n == 0)
        return 0.0;
    for (size_t i = 0; i < n; i++) {
        double agree = 0.0;
        if (C <= 256) {
            size_t counts[256];
            memset(counts, 0, C * sizeof *counts);
            for (size_t s = 0; s < S; s++)
                counts[argmax(probs + (i * S + s) * C, C)]++;
            for (size_t c = 0; c < C; c++)
                agree += (double)counts[c] * ((double)counts[c] - 1.0) / 2.0;
        } else {
            /* many classes: compare the pairs directly (no allocation) */
            for (size_t s = 0; s < S; s++)
                for (size_t t = s + 1; t < S; t++)
                    agree += argmax(probs + (i * S + s) * C, C) ==
                             argmax(probs + (i * S + t) * C, C);
        }
        total += 1.0 - agree / pairs;
    }
    return total / (double)n;
}

eb_status eb_diag_predictive(const double *q, int chains, int draws, size_t probes,
                             eb_chain_diag *out, eb_error *err)
{
    double *series, rsum = 0.0, esum = 0.0;
    size_t rn = 0;
    eb_status st = check_shape("predictive diagnostics", chains, draws, err);
    memset(out, 0, sizeof *out);
    if (st)
        return st;
    if (probes == 0)
        return eb_error_set(err, EB_ERR_ARG, "predictive diagnostics need at least one probe "
                            "input");
    series = eb_malloc((size_t)chains * (size_t)draws * sizeof *series);
    if (!series)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for diagnostics");
    out->chains = chains;
    out->draws = draws;
    out->probes = probes;
    out->rhat_max = 0.0;
    out->ess_min = INFINITY;
    for (size_t i = 0; i < probes && !st; i++) {
        double r, e;
        for (size_t s = 0; s < (size_t)chains * (size_t)draws; s++)
            series[s] = q[s * probes + i];
        st = eb_diag_split_rhat(series, chains, draws, &r, err);
        if (!st)
            st = eb_diag_ess(series, chains, draws, &e, err);
        if (st)
            break;
        if (r > out->rhat_max || isnan(r))
            out->rhat_max = r;
        if (isfinite(r)) {
            rsum += r;
            rn++;
        }
        if (e < out->ess_min)
            out->ess_min = e;
        esum += e;
    }
    out->rhat_mean = rn ? rsum / (double)rn : INFINITY;
    out->ess_mean = esum / (double)probes;
    eb_free(series);
    return st;
}

eb_status eb_posterior_chain_diag(const eb_posterior *p, int chains, const float *x,
                                  const uint8_t *y, size_t n, eb_chain_diag *out, eb_error *err)
{
    const size_t C = (size_t)p->arch.n_classes;
    const uint32_t S = p->members;
    float *probs;
    double *q;
    eb_status st;

    memset(out, 0, sizeof *out);
    if (p->repr != EB_REPR_SAMPLES)
        return eb_error_set(err, EB_ERR_ARG, "chain diagnostics need a samples posterior, not %s",
                            eb_repr_name(p->repr));
    if (chains < 1 || S % (uint32_t)chains)
        return eb_error_set(err, EB_ERR_ARG, "%u members do not split into %d chains", S, chains);
    for (size_t i = 0; i < n; i++)
        if (y[i] >= C)
            return eb_error_set(err, EB_ERR_ARG, "label %u of probe %zu is not below %zu classes",
                                y[i], i, C);
    probs = eb_malloc(n * S * C * sizeof *probs);
    q = eb_malloc((size_t)S * n * sizeof *q);
    if (!probs || !q) {
        eb_free(probs);
        eb_free(q);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for chain diagnostics");
    }
    st = eb_posterior_predict(p, x, n, S, 0, 0, probs, err);
    if (!st) {
        for (size_t i = 0; i < n; i++)
            for (uint32_t s = 0; s < S; s++)
                q[(size_t)s * n + i] = probs[(i * S + s) * C + y[i]];
        st = eb_diag_predictive(q, chains, (int)(S / (uint32_t)chains), n, out, err);
    }
    eb_free(probs);
    eb_free(q);
    return st;
}
