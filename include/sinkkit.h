/* sinkkit: SIMD kernels for head-wise RMSNorm, per-token variance and sparse-channel detection. */
#ifndef SINKKIT_H
#define SINKKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SINKKIT_API
#elif defined(__GNUC__)
#define SINKKIT_API __attribute__((visibility("default")))
#else
#define SINKKIT_API
#endif

#define SINKKIT_VERSION_MAJOR 0
#define SINKKIT_VERSION_MINOR 1
#define SINKKIT_VERSION_PATCH 0

/* Returns the library version as "major.minor.patch". */
SINKKIT_API const char *sinkkit_version(void);

/* ---------------------------------------------------------------------------
 * Status codes. Every call that can fail returns one; on any code other than
 * SINKKIT_OK the call has written nothing to its outputs, except that
 * sinkkit_detect_super_channels() reports the hit count in *found when it
 * returns SINKKIT_ERROR_BUFFER_TOO_SMALL.
 * ------------------------------------------------------------------------- */
typedef enum sinkkit_status {
    SINKKIT_OK = 0,
    SINKKIT_ERROR_NULL_POINTER,     /* a required pointer is NULL */
    SINKKIT_ERROR_INVALID_SHAPE,    /* a size is zero where data is required, or a byte span overflows size_t */
    SINKKIT_ERROR_INVALID_STRIDE,   /* a stride is shorter than a row, or two vectors of a layout overlap */
    SINKKIT_ERROR_INVALID_VALUE,    /* a scalar argument is out of range (negative or NaN eps, unknown enum, flags) */
    SINKKIT_ERROR_ALIASING,         /* input and output overlap in a way the call does not allow */
    SINKKIT_ERROR_UNSUPPORTED_ISA,  /* the ISA is not compiled in, or the CPU or OS cannot run it */
    SINKKIT_ERROR_BUFFER_TOO_SMALL  /* scratch or output capacity is smaller than needed */
} sinkkit_status;

/* Returns a static English sentence describing status; never NULL. */
SINKKIT_API const char *sinkkit_status_message(sinkkit_status status);

/* ---------------------------------------------------------------------------
 * Instruction sets and run-time dispatch.
 *
 * On the first call of any kernel the library detects what the CPU and the OS
 * support and picks the best compiled-in ISA. The environment variable
 * SINKKIT_ISA (auto, scalar, avx2, avx512, neon, sve), read once at that
 * moment, caps the choice: the best supported ISA at or below the one named.
 * An unknown value means auto. sinkkit_set_isa() selects exactly one ISA.
 * ------------------------------------------------------------------------- */
typedef enum sinkkit_isa {
    SINKKIT_ISA_AUTO = 0,
    SINKKIT_ISA_SCALAR,
    SINKKIT_ISA_AVX2,    /* AVX2 + FMA + F16C with YMM state enabled by the OS */
    SINKKIT_ISA_AVX512,  /* AVX-512 F, BW, DQ, VL with ZMM state enabled by the OS */
    SINKKIT_ISA_NEON,    /* AArch64 Advanced SIMD */
    SINKKIT_ISA_SVE      /* AArch64 SVE, any vector length */
} sinkkit_isa;

#define SINKKIT_ISA_COUNT 6

/* Returns the ISA that kernel calls use now (never SINKKIT_ISA_AUTO). */
SINKKIT_API sinkkit_isa sinkkit_active_isa(void);

/* Returns true when isa is compiled in and the CPU and OS can run it. AUTO and SCALAR are always true. */
SINKKIT_API bool sinkkit_isa_supported(sinkkit_isa isa);

/* Selects exactly isa for all later calls; AUTO restores the best supported ISA (ignoring SINKKIT_ISA).
   Returns SINKKIT_ERROR_UNSUPPORTED_ISA for an ISA this machine cannot run (or a value outside the
   enum), and then changes nothing.
   Thread-safe, but calls already running keep the ISA they started with. */
SINKKIT_API sinkkit_status sinkkit_set_isa(sinkkit_isa isa);

