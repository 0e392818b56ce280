/* test_measure.c: the measurement protocol (devices/measure.c).
 *
 * The statistics are pure functions checked against values computed once
 * with numpy and scipy (the calls are quoted beside them); the median's
 * interval also against textbook ranks. The /proc/self/status parser is
 * checked on fixed text; the peak reset and the page-cache drop on this
 * machine, with the tmpfs case where it exists. The protocol itself runs
 * on the CPU device with a small bundle: load timings are positive and the
 * cold load says whether its page drop was verified; latency honours both
 * minimums and keeps every sample; throughput counts what it ran; and the
 * EB_INJECT_SLOWDOWN hook makes predictions measurably slower. No test
 * asserts an absolute time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "devices/eb_device.h"
#include "methods/eb_methods.h"

#define MLP "input 28x28x1; flatten; dense 16; relu; dense 10"

static void scratch_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/devices_measure_%s", EB_TEST_BINARY_DIR, name);
}

static void write_bundle(const char *path, const char *arch_text, uint32_t S)
{
    eb_arch arch;
    eb_bundle_writer *w;
    eb_error err;
    eb_rng r;
    float *theta;
    assert_int_equal(eb_arch_parse(arch_text, &arch, &err), EB_OK);
    theta = malloc((size_t)S * arch.n_params * sizeof *theta);
    assert_non_null(theta);
    eb_rng_seed(&r, 21, 0);
    for (uint32_t s = 0; s < S; s++)
        eb_arch_init_params(&arch, theta + (size_t)s * arch.n_params, &r);
    assert_int_equal(eb_bundle_writer_new(&w, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_arch(w, arch_text, &err), EB_OK);
    assert_int_equal(eb_bundle_writer_samples(w, S, arch.n_params, theta, &err), EB_OK);
    assert_int_equal(eb_bundle_write(w, path, &err), EB_OK);
    eb_bundle_writer_free(w);
    free(theta);
}

/* A dataset of n random 28x28x1 images (x aligned, as eb_dataset's). */
static void make_inputs(eb_dataset *d, size_t n, int h)
{
    eb_rng r;
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "random");
    snprintf(d->split, sizeof d->split, "test");
    d->n = n;
    d->h = d->w = h;
    d->c = 1;
    d->n_classes = 10;
    d->x = eb_malloc_aligned(64, n * (size_t)h * (size_t)h * sizeof *d->x);
    d->y = eb_malloc(n);
    assert_non_null(d->x);
    assert_non_null(d->y);
    eb_rng_seed(&r, 5, 0);
    for (size_t i = 0; i < n * (size_t)h * (size_t)h; i++)
        d->x[i] = eb_rng_uniformf(&r);
    for (size_t i = 0; i < n; i++)
        d->y[i] = (uint8_t)(i % 10);
}

static void free_inputs(eb_dataset *d)
{
    eb_free_aligned(d->x);
    eb_free(d->y);
    memset(d, 0, sizeof *d);
}

/* A quick protocol: no test waits for the 2 s defaults. */
static void quick_config(eb_measure_config *c)
{
    eb_measure_config_default(c);
    c->warmup = 3;
    c->min_queries = 20;
    c->min_seconds = 0.0;
    c->batch = 8;
    c->min_batches = 2;
    c->throughput_min_seconds = 0.0;
}

/* ---- statistics ------------------------------------------------------------ */

/* 20 latencies in seconds, in "query order" (unsorted). */
static const double sample20[20] = {0.0131, 0.0102, 0.0125, 0.0099, 0.0188, 0.0110, 0.0107,
                                    0.0142, 0.0115, 0.0101, 0.0250, 0.0119, 0.0104, 0.0121,
                                    0.0108, 0.0133, 0.0098, 0.0112, 0.0117, 0.0160};
/* the same, sorted (Python's sorted(sample20)) */
static const double sorted20[20] = {0.0098, 0.0099, 0.0101, 0.0102, 0.0104, 0.0107, 0.0108,
                                    0.0110, 0.0112, 0.0115, 0.0117, 0.0119, 0.0121, 0.0125,
                                    0.0131, 0.0133, 0.0142, 0.0160, 0.0188, 0.0250};

