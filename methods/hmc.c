/* hmc.c: full-batch Hamiltonian Monte Carlo over any eb_target, with the
 * step size adapted during warm-up by dual averaging and a Metropolis
 * correction, and the network method `hmc`: the reference posterior for
 * small models on data subsets, which the suite scores other methods'
 * fidelity against. docs/methods.md gives the algorithm and defaults. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "methods/eb_samplers.h"

/* Dual averaging constants of Hoffman & Gelman (2014), section 3.2.1. */
#define DA_GAMMA 0.05
#define DA_T0 10.0
#define DA_KAPPA 0.75

typedef struct hmc_state {
    const eb_target *t;
    const eb_hmc_config *cfg;
    size_t K;
    uint32_t *all;  /* (N) 0..N-1 */
    float *g;       /* (K) gradient of U / T at theta */
    double nll;     /* mean NLL at the last evaluation */
    long evals;     /* gradient evaluations (pass keys) */
    int first_chunk;
    float chunk_weight;
} hmc_state;

/* Chunk gradients (means over count examples) summed with weight count:
 * g = sum over the data of the NLL gradient. */
static void accumulate(void *uctx, float *theta, float *grad, size_t lo, size_t hi)
{
    hmc_state *h = uctx;
    (void)theta;
    if (h->first_chunk)
        for (size_t i = lo; i < hi; i++)
            h->g[i] = h->chunk_weight * grad[i];
    else
        for (size_t i = lo; i < hi; i++)
            h->g[i] += h->chunk_weight * grad[i];
}

