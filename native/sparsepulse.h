/*
 * SparsePulse native runtime: sparse-INT8 BERT encoder for CPUs (AVX2 first, portable fallback).
 *
 * The one public header. Every other symbol of the library is static.
 *
 * Conventions
 *   - Every function returns sp_status; sp_status_message() gives a static English message.
 *     The library never exits, never prints, and keeps no global mutable state.
 *   - Memory: sp_model_create() copies everything it needs from the caller's buffers into
 *     handle-owned memory; sp_model_free() releases it. sp_forward() runs in a workspace cached in
 *     the handle (grown to the largest batch seen); a second thread calling at the same time gets a
 *     workspace of its own for that call, so one model may be used from several threads at once.
 *   - Shapes are given as comments: // x: (T, C) means T rows of C values, row-major.
 *
 * Linear layers use the packed 4-block layout (SP_BLOCK = 4 consecutive inputs of one output row):
 *   row_ptr: (out + 1)         int32, blocks of row o are row_ptr[o] .. row_ptr[o+1]-1
 *   col_idx: (nnz_blocks)      uint16, block column: inputs 4*col .. 4*col+3
 *   values:  (nnz_blocks, 4)   int8, symmetric per-output-channel weights, w = values * scale[o]
 *   scale:   (out)             float32, > 0
 *   bias:    (out)             float32
 * Activations entering a linear layer are quantised per token (row): s_t = max|x_t| * fl32(1/127),
 * q = round_half_even(x / s_t) clamped to [-127, 127]; y[t,o] = s_t * scale[o] * Σ q·values + bias[o].
 */
#ifndef SPARSEPULSE_H
#define SPARSEPULSE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SP_ABI_VERSION 4
#define SP_BLOCK 4
/* Largest in/out dimension of a linear layer (and the largest intermediate size). It keeps every
 * integer accumulator exact: |sum| <= in * 255 * 127 < 2^31 for in <= 65536 (the VNNI kernel adds
 * 128 to the int8 activations, so one factor reaches 255). */
#define SP_MAX_DIM 65536
/* Largest |value| of a float parameter and of a quantisation scale (trained BERTs stay below 100);
 * scales must also be normal floats (>= FLT_MIN). */
#define SP_MAX_PARAM 1e4f

typedef enum {
    SP_OK = 0,
    SP_ERR_ARG = 1,       /* a NULL pointer or a non-positive size */
    SP_ERR_NOMEM = 2,     /* allocation failed */
    SP_ERR_SHAPE = 3,     /* inconsistent dimensions */
    SP_ERR_INDEX = 4,     /* a block index, row pointer or token id out of range */
    SP_ERR_VALUE = 5,     /* a NaN / infinite / out-of-range scale or parameter, or a non-finite result */
    SP_ERR_LENGTH = 6,    /* a sequence longer than the model's maximum length, or empty */
    SP_ERR_UNSUPPORTED = 7 /* requested kernel not available on this CPU */
} sp_status;

/* Kernel choice: AUTO picks the best the CPU has: AMX (the linears in Intel AMX int8 tiles, the
 * weights kept 4-block sparse and expanded tile by tile; everything else as AVX512_VNNI), then
 * AVX512_VNNI (sparse INT8 linears with vpdpbusd, attention in AVX-512, the rest as AVX2), then
 * AVX2, else the scalar reference. All give identical integer accumulations; AVX2, AVX512_VNNI and
 * AMX give bit-identical outputs. AMX takes linears without repeated block columns in a row (every
 * exported model): AUTO falls back to AVX512_VNNI for others, an explicit AMX gets
 * SP_ERR_UNSUPPORTED. */
typedef enum { SP_KERNEL_AUTO = 0, SP_KERNEL_SCALAR = 1, SP_KERNEL_AVX2 = 2, SP_KERNEL_AVX512_VNNI = 3, SP_KERNEL_AMX = 4 } sp_kernel;

typedef struct {
    int32_t vocab_size, hidden, num_layers, num_heads, intermediate, max_position, type_vocab_size, num_labels;
    float layer_norm_eps;
} sp_config;

typedef struct {
    int32_t out, in, nnz_blocks;
    const int32_t *row_ptr;  /* (out + 1) */
    const uint16_t *col_idx; /* (nnz_blocks) */
    const int8_t *values;    /* (nnz_blocks, 4) */
    const float *scale;      /* (out) */
    const float *bias;       /* (out) */
} sp_linear;

