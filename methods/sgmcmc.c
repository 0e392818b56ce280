/* sgmcmc.c: stochastic-gradient MCMC over any eb_target (SGLD, SGHMC,
 * their cyclical variants, and noise-free cyclic SGD for snapshot
 * ensembles), and the network methods sgld, sghmc, csgld and csghmc.
 * docs/methods.md gives the algorithms, settings and the measurements
 * behind the defaults. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "methods/eb_samplers.h"

void eb_sampler_trace_free(eb_sampler_trace *tr)
{
    if (!tr)
        return;
    eb_free(tr->loss);
    eb_free(tr->nll);
    eb_free(tr->accept_rate);
    eb_free(tr->step_size);
    eb_free(tr->leapfrog);
    memset(tr, 0, sizeof *tr);
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The per-step state the parallel update reads. */
typedef struct sg_update {
    float *v;        /* (dim) momentum */
    float *noise;    /* (dim) scratch for this step's noise */
    float keep;      /* 1 - friction */
    float lr;        /* this step's lr */
    float decay;     /* 1 / (N prior_var): the prior's gradient per unit of mean NLL */
    float noise_sd;  /* sqrt(2 friction lr T / N), 0 without noise */
    uint64_t seed, stream, step;
    const uint8_t *mask; /* (dim) or NULL */
} sg_update;

static void sg_update_slice(void *uctx, float *theta, float *grad, size_t lo, size_t hi)
{
    const sg_update *u = uctx;
    if (u->mask) {
        /* the same arithmetic, with pinned coordinates left at exactly 0 */
        const uint8_t *mask = u->mask;
        if (u->noise_sd > 0.0f)
            eb_noise_keyed(u->noise + lo, lo, hi, u->seed, u->stream, u->step);
        for (size_t i = lo; i < hi; i++) {
            if (mask[i]) {
                const float g = grad[i] + u->decay * theta[i];
                const float xi = u->noise_sd > 0.0f ? u->noise_sd * u->noise[i] : 0.0f;
                u->v[i] = u->keep * u->v[i] - u->lr * g + xi;
                theta[i] += u->v[i];
            } else {
                u->v[i] = 0.0f;
                theta[i] = 0.0f;
            }
        }
    } else if (u->noise_sd > 0.0f) {
        eb_noise_keyed(u->noise + lo, lo, hi, u->seed, u->stream, u->step);
        for (size_t i = lo; i < hi; i++) {
            const float g = grad[i] + u->decay * theta[i];
            u->v[i] = u->keep * u->v[i] - u->lr * g + u->noise_sd * u->noise[i];
            theta[i] += u->v[i];
        }
    } else {
        for (size_t i = lo; i < hi; i++) {
            const float g = grad[i] + u->decay * theta[i];
            u->v[i] = u->keep * u->v[i] - u->lr * g;
            theta[i] += u->v[i];
        }
    }
}

static eb_status check_config(const eb_target *t, const eb_sgmcmc_config *c, eb_error *err)
{
    if (!(c->lr > 0.0) || !(c->friction > 0.0 && c->friction <= 1.0) ||
        !(c->temperature > 0.0) || !(c->prior_var > 0.0))
        return eb_error_set(err, EB_ERR_ARG,
                            "SG-MCMC needs lr > 0 (%g), friction in (0, 1] (%g), temperature > 0 "
                            "(%g) and prior_var > 0 (%g)", c->lr, c->friction, c->temperature,
                            c->prior_var);
    if (c->batch < 1 || c->chains < 1 || c->samples < 1)
        return eb_error_set(err, EB_ERR_ARG, "SG-MCMC needs batch (%d), chains (%d) and samples "
                            "(%d) of at least 1", c->batch, c->chains, c->samples);
    if (c->cycles > 0) {
        if (c->per_cycle < 1 || (long)c->cycles * c->per_cycle != c->samples)
            return eb_error_set(err, EB_ERR_ARG, "cyclical SG-MCMC: %d samples per chain are not "
                                "%d cycles x %d per cycle", c->samples, c->cycles, c->per_cycle);
        if (!(c->explore >= 0.0 && c->explore < 1.0))
            return eb_error_set(err, EB_ERR_ARG, "cyclical SG-MCMC: explore (%g) must be in "
                                "[0, 1)", c->explore);
        if (c->steps / c->cycles < c->per_cycle)
            return eb_error_set(err, EB_ERR_ARG, "cyclical SG-MCMC: %ld steps in %d cycles leave "
                                "fewer steps per cycle than its %d samples", c->steps, c->cycles,
                                c->per_cycle);
    } else if (c->burnin < 0 || c->thin < 1) {
        return eb_error_set(err, EB_ERR_ARG, "SG-MCMC needs burnin >= 0 (%ld) and thin >= 1 "
                            "(%ld) steps", c->burnin, c->thin);
    }
    if (t->max_batch < 1 || t->n < 1)
        return eb_error_set(err, EB_ERR_ARG, "SG-MCMC: the target has no data");
    return EB_OK;
}

