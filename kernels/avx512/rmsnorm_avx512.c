/* Head-wise RMSNorm for AVX-512: 16-lane float sums of squares flushed into double, then (x * r) * gamma. */
#include <float.h>
#include <immintrin.h>
#include <stdint.h>

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
    GROUP_VECTORS = 8,
    /* Vectors between the one being measured and the one being scaled. Their scaling covers the
       latency of a group's reductions, square root and division (an estimated 70 cycles on Zen 5),
       and their x (8 KiB at head_dim 128) stays in L1 until its second read. Two groups, the least
       that normalise_run() allows; 24 was no faster. */
    LOOKAHEAD = 16,
    /* Slots for r of the vectors in flight: at least LOOKAHEAD + GROUP_VECTORS, a multiple of
       GROUP_VECTORS. */
    RING = 32,
    /* Runs of at most this many vectors take the two-phase path of normalise_short(): a decode row of
       32 heads of 128. At most 32, for its rescue bit mask. */
    SHORT_RUN = 32,
    /* Registers for a shared gamma, enough for head_dim up to 128. */
    GAMMA_REGISTERS = 8,
    /* Bytes of x that the streaming variant prefetches ahead of the vector being measured. On a
       Zen 5 virtual machine, single thread, a 64 MiB call at head_dim 128 took about 5% less time
       with 16 KiB than without prefetching (8 and 32 KiB gained less). In the ordinary variant,
       whose stores also read their lines, prefetching gained nothing. */
    STREAMING_PREFETCH = 16 * 1024,
    /* Calls with at least this many bytes of output take normalise_run_per_vector() unless they
       stream: x and y then take at least 32 MiB, the L3 size of the machine measured. Measured on a
       Zen 5 virtual machine, single thread, as time over the copy of the same bytes (pipeline of
       normalise_run(), then one vector at a time), by bytes of output. At head_dim 128: 4 MiB 1.15
       and 1.24 to 1.29, 8 MiB both about 1.22, 16 MiB 1.36 and 1.09, 64 MiB 1.10 and 1.00. At
       head_dim 64: 8 MiB 1.26 and 1.74, 16 MiB 1.41 and 1.25, 32 MiB 1.17 and 1.00. */
    PER_VECTOR_BYTES = 16 << 20
};

/* normalise_run() computes a group's r one step after measuring it, so the vectors it scales must be
   at least two groups behind the ones it measures. */
_Static_assert(LOOKAHEAD >= 2 * GROUP_VECTORS && LOOKAHEAD % GROUP_VECTORS == 0, "LOOKAHEAD too short");
_Static_assert(RING >= LOOKAHEAD + GROUP_VECTORS && RING % GROUP_VECTORS == 0, "RING too small");
_Static_assert(SHORT_RUN <= 32 && SHORT_RUN % GROUP_VECTORS == 0, "SHORT_RUN must fit the 32-bit rescue mask");

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

/* r of the vectors in flight, rounded to float, and which of them need the shared rescue. Vector k of
   the walk uses slot k % RING. */
typedef struct r_ring {
    float rf[RING];
    /* Bit j of entry q set: the vector in slot 8 q + j takes the shared rescue path. One entry per
       group, written whole, so that testing a bit waits only for that group's r, not for the newest. */
    uint8_t rescue[RING / GROUP_VECTORS];
} r_ring;

/* Returns r = sinkkit_rms_inverse(), rounded to float, for the sums s of the count <= 8 vectors of a
   group, and in *rescue the bits of those for which sinkkit_rms_needs_rescue() is true. Each lane performs
   the same correctly rounded operations in the same order (divide, add, square root, divide), and the
   ordered compares are false for NaN as the scalar comparisons are, so every lane equals the scalar
   calls bit for bit. */
