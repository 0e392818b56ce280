/* strategy_stacked_q.c: `stacked` for quantized samples posteriors (int8
 * or f16 values kept as stored, eb_posterior_quantized): all S members of
 * a prediction in one pass, the members split into contiguous runs over
 * the threads, each thread carrying its members through every layer on
 * the quantized kernels of methods/nn/nn_quant.h while their weights
 * stream past once. The f32 half is strategy_stacked.c; this file follows
 * its shape.
 *
 * Why it beats `loop`: loop runs member after member through
 * eb_qnet_forward_w, on one thread for int8 (the int8 kernels never call
 * OpenBLAS) and through OpenBLAS sgemm for f16. Here, for up to
 * GEMV_MAX_N inputs, dense layers run on the GEMV kernels
 * (eb_qkern_gemv_i8, eb_qkern_gemv_f16: one read of each weight, nothing
 * else), the members run on all the threads, and the int8 quantization of
 * the prediction's own input, which every member's first dense layer
 * starts from, is done once per call instead of once per member. Larger
 * batches and convolutions reuse loop's kernels (eb_qkern_dense_*,
 * eb_qkern_conv2d_*) per member, in chunks of CHUNK inputs, OpenBLAS at
 * one thread inside the members' threads.
 *
 * Numerics, against loop (eb_qnet_forward_w):
 *   int8: bit-identical. Activations are quantized per row (per input
 *     for dense, per output-pixel patch for conv) with the same function
 *     as loop (or, with static activation scales, each member's layer
 *     input with its own fixed scale, eb_quant_int8_static_i16, so the
 *     shared quantization of x is skipped); the integer sums are exact
 *     in any order; the float
 *     expression (float)acc * (sx * sw[o]) + b[o] is the same; relu,
 *     maxpool and softmax are the same functions.
 *   f16: the GEMV sums in its own fixed order (16 lanes, nn_quant.h)
 *     where loop's sgemm sums in OpenBLAS's, so logits differ by float
 *     rounding (relative ~1e-6; the test holds probabilities to 1e-5).
 *     Batches above GEMV_MAX_N run loop's kernel.
 * A member's arithmetic does not depend on which thread runs it or on
 * the thread count, so the bytes are the same for any thread count.
 * Dropout layers are the identity (a samples posterior has no masks). */
#include <string.h>

#include "common/eb_alloc.h"
#include "devices/strategy.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/nn_kernels.h"
#include "methods/nn/nn_quant.h"

#define CHUNK 16     /* inputs per pass over the members */
#define GEMV_MAX_N 4 /* up to this many inputs, dense layers run as matrix-vector products */
/* Floats an im2col chunk of images may take per thread (4 MiB, as
 * eb_qnet); a chunk holds at least one image. Per-patch quantization
 * makes the result independent of the chunk. */
#define COLS_BUDGET ((size_t)1 << 20)

typedef struct thread_ws {
    float *a, *b;    /* (CHUNK, max_act) ping-pong activations */
    float *cols;     /* (conv rows, 9 C) im2col of one chunk of images */
    int16_t *qx;     /* (rows, NI) quantized GEMM rows (int8 values) */
    float *sx;       /* (rows) their scales */
    float *wbuf;     /* f16: one converted block of W (eb_qkern_f16_block_rows) */
    int32_t *argmax; /* (CHUNK, max_act) max-pool choices */
    float *probs;    /* (CHUNK, C) one member's probabilities */
} thread_ws;

typedef struct stacked_q {
    const eb_posterior *p;
    eb_qnet_storage storage;
    uint32_t n_qw;      /* members with weights prepared: min(max_draws, members) */
    eb_qweights **qw;   /* (n_qw) each member's biases and scales over the stored values */
    int first_dense;    /* layer index whose input is x itself (-1: none) */
    int16_t *qx0;       /* (GEMV_MAX_N, in_size) x quantized once per call (int8) */
    float sx0[GEMV_MAX_N];
    int pre;            /* this chunk's rows are in qx0/sx0 (set by stacked_q_prepare) */
    int static_act;     /* int8 with static activation scales (ACTSCALES): per member */
    size_t act_len, cols_len, q_len, rows_len, wbuf_len; /* elements per buffer */
    int conv_chunk[EB_ARCH_MAX_LAYERS]; /* conv2d: images per im2col pass */
    int n_ws;
    thread_ws ws[EB_STRATEGY_MAX_THREADS];
    size_t bytes;
} stacked_q;

static int has_conv(const eb_arch *a)
{
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].kind == EB_LAYER_CONV2D)
            return 1;
    return 0;
}

