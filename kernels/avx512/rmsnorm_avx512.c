/* Head-wise RMSNorm for AVX-512: 16-lane float sums of squares flushed into double, then (x * r) * gamma. */
#include <immintrin.h>

#include "kernels.h"

enum {
    LANES = 16,
    /* A block is at most 16 vectors of 16 lanes. Each of the 4 accumulators takes at most 4 of them
       (4 roundings, the square fused into the first FMA) and the accumulators are added pairwise
       (2 more), so a block's 16-lane partial has at most 6 roundings. */
    BLOCK = 16 * LANES,
    STEP = 4 * LANES,
    /* Vectors whose sums of squares and r are computed together, so that horizontal sums, square
       roots and divisions share instructions. */
    GROUP_VECTORS = 8
};

static inline __mmask16 tail_mask(size_t count)
{
    return (__mmask16)((1u << count) - 1u);
}

/* Returns the 16-lane float partial of the squares of x[0..n), 0 < n <= BLOCK, with at most 6 roundings
   per lane. */
static inline __attribute__((always_inline)) __m512 block_partial(const float *x, size_t n)
{
    __m512 a0 = _mm512_setzero_ps();
    __m512 a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps();
    __m512 a3 = _mm512_setzero_ps();
    size_t i = 0;

    for (; i + STEP <= n; i += STEP) {
        __m512 v0 = _mm512_loadu_ps(x + i);
        __m512 v1 = _mm512_loadu_ps(x + i + LANES);
        __m512 v2 = _mm512_loadu_ps(x + i + 2 * LANES);
        __m512 v3 = _mm512_loadu_ps(x + i + 3 * LANES);
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
        a2 = _mm512_fmadd_ps(v2, v2, a2);
        a3 = _mm512_fmadd_ps(v3, v3, a3);
    }

    /* Unless n == BLOCK, at most 3 steps of 4 vectors were taken: up to 3 whole vectors and the tail
       follow, one per accumulator, so none takes more than 4 vectors. */
    if (i + LANES <= n) {
        __m512 v = _mm512_loadu_ps(x + i);
        a0 = _mm512_fmadd_ps(v, v, a0);
        i += LANES;
    }
    if (i + LANES <= n) {
        __m512 v = _mm512_loadu_ps(x + i);
        a1 = _mm512_fmadd_ps(v, v, a1);
        i += LANES;
    }
    if (i + LANES <= n) {
        __m512 v = _mm512_loadu_ps(x + i);
        a2 = _mm512_fmadd_ps(v, v, a2);
        i += LANES;
    }

    /* Inactive lanes load as +0, so the FMA leaves the accumulator unchanged there. */
    if (i < n) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
        a3 = _mm512_fmadd_ps(v, v, a3);
    }

    return _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
}

/* Converts a 16-lane float partial to 8 doubles (exactly) and adds them to total. */
static inline __m512d flush_partial(__m512d total, __m512 partial)
{
    __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(partial));
    __m512d high = _mm512_cvtps_pd(_mm512_extractf32x8_ps(partial, 1));
    return _mm512_add_pd(total, _mm512_add_pd(low, high));
}

/* Sum of squares of a vector of any length: one float partial per block, each flushed into double. */
static double sum_squares(const float *x, size_t n)
{
    __m512d total = _mm512_setzero_pd();
    size_t i = 0;

    for (; i + BLOCK <= n; i += BLOCK)
        total = flush_partial(total, block_partial(x + i, BLOCK));
    if (i < n)
        total = flush_partial(total, block_partial(x + i, n - i));

    return _mm512_reduce_add_pd(total);
}

/* Adds neighbouring lanes in float: 128-bit lane k of the result is [a0 + a1, a2 + a3, b0 + b1, b2 + b3]
   of lane k of a and b. Both operands go through the same additions, so a vector's result does not
   depend on its slot. */
static inline __m512 add_lane_pairs(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}

/* Reduces four block partials to the four sums [p0, p1, p2, p3] in double: two more float roundings
   (8 in all, within SINKKIT_FLOAT_PARTIAL_ROUNDINGS), then each vector's four 128-bit lanes are added
   in double. */
static inline __m256d reduce_four(__m512 p0, __m512 p1, __m512 p2, __m512 p3)
{
    /* 128-bit lane k contains one float partial of each of p0..p3, for their lanes 4k..4k+3. */
    __m512 quads = add_lane_pairs(add_lane_pairs(p0, p1), add_lane_pairs(p2, p3));

    __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(quads));
    __m512d high = _mm512_cvtps_pd(_mm512_extractf32x8_ps(quads, 1));
    __m512d halves = _mm512_add_pd(low, high);
    return _mm256_add_pd(_mm512_castpd512_pd256(halves), _mm512_extractf64x4_pd(halves, 1));
}

/* y = x * r, multiplied and rounded once per element. */
static void scale(const float *x, float *y, size_t n, float r)
{
    const __m512 rv = _mm512_set1_ps(r);
    size_t i = 0;

    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        __m512 v0 = _mm512_loadu_ps(x + i);
        __m512 v1 = _mm512_loadu_ps(x + i + LANES);
        _mm512_storeu_ps(y + i, _mm512_mul_ps(v0, rv));
        _mm512_storeu_ps(y + i + LANES, _mm512_mul_ps(v1, rv));
    }
    if (i + LANES <= n) {
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), rv));
        i += LANES;
    }

    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), rv));
    }
}

