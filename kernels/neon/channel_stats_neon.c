/* Per-channel statistics for AArch64 Advanced SIMD (NEON), following rule 4 of the numeric scheme in kernels.h. */
#include <arm_neon.h>
#include <math.h>

#include "kernels.h"

/* Channels per wide tile: four 4-lane vectors, one 64-byte cache line of each row. */
#define WIDE_TILE_VECTORS 4

/* Tokens streamed down one tile before its maxima are folded into the caller's arrays. A block-relative
   token index then fits in 32 bits, and the block's rows stay in cache from one tile to the next. */
#define TOKEN_BLOCK 256

/* No NaN seen yet in a lane: larger than any block-relative token index. */
#define NO_NAN UINT32_MAX

/* Running state of up to four 4-lane vectors of channels over one block of tokens. */
typedef struct tile_state {
    float32x4_t max[WIDE_TILE_VECTORS];       /* largest non-NaN |a| of the block, -1 before any */
    uint32x4_t token[WIDE_TILE_VECTORS];      /* block-relative token where max first occurred */
    uint32x4_t nan_token[WIDE_TILE_VECTORS];  /* block-relative token of the first NaN, or NO_NAN */
} tile_state;

/* Folds the block's per-channel maxima into max_abs and argmax_token with the shared tie and NaN rules. */
static void fold_tile(const tile_state *state, int vectors, float *max_abs, uint64_t *argmax_token,
                      uint64_t block_first_token)
{
    for (int k = 0; k < vectors; k++) {
        float max[4];
        uint32_t token[4];
        uint32_t nan_token[4];
        vst1q_f32(max, state->max[k]);
        vst1q_u32(token, state->token[k]);
        vst1q_u32(nan_token, state->nan_token[k]);

        for (int j = 0; j < 4; j++) {
            const size_t c = (size_t)(4 * k + j);
            const uint64_t first_nan = nan_token[j] == NO_NAN ? SINKKIT_NO_TOKEN : block_first_token + nan_token[j];
            sinkkit_channel_fold(&max_abs[c], &argmax_token[c], max[j], block_first_token + token[j], first_nan);
        }
    }
}

/* Streams tokens rows down 4 * vectors channels starting at a. sum_squares gets each token's square in
   token order, exactly as the reference adds them. The maxima are kept per block and folded at the end. */
static inline __attribute__((always_inline)) void update_tile(float *max_abs, uint64_t *argmax_token,
                                                              double *sum_squares, const float *a, size_t tokens,
                                                              size_t row_stride, uint64_t block_first_token,
                                                              int vectors)
{
    tile_state state;
    float64x2_t sum[2 * WIDE_TILE_VECTORS];
    for (int k = 0; k < vectors; k++) {
        state.max[k] = vdupq_n_f32(-1.0f);
        state.token[k] = vdupq_n_u32(0);
        state.nan_token[k] = vdupq_n_u32(NO_NAN);
        sum[2 * k] = vld1q_f64(sum_squares + 4 * k);
        sum[2 * k + 1] = vld1q_f64(sum_squares + 4 * k + 2);
    }

    for (size_t i = 0; i < tokens; i++) {
        const float *row = a + i * row_stride;
        const uint32x4_t index = vdupq_n_u32((uint32_t)i);

        for (int k = 0; k < vectors; k++) {
            const float32x4_t v = vld1q_f32(row + 4 * k);
            const float32x4_t magnitude = vabsq_f32(v);

            /* A NaN compares false, so it never becomes the maximum. vmaxq_f32 would let it in. */
            const uint32x4_t greater = vcgtq_f32(magnitude, state.max[k]);
            state.max[k] = vbslq_f32(greater, magnitude, state.max[k]);
            state.token[k] = vbslq_u32(greater, index, state.token[k]);

            /* Ordered lanes give all ones and NaN lanes the token index, so the minimum is the first NaN. */
            const uint32x4_t nan_candidate = vorrq_u32(index, vceqq_f32(v, v));
            state.nan_token[k] = vminq_u32(state.nan_token[k], nan_candidate);

            /* A float squared is exact in double, so the FMA rounds once, like the reference's add. */
            const float64x2_t low = vcvt_f64_f32(vget_low_f32(v));
            const float64x2_t high = vcvt_high_f64_f32(v);
            sum[2 * k] = vfmaq_f64(sum[2 * k], low, low);
            sum[2 * k + 1] = vfmaq_f64(sum[2 * k + 1], high, high);
        }
    }

    for (int k = 0; k < vectors; k++) {
        vst1q_f64(sum_squares + 4 * k, sum[2 * k]);
        vst1q_f64(sum_squares + 4 * k + 2, sum[2 * k + 1]);
    }
    fold_tile(&state, vectors, max_abs, argmax_token, block_first_token);
}

/* Updates one channel with the reference's rules, for the last channels that do not fill a vector. */
static void update_channel(float *max_abs, uint64_t *argmax_token, double *sum_squares, const float *a,
                           size_t tokens, size_t row_stride, uint64_t block_first_token)
{
    for (size_t i = 0; i < tokens; i++) {
        const float value = a[i * row_stride];
        const float magnitude = fabsf(value);
        const uint64_t token = block_first_token + i;

        if (isnan(magnitude)) {
            if (!isnan(*max_abs) || token < *argmax_token) {
                *max_abs = NAN;
                *argmax_token = token;
            }
        } else if (!isnan(*max_abs) && (magnitude > *max_abs || (magnitude == *max_abs && token < *argmax_token))) {
            *max_abs = magnitude;
            *argmax_token = token;
        }

        *sum_squares += (double)value * (double)value;
    }
}

void sinkkit_channel_stats_update_f32_neon(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                           size_t channels, const float *a, size_t tokens, size_t row_stride,
                                           uint64_t first_token)
{
    for (size_t start = 0; start < tokens; start += TOKEN_BLOCK) {
        const size_t block = tokens - start < TOKEN_BLOCK ? tokens - start : TOKEN_BLOCK;
        const float *rows = a + start * row_stride;
        const uint64_t block_first_token = first_token + start;
        size_t c = 0;

        for (; c + 4 * WIDE_TILE_VECTORS <= channels; c += 4 * WIDE_TILE_VECTORS)
            update_tile(max_abs + c, argmax_token + c, sum_squares + c, rows + c, block, row_stride,
                        block_first_token, WIDE_TILE_VECTORS);
        for (; c + 4 <= channels; c += 4)
            update_tile(max_abs + c, argmax_token + c, sum_squares + c, rows + c, block, row_stride,
                        block_first_token, 1);
        for (; c < channels; c++)
            update_channel(max_abs + c, argmax_token + c, sum_squares + c, rows + c, block, row_stride,
                           block_first_token);
    }
}
