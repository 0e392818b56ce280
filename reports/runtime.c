/* runtime.c: the runtime benchmark's rows (bench/runtime.c, suite
 * 'bench-runtime') as the report shows them: the `runtime` plot's data
 * and the runtime table (HTML and Markdown).
 *
 * Which run: the latest selected run of that suite, else the latest
 * finished one in the database, so a report of a quality suite still
 * shows the last runtime measurement. Its jobs are named
 * runtime/<case>/<strategy or variant>/<side>/t<threads>; the metrics
 * read are listed in docs/reports.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "reports/report_internal.h"

/* "mlp-s100-int8" -> "mlp-int8": the case without its "-s<digits>" part,
 * so one family's cases line up against S. */
static void family_of(const char *c, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = c; *p && n + 1 < cap;) {
        if (p[0] == '-' && p[1] == 's' && p[2] >= '0' && p[2] <= '9') {
            const char *q = p + 2;
            while (*q >= '0' && *q <= '9')
                q++;
            if (*q == '\0' || *q == '-') {
                p = q;
                continue;
            }
        }
        out[n++] = *p++;
    }
    out[n] = '\0';
}

static int row_cmp(const void *a, const void *b)
{
    const rp_rt_row *x = a, *y = b;
    int c;
    if ((c = strcmp(x->arch, y->arch)) || (c = strcmp(x->family, y->family)))
        return c;
    if (x->S != y->S)
        return x->S < y->S ? -1 : 1;
    /* edgebayes before pytorch, then by strategy */
    if ((c = strcmp(x->side, y->side)))
        return c;
    return strcmp(x->strategy, y->strategy);
}

/* Splits "runtime/a/b/c[/tN]" into its parts in the arena; -1 when the
 * name is not a runtime job's, -2 on out of memory. */
static int split_name(rp_arena *a, const char *name, const char **parts /* (3) */)
{
    const char *p;
    if (strncmp(name, "runtime/", 8))
        return -1;
    p = name + 8;
    for (int i = 0; i < 3; i++) {
        size_t n = strcspn(p, "/");
        char *s;
        if (n == 0)
            return -1;
        s = rp_arena_alloc(a, n + 1);
        if (!s)
            return -2;
        memcpy(s, p, n);
        s[n] = '\0';
        parts[i] = s;
        p += n;
        if (i < 2) {
            if (*p != '/')
                return -1;
            p++;
        }
    }
    return 0;
}

