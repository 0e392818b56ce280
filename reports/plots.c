/* plots.c: each plot of the report as a data file (plots/NAME.dat) and a
 * gnuplot script (plots/NAME.gp) that draws it in PNG, SVG and PDF.
 *
 * The scripts are meant to be edited: each sets its own terminals and
 * outputs with paths relative to plots/, takes `formats` as a variable
 * (default "png svg pdf"), and reads only its .dat, so `gnuplot NAME.gp`
 * in plots/ redraws it. Data are written in the units the axes show
 * (ms, MiB) with a comment saying so; missing values are written as NaN,
 * which gnuplot skips. A plot with no data is not written: its note
 * says what it would read. Also here: the Pareto front and mean-curve
 * computations the plots need. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "reports/report_internal.h"

/* ---- numerics -------------------------------------------------------- */

void rp_pareto_front(unsigned char *on_front, const double *x, const double *y, size_t n,
                     int y_higher_better)
{
    for (size_t i = 0; i < n; i++) {
        on_front[i] = 1;
        for (size_t j = 0; j < n && on_front[i]; j++) {
            int y_ge = y_higher_better ? y[j] >= y[i] : y[j] <= y[i];
            int y_gt = y_higher_better ? y[j] > y[i] : y[j] < y[i];
            if (j != i && x[j] <= x[i] && y_ge && (x[j] < x[i] || y_gt))
                on_front[i] = 0;
        }
    }
}

size_t rp_mean_curve(double *mx, double *my, size_t cap, const rp_series *const *s, size_t k)
{
    size_t m = 0;
    if (k == 0)
        return 0;
    for (size_t p = 0; p < s[0]->n && m < cap; p++) {
        double x = s[0]->v[p * 2], sum = 0;
        size_t have = 0;
        if (!isfinite(x))
            continue;
        for (size_t c = 0; c < k; c++) {
            for (size_t q = 0; q < s[c]->n; q++)
                if (s[c]->v[q * 2] == x && isfinite(s[c]->v[q * 2 + 1])) {
                    sum += s[c]->v[q * 2 + 1];
                    have++;
                    break;
                }
        }
        if (have == k) {
            mx[m] = x;
            my[m] = sum / (double)k;
            m++;
        }
    }
    return m;
}

/* ---- writing helpers ------------------------------------------------ */

typedef struct pfiles {
    eb_tmpfile dat, gp;
} pfiles;

static eb_status files_open(pfiles *f, const char *dir, const char *name, eb_error *err)
{
    char fn[128];
    eb_status s;
    memset(f, 0, sizeof *f);
    snprintf(fn, sizeof fn, "%s.dat", name);
    if ((s = rp_out_open(&f->dat, dir, fn, err)) != EB_OK)
        return s;
    snprintf(fn, sizeof fn, "%s.gp", name);
    if ((s = rp_out_open(&f->gp, dir, fn, err)) != EB_OK) {
        eb_tmpfile_abort(&f->dat);
        memset(f, 0, sizeof *f);
    }
    return s;
}

static eb_status files_commit(pfiles *f, eb_error *err)
{
    eb_status s = eb_tmpfile_commit(&f->dat, err);
    if (s != EB_OK) {
        eb_tmpfile_abort(&f->gp);
        return s;
    }
    return eb_tmpfile_commit(&f->gp, err);
}

static void dat_num(FILE *fp, double v)
{
    if (isfinite(v))
        fprintf(fp, "%.9g", v);
    else
        fputs("NaN", fp);
}

/* Appends printf text to a fixed buffer, marking a cut with "...". */
static void note_add(char *buf, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void note_add(char *buf, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(buf);
    va_list ap;
    int w;
    if (n + 4 >= cap)
        return;
    va_start(ap, fmt);
    w = vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
    if (w >= 0 && (size_t)w >= cap - n)
        memcpy(buf + cap - 4, "...", 4);
}

/* "No data for: a, b." over the table's jobs whose have[] is 0. */
static void note_missing(rp_plot *p, const rp_db *d, const unsigned char *have, const char *what)
{
    int any = 0;
    for (size_t r = 0; r < d->n_rows; r++) {
        if (have[r])
            continue;
        note_add(p->note, sizeof p->note, "%s%s", any ? ", " : what,
                 d->jobs[d->rows[r]].label);
        any = 1;
    }
    if (any)
        note_add(p->note, sizeof p->note, ".");
}

static void layout_for(size_t n, int *rows, int *cols)
{
    int c = 1;
    while ((size_t)(c * c) < n)
        c++;
    *cols = c;
    *rows = (int)((n + (size_t)c - 1) / (size_t)c);
}

static void gp_begin(FILE *fp, const rp_plot *p)
{
    const char *n = p->name;
    fprintf(fp,
            "# %s.gp: %s.\n"
            "# Written by `edgebayes report`. The data are in %s.dat (gnuplot's\n"
            "# text format: one block per series, blocks apart by two blank lines\n"
            "# and picked with `index`; a comment above each block names it).\n"
            "# To restyle: edit this file, then run in this directory\n"
            "#     gnuplot %s.gp\n"
            "# which rewrites %s.png, %s.svg and %s.pdf; one format only:\n"
            "#     gnuplot -e \"formats='svg'\" %s.gp\n",
            n, p->title, n, n, n, n, n, n);
    fprintf(fp,
            "if (!exists(\"formats\")) formats = \"png svg pdf\"\n"
            "width = %d    # pixels of the PNG and the SVG\n"
            "height = %d   # the PDF is width/100 by height/100 inches\n"
            "do for [fmt in formats] {\n"
            "    if (fmt eq \"png\") { set terminal pngcairo size width,height noenhanced"
            " font \"sans,10\" }\n"
            "    if (fmt eq \"svg\") { set terminal svg size width,height noenhanced"
            " font \"sans,10\" background rgb \"white\" }\n"
            "    if (fmt eq \"pdf\") { set terminal pdfcairo size width/100.0,height/100.0"
            " noenhanced font \"sans,7\" }\n"
            "    set output \"%s.\".fmt\n"
            "    reset\n"
            "    set encoding utf8\n",
            p->width, p->height, n);
}

static void gp_end(FILE *fp, int multiplot)
{
    if (multiplot)
        fputs("    unset multiplot\n", fp);
    fputs("    set output\n}\n", fp);
}

typedef struct range {
    double lo, hi;
    size_t n;
} range;

static void range_add(range *r, double v)
{
    if (!isfinite(v))
        return;
    if (r->n == 0 || v < r->lo)
        r->lo = v;
    if (r->n == 0 || v > r->hi)
        r->hi = v;
    r->n++;
}

/* gnuplot warns about (and boxplots refuse) an empty range: a single
 * value gets an explicit range around it; otherwise autoscale. */
static void gp_range(FILE *fp, const char *axis, const range *r, int logscale)
{
    if (logscale)
        fprintf(fp, "    set logscale %s\n", axis);
    if (r->n == 0 || r->lo != r->hi)
        return;
    if (logscale)
        fprintf(fp, "    set %srange [%.9g:%.9g]\n", axis, r->lo / 2, r->hi * 2);
    else {
        double pad = r->lo != 0 ? fabs(r->lo) * 0.1 : 1;
        fprintf(fp, "    set %srange [%.9g:%.9g]\n", axis, r->lo - pad, r->hi + pad);
    }
}

static int want_log(const range *r)
{
    return r->n > 0 && r->lo > 0 && r->hi / r->lo >= 100;
}

/* Units the plots show a column in. */
static double unit_div(size_t col, const char **unit)
{
    switch (rp_columns[col].unit) {
    case RP_UNIT_SECONDS: *unit = "ms"; return 1e-3;
    case RP_UNIT_BYTES: *unit = "MiB"; return 1024.0 * 1024.0;
    case RP_UNIT_RATE: *unit = "inputs/s"; return 1;
    default: *unit = ""; return 1;
    }
}

static void axis_label(char *buf, size_t cap, size_t col)
{
    const char *unit;
    unit_div(col, &unit);
    if (unit[0])
        snprintf(buf, cap, "%s (%s)", rp_columns[col].heading, unit);
    else
        snprintf(buf, cap, "%s", rp_columns[col].heading);
}

static const char *const palette[] = {"#4477aa", "#ee6677", "#228833", "#ccbb44",
                                      "#66ccee", "#aa3377", "#bbbbbb", "#000000"};
#define PALETTE_N (sizeof palette / sizeof palette[0])

/* ---- reliability diagrams ------------------------------------------- */

static int bins_usable(const rp_series *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i * 5 + 2] > 0 && isfinite(s->v[i * 5 + 4]))
            return 1;
    return 0;
}