static void test_quantiles(void **state)
{
    const double one = 0.5;
    (void)state;
    /* numpy 1.24.2: numpy.percentile(sample20, [50, 90, 99]) (linear) =
     * [0.0116, 0.01628, 0.023822]; by hand, p90: h = 19 * 0.9 = 17.1,
     * 0.0160 + 0.1 * (0.0188 - 0.0160) = 0.01628. */
    assert_float_equal(eb_measure_quantile(sorted20, 20, 0.50), 0.0116, 1e-12);
    assert_float_equal(eb_measure_quantile(sorted20, 20, 0.90), 0.01628, 1e-12);
    assert_float_equal(eb_measure_quantile(sorted20, 20, 0.99), 0.023822, 1e-12);
    assert_float_equal(eb_measure_quantile(sorted20, 20, 0.0), 0.0098, 0);
    assert_float_equal(eb_measure_quantile(sorted20, 20, 1.0), 0.0250, 0);
    assert_float_equal(eb_measure_quantile(&one, 1, 0.99), 0.5, 0);
    /* numpy.percentile([1, 2, 3, 4], 25) = 1.75 */
    {
        const double four[4] = {1, 2, 3, 4};
        assert_float_equal(eb_measure_quantile(four, 4, 0.25), 1.75, 1e-15);
    }
}

/* Ranks against scipy 1.10.1: with a = (1 - level) / 2,
 *   l = max{l in 0..n : binom.cdf(l - 1, n, q) <= a} (cdf(-1) = 0),
 *   u = min{u in 1..n+1 : binom.sf(u - 1, n, q) <= a},
 *   coverage = binom.cdf(u - 1, n, q) - binom.cdf(l - 1, n, q).
 * (100, 0.5, 0.95) -> (40, 61) and (10, 0.5, 0.95) -> (2, 9) are also the
 * textbook table values for the median. */
static void test_ci_ranks(void **state)
{
    static const struct {
        size_t n;
        double q, level;
        size_t lo, hi;
        double coverage;
    } cases[] = {
        {20, 0.5, 0.95, 6, 15, 0.9586105346679688},
        {5, 0.5, 0.95, 0, 6, 1.0},
        {6, 0.5, 0.95, 1, 6, 0.96875},
        {10, 0.5, 0.95, 2, 9, 0.978515625},
        {100, 0.5, 0.95, 40, 61, 0.9647997997822952},
        {1000, 0.5, 0.95, 469, 532, 0.9537088026395018},
        {100, 0.5, 0.99, 37, 64, 0.9933628794840739},
        {367, 0.99, 0.95, 359, 368, 0.9873807468697264},
        {368, 0.99, 0.95, 360, 368, 0.9624158204108587},
        {1000, 0.99, 0.95, 983, 997, 0.976094763497977},
        {1000, 0.9, 0.9, 884, 916, 0.9081536018628309},
    };
    eb_quantile_ci ci;
    eb_error err;
    double worst = 0.0;
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(eb_measure_quantile_ci_ranks(cases[i].n, cases[i].q, cases[i].level,
                                                      &ci, &err), EB_OK);
        if (ci.lo_rank != cases[i].lo || ci.hi_rank != cases[i].hi)
            fail_msg("n %zu q %g level %g: ranks (%zu, %zu), expected (%zu, %zu)", cases[i].n,
                     cases[i].q, cases[i].level, ci.lo_rank, ci.hi_rank, cases[i].lo,
                     cases[i].hi);
        if (fabs(ci.coverage - cases[i].coverage) > worst)
            worst = fabs(ci.coverage - cases[i].coverage);
        assert_int_equal(ci.valid, cases[i].lo >= 1 && cases[i].hi <= cases[i].n);
    }
    printf("ranks match scipy; max coverage error %.3g\n", worst);
    assert_true(worst < 1e-9);
    /* a million samples: l from binom.ppf(0.025, 1e6, 0.5) = 499020 with
     * binom.cdf(499019, 1e6, .5) = 0.024939 <= 0.025 < binom.cdf(499020)
     * = 0.025056; u = n + 1 - l by symmetry */
    assert_int_equal(eb_measure_quantile_ci_ranks(1000000, 0.5, 0.95, &ci, &err), EB_OK);
    assert_int_equal(ci.lo_rank, 499020);
    assert_int_equal(ci.hi_rank, 500981);
    assert_int_equal(eb_measure_quantile_ci_ranks(0, 0.5, 0.95, &ci, &err), EB_ERR_ARG);
    assert_int_equal(eb_measure_quantile_ci_ranks(10, 1.0, 0.95, &ci, &err), EB_ERR_ARG);
    assert_int_equal(eb_measure_quantile_ci_ranks(10, 0.5, 1.0, &ci, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "level"));
}

