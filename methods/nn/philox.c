/* philox.c: Philox4x32-10 and the normals made from its words
 * (eb_philox.h), in 16 AVX-512 lanes where the CPU has them and
 * portably everywhere, bit for bit the same. */
#include <math.h>
#include <string.h>

#include "common/eb_cpu.h"
#include "methods/nn/eb_philox.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define EB_PHILOX_HAVE_AVX512 1
#include <immintrin.h>
#else
#define EB_PHILOX_HAVE_AVX512 0
#endif

/* the published multipliers and Weyl key increments */
#define PH_M0 0xD2511F53u
#define PH_M1 0xCD9E8D57u
#define PH_W0 0x9E3779B9u
#define PH_W1 0xBB67AE85u
#define PH_ROUNDS 10

#define SQRT_HALF 0.70710678118654752f
#define SQRT_TWO 1.41421356237309505f
#define LN_TWO 0.69314718055994531f

/* The key of each round: the key, then bumped by the Weyl increments. */
static void round_keys(uint32_t k0[PH_ROUNDS], uint32_t k1[PH_ROUNDS], uint32_t a, uint32_t b)
{
    for (int r = 0; r < PH_ROUNDS; r++, a += PH_W0, b += PH_W1) {
        k0[r] = a;
        k1[r] = b;
    }
}

void eb_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0[PH_ROUNDS], k1[PH_ROUNDS];
    round_keys(k0, k1, key[0], key[1]);
    for (int r = 0; r < PH_ROUNDS; r++) {
        const uint64_t p0 = (uint64_t)PH_M0 * c0, p1 = (uint64_t)PH_M1 * c2;
        c0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0[r];
        c1 = (uint32_t)p1;
        c2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1[r];
        c3 = (uint32_t)p0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Giles' single-precision erfinv polynomials: central (w < 5, in
 * w - 2.5) and tail (in sqrt(w) - 3), highest degree first. */
static const float central[9] = {2.81022636e-08f,  3.43273939e-07f, -3.5233877e-06f,
                                 -4.39150654e-06f, 0.00021858087f,  -0.00125372503f,
                                 -0.00417768164f,  0.246640727f,    1.50140941f};
static const float tail[9] = {-0.000200214257f, 0.000100950558f, 0.00134934322f,
                              -0.00367342844f,  0.00573950773f,  -0.0076224613f,
                              0.00943887047f,   1.00167406f,     2.83297682f};

/* log y for y in (0, 1]: y = m 2^e with m in [sqrt(1/2), sqrt(2)), and
 * log m = 2 atanh(t), t = (m - 1)/(m + 1), |t| < 0.172, by its series to
 * t^9 (the next term is below 4e-10). */
static inline float log_unit(float y)
{
    uint32_t bits;
    int e;
    float m, t, t2, q, tt, ef;
    /* frexp for a normal positive y: m in [1/2, 1), y = m 2^e */
    memcpy(&bits, &y, sizeof bits);
    e = (int)(bits >> 23) - 126;
    bits = (bits & 0x007FFFFFu) | 0x3F000000u;
    memcpy(&m, &bits, sizeof m);
    if (m < SQRT_HALF) {
        m = m * 2.0f;
        e -= 1;
    }
    ef = (float)e;
    t = (m - 1.0f) / (m + 1.0f);
    t2 = t * t;
    q = fmaf(1.0f / 9.0f, t2, 1.0f / 7.0f);
    q = fmaf(q, t2, 1.0f / 5.0f);
    q = fmaf(q, t2, 1.0f / 3.0f);
    q = q * t2;
    tt = t + t;
    return fmaf(ef, LN_TWO, fmaf(tt, q, tt));
}

static inline float normal_of_bits(uint32_t u)
{
    const float v = (float)((u >> 8) & 0x7FFFFFu) * 0x1p-23f + 0x1p-24f;
    const float w = -log_unit((1.0f - v) * (1.0f + v));
    const float *c = central;
    float x = w - 2.5f, p, z;
    uint32_t bits;
    if (w >= 5.0f) {
        c = tail;
        x = sqrtf(w) - 3.0f;
    }
    p = c[0];
    for (int i = 1; i < 9; i++)
        p = fmaf(p, x, c[i]);
    z = (p * v) * SQRT_TWO;
    memcpy(&bits, &z, sizeof bits);
    bits ^= u & 0x80000000u;
    memcpy(&z, &bits, sizeof z);
    return z;
}

