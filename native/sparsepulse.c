/* SparsePulse native runtime: model handle and the encoder forward pass. See sparsepulse.h. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* syscall (arch_prctl: the AMX tile state), beside the build's _POSIX_C_SOURCE */
#endif
#include <float.h>
#include <stdatomic.h>

#include "sp_internal.h"
#include "ops.h"
#include "kernels.h"
#if SP_HAVE_AMX
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#define SP_NOW() omp_get_wtime()
#else
#include <time.h>
static double SP_NOW(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

/* The clock, read only where a step time is wanted (thread 0, timings requested): elsewhere 0. */
static inline double clock_if(int on) { return on ? SP_NOW() : 0.0; }

struct sp_model {
    sp_config cfg;
    int isa; /* SP_ISA_* */
    int64_t bytes;
    int8_t *word;      /* (V, C) */
    float *word_scale; /* (V) */
    float *position;   /* (P, C) */
    float *token_type; /* (C): row 0 */
    float *emb_g, *emb_b;
    sp_lin *lin;       /* (L, 6): query, key, value, attn_out, ffn_in, ffn_out */
    float *ln;         /* (L, 4, C): attn gamma, attn beta, ffn gamma, ffn beta */
    float *pool_wt; /* (C_in, C_out): the pooler weight transposed */
    float *pool_b, *cls_w, *cls_b;
    /* forward workspace kept between calls (no page faults on every call); one caller at a time
     * holds it (ws_busy), a concurrent caller allocates its own. Not counted in sp_model_bytes. */
    atomic_int ws_busy;
    void *ws;
    size_t ws_size;
};

static const char *const sp_messages[] = {
    "ok",
    "invalid argument (NULL pointer or non-positive size)",
    "out of memory",
    "inconsistent dimensions",
    "index out of range (block column, row pointer or token id)",
    "invalid value (NaN, infinite or out-of-range scale or parameter, or a non-finite result)",
    "sequence length out of range (empty or longer than the model's maximum)",
    "kernel not supported on this CPU (AMX: nor on a layer with a repeated block column in a row)",
};

const char *sp_status_message(int status) {
    if (status < 0 || status >= (int)(sizeof sp_messages / sizeof sp_messages[0])) return "unknown status";
    return sp_messages[status];
}

int sp_abi_version(void) { return SP_ABI_VERSION; }

int sp_cpu_has_avx2(void) {
#if SP_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int sp_cpu_has_avx512_vnni(void) {
#if SP_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    return sp_cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

int sp_cpu_has_amx(void) {
#if SP_HAVE_AMX
    static atomic_int known = -1; /* the permission is asked once per process */
    int v = atomic_load(&known);
    if (v >= 0) return v;
    unsigned a, b, c, d;
    v = 0;
    if (sp_cpu_has_avx512_vnni() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1) &&
        __get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 1)) { /* AMX-TILE, AMX-INT8; OSXSAVE */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        /* XCR0 bits 17-18: the OS saves the tile configuration and data; Linux also wants each
         * process to ask for the data (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) */
        if ((lo >> 17 & 3) == 3 && syscall(SYS_arch_prctl, 0x1023, 18) == 0) v = 1;
    }
    atomic_store(&known, v);
    return v;
#else
    return 0;
#endif
}

static sp_status pick_kernel(sp_kernel k, int *isa) {
    switch (k) {
    case SP_KERNEL_SCALAR: *isa = SP_ISA_SCALAR; return SP_OK;
    case SP_KERNEL_AVX2:
        if (!sp_cpu_has_avx2()) return SP_ERR_UNSUPPORTED;
        *isa = SP_ISA_AVX2;
        return SP_OK;
    case SP_KERNEL_AVX512_VNNI:
        if (!sp_cpu_has_avx512_vnni()) return SP_ERR_UNSUPPORTED;
        *isa = SP_ISA_VNNI;
        return SP_OK;
    case SP_KERNEL_AMX:
        if (!sp_cpu_has_amx()) return SP_ERR_UNSUPPORTED;
        *isa = SP_ISA_AMX;
        return SP_OK;
    case SP_KERNEL_AUTO:
        *isa = sp_cpu_has_amx() ? SP_ISA_AMX : sp_cpu_has_avx512_vnni() ? SP_ISA_VNNI : (sp_cpu_has_avx2() ? SP_ISA_AVX2 : SP_ISA_SCALAR);
        return SP_OK;
    }
    return SP_ERR_ARG;
}

/* Every value finite and |x| <= SP_MAX_PARAM (the bound the Python validator applies too). */
static int finite_all(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= SP_MAX_PARAM)) return 0; /* false for NaN too */
    return 1;
}

/* A quantisation scale: a positive normal float no larger than SP_MAX_PARAM. */
static int scale_ok(float s) { return s >= FLT_MIN && s <= SP_MAX_PARAM; }

/* Check a caller's linear layer: shapes, CSR structure, index ranges, scales. Every offset is
 * bounds-checked before it is used: row_ptr is checked whole (0 .. nnz_blocks, non-decreasing)
 * before any col_idx entry is read, and col_idx is then read only in [0, nnz_blocks). */
static sp_status check_linear(const sp_linear *l, int32_t out, int32_t in) {
    if (!l->row_ptr || !l->scale || !l->bias || (l->nnz_blocks > 0 && (!l->col_idx || !l->values))) return SP_ERR_ARG;
    if (out <= 0 || in <= 0 || out > SP_MAX_DIM || in > SP_MAX_DIM) return SP_ERR_SHAPE;
    if (l->out != out || l->in != in || in % SP_BLOCK != 0) return SP_ERR_SHAPE;
    if (l->nnz_blocks < 0 || (int64_t)l->nnz_blocks > (int64_t)out * (in / SP_BLOCK)) return SP_ERR_SHAPE;
    if (l->row_ptr[0] != 0 || l->row_ptr[out] != l->nnz_blocks) return SP_ERR_INDEX;
    for (int32_t o = 0; o < out; o++)
        if (l->row_ptr[o + 1] < l->row_ptr[o] || l->row_ptr[o + 1] > l->nnz_blocks) return SP_ERR_INDEX;
    for (int32_t b = 0; b < l->nnz_blocks; b++)
        if ((int32_t)l->col_idx[b] >= in / SP_BLOCK) return SP_ERR_INDEX;
    for (int32_t o = 0; o < out; o++)
        if (!scale_ok(l->scale[o])) return SP_ERR_VALUE;
    if (!finite_all(l->bias, (size_t)out)) return SP_ERR_VALUE;
    for (int64_t i = 0; i < (int64_t)l->nnz_blocks * 4; i++)
        if (l->values[i] == -128) return SP_ERR_VALUE; /* symmetric range is [-127, 127] */
    return SP_OK;
}

/* The AVX2 kernel's bounds on a 4-block (kernels.h, lin_tile_avx2): vpmaddubsw adds the products of a
 * pair of unsigned activation bytes (1..255) and signed weights into int16 with saturation. A pair
 * (w0, w1)'s sum lies in [-255 * neg, 255 * pos], pos the sum of its positive weights, neg that of
 * its negative ones' magnitudes. pair_bounds: pos and neg of the pairs (w0, w1) and (w2, w3).
 * A block is wide when one of its pair sums could leave int16: a bound above 128 (255 * 128 =
 * 32,640 is the most a plain pair reaches; a pair of mixed signs never saturates). Two plain
 * blocks can share one int16 accumulation (vpaddw of their pair sums, then one widening) when
 * their bounds add up to at most 128 each. */
static void pair_bounds(const int8_t *w, int32_t b[4]) {
    for (int k = 0; k < 2; k++) {
        const int32_t a = w[2 * k], c = w[2 * k + 1];
        b[2 * k] = (a > 0 ? a : 0) + (c > 0 ? c : 0);
        b[2 * k + 1] = (a < 0 ? -a : 0) + (c < 0 ? -c : 0);
    }
}


