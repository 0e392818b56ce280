/* eb_device.h: devices, the one public header of devices/.
 *
 * A device runs a posterior bundle: it loads the bundle, predicts member
 * probabilities p[n][s][c] for S draws, and (optionally) gives the input
 * gradient of the predictive's NLL for attacks. Three parts:
 *
 *   - The interface (device.c): a backend is a const table of operations
 *     (eb_device_ops) plus the context pointer its open() returns, like
 *     SQLite's VFS or curl's TLS backends. The table carries a version
 *     (SQLite's iVersion), a capability bitfield, required slots and
 *     optional slots with defaults. Callers never call a slot directly:
 *     they go through an eb_device handle, whose functions check the
 *     state, apply the defaults of empty optional slots and name the
 *     device in every error. A registry finds backends by name.
 *   - The CPU backend (cpu.c): the portable reference, running the bundle
 *     in this process through methods/eb_methods.h. It is the oracle every
 *     faster backend (CUDA, remote boards over SSH) is tested against;
 *     eb_device_compare runs such a test.
 *   - Measurement (measure.c): the protocol of docs/devices.md, driving any
 *     device through its table: cold and warm load, the first prediction
 *     apart, single-stream latency with its order statistics, offline
 *     throughput, memory per phase, and the clocks, page-cache and
 *     /proc/self helpers it needs. Results are plain structs; nothing in
 *     devices/ prints or writes SQL.
 *
 * Threading: one device handle is used by one thread at a time. The CPU
 * backend's thread count is OpenBLAS's, which is process-wide. */
#ifndef EB_DEVICE_H
#define EB_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "harness/eb_data.h"
#include "methods/eb_bundle.h"

/* ======================================================================
 * CPU sets: the affinity option, in the forms taskset(1) accepts.
 * ==================================================================== */

#define EB_DEVICE_MAX_CPUS 1024

typedef struct eb_device_cpus {
    uint64_t bits[EB_DEVICE_MAX_CPUS / 64]; /* bit i: CPU i */
} eb_device_cpus;

/* Parses a CPU list "0-3,6,8-9" (cpuset(7) list format) or a hexadecimal
 * mask "0x4f" (bit i = CPU i) into *set. At least one CPU; every CPU
 * below EB_DEVICE_MAX_CPUS. Errors (EB_ERR_ARG) quote the text and name
 * the part at fault. */
eb_status eb_device_cpus_parse(const char *text, eb_device_cpus *set, eb_error *err);
/* The list form ("0-3,6") into buf (NUL-terminated, truncated to len);
 * "" for an empty set. */
void eb_device_cpus_format(const eb_device_cpus *set, char *buf, size_t len);
/* Number of CPUs in the set. */
int eb_device_cpus_count(const eb_device_cpus *set);

/* ======================================================================
 * What a device is given and what it reports.
 * ==================================================================== */

#define EB_DEVICE_CPUS_TEXT_MAX 256
#define EB_DEVICE_OPTIONS_MAX 512

/* Configuration of eb_device_open. Plain data: eb_device_config_default,
 * then change what you need. */
typedef struct eb_device_config {
    /* Compute threads (the CPU backend: OpenBLAS threads through
     * eb_nn_set_threads). 0: leave the current setting. */
    int threads;
    /* CPU affinity of the thread that opens the device, which is the
     * thread that measures: "" leaves it alone; otherwise a list or mask
     * as eb_device_cpus_parse reads. The CPU backend restores the previous
     * affinity at close (close from the same thread). */
    char cpus[EB_DEVICE_CPUS_TEXT_MAX];
    /* Largest batch one predict call runs at once (bigger calls are split;
     * the workspace is sized for it). 0: 256. */
    int max_batch;
    /* Largest S a predict call may ask for. 0: the posterior's default
     * draws. For a samples posterior it is capped at the member count. */
    uint32_t max_draws;
    /* Backend-specific settings, "key=value;key=value" (a remote board's
     * host, a GPU index). The CPU backend takes strategy=NAME, its
     * execution strategy (auto, loop, stacked, ...: docs/devices.md), and
     * refuses any other key. */
    char options[EB_DEVICE_OPTIONS_MAX];
} eb_device_config;

