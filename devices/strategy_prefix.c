/* strategy_prefix.c: `prefix`, MC dropout posteriors with the deterministic
 * part computed once. Pass s of loop (eb_predictor_run over eb_net_forward)
 * recomputes every layer for every pass, but the layers before the first
 * dropout layer (rate > 0) see the same input and the same weights in
 * every pass: their output is the same S times. Here they run once per
 * input; from the first dropout on, the S passes of an input are stacked
 * as the rows of one batch (row r = input r / S, pass r % S), each row
 * masked with its own pass's masks, so each later layer is one matrix
 * product over the S rows (weights read once per prediction).
 *
 * The masks are loop's own: row (input i, pass s) at dropout layer l
 * takes eb_kern_dropout_mask with seed mix64(seed ^ EB_STREAM_PREDICT),
 * pass s, example first_example + i and layer l, as eb_net_forward does
 * with the eb_dropout_ctx draw_forward builds. So the outputs equal
 * loop's up to floating-point rounding (reproduces_loop = 1; the test
 * holds them to 1e-5 on the probabilities and prints the largest
 * difference).
 *
 * Threads: the prefix's dense layers split their units over the threads
 * (so one input still uses them all; eb_kern_dense_gemv per input, whose
 * rows' bits do not depend on the split), its other layers split the
 * inputs (one input per kernel call). After it, each input's S passes go
 * in nblk = ceil(S / RB) blocks of equal size, the blocks split over the
 * threads in contiguous runs, each thread carrying a block through the
 * remaining layers with one-thread sgemm calls (convolutions on
 * eb_kern_conv2d_infer, whose scratch stays at RB images). OpenBLAS's sgemm gives a row different
 * bits for different numbers of rows beside it, so every matrix product
 * is over one block, fixed by (input, S): the bytes are the same for any
 * thread count and batch split. */
#include <string.h>

#include <omp.h>

#include "common/eb_alloc.h"
#include "devices/strategy.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/nn_kernels.h"

/* Passes of one matrix product, at most (as in strategy_lrt.c). */
#define RB 32
/* Inputs whose prefix is computed per pass over the batch. */
#define CHUNK 16

typedef struct row_ws {
    float *a, *b;    /* (RB, width) ping-pong */
    float *mask;     /* (RB, width) */
    int32_t *argmax; /* (RB, width) */
    float *cols;     /* (RB * cols_row) */
} row_ws;

typedef struct prefix {
    const eb_posterior *p;
    int max_batch;
    uint32_t max_draws;
    int first_drop;    /* the first dropout layer with rate > 0 */
    size_t chunk_cap;  /* inputs per pass */
    size_t pre_act;    /* widest activation up to the first dropout, per input */
    size_t pre_cols;   /* conv scratch floats per input before the first dropout */
    size_t width;      /* widest activation from the first dropout on, per row */
    size_t cols_row;   /* conv scratch floats per row after it */
    float *pa, *pb;    /* (chunk_cap, pre_act) prefix ping-pong */
    int32_t *pargmax;  /* (chunk_cap, pre_act) */
    float *pcols;      /* (chunk_cap, pre_cols) */
    void *pre_block;
    int n_ws;
    row_ws ws[EB_STRATEGY_MAX_THREADS];
    size_t bytes;
} prefix;

static int first_dropout(const eb_arch *a)
{
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].kind == EB_LAYER_DROPOUT && a->layers[i].rate > 0.0f)
            return i;
    return -1;
}

static eb_status prefix_supports(const eb_posterior *p, eb_error *err)
{
    if (p->repr != EB_REPR_DROPOUT)
        return eb_error_set(err, EB_ERR_UNSUPPORTED, "prefix runs dropout posteriors, not %s",
                            eb_repr_name(p->repr));
    if (!p->params)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "prefix needs f32 weights; these are stored as %s",
                            eb_storage_name(p->stored.kind ? p->stored.kind : p->storage));
    if (first_dropout(&p->arch) < 0)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "prefix needs a dropout layer with a rate above 0, and this "
                            "architecture has none");
    return EB_OK;
}

