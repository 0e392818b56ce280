/* test_browser.c: the whole pipeline as a user sees it: a small suite run
 * through the CLI into a results database, `edgebayes report`, and the
 * page opened in headless Chromium (Debian's chromium, installed by
 * scripts/install-deps.sh): it must load with no console message, and the
 * screenshot must show the table (its best-value cells and its text) and
 * the plots (pixels in the plot series' colours), checked on the decoded
 * pixels, not the file size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"

static char dir[512];

/* A minimal PNG decoder for the screenshot check: 8-bit RGB or RGBA,
 * non-interlaced (what Chromium writes), through zlib's inflate. Returns
 * RGBA pixels (w * h * 4) the caller frees, or NULL. */
static unsigned char *png_decode(const unsigned char *buf, size_t len, int *w, int *h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t pos = 8, idat_len = 0;
    unsigned char *idat = NULL, *raw = NULL, *out = NULL;
    int width = 0, height = 0, channels = 0;
    if (len < 8 || memcmp(buf, sig, 8))
        return NULL;
    while (pos + 12 <= len) {
        uint32_t n = (uint32_t)buf[pos] << 24 | (uint32_t)buf[pos + 1] << 16 |
                     (uint32_t)buf[pos + 2] << 8 | buf[pos + 3];
        const unsigned char *type = buf + pos + 4, *data = buf + pos + 8;
        if (n > len - pos - 12)
            goto bad;
        if (!memcmp(type, "IHDR", 4)) {
            width = (int)((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                          (uint32_t)data[2] << 8 | data[3]);
            height = (int)((uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 |
                           (uint32_t)data[6] << 8 | data[7]);
            if (data[8] != 8 || data[12] != 0 || (data[9] != 2 && data[9] != 6))
                goto bad; /* only 8-bit RGB/RGBA, no interlace */
            channels = data[9] == 6 ? 4 : 3;
        } else if (!memcmp(type, "IDAT", 4)) {
            unsigned char *grown = realloc(idat, idat_len + n);
            if (!grown)
                goto bad;
            idat = grown;
            memcpy(idat + idat_len, data, n);
            idat_len += n;
        } else if (!memcmp(type, "IEND", 4)) {
            break;
        }
        pos += 12 + n;
    }
    if (!width || !height || !channels || !idat)
        goto bad;
    {
        size_t stride = (size_t)width * channels, raw_len = (stride + 1) * (size_t)height;
        uLongf got = (uLongf)raw_len;
        raw = malloc(raw_len);
        out = malloc((size_t)width * height * 4);
        if (!raw || !out || uncompress(raw, &got, idat, idat_len) != Z_OK || got != raw_len)
            goto bad;
        for (int y = 0; y < height; y++) {
            unsigned char *line = raw + (size_t)y * (stride + 1) + 1;
            const unsigned char *prev = y ? raw + (size_t)(y - 1) * (stride + 1) + 1 : NULL;
            int filter = line[-1];
            for (size_t x = 0; x < stride; x++) {
                int a = x >= (size_t)channels ? line[x - channels] : 0;
                int b = prev ? prev[x] : 0;
                int c = prev && x >= (size_t)channels ? prev[x - channels] : 0;
                int p, pa, pb, pc;
                switch (filter) {
                case 0: break;
                case 1: line[x] = (unsigned char)(line[x] + a); break;
                case 2: line[x] = (unsigned char)(line[x] + b); break;
                case 3: line[x] = (unsigned char)(line[x] + (a + b) / 2); break;
                case 4:
                    p = a + b - c;
                    pa = abs(p - a);
                    pb = abs(p - b);
                    pc = abs(p - c);
                    line[x] = (unsigned char)(line[x] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c));
                    break;
                default: goto bad;
                }
            }
            for (int x = 0; x < width; x++) {
                unsigned char *o = out + ((size_t)y * width + x) * 4;
                o[0] = line[x * channels];
                o[1] = line[x * channels + 1];
                o[2] = line[x * channels + 2];
                o[3] = channels == 4 ? line[x * channels + 3] : 255;
            }
        }
    }
    free(idat);
    free(raw);
    *w = width;
    *h = height;
    return out;
bad:
    free(idat);
    free(raw);
    free(out);
    return NULL;
}

static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    int status;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char tiny_suite[] =
    "[suite]\nname = browser-test\nseeds = 1\narchs = mlp\n"
    "[data]\ntest_limit = 500\nood_limit = 500\n"
    "[evaluation]\nbootstrap = 20\n"
    "[device]\nthreads = 2\nlatency_warmup = 5\nlatency_min_queries = 40\n"
    "latency_min_seconds = 0.1\nthroughput_min_seconds = 0.1\n"
    "[adversarial]\neps = 0, 0.05, 0.1\npgd_steps = 2\nsubset = 100\n"
    "[shift]\nseverities = 1, 3, 5\nsubset = 100\n"
    "[method map]\nepochs = 1\n"
    "[method ensemble]\nepochs = 1\nsamples = 2\n"
    "[method dropout]\nepochs = 1\nsamples = 3\n";

/* Pixels within +-tol of (r, g, b) in each channel. */
static size_t count_colour(const unsigned char *px, int w, int h, int r, int g, int b, int tol)
{
    size_t n = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        const unsigned char *p = px + 4 * i;
        if (abs(p[0] - r) <= tol && abs(p[1] - g) <= tol && abs(p[2] - b) <= tol)
            n++;
    }
    return n;
}

