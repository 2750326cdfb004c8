/* `sinkkit info`: library version, CPU model and features, and how the dispatcher chose its ISA. */
#include <string.h>

#include "cli.h"
#include "cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/prctl.h>
#endif

typedef struct info_report {
    char cpu_model[128];
    const char *cpu_model_source; /* "the CPUID brand string", "/proc/cpuinfo", or NULL when unknown */
    const char *architecture;

    bool have_x86;
    sinkkit_x86_words x86;

    bool have_aarch64;
    uint64_t hwcap;
    uint64_t hwcap2;
    long sve_vector_bits; /* -1 when unknown or SVE is absent */

    uint32_t compiled_mask;
    uint32_t runnable_mask;
    sinkkit_dispatch_info dispatch;
} info_report;

/* The kernel families of the table, with the public calls each one serves. */
static const struct {
    const char *family;
    const char *calls;
} info_families[3] = {
    {"headwise_rmsnorm", "sinkkit_headwise_rmsnorm_f32"},
    {"row_moments", "sinkkit_row_moments_f32, sinkkit_head_moments_f32"},
    {"channel_stats", "sinkkit_channel_stats_update_f32"},
};

static void print_help(void)
{
    printf("Usage: sinkkit info [--json]\n"
           "\n"
           "Prints the library version, the CPU model, the CPU features that decide the ISA (x86: CPUID\n"
           "bits and XCR0; AArch64: HWCAP bits), the ISAs compiled in and supported, the best and the\n"
           "active ISA, and whether the SINKKIT_ISA environment variable capped the choice.\n"
           "\n"
           "Options:\n"
           "  --json      print the same information as one JSON object\n"
           "  -h, --help  print this help\n");
}

/* Removes leading and trailing blanks in place. */
static void trim(char *text)
{
    size_t start = strspn(text, " \t");
    size_t end = strlen(text);
    while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\t' || text[end - 1] == '\n'))
        end--;
    memmove(text, text + start, end - start);
    text[end - start] = '\0';
}

/* Reads the CPUID brand string (leaves 0x80000002 to 0x80000004). Returns false when the CPU lacks it. */
static bool read_x86_brand(char *out, size_t size)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned regs[12];
    unsigned max_extended = __get_cpuid_max(0x80000000u, NULL);
    if (max_extended < 0x80000004u || size < sizeof regs + 1)
        return false;

    for (unsigned i = 0; i < 3; i++)
        __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
    memcpy(out, regs, sizeof regs);
    out[sizeof regs] = '\0';
    trim(out);
    return out[0] != '\0';
#else
    (void)out;
    (void)size;
    return false;
#endif
}

/* Returns the text after "key :" on a /proc/cpuinfo line, or NULL when the line has another key. */
static char *cpuinfo_value(char *line, const char *key)
{
    size_t length = strlen(key);
    if (strncmp(line, key, length) != 0)
        return NULL;

    char *rest = line + length + strspn(line + length, " \t");
    if (*rest != ':')
        return NULL;
    rest++;
    trim(rest);
    return rest;
}

/* Reads the model from /proc/cpuinfo. AArch64 kernels print no model name, only implementer and part
   numbers, which are reported as they are. */
static bool read_proc_cpuinfo_model(char *out, size_t size)
{
    FILE *file = fopen("/proc/cpuinfo", "r");
    if (file == NULL)
        return false;

    char line[512];
    char implementer[32] = "";
    char part[32] = "";
    bool found = false;
    while (!found && fgets(line, sizeof line, file) != NULL) {
        const char *value = NULL;
        if ((value = cpuinfo_value(line, "model name")) != NULL || (value = cpuinfo_value(line, "Hardware")) != NULL ||
            (value = cpuinfo_value(line, "cpu model")) != NULL) {
            snprintf(out, size, "%s", value);
            found = out[0] != '\0';
        } else if ((value = cpuinfo_value(line, "CPU implementer")) != NULL && implementer[0] == '\0') {
            snprintf(implementer, sizeof implementer, "%s", value);
        } else if ((value = cpuinfo_value(line, "CPU part")) != NULL && part[0] == '\0') {
            snprintf(part, sizeof part, "%s", value);
        }
    }
    fclose(file);

    if (!found && implementer[0] != '\0' && part[0] != '\0') {
        snprintf(out, size, "CPU implementer %s, part %s", implementer, part);
        found = true;
    }
    return found;
}

