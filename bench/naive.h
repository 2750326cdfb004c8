/* Naive two-loop C versions of the kernels: the baseline that the scalar fallback must beat by 2x. */
#ifndef SINKKIT_BENCH_NAIVE_H
#define SINKKIT_BENCH_NAIVE_H

#include <stddef.h>
#include <stdint.h>

#include "sinkkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per vector: one loop sums x^2 into a single double, a second loop scales. No rescue path. */
void bench_naive_rmsnorm_f32(const sinkkit_head_layout *layout, const float *x, float *y, const float *gamma,
                             sinkkit_gamma_kind gamma_kind, float eps);

/* Per row: one loop sums x into a single double for the mean, a second sums (x - mean)^2. */
void bench_naive_row_moments_f32(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                 float *variance);

/* The same for every (token, head) vector of a layout; outputs are [tokens][heads]. */
void bench_naive_head_moments_f32(const sinkkit_head_layout *layout, const float *x, float *mean, float *variance);

/* Token loop outside, channel loop inside; ignores the NaN and tie rules. */
void bench_naive_channel_stats_f32(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                                   const float *a, size_t tokens, size_t row_stride, uint64_t first_token);

#ifdef __cplusplus
}
#endif

#endif /* SINKKIT_BENCH_NAIVE_H */
