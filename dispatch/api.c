/* Public entry points: validate every argument, then call the active ISA's kernel. */
#include <math.h>

#include "baseline_guard.h"
#include "dispatch.h"
#include "validate.h"

const char *sinkkit_version(void)
{
    return "0.1.0";
}

const char *sinkkit_status_message(sinkkit_status status)
{
    switch (status) {
    case SINKKIT_OK:
        return "success";
    case SINKKIT_ERROR_NULL_POINTER:
        return "a required pointer argument is NULL";
    case SINKKIT_ERROR_INVALID_SHAPE:
        return "invalid shape: a size is zero, or the buffer size overflows size_t";
    case SINKKIT_ERROR_INVALID_STRIDE:
        return "invalid stride: shorter than a row, or two vectors of the layout overlap";
    case SINKKIT_ERROR_INVALID_VALUE:
        return "invalid value: eps, flags, gamma kind or detection parameter out of range";
    case SINKKIT_ERROR_ALIASING:
        return "input and output buffers overlap in a way the call does not allow";
    case SINKKIT_ERROR_UNSUPPORTED_ISA:
        return "the instruction set is not compiled in or not supported by this CPU and OS";
    case SINKKIT_ERROR_BUFFER_TOO_SMALL:
        return "the output or scratch buffer is too small; for a too small output array, found holds the count needed";
    }
    return "unknown status code";
}

/* ---- head-wise RMSNorm ---- */

static sinkkit_status check_rmsnorm_pointers(const sinkkit_head_layout *layout, const float *x, const float *y,
                                             const float *gamma, sinkkit_gamma_kind gamma_kind, float eps)
{
    if (layout == NULL || x == NULL || y == NULL)
        return SINKKIT_ERROR_NULL_POINTER;
    if (gamma_kind != SINKKIT_GAMMA_NONE && gamma_kind != SINKKIT_GAMMA_SHARED &&
        gamma_kind != SINKKIT_GAMMA_PER_HEAD)
        return SINKKIT_ERROR_INVALID_VALUE;
    if (gamma_kind != SINKKIT_GAMMA_NONE && gamma == NULL)
        return SINKKIT_ERROR_NULL_POINTER;
    if (!(eps >= 0.0f && eps <= 3.402823466e38f))
        return SINKKIT_ERROR_INVALID_VALUE;
    return SINKKIT_OK;
}

/* y may be x itself; inv_rms and gamma must not overlap anything that is written. */
static sinkkit_status check_rmsnorm_aliasing(const sinkkit_head_layout *layout, size_t span, const float *x,
                                             const float *y, const float *gamma, sinkkit_gamma_kind gamma_kind,
                                             const float *inv_rms)
{
    sinkkit_span x_span = sinkkit_span_of(x, span * sizeof(float));
    sinkkit_span y_span = sinkkit_span_of(y, span * sizeof(float));
    if (x != y && sinkkit_spans_overlap(x_span, y_span))
        return SINKKIT_ERROR_ALIASING;

    size_t gamma_count = 0;
    if (gamma_kind == SINKKIT_GAMMA_SHARED)
        gamma_count = layout->head_dim;
    else if (gamma_kind == SINKKIT_GAMMA_PER_HEAD && __builtin_mul_overflow(layout->heads, layout->head_dim, &gamma_count))
        return SINKKIT_ERROR_INVALID_SHAPE;
    size_t gamma_bytes;
    if (sinkkit_checked_bytes(gamma_count, sizeof(float), &gamma_bytes) != SINKKIT_OK)
        return SINKKIT_ERROR_INVALID_SHAPE;
    sinkkit_span gamma_span = sinkkit_span_of(gamma, gamma_bytes);
    if (sinkkit_spans_overlap(gamma_span, y_span))
        return SINKKIT_ERROR_ALIASING;

    if (inv_rms != NULL) {
        size_t count;
        size_t bytes;
        if (__builtin_mul_overflow(layout->tokens, layout->heads, &count) ||
            sinkkit_checked_bytes(count, sizeof(float), &bytes) != SINKKIT_OK)
            return SINKKIT_ERROR_INVALID_SHAPE;
        sinkkit_span r_span = sinkkit_span_of(inv_rms, bytes);
        if (sinkkit_spans_overlap(r_span, x_span) || sinkkit_spans_overlap(r_span, y_span) ||
            sinkkit_spans_overlap(r_span, gamma_span))
            return SINKKIT_ERROR_ALIASING;
    }
    return SINKKIT_OK;
}