static double *ramp(size_t n)
{
    double *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (double)((i * 7919) % n + 1) * 1e-4; /* a permutation of 1..n, scaled */
    return v;
}

static void test_latency_stats(void **state)
{
    eb_latency_stats st;
    eb_error err;
    double copy[20], *v;
    (void)state;
    memcpy(copy, sample20, sizeof copy);
    assert_int_equal(eb_measure_latency_stats(sample20, 20, 0.95, &st, &err), EB_OK);
    assert_memory_equal(copy, sample20, sizeof copy); /* input left alone */
    assert_int_equal(st.n, 20);
    assert_float_equal(st.min, 0.0098, 0);
    assert_float_equal(st.max, 0.0250, 0);
    assert_float_equal(st.mean, 0.01271, 1e-12); /* numpy.mean(sample20) */
    assert_float_equal(st.p50, 0.0116, 1e-12);
    assert_float_equal(st.p90, 0.01628, 1e-12);
    assert_float_equal(st.p99, 0.023822, 1e-12);
    /* ranks (6, 15): the 6th and 15th smallest */
    assert_int_equal(st.median_ci.lo_rank, 6);
    assert_int_equal(st.median_ci.hi_rank, 15);
    assert_float_equal(st.median_ci.lo, 0.0107, 0);
    assert_float_equal(st.median_ci.hi, 0.0131, 0);
    assert_int_equal(st.median_ci.valid, 1);
    assert_int_equal(st.p99_supported, 0);
    assert_int_equal(st.p99_ci.hi_rank, 21); /* beyond the sample */
    assert_float_equal(st.p99_ci.hi, 0.0250, 0); /* falls back to the maximum */

    /* the p99 rule: 367 samples do not support it, 368 do */
    v = ramp(368);
    assert_int_equal(eb_measure_latency_stats(v, 367, 0.95, &st, &err), EB_OK);
    assert_int_equal(st.p99_supported, 0);
    free(v);
    v = ramp(368);
    assert_int_equal(eb_measure_latency_stats(v, 368, 0.95, &st, &err), EB_OK);
    assert_int_equal(st.p99_supported, 1);
    /* values 1..368 (x 1e-4): ranks (360, 368); p99 at h = 367 * 0.99 =
     * 363.33 -> 364.33e-4 */
    assert_float_equal(st.p99_ci.lo, 360e-4, 1e-12);
    assert_float_equal(st.p99_ci.hi, 368e-4, 1e-12);
    assert_float_equal(st.p99, 364.33e-4, 1e-12);
    free(v);

    assert_int_equal(eb_measure_latency_stats(sample20, 0, 0.95, &st, &err), EB_ERR_ARG);
    copy[3] = NAN;
    assert_int_equal(eb_measure_latency_stats(copy, 20, 0.95, &st, &err), EB_ERR_NUMERIC);
    assert_non_null(strstr(err.msg, "sample 3"));
}

/* ---- process memory --------------------------------------------------------- */

static const char status_text[] =
    "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t15945\n"
    "VmPeak:\t    3060 kB\nVmSize:\t    3060 kB\nVmLck:\t       0 kB\n"
    "VmHWM:\t    1744 kB\nVmRSS:\t    1700 kB\nRssAnon:\t     112 kB\n"
    "RssFile:\t    1588 kB\nRssShmem:\t       0 kB\nVmData:\t     360 kB\n"
    "Threads:\t1\n";

