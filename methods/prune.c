/* prune.c: pruning. The primitives of eb_prune.h (masks by magnitude or
 * signal-to-noise, per layer or global; iterative schedules; structured
 * removal of whole units) and the `prune` bundle transform built on them:
 *
 *   oneshot    magnitude (or SNR) pruning of each member separately, no
 *              training (Han et al. 2015's first step);
 *   iterative  prune a fraction `rate` of the remaining weights, fine-tune
 *              `finetune_epochs` under the mask, repeat until the target
 *              (the last cycle lands exactly on it) (Han et al. 2015);
 *   rewind     iterative magnitude pruning with late rewinding (Frankle &
 *              Carbin 2019; Frankle et al. 2020): see rewind_member;
 *   then=...   sparse-structure sampling: a pruned map network is the
 *              start of an SG-MCMC chain confined to its mask, so all S
 *              samples share one sparsity pattern;
 *   structure=units  whole hidden units / channels removed, giving a
 *              smaller dense architecture, then fine-tuned; with
 *              group_lasso, after training with a group-lasso penalty
 *              (proximal steps) that puts whole units at exactly zero.
 * docs/prune.md records the settings and the measurements behind
 * the defaults. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_prune.h"
#include "methods/eb_samplers.h"

/* ---- primitives ------------------------------------------------------ */

static int has_weights(const eb_layer *L)
{
    return L->kind == EB_LAYER_DENSE || L->kind == EB_LAYER_CONV2D;
}

size_t eb_prune_n_weights(const eb_arch *arch)
{
    size_t w = 0;
    for (int l = 0; l < arch->n_layers; l++)
        if (has_weights(&arch->layers[l]))
            w += arch->layers[l].n_weights;
    return w;
}

void eb_prune_score_magnitude(float *score, const float *theta, size_t K)
{
    for (size_t i = 0; i < K; i++)
        score[i] = fabsf(theta[i]);
}

void eb_prune_score_snr(float *score, const float *mu, const float *sigma, size_t K)
{
    for (size_t i = 0; i < K; i++) {
        const float m = fabsf(mu[i]);
        score[i] = sigma[i] > 0.0f ? m / sigma[i] : (m > 0.0f ? INFINITY : 0.0f);
    }
}

typedef struct ranked {
    float score;
    uint32_t index; /* position in theta: the tie-break */
} ranked;

static int ranked_cmp(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score < y->score)
        return -1;
    if (x->score > y->score)
        return 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Appends layer L's weights to r with their scores (-inf where prev
 * pruned them). */
static size_t rank_layer(ranked *r, const eb_layer *L, const float *score, const uint8_t *prev)
{
    for (size_t j = 0; j < L->n_weights; j++) {
        const size_t i = L->param_offset + j;
        r[j].score = prev && !prev[i] ? -INFINITY : score[i];
        r[j].index = (uint32_t)i;
    }
    return L->n_weights;
}

static void prune_lowest(ranked *r, size_t n, size_t count, uint8_t *mask)
{
    qsort(r, n, sizeof *r, ranked_cmp);
    for (size_t j = 0; j < count && j < n; j++)
        mask[r[j].index] = 0;
}

eb_status eb_prune_mask(const eb_arch *arch, const float *score, const uint8_t *prev,
                        double sparsity, eb_prune_scope scope, uint8_t *mask, eb_error *err)
{
    const size_t W = eb_prune_n_weights(arch);
    ranked *r;

    if (!(sparsity >= 0.0 && sparsity < 1.0))
        return eb_error_set(err, EB_ERR_ARG, "pruning sparsity %g is not in [0, 1)", sparsity);
    if (scope != EB_PRUNE_LAYER && scope != EB_PRUNE_GLOBAL)
        return eb_error_set(err, EB_ERR_ARG, "unknown pruning scope %d", (int)scope);
    if (arch->n_params > UINT32_MAX)
        return eb_error_set(err, EB_ERR_ARG, "%zu parameters are more than pruning indexes",
                            arch->n_params);
    if (W == 0) {
        memset(mask, 1, arch->n_params);
        return EB_OK;
    }
    r = eb_malloc(W * sizeof *r);
    if (!r)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory ranking %zu weights", W);
    {
        /* every layer is ranked (reading prev) before mask is written, so
         * prev may be mask itself: the previous cycle's mask */
        size_t n = 0, first[EB_ARCH_MAX_LAYERS + 1];
        for (int l = 0; l < arch->n_layers; l++) {
            first[l] = n;
            if (has_weights(&arch->layers[l]))
                n += rank_layer(r + n, &arch->layers[l], score, prev);
        }
        first[arch->n_layers] = n;
        memset(mask, 1, arch->n_params);
        if (scope == EB_PRUNE_LAYER) {
            for (int l = 0; l < arch->n_layers; l++) {
                const size_t nl = first[l + 1] - first[l];
                if (nl)
                    prune_lowest(r + first[l], nl, (size_t)llround(sparsity * (double)nl), mask);
            }
        } else {
            prune_lowest(r, n, (size_t)llround(sparsity * (double)n), mask);
        }
    }
    eb_free(r);
    return EB_OK;
}

void eb_prune_apply(float *theta, const uint8_t *mask, size_t K)
{
    for (size_t i = 0; i < K; i++)
        if (!mask[i])
            theta[i] = 0.0f;
}

double eb_prune_sparsity(const eb_arch *arch, const float *theta, int layer)
{
    size_t zeros = 0, n = 0;
    for (int l = 0; l < arch->n_layers; l++) {
        const eb_layer *L = &arch->layers[l];
        if (!has_weights(L) || (layer >= 0 && l != layer))
            continue;
        for (size_t j = 0; j < L->n_weights; j++)
            zeros += theta[L->param_offset + j] == 0.0f;
        n += L->n_weights;
    }
    return n ? (double)zeros / (double)n : 0.0;
}

int eb_prune_cycles(double target, double rate)
{
    int c = 0;
    double keep = 1.0;
    if (!(target > 0.0))
        return 0;
    /* the tolerance keeps a target that a cycle reaches up to rounding
     * (rate 0.5, target 0.75) from taking one more cycle */
    while (1.0 - keep < target - 1e-12 && c < 100000) {
        keep *= 1.0 - rate;
        c++;
    }
    return c;
}

double eb_prune_cycle_sparsity(double target, double rate, int cycle, int cycles)
{
    const double s = 1.0 - pow(1.0 - rate, (double)cycle);
    return cycle >= cycles || s > target ? target : s;
}

/* ---- structured pruning ---------------------------------------------- */

size_t eb_prune_units_total(const eb_arch *arch, size_t *offsets)
{
    size_t t = 0;
    for (int l = 0; l < arch->n_layers; l++) {
        if (offsets)
            offsets[l] = t;
        if (has_weights(&arch->layers[l]))
            t += (size_t)arch->layers[l].units;
    }
    if (offsets)
        offsets[arch->n_layers] = t;
    return t;
}

static int last_weighted(const eb_arch *arch)
{
    int last = -1;
    for (int l = 0; l < arch->n_layers; l++)
        if (has_weights(&arch->layers[l]))
            last = l;
    return last;
}

