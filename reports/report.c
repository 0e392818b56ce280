/* report.c: eb_report_write, the assembly of a report: read the database
 * (query.c), build the table (tables.c), write the plots' data and
 * scripts (plots.c), render them (gnuplot.c), then write tables.md,
 * tables.tex and, last, index.html, which links everything.
 *
 * Order matters twice. The database is closed (its read transaction
 * ended) before gnuplot runs, so a writer waiting on the file is held up
 * for the reads only. index.html is written last, so its presence means
 * the report is complete.
 *
 * Numbers are printed under the "C" locale (uselocale, this thread only):
 * gnuplot's data files and the tables need '.' as the decimal point
 * whatever locale the caller set. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "reports/report_internal.h"

eb_status rp_path(char *out, size_t cap, const char *dir, const char *name, eb_error *err)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return eb_error_set(err, EB_ERR_ARG, "path '%s/%s' is too long", dir, name);
    return EB_OK;
}

eb_status rp_out_open(eb_tmpfile *t, const char *dir, const char *name, eb_error *err)
{
    char path[4096];
    eb_status s = rp_path(path, sizeof path, dir, name, err);
    if (s == EB_OK)
        s = eb_tmpfile_open(t, path, err);
    if (s != EB_OK)
        memset(t, 0, sizeof *t); /* nothing of ours to remove */
    return s;
}

/* ---- provenance the page shows ------------------------------------- */

typedef struct kv3 {
    const char *a, *b, *c, *d;
    int64_t run_id;
    double bytes;
} kv3;

typedef struct extras {
    kv3 *datasets; /* run_id, a = role, b = name, c = sha256, bytes */
    size_t n_datasets;
    kv3 *conventions; /* a = id, b = description */
    size_t n_conventions;
    rp_arena arena;
} extras;

static eb_status read_rows(rp_db *d, extras *x, const char *sql, int datasets, eb_error *err)
{
    sqlite3_stmt *st;
    kv3 *rows = NULL;
    size_t n = 0, cap = 0;
    const char *order =
        datasets ? ") ORDER BY ra.run_id, ra.role, a.name, a.sha256" : ") ORDER BY c.id";
    size_t ql = strlen(sql) + strlen(d->sel_ids) + strlen(order) + 1;
    char *q;
    eb_status s;

    q = eb_malloc(ql);
    if (!q)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a query");
    snprintf(q, ql, "%s%s%s", sql, d->sel_ids, order);
    s = rp_prepare(d, q, &st, err);
    eb_free(q);
    if (s != EB_OK)
        return s;
    for (;;) {
        int rc = rp_step(d, st, err);
        kv3 *r;
        if (rc == SQLITE_DONE)
            break;
        if (rc < 0) {
            s = d->step_status;
            goto fail;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            kv3 *nr = rp_arena_alloc(&x->arena, nc * sizeof *nr);
            if (!nr)
                goto nomem;
            if (n)
                memcpy(nr, rows, n * sizeof *nr);
            rows = nr;
            cap = nc;
        }
        r = &rows[n++];
        memset(r, 0, sizeof *r);
        if (datasets) {
            r->run_id = sqlite3_column_int64(st, 0);
            r->bytes = rp_real(st, 4);
            if (rp_arena_dup(&x->arena, rp_text(st, 1), &r->a) ||
                rp_arena_dup(&x->arena, rp_text(st, 2), &r->b) ||
                rp_arena_dup(&x->arena, rp_text(st, 3), &r->c))
                goto nomem;
        } else if (rp_arena_dup(&x->arena, rp_text(st, 0), &r->a) ||
                   rp_arena_dup(&x->arena, rp_text(st, 1), &r->b)) {
            goto nomem;
        }
    }
    sqlite3_finalize(st);
    if (datasets) {
        x->datasets = rows;
        x->n_datasets = n;
    } else {
        x->conventions = rows;
        x->n_conventions = n;
    }
    return EB_OK;
nomem:
    s = eb_error_set(err, EB_ERR_NOMEM, "out of memory reading '%s'", d->path);
fail:
    sqlite3_finalize(st);
    return s;
}

