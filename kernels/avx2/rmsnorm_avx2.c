/* Head-wise RMSNorm for AVX2: 8-lane float sums of squares flushed into double, then (x * r) * gamma. */
#include <float.h>
#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"
#include "tail_avx2.h"

enum {
    LANES = 8,
    /* Each of the 4 accumulators takes at most 4 vectors of a block (4 roundings, the square fused into
       the first FMA), and adding the accumulators pairwise costs 2 more. That makes 6 roundings per float
       partial, within SINKKIT_FLOAT_PARTIAL_ROUNDINGS. */
    BLOCK_VECTORS = 16,
    BLOCK = LANES * BLOCK_VECTORS,
    STEP = 4 * LANES,
    /* Vectors whose sums of squares are reduced and whose r are computed together, so that horizontal
       sums, square roots and divisions share instructions. */
    GROUP_VECTORS = 4,
    /* Vectors between the one being measured and the one being scaled. Their scaling covers the
       latency of a group's reductions, square root and division (an estimated 70 cycles on Zen 5),
       and their x (8 KiB at head_dim 128) stays in L1 until its second read. A multiple of
       GROUP_VECTORS. */
    LOOKAHEAD = 16,
    /* Slots for r of the vectors in flight: at least LOOKAHEAD + GROUP_VECTORS, a multiple of
       GROUP_VECTORS. */
    RING = 32,
    /* Bytes of x that the streaming variant prefetches ahead of the vector being measured, as in the
       AVX-512 kernel. */
    STREAMING_PREFETCH = 16 * 1024,
    /* Calls with at least this many bytes of output take normalise_run_per_vector() unless they
       stream: x and y then take at least 128 MiB, four times the L3 size of the machine measured.
       Measured on a Zen 5 virtual machine, single thread, in the benchmark, as time over the copy of
       the same bytes (pipeline of normalise_run(), then one vector at a time), by bytes of output. At
       head_dim 128: 16 MiB 1.32 and 1.38, 32 MiB 1.14 to 1.18 and 1.18 to 1.19, 64 MiB 1.33 to 1.43
       and 1.17 to 1.25. At head_dim 64, 32 MiB: 1.31 and 1.29 to 1.38. The AVX-512 kernel switches
       from 16 MiB on. */
    PER_VECTOR_BYTES = 64 << 20
};

/* Returns the 8-lane float partial of the squares of x[0..n), 0 < n <= BLOCK, with at most 6 roundings
   per lane. */
static inline __attribute__((always_inline)) __m256 block_partial(const float *x, size_t n)
{
    __m256 a0 = _mm256_setzero_ps();
    __m256 a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps();
    __m256 a3 = _mm256_setzero_ps();
    size_t i = 0;

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

    /* Unless n == BLOCK, at most 3 steps of 4 vectors were taken: up to 3 whole vectors and the tail
       follow, one per accumulator, so none takes more than 4 vectors. */
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

    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

/* Converts an 8-lane float partial to doubles (exactly) and adds them to total. */
static inline __m256d flush_partial(__m256d total, __m256 partial)
{
    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(partial));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(partial, 1));
    return _mm256_add_pd(total, _mm256_add_pd(low, high));
}

/* Sum of squares of a vector of any length: one float partial per block, each flushed into double. */
static double sum_squares(const float *x, size_t n)
{
    __m256d total = _mm256_setzero_pd();
    size_t i = 0;

    for (; i + BLOCK <= n; i += BLOCK)
        total = flush_partial(total, block_partial(x + i, BLOCK));
    if (i < n)
        total = flush_partial(total, block_partial(x + i, n - i));

    __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(total), _mm256_extractf128_pd(total, 1));
    return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
}

/* Adds neighbouring lanes in float: 128-bit lane k of the result is [a0 + a1, a2 + a3, b0 + b1, b2 + b3]
   of lane k of a and b. Both operands go through the same additions, so a vector's result does not
   depend on its slot. */
static inline __m256 add_lane_pairs(__m256 a, __m256 b)
{
    return _mm256_add_ps(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xDD));
}

/* Reduces four block partials to the four sums [p0, p1, p2, p3] in double: two more float roundings
   (8 in all, within SINKKIT_FLOAT_PARTIAL_ROUNDINGS), then each vector's two 128-bit lanes are added
   in double. */
