/* AVX-512 channel statistics: groups of 8 tokens walk across the channels, their state in registers. */
#include <immintrin.h>
#include <math.h>

#include "kernels.h"

enum {
    LANES = 16,
    /* Tokens per group. A lane's float sum of squares is a chain of at most 8 fused multiply-adds, so
       each square goes through at most 8 roundings. The sum is then added to sum_squares in double
       (rule 4 of the numeric scheme in kernels.h). */
    GROUP_TOKENS = 8,
    /* Vectors per step: each row of a group contributes 256 contiguous bytes (four cache lines). */
    STEP_VECTORS = 4,
    STEP_CHANNELS = LANES * STEP_VECTORS,
    /* Channels per pass down the tokens. Every group reads max_abs and updates sum_squares of all of
       them, and 16384 channels of those two arrays (192 KiB) stay in L2. A multiple of STEP_CHANNELS. */
    CHUNK_CHANNELS = 16384,
    /* A group's rows are 8 interleaved streams. With the work of this kernel between the loads, the
       hardware prefetchers of the AMD Zen 5 this was tuned on did not keep up with them. In one run on
       512 tokens x 14336 channels (L3-resident), the kernel took 2.0 times the read time without software
       prefetch, 1.8 with each row prefetched 1 KiB ahead, and 1.6 at 2 KiB or 3 KiB ahead.
       Prefetching 4 KiB ahead, or into L2 only (_MM_HINT_T1), was slower. */
    PREFETCH_FLOATS = 512
};

/* Statistics of 16 channels over the rows of one group seen so far. A lane whose rows contain a NaN
   ends with a NaN sum (the terms are squares, so Inf never meets -Inf), and only the sum is used for
   it: fold_nan_lanes() finds its first NaN again. The row where a lane's max was first reached is
   not tracked: it matters only when the max reaches the running max, which is rare once a stream is
   under way, and first_rows_at() finds it again then. Tracking it cost a compare and a blend per row
   and vector. Dropping it, with one branch per step instead of two per vector (fold_step()), took
   512 x 14336 tokens from about 1.9 to 1.6 times the read time and 4096 x 11008 from 1.35 to 1.25. */
typedef struct lane_state {
    __m512 max;       /* largest |a| of the group, 0 before the first row */
    __m512 sum;       /* sum of a^2 in float */
} lane_state;

static inline lane_state lane_state_start(void)
{
    lane_state s;
    s.max = _mm512_setzero_ps();
    s.sum = _mm512_setzero_ps();
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

/* Unsigned a < b of 16 lanes held as two vectors of 8 tokens each. */
static inline __mmask16 tokens_less(__m512i a_low, __m512i a_high, __m512i b_low, __m512i b_high)
{
    return _mm512_kunpackb(_mm512_cmplt_epu64_mask(a_high, b_high), _mm512_cmplt_epu64_mask(a_low, b_low));
}

/* Adds one row of a group. */
static inline void lane_state_add(lane_state *s, __m512 x)
{
    /* Immediate 0x0B selects the operand of larger magnitude and clears its sign: max(|x|, max). */
    s->max = _mm512_range_ps(x, s->max, 0x0B);
    s->sum = _mm512_fmadd_ps(x, x, s->sum);
}

/* Returns, per lane in mask, the first of count rows whose |a| equals max. Lanes with no match (NaN
   lanes and lanes outside mask) get 0. Walking the rows backwards leaves the first match. */
static inline __m512i first_rows_at(const float *column, size_t row_stride, size_t count, __m512 max,
                                    __mmask16 mask)
{
    __m512i offset = _mm512_setzero_si512();
    for (size_t r = count; r-- > 0;) {
        __m512 magnitude = _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, column + r * row_stride));
        __mmask16 equal = _mm512_cmp_ps_mask(magnitude, max, _CMP_EQ_OQ);
        offset = _mm512_mask_mov_epi32(offset, equal, _mm512_set1_epi32((int)r));
    }
    return offset;
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

/* Adds the lanes in mask of a group's float sums to sum_squares. */
static inline void add_sums(double *sum_squares, __m512 sum, __mmask16 mask)
{
    const __mmask8 mask_low = (__mmask8)mask;
    const __mmask8 mask_high = (__mmask8)(mask >> 8);
    __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(sum));
    __m512d high = _mm512_cvtps_pd(_mm512_extractf32x8_ps(sum, 1));
    store_doubles(sum_squares, mask_low, _mm512_add_pd(load_doubles(sum_squares, mask_low), low));
    store_doubles(sum_squares + 8, mask_high, _mm512_add_pd(load_doubles(sum_squares + 8, mask_high), high));
}

/* Returns the lanes whose float sum cannot simply be added: NaN, +Inf although max is finite (a square
   or the sum overflowed), or below count * SINKKIT_RESCUE_FLOOR although max is not 0 (squares may
   have lost bits to underflow). One unsigned compare of the bits finds the sums outside [floor, Inf).
   Such a sum equals max only for a group of zeros (both 0) or one with an infinity (both Inf), and
   those sums are exact. A sum below the floor is below max whenever max > 0. */
