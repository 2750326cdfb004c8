/* Super-channel detection: channels whose max |a| is a large multiple of the median channel's. */
#include <math.h>
#include <stdalign.h>
#include <stdint.h>

#include "baseline_guard.h"
#include "sinkkit.h"
#include "validate.h"

sinkkit_detect_params sinkkit_detect_default_params(void)
{
    sinkkit_detect_params params = {SINKKIT_DETECT_DEFAULT_MIN_RATIO, SINKKIT_DETECT_DEFAULT_MIN_ABS};
    return params;
}

/* The scratch has room for one float per channel, plus the bytes needed to align them inside any buffer. */
size_t sinkkit_detect_scratch_size(size_t channels)
{
    size_t bytes;
    if (sinkkit_checked_bytes(channels, sizeof(float), &bytes) != SINKKIT_OK ||
        __builtin_add_overflow(bytes, alignof(float) - 1, &bytes))
        return 0;
    return bytes;
}

/* ---- argument checks ---- */

static bool parameter_valid(float value)
{
    return value >= 0.0f && isfinite(value);
}

/* Checks everything that does not depend on the values of the statistics. */
static sinkkit_status check_detect_arguments(const sinkkit_channel_stats *stats, const sinkkit_detect_params *params,
                                             const void *scratch, size_t scratch_size,
                                             const sinkkit_super_channel *out, size_t capacity, const size_t *found)
{
    if (stats == NULL || stats->max_abs == NULL || stats->argmax_token == NULL || stats->sum_squares == NULL ||
        found == NULL || (out == NULL && capacity > 0))
        return SINKKIT_ERROR_NULL_POINTER;
    if (stats->channels == 0)
        return SINKKIT_ERROR_INVALID_SHAPE;

    size_t max_bytes;
    size_t argmax_bytes;
    size_t sum_bytes;
    size_t out_bytes;
    const size_t needed = sinkkit_detect_scratch_size(stats->channels);
    if (needed == 0 || sinkkit_checked_bytes(stats->channels, sizeof(float), &max_bytes) != SINKKIT_OK ||
        sinkkit_checked_bytes(stats->channels, sizeof(uint64_t), &argmax_bytes) != SINKKIT_OK ||
        sinkkit_checked_bytes(stats->channels, sizeof(double), &sum_bytes) != SINKKIT_OK ||
        sinkkit_checked_bytes(capacity, sizeof(sinkkit_super_channel), &out_bytes) != SINKKIT_OK)
        return SINKKIT_ERROR_INVALID_SHAPE;

    if (params != NULL && (!parameter_valid(params->min_ratio) || !parameter_valid(params->min_abs)))
        return SINKKIT_ERROR_INVALID_VALUE;
    if (scratch == NULL || scratch_size < needed)
        return SINKKIT_ERROR_BUFFER_TOO_SMALL;

    const sinkkit_span stats_spans[3] = {sinkkit_span_of(stats->max_abs, max_bytes),
                                         sinkkit_span_of(stats->argmax_token, argmax_bytes),
                                         sinkkit_span_of(stats->sum_squares, sum_bytes)};

    /* Scratch, out and found are written, so none of them may share a byte with an input or each other. */
    const sinkkit_span written[3] = {sinkkit_span_of(scratch, needed), sinkkit_span_of(out, out_bytes),
                                     sinkkit_span_of(found, sizeof *found)};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (sinkkit_spans_overlap(written[i], stats_spans[j]))
                return SINKKIT_ERROR_ALIASING;
            if (i < j && sinkkit_spans_overlap(written[i], written[j]))
                return SINKKIT_ERROR_ALIASING;
        }
    }
    return SINKKIT_OK;
}

/* ---- median by selection ---- */

static void swap_values(float *values, size_t i, size_t j)
{
    float saved = values[i];
    values[i] = values[j];
    values[j] = saved;
}

/* Restores the max-heap property below root in values[0, count). */
static void sift_down_values(float *values, size_t root, size_t count)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= count)
            return;
        if (child + 1 < count && values[child + 1] > values[child])
            child++;
        if (!(values[child] > values[root]))
            return;
        swap_values(values, root, child);
        root = child;
    }
}

