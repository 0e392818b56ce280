/* shift.c: the dataset-shift corruptions (eb_shift.h): rotation, Gaussian
 * noise, Gaussian blur, contrast and translation, five severities each,
 * as a const table. The parameters and rules are pinned in docs/metrics.md
 * ("Dataset shift"); changing any of them needs a new EB_CONV_SHIFT id. */
#include "harness/eb_shift.h"

#include <math.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_rng.h"

/* The per-image generators draw from EB_STREAM_SHIFT (methods/nn/eb_rng.h). */

#define BLUR_MAX_RADIUS 32

/* Corrupts one image (h, w, c) with the severity's parameter. rng is the
 * image's own generator; scratch holds h * w * c doubles (used by blur). */
typedef void (*corrupt_fn)(float *out, const float *in, int h, int w, int c, double param,
                           eb_rng *rng, double *scratch);

typedef struct corruption {
    const char *name;
    const char *unit;
    double param[EB_SHIFT_SEVERITIES]; /* severity 1..5 */
    int needs_scratch;
    corrupt_fn apply;
} corruption;

static float clamp01(double v)
{
    return (float)(v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v);
}

/* Value at (r, col, ch), 0 outside the image (zero fill). */
static double at(const float *in, int h, int w, int c, int r, int col, int ch)
{
    if (r < 0 || r >= h || col < 0 || col >= w)
        return 0.0;
    return in[((size_t)r * (size_t)w + (size_t)col) * (size_t)c + (size_t)ch];
}

/* cos and sin of an angle in degrees, exact at multiples of 90 so a
 * quarter turn moves pixel centres onto pixel centres with no blur. */
static void cos_sin_deg(double deg, double *co, double *si)
{
    static const double c4[4] = {1.0, 0.0, -1.0, 0.0}, s4[4] = {0.0, 1.0, 0.0, -1.0};
    double q = deg / 90.0;
    if (q == floor(q)) {
        int k = (int)fmod(q, 4.0);
        if (k < 0)
            k += 4;
        *co = c4[k];
        *si = s4[k];
    } else {
        *co = cos(deg * M_PI / 180.0);
        *si = sin(deg * M_PI / 180.0);
    }
}

/* Counterclockwise as displayed (row 0 at the top) about the image centre
 * ((w - 1) / 2, (h - 1) / 2). Output pixel (r, col) samples the input at
 * the inversely rotated point by bilinear interpolation over the
 * zero-padded image. With x to the right and y down, relative to the
 * centre: source x = X cos - Y sin, source y = X sin + Y cos. */
static void rotate(float *out, const float *in, int h, int w, int c, double deg, eb_rng *rng,
                   double *scratch)
{
    const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
    double co, si;
    (void)rng;
    (void)scratch;
    cos_sin_deg(deg, &co, &si);
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++) {
            double X = col - cx, Y = r - cy;
            double sx = X * co - Y * si + cx, sy = X * si + Y * co + cy;
            double fx0 = floor(sx), fy0 = floor(sy), fx = sx - fx0, fy = sy - fy0;
            int x0 = (int)fx0, y0 = (int)fy0;
            for (int ch = 0; ch < c; ch++) {
                double v = (1.0 - fy) * ((1.0 - fx) * at(in, h, w, c, y0, x0, ch) +
                                         fx * at(in, h, w, c, y0, x0 + 1, ch)) +
                           fy * ((1.0 - fx) * at(in, h, w, c, y0 + 1, x0, ch) +
                                 fx * at(in, h, w, c, y0 + 1, x0 + 1, ch));
                out[((size_t)r * (size_t)w + (size_t)col) * (size_t)c + (size_t)ch] = clamp01(v);
            }
        }
}

/* x + sigma * z, z standard normal from the image's generator (drawn in
 * NHWC order), clipped to [0, 1]. The same z at every severity, so the
 * change grows with sigma image by image. */
