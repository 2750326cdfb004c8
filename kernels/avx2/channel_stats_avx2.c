/* AVX2 channel statistics: groups of 8 tokens walk across the channels, their state in registers. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

enum {
    LANES = 8,
    /* Tokens per group. A lane's float sum of squares is a chain of at most 8 fused multiply-adds, so
       each square goes through at most 8 roundings. The sum is then added to sum_squares in double
       (rule 4 of the numeric scheme in kernels.h). */
    GROUP_TOKENS = 8,
    /* Vectors per step: each row of a group contributes 128 contiguous bytes, and the state (max,
       offset and sum of each vector) takes 12 of the 16 ymm registers. */
    STEP_VECTORS = 4,
    STEP_CHANNELS = LANES * STEP_VECTORS,
    /* Channels per pass down the tokens. Every group reads max_abs and updates sum_squares of all of
       them, and 16384 channels of those two arrays (192 KiB) stay in L2. A multiple of STEP_CHANNELS. */
    CHUNK_CHANNELS = 16384,
    /* A group's rows are 8 interleaved streams, which hardware prefetchers follow poorly: each row is
       prefetched 1 KiB ahead (see the AVX-512 kernel for the measurements). */
    PREFETCH_FLOATS = 256
};

/* Statistics of 8 channels over the rows of one group seen so far. A lane whose rows contain a NaN ends
   with a NaN sum (the terms are squares, so Inf never meets -Inf), and only the sum is used for it:
   fold_unusual_group() finds its first NaN again. */
typedef struct lane_state {
    __m256 max;       /* largest |a| of the group, 0 before the first row */
    __m256 offset;    /* bits of the int32 row within the group where max was first reached */
    __m256 sum;       /* sum of a^2 in float */
} lane_state;

/* The statistics of up to 8 channels, copied out of the caller's arrays so that a partial vector can
   use full loads and stores. */
typedef struct lane_stats {
    float max_abs[LANES];
    uint64_t argmax_token[LANES];
    double sum_squares[LANES];
} lane_stats;

static inline lane_state lane_state_start(void)
{
    lane_state s;
    s.max = _mm256_setzero_ps();
    s.offset = _mm256_setzero_ps();
    s.sum = _mm256_setzero_ps();
    return s;
}

static inline __m256 absolute(__m256 x)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

/* Adds one row of a group, whose index is in every lane of offset. Starting from max 0 at offset 0
   and moving only on a strictly greater value gives the first row that reached the max. maxps returns
   its second operand when either is NaN, so a NaN leaves max as it was. */
static inline void lane_state_add(lane_state *s, __m256 x, __m256 offset)
{
    __m256 magnitude = absolute(x);
    __m256 greater = _mm256_cmp_ps(magnitude, s->max, _CMP_GT_OQ);
    s->max = _mm256_max_ps(magnitude, s->max);
    s->offset = _mm256_blendv_ps(s->offset, offset, greater);
    s->sum = _mm256_fmadd_ps(x, x, s->sum);
}

static inline __m256 row_index(size_t r)
{
    return _mm256_castsi256_ps(_mm256_set1_epi32((int)r));
}

/* Packs two vectors of 64-bit lane masks into one vector of 32-bit lane masks, in lane order. */
static inline __m256 pack_masks(__m256i low, __m256i high)
{
    __m256 interleaved = _mm256_shuffle_ps(_mm256_castsi256_ps(low), _mm256_castsi256_ps(high), 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(interleaved), 0xD8));
}

/* Widens 32-bit lane masks 0-3 (low) or 4-7 (high) to 64-bit lane masks. */
static inline __m256i widen_mask_low(__m256 mask)
{
    return _mm256_cvtepi32_epi64(_mm_castps_si128(_mm256_castps256_ps128(mask)));
}

static inline __m256i widen_mask_high(__m256 mask)
{
    return _mm256_cvtepi32_epi64(_mm_castps_si128(_mm256_extractf128_ps(mask, 1)));
}

/* Unsigned 64-bit a < b, as lane masks: AVX2 compares signed, so flip the sign bits first. */
static inline __m256i less_u64(__m256i a, __m256i b)
{
    const __m256i sign = _mm256_set1_epi64x((long long)0x8000000000000000ULL);
    return _mm256_cmpgt_epi64(_mm256_xor_si256(b, sign), _mm256_xor_si256(a, sign));
}