static inline __m256d reduce_four(__m256 p0, __m256 p1, __m256 p2, __m256 p3)
{
    /* 128-bit lane k contains one float partial of each of p0..p3, for their lanes 4k..4k+3. */
    __m256 quads = add_lane_pairs(add_lane_pairs(p0, p1), add_lane_pairs(p2, p3));

    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(quads));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(quads, 1));
    return _mm256_add_pd(low, high);
}

/* r of the vectors in flight, rounded to float, and which of them need the shared rescue. Vector k of
   a run uses slot k % RING. */
typedef struct r_ring {
    float rf[RING];
    /* Bit j of entry q set: the vector in slot 4 q + j takes the shared rescue path. One entry per
       group, written whole, so that testing a bit waits only for that group's r, not for the newest. */
    uint8_t rescue[RING / GROUP_VECTORS];
} r_ring;

/* Computes r = sinkkit_rms_inverse() and the decision of sinkkit_rms_needs_rescue() for the sums s of
   the count <= 4 vectors from ring slot first (a multiple of 4) on. Each lane performs the same
   correctly rounded operations in the same order (divide, add, square root, divide), and the ordered
   compares are false for NaN as the scalar comparisons are, so every lane equals the scalar calls bit
   for bit. */
static inline __attribute__((always_inline)) void group_inverse(r_ring *ring, size_t first, __m256d s,
                                                                size_t count, size_t n, float eps)
{
    /* Unused slots get a harmless mean square of 1. */
    const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0);
    const __m256d unused = _mm256_castsi256_pd(_mm256_cmpgt_epi64(lane, _mm256_set1_epi64x((long long)count - 1)));
    s = _mm256_blendv_pd(s, _mm256_set1_pd((double)n), unused);

    /* For a power-of-two n, multiplying by 1 / n gives the quotient exactly whenever it matters. A sum
       that passes the rescue test is a normal double, so scaling it by 2^-k neither rounds nor
       underflows, and for any other sum r is not used. The multiplication has a quarter of the
       division's latency, which lies on the path from the sums to the scaling. */
    const bool power_of_two = (n & (n - 1)) == 0;
    __m256d mean = power_of_two ? _mm256_mul_pd(s, _mm256_set1_pd(1.0 / (double)n))
                                : _mm256_div_pd(s, _mm256_set1_pd((double)n));
    __m256d root = _mm256_sqrt_pd(_mm256_add_pd(mean, _mm256_set1_pd((double)eps)));
    __m256d r = _mm256_div_pd(_mm256_set1_pd(1.0), root);

    __m256d trusted = _mm256_cmp_pd(s, _mm256_set1_pd((double)n * SINKKIT_RESCUE_FLOOR), _CMP_GE_OQ);
    trusted = _mm256_and_pd(trusted, _mm256_cmp_pd(s, _mm256_set1_pd(DBL_MAX), _CMP_LE_OQ));
    trusted = _mm256_and_pd(trusted, _mm256_cmp_pd(r, _mm256_set1_pd(FLT_MIN), _CMP_GE_OQ));
    trusted = _mm256_and_pd(trusted, _mm256_cmp_pd(r, _mm256_set1_pd(FLT_MAX), _CMP_LE_OQ));

    _mm_storeu_ps(ring->rf + first, _mm256_cvtpd_ps(r));
    ring->rescue[first / GROUP_VECTORS] = (uint8_t)(~_mm256_movemask_pd(trusted) & 0xF);
}

/* y = (x * r) * g with two roundings in that order and no FMA, so every ISA rounds the same way;
   y = x * r when g is NULL. */
static inline __attribute__((always_inline)) __m256 scaled(__m256 x, __m256 rv, const float *g)
{
    __m256 xr = _mm256_mul_ps(x, rv);
    if (g == NULL)
        return xr;
    return _mm256_mul_ps(xr, _mm256_loadu_ps(g));
}

/* The same for the count < 8 elements of a tail. */
static inline __attribute__((always_inline)) __m256 scaled_tail(__m256 x, __m256 rv, const float *g,
                                                                size_t count)
{
    __m256 xr = _mm256_mul_ps(x, rv);
    if (g == NULL)
        return xr;
    return _mm256_mul_ps(xr, load_tail(g, count));
}

