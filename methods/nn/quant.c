/* quant.c: the fast reduced-precision kernels (f16 conversion, int8
 * quantization, int8 and f16 GEMM, conv2d lowered onto them) and eb_qnet,
 * the forward pass over f32, f16 or int8 weights. Every kernel has its
 * naive reference in quant_naive.c; the conventions are in nn_quant.h. */
#include <float.h>
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "common/eb_alloc.h"
#include "common/eb_cpu.h"
#include "methods/nn/nn_kernels.h"
#include "methods/nn/nn_quant.h"
#include "methods/nn/quant_internal.h"

/* As in kernels.c: the loops that matter are compiled for AVX-512, AVX2
 * and baseline x86-64 and the CPU picks the clone once at load time. The
 * int8 loops need AVX-512BW for byte and word lanes in 512-bit vectors,
 * which target_clones names through the x86-64-v4 level (F, BW, DQ, VL).
 * Every clone computes the same integer sums and the same float
 * expressions (ISO C mode: no FMA contraction), so results do not depend
 * on the clone. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define EB_Q_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define EB_Q_I8_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define EB_Q_CLONES
#define EB_Q_I8_CLONES
#endif

/* The f16 GEMV's F16C path (vcvtph2ps), chosen at run time; GCC on
 * x86-64 only, like the clones. On aarch64 (EB_NEON, CMakeLists.txt) the
 * portable loops are what run, compiled with -march=EB_NEON_ARCH for NEON. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define EB_Q_HAVE_F16C 1
#include <immintrin.h>
#else
#define EB_Q_HAVE_F16C 0
#endif

/* ---- f16 ------------------------------------------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Branch-free (selects only) so the bulk loop vectorises. Three
 * candidates, one chosen by the magnitude a:
 *   a >= 2^16 (or inf, NaN): inf, or a quiet NaN with the payload's top
 *     bits; 65520 <= a < 65536 reaches inf through the normal path's
 *     carry (65520 is the tie above 65504 and 65504 is odd: to even).
 *   a < 2^-14: f16 subnormal. Adding 0.5f puts the value in [0.5, 1),
 *     whose ulp is 2^-24, the f16 subnormal step: the float addition
 *     itself rounds to nearest even, and the low bits are the result (a
 *     carry to 0x400 is the smallest normal, as it should be).
 *   otherwise: rebias the exponent and round the 13 dropped bits to
 *     nearest even by adding 0xfff plus the kept lowest bit. */
static inline uint16_t f2h(float f)
{
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t a = x & 0x7fffffffu;
    const uint32_t big = a > 0x7f800000u ? 0x7e00u | ((a >> 13) & 0x3ffu) : 0x7c00u;
    const uint32_t sub = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000u;
    const uint32_t nrm = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
    const uint32_t r = a >= 0x47800000u ? big : a < 0x38800000u ? sub : nrm;
    return (uint16_t)(r | sign);
}

/* Exponent 31 (inf, NaN) and 0 (zero, subnormal) apart from the normal
 * rebias; a subnormal m * 2^-24 is (2^-14 + m * 2^-24) - 2^-14, both
 * terms exact floats. */
static inline float h2f(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    const uint32_t e = em & 0x0f800000u;
    const uint32_t nrm = em + 0x38000000u;
    const uint32_t inf = em + 0x70000000u;
    const uint32_t sub = f32_bits(bits_f32(em + 0x38800000u) - bits_f32(0x38800000u));
    const uint32_t r = e == 0x0f800000u ? inf : e == 0 ? sub : nrm;
    return bits_f32(r | sign);
}

uint16_t eb_f32_to_f16(float f)
{
    return f2h(f);
}

float eb_f16_to_f32(uint16_t h)
{
    return h2f(h);
}

EB_Q_CLONES
void eb_f32_to_f16_n(uint16_t *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f2h(src[i]);
}

EB_Q_CLONES
void eb_f16_to_f32_n(float *restrict dst, const uint16_t *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = h2f(src[i]);
}

/* ---- int8 quantization ----------------------------------------------- */

/* Round to nearest even for |t| < 2^22: adding 1.5 * 2^23 leaves no
 * fraction bits, so the addition rounds (to even, the default mode) and
 * the subtraction is exact. Vectorises without SSE4.1's roundps. */
static inline float rne_small(float t)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    return (t + magic) - magic;
}

/* max |v| over a run, and whether a non-finite value was seen */
static inline float run_absmax(const float *v, size_t len, int *bad)
{
    float m = 0.0f;
    int nonfinite = 0;
    for (size_t k = 0; k < len; k++) {
        const float a = fabsf(v[k]);
        nonfinite |= !(a <= FLT_MAX);
        m = a > m ? a : m;
    }
    *bad = nonfinite;
    return m;
}

/* One run quantized per the convention of nn_quant.h into int8 or int16
 * lanes (the same values). */
#define DEFINE_QUANT_RUN(name, T)                                             \
    static inline float name(T *restrict q, const float *restrict v, size_t len) \
    {                                                                         \
        int bad;                                                              \
        const float m = run_absmax(v, len, &bad);                             \
        if (bad || m == 0.0f) {                                               \
            memset(q, 0, len * sizeof(T));                                    \
            return bad ? NAN : 0.0f;                                          \
        }                                                                     \
        const float inv = 127.0f / m;                                         \
        for (size_t k = 0; k < len; k++) {                                    \
            float t = rne_small(v[k] * inv);                                  \
            t = t > 127.0f ? 127.0f : t;                                      \
            t = t < -127.0f ? -127.0f : t;                                    \
            q[k] = (T)(int)t;                                                 \
        }                                                                     \
        return m / 127.0f;                                                    \
    }
DEFINE_QUANT_RUN(quant_run, int8_t)
DEFINE_QUANT_RUN(quant_run16, int16_t)
#undef DEFINE_QUANT_RUN

EB_Q_CLONES
float eb_quant_int8_run(int8_t *restrict q, const float *restrict v, size_t len)
{
    return quant_run(q, v, len);
}

EB_Q_CLONES
float eb_quant_int8_run_i16(int16_t *restrict q, const float *restrict v, size_t len)
{
    return quant_run16(q, v, len);
}

/* Static scale (nn_quant.h): clamp, then round (the same integer as
 * rounding, then clamping, since the bounds are integers and rounding is
 * monotone), so rne_small only sees |t| <= 127. NaN products (v NaN, or
 * 0 * inf for a subnormal s) are selected to 0 before the conversion;
 * a non-finite v marks the row bad. Selects only, so it vectorises. */
