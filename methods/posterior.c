/* posterior.c: a validated view of a bundle's posterior (decoded to dense
 * f32 when the bundle stores f16, int8 or sparse values) and prediction of
 * member probabilities p[n][s][c] from it: samples (member s), dropout
 * (pass s with keyed masks), gaussian (weights mu + sigma * eps drawn
 * per draw from a keyed stream) and distilled students (one forward pass,
 * the head mapped to S members by methods/distill.c). */
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_distill.h"
#include "methods/eb_methods.h"
#include "methods/eb_samplers.h"

/* Decodes every row of the bundle's tensors into one owned, 64-byte
 * aligned buffer: params (rows, K) then, for gaussian, sigma (K). */
static eb_status decode_owned(const eb_bundle *b, eb_posterior *p, eb_error *err)
{
    const uint32_t rows = eb_bundle_param_rows(b);
    const int gaussian = p->repr == EB_REPR_GAUSSIAN;
    size_t cells, bytes;
    eb_status st;
    if (eb_size_mul((size_t)rows + (size_t)gaussian, p->k, &cells) ||
        eb_size_mul(cells, sizeof(float), &bytes))
        return eb_error_set(err, EB_ERR_NOMEM, "%s: %u x %zu decoded parameters overflow memory",
                            eb_bundle_path(b), rows + (unsigned)gaussian, p->k);
    p->owned = eb_malloc_aligned(64, bytes);
    if (!p->owned)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory decoding %zu parameters "
                            "stored as %s", eb_bundle_path(b), cells,
                            eb_storage_name(p->storage));
    for (uint32_t r = 0; r < rows; r++)
        if ((st = eb_bundle_decode(b, EB_TENSOR_PARAMS, r, p->owned + (size_t)r * p->k, err)))
            return st;
    if (gaussian &&
        (st = eb_bundle_decode(b, EB_TENSOR_SIGMA, 0, p->owned + (size_t)rows * p->k, err)))
        return st;
    p->params = p->owned;
    p->sigma = gaussian ? p->owned + (size_t)rows * p->k : NULL;
    return EB_OK;
}

static eb_status from_bundle(const eb_bundle *b, eb_posterior *p, eb_error *err)
{
    eb_status st;
    st = eb_arch_parse(eb_bundle_arch(b), &p->arch, err);
    if (st)
        return eb_error_prefix(err, "%s: ", eb_bundle_path(b));
    p->repr = eb_bundle_repr(b);
    p->members = eb_bundle_members(b);
    p->k = (size_t)eb_bundle_nparams(b);
    p->storage = eb_bundle_storage(b);
    p->head = eb_bundle_head(b);
    if ((uint64_t)p->k != eb_bundle_nparams(b) || p->k != p->arch.n_params)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: the posterior holds %llu parameters per member but its "
                            "architecture needs %zu", eb_bundle_path(b),
                            (unsigned long long)eb_bundle_nparams(b), p->arch.n_params);
    if (p->repr != EB_REPR_SAMPLES && p->repr != EB_REPR_DROPOUT && p->repr != EB_REPR_GAUSSIAN &&
        p->repr != EB_REPR_DISTILLED)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "%s: representation '%s' cannot be predicted by this version",
                            eb_bundle_path(b), eb_repr_name(p->repr));
    if (p->repr == EB_REPR_DROPOUT && !eb_arch_has_dropout(&p->arch))
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: a dropout posterior whose architecture has no dropout layer",
                            eb_bundle_path(b));
    if (p->storage == EB_STORE_F32) {
        p->params = eb_bundle_params(b);
        p->sigma = eb_bundle_sigma(b);
    } else if ((st = decode_owned(b, p, err))) {
        return st;
    }
    if (p->repr == EB_REPR_GAUSSIAN && !p->sigma)
        return eb_error_set(err, EB_ERR_FORMAT, "%s: a gaussian posterior without sigma",
                            eb_bundle_path(b));
    if (!p->params || p->members < 1)
        return eb_error_set(err, EB_ERR_FORMAT, "%s: the posterior has no parameters",
                            eb_bundle_path(b));
    return EB_OK;
}

eb_status eb_posterior_from_bundle(const eb_bundle *b, eb_posterior *p, eb_error *err)
{
    eb_status st;
    memset(p, 0, sizeof *p);
    st = from_bundle(b, p, err);
    if (st)
        eb_posterior_release(p);
    return st;
}

