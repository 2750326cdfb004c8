/* Row moments for AVX2 + FMA, following rule 3 of the numeric scheme in kernels.h with 8-lane float partial sums. */
#include <immintrin.h>

#include "kernels.h"

enum {
    LANES = 8,

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

/* All-ones in the first count (at most 8) 32-bit lanes. */
static inline __m256i first_lanes8(size_t count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Returns the first count (< 8) floats at p, zero in the other lanes. It copies element by element
   because qemu 7.2 faults on the masked-off elements of VMASKMOVPS, which would make a row that ends
   at a page boundary fault under emulation. */
static inline __m256 load_tail(const float *p, size_t count)
{
    float tail[LANES] = {0.0f};
    for (size_t k = 0; k < count; k++)
        tail[k] = p[k];
    return _mm256_loadu_ps(tail);
}

/* Adds four floats at p, widened to double (exactly), to sum. An FMA with 1.0 rounds exactly like an
   add, and on AMD Zen 5 it made pass 1 (limited by the conversions) about 15% faster. */
static inline __m256d add_widened_at(__m256d sum, const float *p)
{
    return _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(p)), _mm256_set1_pd(1.0), sum);
}

/* The same for the first count (< 4) floats at p, copied as in load_tail. */
static inline __m256d add_widened_tail(__m256d sum, const float *p, size_t count)
{
    __m256d x = _mm256_cvtps_pd(_mm256_castps256_ps128(load_tail(p, count)));
    return _mm256_fmadd_pd(x, _mm256_set1_pd(1.0), sum);
}

/* Adds the 8 float lanes of v to the 4 double lanes of total. The conversions are exact. */
static inline __m256d add_widened(__m256d total, __m256 v)
{
    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    return _mm256_add_pd(total, _mm256_add_pd(low, high));
}

/* Returns the sum of the four double lanes of v. */
static inline double sum_lanes(__m256d v)
{
    __m128d half = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
}

/* Returns the horizontal sums of four vectors: lane i is the sum of the lanes of v[i]. Each sum uses the
   same association whatever the other vectors hold, so a row's result does not depend on the rows
   grouped with it. */
static inline __m256d sum_lanes4(const __m256d v[4])
{
    /* Lanes (v0[0] + v0[1], v1[0] + v1[1], v0[2] + v0[3], v1[2] + v1[3]), and the same for v2, v3. */
    __m256d p01 = _mm256_add_pd(_mm256_unpacklo_pd(v[0], v[1]), _mm256_unpackhi_pd(v[0], v[1]));
    __m256d p23 = _mm256_add_pd(_mm256_unpacklo_pd(v[2], v[3]), _mm256_unpackhi_pd(v[2], v[3]));

    __m256d low = _mm256_permute2f128_pd(p01, p23, 0x20);
    __m256d high = _mm256_permute2f128_pd(p01, p23, 0x31);
    return _mm256_add_pd(low, high);
}

/* ---- rows of at most SHORT_ROW_MAX elements, count rows at a time ---- */

/* Computes pass 1 for count rows: m[r] = (float)(sum of row r in double / n). */
static inline __attribute__((always_inline)) void means_short(const float *const rows[GROUP_ROWS], size_t count,
                                                               size_t n, float m[GROUP_ROWS])
{
    __m256d even[GROUP_ROWS];
    __m256d odd[GROUP_ROWS];
    for (size_t r = 0; r < GROUP_ROWS; r++) {
        even[r] = _mm256_setzero_pd();
        odd[r] = _mm256_setzero_pd();
    }

    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (size_t r = 0; r < count; r++) {
            even[r] = add_widened_at(even[r], rows[r] + j);
            odd[r] = add_widened_at(odd[r], rows[r] + j + 4);
        }
    }

    if (j + 4 <= n) {
        for (size_t r = 0; r < count; r++)
            even[r] = add_widened_at(even[r], rows[r] + j);
        j += 4;
    }

    if (j < n) {
        for (size_t r = 0; r < count; r++)
            odd[r] = add_widened_tail(odd[r], rows[r] + j, n - j);
    }

    for (size_t r = 0; r < count; r++)
        even[r] = _mm256_add_pd(even[r], odd[r]);

    /* One division serves the whole group, and each lane rounds exactly as a scalar division would. */
    __m128 means = _mm256_cvtpd_ps(_mm256_div_pd(sum_lanes4(even), _mm256_set1_pd((double)n)));
    float all[GROUP_ROWS];
    _mm_storeu_ps(all, means);
    for (size_t r = 0; r < count; r++)
        m[r] = all[r];
}

/* Computes pass 2 for count rows: the sums of d = x - m and of d * d into sum_d[r] and sum_d2[r]. Each
   lane is a float chain of at most SHORT_BLOCK / LANES steps, flushed into double. */