static int cmp_desc_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static sp_status copy_linear(const sp_linear *l, sp_lin *d, int64_t *bytes) {
    d->out = l->out;
    d->hd = l->out; /* token-major unless the model loader says otherwise */
    d->in = l->in;
    d->nnz = l->nnz_blocks;
    d->row_ptr = sp_alloc(sizeof(int32_t) * (size_t)(l->out + 1));
    d->row_pair = sp_alloc(sizeof(int32_t) * (size_t)l->out);
    d->row_mid = sp_alloc(sizeof(int32_t) * (size_t)l->out);
    d->col_idx = sp_alloc(sizeof(uint16_t) * (size_t)l->nnz_blocks);
    d->w8 = sp_alloc((size_t)l->nnz_blocks * 4);
    d->wsum = sp_alloc(sizeof(int32_t) * (size_t)l->out);
    d->wsum_plain = sp_alloc(sizeof(int32_t) * (size_t)l->out);
    d->scale = sp_alloc(sizeof(float) * (size_t)l->out);
    d->bias = sp_alloc(sizeof(float) * (size_t)l->out);
    /* per row: each block's pair_bounds (-1 in [0]: wide), the plain blocks' sort keys, their order; sized
     * for the longest row (check_linear allows repeated columns, so a row may hold more than in / 4) */
    size_t maxb = 1;
    for (int32_t o = 0; o < l->out; o++)
        if ((size_t)(l->row_ptr[o + 1] - l->row_ptr[o]) > maxb) maxb = (size_t)(l->row_ptr[o + 1] - l->row_ptr[o]);
    int32_t(*bnd)[4] = malloc(sizeof(int32_t[4]) * maxb);
    int64_t *keys = malloc(sizeof(int64_t) * maxb);
    int32_t *order = malloc(sizeof(int32_t) * maxb);
    if (!d->row_ptr || !d->row_pair || !d->row_mid || !d->col_idx || !d->w8 || !d->wsum || !d->wsum_plain || !d->scale || !d->bias ||
        !bnd || !keys || !order) {
        free(bnd);
        free(keys);
        free(order);
        return SP_ERR_NOMEM;
    }
    memcpy(d->row_ptr, l->row_ptr, sizeof(int32_t) * (size_t)(l->out + 1));
    /* each row: its plain blocks that pair up (two by two), its other plain blocks, then its wide ones.
     * Pairing: plain blocks by their largest bound, the largest first, each paired with the smallest
     * left when their bounds allow it, else left single. */
    for (int32_t o = 0; o < l->out; o++) {
        const int32_t b0 = l->row_ptr[o], b1 = l->row_ptr[o + 1];
        int32_t k = b0, sum = 0, plain = 0, np = 0;
        for (int32_t b = b0; b < b1; b++) {
            const int8_t *w = l->values + (size_t)b * 4;
            int32_t *bb = bnd[b - b0], mx = 0;
            pair_bounds(w, bb);
            for (int i = 0; i < 4; i++) mx = bb[i] > mx ? bb[i] : mx;
            sum += w[0] + w[1] + w[2] + w[3];
            if (mx > 128) { /* wide */
                bb[0] = -1;
                continue;
            }
            plain += w[0] + w[1] + w[2] + w[3];
            keys[np++] = ((int64_t)mx << 32) | (int64_t)(b - b0);
        }
        qsort(keys, (size_t)np, sizeof(int64_t), cmp_desc_i64);
        int32_t lo = 0, hi = np - 1, npair = 0, nsingle = 0;
        /* order[0 .. 2*npair-1]: pairs; order from the end down: singles */
        while (lo <= hi) {
            const int32_t a = b0 + (int32_t)(keys[lo] & 0xffffffff);
            if (lo < hi) {
                const int32_t c = b0 + (int32_t)(keys[hi] & 0xffffffff);
                const int32_t *ba = bnd[a - b0], *bc = bnd[c - b0];
                if (ba[0] + bc[0] <= 128 && ba[1] + bc[1] <= 128 && ba[2] + bc[2] <= 128 && ba[3] + bc[3] <= 128) {
                    order[2 * npair] = a, order[2 * npair + 1] = c;
                    npair++, lo++, hi--;
                    continue;
                }
            }
            order[np - 1 - nsingle++] = a;
            lo++;
        }
        for (int32_t i = 0; i < np; i++) {
            const int32_t b = order[i];
            d->col_idx[k] = l->col_idx[b];
            memcpy(d->w8 + (size_t)k * 4, l->values + (size_t)b * 4, 4);
            k++;
        }
        d->row_pair[o] = b0 + 2 * npair;
        d->row_mid[o] = k;
        for (int32_t b = b0; b < b1; b++) {
            if (bnd[b - b0][0] >= 0) continue; /* plain: placed above */
            d->col_idx[k] = l->col_idx[b];
            memcpy(d->w8 + (size_t)k * 4, l->values + (size_t)b * 4, 4);
            k++;
        }
        d->wsum[o] = sum;
        d->wsum_plain[o] = plain;
    }
    free(bnd);
    free(keys);
    free(order);
    memcpy(d->scale, l->scale, sizeof(float) * (size_t)l->out);
    memcpy(d->bias, l->bias, sizeof(float) * (size_t)l->out);
    *bytes += (int64_t)l->nnz_blocks * (2 + 4) + (int64_t)l->out * 28 + 4;
    return SP_OK;
}

/* 1 when a row of l holds two blocks of one column (check_linear allows it; the AMX masks cannot
 * say it), 0 when none does, -1 when out of memory. */
static int repeated_column(const sp_linear *l) {
    uint8_t *seen = calloc((size_t)l->in / 4 + 1, 1);
    if (!seen) return -1;
    int rep = 0;
    for (int32_t o = 0; o < l->out && !rep; o++) {
        for (int32_t b = l->row_ptr[o]; b < l->row_ptr[o + 1]; b++) {
            rep |= seen[l->col_idx[b]];
            seen[l->col_idx[b]] = 1;
        }
        for (int32_t b = l->row_ptr[o]; b < l->row_ptr[o + 1]; b++) seen[l->col_idx[b]] = 0;
    }
    free(seen);
    return rep;
}

/* *isa == SP_ISA_AMX: whether AMX can take linear l (no repeated column). If not, AUTO falls back
 * to the next best kernel (*isa = SP_ISA_VNNI) and an explicit AMX gets SP_ERR_UNSUPPORTED. */
static sp_status amx_takes(const sp_linear *l, sp_kernel kernel, int *isa) {
    const int r = repeated_column(l);
    if (r < 0) return SP_ERR_NOMEM;
    if (r && kernel != SP_KERNEL_AUTO) return SP_ERR_UNSUPPORTED;
    if (r) *isa = SP_ISA_VNNI;
    return SP_OK;
}

