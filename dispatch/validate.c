/* Shape, stride and span checks for the public entry points. */
#include <stdint.h>

#include "baseline_guard.h"
#include "validate.h"

sinkkit_status sinkkit_checked_bytes(size_t count, size_t element_size, size_t *bytes)
{
    size_t product;
    if (__builtin_mul_overflow(count, element_size, &product) || product > (size_t)PTRDIFF_MAX)
        return SINKKIT_ERROR_INVALID_SHAPE;
    *bytes = product;
    return SINKKIT_OK;
}

/* Extends the extent of the inner dimensions by one outer dimension of count entries. */
static sinkkit_status nest_dimension(size_t stride, size_t count, size_t *extent)
{
    if (count <= 1)
        return SINKKIT_OK;
    if (stride < *extent)
        return SINKKIT_ERROR_INVALID_STRIDE;

    size_t reach;
    if (__builtin_mul_overflow(stride, count - 1, &reach) || __builtin_add_overflow(reach, *extent, extent))
        return SINKKIT_ERROR_INVALID_SHAPE;
    return SINKKIT_OK;
}

sinkkit_status sinkkit_check_head_layout(const sinkkit_head_layout *layout, size_t *span_elements)
{
    if (layout->heads == 0 || layout->head_dim == 0)
        return SINKKIT_ERROR_INVALID_SHAPE;

    if (layout->tokens == 0) {
        *span_elements = 0;
        return SINKKIT_OK;
    }

    size_t inner_stride = layout->head_stride;
    size_t inner_count = layout->heads;
    size_t outer_stride = layout->token_stride;
    size_t outer_count = layout->tokens;
    if (inner_count <= 1 || (outer_count > 1 && outer_stride < inner_stride)) {
        inner_stride = layout->token_stride;
        inner_count = layout->tokens;
        outer_stride = layout->head_stride;
        outer_count = layout->heads;
    }

    size_t extent = layout->head_dim;
    sinkkit_status status = nest_dimension(inner_stride, inner_count, &extent);
    if (status == SINKKIT_OK)
        status = nest_dimension(outer_stride, outer_count, &extent);
    if (status != SINKKIT_OK)
        return status;

    size_t bytes;
    status = sinkkit_checked_bytes(extent, sizeof(float), &bytes);
    if (status != SINKKIT_OK)
        return status;

    *span_elements = extent;
    return SINKKIT_OK;
}

sinkkit_status sinkkit_check_rows(size_t rows, size_t cols, size_t row_stride, size_t *span_elements)
{
    if (cols == 0)
        return SINKKIT_ERROR_INVALID_SHAPE;
    if (row_stride < cols)
        return SINKKIT_ERROR_INVALID_STRIDE;

    if (rows == 0) {
        *span_elements = 0;
        return SINKKIT_OK;
    }

    size_t extent = cols;
    sinkkit_status status = nest_dimension(row_stride, rows, &extent);
    if (status != SINKKIT_OK)
        return status;

    size_t bytes;
    status = sinkkit_checked_bytes(extent, sizeof(float), &bytes);
    if (status != SINKKIT_OK)
        return status;

    *span_elements = extent;
    return SINKKIT_OK;
}
