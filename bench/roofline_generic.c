/* Roofline loops in plain C, vectorised by the compiler at the baseline flags. */
#include "roofline.h"

/* Built with loop-to-memcpy conversion disabled (see CMakeLists.txt), so this stays a loop of ordinary
   stores; memcpy is measured separately. */
static void copy_generic(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i];
}

static float sum_generic(const float *x, size_t n)
{
    /* Eight independent chains give the vectoriser two 4-lane vectors without reassociating
       (no -ffast-math), and hide the add latency. */
    float acc[8] = {0.0f};

    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++)
            acc[k] += x[i + k];
    }

    float sum = 0.0f;
    for (int k = 0; k < 8; k++)
        sum += acc[k];
    for (; i < n; i++)
        sum += x[i];
    return sum;
}

static void touch_stats_generic(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels)
{
    /* The volatile accesses force every load and store to happen. */
    volatile float *m = max_abs;
    volatile uint64_t *t = argmax_token;
    volatile double *s = sum_squares;

    for (size_t c = 0; c < channels; c++) {
        m[c] = m[c];
        t[c] = t[c];
        s[c] = s[c];
    }
}

const bench_roofline bench_roofline_generic = {"generic", copy_generic, NULL, sum_generic, touch_stats_generic};
