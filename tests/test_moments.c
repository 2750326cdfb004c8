/* Row and head moments on every ISA against the double-precision reference. */
#include "test_support.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

/* Documented bounds: variance relative error, mean error relative to |mean| + std. */
static const double variance_bound = 1e-6;
static const double mean_bound = 1e-6;

/* Absolute slack for results below FLT_MIN: the kernel and the reference each round once to a
   subnormal float, which can land them one subnormal step apart. */
static const double subnormal_slack = 0x1p-149;

/* Row lengths that reach every tail of 8- and 16-lane vectors, every block boundary of the float
   chains, and common model widths (4096, 11008, 14336). */
static const size_t lengths[] = {
    1,   2,   3,   4,   5,   6,   7,   8,   9,   10,  11,  12,  13,  14,  15,   16,   17,   18,    19,   20,
    21,  22,  23,  24,  25,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,   36,   37,   38,    39,   40,
    41,  42,  43,  44,  45,  46,  47,  48,  49,  63,  64,  65,  127, 128, 129,  191,  192,  193,   255,  256,
    257, 383, 384, 385, 511, 512, 513, 767, 768, 769, 1000, 4096, 4097, 11008, 14336,
};

/* Largest errors seen per ISA, printed at the end as measured figures. */
static double max_variance_error[SINKKIT_ISA_COUNT];
static double max_mean_error[SINKKIT_ISA_COUNT];

typedef struct rows_shape {
    size_t rows;
    size_t cols;
    size_t stride;
} rows_shape;

static size_t shape_count(rows_shape shape)
{
    return (shape.rows - 1) * shape.stride + shape.cols;
}