static eb_status plot_reliability(rp_plot *p, const rp_table *t, const char *dir, eb_error *err)
{
    rp_db *d = t->d;
    rp_seriesset ss;
    pfiles f;
    unsigned char *have = NULL;
    size_t panels = 0, k = 0, bins = 0;
    int rows, cols;
    eb_status s;

    snprintf(p->title, sizeof p->title, "Reliability diagrams (equal-width bins)");
    s = rp_series_load(d,
                       "SELECT job_id, context, lo, hi, count, confidence, accuracy"
                       " FROM reliability_bins WHERE context = ?1 AND job_id IN"
                       " (SELECT id FROM jobs WHERE run_id IN (%s)) ORDER BY job_id, context, bin",
                       "binning=equal-width", 5, &ss, err);
    if (s != EB_OK)
        return s;
    have = eb_calloc(d->n_rows ? d->n_rows : 1, 1);
    if (!have) {
        rp_series_free(&ss);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the reliability plot");
    }
    for (size_t i = 0; i < ss.n; i++)
        if (bins_usable(&ss.s[i])) {
            have[d->row_pos[ss.s[i].job]] = 1;
            panels++;
            if (ss.s[i].n > bins)
                bins = ss.s[i].n;
        }
    if (panels == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no reliability_bins rows with context 'binning=equal-width' and a"
                 " non-empty bin for the selected jobs.");
        goto out;
    }
    note_missing(p, d, have, "No reliability bins for: ");
    layout_for(panels, &rows, &cols);
    p->width = cols * 340 > 640 ? cols * 340 : 640;
    p->height = rows * 320 + 50 > 480 ? rows * 320 + 50 : 480;
    snprintf(p->caption, sizeof p->caption,
             "Reliability diagram of each job: accuracy (bars) and mean confidence (points) in"
             " up to %zu equal-width confidence bins; the dashed diagonal is perfect"
             " calibration. Reads reliability_bins with context 'binning=equal-width'; panel"
             " titles give the ECE (metrics calibration/ece).",
             bins);
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp,
            "    set multiplot layout %d,%d title 'Reliability diagrams (equal-width bins)'\n"
            "    set xrange [0:1]\n    set yrange [0:1]\n    set xtics 0.2\n    set ytics 0.2\n"
            "    set style fill solid 0.5 border lc rgb '#333333'\n    set key off\n"
            "    set xlabel 'confidence'\n    set ylabel 'accuracy'\n",
            rows, cols);
    for (size_t i = 0; i < ss.n; i++) {
        const rp_series *se = &ss.s[i];
        const rp_job *j = &d->jobs[se->job];
        const rp_value *ece = rp_table_value(t, RP_COL_ECE, se->job);
        if (!bins_usable(se))
            continue;
        fprintf(f.dat.fp, "%s# index %zu: ", k ? "\n\n" : "", k);
        fputs(j->label, f.dat.fp);
        fputs("\n# lo hi count confidence accuracy\n", f.dat.fp);
        for (size_t r = 0; r < se->n; r++) {
            for (int c = 0; c < 5; c++) {
                if (c)
                    fputc(' ', f.dat.fp);
                dat_num(f.dat.fp, se->v[r * 5 + (size_t)c]);
            }
            fputc('\n', f.dat.fp);
        }
        fputs("    set title ", f.gp.fp);
        if (ece->has) {
            char buf[512];
            snprintf(buf, sizeof buf, "%s (ECE %.4f)", j->label, ece->v);
            rp_gp_string(f.gp.fp, buf);
        } else {
            rp_gp_string(f.gp.fp, j->label);
        }
        fprintf(f.gp.fp,
                "\n    plot '%s.dat' index %zu using (($1+$2)/2):5:($2-$1) with boxes"
                " lc rgb '#4477aa', \\\n"
                "         '' index %zu using 4:5 with points pt 7 ps 0.6 lc rgb '#cc3311', \\\n"
                "         x with lines dt 2 lc rgb '#777777'\n",
                p->name, k, k);
        k++;
    }
    gp_end(f.gp.fp, 1);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(have);
    rp_series_free(&ss);
    return s;
}

/* ---- OOD ROC curves ------------------------------------------------- */

static eb_status plot_roc(rp_plot *p, const rp_table *t, const char *dir, eb_error *err)
{
    rp_db *d = t->d;
    rp_seriesset ss;
    pfiles f;
    unsigned char *have = NULL;
    size_t curves = 0, k = 0;
    eb_status s;

    snprintf(p->title, sizeof p->title, "OOD detection ROC curves (score: predictive entropy)");
    s = rp_series_load(d,
                       "SELECT job_id, context, x, y FROM curves WHERE kind = 'roc'"
                       " AND context = ?1 AND job_id IN (SELECT id FROM jobs WHERE run_id IN (%s))"
                       " ORDER BY job_id, context, seq",
                       "score=entropy", 2, &ss, err);
    if (s != EB_OK)
        return s;
    have = eb_calloc(d->n_rows ? d->n_rows : 1, 1);
    if (!have) {
        rp_series_free(&ss);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the ROC plot");
    }
    for (size_t i = 0; i < ss.n; i++)
        if (ss.s[i].n >= 2) {
            have[d->row_pos[ss.s[i].job]] = 1;
            curves++;
        }
    if (curves == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no curves of kind 'roc' with context 'score=entropy' (two points or"
                 " more) for the selected jobs.");
        goto out;
    }
    note_missing(p, d, have, "No ROC curve for: ");
    p->width = 760;
    p->height = 640;
    snprintf(p->caption, sizeof p->caption,
             "ROC curves of out-of-distribution detection by the predictive entropy, one per"
             " job: true positive rate (OOD inputs flagged) against false positive rate"
             " (in-distribution inputs flagged); the dashed diagonal is chance. Reads curves"
             " of kind 'roc' with context 'score=entropy'; the AUROC in the key is metrics"
             " ood/auroc with context 'score=entropy'.");
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fputs("    set title 'OOD detection ROC (score: predictive entropy)'\n"
          "    set xrange [0:1]\n    set yrange [0:1]\n    set size square\n"
          "    set key bottom right\n"
          "    set xlabel 'false positive rate (in-distribution flagged)'\n"
          "    set ylabel 'true positive rate (OOD flagged)'\n"
          "    plot ",
          f.gp.fp);
    for (size_t i = 0; i < ss.n; i++) {
        const rp_series *se = &ss.s[i];
        const rp_job *j = &d->jobs[se->job];
        const rp_value *au = rp_table_value(t, RP_COL_OOD_ENTROPY, se->job);
        char buf[512];
        if (se->n < 2)
            continue;
        fprintf(f.dat.fp, "%s# index %zu: %s\n# fpr tpr\n", k ? "\n\n" : "", k, j->label);
        for (size_t r = 0; r < se->n; r++) {
            dat_num(f.dat.fp, se->v[r * 2]);
            fputc(' ', f.dat.fp);
            dat_num(f.dat.fp, se->v[r * 2 + 1]);
            fputc('\n', f.dat.fp);
        }
        if (au->has)
            snprintf(buf, sizeof buf, "%s (AUROC %.4f)", j->label, au->v);
        else
            snprintf(buf, sizeof buf, "%s", j->label);
        fprintf(f.gp.fp, "'%s.dat' index %zu using 1:2 with lines lw 2 lc rgb '%s' title ",
                p->name, k, palette[d->row_pos[se->job] % PALETTE_N]);
        rp_gp_string(f.gp.fp, buf);
        fputs(", \\\n         ", f.gp.fp);
        k++;
    }
    fputs("x with lines dt 2 lc rgb '#777777' notitle\n", f.gp.fp);
    gp_end(f.gp.fp, 0);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(have);
    rp_series_free(&ss);
    return s;
}

/* ---- curves against epsilon or severity, panels by a context key ---- */

/* Series of ss whose context has metric=<metric> and a value for
 * panel_key; the panels are the distinct values, sorted, with "mean"
 * last. */
typedef struct panelset {
    const char *names[16];
    size_t n;
} panelset;

static int series_match(const rp_series *s, const char *metric, const char *panel_key,
                        char *panel, size_t cap)
{
    char m[64];
    if (!rp_ctx_get(s->context, "metric", m, sizeof m) || strcmp(m, metric) != 0)
        return 0;
    if (!rp_ctx_get(s->context, panel_key, panel, cap)) {
        if (cap)
            panel[0] = '\0'; /* e.g. an eps curve naming no attack */
    }
    for (size_t i = 0; i < s->n; i++)
        if (isfinite(s->v[i * 2]) && isfinite(s->v[i * 2 + 1]))
            return 1;
    return 0;
}

static int panel_cmp(const char *a, const char *b)
{
    int am = strcmp(a, "mean") == 0, bm = strcmp(b, "mean") == 0;
    if (am != bm)
        return am - bm;
    return strcmp(a, b);
}

/* Collects the panel names (copied into the series set's arena); more
 * than 16 distinct names are dropped with a note. */
