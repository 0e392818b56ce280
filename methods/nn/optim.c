/* optim.c: SGD with (Nesterov) momentum and Adam over flat vectors, with
 * L2 weight decay as the gradient of a Gaussian prior. */
#include <math.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_nn.h"

void eb_optim_config_default(eb_optim_config *cfg, eb_optim_kind kind)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->lr = kind == EB_OPTIM_ADAM ? 1e-3f : 0.05f;
    cfg->momentum = kind == EB_OPTIM_SGD ? 0.9f : 0.0f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
}

eb_status eb_optim_init(eb_optim *opt, const eb_optim_config *cfg, size_t k, eb_error *err)
{
    memset(opt, 0, sizeof *opt);
    if (cfg->kind != EB_OPTIM_SGD && cfg->kind != EB_OPTIM_ADAM)
        return eb_error_set(err, EB_ERR_ARG, "unknown optimiser kind %d", (int)cfg->kind);
    if (!(cfg->lr > 0.0f) || !(cfg->weight_decay >= 0.0f) || !(cfg->momentum >= 0.0f) ||
        !(cfg->momentum < 1.0f))
        return eb_error_set(err, EB_ERR_ARG,
                            "optimiser settings out of range (lr %g must be > 0, momentum %g in "
                            "[0, 1), weight decay %g >= 0)",
                            (double)cfg->lr, (double)cfg->momentum, (double)cfg->weight_decay);
    opt->cfg = *cfg;
    opt->k = k;
    opt->m = eb_calloc(k, sizeof(float));
    if (cfg->kind == EB_OPTIM_ADAM)
        opt->v = eb_calloc(k, sizeof(float));
    if (!opt->m || (cfg->kind == EB_OPTIM_ADAM && !opt->v)) {
        eb_optim_free(opt);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for optimiser state (%zu floats)",
                            k);
    }
    return EB_OK;
}

void eb_optim_begin_step(eb_optim *opt)
{
    opt->t++;
}

void eb_optim_step_range(eb_optim *opt, float *theta, float *grad, float lr, size_t begin,
                         size_t end)
{
    const eb_optim_config *c = &opt->cfg;
    float *m = opt->m;

    if (c->weight_decay > 0.0f)
        for (size_t i = begin; i < end; i++)
            grad[i] += c->weight_decay * theta[i];
    if (c->kind == EB_OPTIM_SGD) {
        const float mu = c->momentum;
        if (mu == 0.0f) {
            for (size_t i = begin; i < end; i++)
                theta[i] -= lr * grad[i];
        } else if (c->nesterov) {
            for (size_t i = begin; i < end; i++) {
                m[i] = mu * m[i] + grad[i];
                theta[i] -= lr * (grad[i] + mu * m[i]);
            }
        } else {
            for (size_t i = begin; i < end; i++) {
                m[i] = mu * m[i] + grad[i];
                theta[i] -= lr * m[i];
            }
        }
    } else {
        const float b1 = c->beta1, b2 = c->beta2;
        const double bc1 = 1.0 - pow(b1, (double)opt->t);
        const double bc2 = 1.0 - pow(b2, (double)opt->t);
        const float step = (float)(lr * sqrt(bc2) / bc1);
        const float eps = (float)(c->eps * sqrt(bc2));
        float *v = opt->v;
        for (size_t i = begin; i < end; i++) {
            m[i] = b1 * m[i] + (1.0f - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0f - b2) * grad[i] * grad[i];
            theta[i] -= step * m[i] / (sqrtf(v[i]) + eps);
        }
    }
}

void eb_optim_step_masked_range(eb_optim *opt, float *theta, float *grad, float lr,
                                const uint8_t *mask, size_t begin, size_t end)
{
    if (mask)
        for (size_t i = begin; i < end; i++)
            if (!mask[i])
                grad[i] = 0.0f;
    eb_optim_step_range(opt, theta, grad, lr, begin, end);
    if (mask)
        for (size_t i = begin; i < end; i++)
            if (!mask[i]) {
                theta[i] = 0.0f;
                opt->m[i] = 0.0f;
                if (opt->v)
                    opt->v[i] = 0.0f;
            }
}

void eb_optim_step(eb_optim *opt, float *theta, float *grad, float lr)
{
    eb_optim_begin_step(opt);
    eb_optim_step_range(opt, theta, grad, lr, 0, opt->k);
}

void eb_optim_free(eb_optim *opt)
{
    eb_free(opt->m);
    eb_free(opt->v);
    opt->m = opt->v = NULL;
}