static eb_status read_extras(rp_db *d, extras *x, eb_error *err)
{
    eb_status s;
    memset(x, 0, sizeof *x);
    s = read_rows(d, x,
                  "SELECT ra.run_id, ra.role, a.name, a.sha256, a.bytes FROM run_artifacts ra"
                  " JOIN artifacts a ON a.id = ra.artifact_id"
                  " WHERE a.kind = 'dataset' AND ra.run_id IN (",
                  1, err);
    if (s == EB_OK)
        s = read_rows(d, x,
                      "SELECT DISTINCT c.id, c.description FROM conventions c"
                      " JOIN metrics m ON m.convention = c.id JOIN jobs j ON j.id = m.job_id"
                      " WHERE j.status = 'done' AND j.run_id IN (",
                      0, err);
    return s;
}

/* ---- index.html ---------------------------------------------------- */

static const char css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;"
    "max-width:80em;padding:0 1em;color:#222;line-height:1.4}\n"
    "h1{font-size:1.6em}h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ccc}\n"
    "table{border-collapse:collapse;font-size:0.85em}\n"
    "th,td{padding:0.25em 0.6em;border-bottom:1px solid #e4e4e4;vertical-align:top}\n"
    "thead th{border-bottom:2px solid #888;text-align:left}\n"
    "td.num,th.num{text-align:right;white-space:nowrap}\n"
    "td.best{background:#eef6ee}td.missing{color:#999}\n"
    "table.kv th{text-align:left;font-weight:600;white-space:nowrap}\n"
    ".scroll{overflow-x:auto}\n"
    "figure{margin:2em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}\n"
    "figcaption{font-size:0.9em;color:#444;max-width:60em}\n"
    ".note{color:#7a4b00;background:#fff8e5;padding:0.4em 0.8em;border-left:3px solid #e0a000}\n"
    "code{font-size:0.9em;word-break:break-all}\n"
    "nav ul{columns:2;font-size:0.9em}\n";

static void kv_row(FILE *fp, const char *key, const char *value, int code)
{
    fprintf(fp, "<tr><th scope=\"row\">%s</th><td>", key);
    if (code)
        fputs("<code>", fp);
    rp_html_escape(fp, value);
    if (code)
        fputs("</code>", fp);
    fputs("</td></tr>\n", fp);
}

static void write_provenance(FILE *fp, const rp_db *d, const extras *x, const char *db_name)
{
    char buf[64];
    fputs("<section id=\"provenance\">\n<h2>Provenance</h2>\n<p>Database <code>", fp);
    rp_html_escape(fp, db_name);
    fprintf(fp, "</code>: %zu run%s, %zu selected. Everything below is read from it.</p>\n",
            d->n_runs, d->n_runs == 1 ? "" : "s", d->n_selected);
    for (size_t i = 0; i < d->n_runs; i++) {
        const rp_run *r = &d->runs[i];
        if (!r->selected)
            continue;
        fprintf(fp, "<h3 id=\"run-%lld\">Run #%lld</h3>\n<table class=\"kv\">\n",
                (long long)r->id, (long long)r->id);
        kv_row(fp, "uuid", r->uuid, 1);
        kv_row(fp, "label", r->label ? r->label : "(none)", 0);
        kv_row(fp, "suite", r->suite, 0);
        kv_row(fp, "suite SHA-256", r->suite_sha256, 1);
        kv_row(fp, "shard", r->shard, 0);
        kv_row(fp, "started", r->started_at, 0);
        kv_row(fp, "finished", r->finished_at ? r->finished_at : "not finished", 0);
        kv_row(fp, "edgebayes version", r->version, 0);
        kv_row(fp, "git commit", r->git_commit, 1);
        kv_row(fp, "compiler", r->compiler, 0);
        kv_row(fp, "cflags", r->cflags, 1);
        kv_row(fp, "CPU", r->cpu_model, 0);
        snprintf(buf, sizeof buf, "%lld", (long long)r->cores);
        kv_row(fp, "cores", buf, 0);
        kv_row(fp, "host", r->host, 0);
        kv_row(fp, "libraries", r->libraries, 1);
        kv_row(fp, "environment", r->environment, 1);
        for (size_t k = 0; k < x->n_datasets; k++) {
            const kv3 *ds = &x->datasets[k];
            if (ds->run_id != r->id)
                continue;
            fputs("<tr><th scope=\"row\">dataset (", fp);
            rp_html_escape(fp, ds->a);
            fputs(")</th><td>", fp);
            rp_html_escape(fp, ds->b);
            if (isfinite(ds->bytes))
                fprintf(fp, ", %.0f bytes", ds->bytes);
            fputs(", SHA-256 <code>", fp);
            rp_html_escape(fp, ds->c);
            fputs("</code></td></tr>\n", fp);
        }
        fputs("</table>\n", fp);
    }
    fputs("</section>\n", fp);
}

