/* train.c: the mini-batch training loop shared by the SGD-trained methods
 * (map, ensemble members, MC dropout): shuffled order from a seeded
 * stream, batches gathered into one buffer, forward, softmax cross-entropy,
 * backward, optimiser step on a cosine or constant learning-rate schedule,
 * the gradients computed data-parallel by the engine of gradient.c.
 * Nothing here depends on thread scheduling: the same seed and thread
 * count give the same bytes. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "methods/eb_methods.h"
#include "methods/eb_samplers.h"

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

/* Data-parallel training runs on the gradient engine (gradient.c): every
 * step, each worker computes its shard's gradient (scaled by 1/batch, so
 * the shards sum to the mean gradient), then each sums the shards over
 * its own slice of theta in shard order and applies the optimiser there.
 * The schedule is a pure function of the step number, so workers need no
 * other coordination. */
typedef struct update_ctx {
    eb_optim *opt;
    float lr;
    const uint8_t *mask; /* (K) or NULL */
} update_ctx;

/* The optimiser's update of [lo, hi), inside the pruning mask if any. */
static void optim_update(void *uctx, float *theta, float *grad, size_t lo, size_t hi)
{
    update_ctx *u = uctx;
    eb_optim_step_masked_range(u->opt, theta, grad, u->lr, u->mask, lo, hi);
}

eb_status eb_sgd_train(const eb_arch *arch, const eb_dataset *data, const eb_sgd_config *cfg,
                       uint64_t seed, uint32_t member, float *theta, const char *phase,
                       eb_progress_fn progress, void *progress_ctx, double *final_loss,
                       eb_error *err)
{
    const size_t n = data->n, in = arch->in_size;
    eb_nn_shard_ctx shard;
    eb_grad_engine *engine = NULL;
    eb_optim opt;
    eb_rng rng;
    eb_status st = EB_OK;
    uint32_t *order = NULL;
    update_ctx u;
    int B, T, run_epochs;
    long per_epoch, total;
    double epoch_loss = 0.0;

    memset(&opt, 0, sizeof opt);
    if (n == 0)
        return eb_error_set(err, EB_ERR_ARG, "training set '%s' is empty", data->name);
    if ((size_t)data->h * data->w * data->c != in || data->n_classes > arch->n_classes)
        return eb_error_set(err, EB_ERR_ARG,
                            "training set '%s' (%dx%dx%d, %d classes) does not fit the "
                            "architecture (input %dx%dx%d, %d classes)",
                            data->name, data->h, data->w, data->c, data->n_classes, arch->in_h,
                            arch->in_w, arch->in_c, arch->n_classes);
    shard.arch = arch;
    shard.dropout = cfg->dropout;
    shard.drop_seed = eb_rng_mix64(seed ^ (EB_STREAM_DROPOUT + member));
    B = cfg->batch < (int)n ? cfg->batch : (int)n;
    T = cfg->threads > 1 ? cfg->threads : 1;
    per_epoch = (long)((n + (size_t)B - 1) / (size_t)B);
    total = per_epoch * cfg->epochs;

    st = eb_optim_init(&opt, &cfg->optim, arch->n_params, err);
    if (st)
        return st;
    order = eb_malloc(n * sizeof *order);
    if (!order) {
        st = eb_error_set(err, EB_ERR_NOMEM, "out of memory for training state");
        goto done;
    }
    st = eb_grad_engine_new(&eb_nn_shard_ops, &shard, data, arch->n_params, B, T, &engine, err);
    if (st)
        goto done;
    if (!cfg->warm_start) {
        eb_rng_seed(&rng, seed, EB_STREAM_INIT + member);
        eb_arch_init_params(arch, theta, &rng);
    }
    if (cfg->mask)
        for (size_t i = 0; i < arch->n_params; i++)
            if (!cfg->mask[i])
                theta[i] = 0.0f;
    eb_rng_seed(&rng, seed, EB_STREAM_ORDER + member);
    for (size_t i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    u.opt = &opt;
    u.mask = cfg->mask;
    run_epochs = cfg->stop_epoch > 0 && cfg->stop_epoch < cfg->epochs ? cfg->stop_epoch
                                                                      : cfg->epochs;

    for (int epoch = 0; epoch < run_epochs && !st; epoch++) {
        double t0 = now_sec(), loss_sum = 0.0;
        size_t seen = 0;
        eb_rng_shuffle_u32(&rng, order, n);
        for (long b = 0; b < per_epoch; b++) {
            const long step = (long)epoch * per_epoch + b;
            const size_t first = (size_t)b * (size_t)B;
            const int nb = (int)(n - first < (size_t)B ? n - first : (size_t)B);
            eb_optim_begin_step(&opt);
            u.lr = lr_at(cfg, step, total);
            /* dropout masks are keyed by the example's place in the
             * epoch's order */
            loss_sum += eb_grad_engine_step(engine, theta, order + first, nb, (uint64_t)step,
                                            first, optim_update, &u);
            if (cfg->after_step)
                cfg->after_step(cfg->after_step_ctx, theta, arch->n_params, step, u.lr);
            seen += (size_t)nb;
            if (progress && ((b + 1) % 64 == 0 || b + 1 == per_epoch)) {
                eb_progress p;
                p.phase = phase;
                p.epoch = epoch + 1;
                p.epochs = run_epochs;
                p.loss = loss_sum / (double)seen;
                p.fraction = (double)(step + 1) / ((double)per_epoch * run_epochs);
                p.images_per_sec = (double)seen / (now_sec() - t0 + 1e-12);
                p.epoch_done = b + 1 == per_epoch;
                progress(progress_ctx, &p);
            }
        }
        epoch_loss = loss_sum / (double)seen;
        if (!isfinite(epoch_loss))
            st = eb_error_set(err, EB_ERR_NUMERIC,
                              "training diverged in epoch %d (loss is %g); lower the learning "
                              "rate (setting lr)", epoch + 1, epoch_loss);
    }
    if (!st && final_loss)
        *final_loss = epoch_loss;
done:
    eb_grad_engine_free(engine);
    eb_free(order);
    eb_optim_free(&opt);
    return st;
}