static eb_status panels_collect(panelset *ps, rp_seriesset *ss, const char *metric,
                                const char *key, rp_plot *p, eb_error *err)
{
    char name[64];
    ps->n = 0;
    for (size_t i = 0; i < ss->n; i++) {
        size_t at;
        if (!series_match(&ss->s[i], metric, key, name, sizeof name))
            continue;
        for (at = 0; at < ps->n; at++)
            if (strcmp(ps->names[at], name) == 0)
                break;
        if (at < ps->n)
            continue;
        if (ps->n == sizeof ps->names / sizeof ps->names[0]) {
            note_add(p->note, sizeof p->note, "Only the first 16 values of '%s' are drawn. ",
                     key);
            continue;
        }
        if (rp_arena_dup(&ss->arena, name, &ps->names[ps->n]))
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for plot panels");
        ps->n++;
    }
    /* insertion sort: at most 16 */
    for (size_t i = 1; i < ps->n; i++)
        for (size_t j = i; j > 0 && panel_cmp(ps->names[j - 1], ps->names[j]) > 0; j--) {
            const char *tmp = ps->names[j];
            ps->names[j] = ps->names[j - 1];
            ps->names[j - 1] = tmp;
        }
    return EB_OK;
}

static void upper(char *out, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        out[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    out[i] = '\0';
}

static void write_xy_block(FILE *fp, size_t k, const char *label, const char *what,
                           const double *x, const double *y, size_t stride, size_t n)
{
    fprintf(fp, "%s# index %zu: %s, %s\n", k ? "\n\n" : "", k, label, what);
    for (size_t i = 0; i < n; i++) {
        dat_num(fp, x[i * stride]);
        fputc(' ', fp);
        dat_num(fp, y[i * stride]);
        fputc('\n', fp);
    }
}

/* Accuracy or NLL against epsilon: one panel per attack, one curve per job. */
static eb_status plot_eps(rp_plot *p, const rp_table *t, rp_seriesset *ss, const char *metric,
                          const char *heading, const char *ylabel, const char *dir,
                          eb_error *err)
{
    rp_db *d = t->d;
    panelset ps;
    pfiles f;
    unsigned char *have = NULL;
    size_t k = 0;
    int rows, cols;
    eb_status s;
    char name[64];

    snprintf(p->title, sizeof p->title, "%s against the attack's epsilon", heading);
    if ((s = panels_collect(&ps, ss, metric, "attack", p, err)) != EB_OK)
        return s;
    if (ps.n == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no curves of kind 'eps' with context 'attack=<name>,metric=%s' for"
                 " the selected jobs.",
                 metric);
        return EB_OK;
    }
    have = eb_calloc(d->n_rows ? d->n_rows : 1, 1);
    if (!have)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the %s plot", p->name);
    for (size_t i = 0; i < ss->n; i++)
        if (series_match(&ss->s[i], metric, "attack", name, sizeof name))
            have[d->row_pos[ss->s[i].job]] = 1;
    note_missing(p, d, have, "No curve for: ");
    layout_for(ps.n, &rows, &cols);
    p->width = cols * 560 > 640 ? cols * 560 : 640;
    p->height = rows * 440 + 40;
    snprintf(p->caption, sizeof p->caption,
             "%s of the posterior predictive under L-infinity attacks against the attack's"
             " epsilon, one panel per attack (FGSM, PGD), one curve per job. Reads curves of"
             " kind 'eps' with context 'attack=<name>,metric=%s'.",
             heading, metric);
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp, "    set multiplot layout %d,%d title ", rows, cols);
    rp_gp_string(f.gp.fp, p->title);
    fprintf(f.gp.fp, "\n    set key outside right top\n    set xlabel 'epsilon (L-inf)'\n"
                     "    set ylabel '%s'\n",
            ylabel);
    for (size_t pi = 0; pi < ps.n; pi++) {
        range xr = {0, 0, 0}, yr = {0, 0, 0};
        char title[80];
        int first = 1;
        for (size_t i = 0; i < ss->n; i++) {
            const rp_series *se = &ss->s[i];
            if (!series_match(se, metric, "attack", name, sizeof name) ||
                strcmp(name, ps.names[pi]) != 0)
                continue;
            for (size_t r = 0; r < se->n; r++) {
                range_add(&xr, se->v[r * 2]);
                range_add(&yr, se->v[r * 2 + 1]);
            }
        }
        upper(title, sizeof title, ps.names[pi][0] ? ps.names[pi] : "attack not named");
        fputs("    set autoscale\n    unset logscale\n    set title ", f.gp.fp);
        rp_gp_string(f.gp.fp, title);
        fputc('\n', f.gp.fp);
        gp_range(f.gp.fp, "x", &xr, 0);
        gp_range(f.gp.fp, "y", &yr, 0);
        fputs("    plot ", f.gp.fp);
        for (size_t i = 0; i < ss->n; i++) {
            const rp_series *se = &ss->s[i];
            const rp_job *j = &d->jobs[se->job];
            char what[128];
            if (!series_match(se, metric, "attack", name, sizeof name) ||
                strcmp(name, ps.names[pi]) != 0)
                continue;
            snprintf(what, sizeof what, "context %s; epsilon %s", se->context, metric);
            write_xy_block(f.dat.fp, k, j->label, what, se->v, se->v + 1, 2, se->n);
            fprintf(f.gp.fp, "%s'%s.dat' index %zu using 1:2 with linespoints pt 7 ps 0.6 lw 2"
                             " lc rgb '%s' title ",
                    first ? "" : ", \\\n         ", p->name, k,
                    palette[d->row_pos[se->job] % PALETTE_N]);
            rp_gp_string(f.gp.fp, j->label);
            first = 0;
            k++;
        }
        fputc('\n', f.gp.fp);
    }
    gp_end(f.gp.fp, 1);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(have);
    return s;
}

/* The curve one job draws in a shift panel: its series for the panel's
 * corruption, or for the mean panel its stored mean or the mean computed
 * over its corruptions (into mx, my). 0 when it has none. */
typedef struct shift_curve {
    const double *x, *y;
    size_t stride, n;
    char what[160];
} shift_curve;

static int shift_curve_for(shift_curve *c, rp_seriesset *ss, size_t a, size_t b,
                           const char *pname, const rp_series **group, double *mx, double *my,
                           size_t maxn)
{
    int is_mean = strcmp(pname, "mean") == 0;
    const rp_series *stored_mean = NULL;
    size_t ng = 0;
    char name[64];

    for (size_t q = a; q < b; q++) {
        if (!series_match(&ss->s[q], "ece", "corruption", name, sizeof name) || !name[0])
            continue;
        if (strcmp(name, "mean") == 0)
            stored_mean = &ss->s[q];
        else if (is_mean || strcmp(name, pname) == 0)
            group[ng++] = &ss->s[q];
    }
    if (is_mean && stored_mean) {
        c->x = stored_mean->v;
        c->y = stored_mean->v + 1;
        c->stride = 2;
        c->n = stored_mean->n;
        snprintf(c->what, sizeof c->what, "context %s; severity ece", stored_mean->context);
    } else if (is_mean && ng > 0) {
        c->n = rp_mean_curve(mx, my, maxn, group, ng);
        c->x = mx;
        c->y = my;
        c->stride = 1;
        snprintf(c->what, sizeof c->what,
                 "mean computed by the report over %zu corruptions; severity ece", ng);
    } else if (!is_mean && ng == 1) {
        c->x = group[0]->v;
        c->y = group[0]->v + 1;
        c->stride = 2;
        c->n = group[0]->n;
        snprintf(c->what, sizeof c->what, "context %s; severity ece", group[0]->context);
    } else {
        return 0;
    }
    for (size_t r = 0; r < c->n; r++)
        if (isfinite(c->x[r * c->stride]) && isfinite(c->y[r * c->stride]))
            return 1;
    return 0;
}

