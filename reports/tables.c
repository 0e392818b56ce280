/* tables.c: the multi-facet table. Rows are the done jobs of the selected
 * runs (method, chain, arch, seed, device, S); columns are the facets
 * below, each read from one (facet, name, context) of the metrics table
 * (docs/reports.md lists them). The best value per column is marked using
 * the rows' metrics.higher_is_better; missing values are an em dash. The
 * same cells are written as HTML, Markdown and LaTeX (booktabs), so the
 * three can never disagree. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "reports/report_internal.h"

/* The names the report reads. They follow results/schema.sql's comments
 * (facets, 'score=entropy', 'attack=pgd,eps=0.1',
 * 'corruption=rotation,severity=3', 'phase=predict'); the store must
 * write the same names for a column to fill. */
const rp_column rp_columns[RP_N_COLUMNS] = {
    [RP_COL_ACCURACY] = {"accuracy", "Accuracy", "quality", "accuracy", "", RP_UNIT_RATIO,
                         RP_AGG_EXACT, 0},
    [RP_COL_NLL] = {"nll", "NLL", "quality", "nll", "", RP_UNIT_PLAIN, RP_AGG_EXACT, 0},
    [RP_COL_ECE] = {"ece", "ECE", "calibration", "ece", "", RP_UNIT_RATIO, RP_AGG_EXACT, 0},
    [RP_COL_BRIER] = {"brier", "Brier", "quality", "brier", "", RP_UNIT_PLAIN, RP_AGG_EXACT, 0},
    [RP_COL_OOD_ENTROPY] = {"ood_auroc_entropy", "OOD AUROC (entropy)", "ood", "auroc",
                            "score=entropy", RP_UNIT_RATIO, RP_AGG_EXACT, 0},
    [RP_COL_OOD_MI] = {"ood_auroc_mi", "OOD AUROC (MI)", "ood", "auroc", "score=mi",
                       RP_UNIT_RATIO, RP_AGG_EXACT, 0},
    [RP_COL_MISCLASSIFICATION] = {"misclassification_auroc", "Misclassification AUROC",
                                  "misclassification", "auroc", "score=entropy", RP_UNIT_RATIO,
                                  RP_AGG_EXACT, 0},
    [RP_COL_PGD] = {"pgd_accuracy", "PGD accuracy (eps 0.1)", "adversarial", "accuracy",
                    "attack=pgd,eps=0.1", RP_UNIT_RATIO, RP_AGG_EXACT, 0},
    [RP_COL_SHIFT] = {"shift_accuracy", "Shift accuracy", "shift", "accuracy", NULL,
                      RP_UNIT_RATIO, RP_AGG_SHIFT_MEAN, 0},
    [RP_COL_LATENCY] = {"latency_p50", "Latency p50", "latency", "p50", "", RP_UNIT_SECONDS,
                        RP_AGG_EXACT, 0},
    [RP_COL_THROUGHPUT] = {"throughput", "Throughput", "throughput", "inputs_per_second", "",
                           RP_UNIT_RATE, RP_AGG_EXACT, 0},
    [RP_COL_LOAD_COLD] = {"load_cold", "Load cold", "load", "seconds", "cache=cold",
                          RP_UNIT_SECONDS, RP_AGG_EXACT, 0},
    [RP_COL_LOAD_WARM] = {"load_warm", "Load warm", "load", "seconds", "cache=warm",
                          RP_UNIT_SECONDS, RP_AGG_EXACT, 0},
    [RP_COL_PEAK_RSS] = {"peak_rss", "Peak RSS", "memory", "peak_rss", "phase=predict",
                         RP_UNIT_BYTES, RP_AGG_EXACT, 0},
    [RP_COL_MODEL_BYTES] = {"model_bytes", "Model in memory", "memory", "model_bytes", "",
                            RP_UNIT_BYTES, RP_AGG_EXACT, 0},
    [RP_COL_BUNDLE_BYTES] = {"bundle_bytes", "Bundle on disk", "storage", "bundle_bytes", "",
                             RP_UNIT_BYTES, RP_AGG_EXACT, 1},
    [RP_COL_TRAIN_SECONDS] = {"train_seconds", "Training time", "training", "seconds", "",
                              RP_UNIT_SECONDS, RP_AGG_EXACT, 0},
    [RP_COL_DISAGREEMENT] = {"disagreement", "Member disagreement", "diagnostics",
                             "disagreement", "", RP_UNIT_RATIO, RP_AGG_EXACT, 0},
    [RP_COL_RHAT] = {"rhat_max", "R-hat (max)", "diagnostics", "rhat_max", "", RP_UNIT_PLAIN,
                     RP_AGG_EXACT, 0},
    [RP_COL_FIDELITY] = {"fidelity_agreement", "Fidelity (top-1 agreement)", "fidelity",
                         "agreement", "", RP_UNIT_RATIO, RP_AGG_EXACT, 0},
    [RP_COL_SPARSITY] = {"sparsity", "Sparsity", "compression", "sparsity", "", RP_UNIT_RATIO,
                         RP_AGG_EXACT, 0},
};