static void write_results(FILE *fp, const rp_table *t)
{
    const rp_db *d = t->d;
    size_t failed = 0;

    fputs("<section id=\"results\">\n<h2>Results</h2>\n", fp);
    if (d->n_rows == 0) {
        fputs("<p class=\"note\">The selected runs have no finished job.</p>\n", fp);
    } else {
        fputs("<div class=\"scroll\">\n", fp);
        rp_table_html(t, fp);
        fputs("</div>\n", fp);
    }
    fputs("<p>One row per finished job; S is the number of posterior draws used for"
          " prediction. The best value of each column is in bold (&uarr; higher is better,"
          " &darr; lower, from <code>metrics.higher_is_better</code>; no mark where fewer"
          " than two jobs have a value or the rows disagree on the direction); &mdash;"
          " means not measured. Bracketed numbers are the stored confidence interval"
          " (latency p50: from order statistics). Hover a heading for the metric it"
          " reads. The same table as <a href=\"tables.md\">Markdown</a> and"
          " <a href=\"tables.tex\">LaTeX</a> (booktabs).</p>\n",
          fp);
    for (size_t j = 0; j < d->n_jobs; j++)
        if (!d->jobs[j].done && d->runs[d->jobs[j].run].selected)
            failed++;
    if (failed) {
        fprintf(fp, "<h3>Failed jobs (%zu)</h3>\n<ul>\n", failed);
        for (size_t j = 0; j < d->n_jobs; j++) {
            const rp_job *job = &d->jobs[j];
            if (job->done || !d->runs[job->run].selected)
                continue;
            fputs("<li><strong>", fp);
            rp_html_escape(fp, job->label);
            fputs("</strong>: ", fp);
            rp_html_escape(fp, job->error ? job->error : "(no message stored)");
            fputs("</li>\n", fp);
        }
        fputs("</ul>\n", fp);
    }
    fputs("</section>\n", fp);
}

static void write_plots(FILE *fp, const rp_plot *plots)
{
    fputs("<section id=\"plots\">\n<h2>Plots</h2>\n<p>Each plot is drawn by a gnuplot script"
          " kept beside its data in <code>plots/</code>: edit <code>NAME.gp</code> and run"
          " <code>gnuplot NAME.gp</code> in that directory to restyle it (it rewrites the PNG,"
          " SVG and PDF).</p>\n",
          fp);
    for (int i = 0; i < RP_N_PLOTS; i++) {
        const rp_plot *p = &plots[i];
        const char *n = p->name;
        fprintf(fp, "<figure id=\"plot-%s\">\n", n);
        if (!p->written) {
            fputs("<figcaption><strong>", fp);
            rp_html_escape(fp, p->title);
            fputs("</strong></figcaption>\n<p class=\"note\">", fp);
            rp_html_escape(fp, p->note);
            fputs("</p>\n</figure>\n", fp);
            continue;
        }
        fprintf(fp, "<img src=\"plots/%s.svg\" width=\"%d\" height=\"%d\" alt=\"", n, p->width,
                p->height);
        rp_html_escape(fp, p->title);
        fputs(": ", fp);
        rp_html_escape(fp, p->caption);
        fputs("\">\n<figcaption><strong>", fp);
        rp_html_escape(fp, p->title);
        fputs(".</strong> ", fp);
        rp_html_escape(fp, p->caption);
        fprintf(fp,
                " Files: <a href=\"plots/%s.pdf\">PDF</a>, <a href=\"plots/%s.png\">PNG</a>,"
                " <a href=\"plots/%s.svg\">SVG</a>, <a href=\"plots/%s.gp\">gnuplot script</a>,"
                " <a href=\"plots/%s.dat\">data</a>.</figcaption>\n",
                n, n, n, n, n);
        if (p->note[0]) {
            fputs("<p class=\"note\">", fp);
            rp_html_escape(fp, p->note);
            fputs("</p>\n", fp);
        }
        if (p->warnings) {
            fputs("<p class=\"note\">gnuplot warned: <code>", fp);
            rp_html_escape(fp, p->warnings);
            fputs("</code></p>\n", fp);
        }
        fputs("</figure>\n", fp);
    }
    fputs("</section>\n", fp);
}