/* The AMX kernel's copy of a linear without repeated columns (sp_lin.amx_*). */
static sp_status amx_linear(const sp_linear *l, sp_lin *d, int64_t *bytes) {
    const size_t kp = (size_t)(l->in + 63) / 64 * 16, G = (size_t)(l->out + 15) / 16;
    d->amx_mask = calloc(G * kp, sizeof(uint16_t));
    d->amx_off = sp_alloc(sizeof(uint32_t) * G * kp);
    d->amx_w = sp_alloc(sizeof(int32_t) * (size_t)l->nnz_blocks);
    if (!d->amx_mask || !d->amx_off || !d->amx_w) return SP_ERR_NOMEM;
    for (int32_t o = 0; o < l->out; o++)
        for (int32_t b = l->row_ptr[o]; b < l->row_ptr[o + 1]; b++) d->amx_mask[(size_t)(o / 16) * kp + l->col_idx[b]] |= (uint16_t)(1u << (o % 16));
    uint32_t at = 0;
    for (size_t i = 0; i < G * kp; i++) {
        d->amx_off[i] = at;
        at += (uint32_t)__builtin_popcount(d->amx_mask[i]);
    }
    for (int32_t o = 0; o < l->out; o++)
        for (int32_t b = l->row_ptr[o]; b < l->row_ptr[o + 1]; b++) {
            const size_t i = (size_t)(o / 16) * kp + l->col_idx[b];
            const uint32_t pos = d->amx_off[i] + (uint32_t)__builtin_popcount(d->amx_mask[i] & ((1u << (o % 16)) - 1));
            memcpy(d->amx_w + pos, l->values + (size_t)b * 4, 4);
        }
    *bytes += (int64_t)(G * kp * 6) + (int64_t)l->nnz_blocks * 4;
    return SP_OK;
}

static void free_linear(sp_lin *d) {
    free(d->amx_mask);
    free(d->amx_off);
    free(d->amx_w);
    free(d->row_ptr);
    free(d->row_pair);
    free(d->row_mid);
    free(d->col_idx);
    free(d->w8);
    free(d->wsum);
    free(d->wsum_plain);
    free(d->scale);
    free(d->bias);
}

static float *copy_f32(const float *src, size_t n, int64_t *bytes, sp_status *st) {
    if (!src) { *st = SP_ERR_ARG; return NULL; }
    if (!finite_all(src, n)) { *st = SP_ERR_VALUE; return NULL; }
    float *d = sp_alloc(n * sizeof(float));
    if (!d) { *st = SP_ERR_NOMEM; return NULL; }
    memcpy(d, src, n * sizeof(float));
    *bytes += (int64_t)(n * sizeof(float));
    return d;
}

void sp_model_free(sp_model *m) {
    if (!m) return;
    if (m->lin)
        for (int32_t i = 0; i < m->cfg.num_layers * 6; i++) free_linear(&m->lin[i]);
    free(m->lin);
    free(m->ln);
    free(m->word);
    free(m->word_scale);
    free(m->position);
    free(m->token_type);
    free(m->emb_g);
    free(m->emb_b);
    free(m->pool_wt);
    free(m->pool_b);
    free(m->cls_w);
    free(m->cls_b);
    free(m->ws);
    free(m);
}

int64_t sp_model_bytes(const sp_model *m) { return m ? m->bytes : 0; }

sp_kernel sp_model_kernel(const sp_model *m) {
    if (!m) return SP_KERNEL_AUTO;
    static const sp_kernel k[] = {SP_KERNEL_SCALAR, SP_KERNEL_AVX2, SP_KERNEL_AVX512_VNNI, SP_KERNEL_AMX};
    return k[m->isa];
}

sp_status sp_model_create(const sp_config *cfg, const sp_weights *w, sp_kernel kernel, sp_model **out) {
    if (!out) return SP_ERR_ARG;
    *out = NULL;
    if (!cfg || !w || !w->layers || !w->word || !w->word_scale) return SP_ERR_ARG;
    const int32_t C = cfg->hidden, I = cfg->intermediate, V = cfg->vocab_size, L = cfg->num_layers;
    if (C <= 0 || I <= 0 || V <= 0 || L <= 0 || cfg->num_heads <= 0 || cfg->max_position <= 0 || cfg->num_labels <= 0 ||
        cfg->type_vocab_size <= 0)
        return SP_ERR_ARG;
    if (C % cfg->num_heads || C % SP_BLOCK || I % SP_BLOCK || C > 16384 || I > SP_MAX_DIM || L > 64 || V > (1 << 24) ||
        cfg->max_position > 8192 || cfg->num_labels > 1024)
        return SP_ERR_SHAPE;
    if (!(cfg->layer_norm_eps > 0.f) || !isfinite(cfg->layer_norm_eps)) return SP_ERR_VALUE;
    int isa;
    sp_status st = pick_kernel(kernel, &isa);
    if (st != SP_OK) return st;
    for (int32_t i = 0; i < L; i++) {
        const sp_layer *ly = &w->layers[i];
        if ((st = check_linear(&ly->query, C, C)) || (st = check_linear(&ly->key, C, C)) ||
            (st = check_linear(&ly->value, C, C)) || (st = check_linear(&ly->attn_out, C, C)) ||
            (st = check_linear(&ly->ffn_in, I, C)) || (st = check_linear(&ly->ffn_out, C, I)))
            return st;
    }
    for (int32_t v = 0; v < V; v++)
        if (!scale_ok(w->word_scale[v])) return SP_ERR_VALUE;
    for (int32_t i = 0; i < L && isa == SP_ISA_AMX; i++) {
        const sp_layer *ly = &w->layers[i];
        const sp_linear *src[6] = {&ly->query, &ly->key, &ly->value, &ly->attn_out, &ly->ffn_in, &ly->ffn_out};
        for (int j = 0; j < 6 && isa == SP_ISA_AMX; j++)
            if ((st = amx_takes(src[j], kernel, &isa)) != SP_OK) return st;
    }

    sp_model *m = calloc(1, sizeof *m);
    if (!m) return SP_ERR_NOMEM;
    m->cfg = *cfg;
    m->isa = isa;
    atomic_init(&m->ws_busy, 0);
    m->bytes = sizeof *m;
    st = SP_OK;
    m->word = sp_alloc((size_t)V * C);
    if (!m->word) { sp_model_free(m); return SP_ERR_NOMEM; }
    memcpy(m->word, w->word, (size_t)V * C);
    m->bytes += (int64_t)V * C;
    m->word_scale = copy_f32(w->word_scale, (size_t)V, &m->bytes, &st);
    if (st == SP_OK) m->position = copy_f32(w->position, (size_t)cfg->max_position * C, &m->bytes, &st);
    if (st == SP_OK) m->token_type = copy_f32(w->token_type, (size_t)C, &m->bytes, &st);
    if (st == SP_OK) m->emb_g = copy_f32(w->emb_ln_gamma, (size_t)C, &m->bytes, &st);
    if (st == SP_OK) m->emb_b = copy_f32(w->emb_ln_beta, (size_t)C, &m->bytes, &st);
    if (st == SP_OK) {
        float *pw = copy_f32(w->pooler_w, (size_t)C * C, &m->bytes, &st);
        if (pw) {
            m->pool_wt = sp_alloc(sizeof(float) * (size_t)C * C);
            if (!m->pool_wt) st = SP_ERR_NOMEM;
            else
                for (int32_t o = 0; o < C; o++)
                    for (int32_t c = 0; c < C; c++) m->pool_wt[(size_t)c * C + o] = pw[(size_t)o * C + c];
            free(pw);
        }
    }
    if (st == SP_OK) m->pool_b = copy_f32(w->pooler_b, (size_t)C, &m->bytes, &st);
    if (st == SP_OK) m->cls_w = copy_f32(w->classifier_w, (size_t)cfg->num_labels * C, &m->bytes, &st);
    if (st == SP_OK) m->cls_b = copy_f32(w->classifier_b, (size_t)cfg->num_labels, &m->bytes, &st);
    if (st != SP_OK) { sp_model_free(m); return st; }
    m->lin = calloc((size_t)L * 6, sizeof(sp_lin));
    m->ln = sp_alloc(sizeof(float) * (size_t)L * 4 * C);
    if (!m->lin || !m->ln) { sp_model_free(m); return SP_ERR_NOMEM; }
    for (int32_t i = 0; i < L && st == SP_OK; i++) {
        const sp_layer *ly = &w->layers[i];
        const sp_linear *src[6] = {&ly->query, &ly->key, &ly->value, &ly->attn_out, &ly->ffn_in, &ly->ffn_out};
        for (int j = 0; j < 6 && st == SP_OK; j++) {
            st = copy_linear(src[j], &m->lin[i * 6 + j], &m->bytes);
            if (st == SP_OK && isa == SP_ISA_AMX) st = amx_linear(src[j], &m->lin[i * 6 + j], &m->bytes);
        }
        /* q, k and v head-major (each head's (N, D) contiguous: attention_seq reads one head of a
         * sequence as one block) where a head is whole 8-row groups of the SIMD epilogue */
        if ((C / cfg->num_heads) % 8 == 0)
            for (int j = 0; j < 3; j++) m->lin[i * 6 + j].hd = C / cfg->num_heads;
        const float *lnp[4] = {ly->attn_ln_gamma, ly->attn_ln_beta, ly->ffn_ln_gamma, ly->ffn_ln_beta};
        for (int j = 0; j < 4 && st == SP_OK; j++) {
            if (!lnp[j]) st = SP_ERR_ARG;
            else if (!finite_all(lnp[j], (size_t)C)) st = SP_ERR_VALUE;
            else memcpy(m->ln + ((size_t)i * 4 + j) * C, lnp[j], sizeof(float) * (size_t)C);
        }
    }
    m->bytes += (int64_t)L * 4 * C * 4;
    if (st != SP_OK) { sp_model_free(m); return st; }
    *out = m;
    return SP_OK;
}

