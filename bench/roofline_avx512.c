/* Roofline loops with 512-bit loads and stores (AVX-512 F). */
#include <immintrin.h>
#include <stdint.h>

#include "roofline.h"

/* Makes v opaque to the optimiser, so that a store of a value just loaded from the same address is
   not removed as redundant. */
#define BENCH_OPAQUE(v) __asm__ volatile("" : "+v"(v))

static __mmask16 tail_mask16(size_t count)
{
    return (__mmask16)((1u << count) - 1u);
}

static __mmask8 tail_mask8(size_t count)
{
    return (__mmask8)((1u << count) - 1u);
}

static void copy_avx512(const float *x, float *y, size_t n)
{
    size_t i = 0;

    /* Unrolled by four so that the loop overhead stays small next to the loads and stores. */
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(x + i);
        __m512 b = _mm512_loadu_ps(x + i + 16);
        __m512 c = _mm512_loadu_ps(x + i + 32);
        __m512 d = _mm512_loadu_ps(x + i + 48);
        _mm512_storeu_ps(y + i, a);
        _mm512_storeu_ps(y + i + 16, b);
        _mm512_storeu_ps(y + i + 32, c);
        _mm512_storeu_ps(y + i + 48, d);
    }

    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_loadu_ps(x + i));

    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_maskz_loadu_ps(m, x + i));
    }
}

/* Non-temporal stores need 64-byte-aligned addresses: ordinary stores cover the elements before the first
   line boundary of y and after the last one. */
static void copy_streaming_avx512(const float *x, float *y, size_t n)
{
    size_t head = (size_t)((64 - (uintptr_t)y % 64) % 64) / sizeof(float);
    if (head > n || (uintptr_t)y % sizeof(float) != 0)
        head = n;
    for (size_t i = 0; i < head; i++)
        y[i] = x[i];

    size_t i = head;
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(x + i);
        __m512 b = _mm512_loadu_ps(x + i + 16);
        __m512 c = _mm512_loadu_ps(x + i + 32);
        __m512 d = _mm512_loadu_ps(x + i + 48);
        _mm512_stream_ps(y + i, a);
        _mm512_stream_ps(y + i + 16, b);
        _mm512_stream_ps(y + i + 32, c);
        _mm512_stream_ps(y + i + 48, d);
    }
    for (; i + 16 <= n; i += 16)
        _mm512_stream_ps(y + i, _mm512_loadu_ps(x + i));
    for (; i < n; i++)
        y[i] = x[i];

    _mm_sfence();
}

static float sum_avx512(const float *x, size_t n)
{
    /* Eight independent accumulators hide the add latency (3 to 4 cycles on recent x86 cores) at two
       loads per cycle. */
    __m512 acc[8];
    for (int k = 0; k < 8; k++)
        acc[k] = _mm512_setzero_ps();

    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        for (int k = 0; k < 8; k++)
            acc[k] = _mm512_add_ps(acc[k], _mm512_loadu_ps(x + i + 16 * k));
    }

    for (; i + 16 <= n; i += 16)
        acc[0] = _mm512_add_ps(acc[0], _mm512_loadu_ps(x + i));

    if (i < n)
        acc[1] = _mm512_add_ps(acc[1], _mm512_maskz_loadu_ps(tail_mask16(n - i), x + i));

    __m512 total = _mm512_setzero_ps();
    for (int k = 0; k < 8; k++)
        total = _mm512_add_ps(total, acc[k]);
    return _mm512_reduce_add_ps(total);
}

static void touch_stats_avx512(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels)
{
    size_t c = 0;

    for (; c + 16 <= channels; c += 16) {
        __m512 m = _mm512_loadu_ps(max_abs + c);
        __m512i t0 = _mm512_loadu_si512(argmax_token + c);
        __m512i t1 = _mm512_loadu_si512(argmax_token + c + 8);
        __m512d s0 = _mm512_loadu_pd(sum_squares + c);
        __m512d s1 = _mm512_loadu_pd(sum_squares + c + 8);
        BENCH_OPAQUE(m);
        BENCH_OPAQUE(t0);
        BENCH_OPAQUE(t1);
        BENCH_OPAQUE(s0);
        BENCH_OPAQUE(s1);
        _mm512_storeu_ps(max_abs + c, m);
        _mm512_storeu_si512(argmax_token + c, t0);
        _mm512_storeu_si512(argmax_token + c + 8, t1);
        _mm512_storeu_pd(sum_squares + c, s0);
        _mm512_storeu_pd(sum_squares + c + 8, s1);
    }

    for (; c + 8 <= channels; c += 8) {
        __m256 m = _mm256_loadu_ps(max_abs + c);
        __m512i t = _mm512_loadu_si512(argmax_token + c);
        __m512d s = _mm512_loadu_pd(sum_squares + c);
        BENCH_OPAQUE(m);
        BENCH_OPAQUE(t);
        BENCH_OPAQUE(s);
        _mm256_storeu_ps(max_abs + c, m);
        _mm512_storeu_si512(argmax_token + c, t);
        _mm512_storeu_pd(sum_squares + c, s);
    }

    if (c < channels) {
        __mmask8 k = tail_mask8(channels - c);
        __m256 m = _mm256_maskz_loadu_ps(k, max_abs + c);
        __m512i t = _mm512_maskz_loadu_epi64(k, argmax_token + c);
        __m512d s = _mm512_maskz_loadu_pd(k, sum_squares + c);
        BENCH_OPAQUE(m);
        BENCH_OPAQUE(t);
        BENCH_OPAQUE(s);
        _mm256_mask_storeu_ps(max_abs + c, k, m);
        _mm512_mask_storeu_epi64(argmax_token + c, k, t);
        _mm512_mask_storeu_pd(sum_squares + c, k, s);
    }
}

const bench_roofline bench_roofline_avx512 = {"avx512", copy_avx512, copy_streaming_avx512, sum_avx512,
                                              touch_stats_avx512};
