/* `sinkkit bench`: times every kernel family on every ISA this CPU runs, next to a memory roofline. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#define BENCH_MAX_REPETITIONS 100
#define BENCH_MAX_OPS 8

typedef struct bench_options {
    bool quick;
    bool json;
    sinkkit_isa only;
    double min_time;
    unsigned repetitions;
} bench_options;

/* Median seconds per call of each ISA's kernel and of the rooflines (NAN when not measured). */
typedef struct case_result {
    double kernel[5];
    double memcpy_copy;
    double loop_copy;
    double read;
    double read_stats;
} case_result;

static void print_help(void)
{
    printf("Usage: sinkkit bench [--quick] [--isa NAME] [--min-time SECONDS] [--repetitions N] [--json]\n"
           "\n"
           "Times every kernel family (head-wise RMSNorm with a shared gamma, row moments, head moments,\n"
           "channel statistics) on every ISA this CPU runs, on the shapes of Llama-3-8B, Qwen3-8B and\n"
           "GPT-2 small at 1, 512 and 4096 tokens. Each repetition times enough calls to last at least\n"
           "--min-time; the report gives the median time per call of the repetitions.\n"
           "\n"
           "In every repetition the same bytes also go through a roofline operation, alternating with the\n"
           "kernels. The rooflines are the loops of the benchmark programs in bench/, at the widest vector\n"
           "ISA this CPU runs: for RMSNorm, which reads x and writes y, a copy of x to y (and memcpy, of\n"
           "which the faster counts); for every family, a read of x that sums it with several accumulators;\n"
           "for channel statistics of one token, that read plus a read and write of the statistics arrays,\n"
           "which are then several times larger than x. The ratio column is the kernel's time divided by\n"
           "the roofline's. GB/s counts the bytes of x read plus, for RMSNorm, the bytes of y written and,\n"
           "for one-token channel statistics, the statistics arrays read and written, in 1e9 bytes per\n"
           "second. Calls repeat on the same buffers, so small cases run from cache.\n"
           "\n"
           "Options:\n"
           "  --quick              use 1 and 64 tokens, 3 repetitions and a --min-time of 0.005\n"
           "  --isa NAME           time only this ISA: scalar, avx2, avx512, neon or sve\n"
           "  --min-time SECONDS   minimum duration of one repetition (default 0.01)\n"
           "  --repetitions N      repetitions per measurement, 1 to %d (default 5)\n"
           "  --json               print the results as one JSON object\n"
           "  -h, --help           print this help\n",
           BENCH_MAX_REPETITIONS);
}

/* ---- cases ---- */

static const char *family_name(bench_family family)
{
    switch (family) {
    case FAMILY_RMSNORM:
        return "headwise_rmsnorm";
    case FAMILY_ROW_MOMENTS:
        return "row_moments";
    case FAMILY_HEAD_MOMENTS:
        return "head_moments";
    case FAMILY_CHANNEL_STATS:
        return "channel_stats";
    }
    return "unknown";
}

/* Lists the cases of one family: head shapes for RMSNorm and head moments, widths for the others. */
static size_t family_cases(bench_family family, const size_t *tokens, size_t token_count, bench_case *cases)
{
    size_t count = 0;
    const bool heads = family == FAMILY_RMSNORM || family == FAMILY_HEAD_MOMENTS;
    const size_t shapes = heads ? sizeof cli_head_shapes / sizeof cli_head_shapes[0]
                                : sizeof cli_width_shapes / sizeof cli_width_shapes[0];

    for (size_t s = 0; s < shapes; s++) {
        for (size_t k = 0; k < token_count; k++) {
            bench_case *c = &cases[count++];
            c->family = family;
            c->tokens = tokens[k];
            if (heads) {
                c->shape = cli_head_shapes[s].label;
                c->models = cli_head_shapes[s].models;
                c->heads = cli_head_shapes[s].heads;
                c->head_dim = cli_head_shapes[s].head_dim;
            } else {
                c->shape = cli_width_shapes[s].label;
                c->models = cli_width_shapes[s].models;
                c->heads = 1;
                c->head_dim = cli_width_shapes[s].width;
            }
        }
    }
    return count;
}

