/* Row moments for AVX2 + FMA, following rule 3 of the numeric scheme in kernels.h with 8-lane float partial sums. */
#include <float.h>
#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"
#include "tail_avx2.h"

enum {
    LANES = 8,

    /* Rows of at most SHORT_VECTORS vectors go GROUP_ROWS at a time, one lane per row for the
       horizontal sums, the shifts, the check and the finish. A row is summed in halves of at most
       HALF_VECTORS vectors, so that its deviations fit in the 16 registers. */
    HALF_VECTORS = 8,
    SHORT_VECTORS = 2 * HALF_VECTORS,
    SHORT_ROW_MAX = SHORT_VECTORS * LANES,
    GROUP_ROWS = 8,

    /* Groups between the one finished and the rows it prefetches: 16 KiB at 128 columns, as on AVX-512.
       On AMD Zen 5, 4 groups instead of 2 took 25% off 32 MiB calls and 9% off 128 MiB calls. */
    PREFETCH_GROUPS = 4,

    /* A longer row's shift is the float mean of its first PREFIX elements: eight trees of 8 vectors. */
    PREFIX = 8 * HALF_VECTORS * LANES,

    /* A longer row has four chains of at most 6 steps each. The 2-level float tree that joins the
       chains adds two roundings, for 8 in all. */
    LONG_CHAINS = 4,
    LONG_STEPS = SINKKIT_FLOAT_PARTIAL_ROUNDINGS - 2,
    LONG_BLOCK = LONG_CHAINS * LONG_STEPS * LANES,

    /* Longer rows prefetch this many elements (8 KiB) ahead. On AMD Zen 5, rows streamed from memory
       ran about 15% faster than with 2 KiB, and rows from L3 within a few percent either way. */
    PREFETCH_AHEAD = 2048,
};

/* All-ones in the first count (at most 8) 32-bit lanes. */
static inline __m256i first_lanes(size_t count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- sums within a row ---- */

/* Returns a + b as the FMA b * 1 + a, which rounds exactly as the add does, because the product is exact.
   AMD Zen 5 has two add pipes and two FMA pipes, and a short row needs far more adds than FMAs. */
static inline __attribute__((always_inline)) __m256 add_on_fma(__m256 a, __m256 b)
{
    return _mm256_fmadd_ps(b, _mm256_set1_ps(1.0f), a);
}

/* Returns a + b when present, else a: a tree node whose right operand may be missing. */
static inline __attribute__((always_inline)) __m256 tree_add(__m256 a, __m256 b, bool present)
{
    return present ? _mm256_add_ps(a, b) : a;
}

/* Returns a + b when present, else a, with the add on the FMA pipes. */
static inline __attribute__((always_inline)) __m256 tree_add_on_fma(__m256 a, __m256 b, bool present)
{
    return present ? add_on_fma(a, b) : a;
}

/* Returns the sum of the first count (1 to 8) of v0 to v7 as a pairwise tree: at most 3 roundings per
   term, and exact for equal terms (each level doubles them). Plain arguments rather than an array let
   GCC keep every vector in a register. The first level goes to the FMA pipes. */
static inline __attribute__((always_inline)) __m256 sum8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4,
                                                          __m256 v5, __m256 v6, __m256 v7, size_t count)
{
    __m256 s01 = tree_add_on_fma(v0, v1, count > 1);
    __m256 s23 = tree_add_on_fma(v2, v3, count > 3);
    __m256 s45 = tree_add_on_fma(v4, v5, count > 5);
    __m256 s67 = tree_add_on_fma(v6, v7, count > 7);
    return tree_add(tree_add(s01, s23, count > 2), tree_add(s45, s67, count > 6), count > 4);
}

/* ---- horizontal sums of 8 rows at once ---- */

/* Folds the vectors of two rows a and b: in each 128-bit half, lanes (a0 + a2, b0 + b2, a1 + a3, b1 + b3)
   of their lanes l0 to l3 in that half. */
static inline __attribute__((always_inline)) __m256 fold2(__m256 a, __m256 b)
{
    return _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
}

/* Joins the fold2 results of rows (a, b) and (c, d): in each half, lane k contains row k's half sum,
   (l0 + l2) + (l1 + l3). */
