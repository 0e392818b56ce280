/* strategy_lrt.c: `lrt`, mean-field gaussian (VI) posteriors predicted by
 * local reparameterisation (Kingma, Salimans & Welling 2015): instead of
 * drawing a whole weight matrix per draw, each dense layer draws its
 * pre-activations directly. For activations a (one row of one draw),
 *     m = mu_W a + mu_b,   v = sigma_W^2 (a*a) + sigma_b^2,
 *     h = m + sqrt(v) * eps,   eps ~ N(0, 1) per (draw, example, unit).
 *
 * Why this is the same model, and where it differs from `loop`:
 * for ONE input, h_u = sum_j W_uj a_j + b_u with the W_uj, b_u independent
 * gaussians is gaussian with exactly mean m_u and variance v_u, the units
 * u are independent of each other (rows of W are independent), and the
 * layer's weights are independent of its input a (which depends only on
 * earlier layers' weights). So, draw by draw, sampling pre-activations
 * layer by layer has exactly the joint distribution of the logits that
 * sampling whole weight matrices (eb_predictor_run) has. Across a batch
 * it differs: loop's draw s shares one weight sample between all inputs,
 * so their outputs are correlated within a draw; here every (example,
 * draw) pair gets its own noise, so they are independent. Member
 * probabilities per input have the same distribution; joint statistics
 * across inputs do not. Hence reproduces_loop = 0: only an explicit
 * strategy=lrt runs it (tests/devices/test_strategy_lrt.c checks the
 * per-input distribution against loop's statistically).
 *
 * The work: the first dense layer's input is the prediction's input,
 * shared by every draw, so its m and v are computed once per example
 * (two matrix-vector products, the units split over the threads) and
 * only the noise differs per draw. Every later dense layer sees per-draw
 * activations and runs as two matrix products over all the S draws at
 * once (rows = draws, OpenBLAS sgemm): m from mu and v from sigma^2,
 * which is precomputed at create (K floats, counted in bytes). So the
 * weights, 2K floats, are read from memory once per prediction whatever
 * S is. The draws go in blocks of at most RB rows (one input's draws
 * [s0, s0 + size)); the blocks are split over the threads in contiguous runs, each
 * thread calling a one-thread sgemm on its blocks (no nested pools; a
 * layer's weights, re-read per block, stay in cache).
 *
 * Reproducibility: eps of (example g = first_example + i, layer l, draw
 * s) is its own Philox4x32-10 stream, counter (j, s, g, l) under the key
 * mix64(seed ^ EB_STREAM_PREDICT), mapped to normals by inversion
 * (methods/nn/eb_philox.h): sixteen values per AVX-512 instruction and
 * no rejection, 1.4 ns a value here against the ziggurat's 3.4 ns with
 * its per-row seeding (normals were 30% of a thread's time). No draw
 * depends on which thread or which batch split computes it, and the first
 * S' draws of a prediction of S use the noise of a prediction of S' (the
 * same values up to rounding: their blocks differ). Every matrix product
 * is over one block, fixed by (input, S), so the same seed, inputs and S
 * give the same bytes for any thread count or batch split.
 *
 * Layers: dense (sampled), relu, flatten and dropout (the identity, as in
 * loop's gaussian draws) anywhere; maxpool only before the first dense
 * layer. conv2d is refused: a convolution's outputs share weights across
 * positions, so their pre-activations are not independent and local
 * reparameterisation would change the model. */
#include <math.h>
#include <string.h>

#include <omp.h>

#include "common/eb_alloc.h"
#include "devices/strategy.h"
#include "methods/eb_samplers.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/eb_philox.h"
#include "methods/nn/nn_kernels.h"

/* Rows of one matrix product: the S draws of one input in nblk =
 * ceil(S / RB) blocks of equal size (to one row), so S = 100 makes two
 * blocks of 50, one per thread at two threads (64 rather than 32: on
 * this 2-core machine the larger products cut S = 100 from 0.42 to 0.28
 * ms). OpenBLAS's sgemm
 * does not give a row the same bits whatever the number of rows beside
 * it (its small-matrix kernels sum in another order), so the blocks are
 * fixed by (input, S) alone and only their assignment to threads varies. */
#define RB 64
/* Inputs whose first-layer moments are computed per pass. */
#define CHUNK 64

