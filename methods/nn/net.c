/* net.c: forward and backward passes of an architecture over mini-batches,
 * with every buffer carved out of one allocation made when the workspace
 * is created (no allocation per batch). ReLU runs in place and flatten is
 * a view, which keeps the CNN's workspace small. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_nn.h"
#include "methods/nn/nn_kernels.h"

struct eb_net {
    eb_arch arch;
    int max_batch;
    int n;              /* examples in the last forward */
    const float *x;     /* input of the last forward (borrowed) */
    float *out[EB_ARCH_MAX_LAYERS];   /* layer outputs (n, out_size) */
    float *mask[EB_ARCH_MAX_LAYERS];  /* dropout masks */
    int32_t *argmax[EB_ARCH_MAX_LAYERS];
    float *cols[EB_ARCH_MAX_LAYERS];  /* conv lowering, kept for backward */
    int drop_on[EB_ARCH_MAX_LAYERS];  /* mask drawn in the last forward */
    float *dcols;       /* conv input-gradient scratch */
    float *grad[2];     /* ping-pong activation gradients (n, max_act) */
    int first_param;    /* first layer with parameters */
    void *block;
    size_t bytes;
};

/* Whether layer i writes a buffer of its own (else it aliases its input). */
static int owns_output(const eb_arch *a, int i)
{
    eb_layer_kind k = a->layers[i].kind;
    if (k == EB_LAYER_FLATTEN)
        return 0;
    if (k == EB_LAYER_RELU && i > 0)
        return 0; /* in place over the previous layer's output */
    return 1;
}

static size_t align_up(size_t x)
{
    return (x + 15) & ~(size_t)15; /* floats: 64-byte alignment */
}

eb_status eb_net_new(const eb_arch *arch, int max_batch, eb_net **out, eb_error *err)
{
    eb_net *net;
    size_t total = 0, nb;
    size_t max_cols = 0;
    char *p;

    *out = NULL;
    if (max_batch < 1 || max_batch > (1 << 20))
        return eb_error_set(err, EB_ERR_ARG, "batch size %d is outside 1..%d", max_batch, 1 << 20);
    net = eb_calloc(1, sizeof *net);
    if (!net)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory creating a network workspace");
    net->arch = *arch;
    net->max_batch = max_batch;
    nb = (size_t)max_batch;
    net->first_param = arch->n_layers;
    /* First pass: sizes (in floats, each rounded up to 64 bytes). */
    for (int i = 0; i < arch->n_layers; i++) {
        const eb_layer *L = &arch->layers[i];
        if (L->n_weights && net->first_param == arch->n_layers)
            net->first_param = i;
        if (owns_output(arch, i))
            total += align_up(nb * L->out_size);
        if (L->kind == EB_LAYER_DROPOUT)
            total += align_up(nb * L->out_size);
        if (L->kind == EB_LAYER_MAXPOOL)
            total += align_up(nb * L->out_size); /* int32, same width as float */
        if (L->kind == EB_LAYER_CONV2D) {
            size_t c = nb * (size_t)(L->out_h * L->out_w) * 9 * (size_t)L->in_c;
            total += align_up(c);
            if (c > max_cols)
                max_cols = c;
        }
    }
    total += align_up(max_cols) + 2 * align_up(nb * arch->max_act);
    net->bytes = total * sizeof(float);
    net->block = eb_malloc_aligned(64, net->bytes);
    if (!net->block) {
        eb_free(net);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory: the network workspace needs %zu bytes for batch %d",
                            total * sizeof(float), max_batch);
    }
    /* Second pass: carve. */
    p = net->block;
