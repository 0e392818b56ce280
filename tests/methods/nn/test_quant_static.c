/* test_quant_static.c: int8 activations with static (calibrated) scales
 * (nn_quant.h): the quantization against hand-worked values and its
 * naive reference; the int32 sums of the static GEMM identical to the
 * naive loops; the dense, GEMV and conv2d kernels bit for bit against
 * their naive references; eb_qnet with static scales fast == naive, the
 * shared-workspace weights equal to the copying network, back to the
 * dynamic path bit for bit when the scales are removed, and within a
 * derived bound of the f32 forward on the dequantized weights; the
 * calibration observer sees the f32 activations. Every tolerance check
 * prints its largest error. */
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

/* Hand-worked: s = 0.5, so q = rne(2 v) clamped to +-127. 0.25 -> 0.5
 * and 1.25 -> 2.5 are ties (to even: 0, 2); 63.74 -> 127.48 -> 127;
 * 100 -> 200 saturates at 127, -100 at -127. */
static void test_static_values(void **state)
{
    const float v[12] = {0.0f, 0.24f, 0.25f, 0.26f, 0.75f, -0.75f,
                         63.5f, 63.74f, 100.0f, -100.0f, 1.25f, -0.0f};
    const int8_t want[12] = {0, 0, 0, 1, 2, -2, 127, 127, 127, -127, 2, 0};
    int8_t qn[12];
    int16_t q16[12];
    (void)state;
    assert_true(eb_quant_int8_static_naive(qn, v, 12, 0.5f) == 0.5f);
    assert_true(eb_quant_int8_static_i16(q16, v, 12, 0.5f) == 0.5f);
    for (int k = 0; k < 12; k++) {
        assert_int_equal(qn[k], want[k]);
        assert_int_equal(q16[k], want[k]);
    }
    {
        /* a non-finite value: scale NaN, every q zero */
        const float bad[4] = {1.0f, NAN, 2.0f, 3.0f}, inf[3] = {1.0f, -INFINITY, 0.5f};
        assert_true(isnan(eb_quant_int8_static_i16(q16, bad, 4, 0.1f)));
        for (int k = 0; k < 4; k++)
            assert_int_equal(q16[k], 0);
        assert_true(isnan(eb_quant_int8_static_naive(qn, inf, 3, 0.1f)));
        for (int k = 0; k < 3; k++)
            assert_int_equal(qn[k], 0);
    }
    {
        /* the smallest subnormal scale: 1/s is inf; 0 stays 0 (0 * inf
         * counts as 0), everything else saturates */
        const float s = FLT_TRUE_MIN, t[3] = {0.0f, 1e-30f, -2.0f};
        assert_int_equal(eb_quant_int8_static_i16(q16, t, 3, s) == s, 1);
        assert_int_equal(eb_quant_int8_static_naive(qn, t, 3, s) == s, 1);
        assert_int_equal(q16[0], 0); assert_int_equal(q16[1], 127); assert_int_equal(q16[2], -127);
        assert_int_equal(qn[0], 0); assert_int_equal(qn[1], 127); assert_int_equal(qn[2], -127);
    }
}

/* Random rows and scales (some saturating): fast == naive, and
 * |v - q s| <= s (1/2 + 2e-5) wherever |v| <= 127 s. */