static eb_status stacked_q_supports(const eb_posterior *p, eb_error *err)
{
    if (p->repr != EB_REPR_SAMPLES)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "stacked (int8/f16) runs samples posteriors, not %s",
                            eb_repr_name(p->repr));
    if (!eb_posterior_quantized(p))
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "stacked (int8/f16) needs int8 or f16 weights kept as stored; these "
                            "are %s",
                            p->params ? "f32" : eb_storage_name(p->storage));
    return EB_OK;
}

static size_t layer_ni(const eb_layer *L)
{
    return L->kind == EB_LAYER_DENSE    ? L->in_size
           : L->kind == EB_LAYER_CONV2D ? 9 * (size_t)L->in_c
                                        : 0;
}

static void stacked_q_destroy(void *state);

static eb_status stacked_q_create(const eb_posterior *p, int max_batch, uint32_t max_draws,
                                  void **state, eb_error *err)
{
    const eb_arch *a = &p->arch;
    const eb_bundle_stored *sv = &p->stored;
    const size_t elem = sv->kind == EB_STORE_INT8 ? 1 : sizeof(uint16_t);
    stacked_q *st = eb_calloc(1, sizeof *st);
    (void)max_batch; /* inputs are taken CHUNK at a time */
    if (!st)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the stacked strategy");
    st->p = p;
    st->storage = sv->kind == EB_STORE_INT8 ? EB_QNET_INT8 : EB_QNET_F16;
    st->n_qw = max_draws < p->members ? max_draws : p->members;
    st->static_act = st->storage == EB_QNET_INT8 && sv->act_scales != NULL;
    st->act_len = (size_t)CHUNK * (a->max_act > a->in_size ? a->max_act : a->in_size);
    st->first_dense = -1;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const size_t NI = layer_ni(L);
        size_t rows = 0;
        if (L->kind == EB_LAYER_DENSE) {
            rows = CHUNK;
        } else if (L->kind == EB_LAYER_CONV2D) {
            const size_t pix = (size_t)L->out_h * (size_t)L->out_w;
            size_t chunk = COLS_BUDGET / (pix * NI);
            chunk = chunk < 1 ? 1 : chunk > CHUNK ? CHUNK : chunk;
            st->conv_chunk[i] = (int)chunk;
            rows = chunk * pix;
            if (rows * NI > st->cols_len)
                st->cols_len = rows * NI;
        }
        if (!NI)
            continue;
        if (rows * NI > st->q_len)
            st->q_len = rows * NI;
        if (rows > st->rows_len)
            st->rows_len = rows;
        if (st->storage == EB_QNET_F16) {
            size_t f = (size_t)eb_qkern_f16_block_rows((int)NI) * NI;
            const size_t whole = (size_t)L->units * NI;
            f = f < whole ? f : whole;
            if (f > st->wbuf_len)
                st->wbuf_len = f;
        }
    }
    /* The first dense layer reached through views only (flatten,
     * dropout) reads x itself: its int8 rows are the same for every
     * member, unless each member has its own static scale. */
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer_kind k = a->layers[i].kind;
        if (k == EB_LAYER_DENSE)
            st->first_dense = st->storage == EB_QNET_INT8 && !st->static_act ? i : -1;
        if (k != EB_LAYER_FLATTEN && k != EB_LAYER_DROPOUT)
            break;
    }
    if (st->storage == EB_QNET_INT8) {
        st->qx0 = eb_malloc((size_t)GEMV_MAX_N * a->in_size * sizeof *st->qx0);
        if (!st->qx0) {
            eb_free(st);
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the stacked strategy");
        }
        st->bytes += (size_t)GEMV_MAX_N * a->in_size * sizeof *st->qx0;
    }
    st->qw = eb_calloc(st->n_qw ? st->n_qw : 1, sizeof *st->qw);
    if (!st->qw) {
        stacked_q_destroy(st);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the stacked strategy");
    }
    st->bytes += st->n_qw * sizeof *st->qw;
    for (uint32_t r = 0; r < st->n_qw; r++) {
        const void *v = (const char *)sv->values + (size_t)r * p->k * elem;
        const int i8 = st->storage == EB_QNET_INT8;
        eb_status rc = eb_qweights_new(a, st->storage, v, i8 ? sv->scales + (size_t)r * sv->n_groups : NULL,
                                       i8 ? sv->groups : NULL, i8 ? (size_t)sv->n_groups : 0,
                                       &st->qw[r], err);
        if (!rc && sv->act_scales)
            rc = eb_qweights_set_act_scales(st->qw[r], a, sv->act_scales + (size_t)r * sv->n_act,
                                            (size_t)sv->n_act, err);
        if (rc) {
            stacked_q_destroy(st);
            return eb_error_prefix(err, "member %u: ", r);
        }
        st->bytes += eb_qweights_bytes(st->qw[r]);
    }
    *state = st;
    return EB_OK;
}

