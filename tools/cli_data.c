/* Model shapes, aligned buffers, channel-statistics arrays and the random generator shared by validate and
   bench. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Llama-3-8B: 32 query heads of 128, hidden 4096, FFN 14336. Qwen3-8B: 32 query heads and 8 key-value
   heads of 128, each normalised by q_norm/k_norm. GPT-2 small: 12 heads of 64, hidden 768, FFN 3072. */
const cli_head_shape cli_head_shapes[3] = {
    {"32x128", "Llama-3-8B attention, Qwen3-8B q_norm", 32, 128},
    {"8x128", "Qwen3-8B k_norm", 8, 128},
    {"12x64", "GPT-2 small attention", 12, 64},
};

const cli_width_shape cli_width_shapes[4] = {
    {"4096", "Llama-3-8B hidden state", 4096},
    {"14336", "Llama-3-8B FFN activation", 14336},
    {"768", "GPT-2 small hidden state", 768},
    {"3072", "GPT-2 small FFN activation", 3072},
};

void cli_print_shape_legend(FILE *out)
{
    fprintf(out, "Shapes (heads x head_dim, or row width):\n");
    for (size_t i = 0; i < sizeof cli_head_shapes / sizeof cli_head_shapes[0]; i++)
        fprintf(out, "  %-7s %s\n", cli_head_shapes[i].label, cli_head_shapes[i].models);
    for (size_t i = 0; i < sizeof cli_width_shapes / sizeof cli_width_shapes[0]; i++)
        fprintf(out, "  %-7s %s\n", cli_width_shapes[i].label, cli_width_shapes[i].models);
}

void *cli_alloc(size_t bytes)
{
    /* aligned_alloc needs a size that is a multiple of the alignment. */
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded < bytes)
        rounded = 0;

    void *p = rounded != 0 ? aligned_alloc(64, rounded) : NULL;
    if (p == NULL) {
        fprintf(stderr, "sinkkit: out of memory: allocating %zu bytes failed\n", bytes);
        exit(CLI_EXIT_FAILURE);
    }
    return p;
}

float *cli_alloc_floats(size_t count, size_t offset_floats, void **base)
{
    size_t floats;
    if (__builtin_add_overflow(count, offset_floats, &floats)) {
        fprintf(stderr, "sinkkit: a buffer of %zu floats is too large\n", count);
        exit(CLI_EXIT_FAILURE);
    }
    *base = cli_alloc(cli_checked_mul(floats, sizeof(float)));
    return (float *)*base + offset_floats;
}

size_t cli_checked_mul(size_t a, size_t b)
{
    size_t product;
    if (__builtin_mul_overflow(a, b, &product)) {
        fprintf(stderr, "sinkkit: size %zu x %zu overflows size_t\n", a, b);
        exit(CLI_EXIT_FAILURE);
    }
    return product;
}

cli_stats cli_stats_new(size_t channels)
{
    cli_stats stats;
    stats.max_abs = cli_alloc(cli_checked_mul(channels, sizeof(float)));
    stats.argmax_token = cli_alloc(cli_checked_mul(channels, sizeof(uint64_t)));
    stats.sum_squares = cli_alloc(cli_checked_mul(channels, sizeof(double)));
    for (size_t c = 0; c < channels; c++) {
        stats.max_abs[c] = 0.0f;
        stats.argmax_token[c] = SINKKIT_NO_TOKEN;
        stats.sum_squares[c] = 0.0;
    }
    return stats;
}

void cli_stats_free(cli_stats *stats)
{
    free(stats->max_abs);
    free(stats->argmax_token);
    free(stats->sum_squares);
    memset(stats, 0, sizeof *stats);
}

uint64_t cli_random_u64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

double cli_random_uniform(uint64_t *state, double lo, double hi)
{
    /* The top 53 bits give a double uniform in [0, 1). */
    double u = (double)(cli_random_u64(state) >> 11) * 0x1p-53;
    return lo + (hi - lo) * u;
}
