/* measure.c: the measurement protocol of docs/devices.md, device-agnostic
 * (every call goes through the eb_device handle): cold and warm load with
 * the first prediction timed apart, single-stream latency with its order
 * statistics, offline throughput, and memory per phase. Also the pieces
 * it stands on: the monotonic clock, the statistics (pure functions,
 * tested without timing), this machine's page cache (posix_fadvise and
 * mincore) and this process's memory (/proc/self/status, clear_refs).
 *
 * Nothing here prints or writes SQL; results are plain structs. Timed
 * loops allocate nothing: buffers are sized before the clock starts. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "devices/eb_device.h"

double eb_measure_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ======================================================================
 * Statistics
 * ==================================================================== */

double eb_measure_quantile(const double *sorted, size_t n, double q)
{
    double h, frac;
    size_t lo;
    if (n == 1 || q <= 0.0)
        return sorted[0];
    if (q >= 1.0)
        return sorted[n - 1];
    h = (double)(n - 1) * q;
    lo = (size_t)floor(h);
    if (lo >= n - 1)
        return sorted[n - 1];
    frac = h - (double)lo;
    return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

/* log P(B = k), B ~ Binomial(n, p), 0 < p < 1. */
static double binom_log_pmf(size_t n, size_t k, double p)
{
    return lgamma((double)n + 1.0) - lgamma((double)k + 1.0) - lgamma((double)(n - k) + 1.0) +
           (double)k * log(p) + (double)(n - k) * log1p(-p);
}

eb_status eb_measure_quantile_ci_ranks(size_t n, double q, double level, eb_quantile_ci *out,
                                       eb_error *err)
{
    const double a = (1.0 - level) / 2.0; /* each tail's budget */
    double sd, cum = 0.0, tail = 0.0, lower_tail = 0.0, upper_tail = 0.0;
    size_t k0, k1;

    memset(out, 0, sizeof *out);
    if (n < 1 || !(q > 0.0 && q < 1.0) || !(level > 0.0 && level < 1.0))
        return eb_error_set(err, EB_ERR_ARG,
                            "a quantile interval needs n >= 1, q in (0, 1) and level in (0, 1) "
                            "(got n = %zu, q = %g, level = %g)", n, q, level);
    out->q = q;
    out->level = level;
    /* Terms farther than 20 sqrt(n) from the mean n q weigh less than
     * 2 exp(-800) together (Hoeffding: P(|B - nq| >= t) <= 2 exp(-2 t^2 / n)),
     * which is 0 in double precision, so the sums start there; this keeps
     * the cost O(sqrt n) for millions of samples. */
    sd = 20.0 * sqrt((double)n);
    k0 = (double)n * q - sd > 0.0 ? (size_t)((double)n * q - sd) : 0;
    k1 = (double)n * q + sd < (double)n ? (size_t)((double)n * q + sd) : n;

    /* l: the first k where P(B <= k) exceeds a; then P(B <= l - 1) <= a */
    out->lo_rank = n; /* overwritten: the whole sum is 1 > a */
    for (size_t k = k0; k <= n; k++) {
        double pk = exp(binom_log_pmf(n, k, q));
        if (cum + pk > a) {
            out->lo_rank = k;
            lower_tail = cum;
            break;
        }
        cum += pk;
    }
    /* u: the first k from the top where P(B >= k) exceeds a; u = k + 1 */
    out->hi_rank = 1;
    for (size_t k = k1 + 1; k-- > 0;) {
        double pk = exp(binom_log_pmf(n, k, q));
        if (tail + pk > a) {
            out->hi_rank = k + 1;
            upper_tail = tail;
            break;
        }
        tail += pk;
    }
    out->coverage = 1.0 - lower_tail - upper_tail;
    out->valid = out->lo_rank >= 1 && out->hi_rank <= n;
    return EB_OK;
}

eb_status eb_measure_quantile_ci(const double *sorted, size_t n, double q, double level,
                                 eb_quantile_ci *out, eb_error *err)
{
    eb_status st = eb_measure_quantile_ci_ranks(n, q, level, out, err);
    if (st)
        return st;
    /* an unbounded side falls back to the sample's extreme (valid = 0) */
    out->lo = sorted[out->lo_rank >= 1 ? out->lo_rank - 1 : 0];
    out->hi = sorted[out->hi_rank <= n ? out->hi_rank - 1 : n - 1];
    return EB_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

eb_status eb_measure_latency_stats(const double *samples, size_t n, double level,
                                   eb_latency_stats *out, eb_error *err)
{
    double *sorted, sum = 0.0;
    eb_status st;

    memset(out, 0, sizeof *out);
    if (n < 1)
        return eb_error_set(err, EB_ERR_ARG, "latency statistics need at least one sample");
    if (!(level > 0.0 && level < 1.0))
        return eb_error_set(err, EB_ERR_ARG, "confidence level %g is not in (0, 1)", level);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(samples[i]))
            return eb_error_set(err, EB_ERR_NUMERIC, "latency sample %zu is not finite", i);
    sorted = eb_malloc(n * sizeof *sorted);
    if (!sorted)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory sorting %zu latency samples", n);
    memcpy(sorted, samples, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_double);
    for (size_t i = 0; i < n; i++)
        sum += sorted[i];
    out->n = n;
    out->min = sorted[0];
    out->max = sorted[n - 1];
    out->mean = sum / (double)n;
    out->p50 = eb_measure_quantile(sorted, n, 0.50);
    out->p90 = eb_measure_quantile(sorted, n, 0.90);
    out->p99 = eb_measure_quantile(sorted, n, 0.99);
    st = eb_measure_quantile_ci(sorted, n, 0.5, level, &out->median_ci, err);
    if (st == EB_OK)
        st = eb_measure_quantile_ci(sorted, n, 0.99, level, &out->p99_ci, err);
    out->p99_supported = out->p99_ci.valid;
    eb_free(sorted);
    return st;
}

/* ======================================================================
 * This machine's page cache
 * ==================================================================== */

/* Resident pages of fd's file (len bytes) on a fresh shared read-only
 * mapping: mincore reports the page cache for it (when the caller may
 * write the file or owns it; otherwise only pages this process mapped,
 * which on a fresh mapping is none). */
static eb_status resident_pages(int fd, size_t len, unsigned char *vec, size_t pages,
                                uint64_t *resident, const char *path, eb_error *err)
{
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    *resident = 0;
    if (map == MAP_FAILED)
        return eb_error_set(err, EB_ERR_IO, "cannot map '%s' to check its page cache: %s", path,
                            strerror(errno));
    if (mincore(map, len, vec) != 0) {
        int e = errno;
        munmap(map, len);
        return eb_error_set(err, EB_ERR_IO, "mincore on '%s' failed: %s", path, strerror(e));
    }
    munmap(map, len);
    for (size_t i = 0; i < pages; i++)
        *resident += vec[i] & 1u;
    return EB_OK;
}

/* Reads the whole file through the page cache (not through a mapping, so
 * no page of it is mapped in this process afterwards). */
static eb_status read_through(int fd, const char *path, eb_error *err)
{
    char buf[65536];
    off_t off = 0;
    for (;;) {
        ssize_t got = pread(fd, buf, sizeof buf, off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return eb_error_set(err, EB_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        }
        if (got == 0)
            return EB_OK;
        off += got;
    }
}

eb_status eb_measure_page_cache_drop(const char *path, eb_page_cache_state *out, eb_error *err)
{
    struct stat sb;
    unsigned char *vec = NULL;
    uint64_t before = 0, after = 0;
    size_t len, pages;
    long pagesz = sysconf(_SC_PAGESIZE);
    int fd, rc;
    eb_status st;

    memset(out, 0, sizeof *out);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eb_error_set(err, errno == ENOENT ? EB_ERR_NOTFOUND : EB_ERR_IO,
                            "cannot open '%s' to drop its page cache: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return eb_error_set(err, EB_ERR_IO, "'%s' is not a readable regular file", path);
    }
    out->file_bytes = (uint64_t)sb.st_size;
    if (sb.st_size == 0) {
        close(fd);
        snprintf(out->note, sizeof out->note, "the file is empty: nothing to drop");
        return EB_OK;
    }
    if (pagesz <= 0)
        pagesz = 4096;
    len = (size_t)sb.st_size;
    pages = (len + (size_t)pagesz - 1) / (size_t)pagesz;
    out->pages = pages;
    vec = eb_malloc(pages);
    if (!vec) {
        close(fd);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory checking the page cache of '%s'",
                            path);
    }
    st = resident_pages(fd, len, vec, pages, &before, path, err);
    if (st)
        goto done;
    out->resident_before = (double)before / (double)pages;
    out->visible = before > 0;
    if (!out->visible) {
        /* Positive control: cache the file, then mincore must see it. A
         * mincore that cannot see the page cache would report 0 after the
         * drop as well, which proves nothing. */
        uint64_t control = 0;
        st = read_through(fd, path, err);
        if (st == EB_OK)
            st = resident_pages(fd, len, vec, pages, &control, path, err);
        if (st)
            goto done;
        out->visible = control > 0;
    }
    /* Dirty pages cannot be dropped: write them back first. fsync on a
     * read-only descriptor is allowed on Linux; a file system that
     * refuses (EINVAL) has nothing to write back. */
    (void)fsync(fd);
    rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    st = resident_pages(fd, len, vec, pages, &after, path, err);
    if (st)
        goto done;
    out->resident_after = (double)after / (double)pages;
    out->verified = out->visible && after == 0;
    if (rc != 0)
        snprintf(out->note, sizeof out->note, "posix_fadvise(DONTNEED) failed: %s",
                 strerror(rc));
    else if (!out->visible)
        snprintf(out->note, sizeof out->note,
                 "mincore cannot see this file's page cache (not owner, no write permission), "
                 "so the drop cannot be verified");
    else if (after > 0)
        snprintf(out->note, sizeof out->note,
                 "%llu of %llu pages stayed cached (tmpfs, or mapped by a process)",
                 (unsigned long long)after, (unsigned long long)pages);
done:
    eb_free(vec);
    close(fd);
    return st;
}

/* ======================================================================
 * This process's memory
 * ==================================================================== */

typedef struct proc_field {
    const char *name;
    unsigned bit;
    size_t offset;
} proc_field;

static const proc_field proc_fields[] = {
    {"VmHWM", EB_PROC_HAVE_HWM, offsetof(eb_proc_memory, vm_hwm)},
    {"VmRSS", EB_PROC_HAVE_RSS, offsetof(eb_proc_memory, vm_rss)},
    {"RssAnon", EB_PROC_HAVE_ANON, offsetof(eb_proc_memory, rss_anon)},
    {"RssFile", EB_PROC_HAVE_FILE, offsetof(eb_proc_memory, rss_file)},
    {"RssShmem", EB_PROC_HAVE_SHMEM, offsetof(eb_proc_memory, rss_shmem)},
};

/* "   1234 kB" (up to the end of the line) into bytes; -1 if malformed. */
static int parse_kb(const char *p, const char *eol, uint64_t *bytes)
{
    uint64_t v = 0;
    int digits = 0;
    while (p < eol && (*p == ' ' || *p == '\t'))
        p++;
    while (p < eol && *p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    while (p < eol && (*p == ' ' || *p == '\t'))
        p++;
    if (!digits || eol - p != 2 || p[0] != 'k' || p[1] != 'B' || v > UINT64_MAX / 1024)
        return -1;
    *bytes = v * 1024;
    return 0;
}

eb_status eb_measure_parse_proc_status(const char *text, eb_proc_memory *out, eb_error *err)
{
    const char *line = text;
    memset(out, 0, sizeof *out);
    while (*line) {
        const char *eol = strchr(line, '\n'), *colon;
        if (!eol)
            eol = line + strlen(line);
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            for (size_t f = 0; f < sizeof proc_fields / sizeof proc_fields[0]; f++) {
                const proc_field *pf = &proc_fields[f];
                uint64_t bytes;
                if ((size_t)(colon - line) != strlen(pf->name) ||
                    memcmp(line, pf->name, (size_t)(colon - line)) != 0)
                    continue;
                if (parse_kb(colon + 1, eol, &bytes) != 0)
                    return eb_error_set(err, EB_ERR_FORMAT,
                                        "process status: the %s line '%.*s' is not '<number> kB'",
                                        pf->name, (int)(eol - line < 80 ? eol - line : 80), line);
                *(uint64_t *)((char *)out + pf->offset) = bytes;
                out->have |= pf->bit;
            }
        }
        line = *eol ? eol + 1 : eol;
    }
    if (!(out->have & EB_PROC_HAVE_HWM))
        return eb_error_set(err, EB_ERR_FORMAT, "process status has no VmHWM line");
    if (!(out->have & EB_PROC_HAVE_RSS))
        return eb_error_set(err, EB_ERR_FORMAT, "process status has no VmRSS line");
    return EB_OK;
}

eb_status eb_measure_proc_memory(eb_proc_memory *out, eb_error *err)
{
    /* /proc/self/status is about 1.5 KB; a fixed buffer keeps this free of
     * allocation. Its memory lines come in the first third. */
    char buf[16384];
    size_t used = 0;
    eb_status st;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    memset(out, 0, sizeof *out);
    if (fd < 0)
        return eb_error_set(err, EB_ERR_UNSUPPORTED, "cannot open /proc/self/status: %s",
                            strerror(errno));
    while (used < sizeof buf - 1) {
        ssize_t got = read(fd, buf + used, sizeof buf - 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            return eb_error_set(err, EB_ERR_IO, "cannot read /proc/self/status: %s", strerror(e));
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    close(fd);
    buf[used] = '\0';
    st = eb_measure_parse_proc_status(buf, out, err);
    if (st)
        eb_error_prefix(err, "/proc/self/status: ");
    return st;
}

eb_status eb_measure_proc_reset_peak(eb_error *err)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    ssize_t w;
    if (fd < 0)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "cannot open /proc/self/clear_refs to reset the peak RSS: %s",
                            strerror(errno));
    /* "5": reset the peak resident set size (VmHWM) to the current RSS */
    w = write(fd, "5", 1);
    if (w != 1) {
        int e = errno;
        close(fd);
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "the kernel refused to reset the peak RSS through "
                            "/proc/self/clear_refs: %s", w < 0 ? strerror(e) : "short write");
    }
    close(fd);
    return EB_OK;
}