static void test_proc_status_parser(void **state)
{
    eb_proc_memory m;
    eb_error err;
    (void)state;
    assert_int_equal(eb_measure_parse_proc_status(status_text, &m, &err), EB_OK);
    assert_int_equal(m.vm_hwm, 1744u * 1024u);
    assert_int_equal(m.vm_rss, 1700u * 1024u);
    assert_int_equal(m.rss_anon, 112u * 1024u);
    assert_int_equal(m.rss_file, 1588u * 1024u);
    assert_int_equal(m.rss_shmem, 0);
    assert_int_equal(m.have, EB_PROC_HAVE_HWM | EB_PROC_HAVE_RSS | EB_PROC_HAVE_ANON |
                                 EB_PROC_HAVE_FILE | EB_PROC_HAVE_SHMEM);
    /* an old kernel: no Rss* lines; no trailing newline */
    assert_int_equal(eb_measure_parse_proc_status("VmHWM: 8 kB\nVmRSS:\t4 kB", &m, &err), EB_OK);
    assert_int_equal(m.vm_hwm, 8192);
    assert_int_equal(m.vm_rss, 4096);
    assert_int_equal(m.have, EB_PROC_HAVE_HWM | EB_PROC_HAVE_RSS);
    /* VmHWMx is another field, not VmHWM */
    assert_int_equal(eb_measure_parse_proc_status("VmHWMx: 8 kB\nVmRSS: 4 kB\n", &m, &err),
                     EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "no VmHWM"));
    assert_int_equal(eb_measure_parse_proc_status("VmHWM: 8 kB\n", &m, &err), EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "no VmRSS"));
    assert_int_equal(eb_measure_parse_proc_status("VmHWM: 8 kB\nVmRSS: x kB\n", &m, &err),
                     EB_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "VmRSS line"));
    assert_int_equal(eb_measure_parse_proc_status("VmHWM: 8 MB\nVmRSS: 1 kB\n", &m, &err),
                     EB_ERR_FORMAT);
    assert_int_equal(eb_measure_parse_proc_status(
                         "VmHWM: 99999999999999999999 kB\nVmRSS: 1 kB\n", &m, &err),
                     EB_ERR_FORMAT);
    /* this process */
    assert_int_equal(eb_measure_proc_memory(&m, &err), EB_OK);
    assert_true(m.vm_rss > 0 && m.vm_hwm >= m.vm_rss);
    assert_true(m.have & EB_PROC_HAVE_ANON); /* Linux >= 4.5 */
}

static void test_peak_reset(void **state)
{
    const size_t big = 64u << 20;
    eb_proc_memory m0, m1, m2;
    eb_error err;
    eb_status st;
    char *p;
    (void)state;
    assert_int_equal(eb_measure_proc_memory(&m0, &err), EB_OK);
    /* mmap, not malloc: a sanitizer's quarantine would keep freed heap
     * resident and hide the drop */
    p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 1, big);
    assert_int_equal(eb_measure_proc_memory(&m1, &err), EB_OK);
    munmap(p, big);
    assert_true(m1.vm_hwm >= m0.vm_rss + big / 2);
    assert_true(m1.rss_anon >= big);
    st = eb_measure_proc_reset_peak(&err);
    if (st == EB_ERR_UNSUPPORTED) {
        printf("skipped: %s\n", err.msg);
        return;
    }
    assert_int_equal(st, EB_OK);
    assert_int_equal(eb_measure_proc_memory(&m2, &err), EB_OK);
    printf("peak before reset %llu kB, after %llu kB (RSS %llu kB)\n",
           (unsigned long long)(m1.vm_hwm >> 10), (unsigned long long)(m2.vm_hwm >> 10),
           (unsigned long long)(m2.vm_rss >> 10));
    assert_true(m2.vm_hwm + big / 2 <= m1.vm_hwm);
}

/* ---- page cache --------------------------------------------------------------- */

static void write_file(const char *path, size_t bytes)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    for (size_t i = 0; i < bytes; i++)
        fputc((int)(i * 31 % 251), fp);
    fclose(fp);
}

