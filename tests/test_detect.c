/* Super-channel detection: hand-computed cases, a brute-force cross-check, and argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

enum { MAX_CHANNELS = 4096, SCRATCH_BYTES = MAX_CHANNELS * sizeof(float) + 64 };

/* Statistics of up to MAX_CHANNELS channels. argmax_token[c] is 1000 + c unless a test sets it. */
typedef struct detect_input {
    float max_abs[MAX_CHANNELS];
    uint64_t argmax_token[MAX_CHANNELS];
    double sum_squares[MAX_CHANNELS];
    sinkkit_channel_stats stats;
} detect_input;

static unsigned char scratch[SCRATCH_BYTES];

static detect_input *input_new(const float *max_abs, size_t channels)
{
    detect_input *in = calloc(1, sizeof *in);
    assert_non_null(in);
    assert_true(channels <= MAX_CHANNELS);
    for (size_t c = 0; c < channels; c++) {
        in->max_abs[c] = max_abs[c];
        in->argmax_token[c] = 1000 + c;
    }
    in->stats = (sinkkit_channel_stats){channels, 10, in->max_abs, in->argmax_token, in->sum_squares};
    return in;
}

static sinkkit_status detect(const detect_input *in, const sinkkit_detect_params *params,
                             sinkkit_super_channel *out, size_t capacity, size_t *found)
{
    return sinkkit_detect_super_channels(&in->stats, params, scratch, sizeof scratch, out, capacity, found);
}

static bool same_float_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* A hit as a test expects it. Its token is the channel's argmax_token. */
typedef struct expected_hit {
    size_t channel;
    float score;
    bool has_nan;
} expected_hit;

static void expect_hits(const detect_input *in, const sinkkit_super_channel *out, size_t found,
                        const expected_hit *want, size_t count)
{
    assert_int_equal(found, count);
    for (size_t i = 0; i < count; i++) {
        const size_t c = want[i].channel;
        if (out[i].channel != c) {
            print_error("hit %zu: channel %zu, expected %zu\n", i, out[i].channel, c);
            fail();
        }
        assert_true(out[i].token == in->argmax_token[c]);
        assert_true(same_float_bits(out[i].max_abs, in->max_abs[c]) ||
                    (isnan(out[i].max_abs) && isnan(in->max_abs[c])));
        assert_true(out[i].has_nan == want[i].has_nan);
        if (want[i].has_nan) {
            assert_true(isnan(out[i].score));
        } else if (!same_float_bits(out[i].score, want[i].score)) {
            print_error("hit %zu (channel %zu): score %.9g, expected %.9g\n", i, c, (double)out[i].score,
                        (double)want[i].score);
            fail();
        }
    }
}

static sinkkit_detect_params params_of(float min_ratio, float min_abs)
{
    sinkkit_detect_params params = {min_ratio, min_abs};
    return params;
}

/* ---- hand-computed cases ---- */

static void defaults_and_scratch_size(void **state)
{
    (void)state;
    sinkkit_detect_params params = sinkkit_detect_default_params();
    assert_true(params.min_ratio == 100.0f);
    assert_true(params.min_abs == 0.0f);

    assert_true(sinkkit_detect_scratch_size(1000) >= 1000 * sizeof(float));
    assert_true(sinkkit_detect_scratch_size(SIZE_MAX) == 0);
    assert_true(sinkkit_detect_scratch_size(SIZE_MAX / 2) == 0);
}

/* Odd count: sorted 1, 2, 2.5, 3, 1000, so the median is 2.5 and the threshold 250. */
static void odd_count_median(void **state)
{
    (void)state;
    const float values[] = {1.0f, 2.0f, 3.0f, 1000.0f, 2.5f};
    detect_input *in = input_new(values, 5);
    sinkkit_super_channel out[5];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, out, 5, &found), SINKKIT_OK);
    const expected_hit want[] = {{3, 400.0f, false}};
    expect_hits(in, out, found, want, 1);
    free(in);
}

/* Even count: the middle values 3 and 4 give median 3.5, threshold 350: 700 (score 200) before 500
   (score 500 / 3.5 = 142.857...). */
