/* Reference moments: mean and two-pass variance in double, following the definition. */
#include "kernels.h"

void sinkkit_row_moments_f32_reference(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                       float *variance, unsigned flags)
{
    const double denominator = (flags & SINKKIT_MOMENTS_UNBIASED) ? (double)cols - 1.0 : (double)cols;

    for (size_t i = 0; i < rows; i++) {
        const float *row = x + i * row_stride;

        double sum = 0.0;
        for (size_t j = 0; j < cols; j++)
            sum += (double)row[j];
        double mu = sum / (double)cols;

        double sum_squares = 0.0;
        for (size_t j = 0; j < cols; j++) {
            double d = (double)row[j] - mu;
            sum_squares += d * d;
        }

        if (mean != NULL)
            mean[i] = (float)mu;
        if (variance != NULL)
            variance[i] = (float)(sum_squares / denominator);
    }
}
