/* direct.c: register-blocked inference kernels over weights packed as
 * (K, NO) (K inputs per output, NO outputs, 16 to a vector): on CPUs with
 * AVX-512 and NO a multiple of 16, a block of rows times 16..64 outputs
 * stays in registers while the K products stream past, one broadcast of
 * the input and one load of packed weights per product.
 *
 * - The inference convolution (3x3, stride 1, no padding) without im2col:
 *   the input is read in place and the weights repacked once per call.
 *   Elsewhere, or where NO is not a multiple of 16, it is
 *   eb_kern_conv2d_forward (im2col and sgemm). While it computes, it can
 *   prefetch a second buffer (the next layer's weights) into L2, a few
 *   cache lines per step of the inner loop, so that buffer's trip from
 *   memory overlaps the arithmetic instead of following it. The prefetch
 *   never changes a result.
 * - The dense product over weights packed once by the caller
 *   (eb_kern_pack_weights), for layers run many times with one set of
 *   weights (lrt's later layers): no per-call packing as sgemm does.
 *
 * Each output's sum runs in a fixed order (bias, then the inputs in
 * order, fused multiply-adds), whatever block it falls in, so a row's
 * outputs are the same bytes alone or in a batch, in any thread. The
 * references are eb_kern_conv2d_forward_naive and eb_kern_dense_forward_naive. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/eb_cpu.h"
#include "methods/nn/nn_kernels.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define EB_CONV_HAVE_AVX512 1
#include <immintrin.h>
#else
#define EB_CONV_HAVE_AVX512 0
#endif

#define LINE 64 /* bytes per cache line prefetched */

static size_t im2col_floats(int n, int H, int W, int C)
{
    return (size_t)n * (size_t)(H - 2) * (size_t)(W - 2) * 9u * (size_t)C;
}

size_t eb_kern_conv2d_infer_scratch(int n, int H, int W, int C, int NO)
{
    const size_t packed = 9u * (size_t)C * (size_t)NO;
    const size_t cols = im2col_floats(n, H, W, C);
    return packed > cols ? packed : cols;
}

#if EB_CONV_HAVE_AVX512

/* The prefetch cursor: per lines per inner step, until end. */
typedef struct pf_cursor {
    const char *at, *end;
    int per;
} pf_cursor;

/* One block: R output rows (their inputs start at px[r]) times NV
 * vectors of 16 outputs from o0. rows <= R of them are real; the others
 * repeat the last real one and are not stored. The K = nseg * seg inputs
 * come in nseg runs of seg contiguous floats, run s at px[r] + s * stride
 * (a convolution: the kernel's 3 rows, each 3C floats, W*C apart; a
 * dense layer: one run). wt is (K, NO). */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
