/* AVX-512 channel statistics: 64-channel tiles keep max, argmax and double sums in registers down a token block. */
#include <immintrin.h>
#include <math.h>

#include "kernels.h"

enum {
    LANES = 16,
    /* Four vectors of state (max, offset and two double sums each) use 16 of the 32 zmm registers. */
    TILE_VECTORS = 4,
    TILE_CHANNELS = LANES * TILE_VECTORS,
    /* Rows per block: enough to spread the fold into the caller's arrays thinly, few enough that a
       tile walk stays within a few dozen pages. */
    BLOCK_TOKENS = 64,
    /* The walk down one tile prefetches the same rows of the next tile, one block walk ahead. */
    PREFETCH_FLOATS = TILE_CHANNELS
};

/* Statistics of 16 channels over the rows of one block seen so far. Lanes that see a NaN end with a
   NaN sum, and only the sum is used for them: fold_nan_lanes() finds their first NaN again. */
typedef struct lane_state {
    __m512 max;        /* largest |a| of the block, 0 before the first row */
    __m512i offset;    /* row within the block where max was first reached */
    __m512d sum_low;   /* sum of a^2 of lanes 0-7 */
    __m512d sum_high;  /* sum of a^2 of lanes 8-15 */
} lane_state;

static inline lane_state lane_state_start(void)
{
    lane_state s;
    s.max = _mm512_setzero_ps();
    s.offset = _mm512_setzero_si512();
    s.sum_low = _mm512_setzero_pd();
    s.sum_high = _mm512_setzero_pd();
    return s;
}

/* Loads and stores of the lanes in mask. On the AMD Zen 5 this was tuned on, masked loads and stores made
   a 4096-channel decode row about 25% slower than plain ones, so full vectors use plain ones (the mask
   is a constant after inlining). */
enum { ALL_LANES = 0xFFFF, ALL_LOW = 0xFF };

static inline __m512 load_floats(const float *p, __mmask16 mask)
{
    return mask == ALL_LANES ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p);
}

static inline __m512d load_doubles(const double *p, __mmask8 mask)
{
    return mask == ALL_LOW ? _mm512_loadu_pd(p) : _mm512_maskz_loadu_pd(mask, p);
}

static inline void store_doubles(double *p, __mmask8 mask, __m512d v)
{
    if (mask == ALL_LOW)
        _mm512_storeu_pd(p, v);
    else
        _mm512_mask_storeu_pd(p, mask, v);
}

static inline __m512i load_tokens(const uint64_t *p, __mmask8 mask)
{
    return mask == ALL_LOW ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi64(mask, p);
}

/* Writes value and token to the lanes in update only: most folds change nothing. */
static inline void store_updates(float *max_abs, uint64_t *argmax_token, __mmask16 update, __m512 value,
                                 __m512i token_low, __m512i token_high)
{
    if (!update)
        return;
    _mm512_mask_storeu_ps(max_abs, update, value);
    _mm512_mask_storeu_epi64(argmax_token, (__mmask8)update, token_low);
    _mm512_mask_storeu_epi64(argmax_token + 8, (__mmask8)(update >> 8), token_high);
}

/* Adds one row: x contains its 16 values, low and high the same values as doubles. Starting from max 0 at
   offset 0 and moving only when the maximum grows gives the first row that reached it. */
static inline void lane_state_add(lane_state *s, __m512 x, __m512d low, __m512d high, __m512i offset)
{
    /* Immediate 0x0B selects the operand of larger magnitude and clears its sign: max(|x|, max). */
    __m512 grown = _mm512_range_ps(x, s->max, 0x0B);
    __mmask16 changed = _mm512_cmp_ps_mask(grown, s->max, _CMP_NEQ_UQ);
    s->max = grown;
    s->offset = _mm512_mask_mov_epi32(s->offset, changed, offset);

    /* A float squared is exact in double, so each FMA rounds once, like the reference's add. */
    s->sum_low = _mm512_fmadd_pd(low, low, s->sum_low);
    s->sum_high = _mm512_fmadd_pd(high, high, s->sum_high);
}

static inline void lane_state_add_row(lane_state *s, const float *p, __m512i offset)
{
    lane_state_add(s, _mm512_loadu_ps(p), _mm512_cvtps_pd(_mm256_loadu_ps(p)),
                   _mm512_cvtps_pd(_mm256_loadu_ps(p + 8)), offset);
}