static void test_static_random(void **state)
{
    static const size_t lens[] = {1, 7, 16, 31, 64, 100, 784, 1001};
    double worst = 0.0;
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 21, 0);
    for (int t = 0; t < 300; t++) {
        const size_t len = lens[t % 8];
        float *v = xmalloc(len * sizeof *v);
        int8_t *qn = xmalloc(len);
        int16_t *q16 = xmalloc(len * sizeof *q16);
        const double mag = ldexp(1.0, (int)eb_rng_below(&r, 30) - 15);
        float m = 0.0f, s;
        for (size_t k = 0; k < len; k++) {
            v[k] = (float)(eb_rng_normal(&r) * mag);
            m = fabsf(v[k]) > m ? fabsf(v[k]) : m;
        }
        /* from a quarter of the max (heavy saturation) to four times it */
        s = m / 127.0f * (0.25f + 3.75f * eb_rng_uniformf(&r));
        if (!(s > 0.0f))
            s = 1.0f;
        assert_true(eb_quant_int8_static_i16(q16, v, len, s) == s);
        assert_true(eb_quant_int8_static_naive(qn, v, len, s) == s);
        for (size_t k = 0; k < len; k++) {
            assert_int_equal(q16[k], qn[k]);
            if (fabsf(v[k]) <= 127.0f * s) {
                const double d = fabs((double)v[k] - (double)qn[k] * s) / s;
                assert_true(d <= 0.5 + 2e-5);
                worst = d > worst ? d : worst;
            } else {
                assert_int_equal(abs(qn[k]), 127);
            }
        }
        free(v); free(qn); free(q16);
    }
    printf("static quantization: fast == naive; worst |v - q s| / s = %.6f (tol 0.50002)\n",
           worst);
}

/* Dense (n rows), GEMV (one row) and conv2d with a static scale: the
 * int32 sums of the fast GEMM equal the naive loops', the fast kernels
 * equal their naive references bit for bit, and without saturation the
 * dense output is within sum_k |w~_ok| s (1/2 + 2e-5) + rounding of the
 * f32 product with the dequantized weights (each input off by at most
 * s (1/2 + 2e-5), the rest float rounding of the sums). */
