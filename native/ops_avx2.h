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

/* sp_erf (ops_impl.h) on the lanes of a vector (type T, intrinsics prefix P: _mm256 or _mm512):
 * the same clamps, FMAs (fmaf in the scalar code) and division; and GELU, 0.5 x (1 + erf(x / √2))
 * (also applied in the linear kernels' epilogues). One body for both widths. */
#define SP_DEFINE_ERF_GELU(W, T, P, ATTR)                                                                                        \
    ATTR static inline T sp_erf##W(T x) {                                                                                        \
        x = P##_max_ps(P##_set1_ps(-4.1f), x);                                                                                   \
        x = P##_min_ps(P##_set1_ps(4.1f), x);                                                                                    \
        const T u = P##_mul_ps(x, x);                                                                                            \
        T p = P##_fmadd_ps(P##_set1_ps(SP_ERF_P5), u, P##_set1_ps(SP_ERF_P4));                                                   \
        p = P##_fmadd_ps(p, u, P##_set1_ps(SP_ERF_P3));                                                                          \
        p = P##_fmadd_ps(p, u, P##_set1_ps(SP_ERF_P2));                                                                          \
        p = P##_fmadd_ps(p, u, P##_set1_ps(SP_ERF_P1));                                                                          \
        p = P##_fmadd_ps(p, u, P##_set1_ps(SP_ERF_P0));                                                                          \
        T q = P##_fmadd_ps(P##_set1_ps(SP_ERF_Q5), u, P##_set1_ps(SP_ERF_Q4));                                                   \
        q = P##_fmadd_ps(q, u, P##_set1_ps(SP_ERF_Q3));                                                                          \
        q = P##_fmadd_ps(q, u, P##_set1_ps(SP_ERF_Q2));                                                                          \
        q = P##_fmadd_ps(q, u, P##_set1_ps(SP_ERF_Q1));                                                                          \
        q = P##_fmadd_ps(q, u, P##_set1_ps(1.f));                                                                                \
        T y = P##_div_ps(P##_mul_ps(x, p), q);                                                                                   \
        y = P##_max_ps(P##_set1_ps(-1.f), y);                                                                                    \
        return P##_min_ps(P##_set1_ps(1.f), y);                                                                                  \
    }                                                                                                                            \
    ATTR static inline T sp_gelu##W(T v) {                                                                                       \
        const T half = P##_set1_ps(0.5f), one = P##_set1_ps(1.f), rs2 = P##_set1_ps(0.70710678118654752f);                      \
        return P##_mul_ps(P##_mul_ps(half, v), P##_add_ps(one, sp_erf##W(P##_mul_ps(v, rs2))));                                  \
    }
SP_DEFINE_ERF_GELU(8, __m256, _mm256, SP_AVX2)
SP_DEFINE_ERF_GELU(16, __m512, _mm512, SP_AVX512)

/* x <- 0.5 x (1 + erf(x / √2)); the tail (n % 8) runs the scalar code of the same build. */
SP_AVX2 static void gelu_inplace_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sp_gelu8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = 0.5f * x[i] * (1.f + sp_erf_avx2(x[i] * 0.70710678118654752f));
}

/* out[j] = column j of the 8x8 block given as rows r[0..7] (in place). */
SP_AVX2 static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* Rows padded to a multiple of 8 floats for the attention scratch. */
#define SP_PAD8(n) (((n) + 7) / 8 * 8)

/* attention_seq (ops_impl.h) vectorised, the same operations per lane: scores of two queries
 * against 32 keys at a time (the transposed keys loaded once for both), FMA chains over d; the
 * row maximum over 8 lanes (padding lanes excluded in registers); exp over 8 lanes, padding zeroed, the sum in
 * the sp_sum8 order (lane j % 8, lanes combined pairwise); the context of two queries at once
 * (each value of V loaded once for both), FMA chains over j, then the 1 / sum factor.
 * Requires D % 8 == 0. scratch: (T * Tp + D * Tp + T) floats, Tp = SP_PAD8(T). */
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
                a[0][c] = _mm256_fmadd_ps(q0, kv, a[0][c]);
                a[1][c] = _mm256_fmadd_ps(q1, kv, a[1][c]);
            }
        }
        for (int32_t c = 0; c < nc; c++) {
            _mm256_storeu_ps(ps[0] + j0 + 8 * c, a[0][c]);
            if (nq > 1) _mm256_storeu_ps(ps[1] + j0 + 8 * c, a[1][c]);
        }
    }
}

/* Row i of the scores -> unnormalised softmax weights in place (padding 0); returns 1 / sum.
 * Both reductions stay in registers: the maximum over the real lanes (the last chunk's padding
 * lanes blended to -inf), and the sum in the sp_sum8 order -- lane j % 8 accumulated chunk by
 * chunk, then ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), which the two in-lane shuffles
 * and the cross-lane add form exactly (float addition is commutative). */