eb_status rp_runtime_load(rp_db *d, rp_runtime *out, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    long pick = -1;
    size_t cap = 0;
    eb_status s = EB_OK;
    int rc;

    memset(out, 0, sizeof *out);
    out->bandwidth = out->peak_flops = NAN;
    for (size_t i = d->n_runs; i-- > 0 && pick < 0;)
        if (d->runs[i].selected && !strcmp(d->runs[i].suite, "bench-runtime"))
            pick = (long)i;
    for (size_t i = d->n_runs; i-- > 0 && pick < 0;)
        if (d->runs[i].finished_at && !strcmp(d->runs[i].suite, "bench-runtime"))
            pick = (long)i;
    if (pick < 0)
        return EB_OK;
    out->run = (size_t)pick;
    out->run_id = d->runs[pick].id;
    for (size_t j = 0; j < d->n_jobs; j++) {
        const rp_job *job = &d->jobs[j];
        const char *parts[3];
        char fam[64];
        rp_rt_row *r;
        if (job->run_id != out->run_id || !job->done)
            continue;
        rc = split_name(&out->arena, job->name, parts);
        if (rc == -1)
            continue;
        if (rc == -2) {
            s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the runtime table");
            goto fail;
        }
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 32;
            rp_rt_row *g = eb_realloc(out->rows, nc * sizeof *g);
            if (!g) {
                s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the runtime table");
                goto fail;
            }
            out->rows = g;
            cap = nc;
        }
        r = &out->rows[out->n];
        memset(r, 0, sizeof *r);
        r->job_id = job->id;
        r->case_name = parts[0];
        r->strategy = parts[1];
        r->side = parts[2];
        r->arch = job->arch;
        r->S = job->draws;
        family_of(parts[0], fam, sizeof fam);
        if (rp_arena_dup(&out->arena, fam, &r->family)) {
            s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the runtime table");
            goto fail;
        }
        r->median = r->p99 = r->bound = r->mem_bound = r->compute_bound = r->ratio = NAN;
        r->throughput = r->load_warm = r->peak_rss = NAN;
        out->n++;
    }
    if ((s = rp_prepare(d,
                        "SELECT m.job_id, m.facet, m.name, m.context, m.value FROM metrics m"
                        " JOIN jobs j ON j.id = m.job_id WHERE j.run_id = ?1"
                        " ORDER BY m.job_id, m.facet, m.name, m.context",
                        &st, err)) != EB_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, out->run_id);
    while ((rc = rp_step(d, st, err)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        const char *facet = rp_text(st, 1), *name = rp_text(st, 2), *ctx = rp_text(st, 3);
        double v = rp_real(st, 4);
        rp_rt_row *r = NULL;
        for (size_t i = 0; i < out->n && !r; i++)
            if (out->rows[i].job_id == id)
                r = &out->rows[i];
        if (!r)
            continue;
#define IS(f, n, c) (!strcmp(facet, f) && !strcmp(name, n) && !strcmp(ctx, c))
        if (IS("latency", "p50", ""))
            r->median = v;
        else if (IS("latency", "p99", ""))
            r->p99 = v;
        else if (IS("roofline", "bound_seconds", ""))
            r->bound = v;
        else if (IS("roofline", "memory_bound_seconds", ""))
            r->mem_bound = v;
        else if (IS("roofline", "compute_bound_seconds", ""))
            r->compute_bound = v;
        else if (IS("roofline", "ratio_to_bound", ""))
            r->ratio = v;
        else if (IS("throughput", "inputs_per_second", ""))
            r->throughput = v;
        else if (IS("load", "seconds", "cache=warm") ||
                 (IS("load", "seconds", "") && isnan(r->load_warm)))
            r->load_warm = v;
        else if (IS("memory", "peak_rss", "phase=predict") ||
                 (IS("memory", "peak_rss", "") && isnan(r->peak_rss)))
            r->peak_rss = v;
        else if (IS("machine", "read_bandwidth", ""))
            out->bandwidth = v;
        else if (IS("machine", "peak_flops", ""))
            out->peak_flops = v;
#undef IS
    }
    sqlite3_finalize(st);
    if (rc < 0) {
        s = d->step_status;
        goto fail;
    }
    /* the machine job is provenance, not a row */
    for (size_t i = 0; i < out->n;) {
        if (!strcmp(out->rows[i].case_name, "machine")) {
            out->rows[i] = out->rows[--out->n];
            continue;
        }
        i++;
    }
    qsort(out->rows, out->n, sizeof *out->rows, row_cmp);
    return EB_OK;
fail:
    rp_runtime_free(out);
    return s;
}

void rp_runtime_free(rp_runtime *rt)
{
    eb_free(rt->rows);
    rp_arena_free(&rt->arena);
    memset(rt, 0, sizeof *rt);
}

/* ---- the table ------------------------------------------------------- */

static const char *binding(const rp_rt_row *r)
{
    if (isnan(r->mem_bound) || isnan(r->compute_bound))
        return "";
    return r->mem_bound >= r->compute_bound ? "memory" : "compute";
}

static void cell_ms(FILE *fp, double v, const char *pre, const char *post)
{
    fputs(pre, fp);
    if (isfinite(v))
        fprintf(fp, "%.4g", v * 1e3);
    else
        fputs("\xE2\x80\x94", fp);
    fputs(post, fp);
}

static void cell_num(FILE *fp, double v, const char *fmt, double div, const char *pre,
                     const char *post)
{
    fputs(pre, fp);
    if (isfinite(v))
        fprintf(fp, fmt, v / div);
    else
        fputs("\xE2\x80\x94", fp);
    fputs(post, fp);
}

static void run_line(const rp_db *d, const rp_runtime *rt, char *buf, size_t cap)
{
    const rp_run *r = &d->runs[rt->run];
    snprintf(buf, cap, "run #%lld (suite bench-runtime, started %s)", (long long)rt->run_id,
             r->started_at);
}

