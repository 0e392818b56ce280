/* kernels.c: the fast layer kernels: dense and conv2d through OpenBLAS
 * sgemm (convolution lowered with im2col over the whole batch, so each
 * layer is one large matrix product), max-pool with recorded argmax, ReLU
 * and dropout. Their references are in kernels_naive.c. */
#include <string.h>

#include <cblas.h>

#include "methods/nn/eb_rng.h"
#include "methods/nn/nn_kernels.h"

/* The element-wise loops run in AVX-512 or AVX2 where the CPU has them,
 * chosen once at load time (GCC function multiversioning), so one portable
 * binary uses the widest vectors. Each clone computes the same sums in the
 * same order; the CPU, not the run, picks the clone. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define EB_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EB_VECTOR_CLONES
#endif

static void fill_rows(float *out, const float *b, size_t rows, int NO)
{
    for (size_t r = 0; r < rows; r++)
        memcpy(out + r * (size_t)NO, b, (size_t)NO * sizeof(float));
}

/* db[o] = sum over rows of dout[r][o] */
EB_VECTOR_CLONES
static void column_sums(float *db, const float *dout, size_t rows, int NO)
{
    memset(db, 0, (size_t)NO * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        const float *d = dout + r * (size_t)NO;
        for (int o = 0; o < NO; o++)
            db[o] += d[o];
    }
}

void eb_kern_dense_forward(float *out, const float *inp, const float *w, const float *b, int n,
                           int NI, int NO)
{
    fill_rows(out, b, (size_t)n, NO);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, NO, NI, 1.0f, inp, NI, w, NI, 1.0f, out,
                NO);
}

/* Sixteen partial sums per row, whatever the vector width: the clones
 * (AVX-512: one register per row; AVX2: two; baseline: four) add the
 * same products in the same order, so every CPU gets the same bits.
 * Row after row, one sequential stream: reading four rows side by side
 * (four streams 4*NI bytes apart; the same sums) ran at half the speed
 * when the weights come from memory (mlp S = 100, 2 threads: 4.9 against
 * 2.5 ms on this project's VMs; S = 30: 0.95 against 0.55 ms), for 3%
 * more time when they sit in cache (S = 10). */
#define GEMV_LANES 16

EB_VECTOR_CLONES
void eb_kern_dense_gemv(float *restrict out, const float *restrict x, const float *restrict w,
                        const float *restrict b, int NI, int NO)
{
    const int NV = NI - NI % GEMV_LANES;
    for (int o = 0; o < NO; o++) {
        const float *w0 = w + (size_t)o * NI;
        float a0[GEMV_LANES] = {0}, s0 = 0.0f;
        for (int i = 0; i < NV; i += GEMV_LANES)
            for (int l = 0; l < GEMV_LANES; l++)
                a0[l] += w0[i + l] * x[i + l];
        for (int l = 0; l < GEMV_LANES; l++)
            s0 += a0[l];
        for (int i = NV; i < NI; i++)
            s0 += w0[i] * x[i];
        out[o] = s0 + b[o];
    }
}

/* Gathers are the cost here, not arithmetic: four partial sums break the
 * dependency chain; the order is fixed, so every clone gives the same
 * bits. */
EB_VECTOR_CLONES
void eb_kern_sparse_gemv(float *restrict out, const float *restrict x, const float *restrict vals,
                         const uint32_t *restrict idx, const uint64_t *restrict rowptr,
                         uint64_t base, int NI, int NO)
{
    for (int o = 0; o < NO; o++) {
        const uint64_t lo = rowptr[o], hi = rowptr[o + 1];
        const uint32_t rb = (uint32_t)(base + (uint64_t)o * (uint64_t)NI); /* idx < 2^32 */
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        uint64_t j = lo;
        for (; j + 4 <= hi; j += 4) {
            s0 += vals[j] * x[idx[j] - rb];
            s1 += vals[j + 1] * x[idx[j + 1] - rb];
            s2 += vals[j + 2] * x[idx[j + 2] - rb];
            s3 += vals[j + 3] * x[idx[j + 3] - rb];
        }
        for (; j < hi; j++)
            s0 += vals[j] * x[idx[j] - rb];
        out[o] = (s0 + s1) + (s2 + s3);
    }
}

