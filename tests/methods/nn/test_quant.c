/* test_quant.c: the reduced-precision kernels of nn_quant.h against their
 * naive references and against exact answers: f16 conversion over every
 * f16 pattern and against the compiler's _Float16; int8 quantization and
 * the int8 GEMM bit for bit against the naive loops; the dequantized
 * results against f32 within derived bounds; eb_qnet against the f32
 * forward of net.c and against its naive forward, for mlp and cnn. Every
 * numerical check prints its largest error beside its tolerance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/eb_test.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_kernels.h"
#include "methods/nn/nn_quant.h"

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int h_is_nan(uint16_t h)
{
    return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

/* ---- f16 ------------------------------------------------------------- */

/* Every f16 pattern: the scalar, fast bulk and naive bulk decoders agree
 * bit for bit; f16 -> f32 -> f16 is the identity except that a
 * signalling NaN comes back quiet (and still NaN, same sign). */
static void test_f16_exhaustive(void **state)
{
    uint16_t *h = xmalloc(65536 * sizeof *h), *back = xmalloc(65536 * sizeof *back);
    uint16_t *back_naive = xmalloc(65536 * sizeof *back_naive);
    float *f_fast = xmalloc(65536 * sizeof(float)), *f_naive = xmalloc(65536 * sizeof(float));
    size_t nans = 0;
    (void)state;
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    eb_f16_to_f32_n(f_fast, h, 65536);
    eb_f16_to_f32_n_naive(f_naive, h, 65536);
    eb_f32_to_f16_n(back, f_fast, 65536);
    eb_f32_to_f16_n_naive(back_naive, f_fast, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        const float s = eb_f16_to_f32(h[i]);
        assert_int_equal(fbits(s), fbits(f_fast[i]));
        assert_int_equal(fbits(s), fbits(f_naive[i]));
        assert_int_equal(back[i], back_naive[i]);
        assert_int_equal(back[i], eb_f32_to_f16(s));
        if (h_is_nan(h[i])) {
            nans++;
            assert_true(isnan(s));
            assert_true(h_is_nan(back[i]));
            assert_int_equal(back[i] & 0x8000u, h[i] & 0x8000u);
            assert_int_equal(back[i], h[i] | 0x200u); /* quieted, payload kept */
        } else {
            assert_int_equal(back[i], h[i]);
        }
    }
    /* a few values written out */
    assert_true(eb_f16_to_f32(0x3c00) == 1.0f);
    assert_true(eb_f16_to_f32(0xc000) == -2.0f);
    assert_true(eb_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(eb_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(eb_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(eb_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(eb_f16_to_f32(0xfc00)) && eb_f16_to_f32(0xfc00) < 0);
    assert_int_equal(fbits(eb_f16_to_f32(0x8000)), 0x80000000u);
    printf("  65536 patterns, %zu NaN: round trip exact\n", nans);
    free(h); free(back); free(back_naive); free(f_fast); free(f_naive);
}

static void check_encode(float f, uint16_t want)
{
    uint16_t bulk, naive;
    eb_f32_to_f16_n(&bulk, &f, 1);
    eb_f32_to_f16_n_naive(&naive, &f, 1);
    if (eb_f32_to_f16(f) != want || bulk != want || naive != want)
        printf("  %a (0x%08x): want 0x%04x, scalar 0x%04x bulk 0x%04x naive 0x%04x\n",
               (double)f, (unsigned)fbits(f), want, eb_f32_to_f16(f), bulk, naive);
    assert_int_equal(eb_f32_to_f16(f), want);
    assert_int_equal(bulk, want);
    assert_int_equal(naive, want);
}

static void test_f16_rounding_cases(void **state)
{
    (void)state;
    check_encode(0.0f, 0x0000);
    check_encode(-0.0f, 0x8000);
    check_encode(1.0f, 0x3c00);
    check_encode(65504.0f, 0x7bff);
    check_encode(65519.996f, 0x7bff);  /* just below the tie: down */
    check_encode(65520.0f, 0x7c00);    /* the tie above the largest, odd: to inf */
    check_encode(-65520.0f, 0xfc00);
    check_encode(1e10f, 0x7c00);
    check_encode(INFINITY, 0x7c00);
    check_encode(-INFINITY, 0xfc00);
    check_encode(ldexpf(1.0f, -24), 0x0001);             /* smallest subnormal */
    check_encode(ldexpf(1.0f, -25), 0x0000);             /* tie with 0: even */
    check_encode(nextafterf(ldexpf(1.0f, -25), 1.0f), 0x0001);
    check_encode(ldexpf(3.0f, -25), 0x0002);             /* 1.5 ulps: to even 2 */
    check_encode(ldexpf(5.0f, -25), 0x0002);             /* 2.5 ulps: to even 2 */
    check_encode(ldexpf(2047.0f, -25), 0x0400);          /* 1023.5: carries to normal */
    check_encode(ldexpf(1.0f, -149), 0x0000);            /* f32 subnormal */
    check_encode(1.0f + ldexpf(1.0f, -11), 0x3c00);      /* tie: to even */
    check_encode(1.0f + ldexpf(3.0f, -11), 0x3c02);      /* tie: to even (up) */
    check_encode(nextafterf(1.0f + ldexpf(1.0f, -11), 2.0f), 0x3c01);
    check_encode(2047.25f / 1024.0f, 0x3fff);            /* below the tie under 2 */
    check_encode(2047.5f / 1024.0f, 0x4000);             /* that tie, 0x3fff odd: carry to 2 */
    assert_true(h_is_nan(eb_f32_to_f16(NAN)));
    assert_true(h_is_nan(eb_f32_to_f16(-NAN)));
    assert_true(h_is_nan(eb_f32_to_f16(bitsf(0x7f800001u)))); /* payload only in low bits */
    assert_int_equal(eb_f32_to_f16(bitsf(0xffc00000u)), 0xfe00);
}

/* Many f32 values against the compiler's _Float16 conversion (and the
 * naive encoder): random bit patterns over every exponent, every tie
 * between neighbouring f16 values and the floats either side of it. */
static void test_f16_vs_compiler(void **state)
{
    const size_t n_rand = 1u << 20;
    const size_t n = n_rand + 3 * 65536;
    float *f = xmalloc(n * sizeof *f);
    uint16_t *fast = xmalloc(n * sizeof *fast), *naive = xmalloc(n * sizeof *naive);
    size_t m = 0, ties = 0;
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 7, 0);
    for (size_t i = 0; i < n_rand; i++)
        f[m++] = bitsf((uint32_t)eb_rng_next(&r));
    for (uint32_t h = 0; h < 0x7c00; h++) { /* ties above each finite f16 of either sign */
        const float lo = eb_f16_to_f32((uint16_t)h);
        const float mid = h == 0x7bff ? 65520.0f : 0.5f * (lo + eb_f16_to_f32((uint16_t)(h + 1)));
        for (int s = 0; s < 2; s++) {
            const float v = s ? -mid : mid;
            f[m++] = v;
            f[m++] = nextafterf(v, 0.0f);
            f[m++] = nextafterf(v, s ? -INFINITY : INFINITY);
            ties++;
            if (m + 3 > n)
                break;
        }
        if (m + 6 > n)
            break;
    }
    eb_f32_to_f16_n(fast, f, m);
    eb_f32_to_f16_n_naive(naive, f, m);
    for (size_t i = 0; i < m; i++) {
        assert_int_equal(fast[i], naive[i]);
        assert_int_equal(fast[i], eb_f32_to_f16(f[i]));
    }
#if defined(__FLT16_MANT_DIG__)
    {
        size_t checked = 0;
        for (size_t i = 0; i < m; i++) {
            const _Float16 c = (_Float16)f[i];
            uint16_t cb;
            memcpy(&cb, &c, sizeof cb);
            if (isnan(f[i])) {
                assert_true(h_is_nan(fast[i]) && h_is_nan(cb));
                continue;
            }
            if (cb != fast[i])
                printf("  %a: compiler 0x%04x, ours 0x%04x\n", (double)f[i], cb, fast[i]);
            assert_int_equal(cb, fast[i]);
            /* and the decoder against the compiler's widening */
            assert_int_equal(fbits((float)c), fbits(eb_f16_to_f32(fast[i])));
            checked++;
        }
        printf("  %zu values (%zu ties) agree with the compiler's _Float16\n", checked, ties);
    }
#else
    printf("  no _Float16 in this compiler: checked %zu values against the naive encoder only\n",
           m);
#endif
    free(f); free(fast); free(naive);
}

/* ---- int8 quantization ----------------------------------------------- */

static void check_run(const float *v, size_t len)
{
    int8_t *q = xmalloc(len), *qn = xmalloc(len);
    int16_t *q16 = xmalloc(len * sizeof *q16);
    const float s = eb_quant_int8_run(q, v, len);
    const float sn = eb_quant_int8_run_naive(qn, v, len);
    const float s16 = eb_quant_int8_run_i16(q16, v, len);
    float m = 0.0f;
    int qmax = 0;
    assert_int_equal(fbits(s), fbits(sn));
    assert_int_equal(fbits(s), fbits(s16));
    assert_memory_equal(q, qn, len);
    for (size_t k = 0; k < len; k++) {
        assert_int_equal(q16[k], q[k]);
        m = fabsf(v[k]) > m ? fabsf(v[k]) : m;
        qmax = abs(q[k]) > qmax ? abs(q[k]) : qmax;
        assert_true(q[k] >= -127 && q[k] <= 127);
        /* |v - q s| <= s/2, with room for the rounding of v * (127/m) */
        assert_true(fabsf(v[k] - (float)q[k] * s) <= s * 0.50002f + 1e-7f * fabsf(v[k]));
    }
    assert_true(s == m / 127.0f);
    if (m > 0.0f)
        assert_int_equal(qmax, 127);
    free(q); free(qn); free(q16);
}

static void test_int8_quant(void **state)
{
    static const size_t lens[] = {1, 2, 7, 31, 64, 100, 784, 1001};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 11, 0);
    for (size_t t = 0; t < 200; t++) {
        const size_t len = lens[t % (sizeof lens / sizeof lens[0])];
        float *v = xmalloc(len * sizeof *v);
        const double scale = ldexp(1.0, (int)eb_rng_below(&r, 40) - 20);
        for (size_t k = 0; k < len; k++)
            v[k] = (float)(eb_rng_normal(&r) * scale);
        check_run(v, len);
        free(v);
    }
    {
        /* m = 127 gives 127/m = 1: k + 0.5 is an exact tie, rounded to even */
        float v[8] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f};
        const int8_t want[8] = {127, 0, 2, 2, 0, -2, -2, 126};
        int8_t q[8];
        assert_true(eb_quant_int8_run(q, v, 8) == 1.0f);
        assert_memory_equal(q, want, 8);
        check_run(v, 8);
    }
    {
        float z[5] = {0, 0, -0.0f, 0, 0};
        float bad[4] = {1.0f, NAN, 2.0f, 3.0f};
        float inf[3] = {1.0f, -INFINITY, 0.5f};
        int8_t q[5] = {1, 1, 1, 1, 1}, qn[5];
        int16_t q16[4];
        assert_true(eb_quant_int8_run(q, z, 5) == 0.0f);
        for (int k = 0; k < 5; k++)
            assert_int_equal(q[k], 0);
        assert_true(isnan(eb_quant_int8_run(q, bad, 4)));
        assert_true(isnan(eb_quant_int8_run_naive(qn, bad, 4)));
        assert_true(isnan(eb_quant_int8_run_i16(q16, inf, 3)));
        assert_true(isnan(eb_quant_int8_run(q, inf, 3)));
        for (int k = 0; k < 3; k++)
            assert_int_equal(q[k], 0);
    }
}

