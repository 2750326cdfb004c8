/* sinkkit: command-line front end that reports the CPU and ISA selection, validates and benchmarks the kernels. */
#include <string.h>

#include "cli.h"

static void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: sinkkit COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n"
            "  info       print the library version, the CPU features and the ISA each kernel family uses\n"
            "  validate   compare every kernel on every ISA this CPU runs with the double-precision reference\n"
            "  bench      time every kernel on every ISA this CPU runs against a memory copy and read\n"
            "\n"
            "Options:\n"
            "  -h, --help     print this help\n"
            "  --version      print the library version\n"
            "\n"
            "Run 'sinkkit COMMAND --help' for the options of a command.\n"
            "The environment variable SINKKIT_ISA (auto, scalar, avx2, avx512, neon, sve) caps the ISA that\n"
            "the library picks on its own.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return CLI_EXIT_USAGE;
    }

    const char *command = argv[1];
    if (strcmp(command, "-h") == 0 || strcmp(command, "--help") == 0 || strcmp(command, "help") == 0) {
        print_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(command, "--version") == 0) {
        printf("sinkkit %s\n", sinkkit_version());
        return CLI_EXIT_OK;
    }

    if (strcmp(command, "info") == 0)
        return cli_info(argc - 1, argv + 1);
    if (strcmp(command, "validate") == 0)
        return cli_validate(argc - 1, argv + 1);
    if (strcmp(command, "bench") == 0)
        return cli_bench(argc - 1, argv + 1);

    if (command[0] == '-')
        fprintf(stderr, "sinkkit: unknown option '%s'\n", command);
    else
        fprintf(stderr, "sinkkit: unknown command '%s'\n", command);
    fprintf(stderr, "Run 'sinkkit --help' for the list of commands.\n");
    return CLI_EXIT_USAGE;
}
