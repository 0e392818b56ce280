/* eb_prune.h: pruning primitives over flat parameter vectors, and the
 * `prune` bundle transform (methods/prune.c; docs/prune.md has the
 * settings and the measurements behind the defaults).
 *
 * Vocabulary. The *weights* of an architecture are the W tensors of its
 * dense and conv2d layers (eb_nn.h gives the layout); biases are never
 * pruned. A *mask* (K bytes) holds 1 for a kept parameter and 0 for a
 * pruned one; a bias is always 1. A *score* (K floats) ranks weights:
 * the lowest scores are pruned first (|theta| for magnitude pruning,
 * |mu| / sigma for signal-to-noise pruning of a mean-field gaussian).
 * Ties are broken by position (the earlier parameter is pruned first), so
 * every mask is a pure function of its inputs.
 *
 * Structured pruning removes whole *units*: the outputs of a dense layer
 * or the channels of a conv2d layer (never the final layer's, which are
 * the classes). Removing unit u of layer l drops row u of W_l and b_l[u]
 * and, in the next dense or conv2d layer, every input weight that reads
 * channel u; the result is a smaller architecture that computes exactly
 * what the original computes with those units' weights zeroed. */
#ifndef EB_PRUNE_H
#define EB_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "methods/eb_transform.h"
#include "methods/nn/eb_nn.h"

/* The `prune` transform (settings: sparsity, scope, schedule, rate,
 * finetune_epochs, lr, batch, criterion, structure, group_lasso,
 * gl_epochs, storage,
 * rewind_epochs, retrain_epochs, then, samples, burnin, thin,
 * sampler_epochs, sampler_lr, temperature). */
extern const eb_transform eb_transform_prune;

typedef enum eb_prune_scope {
    EB_PRUNE_LAYER = 1, /* every weighted layer pruned to the same fraction */
    EB_PRUNE_GLOBAL     /* one threshold across all weighted layers */
} eb_prune_scope;

/* Weights of arch (the prunable parameters): the sum of n_weights over its
 * dense and conv2d layers. */
size_t eb_prune_n_weights(const eb_arch *arch);

/* Magnitude score: score[i] = |theta[i]| (K). */
void eb_prune_score_magnitude(float *score /* (K) */, const float *theta /* (K) */, size_t K);
/* Signal-to-noise score: score[i] = |mu[i]| / sigma[i]; +inf where sigma
 * is 0 and mu is not, 0 where both are. */
void eb_prune_score_snr(float *score /* (K) */, const float *mu /* (K) */,
                        const float *sigma /* (K) */, size_t K);

/* The mask that prunes the lowest-scoring weights of arch: in each
 * weighted layer exactly round(sparsity * n_weights) of them (scope
 * layer), or round(sparsity * eb_prune_n_weights) across all of them
 * (scope global). Weights already pruned in prev (K, may be NULL) score
 * below every other and so stay pruned as long as the count does not
 * shrink (a schedule whose sparsity only grows); prev may be mask itself.
 * sparsity in [0, 1). */
eb_status eb_prune_mask(const eb_arch *arch, const float *score /* (K) */,
                        const uint8_t *prev /* (K) or NULL */, double sparsity,
                        eb_prune_scope scope, uint8_t *mask /* (K) */, eb_error *err);

/* theta[i] = 0 wherever mask[i] is 0. */
void eb_prune_apply(float *theta /* (K) */, const uint8_t *mask /* (K) */, size_t K);

/* Fraction of weights that are exactly 0: of layer `layer` (an index
 * into arch->layers, a dense or conv2d layer), or of all weights when
 * layer < 0. 0 when there are none. */
double eb_prune_sparsity(const eb_arch *arch, const float *theta /* (K) */, int layer);

/* Iterative schedules: with a fraction `rate` of the remaining weights
 * pruned per cycle, the number of cycles that reach `target`
 * (the smallest c with 1 - (1 - rate)^c >= target; 0 for target 0), and
 * cycle c's sparsity (c = 1 .. cycles): 1 - (1 - rate)^c, the last one
 * exactly target. */
int eb_prune_cycles(double target, double rate);
double eb_prune_cycle_sparsity(double target, double rate, int cycle, int cycles);

/* ---- structured pruning: whole units ------------------------------- */

/* Units of every layer laid end to end: offsets (n_layers + 1, may be
 * NULL) gets each layer's first index (layers without units take none);
 * returns the total. */
size_t eb_prune_units_total(const eb_arch *arch, size_t *offsets /* (n_layers + 1) */);