/* Returns the row of the first NaN in a column of count rows. The caller knows that there is one. */
static size_t first_nan_row(const float *column, size_t row_stride, size_t count)
{
    for (size_t t = 0; t < count; t++) {
        if (isnan(column[t * row_stride]))
            return t;
    }
    return 0;
}

/* Sums the squares of a column of count rows in double, in token order. A float squared is exact in
   double and neither overflows nor underflows there, so each add rounds once. */
static double column_sum_squares(const float *column, size_t row_stride, size_t count)
{
    double sum = 0.0;
    for (size_t t = 0; t < count; t++) {
        const double value = column[t * row_stride];
        sum += value * value;
    }
    return sum;
}

/* Adds a group's float sums of 8 channels to sum_squares. */
static inline void add_sums(double *sum_squares, __m256 sum)
{
    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(sum));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(sum, 1));
    _mm256_storeu_pd(sum_squares, _mm256_add_pd(_mm256_loadu_pd(sum_squares), low));
    _mm256_storeu_pd(sum_squares + 4, _mm256_add_pd(_mm256_loadu_pd(sum_squares + 4), high));
}

/* Returns the lanes (movemask bits) whose float sum cannot simply be added: NaN, +Inf although max is
   finite (a square or the sum overflowed), or below count * SINKKIT_RESCUE_FLOOR although max is not 0
   (squares may have lost bits to underflow). A sum outside [floor, Inf) equals max only for a group
   of zeros (both 0) or one with an infinity (both Inf), and those sums are exact. A sum below the
   floor is below max whenever max > 0. */
static inline int unusual_lanes(const lane_state *s, size_t count)
{
    const __m256 floor = _mm256_set1_ps((float)((double)count * SINKKIT_RESCUE_FLOOR));
    __m256 outside = _mm256_or_ps(_mm256_cmp_ps(s->sum, floor, _CMP_NGE_UQ),
                                  _mm256_cmp_ps(s->sum, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
    return _mm256_movemask_ps(_mm256_and_ps(outside, _mm256_cmp_ps(s->sum, s->max, _CMP_NEQ_UQ)));
}

/* Folds the lanes in reached, whose group max is at least the running max, by the rules of
   sinkkit_channel_fold(): a greater max wins, an equal one only with an earlier token. */
static inline void fold_reached(float *max_abs, uint64_t *argmax_token, const lane_state *s, __m256 running,
                                __m256 reached, uint64_t group_token)
{
    const __m256i base = _mm256_set1_epi64x((long long)group_token);
    __m256i offset = _mm256_castps_si256(s->offset);
    __m256i group_low = _mm256_add_epi64(base, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(offset)));
    __m256i group_high = _mm256_add_epi64(base, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(offset, 1)));
    __m256i stored_low = _mm256_loadu_si256((const __m256i *)argmax_token);
    __m256i stored_high = _mm256_loadu_si256((const __m256i *)(argmax_token + 4));

    __m256 tie = _mm256_and_ps(reached, _mm256_cmp_ps(s->max, running, _CMP_EQ_OQ));
    __m256 earlier = pack_masks(less_u64(group_low, stored_low), less_u64(group_high, stored_high));
    __m256 update = _mm256_or_ps(_mm256_andnot_ps(tie, reached), _mm256_and_ps(tie, earlier));
    if (!_mm256_movemask_ps(update))
        return;

    _mm256_storeu_ps(max_abs, _mm256_blendv_ps(running, s->max, update));
    __m256d new_low = _mm256_blendv_pd(_mm256_castsi256_pd(stored_low), _mm256_castsi256_pd(group_low),
                                       _mm256_castsi256_pd(widen_mask_low(update)));
    __m256d new_high = _mm256_blendv_pd(_mm256_castsi256_pd(stored_high), _mm256_castsi256_pd(group_high),
                                        _mm256_castsi256_pd(widen_mask_high(update)));
    _mm256_storeu_pd((double *)argmax_token, new_low);
    _mm256_storeu_pd((double *)(argmax_token + 4), new_high);
}