#define CARVE(ptr, type, count)                        \
    do {                                               \
        (ptr) = (type *)(void *)p;                     \
        p += align_up(count) * sizeof(float);          \
    } while (0)
    for (int i = 0; i < arch->n_layers; i++) {
        const eb_layer *L = &arch->layers[i];
        if (owns_output(arch, i))
            CARVE(net->out[i], float, nb * L->out_size);
        if (L->kind == EB_LAYER_DROPOUT)
            CARVE(net->mask[i], float, nb * L->out_size);
        if (L->kind == EB_LAYER_MAXPOOL)
            CARVE(net->argmax[i], int32_t, nb * L->out_size);
        if (L->kind == EB_LAYER_CONV2D)
            CARVE(net->cols[i], float, nb * (size_t)(L->out_h * L->out_w) * 9 * (size_t)L->in_c);
    }
    CARVE(net->dcols, float, max_cols);
    CARVE(net->grad[0], float, nb * arch->max_act);
    CARVE(net->grad[1], float, nb * arch->max_act);
#undef CARVE
    *out = net;
    return EB_OK;
}

void eb_net_free(eb_net *net)
{
    if (!net)
        return;
    eb_free_aligned(net->block);
    eb_free(net);
}

const eb_arch *eb_net_arch(const eb_net *net)
{
    return &net->arch;
}

size_t eb_net_workspace_bytes(const eb_net *net)
{
    return net->bytes;
}

const float *eb_net_forward(eb_net *net, const float *theta, const float *x, int n,
                            const eb_dropout_ctx *drop)
{
    const eb_arch *a = &net->arch;
    const float *in = x;

    net->n = n;
    net->x = x;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const float *w = theta + L->param_offset;
        const float *b = w + L->n_weights;
        float *o;
        if (!owns_output(a, i))
            net->out[i] = (float *)in; /* view of the previous buffer */
        o = net->out[i];
        net->drop_on[i] = 0;
        switch (L->kind) {
        case EB_LAYER_DENSE:
            eb_kern_dense_forward(o, in, w, b, n, (int)L->in_size, L->units);
            break;
        case EB_LAYER_CONV2D:
            eb_kern_conv2d_forward(o, net->cols[i], in, w, b, n, L->in_h, L->in_w, L->in_c,
                                   L->units);
            break;
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_forward(o, net->argmax[i], in, n, L->in_h, L->in_w, L->in_c);
            break;
        case EB_LAYER_RELU:
            eb_kern_relu_forward(o, in, (size_t)n * L->out_size);
            break;
        case EB_LAYER_DROPOUT:
            if (drop && drop->mode == EB_DROPOUT_SAMPLE && L->rate > 0.0f) {
                eb_kern_dropout_mask(net->mask[i], n, L->out_size, L->rate, drop->seed,
                                     drop->pass, drop->first_example, i);
                eb_kern_mul(o, in, net->mask[i], (size_t)n * L->out_size);
                net->drop_on[i] = 1;
            } else {
                memcpy(o, in, (size_t)n * L->out_size * sizeof(float));
            }
            break;
        case EB_LAYER_FLATTEN:
            break;
        }
        in = o;
    }
    return in;
}

