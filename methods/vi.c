/* vi.c: mean-field variational inference (Bayes by Backprop, Blundell et
 * al. 2015): the network's expected loss under q with the local
 * reparameterisation trick for dense layers, the regulariser (KL to the
 * Gaussian prior, tempered), the optimisation loop over any VI target,
 * a plain-reparameterisation VI target over any target (for models that
 * are not networks), and the network method `vi`, which writes a
 * `gaussian` bundle (mu, sigma). docs/methods.md has the derivations. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "methods/eb_samplers.h"
#include "methods/nn/nn_kernels.h"

double eb_softplus(double x)
{
    /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact in double */
    return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

double eb_softplus_inv(double y)
{
    /* x = log(e^y - 1) = y + log(1 - e^-y) */
    return y + log(-expm1(-y));
}

double eb_vi_regulariser(const float *mu, const float *rho, size_t K, double prior_var, double T,
                         float *dmu, float *drho)
{
    const double c = T * 0.5 * log(prior_var) - 0.5 * T;
    double r = 0.0;
    for (size_t i = 0; i < K; i++) {
        const double m = mu[i], s = eb_softplus(rho[i]);
        r += (m * m + s * s) / (2.0 * prior_var) - T * log(s) + c;
        if (dmu)
            dmu[i] = (float)(m / prior_var);
        if (drho) /* dsoftplus/drho = sigmoid(rho) = 1 - e^-sigma */
            drho[i] = (float)((s / prior_var - T / s) * -expm1(-s));
    }
    return r;
}

/* ---- the network under q, local reparameterisation ------------------- */

typedef struct vi_layer_buf {
    float *out;  /* (n, out_size); flatten: NULL (a view) */
    float *a2;   /* dense: the input squared (n, in_size) */
    float *sd;   /* dense: sqrt of the pre-activation variance (n, out) */
    float *eps;  /* dense: the pre-activation noise (n, out) */
    float *cols; /* conv: the im2col lowering of the input */
    int32_t *argmax; /* maxpool */
} vi_layer_buf;

typedef struct vi_ws {
    const eb_arch *arch;
    int max_n;
    vi_layer_buf L[EB_ARCH_MAX_LAYERS];
    const float *outp[EB_ARCH_MAX_LAYERS]; /* each layer's output in the last forward */
    float *var;     /* (K) sigma^2 of the dense layers' parameters */
    float *dvar;    /* (K) gradient with respect to var */
    float *wsamp;   /* (K) conv weights drawn for the shard */
    float *weps;    /* (K) their noise */
    float *dcols;   /* conv input-gradient scratch */
    float *h;       /* (n, max units) dense: gradient with respect to the variance */
    float *tmp;     /* (n, max_act) second input-gradient term */
    float *grad[2]; /* (n, max_act) ping-pong activation gradients */
    float *dlogits; /* (n, C) */
    const float *x; /* the input of the last forward (borrowed) */
    void *block;
} vi_ws;

static size_t up16(size_t x)
{
    return (x + 15) & ~(size_t)15;
}

static void vi_worker_free(void *p)
{
    vi_ws *ws = p;
    if (!ws)
        return;
    eb_free_aligned(ws->block);
    eb_free(ws);
}