/* Folds the maxima of the lanes in numbers (all bits set in lanes without NaN). Ordered compares are
   false against a NaN running max, which therefore stays. Once a stream is under way, most groups
   neither beat nor tie the running max, and then nothing more is read or written. */
static inline void fold_maxima(float *max_abs, uint64_t *argmax_token, const lane_state *s, __m256 numbers,
                               uint64_t group_token)
{
    __m256 running = _mm256_loadu_ps(max_abs);
    __m256 reached = _mm256_and_ps(numbers, _mm256_cmp_ps(s->max, running, _CMP_GE_OQ));
    if (_mm256_movemask_ps(reached))
        fold_reached(max_abs, argmax_token, s, running, reached, group_token);
}

/* Folds a group with unusual lanes. NaN lanes add their NaN sum and record their first NaN; the others
   among the unusual lanes are summed again in double from the input. */
static __attribute__((noinline)) void fold_unusual_group(float *max_abs, uint64_t *argmax_token,
                                                         double *sum_squares, const lane_state *s, int unusual,
                                                         const float *group, size_t row_stride, size_t count,
                                                         uint64_t group_token)
{
    const __m256 nan_lanes = _mm256_cmp_ps(s->sum, s->sum, _CMP_UNORD_Q);
    const int nan_bits = _mm256_movemask_ps(nan_lanes);

    float sums[LANES];
    _mm256_storeu_ps(sums, s->sum);
    for (unsigned lane = 0; lane < LANES; lane++) {
        const bool rescue = (unusual & ~nan_bits) & (1 << lane);
        sum_squares[lane] += rescue ? column_sum_squares(group + lane, row_stride, count) : (double)sums[lane];
    }

    fold_maxima(max_abs, argmax_token, s, _mm256_andnot_ps(nan_lanes, _mm256_castsi256_ps(_mm256_set1_epi32(-1))),
                group_token);
    for (unsigned lane = 0; lane < LANES; lane++) {
        if (!(nan_bits & (1 << lane)))
            continue;
        uint64_t nan_token = group_token + first_nan_row(group + lane, row_stride, count);
        sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], 0.0f, SINKKIT_NO_TOKEN, nan_token);
    }
}

/* Folds one group's state of 8 channels into the caller's arrays. group is the lanes' first value in
   the group's first row, global token group_token. */
static inline void fold_group(float *max_abs, uint64_t *argmax_token, double *sum_squares, const lane_state *s,
                              const float *group, size_t row_stride, size_t count, uint64_t group_token)
{
    const int unusual = unusual_lanes(s, count);
    if (unusual) {
        fold_unusual_group(max_abs, argmax_token, sum_squares, s, unusual, group, row_stride, count, group_token);
        return;
    }

    add_sums(sum_squares, s->sum);
    fold_maxima(max_abs, argmax_token, s, _mm256_castsi256_ps(_mm256_set1_epi32(-1)), group_token);
}

static void copy_stats_in(lane_stats *local, const float *max_abs, const uint64_t *argmax_token,
                          const double *sum_squares, size_t lanes)
{
    memset(local, 0, sizeof *local);
    memcpy(local->max_abs, max_abs, lanes * sizeof *max_abs);
    memcpy(local->argmax_token, argmax_token, lanes * sizeof *argmax_token);
    memcpy(local->sum_squares, sum_squares, lanes * sizeof *sum_squares);
}

static void copy_stats_out(const lane_stats *local, float *max_abs, uint64_t *argmax_token, double *sum_squares,
                           size_t lanes)
{
    memcpy(max_abs, local->max_abs, lanes * sizeof *max_abs);
    memcpy(argmax_token, local->argmax_token, lanes * sizeof *argmax_token);
    memcpy(sum_squares, local->sum_squares, lanes * sizeof *sum_squares);
}

/* Walks STEP_CHANNELS channels down the count rows of a group and folds them. Inlined with a constant
   count for full groups. A prefetch never faults, so running past the last channel is harmless. */
