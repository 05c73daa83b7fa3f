/* Fuzzer of the C loader and forward entries themselves, bypassing the Python validator.
 *
 * Each execution builds a small model description (random dimensions, random 4-block CSR
 * linears), then corrupts 0-4 fields the way a hostile or buggy caller could: row pointers, block
 * indices, weight values, scales, biases, declared shapes and block counts, config fields, NULL
 * pointers, kernel ids; then token ids, lengths, batch sizes and thread counts. Every buffer is
 * allocated with exactly the size its declaration implies (so AddressSanitizer sees any read
 * outside it); what the API contract leaves to the caller (a buffer shorter than the sizes it
 * declares) is never faked. sp_model_create / sp_forward / sp_linear_forward must return a status,
 * never read out of bounds, overflow, leak or crash.
 *
 * Build (tests/test_native_sanitizers.py does): gcc -O1 -g -fopenmp -fsanitize=address,undefined
 *   -fno-sanitize-recover=undefined -Inative tests/native/fuzz_loader.c native/sparsepulse.c -lm
 * Run: fuzz_loader EXECUTIONS SEED  -> prints "executions N ok M" and the statuses seen; exit 0.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparsepulse.h"

static uint64_t rs;
static uint32_t rnd(void) { /* xorshift64* */
    rs ^= rs >> 12; rs ^= rs << 25; rs ^= rs >> 27;
    return (uint32_t)((rs * 2685821657736338717ULL) >> 32);
}
static int32_t pick(int32_t lo, int32_t hi) { return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1)); }
static float frnd(void) { return (float)(rnd() & 0xffff) / 65536.0f - 0.5f; }

static const int32_t HOSTILE_INT[] = {0, -1, -4, 1, 3, 5, 7, 1 << 16, (1 << 16) + 4, 1 << 20, 1 << 30, INT32_MAX, INT32_MIN, 1000000, 262144};
static int32_t hostile_int(void) { return HOSTILE_INT[rnd() % (sizeof HOSTILE_INT / sizeof *HOSTILE_INT)]; }
static float hostile_float(void) {
    const float v[] = {NAN, INFINITY, -INFINITY, -1.0f, 0.0f, -0.0f, 1e-40f, 3e38f, -3e38f};
    return v[rnd() % (sizeof v / sizeof *v)];
}

typedef struct {
    int32_t *row_ptr;
    uint16_t *col;
    int8_t *val;
    float *scale, *bias;
    int32_t out, nnz; /* what was allocated: (out + 1) row pointers, nnz blocks, out scales */
} lin_mem;

/* A random 4-block CSR linear (out, in); with probability, a declared nnz that differs from the
 * real one (the arrays then have the declared length, as a caller's would). */
static void make_linear(sp_linear *l, lin_mem *m, int32_t out, int32_t in, int corrupt) {
    int32_t cols = in / SP_BLOCK;
    m->row_ptr = malloc(sizeof(int32_t) * (size_t)(out + 1));
    int32_t nnz = 0;
    m->row_ptr[0] = 0;
    for (int32_t o = 0; o < out; o++) {
        nnz += pick(0, cols);
        m->row_ptr[o + 1] = nnz;
    }
    int32_t decl = nnz;
    if (corrupt && rnd() % 8 == 0) decl = (rnd() % 2) ? -pick(1, 5) : nnz + pick(1, 9);
    size_t n = decl > 0 ? (size_t)decl : 0;
    m->col = malloc(sizeof(uint16_t) * (n ? n : 1));
    m->val = malloc(4 * (n ? n : 1));
    for (size_t b = 0; b < n; b++) {
        m->col[b] = (uint16_t)(rnd() % (uint32_t)cols); /* blocks of a row in any order: allowed */
        for (int k = 0; k < 4; k++) m->val[b * 4 + k] = (int8_t)pick(-127, 127);
    }
    m->scale = malloc(sizeof(float) * (size_t)out);
    m->bias = malloc(sizeof(float) * (size_t)out);
    for (int32_t o = 0; o < out; o++) { m->scale[o] = 0.001f + (frnd() + 0.5f) * 0.02f; m->bias[o] = frnd(); }
    m->out = out; m->nnz = (int32_t)n;
    l->out = out; l->in = in; l->nnz_blocks = decl;
    l->row_ptr = m->row_ptr; l->col_idx = m->col; l->values = m->val; l->scale = m->scale; l->bias = m->bias;
}

