/* compare.c: the statistics of the nightly comparison.
 *
 * Owns the Mann-Whitney U test (fast: sort both samples and merge, with
 * midranks for ties; naive reference: count every pair) and the verdict
 * rules that turn two runs into a structured comparison. The rules are
 * written out in docs/results.md; in short, a regression needs both
 * evidence (a one-sided test or disjoint intervals) and a minimum effect,
 * so noise alone cannot fail a nightly and a significant but negligible
 * change does not either. Nothing here prints: the CLI formats. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "results/results_internal.h"

/* ---- Names and defaults ------------------------------------------------ */

const char *eb_results_verdict_name(eb_results_verdict v)
{
    static const char *const names[] = {"same", "better", "worse", "new", "missing",
                                        "incomparable"};
    if ((int)v < 0 || v >= EB_RESULTS_VERDICT_COUNT_)
        return "unknown";
    return names[v];
}

const char *eb_results_rule_name(eb_results_rule r)
{
    static const char *const names[] = {"none", "mann-whitney", "samples", "intervals",
                                        "threshold", "single-timing", "informational"};
    if ((int)r < 0 || (size_t)r >= sizeof names / sizeof names[0])
        return "unknown";
    return names[r];
}

void eb_results_compare_defaults(eb_results_compare_config *cfg)
{
    cfg->alpha = 0.01;
    cfg->latency_min_effect = 0.05;
    cfg->quality_min_effect = 0.01;
    cfg->threshold = 0.05;
    cfg->noisy_threshold = 1.0;
    cfg->missing_regresses = 0;
}

/* ---- Mann-Whitney U ------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* x (nx) and y (ny) sorted ascending: U of x with midranks for ties, and
 * the tie term sum over groups of equal values of t^3 - t. One merge pass
 * over both: each group of equal values spans ranks r+1 .. r+t, so its
 * midrank is r + (t + 1) / 2. */
static void mw_sorted(const double *x, size_t nx, const double *y, size_t ny, double *u,
                      double *tie)
{
    size_t i = 0, j = 0;
    double rank = 0, rx = 0, t3 = 0;

    while (i < nx || j < ny) {
        double v = i < nx && (j >= ny || x[i] <= y[j]) ? x[i] : y[j];
        size_t cx = 0, cy = 0;
        double t, mid;
        while (i + cx < nx && x[i + cx] == v)
            cx++;
        while (j + cy < ny && y[j + cy] == v)
            cy++;
        t = (double)(cx + cy);
        mid = rank + (t + 1) / 2;
        rx += (double)cx * mid;
        t3 += t * t * t - t;
        rank += t;
        i += cx;
        j += cy;
    }
    *u = rx - (double)nx * ((double)nx + 1) / 2;
    *tie = t3;
}

void eb_results__mann_whitney_naive(const double *x, size_t nx, const double *y, size_t ny,
                                    double *u, double *tie_term)
{
    double count = 0, t3 = 0;
    size_t n = nx + ny;

    for (size_t i = 0; i < nx; i++)
        for (size_t j = 0; j < ny; j++)
            count += x[i] > y[j] ? 1.0 : x[i] == y[j] ? 0.5 : 0.0;
    /* Each of the t members of a tie group sees t equal values (itself
     * included), so summing t^2 - 1 over members gives t^3 - t per group. */
    for (size_t k = 0; k < n; k++) {
        double v = k < nx ? x[k] : y[k - nx], t = 0;
        for (size_t m = 0; m < n; m++)
            t += (m < nx ? x[m] : y[m - nx]) == v;
        t3 += t * t - 1;
    }
    *u = count;
    *tie_term = t3;
}

