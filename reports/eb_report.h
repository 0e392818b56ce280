/* eb_report.h: `edgebayes report`, the render stage. It reads the results
 * database (results/schema.sql, read-only) and writes a directory an
 * author can publish or restyle:
 *
 *   OUT/index.html      self-contained page: provenance, the multi-facet
 *                       table, every plot, links to everything below
 *   OUT/tables.md       the multi-facet table as Markdown
 *   OUT/tables.tex      ... as a LaTeX booktabs table
 *   OUT/plots/NAME.gp   one gnuplot script per plot; `gnuplot NAME.gp` in
 *                       OUT/plots rewrites NAME.png, NAME.svg, NAME.pdf
 *   OUT/plots/NAME.dat  the plot's data, gnuplot text format
 *
 * Reports never write to the database and never recompute from bundles.
 * The same database gives the same files: everything is sorted and the
 * only dates written are those stored in the database. docs/reports.md
 * lists the plots, the rows each reads and the table's columns. */
#ifndef EB_REPORT_H
#define EB_REPORT_H

#include <stddef.h>

#include "common/eb_status.h"

/* Highest results schema version (PRAGMA user_version) this reader knows;
 * a newer database is refused rather than misread. */
#define EB_REPORT_SCHEMA_VERSION 1

/* A zeroed struct (or a NULL pointer) gives every default. The report
 * only reads these; the caller keeps ownership. */
typedef struct eb_report_options {
    /* Runs for the table and the per-run plots. Each entry is a run id
     * (decimal digits), a run uuid, or a label (the latest run carrying
     * it, a finished one preferred). NULL or n_runs = 0: the latest
     * finished run. The history plot always reads every run. */
    const char *const *runs;
    size_t n_runs;
    /* Metrics of the history plot, as table column keys
     * (eb_report_column_key, e.g. "accuracy", "latency_p50").
     * NULL or n_history = 0: accuracy, nll, ece, ood_auroc_entropy,
     * latency_p50. */
    const char *const *history;
    size_t n_history;
    /* The gnuplot program: a path, or a name looked up on PATH.
     * NULL: "gnuplot". */
    const char *gnuplot;
    /* Heading of index.html. NULL: "edgebayes report". */
    const char *title;
} eb_report_options;

/* Writes the report of db_path into out_dir (created if missing; files of
 * an earlier report there are replaced, and plots this report skips are
 * removed). Every file is written to a temporary name and renamed, so a
 * reader never sees half a file; index.html is written last. Fails with
 * EB_ERR_NOTFOUND when the database or a requested run does not exist,
 * when the database holds no (finished) run, or when gnuplot cannot be
 * found; EB_ERR_UNSUPPORTED for a newer schema version; EB_ERR_FORMAT for
 * a file that is not a results database; EB_ERR_IO when gnuplot fails or
 * a file cannot be written. A plot whose data is absent is skipped with a
 * note on the page, not an error. */
eb_status eb_report_write(const char *db_path, const char *out_dir,
                          const eb_report_options *opt, eb_error *err);

/* The multi-facet table's columns, in order: i < eb_report_column_count()
 * gives a stable key ("accuracy", "nll", ...) and its heading. Static
 * strings; never NULL for a valid i, NULL otherwise. */
size_t eb_report_column_count(void);
const char *eb_report_column_key(size_t i);
const char *eb_report_column_heading(size_t i);

#endif /* EB_REPORT_H */