static float *new_floats(size_t count)
{
    float *p = malloc((count > 0 ? count : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

/* Returns the relative error of a variance against the reference. When the reference is below FLT_MIN,
   it returns 0 within the subnormal slack and +Inf outside it. */
static double variance_error(float got, float want)
{
    if (fabsf(want) < FLT_MIN && !isnan(want) && !isnan(got))
        return fabs((double)got - (double)want) <= subnormal_slack ? 0.0 : INFINITY;
    return metric_relative_error(got, want);
}

/* Returns the error of a mean in units of |mean| + std. Infinities and NaN must match exactly. */
static double mean_error(float got, float want, float want_variance)
{
    if (!isfinite(want) || !isfinite(got))
        return metric_relative_error(got, want);

    double diff = fabs((double)got - (double)want);
    if (diff <= subnormal_slack)
        return 0.0;
    double scale = fabs((double)want) + sqrt(fabs((double)want_variance));
    return scale > 0.0 ? diff / scale : INFINITY;
}

static void record_error(sinkkit_isa isa, double variance_err, double mean_err)
{
    if (variance_err > max_variance_error[isa])
        max_variance_error[isa] = variance_err;
    if (mean_err > max_mean_error[isa])
        max_mean_error[isa] = mean_err;
}

/* Runs the kernel of k on x and checks every row against the reference. Also checks that nothing is
   written past the last row's outputs. */
static void check_rows(const sinkkit_kernel_table *k, const float *x, rows_shape shape, unsigned flags,
                       const char *what)
{
    const size_t rows = shape.rows;
    float *mean = new_floats(rows + 4);
    float *variance = new_floats(rows + 4);
    float *want_mean = new_floats(rows);
    float *want_variance = new_floats(rows);
    tk_fill_sentinel(mean, (rows + 4) * sizeof(float));
    tk_fill_sentinel(variance, (rows + 4) * sizeof(float));

    k->row_moments_f32(x, rows, shape.cols, shape.stride, mean, variance, flags);
    sinkkit_row_moments_f32_reference(x, rows, shape.cols, shape.stride, want_mean, want_variance, flags);

    for (size_t i = 0; i < rows; i++) {
        double v_err = variance_error(variance[i], want_variance[i]);
        double m_err = mean_error(mean[i], want_mean[i], want_variance[i]);
        record_error(k->isa, isfinite(v_err) ? v_err : 0.0, isfinite(m_err) ? m_err : 0.0);

        if (!(v_err <= variance_bound)) {
            print_error("%s: row %zu of %zu x %zu (stride %zu, flags %u): variance %.9g, reference %.9g, "
                        "relative error %.3g\n",
                        what, i, rows, shape.cols, shape.stride, flags, variance[i], want_variance[i], v_err);
            fail();
        }
        if (!(m_err <= mean_bound)) {
            print_error("%s: row %zu of %zu x %zu (stride %zu, flags %u): mean %.9g, reference %.9g, "
                        "error %.3g of |mean| + std\n",
                        what, i, rows, shape.cols, shape.stride, flags, mean[i], want_mean[i], m_err);
            fail();
        }
    }
    assert_true(tk_sentinel_intact(mean + rows, 4 * sizeof(float)));
    assert_true(tk_sentinel_intact(variance + rows, 4 * sizeof(float)));

    free(mean);
    free(variance);
    free(want_mean);
    free(want_variance);
}

/* Fills shape's rows of x with centre + spread * u, u uniform in [-1, 1). The gaps between rows get NaN,
   so a kernel that reads past a row poisons its result. */
static void fill_rows(float *x, rows_shape shape, uint64_t *seed, float centre, float spread)
{
    for (size_t i = 0; i < shape.rows; i++) {
        float *row = x + i * shape.stride;
        tk_fill_random(row, shape.cols, seed, centre, spread);
        if (i + 1 < shape.rows) {
            for (size_t j = shape.cols; j < shape.stride; j++)
                row[j] = NAN;
        }
    }
}

/* Checks random rows of every length in lengths[] with the given centre and spread, both flags. */
static void check_all_lengths(const sinkkit_kernel_table *k, uint64_t *seed, float centre, float spread,
                              const char *what)
{
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        const size_t cols = lengths[l];
        /* 19 rows fill a group of 16 (AVX-512) or two of 8 (AVX2) and leave a partial one. Long rows,
           one at a time in every kernel, need fewer. */
        rows_shape shape = {cols <= 128 ? tk_size(19, 11) : cols <= 1000 ? 7 : tk_size(3, 2), cols, cols + (l % 3)};
        float *x = new_floats(shape_count(shape));
        fill_rows(x, shape, seed, centre, spread);

        check_rows(k, x, shape, 0, what);
        if (cols >= 2)
            check_rows(k, x, shape, SINKKIT_MOMENTS_UNBIASED, what);
        free(x);
    }
}

static void random_rows_match_reference(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 0x9E3779B97F4A7C15ull;

    check_all_lengths(k, &seed, 0.0f, 1.0f, "mean 0, spread 1");
    check_all_lengths(k, &seed, 0.5f, 1.0f, "mean 0.5, spread 1");
    check_all_lengths(k, &seed, -3.0f, 100.0f, "mean -3, spread 100");
}

/* Rows whose |mean| is 1e0 to 1e6 times their standard deviation: the case that defeats
   mean(x^2) - mean(x)^2. */
static void large_mean_small_spread(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 12345;

    check_all_lengths(k, &seed, 1e6f, 1.0f, "mean 1e6, spread 1");
    check_all_lengths(k, &seed, 1234.5f, 1e-3f, "mean 1234.5, spread 1e-3");
    check_all_lengths(k, &seed, -1e6f, 1.0f, "mean -1e6, spread 1");

    /* Spread s gives std s / sqrt(3), so centre = ratio * s puts |mean| / std near ratio * sqrt(3).
       Dividing the top ratio by 1.8 keeps it at or below 1e6. */
    const float ratios[] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f, 1e6f / 1.8f};
    const float spreads[] = {1.0f, 3.7e-2f, 5e4f};
    for (size_t s = 0; s < sizeof spreads / sizeof spreads[0]; s++) {
        for (size_t r = 0; r < sizeof ratios / sizeof ratios[0]; r++) {
            for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l += 4) {
                rows_shape shape = {5, lengths[l], lengths[l] + 1};
                float *x = new_floats(shape_count(shape));
                fill_rows(x, shape, &seed, ratios[r] * spreads[s], spreads[s]);
                check_rows(k, x, shape, 0, "ratio sweep");
                free(x);
            }
        }
    }
}

/* Rows of one constant with one element one ulp higher have a tiny positive variance, never clamped to 0. */
static void small_variance_not_clamped(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float bases[] = {1234.0f, 1234.1f, 1e6f, -7.5f, 3e-10f};

    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
            const size_t cols = lengths[l];
            if (cols < 2)
                continue;
            float *x = new_floats(cols);
            for (size_t j = 0; j < cols; j++)
                x[j] = bases[b];
            x[cols / 2] = nextafterf(bases[b], INFINITY);

            float variance = -1.0f;
            k->row_moments_f32(x, 1, cols, cols, NULL, &variance, 0);
            if (!(variance > 0.0f)) {
                print_error("base %.9g, %zu elements: variance %.9g, expected > 0\n", bases[b], cols, variance);
                fail();
            }
            check_rows(k, x, (rows_shape){1, cols, cols}, 0, "one ulp apart");
            free(x);
        }
    }
}

