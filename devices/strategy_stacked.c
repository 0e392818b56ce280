/* strategy_stacked.c: `stacked` for f32 samples posteriors: all S members
 * of a prediction in one pass, the members split into contiguous runs
 * over the threads, each thread carrying its members through every layer
 * while their weights stream past once.
 *
 * Why it beats `loop` for one input: a single-input prediction reads
 * every weight once and does two flops with it, so it is bound by memory
 * bandwidth. `loop` runs member after member, each layer a separate
 * OpenBLAS call that splits a small matrix-vector product over the
 * threads and synchronises them, layer after layer; here each thread
 * streams whole members with no synchronisation until the end, and dense
 * layers go through eb_kern_dense_gemv (one read of each weight row per
 * input). Inputs are taken CHUNK at a time, member by member, so within a
 * chunk a member's weights come from cache after the first input, and the
 * per-thread workspace stays small. Dense layers use the GEMV kernel for
 * every batch size, so an input's probabilities do not depend on the
 * batch it came in (the same bytes one at a time or all at once).
 * Convolutions run one thread each, the threads over members: on AVX-512
 * through the direct kernel (eb_kern_conv2d_infer), which meanwhile
 * prefetches the next layer's weights into L2, so the dense layer after
 * the last convolution reads them from cache rather than memory;
 * elsewhere through im2col and OpenBLAS sgemm.
 *
 * A member's arithmetic does not depend on which thread runs it or on
 * the thread count, so the bytes are the same for any thread count.
 * Dropout layers are the identity (a samples posterior has no masks). */
#include <string.h>

#include "common/eb_alloc.h"
#include "devices/strategy.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/nn_kernels.h"

#define CHUNK 16 /* inputs per pass over the members */

typedef struct thread_ws {
    float *a, *b;     /* (CHUNK, max_act) ping-pong activations */
    float *cols;      /* eb_kern_conv2d_infer scratch (CHUNK inputs) */
    int32_t *argmax;  /* (CHUNK, max_act) max-pool choices */
    float *probs;     /* (CHUNK, C) one member's probabilities */
} thread_ws;

typedef struct stacked {
    const eb_posterior *p;
    int max_batch;
    uint32_t max_draws;
    size_t act_len, cols_len; /* floats per buffer */
    int n_ws;                 /* workspaces allocated (grown to the thread count) */
    thread_ws ws[EB_STRATEGY_MAX_THREADS];
    size_t bytes;
} stacked;

static int has_conv(const eb_arch *a)
{
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].kind == EB_LAYER_CONV2D)
            return 1;
    return 0;
}

static eb_status stacked_supports(const eb_posterior *p, eb_error *err)
{
    if (p->repr != EB_REPR_SAMPLES)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "stacked (f32) runs samples posteriors, not %s", eb_repr_name(p->repr));
    if (!p->params)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "stacked (f32) needs f32 weights; these are stored as %s",
                            eb_storage_name(p->stored.kind ? p->stored.kind : p->storage));
    return EB_OK;
}

static eb_status stacked_create(const eb_posterior *p, int max_batch, uint32_t max_draws,
                                void **state, eb_error *err)
{
    const eb_arch *a = &p->arch;
    stacked *st = eb_calloc(1, sizeof *st);
    if (!st)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the stacked strategy");
    st->p = p;
    st->max_batch = max_batch;
    st->max_draws = max_draws;
    st->act_len = (size_t)CHUNK * (a->max_act > a->in_size ? a->max_act : a->in_size);
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        if (L->kind == EB_LAYER_CONV2D) {
            size_t len = eb_kern_conv2d_infer_scratch(CHUNK, L->in_h, L->in_w, L->in_c, L->units);
            if (len > st->cols_len)
                st->cols_len = len;
        }
    }
    *state = st;
    return EB_OK;
}

static void free_ws(thread_ws *w)
{
    eb_free_aligned(w->a);
    eb_free_aligned(w->b);
    eb_free_aligned(w->cols);
    eb_free(w->argmax);
    eb_free(w->probs);
    memset(w, 0, sizeof *w);
}

/* Workspaces for T threads, allocated at the first call that needs them
 * (never inside the timed parallel region of later calls). */
static eb_status grow_ws(stacked *st, int T, eb_error *err)
{
    const size_t C = (size_t)st->p->arch.n_classes;
    while (st->n_ws < T) {
        thread_ws *w = &st->ws[st->n_ws];
        w->a = eb_malloc_aligned(64, st->act_len * sizeof(float));
        w->b = eb_malloc_aligned(64, st->act_len * sizeof(float));
        w->cols = st->cols_len ? eb_malloc_aligned(64, st->cols_len * sizeof(float)) : NULL;
        w->argmax = eb_malloc(st->act_len * sizeof(int32_t));
        w->probs = eb_malloc((size_t)CHUNK * C * sizeof(float));
        if (!w->a || !w->b || (st->cols_len && !w->cols) || !w->argmax || !w->probs) {
            free_ws(w);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "out of memory for the stacked strategy's thread workspaces");
        }
        st->bytes += (3 * st->act_len + st->cols_len) * sizeof(float) + CHUNK * C * sizeof(float);
        st->n_ws++;
    }
    return EB_OK;
}

