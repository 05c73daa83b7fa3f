/* Sparse INT8 linear kernels (4-block CSR) and per-token quantisation: scalar reference + AVX2. */
#ifndef SP_KERNELS_H
#define SP_KERNELS_H
#include "sp_internal.h"
#include "ops.h" /* sp_gelu8 and gelu_inplace_ref: GELU fused into the epilogue */
#if SP_X86
#include <immintrin.h>
#endif

/* q[c] = round-half-even(x[c] / s) clamped to -127..127, for c in c0 .. C-1. */
static inline void quantize_span(const float *x, int32_t c0, int32_t C, float s, int8_t *q) {
    for (int32_t c = c0; c < C; c++) {
        float v = nearbyintf(x[c] / s);
        v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
        q[c] = (int8_t)v;
    }
}

/* x: (C) -> q: (C) int8, returns the scale s = max|x| * fl32(1/127) (0 for an all-zero row).
 * q = round-half-even(x / s), the rounding JAX's jnp.round uses. */
static float quantize_row(const float *x, int32_t C, int8_t *q) {
    float amax = 0.f;
    for (int32_t c = 0; c < C; c++) {
        float a = fabsf(x[c]);
        amax = a > amax ? a : amax;
    }
    if (amax == 0.f) {
        memset(q, 0, (size_t)C);
        return 0.f;
    }
    float s = amax * (1.0f / 127.0f); /* a product, as in runtime/format.py: no division by a constant */
    quantize_span(x, 0, C, s, q);
    return s;
}

#if SP_X86
/* AVX2 version of quantize_row, bit-identical: same max, same product scale, round-half-even
 * (vroundps), saturating packs. The quotient x / s is taken as x * fl(1/s), which is within
 * |x/s| * 2^-23 <= 1.6e-5 of it (|x/s| <= 127.5); the two round alike unless x / s lies that close
 * to a half-integer, so a run of 32 values one of which has a product within 4e-5 of a
 * half-integer (|y - round(y)| > 0.5 - 4e-5) is divided exactly instead (about one run in 400; a
 * division costs ~5 cycles per 8 values, the product one). For s normal (amax >= 1e-30) |x / s|
 * <= 127 * (1 + 2^-22), so round(x / s) is within -127..127 and the reference's clamp never acts;
 * a smaller amax (s subnormal, x / s possibly far larger) takes the reference's code.
 * amax: max |x| (quantize_row's first loop; the LayerNorm below computes it on its way). */
SP_AVX2 static float quantize_row_amax_avx2(const float *x, int32_t C, float amax, int8_t *q) {
    if (amax == 0.f) {
        memset(q, 0, (size_t)C);
        return 0.f;
    }
    const float s = amax * (1.0f / 127.0f); /* a product, as in runtime/format.py: no division by a constant */
    int32_t c = 0;
    if (amax >= 1e-30f) {
        const __m256 vs = _mm256_set1_ps(s), vr = _mm256_set1_ps(1.f / s), near = _mm256_set1_ps(0.5f - 4e-5f);
        const __m256 signmask = _mm256_set1_ps(-0.0f);
        for (; c + 32 <= C; c += 32) {
            __m256 v[4], flag = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + c + 8 * k), vr);
                v[k] = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                flag = _mm256_or_ps(flag, _mm256_cmp_ps(_mm256_andnot_ps(signmask, _mm256_sub_ps(y, v[k])), near, _CMP_GT_OQ));
            }
            if (_mm256_movemask_ps(flag))
                for (int k = 0; k < 4; k++)
                    v[k] = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + c + 8 * k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256i p01 = _mm256_packs_epi32(_mm256_cvtps_epi32(v[0]), _mm256_cvtps_epi32(v[1])); /* lanes interleaved: fixed below */
            __m256i p23 = _mm256_packs_epi32(_mm256_cvtps_epi32(v[2]), _mm256_cvtps_epi32(v[3]));
            __m256i b = _mm256_packs_epi16(p01, p23);
            b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + c), b);
        }
    }
    quantize_span(x, c, C, s, q);
    return s;
}

/* max |x| over C values in 512-bit registers (a max: any order gives the same). */
SP_AVX512 static float amax_512(const float *x, int32_t C) {
    __m512 m4[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int32_t c = 0;
    for (; c + 64 <= C; c += 64) /* four chains: the max's latency, not its throughput, bounded one chain */
        for (int k = 0; k < 4; k++) m4[k] = _mm512_max_ps(m4[k], _mm512_abs_ps(_mm512_loadu_ps(x + c + 16 * k)));
    __m512 vmax = _mm512_max_ps(_mm512_max_ps(m4[0], m4[1]), _mm512_max_ps(m4[2], m4[3]));
    for (; c + 16 <= C; c += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + c)));
    if (c < C) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps((__mmask16)((1u << (C - c)) - 1), x + c)));
    return _mm512_reduce_max_ps(vmax);
}