/* Widest vectors the CPU has, chosen at load (as in methods/nn/kernels.c);
 * every clone computes the same bits (no contraction under -std=c11).
 * sqrtf vectorises because CMakeLists.txt builds this file with
 * -fno-math-errno (v >= 0, so errno is never set; sqrt is correctly
 * rounded either way). GCC ignores optimize("no-math-errno") on clones. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define LRT_VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LRT_VECTOR
#endif

typedef struct row_ws {
    float *A, *A2, *M, *V; /* (RB, width) a block's activations, squares, means, variances */
} row_ws;

typedef struct lrt {
    const eb_posterior *p;
    int max_batch;
    uint32_t max_draws;
    int first_dense;   /* index of the first dense layer */
    size_t in0;        /* floats into the first dense layer per example */
    size_t width;      /* widest activation from the first dense layer on */
    size_t pre_len;    /* widest activation before it (>= in_size) */
    size_t chunk_cap;  /* inputs of one pass */
    float *sigma2;     /* (K) sigma^2; a packed layer's weights as (in, units) */
    float *mu_packed;  /* (K - packed_from) later layers' mu, packed layers as (in, units) */
    size_t packed_from; /* the first parameter after the first dense layer's */
    unsigned char packed[EB_ARCH_MAX_LAYERS]; /* later dense layers run eb_kern_dense_packed */
    float *pre_a, *pre_b; /* (pre_len) prefix ping-pong, one input */
    int32_t *argmax;   /* (pre_len) */
    float *x0, *x0sq;  /* (chunk_cap, in0) first dense input and its square */
    float *m0, *sd0;   /* (chunk_cap, units0) first dense mean and sqrt(variance) */
    void *block;
    int n_ws;          /* row workspaces allocated (grown to the thread count) */
    row_ws ws[EB_STRATEGY_MAX_THREADS];
    size_t bytes;
} lrt;

static eb_status lrt_supports(const eb_posterior *p, eb_error *err)
{
    const eb_arch *a = &p->arch;
    int seen_dense = 0;
    if (p->repr != EB_REPR_GAUSSIAN)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "lrt runs gaussian (mean-field VI) posteriors, not %s",
                            eb_repr_name(p->repr));
    if (!p->params || !p->sigma)
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "lrt needs f32 mu and sigma; this posterior has none decoded");
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer_kind k = a->layers[i].kind;
        if (k == EB_LAYER_CONV2D)
            return eb_error_set(err, EB_ERR_UNSUPPORTED,
                                "lrt samples dense pre-activations only, and layer %d is a "
                                "conv2d, whose outputs share weights (use strategy=loop)",
                                i + 1);
        if (k == EB_LAYER_MAXPOOL && seen_dense)
            return eb_error_set(err, EB_ERR_UNSUPPORTED,
                                "lrt runs maxpool only before the first dense layer, and "
                                "layer %d is a maxpool after it", i + 1);
        seen_dense |= k == EB_LAYER_DENSE;
    }
    return EB_OK;
}

static size_t align16(size_t x)
{
    return (x + 15) & ~(size_t)15;
}

