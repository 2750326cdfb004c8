/* Row moments for AVX-512, following rule 3 of the numeric scheme in kernels.h with 16-lane float partial sums. */
#include <immintrin.h>

#include "kernels.h"

enum {
    LANES = 16,

    /* Rows of at most SHORT_ROW_MAX elements are processed GROUP_ROWS at a time, so that the
       latencies of their reductions, divisions and float chains overlap. */
    GROUP_ROWS = 4,
    SHORT_ROW_MAX = 512,

    /* A short row has one float chain per lane: 8 FMAs or adds, then a flush to double. */
    SHORT_BLOCK = SINKKIT_FLOAT_PARTIAL_ROUNDINGS * LANES,

    /* A long row has four chains of at most 6 steps each. The 2-level float tree that joins the
       chains adds two roundings, for 8 in all. */
    LONG_CHAINS = 4,
    LONG_STEPS = SINKKIT_FLOAT_PARTIAL_ROUNDINGS - 2,
    LONG_BLOCK = LONG_CHAINS * LONG_STEPS * LANES,
};

/* Returns the mask of the first count lanes, count in [0, 16] and [0, 8]. */
static inline __mmask16 first_lanes16(size_t count)
{
    return (__mmask16)((1u << count) - 1u);
}

static inline __mmask8 first_lanes8(size_t count)
{
    return (__mmask8)((1u << count) - 1u);
}

/* Adds eight floats at p, widened to double (exactly), to sum. An FMA with 1.0 rounds exactly like an
   add, and on AMD Zen 5 it made pass 1 (limited by the conversions) about 15% faster. */
static inline __m512d add_widened_at(__m512d sum, const float *p)
{
    return _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(p)), _mm512_set1_pd(1.0), sum);
}

/* Does the same for the first count (< 8) floats at p. The masked load reads nothing past them. */
static inline __m512d add_widened_tail(__m512d sum, const float *p, size_t count)
{
    __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(first_lanes8(count), p));
    return _mm512_fmadd_pd(x, _mm512_set1_pd(1.0), sum);
}

/* Adds the 16 float lanes of v to the 8 double lanes of total. The conversions are exact. */
static inline __m512d add_widened(__m512d total, __m512 v)
{
    __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d high = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    return _mm512_add_pd(total, _mm512_add_pd(low, high));
}

/* Returns the lane pairs of a and b summed: lane 2k is a[2k] + a[2k+1] and lane 2k+1 is b[2k] + b[2k+1]. */
static inline __m512d add_pairs(__m512d a, __m512d b)
{
    return _mm512_add_pd(_mm512_unpacklo_pd(a, b), _mm512_unpackhi_pd(a, b));
}

/* Folds the 128-bit blocks of two add_pairs results. The result's blocks are (a0 + a1, a2 + a3, b0 + b1,
   b2 + b3), where block i of a vector is lanes 2i and 2i + 1. */
static inline __m512d add_blocks(__m512d a, __m512d b)
{
    __m512d even = _mm512_shuffle_f64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m512d odd = _mm512_shuffle_f64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm512_add_pd(even, odd);
}

/* Returns the horizontal sums of eight vectors: lane i is the sum of the lanes of v[i]. Each sum uses the
   same association whatever the other vectors hold, so a row's result does not depend on the rows
   grouped with it. */
static inline __m512d sum_lanes8(const __m512d v[8])
{
    __m512d p01 = add_pairs(v[0], v[1]);
    __m512d p23 = add_pairs(v[2], v[3]);
    __m512d p45 = add_pairs(v[4], v[5]);
    __m512d p67 = add_pairs(v[6], v[7]);

    __m512d q0123 = add_blocks(p01, p23);
    __m512d q4567 = add_blocks(p45, p67);

    return add_blocks(q0123, q4567);
}

/* Returns the same for four vectors, associated as in sum_lanes8. */
static inline __m256d sum_lanes4(const __m512d v[4])
{
    __m512d q = add_blocks(add_pairs(v[0], v[1]), add_pairs(v[2], v[3]));
    return _mm512_castpd512_pd256(add_blocks(q, q));
}

