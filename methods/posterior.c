/* posterior.c: a validated view of a bundle's posterior (decoded to dense
 * f32 when the bundle stores f16, int8 or sparse values, unless it is
 * kept quantized in place: EB_POSTERIOR_QUANTIZED) and prediction of
 * member probabilities p[n][s][c] from it: samples (member s), dropout
 * (pass s with keyed masks), gaussian (weights mu + sigma * eps drawn
 * per draw from a keyed stream) and distilled students (one forward pass,
 * the head mapped to S members by methods/distill.c). Quantized members
 * run on the int8/f16 kernels of methods/nn/nn_quant.h. */
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_distill.h"
#include "methods/eb_methods.h"
#include "methods/eb_samplers.h"
#include "methods/nn/nn_quant.h"

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

/* Whether EB_POSTERIOR_QUANTIZED keeps this posterior's values as
 * stored: int8 or f16 samples or distilled whose weights eb_qnet runs. */
static int keeps_stored(const eb_bundle *b, const eb_posterior *p)
{
    eb_bundle_stored sv;
    if ((p->storage != EB_STORE_INT8 && p->storage != EB_STORE_F16) ||
        (p->repr != EB_REPR_SAMPLES && p->repr != EB_REPR_DISTILLED))
        return 0;
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    if (!sv.values || sv.k != (uint64_t)p->k || sv.rows != eb_bundle_param_rows(b))
        return 0;
    return p->storage == EB_STORE_F16
               ? eb_qnet_supports(&p->arch, EB_QNET_F16, NULL, 0, NULL) == EB_OK
               : eb_qnet_supports(&p->arch, EB_QNET_INT8, sv.groups, (size_t)sv.n_groups,
                                  NULL) == EB_OK;
}

/* Whether EB_POSTERIOR_SPARSE keeps this posterior's values as stored:
 * shared-sparse or CSR samples. */
static int keeps_sparse(const eb_bundle *b, const eb_posterior *p)
{
    eb_bundle_stored sv;
    if ((p->storage != EB_STORE_SHARED_SPARSE && p->storage != EB_STORE_CSR) ||
        p->repr != EB_REPR_SAMPLES)
        return 0;
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    return sv.values && sv.index && sv.k == (uint64_t)p->k && sv.rows == eb_bundle_param_rows(b) &&
           (p->storage == EB_STORE_SHARED_SPARSE || sv.rowptr);
}

static eb_status from_bundle(const eb_bundle *b, unsigned flags, eb_posterior *p, eb_error *err)
{
    const unsigned known = EB_POSTERIOR_QUANTIZED | EB_POSTERIOR_SPARSE;
    eb_status st;
    if (flags & ~known)
        return eb_error_set(err, EB_ERR_ARG, "posterior flags 0x%x: unknown bits 0x%x", flags,
                            flags & ~known);
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
    {
        /* The bundle checked ACTSCALES' shape per row; the count per row
         * must be the architecture's weighted layers, whatever the flags
         * (a file that disagrees with itself is refused, not half-used). */
        eb_bundle_stored sv;
        eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
        if (sv.act_scales && sv.n_act != (uint64_t)eb_quant_act_layers(&p->arch))
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: section ACTSCALES holds %llu scales per row but the "
                                "architecture has %zu weighted layers (one scale each)",
                                eb_bundle_path(b), (unsigned long long)sv.n_act,
                                eb_quant_act_layers(&p->arch));
    }
    if (p->storage == EB_STORE_F32) {
        p->params = eb_bundle_params(b);
        p->sigma = eb_bundle_sigma(b);
    } else if ((flags & EB_POSTERIOR_QUANTIZED) && keeps_stored(b, p)) {
        eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &p->stored);
    } else if ((flags & EB_POSTERIOR_SPARSE) && keeps_sparse(b, p)) {
        eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &p->stored);
    } else if ((st = decode_owned(b, p, err))) {
        return st;
    }
    if (p->repr == EB_REPR_GAUSSIAN && !p->sigma)
        return eb_error_set(err, EB_ERR_FORMAT, "%s: a gaussian posterior without sigma",
                            eb_bundle_path(b));
    if ((!p->params && !p->stored.values) || p->members < 1)
        return eb_error_set(err, EB_ERR_FORMAT, "%s: the posterior has no parameters",
                            eb_bundle_path(b));
    return EB_OK;
}

