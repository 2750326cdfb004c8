/* Head-wise RMSNorm: every ISA path against the double-precision reference, layouts, and hard values. */
#include "test_support.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

/* ---- problems and how to run them ---- */

/* One call's inputs. gamma is NULL when kind is SINKKIT_GAMMA_NONE. */
typedef struct rms_problem {
    sinkkit_head_layout layout;
    const float *x;
    const float *gamma;
    sinkkit_gamma_kind kind;
    float eps;
} rms_problem;

static const sinkkit_gamma_kind gamma_kinds[3] = {SINKKIT_GAMMA_NONE, SINKKIT_GAMMA_SHARED,
                                                  SINKKIT_GAMMA_PER_HEAD};

static sinkkit_head_layout token_major(size_t tokens, size_t heads, size_t head_dim)
{
    return (sinkkit_head_layout){tokens, heads, head_dim, heads * head_dim, head_dim};
}

static sinkkit_head_layout head_major(size_t tokens, size_t heads, size_t head_dim)
{
    return (sinkkit_head_layout){tokens, heads, head_dim, head_dim, tokens * head_dim};
}

static size_t vector_offset(const sinkkit_head_layout *l, size_t t, size_t h)
{
    return t * l->token_stride + h * l->head_stride;
}

/* Elements from the first element of the layout to one past its last. */
static size_t layout_span(const sinkkit_head_layout *l)
{
    return vector_offset(l, l->tokens - 1, l->heads - 1) + l->head_dim;
}

static size_t gamma_count(sinkkit_gamma_kind kind, const sinkkit_head_layout *l)
{
    if (kind == SINKKIT_GAMMA_SHARED)
        return l->head_dim;
    if (kind == SINKKIT_GAMMA_PER_HEAD)
        return l->heads * l->head_dim;
    return 0;
}

static size_t inv_count(const sinkkit_head_layout *l)
{
    return l->tokens * l->heads;
}

static void run_kernel(const sinkkit_kernel_table *k, const rms_problem *p, float *y, float *inv_rms)
{
    k->headwise_rmsnorm_f32(&p->layout, p->x, y, p->gamma, p->kind, p->eps, inv_rms);
}

/* Returns sign * m * 2^e with m uniform in [1, 2) and e uniform in [min_exp, max_exp] (finite). */
static float random_magnitude(uint64_t *seed, int min_exp, int max_exp)
{
    int e = min_exp + (int)(tk_random_u64(seed) % (uint64_t)(max_exp - min_exp + 1));
    float v = ldexpf(tk_random_float(seed, 1.0f, 2.0f), e);
    if (isinf(v))
        v = FLT_MAX;
    return (tk_random_u64(seed) & 1) ? -v : v;
}

/* Fills x with magnitudes spread over 2^-20 .. 2^20, which stresses the float partial sums more than
   uniform data does. */
static void fill_wide_range(float *x, size_t n, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = random_magnitude(seed, -20, 20);
}

/* ---- comparisons ---- */

static void expect_close(float got, double want, const char *label, size_t t, size_t h, size_t d)
{
    if (!tk_rmsnorm_close(got, want))
        fail_msg("%s at token %zu, head %zu, element %zu: got %.9g, expected %.9g (relative error %.3g)", label,
                 t, h, d, (double)got, want, metric_relative_error(got, want));
}

/* Runs the reference on p and checks every element of y and every inv_rms (when not NULL) against it. */
static void expect_matches_reference(const rms_problem *p, const float *y, const float *inv_rms)
{
    const sinkkit_head_layout *l = &p->layout;
    float *want_y = calloc(layout_span(l), sizeof(float));
    float *want_r = calloc(inv_count(l), sizeof(float));
    assert_non_null(want_y);
    assert_non_null(want_r);
    sinkkit_headwise_rmsnorm_f32_reference(l, p->x, want_y, p->gamma, p->kind, p->eps, want_r);

    for (size_t t = 0; t < l->tokens; t++) {
        for (size_t h = 0; h < l->heads; h++) {
            const size_t offset = vector_offset(l, t, h);
            for (size_t d = 0; d < l->head_dim; d++)
                expect_close(y[offset + d], want_y[offset + d], "y", t, h, d);
            if (inv_rms != NULL)
                expect_close(inv_rms[t * l->heads + h], want_r[t * l->heads + h], "inv_rms", t, h, 0);
        }
    }

    free(want_y);
    free(want_r);
}

static void expect_same_bits(const float *got, const float *want, size_t count, const char *label)
{
    for (size_t i = 0; i < count; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s differs at index %zu: got %.9g, expected %.9g", label, i, (double)got[i], (double)want[i]);
    }
}

/* Checks that y is bitwise equal to want in every element of the layout's vectors. */
static void expect_same_vectors(const sinkkit_head_layout *l, const float *y, const float *want)
{
    for (size_t t = 0; t < l->tokens; t++) {
        for (size_t h = 0; h < l->heads; h++) {
            const size_t offset = vector_offset(l, t, h);
            expect_same_bits(y + offset, want + offset, l->head_dim, "y");
        }
    }
}

/* Checks that no element of y outside the layout's vectors changed from the 0xA5 sentinel. */
static void expect_padding_untouched(const sinkkit_head_layout *l, const float *y)
{
    const size_t span = layout_span(l);
    bool *covered = calloc(span, sizeof(bool));
    assert_non_null(covered);

    for (size_t t = 0; t < l->tokens; t++) {
        for (size_t h = 0; h < l->heads; h++)
            memset(covered + vector_offset(l, t, h), 1, l->head_dim);
    }
    for (size_t i = 0; i < span; i++) {
        if (!covered[i] && !tk_sentinel_intact(y + i, sizeof(float)))
            fail_msg("padding element %zu of y was written", i);
    }
    free(covered);
}

/* Fills a fresh buffer with random x for layout l (padding included) and a gamma of kind with values
   in [-2, 2), runs the kernel with and without inv_rms, and checks both runs against the reference. */
static void check_random_problem(const sinkkit_kernel_table *k, sinkkit_head_layout l, sinkkit_gamma_kind kind,
                                 float eps, uint64_t *seed)
{
    const size_t span = layout_span(&l);
    tk_buffer x = tk_buffer_new(span, 0);
    tk_buffer gamma = tk_buffer_new(gamma_count(kind, &l), 0);
    tk_buffer y = tk_buffer_new(span, 0);
    tk_buffer y_without_r = tk_buffer_new(span, 0);
    tk_buffer r = tk_buffer_new(inv_count(&l), 0);

    fill_wide_range(x.data, span, seed);
    tk_fill_random(gamma.data, gamma.count, seed, 0.0f, 2.0f);
    tk_fill_sentinel(y.data, span * sizeof(float));
    tk_fill_sentinel(y_without_r.data, span * sizeof(float));

    rms_problem p = {l, x.data, kind == SINKKIT_GAMMA_NONE ? NULL : gamma.data, kind, eps};
    run_kernel(k, &p, y.data, r.data);
    run_kernel(k, &p, y_without_r.data, NULL);

    expect_matches_reference(&p, y.data, r.data);
    expect_padding_untouched(&l, y.data);
    expect_same_vectors(&l, y_without_r.data, y.data);

    tk_buffer_free(&x);
    tk_buffer_free(&gamma);
    tk_buffer_free(&y);
    tk_buffer_free(&y_without_r);
    tk_buffer_free(&r);
}