static void corrupt_linear(sp_linear *l, lin_mem *m) {
    int32_t out = m->out, nnz = m->nnz;
    switch (rnd() % 11) {
    case 0: m->row_ptr[pick(0, out)] = hostile_int(); break;
    case 1: m->row_ptr[pick(1, out)] = pick(-3, nnz + 3); break;
    case 2: if (out > 1) { int32_t a = pick(0, out), b = pick(0, out), t = m->row_ptr[a]; m->row_ptr[a] = m->row_ptr[b]; m->row_ptr[b] = t; } break;
    case 3: if (nnz) m->col[pick(0, nnz - 1)] = (uint16_t)rnd(); break;
    case 4: if (nnz) m->val[pick(0, nnz * 4 - 1)] = (int8_t)-128; break;
    case 5: m->scale[pick(0, out - 1)] = hostile_float(); break;
    case 6: m->bias[pick(0, out - 1)] = (rnd() % 2) ? NAN : INFINITY; break;
    case 7: l->out = hostile_int(); break;
    case 8: l->in = hostile_int(); break;
    case 9: if (rnd() % 2) l->row_ptr = NULL; else l->scale = NULL; break;
    default: if (nnz) l->col_idx = NULL; else l->bias = NULL; break;
    }
}

static void free_linear(lin_mem *m) { free(m->row_ptr); free(m->col); free(m->val); free(m->scale); free(m->bias); }

static float *floats(size_t n, float amp) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = frnd() * amp;
    return p;
}

static long counts[16];

