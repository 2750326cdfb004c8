/* Naive two-loop C kernels, written as a programmer would first write them and built at the
   project's baseline flags (one accumulator per loop, so the compiler cannot vectorise the sums
   without -ffast-math). */
#include <math.h>

#include "naive.h"

static void naive_rmsnorm_vector(const float *x, float *y, const float *g, size_t dim, float eps)
{
    double sum_squares = 0.0;
    for (size_t d = 0; d < dim; d++)
        sum_squares += (double)x[d] * (double)x[d];

    const float r = (float)(1.0 / sqrt(sum_squares / (double)dim + (double)eps));

    if (g == NULL) {
        for (size_t d = 0; d < dim; d++)
            y[d] = x[d] * r;
    } else {
        for (size_t d = 0; d < dim; d++)
            y[d] = x[d] * r * g[d];
    }
}

void bench_naive_rmsnorm_f32(const sinkkit_head_layout *layout, const float *x, float *y, const float *gamma,
                             sinkkit_gamma_kind gamma_kind, float eps)
{
    const size_t dim = layout->head_dim;

    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const size_t offset = t * layout->token_stride + h * layout->head_stride;
            const float *g = NULL;
            if (gamma_kind == SINKKIT_GAMMA_SHARED)
                g = gamma;
            else if (gamma_kind == SINKKIT_GAMMA_PER_HEAD)
                g = gamma + h * dim;

            naive_rmsnorm_vector(x + offset, y + offset, g, dim, eps);
        }
    }
}

static void naive_moments_vector(const float *x, size_t n, float *mean, float *variance)
{
    double sum = 0.0;
    for (size_t j = 0; j < n; j++)
        sum += (double)x[j];
    const double mu = sum / (double)n;

    double sum_squares = 0.0;
    for (size_t j = 0; j < n; j++) {
        const double d = (double)x[j] - mu;
        sum_squares += d * d;
    }

    *mean = (float)mu;
    *variance = (float)(sum_squares / (double)n);
}

void bench_naive_row_moments_f32(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                 float *variance)
{
    for (size_t i = 0; i < rows; i++)
        naive_moments_vector(x + i * row_stride, cols, mean + i, variance + i);
}

void bench_naive_head_moments_f32(const sinkkit_head_layout *layout, const float *x, float *mean, float *variance)
{
    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const size_t out = t * layout->heads + h;
            naive_moments_vector(x + t * layout->token_stride + h * layout->head_stride, layout->head_dim,
                                 mean + out, variance + out);
        }
    }
}

void bench_naive_channel_stats_f32(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                                   const float *a, size_t tokens, size_t row_stride, uint64_t first_token)
{
    for (size_t i = 0; i < tokens; i++) {
        const float *row = a + i * row_stride;

        for (size_t c = 0; c < channels; c++) {
            const float v = fabsf(row[c]);
            if (v > max_abs[c]) {
                max_abs[c] = v;
                argmax_token[c] = first_token + i;
            }
            sum_squares[c] += (double)row[c] * (double)row[c];
        }
    }
}
