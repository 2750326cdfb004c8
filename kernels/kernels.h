/* Internal kernel interface: the per-ISA function table and the numeric scheme every ISA follows. */
#ifndef SINKKIT_KERNELS_H
#define SINKKIT_KERNELS_H

#include <float.h>

#include "sinkkit.h"

/*
 * Kernels receive arguments that the public entry points have already
 * validated: non-NULL data, non-zero sizes, strides that do not make two
 * vectors overlap, byte spans that fit in size_t, eps finite and >= 0,
 * x == y or no overlap at all. Kernels never allocate, print, or touch
 * MXCSR/FPCR, and their results never depend on pointer alignment: every
 * loop walks elements by index from the start of the vector, with
 * unaligned loads and masked or scalar tails.
 *
 * Numeric scheme shared by every ISA (docs/accuracy.md has the proofs):
 *
 * 1. A float partial sum is formed with at most SINKKIT_FLOAT_PARTIAL_ROUNDINGS
 *    roundings (the square, each add or FMA in a lane's chain, and any float
 *    tree reduction across lanes all count) before it is added to a double
 *    accumulator. For non-negative terms that bounds the relative error of the
 *    whole sum by about 8 * 2^-24 = 4.8e-7.
 *
 * 2. RMSNorm: sum_squares is accumulated per rule 1 as a double S. Then
 *    sinkkit_rms_inverse() gives r (a kernel may evaluate the same correctly
 *    rounded double operations in vector lanes, which gives the same bits), and
 *    if sinkkit_rms_needs_rescue() returns true
 *    the vector is handed to sinkkit_rmsnorm_vector_rescue(), which recomputes
 *    it in double and is shared by every ISA (so overflow, underflow, zero,
 *    Inf and NaN vectors give bitwise the same result on every ISA).
 *    Otherwise y = (x * rf) * g in float, rf = (float)r, in exactly that order
 *    (no FMA contraction), g = 1 when there is no gamma (then y = x * rf).
 *
 * 3. Moments: a row is summed around a float shift c: d = x - c in float, and
 *    the sums of d and d*d are formed per rule 1 into doubles sum_d, sum_d2.
 *    c is either the row's mean summed in double and rounded to float, or a
 *    float mean of some of the row's elements (any order of float additions);
 *    such an estimate must pass sinkkit_moments_shift_close(), which holds when
 *    |mean - c| <= std / 8, or the sums are formed once more around
 *    c = (float)(c + sum_d / n), which is then used without a further check.
 *    sinkkit_moments_trusted() chooses between the correction formula of
 *    sinkkit_moments_finish_trusted() and sinkkit_moments_row_rescue(), which
 *    is shared by every ISA; sinkkit_moments_finish() applies that choice.
 *
 * 4. Channel statistics: max_abs and argmax_token come from comparisons only.
 *    For sum_squares, a call's tokens form groups of 8 from its first token
 *    (the last group may be shorter). Each channel's squares over a group are
 *    summed in float per rule 1, and that float sum is added to sum_squares in
 *    double, unless it is +Inf while the group's largest |a| is finite, or
 *    below count * SINKKIT_RESCUE_FLOOR while that |a| is not 0: then the
 *    group's squares of that channel are summed in double instead (a float
 *    squared is exact in double). A NaN sum is added as it is. A kernel may
 *    also square and sum in double throughout. Either way the relative error
 *    of sum_squares is at most about 4.8e-7, and results depend on the call
 *    split, never on alignment.
 */
#define SINKKIT_FLOAT_PARTIAL_ROUNDINGS 8

/* ---- kernel signatures ---- */

/* Head-wise RMSNorm over a validated layout; gamma is NULL when gamma_kind is NONE; inv_rms may be NULL. */
typedef void (*sinkkit_rmsnorm_f32_fn)(const sinkkit_head_layout *layout, const float *x, float *y,
                                       const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms);

/* Moments of rows rows of cols elements at x + i * row_stride; mean or variance may be NULL (not both).
   flags is 0 or SINKKIT_MOMENTS_UNBIASED (then cols >= 2). */
typedef void (*sinkkit_row_moments_f32_fn)(const float *x, size_t rows, size_t cols, size_t row_stride,
                                           float *mean, float *variance, unsigned flags);

/* Folds tokens rows of a (row i is global token first_token + i) into the per-channel arrays.
   Updates max_abs, argmax_token and sum_squares by the rules in sinkkit.h; ties of max_abs keep the
   lower token, and the first NaN token wins once a channel has seen NaN. */
typedef void (*sinkkit_channel_stats_f32_fn)(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                             size_t channels, const float *a, size_t tokens, size_t row_stride,
                                             uint64_t first_token);

