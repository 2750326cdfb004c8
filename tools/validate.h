/* Internal interface of `sinkkit validate`: report rows, comparisons with the reference, and input sets. */
#ifndef SINKKIT_CLI_VALIDATE_H
#define SINKKIT_CLI_VALIDATE_H

#include "cli.h"
#include "error_metrics.h"

/* One output of one kernel family, compared value by value with the reference kernels. */
typedef enum validate_output {
    OUTPUT_RMSNORM_GAMMA_NONE,
    OUTPUT_RMSNORM_GAMMA_SHARED,
    OUTPUT_RMSNORM_GAMMA_PER_HEAD,
    OUTPUT_RMSNORM_INV_RMS,
    OUTPUT_ROW_MEAN,
    OUTPUT_ROW_VARIANCE,
    OUTPUT_HEAD_MEAN,
    OUTPUT_HEAD_VARIANCE,
    OUTPUT_CHANNEL_MAX,
    OUTPUT_CHANNEL_RMS,
    OUTPUT_COUNT
} validate_output;

/* Behaviour that the hard cases must show on top of matching the reference. */
typedef enum validate_behaviour {
    BEHAVIOUR_RMSNORM_NAN,
    BEHAVIOUR_ROW_NAN,
    BEHAVIOUR_HEAD_NAN,
    BEHAVIOUR_CHANNEL_NAN,
    BEHAVIOUR_RMSNORM_FINITE,
    BEHAVIOUR_ROW_CONSTANT,
    BEHAVIOUR_HEAD_CONSTANT,
    BEHAVIOUR_COUNT
} validate_behaviour;

/* One line of the report: the worst error of one output on one ISA over one input set, or the result
   of one behaviour check. */
typedef struct check_row {
    const char *kernel;
    const char *output;
    sinkkit_isa isa;
    const char *inputs;
    const char *bound;
    bool measured;       /* false for behaviour checks, which have no error measure */
    double max_error;    /* relative error; for a mean, the error divided by |mean| + std */
    double max_ulp;
    uint64_t values;     /* values compared, or vectors checked by a behaviour check */
    uint64_t failures;
    char first_failure[320];
} check_row;

/* Adds one compared value to row. error < 0 means the value has no relative measure (an RMSNorm
   output below FLT_MIN, which is held to an absolute bound instead). */
void check_note(check_row *row, double error, double ulp);

/* Counts a failure; the first one is kept as "where: details". */
void check_fail(check_row *row, const char *where, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* Everything one validate run needs and produces. Rows are indexed by position in isas. */
typedef struct validate_run {
    bool quick;
    size_t isa_count;
    sinkkit_isa isas[5];
    const sinkkit_kernel_table *tables[5];
    check_row shape_rows[5][OUTPUT_COUNT];
    check_row hard_rows[5][OUTPUT_COUNT];
    check_row behaviour_rows[5][BEHAVIOUR_COUNT];
} validate_run;

/* ---- comparisons (validate_compare.c) ---- */

/* Compares y over every element of layout, and inv_rms ([tokens][heads]) when got_r is not NULL. */
void compare_rmsnorm(check_row *y_row, check_row *r_row, const char *where, const sinkkit_head_layout *layout,
                     const float *got_y, const float *want_y, const float *got_r, const float *want_r);

/* Compares the means and variances of every vector of layout; per_head names positions as token and
   head, else as rows. The mean bound scales with the vector's standard deviation, computed from x. */
void compare_moments(check_row *mean_row, check_row *variance_row, const char *where,
                     const sinkkit_head_layout *layout, bool per_head, const float *x, const float *got_mean,
                     const float *want_mean, const float *got_variance, const float *want_variance);

/* Compares max_abs and argmax_token exactly and the RMS sqrt(sum_squares / tokens) relatively. */
void compare_channel_stats(check_row *max_row, check_row *rms_row, const char *where, size_t channels,
                           uint64_t tokens, const cli_stats *got, const cli_stats *want);

/* ---- runs of every ISA against the reference (validate_inputs.c) ---- */

/* Input for the head-wise kernels: RMSNorm with each gamma kind, and head moments. */
typedef struct head_input {
    sinkkit_head_layout layout;
    const float *x;
    size_t offset_floats;          /* distance of x from a 64-byte boundary; outputs use the same */
    const float *gamma_shared;     /* [head_dim] */
    const float *gamma_per_head;   /* [heads][head_dim] */
    float eps;
    bool in_place;                 /* RMSNorm writes y over a copy of x */
} head_input;

/* Input for the row kernels: row moments over each token row, and channel statistics. */
typedef struct width_input {
    const float *x;
    size_t tokens;
    size_t width;
    size_t row_stride;
    uint64_t first_token;
    size_t split;                  /* the ISA kernel gets tokens [0, split) and [split, tokens) in two calls */
} width_input;

/* Number of elements from the first element of layout to one past the last. */
size_t layout_span(const sinkkit_head_layout *layout);

/* Head moments through a row-moments kernel, one call per token, as sinkkit_head_moments_f32 does;
   mean and variance are [tokens][heads]. */
void validate_head_moments(sinkkit_row_moments_f32_fn kernel, const sinkkit_head_layout *layout, const float *x,
                           float *mean, float *variance, unsigned flags);

void validate_head_input(validate_run *run, check_row rows[][OUTPUT_COUNT], const char *where,
                         const head_input *input);
void validate_width_input(validate_run *run, check_row rows[][OUTPUT_COUNT], const char *where,
                          const width_input *input);

/* Runs the model shapes and the tail sweep into run->shape_rows. */
void validate_shapes(validate_run *run);

/* ---- hard cases (validate_hard.c) ---- */

/* Runs the hard cases into run->hard_rows and the behaviour checks into run->behaviour_rows. */
void validate_hard_cases(validate_run *run);

#endif /* SINKKIT_CLI_VALIDATE_H */
