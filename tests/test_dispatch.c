/* Dispatcher tests: ISA decisions on synthetic CPU words, the probe against the compiler's CPU checks,
   and sinkkit_set_isa() reaching the public kernels. */
#define _GNU_SOURCE
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "dispatch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

/* Feature bits from the Intel SDM (CPUID leaf 1 ECX, leaf 7 subleaf 0 EBX), written here independently of
   cpu_features.h so that a wrong bit position there fails these tables. */
static const uint32_t leaf1_fma = 1u << 12;
static const uint32_t leaf1_osxsave = 1u << 27;
static const uint32_t leaf1_avx = 1u << 28;
static const uint32_t leaf1_f16c = 1u << 29;
static const uint32_t leaf7_avx2 = 1u << 5;
static const uint32_t leaf7_avx512f = 1u << 16;
static const uint32_t leaf7_avx512dq = 1u << 17;
static const uint32_t leaf7_avx512bw = 1u << 30;
static const uint32_t leaf7_avx512vl = 1u << 31;

/* Linux arm64 HWCAP bits: ASIMD is bit 1, SVE bit 22. */
static const uint64_t hwcap_asimd = 1ull << 1;
static const uint64_t hwcap_sve = 1ull << 22;

static const uint32_t mask_scalar = 1u << SINKKIT_ISA_SCALAR;
static const uint32_t mask_avx2 = 1u << SINKKIT_ISA_AVX2;
static const uint32_t mask_avx512 = 1u << SINKKIT_ISA_AVX512;
static const uint32_t mask_neon = 1u << SINKKIT_ISA_NEON;
static const uint32_t mask_sve = 1u << SINKKIT_ISA_SVE;

/* ---- sinkkit_x86_isa_mask ---- */

typedef struct x86_case {
    const char *name;
    uint32_t max_leaf;
    uint32_t leaf1_ecx;
    uint32_t leaf7_ebx;
    uint64_t xcr0;
    bool xcr0_valid;
    uint32_t expected;
} x86_case;