static eb_status lrt_create(const eb_posterior *p, int max_batch, uint32_t max_draws,
                            void **state, eb_error *err)
{
    const eb_arch *a = &p->arch;
    const size_t K = p->k;
    size_t units0, total;
    lrt *st = eb_calloc(1, sizeof *st);
    float *q;
    if (!st)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the lrt strategy");
    st->p = p;
    st->max_batch = max_batch;
    st->max_draws = max_draws;
    st->first_dense = 0;
    while (a->layers[st->first_dense].kind != EB_LAYER_DENSE)
        st->first_dense++; /* the last layer is dense: this ends */
    st->in0 = a->layers[st->first_dense].in_size;
    units0 = (size_t)a->layers[st->first_dense].units;
    st->pre_len = a->in_size;
    for (int i = 0; i < st->first_dense; i++)
        if (a->layers[i].out_size > st->pre_len)
            st->pre_len = a->layers[i].out_size;
    for (int i = st->first_dense; i < a->n_layers; i++)
        if (a->layers[i].out_size > st->width)
            st->width = a->layers[i].out_size;
    st->chunk_cap = (size_t)max_batch < CHUNK ? (size_t)max_batch : CHUNK;
    {
        const eb_layer *F = &a->layers[st->first_dense];
        st->packed_from = F->param_offset + F->n_weights + F->n_bias;
    }
    for (int i = st->first_dense + 1; i < a->n_layers; i++)
        st->packed[i] = a->layers[i].kind == EB_LAYER_DENSE &&
                        eb_kern_direct_available(a->layers[i].units);
    total = align16(K) + align16(K - st->packed_from) + 2 * align16(st->pre_len) +
            align16(st->pre_len) /* argmax */ + 2 * align16(st->chunk_cap * st->in0) +
            2 * align16(st->chunk_cap * units0);
    st->bytes = total * sizeof(float);
    st->block = eb_malloc_aligned(64, st->bytes);
    if (!st->block) {
        eb_free(st);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory: the lrt strategy needs %zu bytes (sigma^2 and "
                            "first-layer moments of %zu inputs)", total * sizeof(float),
                            st->chunk_cap);
    }
    q = st->block;
#define CARVE(ptr, type, count)            \
    do {                                   \
        (ptr) = (type *)(void *)q;         \
        q += align16(count);               \
    } while (0)
    CARVE(st->sigma2, float, K);
    CARVE(st->mu_packed, float, K - st->packed_from);
    CARVE(st->pre_a, float, st->pre_len);
    CARVE(st->pre_b, float, st->pre_len);
    CARVE(st->argmax, int32_t, st->pre_len);
    CARVE(st->x0, float, st->chunk_cap * st->in0);
    CARVE(st->x0sq, float, st->chunk_cap * st->in0);
    CARVE(st->m0, float, st->chunk_cap * units0);
    CARVE(st->sd0, float, st->chunk_cap * units0);
#undef CARVE
    for (size_t k = 0; k < K; k++)
        st->sigma2[k] = p->sigma[k] * p->sigma[k];
    /* the later layers that the direct kernel runs: mu and sigma^2
     * packed once here rather than by sgemm at every call */
    for (int i = st->first_dense + 1; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        float *s2 = st->sigma2 + L->param_offset;
        if (!st->packed[i])
            continue;
        eb_kern_pack_weights(st->mu_packed + (L->param_offset - st->packed_from),
                             p->params + L->param_offset, (int)L->in_size, L->units);
        eb_kern_pack_weights(s2, p->sigma + L->param_offset, (int)L->in_size, L->units);
        for (size_t k = 0; k < L->n_weights; k++)
            s2[k] *= s2[k];
    }
    *state = st;
    return EB_OK;
}

static void free_ws(row_ws *w)
{
    eb_free_aligned(w->A);
    eb_free_aligned(w->A2);
    eb_free_aligned(w->M);
    eb_free_aligned(w->V);
    memset(w, 0, sizeof *w);
}

/* Row workspaces for T threads, allocated by the first call that needs
 * them (outside the parallel region). */
static eb_status grow_ws(lrt *st, int T, eb_error *err)
{
    const size_t len = (size_t)RB * st->width * sizeof(float);
    while (st->n_ws < T) {
        row_ws *w = &st->ws[st->n_ws];
        w->A = eb_malloc_aligned(64, len);
        w->A2 = eb_malloc_aligned(64, len);
        w->M = eb_malloc_aligned(64, len);
        w->V = eb_malloc_aligned(64, len);
        if (!w->A || !w->A2 || !w->M || !w->V) {
            free_ws(w);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "out of memory for the lrt strategy's thread workspaces");
        }
        st->bytes += 4 * len;
        st->n_ws++;
    }
    return EB_OK;
}

/* The normals of (example g, layer l, draw s): the Philox stream with
 * counter (., s, g's low 32 bits, l) under the prediction's key, mixed
 * with g's high bits. */
static void draw_eps(float *eps, size_t n, uint64_t key, uint64_t g, int l, uint32_t s)
{
    eb_philox_normal_fill(eps, n, g >> 32 ? eb_rng_mix64(key + (g >> 32)) : key, s, (uint32_t)g,
                          (uint32_t)l);
}

/* h = m + sd * eps over n units; eps arrives in h. */
LRT_VECTOR
static void combine_sd(float *restrict h, const float *restrict m, const float *restrict sd,
                       size_t n)
{
    for (size_t u = 0; u < n; u++)
        h[u] = m[u] + sd[u] * h[u];
}