static void test_quant_groups(void **state)
{
    static const char *const names[] = {"mlp", "cnn", "mlp-small"};
    (void)state;
    for (size_t a = 0; a < 3; a++) {
        eb_arch arch;
        eb_error err = {0};
        uint64_t *groups;
        size_t n_groups, g = 0, want = 0;
        float *theta, *back, *scales;
        int8_t *q;
        eb_rng r;
        double worst = 0.0;
        assert_int_equal(eb_arch_named(names[a], &arch, &err), EB_OK);
        assert_int_equal(eb_quant_groups(&arch, &groups, &n_groups, &err), EB_OK);
        for (int i = 0; i < arch.n_layers; i++) {
            const eb_layer *L = &arch.layers[i];
            if (!L->n_weights)
                continue;
            want += (size_t)L->units + 1;
            for (int o = 0; o < L->units; o++) {
                assert_int_equal(groups[g],
                                 L->param_offset + (size_t)o * (L->n_weights / L->units));
                assert_int_equal(groups[g + 1] - groups[g], L->n_weights / (size_t)L->units);
                g++;
            }
            assert_int_equal(groups[g], L->param_offset + L->n_weights);
            assert_int_equal(groups[g + 1] - groups[g], L->n_bias);
            g++;
        }
        assert_int_equal(n_groups, want);
        assert_int_equal(groups[0], 0);
        assert_int_equal(groups[n_groups], arch.n_params);
        /* quantize, dequantize: every value within half its run's scale */
        theta = xmalloc(arch.n_params * sizeof *theta);
        back = xmalloc(arch.n_params * sizeof *back);
        scales = xmalloc(n_groups * sizeof *scales);
        q = xmalloc(arch.n_params);
        eb_rng_seed(&r, 12, a);
        for (size_t k = 0; k < arch.n_params; k++)
            theta[k] = (float)eb_rng_normal(&r) * 0.1f;
        eb_quant_int8_groups(q, scales, theta, groups, n_groups);
        eb_dequant_int8_groups(back, q, scales, groups, n_groups);
        for (size_t j = 0; j < n_groups; j++)
            for (uint64_t k = groups[j]; k < groups[j + 1]; k++) {
                const double e = fabs((double)back[k] - theta[k]) / scales[j];
                worst = e > worst ? e : worst;
            }
        printf("  %-9s K=%zu groups=%zu: max |v - q s| / s = %.5f (bound 0.50002)\n", names[a],
               arch.n_params, n_groups, worst);
        assert_true(worst <= 0.50002);
        free(theta); free(back); free(scales); free(q);
        eb_free(groups);
    }
}

/* ---- GEMM kernels ----------------------------------------------------- */

static const int gemm_shapes[][3] = {/* n, NI, NO */
                                     {1, 1, 1},    {1, 9, 32},   {2, 3, 5},    {3, 7, 4},
                                     {5, 31, 67},  {17, 33, 10}, {2, 288, 64}, {1, 784, 256},
                                     {64, 784, 256}, {7, 1600, 129}};

