/* test_prune_glasso.c: group-lasso training for structured pruning
 * (prune transform, structure=units group_lasso=LAMBDA): the group
 * soft-thresholding operator against its closed form on hand-worked
 * vectors; the groups are exactly what removing a unit deletes; the
 * penalty's gradient against central differences, and one proximal step
 * of disjoint groups against a gradient step of the penalty; on a tiny
 * problem a unit that reads only dead (always 0) pixels is driven to
 * exactly 0 and removed first, and the smaller network predicts exactly
 * what the group-lasso-trained full network predicts; settings refused
 * with sentences naming them; same seed and threads, same bytes;
 * allocation failures on the new paths free what they allocated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_methods.h"
#include "methods/eb_prune.h"

/* ---- fixtures --------------------------------------------------------- */

#define SIDE 4
#define CLASSES 3
#define HIDDEN 16
#define LIVE 8 /* pixels 0..7 carry the class; 8..15 are always 0 */

static eb_dataset train_set;
static eb_arch net; /* 16 -> 16 -> 3 */
static float *parent; /* (K): trained, then unit 0 made dead (see setup) */

/* Three classes around random means on the first LIVE pixels, noise sd
 * 0.6; the other pixels are exactly 0 in every image. */
static void make_data(eb_dataset *d, size_t n, uint64_t seed)
{
    const size_t in = SIDE * SIDE;
    float means[CLASSES * LIVE];
    eb_rng r;
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic-dead");
    snprintf(d->split, sizeof d->split, "train");
    snprintf(d->digest, sizeof d->digest, "synthetic-dead-%llu", (unsigned long long)seed);
    d->n = n;
    d->c = 1;
    d->h = d->w = SIDE;
    d->n_classes = CLASSES;
    d->x = eb_malloc_aligned(64, n * in * sizeof *d->x);
    d->y = eb_malloc(n);
    assert_non_null(d->x);
    assert_non_null(d->y);
    eb_rng_seed(&r, seed, 1);
    for (size_t j = 0; j < CLASSES * LIVE; j++)
        means[j] = 0.5f * (float)eb_rng_normal(&r);
    for (size_t i = 0; i < n; i++) {
        const uint8_t y = (uint8_t)eb_rng_below(&r, CLASSES);
        d->y[i] = y;
        for (size_t j = 0; j < in; j++)
            d->x[i * in + j] =
                j < LIVE ? means[y * LIVE + j] + 0.6f * (float)eb_rng_normal(&r) : 0.0f;
    }
}

static void fill_normal(float *v, size_t n, uint64_t seed, float sd)
{
    eb_rng r;
    eb_rng_seed(&r, seed, 7);
    for (size_t i = 0; i < n; i++)
        v[i] = sd * (float)eb_rng_normal(&r);
}

/* The parent: trained densely, then hidden unit 0 rewired to read only
 * the dead pixels (weights 0.5 there, 0 on live ones, bias 0), output
 * weights 0.5. Its activation is relu(0) = 0 on every image, so the loss
 * gradient of its whole group is 0: it is redundant, yet its incoming
 * L2 norm (sqrt(8) * 0.5 = 1.41) is not the smallest. */
static int setup(void **state)
{
    eb_sgd_config cfg;
    eb_error err;
    const eb_layer *h, *o;
    (void)state;
    make_data(&train_set, 900, 1);
    if (eb_arch_parse("input 4x4x1; flatten; dense 16; relu; dense 3", &net, &err))
        return -1;
    memset(&cfg, 0, sizeof cfg);
    eb_optim_config_default(&cfg.optim, EB_OPTIM_ADAM);
    cfg.optim.lr = 0.01f;
    cfg.schedule = EB_SCHEDULE_COSINE;
    cfg.epochs = 10;
    cfg.batch = 32;
    cfg.threads = 1;
    parent = eb_malloc_aligned(64, net.n_params * sizeof *parent);
    if (!parent ||
        eb_sgd_train(&net, &train_set, &cfg, 5, 0, parent, "map", NULL, NULL, NULL, &err)) {
        fprintf(stderr, "training the fixture failed: %s\n", err.msg);
        return -1;
    }
    h = &net.layers[1];
    o = &net.layers[3];
    for (size_t j = 0; j < SIDE * SIDE; j++)
        parent[h->param_offset + j] = j < LIVE ? 0.0f : 0.5f;
    parent[h->param_offset + h->n_weights] = 0.0f;
    for (size_t c = 0; c < CLASSES; c++)
        parent[o->param_offset + c * HIDDEN] = 0.5f;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    eb_free_aligned(train_set.x);
    eb_free(train_set.y);
    eb_free_aligned(parent);
    return 0;
}