void eb_posterior_release(eb_posterior *p)
{
    if (!p || !p->owned)
        return;
    eb_free_aligned(p->owned);
    p->owned = NULL;
    p->params = NULL;
    p->sigma = NULL;
}

size_t eb_posterior_classes(const eb_posterior *p)
{
    if (p->repr == EB_REPR_DISTILLED)
        return (size_t)eb_distill_classes(p->head, p->arch.n_classes);
    return (size_t)p->arch.n_classes;
}

uint32_t eb_posterior_default_draws(const eb_posterior *p)
{
    return p->members;
}

struct eb_predictor {
    const eb_posterior *p;
    int max_batch;
    uint32_t max_draws;
    eb_net *net;
    float *probs;   /* (max_batch, max_draws, C): a batch's member probabilities */
    float *dlogits; /* (max_batch, O), O = the network's outputs (C, or C + 1 for gped) */
    double *alpha;  /* (C) distilled: a head's Dirichlet concentrations */
    float *dx;      /* (max_batch, in): one draw's input gradient */
    float *theta;   /* (K) gaussian: the current draw's weights; else NULL */
    size_t bytes;
};

eb_status eb_predictor_new(const eb_posterior *p, int max_batch, uint32_t max_draws,
                           eb_predictor **out, eb_error *err)
{
    const size_t C = eb_posterior_classes(p), O = (size_t)p->arch.n_classes;
    const size_t in = p->arch.in_size;
    eb_predictor *pr;
    eb_status st;
    size_t probs_len;

    *out = NULL;
    if (max_draws == 0)
        max_draws = eb_posterior_default_draws(p);
    if (p->repr == EB_REPR_SAMPLES && max_draws > p->members)
        return eb_error_set(err, EB_ERR_ARG, "asked for %u draws from a posterior of %u samples",
                            max_draws, p->members);
    if (max_batch < 1)
        return eb_error_set(err, EB_ERR_ARG, "batch size %d must be positive", max_batch);
    if (p->repr == EB_REPR_DISTILLED &&
        (p->head < EB_HEAD_CATEGORICAL || p->head > EB_HEAD_DIRICHLET || C < 1 ||
         C > EB_DISTILL_MAX_CLASSES || (p->head == EB_HEAD_GPED && C < 2)))
        return eb_error_set(err, EB_ERR_FORMAT,
                            "a distilled posterior with head %d and %zu outputs cannot be "
                            "predicted (heads 1-3, at most %d classes)", (int)p->head, O,
                            EB_DISTILL_MAX_CLASSES);
    if (eb_size_mul((size_t)max_batch * max_draws, C, &probs_len))
        return eb_error_set(err, EB_ERR_ARG, "%d inputs x %u draws overflow", max_batch,
                            max_draws);
    pr = eb_calloc(1, sizeof *pr);
    if (!pr)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a predictor");
    pr->p = p;
    pr->max_batch = max_batch;
    pr->max_draws = max_draws;
    st = eb_net_new(&p->arch, max_batch, &pr->net, err);
    if (st) {
        eb_free(pr);
        return st;
    }
    pr->probs = eb_malloc(probs_len * sizeof *pr->probs);
    pr->dlogits = eb_malloc((size_t)max_batch * O * sizeof *pr->dlogits);
    pr->alpha = eb_malloc(C * sizeof *pr->alpha);
    pr->dx = eb_malloc((size_t)max_batch * in * sizeof *pr->dx);
    if (p->repr == EB_REPR_GAUSSIAN)
        pr->theta = eb_malloc_aligned(64, p->k * sizeof *pr->theta);
    if (!pr->probs || !pr->dlogits || !pr->alpha || !pr->dx ||
        (p->repr == EB_REPR_GAUSSIAN && !pr->theta)) {
        eb_predictor_free(pr);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for prediction buffers");
    }
    pr->bytes = eb_net_workspace_bytes(pr->net) +
                (probs_len + (size_t)max_batch * (O + in)) * sizeof(float) + C * sizeof(double) +
                (pr->theta ? p->k * sizeof(float) : 0);
    *out = pr;
    return EB_OK;
}

void eb_predictor_free(eb_predictor *pr)
{
    if (!pr)
        return;
    eb_net_free(pr->net);
    eb_free(pr->probs);
    eb_free(pr->dlogits);
    eb_free(pr->alpha);
    eb_free(pr->dx);
    eb_free_aligned(pr->theta);
    eb_free(pr);
}