/* Returns "auto", "scalar", "avx2", "avx512", "neon" or "sve"; "unknown" for other values. */
SINKKIT_API const char *sinkkit_isa_name(sinkkit_isa isa);

/* Parses an ISA name as sinkkit_isa_name() prints it (case-insensitive). Returns false for unknown names. */
SINKKIT_API bool sinkkit_isa_from_name(const char *name, sinkkit_isa *isa);

/* How the current selection came about, for diagnostics (the CLI's `sinkkit info`). */
typedef struct sinkkit_dispatch_info {
    sinkkit_isa best;          /* best ISA the CPU, OS and build support */
    sinkkit_isa active;        /* ISA in use now */
    bool env_present;          /* SINKKIT_ISA was set at the first call */
    bool env_recognised;       /* its value named a known ISA or "auto" */
    sinkkit_isa env_cap;       /* the ISA it named (AUTO when absent or unknown) */
    bool set_by_call;          /* sinkkit_set_isa() chose the active ISA */
    char env_value[32];        /* the value of SINKKIT_ISA, truncated, "" when absent */
} sinkkit_dispatch_info;

/* Fills info with the current dispatch state. Returns SINKKIT_ERROR_NULL_POINTER for a NULL info. */
SINKKIT_API sinkkit_status sinkkit_get_dispatch_info(sinkkit_dispatch_info *info);

/* ---------------------------------------------------------------------------
 * Head layouts. Element (t, h, d) is at x[t * token_stride + h * head_stride + d];
 * strides are in elements. Token-major [T][H][D] uses token_stride = H * D and
 * head_stride = D; head-major [H][T][D] uses token_stride = D and
 * head_stride = T * D. Layouts in which two (token, head) vectors overlap
 * are rejected with SINKKIT_ERROR_INVALID_STRIDE.
 * ------------------------------------------------------------------------- */
typedef struct sinkkit_head_layout {
    size_t tokens;
    size_t heads;
    size_t head_dim;
    size_t token_stride;
    size_t head_stride;
} sinkkit_head_layout;

typedef enum sinkkit_gamma_kind {
    SINKKIT_GAMMA_NONE = 0,   /* no weight: y = x * r */
    SINKKIT_GAMMA_SHARED,     /* gamma[head_dim], the same for every head */
    SINKKIT_GAMMA_PER_HEAD    /* gamma[heads][head_dim], contiguous */
} sinkkit_gamma_kind;

/* ---------------------------------------------------------------------------
 * Head-wise RMSNorm.
 *
 * r[t,h] = 1 / sqrt(mean_d x[t,h,d]^2 + eps); y[t,h,d] = x[t,h,d] * r[t,h] * gamma[.., d].
 * y uses the same layout as x. y may equal x (in place); any other overlap of
 * the spans of x and y is SINKKIT_ERROR_ALIASING, and so is gamma overlapping
 * y, or inv_rms overlapping x, y or gamma. inv_rms, if not NULL, receives r as
 * a contiguous [tokens][heads] array.
 *
 * Accuracy: relative error at most 1e-6 per element against the double-precision
 * formula; subnormal outputs within 2 * 2^-149. An element more than about 1e38
 * times smaller than its vector's RMS (x * r below FLT_MIN) may also be off by
 * |gamma| * 2^-149 (see docs/accuracy.md).
 * With eps > 0, finite input never yields Inf or NaN. With eps = 0 an all-zero
 * vector yields y = NaN (0 * Inf) and r = +Inf on every ISA. A NaN or Inf in
 * a vector affects that vector only.
 * eps must be finite and >= 0. tokens == 0 is a no-op that returns SINKKIT_OK
 * once the other arguments are valid (heads and head_dim still must be > 0).
 * ------------------------------------------------------------------------- */
SINKKIT_API sinkkit_status sinkkit_headwise_rmsnorm_f32(const sinkkit_head_layout *layout, const float *x, float *y,
                                                        const float *gamma, sinkkit_gamma_kind gamma_kind, float eps,
                                                        float *inv_rms);

