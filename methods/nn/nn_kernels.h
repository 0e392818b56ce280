/* nn_kernels.h: layer kernels of the model core, internal to methods/, the
 * CPU backend's execution strategies (devices/strategy_*.c) and their
 * tests (not API). Each fast kernel (OpenBLAS sgemm, im2col) has a
 * naive reference beside it, `*_naive`, written as the textbook loops;
 * tests/methods/test_nn_kernels.c checks one against the other.
 *
 * Shapes are per the NHWC convention of eb_nn.h. Gradients take a `d`
 * prefix; outputs come first. */
#ifndef EB_NN_KERNELS_H
#define EB_NN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* dense: out (n, NO) = inp (n, NI) . W^T + b, W (NO, NI), b (NO) */
void eb_kern_dense_forward(float *out, const float *inp, const float *w, const float *b, int n,
                           int NI, int NO);
void eb_kern_dense_forward_naive(float *out, const float *inp, const float *w, const float *b,
                                 int n, int NI, int NO);
/* dense for one input, out (NO) = W (NO, NI) . x (NI) + b: the
 * bandwidth-bound case of a single-input prediction, where each weight is
 * used once. Reads W once, row after row as one stream, in a fixed
 * summation order (the same bits on every CPU). Reference: eb_kern_dense_forward_naive
 * with n = 1. */
void eb_kern_dense_gemv(float *out, const float *x, const float *w, const float *b, int NI,
                        int NO);
/* sparse dense layer for one input, the weights given as kept positions:
 * row o's stored weights are vals[j] for j in [rowptr[o], rowptr[o+1]),
 * at flat position idx[j] of the parameter vector, so its input column is
 * idx[j] - (base + o * NI), base being the layer's first weight
 * position; out[o] = sum of vals[j] * x[column] (no bias: the caller adds
 * it). The index arrays may be shared by many value arrays (shared-sparse
 * storage: one index set for all members). Reference:
 * eb_kern_sparse_gemv_naive. */
void eb_kern_sparse_gemv(float *out, const float *x, const float *vals, const uint32_t *idx,
                         const uint64_t *rowptr, uint64_t base, int NI, int NO);
void eb_kern_sparse_gemv_naive(float *out, const float *x, const float *vals,
                               const uint32_t *idx, const uint64_t *rowptr, uint64_t base, int NI,
                               int NO);
/* dw (NO, NI) and db (NO) are overwritten unless dw is NULL (then db is
 * ignored); dinp (n, NI) is written unless NULL. */
void eb_kern_dense_backward(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, int n, int NI, int NO);
void eb_kern_dense_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, int n, int NI, int NO);

/* conv2d 3x3, stride 1, no padding: inp (n, H, W, C) -> out (n, H-2, W-2, NO),
 * W (NO, 3, 3, C), b (NO). The fast version lowers to one sgemm through
 * cols (n*(H-2)*(W-2), 9*C), which it fills and which the backward pass
 * reuses. */
void eb_kern_conv2d_forward(float *out, float *cols, const float *inp, const float *w,
                            const float *b, int n, int H, int W, int C, int NO);
void eb_kern_conv2d_forward_naive(float *out, const float *inp, const float *w, const float *b,
                                  int n, int H, int W, int C, int NO);
/* The same convolution for inference (direct.c): where the CPU has
 * AVX-512 and NO is a multiple of 16 (eb_kern_direct_available), a
 * direct register-blocked kernel with no im2col, which prefetches
 * pf_bytes from pf (the next layer's weights; NULL for none) into L2 as
 * it goes; elsewhere eb_kern_conv2d_forward. scratch holds
 * eb_kern_conv2d_infer_scratch floats; its contents are not kept. */
size_t eb_kern_conv2d_infer_scratch(int n, int H, int W, int C, int NO);
void eb_kern_conv2d_infer(float *out, float *scratch, const float *inp, const float *w,
                          const float *b, int n, int H, int W, int C, int NO, const void *pf,
                          size_t pf_bytes);
/* Dense over packed weights (direct.c), for weights packed once and used
 * many times: wt = eb_kern_pack_weights of w (NO, NI), laid out (NI, NO);
 * out (n, NO) = x (n, NI) . wt + b. Register-blocked on AVX-512 where
 * eb_kern_direct_available(NO) (NO a multiple of 16); elsewhere a plain
 * loop with the same sums in the same order (correct, not fast: callers
 * pack only where the kernel is available). */
int eb_kern_direct_available(int NO);
void eb_kern_pack_weights(float *wt, const float *w, int NI, int NO);
void eb_kern_dense_packed(float *out, const float *x, const float *wt, const float *b, int n,
                          int NI, int NO);
/* dw, db overwritten unless dw is NULL; dinp (n, H, W, C) written unless
 * NULL, using dcols (same shape as cols) as scratch. cols must hold the
 * forward's lowering. */
void eb_kern_conv2d_backward(float *dinp, float *dw, float *db, float *dcols, const float *dout,
                             const float *cols, const float *w, int n, int H, int W, int C,
                             int NO);
void eb_kern_conv2d_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                                   const float *inp, const float *w, int n, int H, int W, int C,
                                   int NO);

/* maxpool 2x2 stride 2: inp (n, H, W, C) -> out (n, H/2, W/2, C); argmax
 * (same shape as out) records the flat input index chosen (first maximum
 * in row-major window order). */
void eb_kern_maxpool_forward(float *out, int32_t *argmax, const float *inp, int n, int H, int W,
                             int C);
void eb_kern_maxpool_forward_naive(float *out, const float *inp, int n, int H, int W, int C);
/* dinp (n, H, W, C) is overwritten. */
void eb_kern_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax, int n,
                              int H, int W, int C);
void eb_kern_maxpool_backward_naive(float *dinp, const float *dout, const float *inp, int n,
                                    int H, int W, int C);

/* relu over len floats; out may alias inp. Backward uses the output's
 * sign; dinp may alias dout. */
void eb_kern_relu_forward(float *out, const float *inp, size_t len);
void eb_kern_relu_backward(float *dinp, const float *dout, const float *out, size_t len);

/* dropout masks for n examples of `size` units: mask[i] = 0 with
 * probability rate, else 1/(1-rate). Example j's mask comes from the RNG
 * stream keyed by (seed, pass, first_example + j, layer), so it does not
 * depend on batching. */
void eb_kern_dropout_mask(float *mask, int n, size_t size, float rate, uint64_t seed,
                          uint64_t pass, uint64_t first_example, int layer);
/* out = inp * mask elementwise (len floats); out may alias inp. */
void eb_kern_mul(float *out, const float *inp, const float *mask, size_t len);



/* ---- test hooks (internal) ----------------------------------------- */
struct eb_net;
/* A hash of every piecewise-linear decision of the last forward pass: the
 * sign of each ReLU output and each max-pool argmax. Finite-difference
 * tests compare it before and after a perturbation to tell a kink
 * crossing (where a difference quotient is meaningless) from a wrong
 * gradient. */
uint64_t eb_net__activation_pattern(const struct eb_net *net);
#endif /* EB_NN_KERNELS_H */