/* ---- measurement ---- */

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, size_t count)
{
    qsort(values, count, sizeof values[0], compare_doubles);
    if (count % 2 == 1)
        return values[count / 2];
    return (values[count / 2 - 1] + values[count / 2]) / 2.0;
}

static void measure_case(const bench_case *bench, const sinkkit_isa *isas, size_t isa_count,
                         const bench_options *options, case_result *result)
{
    static double samples[BENCH_MAX_OPS][BENCH_MAX_REPETITIONS];
    bench_buffers buffers = bench_buffers_new(bench);

    bench_op ops[BENCH_MAX_OPS];
    size_t op_count = 0;
    for (size_t i = 0; i < isa_count; i++)
        ops[op_count++] = (bench_op){OP_KERNEL, sinkkit_kernel_table_for(isas[i]), bench, &buffers};
    const size_t first_roofline = op_count;
    if (bench_family_writes(bench->family)) {
        ops[op_count++] = (bench_op){OP_MEMCPY, NULL, bench, &buffers};
        ops[op_count++] = (bench_op){OP_LOOP_COPY, NULL, bench, &buffers};
    }
    ops[op_count++] = (bench_op){OP_READ, NULL, bench, &buffers};
    if (bench_case_touches_stats(bench))
        ops[op_count++] = (bench_op){OP_READ_STATS, NULL, bench, &buffers};

    uint64_t iterations[BENCH_MAX_OPS];
    for (size_t o = 0; o < op_count; o++)
        iterations[o] = bench_calibrate(&ops[o], options->min_time);

    /* Each repetition runs every operation once, so that drifts in clock speed or memory traffic
       affect the kernels and the rooflines alike. */
    for (unsigned r = 0; r < options->repetitions; r++) {
        for (size_t o = 0; o < op_count; o++)
            samples[o][r] = bench_time(&ops[o], iterations[o]) / (double)iterations[o];
    }

    for (size_t i = 0; i < isa_count; i++)
        result->kernel[i] = median(samples[i], options->repetitions);
    result->memcpy_copy = NAN;
    result->loop_copy = NAN;
    result->read = NAN;
    result->read_stats = NAN;
    for (size_t o = first_roofline; o < op_count; o++) {
        double seconds = median(samples[o], options->repetitions);
        if (ops[o].kind == OP_MEMCPY)
            result->memcpy_copy = seconds;
        else if (ops[o].kind == OP_LOOP_COPY)
            result->loop_copy = seconds;
        else if (ops[o].kind == OP_READ_STATS)
            result->read_stats = seconds;
        else
            result->read = seconds;
    }
    bench_buffers_free(&buffers);
}

/* Returns the roofline time of the case and its name. */
static double roofline(const bench_case *bench, const case_result *result, const char **name)
{
    if (bench_case_touches_stats(bench)) {
        *name = "read+stats";
        return result->read_stats;
    }
    if (!bench_family_writes(bench->family)) {
        *name = "read";
        return result->read;
    }
    if (result->memcpy_copy <= result->loop_copy) {
        *name = "memcpy";
        return result->memcpy_copy;
    }
    *name = "copy";
    return result->loop_copy;
}

/* ---- output ---- */

static void format_seconds(char *out, size_t size, double seconds)
{
    if (seconds < 1e-6)
        snprintf(out, size, "%.1f ns", seconds * 1e9);
    else if (seconds < 1e-3)
        snprintf(out, size, "%.2f us", seconds * 1e6);
    else if (seconds < 1.0)
        snprintf(out, size, "%.2f ms", seconds * 1e3);
    else
        snprintf(out, size, "%.3f s", seconds);
}

