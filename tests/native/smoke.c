/* Native smoke test: a small random 4-block sparse model through the public API, every kernel the CPU has,
 * plus error paths. Built by tests/test_native_sanitizers.py with -fsanitize=address,undefined and
 * run under valgrind there too (when installed). Exit status 0 = pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparsepulse.h"

#define C 32
#define I 64
#define V 50
#define P 24
#define L 2
#define K 3

static unsigned rng_state = 12345u;
static float frand(void) { rng_state = rng_state * 1103515245u + 12345u; return ((rng_state >> 8) & 0xffff) / 65536.0f - 0.5f; }

typedef struct { int32_t row_ptr[I + 1]; uint16_t col[I * I / 4]; int8_t val[I * I]; float scale[I], bias[I]; } lin_buf;

static void make_linear(lin_buf *b, sp_linear *l, int out, int in) {
    int nnz = 0;
    b->row_ptr[0] = 0;
    for (int o = 0; o < out; o++) {
        for (int c = 0; c < in / 4; c++)
            if (frand() > 0.2f) { /* ~30% of blocks kept */
                b->col[nnz] = (uint16_t)c;
                for (int k = 0; k < 4; k++) b->val[nnz * 4 + k] = (int8_t)(frand() * 250);
                nnz++;
            }
        b->row_ptr[o + 1] = nnz;
        b->scale[o] = 0.01f;
        b->bias[o] = frand() * 0.1f;
    }
    l->out = out; l->in = in; l->nnz_blocks = nnz;
    l->row_ptr = b->row_ptr; l->col_idx = b->col; l->values = b->val; l->scale = b->scale; l->bias = b->bias;
}