/* Constant rows: 1234.0 and 1234.1f (not exact in binary) have variance exactly 0 and their own value as
   the mean, at 256 copies and at lengths that leave tails. */
static void constant_rows_have_zero_variance(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float values[] = {1234.0f, 1234.1f, -0.1f, 3e38f, 1e-40f, 0.0f};
    const size_t counts[] = {1, 2, 7, 17, 255, 256, 257, 513, 4097};

    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            const size_t cols = counts[c];
            rows_shape shape = {6, cols, cols};
            float *x = new_floats(shape_count(shape));
            for (size_t j = 0; j < shape_count(shape); j++)
                x[j] = values[v];

            float mean[6];
            float variance[6];
            float unbiased[6];
            k->row_moments_f32(x, shape.rows, cols, cols, mean, variance, 0);
            if (cols >= 2)
                k->row_moments_f32(x, shape.rows, cols, cols, NULL, unbiased, SINKKIT_MOMENTS_UNBIASED);

            for (size_t i = 0; i < shape.rows; i++) {
                if (variance[i] != 0.0f || mean[i] != values[v]) {
                    print_error("%zu copies of %.9g: mean %.9g, variance %.9g\n", cols, values[v], mean[i],
                                variance[i]);
                    fail();
                }
                if (cols >= 2)
                    assert_true(unbiased[i] == 0.0f);
            }
            free(x);
        }
    }
}

/* Every offset of the data from a 64-byte boundary gives bitwise the same results. */
static void offsets_give_identical_bits(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 77;
    const size_t cols_list[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 47, 64, 100, 128, 385, 513, 1000, 4097};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        rows_shape shape = {6, cols_list[c], cols_list[c] + 3};
        const size_t count = shape_count(shape);
        float *source = new_floats(count);
        fill_rows(source, shape, &seed, 100.0f, 3.0f);

        float mean0[6];
        float variance0[6];
        for (size_t offset = 0; offset < 16; offset++) {
            tk_buffer buffer = tk_buffer_new(count, offset);
            memcpy(buffer.data, source, count * sizeof(float));

            float mean[6];
            float variance[6];
            k->row_moments_f32(buffer.data, shape.rows, shape.cols, shape.stride, mean, variance, 0);
            if (offset == 0) {
                memcpy(mean0, mean, sizeof mean);
                memcpy(variance0, variance, sizeof variance);
                check_rows(k, buffer.data, shape, 0, "aligned");
            } else if (memcmp(mean, mean0, sizeof mean) != 0 || memcmp(variance, variance0, sizeof variance) != 0) {
                print_error("%zu columns: results at offset %zu floats differ from offset 0\n", shape.cols, offset);
                fail();
            }
            tk_buffer_free(&buffer);
        }
        free(source);
    }
}

/* Rows that end right before a PROT_NONE page: any read past the last element faults. */
static void guard_page_buffers(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 4242;

    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        for (size_t rows = 1; rows <= 5; rows += 4) {
            rows_shape shape = {rows, lengths[l], lengths[l] + 2};
            tk_buffer buffer = tk_buffer_new(shape_count(shape), TK_AT_GUARD);
            fill_rows(buffer.data, shape, &seed, -20.0f, 5.0f);
            check_rows(k, buffer.data, shape, 0, "at guard page");
            tk_buffer_free(&buffer);
        }
    }
}

/* Many rows with strides longer than the row, and NaN in the gaps. */
static void many_strided_rows(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 99;
    const size_t cols_list[] = {5, 32, 64, 100, 128, 600, 4096};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        const size_t cols = cols_list[c];
        rows_shape shape = {cols <= 128 ? tk_size(203, 37) : tk_size(23, 6), cols, cols + 1 + c * 5};
        float *x = new_floats(shape_count(shape));
        fill_rows(x, shape, &seed, 2.0f, 0.25f);
        check_rows(k, x, shape, 0, "strided");
        check_rows(k, x, shape, SINKKIT_MOMENTS_UNBIASED, "strided");
        free(x);
    }
}