static void test_page_cache_drop(void **state)
{
    char path[512];
    eb_page_cache_state cs;
    eb_error err;
    struct statfs sf;
    unsigned long fs;
    (void)state;
    scratch_path(path, sizeof path, "pages.bin");
    write_file(path, (1u << 20) + 100);
    assert_int_equal(eb_measure_page_cache_drop(path, &cs, &err), EB_OK);
    printf("%s: %llu pages, resident %.2f -> %.2f, visible %d, verified %d%s%s\n", path,
           (unsigned long long)cs.pages, cs.resident_before, cs.resident_after, cs.visible,
           cs.verified, cs.note[0] ? ": " : "", cs.note);
    assert_int_equal(cs.file_bytes, (1u << 20) + 100);
    assert_int_equal(cs.pages, ((1u << 20) + 100 + (size_t)sysconf(_SC_PAGESIZE) - 1) /
                                   (size_t)sysconf(_SC_PAGESIZE));
    assert_int_equal(cs.verified, cs.visible && cs.resident_after == 0.0);
    assert_int_equal(cs.verified, cs.note[0] == '\0');
    /* just written: cached, so mincore saw pages unless it cannot see any */
    if (cs.visible)
        assert_true(cs.resident_before > 0.0);
    /* On a disk file system the drop of our own, clean, unmapped file must
     * work; elsewhere (tmpfs, overlay, network) only consistency is
     * asserted above. */
    assert_int_equal(statfs(path, &sf), 0);
    fs = (unsigned long)sf.f_type;
    if (fs == 0xEF53UL /* ext2/3/4 */ || fs == 0x58465342UL /* xfs */ ||
        fs == 0x9123683EUL /* btrfs */) {
        assert_int_equal(cs.visible, 1); /* we own the file */
        assert_int_equal(cs.verified, 1);
        assert_true(cs.resident_after == 0.0);
    }
    remove(path);

    snprintf(path, sizeof path, "%s/devices_measure_absent.bin", EB_TEST_BINARY_DIR);
    remove(path);
    assert_int_equal(eb_measure_page_cache_drop(path, &cs, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, path));

    /* tmpfs keeps its pages: the drop must not be reported verified */
    if (statfs("/dev/shm", &sf) == 0 && sf.f_type == 0x01021994 /* TMPFS_MAGIC */ &&
        access("/dev/shm", W_OK) == 0) {
        snprintf(path, sizeof path, "/dev/shm/eb_test_measure_%ld.bin", (long)getpid());
        write_file(path, 65536);
        assert_int_equal(eb_measure_page_cache_drop(path, &cs, &err), EB_OK);
        printf("tmpfs: resident %.2f -> %.2f, verified %d: %s\n", cs.resident_before,
               cs.resident_after, cs.verified, cs.note);
        assert_int_equal(cs.verified, 0);
        assert_true(cs.resident_after > 0.0);
        assert_non_null(strstr(cs.note, "stayed cached"));
        remove(path);
    } else {
        printf("no writable tmpfs at /dev/shm: tmpfs case skipped\n");
    }
}

/* ---- the protocol on the CPU device --------------------------------------- */

static eb_device *open_loaded(const char *path, int max_batch)
{
    eb_device_config cfg;
    eb_device *dev;
    eb_error err;
    eb_device_config_default(&cfg);
    cfg.max_batch = max_batch;
    if (eb_device_open("cpu", &cfg, &dev, &err) != EB_OK)
        fail_msg("open: %s", err.msg);
    if (eb_device_load(dev, path, NULL, &err) != EB_OK)
        fail_msg("load: %s", err.msg);
    return dev;
}

static void test_measure_load(void **state)
{
    char path[512], missing[512];
    eb_device *dev;
    eb_dataset in;
    eb_measure_config cfg;
    eb_load_result r;
    eb_error err;
    struct stat sb;
    (void)state;
    scratch_path(path, sizeof path, "load.ebb");
    scratch_path(missing, sizeof missing, "missing.ebb");
    remove(missing);
    write_bundle(path, MLP, 3);
    make_inputs(&in, 4, 28);
    quick_config(&cfg);
    dev = open_loaded(path, 8); /* loaded: the protocol unloads first */
    assert_int_equal(eb_measure_load(dev, path, &in, &cfg, &r, &err), EB_OK);
    printf("cold: load %.6f s (open %.6f, prepare %.6f), first predict %.6f s; page drop %s%s%s\n",
           r.cold.load_s, r.cold.device.open_s, r.cold.device.prepare_s, r.cold.first_predict_s,
           r.cold_verified ? "verified" : "NOT verified", r.cache.note[0] ? ": " : "",
           r.cache.note);
    printf("warm: load %.6f s, first predict %.6f s; peak RSS %llu kB, file-backed %llu kB\n",
           r.warm.load_s, r.warm.first_predict_s,
           (unsigned long long)(r.warm.memory.peak_rss >> 10),
           (unsigned long long)(r.warm.memory.end.rss_file >> 10));
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(r.bundle_bytes, (uint64_t)sb.st_size);
    assert_int_equal(r.bundle_disk_bytes, (uint64_t)sb.st_blocks * 512u);
    assert_int_equal(r.cache.file_bytes, r.bundle_bytes);
    assert_int_equal(r.cold_verified, r.cache.verified);
    assert_int_equal(r.cold_verified, r.cache.visible && r.cache.resident_after == 0.0);
    if (!r.cold_verified)
        assert_true(r.cache.note[0] != '\0');
    assert_true(r.cold.load_s > 0.0 && r.warm.load_s > 0.0);
    assert_true(r.cold.device.open_s > 0.0 && r.cold.device.prepare_s > 0.0);
    assert_true(r.cold.load_s >= r.cold.device.total_s); /* the caller's span holds the device's */
    assert_true(r.cold.first_predict_s > 0.0 && r.warm.first_predict_s > 0.0);
    assert_int_equal(r.draws, 3);
    assert_int_equal(r.model.n_classes, 10);
    assert_int_equal(r.model.mapped_bytes, r.bundle_bytes);
    assert_int_equal(r.cold.memory.available, 1);
    assert_true(r.cold.memory.peak_rss >= r.cold.memory.end.vm_rss ||
                !r.cold.memory.peak_reset);
    assert_true(r.warm.memory.end.rss_file > 0);
    assert_non_null(eb_device_model_info(dev)); /* left loaded */

    assert_int_equal(eb_measure_load(dev, missing, &in, &cfg, &r, &err), EB_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, missing));
    free_inputs(&in);
    make_inputs(&in, 2, 27); /* wrong shape */
    assert_int_equal(eb_measure_load(dev, path, &in, &cfg, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "27x27x1"));
    assert_null(eb_device_model_info(dev)); /* a failed measurement unloads */
    free_inputs(&in);
    eb_device_close(dev);
    remove(path);
}