sinkkit_status sinkkit_headwise_rmsnorm_f32(const sinkkit_head_layout *layout, const float *x, float *y,
                                            const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                            float *inv_rms)
{
    sinkkit_status status = check_rmsnorm_pointers(layout, x, y, gamma, gamma_kind, eps);
    if (status != SINKKIT_OK)
        return status;

    size_t span;
    status = sinkkit_check_head_layout(layout, &span);
    if (status != SINKKIT_OK || layout->tokens == 0)
        return status;

    status = check_rmsnorm_aliasing(layout, span, x, y, gamma, gamma_kind, inv_rms);
    if (status != SINKKIT_OK)
        return status;

    const float *kernel_gamma = gamma_kind == SINKKIT_GAMMA_NONE ? NULL : gamma;
    const sinkkit_kernel_table *kernels = sinkkit_active_kernels();
    sinkkit_rmsnorm_f32_fn normalise = kernels->headwise_rmsnorm_f32;
    /* sinkkit_check_head_layout() has checked that span * sizeof(float) fits in size_t. */
    if (kernels->headwise_rmsnorm_f32_streaming != NULL && span * sizeof(float) > sinkkit_streaming_threshold())
        normalise = kernels->headwise_rmsnorm_f32_streaming;
    normalise(layout, x, y, kernel_gamma, gamma_kind, eps, inv_rms);
    return SINKKIT_OK;
}

/* ---- moments ---- */

/* Checks the outputs of a moments call: count floats each, not overlapping the input or each other. */
static sinkkit_status check_moments_outputs(size_t count, const float *x, size_t span, const float *mean,
                                            const float *variance)
{
    size_t bytes;
    if (sinkkit_checked_bytes(count, sizeof(float), &bytes) != SINKKIT_OK)
        return SINKKIT_ERROR_INVALID_SHAPE;

    sinkkit_span x_span = sinkkit_span_of(x, span * sizeof(float));
    sinkkit_span mean_span = sinkkit_span_of(mean, mean != NULL ? bytes : 0);
    sinkkit_span variance_span = sinkkit_span_of(variance, variance != NULL ? bytes : 0);
    if (sinkkit_spans_overlap(mean_span, x_span) || sinkkit_spans_overlap(variance_span, x_span) ||
        sinkkit_spans_overlap(mean_span, variance_span))
        return SINKKIT_ERROR_ALIASING;
    return SINKKIT_OK;
}

static sinkkit_status check_moments_flags(unsigned flags, size_t n)
{
    if (flags & ~SINKKIT_MOMENTS_UNBIASED)
        return SINKKIT_ERROR_INVALID_VALUE;
    if ((flags & SINKKIT_MOMENTS_UNBIASED) && n < 2)
        return SINKKIT_ERROR_INVALID_SHAPE;
    return SINKKIT_OK;
}

sinkkit_status sinkkit_row_moments_f32(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                       float *variance, unsigned flags)
{
    if (x == NULL || (mean == NULL && variance == NULL))
        return SINKKIT_ERROR_NULL_POINTER;

    size_t span;
    sinkkit_status status = sinkkit_check_rows(rows, cols, row_stride, &span);
    if (status == SINKKIT_OK)
        status = check_moments_flags(flags, cols);
    if (status != SINKKIT_OK || rows == 0)
        return status;

    status = check_moments_outputs(rows, x, span, mean, variance);
    if (status != SINKKIT_OK)
        return status;

    sinkkit_active_kernels()->row_moments_f32(x, rows, cols, row_stride, mean, variance, flags);
    return SINKKIT_OK;
}

sinkkit_status sinkkit_head_moments_f32(const sinkkit_head_layout *layout, const float *x, float *mean,
                                        float *variance, unsigned flags)
{
    if (layout == NULL || x == NULL || (mean == NULL && variance == NULL))
        return SINKKIT_ERROR_NULL_POINTER;

    size_t span;
    sinkkit_status status = sinkkit_check_head_layout(layout, &span);
    if (status == SINKKIT_OK)
        status = check_moments_flags(flags, layout->head_dim);
    if (status != SINKKIT_OK || layout->tokens == 0)
        return status;

    size_t count;
    if (__builtin_mul_overflow(layout->tokens, layout->heads, &count))
        return SINKKIT_ERROR_INVALID_SHAPE;
    status = check_moments_outputs(count, x, span, mean, variance);
    if (status != SINKKIT_OK)
        return status;

    /* Each token's heads are rows of head_dim elements, head_stride apart. When the tokens follow each
       other at that same stride (or there is one head), all of them form a single run of rows, which
       the kernel can group across tokens. Kernels give the same bits for a row however rows are split
       into calls, so both ways agree. */
    const sinkkit_kernel_table *kernels = sinkkit_active_kernels();
    size_t run_stride;
    if (layout->heads == 1 || (!__builtin_mul_overflow(layout->heads, layout->head_stride, &run_stride) &&
                               run_stride == layout->token_stride)) {
        run_stride = layout->heads == 1 ? layout->token_stride : layout->head_stride;
        kernels->row_moments_f32(x, count, layout->head_dim, run_stride, mean, variance, flags);
        return SINKKIT_OK;
    }

    for (size_t t = 0; t < layout->tokens; t++) {
        const size_t out = t * layout->heads;
        kernels->row_moments_f32(x + t * layout->token_stride, layout->heads, layout->head_dim,
                                 layout->head_stride, mean != NULL ? mean + out : NULL,
                                 variance != NULL ? variance + out : NULL, flags);
    }
    return SINKKIT_OK;
}

/* ---- channel statistics ---- */