/* ---- shapes, tails and gamma kinds ---- */

/* Every tail length up to 3 * 16 + 1 (three AVX-512 vectors and one more), then common model sizes. */
static const size_t long_dims[] = {64, 128, 256, 4096, 14336, 16384};
#define LONG_DIM_COUNT (sizeof long_dims / sizeof long_dims[0])

static void every_head_dim_matches_reference(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 0x9E3779B97F4A7C15ULL;

    for (size_t dim = 1; dim <= 49; dim++) {
        for (size_t g = 0; g < 3; g++)
            check_random_problem(k, token_major(3, 4, dim), gamma_kinds[g], 1e-6f, &seed);
    }

    for (size_t i = 0; i < LONG_DIM_COUNT; i++) {
        const size_t dim = long_dims[i];
        const size_t tokens = dim <= 256 ? 3 : tk_size(3, 1);
        for (size_t g = 0; g < 3; g++)
            check_random_problem(k, token_major(tokens, 2, dim), gamma_kinds[g], 1e-5f, &seed);
    }
}

/* Each head is normalised over its own head_dim elements, never over the whole token row. */
static void two_heads_of_two_use_own_rms(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    const sinkkit_head_layout l = token_major(1, 2, 2);
    float y[4];
    float r[2];

    rms_problem p = {l, x, NULL, SINKKIT_GAMMA_NONE, 0.0f};
    run_kernel(k, &p, y, r);

    for (size_t h = 0; h < 2; h++) {
        const double a = x[2 * h];
        const double b = x[2 * h + 1];
        const double want_r = 1.0 / sqrt((a * a + b * b) / 2.0);
        expect_close(r[h], want_r, "inv_rms", 0, h, 0);
        expect_close(y[2 * h], a * want_r, "y", 0, h, 0);
        expect_close(y[2 * h + 1], b * want_r, "y", 0, h, 1);
    }
}

/* SHARED reads head_dim weights for every head, and PER_HEAD reads heads * head_dim of them. */
static void shared_and_per_head_gamma_differ(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    const float shared[2] = {2.0f, 3.0f};
    const float per_head[4] = {2.0f, 3.0f, 5.0f, 7.0f};
    const sinkkit_head_layout l = token_major(1, 2, 2);
    float y_none[4];
    float y_shared[4];
    float y_per_head[4];

    rms_problem p = {l, x, NULL, SINKKIT_GAMMA_NONE, 0.0f};
    run_kernel(k, &p, y_none, NULL);
    p.gamma = shared;
    p.kind = SINKKIT_GAMMA_SHARED;
    run_kernel(k, &p, y_shared, NULL);
    p.gamma = per_head;
    p.kind = SINKKIT_GAMMA_PER_HEAD;
    run_kernel(k, &p, y_per_head, NULL);

    for (size_t h = 0; h < 2; h++) {
        const double a = x[2 * h];
        const double b = x[2 * h + 1];
        const double r = 1.0 / sqrt((a * a + b * b) / 2.0);
        for (size_t d = 0; d < 2; d++) {
            const double xr = (double)x[2 * h + d] * r;
            expect_close(y_shared[2 * h + d], xr * shared[d], "SHARED y", 0, h, d);
            expect_close(y_per_head[2 * h + d], xr * per_head[2 * h + d], "PER_HEAD y", 0, h, d);
        }
    }

    /* Head 0 has the same weights under both kinds; head 1 does not. */
    expect_same_bits(y_per_head, y_shared, 2, "head 0 under SHARED and PER_HEAD");
    assert_true(y_per_head[2] != y_shared[2]);
    assert_true(y_per_head[3] != y_shared[3]);
}

/* Heads whose scales differ by 4x each: a kernel that mixes heads gives mean squares far from 1. */
static void heads_normalised_independently(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t dims[] = {1, 2, 7, 16, 33, 128};
    uint64_t seed = 77;

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (int major = 0; major < 2; major++) {
            const size_t dim = dims[i];
            sinkkit_head_layout l = major == 0 ? token_major(3, 5, dim) : head_major(3, 5, dim);
            const size_t span = layout_span(&l);
            float *x = malloc(span * sizeof(float));
            float *y = malloc(span * sizeof(float));
            assert_non_null(x);
            assert_non_null(y);

            for (size_t t = 0; t < l.tokens; t++) {
                for (size_t h = 0; h < l.heads; h++) {
                    float *v = x + vector_offset(&l, t, h);
                    tk_fill_random(v, dim, &seed, 0.0f, ldexpf(1.0f, 2 * (int)h));
                    v[0] = ldexpf(1.0f, 2 * (int)h);
                }
            }

            rms_problem p = {l, x, NULL, SINKKIT_GAMMA_NONE, 0.0f};
            run_kernel(k, &p, y, NULL);

            for (size_t t = 0; t < l.tokens; t++) {
                for (size_t h = 0; h < l.heads; h++) {
                    const float *v = y + vector_offset(&l, t, h);
                    double mean_square = 0.0;
                    for (size_t d = 0; d < dim; d++)
                        mean_square += (double)v[d] * (double)v[d];
                    mean_square /= (double)dim;
                    if (fabs(mean_square - 1.0) > 4e-6)
                        fail_msg("head %zu of token %zu (head_dim %zu): mean of y^2 is %.9g, expected 1", h, t,
                                 dim, mean_square);
                }
            }
            free(x);
            free(y);
        }
    }
}

/* eps is added to the mean square inside the square root, not after it. */
static void eps_inside_square_root(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float x[4] = {0.001f, 0.001f, 0.001f, 0.001f};
    float y[4];
    float r;

    rms_problem p = {token_major(1, 1, 4), x, NULL, SINKKIT_GAMMA_NONE, 1e-6f};
    run_kernel(k, &p, y, &r);

    const double want_r = 1.0 / sqrt((double)x[0] * (double)x[0] + (double)1e-6f);
    expect_close(r, want_r, "inv_rms", 0, 0, 0);
    for (size_t d = 0; d < 4; d++)
        expect_close(y[d], (double)x[d] * want_r, "y", 0, 0, d);

    /* The same with eps equal to the mean square, so y = x / sqrt(2 x^2), over every tail length. */
    for (size_t dim = 1; dim <= 49; dim++) {
        float v[49];
        float out[49];
        for (size_t d = 0; d < dim; d++)
            v[d] = (d & 1) ? -3.0f : 3.0f;
        p = (rms_problem){token_major(1, 1, dim), v, NULL, SINKKIT_GAMMA_NONE, 9.0f};
        run_kernel(k, &p, out, &r);

        expect_close(r, 1.0 / sqrt(18.0), "inv_rms", 0, 0, dim);
        for (size_t d = 0; d < dim; d++)
            expect_close(out[d], (double)v[d] / sqrt(18.0), "y", 0, 0, d);
    }
}

