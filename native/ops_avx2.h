/* Hand-vectorised AVX2 versions of the element-wise exp / erf work (GELU, attention softmax),
 * which the compiler does not vectorise from ops_impl.h (nearbyintf, the integer exponent
 * trick). Each lane performs exactly the operations of the scalar code in ops_impl.h, in the
 * same order, with no FMA contraction: results are bit-identical to the _ref build (tested in
 * tests/test_native.py::test_whole_forward_identical_across_kernels). */
#ifndef SP_OPS_AVX2_H
#define SP_OPS_AVX2_H
#include "sp_internal.h"
#if SP_X86
#include <immintrin.h>

/* 8 lanes of sp_exp (ops_impl.h): clamp, n = round-half-even(x log2 e), Cody-Waite reduction,
 * degree-6 polynomial, 2^n through the exponent field. */
SP_AVX2 static inline __m256 sp_exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.f), x); /* = x < -87 ? -87 : x */
    x = _mm256_min_ps(_mm256_set1_ps(88.f), x);  /* = x > 88 ? 88 : x */
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    r = _mm256_add_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), _mm256_set1_ps(1.f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* 8 lanes of sp_erf (Abramowitz & Stegun 7.1.26). */
SP_AVX2 static inline __m256 sp_erf8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 t = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(_mm256_set1_ps(0.3275911f), ax)));
    __m256 y = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(1.061405429f), t), _mm256_set1_ps(1.453152027f));
    y = _mm256_add_ps(_mm256_mul_ps(y, t), _mm256_set1_ps(1.421413741f));
    y = _mm256_sub_ps(_mm256_mul_ps(y, t), _mm256_set1_ps(0.284496736f));
    y = _mm256_add_ps(_mm256_mul_ps(y, t), _mm256_set1_ps(0.254829592f));
    y = _mm256_mul_ps(y, t);
    y = _mm256_sub_ps(one, _mm256_mul_ps(y, sp_exp8(_mm256_mul_ps(_mm256_xor_ps(ax, sign), ax))));
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(y, _mm256_xor_ps(y, sign), neg);
}

/* x <- 0.5 x (1 + erf(x / √2)); the tail (n % 8) runs the scalar code of the same build. */
SP_AVX2 static void gelu_inplace_avx2(float *x, size_t n) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f), rs2 = _mm256_set1_ps(0.70710678118654752f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, sp_erf8(_mm256_mul_ps(v, rs2)))));
    }
    for (; i < n; i++) x[i] = 0.5f * x[i] * (1.f + sp_erf_avx2(x[i] * 0.70710678118654752f));
}

/* Rows padded to a multiple of 8 floats for the attention scratch. */
#define SP_PAD8(n) (((n) + 7) / 8 * 8)

/* attention_seq (ops_impl.h) vectorised: scores of two queries against 32 keys at a time (the
 * transposed keys loaded once for both), exp over 8 lanes, the context of a query over 32 head
 * dimensions at a time, accumulators in registers; every sum keeps the scalar code's order (over
 * d for a score, over j for a context value, the softmax denominator left to right).
 * Requires D % 8 == 0. scratch: (T * Tp + D * Tp) floats, Tp = SP_PAD8(T). */
SP_AVX2 static inline void sp_scores(const float *const qs[2], int32_t nq, const float *kt, int32_t D, int32_t Tp, float scale,
                                     float *const ps[2]) {
    for (int32_t j0 = 0; j0 < Tp; j0 += 32) {
        const int32_t nc = (Tp - j0) / 8 < 4 ? (Tp - j0) / 8 : 4;
        __m256 a[2][4];
        for (int32_t r = 0; r < 2; r++)
            for (int32_t c = 0; c < 4; c++) a[r][c] = _mm256_setzero_ps();
        for (int32_t d = 0; d < D; d++) {
            const float *kd = kt + (size_t)d * Tp + j0;
            const __m256 q0 = _mm256_set1_ps(qs[0][d] * scale), q1 = _mm256_set1_ps(qs[nq - 1][d] * scale);
            for (int32_t c = 0; c < 4; c++) {
                if (c >= nc) break;
                const __m256 kv = _mm256_loadu_ps(kd + 8 * c);
                a[0][c] = _mm256_add_ps(a[0][c], _mm256_mul_ps(q0, kv));
                a[1][c] = _mm256_add_ps(a[1][c], _mm256_mul_ps(q1, kv));
            }
        }
        for (int32_t c = 0; c < nc; c++) {
            _mm256_storeu_ps(ps[0] + j0 + 8 * c, a[0][c]);
            if (nq > 1) _mm256_storeu_ps(ps[1] + j0 + 8 * c, a[1][c]);
        }
    }
}

SP_AVX2 static void attention_seq_avx2(const float *q, const float *k, const float *v, int32_t T, int32_t C, int32_t H,
                                       int32_t h0, int32_t h1, float *ctx, float *scratch) {
    const int32_t D = C / H, Tp = SP_PAD8(T);
    const float scale = 1.f / sqrtf((float)D);
    float *p = scratch;                   /* (T, Tp) */
    float *kt = scratch + (size_t)T * Tp; /* (D, Tp): K of this head transposed, zero padded */
    for (int32_t h = h0; h < h1; h++) {
        for (int32_t d = 0; d < D; d++) {
            float *row = kt + (size_t)d * Tp;
            for (int32_t j = 0; j < T; j++) row[j] = k[(size_t)j * C + h * D + d];
            for (int32_t j = T; j < Tp; j++) row[j] = 0.f;
        }
        for (int32_t i = 0; i < T; i += 2) {
            const int32_t nq = T - i < 2 ? T - i : 2;
            const float *qs[2] = {q + (size_t)i * C + h * D, q + (size_t)(i + nq - 1) * C + h * D};
            float *const ps[2] = {p + (size_t)i * Tp, p + (size_t)(i + nq - 1) * Tp};
            sp_scores(qs, nq, kt, D, Tp, scale, ps);
        }
        for (int32_t i = 0; i < T; i++) {
            float *pi = p + (size_t)i * Tp;
            float mx = pi[0];
            for (int32_t j = 1; j < T; j++) mx = pi[j] > mx ? pi[j] : mx;
            const __m256 vmx = _mm256_set1_ps(mx);
            for (int32_t j0 = 0; j0 < Tp; j0 += 8) _mm256_storeu_ps(pi + j0, sp_exp8(_mm256_sub_ps(_mm256_loadu_ps(pi + j0), vmx)));
            float sum = 0.f;
            for (int32_t j = 0; j < T; j++) sum += pi[j];
            const float inv = 1.f / sum;
            float *ci = ctx + (size_t)i * C + h * D;
            for (int32_t d0 = 0; d0 < D; d0 += 32) {
                const int32_t nc = (D - d0) / 8 < 4 ? (D - d0) / 8 : 4;
                __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
                for (int32_t j = 0; j < T; j++) {
                    const __m256 pj = _mm256_set1_ps(pi[j] * inv);
                    const float *vj = v + (size_t)j * C + h * D + d0;
                    for (int32_t c = 0; c < 4; c++) {
                        if (c >= nc) break;
                        a[c] = _mm256_add_ps(a[c], _mm256_mul_ps(pj, _mm256_loadu_ps(vj + 8 * c)));
                    }
                }
                for (int32_t c = 0; c < nc; c++) _mm256_storeu_ps(ci + d0 + 8 * c, a[c]);
            }
        }
    }
}
#endif
#endif
