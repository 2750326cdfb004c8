/* Portable channel statistics: channel tiles in small arrays that the compiler can vectorise at baseline flags. */
#include <math.h>
#include <string.h>

#include "kernels.h"

enum {
    /* 64 channels: the state (1 KiB) stays in L1 and each row contributes 256 contiguous bytes. */
    TILE_CHANNELS = 64,
    /* Rows per block: enough to spread the fold into the caller's arrays thinly, few enough that a
       tile walk stays within a few dozen pages. */
    BLOCK_TOKENS = 64
};

/* Statistics of up to TILE_CHANNELS channels over the rows of one block. The magnitudes are kept as the
   bits of |a|: for non-negative floats the integer order is the float order, and integer selects
   vectorise where float ones may not. A NaN lane ends with a NaN sum, and only the sum is used for it:
   fold_tile() finds its first NaN again. */
typedef struct tile_state {
    int32_t max_bits[TILE_CHANNELS];  /* bits of the largest |a| of the block */
    int32_t offset[TILE_CHANNELS];    /* row within the block where that max was first reached */
    double sum[TILE_CHANNELS];        /* sum of a^2 */
} tile_state;

static inline int32_t magnitude_bits(float x)
{
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits & INT32_MAX;
}

/* Walks width channels of a block down count rows. Starting from max 0 at offset 0 and moving only on a
   strictly greater value gives the first row that reached the max. The restrict qualifiers let the
   compiler keep the two int32_t arrays apart and vectorise the loop over channels. */
static void scan_tile(const float *block, size_t row_stride, size_t count, size_t width,
                      int32_t *restrict max_bits, int32_t *restrict offset, double *restrict sum)
{
    for (size_t j = 0; j < width; j++) {
        max_bits[j] = 0;
        offset[j] = 0;
        sum[j] = 0.0;
    }

    for (size_t t = 0; t < count; t++) {
        const float *row = block + t * row_stride;

        /* Fetch this row's part of the next tile one tile walk ahead, one prefetch per 64 bytes, because
           walking a column of rows defeats the hardware's sequential prefetch. Prefetches never fault. */
        for (size_t ahead = 0; ahead < TILE_CHANNELS; ahead += 16)
            __builtin_prefetch(row + TILE_CHANNELS + ahead);

        for (size_t j = 0; j < width; j++) {
            int32_t magnitude = magnitude_bits(row[j]);
            int32_t greater = magnitude > max_bits[j];
            max_bits[j] = greater ? magnitude : max_bits[j];
            offset[j] = greater ? (int32_t)t : offset[j];

            /* A float squared is exact in double, so each add rounds once, as in the reference. */
            sum[j] += (double)row[j] * (double)row[j];
        }
    }
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

/* Folds a block's tile state into the caller's arrays. block is the tile's first value in the block's
   first row, global token block_token. */
static void fold_tile(float *max_abs, uint64_t *argmax_token, double *sum_squares, const tile_state *s,
                      size_t width, const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    for (size_t j = 0; j < width; j++) {
        sum_squares[j] += s->sum[j];

        if (isnan(s->sum[j])) {
            uint64_t nan_token = block_token + first_nan_row(block + j, row_stride, count);
            sinkkit_channel_fold(&max_abs[j], &argmax_token[j], 0.0f, SINKKIT_NO_TOKEN, nan_token);
            continue;
        }

        float block_max;
        memcpy(&block_max, &s->max_bits[j], sizeof block_max);
        sinkkit_channel_fold(&max_abs[j], &argmax_token[j], block_max, block_token + (uint64_t)s->offset[j],
                             SINKKIT_NO_TOKEN);
    }
}

/* Processes every channel of the count rows of a block that starts at global token block_token. */
static void process_block(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                          const float *block, size_t row_stride, size_t count, uint64_t block_token)
{
    tile_state s;
    for (size_t c = 0; c < channels; c += TILE_CHANNELS) {
        const size_t width = channels - c < TILE_CHANNELS ? channels - c : TILE_CHANNELS;
        scan_tile(block + c, row_stride, count, width, s.max_bits, s.offset, s.sum);
        fold_tile(max_abs + c, argmax_token + c, sum_squares + c, &s, width, block + c, row_stride, count,
                  block_token);
    }
}

/* Folds one row (global token) straight into the caller's arrays: the decode case, where a block's state
   would cost more than it saves. */
static void process_row(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels,
                        const float *row, uint64_t token)
{
    for (size_t c = 0; c < channels; c++) {
        sum_squares[c] += (double)row[c] * (double)row[c];
        const float magnitude = fabsf(row[c]);
        const float running = max_abs[c];

        /* Usually nothing changes: the value is below the running max, or ties it at a later token.
           NaN fails both compares and takes the full rule. */
        if (magnitude < running || (magnitude == running && token >= argmax_token[c]))
            continue;

        if (isnan(magnitude)) {
            if (!isnan(running) || token < argmax_token[c]) {
                max_abs[c] = NAN;
                argmax_token[c] = token;
            }
        } else if (!isnan(running) && (magnitude > running || token < argmax_token[c])) {
            max_abs[c] = magnitude;
            argmax_token[c] = token;
        }
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

    for (size_t t = 0; t < tokens; t += BLOCK_TOKENS) {
        const size_t count = tokens - t < BLOCK_TOKENS ? tokens - t : BLOCK_TOKENS;
        process_block(max_abs, argmax_token, sum_squares, channels, a + t * row_stride, row_stride, count,
                      first_token + t);
    }
}
