/* Argument checks shared by the public entry points. Each returns SINKKIT_OK or the status to report. */
#ifndef SINKKIT_VALIDATE_H
#define SINKKIT_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "sinkkit.h"

/* Byte range [start, start + bytes) of a buffer, for overlap checks. */
typedef struct sinkkit_span {
    uintptr_t start;
    size_t bytes;
} sinkkit_span;

static inline sinkkit_span sinkkit_span_of(const void *p, size_t bytes)
{
    sinkkit_span span = {(uintptr_t)p, bytes};
    return span;
}

/* True when both spans are non-empty and share at least one byte. */
static inline bool sinkkit_spans_overlap(sinkkit_span a, sinkkit_span b)
{
    if (a.bytes == 0 || b.bytes == 0)
        return false;
    return a.start < b.start + b.bytes && b.start < a.start + a.bytes;
}

/* Stores count * element_size in *bytes; SINKKIT_ERROR_INVALID_SHAPE when it overflows or exceeds PTRDIFF_MAX. */
sinkkit_status sinkkit_checked_bytes(size_t count, size_t element_size, size_t *bytes);

/* Checks heads, head_dim and the strides of layout (tokens may be 0). On success stores the number of
   elements from the first element to one past the last in *span_elements (0 when tokens is 0).
   Strides must nest: taking the dimensions with more than one entry from the smaller stride to the
   larger, each stride is at least the extent of everything inside it (head_dim for the innermost).
   Token-major, head-major and padded layouts pass; any layout in which two vectors overlap fails. */
sinkkit_status sinkkit_check_head_layout(const sinkkit_head_layout *layout, size_t *span_elements);

/* Checks a row-major matrix of rows x cols with row_stride and stores its span in elements. */
sinkkit_status sinkkit_check_rows(size_t rows, size_t cols, size_t row_stride, size_t *span_elements);

#endif /* SINKKIT_VALIDATE_H */