/* y = (x * r) * g with two roundings in that order and no FMA, so every ISA rounds the same way. */
static void scale_gamma(const float *x, float *y, const float *g, size_t n, float r)
{
    const __m512 rv = _mm512_set1_ps(r);
    size_t i = 0;

    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        __m512 v0 = _mm512_mul_ps(_mm512_loadu_ps(x + i), rv);
        __m512 v1 = _mm512_mul_ps(_mm512_loadu_ps(x + i + LANES), rv);
        _mm512_storeu_ps(y + i, _mm512_mul_ps(v0, _mm512_loadu_ps(g + i)));
        _mm512_storeu_ps(y + i + LANES, _mm512_mul_ps(v1, _mm512_loadu_ps(g + i + LANES)));
    }
    if (i + LANES <= n) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), rv);
        _mm512_storeu_ps(y + i, _mm512_mul_ps(v, _mm512_loadu_ps(g + i)));
        i += LANES;
    }

    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), rv);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, g + i)));
    }
}

/* Up to GROUP_VECTORS vectors between the two passes. g and r_out may be NULL. */
typedef struct vector_group {
    size_t count;
    const float *x[GROUP_VECTORS];
    float *y[GROUP_VECTORS];
    const float *g[GROUP_VECTORS];
    float *r_out[GROUP_VECTORS];
} vector_group;

/* Computes the sums of squares of the group's vectors into s and returns them as one vector, so that
   r can be computed without reloading s. Unused slots get n, a harmless mean square of 1. */
static __m512d group_sums(const vector_group *v, size_t n, double s[GROUP_VECTORS])
{
    if (n > BLOCK) {
        for (size_t j = 0; j < GROUP_VECTORS; j++)
            s[j] = j < v->count ? sum_squares(v->x[j], n) : (double)n;
        return _mm512_loadu_pd(s);
    }

    /* One block per vector: reduce four vectors at a time across lanes. */
    __m256d quarter[2];
    for (size_t q = 0; q < 2; q++) {
        __m512 p[4];
        for (size_t j = 0; j < 4; j++) {
            const size_t slot = 4 * q + j;
            p[j] = slot < v->count ? block_partial(v->x[slot], n) : _mm512_setzero_ps();
        }
        quarter[q] = reduce_four(p[0], p[1], p[2], p[3]);
    }

    __m512d sums = _mm512_insertf64x4(_mm512_castpd256_pd512(quarter[0]), quarter[1], 1);
    const __mmask8 unused = (__mmask8)(0xFFu << v->count);
    sums = _mm512_mask_mov_pd(sums, unused, _mm512_set1_pd((double)n));
    _mm512_storeu_pd(s, sums);
    return sums;
}

/* Computes sinkkit_rms_inverse() for 8 sums at once. Each lane performs the same correctly rounded
   operations in the same order (divide, add, square root, divide), so it equals the scalar call bit
   for bit, at a fraction of the cost of 8 scalar square roots and 16 divisions. */
static void group_inverse(__m512d s, size_t n, float eps, double r[GROUP_VECTORS])
{
    __m512d mean = _mm512_div_pd(s, _mm512_set1_pd((double)n));
    __m512d root = _mm512_sqrt_pd(_mm512_add_pd(mean, _mm512_set1_pd((double)eps)));
    _mm512_storeu_pd(r, _mm512_div_pd(_mm512_set1_pd(1.0), root));
}

static void normalise_group(const vector_group *v, size_t n, float eps)
{
    double s[GROUP_VECTORS];
    double r[GROUP_VECTORS];
    group_inverse(group_sums(v, n, s), n, eps, r);

    for (size_t j = 0; j < v->count; j++) {
        if (sinkkit_rms_needs_rescue(s[j], n, r[j])) {
            sinkkit_rmsnorm_vector_rescue(v->x[j], v->y[j], v->g[j], n, eps, v->r_out[j]);
            continue;
        }

        const float rf = (float)r[j];
        if (v->g[j] == NULL)
            scale(v->x[j], v->y[j], n, rf);
        else
            scale_gamma(v->x[j], v->y[j], v->g[j], n, rf);
        if (v->r_out[j] != NULL)
            *v->r_out[j] = rf;
    }
}

void sinkkit_headwise_rmsnorm_f32_avx512(const sinkkit_head_layout *layout, const float *x, float *y,
                                         const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                         float *inv_rms)
{
    const size_t n = layout->head_dim;

    /* Visit the vectors in memory order, in groups that may span tokens or heads. A vector's result
       depends only on its own elements, never on its group or on the order. */
    const bool heads_outer = layout->head_stride > layout->token_stride;
    const size_t outer_count = heads_outer ? layout->heads : layout->tokens;
    const size_t inner_count = heads_outer ? layout->tokens : layout->heads;

    vector_group group;
    group.count = 0;
    for (size_t o = 0; o < outer_count; o++) {
        for (size_t i = 0; i < inner_count; i++) {
            const size_t t = heads_outer ? i : o;
            const size_t h = heads_outer ? o : i;
            const size_t offset = t * layout->token_stride + h * layout->head_stride;

            group.x[group.count] = x + offset;
            group.y[group.count] = y + offset;
            group.g[group.count] = sinkkit_gamma_row(gamma, gamma_kind, h, n);
            group.r_out[group.count] = inv_rms != NULL ? inv_rms + t * layout->heads + h : NULL;
            if (++group.count == GROUP_VECTORS) {
                normalise_group(&group, n, eps);
                group.count = 0;
            }
        }
    }

    if (group.count > 0)
        normalise_group(&group, n, eps);
}
