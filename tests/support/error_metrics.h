/* Error measures shared by the tests and `sinkkit validate`, so that both judge results the same way. */
#ifndef SINKKIT_ERROR_METRICS_H
#define SINKKIT_ERROR_METRICS_H

/* Returns |got - want| / |want| in double: 0 when both are equal, including both NaN or equal
   infinities, and +Inf when exactly one is NaN or they are different infinities. */
double metric_relative_error(double got, double want);

/* Returns |got - want| / scale by the same rules, and +Inf for unequal values when scale is not positive. */
double metric_scaled_error(double got, double want, double scale);

/* Returns the distance between two floats in units in the last place: 0 for two NaNs, +Inf for one NaN. */
double metric_ulp_distance(float a, float b);

#endif
