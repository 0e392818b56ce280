/* quantize.c: the quantize transform. It stores every value of the
 * parent's posterior (each member of a samples bundle, dropout's theta,
 * VI's mu and sigma, a student's theta) at a lower precision:
 *   f16:  IEEE binary16, rounded to nearest even;
 *   int8: symmetric int8 with one f32 scale per output channel of every
 *         weighted layer (W[o] is contiguous in theta, methods/nn/eb_nn.h)
 *         and one per layer's biases, scale = max|v| / 127.
 * The values are rounded by the bundle writer. eb_posterior_from_bundle
 * decodes them to f32; the CPU device (EB_POSTERIOR_QUANTIZED) runs them
 * in place on the int8/f16 kernels. A sparse parent becomes dense at the
 * new precision: the bundle has one storage kind per file.
 *
 * int8 activations: by default (activations=dynamic) the kernels quantize
 * each GEMM row with its own scale at run time. activations=calibrated
 * fixes one scale per member and weighted layer ahead of time instead
 * (bundle section ACTSCALES, format 1.2): the parent runs in f32 over
 * `calibration` training images drawn with the seed, and each layer
 * input's scale is the calib_percentile-th percentile of |x| over every
 * value that layer saw, divided by 127. That applies to samples (per
 * member) and distilled (the student), whose int8 values the kernels run;
 * gaussian and dropout int8 bundles are predicted from decoded f32
 * weights (their draws need f32), so they have no int8 activations to
 * calibrate and calibrated is refused for them. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_transform.h"
#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_quant.h"

/* The calibration draw's stream (the EB_STREAM_* values are methods/nn/
 * eb_rng.h's; distill.c keeps 0xC000 for its augmentation). */
#define STREAM_CALIB 0xD000u
/* Images per f32 forward during calibration. */
#define CALIB_BATCH 256
/* |x| histogram: one bin per float bit pattern >> HIST_SHIFT, so a bin
 * spans a relative width of 2^-(23 - HIST_SHIFT) = 2^-11 of its values;
 * finite non-negative floats lie below 0x7f800000, hence HIST_BINS. */
#define HIST_SHIFT 12
#define HIST_BINS (0x7f800000u >> HIST_SHIFT)

static const eb_setting_spec quantize_settings[] = {
    {"precision", EB_SET_CHOICE, "int8", 0, 0, "int8|f16",
     "int8: symmetric, one scale per output channel; f16: IEEE half precision"},
    {"activations", EB_SET_CHOICE, "dynamic", 0, 0, "dynamic|calibrated",
     "int8 activations: dynamic (one scale per GEMM row at run time) or calibrated (one static "
     "scale per member and layer, measured on training images)"},
    {"calibration", EB_SET_INT, "2048", 1, 1000000, NULL,
     "activations=calibrated: training images, drawn with the seed"},
    {"calib_percentile", EB_SET_FLOAT, "99.99", 50, 100, NULL,
     "activations=calibrated: the percentile of |x| a layer's scale covers (100: max |x|)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

/* What the observer of one member's calibration pass accumulates. */
typedef struct calib_ctx {
    const eb_arch *arch;
    int slot[EB_ARCH_MAX_LAYERS]; /* layer -> its index among the weighted layers */
    uint64_t *hist;               /* (n_act, HIST_BINS) counts of |x| by bin */
    float *max;                   /* (n_act) largest |x| seen */
    uint64_t *count;              /* (n_act) values seen */
    int bad_layer;                /* first layer with a non-finite input, or -1 */
} calib_ctx;

static void calib_observe(void *vctx, int layer, const float *in, size_t n, size_t len)
{
    calib_ctx *c = vctx;
    const int j = c->slot[layer];
    uint64_t *h = c->hist + (size_t)j * HIST_BINS;
    float m = c->max[j];
    for (size_t k = 0; k < n * len; k++) {
        const float a = fabsf(in[k]);
        uint32_t bits;
        if (!(a <= FLT_MAX)) {
            if (c->bad_layer < 0)
                c->bad_layer = layer;
            continue;
        }
        memcpy(&bits, &a, sizeof bits);
        h[bits >> HIST_SHIFT]++;
        m = a > m ? a : m;
    }
    c->max[j] = m;
    c->count[j] += (uint64_t)(n * len);
}

/* The p-th percentile (nearest rank: the smallest value with at least
 * ceil(p / 100 * count) values at or below it) of |x| for weighted layer
 * j, read from the histogram as the upper edge of the bin holding that
 * rank, capped at the exact maximum: exact for p = 100, otherwise at most
 * 2^-11 relatively above the true order statistic. */
static float calib_percentile(const calib_ctx *c, int j, double p)
{
    const uint64_t *h = c->hist + (size_t)j * HIST_BINS;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)c->count[j]), seen = 0;
    rank = rank < 1 ? 1 : rank > c->count[j] ? c->count[j] : rank;
    for (uint32_t b = 0; b < HIST_BINS; b++) {
        seen += h[b];
        if (seen >= rank) {
            const uint32_t top = (b << HIST_SHIFT) | ((1u << HIST_SHIFT) - 1u);
            float v;
            memcpy(&v, &top, sizeof v);
            return v < c->max[j] ? v : c->max[j];
        }
    }
    return c->max[j];
}