/* Writes y[0..n) with ordinary stores. */
static inline __attribute__((always_inline)) void scale_vector(const float *x, float *y, const float *g,
                                                               size_t n, float r)
{
    const __m256 rv = _mm256_set1_ps(r);
    size_t i = 0;

    for (; i + LANES <= n; i += LANES)
        _mm256_storeu_ps(y + i, scaled(_mm256_loadu_ps(x + i), rv, g == NULL ? NULL : g + i));

    if (i < n)
        store_tail(y + i, n - i, scaled_tail(load_tail(x + i, n - i), rv, g == NULL ? NULL : g + i, n - i));
}

/* Writes y[0..n) with non-temporal stores for the whole 32-byte-aligned blocks and ordinary stores for
   the elements at either end. Every element gets the same value as from scale_vector(). */
static inline __attribute__((always_inline)) void scale_vector_streaming(const float *x, float *y,
                                                                         const float *g, size_t n, float r)
{
    const __m256 rv = _mm256_set1_ps(r);
    const size_t misalignment = ((uintptr_t)y % 32) / sizeof(float);
    size_t head = misalignment == 0 ? 0 : LANES - misalignment;
    /* A y that is not even float-aligned has no aligned blocks: use ordinary stores throughout. */
    if (head > n || (uintptr_t)y % sizeof(float) != 0)
        head = n;

    size_t i = 0;
    for (; i + LANES <= head; i += LANES)
        _mm256_storeu_ps(y + i, scaled(_mm256_loadu_ps(x + i), rv, g == NULL ? NULL : g + i));
    if (i < head) {
        const size_t count = head - i;
        store_tail(y + i, count, scaled_tail(load_tail(x + i, count), rv, g == NULL ? NULL : g + i, count));
        i = head;
    }

    for (; i + LANES <= n; i += LANES)
        _mm256_stream_ps(y + i, scaled(_mm256_loadu_ps(x + i), rv, g == NULL ? NULL : g + i));

    if (i < n)
        store_tail(y + i, n - i, scaled_tail(load_tail(x + i, n - i), rv, g == NULL ? NULL : g + i, n - i));
}

/* The call's arguments. Vectors are visited in memory order, as runs along the inner dimension: tokens
   when the layout is head-major, heads otherwise. A run continues into the next outer index when the
   outer stride equals the inner count times the inner stride, as in contiguous layouts. */
typedef struct rmsnorm_call {
    const sinkkit_head_layout *layout;
    const float *x;
    float *y;
    const float *gamma;
    sinkkit_gamma_kind gamma_kind;
    float eps;
    float *inv_rms;
    bool heads_outer;
} rmsnorm_call;

/* Vectors at x + k * stride and y + k * stride for k < count. The first one is (token, head). */
typedef struct vector_run {
    const float *x;
    float *y;
    size_t stride;
    size_t count;
    size_t token;
    size_t head;
} vector_run;

/* Token and head of the vector being finished. */
typedef struct vector_position {
    size_t token;
    size_t head;
} vector_position;

static inline __attribute__((always_inline)) void next_position(const rmsnorm_call *call, vector_position *at)
{
    if (call->heads_outer) {
        if (++at->token == call->layout->tokens) {
            at->token = 0;
            at->head++;
        }
    } else if (++at->head == call->layout->heads) {
        at->head = 0;
        at->token++;
    }
}

/* Computes the sums of squares and r of the count <= 4 vectors from index first of run v, into the
   ring from slot first % RING. */
static inline __attribute__((always_inline)) void measure_group(const rmsnorm_call *call, const vector_run *v,
                                                                r_ring *ring, size_t first, size_t count,
                                                                size_t n)
{
    const float *x = v->x + first * v->stride;

    if (n > BLOCK) {
        double s[GROUP_VECTORS] = {0};
        for (size_t j = 0; j < count; j++)
            s[j] = sum_squares(x + j * v->stride, n);
        group_inverse(ring, first % RING, _mm256_loadu_pd(s), count, n, call->eps);
        return;
    }

    __m256 p[GROUP_VECTORS];
    for (size_t j = 0; j < GROUP_VECTORS; j++)
        p[j] = j < count ? block_partial(x + j * v->stride, n) : _mm256_setzero_ps();
    group_inverse(ring, first % RING, reduce_four(p[0], p[1], p[2], p[3]), count, n, call->eps);
}

/* Passes the vectors of run v from index first on whose bits are set in due (bit j for vector first + j)
   to the shared rescue. Kept out of line so that the rare call does not make the compiler save the
   vector registers of the main loop. */