static void write_conventions(FILE *fp, const extras *x)
{
    fputs("<section id=\"conventions\">\n<h2>Metric conventions</h2>\n", fp);
    if (x->n_conventions == 0) {
        fputs("<p>The selected jobs' metrics name no convention.</p>\n", fp);
    } else {
        fputs("<table class=\"kv\">\n", fp);
        for (size_t i = 0; i < x->n_conventions; i++) {
            fputs("<tr><th scope=\"row\"><code>", fp);
            rp_html_escape(fp, x->conventions[i].a);
            fputs("</code></th><td>", fp);
            rp_html_escape(fp, x->conventions[i].b);
            fputs("</td></tr>\n", fp);
        }
        fputs("</table>\n", fp);
    }
    fputs("</section>\n", fp);
}

static eb_status write_index(const char *out_dir, const char *title, const char *db_name,
                             const rp_table *t, const rp_plot *plots, const extras *x,
                             const rp_runtime *rt, eb_error *err)
{
    const rp_db *d = t->d;
    eb_tmpfile f;
    eb_status s = rp_out_open(&f, out_dir, "index.html", err);
    FILE *fp;

    if (s != EB_OK)
        return s;
    fp = f.fp;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          /* An empty icon: no request for /favicon.ico, no console error. */
          "<link rel=\"icon\" href=\"data:,\">\n<title>",
          fp);
    rp_html_escape(fp, title);
    fprintf(fp, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<header>\n<h1>", css);
    rp_html_escape(fp, title);
    fputs("</h1>\n<p>", fp);
    for (size_t i = 0, k = 0; i < d->n_runs; i++) {
        const rp_run *r = &d->runs[i];
        if (!r->selected)
            continue;
        fprintf(fp, "%s<a href=\"#run-%lld\">Run #%lld</a>", k++ ? "; " : "", (long long)r->id,
                (long long)r->id);
        fputs(" (suite ", fp);
        rp_html_escape(fp, r->suite);
        if (r->label) {
            fputs(", label ", fp);
            rp_html_escape(fp, r->label);
        }
        fputs(", started ", fp);
        rp_html_escape(fp, r->started_at);
        fputs(")", fp);
    }
    fprintf(fp, ". Written by edgebayes %s <code>report</code> from the results database.</p>\n"
                "<nav>\n<ul>\n<li><a href=\"#provenance\">Provenance</a></li>\n"
                "<li><a href=\"#results\">Results table</a></li>\n",
            EB_VERSION);
    if (rt->n)
        fputs("<li><a href=\"#runtime\">Runtime benchmark</a></li>\n", fp);
    for (int i = 0; i < RP_N_PLOTS; i++) {
        fprintf(fp, "<li><a href=\"#plot-%s\">", plots[i].name);
        rp_html_escape(fp, plots[i].title);
        fprintf(fp, "</a>%s</li>\n", plots[i].written ? "" : " (skipped)");
    }
    fputs("<li><a href=\"#conventions\">Metric conventions</a></li>\n</ul>\n</nav>\n"
          "</header>\n<main>\n",
          fp);
    write_provenance(fp, d, x, db_name);
    write_results(fp, t);
    if (rt->n)
        rp_runtime_html(d, rt, fp);
    write_plots(fp, plots);
    write_conventions(fp, x);
    fputs("</main>\n</body>\n</html>\n", fp);
    return eb_tmpfile_commit(&f, err);
}