static inline __attribute__((always_inline)) __m256 fold4(__m256 ab, __m256 cd)
{
    __m256d ab2 = _mm256_castps_pd(ab);
    __m256d cd2 = _mm256_castps_pd(cd);
    return _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(ab2, cd2)),
                         _mm256_castpd_ps(_mm256_unpackhi_pd(ab2, cd2)));
}

/* Joins two fold4 results: lane r is row r's total, low half sum + high half sum. Every row's lanes are
   associated alike, so a row's sum does not depend on its place in a group. */
static inline __attribute__((always_inline)) __m256 fold8(__m256 q0, __m256 q1)
{
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}

/* ---- longer rows, one at a time ---- */

/* Returns the float mean of the first min(n, PREFIX) elements: pairwise trees of 8 vectors, the rest
   (fewer than 8 vectors, only when n < PREFIX) added one by one, then a tree of those sums. */
static float prefix_shift(const float *row, size_t n)
{
    const size_t count = n < PREFIX ? n : PREFIX;
    const size_t chunk = HALF_VECTORS * LANES;
    __m256 sum[PREFIX / (HALF_VECTORS * LANES)];
    size_t j = 0;

#pragma GCC unroll 8
    for (size_t c = 0; c < PREFIX / chunk; c++) {
        sum[c] = _mm256_setzero_ps();
        if (j + chunk > count)
            continue;
        const float *p = row + j;
        sum[c] = sum8(_mm256_loadu_ps(p), _mm256_loadu_ps(p + LANES), _mm256_loadu_ps(p + 2 * LANES),
                      _mm256_loadu_ps(p + 3 * LANES), _mm256_loadu_ps(p + 4 * LANES), _mm256_loadu_ps(p + 5 * LANES),
                      _mm256_loadu_ps(p + 6 * LANES), _mm256_loadu_ps(p + 7 * LANES), HALF_VECTORS);
        j += chunk;
    }

    /* A short prefix leaves the last chunk free for the rest. */
    __m256 rest = sum[7];
    for (; j + LANES <= count; j += LANES)
        rest = _mm256_add_ps(rest, _mm256_loadu_ps(row + j));
    if (j < count)
        rest = _mm256_add_ps(rest, load_tail(row + j, count - j));

    __m256 total = sum8(sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6], rest, 8);
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    half = _mm_add_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half) / (float)count;
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

/* The same, with the add on the FMA pipes when on_fma is set. With the add of every other chain moved
   over, rows in L1 ran about 10% faster. */
static inline void accumulate_balanced(__m256 *d, __m256 *d2, __m256 deviation, bool on_fma)
{
    *d = on_fma ? add_on_fma(*d, deviation) : _mm256_add_ps(*d, deviation);
    *d2 = _mm256_fmadd_ps(deviation, deviation, *d2);
}

/* Sums a whole block of LONG_BLOCK elements at p: vector k goes to chain k % LONG_CHAINS. The first step
   starts the chains (d * d rounds like an FMA into zero). Each line PREFETCH_AHEAD elements on is
   prefetched, one 64-byte line per two vectors. */
static inline void full_block(const float *p, __m256 centre, __m256 *sum_d, __m256 *sum_d2)
{
    __m256 d[LONG_CHAINS];
    __m256 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        if (c % 2 == 0)
            _mm_prefetch((const char *)(p + c * LANES + PREFETCH_AHEAD), _MM_HINT_T0);
        d[c] = _mm256_sub_ps(_mm256_loadu_ps(p + c * LANES), centre);
        d2[c] = _mm256_mul_ps(d[c], d[c]);
    }

    /* Kept as a loop: unrolled, GCC 12 hoists the loads and spills the chains. */