/* A scale from a layer's statistic: stat / 127; a layer whose statistic
 * is 0 (its inputs zero beyond the percentile) takes max |x| / 127, and
 * one that saw nothing but zeros 1 / 127 (any positive scale maps zeros
 * to zero). Counted in *fallbacks. */
static float act_scale(float stat, float max, int *fallbacks)
{
    if (stat > 0.0f)
        return stat / 127.0f;
    ++*fallbacks;
    return max > 0.0f ? max / 127.0f : 1.0f / 127.0f;
}

static int cmp_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The calibration images: n_cal distinct training images drawn with the
 * seed (a Fisher-Yates shuffle of the indices, the first n_cal kept, then
 * sorted so the copy reads the set in order), copied into *xs (n_cal,
 * in_size; eb_malloc_aligned, the caller frees). */
static eb_status calib_images(const eb_transform_request *req, size_t n_cal, size_t in_size,
                              float **xs, eb_error *err)
{
    const eb_dataset *d = req->train;
    uint32_t *idx;
    eb_rng r;
    *xs = NULL;
    if ((size_t)d->h * (size_t)d->w * (size_t)d->c != in_size)
        return eb_error_set(err, EB_ERR_ARG,
                            "quantize: the training images have %d x %d x %d values; the "
                            "architecture takes %zu inputs",
                            d->h, d->w, d->c, in_size);
    if (n_cal > d->n)
        return eb_error_set(err, EB_ERR_ARG,
                            "quantize: calibration=%zu images, but the training set '%s' has %zu",
                            n_cal, d->name, d->n);
    idx = eb_malloc(d->n * sizeof *idx);
    *xs = eb_malloc_aligned(64, n_cal * in_size * sizeof **xs);
    if (!idx || !*xs) {
        eb_free(idx);
        eb_free_aligned(*xs);
        *xs = NULL;
        return eb_error_set(err, EB_ERR_NOMEM, "quantize: out of memory for %zu calibration "
                            "images", n_cal);
    }
    for (size_t i = 0; i < d->n; i++)
        idx[i] = (uint32_t)i;
    eb_rng_seed(&r, req->seed, STREAM_CALIB);
    eb_rng_shuffle_u32(&r, idx, d->n);
    qsort(idx, n_cal, sizeof *idx, cmp_u32);
    for (size_t i = 0; i < n_cal; i++)
        memcpy(*xs + i * in_size, d->x + (size_t)idx[i] * in_size, in_size * sizeof **xs);
    eb_free(idx);
    return EB_OK;
}

/* Fills out->act_scales (rows, n_act) from f32 passes of every row of
 * the parent over the calibration images. */