EB_Q_CLONES
float eb_quant_int8_static_i16(int16_t *restrict q, const float *restrict v, size_t len, float s)
{
    const float inv = 1.0f / s;
    int nonfinite = 0;
    for (size_t k = 0; k < len; k++) {
        float t = v[k] * inv;
        nonfinite |= !(fabsf(v[k]) <= FLT_MAX);
        t = t > 127.0f ? 127.0f : t;
        t = t < -127.0f ? -127.0f : t;
        t = t == t ? t : 0.0f;
        q[k] = (int16_t)(int)rne_small(t);
    }
    if (nonfinite) {
        memset(q, 0, len * sizeof *q);
        return NAN;
    }
    return s;
}

void eb_quant_int8_groups(int8_t *q, float *scales, const float *v, const uint64_t *groups,
                          size_t n_groups)
{
    for (size_t g = 0; g < n_groups; g++)
        scales[g] = eb_quant_int8_run(q + groups[g], v + groups[g],
                                      (size_t)(groups[g + 1] - groups[g]));
}

void eb_dequant_int8_groups(float *v, const int8_t *q, const float *scales,
                            const uint64_t *groups, size_t n_groups)
{
    for (size_t g = 0; g < n_groups; g++)
        for (uint64_t k = groups[g]; k < groups[g + 1]; k++)
            v[k] = (float)q[k] * scales[g];
}

eb_status eb_quant_groups(const eb_arch *arch, uint64_t **groups, size_t *n_groups,
                          eb_error *err)
{
    size_t count = 0, g = 0;
    uint64_t *out;

    *groups = NULL;
    *n_groups = 0;
    for (int i = 0; i < arch->n_layers; i++)
        if (arch->layers[i].n_weights)
            count += (size_t)arch->layers[i].units + 1;
    out = eb_malloc((count + 1) * sizeof *out);
    if (!out)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory building %zu int8 groups", count);
    for (int i = 0; i < arch->n_layers; i++) {
        const eb_layer *L = &arch->layers[i];
        size_t per_row;
        if (!L->n_weights)
            continue;
        per_row = L->n_weights / (size_t)L->units;
        for (int o = 0; o < L->units; o++)
            out[g++] = (uint64_t)(L->param_offset + (size_t)o * per_row);
        out[g++] = (uint64_t)(L->param_offset + L->n_weights); /* the biases */
    }
    out[g] = (uint64_t)arch->n_params;
    *groups = out;
    *n_groups = count;
    return EB_OK;
}

/* ---- int8 GEMM --------------------------------------------------------- */

/* The micro-kernel: two rows of x against four rows of W, eight int32
 * sums in one pass over k. x arrives as int16 lanes, W as int8 widened to
 * int16 (pmovsxbw); GCC recognises each sum of int16 x int16 products as
 * a dot product and emits pmaddwd (pairs multiplied and added into int32
 * lanes). Products of values in [-127, 127] cannot overflow. */
static inline void tile_2x4(int32_t s[8], const int16_t *restrict x0, const int16_t *restrict x1,
                            const int8_t *restrict w0, int NI)
{
    const int8_t *restrict w1 = w0 + NI, *restrict w2 = w1 + NI, *restrict w3 = w2 + NI;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    for (int k = 0; k < NI; k++) {
        const int u = x0[k], v = x1[k];
        const int p = w0[k], q = w1[k], r = w2[k], t = w3[k];
        a0 += u * p; a1 += u * q; a2 += u * r; a3 += u * t;
        b0 += v * p; b1 += v * q; b2 += v * r; b3 += v * t;
    }
    s[0] = a0; s[1] = a1; s[2] = a2; s[3] = a3;
    s[4] = b0; s[5] = b1; s[6] = b2; s[7] = b3;
}

static inline void tile_1x4(int32_t s[4], const int16_t *restrict x0, const int8_t *restrict w0,
                            int NI)
{
    const int8_t *restrict w1 = w0 + NI, *restrict w2 = w1 + NI, *restrict w3 = w2 + NI;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int k = 0; k < NI; k++) {
        const int u = x0[k];
        a0 += u * w0[k]; a1 += u * w1[k]; a2 += u * w2[k]; a3 += u * w3[k];
    }
    s[0] = a0; s[1] = a1; s[2] = a2; s[3] = a3;
}

static inline int32_t dot_1x1(const int16_t *restrict x0, const int8_t *restrict w0, int NI)
{
    int32_t a = 0;
    for (int k = 0; k < NI; k++)
        a += x0[k] * w0[k];
    return a;
}

/* The blocked loop over (rows of x, four rows of W), shared by the
 * integer-output kernel (acc != NULL) and the fused dense layer (out):
 * out[r][o] = (float)acc * (sx[r] * sw[o]) + b[o]. Output rows of W in
 * blocks of OB so a block (OB x NI bytes) stays in L1/L2 while every
 * row of x passes over it. */
#define I8_OBLOCK 64
EB_Q_I8_CLONES
static void i8_gemm_core(int32_t *restrict acc, float *restrict out, const int16_t *restrict qx,
                         const float *restrict sx, const int8_t *restrict qw,
                         const float *restrict sw, const float *restrict b, int n, int NI, int NO)
{
    int32_t s[8];
    for (int o0 = 0; o0 < NO; o0 += I8_OBLOCK) {
        const int o1 = o0 + I8_OBLOCK < NO ? o0 + I8_OBLOCK : NO;
        int r = 0;
        for (; r + 2 <= n; r += 2) {
            const int16_t *x0 = qx + (size_t)r * NI, *x1 = x0 + NI;
            int o = o0;
            for (; o + 4 <= o1; o += 4) {
                tile_2x4(s, x0, x1, qw + (size_t)o * NI, NI);
                for (int j = 0; j < 4; j++) {
                    if (acc) {
                        acc[(size_t)r * NO + o + j] = s[j];
                        acc[(size_t)(r + 1) * NO + o + j] = s[4 + j];
                    } else {
                        out[(size_t)r * NO + o + j] =
                            (float)s[j] * (sx[r] * sw[o + j]) + b[o + j];
                        out[(size_t)(r + 1) * NO + o + j] =
                            (float)s[4 + j] * (sx[r + 1] * sw[o + j]) + b[o + j];
                    }
                }
            }
            for (; o < o1; o++) {
                const int8_t *w0 = qw + (size_t)o * NI;
                const int32_t t0 = dot_1x1(x0, w0, NI), t1 = dot_1x1(x1, w0, NI);
                if (acc) {
                    acc[(size_t)r * NO + o] = t0;
                    acc[(size_t)(r + 1) * NO + o] = t1;
                } else {
                    out[(size_t)r * NO + o] = (float)t0 * (sx[r] * sw[o]) + b[o];
                    out[(size_t)(r + 1) * NO + o] = (float)t1 * (sx[r + 1] * sw[o]) + b[o];
                }
            }
        }
        for (; r < n; r++) {
            const int16_t *x0 = qx + (size_t)r * NI;
            int o = o0;
            for (; o + 4 <= o1; o += 4) {
                tile_1x4(s, x0, qw + (size_t)o * NI, NI);
                for (int j = 0; j < 4; j++) {
                    if (acc)
                        acc[(size_t)r * NO + o + j] = s[j];
                    else
                        out[(size_t)r * NO + o + j] =
                            (float)s[j] * (sx[r] * sw[o + j]) + b[o + j];
                }
            }
            for (; o < o1; o++) {
                const int32_t t = dot_1x1(x0, qw + (size_t)o * NI, NI);
                if (acc)
                    acc[(size_t)r * NO + o] = t;
                else
                    out[(size_t)r * NO + o] = (float)t * (sx[r] * sw[o]) + b[o];
            }
        }
    }
}

