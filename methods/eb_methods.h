/* eb_methods.h: the approximation methods. A method turns an
 * architecture, training data, settings and a seed into a posterior
 * bundle; every method is one entry in a const table, so the CLI, suite
 * files and docs enumerate them from one place. Also here: settings
 * (typed, validated key=value hyperparameters), the mini-batch training
 * loop the SGD-based methods share, and the posterior view that predicts
 * member probabilities from a bundle. */
#ifndef EB_METHODS_H
#define EB_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "harness/eb_data.h"
#include "methods/eb_bundle.h"
#include "methods/nn/eb_nn.h"

/* ---- Settings ------------------------------------------------------- */

typedef enum eb_setting_type { EB_SET_INT = 1, EB_SET_FLOAT, EB_SET_CHOICE } eb_setting_type;

typedef struct eb_setting_spec {
    const char *key;
    eb_setting_type type;
    const char *def;     /* default, as text */
    double min, max;     /* inclusive range for INT and FLOAT */
    const char *choices; /* CHOICE: "a|b|c"; an alternative "p*" accepts p
                          * followed by one or more printable, non-space
                          * characters, which the setting's owner checks */
    const char *help;
} eb_setting_spec;

#define EB_SETTINGS_MAX 32
#define EB_SETTING_VALUE_MAX 64

/* Values for one method's spec, all validated on the way in. */
typedef struct eb_settings {
    const eb_setting_spec *spec; /* terminated by a NULL key */
    int n;
    char value[EB_SETTINGS_MAX][EB_SETTING_VALUE_MAX];
    int explicit_[EB_SETTINGS_MAX]; /* set by the user rather than default */
} eb_settings;

/* Fills every key with its default. */
eb_status eb_settings_init(eb_settings *s, const eb_setting_spec *spec, eb_error *err);
/* Sets one key; the value must parse as the key's type and lie in range.
 * Errors name the key, the value and what is allowed. */
eb_status eb_settings_set(eb_settings *s, const char *key, const char *value, eb_error *err);
/* "key=value" form, as given to --set. */
eb_status eb_settings_assign(eb_settings *s, const char *assignment, eb_error *err);
/* Several "key=value" assignments separated by spaces ("lr=0.1
 * epochs=3"), in order; stops at the first that fails (its error). */
eb_status eb_settings_assign_list(eb_settings *s, const char *list, eb_error *err);
long eb_settings_int(const eb_settings *s, const char *key);
double eb_settings_float(const eb_settings *s, const char *key);
const char *eb_settings_str(const eb_settings *s, const char *key);
/* Records every setting as bundle metadata "hp.<key>". */
eb_status eb_settings_to_meta(const eb_settings *s, eb_bundle_writer *w, eb_error *err);

/* ---- Methods -------------------------------------------------------- */

typedef struct eb_progress {
    const char *phase; /* "member 2/5" etc. */
    int epoch, epochs;
    double loss;           /* mean training loss of the epoch so far */
    double fraction;       /* of the whole training run, in [0, 1] */
    double images_per_sec; /* training throughput of the epoch */
    int epoch_done;        /* this report closes an epoch */
} eb_progress;

typedef void (*eb_progress_fn)(void *ctx, const eb_progress *p);

/* What a method trains from. */
typedef struct eb_train_request {
    const eb_arch *arch;
    const char *arch_name;    /* "mlp", "cnn" or "custom" */
    const eb_dataset *train;
    const eb_settings *settings;
    uint64_t seed;
    int threads;
    eb_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} eb_train_request;

/* What a method's training produces: the posterior, before it becomes a
 * bundle. params is owned (64-byte aligned; eb_trained_free). */
