/* Portable channel statistics: groups of 8 tokens walk across the channels in loops that vectorise at baseline. */
#include <math.h>
#include <string.h>

#include "kernels.h"

enum {
    /* Tokens per group. A channel's float sum of squares over a group is a tree: each square rounds
       once, then goes through three levels of adds. The sum is then added to sum_squares in double
       (rule 4 of the numeric scheme in kernels.h). */
    GROUP_TOKENS = 8,
    /* Channels per chunk: the chunk's group state (3 KiB) stays in L1, and each of the group's rows
       contributes 1 KiB of contiguous input. */
    CHUNK_CHANNELS = 256,
    /* Floats per cache line, the step of the prefetches. */
    LINE_FLOATS = 16,
    /* Channels per check of a decode row against the running maxima. Each check ends in reductions
       and a tail, and 64-channel chunks made the decode shape about 5% slower. */
    ROW_CHUNK_CHANNELS = 256
};

/* Statistics of a chunk of channels over one group. The maxima are kept as the bits of |a|, which the
   scan of a short group compares as integers: for non-negative floats the integer order is the float
   order, and integer selects vectorise where float ones do not. There a NaN counts as the largest
   magnitude, which does no harm: its square makes the sum NaN, and fold_chunk() uses only the sum for
   such a channel. */
typedef struct group_state {
    int32_t max_bits[CHUNK_CHANNELS]; /* bits of the largest |a| */
    int32_t offset[CHUNK_CHANNELS];   /* row within the group where max was first reached */
    float sum[CHUNK_CHANNELS];        /* sum of a^2 in float */
} group_state;

