/* Stops the build if a dispatch file is compiled with ISA flags: this code must run on any CPU. */
#ifndef SINKKIT_BASELINE_GUARD_H
#define SINKKIT_BASELINE_GUARD_H

#if defined(__AVX__) || defined(__AVX2__) || defined(__AVX512F__) || defined(__ARM_FEATURE_SVE)
#error "dispatch code must be compiled for the baseline ISA; only kernels/<isa>/ files get ISA flags"
#endif

#endif /* SINKKIT_BASELINE_GUARD_H */