static void free_ws(thread_ws *w)
{
    eb_free_aligned(w->a);
    eb_free_aligned(w->b);
    eb_free_aligned(w->cols);
    eb_free_aligned(w->qx);
    eb_free(w->sx);
    eb_free_aligned(w->wbuf);
    eb_free(w->argmax);
    eb_free(w->probs);
    memset(w, 0, sizeof *w);
}

/* Workspaces for T threads, allocated at the first call that needs them
 * (never inside the timed parallel region of later calls). */
static eb_status grow_ws(stacked_q *st, int T, eb_error *err)
{
    const size_t C = (size_t)st->p->arch.n_classes;
    while (st->n_ws < T) {
        thread_ws *w = &st->ws[st->n_ws];
        const int f16 = st->storage == EB_QNET_F16;
        w->a = eb_malloc_aligned(64, st->act_len * sizeof(float));
        w->b = eb_malloc_aligned(64, st->act_len * sizeof(float));
        w->cols = st->cols_len ? eb_malloc_aligned(64, st->cols_len * sizeof(float)) : NULL;
        w->qx = f16 ? NULL : eb_malloc_aligned(64, st->q_len * sizeof(int16_t));
        w->sx = f16 ? NULL : eb_malloc(st->rows_len * sizeof(float));
        w->wbuf = f16 ? eb_malloc_aligned(64, st->wbuf_len * sizeof(float)) : NULL;
        w->argmax = eb_malloc(st->act_len * sizeof(int32_t));
        w->probs = eb_malloc((size_t)CHUNK * C * sizeof(float));
        if (!w->a || !w->b || (st->cols_len && !w->cols) || (!f16 && (!w->qx || !w->sx)) ||
            (f16 && !w->wbuf) || !w->argmax || !w->probs) {
            free_ws(w);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "out of memory for the stacked strategy's thread workspaces");
        }
        st->bytes += (2 * st->act_len + st->cols_len) * sizeof(float) +
                     st->act_len * sizeof(int32_t) + (size_t)CHUNK * C * sizeof(float) +
                     (f16 ? st->wbuf_len * sizeof(float)
                          : st->q_len * sizeof(int16_t) + st->rows_len * sizeof(float));
        st->n_ws++;
    }
    return EB_OK;
}

/* Dense layer i of one member over nb inputs in (nb, NI) into o (nb, NO).
 * pre: the rows of in already quantized (qx0, sx0), or 0. xs: the
 * member's static activation scale for this layer, or 0 (dynamic). */
static void dense_layer(const stacked_q *st, const eb_layer *L, const void *wv, const float *sw,
                        const float *bias, float xs, const float *in, int nb, int pre, float *o,
                        thread_ws *w)
{
    const int NI = (int)L->in_size, NO = L->units;
    if (st->storage == EB_QNET_INT8) {
        const int8_t *qw = wv;
        if (nb > GEMV_MAX_N) {
            if (xs > 0.0f)
                eb_qkern_dense_i8_static(o, w->qx, w->sx, in, xs, qw, sw, bias, nb, NI, NO);
            else
                eb_qkern_dense_i8(o, w->qx, w->sx, in, qw, sw, bias, nb, NI, NO);
            return;
        }
        for (int r = 0; r < nb; r++) {
            const float *xr = in + (size_t)r * NI;
            const int16_t *qx = pre ? st->qx0 + (size_t)r * NI : w->qx;
            const float sx = pre       ? st->sx0[r]
                             : xs > 0.0f ? eb_quant_int8_static_i16(w->qx, xr, (size_t)NI, xs)
                                         : eb_quant_int8_run_i16(w->qx, xr, (size_t)NI);
            eb_qkern_gemv_i8(o + (size_t)r * NO, qx, sx, qw, sw, bias, NI, NO);
        }
        return;
    }
    if (nb > GEMV_MAX_N) {
        eb_qkern_dense_f16(o, w->wbuf, in, wv, bias, nb, NI, NO);
        return;
    }
    for (int r = 0; r < nb; r++)
        eb_qkern_gemv_f16(o + (size_t)r * NO, in + (size_t)r * NI, wv, bias, NI, NO);
}

/* conv2d layer i of one member, in chunks of images (eb_qnet's lowering). */
static void conv_layer(const stacked_q *st, int i, const eb_layer *L, const void *wv,
                       const float *sw, const float *bias, float xs, const float *in, int nb,
                       float *o, thread_ws *w)
{
    const int step = st->conv_chunk[i];
    for (int img = 0; img < nb; img += step) {
        const int m = img + step < nb ? step : nb - img;
        const float *x = in + (size_t)img * L->in_size;
        float *y = o + (size_t)img * L->out_size;
        if (st->storage == EB_QNET_INT8 && xs > 0.0f)
            eb_qkern_conv2d_i8_static(y, w->cols, w->qx, w->sx, x, xs, wv, sw, bias, m, L->in_h,
                                      L->in_w, L->in_c, L->units);
        else if (st->storage == EB_QNET_INT8)
            eb_qkern_conv2d_i8(y, w->cols, w->qx, w->sx, x, wv, sw, bias, m, L->in_h, L->in_w,
                               L->in_c, L->units);
        else
            eb_qkern_conv2d_f16(y, w->cols, w->wbuf, x, wv, bias, m, L->in_h, L->in_w, L->in_c,
                                L->units);
    }
}

