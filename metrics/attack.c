/* attack.c: L-infinity adversarial attacks on [0, 1] inputs, FGSM and
 * PGD, through a gradient callback (eb_grad_fn), so the metrics module
 * stays free of devices and I/O. Conventions: docs/metrics.md
 * ("Adversarial attacks"). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_rng.h"
#include "metrics/eb_metrics.h"

/* PGD's random start draws from EB_STREAM_ATTACK (methods/nn/eb_rng.h). */
#define EB_STREAM_ATTACK_START EB_STREAM_ATTACK

static float sign_of(float g)
{
    return g > 0.0f ? 1.0f : g < 0.0f ? -1.0f : 0.0f;
}

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Checks shared by both attacks; *count gets n * d. */
static eb_status check_attack(const char *what, float *x_adv, const float *x, const uint8_t *y,
                              size_t n, size_t d, float eps, eb_grad_fn grad, size_t *count,
                              eb_error *err)
{
    if (!(eps >= 0.0f) || isinf(eps))
        return eb_error_set(err, EB_ERR_ARG, "%s: epsilon %g must be finite and >= 0", what,
                            (double)eps);
    if (eb_size_mul(n, d, count) || *count > SIZE_MAX / sizeof(float))
        return eb_error_set(err, EB_ERR_ARG, "%s: %zu inputs of %zu values overflow", what, n, d);
    if (*count && (!x_adv || !x || !y || !grad))
        return eb_error_set(err, EB_ERR_ARG,
                            "%s: x_adv, x, y and the gradient callback are required", what);
    for (size_t i = 0; i < *count; i++)
        if (!(x[i] >= 0.0f && x[i] <= 1.0f))
            return eb_error_set(err, EB_ERR_ARG,
                                "%s: input %zu value %zu is %g, outside [0, 1]", what, i / d,
                                i % d, (double)x[i]);
    return EB_OK;
}

/* Calls the gradient (and the predictive pbar when not NULL) and rejects
 * NaN in it. */
static eb_status gradient_pbar(const char *what, eb_grad_fn grad, void *ctx, const float *x,
                               const uint8_t *y, size_t n, size_t d, float *dx, float *pbar,
                               eb_error *err)
{
    eb_status st = grad(ctx, x, y, n, dx, pbar, err);
    if (st)
        return eb_error_prefix(err, "%s: gradient callback: ", what);
    for (size_t i = 0; i < n * d; i++)
        if (isnan(dx[i]))
            return eb_error_set(err, EB_ERR_NUMERIC, "%s: gradient of input %zu value %zu is NaN",
                                what, i / d, i % d);
    return EB_OK;
}

static eb_status gradient(const char *what, eb_grad_fn grad, void *ctx, const float *x,
                          const uint8_t *y, size_t n, size_t d, float *dx, eb_error *err)
{
    return gradient_pbar(what, grad, ctx, x, y, n, d, dx, NULL, err);
}

/* keep_best: a candidate's strength: +inf when misclassified (first
 * maximum of pbar is not y), else -log pbar_y. */
static double strength(const float *pbar, uint8_t y, int C)
{
    int best = 0;
    for (int c = 1; c < C; c++)
        if (pbar[c] > pbar[best])
            best = c;
    if (best != y)
        return INFINITY;
    return -log(pbar[y] > 1e-12f ? (double)pbar[y] : 1e-12);
}

/* Keeps rows of cand (n, d) that are stronger than the best so far. */
static void keep_stronger(float *best, double *best_s, const float *cand, const float *pbar,
                          const uint8_t *y, size_t n, size_t d, int C)
{
    for (size_t i = 0; i < n; i++) {
        double s = strength(pbar + i * (size_t)C, y[i], C);
        if (s > best_s[i]) { /* +inf never replaces +inf: the first misclassified stays */
            best_s[i] = s;
            memcpy(best + i * d, cand + i * d, d * sizeof *best);
        }
    }
}

eb_status eb_attack_fgsm(float *x_adv, const float *x, const uint8_t *y, size_t n, size_t d,
                         float eps, eb_grad_fn grad, void *ctx, eb_error *err)
{
    size_t count;
    float *dx;
    eb_status st = check_attack("FGSM", x_adv, x, y, n, d, eps, grad, &count, err);

    if (st)
        return st;
    if (count == 0)
        return EB_OK;
    if (eps == 0.0f) {
        if (x_adv != x)
            memcpy(x_adv, x, count * sizeof *x);
        return EB_OK;
    }
    dx = eb_malloc(count * sizeof *dx);
    if (!dx)
        return eb_error_set(err, EB_ERR_NOMEM, "FGSM: out of memory for a %zu x %zu gradient", n,
                            d);
    st = gradient("FGSM", grad, ctx, x, y, n, d, dx, err);
    if (!st)
        for (size_t i = 0; i < count; i++)
            x_adv[i] = clampf(x[i] + eps * sign_of(dx[i]), 0.0f, 1.0f);
    eb_free(dx);
    return st;
}