void eb_net_backward(eb_net *net, const float *theta, const float *dlogits, float *grad,
                     float *dx)
{
    const eb_arch *a = &net->arch;
    const int n = net->n;
    const float *dout = dlogits;
    int pp = 0;

    for (int i = a->n_layers - 1; i >= 0; i--) {
        const eb_layer *L = &a->layers[i];
        const float *inp = i > 0 ? net->out[i - 1] : net->x;
        const float *w = theta + L->param_offset;
        float *dw = grad ? grad + L->param_offset : NULL;
        float *db = grad ? dw + L->n_weights : NULL;
        /* No layer before the first parameterised one needs a gradient,
         * unless the caller asked for the input's. */
        int need_dinp = i > net->first_param || dx != NULL;
        float *dinp;
        if (i == 0)
            dinp = dx;
        else
            dinp = net->grad[pp];
        if (!need_dinp) {
            if (L->n_weights && grad) {
                if (L->kind == EB_LAYER_DENSE)
                    eb_kern_dense_backward(NULL, dw, db, dout, inp, w, n, (int)L->in_size,
                                           L->units);
                else
                    eb_kern_conv2d_backward(NULL, dw, db, NULL, dout, net->cols[i], w, n, L->in_h,
                                            L->in_w, L->in_c, L->units);
            }
            continue;
        }
        switch (L->kind) {
        case EB_LAYER_DENSE:
            eb_kern_dense_backward(dinp, dw, db, dout, inp, w, n, (int)L->in_size, L->units);
            break;
        case EB_LAYER_CONV2D:
            eb_kern_conv2d_backward(dinp, dw, db, net->dcols, dout, net->cols[i], w, n, L->in_h,
                                    L->in_w, L->in_c, L->units);
            break;
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_backward(dinp, dout, net->argmax[i], n, L->in_h, L->in_w, L->in_c);
            break;
        case EB_LAYER_RELU:
            eb_kern_relu_backward(dinp, dout, net->out[i], (size_t)n * L->out_size);
            break;
        case EB_LAYER_DROPOUT:
            if (net->drop_on[i])
                eb_kern_mul(dinp, dout, net->mask[i], (size_t)n * L->out_size);
            else
                memcpy(dinp, dout, (size_t)n * L->out_size * sizeof(float));
            break;
        case EB_LAYER_FLATTEN:
            memcpy(dinp, dout, (size_t)n * L->out_size * sizeof(float));
            break;
        }
        dout = dinp;
        pp ^= 1;
    }
}

double eb_softmax_xent(float *dlogits, const float *logits, const uint8_t *y, int n, int C,
                       float scale)
{
    double total = 0.0;
    for (int r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * C;
        float m = z[0];
        double s = 0.0, lse;
        for (int c = 1; c < C; c++)
            if (z[c] > m)
                m = z[c];
        for (int c = 0; c < C; c++)
            s += exp((double)z[c] - m);
        lse = m + log(s);
        total += lse - z[y[r]];
        if (dlogits) {
            float *d = dlogits + (size_t)r * C;
            for (int c = 0; c < C; c++)
                d[c] = (float)(exp((double)z[c] - lse)) * scale;
            d[y[r]] -= scale;
        }
    }
    return n ? total / n : 0.0;
}

void eb_softmax(float *probs, const float *logits, int n, int C)
{
    for (int r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * C;
        float *p = probs + (size_t)r * C;
        float m = z[0];
        double s = 0.0;
        for (int c = 1; c < C; c++)
            if (z[c] > m)
                m = z[c];
        for (int c = 0; c < C; c++)
            s += exp((double)z[c] - m);
        for (int c = 0; c < C; c++)
            p[c] = (float)(exp((double)z[c] - m) / s);
    }
}

/* OpenBLAS extensions, declared here so the code also builds against a
 * cblas.h that lacks them. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_parallel(void);

int eb_nn_set_threads(int threads)
{
    if (threads > 0)
        openblas_set_num_threads(threads);
    return openblas_get_num_threads();
}

const char *eb_nn_blas_info(void)
{
    static char info[256];
    static const char *const models[] = {"sequential", "pthreads", "openmp"};
    int par = openblas_get_parallel();
    snprintf(info, sizeof info, "OpenBLAS (%s; core %s; %s)", openblas_get_config(),
             openblas_get_corename(), par >= 0 && par <= 2 ? models[par] : "unknown threading");
    return info;
}

uint64_t eb_net__activation_pattern(const eb_net *net)
{
    const eb_arch *a = &net->arch;
    uint64_t h = 0x84222325cbf29ce4ULL;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        size_t len = (size_t)net->n * L->out_size;
        if (L->kind == EB_LAYER_RELU)
            for (size_t k = 0; k < len; k++)
                h = eb_rng_mix64(h ^ (net->out[i][k] > 0.0f ? k * 2 + 1 : k * 2));
        else if (L->kind == EB_LAYER_MAXPOOL)
            for (size_t k = 0; k < len; k++)
                h = eb_rng_mix64(h ^ ((uint64_t)(uint32_t)net->argmax[i][k] << 20) ^ k);
    }
    return h;
}
