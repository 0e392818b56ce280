/* snapshot.c: snapshot ensembles (Huang et al., ICLR 2017), the cheap
 * ensemble: one run of SGD with momentum on a cyclic cosine learning rate
 * (restarting at its peak every cycle), one snapshot at the end of each
 * cycle, where the rate has annealed to about zero. It is the SG-MCMC
 * driver of sgmcmc.c with the noise off and one sample per cycle. */
#include <string.h>

#include "methods/eb_samplers.h"

static const eb_setting_spec snapshot_settings[] = {
    {"samples", EB_SET_INT, "10", 1, 1000, NULL, "snapshots S, one per cycle"},
    {"epochs", EB_SET_INT, "50", 1, 100000, NULL, "epochs in all (S cycles)"},
    {"batch", EB_SET_INT, "128", 1, 65536, NULL, "mini-batch size"},
    {"lr", EB_SET_FLOAT, "0.05", 1e-9, 10, NULL, "peak learning rate of each cycle"},
    {"momentum", EB_SET_FLOAT, "0.9", 0, 0.9999, NULL, "heavy-ball momentum"},
    {"prior_var", EB_SET_FLOAT, "0.05", 1e-6, 1e6, NULL,
     "weight decay as a Gaussian prior N(0, prior_var): decay 1 / (N prior_var)"},
    {"subset", EB_SET_INT, "0", 0, 100000000, NULL,
     "train on the first N training images only (0 = all)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static eb_status nn_init(void *ctx, int chain, float *theta, eb_error *err)
{
    const eb_train_request *req = ctx;
    eb_rng r;
    (void)err;
    eb_rng_seed(&r, req->seed, EB_STREAM_INIT + (uint64_t)chain);
    eb_arch_init_params(req->arch, theta, &r);
    return EB_OK;
}

static eb_status snapshot_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    const eb_settings *s = req->settings;
    const eb_dataset data = eb_sampler_subset(req->train, eb_settings_int(s, "subset"));
    const int S = (int)eb_settings_int(s, "samples");
    eb_sgmcmc_config cfg;
    eb_sampler_hooks hooks;
    eb_sampler_trace trace;
    eb_target t;
    eb_status st;
    long per_epoch;

    memset(&cfg, 0, sizeof cfg);
    cfg.lr = eb_settings_float(s, "lr");
    cfg.friction = 1.0 - eb_settings_float(s, "momentum");
    cfg.temperature = 1.0; /* unused without noise */
    cfg.prior_var = eb_settings_float(s, "prior_var");
    cfg.batch = (int)eb_settings_int(s, "batch");
    cfg.noise = 0;
    cfg.cycles = S;
    cfg.per_cycle = 1;
    cfg.explore = 0.0;
    cfg.chains = 1;
    cfg.samples = S;
    cfg.seed = req->seed;
    per_epoch = (long)((data.n + (size_t)cfg.batch - 1) / (size_t)cfg.batch);
    cfg.steps = eb_settings_int(s, "epochs") * per_epoch;
    st = eb_target_nn(&t, req->arch, &data, cfg.batch, req->threads, err);
    if (st)
        return st;
    st = eb_trained_alloc(out, req->arch, EB_REPR_SAMPLES, (uint32_t)S, (uint32_t)S, err);
    if (st) {
        eb_target_free(&t);
        return st;
    }
    memset(&hooks, 0, sizeof hooks);
    hooks.init = nn_init;
    hooks.ctx = (void *)req;
    hooks.progress = req->progress;
    hooks.progress_ctx = req->progress_ctx;
    hooks.phase = "snapshot";
    st = eb_sgmcmc_run(&t, &cfg, &hooks, out->params, &trace, err);
    eb_target_free(&t);
    if (!st) {
        st = eb_sampler_trace_to_meta(&trace, out, err);
        eb_sampler_trace_free(&trace);
    }
    if (st) {
        eb_trained_free(out);
        return eb_error_prefix(err, "snapshot: ");
    }
    return EB_OK;
}

const eb_method eb_method_snapshot = {
    "snapshot", "snapshot ensemble: one SGD run on a cyclic cosine rate, a snapshot per cycle "
                "(Huang et al. 2017)",
    snapshot_settings, NULL, snapshot_train};