/* A zero vector with eps > 0 gives zeros of the input's sign and r = 1 / sqrt(eps). */
static void zero_vector_with_eps(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t dims[] = {1, 2, 8, 15, 16, 17, 31, 33, 48, 49, 64, 128, 4096};
    const float eps_values[] = {1e-6f, 1.0f, FLT_TRUE_MIN};

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (size_t e = 0; e < sizeof eps_values / sizeof eps_values[0]; e++) {
            const size_t dim = dims[i];
            float *x = malloc(dim * sizeof(float));
            float *y = malloc(dim * sizeof(float));
            float *g = malloc(dim * sizeof(float));
            assert_non_null(x);
            assert_non_null(y);
            assert_non_null(g);
            for (size_t d = 0; d < dim; d++) {
                x[d] = (d % 3 == 1) ? -0.0f : 0.0f;
                g[d] = 1.5f;
            }

            float r;
            rms_problem p = {token_major(1, 1, dim), x, g, SINKKIT_GAMMA_SHARED, eps_values[e]};
            run_kernel(k, &p, y, &r);

            expect_close(r, 1.0 / sqrt((double)eps_values[e]), "inv_rms", 0, 0, dim);
            for (size_t d = 0; d < dim; d++) {
                if (y[d] != 0.0f || signbit(y[d]) != signbit(x[d]))
                    fail_msg("head_dim %zu, eps %g: y[%zu] is %g, expected %g", dim, (double)eps_values[e], d,
                             (double)y[d], (double)x[d]);
            }
            free(x);
            free(y);
            free(g);
        }
    }
}

/* A zero vector with eps = 0 gives y = 0 * Inf = NaN and r = +Inf, bitwise as on the scalar path. */
static void zero_vector_without_eps(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const sinkkit_kernel_table *scalar = sinkkit_kernel_table_for(SINKKIT_ISA_SCALAR);

    for (size_t dim = 1; dim <= 130; dim++) {
        float x[130] = {0};
        float g[130];
        float y[130];
        float want_y[130];
        float r[2];
        float want_r[2];
        for (size_t d = 0; d < dim; d++)
            g[d] = 0.5f;

        /* Token 0 is all zero, token 1 is not, so the NaN stays in its own vector. */
        float pair[260] = {0};
        pair[dim + dim / 2] = 2.0f;
        float y_pair[260];

        for (size_t kind = 0; kind < 2; kind++) {
            rms_problem p = {token_major(1, 1, dim), x, kind ? g : NULL,
                             kind ? SINKKIT_GAMMA_SHARED : SINKKIT_GAMMA_NONE, 0.0f};
            run_kernel(k, &p, y, r);
            run_kernel(scalar, &p, want_y, want_r);

            assert_true(isinf(r[0]) && r[0] > 0.0f);
            for (size_t d = 0; d < dim; d++)
                assert_true(isnan(y[d]));
            expect_same_bits(y, want_y, dim, "NaN output of a zero vector");
            expect_same_bits(r, want_r, 1, "inv_rms of a zero vector");

            p = (rms_problem){token_major(2, 1, dim), pair, p.gamma, p.kind, 0.0f};
            run_kernel(k, &p, y_pair, r);
            expect_matches_reference(&p, y_pair, r);
            assert_true(isfinite(r[1]));
        }
    }
}

/* Subnormal inputs are not flushed to zero. Their squares underflow, but r = 1000 and y = 1000 x. */
static void subnormal_row_scaled_not_flushed(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    float x[8];
    float y[8];
    float r;
    for (size_t d = 0; d < 8; d++)
        x[d] = 9.99995e-41f;
    assert_true(fpclassify(x[0]) == FP_SUBNORMAL);

    rms_problem p = {token_major(1, 1, 8), x, NULL, SINKKIT_GAMMA_NONE, 1e-6f};
    run_kernel(k, &p, y, &r);

    const double want_r = 1.0 / sqrt((double)x[0] * (double)x[0] + (double)1e-6f);
    expect_close(r, want_r, "inv_rms", 0, 0, 0);
    for (size_t d = 0; d < 8; d++) {
        expect_close(y[d], (double)x[d] * want_r, "y", 0, 0, d);
        assert_true(y[d] > 9.9e-38f);
    }
}

/* Subnormal and barely normal rows of every tail length, with and without eps, against the reference. */
static void tiny_rows_match_reference(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float magnitudes[] = {FLT_TRUE_MIN, 0x1p-140f, 1e-39f, FLT_MIN / 2.0f, 1e-25f, 1e-19f};
    const float eps_values[] = {0.0f, 1e-6f, 1e-40f};
    uint64_t seed = 4242;

    for (size_t dim = 1; dim <= 49; dim++) {
        for (size_t m = 0; m < sizeof magnitudes / sizeof magnitudes[0]; m++) {
            for (size_t e = 0; e < sizeof eps_values / sizeof eps_values[0]; e++) {
                const sinkkit_head_layout l = token_major(2, 2, dim);
                float x[4 * 49];
                float y[4 * 49];
                float r[4];
                for (size_t i = 0; i < 4 * dim; i++)
                    x[i] = magnitudes[m] * tk_random_float(&seed, -4.0f, 4.0f);
                x[0] = magnitudes[m];

                rms_problem p = {l, x, NULL, SINKKIT_GAMMA_NONE, eps_values[e]};
                run_kernel(k, &p, y, r);
                expect_matches_reference(&p, y, r);
            }
        }
    }
}

/* The sum of squares of n ones is n for every tail length, even with other data past the end. Lengths
   1..49 cover three AVX-512 vectors and one more. Longer ones put the tail after whole steps and
   blocks, where the accumulator that takes the tail already contains data. */
static void masked_tails_sum_exactly(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t max_dim = 300;
    float *x = malloc((max_dim + 64) * sizeof(float));
    float *y = malloc((max_dim + 64) * sizeof(float));
    assert_non_null(x);
    assert_non_null(y);

    for (size_t dim = 1; dim <= max_dim; dim++) {
        /* Large values right after the vector catch a tail that reads or keeps lanes past the end. */
        for (size_t i = 0; i < max_dim + 64; i++) {
            x[i] = i < dim ? 1.0f : 1000.0f;
            y[i] = -7.0f;
        }

        float r;
        rms_problem p = {token_major(1, 1, dim), x, NULL, SINKKIT_GAMMA_NONE, 0.0f};
        run_kernel(k, &p, y, &r);
        if (r != 1.0f)
            fail_msg("head_dim %zu of ones: inv_rms %.9g, expected exactly 1", dim, (double)r);
        for (size_t i = 0; i < max_dim + 64; i++)
            assert_true(y[i] == (i < dim ? 1.0f : -7.0f));

        /* Squares of 1..dim are integers whose float partial sums stay below 2^24 and are exact, so r is
           exactly the float of the double formula. */
        for (size_t d = 0; d < dim; d++)
            x[d] = (float)(d + 1);
        const double n = (double)dim;
        const double sum = n * (n + 1.0) * (2.0 * n + 1.0) / 6.0;
        run_kernel(k, &p, y, &r);
        if (r != (float)(1.0 / sqrt(sum / n)))
            fail_msg("head_dim %zu of 1..n: inv_rms %.9g, expected %.9g", dim, (double)r, 1.0 / sqrt(sum / n));
        for (size_t d = 0; d < dim; d++)
            expect_close(y[d], x[d] / sqrt(sum / n), "y", 0, 0, d);
    }
    free(x);
    free(y);
}

/* Rule 2 of the numeric scheme, bit for bit. With x = k * 2^e for small integers k, every float partial
   sum is exact on every ISA, so the kernel's sum of squares is the exact S computed here. Then y must be
   the shared rescue's output when sinkkit_rms_needs_rescue() returns true, and otherwise (x * rf) * g with
   rf = (float)sinkkit_rms_inverse(S). The exponents straddle the rescue floor of the sum of squares. */