static void test_i8_gemm_exact(void **state)
{
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 21, 0);
    for (size_t s = 0; s < sizeof gemm_shapes / sizeof gemm_shapes[0]; s++) {
        const int n = gemm_shapes[s][0], NI = gemm_shapes[s][1], NO = gemm_shapes[s][2];
        int16_t *qx = xmalloc((size_t)n * NI * sizeof *qx);
        int8_t *qw = xmalloc((size_t)NO * NI);
        int32_t *a1 = xmalloc((size_t)n * NO * sizeof *a1),
                *a2 = xmalloc((size_t)n * NO * sizeof *a2);
        for (size_t k = 0; k < (size_t)n * NI; k++)
            qx[k] = (int16_t)((int)eb_rng_below(&r, 255) - 127);
        for (size_t k = 0; k < (size_t)NO * NI; k++)
            qw[k] = (int8_t)((int)eb_rng_below(&r, 255) - 127);
        eb_qkern_i8_gemm(a1, qx, qw, n, NI, NO);
        eb_qkern_i8_gemm_naive(a2, qx, qw, n, NI, NO);
        assert_memory_equal(a1, a2, (size_t)n * NO * sizeof *a1);
        free(qx); free(qw); free(a1); free(a2);
    }
    {
        /* the extremes at the largest inner dimension: sums of +-16129 up
         * to +-(2^31 - 1) without overflow, checked in 64 bits */
        const int n = 3, NI = EB_QUANT_I8_MAX_NI, NO = 5;
        int16_t *qx = xmalloc((size_t)n * NI * sizeof *qx);
        int8_t *qw = xmalloc((size_t)NO * NI);
        int32_t acc[15], accn[15];
        for (int k = 0; k < NI; k++) {
            qx[k] = 127; qx[NI + k] = -127; qx[2 * NI + k] = (k & 1) ? 127 : -127;
            for (int o = 0; o < NO; o++)
                qw[(size_t)o * NI + k] = (int8_t)(o == 0 ? 127 : o == 1 ? -127 : (k % 3) - 1);
        }
        eb_qkern_i8_gemm(acc, qx, qw, n, NI, NO);
        eb_qkern_i8_gemm_naive(accn, qx, qw, n, NI, NO);
        assert_memory_equal(acc, accn, sizeof acc);
        assert_int_equal((int64_t)acc[0], (int64_t)NI * 16129);
        assert_int_equal((int64_t)acc[1], -(int64_t)NI * 16129);
        assert_int_equal((int64_t)acc[5], -(int64_t)NI * 16129);
        assert_true((int64_t)NI * 16129 < INT32_MAX);
        assert_true((int64_t)(NI + 1) * 16129 > INT32_MAX);
        free(qx); free(qw);
    }
    printf("  %zu shapes + the extremes at NI = %d: int32 sums identical\n",
           sizeof gemm_shapes / sizeof gemm_shapes[0], EB_QUANT_I8_MAX_NI);
}

/* int8 dense: fast == naive bit for bit, and against f32 (double sums):
 * with x~, w~ the dequantized values, y_q = sum x~ w~ + b exactly up to
 * float rounding, so
 *   |y_q - y(x, w~)| <= (s_x / 2) ||w~_o||_1              (activations)
 *   |y_q - y(x, w)|  <= (s_x / 2) ||w~_o||_1 + (s_w / 2) ||x||_1
 * plus rounding (the int32 sum converted to float, two products, and the
 * reference's own sum): (NI + 8) 2^-23 sum |x~| |w~|. */
static void test_dense_i8(void **state)
{
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 22, 0);
    for (size_t s = 0; s < sizeof gemm_shapes / sizeof gemm_shapes[0]; s++) {
        const int n = gemm_shapes[s][0], NI = gemm_shapes[s][1], NO = gemm_shapes[s][2];
        float *x = xmalloc((size_t)n * NI * sizeof *x), *w = xmalloc((size_t)NO * NI * sizeof *w);
        float *wd = xmalloc((size_t)NO * NI * sizeof *wd), *b = xmalloc((size_t)NO * sizeof *b);
        float *sw = xmalloc((size_t)NO * sizeof *sw), *sx = xmalloc((size_t)n * sizeof *sx);
        float *y1 = xmalloc((size_t)n * NO * sizeof *y1),
              *y2 = xmalloc((size_t)n * NO * sizeof *y2);
        float *yd = xmalloc((size_t)n * NO * sizeof *yd),
              *yw = xmalloc((size_t)n * NO * sizeof *yw);
        int16_t *qx = xmalloc((size_t)n * NI * sizeof *qx);
        int8_t *qw = xmalloc((size_t)NO * NI);
        double worst_d = 0.0, worst_w = 0.0, typ = 0.0;
        for (size_t k = 0; k < (size_t)n * NI; k++)
            x[k] = (float)eb_rng_normal(&r);
        for (size_t k = 0; k < (size_t)NO * NI; k++)
            w[k] = (float)(eb_rng_normal(&r) / sqrt(NI));
        for (int o = 0; o < NO; o++) {
            b[o] = (float)eb_rng_normal(&r);
            sw[o] = eb_quant_int8_run(qw + (size_t)o * NI, w + (size_t)o * NI, (size_t)NI);
            for (int k = 0; k < NI; k++)
                wd[(size_t)o * NI + k] = (float)qw[(size_t)o * NI + k] * sw[o];
        }
        eb_qkern_dense_i8(y1, qx, sx, x, qw, sw, b, n, NI, NO);
        eb_qkern_dense_i8_naive(y2, x, qw, sw, b, n, NI, NO);
        assert_memory_equal(y1, y2, (size_t)n * NO * sizeof *y1);
        eb_kern_dense_forward_naive(yd, x, wd, b, n, NI, NO);
        eb_kern_dense_forward_naive(yw, x, w, b, n, NI, NO);
        for (int rr = 0; rr < n; rr++) {
            double l1x = 0.0;
            for (int k = 0; k < NI; k++)
                l1x += fabs(x[(size_t)rr * NI + k]);
            for (int o = 0; o < NO; o++) {
                double l1w = 0.0, bd, bw, ed, ew;
                for (int k = 0; k < NI; k++)
                    l1w += fabs(wd[(size_t)o * NI + k]);
                bd = 0.5 * sx[rr] * l1w + (NI + 8) * ldexp(1.0, -23) * (l1x + NI * sx[rr]) * l1w;
                bw = bd + 0.5 * sw[o] * l1x;
                ed = fabs((double)y1[(size_t)rr * NO + o] - yd[(size_t)rr * NO + o]);
                ew = fabs((double)y1[(size_t)rr * NO + o] - yw[(size_t)rr * NO + o]);
                assert_true(ed <= bd);
                assert_true(ew <= bw);
                worst_d = ed / bd > worst_d ? ed / bd : worst_d;
                worst_w = ew / bw > worst_w ? ew / bw : worst_w;
                typ += ed;
            }
        }
        printf("  dense i8 n=%d in=%d out=%d: fast == naive; vs f32 on dequantized W: worst "
               "err/bound %.3f, mean err %.2g; vs original W: worst err/bound %.3f\n",
               n, NI, NO, worst_d, typ / ((double)n * NO), worst_w);
        free(x); free(w); free(wd); free(b); free(sw); free(sx); free(y1); free(y2); free(yd);
        free(yw); free(qx); free(qw);
    }
}

static void check_close(const char *what, const float *a, const float *b, size_t n, double tol)
{
    const double e = eb_test_max_rel_err(a, b, n);
    printf("  %-44s max rel err %.3g (tol %.1g)\n", what, e, tol);
    assert_true(e <= tol);
}

/* Float sums of `terms` products against double sums (as test_kernels.c) */
static double sum_tol(size_t terms)
{
    const double t = 2e-7 * (double)terms;
    return t < 1e-6 ? 1e-6 : t;
}

