/* INT8 multiply-accumulate peak of this CPU, per instruction set, measured rather than assumed.
 *
 * Each thread runs a register-only loop of independent 8-bit dot-product instructions (12
 * accumulators, more than the instruction latency x issue width needs; the loop over them unrolled,
 * so that they stay in registers -- rolled, GCC kept them in memory and the loop measured the
 * store-to-load latency, a third of the real peak), the same instructions the runtime's kernels use:
 *   avx2        two vpmaddubsw (2 x 32 u8 x s8 products -> 2 x 16 int16) + vpaddw + vpmaddwd (-> 8
 *               int32) + vpaddd: the AVX2 kernel's paired blocks
 *   avx512vnni  vpdpbusd zmm (64 u8 x s8 products accumulated into 16 int32)
 *   amx         tdpbssd on four independent 16x16 int32 product tiles (16 x 16 x 64 = 16,384
 *               s8 x s8 products each; dense: the runtime's AMX kernel multiplies whole weight tiles)
 * and reports GMAC/s summed over THREADS threads (OpenMP). No memory traffic: an upper bound for
 * any kernel, which is what "share of peak" means in BENCHMARKS.md.
 *
 * Built and run by benchmarks/peak.py: gcc -O2 -fopenmp -mavx2 [-mavx512f -mavx512bw -mavx512vnni]
 * [-mamx-tile -mamx-int8] peak.c; ./peak ISA THREADS SECONDS -> one number (GMAC/s).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef PEAK_AMX
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define ACC 12
#define INNER 1000

/* AVX2: per 64 MACs two vpmaddubsw, a vpaddw, a vpmaddwd and a vpaddd, as the AVX2 kernel's paired
 * blocks (its fastest sequence: plain blocks go two by two where their bounds allow; a lone plain
 * block needs a vpmaddwd per 32 MACs, so the pairs bound the kernel from above -- with the unpaired
 * form as "peak", the kernel ran at 97% of it on a Zen 5). Each accumulator has its own two
 * products, x_i times b and x_(i+1) times c, with every input declared changed each iteration (an
 * empty asm), so that the products can be neither shared between accumulators nor hoisted out of
 * the loop (they were: one product added twelve times). 6 inputs + 6 accumulators + 3 constants
 * fit the 16 registers; the block is a function of its own with no call inside, so that nothing is
 * spilled around the clock reads. */
#define ACC2 6
#define PAIR(a, xa, xb) a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(xa, b), _mm256_maddubs_epi16(xb, c)), one))
static __attribute__((noinline)) void avx2_block(__m256i st[2 * ACC2]) {
    const __m256i b = _mm256_set1_epi8(-2), c = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256i x0 = st[0], x1 = st[1], x2 = st[2], x3 = st[3], x4 = st[4], x5 = st[5];
    __m256i a0 = st[6], a1 = st[7], a2 = st[8], a3 = st[9], a4 = st[10], a5 = st[11];
    for (int k = 0; k < INNER; k++) {
        __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5));
        PAIR(a0, x0, x1);
        PAIR(a1, x1, x2);
        PAIR(a2, x2, x3);
        PAIR(a3, x3, x4);
        PAIR(a4, x4, x5);
        PAIR(a5, x5, x0);
    }
    st[0] = x0, st[1] = x1, st[2] = x2, st[3] = x3, st[4] = x4, st[5] = x5;
    st[6] = a0, st[7] = a1, st[8] = a2, st[9] = a3, st[10] = a4, st[11] = a5;
}

static double run_avx2(double seconds, long *iters_out) {
    __m256i st[2 * ACC2];
    for (int i = 0; i < ACC2; i++) st[i] = _mm256_set1_epi8((char)(3 + i)), st[ACC2 + i] = _mm256_setzero_si256();
    long iters = 0;
    double t0 = omp_get_wtime(), t;
    do {
        avx2_block(st);
        iters += INNER;
    } while ((t = omp_get_wtime() - t0) < seconds);
    int sink = 0;
    for (int i = 0; i < ACC2; i++) sink += _mm256_extract_epi32(st[ACC2 + i], 0);
    if (sink == 42) fprintf(stderr, " ");
    *iters_out = iters;
    return t;
}

#ifdef PEAK_VNNI
static double run_vnni(double seconds, long *iters_out) {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    __m512i acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_setzero_si512();
    long iters = 0;
    double t0 = omp_get_wtime(), t;
    do {
        for (int k = 0; k < INNER; k++)
#pragma GCC unroll 16
            for (int i = 0; i < ACC; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
        iters += INNER;
        __asm__ volatile("" : "+v"(a), "+v"(b));
    } while ((t = omp_get_wtime() - t0) < seconds);
    int sink = 0;
    for (int i = 0; i < ACC; i++) sink += _mm_extract_epi32(_mm512_castsi512_si128(acc[i]), 0);
    if (sink == 42) fprintf(stderr, " ");
    *iters_out = iters;
    return t;
}
#endif

#ifdef PEAK_AMX
/* AMX: operand tiles loaded once, then tdpbssd into four product tiles back to back (the product
 * latency is covered by four independent accumulations). Returns the tdpbssd count / 4 in iters. */
static double run_amx(double seconds, long *iters_out) {
    struct {
        unsigned char palette, start, reserved[14];
        unsigned short colsb[16];
        unsigned char rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    static signed char buf[1024] __attribute__((aligned(64)));
    memset(buf, 1, sizeof buf);
    _tile_loadconfig(&cfg);
    _tile_loadd(0, buf, 64);
    _tile_loadd(1, buf, 64);
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    long iters = 0;
    double t0 = omp_get_wtime(), t;
    do {
        for (int k = 0; k < INNER; k++) {
            _tile_dpbssd(4, 0, 1);
            _tile_dpbssd(5, 0, 1);
            _tile_dpbssd(6, 0, 1);
            _tile_dpbssd(7, 0, 1);
        }
        iters += INNER;
    } while ((t = omp_get_wtime() - t0) < seconds);
    _tile_release();
    *iters_out = iters;
    return t;
}
#endif

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *isa = argv[1];
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]), total = 0.0;
    int vnni = strcmp(isa, "avx512vnni") == 0, amx = strcmp(isa, "amx") == 0;
#ifndef PEAK_VNNI
    if (vnni) return 3;
#endif
#ifdef PEAK_AMX
    /* Linux hands out the tile data state per process on request (ARCH_REQ_XCOMP_PERM, XTILEDATA) */
    if (amx && syscall(SYS_arch_prctl, 0x1023, 18) != 0) return 3;
#else
    if (amx) return 3;
#endif
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        long iters = 0;
        double t;
#ifdef PEAK_AMX
        if (amx) {
            t = run_amx(seconds, &iters);
            total += (double)iters * 4 * 16384.0 / t / 1e9;
        } else
#endif
        {
#ifdef PEAK_VNNI
            if (vnni) t = run_vnni(seconds, &iters);
            else
#endif
                t = run_avx2(seconds, &iters);
            total += (double)iters * (vnni ? ACC * 64.0 : ACC2 * 64.0) / t / 1e9;
        }
    }
    printf("%.1f\n", total);
    return 0;
}
