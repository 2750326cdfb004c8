/* Runs every ISA's kernels on model shapes and on a sweep of tail lengths, against the reference kernels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

size_t layout_span(const sinkkit_head_layout *layout)
{
    return (layout->tokens - 1) * layout->token_stride + (layout->heads - 1) * layout->head_stride +
           layout->head_dim;
}

/* ---- head-wise kernels ---- */

static const sinkkit_gamma_kind gamma_kinds[3] = {SINKKIT_GAMMA_NONE, SINKKIT_GAMMA_SHARED, SINKKIT_GAMMA_PER_HEAD};
static const validate_output gamma_outputs[3] = {OUTPUT_RMSNORM_GAMMA_NONE, OUTPUT_RMSNORM_GAMMA_SHARED,
                                                 OUTPUT_RMSNORM_GAMMA_PER_HEAD};

static const float *gamma_for(const head_input *input, sinkkit_gamma_kind kind)
{
    if (kind == SINKKIT_GAMMA_SHARED)
        return input->gamma_shared;
    if (kind == SINKKIT_GAMMA_PER_HEAD)
        return input->gamma_per_head;
    return NULL;
}

void validate_head_moments(sinkkit_row_moments_f32_fn kernel, const sinkkit_head_layout *layout, const float *x,
                           float *mean, float *variance, unsigned flags)
{
    for (size_t t = 0; t < layout->tokens; t++) {
        const size_t out = t * layout->heads;
        kernel(x + t * layout->token_stride, layout->heads, layout->head_dim, layout->head_stride, mean + out,
               variance + out, flags);
    }
}

/* Fills outputs with NaN before a kernel runs, so that a value the kernel fails to write cannot keep
   a correct result from an earlier run. */
static void poison(float *out, size_t count)
{
    for (size_t i = 0; i < count; i++)
        out[i] = NAN;
}

static void run_rmsnorm(const sinkkit_kernel_table *kernels, const head_input *input, size_t span,
                        sinkkit_gamma_kind kind, float *y, float *inv_rms)
{
    const size_t vectors = input->layout.tokens * input->layout.heads;
    poison(y, span);
    poison(inv_rms, vectors);

    const float *x = input->x;
    if (input->in_place) {
        memcpy(y, input->x, span * sizeof(float));
        x = y;
    }
    kernels->headwise_rmsnorm_f32(&input->layout, x, y, gamma_for(input, kind), kind, input->eps, inv_rms);
}

void validate_head_input(validate_run *run, check_row rows[][OUTPUT_COUNT], const char *where,
                         const head_input *input)
{
    const sinkkit_head_layout *layout = &input->layout;
    const size_t span = layout_span(layout);
    const size_t vectors = cli_checked_mul(layout->tokens, layout->heads);

    void *bases[6];
    float *want_y = cli_alloc_floats(span, input->offset_floats, &bases[0]);
    float *got_y = cli_alloc_floats(span, input->offset_floats, &bases[1]);
    float *want_r = cli_alloc_floats(vectors, 0, &bases[2]);
    float *got_r = cli_alloc_floats(vectors, 0, &bases[3]);
    float *want_moments = cli_alloc_floats(2 * vectors, 0, &bases[4]);
    float *got_moments = cli_alloc_floats(2 * vectors, 0, &bases[5]);

    for (size_t g = 0; g < 3; g++) {
        sinkkit_headwise_rmsnorm_f32_reference(layout, input->x, want_y, gamma_for(input, gamma_kinds[g]),
                                               gamma_kinds[g], input->eps, want_r);
        for (size_t i = 0; i < run->isa_count; i++) {
            run_rmsnorm(run->tables[i], input, span, gamma_kinds[g], got_y, got_r);
            compare_rmsnorm(&rows[i][gamma_outputs[g]], &rows[i][OUTPUT_RMSNORM_INV_RMS], where, layout, got_y,
                            want_y, got_r, want_r);
        }
    }

    /* Unbiased variance needs at least two elements per vector. */
    const unsigned flag_count = layout->head_dim >= 2 ? 2 : 1;
    for (unsigned flags = 0; flags < flag_count; flags++) {
        validate_head_moments(sinkkit_row_moments_f32_reference, layout, input->x, want_moments,
                              want_moments + vectors, flags);
        for (size_t i = 0; i < run->isa_count; i++) {
            poison(got_moments, 2 * vectors);
            validate_head_moments(run->tables[i]->row_moments_f32, layout, input->x, got_moments,
                                  got_moments + vectors, flags);
            compare_moments(&rows[i][OUTPUT_HEAD_MEAN], &rows[i][OUTPUT_HEAD_VARIANCE], where, layout, true,
                            input->x, got_moments, want_moments, got_moments + vectors, want_moments + vectors);
        }
    }

    for (size_t i = 0; i < 6; i++)
        free(bases[i]);
}