static inline __attribute__((always_inline)) void deviation_sums_short(const float *const rows[GROUP_ROWS],
                                                                        size_t count, size_t n,
                                                                        const float m[GROUP_ROWS],
                                                                        double sum_d[GROUP_ROWS],
                                                                        double sum_d2[GROUP_ROWS])
{
    __m256 centre[GROUP_ROWS];
    __m256d total_d[GROUP_ROWS];
    __m256d total_d2[GROUP_ROWS];
    for (size_t r = 0; r < GROUP_ROWS; r++) {
        centre[r] = _mm256_set1_ps(r < count ? m[r] : 0.0f);
        total_d[r] = _mm256_setzero_pd();
        total_d2[r] = _mm256_setzero_pd();
    }

    for (size_t j = 0; j < n;) {
        const size_t end = n - j > SHORT_BLOCK ? j + SHORT_BLOCK : n;
        __m256 part_d[GROUP_ROWS];
        __m256 part_d2[GROUP_ROWS];
        for (size_t r = 0; r < count; r++) {
            part_d[r] = _mm256_setzero_ps();
            part_d2[r] = _mm256_setzero_ps();
        }

        for (; j + LANES <= end; j += LANES) {
            for (size_t r = 0; r < count; r++) {
                __m256 d = _mm256_sub_ps(_mm256_loadu_ps(rows[r] + j), centre[r]);
                part_d[r] = _mm256_add_ps(part_d[r], d);
                part_d2[r] = _mm256_fmadd_ps(d, d, part_d2[r]);
            }
        }

        /* Only the row's last vector can be partial. Its inactive lanes get d = 0. */
        if (j < end) {
            const __m256i mask = first_lanes8(end - j);
            for (size_t r = 0; r < count; r++) {
                __m256 x = load_tail(rows[r] + j, end - j);
                __m256 d = _mm256_and_ps(_mm256_sub_ps(x, centre[r]), _mm256_castsi256_ps(mask));
                part_d[r] = _mm256_add_ps(part_d[r], d);
                part_d2[r] = _mm256_fmadd_ps(d, d, part_d2[r]);
            }
            j = end;
        }

        for (size_t r = 0; r < count; r++) {
            total_d[r] = add_widened(total_d[r], part_d[r]);
            total_d2[r] = add_widened(total_d2[r], part_d2[r]);
        }
    }

    _mm256_storeu_pd(sum_d, sum_lanes4(total_d));
    _mm256_storeu_pd(sum_d2, sum_lanes4(total_d2));
}

static inline __attribute__((always_inline)) void group_means(const float *x, size_t count, size_t n,
                                                               size_t row_stride, float m[GROUP_ROWS])
{
    const float *rows[GROUP_ROWS];
    for (size_t r = 0; r < count; r++)
        rows[r] = x + r * row_stride;
    means_short(rows, count, n, m);
}

/* Runs pass 2 and the finish for count consecutive rows at x, whose means m come from group_means. */
static inline __attribute__((always_inline)) void finish_short(const float *x, size_t count, size_t n,
                                                                size_t row_stride, const float m[GROUP_ROWS],
                                                                float *mean, float *variance, unsigned flags)
{
    const float *rows[GROUP_ROWS];
    for (size_t r = 0; r < count; r++)
        rows[r] = x + r * row_stride;

    double sum_d[GROUP_ROWS];
    double sum_d2[GROUP_ROWS];
    deviation_sums_short(rows, count, n, m, sum_d, sum_d2);

    for (size_t r = 0; r < count; r++) {
        sinkkit_moments_finish(rows[r], n, m[r], sum_d[r], sum_d2[r], flags, mean != NULL ? mean + r : NULL,
                               variance != NULL ? variance + r : NULL);
    }
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
    __m256d s[8];
    for (size_t a = 0; a < 8; a++)
        s[a] = _mm256_setzero_pd();

    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        for (size_t a = 0; a < 8; a++)
            s[a] = add_widened_at(s[a], row + j + 4 * a);
    }
    for (size_t a = 0; j + 4 <= n; j += 4, a++)
        s[a] = add_widened_at(s[a], row + j);
    if (j < n)
        s[7] = add_widened_tail(s[7], row + j, n - j);

    __m256d s0123 = _mm256_add_pd(_mm256_add_pd(s[0], s[1]), _mm256_add_pd(s[2], s[3]));
    __m256d s4567 = _mm256_add_pd(_mm256_add_pd(s[4], s[5]), _mm256_add_pd(s[6], s[7]));
    return sum_lanes(_mm256_add_pd(s0123, s4567));
}

/* Joins four float chains with a 2-level tree (two roundings). */
static inline __m256 join_chains(const __m256 chain[LONG_CHAINS])
{
    return _mm256_add_ps(_mm256_add_ps(chain[0], chain[1]), _mm256_add_ps(chain[2], chain[3]));
}