static inline __attribute__((always_inline)) __m256 group_r(__m512d s, size_t count, size_t n, float eps,
                                                            uint32_t *rescue)
{
    /* Unused slots get a harmless mean square of 1. */
    s = _mm512_mask_mov_pd(s, (__mmask8)(0xFFu << count), _mm512_set1_pd((double)n));

    /* For a power-of-two n, multiplying by 1 / n gives the quotient exactly whenever it matters. A sum
       that passes the rescue test is a normal double, so scaling it by 2^-k neither rounds nor
       underflows, and for any other sum r is not used. The multiplication has a quarter of the
       division's latency, which lies on the path from the sums to the scaling. */
    const bool power_of_two = (n & (n - 1)) == 0;
    __m512d mean = power_of_two ? _mm512_mul_pd(s, _mm512_set1_pd(1.0 / (double)n))
                                : _mm512_div_pd(s, _mm512_set1_pd((double)n));
    __m512d root = _mm512_sqrt_pd(_mm512_add_pd(mean, _mm512_set1_pd((double)eps)));
    __m512d r = _mm512_div_pd(_mm512_set1_pd(1.0), root);

    __mmask8 trusted = _mm512_cmp_pd_mask(s, _mm512_set1_pd((double)n * SINKKIT_RESCUE_FLOOR), _CMP_GE_OQ);
    trusted &= _mm512_cmp_pd_mask(s, _mm512_set1_pd(DBL_MAX), _CMP_LE_OQ);
    trusted &= _mm512_cmp_pd_mask(r, _mm512_set1_pd(FLT_MIN), _CMP_GE_OQ);
    trusted &= _mm512_cmp_pd_mask(r, _mm512_set1_pd(FLT_MAX), _CMP_LE_OQ);

    *rescue = (uint8_t)~trusted & ((1u << count) - 1u);
    return _mm512_cvtpd_ps(r);
}

/* Stores group_r() of the count <= 8 vectors from ring slot first (a multiple of 8) on. */
static inline __attribute__((always_inline)) void group_inverse(r_ring *ring, size_t first, __m512d s,
                                                                size_t count, size_t n, float eps)
{
    uint32_t rescue;
    _mm256_storeu_ps(ring->rf + first, group_r(s, count, n, eps, &rescue));
    ring->rescue[first / GROUP_VECTORS] = (uint8_t)rescue;
}

/* y = (x * r) * g with two roundings in that order and no FMA, so every ISA rounds the same way;
   y = x * r when g is NULL. */
static inline __attribute__((always_inline)) __m512 scaled(__m512 x, __m512 rv, const float *g, size_t i,
                                                           __mmask16 m)
{
    __m512 xr = _mm512_mul_ps(x, rv);
    if (g == NULL)
        return xr;
    return _mm512_mul_ps(xr, _mm512_maskz_loadu_ps(m, g + i));
}

/* Writes y[0..n) with ordinary stores. */
static inline __attribute__((always_inline)) void scale_vector(const float *x, float *y, const float *g,
                                                               size_t n, __m512 rv)
{
    size_t i = 0;

    for (; i + LANES <= n; i += LANES)
        _mm512_storeu_ps(y + i, scaled(_mm512_loadu_ps(x + i), rv, g, i, 0xFFFF));

    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, scaled(_mm512_maskz_loadu_ps(m, x + i), rv, g, i, m));
    }
}

/* A shared gamma of a head_dim of at most GAMMA_REGISTERS * 16 elements, loaded once per call into
   registers instead of once per vector, which saves a third of the loads of the scaling pass. Without
   gamma the registers contain ones: (x * r) * 1 is exactly x * r, NaN, infinities and signed zeros
   included. */
typedef struct gamma_registers {
    __m512 v[GAMMA_REGISTERS];
} gamma_registers;

static inline __attribute__((always_inline)) gamma_registers load_gamma_registers(const float *gamma, size_t n)
{
    gamma_registers registers;
    for (size_t k = 0; k < GAMMA_REGISTERS; k++) {
        const size_t remaining = 16 * k < n ? n - 16 * k : 0;
        if (remaining == 0)
            registers.v[k] = _mm512_setzero_ps();
        else if (gamma == NULL)
            registers.v[k] = _mm512_set1_ps(1.0f);
        else
            registers.v[k] = _mm512_maskz_loadu_ps(tail_mask(remaining < 16 ? remaining : 16), gamma + 16 * k);
    }
    return registers;
}

