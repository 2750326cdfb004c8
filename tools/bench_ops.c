/* The operations that `sinkkit bench` times: kernels through the per-ISA tables, and the copy and read
   rooflines over the same bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

bool bench_family_writes(bench_family family)
{
    return family == FAMILY_RMSNORM;
}

bool bench_case_touches_stats(const bench_case *bench)
{
    return bench->family == FAMILY_CHANNEL_STATS && bench->tokens == 1;
}

/* Bytes of max_abs, argmax_token and sum_squares per channel. */
enum { STATS_BYTES_PER_CHANNEL = sizeof(float) + sizeof(uint64_t) + sizeof(double) };

size_t bench_kernel_bytes(const bench_case *bench)
{
    size_t x_bytes = bench->tokens * bench->heads * bench->head_dim * sizeof(float);
    if (bench_family_writes(bench->family))
        return 2 * x_bytes;
    if (bench_case_touches_stats(bench))
        return x_bytes + 2 * bench->heads * bench->head_dim * STATS_BYTES_PER_CHANNEL;
    return x_bytes;
}

bench_buffers bench_buffers_new(const bench_case *bench)
{
    bench_buffers buffers;
    memset(&buffers, 0, sizeof buffers);
    const size_t width = cli_checked_mul(bench->heads, bench->head_dim);
    const size_t vectors = cli_checked_mul(bench->tokens, bench->heads);
    buffers.count = cli_checked_mul(bench->tokens, width);

    buffers.x = cli_alloc(cli_checked_mul(buffers.count, sizeof(float)));
    uint64_t rng = 0x2545F4914F6CDD1Dull ^ buffers.count;
    for (size_t i = 0; i < buffers.count; i++)
        buffers.x[i] = (float)cli_random_uniform(&rng, -2.0, 2.0);

    if (bench_family_writes(bench->family)) {
        buffers.y = cli_alloc(cli_checked_mul(buffers.count, sizeof(float)));
        memset(buffers.y, 0, buffers.count * sizeof(float));
        buffers.gamma = cli_alloc(cli_checked_mul(bench->head_dim, sizeof(float)));
        for (size_t d = 0; d < bench->head_dim; d++)
            buffers.gamma[d] = (float)cli_random_uniform(&rng, 0.5, 1.5);
    }

    buffers.mean = cli_alloc(cli_checked_mul(vectors, sizeof(float)));
    buffers.variance = cli_alloc(cli_checked_mul(vectors, sizeof(float)));

    buffers.stats = cli_stats_new(width);
    return buffers;
}

void bench_buffers_free(bench_buffers *buffers)
{
    free(buffers->x);
    free(buffers->y);
    free(buffers->gamma);
    free(buffers->mean);
    free(buffers->variance);
    cli_stats_free(&buffers->stats);
    memset(buffers, 0, sizeof *buffers);
}

/* ---- roofline operations ---- */

const bench_roofline *bench_widest_roofline(void)
{
#if defined(SINKKIT_HAVE_AVX512)
    if (sinkkit_isa_supported(SINKKIT_ISA_AVX512))
        return &bench_roofline_avx512;
#endif
#if defined(SINKKIT_HAVE_AVX2)
    if (sinkkit_isa_supported(SINKKIT_ISA_AVX2))
        return &bench_roofline_avx2;
#endif
    return &bench_roofline_generic;
}

/* Keeps the result of the read observable so that the compiler cannot drop the loop. */
static volatile float read_sink;

/* ---- kernels ---- */

static void run_kernel(const bench_op *op, uint64_t iteration)
{
    const bench_case *bench = op->bench;
    bench_buffers *b = op->buffers;
    const size_t width = bench->heads * bench->head_dim;
    const sinkkit_head_layout layout = {bench->tokens, bench->heads, bench->head_dim, width, bench->head_dim};

    switch (bench->family) {
    case FAMILY_RMSNORM:
        op->kernels->headwise_rmsnorm_f32(&layout, b->x, b->y, b->gamma, SINKKIT_GAMMA_SHARED, 1e-6f, NULL);
        break;
    case FAMILY_ROW_MOMENTS:
        op->kernels->row_moments_f32(b->x, bench->tokens, width, width, b->mean, b->variance, 0);
        break;
    case FAMILY_HEAD_MOMENTS:
        /* One call per token, as sinkkit_head_moments_f32 does. */
        for (size_t t = 0; t < bench->tokens; t++)
            op->kernels->row_moments_f32(b->x + t * width, bench->heads, bench->head_dim, bench->head_dim,
                                         b->mean + t * bench->heads, b->variance + t * bench->heads, 0);
        break;
    case FAMILY_CHANNEL_STATS:
        /* Each call continues the token stream, as consecutive chunks of one sequence would. */
        op->kernels->channel_stats_update_f32(b->stats.max_abs, b->stats.argmax_token, b->stats.sum_squares, width,
                                              b->x, bench->tokens, width, iteration * bench->tokens);
        break;
    }
}

static void run_op(const bench_op *op, uint64_t iteration)
{
    bench_buffers *b = op->buffers;
    switch (op->kind) {
    case OP_KERNEL:
        run_kernel(op, iteration);
        break;
    case OP_MEMCPY:
        memcpy(b->y, b->x, b->count * sizeof(float));
        break;
    case OP_LOOP_COPY:
        bench_widest_roofline()->copy(b->x, b->y, b->count);
        break;
    case OP_READ:
        read_sink = bench_widest_roofline()->sum(b->x, b->count);
        break;
    case OP_READ_STATS:
        read_sink = bench_widest_roofline()->sum(b->x, b->count);
        bench_widest_roofline()->touch_stats(b->stats.max_abs, b->stats.argmax_token, b->stats.sum_squares,
                                             op->bench->heads * op->bench->head_dim);
        break;
    }
}

/* ---- timing ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Counts calls, so that the token index of the channel-statistics stream grows with each call. It
   would take over 10^15 calls of 4096 tokens to reach SINKKIT_NO_TOKEN. */
static uint64_t call_counter;

double bench_time(const bench_op *op, uint64_t iterations)
{
    double start = now_seconds();
    for (uint64_t i = 0; i < iterations; i++)
        run_op(op, call_counter++);
    return now_seconds() - start;
}

uint64_t bench_calibrate(const bench_op *op, double min_time)
{
    /* The first call pays for page faults and cold caches; it is not timed. */
    run_op(op, call_counter++);

    uint64_t iterations = 1;
    for (;;) {
        double elapsed = bench_time(op, iterations);
        if (elapsed >= min_time || iterations >= (1ull << 32))
            return iterations;

        /* Aim 25% above min_time so that noise rarely leaves a repetition short. Each step grows
           the count by at least 10% and at most 100x. */
        double factor = elapsed > 0.0 ? 1.25 * min_time / elapsed : 100.0;
        factor = fmin(fmax(factor, 1.1), 100.0);
        iterations = (uint64_t)ceil((double)iterations * factor);
    }
}
