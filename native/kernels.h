/* Sparse INT8 linear kernels (4-block CSR) and per-token quantisation: scalar reference + AVX2. */
#ifndef SP_KERNELS_H
#define SP_KERNELS_H
#include "sp_internal.h"
#if SP_X86
#include <immintrin.h>
#endif

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
    for (int32_t c = 0; c < C; c++) {
        float v = nearbyintf(x[c] / s);
        v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
        q[c] = (int8_t)v;
    }
    return s;
}

#if SP_X86
#include <immintrin.h>
/* AVX2 version of quantize_row, bit-identical: same max, same product scale, correctly rounded
 * division, round-half-even (vroundps), clamp, saturating packs. */
SP_AVX2 static float quantize_row_avx2(const float *x, int32_t C, int8_t *q) {
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    int32_t c = 0;
    for (; c + 8 <= C; c += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(signmask, _mm256_loadu_ps(x + c)));
    float buf[8], amax = 0.f;
    _mm256_storeu_ps(buf, vmax);
    for (int i = 0; i < 8; i++) amax = buf[i] > amax ? buf[i] : amax;
    for (; c < C; c++) {
        float a = fabsf(x[c]);
        amax = a > amax ? a : amax;
    }
    if (amax == 0.f) {
        memset(q, 0, (size_t)C);
        return 0.f;
    }
    const float s = amax * (1.0f / 127.0f);
    const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
    c = 0;
    for (; c + 32 <= C; c += 32) {
        __m256i i4[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + c + 8 * k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            i4[k] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
        }
        __m256i p01 = _mm256_packs_epi32(i4[0], i4[1]); /* lanes interleaved: fixed below */
        __m256i p23 = _mm256_packs_epi32(i4[2], i4[3]);
        __m256i b = _mm256_packs_epi16(p01, p23);
        b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + c), b);
    }
    for (; c < C; c++) {
        float v = nearbyintf(x[c] / s);
        v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
        q[c] = (int8_t)v;
    }
    return s;
}
#endif

/* Scalar reference. xq: (T, in), xs: (T), y: (T, out); rows o0 .. o1-1 of tokens t0 .. t1-1. */
static void lin_scalar(const sp_lin *L, const int8_t *xq, const float *xs, int32_t t0, int32_t t1, int32_t o0, int32_t o1,
                       float *y) {
    for (int32_t t = t0; t < t1; t++) {
        const int8_t *x = xq + (size_t)t * L->in;
        for (int32_t o = o0; o < o1; o++) {
            int32_t acc = 0;
            for (int32_t b = L->row_ptr[o]; b < L->row_ptr[o + 1]; b++) {
                const int8_t *w = L->w8 + (size_t)b * 4;
                const int8_t *xx = x + (size_t)L->col_idx[b] * 4;
                acc += w[0] * xx[0] + w[1] * xx[1] + w[2] * xx[2] + w[3] * xx[3];
            }
            y[(size_t)t * L->out + o] = xs[t] * L->scale[o] * (float)acc + L->bias[o];
        }
    }
}

#if SP_X86
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

/* res[m][r]: rows r = 0..7 (ng valid) of tokens 8m .. 8m+7 -> y (token-major, row stride ld):
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

/* AVX2, exact: int16 activations (widened when packed: scatter_row_avx2), vpmaddwd pairs (|x|,|w| <= 127: products
 * and pair sums fit int16 x int16 -> int32 with no saturation), int32 accumulation (a row has at
 * most in/4 blocks: |acc| <= in * 127 * 127 < 2^31 for in < 133,000).
 * One tile: SP_TILE tokens t0 .. t0+nt-1, rows o0 .. o1-1. Per 4-block: one 64-bit broadcast of the
 * weights, SP_TILE/4 loads and vpmaddwd (4 tokens x 4 inputs each).
 * xp: (in/4, SP_TILE, 4) packed int16 tile (64-byte aligned); xs: (SP_TILE) scales (0 for padding);
 * y: (T, out) row-major, written directly (8 rows at a time, transposed in registers). */