static void print_text_header(const sinkkit_isa *isas, size_t isa_count, const bench_options *options)
{
    printf("sinkkit %s bench%s: median of %u repetitions, each at least %g s\n", sinkkit_version(),
           options->quick ? " --quick" : "", options->repetitions, options->min_time);
    printf("ISAs:");
    for (size_t i = 0; i < isa_count; i++)
        printf(" %s", sinkkit_isa_name(isas[i]));
    printf("\n");
    cli_print_env_note(stdout);
    cli_print_shape_legend(stdout);
    printf("Roofline (%s loops, as in bench/): the faster copy of x to y (the loop or memcpy) for RMSNorm,\n"
           "a summing read of x for the others, plus a read and write of the statistics arrays for\n"
           "one-token channel statistics; ratio = kernel time / roofline time.\n\n",
           bench_widest_roofline()->name);
    printf("%-17s %-7s %6s  %-7s %10s %8s  %-9s %10s %8s %7s\n", "kernel", "shape", "tokens", "isa", "time/call",
           "GB/s", "roofline", "time/call", "GB/s", "ratio");
    fflush(stdout);
}

static void print_text_case(const bench_case *bench, const sinkkit_isa *isas, size_t isa_count,
                            const case_result *result)
{
    const char *roof_name;
    const double roof_seconds = roofline(bench, result, &roof_name);
    const double kernel_bytes = (double)bench_kernel_bytes(bench);

    for (size_t i = 0; i < isa_count; i++) {
        char kernel_time[16];
        char roof_time[16];
        format_seconds(kernel_time, sizeof kernel_time, result->kernel[i]);
        format_seconds(roof_time, sizeof roof_time, roof_seconds);
        printf("%-17s %-7s %6zu  %-7s %10s %8.1f  %-9s %10s %8.1f %7.2f\n", family_name(bench->family), bench->shape,
               bench->tokens, sinkkit_isa_name(isas[i]), kernel_time, kernel_bytes / result->kernel[i] / 1e9,
               roof_name, roof_time, kernel_bytes / roof_seconds / 1e9, result->kernel[i] / roof_seconds);
    }
    fflush(stdout);
}

static void print_json_case(cli_json *json, const bench_case *bench, const sinkkit_isa *isas, size_t isa_count,
                            const case_result *result)
{
    const char *roof_name;
    const double roof_seconds = roofline(bench, result, &roof_name);
    const size_t kernel_bytes = bench_kernel_bytes(bench);
    const size_t x_bytes = bench->tokens * bench->heads * bench->head_dim * sizeof(float);

    for (size_t i = 0; i < isa_count; i++) {
        cli_json_object(json, NULL);
        cli_json_string(json, "kernel", family_name(bench->family));
        cli_json_string(json, "shape", bench->shape);
        cli_json_string(json, "models", bench->models);
        cli_json_uint(json, "tokens", bench->tokens);
        cli_json_string(json, "isa", sinkkit_isa_name(isas[i]));
        cli_json_uint(json, "bytes", kernel_bytes);
        cli_json_number(json, "seconds_per_call", result->kernel[i]);
        cli_json_number(json, "gb_per_second", (double)kernel_bytes / result->kernel[i] / 1e9);
        cli_json_string(json, "roofline", roof_name);
        cli_json_number(json, "roofline_seconds", roof_seconds);
        cli_json_number(json, "ratio", result->kernel[i] / roof_seconds);
        cli_json_number(json, "memcpy_seconds", result->memcpy_copy);
        cli_json_number(json, "loop_copy_seconds", result->loop_copy);
        cli_json_number(json, "read_seconds", result->read);
        cli_json_uint(json, "read_bytes", x_bytes);
        cli_json_number(json, "read_stats_seconds", result->read_stats);
        cli_json_string(json, "roofline_isa", bench_widest_roofline()->name);
        cli_json_object_end(json);
    }
    fflush(json->out);
}

/* ---- the command ---- */

