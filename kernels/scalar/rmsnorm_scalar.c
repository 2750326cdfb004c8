/* Portable head-wise RMSNorm: 8 float lanes of sums of squares flushed into double, then (x * r) * gamma. */
#include <math.h>

#include "kernels.h"

enum {
    LANES = 8,
    /* A block is 8 steps of 8 lanes. Each lane adds its 8 squares as a tree of depth 3 and the 8 lanes
       are added as a tree of depth 3, so a float partial has 1 + 3 + 3 = 7 roundings, within
       SINKKIT_FLOAT_PARTIAL_ROUNDINGS. The lanes are independent, so the compiler can keep them in
       SIMD registers at baseline flags. */
    BLOCK = 8 * LANES
};

/* Returns the float partial of one whole block of BLOCK elements. */
static inline float block_partial(const float *x)
{
    float lane[LANES];
    for (int k = 0; k < LANES; k++) {
        float sq[8];
        for (int j = 0; j < 8; j++)
            sq[j] = x[k + j * LANES] * x[k + j * LANES];
        lane[k] = ((sq[0] + sq[1]) + (sq[2] + sq[3])) + ((sq[4] + sq[5]) + (sq[6] + sq[7]));
    }

    /* Lane k meets lane k + 4 first, as one 4-wide SIMD add would pair them. */
    float quad[4];
    for (int k = 0; k < 4; k++)
        quad[k] = lane[k] + lane[k + 4];
    return (quad[0] + quad[2]) + (quad[1] + quad[3]);
}

static inline double sum_squares(const float *x, size_t n)
{
    double total = 0.0;
    size_t i = 0;

    for (; i + BLOCK <= n; i += BLOCK)
        total += (double)block_partial(x + i);

    /* Zero padding adds exact zeros, so the last block follows the same rounding order. */
    if (i < n) {
        float padded[BLOCK] = {0};
        for (size_t k = 0; i + k < n; k++)
            padded[k] = x[i + k];
        total += (double)block_partial(padded);
    }
    return total;
}

/* y = (x * r) * g with two roundings in that order, as on every ISA, or y = x * r when g is NULL. */
static inline void scale(const float *x, float *y, const float *g, size_t n, float r)
{
    if (g == NULL) {
        for (size_t d = 0; d < n; d++)
            y[d] = x[d] * r;
        return;
    }

    for (size_t d = 0; d < n; d++)
        y[d] = (x[d] * r) * g[d];
}

/* Normalises one (token, head) vector. r_out may be NULL. Inlined into each caller below, so that a
   constant n unrolls the loops. */
static inline __attribute__((always_inline)) void normalise_vector(const float *x, float *y, const float *g,
                                                                   size_t n, float eps, float *r_out)
{
    double s = sum_squares(x, n);
    /* The operations of sinkkit_rms_inverse(), in the same order, so the same bits without a call. */
    double r = 1.0 / sqrt(s / (double)n + (double)eps);

    if (sinkkit_rms_needs_rescue(s, n, r)) {
        sinkkit_rmsnorm_vector_rescue(x, y, g, n, eps, r_out);
        return;
    }

    float rf = (float)r;
    scale(x, y, g, n, rf);

    if (r_out != NULL)
        *r_out = rf;
}

/* Normalises every vector of the layout, with head_dim n, in memory order. The result of each vector
   does not depend on the order. */
static inline __attribute__((always_inline)) void normalise_layout(const sinkkit_head_layout *layout, const float *x,
                                                                   float *y, const float *gamma,
                                                                   sinkkit_gamma_kind gamma_kind, float eps,
                                                                   float *inv_rms, size_t n)
{
    const bool heads_outer = layout->head_stride > layout->token_stride;
    const size_t outer_count = heads_outer ? layout->heads : layout->tokens;
    const size_t inner_count = heads_outer ? layout->tokens : layout->heads;

    for (size_t o = 0; o < outer_count; o++) {
        for (size_t i = 0; i < inner_count; i++) {
            const size_t t = heads_outer ? i : o;
            const size_t h = heads_outer ? o : i;
            const size_t offset = t * layout->token_stride + h * layout->head_stride;
            float *r_out = inv_rms != NULL ? inv_rms + t * layout->heads + h : NULL;

            normalise_vector(x + offset, y + offset, sinkkit_gamma_row(gamma, gamma_kind, h, n), n, eps, r_out);
        }
    }
}

void sinkkit_headwise_rmsnorm_f32_scalar(const sinkkit_head_layout *layout, const float *x, float *y,
                                         const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                         float *inv_rms)
{
    /* The common head sizes as constants, so that the loops unroll. */
    switch (layout->head_dim) {
    case 64:
        normalise_layout(layout, x, y, gamma, gamma_kind, eps, inv_rms, 64);
        break;
    case 80:
        normalise_layout(layout, x, y, gamma, gamma_kind, eps, inv_rms, 80);
        break;
    case 96:
        normalise_layout(layout, x, y, gamma, gamma_kind, eps, inv_rms, 96);
        break;
    case 128:
        normalise_layout(layout, x, y, gamma, gamma_kind, eps, inv_rms, 128);
        break;
    default:
        normalise_layout(layout, x, y, gamma, gamma_kind, eps, inv_rms, layout->head_dim);
        break;
    }
}
