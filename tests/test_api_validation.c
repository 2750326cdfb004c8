/* Argument validation of the public API: every invalid argument returns its status code and writes
 * nothing, valid layouts are accepted and write only their own elements. Each test runs once per ISA,
 * forced with sinkkit_set_isa(), so that no ISA path writes on bad input.
 *
 * Invalid calls point every buffer into one arena filled with a sentinel, which must be intact after
 * the call. The arena ends at a guard page, so a read past its end faults.
 */
#include "test_support.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Marks a NULL pointer in the case tables, which give pointers as float offsets into the arena. */
#define NO_BUFFER (-1L)

enum { ARENA_FLOATS = 4096 };

/* Forces the ISA of this test entry, or skips visibly when the build or CPU lacks it. */
static void use_isa(void **state)
{
    sinkkit_isa isa = TK_STATE_ISA(state);
    tk_kernels_or_skip(isa);
    assert_int_equal(sinkkit_set_isa(isa), SINKKIT_OK);
    assert_int_equal(sinkkit_active_isa(), isa);
}

static int restore_auto(void **state)
{
    (void)state;
    return sinkkit_set_isa(SINKKIT_ISA_AUTO) == SINKKIT_OK ? 0 : -1;
}

static float *arena_at(float *arena, long offset)
{
    return offset == NO_BUFFER ? NULL : arena + offset;
}

/* Records one case's outcome. The test fails at the end, after every case has been tried and printed. */
static int check_outcome(const char *name, sinkkit_status got, sinkkit_status expected, bool untouched)
{
    int failures = 0;
    if (got != expected) {
        print_error("case \"%s\": status %d (%s), expected %d (%s)\n", name, got, sinkkit_status_message(got),
                    expected, sinkkit_status_message(expected));
        failures++;
    }
    if (!untouched) {
        print_error("case \"%s\": the call wrote to memory although it %s\n", name,
                    got == SINKKIT_OK ? "had nothing to do" : "failed");
        failures++;
    }
    return failures;
}

static double max_double(double a, double b)
{
    return a > b ? a : b;
}

/* Bound for comparing a kernel against the float-rounded reference: the documented 1e-6 relative error
   plus the reference's own rounding to float (2^-24). */
static const double reference_tolerance = 1e-6 + 0x1p-24;

/* ---------------------------------------------------------------------------
 * Head-wise RMSNorm
 * ------------------------------------------------------------------------- */

typedef struct rmsnorm_case {
    const char *name;
    bool null_layout;
    sinkkit_head_layout layout;
    long x;
    long y;
    long gamma;
    long inv_rms;
    sinkkit_gamma_kind kind;
    float eps;
    sinkkit_status expected;
} rmsnorm_case;

/* Offsets of the buffers in the arena for cases that do not place them on purpose. The base layout is
   token-major with tokens 3, heads 4, head_dim 20, so x spans 240 floats. */
enum { X = 0, Y = 512, G = 1024, R = 1280 };

static int run_rmsnorm_cases(const rmsnorm_case *cases, size_t count, float *arena)
{
    int failures = 0;
    for (size_t i = 0; i < count; i++) {
        const rmsnorm_case *c = &cases[i];
        tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));

        sinkkit_status got = sinkkit_headwise_rmsnorm_f32(c->null_layout ? NULL : &c->layout, arena_at(arena, c->x),
                                                          arena_at(arena, c->y), arena_at(arena, c->gamma), c->kind,
                                                          c->eps, arena_at(arena, c->inv_rms));
        failures += check_outcome(c->name, got, c->expected, tk_sentinel_intact(arena, ARENA_FLOATS * sizeof(float)));
    }
    return failures;
}