static void even_count_median(void **state)
{
    (void)state;
    const float values[] = {1.0f, 500.0f, 3.0f, 4.0f, 2.0f, 700.0f};
    detect_input *in = input_new(values, 6);
    sinkkit_super_channel out[6];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, out, 6, &found), SINKKIT_OK);
    const expected_hit want[] = {{5, 200.0f, false}, {1, (float)(500.0 / 3.5), false}};
    expect_hits(in, out, found, want, 2);

    /* 349.9 stays below the threshold of 350, and 350 itself reaches it. */
    in->max_abs[1] = 349.9f;
    assert_int_equal(detect(in, NULL, out, 6, &found), SINKKIT_OK);
    const expected_hit only_700[] = {{5, 200.0f, false}};
    expect_hits(in, out, found, only_700, 1);
    in->max_abs[1] = 350.0f;
    assert_int_equal(detect(in, NULL, out, 6, &found), SINKKIT_OK);
    const expected_hit both[] = {{5, 200.0f, false}, {1, 100.0f, false}};
    expect_hits(in, out, found, both, 2);
    free(in);
}

/* Median 0 (three zeros of five): every channel above 0 is a hit with score +Inf, in channel order. */
static void zero_median(void **state)
{
    (void)state;
    const float values[] = {0.0f, 5.0f, 0.0f, 0.5f, 0.0f};
    detect_input *in = input_new(values, 5);
    sinkkit_super_channel out[5];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, out, 5, &found), SINKKIT_OK);
    const expected_hit want[] = {{1, INFINITY, false}, {3, INFINITY, false}};
    expect_hits(in, out, found, want, 2);

    sinkkit_detect_params params = params_of(100.0f, 1.0f);
    assert_int_equal(detect(in, &params, out, 5, &found), SINKKIT_OK);
    const expected_hit above_one[] = {{1, INFINITY, false}};
    expect_hits(in, out, found, above_one, 1);

    /* All zero: the median is 0 and no channel is above it. */
    const float zeros[] = {0.0f, 0.0f, -0.0f};
    detect_input *flat = input_new(zeros, 3);
    assert_int_equal(detect(flat, NULL, out, 5, &found), SINKKIT_OK);
    assert_int_equal(found, 0);
    free(flat);
    free(in);
}

/* NaN channels are left out of the median (1, 2, 3, 1000 gives 2.5) and come last, in channel order. */
static void nan_channels_last(void **state)
{
    (void)state;
    const float values[] = {NAN, 1.0f, 2.0f, 3.0f, 1000.0f, NAN};
    detect_input *in = input_new(values, 6);
    in->argmax_token[0] = 7;
    in->argmax_token[5] = 2;
    sinkkit_super_channel out[6];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, out, 6, &found), SINKKIT_OK);
    const expected_hit want[] = {{4, 400.0f, false}, {0, NAN, true}, {5, NAN, true}};
    expect_hits(in, out, found, want, 3);
    assert_true(out[1].token == 7);
    assert_true(out[2].token == 2);

    /* Only NaN: every channel is a hit. */
    const float all_nan[] = {NAN, NAN};
    detect_input *nan_only = input_new(all_nan, 2);
    assert_int_equal(detect(nan_only, NULL, out, 6, &found), SINKKIT_OK);
    const expected_hit both[] = {{0, NAN, true}, {1, NAN, true}};
    expect_hits(nan_only, out, found, both, 2);
    free(nan_only);
    free(in);
}

/* found reports the total. A short out is left untouched and the call fails. */
static void capacity_too_small(void **state)
{
    (void)state;
    const float values[] = {NAN, 1.0f, 2.0f, 3.0f, 1000.0f, NAN};
    detect_input *in = input_new(values, 6);
    sinkkit_super_channel out[6];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, NULL, 0, &found), SINKKIT_ERROR_BUFFER_TOO_SMALL);
    assert_int_equal(found, 3);

    tk_fill_sentinel(out, sizeof out);
    found = 0;
    assert_int_equal(detect(in, NULL, out, 2, &found), SINKKIT_ERROR_BUFFER_TOO_SMALL);
    assert_int_equal(found, 3);
    assert_true(tk_sentinel_intact(out, sizeof out));

    assert_int_equal(detect(in, NULL, out, 3, &found), SINKKIT_OK);
    assert_int_equal(found, 3);
    assert_true(tk_sentinel_intact(&out[3], 3 * sizeof out[0]));

    /* No hits: capacity 0 and out NULL succeed. */
    const float flat[] = {1.0f, 1.0f, 1.0f};
    detect_input *none = input_new(flat, 3);
    assert_int_equal(detect(none, NULL, NULL, 0, &found), SINKKIT_OK);
    assert_int_equal(found, 0);
    free(none);
    free(in);
}