float eb_philox_normal_of_bits(uint32_t u)
{
    return normal_of_bits(u);
}

/* fmaf is one instruction where the CPU has FMA: a clone for x86-64-v3
 * (AVX2 and FMA) keeps it inline there; elsewhere it is libm's. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void eb_philox_normal_fill_portable(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                                    uint32_t c3)
{
    const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    for (size_t g = 0; g * 64 < n; g++)
        for (uint32_t lane = 0; lane < 16; lane++) {
            const uint32_t ctr[4] = {(uint32_t)(16 * g) + lane, c1, c2, c3};
            uint32_t words[4];
            eb_philox4x32_10(words, ctr, k);
            for (size_t w = 0; w < 4; w++) {
                const size_t i = 64 * g + 16 * w + lane;
                if (i < n)
                    out[i] = normal_of_bits(words[w]);
            }
        }
}

#if EB_PHILOX_HAVE_AVX512

#define PH_TARGET __attribute__((target("avx512f")))

/* (hi, lo) of the 32x32-bit products of 16 lanes by m */
PH_TARGET static inline void mulhilo(__m512i a, __m512i m, __m512i *hi, __m512i *lo)
{
    const __m512i even = _mm512_mul_epu32(a, m);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    *lo = _mm512_mullo_epi32(a, m);
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

PH_TARGET static inline __m512 poly9(const float *c, __m512 x)
{
    __m512 p = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 9; i++)
        p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(c[i]));
    return p;
}

/* eb_philox_normal_of_bits on 16 lanes, the same operations */
PH_TARGET static inline __m512 normals16(__m512i u)
{
    const __m512i m = _mm512_and_si512(_mm512_srli_epi32(u, 8), _mm512_set1_epi32(0x7FFFFF));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(m), _mm512_set1_ps(0x1p-23f)),
                                   _mm512_set1_ps(0x1p-24f));
    const __m512 y = _mm512_mul_ps(_mm512_sub_ps(one, v), _mm512_add_ps(one, v));
    __m512 mt = _mm512_getmant_ps(y, _MM_MANT_NORM_p5_1, _MM_MANT_SIGN_src);
    __m512 ef = _mm512_add_ps(_mm512_getexp_ps(y), one);
    const __mmask16 small = _mm512_cmp_ps_mask(mt, _mm512_set1_ps(SQRT_HALF), _CMP_LT_OQ);
    __m512 t, t2, q, tt, lg, w, x, p, z;
    __mmask16 far;
    mt = _mm512_mask_mul_ps(mt, small, mt, _mm512_set1_ps(2.0f));
    ef = _mm512_mask_sub_ps(ef, small, ef, one);
    t = _mm512_div_ps(_mm512_sub_ps(mt, one), _mm512_add_ps(mt, one));
    t2 = _mm512_mul_ps(t, t);
    q = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 9.0f), t2, _mm512_set1_ps(1.0f / 7.0f));
    q = _mm512_fmadd_ps(q, t2, _mm512_set1_ps(1.0f / 5.0f));
    q = _mm512_fmadd_ps(q, t2, _mm512_set1_ps(1.0f / 3.0f));
    q = _mm512_mul_ps(q, t2);
    tt = _mm512_add_ps(t, t);
    lg = _mm512_fmadd_ps(ef, _mm512_set1_ps(LN_TWO), _mm512_fmadd_ps(tt, q, tt));
    w = _mm512_castsi512_ps(
        _mm512_xor_si512(_mm512_castps_si512(lg), _mm512_set1_epi32((int)0x80000000u)));
    x = _mm512_sub_ps(w, _mm512_set1_ps(2.5f));
    p = poly9(central, x);
    far = _mm512_cmp_ps_mask(w, _mm512_set1_ps(5.0f), _CMP_GE_OQ);
    if (far) {
        const __m512 xt = _mm512_sub_ps(_mm512_sqrt_ps(w), _mm512_set1_ps(3.0f));
        p = _mm512_mask_blend_ps(far, p, poly9(tail, xt));
    }
    z = _mm512_mul_ps(_mm512_mul_ps(p, v), _mm512_set1_ps(SQRT_TWO));
    return _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(z), _mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u))));
}