eb_status eb_prune_units_select(const eb_arch *arch, const float *theta, uint32_t rows,
                                double fraction, uint8_t *keep, eb_error *err)
{
    size_t offs[EB_ARCH_MAX_LAYERS + 1], total = eb_prune_units_total(arch, offs);
    const int last = last_weighted(arch);
    const size_t K = arch->n_params;
    ranked *r;

    if (!(fraction >= 0.0 && fraction < 1.0))
        return eb_error_set(err, EB_ERR_ARG, "unit pruning fraction %g is not in [0, 1)",
                            fraction);
    memset(keep, 1, total);
    r = eb_malloc((total ? total : 1) * sizeof *r);
    if (!r)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory ranking %zu units", total);
    for (int l = 0; l < last; l++) {
        const eb_layer *L = &arch->layers[l];
        const size_t O = (size_t)(has_weights(L) ? L->units : 0);
        size_t count;
        if (!O)
            continue;
        const size_t block = L->n_weights / O;
        for (size_t o = 0; o < O; o++) {
            double norm = 0.0;
            for (uint32_t s = 0; s < rows; s++) {
                const float *w = theta + (size_t)s * K + L->param_offset + o * block;
                double sq = 0.0;
                for (size_t j = 0; j < block; j++)
                    sq += (double)w[j] * w[j];
                norm += sqrt(sq);
            }
            r[o].score = (float)(norm / (double)rows);
            r[o].index = (uint32_t)o;
        }
        count = (size_t)llround(fraction * (double)O);
        if (count > O - 1)
            count = O - 1;
        qsort(r, O, sizeof *r, ranked_cmp);
        for (size_t j = 0; j < count; j++)
            keep[offs[l] + r[j].index] = 0;
    }
    eb_free(r);
    return EB_OK;
}

eb_status eb_prune_units_arch(const eb_arch *arch, const uint8_t *keep, eb_arch *out,
                              eb_error *err)
{
    size_t offs[EB_ARCH_MAX_LAYERS + 1];
    const int last = last_weighted(arch);
    eb_status st;

    eb_prune_units_total(arch, offs);
    *out = *arch;
    for (int l = 0; l < arch->n_layers; l++) {
        const eb_layer *L = &arch->layers[l];
        int kept = 0;
        if (!has_weights(L))
            continue;
        for (int o = 0; o < L->units; o++)
            kept += keep[offs[l] + (size_t)o] != 0;
        if (kept < 1 || (l == last && kept != L->units))
            return eb_error_set(err, EB_ERR_ARG,
                                "unit pruning keeps %d of the %d units of layer %d (every layer "
                                "needs one, the output layer all)", kept, L->units, l + 1);
        out->layers[l].units = kept;
    }
    st = eb_arch_resolve(out, err);
    return st ? eb_error_prefix(err, "unit pruning: ") : EB_OK;
}

/* Walks the weighted layers with, for each, the keep flags of its outputs
 * and of its input channels (NULL for the first: the input image is
 * never pruned). Input weight j of a unit reads channel j % Cin: channels
 * are innermost both in conv2d weights (ky, kx, c) and in the NHWC order a
 * dense layer reads, and relu, maxpool, dropout and flatten keep them. */
typedef void (*unit_visit)(void *ctx, const eb_layer *L, int l, const uint8_t *kout,
                           const uint8_t *kin, size_t cin);

static void walk_units(const eb_arch *arch, const uint8_t *keep, unit_visit visit, void *ctx)
{
    size_t offs[EB_ARCH_MAX_LAYERS + 1];
    int prev = -1;
    eb_prune_units_total(arch, offs);
    for (int l = 0; l < arch->n_layers; l++) {
        const eb_layer *L = &arch->layers[l];
        if (!has_weights(L))
            continue;
        visit(ctx, L, l, keep + offs[l], prev >= 0 ? keep + offs[prev] : NULL,
              prev >= 0 ? (size_t)arch->layers[prev].units : 0);
        prev = l;
    }
}

typedef struct shrink_ctx {
    const eb_arch *small;
    const float *theta;
    float *out;
} shrink_ctx;

static void shrink_layer(void *vctx, const eb_layer *L, int l, const uint8_t *kout,
                         const uint8_t *kin, size_t cin)
{
    const shrink_ctx *c = vctx;
    const eb_layer *S = &c->small->layers[l];
    const size_t O = (size_t)L->units, block = L->n_weights / O;
    const float *w = c->theta + L->param_offset, *b = w + L->n_weights;
    float *dst = c->out + S->param_offset, *dbias = dst + S->n_weights;
    for (size_t o = 0; o < O; o++) {
        if (!kout[o])
            continue;
        for (size_t j = 0; j < block; j++)
            if (!kin || kin[j % cin])
                *dst++ = w[o * block + j];
        *dbias++ = b[o];
    }
}

void eb_prune_units_shrink(const eb_arch *arch, const uint8_t *keep, const eb_arch *small,
                           const float *theta, float *small_theta)
{
    shrink_ctx c;
    c.small = small;
    c.theta = theta;
    c.out = small_theta;
    walk_units(arch, keep, shrink_layer, &c);
}

static void zero_layer(void *vctx, const eb_layer *L, int l, const uint8_t *kout,
                       const uint8_t *kin, size_t cin)
{
    float *theta = vctx;
    const size_t O = (size_t)L->units, block = L->n_weights / O;
    float *w = theta + L->param_offset, *b = w + L->n_weights;
    (void)l;
    for (size_t o = 0; o < O; o++) {
        for (size_t j = 0; j < block; j++)
            if (!kout[o] || (kin && !kin[j % cin]))
                w[o * block + j] = 0.0f;
        if (!kout[o])
            b[o] = 0.0f;
    }
}

void eb_prune_units_zero(const eb_arch *arch, const uint8_t *keep, float *theta)
{
    walk_units(arch, keep, zero_layer, theta);
}

/* ---- group lasso ------------------------------------------------------ */

/* The next dense or conv2d layer after l (-1 for none). */
static int next_weighted(const eb_arch *arch, int l)
{
    for (int n = l + 1; n < arch->n_layers; n++)
        if (has_weights(&arch->layers[n]))
            return n;
    return -1;
}

/* Visits group (l, u)'s parameter positions in a fixed order: incoming
 * weights, bias, then outgoing weights (next layer's unit by unit). With
 * index NULL only counts them. Input weight j of a next-layer unit reads
 * channel j % units(l), as in walk_units. */
static size_t group_members(const eb_arch *arch, int l, size_t u, uint32_t *index)
{
    const eb_layer *L = &arch->layers[l];
    const size_t O = (size_t)L->units, block = L->n_weights / O;
    const int nl = next_weighted(arch, l);
    size_t n = 0;
    for (size_t j = 0; j < block; j++, n++)
        if (index)
            index[n] = (uint32_t)(L->param_offset + u * block + j);
    if (index)
        index[n] = (uint32_t)(L->param_offset + L->n_weights + u);
    n++;
    if (nl >= 0) {
        const eb_layer *N = &arch->layers[nl];
        const size_t NO = (size_t)N->units, nblock = N->n_weights / NO;
        for (size_t v = 0; v < NO; v++)
            for (size_t j = u; j < nblock; j += O, n++)
                if (index)
                    index[n] = (uint32_t)(N->param_offset + v * nblock + j);
    }
    return n;
}

void eb_prune_groups_free(eb_prune_groups *g)
{
    eb_free(g->start);
    eb_free(g->index);
    memset(g, 0, sizeof *g);
}

