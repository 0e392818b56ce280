/* eb_samplers.h: the generic machinery behind the Bayesian methods
 * (docs/methods.md describes each algorithm and its settings):
 *
 *   - fast Gaussian noise (a ziggurat over eb_rng) and noise keyed by
 *     (seed, stream, step, block), so a draw does not depend on how the
 *     vector is split across threads;
 *   - the data-parallel gradient engine: worker threads each take a
 *     contiguous shard of a mini-batch, their gradients are summed in shard
 *     order, and a caller's update runs over disjoint slices of the
 *     parameters in parallel (eb_sgd_train, the samplers and VI share it);
 *   - targets: the negative log-likelihood of N examples as a mini-batch
 *     gradient oracle, for a network (eb_target_nn) or anything else (the
 *     tests' Bayesian linear regression);
 *   - SG-MCMC (SGLD, SGHMC, their cyclical variants, and noise-free cyclic
 *     SGD for snapshot ensembles), HMC with dual averaging, mean-field VI,
 *     each a loop over a target;
 *   - diagnostics: split R-hat, effective sample size, posterior fidelity
 *     and member disagreement (pure numerics).
 *
 * The Bayesian target is p(theta | D) ∝ exp(-U(theta) / T) with
 *   U(theta) = N * mean NLL(theta; D) + ||theta||^2 / (2 prior_var),
 * N the number of training examples and T the posterior temperature. On a
 * mini-batch the NLL term is estimated by N times the batch mean. Step
 * sizes `lr` are on the mean-NLL scale (the scale of a plain SGD learning
 * rate): the step on U is lr / N. */
#ifndef EB_SAMPLERS_H
#define EB_SAMPLERS_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "harness/eb_data.h"
#include "methods/eb_methods.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/eb_rng.h"

/* ---- Gaussian noise --------------------------------------------------- */

/* n standard normals into out, by the ziggurat method of Marsaglia & Tsang
 * (2000) with 128 layers, taking the layer index and the value from
 * different bits of one 64-bit draw (Doornik 2005's fix). About 5x faster
 * than eb_rng_normal's Box-Muller; exact, not an approximation. */
void eb_normal_fill(float *out /* (n) */, size_t n, eb_rng *r);

/* Coordinates per noise block: keyed noise is generated block by block,
 * and the gradient engine aligns its update slices to blocks. */
#define EB_NOISE_BLOCK 1024u

/* The normals of coordinates [lo, hi) of the vector keyed by (seed,
 * stream, step): block b (coordinates [b * EB_NOISE_BLOCK, ...)) comes
 * from its own generator seeded from (seed, stream, step, b), so any
 * split of [0, K) into slices yields the same vector (slices starting
 * at multiples of EB_NOISE_BLOCK are the cheap case). out holds hi - lo
 * values. */
void eb_noise_keyed(float *out /* (hi - lo) */, size_t lo, size_t hi, uint64_t seed,
                    uint64_t stream, uint64_t step);

/* ---- The data-parallel gradient engine ------------------------------ */

/* What a worker computes over its shard of a mini-batch. */
typedef struct eb_shard_ops {
    /* A workspace for shards of up to max_count examples (freed with
     * worker_free). */
    eb_status (*worker_new)(void *ctx, int max_count, void **ws, eb_error *err);
    void (*worker_free)(void *ws);
    /* The summed loss of the count examples x (count, in), y (count) at
     * theta; writes its gradient times `scale` into grad (dim, all
     * overwritten). pass and first_example key any per-example randomness
     * (dropout masks, local-reparameterisation noise): example j of the
     * shard is example first_example + j of the step. */
    double (*shard)(void *ctx, void *ws, const float *theta, const float *x, const uint8_t *y,
                    int count, float scale, uint64_t pass, uint64_t first_example, float *grad);
} eb_shard_ops;

/* Applied after each step's gradient: grad (dim) holds the summed shard
 * gradients on [lo, hi); the function may modify theta and grad there
 * only. Slices of one step are disjoint, cover [0, dim) and may run in
 * parallel; the engine's start at multiples of EB_NOISE_BLOCK, other
 * targets may cut them elsewhere, so an update must not depend on where
 * the cuts fall (keyed noise does not). */
typedef void (*eb_update_fn)(void *uctx, float *theta, float *grad, size_t lo, size_t hi);

typedef struct eb_grad_engine eb_grad_engine;