static eb_status write_markdown(const char *out_dir, const rp_table *t, const rp_runtime *rt,
                                eb_error *err)
{
    const rp_db *d = t->d;
    eb_tmpfile f;
    eb_status s = rp_out_open(&f, out_dir, "tables.md", err);
    if (s != EB_OK)
        return s;
    fputs("# edgebayes results\n\n", f.fp);
    for (size_t i = 0, k = 0; i < d->n_runs; i++) {
        const rp_run *r = &d->runs[i];
        if (!r->selected)
            continue;
        fprintf(f.fp, "%sRun #%lld (suite ", k++ ? "; " : "", (long long)r->id);
        rp_md_escape(f.fp, r->suite);
        fputs(", started ", f.fp);
        rp_md_escape(f.fp, r->started_at);
        fputs(", commit ", f.fp);
        rp_md_escape(f.fp, r->git_commit);
        fputs(")", f.fp);
    }
    fputs(".\n\n", f.fp);
    if (d->n_rows)
        rp_table_markdown(t, f.fp);
    else
        fputs("The selected runs have no finished job.\n", f.fp);
    fputs("\nBest value per column in **bold** (\xE2\x86\x91 higher is better, \xE2\x86\x93"
          " lower); \xE2\x80\x94 = not measured; brackets: confidence interval.\n",
          f.fp);
    if (rt->n)
        rp_runtime_markdown(d, rt, f.fp);
    return eb_tmpfile_commit(&f, err);
}

static eb_status write_latex(const char *out_dir, const rp_table *t, eb_error *err)
{
    const rp_db *d = t->d;
    eb_tmpfile f;
    eb_status s = rp_out_open(&f, out_dir, "tables.tex", err);
    if (s != EB_OK)
        return s;
    fputs("% tables.tex: the multi-facet table of `edgebayes report`.\n"
          "% Needs \\usepackage{booktabs} and \\usepackage{graphicx} (for \\resizebox).\n"
          "\\begin{table*}[t]\n\\centering\n\\caption{",
          f.fp);
    for (size_t i = 0, k = 0; i < d->n_runs; i++) {
        const rp_run *r = &d->runs[i];
        if (!r->selected)
            continue;
        fprintf(f.fp, "%sRun \\#%lld (suite ", k++ ? "; " : "", (long long)r->id);
        rp_latex_escape(f.fp, r->suite);
        fputs(")", f.fp);
    }
    fputs(". Best value per column in bold; --- = not measured; brackets: confidence"
          " interval.}\n\\label{tab:edgebayes-results}\n\\resizebox{\\textwidth}{!}{%\n",
          f.fp);
    rp_table_latex(t, f.fp);
    fputs("}\n\\end{table*}\n", f.fp);
    return eb_tmpfile_commit(&f, err);
}

/* Removes an earlier report's files of a plot this report skips, so the
 * directory shows only this report. */
static void remove_stale(const char *plots_dir, const rp_plot *p)
{
    static const char *const ext[] = {"gp", "dat", "png", "svg", "pdf"};
    for (size_t e = 0; e < sizeof ext / sizeof ext[0]; e++) {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s.%s", plots_dir, p->name, ext[e]);
        if (n > 0 && (size_t)n < sizeof path)
            (void)unlink(path);
    }
}

/* The 14 digits of an ISO 8601 time, "19700101000000" when malformed. */
static void stamp_from(char out[15], const char *iso)
{
    size_t k = 0;
    for (const char *p = iso; p && *p && k < 14; p++)
        if (*p >= '0' && *p <= '9')
            out[k++] = *p;
    if (k < 14)
        memcpy(out, "19700101000000", 14);
    out[14] = '\0';
}

static const size_t default_history[] = {RP_COL_ACCURACY, RP_COL_NLL, RP_COL_ECE,
                                         RP_COL_OOD_ENTROPY, RP_COL_LATENCY};

static eb_status resolve_history(const eb_report_options *opt, size_t *out, size_t *n,
                                 eb_error *err)
{
    if (!opt || !opt->history || opt->n_history == 0) {
        *n = sizeof default_history / sizeof default_history[0];
        memcpy(out, default_history, sizeof default_history);
        return EB_OK;
    }
    if (opt->n_history > RP_N_COLUMNS)
        return eb_error_set(err, EB_ERR_ARG, "%zu history metrics given; at most %d",
                            opt->n_history, RP_N_COLUMNS);
    for (size_t i = 0; i < opt->n_history; i++) {
        size_t c;
        for (c = 0; c < RP_N_COLUMNS; c++)
            if (opt->history[i] && strcmp(opt->history[i], rp_columns[c].key) == 0)
                break;
        if (c == RP_N_COLUMNS) {
            char known[512] = "";
            for (size_t k = 0; k < RP_N_COLUMNS; k++) {
                strncat(known, rp_columns[k].key, sizeof known - strlen(known) - 1);
                if (k + 1 < RP_N_COLUMNS)
                    strncat(known, ", ", sizeof known - strlen(known) - 1);
            }
            return eb_error_set(err, EB_ERR_ARG,
                                "history metric '%s' is not a table column; known: %s",
                                opt->history[i] ? opt->history[i] : "(null)", known);
        }
        out[i] = c;
    }
    *n = opt->n_history;
    return EB_OK;
}

