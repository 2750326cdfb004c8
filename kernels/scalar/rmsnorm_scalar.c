/* PLACEHOLDER until the real kernel lands: forwards to the reference. */
#include "kernels.h"

void sinkkit_headwise_rmsnorm_f32_scalar(const sinkkit_head_layout *layout, const float *x, float *y, const float *gamma, sinkkit_gamma_kind gamma_kind, float eps, float *inv_rms)
{
    sinkkit_headwise_rmsnorm_f32_reference(layout, x, y, gamma, gamma_kind, eps, inv_rms);
}