/* quantize_row_amax_avx2 in 512-bit registers, runs of 64 values (the same margin per value, so
 * the same result whatever the run length), the rest by quantize_row_amax_avx2. */
SP_AVX512 static float quantize_row_amax_512(const float *x, int32_t C, float amax, int8_t *q) {
    if (amax < 1e-30f) return quantize_row_amax_avx2(x, C, amax, q); /* 0, or the reference's tiny-scale path */
    const float s = amax * (1.0f / 127.0f);
    const __m512 vs = _mm512_set1_ps(s), vr = _mm512_set1_ps(1.f / s), near = _mm512_set1_ps(0.5f - 4e-5f);
    int32_t c = 0;
    for (; c + 64 <= C; c += 64) {
        __m512 v[4];
        __mmask16 flag = 0;
        for (int k = 0; k < 4; k++) {
            const __m512 y = _mm512_mul_ps(_mm512_loadu_ps(x + c + 16 * k), vr);
            v[k] = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            flag |= _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(y, v[k])), near, _CMP_GT_OQ);
        }
        if (flag)
            for (int k = 0; k < 4; k++)
                v[k] = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + c + 16 * k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        for (int k = 0; k < 4; k++) _mm_storeu_si128((__m128i *)(q + c + 16 * k), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v[k])));
    }
    if (c < C) (void)quantize_row_amax_avx2(x + c, C - c, amax, q + c);
    return s;
}

/* The SIMD quantiser of a row whose max |x| is known; w512: the 512-bit one (AVX-512 CPUs). */
SP_AVX2 static inline float quantize_row_amax_simd(const float *x, int32_t C, float amax, int w512, int8_t *q) {
    return w512 ? quantize_row_amax_512(x, C, amax, q) : quantize_row_amax_avx2(x, C, amax, q);
}

/* quantize_row: max |x|, then the SIMD quantiser; w512: the 512-bit versions (AVX-512 CPUs). */
SP_AVX2 static float quantize_row_simd(const float *x, int32_t C, int w512, int8_t *q) {
    if (w512) return quantize_row_amax_512(x, C, amax_512(x, C), q);
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 m4[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int32_t c = 0;
    for (; c + 32 <= C; c += 32)
        for (int k = 0; k < 4; k++) m4[k] = _mm256_max_ps(m4[k], _mm256_andnot_ps(signmask, _mm256_loadu_ps(x + c + 8 * k)));
    __m256 vmax = _mm256_max_ps(_mm256_max_ps(m4[0], m4[1]), _mm256_max_ps(m4[2], m4[3]));
    for (; c + 8 <= C; c += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(signmask, _mm256_loadu_ps(x + c)));
    float buf[8], amax = 0.f;
    _mm256_storeu_ps(buf, vmax);
    for (int i = 0; i < 8; i++) amax = buf[i] > amax ? buf[i] : amax;
    for (; c < C; c++) {
        float a = fabsf(x[c]);
        amax = a > amax ? a : amax;
    }
    return quantize_row_amax_avx2(x, C, amax, q);
}

/* layernorm_add (ops_impl.h; the scalar build's) of R rows (R <= 4, a constant at each call) by hand,
 * each row with the same operations in the same order (its sums in 8 lanes, element c in lane c % 8,
 * the tail into lanes 0.., combined pairwise; no FMA), in three passes instead of four, the last of
 * which also gives max |out| (amax[i]) for quantize_row_amax_avx2. The rows go side by side: each
 * sum is a chain of dependent additions, and R chains overlap where one would wait on its latency.
 * x[i] + r[i] (r NULL: x[i] alone) -> o[i] (o[i] may be x[i]). */
SP_AVX2 static inline __attribute__((always_inline)) void layernorm_rows_avx2(const float *const *x, const float *const *r, const int R, int32_t C,
                                                                            const float *gamma, const float *beta, float eps, float *const *o,
                                                                            float *amax) {
    const int32_t C8 = C / 8 * 8;
    __m256 acc[4];
    float mean[4], inv[4];
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    for (int32_t c = 0; c < C8; c += 8)
        for (int i = 0; i < R; i++) {
            __m256 v = _mm256_loadu_ps(x[i] + c);
            if (r) v = _mm256_add_ps(v, _mm256_loadu_ps(r[i] + c));
            _mm256_storeu_ps(o[i] + c, v);
            acc[i] = _mm256_add_ps(acc[i], v);
        }
    for (int i = 0; i < R; i++) {
        float a[8];
        _mm256_storeu_ps(a, acc[i]);
        for (int32_t c = C8, k = 0; c < C; c++, k++) a[k] += (o[i][c] = x[i][c] + (r ? r[i][c] : 0.f));
        mean[i] = sp_lanes8(a) / (float)C;
        acc[i] = _mm256_setzero_ps();
    }
    for (int32_t c = 0; c < C8; c += 8)
        for (int i = 0; i < R; i++) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(o[i] + c), _mm256_set1_ps(mean[i]));
            acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(d, d));
        }
    for (int i = 0; i < R; i++) {
        float a[8];
        _mm256_storeu_ps(a, acc[i]);
        for (int32_t c = C8, k = 0; c < C; c++, k++) {
            const float d = o[i][c] - mean[i];
            a[k] += d * d;
        }
        inv[i] = 1.f / sqrtf(sp_lanes8(a) / (float)C + eps);
        acc[i] = _mm256_setzero_ps(); /* now max |out| */
    }
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    for (int32_t c = 0; c < C8; c += 8) {
        const __m256 g = _mm256_loadu_ps(gamma + c), b = _mm256_loadu_ps(beta + c);
        for (int i = 0; i < R; i++) {
            const __m256 v = _mm256_add_ps(
                _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(o[i] + c), _mm256_set1_ps(mean[i])), _mm256_set1_ps(inv[i])), g), b);
            _mm256_storeu_ps(o[i] + c, v);
            acc[i] = _mm256_max_ps(acc[i], _mm256_andnot_ps(signmask, v));
        }
    }
    for (int i = 0; i < R; i++) {
        float a[8], m = 0.f;
        _mm256_storeu_ps(a, acc[i]);
        for (int k = 0; k < 8; k++) m = a[k] > m ? a[k] : m;
        for (int32_t c = C8; c < C; c++) {
            o[i][c] = (o[i][c] - mean[i]) * inv[i] * gamma[c] + beta[c];
            const float v = fabsf(o[i][c]);
            m = v > m ? v : m;
        }
        amax[i] = m;
    }
}