static void test_report_in_chromium(void **state)
{
    char path[700], *log, *png;
    size_t len, png_len;
    FILE *fp;
    int w = 0, h = 0;
    unsigned char *px;
    (void)state;
    snprintf(path, sizeof path, "%s/suite.ini", dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(tiny_suite, fp);
    fclose(fp);
    assert_int_equal(sh("%s run %s/suite.ini --db %s/r.db --cache %s/cache --quiet > %s/run.out",
                        EB_CLI_PATH, dir, dir, dir, dir),
                     0);
    assert_int_equal(sh("%s report --db %s/r.db -o %s/report > /dev/null", EB_CLI_PATH, dir, dir),
                     0);
    if (sh("command -v chromium > /dev/null") != 0)
        fail_msg("chromium is not installed: run scripts/install-deps.sh");
    /* the flags Chromium needs as root in a sandboxed CI machine; a fresh
     * profile so nothing from an earlier run leaks in */
    assert_int_equal(sh("chromium --headless --no-sandbox --disable-gpu --no-first-run "
                        "--disable-background-networking --disable-component-update "
                        "--disable-sync --user-data-dir=%s/profile --enable-logging=stderr "
                        "--v=0 --window-size=1400,3000 --screenshot=%s/shot.png "
                        "file://%s/report/index.html > %s/chromium.log 2>&1",
                        dir, dir, dir, dir),
                     0);
    snprintf(path, sizeof path, "%s/chromium.log", dir);
    assert_int_equal(eb_file_read_all(path, &log, &len, NULL), EB_OK);
    /* every message the page logs (errors, uncaught exceptions) appears as
     * a CONSOLE line */
    if (strstr(log, "CONSOLE"))
        fail_msg("the page logged to the console:\n%s", log);
    eb_free(log);

    snprintf(path, sizeof path, "%s/shot.png", dir);
    assert_int_equal(eb_file_read_all(path, &png, &png_len, NULL), EB_OK);
    px = png_decode((const unsigned char *)png, png_len, &w, &h);
    eb_free(png);
    assert_non_null(px);
    assert_int_equal(w, 1400);
    assert_int_equal(h, 3000);
    {
        /* the table: its best-value cells (#eef6ee) and dark text */
        size_t best = count_colour(px, w, h, 0xee, 0xf6, 0xee, 2);
        size_t text = 0;
        /* the plots: the first three series colours (#4477aa, #ee6677, #228833) */
        size_t blue = count_colour(px, w, h, 0x44, 0x77, 0xaa, 24);
        size_t red = count_colour(px, w, h, 0xee, 0x66, 0x77, 24);
        size_t green = count_colour(px, w, h, 0x22, 0x88, 0x33, 24);
        for (size_t i = 0; i < (size_t)w * h; i++)
            text += px[4 * i] < 80 && px[4 * i + 1] < 80 && px[4 * i + 2] < 80;
        printf("screenshot %dx%d: best cells %zu px, dark text %zu px, series blue %zu, red %zu, "
               "green %zu px\n",
               w, h, best, text, blue, red, green);
        assert_true(best > 500);
        assert_true(text > 5000);
        assert_true(blue > 300);
        assert_true(red > 300);
        assert_true(green > 300);
    }
    free(px);
}

static int setup(void **state)
{
    eb_error err;
    (void)state;
    snprintf(dir, sizeof dir, "%s/browser_%d", EB_TEST_BINARY_DIR, (int)getpid());
    return eb_mkdirs(dir, &err) == EB_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_in_chromium),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
