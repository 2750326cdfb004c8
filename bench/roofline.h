/* Roofline loops: the least work that moves the same bytes as a kernel, one set per ISA. */
#ifndef SINKKIT_BENCH_ROOFLINE_H
#define SINKKIT_BENCH_ROOFLINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One ISA's loops. copy writes y[i] = x[i] with ordinary (temporal) stores. copy_streaming does the
   same with non-temporal stores for the 64-byte lines of y and ordinary ones at its ends, then fences.
   It is NULL when the ISA has none. sum adds x with several independent accumulators, so that only load
   bandwidth limits it; the caller must use the result. touch_stats loads and stores back every element
   of the three channel-statistics arrays. */
typedef struct bench_roofline {
    const char *name;
    void (*copy)(const float *x, float *y, size_t n);
    void (*copy_streaming)(const float *x, float *y, size_t n);
    float (*sum)(const float *x, size_t n);
    void (*touch_stats)(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels);
} bench_roofline;

/* Plain C at the baseline flags; the compiler vectorises it with the baseline vector ISA. */
extern const bench_roofline bench_roofline_generic;

#if defined(SINKKIT_HAVE_AVX2)
extern const bench_roofline bench_roofline_avx2;
#endif

#if defined(SINKKIT_HAVE_AVX512)
extern const bench_roofline bench_roofline_avx512;
#endif

#ifdef __cplusplus
}
#endif

#endif /* SINKKIT_BENCH_ROOFLINE_H */