static void test_dense_f16(void **state)
{
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 23, 0);
    for (size_t s = 0; s < sizeof gemm_shapes / sizeof gemm_shapes[0]; s++) {
        const int n = gemm_shapes[s][0], NI = gemm_shapes[s][1], NO = gemm_shapes[s][2];
        const int br = eb_qkern_f16_block_rows(NI);
        float *x = xmalloc((size_t)n * NI * sizeof *x), *w = xmalloc((size_t)NO * NI * sizeof *w);
        float *b = xmalloc((size_t)NO * sizeof *b), *wd = xmalloc((size_t)NO * NI * sizeof *wd);
        float *wbuf = xmalloc((size_t)br * NI * sizeof *wbuf);
        float *y1 = xmalloc((size_t)n * NO * sizeof *y1),
              *y2 = xmalloc((size_t)n * NO * sizeof *y2);
        float *y3 = xmalloc((size_t)n * NO * sizeof *y3);
        uint16_t *wh = xmalloc((size_t)NO * NI * sizeof *wh);
        char what[96];
        for (size_t k = 0; k < (size_t)n * NI; k++)
            x[k] = (float)eb_rng_normal(&r);
        for (size_t k = 0; k < (size_t)NO * NI; k++)
            w[k] = (float)(eb_rng_normal(&r) / sqrt(NI));
        for (int o = 0; o < NO; o++)
            b[o] = (float)eb_rng_normal(&r);
        eb_f32_to_f16_n(wh, w, (size_t)NO * NI);
        eb_f16_to_f32_n(wd, wh, (size_t)NO * NI);
        eb_qkern_dense_f16(y1, wbuf, x, wh, b, n, NI, NO);
        eb_qkern_dense_f16_naive(y2, x, wh, b, n, NI, NO);
        eb_kern_dense_forward_naive(y3, x, wd, b, n, NI, NO);
        snprintf(what, sizeof what, "dense f16 n=%d in=%d out=%d (%d-row blocks)", n, NI, NO, br);
        check_close(what, y1, y2, (size_t)n * NO, sum_tol((size_t)NI));
        /* the naive f16 kernel is the f32 one on the decoded weights */
        assert_memory_equal(y2, y3, (size_t)n * NO * sizeof *y2);
        free(x); free(w); free(b); free(wd); free(wbuf); free(y1); free(y2); free(y3); free(wh);
    }
}

static void test_conv2d_quant(void **state)
{
    static const int shapes[][5] = {/* n, H, W, C, O */
                                    {1, 3, 3, 1, 1},  {2, 5, 4, 1, 3},    {3, 7, 6, 4, 5},
                                    {2, 13, 13, 32, 64}, {3, 28, 28, 1, 32}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 24, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], H = shapes[s][1], W = shapes[s][2], C = shapes[s][3],
                  O = shapes[s][4];
        const size_t in_len = (size_t)n * H * W * C, rows = (size_t)n * (H - 2) * (W - 2);
        const size_t out_len = rows * O, w_len = (size_t)O * 9 * C, col_len = rows * 9 * C;
        float *x = xmalloc(in_len * sizeof *x), *w = xmalloc(w_len * sizeof *w);
        float *b = xmalloc((size_t)O * sizeof *b), *sw = xmalloc((size_t)O * sizeof *sw);
        float *cols = xmalloc(col_len * sizeof *cols), *sx = xmalloc(rows * sizeof *sx);
        float *wbuf = xmalloc((size_t)eb_qkern_f16_block_rows(9 * C) * 9 * C * sizeof *wbuf);
        float *y1 = xmalloc(out_len * sizeof *y1), *y2 = xmalloc(out_len * sizeof *y2);
        int16_t *qx = xmalloc(col_len * sizeof *qx);
        int8_t *qw = xmalloc(w_len);
        uint16_t *wh = xmalloc(w_len * sizeof *wh);
        char what[96];
        for (size_t k = 0; k < in_len; k++)
            x[k] = (float)eb_rng_normal(&r);
        for (size_t k = 0; k < w_len; k++)
            w[k] = (float)(eb_rng_normal(&r) / sqrt(9.0 * C));
        for (int o = 0; o < O; o++) {
            b[o] = (float)eb_rng_normal(&r);
            sw[o] = eb_quant_int8_run(qw + (size_t)o * 9 * C, w + (size_t)o * 9 * C, 9 * (size_t)C);
        }
        eb_qkern_conv2d_i8(y1, cols, qx, sx, x, qw, sw, b, n, H, W, C, O);
        eb_qkern_conv2d_i8_naive(y2, x, qw, sw, b, n, H, W, C, O);
        assert_memory_equal(y1, y2, out_len * sizeof *y1);
        eb_f32_to_f16_n(wh, w, w_len);
        eb_qkern_conv2d_f16(y1, cols, wbuf, x, wh, b, n, H, W, C, O);
        eb_qkern_conv2d_f16_naive(y2, x, wh, b, n, H, W, C, O);
        snprintf(what, sizeof what, "conv2d f16 n=%d %dx%dx%d -> %d", n, H, W, C, O);
        check_close(what, y1, y2, out_len, sum_tol(9 * (size_t)C));
        printf("  conv2d i8  n=%d %dx%dx%d -> %d: fast == naive\n", n, H, W, C, O);
        free(x); free(w); free(b); free(sw); free(cols); free(sx); free(wbuf); free(y1); free(y2);
        free(qx); free(qw); free(wh);
    }
}

/* ---- eb_qnet ---------------------------------------------------------- */

typedef struct model {
    eb_arch arch;
    float *theta;   /* (K) f32, He init plus random biases */
    uint64_t *groups;
    size_t n_groups;
    int8_t *q;      /* (K) */
    float *scales;  /* (n_groups) */
    float *theta_i8;  /* (K) dequantized int8 */
    uint16_t *h;      /* (K) f16 */
    float *theta_f16; /* (K) dequantized f16 */
} model;

static void model_init(model *m, const char *name, uint64_t seed)
{
    eb_error err = {0};
    eb_rng r;
    const size_t K = 0;
    (void)K;
    assert_int_equal(eb_arch_named(name, &m->arch, &err), EB_OK);
    m->theta = xmalloc(m->arch.n_params * sizeof(float));
    eb_rng_seed(&r, seed, 0);
    eb_arch_init_params(&m->arch, m->theta, &r);
    for (int i = 0; i < m->arch.n_layers; i++) {
        const eb_layer *L = &m->arch.layers[i];
        for (size_t k = 0; k < L->n_bias; k++)
            m->theta[L->param_offset + L->n_weights + k] = 0.1f * (float)eb_rng_normal(&r);
    }
    assert_int_equal(eb_quant_groups(&m->arch, &m->groups, &m->n_groups, &err), EB_OK);
    m->q = xmalloc(m->arch.n_params);
    m->scales = xmalloc(m->n_groups * sizeof(float));
    m->theta_i8 = xmalloc(m->arch.n_params * sizeof(float));
    eb_quant_int8_groups(m->q, m->scales, m->theta, m->groups, m->n_groups);
    eb_dequant_int8_groups(m->theta_i8, m->q, m->scales, m->groups, m->n_groups);
    m->h = xmalloc(m->arch.n_params * sizeof(uint16_t));
    m->theta_f16 = xmalloc(m->arch.n_params * sizeof(float));
    eb_f32_to_f16_n(m->h, m->theta, m->arch.n_params);
    eb_f16_to_f32_n(m->theta_f16, m->h, m->arch.n_params);
}

static void model_free(model *m)
{
    free(m->theta); free(m->q); free(m->scales); free(m->theta_i8); free(m->h);
    free(m->theta_f16);
    eb_free(m->groups);
}

static eb_qnet *make_qnet(const model *m, eb_qnet_storage st, int max_batch)
{
    eb_qnet *q;
    eb_error err = {0};
    eb_status s = eb_qnet_new(&m->arch, st, max_batch, &q, &err);
    if (s != EB_OK)
        printf("  %s\n", eb_error_message(&err));
    assert_int_equal(s, EB_OK);
    if (st == EB_QNET_F32)
        s = eb_qnet_set_weights(q, m->theta, NULL, NULL, 0, &err);
    else if (st == EB_QNET_F16)
        s = eb_qnet_set_weights(q, m->h, NULL, NULL, 0, &err);
    else
        s = eb_qnet_set_weights(q, m->q, m->scales, m->groups, m->n_groups, &err);
    if (s != EB_OK)
        printf("  %s\n", eb_error_message(&err));
    assert_int_equal(s, EB_OK);
    return q;
}