static inline void accumulate(__m256 *d, __m256 *d2, __m256 deviation)
{
    *d = _mm256_add_ps(*d, deviation);
    *d2 = _mm256_fmadd_ps(deviation, deviation, *d2);
}

/* Runs pass 2 over a whole block of LONG_BLOCK elements at p: LONG_STEPS steps of one vector per chain.
   The row is in L1 by now, so memory would idle until pass 1 of the next row starts. The block
   therefore prefetches the same span of the next row (next_p), one 64-byte line per two vectors. */
static inline void accumulate_full_block(const float *p, const float *next_p, __m256 centre, __m256 *sum_d,
                                         __m256 *sum_d2)
{
    __m256 d[LONG_CHAINS];
    __m256 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        d[c] = _mm256_setzero_ps();
        d2[c] = _mm256_setzero_ps();
    }

    for (size_t step = 0; step < LONG_STEPS; step++) {
        for (size_t c = 0; c < LONG_CHAINS; c++) {
            const size_t offset = (step * LONG_CHAINS + c) * LANES;
            if (c % 2 == 0)
                _mm_prefetch((const char *)(next_p + offset), _MM_HINT_T0);
            accumulate(&d[c], &d2[c], _mm256_sub_ps(_mm256_loadu_ps(p + offset), centre));
        }
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Runs pass 2 over the last count (< LONG_BLOCK) elements at p: whole steps, then single vectors on the
   next chains, the last one masked. No chain takes more than LONG_STEPS vectors. */
static inline void accumulate_last_block(const float *p, size_t count, __m256 centre, __m256 *sum_d,
                                         __m256 *sum_d2)
{
    __m256 d[LONG_CHAINS];
    __m256 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        d[c] = _mm256_setzero_ps();
        d2[c] = _mm256_setzero_ps();
    }

    size_t j = 0;
    for (; j + LONG_CHAINS * LANES <= count; j += LONG_CHAINS * LANES) {
        for (size_t c = 0; c < LONG_CHAINS; c++)
            accumulate(&d[c], &d2[c], _mm256_sub_ps(_mm256_loadu_ps(p + j + c * LANES), centre));
    }

    size_t c = 0;
    for (; j + LANES <= count; j += LANES, c++)
        accumulate(&d[c], &d2[c], _mm256_sub_ps(_mm256_loadu_ps(p + j), centre));

    if (j < count) {
        const __m256i mask = first_lanes8(count - j);
        __m256 x = load_tail(p + j, count - j);
        accumulate(&d[c], &d2[c], _mm256_and_ps(_mm256_sub_ps(x, centre), _mm256_castsi256_ps(mask)));
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Computes pass 2, the sums of d = x - m and of d * d, block by block. next is the next row (or the row
   itself for the last one), at least n elements. */
static void deviation_sums_long(const float *row, const float *next, size_t n, float m, double *sum_d,
                                double *sum_d2)
{
    const __m256 centre = _mm256_set1_ps(m);
    __m256d total_d = _mm256_setzero_pd();
    __m256d total_d2 = _mm256_setzero_pd();
    __m256 d;
    __m256 d2;

    size_t j = 0;
    for (; j + LONG_BLOCK <= n; j += LONG_BLOCK) {
        accumulate_full_block(row + j, next + j, centre, &d, &d2);
        total_d = add_widened(total_d, d);
        total_d2 = add_widened(total_d2, d2);
    }

    if (j < n) {
        accumulate_last_block(row + j, n - j, centre, &d, &d2);
        total_d = add_widened(total_d, d);
        total_d2 = add_widened(total_d2, d2);
    }

    *sum_d = sum_lanes(total_d);
    *sum_d2 = sum_lanes(total_d2);
}

static void moments_long(const float *row, const float *next, size_t n, float *mean, float *variance,
                         unsigned flags)
{
    const float m = (float)(row_sum_long(row, n) / (double)n);

    double sum_d;
    double sum_d2;
    deviation_sums_long(row, next, n, m, &sum_d, &sum_d2);

    sinkkit_moments_finish(row, n, m, sum_d, sum_d2, flags, mean, variance);
}

void sinkkit_row_moments_f32_avx2(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                  float *variance, unsigned flags)
{
    if (cols > SHORT_ROW_MAX) {
        for (size_t i = 0; i < rows; i++) {
            const float *row = x + i * row_stride;
            const float *next = i + 1 < rows ? row + row_stride : row;
            moments_long(row, next, cols, mean != NULL ? mean + i : NULL, variance != NULL ? variance + i : NULL,
                         flags);
        }
        return;
    }

    moments_short_rows(x, rows, cols, row_stride, mean, variance, flags);
}
