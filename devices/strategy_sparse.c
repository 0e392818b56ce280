/* strategy_sparse.c: `sparse` for pruned samples posteriors stored
 * shared-sparse or CSR, run in place from the bundle's map (the
 * posterior is opened with EB_POSTERIOR_SPARSE: no dense copy).
 *
 * The index set is decoded once, at load: for every parameterised layer,
 * where each output row's kept weights start and end among the stored
 * positions, and where each bias is (or that it was pruned to zero).
 * Shared-sparse storage has one index set for all S members, so one such
 * table serves every member and only the S value rows differ; CSR has
 * one per member. A prediction then runs like `stacked` (members split
 * into contiguous runs over the threads, inputs 16 at a time), each dense
 * layer through eb_kern_sparse_gemv over the kept weights only, so a
 * member reads its stored values and the shared index instead of K
 * dense floats. Convolutions scatter the member's kernel into a small
 * dense buffer and run on eb_kern_conv2d_infer (the direct kernel on
 * AVX-512; else im2col + sgemm, OpenBLAS at one thread inside the
 * members' threads).
 *
 * Same members, same inputs: the outputs differ from loop's (the decoded
 * dense weights) only in summation order, and not at all with the thread
 * count or batch split. */
#include <string.h>

#include "common/eb_alloc.h"
#include "devices/strategy.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/nn_kernels.h"

#define CHUNK 16

typedef struct thread_ws {
    float *a, *b;    /* (CHUNK, max_act) */
    float *cols;     /* eb_kern_conv2d_infer scratch */
    float *wbuf;     /* one conv layer's dense weights and biases */
    int32_t *argmax; /* (CHUNK, max_act) */
    float *probs;    /* (CHUNK, C) */
} thread_ws;

typedef struct sparse {
    const eb_posterior *p;
    uint32_t max_draws;
    int shared;          /* one index set for every member */
    uint32_t n_sets;     /* index tables: 1 (shared) or S (csr) */
    size_t R, B;         /* row starts and bias slots per table */
    uint64_t *rp;        /* (n_sets, R) row starts, positions into values/index */
    int64_t *bp;         /* (n_sets, B) bias positions; -1: pruned */
    size_t rp_off[EB_ARCH_MAX_LAYERS], bp_off[EB_ARCH_MAX_LAYERS];
    size_t act_len, cols_len, wbuf_len;
    int has_conv;
    int n_ws;
    thread_ws ws[EB_STRATEGY_MAX_THREADS];
    size_t bytes;
} sparse;

static int has_params(const eb_layer *L)
{
    return L->kind == EB_LAYER_DENSE || L->kind == EB_LAYER_CONV2D;
}

static eb_status sparse_supports(const eb_posterior *p, eb_error *err)
{
    if (p->repr != EB_REPR_SAMPLES)
        return eb_error_set(err, EB_ERR_UNSUPPORTED, "sparse runs samples posteriors, not %s",
                            eb_repr_name(p->repr));
    if (!eb_posterior_sparse(p))
        return eb_error_set(err, EB_ERR_UNSUPPORTED,
                            "sparse runs shared-sparse or csr storage kept in place; this "
                            "posterior is %s", eb_storage_name(p->storage));
    if (p->k > UINT32_MAX)
        return eb_error_set(err, EB_ERR_UNSUPPORTED, "sparse needs K < 2^32 (K = %zu)", p->k);
    return EB_OK;
}