/* ======================================================================
 * Memory per phase
 * ==================================================================== */

eb_status eb_measure_memory_begin(eb_device *dev, eb_memory_phase *ph, eb_error *err)
{
    eb_status st;
    memset(ph, 0, sizeof *ph);
    st = eb_device_memory_reset_peak(dev, err);
    if (st && st != EB_ERR_UNSUPPORTED)
        return st;
    ph->peak_reset = st == EB_OK;
    st = eb_device_memory_read(dev, &ph->start, err);
    if (st == EB_ERR_UNSUPPORTED) {
        eb_error_clear(err);
        return EB_OK; /* available = 0 */
    }
    if (st)
        return st;
    eb_error_clear(err);
    ph->available = 1;
    return EB_OK;
}

eb_status eb_measure_memory_end(eb_device *dev, eb_memory_phase *ph, eb_error *err)
{
    eb_status st;
    if (!ph->available)
        return EB_OK;
    st = eb_device_memory_read(dev, &ph->end, err);
    if (st)
        return st;
    ph->peak_rss = ph->end.vm_hwm;
    return EB_OK;
}

/* ======================================================================
 * The protocol
 * ==================================================================== */

void eb_measure_config_default(eb_measure_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->level = 0.95;
    cfg->warmup = 20;
    cfg->min_queries = 200;
    cfg->min_seconds = 2.0;
    cfg->max_queries = 1000000;
    cfg->batch = 256;
    cfg->throughput_warmup = 1;
    cfg->min_batches = 3;
    cfg->throughput_min_seconds = 2.0;
}