void eb_qkern_i8_gemm(int32_t *acc, const int16_t *qx, const int8_t *qw, int n, int NI, int NO)
{
    i8_gemm_core(acc, NULL, qx, NULL, qw, NULL, NULL, n, NI, NO);
}

EB_Q_CLONES
static void quant_rows(int16_t *restrict qx, float *restrict sx, const float *restrict x, int n,
                       int NI)
{
    for (int r = 0; r < n; r++)
        sx[r] = quant_run16(qx + (size_t)r * NI, x + (size_t)r * NI, (size_t)NI);
}

void eb_qkern_dense_i8(float *out, int16_t *qx, float *sx, const float *x, const int8_t *qw,
                       const float *sw, const float *b, int n, int NI, int NO)
{
    quant_rows(qx, sx, x, n, NI);
    i8_gemm_core(NULL, out, qx, sx, qw, sw, b, n, NI, NO);
}

EB_Q_CLONES
static void quant_rows_static(int16_t *restrict qx, float *restrict sx, const float *restrict x,
                              float xs, int n, int NI)
{
    for (int r = 0; r < n; r++)
        sx[r] = eb_quant_int8_static_i16(qx + (size_t)r * NI, x + (size_t)r * NI, (size_t)NI, xs);
}

void eb_qkern_dense_i8_static(float *out, int16_t *qx, float *sx, const float *x, float xs,
                              const int8_t *qw, const float *sw, const float *b, int n, int NI,
                              int NO)
{
    quant_rows_static(qx, sx, x, xs, n, NI);
    i8_gemm_core(NULL, out, qx, sx, qw, sw, b, n, NI, NO);
}

/* ---- GEMV: one input row ------------------------------------------------ */

/* One quantized row against every row of W, four rows of W per pass over
 * k (tile_1x4: four int32 dot products, pmaddwd on x86, vpdpwssd where
 * the compiler targets VNNI), the remainder one row at a time; then the
 * float expression of i8_gemm_core. The sums are exact integers, so the
 * result equals eb_qkern_dense_i8's row for the same qx and sx bit for
 * bit. No VNNI clone: GCC dispatches an "arch=icelake-server" clone on
 * the CPU model, not on its features (an AMD Zen 4 with AVX-512 VNNI
 * would never take it), and the kernel is bound by reading W, not by
 * its multiply-adds. */
/* Touch every line of a tile of W before computing on it: one
 * prefetch per 64-byte line of rows [o, o + rows), non-temporal (each
 * weight is used once). The rows are four streams NI bytes apart, which
 * the hardware prefetchers follow poorly; asking for the whole tile at
 * once lets its misses overlap. Measured back to back here (mlp
 * 784-256-256-10, S = 100 int8, one thread): 3.1 ms without, 1.15 ms
 * with; prefetching further ahead (512 B to 32 KiB, or the next tile)
 * measured 2 to 3 ms. A hint: it never faults. */
static inline void prefetch_tile(const void *w, size_t bytes)
{
    const char *p = w;
    for (size_t k = 0; k < bytes; k += 64)
        __builtin_prefetch(p + k, 0, 0);
}

EB_Q_I8_CLONES
void eb_qkern_gemv_i8(float *restrict out, const int16_t *restrict qx, float sx,
                      const int8_t *restrict qw, const float *restrict sw,
                      const float *restrict b, int NI, int NO)
{
    int32_t s[4];
    int o = 0;
    for (; o + 4 <= NO; o += 4) {
        prefetch_tile(qw + (size_t)o * NI, 4 * (size_t)NI);
        tile_1x4(s, qx, qw + (size_t)o * NI, NI);
        for (int j = 0; j < 4; j++)
            out[o + j] = (float)s[j] * (sx * sw[o + j]) + b[o + j];
    }
    for (; o < NO; o++)
        out[o] = (float)dot_1x1(qx, qw + (size_t)o * NI, NI) * (sx * sw[o]) + b[o];
}

/* f16 GEMV: for each output o, GEMV_LANES float accumulators a[l] take
 * the products h2f(w[o][i + l]) * x[i + l] (multiply, then add: ISO C,
 * no contraction) for i = 0, 16, ... below NV = NI - NI % 16; then
 * s = a[0] + a[1] + ... + a[15] in that order, the tail k >= NV added
 * one product at a time, and out[o] = s + b[o]. Two implementations of
 * that one expression: portable C (the h2f bit conversion, vectorised
 * per clone) and, where the CPU has AVX2 and F16C, intrinsics
 * (vcvtph2ps, separate vmulps and vaddps). Both are exact in the
 * conversion and perform the same float operations in the same order,
 * so they agree bit for bit. */
#define QGEMV_LANES 16

static inline float f16_lane_sum(const float a[QGEMV_LANES])
{
    float s = 0.0f;
    for (int l = 0; l < QGEMV_LANES; l++)
        s += a[l];
    return s;
}