/* The weights of the first layer after i that has any (for a
 * convolution to prefetch while it computes), and their bytes; none when
 * they would not fit beside the convolution's own in half of a 2 MiB L2. */
#define PREFETCH_MAX ((size_t)1 << 20)
static const float *next_weights(const eb_arch *a, const float *theta, int i, size_t *bytes)
{
    *bytes = 0;
    for (int j = i + 1; j < a->n_layers; j++) {
        const eb_layer *L = &a->layers[j];
        if (L->kind != EB_LAYER_DENSE && L->kind != EB_LAYER_CONV2D)
            continue;
        if (L->n_weights * sizeof(float) > PREFETCH_MAX)
            return NULL;
        *bytes = L->n_weights * sizeof(float);
        return theta + L->param_offset;
    }
    return NULL;
}

/* The logits (nb, C) of one member over nb <= CHUNK inputs x; returns
 * the buffer holding them (w->a or w->b). */
static const float *member_forward(const eb_arch *a, const float *theta, const float *x, int nb,
                                   thread_ws *w)
{
    const float *in = x;
    float *bufs[2] = {w->a, w->b};
    int next = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const float *wt = theta + L->param_offset;
        const float *bias = wt + L->n_weights;
        float *o = bufs[next];
        switch (L->kind) {
        case EB_LAYER_DENSE:
            for (int r = 0; r < nb; r++)
                eb_kern_dense_gemv(o + (size_t)r * L->out_size, in + (size_t)r * L->in_size, wt,
                                   bias, (int)L->in_size, L->units);
            break;
        case EB_LAYER_CONV2D: {
            size_t pf_bytes;
            const float *pf = next_weights(a, theta, i, &pf_bytes);
            eb_kern_conv2d_infer(o, w->cols, in, wt, bias, nb, L->in_h, L->in_w, L->in_c,
                                 L->units, pf, pf_bytes);
            break;
        }
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_forward(o, w->argmax, in, nb, L->in_h, L->in_w, L->in_c);
            break;
        case EB_LAYER_RELU:
            eb_kern_relu_forward(o, in, (size_t)nb * L->out_size);
            break;
        case EB_LAYER_DROPOUT: /* identity: no masks for a samples posterior */
        case EB_LAYER_FLATTEN:
            continue; /* the same values, the same buffer */
        }
        in = o;
        next ^= 1;
    }
    return in;
}

static const float *stacked_member(void *state, int t, uint32_t s, const float *x, int nb)
{
    stacked *st = state;
    return member_forward(&st->p->arch, st->p->params + (size_t)s * st->p->k, x, nb, &st->ws[t]);
}

static float *stacked_scratch(void *state, int t)
{
    return ((stacked *)state)->ws[t].probs;
}

static eb_status stacked_run(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                             uint64_t first_example, int threads, float *probs, eb_error *err)
{
    stacked *st = state;
    const eb_arch *a = &st->p->arch;
    const eb_members_plan plan = {st, a->in_size, (size_t)a->n_classes, CHUNK, NULL,
                                  stacked_member, stacked_scratch};
    eb_status rc;
    int T, blas;
    (void)seed;
    (void)first_example; /* members are fixed: nothing is drawn */

    if ((rc = eb_strategy_threads(S, st->max_draws, threads, &T, err)) ||
        (rc = grow_ws(st, T, err)))
        return rc;
    /* OpenBLAS runs inside the members' threads only for convolutions;
     * it must not start threads of its own there. */
    blas = (T > 1 && has_conv(a)) ? eb_strategy_blas_serial_begin() : 0;
    eb_strategy_run_members(&plan, x, n, S, T, probs);
    if (blas)
        eb_strategy_blas_serial_end(blas);
    return EB_OK;
}

static size_t stacked_bytes(const void *state)
{
    const stacked *st = state;
    return sizeof *st + st->bytes;
}

static void stacked_destroy(void *state)
{
    stacked *st = state;
    if (!st)
        return;
    for (int t = 0; t < st->n_ws; t++)
        free_ws(&st->ws[t]);
    eb_free(st);
}

const eb_strategy_ops eb_strategy_stacked_f32 = {
    /* .name = */ "stacked",
    /* .summary = */ "all S members in one pass, members split over the threads, each weight "
                     "read once per prediction",
    /* .reproduces_loop = */ 1,
    /* .supports = */ stacked_supports,
    /* .create = */ stacked_create,
    /* .run = */ stacked_run,
    /* .bytes = */ stacked_bytes,
    /* .destroy = */ stacked_destroy,
};
