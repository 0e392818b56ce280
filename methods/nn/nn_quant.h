/* nn_quant.h: reduced-precision inference for the model core: f16 and
 * int8 conversions, the dense/conv GEMM kernels that run on them (each
 * fast kernel in quant.c beside its naive reference in quant_naive.c,
 * `*_naive`), and eb_qnet, a forward pass over weights held in f32, f16
 * or int8.
 *
 * Shapes and the parameter layout of theta are those of eb_nn.h (NHWC
 * activations; per layer W then b, W row-major [out][in], conv
 * W[O][3][3][C]). In both layouts one output channel's weights W[o] are
 * one contiguous run of theta, which is what makes per-output-channel
 * scales a grouping of theta into runs.
 *
 * int8 convention (one place): a run v (len) of finite floats with
 * m = max |v| gets the scale s = m / 127 and the values
 *     q = clamp(rne(v * (127 / m)), -127, 127)
 * where rne rounds half to even (IEEE round-to-nearest, the default mode)
 * and 127 / m is computed once in float. -128 is never produced, so the
 * product of two values fits int16 (|q1 q2| <= 16129). A run of zeros gets
 * s = 0 and q = 0. Dequantized: v~ = q * s, with |v - v~| <= s / 2 up to
 * float rounding (a few ulp of |v|). */
#ifndef EB_NN_QUANT_H
#define EB_NN_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "methods/nn/eb_nn.h"

/* ---- f16 (IEEE binary16) -------------------------------------------- */

/* f32 -> f16 bits: round to nearest, ties to even; values whose magnitude
 * rounds above 65504 become +-inf; results below 2^-14 are f16
 * subnormals (rounded the same way, down to +-0); NaN stays NaN (quiet,
 * sign and the top 9 payload bits kept). */
uint16_t eb_f32_to_f16(float f);
/* f16 bits -> f32, exact for every pattern (NaN payload kept). */
float eb_f16_to_f32(uint16_t h);
/* Bulk conversions of n values; dst and src must not overlap. The fast
 * versions are branch-free loops the compiler vectorises and give the
 * same bits as the scalar functions above. */
void eb_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void eb_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void eb_f32_to_f16_n_naive(uint16_t *dst, const float *src, size_t n);
void eb_f16_to_f32_n_naive(float *dst, const uint16_t *src, size_t n);

/* ---- int8 quantization ---------------------------------------------- */

/* Quantizes one run v (len) into q (len) per the convention above and
 * returns its scale s. Finite input is required of the weights; for
 * activations a row holding inf or NaN gets s = NaN and q = 0, so the
 * products that use it come out NaN rather than silently finite. */
float eb_quant_int8_run(int8_t *q, const float *v, size_t len);
float eb_quant_int8_run_naive(int8_t *q, const float *v, size_t len);
/* The same values written into int16 lanes: the activations' form, so
 * the GEMM's inner loop is a multiply-add of int16 pairs into int32
 * (pmaddwd), which GCC emits for int16 x (int8 widened) but not for
 * int8 x int8 (it then multiplies in int16 and widens every product). */
float eb_quant_int8_run_i16(int16_t *q, const float *v, size_t len);
/* Quantizes theta-like data v (groups[n_groups]) run by run: run g is
 * [groups[g], groups[g+1]) and gets scales[g]. groups must be increasing
 * from groups[0] = 0. */
void eb_quant_int8_groups(int8_t *q, float *scales /* (n_groups) */, const float *v,
                          const uint64_t *groups /* (n_groups + 1) */, size_t n_groups);
/* v = q * scales[g] over every run. */
void eb_dequant_int8_groups(float *v, const int8_t *q, const float *scales,
                            const uint64_t *groups, size_t n_groups);

/* The int8 grouping of an architecture's theta: for every layer with
 * parameters, one run per output channel's weights (W[o], in units order)
 * and then one run for the layer's biases; offsets run from 0 to K.
 * *groups gets n_groups + 1 offsets, allocated with eb_malloc: the caller
 * frees it with eb_free. This is the grouping the quantize transform
 * writes into int8 bundles (eb_trained.groups). */
eb_status eb_quant_groups(const eb_arch *arch, uint64_t **groups, size_t *n_groups,
                          eb_error *err);

/* ---- GEMM kernels: y (n, NO) = x (n, NI) . W^T + b, W (NO, NI) --------- */

/* Largest inner dimension the int8 kernels accept: every int32
 * accumulator stays within range (NI * 127 * 127 <= 2^31 - 1). */
#define EB_QUANT_I8_MAX_NI 133144

