/* INT8 multiply-accumulate peak of this CPU, per instruction set, measured rather than assumed.
 *
 * Each thread runs a register-only loop of independent 8-bit dot-product instructions (12
 * accumulators, more than the instruction latency x issue width needs), the same instructions the
 * runtime's kernels use:
 *   avx2        vpmaddubsw (32 u8 x s8 products -> 16 int16) + vpmaddwd (-> 8 int32) + vpaddd
 *   avx512vnni  vpdpbusd zmm (64 u8 x s8 products accumulated into 16 int32)
 * and reports GMAC/s summed over THREADS threads (OpenMP). No memory traffic: an upper bound for
 * any kernel, which is what "share of peak" means in BENCHMARKS.md.
 *
 * Built and run by benchmarks/peak.py: gcc -O2 -fopenmp -mavx2 [-mavx512f -mavx512bw -mavx512vnni]
 * peak.c; ./peak ISA THREADS SECONDS -> one number (GMAC/s).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACC 12
#define INNER 1000

static double run_avx2(double seconds, long *iters_out) {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), one = _mm256_set1_epi16(1);
    __m256i acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = _mm256_setzero_si256();
    long iters = 0;
    double t0 = omp_get_wtime(), t;
    do {
        for (int k = 0; k < INNER; k++)
            for (int i = 0; i < ACC; i++)
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), one));
        iters += INNER;
        __asm__ volatile("" : "+x"(a), "+x"(b)); /* the inputs may change: no hoisting */
    } while ((t = omp_get_wtime() - t0) < seconds);
    int sink = 0;
    for (int i = 0; i < ACC; i++) sink += _mm256_extract_epi32(acc[i], 0);
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

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *isa = argv[1];
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]), total = 0.0;
    int vnni = strcmp(isa, "avx512vnni") == 0;
#ifndef PEAK_VNNI
    if (vnni) return 3;
#endif
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        long iters = 0;
        double t;
#ifdef PEAK_VNNI
        if (vnni) t = run_vnni(seconds, &iters);
        else
#endif
            t = run_avx2(seconds, &iters);
        const double macs_per_instr = vnni ? 64.0 : 32.0;
        total += (double)iters * ACC * macs_per_instr / t / 1e9;
    }
    printf("%.1f\n", total);
    return 0;
}
