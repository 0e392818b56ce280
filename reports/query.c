/* query.c: everything the report reads from the results database, and
 * nothing else touches SQLite in reports/.
 *
 * The connection is opened with SQLITE_OPEN_READONLY (and query_only) so a
 * report can never write, and everything is read inside one transaction,
 * so a runner writing at the same time cannot give a table and a plot
 * from two different states. Only plain SELECTs on the tables of
 * results/schema.sql version 1 are used; the store API in results/ is not
 * needed. Every string read is copied into the rp_db's arena. */
#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "reports/report_internal.h"

/* ---- arena ---------------------------------------------------------- */

struct rp_chunk {
    rp_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *rp_arena_alloc(rp_arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    rp_chunk *c = a->head;
    void *p;

    if (size > SIZE_MAX / 2)
        return NULL;
    size = (size + align - 1) & ~(align - 1);
    if (size == 0)
        size = align;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > 16384 ? size : 16384;
        c = eb_malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    p = (char *)c->data + c->used;
    c->used += size;
    return p;
}

int rp_arena_dup(rp_arena *a, const char *s, const char **out)
{
    size_t n;
    char *p;

    *out = NULL;
    if (!s)
        return 0;
    n = strlen(s);
    p = rp_arena_alloc(a, n + 1);
    if (!p)
        return -1;
    memcpy(p, s, n + 1);
    *out = p;
    return 0;
}

void rp_arena_free(rp_arena *a)
{
    rp_chunk *c = a->head;
    while (c) {
        rp_chunk *next = c->next;
        eb_free(c);
        c = next;
    }
    a->head = NULL;
}

/* ---- statements ------------------------------------------------------ */

static eb_status sqlite_error(rp_db *d, int rc, const char *what, eb_error *err)
{
    const char *msg = d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc);
    int primary = rc & 0xff;

    if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT)
        return eb_error_set(err, EB_ERR_FORMAT, "'%s' is not a readable SQLite database (%s)",
                            d->path, msg);
    if (primary == SQLITE_NOMEM)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory reading '%s'", d->path);
    if (primary == SQLITE_BUSY)
        return eb_error_set(err, EB_ERR_TIMEOUT,
                            "results database '%s' stayed locked by a writer (%s)", d->path, msg);
    return eb_error_set(err, EB_ERR_IO, "reading results database '%s' (%s): %s", d->path, what,
                        msg);
}

eb_status rp_prepare(rp_db *d, const char *sql, sqlite3_stmt **st, eb_error *err)
{
    int rc = sqlite3_prepare_v2(d->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        *st = NULL;
        /* A missing table or column means the file does not follow
         * results/schema.sql, whatever its user_version says. */
        if ((rc & 0xff) == SQLITE_ERROR)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "'%s' does not follow the results schema (results/schema.sql): %s",
                                d->path, sqlite3_errmsg(d->db));
        return sqlite_error(d, rc, "preparing a query", err);
    }
    return EB_OK;
}

int rp_step(rp_db *d, sqlite3_stmt *st, eb_error *err)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc;
    d->step_status = sqlite_error(d, rc, sqlite3_sql(st), err);
    return -1;
}

const char *rp_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? (const char *)t : "";
}

double rp_real(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return NAN;
    return sqlite3_column_double(st, col);
}

/* Copies a nullable text column into the arena. */
static int dup_col(rp_db *d, sqlite3_stmt *st, int col, const char **out)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    if (!t && sqlite3_column_type(st, col) != SQLITE_NULL)
        return -1; /* text conversion ran out of memory */
    return rp_arena_dup(&d->arena, (const char *)t, out);
}

static eb_status count_rows(rp_db *d, const char *sql, size_t *n, eb_error *err)
{
    sqlite3_stmt *st;
    eb_status s = rp_prepare(d, sql, &st, err);
    if (s != EB_OK)
        return s;
    if (rp_step(d, st, err) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return d->step_status;
    }
    *n = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return EB_OK;
}

/* results/schema.sql's PRAGMA application_id: 0x45425253, 'EBRS'. */
#define RP_APPLICATION_ID 1161974355

/* ---- opening ----------------------------------------------------------- */