static eb_status check_measure_config(const eb_measure_config *c, eb_error *err)
{
    if (!(c->level > 0.0 && c->level < 1.0))
        return eb_error_set(err, EB_ERR_ARG, "measure config: level = %g is not in (0, 1)",
                            c->level);
    if (c->min_queries < 1)
        return eb_error_set(err, EB_ERR_ARG, "measure config: min_queries must be at least 1");
    if (!(c->min_seconds >= 0.0 && c->min_seconds < 1e6))
        return eb_error_set(err, EB_ERR_ARG,
                            "measure config: min_seconds = %g is not in [0, 1e6)", c->min_seconds);
    if (c->max_queries && c->max_queries < c->min_queries)
        return eb_error_set(err, EB_ERR_ARG,
                            "measure config: max_queries = %zu is below min_queries = %zu",
                            c->max_queries, c->min_queries);
    if (c->batch < 1)
        return eb_error_set(err, EB_ERR_ARG, "measure config: batch = %d must be at least 1",
                            c->batch);
    if (c->min_batches < 1)
        return eb_error_set(err, EB_ERR_ARG, "measure config: min_batches must be at least 1");
    if (!(c->throughput_min_seconds >= 0.0 && c->throughput_min_seconds < 1e6))
        return eb_error_set(err, EB_ERR_ARG,
                            "measure config: throughput_min_seconds = %g is not in [0, 1e6)",
                            c->throughput_min_seconds);
    return EB_OK;
}

