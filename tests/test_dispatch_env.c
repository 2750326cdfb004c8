/* SINKKIT_ISA: read once at the first library call, it caps the ISA choice (unknown values mean auto).
 *
 * ctest runs this program once per value of SINKKIT_ISA (see tests/CMakeLists.txt). The expected
 * selection is computed here from sinkkit_isa_supported(), so the same registrations hold on any CPU.
 * Options, all applied before the first library call:
 *   --expect-env VALUE  fail unless SINKKIT_ISA arrived as VALUE (catches a wrong registration)
 *   --unset             remove SINKKIT_ISA from the environment
 *   --set VALUE         set SINKKIT_ISA to VALUE, which shows that it is read at first use, not at load
 *   --set-empty         set SINKKIT_ISA to the empty string
 */
#define _GNU_SOURCE
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dispatch.h"

/* SINKKIT_ISA as it was just before the first library call. env_present is false when it was unset. */
static bool env_present;
static char env_value[256];

/* Ranks per sinkkit.h: scalar, then avx2 and neon, then avx512 and sve. AUTO caps nothing. */
static int rank_of(sinkkit_isa isa)
{
    static const int ranks[SINKKIT_ISA_COUNT] = {4, 1, 2, 3, 2, 3};
    return ranks[isa];
}

/* Names per sinkkit.h, matched case-insensitively, written here independently of the library's parser. */
static bool parse_isa(const char *value, sinkkit_isa *isa)
{
    static const char *const names[SINKKIT_ISA_COUNT] = {"auto", "scalar", "avx2", "avx512", "neon", "sve"};
    for (int i = 0; i < SINKKIT_ISA_COUNT; i++) {
        if (strcasecmp(value, names[i]) == 0) {
            *isa = (sinkkit_isa)i;
            return true;
        }
    }
    return false;
}

/* The ISA the environment names, or AUTO when it is absent or unknown. */
static sinkkit_isa expected_cap(void)
{
    sinkkit_isa cap = SINKKIT_ISA_AUTO;
    if (env_present && parse_isa(env_value, &cap))
        return cap;
    return SINKKIT_ISA_AUTO;
}

/* Best supported ISA whose rank is at most that of cap. */
static sinkkit_isa best_supported_up_to(sinkkit_isa cap)
{
    sinkkit_isa best = SINKKIT_ISA_SCALAR;
    for (int i = SINKKIT_ISA_SCALAR; i < SINKKIT_ISA_COUNT; i++) {
        sinkkit_isa isa = (sinkkit_isa)i;
        if (sinkkit_isa_supported(isa) && rank_of(isa) <= rank_of(cap) && rank_of(isa) > rank_of(best))
            best = isa;
    }
    return best;
}

/* ---- a workload whose last bits depend on the ISA's summation order ---- */

enum { WL_TOKENS = 24, WL_HEADS = 4, WL_HEAD_DIM = 517, WL_ROW = WL_HEADS * WL_HEAD_DIM };
enum { WL_ELEMENTS = WL_TOKENS * WL_ROW, WL_VECTORS = WL_TOKENS * WL_HEADS };

/* One less than the row, so that no vector width divides it. */
enum { WL_MOMENTS_COLS = WL_ROW - 1 };

typedef struct workload_out {
    float y[WL_ELEMENTS];
    float inv_rms[WL_VECTORS];
    float mean[WL_TOKENS];
    float variance[WL_TOKENS];
} workload_out;

static const sinkkit_head_layout wl_layout = {WL_TOKENS, WL_HEADS, WL_HEAD_DIM, WL_ROW, WL_HEAD_DIM};
static float wl_x[WL_ELEMENTS];

static void make_workload(void)
{
    uint64_t seed = 0xE4F1A5C3ULL;
    tk_fill_random(wl_x, WL_ELEMENTS, &seed, 5.0f, 2.0f);
}