/* threads 0, cpus "", max_batch 0 (256), max_draws 0, options "". */
void eb_device_config_default(eb_device_config *cfg);

/* How long one load took, as the device sees it (seconds, monotonic). */
typedef struct eb_device_load_timing {
    double open_s;    /* open the file, map it, validate every field and CRC-32 */
    double prepare_s; /* posterior view and prediction workspace */
    double total_s;   /* from entering load to leaving it */
} eb_device_load_timing;

/* The loaded posterior, as the device holds it. */
typedef struct eb_device_model {
    eb_repr_kind repr;
    int n_classes;            /* C */
    int in_h, in_w, in_c;     /* input image shape (NHWC) */
    size_t in_size;           /* floats per input: in_h * in_w * in_c */
    uint64_t n_params;        /* K */
    uint32_t default_draws;   /* S used when predict is asked for S = 0 */
    uint32_t max_draws;       /* largest S predict accepts */
    int max_batch;            /* inputs per internal batch */
    uint64_t param_bytes;     /* the bundle's tensor sections (types 16 and up: values,
                                 sigma, scales...); the CPU backend uses them in place */
    uint64_t workspace_bytes; /* activations and scratch (eb_predictor_bytes: for int8
                                 and f16 samples or students also the per-member f32
                                 biases and int8 scales), plus any dense f32 copy the
                                 CPU backend decodes (sparse storage; int8 or f16
                                 dropout and gaussian posteriors) */
    uint64_t model_bytes;     /* param_bytes + workspace_bytes: "model bytes in memory" */
    uint64_t mapped_bytes;    /* the whole bundle file as mapped (headers, metadata too) */
} eb_device_model;

/* Provenance: what a run records about the device it measured on. */
typedef struct eb_device_info {
    char backend[32];         /* the table's name ("cpu") */
    char description[256];    /* the backend's own words (BLAS build, board, GPU) */
    int threads;              /* compute threads in effect; 0 unknown */
    char cpus[EB_DEVICE_CPUS_TEXT_MAX]; /* affinity in effect, list form; "" unknown/unrestricted */
    int max_batch;
    /* The execution strategy predicting (the CPU backend: docs/devices.md),
     * resolved once a bundle is loaded ("stacked", "loop", ...); before
     * that, as asked ("auto"). "" for a backend without strategies. */
    char strategy[32];
    /* The EB_INJECT_SLOWDOWN fraction the device applies (a testing hook,
     * docs/devices.md); 0 when off. A run records it so a deliberately
     * slowed run is never mistaken for a regression or a baseline. */
    double injected_slowdown;
} eb_device_info;

/* The page cache of a bundle file around a drop (a cold load's setup). */
typedef struct eb_page_cache_state {
    uint64_t file_bytes;
    uint64_t pages;          /* pages of the file (page size of this machine) */
    double resident_before;  /* fraction of pages cached before the drop */
    double resident_after;   /* fraction cached after it: right before the cold load */
    /* mincore could see this file's page cache: it reported cached pages
     * on a fresh mapping before the drop (after reading the file, if none
     * were cached). Without this a zero after the drop proves nothing. */
    int visible;
    int verified;            /* visible and resident_after == 0 */
    char note[160];          /* why not verified ("" when verified) */
} eb_page_cache_state;

/* Memory of the process holding the model, from /proc/<pid>/status. All
 * in bytes. Which are peaks: only vm_hwm (VmHWM, the peak resident set
 * since the process started or since the last reset through
 * /proc/self/clear_refs). Everything else is a snapshot at the moment of
 * reading: Linux keeps no peak of the anonymous or file-backed parts. */
typedef struct eb_proc_memory {
    uint64_t vm_hwm;    /* VmHWM: peak RSS (peak) */
    uint64_t vm_rss;    /* VmRSS: RSS now (snapshot) */
    uint64_t rss_anon;  /* RssAnon: anonymous pages now (heap, workspace) */
    uint64_t rss_file;  /* RssFile: file-backed pages now (mapped bundle, libraries) */
    uint64_t rss_shmem; /* RssShmem: shared memory now */
    unsigned have;      /* EB_PROC_HAVE_* bits of the fields found */
} eb_proc_memory;