/* Adds one row of the lanes in mask. The other lanes read as 0 and no memory past them is touched. */
static inline void lane_state_add_masked(lane_state *s, const float *p, __mmask16 mask, __m512i offset)
{
    __m512 x = _mm512_maskz_loadu_ps(mask, p);
    lane_state_add(s, x, _mm512_cvtps_pd(_mm512_castps512_ps256(x)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)),
                   offset);
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
static void fold_nan_lanes(float *max_abs, uint64_t *argmax_token, __mmask16 nan_lanes, const float *block,
                           size_t row_stride, size_t count, uint64_t block_token)
{
    for (unsigned lane = 0; lane < LANES; lane++) {
        if (!(nan_lanes & (1u << lane)))
            continue;
        uint64_t nan_token = block_token + first_nan_row(block + lane, row_stride, count);
        sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], 0.0f, SINKKIT_NO_TOKEN, nan_token);
    }
}

/* Folds one block's state of the lanes in mask into the caller's arrays by the rules of
   sinkkit_channel_fold(). block is the lanes' first value in the block's first row, global token
   block_token. */
static inline void fold_lanes(float *max_abs, uint64_t *argmax_token, double *sum_squares, const lane_state *s,
                              __mmask16 mask, const float *block, size_t row_stride, size_t count,
                              uint64_t block_token)
{
    const __mmask8 mask_low = (__mmask8)mask;
    const __mmask8 mask_high = (__mmask8)(mask >> 8);

    store_doubles(sum_squares, mask_low, _mm512_add_pd(load_doubles(sum_squares, mask_low), s->sum_low));
    store_doubles(sum_squares + 8, mask_high, _mm512_add_pd(load_doubles(sum_squares + 8, mask_high), s->sum_high));

    const __mmask16 nan_lanes = _mm512_kunpackb(_mm512_cmp_pd_mask(s->sum_high, s->sum_high, _CMP_UNORD_Q),
                                                _mm512_cmp_pd_mask(s->sum_low, s->sum_low, _CMP_UNORD_Q)) &
                                mask;

    __m512 running = load_floats(max_abs, mask);
    __m512i token_low = load_tokens(argmax_token, mask_low);
    __m512i token_high = load_tokens(argmax_token + 8, mask_high);

    const __m512i base = _mm512_set1_epi64((long long)block_token);
    __m512i block_low = _mm512_add_epi64(base, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(s->offset)));
    __m512i block_high = _mm512_add_epi64(base, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(s->offset, 1)));

    __mmask16 earlier = _mm512_kunpackb(_mm512_cmplt_epu64_mask(block_high, token_high),
                                        _mm512_cmplt_epu64_mask(block_low, token_low));
    /* Ordered compares are false against a NaN running max, which therefore stays. */
    __mmask16 greater = _mm512_cmp_ps_mask(s->max, running, _CMP_GT_OQ);
    __mmask16 equal = _mm512_cmp_ps_mask(s->max, running, _CMP_EQ_OQ);
    __mmask16 update = (greater | (equal & earlier)) & mask & (__mmask16)~nan_lanes;
    store_updates(max_abs, argmax_token, update, s->max, block_low, block_high);

    if (nan_lanes)
        fold_nan_lanes(max_abs, argmax_token, nan_lanes, block, row_stride, count, block_token);
}

/* Walks TILE_CHANNELS channels down the count rows of a block and folds them. */
static void process_tile(float *max_abs, uint64_t *argmax_token, double *sum_squares, const float *block,
                         size_t row_stride, size_t count, uint64_t block_token)
{
    lane_state s[TILE_VECTORS];
    for (int v = 0; v < TILE_VECTORS; v++)
        s[v] = lane_state_start();

    __m512i offset = _mm512_setzero_si512();
    const __m512i increment = _mm512_set1_epi32(1);
    for (size_t t = 0; t < count; t++) {
        const float *row = block + t * row_stride;

        /* A prefetch never faults, so running past the last channel is harmless. */
        for (int v = 0; v < TILE_VECTORS; v++)
            _mm_prefetch((const char *)(row + PREFETCH_FLOATS + v * LANES), _MM_HINT_T0);

        for (int v = 0; v < TILE_VECTORS; v++)
            lane_state_add_row(&s[v], row + v * LANES, offset);
        offset = _mm512_add_epi32(offset, increment);
    }

    for (int v = 0; v < TILE_VECTORS; v++)
        fold_lanes(max_abs + v * LANES, argmax_token + v * LANES, sum_squares + v * LANES, &s[v], ALL_LANES,
                   block + v * LANES, row_stride, count, block_token);
}

