/* quantize.c: the quantize transform. It stores every value of the
 * parent's posterior (each member of a samples bundle, dropout's theta,
 * VI's mu and sigma, a student's theta) at a lower precision:
 *   f16:  IEEE binary16, rounded to nearest even;
 *   int8: symmetric int8 with one f32 scale per output channel of every
 *         weighted layer (W[o] is contiguous in theta, methods/nn/eb_nn.h)
 *         and one per layer's biases, scale = max|v| / 127.
 * The values are rounded by the bundle writer. eb_posterior_from_bundle
 * decodes them to f32; the CPU device (EB_POSTERIOR_QUANTIZED) runs them
 * in place on the int8/f16 kernels, int8 quantizing activations per GEMM
 * row. A sparse parent becomes dense at the new precision: the bundle has
 * one storage kind per file. */
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/eb_transform.h"
#include "methods/nn/nn_quant.h"

static const eb_setting_spec quantize_settings[] = {
    {"precision", EB_SET_CHOICE, "int8", 0, 0, "int8|f16",
     "int8: symmetric, one scale per output channel; f16: IEEE half precision"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static eb_status quantize_apply(const eb_transform_request *req, eb_trained *out, eb_error *err)
{
    const eb_posterior *p = req->posterior;
    const char *precision = eb_settings_str(req->settings, "precision");
    const uint32_t rows = p->repr == EB_REPR_SAMPLES ? p->members
                          : p->repr == EB_REPR_GAUSSIAN ? 2
                                                        : 1;
    eb_status st = eb_trained_alloc(out, &p->arch, p->repr, p->members, rows, err);
    if (st)
        return st;
    out->head = (uint32_t)p->head;
    if (p->repr == EB_REPR_GAUSSIAN) {
        memcpy(out->params, p->params, p->k * sizeof(float));
        memcpy(out->params + p->k, p->sigma, p->k * sizeof(float));
    } else {
        memcpy(out->params, p->params, (size_t)rows * p->k * sizeof(float));
    }
    if (!strcmp(precision, "f16")) {
        out->storage = EB_STORE_F16;
        return eb_trained_meta(out, "quantize.bits", "16", err);
    }
    out->storage = EB_STORE_INT8;
    st = eb_quant_groups(&p->arch, &out->groups, &out->n_groups, err);
    if (!st)
        st = eb_trained_meta(out, "quantize.bits", "8", err);
    return st;
}

const eb_transform eb_transform_quantize = {
    "quantize",
    "store every value at lower precision: f16, or int8 with per-output-channel scales",
    quantize_settings,
    "precision",
    quantize_apply,
    0,
};