typedef struct sinkkit_kernel_table {
    sinkkit_isa isa;
    sinkkit_rmsnorm_f32_fn headwise_rmsnorm_f32;
    sinkkit_row_moments_f32_fn row_moments_f32;
    sinkkit_channel_stats_f32_fn channel_stats_update_f32;
    /* The same results as headwise_rmsnorm_f32, bit for bit, but y is written with non-temporal stores
       where it is aligned, then fenced. NULL when the ISA has no such variant. */
    sinkkit_rmsnorm_f32_fn headwise_rmsnorm_f32_streaming;
} sinkkit_kernel_table;

/* Returns the table compiled for isa, or NULL when it is not compiled in. It does not check the CPU:
   call sinkkit_isa_supported() first. */
const sinkkit_kernel_table *sinkkit_kernel_table_for(sinkkit_isa isa);

/* ---- per-ISA kernels: the same names with an ISA suffix ---- */

void sinkkit_headwise_rmsnorm_f32_reference(const sinkkit_head_layout *layout, const float *x, float *y,
                                            const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                            float *inv_rms);
void sinkkit_row_moments_f32_reference(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                       float *variance, unsigned flags);
void sinkkit_channel_stats_update_f32_reference(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                                size_t channels, const float *a, size_t tokens, size_t row_stride,
                                                uint64_t first_token);

void sinkkit_headwise_rmsnorm_f32_scalar(const sinkkit_head_layout *layout, const float *x, float *y,
                                         const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                         float *inv_rms);
void sinkkit_row_moments_f32_scalar(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                    float *variance, unsigned flags);
void sinkkit_channel_stats_update_f32_scalar(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                             size_t channels, const float *a, size_t tokens, size_t row_stride,
                                             uint64_t first_token);

#if defined(SINKKIT_HAVE_AVX2)
void sinkkit_headwise_rmsnorm_f32_avx2(const sinkkit_head_layout *layout, const float *x, float *y,
                                       const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms);
void sinkkit_headwise_rmsnorm_f32_streaming_avx2(const sinkkit_head_layout *layout, const float *x, float *y,
                                                 const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                                 float *inv_rms);
void sinkkit_row_moments_f32_avx2(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                  float *variance, unsigned flags);
void sinkkit_channel_stats_update_f32_avx2(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                           size_t channels, const float *a, size_t tokens, size_t row_stride,
                                           uint64_t first_token);
#endif

#if defined(SINKKIT_HAVE_AVX512)
void sinkkit_headwise_rmsnorm_f32_avx512(const sinkkit_head_layout *layout, const float *x, float *y,
                                         const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                         float *inv_rms);
void sinkkit_headwise_rmsnorm_f32_streaming_avx512(const sinkkit_head_layout *layout, const float *x, float *y,
                                                   const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                                   float *inv_rms);
void sinkkit_row_moments_f32_avx512(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                    float *variance, unsigned flags);
void sinkkit_channel_stats_update_f32_avx512(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                             size_t channels, const float *a, size_t tokens, size_t row_stride,
                                             uint64_t first_token);
#endif

#if defined(SINKKIT_HAVE_NEON)
void sinkkit_headwise_rmsnorm_f32_neon(const sinkkit_head_layout *layout, const float *x, float *y,
                                       const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms);
void sinkkit_row_moments_f32_neon(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                  float *variance, unsigned flags);
void sinkkit_channel_stats_update_f32_neon(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                           size_t channels, const float *a, size_t tokens, size_t row_stride,
                                           uint64_t first_token);
#endif

#if defined(SINKKIT_HAVE_SVE)
void sinkkit_headwise_rmsnorm_f32_sve(const sinkkit_head_layout *layout, const float *x, float *y,
                                      const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms);
void sinkkit_row_moments_f32_sve(const float *x, size_t rows, size_t cols, size_t row_stride, float *mean,
                                 float *variance, unsigned flags);
void sinkkit_channel_stats_update_f32_sve(float *max_abs, uint64_t *argmax_token, double *sum_squares,
                                          size_t channels, const float *a, size_t tokens, size_t row_stride,
                                          uint64_t first_token);
#endif

/* ---- shared numeric helpers (kernels/common/numerics.c, baseline code) ---- */

/* Smallest sum of squares (or of squared deviations) per element that the float fast paths trust: a
   float square loses at most 2^-150 to underflow, so above n * 2^-100 the relative error of the sum
   stays under 2^-50. The rescue decisions of RMSNorm, moments and channel statistics use it. */
#define SINKKIT_RESCUE_FLOOR 0x1p-100