/* Cyclical schedule: cycles of L steps; the sample slots of a cycle are its
 * last step and per_cycle - 1 more, `gap` steps apart, all inside the
 * sampling stage. Returns the sample index within the cycle at position r,
 * or -1. */
static int cyclic_slot(long r, long L, long sampling, int per_cycle)
{
    long gap = sampling / per_cycle;
    long back = L - 1 - r;
    if (gap < 1)
        gap = 1;
    if (back % gap != 0 || back / gap >= per_cycle)
        return -1;
    return per_cycle - 1 - (int)(back / gap);
}

eb_status eb_sgmcmc_run(const eb_target *t, const eb_sgmcmc_config *cfg,
                        const eb_sampler_hooks *hooks, float *out, eb_sampler_trace *trace,
                        eb_error *err)
{
    const size_t K = t->dim, N = t->n;
    const int B = cfg->batch < t->max_batch ? cfg->batch : t->max_batch;
    const long per_epoch = (long)((N + (size_t)B - 1) / (size_t)B);
    long steps, L = 0, sampling = 0;
    int epochs;
    float *theta = NULL, *v = NULL, *noise = NULL;
    uint32_t *order = NULL;
    sg_update u;
    eb_status st = check_config(t, cfg, err);

    if (st)
        return st;
    if (cfg->cycles > 0) {
        L = cfg->steps / cfg->cycles;
        steps = L * cfg->cycles;
        sampling = L - (long)ceil(cfg->explore * (double)L);
        if (sampling < cfg->per_cycle)
            return eb_error_set(err, EB_ERR_ARG, "cyclical SG-MCMC: the sampling stage of a "
                                "%ld-step cycle (explore %g) has %ld steps, fewer than its %d "
                                "samples", L, cfg->explore, sampling, cfg->per_cycle);
    } else {
        steps = cfg->burnin + (long)cfg->samples * cfg->thin;
    }
    epochs = (int)((steps + per_epoch - 1) / per_epoch);
    if (trace) {
        memset(trace, 0, sizeof *trace);
        trace->chains = cfg->chains;
        trace->points = epochs;
        trace->loss = eb_calloc((size_t)cfg->chains * (size_t)epochs, sizeof(double));
        trace->nll = eb_calloc((size_t)cfg->chains * (size_t)epochs, sizeof(double));
        if (!trace->loss || !trace->nll) {
            eb_sampler_trace_free(trace);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for sampler traces");
        }
    }
    theta = eb_malloc_aligned(64, K * sizeof *theta);
    v = eb_malloc_aligned(64, K * sizeof *v);
    noise = eb_malloc_aligned(64, K * sizeof *noise);
    order = eb_malloc(N * sizeof *order);
    if (!theta || !v || !noise || !order) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for SG-MCMC state (%zu parameters)",
                          K);
        goto done;
    }
    u.v = v;
    u.noise = noise;
    u.keep = (float)(1.0 - cfg->friction);
    u.decay = (float)(1.0 / ((double)N * cfg->prior_var));
    u.seed = cfg->seed;
    u.mask = cfg->mask;

    for (int c = 0; c < cfg->chains && !st; c++) {
        eb_rng order_rng;
        double t0 = now_sec(), nll_sum = 0.0;
        size_t seen = 0;
        int taken = 0;
        if (hooks && hooks->init)
            st = hooks->init(hooks->ctx, c, theta, err);
        else
            memset(theta, 0, K * sizeof *theta);
        if (st)
            break;
        if (cfg->mask)
            for (size_t i = 0; i < K; i++)
                if (!cfg->mask[i])
                    theta[i] = 0.0f;
        memset(v, 0, K * sizeof *v);
        eb_rng_seed(&order_rng, cfg->seed, EB_STREAM_ORDER + (uint64_t)c);
        for (size_t i = 0; i < N; i++)
            order[i] = (uint32_t)i;
        u.stream = EB_STREAM_SAMPLER + (uint64_t)c;
        for (long step = 0; step < steps && !st; step++) {
            const long b = step % per_epoch;
            const size_t first = (size_t)b * (size_t)B;
            const int nb = (int)(N - first < (size_t)B ? N - first : (size_t)B);
            int noise_on = cfg->noise, slot = -1;
            double lr = cfg->lr;
            if (b == 0)
                eb_rng_shuffle_u32(&order_rng, order, N);
            if (cfg->cycles > 0) {
                const long r = step % L;
                lr = 0.5 * cfg->lr * (cos(M_PI * (double)r / (double)L) + 1.0);
                noise_on = noise_on && r >= L - sampling;
                slot = cyclic_slot(r, L, sampling, cfg->per_cycle);
                if (slot >= 0)
                    slot += (int)(step / L) * cfg->per_cycle;
            } else if (step + 1 > cfg->burnin && (step + 1 - cfg->burnin) % cfg->thin == 0) {
                slot = (int)((step + 1 - cfg->burnin) / cfg->thin) - 1;
            }
            u.lr = (float)lr;
            u.noise_sd = noise_on ? (float)sqrt(2.0 * cfg->friction * lr * cfg->temperature /
                                                (double)N)
                                  : 0.0f;
            u.step = (uint64_t)step;
            nll_sum += t->step(t->ctx, theta, order + first, nb, (uint64_t)step, first,
                               sg_update_slice, &u);
            seen += (size_t)nb;
            if (b + 1 == per_epoch || step + 1 == steps) {
                const int epoch = (int)(step / per_epoch);
                const double nll = nll_sum / (double)seen;
                double sq = 0.0;
                for (size_t i = 0; i < K; i++)
                    sq += (double)theta[i] * theta[i];
                if (!isfinite(nll) || !isfinite(sq)) {
                    st = eb_error_set(err, EB_ERR_NUMERIC,
                                      "SG-MCMC chain %d diverged in epoch %d (mean NLL %g); "
                                      "lower the step size (setting lr)", c + 1, epoch + 1, nll);
                    break;
                }
                if (trace) {
                    trace->nll[(size_t)c * (size_t)epochs + (size_t)epoch] = nll;
                    trace->loss[(size_t)c * (size_t)epochs + (size_t)epoch] =
                        nll + sq / (2.0 * (double)N * cfg->prior_var);
                }
                if (hooks && hooks->progress) {
                    char phase[64];
                    eb_progress p;
                    snprintf(phase, sizeof phase, cfg->chains > 1 ? "%s chain %d/%d" : "%s",
                             hooks->phase ? hooks->phase : "sampling", c + 1, cfg->chains);
                    p.phase = phase;
                    p.epoch = epoch + 1;
                    p.epochs = epochs;
                    p.loss = nll;
                    p.fraction = ((double)c * (double)steps + (double)(step + 1)) /
                                 ((double)cfg->chains * (double)steps);
                    p.images_per_sec = (double)seen / (now_sec() - t0 + 1e-12);
                    p.epoch_done = 1;
                    hooks->progress(hooks->progress_ctx, &p);
                }
                nll_sum = 0.0;
                seen = 0;
                t0 = now_sec();
            }
            if (slot >= 0 && slot < cfg->samples) {
                float *dst = out + ((size_t)c * (size_t)cfg->samples + (size_t)slot) * K;
                memcpy(dst, theta, K * sizeof *theta);
                taken++;
                if (hooks && hooks->sample)
                    st = hooks->sample(hooks->ctx, c, slot, dst, err);
            }
        }
        if (!st && taken != cfg->samples)
            st = eb_error_set(err, EB_ERR_INTERNAL, "SG-MCMC chain %d took %d samples, not %d",
                              c + 1, taken, cfg->samples);
    }
