/* Row moments for AArch64 SVE at any vector length, following rule 3 of the numeric scheme in kernels.h. */
#include <arm_sve.h>

#include "kernels.h"

/* Each step of pass 2 costs a lane one rounding in each partial sum. After this many steps the float
   partial sums move to double. */
#define CHUNK_STEPS SINKKIT_FLOAT_PARTIAL_ROUNDINGS

/* Adds every float lane of v to total, a vector of half as many doubles. The conversions are exact.
   svcvt_f64_f32 reads the even 32-bit lanes, and zipping v with itself puts each lane there once. */
static inline svfloat64_t add_widened(svfloat64_t total, svfloat32_t v)
{
    const svbool_t all = svptrue_b64();
    const svfloat64_t low = svcvt_f64_f32_x(all, svzip1_f32(v, v));
    const svfloat64_t high = svcvt_f64_f32_x(all, svzip2_f32(v, v));
    return svadd_f64_x(all, svadd_f64_x(all, total, low), high);
}

/* Pass 1: the sum of x[0..n) in double. The zeroing loads make the lanes past n add +0. */
static double row_sum(const float *x, size_t n)
{
    const uint64_t lanes = svcntw();
    svfloat64_t total0 = svdup_n_f64(0.0);
    svfloat64_t total1 = svdup_n_f64(0.0);

    for (uint64_t i = 0; i < n; i += 2 * lanes) {
        const svbool_t p0 = svwhilelt_b32_u64(i, n);
        const svbool_t p1 = svwhilelt_b32_u64(i + lanes, n);
        total0 = add_widened(total0, svld1_f32(p0, x + i));
        total1 = add_widened(total1, svld1_vnum_f32(p1, x + i, 1));
    }

    return svaddv_f64(svptrue_b64(), svadd_f64_x(svptrue_b64(), total0, total1));
}

typedef struct deviation_sums {
    double sum_d;   /* sum of d = x - m */
    double sum_d2;  /* sum of d * d */
} deviation_sums;

/* Pass 2: sums of d and d * d with at most CHUNK_STEPS float roundings per partial sum. The merging
   (_m) forms leave the accumulator lanes past n untouched. */
static deviation_sums row_deviations(const float *x, size_t n, float m)
{
    const uint64_t lanes = svcntw();
    const svfloat32_t mv = svdup_n_f32(m);
    svfloat64_t total_d = svdup_n_f64(0.0);
    svfloat64_t total_d2 = svdup_n_f64(0.0);
    uint64_t i = 0;

    while (i < n) {
        svfloat32_t d_acc0 = svdup_n_f32(0.0f);
        svfloat32_t d_acc1 = svdup_n_f32(0.0f);
        svfloat32_t d2_acc0 = svdup_n_f32(0.0f);
        svfloat32_t d2_acc1 = svdup_n_f32(0.0f);

        for (int step = 0; step < CHUNK_STEPS && i < n; step++, i += 2 * lanes) {
            const svbool_t p0 = svwhilelt_b32_u64(i, n);
            const svbool_t p1 = svwhilelt_b32_u64(i + lanes, n);
            const svfloat32_t d0 = svsub_f32_x(p0, svld1_f32(p0, x + i), mv);
            const svfloat32_t d1 = svsub_f32_x(p1, svld1_vnum_f32(p1, x + i, 1), mv);
            d_acc0 = svadd_f32_m(p0, d_acc0, d0);
            d_acc1 = svadd_f32_m(p1, d_acc1, d1);
            d2_acc0 = svmla_f32_m(p0, d2_acc0, d0, d0);
            d2_acc1 = svmla_f32_m(p1, d2_acc1, d1, d1);
        }

        total_d = add_widened(add_widened(total_d, d_acc0), d_acc1);
        total_d2 = add_widened(add_widened(total_d2, d2_acc0), d2_acc1);
    }

    deviation_sums sums = {svaddv_f64(svptrue_b64(), total_d), svaddv_f64(svptrue_b64(), total_d2)};
    return sums;
}

void sinkkit_row_moments_f32_sve(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
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