/* Writes y[0..n) = (x * r) * gamma with ordinary stores and gamma in registers. */
static inline __attribute__((always_inline)) void scale_vector_gamma_registers(const float *x, float *y,
                                                                                const gamma_registers *gamma,
                                                                                size_t n, __m512 rv)
{
    size_t k = 0;

    for (; 16 * k + LANES <= n; k++) {
        __m512 xr = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * k), rv);
        _mm512_storeu_ps(y + 16 * k, _mm512_mul_ps(xr, gamma->v[k]));
    }

    if (16 * k < n) {
        __mmask16 m = tail_mask(n - 16 * k);
        __m512 xr = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + 16 * k), rv);
        _mm512_mask_storeu_ps(y + 16 * k, m, _mm512_mul_ps(xr, gamma->v[k]));
    }
}

/* Writes y[0..n) = (x * r) * gamma with non-temporal stores and gamma in registers, for a y on a 64-byte
   boundary and n a multiple of 16, so that every store fills one whole line. */
static inline __attribute__((always_inline)) void scale_vector_streaming_lines(const float *x, float *y,
                                                                                const gamma_registers *gamma,
                                                                                size_t n, __m512 rv)
{
    for (size_t k = 0; 16 * k < n; k++) {
        __m512 xr = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * k), rv);
        _mm512_stream_ps(y + 16 * k, _mm512_mul_ps(xr, gamma->v[k]));
    }
}

/* Writes y[0..n) with non-temporal stores for the whole 64-byte lines and ordinary stores for the
   partial lines at either end. Every element gets the same value as from scale_vector(). */
static inline __attribute__((always_inline)) void scale_vector_streaming(const float *x, float *y,
                                                                         const float *g, size_t n, __m512 rv)
{
    const size_t misalignment = ((uintptr_t)y % 64) / sizeof(float);
    size_t head = misalignment == 0 ? 0 : LANES - misalignment;
    /* A y that is not even float-aligned has no 64-byte-aligned lines: use ordinary stores throughout. */
    if (head > n || (uintptr_t)y % sizeof(float) != 0)
        head = n;

    if (head > 0) {
        __mmask16 m = tail_mask(head);
        _mm512_mask_storeu_ps(y, m, scaled(_mm512_maskz_loadu_ps(m, x), rv, g, 0, m));
    }

    size_t i = head;
    for (; i + LANES <= n; i += LANES)
        _mm512_stream_ps(y + i, scaled(_mm512_loadu_ps(x + i), rv, g, i, 0xFFFF));

    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, scaled(_mm512_maskz_loadu_ps(m, x + i), rv, g, i, m));
    }
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

/* Token and head of the vector being finished; followed only when gamma is per head or inv_rms is
   wanted. */
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

/* Returns the sums of squares of the count <= 8 vectors from index first of run v, in double, vector j
   in lane j (0 in the unused lanes). */
static inline __attribute__((always_inline)) __m512d group_sums(const vector_run *v, size_t first, size_t count,
                                                                size_t n)
{
    const float *x = v->x + first * v->stride;

    if (n > BLOCK) {
        double s[GROUP_VECTORS] = {0};
        for (size_t j = 0; j < count; j++)
            s[j] = sum_squares(x + j * v->stride, n);
        return _mm512_loadu_pd(s);
    }

    __m256d quarter[2];
    for (size_t q = 0; q < 2; q++) {
        __m512 p[4];
        for (size_t j = 0; j < 4; j++)
            p[j] = 4 * q + j < count ? block_partial(x + (4 * q + j) * v->stride, n) : _mm512_setzero_ps();
        quarter[q] = reduce_four(p[0], p[1], p[2], p[3]);
    }
    return _mm512_insertf64x4(_mm512_castpd256_pd512(quarter[0]), quarter[1], 1);
}

/* Computes the sums of squares and r of the count <= 8 vectors from index first of run v, into the
   ring from slot first % RING. */