static void test_static_kernels(void **state)
{
    static const int shapes[][3] = {{1, 784, 256}, {3, 33, 7}, {9, 256, 10}, {5, 1001, 13},
                                    {16, 64, 65}};
    double worst_ratio = 0.0;
    eb_rng r;
    (void)state;
    eb_rng_seed(&r, 31, 0);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int n = shapes[t][0], NI = shapes[t][1], NO = shapes[t][2];
        float *x = xmalloc((size_t)n * NI * sizeof *x), *w = xmalloc((size_t)NO * NI * sizeof *w);
        int8_t *qw = xmalloc((size_t)NO * NI);
        float *sw = xmalloc((size_t)NO * sizeof *sw), *b = xmalloc((size_t)NO * sizeof *b);
        int16_t *qx = xmalloc((size_t)n * NI * sizeof *qx);
        float *sx = xmalloc((size_t)n * sizeof *sx);
        float *y = xmalloc((size_t)n * NO * sizeof *y), *yn = xmalloc((size_t)n * NO * sizeof *yn);
        int32_t *acc = xmalloc((size_t)n * NO * sizeof *acc);
        int32_t *accn = xmalloc((size_t)n * NO * sizeof *accn);
        float m = 0.0f, xs;
        for (size_t k = 0; k < (size_t)n * NI; k++) {
            x[k] = (float)eb_rng_normal(&r);
            m = fabsf(x[k]) > m ? fabsf(x[k]) : m;
        }
        for (size_t k = 0; k < (size_t)NO * NI; k++)
            w[k] = (float)eb_rng_normal(&r) * 0.05f;
        for (int o = 0; o < NO; o++) {
            sw[o] = eb_quant_int8_run(qw + (size_t)o * NI, w + (size_t)o * NI, (size_t)NI);
            b[o] = (float)eb_rng_normal(&r) * 0.1f;
        }
        xs = m / 127.0f * 1.1f; /* no saturation */

        /* int32 sums */
        for (int i = 0; i < n; i++)
            assert_true(eb_quant_int8_static_i16(qx + (size_t)i * NI, x + (size_t)i * NI,
                                                 (size_t)NI, xs) == xs);
        eb_qkern_i8_gemm(acc, qx, qw, n, NI, NO);
        eb_qkern_i8_gemm_naive(accn, qx, qw, n, NI, NO);
        assert_memory_equal(acc, accn, (size_t)n * NO * sizeof *acc);

        /* dense: fast == naive, and the bound */
        eb_qkern_dense_i8_static(y, qx, sx, x, xs, qw, sw, b, n, NI, NO);
        eb_qkern_dense_i8_static_naive(yn, x, xs, qw, sw, b, n, NI, NO);
        assert_memory_equal(y, yn, (size_t)n * NO * sizeof *y);
        for (int i = 0; i < n; i++)
            for (int o = 0; o < NO; o++) {
                double ref = b[o], l1 = 0.0, bound, d;
                for (int k = 0; k < NI; k++) {
                    const double wk = (double)qw[(size_t)o * NI + k] * sw[o];
                    ref += wk * x[(size_t)i * NI + k];
                    l1 += fabs(wk);
                }
                bound = l1 * xs * (0.5 + 2e-5) +
                        (NI + 8) * ldexp(1.0, -23) * (l1 * (m + xs) + fabs(b[o]));
                d = fabs(y[(size_t)i * NO + o] - ref);
                assert_true(d <= bound);
                worst_ratio = d / bound > worst_ratio ? d / bound : worst_ratio;
            }

        /* GEMV: the fast path (static quantization, then eb_qkern_gemv_i8)
         * == its naive reference == the dense kernel's row */
        for (int i = 0; i < n; i++) {
            float *g = xmalloc((size_t)NO * sizeof *g), *gn = xmalloc((size_t)NO * sizeof *gn);
            const float s = eb_quant_int8_static_i16(qx, x + (size_t)i * NI, (size_t)NI, xs);
            eb_qkern_gemv_i8(g, qx, s, qw, sw, b, NI, NO);
            eb_qkern_gemv_i8_static_naive(gn, x + (size_t)i * NI, xs, qw, sw, b, NI, NO);
            assert_memory_equal(g, gn, (size_t)NO * sizeof *g);
            assert_memory_equal(g, y + (size_t)i * NO, (size_t)NO * sizeof *g);
            free(g); free(gn);
        }
        free(x); free(w); free(qw); free(sw); free(b); free(qx); free(sx); free(y); free(yn);
        free(acc); free(accn);
    }
    printf("static dense: fast == naive (sums and outputs), GEMV == naive == dense row; worst "
           "|err| / bound vs f32 on dequantized weights %.3g (tol 1)\n", worst_ratio);

    {
        /* conv2d 3x3 over (2, 7, 6, 3) into 5 channels, a scale that
         * saturates part of the input: fast == naive */
        const int N = 2, H = 7, W = 6, C = 3, NO = 5, rows = N * (H - 2) * (W - 2);
        float inp[2 * 7 * 6 * 3], wt[5 * 27], sw[5], b[5], cols[40 * 27], sx[40];
        float y[40 * 5], yn[40 * 5];
        int8_t qw[5 * 27];
        int16_t qx[40 * 27];
        for (size_t k = 0; k < sizeof inp / sizeof inp[0]; k++)
            inp[k] = (float)eb_rng_normal(&r);
        for (size_t k = 0; k < sizeof wt / sizeof wt[0]; k++)
            wt[k] = (float)eb_rng_normal(&r) * 0.2f;
        for (int o = 0; o < NO; o++) {
            sw[o] = eb_quant_int8_run(qw + o * 27, wt + o * 27, 27);
            b[o] = 0.01f * (float)o;
        }
        assert_int_equal(rows, 40);
        eb_qkern_conv2d_i8_static(y, cols, qx, sx, inp, 1.5f / 127.0f, qw, sw, b, N, H, W, C, NO);
        eb_qkern_conv2d_i8_static_naive(yn, inp, 1.5f / 127.0f, qw, sw, b, N, H, W, C, NO);
        assert_memory_equal(y, yn, sizeof y);
        printf("static conv2d: fast == naive, bit for bit\n");
    }
}

/* ---- eb_qnet with static scales ----------------------------------------- */

typedef struct model {
    eb_arch arch;
    float *theta, *theta_i8; /* (K) f32, dequantized int8 */
    int8_t *q;
    float *scales;
    uint64_t *groups;
    size_t n_groups;
} model;

