/* Loads and stores of the last count < 8 floats of a row, for the AVX2 kernels. They avoid VMASKMOVPS,
   because qemu 7.2 faults on its masked-off lanes when they cross into an unmapped page. They also avoid
   a copy through a stack array, whose narrow stores cannot forward to a 32-byte load: on Zen 5, rows
   with a tail took 2 to 5 times as long that way. Each access covers 4, 2 or 1 floats, so no byte past
   x[count - 1] is read or written. */
#ifndef SINKKIT_TAIL_AVX2_H
#define SINKKIT_TAIL_AVX2_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Returns x[0..count), count < 4, in the low lanes and +0 in the others. */
static inline __m128 load_tail_quarter(const float *x, size_t count)
{
    __m128 v = _mm_setzero_ps();
    if (count & 2) {
        int64_t pair;
        memcpy(&pair, x, sizeof(pair));
        v = _mm_castsi128_ps(_mm_cvtsi64_si128(pair));
    }
    if (count == 1)
        v = _mm_load_ss(x);
    else if (count == 3)
        v = _mm_insert_ps(v, _mm_load_ss(x + 2), 0x20);
    return v;
}

/* Returns x[0..count), count < 8, with +0 in the other lanes, as a masked load would. */
static inline __m256 load_tail(const float *x, size_t count)
{
    if (count < 4)
        return _mm256_castps128_ps256(load_tail_quarter(x, count));

    const __m128 low = _mm_loadu_ps(x);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(low), load_tail_quarter(x + 4, count - 4), 1);
}

/* Stores v[0..count), count < 4, to y and nothing past them. */
static inline void store_tail_quarter(float *y, size_t count, __m128 v)
{
    if (count & 2) {
        const int64_t pair = _mm_cvtsi128_si64(_mm_castps_si128(v));
        memcpy(y, &pair, sizeof(pair));
    }
    if (count == 1)
        _mm_store_ss(y, v);
    else if (count == 3)
        _mm_store_ss(y + 2, _mm_movehl_ps(v, v));
}

/* Stores the first count < 8 lanes of v to y and nothing past them. */
static inline void store_tail(float *y, size_t count, __m256 v)
{
    if (count < 4) {
        store_tail_quarter(y, count, _mm256_castps256_ps128(v));
        return;
    }

    _mm_storeu_ps(y, _mm256_castps256_ps128(v));
    store_tail_quarter(y + 4, count - 4, _mm256_extractf128_ps(v, 1));
}

#endif