static eb_status load_runs(rp_db *d, eb_error *err)
{
    sqlite3_stmt *st;
    size_t n = 0, i = 0;
    eb_status s = count_rows(d, "SELECT count(*) FROM runs", &n, err);
    if (s != EB_OK)
        return s;
    if (n == 0)
        return EB_OK;
    d->runs = rp_arena_alloc(&d->arena, n * sizeof *d->runs);
    if (!d->runs)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu runs", n);
    s = rp_prepare(d,
                   "SELECT id, uuid, label, suite, suite_sha256, shard, started_at, finished_at,"
                   " version, git_commit, compiler, cflags, cpu_model, cores, host, libraries,"
                   " environment FROM runs ORDER BY started_at, id",
                   &st, err);
    if (s != EB_OK)
        return s;
    for (;;) {
        int rc = rp_step(d, st, err);
        rp_run *r;
        if (rc == SQLITE_DONE)
            break;
        if (rc < 0) {
            sqlite3_finalize(st);
            return d->step_status;
        }
        if (i == n)
            break; /* the count and the rows come from one snapshot */
        r = &d->runs[i++];
        memset(r, 0, sizeof *r);
        r->id = sqlite3_column_int64(st, 0);
        r->cores = sqlite3_column_int64(st, 13);
        if (dup_col(d, st, 1, &r->uuid) || dup_col(d, st, 2, &r->label) ||
            dup_col(d, st, 3, &r->suite) || dup_col(d, st, 4, &r->suite_sha256) ||
            dup_col(d, st, 5, &r->shard) || dup_col(d, st, 6, &r->started_at) ||
            dup_col(d, st, 7, &r->finished_at) || dup_col(d, st, 8, &r->version) ||
            dup_col(d, st, 9, &r->git_commit) || dup_col(d, st, 10, &r->compiler) ||
            dup_col(d, st, 11, &r->cflags) || dup_col(d, st, 12, &r->cpu_model) ||
            dup_col(d, st, 14, &r->host) || dup_col(d, st, 15, &r->libraries) ||
            dup_col(d, st, 16, &r->environment)) {
            sqlite3_finalize(st);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory reading the runs of '%s'",
                                d->path);
        }
    }
    sqlite3_finalize(st);
    d->n_runs = i;
    return EB_OK;
}

static eb_status load_jobs(rp_db *d, eb_error *err)
{
    sqlite3_stmt *st;
    size_t n = 0, i = 0, ri = 0;
    eb_status s = count_rows(d, "SELECT count(*) FROM jobs", &n, err);
    if (s != EB_OK)
        return s;
    if (n == 0)
        return EB_OK;
    d->jobs = rp_arena_alloc(&d->arena, n * sizeof *d->jobs);
    if (!d->jobs)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu jobs", n);
    /* Ordered like d->runs (started_at, id), so each job's run is found
     * by walking forward. */
    s = rp_prepare(d,
                   "SELECT j.id, j.run_id, j.key, j.name, j.method, j.chain, j.arch, j.seed,"
                   " j.device, j.draws, j.status, j.error, j.seconds, a.bytes"
                   " FROM jobs j JOIN runs r ON r.id = j.run_id"
                   " LEFT JOIN artifacts a ON a.id = j.bundle_id"
                   " ORDER BY r.started_at, r.id, j.method, j.chain, j.arch, j.seed, j.device,"
                   " j.draws, j.key",
                   &st, err);
    if (s != EB_OK)
        return s;
    for (;;) {
        int rc = rp_step(d, st, err);
        rp_job *j;
        if (rc == SQLITE_DONE)
            break;
        if (rc < 0) {
            sqlite3_finalize(st);
            return d->step_status;
        }
        if (i == n)
            break;
        j = &d->jobs[i];
        memset(j, 0, sizeof *j);
        j->id = sqlite3_column_int64(st, 0);
        j->run_id = sqlite3_column_int64(st, 1);
        while (ri < d->n_runs && d->runs[ri].id != j->run_id)
            ri++;
        if (ri == d->n_runs) {
            sqlite3_finalize(st);
            return eb_error_set(err, EB_ERR_INTERNAL,
                                "job %lld of '%s' came out of run order",
                                (long long)j->id, d->path);
        }
        j->run = ri;
        j->seed = sqlite3_column_int64(st, 7);
        j->draws = sqlite3_column_int64(st, 9);
        j->seconds = rp_real(st, 12);
        j->bundle_bytes = rp_real(st, 13);
        if (dup_col(d, st, 2, &j->key) || dup_col(d, st, 3, &j->name) ||
            dup_col(d, st, 4, &j->method) || dup_col(d, st, 5, &j->chain) ||
            dup_col(d, st, 6, &j->arch) || dup_col(d, st, 8, &j->device) ||
            dup_col(d, st, 10, &j->status) || dup_col(d, st, 11, &j->error)) {
            sqlite3_finalize(st);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory reading the jobs of '%s'",
                                d->path);
        }
        /* NOT NULL columns: guard anyway, a hand-made file may differ. */
        if (!j->key || !j->name || !j->method || !j->chain || !j->arch || !j->device ||
            !j->status) {
            sqlite3_finalize(st);
            return eb_error_set(err, EB_ERR_FORMAT,
                                "job %lld of '%s' has a NULL key, name, method, chain, arch,"
                                " device or status",
                                (long long)j->id, d->path);
        }
        j->done = strcmp(j->status, "done") == 0;
        j->label = j->name;
        i++;
    }
    sqlite3_finalize(st);
    d->n_jobs = i;
    return EB_OK;
}

