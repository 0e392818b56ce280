/* strategy.c: the registry of execution strategies (strategy.h), the
 * choice by name, and `loop`, the baseline every other strategy is
 * measured and tested against: eb_predictor_run, member after member,
 * each member's layers through OpenBLAS with its own threads. */
#include <stdio.h>
#include <string.h>

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

static void list_names(char *buf, size_t len)
{
    const char *const *names = eb_strategy_names();
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; names[i] && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", names[i]);
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
    if (!known) {
        char names[256];
        list_names(names, sizeof names);
        return eb_error_set(err, EB_ERR_ARG, "unknown strategy '%s' (known: %s)", name, names);
    }
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
