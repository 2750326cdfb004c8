/* Channel statistics: every ISA's kernel against the reference, hard values, splits, merges and argument checks. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

/* Statistics arrays owned by a test, with the sinkkit_channel_stats view of them. */
typedef struct stats_arrays {
    sinkkit_channel_stats view;
    void *mappings[3];
    size_t mapping_bytes[3];
    bool guarded;
} stats_arrays;

/* ---- helpers ---- */

static void *checked_malloc(size_t bytes)
{
    void *p = malloc(bytes > 0 ? bytes : 1);
    assert_non_null(p);
    return p;
}

/* Allocates arrays for channels channels. With guarded, each array ends right before a PROT_NONE page,
   so a kernel that touches a statistic past the last channel faults. */
static stats_arrays stats_new(size_t channels, bool guarded)
{
    stats_arrays s;
    memset(&s, 0, sizeof s);
    s.view.channels = channels;
    s.guarded = guarded;
    if (guarded) {
        s.view.max_abs = tk_guarded_alloc(channels * sizeof(float), 64, &s.mappings[0], &s.mapping_bytes[0]);
        s.view.argmax_token = tk_guarded_alloc(channels * sizeof(uint64_t), 64, &s.mappings[1], &s.mapping_bytes[1]);
        s.view.sum_squares = tk_guarded_alloc(channels * sizeof(double), 64, &s.mappings[2], &s.mapping_bytes[2]);
    } else {
        s.view.max_abs = checked_malloc(channels * sizeof(float));
        s.view.argmax_token = checked_malloc(channels * sizeof(uint64_t));
        s.view.sum_squares = checked_malloc(channels * sizeof(double));
    }
    return s;
}

static void stats_free(stats_arrays *s)
{
    if (s->guarded) {
        for (int i = 0; i < 3; i++)
            tk_guarded_free(s->mappings[i], s->mapping_bytes[i]);
    } else {
        free(s->view.max_abs);
        free(s->view.argmax_token);
        free(s->view.sum_squares);
    }
    memset(s, 0, sizeof *s);
}

/* The state after sinkkit_channel_stats_reset(), written here without the library. */
static void stats_clear(sinkkit_channel_stats *s)
{
    for (size_t c = 0; c < s->channels; c++) {
        s->max_abs[c] = 0.0f;
        s->argmax_token[c] = SINKKIT_NO_TOKEN;
        s->sum_squares[c] = 0.0;
    }
    s->tokens = 0;
}

static void stats_copy(sinkkit_channel_stats *to, const sinkkit_channel_stats *from)
{
    memcpy(to->max_abs, from->max_abs, from->channels * sizeof(float));
    memcpy(to->argmax_token, from->argmax_token, from->channels * sizeof(uint64_t));
    memcpy(to->sum_squares, from->sum_squares, from->channels * sizeof(double));
    to->tokens = from->tokens;
}

/* A state as if an earlier part of the stream had been seen: small maxima that the data can tie, NaN
   channels, and tokens on both sides of first_token so that ties go either way. */
static void stats_randomise(sinkkit_channel_stats *s, uint64_t *rng, uint64_t first_token)
{
    static const float maxima[] = {0.0f, 1.0f, 2.0f, 3.0f, 0.5f, INFINITY};
    for (size_t c = 0; c < s->channels; c++) {
        uint64_t r = tk_random_u64(rng);
        s->max_abs[c] = maxima[r % 6];
        s->argmax_token[c] = first_token + (r >> 8) % 64 - 32;
        if (r % 17 == 0)
            s->max_abs[c] = NAN;
        if (r % 13 == 0) {
            s->max_abs[c] = 0.0f;
            s->argmax_token[c] = SINKKIT_NO_TOKEN;
        }
        s->sum_squares[c] = (double)(r % 1000) * 0.25;
    }
    s->tokens = 100;
}

