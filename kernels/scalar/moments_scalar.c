/* Row moments in portable C, following rule 3 of the numeric scheme in kernels.h. */
#include "kernels.h"

/* Element j of a row belongs to lane j % LANES. The lanes are independent accumulators, so the
   compiler can keep them in SIMD registers at baseline flags without reassociating any sum.
   The loops over lanes carry "#pragma GCC unroll 1" because GCC 12 otherwise unrolls them and
   vectorises the loop over elements instead, as in-order reductions slower than plain scalar code. */
enum {
    LANES = 8,

    /* Each lane's float chain takes at most 8 elements (the first costs one rounding for its square,
       each later one an add) before the flush to double. */
    BLOCK = SINKKIT_FLOAT_PARTIAL_ROUNDINGS * LANES,
};

static double sum_lanes(const double lane[LANES])
{
    return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

/* Returns the row's sum in double (pass 1). Converting a float to double is exact. */
static double row_sum(const float *row, size_t n)
{
    double lane[LANES] = {0.0};

    size_t j = 0;
    for (; j + LANES <= n; j += LANES) {
#pragma GCC unroll 1
        for (size_t k = 0; k < LANES; k++)
            lane[k] += (double)row[j + k];
    }
    for (size_t k = 0; j + k < n; k++)
        lane[k] += (double)row[j + k];

    return sum_lanes(lane);
}

/* Runs pass 2 over row[j, end), end - j <= BLOCK: per lane, float sums of d = x - m and of d * d, then
   adds them to the double totals. */
static void accumulate_block(const float *row, size_t j, size_t end, float m, double total_d[LANES],
                             double total_d2[LANES])
{
    float part_d[LANES] = {0.0f};
    float part_d2[LANES] = {0.0f};

    for (; j + LANES <= end; j += LANES) {
#pragma GCC unroll 1
        for (size_t k = 0; k < LANES; k++) {
            const float d = row[j + k] - m;
            part_d[k] += d;
            part_d2[k] += d * d;
        }
    }
    for (size_t k = 0; j + k < end; k++) {
        const float d = row[j + k] - m;
        part_d[k] += d;
        part_d2[k] += d * d;
    }

    for (size_t k = 0; k < LANES; k++) {
        total_d[k] += (double)part_d[k];
        total_d2[k] += (double)part_d2[k];
    }
}

static void moments_row(const float *row, size_t n, float *mean, float *variance, unsigned flags)
{
    const float m = (float)(row_sum(row, n) / (double)n);

    double total_d[LANES] = {0.0};
    double total_d2[LANES] = {0.0};
    for (size_t j = 0; j < n; j += BLOCK) {
        const size_t end = n - j > BLOCK ? j + BLOCK : n;
        accumulate_block(row, j, end, m, total_d, total_d2);
    }

    sinkkit_moments_finish(row, n, m, sum_lanes(total_d), sum_lanes(total_d2), flags, mean, variance);
}

void sinkkit_row_moments_f32_scalar(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                    float *variance, unsigned flags)
{
    for (size_t i = 0; i < rows; i++) {
        moments_row(x + i * row_stride, cols, mean != NULL ? mean + i : NULL, variance != NULL ? variance + i : NULL,
                    flags);
    }
}