static __attribute__((noinline, cold)) void rescue_vectors(const rmsnorm_call *call, const vector_run *v,
                                                           size_t first, uint32_t due, size_t n)
{
    const sinkkit_head_layout *l = call->layout;
    const size_t inner_count = call->heads_outer ? l->tokens : l->heads;
    const size_t start_inner = call->heads_outer ? v->token : v->head;
    const size_t start_outer = call->heads_outer ? v->head : v->token;

    for (size_t j = 0; due != 0; j++, due >>= 1) {
        if (!(due & 1u))
            continue;
        const size_t k = first + j;
        const size_t inner = (start_inner + k) % inner_count;
        const size_t outer = start_outer + (start_inner + k) / inner_count;
        const size_t t = call->heads_outer ? inner : outer;
        const size_t h = call->heads_outer ? outer : inner;
        float *r_out = call->inv_rms != NULL ? call->inv_rms + t * l->heads + h : NULL;
        sinkkit_rmsnorm_vector_rescue(v->x + k * v->stride, v->y + k * v->stride,
                                      sinkkit_gamma_row(call->gamma, call->gamma_kind, h, n), n, call->eps, r_out);
    }
}

/* Writes y and inv_rms of vector k of run v from its r in the ring, unless the vector is due for the
   rescue (rescue_vectors() handles it then). at is followed when track is set. */
static inline __attribute__((always_inline)) void finish_vector(const rmsnorm_call *call, const vector_run *v,
                                                                size_t k, const r_ring *ring, bool track,
                                                                vector_position *at, size_t n, bool streaming)
{
    const float *xv = v->x + k * v->stride;
    float *yv = v->y + k * v->stride;
    const float *g = call->gamma;
    float *r_out = NULL;
    if (track) {
        g = sinkkit_gamma_row(call->gamma, call->gamma_kind, at->head, n);
        if (call->inv_rms != NULL)
            r_out = call->inv_rms + at->token * call->layout->heads + at->head;
        next_position(call, at);
    }

    const size_t slot = k % RING;
    if (ring->rescue[slot / GROUP_VECTORS] & (1u << (slot % GROUP_VECTORS)))
        return;

    const float rf = ring->rf[slot];
    if (streaming)
        scale_vector_streaming(xv, yv, g, n, rf);
    else
        scale_vector(xv, yv, g, n, rf);
    if (r_out != NULL)
        *r_out = rf;
}

/* Hands the vectors from index first of run v (count of them, at most 4) that need it to the rescue. */
static inline __attribute__((always_inline)) void rescue_due(const rmsnorm_call *call, const vector_run *v,
                                                             const r_ring *ring, size_t first, size_t count,
                                                             size_t n)
{
    const uint32_t due = ring->rescue[first % RING / GROUP_VECTORS] & ((1u << count) - 1u);
    if (__builtin_expect(due != 0, 0))
        rescue_vectors(call, v, first, due, n);
}

/* Returns how many vectors beyond the one being measured the streaming variant prefetches x:
   STREAMING_PREFETCH bytes, at least one vector. Outputs that stream are far larger than the caches,
   and without stores that read their lines first, the reads of x alone set the pace. */
static inline size_t streaming_prefetch_distance(size_t n)
{
    const size_t vectors = STREAMING_PREFETCH / (n * sizeof(float));
    return vectors > 0 ? vectors : 1;
}

/* Asks for the cache lines of x[0..n) to be loaded into L1. */
static inline __attribute__((always_inline)) void prefetch_vector(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 64 / sizeof(float))
        _mm_prefetch((const char *)(x + i), _MM_HINT_T0);
}

/* Normalises the vectors of run v, with head_dim n, as a software pipeline: vector k + LOOKAHEAD is
   measured while vector k is scaled, one of each in turn. The loads of x then overlap with the stores
   of y (as in a copy), and the latency of each group's r with the scaling of the vectors in between.
   A vector's result depends only on its own elements, never on its group, its run or the order. */