/* layernorm_rows_avx2 on n rows (any n), four at a time. */
SP_AVX2 static void layernorm_n_avx2(const float *const *x, const float *const *r, int n, int32_t C, const float *gamma, const float *beta,
                                     float eps, float *const *o, float *amax) {
    for (int i = 0; i < n; i += 4) {
        const float *const *rr = r ? r + i : NULL;
        switch (n - i) {
        case 1: layernorm_rows_avx2(x + i, rr, 1, C, gamma, beta, eps, o + i, amax + i); break;
        case 2: layernorm_rows_avx2(x + i, rr, 2, C, gamma, beta, eps, o + i, amax + i); break;
        case 3: layernorm_rows_avx2(x + i, rr, 3, C, gamma, beta, eps, o + i, amax + i); break;
        default: layernorm_rows_avx2(x + i, rr, 4, C, gamma, beta, eps, o + i, amax + i); break;
        }
    }
}
#endif

/* Where output row o of token t goes: y in L->hd's layout for N tokens (sp_lin). */
static inline float *lin_out(const sp_lin *L, float *y, int32_t N, int32_t t, int32_t o) {
    return y + (size_t)(o / L->hd) * N * L->hd + (size_t)t * L->hd + o % L->hd;
}

/* Scalar reference. xq: (T, in), xs: (T), y: N tokens in L->hd's layout; rows o0 .. o1-1 of tokens t0 .. t1-1. */
static void lin_scalar(const sp_lin *L, const int8_t *xq, const float *xs, int32_t t0, int32_t t1, int32_t o0, int32_t o1,
                       int gelu, float *y, int32_t N) {
    for (int32_t t = t0; t < t1; t++) {
        const int8_t *x = xq + (size_t)t * L->in;
        for (int32_t o = o0; o < o1; o++) {
            int32_t acc = 0;
            for (int32_t b = L->row_ptr[o]; b < L->row_ptr[o + 1]; b++) {
                const int8_t *w = L->w8 + (size_t)b * 4;
                const int8_t *xx = x + (size_t)L->col_idx[b] * 4;
                acc += w[0] * xx[0] + w[1] * xx[1] + w[2] * xx[2] + w[3] * xx[3];
            }
            float *yo = lin_out(L, y, N, t, o);
            *yo = xs[t] * L->scale[o] * (float)acc + L->bias[o];
            if (gelu) gelu_inplace_ref(yo, 1);
        }
    }
}