static long read_sve_vector_bits(uint64_t hwcap)
{
#if defined(__aarch64__) && defined(__linux__) && defined(PR_SVE_GET_VL)
    if (!(hwcap & SINKKIT_HWCAP_SVE))
        return -1;
    int result = prctl(PR_SVE_GET_VL);
    if (result < 0)
        return -1;
    return (long)(result & PR_SVE_VL_LEN_MASK) * 8;
#else
    (void)hwcap;
    return -1;
#endif
}

static const char *architecture_name(void)
{
#if defined(__x86_64__)
    return "x86-64";
#elif defined(__i386__)
    return "x86";
#elif defined(__aarch64__)
    return "AArch64";
#else
    return "other";
#endif
}

static void gather(info_report *report)
{
    memset(report, 0, sizeof *report);
    report->architecture = architecture_name();

    /* Under qemu-user, /proc/cpuinfo describes the host, so the source is reported with the model. */
    if (read_x86_brand(report->cpu_model, sizeof report->cpu_model))
        report->cpu_model_source = "the CPUID brand string";
    else if (read_proc_cpuinfo_model(report->cpu_model, sizeof report->cpu_model))
        report->cpu_model_source = "/proc/cpuinfo";
    else
        snprintf(report->cpu_model, sizeof report->cpu_model, "unknown");

    report->have_x86 = sinkkit_probe_x86(&report->x86);
    report->have_aarch64 = !report->have_x86 && sinkkit_probe_aarch64(&report->hwcap, &report->hwcap2);
    report->sve_vector_bits = report->have_aarch64 ? read_sve_vector_bits(report->hwcap) : -1;

    report->compiled_mask = sinkkit_compiled_isa_mask();
    report->runnable_mask = sinkkit_runnable_isa_mask();
    sinkkit_get_dispatch_info(&report->dispatch);
}

/* ---- derived facts ---- */

typedef struct x86_feature {
    const char *name;
    bool leaf7;      /* the bit is in CPUID leaf 7 EBX, else leaf 1 ECX */
    uint32_t bit;
} x86_feature;

static const x86_feature x86_features[9] = {
    {"AVX", false, SINKKIT_X86_LEAF1_AVX},
    {"AVX2", true, SINKKIT_X86_LEAF7_AVX2},
    {"FMA", false, SINKKIT_X86_LEAF1_FMA},
    {"F16C", false, SINKKIT_X86_LEAF1_F16C},
    {"OSXSAVE", false, SINKKIT_X86_LEAF1_OSXSAVE},
    {"AVX512F", true, SINKKIT_X86_LEAF7_AVX512F},
    {"AVX512BW", true, SINKKIT_X86_LEAF7_AVX512BW},
    {"AVX512DQ", true, SINKKIT_X86_LEAF7_AVX512DQ},
    {"AVX512VL", true, SINKKIT_X86_LEAF7_AVX512VL},
};

static bool x86_has(const info_report *report, const x86_feature *feature)
{
    uint32_t word = feature->leaf7 ? report->x86.leaf7_ebx : report->x86.leaf1_ecx;
    return (word & feature->bit) != 0;
}

static bool xcr0_enables(const info_report *report, uint64_t mask)
{
    return report->x86.xcr0_valid && (report->x86.xcr0 & mask) == mask;
}

/* The ISA the library would pick under the SINKKIT_ISA cap; equal to best when nothing caps it. */
static sinkkit_isa env_capped_choice(const info_report *report)
{
    const sinkkit_dispatch_info *d = &report->dispatch;
    if (!d->env_present || !d->env_recognised)
        return d->best;
    return sinkkit_best_isa_in_mask(report->runnable_mask, d->env_cap);
}

static bool env_caps_choice(const info_report *report)
{
    return env_capped_choice(report) != report->dispatch.best;
}

static const sinkkit_kernel_table *active_table(const info_report *report)
{
    return sinkkit_kernel_table_for(report->dispatch.active);
}

/* ---- text output ---- */

static void print_isa_mask(const char *label, uint32_t mask)
{
    printf("%-18s", label);
    for (size_t i = 0; i < 5; i++) {
        if (mask & (1u << cli_all_isas[i]))
            printf(" %s", sinkkit_isa_name(cli_all_isas[i]));
    }
    printf("\n");
}