double eb_results__mann_whitney_p(double u, size_t nx, size_t ny, double tie_term,
                                  eb_results_alternative alt)
{
    double n1 = (double)nx, n2 = (double)ny, n = n1 + n2;
    double mu = n1 * n2 / 2, s2, z, p, stat, f = 1;

    s2 = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)));
    if (alt == EB_RESULTS_GREATER) {
        stat = u;
    } else if (alt == EB_RESULTS_LESS) {
        stat = n1 * n2 - u;
    } else {
        stat = fmax(u, n1 * n2 - u);
        f = 2;
    }
    /* Every value tied: no evidence either way (scipy: z = -inf, p = 1). */
    if (!(s2 > 0))
        return 1.0;
    z = (stat - mu - 0.5) / sqrt(s2);
    p = f * 0.5 * erfc(z / sqrt(2.0)); /* normal survival function */
    return p > 1 ? 1 : p < 0 ? 0 : p;
}

static eb_status check_sample(const double *v, size_t n, const char *name, eb_error *err)
{
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "Mann-Whitney test: sample %s is empty", name);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return eb_error_set(err, EB_ERR_ARG,
                                "Mann-Whitney test: value %zu of sample %s is %g, not finite", i,
                                name, v[i]);
    return EB_OK;
}

static double median_sorted(const double *v, size_t n)
{
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Sorts copies of x and y into scratch (nx + ny) and fills U of x, the
 * tie term and both medians. */
static void mw_core(const double *x, size_t nx, const double *y, size_t ny, double *scratch,
                    double *u, double *tie, double *xmed, double *ymed)
{
    double *xs = scratch, *ys = scratch + nx;
    memcpy(xs, x, nx * sizeof *xs);
    memcpy(ys, y, ny * sizeof *ys);
    qsort(xs, nx, sizeof *xs, cmp_double);
    qsort(ys, ny, sizeof *ys, cmp_double);
    mw_sorted(xs, nx, ys, ny, u, tie);
    *xmed = median_sorted(xs, nx);
    *ymed = median_sorted(ys, ny);
}

eb_status eb_results_mann_whitney(const double *x, size_t nx, const double *y, size_t ny,
                                  eb_results_alternative alt, double *u, double *p,
                                  eb_error *err)
{
    double *scratch, tie, xmed, ymed;
    size_t n;
    eb_status st;

    if ((st = check_sample(x, nx, "x", err)) != EB_OK ||
        (st = check_sample(y, ny, "y", err)) != EB_OK)
        return st;
    if (alt != EB_RESULTS_GREATER && alt != EB_RESULTS_LESS && alt != EB_RESULTS_TWO_SIDED)
        return eb_error_set(err, EB_ERR_ARG, "Mann-Whitney test: unknown alternative %d",
                            (int)alt);
    if (eb_size_add(nx, ny, &n) || eb_size_mul(n, sizeof(double), &n) ||
        !(scratch = eb_malloc(n)))
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory for a Mann-Whitney test of %zu and %zu samples", nx,
                            ny);
    mw_core(x, nx, y, ny, scratch, u, &tie, &xmed, &ymed);
    eb_free(scratch);
    *p = eb_results__mann_whitney_p(*u, nx, ny, tie, alt);
    return EB_OK;
}

/* ---- Verdicts ---------------------------------------------------------------- */

static void set_deltas(eb_results_compare_item *it)
{
    it->delta = it->cand - it->base;
    it->rel_delta = it->base != 0 ? it->delta / fabs(it->base) : NAN;
}

