/* distill.c: the `distill` transform (a posterior -> one student network
 * with a head: bdk, gped or end2, see eb_distill.h), the student losses
 * with their gradients, the student training loop (the model core's
 * forward/backward and optimisers, single-threaded except for BLAS), and
 * the Dirichlet numerics the predictor uses to turn a student's head into
 * member probabilities. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "methods/eb_distill.h"
#include "methods/eb_prune.h"

/* Streams of this transform (eb_rng.h lists the shared ones; 0xC000 and
 * up are unused there). */
enum {
    STREAM_AUGMENT = 0xC000, /* input perturbations, per step */
    STREAM_TEACHER = 0xC100  /* the teacher's stochastic draws */
};

int eb_distill_classes(eb_head_kind head, int outputs)
{
    return head == EB_HEAD_GPED ? outputs - 1 : outputs;
}

/* ---- Dirichlet numerics ----------------------------------------------- */

double eb_digamma(double x)
{
    double r = 0.0, f, f2;
    while (x < 10.0) {
        r -= 1.0 / x;
        x += 1.0;
    }
    f = 1.0 / x;
    f2 = f * f;
    /* psi(x) ~ ln x - 1/(2x) - sum B_2k / (2k x^2k) */
    return r + log(x) - 0.5 * f -
           f2 * (1.0 / 12 - f2 * (1.0 / 120 - f2 * (1.0 / 252 - f2 * (1.0 / 240 - f2 * (1.0 / 132)))));
}

double eb_dirichlet_logpdf(const double *alpha, const double *p, int C)
{
    double a0 = 0.0, lp = 0.0;
    for (int c = 0; c < C; c++) {
        a0 += alpha[c];
        lp += (alpha[c] - 1.0) * log(p[c]) - lgamma(alpha[c]);
    }
    return lp + lgamma(a0);
}

double eb_dirichlet_expected_entropy(double alpha0, const float *pbar, int C)
{
    double e = eb_digamma(alpha0 + 1.0);
    for (int c = 0; c < C; c++)
        if (pbar[c] > 0.0f)
            e -= (double)pbar[c] * eb_digamma(alpha0 * (double)pbar[c] + 1.0);
    return e;
}

#define PRECISION_LO 1e-4
#define PRECISION_HI 1e8

double eb_dirichlet_solve_precision(const float *pbar, int C, double h)
{
    double lo = log(PRECISION_LO), hi = log(PRECISION_HI);
    const double h_lo = eb_dirichlet_expected_entropy(PRECISION_LO, pbar, C);
    const double h_hi = eb_dirichlet_expected_entropy(PRECISION_HI, pbar, C);
    if (!(h > h_lo)) /* also NaN */
        return PRECISION_LO;
    if (h >= h_hi)
        return PRECISION_HI;
    /* 60 halvings of a range of ~30 in log alpha0: far below float noise */
    for (int it = 0; it < 60; it++) {
        const double mid = 0.5 * (lo + hi);
        if (eb_dirichlet_expected_entropy(exp(mid), pbar, C) < h)
            lo = mid;
        else
            hi = mid;
    }
    return exp(0.5 * (lo + hi));
}

/* log of a Gamma(a, 1) variate, a > 0. */
static double log_gamma_draw(double a, eb_rng *r)
{
    double boost = 0.0, d, c;
    if (a < 1.0) {
        /* G(a) = G(a + 1) U^(1/a); U in (0, 1] */
        boost = log(1.0 - eb_rng_uniform(r)) / a;
        a += 1.0;
    }
    d = a - 1.0 / 3.0;
    c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = eb_rng_normal(r), v = 1.0 + c * x, u;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        u = 1.0 - eb_rng_uniform(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return log(d * v) + boost;
    }
}

void eb_dirichlet_draw(float *out, const double *alpha, int C, eb_rng *r)
{
    double l[EB_DISTILL_MAX_CLASSES], m = -DBL_MAX, sum = 0.0;
    for (int c = 0; c < C; c++) {
        l[c] = log_gamma_draw(alpha[c] > 1e-12 ? alpha[c] : 1e-12, r);
        m = l[c] > m ? l[c] : m;
    }
    for (int c = 0; c < C; c++) {
        l[c] = exp(l[c] - m);
        sum += l[c];
    }
    for (int c = 0; c < C; c++)
        out[c] = (float)(l[c] / sum);
}

/* Softmax of z (C) into out, in double. */
static void softmax_d(double *out, const float *z, int C)
{
    double m = z[0], s = 0.0;
    for (int c = 1; c < C; c++)
        m = z[c] > m ? z[c] : m;
    for (int c = 0; c < C; c++) {
        out[c] = exp((double)z[c] - m);
        s += out[c];
    }
    for (int c = 0; c < C; c++)
        out[c] /= s;
}

static double clamp_z(float z)
{
    return z > EB_DISTILL_ZMAX ? EB_DISTILL_ZMAX : z < -EB_DISTILL_ZMAX ? -EB_DISTILL_ZMAX : z;
}

void eb_distill_members(float *probs, const float *z, eb_head_kind head, int C, uint32_t S,
                        uint64_t seed, uint64_t example, double *alpha)
{
    eb_rng r;
    if (head == EB_HEAD_CATEGORICAL) {
        softmax_d(alpha, z, C);
        for (uint32_t s = 0; s < S; s++)
            for (int c = 0; c < C; c++)
                probs[(size_t)s * C + c] = (float)alpha[c];
        return;
    }
    if (head == EB_HEAD_GPED) {
        float pbar[EB_DISTILL_MAX_CLASSES] = {0};
        double a0, h = log((double)C) / (1.0 + exp(-(double)z[C]));
        softmax_d(alpha, z, C);
        for (int c = 0; c < C; c++)
            pbar[c] = (float)alpha[c];
        a0 = eb_dirichlet_solve_precision(pbar, C, h);
        for (int c = 0; c < C; c++)
            alpha[c] *= a0;
    } else {
        for (int c = 0; c < C; c++)
            alpha[c] = exp(clamp_z(z[c]));
    }
    eb_rng_seed(&r, eb_rng_mix64(seed ^ EB_STREAM_PREDICT), example);
    for (uint32_t s = 0; s < S; s++)
        eb_dirichlet_draw(probs + (size_t)s * C, alpha, C, &r);
}