static void exact_sums_follow_rule_two(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t dims[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 100, 128, 255, 256, 257, 300, 1000};
    /* Above 2^55 a block's float partial could overflow, and below 2^-74 squares would round. */
    const int exponents[] = {-74, -60, -54, -53, -52, -51, -50, -40, 0, 30, 55};
    const float eps_values[] = {0.0f, 0x1p-110f, 0x1p-60f, 1e-6f};
    uint64_t seed = 1729;
    float x[1000];
    float g[1000];
    float y[1000];
    float want[1000];

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (size_t e = 0; e < sizeof exponents / sizeof exponents[0]; e++) {
            for (size_t q = 0; q < 2 * (sizeof eps_values / sizeof eps_values[0]); q++) {
                const size_t n = dims[i];
                const float eps = eps_values[q / 2];
                const bool with_gamma = q % 2 == 1;
                int64_t sum_k2 = 0;
                for (size_t d = 0; d < n; d++) {
                    const int m = d == 0 ? 7 : (int)(tk_random_u64(&seed) % 15) - 7;
                    x[d] = ldexpf((float)m, exponents[e]);
                    g[d] = tk_random_float(&seed, -2.0f, 2.0f);
                    sum_k2 += m * m;
                }

                const double s = ldexp((double)sum_k2, 2 * exponents[e]);
                const double r = sinkkit_rms_inverse(s, n, eps);
                const float *gamma = with_gamma ? g : NULL;
                float want_r;
                if (sinkkit_rms_needs_rescue(s, n, r)) {
                    sinkkit_rmsnorm_vector_rescue(x, want, gamma, n, eps, &want_r);
                } else {
                    want_r = (float)r;
                    for (size_t d = 0; d < n; d++) {
                        const float xr = x[d] * want_r;
                        want[d] = with_gamma ? xr * g[d] : xr;
                    }
                }

                float got_r;
                rms_problem p = {token_major(1, 1, n), x, gamma, with_gamma ? SINKKIT_GAMMA_SHARED : SINKKIT_GAMMA_NONE,
                                 eps};
                run_kernel(k, &p, y, &got_r);
                if (memcmp(&got_r, &want_r, sizeof got_r) != 0)
                    fail_msg("head_dim %zu, 2^%d, eps %g: inv_rms %.9g, expected %.9g", n, exponents[e], (double)eps,
                             (double)got_r, (double)want_r);
                expect_same_bits(y, want, n, "y under rule 2");
            }
        }
    }
}

/* Vectors whose float sums overflow or are not finite go to the shared rescue and match it bitwise. */
static void overflow_and_non_finite_use_rescue(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float specials[] = {1e20f, -FLT_MAX, INFINITY, -INFINITY, NAN};
    uint64_t seed = 31;
    float x[300];
    float g[300];
    float y[300];
    float want[300];

    for (size_t n = 1; n <= 300; n += (n < 40 ? 1 : 37)) {
        for (size_t sp = 0; sp < sizeof specials / sizeof specials[0]; sp++) {
            tk_fill_random(x, n, &seed, 0.0f, 1.0f);
            tk_fill_random(g, n, &seed, 0.0f, 2.0f);
            x[tk_random_u64(&seed) % n] = specials[sp];

            float want_r;
            float got_r;
            sinkkit_rmsnorm_vector_rescue(x, want, g, n, 1e-6f, &want_r);
            rms_problem p = {token_major(1, 1, n), x, g, SINKKIT_GAMMA_SHARED, 1e-6f};
            run_kernel(k, &p, y, &got_r);

            expect_same_bits(y, want, n, "y of a rescued vector");
            expect_same_bits(&got_r, &want_r, 1, "inv_rms of a rescued vector");
        }
    }
}

/* ---- memory layouts ---- */

static const size_t layout_dims[] = {1, 3, 5, 8, 15, 16, 17, 31, 33, 47, 64, 100, 128, 255, 257, 1000};
#define LAYOUT_DIM_COUNT (sizeof layout_dims / sizeof layout_dims[0])

/* Offsets 0..15 floats past a 64-byte boundary for x, y, gamma and inv_rms (each shifted differently)
   give bitwise the same result. */
static void offsets_give_same_bits(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 99;

    for (size_t i = 0; i < LAYOUT_DIM_COUNT; i++) {
        for (size_t g = 0; g < 3; g++) {
            const sinkkit_head_layout l = token_major(2, 3, layout_dims[i]);
            const size_t span = layout_span(&l);
            const size_t gammas = gamma_count(gamma_kinds[g], &l);
            float *x0 = malloc(span * sizeof(float));
            float *g0 = malloc((gammas + 1) * sizeof(float));
            float *want_y = malloc(span * sizeof(float));
            float want_r[6];
            assert_non_null(x0);
            assert_non_null(g0);
            assert_non_null(want_y);
            fill_wide_range(x0, span, &seed);
            tk_fill_random(g0, gammas, &seed, 0.0f, 2.0f);

            for (size_t offset = 0; offset < 16; offset++) {
                tk_buffer x = tk_buffer_new(span, offset);
                tk_buffer y = tk_buffer_new(span, (offset * 7) % 16);
                tk_buffer gamma = tk_buffer_new(gammas, (offset * 3) % 16);
                tk_buffer r = tk_buffer_new(6, (offset * 5) % 16);
                memcpy(x.data, x0, span * sizeof(float));
                memcpy(gamma.data, g0, gammas * sizeof(float));

                rms_problem p = {l, x.data, gammas ? gamma.data : NULL, gamma_kinds[g], 1e-6f};
                run_kernel(k, &p, y.data, r.data);

                if (offset == 0) {
                    expect_matches_reference(&p, y.data, r.data);
                    memcpy(want_y, y.data, span * sizeof(float));
                    memcpy(want_r, r.data, sizeof want_r);
                } else {
                    expect_same_vectors(&l, y.data, want_y);
                    expect_same_bits(r.data, want_r, 6, "inv_rms");
                }

                tk_buffer_free(&x);
                tk_buffer_free(&y);
                tk_buffer_free(&gamma);
                tk_buffer_free(&r);
            }
            free(x0);
            free(g0);
            free(want_y);
        }
    }
}

/* x, y, gamma and inv_rms each end right before a PROT_NONE page: any access past the end faults. */
static void buffers_ending_at_guard_page(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 5;

    for (size_t dim = 1; dim <= 49 + 3; dim++) {
        const size_t head_dim = dim <= 49 ? dim : (size_t)64 << (dim - 50);
        for (size_t g = 0; g < 3; g++) {
            for (int major = 0; major < 2; major++) {
                const sinkkit_head_layout l = major == 0 ? token_major(2, 3, head_dim) : head_major(2, 3, head_dim);
                const size_t span = layout_span(&l);
                tk_buffer x = tk_buffer_new(span, TK_AT_GUARD);
                tk_buffer y = tk_buffer_new(span, TK_AT_GUARD);
                tk_buffer gamma = tk_buffer_new(gamma_count(gamma_kinds[g], &l), TK_AT_GUARD);
                tk_buffer r = tk_buffer_new(inv_count(&l), TK_AT_GUARD);
                fill_wide_range(x.data, span, &seed);
                tk_fill_random(gamma.data, gamma.count, &seed, 0.0f, 2.0f);

                rms_problem p = {l, x.data, gamma.count ? gamma.data : NULL, gamma_kinds[g], 1e-6f};
                run_kernel(k, &p, y.data, r.data);
                expect_matches_reference(&p, y.data, r.data);

                /* In place, at the guard page as well. */
                run_kernel(k, &p, x.data, NULL);
                expect_same_vectors(&l, x.data, y.data);

                tk_buffer_free(&x);
                tk_buffer_free(&y);
                tk_buffer_free(&gamma);
                tk_buffer_free(&r);
            }
        }
    }
}