/* The logits (nb, C) of member s over nb <= CHUNK inputs x; returns the
 * buffer holding them (w->a or w->b). pre: x's rows are in qx0/sx0. */
static const float *member_forward(const stacked_q *st, uint32_t s, const float *x, int nb,
                                   int pre, thread_ws *w)
{
    const eb_arch *a = &st->p->arch;
    const float *in = x;
    float *bufs[2] = {w->a, w->b};
    int next = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const void *wv;
        const float *sw, *bias;
        float *o = bufs[next];
        switch (L->kind) {
        case EB_LAYER_DENSE:
            eb_qweights_layer(st->qw[s], a, i, &wv, &sw, &bias);
            dense_layer(st, L, wv, sw, bias, eb_qweights_act_scale(st->qw[s], i), in, nb,
                        pre && i == st->first_dense, o, w);
            break;
        case EB_LAYER_CONV2D:
            eb_qweights_layer(st->qw[s], a, i, &wv, &sw, &bias);
            conv_layer(st, i, L, wv, sw, bias, eb_qweights_act_scale(st->qw[s], i), in, nb, o,
                       w);
            break;
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

/* Every member's first dense layer quantizes the chunk's same rows: once. */
static void stacked_q_prepare(void *state, const float *x, int nb)
{
    stacked_q *st = state;
    const size_t in = st->p->arch.in_size;
    st->pre = st->first_dense >= 0 && nb <= GEMV_MAX_N;
    for (int r = 0; st->pre && r < nb; r++)
        st->sx0[r] = eb_quant_int8_run_i16(st->qx0 + (size_t)r * in, x + (size_t)r * in, in);
}

static const float *stacked_q_member(void *state, int t, uint32_t s, const float *x, int nb)
{
    stacked_q *st = state;
    return member_forward(st, s, x, nb, st->pre, &st->ws[t]);
}

static float *stacked_q_scratch(void *state, int t)
{
    return ((stacked_q *)state)->ws[t].probs;
}

static eb_status stacked_q_run(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                               uint64_t first_example, int threads, float *probs, eb_error *err)
{
    stacked_q *st = state;
    const eb_arch *a = &st->p->arch;
    const eb_members_plan plan = {st, a->in_size, (size_t)a->n_classes, CHUNK, stacked_q_prepare,
                                  stacked_q_member, stacked_q_scratch};
    eb_status rc;
    int T, blas;
    (void)seed;
    (void)first_example; /* members are fixed: nothing is drawn */

    if ((rc = eb_strategy_threads(S, st->n_qw, threads, &T, err)) || (rc = grow_ws(st, T, err)))
        return rc;
    /* OpenBLAS runs inside the members' threads only for f16 convolutions
     * and larger f16 batches; it must not start threads of its own there. */
    blas = (T > 1 && st->storage == EB_QNET_F16 && (has_conv(a) || n > GEMV_MAX_N))
               ? eb_strategy_blas_serial_begin()
               : 0;
    eb_strategy_run_members(&plan, x, n, S, T, probs);
    if (blas)
        eb_strategy_blas_serial_end(blas);
    return EB_OK;
}

static size_t stacked_q_bytes(const void *state)
{
    const stacked_q *st = state;
    return sizeof *st + st->bytes;
}

static void stacked_q_destroy(void *state)
{
    stacked_q *st = state;
    if (!st)
        return;
    for (int t = 0; t < st->n_ws; t++)
        free_ws(&st->ws[t]);
    for (uint32_t r = 0; st->qw && r < st->n_qw; r++)
        eb_qweights_free(st->qw[r]);
    eb_free(st->qw);
    eb_free(st->qx0);
    eb_free(st);
}

const eb_strategy_ops eb_strategy_stacked_q = {
    /* .name = */ "stacked",
    /* .summary = */ "int8/f16 samples: all S members in one pass on the quantized GEMV "
                     "kernels, members split over the threads, each weight read once",
    /* .reproduces_loop = */ 1,
    /* .supports = */ stacked_q_supports,
    /* .create = */ stacked_q_create,
    /* .run = */ stacked_q_run,
    /* .bytes = */ stacked_q_bytes,
    /* .destroy = */ stacked_q_destroy,
};