/* ---- rows of at most SHORT_ROW_MAX elements, count rows at a time ---- */

/* Computes pass 1 for count rows: m[r] = (float)(sum of row r in double / n). */
static inline __attribute__((always_inline)) void means_short(const float *const rows[GROUP_ROWS], size_t count,
                                                               size_t n, float m[GROUP_ROWS])
{
    __m512d even[GROUP_ROWS];
    __m512d odd[GROUP_ROWS];
    for (size_t r = 0; r < GROUP_ROWS; r++) {
        even[r] = _mm512_setzero_pd();
        odd[r] = _mm512_setzero_pd();
    }

    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (size_t r = 0; r < count; r++) {
            even[r] = add_widened_at(even[r], rows[r] + j);
            odd[r] = add_widened_at(odd[r], rows[r] + j + 8);
        }
    }

    if (j + 8 <= n) {
        for (size_t r = 0; r < count; r++)
            even[r] = add_widened_at(even[r], rows[r] + j);
        j += 8;
    }

    if (j < n) {
        for (size_t r = 0; r < count; r++)
            odd[r] = add_widened_tail(odd[r], rows[r] + j, n - j);
    }

    for (size_t r = 0; r < count; r++)
        even[r] = _mm512_add_pd(even[r], odd[r]);

    /* One division serves the whole group, and each lane rounds exactly as a scalar division would. */
    __m256d sums = sum_lanes4(even);
    __m128 means = _mm256_cvtpd_ps(_mm256_div_pd(sums, _mm256_set1_pd((double)n)));
    float all[GROUP_ROWS];
    _mm_storeu_ps(all, means);
    for (size_t r = 0; r < count; r++)
        m[r] = all[r];
}

/* Computes pass 2 for count rows: the sums of d = x - m and of d * d into dev[2r] and dev[2r + 1]. Each
   lane is a float chain of at most SHORT_BLOCK / LANES steps, flushed into double. */
static inline __attribute__((always_inline)) void deviation_sums_short(const float *const rows[GROUP_ROWS],
                                                                        size_t count, size_t n,
                                                                        const float m[GROUP_ROWS],
                                                                        double dev[8])
{
    __m512 centre[GROUP_ROWS];
    __m512d total[8];
    for (size_t r = 0; r < count; r++)
        centre[r] = _mm512_set1_ps(m[r]);
    for (size_t r = 0; r < 8; r++)
        total[r] = _mm512_setzero_pd();

    for (size_t j = 0; j < n;) {
        const size_t end = n - j > SHORT_BLOCK ? j + SHORT_BLOCK : n;
        __m512 part_d[GROUP_ROWS];
        __m512 part_d2[GROUP_ROWS];
        for (size_t r = 0; r < count; r++) {
            part_d[r] = _mm512_setzero_ps();
            part_d2[r] = _mm512_setzero_ps();
        }

        for (; j + LANES <= end; j += LANES) {
            for (size_t r = 0; r < count; r++) {
                __m512 d = _mm512_sub_ps(_mm512_loadu_ps(rows[r] + j), centre[r]);
                part_d[r] = _mm512_add_ps(part_d[r], d);
                part_d2[r] = _mm512_fmadd_ps(d, d, part_d2[r]);
            }
        }

        /* Only the row's last vector can be partial. Its inactive lanes get d = 0. */
        if (j < end) {
            const __mmask16 mask = first_lanes16(end - j);
            for (size_t r = 0; r < count; r++) {
                __m512 d = _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, rows[r] + j), centre[r]);
                part_d[r] = _mm512_add_ps(part_d[r], d);
                part_d2[r] = _mm512_fmadd_ps(d, d, part_d2[r]);
            }
            j = end;
        }

        for (size_t r = 0; r < count; r++) {
            total[2 * r] = add_widened(total[2 * r], part_d[r]);
            total[2 * r + 1] = add_widened(total[2 * r + 1], part_d2[r]);
        }
    }

    _mm512_storeu_pd(dev, sum_lanes8(total));
}