static eb_posterior samples_posterior(const eb_arch *arch, const float *params, uint32_t S)
{
    eb_posterior p;
    memset(&p, 0, sizeof p);
    p.arch = *arch;
    p.repr = EB_REPR_SAMPLES;
    p.members = S;
    p.k = arch->n_params;
    p.params = params;
    return p;
}

/* Runs the prune transform on p with space-separated key=value settings. */
static eb_status run_prune(const eb_posterior *p, const char *sets, int threads, eb_trained *out,
                           eb_error *err)
{
    eb_settings s;
    eb_transform_request req;
    eb_status st = eb_settings_init(&s, eb_transform_prune.settings, err);
    if (st || (st = eb_settings_assign_list(&s, sets, err)))
        return st;
    memset(&req, 0, sizeof req);
    req.posterior = p;
    req.train = &train_set;
    req.settings = &s;
    req.seed = 17;
    req.threads = threads;
    return eb_transform_prune.apply(&req, out, err);
}

/* ---- the operator ------------------------------------------------------ */

static void test_shrink_closed_form(void **state)
{
    const uint32_t two[] = {0, 1}, three[] = {0, 2, 4};
    float x[5];
    (void)state;
    /* (3, 4): norm 5, |g| = 2; t = 1/sqrt(2) gives threshold 1, so the
     * factor is 1 - 1/5 = 0.8: (2.4, 3.2) */
    x[0] = 3.0f;
    x[1] = 4.0f;
    assert_int_equal(eb_prune_group_shrink(x, two, 2, 1.0 / sqrt(2.0)), 0);
    assert_float_equal(x[0], 2.4f, 1e-6f);
    assert_float_equal(x[1], 3.2f, 1e-6f);
    /* threshold 4.9 (t = 4.9/sqrt(2)): factor 1 - 4.9/5 = 0.02: (0.06, 0.08) */
    x[0] = 3.0f;
    x[1] = 4.0f;
    assert_int_equal(eb_prune_group_shrink(x, two, 2, 4.9 / sqrt(2.0)), 0);
    assert_float_equal(x[0], 0.06f, 1e-6f);
    assert_float_equal(x[1], 0.08f, 1e-6f);
    /* threshold 5.5 > norm 5: exactly 0 */
    x[0] = 3.0f;
    x[1] = 4.0f;
    assert_int_equal(eb_prune_group_shrink(x, two, 2, 5.5 / sqrt(2.0)), 1);
    assert_true(x[0] == 0.0f && x[1] == 0.0f);
    /* a group already at 0 stays exactly 0 (no 0/0) */
    assert_int_equal(eb_prune_group_shrink(x, two, 2, 0.1), 1);
    assert_true(x[0] == 0.0f && x[1] == 0.0f && !signbit(x[0]));
    /* t = 0 leaves a group alone */
    x[0] = -1.5f;
    x[1] = 2.0f;
    assert_int_equal(eb_prune_group_shrink(x, two, 2, 0.0), 0);
    assert_true(x[0] == -1.5f && x[1] == 2.0f);
    /* scattered indices: (1, 2, 2) at positions 0, 2, 4 has norm 3, |g| =
     * 3; t = 1/sqrt(3) gives threshold 1, factor 2/3; positions 1 and 3
     * are not in the group and keep their values */
    x[0] = 1.0f;
    x[1] = 9.0f;
    x[2] = -2.0f;
    x[3] = 9.0f;
    x[4] = 2.0f;
    assert_int_equal(eb_prune_group_shrink(x, three, 3, 1.0 / sqrt(3.0)), 0);
    assert_float_equal(x[0], 2.0f / 3.0f, 1e-6f);
    assert_float_equal(x[2], -4.0f / 3.0f, 1e-6f);
    assert_float_equal(x[4], 4.0f / 3.0f, 1e-6f);
    assert_true(x[1] == 9.0f && x[3] == 9.0f);
}