PH_TARGET static void fill_avx512(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                                  uint32_t c3)
{
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i m0 = _mm512_set1_epi32((int)PH_M0), m1 = _mm512_set1_epi32((int)PH_M1);
    __m512i k0[PH_ROUNDS], k1[PH_ROUNDS];
    uint32_t a[PH_ROUNDS], b[PH_ROUNDS];
    round_keys(a, b, (uint32_t)key, (uint32_t)(key >> 32));
    for (int r = 0; r < PH_ROUNDS; r++) {
        k0[r] = _mm512_set1_epi32((int)a[r]);
        k1[r] = _mm512_set1_epi32((int)b[r]);
    }
    for (size_t g = 0; g * 64 < n; g++) {
        __m512i x0 = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)(16 * g)), lanes);
        __m512i x1 = _mm512_set1_epi32((int)c1), x2 = _mm512_set1_epi32((int)c2),
                x3 = _mm512_set1_epi32((int)c3);
        __m512i words[4];
        for (int r = 0; r < PH_ROUNDS; r++) {
            __m512i hi0, lo0, hi1, lo1;
            mulhilo(x0, m0, &hi0, &lo0);
            mulhilo(x2, m1, &hi1, &lo1);
            x0 = _mm512_xor_si512(_mm512_xor_si512(hi1, x1), k0[r]);
            x1 = lo1;
            x2 = _mm512_xor_si512(_mm512_xor_si512(hi0, x3), k1[r]);
            x3 = lo0;
        }
        words[0] = x0;
        words[1] = x1;
        words[2] = x2;
        words[3] = x3;
        for (size_t w = 0; w < 4; w++) {
            const size_t i = 64 * g + 16 * w;
            if (i >= n)
                break;
            if (n - i >= 16)
                _mm512_storeu_ps(out + i, normals16(words[w]));
            else
                _mm512_mask_storeu_ps(out + i, (__mmask16)((1u << (n - i)) - 1u),
                                      normals16(words[w]));
        }
    }
}

/* ---- AVX2 and FMA: 8 lanes, the same operations (frexp by bits as in
 * log_unit; blends for the masked steps) ---- */

#define PH_TARGET2 __attribute__((target("avx2,fma")))

PH_TARGET2 static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo)
{
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

PH_TARGET2 static inline __m256 poly9_8(const float *c, __m256 x)
{
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 9; i++)
        p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(c[i]));
    return p;
}

PH_TARGET2 static inline __m256 normals8(__m256i u)
{
    const __m256i m = _mm256_and_si256(_mm256_srli_epi32(u, 8), _mm256_set1_epi32(0x7FFFFF));
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(0x1p-23f)),
                                   _mm256_set1_ps(0x1p-24f));
    const __m256 y = _mm256_mul_ps(_mm256_sub_ps(one, v), _mm256_add_ps(one, v));
    const __m256i yb = _mm256_castps_si256(y);
    __m256 mt = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(yb, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F000000)));
    __m256 ef = _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_srli_epi32(yb, 23), _mm256_set1_epi32(126)));
    const __m256 small = _mm256_cmp_ps(mt, _mm256_set1_ps(SQRT_HALF), _CMP_LT_OQ);
    __m256 t, t2, q, tt, lg, w, x, p, z, far;
    mt = _mm256_blendv_ps(mt, _mm256_mul_ps(mt, _mm256_set1_ps(2.0f)), small);
    ef = _mm256_blendv_ps(ef, _mm256_sub_ps(ef, one), small);
    t = _mm256_div_ps(_mm256_sub_ps(mt, one), _mm256_add_ps(mt, one));
    t2 = _mm256_mul_ps(t, t);
    q = _mm256_fmadd_ps(_mm256_set1_ps(1.0f / 9.0f), t2, _mm256_set1_ps(1.0f / 7.0f));
    q = _mm256_fmadd_ps(q, t2, _mm256_set1_ps(1.0f / 5.0f));
    q = _mm256_fmadd_ps(q, t2, _mm256_set1_ps(1.0f / 3.0f));
    q = _mm256_mul_ps(q, t2);
    tt = _mm256_add_ps(t, t);
    lg = _mm256_fmadd_ps(ef, _mm256_set1_ps(LN_TWO), _mm256_fmadd_ps(tt, q, tt));
    w = _mm256_xor_ps(lg, _mm256_set1_ps(-0.0f));
    x = _mm256_sub_ps(w, _mm256_set1_ps(2.5f));
    p = poly9_8(central, x);
    far = _mm256_cmp_ps(w, _mm256_set1_ps(5.0f), _CMP_GE_OQ);
    if (_mm256_movemask_ps(far)) {
        const __m256 xt = _mm256_sub_ps(_mm256_sqrt_ps(w), _mm256_set1_ps(3.0f));
        p = _mm256_blendv_ps(p, poly9_8(tail, xt), far);
    }
    z = _mm256_mul_ps(_mm256_mul_ps(p, v), _mm256_set1_ps(SQRT_TWO));
    return _mm256_xor_ps(z, _mm256_castsi256_ps(_mm256_and_si256(
                                u, _mm256_set1_epi32((int)0x80000000u))));
}

