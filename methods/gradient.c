/* gradient.c: the data-parallel gradient engine (factored out of the
 * training loop so eb_sgd_train, the SG-MCMC samplers, HMC and VI share
 * one implementation), the plain network loss as shard operations, and the
 * network target of the samplers.
 *
 * A step: worker w (the calling thread is worker 0) gathers its
 * contiguous shard of the batch, computes the shard's gradient scaled by
 * 1/count into its own buffer; after a barrier every worker sums the
 * shard gradients over its own slice of the parameters in shard order and
 * applies the caller's update there; a last barrier ends the step. Sums in
 * a fixed order make a given thread count deterministic. */
#include <pthread.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "common/eb_thread.h"
#include "methods/eb_samplers.h"

typedef struct engine_worker {
    eb_grad_engine *e;
    int id;
    pthread_t tid;
    void *ws;       /* the ops' workspace */
    float *xb;      /* (shard, in) */
    uint8_t *yb;    /* (shard) */
    float *grad;    /* (dim) */
    double loss;    /* summed loss of the shard in the current step */
    int active;     /* the shard was non-empty this step */
} engine_worker;

struct eb_grad_engine {
    const eb_shard_ops *ops;
    void *ctx;
    const eb_dataset *data;
    size_t dim;
    int T, max_batch, shard_max;
    int blas_threads; /* to restore; 0 when unchanged */
    eb_barrier barrier;
    int have_barrier, started;
    engine_worker *w;
    /* the current step, written by worker 0 before the start barrier */
    float *theta;
    const uint32_t *idx;
    int count;
    uint64_t pass, first_example;
    eb_update_fn update;
    void *uctx;
    int stop;
};

/* Contiguous shard of worker id: ceil(count / T) examples each, the last
 * ones possibly shorter or empty (the split eb_sgd_train always used). */
static void shard_range(const eb_grad_engine *e, int id, int *lo, int *hi)
{
    const int per = (e->count + e->T - 1) / e->T;
    *lo = id * per < e->count ? id * per : e->count;
    *hi = *lo + per < e->count ? *lo + per : e->count;
}

/* Parameter slice of worker id, aligned to noise blocks so keyed noise
 * costs no partial blocks. */
static void slice_range(const eb_grad_engine *e, int id, size_t *lo, size_t *hi)
{
    const size_t blocks = (e->dim + EB_NOISE_BLOCK - 1) / EB_NOISE_BLOCK;
    size_t a = blocks * (size_t)id / (size_t)e->T * EB_NOISE_BLOCK;
    size_t b = blocks * (size_t)(id + 1) / (size_t)e->T * EB_NOISE_BLOCK;
    *lo = a < e->dim ? a : e->dim;
    *hi = b < e->dim ? b : e->dim;
}

static void worker_gradient(engine_worker *w)
{
    eb_grad_engine *e = w->e;
    const size_t in = (size_t)e->data->h * e->data->w * e->data->c;
    int lo, hi;
    shard_range(e, w->id, &lo, &hi);
    w->active = hi > lo;
    w->loss = 0.0;
    if (!w->active)
        return;
    for (int i = lo; i < hi; i++) {
        const uint32_t ex = e->idx[i];
        memcpy(w->xb + (size_t)(i - lo) * in, e->data->x + (size_t)ex * in, in * sizeof *w->xb);
        w->yb[i - lo] = e->data->y[ex];
    }
    w->loss = e->ops->shard(e->ctx, w->ws, e->theta, w->xb, w->yb, hi - lo,
                            1.0f / (float)e->count, e->pass, e->first_example + (uint64_t)lo,
                            w->grad);
}

static void worker_update(engine_worker *w)
{
    eb_grad_engine *e = w->e;
    float *g = e->w[0].grad;
    size_t lo, hi;
    slice_range(e, w->id, &lo, &hi);
    if (lo >= hi)
        return;
    for (int t = 1; t < e->T; t++) {
        const float *gt = e->w[t].grad;
        if (!e->w[t].active)
            continue;
        for (size_t i = lo; i < hi; i++)
            g[i] += gt[i];
    }
    e->update(e->uctx, e->theta, g, lo, hi);
}

/* Workers 1..T-1: start barrier (the step is set, or stop), gradient,
 * barrier, update, barrier. */
static void *worker_main(void *arg)
{
    engine_worker *w = arg;
    eb_grad_engine *e = w->e;
    for (;;) {
        eb_barrier_wait(&e->barrier);
        if (e->stop)
            return NULL;
        worker_gradient(w);
        eb_barrier_wait(&e->barrier);
        worker_update(w);
        eb_barrier_wait(&e->barrier);
    }
}