/* The loaded model and the inputs fit each other; resolves S. */
static eb_status check_inputs(eb_device *dev, const eb_dataset *inputs,
                              const eb_measure_config *cfg, const eb_device_model **m,
                              uint32_t *S, eb_error *err)
{
    *m = eb_device_model_info(dev);
    if (!*m)
        return eb_error_set(err, EB_ERR_ARG, "device '%s': no bundle is loaded to measure",
                            eb_device_name(dev));
    if (!inputs || !inputs->x || inputs->n == 0)
        return eb_error_set(err, EB_ERR_ARG, "measuring device '%s': no inputs given",
                            eb_device_name(dev));
    if ((size_t)inputs->h * (size_t)inputs->w * (size_t)inputs->c != (*m)->in_size)
        return eb_error_set(err, EB_ERR_ARG,
                            "inputs %s/%s are %dx%dx%d images; bundle '%s' expects %dx%dx%d",
                            inputs->name, inputs->split, inputs->h, inputs->w, inputs->c,
                            eb_device_loaded_path(dev), (*m)->in_h, (*m)->in_w, (*m)->in_c);
    *S = cfg->draws ? cfg->draws : (*m)->default_draws;
    if (*S > (*m)->max_draws)
        return eb_error_set(err, EB_ERR_ARG,
                            "measure config: draws = %u exceeds the %u that device '%s' allows "
                            "for bundle '%s'", *S, (*m)->max_draws, eb_device_name(dev),
                            eb_device_loaded_path(dev));
    return EB_OK;
}