#define EB_PROC_HAVE_HWM 1u
#define EB_PROC_HAVE_RSS 2u
#define EB_PROC_HAVE_ANON 4u  /* Linux >= 4.5 */
#define EB_PROC_HAVE_FILE 8u  /* Linux >= 4.5 */
#define EB_PROC_HAVE_SHMEM 16u /* Linux >= 4.5 */

/* ======================================================================
 * The backend interface.
 * ==================================================================== */

/* The interface version this header defines. A table declares the
 * version it was written for; slots introduced after that version are
 * treated as absent (never read), so an older backend keeps working
 * when slots are added at the end of the table. Slots are never removed
 * or changed in meaning. */
#define EB_DEVICE_OPS_VERSION 1

/* Capabilities (eb_device_ops.caps). */
#define EB_DEVICE_CAP_INPUT_GRAD 0x01u /* input_grad is implemented */
#define EB_DEVICE_CAP_THREADS 0x02u    /* honours eb_device_config.threads */
#define EB_DEVICE_CAP_AFFINITY 0x04u   /* honours eb_device_config.cpus */
/* The model runs in this process and reads the bundle from this
 * machine's file system, so the defaults of the evict and memory slots
 * (this machine's page cache, this process's /proc/self) describe it. A
 * backend without it must fill those slots or go without cold-cache
 * verification and memory readings. */
#define EB_DEVICE_CAP_LOCAL 0x08u
/* Same seed, S and inputs give bit-identical probabilities from one run
 * to the next (at a fixed thread count). */
#define EB_DEVICE_CAP_DETERMINISTIC 0x10u

/* A backend. Each slot gets the context its open() returned. Slots
 * marked required must be non-NULL (eb_device_open_ops refuses the table
 * otherwise); an optional slot may be NULL and then has the default
 * written beside it. Contracts common to all slots: return EB_OK or a
 * code with a sentence in err; never print; a failed call leaves the
 * device usable. */
typedef struct eb_device_ops {
    int version;         /* EB_DEVICE_OPS_VERSION the table was written for (>= 1) */
    const char *name;    /* registry name, [a-z0-9_-]+ */
    const char *summary; /* one line, for listings */
    unsigned caps;       /* EB_DEVICE_CAP_* */

    /* ---- version 1, required ---------------------------------------- */

    /* Creates the context from a validated configuration (the handle has
     * checked the ranges and parsed cpus). Applies threads and affinity
     * when the caps say so. On failure *ctx is untouched and nothing is
     * left allocated. */
    eb_status (*open)(const eb_device_config *cfg, void **ctx, eb_error *err);
    /* Frees the context; called with no bundle loaded. Restores what open
     * changed (threads, affinity). */
    void (*close)(void *ctx);
    /* Loads the bundle at path (open, validate every CRC, prepare the
     * predictor) and fills *timing. Called with no bundle loaded. Errors
     * name the file. */
    eb_status (*load)(void *ctx, const char *path, eb_device_load_timing *timing, eb_error *err);
    /* Releases the loaded bundle and everything load made. */
    void (*unload)(void *ctx);
    /* Describes the loaded posterior; called once after each load. */
    eb_status (*model)(void *ctx, eb_device_model *out, eb_error *err);
    /* Member probabilities probs (n, S, C) of inputs x (n, in_size), for
     * S in [1, max_draws] (the handle resolves S = 0). Draw s of example i
     * is member s (samples) or the stochastic pass (dropout masks, and
     * for gaussian the sampled weights) keyed by (seed, s,
     * first_example + i), as eb_predictor_run: a backend must reproduce
     * the CPU backend's draws. n >= 1. */
    eb_status (*predict)(void *ctx, const float *x, size_t n, uint32_t S, uint64_t seed,
                         uint64_t first_example, float *probs, eb_error *err);

    /* ---- version 1, optional ---------------------------------------- */

    /* Gradient dx (n, in_size) of -log pbar(y | x), pbar the mean of the
     * S draws' probabilities, as eb_predictor_input_grad; writes pbar
     * (n, C) when not NULL. Labels are checked by the handle.
     * Default (NULL): EB_ERR_UNSUPPORTED. Set EB_DEVICE_CAP_INPUT_GRAD
     * with it. */
    eb_status (*input_grad)(void *ctx, const float *x, const uint8_t *y, size_t n, uint32_t S,
                            uint64_t seed, uint64_t first_example, float *dx, float *pbar,
                            eb_error *err);
    /* Fills *info (pre-filled by the handle with the default below).
     * Default (NULL): backend name, the configuration's threads, cpus and
     * max_batch, no slowdown. */
    eb_status (*describe)(void *ctx, eb_device_info *info, eb_error *err);
    /* Drops the bundle file's pages from the cache the device loads from
     * and reports the state. Default (NULL): with EB_DEVICE_CAP_LOCAL,
     * eb_measure_page_cache_drop on this machine; otherwise
     * EB_ERR_UNSUPPORTED. */
    eb_status (*evict)(void *ctx, const char *path, eb_page_cache_state *out, eb_error *err);
    /* Resets the peak RSS of the process holding the model. Default
     * (NULL): with EB_DEVICE_CAP_LOCAL, eb_measure_proc_reset_peak;
     * otherwise EB_ERR_UNSUPPORTED. */
    eb_status (*memory_reset_peak)(void *ctx, eb_error *err);
    /* Reads the memory of the process holding the model. Default (NULL):
     * with EB_DEVICE_CAP_LOCAL, eb_measure_proc_memory; otherwise
     * EB_ERR_UNSUPPORTED. */
    eb_status (*memory_read)(void *ctx, eb_proc_memory *out, eb_error *err);
} eb_device_ops;