static int cmp_job_id(const void *a, const void *b, void *ctx)
{
    const rp_db *d = ctx;
    int64_t x = d->jobs[*(const size_t *)a].id, y = d->jobs[*(const size_t *)b].id;
    return (x > y) - (x < y);
}

eb_status rp_db_open(rp_db *d, const char *path, eb_error *err)
{
    sqlite3_stmt *st;
    int rc, version = 0, app_id = 0;
    eb_status s;

    memset(d, 0, sizeof *d);
    d->path = path;
    if (!path || !path[0])
        return eb_error_set(err, EB_ERR_ARG, "no results database was given");
    if (!eb_file_exists(path))
        return eb_error_set(err, EB_ERR_NOTFOUND,
                            "results database '%s' does not exist or is not a regular file",
                            path);
    rc = sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        s = eb_error_set(err, EB_ERR_IO, "cannot open results database '%s' read-only: %s",
                         path, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        sqlite3_close(d->db);
        d->db = NULL;
        return s;
    }
    /* A runner may be committing a job right now: wait for it. */
    sqlite3_busy_timeout(d->db, 10000);
    rc = sqlite3_exec(d->db, "PRAGMA query_only = 1; BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        s = sqlite_error(d, rc, "starting a read transaction", err);
        goto fail;
    }
    rc = sqlite3_prepare_v2(d->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_ROW) {
        s = sqlite_error(d, rc, "reading the schema version", err);
        goto fail;
    }
    /* schema.sql marks the file with PRAGMA application_id 'EBRS'; files
     * written before that mark existed have 0. Another program's id means
     * another program's file. */
    rc = sqlite3_prepare_v2(d->db, "PRAGMA application_id", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        app_id = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_ROW) {
        s = sqlite_error(d, rc, "reading the application id", err);
        goto fail;
    }
    if (app_id != 0 && app_id != RP_APPLICATION_ID) {
        s = eb_error_set(err, EB_ERR_FORMAT,
                         "'%s' is not an edgebayes results database: its PRAGMA application_id"
                         " is %d, not %d ('EBRS')",
                         path, app_id, RP_APPLICATION_ID);
        goto fail;
    }
    if (version > EB_REPORT_SCHEMA_VERSION) {
        s = eb_error_set(err, EB_ERR_UNSUPPORTED,
                         "results database '%s' has schema version %d (PRAGMA user_version);"
                         " this edgebayes reads versions up to %d: use a newer edgebayes",
                         path, version, EB_REPORT_SCHEMA_VERSION);
        goto fail;
    }
    if (version < 1) {
        s = eb_error_set(err, EB_ERR_FORMAT,
                         "'%s' is not an edgebayes results database: its schema version"
                         " (PRAGMA user_version) is %d, expected 1 to %d",
                         path, version, EB_REPORT_SCHEMA_VERSION);
        goto fail;
    }
    if ((s = load_runs(d, err)) != EB_OK || (s = load_jobs(d, err)) != EB_OK)
        goto fail;
    if (d->n_jobs) {
        d->by_id = rp_arena_alloc(&d->arena, d->n_jobs * sizeof *d->by_id);
        d->row_pos = rp_arena_alloc(&d->arena, d->n_jobs * sizeof *d->row_pos);
        d->row_mask = rp_arena_alloc(&d->arena, d->n_jobs);
        if (!d->by_id || !d->row_pos || !d->row_mask) {
            s = eb_error_set(err, EB_ERR_NOMEM, "out of memory indexing %zu jobs", d->n_jobs);
            goto fail;
        }
        for (size_t i = 0; i < d->n_jobs; i++) {
            d->by_id[i] = i;
            d->row_pos[i] = SIZE_MAX;
            d->row_mask[i] = 0;
        }
        qsort_r(d->by_id, d->n_jobs, sizeof *d->by_id, cmp_job_id, d);
    }
    return EB_OK;
fail:
    rp_db_close(d);
    return s;
}