/* Returns an exit status when the command must stop now (after --help or a usage error), or -1 to run. */
static int parse_options(int argc, char **argv, bench_options *options)
{
    bool min_time_set = false;
    bool repetitions_set = false;
    cli_parser parser;
    cli_parser_init(&parser, argc, argv);
    while (cli_parser_next(&parser)) {
        const char *value = NULL;
        int matched;
        double number;
        if (cli_option_flag(&parser, "-h") || cli_option_flag(&parser, "--help")) {
            print_help();
            return CLI_EXIT_OK;
        } else if (cli_option_flag(&parser, "--json")) {
            options->json = true;
        } else if (cli_option_flag(&parser, "--quick")) {
            options->quick = true;
        } else if ((matched = cli_option_value(&parser, "--isa", &value)) != 0) {
            if (matched < 0 || !cli_parse_isa(parser.command, value, &options->only))
                return CLI_EXIT_USAGE;
        } else if ((matched = cli_option_value(&parser, "--min-time", &value)) != 0) {
            if (matched < 0 || !cli_parse_double(parser.command, "--min-time", value, 1e-4, 10.0, &options->min_time))
                return CLI_EXIT_USAGE;
            min_time_set = true;
        } else if ((matched = cli_option_value(&parser, "--repetitions", &value)) != 0) {
            if (matched < 0 ||
                !cli_parse_double(parser.command, "--repetitions", value, 1, BENCH_MAX_REPETITIONS, &number))
                return CLI_EXIT_USAGE;
            if (number != floor(number))
                return cli_usage_error(parser.command, "invalid value '%s' for --repetitions: expected a whole number",
                                       value);
            options->repetitions = (unsigned)number;
            repetitions_set = true;
        } else {
            return cli_unknown_argument(&parser);
        }
    }

    if (!min_time_set)
        options->min_time = options->quick ? 0.005 : 0.01;
    if (!repetitions_set)
        options->repetitions = options->quick ? 3 : 5;
    return -1;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cli_bench(int argc, char **argv)
{
    bench_options options = {false, false, SINKKIT_ISA_AUTO, 0.0, 0};
    int status = parse_options(argc, argv, &options);
    if (status >= 0)
        return status;

    sinkkit_isa isas[5];
    const size_t isa_count = cli_runnable_isas(options.only, isas);
    if (isa_count == 0) {
        fprintf(stderr, "sinkkit bench: cannot run %s: %s. Run without --isa to time every ISA that can run.\n",
                sinkkit_isa_name(options.only), cli_isa_unavailable_reason(options.only));
        return CLI_EXIT_FAILURE;
    }

    static const size_t full_tokens[3] = {1, 512, 4096};
    static const size_t quick_tokens[2] = {1, 64};
    const size_t *tokens = options.quick ? quick_tokens : full_tokens;
    const size_t token_count = options.quick ? 2 : 3;

    cli_json json;
    if (options.json) {
        cli_json_begin(&json, stdout);
        cli_json_string(&json, "version", sinkkit_version());
        cli_json_bool(&json, "quick", options.quick);
        cli_json_uint(&json, "repetitions", options.repetitions);
        cli_json_number(&json, "min_time_seconds", options.min_time);
        cli_json_array(&json, "results");
    } else {
        print_text_header(isas, isa_count, &options);
    }

    const double start = wall_seconds();
    const bench_family families[4] = {FAMILY_RMSNORM, FAMILY_ROW_MOMENTS, FAMILY_HEAD_MOMENTS, FAMILY_CHANNEL_STATS};
    for (size_t f = 0; f < 4; f++) {
        bench_case cases[16];
        const size_t case_count = family_cases(families[f], tokens, token_count, cases);
        for (size_t c = 0; c < case_count; c++) {
            case_result result;
            measure_case(&cases[c], isas, isa_count, &options, &result);
            if (options.json)
                print_json_case(&json, &cases[c], isas, isa_count, &result);
            else
                print_text_case(&cases[c], isas, isa_count, &result);
        }
    }

    if (options.json) {
        cli_json_array_end(&json);
        cli_json_number(&json, "total_seconds", wall_seconds() - start);
        cli_json_end(&json);
    } else {
        printf("\nTotal time: %.1f s\n", wall_seconds() - start);
    }
    return CLI_EXIT_OK;
}