#if SP_X86
/* GELU on the epilogue's results of a row group (rows 0 .. ng-1), after the accumulation loops so
 * that its constants never compete with the accumulators for registers. */
SP_AVX2 static inline void gelu_rows8(__m256 res[SP_TILE / 8][8], int32_t ng) {
    for (int32_t r = 0; r < ng; r++)
        for (int32_t m = 0; m < SP_TILE / 8; m++) res[m][r] = sp_gelu8(res[m][r]);
}

/* res[m][r]: rows r = 0..7 (ng valid) of tokens 8m .. 8m+7 -> y (token j's 8 rows at y + j * ld):
 * transposed in registers, then one 8-float store per token. */
SP_AVX2 static inline void store_rows8(__m256 res[SP_TILE / 8][8], int32_t nt, int32_t ng, float *y, int32_t ld) {
    for (int32_t m = 0; m < SP_TILE / 8; m++) transpose8(res[m]); /* res[m][j] = token 8m+j */
    for (int32_t j = 0; j < nt; j++) {
        const __m256 v = res[j / 8][j % 8];
        float *dst = y + (size_t)j * ld;
        if (ng == 8) {
            _mm256_storeu_ps(dst, v);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, v);
            for (int32_t r = 0; r < ng; r++) dst[r] = tmp[r];
        }
    }
}

/* The output lines rows og .. og+15 of tokens t0 .. t0+nt-1 will be stored to (hd a multiple of 8,
 * so 16 rows from a multiple of 16 are one 64-byte line per token), fetched into L1 while the
 * current 8 rows are computed: the 8-float stores of store_rows8 then hit lines already present
 * (measured: without it, the stores took ~9% of the AVX2 linears' time). */
SP_AVX2 static inline void prefetch_out16(const sp_lin *L, float *y, int32_t N, int32_t t0, int32_t nt, int32_t og) {
    const float *p = lin_out(L, y, N, t0, og);
    for (int32_t j = 0; j < nt; j++, p += L->hd) _mm_prefetch((const char *)p, _MM_HINT_T0);
}

/* AVX2, exact. vpmaddubsw multiplies unsigned by signed bytes and adds each pair of products into
 * int16 *with saturation*; vpmaddwd by 1 then adds a token's two pairs into its int32 lane.
 * Plain blocks (each pair's positive weights and its negative weights' magnitudes sum to <= 128,
 * pair_bounds in sparsepulse.c; the first of each row, copy_linear): the tile's unsigned bytes
 * (activation + 128, 1..255) times the signed weights, a pair sum within +-255 * 128 = 32,640,
 * never saturated; minus 128 * the plain blocks' weight sum (wsum_plain). The row's first plain
 * blocks go two by two (up to row_pair): two whose bounds add up to <= 128 each have their pair sums
 * added in int16 (vpaddw, still within 32,640) before the one vpmaddwd.
 * Wide blocks (a larger bound; 11% of the shipped model's): |w| (unsigned) times the activation
 * itself (tile byte ^ 0x80, -127..127) with w's sign (vpsignb), a pair sum at most 2 * 127 * 127 =
 * 32,258, never saturated. The sum is exactly the integer sum of the other kernels (|acc| < 2^31
 * as for VNNI). Per block: one 32-bit weight broadcast and SP_TILE/8 loads, vpmaddubsw and
 * vpmaddwd, plus a vpxor and a vpsignb per load for a wide block (a wide block used to be split
 * into two plain ones, (w >> 1) + (w - (w >> 1)): twice the multiplies; C micro-benchmark 1-5%
 * slower than this). Half the tile bytes of int16 activations with vpmaddwd (measured 5-45%
 * slower: their 96 KB tiles of 1,536 inputs left L1).
 * One tile: SP_TILE tokens t0 .. t0+nt-1, rows o0 .. o1-1.
 * xp: the scatter_row layout (64-byte aligned); xs: (SP_TILE) scales (0 for padding);
 * y: N tokens in L->hd's layout (lin_out; hd a multiple of 8), written directly (8 rows at a time,
 * transposed in registers: one 8-float store per token). */