static void noise(float *out, const float *in, int h, int w, int c, double sigma, eb_rng *rng,
                  double *scratch)
{
    const size_t m = (size_t)h * (size_t)w * (size_t)c;
    (void)scratch;
    for (size_t k = 0; k < m; k++)
        out[k] = clamp01((double)in[k] + sigma * eb_rng_normal(rng));
}

/* Separable Gaussian blur: taps t = -R..R, R = ceil(3 sigma), weights
 * exp(-t^2 / (2 sigma^2)) normalised to sum 1; rows first (into the
 * double scratch), then columns. Zero padding: taps outside the image
 * read 0, so mass near the border leaks out and mass away from it is
 * kept. */
static void blur(float *out, const float *in, int h, int w, int c, double sigma, eb_rng *rng,
                 double *scratch)
{
    double k[2 * BLUR_MAX_RADIUS + 1], sum = 0.0;
    int R = (int)ceil(3.0 * sigma);
    (void)rng;
    if (R > BLUR_MAX_RADIUS)
        R = BLUR_MAX_RADIUS; /* the table's sigmas stay far below */
    for (int t = -R; t <= R; t++)
        sum += k[t + R] = exp(-(double)(t * t) / (2.0 * sigma * sigma));
    for (int t = 0; t <= 2 * R; t++)
        k[t] /= sum;
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++)
            for (int ch = 0; ch < c; ch++) {
                double v = 0.0;
                for (int t = -R; t <= R; t++)
                    v += k[t + R] * at(in, h, w, c, r, col + t, ch);
                scratch[((size_t)r * (size_t)w + (size_t)col) * (size_t)c + (size_t)ch] = v;
            }
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++)
            for (int ch = 0; ch < c; ch++) {
                double v = 0.0;
                for (int t = -R; t <= R; t++) {
                    int rr = r + t;
                    if (rr >= 0 && rr < h)
                        v += k[t + R] * scratch[((size_t)rr * (size_t)w + (size_t)col) * (size_t)c +
                                                (size_t)ch];
                }
                out[((size_t)r * (size_t)w + (size_t)col) * (size_t)c + (size_t)ch] = clamp01(v);
            }
}

/* mean + f (x - mean), the mean over the whole image (all channels). A
 * convex combination of x and the mean, so it stays in [0, 1]. */
static void contrast(float *out, const float *in, int h, int w, int c, double f, eb_rng *rng,
                     double *scratch)
{
    const size_t m = (size_t)h * (size_t)w * (size_t)c;
    double mean = 0.0;
    (void)rng;
    (void)scratch;
    for (size_t k = 0; k < m; k++)
        mean += in[k];
    mean /= (double)m;
    for (size_t k = 0; k < m; k++)
        out[k] = clamp01(mean + f * ((double)in[k] - mean));
}

/* Shift by s pixels in one of four directions (right, left, down, up),
 * drawn per image as eb_rng_below(rng, 4), the same at every severity;
 * vacated pixels are 0. */
static void translate(float *out, const float *in, int h, int w, int c, double s, eb_rng *rng,
                      double *scratch)
{
    static const int dir[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}}; /* (dx, dy) */
    const int d = (int)eb_rng_below(rng, 4), shift = (int)s;
    const int dx = dir[d][0] * shift, dy = dir[d][1] * shift;
    (void)scratch;
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++)
            for (int ch = 0; ch < c; ch++)
                out[((size_t)r * (size_t)w + (size_t)col) * (size_t)c + (size_t)ch] =
                    (float)at(in, h, w, c, r - dy, col - dx, ch);
}

static const corruption corruptions[] = {
    {/* .name = */ "rotation", /* .unit = */ "degrees counterclockwise",
     /* .param = */ {15, 30, 45, 60, 90}, /* .needs_scratch = */ 0, /* .apply = */ rotate},
    {/* .name = */ "gaussian-noise", /* .unit = */ "standard deviation",
     /* .param = */ {0.04, 0.08, 0.15, 0.25, 0.4}, /* .needs_scratch = */ 0, /* .apply = */ noise},
    {/* .name = */ "gaussian-blur", /* .unit = */ "sigma in pixels",
     /* .param = */ {0.5, 1.0, 1.5, 2.0, 2.5}, /* .needs_scratch = */ 1, /* .apply = */ blur},
    {/* .name = */ "contrast", /* .unit = */ "contrast factor",
     /* .param = */ {0.8, 0.6, 0.4, 0.25, 0.1}, /* .needs_scratch = */ 0, /* .apply = */ contrast},
    {/* .name = */ "translation", /* .unit = */ "pixels",
     /* .param = */ {2, 4, 6, 8, 10}, /* .needs_scratch = */ 0, /* .apply = */ translate},
};