static int same_text(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Metrics measured once, whose noise the database holds no estimate of. */
static int single_timing(const eb_results_metric *m)
{
    static const char *const facets[] = {"load", "throughput", "training"};
    for (size_t i = 0; i < sizeof facets / sizeof facets[0]; i++)
        if (!strcmp(m->facet, facets[i]))
            return 1;
    if (!strcmp(m->facet, "memory"))
        return strcmp(m->name, "model_bytes") && strcmp(m->name, "param_bytes");
    return !strcmp(m->facet, "latency") && !strcmp(m->name, "first_prediction");
}

/* Metrics that record how a job was run rather than how well it did. */
static int informational(const eb_results_metric *m)
{
    return (!strcmp(m->facet, "training") && !strcmp(m->name, "from_cache")) ||
           !strcmp(m->facet, "compression");
}

/* The verdict of one metric present in both jobs. */
static void judge_metric(eb_results_compare_item *it, const eb_results_metric *b,
                         const eb_results_metric *c, const eb_results_compare_config *cfg)
{
    double gain;

    if (!same_text(b->unit, c->unit) || b->higher_is_better != c->higher_is_better ||
        !same_text(b->convention, c->convention)) {
        it->verdict = EB_RESULTS_INCOMPARABLE;
        return;
    }
    if (isnan(b->value) && isnan(c->value)) {
        it->verdict = EB_RESULTS_SAME; /* undefined on both sides */
        return;
    }
    if (isnan(b->value) || isnan(c->value)) {
        it->verdict = EB_RESULTS_INCOMPARABLE;
        return;
    }
    if (informational(b)) {
        it->rule = EB_RESULTS_RULE_INFORMATIONAL;
        it->verdict = EB_RESULTS_SAME;
        return;
    }
    gain = c->higher_is_better ? it->delta : -it->delta; /* > 0: the candidate is better */
    if (b->has_ci && c->has_ci && fabs(b->ci_level - c->ci_level) < 1e-9) {
        double effect = cfg->quality_min_effect * fabs(b->value);
        int worse_apart = c->higher_is_better ? c->ci_high < b->ci_low : c->ci_low > b->ci_high;
        int better_apart = c->higher_is_better ? c->ci_low > b->ci_high : c->ci_high < b->ci_low;
        it->rule = EB_RESULTS_RULE_INTERVALS;
        it->verdict = gain < -effect && worse_apart   ? EB_RESULTS_WORSE
                      : gain > effect && better_apart ? EB_RESULTS_BETTER
                                                      : EB_RESULTS_SAME;
    } else {
        const int noisy = single_timing(b);
        double limit = (noisy ? cfg->noisy_threshold : cfg->threshold) * fabs(b->value);
        it->rule = noisy ? EB_RESULTS_RULE_SINGLE_TIMING : EB_RESULTS_RULE_THRESHOLD;
        it->verdict = gain < -limit  ? EB_RESULTS_WORSE
                      : gain > limit ? EB_RESULTS_BETTER
                                     : EB_RESULTS_SAME;
    }
}

/* The verdict of raw latency samples (lower is better): the candidate is
 * slower when the one-sided U test says so at alpha AND its median is at
 * least (1 + effect) times the base median; faster symmetrically. */
static void judge_samples(eb_results_compare_item *it, const eb_results_samples *b,
                          const eb_results_samples *c, double *scratch,
                          const eb_results_compare_config *cfg)
{
    double u, tie, cmed, bmed, e = cfg->latency_min_effect;

    mw_core(c->v, c->n, b->v, b->n, scratch, &u, &tie, &cmed, &bmed);
    it->base = bmed;
    it->cand = cmed;
    it->base_n = b->n;
    it->cand_n = c->n;
    set_deltas(it);
    it->p_worse = eb_results__mann_whitney_p(u, c->n, b->n, tie, EB_RESULTS_GREATER);
    it->p_better = eb_results__mann_whitney_p(u, c->n, b->n, tie, EB_RESULTS_LESS);
    it->rule = EB_RESULTS_RULE_MANN_WHITNEY;
    it->verdict = it->p_worse < cfg->alpha && cmed >= bmed * (1 + e)    ? EB_RESULTS_WORSE
                  : it->p_better < cfg->alpha && cmed * (1 + e) <= bmed ? EB_RESULTS_BETTER
                                                                        : EB_RESULTS_SAME;
}

/* ---- Building the comparison ------------------------------------------------------ */

/* Working state of one eb_results_compare call. */
typedef struct cmp_ctx {
    eb_results *db;
    const eb_results_compare_config *cfg;
    eb_results_comparison *c;
    eb_results__arena **mem;
    eb_results_compare_item *items; /* scratch items of the current job, reused */
    size_t n_items, cap_items;
    double *scratch; /* sample sort buffer, reused */
    size_t cap_scratch;
    eb_error *err;
} cmp_ctx;

static eb_status nomem(cmp_ctx *x)
{
    return eb_error_set(x->err, EB_ERR_NOMEM, "out of memory comparing runs %" PRId64
                        " and %" PRId64 " in '%s'",
                        x->c->base_run, x->c->cand_run, x->db->path);
}

/* A new zeroed item with NAN values; NULL when out of memory. */
static eb_results_compare_item *new_item(cmp_ctx *x)
{
    eb_results_compare_item *grown =
        eb_results__vec_room(x->items, x->n_items, &x->cap_items, sizeof *x->items), *it;
    if (!grown)
        return NULL;
    x->items = grown;
    it = &x->items[x->n_items++];
    it->base = it->cand = it->delta = it->rel_delta = NAN;
    it->base_ci_low = it->base_ci_high = it->base_ci_level = NAN;
    it->cand_ci_low = it->cand_ci_high = it->cand_ci_level = NAN;
    it->p_worse = it->p_better = NAN;
    return it;
}

/* Copies a metric's description and one side's value into the item. */
static int put_side(cmp_ctx *x, eb_results_compare_item *it, const eb_results_metric *m,
                    int cand)
{
    int ok = 1;
    if (!it->facet) {
        it->facet = eb_results__arena_strdup(x->mem, m->facet, &ok);
        it->name = eb_results__arena_strdup(x->mem, m->name, &ok);
        it->context = eb_results__arena_strdup(x->mem, m->context ? m->context : "", &ok);
        it->unit = eb_results__arena_strdup(x->mem, m->unit ? m->unit : "", &ok);
        it->higher_is_better = m->higher_is_better;
    }
    if (cand) {
        it->cand = m->value;
        it->cand_has_ci = m->has_ci;
        it->cand_ci_low = m->ci_low;
        it->cand_ci_high = m->ci_high;
        it->cand_ci_level = m->ci_level;
    } else {
        it->base = m->value;
        it->base_has_ci = m->has_ci;
        it->base_ci_low = m->ci_low;
        it->base_ci_high = m->ci_high;
        it->base_ci_level = m->ci_level;
    }
    return ok;
}

/* Ordering of metrics as SQLite's ORDER BY facet, name, context returns
 * them (BINARY collation: memcmp, like strcmp on NUL-free text). */
static int metric_cmp(const eb_results_metric *a, const eb_results_metric *b)
{
    int r = strcmp(a->facet, b->facet);
    if (!r)
        r = strcmp(a->name, b->name);
    if (!r)
        r = strcmp(a->context ? a->context : "", b->context ? b->context : "");
    return r;
}

/* The latency sample kinds of either job, ordered. */
static eb_status sample_kinds(cmp_ctx *x, int64_t bj, int64_t cj, char ***kinds, size_t *n)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc, ok = 1;
    char **v = NULL;

    *kinds = NULL;
    *n = 0;
    rc = sqlite3_prepare_v2(x->db->sql,
                            "SELECT DISTINCT kind FROM latency_samples WHERE job_id IN (?1, ?2) "
                            "ORDER BY kind",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, bj);
        sqlite3_bind_int64(st, 2, cj);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            char **grown = eb_results__vec_room(v, *n, &cap, sizeof *v);
            if (!grown) {
                ok = 0;
                break;
            }
            v = grown;
            v[*n] = eb_results__arena_strdup(x->mem, (const char *)sqlite3_column_text(st, 0),
                                             &ok);
            if (!ok)
                break;
            (*n)++;
        }
    }
    sqlite3_finalize(st);
    if (!ok) {
        eb_free(v);
        *n = 0;
        return nomem(x);
    }
    if (rc != SQLITE_DONE) {
        eb_free(v);
        *n = 0;
        return eb_results__sql_error(x->db->sql, x->err, "reading latency kinds in '%s'",
                                     x->db->path);
    }
    *kinds = v;
    return EB_OK;
}

