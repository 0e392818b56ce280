/* posterior.c: a validated view of a bundle's posterior and prediction of
 * member probabilities p[n][s][c] from it. */
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_methods.h"

eb_status eb_posterior_from_bundle(const eb_bundle *b, eb_posterior *p, eb_error *err)
{
    eb_status st;
    memset(p, 0, sizeof *p);
    st = eb_arch_parse(eb_bundle_arch(b), &p->arch, err);
    if (st)
        return eb_error_prefix(err, "%s: ", eb_bundle_path(b));
    p->repr = eb_bundle_repr(b);
    p->members = eb_bundle_members(b);
    p->k = (size_t)eb_bundle_nparams(b);
    p->params = eb_bundle_params(b);
    if (p->k != p->arch.n_params)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: the posterior holds %zu parameters per member but its "
                            "architecture needs %zu", eb_bundle_path(b), p->k, p->arch.n_params);
    if (p->repr != EB_REPR_SAMPLES && p->repr != EB_REPR_DROPOUT)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "%s: representation '%s' cannot be predicted by this version",
                            eb_bundle_path(b), eb_repr_name(p->repr));
    if (p->repr == EB_REPR_DROPOUT && !eb_arch_has_dropout(&p->arch))
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: a dropout posterior whose architecture has no dropout layer",
                            eb_bundle_path(b));
    if (!p->params || p->members < 1)
        return eb_error_set(err, EB_ERR_FORMAT, "%s: the posterior has no parameters",
                            eb_bundle_path(b));
    return EB_OK;
}

uint32_t eb_posterior_default_draws(const eb_posterior *p)
{
    return p->members;
}

eb_status eb_posterior_predict(const eb_posterior *p, const float *x, size_t n, uint32_t S,
                               uint64_t seed, int batch, float *probs, eb_error *err)
{
    const size_t C = (size_t)p->arch.n_classes, in = p->arch.in_size;
    eb_net *net;
    float *tmp;
    eb_status st;

    if (S == 0)
        S = eb_posterior_default_draws(p);
    if (p->repr == EB_REPR_SAMPLES && S > p->members)
        return eb_error_set(err, EB_ERR_ARG, "asked for %u draws from a posterior of %u samples",
                            S, p->members);
    if (batch <= 0)
        batch = 256;
    if ((size_t)batch > n && n > 0)
        batch = (int)n;
    st = eb_net_new(&p->arch, batch, &net, err);
    if (st)
        return st;
    tmp = eb_malloc((size_t)batch * C * sizeof *tmp);
    if (!tmp) {
        eb_net_free(net);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for predictions");
    }
    for (uint32_t s = 0; s < S; s++) {
        const float *theta = p->repr == EB_REPR_SAMPLES ? p->params + (size_t)s * p->k : p->params;
        for (size_t first = 0; first < n; first += (size_t)batch) {
            const int nb = (int)(n - first < (size_t)batch ? n - first : (size_t)batch);
            eb_dropout_ctx drop = {p->repr == EB_REPR_DROPOUT ? EB_DROPOUT_SAMPLE : EB_DROPOUT_OFF,
                                   eb_rng_mix64(seed ^ EB_STREAM_PREDICT), s, first};
            const float *logits = eb_net_forward(net, theta, x + first * in, nb, &drop);
            eb_softmax(tmp, logits, nb, (int)C);
            for (int i = 0; i < nb; i++)
                memcpy(probs + ((first + (size_t)i) * S + s) * C, tmp + (size_t)i * C,
                       C * sizeof *tmp);
        }
    }
    eb_free(tmp);
    eb_net_free(net);
    return EB_OK;
}
