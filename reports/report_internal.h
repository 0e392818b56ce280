/* report_internal.h: what the files of reports/ share, and nothing else
 * uses (tests/reports may include it to check the numerical helpers):
 *
 *   query.c    the read-only connection, runs and jobs, run selection,
 *              metric columns, point series (curves, bins, samples)
 *   tables.c   the multi-facet table: columns, best marks, number
 *              formats, HTML / Markdown / LaTeX writers and escaping
 *   plots.c    each plot's .dat and .gp, the Pareto front, mean curves
 *   gnuplot.c  running gnuplot as a child process, pinning PDF dates
 *   runtime.c  the runtime benchmark's run (suite 'bench-runtime'): its
 *              rows for the `runtime` plot and table
 *   report.c   eb_report_write: assembly and index.html
 *
 * Every string a query returns lives in the rp_db's arena and is freed
 * with it; nothing here prints or exits. */
#ifndef EB_REPORT_INTERNAL_H
#define EB_REPORT_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/eb_io.h"
#include "common/eb_status.h"
#include "reports/eb_report.h"

/* ---- string arena (query.c) --------------------------------------- */

typedef struct rp_chunk rp_chunk;
/* Bump allocator: many small strings, one free. Zero-initialise. */
typedef struct rp_arena {
    rp_chunk *head;
} rp_arena;

/* NULL on out of memory. */
void *rp_arena_alloc(rp_arena *a, size_t size);
/* Copies s (NULL stays NULL) into *out; -1 on out of memory. */
int rp_arena_dup(rp_arena *a, const char *s, const char **out);
void rp_arena_free(rp_arena *a);

/* ---- the database (query.c) ----------------------------------------- */

typedef struct rp_run {
    int64_t id;
    const char *uuid, *label, *suite, *suite_sha256, *shard, *started_at, *finished_at,
        *version, *git_commit, *compiler, *cflags, *cpu_model, *host, *libraries,
        *environment; /* label and finished_at may be NULL */
    int64_t cores;
    int selected;
} rp_run;

typedef struct rp_job {
    int64_t id, run_id;
    size_t run; /* index into rp_db.runs */
    /* error may be NULL */
    const char *key, *name, *method, *chain, *arch, *device, *status, *error;
    int64_t seed, draws;
    double seconds;
    double bundle_bytes; /* artifacts.bytes of the job's bundle; NAN when it has none */
    int done;            /* status is 'done' */
    const char *label;   /* display name: name, plus " #<run id>" when several runs are selected */
} rp_job;

typedef struct rp_db {
    sqlite3 *db;
    const char *path;
    rp_arena arena;
    rp_run *runs; /* every run, oldest first (started_at, then id) */
    size_t n_runs;
    rp_job *jobs; /* every job, by run, then method, chain, arch, seed, device, draws, key */
    size_t n_jobs;
    size_t *by_id;    /* (n_jobs) job indices in id order, for lookups */
    size_t *row_pos;  /* (n_jobs) position in rows, or SIZE_MAX for jobs outside the table */
    char *sel_ids;    /* selected run ids as an SQL list, "3,5" (integers only) */
    size_t n_selected;
    size_t latest;    /* index of the latest selected run */
    size_t *rows;     /* the table's jobs: done jobs of selected runs, by identity then run */
    size_t n_rows;
    unsigned char *row_mask; /* (n_jobs) 1 for the table's jobs */
    eb_status step_status;   /* the status of rp_step's last failure */
} rp_db;

/* Opens path read-only (SQLITE_OPEN_READONLY) inside one read
 * transaction, checks the schema version, and loads every run and job.
 * On failure d is left closed. */
eb_status rp_db_open(rp_db *d, const char *path, eb_error *err);
/* Marks the runs named by runs[0..n) (ids, uuids or labels; n = 0: the
 * latest finished run) and fills sel_ids, latest, rows and the labels. */