static void rmsnorm_rejects_invalid(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    const sinkkit_head_layout base = {3, 4, 20, 80, 20};
    const sinkkit_head_layout padded = {3, 4, 20, 160, 20};
    const size_t huge = SIZE_MAX / 2;
    const sinkkit_gamma_kind shared = SINKKIT_GAMMA_SHARED;
    const sinkkit_gamma_kind per_head = SINKKIT_GAMMA_PER_HEAD;
    const sinkkit_gamma_kind none = SINKKIT_GAMMA_NONE;

    const rmsnorm_case cases[] = {
        /* Missing pointers. */
        {"layout NULL", true, base, X, Y, G, R, shared, 1e-6f, SINKKIT_ERROR_NULL_POINTER},
        {"x NULL", false, base, NO_BUFFER, Y, G, R, shared, 1e-6f, SINKKIT_ERROR_NULL_POINTER},
        {"y NULL", false, base, X, NO_BUFFER, G, R, shared, 1e-6f, SINKKIT_ERROR_NULL_POINTER},
        {"gamma NULL, kind SHARED", false, base, X, Y, NO_BUFFER, R, shared, 1e-6f, SINKKIT_ERROR_NULL_POINTER},
        {"gamma NULL, kind PER_HEAD", false, base, X, Y, NO_BUFFER, R, per_head, 1e-6f, SINKKIT_ERROR_NULL_POINTER},

        /* Scalar arguments out of range. */
        {"gamma kind 3", false, base, X, Y, G, R, (sinkkit_gamma_kind)3, 1e-6f, SINKKIT_ERROR_INVALID_VALUE},
        {"gamma kind -1", false, base, X, Y, G, R, (sinkkit_gamma_kind)-1, 1e-6f, SINKKIT_ERROR_INVALID_VALUE},
        {"eps -1", false, base, X, Y, G, R, shared, -1.0f, SINKKIT_ERROR_INVALID_VALUE},
        {"eps -FLT_TRUE_MIN", false, base, X, Y, G, R, shared, -FLT_TRUE_MIN, SINKKIT_ERROR_INVALID_VALUE},
        {"eps NaN", false, base, X, Y, G, R, shared, NAN, SINKKIT_ERROR_INVALID_VALUE},
        {"eps -NaN", false, base, X, Y, G, R, shared, -NAN, SINKKIT_ERROR_INVALID_VALUE},
        {"eps +Inf", false, base, X, Y, G, R, shared, INFINITY, SINKKIT_ERROR_INVALID_VALUE},
        {"eps -Inf", false, base, X, Y, G, R, shared, -INFINITY, SINKKIT_ERROR_INVALID_VALUE},

        /* Zero and overflowing sizes. */
        {"heads 0", false, {3, 0, 20, 80, 20}, X, Y, G, R, shared, 1e-6f, SINKKIT_ERROR_INVALID_SHAPE},
        {"head_dim 0", false, {3, 4, 0, 80, 20}, X, Y, G, R, shared, 1e-6f, SINKKIT_ERROR_INVALID_SHAPE},
        {"heads 0 and tokens 0", false, {0, 0, 20, 80, 20}, X, Y, G, R, shared, 1e-6f, SINKKIT_ERROR_INVALID_SHAPE},
        {"tokens SIZE_MAX/2", false, {huge, 4, 20, 80, 20}, X, Y, G, R, shared, 1e-6f, SINKKIT_ERROR_INVALID_SHAPE},
        {"token_stride SIZE_MAX/2", false, {3, 4, 20, huge, 20}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_SHAPE},
        {"head_stride SIZE_MAX/2, head-major", false, {3, 4, 20, 20, huge}, X, Y, G, R, none, 1e-6f,
         SINKKIT_ERROR_INVALID_SHAPE},
        {"head_dim SIZE_MAX/4 + 1", false, {1, 1, SIZE_MAX / 4 + 1, 0, 0}, X, Y, NO_BUFFER, R, none, 1e-6f,
         SINKKIT_ERROR_INVALID_SHAPE},
        {"byte span above PTRDIFF_MAX", false, {SIZE_MAX / 4, 1, 1, 1, 1}, X, Y, NO_BUFFER, R, none, 1e-6f,
         SINKKIT_ERROR_INVALID_SHAPE},

        /* Layouts in which two (token, head) vectors overlap. */
        {"head_stride below head_dim", false, {3, 4, 20, 80, 19}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},
        {"head_stride 0 with 4 heads", false, {3, 4, 20, 80, 0}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},
        {"token_stride equal to head_stride", false, {3, 4, 20, 20, 20}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},
        {"token_stride below heads * head_dim", false, {3, 4, 20, 79, 20}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},
        {"head-major, head_stride below tokens * head_dim", false, {3, 4, 20, 20, 59}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},
        {"head-major, token_stride below head_dim", false, {3, 4, 20, 10, 80}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},
        {"token_stride 0 with 3 tokens", false, {3, 1, 20, 0, 20}, X, Y, G, R, shared, 1e-6f,
         SINKKIT_ERROR_INVALID_STRIDE},

        /* x and y overlap without being equal. */
        {"y one float after x", false, base, X + 16, X + 17, G, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"y one float before x", false, base, X + 16, X + 15, G, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"y starts at the last float of x", false, base, X, X + 239, G, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"y ends at the first float of x", false, base, X + 239, X, G, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"y in the padding of x", false, padded, X, X + 80, G, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},

        /* inv_rms and gamma overlapping what is written. */
        {"inv_rms inside x", false, base, X, Y, G, X + 5, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"inv_rms on the last float of x", false, base, X, Y, G, X + 239, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"inv_rms inside y", false, base, X, Y, G, Y + 230, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"inv_rms in place on x", false, base, X, X, G, X + 100, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"inv_rms inside per-head gamma", false, base, X, Y, G, G + 79, per_head, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"shared gamma inside y", false, base, X, Y, Y + 100, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
        {"per-head gamma over the end of y", false, base, X, Y, Y + 200, R, per_head, 1e-6f,
         SINKKIT_ERROR_ALIASING},
        {"shared gamma inside x in place", false, base, X, X, X + 40, R, shared, 1e-6f, SINKKIT_ERROR_ALIASING},
    };

    int failures = run_rmsnorm_cases(cases, sizeof cases / sizeof cases[0], buffer.data);
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

/* tokens == 0 returns SINKKIT_OK and writes nothing, whatever the strides and overlaps. */
static void rmsnorm_zero_tokens_noop(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    const sinkkit_gamma_kind shared = SINKKIT_GAMMA_SHARED;

    const rmsnorm_case cases[] = {
        {"tokens 0", false, {0, 4, 20, 80, 20}, X, Y, G, R, shared, 1e-6f, SINKKIT_OK},
        {"tokens 0, in place", false, {0, 4, 20, 80, 20}, X, X, G, R, shared, 1e-6f, SINKKIT_OK},
        {"tokens 0, overlapping strides", false, {0, 4, 20, 20, 20}, X, Y, G, R, shared, 1e-6f, SINKKIT_OK},
        {"tokens 0, y overlapping x", false, {0, 4, 20, 80, 20}, X, X + 1, G, R, shared, 1e-6f, SINKKIT_OK},
        {"tokens 0, inv_rms inside x", false, {0, 4, 20, 80, 20}, X, Y, G, X, shared, 1e-6f, SINKKIT_OK},
    };

    int failures = run_rmsnorm_cases(cases, sizeof cases / sizeof cases[0], buffer.data);
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

/* Fills the elements of a layout with random values in [-2, 2], leaving its gaps as they are. */
static void fill_layout(float *x, const sinkkit_head_layout *layout, uint64_t *seed)
{
    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            float *v = x + t * layout->token_stride + h * layout->head_stride;
            tk_fill_random(v, layout->head_dim, seed, 0.0f, 2.0f);
        }
    }
}

/* Marks in written[] every arena float that a correct call may write. */
static void mark_written(bool *written, const rmsnorm_case *c)
{
    const sinkkit_head_layout *l = &c->layout;
    for (size_t t = 0; t < l->tokens; t++) {
        for (size_t h = 0; h < l->heads; h++) {
            size_t start = (size_t)c->y + t * l->token_stride + h * l->head_stride;
            for (size_t d = 0; d < l->head_dim; d++)
                written[start + d] = true;
            if (c->inv_rms != NO_BUFFER)
                written[(size_t)c->inv_rms + t * l->heads + h] = true;
        }
    }
}

/* Runs one accepted case and compares the arena with the reference run on a copy of it: written
   floats must match within the bound, all others must keep their bits. Returns the failures. */
static int run_accepted_rmsnorm(const rmsnorm_case *c, float *arena, float *expected, bool *written,
                                double *max_error)
{
    uint64_t seed = 0xACCE97EDULL;
    tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));
    fill_layout(arena + c->x, &c->layout, &seed);
    if (c->gamma != NO_BUFFER && c->gamma != c->x)
        tk_fill_random(arena + c->gamma, c->layout.heads * c->layout.head_dim, &seed, 1.0f, 0.5f);
    memcpy(expected, arena, ARENA_FLOATS * sizeof(float));

    sinkkit_status got = sinkkit_headwise_rmsnorm_f32(&c->layout, arena + c->x, arena + c->y,
                                                      arena_at(arena, c->gamma), c->kind, c->eps,
                                                      arena_at(arena, c->inv_rms));
    const float *gamma = c->kind == SINKKIT_GAMMA_NONE ? NULL : arena_at(expected, c->gamma);
    sinkkit_headwise_rmsnorm_f32_reference(&c->layout, expected + c->x, expected + c->y, gamma, c->kind, c->eps,
                                           arena_at(expected, c->inv_rms));
    if (got != SINKKIT_OK) {
        print_error("case \"%s\": status %s, expected success\n", c->name, sinkkit_status_message(got));
        return 1;
    }

    memset(written, 0, ARENA_FLOATS * sizeof(bool));
    mark_written(written, c);

    int failures = 0;
    for (size_t i = 0; i < ARENA_FLOATS; i++) {
        if (!written[i]) {
            if (memcmp(&arena[i], &expected[i], sizeof(float)) != 0) {
                print_error("case \"%s\": float %zu is outside the output but was written\n", c->name, i);
                failures++;
            }
            continue;
        }
        double error = metric_relative_error(arena[i], expected[i]);
        *max_error = max_double(*max_error, error);
        if (error > reference_tolerance) {
            print_error("case \"%s\": float %zu = %.9g, reference %.9g\n", c->name, i, arena[i], expected[i]);
            failures++;
        }
    }
    return failures;
}

