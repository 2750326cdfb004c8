/* AVX2 channel statistics: 24-channel tiles keep max, argmax and double sums in registers down a token block. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

enum {
    LANES = 8,
    /* Three vectors of state (max, offset and two double sums each) use 12 of the 16 ymm registers. */
    TILE_VECTORS = 3,
    TILE_CHANNELS = LANES * TILE_VECTORS,
    /* Rows per block: enough to spread the fold into the caller's arrays thinly, few enough that a
       tile walk stays within a few dozen pages. */
    BLOCK_TOKENS = 64,
    /* The walk down one tile prefetches the same rows of the next tile, one block walk ahead. */
    PREFETCH_FLOATS = TILE_CHANNELS
};

/* Statistics of 8 channels over the rows of one block seen so far. Lanes that see a NaN end with a
   NaN sum, and only the sum is used for them: fold_nan_lanes() finds their first NaN again. */
typedef struct lane_state {
    __m256 max;        /* largest |a| of the block, 0 before the first row */
    __m256i offset;    /* row within the block where max was first reached */
    __m256d sum_low;   /* sum of a^2 of lanes 0-3 */
    __m256d sum_high;  /* sum of a^2 of lanes 4-7 */
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
    s.offset = _mm256_setzero_si256();
    s.sum_low = _mm256_setzero_pd();
    s.sum_high = _mm256_setzero_pd();
    return s;
}

static inline __m256 absolute(__m256 x)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

/* Adds row offset: x contains its 8 values, low and high the same values as doubles. Starting from max 0
   at offset 0 and moving only on a strictly greater value gives the first row that reached the max. */
static inline void lane_state_add(lane_state *s, __m256 x, __m256d low, __m256d high, __m256i offset)
{
    __m256 magnitude = absolute(x);
    __m256 greater = _mm256_cmp_ps(magnitude, s->max, _CMP_GT_OQ);

    /* maxps returns its second operand when either is NaN, so a NaN leaves max as it was. offset is
       above every stored offset, so max(stored, greater ? offset : 0) moves exactly the greater lanes
       (two simple integer ops instead of a blend). */
    s->max = _mm256_max_ps(magnitude, s->max);
    s->offset = _mm256_max_epi32(s->offset, _mm256_and_si256(_mm256_castps_si256(greater), offset));

    /* A float squared is exact in double, so each FMA rounds once, like the reference's add. */
    s->sum_low = _mm256_fmadd_pd(low, low, s->sum_low);
    s->sum_high = _mm256_fmadd_pd(high, high, s->sum_high);
}

static inline void lane_state_add_row(lane_state *s, const float *p, __m256i offset)
{
    lane_state_add(s, _mm256_loadu_ps(p), _mm256_cvtps_pd(_mm_loadu_ps(p)), _mm256_cvtps_pd(_mm_loadu_ps(p + 4)),
                   offset);
}

/* Adds one row of the lanes in mask, which has all bits set in each active lane. The other lanes read as
   0 and no memory past them is touched. */
static inline void lane_state_add_masked(lane_state *s, const float *p, __m256i mask, __m256i offset)
{
    __m256 x = _mm256_maskload_ps(p, mask);
    lane_state_add(s, x, _mm256_cvtps_pd(_mm256_castps256_ps128(x)), _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),
                   offset);
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

/* Folds the lanes that saw NaN in this block: only their first NaN token can change the statistics. */
static void fold_nan_lanes(float *max_abs, uint64_t *argmax_token, int nan_lanes, const float *block,
                           size_t row_stride, size_t count, uint64_t block_token)
{
    for (unsigned lane = 0; lane < LANES; lane++) {
        if (!(nan_lanes & (1 << lane)))
            continue;
        uint64_t nan_token = block_token + first_nan_row(block + lane, row_stride, count);
        sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], 0.0f, SINKKIT_NO_TOKEN, nan_token);
    }
}

/* Folds one block's state of 8 channels into the caller's arrays by the rules of sinkkit_channel_fold().
   block is the lanes' first value in the block's first row, global token block_token. */