/* ------------------------------------------------------------------------------------------ */

/* The number of threads of the calling parallel region (1 outside one). */
static inline int32_t team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* The calling thread's number in its parallel region (0 outside one). */
static inline int32_t team_rank(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int nthreads(int32_t threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

#if SP_X86
/* Eight consecutive rows (tokens t .. t+7, t a multiple of 8) of int8 values qb (8, C) -> their
 * slots in the packed tiles xp (tiles, C/4, SP_TILE, 4) as q + 128 (unsigned bytes, as vpdpbusd
 * and vpmaddubsw take them): one 32-byte run per 4-block, 8x8 blocks of int32 transposed in
 * registers (not one strided 4-byte store per block and row). */
SP_AVX2 static void scatter8(const int8_t *qb, size_t ld, int32_t C, int32_t t, uint8_t *xp) {
    uint8_t *base = xp + (size_t)(t / SP_TILE) * C * SP_TILE + (size_t)(t % SP_TILE) * 4;
    const __m256i off = _mm256_set1_epi8((char)0x80);
    int32_t c = 0;
    for (; c + 32 <= C; c += 32) { /* 8 blocks of 4 */
        __m256 r[8];
        for (int k = 0; k < 8; k++) r[k] = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(qb + (size_t)k * ld + c)));
        transpose8(r); /* r[j]: block c/4 + j of the 8 tokens */
        for (int j = 0; j < 8; j++)
            _mm256_store_si256((__m256i *)(base + (size_t)(c / 4 + j) * SP_TILE * 4), _mm256_xor_si256(_mm256_castps_si256(r[j]), off));
    }
    for (; c < C; c++)
        for (int k = 0; k < 8; k++) base[(size_t)(c / 4) * SP_TILE * 4 + (size_t)k * 4 + c % 4] = (uint8_t)(qb[(size_t)k * ld + c] + 128);
}

#endif

#if SP_X86
/* prep_rows' SIMD work on the tokens ta .. tb-1, on the calling thread, 8 at a time: tokens >= N get
 * zero values and scale; quant == 0: the LayerNorm alone (tokens < N). Token t's row of x is at
 * x + (t - xb) * C, of r at r + (t - rb) * C (a unit's own buffer: xb, rb its first token; else 0).
 * xq: int8 rows of stride ldq per token (the AMX kernel's input); xp: the packed tiles from token
 * tbase on (a multiple of SP_TILE), NULL when no kernel reads them (AMX; else ta and tb are
 * multiples of 8: the packing takes whole groups of 8 tokens). w512: the quantiser in 512-bit
 * registers (AVX-512 CPUs). */
static void prep_span(float *x, int32_t xb, const float *r, int32_t rb, const float *gamma, const float *beta, float eps, float *out,
                      int quant, int32_t N, int32_t C, int8_t *xq, size_t ldq, float *xs, uint8_t *xp, int32_t tbase, int32_t ta, int32_t tb,
                      int w512) {
    for (int32_t t8 = ta; t8 < tb; t8 += 8) {
        const int n8 = tb - t8 < 8 ? tb - t8 : 8;
        int8_t *qb = xq + (size_t)t8 * ldq;
        const int nv = N - t8 < n8 ? (N - t8 > 0 ? N - t8 : 0) : n8; /* its tokens < N */
        const float *src[8], *res[8];
        float *dst[8], amax[8];
        for (int k = 0; k < nv; k++) {
            const int32_t t = t8 + k;
            src[k] = x + (size_t)(t - xb) * C;
            res[k] = r ? r + (size_t)(t - rb) * C : NULL;
            dst[k] = gamma ? out + (size_t)t * C : NULL;
        }
        if (gamma) layernorm_n_avx2(src, r ? res : NULL, nv, C, gamma, beta, eps, dst, amax);
        for (int32_t k = 0; k < n8 && quant; k++) {
            const int32_t t = t8 + k;
            if (k >= nv) {
                memset(qb + (size_t)k * ldq, 0, (size_t)C);
                xs[t] = 0.f;
            } else if (gamma) {
                xs[t] = quantize_row_amax_simd(dst[k], C, amax[k], w512, qb + (size_t)k * ldq);
            } else {
                xs[t] = quantize_row_simd(src[k], C, w512, qb + (size_t)k * ldq);
            }
        }
        if (quant && xp) scatter8(qb, ldq, C, t8 - tbase, xp);
    }
}
#endif

/* The row-wise work before a linear layer, fused into one pass per row (a worksharing loop: called
 * by every thread of a parallel region, ending with its barrier):
 *   src = LayerNorm(x + r) -> out   when gamma != NULL (r may be NULL), else src = x;
 *   per-token INT8 quantisation of src -> xs, and xq (scalar kernel) or the packed tiles xp
 *                                   (uint8, q + 128) when quant.
 * Every step is the same arithmetic as the unfused ops, row by row. */
static void prep_rows(float *x, const float *r, const float *gamma, const float *beta, float eps, float *out, int quant,
                      int32_t N, int32_t C, int8_t *xq, float *xs, uint8_t *xp, int isa) {
#if SP_X86
    if (isa >= SP_ISA_AVX2 && quant) {
        /* groups of 8 tokens over the whole tiles (tokens >= N: zero values and scale), in units
         * of two groups so that two threads never write one 64-byte line of the tiles or of xs,
         * split into contiguous ranges as run_linear splits the tokens: a thread mostly reads
         * rows that it wrote itself. xq: (tiles * SP_TILE, C) scratch for the groups' int8 rows. */
        const int32_t T = (N + SP_TILE - 1) / SP_TILE * SP_TILE;
        if (isa == SP_ISA_AMX) { /* no packing: the tokens < N in equal shares, the padding with the last */
            const int32_t nth = team_size();
#pragma omp for schedule(static)
            for (int32_t u = 0; u < nth; u++)
                prep_span(x, 0, r, 0, gamma, beta, eps, out, 1, N, C, xq, (size_t)C, xs, NULL, 0, (int32_t)((int64_t)N * u / nth),
                          u + 1 == nth ? T : (int32_t)((int64_t)N * (u + 1) / nth), 1);
            return;
        }
        const int32_t units = T / 16;
#pragma omp for schedule(static)
        for (int32_t u = 0; u < units; u++)
            prep_span(x, 0, r, 0, gamma, beta, eps, out, 1, N, C, xq, (size_t)C, xs, xp, 0, 16 * u, 16 * u + 16, isa >= SP_ISA_VNNI);
        return;
    }
#endif
    const int use_avx2 = isa >= SP_ISA_AVX2;
    (void)xp;
#pragma omp for schedule(static)
    for (int32_t t = 0; t < N; t++) {
        float *src = x + (size_t)t * C;
        if (gamma) {
            float *o = out + (size_t)t * C;
            const float *rr = r ? r + (size_t)t * C : NULL;
#if SP_X86
            if (use_avx2) {
                float amax;
                layernorm_n_avx2((const float *const *)&src, rr ? &rr : NULL, 1, C, gamma, beta, eps, &o, &amax);
            }
            else
#endif
                layernorm_add_ref(src, rr, 1, C, gamma, beta, eps, o);
            src = o;
        }
        if (quant) xs[t] = quantize_row(src, C, xq + (size_t)t * C);
    }
}