static inline __mmask16 unusual_lanes(const lane_state *s, size_t count, __mmask16 mask)
{
    const __m512i floor = _mm512_castps_si512(_mm512_set1_ps((float)((double)count * SINKKIT_RESCUE_FLOOR)));
    const __m512i span = _mm512_sub_epi32(_mm512_castps_si512(_mm512_set1_ps(INFINITY)), floor);
    __mmask16 outside = _mm512_mask_cmp_epu32_mask(mask, _mm512_sub_epi32(_mm512_castps_si512(s->sum), floor),
                                                   span, _MM_CMPINT_NLT);
    return _mm512_mask_cmp_ps_mask(outside, s->sum, s->max, _CMP_NEQ_UQ);
}

/* Folds the lanes in reached, whose group max is at least the running max, by the rules of
   sinkkit_channel_fold(): a greater max wins, an equal one only with an earlier token. group is the
   lanes' first value in the group's first row, global token group_token. */
static void fold_reached(float *max_abs, uint64_t *argmax_token, const lane_state *s, __m512 running,
                         __mmask16 reached, __mmask16 mask, const float *group, size_t row_stride, size_t count,
                         uint64_t group_token)
{
    const __m512i offset = first_rows_at(group, row_stride, count, s->max, mask);
    const __m512i base = _mm512_set1_epi64((long long)group_token);
    __m512i group_low = _mm512_add_epi64(base, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(offset)));
    __m512i group_high = _mm512_add_epi64(base, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(offset, 1)));

    __mmask16 tie = _mm512_mask_cmp_ps_mask(reached, s->max, running, _CMP_EQ_OQ);
    __mmask16 update = reached & (__mmask16)~tie;
    if (tie) {
        __m512i stored_low = load_tokens(argmax_token, (__mmask8)mask);
        __m512i stored_high = load_tokens(argmax_token + 8, (__mmask8)(mask >> 8));
        update |= tie & tokens_less(group_low, group_high, stored_low, stored_high);
    }
    store_updates(max_abs, argmax_token, update, s->max, group_low, group_high);
}

/* Folds the maxima of the lanes in numbers (lanes without NaN). Ordered compares are false against a
   NaN running max, which therefore stays. Once a stream is under way, most groups neither beat nor
   tie the running max, and then nothing more is read or written. */
static inline void fold_maxima(float *max_abs, uint64_t *argmax_token, const lane_state *s, __mmask16 numbers,
                               __mmask16 mask, const float *group, size_t row_stride, size_t count,
                               uint64_t group_token)
{
    __m512 running = load_floats(max_abs, mask);
    __mmask16 reached = _mm512_mask_cmp_ps_mask(numbers, s->max, running, _CMP_GE_OQ);
    if (reached)
        fold_reached(max_abs, argmax_token, s, running, reached, mask, group, row_stride, count, group_token);
}

/* Folds the lanes that saw NaN in this group: only their first NaN token can change the statistics. */
static void fold_nan_lanes(float *max_abs, uint64_t *argmax_token, __mmask16 nan_lanes, const float *group,
                           size_t row_stride, size_t count, uint64_t group_token)
{
    for (unsigned lane = 0; lane < LANES; lane++) {
        if (!(nan_lanes & (1u << lane)))
            continue;
        uint64_t nan_token = group_token + first_nan_row(group + lane, row_stride, count);
        sinkkit_channel_fold(&max_abs[lane], &argmax_token[lane], 0.0f, SINKKIT_NO_TOKEN, nan_token);
    }
}

/* Folds a group with unusual lanes. NaN lanes add their NaN sum and record their first NaN; the others
   among the unusual lanes are summed again in double from the input. */
static __attribute__((noinline)) void fold_unusual_group(float *max_abs, uint64_t *argmax_token,
                                                         double *sum_squares, const lane_state *s,
                                                         __mmask16 unusual, __mmask16 mask, const float *group,
                                                         size_t row_stride, size_t count, uint64_t group_token)
{
    const __mmask16 nan_lanes = _mm512_mask_cmp_ps_mask(mask, s->sum, s->sum, _CMP_UNORD_Q);
    const __mmask16 rescue = unusual & (__mmask16)~nan_lanes;

    add_sums(sum_squares, s->sum, mask & (__mmask16)~rescue);
    for (unsigned lane = 0; lane < LANES; lane++) {
        if (rescue & (1u << lane))
            sum_squares[lane] += column_sum_squares(group + lane, row_stride, count);
    }

    fold_maxima(max_abs, argmax_token, s, mask & (__mmask16)~nan_lanes, mask, group, row_stride, count, group_token);
    if (nan_lanes)
        fold_nan_lanes(max_abs, argmax_token, nan_lanes, group, row_stride, count, group_token);
}

/* Folds one group's state of the lanes in mask into the caller's arrays. group is the lanes' first
   value in the group's first row, global token group_token. */