/* ECE against shift severity: one panel per corruption plus the mean. */
static eb_status plot_shift(rp_plot *p, const rp_table *t, rp_seriesset *ss, const char *dir,
                            eb_error *err)
{
    rp_db *d = t->d;
    panelset ps;
    pfiles f;
    unsigned char *have = NULL;
    const rp_series **group = NULL;
    double *mx = NULL, *my = NULL;
    size_t k = 0, maxn = 1, npanels;
    int rows, cols;
    eb_status s;
    char name[64];

    snprintf(p->title, sizeof p->title, "ECE against shift severity");
    if ((s = panels_collect(&ps, ss, "ece", "corruption", p, err)) != EB_OK)
        return s;
    /* A series without a corruption name cannot be placed; sorted first. */
    while (ps.n > 0 && ps.names[0][0] == '\0') {
        memmove(&ps.names[0], &ps.names[1], (ps.n - 1) * sizeof ps.names[0]);
        ps.n--;
    }
    if (ps.n == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no curves of kind 'shift' with context"
                 " 'corruption=<name>,metric=ece' for the selected jobs.");
        return EB_OK;
    }
    /* The mean panel is always drawn: from stored 'corruption=mean'
     * curves, or computed here per job. */
    npanels = strcmp(ps.names[ps.n - 1], "mean") == 0 ? ps.n : ps.n + 1;
    for (size_t i = 0; i < ss->n; i++)
        if (ss->s[i].n > maxn)
            maxn = ss->s[i].n;
    have = eb_calloc(d->n_rows ? d->n_rows : 1, 1);
    group = eb_malloc((ss->n ? ss->n : 1) * sizeof *group);
    mx = eb_malloc(maxn * sizeof *mx);
    my = eb_malloc(maxn * sizeof *my);
    if (!have || !group || !mx || !my) {
        s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the shift plot");
        goto out;
    }
    for (size_t i = 0; i < ss->n; i++)
        if (series_match(&ss->s[i], "ece", "corruption", name, sizeof name) && name[0])
            have[d->row_pos[ss->s[i].job]] = 1;
    note_missing(p, d, have, "No shift curves for: ");
    layout_for(npanels, &rows, &cols);
    p->width = cols * 480 > 640 ? cols * 480 : 640;
    p->height = rows * 400 + 40;
    snprintf(p->caption, sizeof p->caption,
             "Expected calibration error against corruption severity, one panel per"
             " corruption and one for their mean, one curve per job. Reads curves of kind"
             " 'shift' with context 'corruption=<name>,metric=ece'; the mean panel draws"
             " stored 'corruption=mean,metric=ece' curves, or else the mean over the job's"
             " corruptions at the severities all of them have.");
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp,
            "    set multiplot layout %d,%d title 'ECE against shift severity'\n"
            "    set key outside right top\n    set xlabel 'severity'\n    set ylabel 'ECE'\n"
            "    set xtics 1\n",
            rows, cols);
    for (size_t pi = 0; pi < npanels; pi++) {
        const char *pname = pi < ps.n ? ps.names[pi] : "mean";
        range xr = {0, 0, 0}, yr = {0, 0, 0};
        int first = 1;
        shift_curve c;

        fputs("    set autoscale\n    set title ", f.gp.fp);
        rp_gp_string(f.gp.fp, strcmp(pname, "mean") == 0 ? "mean over corruptions" : pname);
        fputc('\n', f.gp.fp);
        /* Pass 1: the ranges (a single severity needs an explicit one). */
        for (size_t a = 0, b; a < ss->n; a = b) {
            for (b = a; b < ss->n && ss->s[b].job == ss->s[a].job; b++)
                ;
            if (!shift_curve_for(&c, ss, a, b, pname, group, mx, my, maxn))
                continue;
            for (size_t r = 0; r < c.n; r++) {
                range_add(&xr, c.x[r * c.stride]);
                range_add(&yr, c.y[r * c.stride]);
            }
        }
        gp_range(f.gp.fp, "x", &xr, 0);
        gp_range(f.gp.fp, "y", &yr, 0);
        /* Pass 2: the data blocks and the plot command. */
        for (size_t a = 0, b; a < ss->n; a = b) {
            const rp_job *j = &d->jobs[ss->s[a].job];
            for (b = a; b < ss->n && ss->s[b].job == ss->s[a].job; b++)
                ;
            if (!shift_curve_for(&c, ss, a, b, pname, group, mx, my, maxn))
                continue;
            write_xy_block(f.dat.fp, k, j->label, c.what, c.x, c.y, c.stride, c.n);
            fprintf(f.gp.fp,
                    "%s'%s.dat' index %zu using 1:2 with linespoints pt 7 ps 0.6 lw 2"
                    " lc rgb '%s' title ",
                    first ? "    plot " : ", \\\n         ", p->name, k,
                    palette[d->row_pos[ss->s[a].job] % PALETTE_N]);
            rp_gp_string(f.gp.fp, j->label);
            first = 0;
            k++;
        }
        if (first)
            /* No job has this panel (the mean when no severity is common
             * to all of a job's corruptions): keep the layout, say so. */
            fputs("    set label 1 'no data' at graph 0.5,0.5 center\n"
                  "    set xrange [0:1]\n    set yrange [0:1]\n"
                  "    plot NaN notitle\n    unset label 1",
                  f.gp.fp);
        fputc('\n', f.gp.fp);
    }
    gp_end(f.gp.fp, 1);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(have);
    eb_free(group);
    eb_free(mx);
    eb_free(my);
    return s;
}

/* ---- Pareto fronts ------------------------------------------------- */

static const size_t pareto_metrics[] = {RP_COL_ACCURACY, RP_COL_NLL, RP_COL_ECE,
                                        RP_COL_OOD_ENTROPY, RP_COL_PGD};
#define N_PARETO_METRICS (sizeof pareto_metrics / sizeof pareto_metrics[0])

typedef struct front_pt {
    double x, y;
} front_pt;

static eb_status plot_pareto(rp_plot *p, const rp_table *t, size_t xcol, const char *what,
                             const char *dir, eb_error *err)
{
    rp_db *d = t->d;
    size_t n = d->n_rows ? d->n_rows : 1, panels = 0, idx = 0;
    double *x = NULL, *y = NULL;
    size_t *who = NULL;
    unsigned char *on = NULL, *have = NULL;
    front_pt *fr = NULL;
    const char *unit;
    double div = unit_div(xcol, &unit);
    char xlabel[128];
    int rows, cols;
    pfiles f;
    eb_status s = EB_OK;

    axis_label(xlabel, sizeof xlabel, xcol);
    snprintf(p->title, sizeof p->title, "Pareto fronts against %s", what);
    x = eb_malloc(n * sizeof *x);
    y = eb_malloc(n * sizeof *y);
    who = eb_malloc(n * sizeof *who);
    on = eb_malloc(n);
    have = eb_calloc(n, 1);
    fr = eb_malloc(n * sizeof *fr);
    if (!x || !y || !who || !on || !have || !fr) {
        s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the %s plot", p->name);
        goto out;
    }
    for (size_t m = 0; m < N_PARETO_METRICS; m++) {
        size_t np = 0;
        for (size_t r = 0; r < d->n_rows; r++)
            if (rp_table_value(t, xcol, d->rows[r])->has &&
                rp_table_value(t, pareto_metrics[m], d->rows[r])->has)
                np++;
        if (np)
            panels++;
    }
    for (size_t r = 0; r < d->n_rows; r++)
        have[r] = rp_table_value(t, xcol, d->rows[r])->has;
    if (panels == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no job has both %s (metrics %s/%s%s%s) and one of accuracy, NLL,"
                 " ECE, OOD AUROC or PGD accuracy.",
                 what, rp_columns[xcol].facet, rp_columns[xcol].name,
                 rp_columns[xcol].context[0] ? ", context " : "", rp_columns[xcol].context);
        goto out;
    }
    note_missing(p, d, have, "Without this resource: ");
    layout_for(panels, &rows, &cols);
    p->width = cols * 520 > 640 ? cols * 520 : 640;
    p->height = rows * 440 + 40;
    snprintf(p->caption, sizeof p->caption,
             "Accuracy, NLL, ECE, OOD AUROC (entropy) and PGD accuracy (eps 0.1) against %s"
             " (metrics %s/%s%s%s%s%s), one labelled point per job (method and transform"
             " chain); the step line is the Pareto front, the jobs no"
             " other job beats on both axes (direction from metrics.higher_is_better; the"
             " resource is lower-is-better).",
             what, rp_columns[xcol].facet, rp_columns[xcol].name,
             rp_columns[xcol].context[0] ? ", context '" : "", rp_columns[xcol].context,
             rp_columns[xcol].context[0] ? "'" : "",
             rp_columns[xcol].bundle_fallback ? ", else artifacts.bytes of the job's bundle"
                                              : "");
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp, "    set multiplot layout %d,%d title ", rows, cols);
    rp_gp_string(f.gp.fp, p->title);
    fputc('\n', f.gp.fp);
    for (size_t m = 0; m < N_PARETO_METRICS; m++) {
        size_t mc = pareto_metrics[m], np = 0, nf = 0;
        int dirm = t->dir[mc];
        range xr = {0, 0, 0}, yr = {0, 0, 0};
        char ylabel[128], title[160];
        for (size_t r = 0; r < d->n_rows; r++) {
            const rp_value *vx = rp_table_value(t, xcol, d->rows[r]);
            const rp_value *vy = rp_table_value(t, mc, d->rows[r]);
            if (!vx->has || !vy->has)
                continue;
            x[np] = vx->v / div;
            y[np] = vy->v;
            who[np] = d->rows[r];
            range_add(&xr, x[np]);
            range_add(&yr, y[np]);
            np++;
        }
        if (np == 0)
            continue;
        axis_label(ylabel, sizeof ylabel, mc);
        snprintf(title, sizeof title, "%s%s", rp_columns[mc].heading,
                 dirm == 1 ? " (higher is better)" : dirm == 0 ? " (lower is better)" : "");
        fprintf(f.dat.fp, "%s# index %zu: %s against %s, one point per job\n# %s %s job\n",
                idx ? "\n\n" : "", idx, rp_columns[mc].heading, xlabel, rp_columns[xcol].key,
                rp_columns[mc].key);
        for (size_t i = 0; i < np; i++) {
            dat_num(f.dat.fp, x[i]);
            fputc(' ', f.dat.fp);
            dat_num(f.dat.fp, y[i]);
            fputc(' ', f.dat.fp);
            rp_dat_string(f.dat.fp, d->jobs[who[i]].label);
            fputc('\n', f.dat.fp);
        }
        fputs("    set autoscale\n    unset logscale\n    set title ", f.gp.fp);
        rp_gp_string(f.gp.fp, title);
        fputs("\n    set xlabel ", f.gp.fp);
        rp_gp_string(f.gp.fp, xlabel);
        fputs("\n    set ylabel ", f.gp.fp);
        rp_gp_string(f.gp.fp, ylabel);
        /* The corner the front leaves empty: cheap and good is rare. */
        fprintf(f.gp.fp, "\n    set key %s left opaque\n", dirm == 0 ? "bottom" : "top");
        gp_range(f.gp.fp, "x", &xr, want_log(&xr));
        gp_range(f.gp.fp, "y", &yr, 0);
        fprintf(f.gp.fp,
                "    set offsets graph 0.05, graph 0.25, graph 0.08, graph 0.08\n"
                "    plot '%s.dat' index %zu using 1:2 with points pt 7 ps 1 lc rgb '#4477aa'"
                " title 'jobs', \\\n"
                "         '' index %zu using 1:2:3 with labels left offset char 0.6,0.4"
                " font ',8' notitle",
                p->name, idx, idx);
        idx++;
        if (dirm == 0 || dirm == 1) {
            rp_pareto_front(on, x, y, np, dirm);
            for (size_t i = 0; i < np; i++)
                if (on[i]) {
                    fr[nf].x = x[i];
                    fr[nf].y = y[i];
                    nf++;
                }
            /* Sort by resource, better metric first on ties (insertion
             * sort: a front has a handful of points). */
            for (size_t i = 1; i < nf; i++)
                for (size_t j = i; j > 0; j--) {
                    front_pt a = fr[j - 1], b = fr[j];
                    int swap = a.x > b.x ||
                               (a.x == b.x && (dirm ? b.y > a.y : b.y < a.y));
                    if (!swap)
                        break;
                    fr[j - 1] = b;
                    fr[j] = a;
                }
            fprintf(f.dat.fp, "\n\n# index %zu: the Pareto front of index %zu, by %s\n",
                    idx, idx - 1, rp_columns[xcol].key);
            for (size_t i = 0; i < nf; i++) {
                dat_num(f.dat.fp, fr[i].x);
                fputc(' ', f.dat.fp);
                dat_num(f.dat.fp, fr[i].y);
                fputc('\n', f.dat.fp);
            }
            fprintf(f.gp.fp,
                    ", \\\n         '' index %zu using 1:2 with steps lw 2 lc rgb '#cc3311'"
                    " title 'Pareto front'",
                    idx);
            idx++;
        }
        fputc('\n', f.gp.fp);
    }
    gp_end(f.gp.fp, 1);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(x);
    eb_free(y);
    eb_free(who);
    eb_free(on);
    eb_free(have);
    eb_free(fr);
    return s;
}