/* EB_OK when name is one of the CPU backend's execution strategies, the
 * values of its option strategy=NAME (docs/devices.md); else EB_ERR_ARG
 * "unknown strategy 'NAME' (known: auto, loop, ...)". */
eb_status eb_device_cpu_strategy_check(const char *name, eb_error *err);

/* The CPU backend's table: the reference and oracle. Capabilities:
 * INPUT_GRAD, THREADS, AFFINITY, LOCAL, DETERMINISTIC. */
extern const eb_device_ops eb_device_cpu_ops;

/* The registry: every built-in backend, terminated by NULL. */
extern const eb_device_ops *const eb_device_backends[];
/* The backend called name, or NULL. */
const eb_device_ops *eb_device_find(const char *name);

/* ======================================================================
 * Devices: the handle every caller uses.
 * ==================================================================== */

typedef struct eb_device eb_device; /* opaque */

/* Opens the backend called name with cfg (NULL: defaults). On success
 * *out is a new handle the caller frees with eb_device_close; on failure
 * *out is NULL. EB_ERR_NOTFOUND names an unknown backend and lists the
 * known ones; EB_ERR_ARG names the configuration field at fault. */
eb_status eb_device_open(const char *name, const eb_device_config *cfg, eb_device **out,
                         eb_error *err);
/* The same for a table that need not be registered (an out-of-tree
 * backend, a test double). The table is borrowed and must outlive the
 * handle. Refuses (EB_ERR_ARG) a table with an unknown version, no name
 * or an empty required slot, naming the slot. */
eb_status eb_device_open_ops(const eb_device_ops *ops, const eb_device_config *cfg,
                             eb_device **out, eb_error *err);
/* Unloads any bundle, closes the backend and frees the handle; NULL is a
 * no-op. */
void eb_device_close(eb_device *dev);

const char *eb_device_name(const eb_device *dev);
unsigned eb_device_caps(const eb_device *dev);
/* The configuration the device was opened with (max_batch resolved). */
const eb_device_config *eb_device_get_config(const eb_device *dev);
/* Provenance of the device as it runs now. */
eb_status eb_device_describe(eb_device *dev, eb_device_info *info, eb_error *err);

/* Loads the bundle at path; timing may be NULL. The device must hold no
 * bundle (EB_ERR_ARG otherwise: unload first, so a reload is always
 * explicit). The bundle file must not be truncated while loaded. */
eb_status eb_device_load(eb_device *dev, const char *path, eb_device_load_timing *timing,
                         eb_error *err);
