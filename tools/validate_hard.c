/* Hard inputs for every ISA: huge means, constant rows, subnormals, overflowing squares, NaN and zeros. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "validate.h"

typedef enum hard_kind {
    HARD_LARGE_MEAN,
    HARD_CONSTANT,
    HARD_SUBNORMAL,
    HARD_HUGE,
    HARD_NAN,
    HARD_ZEROS,
    HARD_ZEROS_EPS0
} hard_kind;

typedef struct hard_case {
    hard_kind kind;
    const char *name;
    float eps;
} hard_case;

static const hard_case hard_cases[] = {
    {HARD_LARGE_MEAN, "|mean| = 1e6 x std", 1e-6f},
    {HARD_CONSTANT, "constant rows", 1e-6f},
    {HARD_SUBNORMAL, "subnormal values", 1e-6f},
    {HARD_HUGE, "values of 1e20 and 3e38", 1e-6f},
    {HARD_NAN, "one NaN", 1e-6f},
    {HARD_ZEROS, "zeros, eps 1e-6", 1e-6f},
    {HARD_ZEROS_EPS0, "zeros, eps 0", 0.0f},
};

/* Two geometries: model-like vectors, and odd ones whose lengths leave a tail on every ISA. */
static const struct {
    size_t tokens;
    size_t heads;
    size_t head_dim;
} hard_geometries[2] = {{6, 4, 128}, {5, 3, 67}};

/* A hard input: token-major x[tokens][heads * head_dim] and where its NaN sits. */
typedef struct hard_input {
    const hard_case *kind;
    sinkkit_head_layout layout;
    size_t width;
    float *x;
    size_t nan_token;
    size_t nan_head;
    size_t nan_index;
} hard_input;

/* Constant rows, including 1234.1f, where mean(x^2) - mean(x)^2 in float is far from 0, and 7e30,
   whose square overflows float. */
static const float constants[6] = {1234.0f, 1234.1f, -0.5f, 3.0e-5f, 7.0e30f, 1.0f};

static float fill_value(const hard_input *input, size_t t, size_t i, uint64_t *rng)
{
    double u = cli_random_uniform(rng, -1.0, 1.0);
    switch (input->kind->kind) {
    case HARD_LARGE_MEAN: {
        /* u has standard deviation 1/sqrt(3), so the row's std is about scale and |mean| 1e6 * scale. */
        double scale = ldexp(1.0, 10 * ((int)(t % 3) - 1));
        double mean = (t % 2 == 0 ? 1e6 : -1e6) * scale;
        return (float)(mean + scale * sqrt(3.0) * u);
    }
    case HARD_CONSTANT:
        return constants[t % 6];
    case HARD_SUBNORMAL:
        if (t == 0)
            return 9.99995e-41f;
        if (t == 1)
            return 0x1p-149f;
        if (t == 2 && i % 2 == 1)
            return 0.0f;
        return (float)(u * FLT_MIN);
    case HARD_HUGE:
        if (t % 3 == 0)
            return (float)((u < 0 ? -1e20 : 1e20) * (1.0 + fabs(u)));
        if (t % 3 == 1)
            return 1e20f;
        return (float)((u < 0 ? -3e38 : 3e38) * (0.5 + fabs(u) / 2.0));
    case HARD_NAN:
        return (float)u;
    case HARD_ZEROS:
    case HARD_ZEROS_EPS0:
        return t % 2 == 0 ? 0.0f : -0.0f;
    }
    return 0.0f;
}

static void fill_hard_input(hard_input *input, uint64_t *rng)
{
    const size_t tokens = input->layout.tokens;
    for (size_t t = 0; t < tokens; t++) {
        for (size_t i = 0; i < input->width; i++)
            input->x[t * input->width + i] = fill_value(input, t, i, rng);
    }

    input->nan_token = tokens / 2;
    input->nan_head = input->layout.heads - 1;
    input->nan_index = input->layout.head_dim / 2;
    if (input->kind->kind == HARD_NAN)
        input->x[input->nan_token * input->width + input->nan_head * input->layout.head_dim + input->nan_index] = NAN;
}

static bool is_nan_vector(const hard_input *input, size_t t, size_t h)
{
    return input->kind->kind == HARD_NAN && t == input->nan_token && h == input->nan_head;
}

/* ---- behaviour checks ---- */