#define SP_OCT (SP_TILE / 8) /* groups of 8 tokens */
SP_AVX2 static void lin_tile_avx2(const sp_lin *L, const uint8_t *xp, const float *xs, int32_t o0, int32_t o1, int32_t t0, int32_t nt,
                                  int gelu, float *y, int32_t N) {
    __m256 s8[SP_OCT];
    for (int32_t m = 0; m < SP_OCT; m++) s8[m] = _mm256_loadu_ps(xs + 8 * m);
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    const int32_t *w32 = (const int32_t *)L->w8;
    for (int32_t og = o0; og < o1; og += 8) {
        const int32_t ng = o1 - og < 8 ? o1 - og : 8;
        if (og % 16 == 0 && og + 16 < o1) prefetch_out16(L, y, N, t0, nt, og + 16);
        __m256 res[SP_OCT][8];
        for (int32_t r = 0; r < 8; r++) {
            if (r >= ng) {
                for (int32_t m = 0; m < SP_OCT; m++) res[m][r] = _mm256_setzero_ps();
                continue;
            }
            const int32_t o = og + r;
            __m256i a[SP_OCT];
            for (int32_t m = 0; m < SP_OCT; m++) a[m] = _mm256_setzero_si256();
            const int32_t pe = L->row_pair[o], mid = L->row_mid[o], end = L->row_ptr[o + 1];
            for (int32_t b = L->row_ptr[o]; b < pe; b += 2) {
                const __m256i w = _mm256_set1_epi32(w32[b]), w2 = _mm256_set1_epi32(w32[b + 1]);
                const __m256i *p = (const __m256i *)(xp + (size_t)L->col_idx[b] * (SP_TILE * 4));
                const __m256i *p2 = (const __m256i *)(xp + (size_t)L->col_idx[b + 1] * (SP_TILE * 4));
                for (int32_t m = 0; m < SP_OCT; m++) {
                    const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_load_si256(p + m), w),
                                                         _mm256_maddubs_epi16(_mm256_load_si256(p2 + m), w2));
                    a[m] = _mm256_add_epi32(a[m], _mm256_madd_epi16(s16, ones));
                }
            }
            for (int32_t b = pe; b < mid; b++) {
                const __m256i w = _mm256_set1_epi32(w32[b]);
                const __m256i *p = (const __m256i *)(xp + (size_t)L->col_idx[b] * (SP_TILE * 4));
                for (int32_t m = 0; m < SP_OCT; m++)
                    a[m] = _mm256_add_epi32(a[m], _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256(p + m), w), ones));
            }
            for (int32_t b = mid; b < end; b++) {
                const __m256i w = _mm256_set1_epi32(w32[b]), wa = _mm256_abs_epi8(w);
                const __m256i *p = (const __m256i *)(xp + (size_t)L->col_idx[b] * (SP_TILE * 4));
                for (int32_t m = 0; m < SP_OCT; m++) {
                    const __m256i x = _mm256_sign_epi8(_mm256_xor_si256(_mm256_load_si256(p + m), flip), w);
                    a[m] = _mm256_add_epi32(a[m], _mm256_madd_epi16(_mm256_maddubs_epi16(wa, x), ones));
                }
            }
            const __m256i corr = _mm256_set1_epi32(128 * L->wsum_plain[o]);
            const __m256 sc = _mm256_set1_ps(L->scale[o]), bi = _mm256_set1_ps(L->bias[o]);
            for (int32_t m = 0; m < SP_OCT; m++)
                res[m][r] = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(s8[m], sc), _mm256_cvtepi32_ps(_mm256_sub_epi32(a[m], corr))), bi);
        }
        if (gelu) gelu_rows8(res, ng);
        store_rows8(res, nt, ng, lin_out(L, y, N, t0, og), L->hd);
    }
}
/* AVX-512 VNNI, exact: vpdpbusd multiplies unsigned bytes (activation + 128, 0..254) by signed
 * bytes (weights, -127..127) and adds the four products of a token's 4-block to its int32 lane,
 * with no intermediate saturation (unlike vpmaddubsw); subtracting 128 * sum(w) gives exactly
 * the integer sum of the other kernels (|sum| <= 255 * 127 * in < 2^31). Per 4-block: one 32-bit
 * weight broadcast and SP_TILE/16 vpdpbusd. Same tile, epilogue and output as lin_tile_avx2.
 * xp: the scatter_row_u8 layout (64-byte aligned). */
#if SP_TILE != 32
#error "lin_tile_vnni is written for 32-token tiles"
#endif
/* One 4-block of one row against NT tiles' packed tokens: one weight broadcast, two vpdpbusd per tile
 * (32 tokens x 4 bytes) into acc[2k], acc[2k + 1]. */