/* Runs pass 2 and the finish for count consecutive rows at x, whose means m come from group_means. */
static inline __attribute__((always_inline)) void finish_short(const float *x, size_t count, size_t n,
                                                                size_t row_stride, const float m[GROUP_ROWS],
                                                                float *mean, float *variance, unsigned flags)
{
    const float *rows[GROUP_ROWS];
    for (size_t r = 0; r < count; r++)
        rows[r] = x + r * row_stride;

    double dev[8];
    deviation_sums_short(rows, count, n, m, dev);

    for (size_t r = 0; r < count; r++) {
        sinkkit_moments_finish(rows[r], n, m[r], dev[2 * r], dev[2 * r + 1], flags,
                               mean != NULL ? mean + r : NULL, variance != NULL ? variance + r : NULL);
    }
}

static inline __attribute__((always_inline)) void group_means(const float *x, size_t count, size_t n,
                                                               size_t row_stride, float m[GROUP_ROWS])
{
    const float *rows[GROUP_ROWS];
    for (size_t r = 0; r < count; r++)
        rows[r] = x + r * row_stride;
    means_short(rows, count, n, m);
}

/* Computes the moments of rows of at most SHORT_ROW_MAX elements. Each group's means are computed one
   group ahead, so that pass 1 of the next group overlaps the dependent chain of reductions, division
   and pass 2 of this one. Leftover rows go one at a time through the same code with count 1, which
   performs exactly a group's operations for that row. So results do not depend on how rows are split
   into calls. */
static void moments_short_rows(const float *x, size_t rows, size_t n, size_t row_stride, float *mean,
                               float *variance, unsigned flags)
{
    const size_t groups = rows / GROUP_ROWS;
    float m[2][GROUP_ROWS];

    if (groups > 0)
        group_means(x, GROUP_ROWS, n, row_stride, m[0]);

    for (size_t g = 0; g < groups; g++) {
        const size_t i = g * GROUP_ROWS;
        if (g + 1 < groups)
            group_means(x + (i + GROUP_ROWS) * row_stride, GROUP_ROWS, n, row_stride, m[(g + 1) % 2]);

        finish_short(x + i * row_stride, GROUP_ROWS, n, row_stride, m[g % 2], mean != NULL ? mean + i : NULL,
                     variance != NULL ? variance + i : NULL, flags);
    }

    for (size_t i = groups * GROUP_ROWS; i < rows; i++) {
        group_means(x + i * row_stride, 1, n, row_stride, m[0]);
        finish_short(x + i * row_stride, 1, n, row_stride, m[0], mean != NULL ? mean + i : NULL,
                     variance != NULL ? variance + i : NULL, flags);
    }
}

/* ---- longer rows, one at a time ---- */

/* Returns the row's sum in double (pass 1). Eight accumulators cover the latency of the FMAs that add them. */
static double row_sum_long(const float *row, size_t n)
{
    __m512d s[8];
    for (size_t a = 0; a < 8; a++)
        s[a] = _mm512_setzero_pd();

    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        for (size_t a = 0; a < 8; a++)
            s[a] = add_widened_at(s[a], row + j + 8 * a);
    }
    for (size_t a = 0; j + 8 <= n; j += 8, a++)
        s[a] = add_widened_at(s[a], row + j);
    if (j < n)
        s[7] = add_widened_tail(s[7], row + j, n - j);

    __m512d s0123 = _mm512_add_pd(_mm512_add_pd(s[0], s[1]), _mm512_add_pd(s[2], s[3]));
    __m512d s4567 = _mm512_add_pd(_mm512_add_pd(s[4], s[5]), _mm512_add_pd(s[6], s[7]));
    return _mm512_reduce_add_pd(_mm512_add_pd(s0123, s4567));
}

/* Joins four float chains with a 2-level tree (two roundings). */
static inline __m512 join_chains(const __m512 chain[LONG_CHAINS])
{
    return _mm512_add_ps(_mm512_add_ps(chain[0], chain[1]), _mm512_add_ps(chain[2], chain[3]));
}

static inline void accumulate(__m512 *d, __m512 *d2, __m512 deviation)
{
    *d = _mm512_add_ps(*d, deviation);
    *d2 = _mm512_fmadd_ps(deviation, deviation, *d2);
}

