/* test_kernels.c: every fast layer kernel against its naive reference on
 * random inputs, printing the largest error. Shapes include C = 1, odd
 * spatial sizes (max-pool drops the last row and column) and batch 1. */
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

/* Float sums of `terms` products carry rounding error growing with their
 * length; the naive kernels accumulate in double. */
static double sum_tol(size_t terms)
{
    double t = 2e-7 * (double)terms;
    return t < 1e-6 ? 1e-6 : t;
}

static void check(const char *what, const float *a, const float *b, size_t n, double tol)
{
    double e = eb_test_max_rel_err(a, b, n);
    printf("  %-28s max rel err %.3g (tol %.1g)\n", what, e, tol);
    assert_true(e <= tol);
}

static void test_dense(void **state)
{
    static const int shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {17, 33, 10}, {64, 784, 256}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 1, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        float *x = eb_test_normal_floats(&r, (size_t)n * I),
              *w = eb_test_normal_floats(&r, (size_t)O * I);
        float *b = eb_test_normal_floats(&r, (size_t)O),
              *g = eb_test_normal_floats(&r, (size_t)n * O);
        float *o1 = malloc(sizeof(float) * n * O), *o2 = malloc(sizeof(float) * n * O);
        float *dw1 = malloc(sizeof(float) * O * I), *dw2 = malloc(sizeof(float) * O * I);
        float *db1 = malloc(sizeof(float) * O), *db2 = malloc(sizeof(float) * O);
        float *dx1 = malloc(sizeof(float) * n * I), *dx2 = malloc(sizeof(float) * n * I);
        printf("dense n=%d in=%d out=%d\n", n, I, O);
        eb_kern_dense_forward(o1, x, w, b, n, I, O);
        eb_kern_dense_forward_naive(o2, x, w, b, n, I, O);
        check("forward", o1, o2, (size_t)n * O, sum_tol((size_t)I));
        eb_kern_dense_backward(dx1, dw1, db1, g, x, w, n, I, O);
        eb_kern_dense_backward_naive(dx2, dw2, db2, g, x, w, n, I, O);
        check("dW", dw1, dw2, (size_t)O * I, sum_tol((size_t)n));
        check("db", db1, db2, (size_t)O, sum_tol((size_t)n));
        check("dX", dx1, dx2, (size_t)n * I, sum_tol((size_t)O));
        free(x); free(w); free(b); free(g); free(o1); free(o2);
        free(dw1); free(dw2); free(db1); free(db2); free(dx1); free(dx2);
    }
}

/* The one-input dense kernel of the stacked strategy: shapes with tails
 * (inputs not a multiple of its 16 lanes, outputs not of its 4 rows). */
static void test_dense_gemv(void **state)
{
    static const int shapes[][2] = {{1, 1}, {7, 5}, {16, 4}, {33, 10}, {256, 256}, {784, 259}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 2, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int I = shapes[s][0], O = shapes[s][1];
        float *x = eb_test_normal_floats(&r, (size_t)I),
              *w = eb_test_normal_floats(&r, (size_t)O * I);
        float *b = eb_test_normal_floats(&r, (size_t)O);
        float *o1 = malloc(sizeof(float) * O), *o2 = malloc(sizeof(float) * O);
        float *o3 = malloc(sizeof(float) * O);
        printf("dense gemv in=%d out=%d\n", I, O);
        eb_kern_dense_gemv(o1, x, w, b, I, O);
        eb_kern_dense_forward_naive(o2, x, w, b, 1, I, O);
        check("gemv", o1, o2, (size_t)O, sum_tol((size_t)I));
        eb_kern_dense_gemv(o3, x, w, b, I, O); /* deterministic */
        assert_memory_equal(o1, o3, sizeof(float) * O);
        free(x); free(w); free(b); free(o1); free(o2); free(o3);
    }
}

/* The sparse one-input kernel against its naive reference, on the kept
 * positions of a random layer embedded at an offset of a larger vector
 * (rows with nothing kept, rows with everything kept, tails of the
 * four-way unrolling), and against the dense kernel on the densified
 * weights. */