void eb_kern_dense_backward(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, int n, int NI, int NO)
{
    if (dw) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, NO, NI, n, 1.0f, dout, NO, inp, NI,
                    0.0f, dw, NI);
        column_sums(db, dout, (size_t)n, NO);
    }
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, NI, NO, 1.0f, dout, NO, w, NI, 0.0f,
                    dinp, NI);
}

/* cols row (img, oy, ox) = the 3x3xC patch at (oy, ox), ordered (ky, kx, c):
 * in NHWC each ky contributes 3*C contiguous floats. */
static void im2col(float *cols, const float *inp, int n, int H, int W, int C)
{
    const int OH = H - 2, OW = W - 2;
    const size_t seg = 3 * (size_t)C;
    float *dst = cols;
    for (int img = 0; img < n; img++) {
        const float *base = inp + (size_t)img * H * W * C;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                for (int ky = 0; ky < 3; ky++) {
                    memcpy(dst, base + ((size_t)(oy + ky) * W + ox) * C, seg * sizeof(float));
                    dst += seg;
                }
            }
    }
}

EB_VECTOR_CLONES
static void col2im(float *dinp, const float *dcols, int n, int H, int W, int C)
{
    const int OH = H - 2, OW = W - 2;
    const size_t seg = 3 * (size_t)C;
    const float *src = dcols;
    memset(dinp, 0, (size_t)n * H * W * C * sizeof(float));
    for (int img = 0; img < n; img++) {
        float *base = dinp + (size_t)img * H * W * C;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                for (int ky = 0; ky < 3; ky++) {
                    float *d = base + ((size_t)(oy + ky) * W + ox) * C;
                    for (size_t k = 0; k < seg; k++)
                        d[k] += src[k];
                    src += seg;
                }
            }
    }
}

void eb_kern_conv2d_forward(float *out, float *cols, const float *inp, const float *w,
                            const float *b, int n, int H, int W, int C, int NO)
{
    const int rows = n * (H - 2) * (W - 2);
    const int kdim = 9 * C;
    im2col(cols, inp, n, H, W, C);
    fill_rows(out, b, (size_t)rows, NO);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, NO, kdim, 1.0f, cols, kdim, w, kdim,
                1.0f, out, NO);
}

/* dw (NO, kdim) = dout^T (NO, rows) . cols (rows, kdim) for a small weight
 * (the first convolution: kdim = 9, NO = 32) over many rows. sgemm handles
 * this shape (tiny output, huge inner dimension) poorly and cannot split
 * it across threads; a row loop over a (kdim, NO) accumulator vectorises
 * over NO. Float partial sums per block of rows, double across blocks. */
#define SMALL_DW_MAX 512
EB_VECTOR_CLONES
static void small_weight_grad(float *dw, const float *dout, const float *cols, size_t rows,
                              int NO, int kdim)
{
    double total[SMALL_DW_MAX];
    float acc[SMALL_DW_MAX];
    const size_t len = (size_t)kdim * (size_t)NO;
    memset(total, 0, len * sizeof *total);
    for (size_t r0 = 0; r0 < rows; r0 += 256) {
        const size_t r1 = r0 + 256 < rows ? r0 + 256 : rows;
        memset(acc, 0, len * sizeof *acc);
        for (size_t r = r0; r < r1; r++) {
            const float *d = dout + r * (size_t)NO;
            const float *c = cols + r * (size_t)kdim;
            for (int k = 0; k < kdim; k++) {
                const float ck = c[k];
                float *a = acc + (size_t)k * NO;
                for (int o = 0; o < NO; o++)
                    a[o] += ck * d[o];
            }
        }
        for (size_t i = 0; i < len; i++)
            total[i] += acc[i];
    }
    for (int o = 0; o < NO; o++)
        for (int k = 0; k < kdim; k++)
            dw[(size_t)o * kdim + k] = (float)total[(size_t)k * NO + o];
}