size_t eb_report_column_count(void)
{
    return RP_N_COLUMNS;
}

const char *eb_report_column_key(size_t i)
{
    return i < RP_N_COLUMNS ? rp_columns[i].key : NULL;
}

const char *eb_report_column_heading(size_t i)
{
    return i < RP_N_COLUMNS ? rp_columns[i].heading : NULL;
}

/* ---- building ------------------------------------------------------- */

size_t rp_mark_best(unsigned char *best, const rp_value *const *vals, size_t n, int dir)
{
    size_t present = 0, marked = 0;
    double b = 0;

    for (size_t i = 0; i < n; i++)
        best[i] = 0;
    if (dir != 0 && dir != 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!vals[i]->has)
            continue;
        if (present == 0 || (dir ? vals[i]->v > b : vals[i]->v < b))
            b = vals[i]->v;
        present++;
    }
    if (present < 2) /* one value is best of nothing */
        return 0;
    for (size_t i = 0; i < n; i++)
        if (vals[i]->has && vals[i]->v == b) {
            best[i] = 1;
            marked++;
        }
    return marked;
}

const rp_value *rp_table_value(const rp_table *t, size_t col, size_t job)
{
    return &t->vals[col * t->d->n_jobs + job];
}

eb_status rp_table_build(rp_table *t, rp_db *d, eb_error *err)
{
    const rp_value **ptrs = NULL;
    size_t nj = d->n_jobs ? d->n_jobs : 1, nr = d->n_rows ? d->n_rows : 1;
    eb_status s = EB_OK;

    memset(t, 0, sizeof *t);
    t->d = d;
    t->multi_run = d->n_selected > 1;
    t->vals = eb_calloc(RP_N_COLUMNS * nj, sizeof *t->vals);
    t->best = eb_calloc(RP_N_COLUMNS * nr, 1);
    ptrs = eb_malloc(nr * sizeof *ptrs);
    if (!t->vals || !t->best || !ptrs) {
        s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the table of %zu jobs",
                         d->n_rows);
        goto out;
    }
    for (size_t c = 0; c < RP_N_COLUMNS; c++) {
        int dir = -1, mixed = 0;
        s = rp_column_load(d, c, d->row_mask, &t->vals[c * d->n_jobs], &t->variant[c], err);
        if (s != EB_OK) {
            eb_error_prefix(err, "column '%s': ", rp_columns[c].key);
            goto out;
        }
        for (size_t r = 0; r < d->n_rows; r++) {
            const rp_value *v = rp_table_value(t, c, d->rows[r]);
            ptrs[r] = v;
            if (v->hib < 0)
                continue;
            if (dir < 0)
                dir = v->hib;
            else if (dir != v->hib)
                mixed = 1;
        }
        /* Rows that disagree on the direction cannot have a best. */
        t->dir[c] = mixed ? -1 : dir;
        rp_mark_best(&t->best[c * nr], ptrs, d->n_rows, t->dir[c]);
    }
out:
    eb_free(ptrs);
    if (s != EB_OK)
        rp_table_free(t);
    return s;
}

void rp_table_free(rp_table *t)
{
    eb_free(t->vals);
    eb_free(t->best);
    t->vals = NULL;
    t->best = NULL;
}

/* ---- formatting ------------------------------------------------------ */

typedef struct colfmt {
    double div;       /* shown value = stored value / div */
    int decimals;
    const char *unit; /* NULL for ratios and plain numbers */
} colfmt;

/* Decimals that give about three significant digits to the largest value. */
static int decimals_for(double max)
{
    int digits, d;
    if (!(max > 0) || !isfinite(max))
        return 2;
    digits = (int)floor(log10(max)) + 1;
    d = 3 - digits;
    return d < 0 ? 0 : d > 4 ? 4 : d;
}