/* ---- latency distributions ------------------------------------------ */

static eb_status plot_latency(rp_plot *p, const rp_table *t, const char *dir, eb_error *err)
{
    rp_db *d = t->d;
    rp_seriesset ss;
    pfiles f;
    unsigned char *have = NULL;
    size_t boxes = 0, k = 0;
    range yr = {0, 0, 0};
    int logy;
    eb_status s;

    snprintf(p->title, sizeof p->title, "Single-stream latency distributions");
    s = rp_series_load(d,
                       "SELECT job_id, kind, seq, seconds FROM latency_samples"
                       " WHERE kind = 'single' AND job_id IN"
                       " (SELECT id FROM jobs WHERE run_id IN (%s)) ORDER BY job_id, kind, seq",
                       NULL, 2, &ss, err);
    if (s != EB_OK)
        return s;
    have = eb_calloc(d->n_rows ? d->n_rows : 1, 1);
    if (!have) {
        rp_series_free(&ss);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the latency plot");
    }
    for (size_t i = 0; i < ss.n; i++) {
        int any = 0;
        for (size_t r = 0; r < ss.s[i].n; r++)
            if (isfinite(ss.s[i].v[r * 2 + 1])) {
                range_add(&yr, ss.s[i].v[r * 2 + 1] * 1e3);
                any = 1;
            }
        if (any) {
            have[d->row_pos[ss.s[i].job]] = 1;
            boxes++;
        }
    }
    if (boxes == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no latency_samples of kind 'single' for the selected jobs.");
        goto out;
    }
    note_missing(p, d, have, "No latency samples for: ");
    p->width = (int)boxes * 110 + 200 > 640 ? (int)boxes * 110 + 200 : 640;
    p->height = 560;
    snprintf(p->caption, sizeof p->caption,
             "Distribution of single-stream latency per job (one input at a time, steady"
             " state): box from the lower to the upper quartile, the median inside, whiskers"
             " to 1.5 interquartile ranges, points beyond. Drawn by gnuplot from every raw"
             " sample in latency_samples of kind 'single'.");
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    logy = want_log(&yr);
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp,
            "    set title 'Single-stream latency per job'\n    set ylabel 'latency (ms)'\n"
            "    set style fill solid 0.3 border lc rgb '#333333'\n"
            "    set style boxplot outliers pointtype 7\n    set pointsize 0.4\n"
            "    set key off\n    set grid ytics\n"
            "    set xrange [0.5:%zu.5]\n    set xtics rotate by 30 right (",
            boxes);
    for (size_t i = 0; i < ss.n; i++) {
        const rp_series *se = &ss.s[i];
        char buf[512];
        size_t cnt = 0;
        if (!have[d->row_pos[se->job]])
            continue;
        for (size_t r = 0; r < se->n; r++)
            cnt += isfinite(se->v[r * 2 + 1]) != 0;
        snprintf(buf, sizeof buf, "%s (n=%zu)", d->jobs[se->job].label, cnt);
        fputs(k ? ", " : "", f.gp.fp);
        rp_gp_string(f.gp.fp, buf);
        fprintf(f.gp.fp, " %zu", k + 1);
        k++;
    }
    fputs(")\n", f.gp.fp);
    gp_range(f.gp.fp, "y", &yr, logy);
    fputs("    plot ", f.gp.fp);
    k = 0;
    for (size_t i = 0; i < ss.n; i++) {
        const rp_series *se = &ss.s[i];
        if (!have[d->row_pos[se->job]])
            continue;
        fprintf(f.dat.fp, "%s# index %zu: %s, single-stream latency samples (seconds) in query"
                          " order\n",
                k ? "\n\n" : "", k, d->jobs[se->job].label);
        for (size_t r = 0; r < se->n; r++)
            if (isfinite(se->v[r * 2 + 1])) {
                dat_num(f.dat.fp, se->v[r * 2 + 1]);
                fputc('\n', f.dat.fp);
            }
        fprintf(f.gp.fp, "%s'%s.dat' index %zu using (%zu):(1000*$1) with boxplot lc rgb '%s'",
                k ? ", \\\n         " : "", p->name, k, k + 1,
                palette[d->row_pos[se->job] % PALETTE_N]);
        k++;
    }
    fputc('\n', f.gp.fp);
    gp_end(f.gp.fp, 0);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(have);
    rp_series_free(&ss);
    return s;
}

/* ---- history across runs ------------------------------------------- */