static void test_sparse_gemv(void **state)
{
    static const int shapes[][2] = {{1, 1}, {7, 5}, {33, 10}, {784, 67}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 3, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int I = shapes[s][0], O = shapes[s][1];
        const uint64_t base = 1000; /* the layer's first weight position */
        float *x = eb_test_normal_floats(&r, (size_t)I),
              *w = eb_test_normal_floats(&r, (size_t)O * I);
        float *zero = calloc((size_t)O, sizeof(float));
        float *vals = malloc(sizeof(float) * O * I), *o1 = malloc(sizeof(float) * O);
        float *o2 = malloc(sizeof(float) * O), *o3 = malloc(sizeof(float) * O);
        uint32_t *idx = malloc(sizeof(uint32_t) * O * I);
        uint64_t *rp = malloc(sizeof(uint64_t) * (O + 1));
        uint64_t n = 0;
        for (int o = 0; o < O; o++) {
            rp[o] = n;
            for (int i = 0; i < I; i++) {
                /* row 0 keeps everything, row 1 nothing, others ~30% */
                int keep = o == 0 || (o != 1 && eb_rng_uniformf(&r) < 0.3f);
                if (keep) {
                    vals[n] = w[(size_t)o * I + i];
                    idx[n++] = (uint32_t)(base + (uint64_t)o * I + (uint64_t)i);
                } else {
                    w[(size_t)o * I + i] = 0.0f;
                }
            }
        }
        rp[O] = n;
        printf("sparse gemv in=%d out=%d kept %llu of %d\n", I, O, (unsigned long long)n, I * O);
        eb_kern_sparse_gemv(o1, x, vals, idx, rp, base, I, O);
        eb_kern_sparse_gemv_naive(o2, x, vals, idx, rp, base, I, O);
        check("sparse gemv", o1, o2, (size_t)O, sum_tol((size_t)I));
        eb_kern_dense_forward_naive(o3, x, w, zero, 1, I, O);
        check("sparse vs dense", o1, o3, (size_t)O, sum_tol((size_t)I));
        if (O > 1)
            assert_true(o1[1] == 0.0f); /* nothing kept */
        free(x); free(w); free(zero); free(vals); free(o1); free(o2); free(o3); free(idx);
        free(rp);
    }
}

static void test_conv2d(void **state)
{
    /* n, H, W, C, O */
    static const int shapes[][5] = {
        {1, 3, 3, 1, 1}, {2, 5, 4, 1, 3}, {3, 7, 6, 4, 5}, {2, 13, 13, 32, 64}, {4, 28, 28, 1, 32}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 2, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], H = shapes[s][1], W = shapes[s][2], C = shapes[s][3],
            O = shapes[s][4];
        size_t in_len = (size_t)n * H * W * C, out_len = (size_t)n * (H - 2) * (W - 2) * O;
        size_t w_len = (size_t)O * 9 * C, col_len = (size_t)n * (H - 2) * (W - 2) * 9 * C;
        float *x = eb_test_normal_floats(&r, in_len), *w = eb_test_normal_floats(&r, w_len),
              *b = eb_test_normal_floats(&r, (size_t)O);
        float *g = eb_test_normal_floats(&r, out_len);
        float *o1 = malloc(sizeof(float) * out_len), *o2 = malloc(sizeof(float) * out_len);
        float *cols = malloc(sizeof(float) * col_len), *dcols = malloc(sizeof(float) * col_len);
        float *dw1 = malloc(sizeof(float) * w_len), *dw2 = malloc(sizeof(float) * w_len);
        float *db1 = malloc(sizeof(float) * O), *db2 = malloc(sizeof(float) * O);
        float *dx1 = malloc(sizeof(float) * in_len), *dx2 = malloc(sizeof(float) * in_len);
        printf("conv2d n=%d %dx%dx%d -> %d\n", n, H, W, C, O);
        eb_kern_conv2d_forward(o1, cols, x, w, b, n, H, W, C, O);
        eb_kern_conv2d_forward_naive(o2, x, w, b, n, H, W, C, O);
        check("forward", o1, o2, out_len, sum_tol(9 * (size_t)C));
        eb_kern_conv2d_backward(dx1, dw1, db1, dcols, g, cols, w, n, H, W, C, O);
        eb_kern_conv2d_backward_naive(dx2, dw2, db2, g, x, w, n, H, W, C, O);
        check("dW", dw1, dw2, w_len, sum_tol(out_len / (size_t)O));
        check("db", db1, db2, (size_t)O, sum_tol(out_len / (size_t)O));
        check("dX", dx1, dx2, in_len, sum_tol(9 * (size_t)O));
        free(x); free(w); free(b); free(g); free(o1); free(o2); free(cols); free(dcols);
        free(dw1); free(dw2); free(db1); free(db2); free(dx1); free(dx2);
    }
}

