/* test_quant_gemv.c: the single-input GEMV kernels of nn_quant.h
 * (eb_qkern_gemv_i8, eb_qkern_gemv_f16) against their naive references
 * over random shapes with tails (NI not a multiple of 16, 32 or 64, NO
 * not a multiple of 4): int8 bit for bit against the naive loop and
 * against eb_qkern_dense_i8's row (the expression loop runs); f16 bit for
 * bit between its F16C and portable paths and within a stated tolerance
 * of the naive double-accumulating reference (and of eb_qkern_dense_f16).
 * Every tolerance check prints its largest error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_quant.h"

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

/* Fixed shapes (edges: NI = 1, 15, 17, 31, 33, 63, 65, NO = 1..5) then
 * random ones. */
static const int fixed[][2] = {{1, 1},   {15, 3},  {16, 4},  {17, 5},   {31, 7},  {33, 2},
                               {63, 9},  {64, 8},  {65, 11}, {784, 256}, {256, 10}, {129, 1},
                               {1000, 13}, {577, 6}};

static void shape(eb_rng *r, int t, int *NI, int *NO)
{
    const int nf = (int)(sizeof fixed / sizeof fixed[0]);
    if (t < nf) {
        *NI = fixed[t][0];
        *NO = fixed[t][1];
        return;
    }
    *NI = 1 + (int)(eb_rng_next(r) % 900u);
    *NO = 1 + (int)(eb_rng_next(r) % 70u);
}

#define N_SHAPES 60

static void test_gemv_i8(void **state)
{
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 31, 0);
    for (int t = 0; t < N_SHAPES; t++) {
        int NI, NO;
        float *x, *wf, *sw, *b, *y_fast, *y_naive, *y_dense, sx, sxd;
        int8_t *qw;
        int16_t *qx, *qxd;
        shape(&r, t, &NI, &NO);
        x = xmalloc((size_t)NI * sizeof *x);
        wf = xmalloc((size_t)NO * NI * sizeof *wf);
        sw = xmalloc((size_t)NO * sizeof *sw);
        b = xmalloc((size_t)NO * sizeof *b);
        y_fast = xmalloc((size_t)NO * sizeof *y_fast);
        y_naive = xmalloc((size_t)NO * sizeof *y_naive);
        y_dense = xmalloc((size_t)NO * sizeof *y_dense);
        qw = xmalloc((size_t)NO * NI);
        qx = xmalloc((size_t)NI * sizeof *qx);
        qxd = xmalloc((size_t)NI * sizeof *qxd);
        /* half the inputs are relu-like (>= 0), half signed */
        for (int k = 0; k < NI; k++) {
            const float v = (float)eb_rng_normal(&r);
            x[k] = (t & 1) ? fabsf(v) : v;
        }
        for (size_t k = 0; k < (size_t)NO * NI; k++)
            wf[k] = (float)eb_rng_normal(&r);
        for (int o = 0; o < NO; o++) {
            sw[o] = eb_quant_int8_run(qw + (size_t)o * NI, wf + (size_t)o * NI, (size_t)NI);
            b[o] = (float)eb_rng_normal(&r);
        }
        sx = eb_quant_int8_run_i16(qx, x, (size_t)NI);
        eb_qkern_gemv_i8(y_fast, qx, sx, qw, sw, b, NI, NO);
        eb_qkern_gemv_i8_naive(y_naive, x, qw, sw, b, NI, NO);
        /* loop's kernel (one row): the scratch it fills is its own */
        eb_qkern_dense_i8(y_dense, qxd, &sxd, x, qw, sw, b, 1, NI, NO);
        assert_memory_equal(y_fast, y_naive, (size_t)NO * sizeof *y_fast);
        assert_memory_equal(y_fast, y_dense, (size_t)NO * sizeof *y_fast);
        free(x); free(wf); free(sw); free(b); free(y_fast); free(y_naive); free(y_dense);
        free(qw); free(qx); free(qxd);
    }
    printf("gemv int8: %d shapes bit-identical to the naive loop and to eb_qkern_dense_i8\n",
           N_SHAPES);
}