static inline __attribute__((always_inline)) void measure_group(const rmsnorm_call *call, const vector_run *v,
                                                                r_ring *ring, size_t first, size_t count,
                                                                size_t n)
{
    group_inverse(ring, first % RING, group_sums(v, first, count, n), count, n, call->eps);
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

/* Writes y and inv_rms of vector k of run v with r broadcast in every lane of rv, unless rescued is set:
   rescue_vectors() handles the vector then. gamma_in_registers is NULL to read gamma from memory. at is
   followed when track is set. */
static inline __attribute__((always_inline)) void finish_vector_with(const rmsnorm_call *call, const vector_run *v,
                                                                     size_t k, __m512 rv, bool rescued, bool track,
                                                                     vector_position *at, size_t n, bool streaming,
                                                                     const gamma_registers *gamma_in_registers)
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

    if (rescued)
        return;

    if (streaming && gamma_in_registers != NULL)
        scale_vector_streaming_lines(xv, yv, gamma_in_registers, n, rv);
    else if (streaming)
        scale_vector_streaming(xv, yv, g, n, rv);
    else if (gamma_in_registers != NULL)
        scale_vector_gamma_registers(xv, yv, gamma_in_registers, n, rv);
    else
        scale_vector(xv, yv, g, n, rv);
    if (r_out != NULL)
        *r_out = _mm512_cvtss_f32(rv);
}

/* finish_vector_with() for vector k of run v, with its r and rescue decision from the ring. */
static inline __attribute__((always_inline)) void finish_vector(const rmsnorm_call *call, const vector_run *v,
                                                                size_t k, const r_ring *ring, bool track,
                                                                vector_position *at, size_t n, bool streaming,
                                                                const gamma_registers *gamma_in_registers)
{
    const size_t slot = k % RING;
    const bool rescued = ring->rescue[slot / GROUP_VECTORS] & (1u << (slot % GROUP_VECTORS));
    finish_vector_with(call, v, k, _mm512_set1_ps(ring->rf[slot]), rescued, track, at, n, streaming, gamma_in_registers);
}

/* Asks for the cache lines of x[0..n) to be loaded into L1. */
static inline __attribute__((always_inline)) void prefetch_vector(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 64 / sizeof(float))
        _mm_prefetch((const char *)(x + i), _MM_HINT_T0);
}

/* Normalises the count <= SHORT_RUN vectors of run v from index first on in three phases: all sums, then
   all r, then all scaling. Within L1, a vector's scaling cannot start before its group's r, an estimated
   100 cycles after the group's last load. Measuring every group first lets those waits overlap, and a
   32-head decode row took about 15% less time than in the pipeline of normalise_run(). */
static inline __attribute__((always_inline)) void normalise_short(const rmsnorm_call *call, const vector_run *v,
                                                                  size_t first, size_t count, size_t n,
                                                                  bool streaming, bool track, vector_position *at,
                                                                  const gamma_registers *gamma_in_registers)
{
    __m512d sums[SHORT_RUN / GROUP_VECTORS];
    __m256 rf[SHORT_RUN / GROUP_VECTORS];
    uint32_t rescue = 0;

    for (size_t g = 0; g < count; g += GROUP_VECTORS) {
        const size_t in_group = count - g < GROUP_VECTORS ? count - g : GROUP_VECTORS;
        /* A constant count for whole groups lets the compiler drop the tests for missing vectors. */
        sums[g / GROUP_VECTORS] = in_group == GROUP_VECTORS ? group_sums(v, first + g, GROUP_VECTORS, n)
                                                            : group_sums(v, first + g, in_group, n);
    }

    for (size_t g = 0; g < count; g += GROUP_VECTORS) {
        const size_t in_group = count - g < GROUP_VECTORS ? count - g : GROUP_VECTORS;
        uint32_t group_rescue;
        rf[g / GROUP_VECTORS] = group_r(sums[g / GROUP_VECTORS], in_group, n, call->eps, &group_rescue);
        rescue |= group_rescue << g;
    }

    for (size_t g = 0; g < count; g += GROUP_VECTORS) {
        const size_t in_group = count - g < GROUP_VECTORS ? count - g : GROUP_VECTORS;
        const __m512 lanes = _mm512_castps256_ps512(rf[g / GROUP_VECTORS]);
        const uint32_t group_rescue = (rescue >> g) & 0xFFu;
        for (size_t j = 0; j < in_group; j++) {
            /* Lane j of the group's r in every lane, without a trip through memory. */
            const __m512 rv = _mm512_permutexvar_ps(_mm512_set1_epi32((int)j), lanes);
            /* Testing the group's bits once keeps a branch per vector out of the common case. */
            const bool rescued = group_rescue != 0 && ((group_rescue >> j) & 1u);
            finish_vector_with(call, v, first + g + j, rv, rescued, track, at, n, streaming, gamma_in_registers);
        }
    }

    if (__builtin_expect(rescue != 0, 0))
        rescue_vectors(call, v, first, rescue, n);
}