static eb_status calibrate(const eb_transform_request *req, eb_trained *out, eb_error *err)
{
    const eb_posterior *p = req->posterior;
    const eb_arch *a = &p->arch;
    const size_t n_act = eb_quant_act_layers(a);
    const size_t n_cal = (size_t)eb_settings_int(req->settings, "calibration");
    const double pct = eb_settings_float(req->settings, "calib_percentile");
    const uint32_t rows = out->rows;
    calib_ctx c;
    eb_qnet *net = NULL;
    eb_qweights *w = NULL;
    float *xs = NULL, *logits = NULL;
    int fallbacks = 0, j = 0;
    char buf[32];
    eb_status st;

    if (p->repr != EB_REPR_SAMPLES && p->repr != EB_REPR_DISTILLED)
        return eb_error_set(err, EB_ERR_ARG,
                            "quantize: activations=calibrated applies to samples and distilled "
                            "posteriors, whose int8 values run on the int8 kernels; a %s "
                            "posterior is predicted from decoded f32 weights (use "
                            "activations=dynamic)", eb_repr_name(p->repr));
    if (!req->train || req->train->n == 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "quantize: activations=calibrated runs the parent over training "
                            "images; none were given");
    if (n_act == 0)
        return eb_error_set(err, EB_ERR_ARG, "quantize: the architecture has no weighted layer");
    memset(&c, 0, sizeof c);
    c.arch = a;
    for (int i = 0; i < a->n_layers; i++)
        c.slot[i] = a->layers[i].n_weights ? j++ : -1;
    if ((st = calib_images(req, n_cal, a->in_size, &xs, err)))
        return st;
    c.hist = eb_malloc(n_act * HIST_BINS * sizeof *c.hist);
    c.max = eb_malloc(n_act * sizeof *c.max);
    c.count = eb_malloc(n_act * sizeof *c.count);
    logits = eb_malloc((size_t)CALIB_BATCH * (size_t)a->n_classes * sizeof *logits);
    out->act_scales = eb_malloc((size_t)rows * n_act * sizeof *out->act_scales);
    if (!c.hist || !c.max || !c.count || !logits || !out->act_scales) {
        st = eb_error_set(err, EB_ERR_NOMEM, "quantize: out of memory for the calibration "
                          "histograms (%zu layers)", n_act);
        goto done;
    }
    out->n_act = n_act;
    if ((st = eb_qnet_new_workspace(a, EB_QNET_F32, CALIB_BATCH, &net, err)))
        goto done;
    for (uint32_t r = 0; r < rows; r++) {
        memset(c.hist, 0, n_act * HIST_BINS * sizeof *c.hist);
        memset(c.max, 0, n_act * sizeof *c.max);
        memset(c.count, 0, n_act * sizeof *c.count);
        c.bad_layer = -1;
        if ((st = eb_qweights_new(a, EB_QNET_F32, p->params + (size_t)r * p->k, NULL, NULL, 0,
                                  &w, err)))
            goto done;
        for (size_t b = 0; b < n_cal && !st; b += CALIB_BATCH) {
            const size_t nb = n_cal - b < CALIB_BATCH ? n_cal - b : CALIB_BATCH;
            st = eb_qnet_forward_observe(net, w, xs + b * a->in_size, nb, logits, calib_observe,
                                         &c, err);
        }
        eb_qweights_free(w);
        w = NULL;
        if (st)
            goto done;
        if (c.bad_layer >= 0) {
            st = eb_error_set(err, EB_ERR_NUMERIC,
                              "quantize: member %u: the input of layer %d is not finite on a "
                              "calibration image", r, c.bad_layer + 1);
            goto done;
        }
        for (size_t k = 0; k < n_act; k++)
            out->act_scales[(size_t)r * n_act + k] =
                act_scale(calib_percentile(&c, (int)k, pct), c.max[k], &fallbacks);
    }
    snprintf(buf, sizeof buf, "%d", fallbacks);
    st = eb_trained_meta(out, "quantize.calib_fallbacks", buf, err);
done:
    eb_qnet_free(net);
    eb_free(c.hist);
    eb_free(c.max);
    eb_free(c.count);
    eb_free(logits);
    eb_free_aligned(xs);
    return st;
}

/* Training images are read only to calibrate activations. */
static int quantize_needs_train(const eb_settings *s)
{
    return !strcmp(eb_settings_str(s, "activations"), "calibrated");
}

static eb_status quantize_apply(const eb_transform_request *req, eb_trained *out, eb_error *err)
{
    const eb_posterior *p = req->posterior;
    const char *precision = eb_settings_str(req->settings, "precision");
    const int calibrated = !strcmp(eb_settings_str(req->settings, "activations"), "calibrated");
    const uint32_t rows = p->repr == EB_REPR_SAMPLES ? p->members
                          : p->repr == EB_REPR_GAUSSIAN ? 2
                                                        : 1;
    eb_status st;
    if (calibrated && strcmp(precision, "int8"))
        return eb_error_set(err, EB_ERR_ARG,
                            "quantize: activations=calibrated needs precision=int8 (got "
                            "precision=%s, whose kernels keep activations in f32)",
                            precision);
    st = eb_trained_alloc(out, &p->arch, p->repr, p->members, rows, err);
    if (st)
        return st;
    out->head = (uint32_t)p->head;
    if (p->repr == EB_REPR_GAUSSIAN) {
        memcpy(out->params, p->params, p->k * sizeof(float));
        memcpy(out->params + p->k, p->sigma, p->k * sizeof(float));
    } else {
        memcpy(out->params, p->params, (size_t)rows * p->k * sizeof(float));
    }
    if (!strcmp(precision, "f16")) {
        out->storage = EB_STORE_F16;
        return eb_trained_meta(out, "quantize.bits", "16", err);
    }
    out->storage = EB_STORE_INT8;
    st = eb_quant_groups(&p->arch, &out->groups, &out->n_groups, err);
    if (!st)
        st = eb_trained_meta(out, "quantize.bits", "8", err);
    if (!st && calibrated)
        st = eb_trained_meta(out, "quantize.activations", "calibrated", err);
    if (!st && calibrated)
        st = calibrate(req, out, err);
    return st;
}

const eb_transform eb_transform_quantize = {
    "quantize",
    "store every value at lower precision: f16, or int8 with per-output-channel scales (and "
    "optionally calibrated activation scales)",
    quantize_settings,
    "precision",
    quantize_apply,
    /* .needs_train = */ 0,
    /* .needs_train_for = */ quantize_needs_train,
};