static void one(void) {
    const int32_t Cs[] = {4, 8, 16, 32};
    int32_t C = Cs[rnd() % 4], heads = (int32_t[]){1, 2, 4}[rnd() % 3];
    if (C % heads) heads = 1;
    sp_config cfg = {pick(1, 64), C, pick(1, 3), heads, 4 * pick(1, 16), pick(1, 32), pick(1, 3), pick(1, 5), 1e-12f};
    const int32_t V = cfg.vocab_size, L = cfg.num_layers, I = cfg.intermediate, P = cfg.max_position, K = cfg.num_labels;
    int ncorrupt = (rnd() % 4 == 0) ? 0 : pick(1, 4);
    int corrupting = ncorrupt > 0;

    int8_t *word = malloc((size_t)V * C);
    for (int32_t i = 0; i < V * C; i++) word[i] = (int8_t)pick(-128, 127);
    float *word_scale = floats((size_t)V, 0.0f);
    for (int32_t i = 0; i < V; i++) word_scale[i] = 0.01f;
    float *pos = floats((size_t)P * C, 0.2f), *typ = floats((size_t)cfg.type_vocab_size * C, 0.2f);
    float *g = floats((size_t)C, 0.1f), *bta = floats((size_t)C, 0.1f), *pw = floats((size_t)C * C, 0.3f), *pb = floats((size_t)C, 0.1f);
    float *cw = floats((size_t)K * C, 1.0f), *cb = floats((size_t)K, 0.1f);
    for (int32_t i = 0; i < C; i++) g[i] += 1.0f;
    sp_layer *layers = calloc((size_t)L, sizeof(sp_layer));
    lin_mem *mem = calloc((size_t)L * 6, sizeof(lin_mem));
    for (int32_t l = 0; l < L; l++) {
        sp_linear *ls[6] = {&layers[l].query, &layers[l].key, &layers[l].value, &layers[l].attn_out, &layers[l].ffn_in, &layers[l].ffn_out};
        const int32_t outs[6] = {C, C, C, C, I, C}, ins[6] = {C, C, C, C, C, I};
        for (int j = 0; j < 6; j++) make_linear(ls[j], &mem[l * 6 + j], outs[j], ins[j], corrupting);
        layers[l].attn_ln_gamma = g; layers[l].attn_ln_beta = bta; layers[l].ffn_ln_gamma = g; layers[l].ffn_ln_beta = bta;
    }
    sp_weights w = {word, word_scale, pos, typ, g, bta, layers, pw, pb, cw, cb};
    sp_kernel kernel = (sp_kernel)pick(0, 4);
    for (int c = 0; c < ncorrupt; c++) {
        switch (rnd() % 6) {
        case 0: case 1: case 2: {
            int32_t l = pick(0, L - 1), j = pick(0, 5);
            sp_linear *ls[6] = {&layers[l].query, &layers[l].key, &layers[l].value, &layers[l].attn_out, &layers[l].ffn_in, &layers[l].ffn_out};
            corrupt_linear(ls[j], &mem[l * 6 + j]);
            break;
        }
        case 3: /* config fields: only values the library must refuse before reading any buffer */
            switch (rnd() % 9) {
            case 0: cfg.hidden = (rnd() % 2) ? -C : C + 2; break;
            case 1: cfg.num_heads = (rnd() % 2) ? 0 : -heads; break;
            case 2: cfg.num_layers = (rnd() % 2) ? 0 : 65; break;
            case 3: cfg.vocab_size = (rnd() % 2) ? 0 : (1 << 24) + 1; break;
            case 4: cfg.max_position = (rnd() % 2) ? -1 : 8193; break;
            case 5: cfg.num_labels = (rnd() % 2) ? 0 : 1025; break;
            case 6: cfg.layer_norm_eps = (rnd() % 2) ? NAN : -1.0f; break;
            case 7: cfg.intermediate = (rnd() % 2) ? I + 1 : SP_MAX_DIM + 4; break;
            default: cfg.type_vocab_size = (rnd() % 2) ? 0 : -3; break;
            }
            break;
        case 4: /* parameter values */
            switch (rnd() % 5) {
            case 0: word_scale[pick(0, V - 1)] = hostile_float(); break;
            case 1: g[pick(0, C - 1)] = NAN; break;
            case 2: pos[pick(0, P * C - 1)] = INFINITY; break;
            case 3: cw[pick(0, K * C - 1)] = NAN; break;
            default: pw[pick(0, C * C - 1)] = -INFINITY; break;
            }
            break;
        default: /* pointers and the kernel id */
            switch (rnd() % 5) {
            case 0: w.layers = NULL; break;
            case 1: w.word = NULL; break;
            case 2: w.pooler_w = NULL; break;
            case 3: layers[pick(0, L - 1)].ffn_ln_gamma = NULL; break;
            default: kernel = (sp_kernel)((rnd() % 2) ? 7 : -1); break;
            }
        }
    }
    sp_model *m = NULL;
    sp_status st = sp_model_create(&cfg, &w, kernel, &m);
    counts[st < 16 && st >= 0 ? st : 15]++;
    if (st == SP_OK) {
        /* forward with hostile ids / lengths / batch / threads */
        int32_t n = pick(1, 4), lens[4], total = 0;
        for (int32_t s = 0; s < n; s++) { lens[s] = pick(1, P); total += lens[s]; }
        int32_t nseq = n, threads = pick(0, 2);
        switch (rnd() % 6) {
        case 0: lens[pick(0, n - 1)] = (rnd() % 2) ? 0 : -pick(1, 100); break;
        case 1: lens[pick(0, n - 1)] = P + pick(1, 5); break;
        case 2: nseq = (rnd() % 2) ? 0 : -1; break;
        case 3: threads = (rnd() % 2) ? -1 : 257; break;
        default: break;
        }
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
        for (int32_t t = 0; t < total; t++) ids[t] = pick(0, V - 1);
        if (total && rnd() % 4 == 0) ids[pick(0, total - 1)] = (rnd() % 2) ? V : -1;
        float *probs = malloc(sizeof(float) * (size_t)n * K);
        sp_status fs = sp_forward(m, ids, lens, nseq, threads, probs, NULL);
        if (fs == SP_OK)
            for (int32_t i = 0; i < n * K; i++)
                if (!(probs[i] >= 0.0f && probs[i] <= 1.0f)) { fprintf(stderr, "probability out of range\n"); abort(); }
        free(ids);
        free(probs);
        sp_model_free(m);
    } else if (m != NULL) {
        fprintf(stderr, "a failed create left a handle\n");
        abort();
    }
    /* sp_linear_forward on one (possibly corrupted) layer, directly */
    if (w.layers != NULL) {
        int32_t l = pick(0, L - 1);
        const sp_linear *lin = &layers[l].ffn_in;
        int32_t T = pick(1, 40), in = lin->in > 0 && lin->in <= 256 ? lin->in : 4, out = lin->out;
        /* the declared out must be what row_ptr / scale / bias were allocated for: a caller that
         * declares more rows than it passes breaks the contract, which no callee can detect */
        if (lin->in == in && out == mem[l * 6 + 4].out) {
            int8_t *xq = malloc((size_t)T * in);
            for (int32_t i = 0; i < T * in; i++) xq[i] = (int8_t)pick(-127, 127);
            float *xs = floats((size_t)T, 0.1f), *y = malloc(sizeof(float) * (size_t)T * out);
            for (int32_t t = 0; t < T; t++) xs[t] = fabsf(xs[t]) + 1e-3f;
            (void)sp_linear_forward(lin, xq, xs, (rnd() % 8) ? T : -T, (sp_kernel)pick(0, 4), 1, y);
            free(xq); free(xs); free(y);
        }
    }
    for (int32_t i = 0; i < L * 6; i++) free_linear(&mem[i]);
    free(mem); free(layers); free(word); free(word_scale); free(pos); free(typ); free(g); free(bta); free(pw); free(pb); free(cw); free(cb);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    rs = argc > 2 ? (uint64_t)atoll(argv[2]) * 0x9E3779B97F4A7C15ULL + 1 : 88172645463325252ULL;
    for (long i = 0; i < n; i++) one();
    printf("executions %ld ok %ld", n, counts[SP_OK]);
    for (int s = 1; s < 16; s++)
        if (counts[s]) printf(" %s=%ld", sp_status_message(s), counts[s]);
    printf("\n");
    return 0;
}
