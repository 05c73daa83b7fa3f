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

/* Instruction-set level of a model handle: the linears' kernel; the float ops use AVX2 from 1 on,
 * and AVX-512 (attention) from 2 on. SP_ISA_AMX: the linears in AMX tiles (int8), the rest as VNNI. */
enum { SP_ISA_SCALAR = 0, SP_ISA_AVX2 = 1, SP_ISA_VNNI = 2, SP_ISA_AMX = 3 };

#if defined(__x86_64__) || defined(__i386__)
#define SP_X86 1
#define SP_AVX2 __attribute__((target("avx2,fma")))
#define SP_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
/* AMX tiles: GCC 11+ and clang have the intrinsics; Linux grants the tile state (arch_prctl) */
#if defined(__linux__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11))
#define SP_HAVE_AMX 1
#define SP_AMX __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8,prfchw")))
#else
#define SP_HAVE_AMX 0
#endif
#else
#define SP_HAVE_AMX 0
#define SP_X86 0
#define SP_AVX2
#endif

/* A linear layer in the handle's own memory: the 4-block CSR, each row's blocks reordered for the
 * AVX2 kernel (kernels.h, lin_tile_avx2; copy_linear): blocks that pair up in int16 first, then the
 * other plain ones, then those whose vpmaddubsw pair sums could saturate int16 ("wide" blocks,
 * multiplied another way) from row_mid on. The integer sums of the other kernels do not depend on
 * the order. */
typedef struct {
    int32_t out, in, nnz;
    int32_t hd; /* output layout: out / hd blocks of (N, hd) one after another -- hd = out is token-major
                 * (N, out); q, k and v take hd = head size (head-major, each head's (N, D) contiguous) */
    int32_t *row_ptr;  /* (out + 1) */
    int32_t *row_pair; /* (out): row o's blocks row_ptr[o] .. row_pair[o]-1 go two by two (kernels.h) */
    int32_t *row_mid;  /* (out): row o's wide blocks are row_mid[o] .. row_ptr[o+1]-1 */
    uint16_t *col_idx; /* (nnz) */
    int8_t *w8;        /* (nnz, 4), 64-byte aligned (loaded 4 at a time as int32 by the SIMD kernels) */
    int32_t *wsum;     /* (out): sum of each row's weights (the VNNI kernel's +128 offset correction) */
    int32_t *wsum_plain; /* (out): the same over the row's blocks before row_mid (the AVX2 kernel's) */
    float *scale;      /* (out) */
    float *bias;       /* (out) */
    /* the AMX kernel's copy (SP_ISA_AMX handles only; kernels.h, lin_tile_amx): for each group g of
     * 16 rows and each 4-column block c of the input padded to whole 64-column tiles (kp = in
     * rounded up to 64, / 4), bit n of amx_mask[g * kp + c] says row 16g + n has a block at c, whose
     * 4 weights are the int32 amx_w[amx_off[g * kp + c] + (the bits below n)] */
    uint16_t *amx_mask; /* (out / 16 rounded up, kp) */
    uint32_t *amx_off;  /* (out / 16 rounded up, kp) */
    int32_t *amx_w;     /* (nnz) */
} sp_lin;

static void *sp_alloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = SP_ALIGN;
    if (posix_memalign(&p, SP_ALIGN, (n + SP_ALIGN - 1) / SP_ALIGN * SP_ALIGN) != 0) return NULL;
    return p;
}

#endif