/* Asking for one output gives bitwise what a call with both outputs gives, and leaves the other alone. */
static void mean_only_and_variance_only(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 5;
    const size_t cols_list[] = {1, 9, 33, 128, 700, 4096};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        rows_shape shape = {9, cols_list[c], cols_list[c]};
        float *x = new_floats(shape_count(shape));
        fill_rows(x, shape, &seed, 1e3f, 0.5f);

        float mean[9];
        float variance[9];
        float mean_only[9];
        float variance_only[9];
        k->row_moments_f32(x, shape.rows, shape.cols, shape.stride, mean, variance, 0);
        k->row_moments_f32(x, shape.rows, shape.cols, shape.stride, mean_only, NULL, 0);
        k->row_moments_f32(x, shape.rows, shape.cols, shape.stride, NULL, variance_only, 0);

        assert_memory_equal(mean, mean_only, sizeof mean);
        assert_memory_equal(variance, variance_only, sizeof variance);
        check_rows(k, x, shape, 0, "both outputs");
        free(x);
    }
}

/* Splitting the rows of one call into several calls gives bitwise the same results. */
static void split_calls_give_identical_bits(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 31337;
    const size_t cols_list[] = {1, 6, 16, 37, 64, 128, 200, 512, 513, 2000};
    const size_t rows = 23;

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        rows_shape shape = {rows, cols_list[c], cols_list[c] + 4};
        float *x = new_floats(shape_count(shape));
        fill_rows(x, shape, &seed, -50.0f, 7.0f);

        float mean[23];
        float variance[23];
        k->row_moments_f32(x, rows, shape.cols, shape.stride, mean, variance, SINKKIT_MOMENTS_UNBIASED * (c % 2));

        /* Chunks of 1, 2, 3, 5 and 7 rows start at many phases of a group of 8 or 16 rows. */
        const size_t chunks[] = {1, 2, 3, 5, 7};
        for (size_t s = 0; s < sizeof chunks / sizeof chunks[0]; s++) {
            float split_mean[23];
            float split_variance[23];
            for (size_t i = 0; i < rows; i += chunks[s]) {
                const size_t n = rows - i < chunks[s] ? rows - i : chunks[s];
                k->row_moments_f32(x + i * shape.stride, n, shape.cols, shape.stride, split_mean + i,
                                   split_variance + i, SINKKIT_MOMENTS_UNBIASED * (c % 2));
            }
            if (memcmp(mean, split_mean, sizeof mean) != 0 || memcmp(variance, split_variance, sizeof variance) != 0) {
                print_error("%zu columns: chunks of %zu rows differ from one call\n", shape.cols, chunks[s]);
                fail();
            }
        }
        free(x);
    }
}

/* Magnitudes whose squares overflow or underflow float still meet the bound. */
static void huge_and_tiny_magnitudes(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 2718;
    const struct {
        float centre;
        float spread;
    } cases[] = {
        {1e30f, 1e29f},  {0.0f, 1e30f},   {-1e30f, 1e30f},  {1e19f, 1e18f}, {0.0f, 1.8e19f}, {1e-30f, 1e-31f},
        {0.0f, 1e-30f},  {1e-13f, 1e-14f}, {0.0f, 0x1p-50f}, {0.0f, 0x1p-49f}, {1e-38f, 1e-38f}, {0.0f, 3e-39f},
        {1e-44f, 1e-44f}, {3e38f, 1e32f},  {0.0f, 1e38f},
    };
    const size_t cols_list[] = {1, 2, 5, 16, 33, 128, 515, 4096};

    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
            rows_shape shape = {5, cols_list[c], cols_list[c]};
            float *x = new_floats(shape_count(shape));
            fill_rows(x, shape, &seed, cases[t].centre, cases[t].spread);
            check_rows(k, x, shape, 0, "huge or tiny");
            free(x);
        }
    }

    /* Whole subnormal rows: multiples of 2^-149 between -1000 and 1000. */
    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        rows_shape shape = {3, cols_list[c], cols_list[c]};
        float *x = new_floats(shape_count(shape));
        for (size_t j = 0; j < shape_count(shape); j++)
            x[j] = ldexpf((float)((int)(tk_random_u64(&seed) % 2001) - 1000), -149);
        check_rows(k, x, shape, 0, "subnormal");
        free(x);
    }
}