/* Token embedding row: hr = word[id] * scale[id] + position[p] + token_type[0]. */
static void embed_row(const sp_model *m, int32_t id, int32_t p, float *hr) {
    const int32_t C = m->cfg.hidden;
    const int8_t *wr = m->word + (size_t)id * C;
    const float ws = m->word_scale[id];
    const float *pr = m->position + (size_t)p * C;
    for (int32_t c = 0; c < C; c++) hr[c] = (float)wr[c] * ws + pr[c] + m->token_type[c];
}

/* The embedding rows of tokens t0 .. t1-1 of the batch (a thread's share, which may start and end
 * inside a sequence): a token's position is its offset in its sequence (off: the n_seqs + 1
 * sequence starts). */
static void embed_span(const sp_model *m, const int32_t *ids, const int32_t *off, int32_t n_seqs, int32_t t0, int32_t t1, float *h) {
    int32_t s = 0, hi = n_seqs - 1; /* the sequence holding t0: the last s with off[s] <= t0 */
    while (s < hi) {
        const int32_t mid = s + (hi - s + 1) / 2;
        if (off[mid] <= t0) s = mid;
        else hi = mid - 1;
    }
    for (int32_t t = t0; t < t1; t++) {
        while (off[s + 1] <= t) s++;
        embed_row(m, ids[t], t - off[s], h + (size_t)t * m->cfg.hidden);
    }
}

#if SP_X86
/* Whether a kernel call takes two 32-token tiles at once: AMX always (one weight-tile expansion for
 * 64 tokens), VNNI when both tiles fit in L1 (in <= 512: <= 32 KB; slower for in = 1536, L2-bound). */
static inline int two_tiles(const sp_lin *L, int isa) { return isa == SP_ISA_AMX || (isa == SP_ISA_VNNI && L->in <= 512); }

/* One SIMD kernel call on the packed tile(s) at tp (scales sp), rows o0 .. o1-1, tokens t0 .. t0+n-1:
 * both tiles at once (lin_tile2_vnni) when two and n > SP_TILE; AMX: the int8 rows at xq (ldq bytes
 * apart) of the tile's first token instead, n <= SP_TILE. */
static void lin_call(const sp_lin *L, int isa, int two, const uint8_t *tp, const int8_t *xq, size_t ldq, const float *sp, int32_t o0,
                     int32_t o1, int32_t t0, int32_t n, int gelu, float *y, int32_t N) {
#if SP_HAVE_AMX
    if (isa == SP_ISA_AMX) {
        if (two && n > SP_TILE) lin_tile2_amx(L, xq, ldq, sp, o0, o1, t0, n, gelu, y, N);
        else lin_tile_amx(L, xq, ldq, sp, o0, o1, t0, n, gelu, y, N);
        return;
    }
#endif
    (void)xq, (void)ldq;
    if (two && n > SP_TILE) lin_tile2_vnni(L, tp, sp, o0, o1, t0, n, gelu, y, N);
    else if (isa == SP_ISA_VNNI) lin_tile_vnni(L, tp, sp, o0, o1, t0, n, gelu, y, N);
    else lin_tile_avx2(L, tp, sp, o0, o1, t0, n, gelu, y, N);
}
#endif

/* y[j]: (N, out) = linear j of L[0 .. nl-1] (layers of the same input and width, e.g. q, k and v: one
 * worksharing loop for all of them, one barrier instead of nl) on xq, GELU(linear) when gelu (the same
 * per-element arithmetic as gelu_inplace, applied in the kernels' epilogue); xp: packed tiles and
 * xsp: (tiles * SP_TILE) scales for the SIMD paths. Called by every thread of a parallel region. */
static void run_linears(const sp_lin *L, int nl, const int8_t *xq, const float *xs, const uint8_t *xp, const float *xsp, int32_t N,
                        int isa, int gelu, float *const *y) {
#if SP_X86
    if (isa >= SP_ISA_AVX2) {
        const int32_t tiles = (N + SP_TILE - 1) / SP_TILE;
        const int32_t nth = team_size();
        /* rows in chunks of 64; one tile and AMX: one chunk per thread (16-row groups), so that each
         * thread configures the tiles once per linear and expands its weight tiles back to back */
        const int32_t chunk = isa == SP_ISA_AMX && tiles == 1 ? (L->out + 16 * nth - 1) / (16 * nth) * 16 : 64;
        const int32_t chunks = (L->out + chunk - 1) / chunk;
        /* token tile outer, row chunk inner: a tile (32 tokens, <= 48 KB) stays in L1/L2 while the
         * layer's weights (<= ~300 KB at 80% sparsity) stream from L2; tiles two at a time where
         * two_tiles says (VNNI measured 5-20% faster with both in L1) */
        const int32_t per = two_tiles(L, isa) ? 2 : 1, groups = (tiles + per - 1) / per, items = groups * chunks;
        /* items (tile group, row chunk, linear), the linear fastest: at one tile each thread gets the
         * same rows of q, k and v -- the same heads, which the attention then gives it (below) */
#pragma omp for schedule(static)
        for (int32_t w = 0; w < nl * items; w++) {
            const int32_t j = w % nl, c = w / nl % chunks, i = w / nl / chunks * per;
            const int32_t o0 = c * chunk, o1 = o0 + chunk < L->out ? o0 + chunk : L->out;
            const int32_t t0 = i * SP_TILE, n = N - t0 < per * SP_TILE ? N - t0 : per * SP_TILE;
            lin_call(&L[j], isa, per == 2, xp ? xp + (size_t)i * L->in * SP_TILE : NULL, xq + (size_t)t0 * L->in, (size_t)L->in, xsp + (size_t)i * SP_TILE,
                     o0, o1, t0, n, gelu, y[j], N);
        }
        return;
    }
#endif
    (void)xp; (void)xsp;
    const int32_t chunk = 16, chunks = (N + chunk - 1) / chunk;
#pragma omp for schedule(static)
    for (int32_t w = 0; w < nl * chunks; w++) {
        const int32_t j = w / chunks, c = w % chunks;
        const int32_t t0 = c * chunk, t1 = t0 + chunk < N ? t0 + chunk : N;
        lin_scalar(&L[j], xq, xs, t0, t1, 0, L[j].out, gelu, y[j], N);
    }
}

static void run_linear(const sp_lin *L, const int8_t *xq, const float *xs, const uint8_t *xp, const float *xsp, int32_t N, int isa,
                       int gelu, float *y) {
    run_linears(L, 1, xq, xs, xp, xsp, N, isa, gelu, &y);
}

#if SP_X86
/* run_linear's work on the tiles i0 .. i1-1 (one or two: a unit of the fused forward below), every
 * row, on the calling thread (the same kernels and arithmetic); xpu: the unit's packed tiles (xq:
 * the int8 rows, ldq bytes apart, for AMX); token t's outputs at token t - tb of y (tb: 0, or the
 * unit's first token for its own buffer). */