static void check_samples(const eb_latency_result *r)
{
    double sum = 0.0;
    for (size_t i = 0; i < r->n; i++) {
        assert_true(r->samples[i] > 0.0);
        sum += r->samples[i];
    }
    /* each sample lies inside the measured span, and they do not overlap */
    assert_true(sum <= r->duration_s + 1e-9);
    assert_int_equal(r->stats.n, r->n);
    assert_true(r->stats.min <= r->stats.p50 && r->stats.p50 <= r->stats.max);
}

static void test_latency(void **state)
{
    char path[512];
    eb_device *dev;
    eb_dataset in;
    eb_measure_config cfg;
    eb_latency_result r;
    eb_error err;
    (void)state;
    scratch_path(path, sizeof path, "latency.ebb");
    write_bundle(path, MLP, 2);
    make_inputs(&in, 7, 28);
    dev = open_loaded(path, 4);

    /* count-bound: exactly min_queries */
    quick_config(&cfg);
    cfg.min_queries = 37;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_OK);
    assert_int_equal(r.n, 37);
    assert_int_equal(r.warmup, 3);
    assert_int_equal(r.draws, 2);
    assert_true(r.reached_min_queries && r.reached_min_seconds);
    check_samples(&r);
    assert_int_equal(r.stats.median_ci.valid, 1);
    assert_int_equal(r.stats.p99_supported, 0);
    assert_int_equal(r.memory.available, 1);
    eb_latency_result_free(&r);
    assert_null(r.samples);
    assert_int_equal(r.n, 0);

    /* time-bound: no warm-up, so the sample array starts at min_queries
     * and has to grow */
    quick_config(&cfg);
    cfg.warmup = 0;
    cfg.min_queries = 5;
    cfg.min_seconds = 0.2;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_OK);
    printf("%zu queries in %.3f s: p50 %.2f us [%.2f, %.2f] (95%%, ranks %zu..%zu), p90 %.2f us, "
           "p99 %.2f us (%s)\n", r.n, r.duration_s, 1e6 * r.stats.p50,
           1e6 * r.stats.median_ci.lo, 1e6 * r.stats.median_ci.hi, r.stats.median_ci.lo_rank,
           r.stats.median_ci.hi_rank, 1e6 * r.stats.p90, 1e6 * r.stats.p99,
           r.stats.p99_supported ? "supported" : "too few queries");
    assert_true(r.n > 5);
    assert_true(r.duration_s >= 0.2);
    assert_true(r.reached_min_queries && r.reached_min_seconds);
    check_samples(&r);
    eb_latency_result_free(&r);

    /* max_queries stops it first and says so */
    quick_config(&cfg);
    cfg.min_queries = 10;
    cfg.max_queries = 40;
    cfg.min_seconds = 1000.0;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_OK);
    assert_int_equal(r.n, 40);
    assert_int_equal(r.reached_min_queries, 1);
    assert_int_equal(r.reached_min_seconds, 0);
    eb_latency_result_free(&r);

    /* configuration and state errors name what is wrong */
    quick_config(&cfg);
    cfg.level = 1.5;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "level = 1.5"));
    quick_config(&cfg);
    cfg.min_queries = 0;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "min_queries"));
    quick_config(&cfg);
    cfg.max_queries = 5;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "max_queries"));
    quick_config(&cfg);
    cfg.draws = 3;
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "draws = 3"));
    assert_null(r.samples);
    eb_device_unload(dev);
    quick_config(&cfg);
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "no bundle is loaded"));

    eb_device_close(dev);
    free_inputs(&in);
    remove(path);
}