/* h = m + sqrt(v) * eps over n units; eps arrives in h. */
LRT_VECTOR
static void combine_var(float *restrict h, const float *restrict m, const float *restrict v,
                        size_t n)
{
    for (size_t u = 0; u < n; u++)
        h[u] = m[u] + sqrtf(v[u]) * h[u];
}

LRT_VECTOR
static void square(float *restrict out, const float *restrict in, size_t n)
{
    for (size_t u = 0; u < n; u++)
        out[u] = in[u] * in[u];
}

LRT_VECTOR
static void sqrt_inplace(float *v, size_t n)
{
    for (size_t u = 0; u < n; u++)
        v[u] = sqrtf(v[u]);
}

/* The layers before the first dense one (relu, maxpool, flatten,
 * dropout as the identity) over one input x; returns its output. */
static const float *run_prefix(lrt *st, const float *x)
{
    const eb_arch *a = &st->p->arch;
    const float *in = x;
    float *bufs[2] = {st->pre_a, st->pre_b};
    int next = 0;
    for (int i = 0; i < st->first_dense; i++) {
        const eb_layer *L = &a->layers[i];
        if (L->kind == EB_LAYER_RELU)
            eb_kern_relu_forward(bufs[next], in, L->out_size);
        else if (L->kind == EB_LAYER_MAXPOOL)
            eb_kern_maxpool_forward(bufs[next], st->argmax, in, 1, L->in_h, L->in_w, L->in_c);
        else
            continue; /* flatten, dropout: the same values */
        in = bufs[next];
        next ^= 1;
    }
    return in;
}

/* First dense layer, units [ulo, uhi) of inputs [0, nb): m0, and sd0 =
 * sqrt(variance) (the variance itself when sd is 0, for the test hook). */
static void first_moments(lrt *st, int nb, int ulo, int uhi, int sd)
{
    const eb_posterior *p = st->p;
    const eb_layer *L = &p->arch.layers[st->first_dense];
    const int NI = (int)L->in_size, U = L->units;
    const float *mw = p->params + L->param_offset, *mb = mw + L->n_weights;
    const float *sw = st->sigma2 + L->param_offset, *sb = sw + L->n_weights;
    if (uhi <= ulo)
        return;
    for (int i = 0; i < nb; i++) {
        float *m = st->m0 + (size_t)i * U + ulo, *sdv = st->sd0 + (size_t)i * U + ulo;
        eb_kern_dense_gemv(m, st->x0 + (size_t)i * NI, mw + (size_t)ulo * NI, mb + ulo, NI,
                           uhi - ulo);
        eb_kern_dense_gemv(sdv, st->x0sq + (size_t)i * NI, sw + (size_t)ulo * NI, sb + ulo, NI,
                           uhi - ulo);
        if (sd)
            sqrt_inplace(sdv, (size_t)(uhi - ulo));
    }
}

/* Draws [s0, s0 + n) of input i of the pass (example g0 + i), n <= RB,
 * through every layer from the first dense one; probabilities into
 * probs (n, C). */
static void run_block(lrt *st, row_ws *w, size_t i, uint32_t s0, size_t n, uint64_t key,
                      uint64_t g0, float *probs)
{
    const eb_posterior *p = st->p;
    const eb_arch *a = &p->arch;
    float *A = w->A, *A2 = w->A2, *M = w->M, *V = w->V;
    const size_t U0 = (size_t)a->layers[st->first_dense].units;
    size_t cur = U0;
    for (size_t r = 0; r < n; r++) {
        float *h = A + r * U0;
        draw_eps(h, U0, key, g0 + i, st->first_dense, s0 + (uint32_t)r);
        combine_sd(h, st->m0 + i * U0, st->sd0 + i * U0, U0);
    }
    for (int l = st->first_dense + 1; l < a->n_layers; l++) {
        const eb_layer *L = &a->layers[l];
        if (L->kind == EB_LAYER_RELU) {
            eb_kern_relu_forward(A, A, n * cur);
        } else if (L->kind == EB_LAYER_DENSE) {
            const float *mw = p->params + L->param_offset, *mb = mw + L->n_weights;
            const float *sw = st->sigma2 + L->param_offset, *sb = sw + L->n_weights;
            const size_t U = (size_t)L->units;
            square(A2, A, n * cur);
            if (st->packed[l]) {
                eb_kern_dense_packed(M, A, st->mu_packed + (L->param_offset - st->packed_from),
                                     mb, (int)n, (int)cur, (int)U);
                eb_kern_dense_packed(V, A2, sw, sb, (int)n, (int)cur, (int)U);
            } else {
                eb_kern_dense_forward(M, A, mw, mb, (int)n, (int)cur, (int)U);
                eb_kern_dense_forward(V, A2, sw, sb, (int)n, (int)cur, (int)U);
            }
            for (size_t r = 0; r < n; r++) {
                float *h = A + r * U;
                draw_eps(h, U, key, g0 + i, l, s0 + (uint32_t)r);
                combine_var(h, M + r * U, V + r * U, U);
            }
            cur = U;
        }
        /* flatten, dropout: the same values */
    }
    eb_softmax(probs, A, (int)n, (int)cur);
}

