/* sgd_methods.c: the methods trained by plain mini-batch optimisation:
 *   map      one network (a MAP estimate under the weight-decay prior);
 *   ensemble S networks, each from its own initialisation and data order
 *            (Lakshminarayanan et al. 2017), stored as S samples;
 *   dropout  one network trained with dropout and predicted with S
 *            stochastic passes (MC dropout, Gal & Ghahramani 2016). */
#include <stdio.h>
#include <string.h>

#include "methods/eb_methods.h"

/* Settings every SGD-trained method shares. */
#define EB_SGD_SETTINGS                                                                         \
    {"epochs", EB_SET_INT, "30", 1, 10000, NULL, "passes over the training set"},              \
    {"batch", EB_SET_INT, "128", 1, 65536, NULL, "mini-batch size"},                           \
    {"optimizer", EB_SET_CHOICE, "adam", 0, 0, "adam|sgd", "update rule"},                     \
    {"lr", EB_SET_FLOAT, "0.001", 1e-7, 10, NULL, "peak learning rate"},                       \
    {"momentum", EB_SET_FLOAT, "0.9", 0, 0.999, NULL, "SGD momentum (optimizer=sgd)"},         \
    {"weight_decay", EB_SET_FLOAT, "0", 0, 1, NULL,                                            \
     "L2 decay: a Gaussian prior N(0, 1/(weight_decay * N)) per weight; 0 = flat"},             \
    {"schedule", EB_SET_CHOICE, "cosine", 0, 0, "cosine|constant", "learning-rate schedule"}

static const eb_setting_spec map_settings[] = {EB_SGD_SETTINGS, {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const eb_setting_spec ensemble_settings[] = {
    EB_SGD_SETTINGS,
    {"samples", EB_SET_INT, "5", 1, 1000, NULL, "ensemble members S"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const eb_setting_spec dropout_settings[] = {
    EB_SGD_SETTINGS,
    {"rate", EB_SET_FLOAT, "0.2", 0.01, 0.9, NULL, "dropout rate after each hidden layer"},
    {"samples", EB_SET_INT, "30", 1, 10000, NULL, "stochastic passes S at prediction"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

/* Defaults (see docs/cli.md for the measurements behind them): Adam with a
 * cosine schedule over 30 epochs and no weight decay. Annealed members
 * with weight decay end up too alike for an ensemble to gain much (+0.3
 * points of accuracy over one network on Fashion-MNIST's mlp at 20
 * epochs, weight decay 1e-4); without decay and with 30 epochs each
 * member overfits more on its own and the ensemble gains +0.5 to +0.8.
 * The CNN trains at ~1/25 of the MLP's images per second; 12 epochs reach
 * its accuracy. */
static const char *const sgd_arch_defaults[] = {"cnn:epochs=12", NULL};

static eb_status train_members(const eb_train_request *req, const eb_arch *arch, uint32_t S,
                               int dropout, float *theta /* (S, K) */, eb_error *err)
{
    eb_sgd_config cfg;
    eb_status st = eb_sgd_config_from_settings(&cfg, req->settings, err);
    if (st)
        return st;
    cfg.dropout = dropout;
    cfg.threads = req->threads;
    for (uint32_t m = 0; m < S; m++) {
        char phase[64];
        snprintf(phase, sizeof phase, S > 1 ? "member %u/%u" : "training", m + 1, S);
        st = eb_sgd_train(arch, req->train, &cfg, req->seed, m, theta + (size_t)m * arch->n_params,
                          phase, req->progress, req->progress_ctx, NULL, err);
        if (st)
            return eb_error_prefix(err, "%s: ", phase);
    }
    return EB_OK;
}

static eb_status train_samples(const eb_train_request *req, uint32_t S, eb_trained *out,
                               eb_error *err)
{
    eb_status st = eb_trained_alloc(out, req->arch, EB_REPR_SAMPLES, S, S, err);
    if (!st)
        st = train_members(req, req->arch, S, 0, out->params, err);
    if (st)
        eb_trained_free(out);
    return st;
}

static eb_status map_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    return train_samples(req, 1, out, err);
}

static eb_status ensemble_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    return train_samples(req, (uint32_t)eb_settings_int(req->settings, "samples"), out, err);
}

static eb_status dropout_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    eb_arch arch;
    eb_status st;
    const float rate = (float)eb_settings_float(req->settings, "rate");
    const uint32_t draws = (uint32_t)eb_settings_int(req->settings, "samples");

    st = eb_arch_with_dropout(req->arch, rate, &arch, err);
    if (!st)
        st = eb_trained_alloc(out, &arch, EB_REPR_DROPOUT, draws, 1, err);
    if (!st)
        st = train_members(req, &arch, 1, 1, out->params, err);
    if (st)
        eb_trained_free(out);
    return st;
}

const eb_method eb_method_map = {
    "map", "one network trained to a MAP estimate (weight decay as a Gaussian prior)",
    map_settings, sgd_arch_defaults, map_train};
const eb_method eb_method_ensemble = {
    "ensemble", "deep ensemble: S networks from independent initialisations and data orders",
    ensemble_settings, sgd_arch_defaults, ensemble_train};
const eb_method eb_method_dropout = {
    "dropout", "MC dropout: trained with dropout, predicted with S stochastic passes",
    dropout_settings, sgd_arch_defaults, dropout_train};
