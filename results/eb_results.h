/* eb_results.h: the results store, the one public header of results/.
 *
 * One SQLite file holds every run of edgebayes: provenance, the artifacts
 * a run used, one row per job and every measured facet. The schema
 * (results/schema.sql, described column by column in docs/results.md) is
 * the contract that reports and external tools read with plain SQL; this
 * header is how edgebayes itself writes and reads it:
 *
 *   - opening (creates, validates, migrates; refuses foreign and newer
 *     files without touching them);
 *   - runs with their provenance, and resuming an interrupted run;
 *   - jobs, each written in one transaction with all its measurements, so
 *     a killed process loses only the job in flight;
 *   - queries returning plain structs the caller frees with the matching
 *     *_free function;
 *   - merging shard databases into one;
 *   - comparing two runs (the nightly regression check), with the
 *     Mann-Whitney U test implemented here.
 *
 * Strings passed in are copied into the database; nothing passed in is
 * kept after a call returns. Every function returning eb_status fills err
 * (which may be NULL) with a sentence naming the file, job or field at
 * fault. A handle is used by one thread at a time. */
#ifndef EB_RESULTS_H
#define EB_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"

/* The schema version this build writes (PRAGMA user_version). */
#define EB_RESULTS_SCHEMA_VERSION 1
/* PRAGMA application_id of every edgebayes results file: "EBRS". */
#define EB_RESULTS_APPLICATION_ID 0x45425253
/* A run's uuid: canonical version-4 UUID text (8-4-4-4-12 hex digits). */
#define EB_RESULTS_UUID_LEN 36
/* How long a call waits for another process's write lock (ms). */
#define EB_RESULTS_BUSY_TIMEOUT_MS 10000

typedef struct eb_results eb_results; /* an open results database */

/* ---- Opening -------------------------------------------------------- */

/* Opens the results database at path read-write, creating it when the
 * file is missing or empty. Sets WAL journaling, foreign keys and the busy
 * timeout, then brings an older schema up to EB_RESULTS_SCHEMA_VERSION
 * (all pending migrations in one transaction). Refused, with the file left
 * untouched: a file that is not an SQLite database, an SQLite database of
 * another application (application_id, or tables without ours), and a
 * newer schema version than this build knows. On success the caller closes
 * *db with eb_results_close; on failure *db is NULL. */
eb_status eb_results_open(const char *path, eb_results **db, eb_error *err);

/* Opens an existing results database for queries only (compare, reports).
 * Refuses what eb_results_open refuses, and also a missing file and an
 * older schema version (open it read-write once to migrate it). Write
 * calls on the handle fail with a message naming the file. */
eb_status eb_results_open_readonly(const char *path, eb_results **db, eb_error *err);

/* Closes db, rolling back a job still open. NULL is a no-op. */
void eb_results_close(eb_results *db);

/* The path db was opened with (owned by db). */
const char *eb_results_path(const eb_results *db);

/* ---- Metric conventions --------------------------------------------- */

/* A pinned metric convention (ids come from metrics/eb_metrics.h). */
typedef struct eb_results_convention {
    const char *id;          /* e.g. "ece-15-equal-width-right-closed-v1" */
    const char *description; /* what the convention fixes */
} eb_results_convention;

/* Records list (n) in the conventions table. An id already present must
 * have the same description: a convention that changed keeps its meaning
 * only under a new id, so a different description is refused naming the
 * id (bump its version suffix). All or nothing. */
eb_status eb_results_conventions(eb_results *db, const eb_results_convention *list, size_t n,
                                 eb_error *err);

/* ---- Runs ----------------------------------------------------------- */

/* Provenance of a run. All pointers are borrowed for the call. The
 * machine/build half (version .. libraries) is normally pointed at an
 * eb_results_machine with eb_results_provenance_set_machine. */