static int cmp_key_run(const void *a, const void *b, void *ctx)
{
    const rp_db *d = ctx;
    const rp_job *x = &d->jobs[*(const size_t *)a], *y = &d->jobs[*(const size_t *)b];
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    if (x->run != y->run)
        return x->run < y->run ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static eb_status plot_history(rp_plot *p, const rp_table *t, const size_t *hist, size_t nh,
                              const char *dir, eb_error *err)
{
    rp_db *d = t->d;
    size_t nj = d->n_jobs ? d->n_jobs : 1, ndone = 0, panels = 0, idx = 0;
    unsigned char *mask = NULL, *runs_seen = NULL, *panel_ok = NULL;
    rp_value *hv = NULL; /* (nh, n_jobs) */
    size_t *order = NULL;
    size_t xlo = SIZE_MAX, xhi = 0;
    int rows, cols, variant;
    pfiles f;
    eb_status s = EB_OK;

    snprintf(p->title, sizeof p->title, "History across runs");
    mask = eb_calloc(nj, 1);
    runs_seen = eb_calloc(d->n_runs ? d->n_runs : 1, 1);
    panel_ok = eb_calloc(nh ? nh : 1, 1);
    hv = eb_calloc(nh > 0 ? nh * nj : 1, sizeof *hv);
    order = eb_malloc(nj * sizeof *order);
    if (!mask || !runs_seen || !panel_ok || !hv || !order) {
        s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the history plot");
        goto out;
    }
    for (size_t j = 0; j < d->n_jobs; j++)
        if (d->jobs[j].done) {
            mask[j] = 1;
            order[ndone++] = j;
        }
    qsort_r(order, ndone, sizeof *order, cmp_key_run, d);
    for (size_t h = 0; h < nh; h++) {
        size_t distinct = 0;
        s = rp_column_load(d, hist[h], mask, &hv[h * nj], &variant, err);
        if (s != EB_OK)
            goto out;
        memset(runs_seen, 0, d->n_runs ? d->n_runs : 1);
        for (size_t j = 0; j < d->n_jobs; j++)
            if (hv[h * nj + j].has && !runs_seen[d->jobs[j].run]) {
                runs_seen[d->jobs[j].run] = 1;
                distinct++;
            }
        if (distinct >= 2) {
            panel_ok[h] = 1;
            panels++;
            for (size_t j = 0; j < d->n_jobs; j++)
                if (hv[h * nj + j].has) {
                    if (d->jobs[j].run < xlo)
                        xlo = d->jobs[j].run;
                    if (d->jobs[j].run > xhi)
                        xhi = d->jobs[j].run;
                }
        } else {
            note_add(p->note, sizeof p->note, "%s: fewer than two runs have it. ",
                     rp_columns[hist[h]].key);
        }
    }
    if (panels == 0) {
        char keep[sizeof p->note];
        memcpy(keep, p->note, sizeof keep);
        p->note[0] = '\0';
        note_add(p->note, sizeof p->note,
                 "Skipped: the history needs a metric measured in at least two runs (%s", keep);
        /* drop the trailing space before closing the parenthesis */
        {
            size_t n = strlen(p->note);
            if (n && p->note[n - 1] == ' ')
                p->note[n - 1] = '\0';
        }
        note_add(p->note, sizeof p->note, ").");
        goto out;
    }
    cols = panels > 1 ? 2 : 1;
    rows = (int)((panels + (size_t)cols - 1) / (size_t)cols);
    p->width = cols * 640;
    p->height = rows * 420 + 40;
    snprintf(p->caption, sizeof p->caption,
             "Each metric across every run in the database (x: runs in order of start time,"
             " labelled with the start date and run id), one line per job key (jobs.key, so"
             " the same job definition is followed from run to run; named after its latest"
             " run). Reads the same metrics as the table's columns.");
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp, "    set multiplot layout %d,%d title 'History across runs'\n", rows, cols);
    {
        size_t nr = xhi - xlo + 1, step = (nr + 11) / 12;
        fprintf(f.gp.fp, "    set xrange [%.1f:%.1f]\n    set xtics rotate by 30 right (",
                (double)xlo - 0.5, (double)xhi + 0.5);
        for (size_t r = xlo, first = 1; r <= xhi; r += step, first = 0) {
            char buf[128];
            snprintf(buf, sizeof buf, "%.10s #%lld", d->runs[r].started_at,
                     (long long)d->runs[r].id);
            fputs(first ? "" : ", ", f.gp.fp);
            rp_gp_string(f.gp.fp, buf);
            fprintf(f.gp.fp, " %zu", r);
        }
        fputs(")\n    set key outside right top font ',8'\n    set grid ytics\n"
              "    set offsets 0, 0, graph 0.05, graph 0.05\n",
              f.gp.fp);
    }
    for (size_t h = 0; h < nh; h++) {
        const char *unit;
        double div = unit_div(hist[h], &unit);
        char ylabel[128];
        range yr = {0, 0, 0};
        int first = 1;
        size_t color = 0;
        if (!panel_ok[h])
            continue;
        axis_label(ylabel, sizeof ylabel, hist[h]);
        fputs("    set autoscale y\n    set title ", f.gp.fp);
        rp_gp_string(f.gp.fp, ylabel);
        fputs("\n    set ylabel ", f.gp.fp);
        rp_gp_string(f.gp.fp, ylabel);
        fputc('\n', f.gp.fp);
        for (size_t j = 0; j < d->n_jobs; j++)
            if (hv[h * nj + j].has)
                range_add(&yr, hv[h * nj + j].v / div);
        gp_range(f.gp.fp, "y", &yr, 0);
        for (size_t a = 0; a < ndone;) {
            size_t b = a, cnt = 0;
            const rp_job *last = NULL;
            while (b < ndone && strcmp(d->jobs[order[b]].key, d->jobs[order[a]].key) == 0) {
                if (hv[h * nj + order[b]].has) {
                    cnt++;
                    last = &d->jobs[order[b]];
                }
                b++;
            }
            if (cnt > 0) {
                fprintf(f.dat.fp, "%s# index %zu: %s, job key %s\n# run_index %s run_id"
                                  " started_at\n",
                        idx ? "\n\n" : "", idx, rp_columns[hist[h]].key, last->key,
                        rp_columns[hist[h]].key);
                for (size_t q = a; q < b; q++) {
                    const rp_value *v = &hv[h * nj + order[q]];
                    const rp_job *j = &d->jobs[order[q]];
                    if (!v->has)
                        continue;
                    fprintf(f.dat.fp, "%zu ", j->run);
                    dat_num(f.dat.fp, v->v / div);
                    fprintf(f.dat.fp, " %lld ", (long long)j->run_id);
                    rp_dat_string(f.dat.fp, d->runs[j->run].started_at);
                    fputc('\n', f.dat.fp);
                }
                fprintf(f.gp.fp, "%s'%s.dat' index %zu using 1:2 with linespoints pt 7 ps 0.6"
                                 " lw 2 lc rgb '%s' title ",
                        first ? "    plot " : ", \\\n         ", p->name, idx,
                        palette[color % PALETTE_N]);
                rp_gp_string(f.gp.fp, last->name);
                first = 0;
                idx++;
                color++;
            }
            a = b;
        }
        fputc('\n', f.gp.fp);
    }
    gp_end(f.gp.fp, 1);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(mask);
    eb_free(runs_seen);
    eb_free(panel_ok);
    eb_free(hv);
    eb_free(order);
    return s;
}

/* ---- quality against sparsity ------------------------------------------- */

/* The series a job belongs to in the sparsity plot: method, arch, seed and
 * its chain with every numeric ":value" dropped ("ensemble -> prune:0.9 ->
 * quantize:int8" -> "ensemble -> prune -> quantize:int8"), so the points
 * of one pruning recipe at several sparsities form one line. */
static void sparsity_series(const rp_job *j, char *out, size_t cap)
{
    size_t used = 0;
    /* pruned outside a chain (edgebayes eval of a pruned file): its label */
    const int from_name = !j->chain[0];
    const char *c = from_name ? j->name : j->chain;
    while (*c && (!from_name || *c != '/') && used + 1 < cap) {
        if (*c == ':') {
            const char *e = c + 1;
            char *end;
            while (*e && *e != ' ')
                e++;
            strtod(c + 1, &end);
            if (end == e && e > c + 1) {
                c = e;
                continue;
            }
        }
        out[used++] = *c++;
    }
    out[used < cap ? used : cap - 1] = '\0';
    used = strlen(out);
    snprintf(out + used, cap - used, " (%s, s%lld)", j->arch, (long long)j->seed);
}

typedef struct sp_point {
    double x;
    size_t job;
} sp_point;

static int sp_cmp(const void *a, const void *b)
{
    const sp_point *x = a, *y = b;
    return (x->x > y->x) - (x->x < y->x);
}

static const size_t sparsity_metrics[] = {RP_COL_ACCURACY, RP_COL_NLL, RP_COL_ECE,
                                          RP_COL_OOD_ENTROPY};
#define N_SPARSITY_METRICS (sizeof sparsity_metrics / sizeof sparsity_metrics[0])