/* Items of one latency sample kind; *verdict gets the samples' verdict
 * (or -1 when the kind is not on both sides). */
static eb_status compare_kind(cmp_ctx *x, int64_t bj, int64_t cj, const char *kind,
                              int *verdict)
{
    eb_results_samples bs, cs;
    eb_results_compare_item *it;
    eb_status st;
    int ok = 1;
    char context[256];

    *verdict = -1;
    if ((st = eb_results_latency(x->db, bj, kind, &bs, x->err)) != EB_OK)
        return st;
    if ((st = eb_results_latency(x->db, cj, kind, &cs, x->err)) != EB_OK) {
        eb_results_samples_free(&bs);
        return st;
    }
    if (!(it = new_item(x))) {
        st = nomem(x);
        goto done;
    }
    snprintf(context, sizeof context, "kind=%s", kind);
    it->facet = eb_results__arena_strdup(x->mem, "latency", &ok);
    it->name = eb_results__arena_strdup(x->mem, "samples", &ok);
    it->context = eb_results__arena_strdup(x->mem, context, &ok);
    it->unit = eb_results__arena_strdup(x->mem, "s", &ok);
    if (!ok) {
        st = nomem(x);
        goto done;
    }
    it->base_n = bs.n;
    it->cand_n = cs.n;
    if (bs.n == 0 || cs.n == 0) {
        it->verdict = bs.n ? EB_RESULTS_MISSING : EB_RESULTS_NEW;
        goto done;
    }
    if (bs.n + cs.n > x->cap_scratch) {
        double *grown = eb_realloc(x->scratch, (bs.n + cs.n) * sizeof *grown);
        if (!grown) {
            st = nomem(x);
            goto done;
        }
        x->scratch = grown;
        x->cap_scratch = bs.n + cs.n;
    }
    judge_samples(it, &bs, &cs, x->scratch, x->cfg);
    *verdict = (int)it->verdict;
done:
    eb_results_samples_free(&bs);
    eb_results_samples_free(&cs);
    return st;
}