static void model_init(model *m, const char *name, uint64_t seed)
{
    eb_error err = {0};
    eb_rng r;
    assert_int_equal(eb_arch_named(name, &m->arch, &err), EB_OK);
    m->theta = xmalloc(m->arch.n_params * sizeof(float));
    eb_rng_seed(&r, seed, 0);
    eb_arch_init_params(&m->arch, m->theta, &r);
    assert_int_equal(eb_quant_groups(&m->arch, &m->groups, &m->n_groups, &err), EB_OK);
    m->q = xmalloc(m->arch.n_params);
    m->scales = xmalloc(m->n_groups * sizeof(float));
    m->theta_i8 = xmalloc(m->arch.n_params * sizeof(float));
    eb_quant_int8_groups(m->q, m->scales, m->theta, m->groups, m->n_groups);
    eb_dequant_int8_groups(m->theta_i8, m->q, m->scales, m->groups, m->n_groups);
}

static void model_free(model *m)
{
    free(m->theta); free(m->q); free(m->scales); free(m->theta_i8);
    eb_free(m->groups);
}

/* The observer of the calibration pass: the largest |x| per layer. */
typedef struct obs {
    float max[EB_ARCH_MAX_LAYERS];
    int calls[EB_ARCH_MAX_LAYERS];
    size_t len[EB_ARCH_MAX_LAYERS];
} obs;

static void observe(void *ctx, int layer, const float *in, size_t n, size_t len)
{
    obs *o = ctx;
    for (size_t k = 0; k < n * len; k++)
        o->max[layer] = fabsf(in[k]) > o->max[layer] ? fabsf(in[k]) : o->max[layer];
    o->calls[layer]++;
    o->len[layer] = len;
}

/* The f32 forward on the dequantized weights (naive kernels), with the
 * max-norm error bound per example of an int8 network whose layer inputs
 * are quantized with the static scales act:
 *   dense / conv, input error e, input max |a| = M, scale s: the int8
 *     network's input a' (|a' - a| <= e) is rounded to q s with error at
 *     most s (1/2 + 2e-5) while |a'| <= 127.5 s, and saturates to +-127 s
 *     beyond, off by |a'| - 127 s <= M + e - 127 s; so every value is off
 *     by at most e + d, d = max(s (1/2 + 2e-5), M + e - 127 s), and
 *     e' = l1max (e + d) + (NI + 8) 2^-23 l1max (M + e + s);
 *   relu, max-pool (1-Lipschitz), flatten, dropout (off): e unchanged.
 * (The dynamic path's bound in test_quant.c, with s fixed.) */
static void ref_bound(float *logits, double *bound, const eb_arch *a, const float *theta,
                      const float *act, const float *x, int n)
{
    float *buf[2];
    const float *in = x;
    int pp = 0, j = 0;
    buf[0] = xmalloc((size_t)n * a->max_act * sizeof(float));
    buf[1] = xmalloc((size_t)n * a->max_act * sizeof(float));
    for (int r = 0; r < n; r++)
        bound[r] = 0.0;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const float *w = theta + L->param_offset, *b = w + L->n_weights;
        float *o = i == a->n_layers - 1 ? logits : buf[pp];
        if (L->kind == EB_LAYER_DENSE || L->kind == EB_LAYER_CONV2D) {
            const size_t NI = L->kind == EB_LAYER_DENSE ? L->in_size : 9 * (size_t)L->in_c;
            const double s = act[j++];
            const double l1max = eb_test_l1max_rows(w, L->units, NI);
            for (int r = 0; r < n; r++) {
                const double M = eb_test_max_abs(in + (size_t)r * L->in_size, L->in_size);
                const double sat = M + bound[r] - 127.0 * s, qe = s * (0.5 + 2e-5);
                bound[r] = l1max * (bound[r] + (sat > qe ? sat : qe)) +
                           (double)(NI + 8) * ldexp(1.0, -23) * l1max * (M + bound[r] + s);
            }
            if (L->kind == EB_LAYER_DENSE)
                eb_kern_dense_forward_naive(o, in, w, b, n, (int)L->in_size, L->units);
            else
                eb_kern_conv2d_forward_naive(o, in, w, b, n, L->in_h, L->in_w, L->in_c,
                                             L->units);
        } else if (L->kind == EB_LAYER_MAXPOOL) {
            eb_kern_maxpool_forward_naive(o, in, n, L->in_h, L->in_w, L->in_c);
        } else if (L->kind == EB_LAYER_RELU) {
            for (size_t k = 0; k < (size_t)n * L->out_size; k++)
                o[k] = in[k] > 0.0f ? in[k] : 0.0f;
        } else {
            continue;
        }
        in = o;
        pp ^= 1;
    }
    free(buf[0]);
    free(buf[1]);
}