/* Hands the vectors from index first of run v (count of them, at most 8) that need it to the rescue. */
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

/* Normalises the vectors of run v one at a time: sums, r, then scaling while the vector is still in L1.
   The loads of x then stay next to the stores of y, as in a copy. Within the caches, each vector's r
   delays its stores. When x and y come from memory, the loads of the next vectors cover that delay. */
static inline __attribute__((always_inline)) void normalise_run_per_vector(const rmsnorm_call *call,
                                                                           const vector_run *v, size_t n,
                                                                           bool track,
                                                                           const gamma_registers *gamma_in_registers)
{
    vector_position at = {v->token, v->head};

    for (size_t k = 0; k < v->count; k++) {
        uint32_t rescue;
        const __m256 rf = group_r(group_sums(v, k, 1, n), 1, n, call->eps, &rescue);
        const __m512 rv = _mm512_broadcastss_ps(_mm256_castps256_ps128(rf));
        finish_vector_with(call, v, k, rv, rescue != 0, track, &at, n, false, gamma_in_registers);
        if (__builtin_expect(rescue != 0, 0))
            rescue_vectors(call, v, k, rescue, n);
    }
}

/* Normalises the vectors of run v, with head_dim n, as a software pipeline: vector k + LOOKAHEAD is
   measured while vector k is scaled, one of each in turn. The loads of x then overlap with the stores
   of y (as in a copy), and the latency of each group's r with the scaling of the vectors in between.
   A vector's result depends only on its own elements, never on its group, its run or the order. */
static inline __attribute__((always_inline)) void normalise_run(const rmsnorm_call *call, const vector_run *v,
                                                                size_t n, bool streaming, bool track,
                                                                const gamma_registers *gamma_in_registers)
{
    const size_t count = v->count;
    vector_position at = {v->token, v->head};

    if (n <= BLOCK && count <= SHORT_RUN) {
        normalise_short(call, v, 0, count, n, streaming, track, &at, gamma_in_registers);
        return;
    }

    r_ring ring;
    const size_t prefetch_distance = streaming_prefetch_distance(n);

    for (size_t first = 0; first < LOOKAHEAD && first < count; first += GROUP_VECTORS)
        measure_group(call, v, &ring, first, count - first < GROUP_VECTORS ? count - first : GROUP_VECTORS, n);

    size_t k = 0;
    if (n <= BLOCK) {
        /* The sums of the group measured in the previous step. Its r is computed in the middle of this
           step, not at the end of that one. The chain from the sums through the square root and the
           division takes an estimated 60 cycles, and when its operations were issued right after the
           sums, they waited in the scheduler and held back the scaling. On Zen 5, an L1-resident steady
           state then took 17 instead of 22 cycles per vector of 128, and a 512 KiB call 7% less time. */
        __m512d pending = _mm512_setzero_pd();
        size_t pending_first = SIZE_MAX;
        for (; k + LOOKAHEAD + GROUP_VECTORS <= count; k += GROUP_VECTORS) {
            const size_t ahead = k + LOOKAHEAD;
            const float *xa = v->x + ahead * v->stride;

            /* One vector measured, one scaled, in turn. The first half's partials are reduced as soon as
               they are complete, and the previous group's r two vectors later. */
            __m512 p[GROUP_VECTORS];
            __m256d low = _mm256_setzero_pd();
            for (size_t j = 0; j < GROUP_VECTORS; j++) {
                if (streaming && ahead + j + prefetch_distance < count)
                    prefetch_vector(xa + (j + prefetch_distance) * v->stride, n);
                p[j] = block_partial(xa + j * v->stride, n);
                finish_vector(call, v, k + j, &ring, track, &at, n, streaming, gamma_in_registers);
                if (j == 3)
                    low = reduce_four(p[0], p[1], p[2], p[3]);
                if (j == 5 && pending_first != SIZE_MAX)
                    group_inverse(&ring, pending_first % RING, pending, GROUP_VECTORS, n, call->eps);
            }
            rescue_due(call, v, &ring, k, GROUP_VECTORS, n);

            __m256d high = reduce_four(p[4], p[5], p[6], p[7]);
            pending = _mm512_insertf64x4(_mm512_castpd256_pd512(low), high, 1);
            pending_first = ahead;
        }
        if (pending_first != SIZE_MAX)
            group_inverse(&ring, pending_first % RING, pending, GROUP_VECTORS, n, call->eps);
    }

    /* The last groups, and every group of longer vectors: measure a group whole, then scale one. */
    for (; k < count; k += GROUP_VECTORS) {
        const size_t ahead = k + LOOKAHEAD;
        if (ahead < count)
            measure_group(call, v, &ring, ahead, count - ahead < GROUP_VECTORS ? count - ahead : GROUP_VECTORS, n);

        const size_t finish_count = count - k < GROUP_VECTORS ? count - k : GROUP_VECTORS;
        for (size_t j = 0; j < finish_count; j++)
            finish_vector(call, v, k + j, &ring, track, &at, n, streaming, gamma_in_registers);
        rescue_due(call, v, &ring, k, finish_count, n);
    }
}