static void x86_mask_table(void **state)
{
    (void)state;
    const uint32_t l1 = leaf1_fma | leaf1_osxsave | leaf1_avx | leaf1_f16c;
    const uint32_t l7_avx2 = leaf7_avx2;
    const uint32_t l7 = leaf7_avx2 | leaf7_avx512f | leaf7_avx512dq | leaf7_avx512bw | leaf7_avx512vl;
    const uint32_t up_to_avx2 = mask_scalar | mask_avx2;
    const uint32_t up_to_avx512 = mask_scalar | mask_avx2 | mask_avx512;

    const x86_case cases[] = {
        {"all features, XCR0 0xE7", 0xD, l1, l7, 0xE7, true, up_to_avx512},
        {"all features, XCR0 with AMX and PKRU bits", 0x20, l1, l7, 0x602E7, true, up_to_avx512},
        {"every bit of every word set", 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, ~0ull, true, up_to_avx512},
        {"max_leaf exactly 7", 7, l1, l7, 0xE7, true, up_to_avx512},
        {"AVX2 CPU, XCR0 0x7", 0xD, l1, l7_avx2, 0x7, true, up_to_avx2},
        {"AVX2 CPU, XCR0 0xE7", 0xD, l1, l7_avx2, 0xE7, true, up_to_avx2},
        {"all words zero", 0, 0, 0, 0, false, mask_scalar},
        {"no OSXSAVE although XCR0 is set", 0xD, l1 & ~leaf1_osxsave, l7, 0xE7, true, mask_scalar},
        {"no OSXSAVE, XCR0 not read", 0xD, l1 & ~leaf1_osxsave, l7, 0, false, mask_scalar},
        {"XCR0 not valid although set", 0xD, l1, l7, 0xE7, false, mask_scalar},
        {"XCR0 without YMM state (0x3)", 0xD, l1, l7, 0x3, true, mask_scalar},
        {"XCR0 without SSE state (0x5)", 0xD, l1, l7, 0x5, true, mask_scalar},
        {"XCR0 with ZMM but no YMM state (0xE3)", 0xD, l1, l7, 0xE3, true, mask_scalar},
        {"XCR0 x87 only", 0xD, l1, l7, 0x1, true, mask_scalar},
        {"AVX missing", 0xD, l1 & ~leaf1_avx, l7, 0xE7, true, mask_scalar},
        {"FMA missing", 0xD, l1 & ~leaf1_fma, l7, 0xE7, true, mask_scalar},
        {"F16C missing", 0xD, l1 & ~leaf1_f16c, l7, 0xE7, true, mask_scalar},
        {"AVX2 bit missing, AVX-512 bits present", 0xD, l1, l7 & ~leaf7_avx2, 0xE7, true, mask_scalar},
        {"AVX-512, XCR0 0x7 (no opmask or ZMM)", 0xD, l1, l7, 0x7, true, up_to_avx2},
        {"AVX-512, XCR0 0x67 (no Hi16_ZMM)", 0xD, l1, l7, 0x67, true, up_to_avx2},
        {"AVX-512, XCR0 0xA7 (no ZMM_Hi256)", 0xD, l1, l7, 0xA7, true, up_to_avx2},
        {"AVX-512, XCR0 0xC7 (no opmask)", 0xD, l1, l7, 0xC7, true, up_to_avx2},
        {"AVX-512F only", 0xD, l1, leaf7_avx2 | leaf7_avx512f, 0xE7, true, up_to_avx2},
        {"AVX-512 without BW", 0xD, l1, l7 & ~leaf7_avx512bw, 0xE7, true, up_to_avx2},
        {"AVX-512 without DQ", 0xD, l1, l7 & ~leaf7_avx512dq, 0xE7, true, up_to_avx2},
        {"AVX-512 without VL", 0xD, l1, l7 & ~leaf7_avx512vl, 0xE7, true, up_to_avx2},
        {"AVX-512 without F", 0xD, l1, l7 & ~leaf7_avx512f, 0xE7, true, up_to_avx2},
        {"max_leaf 6 hides leaf 7", 6, l1, l7, 0xE7, true, mask_scalar},
        {"max_leaf 1 hides leaf 7", 1, l1, l7, 0xE7, true, mask_scalar},
    };

    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const x86_case *c = &cases[i];
        sinkkit_x86_words words = {.max_leaf = c->max_leaf,
                                   .leaf1_ecx = c->leaf1_ecx,
                                   .leaf7_ebx = c->leaf7_ebx,
                                   .xcr0 = c->xcr0,
                                   .xcr0_valid = c->xcr0_valid};

        uint32_t got = sinkkit_x86_isa_mask(&words);
        if (got != c->expected) {
            print_error("x86 case \"%s\": mask 0x%x, expected 0x%x\n", c->name, got, c->expected);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* ---- sinkkit_aarch64_isa_mask ---- */

static void aarch64_mask_table(void **state)
{
    (void)state;
    const struct {
        const char *name;
        uint64_t hwcap;
        uint64_t hwcap2;
        uint32_t expected;
    } cases[] = {
        {"no HWCAP bits", 0, 0, mask_scalar},
        {"ASIMD", hwcap_asimd, 0, mask_scalar | mask_neon},
        {"ASIMD and SVE", hwcap_asimd | hwcap_sve, 0, mask_scalar | mask_neon | mask_sve},
        {"every bit but ASIMD and SVE", ~(hwcap_asimd | hwcap_sve), ~0ull, mask_scalar},
        {"ASIMD with every other bit", ~hwcap_sve, ~0ull, mask_scalar | mask_neon},
        {"HWCAP2 alone", 0, ~0ull, mask_scalar},
        {"FP only (bit 0)", 1, 0, mask_scalar},
    };

    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t got = sinkkit_aarch64_isa_mask(cases[i].hwcap, cases[i].hwcap2);
        if (got != cases[i].expected) {
            print_error("aarch64 case \"%s\": mask 0x%x, expected 0x%x\n", cases[i].name, got, cases[i].expected);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* ---- sinkkit_best_isa_in_mask and ranks ---- */

static void best_isa_table(void **state)
{
    (void)state;
    const uint32_t x86 = mask_scalar | mask_avx2 | mask_avx512;
    const uint32_t arm = mask_scalar | mask_neon | mask_sve;
    const struct {
        uint32_t mask;
        sinkkit_isa cap;
        sinkkit_isa expected;
    } cases[] = {
        {x86, SINKKIT_ISA_AUTO, SINKKIT_ISA_AVX512},
        {x86, SINKKIT_ISA_AVX512, SINKKIT_ISA_AVX512},
        {x86, SINKKIT_ISA_AVX2, SINKKIT_ISA_AVX2},
        {x86, SINKKIT_ISA_SCALAR, SINKKIT_ISA_SCALAR},
        /* A cap from the other architecture caps by rank: neon ranks with avx2, sve with avx512. */
        {x86, SINKKIT_ISA_NEON, SINKKIT_ISA_AVX2},
        {x86, SINKKIT_ISA_SVE, SINKKIT_ISA_AVX512},
        {mask_scalar | mask_avx2, SINKKIT_ISA_AVX512, SINKKIT_ISA_AVX2},
        {mask_scalar | mask_avx2, SINKKIT_ISA_AUTO, SINKKIT_ISA_AVX2},
        /* A gap below the cap falls through to scalar, never up to an ISA above the cap. */
        {mask_scalar | mask_avx512, SINKKIT_ISA_AVX2, SINKKIT_ISA_SCALAR},
        {mask_scalar | mask_avx512, SINKKIT_ISA_AUTO, SINKKIT_ISA_AVX512},
        {mask_scalar, SINKKIT_ISA_AUTO, SINKKIT_ISA_SCALAR},
        {mask_scalar, SINKKIT_ISA_AVX512, SINKKIT_ISA_SCALAR},
        {0, SINKKIT_ISA_AUTO, SINKKIT_ISA_SCALAR},
        {arm, SINKKIT_ISA_AUTO, SINKKIT_ISA_SVE},
        {arm, SINKKIT_ISA_SVE, SINKKIT_ISA_SVE},
        {arm, SINKKIT_ISA_NEON, SINKKIT_ISA_NEON},
        {arm, SINKKIT_ISA_AVX2, SINKKIT_ISA_NEON},
        {arm, SINKKIT_ISA_AVX512, SINKKIT_ISA_SVE},
        {arm, SINKKIT_ISA_SCALAR, SINKKIT_ISA_SCALAR},
        {mask_scalar | mask_sve, SINKKIT_ISA_NEON, SINKKIT_ISA_SCALAR},
        {mask_scalar | mask_neon, SINKKIT_ISA_SVE, SINKKIT_ISA_NEON},
    };

    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sinkkit_isa got = sinkkit_best_isa_in_mask(cases[i].mask, cases[i].cap);
        if (got != cases[i].expected) {
            print_error("mask 0x%x cap %s: got %s, expected %s\n", cases[i].mask, sinkkit_isa_name(cases[i].cap),
                        sinkkit_isa_name(got), sinkkit_isa_name(cases[i].expected));
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void isa_ranks_ordered(void **state)
{
    (void)state;
    assert_true(sinkkit_isa_rank(SINKKIT_ISA_SCALAR) < sinkkit_isa_rank(SINKKIT_ISA_AVX2));
    assert_int_equal(sinkkit_isa_rank(SINKKIT_ISA_AVX2), sinkkit_isa_rank(SINKKIT_ISA_NEON));
    assert_true(sinkkit_isa_rank(SINKKIT_ISA_AVX2) < sinkkit_isa_rank(SINKKIT_ISA_AVX512));
    assert_int_equal(sinkkit_isa_rank(SINKKIT_ISA_AVX512), sinkkit_isa_rank(SINKKIT_ISA_SVE));
    assert_true(sinkkit_isa_rank(SINKKIT_ISA_SVE) < sinkkit_isa_rank(SINKKIT_ISA_AUTO));
}

/* ---- names ---- */

static void isa_names_round_trip(void **state)
{
    (void)state;
    const char *const expected[SINKKIT_ISA_COUNT] = {"auto", "scalar", "avx2", "avx512", "neon", "sve"};

    for (int i = 0; i < SINKKIT_ISA_COUNT; i++) {
        const char *name = sinkkit_isa_name((sinkkit_isa)i);
        assert_string_equal(name, expected[i]);

        sinkkit_isa parsed = (sinkkit_isa)99;
        assert_true(sinkkit_isa_from_name(name, &parsed));
        assert_int_equal(parsed, i);
    }
}

static void isa_names_case_insensitive(void **state)
{
    (void)state;
    sinkkit_isa parsed = SINKKIT_ISA_AUTO;
    assert_true(sinkkit_isa_from_name("AVX512", &parsed));
    assert_int_equal(parsed, SINKKIT_ISA_AVX512);
    assert_true(sinkkit_isa_from_name("Scalar", &parsed));
    assert_int_equal(parsed, SINKKIT_ISA_SCALAR);
    assert_true(sinkkit_isa_from_name("AUTO", &parsed));
    assert_int_equal(parsed, SINKKIT_ISA_AUTO);
}

static void isa_names_unknown(void **state)
{
    (void)state;
    assert_string_equal(sinkkit_isa_name((sinkkit_isa)SINKKIT_ISA_COUNT), "unknown");
    assert_string_equal(sinkkit_isa_name((sinkkit_isa)-1), "unknown");
    assert_string_equal(sinkkit_isa_name((sinkkit_isa)1000), "unknown");

    const char *const bad[] = {"", "avx-512", "avx2 ", " avx2", "avx", "sse2", "unknown", "avx5120", "neonx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sinkkit_isa parsed = (sinkkit_isa)77;
        if (sinkkit_isa_from_name(bad[i], &parsed))
            fail_msg("\"%s\" parsed as an ISA name", bad[i]);
        assert_int_equal(parsed, 77);
    }

    sinkkit_isa parsed = (sinkkit_isa)77;
    assert_false(sinkkit_isa_from_name(NULL, &parsed));
    assert_int_equal(parsed, 77);
    assert_false(sinkkit_isa_from_name("avx2", NULL));
}

/* ---- the probe against the compiler runtime's own CPU checks ---- */

/* The supported set must match what the CPU and OS offer, restricted to what this build contains. */
static void check_isa_matches_cpu(sinkkit_isa isa, bool cpu_has)
{
    bool compiled = sinkkit_kernel_table_for(isa) != NULL;
    bool supported = sinkkit_isa_supported(isa);
    printf("%-7s cpu %d, compiled %d, supported %d\n", sinkkit_isa_name(isa), cpu_has, compiled, supported);

    if (supported && !cpu_has)
        fail_msg("%s reported as supported, but the CPU or OS lacks it", sinkkit_isa_name(isa));
    if (supported && !compiled)
        fail_msg("%s reported as supported, but it is not compiled in", sinkkit_isa_name(isa));
    if (cpu_has && compiled && !supported)
        fail_msg("%s is compiled in and the CPU runs it, but it is reported unsupported", sinkkit_isa_name(isa));
}

#if defined(__x86_64__) || defined(__i386__)
/* libgcc's checks also require the OS to save YMM (and ZMM) state. clang 14 has no "f16c" name for
   __builtin_cpu_supports, so F16C comes from CPUID directly. */
static bool cpu_has_f16c(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return false;
    return (ecx & leaf1_f16c) != 0;
}

static void probe_matches_cpu(void **state)
{
    (void)state;
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                cpu_has_f16c();
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");

    assert_true(sinkkit_isa_supported(SINKKIT_ISA_SCALAR));
    check_isa_matches_cpu(SINKKIT_ISA_AVX2, avx2);
    check_isa_matches_cpu(SINKKIT_ISA_AVX512, avx512);
    check_isa_matches_cpu(SINKKIT_ISA_NEON, false);
    check_isa_matches_cpu(SINKKIT_ISA_SVE, false);
}

/* XCR0 is only read after CPUID reported OSXSAVE, and the mask of the probed words is what dispatch uses. */
static void probe_words_consistent(void **state)
{
    (void)state;
    sinkkit_x86_words words;
    assert_true(sinkkit_probe_x86(&words));
    assert_int_equal(words.xcr0_valid, (words.leaf1_ecx & leaf1_osxsave) != 0);

    uint32_t expected = sinkkit_x86_isa_mask(&words) & sinkkit_compiled_isa_mask();
    assert_int_equal(sinkkit_runnable_isa_mask(), expected);
}
#elif defined(__aarch64__) && defined(__linux__)
static void probe_matches_cpu(void **state)
{
    (void)state;
    unsigned long hwcap = getauxval(AT_HWCAP);

    assert_true(sinkkit_isa_supported(SINKKIT_ISA_SCALAR));
    check_isa_matches_cpu(SINKKIT_ISA_AVX2, false);
    check_isa_matches_cpu(SINKKIT_ISA_AVX512, false);
    check_isa_matches_cpu(SINKKIT_ISA_NEON, (hwcap & HWCAP_ASIMD) != 0);
    check_isa_matches_cpu(SINKKIT_ISA_SVE, (hwcap & HWCAP_SVE) != 0);
}

static void probe_words_consistent(void **state)
{
    (void)state;
    uint64_t hwcap;
    uint64_t hwcap2;
    assert_true(sinkkit_probe_aarch64(&hwcap, &hwcap2));

    uint32_t expected = sinkkit_aarch64_isa_mask(hwcap, hwcap2) & sinkkit_compiled_isa_mask();
    assert_int_equal(sinkkit_runnable_isa_mask(), expected);
}
#else
static void probe_matches_cpu(void **state)
{
    (void)state;
    for (int isa = SINKKIT_ISA_AVX2; isa < SINKKIT_ISA_COUNT; isa++)
        check_isa_matches_cpu((sinkkit_isa)isa, false);
}

static void probe_words_consistent(void **state)
{
    (void)state;
    assert_int_equal(sinkkit_runnable_isa_mask(), mask_scalar);
}
#endif

/* ---- sinkkit_set_isa ---- */

/* Ranks per sinkkit.h: scalar, then avx2 and neon, then avx512 and sve. */
static int rank_of(sinkkit_isa isa)
{
    static const int ranks[SINKKIT_ISA_COUNT] = {4, 1, 2, 3, 2, 3};
    return ranks[isa];
}

/* The best ISA according to sinkkit_isa_supported(), computed without the library's own selection. */
static sinkkit_isa best_supported(void)
{
    sinkkit_isa best = SINKKIT_ISA_SCALAR;
    for (int isa = SINKKIT_ISA_SCALAR; isa < SINKKIT_ISA_COUNT; isa++) {
        if (sinkkit_isa_supported((sinkkit_isa)isa) && rank_of((sinkkit_isa)isa) > rank_of(best))
            best = (sinkkit_isa)isa;
    }
    return best;
}

static sinkkit_dispatch_info dispatch_info(void)
{
    sinkkit_dispatch_info info;
    assert_int_equal(sinkkit_get_dispatch_info(&info), SINKKIT_OK);
    return info;
}

static void assert_info_equal(const sinkkit_dispatch_info *a, const sinkkit_dispatch_info *b)
{
    assert_int_equal(a->best, b->best);
    assert_int_equal(a->active, b->active);
    assert_int_equal(a->env_present, b->env_present);
    assert_int_equal(a->env_recognised, b->env_recognised);
    assert_int_equal(a->env_cap, b->env_cap);
    assert_int_equal(a->set_by_call, b->set_by_call);
    assert_string_equal(a->env_value, b->env_value);
}

static void set_isa_selects_exactly(void **state)
{
    (void)state;
    const sinkkit_isa best = best_supported();
    const sinkkit_dispatch_info before = dispatch_info();
    assert_int_equal(before.best, best);

    for (int i = SINKKIT_ISA_SCALAR; i < SINKKIT_ISA_COUNT; i++) {
        sinkkit_isa isa = (sinkkit_isa)i;
        if (!sinkkit_isa_supported(isa))
            continue;

        assert_int_equal(sinkkit_set_isa(isa), SINKKIT_OK);
        assert_int_equal(sinkkit_active_isa(), isa);
        assert_ptr_equal(sinkkit_active_kernels(), sinkkit_kernel_table_for(isa));

        sinkkit_dispatch_info info = dispatch_info();
        assert_int_equal(info.active, isa);
        assert_int_equal(info.best, best);
        assert_true(info.set_by_call);
        assert_int_equal(info.env_present, before.env_present);
        assert_int_equal(info.env_cap, before.env_cap);
    }

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

static void set_isa_rejects_unsupported(void **state)
{
    (void)state;
    const int candidates[] = {SINKKIT_ISA_AVX2, SINKKIT_ISA_AVX512, SINKKIT_ISA_NEON, SINKKIT_ISA_SVE,
                              SINKKIT_ISA_COUNT, 99, -1, 0x100 + SINKKIT_ISA_SCALAR};

    /* Start from a forced scalar so that "changes nothing" also covers set_by_call. */
    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_SCALAR), SINKKIT_OK);
    const sinkkit_dispatch_info before = dispatch_info();

    int rejected = 0;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        sinkkit_isa isa = (sinkkit_isa)candidates[i];
        if (sinkkit_isa_supported(isa))
            continue;

        assert_int_equal(sinkkit_set_isa(isa), SINKKIT_ERROR_UNSUPPORTED_ISA);
        assert_int_equal(sinkkit_active_isa(), SINKKIT_ISA_SCALAR);
        assert_ptr_equal(sinkkit_active_kernels(), sinkkit_kernel_table_for(SINKKIT_ISA_SCALAR));
        sinkkit_dispatch_info after = dispatch_info();
        assert_info_equal(&after, &before);
        rejected++;
    }
    /* At least the out-of-range values and the other architecture's ISAs are rejected. */
    assert_true(rejected >= 4);

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

static void set_isa_auto_restores_best(void **state)
{
    (void)state;
    const sinkkit_isa best = best_supported();

    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_SCALAR), SINKKIT_OK);
    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);

    assert_int_equal(sinkkit_active_isa(), best);
    assert_ptr_equal(sinkkit_active_kernels(), sinkkit_kernel_table_for(best));
    sinkkit_dispatch_info info = dispatch_info();
    assert_int_equal(info.active, best);
    assert_int_equal(info.best, best);
    assert_false(info.set_by_call);
}

static void supported_isas_have_tables(void **state)
{
    (void)state;
    assert_true(sinkkit_isa_supported(SINKKIT_ISA_AUTO));
    assert_null(sinkkit_kernel_table_for(SINKKIT_ISA_AUTO));

    for (int i = SINKKIT_ISA_SCALAR; i < SINKKIT_ISA_COUNT; i++) {
        if (!sinkkit_isa_supported((sinkkit_isa)i))
            continue;
        const sinkkit_kernel_table *table = sinkkit_kernel_table_for((sinkkit_isa)i);
        assert_non_null(table);
        assert_int_equal(table->isa, i);
    }
    assert_false(sinkkit_isa_supported((sinkkit_isa)SINKKIT_ISA_COUNT));
    assert_false(sinkkit_isa_supported((sinkkit_isa)-1));
}

/* ---- the forced ISA reaches the public kernels ---- */

/* Long rows whose lengths (1003 per head, 4011 per moments row) are not a multiple of any vector width.
   The ISAs sum in different orders, so their float partial sums, and then the last bits of some
   outputs, differ. */
enum { SIG_TOKENS = 48, SIG_HEADS = 4, SIG_HEAD_DIM = 1003, SIG_ROW = SIG_HEADS * SIG_HEAD_DIM };
enum { SIG_MOMENTS_COLS = SIG_ROW - 1 };
enum { SIG_ELEMENTS = SIG_TOKENS * SIG_ROW, SIG_VECTORS = SIG_TOKENS * SIG_HEADS };

typedef struct signature {
    float y[SIG_ELEMENTS];
    float inv_rms[SIG_VECTORS];
    float mean[SIG_TOKENS];
    float variance[SIG_TOKENS];
} signature;

static const sinkkit_head_layout sig_layout = {SIG_TOKENS, SIG_HEADS, SIG_HEAD_DIM, SIG_ROW, SIG_HEAD_DIM};

typedef struct signature_input {
    float x[SIG_ELEMENTS];
    float gamma[SIG_HEAD_DIM];
} signature_input;

static void make_signature_input(signature_input *in)
{
    uint64_t seed = 0x5EED0D15BA7C4ULL;
    /* An offset mean makes the variance depend on the rounding of the deviations. */
    tk_fill_random(in->x, SIG_ELEMENTS, &seed, 3.0f, 1.0f);
    tk_fill_random(in->gamma, SIG_HEAD_DIM, &seed, 1.0f, 0.5f);
}

static void signature_public(const signature_input *in, signature *out)
{
    assert_int_equal(sinkkit_headwise_rmsnorm_f32(&sig_layout, in->x, out->y, in->gamma, SINKKIT_GAMMA_SHARED,
                                                  1e-6f, out->inv_rms),
                     SINKKIT_OK);
    assert_int_equal(sinkkit_row_moments_f32(in->x, SIG_TOKENS, SIG_MOMENTS_COLS, SIG_ROW, out->mean, out->variance, 0),
                     SINKKIT_OK);
}

static void signature_direct(const sinkkit_kernel_table *table, const signature_input *in, signature *out)
{
    table->headwise_rmsnorm_f32(&sig_layout, in->x, out->y, in->gamma, SINKKIT_GAMMA_SHARED, 1e-6f, out->inv_rms);
    table->row_moments_f32(in->x, SIG_TOKENS, SIG_MOMENTS_COLS, SIG_ROW, out->mean, out->variance, 0);
}

static size_t count_differences(const signature *a, const signature *b)
{
    const float *fa = (const float *)a;
    const float *fb = (const float *)b;
    size_t differences = 0;
    for (size_t i = 0; i < sizeof(signature) / sizeof(float); i++)
        differences += memcmp(&fa[i], &fb[i], sizeof(float)) != 0;
    return differences;
}

static signature *new_signature(void)
{
    signature *s = calloc(1, sizeof *s);
    assert_non_null(s);
    return s;
}

/* Public results after sinkkit_set_isa(isa) must be bitwise those of isa's own table. Where two ISAs
   differ on this data, the results identify the table used. Where they agree, the table pointer check
   in set_isa_selects_exactly is the only proof, and the test prints a note. */
static void forced_isa_reaches_kernels(void **state)
{
    (void)state;
    signature_input *in = malloc(sizeof *in);
    assert_non_null(in);
    make_signature_input(in);

    signature *direct[SINKKIT_ISA_COUNT] = {NULL};
    for (int i = SINKKIT_ISA_SCALAR; i < SINKKIT_ISA_COUNT; i++) {
        if (!sinkkit_isa_supported((sinkkit_isa)i))
            continue;
        direct[i] = new_signature();
        signature_direct(sinkkit_kernel_table_for((sinkkit_isa)i), in, direct[i]);
    }

    signature *public_out = new_signature();
    for (int i = SINKKIT_ISA_SCALAR; i < SINKKIT_ISA_COUNT; i++) {
        if (direct[i] == NULL)
            continue;

        assert_int_equal(sinkkit_set_isa((sinkkit_isa)i), SINKKIT_OK);
        signature_public(in, public_out);
        size_t own = count_differences(public_out, direct[i]);
        if (own != 0)
            fail_msg("after sinkkit_set_isa(%s), %zu outputs differ from the %s table", sinkkit_isa_name(i), own,
                     sinkkit_isa_name(i));

        for (int j = SINKKIT_ISA_SCALAR; j < SINKKIT_ISA_COUNT; j++) {
            if (j == i || direct[j] == NULL)
                continue;
            size_t other = count_differences(public_out, direct[j]);
            if (other == 0)
                printf("NOTE: %s and %s give bitwise identical outputs on this data, so only the table pointer "
                       "shows which one ran\n",
                       sinkkit_isa_name(i), sinkkit_isa_name(j));
            else
                printf("%s differs from %s in %zu of %zu outputs\n", sinkkit_isa_name(i), sinkkit_isa_name(j),
                       other, sizeof(signature) / sizeof(float));
        }
    }

    /* AUTO must bring back the best table, not the last one forced. */
    sinkkit_isa best = best_supported();
    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
    signature_public(in, public_out);
    assert_int_equal(count_differences(public_out, direct[best]), 0);

    free(public_out);
    for (int i = 0; i < SINKKIT_ISA_COUNT; i++)
        free(direct[i]);
    free(in);
}

/* The data above must be close to the double-precision reference on every ISA, otherwise matching the
   table bitwise would prove little. */
static void signature_close_to_reference(void **state)
{
    const sinkkit_kernel_table *table = tk_kernels_or_skip(TK_STATE_ISA(state));
    signature_input *in = malloc(sizeof *in);
    assert_non_null(in);
    make_signature_input(in);

    signature *got = new_signature();
    signature *want = new_signature();
    signature_direct(table, in, got);
    sinkkit_headwise_rmsnorm_f32_reference(&sig_layout, in->x, want->y, in->gamma, SINKKIT_GAMMA_SHARED, 1e-6f,
                                           want->inv_rms);
    sinkkit_row_moments_f32_reference(in->x, SIG_TOKENS, SIG_MOMENTS_COLS, SIG_ROW, want->mean, want->variance, 0);

    double max_error = 0.0;
    for (size_t i = 0; i < SIG_ELEMENTS; i++) {
        double error = metric_relative_error(got->y[i], want->y[i]);
        max_error = error > max_error ? error : max_error;
    }
    for (size_t i = 0; i < SIG_TOKENS; i++) {
        double error = metric_relative_error(got->variance[i], want->variance[i]);
        max_error = error > max_error ? error : max_error;
    }
    printf("%s: max relative error %.3g against the reference\n", sinkkit_isa_name(table->isa), max_error);
    assert_true(max_error <= 1e-6);

    free(want);
    free(got);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(x86_mask_table),
        cmocka_unit_test(aarch64_mask_table),
        cmocka_unit_test(best_isa_table),
        cmocka_unit_test(isa_ranks_ordered),
        cmocka_unit_test(isa_names_round_trip),
        cmocka_unit_test(isa_names_case_insensitive),
        cmocka_unit_test(isa_names_unknown),
        cmocka_unit_test(probe_matches_cpu),
        cmocka_unit_test(probe_words_consistent),
        cmocka_unit_test(supported_isas_have_tables),
        cmocka_unit_test(set_isa_selects_exactly),
        cmocka_unit_test(set_isa_rejects_unsupported),
        cmocka_unit_test(set_isa_auto_restores_best),
        cmocka_unit_test(forced_isa_reaches_kernels),
        TK_ISA_TESTS(signature_close_to_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