void eb_grad_engine_free(eb_grad_engine *e)
{
    if (!e)
        return;
    if (e->started) {
        e->stop = 1;
        eb_barrier_wait(&e->barrier);
        for (int t = 1; t <= e->started; t++)
            pthread_join(e->w[t].tid, NULL);
    }
    if (e->have_barrier)
        eb_barrier_destroy(&e->barrier);
    if (e->blas_threads)
        eb_nn_set_threads(e->blas_threads);
    for (int t = 0; t < e->T && e->w; t++) {
        if (e->w[t].ws)
            e->ops->worker_free(e->w[t].ws);
        eb_free_aligned(e->w[t].xb);
        eb_free(e->w[t].yb);
        eb_free_aligned(e->w[t].grad);
    }
    eb_free(e->w);
    eb_free(e);
}

eb_status eb_grad_engine_new(const eb_shard_ops *ops, void *ctx, const eb_dataset *data,
                             size_t dim, int max_batch, int threads, eb_grad_engine **out,
                             eb_error *err)
{
    const size_t in = (size_t)data->h * data->w * data->c;
    eb_grad_engine *e;
    eb_status st = EB_OK;

    *out = NULL;
    if (max_batch < 1 || dim < 1)
        return eb_error_set(err, EB_ERR_ARG, "gradient engine: batch %d and dimension %zu must "
                            "be positive", max_batch, dim);
    e = eb_calloc(1, sizeof *e);
    if (!e)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a gradient engine");
    e->ops = ops;
    e->ctx = ctx;
    e->data = data;
    e->dim = dim;
    e->max_batch = max_batch;
    e->T = threads > 1 ? threads : 1;
    if (e->T > max_batch)
        e->T = max_batch;
    e->shard_max = (max_batch + e->T - 1) / e->T;
    e->w = eb_calloc((size_t)e->T, sizeof *e->w);
    if (!e->w) {
        eb_free(e);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a gradient engine");
    }
    for (int t = 0; t < e->T; t++) {
        engine_worker *w = &e->w[t];
        w->e = e;
        w->id = t;
        st = ops->worker_new(ctx, e->shard_max, &w->ws, err);
        if (st)
            goto fail;
        w->xb = eb_malloc_aligned(64, (size_t)e->shard_max * in * sizeof *w->xb);
        w->yb = eb_malloc((size_t)e->shard_max);
        w->grad = eb_malloc_aligned(64, dim * sizeof *w->grad);
        if (!w->xb || !w->yb || !w->grad) {
            st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for gradient buffers (batch %d, "
                              "%d threads, %zu parameters)", max_batch, e->T, dim);
            goto fail;
        }
    }
    if (e->T > 1) {
        /* the shards' GEMMs run side by side, each on one BLAS thread */
        e->blas_threads = eb_nn_set_threads(0);
        eb_nn_set_threads(1);
        if (eb_barrier_init(&e->barrier, e->T) != 0) {
            st = eb_error_set(err, EB_ERR_INTERNAL, "cannot create a thread barrier");
            goto fail;
        }
        e->have_barrier = 1;
        for (int t = 1; t < e->T; t++) {
            if (pthread_create(&e->w[t].tid, NULL, worker_main, &e->w[t]) != 0) {
                st = eb_error_set(err, EB_ERR_INTERNAL, "cannot start gradient thread %d of %d",
                                  t + 1, e->T);
                /* the workers already started wait at the start barrier:
                 * shrink it to them and this thread, and let free stop
                 * them */
                eb_barrier_set_count(&e->barrier, e->started + 1);
                goto fail;
            }
            e->started = t;
        }
    }
    *out = e;
    return EB_OK;
fail:
    eb_grad_engine_free(e);
    return st;
}

int eb_grad_engine_threads(const eb_grad_engine *e)
{
    return e->T;
}

double eb_grad_engine_step(eb_grad_engine *e, float *theta, const uint32_t *idx, int count,
                           uint64_t pass, uint64_t first_example, eb_update_fn update,
                           void *uctx)
{
    double loss = 0.0;
    e->theta = theta;
    e->idx = idx;
    e->count = count < e->max_batch ? count : e->max_batch;
    e->pass = pass;
    e->first_example = first_example;
    e->update = update;
    e->uctx = uctx;
    if (e->T > 1)
        eb_barrier_wait(&e->barrier); /* the step is set */
    worker_gradient(&e->w[0]);
    if (e->T > 1)
        eb_barrier_wait(&e->barrier); /* every shard gradient is done */
    worker_update(&e->w[0]);
    if (e->T > 1)
        eb_barrier_wait(&e->barrier); /* every slice is updated */
    for (int t = 0; t < e->T; t++)
        loss += e->w[t].loss;
    return loss;
}