typedef struct eb_results_provenance {
    const char *label;        /* free text, e.g. "nightly"; NULL for none */
    const char *suite;        /* suite name; required */
    const char *suite_sha256; /* SHA-256 of the suite text, 64 hex digits; required */
    const char *shard;        /* "i/n" with 1 <= i <= n; NULL means "1/1" */
    const char *version;      /* edgebayes version */
    const char *git_commit;   /* build commit, with "-dirty" */
    const char *compiler;
    const char *cflags;
    const char *cpu_model;
    int cores;                /* online CPUs, >= 1 */
    const char *host;
    const char *libraries;    /* JSON object: library -> version */
    const char *environment;  /* JSON object of timing-relevant settings; NULL means "{}" */
} eb_results_provenance;

/* The machine and build a run executes on, probed once. Plain arrays, so
 * it lives on the stack and needs no free. Over-long host and CPU names
 * are cut; the JSON is never cut (the probe fails instead). */
typedef struct eb_results_machine {
    char version[32];
    char git_commit[64];
    char compiler[128];
    char cflags[512];     /* EB_CFLAGS when the build defines it, else the
                             predefined macros that reveal the flags */
    char cpu_model[256];  /* /proc/cpuinfo "model name" (x86), "Model" or
                             "Hardware" (ARM boards), else CPU implementer/part */
    char host[256];
    char libraries[1024]; /* {"sqlite":..,"curl":..,"zlib":..,"openssl":..,"openblas":..} */
    int cores;
} eb_results_machine;

/* Fills m from eb_version(), the compiler, /proc/cpuinfo, sysconf,
 * gethostname and the linked libraries' version functions. */
eb_status eb_results_machine_probe(eb_results_machine *m, eb_error *err);

/* Points p's machine/build fields at m's arrays (m must outlive p's use). */
void eb_results_provenance_set_machine(eb_results_provenance *p, const eb_results_machine *m);

/* Inserts a new run (random uuid, started_at = now in ISO 8601 UTC with
 * milliseconds, finished_at NULL). *run_id gets its id; uuid (may be NULL)
 * gets its uuid. */
eb_status eb_results_run_begin(eb_results *db, const eb_results_provenance *p, int64_t *run_id,
                               char uuid[EB_RESULTS_UUID_LEN + 1], eb_error *err);

/* The run a rerun continues: the most recently started run (started_at,
 * then id) that is unfinished (finished_at NULL) and has the same suite,
 * suite_sha256, shard, label, version and git_commit as p. *run_id = 0
 * when there is none. */
eb_status eb_results_run_resumable(eb_results *db, const eb_results_provenance *p,
                                   int64_t *run_id, eb_error *err);

/* eb_results_run_resumable, else eb_results_run_begin, in one write
 * transaction (two processes of the same shard cannot both begin one).
 * *resumed is 1 when an existing run was found (may be NULL). */
eb_status eb_results_run_resume_or_begin(eb_results *db, const eb_results_provenance *p,
                                         int64_t *run_id, int *resumed, eb_error *err);

/* Sets the run's finished_at to now. */
eb_status eb_results_run_finish(eb_results *db, int64_t run_id, eb_error *err);

/* Resolves a run reference: a label (the latest run carrying it, a
 * finished one if any), else a decimal id, or a uuid or a unique prefix of
 * one (at least 4 characters). Unknown and ambiguous references are
 * EB_ERR_NOTFOUND / EB_ERR_ARG with a message naming ref. */
eb_status eb_results_run_lookup(eb_results *db, const char *ref, int64_t *run_id, eb_error *err);

/* ---- Artifacts ------------------------------------------------------ */

typedef struct eb_results_artifact {
    const char *kind;   /* "bundle" or "dataset" */
    const char *sha256; /* content digest, 64 hex digits (stored lowercase) */
    const char *name;   /* file name, or e.g. "fashion-mnist/test" */
    int64_t bytes;      /* size, >= 0 */
    const char *meta;   /* JSON object (a bundle's metadata); NULL means "{}" */
} eb_results_artifact;

/* Insert-or-get by sha256: *id is the artifact's id, new or existing (an
 * existing row keeps its first name and meta; a different kind is
 * refused). Inside an open job this is part of the job's transaction. */
eb_status eb_results_artifact_put(eb_results *db, const eb_results_artifact *a, int64_t *id,
                                  eb_error *err);

/* Links an artifact to a run under role ("train", "test", "ood",
 * "bundle"); linking twice is a no-op. */