static void print_x86_text(const info_report *report)
{
    printf("CPUID:             max leaf %u, leaf 1 ECX 0x%08x, leaf 7 EBX 0x%08x\n", report->x86.max_leaf,
           report->x86.leaf1_ecx, report->x86.leaf7_ebx);
    const size_t count = sizeof x86_features / sizeof x86_features[0];
    printf("CPU features:     ");
    for (size_t i = 0; i < count; i++) {
        /* The AVX-512 subsets go on a second line to keep lines short. */
        if (i == 5)
            printf("\n                  ");
        printf(" %s %s%s", x86_features[i].name, x86_has(report, &x86_features[i]) ? "yes" : "no",
               i + 1 == count ? "\n" : (i == 4 ? "" : ","));
    }

    if (!report->x86.xcr0_valid) {
        printf("XCR0:              not readable (OSXSAVE is clear), so YMM and ZMM state are not enabled\n");
        return;
    }
    printf("XCR0:              0x%llx (YMM state enabled by the OS: %s; ZMM state enabled by the OS: %s)\n",
           (unsigned long long)report->x86.xcr0, xcr0_enables(report, SINKKIT_XCR0_YMM_MASK) ? "yes" : "no",
           xcr0_enables(report, SINKKIT_XCR0_ZMM_MASK) ? "yes" : "no");
}

static void print_aarch64_text(const info_report *report)
{
    printf("HWCAP:             0x%llx, HWCAP2 0x%llx\n", (unsigned long long)report->hwcap,
           (unsigned long long)report->hwcap2);
    printf("CPU features:      ASIMD %s, SVE %s\n", (report->hwcap & SINKKIT_HWCAP_ASIMD) ? "yes" : "no",
           (report->hwcap & SINKKIT_HWCAP_SVE) ? "yes" : "no");
    if (report->sve_vector_bits > 0)
        printf("SVE vector length: %ld bits\n", report->sve_vector_bits);
}

static void print_env_text(const info_report *report)
{
    const sinkkit_dispatch_info *d = &report->dispatch;
    if (!d->env_present) {
        printf("SINKKIT_ISA:       not set\n");
        return;
    }
    if (!d->env_recognised) {
        printf("SINKKIT_ISA:       \"%s\" is not recognised, so it is ignored and the best ISA is used\n",
               d->env_value);
        return;
    }

    printf("SINKKIT_ISA:       \"%s\" (recognised", d->env_value);
    if (d->env_cap != SINKKIT_ISA_AUTO && !sinkkit_isa_supported(d->env_cap))
        printf(", but %s cannot run here", sinkkit_isa_name(d->env_cap));
    if (env_caps_choice(report))
        printf("): caps the choice at %s instead of %s\n", sinkkit_isa_name(env_capped_choice(report)),
               sinkkit_isa_name(d->best));
    else
        printf("): does not cap the choice\n");
}

static void print_text(const info_report *report)
{
    printf("sinkkit %s\n", sinkkit_version());
    if (report->cpu_model_source != NULL)
        printf("CPU:               %s (from %s)\n", report->cpu_model, report->cpu_model_source);
    else
        printf("CPU:               %s\n", report->cpu_model);
    printf("Architecture:      %s\n", report->architecture);
    if (report->have_x86)
        print_x86_text(report);
    if (report->have_aarch64)
        print_aarch64_text(report);

    print_isa_mask("ISAs compiled in:", report->compiled_mask);
    print_isa_mask("ISAs supported:", report->runnable_mask);
    printf("Best ISA:          %s\n", sinkkit_isa_name(report->dispatch.best));
    printf("Active ISA:        %s%s\n", sinkkit_isa_name(report->dispatch.active),
           report->dispatch.set_by_call ? " (selected by sinkkit_set_isa)" : "");

    const sinkkit_kernel_table *table = active_table(report);
    printf("Kernel families:\n");
    for (size_t i = 0; i < sizeof info_families / sizeof info_families[0]; i++)
        printf("  %-17s %-7s (%s)\n", info_families[i].family, table != NULL ? sinkkit_isa_name(table->isa) : "none",
               info_families[i].calls);

    print_env_text(report);
}

/* ---- JSON output ---- */

static void json_isa_mask(cli_json *json, const char *key, uint32_t mask)
{
    cli_json_array(json, key);
    for (size_t i = 0; i < 5; i++) {
        if (mask & (1u << cli_all_isas[i]))
            cli_json_string(json, NULL, sinkkit_isa_name(cli_all_isas[i]));
    }
    cli_json_array_end(json);
}