static eb_status vi_worker_new(void *ctx, int max_count, void **out, eb_error *err)
{
    const eb_vi_shard_ctx *c = ctx;
    const eb_arch *a = c->arch;
    const size_t n = (size_t)max_count, K = a->n_params;
    size_t total = 0, max_cols = 0, max_units = 1;
    vi_ws *ws;
    char *p;

    *out = NULL;
    if (eb_arch_has_dropout(a))
        return eb_error_set(err, EB_ERR_ARG, "vi: the architecture has dropout layers; "
                            "mean-field VI models weight uncertainty itself, so remove them");
    ws = eb_calloc(1, sizeof *ws);
    if (!ws)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a VI worker");
    ws->arch = a;
    ws->max_n = max_count;
    /* two passes: sizes, then carving from one block */
    for (int pass = 0; pass < 2; pass++) {
        p = ws->block;
#define TAKE(ptr, type, count)                                   \
    do {                                                         \
        if (pass)                                                \
            (ptr) = (type *)(void *)p;                           \
        p += up16(count) * sizeof(float);                        \
        total += pass ? 0 : up16(count);                         \
    } while (0)
        for (int i = 0; i < a->n_layers; i++) {
            const eb_layer *l = &a->layers[i];
            vi_layer_buf *b = &ws->L[i];
            if (l->kind != EB_LAYER_FLATTEN)
                TAKE(b->out, float, n * l->out_size);
            if (l->kind == EB_LAYER_DENSE) {
                TAKE(b->a2, float, n * l->in_size);
                TAKE(b->sd, float, n * l->out_size);
                TAKE(b->eps, float, n * l->out_size);
                if ((size_t)l->units > max_units)
                    max_units = (size_t)l->units;
            }
            if (l->kind == EB_LAYER_CONV2D) {
                size_t cols = n * (size_t)(l->out_h * l->out_w) * 9 * (size_t)l->in_c;
                TAKE(b->cols, float, cols);
                if (cols > max_cols)
                    max_cols = cols;
            }
            if (l->kind == EB_LAYER_MAXPOOL)
                TAKE(b->argmax, int32_t, n * l->out_size);
        }
        TAKE(ws->var, float, K);
        TAKE(ws->dvar, float, K);
        TAKE(ws->wsamp, float, K);
        TAKE(ws->weps, float, K);
        TAKE(ws->dcols, float, max_cols);
        TAKE(ws->h, float, n * max_units);
        TAKE(ws->tmp, float, n * a->max_act);
        TAKE(ws->grad[0], float, n * a->max_act);
        TAKE(ws->grad[1], float, n * a->max_act);
        TAKE(ws->dlogits, float, n * (size_t)a->n_classes);
#undef TAKE
        if (!pass) {
            ws->block = eb_malloc_aligned(64, total * sizeof(float));
            if (!ws->block) {
                eb_free(ws);
                return eb_error_set(err, EB_ERR_NOMEM, "out of memory: a VI worker needs %zu "
                                    "bytes for batch %d", total * sizeof(float), max_count);
            }
        }
    }
    *out = ws;
    return EB_OK;
}

/* The noise of example `ex` in dense layer `layer`: its own stream, so it
 * does not depend on how the batch is sharded. */
static void example_noise(float *eps, size_t units, uint64_t seed, uint64_t pass, uint64_t ex,
                          int layer)
{
    eb_rng r;
    eb_rng_seed(&r, eb_rng_mix64(seed ^ eb_rng_mix64(pass * 0x9e3779b97f4a7c15ULL + ex)),
                (uint64_t)layer);
    eb_normal_fill(eps, units, &r);
}

/* Forward under q; returns the logits (n, C). theta = [mu | sigma]. */
static const float *vi_forward(vi_ws *ws, const eb_vi_shard_ctx *c, const float *theta,
                               const float *x, int n, uint64_t pass, uint64_t first)
{
    const eb_arch *a = ws->arch;
    const size_t K = a->n_params;
    const float *in = x;
    ws->x = x;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *l = &a->layers[i];
        vi_layer_buf *b = &ws->L[i];
        const float *wm = theta + l->param_offset, *bm = wm + l->n_weights;
        const float *wsd = theta + K + l->param_offset;
        float *o = b->out;
        switch (l->kind) {
        case EB_LAYER_DENSE: {
            const size_t np = l->n_weights + l->n_bias, no = (size_t)l->units;
            float *v = ws->var + l->param_offset;
            for (size_t k = 0; k < np; k++)
                v[k] = wsd[k] * wsd[k];
            for (size_t k = 0; k < (size_t)n * l->in_size; k++)
                b->a2[k] = in[k] * in[k];
            eb_kern_dense_forward(o, in, wm, bm, n, (int)l->in_size, l->units);
            eb_kern_dense_forward(b->sd, b->a2, v, v + l->n_weights, n, (int)l->in_size,
                                  l->units);
            for (int j = 0; j < n; j++)
                example_noise(b->eps + (size_t)j * no, no, c->noise_seed, pass,
                              first + (uint64_t)j, i);
            for (size_t k = 0; k < (size_t)n * no; k++) {
                /* the variance is a sum of non-negative terms; the floor
                 * keeps its gradient finite where all of them vanish */
                const float var = b->sd[k] > 1e-30f ? b->sd[k] : 1e-30f;
                b->sd[k] = sqrtf(var);
                o[k] += b->sd[k] * b->eps[k];
            }
            break;
        }
        case EB_LAYER_CONV2D: {
            const size_t np = l->n_weights + l->n_bias;
            float *w = ws->wsamp + l->param_offset, *e = ws->weps + l->param_offset;
            eb_rng r;
            eb_rng_seed(&r, eb_rng_mix64(c->noise_seed ^ eb_rng_mix64(pass * 0x9e3779b97f4a7c15ULL +
                                                                      first)),
                        0x100 + (uint64_t)i);
            eb_normal_fill(e, np, &r);
            for (size_t k = 0; k < np; k++)
                w[k] = wm[k] + wsd[k] * e[k];
            eb_kern_conv2d_forward(o, b->cols, in, w, w + l->n_weights, n, l->in_h, l->in_w,
                                   l->in_c, l->units);
            break;
        }
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_forward(o, b->argmax, in, n, l->in_h, l->in_w, l->in_c);
            break;
        case EB_LAYER_RELU:
            eb_kern_relu_forward(o, in, (size_t)n * l->out_size);
            break;
        case EB_LAYER_FLATTEN:
        case EB_LAYER_DROPOUT: /* refused when the worker is made */
            o = (float *)in;
            break;
        }
        ws->outp[i] = o;
        in = o;
    }
    return in;
}