/* Releases the loaded bundle; a no-op when none is loaded. */
void eb_device_unload(eb_device *dev);
/* The loaded posterior, or NULL when none is loaded. Owned by the
 * handle, valid until unload. */
const eb_device_model *eb_device_model_info(const eb_device *dev);
/* The path of the loaded bundle, or NULL. */
const char *eb_device_loaded_path(const eb_device *dev);

/* Member probabilities probs (n, S, C) of x (n, in_size); S = 0: the
 * default draws. See eb_device_ops.predict for the draws. n = 0 is a
 * no-op. Errors: EB_ERR_ARG (no bundle loaded, S too large). */
eb_status eb_device_predict(eb_device *dev, const float *x, size_t n, uint32_t S, uint64_t seed,
                            uint64_t first_example, float *probs, eb_error *err);
/* Input gradient of the predictive's NLL, dx (n, in_size); pbar (n, C)
 * may be NULL. Labels y (n) must be below C. EB_ERR_UNSUPPORTED when the
 * backend has no input_grad slot. */
eb_status eb_device_input_grad(eb_device *dev, const float *x, const uint8_t *y, size_t n,
                               uint32_t S, uint64_t seed, uint64_t first_example, float *dx,
                               float *pbar, eb_error *err);

/* The optional slots through their defaults (see eb_device_ops). */
eb_status eb_device_evict(eb_device *dev, const char *path, eb_page_cache_state *out,
                          eb_error *err);
eb_status eb_device_memory_reset_peak(eb_device *dev, eb_error *err);
eb_status eb_device_memory_read(eb_device *dev, eb_proc_memory *out, eb_error *err);

/* ---- Testing a backend against the oracle ---------------------------- */

/* How far one device's outputs are from another's (the reference). */
typedef struct eb_device_agreement {
    size_t n;                  /* inputs compared */
    uint32_t draws;            /* S */
    double max_abs_prob_diff;  /* over every p[n][s][c] */
    size_t worst_prob_index;   /* flat (n, S, C) index of that maximum */
    double top1_agreement;     /* share of inputs whose predictive argmax agrees */
    int grad_compared;         /* both devices gave input gradients */
    double max_abs_grad_diff;  /* over every dx[n][k] (when compared) */
    double max_abs_grad_ref;   /* largest |dx| of the reference, for scale */
} eb_device_agreement;

/* Runs both devices (each with a bundle loaded: the same posterior, same
 * in_size and C) on x (n, in_size) with the same S, seed and example
 * indices from 0, and compares. When y (n) is not NULL and both devices
 * can, their input gradients are compared too. Allocates its scratch. */
eb_status eb_device_compare(eb_device *dev, eb_device *reference, const float *x,
                            const uint8_t *y, size_t n, uint32_t S, uint64_t seed,
                            eb_device_agreement *out, eb_error *err);

/* ======================================================================
 * Measurement (measure.c): the protocol of docs/devices.md.
 * ==================================================================== */

/* Seconds on CLOCK_MONOTONIC (arbitrary origin). Every time in devices/
 * is a difference of two of these. */
double eb_measure_now(void);

/* ---- Statistics over samples (pure functions) ------------------------- */

/* The q-quantile of sorted (n >= 1, ascending), q in [0, 1], by linear
 * interpolation between order statistics: h = (n - 1) q, result
 * x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]) (0-based), the
 * default of numpy.percentile and R's type 7. */
double eb_measure_quantile(const double *sorted, size_t n, double q);

/* A distribution-free confidence interval for the q-quantile from order
 * statistics. With B ~ Binomial(n, q) the number of samples below the
 * true quantile, [x_(l), x_(u)] (1-based ranks) covers it with
 * probability P(l <= B <= u - 1). The ranks are
 *   l = the largest  l in [0, n]     with P(B <= l - 1) <= (1 - level)/2,
 *   u = the smallest u in [1, n + 1] with P(B >= u)     <= (1 - level)/2,
 * so each tail holds at most (1 - level)/2 and coverage >= level. l = 0 or
 * u = n + 1 means the sample is too small to bound that side: valid = 0
 * (lo/hi then hold the sample minimum/maximum). */
