/* strategy.c: the registry of execution strategies (strategy.h), the
 * choice by name, and `loop`, the baseline every other strategy is
 * measured and tested against: eb_predictor_run, member after member,
 * each member's layers through OpenBLAS with its own threads. */
#include <stdio.h>
#include <string.h>

#include <omp.h>

#include "common/eb_alloc.h"
#include "devices/strategy.h"
#include "methods/nn/eb_nn.h"

/* ---- loop ------------------------------------------------------------ */

static eb_status loop_supports(const eb_posterior *p, eb_error *err)
{
    (void)p;
    (void)err;
    return EB_OK; /* every posterior the predictor takes */
}

static eb_status loop_create(const eb_posterior *p, int max_batch, uint32_t max_draws,
                             void **state, eb_error *err)
{
    eb_predictor *pr;
    eb_status st = eb_predictor_new(p, max_batch, max_draws, &pr, err);
    if (st)
        return st;
    *state = pr;
    return EB_OK;
}

static eb_status loop_run(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                          uint64_t first_example, int threads, float *probs, eb_error *err)
{
    (void)threads; /* OpenBLAS's own, already set by the device */
    return eb_predictor_run(state, x, n, S, seed, first_example, probs, err);
}

static size_t loop_bytes(const void *state)
{
    return eb_predictor_bytes(state);
}

static void loop_destroy(void *state)
{
    eb_predictor_free(state);
}

const eb_strategy_ops eb_strategy_loop = {
    /* .name = */ "loop",
    /* .summary = */ "member after member, each layer through OpenBLAS (the baseline)",
    /* .reproduces_loop = */ 1,
    /* .supports = */ loop_supports,
    /* .create = */ loop_create,
    /* .run = */ loop_run,
    /* .bytes = */ loop_bytes,
    /* .destroy = */ loop_destroy,
};

/* ---- the registry ---------------------------------------------------- */

const eb_strategy_ops *const eb_strategies[] = {
    &eb_strategy_stacked_f32,
    &eb_strategy_stacked_q, /* the same name for int8/f16 samples */
    &eb_strategy_sparse,
    &eb_strategy_prefix,
    &eb_strategy_lrt,
    &eb_strategy_loop, /* last: supports everything */
    NULL,
};

const char *const *eb_strategy_names(void)
{
    static const char *names[16];
    static int done;
    if (!done) {
        size_t n = 0;
        names[n++] = "auto";
        for (size_t i = 0; eb_strategies[i]; i++) {
            size_t j = 0;
            while (j < n && strcmp(names[j], eb_strategies[i]->name))
                j++;
            if (j == n && n + 1 < sizeof names / sizeof names[0])
                names[n++] = eb_strategies[i]->name;
        }
        names[n] = NULL;
        done = 1;
    }
    return names;
}

eb_status eb_strategy_check_name(const char *name, eb_error *err)
{
    const char *const *names = eb_strategy_names();
    char list[256];
    size_t used = 0;
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(names[i], name))
            return EB_OK;
    list[0] = '\0';
    for (size_t i = 0; names[i] && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    return eb_error_set(err, EB_ERR_ARG, "unknown strategy '%s' (known: %s)", name, list);
}

eb_status eb_strategy_pick(const char *name, const eb_posterior *p, const eb_strategy_ops **out,
                           eb_error *err)
{
    char why[512];
    size_t used = 0;
    int known = 0;

    *out = NULL;
    if (!name || !*name || !strcmp(name, "auto")) {
        for (size_t i = 0; eb_strategies[i]; i++)
            if (eb_strategies[i]->reproduces_loop && eb_strategies[i]->supports(p, NULL) == EB_OK) {
                *out = eb_strategies[i];
                return EB_OK;
            }
        *out = &eb_strategy_loop;
        return EB_OK;
    }
    why[0] = '\0';
    for (size_t i = 0; eb_strategies[i]; i++) {
        eb_error e;
        if (strcmp(eb_strategies[i]->name, name))
            continue;
        known = 1;
        eb_error_clear(&e);
        if (eb_strategies[i]->supports(p, &e) == EB_OK) {
            *out = eb_strategies[i];
            return EB_OK;
        }
        if (used < sizeof why)
            used += (size_t)snprintf(why + used, sizeof why - used, "%s%s", used ? "; " : "",
                                     e.msg);
    }
    if (!known)
        return eb_strategy_check_name(name, err);
    return eb_error_set(err, EB_ERR_UNSUPPORTED, "strategy '%s' cannot run this %s posterior: %s",
                        name, eb_repr_name(p->repr), why);
}

eb_status eb_strategy_open(const char *name, const eb_posterior *p, int max_batch,
                           uint32_t max_draws, eb_strategy_run *out, eb_error *err)
{
    const eb_strategy_ops *ops;
    eb_status st;
    memset(out, 0, sizeof *out);
    if ((st = eb_strategy_pick(name, p, &ops, err)))
        return st;
    if ((st = ops->create(p, max_batch, max_draws, &out->state, err)))
        return eb_error_prefix(err, "strategy '%s': ", ops->name);
    out->ops = ops;
    return EB_OK;
}

void eb_strategy_close(eb_strategy_run *r)
{
    if (r && r->ops)
        r->ops->destroy(r->state);
    if (r)
        memset(r, 0, sizeof *r);
}

void eb_strategy_run_members(const eb_members_plan *plan, const float *x, size_t n, uint32_t S,
                             int T, float *probs)
{
    const size_t C = plan->C, chunk = (size_t)plan->chunk;
    for (size_t first = 0; first < n; first += chunk) {
        const int nb = (int)(n - first < chunk ? n - first : chunk);
        const float *xc = x + first * plan->in_size;
        float *pc = probs + first * S * C;
        if (plan->prepare)
            plan->prepare(plan->state, xc, nb);
#pragma omp parallel num_threads(T) if (T > 1)
        {
            const int t = omp_get_thread_num();
            float *scratch = plan->scratch(plan->state, t);
            uint32_t lo, hi;
            eb_strategy_split(S, T, t, &lo, &hi);
            for (uint32_t s = lo; s < hi; s++) {
                eb_softmax(scratch, plan->member(plan->state, t, s, xc, nb), nb, (int)C);
                for (int i = 0; i < nb; i++)
                    memcpy(pc + ((size_t)i * S + s) * C, scratch + (size_t)i * C,
                           C * sizeof(float));
            }
        }
    }
}

eb_status eb_strategy_check_draws(uint32_t S, uint32_t max_draws, eb_error *err)
{
    if (S == 0 || S > max_draws)
        return eb_error_set(err, EB_ERR_ARG, "asked for %u draws; this predictor allows 1 to %u",
                            S, max_draws);
    return EB_OK;
}

eb_status eb_strategy_threads(uint32_t S, uint32_t max_draws, int threads, int *T,
                              eb_error *err)
{
    eb_status st = eb_strategy_check_draws(S, max_draws, err);
    if (st)
        return st;
    *T = eb_strategy_clamp_threads(threads);
    if ((uint32_t)*T > S)
        *T = (int)S;
    return EB_OK;
}

int eb_strategy_blas_serial_begin(void)
{
    int saved = eb_nn_set_threads(0);
    if (saved != 1)
        eb_nn_set_threads(1);
    return saved;
}

void eb_strategy_blas_serial_end(int saved)
{
    if (saved > 1)
        eb_nn_set_threads(saved);
}