/* Integer part alone: acc (n, NO) = qx (n, NI) . qw^T, qw (NO, NI) int8,
 * qx int8 values in [-127, 127] held in int16 lanes. NI <=
 * EB_QUANT_I8_MAX_NI. The fast version is blocked: two rows of x against
 * four rows of W per pass over k, W in blocks of 64 rows; both give
 * identical sums (integer arithmetic). */
void eb_qkern_i8_gemm(int32_t *acc, const int16_t *qx, const int8_t *qw, int n, int NI, int NO);
void eb_qkern_i8_gemm_naive(int32_t *acc, const int16_t *qx, const int8_t *qw, int n, int NI,
                            int NO);
/* int8 dense layer: each row of x is quantized on the fly into qx
 * (n, NI) scratch (eb_quant_int8_run_i16) with scale sx[r] (n, scratch),
 * then
 *     out[r][o] = (float)acc[r][o] * (sx[r] * sw[o]) + b[o]
 * with qw (NO, NI) int8, sw (NO) its per-output-row scales, b (NO). The
 * fast and naive versions evaluate that same expression, so they agree
 * bit for bit. */
void eb_qkern_dense_i8(float *out, int16_t *qx, float *sx, const float *x, const int8_t *qw,
                       const float *sw, const float *b, int n, int NI, int NO);
void eb_qkern_dense_i8_naive(float *out, const float *x, const int8_t *qw, const float *sw,
                             const float *b, int n, int NI, int NO);

/* ---- int8 activations with a static (calibrated) scale -------------
 *
 * The dynamic kernels above give every GEMM row its own scale max|x|/127
 * at run time. With a static scale s (finite, > 0), fixed ahead of time
 * for one layer's input (the quantize transform's activations=calibrated
 * measures it on training data), every value v of every row becomes
 *     q = clamp(rne(v * (1 / s)), -127, 127)
 * with 1 / s computed once in float (a product 0 * inf, possible only for
 * a subnormal s, counts as 0). Values beyond 127.5 s saturate at +-127;
 * below that |v - q s| <= s / 2 up to float rounding. A row holding inf
 * or NaN gets the scale NaN and q = 0, as in the dynamic path, so its
 * outputs come out NaN. The GEMM and its float expression
 *     out[r][o] = (float)acc[r][o] * (s * sw[o]) + b[o]
 * are those of the dynamic kernels with sx[r] = s, so the fast and naive
 * versions agree bit for bit. */
/* Quantizes v (len) with the static scale s into q (len) and returns s
 * (NaN for a row with inf or NaN). */
float eb_quant_int8_static_i16(int16_t *q, const float *v, size_t len, float s);
float eb_quant_int8_static_naive(int8_t *q, const float *v, size_t len, float s);
/* eb_qkern_dense_i8 with every row of x quantized with the static scale
 * xs (qx (n, NI) and sx (n) scratch as there). */
void eb_qkern_dense_i8_static(float *out, int16_t *qx, float *sx, const float *x, float xs,
                              const int8_t *qw, const float *sw, const float *b, int n, int NI,
                              int NO);
void eb_qkern_dense_i8_static_naive(float *out, const float *x, float xs, const int8_t *qw,
                                    const float *sw, const float *b, int n, int NI, int NO);

/* f16 dense layer: w (NO, NI) f16 bits. The fast version converts
 * eb_qkern_f16_block_rows(NI) rows of W at a time into wbuf
 * (block_rows, NI) and multiplies each block with sgemm; the naive one
 * converts weight by weight and accumulates in double. */
int eb_qkern_f16_block_rows(int NI);
void eb_qkern_dense_f16(float *out, float *wbuf, const float *x, const uint16_t *w,
                        const float *b, int n, int NI, int NO);
void eb_qkern_dense_f16_naive(float *out, const float *x, const uint16_t *w, const float *b,
                              int n, int NI, int NO);

/* ---- GEMV kernels: one input row, y (NO) = W (NO, NI) . x + b ---------
 *
 * For a single input (the latency path) each weight is read once and
 * used once, so these are bound by reading W; they exist to do nothing
 * else (no blocking for reuse, no OpenBLAS call). */

/* int8: qx (NI) is one row already quantized with eb_quant_int8_run_i16
 * (scale sx); out[o] = (float)(qx . qw[o]) * (sx * sw[o]) + b[o], the
 * expression of eb_qkern_dense_i8, so for the same row the two agree bit
 * for bit. The naive reference quantizes x (NI) itself
 * (eb_quant_int8_run_naive) and loops. NI <= EB_QUANT_I8_MAX_NI. */