/* One unit and precision per column, chosen from its largest value, so
 * a column reads as one scale. */
static colfmt column_format(const rp_table *t, size_t col)
{
    const rp_db *d = t->d;
    colfmt f = {1.0, 4, NULL};
    double max = 0;

    for (size_t r = 0; r < d->n_rows; r++) {
        const rp_value *v = rp_table_value(t, col, d->rows[r]);
        if (v->has && fabs(v->v) > max)
            max = fabs(v->v);
    }
    switch (rp_columns[col].unit) {
    case RP_UNIT_RATIO:
    case RP_UNIT_PLAIN:
        break;
    case RP_UNIT_SECONDS:
        f.div = 1e-3;
        f.unit = "ms";
        f.decimals = decimals_for(max / f.div);
        break;
    case RP_UNIT_BYTES:
        if (max >= 1024.0 * 1024 * 1024) {
            f.div = 1024.0 * 1024 * 1024;
            f.unit = "GiB";
        } else if (max >= 1024.0 * 1024) {
            f.div = 1024.0 * 1024;
            f.unit = "MiB";
        } else if (max >= 1024.0) {
            f.div = 1024.0;
            f.unit = "KiB";
        } else {
            f.unit = "B";
        }
        f.decimals = f.div == 1.0 ? 0 : decimals_for(max / f.div);
        break;
    case RP_UNIT_RATE:
        f.unit = "inputs/s";
        f.decimals = decimals_for(max);
        break;
    }
    return f;
}

static void heading_text(const rp_table *t, size_t col, const colfmt *f, char *buf, size_t cap)
{
    const char *extra = "";
    if (col == RP_COL_SHIFT)
        extra = t->variant[col] == RP_SHIFT_ALL ? ", mean of all severities"
                                                : ", mean at severity 3";
    if (f->unit)
        snprintf(buf, cap, "%s (%s%s)", rp_columns[col].heading, f->unit, extra);
    else if (extra[0])
        snprintf(buf, cap, "%s (%s)", rp_columns[col].heading, extra + 2);
    else
        snprintf(buf, cap, "%s", rp_columns[col].heading);
}

/* The cell's text; 0 when the value is missing. */
static int cell_text(const rp_table *t, size_t col, size_t job, const colfmt *f, char *buf,
                     size_t cap)
{
    const rp_value *v = rp_table_value(t, col, job);
    int n;
    if (!v->has)
        return 0;
    n = snprintf(buf, cap, "%.*f", f->decimals, v->v / f->div);
    if (v->has_ci && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " [%.*f, %.*f]", f->decimals, v->lo / f->div,
                 f->decimals, v->hi / f->div);
    return 1;
}

enum { ID_METHOD, ID_CHAIN, ID_ARCH, ID_SEED, ID_DEVICE, ID_DRAWS, ID_RUN, N_ID };
static const char *const id_headings[N_ID] = {"Method", "Chain", "Arch", "Seed",
                                              "Device", "S",     "Run"};

static int id_shown(const rp_table *t, int k)
{
    return k != ID_RUN || t->multi_run;
}

static int id_numeric(int k)
{
    return k == ID_SEED || k == ID_DRAWS || k == ID_RUN;
}

static void id_text(const rp_table *t, const rp_job *j, int k, char *buf, size_t cap)
{
    switch (k) {
    case ID_METHOD: snprintf(buf, cap, "%s", j->method); break;
    case ID_CHAIN: snprintf(buf, cap, "%s", j->chain[0] ? j->chain : "none"); break;
    case ID_ARCH: snprintf(buf, cap, "%s", j->arch); break;
    case ID_SEED: snprintf(buf, cap, "%lld", (long long)j->seed); break;
    case ID_DEVICE: snprintf(buf, cap, "%s", j->device); break;
    case ID_DRAWS: snprintf(buf, cap, "%lld", (long long)j->draws); break;
    default: snprintf(buf, cap, "#%lld", (long long)t->d->runs[j->run].id); break;
    }
}

/* ---- escaping -------------------------------------------------------- */