/* A quiet NaN with a payload and the sign set: every path must still store the NAN constant. */
static float payload_nan(void)
{
    const uint32_t bits = 0xFFC01234u;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Values that make ties, signed zeros, subnormals, huge magnitudes, infinities and the odd NaN likely. */
static float hard_value(uint64_t *rng)
{
    static const float values[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 3.0f, -3.0f, 0.5f, 1e-40f, -3e38f, 1e30f};
    uint64_t r = tk_random_u64(rng);
    uint64_t pick = r % 1000;
    if (pick < 3)
        return (r & 2048) ? payload_nan() : NAN;
    if (pick < 5)
        return (r & 1024) ? INFINITY : -INFINITY;
    if (pick < 600)
        return values[(r >> 10) % 12];
    return tk_random_float(rng, -4.0f, 4.0f);
}

static void fill_rows(float *a, size_t tokens, size_t channels, size_t row_stride, uint64_t *rng)
{
    for (size_t t = 0; t < tokens; t++) {
        for (size_t c = 0; c < row_stride; c++)
            a[t * row_stride + c] = c < channels ? hard_value(rng) : NAN;
    }
}

/* Elements needed for tokens rows of channels values, row_stride apart. */
static size_t rows_span(size_t tokens, size_t channels, size_t row_stride)
{
    return tokens == 0 ? 0 : (tokens - 1) * row_stride + channels;
}

static bool same_float_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Checks got against want: max_abs bitwise, argmax_token exactly, RMS within 1e-6 relative error
   (the ratio of two RMS values over the same token count does not depend on that count). */
static void expect_stats(const sinkkit_channel_stats *got, const sinkkit_channel_stats *want, const char *context)
{
    for (size_t c = 0; c < want->channels; c++) {
        if (!same_float_bits(got->max_abs[c], want->max_abs[c])) {
            print_error("%s: channel %zu max_abs %a, expected %a\n", context, c, (double)got->max_abs[c],
                        (double)want->max_abs[c]);
            fail();
        }
        if (got->argmax_token[c] != want->argmax_token[c]) {
            print_error("%s: channel %zu argmax_token %llu, expected %llu\n", context, c,
                        (unsigned long long)got->argmax_token[c], (unsigned long long)want->argmax_token[c]);
            fail();
        }
        double error = metric_relative_error(sqrt(got->sum_squares[c]), sqrt(want->sum_squares[c]));
        if (!(error <= 1e-6)) {
            print_error("%s: channel %zu sum_squares %.17g, expected %.17g (RMS relative error %g)\n", context, c,
                        got->sum_squares[c], want->sum_squares[c], error);
            fail();
        }
    }
}

/* Checks that two runs of the same ISA agree bitwise, sum_squares included. */
static void expect_identical(const sinkkit_channel_stats *got, const sinkkit_channel_stats *want, const char *context)
{
    for (size_t c = 0; c < want->channels; c++) {
        if (!same_float_bits(got->max_abs[c], want->max_abs[c]) || got->argmax_token[c] != want->argmax_token[c] ||
            memcmp(&got->sum_squares[c], &want->sum_squares[c], sizeof(double)) != 0) {
            print_error("%s: channel %zu differs: %a/%llu/%a against %a/%llu/%a\n", context, c,
                        (double)got->max_abs[c], (unsigned long long)got->argmax_token[c], got->sum_squares[c],
                        (double)want->max_abs[c], (unsigned long long)want->argmax_token[c], want->sum_squares[c]);
            fail();
        }
    }
}

static void update_with(const sinkkit_kernel_table *k, sinkkit_channel_stats *s, const float *a, size_t tokens,
                        size_t row_stride, uint64_t first_token)
{
    k->channel_stats_update_f32(s->max_abs, s->argmax_token, s->sum_squares, s->channels, a, tokens, row_stride,
                                first_token);
}

static void update_reference(sinkkit_channel_stats *s, const float *a, size_t tokens, size_t row_stride,
                             uint64_t first_token)
{
    sinkkit_channel_stats_update_f32_reference(s->max_abs, s->argmax_token, s->sum_squares, s->channels, a, tokens,
                                               row_stride, first_token);
}

/* Runs one shape through the kernel and the reference from the same starting state and compares. */
static void compare_shape(const sinkkit_kernel_table *k, size_t channels, size_t tokens, size_t row_stride,
                          size_t offset, uint64_t first_token, bool random_start, uint64_t *rng)
{
    tk_buffer data = tk_buffer_new(rows_span(tokens, channels, row_stride), offset);
    fill_rows(data.data, tokens - 1, channels, row_stride, rng);
    for (size_t c = 0; c < channels; c++)
        data.data[(tokens - 1) * row_stride + c] = hard_value(rng);

    stats_arrays want = stats_new(channels, false);
    stats_arrays got = stats_new(channels, false);
    if (random_start)
        stats_randomise(&want.view, rng, first_token);
    else
        stats_clear(&want.view);
    stats_copy(&got.view, &want.view);

    update_reference(&want.view, data.data, tokens, row_stride, first_token);
    update_with(k, &got.view, data.data, tokens, row_stride, first_token);

    char context[160];
    snprintf(context, sizeof context, "%s channels %zu tokens %zu stride %zu offset %zu first %llu%s",
             sinkkit_isa_name(k->isa), channels, tokens, row_stride, offset, (unsigned long long)first_token,
             random_start ? " (random start)" : "");
    expect_stats(&got.view, &want.view, context);

    stats_free(&want);
    stats_free(&got);
    tk_buffer_free(&data);
}

/* First tokens that cross 32-bit and signed 64-bit limits, where a wrong compare would show. */
static const uint64_t first_tokens[] = {0, 7, 0xFFFFFFF0ULL, 0x7FFFFFFFFFFFFFF0ULL, 0xFFFFFFFFFFFF0000ULL};

/* ---- kernels against the reference ---- */

static void kernel_matches_reference_small_shapes(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0001;
    const size_t token_step = tk_size(1, 7);

    for (size_t channels = 1; channels <= 49; channels++) {
        for (size_t tokens = 1; tokens <= 40; tokens += token_step) {
            const size_t index = channels * 41 + tokens;
            const size_t row_stride = channels + index % 5;
            compare_shape(k, channels, tokens, row_stride, index % 16, first_tokens[index % 5], index % 3 == 0, &rng);
        }
    }
}

static void kernel_matches_reference_model_widths(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0002;
    static const size_t widths[] = {4096, 11008, 14336};
    const size_t token_counts[] = {1, 3, tk_size(130, 5)};

    for (size_t w = 0; w < 3; w++) {
        for (size_t i = 0; i < 3; i++)
            compare_shape(k, widths[w], token_counts[i], widths[w] + 3 * i, (w + i) % 16, first_tokens[i + 1],
                          i == 1, &rng);
    }
}

/* The input's last row ends at a guard page and each statistics array ends at one too. */
static void kernel_stays_inside_buffers(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0003;
    static const size_t token_counts[] = {1, 2, 5, 70};

    for (size_t channels = 1; channels <= 49; channels++) {
        for (size_t i = 0; i < 4; i++) {
            const size_t tokens = token_counts[i];
            const size_t row_stride = channels + i;
            tk_buffer data = tk_buffer_new(rows_span(tokens, channels, row_stride), TK_AT_GUARD);
            fill_rows(data.data, tokens - 1, channels, row_stride, &rng);
            for (size_t c = 0; c < channels; c++)
                data.data[(tokens - 1) * row_stride + c] = hard_value(&rng);

            stats_arrays want = stats_new(channels, false);
            stats_arrays got = stats_new(channels, true);
            stats_clear(&want.view);
            stats_copy(&got.view, &want.view);
            update_reference(&want.view, data.data, tokens, row_stride, 11);
            update_with(k, &got.view, data.data, tokens, row_stride, 11);
            expect_stats(&got.view, &want.view, "guarded buffers");

            stats_free(&want);
            stats_free(&got);
            tk_buffer_free(&data);
        }
    }
}

/* The same rows at every input offset and at several statistics offsets give bitwise the same result. */
static void kernel_independent_of_alignment(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0004;
    static const size_t shapes[][2] = {{37, 3}, {100, 1}, {131, 70}, {300, 19}};

    for (size_t s = 0; s < 4; s++) {
        const size_t channels = shapes[s][0];
        const size_t tokens = shapes[s][1];
        const size_t row_stride = channels + 2;
        const size_t span = rows_span(tokens, channels, row_stride);
        float *rows = checked_malloc(span * sizeof(float));
        fill_rows(rows, tokens - 1, channels, row_stride, &rng);
        for (size_t c = 0; c < channels; c++)
            rows[(tokens - 1) * row_stride + c] = hard_value(&rng);

        /* Eight spare elements in front of each array let the arrays start at 8 different offsets. */
        stats_arrays first = stats_new(channels, false);
        stats_arrays moved = stats_new(channels + 8, false);
        stats_clear(&first.view);
        tk_buffer data = tk_buffer_new(span, 0);
        memcpy(data.data, rows, span * sizeof(float));
        update_with(k, &first.view, data.data, tokens, row_stride, 5);
        tk_buffer_free(&data);

        for (size_t offset = 0; offset < 16; offset++) {
            data = tk_buffer_new(span, offset);
            memcpy(data.data, rows, span * sizeof(float));

            const size_t shift = offset % 8;
            sinkkit_channel_stats view = {channels, 0, moved.view.max_abs + shift, moved.view.argmax_token + shift,
                                          moved.view.sum_squares + shift};
            stats_clear(&view);
            update_with(k, &view, data.data, tokens, row_stride, 5);
            expect_identical(&view, &first.view, "shifted buffers");
            tk_buffer_free(&data);
        }

        stats_free(&first);
        stats_free(&moved);
        free(rows);
    }
}

/* ---- hand-built cases ---- */

/* 37 channels (a partial last vector on every ISA) over 150 tokens, so that rows cross block boundaries.
   Every value is 1 except where a case places its own. */
enum { CASE_CHANNELS = 37, CASE_TOKENS = 150 };

static float *case_rows(void)
{
    float *a = checked_malloc(CASE_CHANNELS * CASE_TOKENS * sizeof(float));
    for (size_t i = 0; i < (size_t)CASE_CHANNELS * CASE_TOKENS; i++)
        a[i] = 1.0f;
    return a;
}

static void set_value(float *a, size_t token, size_t channel, float value)
{
    a[token * CASE_CHANNELS + channel] = value;
}

/* Feeds the case rows in the given chunks (in that order, each a token range), from the reset state. */
static void run_chunks(const sinkkit_kernel_table *k, sinkkit_channel_stats *s, const float *a,
                       const size_t (*chunks)[2], size_t chunk_count, uint64_t first_token)
{
    stats_clear(s);
    for (size_t i = 0; i < chunk_count; i++) {
        const size_t begin = chunks[i][0];
        const size_t end = chunks[i][1];
        update_with(k, s, a + begin * CASE_CHANNELS, end - begin, CASE_CHANNELS, first_token + begin);
    }
}

/* Chunkings of the 150 tokens: one call, blocks in order, blocks in reverse, single tokens at the cuts. */
static const size_t one_call[][2] = {{0, 150}};
static const size_t forward[][2] = {{0, 64}, {64, 65}, {65, 129}, {129, 150}};
static const size_t backward[][2] = {{129, 150}, {65, 129}, {64, 65}, {0, 64}};
static const size_t scattered[][2] = {{100, 150}, {3, 4}, {0, 3}, {4, 100}};

static void expect_channel(const sinkkit_channel_stats *s, size_t channel, float max_abs, uint64_t token,
                           const char *context)
{
    if (!same_float_bits(s->max_abs[channel], max_abs)) {
        print_error("%s: channel %zu max_abs %a, expected %a\n", context, channel, (double)s->max_abs[channel],
                    (double)max_abs);
        fail();
    }
    if (s->argmax_token[channel] != token) {
        print_error("%s: channel %zu argmax_token %llu, expected %llu\n", context, channel,
                    (unsigned long long)s->argmax_token[channel], (unsigned long long)token);
        fail();
    }
}

/* Runs every chunking and also checks each result against the reference in one call. */
static void check_case(const sinkkit_kernel_table *k, const float *a, uint64_t first_token,
                       void (*expect)(const sinkkit_channel_stats *, uint64_t, const char *))
{
    const struct {
        const size_t (*chunks)[2];
        size_t count;
        const char *name;
    } chunkings[] = {{one_call, 1, "one call"}, {forward, 4, "forward chunks"}, {backward, 4, "backward chunks"},
                     {scattered, 4, "scattered chunks"}};

    stats_arrays want = stats_new(CASE_CHANNELS, false);
    stats_clear(&want.view);
    update_reference(&want.view, a, CASE_TOKENS, CASE_CHANNELS, first_token);
    expect(&want.view, first_token, "reference");

    stats_arrays got = stats_new(CASE_CHANNELS, false);
    for (size_t i = 0; i < 4; i++) {
        run_chunks(k, &got.view, a, chunkings[i].chunks, chunkings[i].count, first_token);
        expect(&got.view, first_token, chunkings[i].name);
        expect_stats(&got.view, &want.view, chunkings[i].name);
    }

    stats_free(&want);
    stats_free(&got);
}

static void expect_ties(const sinkkit_channel_stats *s, uint64_t first, const char *context)
{
    expect_channel(s, 0, 5.0f, first + 10, context);
    expect_channel(s, 1, 5.0f, first + 63, context);
    expect_channel(s, 2, 1.0f, first + 0, context);
    expect_channel(s, 3, 0.0f, first + 0, context);
    expect_channel(s, 4, 0.0f, first + 0, context);
    expect_channel(s, 36, 7.0f, first + 64, context);
    expect_channel(s, 35, 2.0f, first + 149, context);
}

/* Equal magnitudes at several tokens keep the first, whatever the sign and however the calls split. */
static void kernel_ties_keep_first_token(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    float *a = case_rows();

    /* Channel 0: -5 at 10, 5 at 70 and 140. Channel 1: 5 at 63, -5 at 64 (across a block boundary).
       Channel 2: all ones. Channel 3: all zeros. Channel 4: all -0.0, whose magnitude is +0.
       Channel 36 (the last, in a partial vector): 7 at 64 and 65. Channel 35: 2 only at the last token. */
    set_value(a, 10, 0, -5.0f);
    set_value(a, 70, 0, 5.0f);
    set_value(a, 140, 0, 5.0f);
    set_value(a, 63, 1, 5.0f);
    set_value(a, 64, 1, -5.0f);
    for (size_t t = 0; t < CASE_TOKENS; t++) {
        set_value(a, t, 3, 0.0f);
        set_value(a, t, 4, -0.0f);
    }
    set_value(a, 64, 36, 7.0f);
    set_value(a, 65, 36, -7.0f);
    set_value(a, 149, 35, 2.0f);

    for (size_t i = 0; i < 5; i++)
        check_case(k, a, first_tokens[i], expect_ties);
    free(a);
}

static void expect_nan_inf(const sinkkit_channel_stats *s, uint64_t first, const char *context)
{
    expect_channel(s, 0, NAN, first + 10, context);
    expect_channel(s, 1, NAN, first + 50, context);
    expect_channel(s, 2, INFINITY, first + 4, context);
    expect_channel(s, 3, INFINITY, first + 7, context);
    expect_channel(s, 4, NAN, first + 0, context);
    expect_channel(s, 36, NAN, first + 149, context);
    expect_channel(s, 5, 1.0f, first + 0, context);

    /* A NaN makes the sum NaN, an infinity without NaN makes it +Inf. */
    assert_true(isnan(s->sum_squares[0]));
    assert_true(isnan(s->sum_squares[1]));
    assert_true(isinf(s->sum_squares[2]) && s->sum_squares[2] > 0.0);
    assert_true(s->sum_squares[5] == (double)CASE_TOKENS);
}

/* NaN wins over every number, the first NaN token wins among NaNs, and infinities tie like numbers. */
static void kernel_nan_and_inf(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    float *a = case_rows();

    /* Channel 0: NaN at 10 and 90, Inf at 5. Channel 1: Inf at 3, NaN at 50 and 51. Channel 2: Inf at 4
       and -Inf at 80. Channel 3: -Inf at 7 and 8. Channel 4: NaN at 0 only. Channel 36: NaN at the last
       token only. */
    set_value(a, 10, 0, payload_nan());
    set_value(a, 90, 0, -NAN);
    set_value(a, 5, 0, INFINITY);
    set_value(a, 3, 1, INFINITY);
    set_value(a, 50, 1, NAN);
    set_value(a, 51, 1, NAN);
    set_value(a, 4, 2, INFINITY);
    set_value(a, 80, 2, -INFINITY);
    set_value(a, 7, 3, -INFINITY);
    set_value(a, 8, 3, -INFINITY);
    set_value(a, 0, 4, payload_nan());
    set_value(a, 149, 36, NAN);

    for (size_t i = 0; i < 5; i++)
        check_case(k, a, first_tokens[i], expect_nan_inf);
    free(a);
}

/* ---- float sums of squares and their rescue ---- */

/* Runs the case rows through every chunking and checks each result against the reference: max_abs and
   argmax_token exactly, sum_squares within the RMS bound and finite exactly where the reference is. */
static void check_sums_case(const sinkkit_kernel_table *k, const float *a, const char *name)
{
    const struct {
        const size_t (*chunks)[2];
        size_t count;
    } chunkings[] = {{one_call, 1}, {forward, 4}, {backward, 4}, {scattered, 4}};

    stats_arrays want = stats_new(CASE_CHANNELS, false);
    stats_clear(&want.view);
    update_reference(&want.view, a, CASE_TOKENS, CASE_CHANNELS, 0);

    stats_arrays got = stats_new(CASE_CHANNELS, false);
    for (size_t i = 0; i < 4; i++) {
        char context[96];
        snprintf(context, sizeof context, "%s, chunking %zu", name, i);
        run_chunks(k, &got.view, a, chunkings[i].chunks, chunkings[i].count, 0);
        expect_stats(&got.view, &want.view, context);
        for (size_t c = 0; c < CASE_CHANNELS; c++) {
            if (isfinite(got.view.sum_squares[c]) != isfinite(want.view.sum_squares[c])) {
                print_error("%s: channel %zu sum_squares %g, expected %g\n", context, c, got.view.sum_squares[c],
                            want.view.sum_squares[c]);
                fail();
            }
        }
    }

    stats_free(&want);
    stats_free(&got);
}

/* Squares and float sums that overflow although the double sum is finite are summed again in double. */
static void kernel_rescues_overflowing_squares(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    float *a = case_rows();

    /* Channel 0: every square overflows float (9e38). Channel 1: one 1e30. Channel 2: FLT_MAX and
       -FLT_MAX. Channel 3: 2e19 at every third token. Channel 4: squares of 1.69e38 that overflow only
       when added. Channel 5: an Inf among 3e19, so the sum is +Inf. Channel 36 (the partial vector):
       all 1e25. */
    for (size_t t = 0; t < CASE_TOKENS; t++) {
        set_value(a, t, 0, (t & 1) ? 3e19f : -3e19f);
        if (t % 3 == 0)
            set_value(a, t, 3, 2e19f);
        set_value(a, t, 4, 1.3e19f);
        set_value(a, t, 5, 3e19f);
        set_value(a, t, 36, 1e25f);
    }
    set_value(a, 70, 1, 1e30f);
    set_value(a, 5, 2, FLT_MAX);
    set_value(a, 100, 2, -FLT_MAX);
    set_value(a, 20, 5, INFINITY);

    check_sums_case(k, a, "overflowing squares");
    free(a);
}

/* Squares that underflow float (or lose bits as subnormals) are summed again in double, while groups of
   exact zeros keep the fast path and add nothing. */
static void kernel_rescues_underflowing_squares(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    float *a = case_rows();

    /* Channel 0: all 1e-30, whose squares are 0 in float. Channel 1: all 1e-20, whose squares are
       subnormal. Channel 2: all subnormal. Channel 3: zeros and one 1e-25. Channel 4: 3e-23 and zeros in
       turn. Channel 5: zeros after one 1. Channel 6: blocks of eight 1e-30 and eight -2 in turn.
       Channel 7: all -0.0. Channel 36 (the partial vector): all 1e-35. */
    for (size_t t = 0; t < CASE_TOKENS; t++) {
        set_value(a, t, 0, 1e-30f);
        set_value(a, t, 1, (t & 1) ? 1e-20f : -1e-20f);
        set_value(a, t, 2, 1e-40f);
        set_value(a, t, 3, 0.0f);
        set_value(a, t, 4, (t & 1) ? 3e-23f : 0.0f);
        set_value(a, t, 5, t == 3 ? 1.0f : 0.0f);
        set_value(a, t, 6, (t / 8) % 2 ? -2.0f : 1e-30f);
        set_value(a, t, 7, -0.0f);
        set_value(a, t, 36, 1e-35f);
    }
    set_value(a, 77, 3, 1e-25f);

    check_sums_case(k, a, "underflowing squares");
    free(a);
}

/* Mostly zeros, as after a ReLU, with hard values in between. */
static void kernel_matches_reference_sparse_rows(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0007;
    const size_t rounds = tk_size(6, 2);

    for (size_t round = 0; round < rounds; round++) {
        float *a = case_rows();
        for (size_t i = 0; i < (size_t)CASE_CHANNELS * CASE_TOKENS; i++)
            a[i] = tk_random_u64(&rng) % 10 < 8 ? 0.0f : hard_value(&rng);
        check_sums_case(k, a, "sparse rows");
        free(a);
    }
}

/* Values spread over 2^-20 to 2^20, where float partial sums round at every step. Each square goes
   through at most 8 roundings of float (docs/accuracy.md), so the relative error of sum_squares stays
   within TK_FLOAT_PARTIAL_BOUND. */
static void kernel_sum_squares_within_bound(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0008;
    const size_t channels = 67;
    const size_t tokens = tk_size(1000, 203);

    float *a = checked_malloc(tokens * channels * sizeof(float));
    for (size_t i = 0; i < tokens * channels; i++) {
        const uint64_t r = tk_random_u64(&rng);
        const float mantissa = 1.0f + (float)(r >> 40) * 0x1p-24f;
        a[i] = ldexpf((r & 1) ? -mantissa : mantissa, (int)((r >> 8) % 41) - 20);
    }

    stats_arrays want = stats_new(channels, false);
    stats_arrays got = stats_new(channels, false);
    stats_clear(&want.view);
    stats_clear(&got.view);
    update_reference(&want.view, a, tokens, channels, 0);
    update_with(k, &got.view, a, tokens, channels, 0);
    expect_stats(&got.view, &want.view, "spread magnitudes");

    double worst = 0.0;
    for (size_t c = 0; c < channels; c++) {
        const double error = metric_relative_error(got.view.sum_squares[c], want.view.sum_squares[c]);
        worst = error > worst ? error : worst;
    }
    print_message("%s: largest relative error of sum_squares %.3g (bound %.3g)\n", sinkkit_isa_name(k->isa), worst,
                  TK_FLOAT_PARTIAL_BOUND);
    assert_true(worst <= TK_FLOAT_PARTIAL_BOUND);

    stats_free(&want);
    stats_free(&got);
    free(a);
}

/* Rows wider than the channel chunks of the vector kernels, with the statistics arrays ending at guard
   pages, and a last group shorter than the others. */
static void kernel_handles_rows_past_a_chunk(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0009;
    const size_t channels = 16384 + 45;
    const size_t tokens = tk_size(19, 10);
    const size_t row_stride = channels + 1;

    tk_buffer data = tk_buffer_new(rows_span(tokens, channels, row_stride), TK_AT_GUARD);
    fill_rows(data.data, tokens - 1, channels, row_stride, &rng);
    for (size_t c = 0; c < channels; c++)
        data.data[(tokens - 1) * row_stride + c] = hard_value(&rng);

    stats_arrays want = stats_new(channels, false);
    stats_arrays got = stats_new(channels, true);
    stats_randomise(&want.view, &rng, 100);
    stats_copy(&got.view, &want.view);
    update_reference(&want.view, data.data, tokens, row_stride, 100);
    update_with(k, &got.view, data.data, tokens, row_stride, 100);
    expect_stats(&got.view, &want.view, "rows past a chunk");

    stats_free(&want);
    stats_free(&got);
    tk_buffer_free(&data);
}

/* Folding the same rows again, as a benchmark loop does, ties every channel with its own max: the first
   token must stay, and the statistics must match the reference folded twice. */
static void kernel_refolds_same_rows(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED000A;
    static const size_t token_counts[] = {1, 8, 43};

    for (size_t i = 0; i < 3; i++) {
        const size_t channels = 83;
        const size_t tokens = token_counts[i];
        float *a = checked_malloc(tokens * channels * sizeof(float));
        fill_rows(a, tokens, channels, channels, &rng);

        stats_arrays want = stats_new(channels, false);
        stats_arrays got = stats_new(channels, false);
        stats_clear(&want.view);
        stats_clear(&got.view);
        for (int pass = 0; pass < 2; pass++) {
            update_reference(&want.view, a, tokens, channels, 9);
            update_with(k, &got.view, a, tokens, channels, 9);
        }
        expect_stats(&got.view, &want.view, "same rows folded twice");

        stats_free(&want);
        stats_free(&got);
        free(a);
    }
}

/* A decode row (one token) whose first reaching channels lie far into the row, after many channels
   that only add their squares, and one that reaches nothing. */
static void kernel_decode_updates_late_channels(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    enum { CHANNELS = 300 };
    float row[CHANNELS];
    for (size_t c = 0; c < CHANNELS; c++)
        row[c] = (c & 1) ? 1.0f : -2.0f;

    stats_arrays want = stats_new(CHANNELS, false);
    stats_arrays got = stats_new(CHANNELS, false);
    for (int reaching = 0; reaching < 2; reaching++) {
        stats_clear(&want.view);
        for (size_t c = 0; c < CHANNELS; c++) {
            want.view.max_abs[c] = 10.0f;
            want.view.argmax_token[c] = 5;
            want.view.sum_squares[c] = (double)c;
        }
        if (reaching) {
            /* Channel 250 beats its max, 130 ties it at a later token, 131 at an earlier one, 299 is NaN. */
            row[250] = 20.0f;
            row[130] = -10.0f;
            row[131] = 10.0f;
            row[299] = NAN;
            want.view.argmax_token[131] = 9;
        }
        stats_copy(&got.view, &want.view);

        update_reference(&want.view, row, 1, CHANNELS, 7);
        update_with(k, &got.view, row, 1, CHANNELS, 7);
        expect_stats(&got.view, &want.view, reaching ? "decode row reaching late" : "decode row below the maxima");
        if (reaching) {
            expect_channel(&got.view, 250, 20.0f, 7, "late channel beats its max");
            expect_channel(&got.view, 130, 10.0f, 5, "later tie keeps the token");
            expect_channel(&got.view, 131, 10.0f, 7, "earlier tie takes the token");
            expect_channel(&got.view, 299, NAN, 7, "late NaN");
        }
    }

    stats_free(&want);
    stats_free(&got);
}

/* ---- splits and merges ---- */

static void merge_or_fail(sinkkit_channel_stats *into, const sinkkit_channel_stats *from)
{
    assert_int_equal(sinkkit_channel_stats_merge(into, from), SINKKIT_OK);
}

/* One stream split into calls at random cuts, and into two halves merged in both orders, gives the
   reference's max_abs and argmax_token exactly. */
static void kernel_split_calls_and_merge(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t rng = 0x5EED0005;
    const size_t channels = 53;
    const size_t tokens = 200;
    const size_t rounds = tk_size(40, 5);

    float *a = checked_malloc(tokens * channels * sizeof(float));
    stats_arrays want = stats_new(channels, false);
    stats_arrays got = stats_new(channels, false);
    stats_arrays low = stats_new(channels, false);
    stats_arrays high = stats_new(channels, false);

    for (size_t round = 0; round < rounds; round++) {
        fill_rows(a, tokens, channels, channels, &rng);
        const uint64_t first = first_tokens[round % 5];
        stats_clear(&want.view);
        update_reference(&want.view, a, tokens, channels, first);

        /* Random cuts, fed from the last chunk to the first. */
        stats_clear(&got.view);
        size_t end = tokens;
        while (end > 0) {
            size_t length = 1 + tk_random_u64(&rng) % (round % 2 ? 3 : 90);
            if (length > end)
                length = end;
            update_with(k, &got.view, a + (end - length) * channels, length, channels, first + end - length);
            end -= length;
        }
        expect_stats(&got.view, &want.view, "random cuts");

        const size_t cut = tk_random_u64(&rng) % (tokens + 1);
        stats_clear(&low.view);
        stats_clear(&high.view);
        if (cut > 0)
            update_with(k, &low.view, a, cut, channels, first);
        if (cut < tokens)
            update_with(k, &high.view, a + cut * channels, tokens - cut, channels, first + cut);
        low.view.tokens = cut;
        high.view.tokens = tokens - cut;

        stats_copy(&got.view, &low.view);
        merge_or_fail(&got.view, &high.view);
        expect_stats(&got.view, &want.view, "merge of the later half into the earlier");
        assert_int_equal(got.view.tokens, tokens);

        stats_copy(&got.view, &high.view);
        merge_or_fail(&got.view, &low.view);
        expect_stats(&got.view, &want.view, "merge of the earlier half into the later");
    }

    stats_free(&want);
    stats_free(&got);
    stats_free(&low);
    stats_free(&high);
    free(a);
}

/* ---- public entry points ---- */

/* reset, update and merge through the public API after sinkkit_set_isa() give the reference result. */
static void public_api_uses_selected_isa(void **state)
{
    const sinkkit_isa isa = TK_STATE_ISA(state);
    tk_kernels_or_skip(isa);
    assert_int_equal(sinkkit_set_isa(isa), SINKKIT_OK);
    assert_int_equal(sinkkit_active_isa(), isa);

    uint64_t rng = 0x5EED0006;
    const size_t channels = 83;
    const size_t tokens = 90;
    const size_t row_stride = 85;
    float *a = checked_malloc(rows_span(tokens, channels, row_stride) * sizeof(float));
    fill_rows(a, tokens - 1, channels, row_stride, &rng);
    for (size_t c = 0; c < channels; c++)
        a[(tokens - 1) * row_stride + c] = hard_value(&rng);

    stats_arrays want = stats_new(channels, false);
    stats_clear(&want.view);
    update_reference(&want.view, a, tokens, row_stride, 40);

    stats_arrays whole = stats_new(channels, false);
    stats_arrays part = stats_new(channels, false);
    tk_fill_sentinel(whole.view.max_abs, channels * sizeof(float));
    assert_int_equal(sinkkit_channel_stats_reset(&whole.view), SINKKIT_OK);
    assert_int_equal(sinkkit_channel_stats_reset(&part.view), SINKKIT_OK);

    /* Tokens 40-69 and 71-129 go to one object, token 70 (a single row) to the other. */
    assert_int_equal(sinkkit_channel_stats_update_f32(&whole.view, a, 30, row_stride, 40), SINKKIT_OK);
    assert_int_equal(sinkkit_channel_stats_update_f32(&whole.view, a + 31 * row_stride, 59, row_stride, 71),
                     SINKKIT_OK);
    assert_int_equal(sinkkit_channel_stats_update_f32(&part.view, a + 30 * row_stride, 1, row_stride, 70),
                     SINKKIT_OK);
    assert_int_equal(whole.view.tokens, 89);
    assert_int_equal(part.view.tokens, 1);

    assert_int_equal(sinkkit_channel_stats_merge(&whole.view, &part.view), SINKKIT_OK);
    assert_int_equal(whole.view.tokens, tokens);
    expect_stats(&whole.view, &want.view, sinkkit_isa_name(isa));
    assert_int_equal(sinkkit_active_isa(), isa);

    stats_free(&want);
    stats_free(&whole);
    stats_free(&part);
    free(a);
    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

/* ---- invalid arguments ---- */

/* Statistics whose arrays and token count hold a sentinel, to show that a rejected call wrote nothing. */
static stats_arrays sentinel_stats(size_t channels)
{
    stats_arrays s = stats_new(channels, false);
    tk_fill_sentinel(s.view.max_abs, channels * sizeof(float));
    tk_fill_sentinel(s.view.argmax_token, channels * sizeof(uint64_t));
    tk_fill_sentinel(s.view.sum_squares, channels * sizeof(double));
    tk_fill_sentinel(&s.view.tokens, sizeof s.view.tokens);
    return s;
}

static void expect_untouched(const sinkkit_channel_stats *s, size_t channels)
{
    assert_true(tk_sentinel_intact(s->max_abs, channels * sizeof(float)));
    assert_true(tk_sentinel_intact(s->argmax_token, channels * sizeof(uint64_t)));
    assert_true(tk_sentinel_intact(s->sum_squares, channels * sizeof(double)));
    assert_true(tk_sentinel_intact(&s->tokens, sizeof s->tokens));
}

static void invalid_update_writes_nothing(void **state)
{
    (void)state;
    enum { CHANNELS = 20 };
    float a[4 * CHANNELS] = {0};
    stats_arrays s = sentinel_stats(CHANNELS);
    sinkkit_channel_stats v = s.view;

    assert_int_equal(sinkkit_channel_stats_update_f32(NULL, a, 1, CHANNELS, 0), SINKKIT_ERROR_NULL_POINTER);
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, NULL, 1, CHANNELS, 0), SINKKIT_ERROR_NULL_POINTER);
    expect_untouched(&v, CHANNELS);

    sinkkit_channel_stats broken = v;
    broken.max_abs = NULL;
    assert_int_equal(sinkkit_channel_stats_update_f32(&broken, a, 1, CHANNELS, 0), SINKKIT_ERROR_NULL_POINTER);
    broken = v;
    broken.argmax_token = NULL;
    assert_int_equal(sinkkit_channel_stats_update_f32(&broken, a, 1, CHANNELS, 0), SINKKIT_ERROR_NULL_POINTER);
    broken = v;
    broken.sum_squares = NULL;
    assert_int_equal(sinkkit_channel_stats_update_f32(&broken, a, 1, CHANNELS, 0), SINKKIT_ERROR_NULL_POINTER);
    broken = v;
    broken.channels = 0;
    assert_int_equal(sinkkit_channel_stats_update_f32(&broken, a, 1, CHANNELS, 0), SINKKIT_ERROR_INVALID_SHAPE);
    expect_untouched(&v, CHANNELS);

    assert_int_equal(sinkkit_channel_stats_update_f32(&v, a, 2, CHANNELS - 1, 0), SINKKIT_ERROR_INVALID_STRIDE);
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, a, 2, SIZE_MAX / 2, 0), SINKKIT_ERROR_INVALID_SHAPE);
    expect_untouched(&v, CHANNELS);

    /* The last token index must stay below SINKKIT_NO_TOKEN, and the token count must not wrap. */
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, a, 1, CHANNELS, SINKKIT_NO_TOKEN),
                     SINKKIT_ERROR_INVALID_VALUE);
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, a, 3, CHANNELS, UINT64_MAX - 2),
                     SINKKIT_ERROR_INVALID_VALUE);
    memset(&v.tokens, 0xFF, sizeof v.tokens);
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, a, 1, CHANNELS, 0), SINKKIT_ERROR_INVALID_VALUE);
    assert_true(v.tokens == UINT64_MAX);
    tk_fill_sentinel(&v.tokens, sizeof v.tokens);
    expect_untouched(&v, CHANNELS);

    /* Input overlapping a statistics array, and two statistics arrays overlapping each other. */
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, v.max_abs, 1, CHANNELS, 0), SINKKIT_ERROR_ALIASING);
    expect_untouched(&v, CHANNELS);
    broken = v;
    broken.max_abs = (float *)(void *)(v.sum_squares + 1);
    assert_int_equal(sinkkit_channel_stats_update_f32(&broken, a, 1, CHANNELS, 0), SINKKIT_ERROR_ALIASING);
    expect_untouched(&v, CHANNELS);

    /* tokens == 0 is a successful no-op. */
    assert_int_equal(sinkkit_channel_stats_update_f32(&v, a, 0, CHANNELS, 0), SINKKIT_OK);
    expect_untouched(&v, CHANNELS);

    stats_free(&s);
}