/* The f32 forward on weights theta, layer by layer with the naive kernels
 * (double sums), carrying for every example two measures of how far the
 * int8 network's activations may be from it.
 *
 * A rigorous bound e on the max-norm error:
 *   dense / conv, input error e, input max |a| = M, NI inputs per output:
 *     the int8 network quantizes its input a' (|a' - a| <= e) with
 *     s' <= (M + e) / 127 and error <= s' (1/2 + 2e-5) per value (the
 *     rounding of v * (127/m) included), so output o is off by at most
 *       ||w~_o||_1 (e + s' (1/2 + 2e-5))  +  rounding,
 *     rounding <= (NI + 8) 2^-23 ||w~_o||_1 (M + e + s')
 *     (conv: M is the image's max, bounding every patch's);
 *   relu, max-pool (1-Lipschitz in max-norm), flatten, dropout (off):
 *     e unchanged.
 * Worst case: it assumes every rounding error has the sign that hurts,
 * so it is orders of magnitude above what happens; it catches gross
 * errors (a wrong scale or channel) only.
 *
 * An expected squared error per unit (the statistical model): rounding
 * errors independent and uniform on +-s/2 (variance s^2 / 12, s the
 * reference row's or patch's scale), so
 *   dense / conv: var_o = sum_k w~_ok^2 (var_k + s^2 / 12);
 *   relu: var unchanged where the reference unit is on; where it is off
 *     (a <= 0) E[relu(a + d)^2] for d ~ N(0, var);
 *   max-pool: the largest variance in the window.
 * Writes the reference logits (n, C), the bound per example (n) and the
 * expected squared error per logit (n, C). */
static void ref_forward_bound(float *logits, double *bound, double *var_out, const eb_arch *a,
                              const float *theta, const float *x, int n)
{
    float *buf[2];
    double *var[2];
    const float *in = x;
    const double *vin;
    int pp = 0;
    double *e = xmalloc((size_t)n * sizeof *e);
    buf[0] = xmalloc((size_t)n * a->max_act * sizeof(float));
    buf[1] = xmalloc((size_t)n * a->max_act * sizeof(float));
    var[0] = xmalloc((size_t)n * a->max_act * sizeof(double));
    var[1] = xmalloc((size_t)n * a->max_act * sizeof(double));
    for (size_t k = 0; k < (size_t)n * a->in_size; k++)
        var[1][k] = 0.0;
    vin = var[1];
    for (int r = 0; r < n; r++)
        e[r] = 0.0;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const float *w = theta + L->param_offset, *b = w + L->n_weights;
        float *o = i == a->n_layers - 1 ? logits : buf[pp];
        double *vo = var[pp];
        if (L->kind == EB_LAYER_DENSE || L->kind == EB_LAYER_CONV2D) {
            const size_t NI = L->kind == EB_LAYER_DENSE ? L->in_size : 9 * (size_t)L->in_c;
            const double l1max = eb_test_l1max_rows(w, L->units, NI);
            for (int r = 0; r < n; r++) {
                const double M = eb_test_max_abs(in + (size_t)r * L->in_size, L->in_size);
                double s;
                s = (M + e[r]) / 127.0;
                e[r] = l1max * (e[r] + s * (0.5 + 2e-5)) +
                       (double)(NI + 8) * ldexp(1.0, -23) * l1max * (M + e[r] + s);
            }
            if (L->kind == EB_LAYER_DENSE) {
                eb_kern_dense_forward_naive(o, in, w, b, n, (int)L->in_size, L->units);
                for (int r = 0; r < n; r++) {
                    const double m = eb_test_max_abs(in + (size_t)r * NI, NI);
                    const double q = (m / 127.0) * (m / 127.0) / 12.0;
                    for (int u = 0; u < L->units; u++) {
                        double t = 0.0;
                        for (size_t k = 0; k < NI; k++)
                            t += (double)w[(size_t)u * NI + k] * w[(size_t)u * NI + k] *
                                 (vin[(size_t)r * NI + k] + q);
                        vo[(size_t)r * L->units + u] = t;
                    }
                }
            } else {
                const int H = L->in_h, W = L->in_w, C = L->in_c, OH = H - 2, OW = W - 2;
                eb_kern_conv2d_forward_naive(o, in, w, b, n, H, W, C, L->units);
                for (int r = 0; r < n; r++)
                    for (int oy = 0; oy < OH; oy++)
                        for (int ox = 0; ox < OW; ox++) {
                            double m = 0.0, q;
                            for (int ky = 0; ky < 3; ky++)
                                for (int kx = 0; kx < 3; kx++)
                                    for (int c = 0; c < C; c++) {
                                        const double v = fabs(
                                            in[(((size_t)r * H + oy + ky) * W + ox + kx) * C + c]);
                                        m = v > m ? v : m;
                                    }
                            q = (m / 127.0) * (m / 127.0) / 12.0;
                            for (int u = 0; u < L->units; u++) {
                                double t = 0.0;
                                for (int ky = 0; ky < 3; ky++)
                                    for (int kx = 0; kx < 3; kx++)
                                        for (int c = 0; c < C; c++) {
                                            const double wv =
                                                w[(((size_t)u * 3 + ky) * 3 + kx) * C + c];
                                            t += wv * wv *
                                                 (vin[(((size_t)r * H + oy + ky) * W + ox + kx) *
                                                          C +
                                                      c] +
                                                  q);
                                        }
                                vo[(((size_t)r * OH + oy) * OW + ox) * L->units + u] = t;
                            }
                        }
            }
        } else if (L->kind == EB_LAYER_MAXPOOL) {
            const int H = L->in_h, W = L->in_w, C = L->in_c, PH = H / 2, PW = W / 2;
            eb_kern_maxpool_forward_naive(o, in, n, H, W, C);
            for (int r = 0; r < n; r++)
                for (int py = 0; py < PH; py++)
                    for (int px = 0; px < PW; px++)
                        for (int c = 0; c < C; c++) {
                            double m = 0.0;
                            for (int dy = 0; dy < 2; dy++)
                                for (int dx = 0; dx < 2; dx++) {
                                    const double v =
                                        vin[(((size_t)r * H + 2 * py + dy) * W + 2 * px + dx) * C +
                                            c];
                                    m = v > m ? v : m;
                                }
                            vo[(((size_t)r * PH + py) * PW + px) * C + c] = m;
                        }
        } else if (L->kind == EB_LAYER_RELU) {
            for (size_t k = 0; k < (size_t)n * L->out_size; k++) {
                const double av = in[k], v = vin[k], sd = sqrt(v);
                o[k] = in[k] > 0.0f ? in[k] : 0.0f;
                if (av > 0.0 || sd == 0.0) {
                    vo[k] = av > 0.0 ? v : 0.0;
                } else {
                    const double z = av / sd;
                    const double cdf = 0.5 * erfc(-z / sqrt(2.0));
                    const double pdf = exp(-0.5 * z * z) / sqrt(2.0 * M_PI);
                    vo[k] = (av * av + v) * cdf + av * sd * pdf;
                }
            }
        } else {
            continue;
        }
        in = o;
        vin = vo;
        pp ^= 1;
    }
    for (int r = 0; r < n; r++)
        bound[r] = e[r];
    memcpy(var_out, vin, (size_t)n * a->n_classes * sizeof *var_out);
    free(e); free(buf[0]); free(buf[1]); free(var[0]); free(var[1]);
}

