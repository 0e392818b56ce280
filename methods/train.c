/* train.c: the mini-batch training loop shared by the SGD-trained methods
 * (map, ensemble members, MC dropout): shuffled order from a seeded
 * stream, batches gathered into one buffer, forward, softmax cross-entropy,
 * backward, optimiser step on a cosine or constant learning-rate schedule.
 * Nothing here depends on thread scheduling: the same seed and thread
 * count give the same bytes. */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "common/eb_thread.h"
#include "methods/eb_methods.h"

eb_status eb_sgd_config_from_settings(eb_sgd_config *cfg, const eb_settings *s, eb_error *err)
{
    const char *opt = eb_settings_str(s, "optimizer");
    memset(cfg, 0, sizeof *cfg);
    eb_optim_config_default(&cfg->optim, !strcmp(opt, "sgd") ? EB_OPTIM_SGD : EB_OPTIM_ADAM);
    cfg->optim.lr = (float)eb_settings_float(s, "lr");
    if (cfg->optim.kind == EB_OPTIM_SGD)
        cfg->optim.momentum = (float)eb_settings_float(s, "momentum");
    cfg->optim.weight_decay = (float)eb_settings_float(s, "weight_decay");
    cfg->schedule = !strcmp(eb_settings_str(s, "schedule"), "constant") ? EB_SCHEDULE_CONSTANT
                                                                         : EB_SCHEDULE_COSINE;
    cfg->epochs = (int)eb_settings_int(s, "epochs");
    cfg->batch = (int)eb_settings_int(s, "batch");
    if (cfg->epochs < 1 || cfg->batch < 1)
        return eb_error_set(err, EB_ERR_ARG, "epochs (%d) and batch (%d) must be positive",
                            cfg->epochs, cfg->batch);
    return EB_OK;
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float lr_at(const eb_sgd_config *cfg, long step, long total)
{
    if (cfg->schedule == EB_SCHEDULE_CONSTANT || total <= 1)
        return cfg->optim.lr;
    return (float)(0.5 * cfg->optim.lr * (1.0 + cos(M_PI * (double)step / (double)total)));
}

/* Data-parallel training. Every step, worker w (the calling thread is
 * worker 0) gathers its shard of the mini-batch, runs forward and backward
 * into its own gradient buffer (scaled by 1/batch, so the shards sum to
 * the mean gradient), then, after a barrier, sums the shard gradients for
 * its own slice of theta in shard order and applies the optimiser to that
 * slice; a second barrier ends the step. The schedule is a pure function
 * of the step number, so workers need no other coordination. */
typedef struct train_job train_job;

typedef struct worker {
    train_job *job;
    int id;
    pthread_t tid;
    eb_net *net;
    float *xb;      /* (shard, in) */
    uint8_t *yb;    /* (shard) */
    float *dlogits; /* (shard, C) */
    float *grad;    /* (K) */
    double loss;    /* summed loss of the shard in the current step */
    int active;     /* the shard was non-empty this step */
} worker;

struct train_job {
    const eb_arch *arch;
    const eb_dataset *data;
    const eb_sgd_config *cfg;
    uint64_t seed, drop_seed;
    float *theta;
    eb_optim *opt;
    uint32_t *order;
    int T, B;
    long per_epoch, total;
    eb_barrier barrier;
    int stop;       /* set by worker 0 before an epoch barrier: workers exit */
    worker *w;
};

static void shard_of(const train_job *j, long step, int id, size_t *first, int *count)
{
    const size_t n = j->data->n;
    const size_t bfirst = (size_t)(step % j->per_epoch) * (size_t)j->B;
    const int nb = (int)(n - bfirst < (size_t)j->B ? n - bfirst : (size_t)j->B);
    const int per = (nb + j->T - 1) / j->T;
    int lo = id * per, hi = lo + per;
    if (lo > nb)
        lo = nb;
    if (hi > nb)
        hi = nb;
    *first = bfirst + (size_t)lo;
    *count = hi - lo;
}

static int batch_size(const train_job *j, long step)
{
    const size_t n = j->data->n;
    const size_t bfirst = (size_t)(step % j->per_epoch) * (size_t)j->B;
    return (int)(n - bfirst < (size_t)j->B ? n - bfirst : (size_t)j->B);
}

/* Forward and backward of worker w's shard of step `step`. */
static void shard_gradient(worker *w, long step)
{
    train_job *j = w->job;
    const size_t in = j->arch->in_size;
    const int C = j->arch->n_classes, nb = batch_size(j, step);
    size_t first;
    int count;
    const float *logits;
    eb_dropout_ctx drop;

    shard_of(j, step, w->id, &first, &count);
    w->active = count > 0;
    w->loss = 0.0;
    if (!count)
        return;
    for (int i = 0; i < count; i++) {
        const uint32_t ex = j->order[first + (size_t)i];
        memcpy(w->xb + (size_t)i * in, j->data->x + (size_t)ex * in, in * sizeof *w->xb);
        w->yb[i] = j->data->y[ex];
    }
    /* masks keyed by the example's place in the epoch's order */
    drop.mode = j->cfg->dropout ? EB_DROPOUT_SAMPLE : EB_DROPOUT_OFF;
    drop.seed = j->drop_seed;
    drop.pass = (uint64_t)step;
    drop.first_example = first;
    logits = eb_net_forward(w->net, j->theta, w->xb, count, &drop);
    w->loss = count * eb_softmax_xent(w->dlogits, logits, w->yb, count, C, 1.0f / (float)nb);
    eb_net_backward(w->net, j->theta, w->dlogits, w->grad, NULL);
}

/* Sums the shard gradients over worker w's slice of theta and updates it. */
static void shard_update(worker *w, long step)
{
    train_job *j = w->job;
    const size_t K = j->arch->n_params;
    const size_t lo = K * (size_t)w->id / (size_t)j->T, hi = K * (size_t)(w->id + 1) / (size_t)j->T;
    float *g = j->w[0].grad;
    for (int t = 1; t < j->T; t++) {
        const float *gt = j->w[t].grad;
        if (!j->w[t].active)
            continue;
        for (size_t i = lo; i < hi; i++)
            g[i] += gt[i];
    }
    eb_optim_step_range(j->opt, j->theta, g, lr_at(j->cfg, step, j->total), lo, hi);
}

/* Workers 1..T-1. Each epoch starts at a barrier after worker 0 has
 * shuffled the order (or set stop); each step has two barriers: gradients
 * done, update done. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    train_job *j = w->job;
    for (long epoch = 0;; epoch++) {
        eb_barrier_wait(&j->barrier);
        if (j->stop)
            return NULL;
        for (long b = 0; b < j->per_epoch; b++) {
            const long step = epoch * j->per_epoch + b;
            shard_gradient(w, step);
            eb_barrier_wait(&j->barrier);
            shard_update(w, step);
            eb_barrier_wait(&j->barrier);
        }
    }
}

static void free_workers(train_job *j)
{
    for (int t = 0; t < j->T && j->w; t++) {
        eb_net_free(j->w[t].net);
        eb_free_aligned(j->w[t].xb);
        eb_free(j->w[t].yb);
        eb_free(j->w[t].dlogits);
        eb_free_aligned(j->w[t].grad);
    }
    eb_free(j->w);
    j->w = NULL;
}

eb_status eb_sgd_train(const eb_arch *arch, const eb_dataset *data, const eb_sgd_config *cfg,
                       uint64_t seed, uint32_t member, float *theta, const char *phase,
                       eb_progress_fn progress, void *progress_ctx, double *final_loss,
                       eb_error *err)
{
    const size_t n = data->n, in = arch->in_size, C = (size_t)arch->n_classes;
    train_job job;
    eb_optim opt;
    eb_rng rng;
    eb_status st = EB_OK;
    int shard, started = 0, blas_threads = 0, have_barrier = 0;
    double epoch_loss = 0.0;

    memset(&opt, 0, sizeof opt);
    memset(&job, 0, sizeof job);
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "training set '%s' is empty", data->name);
    if ((size_t)data->h * data->w * data->c != in || data->n_classes > arch->n_classes)
        return eb_error_set(err, EB_ERR_ARG,
                            "training set '%s' (%dx%dx%d, %d classes) does not fit the "
                            "architecture (input %dx%dx%d, %d classes)",
                            data->name, data->h, data->w, data->c, data->n_classes, arch->in_h,
                            arch->in_w, arch->in_c, arch->n_classes);
    job.arch = arch;
    job.data = data;
    job.cfg = cfg;
    job.seed = seed;
    job.drop_seed = eb_rng_mix64(seed ^ (EB_STREAM_DROPOUT + member));
    job.theta = theta;
    job.opt = &opt;
    job.B = cfg->batch < (int)n ? cfg->batch : (int)n;
    job.T = cfg->threads > 1 ? cfg->threads : 1;
    if (job.T > job.B)
        job.T = job.B;
    job.per_epoch = (long)((n + (size_t)job.B - 1) / (size_t)job.B);
    job.total = job.per_epoch * cfg->epochs;
    shard = (job.B + job.T - 1) / job.T;

    st = eb_optim_init(&opt, &cfg->optim, arch->n_params, err);
    if (st)
        return st;
    job.order = eb_malloc(n * sizeof *job.order);
    job.w = eb_calloc((size_t)job.T, sizeof *job.w);
    if (!job.order || !job.w) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for training state");
        goto done;
    }
    for (int t = 0; t < job.T; t++) {
        worker *w = &job.w[t];
        w->job = &job;
        w->id = t;
        st = eb_net_new(arch, shard, &w->net, err);
        if (st)
            goto done;
        w->xb = eb_malloc_aligned(64, (size_t)shard * in * sizeof *w->xb);
        w->yb = eb_malloc((size_t)shard);
        w->dlogits = eb_malloc((size_t)shard * C * sizeof *w->dlogits);
        w->grad = eb_malloc_aligned(64, arch->n_params * sizeof *w->grad);
        if (!w->xb || !w->yb || !w->dlogits || !w->grad) {
            st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for training buffers "
                              "(batch %d, %d threads)", job.B, job.T);
            goto done;
        }
    }
    eb_rng_seed(&rng, seed, EB_STREAM_INIT + member);
    eb_arch_init_params(arch, theta, &rng);
    eb_rng_seed(&rng, seed, EB_STREAM_ORDER + member);
    for (size_t i = 0; i < n; i++)
        job.order[i] = (uint32_t)i;

    if (job.T > 1) {
        /* the shards' GEMMs run side by side, each on one BLAS thread */
        blas_threads = eb_nn_set_threads(0);
        eb_nn_set_threads(1);
        if (eb_barrier_init(&job.barrier, job.T) != 0) {
            st = eb_error_set(err, EB_ERR_INTERNAL, "cannot create a thread barrier");
            goto done;
        }
        have_barrier = 1;
        for (int t = 1; t < job.T; t++) {
            if (pthread_create(&job.w[t].tid, NULL, worker_main, &job.w[t]) != 0) {
                st = eb_error_set(err, EB_ERR_INTERNAL, "cannot start training thread %d of %d",
                                  t + 1, job.T);
                /* release the workers already started: they see stop */
                job.stop = 1;
                eb_barrier_set_count(&job.barrier, started + 1);
                eb_barrier_wait(&job.barrier);
                goto done;
            }
            started = t;
        }
    }

    for (int epoch = 0; epoch < cfg->epochs && !st; epoch++) {
        double t0 = now_sec(), loss_sum = 0.0;
        size_t seen = 0;
        eb_rng_shuffle_u32(&rng, job.order, n);
        if (job.T > 1)
            eb_barrier_wait(&job.barrier); /* the epoch's order is ready */
        for (long b = 0; b < job.per_epoch; b++) {
            const long step = (long)epoch * job.per_epoch + b;
            const int nb = batch_size(&job, step);
            /* advance the optimiser's step count before the barrier:
             * workers read it only in their update phase */
            eb_optim_begin_step(&opt);
            shard_gradient(&job.w[0], step);
            if (job.T > 1)
                eb_barrier_wait(&job.barrier);
            shard_update(&job.w[0], step);
            if (job.T > 1)
                eb_barrier_wait(&job.barrier);
            for (int t = 0; t < job.T; t++)
                loss_sum += job.w[t].loss;
            seen += (size_t)nb;
            if (progress && ((b + 1) % 64 == 0 || b + 1 == job.per_epoch)) {
                eb_progress p;
                p.phase = phase;
                p.epoch = epoch + 1;
                p.epochs = cfg->epochs;
                p.loss = loss_sum / (double)seen;
                p.fraction = (double)(step + 1) / (double)job.total;
                p.images_per_sec = (double)seen / (now_sec() - t0 + 1e-12);
                p.epoch_done = b + 1 == job.per_epoch;
                progress(progress_ctx, &p);
            }
        }
        epoch_loss = loss_sum / (double)seen;
        if (!isfinite(epoch_loss))
            st = eb_error_set(err, EB_ERR_NUMERIC,
                              "training diverged in epoch %d (loss is %g); lower the learning "
                              "rate (setting lr)", epoch + 1, epoch_loss);
    }
    if (started) {
        job.stop = 1;
        eb_barrier_wait(&job.barrier);
    }
    if (!st && final_loss)
        *final_loss = epoch_loss;
done:
    for (int t = 1; t <= started; t++)
        pthread_join(job.w[t].tid, NULL);
    if (have_barrier)
        eb_barrier_destroy(&job.barrier);
    if (blas_threads)
        eb_nn_set_threads(blas_threads);
    free_workers(&job);
    eb_free(job.order);
    eb_optim_free(&opt);
    return st;
}