#define N_CORRUPTIONS (sizeof corruptions / sizeof corruptions[0])

size_t eb_shift_count(void)
{
    return N_CORRUPTIONS;
}

const char *eb_shift_name(size_t i)
{
    return i < N_CORRUPTIONS ? corruptions[i].name : NULL;
}

/* The table entry for name and severity, or EB_ERR_ARG naming the fault. */
static eb_status lookup(const char *name, int severity, const corruption **out, eb_error *err)
{
    for (size_t i = 0; i < N_CORRUPTIONS; i++)
        if (name && strcmp(name, corruptions[i].name) == 0) {
            if (severity < 1 || severity > EB_SHIFT_SEVERITIES)
                return eb_error_set(err, EB_ERR_ARG, "corruption %s: severity %d is outside 1..%d",
                                    name, severity, EB_SHIFT_SEVERITIES);
            *out = &corruptions[i];
            return EB_OK;
        }
    return eb_error_set(err, EB_ERR_ARG,
                        "unknown corruption \"%s\" (known: rotation, gaussian-noise, "
                        "gaussian-blur, contrast, translation)",
                        name ? name : "(null)");
}

eb_status eb_shift_parameter(const char *corruption_name, int severity, double *value,
                             const char **unit, eb_error *err)
{
    const corruption *cor = NULL;
    eb_status st = lookup(corruption_name, severity, &cor, err);
    if (st)
        return st;
    *value = cor->param[severity - 1];
    if (unit)
        *unit = cor->unit;
    return EB_OK;
}

eb_status eb_shift_apply(const char *corruption_name, int severity, const float *x, size_t n, int h,
                         int w, int c, uint64_t seed, uint64_t first_example, float *out,
                         eb_error *err)
{
    const corruption *cor = NULL;
    double *scratch = NULL;
    size_t per_image, total;
    eb_status st = lookup(corruption_name, severity, &cor, err);

    if (st)
        return st;
    if (h < 1 || w < 1 || c < 1)
        return eb_error_set(err, EB_ERR_ARG, "corruption %s: image size %dx%dx%d must be positive",
                            cor->name, h, w, c);
    if (eb_size_mul((size_t)h * (size_t)w, (size_t)c, &per_image) ||
        eb_size_mul(per_image, n, &total) || total > SIZE_MAX / sizeof(double))
        return eb_error_set(err, EB_ERR_ARG, "corruption %s: %zu images of %dx%dx%d overflow",
                            cor->name, n, h, w, c);
    if (n == 0)
        return EB_OK;
    if (x == out)
        return eb_error_set(err, EB_ERR_ARG,
                            "corruption %s: the output must not be the input (out == x)",
                            cor->name);
    if (cor->needs_scratch) {
        scratch = eb_malloc(per_image * sizeof *scratch);
        if (!scratch)
            return eb_error_set(err, EB_ERR_NOMEM,
                                "corruption %s: out of memory for a %dx%dx%d scratch image",
                                cor->name, h, w, c);
    }
    for (size_t i = 0; i < n; i++) {
        eb_rng rng;
        /* (seed, example index) alone decide the image's random choices */
        eb_rng_seed(&rng, eb_rng_mix64(seed) ^ (first_example + i), EB_STREAM_SHIFT);
        cor->apply(out + i * per_image, x + i * per_image, h, w, c, cor->param[severity - 1], &rng,
                   scratch);
    }
    eb_free(scratch);
    return EB_OK;
}