/* An engine over `data` for mini-batches of up to max_batch examples with
 * `threads` workers (the calling thread is worker 0; more than one worker
 * sets OpenBLAS to one thread until eb_grad_engine_free restores it).
 * Each shard is a contiguous run of the batch; gradients are summed in
 * shard order, so a given thread count is deterministic. ops and ctx are
 * borrowed. The caller frees the engine with eb_grad_engine_free. */
eb_status eb_grad_engine_new(const eb_shard_ops *ops, void *ctx, const eb_dataset *data,
                             size_t dim, int max_batch, int threads, eb_grad_engine **out,
                             eb_error *err);
/* One step over the examples idx[0..count) of the data (count <=
 * max_batch; a larger count is cut to max_batch): shard gradients scaled
 * by 1/count (so they sum to the batch mean), summed, then update over
 * slices. Returns the batch's summed loss. first_example is the global
 * key of idx[0] for pass-keyed noise. */
double eb_grad_engine_step(eb_grad_engine *e, float *theta, const uint32_t *idx, int count,
                           uint64_t pass, uint64_t first_example, eb_update_fn update,
                           void *uctx);
int eb_grad_engine_threads(const eb_grad_engine *e);
void eb_grad_engine_free(eb_grad_engine *e);

/* The plain network loss (softmax cross-entropy, dropout masks drawn from
 * drop_seed when `dropout`), as shard ops for an engine; the context is an
 * eb_nn_shard_ctx the caller keeps alive. */
typedef struct eb_nn_shard_ctx {
    const eb_arch *arch;
    int dropout;
    uint64_t drop_seed;
} eb_nn_shard_ctx;
extern const eb_shard_ops eb_nn_shard_ops;

/* ---- Targets -------------------------------------------------------- */

/* The negative log-likelihood of n examples as a mini-batch gradient
 * oracle over a parameter vector of `dim` floats. */
typedef struct eb_target {
    size_t dim;    /* K */
    size_t n;      /* N, examples in the data */
    int max_batch; /* most examples one step accepts */
    void *ctx;
    /* Computes the gradient of the mean NLL over the examples
     * idx[0..count) at theta, hands it to update (over slices, as the
     * engine does; once over [0, dim) for a sequential target) and returns
     * the batch's summed NLL. */
    double (*step)(void *ctx, float *theta, const uint32_t *idx, int count, uint64_t pass,
                   uint64_t first_example, eb_update_fn update, void *uctx);
    void (*destroy)(void *ctx); /* may be NULL */
} eb_target;

/* A network's softmax cross-entropy on data, through a gradient engine
 * with `threads` workers. The caller frees it with eb_target_free. */
eb_status eb_target_nn(eb_target *t, const eb_arch *arch, const eb_dataset *data, int max_batch,
                       int threads, eb_error *err);
void eb_target_free(eb_target *t);

/* ---- SG-MCMC ------------------------------------------------------- */

/* One sampler covers the family: with momentum buffer v,
 *   v <- (1 - friction) v - lr_t (mean batch grad + theta / (N prior_var))
 *        + sqrt(2 friction lr_t T / N) xi        (xi ~ N(0, I); noise on)
 *   theta <- theta + v
 * friction = 1 is SGLD (Welling & Teh 2011): v holds no memory and the
 * step is theta - lr grad + sqrt(2 lr T / N) xi. friction < 1 is SGHMC
 * (Chen, Fox & Guestrin 2014, eq. 15 with step lr / N and no noise
 * estimate). Schedules:
 *   cycles = 0: constant lr; samples every `thin` steps after `burnin`;
 *   cycles >= 1: cyclical SG-MCMC (Zhang et al. 2020): the run is
 *     `cycles` cycles of L = floor(steps / cycles) steps; at position r of a
 *     cycle lr_t = lr / 2 (cos(pi r / L) + 1); the first `explore`
 *     fraction of each cycle runs without noise (exploration), the rest
 *     with noise (sampling), and the cycle's samples are taken at its last
 *     steps, `per_cycle` of them, evenly spaced over the sampling stage.
 * noise = 0 turns the sampler into (cyclic) SGD with momentum: snapshot
 * ensembles (Huang et al. 2017) are cycles >= 1, noise 0, per_cycle 1. */