/* Returns layout kind 0..5: token-major, head-major, both of them padded, a single token with
   token_stride 0, and the query heads of a fused QKV buffer (a token row three times the heads' span). */
static sinkkit_head_layout stride_layout(int kind, size_t tokens, size_t heads, size_t dim)
{
    switch (kind) {
    case 0:
        return token_major(tokens, heads, dim);
    case 1:
        return head_major(tokens, heads, dim);
    case 2:
        return (sinkkit_head_layout){tokens, heads, dim, heads * (dim + 3) + 5, dim + 3};
    case 3:
        return (sinkkit_head_layout){tokens, heads, dim, dim + 2, tokens * (dim + 2) + 7};
    case 4:
        return (sinkkit_head_layout){1, heads, dim, 0, dim + 1};
    default:
        return (sinkkit_head_layout){tokens, heads, dim, 3 * heads * dim, dim};
    }
}

/* Token-major, head-major and padded strides: results match the reference and padding is untouched. */
static void strided_layouts_match_reference(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 31337;

    for (size_t i = 0; i < LAYOUT_DIM_COUNT; i++) {
        for (int layout_kind = 0; layout_kind < 6; layout_kind++) {
            for (size_t g = 0; g < 3; g++)
                check_random_problem(k, stride_layout(layout_kind, 3, 4, layout_dims[i]), gamma_kinds[g], 1e-6f, &seed);
        }
    }
}

/* y == x gives bitwise the result of a separate output buffer. */
static void in_place_equals_out_of_place(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 2024;

    for (size_t i = 0; i < LAYOUT_DIM_COUNT; i++) {
        for (int layout_kind = 0; layout_kind < 6; layout_kind++) {
            for (size_t g = 0; g < 3; g++) {
                const sinkkit_head_layout l = stride_layout(layout_kind, 3, 4, layout_dims[i]);
                const size_t span = layout_span(&l);
                float *x = malloc(span * sizeof(float));
                float *y = malloc(span * sizeof(float));
                float *gamma = malloc((gamma_count(gamma_kinds[g], &l) + 1) * sizeof(float));
                float r_out[12];
                float r_in[12];
                assert_non_null(x);
                assert_non_null(y);
                assert_non_null(gamma);
                fill_wide_range(x, span, &seed);
                tk_fill_random(gamma, gamma_count(gamma_kinds[g], &l), &seed, 0.0f, 2.0f);

                rms_problem p = {l, x, g ? gamma : NULL, gamma_kinds[g], 1e-6f};
                run_kernel(k, &p, y, r_out);
                run_kernel(k, &p, x, r_in);

                expect_same_vectors(&l, x, y);
                expect_same_bits(r_in, r_out, l.tokens * l.heads, "inv_rms");
                free(x);
                free(y);
                free(gamma);
            }
        }
    }
}

/* Splitting the tokens over several calls gives bitwise the result of one call. */
static void token_split_gives_same_bits(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t cuts[] = {0, 1, 2, 5, 6, 9};
    const size_t tokens = 9;
    const size_t heads = 3;
    uint64_t seed = 11;

    for (size_t i = 0; i < LAYOUT_DIM_COUNT; i++) {
        for (int layout_kind = 0; layout_kind < 4; layout_kind++) {
            const sinkkit_head_layout l = stride_layout(layout_kind, tokens, heads, layout_dims[i]);
            const size_t span = layout_span(&l);
            float *x = malloc(span * sizeof(float));
            float *whole = malloc(span * sizeof(float));
            float *split = malloc(span * sizeof(float));
            float gamma[3 * 1000];
            float r_whole[9 * 3];
            float r_split[9 * 3];
            assert_non_null(x);
            assert_non_null(whole);
            assert_non_null(split);
            fill_wide_range(x, span, &seed);
            tk_fill_random(gamma, heads * l.head_dim, &seed, 0.0f, 2.0f);

            rms_problem p = {l, x, gamma, SINKKIT_GAMMA_PER_HEAD, 1e-6f};
            run_kernel(k, &p, whole, r_whole);

            for (size_t c = 0; c + 1 < sizeof cuts / sizeof cuts[0]; c++) {
                const size_t first = cuts[c];
                rms_problem part = p;
                part.layout.tokens = cuts[c + 1] - first;
                part.x = x + first * l.token_stride;
                run_kernel(k, &part, split + first * l.token_stride, r_split + first * heads);
            }

            expect_same_vectors(&l, split, whole);
            expect_same_bits(r_split, r_whole, tokens * heads, "inv_rms");
            free(x);
            free(whole);
            free(split);
        }
    }
}

/* ---- many vectors per call ---- */

/* Returns layout kind 0..4 with many vectors: contiguous token-major and head-major (one run through
   the whole call), padded token-major and padded head-major (one run per token or per head), and the
   query heads of a fused QKV buffer. */
static sinkkit_head_layout long_layout(int kind, size_t dim)
{
    switch (kind) {
    case 0:
        return token_major(37, 5, dim);
    case 1:
        return head_major(41, 3, dim);
    case 2:
        return (sinkkit_head_layout){29, 7, dim, 7 * (dim + 3) + 5, dim + 3};
    case 3:
        return (sinkkit_head_layout){31, 2, dim, dim + 2, 31 * (dim + 2) + 7};
    default:
        return (sinkkit_head_layout){9, 40, dim, 3 * 40 * dim, dim};
    }
}

static const size_t long_run_dims[] = {1, 5, 16, 17, 64, 100, 128, 129, 256, 257, 300};
#define LONG_RUN_DIM_COUNT (sizeof long_run_dims / sizeof long_run_dims[0])

/* Calls with 60 to 360 vectors, where the kernels' pipelines run their main loops, against the
   reference, with and without inv_rms (different code paths), at two alignments of y. */
static void long_runs_match_reference(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 0xC0FFEE;

    for (size_t i = 0; i < LONG_RUN_DIM_COUNT; i++) {
        for (int kind = 0; kind < 5; kind++) {
            for (size_t g = 0; g < 3; g++) {
                const sinkkit_head_layout l = long_layout(kind, long_run_dims[i]);
                const size_t span = layout_span(&l);
                tk_buffer x = tk_buffer_new(span, 0);
                tk_buffer gamma = tk_buffer_new(gamma_count(gamma_kinds[g], &l), 0);
                tk_buffer y = tk_buffer_new(span, 0);
                tk_buffer y_without_r = tk_buffer_new(span, 5);
                tk_buffer r = tk_buffer_new(inv_count(&l), 0);
                fill_wide_range(x.data, span, &seed);
                tk_fill_random(gamma.data, gamma.count, &seed, 0.0f, 2.0f);
                tk_fill_sentinel(y.data, span * sizeof(float));

                rms_problem p = {l, x.data, g ? gamma.data : NULL, gamma_kinds[g], 1e-6f};
                run_kernel(k, &p, y.data, r.data);
                run_kernel(k, &p, y_without_r.data, NULL);

                expect_matches_reference(&p, y.data, r.data);
                expect_padding_untouched(&l, y.data);
                expect_same_vectors(&l, y_without_r.data, y.data);

                tk_buffer_free(&x);
                tk_buffer_free(&gamma);
                tk_buffer_free(&y);
                tk_buffer_free(&y_without_r);
                tk_buffer_free(&r);
            }
        }
    }
}