eb_status eb_prune_groups_init(eb_prune_groups *g, const eb_arch *arch, eb_error *err)
{
    const int last = last_weighted(arch);
    size_t n = 0, entries = 0;

    memset(g, 0, sizeof *g);
    if (arch->n_params > UINT32_MAX)
        return eb_error_set(err, EB_ERR_ARG, "%zu parameters are more than group indexes",
                            arch->n_params);
    for (int l = 0; l < last; l++)
        if (has_weights(&arch->layers[l]))
            for (size_t u = 0; u < (size_t)arch->layers[l].units; u++, n++)
                entries += group_members(arch, l, u, NULL);
    g->start = eb_malloc((n + 1) * sizeof *g->start);
    g->index = eb_malloc((entries ? entries : 1) * sizeof *g->index);
    if (!g->start || !g->index) {
        eb_prune_groups_free(g);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory for %zu group-lasso groups (%zu entries)", n, entries);
    }
    g->n = n;
    g->start[0] = 0;
    n = 0;
    for (int l = 0; l < last; l++)
        if (has_weights(&arch->layers[l]))
            for (size_t u = 0; u < (size_t)arch->layers[l].units; u++, n++)
                g->start[n + 1] =
                    g->start[n] + group_members(arch, l, u, g->index + g->start[n]);
    return EB_OK;
}

static double group_norm(const float *theta, const uint32_t *idx, size_t n)
{
    double sq = 0.0;
    for (size_t j = 0; j < n; j++)
        sq += (double)theta[idx[j]] * theta[idx[j]];
    return sqrt(sq);
}

int eb_prune_group_shrink(float *theta, const uint32_t *idx, size_t n, double t)
{
    const double norm = group_norm(theta, idx, n), thr = t * sqrt((double)n);
    if (norm <= thr) {
        /* also a group already at 0: no division by its norm */
        for (size_t j = 0; j < n; j++)
            theta[idx[j]] = 0.0f;
        return 1;
    }
    {
        const float scale = (float)(1.0 - thr / norm);
        for (size_t j = 0; j < n; j++)
            theta[idx[j]] *= scale;
    }
    return 0;
}

size_t eb_prune_group_prox(const eb_prune_groups *g, float *theta, double t)
{
    size_t zero = 0;
    for (size_t k = 0; k < g->n; k++)
        zero += (size_t)eb_prune_group_shrink(theta, g->index + g->start[k],
                                              g->start[k + 1] - g->start[k], t);
    return zero;
}

double eb_prune_group_lasso(const eb_prune_groups *g, const float *theta, double lambda,
                            float *grad)
{
    double sum = 0.0;
    for (size_t k = 0; k < g->n; k++) {
        const uint32_t *idx = g->index + g->start[k];
        const size_t n = g->start[k + 1] - g->start[k];
        const double norm = group_norm(theta, idx, n), w = lambda * sqrt((double)n);
        sum += w * norm;
        if (grad && norm > 0.0)
            for (size_t j = 0; j < n; j++)
                grad[idx[j]] += (float)(w * theta[idx[j]] / norm);
    }
    return sum;
}

/* Groups lo .. hi-1 whose every parameter is exactly 0. */
static size_t zero_groups_in(const eb_prune_groups *g, const float *theta, size_t lo, size_t hi)
{
    size_t zero = 0;
    for (size_t k = lo; k < hi; k++) {
        size_t j = g->start[k];
        while (j < g->start[k + 1] && theta[g->index[j]] == 0.0f)
            j++;
        zero += j == g->start[k + 1];
    }
    return zero;
}

size_t eb_prune_groups_zero(const eb_prune_groups *g, const float *theta)
{
    return zero_groups_in(g, theta, 0, g->n);
}

/* ---- the transform --------------------------------------------------- */

