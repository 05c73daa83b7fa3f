/* Included by ops.h with SP_OPS_SUFFIX / SP_OPS_ATTR set; no include guard on purpose. */
#define SP_CAT2(a, b) a##b
#define SP_CAT(a, b) SP_CAT2(a, b)
#define SP_FN(name) SP_CAT(name, SP_OPS_SUFFIX)

/* e^x for x in [-87, 88]: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial (Cephes expf coefficients). */
SP_OPS_ATTR static inline float SP_FN(sp_exp)(float x) {
    if (x != x) return x; /* NaN: (int32_t)NaN below would be undefined */
    x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    int32_t e = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &e, 4);
    return p * two_n;
}

/* erf(x) as x P(x^2) / Q(x^2), a rational fit of ours (weighted least squares, degrees 5 / 5 in x^2):
 * one division and ten FMAs, no exp. Its error in float32 (|erf error| <= SP_ERF_ABS_TOL; GELU within
 * 2.2e-7 * max(|x|, 1) of float64) is tested in tests/test_native.py. The argument is clamped to
 * +-4.1, where the fit exceeds 1, so erf is exactly +-1 beyond (GELU exactly 0 for x <= -5.8). Clamps
 * are written (bound > x ? bound : x), the semantics of vmaxps / vminps with x second: NaN stays NaN. */
#define SP_ERF_P0 1.128378987e+00f
#define SP_ERF_P1 1.962187886e-01f
#define SP_ERF_P2 5.346281081e-02f
#define SP_ERF_P3 4.002102651e-03f
#define SP_ERF_P4 2.879646781e-04f
#define SP_ERF_P5 1.974554380e-06f
#define SP_ERF_Q1 5.072255731e-01f
#define SP_ERF_Q2 1.164633036e-01f
#define SP_ERF_Q3 1.544145402e-02f
#define SP_ERF_Q4 1.215901924e-03f
#define SP_ERF_Q5 3.747389201e-05f
SP_OPS_ATTR static inline float SP_FN(sp_erf)(float x) {
    x = -4.1f > x ? -4.1f : x;
    x = 4.1f < x ? 4.1f : x;
    const float u = x * x;
    float p = fmaf(SP_ERF_P5, u, SP_ERF_P4);
    p = fmaf(p, u, SP_ERF_P3);
    p = fmaf(p, u, SP_ERF_P2);
    p = fmaf(p, u, SP_ERF_P1);
    p = fmaf(p, u, SP_ERF_P0);
    float q = fmaf(SP_ERF_Q5, u, SP_ERF_Q4);
    q = fmaf(q, u, SP_ERF_Q3);
    q = fmaf(q, u, SP_ERF_Q2);
    q = fmaf(q, u, SP_ERF_Q1);
    q = fmaf(q, u, 1.f);
    float y = x * p / q;
    y = -1.f > y ? -1.f : y;
    return 1.f < y ? 1.f : y;
}

/* Sum of n floats in a fixed order that vectorises without reassociation: 8 running lanes
 * (element c goes to lane c % 8), the tail (n % 8) added to lanes 0.., then the lanes combined
 * pairwise ((0+1)+(2+3))+((4+5)+(6+7)). ops_avx2.h reproduces this order exactly. */
SP_OPS_ATTR static inline float SP_FN(sp_sum8)(const float *x, int32_t n) {
    float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int32_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int k = 0; k < 8; k++) a[k] += x[c + k];
    for (int k = 0; c < n; c++, k++) a[k] += x[c];
    return sp_lanes8(a);
}

#ifndef SP_OPS_HAND_VECTORISED /* the AVX2 build's LayerNorm is layernorm_rows_avx2 (kernels.h) */
/* out = LayerNorm(x + r) row-wise; x, r, out: (T, C); r may be NULL; out may alias x.
 * Mean and variance are sums in the sp_sum8 order (the variance over (v - mean)^2 held in out). */