/* ---------------------------------------------------------------------------
 * Non-temporal (streaming) stores.
 *
 * A sinkkit_headwise_rmsnorm_f32() call whose output span (the bytes from the
 * first to one past the last element of y) exceeds the streaming threshold
 * writes y with non-temporal stores on AVX2 and AVX-512. The output lines go
 * to memory without first being read into the caches and without evicting
 * the data there. For outputs much larger than the cache that saves the read
 * of each output line (a third of the traffic of an out-of-place call), but
 * reading y right after the call is slower. The results are bitwise the same
 * either way. Other ISAs ignore the threshold.
 *
 * The default threshold is 3/4 of one CPU's share of the last-level cache:
 * the level 3 cache size the C library reports (else level 2), divided by
 * the number of online CPUs. When neither is known it is
 * 3 MiB (3/4 of a 4 MiB share). The environment variable
 * SINKKIT_STREAMING_THRESHOLD, read once at first use, replaces it: a
 * decimal number of bytes, 0 meaning the default; other values are ignored.
 * ------------------------------------------------------------------------- */

/* Sets the streaming threshold in bytes for all later calls: 0 restores the default derived from the
   cache sizes (SINKKIT_STREAMING_THRESHOLD is not consulted again), SIZE_MAX disables streaming.
   Thread-safe; calls already running keep the choice they made. Returns SINKKIT_OK. */
SINKKIT_API sinkkit_status sinkkit_set_streaming_threshold(size_t bytes);

/* Returns the streaming threshold in bytes now in effect (never 0; SIZE_MAX when disabled). */
SINKKIT_API size_t sinkkit_streaming_threshold(void);

/* ---------------------------------------------------------------------------
 * Moments (mean and variance).
 *
 * The variance is computed by a two-pass algorithm with a correction term,
 * never as mean(x^2) - mean(x)^2: relative error at most 1e-6 against the
 * exact variance of the given floats, even when |mean| is 1e6 times the
 * standard deviation. A variance of finite values above FLT_MAX is +Inf.
 * NaN in a row makes that row's mean and variance NaN; Inf makes the
 * variance NaN and the mean +-Inf or NaN.
 * ------------------------------------------------------------------------- */
#define SINKKIT_MOMENTS_UNBIASED 1u   /* divide by n - 1 instead of n; needs n >= 2 */

/* Mean and variance of each row of x[rows][cols]; row_stride >= cols, in elements.
   mean or variance may be NULL, not both; outputs that overlap x (its whole span, padding included) or
   each other give SINKKIT_ERROR_ALIASING. SINKKIT_MOMENTS_UNBIASED with cols < 2 gives
   SINKKIT_ERROR_INVALID_SHAPE. rows == 0 is a no-op once the other arguments are valid. */
SINKKIT_API sinkkit_status sinkkit_row_moments_f32(const float *x, size_t rows, size_t cols, size_t row_stride,
                                                   float *mean, float *variance, unsigned flags);

/* The same for every (token, head) vector; mean and variance are contiguous [tokens][heads]. */
SINKKIT_API sinkkit_status sinkkit_head_moments_f32(const sinkkit_head_layout *layout, const float *x, float *mean,
                                                    float *variance, unsigned flags);

/* ---------------------------------------------------------------------------
 * Per-channel statistics of activations a[tokens][channels], streamed over
 * calls and mergeable across chunks and threads. The storage is the caller's.
 *
 * max_abs: the largest |a| seen; NaN once the channel has seen a NaN.
 * argmax_token: global index of the first token that reached max_abs (for a
 *   NaN channel, the first NaN token). Ties go to the lowest token, so both
 *   values are the same however tokens are split across calls or threads.
 *   SINKKIT_NO_TOKEN before any token was seen.
 * sum_squares: sum of a^2 in double; a channel's RMS is sqrt(sum_squares / tokens),
 *   relative error at most 1e-6.
 * ------------------------------------------------------------------------- */
#define SINKKIT_NO_TOKEN UINT64_MAX

typedef struct sinkkit_channel_stats {
    size_t channels;
    uint64_t tokens;          /* tokens accumulated so far */
    float *max_abs;           /* [channels] */
    uint64_t *argmax_token;   /* [channels] */
    double *sum_squares;      /* [channels] */
} sinkkit_channel_stats;