static void test_qnet_forward(void **state)
{
    static const struct { const char *name; int n; } cases[] = {{"mlp", 9}, {"cnn", 33}};
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        model m;
        eb_net *net;
        eb_error err = {0};
        const int n = cases[c].n;
        size_t nl, bytes[4], wsp[4];
        float *x, *y_net, *y_q, *y_naive, *y_ref;
        double *bound, *expect;
        eb_rng r;
        model_init(&m, cases[c].name, 100 + c);
        nl = (size_t)n * m.arch.n_classes;
        x = xmalloc((size_t)n * m.arch.in_size * sizeof *x);
        y_net = xmalloc(nl * sizeof *y_net);
        y_q = xmalloc(nl * sizeof *y_q);
        y_naive = xmalloc(nl * sizeof *y_naive);
        y_ref = xmalloc(nl * sizeof *y_ref);
        bound = xmalloc((size_t)n * sizeof *bound);
        expect = xmalloc(nl * sizeof *expect);
        eb_rng_seed(&r, 200 + c, 0);
        for (size_t k = 0; k < (size_t)n * m.arch.in_size; k++)
            x[k] = eb_rng_uniformf(&r);
        assert_int_equal(eb_net_new(&m.arch, n, &net, &err), EB_OK);
        printf("%s, batch %d (K = %zu)\n", cases[c].name, n, m.arch.n_params);

        for (int st = EB_QNET_F32; st <= EB_QNET_INT8; st++) {
            eb_qnet *q = make_qnet(&m, (eb_qnet_storage)st, n);
            const float *theta = st == EB_QNET_F32 ? m.theta : st == EB_QNET_F16 ? m.theta_f16
                                                                                  : m.theta_i8;
            const char *sn = st == EB_QNET_F32 ? "f32" : st == EB_QNET_F16 ? "f16" : "int8";
            char what[96];
            memcpy(y_net, eb_net_forward(net, theta, x, n, NULL), nl * sizeof *y_net);
            assert_int_equal(eb_qnet_forward(q, x, (size_t)n, y_q, &err), EB_OK);
            assert_int_equal(eb_qnet_forward_naive(q, x, (size_t)n, y_naive, &err), EB_OK);
            bytes[st] = eb_qnet_weight_bytes(q);
            wsp[st] = eb_qnet_bytes(q) - bytes[st];
            if (st == EB_QNET_INT8) {
                /* the same integers and the same float expressions */
                double worst = 0.0, mean = 0.0, bmean = 0.0, mse = 0.0, evar = 0.0;
                assert_memory_equal(y_q, y_naive, nl * sizeof *y_q);
                printf("  int8 qnet fast == naive, bit for bit\n");
                ref_forward_bound(y_ref, bound, expect, &m.arch, m.theta_i8, x, n);
                check_close("eb_net f32 vs naive f32 reference", y_net, y_ref, nl, 1e-4);
                for (int rr = 0; rr < n; rr++)
                    for (int k = 0; k < m.arch.n_classes; k++) {
                        const double d = fabs((double)y_q[(size_t)rr * m.arch.n_classes + k] -
                                              y_ref[(size_t)rr * m.arch.n_classes + k]);
                        assert_true(d <= bound[rr]);
                        worst = d / bound[rr] > worst ? d / bound[rr] : worst;
                        mean += d;
                    }
                for (int rr = 0; rr < n; rr++)
                    bmean += bound[rr];
                for (size_t k = 0; k < nl; k++) {
                    const double d = (double)y_q[k] - y_ref[k];
                    mse += d * d;
                    evar += expect[k];
                }
                printf("  int8 qnet vs f32 on dequantized weights: mean |err| %.3g; worst-case "
                       "bound: mean %.3g, worst err/bound %.2g; rms err %.3g vs expected "
                       "%.3g (ratio %.2f, tol 3)\n",
                       mean / (double)nl, bmean / n, worst, sqrt(mse / (double)nl),
                       sqrt(evar / (double)nl), sqrt(mse / evar));
                assert_true(sqrt(mse / evar) <= 3.0);
            } else {
                snprintf(what, sizeof what, "%s qnet vs eb_net_forward", sn);
                check_close(what, y_q, y_net, nl, st == EB_QNET_F32 ? 1e-5 : 1e-4);
                snprintf(what, sizeof what, "%s qnet fast vs naive", sn);
                check_close(what, y_q, y_naive, nl, 1e-4);
            }
            /* a batch of one gives the first example's logits */
            assert_int_equal(eb_qnet_forward(q, x, 1, y_naive, &err), EB_OK);
            snprintf(what, sizeof what, "%s qnet batch 1 vs batch %d, row 0", sn, n);
            /* int8 rows are independent integer sums; sgemm may block a
             * batch of one differently */
            check_close(what, y_naive, y_q, (size_t)m.arch.n_classes,
                        st == EB_QNET_INT8 ? 0.0 : 1e-5);
            eb_qnet_free(q);
        }
        printf("  weight bytes: f32 %zu, f16 %zu, int8 %zu; workspace for batch %d: f32 %zu, "
               "f16 %zu, int8 %zu\n",
               bytes[1], bytes[2], bytes[3], n, wsp[1], wsp[2], wsp[3]);
        assert_true(bytes[3] < bytes[2] && bytes[2] < bytes[1]);
        assert_true(bytes[1] >= 4 * m.arch.n_params && bytes[2] >= 2 * m.arch.n_params);
        assert_true(bytes[3] < m.arch.n_params + 4 * m.n_groups + 4 * m.arch.n_params / 64);
        eb_net_free(net);
        free(x); free(y_net); free(y_q); free(y_naive); free(y_ref); free(bound);
        free(expect);
        model_free(&m);
    }
}

/* A coarser grouping (one scale per layer's weights) is accepted and
 * gives the same logits as the per-channel grouping with those scales. */
static void test_qnet_coarse_groups(void **state)
{
    model m;
    eb_error err = {0};
    eb_qnet *q1, *q2;
    uint64_t groups[2 * EB_ARCH_MAX_LAYERS + 1];
    float scales[2 * EB_ARCH_MAX_LAYERS], *chan;
    size_t ng = 0;
    float x[784 * 3], y1[30], y2[30];
    eb_rng r;
    (void)state;
    model_init(&m, "mlp", 300);
    eb_rng_seed(&r, 301, 0);
    for (size_t k = 0; k < sizeof x / sizeof x[0]; k++)
        x[k] = eb_rng_uniformf(&r);
    chan = xmalloc(m.n_groups * sizeof *chan);
    for (int i = 0; i < m.arch.n_layers; i++) {
        const eb_layer *L = &m.arch.layers[i];
        if (!L->n_weights)
            continue;
        groups[ng] = L->param_offset;
        scales[ng++] = 0.01f * (float)(i + 1);
        groups[ng] = L->param_offset + L->n_weights;
        scales[ng++] = 0.002f;
    }
    groups[ng] = m.arch.n_params;
    /* the per-channel grouping with the same scales */
    for (size_t g = 0, j = 0; g < m.n_groups; g++) {
        while (groups[j + 1] <= m.groups[g])
            j++;
        chan[g] = scales[j];
    }
    assert_int_equal(eb_qnet_new(&m.arch, EB_QNET_INT8, 3, &q1, &err), EB_OK);
    assert_int_equal(eb_qnet_new(&m.arch, EB_QNET_INT8, 3, &q2, &err), EB_OK);
    assert_int_equal(eb_qnet_set_weights(q1, m.q, scales, groups, ng, &err), EB_OK);
    assert_int_equal(eb_qnet_set_weights(q2, m.q, chan, m.groups, m.n_groups, &err), EB_OK);
    assert_int_equal(eb_qnet_forward(q1, x, 3, y1, &err), EB_OK);
    assert_int_equal(eb_qnet_forward(q2, x, 3, y2, &err), EB_OK);
    assert_memory_equal(y1, y2, sizeof y1);
    eb_qnet_free(q1);
    eb_qnet_free(q2);
    free(chan);
    model_free(&m);
}