/* ---- the plain network loss ---------------------------------------- */

typedef struct nn_ws {
    eb_net *net;
    float *dlogits; /* (max_count, C) */
} nn_ws;

static eb_status nn_worker_new(void *ctx, int max_count, void **out, eb_error *err)
{
    const eb_nn_shard_ctx *c = ctx;
    nn_ws *ws = eb_calloc(1, sizeof *ws);
    eb_status st;
    *out = NULL;
    if (!ws)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a network worker");
    st = eb_net_new(c->arch, max_count, &ws->net, err);
    if (st) {
        eb_free(ws);
        return st;
    }
    ws->dlogits = eb_malloc((size_t)max_count * (size_t)c->arch->n_classes * sizeof(float));
    if (!ws->dlogits) {
        eb_net_free(ws->net);
        eb_free(ws);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a network worker");
    }
    *out = ws;
    return EB_OK;
}

static void nn_worker_free(void *p)
{
    nn_ws *ws = p;
    eb_net_free(ws->net);
    eb_free(ws->dlogits);
    eb_free(ws);
}

static double nn_shard(void *ctx, void *p, const float *theta, const float *x, const uint8_t *y,
                       int count, float scale, uint64_t pass, uint64_t first_example, float *grad)
{
    const eb_nn_shard_ctx *c = ctx;
    nn_ws *ws = p;
    const eb_dropout_ctx drop = {c->dropout ? EB_DROPOUT_SAMPLE : EB_DROPOUT_OFF, c->drop_seed,
                                 pass, first_example};
    const float *logits = eb_net_forward(ws->net, theta, x, count, &drop);
    const double loss =
        count * eb_softmax_xent(ws->dlogits, logits, y, count, c->arch->n_classes, scale);
    eb_net_backward(ws->net, theta, ws->dlogits, grad, NULL);
    return loss;
}

const eb_shard_ops eb_nn_shard_ops = {
    /* .worker_new = */ nn_worker_new,
    /* .worker_free = */ nn_worker_free,
    /* .shard = */ nn_shard,
};

/* ---- the network target ------------------------------------------- */

typedef struct nn_target {
    eb_nn_shard_ctx shard;
    eb_grad_engine *engine;
} nn_target;

static double nn_target_step(void *ctx, float *theta, const uint32_t *idx, int count,
                             uint64_t pass, uint64_t first_example, eb_update_fn update,
                             void *uctx)
{
    nn_target *t = ctx;
    return eb_grad_engine_step(t->engine, theta, idx, count, pass, first_example, update, uctx);
}

static void nn_target_destroy(void *ctx)
{
    nn_target *t = ctx;
    eb_grad_engine_free(t->engine);
    eb_free(t);
}

eb_status eb_target_nn(eb_target *t, const eb_arch *arch, const eb_dataset *data, int max_batch,
                       int threads, eb_error *err)
{
    nn_target *c;
    eb_status st;
    memset(t, 0, sizeof *t);
    if ((size_t)data->h * data->w * data->c != arch->in_size || data->n_classes > arch->n_classes)
        return eb_error_set(err, EB_ERR_ARG,
                            "training set '%s' (%dx%dx%d, %d classes) does not fit the "
                            "architecture (input %dx%dx%d, %d classes)",
                            data->name, data->h, data->w, data->c, data->n_classes, arch->in_h,
                            arch->in_w, arch->in_c, arch->n_classes);
    if (data->n == 0)
        return eb_error_set(err, EB_ERR_ARG, "training set '%s' is empty", data->name);
    c = eb_calloc(1, sizeof *c);
    if (!c)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for a network target");
    c->shard.arch = arch;
    if ((size_t)max_batch > data->n)
        max_batch = (int)data->n;
    st = eb_grad_engine_new(&eb_nn_shard_ops, &c->shard, data, arch->n_params, max_batch,
                            threads, &c->engine, err);
    if (st) {
        eb_free(c);
        return st;
    }
    t->dim = arch->n_params;
    t->n = data->n;
    t->max_batch = max_batch;
    t->ctx = c;
    t->step = nn_target_step;
    t->destroy = nn_target_destroy;
    return EB_OK;
}

void eb_target_free(eb_target *t)
{
    if (t && t->destroy && t->ctx)
        t->destroy(t->ctx);
    if (t)
        memset(t, 0, sizeof *t);
}