/* First position in [lo, hi) whose index is >= key. */
static uint64_t lower_bound(const uint32_t *idx, uint64_t lo, uint64_t hi, uint64_t key)
{
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (idx[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Table t over the positions [lo, hi) of the index. */
static void build_table(sparse *sp, uint32_t t, uint64_t lo, uint64_t hi)
{
    const eb_arch *a = &sp->p->arch;
    const uint32_t *idx = sp->p->stored.index;
    uint64_t *rp = sp->rp + (size_t)t * sp->R;
    int64_t *bp = sp->bp + (size_t)t * sp->B;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        uint64_t off, row;
        if (!has_params(L))
            continue;
        off = L->param_offset;
        row = L->n_weights / (uint64_t)L->units;
        for (int o = 0; o <= L->units; o++)
            rp[sp->rp_off[i] + (size_t)o] = lower_bound(idx, lo, hi, off + (uint64_t)o * row);
        for (int o = 0; o < L->units; o++) {
            uint64_t key = off + L->n_weights + (uint64_t)o;
            uint64_t j = lower_bound(idx, lo, hi, key);
            bp[sp->bp_off[i] + (size_t)o] = j < hi && idx[j] == key ? (int64_t)j : -1;
        }
    }
}

static eb_status sparse_create(const eb_posterior *p, int max_batch, uint32_t max_draws,
                               void **state, eb_error *err)
{
    const eb_arch *a = &p->arch;
    const eb_bundle_stored *sv = &p->stored;
    sparse *sp = eb_calloc(1, sizeof *sp);
    (void)max_batch;
    if (!sp)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the sparse strategy");
    sp->p = p;
    sp->max_draws = max_draws;
    sp->shared = sv->kind == EB_STORE_SHARED_SPARSE;
    sp->n_sets = sp->shared ? 1 : max_draws;
    sp->act_len = (size_t)CHUNK * (a->max_act > a->in_size ? a->max_act : a->in_size);
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        if (!has_params(L))
            continue;
        sp->rp_off[i] = sp->R;
        sp->bp_off[i] = sp->B;
        sp->R += (size_t)L->units + 1;
        sp->B += (size_t)L->units;
        if (L->kind == EB_LAYER_CONV2D) {
            size_t len = eb_kern_conv2d_infer_scratch(CHUNK, L->in_h, L->in_w, L->in_c, L->units);
            sp->has_conv = 1;
            if (len > sp->cols_len)
                sp->cols_len = len;
            if (L->n_weights + L->n_bias > sp->wbuf_len)
                sp->wbuf_len = L->n_weights + L->n_bias;
        }
    }
    sp->rp = eb_malloc((size_t)sp->n_sets * sp->R * sizeof *sp->rp);
    sp->bp = eb_malloc((size_t)sp->n_sets * sp->B * sizeof *sp->bp);
    if (!sp->rp || !sp->bp) {
        eb_free(sp->rp);
        eb_free(sp->bp);
        eb_free(sp);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for the sparse index tables");
    }
    sp->bytes = (size_t)sp->n_sets * (sp->R * sizeof *sp->rp + sp->B * sizeof *sp->bp);
    if (sp->shared)
        build_table(sp, 0, 0, sv->n_index);
    else
        for (uint32_t s = 0; s < sp->n_sets; s++)
            build_table(sp, s, sv->rowptr[s], sv->rowptr[s + 1]);
    *state = sp;
    return EB_OK;
}

static void free_ws(thread_ws *w)
{
    eb_free_aligned(w->a);
    eb_free_aligned(w->b);
    eb_free_aligned(w->cols);
    eb_free_aligned(w->wbuf);
    eb_free(w->argmax);
    eb_free(w->probs);
    memset(w, 0, sizeof *w);
}

static eb_status grow_ws(sparse *sp, int T, eb_error *err)
{
    const size_t C = (size_t)sp->p->arch.n_classes;
    while (sp->n_ws < T) {
        thread_ws *w = &sp->ws[sp->n_ws];
        w->a = eb_malloc_aligned(64, sp->act_len * sizeof(float));
        w->b = eb_malloc_aligned(64, sp->act_len * sizeof(float));
        w->cols = sp->cols_len ? eb_malloc_aligned(64, sp->cols_len * sizeof(float)) : NULL;
        w->wbuf = sp->wbuf_len ? eb_malloc_aligned(64, sp->wbuf_len * sizeof(float)) : NULL;
        w->argmax = eb_malloc(sp->act_len * sizeof(int32_t));
        w->probs = eb_malloc((size_t)CHUNK * C * sizeof(float));
        if (!w->a || !w->b || (sp->cols_len && !w->cols) || (sp->wbuf_len && !w->wbuf) ||
            !w->argmax || !w->probs) {
            free_ws(w);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "out of memory for the sparse strategy's thread workspaces");
        }
        sp->bytes += (3 * sp->act_len + sp->cols_len + sp->wbuf_len) * sizeof(float) +
                     CHUNK * C * sizeof(float);
        sp->n_ws++;
    }
    return EB_OK;
}

