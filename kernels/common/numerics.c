/* Shared numeric helpers: the double-precision rescue paths that every ISA falls back to. */
#include <float.h>
#include <math.h>

#include "kernels.h"

double sinkkit_rms_inverse(double sum_squares, size_t head_dim, float eps)
{
    return 1.0 / sqrt(sum_squares / (double)head_dim + (double)eps);
}

void sinkkit_rmsnorm_vector_rescue(const float *x, float *y, const float *gamma_row, size_t head_dim, float eps,
                                   float *inv_rms)
{
    double sum_squares = 0.0;
    for (size_t d = 0; d < head_dim; d++)
        sum_squares += (double)x[d] * (double)x[d];

    /* Squares of floats neither overflow nor underflow in double, so r is exact to a few double ulps. */
    double r = sinkkit_rms_inverse(sum_squares, head_dim, eps);

    for (size_t d = 0; d < head_dim; d++) {
        double v = (double)x[d] * r;
        if (gamma_row != NULL)
            v *= (double)gamma_row[d];
        y[d] = (float)v;
    }

    if (inv_rms != NULL)
        *inv_rms = (float)r;
}

static double moments_denominator(size_t n, unsigned flags)
{
    return (flags & SINKKIT_MOMENTS_UNBIASED) ? (double)n - 1.0 : (double)n;
}

/* Corrected two-pass variance: (sum d^2 - (sum d)^2 / n) / denominator. The correction removes the
   error of m as an estimate of the mean; a negative result can only come from rounding. */
static double corrected_variance(double sum_d, double sum_d2, size_t n, unsigned flags)
{
    double centred = sum_d2 - sum_d * sum_d / (double)n;
    if (centred < 0.0)
        centred = 0.0;
    return centred / moments_denominator(n, flags);
}

void sinkkit_moments_row_rescue(const float *row, size_t n, unsigned flags, float *mean, float *variance)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)row[i];
    double mu = sum / (double)n;

    /* Centring on the float-rounded mean makes a constant row give exactly zero deviations. */
    double m = (double)(float)mu;
    double sum_d = 0.0;
    double sum_d2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)row[i] - m;
        sum_d += d;
        sum_d2 += d * d;
    }

    if (mean != NULL)
        *mean = isfinite(mu) ? (float)(m + sum_d / (double)n) : (float)mu;
    if (variance != NULL)
        *variance = (float)corrected_variance(sum_d, sum_d2, n, flags);
}

void sinkkit_moments_finish(const float *row, size_t n, float c, double sum_d, double sum_d2, unsigned flags,
                            float *mean, float *variance)
{
    if (sinkkit_moments_trusted(n, sum_d, sum_d2))
        sinkkit_moments_finish_trusted(n, c, sum_d, sum_d2, flags, mean, variance);
    else
        sinkkit_moments_row_rescue(row, n, flags, mean, variance);
}

void sinkkit_channel_fold(float *max_abs, uint64_t *argmax_token, float chunk_max, uint64_t chunk_token,
                          uint64_t nan_token)
{
    if (nan_token != SINKKIT_NO_TOKEN) {
        if (!isnan(*max_abs) || nan_token < *argmax_token) {
            *max_abs = NAN;
            *argmax_token = nan_token;
        }
        return;
    }

    if (isnan(*max_abs) || chunk_token == SINKKIT_NO_TOKEN)
        return;

    /* Ties keep the lower token, so the result does not depend on the order chunks arrive in. */
    if (chunk_max > *max_abs || (chunk_max == *max_abs && chunk_token < *argmax_token)) {
        *max_abs = chunk_max;
        *argmax_token = chunk_token;
    }
}