/* min_ratio 0 with min_abs keeps every channel at or above min_abs. Equal scores go by channel. */
static void min_abs_and_ties(void **state)
{
    (void)state;
    const float values[] = {4.0f, 1.0f, 8.0f, 2.0f, 8.0f, 3.0f, 4.0f};
    detect_input *in = input_new(values, 7);
    sinkkit_super_channel out[7];
    size_t found = 0;

    /* Sorted 1, 2, 3, 4, 4, 8, 8: median 4. */
    sinkkit_detect_params params = params_of(0.0f, 4.0f);
    assert_int_equal(detect(in, &params, out, 7, &found), SINKKIT_OK);
    const expected_hit want[] = {{2, 2.0f, false}, {4, 2.0f, false}, {0, 1.0f, false}, {6, 1.0f, false}};
    expect_hits(in, out, found, want, 4);

    /* Ratio 2 alone keeps the two 8s, and min_abs 9 then removes them. */
    params = params_of(2.0f, 0.0f);
    assert_int_equal(detect(in, &params, out, 7, &found), SINKKIT_OK);
    expect_hits(in, out, found, want, 2);
    params = params_of(2.0f, 9.0f);
    assert_int_equal(detect(in, &params, out, 7, &found), SINKKIT_OK);
    assert_int_equal(found, 0);
    free(in);
}

/* One channel is its own median: score 1, a hit only when min_ratio <= 1. */
static void single_channel(void **state)
{
    (void)state;
    const float values[] = {6.0f};
    detect_input *in = input_new(values, 1);
    sinkkit_super_channel out[1];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, out, 1, &found), SINKKIT_OK);
    assert_int_equal(found, 0);

    sinkkit_detect_params params = params_of(1.0f, 0.0f);
    assert_int_equal(detect(in, &params, out, 1, &found), SINKKIT_OK);
    const expected_hit want[] = {{0, 1.0f, false}};
    expect_hits(in, out, found, want, 1);
    free(in);
}

/* An infinite channel among finite ones is a hit of score +Inf, ahead of finite scores. */
static void infinite_channel(void **state)
{
    (void)state;
    const float values[] = {1.0f, INFINITY, 1.0f, 500.0f, 1.0f};
    detect_input *in = input_new(values, 5);
    sinkkit_super_channel out[5];
    size_t found = 0;

    assert_int_equal(detect(in, NULL, out, 5, &found), SINKKIT_OK);
    const expected_hit want[] = {{1, INFINITY, false}, {3, 500.0f, false}};
    expect_hits(in, out, found, want, 2);
    free(in);
}

/* The scratch may start at any byte. It ends at a guard page, so using more than the size passed
   faults. With shift 0 the size is exactly sinkkit_detect_scratch_size(). */
static void scratch_any_alignment(void **state)
{
    (void)state;
    const float values[] = {9.0f, 1.0f, 2.0f, 1000.0f, 3.0f, 4.0f, 5.0f};
    detect_input *in = input_new(values, 7);
    const size_t needed = sinkkit_detect_scratch_size(7);

    for (size_t shift = 0; shift < 8; shift++) {
        void *mapping;
        size_t mapping_bytes;
        unsigned char *area = tk_guarded_alloc(needed + shift, 64, &mapping, &mapping_bytes);
        sinkkit_super_channel out[7];
        size_t found = 0;

        assert_int_equal(sinkkit_detect_super_channels(&in->stats, NULL, area, needed + shift, out, 7, &found),
                         SINKKIT_OK);
        const expected_hit want[] = {{3, 250.0f, false}};
        expect_hits(in, out, found, want, 1);
        tk_guarded_free(mapping, mapping_bytes);
    }

    /* Exactly the size needed at every start offset: nothing around the scratch changes. */
    for (size_t shift = 0; shift < 8; shift++) {
        unsigned char area[64 + 16];
        assert_true(needed + 16 <= sizeof area);
        tk_fill_sentinel(area, sizeof area);
        sinkkit_super_channel out[7];
        size_t found = 0;

        assert_int_equal(sinkkit_detect_super_channels(&in->stats, NULL, area + shift, needed, out, 7, &found),
                         SINKKIT_OK);
        assert_int_equal(found, 1);
        assert_true(tk_sentinel_intact(area, shift));
        assert_true(tk_sentinel_intact(area + shift + needed, sizeof area - shift - needed));
    }
    free(in);
}

