/* Row moments for AVX-512 (F, BW, DQ, VL), following rule 3 of the numeric scheme in kernels.h with 16-lane float partial sums. */
#include <float.h>
#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

enum {
    LANES = 16,

    /* Rows of at most SHORT_VECTORS vectors go GROUP_ROWS at a time, one lane per row for the
       horizontal sums, the shifts, the check and the finish. */
    SHORT_VECTORS = 8,
    SHORT_ROW_MAX = SHORT_VECTORS * LANES,
    GROUP_ROWS = 16,

    /* A longer row's shift is the float mean of its first PREFIX elements: four trees of 8 vectors. */
    PREFIX = 4 * SHORT_VECTORS * LANES,

    /* A longer row is summed in blocks of LONG_CHAINS chains of LONG_STEPS vectors. A chain of d * d
       takes LONG_STEPS roundings, the 3-level tree that joins the chains 3 more and the fold of 16
       lanes to 8 before the flush to double 1 more: 8 in all. */
    LONG_CHAINS = 8,
    LONG_STEPS = SINKKIT_FLOAT_PARTIAL_ROUNDINGS - 4,
    LONG_BLOCK = LONG_CHAINS * LONG_STEPS * LANES,

    /* Longer rows prefetch this many elements (8 KiB) ahead. On AMD Zen 5, rows streamed from memory
       ran about 15% faster than with 2 KiB, and rows from L3 within a few percent either way. */
    PREFETCH_AHEAD = 2048,
};

/* Returns the mask of the first count (at most 16) lanes. */
static inline __mmask16 first_lanes(size_t count)
{
    return (__mmask16)((1u << count) - 1u);
}

/* ---- sums within a row ---- */

/* Returns a + b when present, else a: a tree node whose right operand may be missing. */
static inline __attribute__((always_inline)) __m512 tree_add(__m512 a, __m512 b, bool present)
{
    return present ? _mm512_add_ps(a, b) : a;
}

/* Returns the sum of the first count (1 to 8) of v0 to v7 as a pairwise tree: at most 3 roundings per
   term, and exact for equal terms (each level doubles them). Plain arguments rather than an array let
   GCC keep every vector in a register. */
static inline __attribute__((always_inline)) __m512 sum8(__m512 v0, __m512 v1, __m512 v2, __m512 v3, __m512 v4,
                                                          __m512 v5, __m512 v6, __m512 v7, size_t count)
{
    __m512 s01 = tree_add(v0, v1, count > 1);
    __m512 s23 = tree_add(v2, v3, count > 3);
    __m512 s45 = tree_add(v4, v5, count > 5);
    __m512 s67 = tree_add(v6, v7, count > 7);
    return tree_add(tree_add(s01, s23, count > 2), tree_add(s45, s67, count > 6), count > 4);
}

/* Returns the sum of the squares of the first count (1 to 8) of e0 to e7: squares paired by an FMA, then
   a tree over the pairs. Each square takes at most 4 roundings. */
static inline __attribute__((always_inline)) __m512 sum_squares8(__m512 e0, __m512 e1, __m512 e2, __m512 e3,
                                                                  __m512 e4, __m512 e5, __m512 e6, __m512 e7,
                                                                  size_t count)
{
    __m512 p0 = _mm512_mul_ps(e0, e0);
    __m512 p1 = _mm512_mul_ps(e2, e2);
    __m512 p2 = _mm512_mul_ps(e4, e4);
    __m512 p3 = _mm512_mul_ps(e6, e6);
    p0 = count > 1 ? _mm512_fmadd_ps(e1, e1, p0) : p0;
    p1 = count > 3 ? _mm512_fmadd_ps(e3, e3, p1) : p1;
    p2 = count > 5 ? _mm512_fmadd_ps(e5, e5, p2) : p2;
    p3 = count > 7 ? _mm512_fmadd_ps(e7, e7, p3) : p3;
    return tree_add(tree_add(p0, p1, count > 2), tree_add(p2, p3, count > 6), count > 4);
}

