/* quant_internal.h: the eb_qnet structure, shared by the fast forward
 * (quant.c) and its naive reference (quant_naive.c). Not API. */
#ifndef EB_QUANT_INTERNAL_H
#define EB_QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "methods/nn/nn_quant.h"

struct eb_qnet {
    eb_arch arch;
    eb_qnet_storage storage;
    int max_batch;
    int weights_set;
    /* Weights, one allocation (wblock, wbytes). values: K entries in the
     * storage's type, theta's layout (for int8 the bias entries are kept
     * but unused: the kernels read bias). */
    void *values;
    float *bias;  /* every layer's biases as f32, back to back */
    float *scale; /* int8: one per output channel of every weighted layer */
    size_t bias_at[EB_ARCH_MAX_LAYERS];  /* layer i's first bias in bias */
    size_t scale_at[EB_ARCH_MAX_LAYERS]; /* layer i's first scale in scale */
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

#endif /* EB_QUANT_INTERNAL_H */