static void rmsnorm_accepts_valid_layouts(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    float *expected = malloc(ARENA_FLOATS * sizeof(float));
    bool *written = malloc(ARENA_FLOATS * sizeof(bool));
    assert_non_null(expected);
    assert_non_null(written);
    const sinkkit_head_layout base = {3, 4, 20, 80, 20};
    const sinkkit_gamma_kind shared = SINKKIT_GAMMA_SHARED;
    const sinkkit_gamma_kind per_head = SINKKIT_GAMMA_PER_HEAD;
    const sinkkit_gamma_kind none = SINKKIT_GAMMA_NONE;

    const rmsnorm_case cases[] = {
        {"token-major", false, base, X, Y, G, R, shared, 1e-6f, SINKKIT_OK},
        {"head-major", false, {3, 4, 20, 20, 60}, X, Y, G, R, per_head, 1e-6f, SINKKIT_OK},
        {"padded token-major", false, {3, 4, 20, 100, 23}, X, Y, G, R, shared, 1e-6f, SINKKIT_OK},
        {"padded head-major", false, {3, 4, 21, 24, 80}, X, Y, G, R, per_head, 1e-6f, SINKKIT_OK},
        {"one head, head_stride 0", false, {5, 1, 20, 20, 0}, X, Y, G, R, shared, 1e-6f, SINKKIT_OK},
        {"one token, token_stride 0", false, {1, 4, 20, 0, 20}, X, Y, G, R, per_head, 1e-6f, SINKKIT_OK},
        {"in place", false, base, X + 3, X + 3, G, R, shared, 1e-6f, SINKKIT_OK},
        {"in place, padded", false, {3, 4, 20, 100, 23}, X + 1, X + 1, G, R, none, 1e-6f, SINKKIT_OK},
        {"y right after x", false, base, X, X + 240, G, R, shared, 1e-6f, SINKKIT_OK},
        {"y right before x", false, base, X + 240, X, G, R, shared, 1e-6f, SINKKIT_OK},
        {"inv_rms NULL", false, base, X, Y, G, NO_BUFFER, shared, 1e-6f, SINKKIT_OK},
        {"inv_rms right after y", false, base, X, Y, G, Y + 240, shared, 1e-6f, SINKKIT_OK},
        {"gamma shares x (both read only)", false, base, X, Y, X, R, shared, 1e-6f, SINKKIT_OK},
        {"gamma ignored for kind NONE", false, base, X, Y, Y, R, none, 1e-6f, SINKKIT_OK},
        {"gamma NULL for kind NONE", false, base, X, Y, NO_BUFFER, R, none, 1e-6f, SINKKIT_OK},
        {"eps 0", false, base, X, Y, G, R, shared, 0.0f, SINKKIT_OK},
        {"eps FLT_MAX", false, base, X, Y, G, R, shared, FLT_MAX, SINKKIT_OK},
        {"head_dim 1", false, {3, 4, 1, 4, 1}, X, Y, G, R, per_head, 1e-6f, SINKKIT_OK},
    };

    int failures = 0;
    double max_error = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        failures += run_accepted_rmsnorm(&cases[i], buffer.data, expected, written, &max_error);
    printf("%s: max relative error %.3g against the reference\n", sinkkit_isa_name(sinkkit_active_isa()), max_error);

    free(written);
    free(expected);
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------------------
 * Row and head moments
 * ------------------------------------------------------------------------- */

typedef struct row_moments_case {
    const char *name;
    long x;
    size_t rows;
    size_t cols;
    size_t row_stride;
    long mean;
    long variance;
    unsigned flags;
    sinkkit_status expected;
} row_moments_case;

enum { M = 1536, V = 1792 };

static void row_moments_rejects_invalid(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    float *arena = buffer.data;
    const size_t huge = SIZE_MAX / 2;
    const unsigned unbiased = SINKKIT_MOMENTS_UNBIASED;

    /* The base case is 5 rows of 30 floats, 32 apart: x spans 158 floats. */
    const row_moments_case cases[] = {
        {"x NULL", NO_BUFFER, 5, 30, 32, M, V, 0, SINKKIT_ERROR_NULL_POINTER},
        {"mean and variance NULL", X, 5, 30, 32, NO_BUFFER, NO_BUFFER, 0, SINKKIT_ERROR_NULL_POINTER},
        {"cols 0", X, 5, 0, 32, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"cols 0 and rows 0", X, 0, 0, 32, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"rows SIZE_MAX/2", X, huge, 30, 32, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"row_stride SIZE_MAX/2", X, 5, 30, huge, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"cols SIZE_MAX/4 + 1", X, 1, SIZE_MAX / 4 + 1, SIZE_MAX / 4 + 1, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"byte span above PTRDIFF_MAX", X, SIZE_MAX / 4, 1, 1, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"row_stride below cols", X, 5, 30, 29, M, V, 0, SINKKIT_ERROR_INVALID_STRIDE},
        {"row_stride 0", X, 5, 30, 0, M, V, 0, SINKKIT_ERROR_INVALID_STRIDE},
        {"row_stride below cols, rows 0", X, 0, 30, 29, M, V, 0, SINKKIT_ERROR_INVALID_STRIDE},
        {"flags 2", X, 5, 30, 32, M, V, 2u, SINKKIT_ERROR_INVALID_VALUE},
        {"flags UNBIASED | 2", X, 5, 30, 32, M, V, unbiased | 2u, SINKKIT_ERROR_INVALID_VALUE},
        {"flags high bit", X, 5, 30, 32, M, V, 1u << 31, SINKKIT_ERROR_INVALID_VALUE},
        {"flags all bits", X, 5, 30, 32, M, V, ~0u, SINKKIT_ERROR_INVALID_VALUE},
        {"unknown flags, rows 0", X, 0, 30, 32, M, V, 2u, SINKKIT_ERROR_INVALID_VALUE},
        {"UNBIASED with cols 1", X, 5, 1, 1, M, V, unbiased, SINKKIT_ERROR_INVALID_SHAPE},
        {"mean inside x", X, 5, 30, 32, X + 3, V, 0, SINKKIT_ERROR_ALIASING},
        {"variance on the last float of x", X, 5, 30, 32, M, X + 157, 0, SINKKIT_ERROR_ALIASING},
        {"variance in the padding of x", X, 5, 30, 32, NO_BUFFER, X + 30, 0, SINKKIT_ERROR_ALIASING},
        {"mean ends at the first float of x", X + 10, 5, 30, 32, X + 6, V, 0, SINKKIT_ERROR_ALIASING},
        {"mean equal to variance", X, 5, 30, 32, M, M, 0, SINKKIT_ERROR_ALIASING},
        {"mean overlapping variance", X, 5, 30, 32, M, M + 4, 0, SINKKIT_ERROR_ALIASING},
    };

    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const row_moments_case *c = &cases[i];
        tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));
        sinkkit_status got = sinkkit_row_moments_f32(arena_at(arena, c->x), c->rows, c->cols, c->row_stride,
                                                     arena_at(arena, c->mean), arena_at(arena, c->variance), c->flags);
        failures += check_outcome(c->name, got, c->expected, tk_sentinel_intact(arena, ARENA_FLOATS * sizeof(float)));
    }
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

