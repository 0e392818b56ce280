/* quant_internal.h: the eb_qweights and eb_qnet structures, shared by the
 * fast forward (quant.c) and its naive reference (quant_naive.c). Not
 * API. */
#ifndef EB_QUANT_INTERNAL_H
#define EB_QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "methods/nn/nn_quant.h"

/* One network's weights as the forward reads them. values is borrowed
 * (eb_qweights_new) or points into its eb_qnet's own copy; bias and scale
 * are f32 arrays laid out by bias_at / scale_at. */
struct eb_qweights {
    eb_qnet_storage storage;
    size_t k;     /* K, the architecture's n_params */
    int n_layers; /* the architecture's, checked by eb_qnet_forward_w */
    /* K entries in the storage's type, theta's layout (for int8 the bias
     * entries are kept but unused: the kernels read bias). */
    const void *values;
    float *bias;  /* every layer's biases as f32, back to back */
    float *scale; /* int8: one per output channel of every weighted layer */
    size_t bias_at[EB_ARCH_MAX_LAYERS];  /* layer i's first bias in bias */
    size_t scale_at[EB_ARCH_MAX_LAYERS]; /* layer i's first scale in scale */
    size_t bytes; /* eb_qweights_new: the allocation holding this struct, bias and scale */
    /* int8 activations: has_act 0 quantizes every GEMM row dynamically;
     * 1 (eb_qweights_set_act_scales) quantizes layer i's input with the
     * static scale act[i] (> 0, finite) for every weighted layer i. */
    int has_act;
    float act[EB_ARCH_MAX_LAYERS];
};

struct eb_qnet {
    eb_arch arch;
    eb_qnet_storage storage;
    int max_batch;
    int weights_set;
    int own_weights; /* 0: eb_qnet_new_workspace, forward only through eb_qnet_forward_w */
    /* The weights of eb_qnet_set_weights: w's arrays point into one
     * allocation (wblock, wbytes) holding values, bias and scale. */
    struct eb_qweights w;
    void *wblock;
    size_t wbytes;
    /* Workspace, one allocation (block, bytes). */
    float *act[2];    /* ping-pong activations (max_batch, max_act) */
    int32_t *argmax;  /* max-pool scratch (max_batch, largest pool output) */
    float *cols;      /* im2col of one chunk of images */
    int16_t *qx;      /* quantized rows of the GEMM in flight (int8 values) */
    float *sx;        /* their scales */
    float *wbuf;      /* f16: one converted block of W */
    int chunk[EB_ARCH_MAX_LAYERS]; /* conv2d: images per im2col chunk */
    void *block;
    size_t bytes;
};

/* Checks that w can run on q (same storage, K and layer count) and that
 * n lies in 1..max_batch; the forward passes' common gate. */
eb_status eb_qnet__check(const eb_qnet *q, const eb_qweights *w, size_t n, eb_error *err);

#endif /* EB_QUANT_INTERNAL_H */