static void test_throughput(void **state)
{
    char path[512];
    eb_device *dev;
    eb_dataset in;
    eb_measure_config cfg;
    eb_throughput_result t;
    eb_error err;
    (void)state;
    scratch_path(path, sizeof path, "throughput.ebb");
    write_bundle(path, MLP, 2);
    dev = open_loaded(path, 16);

    make_inputs(&in, 20, 28); /* windows of 8 over 20 inputs */
    quick_config(&cfg);
    cfg.min_batches = 4;
    assert_int_equal(eb_measure_throughput(dev, &in, &cfg, &t, &err), EB_OK);
    assert_int_equal(t.batches, 4);
    assert_int_equal(t.inputs, 32);
    assert_int_equal(t.batch, 8);
    assert_int_equal(t.draws, 2);
    assert_true(t.seconds > 0.0 && t.inputs_per_s > 0.0);
    assert_float_equal(t.inputs_per_s, 32.0 / t.seconds, 1e-9 * t.inputs_per_s);
    assert_int_equal(t.memory.available, 1);

    cfg.throughput_min_seconds = 0.1;
    assert_int_equal(eb_measure_throughput(dev, &in, &cfg, &t, &err), EB_OK);
    printf("throughput: %zu batches of %d in %.3f s: %.0f inputs/s\n", t.batches, t.batch,
           t.seconds, t.inputs_per_s);
    assert_true(t.seconds >= 0.1 && t.batches >= 4);
    free_inputs(&in);

    make_inputs(&in, 3, 28); /* fewer inputs than a batch: tiled */
    cfg.throughput_min_seconds = 0.0;
    assert_int_equal(eb_measure_throughput(dev, &in, &cfg, &t, &err), EB_OK);
    assert_int_equal(t.inputs, t.batches * 8);

    cfg.batch = 17; /* above the device's max_batch of 16 */
    assert_int_equal(eb_measure_throughput(dev, &in, &cfg, &t, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "max_batch 16"));
    free_inputs(&in);
    eb_device_close(dev);
    remove(path);
}

/* A backend whose probabilities are wrong: the protocol refuses to report
 * its timings. */
static eb_status broken_predict(void *ctx, const float *x, size_t n, uint32_t S, uint64_t seed,
                                uint64_t first_example, float *probs, eb_error *err)
{
    eb_status st = eb_device_cpu_ops.predict(ctx, x, n, S, seed, first_example, probs, err);
    probs[0] = 2.0f;
    return st;
}

static void test_verify_before_timing(void **state)
{
    char path[512];
    eb_device_ops broken = eb_device_cpu_ops;
    eb_device *dev;
    eb_dataset in;
    eb_measure_config cfg;
    eb_latency_result r;
    eb_throughput_result t;
    eb_load_result lr;
    eb_error err;
    (void)state;
    broken.name = "broken";
    broken.predict = broken_predict;
    scratch_path(path, sizeof path, "broken.ebb");
    write_bundle(path, MLP, 2);
    make_inputs(&in, 8, 28);
    quick_config(&cfg);
    assert_int_equal(eb_device_open_ops(&broken, NULL, &dev, &err), EB_OK);
    assert_int_equal(eb_measure_load(dev, path, &in, &cfg, &lr, &err), EB_ERR_NUMERIC);
    assert_non_null(strstr(err.msg, "'broken'"));
    assert_int_equal(eb_device_load(dev, path, NULL, &err), EB_OK);
    assert_int_equal(eb_measure_latency(dev, &in, &cfg, &r, &err), EB_ERR_NUMERIC);
    assert_null(r.samples);
    assert_int_equal(eb_measure_throughput(dev, &in, &cfg, &t, &err), EB_ERR_NUMERIC);
    eb_device_close(dev);
    free_inputs(&in);
    remove(path);
}