/* Every group is exactly the set of parameters eb_prune_units_zero
 * zeroes when that one unit is removed (the existing reference of what a
 * unit owns), for a conv net and a deeper mlp. */
static void test_groups_are_units(void **state)
{
    const char *archs[] = {
        "input 8x8x2; conv2d 3; relu; maxpool; conv2d 4; relu; flatten; dense 5; relu; dense 3",
        "input 4x4x1; flatten; dense 6; relu; dense 5; relu; dense 3",
        "input 2x1x1; flatten; dense 3; relu; dense 2; relu; dense 2"};
    eb_error err;
    (void)state;
    for (size_t a = 0; a < 3; a++) {
        eb_arch arch;
        eb_prune_groups g;
        size_t total, gi = 0, offs[EB_ARCH_MAX_LAYERS + 1];
        float *ones;
        uint8_t keep[32];
        int last = -1;
        assert_int_equal(eb_arch_parse(archs[a], &arch, &err), EB_OK);
        assert_int_equal(eb_prune_groups_init(&g, &arch, &err), EB_OK);
        total = eb_prune_units_total(&arch, offs);
        for (int l = 0; l < arch.n_layers; l++)
            if (arch.layers[l].kind == EB_LAYER_DENSE || arch.layers[l].kind == EB_LAYER_CONV2D)
                last = l;
        assert_int_equal(g.n, total - (size_t)arch.layers[last].units);
        ones = malloc(arch.n_params * sizeof *ones);
        for (int l = 0; l < last; l++) {
            if (arch.layers[l].kind != EB_LAYER_DENSE && arch.layers[l].kind != EB_LAYER_CONV2D)
                continue;
            for (size_t u = 0; u < (size_t)arch.layers[l].units; u++, gi++) {
                size_t zeroed = 0;
                for (size_t i = 0; i < arch.n_params; i++)
                    ones[i] = 1.0f;
                memset(keep, 1, total);
                keep[offs[l] + u] = 0;
                eb_prune_units_zero(&arch, keep, ones);
                for (size_t i = 0; i < arch.n_params; i++)
                    zeroed += ones[i] == 0.0f;
                assert_int_equal(g.start[gi + 1] - g.start[gi], zeroed);
                for (size_t j = g.start[gi]; j < g.start[gi + 1]; j++)
                    assert_true(ones[g.index[j]] == 0.0f);
            }
        }
        assert_int_equal(gi, g.n);
        /* the hand-worked one: 2 -> 3 -> 2 -> 2; a unit of the first hidden
         * layer has 2 inputs + 1 bias + 2 outgoing = 5, of the second
         * 3 + 1 + 2 = 6 */
        if (a == 2) {
            /* layout: W1 (3x2) 0..5, b1 6..8, W2 (2x3) 9..14: unit 1 is W1 row
             * 1 {2, 3}, b1[1] = 7, W2[0][1] = 10, W2[1][1] = 13 */
            const uint32_t unit1[] = {2, 3, 7, 10, 13};
            assert_int_equal(g.n, 5);
            assert_int_equal(g.start[1], 5);
            assert_int_equal(g.start[5], 3 * 5 + 2 * 6);
            for (size_t j = 0; j < 5; j++)
                assert_int_equal(g.index[g.start[1] + j], unit1[j]);
        }
        free(ones);
        eb_prune_groups_free(&g);
        eb_prune_groups_free(&g); /* safe twice */
    }
}

/* The penalty's gradient against central differences (every coordinate,
 * all groups away from 0; the sum is computed in double, h = 1e-3, so the
 * difference quotient's own error is O(h^2) ~ 1e-6 relative). */