/* One call over many tokens gives bitwise the result of one call per token. */
static void long_run_equals_token_calls(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    uint64_t seed = 5150;

    for (size_t i = 0; i < LONG_RUN_DIM_COUNT; i++) {
        for (int kind = 0; kind < 5; kind++) {
            const sinkkit_head_layout l = long_layout(kind, long_run_dims[i]);
            const size_t span = layout_span(&l);
            float *x = malloc(span * sizeof(float));
            float *whole = malloc(span * sizeof(float));
            float *split = malloc(span * sizeof(float));
            float *gamma = malloc(l.heads * l.head_dim * sizeof(float));
            float *r_whole = malloc(inv_count(&l) * sizeof(float));
            float *r_split = malloc(inv_count(&l) * sizeof(float));
            assert_non_null(x);
            assert_non_null(whole);
            assert_non_null(split);
            assert_non_null(gamma);
            assert_non_null(r_whole);
            assert_non_null(r_split);
            fill_wide_range(x, span, &seed);
            tk_fill_random(gamma, l.heads * l.head_dim, &seed, 0.0f, 2.0f);

            rms_problem p = {l, x, gamma, SINKKIT_GAMMA_PER_HEAD, 1e-6f};
            run_kernel(k, &p, whole, r_whole);

            for (size_t t = 0; t < l.tokens; t++) {
                rms_problem one = p;
                one.layout.tokens = 1;
                one.x = x + t * l.token_stride;
                run_kernel(k, &one, split + t * l.token_stride, r_split + t * l.heads);
            }

            expect_same_vectors(&l, split, whole);
            expect_same_bits(r_split, r_whole, inv_count(&l), "inv_rms");
            free(x);
            free(whole);
            free(split);
            free(gamma);
            free(r_whole);
            free(r_split);
        }
    }
}

/* A vector that needs the shared rescue, at every position of a 72-vector run: its output is the
   rescue's, bit for bit, and every other vector keeps the bits of the clean run. */
static void rescue_at_every_position(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t dims[] = {33, 64, 128, 300};
    const float specials[] = {NAN, 1e20f, 0.0f};
    uint64_t seed = 616;

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        const sinkkit_head_layout l = token_major(9, 8, dims[i]);
        const size_t span = layout_span(&l);
        const size_t vectors = inv_count(&l);
        float *clean = malloc(span * sizeof(float));
        float *x = malloc(span * sizeof(float));
        float *gamma = malloc(l.head_dim * sizeof(float));
        float *want_y = malloc(span * sizeof(float));
        float *y = malloc(span * sizeof(float));
        float *want_r = malloc(vectors * sizeof(float));
        float *r = malloc(vectors * sizeof(float));
        float rescued[300];
        assert_non_null(clean);
        assert_non_null(x);
        assert_non_null(gamma);
        assert_non_null(want_y);
        assert_non_null(y);
        assert_non_null(want_r);
        assert_non_null(r);
        fill_wide_range(clean, span, &seed);
        tk_fill_random(gamma, l.head_dim, &seed, 0.0f, 2.0f);

        rms_problem p = {l, clean, gamma, SINKKIT_GAMMA_SHARED, 1e-6f};
        run_kernel(k, &p, want_y, want_r);

        for (size_t v = 0; v < vectors; v++) {
            const size_t start = v * l.head_dim;
            memcpy(x, clean, span * sizeof(float));
            if (specials[v % 3] == 0.0f)
                memset(x + start, 0, l.head_dim * sizeof(float));
            else
                x[start + tk_random_u64(&seed) % l.head_dim] = specials[v % 3];

            p.x = x;
            run_kernel(k, &p, y, r);

            float rescued_r;
            sinkkit_rmsnorm_vector_rescue(x + start, rescued, gamma, l.head_dim, 1e-6f, &rescued_r);
            expect_same_bits(y + start, rescued, l.head_dim, "y of the rescued vector");
            expect_same_bits(r + v, &rescued_r, 1, "inv_rms of the rescued vector");

            for (size_t other = 0; other < vectors; other++) {
                if (other == v)
                    continue;
                expect_same_bits(y + other * l.head_dim, want_y + other * l.head_dim, l.head_dim,
                                 "y of a clean vector");
                expect_same_bits(r + other, want_r + other, 1, "inv_rms of a clean vector");
            }
        }
        free(clean);
        free(x);
        free(gamma);
        free(want_y);
        free(y);
        free(want_r);
        free(r);
    }
}

/* Without inv_rms and with a shared or no gamma, the SIMD kernels have code of their own for some head
   sizes (64, 80, 96, 128 and 256) and for decode calls. The test covers those sizes and their
   neighbours, in a decode call, a short call and a long one. y must match the reference and equal bit
   for bit the y of the same call with inv_rms, also when vectors contain a NaN, an overflowing value
   or only zeros. */
static void fixed_sizes_equal_tracked_calls(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t dims[] = {64, 80, 96, 112, 128, 144, 256};
    const size_t shapes[][2] = {{1, 32}, {1, 5}, {40, 8}};
    const float specials[] = {NAN, 1e20f, 0.0f};
    uint64_t seed = 8096;

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            for (size_t g = 0; g < 2; g++) {
                const sinkkit_head_layout l = token_major(shapes[s][0], shapes[s][1], dims[i]);
                const size_t span = layout_span(&l);
                tk_buffer x = tk_buffer_new(span, 0);
                tk_buffer gamma = tk_buffer_new(dims[i], 0);
                tk_buffer y = tk_buffer_new(span, 0);
                tk_buffer y_tracked = tk_buffer_new(span, 0);
                tk_buffer r = tk_buffer_new(inv_count(&l), 0);
                fill_wide_range(x.data, span, &seed);
                tk_fill_random(gamma.data, gamma.count, &seed, 0.0f, 2.0f);

                rms_problem p = {l, x.data, g ? gamma.data : NULL, gamma_kinds[g], 1e-6f};
                run_kernel(k, &p, y.data, NULL);
                run_kernel(k, &p, y_tracked.data, r.data);
                expect_matches_reference(&p, y_tracked.data, r.data);
                expect_same_vectors(&l, y.data, y_tracked.data);

                /* Every third vector gets a special value, so each group of 8 vectors contains at least two. */
                for (size_t v = 0; v < inv_count(&l); v += 3) {
                    const float special = specials[(v / 3) % 3];
                    float *start = x.data + v * l.head_dim;
                    if (special == 0.0f)
                        memset(start, 0, l.head_dim * sizeof(float));
                    else
                        start[tk_random_u64(&seed) % l.head_dim] = special;
                }
                run_kernel(k, &p, y.data, NULL);
                run_kernel(k, &p, y_tracked.data, r.data);
                expect_matches_reference(&p, y_tracked.data, r.data);
                expect_same_vectors(&l, y.data, y_tracked.data);

                tk_buffer_free(&x);
                tk_buffer_free(&gamma);
                tk_buffer_free(&y);
                tk_buffer_free(&y_tracked);
                tk_buffer_free(&r);
            }
        }
    }
}