static void expect_error(eb_status got, eb_status want, const eb_error *err, const char *needle)
{
    printf("  -> %s\n", eb_error_message(err));
    assert_int_equal(got, want);
    assert_non_null(strstr(eb_error_message(err), needle));
}

/* eb_qweights over borrowed values, run through one shared workspace
 * (eb_qnet_new_workspace + eb_qnet_forward_w), give the logits of the
 * copying network (eb_qnet_set_weights + eb_qnet_forward) bit for bit, in
 * the fast and the naive pass, for two members alternating on one
 * workspace; the values are read in place (changing them changes the
 * logits) and the weights own only the biases and channel scales. */
static void test_qweights_shared(void **state)
{
    static const char *names[] = {"mlp", "cnn"};
    (void)state;
    for (size_t c = 0; c < 2; c++) {
        model m[2];
        eb_error err = {0};
        const int n = 5;
        size_t nl;
        float *x, *want, *got;
        eb_rng r;
        model_init(&m[0], names[c], 500 + c);
        model_init(&m[1], names[c], 600 + c);
        nl = (size_t)n * m[0].arch.n_classes;
        x = xmalloc((size_t)n * m[0].arch.in_size * sizeof *x);
        want = xmalloc(nl * sizeof *want);
        got = xmalloc(nl * sizeof *got);
        eb_rng_seed(&r, 700 + c, 0);
        for (size_t k = 0; k < (size_t)n * m[0].arch.in_size; k++)
            x[k] = eb_rng_uniformf(&r);
        for (int st = EB_QNET_F32; st <= EB_QNET_INT8; st++) {
            eb_qnet *ws, *copy[2];
            eb_qweights *w[2];
            for (int j = 0; j < 2; j++) {
                const void *v = st == EB_QNET_F32 ? (const void *)m[j].theta
                                : st == EB_QNET_F16 ? (const void *)m[j].h
                                                    : (const void *)m[j].q;
                copy[j] = make_qnet(&m[j], (eb_qnet_storage)st, n);
                assert_int_equal(eb_qweights_new(&m[j].arch, (eb_qnet_storage)st, v,
                                                 st == EB_QNET_INT8 ? m[j].scales : NULL,
                                                 st == EB_QNET_INT8 ? m[j].groups : NULL,
                                                 st == EB_QNET_INT8 ? m[j].n_groups : 0, &w[j],
                                                 &err),
                                 EB_OK);
            }
            assert_int_equal(eb_qnet_new_workspace(&m[0].arch, (eb_qnet_storage)st, n, &ws, &err),
                             EB_OK);
            assert_int_equal(eb_qnet_weight_bytes(ws), 0);
            assert_int_equal(eb_qnet_bytes(ws),
                             eb_qnet_bytes(copy[0]) - eb_qnet_weight_bytes(copy[0]));
            /* the biases (and int8 channel scales) and a 64-byte-rounded handle only */
            assert_true(eb_qweights_bytes(w[0]) < eb_qnet_weight_bytes(copy[0]) -
                                                      m[0].arch.n_params * (st == EB_QNET_F32 ? 4
                                                                            : st == EB_QNET_F16
                                                                                ? 2
                                                                                : 1) +
                                                      2048);
            for (int rep = 0; rep < 2; rep++)
                for (int j = 0; j < 2; j++) {
                    assert_int_equal(eb_qnet_forward(copy[j], x, (size_t)n, want, &err), EB_OK);
                    assert_int_equal(eb_qnet_forward_w(ws, w[j], x, (size_t)n, got, &err), EB_OK);
                    assert_memory_equal(got, want, nl * sizeof *got);
                    /* the copying network runs borrowed weights too */
                    assert_int_equal(eb_qnet_forward_w(copy[1 - j], w[j], x, (size_t)n, got, &err),
                                     EB_OK);
                    assert_memory_equal(got, want, nl * sizeof *got);
                    assert_int_equal(eb_qnet_forward_naive(copy[j], x, (size_t)n, want, &err),
                                     EB_OK);
                    assert_int_equal(eb_qnet_forward_w_naive(ws, w[j], x, (size_t)n, got, &err),
                                     EB_OK);
                    assert_memory_equal(got, want, nl * sizeof *got);
                }
            /* in place: the values are read where they lie, not copied */
            assert_int_equal(eb_qnet_forward_w(ws, w[0], x, (size_t)n, want, &err), EB_OK);
            {
                /* row 0 of the logits layer's W, changed in the caller's array */
                const eb_layer *L = &m[0].arch.layers[m[0].arch.n_layers - 1];
                const size_t at = L->param_offset, len = L->n_weights / (size_t)L->units;
                for (size_t k = at; k < at + len; k++) {
                    if (st == EB_QNET_F32)
                        m[0].theta[k] += 1.0f;
                    else if (st == EB_QNET_F16)
                        m[0].h[k] = eb_f32_to_f16(eb_f16_to_f32(m[0].h[k]) + 1.0f);
                    else
                        m[0].q[k] = (int8_t)(m[0].q[k] > 0 ? m[0].q[k] - 100 : m[0].q[k] + 100);
                }
                assert_int_equal(eb_qnet_forward_w(ws, w[0], x, (size_t)n, got, &err), EB_OK);
                assert_memory_not_equal(got, want, nl * sizeof *got);
                for (size_t k = at; k < at + len && st == EB_QNET_F32; k++)
                    m[0].theta[k] -= 1.0f; /* near enough for the checks that follow */
            }
            printf("%s %s: forward_w on a shared workspace == copying network, bit for bit; "
                   "workspace %zu bytes, weights own %zu bytes (copy: %zu)\n",
                   names[c], st == EB_QNET_F32 ? "f32" : st == EB_QNET_F16 ? "f16" : "int8",
                   eb_qnet_bytes(ws), eb_qweights_bytes(w[0]), eb_qnet_weight_bytes(copy[0]));
            /* restore the borrowed values for the next storage */
            if (st == EB_QNET_F16)
                eb_f32_to_f16_n(m[0].h, m[0].theta, m[0].arch.n_params);
            if (st == EB_QNET_INT8)
                eb_quant_int8_groups(m[0].q, m[0].scales, m[0].theta, m[0].groups,
                                     m[0].n_groups);
            for (int j = 0; j < 2; j++) {
                eb_qweights_free(w[j]);
                eb_qnet_free(copy[j]);
            }
            eb_qnet_free(ws);
        }
        free(x); free(want); free(got);
        model_free(&m[0]);
        model_free(&m[1]);
    }
}

