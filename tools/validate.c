/* `sinkkit validate`: every kernel on every ISA this CPU runs, against the reference kernels. */
#include <math.h>
#include <string.h>

#include "validate.h"

static void print_help(void)
{
    printf("Usage: sinkkit validate [--quick] [--isa NAME] [--json]\n"
           "\n"
           "Runs every kernel (head-wise RMSNorm with gamma none, shared and per head; row moments; head\n"
           "moments; channel statistics) on every ISA that this build contains and this CPU and OS can run,\n"
           "and compares each output value with the double-precision reference kernels.\n"
           "\n"
           "Input sets:\n"
           "  shapes      Llama-3-8B (32 heads of 128, hidden 4096, FFN 14336), Qwen3-8B q_norm and k_norm\n"
           "              (32 and 8 heads of 128), GPT-2 small (12 heads of 64, hidden 768, FFN 3072) at\n"
           "              1, 7, 33 and 512 tokens. Odd token counts run 4 bytes past a 64-byte boundary,\n"
           "              with RMSNorm in place. Also every vector length from 1 to 49 and longer tails\n"
           "              (up to 257 per head, 4099 per row), in token-major, head-major and padded\n"
           "              layouts at varying offsets from a 64-byte boundary.\n"
           "  hard cases  rows with |mean| = 1e6 x std, constant rows, subnormal values, values of 1e20\n"
           "              and 3e38, one NaN, and zeros with eps 1e-6 and eps 0.\n"
           "\n"
           "Bounds:\n"
           "  RMSNorm y and inv_rms   relative error 1e-6; reference values below FLT_MIN within 2^-148\n"
           "  mean                    |error| <= 1e-6 x (|mean| + std), and the error column shows\n"
           "                          |error| / (|mean| + std)\n"
           "  variance, channel RMS   relative error 1e-6\n"
           "  max_abs and argmax      exact\n"
           "The reference rounds its double result to float, so the measured error includes up to 2^-24\n"
           "from that rounding. Behaviour checks on the hard cases: NaN appears only where the NaN is,\n"
           "eps > 0 gives finite RMSNorm output, and constant rows have variance exactly 0.\n"
           "\n"
           "Options:\n"
           "  --quick      run the model shapes at 1 and 7 tokens only (for emulated runs)\n"
           "  --isa NAME   run only this ISA: scalar, avx2, avx512, neon or sve\n"
           "  --json       print the results as one JSON object\n"
           "  -h, --help   print this help\n"
           "\n"
           "Exit status: 0 when every check passes, 1 when a check fails or the requested ISA cannot run\n"
           "here, 2 for invalid options.\n");
}

/* ---- report rows ---- */

static const struct {
    const char *kernel;
    const char *output;
    const char *bound;
} output_names[OUTPUT_COUNT] = {
    [OUTPUT_RMSNORM_GAMMA_NONE] = {"headwise_rmsnorm", "y, gamma none", "1e-6 rel; 2^-148 abs below FLT_MIN"},
    [OUTPUT_RMSNORM_GAMMA_SHARED] = {"headwise_rmsnorm", "y, gamma shared", "1e-6 rel; 2^-148 abs below FLT_MIN"},
    [OUTPUT_RMSNORM_GAMMA_PER_HEAD] = {"headwise_rmsnorm", "y, gamma per head", "1e-6 rel; 2^-148 abs below FLT_MIN"},
    [OUTPUT_RMSNORM_INV_RMS] = {"headwise_rmsnorm", "inv_rms", "1e-6 rel; 2^-148 abs below FLT_MIN"},
    [OUTPUT_ROW_MEAN] = {"row_moments", "mean", "1e-6 x (|mean| + std)"},
    [OUTPUT_ROW_VARIANCE] = {"row_moments", "variance", "1e-6 rel"},
    [OUTPUT_HEAD_MEAN] = {"head_moments", "mean", "1e-6 x (|mean| + std)"},
    [OUTPUT_HEAD_VARIANCE] = {"head_moments", "variance", "1e-6 rel"},
    [OUTPUT_CHANNEL_MAX] = {"channel_stats", "max_abs, argmax", "exact"},
    [OUTPUT_CHANNEL_RMS] = {"channel_stats", "rms", "1e-6 rel"},
};

static const struct {
    const char *kernel;
    const char *output;
    const char *bound;
} behaviour_names[BEHAVIOUR_COUNT] = {
    [BEHAVIOUR_RMSNORM_NAN] = {"headwise_rmsnorm", "NaN confined", "NaN only in the NaN's vector"},
    [BEHAVIOUR_ROW_NAN] = {"row_moments", "NaN confined", "NaN only in the NaN's row"},
    [BEHAVIOUR_HEAD_NAN] = {"head_moments", "NaN confined", "NaN only in the NaN's vector"},
    [BEHAVIOUR_CHANNEL_NAN] = {"channel_stats", "NaN confined", "NaN only in its channel, at its token"},
    [BEHAVIOUR_RMSNORM_FINITE] = {"headwise_rmsnorm", "finite output", "finite y and inv_rms for eps > 0"},
    [BEHAVIOUR_ROW_CONSTANT] = {"row_moments", "constant rows", "variance 0, mean exact"},
    [BEHAVIOUR_HEAD_CONSTANT] = {"head_moments", "constant vectors", "variance 0, mean exact"},
};

