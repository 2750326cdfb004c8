/* Internal interface of `sinkkit bench`: benchmark cases, timed operations and their measurement. */
#ifndef SINKKIT_CLI_BENCH_H
#define SINKKIT_CLI_BENCH_H

#include "cli.h"
#include "roofline.h"

typedef enum bench_family {
    FAMILY_RMSNORM,
    FAMILY_ROW_MOMENTS,
    FAMILY_HEAD_MOMENTS,
    FAMILY_CHANNEL_STATS
} bench_family;

/* One kernel family on one model shape and token count. Head families use heads x head_dim. For the
   row families, heads is 1 and head_dim is the row width. */
typedef struct bench_case {
    bench_family family;
    const char *shape;
    const char *models;
    size_t tokens;
    size_t heads;
    size_t head_dim;
} bench_case;

/* Buffers of one case, 64-byte aligned. y and gamma exist only for RMSNorm. */
typedef struct bench_buffers {
    size_t count;          /* floats in x (and y) */
    float *x;
    float *y;
    float *gamma;
    float *mean;           /* [tokens][heads] */
    float *variance;
    cli_stats stats;
} bench_buffers;

/* What one timed call does: a kernel of one ISA, or one of the roofline operations on the same bytes. */
typedef enum bench_op_kind {
    OP_KERNEL,
    OP_MEMCPY,     /* memcpy(y, x) */
    OP_LOOP_COPY,  /* the same copy as a loop of the widest vector ISA (bench_widest_roofline) */
    OP_READ,       /* sum of x with several accumulators, at the widest vector ISA */
    OP_READ_STATS  /* the read of x, then a read and write of the channel-statistics arrays */
} bench_op_kind;

typedef struct bench_op {
    bench_op_kind kind;
    const sinkkit_kernel_table *kernels;
    const bench_case *bench;
    bench_buffers *buffers;
} bench_op;

/* True when the family writes an output as large as its input (RMSNorm), so that a copy is its roofline. */
bool bench_family_writes(bench_family family);

/* True for channel statistics of one token, whose roofline also reads and writes the statistics
   arrays: at one token they are several times the size of the input. */
bool bench_case_touches_stats(const bench_case *bench);

/* Bytes one call of the kernel reads and writes: x, plus y for RMSNorm, plus the statistics arrays
   read and written for one-token channel statistics. Other per-token and per-channel outputs are small
   and not counted. */
size_t bench_kernel_bytes(const bench_case *bench);

bench_buffers bench_buffers_new(const bench_case *bench);
void bench_buffers_free(bench_buffers *buffers);

/* Returns the roofline loops of the widest vector ISA that this CPU runs: the same loops that the
   Google Benchmark programs in bench/ use. */
const bench_roofline *bench_widest_roofline(void);

/* Returns the number of calls that makes one repetition last at least min_time seconds. */
uint64_t bench_calibrate(const bench_op *op, double min_time);

/* Returns the seconds that iterations calls of op take together. */
double bench_time(const bench_op *op, uint64_t iterations);

#endif /* SINKKIT_CLI_BENCH_H */