EB_Q_CLONES
static void gemv_f16_c(float *restrict out, const float *restrict x, const uint16_t *restrict w,
                       const float *restrict b, int NI, int NO)
{
    const int NV = NI - NI % QGEMV_LANES;
    int o = 0;
    for (; o + 4 <= NO; o += 4) {
        const uint16_t *w0 = w + (size_t)o * NI, *w1 = w0 + NI, *w2 = w1 + NI, *w3 = w2 + NI;
        float a0[QGEMV_LANES] = {0}, a1[QGEMV_LANES] = {0}, a2[QGEMV_LANES] = {0},
              a3[QGEMV_LANES] = {0};
        float s0, s1, s2, s3;
        prefetch_tile(w0, 4 * (size_t)NI * sizeof *w0);
        for (int i = 0; i < NV; i += QGEMV_LANES)
            for (int l = 0; l < QGEMV_LANES; l++) {
                const float xv = x[i + l];
                a0[l] += h2f(w0[i + l]) * xv;
                a1[l] += h2f(w1[i + l]) * xv;
                a2[l] += h2f(w2[i + l]) * xv;
                a3[l] += h2f(w3[i + l]) * xv;
            }
        s0 = f16_lane_sum(a0);
        s1 = f16_lane_sum(a1);
        s2 = f16_lane_sum(a2);
        s3 = f16_lane_sum(a3);
        for (int i = NV; i < NI; i++) {
            s0 += h2f(w0[i]) * x[i];
            s1 += h2f(w1[i]) * x[i];
            s2 += h2f(w2[i]) * x[i];
            s3 += h2f(w3[i]) * x[i];
        }
        out[o] = s0 + b[o];
        out[o + 1] = s1 + b[o + 1];
        out[o + 2] = s2 + b[o + 2];
        out[o + 3] = s3 + b[o + 3];
    }
    for (; o < NO; o++) {
        const uint16_t *w0 = w + (size_t)o * NI;
        float a0[QGEMV_LANES] = {0}, s0;
        for (int i = 0; i < NV; i += QGEMV_LANES)
            for (int l = 0; l < QGEMV_LANES; l++)
                a0[l] += h2f(w0[i + l]) * x[i + l];
        s0 = f16_lane_sum(a0);
        for (int i = NV; i < NI; i++)
            s0 += h2f(w0[i]) * x[i];
        out[o] = s0 + b[o];
    }
}

#if EB_Q_HAVE_F16C
/* The same expression with lanes 0-7 and 8-15 in two __m256 per row. */
__attribute__((target("avx2,f16c")))
static void gemv_f16_f16c(float *restrict out, const float *restrict x,
                          const uint16_t *restrict w, const float *restrict b, int NI, int NO)
{
    const int NV = NI - NI % QGEMV_LANES;
    float lanes[QGEMV_LANES];
    int o = 0;
#define F16C_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
    for (; o + 4 <= NO; o += 4) {
        const uint16_t *w0 = w + (size_t)o * NI;
        __m256 lo[4], hi[4];
        float s[4];
        prefetch_tile(w0, 4 * (size_t)NI * sizeof *w0);
        for (int r = 0; r < 4; r++)
            lo[r] = hi[r] = _mm256_setzero_ps();
        for (int i = 0; i < NV; i += QGEMV_LANES) {
            const __m256 xl = _mm256_loadu_ps(x + i), xh = _mm256_loadu_ps(x + i + 8);
            for (int r = 0; r < 4; r++) {
                const uint16_t *wr = w0 + (size_t)r * NI + i;
                lo[r] = _mm256_add_ps(lo[r], _mm256_mul_ps(F16C_LOAD(wr), xl));
                hi[r] = _mm256_add_ps(hi[r], _mm256_mul_ps(F16C_LOAD(wr + 8), xh));
            }
        }
        for (int r = 0; r < 4; r++) {
            const uint16_t *wr = w0 + (size_t)r * NI;
            _mm256_storeu_ps(lanes, lo[r]);
            _mm256_storeu_ps(lanes + 8, hi[r]);
            s[r] = f16_lane_sum(lanes);
            for (int i = NV; i < NI; i++)
                s[r] += h2f(wr[i]) * x[i];
            out[o + r] = s[r] + b[o + r];
        }
    }
    for (; o < NO; o++) {
        const uint16_t *w0 = w + (size_t)o * NI;
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        float s0;
        for (int i = 0; i < NV; i += QGEMV_LANES) {
            lo = _mm256_add_ps(lo, _mm256_mul_ps(F16C_LOAD(w0 + i), _mm256_loadu_ps(x + i)));
            hi = _mm256_add_ps(hi,
                               _mm256_mul_ps(F16C_LOAD(w0 + i + 8), _mm256_loadu_ps(x + i + 8)));
        }
        _mm256_storeu_ps(lanes, lo);
        _mm256_storeu_ps(lanes + 8, hi);
        s0 = f16_lane_sum(lanes);
        for (int i = NV; i < NI; i++)
            s0 += h2f(w0[i]) * x[i];
        out[o] = s0 + b[o];
    }
#undef F16C_LOAD
}
#endif

void eb_qkern_gemv_f16_portable(float *out, const float *x, const uint16_t *w, const float *b,
                                int NI, int NO)
{
    gemv_f16_c(out, x, w, b, NI, NO);
}

void eb_qkern_gemv_f16(float *out, const float *x, const uint16_t *w, const float *b, int NI,
                       int NO)
{
#if EB_Q_HAVE_F16C
    if (eb_cpu_has(EB_CPU_AVX2_F16C)) {
        gemv_f16_f16c(out, x, w, b, NI, NO);
        return;
    }
#endif
    gemv_f16_c(out, x, w, b, NI, NO);
}

int eb_qkern_gemv_f16_uses_f16c(void)
{
#if EB_Q_HAVE_F16C
    return eb_cpu_has(EB_CPU_AVX2_F16C);
#else
    return 0;
#endif
}

/* ---- f16 GEMM ---------------------------------------------------------- */

/* A converted block of W is at most this many floats (128 KiB): it stays
 * in L2 while sgemm runs every row of x over it. */
#define F16_BLOCK_FLOATS 32768

int eb_qkern_f16_block_rows(int NI)
{
    int rows = F16_BLOCK_FLOATS / (NI > 0 ? NI : 1);
    return rows < 1 ? 1 : rows;
}

void eb_qkern_dense_f16(float *out, float *wbuf, const float *x, const uint16_t *w,
                        const float *b, int n, int NI, int NO)
{
    const int br = eb_qkern_f16_block_rows(NI);
    for (int r = 0; r < n; r++)
        memcpy(out + (size_t)r * NO, b, (size_t)NO * sizeof(float));
    for (int o0 = 0; o0 < NO; o0 += br) {
        const int nb = o0 + br < NO ? br : NO - o0;
        eb_f16_to_f32_n(wbuf, w + (size_t)o0 * NI, (size_t)nb * NI);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nb, NI, 1.0f, x, NI, wbuf, NI,
                    1.0f, out + o0, NO);
    }
}

/* ---- conv2d lowered onto the dense kernels ----------------------------- */

/* cols row (img, oy, ox) = the 3x3xC patch at (oy, ox), ordered (ky, kx,
 * c): in NHWC each ky contributes 3*C contiguous floats (the lowering of
 * kernels.c, which keeps its own static). */