void eb_qkern_gemv_i8(float *out, const int16_t *qx, float sx, const int8_t *qw,
                      const float *sw, const float *b, int NI, int NO);
void eb_qkern_gemv_i8_naive(float *out, const float *x, const int8_t *qw, const float *sw,
                            const float *b, int NI, int NO);
/* The static-scale reference of eb_qkern_gemv_i8: x (NI) quantized
 * with eb_quant_int8_static_naive (scale xs), then the naive loops. The
 * fast path is eb_quant_int8_static_i16 followed by eb_qkern_gemv_i8. */
void eb_qkern_gemv_i8_static_naive(float *out, const float *x, float xs, const int8_t *qw,
                                   const float *sw, const float *b, int NI, int NO);
/* f16: w (NO, NI) f16 bits, x (NI), b (NO). For each o, 16 float lanes
 * a[l] accumulate h2f(w[o][i + l]) * x[i + l] over i = 0, 16, ... below
 * NV = NI - NI % 16, then s = a[0] + ... + a[15] in order, the tail's
 * products are added one at a time, and out[o] = s + b[o] (no FMA). The
 * fast version takes AVX2 + F16C (vcvtph2ps) where the CPU has them and
 * portable C otherwise (eb_qkern_gemv_f16_portable, exposed for the
 * test): the same operations in the same order, so the same bits. It is
 * not eb_qkern_dense_f16's sum (OpenBLAS's order), so it differs from it
 * by float rounding. The naive reference accumulates in double. */
void eb_qkern_gemv_f16(float *out, const float *x, const uint16_t *w, const float *b, int NI,
                       int NO);
void eb_qkern_gemv_f16_portable(float *out, const float *x, const uint16_t *w, const float *b,
                                int NI, int NO);
void eb_qkern_gemv_f16_naive(float *out, const float *x, const uint16_t *w, const float *b,
                             int NI, int NO);
/* 1 when eb_qkern_gemv_f16 runs its F16C path on this CPU. */
int eb_qkern_gemv_f16_uses_f16c(void);

/* conv2d 3x3, stride 1, no padding over inp (n, H, W, C) -> out
 * (n, H-2, W-2, NO), weights W (NO, 3, 3, C) as in eb_nn.h. The fast
 * versions lower to the dense kernels above through cols
 * (n*(H-2)*(W-2), 9*C), one row per output pixel with its patch ordered
 * (ky, kx, c); int8 quantizes each such row (patch) with its own scale,
 * using qx (same shape as cols, int16) and sx (n*(H-2)*(W-2)) as scratch.
 * The naive versions loop over output pixels, gathering and (int8)
 * quantizing each patch in the same order, so int8 agrees bit for bit. */
void eb_qkern_conv2d_i8(float *out, float *cols, int16_t *qx, float *sx, const float *inp,
                        const int8_t *qw, const float *sw, const float *b, int n, int H, int W,
                        int C, int NO);
void eb_qkern_conv2d_i8_naive(float *out, const float *inp, const int8_t *qw, const float *sw,
                              const float *b, int n, int H, int W, int C, int NO);
/* int8 conv2d with every patch quantized with the static scale xs. */
void eb_qkern_conv2d_i8_static(float *out, float *cols, int16_t *qx, float *sx, const float *inp,
                               float xs, const int8_t *qw, const float *sw, const float *b, int n,
                               int H, int W, int C, int NO);
void eb_qkern_conv2d_i8_static_naive(float *out, const float *inp, float xs, const int8_t *qw,
                                     const float *sw, const float *b, int n, int H, int W, int C,
                                     int NO);
void eb_qkern_conv2d_f16(float *out, float *cols, float *wbuf, const float *inp,
                         const uint16_t *w, const float *b, int n, int H, int W, int C, int NO);
void eb_qkern_conv2d_f16_naive(float *out, const float *inp, const uint16_t *w, const float *b,
                               int n, int H, int W, int C, int NO);

/* ---- Quantized inference network ------------------------------------ */

/* Weight storage of an eb_qnet; the values match eb_storage_kind. */
typedef enum eb_qnet_storage {
    EB_QNET_F32 = 1,
    EB_QNET_F16 = 2,
    EB_QNET_INT8 = 3
} eb_qnet_storage;