#pragma GCC unroll 1
    for (size_t step = 1; step < LONG_STEPS; step++) {
        for (size_t c = 0; c < LONG_CHAINS; c++) {
            const size_t offset = (step * LONG_CHAINS + c) * LANES;
            if (c % 2 == 0)
                _mm_prefetch((const char *)(p + offset + PREFETCH_AHEAD), _MM_HINT_T0);
            accumulate_balanced(&d[c], &d2[c], _mm256_sub_ps(_mm256_loadu_ps(p + offset), centre), c % 2 == 1);
        }
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Sums the last count (< LONG_BLOCK) elements at p with the same assignment of vectors to chains, the
   last vector partial (its inactive lanes get d = 0). Both loops unroll fully, so every chain index is
   a constant and the chains stay in registers. */
static inline void last_block(const float *p, size_t count, __m256 centre, __m256 *sum_d, __m256 *sum_d2)
{
    __m256 d[LONG_CHAINS];
    __m256 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        d[c] = _mm256_setzero_ps();
        d2[c] = _mm256_setzero_ps();
    }

    size_t j = 0;
#pragma GCC unroll 6
    for (size_t step = 0; step < LONG_STEPS; step++) {
#pragma GCC unroll 4
        for (size_t c = 0; c < LONG_CHAINS; c++) {
            if (j + LANES <= count) {
                accumulate(&d[c], &d2[c], _mm256_sub_ps(_mm256_loadu_ps(p + j), centre));
                j += LANES;
            } else if (j < count) {
                const __m256 mask = _mm256_castsi256_ps(first_lanes(count - j));
                accumulate(&d[c], &d2[c], _mm256_and_ps(_mm256_sub_ps(load_tail(p + j, count - j), centre), mask));
                j = count;
            }
        }
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Computes the sums of d = x - c and of d * d over the row, block by block. */
static void long_deviations(const float *row, size_t n, float c, double *sum_d, double *sum_d2)
{
    const __m256 centre = _mm256_set1_ps(c);
    __m256d total_d = _mm256_setzero_pd();
    __m256d total_d2 = _mm256_setzero_pd();
    __m256 d;
    __m256 d2;

    size_t j = 0;
    for (; j + LONG_BLOCK <= n; j += LONG_BLOCK) {
        full_block(row + j, centre, &d, &d2);
        total_d = add_widened(total_d, d);
        total_d2 = add_widened(total_d2, d2);
    }

    if (j < n) {
        last_block(row + j, n - j, centre, &d, &d2);
        total_d = add_widened(total_d, d);
        total_d2 = add_widened(total_d2, d2);
    }

    *sum_d = sum_lanes(total_d);
    *sum_d2 = sum_lanes(total_d2);
}

static void long_row(const float *row, size_t n, float *mean, float *variance, unsigned flags)
{
    float c = prefix_shift(row, n);
    double sum_d;
    double sum_d2;
    long_deviations(row, n, c, &sum_d, &sum_d2);

    if (!sinkkit_moments_shift_close(n, sum_d, sum_d2)) {
        c = (float)((double)c + sum_d / (double)n);
        long_deviations(row, n, c, &sum_d, &sum_d2);
    }

    if (sinkkit_moments_trusted(n, sum_d, sum_d2))
        sinkkit_moments_finish_trusted(n, c, sum_d, sum_d2, flags, mean, variance);
    else
        sinkkit_moments_finish(row, n, c, sum_d, sum_d2, flags, mean, variance);
}

/* ---- rows of at most SHORT_ROW_MAX elements, 8 rows at a time ---- */

/* The shape of the rows of a call: n elements in vectors vectors, the last one holding tail (1 to 8)
   elements. Kept apart from the groups, so that GCC can treat its fields as the constants they are. */
typedef struct short_shape {
    size_t n;
    size_t vectors;
    size_t tail;
} short_shape;

/* A group of up to 8 rows. Entries of row past count repeat the last row, so that every group runs the
   same code without branches; their results are discarded. */
typedef struct short_group {
    const float *row[GROUP_ROWS];
    size_t count;
} short_group;

static inline void short_group_at(short_group *g, const float *x, size_t count, size_t stride)
{
    g->count = count;
    for (size_t r = 0; r < GROUP_ROWS; r++)
        g->row[r] = x + (r < count ? r : count - 1) * stride;
}

/* Returns vector k of row: zero past the row's vectors, the last one holding only its tail. */
static inline __attribute__((always_inline)) __m256 short_vector(const short_shape *s, const float *row, size_t k)
{
    if (k >= s->vectors)
        return _mm256_setzero_ps();
    if (k + 1 == s->vectors && s->tail < LANES)
        return load_tail(row + k * LANES, s->tail);
    return _mm256_loadu_ps(row + k * LANES);
}

/* Returns e = c - x for vector k of row, the deviation with its sign flipped, which lets the load fold
   into the subtraction; zero past the row's vectors and in the inactive lanes of the last one. */
static inline __attribute__((always_inline)) __m256 short_negated_deviation(const short_shape *s, const float *row,
                                                                             size_t k, __m256 centre)
{
    if (k >= s->vectors)
        return _mm256_setzero_ps();
    if (k + 1 == s->vectors && s->tail < LANES) {
        const __m256 mask = _mm256_castsi256_ps(first_lanes(s->tail));
        return _mm256_and_ps(_mm256_sub_ps(centre, load_tail(row + k * LANES, s->tail)), mask);
    }
    return _mm256_sub_ps(centre, _mm256_loadu_ps(row + k * LANES));
}

/* Returns the sum of vectors first to first + 7 of row (those that exist), as sum8 does. */
static inline __attribute__((always_inline)) __m256 short_half_sum(const short_shape *s, const float *row,
                                                                    size_t first)
{
    return sum8(short_vector(s, row, first), short_vector(s, row, first + 1), short_vector(s, row, first + 2),
                short_vector(s, row, first + 3), short_vector(s, row, first + 4), short_vector(s, row, first + 5),
                short_vector(s, row, first + 6), short_vector(s, row, first + 7), s->vectors - first);
}

/* Returns the sum of row r's elements, in the lanes of one vector: a tree of its halves. */
static inline __attribute__((always_inline)) __m256 short_row_sum(const short_shape *s, const short_group *g,
                                                                   size_t r)
{
    const float *row = g->row[r];
    const __m256 low = short_half_sum(s, row, 0);
    if (s->vectors <= HALF_VECTORS)
        return low;
    return _mm256_add_ps(low, short_half_sum(s, row, HALF_VECTORS));
}

/* Returns the lane sums of eight row vectors, lane r for row r, with fold2, fold4 and fold8. */
static inline __attribute__((always_inline)) __m256 fold_rows(const __m256 v[GROUP_ROWS])
{
    const __m256 q0 = fold4(fold2(v[0], v[1]), fold2(v[2], v[3]));
    const __m256 q1 = fold4(fold2(v[4], v[5]), fold2(v[6], v[7]));
    return fold8(q0, q1);
}

/* Computes the shifts of a group: c[r] = (float)(sum of row r) / n, the float mean, whose error only
   decides whether the check of rule 3 passes. The rows go through one loop rather than unrolled code,
   which keeps one copy of a row's code per vector count. */
static inline __attribute__((always_inline)) void short_shifts(const short_shape *s, const short_group *g,
                                                                float c[GROUP_ROWS])
{
    __m256 sum[GROUP_ROWS];
#pragma GCC unroll 1
    for (size_t r = 0; r < GROUP_ROWS; r++)
        sum[r] = short_row_sum(s, g, r);
    _mm256_storeu_ps(c, _mm256_div_ps(fold_rows(sum), _mm256_set1_ps((float)s->n)));
}

/* Computes the sums of e = c - x and of e * e over vectors k and k + 1 of row (the second only when
   it exists): the first level of the trees of sum8 and sum_squares8. */
static inline __attribute__((always_inline)) void short_pair_deviations(const short_shape *s, const float *row,
                                                                         size_t k, __m256 centre, __m256 *e_sum,
                                                                         __m256 *e2_sum)
{
    const __m256 e0 = short_negated_deviation(s, row, k, centre);
    *e_sum = e0;
    *e2_sum = _mm256_mul_ps(e0, e0);
    if (k + 1 < s->vectors) {
        const __m256 e1 = short_negated_deviation(s, row, k + 1, centre);
        *e_sum = add_on_fma(e0, e1);
        *e2_sum = _mm256_fmadd_ps(e1, e1, *e2_sum);
    }
}

/* Computes the sums of e = c - x and of e * e over vectors first to first + 7 of row (those that exist),
   with the trees of sum8 and sum_squares8. The pairs are joined as soon as they are formed, which keeps
   few vectors live: AVX2 has 16 registers. */
static inline __attribute__((always_inline)) void short_half_deviations(const short_shape *s, const float *row,
                                                                         size_t first, __m256 centre,
                                                                         __m256 *e_sum, __m256 *e2_sum)
{
    const size_t count = s->vectors - first;
    __m256 a0;
    __m256 b0;
    __m256 a1;
    __m256 b1;
    short_pair_deviations(s, row, first, centre, &a0, &b0);
    if (count > 2) {
        short_pair_deviations(s, row, first + 2, centre, &a1, &b1);
        a0 = _mm256_add_ps(a0, a1);
        b0 = _mm256_add_ps(b0, b1);
    }

    if (count > 4) {
        __m256 a2;
        __m256 b2;
        short_pair_deviations(s, row, first + 4, centre, &a2, &b2);
        if (count > 6) {
            short_pair_deviations(s, row, first + 6, centre, &a1, &b1);
            a2 = _mm256_add_ps(a2, a1);
            b2 = _mm256_add_ps(b2, b1);
        }
        a0 = _mm256_add_ps(a0, a2);
        b0 = _mm256_add_ps(b0, b2);
    }

    *e_sum = a0;
    *e2_sum = b0;
}

/* Computes row r's sums of e and of e * e, in the lanes of *e_sum and *e2_sum. A square takes at most 4
   roundings in its half (a square, an FMA and two adds) and 1 where the halves join. The function also
   prefetches the lines ahead bytes further on, one per two vectors. */
static inline __attribute__((always_inline)) void short_row_deviations(const short_shape *s, const short_group *g,
                                                                        size_t r, float c, size_t ahead,
                                                                        __m256 *e_sum, __m256 *e2_sum)
{
    const float *row = g->row[r];
    for (size_t k = 0; k < s->vectors; k += 2)
        _mm_prefetch((const char *)((uintptr_t)(row + k * LANES) + ahead), _MM_HINT_T0);

    const __m256 centre = _mm256_set1_ps(c);
    short_half_deviations(s, row, 0, centre, e_sum, e2_sum);
    if (s->vectors > HALF_VECTORS) {
        __m256 high;
        __m256 high2;
        short_half_deviations(s, row, HALF_VECTORS, centre, &high, &high2);
        *e_sum = _mm256_add_ps(*e_sum, high);
        *e2_sum = _mm256_add_ps(*e2_sum, high2);
    }
}

/* Computes the sums around the shifts of a group: lane r of *sum_d and *sum_d2 for row r. A square takes
   at most 5 roundings in its row and 3 in fold2, fold4 and fold8: 8, per rule 1. */
static inline __attribute__((always_inline)) void short_deviations(const short_shape *s, const short_group *g,
                                                                    const float c[GROUP_ROWS], size_t ahead,
                                                                    __m256 *sum_d, __m256 *sum_d2)
{
    __m256 e[GROUP_ROWS];
    __m256 e2[GROUP_ROWS];
#pragma GCC unroll 1
    for (size_t r = 0; r < GROUP_ROWS; r++)
        short_row_deviations(s, g, r, c[r], ahead, &e[r], &e2[r]);

    /* Negation is exact: the sum of d is minus the sum of e. */
    *sum_d = _mm256_xor_ps(fold_rows(e), _mm256_set1_ps(-0.0f));
    *sum_d2 = fold_rows(e2);
}

/* Finishes 4 rows in double lanes with the operations of sinkkit_moments_finish_trusted(), so with the
   same bits. Returns the mask (bit r for row r) of the rows it finished: those whose sums pass
   sinkkit_moments_shift_close() and sinkkit_moments_trusted(), tested with the same comparisons. */
static inline __attribute__((always_inline)) unsigned finish4(__m128 shift, __m128 sum_d, __m128 sum_d2, size_t n,
                                                               unsigned flags, __m128 *mean, __m128 *variance)
{
    const __m256d c = _mm256_cvtps_pd(shift);
    const __m256d a = _mm256_cvtps_pd(sum_d);
    const __m256d b = _mm256_cvtps_pd(sum_d2);
    const __m256d count = _mm256_set1_pd((double)n);
    const __m256d a2 = _mm256_mul_pd(a, a);
    const __m256d abs_a = _mm256_andnot_pd(_mm256_set1_pd(-0.0), a);

    __m256d ok = _mm256_cmp_pd(_mm256_mul_pd(_mm256_set1_pd(65.0), a2), _mm256_mul_pd(count, b), _CMP_LE_OQ);
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(b, _mm256_set1_pd((double)n * SINKKIT_RESCUE_FLOOR), _CMP_GE_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(b, _mm256_set1_pd(DBL_MAX), _CMP_LE_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(abs_a, _mm256_set1_pd(DBL_MAX), _CMP_LE_OQ));

    const double denominator = (flags & SINKKIT_MOMENTS_UNBIASED) ? (double)n - 1.0 : (double)n;
    __m256d centred = _mm256_max_pd(_mm256_sub_pd(b, _mm256_div_pd(a2, count)), _mm256_setzero_pd());
    *mean = _mm256_cvtpd_ps(_mm256_add_pd(c, _mm256_div_pd(a, count)));
    *variance = _mm256_cvtpd_ps(_mm256_div_pd(centred, _mm256_set1_pd(denominator)));
    return (unsigned)_mm256_movemask_pd(ok);
}

/* Finishes a row that finish4 left. When the check failed, its sums are formed once more, around
   c + sum_d / n, by the code for longer rows. */
static void short_row_slow_path(const float *row, size_t n, float c, double sum_d, double sum_d2, unsigned flags,
                                float *mean, float *variance)
{
    if (!sinkkit_moments_shift_close(n, sum_d, sum_d2)) {
        c = (float)((double)c + sum_d / (double)n);
        long_deviations(row, n, c, &sum_d, &sum_d2);
    }
    sinkkit_moments_finish(row, n, c, sum_d, sum_d2, flags, mean, variance);
}

/* Stores those of the first count values of v whose bit is set in done at out. A full group goes in one
   store. */
static inline void store_rows(float *out, __m256 v, unsigned done, size_t count)
{
    if (out == NULL)
        return;
    if (count == GROUP_ROWS && done == 0xFFu) {
        _mm256_storeu_ps(out, v);
        return;
    }
    float all[GROUP_ROWS];
    _mm256_storeu_ps(all, v);
    for (size_t r = 0; r < count; r++) {
        if (done & (1u << r))
            out[r] = all[r];
    }
}

/* Runs pass 2 and the finish of a group whose shifts are c. mean and variance point at the group's first
   outputs (either may be NULL). */
static inline __attribute__((always_inline)) void short_finish(const short_shape *s, const short_group *g,
                                                                const float c[GROUP_ROWS], size_t ahead,
                                                                float *mean, float *variance, unsigned flags)
{
    __m256 sum_d;
    __m256 sum_d2;
    short_deviations(s, g, c, ahead, &sum_d, &sum_d2);

    const __m256 shift = _mm256_loadu_ps(c);
    __m128 m[2];
    __m128 v[2];
    const unsigned low = finish4(_mm256_castps256_ps128(shift), _mm256_castps256_ps128(sum_d),
                                 _mm256_castps256_ps128(sum_d2), s->n, flags, &m[0], &v[0]);
    const unsigned high = finish4(_mm256_extractf128_ps(shift, 1), _mm256_extractf128_ps(sum_d, 1),
                                  _mm256_extractf128_ps(sum_d2, 1), s->n, flags, &m[1], &v[1]);

    const unsigned rows = (1u << g->count) - 1u;
    const unsigned done = (low | (high << 4)) & rows;
    store_rows(mean, _mm256_set_m128(m[1], m[0]), done, g->count);
    store_rows(variance, _mm256_set_m128(v[1], v[0]), done, g->count);

    if (done == rows)
        return;

    float d[GROUP_ROWS];
    float d2[GROUP_ROWS];
    _mm256_storeu_ps(d, sum_d);
    _mm256_storeu_ps(d2, sum_d2);
    for (size_t r = 0; r < g->count; r++) {
        if (done & (1u << r))
            continue;
        short_row_slow_path(g->row[r], s->n, c[r], (double)d[r], (double)d2[r], flags,
                            mean != NULL ? mean + r : NULL, variance != NULL ? variance + r : NULL);
    }
}

/* Computes the moments of rows of vectors vectors each. The shifts of each group are computed one group
   ahead, so that pass 1 of the next group overlaps the reductions, divisions and pass 2 of this one.
   The last group may hold fewer rows. Every row's arithmetic is the same in any group, so results do
   not depend on how rows are split into calls. */
static inline __attribute__((always_inline)) void short_rows(const float *x, size_t rows, size_t n, size_t stride,
                                                              size_t vectors, float *mean, float *variance,
                                                              unsigned flags)
{
    const short_shape shape = {n, vectors, n - (vectors - 1) * LANES};
    short_group group[2];
    float c[2][GROUP_ROWS];

    /* Step k computes the shifts of group k and finishes group k - 1, so that each appears once in
       the code of each vector count. */
    for (size_t next = 0;; next += GROUP_ROWS) {
        const size_t slot = (next / GROUP_ROWS) % 2;
        if (next < rows) {
            short_group_at(&group[slot], x + next * stride, rows - next < GROUP_ROWS ? rows - next : GROUP_ROWS,
                           stride);
            short_shifts(&shape, &group[slot], c[slot]);
        }
        if (next == 0)
            continue;

        const size_t i = next - GROUP_ROWS;
        /* Nothing past the call's rows is prefetched. */
        const size_t ahead = i + (PREFETCH_GROUPS + 1) * GROUP_ROWS <= rows
                                 ? PREFETCH_GROUPS * GROUP_ROWS * stride * sizeof(float)
                                 : 0;
        short_finish(&shape, &group[slot ^ 1], c[slot ^ 1], ahead, mean != NULL ? mean + i : NULL,
                     variance != NULL ? variance + i : NULL, flags);
        if (next >= rows)
            return;
    }
}

void sinkkit_row_moments_f32_avx2(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                  float *variance, unsigned flags)
{
    if (rows == 0)
        return;

    if (cols > SHORT_ROW_MAX) {
        for (size_t i = 0; i < rows; i++) {
            long_row(x + i * row_stride, cols, mean != NULL ? mean + i : NULL, variance != NULL ? variance + i : NULL,
                     flags);
        }
        return;
    }

    /* One copy of the group code per vector count, so that its trees have constant shapes. */
    switch ((cols + LANES - 1) / LANES) {
    case 1:
        short_rows(x, rows, cols, row_stride, 1, mean, variance, flags);
        break;
    case 2:
        short_rows(x, rows, cols, row_stride, 2, mean, variance, flags);
        break;
    case 3:
        short_rows(x, rows, cols, row_stride, 3, mean, variance, flags);
        break;
    case 4:
        short_rows(x, rows, cols, row_stride, 4, mean, variance, flags);
        break;
    case 5:
        short_rows(x, rows, cols, row_stride, 5, mean, variance, flags);
        break;
    case 6:
        short_rows(x, rows, cols, row_stride, 6, mean, variance, flags);
        break;
    case 7:
        short_rows(x, rows, cols, row_stride, 7, mean, variance, flags);
        break;
    case 8:
        short_rows(x, rows, cols, row_stride, 8, mean, variance, flags);
        break;
    case 9:
        short_rows(x, rows, cols, row_stride, 9, mean, variance, flags);
        break;
    case 10:
        short_rows(x, rows, cols, row_stride, 10, mean, variance, flags);
        break;
    case 11:
        short_rows(x, rows, cols, row_stride, 11, mean, variance, flags);
        break;
    case 12:
        short_rows(x, rows, cols, row_stride, 12, mean, variance, flags);
        break;
    case 13:
        short_rows(x, rows, cols, row_stride, 13, mean, variance, flags);
        break;
    case 14:
        short_rows(x, rows, cols, row_stride, 14, mean, variance, flags);
        break;
    case 15:
        short_rows(x, rows, cols, row_stride, 15, mean, variance, flags);
        break;
    default:
        short_rows(x, rows, cols, row_stride, 16, mean, variance, flags);
        break;
    }
}
