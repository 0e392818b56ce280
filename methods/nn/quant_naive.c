/* quant_naive.c: the reference versions of the reduced-precision kernels
 * of quant.c, written as the textbook loops (branches instead of bit
 * tricks, a triple loop for the GEMM, one output pixel at a time for
 * conv2d), and eb_qnet_forward_naive built from them. Never used on a hot
 * path. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/nn_kernels.h"
#include "methods/nn/nn_quant.h"
#include "methods/nn/quant_internal.h"

/* ---- f16 ------------------------------------------------------------- */

static uint16_t f2h_naive(float f)
{
    uint32_t x, sign, a, e, mant, q, rem, half;
    int shift;
    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000u;
    a = x & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, top payload bits kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* 65520 and up (the tie above 65504 goes to even: inf) */
        return (uint16_t)(sign | 0x7c00u);
    e = a >> 23;
    mant = a & 0x7fffffu;
    if (e >= 113) { /* normal f16: exponent e - 127 >= -14 */
        q = ((e - 112) << 10) | (mant >> 13);
        rem = mant & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
            q++; /* a carry into the exponent is the right answer */
        return (uint16_t)(sign | q);
    }
    /* subnormal f16: value = m * 2^(e - 150) with the implicit bit; in
     * units of 2^-24 that is m >> (126 - e), rounded to nearest even */
    if (e < 102) /* below 2^-25: rounds to zero (2^-25 itself is a tie to 0) */
        return (uint16_t)sign;
    mant |= 0x800000u;
    shift = 126 - (int)e; /* 14 .. 24 */
    q = mant >> shift;
    rem = mant & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

static float h2f_naive(uint16_t h)
{
    const int e = (h >> 10) & 0x1f;
    const int m = h & 0x3ff;
    const float s = (h & 0x8000u) ? -1.0f : 1.0f;
    if (e == 0x1f) {
        uint32_t bits = ((uint32_t)(h & 0x8000u) << 16) | 0x7f800000u | ((uint32_t)m << 13);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    if (e == 0)
        return s * ldexpf((float)m, -24);
    return s * ldexpf((float)(1024 + m), e - 25);
}

void eb_f32_to_f16_n_naive(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f2h_naive(src[i]);
}

void eb_f16_to_f32_n_naive(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = h2f_naive(src[i]);
}

/* ---- int8 -------------------------------------------------------------- */

float eb_quant_int8_run_naive(int8_t *q, const float *v, size_t len)
{
    float m = 0.0f, inv;
    for (size_t k = 0; k < len; k++) {
        if (!isfinite(v[k])) {
            memset(q, 0, len);
            return NAN;
        }
        if (fabsf(v[k]) > m)
            m = fabsf(v[k]);
    }
    if (m == 0.0f) {
        memset(q, 0, len);
        return 0.0f;
    }
    inv = 127.0f / m;
    for (size_t k = 0; k < len; k++) {
        float t = rintf(v[k] * inv); /* default mode: to nearest, ties to even */
        if (t > 127.0f)
            t = 127.0f;
        if (t < -127.0f)
            t = -127.0f;
        q[k] = (int8_t)t;
    }
    return m / 127.0f;
}

void eb_qkern_i8_gemm_naive(int32_t *acc, const int16_t *qx, const int8_t *qw, int n, int NI,
                            int NO)
{
    for (int r = 0; r < n; r++)
        for (int o = 0; o < NO; o++) {
            int32_t s = 0;
            for (int k = 0; k < NI; k++)
                s += (int32_t)qx[(size_t)r * NI + k] * (int32_t)qw[(size_t)o * NI + k];
            acc[(size_t)r * NO + o] = s;
        }
}

/* The static-scale quantization of nn_quant.h as the textbook loop:
 * round, then clamp. */
float eb_quant_int8_static_naive(int8_t *q, const float *v, size_t len, float s)
{
    const float inv = 1.0f / s;
    for (size_t k = 0; k < len; k++)
        if (!isfinite(v[k])) {
            memset(q, 0, len);
            return NAN;
        }
    for (size_t k = 0; k < len; k++) {
        float t = v[k] * inv;
        if (isnan(t)) /* 0 * inf, for a subnormal s */
            t = 0.0f;
        t = rintf(t);
        if (t > 127.0f)
            t = 127.0f;
        if (t < -127.0f)
            t = -127.0f;
        q[k] = (int8_t)t;
    }
    return s;
}

/* One output row: quantize x (NI), dynamically (xs = 0) or with the
 * static scale xs, then the dot with every row of W. */
static void dense_i8_row(float *out, int8_t *qrow, const float *x, float xs, const int8_t *qw,
                         const float *sw, const float *b, int NI, int NO)
{
    const float sx = xs > 0.0f ? eb_quant_int8_static_naive(qrow, x, (size_t)NI, xs)
                               : eb_quant_int8_run_naive(qrow, x, (size_t)NI);
    for (int o = 0; o < NO; o++) {
        int32_t s = 0;
        for (int k = 0; k < NI; k++)
            s += (int32_t)qrow[k] * (int32_t)qw[(size_t)o * NI + k];
        out[o] = (float)s * (sx * sw[o]) + b[o];
    }
}

/* Both int8 dense references; xs = 0: dynamic. */
static void dense_i8_naive(float *out, const float *x, float xs, const int8_t *qw,
                           const float *sw, const float *b, int n, int NI, int NO)
{
    int8_t *qrow = eb_malloc((size_t)NI);
    if (!qrow) { /* a reference kernel; the tests treat NaN as failure */
        for (size_t i = 0; i < (size_t)n * NO; i++)
            out[i] = NAN;
        return;
    }
    for (int r = 0; r < n; r++)
        dense_i8_row(out + (size_t)r * NO, qrow, x + (size_t)r * NI, xs, qw, sw, b, NI, NO);
    eb_free(qrow);
}

void eb_qkern_dense_i8_naive(float *out, const float *x, const int8_t *qw, const float *sw,
                             const float *b, int n, int NI, int NO)
{
    dense_i8_naive(out, x, 0.0f, qw, sw, b, n, NI, NO);
}

void eb_qkern_dense_i8_static_naive(float *out, const float *x, float xs, const int8_t *qw,
                                    const float *sw, const float *b, int n, int NI, int NO)
{
    dense_i8_naive(out, x, xs, qw, sw, b, n, NI, NO);
}

void eb_qkern_gemv_i8_static_naive(float *out, const float *x, float xs, const int8_t *qw,
                                   const float *sw, const float *b, int NI, int NO)
{
    dense_i8_naive(out, x, xs, qw, sw, b, 1, NI, NO);
}

void eb_qkern_dense_f16_naive(float *out, const float *x, const uint16_t *w, const float *b,
                              int n, int NI, int NO)
{
    for (int r = 0; r < n; r++)
        for (int o = 0; o < NO; o++) {
            double s = b[o];
            for (int k = 0; k < NI; k++)
                s += (double)x[(size_t)r * NI + k] * h2f_naive(w[(size_t)o * NI + k]);
            out[(size_t)r * NO + o] = (float)s;
        }
}

void eb_qkern_gemv_i8_naive(float *out, const float *x, const int8_t *qw, const float *sw,
                            const float *b, int NI, int NO)
{
    eb_qkern_dense_i8_naive(out, x, qw, sw, b, 1, NI, NO);
}

void eb_qkern_gemv_f16_naive(float *out, const float *x, const uint16_t *w, const float *b,
                             int NI, int NO)
{
    eb_qkern_dense_f16_naive(out, x, w, b, 1, NI, NO);
}

/* The patch at output pixel (oy, ox) of image img, ordered (ky, kx, c). */
static void gather_patch(float *patch, const float *inp, int img, int oy, int ox, int H, int W,
                         int C)
{
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
            for (int c = 0; c < C; c++)
                patch[(ky * 3 + kx) * C + c] =
                    inp[(((size_t)img * H + oy + ky) * W + ox + kx) * C + c];
}

static void conv2d_i8_naive(float *out, const float *inp, float xs, const int8_t *qw,
                            const float *sw, const float *b, int n, int H, int W, int C, int NO)
{
    const int OH = H - 2, OW = W - 2;
    float *patch = eb_malloc(9 * (size_t)C * sizeof *patch);
    int8_t *qrow = eb_malloc(9 * (size_t)C);
    if (!patch || !qrow) {
        for (size_t i = 0; i < (size_t)n * OH * OW * NO; i++)
            out[i] = NAN;
    } else {
        for (int img = 0; img < n; img++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    gather_patch(patch, inp, img, oy, ox, H, W, C);
                    dense_i8_row(out + (((size_t)img * OH + oy) * OW + ox) * NO, qrow, patch, xs,
                                 qw, sw, b, 9 * C, NO);
                }
    }
    eb_free(patch);
    eb_free(qrow);
}

void eb_qkern_conv2d_i8_naive(float *out, const float *inp, const int8_t *qw, const float *sw,
                              const float *b, int n, int H, int W, int C, int NO)
{
    conv2d_i8_naive(out, inp, 0.0f, qw, sw, b, n, H, W, C, NO);
}

void eb_qkern_conv2d_i8_static_naive(float *out, const float *inp, float xs, const int8_t *qw,
                                     const float *sw, const float *b, int n, int H, int W, int C,
                                     int NO)
{
    conv2d_i8_naive(out, inp, xs, qw, sw, b, n, H, W, C, NO);
}

void eb_qkern_conv2d_f16_naive(float *out, const float *inp, const uint16_t *w, const float *b,
                               int n, int H, int W, int C, int NO)
{
    const int OH = H - 2, OW = W - 2;
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++)
                for (int o = 0; o < NO; o++) {
                    double s = b[o];
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++)
                            for (int c = 0; c < C; c++)
                                s += (double)inp[(((size_t)img * H + oy + ky) * W + ox + kx) * C +
                                                 c] *
                                     h2f_naive(w[(((size_t)o * 3 + ky) * 3 + kx) * C + c]);
                    out[(((size_t)img * OH + oy) * OW + ox) * NO + o] = (float)s;
                }
}