/* Checks the arrays of stats: present, channels > 0, no two arrays overlapping. Stores their spans. */
static sinkkit_status check_stats(const sinkkit_channel_stats *stats, sinkkit_span spans[3])
{
    if (stats == NULL || stats->max_abs == NULL || stats->argmax_token == NULL || stats->sum_squares == NULL)
        return SINKKIT_ERROR_NULL_POINTER;
    if (stats->channels == 0)
        return SINKKIT_ERROR_INVALID_SHAPE;

    size_t max_bytes;
    size_t argmax_bytes;
    size_t sum_bytes;
    if (sinkkit_checked_bytes(stats->channels, sizeof(float), &max_bytes) != SINKKIT_OK ||
        sinkkit_checked_bytes(stats->channels, sizeof(uint64_t), &argmax_bytes) != SINKKIT_OK ||
        sinkkit_checked_bytes(stats->channels, sizeof(double), &sum_bytes) != SINKKIT_OK)
        return SINKKIT_ERROR_INVALID_SHAPE;

    spans[0] = sinkkit_span_of(stats->max_abs, max_bytes);
    spans[1] = sinkkit_span_of(stats->argmax_token, argmax_bytes);
    spans[2] = sinkkit_span_of(stats->sum_squares, sum_bytes);
    if (sinkkit_spans_overlap(spans[0], spans[1]) || sinkkit_spans_overlap(spans[0], spans[2]) ||
        sinkkit_spans_overlap(spans[1], spans[2]))
        return SINKKIT_ERROR_ALIASING;
    return SINKKIT_OK;
}

static bool span_overlaps_any(sinkkit_span span, const sinkkit_span others[3])
{
    return sinkkit_spans_overlap(span, others[0]) || sinkkit_spans_overlap(span, others[1]) ||
           sinkkit_spans_overlap(span, others[2]);
}

sinkkit_status sinkkit_channel_stats_reset(sinkkit_channel_stats *stats)
{
    sinkkit_span spans[3];
    sinkkit_status status = check_stats(stats, spans);
    if (status != SINKKIT_OK)
        return status;

    for (size_t c = 0; c < stats->channels; c++) {
        stats->max_abs[c] = 0.0f;
        stats->argmax_token[c] = SINKKIT_NO_TOKEN;
        stats->sum_squares[c] = 0.0;
    }
    stats->tokens = 0;
    return SINKKIT_OK;
}

sinkkit_status sinkkit_channel_stats_update_f32(sinkkit_channel_stats *stats, const float *a, size_t tokens,
                                                size_t row_stride, uint64_t first_token)
{
    sinkkit_span spans[3];
    sinkkit_status status = check_stats(stats, spans);
    if (status != SINKKIT_OK)
        return status;
    if (a == NULL)
        return SINKKIT_ERROR_NULL_POINTER;

    size_t span;
    status = sinkkit_check_rows(tokens, stats->channels, row_stride, &span);
    if (status != SINKKIT_OK || tokens == 0)
        return status;

    /* SINKKIT_NO_TOKEN (UINT64_MAX) is reserved, so the last token index must stay below it. */
    uint64_t last_token;
    uint64_t total_tokens;
    if (__builtin_add_overflow(first_token, (uint64_t)tokens - 1, &last_token) || last_token == SINKKIT_NO_TOKEN ||
        __builtin_add_overflow(stats->tokens, (uint64_t)tokens, &total_tokens))
        return SINKKIT_ERROR_INVALID_VALUE;

    if (span_overlaps_any(sinkkit_span_of(a, span * sizeof(float)), spans))
        return SINKKIT_ERROR_ALIASING;

    sinkkit_active_kernels()->channel_stats_update_f32(stats->max_abs, stats->argmax_token, stats->sum_squares,
                                                       stats->channels, a, tokens, row_stride, first_token);
    stats->tokens = total_tokens;
    return SINKKIT_OK;
}

sinkkit_status sinkkit_channel_stats_merge(sinkkit_channel_stats *into, const sinkkit_channel_stats *from)
{
    sinkkit_span into_spans[3];
    sinkkit_span from_spans[3];
    sinkkit_status status = check_stats(into, into_spans);
    if (status == SINKKIT_OK)
        status = check_stats(from, from_spans);
    if (status != SINKKIT_OK)
        return status;

    if (into->channels != from->channels)
        return SINKKIT_ERROR_INVALID_SHAPE;
    for (int i = 0; i < 3; i++) {
        if (span_overlaps_any(from_spans[i], into_spans))
            return SINKKIT_ERROR_ALIASING;
    }

    uint64_t total_tokens;
    if (__builtin_add_overflow(into->tokens, from->tokens, &total_tokens))
        return SINKKIT_ERROR_INVALID_VALUE;

    for (size_t c = 0; c < into->channels; c++) {
        bool from_nan = isnan(from->max_abs[c]);
        sinkkit_channel_fold(&into->max_abs[c], &into->argmax_token[c], from_nan ? 0.0f : from->max_abs[c],
                             from_nan ? SINKKIT_NO_TOKEN : from->argmax_token[c],
                             from_nan ? from->argmax_token[c] : SINKKIT_NO_TOKEN);
        into->sum_squares[c] += from->sum_squares[c];
    }
    into->tokens = total_tokens;
    return SINKKIT_OK;
}