/* Fills x->items for a job present and done on both sides. */
static eb_status compare_jobs(cmp_ctx *x, int64_t bj, int64_t cj)
{
    eb_results_metric_list bm, cm;
    char **kinds = NULL;
    size_t nkinds = 0, i = 0, j = 0;
    int single = -1;
    eb_status st;

    x->n_items = 0;
    memset(&bm, 0, sizeof bm);
    memset(&cm, 0, sizeof cm);
    if ((st = sample_kinds(x, bj, cj, &kinds, &nkinds)) != EB_OK)
        return st;
    if ((st = eb_results_metrics(x->db, bj, &bm, x->err)) != EB_OK ||
        (st = eb_results_metrics(x->db, cj, &cm, x->err)) != EB_OK)
        goto done;
    /* Samples first: the latency metrics take the "single" verdict. */
    for (size_t k = 0; k < nkinds; k++) {
        int v;
        if ((st = compare_kind(x, bj, cj, kinds[k], &v)) != EB_OK)
            goto done;
        if (strcmp(kinds[k], "single") == 0)
            single = v;
    }
    while (i < bm.n || j < cm.n) {
        int order = i >= bm.n ? 1 : j >= cm.n ? -1 : metric_cmp(&bm.v[i], &cm.v[j]);
        eb_results_compare_item *it = new_item(x);
        if (!it) {
            st = nomem(x);
            goto done;
        }
        if (order < 0) {
            if (!put_side(x, it, &bm.v[i++], 0))
                goto oom;
            it->verdict = EB_RESULTS_MISSING;
        } else if (order > 0) {
            if (!put_side(x, it, &cm.v[j++], 1))
                goto oom;
            it->verdict = EB_RESULTS_NEW;
        } else {
            const eb_results_metric *b = &bm.v[i++], *c = &cm.v[j++];
            if (!put_side(x, it, b, 0) || !put_side(x, it, c, 1))
                goto oom;
            set_deltas(it);
            judge_metric(it, b, c, x->cfg);
            /* A latency summary (p50, p99, ...) follows the test on the raw
             * samples it summarises, when both jobs have them: the test is
             * the evidence, the summary only the display. */
            if (strcmp(b->facet, "latency") == 0 && single >= 0 &&
                it->verdict != EB_RESULTS_INCOMPARABLE) {
                it->rule = EB_RESULTS_RULE_SAMPLES;
                it->verdict = (eb_results_verdict)single;
            }
        }
    }
    goto done;
oom:
    st = nomem(x);
done:
    eb_results_metric_list_free(&bm);
    eb_results_metric_list_free(&cm);
    eb_free(kinds);
    return st;
}

