/* test_direct.c: the direct kernels (direct.c) against the naive
 * double-accumulating references. The inference convolution on shapes
 * that take every register block (64, 32 and 16 channels; pixel counts
 * that leave a partial block) and the im2col fallback (channels not a
 * multiple of 16); a prefetched buffer does not change a bit; an image's
 * outputs are the same bytes alone or inside a batch. The packed dense
 * product likewise, with the packing itself checked element by element. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/eb_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_kernels.h"

static void test_against_naive(void **state)
{
    /* n, H, W, C, NO: 64 (one 4-vector block), 32 and 16 (two and one
     * vector), 80 and 48 (a wide block, then narrower), 20 (fallback);
     * 121 and 676 pixels leave partial pixel blocks */
    static const int shapes[][5] = {{1, 3, 3, 1, 16},    {2, 5, 4, 3, 48},   {1, 13, 13, 32, 64},
                                    {3, 13, 13, 32, 64}, {1, 28, 28, 1, 32}, {2, 9, 7, 5, 80},
                                    {2, 7, 6, 4, 20},    {1, 6, 5, 2, 1}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 21, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], H = shapes[s][1], W = shapes[s][2], C = shapes[s][3],
                  NO = shapes[s][4];
        const size_t in_len = (size_t)n * H * W * C, out_len = (size_t)n * (H - 2) * (W - 2) * NO;
        const size_t scratch = eb_kern_conv2d_infer_scratch(n, H, W, C, NO);
        float *x = eb_test_normal_floats(&r, in_len),
              *w = eb_test_normal_floats(&r, (size_t)NO * 9 * C);
        float *b = eb_test_normal_floats(&r, (size_t)NO), *pf = eb_test_normal_floats(&r, 40000);
        float *got = malloc(out_len * sizeof *got), *again = malloc(out_len * sizeof *again);
        float *want = malloc(out_len * sizeof *want), *ws = malloc(scratch * sizeof *ws);
        double e, tol = 2e-7 * 9.0 * C;
        assert_true(got && again && want && ws);
        assert_true(scratch >= (size_t)9 * C * NO);
        eb_kern_conv2d_infer(got, ws, x, w, b, n, H, W, C, NO, NULL, 0);
        eb_kern_conv2d_forward_naive(want, x, w, b, n, H, W, C, NO);
        e = eb_test_max_rel_err(got, want, out_len);
        tol = tol < 1e-6 ? 1e-6 : tol;
        printf("conv n=%d %dx%dx%d -> %d (%s): max rel err %.3g (tol %.1g)\n", n, H, W, C, NO,
               eb_kern_direct_available(NO) ? "direct" : "im2col", e, tol);
        assert_true(e <= tol);
        /* prefetching another buffer, small or larger than the steps, is
         * invisible in the result */
        eb_kern_conv2d_infer(again, ws, x, w, b, n, H, W, C, NO, pf, 40000 * sizeof(float));
        assert_memory_equal(again, got, out_len * sizeof *got);
        eb_kern_conv2d_infer(again, ws, x, w, b, n, H, W, C, NO, pf, 100);
        assert_memory_equal(again, got, out_len * sizeof *got);
        if (NO % 16)
            assert_false(eb_kern_direct_available(NO));
        free(x); free(w); free(b); free(pf); free(got); free(again); free(want); free(ws);
    }
}

/* Each pixel's sum runs in the same order wherever its block falls, so
 * an image gives the same bytes alone and inside a batch (direct kernel;
 * the im2col path makes no such promise). */
static void test_batch_independent(void **state)
{
    const int n = 3, H = 13, W = 13, C = 32, NO = 64;
    const size_t img_in = (size_t)H * W * C, img_out = (size_t)(H - 2) * (W - 2) * NO;
    float *x, *w, *b, *all, *one, *ws;
    eb_rng r;
    (void)state;
    if (!eb_kern_direct_available(NO)) {
        printf("no AVX-512 here: the direct kernel does not run, nothing to compare\n");
        skip();
    }
    eb_rng_seed(&r, 22, 0);
    x = eb_test_normal_floats(&r, n * img_in);
    w = eb_test_normal_floats(&r, (size_t)NO * 9 * C);
    b = eb_test_normal_floats(&r, NO);
    all = malloc(n * img_out * sizeof *all);
    one = malloc(img_out * sizeof *one);
    ws = malloc(eb_kern_conv2d_infer_scratch(n, H, W, C, NO) * sizeof *ws);
    assert_true(all && one && ws);
    eb_kern_conv2d_infer(all, ws, x, w, b, n, H, W, C, NO, NULL, 0);
    for (int i = 0; i < n; i++) {
        eb_kern_conv2d_infer(one, ws, x + i * img_in, w, b, 1, H, W, C, NO, NULL, 0);
        assert_memory_equal(one, all + i * img_out, img_out * sizeof *one);
    }
    free(x); free(w); free(b); free(all); free(one); free(ws);
}

static void test_dense_packed(void **state)
{
    /* n, NI, NO: 6- and 5-row blocks (n = 50, 12), 64/32/16 channel
     * blocks (NO = 256, 112), the lrt mlp's shapes, one row */
    static const int shapes[][3] = {{50, 256, 256}, {12, 33, 112}, {1, 7, 16}, {7, 256, 48},
                                    {13, 5, 64},    {3, 9, 10}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 23, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], NI = shapes[s][1], NO = shapes[s][2];
        const size_t wl = (size_t)NI * NO, ol = (size_t)n * NO;
        float *x = eb_test_normal_floats(&r, (size_t)n * NI), *w = eb_test_normal_floats(&r, wl);
        float *b = eb_test_normal_floats(&r, (size_t)NO), *wt = malloc(wl * sizeof *wt);
        float *got = malloc(ol * sizeof *got), *want = malloc(ol * sizeof *want);
        float *one = malloc((size_t)NO * sizeof *one);
        double e, tol = 2e-7 * NI;
        assert_true(wt && got && want && one);
        eb_kern_pack_weights(wt, w, NI, NO);
        for (int o = 0; o < NO; o++)
            for (int k = 0; k < NI; k++)
                assert_true(wt[(size_t)k * NO + o] == w[(size_t)o * NI + k]);
        eb_kern_dense_packed(got, x, wt, b, n, NI, NO);
        eb_kern_dense_forward_naive(want, x, w, b, n, NI, NO);
        e = eb_test_max_rel_err(got, want, ol);
        tol = tol < 1e-6 ? 1e-6 : tol;
        printf("dense packed n=%d %d -> %d (%s): max rel err %.3g (tol %.1g)\n", n, NI, NO,
               eb_kern_direct_available(NO) ? "direct" : "loop", e, tol);
        assert_true(e <= tol);
        /* a row alone gives the bytes it gives in the batch */
        eb_kern_dense_packed(one, x + (size_t)(n - 1) * NI, wt, b, 1, NI, NO);
        assert_memory_equal(one, got + (size_t)(n - 1) * NO, (size_t)NO * sizeof *one);
        free(x); free(w); free(b); free(wt); free(got); free(want); free(one);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_naive),
        cmocka_unit_test(test_batch_independent),
        cmocka_unit_test(test_dense_packed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