/* Returns 1 / sqrt(sum_squares / head_dim + eps), computed in double. */
double sinkkit_rms_inverse(double sum_squares, size_t head_dim, float eps);

/* True when the float fast path cannot be trusted for this vector: S is not finite (a square overflowed
   float, or Inf/NaN input), S is below head_dim * 2^-100 (squares may have lost bits to underflow, or
   the vector is all zero), or r is not a normal finite float. The comparisons are written so that NaN
   takes the rescue path too. Inline, because the scalar kernel calls it once per vector. */
static inline bool sinkkit_rms_needs_rescue(double sum_squares, size_t head_dim, double inv_rms)
{
    if (!(sum_squares >= (double)head_dim * SINKKIT_RESCUE_FLOOR && sum_squares <= DBL_MAX))
        return true;

    return !(inv_rms >= FLT_MIN && inv_rms <= FLT_MAX);
}

/* Normalises one vector entirely in double: y[d] = (float)(x[d] * r * g[d]). gamma_row is NULL for no
   gamma. Writes the float r to *inv_rms when inv_rms is not NULL. y may equal x. */
void sinkkit_rmsnorm_vector_rescue(const float *x, float *y, const float *gamma_row, size_t head_dim, float eps,
                                   float *inv_rms);

/* Returns the gamma row for head h: NULL for NONE, gamma for SHARED, gamma + h * head_dim for PER_HEAD. */
static inline const float *sinkkit_gamma_row(const float *gamma, sinkkit_gamma_kind kind, size_t h,
                                             size_t head_dim)
{
    if (kind == SINKKIT_GAMMA_NONE)
        return NULL;
    if (kind == SINKKIT_GAMMA_SHARED)
        return gamma;
    return gamma + h * head_dim;
}

/* True when sums around the shift c (sum_d of d = x - c, sum_d2 of d*d, over n elements) have
   |mean - c| <= std / 8, up to their own rounding errors: 65 sum_d^2 <= n sum_d2. False for NaN. */
static inline bool sinkkit_moments_shift_close(size_t n, double sum_d, double sum_d2)
{
    return 65.0 * (sum_d * sum_d) <= (double)n * sum_d2;
}

/* True when the sums can be finished by the correction formula: both finite, and sum_d2 at least
   n * SINKKIT_RESCUE_FLOOR (below it deviations may have underflowed, or the row is constant).
   Vectorised kernels make the same comparisons in their lanes. */
static inline bool sinkkit_moments_trusted(size_t n, double sum_d, double sum_d2)
{
    return sum_d2 >= (double)n * SINKKIT_RESCUE_FLOOR && sum_d2 <= DBL_MAX && sum_d >= -DBL_MAX &&
           sum_d <= DBL_MAX;
}

/* Writes mean = c + sum_d / n and variance = max(0, sum_d2 - sum_d * sum_d / n) / (n or n - 1), each
   evaluated in double in that order and rounded once to float (mean or variance may be NULL).
   Vectorised kernels may evaluate the same operations in lanes, which gives the same bits. */
static inline void sinkkit_moments_finish_trusted(size_t n, float c, double sum_d, double sum_d2, unsigned flags,
                                                  float *mean, float *variance)
{
    if (mean != NULL)
        *mean = (float)((double)c + sum_d / (double)n);
    if (variance != NULL) {
        double centred = sum_d2 - sum_d * sum_d / (double)n;
        if (centred < 0.0)
            centred = 0.0;
        *variance = (float)(centred / ((flags & SINKKIT_MOMENTS_UNBIASED) ? (double)n - 1.0 : (double)n));
    }
}

/* Finishes one row from its sums around c: sinkkit_moments_finish_trusted() when
   sinkkit_moments_trusted() holds, sinkkit_moments_row_rescue() otherwise. */
void sinkkit_moments_finish(const float *row, size_t n, float c, double sum_d, double sum_d2, unsigned flags,
                            float *mean, float *variance);

/* Computes one row's moments entirely in double, identically on every ISA. */
void sinkkit_moments_row_rescue(const float *row, size_t n, unsigned flags, float *mean, float *variance);

/* Folds one channel's partial result into the running statistics: a chunk whose largest |a| is
   chunk_max at token chunk_token, and whose first NaN (if any) is at nan_token (SINKKIT_NO_TOKEN when
   none). Applies the NaN and tie rules of sinkkit.h. */
void sinkkit_channel_fold(float *max_abs, uint64_t *argmax_token, float chunk_max, uint64_t chunk_token,
                          uint64_t nan_token);

#endif /* SINKKIT_KERNELS_H */
