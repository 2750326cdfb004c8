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

    /* The shift is the float mean of the first PREFIX elements (or of the whole row). */
    PREFIX = 512,
};

static double sum_lanes(const double lane[LANES])
{
    return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

/* Returns the float mean of the first min(n, PREFIX) elements. Its rounding errors only decide whether
   the check of rule 3 passes. */
static float prefix_shift(const float *row, size_t n)
{
    const size_t count = n < PREFIX ? n : PREFIX;
    float lane[LANES] = {0.0f};

    size_t j = 0;
    for (; j + LANES <= count; j += LANES) {
#pragma GCC unroll 1
        for (size_t k = 0; k < LANES; k++)
            lane[k] += row[j + k];
    }
    for (size_t k = 0; j + k < count; k++)
        lane[k] += row[j + k];

    const float sum = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    return sum / (float)count;
}

/* Sums row[j, end), end - j <= BLOCK: per lane, float sums of d = x - c and of d * d, then adds them to
   the double totals. */
static void accumulate_block(const float *row, size_t j, size_t end, float c, double total_d[LANES],
                             double total_d2[LANES])
{
    float part_d[LANES] = {0.0f};
    float part_d2[LANES] = {0.0f};

    for (; j + LANES <= end; j += LANES) {
#pragma GCC unroll 1
        for (size_t k = 0; k < LANES; k++) {
            const float d = row[j + k] - c;
            part_d[k] += d;
            part_d2[k] += d * d;
        }
    }
    for (size_t k = 0; j + k < end; k++) {
        const float d = row[j + k] - c;
        part_d[k] += d;
        part_d2[k] += d * d;
    }

    for (size_t k = 0; k < LANES; k++) {
        total_d[k] += (double)part_d[k];
        total_d2[k] += (double)part_d2[k];
    }
}

/* Computes the sums of d = x - c and of d * d over the row. */
static void deviation_sums(const float *row, size_t n, float c, double *sum_d, double *sum_d2)
{
    double total_d[LANES] = {0.0};
    double total_d2[LANES] = {0.0};
    for (size_t j = 0; j < n; j += BLOCK) {
        const size_t end = n - j > BLOCK ? j + BLOCK : n;
        accumulate_block(row, j, end, c, total_d, total_d2);
    }

    *sum_d = sum_lanes(total_d);
    *sum_d2 = sum_lanes(total_d2);
}

static void moments_row(const float *row, size_t n, float *mean, float *variance, unsigned flags)
{
    float c = prefix_shift(row, n);
    double sum_d;
    double sum_d2;
    deviation_sums(row, n, c, &sum_d, &sum_d2);

    if (!sinkkit_moments_shift_close(n, sum_d, sum_d2)) {
        c = (float)((double)c + sum_d / (double)n);
        deviation_sums(row, n, c, &sum_d, &sum_d2);
    }

    if (sinkkit_moments_trusted(n, sum_d, sum_d2))
        sinkkit_moments_finish_trusted(n, c, sum_d, sum_d2, flags, mean, variance);
    else
        sinkkit_moments_finish(row, n, c, sum_d, sum_d2, flags, mean, variance);
}

void sinkkit_row_moments_f32_scalar(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                    float *variance, unsigned flags)
{
    for (size_t i = 0; i < rows; i++) {
        moments_row(x + i * row_stride, cols, mean != NULL ? mean + i : NULL, variance != NULL ? variance + i : NULL,
                    flags);
    }
}