static inline __attribute__((always_inline)) void process_step(float *max_abs, uint64_t *argmax_token,
                                                               double *sum_squares, const float *group,
                                                               size_t row_stride, size_t count,
                                                               uint64_t group_token)
{
    lane_state s[STEP_VECTORS];
    for (int v = 0; v < STEP_VECTORS; v++)
        s[v] = lane_state_start();

    for (size_t r = 0; r < count; r++) {
        const float *row = group + r * row_stride;
        _mm_prefetch((const char *)(row + PREFETCH_FLOATS), _MM_HINT_T0);
        _mm_prefetch((const char *)(row + PREFETCH_FLOATS + 2 * LANES), _MM_HINT_T0);
        for (int v = 0; v < STEP_VECTORS; v++)
            lane_state_add(&s[v], _mm256_loadu_ps(row + v * LANES), row_index(r));
    }

    for (int v = 0; v < STEP_VECTORS; v++)
        fold_group(max_abs + v * LANES, argmax_token + v * LANES, sum_squares + v * LANES, &s[v], group + v * LANES,
                   row_stride, count, group_token);
}

/* Walks one vector of 8 channels down the count rows of a group and folds it. */
static void process_vector(float *max_abs, uint64_t *argmax_token, double *sum_squares, const float *group,
                           size_t row_stride, size_t count, uint64_t group_token)
{
    lane_state s = lane_state_start();
    for (size_t r = 0; r < count; r++)
        lane_state_add(&s, _mm256_loadu_ps(group + r * row_stride), row_index(r));

    fold_group(max_abs, argmax_token, sum_squares, &s, group, row_stride, count, group_token);
}

/* Walks the last 1 to 7 channels of a group through copies padded with zeros: no masked loads, which
   some emulators fault on when a masked-off lane crosses into an unmapped page. Padding lanes read 0,
   never report NaN, and nothing of them is copied back. */
static void process_partial_vector(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t lanes,
                                   const float *group, size_t row_stride, size_t count, uint64_t group_token)
{
    float rows[GROUP_TOKENS][LANES];
    memset(rows, 0, sizeof rows);
    for (size_t r = 0; r < count; r++)
        memcpy(rows[r], group + r * row_stride, lanes * sizeof(float));

    lane_stats local;
    copy_stats_in(&local, max_abs, argmax_token, sum_squares, lanes);
    process_vector(local.max_abs, local.argmax_token, local.sum_squares, &rows[0][0], LANES, count, group_token);
    copy_stats_out(&local, max_abs, argmax_token, sum_squares, lanes);
}

/* Processes width channels of the count rows of a group that starts at global token group_token. */
static void process_group(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t width,
                          const float *group, size_t row_stride, size_t count, uint64_t group_token)
{
    size_t c = 0;
    if (count == GROUP_TOKENS) {
        for (; c + STEP_CHANNELS <= width; c += STEP_CHANNELS)
            process_step(max_abs + c, argmax_token + c, sum_squares + c, group + c, row_stride, GROUP_TOKENS,
                         group_token);
    } else {
        for (; c + STEP_CHANNELS <= width; c += STEP_CHANNELS)
            process_step(max_abs + c, argmax_token + c, sum_squares + c, group + c, row_stride, count, group_token);
    }

    for (; c + LANES <= width; c += LANES)
        process_vector(max_abs + c, argmax_token + c, sum_squares + c, group + c, row_stride, count, group_token);

    if (c < width)
        process_partial_vector(max_abs + c, argmax_token + c, sum_squares + c, width - c, group + c, row_stride,
                               count, group_token);
}

/* Folds 8 values of one row (global token) by the reference's rule, one lane at a time: the path for
   vectors where a value or a running max is NaN. */
static void fold_row_lanes_scalar(float *max_abs, uint64_t *argmax_token, const float *values, uint64_t token)
{
    for (size_t lane = 0; lane < LANES; lane++) {
        const float magnitude = fabsf(values[lane]);
        if (isnan(magnitude))
            sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], 0.0f, SINKKIT_NO_TOKEN, token);
        else
            sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], magnitude, token, SINKKIT_NO_TOKEN);
    }
}

