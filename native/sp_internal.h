/* Internal declarations shared by the library's sources (compiled as one unit: sparsepulse.c).
 * Everything here is static; nothing is exported beyond sparsepulse.h. */
#ifndef SP_INTERNAL_H
#define SP_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sparsepulse.h"

#define SP_TILE 32 /* tokens per AVX2 tile (a multiple of 8) */
#define SP_ALIGN 64

/* Instruction-set level of a model handle: the linears' kernel; the float ops use AVX2 from 1 on. */
enum { SP_ISA_SCALAR = 0, SP_ISA_AVX2 = 1, SP_ISA_VNNI = 2 };

#if defined(__x86_64__) || defined(__i386__)
#define SP_X86 1
#define SP_AVX2 __attribute__((target("avx2,fma")))
#define SP_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define SP_X86 0
#define SP_AVX2
#endif

/* A linear layer in the handle's own memory: the 4-block CSR as given (scalar and VNNI kernels)
 * and, for the AVX2 kernel, the same rows with every block whose vpmaddubsw pair sums could
 * saturate split in two (kernels.h, lin_tile_avx2). */
typedef struct {
    int32_t out, in, nnz;
    int32_t *row_ptr;  /* (out + 1) */
    uint16_t *col_idx; /* (nnz) */
    int8_t *w8;        /* (nnz, 4) as given (scalar and AVX-512 VNNI kernels) */
    int32_t *wsum;     /* (out): sum of each row's weights (the VNNI kernel's +128 offset correction) */
    int32_t *row_ptr2; /* (out + 1): the AVX2 kernel's rows ... */
    uint16_t *col2;    /* (nnz2) */
    int32_t *w2;       /* (nnz2): 4 int8 weights per block, |w0|+|w1| <= 128 and |w2|+|w3| <= 128 */
    int32_t nnz2;
    float *scale;      /* (out) */
    float *bias;       /* (out) */
} sp_lin;

static void *sp_alloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = SP_ALIGN;
    if (posix_memalign(&p, SP_ALIGN, (n + SP_ALIGN - 1) / SP_ALIGN * SP_ALIGN) != 0) return NULL;
    return p;
}

#endif