/* Member s's logits over nb inputs. */
static const float *member_forward(const sparse *sp, uint32_t s, const float *x, int nb,
                                   thread_ws *w)
{
    const eb_posterior *p = sp->p;
    const eb_arch *a = &p->arch;
    const eb_bundle_stored *sv = &p->stored;
    const uint32_t t = sp->shared ? 0 : s;
    const float *vals = (const float *)sv->values + (sp->shared ? (size_t)s * sv->n_index : 0);
    const uint64_t *rp_t = sp->rp + (size_t)t * sp->R;
    const int64_t *bp_t = sp->bp + (size_t)t * sp->B;
    const float *in = x;
    float *bufs[2] = {w->a, w->b};
    int next = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const uint64_t *rp = rp_t + sp->rp_off[i];
        const int64_t *bp = bp_t + sp->bp_off[i];
        float *o = bufs[next];
        switch (L->kind) {
        case EB_LAYER_DENSE:
            for (int r = 0; r < nb; r++) {
                float *orow = o + (size_t)r * L->out_size;
                eb_kern_sparse_gemv(orow, in + (size_t)r * L->in_size, vals, sv->index, rp,
                                    L->param_offset, (int)L->in_size, L->units);
                for (int u = 0; u < L->units; u++)
                    if (bp[u] >= 0)
                        orow[u] += vals[bp[u]];
            }
            break;
        case EB_LAYER_CONV2D: {
            memset(w->wbuf, 0, (L->n_weights + L->n_bias) * sizeof(float));
            for (int u = 0; u < L->units; u++) {
                for (uint64_t j = rp[u]; j < rp[u + 1]; j++)
                    w->wbuf[sv->index[j] - L->param_offset] = vals[j];
                if (bp[u] >= 0)
                    w->wbuf[L->n_weights + (size_t)u] = vals[bp[u]];
            }
            eb_kern_conv2d_infer(o, w->cols, in, w->wbuf, w->wbuf + L->n_weights, nb, L->in_h,
                                 L->in_w, L->in_c, L->units, NULL, 0);
            break;
        }
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_forward(o, w->argmax, in, nb, L->in_h, L->in_w, L->in_c);
            break;
        case EB_LAYER_RELU:
            eb_kern_relu_forward(o, in, (size_t)nb * L->out_size);
            break;
        case EB_LAYER_DROPOUT:
        case EB_LAYER_FLATTEN:
            continue;
        }
        in = o;
        next ^= 1;
    }
    return in;
}

static const float *sparse_member(void *state, int t, uint32_t s, const float *x, int nb)
{
    sparse *sp = state;
    return member_forward(sp, s, x, nb, &sp->ws[t]);
}

static float *sparse_scratch(void *state, int t)
{
    return ((sparse *)state)->ws[t].probs;
}

static eb_status sparse_run(void *state, const float *x, size_t n, uint32_t S, uint64_t seed,
                            uint64_t first_example, int threads, float *probs, eb_error *err)
{
    sparse *sp = state;
    const eb_arch *a = &sp->p->arch;
    const eb_members_plan plan = {sp, a->in_size, (size_t)a->n_classes, CHUNK, NULL,
                                  sparse_member, sparse_scratch};
    eb_status rc;
    int T, blas;
    (void)seed;
    (void)first_example;
    if ((rc = eb_strategy_threads(S, sp->max_draws, threads, &T, err)) ||
        (rc = grow_ws(sp, T, err)))
        return rc;
    blas = (T > 1 && sp->has_conv) ? eb_strategy_blas_serial_begin() : 0;
    eb_strategy_run_members(&plan, x, n, S, T, probs);
    if (blas)
        eb_strategy_blas_serial_end(blas);
    return EB_OK;
}

static size_t sparse_bytes(const void *state)
{
    const sparse *sp = state;
    return sizeof *sp + sp->bytes;
}

static void sparse_destroy(void *state)
{
    sparse *sp = state;
    if (!sp)
        return;
    for (int t = 0; t < sp->n_ws; t++)
        free_ws(&sp->ws[t]);
    eb_free(sp->rp);
    eb_free(sp->bp);
    eb_free(sp);
}

const eb_strategy_ops eb_strategy_sparse = {
    /* .name = */ "sparse",
    /* .summary = */ "pruned members in place: the index set decoded once (shared by all "
                     "members for shared-sparse), only kept weights read",
    /* .reproduces_loop = */ 1,
    /* .supports = */ sparse_supports,
    /* .create = */ sparse_create,
    /* .run = */ sparse_run,
    /* .bytes = */ sparse_bytes,
    /* .destroy = */ sparse_destroy,
};