static inline __attribute__((always_inline)) void normalise_run(const rmsnorm_call *call, const vector_run *v,
                                                                size_t n, bool streaming, bool track)
{
    const size_t count = v->count;
    vector_position at = {v->token, v->head};
    r_ring ring;
    const size_t prefetch_distance = streaming_prefetch_distance(n);

    for (size_t first = 0; first < LOOKAHEAD && first < count; first += GROUP_VECTORS)
        measure_group(call, v, &ring, first, count - first < GROUP_VECTORS ? count - first : GROUP_VECTORS, n);

    size_t k = 0;
    if (n <= BLOCK) {
        for (; k + LOOKAHEAD + GROUP_VECTORS <= count; k += GROUP_VECTORS) {
            const size_t ahead = k + LOOKAHEAD;
            const float *xa = v->x + ahead * v->stride;

            /* One vector measured, one scaled, in turn. */
            __m256 p[GROUP_VECTORS];
            for (size_t j = 0; j < GROUP_VECTORS; j++) {
                if (streaming && ahead + j + prefetch_distance < count)
                    prefetch_vector(xa + (j + prefetch_distance) * v->stride, n);
                p[j] = block_partial(xa + j * v->stride, n);
                finish_vector(call, v, k + j, &ring, track, &at, n, streaming);
            }
            rescue_due(call, v, &ring, k, GROUP_VECTORS, n);
            group_inverse(&ring, ahead % RING, reduce_four(p[0], p[1], p[2], p[3]), GROUP_VECTORS, n, call->eps);
        }
    }

    /* The last groups, and every group of longer vectors: measure a group whole, then scale one. */
    for (; k < count; k += GROUP_VECTORS) {
        const size_t ahead = k + LOOKAHEAD;
        if (ahead < count)
            measure_group(call, v, &ring, ahead, count - ahead < GROUP_VECTORS ? count - ahead : GROUP_VECTORS, n);

        const size_t finish_count = count - k < GROUP_VECTORS ? count - k : GROUP_VECTORS;
        for (size_t j = 0; j < finish_count; j++)
            finish_vector(call, v, k + j, &ring, track, &at, n, streaming);
        rescue_due(call, v, &ring, k, finish_count, n);
    }
}

/* Normalises the vectors of run v one at a time: sums, r, then scaling while the vector is still in L1.
   The loads of x then stay next to the stores of y, as in a copy. Each vector is a run of its own at
   ring slot 0, so that the rescue finds its token and head. Its r is bit for bit the one the pipeline
   computes, because reduce_four() treats each of its operands alike. */
static inline __attribute__((always_inline)) void normalise_run_per_vector(const rmsnorm_call *call,
                                                                           const vector_run *v, size_t n,
                                                                           bool track)
{
    const __m256 zero = _mm256_setzero_ps();
    vector_position at = {v->token, v->head};
    r_ring ring;

    for (size_t k = 0; k < v->count; k++) {
        const vector_run single = {v->x + k * v->stride, v->y + k * v->stride, v->stride, 1, at.token, at.head};
        group_inverse(&ring, 0, reduce_four(block_partial(single.x, n), zero, zero, zero), 1, n, call->eps);

        vector_position single_at = at;
        finish_vector(call, &single, 0, &ring, track, &single_at, n, false);
        rescue_due(call, &single, &ring, 0, 1, n);
        next_position(call, &at);
    }
}

/* Returns whether the call writes at least PER_VECTOR_BYTES. Its tokens * heads * head_dim floats of y
   exist in memory, so the product does not overflow. */
static bool output_reaches_per_vector_bytes(const rmsnorm_call *call)
{
    const sinkkit_head_layout *l = call->layout;
    return l->tokens * l->heads * l->head_dim * sizeof(float) >= PER_VECTOR_BYTES;
}

/* Normalises every vector of the call, one run at a time. */
static inline __attribute__((always_inline)) void normalise_layout(const rmsnorm_call *call, size_t n,
                                                                   bool streaming, bool track)
{
    const sinkkit_head_layout *l = call->layout;
    const size_t outer_count = call->heads_outer ? l->heads : l->tokens;
    const size_t inner_count = call->heads_outer ? l->tokens : l->heads;
    const size_t outer_stride = call->heads_outer ? l->head_stride : l->token_stride;
    const size_t inner_stride = call->heads_outer ? l->token_stride : l->head_stride;

    size_t inner_span;
    const bool continuous = !__builtin_mul_overflow(inner_count, inner_stride, &inner_span) &&
                            inner_span == outer_stride;
    const size_t runs = continuous ? 1 : outer_count;

    /* Only vectors of at most one block were measured, so longer ones keep the pipeline. So do streaming
       calls: in the AVX-512 kernel, one vector at a time with streaming stores was slower. */
    const bool per_vector = !streaming && n <= BLOCK && output_reaches_per_vector_bytes(call);

    for (size_t o = 0; o < runs; o++) {
        vector_run v = {call->x + o * outer_stride, call->y + o * outer_stride, inner_stride,
                        continuous ? outer_count * inner_count : inner_count, 0, 0};
        v.token = call->heads_outer ? 0 : o;
        v.head = call->heads_outer ? o : 0;
        if (per_vector)
            normalise_run_per_vector(call, &v, n, track);
        else
            normalise_run(call, &v, n, streaming, track);
    }
}