/* Returns how many runs the call's vectors form, with the first one in *first and each next one
   *outer_stride floats further on. The runs follow the inner dimension, and merge into one when the outer
   stride equals the inner count times the inner stride. */
static size_t layout_runs(const rmsnorm_call *call, vector_run *first, size_t *outer_stride)
{
    const sinkkit_head_layout *l = call->layout;
    const size_t outer_count = call->heads_outer ? l->heads : l->tokens;
    const size_t inner_count = call->heads_outer ? l->tokens : l->heads;
    const size_t inner_stride = call->heads_outer ? l->token_stride : l->head_stride;
    *outer_stride = call->heads_outer ? l->head_stride : l->token_stride;

    size_t inner_span;
    const bool continuous = !__builtin_mul_overflow(inner_count, inner_stride, &inner_span) &&
                            inner_span == *outer_stride;
    const vector_run run = {call->x, call->y, inner_stride, continuous ? outer_count * inner_count : inner_count,
                            0, 0};
    *first = run;
    return continuous ? 1 : outer_count;
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
                                                                   bool streaming, bool track, bool in_registers)
{
    vector_run first;
    size_t outer_stride;
    const size_t runs = layout_runs(call, &first, &outer_stride);

    gamma_registers registers;
    if (in_registers)
        registers = load_gamma_registers(call->gamma, n);

    /* Only vectors of at most one block were measured, so longer ones keep the pipeline. So do streaming
       calls, for its prefetches: one vector at a time took 0.90 of the ordinary copy at 64 MiB, not 0.80. */
    const bool per_vector = !streaming && n <= BLOCK && output_reaches_per_vector_bytes(call);

    for (size_t o = 0; o < runs; o++) {
        vector_run v = first;
        v.x += o * outer_stride;
        v.y += o * outer_stride;
        v.token = call->heads_outer ? 0 : o;
        v.head = call->heads_outer ? o : 0;
        if (per_vector)
            normalise_run_per_vector(call, &v, n, track, in_registers ? &registers : NULL);
        else
            normalise_run(call, &v, n, streaming, track, in_registers ? &registers : NULL);
    }
}

/* True when every vector of the call lies in one run of at most SHORT_RUN vectors; *run is that run. */
static bool single_short_run(const rmsnorm_call *call, vector_run *run)
{
    size_t outer_stride;
    return layout_runs(call, run, &outer_stride) == 1 && run->count <= SHORT_RUN;
}