/* Sets tokens to 0, every max_abs and sum_squares to 0 and every argmax_token to SINKKIT_NO_TOKEN. */
SINKKIT_API sinkkit_status sinkkit_channel_stats_reset(sinkkit_channel_stats *stats);

/* Adds tokens rows of a (row_stride >= channels, in elements); row i is global token first_token + i.
   The token indices of one stream must not overlap between calls. tokens == 0 is a no-op.
   A last token index reaching SINKKIT_NO_TOKEN, or a token count that overflows stats->tokens,
   gives SINKKIT_ERROR_INVALID_VALUE; input a overlapping the statistics arrays gives SINKKIT_ERROR_ALIASING. */
SINKKIT_API sinkkit_status sinkkit_channel_stats_update_f32(sinkkit_channel_stats *stats, const float *a,
                                                            size_t tokens, size_t row_stride, uint64_t first_token);

/* Folds from into into (same channel count, else SINKKIT_ERROR_INVALID_SHAPE); from is unchanged.
   Arrays of from overlapping those of into (including merging a stats object with itself) give
   SINKKIT_ERROR_ALIASING; a token count that overflows gives SINKKIT_ERROR_INVALID_VALUE. */
SINKKIT_API sinkkit_status sinkkit_channel_stats_merge(sinkkit_channel_stats *into, const sinkkit_channel_stats *from);

/* ---------------------------------------------------------------------------
 * Super-channel detection.
 *
 * A channel is a hit when max_abs >= min_ratio * median and max_abs >= min_abs,
 * where median is the median of max_abs over the channels that have not seen
 * NaN (the mean of the two middle values for an even count).
 * score = max_abs / median; when the median is 0, every channel with
 * max_abs > 0 and max_abs >= min_abs is a hit with score +Inf.
 * Hits come in score descending order, then channel ascending; channels that
 * saw NaN always come after the finite hits, with has_nan set, score NaN,
 * max_abs NaN and token the first NaN token, in channel order.
 * ------------------------------------------------------------------------- */
#define SINKKIT_DETECT_DEFAULT_MIN_RATIO 100.0f
#define SINKKIT_DETECT_DEFAULT_MIN_ABS 0.0f

typedef struct sinkkit_detect_params {
    float min_ratio;   /* finite and >= 0; default SINKKIT_DETECT_DEFAULT_MIN_RATIO */
    float min_abs;     /* finite and >= 0; default SINKKIT_DETECT_DEFAULT_MIN_ABS */
} sinkkit_detect_params;

typedef struct sinkkit_super_channel {
    size_t channel;
    uint64_t token;    /* argmax_token of the channel */
    float max_abs;
    float score;       /* max_abs / median */
    bool has_nan;
} sinkkit_super_channel;

/* Returns the default parameters. */
SINKKIT_API sinkkit_detect_params sinkkit_detect_default_params(void);

/* Returns the bytes of scratch that detection needs for channels channels (0 if that overflows). */
SINKKIT_API size_t sinkkit_detect_scratch_size(size_t channels);

/* Finds the hits; params NULL means the defaults. out may be NULL when capacity is 0.
   found receives the total number of hits even when it exceeds capacity; then nothing is
   written to out and the call returns SINKKIT_ERROR_BUFFER_TOO_SMALL (query with capacity 0).
   scratch must be at least sinkkit_detect_scratch_size(stats->channels) bytes, any alignment.
   Returns SINKKIT_ERROR_ALIASING when scratch, out or found overlap the statistics arrays or each
   other. An infinite max_abs over an infinite median scores 1. */
SINKKIT_API sinkkit_status sinkkit_detect_super_channels(const sinkkit_channel_stats *stats,
                                                         const sinkkit_detect_params *params, void *scratch,
                                                         size_t scratch_size, sinkkit_super_channel *out,
                                                         size_t capacity, size_t *found);

#ifdef __cplusplus
}
#endif

#endif /* SINKKIT_H */