static void init_row(check_row *row, const char *kernel, const char *output, sinkkit_isa isa, const char *inputs,
                     const char *bound, bool measured)
{
    memset(row, 0, sizeof *row);
    row->kernel = kernel;
    row->output = output;
    row->isa = isa;
    row->inputs = inputs;
    row->bound = bound;
    row->measured = measured;
}

static void init_rows(validate_run *run)
{
    for (size_t i = 0; i < run->isa_count; i++) {
        for (size_t o = 0; o < OUTPUT_COUNT; o++) {
            init_row(&run->shape_rows[i][o], output_names[o].kernel, output_names[o].output, run->isas[i], "shapes",
                     output_names[o].bound, true);
            init_row(&run->hard_rows[i][o], output_names[o].kernel, output_names[o].output, run->isas[i],
                     "hard cases", output_names[o].bound, true);
        }
        for (size_t b = 0; b < BEHAVIOUR_COUNT; b++)
            init_row(&run->behaviour_rows[i][b], behaviour_names[b].kernel, behaviour_names[b].output, run->isas[i],
                     "hard cases", behaviour_names[b].bound, false);
    }
}

/* Calls visit on every row in report order: per ISA, the shape rows, the hard-case rows, then the
   behaviour checks. */
static void for_each_row(const validate_run *run, void (*visit)(const check_row *row, void *context), void *context)
{
    for (size_t i = 0; i < run->isa_count; i++) {
        for (size_t o = 0; o < OUTPUT_COUNT; o++)
            visit(&run->shape_rows[i][o], context);
        for (size_t o = 0; o < OUTPUT_COUNT; o++)
            visit(&run->hard_rows[i][o], context);
        for (size_t b = 0; b < BEHAVIOUR_COUNT; b++)
            visit(&run->behaviour_rows[i][b], context);
    }
}

/* A row with no values compared would pass without testing anything, so it fails. */
static bool row_passed(const check_row *row)
{
    return row->failures == 0 && row->values > 0;
}

typedef struct summary {
    size_t checks;
    size_t passed;
} summary;

static void count_row(const check_row *row, void *context)
{
    summary *totals = context;
    totals->checks++;
    if (row_passed(row))
        totals->passed++;
}

/* ---- text output ---- */

static void format_measure(char *out, size_t size, const check_row *row, double value, const char *format)
{
    if (!row->measured)
        snprintf(out, size, "-");
    else if (isinf(value))
        snprintf(out, size, "inf");
    else
        snprintf(out, size, format, value);
}

static void print_text_row(const check_row *row, void *context)
{
    (void)context;
    char error[16];
    char ulp[16];
    format_measure(error, sizeof error, row, row->max_error, "%.2e");
    format_measure(ulp, sizeof ulp, row, row->max_ulp, "%.0f");

    printf("%-17s %-18s %-7s %-11s %10llu  %-11s %8s  %-38s %s\n", row->kernel, row->output,
           sinkkit_isa_name(row->isa), row->inputs, (unsigned long long)row->values, error, ulp, row->bound,
           row_passed(row) ? "PASS" : "FAIL");
    if (row->failures > 0)
        printf("    %llu failures; first: %s\n", (unsigned long long)row->failures, row->first_failure);
    else if (row->values == 0)
        printf("    no values were checked\n");
}

static void print_isa_line(const validate_run *run, sinkkit_isa only)
{
    printf("ISAs run:");
    for (size_t i = 0; i < run->isa_count; i++)
        printf(" %s", sinkkit_isa_name(run->isas[i]));
    printf("\n");

    for (size_t i = 0; i < 5; i++) {
        const char *reason = cli_isa_unavailable_reason(cli_all_isas[i]);
        if (reason != NULL && (only == SINKKIT_ISA_AUTO || only == cli_all_isas[i]))
            printf("Not run: %s (%s)\n", sinkkit_isa_name(cli_all_isas[i]), reason);
    }
}

static void print_text(const validate_run *run, sinkkit_isa only, const summary *totals)
{
    printf("sinkkit %s validate%s: each ISA's kernels against the double-precision reference\n", sinkkit_version(),
           run->quick ? " --quick" : "");
    print_isa_line(run, only);
    cli_print_env_note(stdout);
    printf("\n%-17s %-18s %-7s %-11s %10s  %-11s %8s  %-38s %s\n", "kernel", "output", "isa", "inputs", "values",
           "max rel err", "max ulp", "bound", "result");
    for_each_row(run, print_text_row, NULL);
    printf("\n%zu checks: %zu passed, %zu failed\n", totals->checks, totals->passed, totals->checks - totals->passed);
}