/* A whole call of at most SHORT_RUN vectors of head_dim n, in one run with shared or no gamma: the decode
   case. A function of its own, so that gamma stays in registers and the setup of the longer path is
   skipped. track is set when inv_rms is wanted, which needs each vector's token and head. */
static inline __attribute__((always_inline)) void normalise_short_call(const rmsnorm_call *call, size_t n,
                                                                       const vector_run *v, bool track)
{
    const gamma_registers registers = load_gamma_registers(call->gamma, n);
    vector_position at = {v->token, v->head};
    if (v->stride == n) {
        /* Packed vectors, as in a token-major decode row: with a constant stride, a 32-head decode
           call took about 10% less time. */
        const vector_run packed = {v->x, v->y, n, v->count, v->token, v->head};
        normalise_short(call, &packed, 0, packed.count, n, false, track, &at, &registers);
    } else {
        normalise_short(call, v, 0, v->count, n, false, track, &at, &registers);
    }
}

/* Head sizes with code of their own, for calls without a per-head gamma. Their loops unroll fully, and
   gamma (or ones) stays in registers up to GAMMA_REGISTERS * 16 elements. Each size adds about 20 KiB
   of code. Time over a copy of the same bytes on Zen 5 (single thread, shared gamma, no inv_rms), with
   the size's own code and then with the general code:
   - 1 x 32 x 80: 2.23 and 4.33; 64 x 32 x 80: 1.12 and 1.34
   - 1 x 32 x 96: 1.69 and 3.11; 64 x 32 x 96: 1.07 and 1.28
   - 1 x 32 x 256: 1.35 and 1.56 */
static __attribute__((noinline)) void normalise_short_128(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 128, v, false);
}

static __attribute__((noinline)) void normalise_short_96(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 96, v, false);
}

static __attribute__((noinline)) void normalise_short_80(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 80, v, false);
}

static __attribute__((noinline)) void normalise_short_64(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 64, v, false);
}

/* The same with inv_rms written, which needs each vector's token and head. On Zen 5 a 1 x 32 x 128 call
   with inv_rms took about 1.8 times a memcpy of the same bytes this way, against 2.19 through
   normalise_tracked(). */
static __attribute__((noinline)) void normalise_short_128_tracked(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 128, v, true);
}

static __attribute__((noinline)) void normalise_short_96_tracked(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 96, v, true);
}

static __attribute__((noinline)) void normalise_short_80_tracked(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 80, v, true);
}

static __attribute__((noinline)) void normalise_short_64_tracked(const rmsnorm_call *call, const vector_run *v)
{
    normalise_short_call(call, 64, v, true);
}

/* Runs normalise_short_call() with the call's head_dim as a constant and returns true, or returns false
   when that size has no decode code. 256 has none because its gamma does not fit in the registers.
   track is set when inv_rms is requested. */
static bool normalise_short_fixed(const rmsnorm_call *call, const vector_run *v, bool track)
{
    switch (call->layout->head_dim) {
    case 128:
        if (track)
            normalise_short_128_tracked(call, v);
        else
            normalise_short_128(call, v);
        return true;
    case 96:
        if (track)
            normalise_short_96_tracked(call, v);
        else
            normalise_short_96(call, v);
        return true;
    case 80:
        if (track)
            normalise_short_80_tracked(call, v);
        else
            normalise_short_80(call, v);
        return true;
    case 64:
        if (track)
            normalise_short_64_tracked(call, v);
        else
            normalise_short_64(call, v);
        return true;
    default:
        return false;
    }
}

/* The variants of normalise_layout() that normalise_call() chooses from, each a function of its own so
   that register allocation and code placement of one do not depend on the others. Token and head are
   followed only when a per-head gamma or inv_rms needs them. */
static __attribute__((noinline)) void normalise_256(const rmsnorm_call *call)
{
    normalise_layout(call, 256, false, false, false);
}

static __attribute__((noinline)) void normalise_128(const rmsnorm_call *call)
{
    normalise_layout(call, 128, false, false, true);
}

static __attribute__((noinline)) void normalise_96(const rmsnorm_call *call)
{
    normalise_layout(call, 96, false, false, true);
}