typedef struct eb_trained {
    eb_arch arch;      /* may differ from the request's (dropout layers) */
    eb_repr_kind repr;
    uint32_t members;  /* S rows for samples; default draws for dropout, gaussian */
    uint32_t rows;     /* rows of params */
    float *params;     /* (rows, K); gaussian: row 0 mu, row 1 sigma */
    /* Metadata the method adds (training traces, diagnostics): lines
     * "key=value\n", owned (eb_trained_meta appends, eb_trained_free
     * frees). Added after eb_trained_alloc, which zeroes the struct. */
    char *meta;
    size_t meta_len, meta_cap;
    /* How the bundle stores the values (transforms set these; 0 means
     * f32). groups: for int8 storage, n_groups + 1 increasing offsets
     * into K, from 0 to K; each run [groups[g], groups[g+1]) shares one
     * scale per row (one output channel's weights, or a layer's biases).
     * Owned (eb_malloc; eb_trained_free frees). head: the distilled
     * student's head kind (eb_bundle_head), 0 otherwise. */
    eb_storage_kind storage;
    uint64_t *groups;
    size_t n_groups;
    uint32_t head;
    /* int8 samples or distilled: static activation scales (rows, n_act),
     * one per row and weighted layer (the quantize transform's
     * activations=calibrated; bundle section ACTSCALES). Owned (eb_malloc;
     * eb_trained_free frees); NULL: activations quantized dynamically. */
    float *act_scales;
    size_t n_act;
} eb_trained;

/* Allocates params for rows x arch->n_params (overflow-checked). */
eb_status eb_trained_alloc(eb_trained *t, const eb_arch *arch, eb_repr_kind repr,
                           uint32_t members, uint32_t rows, eb_error *err);
void eb_trained_free(eb_trained *t);
/* Appends one metadata entry (key and value copied; the bundle writer
 * checks their syntax when the bundle is written). */
eb_status eb_trained_meta(eb_trained *t, const char *key, const char *value, eb_error *err);

/* Calls fn(ctx, key, value, err) for each of t's metadata entries, in
 * order, stopping at the first error. */
typedef eb_status (*eb_trained_meta_fn)(void *ctx, const char *key, const char *value,
                                        eb_error *err);
eb_status eb_trained_meta_each(const eb_trained *t, eb_trained_meta_fn fn, void *ctx,
                               eb_error *err);
/* The value of t's first metadata entry named key, copied into buf (len
 * bytes, truncated to fit); returns buf, or NULL when there is none. */
const char *eb_trained_meta_get(const eb_trained *t, const char *key, char *buf, size_t len);
/* Hands t's metadata lines to the writer. */
eb_status eb_trained_write_meta(const eb_trained *t, eb_bundle_writer *w, eb_error *err);
/* Gives the writer t's architecture and posterior (borrowing t->params),
 * with its storage kind and head. */
eb_status eb_trained_to_writer(const eb_trained *t, eb_bundle_writer *w, eb_error *err);

typedef struct eb_method {
    const char *name;
    const char *summary;
    const eb_setting_spec *settings;
    /* Per-architecture default overrides, "arch:key=value;key=value",
     * applied after the spec defaults; may be NULL. */
    const char *const *arch_defaults;
    /* Trains; on success *out holds the posterior (caller frees). */
    eb_status (*train)(const eb_train_request *req, eb_trained *out, eb_error *err);
} eb_method;

/* The method table, terminated by a NULL name. */
extern const eb_method *const eb_methods[];
const eb_method *eb_method_find(const char *name);
/* Settings with the method's defaults and its overrides for arch_name. */
eb_status eb_method_settings(const eb_method *m, const char *arch_name, eb_settings *s,
                             eb_error *err);

/* Trains with m and writes the bundle to path, with provenance metadata
 * (method, architecture, seed, dataset digest, code version, compiler,
 * BLAS). Deterministic: the same request and thread count give the same
 * bytes. */
eb_status eb_method_train_bundle(const eb_method *m, const eb_train_request *req,
                                 const char *path, eb_error *err);

/* ---- The mini-batch training loop ----------------------------------- */