static void row_moments_zero_rows_noop(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    float *arena = buffer.data;

    const row_moments_case cases[] = {
        {"rows 0", X, 0, 30, 32, M, V, 0, SINKKIT_OK},
        {"rows 0, UNBIASED", X, 0, 30, 30, M, V, SINKKIT_MOMENTS_UNBIASED, SINKKIT_OK},
        {"rows 0, mean inside x", X, 0, 30, 32, X, V, 0, SINKKIT_OK},
        {"rows 0, mean equal to variance", X, 0, 30, 32, M, M, 0, SINKKIT_OK},
    };

    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const row_moments_case *c = &cases[i];
        tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));
        sinkkit_status got = sinkkit_row_moments_f32(arena + c->x, c->rows, c->cols, c->row_stride,
                                                     arena_at(arena, c->mean), arena_at(arena, c->variance), c->flags);
        failures += check_outcome(c->name, got, c->expected, tk_sentinel_intact(arena, ARENA_FLOATS * sizeof(float)));
    }
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

/* Compares the mean and variance outputs (count floats each, at arena offsets mean and variance or
   NO_BUFFER) with the reference, and checks that no other float of the arena changed from before.
   Returns the failures. */
static int check_moments_arena(const char *name, const float *arena, const float *before, long mean,
                               long variance, size_t count, const float *want_mean, const float *want_variance,
                               double *max_error)
{
    int failures = 0;
    for (size_t i = 0; i < ARENA_FLOATS; i++) {
        const float *want = NULL;
        if (mean != NO_BUFFER && i >= (size_t)mean && i < (size_t)mean + count)
            want = &want_mean[i - (size_t)mean];
        else if (variance != NO_BUFFER && i >= (size_t)variance && i < (size_t)variance + count)
            want = &want_variance[i - (size_t)variance];

        if (want == NULL) {
            if (memcmp(&arena[i], &before[i], sizeof(float)) != 0) {
                print_error("case \"%s\": float %zu is outside the outputs but was written\n", name, i);
                failures++;
            }
            continue;
        }

        double error = metric_relative_error(arena[i], *want);
        *max_error = max_double(*max_error, error);
        if (error > reference_tolerance) {
            print_error("case \"%s\": float %zu = %.9g, reference %.9g\n", name, i, arena[i], *want);
            failures++;
        }
    }
    return failures;
}

static void row_moments_accepts_valid(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    float *arena = buffer.data;
    float *before = malloc(ARENA_FLOATS * sizeof(float));
    assert_non_null(before);
    float want_mean[64];
    float want_variance[64];

    const row_moments_case cases[] = {
        {"contiguous rows", X, 5, 30, 30, M, V, 0, SINKKIT_OK},
        {"padded rows", X + 1, 5, 30, 37, M, V, 0, SINKKIT_OK},
        {"cols 1", X, 7, 1, 1, M, V, 0, SINKKIT_OK},
        {"UNBIASED with cols 2", X, 7, 2, 3, M, V, SINKKIT_MOMENTS_UNBIASED, SINKKIT_OK},
        {"one row, row_stride equal to cols", X, 1, 45, 45, M, V, SINKKIT_MOMENTS_UNBIASED, SINKKIT_OK},
        {"mean only", X, 5, 30, 32, M, NO_BUFFER, 0, SINKKIT_OK},
        {"variance only", X, 5, 30, 32, NO_BUFFER, V, 0, SINKKIT_OK},
        {"mean right after x", X, 5, 30, 32, X + 158, V, 0, SINKKIT_OK},
        {"mean right before variance", X, 5, 30, 32, M, M + 5, 0, SINKKIT_OK},
    };

    int failures = 0;
    double max_error = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const row_moments_case *c = &cases[i];
        uint64_t seed = 0x30E175ULL + i;
        tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));
        for (size_t r = 0; r < c->rows; r++)
            tk_fill_random(arena + c->x + r * c->row_stride, c->cols, &seed, 3.0f, 1.0f);
        sinkkit_row_moments_f32_reference(arena + c->x, c->rows, c->cols, c->row_stride, want_mean, want_variance,
                                          c->flags);
        memcpy(before, arena, ARENA_FLOATS * sizeof(float));

        sinkkit_status got = sinkkit_row_moments_f32(arena + c->x, c->rows, c->cols, c->row_stride,
                                                     arena_at(arena, c->mean), arena_at(arena, c->variance), c->flags);
        if (got != SINKKIT_OK) {
            print_error("case \"%s\": status %s, expected success\n", c->name, sinkkit_status_message(got));
            failures++;
            continue;
        }
        failures += check_moments_arena(c->name, arena, before, c->mean, c->variance, c->rows, want_mean,
                                        want_variance, &max_error);
    }
    printf("%s: max relative error %.3g against the reference\n", sinkkit_isa_name(sinkkit_active_isa()), max_error);
    free(before);
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

typedef struct head_moments_case {
    const char *name;
    bool null_layout;
    sinkkit_head_layout layout;
    long x;
    long mean;
    long variance;
    unsigned flags;
    sinkkit_status expected;
} head_moments_case;