static void test_penalty_gradient(void **state)
{
    const char *archs[] = {
        "input 4x4x2; conv2d 3; relu; flatten; dense 4; relu; dense 3",
        "input 3x1x1; flatten; dense 4; relu; dense 3; relu; dense 2"};
    const double lambda = 0.7, h = 1e-3;
    eb_error err;
    (void)state;
    for (size_t a = 0; a < 2; a++) {
        eb_arch arch;
        eb_prune_groups g;
        float *theta, *grad;
        double max_err = 0.0;
        assert_int_equal(eb_arch_parse(archs[a], &arch, &err), EB_OK);
        assert_int_equal(eb_prune_groups_init(&g, &arch, &err), EB_OK);
        theta = malloc(arch.n_params * sizeof *theta);
        grad = calloc(arch.n_params, sizeof *grad);
        fill_normal(theta, arch.n_params, 3 + a, 0.5f);
        (void)eb_prune_group_lasso(&g, theta, lambda, grad);
        for (size_t i = 0; i < arch.n_params; i++) {
            const float keep = theta[i];
            double up, down, fd;
            theta[i] = (float)(keep + h);
            up = eb_prune_group_lasso(&g, theta, lambda, NULL);
            theta[i] = (float)(keep - h);
            down = eb_prune_group_lasso(&g, theta, lambda, NULL);
            theta[i] = keep;
            /* the perturbation as float actually applied */
            fd = (up - down) / ((double)(float)(keep + h) - (double)(float)(keep - h));
            max_err = fmax(max_err, fabs(fd - grad[i]) / fmax(1.0, fabs(fd)));
        }
        printf("group lasso gradient, arch %zu: %zu parameters, max relative error %.3g\n", a,
               arch.n_params, max_err);
        assert_true(max_err < 1e-4);
        free(theta);
        free(grad);
        eb_prune_groups_free(&g);
    }
}

/* With one hidden layer the groups are disjoint, and then one proximal
 * step of a group away from its threshold is exactly a gradient step of
 * the penalty: x - t sqrt(n) x / ||x|| = (1 - t sqrt(n) / ||x||) x. The
 * naive reference (eb_prune_group_lasso's gradient) and the operator
 * agree; a group already at 0 stays there. */
static void test_prox_is_gradient_step(void **state)
{
    const size_t K = net.n_params;
    const double t = 0.01;
    eb_prune_groups g;
    eb_error err;
    float *a = malloc(K * sizeof *a), *b = malloc(K * sizeof *b), *grad = calloc(K, sizeof *grad);
    double max_err = 0.0;
    (void)state;
    assert_int_equal(eb_prune_groups_init(&g, &net, &err), EB_OK);
    assert_int_equal(g.n, HIDDEN);
    fill_normal(a, K, 9, 0.5f);
    for (size_t j = g.start[3]; j < g.start[4]; j++) /* unit 3 at exactly 0 */
        a[g.index[j]] = 0.0f;
    memcpy(b, a, K * sizeof *b);
    (void)eb_prune_group_lasso(&g, a, 1.0, grad);
    assert_int_equal(eb_prune_group_prox(&g, a, t), 1);
    for (size_t i = 0; i < K; i++)
        max_err = fmax(max_err, fabs((double)a[i] - ((double)b[i] - t * grad[i])));
    printf("prox vs gradient step: max |difference| %.3g\n", max_err);
    assert_true(max_err < 1e-6);
    assert_int_equal(eb_prune_groups_zero(&g, a), 1);
    eb_prune_groups_free(&g);
    free(a);
    free(b);
    free(grad);
}

/* ---- the transform ------------------------------------------------------ */

#define GL_SETS "structure=units group_lasso=0.5 gl_epochs=20 lr=0.003 batch=32 weight_decay=0"

/* max |logit difference| between two networks on the training images */
static double max_logit_diff(const eb_arch *a, const float *ta, const eb_arch *b, const float *tb)
{
    const int n = 64;
    eb_net *na, *nb;
    const float *la, *lb;
    eb_error err;
    double m = 0.0;
    assert_int_equal(eb_net_new(a, n, &na, &err), EB_OK);
    assert_int_equal(eb_net_new(b, n, &nb, &err), EB_OK);
    la = eb_net_forward(na, ta, train_set.x, n, NULL);
    lb = eb_net_forward(nb, tb, train_set.x, n, NULL);
    for (int i = 0; i < n * CLASSES; i++)
        m = fmax(m, fabs((double)la[i] - lb[i]));
    eb_net_free(na);
    eb_net_free(nb);
    return m;
}