static const sinkkit_gamma_kind gamma_kinds[3] = {SINKKIT_GAMMA_NONE, SINKKIT_GAMMA_SHARED, SINKKIT_GAMMA_PER_HEAD};

static bool vector_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return false;
    }
    return true;
}

/* With one NaN, only its vector may hold NaN, and the NaN must show in its output and inv_rms.
   Otherwise (finite input, eps > 0) every output must be finite. */
static void check_rmsnorm(check_row *row, const char *where, const sinkkit_kernel_table *kernels,
                          const hard_input *input, const float *gamma_shared, const float *gamma_per_head)
{
    const sinkkit_head_layout *layout = &input->layout;
    void *bases[2];
    float *y = cli_alloc_floats(cli_checked_mul(layout->tokens, input->width), 0, &bases[0]);
    float *r = cli_alloc_floats(cli_checked_mul(layout->tokens, layout->heads), 0, &bases[1]);

    for (size_t g = 0; g < 3; g++) {
        const float *gamma = g == 0 ? NULL : (g == 1 ? gamma_shared : gamma_per_head);
        kernels->headwise_rmsnorm_f32(layout, input->x, y, gamma, gamma_kinds[g], input->kind->eps, r);

        for (size_t t = 0; t < layout->tokens; t++) {
            for (size_t h = 0; h < layout->heads; h++) {
                const float *v = y + t * layout->token_stride + h * layout->head_stride;
                const float inv_rms = r[t * layout->heads + h];
                bool ok;
                if (is_nan_vector(input, t, h))
                    ok = isnan(v[input->nan_index]) && isnan(inv_rms);
                else
                    ok = vector_finite(v, layout->head_dim) && isfinite(inv_rms);

                row->values++;
                if (!ok)
                    check_fail(row, where, "gamma kind %zu, token %zu, head %zu: %s", g, t, h,
                               is_nan_vector(input, t, h) ? "the NaN did not reach the output"
                                                          : "output or inv_rms is not finite");
            }
        }
    }

    free(bases[0]);
    free(bases[1]);
}

/* Checks the moments of every vector of layout, which are rows when heads is 1. With one NaN, exactly
   the NaN's vector must be NaN. Constant rows must give variance exactly 0 and mean exactly the constant. */
static void check_moments_behaviour(check_row *row, const char *where, const hard_input *input,
                                    const sinkkit_head_layout *layout, const float *mean, const float *variance,
                                    bool per_head, unsigned flags)
{
    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const size_t k = t * layout->heads + h;
            const float constant = constants[t % 6];
            bool ok;
            if (input->kind->kind == HARD_CONSTANT)
                ok = variance[k] == 0.0f && mean[k] == constant;
            else if (t == input->nan_token && (!per_head || h == input->nan_head))
                ok = isnan(mean[k]) && isnan(variance[k]);
            else
                ok = isfinite(mean[k]) && isfinite(variance[k]);

            row->values++;
            if (!ok)
                check_fail(row, where, "flags %u, token %zu, head %zu: mean %.9g, variance %.9g", flags, t, h,
                           mean[k], variance[k]);
        }
    }
}

static void check_moments(check_row *row_check, check_row *head_check, const char *where,
                          const sinkkit_kernel_table *kernels, const hard_input *input)
{
    const sinkkit_head_layout *layout = &input->layout;
    const sinkkit_head_layout rows_layout = {layout->tokens, 1, input->width, input->width, input->width};
    const size_t vectors = cli_checked_mul(layout->tokens, layout->heads);
    void *base;
    float *out = cli_alloc_floats(2 * vectors, 0, &base);

    for (unsigned flags = 0; flags < 2; flags++) {
        kernels->row_moments_f32(input->x, layout->tokens, input->width, input->width, out, out + layout->tokens,
                                 flags);
        check_moments_behaviour(row_check, where, input, &rows_layout, out, out + layout->tokens, false, flags);

        validate_head_moments(kernels->row_moments_f32, layout, input->x, out, out + vectors, flags);
        check_moments_behaviour(head_check, where, input, layout, out, out + vectors, true, flags);
    }
    free(base);
}