/* ---- brute force ---- */

static int compare_floats(const void *a, const void *b)
{
    float x = *(const float *)a;
    float y = *(const float *)b;
    return (x > y) - (x < y);
}

static int compare_hits(const void *a, const void *b)
{
    const sinkkit_super_channel *x = a;
    const sinkkit_super_channel *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->channel > y->channel) - (x->channel < y->channel);
}

/* Detection written straight from the documentation, with qsort. Returns the number of hits. */
static size_t brute_force(const sinkkit_channel_stats *stats, float min_ratio, float min_abs,
                          sinkkit_super_channel *out)
{
    float *sorted = malloc(stats->channels * sizeof(float));
    assert_non_null(sorted);
    size_t n = 0;
    for (size_t c = 0; c < stats->channels; c++) {
        if (!isnan(stats->max_abs[c]))
            sorted[n++] = stats->max_abs[c];
    }
    qsort(sorted, n, sizeof(float), compare_floats);
    double median = 0.0;
    if (n > 0)
        median = n % 2 ? sorted[n / 2] : ((double)sorted[n / 2 - 1] + (double)sorted[n / 2]) / 2.0;
    free(sorted);

    size_t hits = 0;
    for (size_t c = 0; c < stats->channels; c++) {
        const float v = stats->max_abs[c];
        if (isnan(v) || v < min_abs)
            continue;
        bool hit = median == 0.0 ? v > 0.0f : (double)v >= (double)min_ratio * median;
        if (hit) {
            float score = median == 0.0 ? INFINITY : (float)((double)v / median);
            out[hits++] = (sinkkit_super_channel){c, stats->argmax_token[c], v, score, false};
        }
    }
    qsort(out, hits, sizeof *out, compare_hits);

    for (size_t c = 0; c < stats->channels; c++) {
        if (isnan(stats->max_abs[c]))
            out[hits++] = (sinkkit_super_channel){c, stats->argmax_token[c], stats->max_abs[c], NAN, true};
    }
    return hits;
}

/* Random statistics full of duplicates, zeros, NaN and outliers, against the brute force. */
static void matches_brute_force(void **state)
{
    (void)state;
    uint64_t rng = 0xDE7EC7;
    const size_t rounds = tk_size(300, 40);
    sinkkit_super_channel *want = malloc(MAX_CHANNELS * sizeof *want);
    sinkkit_super_channel *got = malloc(MAX_CHANNELS * sizeof *got);
    assert_non_null(want);
    assert_non_null(got);

    for (size_t round = 0; round < rounds; round++) {
        const size_t channels = 1 + tk_random_u64(&rng) % (round % 4 == 0 ? MAX_CHANNELS : 40);
        float values[MAX_CHANNELS];
        const unsigned style = round % 5;
        for (size_t c = 0; c < channels; c++) {
            uint64_t r = tk_random_u64(&rng);
            if (style == 0)
                values[c] = (float)(r % 4);
            else if (style == 1)
                values[c] = r % 10 == 0 ? NAN : tk_random_float(&rng, 0.0f, 2.0f);
            else if (style == 2)
                values[c] = r % 3 == 0 ? 0.0f : (float)(r % 7) * 50.0f;
            else
                values[c] = r % 50 == 0 ? tk_random_float(&rng, 100.0f, 1000.0f) : tk_random_float(&rng, 0.5f, 1.5f);
        }
        detect_input *in = input_new(values, channels);
        const float min_ratio = round % 3 == 0 ? 100.0f : (float)(round % 7);
        const float min_abs = round % 2 ? 0.0f : 1.0f;
        sinkkit_detect_params params = params_of(min_ratio, min_abs);

        const size_t expected = brute_force(&in->stats, min_ratio, min_abs, want);
        size_t found = 0;
        assert_int_equal(detect(in, &params, got, MAX_CHANNELS, &found), SINKKIT_OK);
        assert_int_equal(found, expected);
        for (size_t i = 0; i < found; i++) {
            if (got[i].channel != want[i].channel || got[i].token != want[i].token ||
                got[i].has_nan != want[i].has_nan ||
                !(same_float_bits(got[i].score, want[i].score) || (isnan(got[i].score) && isnan(want[i].score)))) {
                print_error("round %zu (%zu channels): hit %zu is channel %zu score %g, "
                            "expected channel %zu score %g\n",
                            round, channels, i, got[i].channel, (double)got[i].score, want[i].channel,
                            (double)want[i].score);
                fail();
            }
        }
        free(in);
    }
    free(want);
    free(got);
}

