/* Shared parts of the sinkkit command-line tool: commands, option parsing, JSON output and test data. */
#ifndef SINKKIT_CLI_H
#define SINKKIT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels.h"
#include "sinkkit.h"

/* Exit statuses of every command. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,
    CLI_EXIT_USAGE = 2
};

/* The commands. argv[0] is the command name; the options follow. Each returns an exit status. */
int cli_info(int argc, char **argv);
int cli_validate(int argc, char **argv);
int cli_bench(int argc, char **argv);

/* ---- option parsing ---- */

/* Walks the options of one command. Options are --name, --name VALUE or --name=VALUE. */
typedef struct cli_parser {
    const char *command;
    int argc;
    char **argv;
    int next;
    const char *arg;
} cli_parser;

void cli_parser_init(cli_parser *parser, int argc, char **argv);

/* Moves to the next argument; false when none is left. */
bool cli_parser_next(cli_parser *parser);

/* True when the current argument is exactly the flag name (which includes the dashes). */
bool cli_option_flag(const cli_parser *parser, const char *name);

/* Matches an option that takes a value. Returns 1 and sets *value on a match, 0 when the current
   argument is another option, and -1 (after printing a usage error) when the value is missing. */
int cli_option_value(cli_parser *parser, const char *name, const char **value);

/* Reports the current argument as an unknown option or an unexpected argument; returns CLI_EXIT_USAGE. */
int cli_unknown_argument(const cli_parser *parser);

/* Prints "sinkkit COMMAND: MESSAGE" and a pointer to --help on stderr, and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *command, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Parses the value of --isa: a concrete ISA name, not "auto". Prints a usage error on failure. */
bool cli_parse_isa(const char *command, const char *value, sinkkit_isa *isa);

/* Parses a number in [min, max] for option name. Prints a usage error on failure. */
bool cli_parse_double(const char *command, const char *name, const char *value, double min, double max,
                      double *out);

/* ---- ISAs ---- */

/* Every concrete ISA in the order the tool reports them: scalar, avx2, avx512, neon, sve. */
extern const sinkkit_isa cli_all_isas[5];

/* Returns why the tool cannot run isa ("not compiled into this build", "not supported by this CPU or OS"),
   or NULL when it can. */
const char *cli_isa_unavailable_reason(sinkkit_isa isa);

/* Stores the ISAs the tool can run, in report order, and returns how many. With only != AUTO the list
   is that ISA alone, or empty when it cannot run. */
size_t cli_runnable_isas(sinkkit_isa only, sinkkit_isa isas[5]);

/* Prints a note when SINKKIT_ISA is set: the variable caps only the library's automatic choice, while
   validate and bench call each ISA's kernels directly. */
void cli_print_env_note(FILE *out);

/* ---- model shapes ---- */

/* Attention heads of a model layer: heads vectors of head_dim floats per token. */
typedef struct cli_head_shape {
    const char *label;   /* "32x128" */
    const char *models;  /* the layers that have this shape */
    size_t heads;
    size_t head_dim;
} cli_head_shape;

/* A token row of a model layer: hidden state or FFN activation of width floats. */
typedef struct cli_width_shape {
    const char *label;
    const char *models;
    size_t width;
} cli_width_shape;

extern const cli_head_shape cli_head_shapes[3];
extern const cli_width_shape cli_width_shapes[4];

/* Prints which model layer each shape label stands for. */
void cli_print_shape_legend(FILE *out);

/* ---- memory and data ---- */

/* Allocates bytes at a 64-byte boundary; prints an error and exits with status 1 when memory runs out.
   Release with free(). */
void *cli_alloc(size_t bytes);

/* Allocates count floats that start offset_floats past a 64-byte boundary. *base receives the pointer
   to pass to free(). */
float *cli_alloc_floats(size_t count, size_t offset_floats, void **base);

/* Multiplies counts; prints an error and exits with status 1 when the product overflows size_t. */
size_t cli_checked_mul(size_t a, size_t b);

/* xorshift64* generator: deterministic, so a failure reproduces run after run. */
uint64_t cli_random_u64(uint64_t *state);

/* Uniform in [lo, hi). */
double cli_random_uniform(uint64_t *state, double lo, double hi);

/* The arrays of channel statistics, without the counts that sinkkit_channel_stats adds. */
typedef struct cli_stats {
    float *max_abs;         /* [channels] */
    uint64_t *argmax_token;
    double *sum_squares;
} cli_stats;

/* Allocates the three arrays for the given number of channels and fills them as
   sinkkit_channel_stats_reset() does. Exits like cli_alloc() when memory runs out. Release with
   cli_stats_free(). */
cli_stats cli_stats_new(size_t channels);
void cli_stats_free(cli_stats *stats);

/* ---- JSON output ---- */

/* Maximum nesting of objects and arrays. The commands nest at most four levels deep. */
#define CLI_JSON_MAX_DEPTH 32

/* A streaming JSON writer that indents by two spaces. Pass key NULL for values inside arrays. */
typedef struct cli_json {
    FILE *out;
    int depth;
    bool need_comma[CLI_JSON_MAX_DEPTH];
} cli_json;

void cli_json_begin(cli_json *json, FILE *out);
void cli_json_end(cli_json *json);
void cli_json_object(cli_json *json, const char *key);
void cli_json_object_end(cli_json *json);
void cli_json_array(cli_json *json, const char *key);
void cli_json_array_end(cli_json *json);
/* value NULL writes null. */
void cli_json_string(cli_json *json, const char *key, const char *value);
/* A number that is not finite is written as null, because JSON has no Inf or NaN. */
void cli_json_number(cli_json *json, const char *key, double value);
void cli_json_uint(cli_json *json, const char *key, uint64_t value);
void cli_json_bool(cli_json *json, const char *key, bool value);

#endif /* SINKKIT_CLI_H */