static void test_gemv_f16(void **state)
{
    eb_rng r;
    double worst = 0.0, worst_dense = 0.0;
    (void)state;
    eb_rng_seed(&r, 37, 0);
    for (int t = 0; t < N_SHAPES; t++) {
        int NI, NO;
        float *x, *wf, *b, *y_fast, *y_port, *y_naive, *y_dense, *wbuf;
        uint16_t *wh;
        double tol;
        shape(&r, t, &NI, &NO);
        x = xmalloc((size_t)NI * sizeof *x);
        wf = xmalloc((size_t)NO * NI * sizeof *wf);
        b = xmalloc((size_t)NO * sizeof *b);
        y_fast = xmalloc((size_t)NO * sizeof *y_fast);
        y_port = xmalloc((size_t)NO * sizeof *y_port);
        y_naive = xmalloc((size_t)NO * sizeof *y_naive);
        y_dense = xmalloc((size_t)NO * sizeof *y_dense);
        wbuf = xmalloc((size_t)eb_qkern_f16_block_rows(NI) * NI * sizeof *wbuf);
        wh = xmalloc((size_t)NO * NI * sizeof *wh);
        for (int k = 0; k < NI; k++)
            x[k] = (float)eb_rng_normal(&r);
        for (size_t k = 0; k < (size_t)NO * NI; k++)
            wf[k] = (float)(eb_rng_normal(&r) / sqrt(NI));
        for (int o = 0; o < NO; o++)
            b[o] = (float)eb_rng_normal(&r);
        eb_f32_to_f16_n(wh, wf, (size_t)NO * NI);
        eb_qkern_gemv_f16(y_fast, x, wh, b, NI, NO);
        eb_qkern_gemv_f16_portable(y_port, x, wh, b, NI, NO);
        eb_qkern_gemv_f16_naive(y_naive, x, wh, b, NI, NO);
        eb_qkern_dense_f16(y_dense, wbuf, x, wh, b, 1, NI, NO);
        assert_memory_equal(y_fast, y_port, (size_t)NO * sizeof *y_fast);
        /* float sums of NI products against double: a few ulp per term of
         * the sum's size; |x w| ~ 1/sqrt(NI), so the sum of |terms| is
         * ~ sqrt(NI) and NI * 2^-24 * sqrt(NI) bounds the error loosely */
        tol = 4.0 * (double)NI * sqrt((double)NI) * FLT_EPSILON / 2.0 + 1e-6;
        for (int o = 0; o < NO; o++) {
            const double e = fabs((double)y_fast[o] - (double)y_naive[o]);
            const double ed = fabs((double)y_fast[o] - (double)y_dense[o]);
            if (e > tol || ed > 2.0 * tol)
                fail_msg("gemv f16 NI=%d NO=%d o=%d: %g vs naive %g (err %g), dense %g (err %g), "
                         "tol %g",
                         NI, NO, o, (double)y_fast[o], (double)y_naive[o], e, (double)y_dense[o],
                         ed, tol);
            worst = e / tol > worst ? e / tol : worst;
            worst_dense = ed / tol > worst_dense ? ed / tol : worst_dense;
        }
        free(x); free(wf); free(b); free(y_fast); free(y_port); free(y_naive); free(y_dense);
        free(wbuf); free(wh);
    }
    printf("gemv f16 (%s path): %d shapes; F16C and portable bit-identical; largest error / "
           "tolerance %.3g against the naive double sum, %.3g against eb_qkern_dense_f16\n",
           eb_qkern_gemv_f16_uses_f16c() ? "F16C" : "portable", N_SHAPES, worst, worst_dense);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemv_i8),
        cmocka_unit_test(test_gemv_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
