/* strategy.h: execution strategies of the CPU backend, internal to
 * devices/ and its tests and benchmarks (not API: the public face is the
 * device option `strategy=NAME`, docs/devices.md).
 *
 * A strategy is one way of computing the member probabilities
 * probs (n, S, C) of a posterior, the same numbers eb_predictor_run gives
 * (the `loop` strategy, which is eb_predictor_run itself, member after
 * member, as a standard runtime would): within the tolerance its test
 * states, and bit-identical from one run to the next for the same seed,
 * inputs and S, whatever the thread count. Each is a const table, like a
 * device backend; the registry lists them in order of preference, and
 * several entries may share a name when they cover different posteriors
 * (the f32 and the int8/f16 halves of `stacked`): the first entry of that
 * name whose `supports` accepts the posterior runs it.
 *
 * Threads: a strategy's own parallel loops use the `threads` given to run
 * (the device's thread count, eb_nn_set_threads(0) at the call). A
 * strategy that calls OpenBLAS from inside its parallel loops sets
 * OpenBLAS to one thread around them and restores the count after
 * (eb_strategy_blas_serial_begin/end), so the two pools never nest. */
#ifndef EB_DEVICES_STRATEGY_H
#define EB_DEVICES_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "methods/eb_methods.h"

#define EB_STRATEGY_NAME_MAX 32
/* Threads a strategy may be asked for (the CLI's limit on --threads). */
#define EB_STRATEGY_MAX_THREADS 256

typedef struct eb_strategy_ops {
    const char *name;    /* [a-z0-9-]+, the device option's value */
    const char *summary; /* one line, for listings and docs */
    /* 1: it draws exactly what loop draws (same members, same dropout
     * masks, same weight draws), so its outputs differ from loop's only
     * by floating-point rounding and `auto` may choose it. 0: it samples
     * differently (a different but equal-in-distribution draw, as local
     * reparameterisation does), so only an explicit request runs it. */
    int reproduces_loop;
    /* EB_OK when this entry can run p; otherwise EB_ERR_UNSUPPORTED with a
     * sentence saying why (the posterior's representation, storage or
     * architecture). Must not allocate. */
    eb_status (*supports)(const eb_posterior *p, eb_error *err);
    /* State for p (which outlives it), for batches of up to max_batch
     * inputs and up to max_draws draws (resolved: >= 1). Called only after
     * supports(p) said yes. On failure *state is untouched and nothing is
     * left allocated. */
    eb_status (*create)(const eb_posterior *p, int max_batch, uint32_t max_draws, void **state,
                        eb_error *err);
    /* probs (n, S, C) of inputs x (n, in_size), 1 <= S <= max_draws, any
     * n >= 1 (split internally), draws keyed as eb_predictor_run keys them
     * (seed, draw s, example first_example + i). threads >= 1. */
    eb_status (*run)(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                     uint64_t first_example, int threads, float *probs, eb_error *err);
    /* Bytes the state holds beyond the posterior: workspaces and any
     * derived copy (packed or squared weights). Counted as model memory. */
    size_t (*bytes)(const void *state);
    void (*destroy)(void *state);
} eb_strategy_ops;

/* The registry, in order of preference, terminated by NULL. */
extern const eb_strategy_ops *const eb_strategies[];

/* The names a user may give, "auto" first, each once, terminated by NULL. */
const char *const *eb_strategy_names(void);

/* EB_OK when name is one of eb_strategy_names(); else EB_ERR_ARG,
 * "unknown strategy 'NAME' (known: auto, loop, ...)". */
eb_status eb_strategy_check_name(const char *name, eb_error *err);

/* Picks the entry that runs p for the requested name: "auto" (or "" or
 * NULL) takes the first entry with reproduces_loop that supports p, else
 * loop; any other name takes the first entry of that name supporting p.
 * EB_ERR_ARG for an unknown name (listing the known ones);
 * EB_ERR_UNSUPPORTED when no entry of that name supports p, with each
 * entry's reason. */
eb_status eb_strategy_pick(const char *name, const eb_posterior *p, const eb_strategy_ops **out,
                           eb_error *err);

/* A strategy bound to a posterior: what the CPU backend holds. */
typedef struct eb_strategy_run {
    const eb_strategy_ops *ops;
    void *state;
} eb_strategy_run;

/* pick + create. */
eb_status eb_strategy_open(const char *name, const eb_posterior *p, int max_batch,
                           uint32_t max_draws, eb_strategy_run *out, eb_error *err);
void eb_strategy_close(eb_strategy_run *r);

/* OpenBLAS to one thread for the duration of a strategy's parallel
 * region; end restores the count begin returned. */