static size_t align16(size_t x)
{
    return (x + 15) & ~(size_t)15;
}

/* eb_kern_conv2d_infer's scratch per input (k inputs take k times it) */
static size_t conv_cols(const eb_layer *L)
{
    return eb_kern_conv2d_infer_scratch(1, L->in_h, L->in_w, L->in_c, L->units);
}

static eb_status prefix_create(const eb_posterior *p, int max_batch, uint32_t max_draws,
                               void **state, eb_error *err)
{
    const eb_arch *a = &p->arch;
    size_t total;
    float *q;
    prefix *st = eb_calloc(1, sizeof *st);
    if (!st)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the prefix strategy");
    st->p = p;
    st->max_batch = max_batch;
    st->max_draws = max_draws;
    st->first_drop = first_dropout(a);
    st->chunk_cap = (size_t)max_batch < CHUNK ? (size_t)max_batch : CHUNK;
    st->pre_act = a->in_size;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        if (i < st->first_drop) {
            if (L->out_size > st->pre_act)
                st->pre_act = L->out_size;
            if (L->kind == EB_LAYER_CONV2D && conv_cols(L) > st->pre_cols)
                st->pre_cols = conv_cols(L);
        } else {
            if (L->out_size > st->width)
                st->width = L->out_size;
            if (L->kind == EB_LAYER_CONV2D && conv_cols(L) > st->cols_row)
                st->cols_row = conv_cols(L);
        }
    }
    total = 3 * align16(st->chunk_cap * st->pre_act) + align16(st->chunk_cap * st->pre_cols);
    st->bytes = total * sizeof(float);
    st->pre_block = eb_malloc_aligned(64, st->bytes);
    if (!st->pre_block) {
        const size_t cap = st->chunk_cap;
        eb_free(st);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory: the prefix strategy needs %zu bytes for %zu inputs",
                            total * sizeof(float), cap);
    }
    q = st->pre_block;
    st->pa = q;
    q += align16(st->chunk_cap * st->pre_act);
    st->pb = q;
    q += align16(st->chunk_cap * st->pre_act);
    st->pargmax = (int32_t *)(void *)q;
    q += align16(st->chunk_cap * st->pre_act);
    st->pcols = q;
    *state = st;
    return EB_OK;
}

static void free_ws(row_ws *w)
{
    eb_free_aligned(w->a);
    eb_free_aligned(w->b);
    eb_free_aligned(w->mask);
    eb_free(w->argmax);
    eb_free_aligned(w->cols);
    memset(w, 0, sizeof *w);
}

/* Row workspaces for T threads, allocated by the first call that needs
 * them (outside the parallel region). */
static eb_status grow_ws(prefix *st, int T, eb_error *err)
{
    const size_t len = (size_t)RB * st->width, cl = (size_t)RB * st->cols_row;
    while (st->n_ws < T) {
        row_ws *w = &st->ws[st->n_ws];
        w->a = eb_malloc_aligned(64, len * sizeof(float));
        w->b = eb_malloc_aligned(64, len * sizeof(float));
        w->mask = eb_malloc_aligned(64, len * sizeof(float));
        w->argmax = eb_malloc(len * sizeof(int32_t));
        w->cols = cl ? eb_malloc_aligned(64, cl * sizeof(float)) : NULL;
        if (!w->a || !w->b || !w->mask || !w->argmax || (cl && !w->cols)) {
            free_ws(w);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "out of memory for the prefix strategy's thread workspaces");
        }
        st->bytes += (4 * len + cl) * sizeof(float);
        st->n_ws++;
    }
    return EB_OK;
}

/* Layer L of the prefix over inputs [elo, ehi) of the pass (nb inputs),
 * or, for a dense layer, over units [ulo, uhi) of every input; in and out
 * are (nb, size) buffers. Returns 0 when the layer keeps its input
 * (flatten, a dropout of rate 0). */