/* Folds 8 values of one row (global token) straight into the statistics of 8 channels. */
static inline void fold_row_lanes(float *max_abs, uint64_t *argmax_token, double *sum_squares, const float *values,
                                  uint64_t token)
{
    /* S + a^2 with one rounding, exactly as the reference adds it. */
    __m256 x = _mm256_loadu_ps(values);
    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    _mm256_storeu_pd(sum_squares, _mm256_fmadd_pd(low, low, _mm256_loadu_pd(sum_squares)));
    _mm256_storeu_pd(sum_squares + 4, _mm256_fmadd_pd(high, high, _mm256_loadu_pd(sum_squares + 4)));

    __m256 magnitude = absolute(x);
    __m256 running = _mm256_loadu_ps(max_abs);
    if (_mm256_movemask_ps(_mm256_cmp_ps(magnitude, running, _CMP_UNORD_Q))) {
        fold_row_lanes_scalar(max_abs, argmax_token, values, token);
        return;
    }

    /* Without NaN: a greater value wins, an equal one only with an earlier token. Ties are rare in a
       real stream but happen in every lane when a row is folded twice, so the token compare, which
       reads argmax_token, runs only when there is one. */
    __m256 update = _mm256_cmp_ps(magnitude, running, _CMP_GT_OQ);
    __m256 tie = _mm256_cmp_ps(magnitude, running, _CMP_EQ_OQ);
    const __m256i token_vector = _mm256_set1_epi64x((long long)token);
    if (_mm256_movemask_ps(tie)) {
        __m256 earlier = pack_masks(less_u64(token_vector, _mm256_loadu_si256((const __m256i *)argmax_token)),
                                    less_u64(token_vector, _mm256_loadu_si256((const __m256i *)(argmax_token + 4))));
        update = _mm256_or_ps(update, _mm256_and_ps(tie, earlier));
    }

    /* Most folds change nothing, and then nothing is written. */
    if (!_mm256_movemask_ps(update))
        return;
    __m256i token_low = _mm256_loadu_si256((const __m256i *)argmax_token);
    __m256i token_high = _mm256_loadu_si256((const __m256i *)(argmax_token + 4));
    _mm256_storeu_ps(max_abs, _mm256_blendv_ps(running, magnitude, update));
    __m256d token_double = _mm256_castsi256_pd(token_vector);
    _mm256_storeu_pd((double *)argmax_token, _mm256_blendv_pd(_mm256_castsi256_pd(token_low), token_double,
                                                              _mm256_castsi256_pd(widen_mask_low(update))));
    _mm256_storeu_pd((double *)(argmax_token + 4), _mm256_blendv_pd(_mm256_castsi256_pd(token_high), token_double,
                                                                    _mm256_castsi256_pd(widen_mask_high(update))));
}

/* Folds one row straight into the caller's arrays, as the reference does: the decode case, where a
   block's state would cost more than it saves. */
static void process_row(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                        const float *row, uint64_t token)
{
    size_t c = 0;
    for (; c + LANES <= channels; c += LANES)
        fold_row_lanes(max_abs + c, argmax_token + c, sum_squares + c, row + c, token);

    if (c == channels)
        return;

    /* The padding lanes read 0 and are not copied back. */
    const size_t lanes = channels - c;
    float values[LANES] = {0};
    memcpy(values, row + c, lanes * sizeof *values);
    lane_stats local;
    copy_stats_in(&local, max_abs + c, argmax_token + c, sum_squares + c, lanes);
    fold_row_lanes(local.max_abs, local.argmax_token, local.sum_squares, values, token);
    copy_stats_out(&local, max_abs + c, argmax_token + c, sum_squares + c, lanes);
}

void sinkkit_channel_stats_update_f32_avx2(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                           size_t channels, const float *a, size_t tokens, size_t row_stride,
                                           uint64_t first_token)
{
    if (tokens == 1) {
        process_row(max_abs, argmax_token, sum_squares, channels, a, first_token);
        return;
    }

    for (size_t c = 0; c < channels; c += CHUNK_CHANNELS) {
        const size_t width = channels - c < CHUNK_CHANNELS ? channels - c : CHUNK_CHANNELS;
        for (size_t t = 0; t < tokens; t += GROUP_TOKENS) {
            const size_t count = tokens - t < GROUP_TOKENS ? tokens - t : GROUP_TOKENS;
            process_group(max_abs + c, argmax_token + c, sum_squares + c, width, a + t * row_stride + c,
                          row_stride, count, first_token + t);
        }
    }
}