static void test_zeroes_redundant_unit(void **state)
{
    const eb_posterior p = samples_posterior(&net, parent, 1);
    const eb_layer *h = &net.layers[1];
    eb_trained full, small, l2;
    eb_error err;
    char buf[128];
    double zero_groups, diff;
    uint8_t keep[HIDDEN + CLASSES];
    float min_norm = INFINITY;
    (void)state;
    /* the plain L2 ranking would not pick unit 0: some unit has a smaller
     * incoming norm */
    for (size_t u = 1; u < HIDDEN; u++) {
        double sq = 0.0;
        for (size_t j = 0; j < SIDE * SIDE; j++)
            sq += (double)parent[h->param_offset + u * 16 + j] * parent[h->param_offset + u * 16 + j];
        min_norm = fminf(min_norm, (float)sqrt(sq));
    }
    printf("dead unit's incoming norm 1.41, smallest other %.3f\n", (double)min_norm);
    assert_true(min_norm < 1.41f);
    assert_int_equal(eb_prune_units_select(&net, parent, 1, 1.0 / HIDDEN, keep, &err), EB_OK);
    assert_int_equal(keep[0], 1);
    assert_int_equal(run_prune(&p, "structure=units sparsity=0.0625 finetune_epochs=0", 1, &l2,
                               &err), EB_OK);
    assert_int_equal(l2.arch.layers[1].units, HIDDEN - 1);

    /* group lasso, nothing removed: the trained full network */
    assert_int_equal(run_prune(&p, GL_SETS " sparsity=0 finetune_epochs=0", 1, &full, &err),
                     EB_OK);
    assert_int_equal(full.arch.n_params, net.n_params);
    assert_non_null(eb_trained_meta_get(&full, "prune.gl_zero_groups", buf, sizeof buf));
    zero_groups = atof(buf);
    printf("group lasso 0.5: %s of %d groups at exactly 0\n", buf, HIDDEN);
    assert_true(zero_groups >= 1.0 && zero_groups < HIDDEN);
    assert_non_null(eb_trained_meta_get(&full, "prune.layer2.gl_zero_groups", buf, sizeof buf));
    assert_true(atof(buf) == zero_groups);
    assert_null(eb_trained_meta_get(&full, "prune.layer4.gl_zero_groups", buf, sizeof buf));
    assert_non_null(eb_trained_meta_get(&full, "prune.gl_groups", buf, sizeof buf));
    assert_string_equal(buf, "16");
    assert_non_null(eb_trained_meta_get(&full, "prune.group_lasso", buf, sizeof buf));
    assert_string_equal(buf, "0.5");
    assert_non_null(eb_trained_meta_get(&full, "prune.gl_epochs", buf, sizeof buf));
    assert_string_equal(buf, "20");
    assert_non_null(eb_trained_meta_get(&full, "prune.gl_penalty", buf, sizeof buf));
    assert_non_null(eb_trained_meta_get(&full, "prune.gl_loss", buf, sizeof buf));
    /* the dead unit is among them: its whole group is 0 */
    for (size_t j = 0; j < SIDE * SIDE; j++)
        assert_true(full.params[h->param_offset + j] == 0.0f);
    assert_true(full.params[h->param_offset + h->n_weights] == 0.0f);
    for (size_t c = 0; c < CLASSES; c++)
        assert_true(full.params[net.layers[3].param_offset + c * HIDDEN] == 0.0f);

    /* removing as many units as there are zero groups removes exactly
     * those: the smaller network computes what the full one does */
    snprintf(buf, sizeof buf, GL_SETS " sparsity=%.9g finetune_epochs=0",
             zero_groups / HIDDEN);
    assert_int_equal(run_prune(&p, buf, 1, &small, &err), EB_OK);
    assert_int_equal(small.arch.layers[1].units, HIDDEN - (int)zero_groups);
    assert_true(small.arch.n_params < net.n_params);
    diff = max_logit_diff(&net, full.params, &small.arch, small.params);
    printf("%d -> %d hidden units, %zu -> %zu parameters, max |logit difference| %.3g\n", HIDDEN,
           small.arch.layers[1].units, net.n_params, small.arch.n_params, diff);
    assert_true(diff < 1e-5);
    eb_trained_free(&full);
    eb_trained_free(&small);
    eb_trained_free(&l2);
}

static void test_deterministic(void **state)
{
    const size_t K = net.n_params;
    float *two = malloc(2 * K * sizeof *two);
    eb_posterior p;
    eb_trained a, b;
    eb_error err;
    const char *sets = "structure=units sparsity=0.25 group_lasso=0.2 gl_epochs=3 "
                       "finetune_epochs=1 batch=64";
    (void)state;
    memcpy(two, parent, K * sizeof *two);
    fill_normal(two + K, K, 51, 0.3f);
    p = samples_posterior(&net, two, 2);
    assert_int_equal(run_prune(&p, sets, 2, &a, &err), EB_OK);
    assert_int_equal(run_prune(&p, sets, 2, &b, &err), EB_OK);
    assert_int_equal(a.rows, 2);
    assert_int_equal(a.arch.n_params, b.arch.n_params);
    assert_memory_equal(a.params, b.params, 2 * a.arch.n_params * sizeof(float));
    assert_int_equal(a.meta_len, b.meta_len);
    assert_memory_equal(a.meta, b.meta, a.meta_len);
    eb_trained_free(&a);
    eb_trained_free(&b);
    free(two);
}