eb_status eb_posterior_from_bundle_flags(const eb_bundle *b, unsigned flags, eb_posterior *p,
                                         eb_error *err)
{
    eb_status st;
    memset(p, 0, sizeof *p);
    st = from_bundle(b, flags, p, err);
    if (st)
        eb_posterior_release(p);
    return st;
}

eb_status eb_posterior_from_bundle(const eb_bundle *b, eb_posterior *p, eb_error *err)
{
    return eb_posterior_from_bundle_flags(b, 0, p, err);
}

int eb_posterior_quantized(const eb_posterior *p)
{
    return p->stored.kind == EB_STORE_INT8 || p->stored.kind == EB_STORE_F16;
}

int eb_posterior_sparse(const eb_posterior *p)
{
    return p->stored.kind == EB_STORE_SHARED_SPARSE || p->stored.kind == EB_STORE_CSR;
}

void eb_posterior_release(eb_posterior *p)
{
    if (!p)
        return;
    memset(&p->stored, 0, sizeof p->stored);
    if (!p->owned)
        return;
    eb_free_aligned(p->owned);
    p->owned = NULL;
    p->params = NULL;
    p->sigma = NULL;
}

/* Row `row` of a quantized posterior decoded into dst (K): f16 widened,
 * int8 times its group's scale, the values eb_bundle_decode gives. */
static void decode_stored_row(const eb_posterior *p, uint32_t row, float *dst)
{
    const eb_bundle_stored *sv = &p->stored;
    if (sv->kind == EB_STORE_F16)
        eb_f16_to_f32_n(dst, (const uint16_t *)sv->values + (size_t)row * p->k, p->k);
    else
        eb_dequant_int8_groups(dst, (const int8_t *)sv->values + (size_t)row * p->k,
                               sv->scales + (size_t)row * sv->n_groups, sv->groups,
                               (size_t)sv->n_groups);
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
    eb_net *net;    /* f32 network; for a quantized posterior NULL until input_grad */
    float *probs;   /* (max_batch, max_draws, C): a batch's member probabilities */
    float *dlogits; /* (max_batch, O), O = the network's outputs (C, or C + 1 for gped) */
    double *alpha;  /* (C) distilled: a head's Dirichlet concentrations */
    float *dx;      /* (max_batch, in): one draw's input gradient */
    /* (K) the current draw's f32 weights: gaussian, sampled (allocated at
     * creation); quantized, decoded (allocated with net); else NULL */
    float *theta;
    /* quantized posterior: one workspace, per-member weights in place */
    eb_qnet *qnet;
    eb_qweights **qw; /* (n_qw): member s, or the student */
    uint32_t n_qw;
    float *z;         /* (max_batch, O): the quantized forward's logits */
    size_t bytes;
};

/* The quantized side of a predictor: the shared workspace and, per
 * member row a draw can use, its weights over the stored values. */
static eb_status quantized_new(eb_predictor *pr, eb_error *err)
{
    const eb_posterior *p = pr->p;
    const eb_bundle_stored *sv = &p->stored;
    const eb_qnet_storage qs = sv->kind == EB_STORE_INT8 ? EB_QNET_INT8 : EB_QNET_F16;
    const size_t elem = qs == EB_QNET_INT8 ? 1 : sizeof(uint16_t);
    eb_status st;

    pr->n_qw = p->repr == EB_REPR_SAMPLES ? pr->max_draws : 1;
    st = eb_qnet_new_workspace(&p->arch, qs, pr->max_batch, &pr->qnet, err);
    if (st)
        return st;
    pr->qw = eb_calloc(pr->n_qw, sizeof *pr->qw);
    pr->z = eb_malloc((size_t)pr->max_batch * (size_t)p->arch.n_classes * sizeof *pr->z);
    if (!pr->qw || !pr->z)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for quantized prediction buffers");
    pr->bytes += eb_qnet_bytes(pr->qnet) + pr->n_qw * sizeof *pr->qw +
                 (size_t)pr->max_batch * (size_t)p->arch.n_classes * sizeof *pr->z;
    for (uint32_t r = 0; r < pr->n_qw; r++) {
        const void *v = (const char *)sv->values + (size_t)r * p->k * elem;
        st = eb_qweights_new(&p->arch, qs, v,
                             qs == EB_QNET_INT8 ? sv->scales + (size_t)r * sv->n_groups : NULL,
                             qs == EB_QNET_INT8 ? sv->groups : NULL,
                             qs == EB_QNET_INT8 ? (size_t)sv->n_groups : 0, &pr->qw[r], err);
        if (!st && sv->act_scales)
            st = eb_qweights_set_act_scales(pr->qw[r], &p->arch,
                                            sv->act_scales + (size_t)r * sv->n_act,
                                            (size_t)sv->n_act, err);
        if (st)
            return eb_error_prefix(err, "member %u: ", r);
        pr->bytes += eb_qweights_bytes(pr->qw[r]);
    }
    return EB_OK;
}