/* Verify before you time: every row of probs (rows, C) is a distribution.
 * Run after timing, on the last output, so the check costs nothing in the
 * timed span but a device returning garbage is never reported as fast. */
static eb_status check_probs(const eb_device *dev, const float *probs, size_t rows, size_t C,
                             eb_error *err)
{
    for (size_t r = 0; r < rows; r++) {
        double sum = 0.0;
        for (size_t c = 0; c < C; c++) {
            float v = probs[r * C + c];
            if (!(v >= 0.0f && v <= 1.0f))
                return eb_error_set(err, EB_ERR_NUMERIC,
                                    "device '%s' returned probability %g (row %zu, class %zu); "
                                    "its timings are not reported", eb_device_name(dev),
                                    (double)v, r, c);
            sum += v;
        }
        if (fabs(sum - 1.0) > 1e-3)
            return eb_error_set(err, EB_ERR_NUMERIC,
                                "device '%s' returned probabilities summing to %g (row %zu); its "
                                "timings are not reported", eb_device_name(dev), sum, r);
    }
    return EB_OK;
}

static float *alloc_probs(size_t rows, size_t C, eb_error *err)
{
    size_t bytes;
    float *p = NULL;
    if (eb_size_mul(rows, C * sizeof(float), &bytes) == 0)
        p = eb_malloc(bytes ? bytes : 1);
    if (!p)
        eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu x %zu probabilities", rows, C);
    return p;
}