/* A device that is not in this process: no page drop, no memory. */
static void test_remote_like_device(void **state)
{
    char path[512];
    eb_device_ops bare = eb_device_cpu_ops;
    eb_device *dev;
    eb_dataset in;
    eb_measure_config cfg;
    eb_load_result lr;
    eb_memory_phase ph;
    eb_error err;
    (void)state;
    bare.name = "bare";
    bare.caps = 0;
    bare.input_grad = NULL;
    scratch_path(path, sizeof path, "bare.ebb");
    write_bundle(path, MLP, 2);
    make_inputs(&in, 2, 28);
    quick_config(&cfg);
    assert_int_equal(eb_device_open_ops(&bare, NULL, &dev, &err), EB_OK);
    assert_int_equal(eb_measure_memory_begin(dev, &ph, &err), EB_OK);
    assert_int_equal(ph.available, 0);
    assert_int_equal(eb_measure_memory_end(dev, &ph, &err), EB_OK);
    assert_int_equal(eb_measure_load(dev, path, &in, &cfg, &lr, &err), EB_OK);
    assert_int_equal(lr.cold_verified, 0);
    assert_non_null(strstr(lr.cache.note, "cannot drop"));
    assert_int_equal(lr.cold.memory.available, 0);
    assert_true(lr.cold.load_s > 0.0);
    eb_device_close(dev);
    free_inputs(&in);
    remove(path);
}

/* EB_INJECT_SLOWDOWN=0.5 makes each predict call busy-wait half its own
 * duration: the median latency must grow clearly (expected about 1.5x;
 * asserted at least 1.1x). Rounds alternate between the two devices and
 * each keeps its fastest median, so a burst of load from elsewhere on the
 * machine hits both alike. */
static void test_slowdown_hook(void **state)
{
    char path[512];
    eb_device *plain, *slowed;
    eb_device_info info;
    eb_dataset in;
    eb_measure_config cfg;
    eb_latency_result r;
    eb_error err;
    double best_plain = INFINITY, best_slowed = INFINITY;
    (void)state;
    scratch_path(path, sizeof path, "slow.ebb");
    write_bundle(path, MLP, 4);
    make_inputs(&in, 16, 28);
    plain = open_loaded(path, 4);
    setenv("EB_INJECT_SLOWDOWN", "0.5", 1);
    slowed = open_loaded(path, 4);
    unsetenv("EB_INJECT_SLOWDOWN");
    assert_int_equal(eb_device_describe(slowed, &info, &err), EB_OK);
    assert_true(info.injected_slowdown == 0.5);
    quick_config(&cfg);
    cfg.warmup = 20;
    cfg.min_queries = 300;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(eb_measure_latency(plain, &in, &cfg, &r, &err), EB_OK);
        if (r.stats.p50 < best_plain)
            best_plain = r.stats.p50;
        eb_latency_result_free(&r);
        assert_int_equal(eb_measure_latency(slowed, &in, &cfg, &r, &err), EB_OK);
        if (r.stats.p50 < best_slowed)
            best_slowed = r.stats.p50;
        eb_latency_result_free(&r);
    }
    printf("median latency: %.2f us plain, %.2f us with EB_INJECT_SLOWDOWN=0.5 (x%.2f)\n",
           1e6 * best_plain, 1e6 * best_slowed, best_slowed / best_plain);
    assert_true(best_slowed >= 1.1 * best_plain);
    eb_device_close(plain);
    eb_device_close(slowed);
    free_inputs(&in);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_ci_ranks),
        cmocka_unit_test(test_latency_stats),
        cmocka_unit_test(test_proc_status_parser),
        cmocka_unit_test(test_peak_reset),
        cmocka_unit_test(test_page_cache_drop),
        cmocka_unit_test(test_measure_load),
        cmocka_unit_test(test_latency),
        cmocka_unit_test(test_throughput),
        cmocka_unit_test(test_verify_before_timing),
        cmocka_unit_test(test_remote_like_device),
        cmocka_unit_test(test_slowdown_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