static eb_status lrt_run(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                         uint64_t first_example, int threads, float *probs, eb_error *err)
{
    lrt *st = state;
    const eb_posterior *p = st->p;
    const eb_arch *a = &p->arch;
    const size_t C = (size_t)a->n_classes;
    const int U0 = a->layers[st->first_dense].units;
    const uint64_t key = eb_rng_mix64(seed ^ EB_STREAM_PREDICT);
    const int T = eb_strategy_clamp_threads(threads);
    eb_draw_blocks db;
    const size_t chunk = st->chunk_cap;
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
        float *pc = probs + first * S * C;
        int Tc = (size_t)T > blocks ? (int)blocks : T;
        /* the input side, shared by every draw: prefix layers and squares */
        for (int i = 0; i < nb; i++) {
            const float *xi = run_prefix(st, x + (first + (size_t)i) * a->in_size);
            memcpy(st->x0 + (size_t)i * st->in0, xi, st->in0 * sizeof(float));
            square(st->x0sq + (size_t)i * st->in0, xi, st->in0);
        }
#pragma omp parallel num_threads(Tc) if (Tc > 1)
        {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            uint32_t ulo, uhi;
            uint32_t blo, bhi;
            /* units in runs of four (any split gives the same bits) */
            eb_strategy_split((uint32_t)(U0 + 3) / 4, nt, t, &ulo, &uhi);
            ulo *= 4;
            uhi = uhi * 4 < (uint32_t)U0 ? uhi * 4 : (uint32_t)U0;
            first_moments(st, nb, (int)ulo, (int)uhi, 1);
#pragma omp barrier
            eb_strategy_split((uint32_t)blocks, nt, t, &blo, &bhi);
            for (size_t k = blo; k < bhi; k++) {
                size_t i;
                uint32_t s0;
                const size_t len = eb_draw_block(&db, k, &i, &s0);
                if (len == 0)
                    continue; /* the rounding left the last block empty */
                run_block(st, &st->ws[t], i, s0, len, key, g0, pc + (i * S + s0) * C);
            }
        }
    }
    if (blas)
        eb_strategy_blas_serial_end(blas);
    return EB_OK;
}

static size_t lrt_bytes(const void *state)
{
    const lrt *st = state;
    return sizeof *st + st->bytes;
}

static void lrt_destroy(void *state)
{
    lrt *st = state;
    if (!st)
        return;
    for (int t = 0; t < st->n_ws; t++)
        free_ws(&st->ws[t]);
    eb_free_aligned(st->block);
    eb_free(st);
}

void eb_strategy__lrt_first_moments(void *state, const float *x, float *mean, float *var)
{
    lrt *st = state;
    const int U0 = st->p->arch.layers[st->first_dense].units;
    const float *xi = run_prefix(st, x);
    memcpy(st->x0, xi, st->in0 * sizeof(float));
    square(st->x0sq, xi, st->in0);
    first_moments(st, 1, 0, U0, 0);
    memcpy(mean, st->m0, (size_t)U0 * sizeof(float));
    memcpy(var, st->sd0, (size_t)U0 * sizeof(float));
}

const eb_strategy_ops eb_strategy_lrt = {
    /* .name = */ "lrt",
    /* .summary = */ "gaussian VI by local reparameterisation: dense pre-activations drawn per "
                     "(draw, input), later layers one sgemm over the S draws",
    /* .reproduces_loop = */ 0,
    /* .supports = */ lrt_supports,
    /* .create = */ lrt_create,
    /* .run = */ lrt_run,
    /* .bytes = */ lrt_bytes,
    /* .destroy = */ lrt_destroy,
};