static void im2col(float *cols, const float *inp, int n, int H, int W, int C)
{
    const int OH = H - 2, OW = W - 2;
    const size_t seg = 3 * (size_t)C;
    float *dst = cols;
    for (int img = 0; img < n; img++) {
        const float *base = inp + (size_t)img * H * W * C;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++)
                for (int ky = 0; ky < 3; ky++) {
                    memcpy(dst, base + ((size_t)(oy + ky) * W + ox) * C, seg * sizeof(float));
                    dst += seg;
                }
    }
}

void eb_qkern_conv2d_i8(float *out, float *cols, int16_t *qx, float *sx, const float *inp,
                        const int8_t *qw, const float *sw, const float *b, int n, int H, int W,
                        int C, int NO)
{
    const int rows = n * (H - 2) * (W - 2);
    im2col(cols, inp, n, H, W, C);
    eb_qkern_dense_i8(out, qx, sx, cols, qw, sw, b, rows, 9 * C, NO);
}

void eb_qkern_conv2d_i8_static(float *out, float *cols, int16_t *qx, float *sx, const float *inp,
                               float xs, const int8_t *qw, const float *sw, const float *b, int n,
                               int H, int W, int C, int NO)
{
    const int rows = n * (H - 2) * (W - 2);
    im2col(cols, inp, n, H, W, C);
    eb_qkern_dense_i8_static(out, qx, sx, cols, xs, qw, sw, b, rows, 9 * C, NO);
}

void eb_qkern_conv2d_f16(float *out, float *cols, float *wbuf, const float *inp,
                         const uint16_t *w, const float *b, int n, int H, int W, int C, int NO)
{
    const int rows = n * (H - 2) * (W - 2);
    im2col(cols, inp, n, H, W, C);
    eb_qkern_dense_f16(out, wbuf, cols, w, b, rows, 9 * C, NO);
}

/* ---- eb_qnet ------------------------------------------------------------ */

/* Floats of im2col a chunk of images may take (4 MiB); a chunk holds at
 * least one image. */
#define QNET_COLS_BUDGET ((size_t)1 << 20)

static size_t round64(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

static size_t storage_elem(eb_qnet_storage s)
{
    return s == EB_QNET_F32 ? sizeof(float) : s == EB_QNET_F16 ? sizeof(uint16_t) : 1;
}

static const char *storage_word(eb_qnet_storage s)
{
    return s == EB_QNET_F32 ? "f32" : s == EB_QNET_F16 ? "f16" : "int8";
}

static eb_status check_storage(eb_qnet_storage storage, eb_error *err)
{
    if (storage != EB_QNET_F32 && storage != EB_QNET_F16 && storage != EB_QNET_INT8)
        return eb_error_set(err, EB_ERR_ARG,
                            "weight storage %d is not one of 1 (f32), 2 (f16), 3 (int8)",
                            (int)storage);
    return EB_OK;
}

/* Where every layer's biases and channel scales start in the weights'
 * f32 arrays, and how many of each there are. */
static void qlayout(const eb_arch *arch, eb_qnet_storage storage, struct eb_qweights *w,
                    size_t *n_bias, size_t *n_scale)
{
    size_t nb = 0, ns = 0;
    w->storage = storage;
    w->k = arch->n_params;
    w->n_layers = arch->n_layers;
    for (int i = 0; i < arch->n_layers; i++) {
        const eb_layer *L = &arch->layers[i];
        w->bias_at[i] = nb;
        w->scale_at[i] = ns;
        nb += L->n_bias;
        if (L->n_weights)
            ns += (size_t)L->units;
    }
    *n_bias = nb;
    *n_scale = storage == EB_QNET_INT8 ? ns : 0;
}

/* The inner dimension of layer L's GEMM (0 for a layer without weights). */
static size_t layer_ni(const eb_layer *L)
{
    return L->kind == EB_LAYER_DENSE    ? L->in_size
           : L->kind == EB_LAYER_CONV2D ? 9 * (size_t)L->in_c
                                        : 0;
}

static eb_status check_ni(const eb_arch *arch, eb_qnet_storage storage, eb_error *err)
{
    if (storage != EB_QNET_INT8)
        return EB_OK;
    for (int i = 0; i < arch->n_layers; i++) {
        const size_t NI = layer_ni(&arch->layers[i]);
        if (NI > EB_QUANT_I8_MAX_NI)
            return eb_error_set(err, EB_ERR_UNSUPPORTED,
                                "layer %d has %zu inputs per output; the int8 kernels take at "
                                "most %d (int32 accumulators)",
                                i + 1, NI, EB_QUANT_I8_MAX_NI);
    }
    return EB_OK;
}

/* int8: checks the grouping (and the scales, when given) and, when w is
 * not NULL, gives every output channel its scale and every bias its f32
 * value from v. */
static eb_status walk_int8(const eb_arch *a, struct eb_qweights *w, const int8_t *v,
                           const float *scales, const uint64_t *groups, size_t n_groups,
                           eb_error *err)
{
    const uint64_t K = (uint64_t)a->n_params;
    size_t g = 0;

    if ((w && !scales) || !groups || n_groups == 0)
        return eb_error_set(err, EB_ERR_ARG, "int8 weights need scales and groups");
    if (groups[0] != 0 || groups[n_groups] != K)
        return eb_error_set(err, EB_ERR_ARG,
                            "int8 groups must run from 0 to K = %zu (got %llu to %llu)",
                            a->n_params, (unsigned long long)groups[0],
                            (unsigned long long)groups[n_groups]);
    for (size_t j = 0; j < n_groups; j++) {
        if (groups[j + 1] <= groups[j])
            return eb_error_set(err, EB_ERR_ARG, "int8 group %zu is empty or out of order", j);
        if (scales && !(scales[j] >= 0.0f && scales[j] <= FLT_MAX))
            return eb_error_set(err, EB_ERR_ARG,
                                "int8 scale %zu is %g; scales must be finite and >= 0", j,
                                (double)scales[j]);
    }
    /* Walk the layers in theta order; g is the group holding the start of
     * the run being placed. */
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        size_t per_row;
        if (!L->n_weights)
            continue;
        per_row = L->n_weights / (size_t)L->units;
        for (int o = 0; o < L->units; o++) {
            const uint64_t lo = (uint64_t)(L->param_offset + (size_t)o * per_row);
            const uint64_t hi = lo + per_row;
            while (groups[g + 1] <= lo)
                g++;
            if (groups[g + 1] < hi)
                return eb_error_set(err, EB_ERR_ARG,
                                    "int8 group %zu ends at %llu, inside the weights of output "
                                    "channel %d of layer %d; each channel needs one scale",
                                    g, (unsigned long long)groups[g + 1], o, i + 1);
            if (w)
                w->scale[w->scale_at[i] + (size_t)o] = scales[g];
        }
        for (size_t k = 0; w && k < L->n_bias; k++) {
            const uint64_t at = (uint64_t)(L->param_offset + L->n_weights + k);
            while (groups[g + 1] <= at)
                g++;
            w->bias[w->bias_at[i] + k] = (float)v[at] * scales[g];
        }
    }
    return EB_OK;
}