static const eb_setting_spec prune_settings[] = {
    {"sparsity", EB_SET_FLOAT, "0.9", 0, 0.999, NULL,
     "target fraction of weights set to zero (biases are never pruned); with "
     "structure=units, the fraction of hidden units removed"},
    {"scope", EB_SET_CHOICE, "layer", 0, 0, "layer|global",
     "layer: every weighted layer to the same fraction; global: one threshold across layers"},
    {"schedule", EB_SET_CHOICE, "oneshot", 0, 0, "oneshot|iterative|rewind",
     "oneshot: prune once; iterative: prune `rate` of the rest and fine-tune, repeated; "
     "rewind: iterative with late rewinding (lottery ticket)"},
    {"rate", EB_SET_FLOAT, "0.5", 0.05, 0.95, NULL,
     "iterative/rewind: fraction of the remaining weights pruned per cycle"},
    {"finetune_epochs", EB_SET_INT, "2", 0, 1000, NULL,
     "iterative and structure=units: epochs of masked fine-tuning per cycle"},
    {"lr", EB_SET_FLOAT, "0.002", 1e-7, 1, NULL,
     "fine-tuning: Adam's peak learning rate (cosine schedule per cycle)"},
    {"batch", EB_SET_INT, "128", 1, 65536, NULL, "fine-tuning mini-batch size"},
    {"weight_decay", EB_SET_FLOAT, "0.0005", 0, 1, NULL,
     "fine-tuning: L2 decay (the gradient of a Gaussian prior, as in map)"},
    {"criterion", EB_SET_CHOICE, "auto", 0, 0, "auto|magnitude|snr",
     "what ranks weights: |theta|, or |mu|/sigma for gaussian parents (auto: snr for "
     "gaussian, magnitude otherwise)"},
    {"structure", EB_SET_CHOICE, "weights", 0, 0, "weights|units",
     "weights: unstructured masks; units: remove whole hidden units / channels"},
    {"group_lasso", EB_SET_FLOAT, "0", 0, 100, NULL,
     "structure=units: lambda of a group-lasso penalty (one group per unit: its incoming "
     "weights, bias and outgoing weights) trained gl_epochs with proximal steps before units "
     "are ranked; 0: off"},
    {"gl_epochs", EB_SET_INT, "5", 1, 1000, NULL,
     "group_lasso: epochs of group-lasso training per member (then finetune_epochs without it)"},
    {"storage", EB_SET_CHOICE, "auto", 0, 0, "auto|shared-sparse|csr|f32",
     "bundle storage (auto: shared-sparse when every member shares one mask, csr when "
     "members were pruned apart, f32 for units)"},
    {"rewind_epochs", EB_SET_INT, "1", 1, 10000, NULL,
     "rewind: epochs of the parent's training run whose weights survivors rewind to"},
    {"retrain_epochs", EB_SET_INT, "0", 0, 10000, NULL,
     "rewind: training epochs per cycle (0: the parent's epochs minus rewind_epochs)"},
    {"then", EB_SET_CHOICE, "none", 0, 0, "none|sgld|sghmc|csghmc",
     "map parents: sample with this SG-MCMC method inside the final mask"},
    {"samples", EB_SET_INT, "30", 1, 10000, NULL, "then: samples S to keep"},
    {"burnin", EB_SET_INT, "-1", -1, 100000, NULL,
     "then=sgld|sghmc: epochs before the first sample (-1: the sampler's default)"},
    {"thin", EB_SET_INT, "-1", -1, 10000, NULL,
     "then=sgld|sghmc: epochs between samples (-1: the sampler's default)"},
    {"sampler_epochs", EB_SET_INT, "-1", -1, 100000, NULL,
     "then=csghmc: epochs of the chain (-1: the sampler's default)"},
    {"sampler_lr", EB_SET_FLOAT, "0", 0, 10, NULL, "then: step size (0: the sampler's default)"},
    {"temperature", EB_SET_FLOAT, "0", 0, 100, NULL,
     "then: posterior temperature (0: the sampler's default)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

typedef enum schedule_kind { SCHED_ONESHOT, SCHED_ITERATIVE, SCHED_REWIND } schedule_kind;

typedef struct prune_opts {
    double sparsity, rate, lr, weight_decay;
    double group_lasso; /* lambda; 0: off */
    eb_prune_scope scope;
    schedule_kind schedule;
    int finetune_epochs, batch, rewind_epochs, retrain_epochs, samples, gl_epochs;
    int snr;   /* criterion resolved */
    int units; /* structure=units */
    const char *then; /* NULL for none */
    eb_storage_kind storage;
} prune_opts;

static const char *schedule_name(schedule_kind k)
{
    return k == SCHED_ONESHOT ? "oneshot" : k == SCHED_ITERATIVE ? "iterative" : "rewind";
}

/* Reads and cross-checks the settings against the parent; every refusal
 * names the setting and the parent at fault. */
static eb_status read_opts(const eb_transform_request *req, prune_opts *o, eb_error *err)
{
    const eb_settings *s = req->settings;
    const eb_posterior *p = req->posterior;
    const char *sched = eb_settings_str(s, "schedule"), *crit = eb_settings_str(s, "criterion");
    const char *then = eb_settings_str(s, "then"), *storage = eb_settings_str(s, "storage");
    int sched_explicit = 0, gl_epochs_explicit = 0;

    memset(o, 0, sizeof *o);
    for (int i = 0; i < s->n; i++) {
        if (!strcmp(s->spec[i].key, "schedule"))
            sched_explicit = s->explicit_[i];
        if (!strcmp(s->spec[i].key, "gl_epochs"))
            gl_epochs_explicit = s->explicit_[i];
    }
    o->sparsity = eb_settings_float(s, "sparsity");
    o->rate = eb_settings_float(s, "rate");
    o->lr = eb_settings_float(s, "lr");
    o->weight_decay = eb_settings_float(s, "weight_decay");
    o->scope = !strcmp(eb_settings_str(s, "scope"), "global") ? EB_PRUNE_GLOBAL : EB_PRUNE_LAYER;
    o->schedule = !strcmp(sched, "iterative") ? SCHED_ITERATIVE
                  : !strcmp(sched, "rewind")  ? SCHED_REWIND
                                              : SCHED_ONESHOT;
    o->finetune_epochs = (int)eb_settings_int(s, "finetune_epochs");
    o->batch = (int)eb_settings_int(s, "batch");
    o->rewind_epochs = (int)eb_settings_int(s, "rewind_epochs");
    o->retrain_epochs = (int)eb_settings_int(s, "retrain_epochs");
    o->samples = (int)eb_settings_int(s, "samples");
    o->group_lasso = eb_settings_float(s, "group_lasso");
    o->gl_epochs = (int)eb_settings_int(s, "gl_epochs");
    o->units = !strcmp(eb_settings_str(s, "structure"), "units");
    o->then = strcmp(then, "none") ? then : NULL;
    o->snr = !strcmp(crit, "snr") || (!strcmp(crit, "auto") && p->repr == EB_REPR_GAUSSIAN);

    if (p->repr != EB_REPR_SAMPLES && p->repr != EB_REPR_DROPOUT && p->repr != EB_REPR_GAUSSIAN)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "prune: the parent's representation '%s' cannot be pruned (samples, "
                            "dropout and gaussian can)", eb_repr_name(p->repr));
    if (o->snr && p->repr != EB_REPR_GAUSSIAN)
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: criterion=snr needs a gaussian (VI) parent; the parent is "
                            "'%s' (use criterion=magnitude)", eb_repr_name(p->repr));
    if (o->then) {
        if (p->repr != EB_REPR_SAMPLES || p->members != 1)
            return eb_error_set(err, EB_ERR_ARG,
                                "prune: then=%s samples inside one mask and needs a map parent "
                                "(one sample); the parent is '%s' with S=%u", o->then,
                                eb_repr_name(p->repr), p->members);
        if (o->units)
            return eb_error_set(err, EB_ERR_ARG,
                                "prune: then=%s works on weight masks, not structure=units",
                                o->then);
        if (o->schedule == SCHED_REWIND)
            return eb_error_set(err, EB_ERR_ARG,
                                "prune: then=%s starts from an iteratively pruned network; use "
                                "schedule=iterative or oneshot, not rewind", o->then);
        /* sampling inside a mask starts from the iteratively pruned
         * network unless the user asked for something else */
        if (!sched_explicit)
            o->schedule = SCHED_ITERATIVE;
    }
    if (p->repr == EB_REPR_GAUSSIAN && o->schedule != SCHED_ONESHOT)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "prune: schedule=%s fine-tunes, which is implemented for samples and "
                            "dropout parents only; the parent is gaussian (use schedule=oneshot)",
                            schedule_name(o->schedule));
    if (o->schedule == SCHED_REWIND && p->repr != EB_REPR_SAMPLES)
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: schedule=rewind retrains from the parent's initialisation "
                            "and needs a samples parent (map, ensemble); the parent is '%s'",
                            eb_repr_name(p->repr));
    if (o->units && o->schedule != SCHED_ONESHOT)
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: structure=units removes units once and fine-tunes "
                            "finetune_epochs; schedule=%s is for weight masks",
                            schedule_name(o->schedule));
    if (o->group_lasso > 0.0 && !o->units)
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: group_lasso=%g drives whole units to zero and needs "
                            "structure=units; structure=weights prunes single weights",
                            o->group_lasso);
    if (gl_epochs_explicit && !(o->group_lasso > 0.0))
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: gl_epochs=%d sets the length of group-lasso training, which "
                            "is off (group_lasso=0); set group_lasso to a positive lambda",
                            o->gl_epochs);
    if (o->group_lasso > 0.0 && p->repr == EB_REPR_GAUSSIAN)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "prune: group_lasso=%g trains the parent, which is implemented for "
                            "samples and dropout parents only; the parent is gaussian",
                            o->group_lasso);
    {
        const int trains = o->schedule == SCHED_REWIND || o->then || o->group_lasso > 0.0 ||
                           (o->finetune_epochs > 0 && p->repr != EB_REPR_GAUSSIAN &&
                            (o->schedule == SCHED_ITERATIVE || o->units));
        if (trains && (!req->train || req->train->n == 0))
            return eb_error_set(err, EB_ERR_ARG,
                                "prune: schedule=%s%s%s%s trains and needs training data; none "
                                "was given", schedule_name(o->schedule),
                                o->then ? " then=" : "", o->then ? o->then : "",
                                o->group_lasso > 0.0 ? " with group_lasso" : "");
    }
    if (!strcmp(storage, "shared-sparse"))
        o->storage = EB_STORE_SHARED_SPARSE;
    else if (!strcmp(storage, "csr"))
        o->storage = EB_STORE_CSR;
    else if (!strcmp(storage, "f32"))
        o->storage = EB_STORE_F32;
    else
        /* one mask for every member (sparse-structure sampling, or a
         * single network): one shared index set; members pruned apart
         * have different masks, whose union would be nearly dense at
         * large S, so each keeps its own row of a CSR */
        o->storage = o->units ? EB_STORE_F32
                     : o->then || (p->repr == EB_REPR_SAMPLES && p->members == 1)
                         ? EB_STORE_SHARED_SPARSE
                         : EB_STORE_CSR;
    return EB_OK;
}