int eb_strategy_blas_serial_begin(void);
void eb_strategy_blas_serial_end(int saved);

/* Members [*lo, *hi) of thread t of T when S members are split into T
 * contiguous runs (the static schedule every strategy uses, so a
 * member's arithmetic never depends on the thread count). */
static inline void eb_strategy_split(uint32_t S, int T, int t, uint32_t *lo, uint32_t *hi)
{
    *lo = (uint32_t)(((uint64_t)S * (uint64_t)t) / (uint64_t)T);
    *hi = (uint32_t)(((uint64_t)S * (uint64_t)(t + 1)) / (uint64_t)T);
}

/* The plan the member-parallel strategies (stacked f32 and int8/f16,
 * sparse) share: inputs `chunk` at a time; per chunk, `prepare` (may be
 * NULL) once for work every member shares, then the S members split into
 * contiguous runs over T threads (eb_strategy_split), member s's logits
 * (nb, C) from `member` on thread t, softmaxed into scratch(t) ((chunk, C)
 * floats) and written to probs (n, S, C). */
typedef struct eb_members_plan {
    void *state;
    size_t in_size, C;
    int chunk;
    void (*prepare)(void *state, const float *x, int nb);
    const float *(*member)(void *state, int t, uint32_t s, const float *x, int nb);
    float *(*scratch)(void *state, int t);
} eb_members_plan;
void eb_strategy_run_members(const eb_members_plan *plan, const float *x, size_t n, uint32_t S,
                             int T, float *probs);

/* EB_OK when 1 <= S <= max_draws; else EB_ERR_ARG naming both. */
eb_status eb_strategy_check_draws(uint32_t S, uint32_t max_draws, eb_error *err);

/* threads clamped to [1, EB_STRATEGY_MAX_THREADS]. */
static inline int eb_strategy_clamp_threads(int threads)
{
    return threads < 1 ? 1 : threads > EB_STRATEGY_MAX_THREADS ? EB_STRATEGY_MAX_THREADS : threads;
}

/* eb_strategy_check_draws, and *T = the threads a run of S members uses:
 * eb_strategy_clamp_threads(threads), and at most S. */
eb_status eb_strategy_threads(uint32_t S, uint32_t max_draws, int threads, int *T,
                              eb_error *err);

/* The row-stacked strategies (lrt, prefix) run the S draws of one input
 * as the rows of matrix products, in nblk = ceil(S / max_rows) blocks of
 * bsz = ceil(S / nblk) draws: sizes equal to one draw, fixed by S alone,
 * so a block's products (and their bits) never depend on the threads. */
typedef struct eb_draw_blocks {
    uint32_t S;
    size_t nblk, bsz;
} eb_draw_blocks;

static inline eb_draw_blocks eb_draw_blocks_plan(uint32_t S, size_t max_rows)
{
    eb_draw_blocks b;
    b.S = S;
    b.nblk = (S + max_rows - 1) / max_rows;
    b.bsz = (S + b.nblk - 1) / b.nblk;
    return b;
}

/* Block k of a chunk (k < inputs * nblk): its input *i and first draw
 * *s0; returns its number of draws, 0 when the rounding left it empty. */
static inline size_t eb_draw_block(const eb_draw_blocks *b, size_t k, size_t *i, uint32_t *s0)
{
    *i = k / b->nblk;
    *s0 = (uint32_t)((k % b->nblk) * b->bsz);
    return *s0 >= b->S ? 0 : b->S - *s0 < b->bsz ? b->S - *s0 : b->bsz;
}

/* The registry's entries, defined in devices/strategy_*.c. */
extern const eb_strategy_ops eb_strategy_loop;          /* strategy.c */
extern const eb_strategy_ops eb_strategy_stacked_f32;   /* strategy_stacked.c */
extern const eb_strategy_ops eb_strategy_stacked_q;     /* strategy_stacked_q.c */
extern const eb_strategy_ops eb_strategy_sparse;        /* strategy_sparse.c */
extern const eb_strategy_ops eb_strategy_lrt;           /* strategy_lrt.c */
extern const eb_strategy_ops eb_strategy_prefix;        /* strategy_prefix.c */

/* ---- test hooks (internal) ----------------------------------------- */
/* lrt: the first dense layer's pre-activation mean and variance
 * (units0 each) for one input x (in_size), through the kernels run uses.
 * state is an lrt strategy's (eb_strategy_lrt.create). */
void eb_strategy__lrt_first_moments(void *state, const float *x, float *mean, float *var);

#endif /* EB_DEVICES_STRATEGY_H */
