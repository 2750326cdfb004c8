/* Value-by-value comparison of kernel outputs with the reference kernels, against the documented bounds. */
#include <float.h>
#include <math.h>
#include <stdarg.h>

#include "validate.h"

/* RMSNorm: relative error 1e-6 per element; outputs below FLT_MIN within 2 * 2^-149 absolute. */
static const double rmsnorm_relative_bound = 1e-6;
static const double rmsnorm_subnormal_bound = 2.0 * 0x1p-149;

/* Variance and channel RMS: relative error 1e-6. Mean: 1e-6 * (|mean| + std). */
static const double moments_bound = 1e-6;

void check_note(check_row *row, double error, double ulp)
{
    row->values++;
    if (error >= 0.0 && !(error <= row->max_error))
        row->max_error = error;
    if (!(ulp <= row->max_ulp))
        row->max_ulp = ulp;
}

void check_fail(check_row *row, const char *where, const char *format, ...)
{
    row->failures++;
    if (row->failures > 1)
        return;

    int used = snprintf(row->first_failure, sizeof row->first_failure, "%s: ", where);
    if (used < 0 || (size_t)used >= sizeof row->first_failure)
        return;

    va_list args;
    va_start(args, format);
    vsnprintf(row->first_failure + used, sizeof row->first_failure - (size_t)used, format, args);
    va_end(args);
}

/* Checks one RMSNorm value against the bound and returns whether it holds. */
static bool note_rmsnorm_value(check_row *row, float got, float want)
{
    double ulp = metric_ulp_distance(got, want);
    if (fabsf(want) < FLT_MIN) {
        double difference = fabs((double)got - (double)want);
        check_note(row, -1.0, ulp);
        return difference <= rmsnorm_subnormal_bound;
    }

    double error = metric_relative_error(got, want);
    check_note(row, error, ulp);
    return error <= rmsnorm_relative_bound;
}

void compare_rmsnorm(check_row *y_row, check_row *r_row, const char *where, const sinkkit_head_layout *layout,
                     const float *got_y, const float *want_y, const float *got_r, const float *want_r)
{
    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const size_t base = t * layout->token_stride + h * layout->head_stride;

            for (size_t d = 0; d < layout->head_dim; d++) {
                float got = got_y[base + d];
                float want = want_y[base + d];
                if (!note_rmsnorm_value(y_row, got, want))
                    check_fail(y_row, where, "token %zu, head %zu, element %zu: got %.9g, expected %.9g", t, h, d,
                               got, want);
            }

            if (got_r == NULL)
                continue;
            const size_t k = t * layout->heads + h;
            if (!note_rmsnorm_value(r_row, got_r[k], want_r[k]))
                check_fail(r_row, where, "token %zu, head %zu: got %.9g, expected %.9g", t, h, got_r[k], want_r[k]);
        }
    }
}

/* Standard deviation (divided by n) of one vector, in double, as the scale of the mean bound. */
static double vector_std(const float *v, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    double mean = sum / (double)n;

    double squares = 0.0;
    for (size_t i = 0; i < n; i++)
        squares += ((double)v[i] - mean) * ((double)v[i] - mean);
    return sqrt(squares / (double)n);
}

static void describe_position(char *out, size_t size, bool per_head, size_t t, size_t h)
{
    if (per_head)
        snprintf(out, size, "token %zu, head %zu", t, h);
    else
        snprintf(out, size, "row %zu", t);
}

void compare_moments(check_row *mean_row, check_row *variance_row, const char *where,
                     const sinkkit_head_layout *layout, bool per_head, const float *x, const float *got_mean,
                     const float *want_mean, const float *got_variance, const float *want_variance)
{
    char position[64];
    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const float *v = x + t * layout->token_stride + h * layout->head_stride;
            const size_t k = t * layout->heads + h;

            double scale = fabs((double)want_mean[k]) + vector_std(v, layout->head_dim);
            double mean_error = metric_scaled_error(got_mean[k], want_mean[k], scale);
            check_note(mean_row, mean_error, metric_ulp_distance(got_mean[k], want_mean[k]));
            if (!(mean_error <= moments_bound)) {
                describe_position(position, sizeof position, per_head, t, h);
                check_fail(mean_row, where, "%s: mean %.9g, expected %.9g", position, got_mean[k], want_mean[k]);
            }

            double variance_error = metric_relative_error(got_variance[k], want_variance[k]);
            check_note(variance_row, variance_error, metric_ulp_distance(got_variance[k], want_variance[k]));
            if (!(variance_error <= moments_bound)) {
                describe_position(position, sizeof position, per_head, t, h);
                check_fail(variance_row, where, "%s: variance %.9g, expected %.9g", position, got_variance[k],
                           want_variance[k]);
            }
        }
    }
}

static bool same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

void compare_channel_stats(check_row *max_row, check_row *rms_row, const char *where, size_t channels,
                           uint64_t tokens, const cli_stats *got, const cli_stats *want)
{
    for (size_t c = 0; c < channels; c++) {
        float got_max = got->max_abs[c];
        float want_max = want->max_abs[c];
        check_note(max_row, metric_relative_error(got_max, want_max), metric_ulp_distance(got_max, want_max));
        if (!same_float(got_max, want_max) || got->argmax_token[c] != want->argmax_token[c])
            check_fail(max_row, where, "channel %zu: max_abs %.9g at token %llu, expected %.9g at token %llu", c,
                       got_max, (unsigned long long)got->argmax_token[c], want_max,
                       (unsigned long long)want->argmax_token[c]);

        double got_rms = sqrt(got->sum_squares[c] / (double)tokens);
        double want_rms = sqrt(want->sum_squares[c] / (double)tokens);
        double error = metric_relative_error(got_rms, want_rms);
        check_note(rms_row, error, metric_ulp_distance((float)got_rms, (float)want_rms));
        if (!(error <= moments_bound))
            check_fail(rms_row, where, "channel %zu: RMS %.17g, expected %.17g", c, got_rms, want_rms);
    }
}