static void test_qweights_errors(void **state)
{
    model m;
    eb_error err = {0};
    eb_qnet *ws, *q16;
    eb_qweights *w;
    float x[2 * 784] = {0}, y[2 * 10];
    uint64_t saved;
    eb_arch wide;
    (void)state;
    model_init(&m, "mlp-small", 800);
    assert_int_equal(eb_qnet_supports(&m.arch, EB_QNET_INT8, m.groups, m.n_groups, &err), EB_OK);
    assert_int_equal(eb_qnet_supports(&m.arch, EB_QNET_F16, NULL, 0, &err), EB_OK);
    expect_error(eb_qnet_supports(&m.arch, EB_QNET_F16, m.groups, m.n_groups, &err), EB_ERR_ARG,
                 &err, "no scales or groups");
    saved = m.groups[3];
    m.groups[3] += 5;
    expect_error(eb_qnet_supports(&m.arch, EB_QNET_INT8, m.groups, m.n_groups, &err), EB_ERR_ARG,
                 &err, "output channel 3 of layer");
    expect_error(eb_qweights_new(&m.arch, EB_QNET_INT8, m.q, m.scales, m.groups, m.n_groups, &w,
                                 &err),
                 EB_ERR_ARG, &err, "output channel 3 of layer");
    assert_null(w);
    m.groups[3] = saved;
    expect_error(eb_qweights_new(&m.arch, EB_QNET_INT8, m.q, NULL, m.groups, m.n_groups, &w, &err),
                 EB_ERR_ARG, &err, "need scales");
    expect_error(eb_qweights_new(&m.arch, EB_QNET_INT8, NULL, m.scales, m.groups, m.n_groups, &w,
                                 &err),
                 EB_ERR_ARG, &err, "no weight values");
    m.theta[9] = NAN;
    expect_error(eb_qweights_new(&m.arch, EB_QNET_F32, m.theta, NULL, NULL, 0, &w, &err),
                 EB_ERR_ARG, &err, "weight 9");
    eb_alloc_fail_at(1);
    expect_error(eb_qweights_new(&m.arch, EB_QNET_F16, m.h, NULL, NULL, 0, &w, &err),
                 EB_ERR_NOMEM, &err, "out of memory");
    eb_alloc_fail_at(0);
    assert_int_equal(eb_arch_parse("input 400x400x1; flatten; dense 2", &wide, &err), EB_OK);
    expect_error(eb_qnet_supports(&wide, EB_QNET_INT8, NULL, 0, &err), EB_ERR_UNSUPPORTED, &err,
                 "at most 133144");
    expect_error(eb_qnet_new_workspace(&wide, EB_QNET_INT8, 1, &ws, &err), EB_ERR_UNSUPPORTED,
                 &err, "at most 133144");

    /* a workspace has no weights of its own */
    assert_int_equal(eb_qnet_new_workspace(&m.arch, EB_QNET_INT8, 2, &ws, &err), EB_OK);
    expect_error(eb_qnet_set_weights(ws, m.q, m.scales, m.groups, m.n_groups, &err), EB_ERR_ARG,
                 &err, "workspace only");
    expect_error(eb_qnet_forward(ws, x, 1, y, &err), EB_ERR_ARG, &err, "no weights");
    /* weights of another storage, or a batch too large */
    assert_int_equal(eb_qweights_new(&m.arch, EB_QNET_F16, m.h, NULL, NULL, 0, &w, &err), EB_OK);
    expect_error(eb_qnet_forward_w(ws, w, x, 1, y, &err), EB_ERR_ARG, &err, "do not fit");
    expect_error(eb_qnet_forward_w_naive(ws, w, x, 1, y, &err), EB_ERR_ARG, &err, "do not fit");
    assert_int_equal(eb_qnet_new_workspace(&m.arch, EB_QNET_F16, 2, &q16, &err), EB_OK);
    expect_error(eb_qnet_forward_w(q16, w, x, 3, y, &err), EB_ERR_ARG, &err, "outside 1..2");
    assert_int_equal(eb_qnet_forward_w(q16, w, x, 2, y, &err), EB_OK);
    eb_qweights_free(w);
    eb_qnet_free(q16);
    eb_qnet_free(ws);
    model_free(&m);
}

static void test_qnet_errors(void **state)
{
    model m;
    eb_error err = {0};
    eb_qnet *q;
    float x[784] = {0}, y[10], bad_scale;
    uint64_t saved;
    eb_arch wide;
    (void)state;
    model_init(&m, "mlp-small", 400);

    expect_error(eb_qnet_new(&m.arch, (eb_qnet_storage)4, 1, &q, &err), EB_ERR_ARG, &err,
                 "storage 4");
    assert_null(q);
    expect_error(eb_qnet_new(&m.arch, EB_QNET_F16, 0, &q, &err), EB_ERR_ARG, &err, "batch size");

    assert_int_equal(eb_qnet_new(&m.arch, EB_QNET_INT8, 2, &q, &err), EB_OK);
    expect_error(eb_qnet_forward(q, x, 1, y, &err), EB_ERR_ARG, &err, "no weights");
    expect_error(eb_qnet_set_weights(q, m.q, NULL, NULL, 0, &err), EB_ERR_ARG, &err,
                 "need scales");
    /* a boundary inside output channel 3's weights of layer 1 */
    saved = m.groups[3];
    m.groups[3] += 5;
    expect_error(eb_qnet_set_weights(q, m.q, m.scales, m.groups, m.n_groups, &err), EB_ERR_ARG,
                 &err, "output channel 3 of layer");
    m.groups[3] = saved;
    m.groups[m.n_groups] -= 1;
    expect_error(eb_qnet_set_weights(q, m.q, m.scales, m.groups, m.n_groups, &err), EB_ERR_ARG,
                 &err, "from 0 to K");
    m.groups[m.n_groups] += 1;
    bad_scale = m.scales[5];
    m.scales[5] = NAN;
    expect_error(eb_qnet_set_weights(q, m.q, m.scales, m.groups, m.n_groups, &err), EB_ERR_ARG,
                 &err, "scale 5");
    m.scales[5] = bad_scale;
    assert_int_equal(eb_qnet_set_weights(q, m.q, m.scales, m.groups, m.n_groups, &err), EB_OK);
    expect_error(eb_qnet_forward(q, x, 3, y, &err), EB_ERR_ARG, &err, "outside 1..2");
    assert_int_equal(eb_qnet_forward(q, x, 1, y, &err), EB_OK);
    eb_qnet_free(q);

    assert_int_equal(eb_qnet_new(&m.arch, EB_QNET_F32, 1, &q, &err), EB_OK);
    expect_error(eb_qnet_set_weights(q, m.theta, m.scales, m.groups, m.n_groups, &err),
                 EB_ERR_ARG, &err, "no scales");
    m.theta[17] = INFINITY;
    expect_error(eb_qnet_set_weights(q, m.theta, NULL, NULL, 0, &err), EB_ERR_ARG, &err,
                 "weight 17");
    eb_qnet_free(q);

    /* allocation failures: the struct, the weights, the workspace */
    for (long at = 1; at <= 3; at++) {
        eb_alloc_fail_at(at);
        expect_error(eb_qnet_new(&m.arch, EB_QNET_INT8, 4, &q, &err), EB_ERR_NOMEM, &err,
                     "out of memory");
        assert_null(q);
    }
    eb_alloc_fail_at(0);

    /* an inner dimension beyond the int32 accumulators */
    assert_int_equal(eb_arch_parse("input 400x400x1; flatten; dense 2", &wide, &err), EB_OK);
    expect_error(eb_qnet_new(&wide, EB_QNET_INT8, 1, &q, &err), EB_ERR_UNSUPPORTED, &err,
                 "at most 133144");
    assert_int_equal(eb_qnet_new(&wide, EB_QNET_F16, 1, &q, &err), EB_OK);
    eb_qnet_free(q);
    model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_f16_rounding_cases),
        cmocka_unit_test(test_f16_vs_compiler),
        cmocka_unit_test(test_int8_quant),
        cmocka_unit_test(test_quant_groups),
        cmocka_unit_test(test_i8_gemm_exact),
        cmocka_unit_test(test_dense_i8),
        cmocka_unit_test(test_dense_f16),
        cmocka_unit_test(test_conv2d_quant),
        cmocka_unit_test(test_qnet_forward),
        cmocka_unit_test(test_qnet_coarse_groups),
        cmocka_unit_test(test_qnet_errors),
        cmocka_unit_test(test_qweights_shared),
        cmocka_unit_test(test_qweights_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