static void linear_unit(const sp_lin *L, const uint8_t *xpu, const int8_t *xq, size_t ldq, const float *xs, int32_t N, int isa, int gelu,
                        float *y, int32_t tb, int32_t i0, int32_t i1) {
    const int two = two_tiles(L, isa);
    for (int32_t i = i0; i < i1;) {
        const int32_t t0 = i * SP_TILE, cap = (two && i + 1 < i1 ? 2 : 1) * SP_TILE, n = N - t0 < cap ? N - t0 : cap;
        lin_call(L, isa, two, xpu ? xpu + (size_t)(i - i0) * L->in * SP_TILE : NULL, xq + (size_t)t0 * ldq, ldq, xs + (size_t)i * SP_TILE, 0, L->out,
                 t0 - tb, n, gelu, y, N);
        i += n > SP_TILE ? 2 : 1;
    }
}
#endif

/* Attention work item it of a batch: sequence it / (H / hg), heads from (it % (H / hg)) * hg, hg of them. */
static void attention_item(const float *q, const float *k, const float *v, size_t hs, size_t ld, const int32_t *off, const int32_t *lengths,
                           int32_t C, int32_t H, int32_t hg, int32_t it, float *ctx, float *sc, int avx, int w512) {
    const int32_t s = it / (H / hg), h0 = (it % (H / hg)) * hg;
    const size_t o = (size_t)off[s] * ld;
#if SP_X86
    if (avx && (C / H) % 8 == 0) {
        attention_seq_avx2(q + o, k + o, v + o, hs, ld, lengths[s], C, H, h0, h0 + hg, ctx + (size_t)off[s] * C, sc, w512);
        return;
    }
#endif
    (void)avx, (void)w512;
    attention_seq_ref(q + o, k + o, v + o, hs, ld, lengths[s], C, H, h0, h0 + hg, ctx + (size_t)off[s] * C, sc);
}

sp_status sp_quantize_rows(const float *x, int32_t T, int32_t C, int8_t *xq, float *xs) {
    if (!x || !xq || !xs || T <= 0 || C <= 0) return SP_ERR_ARG;
    for (int32_t t = 0; t < T; t++) xs[t] = quantize_row(x + (size_t)t * C, C, xq + (size_t)t * C);
    return SP_OK;
}

sp_status sp_quantize_rows_kernel(const float *x, int32_t T, int32_t C, sp_kernel kernel, int8_t *xq, float *xs) {
    if (!x || !xq || !xs || T <= 0 || C <= 0) return SP_ERR_ARG;
    int isa;
    sp_status st = pick_kernel(kernel, &isa);
    if (st != SP_OK) return st;
#if SP_X86
    if (isa >= SP_ISA_AVX2) {
        for (int32_t t = 0; t < T; t++) xs[t] = quantize_row_simd(x + (size_t)t * C, C, isa >= SP_ISA_VNNI, xq + (size_t)t * C);
        return SP_OK;
    }
#endif
    return sp_quantize_rows(x, T, C, xq, xs);
}

sp_status sp_gelu(const float *x, int64_t n, sp_kernel kernel, float *y) {
    if (!x || !y || n <= 0) return SP_ERR_ARG;
    int isa;
    sp_status st = pick_kernel(kernel, &isa);
    if (st != SP_OK) return st;
    if (y != x) memmove(y, x, sizeof(float) * (size_t)n);
#if SP_X86
    if (isa >= SP_ISA_AVX2) {
        gelu_inplace_avx2(y, (size_t)n);
        return SP_OK;
    }
#endif
    gelu_inplace_ref(y, (size_t)n);
    return SP_OK;
}

sp_status sp_linear_forward(const sp_linear *lin, const int8_t *xq, const float *xs, int32_t T, sp_kernel kernel,
                            int32_t threads, float *y) {
    if (!lin || !xq || !xs || !y || T <= 0) return SP_ERR_ARG;
    sp_status st = check_linear(lin, lin->out, lin->in);
    if (st != SP_OK) return st;
    /* symmetric activations, as the encoder's own quantisation makes them (the AVX2 kernel negates
     * them for its wide blocks, and -(-128) is not an int8) */
    for (size_t i = 0; i < (size_t)T * (size_t)lin->in; i++)
        if (xq[i] == -128) return SP_ERR_VALUE;
    int isa;
    if ((st = pick_kernel(kernel, &isa)) != SP_OK) return st;
    if (isa == SP_ISA_AMX && (st = amx_takes(lin, kernel, &isa)) != SP_OK) return st;
    const int use_avx2 = isa >= SP_ISA_AVX2, packed = use_avx2 && isa != SP_ISA_AMX;
    sp_lin L;
    memset(&L, 0, sizeof L);
    int64_t bytes = 0;
    st = copy_linear(lin, &L, &bytes);
    if (st == SP_OK && isa == SP_ISA_AMX) st = amx_linear(lin, &L, &bytes);
    const int32_t tiles = (T + SP_TILE - 1) / SP_TILE;
    uint8_t *xp = packed ? sp_alloc((size_t)tiles * lin->in * SP_TILE) : NULL;
    float *xsp = use_avx2 ? sp_alloc(sizeof(float) * (size_t)tiles * SP_TILE) : NULL;
    /* the rows, zero-padded to whole tiles (zero scale), 64 bytes readable past the last (AMX) */
    int8_t *qpad = use_avx2 ? calloc((size_t)tiles * SP_TILE * lin->in + 64, 1) : NULL;
    if (st == SP_OK && use_avx2 && ((packed && !xp) || !xsp || !qpad)) st = SP_ERR_NOMEM;
    if (st == SP_OK) {
        const int nt = nthreads(threads);
        if (use_avx2) {
            memset(xsp, 0, sizeof(float) * (size_t)tiles * SP_TILE);
            memcpy(xsp, xs, sizeof(float) * (size_t)T);
            memcpy(qpad, xq, (size_t)T * lin->in);
#if SP_X86
            /* packed 8 rows at a time */
            if (packed)
                for (int32_t g = 0; g < tiles * (SP_TILE / 8); g++) scatter8(qpad + (size_t)g * 8 * lin->in, (size_t)lin->in, lin->in, g * 8, xp);
#endif
        }
#pragma omp parallel num_threads(nt)
        run_linear(&L, use_avx2 ? qpad : xq, xs, xp, xsp, T, isa, 0, y);
    }
    free(qpad);
    free(xp);
    free(xsp);
    free_linear(&L);
    return st;
}

/* ------------------------------------------------------------------------------------------ */