/* One load, then one prediction of the first input. */
static eb_status load_once(eb_device *dev, const char *path, const eb_dataset *inputs,
                           const eb_measure_config *cfg, eb_load_sample *s, uint32_t *draws,
                           eb_error *err)
{
    const eb_device_model *m;
    float *probs = NULL;
    double t0, t1;
    uint32_t S;
    eb_status st;

    memset(s, 0, sizeof *s);
    st = eb_measure_memory_begin(dev, &s->memory, err);
    if (st)
        return st;
    t0 = eb_measure_now();
    st = eb_device_load(dev, path, &s->device, err);
    t1 = eb_measure_now();
    if (st)
        return st;
    s->load_s = t1 - t0;
    st = check_inputs(dev, inputs, cfg, &m, &S, err);
    if (st == EB_OK) {
        probs = alloc_probs(S, (size_t)m->n_classes, err);
        if (!probs)
            st = EB_ERR_NOMEM;
    }
    if (st == EB_OK) {
        t0 = eb_measure_now();
        st = eb_device_predict(dev, inputs->x, 1, S, cfg->seed, 0, probs, err);
        t1 = eb_measure_now();
        s->first_predict_s = t1 - t0;
    }
    if (st == EB_OK)
        st = check_probs(dev, probs, S, (size_t)m->n_classes, err);
    if (st == EB_OK)
        st = eb_measure_memory_end(dev, &s->memory, err);
    eb_free(probs);
    if (st) {
        eb_device_unload(dev);
        return st;
    }
    *draws = S;
    return EB_OK;
}

eb_status eb_measure_load(eb_device *dev, const char *path, const eb_dataset *inputs,
                          const eb_measure_config *cfg, eb_load_result *out, eb_error *err)
{
    eb_measure_config defaults;
    struct stat sb;
    eb_error e;
    eb_status st;

    memset(out, 0, sizeof *out);
    if (!cfg) {
        eb_measure_config_default(&defaults);
        cfg = &defaults;
    }
    st = check_measure_config(cfg, err);
    if (st)
        return st;
    if (stat(path, &sb) != 0)
        return eb_error_set(err, errno == ENOENT ? EB_ERR_NOTFOUND : EB_ERR_IO,
                            "cannot measure bundle '%s': %s", path, strerror(errno));
    out->bundle_bytes = (uint64_t)sb.st_size;
    out->bundle_disk_bytes = (uint64_t)sb.st_blocks * 512u;

    /* Cold: nothing of the file may stay mapped (a mapped page cannot be
     * dropped), so unload first, then drop and verify. */
    eb_device_unload(dev);
    eb_error_clear(&e);
    st = eb_device_evict(dev, path, &out->cache, &e);
    if (st == EB_ERR_UNSUPPORTED) {
        snprintf(out->cache.note, sizeof out->cache.note, "%.159s", e.msg);
    } else if (st) {
        if (err)
            *err = e;
        return st;
    }
    out->cold_verified = out->cache.verified;
    st = load_once(dev, path, inputs, cfg, &out->cold, &out->draws, err);
    if (st)
        return st;
    out->model = *eb_device_model_info(dev);
    /* Warm: the same file again, its pages now cached. */
    eb_device_unload(dev);
    return load_once(dev, path, inputs, cfg, &out->warm, &out->draws, err);
}