eb_status eb_predictor_new(const eb_posterior *p, int max_batch, uint32_t max_draws,
                           eb_predictor **out, eb_error *err)
{
    const size_t C = eb_posterior_classes(p), O = (size_t)p->arch.n_classes;
    const size_t in = p->arch.in_size;
    const int quantized = eb_posterior_quantized(p);
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
    if (eb_posterior_sparse(p))
        return eb_error_set(err, EB_ERR_ARG,
                            "a posterior kept %s in place runs on the device's sparse strategy; "
                            "decode it (eb_posterior_from_bundle) to predict it here",
                            eb_storage_name(p->stored.kind));
    if (quantized && p->repr != EB_REPR_SAMPLES && p->repr != EB_REPR_DISTILLED)
        return eb_error_set(err, EB_ERR_ARG,
                            "a %s posterior cannot be predicted from quantized values",
                            eb_repr_name(p->repr));
    if (eb_size_mul((size_t)max_batch * max_draws, C, &probs_len))
        return eb_error_set(err, EB_ERR_ARG, "%d inputs x %u draws overflow", max_batch,
                            max_draws);
    pr = eb_calloc(1, sizeof *pr);
    if (!pr)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a predictor");
    pr->p = p;
    pr->max_batch = max_batch;
    pr->max_draws = max_draws;
    if (!quantized) {
        st = eb_net_new(&p->arch, max_batch, &pr->net, err);
        if (st) {
            eb_free(pr);
            return st;
        }
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
    pr->bytes = (pr->net ? eb_net_workspace_bytes(pr->net) : 0) +
                (probs_len + (size_t)max_batch * (O + in)) * sizeof(float) + C * sizeof(double) +
                (pr->theta ? p->k * sizeof(float) : 0);
    if (quantized && (st = quantized_new(pr, err))) {
        eb_predictor_free(pr);
        return st;
    }
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
    eb_qnet_free(pr->qnet);
    for (uint32_t r = 0; pr->qw && r < pr->n_qw; r++)
        eb_qweights_free(pr->qw[r]);
    eb_free(pr->qw);
    eb_free(pr->z);
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

/* A quantized posterior's f32 side, for input gradients: the network
 * workspace and the K-float buffer members are decoded into, allocated at
 * the first call (prediction alone never needs them). */
static eb_status ensure_f32_side(eb_predictor *pr, eb_error *err)
{
    const eb_posterior *p = pr->p;
    eb_status st;
    if (pr->net)
        return EB_OK;
    pr->theta = eb_malloc_aligned(64, p->k * sizeof *pr->theta);
    if (!pr->theta)
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory for the %zu decoded weights of an input gradient",
                            p->k);
    st = eb_net_new(&p->arch, pr->max_batch, &pr->net, err);
    if (st) {
        eb_free_aligned(pr->theta);
        pr->theta = NULL;
        return st;
    }
    pr->bytes += eb_net_workspace_bytes(pr->net) + p->k * sizeof *pr->theta;
    return EB_OK;
}

/* The f32 weights of draw s: for gaussian those the last draw_forward
 * sampled, for a quantized posterior those it decoded (it prepares draw s
 * before using them). */
static const float *draw_theta(const eb_predictor *pr, uint32_t s)
{
    const eb_posterior *p = pr->p;
    if (p->repr == EB_REPR_GAUSSIAN || eb_posterior_quantized(p))
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

/* f32 forward of draw s over nb inputs; returns the logits (nb, O). A
 * quantized posterior's member s (row 0 for a student) is decoded into
 * pr->theta first (ensure_f32_side must have run). */
static const float *draw_forward(eb_predictor *pr, uint32_t s, const float *x, int nb,
                                 uint64_t seed, uint64_t first_example)
{
    const eb_posterior *p = pr->p;
    const float *theta;
    if (p->repr == EB_REPR_GAUSSIAN)
        sample_gaussian(pr, s, seed);
    else if (eb_posterior_quantized(p))
        decode_stored_row(p, p->repr == EB_REPR_SAMPLES ? s : 0, pr->theta);
    theta = draw_theta(pr, s);
    eb_dropout_ctx drop = {p->repr == EB_REPR_DROPOUT ? EB_DROPOUT_SAMPLE : EB_DROPOUT_OFF,
                           eb_rng_mix64(seed ^ EB_STREAM_PREDICT), s, first_example};
    return eb_net_forward(pr->net, theta, x, nb, &drop);
}

/* The logits (nb, O) of draw s (0 for a student) as prediction computes
 * them: the quantized kernels over the stored values for a quantized
 * posterior (unless f32, the input gradient's dequantized network, is
 * asked for), the f32 network otherwise. */
static eb_status draw_logits(eb_predictor *pr, uint32_t s, const float *x, int nb, uint64_t seed,
                             uint64_t first_example, int f32, const float **z, eb_error *err)
{
    eb_status st;
    if (eb_posterior_quantized(pr->p) && !f32) {
        st = eb_qnet_forward_w(pr->qnet, pr->qw[s], x, (size_t)nb, pr->z, err);
        *z = pr->z;
        return st;
    }
    *z = draw_forward(pr, s, x, nb, seed, first_example);
    return EB_OK;
}

/* Member probabilities of one batch into pr->probs (nb, S, C). f32: a
 * quantized posterior's members run on their decoded f32 weights. */
static eb_status batch_probs(eb_predictor *pr, const float *x, int nb, uint32_t S, uint64_t seed,
                             uint64_t first_example, int f32, eb_error *err)
{
    const size_t C = eb_posterior_classes(pr->p), O = (size_t)pr->p->arch.n_classes;
    const float *z;
    eb_status st;
    if (pr->p->repr == EB_REPR_DISTILLED) {
        if ((st = draw_logits(pr, 0, x, nb, seed, first_example, f32, &z, err)))
            return st;
        for (int i = 0; i < nb; i++)
            eb_distill_members(pr->probs + (size_t)i * S * C, z + (size_t)i * O, pr->p->head,
                               (int)C, S, seed, first_example + (uint64_t)i, pr->alpha);
        return EB_OK;
    }
    for (uint32_t s = 0; s < S; s++) {
        if ((st = draw_logits(pr, s, x, nb, seed, first_example, f32, &z, err)))
            return st;
        eb_softmax(pr->dlogits, z, nb, (int)C);
        for (int i = 0; i < nb; i++)
            memcpy(pr->probs + ((size_t)i * S + s) * C, pr->dlogits + (size_t)i * C,
                   C * sizeof(float));
    }
    return EB_OK;
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
        if ((st = batch_probs(pr, x + first * in, nb, S, seed, first_example + first, 0, err)))
            return st;
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
    const float *z = draw_forward(pr, 0, x, nb, 0, 0); /* the student: no draws */
    for (int i = 0; i < nb; i++)
        eb_distill_mean_grad(pr->dlogits + (size_t)i * O, pbar ? pbar + (size_t)i * C : NULL,
                             z + (size_t)i * O, p->head, (int)O, (int)C, y[i]);
    eb_net_backward(pr->net, draw_theta(pr, 0), pr->dlogits, NULL, dx);
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
    if ((st = ensure_f32_side(pr, err)))
        return st;
    for (size_t first = 0; first < n; first += (size_t)pr->max_batch) {
        const int nb = (int)(n - first < (size_t)pr->max_batch ? n - first : (size_t)pr->max_batch);
        const float *xb = x + first * in;
        float *dxb = dx + first * in;
        if (p->repr == EB_REPR_DISTILLED) {
            distilled_input_grad(pr, xb, y + first, nb, dxb, pbar ? pbar + first * C : NULL);
            continue;
        }
        /* pass 1: every draw's probabilities, for pbar (f32 weights) */
        if ((st = batch_probs(pr, xb, nb, S, seed, first_example + first, 1, err)))
            return st;
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
