/* A minimal streaming JSON writer for the --json output of the commands. */
#include <inttypes.h>
#include <math.h>

#include "cli.h"

static void write_escaped(FILE *out, const char *text)
{
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", out);
        else if (*c < 0x20)
            fprintf(out, "\\u%04x", *c);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

/* Writes the separator, indentation and key that come before any value. Keys are written only
   inside objects, which the caller tracks by passing NULL inside arrays. */
static void begin_value(cli_json *json, const char *key)
{
    if (json->need_comma[json->depth])
        fputc(',', json->out);
    json->need_comma[json->depth] = true;

    fputc('\n', json->out);
    for (int i = 0; i < json->depth; i++)
        fputs("  ", json->out);

    if (key != NULL) {
        write_escaped(json->out, key);
        fputs(": ", json->out);
    }
}

static void open_container(cli_json *json, const char *key, char bracket)
{
    begin_value(json, key);
    fputc(bracket, json->out);
    if (json->depth + 1 < CLI_JSON_MAX_DEPTH)
        json->depth++;
    json->need_comma[json->depth] = false;
}

static void close_container(cli_json *json, char bracket)
{
    bool had_items = json->need_comma[json->depth];
    if (json->depth > 0)
        json->depth--;

    if (had_items) {
        fputc('\n', json->out);
        for (int i = 0; i < json->depth; i++)
            fputs("  ", json->out);
    }
    fputc(bracket, json->out);
}

void cli_json_begin(cli_json *json, FILE *out)
{
    json->out = out;
    json->depth = 0;
    json->need_comma[0] = false;
    fputc('{', out);
    json->depth = 1;
    json->need_comma[1] = false;
}

void cli_json_end(cli_json *json)
{
    close_container(json, '}');
    fputc('\n', json->out);
}

void cli_json_object(cli_json *json, const char *key)
{
    open_container(json, key, '{');
}

void cli_json_object_end(cli_json *json)
{
    close_container(json, '}');
}

void cli_json_array(cli_json *json, const char *key)
{
    open_container(json, key, '[');
}

void cli_json_array_end(cli_json *json)
{
    close_container(json, ']');
}

void cli_json_string(cli_json *json, const char *key, const char *value)
{
    begin_value(json, key);
    if (value == NULL)
        fputs("null", json->out);
    else
        write_escaped(json->out, value);
}

void cli_json_number(cli_json *json, const char *key, double value)
{
    begin_value(json, key);
    if (isfinite(value))
        fprintf(json->out, "%.9g", value);
    else
        fputs("null", json->out);
}

void cli_json_uint(cli_json *json, const char *key, uint64_t value)
{
    begin_value(json, key);
    fprintf(json->out, "%" PRIu64, value);
}

void cli_json_bool(cli_json *json, const char *key, bool value)
{
    begin_value(json, key);
    fputs(value ? "true" : "false", json->out);
}