static eb_status meta_f(eb_trained *t, const char *key, double v, eb_error *err)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.6g", v);
    return eb_trained_meta(t, key, buf, err);
}

static eb_status meta_i(eb_trained *t, const char *key, long v, eb_error *err)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", v);
    return eb_trained_meta(t, key, buf, err);
}

/* A growing comma-separated list for metadata values. */
typedef struct list_buf {
    char *s;
    size_t len, cap;
} list_buf;

static eb_status list_add(list_buf *b, double v, eb_error *err)
{
    char item[32];
    const int n = snprintf(item, sizeof item, "%s%.6g", b->len ? "," : "", v);
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        char *s;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        s = eb_realloc(b->s, cap);
        if (!s)
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for pruning metadata");
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, item, (size_t)n + 1);
    b->len += (size_t)n;
    return EB_OK;
}

/* The per-cycle training seed: distinct per cycle, so fine-tuning sees a
 * fresh data order each time; members are told apart by eb_sgd_train's
 * member offset. */
static uint64_t cycle_seed(uint64_t seed, int cycle)
{
    return eb_rng_mix64(seed ^ (0x7072756e65000000ull + (uint64_t)cycle));
}

/* Masked fine-tuning: Adam from the given weights (warm start), a cosine
 * schedule from `lr` over the cycle's epochs. Cosine
 * rather than constant: each cycle ends annealed, so the next cycle's
 * magnitudes are those of a settled network, not of one mid-step. The
 * defaults (lr 0.002, 2 epochs per cycle, weight decay 5e-4) are the
 * measured ones of docs/prune.md: without decay the sparse network
 * refits the training set (loss 0.10 to 0.19) and loses 1.2 to 1.5
 * points at 90% on Fashion-MNIST's mlp; with it, 0.8. */
static void finetune_config(const prune_opts *o, const eb_transform_request *req, int dropout,
                            eb_sgd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    eb_optim_config_default(&cfg->optim, EB_OPTIM_ADAM);
    cfg->optim.lr = (float)o->lr;
    cfg->optim.weight_decay = (float)o->weight_decay;
    cfg->schedule = EB_SCHEDULE_COSINE;
    cfg->epochs = o->finetune_epochs;
    cfg->batch = o->batch;
    cfg->dropout = dropout;
    cfg->threads = req->threads;
    cfg->warm_start = 1;
}

/* Iterative magnitude pruning of one member theta (K) in place: per cycle
 * prune to the cycle's sparsity (already pruned weights stay pruned), then
 * fine-tune under the mask. mask (K) receives the final mask. */
static eb_status iterate_member(const eb_transform_request *req, const prune_opts *o,
                                const eb_arch *arch, int dropout, uint32_t member, float *theta,
                                uint8_t *mask, float *score, list_buf *losses, eb_error *err)
{
    const int cycles = eb_prune_cycles(o->sparsity, o->rate);
    eb_sgd_config cfg;
    eb_status st = EB_OK;

    finetune_config(o, req, dropout, &cfg);
    cfg.mask = mask;
    memset(mask, 1, arch->n_params);
    for (int c = 1; c <= cycles && !st; c++) {
        char phase[64];
        double loss = 0.0;
        eb_prune_score_magnitude(score, theta, arch->n_params);
        st = eb_prune_mask(arch, score, mask, eb_prune_cycle_sparsity(o->sparsity, o->rate, c,
                                                                      cycles),
                           o->scope, mask, err);
        if (st)
            break;
        eb_prune_apply(theta, mask, arch->n_params);
        if (o->finetune_epochs < 1)
            continue;
        snprintf(phase, sizeof phase, "prune member %u cycle %d/%d", member + 1, c, cycles);
        st = eb_sgd_train(arch, req->train, &cfg, cycle_seed(req->seed, c), member, theta, phase,
                          req->progress, req->progress_ctx, &loss, err);
        if (!st)
            st = list_add(losses, loss, err);
    }
    return st;
}

/* The parent's training run, from its metadata: its settings (hp.*, over
 * the map method's defaults; an ensemble's extra `samples` is not a map
 * setting and is not needed) and its seed. */
static eb_status parent_training(const eb_transform_request *req, eb_sgd_config *cfg,
                                 uint64_t *seed, eb_error *err)
{
    const eb_method *map = eb_method_find("map");
    eb_settings s;
    eb_status st;

    const char *method = req->parent ? eb_bundle_meta_get(req->parent, "method") : NULL;
    const char *v = req->parent ? eb_bundle_meta_get(req->parent, "seed") : NULL;

    /* Without its seed and recipe the parent's run cannot be replayed, and
     * a rewind point from another run would not match the parent's
     * magnitudes: refuse rather than produce an unrelated ticket. */
    if (!method || !v || (strcmp(method, "map") && strcmp(method, "ensemble")))
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: schedule=rewind replays the parent's training run and needs "
                            "a parent bundle trained by map or ensemble (its method, seed and "
                            "hp.* metadata); this parent's method is '%s'",
                            method ? method : "unrecorded");
    if (!map)
        return eb_error_set(err, EB_ERR_INTERNAL, "prune: the map method is not registered");
    st = eb_method_settings(map, "custom", &s, err);
    if (st)
        return st;
    {
        char *end;
        errno = 0;
        *seed = strtoull(v, &end, 10);
        if (errno || end == v || *end)
            return eb_error_set(err, EB_ERR_FORMAT, "prune: the parent's metadata seed '%s' is "
                                "not a number", v);
        for (int i = 0; i < s.n; i++) {
            char key[80];
            const char *hv;
            snprintf(key, sizeof key, "hp.%s", s.spec[i].key);
            hv = eb_bundle_meta_get(req->parent, key);
            if (hv && (st = eb_settings_set(&s, s.spec[i].key, hv, err)))
                return eb_error_prefix(err, "prune: the parent's metadata %s: ", key);
        }
    }
    return eb_sgd_config_from_settings(cfg, &s, err);
}

/* Lottery-ticket pruning with late rewinding for member s (Frankle &
 * Carbin 2019; Frankle et al. 2020, "Linear mode connectivity and the
 * lottery ticket hypothesis"). A bundle holds only final weights, so the
 * rewind point is recomputed: the parent's own training run (its hp.*
 * settings and seed from the bundle metadata, member s's INIT and ORDER
 * streams) is replayed for rewind_epochs epochs, with the learning-rate
 * schedule still spanning the parent's epochs, giving theta_k. That is
 * the parent's epoch-k weights exactly when the parent was trained by
 * map or ensemble with the same thread count (the gradient sums depend
 * on it); otherwise it is a run of the same recipe. Then per cycle:
 * prune by the magnitude of the current trained weights (cycle 1: the
 * parent's final weights) to the cycle's sparsity, rewind the survivors
 * to theta_k, and retrain under the mask for retrain_epochs with the
 * parent's optimiser and a fresh schedule (cosine restarted from the
 * parent's lr: learning-rate rewinding in the sense of Renda et al. 2020
 * rather than the remainder of the parent's schedule). Cost per member:
 * rewind_epochs + cycles x retrain_epochs epochs (default retrain_epochs:
 * the parent's epochs minus rewind_epochs, so about cycles x the parent's
 * training time). */
