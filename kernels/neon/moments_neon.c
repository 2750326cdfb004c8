/* Row moments for AArch64 Advanced SIMD (NEON), following rule 3 of the numeric scheme in kernels.h. */
#include <arm_neon.h>

#include "kernels.h"

/* Elements per block of pass 2: four 4-lane accumulators for d and four for d * d. */
#define BLOCK_ELEMENTS 16

/* Each block costs a lane one rounding in each partial sum. After this many blocks the float partial
   sums move to double. */
#define CHUNK_BLOCKS SINKKIT_FLOAT_PARTIAL_ROUNDINGS

/* Adds the four float lanes of v to the two double lanes of sum. The conversions are exact. */
static inline float64x2_t add_widened(float64x2_t sum, float32x4_t v)
{
    sum = vaddq_f64(sum, vcvt_f64_f32(vget_low_f32(v)));
    return vaddq_f64(sum, vcvt_high_f64_f32(v));
}

/* Pass 1: the sum of x[0..n) in double, with lanes assigned by index from the row start. */
static double row_sum(const float *x, size_t n)
{
    float64x2_t s0 = vdupq_n_f64(0.0);
    float64x2_t s1 = vdupq_n_f64(0.0);
    float64x2_t s2 = vdupq_n_f64(0.0);
    float64x2_t s3 = vdupq_n_f64(0.0);
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        float32x4_t v0 = vld1q_f32(x + i);
        float32x4_t v1 = vld1q_f32(x + i + 4);
        s0 = vaddq_f64(s0, vcvt_f64_f32(vget_low_f32(v0)));
        s1 = vaddq_f64(s1, vcvt_high_f64_f32(v0));
        s2 = vaddq_f64(s2, vcvt_f64_f32(vget_low_f32(v1)));
        s3 = vaddq_f64(s3, vcvt_high_f64_f32(v1));
    }

    double tail = 0.0;
    for (; i < n; i++)
        tail += (double)x[i];

    return vaddvq_f64(vaddq_f64(vaddq_f64(s0, s1), vaddq_f64(s2, s3))) + tail;
}

typedef struct deviation_sums {
    double sum_d;   /* sum of d = x - m */
    double sum_d2;  /* sum of d * d */
} deviation_sums;

/* One block of pass 2: d = x - m in float, added to the d and d * d accumulators. */
typedef struct block_accumulators {
    float32x4_t d[4];
    float32x4_t d2[4];
} block_accumulators;

static inline void accumulate_block(block_accumulators *acc, const float *x, float32x4_t m)
{
    for (int k = 0; k < 4; k++) {
        float32x4_t d = vsubq_f32(vld1q_f32(x + 4 * k), m);
        acc->d[k] = vaddq_f32(acc->d[k], d);
        acc->d2[k] = vfmaq_f32(acc->d2[k], d, d);
    }
}

/* Pass 2: sums of d and d * d with at most CHUNK_BLOCKS float roundings per partial sum. */
static deviation_sums row_deviations(const float *x, size_t n, float m)
{
    const float32x4_t mv = vdupq_n_f32(m);
    float64x2_t total_d = vdupq_n_f64(0.0);
    float64x2_t total_d2 = vdupq_n_f64(0.0);
    size_t i = 0;

    while (i < n) {
        block_accumulators acc;
        for (int k = 0; k < 4; k++) {
            acc.d[k] = vdupq_n_f32(0.0f);
            acc.d2[k] = vdupq_n_f32(0.0f);
        }
        size_t blocks = 0;

        for (; blocks < CHUNK_BLOCKS && i + BLOCK_ELEMENTS <= n; blocks++, i += BLOCK_ELEMENTS)
            accumulate_block(&acc, x + i, mv);

        /* The last partial block is padded with m itself, whose deviation is exactly 0 (and NaN when m
           is not finite, which sends the row to the rescue path as it should). */
        if (blocks < CHUNK_BLOCKS && i < n) {
            float pad[BLOCK_ELEMENTS];
            for (size_t k = 0; k < BLOCK_ELEMENTS; k++)
                pad[k] = i + k < n ? x[i + k] : m;
            accumulate_block(&acc, pad, mv);
            i = n;
        }

        for (int k = 0; k < 4; k++) {
            total_d = add_widened(total_d, acc.d[k]);
            total_d2 = add_widened(total_d2, acc.d2[k]);
        }
    }

    deviation_sums sums = {vaddvq_f64(total_d), vaddvq_f64(total_d2)};
    return sums;
}

void sinkkit_row_moments_f32_neon(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                  float *variance, unsigned flags)
{
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * row_stride;

        const float m = (float)(row_sum(row, cols) / (double)cols);
        const deviation_sums sums = row_deviations(row, cols, m);

        sinkkit_moments_finish(row, cols, m, sums.sum_d, sums.sum_d2, flags, mean != NULL ? mean + r : NULL,
                               variance != NULL ? variance + r : NULL);
    }
}