done:
    if (st && trace)
        eb_sampler_trace_free(trace);
    eb_free_aligned(theta);
    eb_free_aligned(v);
    eb_free_aligned(noise);
    eb_free(order);
    return st;
}

/* ---- the network methods ---------------------------------------------- */

/* The temperature's default differs by schedule (docs/methods.md has the
 * measurements): constant-step SG-MCMC needs a cold posterior to match
 * MAP's accuracy on Fashion-MNIST's mlp, the cyclical schedule reaches it
 * at T = 1 because its noise-free exploration stage does the mode finding. */
#define EB_SG_TEMPERATURE(def)                                                                 \
    {"temperature", EB_SET_FLOAT, def, 1e-6, 100, NULL,                                       \
     "posterior temperature T: the target is exp(-U / T) (1 = Bayes; below 1 = cold)"}

#define EB_SG_COMMON_SETTINGS                                                                  \
    {"samples", EB_SET_INT, "30", 1, 10000, NULL,                                              \
     "samples S kept in total (chains x samples per chain)"},                                   \
    {"chains", EB_SET_INT, "1", 1, 100, NULL, "independent chains (S must be a multiple)"},    \
    {"batch", EB_SET_INT, "128", 1, 65536, NULL, "mini-batch size"},                           \
    {"prior_var", EB_SET_FLOAT, "0.05", 1e-6, 1e6, NULL,                                      \
     "variance of the Gaussian prior N(0, prior_var) on each parameter"},                     \
    {"probe", EB_SET_INT, "1000", 0, 60000, NULL,                                             \
     "training images whose predictions feed the R-hat/ESS diagnostics"},                     \
    {"subset", EB_SET_INT, "0", 0, 100000000, NULL,                                           \
     "train on the first N training images only (0 = all)"}