static void invalid_merge_writes_nothing(void **state)
{
    (void)state;
    enum { CHANNELS = 9 };
    stats_arrays into = sentinel_stats(CHANNELS);
    stats_arrays from = stats_new(CHANNELS, false);
    stats_clear(&from.view);
    from.view.tokens = 3;
    sinkkit_channel_stats v = into.view;

    assert_int_equal(sinkkit_channel_stats_merge(NULL, &from.view), SINKKIT_ERROR_NULL_POINTER);
    assert_int_equal(sinkkit_channel_stats_merge(&v, NULL), SINKKIT_ERROR_NULL_POINTER);

    sinkkit_channel_stats broken = from.view;
    broken.sum_squares = NULL;
    assert_int_equal(sinkkit_channel_stats_merge(&v, &broken), SINKKIT_ERROR_NULL_POINTER);
    broken = from.view;
    broken.channels = CHANNELS - 1;
    assert_int_equal(sinkkit_channel_stats_merge(&v, &broken), SINKKIT_ERROR_INVALID_SHAPE);
    broken.channels = 0;
    assert_int_equal(sinkkit_channel_stats_merge(&v, &broken), SINKKIT_ERROR_INVALID_SHAPE);
    expect_untouched(&v, CHANNELS);

    /* from sharing an array with into. */
    broken = from.view;
    broken.argmax_token = v.argmax_token;
    assert_int_equal(sinkkit_channel_stats_merge(&v, &broken), SINKKIT_ERROR_ALIASING);
    assert_int_equal(sinkkit_channel_stats_merge(&v, &v), SINKKIT_ERROR_ALIASING);
    expect_untouched(&v, CHANNELS);

    /* A token count that would wrap. */
    broken = from.view;
    broken.tokens = UINT64_MAX;
    assert_int_equal(sinkkit_channel_stats_merge(&v, &broken), SINKKIT_ERROR_INVALID_VALUE);
    expect_untouched(&v, CHANNELS);

    stats_free(&into);
    stats_free(&from);
}