/* ---- row kernels ---- */

static void run_channel_stats(const sinkkit_kernel_table *kernels, const width_input *input,
                              const cli_stats *stats)
{
    const size_t split = input->split < input->tokens ? input->split : input->tokens;
    if (split > 0)
        kernels->channel_stats_update_f32(stats->max_abs, stats->argmax_token, stats->sum_squares, input->width,
                                          input->x, split, input->row_stride, input->first_token);
    if (split < input->tokens)
        kernels->channel_stats_update_f32(stats->max_abs, stats->argmax_token, stats->sum_squares, input->width,
                                          input->x + split * input->row_stride, input->tokens - split,
                                          input->row_stride, input->first_token + split);
}

void validate_width_input(validate_run *run, check_row rows[][OUTPUT_COUNT], const char *where,
                          const width_input *input)
{
    /* Row moments treat each token row as one vector: one head of width elements. */
    const sinkkit_head_layout rows_layout = {input->tokens, 1, input->width, input->row_stride, input->width};

    void *bases[2];
    float *want = cli_alloc_floats(2 * input->tokens, 0, &bases[0]);
    float *got = cli_alloc_floats(2 * input->tokens, 0, &bases[1]);

    const unsigned flag_count = input->width >= 2 ? 2 : 1;
    for (unsigned flags = 0; flags < flag_count; flags++) {
        sinkkit_row_moments_f32_reference(input->x, input->tokens, input->width, input->row_stride, want,
                                          want + input->tokens, flags);
        for (size_t i = 0; i < run->isa_count; i++) {
            poison(got, 2 * input->tokens);
            run->tables[i]->row_moments_f32(input->x, input->tokens, input->width, input->row_stride, got,
                                            got + input->tokens, flags);
            compare_moments(&rows[i][OUTPUT_ROW_MEAN], &rows[i][OUTPUT_ROW_VARIANCE], where, &rows_layout, false,
                            input->x, got, want, got + input->tokens, want + input->tokens);
        }
    }
    free(bases[0]);
    free(bases[1]);

    /* The reference processes all tokens in one call. Each ISA gets them in two calls, which must not
       change the result. */
    cli_stats want_stats = cli_stats_new(input->width);
    sinkkit_channel_stats_update_f32_reference(want_stats.max_abs, want_stats.argmax_token, want_stats.sum_squares,
                                               input->width, input->x, input->tokens, input->row_stride,
                                               input->first_token);
    for (size_t i = 0; i < run->isa_count; i++) {
        cli_stats got_stats = cli_stats_new(input->width);
        run_channel_stats(run->tables[i], input, &got_stats);
        compare_channel_stats(&rows[i][OUTPUT_CHANNEL_MAX], &rows[i][OUTPUT_CHANNEL_RMS], where, input->width,
                              input->tokens, &got_stats, &want_stats);
        cli_stats_free(&got_stats);
    }
    cli_stats_free(&want_stats);
}

/* ---- test data ---- */

/* Fills token rows like real activations: each row has its own offset and scale (a power of two from
   2^-4 to 2^4). Token 0 gets two outliers, as massive activations on the first token do. When there
   are two tokens or more, channel 3 reaches the same largest magnitude at tokens 1 and tokens - 1
   (with opposite signs), so argmax must resolve the tie to token 1. The middle channel is all zero. */
