/* eb_nn.h: the model core. An architecture is a short list of layer
 * specs; a model is an architecture plus one flat parameter vector theta.
 * Every method (SGD training, ensembles, samplers, VI, pruning) works on
 * flat vectors of K floats.
 *
 * Activation layout: one example is an H x W x C image stored
 * channel-last (NHWC: index (y * W + x) * C + c); a batch is N of them
 * back to back. Flat layers (after `flatten` or `dense`) have H = W = 1.
 *
 * Parameter layout of theta (K floats), the one place it is written down:
 * layers in order; within a layer with parameters, the weights then the
 * biases, row-major:
 *   dense  (in -> out):          W[out][in], then b[out]; `in` indexes the
 *                                input example's flat NHWC order.
 *   conv2d (3x3, stride 1, no padding, C -> O channels):
 *                                W[O][3][3][C] (ky, kx, c innermost), then
 *                                b[O].
 * Other layers have no parameters. */
#ifndef EB_NN_H
#define EB_NN_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "methods/nn/eb_rng.h"

#define EB_ARCH_MAX_LAYERS 32
#define EB_ARCH_MAX_UNITS 65536
#define EB_ARCH_MAX_DIM 4096
#define EB_ARCH_TEXT_MAX 2048
/* Sized architecture names (eb_arch_named): each width from 1 to
 * EB_ARCH_MAX_WIDTH, and at most EB_ARCH_MAX_HIDDEN hidden dense layers
 * (flatten + 2 per hidden layer + the output layer fit
 * EB_ARCH_MAX_LAYERS). */
#define EB_ARCH_MAX_WIDTH 4096
#define EB_ARCH_MAX_HIDDEN ((EB_ARCH_MAX_LAYERS - 2) / 2)

typedef enum eb_layer_kind {
    EB_LAYER_DENSE = 1,
    EB_LAYER_CONV2D,  /* 3x3, stride 1, no padding */
    EB_LAYER_MAXPOOL, /* 2x2, stride 2, odd edges dropped */
    EB_LAYER_RELU,
    EB_LAYER_DROPOUT, /* inverted dropout: kept units scaled by 1/(1-rate) */
    EB_LAYER_FLATTEN
} eb_layer_kind;

/* One layer: what the spec says (kind, units, rate) and what
 * eb_arch_resolve derives (shapes and where its parameters sit in theta). */
typedef struct eb_layer {
    eb_layer_kind kind;
    int units;  /* dense: outputs; conv2d: output channels; else 0 */
    float rate; /* dropout: drop probability in [0, 1); else 0 */
    /* derived */
    int in_h, in_w, in_c;
    int out_h, out_w, out_c;
    size_t in_size, out_size; /* floats per example */
    size_t param_offset;      /* first weight in theta */
    size_t n_weights, n_bias;
} eb_layer;

typedef struct eb_arch {
    int in_h, in_w, in_c;
    int n_layers;
    eb_layer layers[EB_ARCH_MAX_LAYERS];
    /* derived */
    int n_classes;      /* outputs of the final dense layer */
    size_t in_size;     /* floats per input example */
    size_t n_params;    /* K */
    size_t max_act;     /* largest per-example activation, in floats */
} eb_arch;

/* Parses the text form: layers separated by newlines or ';', the first
 * naming the input shape:
 *   input 28x28x1; conv2d 32; relu; maxpool; conv2d 64; relu; maxpool;
 *   flatten; dense 128; relu; dense 10
 * (`input HxWxC`, `dense N`, `conv2d N`, `maxpool`, `relu`,
 * `dropout P`, `flatten`; '#' starts a comment). Resolves shapes. Errors
 * name the layer number and the problem. */
eb_status eb_arch_parse(const char *text, eb_arch *arch, eb_error *err);
/* Validates the spec, derives every shape, offset and K. The last layer
 * must be dense (its units are the classes). */
eb_status eb_arch_resolve(eb_arch *arch, eb_error *err);
/* Canonical text, one layer per line; parse(format(a)) == a. */
eb_status eb_arch_format(const eb_arch *arch, char *buf, size_t len, eb_error *err);
/* The reference architectures by name: "mlp" (784-256-256-10, ReLU),
 * "cnn" (conv 32, pool, conv 64, pool, dense 128, dense 10) and
 * "mlp-small" (784-32-10, for full-batch HMC on data subsets); and the
 * sized forms of the same shapes on 28x28x1 inputs with 10 classes:
 * "mlp:W1,W2,...,Wn" (flatten, then dense Wi + relu per width, then
 * dense 10; 1 to EB_ARCH_MAX_HIDDEN widths) and "cnn:C1,C2,D" (conv C1,
 * pool, conv C2, pool, dense D, dense 10); widths are 1 to
 * EB_ARCH_MAX_WIDTH. "mlp:256,256" is the same architecture as "mlp".
 * Errors (EB_ERR_ARG) name the whole name and the width at fault. */
eb_status eb_arch_named(const char *name, eb_arch *arch, eb_error *err);
/* A copy of arch with a dropout layer of the given rate after every
 * hidden ReLU (after the max-pool that follows one, if any): the MC
 * dropout variant of a reference architecture. */
eb_status eb_arch_with_dropout(const eb_arch *arch, float rate, eb_arch *out, eb_error *err);
/* 1 if the architecture has any dropout layer with rate > 0. */
int eb_arch_has_dropout(const eb_arch *arch);