static void test_invalid(void **state)
{
    eb_posterior p = samples_posterior(&net, parent, 1), g;
    eb_trained out;
    eb_error err;
    eb_settings s;
    float sigma[1];
    (void)state;
    assert_int_equal(run_prune(&p, "structure=units group_lasso=-0.1", 1, &out, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "group_lasso"));
    assert_non_null(strstr(err.msg, "-0.1"));
    assert_int_equal(run_prune(&p, "group_lasso=0.1", 1, &out, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "group_lasso=0.1"));
    assert_non_null(strstr(err.msg, "structure=units"));
    assert_int_equal(run_prune(&p, "structure=units gl_epochs=3", 1, &out, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "gl_epochs=3"));
    assert_non_null(strstr(err.msg, "group_lasso=0"));
    assert_int_equal(run_prune(&p, "structure=units group_lasso=0.1 gl_epochs=0", 1, &out, &err),
                     EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "gl_epochs"));
    g = p;
    g.repr = EB_REPR_GAUSSIAN;
    sigma[0] = 0.0f;
    g.sigma = sigma; /* never read: refused first */
    assert_int_equal(run_prune(&g, "structure=units group_lasso=0.1", 1, &out, &err),
                     EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "gaussian"));
    /* without training data, even with finetune_epochs=0 */
    assert_int_equal(eb_settings_init(&s, eb_transform_prune.settings, &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "structure=units", &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "group_lasso=0.1", &err), EB_OK);
    assert_int_equal(eb_settings_assign(&s, "finetune_epochs=0", &err), EB_OK);
    {
        eb_transform_request req;
        memset(&req, 0, sizeof req);
        req.posterior = &p;
        req.settings = &s;
        assert_int_equal(eb_transform_prune.apply(&req, &out, &err), EB_ERR_ARG);
        assert_non_null(strstr(err.msg, "training data"));
        assert_non_null(strstr(err.msg, "group_lasso"));
    }
}

/* Every allocation of a group-lasso run, failed in turn: a clean
 * EB_ERR_NOMEM (or success once past the last one), nothing leaked (the
 * sanitizer build checks). */
static void test_alloc_failures(void **state)
{
    const eb_posterior p = samples_posterior(&net, parent, 1);
    const char *sets = "structure=units sparsity=0.25 group_lasso=0.2 gl_epochs=1 "
                       "finetune_epochs=1 batch=300";
    eb_trained out;
    eb_error err;
    long n;
    int failures = 0;
    eb_status st = EB_ERR_NOMEM;
    (void)state;
    for (n = 1; n < 500 && st == EB_ERR_NOMEM; n++) {
        eb_settings s;
        eb_transform_request req;
        /* the settings first, unfailed */
        assert_int_equal(eb_settings_init(&s, eb_transform_prune.settings, &err), EB_OK);
        assert_int_equal(eb_settings_assign_list(&s, sets, &err), EB_OK);
        memset(&req, 0, sizeof req);
        req.posterior = &p;
        req.train = &train_set;
        req.settings = &s;
        req.seed = 17;
        req.threads = 1;
        eb_alloc_fail_at(n);
        st = eb_transform_prune.apply(&req, &out, &err);
        eb_alloc_fail_at(0);
        if (st == EB_ERR_NOMEM) {
            failures++;
            assert_true(strlen(err.msg) > 0);
        }
    }
    printf("allocation failures injected: %d, then success\n", failures);
    assert_int_equal(st, EB_OK);
    assert_true(failures >= 3);
    eb_trained_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shrink_closed_form),
        cmocka_unit_test(test_groups_are_units),
        cmocka_unit_test(test_penalty_gradient),
        cmocka_unit_test(test_prox_is_gradient_step),
        cmocka_unit_test(test_zeroes_redundant_unit),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