void eb_kern_conv2d_backward(float *dinp, float *dw, float *db, float *dcols, const float *dout,
                             const float *cols, const float *w, int n, int H, int W, int C,
                             int NO)
{
    const int rows = n * (H - 2) * (W - 2);
    const int kdim = 9 * C;
    if (dw && (size_t)kdim * (size_t)NO <= SMALL_DW_MAX)
        small_weight_grad(dw, dout, cols, (size_t)rows, NO, kdim);
    else if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, NO, kdim, rows, 1.0f, dout, NO, cols,
                    kdim, 0.0f, dw, kdim);
    if (dw)
        column_sums(db, dout, (size_t)rows, NO);
    if (dinp) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, kdim, NO, 1.0f, dout, NO, w,
                    kdim, 0.0f, dcols, kdim);
        col2im(dinp, dcols, n, H, W, C);
    }
}

EB_VECTOR_CLONES
void eb_kern_maxpool_forward(float *out, int32_t *argmax, const float *inp, int n, int H, int W,
                             int C)
{
    const int PH = H / 2, PW = W / 2;
    for (int img = 0; img < n; img++) {
        const size_t ibase = (size_t)img * H * W * C;
        for (int py = 0; py < PH; py++)
            for (int px = 0; px < PW; px++) {
                const size_t i00 = ibase + ((size_t)(2 * py) * W + 2 * px) * C;
                const size_t i01 = i00 + (size_t)C;
                const size_t i10 = i00 + (size_t)W * C;
                const size_t i11 = i10 + (size_t)C;
                float *o = out + (((size_t)img * PH + py) * PW + px) * C;
                int32_t *a = argmax + (((size_t)img * PH + py) * PW + px) * C;
                for (int c = 0; c < C; c++) {
                    size_t best = i00 + c;
                    float v = inp[best];
                    if (inp[i01 + c] > v) { best = i01 + c; v = inp[best]; }
                    if (inp[i10 + c] > v) { best = i10 + c; v = inp[best]; }
                    if (inp[i11 + c] > v) { best = i11 + c; v = inp[best]; }
                    o[c] = v;
                    a[c] = (int32_t)(best - ibase);
                }
            }
    }
}

void eb_kern_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax, int n,
                              int H, int W, int C)
{
    const size_t per_in = (size_t)H * W * C;
    const size_t per_out = (size_t)(H / 2) * (W / 2) * C;
    memset(dinp, 0, (size_t)n * per_in * sizeof(float));
    for (int img = 0; img < n; img++) {
        float *d = dinp + (size_t)img * per_in;
        const float *g = dout + (size_t)img * per_out;
        const int32_t *a = argmax + (size_t)img * per_out;
        for (size_t k = 0; k < per_out; k++)
            d[a[k]] += g[k];
    }
}

EB_VECTOR_CLONES
void eb_kern_relu_forward(float *out, const float *inp, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

EB_VECTOR_CLONES
void eb_kern_relu_backward(float *dinp, const float *dout, const float *out, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

void eb_kern_dropout_mask(float *mask, int n, size_t size, float rate, uint64_t seed,
                          uint64_t pass, uint64_t first_example, int layer)
{
    const float keep_scale = 1.0f / (1.0f - rate);
    /* Compare 32-bit uniforms against rate * 2^32. */
    const uint64_t threshold = (uint64_t)((double)rate * 4294967296.0);
    for (int j = 0; j < n; j++) {
        eb_rng r;
        uint64_t key = eb_rng_mix64(pass ^ 0x8cb92ba72f3d8dd7ULL) ^
                       eb_rng_mix64(((first_example + (uint64_t)j) << 6) | (uint64_t)layer);
        float *m = mask + (size_t)j * size;
        size_t i = 0;
        eb_rng_seed(&r, seed, key);
        while (i < size) {
            uint64_t bits = eb_rng_next(&r);
            m[i] = (bits & 0xffffffffULL) < threshold ? 0.0f : keep_scale;
            if (++i < size)
                m[i] = (bits >> 32) < threshold ? 0.0f : keep_scale;
            i++;
        }
    }
}

EB_VECTOR_CLONES
void eb_kern_mul(float *out, const float *inp, const float *mask, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = inp[i] * mask[i];
}