/* Checks values (and for int8 scales and groups) and fills w's bias and
 * scale arrays from them; w->values is left to the caller. */
static eb_status fill_weights(const eb_arch *a, struct eb_qweights *w, const void *values,
                              const float *scales, const uint64_t *groups, size_t n_groups,
                              eb_error *err)
{
    if (!values)
        return eb_error_set(err, EB_ERR_ARG, "no weight values given");
    if (w->storage == EB_QNET_INT8)
        return walk_int8(a, w, values, scales, groups, n_groups, err);
    if (scales || groups || n_groups)
        return eb_error_set(err, EB_ERR_ARG, "%s weights take no scales or groups",
                            storage_word(w->storage));
    for (size_t k = 0; k < a->n_params; k++) {
        const float v = w->storage == EB_QNET_F32 ? ((const float *)values)[k]
                                                  : eb_f16_to_f32(((const uint16_t *)values)[k]);
        if (!(fabsf(v) <= FLT_MAX))
            return eb_error_set(err, EB_ERR_ARG, "%s weight %zu is not finite",
                                storage_word(w->storage), k);
    }
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        const size_t at = L->param_offset + L->n_weights;
        if (w->storage == EB_QNET_F32)
            memcpy(w->bias + w->bias_at[i], (const float *)values + at, L->n_bias * sizeof(float));
        else
            eb_f16_to_f32_n(w->bias + w->bias_at[i], (const uint16_t *)values + at, L->n_bias);
    }
    return EB_OK;
}

eb_status eb_qnet_supports(const eb_arch *arch, eb_qnet_storage storage,
                           const uint64_t *groups, size_t n_groups, eb_error *err)
{
    eb_status st = check_storage(storage, err);
    if (st)
        return st;
    if (arch->n_layers < 1 || arch->n_params == 0)
        return eb_error_set(err, EB_ERR_ARG, "the architecture has no layers with parameters");
    if ((st = check_ni(arch, storage, err)))
        return st;
    if (storage == EB_QNET_INT8)
        return walk_int8(arch, NULL, NULL, NULL, groups, n_groups, err);
    if (groups || n_groups)
        return eb_error_set(err, EB_ERR_ARG, "%s weights take no scales or groups",
                            storage_word(storage));
    return EB_OK;
}

eb_status eb_qweights_new(const eb_arch *arch, eb_qnet_storage storage, const void *values,
                          const float *scales, const uint64_t *groups, size_t n_groups,
                          eb_qweights **out, eb_error *err)
{
    struct eb_qweights lay, *w;
    size_t n_bias, n_scale, bytes;
    char *p;
    eb_status st;

    *out = NULL;
    if ((st = check_storage(storage, err)))
        return st;
    if (arch->n_layers < 1 || arch->n_params == 0)
        return eb_error_set(err, EB_ERR_ARG, "the architecture has no layers with parameters");
    memset(&lay, 0, sizeof lay);
    qlayout(arch, storage, &lay, &n_bias, &n_scale);
    /* one allocation: the handle, then bias, then scale */
    bytes = round64(sizeof lay) + round64(n_bias * sizeof(float)) +
            round64(n_scale * sizeof(float));
    p = eb_malloc_aligned(64, bytes);
    if (!p)
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory: %zu bytes for a network's biases and scales", bytes);
    w = (struct eb_qweights *)(void *)p;
    *w = lay;
    w->bias = (float *)(void *)(p + round64(sizeof lay));
    w->scale = n_scale ? (float *)(void *)(p + round64(sizeof lay) +
                                           round64(n_bias * sizeof(float)))
                       : NULL;
    w->bytes = bytes;
    st = fill_weights(arch, w, values, scales, groups, n_groups, err);
    if (st) {
        eb_free_aligned(p);
        return st;
    }
    w->values = values;
    *out = w;
    return EB_OK;
}

void eb_qweights_free(eb_qweights *w)
{
    eb_free_aligned(w);
}

size_t eb_qweights_bytes(const eb_qweights *w)
{
    return w->bytes;
}

void eb_qweights_layer(const eb_qweights *w, const eb_arch *arch, int i, const void **values,
                       const float **scale, const float **bias)
{
    const eb_layer *L = &arch->layers[i];
    const size_t elem = storage_elem(w->storage);
    *values = (const char *)w->values + L->param_offset * elem;
    *scale = w->scale && L->n_weights ? w->scale + w->scale_at[i] : NULL;
    *bias = w->bias + w->bias_at[i];
}

size_t eb_quant_act_layers(const eb_arch *arch)
{
    size_t n = 0;
    for (int i = 0; i < arch->n_layers; i++)
        n += arch->layers[i].n_weights ? 1 : 0;
    return n;
}

/* Checks act (n_act) against arch and, when w is not NULL, installs it. */
static eb_status set_act(struct eb_qweights *w, const eb_arch *arch, const float *act,
                         size_t n_act, eb_error *err)
{
    const size_t want = eb_quant_act_layers(arch);
    size_t j = 0;
    if (w->storage != EB_QNET_INT8)
        return eb_error_set(err, EB_ERR_ARG,
                            "static activation scales are for int8 weights, not %s",
                            storage_word(w->storage));
    if (!act && n_act == 0) {
        w->has_act = 0;
        memset(w->act, 0, sizeof w->act);
        return EB_OK;
    }
    if (!act || n_act != want)
        return eb_error_set(err, EB_ERR_ARG,
                            "%zu static activation scales given; the architecture has %zu "
                            "weighted layers (one scale each)",
                            act ? n_act : (size_t)0, want);
    for (size_t k = 0; k < n_act; k++)
        if (!(act[k] > 0.0f && act[k] <= FLT_MAX))
            return eb_error_set(err, EB_ERR_ARG,
                                "static activation scale %zu is %g; it must be finite and > 0",
                                k, (double)act[k]);
    memset(w->act, 0, sizeof w->act);
    for (int i = 0; i < arch->n_layers; i++)
        if (arch->layers[i].n_weights)
            w->act[i] = act[j++];
    w->has_act = 1;
    return EB_OK;
}

eb_status eb_qweights_set_act_scales(eb_qweights *w, const eb_arch *arch, const float *act,
                                     size_t n_act, eb_error *err)
{
    if (w->k != arch->n_params || w->n_layers != arch->n_layers)
        return eb_error_set(err, EB_ERR_ARG,
                            "the weights (K = %zu, %d layers) are not of this architecture "
                            "(K = %zu, %d layers)",
                            w->k, w->n_layers, arch->n_params, arch->n_layers);
    return set_act(w, arch, act, n_act, err);
}