eb_status eb_results_run_artifact(eb_results *db, int64_t run_id, int64_t artifact_id,
                                  const char *role, eb_error *err);

/* ---- Jobs ----------------------------------------------------------- */

/* What identifies and describes a job. key identifies its definition
 * (not the code version): reruns skip it and comparisons match on it. */
typedef struct eb_results_job_def {
    const char *key;      /* required, unique within a run */
    const char *name;     /* display name, e.g. "ensemble/mlp/s1"; required */
    const char *method;   /* required */
    const char *chain;    /* transform chain, e.g. "prune:0.9"; NULL means "" */
    const char *arch;     /* required */
    uint64_t seed;        /* at most INT64_MAX (SQLite integers are signed) */
    const char *device;   /* required */
    uint32_t draws;       /* S used for prediction */
    const char *settings; /* JSON object of every setting; NULL means "{}" */
    int64_t bundle_id;    /* artifact id of the bundle, 0 for none */
} eb_results_job_def;

/* Starts the job's transaction (BEGIN IMMEDIATE) and inserts its row; at
 * most one job is open per handle. A row of the same run and key that
 * failed earlier is replaced (a rerun retries failed jobs); one that is
 * done is refused (check eb_results_job_done first). *job_id may be NULL.
 * After any error from a job_* call the job stays open: finish it with
 * eb_results_job_abort or eb_results_job_fail. */
eb_status eb_results_job_begin(eb_results *db, int64_t run_id, const eb_results_job_def *def,
                               int64_t *job_id, eb_error *err);

/* A scalar result. value NAN is stored as NULL (undefined, e.g. AUROC
 * with one class). Also the row type of eb_results_metrics. */
typedef struct eb_results_metric {
    const char *facet;      /* quality, calibration, ood, latency, ... (docs/results.md) */
    const char *name;       /* e.g. "accuracy", "ece", "p50" */
    const char *context;    /* e.g. "score=entropy"; NULL means "" */
    double value;
    int has_ci;             /* 1: ci_low, ci_high, ci_level are set */
    double ci_low, ci_high; /* ci_low <= ci_high, finite */
    double ci_level;        /* in (0, 1), e.g. 0.95 */
    const char *unit;       /* "s", "bytes", ...; NULL means "" */
    int higher_is_better;   /* 0 or 1 */
    const char *convention; /* a registered convention id, or NULL */
} eb_results_metric;

/* Adds metrics (n) to the open job. */
eb_status eb_results_job_metrics(eb_results *db, const eb_results_metric *m, size_t n,
                                 eb_error *err);

/* Appends raw latency samples (n, seconds, finite and >= 0) of kind
 * ("single", "first") to the open job, numbering them after any already
 * stored for that kind. */
eb_status eb_results_job_latency(eb_results *db, const char *kind, const double *seconds,
                                 size_t n, eb_error *err);

/* One reliability-diagram bin; also the row type of eb_results_bins. */
typedef struct eb_results_bin {
    double lo, hi;     /* bin edges, lo <= hi */
    int64_t count;     /* examples in the bin, >= 0 */
    double confidence; /* mean confidence; NAN (stored NULL) when empty */
    double accuracy;   /* accuracy; NAN (stored NULL) when empty */
} eb_results_bin;

/* Stores bins (n) under context ("binning=equal-width"), numbered 0..n-1. */
eb_status eb_results_job_bins(eb_results *db, const char *context, const eb_results_bin *bins,
                              size_t n, eb_error *err);

/* Stores a curve of n points (x[i], y[i]), numbered 0..n-1, of kind
 * ("roc", "pr", "eps", "shift", "selective") under context. */
eb_status eb_results_job_curve(eb_results *db, const char *kind, const char *context,
                               const double *x, const double *y, size_t n, eb_error *err);

/* Stores per-example predictive probabilities probs (n, n_classes) of
 * split as examples first .. first+n-1; labels (n) may be NULL (stored
 * NULL). Each row is a blob of n_classes little-endian float32. */
eb_status eb_results_job_predictions(eb_results *db, const char *split, const float *probs,
                                     const uint8_t *labels, size_t n, size_t n_classes,
                                     size_t first, eb_error *err);