/* Walks one vector of channels (the lanes in mask) down the count rows of a block and folds it. */
static void process_vector(float *max_abs, uint64_t *argmax_token, double *sum_squares, __mmask16 mask,
                           const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    lane_state s = lane_state_start();

    __m512i offset = _mm512_setzero_si512();
    const __m512i increment = _mm512_set1_epi32(1);
    for (size_t t = 0; t < count; t++) {
        lane_state_add_masked(&s, block + t * row_stride, mask, offset);
        offset = _mm512_add_epi32(offset, increment);
    }

    fold_lanes(max_abs, argmax_token, sum_squares, &s, mask, block, row_stride, count, block_token);
}

static __mmask16 lane_mask(size_t channels_left)
{
    return channels_left >= LANES ? (__mmask16)ALL_LANES : (__mmask16)((1u << channels_left) - 1u);
}

/* Processes every channel of the count rows of a block that starts at global token block_token. */
static void process_block(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                          const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    size_t c = 0;
    for (; c + TILE_CHANNELS <= channels; c += TILE_CHANNELS)
        process_tile(max_abs + c, argmax_token + c, sum_squares + c, block + c, row_stride, count, block_token);

    for (; c < channels; c += LANES)
        process_vector(max_abs + c, argmax_token + c, sum_squares + c, lane_mask(channels - c), block + c,
                       row_stride, count, block_token);
}

/* Folds the lanes in mask of one row (global token) by the reference's rule, one lane at a time: the
   path for vectors where a value or a running max is NaN. */
static void fold_row_lanes_scalar(float *max_abs, uint64_t *argmax_token, const float *values, __mmask16 mask,
                                  uint64_t token)
{
    for (unsigned lane = 0; lane < LANES; lane++) {
        if (!(mask & (1u << lane)))
            continue;
        const float magnitude = fabsf(values[lane]);
        if (isnan(magnitude))
            sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], 0.0f, SINKKIT_NO_TOKEN, token);
        else
            sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], magnitude, token, SINKKIT_NO_TOKEN);
    }
}

/* Folds the lanes in mask of one row (global token) straight into the caller's arrays. */
static inline void fold_row_lanes(float *max_abs, uint64_t *argmax_token, double *sum_squares, const float *values,
                                  __mmask16 mask, uint64_t token)
{
    const __mmask8 mask_low = (__mmask8)mask;
    const __mmask8 mask_high = (__mmask8)(mask >> 8);

    /* S + a^2 with one rounding, exactly as the reference adds it. */
    __m512 x = load_floats(values, mask);
    __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    __m512d high = _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1));
    store_doubles(sum_squares, mask_low, _mm512_fmadd_pd(low, low, load_doubles(sum_squares, mask_low)));
    store_doubles(sum_squares + 8, mask_high, _mm512_fmadd_pd(high, high, load_doubles(sum_squares + 8, mask_high)));

    __m512 magnitude = _mm512_abs_ps(x);
    __m512 running = load_floats(max_abs, mask);
    if (_mm512_mask_cmp_ps_mask(mask, magnitude, running, _CMP_UNORD_Q)) {
        fold_row_lanes_scalar(max_abs, argmax_token, values, mask, token);
        return;
    }

    /* Without NaN: a greater value wins, an equal one only with an earlier token. Ties are rare in a
       real stream but happen in every lane when a row is folded twice, so the token compare, which
       reads argmax_token, runs only when there is one. */
    __mmask16 update = _mm512_mask_cmp_ps_mask(mask, magnitude, running, _CMP_GT_OQ);
    __mmask16 tie = _mm512_mask_cmp_ps_mask(mask, magnitude, running, _CMP_EQ_OQ);
    const __m512i token_vector = _mm512_set1_epi64((long long)token);
    if (tie) {
        __m512i stored_low = load_tokens(argmax_token, mask_low);
        __m512i stored_high = load_tokens(argmax_token + 8, mask_high);
        __mmask16 earlier = _mm512_kunpackb(_mm512_cmplt_epu64_mask(token_vector, stored_high),
                                            _mm512_cmplt_epu64_mask(token_vector, stored_low));
        update |= tie & earlier;
    }
    store_updates(max_abs, argmax_token, update, magnitude, token_vector, token_vector);
}

/* Folds one row straight into the caller's arrays: the decode case, where a block's state would cost
   more than it saves. */
static void process_row(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                        const float *row, uint64_t token)
{
    size_t c = 0;
    for (; c + LANES <= channels; c += LANES)
        fold_row_lanes(max_abs + c, argmax_token + c, sum_squares + c, row + c, ALL_LANES, token);
    if (c < channels)
        fold_row_lanes(max_abs + c, argmax_token + c, sum_squares + c, row + c, lane_mask(channels - c), token);
}

void sinkkit_channel_stats_update_f32_avx512(float *max_abs, uint64_t *argmax_token, double *sum_squares,
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