static eb_status rewind_member(const eb_transform_request *req, const prune_opts *o,
                               const eb_arch *arch, uint32_t member, float *theta,
                               uint8_t *mask, float *score, float *theta_k, list_buf *losses,
                               eb_error *err)
{
    const size_t K = arch->n_params;
    const int cycles = eb_prune_cycles(o->sparsity, o->rate);
    eb_sgd_config cfg;
    uint64_t seed;
    char phase[64];
    eb_status st = parent_training(req, &cfg, &seed, err);

    if (st)
        return st;
    if (o->rewind_epochs >= cfg.epochs)
        return eb_error_set(err, EB_ERR_ARG,
                            "prune: rewind_epochs (%d) must be fewer than the parent's training "
                            "epochs (%d)", o->rewind_epochs, cfg.epochs);
    cfg.threads = req->threads;
    cfg.stop_epoch = o->rewind_epochs;
    snprintf(phase, sizeof phase, "prune member %u rewind point", member + 1);
    st = eb_sgd_train(arch, req->train, &cfg, seed, member, theta_k, phase, req->progress,
                      req->progress_ctx, NULL, err);
    if (st)
        return st;
    cfg.stop_epoch = 0;
    cfg.epochs = o->retrain_epochs > 0 ? o->retrain_epochs : cfg.epochs - o->rewind_epochs;
    cfg.warm_start = 1;
    cfg.mask = mask;
    memset(mask, 1, K);
    for (int c = 1; c <= cycles && !st; c++) {
        double loss = 0.0;
        eb_prune_score_magnitude(score, theta, K);
        st = eb_prune_mask(arch, score, mask, eb_prune_cycle_sparsity(o->sparsity, o->rate, c,
                                                                      cycles),
                           o->scope, mask, err);
        if (st)
            break;
        memcpy(theta, theta_k, K * sizeof *theta);
        snprintf(phase, sizeof phase, "prune member %u retrain %d/%d", member + 1, c, cycles);
        st = eb_sgd_train(arch, req->train, &cfg, cycle_seed(req->seed, c), member, theta, phase,
                          req->progress, req->progress_ctx, &loss, err);
        if (!st)
            st = list_add(losses, loss, err);
    }
    return st;
}

typedef struct init_copy {
    const float *theta;
    size_t K;
} init_copy;

static eb_status init_from_pruned(void *ctx, int chain, float *theta, eb_error *err)
{
    const init_copy *c = ctx;
    (void)chain;
    (void)err;
    memcpy(theta, c->theta, c->K * sizeof *theta);
    return EB_OK;
}

/* Sparse-structure sampling: `then` (an SG-MCMC method) run from the
 * pruned map weights theta (K) with its noise and updates confined to
 * mask; its defaults come from that method's settings, overridden by the
 * prune settings that name them. Replaces out's single row by S samples. */
static eb_status sample_in_mask(const eb_transform_request *req, const prune_opts *o,
                                const uint8_t *mask, eb_trained *out, eb_error *err)
{
    const eb_method *m = eb_method_find(o->then);
    const eb_settings *ps = req->settings;
    const size_t K = out->arch.n_params;
    eb_settings s;
    eb_sgmcmc_config cfg;
    eb_sampler_hooks hooks;
    eb_sampler_trace trace;
    eb_target t;
    eb_trained res;
    init_copy ic;
    char num[32];
    eb_status st;

    memset(&trace, 0, sizeof trace);
    if (!m)
        return eb_error_set(err, EB_ERR_INTERNAL, "prune: sampler '%s' is not registered",
                            o->then);
    st = eb_method_settings(m, "custom", &s, err);
    snprintf(num, sizeof num, "%d", o->samples);
    if (!st)
        st = eb_settings_set(&s, "samples", num, err);
    if (!st)
        st = eb_settings_set(&s, "chains", "1", err);
    if (!st && strcmp(o->then, "csghmc")) {
        if (eb_settings_int(ps, "burnin") >= 0) {
            snprintf(num, sizeof num, "%ld", eb_settings_int(ps, "burnin"));
            st = eb_settings_set(&s, "burnin", num, err);
        }
        if (!st && eb_settings_int(ps, "thin") >= 0) {
            snprintf(num, sizeof num, "%ld", eb_settings_int(ps, "thin"));
            st = eb_settings_set(&s, "thin", num, err);
        }
    } else if (!st && eb_settings_int(ps, "sampler_epochs") >= 0) {
        snprintf(num, sizeof num, "%ld", eb_settings_int(ps, "sampler_epochs"));
        st = eb_settings_set(&s, "epochs", num, err);
    }
    if (!st && eb_settings_float(ps, "sampler_lr") > 0.0) {
        snprintf(num, sizeof num, "%.9g", eb_settings_float(ps, "sampler_lr"));
        st = eb_settings_set(&s, "lr", num, err);
    }
    if (!st && eb_settings_float(ps, "temperature") > 0.0) {
        snprintf(num, sizeof num, "%.9g", eb_settings_float(ps, "temperature"));
        st = eb_settings_set(&s, "temperature", num, err);
    }
    if (!st)
        st = eb_sgmcmc_config_from_settings(&cfg, o->then, &s, req->train->n, err);
    if (st)
        return eb_error_prefix(err, "prune: then=%s: ", o->then);
    cfg.seed = req->seed;
    cfg.mask = mask;
    st = eb_target_nn(&t, &out->arch, req->train, cfg.batch, req->threads, err);
    if (st)
        return st;
    st = eb_trained_alloc(&res, &out->arch, EB_REPR_SAMPLES, (uint32_t)o->samples,
                          (uint32_t)o->samples, err);
    if (st) {
        eb_target_free(&t);
        return st;
    }
    ic.theta = out->params;
    ic.K = K;
    memset(&hooks, 0, sizeof hooks);
    hooks.init = init_from_pruned;
    hooks.ctx = &ic;
    hooks.progress = req->progress;
    hooks.progress_ctx = req->progress_ctx;
    hooks.phase = o->then;
    st = eb_sgmcmc_run(&t, &cfg, &hooks, res.params, &trace, err);
    eb_target_free(&t);
    if (!st) {
        /* the samples replace the pruned network; its metadata carries
         * over, then the sampler's trace joins it */
        res.meta = out->meta;
        res.meta_len = out->meta_len;
        res.meta_cap = out->meta_cap;
        out->meta = NULL;
        eb_trained_free(out);
        *out = res;
        st = eb_sampler_trace_to_meta(&trace, out, err);
    } else {
        eb_trained_free(&res);
    }
    eb_sampler_trace_free(&trace);
    return st ? eb_error_prefix(err, "prune: then=%s: ", o->then) : EB_OK;
}

/* Achieved sparsity, overall and per weighted layer, averaged over the
 * rows that hold weights (samples: every member; gaussian: mu). */