static void fill_activations(float *x, size_t tokens, size_t width, size_t row_stride, uint64_t *rng)
{
    for (size_t t = 0; t < tokens; t++) {
        float *row = x + t * row_stride;
        double offset = cli_random_uniform(rng, -2.0, 2.0);
        double scale = ldexp(1.0, (int)(cli_random_u64(rng) % 9) - 4);
        for (size_t c = 0; c < width; c++)
            row[c] = (float)(offset + scale * cli_random_uniform(rng, -1.0, 1.0));
    }

    x[0] = 1500.0f;
    x[width - 1] = -2750.0f;
    if (tokens >= 2 && width > 3) {
        x[row_stride + 3] = 5000.0f;
        x[(tokens - 1) * row_stride + 3] = -5000.0f;
    }
    if (width > 2) {
        for (size_t t = 0; t < tokens; t++)
            x[t * row_stride + width / 2] = 0.0f;
    }
}

/* Gamma weights: shared in [0.5, 1.5), per head in [-2, 2) so that signs flip too. */
static void fill_gammas(float *shared, float *per_head, size_t heads, size_t head_dim, uint64_t *rng)
{
    for (size_t d = 0; d < head_dim; d++)
        shared[d] = (float)cli_random_uniform(rng, 0.5, 1.5);
    for (size_t i = 0; i < heads * head_dim; i++)
        per_head[i] = (float)cli_random_uniform(rng, -2.0, 2.0);
}

/* Runs one layout through the head-wise kernels. Padding between vectors contains NaN, so a kernel that
   reads outside its vectors produces a visible failure. */
static void run_head_layout(validate_run *run, const char *where, const sinkkit_head_layout *layout,
                            size_t offset_floats, bool in_place, uint64_t *rng)
{
    const size_t span = layout_span(layout);
    void *bases[3];
    float *x = cli_alloc_floats(span, offset_floats, &bases[0]);
    float *gamma_shared = cli_alloc_floats(layout->head_dim, 0, &bases[1]);
    float *gamma_per_head = cli_alloc_floats(cli_checked_mul(layout->heads, layout->head_dim), 0, &bases[2]);

    /* The activations are generated as token rows of heads * head_dim, then placed by the layout. */
    const size_t width = cli_checked_mul(layout->heads, layout->head_dim);
    void *rows_base;
    float *rows = cli_alloc_floats(cli_checked_mul(layout->tokens, width), 0, &rows_base);
    fill_activations(rows, layout->tokens, width, width, rng);

    for (size_t i = 0; i < span; i++)
        x[i] = NAN;
    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++)
            memcpy(x + t * layout->token_stride + h * layout->head_stride, rows + t * width + h * layout->head_dim,
                   layout->head_dim * sizeof(float));
    }
    free(rows_base);
    fill_gammas(gamma_shared, gamma_per_head, layout->heads, layout->head_dim, rng);

    head_input input = {*layout, x, offset_floats, gamma_shared, gamma_per_head, 1e-6f, in_place};
    validate_head_input(run, run->shape_rows, where, &input);

    for (size_t i = 0; i < 3; i++)
        free(bases[i]);
}

static void run_width(validate_run *run, const char *where, size_t tokens, size_t width, size_t row_stride,
                      size_t offset_floats, uint64_t *rng)
{
    void *base;
    const size_t span = (tokens - 1) * row_stride + width;
    float *x = cli_alloc_floats(span, offset_floats, &base);
    for (size_t i = 0; i < span; i++)
        x[i] = NAN;
    fill_activations(x, tokens, width, row_stride, rng);

    /* A first token far from 0 checks that kernels add it to the token index. */
    width_input input = {x, tokens, width, row_stride, 1000, tokens / 3};
    validate_width_input(run, run->shape_rows, where, &input);
    free(base);
}

/* ---- the input sets ---- */

/* Token counts: 1 and 512 as in decoding and prefill, and odd counts for the tails of blocked loops.
   Odd counts also run on buffers 4 bytes past a 64-byte boundary, with RMSNorm in place. */
