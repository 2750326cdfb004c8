/* Roofline loops with 256-bit loads and stores (AVX2). */
#include <immintrin.h>

#include "roofline.h"

/* Makes v opaque to the optimiser, so that a store of a value just loaded from the same address is
   not removed as redundant. */
#define BENCH_OPAQUE(v) __asm__ volatile("" : "+x"(v))

static void copy_avx2(const float *x, float *y, size_t n)
{
    size_t i = 0;

    /* Unrolled by four so that the loop overhead stays small next to the loads and stores. */
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_loadu_ps(x + i);
        __m256 b = _mm256_loadu_ps(x + i + 8);
        __m256 c = _mm256_loadu_ps(x + i + 16);
        __m256 d = _mm256_loadu_ps(x + i + 24);
        _mm256_storeu_ps(y + i, a);
        _mm256_storeu_ps(y + i + 8, b);
        _mm256_storeu_ps(y + i + 16, c);
        _mm256_storeu_ps(y + i + 24, d);
    }

    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_loadu_ps(x + i));

    for (; i < n; i++)
        y[i] = x[i];
}

static float sum_avx2(const float *x, size_t n)
{
    /* Eight independent accumulators hide the add latency (3 to 4 cycles on recent x86 cores) at two
       loads per cycle. */
    __m256 acc[8];
    for (int k = 0; k < 8; k++)
        acc[k] = _mm256_setzero_ps();

    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int k = 0; k < 8; k++)
            acc[k] = _mm256_add_ps(acc[k], _mm256_loadu_ps(x + i + 8 * k));
    }

    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_add_ps(acc[0], _mm256_loadu_ps(x + i));

    __m256 total = _mm256_setzero_ps();
    for (int k = 0; k < 8; k++)
        total = _mm256_add_ps(total, acc[k]);

    float lanes[8];
    _mm256_storeu_ps(lanes, total);
    float sum = 0.0f;
    for (int k = 0; k < 8; k++)
        sum += lanes[k];
    for (; i < n; i++)
        sum += x[i];
    return sum;
}

static void touch_stats_avx2(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels)
{
    size_t c = 0;

    for (; c + 8 <= channels; c += 8) {
        __m256 m = _mm256_loadu_ps(max_abs + c);
        __m256i t0 = _mm256_loadu_si256((const __m256i *)(argmax_token + c));
        __m256i t1 = _mm256_loadu_si256((const __m256i *)(argmax_token + c + 4));
        __m256d s0 = _mm256_loadu_pd(sum_squares + c);
        __m256d s1 = _mm256_loadu_pd(sum_squares + c + 4);
        BENCH_OPAQUE(m);
        BENCH_OPAQUE(t0);
        BENCH_OPAQUE(t1);
        BENCH_OPAQUE(s0);
        BENCH_OPAQUE(s1);
        _mm256_storeu_ps(max_abs + c, m);
        _mm256_storeu_si256((__m256i *)(argmax_token + c), t0);
        _mm256_storeu_si256((__m256i *)(argmax_token + c + 4), t1);
        _mm256_storeu_pd(sum_squares + c, s0);
        _mm256_storeu_pd(sum_squares + c + 4, s1);
    }

    for (; c < channels; c++) {
        float m = max_abs[c];
        uint64_t t = argmax_token[c];
        double s = sum_squares[c];
        __asm__ volatile("" : "+x"(m), "+r"(t), "+x"(s));
        max_abs[c] = m;
        argmax_token[c] = t;
        sum_squares[c] = s;
    }
}

const bench_roofline bench_roofline_avx2 = {"avx2", copy_avx2, NULL, sum_avx2, touch_stats_avx2};