static sinkkit_status run_public(workload_out *out)
{
    sinkkit_status status =
        sinkkit_headwise_rmsnorm_f32(&wl_layout, wl_x, out->y, NULL, SINKKIT_GAMMA_NONE, 1e-5f, out->inv_rms);
    if (status != SINKKIT_OK)
        return status;
    return sinkkit_row_moments_f32(wl_x, WL_TOKENS, WL_MOMENTS_COLS, WL_ROW, out->mean, out->variance, 0);
}

static void run_direct(const sinkkit_kernel_table *table, workload_out *out)
{
    table->headwise_rmsnorm_f32(&wl_layout, wl_x, out->y, NULL, SINKKIT_GAMMA_NONE, 1e-5f, out->inv_rms);
    table->row_moments_f32(wl_x, WL_TOKENS, WL_MOMENTS_COLS, WL_ROW, out->mean, out->variance, 0);
}

static size_t count_differences(const workload_out *a, const workload_out *b)
{
    const float *fa = (const float *)a;
    const float *fb = (const float *)b;
    size_t differences = 0;
    for (size_t i = 0; i < sizeof(workload_out) / sizeof(float); i++)
        differences += memcmp(&fa[i], &fb[i], sizeof(float)) != 0;
    return differences;
}

static workload_out first_call_out;

static sinkkit_dispatch_info dispatch_info(void)
{
    sinkkit_dispatch_info info;
    assert_int_equal(sinkkit_get_dispatch_info(&info), SINKKIT_OK);
    return info;
}

/* ---- tests, in this order: the first one makes the first library call ---- */

static void first_call_applies_cap(void **state)
{
    (void)state;
    make_workload();
    assert_int_equal(run_public(&first_call_out), SINKKIT_OK);

    sinkkit_isa cap = expected_cap();
    sinkkit_isa expected = best_supported_up_to(cap);
    printf("SINKKIT_ISA %s%s%s: cap %s, expected %s, active %s\n", env_present ? "\"" : "(unset)",
           env_present ? env_value : "", env_present ? "\"" : "", sinkkit_isa_name(cap), sinkkit_isa_name(expected),
           sinkkit_isa_name(sinkkit_active_isa()));

    assert_int_equal(sinkkit_active_isa(), expected);
    assert_ptr_equal(sinkkit_active_kernels(), sinkkit_kernel_table_for(expected));
}

static void info_reports_env(void **state)
{
    (void)state;
    sinkkit_isa named = SINKKIT_ISA_AUTO;
    bool recognised = env_present && parse_isa(env_value, &named);

    sinkkit_dispatch_info info = dispatch_info();
    assert_int_equal(info.env_present, env_present);
    assert_int_equal(info.env_recognised, recognised);
    assert_int_equal(info.env_cap, recognised ? named : SINKKIT_ISA_AUTO);
    assert_int_equal(info.best, best_supported_up_to(SINKKIT_ISA_AUTO));
    assert_int_equal(info.active, best_supported_up_to(expected_cap()));
    assert_false(info.set_by_call);

    /* env_value contains at most 31 characters and a terminator. An absent variable reads as "". */
    char expected_value[sizeof info.env_value];
    size_t length = strlen(env_value);
    if (length > sizeof expected_value - 1)
        length = sizeof expected_value - 1;
    memcpy(expected_value, env_value, length);
    expected_value[length] = '\0';
    assert_string_equal(info.env_value, expected_value);
}

/* The public results must be bitwise those of the expected ISA's own table. */
static void cap_reaches_kernels(void **state)
{
    (void)state;
    sinkkit_isa expected = best_supported_up_to(expected_cap());
    workload_out *direct = calloc(1, sizeof *direct);
    assert_non_null(direct);

    run_direct(sinkkit_kernel_table_for(expected), direct);
    assert_int_equal(count_differences(&first_call_out, direct), 0);

    for (int i = SINKKIT_ISA_SCALAR; i < SINKKIT_ISA_COUNT; i++) {
        if (i == (int)expected || !sinkkit_isa_supported((sinkkit_isa)i))
            continue;
        run_direct(sinkkit_kernel_table_for((sinkkit_isa)i), direct);
        printf("%s differs from %s in %zu of %zu outputs\n", sinkkit_isa_name(expected), sinkkit_isa_name(i),
               count_differences(&first_call_out, direct), sizeof(workload_out) / sizeof(float));
    }
    free(direct);
}