static eb_status sparsity_meta(eb_trained *out, uint32_t rows, eb_error *err)
{
    const eb_arch *a = &out->arch;
    const size_t K = a->n_params;
    double all = 0.0;
    eb_status st = EB_OK;

    for (uint32_t r = 0; r < rows; r++)
        all += eb_prune_sparsity(a, out->params + (size_t)r * K, -1);
    st = meta_f(out, "prune.sparsity", all / rows, err);
    for (int l = 0; l < a->n_layers && !st; l++) {
        char key[48];
        double v = 0.0;
        if (!has_weights(&a->layers[l]))
            continue;
        for (uint32_t r = 0; r < rows; r++)
            v += eb_prune_sparsity(a, out->params + (size_t)r * K, l);
        snprintf(key, sizeof key, "prune.layer%d.sparsity", l + 1);
        st = meta_f(out, key, v / rows, err);
    }
    if (!st)
        st = meta_i(out, "prune.weights", (long)eb_prune_n_weights(a), err);
    return st;
}

/* Rows of the parent that hold member weights, and of the output. */
static uint32_t weight_rows(const eb_posterior *p)
{
    return p->repr == EB_REPR_SAMPLES ? p->members : 1;
}

/* Group-lasso training (structure=units, group_lasso > 0). */
typedef struct gl_hook {
    const eb_prune_groups *groups;
    double lambda;
} gl_hook;

/* After each optimiser step: the proximal step of the penalty with the
 * step's learning rate (proximal gradient: theta <- prox_{lr * lambda *
 * P}(theta - lr * update)). With Adam the loss step is preconditioned and
 * the penalty step is not, the usual proximal-Adam shortcut: lambda is
 * then on the scale of Adam's unit-size steps, which docs/prune.md's
 * sweep calibrates. Why prox rather than the subgradient: a subgradient
 * step oscillates around 0 and never lands on it, so "zero" would need a
 * threshold; the prox sets a group to exactly 0 as soon as its norm falls
 * below lr * lambda * sqrt(|g|), and keeps it there while the loss
 * gradient cannot pull it out. */
static void gl_after_step(void *ctx, float *theta, size_t K, long step, float lr)
{
    const gl_hook *h = ctx;
    (void)K;
    (void)step;
    eb_prune_group_prox(h->groups, theta, (double)lr * h->lambda);
}

/* Trains each of the wrows members of params (wrows, K) in place for
 * gl_epochs with the loss plus lambda * sum_g sqrt(|g|) ||theta_g||
 * (fine-tuning's optimiser, lr, decay and batch), then lists per member
 * the groups at exactly 0, the final epoch's loss (without the penalty)
 * and the penalty. */
static eb_status group_lasso_train(const eb_transform_request *req, const prune_opts *o,
                                   const eb_arch *arch, int dropout, uint32_t wrows,
                                   float *params, list_buf *zeros,
                                   list_buf *layer_zeros /* (n_layers) */, list_buf *losses,
                                   list_buf *penalties, size_t *n_groups, eb_error *err)
{
    size_t offs[EB_ARCH_MAX_LAYERS + 1];
    eb_prune_groups groups;
    eb_sgd_config cfg;
    gl_hook hook;
    eb_status st = eb_prune_groups_init(&groups, arch, err);

    if (st)
        return st;
    *n_groups = groups.n;
    finetune_config(o, req, dropout, &cfg);
    cfg.epochs = o->gl_epochs;
    hook.groups = &groups;
    hook.lambda = o->group_lasso;
    cfg.after_step = gl_after_step;
    cfg.after_step_ctx = &hook;
    for (uint32_t m = 0; m < wrows && !st; m++) {
        float *theta = params + (size_t)m * arch->n_params;
        double loss = 0.0;
        char phase[64];
        snprintf(phase, sizeof phase, "prune member %u group lasso", m + 1);
        /* seed "cycle 0": fine-tuning afterwards uses cycle 1 */
        st = eb_sgd_train(arch, req->train, &cfg, cycle_seed(req->seed, 0), m, theta, phase,
                          req->progress, req->progress_ctx, &loss, err);
        if (!st)
            st = list_add(zeros, (double)eb_prune_groups_zero(&groups, theta), err);
        /* groups are numbered as units (layer order), so layer l's are
         * offs[l] .. offs[l + 1]; the last weighted layer has none */
        eb_prune_units_total(arch, offs);
        for (int l = 0; l < arch->n_layers && !st; l++)
            if (offs[l + 1] > offs[l] && offs[l + 1] <= groups.n)
                st = list_add(&layer_zeros[l],
                              (double)zero_groups_in(&groups, theta, offs[l], offs[l + 1]), err);
        if (!st)
            st = list_add(losses, loss, err);
        if (!st)
            st = list_add(penalties, eb_prune_group_lasso(&groups, theta, o->group_lasso, NULL),
                          err);
    }
    eb_prune_groups_free(&groups);
    return st;
}

static eb_status prune_units(const eb_transform_request *req, const prune_opts *o,
                             eb_trained *out, eb_error *err)
{
    const eb_posterior *p = req->posterior;
    const uint32_t wrows = weight_rows(p);
    const uint32_t rows = p->repr == EB_REPR_GAUSSIAN ? 2 : wrows;
    size_t offs[EB_ARCH_MAX_LAYERS + 1];
    const size_t total = eb_prune_units_total(&p->arch, offs);
    uint8_t *keep = eb_malloc(total ? total : 1);
    const float *weights = p->params; /* (wrows, K): what units are ranked and cut from */
    float *trained = NULL;            /* group lasso: the parent's members, retrained */
    list_buf zeros = {NULL, 0, 0}, gl_losses = {NULL, 0, 0}, penalties = {NULL, 0, 0};
    list_buf layer_zeros[EB_ARCH_MAX_LAYERS];
    size_t n_groups = 0;
    eb_arch small;
    eb_status st = EB_OK;

    memset(layer_zeros, 0, sizeof layer_zeros);
    if (!keep)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu unit flags", total);
    if (o->group_lasso > 0.0) {
        trained = eb_malloc_aligned(64, (size_t)wrows * p->k * sizeof *trained);
        if (!trained) {
            st = eb_error_set(err, EB_ERR_NOMEM,
                              "out of memory for group-lasso training (%u x %zu parameters)",
                              wrows, p->k);
            goto done;
        }
        memcpy(trained, p->params, (size_t)wrows * p->k * sizeof *trained);
        st = group_lasso_train(req, o, &p->arch, p->repr == EB_REPR_DROPOUT, wrows, trained,
                               &zeros, layer_zeros, &gl_losses, &penalties, &n_groups, err);
        if (st)
            goto done;
        weights = trained;
    }
    /* one unit set for all members, by the mean norm across them: members
     * then stay one architecture, which a bundle requires. Groups at
     * exactly 0 have norm 0 and go first. */
    st = eb_prune_units_select(&p->arch, weights, wrows, o->sparsity, keep, err);
    if (!st)
        st = eb_prune_units_arch(&p->arch, keep, &small, err);
    if (!st)
        st = eb_trained_alloc(out, &small, p->repr, p->members, rows, err);
    if (st)
        goto done;
    for (uint32_t r = 0; r < rows; r++) {
        const float *src = r < wrows ? weights + (size_t)r * p->k : p->sigma;
        eb_prune_units_shrink(&p->arch, keep, &small, src, out->params + (size_t)r * small.n_params);
    }
    for (int l = 0; l < small.n_layers && !st; l++) {
        char key[48], val[48];
        if (!has_weights(&small.layers[l]))
            continue;
        snprintf(key, sizeof key, "prune.layer%d.units", l + 1);
        snprintf(val, sizeof val, "%d/%d", small.layers[l].units, p->arch.layers[l].units);
        st = eb_trained_meta(out, key, val, err);
    }
    if (!st && o->group_lasso > 0.0) {
        st = meta_f(out, "prune.group_lasso", o->group_lasso, err);
        if (!st)
            st = meta_i(out, "prune.gl_epochs", o->gl_epochs, err);
        if (!st)
            st = meta_i(out, "prune.gl_groups", (long)n_groups, err);
        if (!st)
            st = eb_trained_meta(out, "prune.gl_zero_groups", zeros.s, err);
        for (int l = 0; l < p->arch.n_layers && !st; l++) {
            char key[48];
            if (!layer_zeros[l].len)
                continue;
            snprintf(key, sizeof key, "prune.layer%d.gl_zero_groups", l + 1);
            st = eb_trained_meta(out, key, layer_zeros[l].s, err);
        }
        if (!st)
            st = eb_trained_meta(out, "prune.gl_loss", gl_losses.s, err);
        if (!st)
            st = eb_trained_meta(out, "prune.gl_penalty", penalties.s, err);
    }
    if (!st && p->repr != EB_REPR_GAUSSIAN && o->finetune_epochs > 0) {
        list_buf losses = {NULL, 0, 0};
        eb_sgd_config cfg;
        finetune_config(o, req, p->repr == EB_REPR_DROPOUT, &cfg);
        for (uint32_t m = 0; m < wrows && !st; m++) {
            double loss = 0.0;
            char phase[64];
            snprintf(phase, sizeof phase, "prune member %u fine-tune", m + 1);
            st = eb_sgd_train(&small, req->train, &cfg, cycle_seed(req->seed, 1), m,
                              out->params + (size_t)m * small.n_params, phase, req->progress,
                              req->progress_ctx, &loss, err);
            if (!st)
                st = list_add(&losses, loss, err);
        }
        if (!st)
            st = eb_trained_meta(out, "prune.finetune_loss", losses.s, err);
        eb_free(losses.s);
    }
    if (!st)
        st = meta_i(out, "prune.params_before", (long)p->arch.n_params, err);
    if (!st)
        st = meta_i(out, "prune.params_after", (long)small.n_params, err);
done:
    eb_free(keep);
    eb_free_aligned(trained);
    eb_free(zeros.s);
    eb_free(gl_losses.s);
    eb_free(penalties.s);
    for (int l = 0; l < EB_ARCH_MAX_LAYERS; l++)
        eb_free(layer_zeros[l].s);
    return st;
}