eb_status eb_attack_pgd(float *x_adv, const float *x, const uint8_t *y, size_t n, size_t d,
                        const eb_pgd_config *cfg, eb_grad_fn grad, void *ctx, eb_error *err)
{
    size_t count;
    float *dx, step;
    eb_status st;

    if (!cfg)
        return eb_error_set(err, EB_ERR_ARG, "PGD: the configuration is required");
    st = check_attack("PGD", x_adv, x, y, n, d, cfg->eps, grad, &count, err);
    if (st)
        return st;
    if (cfg->steps < 1)
        return eb_error_set(err, EB_ERR_ARG, "PGD: steps %d must be >= 1", cfg->steps);
    if (!(cfg->step >= 0.0f) || isinf(cfg->step))
        return eb_error_set(err, EB_ERR_ARG, "PGD: step size %g must be finite and >= 0",
                            (double)cfg->step);
    if (count == 0)
        return EB_OK;
    if (x_adv == x)
        return eb_error_set(err, EB_ERR_ARG,
                            "PGD: x_adv must not be x (the clean input bounds every step)");
    if (cfg->eps == 0.0f) {
        memcpy(x_adv, x, count * sizeof *x);
        return EB_OK;
    }
    step = cfg->step > 0.0f ? cfg->step : 2.5f * cfg->eps / (float)cfg->steps;

    /* Start: x, or x + U[-eps, eps) keyed per example, inside the box. */
    for (size_t i = 0; i < n; i++) {
        eb_rng r;
        if (cfg->random_start)
            eb_rng_seed(&r, eb_rng_mix64(cfg->seed) ^ (cfg->first_example + i),
                        EB_STREAM_ATTACK_START);
        for (size_t j = 0; j < d; j++) {
            size_t k = i * d + j;
            float lo = fmaxf(x[k] - cfg->eps, 0.0f), hi = fminf(x[k] + cfg->eps, 1.0f), v = x[k];
            if (cfg->random_start)
                v += cfg->eps * (2.0f * eb_rng_uniformf(&r) - 1.0f);
            x_adv[k] = clampf(v, lo, hi);
        }
    }
    dx = eb_malloc(count * sizeof *dx);
    if (!dx)
        return eb_error_set(err, EB_ERR_NOMEM, "PGD: out of memory for a %zu x %zu gradient", n,
                            d);
    if (cfg->keep_best) {
        const int C = cfg->n_classes;
        float *best = NULL, *pbar = NULL, *fg = NULL;
        double *best_s = NULL;
        if (C < 2) {
            eb_free(dx);
            return eb_error_set(err, EB_ERR_ARG, "PGD: keep_best needs n_classes >= 2 (got %d)",
                                C);
        }
        best = eb_malloc(count * sizeof *best);
        pbar = eb_malloc(n * (size_t)C * sizeof *pbar);
        best_s = eb_malloc(n * sizeof *best_s);
        fg = cfg->fgsm_candidate ? eb_malloc(count * sizeof *fg) : NULL;
        if (!best || !pbar || !best_s || (cfg->fgsm_candidate && !fg)) {
            eb_free(best);
            eb_free(pbar);
            eb_free(best_s);
            eb_free(fg);
            eb_free(dx);
            return eb_error_set(err, EB_ERR_NOMEM, "PGD: out of memory for the strongest "
                                                   "candidates of %zu inputs", n);
        }
        for (size_t i = 0; i < n; i++)
            best_s[i] = -INFINITY;
        if (cfg->fgsm_candidate) {
            /* the FGSM point, and its strength */
            st = gradient("PGD's FGSM candidate", grad, ctx, x, y, n, d, dx, err);
            if (!st) {
                for (size_t k = 0; k < count; k++)
                    fg[k] = clampf(x[k] + cfg->eps * sign_of(dx[k]), 0.0f, 1.0f);
                st = gradient_pbar("PGD's FGSM candidate", grad, ctx, fg, y, n, d, dx, pbar, err);
            }
            if (!st)
                keep_stronger(best, best_s, fg, pbar, y, n, d, C);
        }
        for (int t = 0; t <= cfg->steps && !st; t++) {
            char what[48];
            snprintf(what, sizeof what, "PGD step %d of %d", t + 1, cfg->steps);
            st = gradient_pbar(what, grad, ctx, x_adv, y, n, d, dx, pbar, err);
            if (st)
                break;
            keep_stronger(best, best_s, x_adv, pbar, y, n, d, C);
            if (t == cfg->steps)
                break; /* the final point is evaluated, not moved */
            for (size_t k = 0; k < count; k++) {
                float lo = fmaxf(x[k] - cfg->eps, 0.0f), hi = fminf(x[k] + cfg->eps, 1.0f);
                x_adv[k] = clampf(x_adv[k] + step * sign_of(dx[k]), lo, hi);
            }
        }
        if (!st)
            memcpy(x_adv, best, count * sizeof *x_adv);
        eb_free(best);
        eb_free(pbar);
        eb_free(best_s);
        eb_free(fg);
        eb_free(dx);
        return st;
    }
    for (int t = 0; t < cfg->steps && !st; t++) {
        char what[48];
        snprintf(what, sizeof what, "PGD step %d of %d", t + 1, cfg->steps);
        st = gradient(what, grad, ctx, x_adv, y, n, d, dx, err);
        if (!st)
            for (size_t k = 0; k < count; k++) {
                /* proj_eps then clip to [0, 1]: one clamp to the
                 * intersection of the two boxes */
                float lo = fmaxf(x[k] - cfg->eps, 0.0f), hi = fminf(x[k] + cfg->eps, 1.0f);
                x_adv[k] = clampf(x_adv[k] + step * sign_of(dx[k]), lo, hi);
            }
    }
    eb_free(dx);
    return st;
}