/* Backward of the last forward from dlogits; grad = [dmu | dsigma] (2K). */
static void vi_backward(vi_ws *ws, const float *theta, int n, float *grad)
{
    const eb_arch *a = ws->arch;
    const size_t K = a->n_params;
    const float *dout = ws->dlogits;
    int pp = 0, first_param = a->n_layers;
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].n_weights) {
            first_param = i;
            break;
        }
    for (int i = a->n_layers - 1; i >= 0; i--) {
        const eb_layer *l = &a->layers[i];
        vi_layer_buf *b = &ws->L[i];
        const float *inp = i > 0 ? ws->outp[i - 1] : ws->x;
        const float *wm = theta + l->param_offset, *wsd = theta + K + l->param_offset;
        float *dmu = grad + l->param_offset, *dsd = grad + K + l->param_offset;
        float *dinp = i > first_param ? ws->grad[pp] : NULL;
        const size_t np = l->n_weights + l->n_bias;
        switch (l->kind) {
        case EB_LAYER_DENSE: {
            const size_t no = (size_t)l->units, ni = l->in_size;
            float *v = ws->var + l->param_offset, *dv = ws->dvar + l->param_offset;
            /* mean path: d/dmu and g mu_W */
            eb_kern_dense_backward(dinp, dmu, dmu + l->n_weights, dout, inp, wm, n, (int)ni,
                                   l->units);
            /* variance path: h = g eps / (2 sd), d/dvar = h^T a^2 */
            for (size_t k = 0; k < (size_t)n * no; k++)
                ws->h[k] = dout[k] * b->eps[k] / (2.0f * b->sd[k]);
            eb_kern_dense_backward(dinp ? ws->tmp : NULL, dv, dv + l->n_weights, ws->h, b->a2, v,
                                   n, (int)ni, l->units);
            /* dL/dsigma = dL/dvar * 2 sigma */
            for (size_t k = 0; k < np; k++)
                dsd[k] = 2.0f * dv[k] * wsd[k];
            /* d/da of a^2 var: 2 a (h var) */
            if (dinp)
                for (size_t k = 0; k < (size_t)n * ni; k++)
                    dinp[k] += 2.0f * inp[k] * ws->tmp[k];
            break;
        }
        case EB_LAYER_CONV2D: {
            const float *w = ws->wsamp + l->param_offset, *e = ws->weps + l->param_offset;
            eb_kern_conv2d_backward(dinp, dmu, dmu + l->n_weights, ws->dcols, dout, b->cols, w, n,
                                    l->in_h, l->in_w, l->in_c, l->units);
            /* w = mu + sigma eps: dL/dsigma = dL/dw * eps */
            for (size_t k = 0; k < np; k++)
                dsd[k] = dmu[k] * e[k];
            break;
        }
        case EB_LAYER_MAXPOOL:
            if (dinp)
                eb_kern_maxpool_backward(dinp, dout, b->argmax, n, l->in_h, l->in_w, l->in_c);
            break;
        case EB_LAYER_RELU:
            if (dinp)
                eb_kern_relu_backward(dinp, dout, ws->outp[i], (size_t)n * l->out_size);
            break;
        case EB_LAYER_FLATTEN:
        case EB_LAYER_DROPOUT:
            if (dinp)
                memcpy(dinp, dout, (size_t)n * l->out_size * sizeof(float));
            break;
        }
        if (!dinp)
            break; /* nothing below this layer has parameters */
        dout = dinp;
        pp ^= 1;
    }
}