typedef enum eb_schedule { EB_SCHEDULE_CONSTANT = 1, EB_SCHEDULE_COSINE } eb_schedule;

typedef struct eb_sgd_config {
    eb_optim_config optim;
    eb_schedule schedule;
    int epochs;
    int batch;
    int dropout; /* draw dropout masks (architectures with dropout layers) */
    /* Worker threads: each mini-batch is split into this many contiguous
     * shards run in parallel with single-threaded BLAS; their gradients
     * are summed in shard order, so a given count is deterministic. 0 or
     * 1: one thread. */
    int threads;
    /* Sparse training (pruning): mask (K) holds 1 for a kept parameter and
     * 0 for a pruned one; NULL trains densely. Pruned parameters are zeroed
     * at the start, their gradient is masked, and after every optimiser
     * step they (and their momentum / Adam moments) are set back to
     * exactly 0. Borrowed; must outlive the call. */
    const uint8_t *mask;
    /* 0: theta is initialised from the INIT stream; 1: theta holds the
     * starting point (fine-tuning, rewinding) and the INIT stream is not
     * used. */
    int warm_start;
    /* 0: run all `epochs`; n > 0: stop after n epochs, the learning-rate
     * schedule still spanning `epochs` (the weights a full run has after
     * n epochs: lottery-ticket rewinding points). */
    int stop_epoch;
    /* Optional: called once per optimiser step, after every worker has
     * applied its update and before the next batch, with the whole theta
     * (K), the step number (0-based, across epochs) and that step's
     * learning rate. For proximal steps that need whole parameter groups
     * (group lasso in prune.c), which the per-slice update cannot see.
     * Runs on the calling thread; must be deterministic. NULL: none. */
    void (*after_step)(void *ctx, float *theta, size_t K, long step, float lr);
    void *after_step_ctx;
} eb_sgd_config;

/* Fills cfg from the shared training settings (epochs, batch, optimizer,
 * lr, momentum, weight_decay, schedule). */
eb_status eb_sgd_config_from_settings(eb_sgd_config *cfg, const eb_settings *s, eb_error *err);

/* Trains theta (K; initialised here from the INIT stream unless
 * cfg->warm_start) on data with
 * mini-batches in an order drawn from the ORDER stream; `member` offsets
 * both streams so ensemble members differ. Reports progress per batch
 * group. Returns the final epoch's mean loss in *final_loss (may be
 * NULL). */
eb_status eb_sgd_train(const eb_arch *arch, const eb_dataset *data, const eb_sgd_config *cfg,
                       uint64_t seed, uint32_t member, float *theta, const char *phase,
                       eb_progress_fn progress, void *progress_ctx, double *final_loss,
                       eb_error *err);

/* ---- Posteriors: prediction from a bundle --------------------------- */

/* A validated view of a bundle's posterior. By default as dense f32: for
 * f32 storage params and sigma point into the bundle's map (the bundle
 * must stay open); for every other storage kind eb_posterior_from_bundle
 * decodes them into `owned`, one 64-byte-aligned buffer the posterior
 * holds until eb_posterior_release. With EB_POSTERIOR_QUANTIZED an int8
 * or f16 samples or distilled posterior is not decoded: params is NULL
 * and `stored` holds the values in place (eb_predictor runs them with the
 * quantized kernels of methods/nn/nn_quant.h). */