void eb_latency_result_free(eb_latency_result *r)
{
    if (!r)
        return;
    eb_free(r->samples);
    memset(r, 0, sizeof *r);
}

/* Room for the samples, sized before the clock starts: the larger of
 * min_queries and what min_seconds needs at the warm-up's pace (plus a
 * quarter), capped by max_queries and by 2^22 (a wrong estimate then
 * costs a doubling between two queries, never a failure). */
static size_t initial_capacity(const eb_measure_config *cfg, double warm_per_query)
{
    double want = (double)cfg->min_queries;
    if (warm_per_query > 0.0 && cfg->min_seconds > 0.0) {
        double est = 1.25 * cfg->min_seconds / warm_per_query + 64.0;
        if (est > want)
            want = est;
    }
    if (want > (double)(1u << 22))
        want = (double)(1u << 22);
    if (want < (double)cfg->min_queries)
        want = (double)cfg->min_queries;
    if (cfg->max_queries && want > (double)cfg->max_queries)
        want = (double)cfg->max_queries;
    return (size_t)want;
}

eb_status eb_measure_latency(eb_device *dev, const eb_dataset *inputs,
                             const eb_measure_config *cfg, eb_latency_result *out,
                             eb_error *err)
{
    eb_measure_config defaults;
    const eb_device_model *m;
    float *probs = NULL;
    size_t in, cap, count = 0;
    double start = 0.0, last = 0.0, warm_t0, warm_s;
    uint32_t S;
    eb_status st;

    memset(out, 0, sizeof *out);
    if (!cfg) {
        eb_measure_config_default(&defaults);
        cfg = &defaults;
    }
    st = check_measure_config(cfg, err);
    if (st == EB_OK)
        st = check_inputs(dev, inputs, cfg, &m, &S, err);
    if (st)
        return st;
    in = m->in_size;
    probs = alloc_probs(S, (size_t)m->n_classes, err);
    if (!probs)
        return EB_ERR_NOMEM;
    out->draws = S;
    out->warmup = cfg->warmup;

    /* Warm-up: query i uses input i mod n, as the timed queries do. */
    warm_t0 = eb_measure_now();
    for (size_t i = 0; i < cfg->warmup; i++) {
        size_t idx = i % inputs->n;
        st = eb_device_predict(dev, inputs->x + idx * in, 1, S, cfg->seed, idx, probs, err);
        if (st)
            goto fail;
    }
    warm_s = eb_measure_now() - warm_t0;
    cap = initial_capacity(cfg, cfg->warmup ? warm_s / (double)cfg->warmup : 0.0);
    out->samples = eb_malloc(cap * sizeof *out->samples);
    if (!out->samples) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu latency samples", cap);
        goto fail;
    }
    st = eb_measure_memory_begin(dev, &out->memory, err);
    if (st)
        goto fail;

    /* Timed queries: each sample spans exactly one eb_device_predict call
     * on one input. The loop stops once both minimums are met (or at
     * max_queries). The example index is the input's, so an input always
     * gets the same dropout masks. */
    while ((count < cfg->min_queries || last - start < cfg->min_seconds) &&
           (cfg->max_queries == 0 || count < cfg->max_queries)) {
        size_t idx = (cfg->warmup + count) % inputs->n;
        double t0, t1;
        if (count == cap) {
            /* between two queries, outside either's timing */
            size_t ncap = cap * 2;
            double *grown;
            if (cfg->max_queries && ncap > cfg->max_queries)
                ncap = cfg->max_queries;
            grown = eb_realloc(out->samples, ncap * sizeof *grown);
            if (!grown) {
                st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for %zu latency samples",
                                  ncap);
                goto fail;
            }
            out->samples = grown;
            cap = ncap;
        }
        t0 = eb_measure_now();
        st = eb_device_predict(dev, inputs->x + idx * in, 1, S, cfg->seed, idx, probs, err);
        t1 = eb_measure_now();
        if (st)
            goto fail;
        if (count == 0)
            start = t0;
        out->samples[count++] = t1 - t0;
        last = t1;
    }
    out->n = count;
    out->duration_s = last - start;
    out->reached_min_queries = count >= cfg->min_queries;
    out->reached_min_seconds = out->duration_s >= cfg->min_seconds;
    st = eb_measure_memory_end(dev, &out->memory, err);
    if (st == EB_OK)
        st = check_probs(dev, probs, S, (size_t)m->n_classes, err);
    if (st == EB_OK)
        st = eb_measure_latency_stats(out->samples, out->n, cfg->level, &out->stats, err);
    if (st)
        goto fail;
    eb_free(probs);
    return EB_OK;