typedef struct eb_quantile_ci {
    double q, level;
    size_t lo_rank, hi_rank; /* l and u above, 1-based */
    double lo, hi;           /* x_(l), x_(u) when valid */
    double coverage;         /* P(l <= B <= u - 1), exact */
    int valid;               /* 1 <= l and u <= n */
} eb_quantile_ci;

/* The ranks and coverage only (no samples needed). n >= 1, q in (0, 1),
 * level in (0, 1); EB_ERR_ARG otherwise. */
eb_status eb_measure_quantile_ci_ranks(size_t n, double q, double level, eb_quantile_ci *out,
                                       eb_error *err);
/* Ranks, coverage and the interval's values from sorted (n, ascending). */
eb_status eb_measure_quantile_ci(const double *sorted, size_t n, double q, double level,
                                 eb_quantile_ci *out, eb_error *err);

/* Summary of latency samples. */
typedef struct eb_latency_stats {
    size_t n;
    double min, max, mean;
    double p50, p90, p99;     /* eb_measure_quantile */
    eb_quantile_ci median_ci; /* the median's interval at the requested level */
    eb_quantile_ci p99_ci;    /* the 99th percentile's interval */
    /* The sample supports p99: its interval exists inside the sample
     * (p99_ci.valid), i.e. 0.99^n <= (1 - level)/2: at level 0.95, at
     * least 368 samples. Below that even the sample maximum is not a
     * (1 + level)/2 upper confidence bound of the true 99th percentile. */
    int p99_supported;
} eb_latency_stats;

/* Statistics of samples (n >= 1, any order; not modified). level in
 * (0, 1), e.g. 0.95. Allocates a sorted copy. */
eb_status eb_measure_latency_stats(const double *samples, size_t n, double level,
                                   eb_latency_stats *out, eb_error *err);

/* ---- This machine: page cache and process memory --------------------- */

/* Drops the file's pages from this machine's page cache: fsync, then
 * posix_fadvise(POSIX_FADV_DONTNEED) over the whole file; residency is
 * read with mincore on a fresh read-only shared mapping before and after
 * (see eb_page_cache_state). Pages still mapped by any process, or on a
 * file system without a droppable cache (tmpfs), stay resident: then
 * verified = 0 and note says so. Errors only when the file cannot be
 * opened or mapped (naming it). */
eb_status eb_measure_page_cache_drop(const char *path, eb_page_cache_state *out, eb_error *err);

/* Parses the text of /proc/<pid>/status ("VmHWM:\t  1234 kB" lines).
 * VmHWM and VmRSS are required (EB_ERR_FORMAT naming the missing or
 * malformed field); RssAnon, RssFile, RssShmem are optional (have bits). */
eb_status eb_measure_parse_proc_status(const char *text, eb_proc_memory *out, eb_error *err);
/* Reads /proc/self/status. */
eb_status eb_measure_proc_memory(eb_proc_memory *out, eb_error *err);
/* Resets this process's VmHWM to its current RSS by writing "5" to
 * /proc/self/clear_refs (Linux >= 4.0). EB_ERR_UNSUPPORTED when the
 * kernel refuses. */
eb_status eb_measure_proc_reset_peak(eb_error *err);

/* ---- Memory per phase ------------------------------------------------- */

/* One phase (load, predict, attack, ...): begin resets the peak and
 * snapshots; end snapshots and reads the peak. */
typedef struct eb_memory_phase {
    int available;        /* the device can report memory at all */
    int peak_reset;       /* the reset worked: peak_rss is this phase's own
                             peak; otherwise the peak since process start */
    uint64_t peak_rss;    /* VmHWM at end (peak) */
    eb_proc_memory start; /* snapshots at begin and end */
    eb_proc_memory end;
} eb_memory_phase;

/* A device that cannot report memory gives available = 0 and EB_OK. */
eb_status eb_measure_memory_begin(eb_device *dev, eb_memory_phase *ph, eb_error *err);
eb_status eb_measure_memory_end(eb_device *dev, eb_memory_phase *ph, eb_error *err);

/* ---- The protocol ----------------------------------------------------- */