/* Only the NaN's channel may report NaN, with argmax_token at the NaN's token. */
static void check_channel_nan(check_row *row, const char *where, const sinkkit_kernel_table *kernels,
                              const hard_input *input)
{
    const size_t nan_channel = input->nan_head * input->layout.head_dim + input->nan_index;
    cli_stats stats = cli_stats_new(input->width);
    kernels->channel_stats_update_f32(stats.max_abs, stats.argmax_token, stats.sum_squares, input->width, input->x,
                                      input->layout.tokens, input->width, 0);

    for (size_t c = 0; c < input->width; c++) {
        bool ok;
        if (c == nan_channel)
            ok = isnan(stats.max_abs[c]) && stats.argmax_token[c] == input->nan_token;
        else
            ok = isfinite(stats.max_abs[c]);

        row->values++;
        if (!ok)
            check_fail(row, where, "channel %zu: max_abs %.9g at token %llu", c, stats.max_abs[c],
                       (unsigned long long)stats.argmax_token[c]);
    }
    cli_stats_free(&stats);
}

static void run_behaviour_checks(validate_run *run, size_t i, const char *where, const hard_input *input,
                                 const float *gamma_shared, const float *gamma_per_head)
{
    check_row *rows = run->behaviour_rows[i];
    const sinkkit_kernel_table *kernels = run->tables[i];
    const hard_kind kind = input->kind->kind;

    if (kind == HARD_NAN) {
        check_rmsnorm(&rows[BEHAVIOUR_RMSNORM_NAN], where, kernels, input, gamma_shared, gamma_per_head);
        check_moments(&rows[BEHAVIOUR_ROW_NAN], &rows[BEHAVIOUR_HEAD_NAN], where, kernels, input);
        check_channel_nan(&rows[BEHAVIOUR_CHANNEL_NAN], where, kernels, input);
    } else if (input->kind->eps > 0.0f) {
        check_rmsnorm(&rows[BEHAVIOUR_RMSNORM_FINITE], where, kernels, input, gamma_shared, gamma_per_head);
    }

    if (kind == HARD_CONSTANT)
        check_moments(&rows[BEHAVIOUR_ROW_CONSTANT], &rows[BEHAVIOUR_HEAD_CONSTANT], where, kernels, input);
}

/* ---- the hard-case set ---- */

static void run_hard_input(validate_run *run, const hard_case *kind, size_t geometry, uint64_t *rng)
{
    const size_t tokens = hard_geometries[geometry].tokens;
    const size_t heads = hard_geometries[geometry].heads;
    const size_t head_dim = hard_geometries[geometry].head_dim;

    hard_input input = {kind, {tokens, heads, head_dim, heads * head_dim, head_dim}, heads * head_dim, NULL, 0, 0,
                        0};
    void *bases[3];
    input.x = cli_alloc_floats(cli_checked_mul(tokens, input.width), 0, &bases[0]);
    float *gamma_shared = cli_alloc_floats(head_dim, 0, &bases[1]);
    float *gamma_per_head = cli_alloc_floats(input.width, 0, &bases[2]);
    fill_hard_input(&input, rng);
    for (size_t d = 0; d < head_dim; d++)
        gamma_shared[d] = (float)cli_random_uniform(rng, 0.5, 1.5);
    for (size_t i = 0; i < input.width; i++)
        gamma_per_head[i] = (float)cli_random_uniform(rng, -2.0, 2.0);

    char where[160];
    snprintf(where, sizeof where, "hard case \"%s\", %zu tokens x %zu heads x %zu", kind->name, tokens, heads,
             head_dim);

    head_input heads_input = {input.layout, input.x, 0, gamma_shared, gamma_per_head, kind->eps, false};
    validate_head_input(run, run->hard_rows, where, &heads_input);
    width_input rows_input = {input.x, tokens, input.width, input.width, 0, tokens / 2};
    validate_width_input(run, run->hard_rows, where, &rows_input);

    for (size_t i = 0; i < run->isa_count; i++)
        run_behaviour_checks(run, i, where, &input, gamma_shared, gamma_per_head);

    for (size_t i = 0; i < 3; i++)
        free(bases[i]);
}

void validate_hard_cases(validate_run *run)
{
    uint64_t rng = 0xD1B54A32D192ED03ull;
    for (size_t c = 0; c < sizeof hard_cases / sizeof hard_cases[0]; c++) {
        for (size_t g = 0; g < sizeof hard_geometries / sizeof hard_geometries[0]; g++)
            run_hard_input(run, &hard_cases[c], g, &rng);
    }
}