SP_AVX512 static inline __attribute__((always_inline)) void vnni_block(__m512i *acc, const uint8_t *xp, int32_t col, int32_t w4, size_t tstride,
                                                                     const int NT) {
    const __m512i w = _mm512_set1_epi32(w4);
    const uint8_t *p = xp + (size_t)col * (SP_TILE * 4);
    for (int k = 0; k < NT; k++) {
        acc[2 * k] = _mm512_dpbusd_epi32(acc[2 * k], _mm512_load_si512((const void *)(p + k * tstride)), w);
        acc[2 * k + 1] = _mm512_dpbusd_epi32(acc[2 * k + 1], _mm512_load_si512((const void *)(p + k * tstride + 64)), w);
    }
}

/* The body for NT = 1 or 2 consecutive tiles (tokens t0 .. t0+nt-1), NT a constant at each call:
 * with two, each 4-block's weights and column index are loaded once for 64 tokens (four vpdpbusd),
 * which halves the per-row cost of the loop exit and the index arithmetic (measured 5-20% faster
 * where both tiles fit in L1). Same arithmetic per token either way. */
SP_AVX512 static inline __attribute__((always_inline)) void lin_tiles_vnni(const sp_lin *L, const uint8_t *xp, const float *xs, int32_t o0,
                                                                         int32_t o1, int32_t t0, int32_t nt, int gelu, float *y, int32_t N,
                                                                         const int NT) {
    const size_t tstride = (size_t)L->in * SP_TILE; /* bytes per packed tile */
    __m256 s8[2 * SP_OCT];
    for (int32_t m = 0; m < NT * SP_OCT; m++) s8[m] = _mm256_loadu_ps(xs + 8 * m);
    const int32_t *w32 = (const int32_t *)L->w8;
    for (int32_t og = o0; og < o1; og += 8) {
        const int32_t ng = o1 - og < 8 ? o1 - og : 8;
        if (og % 16 == 0 && og + 16 < o1) prefetch_out16(L, y, N, t0, nt, og + 16);
        __m256 res[2][SP_OCT][8];
        for (int32_t r = 0; r < 8; r++) {
            if (r >= ng) {
                for (int32_t m = 0; m < NT * SP_OCT; m++) res[m / SP_OCT][m % SP_OCT][r] = _mm256_setzero_ps();
                continue;
            }
            const int32_t o = og + r;
            __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
            __m512i e[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
            const int32_t end = L->row_ptr[o + 1];
            int32_t b = L->row_ptr[o];
            for (; b + 1 < end; b += 2) { /* two blocks a step, into two sets of accumulators */
                vnni_block(a, xp, L->col_idx[b], w32[b], tstride, NT);
                vnni_block(e, xp, L->col_idx[b + 1], w32[b + 1], tstride, NT);
            }
            if (b < end) vnni_block(a, xp, L->col_idx[b], w32[b], tstride, NT);
            for (int k = 0; k < 2 * NT; k++) a[k] = _mm512_add_epi32(a[k], e[k]);
            const __m512i corr = _mm512_set1_epi32(128 * L->wsum[o]);
            const __m256 sc = _mm256_set1_ps(L->scale[o]), bi = _mm256_set1_ps(L->bias[o]);
            for (int k = 0; k < 2 * NT; k++) {
                const __m512i acc = _mm512_sub_epi32(a[k], corr);
                const __m256i t8[2] = {_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1)};
                for (int hh = 0; hh < 2; hh++) {
                    const int32_t m = 2 * k + hh; /* token group of 8 */
                    res[m / SP_OCT][m % SP_OCT][r] = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(s8[m], sc), _mm256_cvtepi32_ps(t8[hh])), bi);
                }
            }
        }
        for (int k = 0; k < NT; k++) {
            if (gelu) gelu_rows8(res[k], ng);
            store_rows8(res[k], k + 1 < NT ? SP_TILE : nt - k * SP_TILE, ng, lin_out(L, y, N, t0 + k * SP_TILE, og), L->hd);
        }
    }
}

SP_AVX512 static void lin_tile_vnni(const sp_lin *L, const uint8_t *xp, const float *xs, int32_t o0, int32_t o1, int32_t t0, int32_t nt,
                                   int gelu, float *y, int32_t N) {
    lin_tiles_vnni(L, xp, xs, o0, o1, t0, nt, gelu, y, N, 1);
}

/* lin_tile_vnni over two consecutive tiles at once (32 < nt <= 64). */
SP_AVX512 static void lin_tile2_vnni(const sp_lin *L, const uint8_t *xp, const float *xs, int32_t o0, int32_t o1, int32_t t0, int32_t nt,
                                    int gelu, float *y, int32_t N) {
    lin_tiles_vnni(L, xp, xs, o0, o1, t0, nt, gelu, y, N, 2);
}
#endif

