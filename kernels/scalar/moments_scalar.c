/* PLACEHOLDER until the real kernel lands: forwards to the reference. */
#include "kernels.h"

void sinkkit_row_moments_f32_scalar(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean, float *variance, unsigned flags)
{
    sinkkit_row_moments_f32_reference(x, rows, cols, row_stride, mean, variance, flags);
}