eb_status eb_report_write(const char *db_path, const char *out_dir,
                          const eb_report_options *opt, eb_error *err)
{
    rp_db d;
    rp_table t;
    rp_plot plots[RP_N_PLOTS];
    extras x;
    rp_runtime rt;
    size_t history[RP_N_COLUMNS], n_history = 0;
    char plots_dir[4096], stamp[15];
    const char *db_name, *title, *gnuplot;
    locale_t c_locale, old_locale;
    eb_status s;

    memset(&d, 0, sizeof d);
    memset(&t, 0, sizeof t);
    memset(plots, 0, sizeof plots);
    memset(&x, 0, sizeof x);
    memset(&rt, 0, sizeof rt);
    if (!db_path || !db_path[0])
        return eb_error_set(err, EB_ERR_ARG, "no results database was given (--db)");
    if (!out_dir || !out_dir[0])
        return eb_error_set(err, EB_ERR_ARG, "no output directory was given (-o)");
    if (opt && opt->n_runs && !opt->runs)
        return eb_error_set(err, EB_ERR_ARG, "%zu runs were selected but none given",
                            opt->n_runs);
    if ((s = resolve_history(opt, history, &n_history, err)) != EB_OK)
        return s;
    if ((s = rp_path(plots_dir, sizeof plots_dir, out_dir, "plots", err)) != EB_OK)
        return s;
    title = opt && opt->title && opt->title[0] ? opt->title : "edgebayes report";
    gnuplot = opt && opt->gnuplot && opt->gnuplot[0] ? opt->gnuplot : "gnuplot";
    db_name = strrchr(db_path, '/') ? strrchr(db_path, '/') + 1 : db_path;

    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0)
        return eb_error_set(err, EB_ERR_NOMEM, "cannot create the C locale: %s",
                            strerror(errno));
    old_locale = uselocale(c_locale);

    if ((s = rp_db_open(&d, db_path, err)) != EB_OK)
        goto out;
    if ((s = rp_db_select(&d, opt ? opt->runs : NULL, opt ? opt->n_runs : 0, err)) != EB_OK ||
        (s = read_extras(&d, &x, err)) != EB_OK || (s = rp_table_build(&t, &d, err)) != EB_OK)
        goto out;
    if ((s = eb_mkdirs(plots_dir, err)) != EB_OK)
        goto out;
    if ((s = rp_plots_write(plots, &t, plots_dir, history, n_history, err)) != EB_OK ||
        (s = rp_runtime_load(&d, &rt, err)) != EB_OK)
        goto out;
    /* Everything is read: end the read transaction before gnuplot runs. */
    sqlite3_exec(d.db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(d.db);
    d.db = NULL;
    for (int i = 0; i < RP_N_PLOTS; i++)
        if (!plots[i].written)
            remove_stale(plots_dir, &plots[i]);
    stamp_from(stamp, d.runs[d.latest].started_at);
    if ((s = rp_gnuplot_render(gnuplot, plots_dir, plots, RP_N_PLOTS, stamp, err)) != EB_OK)
        goto out;
    if ((s = write_markdown(out_dir, &t, &rt, err)) != EB_OK ||
        (s = write_latex(out_dir, &t, err)) != EB_OK ||
        (s = write_index(out_dir, title, db_name, &t, plots, &x, &rt, err)) != EB_OK)
        goto out;
out:
    rp_plots_free(plots);
    rp_runtime_free(&rt);
    rp_table_free(&t);
    rp_arena_free(&x.arena);
    rp_db_close(&d);
    uselocale(old_locale);
    freelocale(c_locale);
    return s;
}