static void test_qnet_static(void **state)
{
    static const struct { const char *name; int n; } cases[] = {{"mlp", 7}, {"cnn", 5}};
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        model m;
        eb_error err = {0};
        const int n = cases[c].n;
        size_t nl, n_act;
        float *x, *y, *yn, *yw, *ydyn, *ydyn2, *yref, act[EB_ARCH_MAX_LAYERS];
        double *bound, worst = 0.0;
        eb_qnet *q, *f32, *ws;
        eb_qweights *w32, *w8;
        obs o;
        eb_rng r;
        model_init(&m, cases[c].name, 500 + c);
        nl = (size_t)n * m.arch.n_classes;
        x = xmalloc((size_t)n * m.arch.in_size * sizeof *x);
        y = xmalloc(nl * sizeof *y); yn = xmalloc(nl * sizeof *yn);
        yw = xmalloc(nl * sizeof *yw); ydyn = xmalloc(nl * sizeof *ydyn);
        ydyn2 = xmalloc(nl * sizeof *ydyn2); yref = xmalloc(nl * sizeof *yref);
        bound = xmalloc((size_t)n * sizeof *bound);
        eb_rng_seed(&r, 600 + c, 0);
        for (size_t k = 0; k < (size_t)n * m.arch.in_size; k++)
            x[k] = eb_rng_uniformf(&r);

        /* calibration: the f32 network on the dequantized weights,
         * observed; logits identical to the plain forward */
        memset(&o, 0, sizeof o);
        assert_int_equal(eb_qnet_new_workspace(&m.arch, EB_QNET_F32, n, &f32, &err), EB_OK);
        assert_int_equal(eb_qweights_new(&m.arch, EB_QNET_F32, m.theta_i8, NULL, NULL, 0, &w32,
                                         &err), EB_OK);
        assert_int_equal(eb_qnet_forward_observe(f32, w32, x, (size_t)n, yw, observe, &o, &err),
                         EB_OK);
        assert_int_equal(eb_qnet_forward_w(f32, w32, x, (size_t)n, yn, &err), EB_OK);
        assert_memory_equal(yw, yn, nl * sizeof *yw);
        n_act = 0;
        for (int i = 0; i < m.arch.n_layers; i++) {
            if (!m.arch.layers[i].n_weights) {
                assert_int_equal(o.calls[i], 0);
                continue;
            }
            assert_int_equal(o.calls[i], 1);
            assert_int_equal(o.len[i], m.arch.layers[i].in_size);
            act[n_act++] = 2.0f * o.max[i] / 127.0f; /* headroom: no saturation */
        }
        assert_int_equal(n_act, eb_quant_act_layers(&m.arch));

        /* the copying network: fast == naive; the bound */
        assert_int_equal(eb_qnet_new(&m.arch, EB_QNET_INT8, n, &q, &err), EB_OK);
        assert_int_equal(eb_qnet_set_weights(q, m.q, m.scales, m.groups, m.n_groups, &err),
                         EB_OK);
        assert_int_equal(eb_qnet_forward(q, x, (size_t)n, ydyn, &err), EB_OK);
        assert_int_equal(eb_qnet_set_act_scales(q, act, n_act, &err), EB_OK);
        assert_int_equal(eb_qnet_forward(q, x, (size_t)n, y, &err), EB_OK);
        assert_int_equal(eb_qnet_forward_naive(q, x, (size_t)n, yn, &err), EB_OK);
        assert_memory_equal(y, yn, nl * sizeof *y);
        assert_true(memcmp(y, ydyn, nl * sizeof *y) != 0); /* the scales are used */
        ref_bound(yref, bound, &m.arch, m.theta_i8, act, x, n);
        for (int rr = 0; rr < n; rr++)
            for (int k = 0; k < m.arch.n_classes; k++) {
                const double d = fabs((double)y[(size_t)rr * m.arch.n_classes + k] -
                                      yref[(size_t)rr * m.arch.n_classes + k]);
                assert_true(d <= bound[rr]);
                worst = d / bound[rr] > worst ? d / bound[rr] : worst;
            }
        printf("%s: static int8 qnet fast == naive; worst |err| / bound vs f32 on dequantized "
               "weights %.3g (tol 1)\n", cases[c].name, worst);

        /* shared workspace + eb_qweights with the same scales: the same
         * bits; a batch of one gives row 0 */
        assert_int_equal(eb_qnet_new_workspace(&m.arch, EB_QNET_INT8, n, &ws, &err), EB_OK);
        assert_int_equal(eb_qweights_new(&m.arch, EB_QNET_INT8, m.q, m.scales, m.groups,
                                         m.n_groups, &w8, &err), EB_OK);
        assert_true(eb_qweights_act_scale(w8, 0) == 0.0f || m.arch.layers[0].n_weights == 0);
        assert_int_equal(eb_qweights_set_act_scales(w8, &m.arch, act, n_act, &err), EB_OK);
        assert_int_equal(eb_qnet_forward_w(ws, w8, x, (size_t)n, yw, &err), EB_OK);
        assert_memory_equal(yw, y, nl * sizeof *y);
        assert_int_equal(eb_qnet_forward_w_naive(ws, w8, x, (size_t)n, yw, &err), EB_OK);
        assert_memory_equal(yw, y, nl * sizeof *y);
        assert_int_equal(eb_qnet_forward_w(ws, w8, x, 1, yw, &err), EB_OK);
        assert_memory_equal(yw, y, (size_t)m.arch.n_classes * sizeof *y);

        /* removing the scales gives the dynamic path back, bit for bit */
        assert_int_equal(eb_qweights_set_act_scales(w8, &m.arch, NULL, 0, &err), EB_OK);
        assert_int_equal(eb_qnet_forward_w(ws, w8, x, (size_t)n, ydyn2, &err), EB_OK);
        assert_memory_equal(ydyn2, ydyn, nl * sizeof *y);

        /* refusals name the count or the scale; the weights stay dynamic */
        assert_int_equal(eb_qweights_set_act_scales(w8, &m.arch, act, n_act - 1, &err),
                         EB_ERR_ARG);
        printf("  -> %s\n", eb_error_message(&err));
        assert_non_null(strstr(eb_error_message(&err), "weighted layers"));
        act[1] = 0.0f;
        assert_int_equal(eb_qweights_set_act_scales(w8, &m.arch, act, n_act, &err), EB_ERR_ARG);
        printf("  -> %s\n", eb_error_message(&err));
        assert_non_null(strstr(eb_error_message(&err), "scale 1 is 0"));
        act[1] = NAN;
        assert_int_equal(eb_qnet_set_act_scales(q, act, n_act, &err), EB_ERR_ARG);
        assert_int_equal(eb_qnet_forward_w(ws, w8, x, (size_t)n, ydyn2, &err), EB_OK);
        assert_memory_equal(ydyn2, ydyn, nl * sizeof *y);
        assert_int_equal(eb_qweights_set_act_scales(w32, &m.arch, act, n_act, &err),
                         EB_ERR_ARG);
        assert_non_null(strstr(eb_error_message(&err), "int8"));
        assert_int_equal(eb_qnet_forward_observe(f32, w32, x, 1, yw, NULL, NULL, &err),
                         EB_ERR_ARG);

        eb_qweights_free(w8);
        eb_qweights_free(w32);
        eb_qnet_free(ws);
        eb_qnet_free(q);
        eb_qnet_free(f32);
        free(x); free(y); free(yn); free(yw); free(ydyn); free(ydyn2); free(yref); free(bound);
        model_free(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_values),
        cmocka_unit_test(test_static_random),
        cmocka_unit_test(test_static_kernels),
        cmocka_unit_test(test_qnet_static),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