/* One large square overflows float while the variance stays finite, and +-3e38 gives a variance above
   FLT_MAX. */
static void overflowing_squares(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t cols_list[] = {2, 3, 16, 17, 128, 1000, 4096};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        const size_t cols = cols_list[c];
        float *x = new_floats(2 * cols);
        for (size_t j = 0; j < cols; j++) {
            x[j] = (j % 2 == 0) ? 3e38f : -3e38f;
            x[cols + j] = (j == cols / 2) ? 1.9e19f : 0.0f;
        }

        float mean[2];
        float variance[2];
        k->row_moments_f32(x, 2, cols, cols, mean, variance, 0);
        assert_true(isinf(variance[0]) && variance[0] > 0.0f);
        assert_true(isfinite(mean[0]));
        assert_true(isfinite(variance[1]));
        check_rows(k, x, (rows_shape){2, cols, cols}, 0, "overflowing squares");
        free(x);
    }
}

/* Sixteen deviations of +-1 come first, then many of +-2^-12. A float sum that keeps adding the tiny
   squares (2^-24 each) to a partial sum of at least 1 rounds every one of them away. The flushes to
   double must prevent that. The mean is exactly 0, so the reference is exact here. */
static void small_terms_not_absorbed(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t cols_list[] = {34, 130, 1024, 4096, 11008, 14336};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        const size_t cols = cols_list[c];
        float *x = new_floats(cols);
        for (size_t j = 0; j < cols; j++) {
            const float magnitude = j < 16 ? 1.0f : 0x1p-12f;
            x[j] = (j % 2 == 0) ? magnitude : -magnitude;
        }
        check_rows(k, x, (rows_shape){1, cols, cols}, 0, "small after large");
        free(x);
    }
}

/* Rows whose first elements are unlike the rest: a shift estimated from the start of the row misses the
   mean by many standard deviations, so the kernels must detect it and form the sums again around a
   better shift. The outlier at the start of the last row moves even a whole-row float mean a long way
   when the row is short. */
static void shift_far_from_mean(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 606;
    const size_t cols_list[] = {3, 16, 37, 100, 128, 129, 300, 512, 600, 1024, 4096, 4100, 11008};
    const float levels[] = {1e3f, -4e4f, 1e6f};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        const size_t cols = cols_list[c];
        for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
            rows_shape shape = {tk_size(18, 5), cols, cols};
            float *x = new_floats(shape_count(shape));
            fill_rows(x, shape, &seed, 0.25f, 1.0f);

            /* Row 0: its first eighth sits at the level. Row 1: its last seven eighths do. Last row: one
               huge first element. */
            for (size_t j = 0; j < cols; j++) {
                if (j < cols / 8 + 1)
                    x[j] += levels[l];
                else
                    x[cols + j] += levels[l];
            }
            x[(shape.rows - 1) * cols] = levels[l] * 1e3f;

            check_rows(k, x, shape, 0, "shift far from the mean");
            check_rows(k, x, shape, SINKKIT_MOMENTS_UNBIASED, "shift far from the mean");
            free(x);
        }
    }
}

/* Fills x with one of the kinds of rows that every kernel must hand to the shared rescue: deviations
   whose squares underflow, constants, squares beyond float, and Inf or NaN. */
static void fill_rescued_row(float *x, size_t cols, size_t kind, uint64_t *seed)
{
    for (size_t j = 0; j < cols; j++) {
        const int step = (int)(tk_random_u64(seed) % 2001) - 1000;
        switch (kind) {
        case 0: /* spread about 2^-60: sum of squared deviations far below n * 2^-100 */
            x[j] = ldexpf((float)step, -70);
            break;
        case 1: /* a constant that is not exact in binary */
            x[j] = 1234.1f;
            break;
        case 2: /* alternating +-3e38: x - c and its square overflow float */
            x[j] = (j % 2 == 0) ? 3e38f : -3e38f;
            break;
        case 3: /* deviations near 2e19, whose squares exceed float, with a finite variance */
            x[j] = ((j % 2 == 0) ? 2e19f : -2e19f) + (float)step * 1e15f;
            break;
        default: /* a NaN or an Inf among ordinary values */
            x[j] = (float)step;
            if (j == cols / 3)
                x[j] = (kind == 4) ? NAN : -INFINITY;
            break;
        }
    }
}