/* Changing the environment after the first call changes neither the selection nor what info reports. */
static void env_read_only_once(void **state)
{
    (void)state;
    const sinkkit_dispatch_info before = dispatch_info();
    const sinkkit_isa active = sinkkit_active_isa();

    const char *other = active == SINKKIT_ISA_SCALAR ? "auto" : "scalar";
    assert_int_equal(setenv("SINKKIT_ISA", other, 1), 0);

    workload_out *again = calloc(1, sizeof *again);
    assert_non_null(again);
    assert_int_equal(run_public(again), SINKKIT_OK);
    size_t differences = count_differences(again, &first_call_out);
    free(again);

    sinkkit_dispatch_info after = dispatch_info();
    assert_int_equal(sinkkit_active_isa(), active);
    assert_int_equal(differences, 0);
    assert_int_equal(after.active, before.active);
    assert_int_equal(after.env_present, before.env_present);
    assert_int_equal(after.env_recognised, before.env_recognised);
    assert_int_equal(after.env_cap, before.env_cap);
    assert_string_equal(after.env_value, before.env_value);

    assert_int_equal(unsetenv("SINKKIT_ISA"), 0);
    after = dispatch_info();
    assert_int_equal(after.env_present, before.env_present);
    assert_string_equal(after.env_value, before.env_value);
}

/* sinkkit_set_isa(AUTO) picks the best ISA regardless of the cap, and keeps the environment report. */
static void set_auto_ignores_cap(void **state)
{
    (void)state;
    const sinkkit_dispatch_info before = dispatch_info();

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
    sinkkit_dispatch_info after = dispatch_info();
    assert_int_equal(sinkkit_active_isa(), best_supported_up_to(SINKKIT_ISA_AUTO));
    assert_int_equal(after.active, best_supported_up_to(SINKKIT_ISA_AUTO));
    assert_false(after.set_by_call);
    assert_int_equal(after.env_present, before.env_present);
    assert_int_equal(after.env_recognised, before.env_recognised);
    assert_int_equal(after.env_cap, before.env_cap);
}

/* ---- option handling, before any library call ---- */

static int apply_options(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--unset") == 0) {
            unsetenv("SINKKIT_ISA");
        } else if (strcmp(argv[i], "--set-empty") == 0) {
            setenv("SINKKIT_ISA", "", 1);
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            setenv("SINKKIT_ISA", argv[++i], 1);
        } else if (strcmp(argv[i], "--expect-env") == 0 && i + 1 < argc) {
            const char *actual = getenv("SINKKIT_ISA");
            const char *expected = argv[++i];
            if (actual == NULL || strcmp(actual, expected) != 0) {
                fprintf(stderr, "SINKKIT_ISA is %s%s%s, but the test registration expects \"%s\"\n",
                        actual ? "\"" : "unset", actual ? actual : "", actual ? "\"" : "", expected);
                return 1;
            }
        } else {
            fprintf(stderr, "unknown option \"%s\": use --expect-env VALUE, --unset, --set VALUE or --set-empty\n",
                    argv[i]);
            return 1;
        }
    }

    const char *value = getenv("SINKKIT_ISA");
    env_present = value != NULL;
    if (env_present && strlen(value) >= sizeof env_value) {
        fprintf(stderr, "SINKKIT_ISA is longer than %zu characters, which this test does not handle\n",
                sizeof env_value - 1);
        return 1;
    }
    snprintf(env_value, sizeof env_value, "%s", env_present ? value : "");
    return 0;
}

int main(int argc, char **argv)
{
    if (apply_options(argc, argv) != 0)
        return 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_call_applies_cap),
        cmocka_unit_test(info_reports_env),
        cmocka_unit_test(cap_reaches_kernels),
        cmocka_unit_test(env_read_only_once),
        cmocka_unit_test(set_auto_ignores_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