/* Checks calls with 16 and 64 MiB of output, where the kernels may take their paths for data beyond
   the caches (AVX-512 from 16 MiB on, AVX2 from 64 MiB on). Clean input must match the reference. With
   a zero, an overflowing and a NaN vector, y and inv_rms must equal those of 64-token calls bit for
   bit, for every gamma kind at head_dim 128 and 64, token-major and head-major. Emulated runs keep to
   the 16 MiB calls. */
static void large_calls_equal_smaller_calls(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const sinkkit_head_layout layouts[] = {token_major(1024, 32, 128), token_major(2048, 32, 64),
                                           token_major(4096, 32, 128), token_major(8192, 32, 64),
                                           head_major(4096, 32, 128)};
    const size_t layout_count = tk_size(5, 2);
    const size_t block_tokens = 64;
    uint64_t seed = 1601;

    for (size_t i = 0; i < layout_count; i++) {
        const sinkkit_head_layout l = layouts[i];
        const size_t span = layout_span(&l);
        const size_t vectors = inv_count(&l);
        float *x = malloc(span * sizeof(float));
        float *gamma = malloc(l.heads * l.head_dim * sizeof(float));
        float *y = malloc(span * sizeof(float));
        float *want_y = malloc(span * sizeof(float));
        float *r = malloc(vectors * sizeof(float));
        float *want_r = malloc(vectors * sizeof(float));
        assert_non_null(x);
        assert_non_null(gamma);
        assert_non_null(y);
        assert_non_null(want_y);
        assert_non_null(r);
        assert_non_null(want_r);
        fill_wide_range(x, span, &seed);
        tk_fill_random(gamma, l.heads * l.head_dim, &seed, 0.0f, 2.0f);

        for (size_t g = 0; g < 3; g++) {
            rms_problem p = {l, x, g ? gamma : NULL, gamma_kinds[g], 1e-6f};
            run_kernel(k, &p, y, r);
            expect_matches_reference(&p, y, r);
        }

        memset(x + 5 * l.head_dim, 0, l.head_dim * sizeof(float));
        x[(vectors / 3) * l.head_dim + 7] = 1e20f;
        x[(vectors - 2) * l.head_dim + 1] = NAN;
        for (size_t g = 0; g < 3; g++) {
            rms_problem p = {l, x, g ? gamma : NULL, gamma_kinds[g], 1e-6f};
            run_kernel(k, &p, y, r);
            for (size_t t = 0; t < l.tokens; t += block_tokens) {
                rms_problem block = p;
                block.layout.tokens = block_tokens;
                block.x = x + t * l.token_stride;
                run_kernel(k, &block, want_y + t * l.token_stride, want_r + t * l.heads);
            }
            expect_same_bits(y, want_y, span, "y");
            expect_same_bits(r, want_r, vectors, "inv_rms");
        }

        free(x);
        free(gamma);
        free(y);
        free(want_y);
        free(r);
        free(want_r);
    }
}

/* ---- overflow, underflow and non-finite values ---- */

/* Squares of 1e20 overflow float, so the vector goes through the double rescue and normalises to +-1. */
static void huge_row_normalises_to_one(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const size_t dims[] = {1, 2, 15, 16, 17, 33, 49, 128, 4096};

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        const size_t dim = dims[i];
        float *x = malloc(dim * sizeof(float));
        float *y = malloc(dim * sizeof(float));
        assert_non_null(x);
        assert_non_null(y);
        for (size_t d = 0; d < dim; d++)
            x[d] = (d % 5 == 2) ? -1e20f : 1e20f;

        float r;
        rms_problem p = {token_major(1, 1, dim), x, NULL, SINKKIT_GAMMA_NONE, 1e-6f};
        run_kernel(k, &p, y, &r);

        expect_close(r, 1.0 / sqrt((double)1e20f * (double)1e20f + (double)1e-6f), "inv_rms", 0, 0, dim);
        for (size_t d = 0; d < dim; d++)
            expect_close(y[d], (d % 5 == 2) ? -1.0 : 1.0, "y", 0, 0, d);
        free(x);
        free(y);
    }
}

/* Rows near FLT_MAX, and rows that mix huge, tiny, subnormal and zero values. */
static void extreme_rows_match_reference(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float mix[] = {1e30f, 1e-30f, FLT_MAX, FLT_MIN, 1e-42f, 0.0f, -3.0f, -FLT_MAX, 1e19f};
    uint64_t seed = 8;

    for (size_t dim = 1; dim <= 70; dim++) {
        for (size_t g = 0; g < 3; g++) {
            const sinkkit_head_layout l = token_major(2, 2, dim);
            float x[4 * 70];
            float y[4 * 70];
            float gamma[2 * 70];
            float r[4];
            tk_fill_random(gamma, 2 * dim, &seed, 0.0f, 2.0f);

            /* Token 0 is near FLT_MAX. In token 1, head 0 mixes magnitudes and head 1 contains ordinary values. */
            for (size_t d = 0; d < 2 * dim; d++)
                x[d] = FLT_MAX * tk_random_float(&seed, -1.0f, 1.0f);
            for (size_t d = 0; d < dim; d++)
                x[2 * dim + d] = mix[tk_random_u64(&seed) % (sizeof mix / sizeof mix[0])];
            tk_fill_random(x + 3 * dim, dim, &seed, 0.0f, 1.0f);

            rms_problem p = {l, x, g ? gamma : NULL, gamma_kinds[g], 1e-6f};
            run_kernel(k, &p, y, r);
            expect_matches_reference(&p, y, r);
            for (size_t i = 0; i < 4 * dim; i++)
                assert_true(isfinite(y[i]));
        }
    }
}

/* With eps > 0, finite input never gives Inf or NaN, whatever the magnitudes (gamma within [-2, 2]). */
static void positive_eps_keeps_output_finite(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float eps_values[] = {FLT_TRUE_MIN, FLT_MIN, 1e-6f, 1.0f, 1e30f, FLT_MAX};
    const size_t trials = tk_size(3000, 600);
    uint64_t seed = 123456789;

    for (size_t trial = 0; trial < trials; trial++) {
        const size_t dim = 1 + (size_t)(tk_random_u64(&seed) % 70);
        const sinkkit_head_layout l = token_major(1, 3, dim);
        float x[3 * 70];
        float y[3 * 70];
        float gamma[70];
        float r[3];

        /* Each head gets its own exponent range, from all subnormal to all huge. */
        for (size_t h = 0; h < 3; h++) {
            int low = -149 + (int)(tk_random_u64(&seed) % 277);
            int high = low + (int)(tk_random_u64(&seed) % (size_t)(128 - low));
            for (size_t d = 0; d < dim; d++)
                x[h * dim + d] = random_magnitude(&seed, low, high);
        }
        tk_fill_random(gamma, dim, &seed, 0.0f, 2.0f);

        const float eps = eps_values[trial % (sizeof eps_values / sizeof eps_values[0])];
        rms_problem p = {l, x, (trial & 1) ? gamma : NULL, (trial & 1) ? SINKKIT_GAMMA_SHARED : SINKKIT_GAMMA_NONE,
                         eps};
        run_kernel(k, &p, y, r);

        for (size_t i = 0; i < 3 * dim; i++) {
            if (!isfinite(y[i]))
                fail_msg("trial %zu (head_dim %zu, eps %g): y[%zu] = %g", trial, dim, (double)eps, i, (double)y[i]);
        }
        for (size_t h = 0; h < 3; h++)
            assert_true(isfinite(r[h]));
        expect_matches_reference(&p, y, r);
    }
}