eb_status rp_db_select(rp_db *d, const char *const *runs, size_t n, eb_error *err);
void rp_db_close(rp_db *d);
/* Index of the job with this id, or -1. */
long rp_db_job(const rp_db *d, int64_t id);

/* sqlite3_prepare_v2 with a message naming the database. */
eb_status rp_prepare(rp_db *d, const char *sql, sqlite3_stmt **st, eb_error *err);
/* sqlite3_step: SQLITE_ROW or SQLITE_DONE, or -1 with err and
 * d->step_status set. */
int rp_step(rp_db *d, sqlite3_stmt *st, eb_error *err);
/* Column text, "" for NULL. */
const char *rp_text(sqlite3_stmt *st, int col);
/* Column as double, NAN for NULL. */
double rp_real(sqlite3_stmt *st, int col);

/* Value of key in a context string "a=1,b=x" (no spaces around '=' or
 * ','): 1 and a NUL-terminated copy in out, or 0 when absent or when it
 * does not fit. */
int rp_ctx_get(const char *ctx, const char *key, char *out, size_t cap);

/* Point series: rows of one job and context, in stored order. */
typedef struct rp_series {
    size_t job;          /* index into rp_db.jobs */
    const char *context; /* '' when none */
    size_t n;            /* rows */
    const double *v;     /* (n, ncols) NULL values are NAN */
    size_t off;          /* first row in rp_seriesset.vals (used while loading) */
} rp_series;

typedef struct rp_seriesset {
    rp_series *s; /* sorted by the job's table row, then context */
    size_t n;
    size_t ncols;
    double *vals;
    rp_arena arena; /* contexts */
} rp_seriesset;

/* Runs sql, whose columns are job_id, context, then ncols numbers, in
 * (job_id, context, point order) order. Each "%s" in sql (at most two)
 * is replaced by the selected run ids; ?1 is bound to bind1 when not
 * NULL. Rows of jobs outside the table (not done, or runs not selected)
 * are dropped. The caller frees out with rp_series_free. */
eb_status rp_series_load(rp_db *d, const char *sql, const char *bind1, size_t ncols,
                         rp_seriesset *out, eb_error *err);
void rp_series_free(rp_seriesset *s);

/* ---- the multi-facet table (tables.c) ------------------------------- */

typedef enum rp_unit {
    RP_UNIT_RATIO,   /* in [0, 1], four decimals */
    RP_UNIT_PLAIN,   /* e.g. NLL in nats, four decimals */
    RP_UNIT_SECONDS, /* shown in ms */
    RP_UNIT_BYTES,   /* shown in B, KiB, MiB or GiB, chosen per column */
    RP_UNIT_RATE     /* per second */
} rp_unit;

typedef enum rp_agg {
    RP_AGG_EXACT,     /* the row with exactly (facet, name, context) */
    RP_AGG_SHIFT_MEAN /* mean over corruptions: at severity 3, else over all severities */
} rp_agg;

typedef struct rp_column {
    const char *key;     /* stable name, used by eb_report_options.history */
    const char *heading; /* table heading without unit */
    const char *facet, *name, *context;
    rp_unit unit;
    rp_agg agg;
    int bundle_fallback; /* use artifacts.bytes of the job's bundle when no row */
} rp_column;

enum {
    RP_COL_ACCURACY,
    RP_COL_NLL,
    RP_COL_ECE,
    RP_COL_BRIER,
    RP_COL_OOD_ENTROPY,
    RP_COL_OOD_MI,
    RP_COL_MISCLASSIFICATION,
    RP_COL_PGD,
    RP_COL_SHIFT,
    RP_COL_LATENCY,
    RP_COL_THROUGHPUT,
    RP_COL_LOAD_COLD,
    RP_COL_LOAD_WARM,
    RP_COL_PEAK_RSS,
    RP_COL_MODEL_BYTES,
    RP_COL_BUNDLE_BYTES,
    RP_COL_TRAIN_SECONDS,
    RP_COL_DISAGREEMENT,
    RP_COL_RHAT,
    RP_COL_FIDELITY,
    RP_COL_SPARSITY,
    RP_N_COLUMNS
};

