/* Head-wise RMSNorm for AArch64 SVE at any vector length, following rule 2 of the numeric scheme in kernels.h. */
#include <arm_sve.h>

#include "kernels.h"

/* Vectors per step: four accumulators, so that the FMA latency is hidden. */
#define STEP_VECTORS 4

/* Each step costs a lane one FMA rounding (the first one is the square itself). After this many steps
   the lane's float partial sum has used its budget of roundings and moves to double. */
#define CHUNK_STEPS SINKKIT_FLOAT_PARTIAL_ROUNDINGS

/* Adds every float lane of v to total, a vector of half as many doubles. The conversions are exact.
   svcvt_f64_f32 reads the even 32-bit lanes, and zipping v with itself puts each lane there once. */
static inline svfloat64_t add_widened(svfloat64_t total, svfloat32_t v)
{
    const svbool_t all = svptrue_b64();
    const svfloat64_t low = svcvt_f64_f32_x(all, svzip1_f32(v, v));
    const svfloat64_t high = svcvt_f64_f32_x(all, svzip2_f32(v, v));
    return svadd_f64_x(all, svadd_f64_x(all, total, low), high);
}

/* Returns the sum of squares of x[0..n) in double. Whole steps of four vectors run unpredicated. The
   last partial step uses zeroing predicated loads and merging FMAs, which leave the lanes past n
   untouched. Lanes are assigned by index from the start of the vector, so the result depends on the
   vector length but not on the address of x. */
static double sum_of_squares(const float *x, size_t n)
{
    const uint64_t lanes = svcntw();
    const uint64_t step_elements = STEP_VECTORS * lanes;
    const svbool_t all = svptrue_b32();
    svfloat64_t total = svdup_n_f64(0.0);
    uint64_t i = 0;

    while (i < n) {
        svfloat32_t acc0 = svdup_n_f32(0.0f);
        svfloat32_t acc1 = svdup_n_f32(0.0f);
        svfloat32_t acc2 = svdup_n_f32(0.0f);
        svfloat32_t acc3 = svdup_n_f32(0.0f);
        int steps = 0;

        for (; steps < CHUNK_STEPS && i + step_elements <= n; steps++, i += step_elements) {
            const svfloat32_t v0 = svld1_vnum_f32(all, x + i, 0);
            const svfloat32_t v1 = svld1_vnum_f32(all, x + i, 1);
            const svfloat32_t v2 = svld1_vnum_f32(all, x + i, 2);
            const svfloat32_t v3 = svld1_vnum_f32(all, x + i, 3);
            acc0 = svmla_f32_x(all, acc0, v0, v0);
            acc1 = svmla_f32_x(all, acc1, v1, v1);
            acc2 = svmla_f32_x(all, acc2, v2, v2);
            acc3 = svmla_f32_x(all, acc3, v3, v3);
        }

        if (steps < CHUNK_STEPS && i < n) {
            const svbool_t p0 = svwhilelt_b32_u64(i, n);
            const svbool_t p1 = svwhilelt_b32_u64(i + lanes, n);
            const svbool_t p2 = svwhilelt_b32_u64(i + 2 * lanes, n);
            const svbool_t p3 = svwhilelt_b32_u64(i + 3 * lanes, n);
            const svfloat32_t v0 = svld1_vnum_f32(p0, x + i, 0);
            const svfloat32_t v1 = svld1_vnum_f32(p1, x + i, 1);
            const svfloat32_t v2 = svld1_vnum_f32(p2, x + i, 2);
            const svfloat32_t v3 = svld1_vnum_f32(p3, x + i, 3);
            acc0 = svmla_f32_m(p0, acc0, v0, v0);
            acc1 = svmla_f32_m(p1, acc1, v1, v1);
            acc2 = svmla_f32_m(p2, acc2, v2, v2);
            acc3 = svmla_f32_m(p3, acc3, v3, v3);
            i = n;
        }

        total = add_widened(add_widened(total, acc0), acc1);
        total = add_widened(add_widened(total, acc2), acc3);
    }

    return svaddv_f64(svptrue_b64(), total);
}

/* y = (x * rf) * g, two roundings per element in this order. y may equal x, but never overlaps g (the
   public entry point rejects that), hence restrict. */
static void scale_with_gamma(const float *x, float *y, const float *restrict g, size_t n, float rf)
{
    const uint64_t lanes = svcntw();
    const svbool_t all = svptrue_b32();
    uint64_t i = 0;

    for (; i + STEP_VECTORS * lanes <= n; i += STEP_VECTORS * lanes) {
        const svfloat32_t v0 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 0), rf);
        const svfloat32_t v1 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 1), rf);
        const svfloat32_t v2 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 2), rf);
        const svfloat32_t v3 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 3), rf);
        svst1_vnum_f32(all, y + i, 0, svmul_f32_x(all, v0, svld1_vnum_f32(all, g + i, 0)));
        svst1_vnum_f32(all, y + i, 1, svmul_f32_x(all, v1, svld1_vnum_f32(all, g + i, 1)));
        svst1_vnum_f32(all, y + i, 2, svmul_f32_x(all, v2, svld1_vnum_f32(all, g + i, 2)));
        svst1_vnum_f32(all, y + i, 3, svmul_f32_x(all, v3, svld1_vnum_f32(all, g + i, 3)));
    }
    for (; i < n; i += lanes) {
        const svbool_t p = svwhilelt_b32_u64(i, n);
        const svfloat32_t v = svmul_n_f32_x(p, svld1_f32(p, x + i), rf);
        svst1_f32(p, y + i, svmul_f32_x(p, v, svld1_f32(p, g + i)));
    }
}

/* y = x * rf, one rounding per element. */
static void scale_without_gamma(const float *x, float *y, size_t n, float rf)
{
    const uint64_t lanes = svcntw();
    const svbool_t all = svptrue_b32();
    uint64_t i = 0;

    for (; i + STEP_VECTORS * lanes <= n; i += STEP_VECTORS * lanes) {
        const svfloat32_t v0 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 0), rf);
        const svfloat32_t v1 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 1), rf);
        const svfloat32_t v2 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 2), rf);
        const svfloat32_t v3 = svmul_n_f32_x(all, svld1_vnum_f32(all, x + i, 3), rf);
        svst1_vnum_f32(all, y + i, 0, v0);
        svst1_vnum_f32(all, y + i, 1, v1);
        svst1_vnum_f32(all, y + i, 2, v2);
        svst1_vnum_f32(all, y + i, 3, v3);
    }
    for (; i < n; i += lanes) {
        const svbool_t p = svwhilelt_b32_u64(i, n);
        svst1_f32(p, y + i, svmul_n_f32_x(p, svld1_f32(p, x + i), rf));
    }
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

void sinkkit_headwise_rmsnorm_f32_sve(const sinkkit_head_layout *layout, const float *x, float *y,
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