/* Sorts values[0, count) ascending in O(count log count): the fallback that bounds selection. */
static void heapsort_values(float *values, size_t count)
{
    for (size_t i = count / 2; i-- > 0;)
        sift_down_values(values, i, count);
    for (size_t end = count; end-- > 1;) {
        swap_values(values, 0, end);
        sift_down_values(values, 0, end);
    }
}

static float median_of_three(float a, float b, float c)
{
    if (a > b) {
        float saved = a;
        a = b;
        b = saved;
    }
    if (b > c)
        b = c;
    return a > b ? a : b;
}

/* Rearranges values[0, count) (no NaN) so that values[k] is the k-th smallest, everything before it is
   not greater and everything after it is not smaller. Three-way partitions let runs of equal values
   (such as all-zero channels) finish in one pass. After about 2 log2(count) rounds the remaining range
   is heapsorted, so the worst case is O(count log count). */
static void select_kth(float *values, size_t count, size_t k)
{
    size_t low = 0;
    size_t high = count;
    size_t rounds_left = 2;
    for (size_t n = count; n > 1; n /= 2)
        rounds_left += 2;

    while (high - low > 1) {
        if (rounds_left-- == 0) {
            heapsort_values(values + low, high - low);
            return;
        }

        float pivot = median_of_three(values[low], values[low + (high - low) / 2], values[high - 1]);

        /* values[low, less) < pivot, values[less, i) == pivot, values[greater, high) > pivot. */
        size_t less = low;
        size_t i = low;
        size_t greater = high;
        while (i < greater) {
            if (values[i] < pivot)
                swap_values(values, i++, less++);
            else if (values[i] > pivot)
                swap_values(values, i, --greater);
            else
                i++;
        }

        if (k < less)
            high = less;
        else if (k >= greater)
            low = greater;
        else
            return;
    }
}

/* Returns the median of the channels' max_abs that are not NaN, computed in double, and stores how many
   there were in *count. When *count is 0 the returned value means nothing. */
static double median_without_nan(const sinkkit_channel_stats *stats, void *scratch, size_t *count)
{
    /* sinkkit_detect_scratch_size() includes the slack that this alignment can use. */
    uintptr_t address = (uintptr_t)scratch;
    float *values = (float *)((address + alignof(float) - 1) & ~(uintptr_t)(alignof(float) - 1));

    size_t n = 0;
    for (size_t c = 0; c < stats->channels; c++) {
        if (!isnan(stats->max_abs[c]))
            values[n++] = stats->max_abs[c];
    }
    *count = n;
    if (n == 0)
        return 0.0;

    const size_t upper = n / 2;
    select_kth(values, n, upper);
    if (n % 2 == 1)
        return values[upper];

    /* Everything below the upper middle is not greater than it, so the lower middle is their maximum. */
    float lower = values[0];
    for (size_t i = 1; i < upper; i++) {
        if (values[i] > lower)
            lower = values[i];
    }
    return ((double)lower + (double)values[upper]) / 2.0;
}

/* ---- hits ---- */

/* The rule for channels without NaN, with the median already known. */
typedef struct hit_rule {
    double median;
    double ratio_threshold;  /* min_ratio * median, 0 when min_ratio is 0 (so that 0 * Inf is no NaN) */
    double min_abs;
} hit_rule;

static hit_rule make_rule(const sinkkit_detect_params *params, double median)
{
    hit_rule rule;
    rule.median = median;
    rule.ratio_threshold = params->min_ratio == 0.0f ? 0.0 : (double)params->min_ratio * median;
    rule.min_abs = params->min_abs;
    return rule;
}

static bool is_finite_hit(const hit_rule *rule, float max_abs)
{
    if (!((double)max_abs >= rule->min_abs))
        return false;
    if (rule->median == 0.0)
        return max_abs > 0.0f;
    return (double)max_abs >= rule->ratio_threshold;
}

