/* sampler_meta.c: what the Bayesian network methods share around their
 * samplers: training on a subset, and recording traces and convergence
 * diagnostics in the bundle's metadata (keys trace.*, hmc.*, diag.*;
 * docs/methods.md lists them). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_samplers.h"

eb_dataset eb_sampler_subset(const eb_dataset *data, long subset)
{
    eb_dataset d = *data;
    if (subset > 0 && (size_t)subset < d.n)
        d.n = (size_t)subset;
    return d;
}

/* Appends values as comma-separated %.6g text (no newline). */
static eb_status meta_series(eb_trained *t, const char *key, const double *v, size_t n,
                             eb_error *err)
{
    char *buf = eb_malloc(n * 16 + 1);
    size_t used = 0;
    eb_status st;
    if (!buf)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for metadata '%s'", key);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(buf + used, 17, "%s%.6g", i ? "," : "", v[i]);
    st = eb_trained_meta(t, key, buf, err);
    eb_free(buf);
    return st;
}

static eb_status meta_num(eb_trained *t, const char *key, double v, eb_error *err)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", v);
    return eb_trained_meta(t, key, buf, err);
}

eb_status eb_sampler_trace_to_meta(const eb_sampler_trace *tr, eb_trained *t, eb_error *err)
{
    eb_status st = EB_OK;
    for (int c = 0; c < tr->chains && !st; c++) {
        char key[64];
        const size_t off = (size_t)c * (size_t)tr->points;
        snprintf(key, sizeof key, "trace.chain%d.loss", c);
        st = meta_series(t, key, tr->loss + off, (size_t)tr->points, err);
        snprintf(key, sizeof key, "trace.chain%d.nll", c);
        if (!st)
            st = meta_series(t, key, tr->nll + off, (size_t)tr->points, err);
        if (tr->accept_rate && !st) {
            snprintf(key, sizeof key, "hmc.chain%d.accept_rate", c);
            st = meta_num(t, key, tr->accept_rate[c], err);
            snprintf(key, sizeof key, "hmc.chain%d.step_size", c);
            if (!st)
                st = meta_num(t, key, tr->step_size[c], err);
            snprintf(key, sizeof key, "hmc.chain%d.leapfrog", c);
            if (!st)
                st = meta_num(t, key, (double)tr->leapfrog[c], err);
        }
    }
    return st;
}

eb_status eb_sampler_probe_to_meta(const eb_arch *arch, const float *samples, int chains,
                                   int draws, const eb_dataset *data, size_t probes,
                                   eb_trained *t, eb_error *err)
{
    const size_t C = (size_t)arch->n_classes, S = (size_t)chains * (size_t)draws;
    eb_posterior p;
    eb_chain_diag d;
    float *probs = NULL;
    double *q = NULL, *ll = NULL;
    eb_status st;

    if (probes > data->n)
        probes = data->n;
    if (probes == 0)
        return EB_OK;
    memset(&p, 0, sizeof p);
    p.arch = *arch;
    p.repr = EB_REPR_SAMPLES;
    p.members = (uint32_t)S;
    p.k = arch->n_params;
    p.params = samples;
    probs = eb_malloc(probes * S * C * sizeof *probs);
    q = eb_malloc(S * probes * sizeof *q);
    ll = eb_calloc(S, sizeof *ll);
    if (!probs || !q || !ll) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for probe diagnostics");
        goto done;
    }
    st = eb_posterior_predict(&p, data->x, probes, (uint32_t)S, 0, 0, probs, err);
    if (st)
        goto done;
    for (size_t i = 0; i < probes; i++)
        for (size_t s = 0; s < S; s++) {
            const double py = probs[(i * S + s) * C + data->y[i]];
            q[s * probes + i] = py;
            ll[s] += log(py > 1e-12 ? py : 1e-12) / (double)probes;
        }
    /* per chain: each sample's mean probe log-likelihood */
    for (int c = 0; c < chains && !st; c++) {
        char key[64];
        snprintf(key, sizeof key, "trace.chain%d.loglik", c);
        st = meta_series(t, key, ll + (size_t)c * (size_t)draws, (size_t)draws, err);
    }
    if (!st)
        st = meta_num(t, "diag.probes", (double)probes, err);
    /* R-hat and ESS need 4 draws per chain; with fewer, only the traces */
    if (!st && draws >= 4) {
        double r, e;
        st = eb_diag_predictive(q, chains, draws, probes, &d, err);
        if (!st)
            st = meta_num(t, "diag.rhat_max", d.rhat_max, err);
        if (!st)
            st = meta_num(t, "diag.rhat_mean", d.rhat_mean, err);
        if (!st)
            st = meta_num(t, "diag.ess_min", d.ess_min, err);
        if (!st)
            st = meta_num(t, "diag.ess_mean", d.ess_mean, err);
        if (!st)
            st = eb_diag_split_rhat(ll, chains, draws, &r, err);
        if (!st)
            st = eb_diag_ess(ll, chains, draws, &e, err);
        if (!st)
            st = meta_num(t, "diag.loglik_rhat", r, err);
        if (!st)
            st = meta_num(t, "diag.loglik_ess", e, err);
    }
done:
    eb_free(probs);
    eb_free(q);
    eb_free(ll);
    return st;
}