typedef struct eb_posterior {
    eb_arch arch;
    eb_repr_kind repr;
    uint32_t members;       /* S rows for samples; default draws otherwise */
    size_t k;               /* K */
    const float *params;    /* (members, K) for samples; (K) for dropout and distilled;
                             * mu (K) for gaussian; NULL for a quantized posterior */
    const float *sigma;     /* gaussian: the standard deviations (K); NULL otherwise */
    eb_storage_kind storage; /* how the bundle stores the values */
    /* distilled: the student's head (methods/eb_distill.h maps it to
     * members); EB_HEAD_NONE otherwise. params is then the student (K). */
    eb_head_kind head;
    float *owned;           /* non-f32 storage, decoded: the params (then sigma); else NULL */
    /* A quantized posterior (EB_POSTERIOR_QUANTIZED took effect): the
     * PARAMS tensor as stored (eb_bundle_stored_view: int8 or f16 values
     * (rows, K), int8 scales (rows, n_groups) and groups), pointing into
     * the map, so valid while the bundle is open. All zero (kind 0)
     * otherwise; eb_posterior_quantized tells. */
    eb_bundle_stored stored;
} eb_posterior;

/* Flags of eb_posterior_from_bundle_flags. */
enum {
    /* Keep int8 and f16 values as stored instead of decoding them, for
     * samples and distilled posteriors whose weights the quantized kernels
     * can run (eb_qnet_supports: int8 groups that keep each output
     * channel in one run, inner dimensions within the int32
     * accumulators). Every other posterior (f32 or sparse storage;
     * dropout and gaussian, whose draws need f32 weights; an int8
     * grouping the kernels cannot take) is decoded as without the flag:
     * eb_posterior_quantized says which happened. For deployment (the
     * devices); transforms and diagnostics that read params need the
     * default. */
    EB_POSTERIOR_QUANTIZED = 1u << 0,
    /* Keep shared-sparse and CSR `samples` values as stored (p->stored:
     * the f32 values with their INDEX and ROWPTR, in the map; params
     * NULL) instead of decoding them to dense f32, for the CPU device's
     * sparse strategy (devices/strategy_sparse.c), which runs them with
     * the index set decoded once. eb_predictor cannot run such a
     * posterior (it refuses it); eb_posterior_sparse tells. */
    EB_POSTERIOR_SPARSE = 1u << 1
};

/* Checks that the architecture parses and its K matches the bundle's, and
 * decodes non-f32 storage (EB_ERR_NOMEM if the dense values do not fit).
 * Distilled bundles are accepted (head filled in) and predicted through
 * their head (methods/eb_distill.h). On failure nothing is
 * held. Every posterior it fills is released with eb_posterior_release
 * (safe after a failure too). Equals eb_posterior_from_bundle_flags with
 * flags 0. */
eb_status eb_posterior_from_bundle(const eb_bundle *b, eb_posterior *p, eb_error *err);
/* The same with flags (EB_POSTERIOR_*); EB_ERR_ARG for an unknown flag.
 * A quantized posterior borrows the bundle's map: close the bundle only
 * after the posterior and its predictors are done. */
eb_status eb_posterior_from_bundle_flags(const eb_bundle *b, unsigned flags, eb_posterior *p,
                                         eb_error *err);
/* Nonzero when p keeps int8 or f16 values as stored (params NULL). */
int eb_posterior_quantized(const eb_posterior *p);
/* Nonzero when p keeps shared-sparse or CSR values as stored (params
 * NULL; EB_POSTERIOR_SPARSE took effect). */
int eb_posterior_sparse(const eb_posterior *p);
/* Frees the decoded values (no-op for f32 storage) and clears params,
 * sigma and stored; the posterior cannot predict afterwards. */
void eb_posterior_release(eb_posterior *p);

/* The classes C of the member probabilities: the architecture's outputs,
 * less the data-entropy output of a gped student. */
size_t eb_posterior_classes(const eb_posterior *p);

/* The S a prediction with S = 0 uses. */
uint32_t eb_posterior_default_draws(const eb_posterior *p);