/* He-normal initialisation (N(0, 2/fan_in)) for layers feeding a ReLU,
 * LeCun-normal (N(0, 1/fan_in)) for the output layer; zero biases. */
void eb_arch_init_params(const eb_arch *arch, float *theta /* (K) */, eb_rng *rng);

/* ---- Running a network over mini-batches ---------------------------- */

/* How dropout layers behave in a forward pass. */
typedef enum eb_dropout_mode {
    EB_DROPOUT_OFF = 0, /* identity (deterministic prediction) */
    EB_DROPOUT_SAMPLE   /* draw masks: training and MC dropout passes */
} eb_dropout_mode;

/* Masks are drawn per example from the stream (seed, pass, example index),
 * so they do not depend on how examples are split into batches or
 * threads. */
typedef struct eb_dropout_ctx {
    eb_dropout_mode mode;
    uint64_t seed;
    uint64_t pass;          /* training step, or prediction draw */
    uint64_t first_example; /* global index of the batch's first example */
} eb_dropout_ctx;

typedef struct eb_net eb_net; /* workspace: activations, masks, scratch */

/* Workspace for batches of up to max_batch examples. The caller frees it
 * with eb_net_free. */
eb_status eb_net_new(const eb_arch *arch, int max_batch, eb_net **out, eb_error *err);
void eb_net_free(eb_net *net);
const eb_arch *eb_net_arch(const eb_net *net);
/* Bytes of workspace held (reported as model memory by devices). */
size_t eb_net_workspace_bytes(const eb_net *net);

/* Forward pass of n <= max_batch examples x (n, in_size); returns the
 * logits (n, n_classes), owned by net and valid until the next call.
 * drop may be NULL (dropout off). */
const float *eb_net_forward(eb_net *net, const float *theta, const float *x, int n,
                            const eb_dropout_ctx *drop);

/* Backward pass for the last forward: given dlogits (n, n_classes) writes
 * the gradient with respect to theta into grad (K, overwritten) unless
 * grad is NULL and, when dx is not NULL, with respect to the input into
 * dx (n, in_size). */
void eb_net_backward(eb_net *net, const float *theta, const float *dlogits, float *grad,
                     float *dx);

/* Mean softmax cross-entropy of logits (n, C) against labels y (n);
 * writes dlogits = (softmax - onehot) * scale (n, C) when dlogits is not
 * NULL (scale = 1/n for the mean's gradient). Returns the mean loss. */
double eb_softmax_xent(float *dlogits, const float *logits, const uint8_t *y, int n, int C,
                       float scale);
/* Row-wise softmax of logits (n, C) into probs (n, C); may alias. */
void eb_softmax(float *probs, const float *logits, int n, int C);

/* Threads used by the dense algebra (OpenBLAS); 0 keeps the current
 * setting. Returns the count in effect. */
int eb_nn_set_threads(int threads);
/* Name and core type of the BLAS in use, for provenance. */
const char *eb_nn_blas_info(void);

/* ---- Optimisers over flat vectors ----------------------------------- */

typedef enum eb_optim_kind { EB_OPTIM_SGD = 1, EB_OPTIM_ADAM } eb_optim_kind;

typedef struct eb_optim_config {
    eb_optim_kind kind;
    float lr;
    float momentum;     /* SGD: heavy-ball momentum (0 = plain SGD) */
    int nesterov;       /* SGD: Nesterov momentum */
    float beta1, beta2; /* Adam */
    float eps;          /* Adam */
    /* L2 weight decay wd added to the gradient as wd * theta: the
     * gradient of a Gaussian prior N(0, 1/(wd * N)) on each weight when
     * the data term is a mean over N training examples. */
    float weight_decay;
} eb_optim_config;

typedef struct eb_optim {
    eb_optim_config cfg;
    size_t k;
    long t;   /* steps taken */
    float *m; /* (K) momentum / first moment */
    float *v; /* (K) second moment (Adam) */
} eb_optim;

void eb_optim_config_default(eb_optim_config *cfg, eb_optim_kind kind);
eb_status eb_optim_init(eb_optim *opt, const eb_optim_config *cfg, size_t k, eb_error *err);
/* One update of theta (K) from grad (K) with learning rate lr (overrides
 * cfg.lr, for schedules). grad is left modified (decay added). */
void eb_optim_step(eb_optim *opt, float *theta, float *grad, float lr);
/* The same update split across threads: one thread calls
 * eb_optim_begin_step, then each coordinate range [begin, end) is updated
 * by eb_optim_step_range, from any thread, ranges disjoint. The result is
 * identical to eb_optim_step. */
void eb_optim_begin_step(eb_optim *opt);
void eb_optim_step_range(eb_optim *opt, float *theta, float *grad, float lr, size_t begin,
                         size_t end);
/* eb_optim_step_range inside a pruning mask (K, NULL = none): a pruned
 * coordinate's gradient is zeroed before the step (so no momentum or
 * moment builds up), and its value and optimiser state are set to exactly
 * 0 after it (weight decay of a zero is zero, but the explicit reset
 * keeps the invariant whatever the update rule). */
void eb_optim_step_masked_range(eb_optim *opt, float *theta, float *grad, float lr,
                                const uint8_t *mask, size_t begin, size_t end);
void eb_optim_free(eb_optim *opt);

#endif /* EB_NN_H */