eb_status eb_qnet_set_act_scales(eb_qnet *q, const float *act, size_t n_act, eb_error *err)
{
    return set_act(&q->w, &q->arch, act, n_act, err);
}

float eb_qweights_act_scale(const eb_qweights *w, int i)
{
    return w->has_act && i >= 0 && i < w->n_layers ? w->act[i] : 0.0f;
}

static eb_status qnet_create(const eb_arch *arch, eb_qnet_storage storage, int max_batch,
                             int own_weights, eb_qnet **out, eb_error *err)
{
    eb_qnet *q;
    const size_t nb = (size_t)max_batch;
    size_t n_bias = 0, n_scale = 0, max_pool = 0, max_cols = 0, max_q = 0, max_rows = 0;
    size_t wbuf_floats = 0, off;
    char *p;
    eb_status st;

    *out = NULL;
    if ((st = check_storage(storage, err)))
        return st;
    if (max_batch < 1 || max_batch > (1 << 20))
        return eb_error_set(err, EB_ERR_ARG, "batch size %d is outside 1..%d", max_batch, 1 << 20);
    if (arch->n_layers < 1 || arch->n_params == 0)
        return eb_error_set(err, EB_ERR_ARG, "the architecture has no layers with parameters");
    if ((st = check_ni(arch, storage, err)))
        return st;
    q = eb_calloc(1, sizeof *q);
    if (!q)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory creating a quantized network");
    q->arch = *arch;
    q->storage = storage;
    q->max_batch = max_batch;
    q->own_weights = own_weights;
    qlayout(arch, storage, &q->w, &n_bias, &n_scale);

    for (int i = 0; i < arch->n_layers; i++) {
        const eb_layer *L = &arch->layers[i];
        const size_t NI = layer_ni(L);
        size_t rows = 0;
        if (L->kind == EB_LAYER_DENSE) {
            rows = nb;
        } else if (L->kind == EB_LAYER_CONV2D) {
            const size_t pix = (size_t)L->out_h * L->out_w;
            size_t chunk = QNET_COLS_BUDGET / (pix * NI);
            chunk = chunk < 1 ? 1 : chunk > nb ? nb : chunk;
            q->chunk[i] = (int)chunk;
            rows = chunk * pix;
            if (rows * NI > max_cols)
                max_cols = rows * NI;
        } else if (L->kind == EB_LAYER_MAXPOOL && nb * L->out_size > max_pool) {
            max_pool = nb * L->out_size;
        }
        if (!NI)
            continue;
        if (rows * NI > max_q)
            max_q = rows * NI;
        if (rows > max_rows)
            max_rows = rows;
        if (storage == EB_QNET_F16) {
            size_t f = (size_t)eb_qkern_f16_block_rows((int)NI) * NI;
            size_t whole = (size_t)L->units * NI;
            f = f < whole ? f : whole;
            if (f > wbuf_floats)
                wbuf_floats = f;
        }
    }

    /* Weights: values, bias, scale in one allocation. */
    if (own_weights) {
        q->wbytes = round64(arch->n_params * storage_elem(storage)) +
                    round64(n_bias * sizeof(float)) + round64(n_scale * sizeof(float));
        q->wblock = eb_malloc_aligned(64, q->wbytes);
        if (!q->wblock) {
            const size_t need = q->wbytes;
            eb_free(q);
            return eb_error_set(err, EB_ERR_NOMEM,
                                "out of memory: the quantized weights need %zu bytes", need);
        }
        p = q->wblock;
        q->w.values = p;
        p += round64(arch->n_params * storage_elem(storage));
        q->w.bias = (float *)(void *)p;
        p += round64(n_bias * sizeof(float));
        q->w.scale = n_scale ? (float *)(void *)p : NULL;
    }

    /* Workspace. */
    off = 2 * round64(nb * arch->max_act * sizeof(float)) + round64(max_pool * sizeof(int32_t)) +
          round64(max_cols * sizeof(float));
    if (storage == EB_QNET_INT8)
        off += round64(max_q * sizeof(int16_t)) + round64(max_rows * sizeof(float));
    if (storage == EB_QNET_F16)
        off += round64(wbuf_floats * sizeof(float));
    q->bytes = off;
    q->block = eb_malloc_aligned(64, q->bytes);
    if (!q->block) {
        eb_free_aligned(q->wblock);
        eb_free(q);
        return eb_error_set(err, EB_ERR_NOMEM,
                            "out of memory: the quantized network's workspace needs %zu bytes "
                            "for batch %d",
                            off, max_batch);
    }
    p = q->block;
    q->act[0] = (float *)(void *)p;
    p += round64(nb * arch->max_act * sizeof(float));
    q->act[1] = (float *)(void *)p;
    p += round64(nb * arch->max_act * sizeof(float));
    q->argmax = (int32_t *)(void *)p;
    p += round64(max_pool * sizeof(int32_t));
    q->cols = (float *)(void *)p;
    p += round64(max_cols * sizeof(float));
    if (storage == EB_QNET_INT8) {
        q->qx = (int16_t *)(void *)p;
        p += round64(max_q * sizeof(int16_t));
        q->sx = (float *)(void *)p;
        p += round64(max_rows * sizeof(float));
    }
    if (storage == EB_QNET_F16)
        q->wbuf = (float *)(void *)p;
    *out = q;
    return EB_OK;
}

eb_status eb_qnet_new(const eb_arch *arch, eb_qnet_storage storage, int max_batch,
                      eb_qnet **out, eb_error *err)
{
    return qnet_create(arch, storage, max_batch, 1, out, err);
}

eb_status eb_qnet_new_workspace(const eb_arch *arch, eb_qnet_storage storage, int max_batch,
                                eb_qnet **out, eb_error *err)
{
    return qnet_create(arch, storage, max_batch, 0, out, err);
}

void eb_qnet_free(eb_qnet *q)
{
    if (!q)
        return;
    eb_free_aligned(q->block);
    eb_free_aligned(q->wblock);
    eb_free(q);
}

size_t eb_qnet_bytes(const eb_qnet *q)
{
    return q->wbytes + q->bytes;
}

size_t eb_qnet_weight_bytes(const eb_qnet *q)
{
    return q->wbytes;
}

const eb_arch *eb_qnet_arch(const eb_qnet *q)
{
    return &q->arch;
}

eb_qnet_storage eb_qnet_storage_of(const eb_qnet *q)
{
    return q->storage;
}