size_t eb_predictor_bytes(const eb_predictor *pr)
{
    return pr->bytes;
}

static eb_status check_draws(const eb_predictor *pr, uint32_t *S, eb_error *err)
{
    if (*S == 0)
        *S = eb_posterior_default_draws(pr->p);
    if (*S > pr->max_draws)
        return eb_error_set(err, EB_ERR_ARG, "asked for %u draws; this predictor allows %u", *S,
                            pr->max_draws);
    return EB_OK;
}

/* The weights of draw s; for gaussian, those the last draw_forward
 * sampled (it samples draw s before using them). */
static const float *draw_theta(const eb_predictor *pr, uint32_t s)
{
    const eb_posterior *p = pr->p;
    if (p->repr == EB_REPR_GAUSSIAN)
        return pr->theta;
    return p->repr == EB_REPR_SAMPLES ? p->params + (size_t)s * p->k : p->params;
}

/* gaussian: theta = mu + sigma * eps, eps from the stream (mix64(seed ^
 * EB_STREAM_PREDICT), s), so draw s has the same weights in every batch
 * and every call. */
static void sample_gaussian(eb_predictor *pr, uint32_t s, uint64_t seed)
{
    const eb_posterior *p = pr->p;
    eb_rng r;
    eb_rng_seed(&r, eb_rng_mix64(seed ^ EB_STREAM_PREDICT), s);
    eb_normal_fill(pr->theta, p->k, &r);
    for (size_t i = 0; i < p->k; i++)
        pr->theta[i] = p->params[i] + p->sigma[i] * pr->theta[i];
}

/* Forward of draw s over nb inputs; returns the logits (nb, C). */
static const float *draw_forward(eb_predictor *pr, uint32_t s, const float *x, int nb,
                                 uint64_t seed, uint64_t first_example)
{
    const eb_posterior *p = pr->p;
    const float *theta;
    if (p->repr == EB_REPR_GAUSSIAN)
        sample_gaussian(pr, s, seed);
    theta = draw_theta(pr, s);
    eb_dropout_ctx drop = {p->repr == EB_REPR_DROPOUT ? EB_DROPOUT_SAMPLE : EB_DROPOUT_OFF,
                           eb_rng_mix64(seed ^ EB_STREAM_PREDICT), s, first_example};
    return eb_net_forward(pr->net, theta, x, nb, &drop);
}

/* Member probabilities of one batch into pr->probs (nb, S, C). */
static void batch_probs(eb_predictor *pr, const float *x, int nb, uint32_t S, uint64_t seed,
                        uint64_t first_example)
{
    const size_t C = eb_posterior_classes(pr->p), O = (size_t)pr->p->arch.n_classes;
    if (pr->p->repr == EB_REPR_DISTILLED) {
        const float *z = eb_net_forward(pr->net, pr->p->params, x, nb, NULL);
        for (int i = 0; i < nb; i++)
            eb_distill_members(pr->probs + (size_t)i * S * C, z + (size_t)i * O, pr->p->head,
                               (int)C, S, seed, first_example + (uint64_t)i, pr->alpha);
        return;
    }
    for (uint32_t s = 0; s < S; s++) {
        const float *logits = draw_forward(pr, s, x, nb, seed, first_example);
        eb_softmax(pr->dlogits, logits, nb, (int)C);
        for (int i = 0; i < nb; i++)
            memcpy(pr->probs + ((size_t)i * S + s) * C, pr->dlogits + (size_t)i * C,
                   C * sizeof(float));
    }
}

eb_status eb_predictor_run(eb_predictor *pr, const float *x, size_t n, uint32_t S,
                           uint64_t seed, uint64_t first_example, float *probs, eb_error *err)
{
    const size_t C = eb_posterior_classes(pr->p), in = pr->p->arch.in_size;
    eb_status st = check_draws(pr, &S, err);
    if (st)
        return st;
    for (size_t first = 0; first < n; first += (size_t)pr->max_batch) {
        const int nb = (int)(n - first < (size_t)pr->max_batch ? n - first : (size_t)pr->max_batch);
        batch_probs(pr, x + first * in, nb, S, seed, first_example + first);
        memcpy(probs + first * S * C, pr->probs, (size_t)nb * S * C * sizeof(float));
    }
    return EB_OK;
}

