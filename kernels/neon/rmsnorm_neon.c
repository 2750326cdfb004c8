/* Head-wise RMSNorm for AArch64 Advanced SIMD (NEON), following rule 2 of the numeric scheme in kernels.h. */
#include <arm_neon.h>
#include <string.h>

#include "kernels.h"

/* Elements per block: four 4-lane accumulators, so each lane takes one square per block. */
#define BLOCK_ELEMENTS 16

/* Each block costs a lane one FMA rounding (the first one is the square itself). After this many
   blocks the lane's float partial sum has used its budget of roundings and moves to double. */
#define CHUNK_BLOCKS SINKKIT_FLOAT_PARTIAL_ROUNDINGS

/* Adds the four float lanes of v to the two double lanes of sum. The conversions are exact. */
static inline float64x2_t add_widened(float64x2_t sum, float32x4_t v)
{
    sum = vaddq_f64(sum, vcvt_f64_f32(vget_low_f32(v)));
    return vaddq_f64(sum, vcvt_high_f64_f32(v));
}

/* Returns the sum of squares of x[0..n) in double. Lane j of accumulator k contains the squares of the
   elements whose index is 4k + j modulo 16, counted from the start of the vector, so the result does
   not depend on the address of x. */
static double sum_of_squares(const float *x, size_t n)
{
    float64x2_t total0 = vdupq_n_f64(0.0);
    float64x2_t total1 = vdupq_n_f64(0.0);
    size_t i = 0;

    while (i < n) {
        float32x4_t acc0 = vdupq_n_f32(0.0f);
        float32x4_t acc1 = vdupq_n_f32(0.0f);
        float32x4_t acc2 = vdupq_n_f32(0.0f);
        float32x4_t acc3 = vdupq_n_f32(0.0f);
        size_t blocks = 0;

        for (; blocks < CHUNK_BLOCKS && i + BLOCK_ELEMENTS <= n; blocks++, i += BLOCK_ELEMENTS) {
            float32x4_t v0 = vld1q_f32(x + i);
            float32x4_t v1 = vld1q_f32(x + i + 4);
            float32x4_t v2 = vld1q_f32(x + i + 8);
            float32x4_t v3 = vld1q_f32(x + i + 12);
            acc0 = vfmaq_f32(acc0, v0, v0);
            acc1 = vfmaq_f32(acc1, v1, v1);
            acc2 = vfmaq_f32(acc2, v2, v2);
            acc3 = vfmaq_f32(acc3, v3, v3);
        }

        /* The last partial block is padded with zeros, whose squares add nothing and round nothing. */
        if (blocks < CHUNK_BLOCKS && i < n) {
            float pad[BLOCK_ELEMENTS] = {0.0f};
            memcpy(pad, x + i, (n - i) * sizeof(float));
            float32x4_t v0 = vld1q_f32(pad);
            float32x4_t v1 = vld1q_f32(pad + 4);
            float32x4_t v2 = vld1q_f32(pad + 8);
            float32x4_t v3 = vld1q_f32(pad + 12);
            acc0 = vfmaq_f32(acc0, v0, v0);
            acc1 = vfmaq_f32(acc1, v1, v1);
            acc2 = vfmaq_f32(acc2, v2, v2);
            acc3 = vfmaq_f32(acc3, v3, v3);
            i = n;
        }

        total0 = add_widened(total0, acc0);
        total1 = add_widened(total1, acc1);
        total0 = add_widened(total0, acc2);
        total1 = add_widened(total1, acc3);
    }

    return vaddvq_f64(vaddq_f64(total0, total1));
}

/* y = (x * rf) * g, two roundings per element in this order, and the scalar tail rounds identically.
   y may equal x, but never overlaps g (the public entry point rejects that), hence restrict. */
static void scale_with_gamma(const float *x, float *y, const float *restrict g, size_t n, float rf)
{
    const float32x4_t r = vdupq_n_f32(rf);
    size_t i = 0;

    for (; i + 16 <= n; i += 16) {
        const float *xi = x + i;
        const float *gi = g + i;
        float *yi = y + i;
        const float32x4_t v0 = vmulq_f32(vld1q_f32(xi), r);
        const float32x4_t v1 = vmulq_f32(vld1q_f32(xi + 4), r);
        const float32x4_t v2 = vmulq_f32(vld1q_f32(xi + 8), r);
        const float32x4_t v3 = vmulq_f32(vld1q_f32(xi + 12), r);
        vst1q_f32(yi, vmulq_f32(v0, vld1q_f32(gi)));
        vst1q_f32(yi + 4, vmulq_f32(v1, vld1q_f32(gi + 4)));
        vst1q_f32(yi + 8, vmulq_f32(v2, vld1q_f32(gi + 8)));
        vst1q_f32(yi + 12, vmulq_f32(v3, vld1q_f32(gi + 12)));
    }
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vmulq_f32(vmulq_f32(vld1q_f32(x + i), r), vld1q_f32(g + i)));
    for (; i < n; i++)
        y[i] = (x[i] * rf) * g[i];
}

/* y = x * rf, one rounding per element. */
static void scale_without_gamma(const float *x, float *y, size_t n, float rf)
{
    const float32x4_t r = vdupq_n_f32(rf);
    size_t i = 0;

    for (; i + 16 <= n; i += 16) {
        const float *xi = x + i;
        float *yi = y + i;
        const float32x4_t v0 = vmulq_f32(vld1q_f32(xi), r);
        const float32x4_t v1 = vmulq_f32(vld1q_f32(xi + 4), r);
        const float32x4_t v2 = vmulq_f32(vld1q_f32(xi + 8), r);
        const float32x4_t v3 = vmulq_f32(vld1q_f32(xi + 12), r);
        vst1q_f32(yi, v0);
        vst1q_f32(yi + 4, v1);
        vst1q_f32(yi + 8, v2);
        vst1q_f32(yi + 12, v3);
    }
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vmulq_f32(vld1q_f32(x + i), r));
    for (; i < n; i++)
        y[i] = x[i] * rf;
}

/* Normalises one vector. Every read of x happens before the first write of y, so y may equal x. */
static void normalise_vector(const float *x, float *y, const float *g, size_t n, float eps, float *inv_rms)
{
    const double sum_squares = sum_of_squares(x, n);
    const double r = sinkkit_rms_inverse(sum_squares, n, eps);

    /* Zero, subnormal, overflowing, Inf and NaN vectors get the shared double path, so they come out
       bitwise the same on every ISA. */
    if (sinkkit_rms_needs_rescue(sum_squares, n, r)) {
        sinkkit_rmsnorm_vector_rescue(x, y, g, n, eps, inv_rms);
        return;
    }

    const float rf = (float)r;
    if (g != NULL)
        scale_with_gamma(x, y, g, n, rf);
    else
        scale_without_gamma(x, y, n, rf);

    if (inv_rms != NULL)
        *inv_rms = rf;
}

void sinkkit_headwise_rmsnorm_f32_neon(const sinkkit_head_layout *layout, const float *x, float *y,
                                       const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms)
{
    const size_t dim = layout->head_dim;

    for (size_t t = 0; t < layout->tokens; t++) {
        for (size_t h = 0; h < layout->heads; h++) {
            const size_t offset = t * layout->token_stride + h * layout->head_stride;
            const float *g = sinkkit_gamma_row(gamma, gamma_kind, h, dim);
            float *r_out = inv_rms != NULL ? inv_rms + t * layout->heads + h : NULL;

            normalise_vector(x + offset, y + offset, g, dim, eps, r_out);
        }
    }
}