static void invalid_reset_writes_nothing(void **state)
{
    (void)state;
    enum { CHANNELS = 5 };
    stats_arrays s = sentinel_stats(CHANNELS);
    sinkkit_channel_stats v = s.view;

    assert_int_equal(sinkkit_channel_stats_reset(NULL), SINKKIT_ERROR_NULL_POINTER);

    sinkkit_channel_stats broken = v;
    broken.argmax_token = NULL;
    assert_int_equal(sinkkit_channel_stats_reset(&broken), SINKKIT_ERROR_NULL_POINTER);
    broken = v;
    broken.channels = 0;
    assert_int_equal(sinkkit_channel_stats_reset(&broken), SINKKIT_ERROR_INVALID_SHAPE);
    broken = v;
    broken.sum_squares = (double *)(void *)v.argmax_token;
    assert_int_equal(sinkkit_channel_stats_reset(&broken), SINKKIT_ERROR_ALIASING);
    expect_untouched(&v, CHANNELS);

    assert_int_equal(sinkkit_channel_stats_reset(&v), SINKKIT_OK);
    for (size_t c = 0; c < CHANNELS; c++) {
        assert_true(same_float_bits(v.max_abs[c], 0.0f));
        assert_true(v.argmax_token[c] == SINKKIT_NO_TOKEN);
        assert_true(v.sum_squares[c] == 0.0);
    }
    assert_true(v.tokens == 0);

    stats_free(&s);
}

