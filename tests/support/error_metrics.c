/* Relative and scaled errors and ulp distances, for the tests and for `sinkkit validate`. */
#include "error_metrics.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

double metric_scaled_error(double got, double want, double scale)
{
    if (isnan(got) && isnan(want))
        return 0.0;
    if (isnan(got) || isnan(want))
        return INFINITY;
    if (got == want)
        return 0.0;
    if (isinf(got) || isinf(want) || !(scale > 0.0))
        return INFINITY;
    return fabs(got - want) / scale;
}

double metric_relative_error(double got, double want)
{
    return metric_scaled_error(got, want, fabs(want));
}

/* Maps a float to an integer in the same order, so that the ulp distance is a difference. */
static int64_t ordered_bits(float value)
{
    int32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits < 0 ? (int64_t)INT32_MIN - bits : bits;
}

double metric_ulp_distance(float a, float b)
{
    if (isnan(a) && isnan(b))
        return 0.0;
    if (isnan(a) || isnan(b))
        return INFINITY;

    const int64_t distance = ordered_bits(a) - ordered_bits(b);
    return (double)(distance < 0 ? -distance : distance);
}
