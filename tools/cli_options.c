/* Option parsing, usage errors and the list of ISAs the tool can run. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cpu_features.h"

const sinkkit_isa cli_all_isas[5] = {SINKKIT_ISA_SCALAR, SINKKIT_ISA_AVX2, SINKKIT_ISA_AVX512, SINKKIT_ISA_NEON,
                                     SINKKIT_ISA_SVE};

void cli_parser_init(cli_parser *parser, int argc, char **argv)
{
    parser->command = argv[0];
    parser->argc = argc;
    parser->argv = argv;
    parser->next = 1;
    parser->arg = NULL;
}

bool cli_parser_next(cli_parser *parser)
{
    if (parser->next >= parser->argc)
        return false;
    parser->arg = parser->argv[parser->next++];
    return true;
}

bool cli_option_flag(const cli_parser *parser, const char *name)
{
    return strcmp(parser->arg, name) == 0;
}

int cli_option_value(cli_parser *parser, const char *name, const char **value)
{
    size_t length = strlen(name);
    if (strncmp(parser->arg, name, length) != 0)
        return 0;

    if (parser->arg[length] == '=') {
        *value = parser->arg + length + 1;
        return 1;
    }
    if (parser->arg[length] != '\0')
        return 0;

    if (parser->next >= parser->argc) {
        cli_usage_error(parser->command, "missing value for option %s", name);
        return -1;
    }
    *value = parser->argv[parser->next++];
    return 1;
}

int cli_usage_error(const char *command, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "sinkkit %s: ", command);
    vfprintf(stderr, format, args);
    fprintf(stderr, "\nRun 'sinkkit %s --help' for usage.\n", command);
    va_end(args);
    return CLI_EXIT_USAGE;
}

int cli_unknown_argument(const cli_parser *parser)
{
    if (parser->arg[0] == '-')
        return cli_usage_error(parser->command, "unknown option '%s'", parser->arg);
    return cli_usage_error(parser->command, "unexpected argument '%s'", parser->arg);
}

bool cli_parse_isa(const char *command, const char *value, sinkkit_isa *isa)
{
    if (!sinkkit_isa_from_name(value, isa) || *isa == SINKKIT_ISA_AUTO) {
        cli_usage_error(command, "invalid ISA '%s' for --isa: expected scalar, avx2, avx512, neon or sve", value);
        return false;
    }
    return true;
}

bool cli_parse_double(const char *command, const char *name, const char *value, double min, double max,
                      double *out)
{
    char *end = NULL;
    double parsed = strtod(value, &end);
    if (end == value || *end != '\0' || !isfinite(parsed) || parsed < min || parsed > max) {
        cli_usage_error(command, "invalid value '%s' for %s: expected a number from %g to %g", value, name, min,
                        max);
        return false;
    }
    *out = parsed;
    return true;
}

const char *cli_isa_unavailable_reason(sinkkit_isa isa)
{
    if (sinkkit_kernel_table_for(isa) == NULL)
        return "not compiled into this build";
    if (!sinkkit_isa_supported(isa))
        return "not supported by this CPU or OS";
    return NULL;
}

size_t cli_runnable_isas(sinkkit_isa only, sinkkit_isa isas[5])
{
    size_t count = 0;
    for (size_t i = 0; i < 5; i++) {
        sinkkit_isa isa = cli_all_isas[i];
        if (only != SINKKIT_ISA_AUTO && isa != only)
            continue;
        if (cli_isa_unavailable_reason(isa) == NULL)
            isas[count++] = isa;
    }
    return count;
}

void cli_print_env_note(FILE *out)
{
    sinkkit_dispatch_info info;
    if (sinkkit_get_dispatch_info(&info) != SINKKIT_OK || !info.env_present)
        return;

    fprintf(out,
            "Note: SINKKIT_ISA=%s changes only the library's automatic choice (active ISA: %s).\n"
            "This command calls each ISA's kernels directly; use --isa to restrict it to one ISA.\n",
            info.env_value, sinkkit_isa_name(info.active));
}