/* The rows that need the rescue get bitwise the results of sinkkit_moments_row_rescue() on every ISA, at
   every length: the kernels' vectorised decisions agree with the shared one. */
static void rescued_rows_match_shared_rescue(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 9090;
    const size_t cols_list[] = {2, 7, 16, 31, 64, 100, 128, 129, 513, 4096};

    for (size_t kind = 0; kind < 6; kind++) {
        for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
            const size_t cols = cols_list[c];
            rows_shape shape = {17, cols, cols};
            float *x = new_floats(shape_count(shape));
            for (size_t i = 0; i < shape.rows; i++)
                fill_rescued_row(x + i * cols, cols, kind, &seed);

            float mean[17];
            float variance[17];
            k->row_moments_f32(x, shape.rows, cols, cols, mean, variance, SINKKIT_MOMENTS_UNBIASED);
            for (size_t i = 0; i < shape.rows; i++) {
                float want_mean;
                float want_variance;
                sinkkit_moments_row_rescue(x + i * cols, cols, SINKKIT_MOMENTS_UNBIASED, &want_mean, &want_variance);
                if (memcmp(&mean[i], &want_mean, sizeof(float)) != 0 ||
                    memcmp(&variance[i], &want_variance, sizeof(float)) != 0) {
                    print_error("kind %zu, %zu columns, row %zu: mean %.9g variance %.9g, rescue gives %.9g %.9g\n",
                                kind, cols, i, mean[i], variance[i], want_mean, want_variance);
                    fail();
                }
            }
            free(x);
        }
    }
}

/* Rows with NaN or Inf take the shared rescue path, so their results are bitwise those of the scalar
   kernel, which every build has. Other rows may differ between ISAs within the bounds. */
static void expect_rescued_rows_as_scalar(const float *x, rows_shape shape, const float *mean, const float *variance)
{
    const sinkkit_kernel_table *scalar = sinkkit_kernel_table_for(SINKKIT_ISA_SCALAR);
    float *scalar_mean = new_floats(shape.rows);
    float *scalar_variance = new_floats(shape.rows);
    scalar->row_moments_f32(x, shape.rows, shape.cols, shape.stride, scalar_mean, scalar_variance, 0);

    for (size_t i = 0; i < shape.rows; i++) {
        if (isfinite(variance[i]))
            continue;
        assert_memory_equal(&mean[i], &scalar_mean[i], sizeof(float));
        assert_memory_equal(&variance[i], &scalar_variance[i], sizeof(float));
    }
    free(scalar_mean);
    free(scalar_variance);
}

/* A NaN makes only its own row NaN, wherever it sits in the row. */
static void nan_affects_only_its_row(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 1;
    const size_t cols_list[] = {1, 5, 16, 37, 128, 600, 4096};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        const size_t cols = cols_list[c];
        const size_t positions[] = {0, cols / 2, cols - 1};
        for (size_t p = 0; p < 3; p++) {
            rows_shape shape = {9, cols, cols};
            float *x = new_floats(shape_count(shape));
            fill_rows(x, shape, &seed, 10.0f, 1.0f);
            x[3 * cols + positions[p]] = NAN;

            float mean[9];
            float variance[9];
            k->row_moments_f32(x, shape.rows, cols, cols, mean, variance, 0);
            for (size_t i = 0; i < shape.rows; i++) {
                if (i == 3) {
                    assert_true(isnan(mean[i]));
                    assert_true(isnan(variance[i]));
                } else {
                    assert_true(isfinite(mean[i]));
                    assert_true(isfinite(variance[i]));
                }
            }
            check_rows(k, x, shape, 0, "NaN row");
            expect_rescued_rows_as_scalar(x, shape, mean, variance);
            free(x);
        }
    }
}