/* ---- JSON output ---- */

static void print_json_row(const check_row *row, void *context)
{
    cli_json *json = context;
    cli_json_object(json, NULL);
    cli_json_string(json, "kernel", row->kernel);
    cli_json_string(json, "output", row->output);
    cli_json_string(json, "isa", sinkkit_isa_name(row->isa));
    cli_json_string(json, "inputs", row->inputs);
    cli_json_uint(json, "values", row->values);
    if (row->measured) {
        cli_json_number(json, "max_relative_error", row->max_error);
        cli_json_number(json, "max_ulp", row->max_ulp);
    } else {
        cli_json_string(json, "max_relative_error", NULL);
        cli_json_string(json, "max_ulp", NULL);
    }
    cli_json_string(json, "bound", row->bound);
    cli_json_bool(json, "passed", row_passed(row));
    cli_json_uint(json, "failures", row->failures);
    cli_json_string(json, "first_failure", row->failures > 0 ? row->first_failure : NULL);
    cli_json_object_end(json);
}

static void print_json(const validate_run *run, sinkkit_isa only, const summary *totals)
{
    cli_json json;
    cli_json_begin(&json, stdout);
    cli_json_string(&json, "version", sinkkit_version());
    cli_json_bool(&json, "quick", run->quick);

    cli_json_array(&json, "isas_run");
    for (size_t i = 0; i < run->isa_count; i++)
        cli_json_string(&json, NULL, sinkkit_isa_name(run->isas[i]));
    cli_json_array_end(&json);

    cli_json_array(&json, "isas_not_run");
    for (size_t i = 0; i < 5; i++) {
        const char *reason = cli_isa_unavailable_reason(cli_all_isas[i]);
        if (reason == NULL || (only != SINKKIT_ISA_AUTO && only != cli_all_isas[i]))
            continue;
        cli_json_object(&json, NULL);
        cli_json_string(&json, "isa", sinkkit_isa_name(cli_all_isas[i]));
        cli_json_string(&json, "reason", reason);
        cli_json_object_end(&json);
    }
    cli_json_array_end(&json);

    cli_json_array(&json, "checks");
    for_each_row(run, print_json_row, &json);
    cli_json_array_end(&json);

    cli_json_object(&json, "summary");
    cli_json_uint(&json, "checks", totals->checks);
    cli_json_uint(&json, "passed", totals->passed);
    cli_json_uint(&json, "failed", totals->checks - totals->passed);
    cli_json_object_end(&json);
    cli_json_end(&json);
}

/* ---- the command ---- */

/* Returns an exit status when the command must stop now (after --help or a usage error), or -1 to run. */
static int parse_options(int argc, char **argv, validate_run *run, sinkkit_isa *only, bool *json)
{
    cli_parser parser;
    cli_parser_init(&parser, argc, argv);
    while (cli_parser_next(&parser)) {
        const char *value = NULL;
        int matched;
        if (cli_option_flag(&parser, "-h") || cli_option_flag(&parser, "--help")) {
            print_help();
            return CLI_EXIT_OK;
        } else if (cli_option_flag(&parser, "--json")) {
            *json = true;
        } else if (cli_option_flag(&parser, "--quick")) {
            run->quick = true;
        } else if ((matched = cli_option_value(&parser, "--isa", &value)) != 0) {
            if (matched < 0 || !cli_parse_isa(parser.command, value, only))
                return CLI_EXIT_USAGE;
        } else {
            return cli_unknown_argument(&parser);
        }
    }
    return -1;
}

int cli_validate(int argc, char **argv)
{
    static validate_run run;
    sinkkit_isa only = SINKKIT_ISA_AUTO;
    bool json = false;
    int status = parse_options(argc, argv, &run, &only, &json);
    if (status >= 0)
        return status;

    run.isa_count = cli_runnable_isas(only, run.isas);
    if (run.isa_count == 0) {
        fprintf(stderr, "sinkkit validate: cannot run %s: %s. Run without --isa to validate every ISA that can run.\n",
                sinkkit_isa_name(only), cli_isa_unavailable_reason(only));
        return CLI_EXIT_FAILURE;
    }
    for (size_t i = 0; i < run.isa_count; i++)
        run.tables[i] = sinkkit_kernel_table_for(run.isas[i]);

    init_rows(&run);
    validate_shapes(&run);
    validate_hard_cases(&run);

    summary totals = {0, 0};
    for_each_row(&run, count_row, &totals);
    if (json)
        print_json(&run, only, &totals);
    else
        print_text(&run, only, &totals);
    return totals.passed == totals.checks ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}