typedef struct eb_measure_config {
    uint32_t draws; /* S per prediction; 0: the posterior's default */
    uint64_t seed;  /* seed of the stochastic draws */
    double level;   /* confidence level of the intervals (0.95) */
    /* single-stream latency */
    size_t warmup;       /* untimed queries first (20) */
    size_t min_queries;  /* at least this many timed queries (200) ... */
    double min_seconds;  /* ... and at least this long (2.0 s) */
    size_t max_queries;  /* stop here even if min_seconds is not reached
                            (1,000,000; 0: no cap) */
    /* offline throughput */
    int batch;                     /* inputs per predict call (256) */
    size_t throughput_warmup;      /* untimed batches first (1) */
    size_t min_batches;            /* at least this many timed batches (3) ... */
    double throughput_min_seconds; /* ... and at least this long (2.0 s) */
} eb_measure_config;

/* The defaults in parentheses above; seed 0. The eb_measure_* functions
 * below take cfg = NULL as these defaults. */
void eb_measure_config_default(eb_measure_config *cfg);

/* One load and the prediction right after it. */
typedef struct eb_load_sample {
    eb_device_load_timing device; /* the device's own split */
    double load_s;                /* eb_device_load, timed by the caller */
    double first_predict_s;       /* the first prediction after it: one input, S draws */
    eb_memory_phase memory;       /* over the load and the first prediction */
} eb_load_sample;

typedef struct eb_load_result {
    uint64_t bundle_bytes;      /* the file's size on disk (stat st_size) */
    uint64_t bundle_disk_bytes; /* blocks allocated to it (st_blocks * 512) */
    eb_page_cache_state cache;  /* the drop before the cold load */
    int cold_verified;          /* cache.verified */
    eb_load_sample cold, warm;
    uint32_t draws;             /* S of the first predictions */
    eb_device_model model;      /* as loaded */
} eb_load_result;

/* Cold then warm load of the bundle at path on dev: unloads whatever is
 * loaded, drops the file's pages (eb_device_evict; a device that cannot
 * leaves cold_verified = 0 with the reason in cache.note), loads (cold),
 * predicts inputs->x[0] once, unloads, loads again (warm, pages cached)
 * and predicts once more. The device is left loaded (warm). inputs must
 * match the posterior's input size. */
eb_status eb_measure_load(eb_device *dev, const char *path, const eb_dataset *inputs,
                          const eb_measure_config *cfg, eb_load_result *out, eb_error *err);

typedef struct eb_latency_result {
    /* Every timed query's latency in seconds, in query order: query i
     * used input i mod inputs->n. Owned: free with
     * eb_latency_result_free, or take it and eb_free it yourself. */
    double *samples; /* (n) */
    size_t n;
    size_t warmup;            /* untimed queries run first */
    uint32_t draws;           /* S */
    double duration_s;        /* from the start of the first timed query to the end of the last */
    int reached_min_queries;  /* n >= min_queries */
    int reached_min_seconds;  /* duration_s >= min_seconds (0 only when max_queries cut it) */
    eb_latency_stats stats;
    eb_memory_phase memory;   /* over the timed queries */
} eb_latency_result;

/* Single-stream latency on the loaded bundle: one input per predict
 * call, inputs cycling through inputs->x. Each sample spans exactly one
 * eb_device_predict call. */
eb_status eb_measure_latency(eb_device *dev, const eb_dataset *inputs,
                             const eb_measure_config *cfg, eb_latency_result *out,
                             eb_error *err);
/* Frees samples and zeroes the struct; NULL is a no-op. */
void eb_latency_result_free(eb_latency_result *r);

typedef struct eb_throughput_result {
    int batch;
    uint32_t draws;
    size_t batches;       /* timed predict calls */
    size_t inputs;        /* batches * batch */
    double seconds;       /* from the start of the first timed batch to the end of the last */
    double inputs_per_s;  /* inputs / seconds */
    eb_memory_phase memory;
} eb_throughput_result;

/* Offline throughput on the loaded bundle: predict calls of cfg->batch
 * inputs (at most the device's max_batch), inputs taken in order from
 * inputs->x, wrapping around. */
eb_status eb_measure_throughput(eb_device *dev, const eb_dataset *inputs,
                                const eb_measure_config *cfg, eb_throughput_result *out,
                                eb_error *err);

#endif /* EB_DEVICE_H */