/* A student's input gradient of -log m_y, m the head's predictive mean. */
static void distilled_input_grad(eb_predictor *pr, const float *x, const uint8_t *y, int nb,
                                 float *dx, float *pbar)
{
    const eb_posterior *p = pr->p;
    const size_t C = eb_posterior_classes(p), O = (size_t)p->arch.n_classes;
    const float *z = eb_net_forward(pr->net, p->params, x, nb, NULL);
    for (int i = 0; i < nb; i++)
        eb_distill_mean_grad(pr->dlogits + (size_t)i * O, pbar ? pbar + (size_t)i * C : NULL,
                             z + (size_t)i * O, p->head, (int)O, (int)C, y[i]);
    eb_net_backward(pr->net, p->params, pr->dlogits, NULL, dx);
}

eb_status eb_predictor_input_grad(eb_predictor *pr, const float *x, const uint8_t *y, size_t n,
                                  uint32_t S, uint64_t seed, uint64_t first_example, float *dx,
                                  float *pbar, eb_error *err)
{
    const eb_posterior *p = pr->p;
    const size_t C = eb_posterior_classes(p), in = p->arch.in_size;
    eb_status st = check_draws(pr, &S, err);
    if (st)
        return st;
    for (size_t i = 0; i < n; i++)
        if (y[i] >= C)
            return eb_error_set(err, EB_ERR_ARG, "label %u of input %zu is not below %zu classes",
                                y[i], i, C);
    for (size_t first = 0; first < n; first += (size_t)pr->max_batch) {
        const int nb = (int)(n - first < (size_t)pr->max_batch ? n - first : (size_t)pr->max_batch);
        const float *xb = x + first * in;
        float *dxb = dx + first * in;
        if (p->repr == EB_REPR_DISTILLED) {
            distilled_input_grad(pr, xb, y + first, nb, dxb, pbar ? pbar + first * C : NULL);
            continue;
        }
        /* pass 1: every draw's probabilities, for pbar */
        batch_probs(pr, xb, nb, S, seed, first_example + first);
        memset(dxb, 0, (size_t)nb * in * sizeof *dxb);
        /* pass 2: per draw, d(-log pbar_y)/dlogits_s =
         *   -(1 / (S pbar_y)) p_s,y (e_y - p_s), back through the draw */
        for (uint32_t s = 0; s < S; s++) {
            draw_forward(pr, s, xb, nb, seed, first_example + first);
            for (int i = 0; i < nb; i++) {
                const float *ps = pr->probs + ((size_t)i * S + s) * C;
                double pb = 0.0, scale;
                float *d = pr->dlogits + (size_t)i * C;
                for (uint32_t t = 0; t < S; t++)
                    pb += pr->probs[((size_t)i * S + t) * C + y[first + (size_t)i]];
                pb /= S;
                if (pb < 1e-30)
                    pb = 1e-30;
                scale = -(double)ps[y[first + (size_t)i]] / (S * pb);
                for (size_t c = 0; c < C; c++)
                    d[c] = (float)(scale * ((c == y[first + (size_t)i] ? 1.0 : 0.0) - ps[c]));
            }
            /* only the input gradient: no parameter gradient */
            eb_net_backward(pr->net, draw_theta(pr, s), pr->dlogits, NULL, pr->dx);
            for (size_t k = 0; k < (size_t)nb * in; k++)
                dxb[k] += pr->dx[k];
        }
        if (pbar)
            for (int i = 0; i < nb; i++)
                for (size_t c = 0; c < C; c++) {
                    double m = 0.0;
                    for (uint32_t t = 0; t < S; t++)
                        m += pr->probs[((size_t)i * S + t) * C + c];
                    pbar[(first + (size_t)i) * C + c] = (float)(m / S);
                }
    }
    return EB_OK;
}

eb_status eb_posterior_predict(const eb_posterior *p, const float *x, size_t n, uint32_t S,
                               uint64_t seed, int batch, float *probs, eb_error *err)
{
    eb_predictor *pr;
    eb_status st;
    if (batch <= 0)
        batch = 256;
    if ((size_t)batch > n && n > 0)
        batch = (int)n;
    st = eb_predictor_new(p, batch, S, &pr, err);
    if (st)
        return st;
    st = eb_predictor_run(pr, x, n, S, seed, 0, probs, err);
    eb_predictor_free(pr);
    return st;
}