static double vi_shard(void *ctx, void *p, const float *theta, const float *x, const uint8_t *y,
                       int count, float scale, uint64_t pass, uint64_t first_example, float *grad)
{
    const eb_vi_shard_ctx *c = ctx;
    vi_ws *ws = p;
    const float *logits = vi_forward(ws, c, theta, x, count, pass, first_example);
    const double loss =
        count * eb_softmax_xent(ws->dlogits, logits, y, count, c->arch->n_classes, scale);
    /* parameters of layers outside [first_param, ...) have none; zero the
     * whole gradient first so nothing stale survives */
    memset(grad, 0, 2 * c->arch->n_params * sizeof *grad);
    vi_backward(ws, theta, count, grad);
    return loss;
}

const eb_shard_ops eb_vi_lrt_shard_ops = {
    /* .worker_new = */ vi_worker_new,
    /* .worker_free = */ vi_worker_free,
    /* .shard = */ vi_shard,
};

/* ---- VI targets -------------------------------------------------------- */

typedef struct vi_nn_target {
    eb_vi_shard_ctx shard;
    eb_grad_engine *engine;
} vi_nn_target;

static double vi_nn_step(void *ctx, float *theta, const uint32_t *idx, int count, uint64_t pass,
                         uint64_t first_example, eb_update_fn update, void *uctx)
{
    vi_nn_target *t = ctx;
    return eb_grad_engine_step(t->engine, theta, idx, count, pass, first_example, update, uctx);
}

static void vi_nn_destroy(void *ctx)
{
    vi_nn_target *t = ctx;
    eb_grad_engine_free(t->engine);
    eb_free(t);
}

eb_status eb_target_vi_nn(eb_target *t, const eb_arch *arch, const eb_dataset *data,
                          int max_batch, int threads, uint64_t noise_seed, eb_error *err)
{
    vi_nn_target *c;
    eb_status st;
    memset(t, 0, sizeof *t);
    if ((size_t)data->h * data->w * data->c != arch->in_size || data->n_classes > arch->n_classes)
        return eb_error_set(err, EB_ERR_ARG,
                            "training set '%s' (%dx%dx%d, %d classes) does not fit the "
                            "architecture (input %dx%dx%d, %d classes)",
                            data->name, data->h, data->w, data->c, data->n_classes, arch->in_h,
                            arch->in_w, arch->in_c, arch->n_classes);
    if (data->n == 0)
        return eb_error_set(err, EB_ERR_ARG, "training set '%s' is empty", data->name);
    c = eb_calloc(1, sizeof *c);
    if (!c)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a VI target");
    c->shard.arch = arch;
    c->shard.noise_seed = noise_seed;
    if ((size_t)max_batch > data->n)
        max_batch = (int)data->n;
    st = eb_grad_engine_new(&eb_vi_lrt_shard_ops, &c->shard, data, 2 * arch->n_params, max_batch,
                            threads, &c->engine, err);
    if (st) {
        eb_free(c);
        return st;
    }
    t->dim = 2 * arch->n_params;
    t->n = data->n;
    t->max_batch = max_batch;
    t->ctx = c;
    t->step = vi_nn_step;
    t->destroy = vi_nn_destroy;
    return EB_OK;
}

typedef struct reparam_target {
    const eb_target *inner;
    uint64_t noise_seed;
    size_t K;
    float *theta; /* (K) the drawn weights */
    float *eps;   /* (K) their noise */
    float *g2;    /* (2K) the outer gradient */
    float *outer_theta;
    eb_update_fn update;
    void *uctx;
} reparam_target;

static void reparam_update(void *uctx, float *theta, float *grad, size_t lo, size_t hi)
{
    reparam_target *r = uctx;
    const size_t K = r->K;
    (void)theta;
    for (size_t i = lo; i < hi; i++) {
        r->g2[i] = grad[i];
        r->g2[K + i] = grad[i] * r->eps[i];
    }
    r->update(r->uctx, r->outer_theta, r->g2, lo, hi);
    r->update(r->uctx, r->outer_theta, r->g2, K + lo, K + hi);
}