void rp_runtime_html(const rp_db *d, const rp_runtime *rt, FILE *fp)
{
    char line[256];
    run_line(d, rt, line, sizeof line);
    fputs("<section id=\"runtime\">\n<h2>Runtime benchmark</h2>\n<p>From ", fp);
    rp_html_escape(fp, line);
    fputs(": single-input latency of each case under each CPU strategy (side edgebayes)"
          " and each PyTorch variant (side pytorch), against the roofline bound",
          fp);
    if (isfinite(rt->bandwidth) && isfinite(rt->peak_flops))
        fprintf(fp, " (read bandwidth %.3g GB/s, peak %.3g GFLOP/s)", rt->bandwidth / 1e9,
                rt->peak_flops / 1e9);
    fputs(". Ratio = median / bound.</p>\n<div class=\"scroll\">\n<table>\n<thead><tr>"
          "<th>Case</th><th>S</th><th>Side</th><th>Strategy</th><th>Median (ms)</th>"
          "<th>p99 (ms)</th><th>Bound (ms)</th><th>Binding</th><th>Ratio</th>"
          "<th>Throughput (inputs/s)</th><th>Load warm (ms)</th><th>Peak RSS (MiB)</th>"
          "</tr></thead>\n<tbody>\n",
          fp);
    for (size_t i = 0; i < rt->n; i++) {
        const rp_rt_row *r = &rt->rows[i];
        if (!isfinite(r->median))
            continue; /* a load probe's row: no latency to show here */
        fputs("<tr><td>", fp);
        rp_html_escape(fp, r->case_name);
        fprintf(fp, "</td><td>%lld</td><td>", (long long)r->S);
        rp_html_escape(fp, r->side);
        fputs("</td><td>", fp);
        rp_html_escape(fp, r->strategy);
        fputs("</td>", fp);
        cell_ms(fp, r->median, "<td>", "</td>");
        cell_ms(fp, r->p99, "<td>", "</td>");
        cell_ms(fp, r->bound, "<td>", "</td>");
        fprintf(fp, "<td>%s</td>", binding(r));
        cell_num(fp, r->ratio, "%.3g", 1, "<td>", "</td>");
        cell_num(fp, r->throughput, "%.0f", 1, "<td>", "</td>");
        cell_ms(fp, r->load_warm, "<td>", "</td>");
        cell_num(fp, r->peak_rss, "%.1f", 1048576.0, "<td>", "</td>");
        fputs("</tr>\n", fp);
    }
    fputs("</tbody>\n</table>\n</div>\n</section>\n", fp);
}

void rp_runtime_markdown(const rp_db *d, const rp_runtime *rt, FILE *fp)
{
    char line[256];
    run_line(d, rt, line, sizeof line);
    fputs("\n## Runtime benchmark\n\nFrom ", fp);
    rp_md_escape(fp, line);
    fputs(". Ratio = median / roofline bound.\n\n"
          "| Case | S | Side | Strategy | Median (ms) | p99 (ms) | Bound (ms) | Binding | Ratio"
          " | Throughput (inputs/s) | Load warm (ms) | Peak RSS (MiB) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
          fp);
    for (size_t i = 0; i < rt->n; i++) {
        const rp_rt_row *r = &rt->rows[i];
        if (!isfinite(r->median))
            continue; /* a load probe's row: no latency to show here */
        fputs("| ", fp);
        rp_md_escape(fp, r->case_name);
        fprintf(fp, " | %lld | ", (long long)r->S);
        rp_md_escape(fp, r->side);
        fputs(" | ", fp);
        rp_md_escape(fp, r->strategy);
        cell_ms(fp, r->median, " | ", "");
        cell_ms(fp, r->p99, " | ", "");
        cell_ms(fp, r->bound, " | ", "");
        fprintf(fp, " | %s", binding(r));
        cell_num(fp, r->ratio, "%.3g", 1, " | ", "");
        cell_num(fp, r->throughput, "%.0f", 1, " | ", "");
        cell_ms(fp, r->load_warm, " | ", "");
        cell_num(fp, r->peak_rss, "%.1f", 1048576.0, " | ", " |\n");
    }
}