/* U(theta) / T over the full data, its gradient into h->g. */
static double potential(hmc_state *h, float *theta)
{
    const eb_target *t = h->t;
    const double T = h->cfg->temperature, pv = h->cfg->prior_var;
    double nll = 0.0, sq = 0.0;
    for (size_t first = 0; first < t->n; first += (size_t)t->max_batch) {
        const int count = (int)(t->n - first < (size_t)t->max_batch ? t->n - first
                                                                      : (size_t)t->max_batch);
        h->first_chunk = first == 0;
        h->chunk_weight = (float)count;
        nll += t->step(t->ctx, theta, h->all + first, count, (uint64_t)h->evals, first,
                       accumulate, h);
    }
    h->evals++;
    for (size_t i = 0; i < h->K; i++) {
        sq += (double)theta[i] * theta[i];
        h->g[i] = (float)((h->g[i] + theta[i] / pv) / T);
    }
    h->nll = nll / (double)t->n;
    return (nll + sq / (2.0 * pv)) / T;
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double kinetic(const float *p, size_t K)
{
    double s = 0.0;
    for (size_t i = 0; i < K; i++)
        s += (double)p[i] * p[i];
    return 0.5 * s;
}

/* One trajectory of L leapfrog steps of size eps from (theta, p), with
 * U0 and h->g at theta on entry; on return theta, p, h->g and the result
 * belong to the end point. */
static double leapfrog(hmc_state *h, float *theta, float *p, double eps, int L)
{
    const size_t K = h->K;
    const float e = (float)eps, half = (float)(0.5 * eps);
    double U = 0.0;
    for (size_t i = 0; i < K; i++)
        p[i] -= half * h->g[i];
    for (int l = 1; l <= L; l++) {
        for (size_t i = 0; i < K; i++)
            theta[i] += e * p[i];
        U = potential(h, theta);
        if (l < L)
            for (size_t i = 0; i < K; i++)
                p[i] -= e * h->g[i];
    }
    for (size_t i = 0; i < K; i++)
        p[i] -= half * h->g[i];
    return U;
}

static int steps_for(const eb_hmc_config *cfg, double eps)
{
    double L = floor(cfg->path_len / eps + 0.5);
    if (!(L >= 1.0))
        return 1;
    return L > cfg->max_leapfrog ? cfg->max_leapfrog : (int)L;
}

static double accept_prob(double H0, double H1)
{
    if (!isfinite(H1))
        return 0.0;
    return H1 <= H0 ? 1.0 : exp(H0 - H1);
}

eb_status eb_hmc_run(const eb_target *t, const eb_hmc_config *cfg, const eb_sampler_hooks *hooks,
                     float *out, eb_sampler_trace *trace, eb_error *err)
{
    const size_t K = t->dim, N = t->n;
    const int iters = cfg->warmup + cfg->samples * cfg->thin;
    hmc_state h;
    float *theta = NULL, *theta0 = NULL, *p = NULL, *g0 = NULL;
    eb_status st = EB_OK;

    if (!(cfg->path_len > 0.0) || cfg->max_leapfrog < 1 || cfg->warmup < 0 || cfg->samples < 1 ||
        cfg->thin < 1 || cfg->chains < 1 || !(cfg->target_accept > 0.0 && cfg->target_accept < 1.0) ||
        !(cfg->temperature > 0.0) || !(cfg->prior_var > 0.0) || !(cfg->step_size >= 0.0))
        return eb_error_set(err, EB_ERR_ARG,
                            "HMC needs path_len > 0 (%g), max_leapfrog >= 1 (%d), warmup >= 0 "
                            "(%d), samples >= 1 (%d), thin >= 1 (%d), chains >= 1 (%d), "
                            "target_accept in (0, 1) (%g), temperature > 0 (%g), prior_var > 0 "
                            "(%g) and step_size >= 0 (%g)", cfg->path_len, cfg->max_leapfrog,
                            cfg->warmup, cfg->samples, cfg->thin, cfg->chains,
                            cfg->target_accept, cfg->temperature, cfg->prior_var, cfg->step_size);
    if (N == 0 || t->max_batch < 1)
        return eb_error_set(err, EB_ERR_ARG, "HMC: the target has no data");
    memset(&h, 0, sizeof h);
    h.t = t;
    h.cfg = cfg;
    h.K = K;
    if (trace) {
        const size_t n = (size_t)cfg->chains * (size_t)iters;
        memset(trace, 0, sizeof *trace);
        trace->chains = cfg->chains;
        trace->points = iters;
        trace->loss = eb_calloc(n, sizeof(double));
        trace->nll = eb_calloc(n, sizeof(double));
        trace->accept_rate = eb_calloc((size_t)cfg->chains, sizeof(double));
        trace->step_size = eb_calloc((size_t)cfg->chains, sizeof(double));
        trace->leapfrog = eb_calloc((size_t)cfg->chains, sizeof(int));
        if (!trace->loss || !trace->nll || !trace->accept_rate || !trace->step_size ||
            !trace->leapfrog) {
            eb_sampler_trace_free(trace);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for HMC traces");
        }
    }
    h.all = eb_malloc(N * sizeof *h.all);
    h.g = eb_malloc_aligned(64, K * sizeof *h.g);
    theta = eb_malloc_aligned(64, K * sizeof *theta);
    theta0 = eb_malloc_aligned(64, K * sizeof *theta0);
    p = eb_malloc_aligned(64, K * sizeof *p);
    g0 = eb_malloc_aligned(64, K * sizeof *g0);
    if (!h.all || !h.g || !theta || !theta0 || !p || !g0) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for HMC state (%zu parameters)", K);
        goto done;
    }
    for (size_t i = 0; i < N; i++)
        h.all[i] = (uint32_t)i;

    for (int c = 0; c < cfg->chains && !st; c++) {
        const uint64_t mstream = EB_STREAM_SAMPLER + (uint64_t)c;
        eb_rng urng;
        double U, eps = cfg->step_size, mu, hbar = 0.0, log_eps_bar = 0.0;
        long accepted = 0, proposals = 0, draw = 0, evals0 = h.evals;
        int L, taken = 0;
        const double t0 = now_sec();

        eb_rng_seed(&urng, cfg->seed, EB_STREAM_SAMPLER + 0x800 + (uint64_t)c);
        if (hooks && hooks->init)
            st = hooks->init(hooks->ctx, c, theta, err);
        else
            memset(theta, 0, K * sizeof *theta);
        if (st)
            break;
        U = potential(&h, theta);
        if (!isfinite(U)) {
            st = eb_error_set(err, EB_ERR_NUMERIC, "HMC chain %d: the potential at the initial "
                              "point is %g", c + 1, U);
            break;
        }
        if (eps <= 0.0) {
            /* Hoffman & Gelman's algorithm 4: double or halve eps until
             * one leapfrog step's acceptance probability crosses 1/2 */
            double a_sign, ap;
            memcpy(theta0, theta, K * sizeof *theta);
            memcpy(g0, h.g, K * sizeof *g0);
            eps = 1.0;
            eb_noise_keyed(p, 0, K, cfg->seed, mstream, (uint64_t)draw++);
            {
                const double H0 = U + kinetic(p, K);
                ap = accept_prob(H0, leapfrog(&h, theta, p, eps, 1) + kinetic(p, K));
                a_sign = ap > 0.5 ? 1.0 : -1.0;
                for (int tries = 0; tries < 60; tries++) {
                    if (!(a_sign > 0 ? ap > 0.5 : ap < 0.5))
                        break;
                    eps *= a_sign > 0 ? 2.0 : 0.5;
                    memcpy(theta, theta0, K * sizeof *theta);
                    memcpy(h.g, g0, K * sizeof *g0);
                    eb_noise_keyed(p, 0, K, cfg->seed, mstream, (uint64_t)draw - 1);
                    ap = accept_prob(H0, leapfrog(&h, theta, p, eps, 1) + kinetic(p, K));
                }
            }
            memcpy(theta, theta0, K * sizeof *theta);
            memcpy(h.g, g0, K * sizeof *g0);
        }
        mu = log(10.0 * eps);
        L = steps_for(cfg, eps);
        for (int it = 0; it < iters && !st; it++) {
            double H0, U1, a;
            memcpy(theta0, theta, K * sizeof *theta);
            memcpy(g0, h.g, K * sizeof *g0);
            eb_noise_keyed(p, 0, K, cfg->seed, mstream, (uint64_t)draw++);
            H0 = U + kinetic(p, K);
            U1 = leapfrog(&h, theta, p, eps, L);
            a = accept_prob(H0, U1 + kinetic(p, K));
            if (eb_rng_uniform(&urng) < a) {
                U = U1;
                if (it >= cfg->warmup)
                    accepted++;
            } else {
                memcpy(theta, theta0, K * sizeof *theta);
                memcpy(h.g, g0, K * sizeof *g0);
            }
            if (it >= cfg->warmup)
                proposals++;
            if (it < cfg->warmup) {
                const double m = (double)(it + 1), eta = pow(m, -DA_KAPPA);
                hbar = (1.0 - 1.0 / (m + DA_T0)) * hbar + (cfg->target_accept - a) / (m + DA_T0);
                eps = exp(mu - sqrt(m) / DA_GAMMA * hbar);
                log_eps_bar = eta * log(eps) + (1.0 - eta) * log_eps_bar;
                if (it + 1 == cfg->warmup)
                    eps = exp(log_eps_bar);
                L = steps_for(cfg, eps);
            }
            if (trace) {
                /* U / N without the temperature: the loss scale of the
                 * other methods' traces; nll at the kept point */
                double sq = 0.0;
                for (size_t i = 0; i < K; i++)
                    sq += (double)theta[i] * theta[i];
                trace->loss[(size_t)c * (size_t)iters + (size_t)it] =
                    U * cfg->temperature / (double)N;
                trace->nll[(size_t)c * (size_t)iters + (size_t)it] =
                    U * cfg->temperature / (double)N - sq / (2.0 * cfg->prior_var * (double)N);
            }
            if (!isfinite(U)) {
                st = eb_error_set(err, EB_ERR_NUMERIC, "HMC chain %d: the potential became %g "
                                  "at iteration %d", c + 1, U, it + 1);
                break;
            }
            if (it >= cfg->warmup && (it + 1 - cfg->warmup) % cfg->thin == 0) {
                const int slot = (it + 1 - cfg->warmup) / cfg->thin - 1;
                float *dst = out + ((size_t)c * (size_t)cfg->samples + (size_t)slot) * K;
                memcpy(dst, theta, K * sizeof *theta);
                taken++;
                if (hooks && hooks->sample)
                    st = hooks->sample(hooks->ctx, c, slot, dst, err);
            }
            if (hooks && hooks->progress && ((it + 1) % 10 == 0 || it + 1 == iters)) {
                char phase[96];
                eb_progress pr;
                snprintf(phase, sizeof phase, "%s%s chain %d/%d (eps %.3g, L %d)",
                         hooks->phase ? hooks->phase : "hmc",
                         it < cfg->warmup ? " warm-up" : "", c + 1, cfg->chains, eps, L);
                pr.phase = phase;
                pr.epoch = it + 1;
                pr.epochs = iters;
                pr.loss = h.nll;
                pr.fraction = ((double)c * iters + it + 1) / ((double)cfg->chains * iters);
                /* examples through the network (forward and backward) */
                pr.images_per_sec =
                    (double)(h.evals - evals0) * (double)N / (now_sec() - t0 + 1e-12);
                pr.epoch_done = (it + 1) % 100 == 0 || it + 1 == iters;
                hooks->progress(hooks->progress_ctx, &pr);
            }
        }
        if (!st && taken != cfg->samples)
            st = eb_error_set(err, EB_ERR_INTERNAL, "HMC chain %d took %d samples, not %d", c + 1,
                              taken, cfg->samples);
        if (trace && !st) {
            trace->accept_rate[c] = proposals ? (double)accepted / (double)proposals : 0.0;
            trace->step_size[c] = eps;
            trace->leapfrog[c] = L;
        }
    }
done:
    if (st && trace)
        eb_sampler_trace_free(trace);
    eb_free(h.all);
    eb_free_aligned(h.g);
    eb_free_aligned(theta);
    eb_free_aligned(theta0);
    eb_free_aligned(p);
    eb_free_aligned(g0);
    return st;
}