/* A deterministic forward pass (dropout layers are the identity) of one
 * architecture over weights held in one storage, with its workspace
 * carved from one allocation at creation; forward allocates nothing.
 *   f32:  dense and conv2d through sgemm (the kernels of eb_net).
 *   f16:  weights kept as f16; eb_qkern_dense_f16 (conv2d: im2col, then
 *         the same GEMM).
 *   int8: weights int8 with one scale per output channel, biases
 *         dequantized to f32 once at eb_qnet_set_weights; activations
 *         quantized per GEMM row (per example for dense, per output pixel
 *         patch for conv2d, after im2col), int32 accumulation
 *         (eb_qkern_dense_i8), or, once static activation scales are set
 *         (eb_qnet_set_act_scales, eb_qweights_set_act_scales), with one
 *         fixed scale per weighted layer (eb_qkern_dense_i8_static).
 * Convolutions run over chunks of images so the im2col buffer stays
 * bounded whatever max_batch is. */
typedef struct eb_qnet eb_qnet;

/* Creates a network for batches of up to max_batch examples. Refuses an
 * int8 network with a weighted layer whose inner dimension exceeds
 * EB_QUANT_I8_MAX_NI. The caller frees it with eb_qnet_free. Weights
 * must be set (eb_qnet_set_weights) before eb_qnet_forward. */
eb_status eb_qnet_new(const eb_arch *arch, eb_qnet_storage storage, int max_batch,
                      eb_qnet **out, eb_error *err);
/* Copies the weights in. values holds K = arch->n_params entries in the
 * layout of eb_nn.h, typed by storage: float (f32), uint16_t f16 bits
 * (f16), int8_t (int8). For int8, groups (n_groups + 1 offsets from 0 to
 * K, increasing) cut theta into runs and scales (n_groups, finite, >= 0)
 * gives each run's scale, value = q * scale; every output channel's
 * weights W[o] must lie inside one run (eb_quant_groups gives the
 * per-channel grouping; a coarser one such as one run per layer is
 * accepted too). For f32 and f16, scales and groups must be NULL and
 * n_groups 0. f32 and f16 values must be finite. */
eb_status eb_qnet_set_weights(eb_qnet *q, const void *values, const float *scales,
                              const uint64_t *groups, size_t n_groups, eb_error *err);
/* Forward pass of n (1..max_batch) examples x (n, in_size) into logits
 * (n, n_classes), caller-owned. */
eb_status eb_qnet_forward(eb_qnet *q, const float *x, size_t n, float *logits, eb_error *err);
/* The same pass built from the naive kernels (quant_naive.c, and the
 * naive relu/maxpool of the f32 path): the reference eb_qnet_forward is
 * tested against. Allocates its own scratch per call; slow. */
eb_status eb_qnet_forward_naive(const eb_qnet *q, const float *x, size_t n, float *logits,
                                eb_error *err);
/* Bytes held: the weights in their storage (with int8 scales and f32
 * biases) plus the workspace. */
size_t eb_qnet_bytes(const eb_qnet *q);
/* The weights' share of that: the storage of theta (K values), the f32
 * biases and, for int8, the f32 channel scales. 0 for a network from
 * eb_qnet_new_workspace. */
size_t eb_qnet_weight_bytes(const eb_qnet *q);

/* ---- Weights apart from the workspace --------------------------------
 *
 * Several networks of one architecture and storage (the S members of a
 * posterior) share one workspace: each member's weights are an
 * eb_qweights that borrows the K stored values where they lie (a bundle's
 * map, eb_bundle_stored_view) and owns only what the kernels need in
 * another form, the f32 biases (int8: dequantized once here) and, for
 * int8, one f32 scale per output channel; one eb_qnet made with
 * eb_qnet_new_workspace runs any of them through eb_qnet_forward_w. The
 * logits are those of an eb_qnet whose eb_qnet_set_weights was given the
 * same arguments, bit for bit. */
typedef struct eb_qweights eb_qweights;

/* Checks, without building anything, that eb_qnet can run weights of
 * this architecture and storage: for int8, every weighted layer's inner
 * dimension is at most EB_QUANT_I8_MAX_NI and the grouping (n_groups + 1
 * offsets from 0 to K, increasing) keeps each output channel's weights
 * W[o] inside one run. EB_ERR_UNSUPPORTED (inner dimension) or EB_ERR_ARG
 * (grouping) otherwise, naming the layer. groups must be NULL and
 * n_groups 0 for f32 and f16. */
eb_status eb_qnet_supports(const eb_arch *arch, eb_qnet_storage storage,
                           const uint64_t *groups, size_t n_groups, eb_error *err);