static inline void fold_group(float *max_abs, uint64_t *argmax_token, double *sum_squares, const lane_state *s,
                              __mmask16 mask, const float *group, size_t row_stride, size_t count,
                              uint64_t group_token)
{
    const __mmask16 unusual = unusual_lanes(s, count, mask);
    if (unusual) {
        fold_unusual_group(max_abs, argmax_token, sum_squares, s, unusual, mask, group, row_stride, count,
                           group_token);
        return;
    }

    add_sums(sum_squares, s->sum, mask);
    fold_maxima(max_abs, argmax_token, s, mask, mask, group, row_stride, count, group_token);
}

/* Folds the state of a step's vectors when some vector has unusual lanes. Kept out of line because
   it is rare. */
static __attribute__((noinline)) void fold_step_unusual(float *max_abs, uint64_t *argmax_token,
                                                        double *sum_squares, const lane_state *s,
                                                        const float *group, size_t row_stride, size_t count,
                                                        uint64_t group_token)
{
    for (int v = 0; v < STEP_VECTORS; v++)
        fold_group(max_abs + v * LANES, argmax_token + v * LANES, sum_squares + v * LANES, &s[v], ALL_LANES,
                   group + v * LANES, row_stride, count, group_token);
}

/* Folds the maxima of a step's vectors when some lane reached its running max. Kept out of line so
   that the usual path keeps its registers. */
static __attribute__((noinline)) void fold_step_reached(float *max_abs, uint64_t *argmax_token,
                                                        const lane_state *s, const __m512 *running,
                                                        const __mmask16 *reached, const float *group,
                                                        size_t row_stride, size_t count, uint64_t group_token)
{
    for (int v = 0; v < STEP_VECTORS; v++) {
        if (reached[v])
            fold_reached(max_abs + v * LANES, argmax_token + v * LANES, &s[v], running[v], reached[v], ALL_LANES,
                         group + v * LANES, row_stride, count, group_token);
    }
}

/* Folds the state of a step's vectors. The vectors share one test for unusual lanes and one for lanes
   that reach their running max, so that the usual path has two branches per step, not eight. */
static inline __attribute__((always_inline)) void fold_step(float *max_abs, uint64_t *argmax_token,
                                                            double *sum_squares, const lane_state *s,
                                                            const float *group, size_t row_stride, size_t count,
                                                            uint64_t group_token)
{
    __mmask16 unusual = 0;
    for (int v = 0; v < STEP_VECTORS; v++)
        unusual |= unusual_lanes(&s[v], count, ALL_LANES);
    if (unusual) {
        fold_step_unusual(max_abs, argmax_token, sum_squares, s, group, row_stride, count, group_token);
        return;
    }

    __m512 running[STEP_VECTORS];
    __mmask16 reached[STEP_VECTORS];
    __mmask16 any_reached = 0;
    for (int v = 0; v < STEP_VECTORS; v++) {
        add_sums(sum_squares + v * LANES, s[v].sum, ALL_LANES);
        running[v] = _mm512_loadu_ps(max_abs + v * LANES);
        reached[v] = _mm512_cmp_ps_mask(s[v].max, running[v], _CMP_GE_OQ);
        any_reached |= reached[v];
    }
    if (any_reached)
        fold_step_reached(max_abs, argmax_token, s, running, reached, group, row_stride, count, group_token);
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
        for (int v = 0; v < STEP_VECTORS; v++)
            _mm_prefetch((const char *)(row + PREFETCH_FLOATS + v * LANES), _MM_HINT_T0);
        for (int v = 0; v < STEP_VECTORS; v++)
            lane_state_add(&s[v], _mm512_loadu_ps(row + v * LANES));
    }

    fold_step(max_abs, argmax_token, sum_squares, s, group, row_stride, count, group_token);
}

/* Walks one vector of channels (the lanes in mask) down the count rows of a group and folds it. The
   other lanes read as 0 and no memory past them is touched. */
static void process_vector(float *max_abs, uint64_t *argmax_token, double *sum_squares, __mmask16 mask,
                           const float *group, size_t row_stride, size_t count, uint64_t group_token)
{
    lane_state s = lane_state_start();

    for (size_t r = 0; r < count; r++)
        lane_state_add(&s, _mm512_maskz_loadu_ps(mask, group + r * row_stride));

    fold_group(max_abs, argmax_token, sum_squares, &s, mask, group, row_stride, count, group_token);
}

static __mmask16 lane_mask(size_t channels_left)
{
    return channels_left >= LANES ? (__mmask16)ALL_LANES : (__mmask16)((1u << channels_left) - 1u);
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

    for (; c < width; c += LANES)
        process_vector(max_abs + c, argmax_token + c, sum_squares + c, lane_mask(width - c), group + c, row_stride,
                       count, group_token);
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

    for (size_t c = 0; c < channels; c += CHUNK_CHANNELS) {
        const size_t width = channels - c < CHUNK_CHANNELS ? channels - c : CHUNK_CHANNELS;
        for (size_t t = 0; t < tokens; t += GROUP_TOKENS) {
            const size_t count = tokens - t < GROUP_TOKENS ? tokens - t : GROUP_TOKENS;
            process_group(max_abs + c, argmax_token + c, sum_squares + c, width, a + t * row_stride + c,
                          row_stride, count, first_token + t);
        }
    }
}