sp_status sp_forward(const sp_model *m, const int32_t *ids, const int32_t *lengths, int32_t n_seqs, int32_t threads,
                     float *probs, double *timings) {
    if (!m || !ids || !lengths || !probs || n_seqs <= 0 || threads < 0 || threads > 256) return SP_ERR_ARG;
    const sp_config *cfg = &m->cfg;
    const int32_t C = cfg->hidden, I = cfg->intermediate, H = cfg->num_heads, K = cfg->num_labels;
    int64_t N64 = 0;
    int32_t Tmax = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        if (lengths[s] <= 0 || lengths[s] > cfg->max_position) return SP_ERR_LENGTH;
        N64 += lengths[s];
        Tmax = lengths[s] > Tmax ? lengths[s] : Tmax;
    }
    if (N64 > (1 << 24)) return SP_ERR_ARG;
    const int32_t N = (int32_t)N64;
    for (int32_t t = 0; t < N; t++)
        if (ids[t] < 0 || ids[t] >= cfg->vocab_size) return SP_ERR_INDEX;

    const int nt = nthreads(threads);
    const int isa = m->isa, avx = isa >= SP_ISA_AVX2, packed = avx && isa != SP_ISA_AMX; /* packed: the tiles xp */
    const int w512 = isa >= SP_ISA_VNNI && (C / cfg->num_heads) % 16 == 0; /* attention's products in 512-bit registers */
    const int w512q = isa >= SP_ISA_VNNI;                                   /* the quantiser in 512-bit registers */
    const int32_t tiles = (N + SP_TILE - 1) / SP_TILE, units = (tiles + 1) / 2; /* units: 2 tiles */
    const size_t NC = (size_t)N * C, NI = (size_t)N * I;
    const size_t scratch_per = ((size_t)Tmax + (size_t)(C / H) + 1) * (size_t)((Tmax + 7) / 8 * 8); /* attention_seq_avx2's */
    /* one workspace block carved into 64-byte aligned buffers */
    /* the fused schedule (below): batches of several 64-token units per thread */
    const int fused = SP_X86 && avx && nt > 1 && units >= 2 * nt && n_seqs >= 4 * nt;
    const size_t W = (size_t)(I > C ? I : C);
    enum { W_OFF, W_H, W_Q, W_K, W_V, W_CTX, W_FF, W_XQ, W_XS, W_XP, W_SCRATCH, W_N };
    const size_t sz[W_N] = {
        sizeof(int32_t) * (size_t)(n_seqs + 1), sizeof(float) * NC, sizeof(float) * NC, sizeof(float) * NC, sizeof(float) * NC,
        /* W_FF: the feed-forward activations (N, I), or in the fused schedule each thread's unit buffer */
        sizeof(float) * NC, fused ? sizeof(float) * (size_t)nt * 2 * SP_TILE * W : sizeof(float) * NI,
        /* W_XQ: 64 bytes past the last row for the AMX kernel's last column tile */
        (size_t)tiles * SP_TILE * W + 64, sizeof(float) * (size_t)tiles * SP_TILE, packed ? (size_t)tiles * SP_TILE * W : 0,
        sizeof(float) * scratch_per * (size_t)nt};
    size_t at[W_N], total = 0;
    for (int i = 0; i < W_N; i++) {
        at[i] = total;
        total += (sz[i] + SP_ALIGN - 1) / SP_ALIGN * SP_ALIGN;
    }
    sp_model *mm = (sp_model *)m; /* the workspace cache is the handle's only mutable part */
    int expected = 0, cached = atomic_compare_exchange_strong(&mm->ws_busy, &expected, 1);
    char *base;
    if (cached) {
        if (mm->ws_size < total) {
            free(mm->ws);
            mm->ws = sp_alloc(total);
            mm->ws_size = mm->ws ? total : 0;
        }
        base = mm->ws;
    } else {
        base = sp_alloc(total);
    }
    int32_t *off = base ? (int32_t *)(base + at[W_OFF]) : NULL;
    float *h = NULL, *q = NULL, *k = NULL, *v = NULL, *ctx = NULL, *ff = NULL, *xs = NULL, *scratch = NULL;
    int8_t *xq = NULL;
    uint8_t *xp = NULL;
    if (base) {
        h = (float *)(base + at[W_H]), q = (float *)(base + at[W_Q]), k = (float *)(base + at[W_K]), v = (float *)(base + at[W_V]);
        ctx = (float *)(base + at[W_CTX]), ff = (float *)(base + at[W_FF]), xq = (int8_t *)(base + at[W_XQ]);
        xs = (float *)(base + at[W_XS]), xp = packed ? (uint8_t *)(base + at[W_XP]) : NULL, scratch = (float *)(base + at[W_SCRATCH]);
    }
    sp_status st = base ? SP_OK : SP_ERR_NOMEM;
    /* q, k, v: token j of head hh at [hh * hs + j * ld] (head-major, or token-major rows; sp_lin.hd) */
    const size_t ld = (size_t)m->lin[0].hd, hs = ld == (size_t)C ? (size_t)(C / H) : (size_t)N * ld;
    float *const qkv[3] = {q, k, v};
    double t_lin = 0, t_att = 0, t_prep = 0, t_start = SP_NOW();
    if (st == SP_OK) {
        memset(xs, 0, sizeof(float) * (size_t)tiles * SP_TILE);
        off[0] = 0;
        for (int32_t s = 0; s < n_seqs; s++) off[s + 1] = off[s] + lengths[s];
    }