static void head_moments_rejects_invalid(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    float *arena = buffer.data;
    const sinkkit_head_layout base = {3, 4, 20, 80, 20};
    const unsigned unbiased = SINKKIT_MOMENTS_UNBIASED;

    const head_moments_case cases[] = {
        {"layout NULL", true, base, X, M, V, 0, SINKKIT_ERROR_NULL_POINTER},
        {"x NULL", false, base, NO_BUFFER, M, V, 0, SINKKIT_ERROR_NULL_POINTER},
        {"mean and variance NULL", false, base, X, NO_BUFFER, NO_BUFFER, 0, SINKKIT_ERROR_NULL_POINTER},
        {"heads 0", false, {3, 0, 20, 80, 20}, X, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"head_dim 0", false, {3, 4, 0, 80, 20}, X, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"tokens SIZE_MAX/2", false, {SIZE_MAX / 2, 4, 20, 80, 20}, X, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"byte span above PTRDIFF_MAX", false, {SIZE_MAX / 4, 1, 1, 1, 1}, X, M, V, 0, SINKKIT_ERROR_INVALID_SHAPE},
        {"head_stride below head_dim", false, {3, 4, 20, 80, 19}, X, M, V, 0, SINKKIT_ERROR_INVALID_STRIDE},
        {"token_stride equal to head_stride", false, {3, 4, 20, 20, 20}, X, M, V, 0, SINKKIT_ERROR_INVALID_STRIDE},
        {"head-major, head_stride too short", false, {3, 4, 20, 20, 59}, X, M, V, 0, SINKKIT_ERROR_INVALID_STRIDE},
        {"flags 2", false, base, X, M, V, 2u, SINKKIT_ERROR_INVALID_VALUE},
        {"flags all bits", false, base, X, M, V, ~0u, SINKKIT_ERROR_INVALID_VALUE},
        {"UNBIASED with head_dim 1", false, {3, 4, 1, 4, 1}, X, M, V, unbiased, SINKKIT_ERROR_INVALID_SHAPE},
        {"mean inside x", false, base, X, X + 200, V, 0, SINKKIT_ERROR_ALIASING},
        {"variance over the start of x", false, base, X + 8, M, X, 0, SINKKIT_ERROR_ALIASING},
        {"mean equal to variance", false, base, X, M, M, 0, SINKKIT_ERROR_ALIASING},
        {"mean overlapping variance", false, base, X, M, M + 11, 0, SINKKIT_ERROR_ALIASING},
        {"tokens 0", false, {0, 4, 20, 80, 20}, X, M, V, 0, SINKKIT_OK},
        {"tokens 0, overlapping strides", false, {0, 4, 20, 20, 20}, X, M, V, 0, SINKKIT_OK},
        {"tokens 0, mean inside x", false, {0, 4, 20, 80, 20}, X, X, V, 0, SINKKIT_OK},
    };

    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const head_moments_case *c = &cases[i];
        tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));
        sinkkit_status got = sinkkit_head_moments_f32(c->null_layout ? NULL : &c->layout, arena_at(arena, c->x),
                                                      arena_at(arena, c->mean), arena_at(arena, c->variance), c->flags);
        failures += check_outcome(c->name, got, c->expected, tk_sentinel_intact(arena, ARENA_FLOATS * sizeof(float)));
    }
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

static void head_moments_accepts_valid_layouts(void **state)
{
    use_isa(state);
    tk_buffer buffer = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);
    float *arena = buffer.data;
    float *before = malloc(ARENA_FLOATS * sizeof(float));
    assert_non_null(before);
    float want_mean[64];
    float want_variance[64];

    const head_moments_case cases[] = {
        {"token-major", false, {3, 4, 20, 80, 20}, X, M, V, 0, SINKKIT_OK},
        {"head-major", false, {3, 4, 20, 20, 60}, X, M, V, SINKKIT_MOMENTS_UNBIASED, SINKKIT_OK},
        {"padded token-major", false, {3, 4, 19, 100, 23}, X + 1, M, V, 0, SINKKIT_OK},
        {"padded head-major", false, {3, 4, 21, 24, 80}, X, M, V, 0, SINKKIT_OK},
        {"one head, head_stride 0", false, {5, 1, 20, 20, 0}, X, M, V, 0, SINKKIT_OK},
        {"one token, token_stride 0", false, {1, 4, 20, 0, 20}, X, M, NO_BUFFER, 0, SINKKIT_OK},
        {"head_dim 1", false, {3, 4, 1, 4, 1}, X, NO_BUFFER, V, 0, SINKKIT_OK},
    };

    int failures = 0;
    double max_error = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const head_moments_case *c = &cases[i];
        const sinkkit_head_layout *l = &c->layout;
        uint64_t seed = 0x4EAD30ULL + i;
        tk_fill_sentinel(arena, ARENA_FLOATS * sizeof(float));
        for (size_t t = 0; t < l->tokens; t++) {
            for (size_t h = 0; h < l->heads; h++) {
                float *v = arena + c->x + t * l->token_stride + h * l->head_stride;
                tk_fill_random(v, l->head_dim, &seed, 3.0f, 1.0f);
                sinkkit_row_moments_f32_reference(v, 1, l->head_dim, l->head_dim, &want_mean[t * l->heads + h],
                                                  &want_variance[t * l->heads + h], c->flags);
            }
        }

        memcpy(before, arena, ARENA_FLOATS * sizeof(float));

        sinkkit_status got = sinkkit_head_moments_f32(l, arena + c->x, arena_at(arena, c->mean),
                                                      arena_at(arena, c->variance), c->flags);
        if (got != SINKKIT_OK) {
            print_error("case \"%s\": status %s, expected success\n", c->name, sinkkit_status_message(got));
            failures++;
            continue;
        }
        failures += check_moments_arena(c->name, arena, before, c->mean, c->variance, l->tokens * l->heads, want_mean,
                                        want_variance, &max_error);
    }
    printf("%s: max relative error %.3g against the reference\n", sinkkit_isa_name(sinkkit_active_isa()), max_error);
    free(before);
    tk_buffer_free(&buffer);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------------------
 * Channel statistics
 * ------------------------------------------------------------------------- */

enum { CHANNELS = 37, STATS_BYTES = 4096 };

/* Byte offsets of the three arrays in a stats arena: max_abs, argmax_token and sum_squares. */
enum { MAX_AT = 0, ARGMAX_AT = 256, SUM_AT = 1024, NO_ARRAY = -1 };

typedef struct stats_arena {
    unsigned char *bytes;
    void *mapping;
    size_t mapping_bytes;
} stats_arena;

static stats_arena stats_arena_new(void)
{
    stats_arena arena;
    arena.bytes = tk_guarded_alloc(STATS_BYTES, 64, &arena.mapping, &arena.mapping_bytes);
    tk_fill_sentinel(arena.bytes, STATS_BYTES);
    return arena;
}

static void stats_arena_free(stats_arena *arena)
{
    tk_guarded_free(arena->mapping, arena->mapping_bytes);
}

/* A stats struct whose arrays sit at the given byte offsets of the arena (NO_ARRAY for NULL). */
static sinkkit_channel_stats stats_in(stats_arena *arena, size_t channels, uint64_t tokens, int max_at,
                                      int argmax_at, int sum_at)
{
    sinkkit_channel_stats stats;
    stats.channels = channels;
    stats.tokens = tokens;
    stats.max_abs = max_at == NO_ARRAY ? NULL : (float *)(void *)(arena->bytes + max_at);
    stats.argmax_token = argmax_at == NO_ARRAY ? NULL : (uint64_t *)(void *)(arena->bytes + argmax_at);
    stats.sum_squares = sum_at == NO_ARRAY ? NULL : (double *)(void *)(arena->bytes + sum_at);
    return stats;
}

static bool stats_equal(const sinkkit_channel_stats *a, const sinkkit_channel_stats *b)
{
    return a->channels == b->channels && a->tokens == b->tokens && a->max_abs == b->max_abs &&
           a->argmax_token == b->argmax_token && a->sum_squares == b->sum_squares;
}