static double reparam_step(void *ctx, float *theta, const uint32_t *idx, int count,
                           uint64_t pass, uint64_t first_example, eb_update_fn update, void *uctx)
{
    reparam_target *r = ctx;
    const size_t K = r->K;
    eb_noise_keyed(r->eps, 0, K, r->noise_seed, EB_STREAM_SAMPLER, pass);
    for (size_t i = 0; i < K; i++)
        r->theta[i] = theta[i] + theta[K + i] * r->eps[i];
    r->outer_theta = theta;
    r->update = update;
    r->uctx = uctx;
    return r->inner->step(r->inner->ctx, r->theta, idx, count, pass, first_example,
                          reparam_update, r);
}

static void reparam_destroy(void *ctx)
{
    reparam_target *r = ctx;
    eb_free(r->theta);
    eb_free(r->eps);
    eb_free(r->g2);
    eb_free(r);
}

eb_status eb_target_reparam(eb_target *t, const eb_target *inner, uint64_t noise_seed,
                            eb_error *err)
{
    reparam_target *r;
    memset(t, 0, sizeof *t);
    r = eb_calloc(1, sizeof *r);
    if (!r)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a VI target");
    r->inner = inner;
    r->noise_seed = noise_seed;
    r->K = inner->dim;
    r->theta = eb_malloc(r->K * sizeof *r->theta);
    r->eps = eb_malloc(r->K * sizeof *r->eps);
    r->g2 = eb_malloc(2 * r->K * sizeof *r->g2);
    if (!r->theta || !r->eps || !r->g2) {
        reparam_destroy(r);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a VI target (%zu parameters)",
                            inner->dim);
    }
    t->dim = 2 * inner->dim;
    t->n = inner->n;
    t->max_batch = inner->max_batch;
    t->ctx = r;
    t->step = reparam_step;
    t->destroy = reparam_destroy;
    return EB_OK;
}

/* ---- the optimisation loop -------------------------------------------- */

typedef struct vi_update_ctx {
    eb_optim *opt;
    float *phi;    /* (2K) [mu | rho]: what Adam optimises */
    size_t K;
    float lr;
    float wmu;     /* beta / (N prior_var) */
    float wsd;     /* beta / (N prior_var) on sigma */
    float wlog;    /* beta T / N on -log sigma */
} vi_update_ctx;

/* Adds the regulariser's gradient, maps d/dsigma to d/drho, steps Adam on
 * [mu | rho] and refreshes the target's [mu | sigma] over [lo, hi). */