/* ---- horizontal sums of 16 rows at once ---- */

/* Folds the vectors of two rows a and b: in each 128-bit block, lanes (a0 + a2, b0 + b2, a1 + a3, b1 + b3)
   of their lanes l0 to l3 in that block. */
static inline __attribute__((always_inline)) __m512 fold2(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

/* Joins the fold2 results of rows (a, b) and (c, d): in each block, lane k contains row k's block sum,
   (l0 + l2) + (l1 + l3). */
static inline __attribute__((always_inline)) __m512 fold4(__m512 ab, __m512 cd)
{
    __m512d ab2 = _mm512_castps_pd(ab);
    __m512d cd2 = _mm512_castps_pd(cd);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(ab2, cd2)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(ab2, cd2)));
}

/* Joins four fold4 results: lane r is row r's total, (b0 + b1) + (b2 + b3) over its block sums b. Every
   row's lanes are associated alike, so a row's sum does not depend on its place in a group. */
static inline __attribute__((always_inline)) __m512 fold16(__m512 q0, __m512 q1, __m512 q2, __m512 q3)
{
    __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(q0, q1, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_f32x4(q0, q1, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(q2, q3, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_f32x4(q2, q3, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* ---- longer rows, one at a time ---- */

/* Returns the float mean of the first min(n, PREFIX) elements: pairwise trees of 8 vectors, the rest
   (fewer than 8 vectors, only when n < PREFIX) added one by one, then a tree of those sums. */
static float prefix_shift(const float *row, size_t n)
{
    const size_t count = n < PREFIX ? n : PREFIX;
    const size_t chunk = SHORT_VECTORS * LANES;
    __m512 sum[PREFIX / (SHORT_VECTORS * LANES)];
    size_t j = 0;

#pragma GCC unroll 4
    for (size_t c = 0; c < PREFIX / chunk; c++) {
        sum[c] = _mm512_setzero_ps();
        if (j + chunk > count)
            continue;
        const float *p = row + j;
        sum[c] = sum8(_mm512_loadu_ps(p), _mm512_loadu_ps(p + LANES), _mm512_loadu_ps(p + 2 * LANES),
                      _mm512_loadu_ps(p + 3 * LANES), _mm512_loadu_ps(p + 4 * LANES), _mm512_loadu_ps(p + 5 * LANES),
                      _mm512_loadu_ps(p + 6 * LANES), _mm512_loadu_ps(p + 7 * LANES), SHORT_VECTORS);
        j += chunk;
    }

    /* A short prefix leaves the last chunk free for the rest. */
    __m512 rest = sum[3];
    for (; j + LANES <= count; j += LANES)
        rest = _mm512_add_ps(rest, _mm512_loadu_ps(row + j));
    if (j < count)
        rest = _mm512_add_ps(rest, _mm512_maskz_loadu_ps(first_lanes(count - j), row + j));

    const __m512 zero = _mm512_setzero_ps();
    __m512 total = sum8(sum[0], sum[1], sum[2], rest, zero, zero, zero, zero, 4);
    return _mm512_reduce_add_ps(total) / (float)count;
}

/* Adds the 16 float lanes of v, folded to 8 in float, to the 8 double lanes of total (exactly converted). */
static inline __m512d add_folded(__m512d total, __m512 v)
{
    __m256 folded = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    return _mm512_add_pd(total, _mm512_cvtps_pd(folded));
}

/* Joins eight chains with a 3-level tree. */
static inline __m512 join_chains(const __m512 chain[LONG_CHAINS])
{
    __m512 low = _mm512_add_ps(_mm512_add_ps(chain[0], chain[1]), _mm512_add_ps(chain[2], chain[3]));
    __m512 high = _mm512_add_ps(_mm512_add_ps(chain[4], chain[5]), _mm512_add_ps(chain[6], chain[7]));
    return _mm512_add_ps(low, high);
}

static inline void accumulate(__m512 *d, __m512 *d2, __m512 deviation)
{
    *d = _mm512_add_ps(*d, deviation);
    *d2 = _mm512_fmadd_ps(deviation, deviation, *d2);
}

/* Sums a whole block of LONG_BLOCK elements at p: vector k goes to chain k % LONG_CHAINS. The first step
   starts the chains (d * d rounds like an FMA into zero). Each line PREFETCH_AHEAD elements on is
   prefetched; without it, rows streamed from memory ran about 15% slower on AMD Zen 5. */
static inline void full_block(const float *p, __m512 centre, __m512 *sum_d, __m512 *sum_d2)
{
    __m512 d[LONG_CHAINS];
    __m512 d2[LONG_CHAINS];
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        _mm_prefetch((const char *)(p + c * LANES + PREFETCH_AHEAD), _MM_HINT_T0);
        d[c] = _mm512_sub_ps(_mm512_loadu_ps(p + c * LANES), centre);
        d2[c] = _mm512_mul_ps(d[c], d[c]);
    }

    /* Kept as a loop: unrolled, GCC 12 hoists all 32 loads and spills the chains. */
#pragma GCC unroll 1
    for (size_t step = 1; step < LONG_STEPS; step++) {
        for (size_t c = 0; c < LONG_CHAINS; c++) {
            const size_t offset = (step * LONG_CHAINS + c) * LANES;
            _mm_prefetch((const char *)(p + offset + PREFETCH_AHEAD), _MM_HINT_T0);
            accumulate(&d[c], &d2[c], _mm512_sub_ps(_mm512_loadu_ps(p + offset), centre));
        }
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Sums the last count (< LONG_BLOCK) elements at p with the same assignment of vectors to chains: whole
   rounds of one vector per chain, then the rest, the last vector masked. The pragmas keep the chains in
   registers: without them GCC 12 turns the zeroing into a memset and keeps the chains in memory. */
static inline void last_block(const float *p, size_t count, __m512 centre, __m512 *sum_d, __m512 *sum_d2)
{
    __m512 d[LONG_CHAINS];
    __m512 d2[LONG_CHAINS];
#pragma GCC unroll 8
    for (size_t c = 0; c < LONG_CHAINS; c++) {
        d[c] = _mm512_setzero_ps();
        d2[c] = _mm512_setzero_ps();
    }

    size_t j = 0;
#pragma GCC unroll 1
    for (; j + LONG_CHAINS * LANES <= count; j += LONG_CHAINS * LANES) {
#pragma GCC unroll 8
        for (size_t c = 0; c < LONG_CHAINS; c++)
            accumulate(&d[c], &d2[c], _mm512_sub_ps(_mm512_loadu_ps(p + j + c * LANES), centre));
    }

#pragma GCC unroll 8
    for (size_t c = 0; c < LONG_CHAINS && j < count; c++) {
        const size_t part = count - j < LANES ? count - j : LANES;
        const __mmask16 mask = first_lanes(part);
        accumulate(&d[c], &d2[c], _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, p + j), centre));
        j += part;
    }

    *sum_d = join_chains(d);
    *sum_d2 = join_chains(d2);
}

/* Computes the sums of d = x - c and of d * d over the row, block by block. */
static void long_deviations(const float *row, size_t n, float c, double *sum_d, double *sum_d2)
{
    const __m512 centre = _mm512_set1_ps(c);
    __m512d total_d = _mm512_setzero_pd();
    __m512d total_d2 = _mm512_setzero_pd();
    __m512 d;
    __m512 d2;

    size_t j = 0;
    for (; j + LONG_BLOCK <= n; j += LONG_BLOCK) {
        full_block(row + j, centre, &d, &d2);
        total_d = add_folded(total_d, d);
        total_d2 = add_folded(total_d2, d2);
    }

    if (j < n) {
        last_block(row + j, n - j, centre, &d, &d2);
        total_d = add_folded(total_d, d);
        total_d2 = add_folded(total_d2, d2);
    }

    *sum_d = _mm512_reduce_add_pd(total_d);
    *sum_d2 = _mm512_reduce_add_pd(total_d2);
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

/* ---- rows of at most SHORT_ROW_MAX elements, 16 rows at a time ---- */

/* The shape of the rows of a call: n elements in vectors vectors, the last one holding the lanes of
   tail. Kept apart from the groups, so that GCC can treat its fields as the constants they are. */
typedef struct short_shape {
    size_t n;
    size_t vectors;
    __mmask16 tail;
} short_shape;

/* A group of up to 16 rows. Entries of row past count repeat the last row, so that every group runs the
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

/* Returns vector k of row: zero past the row's vectors, the last one masked to its tail. */
static inline __attribute__((always_inline)) __m512 short_vector(const short_shape *s, const float *row, size_t k)
{
    if (k >= s->vectors)
        return _mm512_setzero_ps();
    if (k + 1 == s->vectors)
        return _mm512_maskz_loadu_ps(s->tail, row + k * LANES);
    return _mm512_loadu_ps(row + k * LANES);
}

/* Returns e = c - x for vector k of row, the deviation with its sign flipped, which lets the load fold
   into the subtraction; zero past the row's vectors and in the inactive lanes of the last one. */
static inline __attribute__((always_inline)) __m512 short_negated_deviation(const short_shape *s, const float *row,
                                                                             size_t k, __m512 centre)
{
    if (k >= s->vectors)
        return _mm512_setzero_ps();
    if (k + 1 == s->vectors)
        return _mm512_maskz_sub_ps(s->tail, centre, _mm512_maskz_loadu_ps(s->tail, row + k * LANES));
    return _mm512_sub_ps(centre, _mm512_loadu_ps(row + k * LANES));
}

/* Returns the sum of row r's elements, in the lanes of one vector. */
static inline __attribute__((always_inline)) __m512 short_row_sum(const short_shape *s, const short_group *g,
                                                                   size_t r)
{
    const float *row = g->row[r];
    return sum8(short_vector(s, row, 0), short_vector(s, row, 1), short_vector(s, row, 2), short_vector(s, row, 3),
                short_vector(s, row, 4), short_vector(s, row, 5), short_vector(s, row, 6), short_vector(s, row, 7),
                s->vectors);
}

/* Returns the fold4 of the sums of rows r to r + 3. */
static inline __attribute__((always_inline)) __m512 short_quad_sums(const short_shape *s, const short_group *g,
                                                                     size_t r)
{
    __m512 ab = fold2(short_row_sum(s, g, r), short_row_sum(s, g, r + 1));
    __m512 cd = fold2(short_row_sum(s, g, r + 2), short_row_sum(s, g, r + 3));
    return fold4(ab, cd);
}

/* Computes the shifts of a group: c[r] = (float)(sum of row r) / n, the float mean, whose error only
   decides whether the check of rule 3 passes. */
static inline __attribute__((always_inline)) void short_shifts(const short_shape *s, const short_group *g,
                                                                float c[GROUP_ROWS])
{
    __m512 q0 = short_quad_sums(s, g, 0);
    __m512 q1 = short_quad_sums(s, g, 4);
    __m512 q2 = short_quad_sums(s, g, 8);
    __m512 q3 = short_quad_sums(s, g, 12);
    _mm512_storeu_ps(c, _mm512_div_ps(fold16(q0, q1, q2, q3), _mm512_set1_ps((float)s->n)));
}

/* Computes row r's sums of e = c - x and of e * e, in the lanes of *e_sum and *e2_sum. It also prefetches
   the lines ahead bytes further on: with the hardware prefetcher alone, rows read from L3 took about a
   third longer on AMD Zen 5. */
static inline __attribute__((always_inline)) void short_row_deviations(const short_shape *s, const short_group *g,
                                                                        size_t r, float c, size_t ahead,
                                                                        __m512 *e_sum, __m512 *e2_sum)
{
    const float *row = g->row[r];
    for (size_t k = 0; k < s->vectors; k++)
        _mm_prefetch((const char *)((uintptr_t)(row + k * LANES) + ahead), _MM_HINT_T0);

    const __m512 centre = _mm512_set1_ps(c);
    __m512 e0 = short_negated_deviation(s, row, 0, centre);
    __m512 e1 = short_negated_deviation(s, row, 1, centre);
    __m512 e2 = short_negated_deviation(s, row, 2, centre);
    __m512 e3 = short_negated_deviation(s, row, 3, centre);
    __m512 e4 = short_negated_deviation(s, row, 4, centre);
    __m512 e5 = short_negated_deviation(s, row, 5, centre);
    __m512 e6 = short_negated_deviation(s, row, 6, centre);
    __m512 e7 = short_negated_deviation(s, row, 7, centre);

    *e2_sum = sum_squares8(e0, e1, e2, e3, e4, e5, e6, e7, s->vectors);
    *e_sum = sum8(e0, e1, e2, e3, e4, e5, e6, e7, s->vectors);
}

/* Computes the fold4 of the sums of e and of e * e for rows r to r + 3. */
static inline __attribute__((always_inline)) void short_quad_deviations(const short_shape *s, const short_group *g,
                                                                         size_t r, const float c[GROUP_ROWS],
                                                                         size_t ahead, __m512 *q_e, __m512 *q_e2)
{
    __m512 a_e;
    __m512 a_e2;
    __m512 b_e;
    __m512 b_e2;
    short_row_deviations(s, g, r, c[r], ahead, &a_e, &a_e2);
    short_row_deviations(s, g, r + 1, c[r + 1], ahead, &b_e, &b_e2);
    const __m512 ab_e = fold2(a_e, b_e);
    const __m512 ab_e2 = fold2(a_e2, b_e2);

    short_row_deviations(s, g, r + 2, c[r + 2], ahead, &a_e, &a_e2);
    short_row_deviations(s, g, r + 3, c[r + 3], ahead, &b_e, &b_e2);
    *q_e = fold4(ab_e, fold2(a_e, b_e));
    *q_e2 = fold4(ab_e2, fold2(a_e2, b_e2));
}

/* Computes the sums around the shifts of a group: lane r of *sum_d and *sum_d2 for row r. A square takes
   at most 4 roundings in its row and 4 in fold2, fold4 and fold16: 8, per rule 1. */
static inline __attribute__((always_inline)) void short_deviations(const short_shape *s, const short_group *g,
                                                                    const float c[GROUP_ROWS], size_t ahead,
                                                                    __m512 *sum_d, __m512 *sum_d2)
{
    __m512 q_e[4];
    __m512 q_e2[4];
    short_quad_deviations(s, g, 0, c, ahead, &q_e[0], &q_e2[0]);
    short_quad_deviations(s, g, 4, c, ahead, &q_e[1], &q_e2[1]);
    short_quad_deviations(s, g, 8, c, ahead, &q_e[2], &q_e2[2]);
    short_quad_deviations(s, g, 12, c, ahead, &q_e[3], &q_e2[3]);

    /* Negation is exact: the sum of d is minus the sum of e. */
    const __m512 sum_e = fold16(q_e[0], q_e[1], q_e[2], q_e[3]);
    *sum_d = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(sum_e), _mm512_set1_epi32(INT32_MIN)));
    *sum_d2 = fold16(q_e2[0], q_e2[1], q_e2[2], q_e2[3]);
}

/* Finishes 8 rows in double lanes with the operations of sinkkit_moments_finish_trusted(), so with the
   same bits. Returns the mask of the rows it finished: those whose sums pass
   sinkkit_moments_shift_close() and sinkkit_moments_trusted(), tested with the same comparisons. */
static inline __attribute__((always_inline)) __mmask8 finish8(__m256 shift, __m256 sum_d, __m256 sum_d2, size_t n,
                                                               unsigned flags, __m256 *mean, __m256 *variance)
{
    const __m512d c = _mm512_cvtps_pd(shift);
    const __m512d a = _mm512_cvtps_pd(sum_d);
    const __m512d b = _mm512_cvtps_pd(sum_d2);
    const __m512d count = _mm512_set1_pd((double)n);
    const __m512d a2 = _mm512_mul_pd(a, a);

    __mmask8 done = _mm512_cmp_pd_mask(_mm512_mul_pd(_mm512_set1_pd(65.0), a2), _mm512_mul_pd(count, b),
                                       _CMP_LE_OQ);
    done &= _mm512_cmp_pd_mask(b, _mm512_set1_pd((double)n * SINKKIT_RESCUE_FLOOR), _CMP_GE_OQ);
    done &= _mm512_cmp_pd_mask(b, _mm512_set1_pd(DBL_MAX), _CMP_LE_OQ);
    done &= _mm512_cmp_pd_mask(_mm512_abs_pd(a), _mm512_set1_pd(DBL_MAX), _CMP_LE_OQ);

    const double denominator = (flags & SINKKIT_MOMENTS_UNBIASED) ? (double)n - 1.0 : (double)n;
    __m512d centred = _mm512_max_pd(_mm512_sub_pd(b, _mm512_div_pd(a2, count)), _mm512_setzero_pd());
    *mean = _mm512_cvtpd_ps(_mm512_add_pd(c, _mm512_div_pd(a, count)));
    *variance = _mm512_cvtpd_ps(_mm512_div_pd(centred, _mm512_set1_pd(denominator)));
    return done;
}

/* Finishes a row that finish8 left. When the check failed, its sums are formed once more, around
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

/* Runs pass 2 and the finish of a group whose shifts are c. mean and variance point at the group's first
   outputs (either may be NULL). */
static inline __attribute__((always_inline)) void short_finish(const short_shape *s, const short_group *g,
                                                                const float c[GROUP_ROWS], size_t ahead,
                                                                float *mean, float *variance, unsigned flags)
{
    __m512 sum_d;
    __m512 sum_d2;
    short_deviations(s, g, c, ahead, &sum_d, &sum_d2);

    const __m512 shift = _mm512_loadu_ps(c);
    __m256 m[2];
    __m256 v[2];
    const __mmask8 low = finish8(_mm512_castps512_ps256(shift), _mm512_castps512_ps256(sum_d),
                                 _mm512_castps512_ps256(sum_d2), s->n, flags, &m[0], &v[0]);
    const __mmask8 high = finish8(_mm512_extractf32x8_ps(shift, 1), _mm512_extractf32x8_ps(sum_d, 1),
                                  _mm512_extractf32x8_ps(sum_d2, 1), s->n, flags, &m[1], &v[1]);

    const __mmask16 rows = first_lanes(g->count);
    const __mmask16 done = (__mmask16)(low | (high << 8)) & rows;
    if (mean != NULL)
        _mm512_mask_storeu_ps(mean, done, _mm512_insertf32x8(_mm512_castps256_ps512(m[0]), m[1], 1));
    if (variance != NULL)
        _mm512_mask_storeu_ps(variance, done, _mm512_insertf32x8(_mm512_castps256_ps512(v[0]), v[1], 1));

    if (done == rows)
        return;

    float d[GROUP_ROWS];
    float d2[GROUP_ROWS];
    _mm512_storeu_ps(d, sum_d);
    _mm512_storeu_ps(d2, sum_d2);
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
    const short_shape shape = {n, vectors, first_lanes(n - (vectors - 1) * LANES)};
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
        /* Two groups ahead (one ahead of pass 1) was the fastest prefetch distance. Nothing past the call's
           rows is prefetched. */
        const size_t ahead = i + 3 * GROUP_ROWS <= rows ? 2 * GROUP_ROWS * stride * sizeof(float) : 0;
        short_finish(&shape, &group[slot ^ 1], c[slot ^ 1], ahead, mean != NULL ? mean + i : NULL,
                     variance != NULL ? variance + i : NULL, flags);
        if (next >= rows)
            return;
    }
}

void sinkkit_row_moments_f32_avx512(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
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
    default:
        short_rows(x, rows, cols, row_stride, 8, mean, variance, flags);
        break;
    }
}