static int run_exists(eb_results *db, int64_t id, eb_error *err, const char *which)
{
    eb_results_run_list l;
    eb_results_scope scope = {id, NULL, NULL};
    int found;
    if (id <= 0) {
        eb_error_set(err, EB_ERR_NOTFOUND, "%s run %" PRId64 " does not exist in '%s'", which,
                     id, db->path);
        return 0;
    }
    if (eb_results_runs(db, &scope, &l, err) != EB_OK)
        return 0;
    found = l.n == 1;
    eb_results_run_list_free(&l);
    if (!found)
        eb_error_set(err, EB_ERR_NOTFOUND, "%s run %" PRId64 " does not exist in '%s'", which, id,
                     db->path);
    return found;
}

static eb_status check_config(const eb_results_compare_config *cfg, eb_error *err)
{
    if (!(cfg->alpha > 0 && cfg->alpha < 1))
        return eb_error_set(err, EB_ERR_ARG, "compare: alpha %g is not in (0, 1)", cfg->alpha);
    if (!(cfg->latency_min_effect >= 0) || !isfinite(cfg->latency_min_effect))
        return eb_error_set(err, EB_ERR_ARG, "compare: latency_min_effect %g is not >= 0",
                            cfg->latency_min_effect);
    if (!(cfg->quality_min_effect >= 0) || !isfinite(cfg->quality_min_effect))
        return eb_error_set(err, EB_ERR_ARG, "compare: quality_min_effect %g is not >= 0",
                            cfg->quality_min_effect);
    if (!(cfg->threshold >= 0) || !isfinite(cfg->threshold))
        return eb_error_set(err, EB_ERR_ARG, "compare: threshold %g is not >= 0",
                            cfg->threshold);
    if (!(cfg->noisy_threshold >= 0) || !isfinite(cfg->noisy_threshold))
        return eb_error_set(err, EB_ERR_ARG, "compare: noisy threshold %g is not >= 0",
                            cfg->noisy_threshold);
    return EB_OK;
}

/* Appends a job entry (strings copied) and returns it, or NULL. */
static eb_results_compare_job *new_job(cmp_ctx *x, size_t *cap, const eb_results_job *b,
                                       const eb_results_job *c)
{
    eb_results_comparison *cmp = x->c;
    eb_results_compare_job *grown = eb_results__vec_room(cmp->jobs, cmp->n_jobs, cap,
                                                         sizeof *cmp->jobs),
                           *j;
    const eb_results_job *any = c ? c : b;
    int ok = 1;
    if (!grown)
        return NULL;
    cmp->jobs = grown;
    j = &cmp->jobs[cmp->n_jobs++];
    j->key = eb_results__arena_strdup(x->mem, any->key, &ok);
    j->name = eb_results__arena_strdup(x->mem, any->name, &ok);
    if (b) {
        j->base_job = b->id;
        j->base_status = eb_results__arena_strdup(x->mem, b->status, &ok);
    }
    if (c) {
        j->cand_job = c->id;
        j->cand_status = eb_results__arena_strdup(x->mem, c->status, &ok);
        j->cand_error = eb_results__arena_strdup(x->mem, c->error, &ok);
    }
    return ok ? j : NULL;
}

/* Moves the scratch items into the arena as j's items and sets j's verdict. */
static int settle_job(cmp_ctx *x, eb_results_compare_job *j)
{
    int worse = 0, better = 0;
    if (x->n_items) {
        j->items = eb_results__arena_alloc(x->mem, x->n_items * sizeof *j->items);
        if (!j->items)
            return 0;
        memcpy(j->items, x->items, x->n_items * sizeof *j->items);
        j->n_items = x->n_items;
    }
    for (size_t k = 0; k < j->n_items; k++) {
        worse |= j->items[k].verdict == EB_RESULTS_WORSE;
        better |= j->items[k].verdict == EB_RESULTS_BETTER;
        x->c->item_counts[j->items[k].verdict]++;
    }
    j->verdict = worse ? EB_RESULTS_WORSE : better ? EB_RESULTS_BETTER : EB_RESULTS_SAME;
    return 1;
}