typedef struct eb_sgmcmc_config {
    double lr;          /* peak step size on the mean-NLL scale */
    double friction;    /* in (0, 1]; 1 = SGLD */
    double temperature; /* T > 0 */
    double prior_var;   /* sigma_p^2 > 0 */
    int batch;          /* mini-batch size */
    int noise;          /* add the Langevin noise (0: snapshot SGD) */
    long steps;         /* steps per chain */
    int cycles;         /* 0: constant schedule; >= 1: cyclical */
    double explore;     /* cyclical: noise-free fraction of each cycle, [0, 1) */
    int per_cycle;      /* cyclical: samples per cycle */
    long burnin;        /* constant: steps before the first sample */
    long thin;          /* constant: steps between samples (>= 1) */
    int chains;         /* independent chains, run one after another */
    int samples;        /* per chain */
    uint64_t seed;
    /* Sparse-structure sampling: mask (dim) holds 1 where a coordinate
     * moves and 0 where it is pinned at exactly 0 (its gradient, momentum
     * and noise are dropped; the keyed noise is still drawn for every
     * coordinate, so the kept coordinates see the same noise as without a
     * mask). Every sample then shares the mask's sparsity pattern. NULL:
     * dense. Borrowed. */
    const uint8_t *mask;
} eb_sgmcmc_config;

/* What a sampler run reports back besides its samples. Arrays are
 * allocated by the run and released with eb_sampler_trace_free. */
typedef struct eb_sampler_trace {
    int chains;
    int points;    /* entries per chain in loss and nll */
    double *loss;  /* (chains, points): SG-MCMC and VI: per epoch, the mean of
                      batch NLL + regulariser / N; HMC: per iteration, U / N */
    double *nll;   /* (chains, points): the mean NLL part alone */
    /* HMC only (NULL otherwise), per chain: */
    double *accept_rate; /* share of post-warm-up proposals accepted */
    double *step_size;   /* the step size dual averaging settled on */
    int *leapfrog;       /* leapfrog steps per trajectory */
} eb_sampler_trace;
void eb_sampler_trace_free(eb_sampler_trace *tr);

/* Caller hooks of a run; any may be NULL. */
typedef struct eb_sampler_hooks {
    /* Initialises theta (dim) of chain c before its first step (NULL:
     * theta = 0). */
    eb_status (*init)(void *ctx, int chain, float *theta, eb_error *err);
    /* Sees every sample (chain c, index i within the chain) as it is
     * taken; a nonzero status stops the run with it. */
    eb_status (*sample)(void *ctx, int chain, int index, const float *theta, eb_error *err);
    void *ctx;
    eb_progress_fn progress;
    void *progress_ctx;
    const char *phase; /* progress label prefix, e.g. "sgld" */
} eb_sampler_hooks;

/* Runs cfg->chains chains on t and writes the samples chain-major into
 * out (chains * samples, dim). Chain c's data order comes from stream
 * EB_STREAM_ORDER + c, its noise from EB_STREAM_SAMPLER + c. An epoch is
 * ceil(N / batch) steps. trace may be NULL. EB_ERR_NUMERIC when theta
 * stops being finite (names the chain and step; lower lr). */
eb_status eb_sgmcmc_run(const eb_target *t, const eb_sgmcmc_config *cfg,
                        const eb_sampler_hooks *hooks, float *out, eb_sampler_trace *trace,
                        eb_error *err);

/* ---- HMC ------------------------------------------------------------ */

/* Full-batch Hamiltonian Monte Carlo (Neal 2011) with identity mass:
 * momentum p ~ N(0, I), leapfrog on H = U / T + |p|^2 / 2, Metropolis
 * acceptance. The step size is adapted during warm-up by dual averaging
 * (Hoffman & Gelman 2014, section 3.2, with their gamma = 0.05, t0 = 10,
 * kappa = 0.75) towards target_accept, then frozen; trajectories have
 * L = clamp(round(path_len / eps), 1, max_leapfrog) steps. */
typedef struct eb_hmc_config {
    double step_size;     /* initial eps; 0: Hoffman & Gelman's heuristic (their alg. 4) */
    double path_len;      /* trajectory length eps * L */
    int max_leapfrog;     /* cap on L */
    int warmup;           /* adapting iterations, discarded */
    int samples;          /* kept per chain */
    int thin;             /* iterations per kept sample (>= 1) */
    double target_accept; /* delta, in (0, 1) */
    double temperature;
    double prior_var;
    int chains;
    uint64_t seed;
} eb_hmc_config;