#if SP_HAVE_AMX
/* AMX (Intel's int8 tiles; Sapphire Rapids on), exact: tdpbssd multiplies signed bytes by signed
 * bytes -- the activations' own int8 rows, no +128 offset -- and adds each token's dot products of
 * 64 columns to int32 with no saturation, so the sums are exactly the other kernels'. The weights
 * stay 4-block sparse in memory (sp_lin.amx_*: per 16 rows and 4-column block, a 16-bit mask and
 * the offset of its blocks); each 16x64 weight tile is expanded into L1 (vpexpandd: one row of the
 * tile per block column) just before its tile multiplications, so the dense tile never leaves L1.
 * One call: tokens t0 .. t0+nt-1 (nt <= SP_TILE; their int8 rows at xq, ldq bytes apart, rows up to
 * SP_TILE present and 64 bytes readable past the last one -- the columns past in meet zero weights),
 * rows o0 .. o1-1 (o0 a multiple of 16) in pairs of 16-row groups: tiles 0-1 the two halves of the
 * tokens, 2-3 the two weight tiles, 4-7 the four products. Epilogue: per token, its 16 rows in a
 * 512-bit register, (xs * scale) * acc + bias, then GELU, as lin_tile_vnni's lanes compute them; y in
 * L->hd's layout (lin_out). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} sp_tilecfg;

/* Tile configuration: every tile 64 bytes wide, tile i rows[i] tall. */
SP_AMX static inline __attribute__((always_inline)) void amx_config(const uint8_t rows[8]) {
    sp_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = rows[i];
    _tile_loadconfig(&cfg);
}

/* The weight tile of row group g and column tile k (kp: the padded input's 4-column blocks),
 * expanded from the masks into b (16 x 16 int32, 64-byte aligned). */
SP_AMX static inline __attribute__((always_inline)) void amx_expand(const sp_lin *L, int32_t g, int32_t k, int32_t kp, int32_t *b) {
    const uint16_t *mk = L->amx_mask + (size_t)g * kp + 16 * k;
    const uint32_t *of = L->amx_off + (size_t)g * kp + 16 * k;
    for (int r = 0; r < 16; r++) _mm512_store_si512((void *)(b + 16 * r), _mm512_maskz_expandloadu_epi32(mk[r], L->amx_w + of[r]));
}

/* Epilogue of row group o .. o+15 (rows < o1) for tokens t0 .. t0+nt-1: token t's 16 sums at
 * ct[t / 16] + 16 * (t % 16) (the stored product tiles). */
SP_AMX static inline __attribute__((always_inline)) void amx_store(const sp_lin *L, const int32_t *const *ct, const float *xs, int32_t o, int32_t o1, int32_t t0, int32_t nt,
                                    int gelu, float *y, int32_t N) {
    const int32_t nr = o1 - o < 16 ? o1 - o : 16;
    const __mmask16 mr = (__mmask16)((1u << nr) - 1);
    const __m512 sc = _mm512_maskz_loadu_ps(mr, L->scale + o), bi = _mm512_maskz_loadu_ps(mr, L->bias + o);
    /* the 16 rows of a token are one 64-byte line when whole and in one head */
    const int whole = nr == 16 && L->hd % 16 == 0;
    float *d0 = lin_out(L, y, N, t0, o), *d8 = nr > 8 ? lin_out(L, y, N, t0, o + 8) : NULL; /* + t * hd for token t */
    for (int32_t t = 0; t < nt; t++) {
        const __m512i acc = _mm512_load_si512((const void *)(ct[t / 16] + 16 * (t % 16)));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(xs[t]), sc), _mm512_cvtepi32_ps(acc)), bi);
        if (gelu) v = sp_gelu16(v);
        const size_t at = (size_t)t * L->hd;
        if (whole) {
            _mm512_storeu_ps(d0 + at, v);
        } else { /* two groups of 8 (hd a multiple of 8), the last one possibly short */
            _mm256_mask_storeu_ps(d0 + at, (__mmask8)mr, _mm512_castps512_ps256(v));
            if (nr > 8) _mm256_mask_storeu_ps(d8 + at, (__mmask8)(mr >> 8), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        }
    }
}

/* The output lines of row group o for tokens t0 .. t0+nt-1, fetched for writing while the tiles
 * multiply (cf. prefetch_out16; prefetchw: the lines the other core may hold). */
SP_AMX static inline __attribute__((always_inline)) void amx_prefetch_out(const sp_lin *L, float *y, int32_t N, int32_t t0, int32_t nt, int32_t o) {
    const float *p = lin_out(L, y, N, t0, o); /* token t's at p + t * hd */
    for (int32_t t = 0; t < nt; t++) __builtin_prefetch(p + (size_t)t * L->hd, 1, 3);
}