fail:
    eb_free(probs);
    eb_latency_result_free(out);
    return st;
}

eb_status eb_measure_throughput(eb_device *dev, const eb_dataset *inputs,
                                const eb_measure_config *cfg, eb_throughput_result *out,
                                eb_error *err)
{
    eb_measure_config defaults;
    const eb_device_model *m;
    float *probs = NULL, *staging = NULL;
    size_t in, batch, off = 0, done = 0;
    double start = 0.0, last = 0.0;
    uint32_t S;
    eb_status st;

    memset(out, 0, sizeof *out);
    if (!cfg) {
        eb_measure_config_default(&defaults);
        cfg = &defaults;
    }
    st = check_measure_config(cfg, err);
    if (st == EB_OK)
        st = check_inputs(dev, inputs, cfg, &m, &S, err);
    if (st)
        return st;
    if (cfg->batch > m->max_batch)
        return eb_error_set(err, EB_ERR_ARG,
                            "throughput batch %d exceeds device '%s''s max_batch %d (open the "
                            "device with a larger max_batch)", cfg->batch, eb_device_name(dev),
                            m->max_batch);
    in = m->in_size;
    batch = (size_t)cfg->batch;
    probs = alloc_probs(batch * S, (size_t)m->n_classes, err);
    if (!probs)
        return EB_ERR_NOMEM;
    /* A set smaller than a batch is tiled once into a staging batch, so
     * the timed loop only passes pointers. */
    if (inputs->n < batch) {
        staging = eb_malloc(batch * in * sizeof *staging);
        if (!staging) {
            eb_free(probs);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a batch of %zu inputs",
                                batch);
        }
        for (size_t i = 0; i < batch; i++)
            memcpy(staging + i * in, inputs->x + (i % inputs->n) * in, in * sizeof *staging);
    }
    out->batch = cfg->batch;
    out->draws = S;

    for (size_t b = 0; b < cfg->throughput_warmup; b++) { /* untimed */
        st = eb_device_predict(dev, staging ? staging : inputs->x, batch, S, cfg->seed, 0, probs,
                               err);
        if (st)
            goto done;
    }
    st = eb_measure_memory_begin(dev, &out->memory, err);
    if (st)
        goto done;
    while (done < cfg->min_batches || last - start < cfg->throughput_min_seconds) {
        const float *xb = staging ? staging : inputs->x + off * in;
        double t0 = eb_measure_now();
        st = eb_device_predict(dev, xb, batch, S, cfg->seed, staging ? 0 : off, probs, err);
        last = eb_measure_now();
        if (st)
            goto done;
        if (done == 0)
            start = t0;
        done++;
        if (!staging) {
            off += batch;
            if (off + batch > inputs->n)
                off = 0;
        }
    }
    out->batches = done;
    out->inputs = done * batch;
    out->seconds = last - start;
    out->inputs_per_s = out->seconds > 0.0 ? (double)out->inputs / out->seconds : 0.0;
    st = eb_measure_memory_end(dev, &out->memory, err);
    if (st == EB_OK)
        st = check_probs(dev, probs, batch * S, (size_t)m->n_classes, err);
done:
    eb_free(probs);
    eb_free(staging);
    if (st)
        memset(out, 0, sizeof *out);
    return st;
}