/* ---- the network method ------------------------------------------------ */

static const eb_setting_spec hmc_settings[] = {
    {"samples", EB_SET_INT, "200", 1, 100000, NULL, "samples S kept in total (all chains)"},
    {"chains", EB_SET_INT, "2", 1, 100, NULL, "independent chains (S must be a multiple)"},
    {"warmup", EB_SET_INT, "300", 0, 1000000, NULL,
     "iterations per chain adapting the step size (discarded)"},
    {"thin", EB_SET_INT, "3", 1, 100000, NULL, "iterations per kept sample"},
    {"path_len", EB_SET_FLOAT, "0.25", 1e-9, 1e6, NULL,
     "trajectory length eps x L (L = path_len / eps, at most max_leapfrog)"},
    {"max_leapfrog", EB_SET_INT, "100", 1, 100000, NULL, "cap on leapfrog steps per trajectory"},
    {"step_size", EB_SET_FLOAT, "0", 0, 100, NULL,
     "initial step size; 0 = Hoffman & Gelman's heuristic"},
    {"target_accept", EB_SET_FLOAT, "0.8", 0.05, 0.99, NULL,
     "acceptance rate dual averaging aims at during warm-up"},
    {"temperature", EB_SET_FLOAT, "1", 1e-6, 100, NULL,
     "posterior temperature T: the target is exp(-U / T)"},
    {"prior_var", EB_SET_FLOAT, "0.05", 1e-6, 1e6, NULL,
     "variance of the Gaussian prior N(0, prior_var) on each parameter"},
    {"init_epochs", EB_SET_INT, "10", 0, 100000, NULL,
     "Adam epochs from each chain's initialisation before sampling (0 = start at it)"},
    {"batch", EB_SET_INT, "1000", 1, 65536, NULL,
     "examples per gradient chunk (the gradient is always over the full subset)"},
    {"probe", EB_SET_INT, "1000", 0, 60000, NULL,
     "training images whose predictions feed the R-hat/ESS diagnostics"},
    {"subset", EB_SET_INT, "1000", 0, 100000000, NULL,
     "train on the first N training images only (0 = all)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

typedef struct hmc_method_ctx {
    const eb_train_request *req;
    const eb_dataset *data;
    int init_epochs;
} hmc_method_ctx;

/* Chain c starts from its own He initialisation, optionally moved towards
 * a mode by a few Adam epochs (eb_sgd_train with member c). */
static eb_status hmc_init(void *ctx, int chain, float *theta, eb_error *err)
{
    const hmc_method_ctx *m = ctx;
    eb_sgd_config sgd;
    eb_rng r;
    if (m->init_epochs <= 0) {
        eb_rng_seed(&r, m->req->seed, EB_STREAM_INIT + (uint64_t)chain);
        eb_arch_init_params(m->req->arch, theta, &r);
        return EB_OK;
    }
    memset(&sgd, 0, sizeof sgd);
    eb_optim_config_default(&sgd.optim, EB_OPTIM_ADAM);
    sgd.optim.lr = 0.001f;
    sgd.schedule = EB_SCHEDULE_CONSTANT;
    sgd.epochs = m->init_epochs;
    sgd.batch = 128;
    sgd.threads = m->req->threads;
    return eb_sgd_train(m->req->arch, m->data, &sgd, m->req->seed, (uint32_t)chain, theta,
                        "hmc initialisation", NULL, NULL, NULL, err);
}

static eb_status hmc_train(const eb_train_request *req, eb_trained *out, eb_error *err)
{
    const eb_settings *s = req->settings;
    const eb_dataset data = eb_sampler_subset(req->train, eb_settings_int(s, "subset"));
    const int S = (int)eb_settings_int(s, "samples"), chains = (int)eb_settings_int(s, "chains");
    eb_hmc_config cfg;
    eb_sampler_hooks hooks;
    eb_sampler_trace trace;
    hmc_method_ctx mctx;
    eb_target t;
    eb_status st;

    memset(&cfg, 0, sizeof cfg);
    memset(&trace, 0, sizeof trace);
    if (S % chains)
        return eb_error_set(err, EB_ERR_ARG, "setting 'samples' (%d) must be a multiple of "
                            "setting 'chains' (%d)", S, chains);
    cfg.step_size = eb_settings_float(s, "step_size");
    cfg.path_len = eb_settings_float(s, "path_len");
    cfg.max_leapfrog = (int)eb_settings_int(s, "max_leapfrog");
    cfg.warmup = (int)eb_settings_int(s, "warmup");
    cfg.samples = S / chains;
    cfg.thin = (int)eb_settings_int(s, "thin");
    cfg.target_accept = eb_settings_float(s, "target_accept");
    cfg.temperature = eb_settings_float(s, "temperature");
    cfg.prior_var = eb_settings_float(s, "prior_var");
    cfg.chains = chains;
    cfg.seed = req->seed;
    st = eb_target_nn(&t, req->arch, &data, (int)eb_settings_int(s, "batch"), req->threads, err);
    if (st)
        return st;
    st = eb_trained_alloc(out, req->arch, EB_REPR_SAMPLES, (uint32_t)S, (uint32_t)S, err);
    if (st) {
        eb_target_free(&t);
        return st;
    }
    mctx.req = req;
    mctx.data = &data;
    mctx.init_epochs = (int)eb_settings_int(s, "init_epochs");
    memset(&hooks, 0, sizeof hooks);
    hooks.init = hmc_init;
    hooks.ctx = &mctx;
    hooks.progress = req->progress;
    hooks.progress_ctx = req->progress_ctx;
    hooks.phase = "hmc";
    st = eb_hmc_run(&t, &cfg, &hooks, out->params, &trace, err);
    eb_target_free(&t);
    if (!st)
        st = eb_sampler_trace_to_meta(&trace, out, err);
    if (!st)
        st = eb_sampler_probe_to_meta(req->arch, out->params, chains, cfg.samples, &data,
                                      (size_t)eb_settings_int(s, "probe"), out, err);
    eb_sampler_trace_free(&trace);
    if (st) {
        eb_trained_free(out);
        return eb_error_prefix(err, "hmc: ");
    }
    return EB_OK;
}

const eb_method eb_method_hmc = {
    "hmc", "full-batch HMC with dual-averaging step size: the reference posterior for small "
           "models and data subsets",
    hmc_settings, NULL, hmc_train};