extern const rp_column rp_columns[RP_N_COLUMNS];

typedef struct rp_value {
    double v, lo, hi;   /* lo/hi: the confidence interval when has_ci */
    signed char has;    /* a value is present (not NULL, finite) */
    signed char has_ci;
    signed char hib;    /* metrics.higher_is_better of its row(s); -1 unknown */
} rp_value;

/* Shift column variants (rp_column_load's *variant). */
enum { RP_SHIFT_NONE = 0, RP_SHIFT_SEVERITY3 = 1, RP_SHIFT_ALL = 2 };

/* Reads column col for the jobs with mask[j] set into vals[j] (n_jobs
 * entries; the others stay absent). For the shift column, *variant says
 * which mean was taken (RP_SHIFT_*); other columns set 0. */
eb_status rp_column_load(rp_db *d, size_t col, const unsigned char *mask, rp_value *vals,
                         int *variant, eb_error *err);

typedef struct rp_table {
    rp_db *d;
    rp_value *vals;             /* (RP_N_COLUMNS, n_jobs) */
    int dir[RP_N_COLUMNS];      /* 1 higher is better, 0 lower, -1 unknown or mixed */
    int variant[RP_N_COLUMNS];
    unsigned char *best;        /* (RP_N_COLUMNS, n_rows) */
    int multi_run;              /* several runs selected: a Run column */
} rp_table;

eb_status rp_table_build(rp_table *t, rp_db *d, eb_error *err);
void rp_table_free(rp_table *t);
/* Value of column col for job j. */
const rp_value *rp_table_value(const rp_table *t, size_t col, size_t job);
/* Marks best[i] for the best of vals[0..n) (absent ones never); all ties
 * are marked. dir: 1 higher is better, 0 lower; nothing is marked for
 * dir -1 or fewer than two present values. Returns the marks count. */
size_t rp_mark_best(unsigned char *best, const rp_value *const *vals, size_t n, int dir);

void rp_table_html(const rp_table *t, FILE *fp);
void rp_table_markdown(const rp_table *t, FILE *fp);
void rp_table_latex(const rp_table *t, FILE *fp);

/* Escapers: the text as it must appear in each format. */
void rp_html_escape(FILE *fp, const char *s);
void rp_md_escape(FILE *fp, const char *s);
void rp_latex_escape(FILE *fp, const char *s);

/* ---- plots (plots.c) ------------------------------------------------ */

enum {
    RP_PLOT_RELIABILITY,
    RP_PLOT_OOD_ROC,
    RP_PLOT_ADV_ACCURACY,
    RP_PLOT_ADV_NLL,
    RP_PLOT_SHIFT_ECE,
    RP_PLOT_PARETO_LATENCY,
    RP_PLOT_PARETO_STORAGE,
    RP_PLOT_PARETO_MEMORY,
    RP_PLOT_LATENCY,
    RP_PLOT_HISTORY,
    RP_PLOT_SPARSITY,
    RP_PLOT_RUNTIME,
    RP_N_PLOTS
};

typedef struct rp_plot {
    const char *name;   /* file stem in plots/ */
    char title[160];
    char caption[1024]; /* what is drawn and which rows it reads */
    char note[1024];    /* why it was skipped, or which jobs had no data */
    int written;        /* .dat and .gp written; to be rendered */
    int width, height;  /* pixels of the PNG and SVG */
    char *warnings;     /* gnuplot's stderr when it succeeded but said something; eb_free */
} rp_plot;

/* Writes plots/NAME.dat and .gp for every plot with data; sets written,
 * or a note saying why not. history: column indices (n_history). */
eb_status rp_plots_write(rp_plot plots[RP_N_PLOTS], const rp_table *t, const char *plots_dir,
                         const size_t *history, size_t n_history, eb_error *err);
