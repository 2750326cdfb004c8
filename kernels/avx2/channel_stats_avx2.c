/* PLACEHOLDER until the real kernel lands: forwards to the reference. */
#include "kernels.h"

void sinkkit_channel_stats_update_f32_avx2(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels, const float *a, size_t tokens, size_t row_stride, uint64_t first_token)
{
    sinkkit_channel_stats_update_f32_reference(max_abs, argmax_token, sum_squares, channels, a, tokens, row_stride, first_token);
}