/* A reusable prediction context for one posterior: the network workspace
 * and scratch buffers, allocated once, so repeated calls (one input at a
 * time, in latency measurement) allocate nothing. Draw s of a prediction
 * is member s (samples) or a dropout pass whose masks come from the
 * stream (seed, s, example index); example indices start at
 * first_example, so a batch split into calls draws the same masks as one
 * call. For a gaussian posterior, draw s uses theta = mu + sigma * eps with
 * eps from the stream (mix64(seed ^ EB_STREAM_PREDICT), s), sampled into a
 * scratch buffer of the predictor (the same weights for every input of
 * the draw). A distilled posterior runs its student once per batch and
 * maps the head to S members (eb_distill.h): a categorical head gives S
 * copies of softmax(z); gped and Dirichlet heads give S Dirichlet draws
 * from the stream (mix64(seed ^ EB_STREAM_PREDICT), example index). The
 * posterior must outlive the predictor.
 *
 * On a quantized posterior (eb_posterior_quantized) the logits of member
 * s (or of the student) come from eb_qnet_forward_w over that member's
 * stored values in place: int8 weights with activations quantized per
 * GEMM row at run time (or with the member's static per-layer scales
 * when the bundle has ACTSCALES), or f16 weights (methods/nn/nn_quant.h). The
 * predictor holds one eb_qnet workspace shared by all members and, per
 * member, an eb_qweights owning only its f32 biases (int8: dequantized
 * once) and int8 channel scales; no dense f32 copy of the weights. The
 * mapping after the logits (softmax, a distilled head) is unchanged. */
typedef struct eb_predictor eb_predictor;

/* Batches of up to max_batch inputs, up to max_draws draws (0: the
 * posterior's default). The caller frees with eb_predictor_free. */
eb_status eb_predictor_new(const eb_posterior *p, int max_batch, uint32_t max_draws,
                           eb_predictor **out, eb_error *err);
void eb_predictor_free(eb_predictor *pr);
/* Bytes of workspace the predictor holds (activations and scratch; for a
 * quantized posterior also the per-member biases and scales, and, once
 * eb_predictor_input_grad has run, its f32 network and K-float buffer). */
size_t eb_predictor_bytes(const eb_predictor *pr);
/* Member probabilities probs (n, S, C) of inputs x (n, in_size); any n
 * (split into batches internally). S = 0: the default; S <= max_draws. */
eb_status eb_predictor_run(eb_predictor *pr, const float *x, size_t n, uint32_t S,
                           uint64_t seed, uint64_t first_example, float *probs, eb_error *err);
/* The gradient of the posterior predictive's negative log-likelihood,
 * -log pbar(y | x) with pbar the mean over S draws of the member
 * probabilities, with respect to each input: dx (n, in_size), through all
 * S members (or the same dropout masks as eb_predictor_run draws; for a
 * distilled student, through the head's exact predictive mean, the mean
 * its draws estimate, so the attack sees no Monte Carlo noise). Writes
 * the predictive pbar (n, C) when pbar is not NULL.
 *
 * A quantized posterior has no backward pass of its own: the first call
 * allocates an f32 network workspace and one K-float buffer (kept until
 * eb_predictor_free), and every draw's weights are decoded into that
 * buffer on demand, one member at a time (the values eb_bundle_decode
 * gives), then the f32 forward and backward run on them: the usual
 * straight-through treatment of quantized weights. The predictive whose
 * gradient is taken, and the pbar written, are therefore those of the
 * dequantized f32 network, not of eb_predictor_run's quantized kernels
 * (which also quantize activations); the two differ by the quantization
 * error. */
eb_status eb_predictor_input_grad(eb_predictor *pr, const float *x, const uint8_t *y, size_t n,
                                  uint32_t S, uint64_t seed, uint64_t first_example, float *dx,
                                  float *pbar, eb_error *err);

/* One-shot prediction: a predictor for batches of `batch` (0: 256),
 * run over x (n, in_size) into probs (n, S, C), freed. */
eb_status eb_posterior_predict(const eb_posterior *p, const float *x, size_t n, uint32_t S,
                               uint64_t seed, int batch, float *probs, eb_error *err);

#endif /* EB_METHODS_H */