static eb_status prune_apply(const eb_transform_request *req, eb_trained *out, eb_error *err)
{
    const eb_posterior *p = req->posterior;
    prune_opts o;
    eb_status st;
    uint32_t wrows, rows;
    size_t K;
    uint8_t *mask = NULL;
    float *score = NULL, *theta_k = NULL;
    list_buf losses = {NULL, 0, 0};
    int cycles = 0;

    memset(out, 0, sizeof *out);
    if (!p || !req->settings)
        return eb_error_set(err, EB_ERR_ARG, "prune: no parent posterior or settings");
    st = read_opts(req, &o, err);
    if (st)
        return st;
    K = p->k;
    wrows = weight_rows(p);
    rows = p->repr == EB_REPR_GAUSSIAN ? 2 : wrows;
    if (o.units) {
        st = prune_units(req, &o, out, err);
        goto meta;
    }
    st = eb_trained_alloc(out, &p->arch, p->repr, p->members, rows, err);
    if (st)
        return st;
    memcpy(out->params, p->params, (size_t)wrows * K * sizeof *out->params);
    if (p->repr == EB_REPR_GAUSSIAN)
        memcpy(out->params + K, p->sigma, K * sizeof *out->params);
    mask = eb_malloc(K);
    score = eb_malloc(K * sizeof *score);
    if (o.schedule == SCHED_REWIND)
        theta_k = eb_malloc_aligned(64, K * sizeof *theta_k);
    if (!mask || !score || (o.schedule == SCHED_REWIND && !theta_k)) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for pruning state (%zu parameters)",
                          K);
        goto meta;
    }
    if (o.schedule != SCHED_ONESHOT)
        cycles = eb_prune_cycles(o.sparsity, o.rate);

    if (p->repr == EB_REPR_GAUSSIAN) {
        float *mu = out->params, *sigma = out->params + K;
        if (o.snr)
            eb_prune_score_snr(score, mu, sigma, K);
        else
            eb_prune_score_magnitude(score, mu, K);
        st = eb_prune_mask(&p->arch, score, NULL, o.sparsity, o.scope, mask, err);
        if (!st) {
            eb_prune_apply(mu, mask, K);
            eb_prune_apply(sigma, mask, K);
        }
    } else {
        for (uint32_t m = 0; m < wrows && !st; m++) {
            float *theta = out->params + (size_t)m * K;
            if (o.schedule == SCHED_ONESHOT) {
                eb_prune_score_magnitude(score, theta, K);
                st = eb_prune_mask(&p->arch, score, NULL, o.sparsity, o.scope, mask, err);
                if (!st)
                    eb_prune_apply(theta, mask, K);
            } else if (o.schedule == SCHED_ITERATIVE) {
                st = iterate_member(req, &o, &p->arch, p->repr == EB_REPR_DROPOUT, m, theta,
                                    mask, score, &losses, err);
            } else {
                st = rewind_member(req, &o, &p->arch, m, theta, mask, score, theta_k, &losses,
                                   err);
            }
        }
    }
    if (!st && losses.len)
        st = eb_trained_meta(out, "prune.finetune_loss", losses.s, err);
    if (!st)
        st = sparsity_meta(out, wrows, err);
    if (!st && o.then) {
        st = sample_in_mask(req, &o, mask, out, err);
        if (!st)
            st = meta_f(out, "prune.then_sparsity", eb_prune_sparsity(&out->arch, out->params, -1),
                        err);
    }
meta:
    if (!st)
        st = meta_f(out, "prune.target", o.sparsity, err);
    if (!st)
        st = eb_trained_meta(out, "prune.schedule", schedule_name(o.schedule), err);
    if (!st)
        st = eb_trained_meta(out, "prune.scope", o.scope == EB_PRUNE_GLOBAL ? "global" : "layer",
                             err);
    if (!st)
        st = eb_trained_meta(out, "prune.criterion", o.snr ? "snr" : "magnitude", err);
    if (!st)
        st = eb_trained_meta(out, "prune.structure", o.units ? "units" : "weights", err);
    if (!st && cycles)
        st = meta_i(out, "prune.cycles", cycles, err);
    if (!st && o.then)
        st = eb_trained_meta(out, "prune.then", o.then, err);
    if (!st)
        out->storage = o.storage;
    eb_free(mask);
    eb_free(score);
    eb_free_aligned(theta_k);
    eb_free(losses.s);
    if (st)
        eb_trained_free(out);
    return st;
}

const eb_transform eb_transform_prune = {
    /* .name = */ "prune",
    /* .summary = */ "magnitude / SNR pruning (oneshot, iterative, lottery-ticket rewind), "
                     "structured unit removal, and SG-MCMC inside a sparse mask",
    /* .settings = */ prune_settings,
    /* .short_key = */ "sparsity",
    /* .apply = */ prune_apply,
    /* .needs_train = */ 1,
    /* .needs_train_for = */ NULL,
};