/* +Inf, -Inf and both give variance NaN and mean +Inf, -Inf and NaN, bitwise the same on every ISA. */
static void infinity_gives_nan_variance(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 8;
    const size_t cols_list[] = {1, 2, 9, 16, 40, 128, 1000};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        const size_t cols = cols_list[c];
        rows_shape shape = {4, cols, cols};
        float *x = new_floats(shape_count(shape));
        fill_rows(x, shape, &seed, 0.0f, 1.0f);
        x[0 * cols + cols - 1] = INFINITY;
        x[1 * cols + 0] = -INFINITY;
        x[2 * cols + 0] = INFINITY;
        x[2 * cols + cols - 1] = -INFINITY;

        float mean[4];
        float variance[4];
        k->row_moments_f32(x, shape.rows, cols, cols, mean, variance, 0);
        for (size_t i = 0; i < 3; i++)
            assert_true(isnan(variance[i]));
        assert_true(isinf(mean[0]) && mean[0] > 0.0f);
        assert_true(isinf(mean[1]) && mean[1] < 0.0f);
        if (cols >= 2)
            assert_true(isnan(mean[2]));
        assert_true(isfinite(variance[3]));

        check_rows(k, x, shape, 0, "Inf row");
        expect_rescued_rows_as_scalar(x, shape, mean, variance);
        free(x);
    }
}

/* The kernels leave the caller's floating-point control state alone. */
static void control_state_unchanged(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
#if defined(__x86_64__)
    float x[40];
    for (size_t j = 0; j < 40; j++)
        x[j] = (j % 3 == 0) ? 1e-40f : (float)j;
    x[39] = NAN;

    const unsigned before = _mm_getcsr();
    float mean[1];
    float variance[1];
    k->row_moments_f32(x, 1, 39, 39, mean, variance, 0);
    k->row_moments_f32(x, 1, 40, 40, mean, variance, 0);
    assert_int_equal(_mm_getcsr(), before);
#else
    (void)k;
    printf("SKIP: MXCSR check is x86-64 only\n");
    skip();
#endif
}

/* ---- public entry points after sinkkit_set_isa() ---- */

/* Selects isa through the public API (skipping when the CPU lacks it) and checks that it took effect. */
static const sinkkit_kernel_table *select_isa(void **state)
{
    const sinkkit_isa isa = TK_STATE_ISA(state);
    const sinkkit_kernel_table *k = tk_kernels_or_skip(isa);
    assert_int_equal(sinkkit_set_isa(isa), SINKKIT_OK);
    assert_int_equal(sinkkit_active_isa(), isa);
    return k;
}

static void public_row_moments(void **state)
{
    const sinkkit_kernel_table *k = select_isa(state);
    uint64_t seed = 404;
    const size_t cols_list[] = {1, 13, 64, 128, 777, 4096};

    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++) {
        rows_shape shape = {11, cols_list[c], cols_list[c] + 2};
        float *x = new_floats(shape_count(shape));
        fill_rows(x, shape, &seed, 1e4f, 0.1f);

        float mean[11];
        float variance[11];
        float want_mean[11];
        float want_variance[11];
        float kernel_mean[11];
        float kernel_variance[11];
        assert_int_equal(sinkkit_row_moments_f32(x, shape.rows, shape.cols, shape.stride, mean, variance, 0),
                         SINKKIT_OK);
        sinkkit_row_moments_f32_reference(x, shape.rows, shape.cols, shape.stride, want_mean, want_variance, 0);
        k->row_moments_f32(x, shape.rows, shape.cols, shape.stride, kernel_mean, kernel_variance, 0);

        for (size_t i = 0; i < shape.rows; i++) {
            assert_true(variance_error(variance[i], want_variance[i]) <= variance_bound);
            assert_true(mean_error(mean[i], want_mean[i], want_variance[i]) <= mean_bound);
        }
        /* The public call ran the selected ISA's kernel. */
        assert_memory_equal(mean, kernel_mean, sizeof mean);
        assert_memory_equal(variance, kernel_variance, sizeof variance);
        free(x);
    }

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