eb_status eb_results_compare(eb_results *db, int64_t base_run, int64_t cand_run,
                             const eb_results_compare_config *cfg, eb_results_comparison **out,
                             eb_error *err)
{
    eb_results_compare_config defaults;
    eb_results_job_list bl, cl;
    eb_results__arena *mem = NULL;
    cmp_ctx x;
    size_t i = 0, j = 0, cap_jobs = 0;
    int any_worse = 0, any_better = 0;
    eb_status st;

    *out = NULL;
    memset(&bl, 0, sizeof bl);
    memset(&cl, 0, sizeof cl);
    if (!cfg) {
        eb_results_compare_defaults(&defaults);
        cfg = &defaults;
    }
    if ((st = check_config(cfg, err)) != EB_OK)
        return st;
    if (!run_exists(db, base_run, err, "base") || !run_exists(db, cand_run, err, "candidate"))
        return err ? err->code : EB_ERR_NOTFOUND;
    memset(&x, 0, sizeof x);
    x.db = db;
    x.cfg = cfg;
    x.err = err;
    x.mem = &mem;
    if (!(x.c = eb_calloc(1, sizeof *x.c)))
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory comparing runs in '%s'", db->path);
    x.c->base_run = base_run;
    x.c->cand_run = cand_run;
    x.c->config = *cfg;
    if ((st = eb_results_jobs(db, base_run, &bl, err)) != EB_OK ||
        (st = eb_results_jobs(db, cand_run, &cl, err)) != EB_OK)
        goto done;

    /* Both lists are ordered by key: one merge pass matches them. */
    while (i < bl.n || j < cl.n) {
        int order = i >= bl.n ? 1 : j >= cl.n ? -1 : strcmp(bl.v[i].key, cl.v[j].key);
        const eb_results_job *b = order <= 0 ? &bl.v[i++] : NULL;
        const eb_results_job *c = order >= 0 ? &cl.v[j++] : NULL;
        eb_results_compare_job *job = new_job(&x, &cap_jobs, b, c);
        if (!job) {
            st = nomem(&x);
            goto done;
        }
        x.n_items = 0;
        if (!c) {
            job->verdict = EB_RESULTS_MISSING;
        } else if (!b) {
            job->verdict = EB_RESULTS_NEW;
        } else {
            int bdone = strcmp(b->status, "done") == 0, cdone = strcmp(c->status, "done") == 0;
            if (bdone && cdone && (st = compare_jobs(&x, b->id, c->id)) != EB_OK)
                goto done;
            if (!settle_job(&x, job)) {
                st = nomem(&x);
                goto done;
            }
            if (bdone != cdone)
                job->verdict = cdone ? EB_RESULTS_BETTER : EB_RESULTS_WORSE;
        }
        x.c->job_counts[job->verdict]++;
        any_worse |= job->verdict == EB_RESULTS_WORSE ||
                     (cfg->missing_regresses && job->verdict == EB_RESULTS_MISSING);
        any_better |= job->verdict == EB_RESULTS_BETTER;
    }
    x.c->overall = any_worse ? EB_RESULTS_WORSE : any_better ? EB_RESULTS_BETTER : EB_RESULTS_SAME;
    x.c->regression = any_worse;

done:
    eb_results_job_list_free(&bl);
    eb_results_job_list_free(&cl);
    eb_free(x.items);
    eb_free(x.scratch);
    x.c->mem_ = mem;
    if (st != EB_OK) {
        eb_results_comparison_free(x.c);
        return st;
    }
    *out = x.c;
    return EB_OK;
}

void eb_results_comparison_free(eb_results_comparison *c)
{
    if (!c)
        return;
    eb_free(c->jobs);
    eb_results__arena_free(c->mem_);
    eb_free(c);
}