static void print_x86_json(cli_json *json, const info_report *report)
{
    cli_json_object(json, "x86");
    cli_json_uint(json, "max_leaf", report->x86.max_leaf);
    cli_json_uint(json, "leaf1_ecx", report->x86.leaf1_ecx);
    cli_json_uint(json, "leaf7_ebx", report->x86.leaf7_ebx);

    cli_json_object(json, "features");
    for (size_t i = 0; i < sizeof x86_features / sizeof x86_features[0]; i++)
        cli_json_bool(json, x86_features[i].name, x86_has(report, &x86_features[i]));
    cli_json_object_end(json);

    cli_json_bool(json, "xcr0_readable", report->x86.xcr0_valid);
    if (report->x86.xcr0_valid)
        cli_json_uint(json, "xcr0", report->x86.xcr0);
    else
        cli_json_string(json, "xcr0", NULL);
    cli_json_bool(json, "ymm_state_enabled", xcr0_enables(report, SINKKIT_XCR0_YMM_MASK));
    cli_json_bool(json, "zmm_state_enabled", xcr0_enables(report, SINKKIT_XCR0_ZMM_MASK));
    cli_json_object_end(json);
}

static void print_aarch64_json(cli_json *json, const info_report *report)
{
    cli_json_object(json, "aarch64");
    cli_json_uint(json, "hwcap", report->hwcap);
    cli_json_uint(json, "hwcap2", report->hwcap2);
    cli_json_object(json, "features");
    cli_json_bool(json, "ASIMD", (report->hwcap & SINKKIT_HWCAP_ASIMD) != 0);
    cli_json_bool(json, "SVE", (report->hwcap & SINKKIT_HWCAP_SVE) != 0);
    cli_json_object_end(json);
    if (report->sve_vector_bits > 0)
        cli_json_uint(json, "sve_vector_bits", (uint64_t)report->sve_vector_bits);
    else
        cli_json_string(json, "sve_vector_bits", NULL);
    cli_json_object_end(json);
}

static void print_env_json(cli_json *json, const info_report *report)
{
    const sinkkit_dispatch_info *d = &report->dispatch;
    cli_json_object(json, "sinkkit_isa_env");
    cli_json_bool(json, "set", d->env_present);
    cli_json_string(json, "value", d->env_present ? d->env_value : NULL);
    cli_json_bool(json, "recognised", d->env_recognised);
    cli_json_string(json, "named_isa", d->env_present && d->env_recognised ? sinkkit_isa_name(d->env_cap) : NULL);
    cli_json_bool(json, "caps_choice", env_caps_choice(report));
    cli_json_object_end(json);
}

static void print_json(const info_report *report)
{
    cli_json json;
    cli_json_begin(&json, stdout);
    cli_json_string(&json, "version", sinkkit_version());
    cli_json_string(&json, "cpu_model", report->cpu_model);
    cli_json_string(&json, "cpu_model_source", report->cpu_model_source);
    cli_json_string(&json, "architecture", report->architecture);
    if (report->have_x86)
        print_x86_json(&json, report);
    if (report->have_aarch64)
        print_aarch64_json(&json, report);

    json_isa_mask(&json, "compiled_isas", report->compiled_mask);
    json_isa_mask(&json, "supported_isas", report->runnable_mask);
    cli_json_string(&json, "best_isa", sinkkit_isa_name(report->dispatch.best));
    cli_json_string(&json, "active_isa", sinkkit_isa_name(report->dispatch.active));
    cli_json_bool(&json, "set_by_call", report->dispatch.set_by_call);

    const sinkkit_kernel_table *table = active_table(report);
    cli_json_object(&json, "kernel_families");
    for (size_t i = 0; i < sizeof info_families / sizeof info_families[0]; i++)
        cli_json_string(&json, info_families[i].family, table != NULL ? sinkkit_isa_name(table->isa) : NULL);
    cli_json_object_end(&json);

    print_env_json(&json, report);
    cli_json_end(&json);
}

int cli_info(int argc, char **argv)
{
    bool json = false;
    cli_parser parser;
    cli_parser_init(&parser, argc, argv);
    while (cli_parser_next(&parser)) {
        if (cli_option_flag(&parser, "--json")) {
            json = true;
        } else if (cli_option_flag(&parser, "-h") || cli_option_flag(&parser, "--help")) {
            print_help();
            return CLI_EXIT_OK;
        } else {
            return cli_unknown_argument(&parser);
        }
    }

    info_report report;
    gather(&report);
    if (json)
        print_json(&report);
    else
        print_text(&report);
    return CLI_EXIT_OK;
}