static const eb_setting_spec sgld_settings[] = {
    EB_SG_COMMON_SETTINGS,
    EB_SG_TEMPERATURE("0.03"),
    {"lr", EB_SET_FLOAT, "0.1", 1e-9, 10, NULL, "step size (mean-NLL scale; lr / N on U)"},
    {"burnin", EB_SET_INT, "20", 0, 100000, NULL, "epochs before the first sample"},
    {"thin", EB_SET_INT, "1", 1, 10000, NULL, "epochs between samples"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const eb_setting_spec sghmc_settings[] = {
    EB_SG_COMMON_SETTINGS,
    EB_SG_TEMPERATURE("0.03"),
    {"lr", EB_SET_FLOAT, "0.01", 1e-9, 10, NULL, "step size (mean-NLL scale; lr / N on U)"},
    {"friction", EB_SET_FLOAT, "0.1", 1e-4, 1, NULL,
     "friction alpha: momentum decays by 1 - alpha per step"},
    {"burnin", EB_SET_INT, "20", 0, 100000, NULL, "epochs before the first sample"},
    {"thin", EB_SET_INT, "1", 1, 10000, NULL, "epochs between samples"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const eb_setting_spec csgld_settings[] = {
    EB_SG_COMMON_SETTINGS,
    EB_SG_TEMPERATURE("1"),
    {"lr", EB_SET_FLOAT, "0.3", 1e-9, 10, NULL, "peak step size of each cycle"},
    {"epochs", EB_SET_INT, "100", 1, 100000, NULL, "epochs per chain (all cycles)"},
    {"cycles", EB_SET_INT, "10", 1, 10000, NULL, "cosine step-size cycles per chain"},
    {"explore", EB_SET_FLOAT, "0.5", 0, 0.99, NULL,
     "noise-free exploration share of each cycle; samples come from the rest"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const eb_setting_spec csghmc_settings[] = {
    EB_SG_COMMON_SETTINGS,
    EB_SG_TEMPERATURE("1"),
    {"lr", EB_SET_FLOAT, "0.08", 1e-9, 10, NULL, "peak step size of each cycle"},
    {"friction", EB_SET_FLOAT, "0.1", 1e-4, 1, NULL,
     "friction alpha: momentum decays by 1 - alpha per step"},
    {"epochs", EB_SET_INT, "100", 1, 100000, NULL, "epochs per chain (all cycles)"},
    {"cycles", EB_SET_INT, "10", 1, 10000, NULL, "cosine step-size cycles per chain"},
    {"explore", EB_SET_FLOAT, "0.5", 0, 0.99, NULL,
     "noise-free exploration share of each cycle; samples come from the rest"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

eb_status eb_sgmcmc_config_from_settings(eb_sgmcmc_config *cfg, const char *method,
                                         const eb_settings *s, size_t n, eb_error *err)
{
    const int cyclical = !strcmp(method, "csgld") || !strcmp(method, "csghmc");
    const int langevin = !strcmp(method, "sgld") || !strcmp(method, "csgld");
    const int S = (int)eb_settings_int(s, "samples"), chains = (int)eb_settings_int(s, "chains");
    long per_epoch;

    memset(cfg, 0, sizeof *cfg);
    if (!cyclical && !langevin && strcmp(method, "sghmc"))
        return eb_error_set(err, EB_ERR_ARG, "'%s' is not an SG-MCMC method (sgld, sghmc, "
                            "csgld, csghmc)", method);
    if (S % chains)
        return eb_error_set(err, EB_ERR_ARG, "setting 'samples' (%d) must be a multiple of "
                            "setting 'chains' (%d)", S, chains);
    cfg->lr = eb_settings_float(s, "lr");
    cfg->friction = langevin ? 1.0 : eb_settings_float(s, "friction");
    cfg->temperature = eb_settings_float(s, "temperature");
    cfg->prior_var = eb_settings_float(s, "prior_var");
    cfg->batch = (int)eb_settings_int(s, "batch");
    cfg->noise = 1;
    cfg->chains = chains;
    cfg->samples = S / chains;
    per_epoch = (long)((n + (size_t)cfg->batch - 1) / (size_t)cfg->batch);
    if (cyclical) {
        cfg->cycles = (int)eb_settings_int(s, "cycles");
        cfg->explore = eb_settings_float(s, "explore");
        cfg->steps = eb_settings_int(s, "epochs") * per_epoch;
        if (cfg->samples % cfg->cycles)
            return eb_error_set(err, EB_ERR_ARG, "setting 'samples' per chain (%d) must be a "
                                "multiple of setting 'cycles' (%d)", cfg->samples, cfg->cycles);
        cfg->per_cycle = cfg->samples / cfg->cycles;
    } else {
        cfg->burnin = eb_settings_int(s, "burnin") * per_epoch;
        cfg->thin = eb_settings_int(s, "thin") * per_epoch;
    }
    return EB_OK;
}

/* Chain c starts from its own He initialisation. */
static eb_status nn_init(void *ctx, int chain, float *theta, eb_error *err)
{
    const eb_train_request *req = ctx;
    eb_rng r;
    (void)err;
    eb_rng_seed(&r, req->seed, EB_STREAM_INIT + (uint64_t)chain);
    eb_arch_init_params(req->arch, theta, &r);
    return EB_OK;
}

/* Trains one of the SG-MCMC network methods (the name picks the schedule
 * and friction, eb_sgmcmc_config_from_settings). */
static eb_status sg_train(const eb_train_request *req, const char *name, eb_trained *out,
                          eb_error *err)
{
    const eb_settings *s = req->settings;
    const eb_dataset data = eb_sampler_subset(req->train, eb_settings_int(s, "subset"));
    const int S = (int)eb_settings_int(s, "samples"), chains = (int)eb_settings_int(s, "chains");
    eb_sgmcmc_config cfg;
    eb_sampler_hooks hooks;
    eb_sampler_trace trace;
    eb_target t;
    eb_status st;

    memset(&trace, 0, sizeof trace);
    st = eb_sgmcmc_config_from_settings(&cfg, name, s, data.n, err);
    if (st)
        return st;
    cfg.seed = req->seed;
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
    hooks.phase = name;
    st = eb_sgmcmc_run(&t, &cfg, &hooks, out->params, &trace, err);
    eb_target_free(&t);
    if (!st)
        st = eb_sampler_trace_to_meta(&trace, out, err);
    if (!st)
        st = eb_sampler_probe_to_meta(req->arch, out->params, chains, cfg.samples, &data,
                                      (size_t)eb_settings_int(s, "probe"), out, err);
    eb_sampler_trace_free(&trace);
    if (st) {
        eb_trained_free(out);
        return eb_error_prefix(err, "%s: ", name);
    }
    return EB_OK;
}

static eb_status sgld_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    return sg_train(req, "sgld", out, err);
}

static eb_status sghmc_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    return sg_train(req, "sghmc", out, err);
}

static eb_status csgld_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    return sg_train(req, "csgld", out, err);
}

static eb_status csghmc_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    return sg_train(req, "csghmc", out, err);
}

const eb_method eb_method_sgld = {
    "sgld", "stochastic gradient Langevin dynamics (Welling & Teh 2011): S samples of chains",
    sgld_settings, NULL, sgld_train};
const eb_method eb_method_sghmc = {
    "sghmc", "stochastic gradient HMC with friction (Chen, Fox & Guestrin 2014)",
    sghmc_settings, NULL, sghmc_train};
const eb_method eb_method_csgld = {
    "csgld", "cyclical SGLD: cosine step-size cycles, explore then sample (Zhang et al. 2020)",
    csgld_settings, NULL, csgld_train};
const eb_method eb_method_csghmc = {
    "csghmc", "cyclical SGHMC: cosine step-size cycles, explore then sample (Zhang et al. 2020)",
    csghmc_settings, NULL, csghmc_train};
