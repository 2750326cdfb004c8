/* CPU feature detection: pure decision functions over CPUID/XCR0/HWCAP words, and the probes. */
#define _GNU_SOURCE
#include "cpu_features.h"

#include "baseline_guard.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

static bool has_all(uint32_t word, uint32_t bits)
{
    return (word & bits) == bits;
}

uint32_t sinkkit_x86_isa_mask(const sinkkit_x86_words *words)
{
    uint32_t mask = 1u << SINKKIT_ISA_SCALAR;

    /* Without OSXSAVE there is no XCR0 to trust, and the OS may not save vector state. */
    if (words->max_leaf < 7 || !has_all(words->leaf1_ecx, SINKKIT_X86_LEAF1_OSXSAVE) || !words->xcr0_valid)
        return mask;

    bool ymm_state = (words->xcr0 & SINKKIT_XCR0_YMM_MASK) == SINKKIT_XCR0_YMM_MASK;
    bool zmm_state = (words->xcr0 & SINKKIT_XCR0_ZMM_MASK) == SINKKIT_XCR0_ZMM_MASK;

    bool avx2 = ymm_state &&
                has_all(words->leaf1_ecx, SINKKIT_X86_LEAF1_AVX | SINKKIT_X86_LEAF1_FMA | SINKKIT_X86_LEAF1_F16C) &&
                has_all(words->leaf7_ebx, SINKKIT_X86_LEAF7_AVX2);
    if (!avx2)
        return mask;
    mask |= 1u << SINKKIT_ISA_AVX2;

    uint32_t avx512_bits = SINKKIT_X86_LEAF7_AVX512F | SINKKIT_X86_LEAF7_AVX512DQ | SINKKIT_X86_LEAF7_AVX512BW |
                           SINKKIT_X86_LEAF7_AVX512VL;
    if (zmm_state && has_all(words->leaf7_ebx, avx512_bits))
        mask |= 1u << SINKKIT_ISA_AVX512;

    return mask;
}

uint32_t sinkkit_aarch64_isa_mask(uint64_t hwcap, uint64_t hwcap2)
{
    (void)hwcap2;
    uint32_t mask = 1u << SINKKIT_ISA_SCALAR;

    if (hwcap & SINKKIT_HWCAP_ASIMD)
        mask |= 1u << SINKKIT_ISA_NEON;
    if (hwcap & SINKKIT_HWCAP_SVE)
        mask |= 1u << SINKKIT_ISA_SVE;

    return mask;
}

uint32_t sinkkit_compiled_isa_mask(void)
{
    uint32_t mask = 1u << SINKKIT_ISA_SCALAR;
#if defined(SINKKIT_HAVE_AVX2)
    mask |= 1u << SINKKIT_ISA_AVX2;
#endif
#if defined(SINKKIT_HAVE_AVX512)
    mask |= 1u << SINKKIT_ISA_AVX512;
#endif
#if defined(SINKKIT_HAVE_NEON)
    mask |= 1u << SINKKIT_ISA_NEON;
#endif
#if defined(SINKKIT_HAVE_SVE)
    mask |= 1u << SINKKIT_ISA_SVE;
#endif
    return mask;
}

int sinkkit_isa_rank(sinkkit_isa isa)
{
    switch (isa) {
    case SINKKIT_ISA_SCALAR:
        return 1;
    case SINKKIT_ISA_AVX2:
    case SINKKIT_ISA_NEON:
        return 2;
    case SINKKIT_ISA_AVX512:
    case SINKKIT_ISA_SVE:
        return 3;
    case SINKKIT_ISA_AUTO:
    default:
        return 4;
    }
}

sinkkit_isa sinkkit_best_isa_in_mask(uint32_t mask, sinkkit_isa cap)
{
    sinkkit_isa best = SINKKIT_ISA_SCALAR;
    int cap_rank = sinkkit_isa_rank(cap);

    for (int isa = SINKKIT_ISA_SCALAR; isa < SINKKIT_ISA_COUNT; isa++) {
        int rank = sinkkit_isa_rank((sinkkit_isa)isa);
        if ((mask & (1u << isa)) && rank <= cap_rank && rank > sinkkit_isa_rank(best))
            best = (sinkkit_isa)isa;
    }
    return best;
}

#if defined(__x86_64__) || defined(__i386__)
/* XGETBV with ECX = 0 reads XCR0. Encoded as raw bytes so that this file needs no -mxsave. */
static uint64_t read_xcr0(void)
{
    uint32_t eax;
    uint32_t edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

bool sinkkit_probe_x86(sinkkit_x86_words *words)
{
    *words = (sinkkit_x86_words){0};
#if defined(__x86_64__) || defined(__i386__)
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx))
        return true;
    words->max_leaf = eax;

    __cpuid(1, eax, ebx, ecx, edx);
    words->leaf1_ecx = ecx;

    if (words->max_leaf >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        words->leaf7_ebx = ebx;
    }

    /* XGETBV raises #UD unless the OS has set CR4.OSXSAVE, which CPUID mirrors. */
    if (words->leaf1_ecx & SINKKIT_X86_LEAF1_OSXSAVE) {
        words->xcr0 = read_xcr0();
        words->xcr0_valid = true;
    }
    return true;
#else
    return false;
#endif
}

bool sinkkit_probe_aarch64(uint64_t *hwcap, uint64_t *hwcap2)
{
    *hwcap = 0;
    *hwcap2 = 0;
#if defined(__aarch64__) && defined(__linux__)
    *hwcap = getauxval(AT_HWCAP);
#if defined(AT_HWCAP2)
    *hwcap2 = getauxval(AT_HWCAP2);
#endif
    return true;
#elif defined(__aarch64__)
    /* Without getauxval, NEON is still part of the AArch64 baseline. */
    *hwcap = SINKKIT_HWCAP_ASIMD;
    return true;
#else
    return false;
#endif
}

uint32_t sinkkit_runnable_isa_mask(void)
{
    uint32_t cpu_mask = 1u << SINKKIT_ISA_SCALAR;

    sinkkit_x86_words words;
    uint64_t hwcap;
    uint64_t hwcap2;
    if (sinkkit_probe_x86(&words))
        cpu_mask = sinkkit_x86_isa_mask(&words);
    else if (sinkkit_probe_aarch64(&hwcap, &hwcap2))
        cpu_mask = sinkkit_aarch64_isa_mask(hwcap, hwcap2);

    return cpu_mask & sinkkit_compiled_isa_mask();
}