/* Runs cfg->chains chains on the full data of t (gradients over chunks of
 * t->max_batch examples) and writes the samples chain-major into out
 * (chains * samples, dim). The momenta of chain c come from stream
 * EB_STREAM_SAMPLER + c, its accept/reject uniforms from
 * EB_STREAM_SAMPLER + 0x800 + c. trace (may be NULL) gets U / N per
 * iteration and the per-chain acceptance rate, step size and L. */
eb_status eb_hmc_run(const eb_target *t, const eb_hmc_config *cfg, const eb_sampler_hooks *hooks,
                     float *out, eb_sampler_trace *trace, eb_error *err);

/* ---- Mean-field variational inference ------------------------------- */

/* q(theta) = prod_i N(mu_i, sigma_i^2), sigma = softplus(rho) (Bayes by
 * Backprop, Blundell et al. 2015). Per example the objective is
 *   E_q[mean NLL] + beta_t / N * R(mu, rho),
 *   R = sum_i [(mu_i^2 + sigma_i^2) / (2 prior_var) - T log sigma_i
 *              + T log sqrt(prior_var) - T / 2],
 * which is KL(q || N(0, prior_var I)) at T = 1 and, for any T, the KL
 * from q to the tempered target exp(-U / T) times T, up to a constant.
 * beta_t rises linearly from 1/kl_warmup to 1 over the first kl_warmup
 * epochs (KL warm-up; 0 = off). Adam on (mu, rho), cosine or constant
 * schedule.
 *
 * A VI target is an eb_target over the vector [mu | sigma] (dim = 2K)
 * whose step returns the gradient of the expected mean NLL with respect
 * to mu and sigma: eb_target_vi_nn (local reparameterisation for dense
 * layers) or eb_target_reparam (one weight sample per step, any plain
 * target). */
typedef struct eb_vi_config {
    double lr;            /* Adam's peak learning rate */
    int cosine;           /* cosine schedule (else constant) */
    int epochs;
    int batch;
    double prior_var;
    double temperature;
    int kl_warmup;        /* epochs; 0 = full weight from the start */
    uint64_t seed;        /* data order (EB_STREAM_ORDER) */
} eb_vi_config;

/* softplus(x) = log(1 + e^x), computed without overflow, and its inverse
 * (x > 0). */
double eb_softplus(double x);
double eb_softplus_inv(double y);

/* R(mu, rho) as defined above; writes dR/dmu and dR/drho (K each) when not
 * NULL. */
double eb_vi_regulariser(const float *mu, const float *rho, size_t K, double prior_var, double T,
                         float *dmu, float *drho);

/* Optimises (mu, rho) on t (t->dim = 2K): mu and rho (K each) hold the
 * initial values and receive the result. trace (may be NULL) gets one
 * point per epoch (loss = mean NLL + beta R / N). */
eb_status eb_vi_run(const eb_target *t, const eb_vi_config *cfg, float *mu, float *rho,
                    const eb_sampler_hooks *hooks, eb_sampler_trace *trace, eb_error *err);

/* The network's expected NLL under q with the local reparameterisation
 * trick (Kingma, Salimans & Welling 2015) for dense layers: each example's
 * pre-activation is drawn as N(a mu_W^T + mu_b, a^2 (sigma_W^2)^T +
 * sigma_b^2), the noise keyed by (noise_seed, pass, example, layer) so it
 * does not depend on the sharding; conv2d weights are drawn once per shard
 * (plain reparameterisation, keyed by the shard's first example). The
 * shard gradient is with respect to [mu | sigma] (2K). Dropout layers are
 * refused. */
typedef struct eb_vi_shard_ctx {
    const eb_arch *arch;
    uint64_t noise_seed;
} eb_vi_shard_ctx;
extern const eb_shard_ops eb_vi_lrt_shard_ops;

/* eb_vi_lrt_shard_ops over data through an engine (dim = 2K). */
eb_status eb_target_vi_nn(eb_target *t, const eb_arch *arch, const eb_dataset *data,
                          int max_batch, int threads, uint64_t noise_seed, eb_error *err);
/* A VI target over any plain target `inner` (borrowed; it must outlive
 * t): each step draws theta = mu + sigma * eps (eps keyed by (noise_seed,
 * pass)) and returns dL/dmu = g, dL/dsigma = g * eps. Sequential. */
eb_status eb_target_reparam(eb_target *t, const eb_target *inner, uint64_t noise_seed,
                            eb_error *err);

/* ---- Diagnostics (pure numerics) ---------------------------------- */

