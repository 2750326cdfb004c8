/* Reference channel statistics: one token and one channel at a time, in double. */
#include <math.h>

#include "kernels.h"

void sinkkit_channel_stats_update_f32_reference(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                                size_t channels, const float *a, size_t tokens, size_t row_stride,
                                                uint64_t first_token)
{
    for (size_t i = 0; i < tokens; i++) {
        const float *row = a + i * row_stride;
        const uint64_t token = first_token + i;

        for (size_t c = 0; c < channels; c++) {
            float v = fabsf(row[c]);

            if (isnan(v)) {
                if (!isnan(max_abs[c]) || token < argmax_token[c]) {
                    max_abs[c] = NAN;
                    argmax_token[c] = token;
                }
            } else if (!isnan(max_abs[c]) &&
                       (v > max_abs[c] || (v == max_abs[c] && token < argmax_token[c]))) {
                max_abs[c] = v;
                argmax_token[c] = token;
            }

            sum_squares[c] += (double)row[c] * (double)row[c];
        }
    }
}