/* ---- the naive forward ------------------------------------------------- */

eb_status eb_qnet_forward_w_naive(const eb_qnet *q, const eb_qweights *w, const float *x,
                                  size_t n, float *logits, eb_error *err)
{
    const eb_arch *a = &q->arch;
    float *buf[2], *cur;
    const float *in = x;
    int pp = 0;
    eb_status st = eb_qnet__check(q, w, n, err);

    if (st)
        return st;
    buf[0] = eb_malloc(n * a->max_act * sizeof(float));
    buf[1] = eb_malloc(n * a->max_act * sizeof(float));
    if (!buf[0] || !buf[1]) {
        eb_free(buf[0]);
        eb_free(buf[1]);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory in the naive quantized forward");
    }
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const float *b = w->bias + w->bias_at[i];
        const size_t off = L->param_offset;
        const int nn = (int)n;
        cur = i == a->n_layers - 1 ? logits : buf[pp];
        switch (L->kind) {
        case EB_LAYER_DENSE:
            if (q->storage == EB_QNET_F32)
                eb_kern_dense_forward_naive(cur, in, (const float *)w->values + off, b, nn,
                                            (int)L->in_size, L->units);
            else if (q->storage == EB_QNET_F16)
                eb_qkern_dense_f16_naive(cur, in, (const uint16_t *)w->values + off, b, nn,
                                         (int)L->in_size, L->units);
            else
                dense_i8_naive(cur, in, w->has_act ? w->act[i] : 0.0f,
                               (const int8_t *)w->values + off, w->scale + w->scale_at[i], b, nn,
                               (int)L->in_size, L->units);
            break;
        case EB_LAYER_CONV2D:
            if (q->storage == EB_QNET_F32)
                eb_kern_conv2d_forward_naive(cur, in, (const float *)w->values + off, b, nn,
                                             L->in_h, L->in_w, L->in_c, L->units);
            else if (q->storage == EB_QNET_F16)
                eb_qkern_conv2d_f16_naive(cur, in, (const uint16_t *)w->values + off, b, nn,
                                          L->in_h, L->in_w, L->in_c, L->units);
            else
                conv2d_i8_naive(cur, in, w->has_act ? w->act[i] : 0.0f,
                                (const int8_t *)w->values + off, w->scale + w->scale_at[i], b, nn,
                                L->in_h, L->in_w, L->in_c, L->units);
            break;
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_forward_naive(cur, in, nn, L->in_h, L->in_w, L->in_c);
            break;
        case EB_LAYER_RELU:
            for (size_t k = 0; k < n * L->out_size; k++)
                cur[k] = in[k] > 0.0f ? in[k] : 0.0f;
            break;
        case EB_LAYER_DROPOUT:
        case EB_LAYER_FLATTEN:
            continue;
        }
        in = cur;
        pp ^= 1;
    }
    eb_free(buf[0]);
    eb_free(buf[1]);
    return EB_OK;
}

eb_status eb_qnet_forward_naive(const eb_qnet *q, const float *x, size_t n, float *logits,
                                eb_error *err)
{
    if (!q->weights_set)
        return eb_error_set(err, EB_ERR_ARG, "the quantized network has no weights set");
    return eb_qnet_forward_w_naive(q, &q->w, x, n, logits, err);
}