/* Split R-hat (Gelman et al., BDA3 section 11.4) of draws (chains, n):
 * each chain is cut into two halves of floor(n / 2) (the middle draw of
 * an odd n is dropped), then R-hat = sqrt(var+ / W) over the 2 * chains
 * halves. Needs n >= 4. A constant input (W = 0) gives 1 if all halves
 * agree and +inf otherwise. */
eb_status eb_diag_split_rhat(const double *draws, int chains, int n, double *rhat,
                             eb_error *err);
/* Effective sample size of draws (chains, n) over split chains, with
 * Geyer's initial monotone sequence estimator as in the Stan reference
 * manual ("Effective sample size", BDA3 eq. 11.8): ESS = M n' / tau,
 * tau = -1 + 2 sum_k P_k, P_k = rho_2k + rho_2k+1 summed while positive
 * and made non-increasing; rho_t = 1 - (W - mean autocovariance_t) /
 * var+. Capped at M n' log10(M n') as Stan does. Needs n >= 4. */
eb_status eb_diag_ess(const double *draws, int chains, int n, double *ess, eb_error *err);

/* Posterior fidelity of a predictive pbar (n, C) to a reference pref (n,
 * C): top-1 agreement (share of rows whose first-maximum classes match)
 * and mean total variation distance 1/2 sum_c |pbar - pref|. */
void eb_diag_fidelity(const float *pbar, const float *pref, size_t n, size_t C,
                      double *agreement, double *tv);
/* Mean pairwise disagreement of members probs (n, S, C): over all pairs
 * s < t and rows, the share where their first-maximum classes differ. 0
 * for S = 1. */
double eb_diag_disagreement(const float *probs, size_t n, size_t S, size_t C);

/* Convergence summary of a per-sample predictive quantity on a probe
 * set. */
typedef struct eb_chain_diag {
    int chains, draws;     /* layout the statistics were computed over */
    size_t probes;
    double rhat_max, rhat_mean; /* over probe inputs (non-finite excluded from the mean) */
    double ess_min, ess_mean;
} eb_chain_diag;

/* q (S, probes) chain-major (S = chains * draws): for every probe input,
 * split R-hat and ESS across the draws, summarised. */
eb_status eb_diag_predictive(const double *q, int chains, int draws, size_t probes,
                             eb_chain_diag *out, eb_error *err);

/* The same for a posterior's members on probe inputs x (n, in_size) with
 * labels y: the quantity is each member's probability of the true label.
 * The members are read as `chains` chains of S / chains consecutive
 * members (the layout SG-MCMC and HMC bundles record in hp.chains). */
eb_status eb_posterior_chain_diag(const eb_posterior *p, int chains, const float *x,
                                  const uint8_t *y, size_t n, eb_chain_diag *out, eb_error *err);

/* ---- Glue for the network methods (internal to methods/) ------------ */

/* The first `subset` examples of data (all when 0 or larger than n), as a
 * view. */
eb_dataset eb_sampler_subset(const eb_dataset *data, long subset);

/* Fills cfg from the settings of one of the SG-MCMC network methods
 * (sgld, sghmc, csgld, csghmc: `method` names it) for data of n examples:
 * samples, chains, batch, lr, temperature, prior_var, friction, and
 * burnin/thin (constant schedule) or epochs/cycles/explore (cyclical),
 * converted from epochs to steps. The seed and mask are left 0 / NULL. */
eb_status eb_sgmcmc_config_from_settings(eb_sgmcmc_config *cfg, const char *method,
                                         const eb_settings *s, size_t n, eb_error *err);

/* Records a trace in t's metadata: trace.chain<c>.loss and
 * trace.chain<c>.nll as comma-separated %.6g values (HMC also
 * hmc.chain<c>.accept_rate, .step_size, .leapfrog). */
eb_status eb_sampler_trace_to_meta(const eb_sampler_trace *tr, eb_trained *t, eb_error *err);

/* Predictive diagnostics of samples (chains * draws, K) on the first
 * `probes` examples of data, recorded as diag.* metadata in t, with each
 * sample's mean probe log-likelihood as trace.chain<c>.loglik. */
eb_status eb_sampler_probe_to_meta(const eb_arch *arch, const float *samples, int chains,
                                   int draws, const eb_dataset *data, size_t probes,
                                   eb_trained *t, eb_error *err);

#endif /* EB_SAMPLERS_H */