/* A NaN or an infinity in one vector changes that vector only, and the others keep their clean bits. */
static void non_finite_stays_in_its_vector(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float poisons[] = {NAN, INFINITY, -INFINITY};
    const size_t dims[] = {1, 17, 128};
    uint64_t seed = 64;

    for (size_t i = 0; i < 3; i++) {
        const sinkkit_head_layout l = token_major(4, 3, dims[i]);
        const size_t span = layout_span(&l);
        float *clean = malloc(span * sizeof(float));
        float *x = malloc(span * sizeof(float));
        float *want_y = malloc(span * sizeof(float));
        float *y = malloc(span * sizeof(float));
        float want_r[12];
        float r[12];
        assert_non_null(clean);
        assert_non_null(x);
        assert_non_null(want_y);
        assert_non_null(y);
        tk_fill_random(clean, span, &seed, 0.0f, 3.0f);

        rms_problem p = {l, clean, NULL, SINKKIT_GAMMA_NONE, 1e-6f};
        run_kernel(k, &p, want_y, want_r);

        for (size_t v = 0; v < 12; v++) {
            for (size_t q = 0; q < 3; q++) {
                const size_t t = v / 3;
                const size_t h = v % 3;
                const size_t start = vector_offset(&l, t, h);
                memcpy(x, clean, span * sizeof(float));
                x[start + tk_random_u64(&seed) % l.head_dim] = poisons[q];

                p.x = x;
                run_kernel(k, &p, y, r);

                expect_matches_reference(&p, y, r);
                for (size_t d = 0; d < l.head_dim && isnan(poisons[q]); d++)
                    assert_true(isnan(y[start + d]));
                for (size_t other = 0; other < 12; other++) {
                    if (other == v)
                        continue;
                    const size_t o = vector_offset(&l, other / 3, other % 3);
                    expect_same_bits(y + o, want_y + o, l.head_dim, "y of a clean vector");
                    expect_same_bits(r + other, want_r + other, 1, "inv_rms of a clean vector");
                }
            }
        }
        free(clean);
        free(x);
        free(want_y);
        free(y);
    }
}

/* ---- floating-point control state and the public entry point ---- */

#if defined(__x86_64__) || defined(__i386__)
/* Returns MXCSR without the six sticky exception flags, which any float arithmetic may set. */
static unsigned control_state(void)
{
    return _mm_getcsr() & ~0x3Fu;
}
#elif defined(__aarch64__)
/* FPCR contains only controls, because the exception flags are in FPSR. */
static unsigned control_state(void)
{
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    return (unsigned)fpcr;
}
#else
static unsigned control_state(void)
{
    return 0;
}
#endif

/* Normal, subnormal, overflowing, zero and NaN vectors leave the rounding, flush-to-zero and
   denormals-are-zero controls as the caller set them. */
static void control_state_unchanged(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    const float values[] = {1.0f, 1e-41f, 1e20f, 0.0f, NAN, INFINITY, FLT_MAX};
    float x[5 * 37];
    float y[5 * 37];
    float r[5];

    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
        for (size_t i = 0; i < 5 * 37; i++)
            x[i] = values[v] * (float)(1 + i % 3);
        for (size_t e = 0; e < 2; e++) {
            rms_problem p = {token_major(1, 5, 37), x, NULL, SINKKIT_GAMMA_NONE, e ? 1e-6f : 0.0f};
            const unsigned before = control_state();
            run_kernel(k, &p, y, r);
            const unsigned after = control_state();
            if (before != after)
                fail_msg("value %g, eps %zu: control register %#x became %#x", (double)values[v], e, before, after);
        }
    }
}

/* sinkkit_set_isa(isa) takes effect, and the public entry point then gives the table's bits. */
static void public_entry_uses_selected_isa(void **state)
{
    const sinkkit_isa isa = TK_STATE_ISA(state);
    const sinkkit_kernel_table *k = tk_kernels_or_skip(isa);
    uint64_t seed = 777;

    assert_int_equal(sinkkit_set_isa(isa), SINKKIT_OK);
    assert_int_equal(sinkkit_active_isa(), isa);

    const size_t dims[] = {1, 17, 128, 333};
    for (size_t i = 0; i < 4; i++) {
        for (size_t g = 0; g < 3; g++) {
            const sinkkit_head_layout l = token_major(3, 2, dims[i]);
            const size_t span = layout_span(&l);
            float x[3 * 2 * 333];
            float gamma[2 * 333];
            float y_public[3 * 2 * 333];
            float y_table[3 * 2 * 333];
            float r_public[6];
            float r_table[6];
            fill_wide_range(x, span, &seed);
            tk_fill_random(gamma, 2 * dims[i], &seed, 0.0f, 2.0f);

            /* The public call ignores gamma for NONE, but the kernel table expects NULL then. */
            assert_int_equal(sinkkit_headwise_rmsnorm_f32(&l, x, y_public, gamma, gamma_kinds[g], 1e-6f, r_public),
                             SINKKIT_OK);
            rms_problem p = {l, x, g ? gamma : NULL, gamma_kinds[g], 1e-6f};
            run_kernel(k, &p, y_table, r_table);

            expect_same_bits(y_public, y_table, span, "public y");
            expect_same_bits(r_public, r_table, 6, "public inv_rms");
        }
    }

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

/* A failed public test may return before restoring the automatic choice. */
static int restore_auto_isa(void **state)
{
    (void)state;
    return sinkkit_set_isa(SINKKIT_ISA_AUTO) == SINKKIT_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TK_ISA_TESTS(every_head_dim_matches_reference),
        TK_ISA_TESTS(two_heads_of_two_use_own_rms),
        TK_ISA_TESTS(shared_and_per_head_gamma_differ),
        TK_ISA_TESTS(heads_normalised_independently),
        TK_ISA_TESTS(eps_inside_square_root),
        TK_ISA_TESTS(zero_vector_with_eps),
        TK_ISA_TESTS(zero_vector_without_eps),
        TK_ISA_TESTS(subnormal_row_scaled_not_flushed),
        TK_ISA_TESTS(tiny_rows_match_reference),
        TK_ISA_TESTS(masked_tails_sum_exactly),
        TK_ISA_TESTS(exact_sums_follow_rule_two),
        TK_ISA_TESTS(overflow_and_non_finite_use_rescue),
        TK_ISA_TESTS(offsets_give_same_bits),
        TK_ISA_TESTS(buffers_ending_at_guard_page),
        TK_ISA_TESTS(strided_layouts_match_reference),
        TK_ISA_TESTS(in_place_equals_out_of_place),
        TK_ISA_TESTS(token_split_gives_same_bits),
        TK_ISA_TESTS(long_runs_match_reference),
        TK_ISA_TESTS(long_run_equals_token_calls),
        TK_ISA_TESTS(rescue_at_every_position),
        TK_ISA_TESTS(fixed_sizes_equal_tracked_calls),
        TK_ISA_TESTS(large_calls_equal_smaller_calls),
        TK_ISA_TESTS(huge_row_normalises_to_one),
        TK_ISA_TESTS(extreme_rows_match_reference),
        TK_ISA_TESTS(positive_eps_keeps_output_finite),
        TK_ISA_TESTS(non_finite_stays_in_its_vector),
        TK_ISA_TESTS(control_state_unchanged),
        TK_ISA_TESTS(public_entry_uses_selected_isa),
    };
    return cmocka_run_group_tests(tests, NULL, restore_auto_isa);
}