static __attribute__((noinline)) void normalise_80(const rmsnorm_call *call)
{
    normalise_layout(call, 80, false, false, true);
}

static __attribute__((noinline)) void normalise_64(const rmsnorm_call *call)
{
    normalise_layout(call, 64, false, false, true);
}

static __attribute__((noinline)) void normalise_any_size(const rmsnorm_call *call)
{
    normalise_layout(call, call->layout->head_dim, false, false, false);
}

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

static __attribute__((noinline)) void normalise_tracked(const rmsnorm_call *call)
{
    const size_t n = call->layout->head_dim;
    const bool in_registers = call->gamma_kind != SINKKIT_GAMMA_PER_HEAD;

    if (n == 128)
        normalise_layout(call, 128, false, true, in_registers);
    else if (n == 64)
        normalise_layout(call, 64, false, true, in_registers);
    else
        normalise_layout(call, n, false, true, false);
}

/* True when every vector of y starts on a 64-byte boundary and fills whole lines: then streaming stores
   need no ordinary stores at the ends of a vector, and gamma's elements sit at fixed register lanes. */
static bool vectors_on_lines(const rmsnorm_call *call)
{
    const sinkkit_head_layout *l = call->layout;
    const size_t line = 64 / sizeof(float);
    return (uintptr_t)call->y % 64 == 0 && l->head_dim % line == 0 && l->token_stride % line == 0 &&
           l->head_stride % line == 0;
}

/* Streaming variants for vectors on whole lines, with shared or no gamma in registers and neither token
   nor head followed. Compared in one process with the general variant below on a 64 MiB call, they took
   about 5% less time (Zen 5). */
static __attribute__((noinline)) void normalise_streaming_lines_128(const rmsnorm_call *call)
{
    normalise_layout(call, 128, true, false, true);
}

static __attribute__((noinline)) void normalise_streaming_lines_64(const rmsnorm_call *call)
{
    normalise_layout(call, 64, true, false, true);
}

/* Elsewhere streaming stores go to the 64-byte-aligned part of each vector, whose gamma elements are not
   at fixed register lanes, so this variant reads gamma from memory. */
static __attribute__((noinline)) void normalise_streaming(const rmsnorm_call *call)
{
    const size_t n = call->layout->head_dim;
    const bool track = call->gamma_kind == SINKKIT_GAMMA_PER_HEAD || call->inv_rms != NULL;
    const bool on_lines = !track && vectors_on_lines(call);

    if (n == 128 && on_lines)
        normalise_streaming_lines_128(call);
    else if (n == 64 && on_lines)
        normalise_streaming_lines_64(call);
    else if (n == 128)
        normalise_layout(call, 128, true, true, false);
    else if (n == 64)
        normalise_layout(call, 64, true, true, false);
    else
        normalise_layout(call, n, true, true, false);
}

static void normalise_call(const rmsnorm_call *call, bool streaming)
{
    vector_run run;
    const bool track = call->gamma_kind == SINKKIT_GAMMA_PER_HEAD || call->inv_rms != NULL;

    if (streaming) {
        normalise_streaming(call);
        return;
    }
    /* A decode call: one short run. A per-head gamma does not fit the registers of normalise_short_call(). */
    if (call->gamma_kind != SINKKIT_GAMMA_PER_HEAD && single_short_run(call, &run) &&
        normalise_short_fixed(call, &run, track))
        return;

    if (track)
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

void sinkkit_headwise_rmsnorm_f32_avx512(const sinkkit_head_layout *layout, const float *x, float *y,
                                         const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                         float *inv_rms)
{
    const rmsnorm_call call = make_call(layout, x, y, gamma, gamma_kind, eps, inv_rms);
    normalise_call(&call, false);
}

void sinkkit_headwise_rmsnorm_f32_streaming_avx512(const sinkkit_head_layout *layout, const float *x, float *y,
                                                   const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                                   float *inv_rms)
{
    const rmsnorm_call call = make_call(layout, x, y, gamma, gamma_kind, eps, inv_rms);
    normalise_call(&call, true);

    /* Non-temporal stores are weakly ordered: make them visible before the caller reads y or hands it
       to another thread. */
    _mm_sfence();
}
