/* Head-wise RMSNorm for AVX2: 8-lane float sums of squares flushed into double, then (x * r) * gamma. */
#include <immintrin.h>

#include "kernels.h"

enum {
    LANES = 8,
    /* Each of the 4 accumulators takes at most 4 vectors of a block (4 roundings, the square fused into
       the first FMA), and adding the accumulators pairwise costs 2 more. That makes 6 roundings per float
       partial, within SINKKIT_FLOAT_PARTIAL_ROUNDINGS. */
    BLOCK_VECTORS = 16,
    BLOCK = LANES * BLOCK_VECTORS,
    STEP = 4 * LANES,
    /* Vectors whose r are computed together, so that their square roots and divisions share
       instructions. */
    GROUP_VECTORS = 4
};

/* Loads x[0..count), count < 8, with +0 in the other lanes, exactly as a masked load would, but
   without VMASKMOVPS: qemu 7.2 faults on its masked-off lanes when they cross into an unmapped page. */
static inline __m256 load_tail(const float *x, size_t count)
{
    float lanes[LANES] = {0};
    for (size_t k = 0; k < count; k++)
        lanes[k] = x[k];
    return _mm256_loadu_ps(lanes);
}

/* Stores the first count < 8 lanes of v to y and nothing past them. */
static inline void store_tail(float *y, size_t count, __m256 v)
{
    float lanes[LANES];
    _mm256_storeu_ps(lanes, v);
    for (size_t k = 0; k < count; k++)
        y[k] = lanes[k];
}

/* Adds the four float accumulators pairwise and folds the 8-lane partial into the double total. */
static inline __m256d flush_partial(__m256d total, __m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m256 partial = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));

    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(partial));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(partial, 1));
    return _mm256_add_pd(total, _mm256_add_pd(low, high));
}

static double reduce_total(__m256d total)
{
    __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(total), _mm256_extractf128_pd(total, 1));
    return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
}

static double sum_squares(const float *x, size_t n)
{
    __m256d total = _mm256_setzero_pd();
    size_t i = 0;

    for (; i + BLOCK <= n; i += BLOCK) {
        __m256 a0 = _mm256_setzero_ps();
        __m256 a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps();
        __m256 a3 = _mm256_setzero_ps();
        for (size_t j = i; j < i + BLOCK; j += STEP) {
            __m256 v0 = _mm256_loadu_ps(x + j);
            __m256 v1 = _mm256_loadu_ps(x + j + LANES);
            __m256 v2 = _mm256_loadu_ps(x + j + 2 * LANES);
            __m256 v3 = _mm256_loadu_ps(x + j + 3 * LANES);
            a0 = _mm256_fmadd_ps(v0, v0, a0);
            a1 = _mm256_fmadd_ps(v1, v1, a1);
            a2 = _mm256_fmadd_ps(v2, v2, a2);
            a3 = _mm256_fmadd_ps(v3, v3, a3);
        }
        total = flush_partial(total, a0, a1, a2, a3);
    }

    if (i == n)
        return reduce_total(total);

    /* The last block has fewer than 16 whole vectors: at most 3 steps of 4, then up to 3 single vectors
       and the tail, so no accumulator takes more than 4 vectors here either. */
    __m256 a0 = _mm256_setzero_ps();
    __m256 a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps();
    __m256 a3 = _mm256_setzero_ps();
    for (; i + STEP <= n; i += STEP) {
        __m256 v0 = _mm256_loadu_ps(x + i);
        __m256 v1 = _mm256_loadu_ps(x + i + LANES);
        __m256 v2 = _mm256_loadu_ps(x + i + 2 * LANES);
        __m256 v3 = _mm256_loadu_ps(x + i + 3 * LANES);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
        a2 = _mm256_fmadd_ps(v2, v2, a2);
        a3 = _mm256_fmadd_ps(v3, v3, a3);
    }

    if (i + LANES <= n) {
        __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(v, v, a0);
        i += LANES;
    }
    if (i + LANES <= n) {
        __m256 v = _mm256_loadu_ps(x + i);
        a1 = _mm256_fmadd_ps(v, v, a1);
        i += LANES;
    }
    if (i + LANES <= n) {
        __m256 v = _mm256_loadu_ps(x + i);
        a2 = _mm256_fmadd_ps(v, v, a2);
        i += LANES;
    }

    /* Lanes past the end load as +0, so the FMA leaves the accumulator unchanged there. */
    if (i < n) {
        __m256 v = load_tail(x + i, n - i);
        a3 = _mm256_fmadd_ps(v, v, a3);
    }

    total = flush_partial(total, a0, a1, a2, a3);
    return reduce_total(total);
}

/* y = x * r, multiplied and rounded once per element. */
static void scale(const float *x, float *y, size_t n, float r)
{
    const __m256 rv = _mm256_set1_ps(r);
    size_t i = 0;

    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        __m256 v0 = _mm256_loadu_ps(x + i);
        __m256 v1 = _mm256_loadu_ps(x + i + LANES);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v0, rv));
        _mm256_storeu_ps(y + i + LANES, _mm256_mul_ps(v1, rv));
    }
    if (i + LANES <= n) {
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), rv));
        i += LANES;
    }

    if (i < n)
        store_tail(y + i, n - i, _mm256_mul_ps(load_tail(x + i, n - i), rv));
}

/* y = (x * r) * g with two roundings in that order and no FMA, so every ISA rounds the same way. */
static void scale_gamma(const float *x, float *y, const float *g, size_t n, float r)
{
    const __m256 rv = _mm256_set1_ps(r);
    size_t i = 0;

    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(x + i), rv);
        __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(x + i + LANES), rv);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v0, _mm256_loadu_ps(g + i)));
        _mm256_storeu_ps(y + i + LANES, _mm256_mul_ps(v1, _mm256_loadu_ps(g + i + LANES)));
    }
    if (i + LANES <= n) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), rv);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, _mm256_loadu_ps(g + i)));
        i += LANES;
    }

    if (i < n) {
        __m256 v = _mm256_mul_ps(load_tail(x + i, n - i), rv);
        store_tail(y + i, n - i, _mm256_mul_ps(v, load_tail(g + i, n - i)));
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

/* Computes sinkkit_rms_inverse() for 4 sums at once. Each lane performs the same correctly rounded
   operations in the same order (divide, add, square root, divide), so it equals the scalar call bit
   for bit, at a fraction of the cost of 4 scalar square roots and 8 divisions. */
static void group_inverse(const double s[GROUP_VECTORS], size_t n, float eps, double r[GROUP_VECTORS])
{
    __m256d mean = _mm256_div_pd(_mm256_loadu_pd(s), _mm256_set1_pd((double)n));
    __m256d root = _mm256_sqrt_pd(_mm256_add_pd(mean, _mm256_set1_pd((double)eps)));
    _mm256_storeu_pd(r, _mm256_div_pd(_mm256_set1_pd(1.0), root));
}

static void normalise_group(const vector_group *v, size_t n, float eps)
{
    /* Unused slots get n, a harmless mean square of 1. */
    double s[GROUP_VECTORS];
    double r[GROUP_VECTORS];
    for (size_t j = 0; j < GROUP_VECTORS; j++)
        s[j] = j < v->count ? sum_squares(v->x[j], n) : (double)n;
    group_inverse(s, n, eps, r);

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

void sinkkit_headwise_rmsnorm_f32_avx2(const sinkkit_head_layout *layout, const float *x, float *y,
                                       const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms)
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