static void vi_update(void *uctx, float *theta, float *grad, size_t lo, size_t hi)
{
    vi_update_ctx *u = uctx;
    const size_t K = u->K;
    for (size_t i = lo; i < hi; i++) {
        if (i < K) {
            grad[i] += u->wmu * u->phi[i];
        } else {
            const float s = theta[i];
            /* sigmoid(rho) = 1 - e^-softplus(rho) */
            grad[i] = (grad[i] + u->wsd * s - u->wlog / s) * -expm1f(-s);
        }
    }
    eb_optim_step_range(u->opt, u->phi, grad, u->lr, lo, hi);
    for (size_t i = lo; i < hi; i++)
        theta[i] = i < K ? u->phi[i] : (float)eb_softplus(u->phi[i]);
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

eb_status eb_vi_run(const eb_target *t, const eb_vi_config *cfg, float *mu, float *rho,
                    const eb_sampler_hooks *hooks, eb_sampler_trace *trace, eb_error *err)
{
    const size_t K = t->dim / 2, N = t->n;
    const int B = cfg->batch < t->max_batch ? cfg->batch : t->max_batch;
    const long per_epoch = B > 0 ? (long)((N + (size_t)B - 1) / (size_t)B) : 0;
    const long total = per_epoch * cfg->epochs;
    eb_optim_config oc;
    eb_optim opt;
    vi_update_ctx u;
    float *phi = NULL, *fwd = NULL;
    uint32_t *order = NULL;
    eb_rng rng;
    eb_status st = EB_OK;

    memset(&opt, 0, sizeof opt);
    if (t->dim % 2 || K == 0 || cfg->epochs < 1 || B < 1 || !(cfg->lr > 0.0) ||
        !(cfg->prior_var > 0.0) || !(cfg->temperature > 0.0) || cfg->kl_warmup < 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "VI needs an even target dimension (%zu), epochs >= 1 (%d), batch "
                            ">= 1 (%d), lr > 0 (%g), prior_var > 0 (%g), temperature > 0 (%g) "
                            "and kl_warmup >= 0 (%d)", t->dim, cfg->epochs, B, cfg->lr,
                            cfg->prior_var, cfg->temperature, cfg->kl_warmup);
    if (trace) {
        memset(trace, 0, sizeof *trace);
        trace->chains = 1;
        trace->points = cfg->epochs;
        trace->loss = eb_calloc((size_t)cfg->epochs, sizeof(double));
        trace->nll = eb_calloc((size_t)cfg->epochs, sizeof(double));
        if (!trace->loss || !trace->nll) {
            eb_sampler_trace_free(trace);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for VI traces");
        }
    }
    eb_optim_config_default(&oc, EB_OPTIM_ADAM);
    oc.lr = (float)cfg->lr;
    st = eb_optim_init(&opt, &oc, 2 * K, err);
    if (st)
        goto done;
    phi = eb_malloc_aligned(64, 2 * K * sizeof *phi);
    fwd = eb_malloc_aligned(64, 2 * K * sizeof *fwd);
    order = eb_malloc(N * sizeof *order);
    if (!phi || !fwd || !order) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for VI state (%zu parameters)", K);
        goto done;
    }
    memcpy(phi, mu, K * sizeof *phi);
    memcpy(phi + K, rho, K * sizeof *phi);
    for (size_t i = 0; i < 2 * K; i++)
        fwd[i] = i < K ? phi[i] : (float)eb_softplus(phi[i]);
    for (size_t i = 0; i < N; i++)
        order[i] = (uint32_t)i;
    eb_rng_seed(&rng, cfg->seed, EB_STREAM_ORDER);
    u.opt = &opt;
    u.phi = phi;
    u.K = K;

    for (int epoch = 0; epoch < cfg->epochs && !st; epoch++) {
        const double beta =
            cfg->kl_warmup > 0 && epoch < cfg->kl_warmup ? (double)(epoch + 1) / cfg->kl_warmup
                                                         : 1.0;
        double nll_sum = 0.0, t0 = now_sec(), reg, nll;
        u.wmu = (float)(beta / ((double)N * cfg->prior_var));
        u.wsd = u.wmu;
        u.wlog = (float)(beta * cfg->temperature / (double)N);
        eb_rng_shuffle_u32(&rng, order, N);
        for (long b = 0; b < per_epoch; b++) {
            const long step = (long)epoch * per_epoch + b;
            const size_t first = (size_t)b * (size_t)B;
            const int nb = (int)(N - first < (size_t)B ? N - first : (size_t)B);
            u.lr = cfg->cosine ? (float)(0.5 * cfg->lr *
                                         (1.0 + cos(M_PI * (double)step / (double)total)))
                               : (float)cfg->lr;
            eb_optim_begin_step(&opt);
            nll_sum += t->step(t->ctx, fwd, order + first, nb, (uint64_t)step, first, vi_update,
                               &u);
        }
        nll = nll_sum / (double)N;
        reg = eb_vi_regulariser(phi, phi + K, K, cfg->prior_var, cfg->temperature, NULL, NULL);
        if (!isfinite(nll) || !isfinite(reg)) {
            st = eb_error_set(err, EB_ERR_NUMERIC, "VI diverged in epoch %d (mean NLL %g); lower "
                              "the learning rate (setting lr)", epoch + 1, nll);
            break;
        }
        if (trace) {
            trace->nll[epoch] = nll;
            trace->loss[epoch] = nll + beta * reg / (double)N;
        }
        if (hooks && hooks->progress) {
            eb_progress p;
            p.phase = hooks->phase ? hooks->phase : "vi";
            p.epoch = epoch + 1;
            p.epochs = cfg->epochs;
            p.loss = nll + beta * reg / (double)N;
            p.fraction = (double)(epoch + 1) / cfg->epochs;
            p.images_per_sec = (double)N / (now_sec() - t0 + 1e-12);
            p.epoch_done = 1;
            hooks->progress(hooks->progress_ctx, &p);
        }
    }
    if (!st) {
        memcpy(mu, phi, K * sizeof *mu);
        memcpy(rho, phi + K, K * sizeof *rho);
    }
done:
    if (st && trace)
        eb_sampler_trace_free(trace);
    eb_optim_free(&opt);
    eb_free_aligned(phi);
    eb_free_aligned(fwd);
    eb_free(order);
    return st;
}

/* ---- the network method ------------------------------------------------ */