static inline void fold_lanes(float *max_abs, uint64_t *argmax_token, double *sum_squares, const lane_state *s,
                              const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    _mm256_storeu_pd(sum_squares, _mm256_add_pd(_mm256_loadu_pd(sum_squares), s->sum_low));
    _mm256_storeu_pd(sum_squares + 4, _mm256_add_pd(_mm256_loadu_pd(sum_squares + 4), s->sum_high));

    __m256 nan_lanes = pack_masks(_mm256_castpd_si256(_mm256_cmp_pd(s->sum_low, s->sum_low, _CMP_UNORD_Q)),
                                  _mm256_castpd_si256(_mm256_cmp_pd(s->sum_high, s->sum_high, _CMP_UNORD_Q)));

    __m256 running = _mm256_loadu_ps(max_abs);
    __m256i token_low = _mm256_loadu_si256((const __m256i *)argmax_token);
    __m256i token_high = _mm256_loadu_si256((const __m256i *)(argmax_token + 4));

    const __m256i base = _mm256_set1_epi64x((long long)block_token);
    __m256i block_low = _mm256_add_epi64(base, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(s->offset)));
    __m256i block_high = _mm256_add_epi64(base, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(s->offset, 1)));

    __m256 earlier = pack_masks(less_u64(block_low, token_low), less_u64(block_high, token_high));
    /* Ordered compares are false against a NaN running max, which therefore stays. */
    __m256 greater = _mm256_cmp_ps(s->max, running, _CMP_GT_OQ);
    __m256 equal = _mm256_cmp_ps(s->max, running, _CMP_EQ_OQ);
    __m256 update = _mm256_andnot_ps(nan_lanes, _mm256_or_ps(greater, _mm256_and_ps(equal, earlier)));

    _mm256_storeu_ps(max_abs, _mm256_blendv_ps(running, s->max, update));
    __m256i new_low = _mm256_castpd_si256(_mm256_blendv_pd(
        _mm256_castsi256_pd(token_low), _mm256_castsi256_pd(block_low), _mm256_castsi256_pd(widen_mask_low(update))));
    __m256i new_high = _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(token_high),
                                                            _mm256_castsi256_pd(block_high),
                                                            _mm256_castsi256_pd(widen_mask_high(update))));
    _mm256_storeu_si256((__m256i *)argmax_token, new_low);
    _mm256_storeu_si256((__m256i *)(argmax_token + 4), new_high);

    int nan_mask = _mm256_movemask_ps(nan_lanes);
    if (nan_mask)
        fold_nan_lanes(max_abs, argmax_token, nan_mask, block, row_stride, count, block_token);
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

/* Walks TILE_CHANNELS channels down the count rows of a block and folds them. */
static void process_tile(float *max_abs, uint64_t *argmax_token, double *sum_squares, const float *block,
                         size_t row_stride, size_t count, uint64_t block_token)
{
    lane_state s[TILE_VECTORS];
    for (int v = 0; v < TILE_VECTORS; v++)
        s[v] = lane_state_start();

    __m256i offset = _mm256_setzero_si256();
    const __m256i increment = _mm256_set1_epi32(1);
    for (size_t t = 0; t < count; t++) {
        const float *row = block + t * row_stride;

        /* The next tile's 96 bytes span at most 3 lines, and prefetches 48 bytes apart reach each of
           them. A prefetch never faults, so running past the last channel is harmless. */
        _mm_prefetch((const char *)(row + PREFETCH_FLOATS), _MM_HINT_T0);
        _mm_prefetch((const char *)(row + PREFETCH_FLOATS + TILE_CHANNELS / 2), _MM_HINT_T0);
        _mm_prefetch((const char *)(row + PREFETCH_FLOATS + TILE_CHANNELS - 1), _MM_HINT_T0);

        for (int v = 0; v < TILE_VECTORS; v++)
            lane_state_add_row(&s[v], row + v * LANES, offset);
        offset = _mm256_add_epi32(offset, increment);
    }

    for (int v = 0; v < TILE_VECTORS; v++)
        fold_lanes(max_abs + v * LANES, argmax_token + v * LANES, sum_squares + v * LANES, &s[v], block + v * LANES,
                   row_stride, count, block_token);
}

/* Walks one vector of 1 to 8 channels down the count rows of a block and folds it. */
static void process_vector(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t lanes,
                           const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    lane_state s = lane_state_start();

    __m256i offset = _mm256_setzero_si256();
    const __m256i increment = _mm256_set1_epi32(1);
    for (size_t t = 0; t < count; t++) {
        lane_state_add_masked(&s, block + t * row_stride, mask, offset);
        offset = _mm256_add_epi32(offset, increment);
    }

    if (lanes == LANES) {
        fold_lanes(max_abs, argmax_token, sum_squares, &s, block, row_stride, count, block_token);
        return;
    }

    /* The padding lanes read 0, so they never report NaN, and nothing of them is copied back. */
    lane_stats local;
    copy_stats_in(&local, max_abs, argmax_token, sum_squares, lanes);
    fold_lanes(local.max_abs, local.argmax_token, local.sum_squares, &s, block, row_stride, count, block_token);
    copy_stats_out(&local, max_abs, argmax_token, sum_squares, lanes);
}

/* Processes every channel of the count rows of a block that starts at global token block_token. */
static void process_block(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                          const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    size_t c = 0;
    for (; c + TILE_CHANNELS <= channels; c += TILE_CHANNELS)
        process_tile(max_abs + c, argmax_token + c, sum_squares + c, block + c, row_stride, count, block_token);

    for (; c < channels; c += LANES) {
        const size_t lanes = channels - c < LANES ? channels - c : LANES;
        process_vector(max_abs + c, argmax_token + c, sum_squares + c, lanes, block + c, row_stride, count,
                       block_token);
    }
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

    for (size_t t = 0; t < tokens; t += BLOCK_TOKENS) {
        const size_t count = tokens - t < BLOCK_TOKENS ? tokens - t : BLOCK_TOKENS;
        process_block(max_abs, argmax_token, sum_squares, channels, a + t * row_stride, row_stride, count,
                      first_token + t);
    }
}
