/* The README's examples as one program: head-wise RMSNorm, moments and super-channel detection. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <sinkkit.h>

enum { TOKENS = 8, HEADS = 4, HEAD_DIM = 64, CHANNELS = 256 };

static int report(const char *what, sinkkit_status status)
{
    if (status != SINKKIT_OK)
        fprintf(stderr, "%s: %s\n", what, sinkkit_status_message(status));
    return status != SINKKIT_OK;
}

/* Normalises a [tokens][heads][head_dim] tensor in place with a weight shared by all heads. */
static int normalise_heads(float *q, const float *weight)
{
    sinkkit_head_layout layout = {
        .tokens = TOKENS, .heads = HEADS, .head_dim = HEAD_DIM,
        .token_stride = HEADS * HEAD_DIM, .head_stride = HEAD_DIM,
    };
    return report("rmsnorm", sinkkit_headwise_rmsnorm_f32(&layout, q, q, weight, SINKKIT_GAMMA_SHARED, 1e-6f, NULL));
}

/* Prints the variance of each token row, then of each (token, head) vector. */
static int print_variances(const float *hidden)
{
    float mean[TOKENS];
    float variance[TOKENS];
    if (report("row moments", sinkkit_row_moments_f32(hidden, TOKENS, HEADS * HEAD_DIM, HEADS * HEAD_DIM, mean,
                                                      variance, 0)))
        return 1;

    sinkkit_head_layout layout = {TOKENS, HEADS, HEAD_DIM, HEADS * HEAD_DIM, HEAD_DIM};
    float head_variance[TOKENS * HEADS];
    if (report("head moments", sinkkit_head_moments_f32(&layout, hidden, NULL, head_variance, 0)))
        return 1;

    for (int t = 0; t < TOKENS; t++)
        printf("token %d: mean %.4f variance %.4f, head 0 variance %.4f\n", t, mean[t], variance[t],
               head_variance[t * HEADS]);
    return 0;
}

/* Streams two batches into channel statistics and lists the channels far above the median. */
static int find_super_channels(const float *activations)
{
    static float max_abs[CHANNELS];
    static uint64_t argmax_token[CHANNELS];
    static double sum_squares[CHANNELS];
    sinkkit_channel_stats stats = {CHANNELS, 0, max_abs, argmax_token, sum_squares};
    if (report("reset", sinkkit_channel_stats_reset(&stats)))
        return 1;

    const size_t batch_tokens = TOKENS / 2;
    for (size_t b = 0; b < 2; b++) {
        if (report("update", sinkkit_channel_stats_update_f32(&stats, activations + b * batch_tokens * CHANNELS,
                                                              batch_tokens, CHANNELS, b * batch_tokens)))
            return 1;
    }

    static unsigned char scratch[CHANNELS * sizeof(float) + 64];
    if (sizeof scratch < sinkkit_detect_scratch_size(CHANNELS)) {
        fprintf(stderr, "detect: scratch of %zu bytes is too small\n", sizeof scratch);
        return 1;
    }
    sinkkit_super_channel hits[16];
    size_t found = 0;
    sinkkit_detect_params params = sinkkit_detect_default_params();
    if (report("detect", sinkkit_detect_super_channels(&stats, &params, scratch, sizeof scratch, hits, 16, &found)))
        return 1;

    for (size_t i = 0; i < found; i++)
        printf("super channel %zu: max |a| %.1f at token %llu, %.0f x the median\n", hits[i].channel,
               hits[i].max_abs, (unsigned long long)hits[i].token, hits[i].score);
    return found == 1 && hits[0].channel == 17 && hits[0].token == 5 ? 0 : 1;
}

int main(void)
{
    static float q[TOKENS * HEADS * HEAD_DIM];
    static float weight[HEAD_DIM];
    static float activations[TOKENS * CHANNELS];

    /* Deterministic data: small values everywhere, and one channel that spikes at token 5. */
    for (size_t i = 0; i < TOKENS * HEADS * HEAD_DIM; i++)
        q[i] = (float)sin(0.37 * (double)i) + 0.01f * (float)(i % 7);
    for (size_t d = 0; d < HEAD_DIM; d++)
        weight[d] = 1.0f + 0.001f * (float)d;
    for (size_t i = 0; i < TOKENS * CHANNELS; i++)
        activations[i] = 0.5f + (float)cos(0.11 * (double)i);
    activations[5 * CHANNELS + 17] = 3000.0f;

    printf("active ISA: %s\n", sinkkit_isa_name(sinkkit_active_isa()));
    if (print_variances(q) || normalise_heads(q, weight) || find_super_channels(activations))
        return 1;
    return 0;
}