static const eb_setting_spec vi_settings[] = {
    {"epochs", EB_SET_INT, "30", 1, 10000, NULL, "passes over the training set"},
    {"batch", EB_SET_INT, "128", 1, 65536, NULL, "mini-batch size"},
    {"lr", EB_SET_FLOAT, "0.001", 1e-7, 10, NULL, "Adam's peak learning rate"},
    {"schedule", EB_SET_CHOICE, "cosine", 0, 0, "cosine|constant", "learning-rate schedule"},
    {"prior_var", EB_SET_FLOAT, "0.05", 1e-6, 1e6, NULL,
     "variance of the Gaussian prior N(0, prior_var) on each parameter"},
    {"temperature", EB_SET_FLOAT, "0.1", 1e-6, 100, NULL,
     "posterior temperature T (the entropy term is weighted by T; 1 = Bayes)"},
    {"sigma_init", EB_SET_FLOAT, "0.001", 1e-8, 10, NULL, "initial sigma of every parameter"},
    {"kl_warmup", EB_SET_INT, "0", 0, 10000, NULL,
     "epochs over which the KL weight rises linearly to 1 (0 = off)"},
    {"samples", EB_SET_INT, "30", 1, 10000, NULL, "weight draws S at prediction"},
    {"subset", EB_SET_INT, "0", 0, 100000000, NULL,
     "train on the first N training images only (0 = all)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static eb_status vi_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    const eb_settings *s = req->settings;
    const eb_dataset data = eb_sampler_subset(req->train, eb_settings_int(s, "subset"));
    const size_t K = req->arch->n_params;
    const double rho0 = eb_softplus_inv(eb_settings_float(s, "sigma_init"));
    eb_vi_config cfg;
    eb_sampler_hooks hooks;
    eb_sampler_trace trace;
    eb_target t;
    eb_rng r;
    eb_status st;

    memset(&cfg, 0, sizeof cfg);
    cfg.lr = eb_settings_float(s, "lr");
    cfg.cosine = !strcmp(eb_settings_str(s, "schedule"), "cosine");
    cfg.epochs = (int)eb_settings_int(s, "epochs");
    cfg.batch = (int)eb_settings_int(s, "batch");
    cfg.prior_var = eb_settings_float(s, "prior_var");
    cfg.temperature = eb_settings_float(s, "temperature");
    cfg.kl_warmup = (int)eb_settings_int(s, "kl_warmup");
    cfg.seed = req->seed;
    st = eb_target_vi_nn(&t, req->arch, &data, cfg.batch, req->threads,
                         eb_rng_mix64(req->seed ^ EB_STREAM_SAMPLER), err);
    if (st)
        return eb_error_prefix(err, "vi: ");
    /* rows: mu, then rho during training, sigma in the bundle */
    st = eb_trained_alloc(out, req->arch, EB_REPR_GAUSSIAN, (uint32_t)eb_settings_int(s, "samples"),
                          2, err);
    if (st) {
        eb_target_free(&t);
        return st;
    }
    eb_rng_seed(&r, req->seed, EB_STREAM_INIT);
    eb_arch_init_params(req->arch, out->params, &r);
    for (size_t i = 0; i < K; i++)
        out->params[K + i] = (float)rho0;
    memset(&hooks, 0, sizeof hooks);
    hooks.progress = req->progress;
    hooks.progress_ctx = req->progress_ctx;
    hooks.phase = "vi";
    st = eb_vi_run(&t, &cfg, out->params, out->params + K, &hooks, &trace, err);
    eb_target_free(&t);
    if (!st) {
        double smean = 0.0;
        char buf[32];
        for (size_t i = 0; i < K; i++) {
            out->params[K + i] = (float)eb_softplus(out->params[K + i]);
            smean += out->params[K + i] / (double)K;
        }
        st = eb_sampler_trace_to_meta(&trace, out, err);
        snprintf(buf, sizeof buf, "%.6g", smean);
        if (!st)
            st = eb_trained_meta(out, "vi.sigma_mean", buf, err);
        eb_sampler_trace_free(&trace);
    }
    if (st) {
        eb_trained_free(out);
        return eb_error_prefix(err, "vi: ");
    }
    return EB_OK;
}

const eb_method eb_method_vi = {
    "vi", "mean-field variational inference (Bayes by Backprop) with local reparameterisation; "
          "a gaussian posterior sampled at prediction",
    vi_settings, NULL, vi_train};