SP_AMX static void lin_tile_amx(const sp_lin *L, const int8_t *xq, size_t ldq, const float *xs, int32_t o0, int32_t o1, int32_t t0,
                                int32_t nt, int gelu, float *y, int32_t N) {
    const int32_t kp = (L->in + 63) / 64 * 16, kt = kp / 16, two = nt > 16;
    /* the token tiles only as tall as the tokens (a product costs about a cycle per row) */
    const uint8_t m0 = (uint8_t)(nt < 16 ? nt : 16), m1 = (uint8_t)(two ? nt - 16 : 1);
    const uint8_t rows[8] = {m0, m1, 16, 16, m0, m0, m1, m1};
    amx_config(rows);
    _Alignas(64) int32_t bt[2][2][256]; /* the weight tiles, two k steps in flight */
    _Alignas(64) int32_t ct[2][2][256]; /* products: [token half][row group], (16 tokens, 16 rows) */
    for (int32_t g = o0 / 16; g * 16 < o1; g += 2) {
        const int gn = (g + 1) * 16 < o1 ? 2 : 1;
        for (int j = 0; j < gn; j++) amx_prefetch_out(L, y, N, t0, nt, 16 * (g + j));
        _tile_zero(4);
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
        for (int32_t k = 0; k < kt; k++) {
            for (int j = 0; j < gn; j++) amx_expand(L, g + j, k, kp, bt[k & 1][j]);
            _tile_loadd(0, xq + 64 * k, ldq);
            _tile_loadd(2, bt[k & 1][0], 64);
            _tile_dpbssd(4, 0, 2);
            if (two) {
                _tile_loadd(1, xq + 16 * ldq + 64 * k, ldq);
                _tile_dpbssd(6, 1, 2);
            }
            if (gn == 2) {
                _tile_loadd(3, bt[k & 1][1], 64);
                _tile_dpbssd(5, 0, 3);
                if (two) _tile_dpbssd(7, 1, 3);
            }
        }
        _tile_stored(4, ct[0][0], 64);
        _tile_stored(5, ct[0][1], 64);
        _tile_stored(6, ct[1][0], 64);
        _tile_stored(7, ct[1][1], 64);
        for (int j = 0; j < gn; j++) {
            const int32_t *c2[2] = {ct[0][j], ct[1][j]};
            amx_store(L, c2, xs, 16 * (g + j), o1, t0, nt, gelu, y, N);
        }
    }
    _tile_release();
}

/* lin_tile_amx over two consecutive tiles at once (SP_TILE < nt <= 2 * SP_TILE): one row group at a
 * time against the four 16-token quarters (tiles 4-7 the products, 0 the quarter's tokens
 * reloaded, 1 the weights), so that each weight tile is expanded once for 64 tokens. Token rows
 * up to 2 * SP_TILE are present. */
SP_AMX static void lin_tile2_amx(const sp_lin *L, const int8_t *xq, size_t ldq, const float *xs, int32_t o0, int32_t o1, int32_t t0,
                                 int32_t nt, int gelu, float *y, int32_t N) {
    const int32_t kp = (L->in + 63) / 64 * 16, kt = kp / 16;
    const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
    amx_config(rows);
    _Alignas(64) int32_t bt[2][256];
    _Alignas(64) int32_t ct[4][256];
    for (int32_t g = o0 / 16; g * 16 < o1; g++) {
        amx_prefetch_out(L, y, N, t0, nt, 16 * g);
        _tile_zero(4);
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
        for (int32_t k = 0; k < kt; k++) {
            amx_expand(L, g, k, kp, bt[k & 1]);
            _tile_loadd(1, bt[k & 1], 64);
            _tile_loadd(0, xq + 64 * k, ldq);
            _tile_dpbssd(4, 0, 1);
            _tile_loadd(0, xq + 16 * ldq + 64 * k, ldq);
            _tile_dpbssd(5, 0, 1);
            _tile_loadd(0, xq + 32 * ldq + 64 * k, ldq);
            _tile_dpbssd(6, 0, 1);
            _tile_loadd(0, xq + 48 * ldq + 64 * k, ldq);
            _tile_dpbssd(7, 0, 1);
        }
        _tile_stored(4, ct[0], 64);
        _tile_stored(5, ct[1], 64);
        _tile_stored(6, ct[2], 64);
        _tile_stored(7, ct[3], 64);
        const int32_t *c4[4] = {ct[0], ct[1], ct[2], ct[3]};
        amx_store(L, c4, xs, 16 * g, o1, t0, nt, gelu, y, N);
    }
    _tile_release();
}
#endif

#endif