static float hit_score(const hit_rule *rule, float max_abs)
{
    if (rule->median == 0.0)
        return INFINITY;

    /* An infinite channel over an infinite median (at least half the channels saw Inf) is as large as
       the median: score 1 rather than Inf / Inf = NaN, which would have no place in the order. */
    if (isinf(max_abs) && isinf(rule->median))
        return 1.0f;
    return (float)((double)max_abs / rule->median);
}

/* Counts the hits: finite ones, and channels that saw NaN. */
static void count_hits(const sinkkit_channel_stats *stats, const hit_rule *rule, size_t *finite, size_t *nan)
{
    *finite = 0;
    *nan = 0;
    for (size_t c = 0; c < stats->channels; c++) {
        if (isnan(stats->max_abs[c]))
            (*nan)++;
        else if (is_finite_hit(rule, stats->max_abs[c]))
            (*finite)++;
    }
}

/* True when hit a comes before hit b: higher score first, then lower channel. Scores are never NaN
   here and channels are distinct, so this is a strict total order and the sort is deterministic. */
static bool hit_before(const sinkkit_super_channel *a, const sinkkit_super_channel *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->channel < b->channel;
}

static void swap_hits(sinkkit_super_channel *hits, size_t i, size_t j)
{
    sinkkit_super_channel saved = hits[i];
    hits[i] = hits[j];
    hits[j] = saved;
}

/* Restores the heap property below root, with the hit that sorts last at the top. */
static void sift_down_hits(sinkkit_super_channel *hits, size_t root, size_t count)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= count)
            return;
        if (child + 1 < count && hit_before(&hits[child], &hits[child + 1]))
            child++;
        if (!hit_before(&hits[root], &hits[child]))
            return;
        swap_hits(hits, root, child);
        root = child;
    }
}

/* Sorts hits into output order in place: heapsort needs no memory beyond the output array. */
static void sort_hits(sinkkit_super_channel *hits, size_t count)
{
    for (size_t i = count / 2; i-- > 0;)
        sift_down_hits(hits, i, count);
    for (size_t end = count; end-- > 1;) {
        swap_hits(hits, 0, end);
        sift_down_hits(hits, 0, end);
    }
}

/* Writes the finite hits, sorted, then the NaN channels in channel order. out has room for all. */
static void write_hits(const sinkkit_channel_stats *stats, const hit_rule *rule, sinkkit_super_channel *out,
                       size_t finite)
{
    size_t next_finite = 0;
    size_t next_nan = finite;
    for (size_t c = 0; c < stats->channels; c++) {
        const float max_abs = stats->max_abs[c];
        sinkkit_super_channel hit = {c, stats->argmax_token[c], max_abs, NAN, true};

        if (isnan(max_abs)) {
            out[next_nan++] = hit;
        } else if (is_finite_hit(rule, max_abs)) {
            hit.score = hit_score(rule, max_abs);
            hit.has_nan = false;
            out[next_finite++] = hit;
        }
    }

    sort_hits(out, finite);
}

sinkkit_status sinkkit_detect_super_channels(const sinkkit_channel_stats *stats, const sinkkit_detect_params *params,
                                             void *scratch, size_t scratch_size, sinkkit_super_channel *out,
                                             size_t capacity, size_t *found)
{
    sinkkit_status status = check_detect_arguments(stats, params, scratch, scratch_size, out, capacity, found);
    if (status != SINKKIT_OK)
        return status;

    const sinkkit_detect_params defaults = sinkkit_detect_default_params();
    if (params == NULL)
        params = &defaults;

    size_t finite_count;
    const double median = median_without_nan(stats, scratch, &finite_count);
    const hit_rule rule = make_rule(params, median);

    size_t finite_hits = 0;
    size_t nan_hits = 0;
    if (finite_count > 0)
        count_hits(stats, &rule, &finite_hits, &nan_hits);
    else
        nan_hits = stats->channels;

    *found = finite_hits + nan_hits;
    if (*found > capacity)
        return SINKKIT_ERROR_BUFFER_TOO_SMALL;

    write_hits(stats, &rule, out, finite_hits);
    return SINKKIT_OK;
}