typedef struct stats_case {
    const char *name;
    bool null_stats;
    size_t channels;
    int max_at;
    int argmax_at;
    int sum_at;
    sinkkit_status expected;
} stats_case;

/* Array placements that every stats call must reject, whichever call it is. */
static const stats_case bad_stats[] = {
    {"stats NULL", true, CHANNELS, MAX_AT, ARGMAX_AT, SUM_AT, SINKKIT_ERROR_NULL_POINTER},
    {"max_abs NULL", false, CHANNELS, NO_ARRAY, ARGMAX_AT, SUM_AT, SINKKIT_ERROR_NULL_POINTER},
    {"argmax_token NULL", false, CHANNELS, MAX_AT, NO_ARRAY, SUM_AT, SINKKIT_ERROR_NULL_POINTER},
    {"sum_squares NULL", false, CHANNELS, MAX_AT, ARGMAX_AT, NO_ARRAY, SINKKIT_ERROR_NULL_POINTER},
    {"channels 0", false, 0, MAX_AT, ARGMAX_AT, SUM_AT, SINKKIT_ERROR_INVALID_SHAPE},
    {"channels SIZE_MAX/4", false, SIZE_MAX / 4, MAX_AT, ARGMAX_AT, SUM_AT, SINKKIT_ERROR_INVALID_SHAPE},
    {"channels SIZE_MAX/16 + 1", false, SIZE_MAX / 16 + 1, MAX_AT, ARGMAX_AT, SUM_AT, SINKKIT_ERROR_INVALID_SHAPE},
    {"argmax_token equal to sum_squares", false, CHANNELS, MAX_AT, SUM_AT, SUM_AT, SINKKIT_ERROR_ALIASING},
    {"max_abs inside argmax_token", false, CHANNELS, ARGMAX_AT + 8, ARGMAX_AT, SUM_AT, SINKKIT_ERROR_ALIASING},
    {"sum_squares over the end of max_abs", false, CHANNELS, MAX_AT, ARGMAX_AT, MAX_AT + 144,
     SINKKIT_ERROR_ALIASING},
};

enum { BAD_STATS_COUNT = sizeof bad_stats / sizeof bad_stats[0] };

static void stats_reset_rejects_invalid(void **state)
{
    use_isa(state);
    stats_arena arena = stats_arena_new();

    int failures = 0;
    for (size_t i = 0; i < BAD_STATS_COUNT; i++) {
        const stats_case *c = &bad_stats[i];
        tk_fill_sentinel(arena.bytes, STATS_BYTES);
        sinkkit_channel_stats stats = stats_in(&arena, c->channels, 12345, c->max_at, c->argmax_at, c->sum_at);
        const sinkkit_channel_stats before = stats;

        sinkkit_status got = sinkkit_channel_stats_reset(c->null_stats ? NULL : &stats);
        bool untouched = tk_sentinel_intact(arena.bytes, STATS_BYTES) && stats_equal(&stats, &before);
        failures += check_outcome(c->name, got, c->expected, untouched);
    }
    stats_arena_free(&arena);
    assert_int_equal(failures, 0);
}

typedef struct update_case {
    const char *name;
    bool null_a;
    size_t tokens;
    size_t row_stride;
    uint64_t first_token;
    uint64_t stats_tokens;
    int a_in_stats_at;
    sinkkit_status expected;
} update_case;

static void stats_update_rejects_invalid(void **state)
{
    use_isa(state);
    stats_arena arena = stats_arena_new();
    tk_buffer a = tk_buffer_new(ARENA_FLOATS, TK_AT_GUARD);

    int failures = 0;
    for (size_t i = 0; i < BAD_STATS_COUNT; i++) {
        const stats_case *c = &bad_stats[i];
        tk_fill_sentinel(arena.bytes, STATS_BYTES);
        tk_fill_sentinel(a.data, ARENA_FLOATS * sizeof(float));
        sinkkit_channel_stats stats = stats_in(&arena, c->channels, 12345, c->max_at, c->argmax_at, c->sum_at);
        const sinkkit_channel_stats before = stats;

        sinkkit_status got = sinkkit_channel_stats_update_f32(c->null_stats ? NULL : &stats, a.data, 4, CHANNELS, 0);
        bool untouched = tk_sentinel_intact(arena.bytes, STATS_BYTES) && stats_equal(&stats, &before) &&
                         tk_sentinel_intact(a.data, ARENA_FLOATS * sizeof(float));
        failures += check_outcome(c->name, got, c->expected, untouched);
    }

    const uint64_t top = UINT64_MAX;
    const update_case cases[] = {
        {"a NULL", true, 4, CHANNELS, 0, 0, NO_ARRAY, SINKKIT_ERROR_NULL_POINTER},
        {"row_stride below channels", false, 4, CHANNELS - 1, 0, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_STRIDE},
        {"row_stride 0", false, 4, 0, 0, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_STRIDE},
        {"tokens SIZE_MAX/2", false, SIZE_MAX / 2, CHANNELS, 0, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_SHAPE},
        {"row_stride SIZE_MAX/2", false, 4, SIZE_MAX / 2, 0, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_SHAPE},
        {"last token UINT64_MAX", false, 4, CHANNELS, top - 3, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_VALUE},
        {"first token UINT64_MAX", false, 1, CHANNELS, top, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_VALUE},
        {"token index wraps around", false, 4, CHANNELS, top - 1, 0, NO_ARRAY, SINKKIT_ERROR_INVALID_VALUE},
        {"token count overflows", false, 2, CHANNELS, 0, top - 1, NO_ARRAY, SINKKIT_ERROR_INVALID_VALUE},
        {"a inside max_abs", false, 1, CHANNELS, 0, 0, MAX_AT + 4, SINKKIT_ERROR_ALIASING},
        {"a over argmax_token", false, 4, CHANNELS, 0, 0, ARGMAX_AT - 64, SINKKIT_ERROR_ALIASING},
        {"a padding over sum_squares", false, 2, 100, 0, 0, SUM_AT - 200, SINKKIT_ERROR_ALIASING},
        {"tokens 0", false, 0, CHANNELS, 0, 0, NO_ARRAY, SINKKIT_OK},
        {"tokens 0 at token UINT64_MAX", false, 0, CHANNELS, top, top, NO_ARRAY, SINKKIT_OK},
        {"tokens 0, a inside max_abs", false, 0, CHANNELS, 0, 0, MAX_AT, SINKKIT_OK},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const update_case *c = &cases[i];
        tk_fill_sentinel(arena.bytes, STATS_BYTES);
        tk_fill_sentinel(a.data, ARENA_FLOATS * sizeof(float));
        sinkkit_channel_stats stats = stats_in(&arena, CHANNELS, c->stats_tokens, MAX_AT, ARGMAX_AT, SUM_AT);
        const sinkkit_channel_stats before = stats;

        const float *input = a.data;
        if (c->null_a)
            input = NULL;
        else if (c->a_in_stats_at != NO_ARRAY)
            input = (const float *)(const void *)(arena.bytes + c->a_in_stats_at);

        sinkkit_status got = sinkkit_channel_stats_update_f32(&stats, input, c->tokens, c->row_stride, c->first_token);
        bool untouched = tk_sentinel_intact(arena.bytes, STATS_BYTES) && stats_equal(&stats, &before) &&
                         tk_sentinel_intact(a.data, ARENA_FLOATS * sizeof(float));
        failures += check_outcome(c->name, got, c->expected, untouched);
    }

    tk_buffer_free(&a);
    stats_arena_free(&arena);
    assert_int_equal(failures, 0);
}