SP_OPS_ATTR static void SP_FN(layernorm_add)(const float *x, const float *r, int32_t T, int32_t C, const float *gamma,
                                             const float *beta, float eps, float *out) {
    for (int32_t t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        const float *rr = r ? r + (size_t)t * C : NULL;
        float *o = out + (size_t)t * C;
        for (int32_t c = 0; c < C; c++) o[c] = xr[c] + (rr ? rr[c] : 0.f);
        const float mean = SP_FN(sp_sum8)(o, C) / (float)C;
        float var = 0.f;
        {
            float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
            int32_t c = 0;
            for (; c + 8 <= C; c += 8)
                for (int k = 0; k < 8; k++) {
                    const float d = o[c + k] - mean;
                    a[k] += d * d;
                }
            for (int k = 0; c < C; c++, k++) {
                const float d = o[c] - mean;
                a[k] += d * d;
            }
            var = sp_lanes8(a);
        }
        const float inv = 1.f / sqrtf(var / (float)C + eps);
        for (int32_t c = 0; c < C; c++) o[c] = (o[c] - mean) * inv * gamma[c] + beta[c];
    }
}

#endif

#ifndef SP_OPS_HAND_VECTORISED /* the AVX2 build takes these two from ops_avx2.h */
/* x <- x * Φ(x) = 0.5 x (1 + erf(x / √2)), exact-erf GELU as in BERT. */
SP_OPS_ATTR static void SP_FN(gelu_inplace)(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + SP_FN(sp_erf)(x[i] * 0.70710678118654752f));
}

/* Scaled dot-product attention of one sequence, heads h0 .. h1-1.
 * q, k, v: element d of head h of the sequence's token j at [h * hs + j * ld + d] (token-major
 * rows: hs = D, ld = C; head-major (sp_lin.hd): hs = N * D, ld = D); ctx: (T, C) out, token-major.
 * scratch: (T * T + D * T) floats. The arithmetic that ops_avx2.h reproduces lane by lane: a score
 * is an FMA chain over d (q scaled first); softmax subtracts the row's maximum, exponentiates and
 * sums in the sp_sum8 order; a context value is an FMA chain over j of the unnormalised weights,
 * multiplied by 1 / sum at the end. */
SP_OPS_ATTR static void SP_FN(attention_seq)(const float *q, const float *k, const float *v, size_t hs, size_t ld, int32_t T, int32_t C,
                                             int32_t H, int32_t h0, int32_t h1, float *ctx, float *scratch) {
    const int32_t D = C / H;
    const float scale = 1.f / sqrtf((float)D);
    float *p = scratch;          /* (T, T) */
    float *kt = scratch + (size_t)T * T; /* (D, T): K of this head transposed */
    for (int32_t h = h0; h < h1; h++) {
        for (int32_t j = 0; j < T; j++)
            for (int32_t d = 0; d < D; d++) kt[(size_t)d * T + j] = k[h * hs + (size_t)j * ld + d];
        for (int32_t i = 0; i < T; i++) {
            float *pi = p + (size_t)i * T;
            for (int32_t j = 0; j < T; j++) pi[j] = 0.f;
            const float *qi = q + h * hs + (size_t)i * ld;
            for (int32_t d = 0; d < D; d++) {
                const float qd = qi[d] * scale;
                const float *kd = kt + (size_t)d * T;
                for (int32_t j = 0; j < T; j++) pi[j] = fmaf(qd, kd[j], pi[j]);
            }
            float mx = pi[0];
            for (int32_t j = 1; j < T; j++) mx = pi[j] > mx ? pi[j] : mx;
            for (int32_t j = 0; j < T; j++) pi[j] = SP_FN(sp_exp)(pi[j] - mx);
            const float inv = 1.f / SP_FN(sp_sum8)(pi, T);
            float *ci = ctx + (size_t)i * C + h * D;
            for (int32_t d = 0; d < D; d++) ci[d] = 0.f;
            for (int32_t j = 0; j < T; j++) {
                const float *vj = v + h * hs + (size_t)j * ld;
                for (int32_t d = 0; d < D; d++) ci[d] = fmaf(pi[j], vj[d], ci[d]);
            }
            for (int32_t d = 0; d < D; d++) ci[d] *= inv;
        }
    }
}

#endif

/* y = x @ wt + b with wt: (in, out) (a transposed dense weight), vectorised over the outputs. */
SP_OPS_ATTR static void SP_FN(dense_t)(const float *wt, const float *b, const float *x, int32_t in, int32_t out, float *y) {
    for (int32_t o = 0; o < out; o++) y[o] = b[o];
    for (int32_t c = 0; c < in; c++) {
        const float xc = x[c];
        const float *wr = wt + (size_t)c * out;
        for (int32_t o = 0; o < out; o++) y[o] += xc * wr[o];
    }
}

#undef SP_FN
#undef SP_CAT
#undef SP_CAT2
