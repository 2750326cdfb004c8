/* Per-channel statistics for AArch64 SVE at any vector length, following rule 4 of the numeric scheme in kernels.h. */
#include <arm_sve.h>

#include "kernels.h"

/* Tokens streamed down one tile before its maxima are folded into the caller's arrays. A block-relative
   token index then fits in 32 bits, and the block's rows stay in cache from one tile to the next. */
#define TOKEN_BLOCK 256

/* No NaN seen yet in a lane: larger than any block-relative token index. */
#define NO_NAN UINT32_MAX

/* Float lanes in the longest SVE vector (2048 bits). */
#define MAX_LANES 64

/* Folds one token's values v (lanes outside p are ignored) into the running maxima of a vector of
   channels. max is the largest non-NaN |a| of the block (-1 before any), and token the block-relative
   token where it first occurred. nan_token is the block-relative token of the first NaN, or NO_NAN. */
static inline void update_maxima(svfloat32_t *max, svuint32_t *token, svuint32_t *nan_token, svbool_t p,
                                 svfloat32_t v, uint32_t index)
{
    const svfloat32_t magnitude = svabs_f32_x(p, v);

    /* A NaN compares false, so it never becomes the maximum. svmax would let it in. */
    const svbool_t greater = svcmpgt_f32(p, magnitude, *max);
    *max = svsel_f32(greater, magnitude, *max);
    *token = svdup_n_u32_m(*token, greater, index);

    /* Tokens arrive in increasing order, so the minimum over NaN lanes is the first NaN. */
    const svbool_t is_nan = svcmpuo_f32(p, v, v);
    *nan_token = svmin_n_u32_m(is_nan, *nan_token, index);
}

/* Adds the squares of the float lanes of v, in double, to the two double vectors low and high. A float
   squared is exact in double, so each FMA rounds once, like the reference's add. */
static inline void add_squares(svfloat64_t *low, svfloat64_t *high, svfloat32_t v)
{
    const svbool_t all = svptrue_b64();
    const svfloat64_t v_low = svcvt_f64_f32_x(all, svzip1_f32(v, v));
    const svfloat64_t v_high = svcvt_f64_f32_x(all, svzip2_f32(v, v));
    *low = svmla_f64_x(all, *low, v_low, v_low);
    *high = svmla_f64_x(all, *high, v_high, v_high);
}

/* Folds the block's maxima of count channels into max_abs and argmax_token with the shared rules. */
static void fold_maxima(svfloat32_t max, svuint32_t token, svuint32_t nan_token, svbool_t p, size_t count,
                        float *max_abs, uint64_t *argmax_token, uint64_t block_first_token)
{
    float max_lanes[MAX_LANES];
    uint32_t token_lanes[MAX_LANES];
    uint32_t nan_lanes[MAX_LANES];
    svst1_f32(p, max_lanes, max);
    svst1_u32(p, token_lanes, token);
    svst1_u32(p, nan_lanes, nan_token);

    for (size_t j = 0; j < count; j++) {
        const uint64_t first_nan = nan_lanes[j] == NO_NAN ? SINKKIT_NO_TOKEN : block_first_token + nan_lanes[j];
        sinkkit_channel_fold(&max_abs[j], &argmax_token[j], max_lanes[j], block_first_token + token_lanes[j],
                             first_nan);
    }
}

/* Streams tokens rows down the 2 * lanes channels starting at c (fewer at the end, by predicate).
   sum_squares gets each token's square in token order, exactly as the reference adds them. */
static void update_tile(float *max_abs, uint64_t *argmax_token, double *sum_squares, size_t channels, size_t c,
                        const float *a, size_t tokens, size_t row_stride, uint64_t block_first_token)
{
    const uint64_t lanes = svcntw();
    const svbool_t p0 = svwhilelt_b32_u64(c, channels);
    const svbool_t p1 = svwhilelt_b32_u64(c + lanes, channels);

    /* Double vector k covers channels c + k * lanes / 2 onwards. */
    const uint64_t half = lanes / 2;
    const svbool_t pd0 = svwhilelt_b64_u64(c, channels);
    const svbool_t pd1 = svwhilelt_b64_u64(c + half, channels);
    const svbool_t pd2 = svwhilelt_b64_u64(c + 2 * half, channels);
    const svbool_t pd3 = svwhilelt_b64_u64(c + 3 * half, channels);
    svfloat64_t sum0 = svld1_vnum_f64(pd0, sum_squares + c, 0);
    svfloat64_t sum1 = svld1_vnum_f64(pd1, sum_squares + c, 1);
    svfloat64_t sum2 = svld1_vnum_f64(pd2, sum_squares + c, 2);
    svfloat64_t sum3 = svld1_vnum_f64(pd3, sum_squares + c, 3);

    svfloat32_t max0 = svdup_n_f32(-1.0f);
    svfloat32_t max1 = svdup_n_f32(-1.0f);
    svuint32_t token0 = svdup_n_u32(0);
    svuint32_t token1 = svdup_n_u32(0);
    svuint32_t nan_token0 = svdup_n_u32(NO_NAN);
    svuint32_t nan_token1 = svdup_n_u32(NO_NAN);

    for (size_t i = 0; i < tokens; i++) {
        const float *row = a + i * row_stride + c;
        const svfloat32_t v0 = svld1_f32(p0, row);
        const svfloat32_t v1 = svld1_vnum_f32(p1, row, 1);

        update_maxima(&max0, &token0, &nan_token0, p0, v0, (uint32_t)i);
        update_maxima(&max1, &token1, &nan_token1, p1, v1, (uint32_t)i);
        add_squares(&sum0, &sum1, v0);
        add_squares(&sum2, &sum3, v1);
    }

    svst1_vnum_f64(pd0, sum_squares + c, 0, sum0);
    svst1_vnum_f64(pd1, sum_squares + c, 1, sum1);
    svst1_vnum_f64(pd2, sum_squares + c, 2, sum2);
    svst1_vnum_f64(pd3, sum_squares + c, 3, sum3);

    const size_t count = channels - c;
    fold_maxima(max0, token0, nan_token0, p0, count < lanes ? count : lanes, max_abs + c, argmax_token + c,
                block_first_token);
    if (count > lanes) {
        const size_t rest = count - lanes;
        fold_maxima(max1, token1, nan_token1, p1, rest < lanes ? rest : lanes, max_abs + c + lanes,
                    argmax_token + c + lanes, block_first_token);
    }
}

void sinkkit_channel_stats_update_f32_sve(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                          size_t channels, const float *a, size_t tokens, size_t row_stride,
                                          uint64_t first_token)
{
    const size_t tile = 2 * svcntw();

    for (size_t start = 0; start < tokens; start += TOKEN_BLOCK) {
        const size_t block = tokens - start < TOKEN_BLOCK ? tokens - start : TOKEN_BLOCK;
        const float *rows = a + start * row_stride;

        for (size_t c = 0; c < channels; c += tile)
            update_tile(max_abs, argmax_token, sum_squares, channels, c, rows, block, row_stride,
                        first_token + start);
    }
}