static eb_status plot_sparsity(rp_plot *p, const rp_table *t, const char *dir, eb_error *err)
{
    rp_db *d = t->d;
    size_t n = d->n_rows ? d->n_rows : 1, n_series = 0, k = 0;
    char (*names)[192] = NULL, key[192];
    size_t *series_of = NULL; /* (n_rows) series index, SIZE_MAX: none */
    sp_point *pts = NULL;
    int rows, cols;
    pfiles f;
    eb_status s = EB_OK;

    snprintf(p->title, sizeof p->title, "Quality against sparsity");
    names = eb_malloc(n * sizeof *names);
    series_of = eb_malloc(n * sizeof *series_of);
    pts = eb_malloc(n * sizeof *pts);
    if (!names || !series_of || !pts) {
        s = eb_error_set(err, EB_ERR_NOMEM, "out of memory for the %s plot", p->name);
        goto out;
    }
    /* series of the pruned jobs */
    for (size_t r = 0; r < d->n_rows; r++) {
        const rp_value *v = rp_table_value(t, RP_COL_SPARSITY, d->rows[r]);
        size_t i;
        series_of[r] = SIZE_MAX;
        if (!v->has || v->v <= 0.0)
            continue;
        sparsity_series(&d->jobs[d->rows[r]], key, sizeof key);
        for (i = 0; i < n_series && strcmp(names[i], key); i++)
            ;
        if (i == n_series)
            snprintf(names[n_series++], sizeof names[0], "%s", key);
        series_of[r] = i;
    }
    if (n_series == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: no job has a pruned bundle (metric compression/sparsity above 0);"
                 " add chains with a prune step to the suite.");
        goto out;
    }
    snprintf(p->caption, sizeof p->caption,
             "Accuracy, NLL, ECE and OOD AUROC (entropy) against the share of weights pruned"
             " (metric compression/sparsity), one line per pruning recipe: method, transform"
             " chain without its numeric step values, architecture and seed. Each line starts"
             " at the unpruned posterior of the same method, architecture and seed (sparsity"
             " 0) when the run has it.");
    layout_for(N_SPARSITY_METRICS, &rows, &cols);
    p->width = cols * 560;
    p->height = rows * (440 + 14 * (int)(n_series < 12 ? n_series : 12)) + 40;
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK)
        goto out;
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp, "    set multiplot layout %d,%d title ", rows, cols);
    rp_gp_string(f.gp.fp, p->title);
    fputs("\n    set key below font ',8'\n    set xlabel 'sparsity'\n", f.gp.fp);
    for (size_t m = 0; m < N_SPARSITY_METRICS; m++) {
        const size_t mc = sparsity_metrics[m];
        char ylabel[128];
        int first = 1;
        axis_label(ylabel, sizeof ylabel, mc);
        fputs("    set autoscale\n    unset logscale\n    set xrange [-0.02:1]\n    set title ",
              f.gp.fp);
        rp_gp_string(f.gp.fp, rp_columns[mc].heading);
        fputs("\n    set ylabel ", f.gp.fp);
        rp_gp_string(f.gp.fp, ylabel);
        fputc('\n', f.gp.fp);
        {
            int any = 0;
            for (size_t r = 0; r < d->n_rows; r++)
                any |= series_of[r] != SIZE_MAX && rp_table_value(t, mc, d->rows[r])->has;
            if (!any) { /* no pruned job has this metric */
                fputs("    set label 1 'no data' at graph 0.5,0.5 center\n"
                      "    set yrange [0:1]\n    plot NaN notitle\n    unset label 1\n",
                      f.gp.fp);
                continue;
            }
        }
        fputs("    plot ", f.gp.fp);
        for (size_t si = 0; si < n_series; si++) {
            size_t np = 0;
            for (size_t r = 0; r < d->n_rows; r++) {
                const rp_job *j = &d->jobs[d->rows[r]];
                const rp_value *vy = rp_table_value(t, mc, d->rows[r]);
                const rp_value *vx = rp_table_value(t, RP_COL_SPARSITY, d->rows[r]);
                int dense_anchor = 0;
                if (!vy->has)
                    continue;
                if (series_of[r] != si) {
                    /* the unpruned job of this series' method, arch and seed */
                    char own[192];
                    if (j->chain[0] || (vx->has && vx->v > 0.0))
                        continue;
                    snprintf(own, sizeof own, "%s", names[si]);
                    {
                        /* the chain starts with the base method's label, which is
                         * the first part of the unpruned job's name */
                        char *arrow = strstr(own, " -> "), *paren = strstr(own, " (");
                        size_t mlen = arrow ? (size_t)(arrow - own) : paren ? (size_t)(paren - own)
                                                                          : strlen(own);
                        const char *slash = strchr(j->name, '/');
                        size_t llen = slash ? (size_t)(slash - j->name) : strlen(j->name);
                        char tail[96];
                        snprintf(tail, sizeof tail, " (%s, s%lld)", j->arch, (long long)j->seed);
                        if (llen != mlen || strncmp(own, j->name, mlen) || !paren ||
                            strcmp(paren, tail))
                            continue;
                    }
                    dense_anchor = 1;
                }
                pts[np].x = dense_anchor ? 0.0 : vx->v;
                pts[np].job = d->rows[r];
                np++;
            }
            if (np == 0)
                continue;
            qsort(pts, np, sizeof *pts, sp_cmp);
            fprintf(f.dat.fp, "%s# index %zu: %s against sparsity, %s\n# sparsity %s job\n",
                    k ? "\n\n" : "", k, rp_columns[mc].heading, names[si], rp_columns[mc].key);
            for (size_t i = 0; i < np; i++) {
                dat_num(f.dat.fp, pts[i].x);
                fputc(' ', f.dat.fp);
                dat_num(f.dat.fp, rp_table_value(t, mc, pts[i].job)->v);
                fputc(' ', f.dat.fp);
                rp_dat_string(f.dat.fp, d->jobs[pts[i].job].label);
                fputc('\n', f.dat.fp);
            }
            fprintf(f.gp.fp, "%s'%s.dat' index %zu using 1:2 with linespoints pt 7 ps 0.7 lw 2"
                             " lc rgb '%s' title ",
                    first ? "" : ", \\\n         ", p->name, k, palette[si % PALETTE_N]);
            rp_gp_string(f.gp.fp, names[si]);
            first = 0;
            k++;
        }
        fputc('\n', f.gp.fp);
    }
    gp_end(f.gp.fp, 1);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
out:
    eb_free(names);
    eb_free(series_of);
    eb_free(pts);
    return s;
}

/* ---- runtime benchmark: latency against S ----------------------------- */

/* One panel per architecture of the latest bench-runtime run (see
 * runtime.c): median latency against S, log-log, one line per (case
 * family, strategy) of edgebayes, the roofline bound per family (dashed)
 * and PyTorch's fastest variant per case (dotted). */