static int prefix_layer(prefix *st, const eb_layer *L, const float *in, float *out, int nb,
                        int t, int nt)
{
    const float *w = st->p->params + L->param_offset, *b = w + L->n_weights;
    uint32_t lo, hi;
    if (L->kind == EB_LAYER_DENSE) {
        const int NI = (int)L->in_size, NO = L->units;
        /* units in runs of four (any split gives the same bits) */
        eb_strategy_split((uint32_t)(NO + 3) / 4, nt, t, &lo, &hi);
        lo *= 4;
        hi = hi * 4 < (uint32_t)NO ? hi * 4 : (uint32_t)NO;
        for (int i = 0; hi > lo && i < nb; i++)
            eb_kern_dense_gemv(out + (size_t)i * NO + lo, in + (size_t)i * NI, w + (size_t)lo * NI,
                               b + lo, NI, (int)(hi - lo));
        return 1;
    }
    if (L->kind == EB_LAYER_FLATTEN || L->kind == EB_LAYER_DROPOUT)
        return 0; /* dropouts before the first one with rate > 0 have rate 0 */
    eb_strategy_split((uint32_t)nb, nt, t, &lo, &hi);
    for (uint32_t i = lo; i < hi; i++) {
        const float *x = in + i * L->in_size;
        float *o = out + i * L->out_size;
        if (L->kind == EB_LAYER_CONV2D)
            eb_kern_conv2d_infer(o, st->pcols + i * st->pre_cols, x, w, b, 1, L->in_h, L->in_w,
                                 L->in_c, L->units, NULL, 0);
        else if (L->kind == EB_LAYER_MAXPOOL)
            eb_kern_maxpool_forward(o, st->pargmax + i * L->out_size, x, 1, L->in_h, L->in_w,
                                    L->in_c);
        else
            eb_kern_relu_forward(o, x, L->out_size);
    }
    return 1;
}

/* Passes [s0, s0 + n) of input i of the pass over the batch (example
 * g0 + i), n <= RB, whose shared input is pre (size of the first
 * dropout's input), through the layers from the first dropout on;
 * probabilities into probs (n, C). */
static void run_block(prefix *st, row_ws *w, const float *pre, size_t i, uint32_t s0, int n,
                      uint64_t key, uint64_t g0, float *probs)
{
    const eb_posterior *p = st->p;
    const eb_arch *a = &p->arch;
    const float *in = pre; /* the first dropout reads pre itself */
    float *bufs[2] = {w->a, w->b};
    int next = 0;
    for (int l = st->first_drop; l < a->n_layers; l++) {
        const eb_layer *L = &a->layers[l];
        const float *wt = p->params + L->param_offset, *b = wt + L->n_weights;
        float *o = bufs[next];
        const size_t sz = L->out_size;
        if (l == st->first_drop || (L->kind == EB_LAYER_DROPOUT && L->rate > 0.0f)) {
            for (int j = 0; j < n; j++)
                eb_kern_dropout_mask(w->mask + (size_t)j * sz, 1, sz, L->rate, key,
                                     s0 + (uint32_t)j, g0 + i, l);
            if (l == st->first_drop)
                for (int j = 0; j < n; j++)
                    eb_kern_mul(o + (size_t)j * sz, pre, w->mask + (size_t)j * sz, sz);
            else
                eb_kern_mul(o, in, w->mask, (size_t)n * sz);
        } else {
            switch (L->kind) {
            case EB_LAYER_DENSE:
                eb_kern_dense_forward(o, in, wt, b, n, (int)L->in_size, L->units);
                break;
            case EB_LAYER_CONV2D:
                eb_kern_conv2d_infer(o, w->cols, in, wt, b, n, L->in_h, L->in_w, L->in_c,
                                     L->units, NULL, 0);
                break;
            case EB_LAYER_MAXPOOL:
                eb_kern_maxpool_forward(o, w->argmax, in, n, L->in_h, L->in_w, L->in_c);
                break;
            case EB_LAYER_RELU:
                eb_kern_relu_forward(o, in, (size_t)n * sz);
                break;
            case EB_LAYER_DROPOUT: /* rate 0: the identity */
            case EB_LAYER_FLATTEN:
                continue;
            }
        }
        in = o;
        next ^= 1;
    }
    eb_softmax(probs, in, n, a->n_classes);
}