/* Commits the open job with status 'done', its wall time in seconds and
 * finished_at = now. On failure the job is still open (abort it). */
eb_status eb_results_job_commit(eb_results *db, double seconds, eb_error *err);

/* Rolls the open job back: nothing of it remains. No-op without one. */
void eb_results_job_abort(eb_results *db);

/* Commits the open job as 'failed' with message (required) and its wall
 * time, dropping every measurement added to it: a failed job has no
 * metrics. On failure the job is still open (abort it). */
eb_status eb_results_job_fail(eb_results *db, const char *message, double seconds,
                              eb_error *err);

/* Which runs a question is about: every non-zero/non-NULL field narrows. */
typedef struct eb_results_scope {
    int64_t run_id;    /* > 0: only this run */
    const char *suite; /* only runs of this suite */
    const char *label; /* only runs with this label */
} eb_results_scope;

/* *found = 1 when a job with this key has status 'done' in a run within
 * scope (NULL: any run in the file). Failed jobs do not count. */
eb_status eb_results_job_done(eb_results *db, const eb_results_scope *scope, const char *key,
                              int *found, eb_error *err);

/* ---- Queries -------------------------------------------------------- */
/* Each fills a list whose strings and rows the list owns; free it with
 * the matching *_free (which also accepts a zeroed list). On failure the
 * list is zeroed. Text columns that are NULL come back as NULL pointers,
 * REAL columns that are NULL as NAN. */

typedef struct eb_results_run {
    int64_t id;
    const char *uuid, *label, *suite, *suite_sha256, *shard;
    const char *started_at, *finished_at; /* finished_at NULL while unfinished */
    const char *version, *git_commit, *compiler, *cflags, *cpu_model, *host;
    const char *libraries, *environment;
    int64_t cores;
    int64_t jobs_done, jobs_failed;
} eb_results_run;

typedef struct eb_results_run_list {
    eb_results_run *v;
    size_t n;
    void *mem_; /* private */
} eb_results_run_list;

/* Runs within scope (NULL: all), oldest first (started_at, id). */
eb_status eb_results_runs(eb_results *db, const eb_results_scope *scope,
                          eb_results_run_list *out, eb_error *err);
void eb_results_run_list_free(eb_results_run_list *l);

typedef struct eb_results_job {
    int64_t id, run_id;
    const char *key, *name, *method, *chain, *arch, *device, *settings;
    int64_t seed; /* as stored */
    int64_t draws;
    int64_t bundle_id; /* 0 for none */
    const char *status; /* "done" or "failed" */
    const char *error;  /* NULL unless failed */
    double seconds;
    const char *finished_at;
} eb_results_job;

typedef struct eb_results_job_list {
    eb_results_job *v;
    size_t n;
    void *mem_;
} eb_results_job_list;

/* Jobs of a run, ordered by key. */
eb_status eb_results_jobs(eb_results *db, int64_t run_id, eb_results_job_list *out,
                          eb_error *err);
void eb_results_job_list_free(eb_results_job_list *l);

typedef struct eb_results_metric_list {
    eb_results_metric *v;
    size_t n;
    void *mem_;
} eb_results_metric_list;

/* Metrics of a job, ordered by facet, name, context. */
eb_status eb_results_metrics(eb_results *db, int64_t job_id, eb_results_metric_list *out,
                             eb_error *err);
void eb_results_metric_list_free(eb_results_metric_list *l);

typedef struct eb_results_samples {
    double *v; /* (n) seconds in seq order */
    size_t n;
} eb_results_samples;

/* Latency samples of a job and kind. */
eb_status eb_results_latency(eb_results *db, int64_t job_id, const char *kind,
                             eb_results_samples *out, eb_error *err);
void eb_results_samples_free(eb_results_samples *s);

typedef struct eb_results_curve_point {
    const char *kind, *context;
    int64_t seq;
    double x, y;
} eb_results_curve_point;

typedef struct eb_results_curve_list {
    eb_results_curve_point *v;
    size_t n;
    void *mem_;
} eb_results_curve_list;