void eb_distill_mean_grad(float *dz, float *pbar, const float *z, eb_head_kind head, int O,
                          int C, uint8_t y)
{
    double p[EB_DISTILL_MAX_CLASSES];
    float zc[EB_DISTILL_MAX_CLASSES];
    for (int c = 0; c < C; c++)
        zc[c] = head == EB_HEAD_DIRICHLET ? (float)clamp_z(z[c]) : z[c];
    softmax_d(p, zc, C);
    for (int c = 0; c < O; c++) {
        double g = c < C ? p[c] - (c == y ? 1.0 : 0.0) : 0.0;
        /* end2: the clamp passes no gradient */
        if (head == EB_HEAD_DIRICHLET && c < C && fabsf(z[c]) > EB_DISTILL_ZMAX)
            g = 0.0;
        dz[c] = (float)g;
    }
    if (pbar)
        for (int c = 0; c < C; c++)
            pbar[c] = (float)p[c];
}

/* ---- Student losses ----------------------------------------------------- */

double eb_distill_soft_xent(float *dz, const float *z, const float *t, int n, int O, int C,
                            float scale)
{
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * O, *ti = t + (size_t)i * C;
        double m = zi[0], s = 0.0, lse, tsum = 0.0;
        for (int c = 1; c < C; c++)
            m = zi[c] > m ? zi[c] : m;
        for (int c = 0; c < C; c++)
            s += exp((double)zi[c] - m);
        lse = m + log(s);
        for (int c = 0; c < C; c++) {
            total += (double)ti[c] * (lse - zi[c]);
            tsum += ti[c];
        }
        if (dz) {
            float *d = dz + (size_t)i * O;
            for (int c = 0; c < C; c++)
                d[c] = (float)(scale * (tsum * exp((double)zi[c] - lse) - ti[c]));
            for (int c = C; c < O; c++)
                d[c] = 0.0f;
        }
    }
    return n ? total / n : 0.0;
}

double eb_distill_gped_loss(float *dz, const float *z, const float *pbar, const float *ent,
                            int n, int C, float weight, float scale)
{
    const int O = C + 1;
    const double logC = log((double)C);
    double total = eb_distill_soft_xent(dz, z, pbar, n, O, C, scale) * n;
    for (int i = 0; i < n; i++) {
        const double sg = 1.0 / (1.0 + exp(-(double)z[(size_t)i * O + C]));
        const double diff = logC * sg - ent[i];
        total += weight * diff * diff;
        if (dz)
            dz[(size_t)i * O + C] = (float)(scale * weight * 2.0 * diff * logC * sg * (1.0 - sg));
    }
    return n ? total / n : 0.0;
}

/* Mean over members of log q_s (C) for one example: the sufficient
 * statistic of the Dirichlet likelihood, q_s the tempered smoothed
 * targets. */
static void end2_mean_log_target(double *lbar, const float *p, int S, int C, double T,
                                 double smooth)
{
    for (int c = 0; c < C; c++)
        lbar[c] = 0.0;
    for (int s = 0; s < S; s++) {
        const float *ps = p + (size_t)s * C;
        double lq[EB_DISTILL_MAX_CLASSES], m = -DBL_MAX, sum = 0.0, lse;
        for (int c = 0; c < C; c++) {
            lq[c] = log((1.0 - smooth) * ps[c] + smooth / C) / T;
            m = lq[c] > m ? lq[c] : m;
        }
        for (int c = 0; c < C; c++)
            sum += exp(lq[c] - m);
        lse = m + log(sum);
        for (int c = 0; c < C; c++)
            lbar[c] += (lq[c] - lse) / S;
    }
}

double eb_distill_end2_loss(float *dz, const float *z, const float *p, int n, int S, int C,
                            double T, double smooth, float scale)
{
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * C;
        double lbar[EB_DISTILL_MAX_CLASSES], alpha[EB_DISTILL_MAX_CLASSES], a0 = 0.0, nll;
        end2_mean_log_target(lbar, p + (size_t)i * S * C, S, C, T, smooth);
        for (int c = 0; c < C; c++) {
            alpha[c] = exp(clamp_z(zi[c]));
            a0 += alpha[c];
        }
        nll = -lgamma(a0);
        for (int c = 0; c < C; c++)
            nll += lgamma(alpha[c]) - (alpha[c] - 1.0) * lbar[c];
        total += nll;
        if (dz) {
            const double psi0 = eb_digamma(a0);
            for (int c = 0; c < C; c++) {
                const double g = alpha[c] * (eb_digamma(alpha[c]) - psi0 - lbar[c]);
                dz[(size_t)i * C + c] = fabsf(zi[c]) > EB_DISTILL_ZMAX ? 0.0f : (float)(scale * g);
            }
        }
    }
    return n ? total / n : 0.0;
}

void eb_distill_teacher_stats(float *pbar, float *ent, const float *p, size_t n, int S, int C)
{
    for (size_t i = 0; i < n; i++) {
        const float *pi = p + i * (size_t)S * C;
        double h = 0.0;
        for (int c = 0; c < C; c++) {
            double m = 0.0;
            for (int s = 0; s < S; s++)
                m += pi[(size_t)s * C + c];
            if (pbar)
                pbar[i * C + c] = (float)(m / S);
        }
        for (int s = 0; s < S; s++)
            for (int c = 0; c < C; c++) {
                const double q = pi[(size_t)s * C + c];
                if (q > 0.0)
                    h -= q * log(q);
            }
        if (ent)
            ent[i] = (float)(h / S);
    }
}