/* Valid updates, at the top of the token range and with padded rows, match the reference. */
static void stats_update_accepts_valid(void **state)
{
    use_isa(state);
    enum { TOKENS = 9, STRIDE = CHANNELS + 3 };
    tk_buffer a = tk_buffer_new(TOKENS * STRIDE, TK_AT_GUARD);
    uint64_t seed = 0x57A75ULL;
    tk_fill_random(a.data, TOKENS * STRIDE, &seed, 0.0f, 10.0f);

    const uint64_t firsts[] = {0, 1000, UINT64_MAX - TOKENS};
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++) {
        float max_abs[CHANNELS];
        uint64_t argmax_token[CHANNELS];
        double sum_squares[CHANNELS];
        float want_max[CHANNELS];
        uint64_t want_argmax[CHANNELS];
        double want_sum[CHANNELS];
        sinkkit_channel_stats stats = {CHANNELS, 0, max_abs, argmax_token, sum_squares};
        sinkkit_channel_stats want = {CHANNELS, 0, want_max, want_argmax, want_sum};

        assert_int_equal(sinkkit_channel_stats_reset(&stats), SINKKIT_OK);
        assert_int_equal(sinkkit_channel_stats_reset(&want), SINKKIT_OK);
        assert_int_equal(sinkkit_channel_stats_update_f32(&stats, a.data, TOKENS, STRIDE, firsts[i]), SINKKIT_OK);
        sinkkit_channel_stats_update_f32_reference(want_max, want_argmax, want_sum, CHANNELS, a.data, TOKENS, STRIDE,
                                                   firsts[i]);

        assert_int_equal(stats.tokens, TOKENS);
        for (size_t c = 0; c < CHANNELS; c++) {
            assert_memory_equal(&max_abs[c], &want_max[c], sizeof(float));
            assert_int_equal(argmax_token[c], want_argmax[c]);
            assert_true(argmax_token[c] >= firsts[i] && argmax_token[c] < firsts[i] + TOKENS);
            assert_true(metric_relative_error(sum_squares[c], want_sum[c]) <= TK_FLOAT_PARTIAL_BOUND);
        }
    }
    tk_buffer_free(&a);
}

typedef struct merge_case {
    const char *name;
    bool null_into;
    bool null_from;
    bool from_is_into;
    size_t from_channels;
    uint64_t into_tokens;
    uint64_t from_tokens;
    int from_max_at;    /* byte offset in the into arena, or NO_ARRAY for from's own arena */
    int from_sum_at;
    sinkkit_status expected;
} merge_case;

static void stats_merge_rejects_invalid(void **state)
{
    use_isa(state);
    stats_arena into_arena = stats_arena_new();
    stats_arena from_arena = stats_arena_new();

    int failures = 0;
    for (size_t i = 0; i < BAD_STATS_COUNT; i++) {
        const stats_case *c = &bad_stats[i];
        for (int side = 0; side < 2; side++) {
            tk_fill_sentinel(into_arena.bytes, STATS_BYTES);
            tk_fill_sentinel(from_arena.bytes, STATS_BYTES);
            sinkkit_channel_stats good = stats_in(side == 0 ? &from_arena : &into_arena, CHANNELS, 7, MAX_AT,
                                                  ARGMAX_AT, SUM_AT);
            sinkkit_channel_stats bad = stats_in(side == 0 ? &into_arena : &from_arena, c->channels, 7, c->max_at,
                                                 c->argmax_at, c->sum_at);
            const sinkkit_channel_stats good_before = good;
            const sinkkit_channel_stats bad_before = bad;
            sinkkit_channel_stats *bad_arg = c->null_stats ? NULL : &bad;

            sinkkit_status got = side == 0 ? sinkkit_channel_stats_merge(bad_arg, &good)
                                           : sinkkit_channel_stats_merge(&good, bad_arg);
            bool untouched = tk_sentinel_intact(into_arena.bytes, STATS_BYTES) &&
                             tk_sentinel_intact(from_arena.bytes, STATS_BYTES) && stats_equal(&good, &good_before) &&
                             stats_equal(&bad, &bad_before);
            char name[128];
            snprintf(name, sizeof name, "%s, as %s", c->name, side == 0 ? "into" : "from");
            failures += check_outcome(name, got, c->expected, untouched);
        }
    }

    const merge_case cases[] = {
        {"into NULL", true, false, false, CHANNELS, 1, 1, NO_ARRAY, NO_ARRAY, SINKKIT_ERROR_NULL_POINTER},
        {"from NULL", false, true, false, CHANNELS, 1, 1, NO_ARRAY, NO_ARRAY, SINKKIT_ERROR_NULL_POINTER},
        {"fewer channels in from", false, false, false, CHANNELS - 1, 1, 1, NO_ARRAY, NO_ARRAY,
         SINKKIT_ERROR_INVALID_SHAPE},
        {"more channels in from", false, false, false, CHANNELS + 1, 1, 1, NO_ARRAY, NO_ARRAY,
         SINKKIT_ERROR_INVALID_SHAPE},
        {"merge with itself", false, false, true, CHANNELS, 1, 1, NO_ARRAY, NO_ARRAY, SINKKIT_ERROR_ALIASING},
        {"max_abs shared", false, false, false, CHANNELS, 1, 1, MAX_AT, NO_ARRAY, SINKKIT_ERROR_ALIASING},
        {"from sum_squares over into argmax_token", false, false, false, CHANNELS, 1, 1, NO_ARRAY, ARGMAX_AT + 8,
         SINKKIT_ERROR_ALIASING},
        {"token count overflows", false, false, false, CHANNELS, UINT64_MAX, 1, NO_ARRAY, NO_ARRAY,
         SINKKIT_ERROR_INVALID_VALUE},
        {"token count overflows both ways", false, false, false, CHANNELS, 1, UINT64_MAX, NO_ARRAY, NO_ARRAY,
         SINKKIT_ERROR_INVALID_VALUE},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const merge_case *c = &cases[i];
        tk_fill_sentinel(into_arena.bytes, STATS_BYTES);
        tk_fill_sentinel(from_arena.bytes, STATS_BYTES);
        sinkkit_channel_stats into = stats_in(&into_arena, CHANNELS, c->into_tokens, MAX_AT, ARGMAX_AT, SUM_AT);
        sinkkit_channel_stats from = stats_in(&from_arena, c->from_channels, c->from_tokens, MAX_AT, ARGMAX_AT, SUM_AT);
        if (c->from_max_at != NO_ARRAY)
            from.max_abs = (float *)(void *)(into_arena.bytes + c->from_max_at);
        if (c->from_sum_at != NO_ARRAY)
            from.sum_squares = (double *)(void *)(into_arena.bytes + c->from_sum_at);
        const sinkkit_channel_stats into_before = into;
        const sinkkit_channel_stats from_before = from;

        const sinkkit_channel_stats *from_arg = c->from_is_into ? &into : c->null_from ? NULL : &from;
        sinkkit_status got = sinkkit_channel_stats_merge(c->null_into ? NULL : &into, from_arg);
        bool untouched = tk_sentinel_intact(into_arena.bytes, STATS_BYTES) &&
                         tk_sentinel_intact(from_arena.bytes, STATS_BYTES) && stats_equal(&into, &into_before) &&
                         stats_equal(&from, &from_before);
        failures += check_outcome(c->name, got, c->expected, untouched);
    }

    stats_arena_free(&from_arena);
    stats_arena_free(&into_arena);
    assert_int_equal(failures, 0);
}