#define SP_ACC (SP_TILE / 4) /* accumulators per row */
#define SP_OCT (SP_TILE / 8) /* groups of 8 tokens */
SP_AVX2 static void lin_tile_avx2(const sp_lin *L, const int16_t *xp, const float *xs, int32_t o0, int32_t o1, int32_t t0, int32_t nt,
                                  float *y) {
    __m256 s8[SP_OCT];
    for (int32_t m = 0; m < SP_OCT; m++) s8[m] = _mm256_loadu_ps(xs + 8 * m);
    const int64_t *w64 = (const int64_t *)L->w16;
    for (int32_t og = o0; og < o1; og += 8) {
        const int32_t ng = o1 - og < 8 ? o1 - og : 8;
        __m256 res[SP_OCT][8];
        for (int32_t r = 0; r < 8; r++) {
            if (r >= ng) {
                for (int32_t m = 0; m < SP_OCT; m++) res[m][r] = _mm256_setzero_ps();
                continue;
            }
            const int32_t o = og + r;
            __m256i a[SP_ACC];
            for (int32_t k = 0; k < SP_ACC; k++) a[k] = _mm256_setzero_si256();
            const int32_t end = L->row_ptr[o + 1];
            for (int32_t b = L->row_ptr[o]; b < end; b++) {
                const __m256i w = _mm256_set1_epi64x(w64[b]);
                const __m256i *p = (const __m256i *)(xp + (size_t)L->col_idx[b] * (SP_TILE * 4));
                for (int32_t k = 0; k < SP_ACC; k++) a[k] = _mm256_add_epi32(a[k], _mm256_madd_epi16(_mm256_load_si256(p + k), w));
            }
            /* a[k] holds two partial sums per token for tokens 4k..4k+3; hadd + lane fix-up -> 8 tokens */
            const __m256 sc = _mm256_set1_ps(L->scale[o]), bi = _mm256_set1_ps(L->bias[o]);
            for (int32_t m = 0; m < SP_OCT; m++) {
                const __m256i t8 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[2 * m], a[2 * m + 1]), 0xD8);
                res[m][r] = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(s8[m], sc), _mm256_cvtepi32_ps(t8)), bi);
            }
        }
        store_rows8(res, nt, ng, y + (size_t)t0 * L->out + og, L->out);
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
SP_AVX512 static void lin_tile_vnni(const sp_lin *L, const uint8_t *xp, const float *xs, int32_t o0, int32_t o1, int32_t t0, int32_t nt,
                                   float *y) {
    __m256 s8[SP_OCT];
    for (int32_t m = 0; m < SP_OCT; m++) s8[m] = _mm256_loadu_ps(xs + 8 * m);
    const int32_t *w32 = (const int32_t *)L->w8;
    for (int32_t og = o0; og < o1; og += 8) {
        const int32_t ng = o1 - og < 8 ? o1 - og : 8;
        __m256 res[SP_OCT][8];
        for (int32_t r = 0; r < 8; r++) {
            if (r >= ng) {
                for (int32_t m = 0; m < SP_OCT; m++) res[m][r] = _mm256_setzero_ps();
                continue;
            }
            const int32_t o = og + r;
            __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
            const int32_t end = L->row_ptr[o + 1];
            for (int32_t b = L->row_ptr[o]; b < end; b++) {
                const __m512i w = _mm512_set1_epi32(w32[b]);
                const uint8_t *p = xp + (size_t)L->col_idx[b] * (SP_TILE * 4);
                a0 = _mm512_dpbusd_epi32(a0, _mm512_load_si512((const void *)p), w);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_load_si512((const void *)(p + 64)), w);
            }
            const __m512i corr = _mm512_set1_epi32(128 * L->wsum[o]);
            a0 = _mm512_sub_epi32(a0, corr);
            a1 = _mm512_sub_epi32(a1, corr);
            const __m256i t8[SP_OCT] = {_mm512_castsi512_si256(a0), _mm512_extracti64x4_epi64(a0, 1), _mm512_castsi512_si256(a1),
                                        _mm512_extracti64x4_epi64(a1, 1)};
            const __m256 sc = _mm256_set1_ps(L->scale[o]), bi = _mm256_set1_ps(L->bias[o]);
            for (int32_t m = 0; m < SP_OCT; m++) res[m][r] = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(s8[m], sc), _mm256_cvtepi32_ps(t8[m])), bi);
        }
        store_rows8(res, nt, ng, y + (size_t)t0 * L->out + og, L->out);
    }
}
#endif

#endif
