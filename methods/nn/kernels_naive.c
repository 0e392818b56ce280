/* kernels_naive.c: reference kernels, the textbook loops with double
 * accumulators, kept beside the fast ones in kernels.c as the oracle they
 * are tested against. Never used on a hot path. */
#include <string.h>

#include "methods/nn/nn_kernels.h"

void eb_kern_sparse_gemv_naive(float *out, const float *x, const float *vals,
                               const uint32_t *idx, const uint64_t *rowptr, uint64_t base, int NI,
                               int NO)
{
    for (int o = 0; o < NO; o++) {
        double s = 0.0;
        for (uint64_t j = rowptr[o]; j < rowptr[o + 1]; j++)
            s += (double)vals[j] * x[idx[j] - (base + (uint64_t)o * (uint64_t)NI)];
        out[o] = (float)s;
    }
}

void eb_kern_dense_forward_naive(float *out, const float *inp, const float *w, const float *b,
                                 int n, int NI, int NO)
{
    for (int r = 0; r < n; r++)
        for (int o = 0; o < NO; o++) {
            double s = b[o];
            for (int i = 0; i < NI; i++)
                s += (double)inp[(size_t)r * NI + i] * w[(size_t)o * NI + i];
            out[(size_t)r * NO + o] = (float)s;
        }
}

void eb_kern_dense_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, int n, int NI, int NO)
{
    for (int o = 0; o < NO; o++) {
        double sb = 0.0;
        for (int r = 0; r < n; r++)
            sb += dout[(size_t)r * NO + o];
        db[o] = (float)sb;
        for (int i = 0; i < NI; i++) {
            double s = 0.0;
            for (int r = 0; r < n; r++)
                s += (double)dout[(size_t)r * NO + o] * inp[(size_t)r * NI + i];
            dw[(size_t)o * NI + i] = (float)s;
        }
    }
    if (!dinp)
        return;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < NI; i++) {
            double s = 0.0;
            for (int o = 0; o < NO; o++)
                s += (double)dout[(size_t)r * NO + o] * w[(size_t)o * NI + i];
            dinp[(size_t)r * NI + i] = (float)s;
        }
}


void eb_kern_conv2d_forward_naive(float *out, const float *inp, const float *w, const float *b,
                                  int n, int H, int W, int C, int NO)
{
    const int OH = H - 2, OW = W - 2;
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++)
                for (int o = 0; o < NO; o++) {
                    double s = b[o];
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++)
                            for (int c = 0; c < C; c++)
                                s += (double)inp[(((size_t)img * H + oy + ky) * W + ox + kx) * C +
                                                 c] *
                                     w[(((size_t)o * 3 + ky) * 3 + kx) * C + c];
                    out[(((size_t)img * OH + oy) * OW + ox) * NO + o] = (float)s;
                }
}

void eb_kern_conv2d_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                                   const float *inp, const float *w, int n, int H, int W, int C,
                                   int NO)
{
    const int OH = H - 2, OW = W - 2;
    for (int o = 0; o < NO; o++) {
        double sb = 0.0;
        for (int img = 0; img < n; img++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++)
                    sb += dout[(((size_t)img * OH + oy) * OW + ox) * NO + o];
        db[o] = (float)sb;
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++)
                for (int c = 0; c < C; c++) {
                    double s = 0.0;
                    for (int img = 0; img < n; img++)
                        for (int oy = 0; oy < OH; oy++)
                            for (int ox = 0; ox < OW; ox++)
                                s += (double)dout[(((size_t)img * OH + oy) * OW + ox) * NO + o] *
                                     inp[(((size_t)img * H + oy + ky) * W + ox + kx) * C + c];
                    dw[(((size_t)o * 3 + ky) * 3 + kx) * C + c] = (float)s;
                }
    }
    if (!dinp)
        return;
    for (int img = 0; img < n; img++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    double s = 0.0;
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int oy = y - ky, ox = x - kx;
                            if (oy < 0 || ox < 0 || oy >= OH || ox >= OW)
                                continue;
                            for (int o = 0; o < NO; o++)
                                s += (double)dout[(((size_t)img * OH + oy) * OW + ox) * NO + o] *
                                     w[(((size_t)o * 3 + ky) * 3 + kx) * C + c];
                        }
                    dinp[(((size_t)img * H + y) * W + x) * C + c] = (float)s;
                }
}

void eb_kern_maxpool_forward_naive(float *out, const float *inp, int n, int H, int W, int C)
{
    const int PH = H / 2, PW = W / 2;
    for (int img = 0; img < n; img++)
        for (int py = 0; py < PH; py++)
            for (int px = 0; px < PW; px++)
                for (int c = 0; c < C; c++) {
                    float m = inp[(((size_t)img * H + 2 * py) * W + 2 * px) * C + c];
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            float v = inp[(((size_t)img * H + 2 * py + dy) * W + 2 * px + dx) * C +
                                          c];
                            if (v > m)
                                m = v;
                        }
                    out[(((size_t)img * PH + py) * PW + px) * C + c] = m;
                }
}

void eb_kern_maxpool_backward_naive(float *dinp, const float *dout, const float *inp, int n,
                                    int H, int W, int C)
{
    const int PH = H / 2, PW = W / 2;
    memset(dinp, 0, (size_t)n * H * W * C * sizeof(float));
    for (int img = 0; img < n; img++)
        for (int py = 0; py < PH; py++)
            for (int px = 0; px < PW; px++)
                for (int c = 0; c < C; c++) {
                    /* the gradient goes to the first maximum in window order */
                    int by = 0, bx = 0;
                    float m = inp[(((size_t)img * H + 2 * py) * W + 2 * px) * C + c];
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            float v = inp[(((size_t)img * H + 2 * py + dy) * W + 2 * px + dx) * C +
                                          c];
                            if (v > m) {
                                m = v;
                                by = dy;
                                bx = dx;
                            }
                        }
                    dinp[(((size_t)img * H + 2 * py + by) * W + 2 * px + bx) * C + c] +=
                        dout[(((size_t)img * PH + py) * PW + px) * C + c];
                }
}