/* Two chunks merged give what one update over all tokens gives, and from is left unchanged. */
static void stats_merge_accepts_valid(void **state)
{
    use_isa(state);
    enum { TOKENS = 12, SPLIT = 5 };
    float a[TOKENS * CHANNELS];
    uint64_t seed = 0x3E76EULL;
    tk_fill_random(a, TOKENS * CHANNELS, &seed, 0.0f, 8.0f);
    /* Repeat one row so that ties between the chunks must go to the lower token. */
    memcpy(&a[(TOKENS - 1) * CHANNELS], &a[1 * CHANNELS], CHANNELS * sizeof(float));

    float max_abs[2][CHANNELS];
    uint64_t argmax_token[2][CHANNELS];
    double sum_squares[2][CHANNELS];
    sinkkit_channel_stats into = {CHANNELS, 0, max_abs[0], argmax_token[0], sum_squares[0]};
    sinkkit_channel_stats from = {CHANNELS, 0, max_abs[1], argmax_token[1], sum_squares[1]};
    assert_int_equal(sinkkit_channel_stats_reset(&into), SINKKIT_OK);
    assert_int_equal(sinkkit_channel_stats_reset(&from), SINKKIT_OK);
    assert_int_equal(sinkkit_channel_stats_update_f32(&into, &a[SPLIT * CHANNELS], TOKENS - SPLIT, CHANNELS, SPLIT),
                     SINKKIT_OK);
    assert_int_equal(sinkkit_channel_stats_update_f32(&from, a, SPLIT, CHANNELS, 0), SINKKIT_OK);

    float from_max[CHANNELS];
    uint64_t from_argmax[CHANNELS];
    double from_sum[CHANNELS];
    memcpy(from_max, max_abs[1], sizeof from_max);
    memcpy(from_argmax, argmax_token[1], sizeof from_argmax);
    memcpy(from_sum, sum_squares[1], sizeof from_sum);

    assert_int_equal(sinkkit_channel_stats_merge(&into, &from), SINKKIT_OK);

    float want_max[CHANNELS];
    uint64_t want_argmax[CHANNELS];
    double want_sum[CHANNELS];
    sinkkit_channel_stats want = {CHANNELS, 0, want_max, want_argmax, want_sum};
    assert_int_equal(sinkkit_channel_stats_reset(&want), SINKKIT_OK);
    sinkkit_channel_stats_update_f32_reference(want_max, want_argmax, want_sum, CHANNELS, a, TOKENS, CHANNELS, 0);

    assert_int_equal(into.tokens, TOKENS);
    assert_int_equal(from.tokens, SPLIT);
    assert_memory_equal(from_max, max_abs[1], sizeof from_max);
    assert_memory_equal(from_argmax, argmax_token[1], sizeof from_argmax);
    assert_memory_equal(from_sum, sum_squares[1], sizeof from_sum);
    for (size_t c = 0; c < CHANNELS; c++) {
        assert_memory_equal(&max_abs[0][c], &want_max[c], sizeof(float));
        assert_int_equal(argmax_token[0][c], want_argmax[c]);
        assert_true(metric_relative_error(sum_squares[0][c], want_sum[c]) <= TK_FLOAT_PARTIAL_BOUND);
    }
}

/* ---------------------------------------------------------------------------
 * Status messages and the remaining entry points
 * ------------------------------------------------------------------------- */

static void status_messages_defined(void **state)
{
    (void)state;
    enum { CODES = SINKKIT_ERROR_BUFFER_TOO_SMALL + 1 };
    const char *messages[CODES];

    for (int code = 0; code < CODES; code++) {
        messages[code] = sinkkit_status_message((sinkkit_status)code);
        assert_non_null(messages[code]);
        assert_true(strlen(messages[code]) > 0);
        for (int other = 0; other < code; other++) {
            if (strcmp(messages[code], messages[other]) == 0)
                fail_msg("status %d and %d share the message \"%s\"", other, code, messages[code]);
        }
    }

    const int out_of_range[] = {CODES, CODES + 1, -1, 1000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof out_of_range / sizeof out_of_range[0]; i++) {
        const char *message = sinkkit_status_message((sinkkit_status)out_of_range[i]);
        assert_non_null(message);
        assert_true(strlen(message) > 0);
        /* An unknown code must not read as success or as one of the defined errors. */
        for (int code = 0; code < CODES; code++)
            assert_string_not_equal(message, messages[code]);
    }
}

static void dispatch_info_rejects_null(void **state)
{
    (void)state;
    assert_int_equal(sinkkit_get_dispatch_info(NULL), SINKKIT_ERROR_NULL_POINTER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_messages_defined),
        cmocka_unit_test(dispatch_info_rejects_null),
        TK_ISA_TESTS(rmsnorm_rejects_invalid),
        TK_ISA_TESTS(rmsnorm_zero_tokens_noop),
        TK_ISA_TESTS(rmsnorm_accepts_valid_layouts),
        TK_ISA_TESTS(row_moments_rejects_invalid),
        TK_ISA_TESTS(row_moments_zero_rows_noop),
        TK_ISA_TESTS(row_moments_accepts_valid),
        TK_ISA_TESTS(head_moments_rejects_invalid),
        TK_ISA_TESTS(head_moments_accepts_valid_layouts),
        TK_ISA_TESTS(stats_reset_rejects_invalid),
        TK_ISA_TESTS(stats_update_rejects_invalid),
        TK_ISA_TESTS(stats_update_accepts_valid),
        TK_ISA_TESTS(stats_merge_rejects_invalid),
        TK_ISA_TESTS(stats_merge_accepts_valid),
    };
    return cmocka_run_group_tests(tests, NULL, restore_auto);
}