SP_AVX2 static inline float sp_softmax_row(float *pi, int32_t T, int32_t Tp) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 last = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(T - (Tp - 8)), lane)); /* real lanes */
    __m256 m8 = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_loadu_ps(pi + Tp - 8), last);
    for (int32_t j0 = 0; j0 < Tp - 8; j0 += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(pi + j0));
    m8 = _mm256_max_ps(m8, _mm256_permute2f128_ps(m8, m8, 1));
    m8 = _mm256_max_ps(m8, _mm256_shuffle_ps(m8, m8, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m256 vmx = _mm256_max_ps(m8, _mm256_shuffle_ps(m8, m8, _MM_SHUFFLE(2, 3, 0, 1)));
    __m256 s8 = _mm256_setzero_ps();
    for (int32_t j0 = 0; j0 < Tp; j0 += 8) {
        __m256 e = sp_exp8(_mm256_sub_ps(_mm256_loadu_ps(pi + j0), vmx));
        if (j0 + 8 == Tp) e = _mm256_and_ps(e, last); /* padding lanes to exactly 0 */
        _mm256_storeu_ps(pi + j0, e);
        s8 = _mm256_add_ps(s8, e);
    }
    s8 = _mm256_add_ps(s8, _mm256_shuffle_ps(s8, s8, _MM_SHUFFLE(2, 3, 0, 1)));
    s8 = _mm256_add_ps(s8, _mm256_shuffle_ps(s8, s8, _MM_SHUFFLE(1, 0, 3, 2)));
    s8 = _mm256_add_ps(s8, _mm256_permute2f128_ps(s8, s8, 1));
    return 1.f / _mm256_cvtss_f32(s8);
}

/* The context of one head: ctx rows i (stride C, this head's D columns) = (p row i . V) * inv[i], two
 * queries at a time (each value of V loaded once for both), FMA chains over j. vh: V of this head
 * (token j at vh + j * ld). */
SP_AVX2 static void sp_context_avx2(const float *p, int32_t T, int32_t Tp, const float *vh, size_t ld, int32_t D, const float *inv,
                                    float *ch, int32_t C) {
    for (int32_t i = 0; i < T; i += 2) {
        const int32_t nq = T - i < 2 ? T - i : 2;
        const float *p0 = p + (size_t)i * Tp, *p1 = p + (size_t)(i + nq - 1) * Tp;
        for (int32_t d0 = 0; d0 < D; d0 += 32) {
            const int32_t nc = (D - d0) / 8 < 4 ? (D - d0) / 8 : 4;
            __m256 a[2][4];
            for (int32_t r = 0; r < 2; r++)
                for (int32_t c = 0; c < 4; c++) a[r][c] = _mm256_setzero_ps();
            for (int32_t j = 0; j < T; j++) {
                const __m256 w0 = _mm256_set1_ps(p0[j]), w1 = _mm256_set1_ps(p1[j]);
                const float *vj = vh + (size_t)j * ld + d0;
                for (int32_t c = 0; c < 4; c++) {
                    if (c >= nc) break;
                    const __m256 vv = _mm256_loadu_ps(vj + 8 * c);
                    a[0][c] = _mm256_fmadd_ps(w0, vv, a[0][c]);
                    a[1][c] = _mm256_fmadd_ps(w1, vv, a[1][c]);
                }
            }
            for (int32_t r = 0; r < nq; r++) {
                float *ci = ch + (size_t)(i + r) * C + d0;
                const __m256 vi = _mm256_set1_ps(inv[i + r]);
                for (int32_t c = 0; c < nc; c++) _mm256_storeu_ps(ci + 8 * c, _mm256_mul_ps(a[r][c], vi));
            }
        }
    }
}

/* The two matrix products of a head in 512-bit registers (AVX-512 CPUs; D % 16 == 0): the same FMA
 * chain per score (over d) and per context value (over j) as the AVX2 code, each lane on its own,
 * so the results are bit-identical; four queries at a time against 32 keys (scores) or 32 columns
 * (context), the last partial chunk of keys under a mask. */
SP_AVX512 static void sp_scores_512(const float *qh, size_t ld, int32_t T, const float *kt, int32_t D, int32_t Tp, float scale, float *p) {
    for (int32_t i = 0; i < T; i += 4) {
        const int32_t nq = T - i < 4 ? T - i : 4;
        const float *qs[4];
        for (int32_t r = 0; r < 4; r++) qs[r] = qh + (size_t)(i + (r < nq ? r : nq - 1)) * ld;
        for (int32_t j0 = 0; j0 < Tp; j0 += 32) {
            const int32_t left = Tp - j0; /* a multiple of 8 */
            const __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            const __mmask16 m1 = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
            __m512 a[4][2];
            for (int32_t r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
            for (int32_t d = 0; d < D; d++) {
                const float *kd = kt + (size_t)d * Tp + j0;
                const __m512 k0 = _mm512_maskz_loadu_ps(m0, kd), k1 = _mm512_maskz_loadu_ps(m1, kd + 16);
                for (int32_t r = 0; r < 4; r++) {
                    const __m512 qv = _mm512_set1_ps(qs[r][d] * scale);
                    a[r][0] = _mm512_fmadd_ps(qv, k0, a[r][0]);
                    a[r][1] = _mm512_fmadd_ps(qv, k1, a[r][1]);
                }
            }
            for (int32_t r = 0; r < nq; r++) {
                float *pr = p + (size_t)(i + r) * Tp + j0;
                _mm512_mask_storeu_ps(pr, m0, a[r][0]);
                _mm512_mask_storeu_ps(pr + 16, m1, a[r][1]);
            }
        }
    }
}

SP_AVX512 static void sp_context_512(const float *p, int32_t T, int32_t Tp, const float *vh, size_t ld, int32_t D, const float *inv,
                                     float *ch, int32_t C) {
    for (int32_t i = 0; i < T; i += 4) {
        const int32_t nq = T - i < 4 ? T - i : 4;
        const float *pr[4];
        for (int32_t r = 0; r < 4; r++) pr[r] = p + (size_t)(i + (r < nq ? r : nq - 1)) * Tp;
        for (int32_t d0 = 0; d0 < D; d0 += 32) {
            const int32_t nc = D - d0 >= 32 ? 2 : 1;
            __m512 a[4][2];
            for (int32_t r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
            for (int32_t j = 0; j < T; j++) {
                const float *vj = vh + (size_t)j * ld + d0;
                const __m512 v0 = _mm512_loadu_ps(vj), v1 = nc > 1 ? _mm512_loadu_ps(vj + 16) : _mm512_setzero_ps();
                for (int32_t r = 0; r < 4; r++) {
                    const __m512 w = _mm512_set1_ps(pr[r][j]);
                    a[r][0] = _mm512_fmadd_ps(w, v0, a[r][0]);
                    a[r][1] = _mm512_fmadd_ps(w, v1, a[r][1]);
                }
            }
            for (int32_t r = 0; r < nq; r++) {
                float *ci = ch + (size_t)(i + r) * C + d0;
                const __m512 vi = _mm512_set1_ps(inv[i + r]);
                _mm512_storeu_ps(ci, _mm512_mul_ps(a[r][0], vi));
                if (nc > 1) _mm512_storeu_ps(ci + 16, _mm512_mul_ps(a[r][1], vi));
            }
        }
    }
}

/* One head at a time: K transposed, every query's scores, every row's softmax (independent rows
 * back to back, so that their exp chains overlap), then the context. w512: the two products in
 * 512-bit registers (sp_scores_512; an AVX-512 CPU and D % 16 == 0). */
SP_AVX2 static void attention_seq_avx2(const float *q, const float *k, const float *v, size_t hs, size_t ld, int32_t T, int32_t C,
                                       int32_t H, int32_t h0, int32_t h1, float *ctx, float *scratch, int w512) {
    const int32_t D = C / H, Tp = SP_PAD8(T);
    const float scale = 1.f / sqrtf((float)D);
    float *p = scratch;                     /* (T, Tp) */
    float *kt = scratch + (size_t)T * Tp;   /* (D, Tp): K of this head transposed, zero padded */
    float *inv = kt + (size_t)D * Tp;       /* (T): 1 / each row's sum */
    for (int32_t h = h0; h < h1; h++) {
        /* K of this head transposed: 8x8 blocks through registers, the last keys (T % 8) by hand */
        const int32_t T8 = T / 8 * 8;
        for (int32_t j0 = 0; j0 < T8; j0 += 8)
            for (int32_t d0 = 0; d0 < D; d0 += 8) {
                __m256 r8[8];
                for (int32_t r = 0; r < 8; r++) r8[r] = _mm256_loadu_ps(k + h * hs + (size_t)(j0 + r) * ld + d0);
                transpose8(r8);
                for (int32_t r = 0; r < 8; r++) _mm256_storeu_ps(kt + (size_t)(d0 + r) * Tp + j0, r8[r]);
            }
        for (int32_t d = 0; d < D; d++) {
            float *row = kt + (size_t)d * Tp;
            for (int32_t j = T8; j < T; j++) row[j] = k[h * hs + (size_t)j * ld + d];
            for (int32_t j = T; j < Tp; j++) row[j] = 0.f;
        }
        if (w512) {
            sp_scores_512(q + h * hs, ld, T, kt, D, Tp, scale, p);
        } else {
            for (int32_t i = 0; i < T; i += 2) {
                const int32_t nq = T - i < 2 ? T - i : 2;
                const float *qs[2] = {q + h * hs + (size_t)i * ld, q + h * hs + (size_t)(i + nq - 1) * ld};
                float *const ps[2] = {p + (size_t)i * Tp, p + (size_t)(i + nq - 1) * Tp};
                sp_scores(qs, nq, kt, D, Tp, scale, ps);
            }
        }
        for (int32_t i = 0; i < T; i++) inv[i] = sp_softmax_row(p + (size_t)i * Tp, T, Tp);
        if (w512) sp_context_512(p, T, Tp, v + h * hs, ld, D, inv, ctx + h * D, C);
        else sp_context_avx2(p, T, Tp, v + h * hs, ld, D, inv, ctx + h * D, C);
    }
}
#endif
#endif