/* Prepares one network's weights for eb_qnet_forward_w without copying
 * them. values (K = arch->n_params entries, typed by storage as for
 * eb_qnet_set_weights) is borrowed: it must stay valid and unchanged
 * while *out lives. scales and groups are as for eb_qnet_set_weights
 * (scales being this network's row: n_groups entries) and are read only
 * during the call. The same checks as eb_qnet_set_weights (finite f32 and
 * f16 values, finite scales >= 0, a grouping that keeps each W[o] in one
 * run). One allocation; the caller frees it with eb_qweights_free. */
eb_status eb_qweights_new(const eb_arch *arch, eb_qnet_storage storage, const void *values,
                          const float *scales, const uint64_t *groups, size_t n_groups,
                          eb_qweights **out, eb_error *err);
void eb_qweights_free(eb_qweights *w);
/* Layer i's weights as the kernels read them: *values the layer's W
 * (typed by the storage, borrowed from the values given to
 * eb_qweights_new), *scale its per-output-channel int8 scales (units;
 * NULL for f16 and f32 or a layer without weights) and *bias its f32
 * biases (units). arch is the one the weights were made for. */
void eb_qweights_layer(const eb_qweights *w, const eb_arch *arch, int i, const void **values,
                       const float **scale, const float **bias);
/* Bytes the weights own: the f32 biases, the int8 channel scales and the
 * handle; not the borrowed values. */
size_t eb_qweights_bytes(const eb_qweights *w);
/* Creates a network with a workspace for batches of up to max_batch and
 * no weights of its own (eb_qnet_set_weights and eb_qnet_forward refuse
 * it): it runs eb_qweights through eb_qnet_forward_w. Same checks as
 * eb_qnet_new; eb_qnet_bytes is the workspace alone. The caller frees it
 * with eb_qnet_free. */
eb_status eb_qnet_new_workspace(const eb_arch *arch, eb_qnet_storage storage, int max_batch,
                                eb_qnet **out, eb_error *err);
/* Forward pass of n (1..max_batch) examples x (n, in_size) into logits
 * (n, n_classes) over the weights w, which must have q's storage and
 * architecture (EB_ERR_ARG when storage, K or the layer count differ).
 * Works on any eb_qnet (w is used instead of the network's own weights);
 * the workspace is q's, so one q serves one forward at a time. */
eb_status eb_qnet_forward_w(eb_qnet *q, const eb_qweights *w, const float *x, size_t n,
                            float *logits, eb_error *err);
/* The naive reference of eb_qnet_forward_w (as eb_qnet_forward_naive). */
eb_status eb_qnet_forward_w_naive(const eb_qnet *q, const eb_qweights *w, const float *x,
                                  size_t n, float *logits, eb_error *err);
/* ---- Static activation scales (int8) ---------------------------------
 *
 * One scale per weighted layer (dense or conv2d, in layer order) for
 * that layer's input: eb_quant_act_layers(arch) of them. */
size_t eb_quant_act_layers(const eb_arch *arch);
/* Gives int8 weights static activation scales act (n_act =
 * eb_quant_act_layers(arch), each finite and > 0; copied), or, with act
 * NULL and n_act 0, returns them to dynamic quantization. EB_ERR_ARG
 * naming the count or the scale at fault (w unchanged then), or for
 * weights that are not int8. */
eb_status eb_qweights_set_act_scales(eb_qweights *w, const eb_arch *arch, const float *act,
                                     size_t n_act, eb_error *err);
/* The same for a network's own weights (eb_qnet_set_weights leaves them
 * as they are). */
eb_status eb_qnet_set_act_scales(eb_qnet *q, const float *act, size_t n_act, eb_error *err);
/* Layer i's static activation scale, or 0 when w quantizes dynamically
 * (or layer i has no weights). */
float eb_qweights_act_scale(const eb_qweights *w, int i);

/* Called by eb_qnet_forward_observe with the input of every weighted
 * layer i before the layer runs: in (n, len), len = the layer's in_size
 * (conv2d: the H x W x C input image, not its im2col patches). */
typedef void (*eb_qnet_observe_fn)(void *ctx, int layer, const float *in, size_t n, size_t len);
/* eb_qnet_forward_w, calling fn (not NULL) on the way: the
 * calibration's view of a network's activations. The logits are those of
 * eb_qnet_forward_w bit for bit. */
eb_status eb_qnet_forward_observe(eb_qnet *q, const eb_qweights *w, const float *x, size_t n,
                                  float *logits, eb_qnet_observe_fn fn, void *ctx,
                                  eb_error *err);

const eb_arch *eb_qnet_arch(const eb_qnet *q);
eb_qnet_storage eb_qnet_storage_of(const eb_qnet *q);
void eb_qnet_free(eb_qnet *q);

#endif /* EB_NN_QUANT_H */