/* ---- invalid arguments ---- */

/* Calls detection with every output holding a sentinel and checks that none changed. */
static void expect_rejected(const sinkkit_channel_stats *stats, const sinkkit_detect_params *params, void *scratch_area,
                            size_t scratch_size, size_t capacity, bool pass_out, bool pass_found,
                            sinkkit_status expected)
{
    sinkkit_super_channel out[4];
    size_t found;
    tk_fill_sentinel(out, sizeof out);
    tk_fill_sentinel(&found, sizeof found);

    sinkkit_status status = sinkkit_detect_super_channels(stats, params, scratch_area, scratch_size,
                                                          pass_out ? out : NULL, capacity, pass_found ? &found : NULL);
    assert_int_equal(status, expected);
    assert_true(tk_sentinel_intact(out, sizeof out));
    assert_true(tk_sentinel_intact(&found, sizeof found));
}

static void invalid_arguments_write_nothing(void **state)
{
    (void)state;
    const float values[] = {1.0f, 2.0f, 1000.0f, 3.0f};
    detect_input *in = input_new(values, 4);
    const sinkkit_channel_stats *s = &in->stats;
    unsigned char *area = scratch;
    const size_t size = sinkkit_detect_scratch_size(4);

    expect_rejected(NULL, NULL, area, size, 4, true, true, SINKKIT_ERROR_NULL_POINTER);
    expect_rejected(s, NULL, area, size, 4, true, false, SINKKIT_ERROR_NULL_POINTER);
    expect_rejected(s, NULL, area, size, 4, false, true, SINKKIT_ERROR_NULL_POINTER);

    sinkkit_channel_stats broken = *s;
    broken.max_abs = NULL;
    expect_rejected(&broken, NULL, area, size, 4, true, true, SINKKIT_ERROR_NULL_POINTER);
    broken = *s;
    broken.argmax_token = NULL;
    expect_rejected(&broken, NULL, area, size, 4, true, true, SINKKIT_ERROR_NULL_POINTER);
    broken = *s;
    broken.sum_squares = NULL;
    expect_rejected(&broken, NULL, area, size, 4, true, true, SINKKIT_ERROR_NULL_POINTER);
    broken = *s;
    broken.channels = 0;
    expect_rejected(&broken, NULL, area, size, 4, true, true, SINKKIT_ERROR_INVALID_SHAPE);
    broken.channels = SIZE_MAX / 2;
    expect_rejected(&broken, NULL, area, SIZE_MAX, 4, true, true, SINKKIT_ERROR_INVALID_SHAPE);

    const float bad_values[] = {-1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 4; i++) {
        sinkkit_detect_params params = params_of(bad_values[i], 0.0f);
        expect_rejected(s, &params, area, size, 4, true, true, SINKKIT_ERROR_INVALID_VALUE);
        params = params_of(100.0f, bad_values[i]);
        expect_rejected(s, &params, area, size, 4, true, true, SINKKIT_ERROR_INVALID_VALUE);
    }

    expect_rejected(s, NULL, NULL, size, 4, true, true, SINKKIT_ERROR_BUFFER_TOO_SMALL);
    expect_rejected(s, NULL, area, size - 1, 4, true, true, SINKKIT_ERROR_BUFFER_TOO_SMALL);
    expect_rejected(s, NULL, area, 0, 4, true, true, SINKKIT_ERROR_BUFFER_TOO_SMALL);

    /* Scratch on top of the statistics it reads. */
    expect_rejected(s, NULL, in->sum_squares, sizeof in->sum_squares, 4, true, true, SINKKIT_ERROR_ALIASING);

    /* The statistics are never written. */
    for (size_t c = 0; c < 4; c++)
        assert_true(same_float_bits(in->max_abs[c], values[c]));
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_scratch_size),
        cmocka_unit_test(odd_count_median),
        cmocka_unit_test(even_count_median),
        cmocka_unit_test(zero_median),
        cmocka_unit_test(nan_channels_last),
        cmocka_unit_test(capacity_too_small),
        cmocka_unit_test(min_abs_and_ties),
        cmocka_unit_test(single_channel),
        cmocka_unit_test(infinite_channel),
        cmocka_unit_test(scratch_any_alignment),
        cmocka_unit_test(matches_brute_force),
        cmocka_unit_test(invalid_arguments_write_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