static void test_maxpool(void **state)
{
    static const int shapes[][4] = {{1, 2, 2, 1}, {2, 5, 7, 3}, {3, 26, 26, 32}, {2, 11, 11, 64}};
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 3, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], H = shapes[s][1], W = shapes[s][2], C = shapes[s][3];
        size_t in_len = (size_t)n * H * W * C, out_len = (size_t)n * (H / 2) * (W / 2) * C;
        float *x = eb_test_normal_floats(&r, in_len), *g = eb_test_normal_floats(&r, out_len);
        float *o1 = malloc(sizeof(float) * out_len), *o2 = malloc(sizeof(float) * out_len);
        int32_t *am = malloc(sizeof(int32_t) * out_len);
        float *dx1 = malloc(sizeof(float) * in_len), *dx2 = malloc(sizeof(float) * in_len);
        printf("maxpool n=%d %dx%dx%d\n", n, H, W, C);
        /* ties: the first maximum in window order wins in both kernels */
        x[0] = x[C] = 5.0f;
        eb_kern_maxpool_forward(o1, am, x, n, H, W, C);
        eb_kern_maxpool_forward_naive(o2, x, n, H, W, C);
        check("forward", o1, o2, out_len, 0.0);
        eb_kern_maxpool_backward(dx1, g, am, n, H, W, C);
        eb_kern_maxpool_backward_naive(dx2, g, x, n, H, W, C);
        check("dX", dx1, dx2, in_len, 0.0);
        free(x); free(g); free(o1); free(o2); free(am); free(dx1); free(dx2);
    }
}

static void test_relu_and_dropout(void **state)
{
    float x[6] = {-1.0f, 0.0f, 2.0f, -0.5f, 3.0f, 1e-30f}, y[6], d[6];
    float ones[6] = {1, 1, 1, 1, 1, 1};
    const float want_y[6] = {0, 0, 2, 0, 3, 1e-30f};
    const float want_d[6] = {0, 0, 1, 0, 1, 1};
    float *mask;
    size_t kept = 0;
    const int n = 50;
    const size_t size = 1000;
    (void)state;
    eb_kern_relu_forward(y, x, 6);
    eb_kern_relu_backward(d, ones, y, 6);
    for (int i = 0; i < 6; i++) {
        assert_true(y[i] == want_y[i]);
        assert_true(d[i] == want_d[i]);
    }
    /* masks: kept share close to 1 - rate, kept value 1/(1-rate), and an
     * example's mask does not depend on the batch it arrives in */
    mask = malloc(sizeof(float) * n * size);
    eb_kern_dropout_mask(mask, n, size, 0.25f, 42, 7, 100, 3);
    for (size_t i = 0; i < (size_t)n * size; i++) {
        assert_true(mask[i] == 0.0f || fabsf(mask[i] - 1.0f / 0.75f) < 1e-7f);
        kept += mask[i] != 0.0f;
    }
    printf("dropout kept share %.4f (expect 0.75)\n", (double)kept / (n * size));
    assert_true(fabs((double)kept / (n * size) - 0.75) < 0.01);
    {
        float one[1000];
        eb_kern_dropout_mask(one, 1, size, 0.25f, 42, 7, 100 + 17, 3);
        assert_memory_equal(one, mask + 17 * size, sizeof one);
        eb_kern_dropout_mask(one, 1, size, 0.25f, 42, 8, 100 + 17, 3);
        assert_true(memcmp(one, mask + 17 * size, sizeof one) != 0);
    }
    free(mask);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_dense_gemv),
        cmocka_unit_test(test_sparse_gemv),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_relu_and_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