void rp_plots_free(rp_plot plots[RP_N_PLOTS]);

/* Pareto front, resource x lower-is-better, y higher-is-better when
 * y_higher_better else lower: on_front[i] = 1 unless some point j is at
 * least as good on both and better on one. Equal points stay on the front
 * together. O(n^2): n is the number of jobs. */
void rp_pareto_front(unsigned char *on_front, const double *x, const double *y, size_t n,
                     int y_higher_better);

/* Mean curve of k series (each (n, 2) x, y): the mean y at every x of the
 * first series that every series has (x compared exactly). Writes up to
 * cap points to mx, my; returns the count. */
size_t rp_mean_curve(double *mx, double *my, size_t cap, const rp_series *const *s, size_t k);

/* ---- the runtime benchmark (runtime.c) ----------------------------- */

/* One job of a bench-runtime run: runtime/<case>/<strategy>/<side>/tN.
 * Times in seconds, bytes in bytes; NAN when not stored. */
typedef struct rp_rt_row {
    int64_t job_id;
    const char *case_name, *strategy, *side, *arch;
    const char *family; /* the case without "-s<S>": one line against S */
    int64_t S;          /* jobs.draws */
    double median, p99, bound, mem_bound, compute_bound, ratio, throughput, load_warm,
        peak_rss;
} rp_rt_row;

typedef struct rp_runtime {
    int64_t run_id; /* 0: the database holds no bench-runtime run */
    size_t run;     /* index into rp_db.runs */
    rp_rt_row *rows; /* (n) by arch, family, S, side, strategy; the machine job left out */
    size_t n;
    double bandwidth, peak_flops; /* the machine job's read bandwidth (bytes/s), peak flops/s */
    rp_arena arena;
} rp_runtime;

/* The latest selected bench-runtime run, else the latest finished one.
 * With none, EB_OK and run_id 0. Free with rp_runtime_free. */
eb_status rp_runtime_load(rp_db *d, rp_runtime *out, eb_error *err);
void rp_runtime_free(rp_runtime *rt);
/* The runtime table as an HTML <section id="runtime"> and as a Markdown
 * section (rt->n > 0). */
void rp_runtime_html(const rp_db *d, const rp_runtime *rt, FILE *fp);
void rp_runtime_markdown(const rp_db *d, const rp_runtime *rt, FILE *fp);

/* ---- gnuplot (gnuplot.c) -------------------------------------------- */

/* Runs `program NAME.gp` in dir for every written plot (concurrently),
 * stdin and stdout on /dev/null, stderr captured: a non-zero exit is an
 * error quoting stderr; stderr text after success goes to warnings. Then
 * sets the PDFs' /CreationDate to stamp (14 digits, YYYYMMDDhhmmss). */
eb_status rp_gnuplot_render(const char *program, const char *dir, rp_plot *plots, size_t n,
                            const char *stamp, eb_error *err);
/* s as a single-quoted gnuplot string (quotes doubled, newlines blanked). */
void rp_gp_string(FILE *fp, const char *s);
/* s as a double-quoted data-file field (double quotes become single). */
void rp_dat_string(FILE *fp, const char *s);
/* Rewrites "/CreationDate (D:<14 digits>" in a PDF to stamp, in place of
 * the same length, so the byte offsets of the xref table stay valid. */
eb_status rp_pdf_set_date(const char *path, const char *stamp, eb_error *err);

/* ---- files (report.c) ----------------------------------------------- */

/* dir/name into out (cap bytes); EB_ERR_ARG when it does not fit. */
eb_status rp_path(char *out, size_t cap, const char *dir, const char *name, eb_error *err);
/* Opens a temporary file for dir/name (commit with eb_tmpfile_commit). */
eb_status rp_out_open(eb_tmpfile *t, const char *dir, const char *name, eb_error *err);

#endif /* EB_REPORT_INTERNAL_H */