int main(void) {
    static int8_t word[V * C];
    static float word_scale[V], pos[P * C], typ[2 * C], g[C], bta[C], pw[C * C], pb[C], cw[K * C], cb[K];
    static lin_buf bufs[L][6];
    sp_layer layers[L];
    for (int i = 0; i < V * C; i++) word[i] = (int8_t)(frand() * 250);
    for (int i = 0; i < V; i++) word_scale[i] = 0.01f;
    for (int i = 0; i < P * C; i++) pos[i] = frand() * 0.1f;
    for (int i = 0; i < 2 * C; i++) typ[i] = frand() * 0.1f;
    for (int i = 0; i < C; i++) { g[i] = 1.0f; bta[i] = 0.0f; pb[i] = 0.0f; }
    for (int i = 0; i < C * C; i++) pw[i] = frand() * 0.2f;
    for (int i = 0; i < K * C; i++) cw[i] = frand();
    for (int i = 0; i < K; i++) cb[i] = 0.0f;
    for (int l = 0; l < L; l++) {
        sp_linear *ls[6] = {&layers[l].query, &layers[l].key, &layers[l].value, &layers[l].attn_out, &layers[l].ffn_in, &layers[l].ffn_out};
        int outs[6] = {C, C, C, C, I, C}, ins[6] = {C, C, C, C, C, I};
        for (int j = 0; j < 6; j++) make_linear(&bufs[l][j], ls[j], outs[j], ins[j]);
        layers[l].attn_ln_gamma = g; layers[l].attn_ln_beta = bta; layers[l].ffn_ln_gamma = g; layers[l].ffn_ln_beta = bta;
    }
    sp_config cfg = {V, C, L, 4, I, P, 2, K, 1e-12f};
    sp_weights w = {word, word_scale, pos, typ, g, bta, layers, pw, pb, cw, cb};
    int32_t ids[] = {1, 5, 7, 2, 49, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 9};
    int32_t lens[] = {1, 4, 18};
    float probs[4][3 * K]; /* scalar, AVX2, AVX-512 VNNI, AMX */
    /* a batch big enough for the SIMD kernels' fused schedule at 2 threads (>= 8 sequences, >= 4 units of 64 tokens) */
    enum { NB = 16 };
    static int32_t bids[NB * P];
    int32_t blens[NB], ntok = 0;
    for (int s = 0; s < NB; s++) {
        blens[s] = 17 + s % 8;
        for (int p = 0; p < blens[s]; p++) bids[ntok++] = (s * 7 + p * 3) % V;
    }
    static float bprobs[4][NB * K];
    int ran[4] = {0, 0, 0, 0};
    for (int kern = 1; kern <= 4; kern++) {
        sp_model *m = NULL;
        sp_status st = sp_model_create(&cfg, &w, (sp_kernel)kern, &m);
        if (st == SP_ERR_UNSUPPORTED) { fprintf(stderr, "kernel %d: not on this CPU, not compared\n", kern); continue; }
        ran[kern - 1] = 1;
        if (st != SP_OK) { fprintf(stderr, "create: %s\n", sp_status_message(st)); return 1; }
        double tm[5] = {0}; /* ABI 2: linear, attention, row-wise, other, total */
        if ((st = sp_forward(m, ids, lens, 3, 2, probs[kern - 1], tm)) != SP_OK) { fprintf(stderr, "forward: %s\n", sp_status_message(st)); return 1; }
        if ((st = sp_forward(m, bids, blens, NB, 2, bprobs[kern - 1], NULL)) != SP_OK) { fprintf(stderr, "batch forward: %s\n", sp_status_message(st)); return 1; }
        int32_t bad_ids[] = {1, V};
        int32_t one[] = {2};
        if (sp_forward(m, bad_ids, one, 1, 1, probs[kern - 1], NULL) != SP_ERR_INDEX) return 2;
        int32_t long_len[] = {P + 1};
        if (sp_forward(m, ids, long_len, 1, 1, probs[kern - 1], NULL) != SP_ERR_LENGTH) return 3;
        sp_model_free(m);
    }
    if (!ran[0]) return 6; /* the scalar reference always exists */
    for (int i = 0; i < 3 * K; i++) {
        if (!(probs[0][i] >= 0.0f && probs[0][i] <= 1.0f)) { fprintf(stderr, "probability out of range at %d\n", i); return 4; }
        for (int k = 1; k < 4; k++) /* only the kernels that ran: nothing is copied in for a missing one */
            if (ran[k] && !(probs[0][i] == probs[k][i])) { fprintf(stderr, "kernel %d differs from scalar at %d\n", k + 1, i); return 4; }
    }
    for (int i = 0; i < NB * K; i++)
        for (int k = 1; k < 4; k++)
            if (ran[k] && !(bprobs[0][i] == bprobs[k][i])) { fprintf(stderr, "kernel %d differs from scalar on the batch at %d\n", k + 1, i); return 4; }
    /* a corrupt block index must be refused, not read */
    layers[0].query.col_idx = bufs[0][0].col;
    bufs[0][0].col[0] = 60000;
    sp_model *m = NULL;
    if (sp_model_create(&cfg, &w, SP_KERNEL_AUTO, &m) != SP_ERR_INDEX || m != NULL) return 5;
    /* a row holding more blocks than in / 4 (one column repeated: the CSR checks bound only the total,
     * nnz <= out * in / 4) and a row with a wide block: every kernel's exact integer sum, no read or
     * write past the load-time scratch */
    {
        enum { IN = 8, OUT = 4, REP = 7 };
        int32_t rp[OUT + 1] = {0, REP, REP + 1, REP + 1, REP + 1};
        uint16_t col[REP + 1];
        int8_t val[(REP + 1) * 4];
        float sc[OUT] = {1.0f, 1.0f, 1.0f, 1.0f}, bi[OUT] = {0.0f, 0.0f, 0.0f, 0.0f}, xs[1] = {1.0f}, y[OUT];
        int8_t xq[IN] = {127, -127, 5, -3, 100, 1, -100, 7};
        for (int b = 0; b < REP; b++) {
            col[b] = 0;
            for (int k = 0; k < 4; k++) val[b * 4 + k] = (int8_t)(3 * b - 10 + k);
        }
        col[REP] = 1;
        for (int k = 0; k < 4; k++) val[REP * 4 + k] = 127;
        sp_linear lin = {OUT, IN, REP + 1, rp, col, val, sc, bi};
        for (int kern = 0; kern <= 4; kern++) { /* AUTO too: on an AMX CPU it falls back to VNNI for this row */
            sp_status st = sp_linear_forward(&lin, xq, xs, 1, (sp_kernel)kern, 1, y);
            if (st == SP_ERR_UNSUPPORTED && kern != SP_KERNEL_AUTO) continue; /* not on this CPU, or AMX (repeated column) */
            if (st != SP_OK) { fprintf(stderr, "long row, kernel %d: %s\n", kern, sp_status_message(st)); return 7; }
            for (int o = 0; o < OUT; o++) {
                long want = 0;
                for (int b = rp[o]; b < rp[o + 1]; b++)
                    for (int k = 0; k < 4; k++) want += (long)val[b * 4 + k] * xq[col[b] * 4 + k];
                if (y[o] != (float)want) { fprintf(stderr, "long row, kernel %d, row %d: %f vs %ld\n", kern, o, y[o], want); return 7; }
            }
        }
    }
    sp_model_free(NULL);
    printf("ok\n");
    return 0;
}