PH_TARGET2 static void fill_avx2(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                                 uint32_t c3)
{
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_set1_epi32((int)PH_M0), m1 = _mm256_set1_epi32((int)PH_M1);
    __m256i k0[PH_ROUNDS], k1[PH_ROUNDS];
    uint32_t a[PH_ROUNDS], b[PH_ROUNDS];
    round_keys(a, b, (uint32_t)key, (uint32_t)(key >> 32));
    for (int r = 0; r < PH_ROUNDS; r++) {
        k0[r] = _mm256_set1_epi32((int)a[r]);
        k1[r] = _mm256_set1_epi32((int)b[r]);
    }
    for (size_t g = 0; g * 64 < n; g++)
        for (size_t h = 0; h < 2; h++) {
            __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)(16 * g + 8 * h)),
                                          lanes);
            __m256i x1 = _mm256_set1_epi32((int)c1), x2 = _mm256_set1_epi32((int)c2),
                    x3 = _mm256_set1_epi32((int)c3);
            __m256i words[4];
            for (int r = 0; r < PH_ROUNDS; r++) {
                __m256i hi0, lo0, hi1, lo1;
                mulhilo8(x0, m0, &hi0, &lo0);
                mulhilo8(x2, m1, &hi1, &lo1);
                x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), k0[r]);
                x1 = lo1;
                x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), k1[r]);
                x3 = lo0;
            }
            words[0] = x0;
            words[1] = x1;
            words[2] = x2;
            words[3] = x3;
            for (size_t w = 0; w < 4; w++) {
                const size_t i = 64 * g + 16 * w + 8 * h;
                float tmp[8];
                if (i >= n)
                    continue;
                if (n - i >= 8) {
                    _mm256_storeu_ps(out + i, normals8(words[w]));
                } else {
                    _mm256_storeu_ps(tmp, normals8(words[w]));
                    memcpy(out + i, tmp, (n - i) * sizeof *tmp);
                }
            }
        }
}

#endif

int eb_philox_fill_avx2(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2, uint32_t c3)
{
#if EB_PHILOX_HAVE_AVX512
    if (eb_cpu_has(EB_CPU_AVX2_FMA)) {
        fill_avx2(out, n, key, c1, c2, c3);
        return 1;
    }
#else
    (void)out;
    (void)n;
    (void)key;
    (void)c1;
    (void)c2;
    (void)c3;
#endif
    return 0;
}

int eb_philox_uses_avx512(void)
{
#if EB_PHILOX_HAVE_AVX512
    return eb_cpu_has(EB_CPU_AVX512);
#else
    return 0;
#endif
}

void eb_philox_normal_fill(float *out, size_t n, uint64_t key, uint32_t c1, uint32_t c2,
                           uint32_t c3)
{
#if EB_PHILOX_HAVE_AVX512
    if (eb_cpu_has(EB_CPU_AVX512)) {
        fill_avx512(out, n, key, c1, c2, c3);
        return;
    }
    if (eb_cpu_has(EB_CPU_AVX2_FMA)) {
        fill_avx2(out, n, key, c1, c2, c3);
        return;
    }
#endif
    eb_philox_normal_fill_portable(out, n, key, c1, c2, c3);
}