/* Chooses the units to keep (keep: eb_prune_units_total bytes, 1 keep, 0
 * remove): in every dense and conv2d layer but the last, the
 * round(fraction * units) units (at most units - 1) with the smallest
 * L2 norm of incoming weights, the norm averaged over the rows of theta
 * (rows, K) so that all members share one unit set. Ties: the earlier
 * unit goes first. fraction in [0, 1). */
eb_status eb_prune_units_select(const eb_arch *arch, const float *theta /* (rows, K) */,
                                uint32_t rows, double fraction, uint8_t *keep, eb_error *err);

/* The smaller architecture: each layer's units reduced to its kept ones. */
eb_status eb_prune_units_arch(const eb_arch *arch, const uint8_t *keep, eb_arch *out,
                              eb_error *err);

/* Copies theta (arch->n_params) into small_theta (small->n_params): the
 * kept units' weights and biases, and in each next layer the input
 * weights of kept channels, in order. small = eb_prune_units_arch. */
void eb_prune_units_shrink(const eb_arch *arch, const uint8_t *keep, const eb_arch *small,
                           const float *theta, float *small_theta);

/* The reference the shrink is tested against: zeroes, in place, the
 * removed units' weights and biases and every weight that reads them. */
void eb_prune_units_zero(const eb_arch *arch, const uint8_t *keep, float *theta /* (K) */);

/* ---- group lasso over units ----------------------------------------- */

/* The parameter groups of group-lasso training: one per unit of every
 * dense and conv2d layer but the last (the units eb_prune_units_select
 * may remove), in layer then unit order. Group (l, u) holds everything
 * removing that unit deletes, which is what eb_prune_units_zero zeroes
 * for it: its incoming weights (row u of W_l), its bias b_l[u], and its
 * outgoing weights (every weight of the next dense or conv2d layer that
 * reads channel u). The outgoing weights are in the group so that the
 * penalty cannot be dodged through ReLU's positive homogeneity (scaling
 * a unit's incoming weights by a and its outgoing ones by 1/a changes
 * nothing the network computes but would shrink an incoming-only norm
 * at will), and so that the penalty counts the parameters the removal
 * saves. Consequence: groups of consecutive layers overlap (a weight of
 * a hidden layer is an incoming weight of its unit and an outgoing
 * weight of the unit it reads). */
typedef struct eb_prune_groups {
    size_t n;        /* groups */
    size_t *start;   /* (n + 1): group g is index[start[g] .. start[g + 1]) */
    uint32_t *index; /* parameter positions in theta (K), group by group */
} eb_prune_groups;

/* Builds the groups of arch. The caller frees them with
 * eb_prune_groups_free (also after a failure; safe on a zeroed struct). */
eb_status eb_prune_groups_init(eb_prune_groups *g, const eb_arch *arch, eb_error *err);
void eb_prune_groups_free(eb_prune_groups *g);

/* The group soft-thresholding operator, the proximal map of
 * t * sqrt(n) * ||x||_2 for the one group x = theta[idx[0..n)]:
 *   x <- max(0, 1 - t * sqrt(n) / ||x||_2) * x,
 * in place; a group whose norm is at most t * sqrt(n) (or already 0)
 * becomes exactly 0. Returns 1 when the group is 0 afterwards. t >= 0. */
int eb_prune_group_shrink(float *theta /* (K) */, const uint32_t *idx /* (n) */, size_t n,
                          double t);

/* One proximal step of the whole penalty with step size t (the learning
 * rate times lambda): eb_prune_group_shrink applied to every group in
 * order, each on the values the previous ones left. For disjoint groups
 * that is the exact proximal map of t * sum_g sqrt(|g|) ||theta_g||; for
 * the overlapping groups here it is the composition of the groups'
 * proximal maps (a first-order splitting, exact as t -> 0), which keeps
 * the property that matters: groups reach exactly 0. Returns the number
 * of groups that are 0 afterwards. */
size_t eb_prune_group_prox(const eb_prune_groups *g, float *theta /* (K) */, double t);

/* The penalty lambda * sum_g sqrt(|g|) * ||theta_g||_2; when grad (K) is
 * not NULL, adds its gradient lambda * sqrt(|g|) * theta_g / ||theta_g||
 * (0 for a group at exactly 0: the subgradient of least norm) into it.
 * The naive reference of the proximal step (tests) and the value the
 * transform records. */
double eb_prune_group_lasso(const eb_prune_groups *g, const float *theta /* (K) */,
                            double lambda, float *grad /* (K) or NULL */);

/* Groups whose every parameter is exactly 0. */
size_t eb_prune_groups_zero(const eb_prune_groups *g, const float *theta /* (K) */);

#endif /* EB_PRUNE_H */