/* Runs pass 2 over a whole block of LONG_BLOCK elements at p: LONG_STEPS steps of one vector per chain.
   NOTE: prefetching the next row here, which helps the AVX2 kernel on rows from DRAM, made this kernel
   slower in most runs on a shared Zen 5 machine, for reasons not found. */
static inline void accumulate_full_block(const float *p, __m512 centre, __m512 *sum_d, __m512 *sum_d2)
{
    __m512 d[LONG_CHAINS];
    __m512 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        d[c] = _mm512_setzero_ps();
        d2[c] = _mm512_setzero_ps();
    }

    for (size_t step = 0; step < LONG_STEPS; step++) {
        for (size_t c = 0; c < LONG_CHAINS; c++) {
            const size_t offset = (step * LONG_CHAINS + c) * LANES;
            accumulate(&d[c], &d2[c], _mm512_sub_ps(_mm512_loadu_ps(p + offset), centre));
        }
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Runs pass 2 over the last count (< LONG_BLOCK) elements at p: whole steps, then single vectors on the
   next chains, the last one masked. No chain takes more than LONG_STEPS vectors. */
static inline void accumulate_last_block(const float *p, size_t count, __m512 centre, __m512 *sum_d,
                                         __m512 *sum_d2)
{
    __m512 d[LONG_CHAINS];
    __m512 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        d[c] = _mm512_setzero_ps();
        d2[c] = _mm512_setzero_ps();
    }

    size_t j = 0;
    for (; j + LONG_CHAINS * LANES <= count; j += LONG_CHAINS * LANES) {
        for (size_t c = 0; c < LONG_CHAINS; c++)
            accumulate(&d[c], &d2[c], _mm512_sub_ps(_mm512_loadu_ps(p + j + c * LANES), centre));
    }

    size_t c = 0;
    for (; j + LANES <= count; j += LANES, c++)
        accumulate(&d[c], &d2[c], _mm512_sub_ps(_mm512_loadu_ps(p + j), centre));

    if (j < count) {
        const __mmask16 mask = first_lanes16(count - j);
        accumulate(&d[c], &d2[c], _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, p + j), centre));
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Computes pass 2, the sums of d = x - m and of d * d, block by block. */
static void deviation_sums_long(const float *row, size_t n, float m, double *sum_d, double *sum_d2)
{
    const __m512 centre = _mm512_set1_ps(m);
    __m512d total_d = _mm512_setzero_pd();
    __m512d total_d2 = _mm512_setzero_pd();
    __m512 d;
    __m512 d2;

    size_t j = 0;
    for (; j + LONG_BLOCK <= n; j += LONG_BLOCK) {
        accumulate_full_block(row + j, centre, &d, &d2);
        total_d = add_widened(total_d, d);
        total_d2 = add_widened(total_d2, d2);
    }

    if (j < n) {
        accumulate_last_block(row + j, n - j, centre, &d, &d2);
        total_d = add_widened(total_d, d);
        total_d2 = add_widened(total_d2, d2);
    }

    *sum_d = _mm512_reduce_add_pd(total_d);
    *sum_d2 = _mm512_reduce_add_pd(total_d2);
}

static void moments_long(const float *row, size_t n, float *mean, float *variance, unsigned flags)
{
    const float m = (float)(row_sum_long(row, n) / (double)n);

    double sum_d;
    double sum_d2;
    deviation_sums_long(row, n, m, &sum_d, &sum_d2);

    sinkkit_moments_finish(row, n, m, sum_d, sum_d2, flags, mean, variance);
}

void sinkkit_row_moments_f32_avx512(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                    float *variance, unsigned flags)
{
    if (cols > SHORT_ROW_MAX) {
        for (size_t i = 0; i < rows; i++) {
            moments_long(x + i * row_stride, cols, mean != NULL ? mean + i : NULL,
                         variance != NULL ? variance + i : NULL, flags);
        }
        return;
    }

    moments_short_rows(x, rows, cols, row_stride, mean, variance, flags);
}