static const size_t full_tokens[4] = {1, 7, 33, 512};
static const size_t quick_tokens[2] = {1, 7};

static void run_model_shapes(validate_run *run, uint64_t *rng)
{
    const size_t *tokens = run->quick ? quick_tokens : full_tokens;
    const size_t token_count = run->quick ? 2 : 4;
    char where[160];

    for (size_t s = 0; s < sizeof cli_head_shapes / sizeof cli_head_shapes[0]; s++) {
        const cli_head_shape *shape = &cli_head_shapes[s];
        for (size_t k = 0; k < token_count; k++) {
            const bool odd = tokens[k] % 2 == 1 && tokens[k] > 1;
            sinkkit_head_layout layout = {tokens[k], shape->heads, shape->head_dim, shape->heads * shape->head_dim,
                                          shape->head_dim};
            snprintf(where, sizeof where, "%s (%s), %zu tokens", shape->label, shape->models, tokens[k]);
            run_head_layout(run, where, &layout, odd ? 1 : 0, odd, rng);
        }
    }

    for (size_t s = 0; s < sizeof cli_width_shapes / sizeof cli_width_shapes[0]; s++) {
        const cli_width_shape *shape = &cli_width_shapes[s];
        for (size_t k = 0; k < token_count; k++) {
            const bool odd = tokens[k] % 2 == 1 && tokens[k] > 1;
            snprintf(where, sizeof where, "%s (%s), %zu tokens", shape->label, shape->models, tokens[k]);
            run_width(run, where, tokens[k], shape->width, shape->width, odd ? 1 : 0, rng);
        }
    }
}

/* Every length up to 3 * 16 + 1 covers the masked tails of 4-, 8- and 16-lane loops. The longer
   lengths cover unrolled loops and wider SVE vectors. */
static const size_t tail_extra_lengths[] = {63, 64, 65, 127, 129, 191, 193, 255, 257, 1031, 4099};

static size_t tail_length(size_t i)
{
    return i < 49 ? i + 1 : tail_extra_lengths[i - 49];
}

/* Layouts rotate through token-major, head-major and padded token-major. */
static void run_tail_heads(validate_run *run, size_t head_dim, uint64_t *rng)
{
    const size_t tokens = 3;
    const size_t heads = 3;
    sinkkit_head_layout layout = {tokens, heads, head_dim, heads * head_dim, head_dim};
    const char *name = "token-major";
    if (head_dim % 3 == 1) {
        layout.token_stride = head_dim;
        layout.head_stride = tokens * head_dim;
        name = "head-major";
    } else if (head_dim % 3 == 2) {
        layout.head_stride = head_dim + 1;
        layout.token_stride = heads * layout.head_stride + 3;
        name = "padded";
    }

    const size_t offset = head_dim % 16;
    const bool in_place = head_dim % 2 == 1;
    char where[160];
    snprintf(where, sizeof where, "tail sweep, %zu tokens x %zu heads x %zu, %s layout, offset %zu floats%s", tokens,
             heads, head_dim, name, offset, in_place ? ", in place" : "");
    run_head_layout(run, where, &layout, offset, in_place, rng);
}

static void run_tail_width(validate_run *run, size_t width, uint64_t *rng)
{
    const size_t tokens = 5;
    const size_t row_stride = width + width % 5;
    const size_t offset = width % 16;
    char where[160];
    snprintf(where, sizeof where, "tail sweep, %zu tokens x %zu, row stride %zu, offset %zu floats", tokens, width,
             row_stride, offset);
    run_width(run, where, tokens, width, row_stride, offset, rng);
}

void validate_shapes(validate_run *run)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    run_model_shapes(run, &rng);

    const size_t lengths = 49 + sizeof tail_extra_lengths / sizeof tail_extra_lengths[0];
    for (size_t i = 0; i < lengths; i++) {
        /* Lengths above 257 go only to the row kernels, because head vectors that long do not occur. */
        if (tail_length(i) <= 257)
            run_tail_heads(run, tail_length(i), &rng);
        run_tail_width(run, tail_length(i), &rng);
    }
}