/* Every curve point of a job, ordered by kind, context, seq. */
eb_status eb_results_curves(eb_results *db, int64_t job_id, eb_results_curve_list *out,
                            eb_error *err);
void eb_results_curve_list_free(eb_results_curve_list *l);

typedef struct eb_results_bin_list {
    eb_results_bin *v; /* v[i] is bin i */
    size_t n;
} eb_results_bin_list;

/* Reliability bins of a job under context, in bin order. */
eb_status eb_results_bins(eb_results *db, int64_t job_id, const char *context,
                          eb_results_bin_list *out, eb_error *err);
void eb_results_bin_list_free(eb_results_bin_list *l);

/* ---- Merge ---------------------------------------------------------- */

typedef struct eb_results_merge_stats {
    size_t inputs;          /* inputs merged */
    size_t runs_added;      /* runs new to the output */
    size_t runs_finished;   /* output runs whose finished_at an input supplied */
    size_t jobs_added;      /* jobs new to the output (replacements included) */
    size_t jobs_replaced;   /* failed output jobs replaced by an input's done job */
    size_t artifacts_added;
} eb_results_merge_stats;

/* Merges the shard databases in_paths (n) into out_path (created when
 * missing). Runs are matched by uuid, artifacts by sha256, conventions by
 * id, jobs by (run uuid, key); ids are remapped. Every input is validated
 * first (exists, is not the output, is an edgebayes database of exactly
 * this schema version, passes quick_check and foreign_key_check, agrees
 * with the output on conventions and artifact kinds); if any fails,
 * nothing is written and the message names it. Each input is then merged
 * in its own transaction. Merging the same input twice changes nothing.
 * Inputs are opened read-only. stats may be NULL. */
eb_status eb_results_merge(const char *out_path, const char *const *in_paths, size_t n,
                           eb_results_merge_stats *stats, eb_error *err);

/* ---- Statistics ------------------------------------------------------ */

typedef enum eb_results_alternative {
    EB_RESULTS_GREATER = 0, /* x tends to be larger than y */
    EB_RESULTS_LESS,        /* x tends to be smaller than y */
    EB_RESULTS_TWO_SIDED
} eb_results_alternative;

/* Mann-Whitney U test of x (nx) against y (ny), both non-empty and
 * finite: *u = U of x (pairs with x > y, ties counting one half); *p from
 * the normal approximation with tie correction and continuity correction
 * (scipy.stats.mannwhitneyu(x, y, method='asymptotic', use_continuity=True)).
 * When every value is tied, *p = 1. Allocates nx + ny doubles (EB_ERR_NOMEM). */
eb_status eb_results_mann_whitney(const double *x, size_t nx, const double *y, size_t ny,
                                  eb_results_alternative alt, double *u, double *p,
                                  eb_error *err);

/* ---- Compare --------------------------------------------------------- */

typedef enum eb_results_verdict {
    EB_RESULTS_SAME = 0,
    EB_RESULTS_BETTER,
    EB_RESULTS_WORSE,
    EB_RESULTS_NEW,          /* only in the candidate */
    EB_RESULTS_MISSING,      /* only in the base */
    EB_RESULTS_INCOMPARABLE, /* both present but not comparable: different
                                convention, unit or direction, or a value
                                undefined on one side only */
    EB_RESULTS_VERDICT_COUNT_
} eb_results_verdict;

/* "same", "better", "worse", "new", "missing", "incomparable". */
const char *eb_results_verdict_name(eb_results_verdict v);

/* How an item's verdict was reached. */
typedef enum eb_results_rule {
    EB_RESULTS_RULE_NONE = 0,     /* new, missing, incomparable, both undefined */
    EB_RESULTS_RULE_MANN_WHITNEY, /* raw latency samples: U test + median effect */
    EB_RESULTS_RULE_SAMPLES,      /* latency metric: takes its job's "single" samples verdict */
    EB_RESULTS_RULE_INTERVALS,    /* both have intervals: effect + disjoint intervals */
    EB_RESULTS_RULE_THRESHOLD,    /* no intervals: relative threshold */
    EB_RESULTS_RULE_SINGLE_TIMING, /* one noisy measurement (load time, throughput, peak RSS,
                                      training time): only a change beyond noisy_threshold */
    EB_RESULTS_RULE_INFORMATIONAL  /* describes how the job ran or what it is
                                      (training/from_cache, the compression facet), not how
                                      well: shown, never a verdict other than same */
} eb_results_rule;