void rp_html_escape(FILE *fp, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", fp); break;
        case '<': fputs("&lt;", fp); break;
        case '>': fputs("&gt;", fp); break;
        case '"': fputs("&quot;", fp); break;
        case '\'': fputs("&#39;", fp); break;
        default:
            /* Control characters are not allowed in HTML text. */
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
                fputc(' ', fp);
            else
                fputc(*s, fp);
        }
    }
}

void rp_md_escape(FILE *fp, const char *s)
{
    for (; s && *s; s++) {
        if (strchr("\\`*_[]<>|~", *s))
            fputc('\\', fp);
        /* A newline would end the table row. */
        fputc((unsigned char)*s < 0x20 ? ' ' : *s, fp);
    }
}

void rp_latex_escape(FILE *fp, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '\\': fputs("\\textbackslash{}", fp); break;
        case '{': fputs("\\{", fp); break;
        case '}': fputs("\\}", fp); break;
        case '#': fputs("\\#", fp); break;
        case '$': fputs("\\$", fp); break;
        case '%': fputs("\\%", fp); break;
        case '&': fputs("\\&", fp); break;
        case '_': fputs("\\_", fp); break;
        case '~': fputs("\\textasciitilde{}", fp); break;
        case '^': fputs("\\textasciicircum{}", fp); break;
        case '<': fputs("\\textless{}", fp); break;
        case '>': fputs("\\textgreater{}", fp); break;
        case '|': fputs("\\textbar{}", fp); break;
        case '"': fputs("''", fp); break;
        /* Braced so a cell starting with '[' is not read as the optional
         * argument of the \\ before it. */
        case '[': fputs("{[}", fp); break;
        case ']': fputs("{]}", fp); break;
        default: fputc((unsigned char)*s < 0x20 ? ' ' : *s, fp);
        }
    }
}

/* ---- writers ---------------------------------------------------------- */

static const char *arrow_html(int dir)
{
    return dir == 1 ? "&nbsp;&uarr;" : dir == 0 ? "&nbsp;&darr;" : "";
}

void rp_table_html(const rp_table *t, FILE *fp)
{
    const rp_db *d = t->d;
    size_t nr = d->n_rows ? d->n_rows : 1;
    colfmt f[RP_N_COLUMNS];
    char buf[256];

    for (size_t c = 0; c < RP_N_COLUMNS; c++)
        f[c] = column_format(t, c);
    fputs("<table class=\"facets\">\n<thead>\n<tr>", fp);
    for (int k = 0; k < N_ID; k++)
        if (id_shown(t, k))
            fprintf(fp, "<th scope=\"col\">%s</th>", id_headings[k]);
    for (size_t c = 0; c < RP_N_COLUMNS; c++) {
        const rp_column *col = &rp_columns[c];
        heading_text(t, c, &f[c], buf, sizeof buf);
        fputs("<th scope=\"col\" class=\"num\" title=\"", fp);
        if (c == RP_COL_SHIFT)
            fputs("mean over contexts corruption=*,severity=*", fp);
        else
            rp_html_escape(fp, col->context[0] ? col->context : "no context");
        fprintf(fp, " (%s/%s)\">", col->facet, col->name);
        rp_html_escape(fp, buf);
        fprintf(fp, "%s</th>", arrow_html(t->dir[c]));
    }
    fputs("</tr>\n</thead>\n<tbody>\n", fp);
    for (size_t r = 0; r < d->n_rows; r++) {
        const rp_job *j = &d->jobs[d->rows[r]];
        fputs("<tr>", fp);
        for (int k = 0; k < N_ID; k++) {
            if (!id_shown(t, k))
                continue;
            id_text(t, j, k, buf, sizeof buf);
            fputs(id_numeric(k) ? "<td class=\"num\">" : "<td>", fp);
            rp_html_escape(fp, buf);
            fputs("</td>", fp);
        }
        for (size_t c = 0; c < RP_N_COLUMNS; c++) {
            if (!cell_text(t, c, d->rows[r], &f[c], buf, sizeof buf))
                fputs("<td class=\"num missing\">&mdash;</td>", fp);
            else if (t->best[c * nr + r])
                fprintf(fp, "<td class=\"num best\"><strong>%s</strong></td>", buf);
            else
                fprintf(fp, "<td class=\"num\">%s</td>", buf);
        }
        fputs("</tr>\n", fp);
    }
    fputs("</tbody>\n</table>\n", fp);
}