static inline int32_t float_bits(float x)
{
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline int32_t magnitude_bits(float x)
{
    return float_bits(x) & INT32_MAX;
}

static inline float bits_to_float(int32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Scans width channels down the 8 rows of a full group, each channel's rows unrolled so that the
   compiler vectorises across channels. The max is a float max (`a > m ? a : m`, one maxps), and its
   row is found afterwards as the number of rows before the first one equal to it, which needs no
   selects. A NaN never compares greater, so the max is NaN only when row 0 is, but its square makes
   the sum NaN, and fold_chunk() uses only the sum for such a channel. */
static void scan_full_group(const float *group, size_t row_stride, size_t width, int32_t *restrict max_bits,
                            int32_t *restrict offset, float *restrict sum)
{
    const float *r0 = group;
    const float *r1 = r0 + row_stride;
    const float *r2 = r1 + row_stride;
    const float *r3 = r2 + row_stride;
    const float *r4 = r3 + row_stride;
    const float *r5 = r4 + row_stride;
    const float *r6 = r5 + row_stride;
    const float *r7 = r6 + row_stride;

    for (size_t j = 0; j < width; j++) {
        const float x[GROUP_TOKENS] = {r0[j], r1[j], r2[j], r3[j], r4[j], r5[j], r6[j], r7[j]};

        float magnitude[GROUP_TOKENS];
        for (int r = 0; r < GROUP_TOKENS; r++)
            magnitude[r] = fabsf(x[r]);
        float m = magnitude[0];
        for (int r = 1; r < GROUP_TOKENS; r++)
            m = magnitude[r] > m ? magnitude[r] : m;

        /* before_first is -1 until a row equal to the max is seen, then 0. */
        const int32_t m_bits = float_bits(m);
        int32_t before_first = -1;
        int32_t row = 0;
        for (int r = 0; r < GROUP_TOKENS; r++) {
            before_first &= -(int32_t)(float_bits(magnitude[r]) != m_bits);
            row -= before_first;
        }
        max_bits[j] = m_bits;
        offset[j] = row;

        const float pair01 = x[0] * x[0] + x[1] * x[1];
        const float pair23 = x[2] * x[2] + x[3] * x[3];
        const float pair45 = x[4] * x[4] + x[5] * x[5];
        const float pair67 = x[6] * x[6] + x[7] * x[7];
        sum[j] = (pair01 + pair23) + (pair45 + pair67);
    }
}

/* The same for the last group of a call, with count < 8 rows: row by row, with a sum chain of at most
   8 roundings (the square, then one add per row). */
static void scan_partial_group(const float *group, size_t row_stride, size_t count, size_t width,
                               int32_t *restrict max_bits, int32_t *restrict offset, float *restrict sum)
{
    for (size_t j = 0; j < width; j++) {
        max_bits[j] = magnitude_bits(group[j]);
        offset[j] = 0;
        sum[j] = group[j] * group[j];
    }

    for (size_t r = 1; r < count; r++) {
        const float *row = group + r * row_stride;
        for (size_t j = 0; j < width; j++) {
            const int32_t magnitude = magnitude_bits(row[j]);
            offset[j] = magnitude > max_bits[j] ? (int32_t)r : offset[j];
            max_bits[j] = magnitude > max_bits[j] ? magnitude : max_bits[j];
            sum[j] += row[j] * row[j];
        }
    }
}

/* Returns 1 when a channel's float sum cannot simply be added: NaN, +Inf although max is finite (a
   square or the sum overflowed), or below floor although max is not 0 (squares may have lost bits to
   underflow). One unsigned compare of the bits finds the sums outside [floor, Inf). Such a sum equals
   max only for a group of zeros or one with an infinity, and those sums are exact. A sum below the
   floor is below max whenever max > 0. The operators do not short-circuit, so that the loop that
   calls this vectorises. */
static inline int32_t unusual_sum(float sum, float max, float floor)
{
    uint32_t sum_bits;
    uint32_t floor_bits;
    const float infinity = INFINITY;
    uint32_t infinity_bits;
    memcpy(&sum_bits, &sum, sizeof sum_bits);
    memcpy(&floor_bits, &floor, sizeof floor_bits);
    memcpy(&infinity_bits, &infinity, sizeof infinity_bits);

    const int32_t outside = sum_bits - floor_bits >= infinity_bits - floor_bits;
    return outside & (sum != max);
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

/* Returns the row of the first NaN in a column of count rows. The caller knows that there is one. */
static size_t first_nan_row(const float *column, size_t row_stride, size_t count)
{
    for (size_t t = 0; t < count; t++) {
        if (isnan(column[t * row_stride]))
            return t;
    }
    return 0;
}

/* Folds one channel that needs more than the plain sum: an unusual sum, or a max that reaches the
   running max (or any channel that saw NaN). column is the channel's value in the group's first row. */
static void fold_channel(float *max_abs, uint64_t *argmax_token, double *sum_squares, float max, int32_t offset,
                         float sum, const float *column, size_t row_stride, size_t count, float floor,
                         uint64_t group_token)
{
    if (isnan(sum)) {
        *sum_squares += (double)sum;
        uint64_t nan_token = group_token + first_nan_row(column, row_stride, count);
        sinkkit_channel_fold(max_abs, argmax_token, 0.0f, SINKKIT_NO_TOKEN, nan_token);
        return;
    }

    if (unusual_sum(sum, max, floor))
        *sum_squares += column_sum_squares(column, row_stride, count);
    else
        *sum_squares += (double)sum;
    sinkkit_channel_fold(max_abs, argmax_token, max, group_token + (uint64_t)offset, SINKKIT_NO_TOKEN);
}

/* Returns +0 when flag is 1 and value when it is 0, by masking the bits: a select of floats would keep
   the loop from vectorising. */
static inline float zero_if(float value, int32_t flag)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    bits &= (uint32_t)flag - 1u;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Folds a chunk's group state into the caller's arrays. The first loop, which vectorises, adds the
   plain sums and marks the channels that need more; usually none does, once a stream is under way.
   A marked channel adds 0 there, which leaves sum_squares as it was, and its sum in fold_channel(). */
static void fold_chunk(float *max_abs, uint64_t *argmax_token, double *sum_squares, const group_state *s,
                       size_t width, const float *group, size_t row_stride, size_t count, uint64_t group_token)
{
    const float floor = (float)((double)count * SINKKIT_RESCUE_FLOOR);
    int32_t attention[CHUNK_CHANNELS];
    int32_t any = 0;

    for (size_t j = 0; j < width; j++) {
        /* A NaN sum is unusual, and a NaN on either side of >= compares false. */
        const float max = bits_to_float(s->max_bits[j]);
        const int32_t more = unusual_sum(s->sum[j], max, floor) | (max >= max_abs[j]);
        sum_squares[j] += (double)zero_if(s->sum[j], more);
        attention[j] = more;
        any |= more;
    }
    if (!any)
        return;

    for (size_t j = 0; j < width; j++) {
        if (attention[j])
            fold_channel(&max_abs[j], &argmax_token[j], &sum_squares[j], bits_to_float(s->max_bits[j]),
                         s->offset[j], s->sum[j], group + j, row_stride, count, floor, group_token);
    }
}

/* Asks for the next chunk of each row of a group: the rows are 8 interleaved streams, which hardware
   prefetchers follow poorly. A prefetch never faults, so running past the last channel is harmless. */
static void prefetch_next_chunk(const float *group, size_t row_stride, size_t count)
{
    for (size_t r = 0; r < count; r++) {
        const float *next = group + r * row_stride + CHUNK_CHANNELS;
        for (size_t k = 0; k < CHUNK_CHANNELS; k += LINE_FLOATS)
            __builtin_prefetch(next + k);
    }
}

/* Processes every channel of the count rows of a group that starts at global token group_token. */
static void process_group(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                          const float *group, size_t row_stride, size_t count, uint64_t group_token)
{
    group_state s;
    for (size_t c = 0; c < channels; c += CHUNK_CHANNELS) {
        const size_t width = channels - c < CHUNK_CHANNELS ? channels - c : CHUNK_CHANNELS;
        prefetch_next_chunk(group + c, row_stride, count);
        if (count == GROUP_TOKENS)
            scan_full_group(group + c, row_stride, width, s.max_bits, s.offset, s.sum);
        else
            scan_partial_group(group + c, row_stride, count, width, s.max_bits, s.offset, s.sum);
        fold_chunk(max_abs + c, argmax_token + c, sum_squares + c, &s, width, group + c, row_stride, count,
                   group_token);
    }
}

/* Folds channels [begin, end) of one row (global token) into max_abs and argmax_token by the
   reference's rule, one channel at a time. Only chunks where some channel may change take it. */
static void fold_row_maxima(float *max_abs, uint64_t *argmax_token, const float *row, size_t begin, size_t end,
                            uint64_t token)
{
    for (size_t c = begin; c < end; c++) {
        const float magnitude = fabsf(row[c]);
        const float running = max_abs[c];

        if (isnan(magnitude)) {
            if (!isnan(running) || token < argmax_token[c]) {
                max_abs[c] = NAN;
                argmax_token[c] = token;
            }
        } else if (!isnan(running) &&
                   (magnitude > running || (magnitude == running && token < argmax_token[c]))) {
            max_abs[c] = magnitude;
            argmax_token[c] = token;
        }
    }
}

/* Adds the squares of channels [begin, end) of one row (global token), each exact in double as in the
   reference. Returns non-zero when some channel there may change its max or token: |a| above the
   running max, NaN on either side (both compares fail), or a tie while some stored token of the chunk
   differs from token. A tie where every stored token equals token changes nothing, and that is every
   channel when a row is folded again, as a benchmark does. The loop has only compares, ORs and 64-bit
   XORs, so it vectorises at baseline SSE2, which has no 64-bit compare. */
static uint64_t add_squares_and_check(double *sum_squares, const float *max_abs, const uint64_t *argmax_token,
                                const float *row, size_t begin, size_t end, uint64_t token)
{
    int32_t at_most = -1;
    int32_t tie = 0;
    uint64_t other_token = 0;
    for (size_t c = begin; c < end; c++) {
        sum_squares[c] += (double)row[c] * (double)row[c];
        const float magnitude = fabsf(row[c]);
        at_most &= -(int32_t)(magnitude <= max_abs[c]);
        tie |= -(int32_t)(magnitude == max_abs[c]);
        other_token |= argmax_token[c] ^ token;
    }
    return (uint64_t)(~at_most & 1) | ((uint64_t)(tie & 1) & (uint64_t)(other_token != 0));
}

/* Folds one row (global token) straight into the caller's arrays: the decode case, where a group's
   state would cost more than it saves. Per chunk, one loop that vectorises adds the squares and tells
   whether any channel may change its max; usually none does, and only the chunks where one may take
   the rule channel by channel. On the decode shape (4096 channels, every channel tying its max as
   when a row is folded again) this ran about 2.4 times as fast as one loop with the rule (gcc 12,
   baseline flags, AMD Zen 5). It stays limited by the 2-lane double squares and 64-bit XORs of SSE2. */
static void process_row(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                        const float *row, uint64_t token)
{
    for (size_t c = 0; c < channels; c += ROW_CHUNK_CHANNELS) {
        const size_t end = channels - c < ROW_CHUNK_CHANNELS ? channels : c + ROW_CHUNK_CHANNELS;
        if (add_squares_and_check(sum_squares, max_abs, argmax_token, row, c, end, token))
            fold_row_maxima(max_abs, argmax_token, row, c, end, token);
    }
}

void sinkkit_channel_stats_update_f32_scalar(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                             size_t channels, const float *a, size_t tokens, size_t row_stride,
                                             uint64_t first_token)
{
    if (tokens == 1) {
        process_row(max_abs, argmax_token, sum_squares, channels, a, first_token);
        return;
    }

    for (size_t t = 0; t < tokens; t += GROUP_TOKENS) {
        const size_t count = tokens - t < GROUP_TOKENS ? tokens - t : GROUP_TOKENS;
        process_group(max_abs, argmax_token, sum_squares, channels, a + t * row_stride, row_stride, count,
                      first_token + t);
    }
}
