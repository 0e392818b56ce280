/* eb_distill.h: distillation of a posterior into one student network
 * (the `distill` transform, methods/distill.c) and the numerics its
 * students need at prediction time. docs/methods.md ("Distillation")
 * describes the three kinds:
 *
 *   bdk   Bayesian Dark Knowledge (Balan et al. 2015): a categorical head
 *         of C logits trained by cross-entropy to the teacher's posterior
 *         predictive pbar(y|x). Predicted as one draw, softmax(z).
 *   gped  Generalized Posterior Expectation Distillation (Vadera et al.,
 *         UAI 2020): C logits trained as bdk plus one output z_C trained
 *         by squared error to the teacher's expected data entropy
 *         E_s H[p_s(y|x)], read as h = log(C) * sigmoid(z_C) so that it
 *         stays in [0, log C].
 *   end2  Ensemble Distribution Distillation (Malinin et al., ICLR 2020):
 *         C log-concentrations z, alpha = exp(clamp(z, +-EB_DISTILL_ZMAX)),
 *         trained by the negative Dirichlet log-likelihood of the
 *         teacher's (smoothed, tempered) member probabilities.
 *
 * Head -> members. The harness computes every uncertainty from member
 * probabilities p[n][s][c], so a student's head is turned into S members:
 *   categorical: every draw is softmax(z) (one draw by default);
 *   dirichlet:   S draws p_s ~ Dir(alpha);
 *   gped:        S draws p_s ~ Dir(alpha0 * pbar), pbar = softmax(z[0..C)),
 *                with the precision alpha0 solved per example by bisection
 *                so that the Dirichlet's expected entropy
 *                  E[H(p)] = psi(alpha0 + 1) - sum_c pbar_c psi(alpha0 pbar_c + 1)
 *                equals the head's h (clamped to the reachable range
 *                [0, H[pbar]); see eb_dirichlet_solve_precision).
 *   The draws' mean is pbar (alpha/alpha0 for end2) up to Monte Carlo
 *   error and their mean entropy is h up to Monte Carlo error, so the
 *   harness's total = H[mean], data = mean_s H[p_s] and knowledge = their
 *   difference recover the head's decomposition. Draws of example i come
 *   from the stream (mix64(seed ^ EB_STREAM_PREDICT), global index of i),
 *   so they do not depend on how a set is split into batches. */
#ifndef EB_DISTILL_H
#define EB_DISTILL_H

#include <stddef.h>
#include <stdint.h>

#include "methods/eb_methods.h"
#include "methods/eb_transform.h"
#include "methods/nn/eb_rng.h"

/* The distill transform: settings kind (short key), student, epochs, ...
 * (docs/methods.md lists them). */
extern const eb_transform eb_transform_distill;

/* The clamp on end2's log-concentrations: alpha in [e^-ZMAX, e^ZMAX]. */
#define EB_DISTILL_ZMAX 12.0f

/* Every function here takes C <= EB_DISTILL_MAX_CLASSES (per-example
 * scratch lives on the stack; the transform and predictor check it). */
#define EB_DISTILL_MAX_CLASSES 256

/* The classes C a student with this head and `outputs` final units
 * predicts: outputs - 1 for gped, outputs otherwise. */
int eb_distill_classes(eb_head_kind head, int outputs);

/* ---- Dirichlet numerics ----------------------------------------------- */

/* The digamma function psi(x) for x > 0 (recurrence to x >= 10, then the
 * asymptotic series; absolute error below 1e-12). */
double eb_digamma(double x);
/* log Dir(p | alpha) = lgamma(alpha0) - sum lgamma(alpha_c)
 *                      + sum (alpha_c - 1) log p_c;  alpha (C) > 0, p (C) > 0. */
double eb_dirichlet_logpdf(const double *alpha /* (C) */, const double *p /* (C) */, int C);
/* E[H(p)] for p ~ Dir(alpha0 * pbar): psi(alpha0 + 1) - sum_c pbar_c
 * psi(alpha0 pbar_c + 1) (terms with pbar_c = 0 vanish). Increases with
 * alpha0 from 0 (alpha0 -> 0) to H[pbar] (alpha0 -> inf). */
double eb_dirichlet_expected_entropy(double alpha0, const float *pbar /* (C) */, int C);
/* The precision alpha0 with eb_dirichlet_expected_entropy(alpha0, pbar) =
 * h, by bisection on log alpha0 over [1e-4, 1e8]; h is clamped to what
 * that range reaches. */
double eb_dirichlet_solve_precision(const float *pbar /* (C) */, int C, double h);
/* One draw p ~ Dir(alpha) into out (C), through log-gamma variates
 * (Marsaglia & Tsang 2000, with the u^(1/a) boost for a < 1, kept in log
 * space so tiny concentrations do not underflow to a 0/0 draw). */
void eb_dirichlet_draw(float *out /* (C) */, const double *alpha /* (C) */, int C, eb_rng *r);

/* ---- Prediction from a student's outputs ------------------------------ */

/* The S member probabilities probs (S, C) of one example from its student
 * outputs z (C, or C + 1 for gped) under the head-to-members mapping
 * above; draws come from the stream (mix64(seed ^ EB_STREAM_PREDICT),
 * example). alpha (C) is scratch. */
void eb_distill_members(float *probs /* (S, C) */, const float *z, eb_head_kind head, int C,
                        uint32_t S, uint64_t seed, uint64_t example, double *alpha /* (C) */);
/* The gradient of -log m_y with respect to the outputs z (O), m the
 * head's exact predictive mean (the mean the draws estimate): softmax of
 * z[0..C) (clamped for end2, whose clamp passes no gradient). dz (O) gets
 * 0 in columns C..O; m is written to pbar (C) when not NULL. */
void eb_distill_mean_grad(float *dz /* (O) */, float *pbar /* (C) */, const float *z, eb_head_kind head,
                          int O, int C, uint8_t y);

/* ---- Student losses: mean over n examples, gradient into dz ----------- */

/* Soft cross-entropy -sum_c t_c log softmax(z)_c of the first C of O
 * outputs z (n, O) against targets t (n, C); dz (n, O) gets
 * scale * (softmax - t) in the first C columns and 0 in the rest (may be
 * NULL). Returns the mean loss. */
double eb_distill_soft_xent(float *dz, const float *z, const float *t, int n, int O, int C,
                            float scale);
/* gped: soft cross-entropy of z[0..C) against pbar (n, C) plus
 * weight * (log(C) sigmoid(z_C) - ent)^2 against ent (n); z, dz (n, C + 1).
 * Returns the mean loss. */
double eb_distill_gped_loss(float *dz, const float *z, const float *pbar, const float *ent,
                            int n, int C, float weight, float scale);
/* end2: mean over n examples of the negative Dirichlet log-likelihood
 * -mean_s log Dir(q_s | alpha), alpha = exp(clamp(z)) (n, C), of the
 * targets q_s = tempered, smoothed member probabilities:
 *   q_s ∝ ((1 - smooth) p_s + smooth / C)^(1 / T),
 * p (n, S, C) the teacher's members. dz (n, C) may be NULL. */
double eb_distill_end2_loss(float *dz, const float *z, const float *p, int n, int S, int C,
                            double T, double smooth, float scale);

/* The teacher statistics a batch of students trains on, from member
 * probabilities p (n, S, C): pbar (n, C) and the expected data entropy
 * ent (n), either may be NULL. */
void eb_distill_teacher_stats(float *pbar, float *ent, const float *p, size_t n, int S, int C);

#endif /* EB_DISTILL_H */