/* The variants of normalise_layout() that normalise_call() chooses from, each a function of its own so
   that register allocation and code placement of one do not depend on the others. The common head
   sizes are constants, so that the loops unroll fully. Token and head are followed only when a
   per-head gamma or inv_rms needs them. */
static __attribute__((noinline)) void normalise_256(const rmsnorm_call *call)
{
    normalise_layout(call, 256, false, false);
}

static __attribute__((noinline)) void normalise_128(const rmsnorm_call *call)
{
    normalise_layout(call, 128, false, false);
}

static __attribute__((noinline)) void normalise_96(const rmsnorm_call *call)
{
    normalise_layout(call, 96, false, false);
}

static __attribute__((noinline)) void normalise_80(const rmsnorm_call *call)
{
    normalise_layout(call, 80, false, false);
}

static __attribute__((noinline)) void normalise_64(const rmsnorm_call *call)
{
    normalise_layout(call, 64, false, false);
}

static __attribute__((noinline)) void normalise_any_size(const rmsnorm_call *call)
{
    normalise_layout(call, call->layout->head_dim, false, false);
}

static __attribute__((noinline)) void normalise_tracked(const rmsnorm_call *call)
{
    normalise_layout(call, call->layout->head_dim, false, true);
}

/* Head sizes with code of their own, as in the AVX-512 kernel, used when neither a per-head gamma nor
   inv_rms is wanted. */
static void normalise_untracked(const rmsnorm_call *call)
{
    switch (call->layout->head_dim) {
    case 256:
        normalise_256(call);
        break;
    case 128:
        normalise_128(call);
        break;
    case 96:
        normalise_96(call);
        break;
    case 80:
        normalise_80(call);
        break;
    case 64:
        normalise_64(call);
        break;
    default:
        normalise_any_size(call);
        break;
    }
}

static __attribute__((noinline)) void normalise_streaming(const rmsnorm_call *call)
{
    const size_t n = call->layout->head_dim;

    if (n == 128)
        normalise_layout(call, 128, true, true);
    else if (n == 64)
        normalise_layout(call, 64, true, true);
    else
        normalise_layout(call, n, true, true);
}

static void normalise_call(const rmsnorm_call *call, bool streaming)
{
    const bool track = call->gamma_kind == SINKKIT_GAMMA_PER_HEAD || call->inv_rms != NULL;

    if (streaming)
        normalise_streaming(call);
    else if (track)
        normalise_tracked(call);
    else
        normalise_untracked(call);
}

static rmsnorm_call make_call(const sinkkit_head_layout *layout, const float *x, float *y, const float *gamma,
                              sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms)
{
    bool heads_outer = layout->head_stride > layout->token_stride;
    /* A single inner index (one token with token_stride 0, say) would make every run one vector long. */
    if ((heads_outer ? layout->tokens : layout->heads) == 1)
        heads_outer = !heads_outer;

    rmsnorm_call call = {layout, x, y, gamma, gamma_kind, eps, inv_rms, heads_outer};
    return call;
}

void sinkkit_headwise_rmsnorm_f32_avx2(const sinkkit_head_layout *layout, const float *x, float *y,
                                       const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms)
{
    const rmsnorm_call call = make_call(layout, x, y, gamma, gamma_kind, eps, inv_rms);
    normalise_call(&call, false);
}

void sinkkit_headwise_rmsnorm_f32_streaming_avx2(const sinkkit_head_layout *layout, const float *x, float *y,
                                                 const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                                 float *inv_rms)
{
    const rmsnorm_call call = make_call(layout, x, y, gamma, gamma_kind, eps, inv_rms);
    normalise_call(&call, true);

    /* Non-temporal stores are weakly ordered: make them visible before the caller reads y or hands it
       to another thread. */
    _mm_sfence();
}
