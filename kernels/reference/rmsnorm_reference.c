/* Reference head-wise RMSNorm: the formula in double, element by element. */
#include <math.h>

#include "kernels.h"

void sinkkit_headwise_rmsnorm_f32_reference(const sinkkit_head_layout *layout, const float *x, float *y,
                                            const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                            float *inv_rms)
{
    const size_t dim = layout->head_dim;

    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const size_t offset = t * layout->token_stride + h * layout->head_stride;
            const float *xv = x + offset;
            float *yv = y + offset;
            const float *g = sinkkit_gamma_row(gamma, gamma_kind, h, dim);

            double sum_squares = 0.0;
            for (size_t d = 0; d < dim; d++)
                sum_squares += (double)xv[d] * (double)xv[d];
            double r = 1.0 / sqrt(sum_squares / (double)dim + (double)eps);

            /* All reads of this vector are done, so writing y in place is safe. */
            for (size_t d = 0; d < dim; d++) {
                double v = (double)xv[d] * r;
                if (g != NULL)
                    v *= (double)g[d];
                yv[d] = (float)v;
            }

            if (inv_rms != NULL)
                inv_rms[t * layout->heads + h] = (float)r;
        }
    }
}