eb_status eb_qnet_set_weights(eb_qnet *q, const void *values, const float *scales,
                              const uint64_t *groups, size_t n_groups, eb_error *err)
{
    eb_status st;

    q->weights_set = 0;
    if (!q->own_weights)
        return eb_error_set(err, EB_ERR_ARG,
                            "this network holds a workspace only (eb_qnet_new_workspace); "
                            "give it eb_qweights through eb_qnet_forward_w");
    st = fill_weights(&q->arch, &q->w, values, scales, groups, n_groups, err);
    if (st)
        return st;
    memcpy((void *)q->w.values, values, q->arch.n_params * storage_elem(q->storage));
    q->weights_set = 1;
    return EB_OK;
}

eb_status eb_qnet__check(const eb_qnet *q, const eb_qweights *w, size_t n, eb_error *err)
{
    if (w->storage != q->storage || w->k != q->arch.n_params || w->n_layers != q->arch.n_layers)
        return eb_error_set(err, EB_ERR_ARG,
                            "the weights (%s, K = %zu, %d layers) do not fit this network "
                            "(%s, K = %zu, %d layers)",
                            storage_word(w->storage), w->k, w->n_layers, storage_word(q->storage),
                            q->arch.n_params, q->arch.n_layers);
    if (n < 1 || n > (size_t)q->max_batch)
        return eb_error_set(err, EB_ERR_ARG, "batch of %zu examples is outside 1..%d", n,
                            q->max_batch);
    return EB_OK;
}

static void dense_layer(eb_qnet *q, const eb_qweights *w, int i, float *out, const float *in,
                        int n)
{
    const eb_layer *L = &q->arch.layers[i];
    const int NI = (int)L->in_size, NO = L->units;
    const float *b = w->bias + w->bias_at[i];
    switch (q->storage) {
    case EB_QNET_F32:
        eb_kern_dense_forward(out, in, (const float *)w->values + L->param_offset, b, n, NI, NO);
        break;
    case EB_QNET_F16:
        eb_qkern_dense_f16(out, q->wbuf, in, (const uint16_t *)w->values + L->param_offset, b, n,
                           NI, NO);
        break;
    case EB_QNET_INT8:
        if (w->has_act)
            eb_qkern_dense_i8_static(out, q->qx, q->sx, in, w->act[i],
                                     (const int8_t *)w->values + L->param_offset,
                                     w->scale + w->scale_at[i], b, n, NI, NO);
        else
            eb_qkern_dense_i8(out, q->qx, q->sx, in, (const int8_t *)w->values + L->param_offset,
                              w->scale + w->scale_at[i], b, n, NI, NO);
        break;
    }
}

static void conv_layer(eb_qnet *q, const eb_qweights *w, int i, float *out, const float *in,
                       int n)
{
    const eb_layer *L = &q->arch.layers[i];
    const int H = L->in_h, W = L->in_w, C = L->in_c, NO = L->units;
    const float *b = w->bias + w->bias_at[i];
    for (int img = 0; img < n; img += q->chunk[i]) {
        const int m = img + q->chunk[i] < n ? q->chunk[i] : n - img;
        const float *x = in + (size_t)img * L->in_size;
        float *y = out + (size_t)img * L->out_size;
        switch (q->storage) {
        case EB_QNET_F32:
            eb_kern_conv2d_forward(y, q->cols, x, (const float *)w->values + L->param_offset, b,
                                   m, H, W, C, NO);
            break;
        case EB_QNET_F16:
            eb_qkern_conv2d_f16(y, q->cols, q->wbuf, x,
                                (const uint16_t *)w->values + L->param_offset, b, m, H, W, C,
                                NO);
            break;
        case EB_QNET_INT8:
            if (w->has_act)
                eb_qkern_conv2d_i8_static(y, q->cols, q->qx, q->sx, x, w->act[i],
                                          (const int8_t *)w->values + L->param_offset,
                                          w->scale + w->scale_at[i], b, m, H, W, C, NO);
            else
                eb_qkern_conv2d_i8(y, q->cols, q->qx, q->sx, x,
                                   (const int8_t *)w->values + L->param_offset,
                                   w->scale + w->scale_at[i], b, m, H, W, C, NO);
            break;
        }
    }
}

/* The forward of eb_qnet_forward_w and eb_qnet_forward_observe; fn may
 * be NULL. */
static eb_status qnet_forward(eb_qnet *q, const eb_qweights *w, const float *x, size_t n,
                              float *logits, eb_qnet_observe_fn fn, void *ctx, eb_error *err)
{
    const eb_arch *a = &q->arch;
    const float *in = x;
    float *cur = NULL; /* in, when it is one of our buffers (writable) */
    int pp = 0;
    eb_status st = eb_qnet__check(q, w, n, err);

    if (st)
        return st;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        float *o = i == a->n_layers - 1 ? logits : q->act[pp];
        if (fn && L->n_weights)
            fn(ctx, i, in, n, L->in_size);
        switch (L->kind) {
        case EB_LAYER_DENSE:
            dense_layer(q, w, i, o, in, (int)n);
            break;
        case EB_LAYER_CONV2D:
            conv_layer(q, w, i, o, in, (int)n);
            break;
        case EB_LAYER_MAXPOOL:
            eb_kern_maxpool_forward(o, q->argmax, in, (int)n, L->in_h, L->in_w, L->in_c);
            break;
        case EB_LAYER_RELU:
            if (cur)
                o = cur; /* in place */
            eb_kern_relu_forward(o, in, n * L->out_size);
            break;
        case EB_LAYER_DROPOUT: /* identity at inference */
        case EB_LAYER_FLATTEN: /* a view */
            continue;
        }
        if (o != cur)
            pp ^= 1;
        in = cur = o;
    }
    return EB_OK;
}

eb_status eb_qnet_forward_w(eb_qnet *q, const eb_qweights *w, const float *x, size_t n,
                            float *logits, eb_error *err)
{
    return qnet_forward(q, w, x, n, logits, NULL, NULL, err);
}

eb_status eb_qnet_forward_observe(eb_qnet *q, const eb_qweights *w, const float *x, size_t n,
                                  float *logits, eb_qnet_observe_fn fn, void *ctx,
                                  eb_error *err)
{
    if (!fn)
        return eb_error_set(err, EB_ERR_ARG, "eb_qnet_forward_observe needs an observer");
    return qnet_forward(q, w, x, n, logits, fn, ctx, err);
}

eb_status eb_qnet_forward(eb_qnet *q, const float *x, size_t n, float *logits, eb_error *err)
{
    if (!q->weights_set)
        return eb_error_set(err, EB_ERR_ARG, "the quantized network has no weights set");
    return eb_qnet_forward_w(q, &q->w, x, n, logits, err);
}
