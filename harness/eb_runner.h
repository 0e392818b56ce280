/* eb_runner.h: the benchmark runner: a suite's jobs, each trained (or
 * taken from the bundle cache) and measured on a device across every
 * selected facet, stored in the results database one transaction per
 * job. A killed run is resumed by running it again: finished jobs are
 * skipped, bundles already built are not trained again. */
#ifndef EB_RUNNER_H
#define EB_RUNNER_H

#include <stdint.h>
#include <stdio.h>

#include "common/eb_status.h"
#include "harness/eb_suite.h"
#include "results/eb_results.h"

typedef struct eb_run_options {
    const char *suite;     /* built-in name or file path; NULL = "quick" */
    const char *db_path;   /* NULL = "out/results.db" */
    const char *cache_dir; /* bundle cache; NULL = <dataset cache>/bundles */
    const char *label;     /* run label, may be NULL */
    int shard_index, shard_count; /* 0/0 = 1/1 */
    int threads;           /* > 0 overrides the suite's device threads */
    const char *strategy;  /* overrides the suite's [device] strategy; NULL keeps it */
    /* Comma-separated shell patterns (fnmatch) over job names, such as
     * "hmc/mlp-small/s1": only the jobs matching one of them run, and
     * the run's label gains " jobs=PATTERNS" so a filtered run never
     * resumes, or finishes, the unfiltered run. NULL = every job. */
    const char *jobs;
    int quiet;             /* no progress on the log */
    FILE *log;             /* progress and per-job lines; NULL = stderr */
} eb_run_options;

typedef struct eb_run_summary {
    int64_t run_id;
    int resumed;          /* continued an unfinished run */
    int jobs_total;       /* jobs of this shard */
    int jobs_skipped;     /* already done */
    int jobs_done, jobs_failed;
    int bundles_trained, bundles_cached;
} eb_run_summary;

/* Runs a suite into the database. Returns EB_OK when the run completed,
 * even if some jobs failed (they are stored as failed with their
 * message; summary->jobs_failed counts them). */
eb_status eb_run_suite(const eb_run_options *opt, eb_run_summary *summary, eb_error *err);

/* Keeps, in order, the jobs whose name matches one of the comma-separated
 * fnmatch patterns; *n becomes their count. EB_ERR_ARG naming the pattern
 * when one is empty or matches none of the jobs. */
eb_status eb_run_select_jobs(const char *patterns, eb_job *jobs, int *n, eb_error *err);

/* Prints the jobs opt would run (its suite, shard and job patterns), one
 * "index name key" line each, to fp; trains and stores nothing. */
eb_status eb_run_list_jobs(const eb_run_options *opt, FILE *fp, eb_error *err);

typedef struct eb_eval_options {
    const char *bundle;   /* the bundle to evaluate */
    const char *device;   /* NULL = "cpu" */
    const char *suite;    /* evaluation options from this suite; NULL = "quick" */
    const char *db_path;  /* store as a run of suite 'eval'; NULL = do not store */
    const char *label;
    int threads;          /* > 0 overrides the suite's */
    const char *strategy; /* overrides the suite's [device] strategy; NULL keeps it */
    int quiet;
    FILE *log;
} eb_eval_options;

/* One value of an evaluation, as printed by `edgebayes eval`. */
typedef struct eb_eval_metric {
    char facet[24], name[32], context[96], unit[16];
    double value;
    int has_ci;
    double ci_low, ci_high;
} eb_eval_metric;

/* Evaluates one bundle with every facet of the suite's evaluation
 * options; the metrics are returned in *metrics (caller frees with
 * eb_free) and stored when opt->db_path is set. */
eb_status eb_eval_bundle(const eb_eval_options *opt, eb_eval_metric **metrics, size_t *n,
                         int64_t *run_id, eb_error *err);

/* The metric conventions every stored metric refers to (ids from
 * metrics/eb_metrics.h and the measurement protocol), for the database's
 * conventions table. */
const eb_results_convention *eb_runner_conventions(size_t *n);

#endif /* EB_RUNNER_H */