static int restore_auto_isa(void **state)
{
    (void)state;
    return sinkkit_set_isa(SINKKIT_ISA_AUTO) == SINKKIT_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TK_ISA_TESTS(kernel_matches_reference_small_shapes),
        TK_ISA_TESTS(kernel_matches_reference_model_widths),
        TK_ISA_TESTS(kernel_stays_inside_buffers),
        TK_ISA_TESTS(kernel_independent_of_alignment),
        TK_ISA_TESTS(kernel_ties_keep_first_token),
        TK_ISA_TESTS(kernel_nan_and_inf),
        TK_ISA_TESTS(kernel_rescues_overflowing_squares),
        TK_ISA_TESTS(kernel_rescues_underflowing_squares),
        TK_ISA_TESTS(kernel_matches_reference_sparse_rows),
        TK_ISA_TESTS(kernel_sum_squares_within_bound),
        TK_ISA_TESTS(kernel_handles_rows_past_a_chunk),
        TK_ISA_TESTS(kernel_refolds_same_rows),
        TK_ISA_TESTS(kernel_decode_updates_late_channels),
        TK_ISA_TESTS(kernel_split_calls_and_merge),
        TK_ISA_TESTS(public_api_uses_selected_isa),
        cmocka_unit_test(invalid_update_writes_nothing),
        cmocka_unit_test(invalid_merge_writes_nothing),
        cmocka_unit_test(invalid_reset_writes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, restore_auto_isa);
}
