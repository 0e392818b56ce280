/* noise.c: Gaussian noise for the samplers, VI and gaussian prediction:
 * a ziggurat generator over eb_rng and noise keyed by (seed, stream,
 * step, block).
 *
 * Why not eb_rng_normal: SGLD draws K normals per step (269,322 for the
 * mlp), and Box-Muller's log, sqrt and sin/cos cost about 5 ms for them,
 * as much as the step's gradient; the ziggurat needs one 64-bit draw, a
 * table lookup and a multiply for ~99% of its outputs. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "methods/eb_samplers.h"

/* Marsaglia & Tsang (2000), "The ziggurat method for generating random
 * variables", J. Stat. Software 5(8): 128 layers of equal area v under
 * the normal density's right half, the base layer's edge at r. */
#define ZIG_N 128
#define ZIG_R 3.442619855899
#define ZIG_V 9.91256303526217e-3

static uint32_t kn[ZIG_N]; /* acceptance thresholds on |value| (31-bit scale) */
static double wn[ZIG_N];   /* layer widths per unit of the 31-bit scale */
static double fn[ZIG_N];   /* density at each layer's edge */
static pthread_once_t zig_once = PTHREAD_ONCE_INIT;

/* The published table recurrence (their zigset), in double. */
static void zig_setup(void)
{
    const double m1 = 2147483648.0; /* 2^31 */
    double dn = ZIG_R, tn = dn;
    const double q = ZIG_V / exp(-0.5 * dn * dn);
    kn[0] = (uint32_t)((dn / q) * m1);
    kn[1] = 0;
    wn[0] = q / m1;
    wn[ZIG_N - 1] = dn / m1;
    fn[0] = 1.0;
    fn[ZIG_N - 1] = exp(-0.5 * dn * dn);
    for (int i = ZIG_N - 2; i >= 1; i--) {
        dn = sqrt(-2.0 * log(ZIG_V / dn + exp(-0.5 * dn * dn)));
        kn[i + 1] = (uint32_t)((dn / tn) * m1);
        tn = dn;
        fn[i] = exp(-0.5 * dn * dn);
        wn[i] = dn / m1;
    }
}

/* The slow path (about 1% of draws): the tail beyond r, or the wedge
 * between a layer's rectangle and the density. */
static double zig_fix(eb_rng *r, int32_t hz, uint32_t iz)
{
    for (;;) {
        double x = (double)hz * wn[iz];
        if (iz == 0) {
            /* the tail: Marsaglia's (1964) exponential rejection */
            double xt, y;
            do {
                xt = -log(1.0 - eb_rng_uniform(r)) / ZIG_R;
                y = -log(1.0 - eb_rng_uniform(r));
            } while (y + y < xt * xt);
            return hz > 0 ? ZIG_R + xt : -ZIG_R - xt;
        }
        if (fn[iz] + eb_rng_uniform(r) * (fn[iz - 1] - fn[iz]) < exp(-0.5 * x * x))
            return x;
        {
            const uint64_t u = eb_rng_next(r);
            hz = (int32_t)(uint32_t)(u >> 32);
            iz = (uint32_t)(u & (ZIG_N - 1));
            if ((uint32_t)(hz < 0 ? -(int64_t)hz : hz) < kn[iz])
                return (double)hz * wn[iz];
        }
    }
}

void eb_normal_fill(float *out, size_t n, eb_rng *r)
{
    pthread_once(&zig_once, zig_setup);
    for (size_t i = 0; i < n; i++) {
        /* value from the high 32 bits, layer from the low 7: independent
         * bits (the original used the same ones, a known flaw) */
        const uint64_t u = eb_rng_next(r);
        const int32_t hz = (int32_t)(uint32_t)(u >> 32);
        const uint32_t iz = (uint32_t)(u & (ZIG_N - 1));
        const uint32_t ahz = (uint32_t)(hz < 0 ? -(int64_t)hz : hz);
        out[i] = ahz < kn[iz] ? (float)((double)hz * wn[iz]) : (float)zig_fix(r, hz, iz);
    }
}

void eb_noise_keyed(float *out, size_t lo, size_t hi, uint64_t seed, uint64_t stream,
                    uint64_t step)
{
    const uint64_t key = eb_rng_mix64(seed ^ eb_rng_mix64(step + 0x632be59bd9b4e019ULL));
    for (size_t b = lo / EB_NOISE_BLOCK; b * EB_NOISE_BLOCK < hi; b++) {
        const size_t first = b * EB_NOISE_BLOCK, end = first + EB_NOISE_BLOCK;
        const size_t from = first > lo ? first : lo, to = end < hi ? end : hi;
        eb_rng r;
        eb_rng_seed(&r, eb_rng_mix64(key + b), stream);
        if (from == first) {
            eb_normal_fill(out + (first - lo), to - first, &r);
        } else {
            /* a slice starting inside the block: draw the block's head
             * and keep its tail, so the values match an aligned slice */
            float tmp[EB_NOISE_BLOCK];
            eb_normal_fill(tmp, to - first, &r);
            for (size_t i = from; i < to; i++)
                out[i - lo] = tmp[i - first];
        }
    }
}