void rp_db_close(rp_db *d)
{
    if (d->db) {
        /* Ends the read transaction (nothing was written). */
        sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(d->db);
        d->db = NULL;
    }
    eb_free(d->sel_ids);
    d->sel_ids = NULL;
    eb_free(d->rows);
    d->rows = NULL;
    rp_arena_free(&d->arena);
    d->runs = NULL;
    d->jobs = NULL;
    d->n_runs = d->n_jobs = d->n_rows = 0;
}

long rp_db_job(const rp_db *d, int64_t id)
{
    size_t lo = 0, hi = d->n_jobs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t v = d->jobs[d->by_id[mid]].id;
        if (v == id)
            return (long)d->by_id[mid];
        if (v < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- selection --------------------------------------------------------- */

static int all_digits(const char *s)
{
    if (!*s || strlen(s) > 18)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Index of the run named by tok, or -1. */
static long resolve_run(const rp_db *d, const char *tok)
{
    long found = -1;
    if (all_digits(tok)) {
        long long id = strtoll(tok, NULL, 10);
        for (size_t i = 0; i < d->n_runs; i++)
            if (d->runs[i].id == id)
                return (long)i;
    }
    for (size_t i = 0; i < d->n_runs; i++)
        if (strcmp(d->runs[i].uuid, tok) == 0)
            return (long)i;
    /* A label names its latest run, a finished one if there is one:
     * runs are sorted oldest first. */
    for (size_t i = d->n_runs; i-- > 0;) {
        if (!d->runs[i].label || strcmp(d->runs[i].label, tok) != 0)
            continue;
        if (d->runs[i].finished_at)
            return (long)i;
        if (found < 0)
            found = (long)i;
    }
    return found;
}

static int strcmp0(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "");
}

/* Table order: the job's identity (what the row shows), then its run. */
static int cmp_row(const void *a, const void *b, void *ctx)
{
    const rp_db *d = ctx;
    const rp_job *x = &d->jobs[*(const size_t *)a], *y = &d->jobs[*(const size_t *)b];
    int c;
    if ((c = strcmp(x->method, y->method)) != 0 || (c = strcmp(x->chain, y->chain)) != 0 ||
        (c = strcmp(x->arch, y->arch)) != 0)
        return c;
    if (x->seed != y->seed)
        return x->seed < y->seed ? -1 : 1;
    if ((c = strcmp(x->device, y->device)) != 0)
        return c;
    if (x->draws != y->draws)
        return x->draws < y->draws ? -1 : 1;
    if ((c = strcmp0(x->key, y->key)) != 0)
        return c;
    if (x->run != y->run)
        return x->run < y->run ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

eb_status rp_db_select(rp_db *d, const char *const *runs, size_t n, eb_error *err)
{
    size_t len = 0, k = 0;

    if (d->n_runs == 0)
        return eb_error_set(err, EB_ERR_NOTFOUND,
                            "results database '%s' holds no runs: nothing to report", d->path);
    if (n == 0) {
        long pick = -1;
        for (size_t i = d->n_runs; i-- > 0;)
            if (d->runs[i].finished_at) {
                pick = (long)i;
                break;
            }
        if (pick < 0)
            return eb_error_set(err, EB_ERR_NOTFOUND,
                                "results database '%s' holds %zu run%s but none has finished;"
                                " name one explicitly (edgebayes report --runs ID)",
                                d->path, d->n_runs, d->n_runs == 1 ? "" : "s");
        d->runs[pick].selected = 1;
    }
    for (size_t i = 0; i < n; i++) {
        long r;
        if (!runs[i] || !runs[i][0])
            return eb_error_set(err, EB_ERR_ARG, "run selection %zu is empty", i + 1);
        r = resolve_run(d, runs[i]);
        if (r < 0)
            return eb_error_set(err, EB_ERR_NOTFOUND,
                                "run '%s' matches no run id, uuid or label in '%s'", runs[i],
                                d->path);
        d->runs[r].selected = 1;
    }
    d->n_selected = 0;
    for (size_t i = 0; i < d->n_runs; i++)
        if (d->runs[i].selected) {
            d->n_selected++;
            d->latest = i;
        }
    d->sel_ids = eb_malloc(d->n_selected * 21 + 1);
    if (!d->sel_ids)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the run selection");
    d->sel_ids[0] = '\0';
    for (size_t i = 0; i < d->n_runs; i++)
        if (d->runs[i].selected)
            len += (size_t)sprintf(d->sel_ids + len, "%s%lld", len ? "," : "",
                                   (long long)d->runs[i].id);

    d->n_rows = 0;
    for (size_t j = 0; j < d->n_jobs; j++)
        if (d->jobs[j].done && d->runs[d->jobs[j].run].selected)
            d->n_rows++;
    d->rows = eb_malloc((d->n_rows ? d->n_rows : 1) * sizeof *d->rows);
    if (!d->rows)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu table rows", d->n_rows);
    for (size_t j = 0; j < d->n_jobs; j++)
        if (d->jobs[j].done && d->runs[d->jobs[j].run].selected)
            d->rows[k++] = j;
    qsort_r(d->rows, d->n_rows, sizeof *d->rows, cmp_row, d);
    for (size_t i = 0; i < d->n_rows; i++) {
        d->row_pos[d->rows[i]] = i;
        d->row_mask[d->rows[i]] = 1;
    }
    /* Several runs: the same job name appears once per run. */
    if (d->n_selected > 1) {
        for (size_t j = 0; j < d->n_jobs; j++) {
            rp_job *job = &d->jobs[j];
            size_t m;
            char *l;
            if (!d->runs[job->run].selected)
                continue;
            m = strlen(job->name) + 24;
            l = rp_arena_alloc(&d->arena, m);
            if (!l)
                return eb_error_set(err, EB_ERR_NOMEM, "out of memory for job labels");
            snprintf(l, m, "%s #%lld", job->name, (long long)job->run_id);
            job->label = l;
        }
    }
    return EB_OK;
}

/* ---- contexts and series -------------------------------------------- */

int rp_ctx_get(const char *ctx, const char *key, char *out, size_t cap)
{
    size_t kn = strlen(key);
    const char *p = ctx;

    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > kn && strncmp(p, key, kn) == 0 && p[kn] == '=') {
            size_t vn = n - kn - 1;
            if (vn + 1 > cap)
                return 0;
            memcpy(out, p + kn + 1, vn);
            out[vn] = '\0';
            return 1;
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* sql with every "%s" replaced by ids; the caller frees. */
static char *expand_ids(const char *sql, const char *ids)
{
    size_t n = strlen(sql), m = strlen(ids), count = 0, o = 0;
    char *out;
    for (const char *p = strstr(sql, "%s"); p; p = strstr(p + 2, "%s"))
        count++;
    out = eb_malloc(n + count * m + 1);
    if (!out)
        return NULL;
    for (const char *p = sql; *p;) {
        if (p[0] == '%' && p[1] == 's') {
            memcpy(out + o, ids, m);
            o += m;
            p += 2;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

static int cmp_series(const void *a, const void *b, void *ctx)
{
    const rp_db *d = ctx;
    const rp_series *x = a, *y = b;
    size_t px = d->row_pos[x->job], py = d->row_pos[y->job];
    if (px != py)
        return px < py ? -1 : 1;
    return strcmp(x->context, y->context);
}

eb_status rp_series_load(rp_db *d, const char *sql, const char *bind1, size_t ncols,
                         rp_seriesset *out, eb_error *err)
{
    sqlite3_stmt *st = NULL;
    char *q;
    size_t cap_s = 0, cap_v = 0, nv = 0;
    int64_t cur_id = 0;
    long cur_job = -1;
    eb_status s;

    memset(out, 0, sizeof *out);
    out->ncols = ncols;
    q = expand_ids(sql, d->sel_ids ? d->sel_ids : "");
    if (!q)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a query");
    s = rp_prepare(d, q, &st, err);
    eb_free(q);
    if (s != EB_OK)
        return s;
    if (bind1 && sqlite3_bind_text(st, 1, bind1, -1, SQLITE_STATIC) != SQLITE_OK) {
        s = sqlite_error(d, SQLITE_ERROR, "binding a query", err);
        goto fail;
    }
    for (;;) {
        int rc = rp_step(d, st, err);
        int64_t id;
        const char *ctx;
        rp_series *last;
        if (rc == SQLITE_DONE)
            break;
        if (rc < 0) {
            s = d->step_status;
            goto fail;
        }
        id = sqlite3_column_int64(st, 0);
        if (cur_job < 0 || id != cur_id) {
            cur_id = id;
            cur_job = rp_db_job(d, id);
        }
        if (cur_job < 0 || !d->row_mask[cur_job])
            continue;
        ctx = rp_text(st, 1);
        last = out->n ? &out->s[out->n - 1] : NULL;
        if (!last || last->job != (size_t)cur_job || strcmp(last->context, ctx) != 0) {
            if (out->n == cap_s) {
                size_t nc = cap_s ? cap_s * 2 : 16;
                rp_series *ns = eb_realloc(out->s, nc * sizeof *ns);
                if (!ns)
                    goto nomem;
                out->s = ns;
                cap_s = nc;
            }
            last = &out->s[out->n++];
            memset(last, 0, sizeof *last);
            last->job = (size_t)cur_job;
            last->off = nv;
            if (rp_arena_dup(&out->arena, ctx, &last->context))
                goto nomem;
        }
        if (nv == cap_v) {
            size_t nc = cap_v ? cap_v * 2 : 256, bytes;
            double *nvals;
            if (eb_size_mul(nc, ncols * sizeof *nvals, &bytes))
                goto nomem;
            nvals = eb_realloc(out->vals, bytes);
            if (!nvals)
                goto nomem;
            out->vals = nvals;
            cap_v = nc;
        }
        for (size_t c = 0; c < ncols; c++)
            out->vals[nv * ncols + c] = rp_real(st, (int)(2 + c));
        nv++;
        last->n++;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < out->n; i++)
        out->s[i].v = out->vals + out->s[i].off * ncols;
    if (out->n > 1)
        qsort_r(out->s, out->n, sizeof *out->s, cmp_series, d);
    return EB_OK;
nomem:
    s = eb_error_set(err, EB_ERR_NOMEM, "out of memory reading '%s'", d->path);
fail:
    sqlite3_finalize(st);
    rp_series_free(out);
    return s;
}

void rp_series_free(rp_seriesset *s)
{
    eb_free(s->s);
    eb_free(s->vals);
    rp_arena_free(&s->arena);
    s->s = NULL;
    s->vals = NULL;
    s->n = 0;
}

/* ---- metric columns ------------------------------------------------- */

eb_status rp_column_load(rp_db *d, size_t col, const unsigned char *mask, rp_value *vals,
                         int *variant, eb_error *err)
{
    const rp_column *c = &rp_columns[col];
    sqlite3_stmt *st = NULL;
    double *acc = NULL; /* shift: (n_jobs, 4) sum3, n3, sum_all, n_all */
    eb_status s;

    *variant = 0;
    for (size_t j = 0; j < d->n_jobs; j++) {
        memset(&vals[j], 0, sizeof vals[j]);
        vals[j].hib = -1;
    }
    if (c->agg == RP_AGG_SHIFT_MEAN) {
        acc = eb_calloc(d->n_jobs ? d->n_jobs * 4 : 1, sizeof *acc);
        if (!acc)
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the shift means");
        s = rp_prepare(d,
                       "SELECT job_id, value, NULL, NULL, higher_is_better, context"
                       " FROM metrics WHERE facet = ?1 AND name = ?2",
                       &st, err);
    } else {
        s = rp_prepare(d,
                       "SELECT job_id, value, ci_low, ci_high, higher_is_better"
                       " FROM metrics WHERE facet = ?1 AND name = ?2 AND context = ?3",
                       &st, err);
    }
    if (s != EB_OK)
        goto out;
    if (sqlite3_bind_text(st, 1, c->facet, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, c->name, -1, SQLITE_STATIC) != SQLITE_OK ||
        (c->agg != RP_AGG_SHIFT_MEAN &&
         sqlite3_bind_text(st, 3, c->context, -1, SQLITE_STATIC) != SQLITE_OK)) {
        s = sqlite_error(d, SQLITE_ERROR, "binding a query", err);
        goto out;
    }
    for (;;) {
        int rc = rp_step(d, st, err);
        long j;
        double v;
        if (rc == SQLITE_DONE)
            break;
        if (rc < 0) {
            s = d->step_status;
            goto out;
        }
        j = rp_db_job(d, sqlite3_column_int64(st, 0));
        if (j < 0 || !mask[j])
            continue;
        v = rp_real(st, 1);
        vals[j].hib = (signed char)(sqlite3_column_int(st, 4) != 0);
        if (c->agg == RP_AGG_SHIFT_MEAN) {
            char corruption[64], sev[16];
            const char *ctx = rp_text(st, 5);
            char *end;
            long severity;
            if (!isfinite(v) || !rp_ctx_get(ctx, "corruption", corruption, sizeof corruption) ||
                strcmp(corruption, "mean") == 0 || !rp_ctx_get(ctx, "severity", sev, sizeof sev))
                continue;
            errno = 0;
            severity = strtol(sev, &end, 10);
            if (errno || *end || end == sev || severity < 1)
                continue;
            if (severity == 3) {
                acc[j * 4 + 0] += v;
                acc[j * 4 + 1] += 1;
            }
            acc[j * 4 + 2] += v;
            acc[j * 4 + 3] += 1;
        } else if (isfinite(v)) {
            double lo = rp_real(st, 2), hi = rp_real(st, 3);
            vals[j].v = v;
            vals[j].has = 1;
            if (isfinite(lo) && isfinite(hi)) {
                vals[j].lo = lo;
                vals[j].hi = hi;
                vals[j].has_ci = 1;
            }
        }
    }
    if (c->agg == RP_AGG_SHIFT_MEAN) {
        /* One definition for the whole column: severity 3 when any job
         * has it, so rows stay comparable; else every severity. */
        int any3 = 0, any = 0;
        for (size_t j = 0; j < d->n_jobs; j++) {
            any3 |= acc[j * 4 + 1] > 0;
            any |= acc[j * 4 + 3] > 0;
        }
        *variant = any3 ? RP_SHIFT_SEVERITY3 : any ? RP_SHIFT_ALL : RP_SHIFT_NONE;
        for (size_t j = 0; j < d->n_jobs; j++) {
            const double *a = &acc[j * 4 + (any3 ? 0 : 2)];
            if (mask[j] && a[1] > 0) {
                vals[j].v = a[0] / a[1];
                vals[j].has = 1;
            }
        }
    }
    if (c->bundle_fallback) {
        /* The bundle's size is also stored with its artifact row. */
        for (size_t j = 0; j < d->n_jobs; j++)
            if (mask[j] && !vals[j].has && isfinite(d->jobs[j].bundle_bytes)) {
                vals[j].v = d->jobs[j].bundle_bytes;
                vals[j].has = 1;
                vals[j].hib = 0;
            }
    }
    s = EB_OK;
out:
    sqlite3_finalize(st);
    eb_free(acc);
    return s;
}