typedef struct {
    sp_linear query, key, value, attn_out, ffn_in, ffn_out;
    const float *attn_ln_gamma, *attn_ln_beta; /* (hidden) */
    const float *ffn_ln_gamma, *ffn_ln_beta;   /* (hidden) */
} sp_layer;

typedef struct {
    const int8_t *word;          /* (vocab_size, hidden) per-row INT8 */
    const float *word_scale;     /* (vocab_size) */
    const float *position;       /* (max_position, hidden) */
    const float *token_type;     /* (type_vocab_size, hidden); row 0 is used */
    const float *emb_ln_gamma, *emb_ln_beta; /* (hidden) */
    const sp_layer *layers;      /* (num_layers) */
    const float *pooler_w;       /* (hidden, hidden) (out, in) */
    const float *pooler_b;       /* (hidden) */
    const float *classifier_w;   /* (num_labels, hidden) */
    const float *classifier_b;   /* (num_labels) */
} sp_weights;

typedef struct sp_model sp_model;

const char *sp_status_message(int status);
int sp_abi_version(void);
/* 1 when the running CPU supports the AVX2 kernels, else 0. */
int sp_cpu_has_avx2(void);
int sp_cpu_has_avx512_vnni(void); /* AVX-512 F/BW/VL + VNNI (and AVX2/FMA) */
/* AVX-512 VNNI + AMX-TILE/AMX-INT8, the OS saving the tile state, and (Linux) the process granted it. */
int sp_cpu_has_amx(void);

/* Validate and copy the weights; *out receives the handle (NULL on error). */
sp_status sp_model_create(const sp_config *cfg, const sp_weights *w, sp_kernel kernel, sp_model **out);
void sp_model_free(sp_model *m);
/* Bytes of handle-owned memory. */
int64_t sp_model_bytes(const sp_model *m);
/* The kernel a handle runs (never SP_KERNEL_AUTO: what AUTO resolved to). */
sp_kernel sp_model_kernel(const sp_model *m);

/*
 * Forward pass for a batch of sequences of different lengths, no padding.
 *   ids:     (total_tokens) int32, the sequences one after the other (with [CLS] ... [SEP])
 *   lengths: (n_seqs) int32, each 1 .. max_position
 *   probs:   (n_seqs, num_labels) float32 out: softmax probabilities
 *   threads: worker threads (1 .. 256); 0 = the OpenMP default
 * Several threads may call sp_forward on one handle at once: the first holds the handle's cached
 * workspace (kept between calls, grown to the largest batch seen, freed by sp_model_free), the
 * others allocate their own for the call.
 * Per-stage wall-clock seconds are added to timings[0..4] (sparse INT8 linear layers, attention,
 * row-wise work: LayerNorm + GELU + activation quantisation, other: embeddings, pooler, classifier,
 * allocation; total) when timings is not NULL. (ABI 2+: five entries; ABI 1 had four. ABI 3: SP_KERNEL_AVX512_VNNI.)
 */
sp_status sp_forward(const sp_model *m, const int32_t *ids, const int32_t *lengths, int32_t n_seqs, int32_t threads,
                     float *probs, double *timings);

/*
 * One sparse linear layer on already-quantised activations (for tests and benchmarks).
 *   xq: (T, in) int8 in -127..127 (symmetric, as sp_quantize_rows makes them; -128: SP_ERR_VALUE);
 *   xs: (T) float32 per-token scales; y: (T, out) float32 out.
 */
sp_status sp_linear_forward(const sp_linear *lin, const int8_t *xq, const float *xs, int32_t T, sp_kernel kernel,
                            int32_t threads, float *y);
/* Per-token symmetric INT8 quantisation: x: (T, C) -> xq: (T, C), xs: (T). */
sp_status sp_quantize_rows(const float *x, int32_t T, int32_t C, int8_t *xq, float *xs);
/* The same with a kernel's implementation (scalar reference, the AVX2 one, or the 512-bit one that
 * AVX-512 VNNI and AMX use); results are identical by contract, which tests check on adversarial rows. */
sp_status sp_quantize_rows_kernel(const float *x, int32_t T, int32_t C, sp_kernel kernel, int8_t *xq, float *xs);
/* The encoder's GELU, y = x * Phi(x) with its erf approximation, on n floats with a kernel's build
 * of the float ops (for tests of the approximation's tolerance; y may alias x). */
sp_status sp_gelu(const float *x, int64_t n, sp_kernel kernel, float *y);

#ifdef __cplusplus
}
#endif
#endif /* SPARSEPULSE_H */