/* Head moments of layout against the reference applied to each (token, head) vector alone. */
static void check_head_moments(const sinkkit_kernel_table *k, const sinkkit_head_layout *layout, unsigned flags)
{
    const size_t count = (layout->tokens - 1) * layout->token_stride + (layout->heads - 1) * layout->head_stride +
                         layout->head_dim;
    uint64_t seed = layout->head_dim * 1000 + layout->heads;
    float *x = new_floats(count);
    tk_fill_random(x, count, &seed, 3.0f, 2.0f);

    const size_t outputs = layout->tokens * layout->heads;
    float *mean = new_floats(outputs);
    float *variance = new_floats(outputs);
    assert_int_equal(sinkkit_head_moments_f32(layout, x, mean, variance, flags), SINKKIT_OK);

    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const float *vector = x + t * layout->token_stride + h * layout->head_stride;
            const size_t i = t * layout->heads + h;
            float want_mean;
            float want_variance;
            float kernel_mean;
            float kernel_variance;
            sinkkit_row_moments_f32_reference(vector, 1, layout->head_dim, layout->head_dim, &want_mean,
                                              &want_variance, flags);
            k->row_moments_f32(vector, 1, layout->head_dim, layout->head_dim, &kernel_mean, &kernel_variance, flags);

            if (!(variance_error(variance[i], want_variance) <= variance_bound) ||
                !(mean_error(mean[i], want_mean, want_variance) <= mean_bound)) {
                print_error("head moments %zu x %zu x %zu, token %zu head %zu: mean %.9g (reference %.9g), "
                            "variance %.9g (reference %.9g)\n",
                            layout->tokens, layout->heads, layout->head_dim, t, h, mean[i], want_mean, variance[i],
                            want_variance);
                fail();
            }
            /* A vector gives the same bits whether it came in a group of heads or alone. */
            assert_memory_equal(&mean[i], &kernel_mean, sizeof(float));
            assert_memory_equal(&variance[i], &kernel_variance, sizeof(float));
        }
    }
    free(x);
    free(mean);
    free(variance);
}

static void public_head_moments(void **state)
{
    const sinkkit_kernel_table *k = select_isa(state);
    const size_t dims[] = {64, 128, 37, 1000};
    const size_t heads_list[] = {1, 4, 14, 32};

    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        for (size_t h = 0; h < sizeof heads_list / sizeof heads_list[0]; h++) {
            /* Token-major layouts run as one call over tokens * heads rows; 5 tokens of 4 heads end
               inside a group of 8 or 16 rows, other sizes fill several. */
            const size_t tokens = 5;
            const size_t heads = heads_list[h];
            const size_t dim = dims[d];
            sinkkit_head_layout token_major = {tokens, heads, dim, heads * dim, dim};
            sinkkit_head_layout head_major = {tokens, heads, dim, dim, tokens * dim};
            sinkkit_head_layout padded = {tokens, heads, dim, heads * (dim + 3) + 1, dim + 3};

            sinkkit_head_layout one_token = {1, heads, dim, heads * dim + 5, dim + 1};

            check_head_moments(k, &token_major, 0);
            check_head_moments(k, &head_major, 0);
            check_head_moments(k, &padded, SINKKIT_MOMENTS_UNBIASED);
            check_head_moments(k, &one_token, 0);
        }
    }

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

/* Leaves the automatic choice in place even when a test stopped before restoring it. */
static int restore_auto_isa(void **state)
{
    (void)state;
    return sinkkit_set_isa(SINKKIT_ISA_AUTO) == SINKKIT_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TK_ISA_TESTS(random_rows_match_reference),
        TK_ISA_TESTS(large_mean_small_spread),
        TK_ISA_TESTS(small_variance_not_clamped),
        TK_ISA_TESTS(constant_rows_have_zero_variance),
        TK_ISA_TESTS(offsets_give_identical_bits),
        TK_ISA_TESTS(guard_page_buffers),
        TK_ISA_TESTS(many_strided_rows),
        TK_ISA_TESTS(mean_only_and_variance_only),
        TK_ISA_TESTS(split_calls_give_identical_bits),
        TK_ISA_TESTS(huge_and_tiny_magnitudes),
        TK_ISA_TESTS(overflowing_squares),
        TK_ISA_TESTS(small_terms_not_absorbed),
        TK_ISA_TESTS(shift_far_from_mean),
        TK_ISA_TESTS(rescued_rows_match_shared_rescue),
        TK_ISA_TESTS(nan_affects_only_its_row),
        TK_ISA_TESTS(infinity_gives_nan_variance),
        TK_ISA_TESTS(control_state_unchanged),
        TK_ISA_TESTS(public_row_moments),
        TK_ISA_TESTS(public_head_moments),
    };
    const int failures = cmocka_run_group_tests(tests, NULL, restore_auto_isa);

    for (size_t i = 0; i < sizeof tk_isas / sizeof tk_isas[0]; i++) {
        const sinkkit_isa isa = tk_isas[i];
        if (sinkkit_kernel_table_for(isa) != NULL && sinkkit_isa_supported(isa)) {
            printf("%s: largest variance relative error %.3g, largest mean error %.3g of |mean| + std\n",
                   sinkkit_isa_name(isa), max_variance_error[isa], max_mean_error[isa]);
        }
    }
    return failures;
}