#if SP_X86
    if (st == SP_OK && fused) {
        /* Batches of several 64-token units per thread: each thread owns a contiguous range of tiles
         * (an equal share, the same in every loop of the one parallel region), taken in units of two,
         * and runs everything between two attentions on its own tokens -- the row-wise work, the
         * attention output, the feed-forward block and the next layer's q/k/v -- with no barrier in
         * between (no row it reads was written by another thread); the attention, whose sequences
         * cross unit boundaries, has a barrier on each side: 2 per layer instead of 11. */
        const float eps = cfg->layer_norm_eps;
        const int32_t G = tiles * (SP_TILE / 8); /* groups of 8 tokens */
        /* each tile has its own region of the packed tiles, sized for the widest input (a unit packs
         * its tiles from its first tile's region on), so that units of different threads never
         * overlap whatever width they pack */
        const size_t tstride = (size_t)SP_TILE * W;
#pragma omp parallel num_threads(nt)
        {
            const int th = team_rank(), nth = team_size();
            float *sc = scratch + scratch_per * (size_t)th;
            const int clk = timings && th == 0; /* thread 0 times the steps, when asked */
            /* the unit's own buffer for the outputs of the attention output projection and the
             * feed-forward layers, each consumed by the next step of the same unit: it stays in
             * this core's cache instead of a new stretch of the (N, I) activations per unit */
            float *ub = ff + (size_t)th * 2 * SP_TILE * W;
            double a = 0, b = 0;
            /* this thread's tiles: an equal share (within one tile), in units of two from its first */
            const int32_t ib = (int32_t)((int64_t)tiles * th / nth), ie = (int32_t)((int64_t)tiles * (th + 1) / nth);
            for (int32_t i0 = ib; i0 < ie; i0 += 2) {
                const int32_t i1 = i0 + 2 < ie ? i0 + 2 : ie, g1 = 4 * i1 < G ? 4 * i1 : G, t1 = SP_TILE * i1 < N ? SP_TILE * i1 : N;
                embed_span(m, ids, off, n_seqs, SP_TILE * i0, t1, h);
                a = clock_if(clk);
                uint8_t *xpu = xp ? xp + (size_t)i0 * tstride : NULL;
                prep_span(h, 0, NULL, 0, m->emb_g, m->emb_b, eps, h, 1, N, C, xq, W, xs, xpu, SP_TILE * i0, SP_TILE * i0, 8 * g1, w512q);
                b = clock_if(clk);
                if (th == 0) t_prep += b - a;
                for (int j = 0; j < 3; j++) linear_unit(&m->lin[j], xpu, xq, W, xs, N, isa, 0, qkv[j], 0, i0, i1);
                if (th == 0) t_lin += clock_if(clk) - b;
            }
            for (int32_t l = 0; l < cfg->num_layers; l++) {
                const sp_lin *lin = m->lin + (size_t)l * 6;
                const float *ln = m->ln + (size_t)l * 4 * C;
                const int last = l + 1 == cfg->num_layers;
#pragma omp barrier
                a = clock_if(clk);
#pragma omp for schedule(dynamic, 1)
                for (int32_t s = 0; s < n_seqs; s++) attention_item(q, k, v, hs, ld, off, lengths, C, H, H, s, ctx, sc, 1, w512);
                if (th == 0) t_att += clock_if(clk) - a;
                for (int32_t i0 = ib; i0 < ie; i0 += 2) { /* the same units as above */
                    const int32_t i1 = i0 + 2 < ie ? i0 + 2 : ie, g0 = 4 * i0, g1 = 4 * i1 < G ? 4 * i1 : G;
                    uint8_t *xpu = xp ? xp + (size_t)i0 * tstride : NULL;
                    double tp = 0, tl = 0;
                    a = clock_if(clk);
                    const int32_t T0 = SP_TILE * i0;
                    prep_span(ctx, 0, NULL, 0, NULL, NULL, eps, NULL, 1, N, C, xq, W, xs, xpu, T0, 8 * g0, 8 * g1, w512q);
                    b = clock_if(clk), tp += b - a;
                    linear_unit(&lin[3], xpu, xq, W, xs, N, isa, 0, ub, T0, i0, i1); /* attention output projection */
                    a = clock_if(clk), tl += a - b;
                    prep_span(h, 0, ub, T0, ln, ln + C, eps, h, 1, N, C, xq, W, xs, xpu, T0, 8 * g0, 8 * g1, w512q);
                    b = clock_if(clk), tp += b - a;
                    linear_unit(&lin[4], xpu, xq, W, xs, N, isa, 1, ub, T0, i0, i1);
                    a = clock_if(clk), tl += a - b;
                    prep_span(ub, T0, NULL, 0, NULL, NULL, eps, NULL, 1, N, I, xq, W, xs, xpu, T0, 8 * g0, 8 * g1, w512q);
                    b = clock_if(clk), tp += b - a;
                    linear_unit(&lin[5], xpu, xq, W, xs, N, isa, 0, ub, T0, i0, i1);
                    a = clock_if(clk), tl += a - b;
                    prep_span(h, 0, ub, T0, ln + 2 * C, ln + 3 * C, eps, h, !last, N, C, xq, W, xs, xpu, T0, 8 * g0, 8 * g1, w512q);
                    b = clock_if(clk), tp += b - a;
                    if (!last)
                        for (int j = 0; j < 3; j++) linear_unit(&lin[6 + j], xpu, xq, W, xs, N, isa, 0, qkv[j], 0, i0, i1);
                    tl += clock_if(clk) - b;
                    if (th == 0) t_prep += tp, t_lin += tl;
                }
            }
        }
    } else if (st == SP_OK) {
#else
    if (st == SP_OK) {
#endif
        /* One parallel region for the whole encoder, a worksharing loop (and its barrier) per step:
         * at batch 1 a fork/join per step cost more than the steps (~50 per forward). */
        const float eps = cfg->layer_norm_eps;
        /* work items of the attention: (sequence, group of heads); whole sequences when there are
         * enough of them to keep every thread busy, single heads otherwise (batch 1) */
        const int32_t hg = n_seqs >= 4 * nt ? H : 1, items = n_seqs * (H / hg);
#pragma omp parallel num_threads(nt)
        {
            const int th = team_rank(), nth = team_size();
            float *sc = scratch + scratch_per * (size_t)th;
            const int clk = timings && th == 0;   /* thread 0 times the steps, when asked */
            double a = 0, tl = 0, ta = 0, tp = 0; /* thread 0's clock: the steps' wall times */
            /* embeddings: h = LN(word[id] * scale[id] + position[p] + token_type[0]), the rows in
             * equal token shares (by sequence, batch 1 ran on one thread) */
            embed_span(m, ids, off, n_seqs, (int32_t)((int64_t)N * th / nth), (int32_t)((int64_t)N * (th + 1) / nth), h);
#pragma omp barrier
            a = clock_if(clk);
            prep_rows(h, NULL, m->emb_g, m->emb_b, eps, h, 1, N, C, xq, xs, xp, isa);
#define SP_STEP(acc) \
    do {                                \
        const double n_ = clock_if(clk); \
        acc += n_ - a, a = n_;          \
    } while (0)
            SP_STEP(tp);
            for (int32_t l = 0; l < cfg->num_layers; l++) {
                const sp_lin *lin = m->lin + (size_t)l * 6;
                const float *ln = m->ln + (size_t)l * 4 * C;
                run_linears(&lin[0], 3, xq, xs, xp, xs, N, isa, 0, qkv);
                SP_STEP(tl);
                /* single heads: in static ranges, so that a thread mostly takes the heads whose q, k
                 * and v rows it computed itself (run_linears); whole sequences: as they come */
                if (hg == 1) {
#pragma omp for schedule(static)
                    for (int32_t it = 0; it < items; it++) attention_item(q, k, v, hs, ld, off, lengths, C, H, hg, it, ctx, sc, avx, w512);
                } else {
#pragma omp for schedule(dynamic, 1)
                    for (int32_t it = 0; it < items; it++) attention_item(q, k, v, hs, ld, off, lengths, C, H, hg, it, ctx, sc, avx, w512);
                }
                SP_STEP(ta);
                prep_rows(ctx, NULL, NULL, NULL, eps, NULL, 1, N, C, xq, xs, xp, isa);
                SP_STEP(tp);
                run_linear(&lin[3], xq, xs, xp, xs, N, isa, 0, ctx); /* ctx <- attention output projection */
                SP_STEP(tl);
                prep_rows(h, ctx, ln, ln + C, eps, h, 1, N, C, xq, xs, xp, isa);
                SP_STEP(tp);
                run_linear(&lin[4], xq, xs, xp, xs, N, isa, 1, ff);
                SP_STEP(tl);
                prep_rows(ff, NULL, NULL, NULL, eps, NULL, 1, N, I, xq, xs, xp, isa); /* GELU: in ffn_in's epilogue */
                SP_STEP(tp);
                run_linear(&lin[5], xq, xs, xp, xs, N, isa, 0, ctx);
                SP_STEP(tl);
                /* the layer's output LayerNorm, fused with the next layer's quantisation */
                prep_rows(h, ctx, ln + 2 * C, ln + 3 * C, eps, h, l + 1 < cfg->num_layers, N, C, xq, xs, xp, isa);
                SP_STEP(tp);
            }
#undef SP_STEP
            if (th == 0) t_lin += tl, t_att += ta, t_prep += tp;
        }
    }
    if (st == SP_OK) {
        /* pooler (tanh dense on [CLS]) + classifier + softmax, per sequence */
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int32_t s = 0; s < n_seqs; s++) {
            const float *cls = h + (size_t)off[s] * C;
            float *pooled = ctx + (size_t)s * C; /* reuse ctx: (n_seqs, C) fits since n_seqs <= N */
            if (avx) dense_t_avx2(m->pool_wt, m->pool_b, cls, C, C, pooled);
            else dense_t_ref(m->pool_wt, m->pool_b, cls, C, C, pooled);
            for (int32_t o = 0; o < C; o++) pooled[o] = tanhf(pooled[o]);
            float *pr = probs + (size_t)s * K, mx = -INFINITY, sum = 0.f;
            for (int32_t j = 0; j < K; j++) {
                float a = m->cls_b[j];
                const float *wr = m->cls_w + (size_t)j * C;
                for (int32_t c = 0; c < C; c++) a += wr[c] * pooled[c];
                pr[j] = a;
                mx = a > mx ? a : mx;
            }
            for (int32_t j = 0; j < K; j++) sum += (pr[j] = expf(pr[j] - mx));
            for (int32_t j = 0; j < K; j++) pr[j] /= sum;
        }
        /* bounded parameters keep real inputs finite; a model built to overflow float must still
         * not hand back NaN as a probability */
        for (int64_t i = 0; i < (int64_t)n_seqs * K; i++)
            if (!(probs[i] >= 0.f && probs[i] <= 1.f)) { st = SP_ERR_VALUE; break; }
    }
    if (timings && st == SP_OK) {
        double total = SP_NOW() - t_start;
        timings[0] += t_lin;
        timings[1] += t_att;
        timings[2] += t_prep;
        timings[3] += total - t_lin - t_att - t_prep;
        timings[4] += total;
    }
    if (cached) atomic_store(&mm->ws_busy, 0);
    else free(base);
    return st;
}