/* "none", "mann-whitney", "samples", "intervals", "threshold", "single-timing",
 * "informational". */
const char *eb_results_rule_name(eb_results_rule r);

typedef struct eb_results_compare_config {
    double alpha;              /* one-sided U-test level; default 0.01 */
    double latency_min_effect; /* worse: cand median >= base median * (1 + e); default 0.05 */
    double quality_min_effect; /* with intervals: relative change beyond e * |base|; default 0.01 */
    double threshold;          /* without intervals: relative change beyond t * |base|; default 0.05 */
    int missing_regresses;     /* a base job missing from the candidate is a regression; default 0 */
    /* Single measurements of time or resident memory without intervals
     * (load times, throughput, first prediction, peak RSS, training time)
     * carry machine noise of tens of percent and no noise estimate: they
     * change the verdict only beyond this relative change; default 1.0
     * (twice as slow or as large). */
    double noisy_threshold;
} eb_results_compare_config;

void eb_results_compare_defaults(eb_results_compare_config *cfg);

/* One compared quantity. Absent sides are NAN / has_ci 0. */
typedef struct eb_results_compare_item {
    const char *facet, *name, *context, *unit;
    int higher_is_better;
    double base, cand;             /* values (medians for raw samples) */
    int base_has_ci, cand_has_ci;
    double base_ci_low, base_ci_high, base_ci_level;
    double cand_ci_low, cand_ci_high, cand_ci_level;
    double delta;                  /* cand - base */
    double rel_delta;              /* (cand - base) / |base|; NAN when base is 0 */
    double p_worse, p_better;      /* one-sided U-test p-values; NAN unless RULE_MANN_WHITNEY */
    size_t base_n, cand_n;         /* sample counts for RULE_MANN_WHITNEY */
    eb_results_rule rule;
    eb_results_verdict verdict;
} eb_results_compare_item;

typedef struct eb_results_compare_job {
    const char *key, *name;
    int64_t base_job, cand_job;     /* job ids, 0 when absent */
    const char *base_status, *cand_status; /* "done", "failed", NULL when absent */
    const char *cand_error;         /* the candidate's failure message, or NULL */
    eb_results_verdict verdict;     /* see eb_results_compare */
    eb_results_compare_item *items; /* (n_items) */
    size_t n_items;
} eb_results_compare_job;

typedef struct eb_results_comparison {
    int64_t base_run, cand_run;
    eb_results_compare_config config; /* as used */
    eb_results_compare_job *jobs;     /* (n_jobs), ordered by key */
    size_t n_jobs;
    size_t job_counts[EB_RESULTS_VERDICT_COUNT_];  /* jobs per verdict */
    size_t item_counts[EB_RESULTS_VERDICT_COUNT_]; /* items per verdict */
    int regression;                /* 1 when overall is WORSE */
    eb_results_verdict overall;    /* WORSE, BETTER or SAME */
    void *mem_;
} eb_results_comparison;

/* Compares the candidate run with the base run, job by job (matched by
 * key) and quantity by quantity; the rules are in docs/results.md. A job's
 * verdict: NEW / MISSING when on one side only; WORSE when the candidate
 * failed and the base did not, or any item is WORSE; BETTER when the base
 * failed and the candidate did not, or some item is BETTER and none WORSE;
 * else SAME. overall is WORSE when a job is WORSE (or MISSING with
 * missing_regresses), else BETTER when a job is BETTER, else SAME. cfg
 * NULL means the defaults. The caller frees *out with
 * eb_results_comparison_free. */
eb_status eb_results_compare(eb_results *db, int64_t base_run, int64_t cand_run,
                             const eb_results_compare_config *cfg, eb_results_comparison **out,
                             eb_error *err);
void eb_results_comparison_free(eb_results_comparison *c);

#endif /* EB_RESULTS_H */