void rp_table_markdown(const rp_table *t, FILE *fp)
{
    const rp_db *d = t->d;
    size_t nr = d->n_rows ? d->n_rows : 1;
    colfmt f[RP_N_COLUMNS];
    char buf[256];

    for (size_t c = 0; c < RP_N_COLUMNS; c++)
        f[c] = column_format(t, c);
    fputs("|", fp);
    for (int k = 0; k < N_ID; k++)
        if (id_shown(t, k))
            fprintf(fp, " %s |", id_headings[k]);
    for (size_t c = 0; c < RP_N_COLUMNS; c++) {
        heading_text(t, c, &f[c], buf, sizeof buf);
        fputc(' ', fp);
        rp_md_escape(fp, buf);
        fprintf(fp, "%s |",
                t->dir[c] == 1 ? " \xE2\x86\x91" : t->dir[c] == 0 ? " \xE2\x86\x93" : "");
    }
    fputs("\n|", fp);
    for (int k = 0; k < N_ID; k++)
        if (id_shown(t, k))
            fputs(id_numeric(k) ? " --: |" : " :-- |", fp);
    for (size_t c = 0; c < RP_N_COLUMNS; c++)
        fputs(" --: |", fp);
    fputc('\n', fp);
    for (size_t r = 0; r < d->n_rows; r++) {
        const rp_job *j = &d->jobs[d->rows[r]];
        fputc('|', fp);
        for (int k = 0; k < N_ID; k++) {
            if (!id_shown(t, k))
                continue;
            id_text(t, j, k, buf, sizeof buf);
            fputc(' ', fp);
            rp_md_escape(fp, buf);
            fputs(" |", fp);
        }
        for (size_t c = 0; c < RP_N_COLUMNS; c++) {
            if (!cell_text(t, c, d->rows[r], &f[c], buf, sizeof buf))
                fputs(" \xE2\x80\x94 |", fp); /* em dash */
            else if (t->best[c * nr + r])
                fprintf(fp, " **%s** |", buf);
            else
                fprintf(fp, " %s |", buf);
        }
        fputc('\n', fp);
    }
}

void rp_table_latex(const rp_table *t, FILE *fp)
{
    const rp_db *d = t->d;
    size_t nr = d->n_rows ? d->n_rows : 1;
    colfmt f[RP_N_COLUMNS];
    char buf[256];

    for (size_t c = 0; c < RP_N_COLUMNS; c++)
        f[c] = column_format(t, c);
    fputs("\\begin{tabular}{", fp);
    for (int k = 0; k < N_ID; k++)
        if (id_shown(t, k))
            fputc(id_numeric(k) ? 'r' : 'l', fp);
    for (size_t c = 0; c < RP_N_COLUMNS; c++)
        fputc('r', fp);
    fputs("}\n\\toprule\n", fp);
    {
        int first = 1;
        for (int k = 0; k < N_ID; k++)
            if (id_shown(t, k)) {
                fprintf(fp, "%s%s", first ? "" : " & ", id_headings[k]);
                first = 0;
            }
    }
    for (size_t c = 0; c < RP_N_COLUMNS; c++) {
        heading_text(t, c, &f[c], buf, sizeof buf);
        fputs(" & ", fp);
        rp_latex_escape(fp, buf);
        fputs(t->dir[c] == 1 ? " $\\uparrow$" : t->dir[c] == 0 ? " $\\downarrow$" : "", fp);
    }
    fputs(" \\\\\n\\midrule\n", fp);
    for (size_t r = 0; r < d->n_rows; r++) {
        const rp_job *j = &d->jobs[d->rows[r]];
        int first = 1;
        for (int k = 0; k < N_ID; k++) {
            if (!id_shown(t, k))
                continue;
            id_text(t, j, k, buf, sizeof buf);
            if (!first)
                fputs(" & ", fp);
            first = 0;
            rp_latex_escape(fp, buf);
        }
        for (size_t c = 0; c < RP_N_COLUMNS; c++) {
            if (!cell_text(t, c, d->rows[r], &f[c], buf, sizeof buf)) {
                fputs(" & ---", fp);
            } else if (t->best[c * nr + r]) {
                fputs(" & \\textbf{", fp);
                rp_latex_escape(fp, buf);
                fputc('}', fp);
            } else {
                fputs(" & ", fp);
                rp_latex_escape(fp, buf);
            }
        }
        fputs(" \\\\\n", fp);
    }
    fputs("\\bottomrule\n\\end{tabular}\n", fp);
}
