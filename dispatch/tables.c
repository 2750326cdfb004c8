/* One kernel table per compiled-in ISA. */
#include "baseline_guard.h"
#include "kernels.h"

static const sinkkit_kernel_table scalar_table = {
    SINKKIT_ISA_SCALAR,
    sinkkit_headwise_rmsnorm_f32_scalar,
    sinkkit_row_moments_f32_scalar,
    sinkkit_channel_stats_update_f32_scalar,
    NULL,
};

#if defined(SINKKIT_HAVE_AVX2)
static const sinkkit_kernel_table avx2_table = {
    SINKKIT_ISA_AVX2,
    sinkkit_headwise_rmsnorm_f32_avx2,
    sinkkit_row_moments_f32_avx2,
    sinkkit_channel_stats_update_f32_avx2,
    sinkkit_headwise_rmsnorm_f32_streaming_avx2,
};
#endif

#if defined(SINKKIT_HAVE_AVX512)
static const sinkkit_kernel_table avx512_table = {
    SINKKIT_ISA_AVX512,
    sinkkit_headwise_rmsnorm_f32_avx512,
    sinkkit_row_moments_f32_avx512,
    sinkkit_channel_stats_update_f32_avx512,
    sinkkit_headwise_rmsnorm_f32_streaming_avx512,
};
#endif

#if defined(SINKKIT_HAVE_NEON)
static const sinkkit_kernel_table neon_table = {
    SINKKIT_ISA_NEON,
    sinkkit_headwise_rmsnorm_f32_neon,
    sinkkit_row_moments_f32_neon,
    sinkkit_channel_stats_update_f32_neon,
    NULL,
};
#endif

#if defined(SINKKIT_HAVE_SVE)
static const sinkkit_kernel_table sve_table = {
    SINKKIT_ISA_SVE,
    sinkkit_headwise_rmsnorm_f32_sve,
    sinkkit_row_moments_f32_sve,
    sinkkit_channel_stats_update_f32_sve,
    NULL,
};
#endif

const sinkkit_kernel_table *sinkkit_kernel_table_for(sinkkit_isa isa)
{
    switch (isa) {
    case SINKKIT_ISA_SCALAR:
        return &scalar_table;
#if defined(SINKKIT_HAVE_AVX2)
    case SINKKIT_ISA_AVX2:
        return &avx2_table;
#endif
#if defined(SINKKIT_HAVE_AVX512)
    case SINKKIT_ISA_AVX512:
        return &avx512_table;
#endif
#if defined(SINKKIT_HAVE_NEON)
    case SINKKIT_ISA_NEON:
        return &neon_table;
#endif
#if defined(SINKKIT_HAVE_SVE)
    case SINKKIT_ISA_SVE:
        return &sve_table;
#endif
    default:
        return NULL;
    }
}