/* ---- The transform ------------------------------------------------------ */

/* Training images whose clean-input loss is measured before and after
 * each pruning cycle (the first ones of the training set; prune runs
 * only): enough for a stable mean, cheap next to an epoch. */
#define PRUNE_EVAL_MAX 2048

static const eb_setting_spec distill_settings[] = {
    {"kind", EB_SET_CHOICE, "bdk", 0, 0, "bdk|gped|end2",
     "student head: bdk (predictive), gped (predictive + data-entropy head), end2 (Dirichlet)"},
    {"student", EB_SET_CHOICE, "mlp", 0, 0, "mlp|mlp-small|cnn|mlp:*|cnn:*",
     "student architecture: a name, mlp:W1[,W2,...] (hidden widths) or cnn:C1,C2,D; its last "
     "dense layer gets C (gped: C + 1) units"},
    {"epochs", EB_SET_INT, "10", 1, 10000, NULL, "passes over the training set"},
    {"batch", EB_SET_INT, "128", 1, 65536, NULL, "mini-batch size"},
    {"optimizer", EB_SET_CHOICE, "adam", 0, 0, "adam|sgd", "update rule"},
    {"lr", EB_SET_FLOAT, "0.001", 1e-7, 10, NULL, "peak learning rate"},
    {"momentum", EB_SET_FLOAT, "0.9", 0, 0.999, NULL, "SGD momentum (optimizer=sgd)"},
    {"weight_decay", EB_SET_FLOAT, "0", 0, 1, NULL, "L2 decay of the student's weights"},
    {"schedule", EB_SET_CHOICE, "cosine", 0, 0, "cosine|constant", "learning-rate schedule"},
    {"augment", EB_SET_CHOICE, "none", 0, 0, "none|noise|shift",
     "perturbed training inputs, the teacher queried on each: Gaussian pixel noise (noise_std, "
     "clipped to [0,1]) or 1-2 pixel translations"},
    {"noise_std", EB_SET_FLOAT, "0.1", 0, 1, NULL, "pixel noise std (augment=noise)"},
    {"augment_share", EB_SET_FLOAT, "1", 0, 1, NULL,
     "probability that a training image is perturbed (augment=noise|shift); the rest stay clean"},
    {"draws", EB_SET_INT, "100", 1, 100000, NULL,
     "default prediction draws of gped and end2 students (bdk: 1)"},
    {"teacher_draws", EB_SET_INT, "0", 0, 100000, NULL,
     "teacher members S (0: the teacher's default; samples: at most its members)"},
    {"temperature", EB_SET_FLOAT, "10", 1, 1000, NULL, "end2: initial target temperature"},
    {"anneal_epochs", EB_SET_INT, "5", 0, 10000, NULL,
     "end2: epochs over which the temperature falls linearly to 1"},
    {"smooth", EB_SET_FLOAT, "0.0001", 0, 0.5, NULL,
     "end2: targets (1 - smooth) p + smooth / C, away from 0"},
    {"entropy_weight", EB_SET_FLOAT, "1", 0, 1000, NULL,
     "gped: weight of the data-entropy head's squared error"},
    {"sparsity", EB_SET_FLOAT, "0", 0, 0.999, NULL,
     "after training, prune the student's weights to this fraction (per layer, by magnitude; 0: "
     "dense), fine-tuning on the distillation loss; stored sparse"},
    {"prune_cycles", EB_SET_INT, "3", 1, 100, NULL,
     "sparsity > 0: pruning cycles, each removing the same share of the remaining weights"},
    {"prune_epochs", EB_SET_INT, "2", 0, 1000, NULL,
     "sparsity > 0: epochs of masked fine-tuning after each cycle"},
    {"prune_lr", EB_SET_FLOAT, "0.001", 1e-7, 10, NULL,
     "sparsity > 0: peak learning rate of each cycle's fine-tuning (cosine within the cycle)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

typedef struct distill_job {
    const eb_transform_request *req;
    eb_head_kind head;
    int C, O, S; /* classes, student outputs, teacher draws */
    int epochs, batch, augment, anneal;
    double noise_std, aug_share, T0, smooth, ent_weight;
    eb_optim_config optim;
    int cosine;
    eb_arch student;
    /* pruning (sparsity > 0): target, cycles, epochs and lr per cycle */
    double sparsity;
    int prune_cycles, prune_epochs;
    float prune_lr;
} distill_job;

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* end2's temperature at a fractional epoch e: linear from T0 to 1 over
 * anneal epochs, then 1. */
static double temperature_at(const distill_job *j, double e)
{
    if (j->head != EB_HEAD_DIRICHLET || j->anneal <= 0 || e >= j->anneal)
        return 1.0;
    return j->T0 + (1.0 - j->T0) * e / j->anneal;
}

static eb_status job_from_settings(distill_job *j, const eb_transform_request *req,
                                   eb_error *err)
{
    const eb_settings *s = req->settings;
    const eb_posterior *t = req->posterior;
    const char *kind = eb_settings_str(s, "kind");
    const char *aug = eb_settings_str(s, "augment");
    eb_layer *last;
    eb_status st;
    long td;

    memset(j, 0, sizeof *j);
    j->req = req;
    j->head = !strcmp(kind, "gped")   ? EB_HEAD_GPED
              : !strcmp(kind, "end2") ? EB_HEAD_DIRICHLET
                                      : EB_HEAD_CATEGORICAL;
    j->C = (int)eb_posterior_classes(t);
    if (j->C < 2 || j->C > EB_DISTILL_MAX_CLASSES)
        return eb_error_set(err, EB_ERR_ARG, "distill: the teacher predicts %d classes; from 2 to "
                            "%d are supported", j->C, EB_DISTILL_MAX_CLASSES);
    j->O = j->C + (j->head == EB_HEAD_GPED);
    td = eb_settings_int(s, "teacher_draws");
    j->S = td ? (int)td : (int)eb_posterior_default_draws(t);
    if (t->repr == EB_REPR_SAMPLES && (uint32_t)j->S > t->members)
        return eb_error_set(err, EB_ERR_ARG,
                            "distill: setting 'teacher_draws' asks for %d draws from a teacher "
                            "of %u samples", j->S, t->members);
    j->epochs = (int)eb_settings_int(s, "epochs");
    j->batch = (int)eb_settings_int(s, "batch");
    j->augment = !strcmp(aug, "noise") ? 1 : !strcmp(aug, "shift") ? 2 : 0;
    j->noise_std = eb_settings_float(s, "noise_std");
    j->aug_share = eb_settings_float(s, "augment_share");
    j->T0 = eb_settings_float(s, "temperature");
    j->anneal = (int)eb_settings_int(s, "anneal_epochs");
    /* an end2 student whose last epoch is still annealing learns targets
     * flattened by T > 1 and predicts underconfidently (measured: ECE 0.48
     * with epochs 3, anneal_epochs 5) */
    if (j->head == EB_HEAD_DIRICHLET && j->T0 > 1.0 && j->anneal >= j->epochs)
        return eb_error_set(err, EB_ERR_ARG,
                            "distill: anneal_epochs (%d) must be below epochs (%d) so the last "
                            "epochs of an end2 student train at temperature 1",
                            j->anneal, j->epochs);
    j->smooth = eb_settings_float(s, "smooth");
    j->ent_weight = eb_settings_float(s, "entropy_weight");
    eb_optim_config_default(&j->optim, !strcmp(eb_settings_str(s, "optimizer"), "sgd")
                                           ? EB_OPTIM_SGD
                                           : EB_OPTIM_ADAM);
    j->optim.lr = (float)eb_settings_float(s, "lr");
    if (j->optim.kind == EB_OPTIM_SGD)
        j->optim.momentum = (float)eb_settings_float(s, "momentum");
    j->optim.weight_decay = (float)eb_settings_float(s, "weight_decay");
    j->cosine = !strcmp(eb_settings_str(s, "schedule"), "cosine");
    j->sparsity = eb_settings_float(s, "sparsity");
    j->prune_cycles = (int)eb_settings_int(s, "prune_cycles");
    j->prune_epochs = (int)eb_settings_int(s, "prune_epochs");
    j->prune_lr = (float)eb_settings_float(s, "prune_lr");
    if (j->sparsity <= 0.0) {
        /* the pruning settings without a sparsity would silently do
         * nothing */
        static const char *const keys[] = {"prune_cycles", "prune_epochs", "prune_lr"};
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < s->n; i++)
                if (s->explicit_[i] && !strcmp(s->spec[i].key, keys[k]))
                    return eb_error_set(err, EB_ERR_ARG,
                                        "distill: setting '%s' is %s but sparsity is 0 (no "
                                        "pruning); set sparsity, e.g. sparsity=0.9", keys[k],
                                        s->value[i]);
    }

    st = eb_arch_named(eb_settings_str(s, "student"), &j->student, err);
    if (st)
        return eb_error_prefix(err, "distill: setting 'student': ");
    last = &j->student.layers[j->student.n_layers - 1];
    if (last->kind != EB_LAYER_DENSE)
        return eb_error_set(err, EB_ERR_ARG, "distill: the student's last layer is not dense");
    last->units = j->O;
    st = eb_arch_resolve(&j->student, err);
    if (st)
        return eb_error_prefix(err, "distill: the student with %d outputs: ", j->O);
    if (j->student.in_size != t->arch.in_size)
        return eb_error_set(err, EB_ERR_ARG,
                            "distill: the student takes %zu inputs, the teacher %zu",
                            j->student.in_size, t->arch.in_size);
    if ((size_t)req->train->h * req->train->w * req->train->c != t->arch.in_size ||
        req->train->n == 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "distill: training set '%s' (%zu images of %dx%dx%d) does not fit the "
                            "teacher's input %dx%dx%d", req->train->name, req->train->n,
                            req->train->h, req->train->w, req->train->c, t->arch.in_h,
                            t->arch.in_w, t->arch.in_c);
    return EB_OK;
}

/* Perturbs each image of a batch (n, h, w, c) in place with probability
 * aug_share: pixel noise clipped to [0, 1], or a translation by (dx, dy)
 * in [-2, 2]^2, not both 0, zero-filled. The clean rest keeps the
 * student's accuracy on the data itself. */
static void augment_batch(const distill_job *j, float *x, float *tmp, int n, eb_rng *r)
{
    const eb_arch *a = &j->student;
    const size_t in = a->in_size;
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * in;
        int dx, dy;
        if (eb_rng_uniform(r) >= j->aug_share)
            continue;
        if (j->augment == 1) {
            for (size_t k = 0; k < in; k++) {
                float v = xi[k] + (float)(j->noise_std * eb_rng_normal(r));
                xi[k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            }
            continue;
        }
        do {
            dx = (int)eb_rng_below(r, 5) - 2;
            dy = (int)eb_rng_below(r, 5) - 2;
        } while (dx == 0 && dy == 0);
        memcpy(tmp, xi, in * sizeof *tmp);
        for (int yy = 0; yy < a->in_h; yy++)
            for (int xx = 0; xx < a->in_w; xx++) {
                const int sy = yy - dy, sx = xx - dx;
                for (int c = 0; c < a->in_c; c++)
                    xi[((size_t)yy * a->in_w + xx) * a->in_c + c] =
                        sy < 0 || sy >= a->in_h || sx < 0 || sx >= a->in_w
                            ? 0.0f
                            : tmp[((size_t)sy * a->in_w + sx) * a->in_c + c];
            }
    }
}

/* The buffers of a run, carved from few allocations and freed in one place. */
typedef struct distill_buf {
    eb_net *net;
    eb_predictor *teacher;
    uint32_t *order;
    float *xb, *tmp;       /* (B, in), (in) */
    float *tp;             /* (B, S, C) teacher members of a batch */
    float *tbar, *tent;    /* (B, C), (B) */
    float *dz;             /* (B, O) */
    float *grad;           /* (K) */
    float *cache;          /* augment=none: per example (S, C) for end2, else (C + 1) */
    eb_optim opt;
    /* pruning only (sparsity > 0) */
    uint8_t *mask, *prev;  /* (K) the current and the previous cycle's mask */
    float *score;          /* (K) */
    float *eval;           /* (n_eval, cache width) clean-input targets */
    size_t n_eval;
} distill_buf;

static void buf_free(distill_buf *b)
{
    eb_net_free(b->net);
    eb_predictor_free(b->teacher);
    eb_free(b->order);
    eb_free(b->xb);
    eb_free(b->tmp);
    eb_free(b->tp);
    eb_free(b->tbar);
    eb_free(b->tent);
    eb_free(b->dz);
    eb_free_aligned(b->grad);
    eb_free(b->cache);
    eb_optim_free(&b->opt);
    eb_free(b->mask);
    eb_free(b->prev);
    eb_free(b->score);
    eb_free(b->eval);
}

/* Per-example width of the target cache. */
static size_t cache_width(const distill_job *j)
{
    return j->head == EB_HEAD_DIRICHLET ? (size_t)j->S * j->C : (size_t)j->C + 1;
}

/* Writes the cache row(s) of n examples from member probabilities p. */
static void fill_cache(const distill_job *j, float *rows, const float *p, size_t n, float *tbar,
                       float *tent)
{
    const size_t w = cache_width(j), C = (size_t)j->C;
    if (j->head == EB_HEAD_DIRICHLET) {
        memcpy(rows, p, n * w * sizeof *rows);
        return;
    }
    eb_distill_teacher_stats(tbar, tent, p, n, j->S, j->C);
    for (size_t i = 0; i < n; i++) {
        memcpy(rows + i * w, tbar + i * C, C * sizeof *rows);
        rows[i * w + C] = tent[i];
    }
}

static eb_status buf_new(distill_buf *b, const distill_job *j, eb_error *err)
{
    const eb_dataset *d = j->req->train;
    const size_t B = (size_t)j->batch, in = j->student.in_size, C = (size_t)j->C;
    size_t cache_len = 0;
    eb_status st;

    memset(b, 0, sizeof *b);
    st = eb_net_new(&j->student, j->batch, &b->net, err);
    if (!st)
        st = eb_predictor_new(j->req->posterior, j->batch, (uint32_t)j->S, &b->teacher, err);
    if (!st)
        st = eb_optim_init(&b->opt, &j->optim, j->student.n_params, err);
    if (st)
        return st;
    if (!j->augment && eb_size_mul(d->n, cache_width(j), &cache_len))
        return eb_error_set(err, EB_ERR_NOMEM, "distill: the teacher's targets overflow memory");
    b->order = eb_malloc(d->n * sizeof *b->order);
    b->xb = eb_malloc(B * in * sizeof *b->xb);
    b->tmp = eb_malloc(in * sizeof *b->tmp);
    b->tp = eb_malloc(B * (size_t)j->S * C * sizeof *b->tp);
    b->tbar = eb_malloc(B * C * sizeof *b->tbar);
    b->tent = eb_malloc(B * sizeof *b->tent);
    b->dz = eb_malloc(B * (size_t)j->O * sizeof *b->dz);
    b->grad = eb_malloc_aligned(64, j->student.n_params * sizeof *b->grad);
    if (cache_len)
        b->cache = eb_malloc(cache_len * sizeof *b->cache);
    if (!b->order || !b->xb || !b->tmp || !b->tp || !b->tbar || !b->tent || !b->dz || !b->grad ||
        (cache_len && !b->cache))
        return eb_error_set(err, EB_ERR_NOMEM, "distill: out of memory for training buffers");
    if (j->sparsity > 0.0) {
        const size_t K = j->student.n_params;
        b->n_eval = d->n < PRUNE_EVAL_MAX ? d->n : PRUNE_EVAL_MAX;
        b->mask = eb_malloc(K);
        b->prev = eb_malloc(K);
        b->score = eb_malloc(K * sizeof *b->score);
        b->eval = eb_malloc(b->n_eval * cache_width(j) * sizeof *b->eval);
        if (!b->mask || !b->prev || !b->score || !b->eval)
            return eb_error_set(err, EB_ERR_NOMEM,
                                "distill: out of memory for pruning the student (%zu weights)", K);
    }
    return EB_OK;
}

/* The teacher's targets of the first n clean training examples, into
 * rows (n, cache width): the whole set once for augment=none, and the
 * pruning cycles' evaluation subset. */
static eb_status teacher_cache(const distill_job *j, distill_buf *b, uint64_t tseed, size_t n,
                               float *rows, eb_error *err)
{
    const eb_dataset *d = j->req->train;
    const size_t in = j->student.in_size, w = cache_width(j);
    for (size_t first = 0; first < n; first += (size_t)j->batch) {
        const size_t nb = n - first < (size_t)j->batch ? n - first : (size_t)j->batch;
        eb_status st = eb_predictor_run(b->teacher, d->x + first * in, nb, (uint32_t)j->S, tseed,
                                        first, b->tp, err);
        if (st)
            return eb_error_prefix(err, "distill: the teacher: ");
        fill_cache(j, rows + first * w, b->tp, nb, b->tbar, b->tent);
    }
    return EB_OK;
}

/* Copies the cached targets of examples idx[0..nb) (or first..first+nb
 * when idx is NULL) from rows into the batch buffers. */
static void load_targets(const distill_job *j, distill_buf *b, const float *rows,
                         const uint32_t *idx, size_t first, int nb)
{
    const size_t w = cache_width(j), C = (size_t)j->C;
    for (int i = 0; i < nb; i++) {
        const float *row = rows + (idx ? idx[i] : first + (size_t)i) * w;
        if (j->head == EB_HEAD_DIRICHLET) {
            memcpy(b->tp + (size_t)i * w, row, w * sizeof *row);
        } else {
            memcpy(b->tbar + (size_t)i * C, row, C * sizeof *row);
            b->tent[i] = row[C];
        }
    }
}

/* One step's loss and gradient dz over the student's outputs z of nb
 * examples whose teacher targets are in b (tp for end2, tbar/tent else). */
static double batch_loss(const distill_job *j, distill_buf *b, const float *z, int nb, double T)
{
    const float scale = 1.0f / (float)nb;
    switch (j->head) {
    case EB_HEAD_GPED:
        return eb_distill_gped_loss(b->dz, z, b->tbar, b->tent, nb, j->C, (float)j->ent_weight,
                                    scale);
    case EB_HEAD_DIRICHLET:
        return eb_distill_end2_loss(b->dz, z, b->tp, nb, j->S, j->C, T, j->smooth, scale);
    default:
        return eb_distill_soft_xent(b->dz, z, b->tbar, nb, j->O, j->C, scale);
    }
}

static eb_status append_trace(char *buf, size_t cap, size_t *len, double v, eb_error *err)
{
    int w = snprintf(buf + *len, cap - *len, "%s%.6g", *len ? "," : "", v);
    if (w < 0 || (size_t)w >= cap - *len)
        return eb_error_set(err, EB_ERR_ARG, "distill: the training trace is too long");
    *len += (size_t)w;
    return EB_OK;
}

/* Streams of the pruning cycles c = 1..K (data order and perturbations
 * of each cycle's fine-tuning); the dense training uses EB_STREAM_ORDER
 * and STREAM_AUGMENT, as before pruning existed. */
enum { STREAM_PRUNE_ORDER = 0xC200, STREAM_PRUNE_AUGMENT = 0xC300 };

/* One training pass over the student. Pass 0 is the dense training from
 * a fresh initialisation; pass c >= 1 fine-tunes cycle c's pruned
 * student from where it is, under `mask`. Each pass restarts the
 * optimiser's state and a cosine schedule from lr, and draws its own data
 * order and perturbations; the teacher's draws on perturbed inputs are
 * keyed by the example's place in the whole run (epoch_base + epoch), so
 * no two epochs of any pass share them. */
typedef struct pass_cfg {
    int pass, epochs;
    long epoch_base; /* epochs run before this pass */
    float lr;
    const uint8_t *mask; /* (K) or NULL: dense */
    const char *phase;   /* progress label */
} pass_cfg;

/* One optimiser step inside the mask (NULL: dense), the same update as
 * eb_sgd_train's with cfg.mask; that loop trains on the data labels and
 * so cannot run the distillation loss. */
static void masked_step(eb_optim *opt, float *theta, float *grad, float lr, const uint8_t *mask)
{
    eb_optim_begin_step(opt);
    eb_optim_step_masked_range(opt, theta, grad, lr, mask, 0, opt->k);
}

/* A fresh start of the optimiser (moments and step count), without
 * reallocating its state. */
static void optim_restart(eb_optim *opt)
{
    opt->t = 0;
    memset(opt->m, 0, opt->k * sizeof *opt->m);
    if (opt->v)
        memset(opt->v, 0, opt->k * sizeof *opt->v);
}

static eb_status run_pass(const distill_job *j, distill_buf *b, const pass_cfg *pc, float *theta,
                          char *trace, size_t trace_cap, size_t *trace_len, char *temps,
                          size_t temps_cap, size_t *temps_len, eb_error *err)
{
    const eb_transform_request *req = j->req;
    const eb_dataset *d = req->train;
    const size_t n = d->n, in = j->student.in_size;
    const int B = j->batch < (int)n ? j->batch : (int)n;
    const long per_epoch = (long)((n + (size_t)B - 1) / (size_t)B), total = per_epoch * pc->epochs;
    const uint64_t tseed = eb_rng_mix64(req->seed ^ STREAM_TEACHER);
    eb_rng order_rng, aug_rng;
    eb_status st = EB_OK;

    if (pc->pass == 0) {
        eb_rng_seed(&order_rng, req->seed, EB_STREAM_ORDER);
        eb_rng_seed(&aug_rng, req->seed, STREAM_AUGMENT);
    } else {
        eb_rng_seed(&order_rng, req->seed, STREAM_PRUNE_ORDER + (uint64_t)pc->pass);
        eb_rng_seed(&aug_rng, req->seed, STREAM_PRUNE_AUGMENT + (uint64_t)pc->pass);
        optim_restart(&b->opt);
    }
    for (size_t i = 0; i < n; i++)
        b->order[i] = (uint32_t)i;
    for (int epoch = 0; epoch < pc->epochs; epoch++) {
        const long run_epoch = pc->epoch_base + epoch;
        double t0 = now_sec(), loss_sum = 0.0;
        size_t seen = 0;
        eb_rng_shuffle_u32(&order_rng, b->order, n);
        for (long bi = 0; bi < per_epoch; bi++) {
            const long step = (long)epoch * per_epoch + bi;
            const size_t first = (size_t)bi * (size_t)B;
            const int nb = (int)(n - first < (size_t)B ? n - first : (size_t)B);
            const double T = temperature_at(j, (double)run_epoch + (double)bi / (double)per_epoch);
            const float lr = j->cosine && total > 1
                                 ? (float)(0.5 * pc->lr *
                                           (1.0 + cos(M_PI * (double)step / (double)total)))
                                 : pc->lr;
            const float *z;
            for (int i = 0; i < nb; i++)
                memcpy(b->xb + (size_t)i * in, d->x + (size_t)b->order[first + (size_t)i] * in,
                       in * sizeof *b->xb);
            if (j->augment) {
                augment_batch(j, b->xb, b->tmp, nb, &aug_rng);
                st = eb_predictor_run(b->teacher, b->xb, (size_t)nb, (uint32_t)j->S, tseed,
                                      (uint64_t)run_epoch * n + first, b->tp, err);
                if (st)
                    return eb_error_prefix(err, "distill: the teacher: ");
                if (j->head != EB_HEAD_DIRICHLET)
                    eb_distill_teacher_stats(b->tbar, b->tent, b->tp, (size_t)nb, j->S, j->C);
            } else {
                load_targets(j, b, b->cache, b->order + first, 0, nb);
            }
            z = eb_net_forward(b->net, theta, b->xb, nb, NULL);
            loss_sum += nb * batch_loss(j, b, z, nb, T);
            eb_net_backward(b->net, theta, b->dz, b->grad, NULL);
            masked_step(&b->opt, theta, b->grad, lr, pc->mask);
            seen += (size_t)nb;
            if (req->progress && ((bi + 1) % 64 == 0 || bi + 1 == per_epoch)) {
                eb_progress p;
                p.phase = pc->phase;
                p.epoch = epoch + 1;
                p.epochs = pc->epochs;
                p.loss = loss_sum / (double)seen;
                p.fraction = (double)(step + 1) / (double)total;
                p.images_per_sec = (double)seen / (now_sec() - t0 + 1e-12);
                p.epoch_done = bi + 1 == per_epoch;
                req->progress(req->progress_ctx, &p);
            }
        }
        if (!isfinite(loss_sum))
            return eb_error_set(err, EB_ERR_NUMERIC,
                                "distill: training diverged in %sepoch %d (loss %g); lower the "
                                "learning rate (setting %s)", pc->pass ? "fine-tuning " : "",
                                epoch + 1, loss_sum / (double)seen, pc->pass ? "prune_lr" : "lr");
        st = append_trace(trace, trace_cap, trace_len, loss_sum / (double)seen, err);
        if (!st && temps && j->head == EB_HEAD_DIRICHLET)
            st = append_trace(temps, temps_cap, temps_len, temperature_at(j, (double)run_epoch),
                              err);
        if (st)
            return st;
    }
    return EB_OK;
}

static eb_status run_student(const distill_job *j, distill_buf *b, float *theta, char *trace,
                             size_t trace_cap, char *temps, size_t temps_cap, eb_error *err)
{
    const eb_transform_request *req = j->req;
    size_t trace_len = 0, temps_len = 0;
    eb_rng init_rng;
    pass_cfg pc;
    eb_status st;

    eb_rng_seed(&init_rng, req->seed, EB_STREAM_INIT);
    eb_arch_init_params(&j->student, theta, &init_rng);
    if (!j->augment) {
        st = teacher_cache(j, b, eb_rng_mix64(req->seed ^ STREAM_TEACHER), req->train->n,
                           b->cache, err);
        if (st)
            return st;
    }
    memset(&pc, 0, sizeof pc);
    pc.epochs = j->epochs;
    pc.lr = j->optim.lr;
    pc.phase = "distill";
    return run_pass(j, b, &pc, theta, trace, trace_cap, &trace_len, temps, temps_cap, &temps_len,
                    err);
}

/* The student's mean loss (temperature 1) on the clean evaluation subset
 * b->eval: the loss its fine-tuning lowers, without perturbations. */
static double eval_loss(const distill_job *j, distill_buf *b, const float *theta)
{
    const int B = j->batch;
    const size_t in = j->student.in_size;
    double sum = 0.0;
    for (size_t first = 0; first < b->n_eval; first += (size_t)B) {
        const int nb = (int)(b->n_eval - first < (size_t)B ? b->n_eval - first : (size_t)B);
        const float *z = eb_net_forward(b->net, theta, j->req->train->x + first * in, nb, NULL);
        load_targets(j, b, b->eval, NULL, first, nb);
        sum += nb * batch_loss(j, b, z, nb, 1.0);
    }
    return b->n_eval ? sum / (double)b->n_eval : 0.0;
}

/* Iterative magnitude pruning of the trained student theta (K) in place:
 * cycle c = 1..K prunes every weighted layer to 1 - (1 - rate)^c, rate =
 * 1 - (1 - sparsity)^(1/K), the last cycle exactly to sparsity
 * (eb_prune_cycle_sparsity; per layer, round(s * n_weights) weights, as
 * the prune transform's default scope), then fine-tunes prune_epochs on
 * the distillation loss with the pruned weights pinned at 0. The clean
 * subset's loss is recorded densely, after each cut and after each
 * fine-tuning (losses: "dense;pruned,tuned;pruned,tuned;..."). */
static eb_status prune_student(const distill_job *j, distill_buf *b, float *theta, char *trace,
                               size_t trace_cap, char *losses, size_t losses_cap, eb_error *err)
{
    const eb_transform_request *req = j->req;
    const size_t K = j->student.n_params;
    const int cycles = j->prune_cycles;
    const double rate = 1.0 - pow(1.0 - j->sparsity, 1.0 / (double)cycles);
    size_t trace_len = 0, losses_len = 0;
    char phase[64];
    pass_cfg pc;
    eb_status st;
    int w;

    st = teacher_cache(j, b, eb_rng_mix64(req->seed ^ STREAM_TEACHER), b->n_eval, b->eval, err);
    if (st)
        return st;
    w = snprintf(losses, losses_cap, "%.6g", eval_loss(j, b, theta));
    losses_len = w > 0 ? (size_t)w : 0;
    memset(b->mask, 1, K);
    memset(&pc, 0, sizeof pc);
    pc.epochs = j->prune_epochs;
    pc.lr = j->prune_lr;
    pc.mask = b->mask;
    pc.phase = phase;
    for (int c = 1; c <= cycles; c++) {
        double pruned, tuned;
        eb_prune_score_magnitude(b->score, theta, K);
        memcpy(b->prev, b->mask, K);
        st = eb_prune_mask(&j->student, b->score, b->prev,
                           eb_prune_cycle_sparsity(j->sparsity, rate, c, cycles), EB_PRUNE_LAYER,
                           b->mask, err);
        if (st)
            return eb_error_prefix(err, "distill: pruning cycle %d: ", c);
        eb_prune_apply(theta, b->mask, K);
        pruned = tuned = eval_loss(j, b, theta);
        if (j->prune_epochs > 0) {
            snprintf(phase, sizeof phase, "distill prune %d/%d", c, cycles);
            pc.pass = c;
            pc.epoch_base = j->epochs + (long)(c - 1) * j->prune_epochs;
            st = run_pass(j, b, &pc, theta, trace, trace_cap, &trace_len, NULL, 0, NULL, err);
            if (st)
                return st;
            tuned = eval_loss(j, b, theta);
        }
        w = snprintf(losses + losses_len, losses_cap - losses_len, ";%.6g,%.6g", pruned, tuned);
        if (w < 0 || (size_t)w >= losses_cap - losses_len)
            return eb_error_set(err, EB_ERR_ARG, "distill: the pruning trace is too long");
        losses_len += (size_t)w;
    }
    return EB_OK;
}

static eb_status meta_num(eb_trained *t, const char *key, double v, eb_error *err)
{
    char num[32];
    snprintf(num, sizeof num, "%.9g", v);
    return eb_trained_meta(t, key, num, err);
}

static eb_status distill_apply(const eb_transform_request *req, eb_trained *out, eb_error *err)
{
    distill_job j;
    distill_buf b;
    char trace[8192] = "", temps[8192] = "", ptrace[8192] = "", plosses[4096] = "", num[32];
    const int prev_threads = eb_nn_set_threads(0);
    eb_status st;

    memset(out, 0, sizeof *out);
    memset(&b, 0, sizeof b);
    st = job_from_settings(&j, req, err);
    if (st)
        return st;
    st = eb_trained_alloc(out, &j.student, EB_REPR_DISTILLED,
                          j.head == EB_HEAD_CATEGORICAL
                              ? 1u
                              : (uint32_t)eb_settings_int(req->settings, "draws"),
                          1, err);
    if (st)
        return st;
    out->head = (uint32_t)j.head;
    if (req->threads > 0)
        eb_nn_set_threads(req->threads);
    st = buf_new(&b, &j, err);
    if (!st)
        st = run_student(&j, &b, out->params, trace, sizeof trace, temps, sizeof temps, err);
    if (!st && j.sparsity > 0.0)
        st = prune_student(&j, &b, out->params, ptrace, sizeof ptrace, plosses, sizeof plosses,
                           err);
    buf_free(&b);
    eb_nn_set_threads(prev_threads);
    if (!st)
        st = eb_trained_meta(out, "distill.kind", eb_settings_str(req->settings, "kind"), err);
    if (!st) {
        snprintf(num, sizeof num, "%d", j.S);
        st = eb_trained_meta(out, "distill.teacher_draws", num, err);
    }
    if (!st)
        st = eb_trained_meta(out, "distill.teacher_repr", eb_repr_name(req->posterior->repr), err);
    if (!st)
        st = eb_trained_meta(out, "distill.epoch_loss", trace, err);
    if (!st && j.head == EB_HEAD_DIRICHLET)
        st = eb_trained_meta(out, "distill.epoch_temperature", temps, err);
    if (!st && j.sparsity > 0.0) {
        /* prune.sparsity is the key the runner's compression facet reads
         * (and replaces a pruned teacher's, which the student is not) */
        st = meta_num(out, "prune.sparsity", eb_prune_sparsity(&j.student, out->params, -1), err);
        if (!st)
            st = meta_num(out, "distill.prune_target", j.sparsity, err);
        if (!st)
            st = meta_num(out, "distill.prune_cycles", j.prune_cycles, err);
        if (!st)
            st = eb_trained_meta(out, "distill.prune_loss", plosses, err);
        if (!st && j.prune_epochs > 0)
            st = eb_trained_meta(out, "distill.prune_epoch_loss", ptrace, err);
        /* one network, one mask: one shared index set, as the prune
         * transform's storage=auto picks for a single network */
        out->storage = EB_STORE_SHARED_SPARSE;
    }
    if (st)
        eb_trained_free(out);
    return st;
}

const eb_transform eb_transform_distill = {
    /* .name = */ "distill",
    /* .summary = */ "one student network from a posterior: bdk, gped or end2 (Dirichlet) head, "
                     "optionally pruned",
    /* .settings = */ distill_settings,
    /* .short_key = */ "kind",
    /* .apply = */ distill_apply,
    /* .needs_train = */ 1,
    /* .needs_train_for = */ NULL,
};