block(float *out, const float *const *px, int rows, const float *wt, const float *b, int o0,
      int nseg, int seg, size_t stride, int NO, pf_cursor *pf, const int R, const int NV)
{
    __m512 acc[24];
    rows = rows < R ? rows : R;
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            acc[r * NV + v] = _mm512_loadu_ps(b + o0 + 16 * v);
    for (int ky = 0; ky < nseg; ky++) {
        const float *wk = wt + (size_t)ky * (size_t)seg * (size_t)NO + o0;
        const size_t xo = (size_t)ky * stride;
        for (int j = 0; j < seg; j++) {
            __m512 wv[4];
            for (int v = 0; v < NV; v++)
                wv[v] = _mm512_loadu_ps(wk + (size_t)j * NO + 16 * v);
            for (int r = 0; r < R; r++) {
                const __m512 xr = _mm512_set1_ps(px[r][xo + (size_t)j]);
                for (int v = 0; v < NV; v++)
                    acc[r * NV + v] = _mm512_fmadd_ps(xr, wv[v], acc[r * NV + v]);
            }
            for (int q = 0; q < pf->per && pf->at < pf->end; q++, pf->at += LINE)
                _mm_prefetch(pf->at, _MM_HINT_T1);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(out + (size_t)r * NO + o0 + 16 * v, acc[r * NV + v]);
}

/* Pixels p0.. (at most R) of the batch's n*OH*OW: their windows' starts. */
static int windows(const float **px, const float *inp, size_t p0, size_t total, int R, int OH,
                   int OW, int H, int W, int C)
{
    const size_t per_img = (size_t)OH * (size_t)OW;
    int rows = 0;
    for (int r = 0; r < R; r++) {
        const size_t p = p0 + (size_t)r < total ? p0 + (size_t)r : total - 1;
        const size_t img = p / per_img, q = p % per_img;
        const size_t oy = q / (size_t)OW, ox = q % (size_t)OW;
        px[r] = inp + ((img * (size_t)H + oy) * (size_t)W + ox) * (size_t)C;
        rows += p0 + (size_t)r < total;
    }
    return rows;
}

__attribute__((target("avx512f,fma"))) static void
conv_direct(float *out, float *wt, const float *inp, const float *w, const float *b, int n, int H,
            int W, int C, int NO, const void *pf_buf, size_t pf_bytes)
{
    const int OH = H - 2, OW = W - 2, K = 9 * C;
    const size_t total = (size_t)n * (size_t)OH * (size_t)OW;
    size_t steps = 0;
    pf_cursor pf = {pf_buf, pf_buf ? (const char *)pf_buf + pf_bytes : NULL, 0};

    eb_kern_pack_weights(wt, w, K, NO);

    /* blocks: 64 channels by 6 pixels while 64 remain, then 32 by 12, 16 by 12 */
    for (int left = NO; left > 0;) {
        const int nv = left >= 64 ? 4 : left >= 32 ? 2 : 1;
        const int R = nv == 4 ? 6 : 12;
        steps += (total + (size_t)R - 1) / (size_t)R * (size_t)K;
        left -= 16 * nv;
    }
    if (pf_bytes && steps)
        pf.per = (int)((pf_bytes / LINE + steps) / steps);

    for (int o0 = 0; o0 < NO;) {
        const int left = NO - o0;
        const int nv = left >= 64 ? 4 : left >= 32 ? 2 : 1;
        const int R = nv == 4 ? 6 : 12;
        const float *px[12];
        for (size_t p0 = 0; p0 < total; p0 += (size_t)R) {
            const int rows = windows(px, inp, p0, total, R, OH, OW, H, W, C);
            float *o = out + p0 * (size_t)NO;
            const size_t WC = (size_t)W * (size_t)C;
            if (nv == 4)
                block(o, px, rows, wt, b, o0, 3, 3 * C, WC, NO, &pf, 6, 4);
            else if (nv == 2)
                block(o, px, rows, wt, b, o0, 3, 3 * C, WC, NO, &pf, 12, 2);
            else
                block(o, px, rows, wt, b, o0, 3, 3 * C, WC, NO, &pf, 12, 1);
        }
        o0 += 16 * nv;
    }
}

/* out (n, NO) = x (n, NI) . wt (NI, NO) + b: blocks of 64 outputs by 6
 * rows (5 where that wastes fewer rows), then 32 and 16 by 12 */
__attribute__((target("avx512f,fma"))) static void
dense_direct(float *out, const float *x, const float *wt, const float *b, int n, int NI, int NO)
{
    pf_cursor none = {NULL, NULL, 0};
    const int R4 = (n + 5) / 6 * 6 <= (n + 4) / 5 * 5 ? 6 : 5;
    for (int o0 = 0; o0 < NO;) {
        const int left = NO - o0;
        const int nv = left >= 64 ? 4 : left >= 32 ? 2 : 1;
        const int R = nv == 4 ? R4 : 12;
        const float *px[12];
        for (int r0 = 0; r0 < n; r0 += R) {
            int rows = 0;
            for (int r = 0; r < R; r++) {
                const int row = r0 + r < n ? r0 + r : n - 1;
                px[r] = x + (size_t)row * (size_t)NI;
                rows += r0 + r < n;
            }
            float *o = out + (size_t)r0 * (size_t)NO;
            if (nv == 4 && R == 6)
                block(o, px, rows, wt, b, o0, 1, NI, 0, NO, &none, 6, 4);
            else if (nv == 4)
                block(o, px, rows, wt, b, o0, 1, NI, 0, NO, &none, 5, 4);
            else if (nv == 2)
                block(o, px, rows, wt, b, o0, 1, NI, 0, NO, &none, 12, 2);
            else
                block(o, px, rows, wt, b, o0, 1, NI, 0, NO, &none, 12, 1);
        }
        o0 += 16 * nv;
    }
}

#endif

int eb_kern_direct_available(int NO)
{
#if EB_CONV_HAVE_AVX512
    return NO > 0 && NO % 16 == 0 && eb_cpu_has(EB_CPU_AVX512);
#else
    (void)NO;
    return 0;
#endif
}

void eb_kern_pack_weights(float *wt, const float *w, int K, int NO)
{
    /* (NO, K) -> (K, NO), 16 outputs' rows at a time so each written
     * line is filled by consecutive stores */
    for (int o0 = 0; o0 < NO; o0 += 16) {
        const int vl = NO - o0 < 16 ? NO - o0 : 16;
        for (int k = 0; k < K; k++)
            for (int v = 0; v < vl; v++)
                wt[(size_t)k * NO + o0 + v] = w[(size_t)(o0 + v) * K + k];
    }
}

void eb_kern_dense_packed(float *out, const float *x, const float *wt, const float *b, int n,
                          int NI, int NO)
{
#if EB_CONV_HAVE_AVX512
    if (eb_kern_direct_available(NO)) {
        dense_direct(out, x, wt, b, n, NI, NO);
        return;
    }
#endif
    /* the same sums, in the same order, one fused multiply-add at a time */
    for (int r = 0; r < n; r++)
        for (int o = 0; o < NO; o++) {
            float s = b[o];
            for (int k = 0; k < NI; k++)
                s = fmaf(x[(size_t)r * NI + k], wt[(size_t)k * NO + o], s);
            out[(size_t)r * NO + o] = s;
        }
}

void eb_kern_conv2d_infer(float *out, float *scratch, const float *inp, const float *w,
                          const float *b, int n, int H, int W, int C, int NO, const void *pf,
                          size_t pf_bytes)
{
#if EB_CONV_HAVE_AVX512
    if (eb_kern_direct_available(NO)) {
        conv_direct(out, scratch, inp, w, b, n, H, W, C, NO, pf, pf_bytes);
        return;
    }
#endif
    (void)pf;
    (void)pf_bytes;
    eb_kern_conv2d_forward(out, scratch, inp, w, b, n, H, W, C, NO);
}