static eb_status plot_runtime(rp_plot *p, const rp_table *t, const char *dir, eb_error *err)
{
    rp_runtime rt;
    pfiles f;
    size_t idx = 0, panels = 0;
    eb_status s;

    snprintf(p->title, sizeof p->title, "Runtime: latency against S");
    if ((s = rp_runtime_load(t->d, &rt, err)) != EB_OK)
        return s;
    if (rt.n == 0) {
        snprintf(p->note, sizeof p->note,
                 "Skipped: the database holds no run of suite bench-runtime with latency rows"
                 " (bench/runtime.c; jobs runtime/<case>/<strategy>/<side>, metric latency/p50).");
        rp_runtime_free(&rt);
        return EB_OK;
    }
    for (size_t i = 0; i < rt.n; i++)
        if (i == 0 || strcmp(rt.rows[i].arch, rt.rows[i - 1].arch))
            panels++;
    p->width = (int)panels * 560 + 40;
    p->height = 480;
    snprintf(p->caption, sizeof p->caption,
             "Median single-input latency (ms, log scale) against the number of posterior"
             " draws S (log scale) from bench-runtime run #%lld, one panel per architecture:"
             " a solid line per case family (the case without its S) and CPU strategy, the"
             " roofline bound max(weight bytes / read bandwidth, FLOPs / peak FLOP/s) per"
             " family dashed, and PyTorch's fastest variant per case dotted. Reads latency/p50"
             " and roofline/bound_seconds of the jobs runtime/<case>/<strategy>/<side>.",
             (long long)rt.run_id);
    if ((s = files_open(&f, dir, p->name, err)) != EB_OK) {
        rp_runtime_free(&rt);
        return s;
    }
    gp_begin(f.gp.fp, p);
    fprintf(f.gp.fp,
            "    set multiplot layout 1,%zu title 'Latency against S (bench-runtime run #%lld)'\n"
            "    set logscale xy\n    set grid xtics ytics mxtics mytics\n"
            "    set key top left font ',8'\n    set xlabel 'S (posterior draws)'\n"
            "    set ylabel 'median latency (ms)'\n    set offsets graph 0.05, graph 0.05, 0, 0\n",
            panels, (long long)rt.run_id);
    for (size_t a = 0; a < rt.n;) {
        size_t b = a, color = 0;
        int first = 1;
        while (b < rt.n && !strcmp(rt.rows[b].arch, rt.rows[a].arch))
            b++;
        fputs("    set title ", f.gp.fp);
        rp_gp_string(f.gp.fp, rt.rows[a].arch);
        fputc('\n', f.gp.fp);
        /* rows a..b are sorted by family, S, side, strategy */
        for (size_t fa = a; fa < b;) {
            size_t fb = fa;
            while (fb < b && !strcmp(rt.rows[fb].family, rt.rows[fa].family))
                fb++;
            /* edgebayes: one series per strategy of this family */
            for (size_t i = fa; i < fb; i++) {
                const rp_rt_row *r = &rt.rows[i];
                int seen = 0, any = 0;
                char title[160];
                if (strcmp(r->side, "edgebayes"))
                    continue;
                for (size_t k = fa; k < i && !seen; k++)
                    seen = !strcmp(rt.rows[k].side, "edgebayes") &&
                           !strcmp(rt.rows[k].strategy, r->strategy);
                if (seen)
                    continue;
                /* a strategy with no latency (a load probe's row) draws nothing */
                for (size_t k = fa; k < fb && !any; k++)
                    any = !strcmp(rt.rows[k].side, "edgebayes") &&
                          !strcmp(rt.rows[k].strategy, r->strategy) && isfinite(rt.rows[k].median);
                if (!any)
                    continue;
                any = 0;
                fprintf(f.dat.fp, "%s# index %zu: %s, %s, edgebayes strategy %s\n# S median_ms\n",
                        idx ? "\n\n" : "", idx, r->arch, r->family, r->strategy);
                for (size_t k = fa; k < fb; k++)
                    if (!strcmp(rt.rows[k].side, "edgebayes") &&
                        !strcmp(rt.rows[k].strategy, r->strategy) && isfinite(rt.rows[k].median)) {
                        fprintf(f.dat.fp, "%lld ", (long long)rt.rows[k].S);
                        dat_num(f.dat.fp, rt.rows[k].median * 1e3);
                        fputc('\n', f.dat.fp);
                        any = 1;
                    }
                if (!any)
                    fputs("NaN NaN\n", f.dat.fp);
                snprintf(title, sizeof title, "%s %s", r->family, r->strategy);
                fprintf(f.gp.fp, "%s'%s.dat' index %zu using 1:2 with linespoints pt 7 ps 0.7"
                                 " lw 2 lc rgb '%s' title ",
                        first ? "    plot " : ", \\\n         ", p->name, idx,
                        palette[color % PALETTE_N]);
                rp_gp_string(f.gp.fp, title);
                first = 0;
                idx++;
                color++;
            }
            /* the bound of each case of the family (the smallest any row stored) */
            {
                int any = 0;
                char title[160];
                fprintf(f.dat.fp, "%s# index %zu: %s, %s, roofline bound\n# S bound_ms\n",
                        idx ? "\n\n" : "", idx, rt.rows[fa].arch, rt.rows[fa].family);
                for (size_t k = fa; k < fb;) {
                    size_t e = k;
                    double best = NAN;
                    while (e < fb && rt.rows[e].S == rt.rows[k].S) {
                        if (isfinite(rt.rows[e].bound) && !(rt.rows[e].bound >= best))
                            best = rt.rows[e].bound;
                        e++;
                    }
                    if (isfinite(best)) {
                        fprintf(f.dat.fp, "%lld ", (long long)rt.rows[k].S);
                        dat_num(f.dat.fp, best * 1e3);
                        fputc('\n', f.dat.fp);
                        any = 1;
                    }
                    k = e;
                }
                if (!any)
                    fputs("NaN NaN\n", f.dat.fp);
                snprintf(title, sizeof title, "%s bound", rt.rows[fa].family);
                fprintf(f.gp.fp, "%s'%s.dat' index %zu using 1:2 with lines dt 2 lw 1.5"
                                 " lc rgb '#000000' title ",
                        first ? "    plot " : ", \\\n         ", p->name, idx);
                rp_gp_string(f.gp.fp, title);
                first = 0;
                idx++;
            }
            /* PyTorch: the fastest variant at each S */
            {
                int any = 0;
                char title[160];
                for (size_t k = fa; k < fb;) {
                    size_t e = k, best = SIZE_MAX;
                    while (e < fb && rt.rows[e].S == rt.rows[k].S) {
                        if (!strcmp(rt.rows[e].side, "pytorch") && isfinite(rt.rows[e].median) &&
                            (best == SIZE_MAX || rt.rows[e].median < rt.rows[best].median))
                            best = e;
                        e++;
                    }
                    if (best != SIZE_MAX) {
                        if (!any)
                            fprintf(f.dat.fp,
                                    "%s# index %zu: %s, %s, pytorch fastest variant\n"
                                    "# S median_ms variant\n",
                                    idx ? "\n\n" : "", idx, rt.rows[fa].arch, rt.rows[fa].family);
                        fprintf(f.dat.fp, "%lld ", (long long)rt.rows[best].S);
                        dat_num(f.dat.fp, rt.rows[best].median * 1e3);
                        fputc(' ', f.dat.fp);
                        rp_dat_string(f.dat.fp, rt.rows[best].strategy);
                        fputc('\n', f.dat.fp);
                        any = 1;
                    }
                    k = e;
                }
                if (any) {
                    snprintf(title, sizeof title, "%s PyTorch (fastest)", rt.rows[fa].family);
                    fprintf(f.gp.fp, "%s'%s.dat' index %zu using 1:2 with linespoints dt 3"
                                     " pt 6 lw 2 lc rgb '#aa3377' title ",
                            first ? "    plot " : ", \\\n         ", p->name, idx);
                    rp_gp_string(f.gp.fp, title);
                    first = 0;
                    idx++;
                }
            }
            fa = fb;
        }
        fputc('\n', f.gp.fp);
        a = b;
    }
    gp_end(f.gp.fp, 1);
    rp_runtime_free(&rt);
    if ((s = files_commit(&f, err)) == EB_OK)
        p->written = 1;
    return s;
}

/* ---- all plots ------------------------------------------------------ */

static const char *const plot_names[RP_N_PLOTS] = {
    [RP_PLOT_RELIABILITY] = "reliability",
    [RP_PLOT_OOD_ROC] = "ood_roc",
    [RP_PLOT_ADV_ACCURACY] = "adv_accuracy",
    [RP_PLOT_ADV_NLL] = "adv_nll",
    [RP_PLOT_SHIFT_ECE] = "shift_ece",
    [RP_PLOT_PARETO_LATENCY] = "pareto_latency",
    [RP_PLOT_PARETO_STORAGE] = "pareto_storage",
    [RP_PLOT_PARETO_MEMORY] = "pareto_memory",
    [RP_PLOT_LATENCY] = "latency",
    [RP_PLOT_HISTORY] = "history",
    [RP_PLOT_SPARSITY] = "sparsity",
    [RP_PLOT_RUNTIME] = "runtime",
};

eb_status rp_plots_write(rp_plot plots[RP_N_PLOTS], const rp_table *t, const char *plots_dir,
                         const size_t *history, size_t n_history, eb_error *err)
{
    rp_seriesset eps, shift;
    eb_status s;

    memset(plots, 0, RP_N_PLOTS * sizeof *plots);
    for (int i = 0; i < RP_N_PLOTS; i++)
        plots[i].name = plot_names[i];
    if ((s = plot_reliability(&plots[RP_PLOT_RELIABILITY], t, plots_dir, err)) != EB_OK ||
        (s = plot_roc(&plots[RP_PLOT_OOD_ROC], t, plots_dir, err)) != EB_OK)
        return s;
    s = rp_series_load(t->d,
                       "SELECT job_id, context, x, y FROM curves WHERE kind = 'eps' AND job_id IN"
                       " (SELECT id FROM jobs WHERE run_id IN (%s)) ORDER BY job_id, context, seq",
                       NULL, 2, &eps, err);
    if (s != EB_OK)
        return s;
    s = plot_eps(&plots[RP_PLOT_ADV_ACCURACY], t, &eps, "accuracy", "Accuracy", "accuracy",
                 plots_dir, err);
    if (s == EB_OK)
        s = plot_eps(&plots[RP_PLOT_ADV_NLL], t, &eps, "nll", "NLL", "NLL (nats)", plots_dir,
                     err);
    rp_series_free(&eps);
    if (s != EB_OK)
        return s;
    s = rp_series_load(t->d,
                       "SELECT job_id, context, x, y FROM curves WHERE kind = 'shift' AND job_id IN"
                       " (SELECT id FROM jobs WHERE run_id IN (%s)) ORDER BY job_id, context, seq",
                       NULL, 2, &shift, err);
    if (s != EB_OK)
        return s;
    s = plot_shift(&plots[RP_PLOT_SHIFT_ECE], t, &shift, plots_dir, err);
    rp_series_free(&shift);
    if (s != EB_OK)
        return s;
    if ((s = plot_pareto(&plots[RP_PLOT_PARETO_LATENCY], t, RP_COL_LATENCY, "latency p50",
                         plots_dir, err)) != EB_OK ||
        (s = plot_pareto(&plots[RP_PLOT_PARETO_STORAGE], t, RP_COL_BUNDLE_BYTES,
                         "storage (bundle bytes)", plots_dir, err)) != EB_OK ||
        (s = plot_pareto(&plots[RP_PLOT_PARETO_MEMORY], t, RP_COL_PEAK_RSS,
                         "peak memory (RSS)", plots_dir, err)) != EB_OK ||
        (s = plot_latency(&plots[RP_PLOT_LATENCY], t, plots_dir, err)) != EB_OK ||
        (s = plot_history(&plots[RP_PLOT_HISTORY], t, history, n_history, plots_dir, err)) !=
            EB_OK ||
        (s = plot_sparsity(&plots[RP_PLOT_SPARSITY], t, plots_dir, err)) != EB_OK ||
        (s = plot_runtime(&plots[RP_PLOT_RUNTIME], t, plots_dir, err)) != EB_OK)
        return s;
    return EB_OK;
}

void rp_plots_free(rp_plot plots[RP_N_PLOTS])
{
    for (int i = 0; i < RP_N_PLOTS; i++) {
        eb_free(plots[i].warnings);
        plots[i].warnings = NULL;
    }
}