static eb_status prefix_run(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                            uint64_t first_example, int threads, float *probs, eb_error *err)
{
    prefix *st = state;
    const eb_posterior *p = st->p;
    const eb_arch *a = &p->arch;
    const size_t C = (size_t)a->n_classes;
    const uint64_t key = eb_rng_mix64(seed ^ EB_STREAM_PREDICT);
    const int T = eb_strategy_clamp_threads(threads);
    const size_t chunk = st->chunk_cap;
    eb_draw_blocks db; /* the passes of one input in blocks */
    eb_status rc;
    int blas = 0;

    if (S == 0)
        S = eb_posterior_default_draws(p);
    if ((rc = eb_strategy_check_draws(S, st->max_draws, err)))
        return rc;
    db = eb_draw_blocks_plan(S, RB);
    if ((rc = grow_ws(st, T, err)))
        return rc;
    if (T > 1)
        blas = eb_strategy_blas_serial_begin();
    for (size_t first = 0; first < n; first += chunk) {
        const int nb = (int)(n - first < chunk ? n - first : chunk);
        const size_t blocks = (size_t)nb * db.nblk;
        const uint64_t g0 = first_example + first;
        const float *pre = x + first * a->in_size;
        float *pbufs[2] = {st->pa, st->pb};
        float *pc = probs + first * S * C;
        /* every thread, even with fewer blocks: the prefix splits units */
        const int Tc = T;
#pragma omp parallel num_threads(Tc) if (Tc > 1)
        {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            const float *in = pre;
            int next = 0;
            uint32_t lo, hi;
            /* the prefix, once per input; every thread walks the layers in
             * step (one barrier per layer that writes) */
            for (int l = 0; l < st->first_drop; l++) {
                float *o = pbufs[next];
                if (!prefix_layer(st, &a->layers[l], in, o, nb, t, nt))
                    continue;
#pragma omp barrier
                in = o;
                next ^= 1;
            }
            eb_strategy_split((uint32_t)blocks, nt, t, &lo, &hi);
            for (size_t k = lo; k < hi; k++) {
                size_t i;
                uint32_t s0;
                const size_t len = eb_draw_block(&db, k, &i, &s0);
                if (len == 0)
                    continue; /* the rounding left the last block empty */
                run_block(st, &st->ws[t], in + i * a->layers[st->first_drop].in_size, i, s0,
                          (int)len, key, g0, pc + (i * S + s0) * C);
            }
        }
    }
    if (blas)
        eb_strategy_blas_serial_end(blas);
    return EB_OK;
}

static size_t prefix_bytes(const void *state)
{
    const prefix *st = state;
    return sizeof *st + st->bytes;
}

static void prefix_destroy(void *state)
{
    prefix *st = state;
    if (!st)
        return;
    for (int t = 0; t < st->n_ws; t++)
        free_ws(&st->ws[t]);
    eb_free_aligned(st->pre_block);
    eb_free(st);
}

const eb_strategy_ops eb_strategy_prefix = {
    /* .name = */ "prefix",
    /* .summary = */ "MC dropout: layers before the first dropout once per input, the S passes "
                     "stacked as rows after it (loop's masks)",
    /* .reproduces_loop = */ 1,
    /* .supports = */ prefix_supports,
    /* .create = */ prefix_create,
    /* .run = */ prefix_run,
    /* .bytes = */ prefix_bytes,
    /* .destroy = */ prefix_destroy,
};
